//! The component connection as a state machine without a socket.
//!
//! [`Machine`] holds what the connection is doing (waiting to connect, connecting,
//! handshaking, up, and whether a keepalive ping is out) and decides everything about
//! it; the socket code in [`super`] only carries out its [`Action`]s and reports what
//! happened as [`Input`]s. The time is always passed in, never read, and the jitter comes
//! from a seed, so the handshake deadline, dead-peer detection and backoff are tested by
//! moving a clock.
//!
//! ```text
//!   Waiting ──deadline──▶ Connecting ──Connected──▶ Handshake ──<handshake/>──▶ Up
//!      ▲                       │                        │                      │
//!      └──── backoff ◀─────────┴── failed, refused, ────┴── closed, dead, ─────┘
//!                                  20 s without answer      invalid XML
//! ```
//!
//! While up: after `idle` of silence one ping goes out (an IQ get from the component's
//! JID to itself: the server routes it back to us, the core answers it, and the answer
//! comes back too, so any bytes prove both directions without leaving the server); no
//! byte within `dead` after it and the connection is dropped. Each loss waits a backoff
//! before the next attempt: `min_backoff` doubling to `max_backoff`, times a jitter in
//! [0.75, 1.25), back to `min_backoff` after a connection that stayed up `max_backoff`.

use std::fmt;
use std::time::{Duration, Instant};

use crate::app::{Event, Gen, Oversized, Received};
use crate::xmpp::handshake;
use crate::xmpp::ns;
use crate::xmpp::stanza::escape;
use crate::xmpp::stream::{StreamEvent, StreamParser};

/// How long the server may take to answer our stream header and handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the machine needs to know of the link. Its `Debug` leaves the secret out.
#[derive(Clone)]
pub struct Settings {
    /// `host:port`, for the log and the status.
    pub peer: String,
    /// The component JID.
    pub jid: String,
    /// The shared secret.
    pub secret: String,
    /// Limit on one stanza's bytes (the parser's).
    pub max_stanza_bytes: usize,
    /// Silence after which a ping is sent.
    pub idle: Duration,
    /// Further silence after the ping before the connection is declared dead.
    pub dead: Duration,
    /// First reconnect delay, doubled up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest reconnect delay; a connection that stayed up this long resets the delay.
    pub max_backoff: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("peer", &self.peer)
            .field("jid", &self.jid)
            .field("max_stanza_bytes", &self.max_stanza_bytes)
            .field("idle", &self.idle)
            .field("dead", &self.dead)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

/// What happened, for the machine to decide on.
#[derive(Debug)]
pub enum Input<'a> {
    /// Only time passed: deadlines are checked (they are after every input too).
    Tick,
    /// The TCP connection asked for with [`Action::Connect`] is open.
    Connected,
    /// Connecting, reading or writing failed.
    Failed(std::io::Error),
    /// Bytes read from the server.
    Bytes(&'a [u8]),
    /// The server closed the TCP connection (a read returned nothing).
    Eof,
    /// The daemon is stopping.
    Stop,
}

/// What the socket code is to do, in order.
#[derive(Debug)]
pub enum Action {
    /// Open a TCP connection to the server and report [`Input::Connected`] or
    /// [`Input::Failed`].
    Connect,
    /// Write these bytes on the socket now (before the handshake completes, the writer
    /// thread does not have it); a failure is [`Input::Failed`].
    Write(String),
    /// The handshake succeeded: hand the socket's writing half to the writer thread as
    /// connection `Gen`.
    Attach(Gen),
    /// Send these bytes through the writer thread on that connection.
    Send(Gen, String),
    /// Hand this event to the core.
    Core(Event),
    /// That connection is gone for the writer thread.
    Detach(Gen),
    /// Shut the socket down and drop it.
    Close,
    /// Tell systemd (`STATUS=…`).
    Status(String),
}

/// Why a connection ended.
#[derive(Debug)]
pub enum End {
    /// Connecting, reading or writing failed.
    Io(std::io::Error),
    /// The server refused the handshake (its stream error).
    Refused(String),
    /// The server broke the protocol.
    Protocol(String),
    /// The server closed the stream or the connection.
    Closed,
    /// No byte within `dead` after a ping.
    Dead,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Io(e) => write!(f, "{e}"),
            End::Refused(why) => write!(f, "handshake rejected: {why}"),
            End::Protocol(why) => write!(f, "{why}"),
            End::Closed => f.write_str("the server closed the stream"),
            End::Dead => f.write_str("no answer from the server, connection presumed dead"),
        }
    }
}

enum State {
    /// Waiting until then to connect.
    Waiting { until: Instant },
    /// The socket code is connecting.
    Connecting,
    /// Our stream header is out; waiting for the server's, then for its answer to our
    /// handshake, until `deadline`.
    Handshake {
        deadline: Instant,
        parser: StreamParser,
    },
    /// Authenticated: stanzas flow.
    Up {
        since: Instant,
        last_rx: Instant,
        /// When the ping still unanswered went out.
        ping: Option<Instant>,
        parser: StreamParser,
    },
    /// Stopped: nothing more happens.
    Stopped,
}

/// The component connection's state and decisions. See the module documentation.
pub struct Machine {
    settings: Settings,
    state: State,
    /// The current connection's generation: one more for every connection attempt, so
    /// that 0 is never a live connection.
    gen: Gen,
    /// The base of the next reconnect delay.
    backoff: Duration,
    /// Pings sent, for their ids.
    pings: u64,
    /// xorshift64* state for the jitter.
    rng: u64,
}

impl Machine {
    /// A machine that connects at once, with `seed` for the jitter (any value).
    pub fn new(settings: Settings, seed: u64, now: Instant) -> Machine {
        Machine {
            backoff: settings.min_backoff,
            settings,
            state: State::Waiting { until: now },
            gen: 0,
            pings: 0,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// When the machine wants [`Input::Tick`] at the latest, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Waiting { until } => Some(*until),
            State::Connecting | State::Stopped => None,
            State::Handshake { deadline, .. } => Some(*deadline),
            State::Up {
                last_rx,
                ping: None,
                ..
            } => last_rx.checked_add(self.settings.idle),
            State::Up {
                ping: Some(sent), ..
            } => sent.checked_add(self.settings.dead),
        }
    }

    /// Whether it has stopped for good.
    pub fn stopped(&self) -> bool {
        matches!(self.state, State::Stopped)
    }

    /// Whether a socket is open (connected, handshaking or up).
    pub fn has_socket(&self) -> bool {
        matches!(self.state, State::Handshake { .. } | State::Up { .. })
    }

    /// Takes `input`, which happened at `now`, and returns what to do, in order.
    pub fn handle(&mut self, input: Input<'_>, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Tick => {}
            Input::Stop => {
                self.stop(&mut out);
                return out;
            }
            Input::Connected => {
                if let State::Connecting = self.state {
                    self.state = State::Handshake {
                        deadline: now + HANDSHAKE_TIMEOUT,
                        parser: StreamParser::new(self.settings.max_stanza_bytes),
                    };
                    out.push(Action::Write(handshake::stream_header(&self.settings.jid)));
                }
            }
            Input::Failed(e) => self.lose(End::Io(e), now, &mut out),
            Input::Eof => self.lose(End::Closed, now, &mut out),
            Input::Bytes(bytes) => self.bytes(bytes, now, &mut out),
        }
        self.tick(now, &mut out);
        out
    }

    /// Checks the deadline of the current state.
    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.deadline().is_none_or(|deadline| now < deadline) {
            return;
        }
        match &mut self.state {
            State::Waiting { .. } => {
                self.gen += 1;
                self.state = State::Connecting;
                out.push(Action::Connect);
            }
            State::Handshake { .. } => {
                let why = format!(
                    "no handshake answer within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                );
                self.lose(End::Protocol(why), now, out);
            }
            State::Up { ping: Some(_), .. } => self.lose(End::Dead, now, out),
            State::Up { ping, .. } => {
                *ping = Some(now);
                self.pings += 1;
                // To ourselves: it stays on our server (PROTOCOL.md §2).
                let jid = escape(&self.settings.jid);
                let text = format!(
                    "<iq type='get' id='keepalive-{}-{}' from='{jid}' to='{jid}'><ping xmlns='{}'/></iq>",
                    self.gen,
                    self.pings,
                    ns::PING,
                );
                out.push(Action::Send(self.gen, text));
            }
            State::Connecting | State::Stopped => {}
        }
    }

    /// Bytes from the server: into the parser, and what it completes to the core.
    fn bytes(&mut self, bytes: &[u8], now: Instant, out: &mut Vec<Action>) {
        let gen = self.gen;
        let parsed = match &mut self.state {
            State::Handshake { parser, .. } => parser.feed(bytes),
            State::Up {
                parser,
                last_rx,
                ping,
                ..
            } => {
                *last_rx = now;
                *ping = None;
                parser.feed(bytes)
            }
            _ => return,
        };
        let events = match parsed {
            Ok(events) => events,
            Err(e) => {
                let error = "<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>";
                out.push(match self.state {
                    State::Up { .. } => Action::Send(gen, error.to_owned()),
                    _ => Action::Write(error.to_owned()),
                });
                let why = format!("invalid XML from the server: {e}");
                return self.lose(End::Protocol(why), now, out);
            }
        };
        let mut stanzas = Vec::new();
        for event in events {
            let up = matches!(self.state, State::Up { .. });
            let end = match event {
                StreamEvent::Open { .. } if up => {
                    Some(End::Protocol("second stream header".into()))
                }
                StreamEvent::Open { id: None, .. } => {
                    Some(End::Protocol("stream header without an id".into()))
                }
                StreamEvent::Open { id: Some(id), .. } => {
                    out.push(Action::Write(handshake::handshake(
                        &id,
                        &self.settings.secret,
                    )));
                    None
                }
                StreamEvent::Stanza(el) if el.is("error", ns::STREAM) => {
                    let text = stream_error_text(&el);
                    Some(match up {
                        true => End::Protocol(format!("stream error: {text}")),
                        false => End::Refused(text),
                    })
                }
                StreamEvent::Stanza(el) if up => {
                    stanzas.push(Received::Element(el));
                    None
                }
                StreamEvent::Publish(publish) if up => {
                    stanzas.push(Received::Publish(publish));
                    None
                }
                StreamEvent::Publish(_) => Some(End::Protocol(
                    "unexpected <iq/> before the handshake".into(),
                )),
                StreamEvent::Stanza(el) if el.is("handshake", ns::COMPONENT) => {
                    self.up(now, out);
                    None
                }
                StreamEvent::Stanza(el) => Some(End::Protocol(format!(
                    "unexpected <{}/> before the handshake",
                    el.name()
                ))),
                StreamEvent::Oversized {
                    name,
                    id,
                    from,
                    to,
                    kind,
                    why,
                } if up => {
                    // In order: what came before it first.
                    if !stanzas.is_empty() {
                        out.push(Action::Core(Event::Stanzas(
                            gen,
                            std::mem::take(&mut stanzas),
                        )));
                    }
                    let report = Oversized {
                        name,
                        id,
                        from,
                        to,
                        kind,
                        limit: self.settings.max_stanza_bytes,
                        why,
                    };
                    out.push(Action::Core(Event::Oversized(gen, report)));
                    None
                }
                StreamEvent::Oversized { name, .. } => Some(End::Protocol(format!(
                    "unexpected <{name}/> before the handshake"
                ))),
                StreamEvent::Close => Some(End::Closed),
            };
            if let Some(end) = end {
                if !stanzas.is_empty() {
                    out.push(Action::Core(Event::Stanzas(gen, stanzas)));
                }
                return self.lose(end, now, out);
            }
        }
        if !stanzas.is_empty() {
            out.push(Action::Core(Event::Stanzas(gen, stanzas)));
        }
    }

    /// The server accepted the handshake.
    fn up(&mut self, now: Instant, out: &mut Vec<Action>) {
        let State::Handshake { mut parser, .. } =
            std::mem::replace(&mut self.state, State::Stopped)
        else {
            unreachable!("called while handshaking");
        };
        // From now on publishes come typed, without a tree (see xmpp::fast).
        parser.read_publishes();
        self.state = State::Up {
            since: now,
            last_rx: now,
            ping: None,
            parser,
        };
        let Settings { peer, jid, .. } = &self.settings;
        log::info!("connected to {peer} as {jid}");
        out.push(Action::Attach(self.gen));
        out.push(Action::Core(Event::Connected(self.gen)));
        out.push(Action::Status(format!(
            "STATUS=connected to {peer} as {jid}"
        )));
    }

    /// The connection (or the attempt) is lost: tell who needs to know and wait before
    /// the next one.
    fn lose(&mut self, end: End, now: Instant, out: &mut Vec<Action>) {
        let stayed_up = match self.state {
            State::Up { since, .. } => {
                out.push(Action::Detach(self.gen));
                out.push(Action::Core(Event::Disconnected(self.gen)));
                out.push(Action::Close);
                now.saturating_duration_since(since) >= self.settings.max_backoff
            }
            State::Handshake { .. } => {
                out.push(Action::Close);
                false
            }
            State::Connecting => false,
            State::Waiting { .. } | State::Stopped => return,
        };
        if stayed_up {
            self.backoff = self.settings.min_backoff;
        }
        let delay = self.backoff.mul_f64(self.jitter());
        self.backoff = self
            .backoff
            .saturating_mul(2)
            .min(self.settings.max_backoff);
        self.state = State::Waiting {
            until: now.checked_add(delay).unwrap_or(now),
        };
        let peer = &self.settings.peer;
        log::warn!(
            "connection to {peer} lost: {end}; reconnecting in {:.1} s",
            delay.as_secs_f64()
        );
        out.push(Action::Status(format!(
            "STATUS=disconnected from {peer} ({end}); reconnecting"
        )));
    }

    /// Stop: a connection that is up stays with the writer thread, which sends the
    /// replies of the pushes in flight and then closes the stream; one still handshaking
    /// is closed here.
    fn stop(&mut self, out: &mut Vec<Action>) {
        if let State::Handshake { .. } = self.state {
            out.push(Action::Write(handshake::STREAM_CLOSE.to_owned()));
            out.push(Action::Close);
        }
        self.state = State::Stopped;
    }

    /// A factor in [0.75, 1.25) for the backoff jitter.
    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // The top 53 bits as a fraction in [0, 1).
        0.75 + (r >> 11) as f64 / (1u64 << 53) as f64 * 0.5
    }
}

/// The text of a `<stream:error/>`: its condition and text, if any.
fn stream_error_text(el: &minidom::Element) -> String {
    let condition = el
        .children()
        .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
        .map_or("undefined-condition", |c| c.name());
    match el.get_child("text", ns::STREAM_ERRORS) {
        Some(t) => format!("{condition} ({})", t.text()),
        None => condition.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JID: &str = "push.example.net";

    fn settings() -> Settings {
        Settings {
            peer: "127.0.0.1:5347".into(),
            jid: JID.into(),
            secret: "123456".into(),
            max_stanza_bytes: 4096,
            idle: Duration::from_secs(60),
            dead: Duration::from_secs(30),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_settings_debug_leaves_the_secret_out() {
        let text = format!("{:?}", settings());
        assert!(!text.contains("123456"), "{text}");
        assert!(text.contains(JID), "{text}");
    }

    /// The server's stream header with the id of the protocol's test vector.
    const SERVER_HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='sid' from='push.example.net'>";

    /// One line per action, so that a sequence compares as text.
    fn describe(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Connect => "connect".to_owned(),
                Action::Write(text) => format!("write {text}"),
                Action::Attach(gen) => format!("attach {gen}"),
                Action::Send(gen, text) => format!("send {gen} {text}"),
                Action::Core(Event::Connected(gen)) => format!("core connected {gen}"),
                Action::Core(Event::Disconnected(gen)) => format!("core disconnected {gen}"),
                Action::Core(Event::Stanzas(gen, els)) => {
                    let names: Vec<String> = els
                        .iter()
                        .map(|e| e.id().unwrap_or("?").to_owned())
                        .collect();
                    format!("core stanzas {gen} {}", names.join(","))
                }
                Action::Core(Event::Oversized(gen, o)) => format!(
                    "core oversized {gen} {} {:?} limit {} ({})",
                    o.name, o.id, o.limit, o.why
                ),
                Action::Core(other) => format!("core {other:?}"),
                Action::Detach(gen) => format!("detach {gen}"),
                Action::Close => "close".to_owned(),
                Action::Status(text) => text.clone(),
            })
            .collect()
    }

    /// A machine connected and authenticated at `t0`, as connection 1.
    fn up(t0: Instant) -> Machine {
        let mut m = Machine::new(settings(), 7, t0);
        assert_eq!(describe(&m.handle(Input::Tick, t0)), ["connect"]);
        m.handle(Input::Connected, t0);
        m.handle(Input::Bytes(SERVER_HEADER), t0);
        let actions = describe(&m.handle(Input::Bytes(b"<handshake/>"), t0));
        assert_eq!(
            actions,
            [
                "attach 1",
                "core connected 1",
                "STATUS=connected to 127.0.0.1:5347 as push.example.net"
            ]
        );
        m
    }

    /// The delay the machine waits after a loss at `now`: its deadline from then.
    fn delay(m: &Machine, now: Instant) -> Duration {
        m.deadline().expect("waiting") - now
    }

    #[test]
    fn the_handshake_follows_xep_0114_with_the_protocol_vector() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings(), 7, t0);
        assert_eq!(describe(&m.handle(Input::Tick, t0)), ["connect"]);
        assert!(m.deadline().is_none(), "no timer while connecting");
        let actions = describe(&m.handle(Input::Connected, t0));
        assert_eq!(
            actions,
            [
                "write <?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
              xmlns:stream='http://etherx.jabber.org/streams' to='push.example.net'>"
            ]
        );
        // PROTOCOL.md §2: id `sid`, secret `123456`.
        let actions = describe(&m.handle(Input::Bytes(SERVER_HEADER), t0));
        assert_eq!(
            actions,
            ["write <handshake>9accec263ab84a43c6037ccf7cd48cb1d3f6df8e</handshake>"]
        );
        let actions = describe(&m.handle(Input::Bytes(b"<handshake/>"), t0));
        assert_eq!(actions[0], "attach 1");
        assert!(m.has_socket());
    }

    #[test]
    fn no_handshake_answer_within_20_s_drops_the_attempt() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings(), 7, t0);
        m.handle(Input::Tick, t0);
        m.handle(Input::Connected, t0);
        assert_eq!(m.deadline(), Some(t0 + 20 * SECOND));
        // Bytes that do not complete the handshake do not move the deadline.
        assert!(m.handle(Input::Bytes(SERVER_HEADER), t0 + 5 * SECOND).len() == 1);
        assert!(m.handle(Input::Bytes(b" "), t0 + 19 * SECOND).is_empty());
        assert!(m
            .handle(Input::Tick, t0 + 19_999 * SECOND / 1000)
            .is_empty());
        let actions = describe(&m.handle(Input::Bytes(b" "), t0 + 20 * SECOND));
        assert_eq!(
            actions,
            [
                "close",
                "STATUS=disconnected from 127.0.0.1:5347 (no handshake answer within 20 s); reconnecting"
            ]
        );
        assert!(!m.has_socket());
    }

    #[test]
    fn silence_sends_one_ping_to_ourselves_then_declares_the_peer_dead() {
        let t0 = Instant::now();
        let mut m = up(t0);
        assert_eq!(m.deadline(), Some(t0 + 60 * SECOND));
        assert!(m.handle(Input::Tick, t0 + 59 * SECOND).is_empty());
        let actions = describe(&m.handle(Input::Tick, t0 + 60 * SECOND));
        assert_eq!(
            actions,
            [
                "send 1 <iq type='get' id='keepalive-1-1' from='push.example.net' \
              to='push.example.net'><ping xmlns='urn:xmpp:ping'/></iq>"
            ]
        );
        // One ping per silence.
        assert!(m.handle(Input::Tick, t0 + 61 * SECOND).is_empty());
        assert_eq!(m.deadline(), Some(t0 + 90 * SECOND));
        assert!(m.handle(Input::Tick, t0 + 89 * SECOND).is_empty());
        let actions = describe(&m.handle(Input::Tick, t0 + 90 * SECOND));
        assert_eq!(
            actions,
            [
                "detach 1",
                "core disconnected 1",
                "close",
                "STATUS=disconnected from 127.0.0.1:5347 (no answer from the server, \
                 connection presumed dead); reconnecting"
            ]
        );
    }

    #[test]
    fn any_byte_answers_the_ping() {
        let t0 = Instant::now();
        let mut m = up(t0);
        m.handle(Input::Tick, t0 + 60 * SECOND);
        // A keepalive space 10 s after the ping: the link is alive, the silence restarts.
        assert!(m.handle(Input::Bytes(b" "), t0 + 70 * SECOND).is_empty());
        assert_eq!(m.deadline(), Some(t0 + 130 * SECOND));
        assert!(m.handle(Input::Tick, t0 + 100 * SECOND).is_empty());
        let actions = describe(&m.handle(Input::Tick, t0 + 130 * SECOND));
        assert!(actions[0].contains("id='keepalive-1-2'"), "{actions:?}");
    }

    #[test]
    fn backoff_doubles_from_1_s_to_60_s_with_jitter() {
        let t0 = Instant::now();
        let mut m = Machine::new(settings(), 11, t0);
        let mut now = t0;
        m.handle(Input::Tick, now);
        for base in [1, 2, 4, 8, 16, 32, 60, 60, 60] {
            let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
            m.handle(Input::Failed(refused), now);
            let d = delay(&m, now).as_secs_f64();
            let base = base as f64;
            assert!(
                (0.75 * base..1.25 * base).contains(&d),
                "{d} s for a base of {base} s"
            );
            // Nothing before the delay, a new attempt at it.
            assert!(m.handle(Input::Tick, now + delay(&m, now) / 2).is_empty());
            now += delay(&m, now);
            assert_eq!(describe(&m.handle(Input::Tick, now)), ["connect"]);
        }
    }

    #[test]
    fn a_connection_that_stayed_up_resets_the_backoff() {
        let t0 = Instant::now();
        let mut m = up(t0);
        // Up for 10 s only, twice: the backoff goes on doubling.
        let mut now = t0 + 10 * SECOND;
        m.handle(Input::Eof, now);
        assert!(delay(&m, now) < 2 * SECOND);
        for base in [2, 4] {
            now += delay(&m, now);
            m.handle(Input::Tick, now);
            m.handle(Input::Connected, now);
            m.handle(Input::Bytes(SERVER_HEADER), now);
            m.handle(Input::Bytes(b"<handshake/>"), now);
            now += 10 * SECOND;
            m.handle(Input::Eof, now);
            let d = delay(&m, now).as_secs_f64();
            assert!((0.75 * base as f64..1.25 * base as f64).contains(&d), "{d}");
        }
        // Up for 60 s (with traffic, so no keepalive ends it): back to 1 s.
        now += delay(&m, now);
        m.handle(Input::Tick, now);
        m.handle(Input::Connected, now);
        m.handle(Input::Bytes(SERVER_HEADER), now);
        m.handle(Input::Bytes(b"<handshake/>"), now);
        for _ in 0..6 {
            now += 10 * SECOND;
            m.handle(Input::Bytes(b" "), now);
        }
        m.handle(Input::Eof, now);
        let d = delay(&m, now).as_secs_f64();
        assert!((0.75..1.25).contains(&d), "{d}");
    }

    #[test]
    fn the_jitter_stays_within_a_quarter_and_spreads() {
        let (mut low, mut high) = (f64::MAX, f64::MIN);
        for seed in 0..50 {
            let mut m = Machine::new(settings(), seed, Instant::now());
            for _ in 0..100 {
                let j = m.jitter();
                assert!((0.75..1.25).contains(&j), "{j}");
                low = low.min(j);
                high = high.max(j);
            }
        }
        assert!(low < 0.76 && high > 1.24, "{low}..{high}");
    }

    #[test]
    fn stanzas_and_reports_reach_the_core_in_order_with_their_generation() {
        let t0 = Instant::now();
        let mut m = up(t0);
        let big = format!(
            "<iq type='set' id='big' from='a.example' to='{JID}'>{}</iq>",
            "<x/>".repeat(2000)
        );
        let input =
            format!("<iq type='get' id='a'/><iq type='get' id='b'/>{big}<iq type='get' id='c'/>");
        let actions = describe(&m.handle(Input::Bytes(input.as_bytes()), t0));
        assert_eq!(
            actions,
            [
                "core stanzas 1 a,b",
                "core oversized 1 iq Some(\"big\") limit 4096 (larger than 4096 bytes)",
                "core stanzas 1 c",
            ]
        );
    }

    #[test]
    fn refusals_and_broken_streams_end_the_connection() {
        let t0 = Instant::now();
        // A refused handshake.
        let mut m = Machine::new(settings(), 7, t0);
        m.handle(Input::Tick, t0);
        m.handle(Input::Connected, t0);
        m.handle(Input::Bytes(SERVER_HEADER), t0);
        let refusal = b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>";
        let actions = describe(&m.handle(Input::Bytes(refusal), t0));
        assert_eq!(actions[0], "close");
        assert!(
            actions[1].contains("(handshake rejected: not-authorized)"),
            "{actions:?}"
        );
        // Invalid XML once up: a stream error through the writer, then the loss.
        let mut m = up(t0);
        let actions = describe(&m.handle(Input::Bytes(b"<iq></message>"), t0));
        assert_eq!(actions[0], "send 1 <stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>");
        assert_eq!(actions[1..4], ["detach 1", "core disconnected 1", "close"]);
        // The server closing its stream; the next connection is generation 2.
        let mut m = up(t0);
        let actions = describe(&m.handle(Input::Bytes(b"</stream:stream>"), t0));
        assert_eq!(actions[..3], ["detach 1", "core disconnected 1", "close"]);
        let later = t0 + delay(&m, t0);
        m.handle(Input::Tick, later);
        m.handle(Input::Connected, later);
        m.handle(Input::Bytes(SERVER_HEADER), later);
        let actions = describe(&m.handle(Input::Bytes(b"<handshake/>"), later));
        assert_eq!(actions[..2], ["attach 2", "core connected 2"]);
    }

    #[test]
    fn a_stop_keeps_an_established_stream_for_the_writer_and_closes_a_handshake() {
        let t0 = Instant::now();
        let mut m = up(t0);
        assert!(m.handle(Input::Stop, t0).is_empty());
        assert!(m.stopped() && m.deadline().is_none());
        let mut m = Machine::new(settings(), 7, t0);
        m.handle(Input::Tick, t0);
        m.handle(Input::Connected, t0);
        let actions = describe(&m.handle(Input::Stop, t0));
        assert_eq!(actions, ["write </stream:stream>", "close"]);
        // Waiting: nothing to close.
        let mut m = Machine::new(settings(), 7, t0);
        assert!(m.handle(Input::Stop, t0).is_empty());
        assert!(m.stopped());
    }
}
