//! XML namespaces used on the component stream, one documented constant each.

/// XEP-0114: the default namespace of a component stream; stanzas live in it.
pub const COMPONENT: &str = "jabber:component:accept";
/// RFC 6120 §4.2: the stream namespace (`<stream:stream/>`, `<stream:error/>`).
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// RFC 6120 §4.9.3: stream error conditions.
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3: stanza error conditions and `<text/>`.
pub const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// XEP-0030: service discovery, information.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030: service discovery, items.
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0050: ad-hoc commands; also the disco#items node listing them.
pub const COMMANDS: &str = "http://jabber.org/protocol/commands";
/// XEP-0004: data forms.
pub const DATA_FORMS: &str = "jabber:x:data";
/// XEP-0199: XMPP ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0092: software version.
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0060: publish-subscribe.
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0357: push notifications.
pub const PUSH: &str = "urn:xmpp:push:0";
/// XEP-0357 §7: FORM_TYPE of the publish-options form carrying the secret.
pub const PUBSUB_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
