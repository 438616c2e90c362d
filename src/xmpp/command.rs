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
    /// The group chat of a `muc` registration (old clients only), normalised.
    pub muc: Option<Jid>,
    /// The `channel` hash that Conversations 2.5 to 2.8 sent with `unregister-push-fcm`
    /// (unregistration only; lowercase hex).
    pub channel: Option<String>,
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
                Ok(j) if !j.is_full() => Some(j),
                _ => return Err(bad_request("field 'muc' must be a bare JID")),
            },
        };
        // Conversations 2.5 to 2.8 unregistered a group chat it had left with
        // `unregister-push-fcm` carrying `channel` (the hash from the push's data) and
        // `android-id`, without `muc` (IqGenerator.unregisterChannelOnAppServer). Read
        // without it, that request would remove the account's own registration.
        let channel = match form.value("channel").filter(|_| !with_token) {
            None => None,
            Some(c) if is_hash(c) => Some(c.to_ascii_lowercase()),
            Some(_) => return Err(bad_request("field 'channel' must be a 40-digit hex hash")),
        };
        let fields = DeviceFields {
            token,
            device_id,
            muc,
            channel,
        };
        if let (Some(_), Some(given)) = (&fields.muc, &fields.channel) {
            if *given != fields.channel() {
                return Err(bad_request(
                    "fields 'muc' and 'channel' name different group chats",
                ));
            }
        }
        Ok(fields)
    }

    /// The `channel` of this registration: `""`, or for a `muc` registration the hash
    /// of the group chat JID with the device id, or the `channel` hash as sent.
    pub fn channel(&self) -> String {
        match (&self.muc, &self.channel) {
            (Some(muc), _) => hash_with_device(muc, &self.device_id),
            (None, Some(channel)) => channel.clone(),
            (None, None) => String::new(),
        }
    }
}

fn is_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase hex SHA-1 of `BAREJID ++ "\0" ++ device_id`, BAREJID being the normalised
/// bare JID: the `device` of a registration (with the account) or its `channel` (with a
/// group chat). Conversations compares it with the `account` field of the push.
pub fn hash_with_device(jid: &Jid, device_id: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(jid.bare().as_bytes());
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
    const CONVERSATIONS: &str =
        include_str!("../../tests/fixtures/stanzas/conversations-register.xml");

    fn command(s: &str) -> Command {
        Command::from_element(&s.parse().unwrap()).unwrap()
    }

    fn device_hash(jid: &str) -> String {
        hash_with_device(&Jid::parse(jid).unwrap(), "92afd7a91cdba9a0")
    }

    #[test]
    fn golden_device_hash_of_the_design_note() {
        // printf 'xiaomia1@jabber.de\000''92afd7a91cdba9a0' | sha1sum
        const DESIGN_NOTE: &str = "ec164939a8485ee6b7f7871071a11c7bb18aead5";
        for stamped in [
            "xiaomia1@jabber.de",
            "xiaomia1@jabber.de/Conversations.r4nd",
            "XiaoMiA1@Jabber.DE/Conversations.r4nd",
            "XIAOMIA1@JABBER.DE",
            "xiaomia1@jabber.de./Conversations.r4nd",
            "xiaomia1@jabber.de/my phone",
        ] {
            assert_eq!(device_hash(stamped), DESIGN_NOTE, "{stamped}");
        }
    }

    #[test]
    fn golden_device_hash_of_an_idn_domain_in_both_forms() {
        // printf 'user@пример.рф\000''92afd7a91cdba9a0' | sha1sum: the Unicode form, as
        // the Java p2 (rocks.xmpp, IDN.toUnicode) hashed it.
        const UNICODE: &str = "6d175fd22ee38513e7c615407eab942c8603aa9f";
        for stamped in [
            "user@пример.рф/phone",
            "user@xn--e1afmkfd.xn--p1ai/phone",
            "USER@XN--E1AFMKFD.XN--P1AI",
            "User@Пример.РФ.",
        ] {
            assert_eq!(device_hash(stamped), UNICODE, "{stamped}");
        }
    }

    #[test]
    fn reads_what_conversations_sends() {
        let iq: Element = CONVERSATIONS
            .replacen("<iq ", "<iq xmlns='jabber:component:accept' ", 1)
            .parse()
            .unwrap();
        let c = Command::from_element(iq.get_child("command", ns::COMMANDS).unwrap()).unwrap();
        assert_eq!(c.node, "register-push-fcm");
        assert_eq!(c.action, Action::Execute);
        assert_eq!(
            CommandNode::parse(&c.node),
            Some(CommandNode::Register("fcm"))
        );
        let f = DeviceFields::from_form(c.form.as_ref(), true).unwrap();
        assert_eq!(f.token.as_deref(), Some("FCM-TOKEN"));
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
        // printf 'room@conference.example.com\000new' | sha1sum
        assert_eq!(f.channel(), "f4f51bb6058237f9bf45c05cf9df5291e6405e39");
        // The muc JID is normalised like the account's.
        let c = command(
            "<command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm'>\
             <x xmlns='jabber:x:data'><field var='device-id'><value>new</value></field>\
             <field var='token'><value>t</value></field>\
             <field var='muc'><value>Room@Conference.Example.COM.</value></field></x></command>",
        );
        let f = DeviceFields::from_form(c.form.as_ref(), true).unwrap();
        assert_eq!(f.channel(), "f4f51bb6058237f9bf45c05cf9df5291e6405e39");
    }

    /// What Conversations 2.5 to 2.8 sent to unregister a group chat it had left
    /// (IqGenerator.unregisterChannelOnAppServer): `channel` and `android-id`, no `muc`.
    const CONVERSATIONS_UNREGISTER_CHANNEL: &str = "<command \
        xmlns='http://jabber.org/protocol/commands' node='unregister-push-fcm' \
        action='execute'><x xmlns='jabber:x:data' type='submit'>\
        <field var='channel'><value>e516f833df76640c3d5dae610501d7d0481d21d2</value></field>\
        <field var='android-id'><value>92afd7a91cdba9a0</value></field></x></command>";

    #[test]
    fn unregistration_honours_the_channel_field_of_old_conversations() {
        let c = command(CONVERSATIONS_UNREGISTER_CHANNEL);
        assert_eq!(
            CommandNode::parse(&c.node),
            Some(CommandNode::Unregister("fcm"))
        );
        let f = DeviceFields::from_form(c.form.as_ref(), false).unwrap();
        assert_eq!(f.device_id, "92afd7a91cdba9a0");
        // Not the account's own registration (channel ""): the group chat's.
        assert_eq!(f.channel(), "e516f833df76640c3d5dae610501d7d0481d21d2");
        // Which is the hash of the room with the device id:
        // printf 'room@conference.example.com\000''92afd7a91cdba9a0' | sha1sum
        let with_muc = CONVERSATIONS_UNREGISTER_CHANNEL.replace(
            "</x>",
            "<field var='muc'><value>room@conference.example.com</value></field></x>",
        );
        let f = DeviceFields::from_form(command(&with_muc).form.as_ref(), false).unwrap();
        assert_eq!(f.channel(), "e516f833df76640c3d5dae610501d7d0481d21d2");
        // A registration ignores it, as the Java p2 did.
        let f = DeviceFields::from_form(
            command(
                &CONVERSATIONS_UNREGISTER_CHANNEL
                    .replace("</x>", "<field var='token'><value>t</value></field></x>"),
            )
            .form
            .as_ref(),
            true,
        )
        .unwrap();
        assert_eq!(f.channel(), "");
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
        check(
            "<x xmlns='jabber:x:data'><field var='token'><value>t</value></field>\
             <field var='device-id'><value>d</value></field>\
             <field var='muc'><value>room@exa mple.com</value></field></x>",
            true,
            "field 'muc' must be a bare JID",
        );
        check(
            "<x xmlns='jabber:x:data'><field var='device-id'><value>d</value></field>\
             <field var='channel'><value>room@example.com</value></field></x>",
            false,
            "field 'channel' must be a 40-digit hex hash",
        );
        check(
            "<x xmlns='jabber:x:data'><field var='device-id'><value>d</value></field>\
             <field var='muc'><value>room@example.com</value></field>\
             <field var='channel'><value>e516f833df76640c3d5dae610501d7d0481d21d2</value></field></x>",
            false,
            "fields 'muc' and 'channel' name different group chats",
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
