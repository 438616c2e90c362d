//! A running daemon wired to a fake XMPP server and an FCM + OAuth stand-in, with the
//! stanzas of PROTOCOL.md to drive it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::daemon::Daemon;
use super::fcm::Script;
#[allow(unused_imports)]
pub use super::fcm::{fcm_error, ok, scripted, FCM_PATH};
use super::http::{MockServer, Request, Response};
use super::keys;
use super::scratch::Scratch;
use super::stanzas;
use super::xmpp::{outcome, Answer, Component, FakeServer, Stanza};

pub const JID: &str = "push.localhost";
pub const SECRET: &str = "s3cr3t-component";

/// The daemon, its servers and its directory, before the fake server accepted it.
pub struct Launched {
    pub server: FakeServer,
    pub mock: MockServer,
    pub daemon: Daemon,
    pub config: serde_json::Value,
    pub scratch: Scratch,
}

/// The same once its connection is accepted.
pub struct World {
    pub server: FakeServer,
    pub mock: MockServer,
    pub daemon: Daemon,
    pub comp: Component,
    pub config: serde_json::Value,
    /// The daemon's directory; dropped last, after the daemon is killed.
    pub scratch: Scratch,
}

/// Settings of a test world beyond the defaults.
pub struct Opts {
    /// `fcm.deadline`, seconds. Default 3.
    pub deadline: u64,
    /// `workers`. Default 4.
    pub workers: usize,
    /// Extra top-level config keys.
    pub extra: Vec<(&'static str, serde_json::Value)>,
    /// Extra environment variables for the daemon.
    pub env: Vec<(String, String)>,
    /// Whether the config has the `fcm` object (pointing at the stand-in). Default true.
    pub fcm: bool,
    /// What the token endpoint answers. Default Google's ([`keys::token_endpoint`]).
    pub token: Arc<Script>,
    /// `RUST_LOG`. Default `debug`.
    pub level: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            deadline: 3,
            workers: 4,
            extra: Vec::new(),
            env: Vec::new(),
            fcm: true,
            token: Arc::new(keys::token_endpoint),
            level: "debug",
        }
    }
}

impl Opts {
    /// The defaults with these `limits`.
    pub fn limits(limits: serde_json::Value) -> Opts {
        Opts {
            extra: vec![("limits", limits)],
            ..Opts::default()
        }
    }
}

/// Starts the stand-in, the fake server and the daemon, and accepts its connection.
pub fn start_opts(name: &str, fcm: Arc<Script>, opts: Opts) -> World {
    launch(name, fcm, opts).accept(Answer::Accept)
}

/// Starts the stand-in, the fake server and the daemon; the test accepts the connection.
pub fn launch(name: &str, fcm: Arc<Script>, opts: Opts) -> Launched {
    let token = Arc::clone(&opts.token);
    let mock = super::fcm::server_with(move |req| token(req), move |req| fcm(req));
    let dir = Scratch::new(name);
    let account = keys::write_service_account(&dir, &format!("{}/token", mock.url()));
    let server = FakeServer::bind();
    let mut config = serde_json::json!({
        "host": "127.0.0.1",
        "port": server.port(),
        "jid": JID,
        "sharedSecret": SECRET,
        "debug": true,
        "database": "p2.sqlite",
        "workers": opts.workers,
        "dbUrl": "jdbc:mariadb://localhost/p2",
        "fcm": {
            "serviceAccountFile": account,
            "collapse": true,
            "baseUrl": mock.url(),
            "deadline": opts.deadline,
        }
    });
    if !opts.fcm {
        config.as_object_mut().unwrap().remove("fcm");
    }
    for (k, v) in opts.extra {
        config[k] = v;
    }
    let env: Vec<(&str, &str)> = opts
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let daemon = Daemon::start_with_env(&dir, &config, opts.level, &env);
    Launched {
        server,
        mock,
        daemon,
        config,
        scratch: dir,
    }
}

impl Launched {
    /// Accepts the daemon's connection, answering its handshake with `answer`.
    pub fn accept(mut self, answer: Answer) -> World {
        let comp = self.server.accept(JID, SECRET, answer);
        World {
            server: self.server,
            mock: self.mock,
            daemon: self.daemon,
            comp,
            config: self.config,
            scratch: self.scratch,
        }
    }
}

impl World {
    /// Kills the daemon (SIGKILL), starts it again on the same directory and config,
    /// and accepts its new connection.
    pub fn restart(&mut self) {
        self.daemon.kill();
        self.daemon = Daemon::start(&self.scratch, &self.config, "debug");
        self.comp = self.server.accept(JID, SECRET, Answer::Accept);
    }
}

pub fn start_with(name: &str, fcm: Arc<Script>, deadline: u64) -> World {
    start_opts(
        name,
        fcm,
        Opts {
            deadline,
            ..Opts::default()
        },
    )
}

pub fn start(name: &str, fcm: impl Fn(&Request) -> Response + Send + Sync + 'static) -> World {
    start_with(name, Arc::new(fcm), 3)
}

pub static IDS: AtomicUsize = AtomicUsize::new(0);

/// A fresh stanza id.
pub fn next_id() -> String {
    format!("t{}", IDS.fetch_add(1, Ordering::SeqCst))
}

/// The command `node` with the form `fields` from `from`, with a fresh id.
pub fn register_stanza(from: &str, node: &str, fields: &str) -> String {
    stanzas::command(from, JID, &next_id(), node, fields)
}

#[allow(unused_imports)]
pub use super::stanzas::field;

/// The Conversations registration of PROTOCOL.md §4 from `from` for `android_id` with
/// `token`, to our JID, with a fresh id.
pub fn register_fixture(from: &str, android_id: &str, token: &str) -> String {
    let stanza = stanzas::register_as(from, android_id, token);
    stanzas::with_id(&stanzas::replace_attr(&stanza, "to", JID), &next_id())
}

/// Registers as Conversations does (the fixture of PROTOCOL.md §4); returns (node,
/// secret).
pub fn register(
    comp: &mut Component,
    from: &str,
    android_id: &str,
    token: &str,
) -> (String, String) {
    registered(
        &comp.iq(&register_fixture(from, android_id, token)),
        "register-push-fcm",
    )
}

/// Runs the registration command `command` with the form `fields`, checks the completed
/// reply; returns (node, secret).
pub fn register_with(
    comp: &mut Component,
    from: &str,
    command: &str,
    fields: &str,
) -> (String, String) {
    registered(&comp.iq(&register_stanza(from, command, fields)), command)
}

/// Checks a completed registration reply to `command`; returns (node, secret).
fn registered(reply: &Stanza, command: &str) -> (String, String) {
    assert_eq!(outcome(reply), "result", "{}", reply.xml);
    let payload = reply
        .get_child("command", "http://jabber.org/protocol/commands")
        .unwrap();
    assert_eq!(payload.attr("status"), Some("completed"));
    assert_eq!(payload.attr("node"), Some(command));
    let form = payload.get_child("x", "jabber:x:data").unwrap();
    assert_eq!(form.attr("type"), Some("form"));
    assert_eq!(form.form_value("jid"), Some(JID));
    (
        form.form_value("node").unwrap().to_owned(),
        form.form_value("secret").unwrap().to_owned(),
    )
}

/// The Prosody 0.12 publish of PROTOCOL.md §5 from `from` to `node` with `secret`, with
/// a fresh id.
pub fn publish_stanza(from: &str, node: &str, secret: &str) -> String {
    let stanza = stanzas::publish_to(stanzas::PROSODY_PUBLISH, from, node, secret);
    stanzas::with_id(&stanza, &next_id())
}

pub fn publish(comp: &mut Component, from: &str, node: &str, secret: &str) -> Stanza {
    comp.iq(&publish_stanza(from, node, secret))
}

pub fn fcm_sends(mock: &MockServer) -> Vec<serde_json::Value> {
    mock.requests_to(FCM_PATH)
        .iter()
        .map(|r| r.json().expect("FCM body is JSON"))
        .collect()
}
