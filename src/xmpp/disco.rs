//! XEP-0030 service discovery and XEP-0092 version replies for the component.

use minidom::Element;

use super::{attr, ns};

/// The features of the component itself (PROTOCOL.md §3).
pub const FEATURES: &[&str] = &[
    ns::PUSH,
    ns::COMMANDS,
    ns::DISCO_INFO,
    ns::DISCO_ITEMS,
    ns::PING,
    ns::VERSION,
];

fn identity(category: &str, kind: &str, name: Option<&str>) -> Element {
    let b = Element::builder("identity", ns::DISCO_INFO)
        .attr(attr("category"), category)
        .attr(attr("type"), kind);
    match name {
        Some(name) => b.attr(attr("name"), name).build(),
        None => b.build(),
    }
}

fn feature(var: &str) -> Element {
    Element::builder("feature", ns::DISCO_INFO)
        .attr(attr("var"), var)
        .build()
}

/// disco#info of the component: identity `pubsub`/`push` ("an App Server MUST
/// advertise", XEP-0357 §5; Siskin finds app servers by it) and [`FEATURES`].
pub fn component_info() -> Element {
    Element::builder("query", ns::DISCO_INFO)
        .append(identity("pubsub", "push", Some("p2")))
        .append_all(FEATURES.iter().map(|f| feature(f)))
        .build()
}

/// disco#info on a command node (XEP-0050 §2.3): identity automation/command-node.
pub fn command_info(node: &str, name: &str) -> Element {
    Element::builder("query", ns::DISCO_INFO)
        .attr(attr("node"), node)
        .append(identity("automation", "command-node", Some(name)))
        .append(feature(ns::COMMANDS))
        .append(feature(ns::DATA_FORMS))
        .build()
}

/// disco#items of the commands node: one item per usable command, `(node, name)`.
pub fn command_items(jid: &str, commands: &[(&str, &str)]) -> Element {
    Element::builder("query", ns::DISCO_ITEMS)
        .attr(attr("node"), ns::COMMANDS)
        .append_all(commands.iter().map(|(node, name)| {
            Element::builder("item", ns::DISCO_ITEMS)
                .attr(attr("jid"), jid)
                .attr(attr("node"), *node)
                .attr(attr("name"), *name)
                .build()
        }))
        .build()
}

/// An empty disco#items answer (the component has no other items).
pub fn no_items(node: Option<&str>) -> Element {
    let b = Element::builder("query", ns::DISCO_ITEMS);
    match node {
        Some(node) => b.attr(attr("node"), node).build(),
        None => b.build(),
    }
}

/// XEP-0092 reply: name and version.
pub fn version(name: &str, version: &str) -> Element {
    Element::builder("query", ns::VERSION)
        .append(Element::builder("name", ns::VERSION).append(name))
        .append(Element::builder("version", ns::VERSION).append(version))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::stanza::render;

    #[test]
    fn info_advertises_the_push_identity_and_the_features_of_the_spec() {
        // PROTOCOL.md §3: identity pubsub/push; features urn:xmpp:push:0, commands,
        // disco#info, disco#items, urn:xmpp:ping, jabber:iq:version.
        assert_eq!(
            render(&component_info()),
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='pubsub' name='p2' type='push'/>\
             <feature var='urn:xmpp:push:0'/>\
             <feature var='http://jabber.org/protocol/commands'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='urn:xmpp:ping'/>\
             <feature var='jabber:iq:version'/></query>"
        );
    }

    #[test]
    fn a_command_node_is_an_automation_command_node() {
        // XEP-0050 §2.3, PROTOCOL.md §3.
        assert_eq!(
            render(&command_info("register-push-fcm", "Register an FCM device")),
            "<query xmlns='http://jabber.org/protocol/disco#info' node='register-push-fcm'>\
             <identity category='automation' name='Register an FCM device' type='command-node'/>\
             <feature var='http://jabber.org/protocol/commands'/>\
             <feature var='jabber:x:data'/></query>"
        );
    }

    #[test]
    fn items_list_the_commands() {
        assert_eq!(
            render(&command_items(
                "p2.example.net",
                &[("register-push-fcm", "Register an FCM device")]
            )),
            "<query xmlns='http://jabber.org/protocol/disco#items' \
             node='http://jabber.org/protocol/commands'><item jid='p2.example.net' \
             name='Register an FCM device' node='register-push-fcm'/></query>"
        );
    }
}
