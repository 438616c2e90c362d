//! XEP-0050 ad-hoc commands: the registration requests of PROTOCOL.md §4 and their replies.

use minidom::Element;
use sha1_smol::Sha1;

use super::form::{self, Form};
use super::jid::Jid;
use super::stanza::{Condition, ErrorType, StanzaError};
use super::{attr, ns};

/// XEP-0050 §3.4: what the requester asks of the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `execute`, `complete` or no action at all ("absent means execute").
    Execute,
    /// `cancel`: end the session.
    Cancel,
    /// `next`, `prev` or anything else: a single-stage command has no such step.
    Other(String),
}

/// An ad-hoc command request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The command node, e.g. `register-push-fcm`.
    pub node: String,
    /// The action asked for.
    pub action: Action,
    /// The session id, if the requester sent one.
    pub sessionid: Option<String>,
    /// The submitted data form, if any.
    pub form: Option<Form>,
}

impl Command {
    /// Reads `<command xmlns='http://jabber.org/protocol/commands'/>`; `None` for any other
    /// element or a command without a node.
    pub fn from_element(el: &Element) -> Option<Command> {
        if !el.is("command", ns::COMMANDS) {
            return None;
        }
        let action = match el.attr("action") {
            None | Some("execute") | Some("complete") => Action::Execute,
            Some("cancel") => Action::Cancel,
            Some(other) => Action::Other(other.to_owned()),
        };
        Some(Command {
            node: el.attr("node")?.to_owned(),
            action,
            sessionid: el.attr("sessionid").map(str::to_owned),
            form: Form::find_in(el),
        })
    }
}

/// The p2 command nodes: `register-push-SERVICE` and `unregister-push-SERVICE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandNode<'a> {
    /// `register-push-SERVICE`.
    Register(&'a str),
    /// `unregister-push-SERVICE`.
    Unregister(&'a str),
}

impl<'a> CommandNode<'a> {
    /// Splits a node name; `None` for a node that is not one of p2's.
    pub fn parse(node: &'a str) -> Option<CommandNode<'a>> {
        if let Some(service) = node.strip_prefix("register-push-") {
            Some(CommandNode::Register(service))
        } else {
            node.strip_prefix("unregister-push-")
                .map(CommandNode::Unregister)
        }
    }
}

/// The device fields of a registration or unregistration form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFields {
    /// The provider token; `None` when not required (unregistration).
    pub token: Option<String>,
    /// `device-id`, or else `android-id`.
    pub device_id: String,
    /// The bare JID of a group chat, for a `muc` registration (old clients only).
    pub muc: Option<String>,
}

/// Longest provider token accepted (FCM tokens are about 160 bytes, APNs 64).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest device id accepted (Android ids are 16 hex digits).
pub const MAX_DEVICE_ID_BYTES: usize = 256;
/// Longest JID (RFC 7622 §3.1: three parts of at most 1023 bytes, and two separators).
pub const MAX_JID_BYTES: usize = 3071;

fn bad_request(text: &str) -> StanzaError {
    StanzaError::new(ErrorType::Modify, Condition::BadRequest, text)
}

impl DeviceFields {
    /// Reads the fields of PROTOCOL.md §4 from the command's form. `token` is required
    /// when `with_token`; `device-id` is preferred over `android-id`; `muc` must be a
    /// bare JID. Every refusal is `modify` `bad-request` naming the field.
    pub fn from_form(form: Option<&Form>, with_token: bool) -> Result<DeviceFields, StanzaError> {
        let form = form.ok_or_else(|| bad_request("missing data form"))?;
        let token = if with_token {
            Some(
                form.value("token")
                    .ok_or_else(|| bad_request("missing field 'token'"))?
                    .to_owned(),
            )
        } else {
            None
        };
        if token.as_ref().is_some_and(|t| t.len() > MAX_TOKEN_BYTES) {
            return Err(bad_request(&format!(
                "field 'token' is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let device_id = form
            .value("device-id")
            .or_else(|| form.value("android-id"))
            .ok_or_else(|| bad_request("missing field 'device-id' (or 'android-id')"))?
            .to_owned();
        if device_id.len() > MAX_DEVICE_ID_BYTES {
            return Err(bad_request(&format!(
                "field 'device-id' is longer than {MAX_DEVICE_ID_BYTES} bytes"
            )));
        }
        let muc = match form.value("muc") {
            None => None,
            Some(muc) if muc.len() > MAX_JID_BYTES => {
                return Err(bad_request("field 'muc' is longer than a JID may be"))
            }
            Some(muc) => match Jid::parse(muc) {
                Some(j) if !j.is_full() => Some(muc.to_owned()),
                _ => return Err(bad_request("field 'muc' must be a bare JID")),
            },
        };
        Ok(DeviceFields {
            token,
            device_id,
            muc,
        })
    }

    /// The `channel` of this registration: `""`, or for a `muc` registration the hash
    /// of the group chat JID with the device id.
    pub fn channel(&self) -> String {
        match &self.muc {
            Some(muc) => hash_with_device(muc, &self.device_id),
            None => String::new(),
        }
    }
}

/// Lowercase hex SHA-1 of `jid ++ "\0" ++ device_id`: the `device` of a registration
/// (with the account's bare JID) or its `channel` (with a group chat JID).
pub fn hash_with_device(jid: &str, device_id: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(jid.as_bytes());
    sha.update(b"\0");
    sha.update(device_id.as_bytes());
    sha.digest().to_string()
}

fn command_reply(node: &str, sessionid: &str, status: &str) -> minidom::ElementBuilder {
    Element::builder("command", ns::COMMANDS)
        .attr(attr("node"), node)
        .attr(attr("sessionid"), sessionid)
        .attr(attr("status"), status)
}

/// The reply to a successful registration, in the Java p2's shape (PROTOCOL.md §4):
/// a completed command with a form giving our JID, the node and the secret.
pub fn registered(
    node: &str,
    sessionid: &str,
    jid: &str,
    push_node: &str,
    secret: &str,
) -> Element {
    command_reply(node, sessionid, "completed")
        .append(form::result_form(&[
            ("jid-single", "jid", jid),
            ("text-single", "node", push_node),
            ("text-single", "secret", secret),
        ]))
        .build()
}

/// A completed command without payload (the reply to an unregistration).
pub fn completed(node: &str, sessionid: &str) -> Element {
    command_reply(node, sessionid, "completed").build()
}

/// XEP-0050 §3.5: the reply to `action='cancel'`.
pub fn canceled(node: &str, sessionid: &str) -> Element {
    command_reply(node, sessionid, "canceled").build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stanza::render;

    /// The request Conversations sends (PROTOCOL.md §4, design note).
    const CONVERSATIONS: &str = "<command xmlns='http://jabber.org/protocol/commands' \
        action='execute' node='register-push-fcm'><x xmlns='jabber:x:data' type='submit'>\
        <field var='token'><value>eeDXSJjASJY:APA91bEKxhXK54-vHhY9O55JmU2R0nDJL2rRENm-W9uPY6x3jHi0i0OyvPu6js9jVPZqDeX9ZQydZCBZE19o7a0kK4_n88fCgufXjaOlvalh9VibB2zOI7dQRTaDNB3H5s4dicpWD0m4</value></field>\
        <field var='android-id'><value>92afd7a91cdba9a0</value></field></x></command>";

    fn command(s: &str) -> Command {
        Command::from_element(&s.parse().unwrap()).unwrap()
    }

    #[test]
    fn golden_device_hash_of_the_design_note() {
        assert_eq!(
            hash_with_device("xiaomia1@jabber.de", "92afd7a91cdba9a0"),
            "ec164939a8485ee6b7f7871071a11c7bb18aead5"
        );
    }

    #[test]
    fn reads_what_conversations_sends() {
        let c = command(CONVERSATIONS);
        assert_eq!(c.node, "register-push-fcm");
        assert_eq!(c.action, Action::Execute);
        assert_eq!(
            CommandNode::parse(&c.node),
            Some(CommandNode::Register("fcm"))
        );
        let f = DeviceFields::from_form(c.form.as_ref(), true).unwrap();
        assert!(f.token.unwrap().starts_with("eeDXSJjASJY:"));
        assert_eq!(f.device_id, "92afd7a91cdba9a0");
        assert_eq!(f.muc, None);
    }

    #[test]
    fn device_id_is_preferred_and_muc_gives_a_channel() {
        let c = command(
            "<command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm'>\
             <x xmlns='jabber:x:data'><field var='android-id'><value>old</value></field>\
             <field var='device-id'><value>new</value></field>\
             <field var='token'><value>t</value></field>\
             <field var='muc'><value>room@conference.example.com</value></field></x></command>",
        );
        assert_eq!(c.action, Action::Execute);
        let f = DeviceFields::from_form(c.form.as_ref(), true).unwrap();
        assert_eq!(f.device_id, "new");
        assert_eq!(
            f.channel(),
            hash_with_device("room@conference.example.com", "new")
        );
        assert_eq!(f.channel().len(), 40);
    }

    #[test]
    fn refusals_name_the_field() {
        let check = |body: &str, with_token: bool, text: &str| {
            let c = command(&format!(
                "<command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm'>{body}</command>"
            ));
            let err = DeviceFields::from_form(c.form.as_ref(), with_token).unwrap_err();
            assert_eq!(err, bad_request(text), "{body}");
        };
        check("", true, "missing data form");
        check(
            "<x xmlns='jabber:x:data'><field var='android-id'><value>a</value></field></x>",
            true,
            "missing field 'token'",
        );
        check(
            "<x xmlns='jabber:x:data'><field var='token'><value>t</value></field></x>",
            true,
            "missing field 'device-id' (or 'android-id')",
        );
        check(
            "<x xmlns='jabber:x:data'><field var='token'><value>t</value></field>\
             <field var='device-id'><value>d</value></field>\
             <field var='muc'><value>room@muc.example.com/nick</value></field></x>",
            true,
            "field 'muc' must be a bare JID",
        );
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        check(
            &format!(
                "<x xmlns='jabber:x:data'><field var='token'><value>{long}</value></field>\
                 <field var='device-id'><value>d</value></field></x>"
            ),
            true,
            "field 'token' is longer than 4096 bytes",
        );
        check(
            &format!(
                "<x xmlns='jabber:x:data'><field var='token'><value>t</value></field>\
                 <field var='device-id'><value>{}</value></field></x>",
                &long[..257]
            ),
            true,
            "field 'device-id' is longer than 256 bytes",
        );
        // Unregistration needs no token.
        let c = command(
            "<command xmlns='http://jabber.org/protocol/commands' node='unregister-push-fcm'>\
             <x xmlns='jabber:x:data'><field var='device-id'><value>d</value></field></x></command>",
        );
        assert!(DeviceFields::from_form(c.form.as_ref(), false).is_ok());
    }

    #[test]
    fn actions_and_nodes() {
        let c = command(
            "<command xmlns='http://jabber.org/protocol/commands' node='n' action='cancel'/>",
        );
        assert_eq!(c.action, Action::Cancel);
        let c = command(
            "<command xmlns='http://jabber.org/protocol/commands' node='n' action='next'/>",
        );
        assert_eq!(c.action, Action::Other("next".into()));
        assert_eq!(
            CommandNode::parse("unregister-push-apns"),
            Some(CommandNode::Unregister("apns"))
        );
        assert_eq!(CommandNode::parse("list-users"), None);
        let el: Element = "<command xmlns='http://jabber.org/protocol/commands'/>"
            .parse()
            .unwrap();
        assert_eq!(Command::from_element(&el), None);
    }

    #[test]
    fn registration_reply_has_the_java_shape() {
        assert_eq!(
            render(&registered(
                "register-push-fcm",
                "1526463999190",
                "p2.siacs.eu",
                "eKxTS5n3bOe0",
                "KK4+H5WMfpRG/2zCbuKq6wpX"
            )),
            "<command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' \
             sessionid='1526463999190' status='completed'><x xmlns='jabber:x:data' type='form'>\
             <field type='jid-single' var='jid'><value>p2.siacs.eu</value></field>\
             <field type='text-single' var='node'><value>eKxTS5n3bOe0</value></field>\
             <field type='text-single' var='secret'><value>KK4+H5WMfpRG/2zCbuKq6wpX</value>\
             </field></x></command>"
        );
        assert_eq!(
            render(&canceled("register-push-fcm", "s")),
            "<command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' \
             sessionid='s' status='canceled'/>"
        );
    }
}
