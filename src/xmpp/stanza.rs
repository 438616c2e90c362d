//! RFC 6120 §8: IQ stanzas, their replies, and stanza errors.

use std::fmt;

use minidom::Element;

use super::{attr, ns};

/// RFC 6120 §8.2.3: the four IQ types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IqType {
    /// A request for information.
    Get,
    /// A request that changes something.
    Set,
    /// A successful reply.
    Result,
    /// A failed reply.
    Error,
}

/// An IQ as it arrived, its addressing kept verbatim for the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Iq {
    /// The `id`, echoed in the reply.
    pub id: String,
    /// The sender as stamped by the server (`None` if absent).
    pub from: Option<String>,
    /// The addressee: our JID or a JID at our domain.
    pub to: Option<String>,
    /// `get`, `set`, `result` or `error`.
    pub kind: IqType,
    /// The first child element, if any.
    pub payload: Option<Element>,
}

/// Why an element is not an IQ we can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotIq {
    /// Another stanza (message, presence) or a stream-level element: ignored.
    Other,
    /// An IQ without an `id` or with an unknown `type`: it cannot be answered.
    Malformed(&'static str),
}

impl Iq {
    /// Reads an `<iq/>` in the component namespace.
    pub fn from_element(el: Element) -> Result<Iq, NotIq> {
        if !el.is("iq", ns::COMPONENT) {
            return Err(NotIq::Other);
        }
        let kind = match el.attr("type") {
            Some("get") => IqType::Get,
            Some("set") => IqType::Set,
            Some("result") => IqType::Result,
            Some("error") => IqType::Error,
            _ => return Err(NotIq::Malformed("iq without a valid type")),
        };
        let id = match el.attr("id") {
            Some(id) => id.to_owned(),
            None => return Err(NotIq::Malformed("iq without an id")),
        };
        let from = el.attr("from").map(str::to_owned);
        let to = el.attr("to").map(str::to_owned);
        let mut el = el;
        let payload = el.unshift_child();
        Ok(Iq {
            id,
            from,
            to,
            kind,
            payload,
        })
    }

    /// Whether this IQ must get exactly one reply (RFC 6120 §8.2.3: get and set do;
    /// result and error never do).
    pub fn wants_reply(&self) -> bool {
        matches!(self.kind, IqType::Get | IqType::Set)
    }

    /// The addressing of the reply: `from` the request's `to` (or `own_jid`), `to` the
    /// request's `from`, same `id`.
    pub fn reply_to(&self, own_jid: &str) -> ReplyTo {
        ReplyTo {
            id: self.id.clone(),
            to: self.from.clone(),
            from: self.to.clone().unwrap_or_else(|| own_jid.to_owned()),
        }
    }
}

/// Where a reply goes; kept by the core while a push is in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The request's `id`.
    pub id: String,
    /// The request's `from`.
    pub to: Option<String>,
    /// The request's `to`.
    pub from: String,
}

impl ReplyTo {
    fn iq(&self, kind: &'static str) -> minidom::ElementBuilder {
        let b = Element::builder("iq", ns::COMPONENT)
            .attr(attr("type"), kind)
            .attr(attr("id"), self.id.as_str())
            .attr(attr("from"), self.from.as_str());
        match &self.to {
            Some(to) => b.attr(attr("to"), to.as_str()),
            None => b,
        }
    }

    /// `<iq type='result'/>` without payload, written directly: the same bytes as
    /// `render(&self.result(None))`, without building an element (the hot path of every
    /// delivered push).
    pub fn empty_result(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str("<iq xmlns='jabber:component:accept' from='");
        out.push_str(&escape(&self.from));
        out.push_str("' id='");
        out.push_str(&escape(&self.id));
        if let Some(to) = &self.to {
            out.push_str("' to='");
            out.push_str(&escape(to));
        }
        out.push_str("' type='result'/>");
        out
    }

    /// `<iq type='result'/>` with an optional payload.
    pub fn result(&self, payload: Option<Element>) -> Element {
        let b = self.iq("result");
        match payload {
            Some(p) => b.append(p).build(),
            None => b.build(),
        }
    }

    /// `<iq type='error'/>` carrying `err`.
    pub fn error(&self, err: &StanzaError) -> Element {
        self.iq("error").append(err.to_element()).build()
    }
}

/// RFC 6120 §8.3.2: the error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry.
    Cancel,
    /// Retry after changing the data sent.
    Modify,
    /// Retry after waiting: the only type every server keeps a push registration for.
    Wait,
}

impl ErrorType {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// RFC 6120 §8.3.3: the conditions p2 sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The request is malformed.
    BadRequest,
    /// The requester may not do this.
    Forbidden,
    /// The server could not process the request.
    InternalServerError,
    /// The addressed item does not exist.
    ItemNotFound,
    /// The request exceeds a limit.
    PolicyViolation,
    /// The request was refused because of a rate limit.
    ResourceConstraint,
    /// The feature or payload is not provided here.
    ServiceUnavailable,
}

impl Condition {
    /// The element name.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Forbidden => "forbidden",
            Condition::InternalServerError => "internal-server-error",
            Condition::ItemNotFound => "item-not-found",
            Condition::PolicyViolation => "policy-violation",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
        }
    }
}

/// A stanza error: type, condition and an optional human-readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// What the requester should do.
    pub kind: ErrorType,
    /// What went wrong.
    pub condition: Condition,
    /// Says which field or what failed, in English.
    pub text: Option<String>,
}

impl StanzaError {
    /// An error with a text.
    pub fn new(kind: ErrorType, condition: Condition, text: impl Into<String>) -> StanzaError {
        StanzaError {
            kind,
            condition,
            text: Some(text.into()),
        }
    }

    /// An error without text.
    pub fn bare(kind: ErrorType, condition: Condition) -> StanzaError {
        StanzaError {
            kind,
            condition,
            text: None,
        }
    }

    /// `<error type='…'><condition/><text/></error>`, the `<error/>` in the component
    /// namespace like its `<iq/>`: "Prosody reads type and condition as nil otherwise"
    /// (PROTOCOL.md §2).
    pub fn to_element(&self) -> Element {
        let mut b = Element::builder("error", ns::COMPONENT)
            .attr(attr("type"), self.kind.as_str())
            .append(Element::bare(self.condition.as_str(), ns::STANZAS));
        if let Some(text) = &self.text {
            b = b.append(
                Element::builder("text", ns::STANZAS)
                    .append(xml_chars(text))
                    .build(),
            );
        }
        b.build()
    }
}

/// `text` with every character that XML 1.0 does not allow (controls other than tab, LF
/// and CR; U+FFFE, U+FFFF) replaced by U+FFFD. A `<text/>` may quote what a push provider
/// or its transport said, and minidom's writer panics on such characters.
fn xml_chars(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => '\u{fffd}',
            c => c,
        })
        .collect()
}

impl fmt::Display for StanzaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.condition.as_str())?;
        if let Some(text) = &self.text {
            write!(f, " ({text})")?;
        }
        Ok(())
    }
}

/// Serialises an element for the stream (no XML declaration).
pub fn render(el: &Element) -> String {
    let mut out = Vec::with_capacity(256);
    el.write_to(&mut out)
        .expect("writing an element to a Vec cannot fail for elements built by p2");
    String::from_utf8(out).expect("minidom writes UTF-8")
}

/// Escapes text for use in XML character data or a single- or double-quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn reads_an_iq_and_its_payload() {
        let iq = Iq::from_element(parse(
            "<iq xmlns='jabber:component:accept' type='get' id='p1' from='localhost' \
             to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        ))
        .unwrap();
        assert_eq!(iq.id, "p1");
        assert_eq!(iq.kind, IqType::Get);
        assert_eq!(iq.from.as_deref(), Some("localhost"));
        assert!(iq.payload.unwrap().is("ping", ns::PING));
    }

    #[test]
    fn sorts_out_what_is_not_an_answerable_iq() {
        assert_eq!(
            Iq::from_element(parse("<message xmlns='jabber:component:accept'/>")),
            Err(NotIq::Other)
        );
        assert_eq!(
            Iq::from_element(parse("<iq xmlns='jabber:component:accept' type='get'/>")),
            Err(NotIq::Malformed("iq without an id"))
        );
        assert_eq!(
            Iq::from_element(parse(
                "<iq xmlns='jabber:component:accept' type='nope' id='1'/>"
            )),
            Err(NotIq::Malformed("iq without a valid type"))
        );
        let result = Iq::from_element(parse(
            "<iq xmlns='jabber:component:accept' type='result' id='1'/>",
        ))
        .unwrap();
        assert!(!result.wants_reply());
    }

    #[test]
    fn error_reply_keeps_the_error_in_the_iq_namespace() {
        let iq = Iq::from_element(parse(
            "<iq xmlns='jabber:component:accept' type='set' id='e1' from='localhost' \
             to='push.localhost'><pubsub xmlns='http://jabber.org/protocol/pubsub'/></iq>",
        ))
        .unwrap();
        let reply = iq.reply_to("p2.example.net").error(&StanzaError::new(
            ErrorType::Wait,
            Condition::InternalServerError,
            "push provider unavailable",
        ));
        assert_eq!(
            render(&reply),
            "<iq xmlns='jabber:component:accept' from='push.localhost' id='e1' \
             to='localhost' type='error'><error type='wait'><internal-server-error \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>push provider unavailable</text></error></iq>"
        );
        let error = reply.get_child("error", ns::COMPONENT).unwrap();
        assert_eq!(error.attr("type"), Some("wait"));
    }

    #[test]
    fn the_direct_empty_result_is_what_minidom_writes() {
        for (id, from, to) in [
            ("a1", "push.localhost", Some("localhost")),
            ("q'u\"o<t>e&", "p2.example.net", Some("a@b/c d")),
            ("x", "p2.example.net", None),
        ] {
            let reply = ReplyTo {
                id: id.into(),
                from: from.into(),
                to: to.map(str::to_owned),
            };
            assert_eq!(reply.empty_result(), render(&reply.result(None)));
        }
    }

    #[test]
    fn error_text_drops_what_xml_cannot_carry() {
        // A push that failed with a reason holding a NUL (found by fuzz/core): rendering
        // the reply panicked in minidom's writer.
        let reply = ReplyTo {
            id: "1".into(),
            to: None,
            from: "p2.example.net".into(),
        }
        .error(&StanzaError::new(
            ErrorType::Wait,
            Condition::InternalServerError,
            "push not delivered: a\u{0}b\u{1b}c\u{fffe}\td\u{10000}",
        ));
        assert_eq!(
            render(&reply),
            "<iq xmlns='jabber:component:accept' from='p2.example.net' id='1' \
             type='error'><error type='wait'><internal-server-error \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text \
             xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>push not delivered: \
             a\u{fffd}b\u{fffd}c\u{fffd}\td\u{10000}</text></error></iq>"
        );
    }

    #[test]
    fn result_reply_falls_back_to_our_jid() {
        let iq = Iq::from_element(parse(
            "<iq xmlns='jabber:component:accept' type='get' id='r&amp;1' from='a@b/c'/>",
        ))
        .unwrap();
        assert_eq!(
            render(&iq.reply_to("p2.example.net").result(None)),
            "<iq xmlns='jabber:component:accept' from='p2.example.net' id='r&amp;1' \
             to='a@b/c' type='result'/>"
        );
    }
}
