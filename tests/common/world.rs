//! A running daemon wired to a fake XMPP server and an FCM + OAuth stand-in, with the
//! stanzas of PROTOCOL.md to drive it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::daemon::Daemon;
use super::http::{MockServer, Request, Response};
use super::keys;
use super::scratch::Scratch;
use super::xmpp::{outcome, Answer, Component, FakeServer, Stanza};

pub const JID: &str = "push.localhost";
pub const SECRET: &str = "s3cr3t-component";
pub const FCM_PATH: &str = "/v1/projects/p2-test/messages:send";

/// What the FCM stand-in answers to one send; the token endpoint is handled apart.
pub type Fcm = dyn Fn(&Request) -> Response + Send + Sync;

pub fn ok() -> Response {
    Response::json(
        200,
        r#"{"name":"projects/p2-test/messages/0:1500415314455276%31bd1c9631bd1c96"}"#,
    )
}

pub fn fcm_error(code: u16, status: &str, error_code: Option<&str>) -> Response {
    let details = match error_code {
        Some(c) => format!(
            r#","details":[{{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"{c}"}}]"#
        ),
        None => String::new(),
    };
    Response::json(
        code,
        format!(r#"{{"error":{{"code":{code},"message":"m","status":"{status}"{details}}}}}"#),
    )
}

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
    /// `fcm.deadline`, seconds.
    pub deadline: u64,
    /// `workers`.
    pub workers: usize,
    /// Extra top-level config keys.
    pub extra: Vec<(&'static str, serde_json::Value)>,
    /// Extra environment variables for the daemon.
    pub env: Vec<(String, String)>,
    /// Whether the config has the `fcm` object (pointing at the stand-in).
    pub fcm: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            deadline: 3,
            workers: 4,
            extra: Vec::new(),
            env: Vec::new(),
            fcm: true,
        }
    }
}

pub fn start_with(name: &str, fcm: Arc<Fcm>, deadline: u64) -> World {
    start_opts(
        name,
        fcm,
        Opts {
            deadline,
            ..Opts::default()
        },
    )
}

/// Starts the stand-in, the fake server and the daemon, and accepts its connection.
pub fn start_opts(name: &str, fcm: Arc<Fcm>, opts: Opts) -> World {
    let mock = MockServer::start(move |req| {
        if req.path == "/token" {
            keys::token_endpoint(req)
        } else if req.path == FCM_PATH {
            fcm(req)
        } else {
            Response::json(404, r#"{"error":{"code":404,"status":"NOT_FOUND"}}"#)
        }
    });
    let dir = Scratch::new(name);
    let account = keys::write_service_account(&dir, &format!("{}/token", mock.url()));
    let mut server = FakeServer::bind();
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
    let daemon = Daemon::start_with_env(&dir, &config, "debug", &env);
    let comp = server.accept(JID, SECRET, Answer::Accept);
    World {
        server,
        mock,
        daemon,
        comp,
        config,
        scratch: dir,
    }
}

pub fn start(name: &str, fcm: impl Fn(&Request) -> Response + Send + Sync + 'static) -> World {
    start_with(name, Arc::new(fcm), 3)
}

pub static IDS: AtomicUsize = AtomicUsize::new(0);

pub fn next_id() -> String {
    format!("t{}", IDS.fetch_add(1, Ordering::SeqCst))
}

pub fn register_stanza(from: &str, node: &str, fields: &str) -> String {
    format!(
        "<iq type='set' from='{from}' to='{JID}' id='{}'><command \
         xmlns='http://jabber.org/protocol/commands' node='{node}' action='execute'>\
         <x xmlns='jabber:x:data' type='submit'>{fields}</x></command></iq>",
        next_id()
    )
}

pub fn field(var: &str, value: &str) -> String {
    format!("<field var='{var}'><value>{value}</value></field>")
}

/// Registers as Conversations does; returns (node, secret).
pub fn register(
    comp: &mut Component,
    from: &str,
    android_id: &str,
    token: &str,
) -> (String, String) {
    register_with(
        comp,
        from,
        "register-push-fcm",
        &(field("token", token) + &field("android-id", android_id)),
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
    let reply = comp.iq(&register_stanza(from, command, fields));
    assert_eq!(outcome(&reply), "result", "{}", reply.xml);
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

/// The Prosody 0.12 publish of PROTOCOL.md §5 with our node and secret.
pub fn publish_stanza(from: &str, node: &str, secret: &str) -> String {
    format!(
        "<iq from='{from}' to='{JID}' type='set' id='{}'>
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
 </pubsub></iq>",
        next_id()
    )
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
