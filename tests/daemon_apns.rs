//! APNs end to end: the real `p2` binary built with the `apns` feature, a fake XMPP
//! server speaking literal bytes, and the loopback HTTP/2 server playing APNs
//! (`common::apns`), which verifies the provider token or the client certificate.
//!
//! Each reply of PROTOCOL.md §5 is proven for a `register-push-apns` registration.
#![cfg(feature = "apns")]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::apns::{accepted, check_jwt, fixture, Apns, Reply, Seen, KEY_ID, TEAM_ID, TOPIC};
use common::daemon::cli;
use common::http::Request;
use common::world::*;
use common::xmpp::{error_text, outcome, Component};
use serde_json::json;

/// An APNs device token as iOS hands it out: 32 bytes, hex.
const TOKEN: &str = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad";
/// The account and device of the golden vector of PROTOCOL.md §4.
const ACCOUNT: &str = "xiaomia1@jabber.de/Siskin.4f2a";
const DEVICE_ID: &str = "92afd7a91cdba9a0";
const DEVICE_HASH: &str = "ec164939a8485ee6b7f7871071a11c7bb18aead5";

/// The `apns` object for token authentication against `server`.
fn token_config(server: &Apns, deadline: u64) -> serde_json::Value {
    json!({
        "bundleId": TOPIC,
        "baseUrl": server.url(),
        "keyFile": fixture("apns-token-key.p8"),
        "keyId": KEY_ID,
        "teamId": TEAM_ID,
        "deadline": deadline,
    })
}

/// A daemon with APNs (token authentication, `deadline` seconds) and, if `fcm`, FCM.
/// Coalescing is off so that every publish is one request.
fn start_apns(
    name: &str,
    fcm: bool,
    deadline: u64,
    script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static,
) -> (World, Apns) {
    let apns = Apns::start(script);
    let w = start_opts(
        name,
        Arc::new(|_: &Request| ok()),
        Opts {
            fcm,
            extra: vec![
                ("apns", token_config(&apns, deadline)),
                ("limits", json!({"coalesceMillis": 0})),
            ],
            ..Opts::default()
        },
    );
    (w, apns)
}

/// Registers as Siskin does (`token`, `device-id`); returns (node, secret).
fn register_apns(comp: &mut Component, from: &str, device_id: &str) -> (String, String) {
    register_with(
        comp,
        from,
        "register-push-apns",
        &(field("token", TOKEN) + &field("device-id", device_id)),
    )
}

/// ejabberd's publish with `include_body` and `include_sender` off: an empty
/// `<notification/>`, so no `last-message-body`.
fn empty_publish_stanza(from: &str, node: &str, secret: &str) -> String {
    format!(
        "<iq to='{JID}' from='{from}' type='set' id='{}'>
 <pubsub xmlns='http://jabber.org/protocol/pubsub'>
  <publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'/></item></publish>
  <publish-options><x xmlns='jabber:x:data' type='submit'>
   <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>
   <field var='secret'><value>{secret}</value></field></x></publish-options>
 </pubsub></iq>",
        next_id()
    )
}

/// ejabberd 23.01's publish with `include_body` and `include_sender` on.
fn ejabberd_publish_stanza(from: &str, node: &str, secret: &str) -> String {
    format!(
        "<iq to='{JID}' from='{from}' type='set' id='{}'>
 <pubsub xmlns='http://jabber.org/protocol/pubsub'>
  <publish node='{node}'><item><notification xmlns='urn:xmpp:push:0'>
   <x xmlns='jabber:x:data' type='submit'>
    <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field>
    <field var='last-message-sender' type='jid-single' label='The sender of the last received message'><value>bob@localhost/e2e</value></field>
    <field var='last-message-body' type='text-single' label='The body text of the last received message'><value>wake up</value></field>
   </x></notification></item></publish>
  <publish-options><x xmlns='jabber:x:data' type='submit'>
   <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>
   <field var='secret'><value>{secret}</value></field></x></publish-options>
 </pubsub></iq>",
        next_id()
    )
}

/// The APNs registrations in the daemon's database.
fn apns_rows(w: &World) -> i64 {
    let db = rusqlite::Connection::open(w.daemon.dir.join("p2.sqlite")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.query_row(
        "SELECT count(*) FROM registration WHERE service = 'apns'",
        [],
        |row| row.get(0),
    )
    .unwrap()
}

/// The command nodes listed by disco#items.
fn command_nodes(comp: &mut Component) -> Vec<String> {
    let items = comp.iq(&format!(
        "<iq type='get' from='u@example.net/r' to='{JID}' id='{}'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>",
        next_id()
    ));
    items
        .get_child("query", "http://jabber.org/protocol/disco#items")
        .unwrap()
        .children
        .iter()
        .map(|i| {
            assert_eq!(i.attr("jid"), Some(JID));
            i.attr("node").unwrap().to_owned()
        })
        .collect()
}

#[test]
fn alert_push_for_a_publish_with_a_body() {
    let (mut w, apns) = start_apns("apns-alert", false, 3, |_, _| accepted());
    let (node, secret) = register_apns(&mut w.comp, ACCOUNT, DEVICE_ID);
    assert_eq!(node.len(), 12);
    assert_eq!(secret.len(), 24);
    assert_eq!(apns_rows(&w), 1);

    // Prosody 0.12, then ejabberd 23.01: both carry last-message-body.
    let reply = publish(&mut w.comp, "jabber.de", &node, &secret);
    assert_eq!(outcome(&reply), "result");
    assert_eq!(reply.attr("from"), Some(JID));
    assert_eq!(reply.attr("to"), Some("jabber.de"));
    let reply = w
        .comp
        .iq(&ejabberd_publish_stanza("jabber.de", &node, &secret));
    assert_eq!(outcome(&reply), "result");

    let seen = apns.seen();
    assert_eq!(seen.len(), 2);
    for req in &seen {
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, format!("/3/device/{TOKEN}"));
        assert_eq!(req.header("apns-topic"), Some(TOPIC));
        assert_eq!(req.header("apns-push-type"), Some("alert"));
        assert_eq!(req.header("apns-priority"), Some("10"));
        let claims = check_jwt(req.jwt.as_deref().expect("bearer token")).unwrap();
        assert_eq!(claims["iss"], TEAM_ID);
        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(
            body,
            json!({
                "aps": {"alert": {"title": "New message"}, "sound": "default", "mutable-content": 1},
                "account": DEVICE_HASH
            })
        );
        // Never the message or its sender.
        assert!(!req.body.contains("wake up") && !req.body.contains("bob@"));
    }
    // One provider token, reused; one connection.
    assert_eq!(seen[0].jwt, seen[1].jwt);
    assert_eq!(apns.connections(), 1);

    let log = w.daemon.log();
    assert!(
        log.contains(&format!(
            "providers: apns (topic {TOPIC}, endpoint {}, provider token from",
            apns.url()
        )),
        "start-up summary: {log}"
    );
    for secret_text in [
        TOKEN,
        &secret,
        "xiaomia1",
        SECRET,
        seen[0].jwt.as_deref().unwrap(),
    ] {
        assert!(!log.contains(secret_text), "log leaks {secret_text:?}");
    }
}

#[test]
fn background_push_for_an_empty_notification() {
    let (mut w, apns) = start_apns("apns-background", false, 3, |_, _| accepted());
    let (node, secret) = register_apns(&mut w.comp, ACCOUNT, DEVICE_ID);
    let reply = w
        .comp
        .iq(&empty_publish_stanza("jabber.de", &node, &secret));
    assert_eq!(outcome(&reply), "result");
    let seen = apns.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.path, format!("/3/device/{TOKEN}"));
    assert_eq!(req.header("apns-topic"), Some(TOPIC));
    assert_eq!(req.header("apns-push-type"), Some("background"));
    assert_eq!(req.header("apns-priority"), Some("5"));
    check_jwt(req.jwt.as_deref().unwrap()).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&req.body).unwrap(),
        json!({"aps": {"content-available": 1}, "account": DEVICE_HASH})
    );
}

#[test]
fn dead_tokens_delete_the_registration() {
    // 410 is specific to one token. BadDeviceToken is also what every push gets with the
    // wrong environment: it deletes only once these credentials delivered a push
    // (`proven`: a first push to another device is accepted).
    for (status, body, reason, proven) in [
        (
            410,
            r#"{"reason":"Unregistered","timestamp":1712345678901}"#,
            "Unregistered",
            false,
        ),
        (
            400,
            r#"{"reason":"BadDeviceToken"}"#,
            "BadDeviceToken",
            true,
        ),
        (410, r#"{"reason":"ExpiredToken"}"#, "ExpiredToken", false),
    ] {
        let (mut w, apns) = start_apns("apns-dead", false, 3, move |i, _| {
            if proven && i == 0 {
                accepted()
            } else {
                Reply::Status(status, body)
            }
        });
        if proven {
            let (node, secret) = register_apns(&mut w.comp, "alice@example.org/iphone", "a");
            let reply = publish(&mut w.comp, "example.org", &node, &secret);
            assert_eq!(outcome(&reply), "result");
        }
        let (node, secret) = register_apns(&mut w.comp, "bob@example.org/iphone", "d");
        let reply = publish(&mut w.comp, "example.org", &node, &secret);
        assert_eq!(outcome(&reply), "error cancel item-not-found", "{status}");
        assert_eq!(
            apns_rows(&w),
            i64::from(proven),
            "{status}: row not deleted"
        );
        // Gone: the next publish is refused without another request.
        let reply = publish(&mut w.comp, "example.org", &node, &secret);
        assert_eq!(outcome(&reply), "error cancel item-not-found");
        assert_eq!(apns.seen().len(), 1 + usize::from(proven), "{status}");
        assert!(
            w.daemon.log().contains(&format!("token dead ({reason})")),
            "{}",
            w.daemon.log()
        );
    }
}

#[test]
fn bad_device_token_before_any_delivery_keeps_the_registration() {
    // Every push of a sandbox app sent to production gets BadDeviceToken: until these
    // credentials delivered a push, that is answered wait and nothing is deleted.
    let (mut w, apns) = start_apns("apns-unproven", false, 3, |_, _| {
        Reply::Status(400, r#"{"reason":"BadDeviceToken"}"#)
    });
    let (node, secret) = register_apns(&mut w.comp, "bob@example.org/iphone", "d");
    for _ in 0..2 {
        let reply = publish(&mut w.comp, "example.org", &node, &secret);
        assert_eq!(outcome(&reply), "error wait internal-server-error");
        assert_eq!(error_text(&reply).as_deref(), Some("push not delivered"));
    }
    assert_eq!(apns_rows(&w), 1);
    assert_eq!(apns.seen().len(), 2, "one request per push, not retried");
    // One loud line naming the code and the likely cause, not one per push.
    let log = w.daemon.log();
    assert!(
        log.contains("BadDeviceToken") && log.contains("apns.sandbox does not match the app build"),
        "{log}"
    );
    assert_eq!(
        log.matches("these credentials have not delivered a push yet")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn too_many_requests_then_accepted_is_result() {
    let (mut w, apns) = start_apns("apns-429", false, 3, |i, _| match i {
        0 => Reply::Status(429, r#"{"reason":"TooManyRequests"}"#),
        _ => accepted(),
    });
    let (node, secret) = register_apns(&mut w.comp, "c@example.net/x", "d");
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );
    assert_eq!(apns.seen().len(), 2);
}

#[test]
fn permanent_unavailability_is_answered_wait_within_the_deadline() {
    let (mut w, apns) = start_apns("apns-503", false, 2, |_, _| {
        Reply::Status(503, r#"{"reason":"ServiceUnavailable"}"#)
    });
    let (node, secret) = register_apns(&mut w.comp, "c@example.net/x", "d");
    let started = Instant::now();
    let reply = publish(&mut w.comp, "example.net", &node, &secret);
    let took = started.elapsed();
    assert_eq!(outcome(&reply), "error wait internal-server-error");
    // The cause is for the log; remote servers get a generic text.
    assert_eq!(error_text(&reply).as_deref(), Some("push not delivered"));
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(apns.seen().len() >= 2, "no retry");
    // The registration stays.
    assert_eq!(apns_rows(&w), 1);
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "error wait internal-server-error"
    );
}

#[test]
fn a_provider_token_apple_refuses_keeps_the_registration() {
    // A key id that is not the key's: the stand-in answers 403 InvalidProviderToken, a
    // fault of ours, never of the device.
    let apns = Apns::start(|_, _| accepted());
    let mut config = token_config(&apns, 3);
    config["keyId"] = json!("WRONGKEYID");
    let mut w = start_opts(
        "apns-403",
        Arc::new(|_: &Request| ok()),
        Opts {
            fcm: false,
            extra: vec![("apns", config)],
            ..Opts::default()
        },
    );
    let (node, secret) = register_apns(&mut w.comp, "c@example.net/x", "d");
    let reply = publish(&mut w.comp, "example.net", &node, &secret);
    assert_eq!(outcome(&reply), "error wait internal-server-error");
    assert_eq!(error_text(&reply).as_deref(), Some("push not delivered"));
    assert_eq!(apns_rows(&w), 1);
}

#[test]
fn publish_refusals() {
    let (mut w, apns) = start_apns("apns-refuse", false, 3, |_, _| accepted());
    let (node, secret) = register_apns(&mut w.comp, "c@example.net/x", "d");
    let wrong = publish(
        &mut w.comp,
        "example.net",
        &node,
        "KK4+H5WMfpRG/2zCbuKq6wpX",
    );
    assert_eq!(outcome(&wrong), "error auth forbidden");
    let other_domain = publish(&mut w.comp, "example.org", &node, &secret);
    assert_eq!(outcome(&other_domain), "error cancel item-not-found");
    let unknown = publish(&mut w.comp, "example.net", "eKxTS5n3bOe0", &secret);
    assert_eq!(outcome(&unknown), "error cancel item-not-found");
    let full_jid = publish(&mut w.comp, "c@example.net/x", &node, &secret);
    assert_eq!(outcome(&full_jid), "error auth forbidden");
    assert!(apns.seen().is_empty());
    assert_eq!(apns.connections(), 0);
}

#[test]
fn registration_refusals_and_re_registration() {
    let (mut w, apns) = start_apns("apns-register", false, 3, |_, _| accepted());
    let from = "c@example.net/x";
    for (node, fields, expected, text) in [
        (
            "register-push-apns",
            field("token", "not-a-device-token") + &field("device-id", "d"),
            "error modify bad-request",
            "field 'token' is not an APNs device token",
        ),
        (
            "register-push-apns",
            field("device-id", "d"),
            "error modify bad-request",
            "missing field 'token'",
        ),
        (
            "register-push-fcm",
            field("token", "t") + &field("device-id", "d"),
            "error cancel service-unavailable",
            "fcm is not configured on this app server",
        ),
    ] {
        let reply = w.comp.iq(&register_stanza(from, node, &fields));
        assert_eq!(outcome(&reply), expected, "{node} {fields}");
        assert_eq!(error_text(&reply).as_deref(), Some(text));
    }
    assert_eq!(apns_rows(&w), 0);

    // Registering again keeps node and secret and takes the new token.
    let (node, secret) = register_apns(&mut w.comp, from, "d");
    let new_token = "a".repeat(64);
    let again = register_with(
        &mut w.comp,
        from,
        "register-push-apns",
        &(field("token", &new_token) + &field("device-id", "d")),
    );
    assert_eq!(again, (node.clone(), secret.clone()));
    assert_eq!(apns_rows(&w), 1);
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "result"
    );
    assert_eq!(apns.seen()[0].path, format!("/3/device/{new_token}"));
}

#[test]
fn unregister_removes_the_registration() {
    let (mut w, apns) = start_apns("apns-unregister", false, 3, |_, _| accepted());
    let from = "c@example.net/x";
    let (node, secret) = register_apns(&mut w.comp, from, "d");
    let reply = w.comp.iq(&register_stanza(
        from,
        "unregister-push-apns",
        &field("device-id", "d"),
    ));
    assert_eq!(outcome(&reply), "result");
    let cmd = reply
        .get_child("command", "http://jabber.org/protocol/commands")
        .unwrap();
    assert_eq!(
        (cmd.attr("node"), cmd.attr("status")),
        (Some("unregister-push-apns"), Some("completed"))
    );
    assert_eq!(apns_rows(&w), 0);
    let again = w.comp.iq(&register_stanza(
        from,
        "unregister-push-apns",
        &field("device-id", "d"),
    ));
    assert_eq!(outcome(&again), "error cancel item-not-found");
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &node, &secret)),
        "error cancel item-not-found"
    );
    assert!(apns.seen().is_empty());
}

#[test]
fn fcm_and_apns_side_by_side() {
    let (mut w, apns) = start_apns("apns-both", true, 3, |_, _| accepted());
    assert_eq!(
        command_nodes(&mut w.comp),
        [
            "register-push-fcm",
            "unregister-push-fcm",
            "register-push-apns",
            "unregister-push-apns"
        ]
    );
    // The same account: an Android phone on FCM and an iPhone on APNs.
    let (fcm_node, fcm_secret) = register(&mut w.comp, "c@example.net/android", "phone", "fcm-tok");
    let (apns_node, apns_secret) = register_apns(&mut w.comp, "c@example.net/iphone", "pad");
    assert_ne!(fcm_node, apns_node);
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &fcm_node, &fcm_secret)),
        "result"
    );
    assert_eq!(
        outcome(&w.comp.iq(&empty_publish_stanza(
            "example.net",
            &apns_node,
            &apns_secret
        ))),
        "result"
    );
    let fcm = fcm_sends(&w.mock);
    assert_eq!(fcm.len(), 1);
    assert_eq!(fcm[0]["message"]["token"], "fcm-tok");
    let seen = apns.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/3/device/{TOKEN}"));
    assert_eq!(seen[0].header("apns-push-type"), Some("background"));
    // Each service keeps its own row; unregistering one leaves the other.
    let reply = w.comp.iq(&register_stanza(
        "c@example.net/iphone",
        "unregister-push-apns",
        &field("device-id", "pad"),
    ));
    assert_eq!(outcome(&reply), "result");
    assert_eq!(
        outcome(&publish(&mut w.comp, "example.net", &fcm_node, &fcm_secret)),
        "result"
    );
    let log = w.daemon.log();
    assert!(
        log.contains("providers: fcm (project p2-test, credentials ")
            && log.contains("), apns (topic"),
        "{log}"
    );
    let (code, out, _) = cli(&w.daemon.dir, &["stats", "-c", "config.json"]);
    assert_eq!(code, 0);
    assert!(out.contains("registrations: 1\n  fcm: 1"), "{out}");
}

#[test]
fn apns_commands_are_listed_only_when_configured() {
    let (mut w, _apns) = start_apns("apns-disco", false, 3, |_, _| accepted());
    assert_eq!(
        command_nodes(&mut w.comp),
        ["register-push-apns", "unregister-push-apns"]
    );
    let info = w.comp.iq(&format!(
        "<iq type='get' from='u@example.net/r' to='{JID}' id='{}'><query xmlns='http://jabber.org/protocol/disco#info' node='register-push-apns'/></iq>",
        next_id()
    ));
    assert_eq!(outcome(&info), "result");

    // The same build without an apns object: no apns commands, registration refused.
    let mut w = start("apns-disco-fcm", |_| ok());
    assert_eq!(
        command_nodes(&mut w.comp),
        ["register-push-fcm", "unregister-push-fcm"]
    );
    let reply = w.comp.iq(&register_stanza(
        "c@example.net/x",
        "register-push-apns",
        &(field("token", TOKEN) + &field("device-id", "d")),
    ));
    assert_eq!(outcome(&reply), "error cancel service-unavailable");
}

#[test]
fn client_certificate_over_tls_as_the_java_p2_configured_it() {
    let apns = Apns::start_tls(true, |_, _| accepted());
    let mut w = start_opts(
        "apns-certificate",
        Arc::new(|_: &Request| ok()),
        Opts {
            fcm: false,
            extra: vec![(
                "apns",
                json!({
                    "bundleId": TOPIC,
                    "sandbox": false,
                    "certificate": fixture("apns-client.pem"),
                    "privateKey": fixture("apns-client.key"),
                    "baseUrl": apns.url(),
                    "caFile": fixture("apns-ca.pem"),
                }),
            )],
            ..Opts::default()
        },
    );
    let (node, secret) = register_apns(&mut w.comp, ACCOUNT, DEVICE_ID);
    assert_eq!(
        outcome(&publish(&mut w.comp, "jabber.de", &node, &secret)),
        "result"
    );
    let seen = apns.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].client_certificate && seen[0].jwt.is_none());
    assert_eq!(seen[0].header("apns-push-type"), Some("alert"));
    assert!(w
        .daemon
        .log()
        .contains("apns (topic org.example.p2test, endpoint https://127.0.0.1:"));
}

#[test]
fn check_config_describes_apns_and_names_a_bad_key() {
    let (w, apns) = start_apns("apns-check", false, 3, |_, _| accepted());
    let dir = w.daemon.dir.clone();
    let (code, out, err) = cli(&dir, &["check-config", "-c", "config.json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "apns: topic {TOPIC}, endpoint {}, provider token from {} (key id {KEY_ID}, team id {TEAM_ID}), deadline 3 s, credentials ",
            apns.url(),
            fixture("apns-token-key.p8").display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "\n  environment of apns.baseUrl, bundle id {TOPIC}: the app must be built for \
             this environment with this bundle id, else APNs answers every push \
             BadDeviceToken (environment) or DeviceTokenNotForTopic (bundle id), which p2 \
             answers wait (keeping the registration) until these credentials have delivered \
             a push\n"
        )),
        "{out}"
    );
    assert!(out.contains("fcm: not configured"), "{out}");
    assert!(
        !out.contains("PRIVATE KEY") && !out.contains(SECRET),
        "{out}"
    );

    let broken = |name: &str, apns: serde_json::Value| {
        let config = json!({"jid": JID, "sharedSecret": SECRET, "apns": apns});
        std::fs::write(dir.join(name), config.to_string()).unwrap();
        let (code, _, err) = cli(&dir, &["check-config", "-c", name]);
        assert_eq!(code, 78, "{err}");
        err
    };
    // A key file that is not there.
    let mut missing = token_config(&apns, 3);
    missing["keyFile"] = json!("AuthKey_missing.p8");
    let err = broken("missing.json", missing);
    assert!(
        err.starts_with("p2: missing.json: apns.keyFile: cannot read AuthKey_missing.p8: "),
        "{err}"
    );
    // A certificate with another certificate's key.
    let err = broken(
        "mismatch.json",
        json!({
            "bundleId": TOPIC,
            "certificate": fixture("apns-client.pem"),
            "privateKey": fixture("apns-server.key"),
        }),
    );
    assert!(
        err.starts_with(&format!(
            "p2: mismatch.json: apns.privateKey: bad private key in {}: does not belong to ",
            fixture("apns-server.key").display()
        )),
        "{err}"
    );
    // Both modes.
    let mut both = token_config(&apns, 3);
    both["certificate"] = json!("c.pem");
    let err = broken("both.json", both);
    assert!(
        err.starts_with("p2: both.json: apns.keyFile: cannot be combined with apns.certificate"),
        "{err}"
    );
}
