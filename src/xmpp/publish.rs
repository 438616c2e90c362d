//! XEP-0357 §7: the pubsub publish a user's server sends to wake a device.

use minidom::Element;

use super::form;
use super::ns;

/// What p2 needs from a publish: the node, the secret, and whether it was a real message.
/// The summary's content (bodies, senders) is never kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Publish {
    /// `<publish node='…'>`; `None` when absent or empty.
    pub node: Option<String>,
    /// The `secret` field of the publish-options form; `None` when absent.
    pub secret: Option<String>,
    /// Whether the summary carried `last-message-body`: the de-facto signal of a real
    /// message (APNs alert rather than background).
    pub has_body: bool,
}

impl std::fmt::Debug for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publish")
            .field("node", &self.node)
            .field("secret", &self.secret.as_ref().map(|_| "<hidden>"))
            .field("has_body", &self.has_body)
            .finish()
    }
}

impl Publish {
    /// Reads `<pubsub xmlns='http://jabber.org/protocol/pubsub'>` with a `<publish/>`;
    /// `None` for any other element (another pubsub request is not ours to serve).
    ///
    /// Lenient as PROTOCOL.md §5 asks: the summary form may have any `type`, fields may
    /// lack values, the summary may be missing, the notification may hold other children.
    pub fn from_element(pubsub: &Element) -> Option<Publish> {
        if !pubsub.is("pubsub", ns::PUBSUB) {
            return None;
        }
        let publish = pubsub.get_child("publish", ns::PUBSUB)?;
        let node = publish
            .attr("node")
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let has_body = publish
            .get_child("item", ns::PUBSUB)
            .and_then(|item| item.get_child("notification", ns::PUSH))
            .and_then(|summary| form::find_value(summary, "last-message-body"))
            .is_some();
        let secret = pubsub
            .get_child("publish-options", ns::PUBSUB)
            .and_then(|options| form::find_value(options, "secret"));
        Some(Publish {
            node,
            secret,
            has_body,
        })
    }
}

/// A publish as the core takes it: an `<iq type='set'/>` in the component namespace
/// whose payload (first child element) is a pubsub request with a `<publish/>`, and the
/// IQ's addressing for the reply. What the stream parser's fast path reads straight from
/// the bytes ([`super::fast`]); [`PublishIq::from_element`] reads the same from a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishIq {
    /// The IQ's `id`.
    pub id: String,
    /// The IQ's `from`.
    pub from: Option<String>,
    /// The IQ's `to`.
    pub to: Option<String>,
    /// The publish.
    pub publish: Publish,
}

impl PublishIq {
    /// What the core reads from `el` (`Iq::from_element`, then the payload as a publish):
    /// `Some` exactly when it is an IQ set in the component namespace with an `id`, whose
    /// first child element is `<pubsub/>` holding a `<publish/>`.
    pub fn from_element(el: &Element) -> Option<PublishIq> {
        if !el.is("iq", ns::COMPONENT) || el.attr("type") != Some("set") {
            return None;
        }
        let id = el.attr("id")?.to_owned();
        let payload = el.children().next()?;
        if !payload.is("pubsub", ns::PUBSUB) {
            return None;
        }
        Some(PublishIq {
            id,
            from: el.attr("from").map(str::to_owned),
            to: el.attr("to").map(str::to_owned),
            publish: Publish::from_element(payload)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from Prosody 0.12 mod_cloud_notify (PROTOCOL.md §5).
    const PROSODY: &str = include_str!("../../tests/fixtures/stanzas/prosody-publish.xml");

    /// From ejabberd 23.01 mod_push with include_body and include_sender (PROTOCOL.md §5).
    const EJABBERD: &str = include_str!("../../tests/fixtures/stanzas/ejabberd-publish.xml");

    /// The `<pubsub/>` of a publish as it arrives: in the IQ, in the stream's namespace.
    fn pubsub(iq: &str) -> Element {
        let iq: Element = iq
            .replacen("<iq ", "<iq xmlns='jabber:component:accept' ", 1)
            .parse()
            .unwrap();
        iq.get_child("pubsub", ns::PUBSUB).unwrap().clone()
    }

    fn publish(s: &str) -> Option<Publish> {
        Publish::from_element(&s.parse().unwrap())
    }

    #[test]
    fn reads_prosody_and_ejabberd_captures() {
        assert_eq!(
            Publish::from_element(&pubsub(PROSODY)),
            Some(Publish {
                node: Some("4VS_xOP4xeyO".into()),
                secret: Some("G4yJr4P6XSecKI6H4Jt8AxUm".into()),
                has_body: true
            })
        );
        assert_eq!(
            Publish::from_element(&pubsub(EJABBERD)),
            Some(Publish {
                node: Some("0uPKy41C8ea0".into()),
                secret: Some("krZM6bbFugBicqBPV2fq5ZAc".into()),
                has_body: true
            })
        );
    }

    #[test]
    fn empty_notification_and_missing_parts() {
        // ejabberd with include_body and include_sender off.
        assert_eq!(
            publish(
                "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item>\
                 <notification xmlns='urn:xmpp:push:0'/></item></publish><publish-options>\
                 <x xmlns='jabber:x:data'><field var='secret'><value>s</value></field></x>\
                 </publish-options></pubsub>"
            ),
            Some(Publish {
                node: Some("n".into()),
                secret: Some("s".into()),
                has_body: false
            })
        );
        // Tigase-style extra children, no secret, empty node.
        assert_eq!(
            publish(
                "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node=''><item>\
                 <notification xmlns='urn:xmpp:push:0'><priority xmlns='tigase:push:priority:0'/>\
                 <x xmlns='jabber:x:data'><field var='last-message-body'/></x></notification>\
                 </item></publish></pubsub>"
            ),
            Some(Publish {
                node: None,
                secret: None,
                has_body: false
            })
        );
        assert_eq!(
            publish("<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='x'/></pubsub>"),
            None
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let p = Publish::from_element(&pubsub(PROSODY)).unwrap();
        assert!(!format!("{p:?}").contains("G4yJr4P6XSecKI6H4Jt8AxUm"));
    }
}
