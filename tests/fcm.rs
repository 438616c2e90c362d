//! The FCM client and Google OAuth against a loopback server playing both FCM and the token endpoint.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::fcm::{
    scripted, server, FCM_PATH, OK_BODY, QUOTA_EXCEEDED, UNAUTHENTICATED, UNAVAILABLE,
    UNREGISTERED, WRONG_PROJECT,
};
use common::http::{MockServer, Response};
use common::keys;
use p2::push::cooldown::CoolDownSettings;
use p2::push::fcm::{FcmClient, FcmSettings};
use p2::push::google_auth::{AuthError, ServiceAccount, TokenSource};
use p2::push::{Cause, Outcome, PushMessage};

const PUSH_TOKEN: &str = "dGVzdC1mY20tcmVnaXN0cmF0aW9uLXRva2Vu:APA91bHun4MxP5egoKMwt2KZFBaFUH";
const DEVICE: &str = "2b0e0a3f5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f";

fn message() -> PushMessage {
    PushMessage {
        token: PUSH_TOKEN.to_owned(),
        device: DEVICE.to_owned(),
        channel: String::new(),
        has_body: true,
    }
}

/// Short deadlines so failures finish in seconds.
fn settings(base_url: String) -> FcmSettings {
    FcmSettings {
        base_url,
        deadline: Duration::from_secs(2),
        request_timeout: Duration::from_secs(1),
        ..FcmSettings::default()
    }
}

fn account(server: &MockServer) -> ServiceAccount {
    let dir = common::scratch::Scratch::new("fcm");
    let path = keys::write_service_account(&dir, &format!("{}/token", server.url()));
    ServiceAccount::from_file(&path).expect("test service account reads")
}

fn client(server: &MockServer) -> FcmClient {
    FcmClient::new(settings(server.url()), account(server)).expect("client builds")
}

fn assert_failed_without_secrets(outcome: &Outcome) -> String {
    let Outcome::Failed { reason, .. } = outcome else {
        panic!("expected Failed, got {outcome:?}");
    };
    assert!(!reason.contains(PUSH_TOKEN), "{reason}");
    assert!(!reason.contains("ya29"), "{reason}");
    assert!(!reason.contains("PRIVATE KEY"), "{reason}");
    reason.clone()
}

/// Runs `f` on `n` threads released at once; its results, in thread order.
fn at_once<T: Send + 'static>(n: usize, f: impl Fn() -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (f, barrier) = (Arc::clone(&f), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                f()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// The cause of a failed push.
fn cause(outcome: &Outcome) -> Cause {
    match outcome {
        Outcome::Failed { cause, .. } => *cause,
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn token_endpoint_gets_a_signed_jwt_with_the_right_claims() {
    let server = server(|_| Response::json(200, OK_BODY));
    assert_eq!(client(&server).send(&message()), Outcome::Delivered);

    let tokens = server.requests_to("/token");
    assert_eq!(tokens.len(), 1);
    let req = &tokens[0];
    assert_eq!(keys::check_token_request(req), Ok(()));
    assert_eq!(
        req.form("grant_type").as_deref(),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    let claims = keys::verify_jwt(&req.form("assertion").unwrap()).unwrap();
    assert_eq!(claims.header["alg"], "RS256");
    assert_eq!(claims.header["typ"], "JWT");
    assert_eq!(claims.header["kid"], keys::PRIVATE_KEY_ID);
    assert_eq!(claims.payload["iss"], keys::CLIENT_EMAIL);
    assert_eq!(claims.payload["scope"], keys::FCM_SCOPE);
    assert_eq!(claims.payload["aud"], format!("{}/token", server.url()));
    let iat = claims.payload["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(keys::unix_now()) <= 5);
    assert_eq!(claims.payload["exp"].as_u64().unwrap(), iat + 3600);
}

#[test]
fn fcm_gets_bearer_path_and_body_and_delivers() {
    let server = server(|_| Response::json(200, OK_BODY));
    let client = client(&server);
    assert_eq!(client.project_id(), "p2-test");
    assert_eq!(client.send(&message()), Outcome::Delivered);

    let pushes = server.requests_to("/v1/");
    assert_eq!(pushes.len(), 1);
    let req = &pushes[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, FCM_PATH);
    let token_seq = server.requests_to("/token")[0].seq;
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {}", keys::access_token_for(token_seq)).as_str())
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.body_str(),
        format!(
            r#"{{"message":{{"token":"{PUSH_TOKEN}","data":{{"account":"{DEVICE}"}},"android":{{"priority":"high","collapse_key":"2b0e0a"}}}}}}"#
        )
    );
}

#[test]
fn unregistered_is_a_dead_token() {
    let server = server(|_| Response::json(404, UNREGISTERED));
    assert_eq!(
        client(&server).send(&message()),
        Outcome::DeadToken {
            reason: "UNREGISTERED".to_owned()
        }
    );
    assert_eq!(
        server.requests_to("/v1/").len(),
        1,
        "no retry on a dead token"
    );
}

#[test]
fn retry_after_is_honoured_then_delivered() {
    let server = server(scripted(vec![
        Response::json(503, UNAVAILABLE).header("Retry-After", "1")
    ]));
    let started = Instant::now();
    assert_eq!(client(&server).send(&message()), Outcome::Delivered);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    // A hang guard, three times the wait.
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(server.requests_to("/v1/").len(), 2);
}

#[test]
fn retry_after_beyond_the_deadline_gives_up_at_once() {
    let server = server(|_| Response::json(429, "").header("Retry-After", "60"));
    let started = Instant::now();
    let outcome = client(&server).send(&message());
    let reason = assert_failed_without_secrets(&outcome);
    assert_eq!(reason, "fcm http 429");
    assert_eq!(cause(&outcome), Cause::RateLimited);
    // A hang guard, three times the 2 s deadline: far from the 60 s asked for (that a
    // wait past the deadline ends the push at once is push::retry's unit tests', on a
    // clock they move).
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.requests_to("/v1/").len(), 1);
}

#[test]
fn permanent_503_fails_within_the_deadline() {
    let server = server(|_| Response::json(503, UNAVAILABLE));
    let started = Instant::now();
    let outcome = client(&server).send(&message());
    let reason = assert_failed_without_secrets(&outcome);
    let elapsed = started.elapsed();
    assert_eq!(reason, "fcm http 503 UNAVAILABLE");
    assert_eq!(cause(&outcome), Cause::ProviderError);
    // A hang guard, three times the 2 s deadline (no attempt starts past it: push::retry's
    // unit tests).
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    let attempts = server.requests_to("/v1/").len();
    // 200 ms doubling with jitter: about 4 attempts fit in 2 s, never a tight loop.
    assert!((2..=8).contains(&attempts), "{attempts} attempts");
}

#[test]
fn quota_exceeded_without_retry_after_is_answered_at_once() {
    let server = server(|_| Response::json(429, QUOTA_EXCEEDED));
    let outcome = client(&server).send(&message());
    assert_eq!(
        outcome,
        Outcome::Failed {
            cause: Cause::RateLimited,
            reason: "fcm QUOTA_EXCEEDED".to_owned()
        }
    );
    assert_eq!(server.requests_to("/v1/").len(), 1, "not retried");
}

#[test]
fn quota_exceeded_with_retry_after_within_the_deadline_is_retried() {
    let server = server(scripted(vec![
        Response::json(429, QUOTA_EXCEEDED).header("Retry-After", "1")
    ]));
    assert_eq!(client(&server).send(&message()), Outcome::Delivered);
    assert_eq!(server.requests_to("/v1/").len(), 2);
}

#[test]
fn a_short_outage_during_one_push_does_not_hold_back_the_next() {
    // Default cool-down: one push's retries within its deadline are not enough to open it,
    // so the push right after the outage goes to FCM (a refused push is a lost wake-up).
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d = Arc::clone(&down);
    let server = server(move |_| {
        if d.load(Ordering::SeqCst) {
            Response::json(503, UNAVAILABLE)
        } else {
            Response::json(200, OK_BODY)
        }
    });
    let client = client(&server);
    assert_eq!(cause(&client.send(&message())), Cause::ProviderError);
    let during = server.requests_to("/v1/").len();
    assert!(during >= 2, "retried");
    down.store(false, Ordering::SeqCst);
    assert_eq!(client.send(&message()), Outcome::Delivered);
    assert_eq!(server.requests_to("/v1/").len(), during + 1);
}

#[test]
fn expired_access_token_is_refreshed_once() {
    let server = server(scripted(vec![Response::json(401, UNAUTHENTICATED)]));
    assert_eq!(client(&server).send(&message()), Outcome::Delivered);

    let tokens = server.requests_to("/token");
    let pushes = server.requests_to("/v1/");
    assert_eq!(tokens.len(), 2, "one fetch, one refresh");
    assert_eq!(pushes.len(), 2);
    let bearer = |seq| format!("Bearer {}", keys::access_token_for(seq));
    assert_eq!(
        pushes[0].header("authorization"),
        Some(bearer(tokens[0].seq).as_str())
    );
    assert_eq!(
        pushes[1].header("authorization"),
        Some(bearer(tokens[1].seq).as_str())
    );
}

#[test]
fn second_401_fails() {
    let server = server(|_| Response::json(401, UNAUTHENTICATED));
    let reason = assert_failed_without_secrets(&client(&server).send(&message()));
    assert_eq!(reason, "fcm http 401 UNAUTHENTICATED with a fresh token");
    assert_eq!(server.requests_to("/token").len(), 2);
    assert_eq!(server.requests_to("/v1/").len(), 2);
}

#[test]
fn not_found_without_fcm_error_is_not_a_dead_token() {
    let server = server(|_| Response::json(404, WRONG_PROJECT));
    let outcome = client(&server).send(&message());
    let reason = assert_failed_without_secrets(&outcome);
    assert_eq!(reason, "fcm http 404 NOT_FOUND");
    assert_eq!(cause(&outcome), Cause::Rejected);
    assert_eq!(server.requests_to("/v1/").len(), 1);
}

#[test]
fn connection_refused_fails_within_the_deadline() {
    let server = server(|_| Response::json(200, OK_BODY));
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = FcmClient::new(settings(format!("http://{closed}")), account(&server)).unwrap();
    let started = Instant::now();
    let outcome = client.send(&message());
    let reason = assert_failed_without_secrets(&outcome);
    assert!(reason.starts_with("fcm transport: "), "{reason}");
    assert_eq!(cause(&outcome), Cause::Transport);
    // A hang guard, three times the 2 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn slow_fcm_times_out_and_fails_within_the_deadline() {
    let server = server(|_| Response::json(200, OK_BODY).delay(Duration::from_secs(3)));
    let client = FcmClient::new(
        FcmSettings {
            request_timeout: Duration::from_millis(300),
            ..settings(server.url())
        },
        account(&server),
    )
    .unwrap();
    let started = Instant::now();
    let outcome = client.send(&message());
    let reason = assert_failed_without_secrets(&outcome);
    assert!(reason.starts_with("fcm transport: "), "{reason}");
    assert_eq!(cause(&outcome), Cause::Timeout);
    // A hang guard, three times the 2 s deadline.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(
        server.requests_to("/v1/").len() >= 2,
        "timed-out requests are retried"
    );
}

#[test]
fn cold_start_with_50_threads_fetches_one_token() {
    let server = MockServer::start(|req| {
        if req.path == "/token" {
            // Slow, so every thread arrives while the fetch is in flight.
            keys::token_endpoint(req).delay(Duration::from_millis(300))
        } else {
            Response::json(200, OK_BODY)
        }
    });
    let client = client(&server);
    for outcome in at_once(50, move || client.send(&message())) {
        assert_eq!(outcome, Outcome::Delivered);
    }
    assert_eq!(server.requests_to("/token").len(), 1);
    assert_eq!(server.requests_to("/v1/").len(), 50);
}

#[test]
fn token_source_serves_100_concurrent_callers_with_one_fetch() {
    let server =
        MockServer::start(|req| keys::token_endpoint(req).delay(Duration::from_millis(200)));
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .new_agent();
    let source = Arc::new(TokenSource::new(account(&server), agent).unwrap());
    let shared = Arc::clone(&source);
    let tokens: Vec<_> = at_once(100, move || shared.token())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(server.requests().len(), 1);
    assert!(tokens.iter().all(|t| *t == tokens[0]));
    assert_eq!(tokens[0].secret(), keys::access_token_for(0));

    // Cached now; a stale invalidate keeps it, the right one drops it.
    assert_eq!(source.token().unwrap(), tokens[0]);
    source.invalidate(&tokens[0]);
    let fresh = source.token().unwrap();
    assert_ne!(fresh, tokens[0]);
    source.invalidate(&tokens[0]);
    assert_eq!(source.token().unwrap(), fresh);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn keep_alive_reuses_connections() {
    let server = server(|_| Response::json(200, OK_BODY));
    let client = client(&server);
    for _ in 0..100 {
        assert_eq!(client.send(&message()), Outcome::Delivered);
    }
    assert_eq!(server.requests_to("/token").len(), 1, "the token is cached");
    assert_eq!(server.requests_to("/v1/").len(), 100);
    let opened = server.connections_opened();
    assert!(
        (1..=2).contains(&opened),
        "{opened} connections for 100 pushes"
    );
}

#[test]
fn keep_alive_survives_error_answers() {
    // Error bodies are read fully, so the connection goes back to the pool.
    let server = server(|_| Response::json(404, UNREGISTERED));
    let client = client(&server);
    for _ in 0..20 {
        assert!(matches!(client.send(&message()), Outcome::DeadToken { .. }));
    }
    let opened = server.connections_opened();
    assert!(
        (1..=2).contains(&opened),
        "{opened} connections for 20 pushes"
    );
}

#[test]
fn oauth_rejection_fails_and_is_not_hammered() {
    let server = MockServer::start(|req| {
        if req.path == "/token" {
            Response::json(
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            )
        } else {
            Response::json(200, OK_BODY)
        }
    });
    let client = client(&server);
    let outcome = client.send(&message());
    let reason = assert_failed_without_secrets(&outcome);
    assert_eq!(
        reason,
        "oauth: token endpoint answered http 400 invalid_grant"
    );
    assert_eq!(cause(&outcome), Cause::Auth);
    assert!(
        !reason.contains("Invalid JWT Signature"),
        "only the code, never the body"
    );
    // Within the backoff, callers get the last error without a new fetch.
    for _ in 0..5 {
        assert_eq!(
            assert_failed_without_secrets(&client.send(&message())),
            reason
        );
    }
    assert_eq!(server.requests_to("/token").len(), 1);
    assert_eq!(server.requests_to("/v1/").len(), 0);
    // After it, the next call tries again.
    thread::sleep(Duration::from_millis(1100));
    assert_failed_without_secrets(&client.send(&message()));
    assert_eq!(server.requests_to("/token").len(), 2);
}

#[test]
fn oauth_garbage_answer_is_a_bad_response() {
    let server = MockServer::start(|_| Response::text(200, "<html>captive portal</html>"));
    let reason = assert_failed_without_secrets(&client(&server).send(&message()));
    assert_eq!(reason, "oauth: bad token response: not json");
}

#[test]
fn service_account_file_errors() {
    let dir = common::scratch::Scratch::new("sa-errors");
    let missing = dir.join("nope.json");
    let err = ServiceAccount::from_file(&missing).unwrap_err();
    assert!(matches!(err, AuthError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("cannot read service account "),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());

    let mut json: serde_json::Value =
        serde_json::from_str(&keys::service_account_json("http://127.0.0.1:9/token")).unwrap();
    json.as_object_mut().unwrap().remove("client_email");
    let path = dir.join("partial.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let err = ServiceAccount::from_file(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service account has no string field `client_email`"
    );

    let mut account =
        ServiceAccount::from_json(&keys::service_account_json("http://x/token")).unwrap();
    account.private_key = account.private_key.replace("MII", "XXX");
    let err = FcmClient::new(FcmSettings::default(), account).unwrap_err();
    assert!(matches!(err, AuthError::Key(_)), "{err:?}");
    assert!(!err.to_string().contains("XXX"), "{err}");
}

#[test]
fn oauth_expires_in_of_2_64_minus_1_is_clamped_not_an_abort() {
    // In a debug build an overflowing `Instant + Duration` panics; in release it aborts.
    let server = MockServer::start(|req| {
        if req.path == "/token" {
            Response::json(
                200,
                r#"{"access_token":"ya29.forever","expires_in":18446744073709551615,"token_type":"Bearer"}"#,
            )
        } else {
            Response::json(200, OK_BODY)
        }
    });
    let client = client(&server);
    for _ in 0..3 {
        assert_eq!(client.send(&message()), Outcome::Delivered);
    }
    assert_eq!(server.requests_to("/token").len(), 1, "the token is cached");
    let pushes = server.requests_to("/v1/");
    assert_eq!(pushes.len(), 3);
    assert_eq!(
        pushes[2].header("authorization"),
        Some("Bearer ya29.forever")
    );
}

#[test]
fn token_fetch_is_bounded_by_the_push_deadline() {
    // The token endpoint takes 5 s; the push has 1 s (and a 10 s request timeout).
    let server = MockServer::start(|req| {
        if req.path == "/token" {
            keys::token_endpoint(req).delay(Duration::from_secs(5))
        } else {
            Response::json(200, OK_BODY)
        }
    });
    let client = FcmClient::new(
        FcmSettings {
            deadline: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            ..settings(server.url())
        },
        account(&server),
    )
    .unwrap();
    let started = Instant::now();
    let outcome = client.send(&message());
    // A hang guard, three times the deadline: without the bound it takes 5 s.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(assert_failed_without_secrets(&outcome).starts_with("oauth: "));
    assert_eq!(cause(&outcome), Cause::Auth);
    assert!(server.requests_to("/v1/").is_empty());
}

/// A client whose cool-down opens after 3 failed attempts, for `first`.
fn cooling_client(server: &MockServer, first: Duration) -> FcmClient {
    FcmClient::new(
        FcmSettings {
            cool_down: CoolDownSettings {
                after_failures: 3,
                first,
                longest: first * 2,
            },
            ..settings(server.url())
        },
        account(server),
    )
    .unwrap()
}

#[test]
fn a_provider_that_keeps_failing_is_left_alone() {
    let server = server(|_| Response::json(503, UNAVAILABLE));
    let client = cooling_client(&server, Duration::from_secs(60));
    // The first push fails three times in a row: the cool-down opens and the push stops.
    let first = client.send(&message());
    assert_eq!(cause(&first), Cause::ProviderError);
    assert_eq!(server.requests_to("/v1/").len(), 3);
    // Every later push is answered at once, without a request.
    for _ in 0..20 {
        let outcome = client.send(&message());
        assert_eq!(cause(&outcome), Cause::CoolingDown, "{outcome:?}");
    }
    assert_eq!(server.requests_to("/v1/").len(), 3);
}

#[test]
fn quota_exceeded_again_and_again_cools_fcm_down() {
    // Each is answered at once; three in a row and FCM is left alone.
    let server = server(|_| Response::json(429, QUOTA_EXCEEDED));
    let client = cooling_client(&server, Duration::from_secs(60));
    for _ in 0..3 {
        assert_eq!(cause(&client.send(&message())), Cause::RateLimited);
    }
    for _ in 0..10 {
        assert_eq!(cause(&client.send(&message())), Cause::CoolingDown);
    }
    assert_eq!(server.requests_to("/v1/").len(), 3);
}

#[test]
fn concurrent_pushes_to_a_failing_provider_stop_together() {
    let server = server(|_| Response::json(503, UNAVAILABLE));
    let client = cooling_client(&server, Duration::from_secs(60));
    let each = at_once(4, move || {
        (0..5)
            .map(|_| cause(&client.send(&message())))
            .collect::<Vec<_>>()
    });
    for causes in each {
        // Each thread's first push may have been sent (and failed); none after it was.
        assert!(
            matches!(causes[0], Cause::ProviderError | Cause::CoolingDown),
            "{causes:?}"
        );
        assert!(
            causes[1..].iter().all(|c| *c == Cause::CoolingDown),
            "{causes:?}"
        );
    }
    // Three failures open it; at most one attempt per other thread was under way by then,
    // and each of those pushes stops after it.
    let requests = server.requests_to("/v1/").len();
    assert!((3..=3 + 3).contains(&requests), "{requests} requests");
}

#[test]
fn one_probe_at_a_time_detects_the_recovery() {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let d = Arc::clone(&down);
    let server = server(move |_| {
        if d.load(Ordering::SeqCst) {
            Response::json(503, UNAVAILABLE)
        } else {
            // Slow, so that the other pushes arrive while the probe is out.
            Response::json(200, OK_BODY).delay(Duration::from_millis(500))
        }
    });
    let first = Duration::from_millis(300);
    let client = cooling_client(&server, first);
    assert_eq!(cause(&client.send(&message())), Cause::ProviderError);
    assert_eq!(server.requests_to("/v1/").len(), 3);

    // Still down when the cool-down ends: one probe, which fails and reopens it.
    thread::sleep(first);
    assert_eq!(cause(&client.send(&message())), Cause::ProviderError);
    assert_eq!(server.requests_to("/v1/").len(), 4);
    assert_eq!(cause(&client.send(&message())), Cause::CoolingDown);
    assert_eq!(server.requests_to("/v1/").len(), 4);

    // Back up: after the (doubled) cool-down, ten pushes at once send one probe; the
    // others are refused while it is out.
    down.store(false, Ordering::SeqCst);
    thread::sleep(first * 2);
    let both = client.clone();
    let outcomes = at_once(10, move || both.send(&message()));
    let delivered = outcomes
        .iter()
        .filter(|o| **o == Outcome::Delivered)
        .count();
    assert_eq!(delivered, 1, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| *o == Outcome::Delivered || cause(o) == Cause::CoolingDown));
    assert_eq!(server.requests_to("/v1/").len(), 5);
    // The probe was answered: pushes go again.
    assert_eq!(client.send(&message()), Outcome::Delivered);
    assert_eq!(server.requests_to("/v1/").len(), 6);
}
