//! A stand-in for the user's XMPP server: a TcpListener on 127.0.0.1:0 that accepts the
//! component, checks its handshake with literal bytes, and exchanges stanzas with it.
//!
//! What the daemon sends is read without p2's code: a small splitter finds where each
//! top-level element ends, and roxmltree parses it (inside the stream's default
//! namespace). A bug shared by p2's parser and its renderer cannot hide here.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The server side of the component port.
pub struct FakeServer {
    listener: TcpListener,
    accepted: usize,
}

/// How the fake server answers the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `<handshake/>`.
    Accept,
    /// `<stream:error><not-authorized/></stream:error></stream:stream>`.
    NotAuthorized,
}

impl FakeServer {
    /// Listens on 127.0.0.1, an ephemeral port.
    pub fn bind() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake XMPP server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        FakeServer {
            listener,
            accepted: 0,
        }
    }

    /// The port to put in the daemon's config.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    /// Waits (bounded) for the daemon to connect and completes the XEP-0114 handshake:
    /// reads its stream header (addressed to `jid`), sends ours with a fresh stream id,
    /// checks `<handshake>` = hex SHA-1(id ++ secret), answers as told.
    pub fn accept(&mut self, jid: &str, secret: &str, answer: Answer) -> Component {
        self.accept_within(jid, secret, answer, Duration::from_secs(20))
    }

    /// As [`FakeServer::accept`], waiting up to `timeout` for the connection.
    pub fn accept_within(
        &mut self,
        jid: &str,
        secret: &str,
        answer: Answer,
        timeout: Duration,
    ) -> Component {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the daemon did not connect");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        self.accepted += 1;
        let mut c = Component {
            stream,
            queue: VecDeque::new(),
            raw: Vec::new(),
            at: 0,
            ended: false,
        };
        // The component's header, as raw text.
        let header = c.read_until(|raw| header_end(raw).is_some());
        assert!(
            header.starts_with("<?xml version='1.0'?><stream:stream ")
                && header.contains(" xmlns='jabber:component:accept'")
                && header.contains(" xmlns:stream='http://etherx.jabber.org/streams'")
                && header.contains(&format!(" to='{jid}'")),
            "unexpected component header: {header}"
        );
        c.at = header_end(&header).unwrap();
        c.split();
        let id = format!("sid-{}", self.accepted);
        c.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
             xml:lang='en' xmlns='jabber:component:accept' id='{id}' from='{jid}'>"
        ));
        let expected = {
            let mut sha = sha1_smol::Sha1::new();
            sha.update(id.as_bytes());
            sha.update(secret.as_bytes());
            sha.digest().to_string()
        };
        let handshake = c
            .recv(Duration::from_secs(10))
            .expect("no handshake from the daemon");
        assert_eq!(
            handshake.xml,
            format!("<handshake>{expected}</handshake>"),
            "handshake digest"
        );
        match answer {
            Answer::Accept => c.send("<handshake/>"),
            Answer::NotAuthorized => c.send(
                "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                 </stream:error></stream:stream>",
            ),
        }
        c
    }
}

impl FakeServer {
    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted
    }
}

/// One accepted component connection.
pub struct Component {
    stream: TcpStream,
    /// Complete stanzas not yet taken.
    queue: VecDeque<Stanza>,
    /// Everything the daemon sent on this connection.
    raw: Vec<u8>,
    /// Where the next top-level element starts in `raw`.
    at: usize,
    /// Whether the daemon closed its stream (`</stream:stream>`).
    ended: bool,
}

impl Component {
    /// Writes literal bytes.
    pub fn send(&mut self, text: &str) {
        self.stream
            .write_all(text.as_bytes())
            .expect("write to daemon");
    }

    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 8192];
        match self.stream.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                self.split();
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => false,
        }
    }

    /// Moves every complete top-level element after `at` to the queue.
    fn split(&mut self) {
        if self.at == 0 {
            return; // the header is not read yet
        }
        loop {
            let rest = &self.raw[self.at..];
            let start = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
            let rest = &rest[start..];
            if rest.starts_with(b"</") {
                let end = rest.iter().position(|&b| b == b'>');
                let Some(end) = end else { return };
                assert_eq!(&rest[..=end], b"</stream:stream>", "a stray end tag");
                self.ended = true;
                self.at += start + end + 1;
                continue;
            }
            let Some(len) = element_len(rest) else { return };
            let xml = std::str::from_utf8(&rest[..len])
                .expect("the daemon sent UTF-8")
                .to_owned();
            self.queue.push_back(Stanza::parse(xml));
            self.at += start + len;
        }
    }

    /// Whether the daemon has closed its stream with `</stream:stream>`.
    pub fn stream_ended(&self) -> bool {
        self.ended
    }

    fn read_until(&mut self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = String::from_utf8_lossy(&self.raw).into_owned();
            if done(&text) {
                return text;
            }
            assert!(self.fill(deadline), "timed out; got {text:?}");
        }
    }

    /// The next stanza from the daemon, within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Stanza> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(el) = self.queue.pop_front() {
                return Some(el);
            }
            if !self.fill(deadline) {
                return self.queue.pop_front();
            }
        }
    }

    /// Sends an IQ and returns the reply with its id (replies to other ids are kept
    /// out of the way; the daemon's own keepalive pings are skipped).
    pub fn iq(&mut self, stanza: &str) -> Stanza {
        let id = id_of(stanza);
        self.send(stanza);
        self.reply(&id, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("no reply to iq {id}"))
    }

    /// Waits for the reply to `id`.
    pub fn reply(&mut self, id: &str, timeout: Duration) -> Option<Stanza> {
        let deadline = Instant::now() + timeout;
        let mut others = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(el) if el.attr("id") == Some(id) => break Some(el),
                Some(el) => others.push(el),
                None => break None,
            }
        };
        for el in others.into_iter().rev() {
            self.queue.push_front(el);
        }
        found
    }

    /// Whether the daemon closes the connection within `timeout` (what it sends
    /// meanwhile is queued).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => {
                    self.raw.extend_from_slice(&buf[..n]);
                    self.split();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(_) => return true,
            }
        }
    }

    /// The socket itself, for a test that plays a misbehaving server.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Closes the stream and the socket, as a server going away.
    pub fn close(&mut self) {
        let _ = self.stream.write_all(b"</stream:stream>");
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The `id` of a stanza written by a test: the `id` attribute of its start tag (read
/// without parsing the rest, which a test may make malformed on purpose).
pub fn id_of(stanza: &str) -> String {
    let stanza = stanza.trim_start();
    let tag = &stanza[..tag_end(stanza.as_bytes()).expect("a start tag")];
    let value = |quote: char| {
        let start = tag.find(&format!(" id={quote}"))? + 5;
        let len = tag[start..].find(quote)?;
        Some(tag[start..start + len].to_owned())
    };
    value('\'')
        .or_else(|| value('"'))
        .expect("the stanza has an id")
}

/// Where the component's stream header ends in `raw` (after its `>`), if it has.
fn header_end(raw: &str) -> Option<usize> {
    let start = raw.find("<stream:stream")?;
    tag_end(&raw.as_bytes()[start..]).map(|end| start + end)
}

/// The length of the tag at the start of `bytes` (up to and with its `>`), quotes
/// respected, if it is complete.
fn tag_end(bytes: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'\'' | b'"') => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b'>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The length of the element at the start of `bytes`, if it is complete: start and end
/// tags counted, text skipped. (No comments, CDATA or processing instructions: p2 writes
/// none, and roxmltree would refuse a stanza cut wrongly.)
fn element_len(bytes: &[u8]) -> Option<usize> {
    assert!(
        bytes.is_empty() || bytes[0] == b'<',
        "text between stanzas: {:?}",
        String::from_utf8_lossy(bytes)
    );
    let mut depth = 0usize;
    let mut i = 0;
    loop {
        i += bytes[i..].iter().position(|&b| b == b'<')?;
        let len = tag_end(&bytes[i..])?;
        let tag = &bytes[i..i + len];
        if tag.starts_with(b"</") {
            depth -= 1;
        } else if !tag.ends_with(b"/>") {
            depth += 1;
        }
        i += len;
        if depth == 0 {
            return Some(i);
        }
    }
}

/// One element as the daemon wrote it, and its tree as roxmltree reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stanza {
    /// The raw text.
    pub xml: String,
    /// The parsed element.
    pub root: Node,
}

/// An element: namespace, name, attributes, text, children.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    /// The text directly inside it.
    pub text: String,
    pub children: Vec<Node>,
}

impl Stanza {
    /// Parses one element written on the component stream: its default namespace is
    /// `jabber:component:accept`, `stream` the streams prefix.
    pub fn parse(xml: String) -> Stanza {
        let wrapped = format!(
            "<stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams'>{xml}</stream:stream>"
        );
        let doc = roxmltree::Document::parse(&wrapped)
            .unwrap_or_else(|e| panic!("not well-formed ({e}): {xml}"));
        let mut elements = doc.root_element().children().filter(|n| n.is_element());
        let root = Node::from(elements.next().expect("an element"));
        assert!(elements.next().is_none(), "more than one element: {xml}");
        Stanza { xml, root }
    }
}

impl std::ops::Deref for Stanza {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.root
    }
}

impl From<roxmltree::Node<'_, '_>> for Node {
    fn from(n: roxmltree::Node<'_, '_>) -> Node {
        Node {
            ns: n.tag_name().namespace().unwrap_or("").to_owned(),
            name: n.tag_name().name().to_owned(),
            attrs: n
                .attributes()
                .map(|a| (a.name().to_owned(), a.value().to_owned()))
                .collect(),
            text: n
                .children()
                .filter(|c| c.is_text())
                .filter_map(|c| c.text())
                .collect(),
            children: n
                .children()
                .filter(|c| c.is_element())
                .map(Node::from)
                .collect(),
        }
    }
}

impl Node {
    /// The value of attribute `name` (without a namespace).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child named `name` in `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name && c.ns == ns)
    }

    /// Whether it is `name` in `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// Itself and every element below it, depth first.
    pub fn descendants(&self) -> Vec<&Node> {
        let mut out = vec![self];
        for c in &self.children {
            out.extend(c.descendants());
        }
        out
    }

    /// The `<value/>` of the data-form field `var` anywhere below.
    pub fn form_value(&self, var: &str) -> Option<&str> {
        self.descendants()
            .into_iter()
            .find(|n| n.is("field", "jabber:x:data") && n.attr("var") == Some(var))?
            .get_child("value", "jabber:x:data")
            .map(|v| v.text.as_str())
    }
}

/// The `type` of an IQ reply and, for an error, its error type and condition.
pub fn outcome(reply: &Node) -> String {
    match reply.attr("type") {
        Some("error") => {
            let error = reply
                .get_child("error", "jabber:component:accept")
                .expect("the <error/> is in the component namespace");
            let condition = error
                .children
                .iter()
                .find(|c| c.ns == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name != "text")
                .map(|c| c.name.clone())
                .unwrap_or_default();
            format!("error {} {}", error.attr("type").unwrap_or("?"), condition)
        }
        Some(t) => t.to_owned(),
        None => "?".into(),
    }
}

/// The `<text/>` of an error reply.
pub fn error_text(reply: &Node) -> Option<String> {
    reply
        .get_child("error", "jabber:component:accept")?
        .get_child("text", "urn:ietf:params:xml:ns:xmpp-stanzas")
        .map(|t| t.text.clone())
}
