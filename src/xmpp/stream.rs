//! The incremental component-stream parser: bytes from the socket in, stream events out, no I/O.
//!
//! A component stream (XEP-0114) is one XML document that stays open for the whole
//! connection: the server's `<stream:stream>` header, then any number of top-level
//! children (stanzas, `<handshake/>`, `<stream:error/>`), then `</stream:stream>`.
//! [`StreamParser`] is fed whatever bytes the socket returned, however they are cut, and
//! hands back each event as soon as the bytes that complete it have arrived. It sits on
//! rxml's raw parser and minidom's `TreeBuilder`, the way the old tokio-xmpp codec did.
//!
//! One stanza never costs the stream (PROTOCOL.md §5): anyone on the network can have
//! the user's server relay a stanza to us, and dropping the connection for it would let
//! them cut us off at will. A top-level child that is larger than the limit, nested
//! deeper than [`MAX_DEPTH`], or that gets namespaces wrong (ejabberd relays elements
//! with prefixes declared on the sending server's stream header as they came, without
//! the declaration; a server that does not resolve namespaces relays anything) is
//! skipped: from the point where that is known, the parser only follows the child's
//! structure until its end tag, keeping nothing of it, and then reports it as
//! [`StreamEvent::Oversized`] with the reason, so that the daemon can answer it. Only
//! XML that cannot be followed any further ends the stream ([`StreamError`]): broken
//! syntax, comments, processing instructions and DTDs, which a server does not write:
//! it writes the stanzas it relays out of a tree of its own.

use std::fmt;

use minidom::rxml::error::EndOrError;
use minidom::rxml::parser::{CommentMode, EventMetrics};
use minidom::rxml::{Options, Parse, RawEvent, RawParser, WithOptions};
use minidom::tree_builder::TreeBuilder;
use minidom::Element;

use super::fast::{self, Extent, Fast, Scanned};
use super::ns;
use super::publish::PublishIq;

/// The default for [`StreamParser::new`]'s `max_stanza_bytes`: 256 KiB, what servers
/// allow their clients (Prosody's `c2s_stanza_size_limit`, ejabberd's example
/// `max_stanza_size`), so that whatever a client can send, and its server relays to us
/// in a publish (a long message body included in the push), fits.
///
/// The real stanzas a push app server receives are small: the publishes of PROTOCOL.md §5
/// are about 1.2 KiB, the registration of §4 about 0.4 KiB.
pub const DEFAULT_MAX_STANZA_BYTES: usize = 256 * 1024;

/// Deepest nesting of elements built inside one top-level child (the child itself is
/// level 1); a child with an element deeper than that is skipped and reported
/// ([`SkipReason::Depth`]). The real stanzas are at most 8 deep (the Prosody publish:
/// iq/pubsub/publish/item/notification/x/field/value). Bounding the depth keeps every
/// recursive walk of an element (dropping it, serialising it) far from the end of a
/// thread's stack, which the byte limit alone would not: 64 KiB of `<a>` is 16 384
/// levels. A skipped child is followed with a counter only, however deep it goes.
pub const MAX_DEPTH: usize = 64;

/// rxml's own limit on one token (an element or attribute name, an attribute value, a
/// reference; longer text is not refused but split) when the stanza limit is below it;
/// otherwise the token limit is the stanza limit, up to [`MAX_TOKEN_CEILING`]. Within
/// the stanza limit, our byte limit thus comes first. A token longer than this that is
/// being read when a child crosses the stanza limit is a [`StreamError::Xml`]: it is read
/// by rxml to its end before the skipped rest of the child is followed without it. rxml
/// reserves a buffer of this size up front (address space only: its pages are touched
/// as tokens fill it).
const MAX_TOKEN_LENGTH: usize = 1024 * 1024;

/// The largest token limit, whatever the stanza limit (the configuration allows up to
/// 16 MiB).
const MAX_TOKEN_CEILING: usize = 16 * 1024 * 1024;

/// Events of one start tag (its name and attributes) for which room is kept between tags.
const HEAD_EVENTS: usize = 16;

/// The namespace of the `xml` prefix, bound without a declaration.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// The namespace of namespace declarations (`xmlns`, `xmlns:p`).
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// Something complete that the peer sent on the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The peer's stream header `<stream:stream …>`, with the attributes we need.
    Open {
        /// The stream id (XEP-0114 §3: the component hashes it with the shared secret).
        id: Option<String>,
        /// The server's domain.
        from: Option<String>,
    },
    /// One complete top-level child of the stream (a stanza, `<handshake/>`,
    /// `<stream:error/>`, …), in its own namespace: stanzas in `jabber:component:accept`
    /// inherited from the header, `<stream:error/>` in `http://etherx.jabber.org/streams`.
    Stanza(Element),
    /// A top-level child that was skipped rather than built, for the reason in `why`: it
    /// is larger than the limit given to [`StreamParser::new`], nested deeper than
    /// [`MAX_DEPTH`], or uses an undeclared namespace prefix. It comes once the child's
    /// end tag has been read, so the next event is whatever follows the child; the stream
    /// goes on. Nothing of the child was kept beyond what the report needs.
    ///
    /// From the point where the child is known to be skipped, its structure is followed
    /// to its end tag and nothing else is checked: neither names nor characters nor
    /// namespaces, only that tags are tags (a comment, processing instruction or DTD there
    /// is still a [`StreamError::Xml`], as is, within the start tag being read at that
    /// point, a name or value over 1 MiB).
    ///
    /// The addressing attributes are those of the child's start tag when that start tag
    /// was complete when the child was found to be skipped, so that an IQ can be answered
    /// with an error. When the size limit is crossed inside that start tag itself, they
    /// are all `None`.
    Oversized {
        /// The local name of the child (`iq`, `message`, `presence`, …), always known: the
        /// name is read even when the limit falls inside the start tag.
        name: String,
        /// Its `id` attribute.
        id: Option<String>,
        /// Its `from` attribute.
        from: Option<String>,
        /// Its `to` attribute.
        to: Option<String>,
        /// Its `type` attribute (`get`, `set`, `chat`, …).
        kind: Option<String>,
        /// Why it was skipped.
        why: SkipReason,
    },
    /// A top-level child that is a publish, read by the fast path
    /// ([`StreamParser::read_publishes`]): what [`PublishIq::from_element`] reads from
    /// the [`StreamEvent::Stanza`] the same bytes give without it.
    Publish(PublishIq),
    /// The peer closed the stream (`</stream:stream>`); no event follows.
    Close,
}

/// Why a top-level child was skipped ([`StreamEvent::Oversized`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Its raw bytes went over the limit given to [`StreamParser::new`], which it carries.
    Size(usize),
    /// An element in it opens deeper than the limit it carries ([`MAX_DEPTH`]).
    Depth(usize),
    /// One of its start tags uses a namespace prefix declared nowhere in scope, names the
    /// same attribute twice once prefixes are resolved, binds a reserved prefix or
    /// namespace wrongly or a prefix to nothing: what is wrong, in a few words. The rest
    /// of the stream is still well-formed XML, so only this child is lost.
    Namespace(&'static str),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Size(limit) => write!(f, "larger than {limit} bytes"),
            SkipReason::Depth(limit) => write!(f, "nested deeper than {limit} levels"),
            SkipReason::Namespace(what) => write!(f, "with {what}"),
        }
    }
}

/// Why the stream cannot be parsed any further. The connection is to be dropped: the
/// parser that returned it returns the same error to every later call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The bytes are not a well-formed XMPP stream: broken XML, a DTD, comment or
    /// processing instruction, a root other than `<stream:stream>` or a header with a
    /// namespace error, text between stanzas, a name or attribute value longer than
    /// 1 MiB read when a child crosses the size limit. Carries the reason.
    Xml(String),
    /// The stream header (with the XML declaration before it) is longer than the limit
    /// given to [`StreamParser::new`], counted in raw bytes. There is no stream yet to
    /// answer on, so unlike a top-level child ([`StreamEvent::Oversized`]) it is not
    /// skipped.
    StanzaTooLarge {
        /// The limit in bytes that was exceeded.
        limit: usize,
    },
    /// Bytes were fed after the peer's `</stream:stream>`.
    AfterClose,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Xml(reason) => write!(f, "malformed xml stream: {reason}"),
            StreamError::StanzaTooLarge { limit } => {
                write!(f, "stream header larger than the limit of {limit} bytes")
            }
            StreamError::AfterClose => f.write_str("data received after the stream was closed"),
        }
    }
}

impl std::error::Error for StreamError {}

/// The incremental parser of one component stream (one connection). Feed it bytes with
/// [`feed`](Self::feed); it keeps only the unfinished top-level child between calls, and
/// of a skipped child not even that.
pub struct StreamParser {
    raw: RawParser,
    tree: TreeBuilder,
    max_stanza_bytes: usize,
    /// rxml's limit on one token, for a parser made afresh after a skip.
    max_token_length: usize,
    /// `</stream:stream>` has been parsed.
    closed: bool,
    /// Raw bytes consumed by rxml for the current unit: the stream header (with the XML
    /// declaration) or the top-level child being parsed. Not counted while skipping.
    unit_bytes: usize,
    /// Between two top-level children: the lexer has just consumed a `>` that left us at
    /// depth 1 and holds nothing, so whitespace here is a keepalive that we drop ourselves.
    at_boundary: bool,
    /// The events of the start tag being parsed, handed to the tree builder only once the
    /// tag is complete and its names resolve: the tree builder cannot be told to forget a
    /// half-read start tag (it would hand its prefixed attributes to the next one), a
    /// skip may begin inside one, and a prefix it cannot resolve leaves it unusable.
    head: Vec<RawEvent>,
    /// The namespace prefixes declared on the elements open in the tree, outermost
    /// first (the stream header's included), so that a start tag can be checked before
    /// the tree builder sees it.
    bindings: Vec<Binding>,
    /// The stream header's raw name (`stream:stream`), to open a parser afresh inside it.
    root_name: String,
    /// Set while the current top-level child is being skipped.
    skip: Option<Skip>,
    /// Set once an error has been returned; every later call returns it again.
    failed: Option<StreamError>,
    /// The default namespace declared on the stream header (what children inherit).
    root_ns: String,
    /// No top-level child has been completed since the stream header.
    after_header: bool,
    /// The publish fast path, once switched on.
    fast: Option<FastPath>,
}

/// The state of the publish fast path between calls.
#[derive(Default)]
struct FastPath {
    /// The beginning of a top-level child that looks like a publish so far, held until
    /// its end arrives (at most [`fast::MAX_BYTES`]); nothing of it has reached rxml.
    pending: Vec<u8>,
    /// Where the held bytes end, lexically.
    extent: Extent,
}

/// A namespace prefix declared on an open element.
struct Binding {
    /// The tree depth of the element that declares it (1 is the stream header).
    depth: usize,
    prefix: String,
    namespace: String,
}

/// What is left of a top-level child being skipped: where we are in it and what will be
/// reported.
struct Skip {
    /// Elements of the child whose start tag is complete and end tag not yet read; 0 while
    /// the child's own start tag is still being read.
    depth: usize,
    /// rxml has just read the `>` of a tag inside the child and holds nothing more: the
    /// point where the rest can be followed without it.
    between_tags: bool,
    /// Once rxml is left behind: where the rest of the child is, lexically.
    lex: Option<Lex>,
    why: SkipReason,
    /// The report, filled from the start tag if it was complete.
    name: String,
    id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    kind: Option<String>,
}

/// Where the bytes of a skipped child are, for the little lexer that follows them to the
/// child's end tag: just enough of XML to tell tags from text and attribute values, and
/// to count the depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Text.
    Content,
    /// Just after `<`.
    Open,
    /// Inside a start tag, outside attribute values.
    StartTag,
    /// Inside an attribute value quoted with this byte.
    Quoted(u8),
    /// After the `/` of `/>`.
    EmptyTag,
    /// Inside an end tag.
    EndTag,
    /// After `<!` and this many bytes of `[CDATA[`.
    Bang(u8),
    /// Inside a CDATA section, after this many `]` in a row (at most 2).
    CData(u8),
}

impl StreamParser {
    /// A parser for a new stream. `max_stanza_bytes` bounds the raw size of every
    /// top-level child and of the stream header; use [`DEFAULT_MAX_STANZA_BYTES`]
    /// (256 KiB) unless there is a reason not to. The bound covers a start tag that never
    /// ends and a text node that never ends: once it is crossed, nothing more of the child
    /// is kept. A child over the limit is skipped and reported as
    /// [`StreamEvent::Oversized`]; a header over the limit is
    /// [`StreamError::StanzaTooLarge`].
    pub fn new(max_stanza_bytes: usize) -> Self {
        let max_token_length = max_stanza_bytes.clamp(MAX_TOKEN_LENGTH, MAX_TOKEN_CEILING);
        StreamParser {
            raw: raw_parser(max_token_length),
            tree: TreeBuilder::new(),
            max_stanza_bytes,
            max_token_length,
            closed: false,
            unit_bytes: 0,
            at_boundary: false,
            head: Vec::new(),
            bindings: Vec::new(),
            root_name: String::new(),
            skip: None,
            failed: None,
            root_ns: String::new(),
            after_header: false,
            fast: None,
        }
    }

    /// Switches the publish fast path on: from now on, a top-level child that is a plain
    /// XEP-0357 publish comes as [`StreamEvent::Publish`] instead of
    /// [`StreamEvent::Stanza`], read straight from its bytes (see [`fast`]). Anything
    /// else, and any publish outside the fast path's strict subset of XML, still goes
    /// through rxml and minidom, so the events are otherwise the same, however the bytes
    /// are cut.
    pub fn read_publishes(&mut self) {
        self.fast.get_or_insert_with(FastPath::default);
    }

    /// The bytes the fast path holds: the beginning of a child that may be a publish,
    /// not yet complete (at most [`fast::MAX_BYTES`]).
    pub fn held_bytes(&self) -> usize {
        self.fast.as_ref().map_or(0, |f| f.pending.len())
    }

    /// Feeds bytes as they arrive from the socket, cut anywhere (even one byte at a time,
    /// inside a tag or a UTF-8 character), and returns every event they complete, in order.
    /// Never blocks, never panics.
    ///
    /// After an error the parser is dead: this and every later call return that error, and
    /// the events completed earlier in the same call are dropped with it (the connection is
    /// going down anyway). Only whitespace may follow `</stream:stream>`; anything else,
    /// in the same call or a later one, is [`StreamError::AfterClose`].
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<StreamEvent>, StreamError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let mut events = Vec::new();
        match self.feed_inner(data, &mut events, true) {
            Ok(()) => Ok(events),
            Err(error) => {
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    fn feed_inner(
        &mut self,
        mut data: &[u8],
        events: &mut Vec<StreamEvent>,
        allow_fast: bool,
    ) -> Result<(), StreamError> {
        loop {
            if self.closed {
                // The document is over: only trailing whitespace may follow.
                return match data.iter().all(u8::is_ascii_whitespace) {
                    true => Ok(()),
                    false => Err(StreamError::AfterClose),
                };
            }
            if self.skip.as_ref().is_some_and(|skip| skip.lex.is_some()) {
                let (used, done) = self.skip_bytes(data)?;
                data = &data[used..];
                if !done {
                    return Ok(());
                }
                events.push(self.end_skip());
                continue;
            }
            if allow_fast && self.fast.as_ref().is_some_and(|f| !f.pending.is_empty()) {
                match self.fast_continue(data, events)? {
                    Some(rest) => {
                        data = rest;
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            if self.at_boundary {
                // Whitespace between stanzas is a keepalive (RFC 6120 §4.6, silent peers):
                // drop it here, so an idle stream costs nothing and no keepalive counts
                // towards a stanza's size.
                let skip = data
                    .iter()
                    .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                    .count();
                data = &data[skip..];
                if allow_fast && self.fast.is_some() && self.skip.is_none() && !data.is_empty() {
                    match self.fast_start(data, events)? {
                        Some(rest) if rest.len() < data.len() => {
                            data = rest;
                            continue;
                        }
                        Some(_) => {} // not a publish: rxml reads it
                        None => return Ok(()),
                    }
                }
            }
            // Within the limit, never hand rxml more than the current unit may still use,
            // so that the byte crossing it is the last one rxml reads before we know. While
            // skipping, hand it everything.
            let offered = match self.skip {
                Some(_) => data.len(),
                None => {
                    let budget = (self.max_stanza_bytes - self.unit_bytes).saturating_add(1);
                    data.len().min(budget)
                }
            };
            let mut chunk = &data[..offered];
            let result = self.raw.parse(&mut chunk, false);
            let consumed = offered - chunk.len();
            data = &data[consumed..];
            if consumed > 0 {
                self.at_boundary = false;
            }
            if self.skip.is_none() {
                self.unit_bytes += consumed;
                if self.unit_bytes > self.max_stanza_bytes {
                    if self.tree.depth() == 0 {
                        // Still in the stream header.
                        return Err(self.too_large());
                    }
                    self.start_skipping(SkipReason::Size(self.max_stanza_bytes), false);
                }
            }
            match result {
                Ok(Some(event)) => {
                    let event = match self.skip {
                        Some(_) => self.skip_event(event)?,
                        None => self.process(event)?,
                    };
                    events.extend(event);
                    self.leave_rxml_when_between_tags(events)?;
                }
                Ok(None) => {
                    // rxml reports the end of the document only when told the input ended,
                    // which we never do; after `</stream:stream>` we stop asking it.
                    return Err(StreamError::Xml("unexpected end of document".to_owned()));
                }
                Err(EndOrError::NeedMoreData) => {
                    if data.is_empty() {
                        return Ok(());
                    }
                    if consumed == 0 {
                        // rxml wants more bytes yet left some unread: it would spin.
                        return Err(StreamError::Xml("parser stalled".to_owned()));
                    }
                }
                Err(EndOrError::Error(error)) => match reserved_declaration(&error) {
                    Some(what) if self.tree.depth() > 0 => self.skip_from_start_tag(what)?,
                    _ => return Err(StreamError::Xml(error.to_string())),
                },
            }
        }
    }

    /// The fast path at the start of a top-level child (`data` is not empty, rxml holds
    /// nothing): a publish it reads is handed on and `Some` of the bytes after it
    /// returned; the beginning of what may be one is held (`None`: all of `data` is
    /// used); anything else is `Some(data)`, for rxml.
    fn fast_start<'d>(
        &mut self,
        data: &'d [u8],
        events: &mut Vec<StreamEvent>,
    ) -> Result<Option<&'d [u8]>, StreamError> {
        // Right after the stream header rxml may still hold the header's own end (an
        // empty `<stream:stream/>`): the fast path starts after the first child.
        if self.tree.depth() != 1 || data[0] != b'<' || self.after_header {
            return Ok(Some(data));
        }
        match fast::read(data, &self.root_ns, self.max_stanza_bytes) {
            Fast::Publish(publish, used) => {
                events.push(StreamEvent::Publish(publish));
                self.next_unit();
                Ok(Some(&data[used..]))
            }
            Fast::No => Ok(Some(data)),
            Fast::Incomplete => {
                let fast = self.fast.as_mut().expect("the fast path is on");
                fast.extent = Extent::default();
                match fast.extent.scan(data) {
                    Scanned::More => {
                        fast.pending.extend_from_slice(data);
                        Ok(None)
                    }
                    // The reader and the scanner disagree: leave it to rxml.
                    Scanned::End(_) | Scanned::Outside => Ok(Some(data)),
                }
            }
        }
    }

    /// The fast path with the beginning of a child held: the next piece. Returns what is
    /// left of `data` for the loop (`None`: all of it is held).
    fn fast_continue<'d>(
        &mut self,
        data: &'d [u8],
        events: &mut Vec<StreamEvent>,
    ) -> Result<Option<&'d [u8]>, StreamError> {
        let limit = self.max_stanza_bytes.min(fast::MAX_BYTES);
        let fast = self.fast.as_mut().expect("the fast path is on");
        let rest = match fast.extent.scan(data) {
            Scanned::More if fast.pending.len().saturating_add(data.len()) <= limit => {
                fast.pending.extend_from_slice(data);
                return Ok(None);
            }
            Scanned::End(used) => {
                fast.pending.extend_from_slice(&data[..used]);
                if let Fast::Publish(publish, read) =
                    fast::read(&fast.pending, &self.root_ns, self.max_stanza_bytes)
                {
                    if read == fast.pending.len() {
                        fast.pending.clear();
                        events.push(StreamEvent::Publish(publish));
                        self.next_unit();
                        return Ok(Some(&data[used..]));
                    }
                }
                &data[used..]
            }
            Scanned::More | Scanned::Outside => data,
        };
        // Not for the fast path after all: rxml reads what was held, then the rest.
        let held = std::mem::take(&mut fast.pending);
        self.feed_inner(&held, events, false)?;
        if let Some(fast) = self.fast.as_mut() {
            fast.pending = held;
            fast.pending.clear();
        }
        Ok(Some(rest))
    }

    /// rxml refused a namespace declaration in a start tag inside a child (it checks
    /// those itself and then refuses everything after): it has read up to the end of the
    /// refused declaration, so the rest of the child is followed from inside that start
    /// tag, and a parser made afresh takes the next child.
    fn skip_from_start_tag(&mut self, what: &'static str) -> Result<(), StreamError> {
        if self.skip.is_none() {
            // The start tag in `head` is cut short, as by the size limit.
            self.start_skipping(SkipReason::Namespace(what), false);
        }
        let skip = self.skip.as_mut().expect("skipping");
        skip.between_tags = false;
        skip.lex = Some(Lex::StartTag);
        self.raw = self.parser_inside_root()?;
        Ok(())
    }

    /// Hands one raw event to the tree builder and returns the stream event it completes.
    fn process(&mut self, event: RawEvent) -> Result<Option<StreamEvent>, StreamError> {
        // Depth before the event: 0 outside the root, 1 between top-level children.
        let depth = self.tree.depth();
        match &event {
            RawEvent::ElementHeadOpen(..) => {
                // depth levels below the root once this element is open.
                if depth > MAX_DEPTH {
                    self.start_skipping(SkipReason::Depth(MAX_DEPTH), false);
                    return Ok(None);
                }
                self.head.push(event);
                return Ok(None);
            }
            RawEvent::Attribute(..) => {
                self.head.push(event);
                return Ok(None);
            }
            RawEvent::Text(_, text) if depth == 1 => {
                between_stanzas(text)?;
                return Ok(None);
            }
            _ => {}
        }
        let head_close = matches!(event, RawEvent::ElementHeadClose(_));
        let foot = matches!(event, RawEvent::ElementFoot(_));
        if head_close {
            if let Err(what) = self.check_head() {
                if depth == 0 {
                    return Err(StreamError::Xml(format!("stream header: {what}")));
                }
                // The tag is whole, and it is the child's own when depth is 1.
                self.start_skipping(SkipReason::Namespace(what), true);
                return self.skip_event(event);
            }
            if depth == 0 {
                for event in self.head.iter().skip(1) {
                    if let RawEvent::Attribute(_, (None, name), value) = event {
                        if name.as_str() == "xmlns" {
                            self.root_ns = value.clone();
                        }
                    }
                }
                if let Some(RawEvent::ElementHeadOpen(_, (prefix, name))) = self.head.first() {
                    self.root_name = match prefix {
                        Some(prefix) => format!("{prefix}:{name}"),
                        None => name.to_string(),
                    };
                }
            }
            for event in self.head.iter().skip(1) {
                if let RawEvent::Attribute(_, (Some(xmlns), prefix), namespace) = event {
                    if xmlns.as_str() == "xmlns" {
                        self.bindings.push(Binding {
                            depth: depth + 1,
                            prefix: prefix.to_string(),
                            namespace: namespace.clone(),
                        });
                    }
                }
            }
            for event in self.head.drain(..) {
                self.tree
                    .process_event(event)
                    .map_err(|error| StreamError::Xml(error.to_string()))?;
            }
            // A start tag of thousands of attributes leaves no large buffer behind.
            self.head.shrink_to(HEAD_EVENTS);
        }
        self.tree
            .process_event(event)
            .map_err(|error| StreamError::Xml(error.to_string()))?;

        if head_close {
            if depth == 0 {
                return self.opened().map(Some);
            }
        } else if foot {
            let depth = self.tree.depth();
            self.forget_bindings_below(depth);
            match depth {
                0 => {
                    // The root is complete: the peer closed the stream.
                    self.tree.root = None;
                    self.closed = true;
                    return Ok(Some(StreamEvent::Close));
                }
                1 => {
                    // A top-level child is complete. Text at depth 1 never reaches the tree,
                    // so it is the root's only child; taking it leaves the root empty.
                    let mut stanza = self.tree.unshift_child().expect("the child just closed");
                    forget_prefixes(&mut stanza);
                    self.next_unit();
                    return Ok(Some(StreamEvent::Stanza(stanza)));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Checks the complete start tag in `head` before the tree builder sees it: every
    /// prefix it uses is declared (on it or an open element), and no attribute is named
    /// twice, before or after prefixes are resolved. The tree builder would fail on the
    /// first and collapse the second.
    fn check_head(&self) -> Result<(), &'static str> {
        let declared_here = |prefix: &str| {
            self.head.iter().skip(1).find_map(|event| match event {
                RawEvent::Attribute(_, (Some(xmlns), name), namespace)
                    if xmlns.as_str() == "xmlns" && name.as_str() == prefix =>
                {
                    Some(namespace.as_str())
                }
                _ => None,
            })
        };
        let resolve = |prefix: &str| {
            declared_here(prefix).or_else(|| {
                self.bindings
                    .iter()
                    .rev()
                    .find(|binding| binding.prefix == prefix)
                    .map(|binding| binding.namespace.as_str())
            })
        };
        if let Some(RawEvent::ElementHeadOpen(_, (Some(prefix), _))) = self.head.first() {
            // An element's `xml` prefix is no exception: the tree builder wants it declared.
            if resolve(prefix.as_str()).is_none() {
                return Err("an undeclared namespace prefix");
            }
        }
        // (namespace, local name) of each attribute, declarations included.
        let mut names = Vec::with_capacity(self.head.len().saturating_sub(1));
        for event in self.head.iter().skip(1) {
            let RawEvent::Attribute(_, (prefix, name), _) = event else {
                continue;
            };
            let namespace = match prefix.as_ref().map(|p| p.as_str()) {
                None if name.as_str() == "xmlns" => XMLNS_NS,
                None => "",
                Some("xmlns") => XMLNS_NS,
                Some("xml") => XML_NS,
                Some(prefix) => resolve(prefix).ok_or("an undeclared namespace prefix")?,
            };
            let local = match (prefix, name.as_str()) {
                (None, "xmlns") => "",
                (_, local) => local,
            };
            names.push((namespace, local));
        }
        let duplicate = if names.len() <= HEAD_EVENTS {
            names
                .iter()
                .enumerate()
                .any(|(i, name)| names[..i].contains(name))
        } else {
            names.sort_unstable();
            names.windows(2).any(|pair| pair[0] == pair[1])
        };
        match duplicate {
            true => Err("a duplicate attribute"),
            false => Ok(()),
        }
    }

    /// Drops the prefixes declared on elements deeper than `depth`.
    fn forget_bindings_below(&mut self, depth: usize) {
        while self.bindings.last().is_some_and(|b| b.depth > depth) {
            self.bindings.pop();
        }
    }

    /// The current top-level child is to be skipped for `why`: drop what was built of it,
    /// keep what the report needs, and follow the rest. `head_complete`: the start tag in
    /// `head` is whole (it is not when the size limit falls inside it).
    fn start_skipping(&mut self, why: SkipReason, head_complete: bool) {
        let mut skip = Skip {
            // The open elements below the root, the child itself first.
            depth: self.tree.depth().saturating_sub(1),
            between_tags: false,
            lex: None,
            why,
            name: String::new(),
            id: None,
            from: None,
            to: None,
            kind: None,
        };
        if skip.depth > 0 {
            // The child's start tag was complete: close what is open inside it, read the
            // report off it, and take it out of the root.
            let foot = || RawEvent::ElementFoot(EventMetrics::zero());
            while self.tree.depth() > 2 {
                self.tree
                    .process_event(foot())
                    .expect("closing an open element always succeeds");
            }
            let child = self.tree.top().expect("the child is open");
            let attr = |name| child.attr(name).map(str::to_owned);
            skip.name = child.name().to_owned();
            skip.id = attr("id");
            skip.from = attr("from");
            skip.to = attr("to");
            skip.kind = attr("type");
            self.tree
                .process_event(foot())
                .expect("closing an open element always succeeds");
            drop(self.tree.unshift_child());
            self.forget_bindings_below(1);
        } else if let Some(RawEvent::ElementHeadOpen(_, (_, name))) = self.head.first() {
            // The child's own start tag: its name is known, and its attributes when it is
            // whole.
            skip.name = name.to_string();
            if head_complete {
                for event in self.head.iter().skip(1) {
                    if let RawEvent::Attribute(_, (None, attr), value) = event {
                        let slot = match attr.as_str() {
                            "id" => &mut skip.id,
                            "from" => &mut skip.from,
                            "to" => &mut skip.to,
                            "type" => &mut skip.kind,
                            _ => continue,
                        };
                        *slot = Some(value.clone());
                    }
                }
            }
        }
        // A start tag cut by the limit (the child's or one inside it) is forgotten; rxml
        // still reads the rest of it.
        self.head.clear();
        self.head.shrink_to(HEAD_EVENTS);
        // Text is dropped as it comes rather than gathered into 1 MiB pieces first.
        self.raw.set_text_buffering(false);
        self.skip = Some(skip);
    }

    /// Follows one raw event of a child being skipped while rxml still reads it, keeping
    /// nothing of it; returns [`StreamEvent::Oversized`] once the child is complete.
    fn skip_event(&mut self, event: RawEvent) -> Result<Option<StreamEvent>, StreamError> {
        let skip = self.skip.as_mut().expect("called while skipping");
        skip.between_tags = false;
        match event {
            RawEvent::ElementHeadOpen(_, (_, name)) => {
                if skip.depth == 0 && skip.name.is_empty() {
                    // The limit was crossed before the child's name was read.
                    skip.name = name.to_string();
                }
            }
            RawEvent::ElementHeadClose(_) => {
                skip.depth += 1;
                skip.between_tags = true;
            }
            RawEvent::ElementFoot(_) if skip.depth == 0 => {
                // Not inside the child: the limit was crossed by text between stanzas, and
                // this is `</stream:stream>`.
                self.raw.set_text_buffering(true);
                self.skip = None;
                return self.process(event);
            }
            RawEvent::ElementFoot(_) => {
                skip.depth -= 1;
                skip.between_tags = true;
                if skip.depth == 0 {
                    self.raw.set_text_buffering(true);
                    return Ok(Some(self.end_skip()));
                }
            }
            RawEvent::Text(_, text) if skip.depth == 0 => between_stanzas(&text)?,
            RawEvent::Text(..) | RawEvent::Attribute(..) | RawEvent::XmlDeclaration(..) => {}
        }
        Ok(None)
    }

    /// While a child is skipped and rxml has just read the `>` of one of its tags, the rest
    /// of the child is followed by [`Lex`] instead, which keeps a depth counter and
    /// nothing else: rxml would keep the name of every open element to match its end tag
    /// (unbounded memory for a deep child) and refuse a name or value over its token limit.
    /// rxml is replaced by a parser made afresh inside the stream header, ready for the
    /// next child.
    fn leave_rxml_when_between_tags(
        &mut self,
        events: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        if !self.skip.as_ref().is_some_and(|skip| skip.between_tags) {
            return Ok(());
        }
        // A `/>` queues the element's end after its start: take what rxml holds.
        loop {
            match self.raw.parse(&mut &b""[..], false) {
                Ok(Some(event)) => {
                    events.extend(self.skip_event(event)?);
                    if self.skip.is_none() {
                        return Ok(());
                    }
                }
                Ok(None) => return Err(StreamError::Xml("unexpected end of document".into())),
                Err(EndOrError::NeedMoreData) => break,
                Err(EndOrError::Error(error)) => return Err(StreamError::Xml(error.to_string())),
            }
        }
        let skip = self.skip.as_mut().expect("still skipping");
        if skip.depth == 0 || !skip.between_tags {
            return Ok(());
        }
        skip.lex = Some(Lex::Content);
        self.raw = self.parser_inside_root()?;
        Ok(())
    }

    /// A raw parser that has read the stream header's start tag (its name only: rxml does
    /// not resolve namespaces) and stands where the next top-level child begins.
    fn parser_inside_root(&self) -> Result<RawParser, StreamError> {
        let mut raw = raw_parser(self.max_token_length);
        let start = format!("<{}>", self.root_name);
        let mut rest = start.as_bytes();
        let mut events = 0;
        loop {
            match raw.parse(&mut rest, false) {
                Ok(Some(_)) => events += 1,
                Err(EndOrError::NeedMoreData) if rest.is_empty() => break,
                _ => break events = 0,
            }
        }
        match events {
            // ElementHeadOpen and ElementHeadClose.
            2 => Ok(raw),
            _ => Err(StreamError::Xml(
                "cannot resume after a skipped stanza".into(),
            )),
        }
    }

    /// Follows the bytes of a skipped child once rxml is left behind, up to the `>` of the
    /// child's end tag. Returns how many bytes of `data` it used and whether the child
    /// ended there.
    fn skip_bytes(&mut self, data: &[u8]) -> Result<(usize, bool), StreamError> {
        let skip = self.skip.as_mut().expect("called while skipping");
        let mut lex = skip.lex.expect("called once rxml is left behind");
        let malformed = |what: &str| StreamError::Xml(format!("{what} in a skipped stanza"));
        let mut at = 0;
        while at < data.len() {
            if lex == Lex::Content {
                // Text, however long: straight to the next tag.
                match data[at..].iter().position(|&b| b == b'<') {
                    Some(offset) => at += offset,
                    None => break,
                }
            }
            let byte = data[at];
            at += 1;
            lex = match (lex, byte) {
                (Lex::Content, _) => Lex::Open,
                (Lex::Open, b'/') => Lex::EndTag,
                (Lex::Open, b'!') => Lex::Bang(0),
                (Lex::Open, b'?') => return Err(malformed("a processing instruction")),
                (Lex::Open, b'<' | b'>' | b'=' | b'\'' | b'"' | b' ' | b'\t' | b'\r' | b'\n') => {
                    return Err(malformed("a broken tag"))
                }
                (Lex::StartTag, b'\'' | b'"') => Lex::Quoted(byte),
                (Lex::StartTag, b'/') => Lex::EmptyTag,
                (Lex::StartTag, b'>') => {
                    skip.depth = skip.depth.saturating_add(1);
                    Lex::Content
                }
                (Lex::StartTag | Lex::EndTag, b'<') => return Err(malformed("a broken tag")),
                (Lex::Open | Lex::StartTag, _) => Lex::StartTag,
                (Lex::Quoted(quote), _) if byte == quote => Lex::StartTag,
                (Lex::Quoted(_), b'<') => return Err(malformed("'<' in an attribute value")),
                (Lex::Quoted(quote), _) => Lex::Quoted(quote),
                (Lex::EmptyTag, b'>') if skip.depth == 0 => {
                    // The child's own start tag, entered after a refused declaration.
                    return Ok((at, true));
                }
                (Lex::EmptyTag, b'>') => Lex::Content,
                (Lex::EmptyTag, _) => return Err(malformed("a broken tag")),
                (Lex::EndTag, b'>') => {
                    skip.depth = skip.depth.saturating_sub(1);
                    if skip.depth == 0 {
                        skip.lex = Some(Lex::Content);
                        return Ok((at, true));
                    }
                    Lex::Content
                }
                (Lex::EndTag, _) => Lex::EndTag,
                (Lex::Bang(matched), _) => {
                    let cdata = b"[CDATA[";
                    if cdata.get(usize::from(matched)) != Some(&byte) {
                        return Err(malformed("a comment or declaration"));
                    }
                    match usize::from(matched) + 1 == cdata.len() {
                        true => Lex::CData(0),
                        false => Lex::Bang(matched + 1),
                    }
                }
                (Lex::CData(2), b'>') => Lex::Content,
                (Lex::CData(brackets), b']') => Lex::CData((brackets + 1).min(2)),
                (Lex::CData(_), _) => Lex::CData(0),
            };
        }
        skip.lex = Some(lex);
        Ok((data.len(), false))
    }

    /// The skipped child is complete: its report, and the next unit starts.
    fn end_skip(&mut self) -> StreamEvent {
        let skip = self.skip.take().expect("called while skipping");
        self.next_unit();
        StreamEvent::Oversized {
            name: skip.name,
            id: skip.id,
            from: skip.from,
            to: skip.to,
            kind: skip.kind,
            why: skip.why,
        }
    }

    /// The stream header's start tag is complete: check it and report it.
    fn opened(&mut self) -> Result<StreamEvent, StreamError> {
        let root = self.tree.top().expect("the header was just pushed");
        // RFC 6120 §4.8.1: the root element must be <stream/> qualified by the stream
        // namespace.
        if root.name() != "stream" || root.ns() != ns::STREAM {
            return Err(StreamError::Xml(format!(
                "the stream header is <{}/> in '{}', not <stream:stream/>",
                root.name(),
                root.ns()
            )));
        }
        let event = StreamEvent::Open {
            id: root.attr("id").map(str::to_owned),
            from: root.attr("from").map(str::to_owned),
        };
        self.next_unit();
        self.after_header = true;
        Ok(event)
    }

    /// The header or a top-level child is complete; the next unit starts from zero.
    fn next_unit(&mut self) {
        self.unit_bytes = 0;
        self.at_boundary = true;
        self.after_header = false;
    }

    fn too_large(&self) -> StreamError {
        StreamError::StanzaTooLarge {
            limit: self.max_stanza_bytes,
        }
    }

    /// What is held of the stream between calls beyond the tree's empty root: nodes under
    /// the root, elements open in the tree, events of a start tag being read (the memory
    /// tests' probe).
    #[cfg(test)]
    fn buffered_nodes(&mut self) -> usize {
        let head = self.head.len();
        if self.tree.depth() < 2 {
            let nodes = self.tree.top().map_or(0, |root| root.nodes().count());
            return nodes + head;
        }
        self.tree.depth() - 1 + head
    }
}

/// What is wrong, when rxml refused a namespace declaration itself: a reserved prefix or
/// namespace bound wrongly, or a prefix bound to nothing. Servers built on expat refuse
/// these from remote servers too, but a server that does not resolve namespaces may relay
/// them.
fn reserved_declaration(error: &minidom::rxml::Error) -> Option<&'static str> {
    use minidom::rxml::Error;
    match error {
        Error::ReservedNamespacePrefix
        | Error::ReservedNamespaceName
        | Error::EmptyNamespaceUri => Some("a reserved or empty namespace declaration"),
        _ => None,
    }
}

/// rxml's raw parser as the stream needs it. RFC 6120 §11.1 rules out "comments,
/// processing instructions, internal or external DTD subsets, internal or external entity
/// references (with the exception of the predefined entities)": rxml refuses all of them
/// as long as comments are not switched on.
fn raw_parser(max_token_length: usize) -> RawParser {
    let options = Options {
        max_token_length,
        comments: CommentMode::Reject,
        ..Options::default()
    };
    <RawParser as WithOptions>::with_options(options)
}

/// Text directly inside `<stream:stream>`: only keepalive whitespace that reached rxml in
/// another form (a character reference, CDATA) is allowed.
fn between_stanzas(text: &str) -> Result<(), StreamError> {
    match text.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n')) {
        true => Ok(()),
        false => Err(StreamError::Xml("text between stanzas".to_owned())),
    }
}

/// Drops the namespace prefixes the peer declared, keeping every resolved namespace.
///
/// minidom's writer re-declares recorded prefixes verbatim and panics on several legal
/// ones: `xmlns:xml` ("assertion failed: declare_fixed"), a prefix declared on the
/// top-level element and declared again below it ("prefix declaration conflicts with
/// global prefix"), a declared prefix named like its own `tns0`. Without them it declares
/// what it needs itself, so any stanza we hand on can be rendered (logged, echoed back).
fn forget_prefixes(stanza: &mut Element) {
    let mut pending = vec![stanza];
    while let Some(element) = pending.pop() {
        element.prefixes = Default::default();
        pending.extend(element.children_mut());
    }
}

impl fmt::Debug for StreamParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamParser")
            .field("closed", &self.closed)
            .field("unit_bytes", &self.unit_bytes)
            .field("max_stanza_bytes", &self.max_stanza_bytes)
            .field("skipping", &self.skip.as_ref().map(|skip| skip.why))
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::publish::Publish;

    /// Prosody's stream header, as it answers a component.
    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xml:lang='en' xmlns='jabber:component:accept' id='a1b2c3' from='push.localhost'>";

    /// PROTOCOL.md §4: the registration Conversations sends.
    const REGISTER: &str = include_str!("../../tests/fixtures/stanzas/conversations-register.xml");

    /// PROTOCOL.md §5: the publish of Prosody 0.12 mod_cloud_notify.
    const PROSODY_PUBLISH: &str = include_str!("../../tests/fixtures/stanzas/prosody-publish.xml");

    /// PROTOCOL.md §5: the publish of ejabberd 23.01 mod_push (the id ends in "…").
    const EJABBERD_PUBLISH: &str =
        include_str!("../../tests/fixtures/stanzas/ejabberd-publish.xml");

    /// Non-ASCII text, so that chunks cut inside two-, three- and four-byte characters.
    const MESSAGE: &str =
        "<message from='a@localhost' to='push.localhost'><body>héllo 🎉 &amp; ✓</body></message>";

    /// A failed handshake (PROTOCOL.md §2), just before the server closes the stream.
    const STREAM_ERROR: &str = "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>";

    /// A whole session as a server sends it, keepalives included.
    fn session() -> String {
        SESSION.concat()
    }

    /// The pieces of [`session`]: each one that is not whitespace completes one event
    /// (before the line feed a fixture ends with).
    const SESSION: [&str; 13] = [
        HEADER,
        "<handshake/>",
        "\n ",
        REGISTER,
        " ",
        PROSODY_PUBLISH,
        "\n\n",
        EJABBERD_PUBLISH,
        " ",
        MESSAGE,
        "\t\r\n",
        STREAM_ERROR,
        "</stream:stream>",
    ];

    fn render(element: &Element) -> String {
        let mut out = Vec::new();
        element.write_to(&mut out).expect("an element renders");
        String::from_utf8(out).expect("minidom writes UTF-8")
    }

    /// One line per event, so that runs compare as plain strings.
    fn describe(event: &StreamEvent) -> String {
        match event {
            StreamEvent::Open { id, from } => format!("open id={id:?} from={from:?}"),
            StreamEvent::Stanza(element) => render(element),
            StreamEvent::Oversized {
                name,
                id,
                from,
                to,
                kind,
                why,
            } => format!(
                "oversized <{name}/> id={id:?} from={from:?} to={to:?} type={kind:?} ({why})"
            ),
            StreamEvent::Publish(publish) => format!("{publish:?}"),
            StreamEvent::Close => "close".to_owned(),
        }
    }

    /// Feeds `input` in chunks of `size` bytes; returns the events and the first error.
    fn run(
        parser: &mut StreamParser,
        input: &[u8],
        size: usize,
    ) -> (Vec<StreamEvent>, Option<StreamError>) {
        let mut events = Vec::new();
        for chunk in input.chunks(size) {
            match parser.feed(chunk) {
                Ok(more) => events.extend(more),
                Err(error) => return (events, Some(error)),
            }
        }
        (events, None)
    }

    fn parse_all(input: &str) -> Result<Vec<StreamEvent>, StreamError> {
        let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
        match run(&mut parser, input.as_bytes(), input.len().max(1)) {
            (events, None) => Ok(events),
            (_, Some(error)) => Err(error),
        }
    }

    fn stanza(event: &StreamEvent) -> &Element {
        match event {
            StreamEvent::Stanza(element) => element,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    fn xml_error(input: &str) -> String {
        match parse_all(input) {
            Err(StreamError::Xml(reason)) => reason,
            other => panic!("expected an xml error for {input:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_real_session_parses_into_typed_events() {
        let events = parse_all(&session()).unwrap();
        assert_eq!(events.len(), 8, "{events:#?}");
        assert_eq!(
            events[0],
            StreamEvent::Open {
                id: Some("a1b2c3".to_owned()),
                from: Some("push.localhost".to_owned()),
            }
        );

        let handshake = stanza(&events[1]);
        assert!(handshake.is("handshake", ns::COMPONENT));
        assert_eq!(handshake.nodes().count(), 0);

        let register = stanza(&events[2]);
        assert_eq!(register.name(), "iq");
        assert_eq!(register.ns(), "jabber:component:accept");
        assert_eq!(register.attr("id"), Some("x1"));
        assert_eq!(register.attr("from"), Some("user@example.com/res"));
        let command = register.get_child("command", ns::COMMANDS).unwrap();
        assert_eq!(command.attr("node"), Some("register-push-fcm"));
        let form = command.get_child("x", ns::DATA_FORMS).unwrap();
        let token = form.children().next().unwrap();
        assert!(
            token.is("field", ns::DATA_FORMS),
            "children keep the form's namespace"
        );
        assert_eq!(
            token.get_child("value", ns::DATA_FORMS).unwrap().text(),
            "FCM-TOKEN"
        );

        let prosody = stanza(&events[3]);
        assert!(prosody.is("iq", ns::COMPONENT));
        assert_eq!(prosody.attr("id"), Some("f02a7cb7"));
        let pubsub = prosody.get_child("pubsub", ns::PUBSUB).unwrap();
        let notification = pubsub
            .get_child("publish", ns::PUBSUB)
            .and_then(|publish| publish.get_child("item", ns::PUBSUB))
            .and_then(|item| item.get_child("notification", ns::PUSH))
            .unwrap();
        assert!(notification.get_child("x", ns::DATA_FORMS).is_some());

        let ejabberd = stanza(&events[4]);
        assert!(ejabberd.is("iq", ns::COMPONENT));
        assert_eq!(ejabberd.attr("id"), Some("rr-1795600646201-93041074…"));
        let options = ejabberd
            .get_child("pubsub", ns::PUBSUB)
            .and_then(|pubsub| pubsub.get_child("publish-options", ns::PUBSUB))
            .and_then(|options| options.get_child("x", ns::DATA_FORMS))
            .unwrap();
        let secret = options.children().nth(1).unwrap();
        assert_eq!(secret.attr("var"), Some("secret"));
        assert_eq!(
            secret.get_child("value", ns::DATA_FORMS).unwrap().text(),
            "krZM6bbFugBicqBPV2fq5ZAc"
        );

        let message = stanza(&events[5]);
        assert!(message.is("message", ns::COMPONENT));
        assert_eq!(
            message.get_child("body", ns::COMPONENT).unwrap().text(),
            "héllo 🎉 & ✓"
        );

        let error = stanza(&events[6]);
        assert_eq!(error.name(), "error");
        assert_eq!(error.ns(), "http://etherx.jabber.org/streams");
        assert!(error.has_child("not-authorized", ns::STREAM_ERRORS));

        assert_eq!(events[7], StreamEvent::Close);
    }

    #[test]
    fn every_chunk_size_gives_the_same_events() {
        let input = session();
        let whole: Vec<String> = parse_all(&input).unwrap().iter().map(describe).collect();
        assert_eq!(whole.len(), 8);
        for size in 1..=input.len() {
            let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
            let (events, error) = run(&mut parser, input.as_bytes(), size);
            assert_eq!(error, None, "chunk size {size}");
            let events: Vec<String> = events.iter().map(describe).collect();
            assert_eq!(events, whole, "chunk size {size}");
        }
    }

    #[test]
    fn each_event_comes_as_soon_as_its_last_byte_does() {
        // Offsets just past the last byte of each event's piece.
        let mut ends = Vec::new();
        let mut offset = 0;
        for piece in SESSION {
            // A fixture's final line feed is whitespace after its stanza.
            if !piece.trim().is_empty() {
                ends.push(offset + piece.trim_end().len());
            }
            offset += piece.len();
        }
        let input = session();
        let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
        let mut seen = Vec::new();
        for (i, byte) in input.as_bytes().iter().enumerate() {
            for _ in parser.feed(&[*byte]).unwrap() {
                seen.push(i + 1);
            }
        }
        assert_eq!(seen, ends);
    }

    #[test]
    fn a_bare_header_and_stanzas_in_other_namespaces() {
        // No XML declaration, double quotes, and a stanza redeclaring the stream prefix.
        let input = "<stream:stream xmlns=\"jabber:component:accept\" xmlns:stream=\"http://etherx.jabber.org/streams\" id=\"x\">\
                     <s:features xmlns:s='http://etherx.jabber.org/streams'/><iq xmlns='other'/>";
        let events = parse_all(input).unwrap();
        assert_eq!(
            events[0],
            StreamEvent::Open {
                id: Some("x".to_owned()),
                from: None
            }
        );
        assert!(stanza(&events[1]).is("features", ns::STREAM));
        assert!(stanza(&events[2]).is("iq", "other"));
    }

    #[test]
    fn a_rendered_stanza_declares_its_inherited_namespace() {
        let events = parse_all(&[HEADER, "<handshake/>", MESSAGE].concat()).unwrap();
        assert_eq!(
            describe(&events[1]),
            "<handshake xmlns='jabber:component:accept'/>"
        );
        let rendered = describe(&events[2]);
        assert!(
            rendered.starts_with("<message xmlns='jabber:component:accept' "),
            "{rendered}"
        );
        let again: Element = rendered.parse().unwrap();
        assert_eq!(&again, stanza(&events[2]));
    }

    #[test]
    fn stanzas_render_even_when_their_prefixes_would_crash_minidom() {
        // Each of these, parsed by minidom itself, panics in `write_to`.
        for (input, rendered) in [
            (
                "<iq xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>",
                "<iq xmlns='jabber:component:accept' xml:lang='en'/>",
            ),
            (
                "<iq xmlns:p='urn:a'><p:x xmlns:p='urn:b'/></iq>",
                "<iq xmlns='jabber:component:accept'><x xmlns='urn:b'/></iq>",
            ),
            (
                "<iq xmlns:p='urn:a'><x xmlns:p='urn:a' p:a='1'/></iq>",
                "<iq xmlns='jabber:component:accept'><x xmlns:tns0='urn:a' tns0:a='1'/></iq>",
            ),
            (
                "<iq xmlns:tns0='urn:q'><m xmlns:d='urn:d'><y xmlns='urn:b' d:a='1'/></m></iq>",
                "<iq xmlns='jabber:component:accept'><m><y xmlns='urn:b' xmlns:tns0='urn:d' tns0:a='1'/></m></iq>",
            ),
        ] {
            let events = parse_all(&[HEADER, input].concat()).unwrap();
            assert_eq!(describe(&events[1]), rendered, "{input}");
            let again: Element = rendered.parse().unwrap();
            assert_eq!(&again, stanza(&events[1]));
        }
    }

    #[test]
    fn malformed_xml_is_an_xml_error() {
        for input in [
            "<iq></message>",
            "<iq a=1/>",
            "<iq>&unknown;</iq>",
            "<iq><!-- comment --></iq>",
            "<iq><?pi data?></iq>",
            "<iq>\u{1}</iq>",
            "<iq>ok</iq>text<iq/>",
        ] {
            xml_error(&[HEADER, input].concat());
        }
        // Invalid UTF-8.
        let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
        parser.feed(HEADER.as_bytes()).unwrap();
        assert!(matches!(
            parser.feed(b"<iq>\xff\xfe</iq>"),
            Err(StreamError::Xml(_))
        ));
    }

    /// The report of the child `<iq type='get' id='ns' from='remote.example'
    /// to='push.localhost'>` skipped for `why`.
    fn remote_iq(why: SkipReason) -> StreamEvent {
        let report = oversized("iq", "ns", "remote.example", "push.localhost", "get");
        because(why, report)
    }

    #[test]
    fn an_undeclared_prefix_or_a_duplicate_attribute_costs_only_its_stanza() {
        // ejabberd relays an element or attribute whose prefix the sending server declared
        // on its own stream header as it came, without the declaration: the stanza cannot
        // be built, but the stream is still well-formed XML and goes on.
        let addressed = "type='get' id='ns' from='remote.example' to='push.localhost'";
        let after = "<iq type='get' id='after' from='localhost' to='push.localhost'/>";
        let undeclared = SkipReason::Namespace("an undeclared namespace prefix");
        let duplicate = SkipReason::Namespace("a duplicate attribute");
        for (child, why) in [
            (format!("<iq {addressed}><db:x/></iq>"), undeclared),
            (
                format!("<iq {addressed}><x db:a='1'>t</x></iq>"),
                undeclared,
            ),
            (format!("<db:iq {addressed}/>"), undeclared),
            (format!("<iq {addressed} db:a='1'><x/></iq>"), undeclared),
            (
                format!("<iq {addressed}><x><y><xml:z/></y></x></iq>"),
                undeclared,
            ),
            // A prefix declared on a sibling is out of scope.
            (
                format!("<iq {addressed}><p:x xmlns:p='urn:p'/><p:y/></iq>"),
                undeclared,
            ),
            (format!("<iq {addressed}><x n='1' n='2'/></iq>"), duplicate),
            // Two prefixes bound to one namespace name the same attribute.
            (
                format!(
                    "<iq {addressed}><x xmlns:a='urn:x' xmlns:b='urn:x' a:n='1' b:n='2'/></iq>"
                ),
                duplicate,
            ),
            (
                format!("<iq {addressed}><x xmlns:a='urn:x' xmlns:a='urn:y'/></iq>"),
                duplicate,
            ),
            (
                format!("<iq {addressed} xmlns='urn:a' xmlns='urn:b'/>"),
                duplicate,
            ),
        ] {
            let input = [HEADER, &child, after].concat();
            let sizes: Vec<usize> = (1..=input.len()).collect();
            let (events, error) =
                check_consistent(input.as_bytes(), &sizes, DEFAULT_MAX_STANZA_BYTES);
            assert_eq!(error, None, "{child}");
            let report = match child.starts_with("<db:") {
                true => because(why, remote_iq(why)).clone(),
                false => remote_iq(why),
            };
            assert_eq!(events.len(), 3, "{child}");
            assert_eq!(events[1], report, "{child}");
            assert_eq!(stanza(&events[2]).attr("id"), Some("after"), "{child}");
        }
        // Declarations rxml refuses itself: only that stanza is lost; when the child's own
        // start tag holds one, only its name is known.
        let reserved = SkipReason::Namespace("a reserved or empty namespace declaration");
        for (child, report) in [
            (format!("<iq {addressed}><x xmlns:p=''/></iq>"), remote_iq(reserved)),
            (
                format!("<iq {addressed}><x xmlns:xml='urn:x'>t</x><y/></iq>"),
                remote_iq(reserved),
            ),
            (format!("<iq {addressed}><x xmlns:xmlns='urn:x'/></iq>"), remote_iq(reserved)),
            (
                format!("<iq {addressed}><x><y xmlns='http://www.w3.org/XML/1998/namespace'/></x></iq>"),
                remote_iq(reserved),
            ),
            (
                format!("<iq {addressed}><x xmlns:p='http://www.w3.org/XML/1998/namespace' a='>'/></iq>"),
                remote_iq(reserved),
            ),
            (format!("<iq {addressed} xmlns:p='' a='1'/>"), because(reserved, cut("iq"))),
            (format!("<iq {addressed} xmlns:p=''><a/></iq>"), because(reserved, cut("iq"))),
        ] {
            let input = [HEADER, &child, after].concat();
            let sizes: Vec<usize> = (1..=input.len()).collect();
            let (events, error) =
                check_consistent(input.as_bytes(), &sizes, DEFAULT_MAX_STANZA_BYTES);
            assert_eq!(error, None, "{child}");
            assert_eq!(events.len(), 3, "{child}");
            assert_eq!(events[1], report, "{child}");
            assert_eq!(stanza(&events[2]).attr("id"), Some("after"), "{child}");
        }
        // Declared, the same prefixes are fine: on the element, on an ancestor, on the
        // header; `xml` needs no declaration on an attribute.
        for child in [
            "<iq><x xmlns:db='jabber:server:dialback'><db:y db:a='1'/></x></iq>",
            "<iq><stream:features/></iq>",
            "<iq xml:lang='en'><x xml:lang='de'/></iq>",
            "<iq><x xmlns:a='urn:x' xmlns:b='urn:y' a:n='1' b:n='2'/></iq>",
        ] {
            let events = parse_all(&[HEADER, child].concat()).unwrap();
            assert!(stanza(&events[1]).is("iq", ns::COMPONENT), "{child}");
        }
        // In the stream header it ends the stream: there is no stream to go on with.
        let header = "<stream:stream xmlns='jabber:component:accept' \
                      xmlns:stream='http://etherx.jabber.org/streams' db:a='1'>";
        assert_eq!(
            xml_error(header),
            "stream header: an undeclared namespace prefix"
        );
    }

    #[test]
    fn dtds_entities_comments_and_processing_instructions_are_refused() {
        // RFC 6120 §11.1 forbids all of these on an XMPP stream.
        xml_error(
            &[
                "<?xml version='1.0'?><!DOCTYPE stream:stream>",
                &HEADER[21..],
            ]
            .concat(),
        );
        xml_error(&["<!DOCTYPE lol [<!ENTITY lol 'lol'>]>", &HEADER[21..]].concat());
        xml_error(&[HEADER, "<!DOCTYPE x>"].concat());
        xml_error(&[HEADER, "<iq>&lol;</iq>"].concat());
        xml_error(&["<!-- hi -->", HEADER].concat());
        xml_error(&[HEADER, "<!-- keepalive -->"].concat());
        xml_error(&[HEADER, "<?php echo 1; ?>"].concat());
    }

    #[test]
    fn predefined_and_numeric_references_and_cdata_are_text() {
        let events =
            parse_all(&[HEADER, "<m><b>&lt;&#233;&#x1F389;<![CDATA[<x>]]></b></m>"].concat())
                .unwrap();
        assert_eq!(
            stanza(&events[1])
                .get_child("b", ns::COMPONENT)
                .unwrap()
                .text(),
            "<é🎉<x>"
        );
    }

    #[test]
    fn the_root_must_be_stream_stream() {
        let reason = xml_error("<stream xmlns='jabber:component:accept'>");
        assert_eq!(
            reason,
            "the stream header is <stream/> in 'jabber:component:accept', not <stream:stream/>"
        );
        xml_error("<s:stream xmlns:s='urn:other'>");
        xml_error("<stream:stream>");
    }

    #[test]
    fn text_between_stanzas_is_refused_but_whitespace_is_a_keepalive() {
        // rxml holds text back until the next tag (or its token limit), so the error
        // comes with the `<` that follows.
        assert_eq!(parse_all(&[HEADER, " hello "].concat()).unwrap().len(), 1);
        assert_eq!(
            xml_error(&[HEADER, " hello <a/>"].concat()),
            "text between stanzas"
        );
        assert_eq!(
            xml_error(&[HEADER, "<a/>x<b/>"].concat()),
            "text between stanzas"
        );
        // Whitespace written as a reference or CDATA is still whitespace.
        let events = parse_all(&[HEADER, "&#32;<a/><![CDATA[ \n]]><b/>"].concat()).unwrap();
        assert_eq!(events.len(), 3);
    }

    #[test]
    fn keepalives_do_not_count_towards_the_limit() {
        // A megabyte of whitespace between stanzas, against a 100-byte limit.
        let mut parser = StreamParser::new(200);
        parser.feed(HEADER.as_bytes()).unwrap();
        let spaces = vec![b' '; 1 << 20];
        for _ in 0..2 {
            assert_eq!(parser.feed(&spaces).unwrap(), vec![]);
            assert_eq!(parser.feed(b"\n\t\r").unwrap(), vec![]);
            assert_eq!(parser.feed(b"<handshake/>").unwrap().len(), 1);
        }
        assert_eq!(parser.buffered_nodes(), 0);
    }

    /// The shortest header a server could send.
    const SHORT_HEADER: &str = "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'>";

    /// The report of a child skipped for the default size limit, whose start tag fitted
    /// within it.
    fn oversized(name: &str, id: &str, from: &str, to: &str, kind: &str) -> StreamEvent {
        StreamEvent::Oversized {
            name: name.to_owned(),
            id: Some(id.to_owned()),
            from: Some(from.to_owned()),
            to: Some(to.to_owned()),
            kind: Some(kind.to_owned()),
            why: SkipReason::Size(DEFAULT_MAX_STANZA_BYTES),
        }
    }

    /// The report of a child cut by the default size limit inside its start tag.
    fn cut(name: &str) -> StreamEvent {
        StreamEvent::Oversized {
            name: name.to_owned(),
            id: None,
            from: None,
            to: None,
            kind: None,
            why: SkipReason::Size(DEFAULT_MAX_STANZA_BYTES),
        }
    }

    /// `report` skipped for another reason.
    fn because(why: SkipReason, report: StreamEvent) -> StreamEvent {
        match report {
            StreamEvent::Oversized {
                name,
                id,
                from,
                to,
                kind,
                ..
            } => StreamEvent::Oversized {
                name,
                id,
                from,
                to,
                kind,
                why,
            },
            other => panic!("not a report: {other:?}"),
        }
    }

    #[test]
    fn the_limit_counts_the_raw_bytes_of_one_child_exactly() {
        let ping = "<iq type='get' from='localhost' to='push.localhost' id='ping-1'>\
                    <ping xmlns='urn:xmpp:ping'/></iq>";
        assert!(SHORT_HEADER.len() < ping.len());
        let open = StreamEvent::Open {
            id: None,
            from: None,
        };
        let ping_event = parse_all(&[SHORT_HEADER, ping].concat()).unwrap()[1].clone();
        let skipped = |id, limit| {
            let report = oversized("iq", id, "localhost", "push.localhost", "get");
            because(SkipReason::Size(limit), report)
        };
        let input = [SHORT_HEADER, ping, " \n", ping].concat();
        for size in 1..=input.len() {
            // Exactly at the limit: fine, twice over, keepalive between.
            let mut parser = StreamParser::new(ping.len());
            let (events, error) = run(&mut parser, input.as_bytes(), size);
            assert_eq!(error, None, "chunk size {size}");
            let expected = [open.clone(), ping_event.clone(), ping_event.clone()];
            assert_eq!(events, expected, "chunk size {size}");

            // One byte less: each is skipped and reported, and the stream goes on. The byte
            // that crosses the limit is the last `>`, so the start tag was whole.
            let mut parser = StreamParser::new(ping.len() - 1);
            let (events, error) = run(&mut parser, input.as_bytes(), size);
            assert_eq!(error, None, "chunk size {size}");
            let report = skipped("ping-1", ping.len() - 1);
            let expected = [open.clone(), report.clone(), report];
            assert_eq!(events, expected, "chunk size {size}");
        }

        // One byte over, then exactly at the limit, twice: the count starts afresh after a
        // skip, wherever the chunks are cut.
        let over = ping.replace("ping-1", "ping-10");
        assert_eq!(over.len(), ping.len() + 1);
        let input = [SHORT_HEADER, &over, ping, "\n", &over, " ", ping].concat();
        for size in 1..=input.len() {
            let mut parser = StreamParser::new(ping.len());
            let (events, error) = run(&mut parser, input.as_bytes(), size);
            assert_eq!(error, None, "chunk size {size}");
            let expected = [
                open.clone(),
                skipped("ping-10", ping.len()),
                ping_event.clone(),
                skipped("ping-10", ping.len()),
                ping_event.clone(),
            ];
            assert_eq!(events, expected, "chunk size {size}");
        }
    }

    #[test]
    fn the_header_counts_as_one_unit_too() {
        // A header over the limit is not skipped: there is no stream to go on with.
        for size in 1..=SHORT_HEADER.len() {
            let mut parser = StreamParser::new(SHORT_HEADER.len() - 1);
            let (events, error) = run(&mut parser, SHORT_HEADER.as_bytes(), size);
            assert_eq!(events, vec![], "chunk size {size}");
            let limit = SHORT_HEADER.len() - 1;
            assert_eq!(error, Some(StreamError::StanzaTooLarge { limit }));
        }
        let mut parser = StreamParser::new(SHORT_HEADER.len());
        assert_eq!(parser.feed(SHORT_HEADER.as_bytes()).unwrap().len(), 1);
    }

    /// Feeds `head` and then `total` bytes of `filler` in 1 KiB chunks, checking that
    /// nothing comes out and, once the limit is behind, that nothing is kept. Returns the
    /// parser, or how many filler bytes were fed when it failed, and why.
    fn endless(head: &str, filler: u8, total: usize) -> Result<StreamParser, (usize, StreamError)> {
        let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
        parser.feed(HEADER.as_bytes()).unwrap();
        assert_eq!(parser.feed(head.as_bytes()), Ok(vec![]), "{head}");
        let chunk = [filler; 1024];
        for fed in (chunk.len()..=total).step_by(chunk.len()) {
            match parser.feed(&chunk) {
                Ok(events) => assert_eq!(events, vec![], "{head}"),
                Err(error) => return Err((fed, error)),
            }
            if fed > DEFAULT_MAX_STANZA_BYTES {
                assert_eq!(parser.buffered_nodes(), 0, "{head}");
                assert!(parser.skip.is_some(), "{head}");
            }
        }
        Ok(parser)
    }

    #[test]
    fn a_huge_text_or_start_tag_is_skipped_and_the_stream_goes_on() {
        let after = "<iq type='get' id='after'/>";
        let after_event = parse_all(&[HEADER, after].concat()).unwrap()[1].clone();
        for (head, filler, tail, report) in [
            // A text node that never ends (4 MiB of it).
            (
                "<iq type='set' id='t1' from='a@localhost' to='push.localhost'><body>",
                b'x',
                "</body></iq>",
                oversized("iq", "t1", "a@localhost", "push.localhost", "set"),
            ),
            // Whitespace inside a stanza is content.
            (
                "<message type='chat' id='t2' from='b' to='c'><body>",
                b' ',
                "</body></message>",
                oversized("message", "t2", "b", "c", "chat"),
            ),
            // A CDATA section.
            (
                "<iq type='set' id='t3' from='a' to='b'><![CDATA[",
                b'x',
                "]]></iq>",
                oversized("iq", "t3", "a", "b", "set"),
            ),
            // Text in the stanza itself.
            (
                "<iq type='set' id='t4' from='a' to='b'>",
                b'x',
                "</iq>",
                oversized("iq", "t4", "a", "b", "set"),
            ),
            // A start tag that never ends: what comes after the limit is not reported.
            ("<iq ", b' ', "id='late' type='set'/>", cut("iq")),
            ("<iq id='early'", b'\n', "></iq>", cut("iq")),
        ] {
            let mut parser = endless(head, filler, 4 << 20).unwrap();
            let events = parser.feed([tail, " ", after].concat().as_bytes());
            assert_eq!(events, Ok(vec![report, after_event.clone()]), "{head}");
            assert_eq!(parser.buffered_nodes(), 0, "{head}");
            assert_eq!(parser.tree.depth(), 1, "{head}");
        }

        // Endless attributes, each one short.
        let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
        parser.feed(HEADER.as_bytes()).unwrap();
        parser.feed(b"<iq").unwrap();
        for i in 0..200_000 {
            assert_eq!(parser.feed(format!(" a{i}='{i}'").as_bytes()), Ok(vec![]));
        }
        assert_eq!(parser.buffered_nodes(), 0);
        // The thousands of attributes read before the limit left no room reserved.
        assert!(parser.head.capacity() <= HEAD_EVENTS);
        let events = parser.feed(["/>", after].concat().as_bytes());
        assert_eq!(events, Ok(vec![cut("iq"), after_event]));
    }

    #[test]
    fn a_name_or_attribute_value_over_a_mebibyte_read_at_the_limit_is_an_xml_error() {
        let too_long = StreamError::Xml("restricted xml: long name or reference".to_owned());
        for (head, filler) in [
            ("<iq id='", b'x'),            // an attribute value that never ends
            ("<i", b'q'),                  // an element name that never ends
            ("<iq><body><b", b'b'),        // an inner element name
            ("<iq><body x='1' a", b'a'),   // an attribute name
            ("<iq><body x='1' a='", b'y'), // an inner attribute value
        ] {
            let (fed, error) = endless(head, filler, 2 << 20).expect_err(head);
            assert_eq!(error, too_long, "{head}");
            // Stopped by the chunk that took the token over 1 MiB.
            assert!(
                (MAX_TOKEN_LENGTH..=MAX_TOKEN_LENGTH + 1024).contains(&fed),
                "{head}: {fed}"
            );
        }
        // Up to the token limit, a value is skipped.
        let head = "<iq type='set' id='long' from='a' to='b'><x v='";
        let mut parser = endless(head, b'v', MAX_TOKEN_LENGTH).unwrap();
        let events = parser.feed(b"'/></iq>").unwrap();
        assert_eq!(events, [oversized("iq", "long", "a", "b", "set")]);
        // Once the tag read at the limit is complete, the rest is followed without rxml:
        // names and values of any length are skipped.
        let start = format!(
            "<iq type='set' id='long' from='a' to='b'>{}",
            "<x/>".repeat(128)
        );
        for (head, filler, tail) in [("<y v='", b'v', "'/></iq>"), ("<y", b'y', "/></iq>")] {
            let mut parser = StreamParser::new(400);
            parser.feed(HEADER.as_bytes()).unwrap();
            assert_eq!(parser.feed([&start, head].concat().as_bytes()), Ok(vec![]));
            for _ in 0..2048 {
                assert_eq!(parser.feed(&[filler; 1024]), Ok(vec![]), "{head}");
            }
            let events = parser.feed(tail.as_bytes());
            let report = because(
                SkipReason::Size(400),
                oversized("iq", "long", "a", "b", "set"),
            );
            assert_eq!(events, Ok(vec![report]), "{head}");
        }
    }

    #[test]
    fn a_huge_stanza_fed_at_once_is_skipped() {
        // 10 MiB of text, then a stanza within the limit.
        let huge = format!(
            "{HEADER}<message type='chat' id='big' from='a@localhost/r' to='push.localhost'>\
             <body>{}</body></message><iq id='after'/>",
            "x".repeat(10 << 20)
        );
        let events = parse_all(&huge).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[1],
            oversized("message", "big", "a@localhost/r", "push.localhost", "chat")
        );
        assert_eq!(stanza(&events[2]).attr("id"), Some("after"));
        // A 10 MiB attribute value is beyond rxml's own limit on one token.
        let huge = format!("{HEADER}<iq id='{}'/>", "x".repeat(10 << 20));
        assert_eq!(xml_error(&huge), "restricted xml: long name or reference");
        // Under the limit, a long attribute is fine.
        let long = format!("{HEADER}<iq id='{}'/>", "x".repeat(60_000));
        let events = parse_all(&long).unwrap();
        assert_eq!(stanza(&events[1]).attr("id").unwrap().len(), 60_000);
    }

    #[test]
    fn a_huge_stanza_of_many_elements_keeps_nothing_while_it_is_skipped() {
        // 5 MiB of small elements and text, in 4 KiB chunks.
        let mut input = String::from(
            "<iq type='set' id='many' from='a@localhost/r' to='push.localhost'><pubsub xmlns='urn:p'>",
        );
        let mut i = 0;
        while input.len() < 5 << 20 {
            input += &format!(
                "<item id='{i}' xmlns:q='urn:q' q:n='1'><v>text {i} &amp; more</v>\n<e/></item>"
            );
            i += 1;
        }
        input += "</pubsub></iq>\n<iq type='get' id='next' from='localhost' to='push.localhost'/>";
        let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
        parser.feed(HEADER.as_bytes()).unwrap();
        let mut events = Vec::new();
        let mut fed = 0;
        for chunk in input.as_bytes().chunks(4096) {
            events.extend(parser.feed(chunk).unwrap());
            fed += chunk.len();
            if fed > DEFAULT_MAX_STANZA_BYTES {
                // Past the limit: no node, no open element, no start tag, no text.
                assert_eq!(parser.buffered_nodes(), 0, "after {fed} bytes");
            }
        }
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(
            events[0],
            oversized("iq", "many", "a@localhost/r", "push.localhost", "set")
        );
        assert_eq!(
            describe(&events[1]),
            "<iq xmlns='jabber:component:accept' from='localhost' id='next' to='push.localhost' type='get'/>"
        );
        assert!(parser.skip.is_none());
        assert_eq!(parser.buffered_nodes(), 0);
        assert_eq!(parser.tree.depth(), 1);
        assert!(parser.tree.root.is_none());
    }

    #[test]
    fn a_start_tag_cut_by_the_limit_leaves_nothing_for_the_next_stanza() {
        // The limit falls on every byte of a stanza in turn, among them every byte of the
        // start tags of the stanza and of an element declaring a prefix and using it on an
        // attribute; the stanza after it must come out whole and alone.
        let big = "<iq type='set' id='cut' from='someone.with.a.long.name@example.com/resource-1' to='push.localhost'>\
                   <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n1'>\
                   <item xmlns:p='urn:p' p:secret='s3cr3t' xmlns='urn:i' id='i1'><x p:flag='1'>a &amp; b</x></item>\
                   </publish></pubsub></iq>";
        let next = "<iq type='get' id='next' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>";
        let head = big.find('>').unwrap() + 1;
        assert!(head > SHORT_HEADER.len().max(next.len()));
        let whole = describe(&parse_all(&[SHORT_HEADER, next].concat()).unwrap()[1]);
        let input = [SHORT_HEADER, big, next].concat();
        for limit in SHORT_HEADER.len().max(next.len())..big.len() {
            // The start tag counts as whole when its `>` is within the limit.
            let report = match head <= limit {
                true => oversized(
                    "iq",
                    "cut",
                    "someone.with.a.long.name@example.com/resource-1",
                    "push.localhost",
                    "set",
                ),
                false => cut("iq"),
            };
            let report = because(SkipReason::Size(limit), report);
            // Every size up to the longest token, then a few cutting elsewhere.
            for size in (1..=32).chain([61, 97, 128, input.len()]) {
                let mut parser = StreamParser::new(limit);
                let (events, error) = run(&mut parser, input.as_bytes(), size);
                assert_eq!(error, None, "limit {limit}, chunk size {size}");
                assert_eq!(events.len(), 3, "limit {limit}, chunk size {size}");
                assert_eq!(events[1], report, "limit {limit}, chunk size {size}");
                assert_eq!(
                    describe(&events[2]),
                    whole,
                    "limit {limit}, chunk size {size}"
                );
                assert_eq!(parser.buffered_nodes(), 0);
            }
        }
    }

    #[test]
    fn thousands_of_attributes_within_the_limit_are_built_and_checked() {
        // 25 000 attributes in 220 KiB: within the default limit, so built.
        let attrs: String = (0..25_000).map(|i| format!(" a{i}=''")).collect();
        let after = "<iq type='get' id='after' from='localhost' to='push.localhost'/>";
        let child = format!("<iq type='get' id='many' from='remote.example'{attrs}/>");
        assert!(child.len() < DEFAULT_MAX_STANZA_BYTES);
        let input = [HEADER, &child, after].concat();
        let (events, error) = check_consistent(
            input.as_bytes(),
            &[7, 4096, input.len()],
            DEFAULT_MAX_STANZA_BYTES,
        );
        assert_eq!(error, None);
        assert_eq!(stanza(&events[1]).attrs().len(), 25_003);
        assert_eq!(stanza(&events[1]).attr("a24999"), Some(""));
        assert_eq!(stanza(&events[2]).attr("id"), Some("after"));
        // One of them twice, far apart: that stanza alone is skipped.
        let child = format!(
            "<iq type='get' id='ns' from='remote.example' to='push.localhost'{attrs} a7='again'/>"
        );
        let input = [HEADER, &child, after].concat();
        let (events, error) = check_consistent(input.as_bytes(), &[4096], DEFAULT_MAX_STANZA_BYTES);
        assert_eq!(error, None);
        assert_eq!(
            events[1],
            remote_iq(SkipReason::Namespace("a duplicate attribute"))
        );
        assert_eq!(stanza(&events[2]).attr("id"), Some("after"));
    }

    #[test]
    fn a_skipped_stanza_is_followed_to_its_end_tag_and_nothing_more() {
        // 128 elements take the stanza over the 400-byte limit; what follows is read only
        // for its structure.
        let filler = "<x/>".repeat(128);
        let input =
            |inner: &str| format!("{HEADER}<iq id='s'>{filler}{inner}</iq><iq id='after'/>");
        let skipped = |inner: &str| {
            let input = input(inner);
            check_consistent(input.as_bytes(), &[1, 2, 3, 5, 7, 64, input.len()], 400)
        };
        for inner in [
            // Names, characters, references and namespaces are not looked at.
            "<a></b>",
            "<a>\u{1}</a>",
            "<a>&lol;</a>",
            "<a>]]></a>",
            "<a b=1/>",
            "<p:a q:b='1' b='1' b='2'/>",
            // Markup inside values and CDATA does not end anything.
            "<a b='>' c=\"/>\" d='/iq&gt;'/>",
            "<a><![CDATA[</iq><iq>]]]></a>",
            "<a>&gt;/&gt;</a>",
            "<a\n  b='1'\n/>",
        ] {
            let (events, error) = skipped(inner);
            assert_eq!(error, None, "{inner}");
            assert_eq!(events.len(), 3, "{inner}");
            let report = StreamEvent::Oversized {
                name: "iq".to_owned(),
                id: Some("s".to_owned()),
                from: None,
                to: None,
                kind: None,
                why: SkipReason::Size(400),
            };
            assert_eq!(events[1], report, "{inner}");
            assert_eq!(stanza(&events[2]).attr("id"), Some("after"), "{inner}");
        }
        // What is not tags at all still ends the stream.
        for inner in [
            "<!-- c -->",
            "<?pi?>",
            "<!DOCTYPE x>",
            "< a>",
            "<a/ >",
            "<a b='<'/>",
            "</a<>",
        ] {
            let (_, error) = skipped(inner);
            assert!(
                matches!(error, Some(StreamError::Xml(_))),
                "{inner}: {error:?}"
            );
        }
        // Text between stanzas is still refused after a skip.
        let input = format!("{HEADER}<iq>{filler}</iq>text<iq/>");
        let mut parser = StreamParser::new(400);
        let (_, error) = run(&mut parser, input.as_bytes(), input.len());
        assert_eq!(
            error,
            Some(StreamError::Xml("text between stanzas".to_owned()))
        );
    }

    #[test]
    fn text_references_between_stanzas_count_towards_the_next_one() {
        // Whitespace written as references is not a keepalive that we drop before rxml
        // sees it: it counts, and may take the next child over the limit (or be followed
        // by the end of the stream, and dropped).
        let spaces = "&#32;".repeat(100);
        let input = format!("{SHORT_HEADER}<a/>{spaces}<iq id='x'/><a/>{spaces}</stream:stream>");
        for size in 1..=input.len() {
            let mut parser = StreamParser::new(SHORT_HEADER.len());
            let (events, error) = run(&mut parser, input.as_bytes(), size);
            assert_eq!(error, None, "chunk size {size}");
            let events: Vec<String> = events.iter().map(describe).collect();
            let a = "<a xmlns='jabber:component:accept'/>";
            let expected = [
                "open id=None from=None",
                a,
                "oversized <iq/> id=None from=None to=None type=None (larger than 95 bytes)",
                a,
                "close",
            ];
            assert_eq!(events, expected, "chunk size {size}");
        }
        let input = format!("{SHORT_HEADER}{spaces}x<iq/>");
        let mut parser = StreamParser::new(SHORT_HEADER.len());
        let (_, error) = run(&mut parser, input.as_bytes(), input.len());
        assert_eq!(
            error,
            Some(StreamError::Xml("text between stanzas".to_owned()))
        );
    }

    #[test]
    fn a_stanza_nested_too_deep_is_skipped_and_the_stream_goes_on() {
        // An IQ holding `depth` levels, itself the first.
        let nested = |depth: usize| {
            let (open, close) = ("<a>".repeat(depth - 1), "</a>".repeat(depth - 1));
            format!("<iq {REMOTE}>{open}{close}</iq>")
        };
        const REMOTE: &str = "type='get' id='ns' from='remote.example' to='push.localhost'";
        let after = "<iq type='get' id='after' from='localhost' to='push.localhost'/>";
        // One below, at and one above the limit, in every chunking.
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
            let input = [HEADER, &nested(depth), after].concat();
            let sizes: Vec<usize> = (1..=input.len()).collect();
            let (events, error) =
                check_consistent(input.as_bytes(), &sizes, DEFAULT_MAX_STANZA_BYTES);
            assert_eq!(error, None, "depth {depth}");
            assert_eq!(events.len(), 3, "depth {depth}");
            if depth <= MAX_DEPTH {
                let mut levels = 0;
                let mut element = Some(stanza(&events[1]));
                while let Some(e) = element {
                    levels += 1;
                    element = e.children().next();
                }
                assert_eq!(levels, depth);
            } else {
                assert_eq!(events[1], remote_iq(SkipReason::Depth(64)));
            }
            assert_eq!(
                stanza(&events[2]).attr("id"),
                Some("after"),
                "depth {depth}"
            );
        }

        // Far deeper (a 1 MiB limit lets 100 000 levels in): nothing is kept but a count.
        let mut parser = StreamParser::new(1 << 20);
        parser.feed(HEADER.as_bytes()).unwrap();
        parser.feed(format!("<iq {REMOTE}>").as_bytes()).unwrap();
        let (open, close) = ("<a>".repeat(100_000), "</a>".repeat(100_000));
        for chunk in open.as_bytes().chunks(4096) {
            assert_eq!(parser.feed(chunk), Ok(vec![]));
            assert_eq!(parser.buffered_nodes(), 0);
        }
        let events = parser.feed([&close, "</iq>", after].concat().as_bytes());
        let events = events.unwrap();
        assert_eq!(events[0], remote_iq(SkipReason::Depth(64)));
        assert_eq!(stanza(&events[1]).attr("id"), Some("after"));
        assert_eq!(parser.tree.depth(), 1);

        // Deep nesting inside a stanza already over the size limit: skipped for its size,
        // however deep.
        let filler = "<x/>".repeat(128);
        for depth in [MAX_DEPTH, MAX_DEPTH + 1, 20_000] {
            let (open, close) = ("<a>".repeat(depth), "</a>".repeat(depth));
            let input = format!("{HEADER}<iq {REMOTE}>{filler}{open}{close}</iq>{after}");
            let sizes = [1, 3, 4096, input.len()];
            let (events, error) = check_consistent(input.as_bytes(), &sizes, 400);
            assert_eq!(error, None, "depth {depth}");
            assert_eq!(events[1], remote_iq(SkipReason::Size(400)), "depth {depth}");
            assert_eq!(
                stanza(&events[2]).attr("id"),
                Some("after"),
                "depth {depth}"
            );
        }
        // And too deep first, then over the size limit: skipped for its depth.
        let input = format!(
            "{HEADER}{}{after}",
            nested(MAX_DEPTH + 1).replace("</iq>", &format!("{filler}</iq>"))
        );
        let (events, error) = check_consistent(input.as_bytes(), &[1, 5, input.len()], 400);
        assert_eq!(error, None);
        assert_eq!(events[1], remote_iq(SkipReason::Depth(64)));
    }

    #[test]
    fn after_an_error_every_feed_fails_the_same_way() {
        let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
        parser.feed(HEADER.as_bytes()).unwrap();
        let error = parser.feed(b"<iq></message>").unwrap_err();
        assert!(matches!(error, StreamError::Xml(_)));
        assert_eq!(parser.feed(b"<handshake/>"), Err(error.clone()));
        assert_eq!(parser.feed(b""), Err(error));

        let mut parser = StreamParser::new(10);
        let error = parser.feed(HEADER.as_bytes()).unwrap_err();
        assert_eq!(error, StreamError::StanzaTooLarge { limit: 10 });
        assert_eq!(parser.feed(b" "), Err(error));
    }

    #[test]
    fn nothing_follows_the_close() {
        let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
        let events = parser
            .feed([HEADER, "</stream:stream>\r\n"].concat().as_bytes())
            .unwrap();
        assert_eq!(events.last(), Some(&StreamEvent::Close));
        assert_eq!(parser.feed(b""), Ok(vec![]));
        assert_eq!(parser.feed(b" \n"), Ok(vec![]));
        assert_eq!(parser.feed(b" <iq/>"), Err(StreamError::AfterClose));
        assert_eq!(parser.feed(b" "), Err(StreamError::AfterClose));

        let input = [HEADER, "</stream:stream> <iq/>"].concat();
        assert_eq!(parse_all(&input), Err(StreamError::AfterClose));
    }

    #[test]
    fn the_errors_read_as_plain_sentences() {
        assert_eq!(
            StreamError::Xml("text between stanzas".to_owned()).to_string(),
            "malformed xml stream: text between stanzas"
        );
        assert_eq!(
            StreamError::StanzaTooLarge { limit: 65536 }.to_string(),
            "stream header larger than the limit of 65536 bytes"
        );
        assert_eq!(
            StreamError::AfterClose.to_string(),
            "data received after the stream was closed"
        );
        let error = parse_all(&[HEADER, "<iq></message>"].concat()).unwrap_err();
        assert!(
            error.to_string().starts_with("malformed xml stream: "),
            "{error}"
        );
    }

    #[test]
    fn an_endless_stream_keeps_nothing_it_has_handed_on() {
        let one = "<iq type='result' id='p' from='localhost' to='push.localhost'/>\n";
        // Byte by byte, every byte of a stanza is a place where something could be kept:
        // each is checked a thousand times over. In 4 KiB chunks, as a socket delivers
        // them, and all at once, ten thousand stanzas pass through: what one of them
        // left behind would show after the first, and add up by the last.
        for (count, size) in [(1_000, 1), (10_000, 4096), (10_000, usize::MAX)] {
            let input = one.repeat(count);
            let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
            parser.feed(HEADER.as_bytes()).unwrap();
            let mut stanzas = 0;
            for chunk in input.as_bytes().chunks(size) {
                for event in parser.feed(chunk).unwrap() {
                    assert!(stanza(&event).is("iq", ns::COMPONENT));
                    stanzas += 1;
                }
                // Never more than the start tag being read (its name and four attributes),
                // nothing once it is handed on.
                assert!(parser.buffered_nodes() <= 5, "chunk size {size}");
                if chunk.ends_with(b"\n") {
                    assert_eq!(parser.buffered_nodes(), 0, "chunk size {size}");
                }
            }
            assert_eq!(stanzas, count, "chunk size {size}");
            assert_eq!(parser.tree.depth(), 1);
            assert!(parser.tree.root.is_none());
        }
    }

    /// Inputs that have broken XML parsers before: odd names, references, encodings,
    /// declarations, reserved prefixes.
    const ODD: &[&[u8]] = &[
        b"<?xml version='1.1'?><stream:stream/>",
        b"<?xml version='1.0' encoding='latin1'?>",
        b"<?xml version='1.0'?><?xml version='1.0'?>",
        b"\xef\xbb\xbf<stream:stream/>",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'></stream:stream>",
        b"</stream:stream>",
        b"<xmlns:iq/>",
        b"<xml:iq/>",
        b"<iq xmlns:xmlns='urn:x'/>",
        b"<iq xmlns:xml='urn:x'/>",
        b"<iq xmlns:xml='http://www.w3.org/XML/1998/namespace' xml:lang='en'/>",
        b"<iq xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
        b"<iq xmlns=''/>",
        b"<iq><x xmlns=''/></iq>",
        b"<iq xmlns:p='urn:a'><p:x xmlns:p='urn:b'><p:y/></p:x></iq>",
        b"<iq xmlns='urn:a' xmlns:p='urn:a'><p:x/><x/></iq>",
        b"<p:iq xmlns:p='jabber:component:accept' xmlns='urn:b'><x/></p:iq>",
        b"<iq xmlns:stream='urn:other'><stream:x/></iq>",
        b"<stream:x xmlns:stream='urn:other'/>",
        b"<iq xmlns:p='urn:a' p:a='1' xmlns:q='urn:b' q:a='2'/>",
        b"<p:iq xmlns:p=''/>",
        b"<a:b:c/>",
        b"<:a/>",
        b"<a :b='1'/>",
        b"<a b:='1'/>",
        b"<iq a='<'/>",
        b"<iq a='&#0;'/>",
        b"<iq>&#0;</iq>",
        b"<iq>&#xD800;</iq>",
        b"<iq>&#x110000;</iq>",
        b"<iq>&#99999999999999999999999;</iq>",
        b"<iq>&#x;</iq>",
        b"<iq>&;</iq>",
        b"<iq>&amp</iq>",
        b"<iq>]]></iq>",
        b"<iq>\xc0\x80</iq>",
        b"<iq>\xed\xa0\x80</iq>",
        b"<iq>\xf4\x90\x80\x80</iq>",
        b"<iq>\xe2\x82</iq>",
        b"<iq>\x00</iq>",
        b"<iq>\r\n\r</iq>",
        b"<iq a='\t\n'/>",
        b"<iq><![CDATA[]]></iq>",
        b"<iq><![CDATA[]]]]></iq>",
        b"<iq><![CDATA[",
        b"<![CDATA[x]]>",
        b"<iq/ >",
        b"<iq / >",
        b"< iq/>",
        b"<iq></ iq>",
        b"<iq></iq >",
        b"<iq xmlns:stream='http://etherx.jabber.org/streams'><stream:stream/></iq>",
        b"<stream:error/></stream:stream></stream:stream>",
        b"<iq xmlns='jabber:component:accept' xmlns='x'/>",
        b"<iq id=\"a'b\" type='a\"b'/>",
        b"<\xf0\x9f\x8e\x89/>",
        b"<a\xcc\x81/>",
    ];

    /// A small deterministic generator, so that a failure reproduces.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Feeds `input` one byte at a time and in `sizes` to a parser with `limit`; whatever it
    /// is, nothing panics and every chunking ends the same way with the same events (those
    /// lost with an error that shares their chunk aside). Returns the byte-at-a-time run.
    fn check_consistent(
        input: &[u8],
        sizes: &[usize],
        limit: usize,
    ) -> (Vec<StreamEvent>, Option<StreamError>) {
        let mut parser = StreamParser::new(limit);
        let (reference, reference_error) = run(&mut parser, input, 1);
        for event in &reference {
            // What we hand on renders, and reads back as the same element (minidom reads
            // only namespaced documents; a header without a default namespace leaves
            // stanzas in none).
            if let StreamEvent::Stanza(element) = event {
                let rendered = render(element);
                if !element.ns().is_empty() {
                    let again: Element = rendered
                        .parse()
                        .unwrap_or_else(|error| panic!("{error}: {rendered}"));
                    assert_eq!(&again, element, "{rendered}");
                }
            }
        }
        let described: Vec<String> = reference.iter().map(describe).collect();
        for &size in sizes {
            let mut parser = StreamParser::new(limit);
            let (events, error) = run(&mut parser, input, size.max(1));
            let events: Vec<String> = events.iter().map(describe).collect();
            assert_eq!(
                error,
                reference_error,
                "limit {limit}, chunk size {size} of {:?}",
                String::from_utf8_lossy(input)
            );
            if error.is_none() {
                assert_eq!(events, described, "limit {limit}, chunk size {size}");
            } else {
                assert!(
                    described.starts_with(&events),
                    "limit {limit}, chunk size {size}"
                );
            }
        }
        (reference, reference_error)
    }

    /// Checks `input` under a limit that all of its stanzas fit and under one that some of
    /// them do not: both runs are consistent, and where the first succeeds, so does the
    /// second (skipping checks less, never more) unless the first skipped a child for
    /// another reason (the rest of that child is not checked there, but may be built
    /// under the other limit), with the same events but for stanzas replaced by their
    /// reports. Returns how many such reports it compared.
    fn check_skipping(input: &[u8], sizes: &[usize], small: usize) -> usize {
        let (whole, whole_error) = check_consistent(input, sizes, 2048);
        let (cut, cut_error) = check_consistent(input, sizes, small);
        if whole_error.is_some() {
            return 0;
        }
        let context = String::from_utf8_lossy(input);
        if cut_error.is_some() {
            let skipped_otherwise = whole.iter().any(|event| {
                matches!(event, StreamEvent::Oversized { why, .. } if !matches!(why, SkipReason::Size(_)))
            });
            assert!(skipped_otherwise, "{cut_error:?} in {context:?}");
            return 0;
        }
        assert_eq!(cut.len(), whole.len(), "{context:?}");
        let mut compared = 0;
        for (cut, whole) in cut.iter().zip(&whole) {
            if cut == whole {
                continue;
            }
            let StreamEvent::Oversized {
                name,
                id,
                from,
                to,
                kind,
                why: SkipReason::Size(limit),
            } = cut
            else {
                panic!("{cut:?} in place of {whole:?} in {context:?}");
            };
            assert_eq!(*limit, small, "{context:?}");
            // Either the start tag was whole and its attributes are reported, or none are.
            let reported = [id, from, to, kind].map(Option::as_deref);
            let (whole_name, attrs) = match whole {
                StreamEvent::Stanza(element) => (
                    element.name(),
                    ["id", "from", "to", "type"].map(|attr| element.attr(attr)),
                ),
                StreamEvent::Oversized {
                    name,
                    id,
                    from,
                    to,
                    kind,
                    why: SkipReason::Depth(_) | SkipReason::Namespace(_),
                } => (name.as_str(), [id, from, to, kind].map(Option::as_deref)),
                _ => panic!("{cut:?} in place of {whole:?} in {context:?}"),
            };
            assert_eq!(name, whole_name, "{context:?}");
            assert!(
                reported == attrs || reported == [None; 4],
                "{reported:?} for {attrs:?} in {context:?}"
            );
            compared += 1;
        }
        compared
    }

    #[test]
    fn odd_inputs_fail_cleanly_in_every_chunking() {
        let mut compared = 0;
        for odd in ODD {
            let mut input = HEADER.as_bytes().to_vec();
            input.extend_from_slice(odd);
            input.extend_from_slice(b"<iq/>");
            check_consistent(&input, &[2, 3, 5, input.len()], 2048);
            check_consistent(odd, &[2, 3, odd.len()], 2048);
            check_fast(&input, &[1, 2, 3, 5, input.len()], 2048);
            check_fast(odd, &[1, 2, 3, odd.len()], 2048);
            // The same inside a stanza being skipped.
            let mut input = HEADER.as_bytes().to_vec();
            input.extend_from_slice(b"<iq id='odd'>");
            input.extend_from_slice("<x/>".repeat(128).as_bytes());
            input.extend_from_slice(odd);
            input.extend_from_slice(b"</iq><iq/>");
            compared += check_skipping(&input, &[2, 3, 5, input.len()], 400);
        }
        assert!(compared > 0);
    }

    /// The fast path against the full parser: `input` fed in each of `sizes` to a parser
    /// with the fast path on gives the same events and the same error as one without, but
    /// for each publish it read, which is exactly what `PublishIq::from_element` reads
    /// from the full parser's stanza. Returns how many publishes the fast path read.
    fn check_fast(input: &[u8], sizes: &[usize], limit: usize) -> usize {
        let mut read = 0;
        for &size in sizes {
            let size = size.max(1);
            let context = || {
                format!(
                    "limit {limit}, chunk size {size} of {:?}",
                    String::from_utf8_lossy(input)
                )
            };
            let (expected, expected_error) = run(&mut StreamParser::new(limit), input, size);
            let mut parser = StreamParser::new(limit);
            parser.read_publishes();
            let (events, error) = run(&mut parser, input, size);
            let held = parser.held_bytes() > 0;
            // A child held until its end arrives reaches rxml only then: an error in it
            // may come later (here: not before the input ends), never another one.
            if !(error.is_none() && expected_error.is_some() && held) {
                assert_eq!(error, expected_error, "{}", context());
            }
            assert_eq!(
                events.len(),
                expected.len(),
                "{events:?} {expected:?} {error:?} {expected_error:?} {}",
                context()
            );
            for (got, want) in events.iter().zip(&expected) {
                match (got, want) {
                    (StreamEvent::Publish(publish), StreamEvent::Stanza(element)) => {
                        assert_eq!(
                            PublishIq::from_element(element).as_ref(),
                            Some(publish),
                            "{}",
                            context()
                        );
                        read += 1;
                    }
                    _ => assert_eq!(got, want, "{}", context()),
                }
            }
        }
        read
    }

    /// The real stanzas of tests/fixtures/stanzas, as the core tests use them.
    const FIXTURES: &[(&str, &str)] = &[
        (
            "prosody-publish",
            include_str!("../../tests/fixtures/stanzas/prosody-publish.xml"),
        ),
        (
            "ejabberd-publish",
            include_str!("../../tests/fixtures/stanzas/ejabberd-publish.xml"),
        ),
        (
            "ejabberd-publish-empty",
            include_str!("../../tests/fixtures/stanzas/ejabberd-publish-empty.xml"),
        ),
        (
            "conversations-register",
            include_str!("../../tests/fixtures/stanzas/conversations-register.xml"),
        ),
        (
            "conversations-unregister",
            include_str!("../../tests/fixtures/stanzas/conversations-unregister.xml"),
        ),
        (
            "disco-info",
            include_str!("../../tests/fixtures/stanzas/disco-info.xml"),
        ),
        (
            "disco-items-commands",
            include_str!("../../tests/fixtures/stanzas/disco-items-commands.xml"),
        ),
        (
            "ping",
            include_str!("../../tests/fixtures/stanzas/ping.xml"),
        ),
        (
            "version",
            include_str!("../../tests/fixtures/stanzas/version.xml"),
        ),
        (
            "registration-result",
            include_str!("../../tests/fixtures/stanzas/registration-result.xml"),
        ),
    ];

    #[test]
    fn the_fast_path_reads_the_real_publishes_as_the_tree_does() {
        for (name, fixture) in FIXTURES {
            // As in a session: the fast path starts after the first child (the handshake).
            let input = [
                HEADER,
                "<handshake/>",
                fixture.trim(),
                "\n",
                fixture.trim(),
                " <a/>",
            ]
            .concat();
            let sizes = [1, 2, 3, 7, 64, 500, input.len() / 2, input.len()];
            let read = check_fast(input.as_bytes(), &sizes, DEFAULT_MAX_STANZA_BYTES);
            // Both copies in every chunking, for the publishes; nothing else.
            let expected = match name.contains("publish") {
                true => 2 * sizes.len(),
                false => 0,
            };
            assert_eq!(read, expected, "{name}");
        }
        // What the core gets from the fast path, written out (PROTOCOL.md §5).
        let mut parser = StreamParser::new(DEFAULT_MAX_STANZA_BYTES);
        parser.read_publishes();
        let events = parser
            .feed(
                [HEADER, "<handshake/>", PROSODY_PUBLISH, EJABBERD_PUBLISH]
                    .concat()
                    .as_bytes(),
            )
            .unwrap();
        let publish = |node: &str, secret: &str, has_body| Publish {
            node: Some(node.into()),
            secret: Some(secret.into()),
            has_body,
        };
        assert_eq!(
            events[2..],
            [
                StreamEvent::Publish(PublishIq {
                    id: "f02a7cb7".into(),
                    from: Some("localhost".into()),
                    to: Some("push.localhost".into()),
                    publish: publish("4VS_xOP4xeyO", "G4yJr4P6XSecKI6H4Jt8AxUm", true),
                }),
                StreamEvent::Publish(PublishIq {
                    id: "rr-1795600646201-93041074…".into(),
                    from: Some("localhost".into()),
                    to: Some("push.localhost".into()),
                    publish: publish("0uPKy41C8ea0", "krZM6bbFugBicqBPV2fq5ZAc", true),
                }),
            ]
        );
    }

    #[test]
    fn the_fast_path_leaves_what_it_does_not_read_to_the_full_parser() {
        let publish = |iq: &str, inside: &str| {
            format!(
                "{iq}<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'>{inside}\
                 </publish><publish-options><x xmlns='jabber:x:data'><field var='secret'>\
                 <value>s&amp;t</value></field></x></publish-options></pubsub></iq>"
            )
        };
        let set = "<iq type='set' id='i' from='localhost'>";
        // (child, whether the fast path reads it)
        let cases = [
            (publish(set, ""), true),
            (publish("<iq id='i' type=\"set\" >", "<item/>"), true),
            (publish("<iq type='get' id='i'>", ""), false),
            (publish("<iq type='set'>", ""), false),
            (publish("<iq type='set' id='i' xml:lang='en'>", ""), false),
            (publish("<iq type='set' id='i' xmlns='jabber:client'>", ""), false),
            (publish("<iq type='set' id='i' xmlns='jabber:component:accept'>", ""), true),
            (publish(set, "<![CDATA[x]]>"), false),
            (publish(set, "&#32;"), false),
            (publish(set, "\r\n"), false),
            (publish(set, "<p:x xmlns:p='urn:p'/>"), false),
            (publish(set, "<x a='1' a='2'/>"), false),
            (publish(set, "<x a='\t'/>"), false),
            (publish(set, "<x xmlns=''/>"), false),
            (publish(set, "]]>"), false),
            (publish(set, "<x>é 🎉 &lt;&gt;&apos;&quot;</x>"), true),
            (
                publish(set, &"<d>".repeat(20))
                    .replace("</publish>", &["</d>".repeat(20), "</publish>".into()].concat()),
                false,
            ),
            (format!("{set}<ping xmlns='urn:xmpp:ping'/></iq>"), false),
            (format!("{set}<pubsub xmlns='http://jabber.org/protocol/pubsub'/></iq>"), false),
            (format!("{set}text<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish/></pubsub></iq>"), true),
            (format!("{set}<x/><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish/></pubsub></iq>"), false),
            ("<message><body>x</body></message>".to_owned(), false),
        ];
        for (child, fast) in &cases {
            let input = [HEADER, "<a/>", child, "<a/>", child].concat();
            let sizes = [1, 5, 64, input.len()];
            let read = check_fast(input.as_bytes(), &sizes, DEFAULT_MAX_STANZA_BYTES);
            assert_eq!(read, usize::from(*fast) * 2 * sizes.len(), "{child}");
        }
        // A publish over the stanza limit is skipped, as without the fast path.
        let (child, _) = &cases[0];
        let input = [HEADER, "<a/>", child, "<a/>"].concat();
        assert_eq!(
            check_fast(input.as_bytes(), &[1, 9, input.len()], child.len() - 1),
            0
        );
        assert_eq!(
            check_fast(input.as_bytes(), &[1, 9, input.len()], child.len()),
            3
        );
    }

    #[test]
    fn mutated_publishes_read_by_the_fast_path_are_what_the_tree_says() {
        let publishes: Vec<&str> = FIXTURES
            .iter()
            .filter(|(name, _)| name.contains("publish"))
            .map(|(_, text)| text.trim())
            .collect();
        let original = [HEADER, "<handshake/>", &publishes.join("\n"), "<a/>"]
            .concat()
            .into_bytes();
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let (mut read, mut changed) = (0, 0);
        for _ in 0..600 {
            let mut input = original.clone();
            mutate(&mut rng, &mut input);
            let sizes = [1 + rng.below(16), 1 + rng.below(600), input.len()];
            let n = check_fast(&input, &sizes, DEFAULT_MAX_STANZA_BYTES);
            read += n;
            if n > 0 && input != original {
                changed += 1;
            }
        }
        // Many mutated publishes are still read fast, and compared.
        assert!(
            read > 1000 && changed > 100,
            "{read} read, {changed} changed"
        );
    }

    /// Mutates the real session: bit flips, inserted XML-significant bytes and namespace
    /// fragments, deletions, duplicated slices.
    fn mutate(rng: &mut XorShift, input: &mut Vec<u8>) {
        const SPECIAL: &[u8] = b"<>/='\"&;:!?[]- \n\x00\x80\xc3\xf0\xff";
        const FRAGMENTS: &[&str] = &[
            " xmlns:p='urn:p'",
            " xmlns:q='urn:p'",
            " xmlns:tns0='urn:t'",
            " xmlns=''",
            " xmlns='urn:d'",
            " p:a='1'",
            " xml:lang='en'",
            " xmlns:xml='http://www.w3.org/XML/1998/namespace'",
            "<p:x/>",
            "<x xmlns:p='urn:o'><p:y p:b='2'/></x>",
            "&#10;",
            "&#x1F389;",
            "<![CDATA[",
            "]]>",
            "</stream:stream>",
            // Prefixes declared nowhere (ejabberd relays them), duplicate attributes.
            "<db:x/>",
            " db:a='1'",
            " id='dup'",
            // One level deeper than the limit, and exactly at it.
            "<d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d>\
             </d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d>",
            "<d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d><d>\
             </d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d></d>",
        ];
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(input.len());
            match rng.below(5) {
                4 => {
                    let fragment = FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes();
                    // An element lands between two tags half of the time, where it keeps
                    // the XML well-formed.
                    let ends: Vec<usize> = (0..input.len()).filter(|&i| input[i] == b'>').collect();
                    let at =
                        match fragment.starts_with(b"<") && !ends.is_empty() && rng.below(2) == 0 {
                            true => ends[rng.below(ends.len())] + 1,
                            false => at,
                        };
                    input.splice(at..at, fragment.iter().copied());
                }
                0 => input[at] ^= 1 << rng.below(8),
                1 => input.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
                2 => {
                    input.remove(at);
                }
                _ => {
                    let end = (at + rng.below(64)).min(input.len());
                    let slice = input[at..end].to_vec();
                    let to = rng.below(input.len());
                    input.splice(to..to, slice);
                }
            }
        }
    }

    fn fuzz(iterations: usize, seed: u64) {
        let session = session().into_bytes();
        let mut rng = XorShift(seed);
        let (mut compared, mut fast) = (0, 0);
        // Children skipped for their depth or a namespace error, under the larger limit.
        let (mut deep, mut namespace) = (0, 0);
        for _ in 0..iterations {
            let mut input = session.clone();
            mutate(&mut rng, &mut input);
            let sizes = [1 + rng.below(16), 1 + rng.below(512), input.len()];
            // The two publishes are over the smaller limit, cut anywhere; the header (even
            // mutated) and the handshake, message and stream error are under it.
            let limit = 430 + rng.below(480);
            compared += check_skipping(&input, &sizes, limit);
            fast += check_fast(&input, &sizes, 2048);
            let mut parser = StreamParser::new(2048);
            for event in run(&mut parser, &input, input.len()).0 {
                match event {
                    StreamEvent::Oversized {
                        why: SkipReason::Depth(_),
                        ..
                    } => deep += 1,
                    StreamEvent::Oversized {
                        why: SkipReason::Namespace(_),
                        ..
                    } => namespace += 1,
                    _ => {}
                }
            }
        }
        // Most mutations break the XML, but not all: the skipping was compared too, and
        // both other reasons to skip came up.
        assert!(compared > iterations / 10, "{compared} reports compared");
        assert!(
            deep > 0 && namespace > 0,
            "{deep} deep, {namespace} namespace"
        );
        assert!(fast > iterations, "{fast} read by the fast path");
    }

    #[test]
    fn mutated_sessions_fail_cleanly_in_every_chunking() {
        fuzz(300, 0x9e37_79b9_7f4a_7c15);
    }
}
