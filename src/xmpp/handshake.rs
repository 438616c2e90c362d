//! XEP-0114 §3: the component's stream header and handshake.

use sha1_smol::Sha1;

/// The opening stream header a component sends, addressed to its own JID.
pub fn stream_header(jid: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{}'>",
        super::stanza::escape(jid)
    )
}

/// The stream's closing tag.
pub const STREAM_CLOSE: &str = "</stream:stream>";

/// "the component concatenates the stream id received from the server with the shared
/// secret, hashes it with SHA-1, and sends the lowercase hex digest" (XEP-0114 §3).
pub fn digest(stream_id: &str, secret: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(stream_id.as_bytes());
    sha.update(secret.as_bytes());
    sha.digest().to_string()
}

/// The `<handshake>` element the component sends after the server's header.
pub fn handshake(stream_id: &str, secret: &str) -> String {
    format!("<handshake>{}</handshake>", digest(stream_id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_the_protocol_vector() {
        assert_eq!(
            digest("sid", "123456"),
            "9accec263ab84a43c6037ccf7cd48cb1d3f6df8e"
        );
        assert_eq!(
            handshake("sid", "123456"),
            "<handshake>9accec263ab84a43c6037ccf7cd48cb1d3f6df8e</handshake>"
        );
    }

    #[test]
    fn header_escapes_the_jid() {
        assert_eq!(
            stream_header("p2.example.net"),
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' to='p2.example.net'>"
        );
        assert!(stream_header("a'b").contains("to='a&#39;b'"));
    }
}
