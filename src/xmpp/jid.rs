//! Just enough of RFC 7622 to split a JID into local part, domain and resource.

/// A JID as three borrowed parts; no normalisation: the user's server stamped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jid<'a> {
    /// The part before `@`, if any. Private: never logged.
    pub local: Option<&'a str>,
    /// The domain part.
    pub domain: &'a str,
    /// The part after `/`, if any.
    pub resource: Option<&'a str>,
}

impl<'a> Jid<'a> {
    /// Splits `s`; `None` when the domain part is empty or a part is empty.
    pub fn parse(s: &'a str) -> Option<Jid<'a>> {
        // RFC 7622 §3.1: the resource starts at the first '/', the local part ends at
        // the first '@' before it.
        let (bare, resource) = match s.split_once('/') {
            Some((bare, res)) => (bare, Some(res)),
            None => (s, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((local, domain)) => (Some(local), domain),
            None => (None, bare),
        };
        if domain.is_empty()
            || domain.contains('@')
            || local == Some("")
            || resource == Some("")
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return None;
        }
        Some(Jid {
            local,
            domain,
            resource,
        })
    }

    /// Whether a resource is present.
    pub fn is_full(&self) -> bool {
        self.resource.is_some()
    }

    /// `local@domain` or `domain`, borrowed from the original string.
    pub fn bare(&self, original: &'a str) -> &'a str {
        match original.split_once('/') {
            Some((bare, _)) => bare,
            None => original,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_three_forms() {
        let full = "user@example.com/res/with/slash";
        let j = Jid::parse(full).unwrap();
        assert_eq!(j.local, Some("user"));
        assert_eq!(j.domain, "example.com");
        assert_eq!(j.resource, Some("res/with/slash"));
        assert!(j.is_full());
        assert_eq!(j.bare(full), "user@example.com");

        let j = Jid::parse("example.com").unwrap();
        assert_eq!((j.local, j.domain, j.resource), (None, "example.com", None));
        let j = Jid::parse("room@muc.example.com").unwrap();
        assert_eq!(j.bare("room@muc.example.com"), "room@muc.example.com");
        assert!(!j.is_full());
        // A resource may contain '@'.
        let j = Jid::parse("example.com/a@b").unwrap();
        assert_eq!((j.local, j.domain), (None, "example.com"));
    }

    #[test]
    fn refuses_empty_parts() {
        for bad in [
            "",
            "@example.com",
            "user@",
            "example.com/",
            "a@b@c",
            "a b@c",
        ] {
            assert_eq!(Jid::parse(bad), None, "{bad:?}");
        }
    }
}
