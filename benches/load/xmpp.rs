//! The user's XMPP server as the load generator plays it: accepts the component on a
//! loopback port, checks its XEP-0114 handshake, then drives registrations and publishes
//! with a bounded number in flight and checks every reply.
//!
//! Replies are framed and read with a small byte scanner (`id`, `type`, `from`, `to` of
//! each top-level element) rather than a full XML parser, so that the generator costs
//! far less CPU per push than the daemon it measures.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The component JID the daemon is configured with.
pub const JID: &str = "push.localhost";
/// The component password.
pub const SECRET: &str = "bench-component-secret";
/// The domain of the accounts, and the `from` of every publish.
pub const DOMAIN: &str = "bench.example";

/// How often the loops look at the clock and at the daemon while waiting for bytes.
const TICK: Duration = Duration::from_millis(100);

/// Why a phase stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The global timeout passed.
    Timeout,
    /// The daemon exited, closed the stream or sent something unreadable.
    Broken(String),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Timeout => f.write_str("the global timeout passed"),
            Stop::Broken(why) => f.write_str(why),
        }
    }
}

/// Checked between reads: `Err` when the daemon is gone.
pub type Alive<'a> = &'a mut dyn FnMut() -> Result<(), String>;

/// The position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut at = 0;
    while let Some(i) = hay[at..=hay.len() - needle.len()]
        .iter()
        .position(|&b| b == first)
    {
        let i = at + i;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        at = i + 1;
    }
    None
}

/// One framed top-level element: `buf[start..end]`, its start tag `buf[start..tag_end]`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    tag_end: usize,
    end: usize,
}

/// What the next bytes of the stream are.
enum Frame {
    /// Not enough bytes yet (whitespace before them may be skipped: `skip`).
    Incomplete { skip: usize },
    /// A complete element.
    Element(Span),
    /// `</stream:stream>`, ending at the offset given.
    Close,
    /// Not an XML stream we understand.
    Bad(String),
}

/// The end of the start tag beginning at `buf[0]` (just past `>`), quotes respected.
fn tag_end(buf: &[u8]) -> Option<usize> {
    let mut quote = 0u8;
    for (i, &b) in buf.iter().enumerate() {
        match (quote, b) {
            (0, b'\'' | b'"') => quote = b,
            (0, b'>') => return Some(i + 1),
            (q, b) if q != 0 && b == q => quote = 0,
            _ => {}
        }
    }
    None
}

/// Frames the next top-level element of `buf`.
fn frame(buf: &[u8]) -> Frame {
    let skip = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(buf.len());
    let rest = &buf[skip..];
    if rest.is_empty() {
        return Frame::Incomplete { skip };
    }
    if rest[0] != b'<' {
        let show = String::from_utf8_lossy(&rest[..rest.len().min(80)]).into_owned();
        return Frame::Bad(format!("text between stanzas: {show:?}"));
    }
    if rest.starts_with(b"</") {
        return if rest.len() < 16 {
            Frame::Incomplete { skip }
        } else if rest.starts_with(b"</stream:stream>") {
            Frame::Close
        } else {
            Frame::Bad("unexpected end tag".into())
        };
    }
    let Some(tag) = tag_end(rest) else {
        return Frame::Incomplete { skip };
    };
    let name_len = rest[1..tag]
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'/' || b == b'>')
        .unwrap_or(0);
    let name = &rest[1..1 + name_len];
    if rest[tag - 2] == b'/' {
        return Frame::Element(Span {
            start: skip,
            tag_end: skip + tag,
            end: skip + tag,
        });
    }
    let mut close = Vec::with_capacity(name.len() + 3);
    close.extend_from_slice(b"</");
    close.extend_from_slice(name);
    close.push(b'>');
    match find(&rest[tag..], &close) {
        Some(i) => Frame::Element(Span {
            start: skip,
            tag_end: skip + tag,
            end: skip + tag + i + close.len(),
        }),
        None => Frame::Incomplete { skip },
    }
}

/// The name of the element whose start tag is `tag`.
fn name(tag: &[u8]) -> &[u8] {
    let n = tag[1..]
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'/' || b == b'>')
        .unwrap_or(tag.len() - 1);
    &tag[1..1 + n]
}

/// The raw (still escaped) value of attribute `attr` in start tag `tag`.
fn attr<'a>(tag: &'a [u8], attr: &[u8]) -> Option<&'a [u8]> {
    let mut at = 1 + name(tag).len();
    loop {
        while at < tag.len() && tag[at].is_ascii_whitespace() {
            at += 1;
        }
        let eq = at + tag[at..].iter().position(|&b| b == b'=')?;
        let key = tag[at..eq].trim_ascii();
        let quote = *tag.get(eq + 1)?;
        if quote != b'\'' && quote != b'"' {
            return None;
        }
        let vstart = eq + 2;
        let vend = vstart + tag[vstart..].iter().position(|&b| b == quote)?;
        if key == attr {
            return Some(&tag[vstart..vend]);
        }
        at = vend + 1;
    }
}

/// XML character data with the five predefined entities and numeric references decoded.
fn unescape(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if !text.contains('&') {
        return text.into_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = &*text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "apos" => Some('\''),
            "quot" => Some('"'),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text of the `<value>` of data-form field `var` inside `element`.
fn field_value(element: &[u8], var: &str) -> Option<String> {
    let at = find(element, format!("var='{var}'").as_bytes())
        .or_else(|| find(element, format!("var=\"{var}\"").as_bytes()))?;
    let rest = &element[at..];
    let field_end = find(rest, b"</field>").unwrap_or(rest.len());
    let rest = &rest[..field_end];
    let v = find(rest, b"<value>")? + 7;
    let e = v + find(&rest[v..], b"</value>")?;
    Some(unescape(&rest[v..e]))
}

/// `type`, condition and text of the `<error/>` in an error reply, for counting.
fn error_summary(element: &[u8]) -> String {
    let Some(at) = find(element, b"<error") else {
        return "error without <error/>".into();
    };
    let rest = &element[at..];
    let tag = &rest[..tag_end(rest).unwrap_or(rest.len())];
    let kind = attr(tag, b"type").map(String::from_utf8_lossy);
    let after = &rest[tag.len()..];
    let condition = after
        .strip_prefix(b"<")
        .map(|c| String::from_utf8_lossy(name(&after[..c.len() + 1])).into_owned());
    let text = find(after, b"<text").and_then(|t| {
        let t = &after[t..];
        let s = tag_end(t)?;
        let e = find(&t[s..], b"</text>")?;
        Some(unescape(&t[s..s + e]))
    });
    format!(
        "{} {}{}",
        kind.as_deref().unwrap_or("?"),
        condition.as_deref().unwrap_or("?"),
        text.map(|t| format!(": {t}")).unwrap_or_default()
    )
}

/// Wrong, missing and unexpected answers, counted by kind.
#[derive(Debug, Default, Clone)]
pub struct Errors {
    /// Replies that were not the expected success, by a short description.
    pub wrong: BTreeMap<String, u64>,
    /// Requests sent and never answered.
    pub missing: u64,
    /// A second reply to the same id.
    pub duplicate: u64,
    /// Stanzas that answer nothing we sent (unknown id, not an IQ…).
    pub unexpected: u64,
    /// A few offending stanzas, verbatim (shortened).
    pub samples: Vec<String>,
}

impl Errors {
    /// Wrong replies in all.
    pub fn wrong_total(&self) -> u64 {
        self.wrong.values().sum()
    }

    /// Every counted problem.
    pub fn total(&self) -> u64 {
        self.wrong_total() + self.missing + self.duplicate + self.unexpected
    }

    fn wrong(&mut self, kind: String, stanza: &[u8]) {
        *self.wrong.entry(kind).or_insert(0) += 1;
        self.sample(stanza);
    }

    fn sample(&mut self, stanza: &[u8]) {
        if self.samples.len() < 5 {
            let text = String::from_utf8_lossy(&stanza[..stanza.len().min(400)]);
            self.samples.push(text.into_owned());
        }
    }
}

/// The accepted component connection.
pub struct Conn {
    /// The run's deadline (writes time out there too).
    deadline: Instant,
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    /// IQ gets from the daemon (keepalive pings) answered.
    pub pings: u64,
}

/// Waits (until `deadline`) for the daemon to connect to `listener`.
pub fn accept(listener: &TcpListener, deadline: Instant, alive: Alive) -> Result<Conn, Stop> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Stop::Broken(format!("listener: {e}")))?;
    let mut last_check = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(Stop::Timeout);
                }
                if last_check.elapsed() >= TICK {
                    alive().map_err(Stop::Broken)?;
                    last_check = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(Stop::Broken(format!("accept: {e}"))),
        }
    };
    let setup = |e: io::Error| Stop::Broken(format!("component socket: {e}"));
    stream.set_nonblocking(false).map_err(setup)?;
    stream.set_nodelay(true).map_err(setup)?;
    stream.set_read_timeout(Some(TICK)).map_err(setup)?;
    // A daemon that stops reading must not hold the generator past the deadline.
    let left = deadline.saturating_duration_since(Instant::now());
    stream
        .set_write_timeout(Some(left.max(Duration::from_millis(1))))
        .map_err(setup)?;
    Ok(Conn {
        deadline,
        stream,
        buf: Vec::with_capacity(256 * 1024),
        pos: 0,
        pings: 0,
    })
}

impl Conn {
    /// Reads what the socket has (waiting at most one tick); `Ok(false)` when nothing came.
    fn read_some(&mut self) -> Result<bool, Stop> {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 64 * 1024, 0);
        let r = self.stream.read(&mut self.buf[len..]);
        self.buf.truncate(len + *r.as_ref().unwrap_or(&0));
        match r {
            Ok(0) => Err(Stop::Broken("the daemon closed the connection".into())),
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(Stop::Broken(format!("read from the daemon: {e}"))),
        }
    }

    /// The next complete element in the buffer, consumed.
    fn next_element(&mut self) -> Result<Option<Span>, Stop> {
        match frame(&self.buf[self.pos..]) {
            Frame::Incomplete { skip } => {
                self.pos += skip;
                Ok(None)
            }
            Frame::Element(s) => {
                let span = Span {
                    start: self.pos + s.start,
                    tag_end: self.pos + s.tag_end,
                    end: self.pos + s.end,
                };
                self.pos = span.end;
                Ok(Some(span))
            }
            Frame::Close => Err(Stop::Broken("the daemon closed its stream".into())),
            Frame::Bad(why) => Err(Stop::Broken(format!("unreadable stream: {why}"))),
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.stream.write_all(bytes).map_err(|e| {
            if Instant::now() >= self.deadline {
                Stop::Timeout
            } else {
                Stop::Broken(format!("write to the daemon: {e}"))
            }
        })
    }

    /// XEP-0114 from the server side: reads the component's stream header (it must be
    /// `jabber:component:accept` addressed to [`JID`]), answers with a header carrying a
    /// stream id, checks `<handshake>` = hex SHA-1(id ++ [`SECRET`]) and accepts it.
    pub fn handshake(&mut self, deadline: Instant, alive: Alive) -> Result<(), Stop> {
        let bad = |why: String| Stop::Broken(format!("handshake: {why}"));
        let header_end = loop {
            let text = &self.buf[self.pos..];
            if let Some(at) = find(text, b"<stream:stream") {
                if let Some(end) = tag_end(&text[at..]) {
                    break self.pos + at + end;
                }
            }
            self.wait(deadline, alive)?;
        };
        let header = String::from_utf8_lossy(&self.buf[self.pos..header_end]).into_owned();
        let has = |a: &str, v: &str| {
            header.contains(&format!("{a}='{v}'")) || header.contains(&format!("{a}=\"{v}\""))
        };
        if !has("xmlns", "jabber:component:accept") || !has("to", JID) {
            return Err(bad(format!("unexpected stream header {header:?}")));
        }
        self.pos = header_end;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| bad(format!("random: {e}")))?;
        let id: String = random.iter().map(|b| format!("{b:02x}")).collect();
        self.send(
            format!(
                "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
                 xmlns='jabber:component:accept' id='{id}' from='{JID}'>"
            )
            .as_bytes(),
        )?;
        let span = loop {
            if let Some(span) = self.next_element()? {
                break span;
            }
            self.wait(deadline, alive)?;
        };
        let tag = &self.buf[span.start..span.tag_end];
        if name(tag) != b"handshake" {
            return Err(bad(format!(
                "expected <handshake>, got {:?}",
                String::from_utf8_lossy(&self.buf[span.start..span.end])
            )));
        }
        let digest = String::from_utf8_lossy(&self.buf[span.tag_end..span.end])
            .trim_end_matches("</handshake>")
            .trim()
            .to_owned();
        let mut sha = sha1_smol::Sha1::new();
        sha.update(id.as_bytes());
        sha.update(SECRET.as_bytes());
        let expected = sha.digest().to_string();
        if digest != expected {
            return Err(bad(format!("digest {digest:?}, expected {expected:?}")));
        }
        self.send(b"<handshake/>")
    }

    /// Waits one read for more bytes, checking the deadline and the daemon.
    fn wait(&mut self, deadline: Instant, alive: Alive) -> Result<bool, Stop> {
        if Instant::now() >= deadline {
            return Err(Stop::Timeout);
        }
        let got = self.read_some()?;
        if !got {
            alive().map_err(Stop::Broken)?;
        }
        Ok(got)
    }

    /// Answers an IQ get from the daemon (its keepalive ping) with an empty result.
    fn answer_get(&mut self, tag: &[u8], out: &mut Vec<u8>) {
        let id = attr(tag, b"id").unwrap_or_default();
        let from = attr(tag, b"from").unwrap_or(JID.as_bytes());
        let to = attr(tag, b"to").unwrap_or(b"localhost");
        out.extend_from_slice(b"<iq type='result' id='");
        out.extend_from_slice(id);
        out.extend_from_slice(b"' from='");
        out.extend_from_slice(to);
        out.extend_from_slice(b"' to='");
        out.extend_from_slice(from);
        out.extend_from_slice(b"'/>");
        self.pings += 1;
    }
}

/// What a registration got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The pubsub node.
    pub node: String,
    /// The publish secret.
    pub secret: String,
}

/// The registration phase's figures.
#[derive(Debug, Default, Clone)]
pub struct RegisterResult {
    /// Registrations asked for.
    pub asked: u64,
    /// Completed with a node and secret.
    pub ok: u64,
    /// From the first request to the last reply.
    pub elapsed: Duration,
    /// What went wrong.
    pub errors: Errors,
    /// Why it stopped early, if it did.
    pub stopped: Option<Stop>,
}

/// A realistic FCM token (about 160 characters), distinct per `k`.
fn fcm_token(k: u64) -> String {
    format!(
        "b{k:010}:APA91bHPRgkFLJu4VGMaJjmGvnYsTMgUVlVsh1r2Uk5vD9OeAkbVbNTpUvYgX3YmyE7tBKuBfF8pZ\
         9xjRWb7wcGmMsFUnvWiPTJyErp8qn54eE2QH1dPHQDRtx4qVdM_0sXNlFmo3LqeLXGrAyYqTnR"
    )
}

/// PROTOCOL.md §4: the registration Conversations sends, for account `user{k}`.
fn register_stanza(k: u64, out: &mut Vec<u8>) {
    // A distinct android-id per device: 16 hex digits, as Android makes them.
    let android_id = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995_0000_0000;
    let _ = write!(
        out,
        "<iq type='set' from='user{k}@{DOMAIN}/r' to='{JID}' id='r{k}'>\
         <command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' action='execute'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='token'><value>{}</value></field>\
         <field var='android-id'><value>{android_id:016x}</value></field>\
         </x></command></iq>",
        fcm_token(k)
    );
}

/// Checks one registration reply; the node and secret on success.
fn check_registration(element: &[u8], tag: &[u8]) -> Result<Registered, String> {
    let kind = attr(tag, b"type").unwrap_or_default();
    if kind != b"result" {
        return Err(if kind == b"error" {
            error_summary(element)
        } else {
            format!("type {:?}", String::from_utf8_lossy(kind))
        });
    }
    if find(element, b"status='completed'").is_none()
        && find(element, b"status=\"completed\"").is_none()
    {
        return Err("result without status='completed'".into());
    }
    if field_value(element, "jid").as_deref() != Some(JID) {
        return Err("result whose jid field is not the component".into());
    }
    let node = field_value(element, "node").ok_or("result without a node")?;
    let secret = field_value(element, "secret").ok_or("result without a secret")?;
    if node.len() != 12 || secret.len() != 24 {
        return Err(format!(
            "node of {} and secret of {} characters (expected 12 and 24)",
            node.len(),
            secret.len()
        ));
    }
    Ok(Registered { node, secret })
}

/// Registers accounts `user0` … `user{n-1}` with at most `window` requests in flight.
pub fn register(
    conn: &mut Conn,
    n: u64,
    window: u64,
    deadline: Instant,
    alive: Alive,
) -> (Vec<Option<Registered>>, RegisterResult) {
    let mut got: Vec<Option<Registered>> = vec![None; n as usize];
    let mut answered = vec![false; n as usize];
    let mut res = RegisterResult {
        asked: n,
        ..Default::default()
    };
    let started = Instant::now();
    let mut sent = 0u64;
    let mut replies = 0u64;
    let mut out = Vec::with_capacity(64 * 1024);
    let window = window.max(1);
    let mut last_progress = Instant::now();
    let grace = Duration::from_secs(30);
    while replies < n {
        while sent < n && sent - replies < window {
            register_stanza(sent, &mut out);
            sent += 1;
        }
        if !out.is_empty() {
            if let Err(stop) = conn.send(&out) {
                res.stopped = Some(stop);
                break;
            }
            out.clear();
        }
        match conn.wait(deadline, alive) {
            Ok(true) => {}
            Ok(false) => {
                if last_progress.elapsed() > grace {
                    break;
                }
                continue;
            }
            Err(stop) => {
                res.stopped = Some(stop);
                break;
            }
        }
        loop {
            let span = match conn.next_element() {
                Ok(Some(span)) => span,
                Ok(None) => break,
                Err(stop) => {
                    res.stopped = Some(stop);
                    break;
                }
            };
            let element = &conn.buf[span.start..span.end];
            let tag = &conn.buf[span.start..span.tag_end];
            if name(tag) != b"iq" {
                res.errors.unexpected += 1;
                res.errors.sample(element);
                continue;
            }
            if attr(tag, b"type") == Some(b"get") {
                let tag = tag.to_vec();
                conn.answer_get(&tag, &mut out);
                continue;
            }
            let k = attr(tag, b"id")
                .and_then(|id| id.strip_prefix(b"r"))
                .and_then(|k| std::str::from_utf8(k).ok()?.parse::<u64>().ok())
                .filter(|k| *k < sent);
            let Some(k) = k else {
                res.errors.unexpected += 1;
                res.errors.sample(element);
                continue;
            };
            if std::mem::replace(&mut answered[k as usize], true) {
                res.errors.duplicate += 1;
                res.errors.sample(element);
                continue;
            }
            replies += 1;
            last_progress = Instant::now();
            match check_registration(element, tag) {
                Ok(r) => {
                    got[k as usize] = Some(r);
                    res.ok += 1;
                }
                Err(kind) => res.errors.wrong(format!("registration: {kind}"), element),
            }
        }
        if res.stopped.is_some() {
            break;
        }
    }
    res.elapsed = started.elapsed();
    res.errors.missing = sent - replies;
    (got, res)
}

/// Where a publish goes: a pubsub node and its secret.
pub trait Targets {
    /// Writes the node and secret of the target of push number `seq`.
    fn target(&self, seq: u64, node: &mut String, secret: &mut String);
}

/// PROTOCOL.md §5: the Prosody 0.12 publish, from [`DOMAIN`], with id `p{seq}`.
fn publish_stanza(seq: u64, node: &str, secret: &str, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "<iq from='{DOMAIN}' to='{JID}' type='set' id='p{seq}'>
 <pubsub xmlns='http://jabber.org/protocol/pubsub'>
  <publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'>
   <x xmlns='jabber:x:data' type='form'>
    <field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>
    <field type='text-single' var='message-count'><value>1</value></field>
    <field type='text-single' var='pending-subscription-count'/>
    <field type='jid-single' var='last-message-sender'/>
    <field type='text-single' var='last-message-body'><value>New Message!</value></field>
   </x></notification></item></publish>
  <publish-options><x xmlns='jabber:x:data' type='submit'>
    <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>
    <field var='secret'><value>{secret}</value></field></x></publish-options>
 </pubsub></iq>"
    );
}

/// The push phase's figures.
#[derive(Debug, Default, Clone)]
pub struct PushResult {
    /// Publishes asked for.
    pub asked: u64,
    /// Publishes sent.
    pub sent: u64,
    /// Replies received (right or wrong).
    pub answered: u64,
    /// `result` replies.
    pub ok: u64,
    /// From the first publish to the last reply.
    pub elapsed: Duration,
    /// Reply latency of every answered publish, microseconds, sorted.
    pub latencies_us: Vec<u32>,
    /// What went wrong.
    pub errors: Errors,
    /// Why it stopped early, if it did.
    pub stopped: Option<Stop>,
}

impl PushResult {
    /// The `p`-th percentile of the reply latency, milliseconds.
    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        let v = &self.latencies_us;
        if v.is_empty() {
            return None;
        }
        let i = ((v.len() as f64 * p / 100.0).ceil() as usize).clamp(1, v.len()) - 1;
        Some(f64::from(v[i]) / 1000.0)
    }
}

/// What the push loop asks of its caller every `every` answered publishes.
pub struct Checkpoints<'a> {
    /// How many answered publishes between two calls (0: never).
    pub every: u64,
    /// Called with the number answered so far.
    pub call: &'a mut dyn FnMut(u64),
}

/// How much to push, and for how long to wait.
pub struct Load {
    /// Publishes to send.
    pub pushes: u64,
    /// Most publishes unanswered at once.
    pub window: u64,
    /// Once all are sent, how long to wait without any reply before calling the rest
    /// missing.
    pub grace: Duration,
    /// When to give up altogether.
    pub deadline: Instant,
}

/// Sends `load.pushes` publishes to `targets` with at most `load.window` unanswered at
/// once, and checks that each is answered `result` with the right addresses.
pub fn push(
    conn: &mut Conn,
    targets: &dyn Targets,
    load: &Load,
    alive: Alive,
    checkpoints: Checkpoints,
) -> PushResult {
    let (m, grace, deadline) = (load.pushes, load.grace, load.deadline);
    const ANSWERED: u32 = u32::MAX;
    let mut res = PushResult {
        asked: m,
        ..Default::default()
    };
    // Send time of each publish in microseconds since `started`; ANSWERED once answered.
    let mut sent_at: Vec<u32> = Vec::with_capacity(m as usize);
    let mut latencies: Vec<u32> = Vec::with_capacity(m as usize);
    let mut out = Vec::with_capacity(2 * 1024 * 1024);
    let (mut node, mut secret) = (String::new(), String::new());
    let window = load.window.max(1);
    let started = Instant::now();
    let mut last_reply = Instant::now();
    let mut next_checkpoint = checkpoints.every;
    let us = |t: Instant| {
        t.duration_since(started)
            .as_micros()
            .min(u128::from(ANSWERED - 1)) as u32
    };
    while res.answered < m {
        if res.sent < m && res.sent - res.answered < window {
            let now = us(Instant::now());
            while res.sent < m && res.sent - res.answered < window {
                targets.target(res.sent, &mut node, &mut secret);
                publish_stanza(res.sent, &node, &secret, &mut out);
                sent_at.push(now);
                res.sent += 1;
            }
        }
        if !out.is_empty() {
            if let Err(stop) = conn.send(&out) {
                res.stopped = Some(stop);
                break;
            }
            out.clear();
        }
        match conn.wait(deadline, alive) {
            Ok(true) => {}
            Ok(false) => {
                if res.sent == m && last_reply.elapsed() > grace {
                    break;
                }
                continue;
            }
            Err(stop) => {
                res.stopped = Some(stop);
                break;
            }
        }
        let now = Instant::now();
        let now_us = us(now);
        loop {
            let span = match conn.next_element() {
                Ok(Some(span)) => span,
                Ok(None) => break,
                Err(stop) => {
                    res.stopped = Some(stop);
                    break;
                }
            };
            let element = &conn.buf[span.start..span.end];
            let tag = &conn.buf[span.start..span.tag_end];
            if name(tag) != b"iq" {
                res.errors.unexpected += 1;
                res.errors.sample(element);
                continue;
            }
            let kind = attr(tag, b"type").unwrap_or_default();
            if kind == b"get" {
                let tag = tag.to_vec();
                conn.answer_get(&tag, &mut out);
                continue;
            }
            let seq = attr(tag, b"id")
                .and_then(|id| id.strip_prefix(b"p"))
                .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok())
                .filter(|n| *n < res.sent);
            let Some(seq) = seq else {
                res.errors.unexpected += 1;
                res.errors.sample(element);
                continue;
            };
            let at = std::mem::replace(&mut sent_at[seq as usize], ANSWERED);
            if at == ANSWERED {
                res.errors.duplicate += 1;
                res.errors.sample(element);
                continue;
            }
            res.answered += 1;
            last_reply = now;
            latencies.push(now_us.saturating_sub(at));
            let addressed = attr(tag, b"from") == Some(JID.as_bytes())
                && attr(tag, b"to") == Some(DOMAIN.as_bytes());
            if kind == b"result" && addressed {
                res.ok += 1;
            } else {
                let what = if kind == b"error" {
                    error_summary(element)
                } else if kind == b"result" {
                    "result with wrong from/to".to_owned()
                } else {
                    format!("type {:?}", String::from_utf8_lossy(kind))
                };
                res.errors.wrong(what, element);
            }
            if checkpoints.every > 0 && res.answered >= next_checkpoint {
                next_checkpoint += checkpoints.every;
                (checkpoints.call)(res.answered);
            }
        }
        if res.stopped.is_some() {
            break;
        }
    }
    res.elapsed = started.elapsed();
    res.errors.missing = res.sent - res.answered;
    latencies.sort_unstable();
    res.latencies_us = latencies;
    res
}
