//! The APNs client against a loopback HTTP/2 server playing APNs (`common::apns`): h2c,
//! and TLS with a test CA and client certificates.
#![cfg(feature = "apns")]

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::apns::{accepted, check_jwt, fixture, Apns, Control, Reply, KEY_ID, TEAM_ID, TOPIC};
use h2::Reason;
use p2::push::apns::{ApnsAuth, ApnsClient, ApnsSettings};
use p2::push::cooldown::CoolDownSettings;
use p2::push::{Cause, Outcome, PushMessage};

const DEVICE: &str = "2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";
const CHANNEL: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
const TOKEN: &str = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad";

const ALERT_BODY: &str = r#"{"aps":{"alert":{"title":"New message"},"sound":"default","mutable-content":1},"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f"}"#;
const BACKGROUND_BODY: &str = r#"{"aps":{"content-available":1},"account":"2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f","channel":"9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"}"#;

fn message(has_body: bool) -> PushMessage {
    PushMessage {
        token: TOKEN.to_owned(),
        device: DEVICE.to_owned(),
        channel: String::new(),
        has_body,
    }
}

fn token_auth() -> ApnsAuth {
    ApnsAuth::Token {
        key_file: fixture("apns-token-key.p8"),
        key_id: KEY_ID.to_owned(),
        team_id: TEAM_ID.to_owned(),
    }
}

fn certificate_auth(key: &str) -> ApnsAuth {
    ApnsAuth::Certificate {
        certificate: fixture("apns-client.pem"),
        private_key: fixture(key),
    }
}

/// Short deadlines so that failures finish in seconds.
fn settings(base_url: String, auth: ApnsAuth) -> ApnsSettings {
    ApnsSettings {
        base_url,
        deadline: Duration::from_secs(3),
        request_timeout: Duration::from_secs(2),
        ..ApnsSettings::new(TOPIC, auth)
    }
}

fn client(server: &Apns) -> ApnsClient {
    ApnsClient::new(settings(server.url(), token_auth())).expect("client starts")
}

fn dead(reason: &str) -> Outcome {
    Outcome::DeadToken {
        reason: reason.to_owned(),
    }
}

/// A failure with this reason, whatever its cause.
#[derive(Debug)]
struct FailedWith(&'static str);

fn failed(reason: &'static str) -> FailedWith {
    FailedWith(reason)
}

impl PartialEq<FailedWith> for Outcome {
    fn eq(&self, other: &FailedWith) -> bool {
        matches!(self, Outcome::Failed { reason, .. } if reason == other.0)
    }
}

/// The cause of a failed push.
fn cause(outcome: &Outcome) -> Cause {
    match outcome {
        Outcome::Failed { cause, .. } => *cause,
        other => panic!("expected Failed, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Requests.

#[test]
fn alert_push_sends_headers_path_and_body() {
    let server = Apns::start(|_, _| accepted());
    let outcome = client(&server).send(&message(true));
    assert_eq!(outcome, Outcome::Delivered);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, format!("/3/device/{TOKEN}"));
    assert_eq!(req.header("apns-topic"), Some(TOPIC));
    assert_eq!(req.header("apns-push-type"), Some("alert"));
    assert_eq!(req.header("apns-priority"), Some("10"));
    assert_eq!(req.header("apns-expiration"), None);
    let jwt = req.jwt.as_deref().expect("bearer token");
    check_jwt(jwt).expect("valid provider token");
    assert_eq!(req.header("authorization"), Some(&*format!("bearer {jwt}")));
    assert_eq!(req.body, ALERT_BODY);
    assert!(!req.client_certificate);
}

#[test]
fn background_push_sends_headers_body_and_expiration() {
    let server = Apns::start(|_, _| accepted());
    let client = ApnsClient::new(ApnsSettings {
        expiration: Some(Duration::from_secs(3600)),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    let msg = PushMessage {
        channel: CHANNEL.to_owned(),
        ..message(false)
    };
    assert_eq!(client.send(&msg), Outcome::Delivered);
    let req = &server.seen()[0];
    assert_eq!(req.path, format!("/3/device/{TOKEN}"));
    assert_eq!(req.header("apns-topic"), Some(TOPIC));
    assert_eq!(req.header("apns-push-type"), Some("background"));
    assert_eq!(req.header("apns-priority"), Some("5"));
    assert_eq!(req.body, BACKGROUND_BODY);
    let expiration: u64 = req.header("apns-expiration").unwrap().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expiration.abs_diff(now + 3600) < 10,
        "{expiration} vs {now}"
    );
}

#[test]
fn provider_token_is_reused_across_pushes() {
    let server = Apns::start(|_, _| accepted());
    let client = client(&server);
    for _ in 0..3 {
        assert_eq!(client.send(&message(true)), Outcome::Delivered);
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.jwt == seen[0].jwt));
    assert_eq!(server.connections(), 1);
}

#[test]
fn token_that_is_not_hex_is_dead_without_a_request() {
    let server = Apns::start(|_, _| accepted());
    let msg = PushMessage {
        token: "../../3/device/x".to_owned(),
        ..message(true)
    };
    assert_eq!(client(&server).send(&msg), dead("BadDeviceToken"));
    assert!(server.seen().is_empty());
    assert_eq!(server.connections(), 0);
}

// ---------------------------------------------------------------------------------------
// Outcomes.

#[test]
fn gone_token_is_dead_at_once() {
    // Both reasons Apple documents for 410.
    for (body, reason) in [
        (
            r#"{"reason":"Unregistered","timestamp":1712345678901}"#,
            "Unregistered",
        ),
        (r#"{"reason":"ExpiredToken"}"#, "ExpiredToken"),
    ] {
        let server = Apns::start(move |_, _| Reply::Status(410, body));
        assert_eq!(client(&server).send(&message(true)), dead(reason));
        assert_eq!(server.seen().len(), 1);
    }
}

#[test]
fn bad_device_token_is_dead_at_once() {
    // Dead, unless every push gets it: then the setup is wrong, and the outcome says
    // what to look at (the daemon logs it).
    for (reason, suspect) in [
        (
            "BadDeviceToken",
            "apns.sandbox does not match the app build (sandbox or production)",
        ),
        (
            "DeviceTokenNotForTopic",
            "apns.bundleId is not the app's bundle id",
        ),
    ] {
        let body: &'static str = Box::leak(format!(r#"{{"reason":"{reason}"}}"#).into_boxed_str());
        let server = Apns::start(move |_, _| Reply::Status(400, body));
        assert_eq!(
            client(&server).send(&message(false)),
            Outcome::DeadUnlessMisconfigured {
                reason: reason.to_owned(),
                suspect,
            }
        );
        assert_eq!(server.seen().len(), 1);
    }
}

#[test]
fn configuration_errors_fail_at_once_and_keep_the_token() {
    let cases = [
        (
            400,
            r#"{"reason":"BadTopic"}"#,
            "apns http 400 BadTopic",
            Cause::Rejected,
        ),
        (
            403,
            r#"{"reason":"InvalidProviderToken"}"#,
            "apns http 403 InvalidProviderToken",
            Cause::Auth,
        ),
        (
            404,
            r#"{"reason":"BadPath"}"#,
            "apns http 404 BadPath",
            Cause::Rejected,
        ),
    ];
    for (status, body, reason, expected) in cases {
        let server = Apns::start(move |_, _| Reply::Status(status, body));
        let outcome = client(&server).send(&message(true));
        assert_eq!(outcome, failed(reason));
        assert_eq!(cause(&outcome), expected);
        assert_eq!(server.seen().len(), 1);
    }
}

#[test]
fn too_many_requests_then_success_is_delivered() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Status(429, r#"{"reason":"TooManyRequests"}"#),
        _ => accepted(),
    });
    assert_eq!(client(&server).send(&message(true)), Outcome::Delivered);
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn internal_server_error_then_success_is_delivered() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Status(500, r#"{"reason":"InternalServerError"}"#),
        _ => accepted(),
    });
    assert_eq!(client(&server).send(&message(true)), Outcome::Delivered);
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn permanent_unavailability_fails_within_the_deadline() {
    let server = Apns::start(|_, _| Reply::Status(503, r#"{"reason":"ServiceUnavailable"}"#));
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(1500),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    let started = Instant::now();
    let outcome = client.send(&message(true));
    let elapsed = started.elapsed();
    assert_eq!(outcome, failed("apns http 503 ServiceUnavailable"));
    assert_eq!(cause(&outcome), Cause::ProviderError);
    // A hang guard, three times the deadline (that no attempt starts past it is
    // push::retry's unit tests', on a clock they move).
    assert!(elapsed < 3 * Duration::from_millis(1500), "{elapsed:?}");
    let attempts = server.seen().len();
    assert!((2..=8).contains(&attempts), "{attempts} attempts");
}

#[test]
fn too_many_requests_until_the_deadline_is_rate_limited() {
    let server = Apns::start(|_, _| Reply::Status(429, r#"{"reason":"TooManyRequests"}"#));
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(1000),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    let outcome = client.send(&message(true));
    assert_eq!(outcome, failed("apns http 429 TooManyRequests"));
    assert_eq!(cause(&outcome), Cause::RateLimited);
    assert!(server.seen().len() >= 2, "retried");
}

#[test]
fn an_apns_that_keeps_failing_is_left_alone() {
    let server = Apns::start(|_, _| Reply::Status(503, r#"{"reason":"ServiceUnavailable"}"#));
    let client = ApnsClient::new(ApnsSettings {
        cool_down: CoolDownSettings {
            after_failures: 3,
            first: Duration::from_secs(60),
            longest: Duration::from_secs(60),
        },
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    assert_eq!(cause(&client.send(&message(true))), Cause::ProviderError);
    assert_eq!(server.seen().len(), 3);
    for _ in 0..20 {
        assert_eq!(cause(&client.send(&message(false))), Cause::CoolingDown);
    }
    assert_eq!(server.seen().len(), 3);
}

#[test]
fn expired_provider_token_is_replaced_once() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Status(403, r#"{"reason":"ExpiredProviderToken"}"#),
        _ => accepted(),
    });
    let client = client(&server);
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    let (first, second) = (seen[0].jwt.clone().unwrap(), seen[1].jwt.clone().unwrap());
    assert_ne!(first, second, "a new token after ExpiredProviderToken");
    check_jwt(&second).unwrap();
    // The new token is the one kept.
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    assert_eq!(server.seen()[2].jwt.as_deref(), Some(&*second));
}

#[test]
fn expired_provider_token_twice_fails() {
    let server = Apns::start(|_, _| Reply::Status(403, r#"{"reason":"ExpiredProviderToken"}"#));
    assert_eq!(
        client(&server).send(&message(true)),
        failed("apns http 403 ExpiredProviderToken with a fresh token")
    );
    assert_eq!(server.seen().len(), 2);
}

// ---------------------------------------------------------------------------------------
// The connection.

#[test]
fn hundred_concurrent_pushes_share_one_connection() {
    let server = Apns::start(|_, _| Reply::Slow(Duration::from_millis(50), 200));
    let client = client(&server);
    // One push first, so that the connection is up before the crowd arrives.
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let barrier = Arc::new(Barrier::new(100));
    let started = Instant::now();
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                client.send(&message(i % 2 == 0))
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Outcome::Delivered);
    }
    let elapsed = started.elapsed();
    let seen = server.seen();
    assert_eq!(seen.len(), 101);
    assert_eq!(server.connections(), 1);
    assert!(seen.iter().all(|s| s.connection == 0));
    // 100 answers that take 50 ms each: they overlapped, as the stand-in counted.
    let peak = server.peak_in_flight();
    assert!(
        peak >= 10,
        "peak of {peak} streams in flight ({elapsed:?} in all)"
    );
}

#[test]
fn pushes_arriving_before_the_connection_is_up_share_it() {
    let server = Apns::start(|_, _| accepted());
    let client = client(&server);
    let barrier = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                client.send(&message(true))
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Outcome::Delivered);
    }
    assert_eq!(server.seen().len(), 20);
    assert_eq!(server.connections(), 1);
}

fn reconnects_after(control: Control) {
    let server = Apns::start(|_, _| accepted());
    let client = client(&server);
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    server.control(control);
    server.wait_closed(1);
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    assert_eq!(server.connections(), 2);
    let seen = server.seen();
    assert_eq!(seen.last().unwrap().connection, 1);
}

#[test]
fn goaway_between_pushes_reconnects() {
    reconnects_after(Control::GoAway);
}

#[test]
fn dropped_connection_between_pushes_reconnects() {
    reconnects_after(Control::Drop);
}

#[test]
fn goaway_noticed_late_reconnects() {
    // The client has not read the GOAWAY yet when it sends: the push must still succeed.
    for _ in 0..5 {
        let server = Apns::start(|_, _| accepted());
        let client = client(&server);
        assert_eq!(client.send(&message(true)), Outcome::Delivered);
        server.control(Control::GoAway);
        assert_eq!(client.send(&message(true)), Outcome::Delivered);
    }
}

#[test]
fn refused_stream_is_retried_at_once() {
    let server = Apns::start(|i, _| match i {
        1 => Reply::Reset(Reason::REFUSED_STREAM),
        _ => accepted(),
    });
    let client = client(&server);
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    // Retried on the same connection, and delivered. That a request never processed is
    // retried without a backoff is the unit tests' (transport_class, push::retry), on a
    // clock they move.
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    assert_eq!(server.seen().len(), 3);
    assert_eq!(server.connections(), 1);
}

#[test]
fn other_stream_reset_is_retried_after_a_backoff() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Reset(Reason::INTERNAL_ERROR),
        _ => accepted(),
    });
    assert_eq!(client(&server).send(&message(true)), Outcome::Delivered);
    assert_eq!(server.seen().len(), 2);
    assert_eq!(server.connections(), 1);
}

#[test]
fn unanswered_request_times_out_and_the_next_attempt_reconnects() {
    let server = Apns::start(|i, _| match i {
        0 => Reply::Hang,
        _ => accepted(),
    });
    let client = ApnsClient::new(ApnsSettings {
        request_timeout: Duration::from_millis(300),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    let started = Instant::now();
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].connection, seen[1].connection), (0, 1));
    // The abandoned connection is closed by the client once nothing uses it.
    server.wait_closed(1);
}

#[test]
fn request_cut_short_by_the_deadline_keeps_the_connection() {
    let server = Apns::start(|i, _| match i {
        1 => Reply::Hang,
        _ => accepted(),
    });
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(400),
        request_timeout: Duration::from_secs(2),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let started = Instant::now();
    assert_eq!(
        client.send(&message(true)),
        failed("apns request timed out")
    );
    // Cut by the 400 ms deadline, not the 2 s request timeout (a guard of 3 × 400 ms).
    assert!(started.elapsed() < 3 * Duration::from_millis(400));
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    assert_eq!(server.connections(), 1);
}

#[test]
fn dropping_the_client_closes_the_connection() {
    let server = Apns::start(|_, _| accepted());
    let client = client(&server);
    let other = client.clone();
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    drop(client);
    assert_eq!(other.send(&message(true)), Outcome::Delivered);
    drop(other);
    server.wait_closed(1);
    assert_eq!(server.connections(), 1);
}

#[test]
fn unreachable_server_fails_within_the_deadline() {
    // A port that was just free: connecting is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(1000),
        ..settings(format!("http://127.0.0.1:{port}"), token_auth())
    })
    .unwrap();
    let started = Instant::now();
    let outcome = client.send(&message(true));
    // A hang guard, three times the deadline.
    assert!(started.elapsed() < 3 * Duration::from_millis(1000));
    match outcome {
        Outcome::Failed { reason, cause } => {
            assert!(reason.starts_with("apns tcp connect: "), "{reason}");
            assert_eq!(cause, Cause::Transport);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_pushes_to_an_unreachable_server_all_fail_in_time() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(800),
        ..settings(format!("http://127.0.0.1:{port}"), token_auth())
    })
    .unwrap();
    let started = Instant::now();
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            thread::spawn(move || client.send(&message(true)))
        })
        .collect();
    for t in threads {
        assert!(matches!(t.join().unwrap(), Outcome::Failed { .. }));
    }
    // Three times the deadline: twenty connects one after the other would take 16 s.
    assert!(started.elapsed() < 3 * Duration::from_millis(800));
}

#[test]
fn tls_handshake_that_never_completes_times_out() {
    // Accepted by the kernel, never answered: the TLS handshake hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", silent.local_addr().unwrap());
    let client = ApnsClient::new(ApnsSettings {
        extra_roots: vec![fixture("apns-ca.pem")],
        deadline: Duration::from_millis(1000),
        request_timeout: Duration::from_millis(300),
        ..settings(url, token_auth())
    })
    .unwrap();
    let started = Instant::now();
    let outcome = client.send(&message(true));
    assert_eq!(outcome, failed("apns connect timed out"));
    assert_eq!(cause(&outcome), Cause::Timeout);
    let elapsed = started.elapsed();
    // Not before the connect timeout; a hang guard of three times it.
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < 3 * Duration::from_millis(600), "{elapsed:?}");
    drop(silent);
}

#[test]
fn client_survives_a_server_that_comes_back() {
    let server = Apns::start(|_, _| accepted());
    let client = client(&server);
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    server.control(Control::Drop);
    server.wait_closed(1);
    assert_eq!(client.send(&message(false)), Outcome::Delivered);
    server.control(Control::GoAway);
    server.wait_closed(2);
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    assert_eq!(server.connections(), 3);
}

// ---------------------------------------------------------------------------------------
// TLS.

fn tls_settings(server: &Apns, auth: ApnsAuth) -> ApnsSettings {
    ApnsSettings {
        extra_roots: vec![fixture("apns-ca.pem")],
        ..settings(server.url(), auth)
    }
}

#[test]
fn tls_with_client_certificate() {
    for key in ["apns-client.key", "apns-client.rsa.key"] {
        let server = Apns::start_tls(true, |_, _| accepted());
        let client = ApnsClient::new(tls_settings(&server, certificate_auth(key))).unwrap();
        assert_eq!(client.send(&message(true)), Outcome::Delivered, "{key}");
        assert_eq!(client.send(&message(false)), Outcome::Delivered, "{key}");
        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().all(|s| s.client_certificate && s.jwt.is_none()));
        assert_eq!(seen[0].header("apns-push-type"), Some("alert"));
        assert_eq!(seen[0].body, ALERT_BODY);
        assert_eq!(server.connections(), 1);
    }
}

#[test]
fn the_java_p2_certificate_settings_reach_the_client() {
    // `certificate` and `privateKey`, as the Java p2's config has them, read by the
    // config loader and turned into a client by the daemon's own wiring.
    let server = Apns::start_tls(true, |_, _| accepted());
    let dir = common::scratch::Scratch::new("apns-java-config");
    let path = dir.join("config.json");
    let json = serde_json::json!({
        "jid": "push.localhost", "sharedSecret": "s",
        "apns": {
            "bundleId": TOPIC,
            "sandbox": false,
            "certificate": fixture("apns-client.pem"),
            "privateKey": fixture("apns-client.key"),
            "baseUrl": server.url(),
            "caFile": fixture("apns-ca.pem"),
        }
    });
    std::fs::write(&path, json.to_string()).unwrap();
    let (config, _) = p2::config::Config::load(Some(&path), &|_| None).unwrap();
    let client = p2::apns_client(&config).unwrap().expect("an APNs client");
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].client_certificate && seen[0].jwt.is_none());
    assert_eq!(seen[0].header("apns-push-type"), Some("alert"));
}

#[test]
fn tls_with_provider_token() {
    let server = Apns::start_tls(false, |_, _| accepted());
    let client = ApnsClient::new(tls_settings(&server, token_auth())).unwrap();
    assert_eq!(client.send(&message(true)), Outcome::Delivered);
    let req = &server.seen()[0];
    assert!(!req.client_certificate);
    check_jwt(req.jwt.as_deref().unwrap()).unwrap();
}

#[test]
fn tls_server_not_trusted_fails() {
    let server = Apns::start_tls(false, |_, _| accepted());
    let client = ApnsClient::new(ApnsSettings {
        extra_roots: Vec::new(),
        deadline: Duration::from_millis(800),
        ..settings(server.url(), token_auth())
    })
    .unwrap();
    match client.send(&message(true)) {
        Outcome::Failed { reason, .. } => {
            assert!(
                reason.starts_with("apns tls: invalid peer certificate"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(server.seen().is_empty());
}

#[test]
fn tls_server_requiring_a_certificate_refuses_token_clients() {
    let server = Apns::start_tls(true, |_, _| accepted());
    let client = ApnsClient::new(ApnsSettings {
        deadline: Duration::from_millis(800),
        ..tls_settings(&server, token_auth())
    })
    .unwrap();
    assert!(matches!(
        client.send(&message(true)),
        Outcome::Failed { .. }
    ));
    assert!(server.seen().is_empty());
}

// ---------------------------------------------------------------------------------------
// Construction.

fn construction_error(settings: ApnsSettings) -> String {
    ApnsClient::new(settings)
        .expect_err("construction refused")
        .to_string()
}

#[test]
fn bad_files_and_settings_are_refused_at_construction() {
    let dir = common::scratch::Scratch::new("apns-files");
    let garbage = dir.join("garbage.p8");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let encrypted = dir.join("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjAp\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let url = "http://127.0.0.1:9".to_owned();
    let token = |key_file: PathBuf| ApnsAuth::Token {
        key_file,
        key_id: KEY_ID.to_owned(),
        team_id: TEAM_ID.to_owned(),
    };
    let certificate = |certificate: PathBuf, private_key: PathBuf| ApnsAuth::Certificate {
        certificate,
        private_key,
    };
    let https = "https://127.0.0.1:9".to_owned();
    let d = |p: &PathBuf| p.display().to_string();
    let cases = [
        (
            settings(url.clone(), token(garbage.clone())),
            format!("bad private key in {}: ", d(&garbage)),
        ),
        (
            settings(url.clone(), token(dir.join("missing.p8"))),
            format!("cannot read {}: ", d(&dir.join("missing.p8"))),
        ),
        (
            settings(url.clone(), token(fixture("apns-client.key"))),
            format!(
                "bad private key in {}: not an EC P-256 key",
                d(&fixture("apns-client.key"))
            ),
        ),
        (
            settings(url.clone(), token(encrypted.clone())),
            format!("bad private key in {}: the key is encrypted", d(&encrypted)),
        ),
        (
            settings(
                https.clone(),
                certificate(fixture("apns-client.pem"), fixture("apns-server.key")),
            ),
            format!(
                "bad private key in {}: does not belong to {}",
                d(&fixture("apns-server.key")),
                d(&fixture("apns-client.pem"))
            ),
        ),
        (
            settings(
                https.clone(),
                certificate(empty.clone(), fixture("apns-client.key")),
            ),
            format!("bad certificate in {}: no PEM certificate found", d(&empty)),
        ),
        (
            settings(
                https.clone(),
                certificate(fixture("apns-client.pem"), fixture("apns-client.pem")),
            ),
            format!(
                "bad private key in {}: no PEM private key",
                d(&fixture("apns-client.pem"))
            ),
        ),
        (
            ApnsSettings {
                extra_roots: vec![empty.clone()],
                ..settings(https.clone(), token_auth())
            },
            format!("bad certificate in {}: no PEM certificate found", d(&empty)),
        ),
        (
            ApnsSettings {
                topic: " ".to_owned(),
                ..settings(url.clone(), token_auth())
            },
            "bad apns topic: is empty".to_owned(),
        ),
        (
            settings("api.push.apple.com".to_owned(), token_auth()),
            "bad apns base_url: \"api.push.apple.com\" must start with https://".to_owned(),
        ),
    ];
    for (settings, expected) in cases {
        let error = construction_error(settings);
        assert!(
            error.starts_with(&expected),
            "{error:?} should start with {expected:?}"
        );
        assert!(!error.contains("BEGIN"), "{error}");
    }
    // An Apple-shaped .p8 (curve named inside the key too) is accepted.
    let apple = ApnsAuth::Token {
        key_file: fixture("apns-token-key-apple-form.p8"),
        key_id: KEY_ID.to_owned(),
        team_id: TEAM_ID.to_owned(),
    };
    ApnsClient::new(settings(url, apple)).expect("apple-form key loads");
}

#[test]
fn default_settings() {
    let s = ApnsSettings::new(TOPIC, token_auth());
    assert_eq!(s.base_url, "https://api.push.apple.com");
    assert_eq!(
        p2::push::apns::SANDBOX_URL,
        "https://api.sandbox.push.apple.com"
    );
    assert_eq!(s.deadline, Duration::from_secs(15));
    assert_eq!(s.request_timeout, Duration::from_secs(10));
    assert_eq!(s.expiration, None);
    assert!(s.extra_roots.is_empty());
    // Made without connecting: a client for Apple's real host starts without the network.
    ApnsClient::new(s).expect("client starts");
}
