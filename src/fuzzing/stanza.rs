//! The typed stanza parsers and reply builders on whatever a peer can send.
//!
//! Input: the bytes after a component stream header, as the XMPP server would send them.
//! Every stanza the stream parser completes goes the way the core takes it
//! (src/app/mod.rs `stanza` and `request`): `Iq`, then the command, its form and device
//! fields, or the publish, and the replies built from the peer's own strings (id, from,
//! to, node, sessionid). The typed parsers also run on every element of every stanza,
//! wherever it sits. Checks: no panic, and every reply renders to XML that parses back
//! with the peer's strings unchanged.

use crate::app::reply;
use crate::xmpp::command::{self, Command, CommandNode, DeviceFields};
use crate::xmpp::disco;
use crate::xmpp::form::Form;
use crate::xmpp::jid::Jid;
use crate::xmpp::publish::Publish;
use crate::xmpp::stanza::{render, Iq};
use crate::xmpp::stream::{StreamEvent, StreamParser, DEFAULT_MAX_STANZA_BYTES};
use minidom::Element;

const HEADER: &str = "<stream:stream xmlns='jabber:component:accept' \
                      xmlns:stream='http://etherx.jabber.org/streams' id='x'>";
const OUR_JID: &str = "p2.example.net";

/// Parses a rendered reply back: it must be one well-formed stanza.
fn reparse(text: &str) -> Element {
    let mut parser = StreamParser::new(usize::MAX);
    parser.feed(HEADER.as_bytes()).expect("the header parses");
    let events = match parser.feed(text.as_bytes()) {
        Ok(events) => events,
        Err(e) => panic!("a reply does not parse ({e}): {text}"),
    };
    match events.as_slice() {
        [StreamEvent::Stanza(el)] => el.clone(),
        other => panic!("a reply parses to {other:?}: {text}"),
    }
}

/// Renders a reply and checks that the peer's strings come back unchanged.
fn check_reply(reply: &Element, attrs: &[(&str, Option<&str>)]) -> String {
    let text = render(reply);
    let again = reparse(&text);
    assert_eq!(&again, reply, "the reply changes when parsed back: {text}");
    for (name, value) in attrs {
        assert_eq!(again.attr(*name), *value, "attribute {name} of {text}");
    }
    text
}

/// A command reply: `<command node sessionid/>` with the peer's node and session id.
fn check_command_reply(reply: &Element, node: &str, sessionid: &str) {
    let text = render(reply);
    let mut parser = StreamParser::new(usize::MAX);
    parser.feed(HEADER.as_bytes()).expect("the header parses");
    // A payload alone is not in the component namespace: wrap it like the IQ will.
    let wrapped = format!("<iq>{text}</iq>");
    let events = parser
        .feed(wrapped.as_bytes())
        .unwrap_or_else(|e| panic!("a command reply does not parse ({e}): {text}"));
    let [StreamEvent::Stanza(iq)] = events.as_slice() else {
        panic!("a command reply parses to {events:?}: {text}");
    };
    let again = iq.children().next().expect("the command is there");
    assert_eq!(again, reply, "the command changes when parsed back: {text}");
    assert_eq!(again.attr("node"), Some(node));
    assert_eq!(again.attr("sessionid"), Some(sessionid));
}

/// The typed parsers on one element, wherever it sits.
fn typed(el: &Element) {
    if let Some(form) = Form::from_element(el) {
        let _ = form.value("token");
        let _ = form.has_field("secret");
        let _ = DeviceFields::from_form(Some(&form), true);
        let _ = DeviceFields::from_form(Some(&form), false);
    }
    let _ = Form::find_in(el);
    if let Some(publish) = Publish::from_element(el) {
        let _ = format!("{publish:?}");
    }
    if let Some(cmd) = Command::from_element(el) {
        let _ = CommandNode::parse(&cmd.node);
        for with_token in [true, false] {
            if let Ok(fields) = DeviceFields::from_form(cmd.form.as_ref(), with_token) {
                let _ = fields.channel();
            }
        }
    }
    for child in el.children() {
        typed(child);
    }
}

/// What the core does with one stanza (src/app/mod.rs `stanza`, `request`, `command`,
/// `publish`), without the store.
fn core(el: Element) {
    let Ok(iq) = Iq::from_element(el) else {
        return;
    };
    for jid in [iq.from.as_deref(), iq.to.as_deref()].into_iter().flatten() {
        if let Ok(j) = Jid::parse(jid) {
            // Normalisation is idempotent: the canonical form parses to itself.
            let again = Jid::parse(j.bare()).expect("a canonical bare JID parses");
            assert_eq!(again.bare(), j.bare());
            assert!(j.bare().ends_with(j.domain()));
            assert_eq!(
                Jid::parse(j.domain()).map(|d| d.bare().to_owned()),
                Ok(j.domain().to_owned())
            );
            let _ = j.is_full();
        }
    }
    let _ = iq.wants_reply();
    let to = iq.reply_to(OUR_JID);
    let addressing = [
        ("id", Some(iq.id.as_str())),
        ("to", iq.from.as_deref()),
        ("from", Some(iq.to.as_deref().unwrap_or(OUR_JID))),
    ];
    check_reply(&to.result(None), &addressing);
    // The core's own error replies (src/app/reply.rs), addressed to the peer.
    check_reply(&to.error(&reply::unsupported()), &addressing);

    let Some(payload) = &iq.payload else {
        return;
    };
    if let Some(node) = payload.attr("node") {
        // disco#info and disco#items name the node asked for.
        check_reply(&to.result(Some(disco::no_items(Some(node)))), &addressing);
        check_reply(
            &to.result(Some(disco::command_info(node, node))),
            &addressing,
        );
    }
    if let Some(cmd) = Command::from_element(payload) {
        let sessionid = cmd.sessionid.clone().unwrap_or_else(|| "1".to_owned());
        check_reply(&to.error(&reply::unknown_command()), &addressing);
        if let command::Action::Other(a) = &cmd.action {
            // The peer's action comes back in the text.
            check_reply(&to.error(&reply::unsupported_action(a)), &addressing);
        }
        if let Some(CommandNode::Register(s) | CommandNode::Unregister(s)) =
            CommandNode::parse(&cmd.node)
        {
            if crate::app::Service::from_name(s).is_none() {
                check_reply(&to.error(&reply::unknown_service()), &addressing);
            }
        }
        let from = iq.from.as_deref().unwrap_or("");
        if let Some(account) = Jid::parse(from).ok().filter(|j| j.has_local()) {
            let register = matches!(
                CommandNode::parse(&cmd.node),
                Some(CommandNode::Register(_))
            );
            match DeviceFields::from_form(cmd.form.as_ref(), register) {
                Ok(fields) => {
                    let device = command::hash_with_device(&account, &fields.device_id);
                    assert_eq!(device.len(), 40);
                    let channel = fields.channel();
                    assert!(channel.is_empty() || channel.len() == 40);
                }
                Err(e) => {
                    check_reply(&to.error(&e), &addressing);
                }
            }
        }
        for built in [
            command::registered(
                &cmd.node,
                &sessionid,
                OUR_JID,
                "eKxTS5n3bOe0",
                "KK4+H5WMfpRG/2zCbuKq6wpX",
            ),
            command::completed(&cmd.node, &sessionid),
            command::canceled(&cmd.node, &sessionid),
        ] {
            check_command_reply(&built, &cmd.node, &sessionid);
            check_reply(&to.result(Some(built)), &addressing);
        }
    }
    if let Some(publish) = Publish::from_element(payload) {
        let from = iq.from.as_deref().unwrap_or("");
        let _ = Jid::parse(from).map(|j| (j.domain().to_owned(), j.is_full()));
        let _ = (
            publish.node.as_deref(),
            publish.secret.as_deref(),
            publish.has_body,
        );
        if let Some(node) = &publish.node {
            assert!(!node.is_empty());
        }
    }
}

/// Checks one input (see the module's documentation).
pub fn stanza(data: &[u8]) {
    let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
    parser.feed(HEADER.as_bytes()).expect("the header parses");
    let Ok(events) = parser.feed(data) else {
        return;
    };
    for event in events {
        if let StreamEvent::Stanza(el) = event {
            typed(&el);
            core(el);
        }
    }
}
