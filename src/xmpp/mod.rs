//! The XMPP protocol layer: pure code from bytes to typed values and back.
//!
//! Nothing here touches a socket, the database, the clock or randomness: the stream
//! parser turns bytes into elements, the typed parsers turn elements into requests, and
//! the builders turn replies into elements. Every function is a plain function of its
//! input, so it is tested on real stanzas and fuzzed.

pub mod command;
pub mod disco;
pub mod fast;
pub mod form;
pub mod handshake;
pub mod jid;
pub mod ns;
pub mod publish;
pub mod stanza;
pub mod stream;

use minidom::rxml::NcName;

/// An attribute name for minidom's builder, from a literal known to be a valid NCName.
pub(crate) fn attr(name: &'static str) -> NcName {
    NcName::try_from(name).expect("attribute names used by p2 are valid NCNames")
}
