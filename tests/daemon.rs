//! End to end over loopback: the real `p2` binary, a fake XMPP server speaking literal
//! bytes, and one HTTP server standing in for FCM and Google's token endpoint.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::http::{Request, Response};
use common::keys;
use common::world::*;
use common::xmpp::{error_text, outcome, Answer, Component};

const TOKEN: &str = "eeDXSJjASJY:APA91bEKxhXK54-vHhY9O55JmU2R0nDJL2rRENm-W9uPY6x3jHi0i0OyvPu6js9jVPZqDeX9ZQydZCBZE19o7a0kK4_n88fCgufXjaOlvalh9VibB2zOI7dQRTaDNB3H5s4dicpWD0m4";

#[test]
fn register_then_publish_reaches_fcm_with_token_account_and_priority() {
    let mut w = start("e2e-push", |_| ok());
    let (node, secret) = register(
        &mut w.comp,
        "xiaomia1@jabber.de/Conversations.sAdA",
        "92afd7a91cdba9a0",
        TOKEN,
    );
    assert_eq!(node.len(), 12);
    assert_eq!(secret.len(), 24);

    let reply = publish(&mut w.comp, "jabber.de", &node, &secret);
    assert_eq!(outcome(&reply), "result");
    assert_eq!(reply.attr("from"), Some(JID));
    assert_eq!(reply.attr("to"), Some("jabber.de"));

    let sends = w.mock.requests_to(FCM_PATH);
    assert_eq!(sends.len(), 1);
    assert_eq!(
        sends[0].header("authorization"),
        Some(format!("Bearer {}", keys::access_token_for(0)).as_str())
    );
    let body = sends[0].json().unwrap();
    assert_eq!(
        body,
        serde_json::json!({"message": {
            "token": TOKEN,
            "data": {"account": "ec164939a8485ee6b7f7871071a11c7bb18aead5"},
            "android": {"priority": "high", "collapse_key": "ec1649"}
        }})
    );
    // Exactly one token request, verified by the stand-in.
    assert_eq!(w.mock.requests_to("/token").len(), 1);
    // Nothing secret in the log.
    let log = w.daemon.log();
    for secret_text in [
        TOKEN,
        &secret,
        "xiaomia1",
        SECRET,
        &keys::access_token_for(0),
    ] {
        assert!(!log.contains(secret_text), "log leaks {secret_text:?}");
    }
    assert!(
        log.contains("registrations"),
        "start-up summary missing: {log}"
    );
}

#[test]
fn re_registration_keeps_node_and_secret_and_changes_the_token() {
    let mut w = start("e2e-rereg", |_| ok());
    let from = "alice@example.com/phone";
    let (node, secret) = register(&mut w.comp, from, "dev1", "token-one");
    let (node2, secret2) = register(&mut w.comp, "alice@example.com/other", "dev1", "token-two");
    assert_eq!((&node, &secret), (&node2, &secret2));
    // device-id is preferred over android-id.
    let reply = w.comp.iq(&register_stanza(
        from,
        "register-push-fcm",
        &(field("token", "token-three")
            + &field("android-id", "other")
            + &field("device-id", "dev1")),
    ));
    let form = reply.clone();
    assert_eq!(form.form_value("node"), Some(node.as_str()));
    // Another device gets another node.
    let (node3, _) = register(&mut w.comp, from, "dev2", "token-x");
    assert_ne!(node3, node);

    assert_eq!(
        outcome(&publish(&mut w.comp, "example.com", &node, &secret)),
        "result"
    );
    let sends = fcm_sends(&w.mock);
    assert_eq!(sends[0]["message"]["token"], "token-three");
}

#[test]
fn unregistered_token_deletes_the_registration() {
    let mut w = start("e2e-dead", |_| {
        fcm_error(404, "NOT_FOUND", Some("UNREGISTERED"))
    });
    let (node, secret) = register(&mut w.comp, "bob@example.org/c", "d", "dead-token");
    let reply = publish(&mut w.comp, "example.org", &node, &secret);
    assert_eq!(outcome(&reply), "error cancel item-not-found");
    // Gone: the next publish does not reach FCM.
    let reply = publish(&mut w.comp, "example.org", &node, &secret);
    assert_eq!(outcome(&reply), "error cancel item-not-found");
    assert_eq!(w.mock.requests_to(FCM_PATH).len(), 1);
}

#[test]
fn dead_token_variants_and_wrong_project() {
    for (response, expected) in [
        // Before these credentials delivered anything, SENDER_ID_MISMATCH may mean the
        // service account of another project: wait, the registration kept.
        (
            fcm_error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH")),
            "error wait internal-server-error",
        ),
        (
            fcm_error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT")),
            "error cancel item-not-found",
        ),
        // A 404 without FcmError is a wrong project id: never a dead token.
        (
            fcm_error(404, "NOT_FOUND", None),
            "error wait internal-server-error",
        ),
        (
            fcm_error(400, "INVALID_ARGUMENT", None),
            "error wait internal-server-error",
        ),
    ] {
        let response = Arc::new(response);
        let r = Arc::clone(&response);
        let mut w = start("e2e-variants", move |_| (*r).clone());
        let (node, secret) = register(&mut w.comp, "bob@example.org/c", "d", "tok");
        assert_eq!(
            outcome(&publish(&mut w.comp, "example.org", &node, &secret)),
            expected
        );
        let second = publish(&mut w.comp, "example.org", &node, &secret);
        let still_there = w.mock.requests_to(FCM_PATH).len() == 2;
        assert_eq!(
            still_there,
            expected.starts_with("error wait"),
            "{}",
            outcome(&second)
        );
    }
}

#[test]
fn unavailable_with_retry_after_is_retried_then_delivered() {
    let mut w = start(
        "e2e-retry",
        scripted(vec![
            fcm_error(503, "UNAVAILABLE", None).header("Retry-After", "1")
        ]),
    );
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let started = Instant::now();
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After not honoured"
    );
    assert_eq!(w.mock.requests_to(FCM_PATH).len(), 2);
}

#[test]
fn permanently_unavailable_is_answered_wait_within_the_deadline() {
    let mut w = start_with(
        "e2e-down",
        Arc::new(|_: &Request| fcm_error(503, "UNAVAILABLE", None)),
        2,
    );
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let started = Instant::now();
    let reply = publish(&mut w.comp, "example.net", &node, &secret);
    let took = started.elapsed();
    assert_eq!(outcome(&reply), "error wait internal-server-error");
    assert!(error_text(&reply).is_some());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(w.mock.requests_to(FCM_PATH).len() >= 2, "no retry");
    // The registration stays.
    let _ = w.server.port();
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "error wait internal-server-error"
    );
}

#[test]
fn expired_access_token_is_refreshed_once() {
    let mut w = start("e2e-401", |req| {
        if req.header("authorization") == Some("Bearer ya29.test-0") {
            Response::json(401, r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#)
        } else {
            ok()
        }
    });
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );
    assert_eq!(w.mock.requests_to("/token").len(), 2);
    assert_eq!(w.mock.requests_to(FCM_PATH).len(), 2);
}

#[test]
fn publish_refusals() {
    let mut w = start("e2e-refuse", |_| ok());
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let check = |comp: &mut Component, stanza: String, expected: &str| {
        let reply = comp.iq(&stanza);
        assert_eq!(outcome(&reply), expected, "{stanza}");
    };
    check(
        &mut w.comp,
        publish_stanza("example.net", &node, "wrong-secret-xxxxxxxxxxx"),
        "error auth forbidden",
    );
    check(
        &mut w.comp,
        publish_stanza("example.net", "unknownnode0", &secret),
        "error cancel item-not-found",
    );
    check(
        &mut w.comp,
        publish_stanza("other.example", &node, &secret),
        "error cancel item-not-found",
    );
    check(
        &mut w.comp,
        publish_stanza("c@example.net/x", &node, &secret),
        "error auth forbidden",
    );
    // Older servers publish from the user's bare JID: accepted.
    check(
        &mut w.comp,
        publish_stanza("c@example.net", &node, &secret),
        "result",
    );
    // The domain as XMPP compares it: case and a trailing dot do not matter (a wrong
    // domain would be item-not-found).
    check(
        &mut w.comp,
        publish_stanza("Example.NET.", &node, &secret),
        "result",
    );
    // Not a JID.
    check(
        &mut w.comp,
        publish_stanza("exa mple.net", &node, &secret),
        "error auth forbidden",
    );
    // No secret, no node, no sender.
    check(
        &mut w.comp,
        format!(
            "<iq from='example.net' to='{JID}' type='set' id='{}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'/></item></publish></pubsub></iq>",
            next_id()
        ),
        "error auth forbidden",
    );
    check(
        &mut w.comp,
        format!(
            "<iq to='{JID}' type='set' id='{}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
             <publish node='{node}'/></pubsub></iq>",
            next_id()
        ),
        "error auth forbidden",
    );
    // The publishes found their registration; the later ones within the coalescing
    // window were answered without another push.
    assert_eq!(w.mock.requests_to(FCM_PATH).len(), 1);
}

#[test]
fn malformed_registrations_are_refused_with_a_text() {
    let mut w = start("e2e-forms", |_| ok());
    let from = "c@example.net/x";
    for (node, fields, expected, text) in [
        (
            "register-push-fcm",
            field("android-id", "d"),
            "error modify bad-request",
            Some("missing field 'token'"),
        ),
        (
            "register-push-fcm",
            field("token", "t"),
            "error modify bad-request",
            Some("missing field 'device-id' (or 'android-id')"),
        ),
        (
            "register-push-fcm",
            field("token", "t")
                + &field("device-id", "d")
                + &field("muc", "room@muc.example.net/nick"),
            "error modify bad-request",
            Some("field 'muc' must be a bare JID"),
        ),
        (
            "register-push-gcm",
            field("token", "t") + &field("device-id", "d"),
            "error cancel item-not-found",
            None,
        ),
        (
            "register-push-apns",
            field("token", "t") + &field("device-id", "d"),
            "error cancel service-unavailable",
            None,
        ),
        (
            "unregister-push-fcm",
            field("device-id", "never-registered"),
            "error cancel item-not-found",
            None,
        ),
    ] {
        let reply = w.comp.iq(&register_stanza(from, node, &fields));
        assert_eq!(outcome(&reply), expected, "{node} {fields}");
        assert!(error_text(&reply).is_some(), "no text for {node} {fields}");
        if let Some(text) = text {
            assert_eq!(error_text(&reply).as_deref(), Some(text));
        }
    }
    // No form at all.
    let reply = w.comp.iq(&format!(
        "<iq type='set' from='{from}' to='{JID}' id='noform'><command \
         xmlns='http://jabber.org/protocol/commands' node='register-push-fcm'/></iq>"
    ));
    assert_eq!(outcome(&reply), "error modify bad-request");
    assert_eq!(error_text(&reply).as_deref(), Some("missing data form"));
    // Cancel ends the session.
    let reply = w.comp.iq(&format!(
        "<iq type='set' from='{from}' to='{JID}' id='cancel1'><command \
         xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' action='cancel' sessionid='s1'/></iq>"
    ));
    let cmd = reply
        .get_child("command", "http://jabber.org/protocol/commands")
        .unwrap();
    assert_eq!(cmd.attr("status"), Some("canceled"));
}

#[test]
fn unregister_removes_and_a_muc_registration_has_its_channel() {
    let mut w = start("e2e-unreg", |_| ok());
    let from = "c@example.net/x";
    let (node, secret) = register(&mut w.comp, from, "d", "tok");
    let muc_fields =
        field("token", "tok") + &field("device-id", "d") + &field("muc", "room@muc.example.net");
    let reply = w
        .comp
        .iq(&register_stanza(from, "register-push-fcm", &muc_fields));
    let form = reply.clone();
    let (muc_node, muc_secret) = (
        form.form_value("node").unwrap().to_owned(),
        form.form_value("secret").unwrap().to_owned(),
    );
    assert_ne!(muc_node, node);
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &muc_node, &muc_secret)),
        "result"
    );
    let body = &fcm_sends(&w.mock)[0];
    // printf 'room@muc.example.net\000d' | sha1sum
    let channel = "c9dbb9db382e92dca50e9b440414d8665ca4377d";
    assert_eq!(body["message"]["data"]["channel"], channel);
    assert_eq!(body["message"]["android"]["collapse_key"], &channel[..6]);

    // Conversations 2.5 to 2.8 unregistered a group chat with `channel` and `android-id`
    // only, and (a bug of theirs) sent the account's hash as the channel: that names no
    // registration and must not remove the account's own.
    // printf 'c@example.net\000d' | sha1sum
    let account_hash = "2d5fbc354d650126e47cf3b9467852f05371a6d2";
    let old_unregister = |channel: &str| {
        register_stanza(
            from,
            "unregister-push-fcm",
            &(field("channel", channel) + &field("android-id", "d")),
        )
    };
    let reply = w.comp.iq(&old_unregister(account_hash));
    assert_eq!(outcome(&reply), "error cancel item-not-found");
    for (n, s) in [(&node, &secret), (&muc_node, &muc_secret)] {
        assert_eq!(
            outcome(&publish(&mut w.comp, "example.net", n, s)),
            "result"
        );
    }

    let reply = w.comp.iq(&register_stanza(
        from,
        "unregister-push-fcm",
        &field("device-id", "d"),
    ));
    assert_eq!(outcome(&reply), "result");
    let cmd = reply
        .get_child("command", "http://jabber.org/protocol/commands")
        .unwrap();
    assert_eq!(cmd.attr("status"), Some("completed"));
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "error cancel item-not-found"
    );
    // The muc registration is another row and stays.
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &muc_node, &muc_secret)),
        "result"
    );
    // Until the channel form of Conversations 2.5 to 2.8 names it.
    let reply = w.comp.iq(&old_unregister(channel));
    assert_eq!(outcome(&reply), "result");
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &muc_node, &muc_secret)),
        "error cancel item-not-found"
    );
}

#[test]
fn disco_ping_version_and_unknown_payloads() {
    let mut w = start("e2e-disco", |_| ok());
    let info = w.comp.iq(&format!(
        "<iq type='get' from='u@example.net/r' to='{JID}' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    ));
    assert_eq!(outcome(&info), "result");
    let q = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    let id = q
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("pubsub"), Some("push"))
    );
    let features: Vec<_> = q.children.iter().filter_map(|c| c.attr("var")).collect();
    for f in [
        "urn:xmpp:push:0",
        "http://jabber.org/protocol/commands",
        "urn:xmpp:ping",
        "jabber:iq:version",
    ] {
        assert!(features.contains(&f), "missing feature {f}");
    }

    let items = w.comp.iq(&format!(
        "<iq type='get' from='u@example.net/r' to='{JID}' id='d2'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>"
    ));
    let nodes: Vec<_> = items
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .unwrap()
        .children
        .iter()
        .map(|i| {
            (
                i.attr("jid").unwrap().to_owned(),
                i.attr("node").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        vec![
            (JID.to_owned(), "register-push-fcm".to_owned()),
            (JID.to_owned(), "unregister-push-fcm".to_owned())
        ]
    );
    let node_info = w.comp.iq(&format!(
        "<iq type='get' from='u@example.net/r' to='{JID}' id='d3'><query xmlns='http://jabber.org/protocol/disco#info' node='register-push-fcm'/></iq>"
    ));
    let id = node_info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap()
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("automation"), Some("command-node"))
    );

    assert_eq!(
        outcome(&w.comp.iq(&format!(
            "<iq type='get' from='localhost' to='{JID}' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))),
        "result"
    );
    let version = w.comp.iq(&format!("<iq type='get' from='localhost' to='{JID}' id='v1'><query xmlns='jabber:iq:version'/></iq>"));
    assert_eq!(
        version
            .get_child("query", "jabber:iq:version")
            .unwrap()
            .get_child("name", "jabber:iq:version")
            .unwrap()
            .text,
        "p2"
    );
    let unknown = w.comp.iq(&format!(
        "<iq type='get' from='localhost' to='{JID}' id='u1'><vcard xmlns='vcard-temp'/></iq>"
    ));
    assert_eq!(outcome(&unknown), "error cancel service-unavailable");
    let empty = w.comp.iq(&format!(
        "<iq type='set' from='localhost' to='{JID}' id='u2'/>"
    ));
    assert_eq!(outcome(&empty), "error cancel service-unavailable");
}

#[test]
fn exactly_one_reply_per_request_and_none_to_results_or_messages() {
    let mut w = start("e2e-one", |_| ok());
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    let fixtures = vec![
        publish_stanza("example.net", &node, &secret),
        publish_stanza("example.net", &node, "bad"),
        register_stanza("c@example.net/x", "register-push-fcm", &field("token", "t")),
        format!("<iq type='get' from='localhost' to='{JID}' id='{}'><ping xmlns='urn:xmpp:ping'/></iq>", next_id()),
        format!("<iq type='get' from='localhost' to='{JID}' id='{}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", next_id()),
        format!("<iq type='get' from='localhost' to='{JID}' id='{}'><x xmlns='urn:example'/></iq>", next_id()),
    ];
    for stanza in &fixtures {
        w.comp.send(stanza);
    }
    // Things that must not be answered.
    w.comp.send(&format!(
        "<iq type='result' from='localhost' to='{JID}' id='r1'/>"
    ));
    w.comp.send(&format!("<iq type='error' from='localhost' to='{JID}' id='r2'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"));
    w.comp.send(&format!(
        "<message from='a@localhost' to='{JID}'><body>hi</body></message>"
    ));
    w.comp
        .send(&format!("<presence from='a@localhost' to='{JID}'/>"));
    let mut seen = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < fixtures.len() && Instant::now() < deadline {
        if let Some(el) = w.comp.recv(Duration::from_millis(200)) {
            *seen
                .entry(el.attr("id").unwrap_or("").to_owned())
                .or_insert(0) += 1;
        }
    }
    // Then a little longer, to catch duplicates or replies to results.
    while let Some(el) = w.comp.recv(Duration::from_millis(500)) {
        *seen
            .entry(el.attr("id").unwrap_or("").to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), fixtures.len(), "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    assert!(!seen.contains_key("r1") && !seen.contains_key("r2"));
}

#[test]
fn reconnects_after_the_server_closes_and_keeps_registrations_across_restarts() {
    let mut w = start("e2e-reconnect", |_| ok());
    let (node, secret) = register(&mut w.comp, "c@example.net/x", "d", "tok");
    // The server goes away; the daemon reconnects and goes on.
    w.comp.close();
    w.comp = w.server.accept(JID, SECRET, Answer::Accept);
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );

    // Restart the daemon: the registration is still there.
    w.daemon.kill();
    let dir = w.daemon.dir.clone();
    w.daemon = Daemon::start(&dir, &w.config, "debug");
    w.comp = w.server.accept(JID, SECRET, Answer::Accept);
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );
    assert!(w.daemon.log().contains("(1 registrations)"));
}

#[test]
fn rejected_handshake_is_logged_and_retried() {
    let w = launch(
        "e2e-reject",
        Arc::new(|_: &Request| ok()),
        Opts {
            level: "info",
            ..Opts::default()
        },
    )
    .accept(Answer::NotAuthorized);
    let World {
        mut server,
        daemon,
        comp: first,
        ..
    } = w;
    assert!(
        daemon.wait_log(
            "handshake rejected: not-authorized",
            Duration::from_secs(10)
        ),
        "{}",
        daemon.log()
    );
    drop(first);
    let mut comp = server.accept(JID, SECRET, Answer::Accept);
    let reply = comp.iq(&format!(
        "<iq type='get' from='localhost' to='{JID}' id='after'><ping xmlns='urn:xmpp:ping'/></iq>"
    ));
    assert_eq!(outcome(&reply), "result");
    assert_eq!(server.accepted(), 2);
}

#[test]
fn invalid_config_exits_78_naming_key_and_file() {
    let dir = common::scratch::Scratch::new("e2e-config");
    let mut daemon = Daemon::start(
        &dir,
        &serde_json::json!({"jid": "push.localhost", "port": 99999, "sharedSecret": "x"}),
        "info",
    );
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("p2 exits on a bad config");
    assert_eq!(status.code(), Some(78));
    let log = daemon.log();
    assert_eq!(
        log.trim(),
        "p2: config.json: port: must be a whole number from 1 to 65535"
    );
}
