//! PROTOCOL.md §4: `register-push-SERVICE` and `unregister-push-SERVICE` (XEP-0050).
//!
//! A command is read in small steps: which command and service, what action, who asks,
//! which device; then the registration is stored (new, renewed, or refused by a limit)
//! or deleted. Each reply that reports a write waits for the batch's commit.

use super::{reply, App, Now, Reply, Service};
use crate::store::{Caps, NewRegistration, Refusal, Registered};
use crate::xmpp::command::{self, Action, Command, CommandNode, DeviceFields};
use crate::xmpp::jid::Jid;
use crate::xmpp::stanza::{Iq, StanzaError};

/// Whether a command registers or unregisters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Register,
    Unregister,
}

/// The account a command comes from, normalised as XMPP compares JIDs.
struct Account {
    /// The sender: its bare form is hashed into the device id, never stored or logged.
    jid: Jid,
    /// Its domain: stored with the registration, and what the logs name.
    domain: String,
}

/// The registration a command is about: (service, device, channel).
struct Device {
    service: Service,
    device: String,
    channel: String,
}

/// The command node's kind and service, if p2 serves it here.
fn target(services: &[Service], node: &str) -> Result<(Kind, Service), StanzaError> {
    let (kind, name) = match CommandNode::parse(node) {
        Some(CommandNode::Register(s)) => (Kind::Register, s),
        Some(CommandNode::Unregister(s)) => (Kind::Unregister, s),
        None => return Err(reply::unknown_command()),
    };
    let service = Service::from_name(name).ok_or_else(reply::unknown_service)?;
    if !services.contains(&service) {
        return Err(reply::service_unavailable(format!(
            "{} is not configured on this app server",
            service.as_str()
        )));
    }
    Ok((kind, service))
}

/// The sender of a command: an account JID (`local@domain`, any resource).
fn account_of(iq: &Iq) -> Result<Account, StanzaError> {
    let from = iq.from.as_deref().unwrap_or("");
    match Jid::parse(from) {
        Ok(j) if j.has_local() => Ok(Account {
            domain: j.domain().to_owned(),
            jid: j,
        }),
        _ => Err(reply::forbidden(
            "registration needs an account JID as sender",
        )),
    }
}

/// A registration's token, checked for what the provider can take.
fn check_token(service: Service, token: &str) -> Result<(), StanzaError> {
    #[cfg(feature = "apns")]
    if service == Service::Apns && !crate::push::apns::is_plausible_token(token) {
        return Err(reply::bad_request(
            "field 'token' is not an APNs device token",
        ));
    }
    let _ = (service, token);
    Ok(())
}

impl App {
    /// A session id for a reply: a counter (single-stage commands need no more).
    fn session_id(&mut self) -> String {
        self.next_session = self.next_session.wrapping_add(1);
        format!("p2-{}", self.next_session)
    }

    /// PROTOCOL.md §4: one command.
    pub(super) fn command(
        &mut self,
        now: Now,
        iq: &Iq,
        cmd: &Command,
    ) -> Result<Reply, StanzaError> {
        let (kind, service) = target(&self.services, &cmd.node)?;
        let sessionid = cmd.sessionid.clone().unwrap_or_else(|| self.session_id());
        match &cmd.action {
            Action::Execute => {}
            Action::Cancel => {
                return Ok(Reply::Now(Some(command::canceled(&cmd.node, &sessionid))))
            }
            Action::Other(a) => return Err(reply::unsupported_action(a)),
        }
        let account = account_of(iq)?;
        let fields = DeviceFields::from_form(cmd.form.as_ref(), kind == Kind::Register)?;
        let device = Device {
            service,
            device: command::hash_with_device(&account.jid, &fields.device_id),
            channel: fields.channel(),
        };
        match kind {
            Kind::Register => {
                let token = fields.token.as_deref().unwrap_or_default();
                check_token(service, token)?;
                let (node, secret) = self.register(now, &account, &device, token)?;
                Ok(Reply::AfterCommit(Some(command::registered(
                    &cmd.node, &sessionid, &self.jid, &node, &secret,
                ))))
            }
            Kind::Unregister => {
                self.unregister(now, &account, &device)?;
                Ok(Reply::AfterCommit(Some(command::completed(
                    &cmd.node, &sessionid,
                ))))
            }
        }
    }

    /// Stores or renews a registration; its node and secret, or the limit that refused
    /// a new one.
    fn register(
        &mut self,
        now: Now,
        account: &Account,
        d: &Device,
        token: &str,
    ) -> Result<(String, String), StanzaError> {
        let domain = account.domain.as_str();
        let caps = Caps {
            per_account: self.limits.config.registrations_per_account,
            per_domain: self.limits.config.registrations_per_domain,
            may_create: self.limits.may_create(domain, now.mono),
        };
        let account_key = self.store.account_key(account.jid.bare());
        let new = NewRegistration {
            service: d.service.as_str(),
            device: &d.device,
            channel: &d.channel,
            domain,
            token,
            account: Some(&account_key),
        };
        match self.write(now, |store| store.register(new, caps, now.unix))? {
            Registered::New {
                node,
                secret,
                evicted,
            } => {
                self.counters.registered += 1;
                crate::metrics::global().registered(d.service, true, evicted);
                self.limits.created(domain, now.mono);
                if evicted > 0 {
                    log::debug!(
                        "{domain}: an account went over {} registrations; {evicted} oldest removed",
                        caps.per_account
                    );
                }
                log::debug!("new {} registration for {domain}", d.service.as_str());
                Ok((node, secret))
            }
            Registered::Renewed {
                node,
                secret,
                token_changed,
            } => {
                self.counters.renewed += 1;
                crate::metrics::global().registered(d.service, false, 0);
                if token_changed {
                    // The next publish goes to the new token at once.
                    self.limits.end_coalescing(&node, domain);
                }
                log::debug!(
                    "renewed {} registration for {domain}{}",
                    d.service.as_str(),
                    if token_changed { ", new token" } else { "" }
                );
                Ok((node, secret))
            }
            Registered::Refused(Refusal::NotNow) => {
                self.counters.limited += 1;
                crate::metrics::global().refused(crate::metrics::Limit::RegistrationRate);
                if self
                    .limits
                    .first_this_hour("registration rate", domain, now.mono)
                {
                    log::warn!(
                        "{domain}: more than {} new registrations this hour; refusing more",
                        self.limits.config.new_registrations_per_domain_hour
                    );
                }
                Err(reply::registration_rate())
            }
            Registered::Refused(Refusal::DomainFull) => {
                self.counters.limited += 1;
                self.counters.domain_full += 1;
                crate::metrics::global().refused(crate::metrics::Limit::DomainCap);
                if self
                    .limits
                    .first_this_hour("registrations per domain", domain, now.mono)
                {
                    log::warn!(
                        "{domain}: {} registrations stored (limits.registrationsPerDomain); refusing new ones",
                        caps.per_domain
                    );
                }
                Err(reply::domain_full())
            }
        }
    }

    /// Deletes a registration; `item-not-found` when there was none.
    fn unregister(&mut self, now: Now, account: &Account, d: &Device) -> Result<(), StanzaError> {
        let deleted = self.write(now, |store| {
            store.unregister(d.service.as_str(), &d.device, &d.channel)
        })?;
        if !deleted {
            return Err(reply::not_found("no such registration"));
        }
        self.counters.unregistered += 1;
        crate::metrics::global().removed(crate::metrics::Removal::Unregistered, 1);
        log::debug!(
            "{} registration removed for {}",
            d.service.as_str(),
            account.domain
        );
        Ok(())
    }
}
