//! The publish fast path: a top-level child that is a plain XEP-0357 publish, read
//! straight from its bytes into a [`PublishIq`], without rxml's events or a minidom tree.
//!
//! Publishes are nearly all a push app server reads, and building a tree for each one
//! cost most of the daemon's instructions. This reader understands a strict subset of
//! XML, and answers only for a child that lies entirely inside it and is exactly an
//! `<iq type='set'>` in the component namespace whose first child element is a pubsub
//! `<publish/>` request: everything else, or anything it is unsure of, is
//! [`Fast::No`], and the stream parser hands the same bytes to rxml and minidom as
//! before. So the fast path never accepts what the full parser refuses or skips, and
//! gives what the core would have read from the tree (`PublishIq::from_element`, the
//! differential tests and the `stream` fuzz target check both).
//!
//! The subset, all of it checked:
//! - names are ASCII `[A-Za-z_][A-Za-z0-9._-]*`, not starting with `xml` (any case) but
//!   for the `xmlns` attribute; no prefix (`:`), so no prefixed namespace at all;
//! - attribute values in `'` or `"`, no `<`, no tab, line feed or carriage return (XML
//!   normalises those), only the five predefined entity references;
//! - text: no `]]>`, no carriage return (XML normalises line ends), only the five
//!   predefined references; no CDATA section, comment or processing instruction;
//! - characters: valid UTF-8, no control character but tab and line feed, no U+FFFE
//!   or U+FFFF;
//! - `xmlns='…'` declarations of a non-empty namespace other than the two reserved ones;
//!   at most [`MAX_ATTRIBUTES`] attributes, no duplicate; at most [`MAX_DEPTH`] levels;
//! - the whole child within the stanza limit and [`MAX_BYTES`].

use super::ns;
use super::publish::{Publish, PublishIq};

/// The largest child the fast path reads (and holds while it is incomplete): publishes
/// are about 1.2 KiB; anything larger goes to the full parser.
pub const MAX_BYTES: usize = 16 * 1024;

/// The deepest nesting the fast path reads (the Prosody publish is 8 deep).
pub const MAX_DEPTH: usize = 16;

/// The most attributes on one start tag the fast path reads.
pub const MAX_ATTRIBUTES: usize = 16;

/// The namespace of the `xml` prefix: not to be bound by `xmlns`.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// The namespace of namespace declarations: not to be bound by `xmlns`.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

/// What the fast path makes of the bytes at the start of a top-level child.
#[derive(Debug, PartialEq)]
pub enum Fast {
    /// A complete publish of that many bytes.
    Publish(PublishIq, usize),
    /// Everything so far is a publish in the subset, but the child goes on beyond the
    /// bytes given (and may still fit the limit).
    Incomplete,
    /// Not a publish, or not in the subset, or over the limit: the full parser's job.
    No,
}

/// Why reading stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Incomplete,
    No,
}

type Step<T> = Result<T, Stop>;

/// One element of the child, in document order.
struct Node<'a> {
    name: &'a str,
    /// Index into `Reader::namespaces`.
    ns: usize,
    /// Its attributes: `Reader::attrs[attrs.0..attrs.1]`.
    attrs: (usize, usize),
    /// One past the index of its last descendant in `Reader::nodes`.
    end: usize,
}

/// A value read from the input: borrowed unless a reference had to be replaced.
type Text<'a> = std::borrow::Cow<'a, str>;

struct Reader<'a> {
    /// The input, cut at the limit.
    s: &'a [u8],
    /// Whether the input went on beyond the limit (running out is then `No`).
    cut: bool,
    at: usize,
    nodes: Vec<Node<'a>>,
    attrs: Vec<(&'a str, Text<'a>)>,
    namespaces: Vec<Text<'a>>,
    /// Text segments and the node whose direct child each is.
    texts: Vec<(usize, Text<'a>)>,
}

/// Reads the top-level child at the start of `data` (its first byte is the child's `<`)
/// in a stream whose default namespace is `default_ns`, allowing it `limit` bytes.
pub fn read(data: &[u8], default_ns: &str, limit: usize) -> Fast {
    let limit = limit.min(MAX_BYTES);
    let cut = data.len() > limit;
    let mut r = Reader {
        s: &data[..data.len().min(limit)],
        cut,
        at: 0,
        nodes: Vec::with_capacity(24),
        attrs: Vec::with_capacity(32),
        namespaces: Vec::with_capacity(8),
        texts: Vec::with_capacity(32),
    };
    // The namespace the child inherits. Only the component namespace matters: an iq in
    // any other is not a publish for us.
    r.namespaces
        .push(Text::Borrowed(match default_ns == ns::COMPONENT {
            true => ns::COMPONENT,
            false => "",
        }));
    match r.child() {
        Ok(publish) => Fast::Publish(publish, r.at),
        Err(Stop::Incomplete) => Fast::Incomplete,
        Err(Stop::No) => Fast::No,
    }
}

/// The byte classes of names: 1 may start a name, 2 may only continue one.
const fn name_classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() || c == b'_' {
            1
        } else if c.is_ascii_digit() || c == b'.' || c == b'-' {
            2
        } else {
            0
        };
        b += 1;
    }
    t
}

const NAME: [u8; 256] = name_classes();

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl<'a> Reader<'a> {
    /// Running out of input: more may come, unless the limit cut it.
    fn end(&self) -> Stop {
        match self.cut {
            true => Stop::No,
            false => Stop::Incomplete,
        }
    }

    fn peek(&self) -> Step<u8> {
        self.s.get(self.at).copied().ok_or_else(|| self.end())
    }

    fn expect(&mut self, byte: u8) -> Step<()> {
        match self.peek()? {
            b if b == byte => {
                self.at += 1;
                Ok(())
            }
            _ => Err(Stop::No),
        }
    }

    /// Skips whitespace; returns whether there was any.
    fn space(&mut self) -> Step<bool> {
        let start = self.at;
        while is_space(self.peek()?) {
            self.at += 1;
        }
        Ok(self.at > start)
    }

    /// A name of the subset.
    fn name(&mut self) -> Step<&'a str> {
        let start = self.at;
        if NAME[usize::from(self.peek()?)] != 1 {
            return Err(Stop::No);
        }
        self.at += 1;
        while NAME[usize::from(self.peek()?)] != 0 {
            self.at += 1;
        }
        let name = &self.s[start..self.at];
        // ASCII by construction.
        let name = std::str::from_utf8(name).map_err(|_| Stop::No)?;
        if name.len() >= 3 && name[..3].eq_ignore_ascii_case("xml") && name != "xmlns" {
            return Err(Stop::No);
        }
        Ok(name)
    }

    /// Character data up to (not including) the next `stop` byte or `<`, references
    /// replaced; `in_attr` refuses what an attribute value must not hold.
    fn chars(&mut self, stop: u8, in_attr: bool) -> Step<Text<'a>> {
        let mut owned: Option<String> = None;
        let begin = self.at;
        let mut start = self.at;
        loop {
            // Plain bytes, most of them, in one pass; the others are looked at below.
            let rest = &self.s[self.at..];
            self.at += rest
                .iter()
                .position(|&b| b < 0x20 || matches!(b, b'<' | b'&' | b'>' | 0xef) || b == stop)
                .unwrap_or(rest.len());
            let b = match self.peek() {
                Ok(b) => b,
                Err(end) => return Err(self.partial(start, end)),
            };
            if b == stop || b == b'<' {
                break;
            }
            match b {
                b'&' => {
                    let piece = self.valid(start, self.at)?;
                    let out = owned.get_or_insert_with(String::new);
                    out.push_str(piece);
                    self.at += 1;
                    out.push(self.reference()?);
                    start = self.at;
                }
                b'\n' | b'\t' if !in_attr => self.at += 1,
                0..=0x1f => return Err(Stop::No),
                b'>' if !in_attr
                    && self.at >= begin + 2
                    && &self.s[self.at - 2..self.at] == b"]]" =>
                {
                    return Err(Stop::No)
                }
                0xef => {
                    // U+FFFE and U+FFFF (EF BF BE, EF BF BF) are not XML characters.
                    let next = self.s.get(self.at + 1..self.at + 3);
                    match next {
                        Some([0xbf, 0xbe | 0xbf]) => return Err(Stop::No),
                        Some(_) => self.at += 1,
                        None => return Err(self.partial(start, self.end())),
                    }
                }
                _ => self.at += 1,
            }
        }
        let piece = self.valid(start, self.at)?;
        Ok(match owned {
            Some(mut out) => {
                out.push_str(piece);
                Text::Owned(out)
            }
            None => Text::Borrowed(piece),
        })
    }

    /// Running out of input inside character data from `start`: `No` at once if what
    /// came so far is not UTF-8, as the full parser would say at once too.
    fn partial(&self, start: usize, end: Stop) -> Stop {
        match std::str::from_utf8(&self.s[start..self.at]) {
            Ok(_) => end,
            Err(e) if e.error_len().is_none() => end,
            Err(_) => Stop::No,
        }
    }

    /// The bytes `start..end` as UTF-8 (they end before an ASCII delimiter, so a
    /// character is never cut).
    fn valid(&self, start: usize, end: usize) -> Step<&'a str> {
        std::str::from_utf8(&self.s[start..end]).map_err(|_| Stop::No)
    }

    /// A reference after its `&`: one of the five predefined entities. Running out of
    /// input is `Incomplete` only while what came is the beginning of one of them (so
    /// that what the full parser would refuse at once is refused at once here too).
    fn reference(&mut self) -> Step<char> {
        const ENTITIES: [(&[u8], char); 5] = [
            (b"lt;", '<'),
            (b"gt;", '>'),
            (b"amp;", '&'),
            (b"apos;", '\''),
            (b"quot;", '"'),
        ];
        let start = self.at;
        loop {
            let read = &self.s[start..self.at];
            if let Some((_, c)) = ENTITIES.iter().find(|(name, _)| *name == read) {
                return Ok(*c);
            }
            if !ENTITIES.iter().any(|(name, _)| name.starts_with(read)) {
                return Err(Stop::No);
            }
            self.peek()?;
            self.at += 1;
        }
    }

    /// A start tag after its `<`: the node, and whether it was empty (`/>`).
    fn start_tag(&mut self, parent_ns: usize) -> Step<(usize, bool)> {
        let name = self.name()?;
        let first = self.attrs.len();
        let mut ns = parent_ns;
        let empty = loop {
            let spaced = self.space()?;
            match self.peek()? {
                b'>' => {
                    self.at += 1;
                    break false;
                }
                b'/' => {
                    self.at += 1;
                    self.expect(b'>')?;
                    break true;
                }
                _ if !spaced => return Err(Stop::No),
                _ => {}
            }
            let attr = self.name()?;
            self.space()?;
            self.expect(b'=')?;
            self.space()?;
            let quote = self.peek()?;
            if quote != b'\'' && quote != b'"' {
                return Err(Stop::No);
            }
            self.at += 1;
            let value = self.chars(quote, true)?;
            self.expect(quote)?;
            if self.attrs.len() - first >= MAX_ATTRIBUTES
                || self.attrs[first..].iter().any(|(n, _)| *n == attr)
            {
                return Err(Stop::No);
            }
            if attr == "xmlns" {
                if value.is_empty() || value == XML_NS || value == XMLNS_NS {
                    return Err(Stop::No);
                }
                self.namespaces.push(value.clone());
                ns = self.namespaces.len() - 1;
            }
            self.attrs.push((attr, value));
        };
        self.nodes.push(Node {
            name,
            ns,
            attrs: (first, self.attrs.len()),
            end: 0,
        });
        let index = self.nodes.len() - 1;
        if empty {
            self.nodes[index].end = index + 1;
        }
        Ok((index, empty))
    }

    fn ns(&self, node: usize) -> &str {
        &self.namespaces[self.nodes[node].ns]
    }

    fn attr(&self, node: usize, name: &str) -> Option<&Text<'a>> {
        let (first, end) = self.nodes[node].attrs;
        self.attrs[first..end]
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    fn is(&self, node: usize, name: &str, ns: &str) -> bool {
        self.nodes[node].name == name && self.ns(node) == ns
    }

    /// The child elements of `node`, in order.
    fn children(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        let end = self.nodes[node].end;
        let mut next = node + 1;
        std::iter::from_fn(move || {
            let child = next;
            (child < end).then(|| {
                next = self.nodes[child].end;
                child
            })
        })
    }

    /// minidom's `get_child`: the first child element with that name and namespace.
    fn get_child(&self, node: usize, name: &str, ns: &str) -> Option<usize> {
        self.children(node).find(|&c| self.is(c, name, ns))
    }

    /// minidom's `text`: the node's own text segments, in order.
    fn text(&self, node: usize) -> String {
        self.texts
            .iter()
            .filter(|(owner, _)| *owner == node)
            .map(|(_, t)| t.as_ref())
            .collect()
    }

    /// `form::find_value`: the first non-empty trimmed value of field `var` of the first
    /// data form among `parent`'s children.
    fn find_value(&self, parent: usize, var: &str) -> Option<String> {
        let form = self.get_child(parent, "x", ns::DATA_FORMS)?;
        let field = self.children(form).find(|&f| {
            self.is(f, "field", ns::DATA_FORMS)
                && self.attr(f, "var").map(|v| v.as_ref()) == Some(var)
        })?;
        self.children(field)
            .filter(|&v| self.is(v, "value", ns::DATA_FORMS))
            .map(|v| self.text(v))
            .find_map(|v| {
                let t = v.trim();
                (!t.is_empty()).then(|| t.to_owned())
            })
    }

    /// The whole child; `Stop::No` as soon as it cannot be a publish of the subset.
    fn child(&mut self) -> Step<PublishIq> {
        self.expect(b'<')?;
        let (iq, empty) = self.start_tag(0)?;
        if empty
            || !self.is(iq, "iq", ns::COMPONENT)
            || self.attr(iq, "type").map(|t| t.as_ref()) != Some("set")
            || self.attr(iq, "id").is_none()
        {
            return Err(Stop::No);
        }
        let mut open = vec![iq];
        let mut payload = false;
        while let Some(&current) = open.last() {
            let text = self.chars(b'<', false)?;
            if !text.is_empty() {
                self.texts.push((current, text));
            }
            self.expect(b'<')?;
            match self.peek()? {
                b'/' => {
                    self.at += 1;
                    // Compared before anything after it is awaited: the full parser
                    // refuses a wrong end tag as soon as its name is complete.
                    if self.name()? != self.nodes[current].name {
                        return Err(Stop::No);
                    }
                    self.space()?;
                    self.expect(b'>')?;
                    open.pop();
                    self.nodes[current].end = self.nodes.len();
                }
                b'!' | b'?' => return Err(Stop::No),
                _ => {
                    if open.len() >= MAX_DEPTH {
                        return Err(Stop::No);
                    }
                    let parent_ns = self.nodes[current].ns;
                    let (node, empty) = self.start_tag(parent_ns)?;
                    if current == iq && !payload {
                        // The iq's first child element, its payload: a pubsub request.
                        payload = true;
                        if !self.is(node, "pubsub", ns::PUBSUB) {
                            return Err(Stop::No);
                        }
                    }
                    if !empty {
                        open.push(node);
                    }
                }
            }
        }
        let pubsub = self.children(iq).next().ok_or(Stop::No)?;
        let publish = self
            .get_child(pubsub, "publish", ns::PUBSUB)
            .ok_or(Stop::No)?;
        let node = self
            .attr(publish, "node")
            .filter(|n| !n.is_empty())
            .map(|n| n.to_string());
        let has_body = self
            .get_child(publish, "item", ns::PUBSUB)
            .and_then(|item| self.get_child(item, "notification", ns::PUSH))
            .and_then(|summary| self.find_value(summary, "last-message-body"))
            .is_some();
        let secret = self
            .get_child(pubsub, "publish-options", ns::PUBSUB)
            .and_then(|options| self.find_value(options, "secret"));
        let owned = |v: Option<&Text<'_>>| v.map(|v| v.to_string());
        Ok(PublishIq {
            id: owned(self.attr(iq, "id")).ok_or(Stop::No)?,
            from: owned(self.attr(iq, "from")),
            to: owned(self.attr(iq, "to")),
            publish: Publish {
                node,
                secret,
                has_body,
            },
        })
    }
}

/// Follows the bytes of a child held while it is incomplete, so that the fast path
/// reads it once, when its end has arrived, rather than again with every piece: just
/// enough of XML to tell tags from text and attribute values and count the depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extent {
    lex: Lex,
    depth: usize,
}

/// Where [`Extent`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lex {
    /// Text (or before the child's `<`).
    #[default]
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
}

/// What [`Extent::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    /// The child ends after this many bytes of the piece.
    End(usize),
    /// The child goes on after the piece.
    More,
    /// Something the fast path does not read (a comment, CDATA, a processing instruction
    /// or a broken tag): the full parser's job.
    Outside,
}

impl Extent {
    /// Follows the next piece of the child.
    pub fn scan(&mut self, piece: &[u8]) -> Scanned {
        let mut at = 0;
        while at < piece.len() {
            if self.lex == Lex::Content {
                match piece[at..].iter().position(|&b| b == b'<') {
                    Some(offset) => at += offset,
                    None => break,
                }
            }
            let byte = piece[at];
            at += 1;
            self.lex = match (self.lex, byte) {
                (Lex::Content, _) => Lex::Open,
                (Lex::Open, b'/') => Lex::EndTag,
                (Lex::Open, b'!' | b'?') => return Scanned::Outside,
                (Lex::Open, _) => Lex::StartTag,
                (Lex::StartTag, b'\'' | b'"') => Lex::Quoted(byte),
                (Lex::StartTag, b'/') => Lex::EmptyTag,
                (Lex::StartTag, b'>') => {
                    self.depth = self.depth.saturating_add(1);
                    Lex::Content
                }
                (Lex::StartTag, _) => Lex::StartTag,
                (Lex::Quoted(quote), _) if byte == quote => Lex::StartTag,
                (Lex::Quoted(quote), _) => Lex::Quoted(quote),
                (Lex::EmptyTag, b'>') if self.depth == 0 => return Scanned::End(at),
                (Lex::EmptyTag, b'>') => Lex::Content,
                (Lex::EmptyTag, _) => return Scanned::Outside,
                (Lex::EndTag, b'>') => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Scanned::End(at);
                    }
                    Lex::Content
                }
                (Lex::EndTag, _) => Lex::EndTag,
            };
        }
        Scanned::More
    }
}
