//! A stand-in for the user's XMPP server: a TcpListener on 127.0.0.1:0 that accepts the
//! component, checks its handshake with literal bytes, and exchanges stanzas with it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use minidom::Element;
use p2::xmpp::stream::{StreamEvent, StreamParser};

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
            parser: StreamParser::new(1 << 20),
            queue: Default::default(),
            raw: Vec::new(),
        };
        // The component's header, as raw text.
        let header = c.read_until(|raw| raw.contains("'>") || raw.contains("\">"));
        assert!(
            header.contains("<stream:stream")
                && header.contains("xmlns='jabber:component:accept'")
                && header.contains(&format!("to='{jid}'")),
            "unexpected component header: {header}"
        );
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
        assert_eq!(handshake.name(), "handshake");
        assert_eq!(handshake.text(), expected, "handshake digest");
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

    /// Whether the daemon opens another connection within `timeout` (it is accepted and
    /// dropped without a handshake).
    pub fn connects_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok(_) => {
                    self.accepted += 1;
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}

/// One accepted component connection.
pub struct Component {
    stream: TcpStream,
    parser: StreamParser,
    queue: std::collections::VecDeque<Element>,
    raw: Vec<u8>,
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
                for ev in self
                    .parser
                    .feed(&buf[..n])
                    .expect("daemon sent invalid XML")
                {
                    if let StreamEvent::Stanza(el) = ev {
                        self.queue.push_back(el);
                    }
                }
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => false,
        }
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
    pub fn recv(&mut self, timeout: Duration) -> Option<Element> {
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
    pub fn iq(&mut self, stanza: &str) -> Element {
        // Stanzas inherit the stream's default namespace; parse one as the stream would.
        let wrapped: Element = format!("<s xmlns='jabber:component:accept'>{stanza}</s>")
            .parse()
            .expect("test stanza parses");
        let el = wrapped
            .children()
            .next()
            .expect("test stanza is an element");
        let id = el.attr("id").expect("test stanza has an id").to_owned();
        self.send(stanza);
        self.reply(&id, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("no reply to iq {id}"))
    }

    /// Waits for the reply to `id`.
    pub fn reply(&mut self, id: &str, timeout: Duration) -> Option<Element> {
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

    /// Whether the daemon closes the connection within `timeout`.
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
                Ok(_) => continue,
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

/// The `type` of an IQ reply and, for an error, its error type and condition.
pub fn outcome(reply: &Element) -> String {
    match reply.attr("type") {
        Some("error") => {
            let error = reply
                .get_child("error", "jabber:component:accept")
                .expect("the <error/> is in the component namespace");
            let condition = error
                .children()
                .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
                .map(|c| c.name().to_owned())
                .unwrap_or_default();
            format!("error {} {}", error.attr("type").unwrap_or("?"), condition)
        }
        Some(t) => t.to_owned(),
        None => "?".into(),
    }
}

/// The `<text/>` of an error reply.
pub fn error_text(reply: &Element) -> Option<String> {
    reply
        .get_child("error", "jabber:component:accept")?
        .get_child("text", "urn:ietf:params:xml:ns:xmpp-stanzas")
        .map(|t| t.text())
}
