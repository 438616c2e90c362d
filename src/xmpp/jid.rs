//! JIDs as XMPP compares them (RFC 7622 with the stringprep profiles of RFC 6122): every
//! JID that p2 hashes, stores or looks up goes through [`Jid::parse`] first, the one
//! place that wraps the `jid` crate.
//!
//! The peers whose hashes p2 must reproduce normalise before hashing: Conversations
//! hashes `Jid.asBareJid().toString()` of jxmpp with the libidn stringprep (nodeprep,
//! nameprep, trailing dot stripped), and the Java p2 hashes rocks.xmpp's
//! `toEscapedString()`, whose domain is the Unicode form of an IDN (`IDN.toUnicode`) and
//! is also what it stored in its `domain` column. So the canonical form here is:
//!
//! - local part: nodeprep (case-folded, NFKC);
//! - domain: one trailing dot stripped, nameprep (case-folded, NFKC), and every `xn--`
//!   label that is the ACE form of a valid Unicode label turned into that label, so an
//!   `xn--` domain and its Unicode form are one domain (IDNA2003 ToUnicode, as Java's
//!   `IDN.toUnicode`: a label that does not round-trip stays as it is);
//! - resource: resourceprep; it may hold spaces (RFC 7622 §3.4).
//!
//! Anything that is not a JID (an empty part, a second `@`, a prohibited character, a
//! part over 1023 bytes, a domain that is not a host name) is refused.

use std::borrow::Cow;
use std::fmt;

/// A parsed JID in canonical form. Its `Debug` never shows the local part.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Jid {
    /// `local@domain` or `domain`, normalised.
    bare: String,
    /// Byte length of the local part within `bare`, if there is one.
    local_len: Option<usize>,
    /// The resource, normalised.
    resource: Option<String>,
}

/// Why a string is not a JID: the part at fault (never its text, which may be private).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidJid {
    /// The local part is empty, too long or has a character nodeprep prohibits.
    Local,
    /// The domain is empty, too long or not a host name.
    Domain,
    /// The resource is empty, too long or has a character resourceprep prohibits.
    Resource,
    /// A second `@` before the resource.
    TooManyAts,
}

impl From<jid::Error> for InvalidJid {
    fn from(e: jid::Error) -> Self {
        use jid::Error as E;
        match e {
            E::NodeEmpty | E::NodeTooLong | E::NodePrep => InvalidJid::Local,
            E::ResourceEmpty
            | E::ResourceTooLong
            | E::ResourcePrep
            | E::ResourceMissingInFullJid
            | E::ResourceInBareJid => InvalidJid::Resource,
            E::TooManyAts => InvalidJid::TooManyAts,
            E::NamePrep | E::Idna => InvalidJid::Domain,
        }
    }
}

impl fmt::Display for InvalidJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidJid::Local => "not a JID: invalid local part",
            InvalidJid::Domain => "not a JID: invalid domain",
            InvalidJid::Resource => "not a JID: invalid resource",
            InvalidJid::TooManyAts => "not a JID: more than one '@'",
        })
    }
}

impl std::error::Error for InvalidJid {}

impl Jid {
    /// Parses and normalises `s`.
    pub fn parse(s: &str) -> Result<Jid, InvalidJid> {
        // RFC 7622 §3.1: the resource starts at the first '/', the local part ends at
        // the first '@' before it. Each part is checked and prepared on its own: jid 0.12's
        // `Jid::new` keeps a trailing dot in an otherwise unchanged JID ("a@b.c." stays
        // as it is, and "a@b.c./r" gets the resource "/r").
        let (bare, resource) = match s.split_once('/') {
            Some((bare, resource)) => (bare, Some(resource)),
            None => (s, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((local, domain)) => (Some(local), domain),
            None => (None, bare),
        };
        if domain.contains('@') {
            return Err(InvalidJid::TooManyAts);
        }
        let local = local.map(jid::NodePart::new).transpose()?;
        let domain = normalise_domain(domain)?;
        let resource = resource.map(jid::ResourcePart::new).transpose()?;
        let (bare, local_len) = match local {
            Some(local) => (
                format!("{}@{domain}", local.as_str()),
                Some(local.as_str().len()),
            ),
            None => (domain, None),
        };
        Ok(Jid {
            bare,
            local_len,
            resource: resource.map(|r| r.as_str().to_owned()),
        })
    }

    /// Whether a resource is present.
    pub fn is_full(&self) -> bool {
        self.resource.is_some()
    }

    /// Whether a local part is present (an account or a room, not a server).
    pub fn has_local(&self) -> bool {
        self.local_len.is_some()
    }

    /// The canonical domain.
    pub fn domain(&self) -> &str {
        match self.local_len {
            // The byte after the local part is the ASCII '@'.
            Some(n) => self.bare.get(n + 1..).unwrap_or_default(),
            None => &self.bare,
        }
    }

    /// The canonical bare JID, `local@domain` or `domain`: what device and channel hashes
    /// and account keys are computed from.
    pub fn bare(&self) -> &str {
        &self.bare
    }

    /// The canonical resource, if any.
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }
}

impl fmt::Debug for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jid")
            .field("local", &self.local_len.map(|n| format!("<{n} bytes>")))
            .field("domain", &self.domain())
            .field("full", &self.is_full())
            .finish()
    }
}

/// The canonical form of a domain alone (a stored or imported `domain` column, or the
/// domain part of a JID).
pub fn normalise_domain(domain: &str) -> Result<String, InvalidJid> {
    let prepared = jid::DomainPart::new(domain)?;
    Ok(unicode_domain(prepared.as_str()).into_owned())
}

/// The domain part of a JID as it was sent, unnormalised and unchecked, for log lines
/// and per-domain counters only: `None` when there is none to show.
pub fn raw_domain(s: &str) -> Option<&str> {
    let bare = s.split_once('/').map_or(s, |(bare, _)| bare);
    let domain = bare.split_once('@').map_or(bare, |(_, domain)| domain);
    (!domain.is_empty()).then_some(domain)
}

/// A nameprepped domain with each `xn--` label replaced by its Unicode form where that
/// form is itself canonical; borrowed when nothing changes (every ASCII domain).
fn unicode_domain(domain: &str) -> Cow<'_, str> {
    if !domain.split('.').any(is_ace) {
        return Cow::Borrowed(domain);
    }
    let labels: Vec<Cow<'_, str>> = domain
        .split('.')
        .map(|label| match ace_to_unicode(label) {
            Some(u) => Cow::Owned(u),
            None => Cow::Borrowed(label),
        })
        .collect();
    Cow::Owned(labels.join("."))
}

fn is_ace(label: &str) -> bool {
    label.len() > 4
        && label
            .as_bytes()
            .get(..4)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"xn--"))
}

/// IDNA2003 ToUnicode of one label (RFC 3490 §4.2), as Java's `IDN.toUnicode` does it:
/// decode the Punycode, then keep the result only if it is not ASCII, is unchanged by
/// nameprep, has no label separator, and encodes back to the same label.
fn ace_to_unicode(label: &str) -> Option<String> {
    if !is_ace(label) {
        return None;
    }
    let ascii = label.get(4..)?.to_ascii_lowercase();
    let decoded = idna::punycode::decode_to_string(&ascii)?;
    if decoded.is_ascii()
        || decoded.contains(['.', '\u{3002}', '\u{ff0e}', '\u{ff61}'])
        || decoded
            .chars()
            .any(|c| c.is_ascii() && !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
    {
        return None;
    }
    // Nameprep must leave it alone (then the stored form is what a server would stamp
    // for the Unicode spelling), and it must be the label's canonical encoding.
    match jid::DomainPart::new(&decoded) {
        Ok(prepared) if prepared.as_str() == decoded => {}
        _ => return None,
    }
    (idna::punycode::encode_str(&decoded)? == ascii).then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check(input, bare, resource)`; `bare` `None` means refused.
    fn check(input: &str, bare: Option<&str>, resource: Option<&str>) {
        match (Jid::parse(input), bare) {
            (Ok(j), Some(b)) => {
                assert_eq!(j.bare(), b, "{input:?}");
                assert_eq!(j.resource(), resource, "{input:?}");
                assert_eq!(j.is_full(), resource.is_some(), "{input:?}");
            }
            (Err(_), None) => {}
            (got, _) => panic!("{input:?}: got {got:?}, expected {bare:?}"),
        }
    }

    #[test]
    fn splits_the_three_forms() {
        check(
            "user@example.com/res/with/slash",
            Some("user@example.com"),
            Some("res/with/slash"),
        );
        check("example.com", Some("example.com"), None);
        check("room@muc.example.com", Some("room@muc.example.com"), None);
        // A resource may contain '@'.
        check("example.com/a@b", Some("example.com"), Some("a@b"));
        let j = Jid::parse("user@example.com/r").unwrap();
        assert_eq!(j.domain(), "example.com");
        assert!(j.has_local());
        let j = Jid::parse("example.com/a@b").unwrap();
        assert_eq!(j.domain(), "example.com");
        assert!(!j.has_local());
    }

    #[test]
    fn case_is_folded_in_local_part_and_domain() {
        check(
            "XiaoMiA1@Jabber.DE/Conversations.X1Y2",
            Some("xiaomia1@jabber.de"),
            Some("Conversations.X1Y2"),
        );
        check("USER@EXAMPLE.COM", Some("user@example.com"), None);
    }

    #[test]
    fn trailing_dot_is_stripped() {
        check("user@example.com.", Some("user@example.com"), None);
        check("user@example.com./r", Some("user@example.com"), Some("r"));
        check("example.com..", None, None);
    }

    #[test]
    fn idn_domain_in_either_form_is_the_unicode_form() {
        for form in [
            "user@пример.рф",
            "user@xn--e1afmkfd.xn--p1ai",
            "User@XN--E1AFMKFD.xn--P1AI",
            "user@ПРИМЕР.РФ",
            "user@xn--e1afmkfd.рф.",
        ] {
            check(form, Some("user@пример.рф"), None);
        }
        assert_eq!(
            normalise_domain("xn--bcher-kva.example").unwrap(),
            "bücher.example"
        );
        assert_eq!(
            normalise_domain("Bücher.Example.").unwrap(),
            "bücher.example"
        );
        // An ACE label that is not valid Punycode is not a host name.
        assert_eq!(
            normalise_domain("xn--abc-.example"),
            Err(InvalidJid::Domain)
        );
        // 'ß' is mapped to "ss" by nameprep, so its ACE label does not round-trip: it is
        // kept as sent, as Java's IDN.toUnicode keeps it.
        assert_eq!(
            normalise_domain("xn--zca.example").unwrap(),
            "xn--zca.example"
        );
    }

    #[test]
    fn a_resource_may_hold_spaces() {
        check(
            "user@example.com/my phone 2",
            Some("user@example.com"),
            Some("my phone 2"),
        );
    }

    #[test]
    fn refuses_what_is_not_a_jid() {
        for bad in [
            "",
            "@example.com",
            "user@",
            "example.com/",
            "a@b@c",
            "a b@c",
            "user@exa mple.com",
            "user@-example.com",
            "user@example..com",
            "user@example.com:5222",
            "a\u{0}b@example.com",
        ] {
            check(bad, None, None);
        }
        let long = "a".repeat(1024);
        check(&format!("{long}@example.com"), None, None);
        check(&format!("a@example.com/{long}"), None, None);
        for bad in ["", "a@b", "a/b", "exa mple.com", "..", "?????.??"] {
            assert!(normalise_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_local_part() {
        let j = Jid::parse("secretname@example.com/r").unwrap();
        let shown = format!("{j:?}");
        assert!(!shown.contains("secretname"), "{shown}");
        assert!(shown.contains("example.com"), "{shown}");
    }

    #[test]
    fn raw_domain_for_logs() {
        assert_eq!(raw_domain("user@Example.com/r@x"), Some("Example.com"));
        assert_eq!(raw_domain("example.com"), Some("example.com"));
        assert_eq!(raw_domain("user@/r"), None);
        assert_eq!(raw_domain(""), None);
    }
}
