//! One line per rule of PROTOCOL.md §3–§5: real stanzas in, the replies and the store
//! compared with literals from the spec.

use std::time::Duration;

use p2::config::Limits;
use p2::push::Outcome;

use crate::harness::*;

const RESULT: &str = "result";
const WAIT: &str = "error wait internal-server-error";
const NOT_FOUND: &str = "error cancel item-not-found";
const FORBIDDEN: &str = "error auth forbidden";
const TOO_MANY: &str = "error wait resource-constraint";

// §3: what the component answers.

#[test]
fn ping_version_and_disco_are_answered() {
    check(&[PING, VERSION, DISCO_INFO, DISCO_ITEMS], &[RESULT; 4]);
}

#[test]
fn results_errors_and_messages_get_no_reply() {
    check(
        &[
            "<iq type='result' from='localhost' to='push.localhost' id='r1'/>",
            "<iq type='error' from='localhost' to='push.localhost' id='r2'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
            "<message from='a@localhost/r' to='push.localhost'><body>hi</body></message>",
            "<presence from='a@localhost/r' to='push.localhost'/>",
        ],
        &[],
    );
}

#[test]
fn an_unknown_payload_is_service_unavailable() {
    check(
        &[
            "<iq type='get' from='localhost' to='push.localhost' id='u1'><query xmlns='urn:example:unknown'/></iq>",
            "<iq type='set' from='localhost' to='push.localhost' id='u2'/>",
        ],
        &["error cancel service-unavailable"; 2],
    );
}

#[test]
fn the_ping_reply_is_exactly_an_empty_result() {
    let mut core = Core::new();
    assert_eq!(
        core.one(PING),
        "<iq xmlns='jabber:component:accept' from='push.localhost' id='ping1' to='localhost' type='result'/>"
    );
}

#[test]
fn disco_info_shows_the_push_identity_and_the_features_of_the_spec() {
    let mut core = Core::new();
    let reply = core.one(DISCO_INFO);
    let doc = roxmltree::Document::parse(&reply).unwrap();
    let info = "http://jabber.org/protocol/disco#info";
    let identity = doc
        .descendants()
        .find(|n| n.has_tag_name((info, "identity")))
        .unwrap();
    assert_eq!(
        (identity.attribute("category"), identity.attribute("type")),
        (Some("pubsub"), Some("push"))
    );
    let mut features: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name((info, "feature")))
        .filter_map(|n| n.attribute("var"))
        .collect();
    features.sort_unstable();
    assert_eq!(
        features,
        [
            "http://jabber.org/protocol/commands",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "jabber:iq:version",
            "urn:xmpp:ping",
            "urn:xmpp:push:0",
        ]
    );
}

#[test]
fn disco_items_lists_the_fcm_commands() {
    let mut core = Core::new();
    let reply = core.one(DISCO_ITEMS);
    let doc = roxmltree::Document::parse(&reply).unwrap();
    let items: Vec<(&str, &str)> = doc
        .descendants()
        .filter(|n| n.has_tag_name(("http://jabber.org/protocol/disco#items", "item")))
        .map(|n| (n.attribute("jid").unwrap(), n.attribute("node").unwrap()))
        .collect();
    assert_eq!(
        items,
        [
            ("push.localhost", "register-push-fcm"),
            ("push.localhost", "unregister-push-fcm")
        ]
    );
}

// §4: registration.

#[test]
fn conversations_registers() {
    let core = check(&[CONVERSATIONS_REGISTER], &[RESULT]);
    assert_eq!(core.rows().len(), 3);
}

#[test]
fn the_registration_reply_has_the_shape_of_the_spec() {
    let mut core = Core::with_jid("p2.example.net");
    let reply = core.one(CONVERSATIONS_REGISTER);
    let (node, secret) = node_and_secret(&reply);
    assert_eq!((node.len(), secret.len()), (12, 24));
    // The example of PROTOCOL.md with this registration's node, secret and session.
    let doc = roxmltree::Document::parse(&reply).unwrap();
    let sessionid = doc
        .descendants()
        .find_map(|n| n.attribute("sessionid"))
        .unwrap();
    let expected = REGISTRATION_RESULT
        .replace("eKxTS5n3bOe0", &node)
        .replace("KK4+H5WMfpRG/2zCbuKq6wpX", &secret)
        .replace("sessionid='…'", &format!("sessionid='{sessionid}'"))
        // The example is shown without the stream's default namespace.
        .replacen("<iq ", "<iq xmlns='jabber:component:accept' ", 1);
    assert_eq!(shape(&reply), shape(&expected));
}

/// An element tree as text: names, namespaces, sorted attributes and non-blank text.
fn shape(xml: &str) -> String {
    fn walk(n: roxmltree::Node, out: &mut String) {
        if n.is_text() {
            if let Some(t) = n.text().filter(|t| !t.trim().is_empty()) {
                out.push_str(t);
            }
            return;
        }
        if !n.is_element() {
            return;
        }
        let mut attrs: Vec<String> = n
            .attributes()
            .map(|a| format!("{}={}", a.name(), a.value()))
            .collect();
        attrs.sort();
        out.push_str(&format!(
            "<{{{}}}{} {}>",
            n.tag_name().namespace().unwrap_or(""),
            n.tag_name().name(),
            attrs.join(" ")
        ));
        for c in n.children() {
            walk(c, out);
        }
        out.push_str("</>");
    }
    let doc = roxmltree::Document::parse(xml).unwrap();
    let mut out = String::new();
    walk(doc.root_element(), &mut out);
    out
}

#[test]
fn registering_again_keeps_node_and_secret_and_takes_the_new_token() {
    let mut core = Core::new();
    let first = core.register("user@example.com/res", "92afd7a91cdba9a0", "token-1");
    let again = core.register("user@example.com/other", "92afd7a91cdba9a0", "token-2");
    assert_eq!(first, again);
    assert_eq!(core.row("example.com", &first.0).unwrap().token, "token-2");
}

#[test]
fn the_device_hash_is_the_golden_vector() {
    let mut core = Core::new();
    let (node, secret) = core.register("xiaomia1@jabber.de/phone", "92afd7a91cdba9a0", "tok");
    assert_eq!(
        core.row("jabber.de", &node).unwrap().device,
        "ec164939a8485ee6b7f7871071a11c7bb18aead5"
    );
    core.send(&[&publish_to(PROSODY_PUBLISH, "jabber.de", &node, &secret)]);
    let job = core.next_job().unwrap();
    assert_eq!(
        job.message.device,
        "ec164939a8485ee6b7f7871071a11c7bb18aead5"
    );
    assert_eq!(job.message.token, "tok");
}

#[test]
fn conversations_unregisters() {
    let core = check(
        &[CONVERSATIONS_REGISTER, CONVERSATIONS_UNREGISTER],
        &[RESULT, RESULT],
    );
    assert_eq!(core.rows().len(), 2);
    check(&[CONVERSATIONS_UNREGISTER], &[NOT_FOUND]);
}

#[test]
fn a_registration_needs_an_account_and_its_fields() {
    check(
        &[
            &with_from(CONVERSATIONS_REGISTER, "example.com"),
            &CONVERSATIONS_REGISTER
                .replace("<field var='token'><value>FCM-TOKEN</value></field>", ""),
            &CONVERSATIONS_REGISTER.replace("register-push-fcm", "register-push-nope"),
            &CONVERSATIONS_REGISTER.replace("register-push-fcm", "register-push-apns"),
        ],
        &[
            FORBIDDEN,
            "error modify bad-request",
            NOT_FOUND,
            "error cancel service-unavailable",
        ],
    );
}

#[test]
fn the_cap_per_domain_refuses_new_registrations_and_lets_renewals_pass() {
    let mut core = Core::with_limits(Limits {
        registrations_per_domain: 1,
        ..Limits::default()
    });
    core.register("a@example.com/r", "d1", "t1");
    let refused = core.one(&register_as("b@example.com/r", "d2", "t2"));
    assert_eq!(summary(&refused), TOO_MANY);
    // Renewals pass; another domain has its own count.
    core.register("a@example.com/r", "d1", "t1-new");
    core.register("b@example.org/r", "d2", "t2");
    // A place freed is a place taken.
    assert_eq!(
        summary(&core.one(&unregister_as("a@example.com/r", "d1"))),
        RESULT
    );
    core.register("b@example.com/r", "d2", "t2");
    assert_eq!(core.app.take_counters().domain_full, 1);
}

#[test]
fn the_hourly_budget_of_new_registrations_refreshes_with_the_clock() {
    let mut core = Core::with_limits(Limits {
        new_registrations_per_domain_hour: 1,
        ..Limits::default()
    });
    core.register("a@example.com/r", "d1", "t");
    assert_eq!(
        summary(&core.one(&register_as("b@example.com/r", "d2", "t"))),
        TOO_MANY
    );
    core.register("a@example.com/r", "d1", "t");
    core.advance(Duration::from_secs(3600));
    core.register("b@example.com/r", "d2", "t");
}

// §5: publishes.

#[test]
fn prosody_and_ejabberd_publishes_are_pushed() {
    let core = check(
        &[PROSODY_PUBLISH, EJABBERD_PUBLISH_EMPTY],
        &[RESULT, RESULT],
    );
    let jobs = core.submitted.lock().unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].message.token, "token-of-4VS_xOP4xeyO");
    assert!(jobs[0].message.has_body);
    assert!(!jobs[1].message.has_body);
}

#[test]
fn conversations_registers_and_prosody_publishes() {
    check(
        &[CONVERSATIONS_REGISTER, PROSODY_PUBLISH],
        &[RESULT, RESULT],
    );
}

#[test]
fn wrong_secret_unknown_node_and_full_jid_sender_are_refused() {
    check(
        &[
            &PROSODY_PUBLISH.replace("G4yJr4P6XSecKI6H4Jt8AxUm", "G4yJr4P6XSecKI6H4Jt8AxUn"),
            &PROSODY_PUBLISH.replace("4VS_xOP4xeyO", "4VS_xOP4xeyX"),
            &with_from(PROSODY_PUBLISH, "other.example"),
            &with_from(PROSODY_PUBLISH, "bob@localhost/res"),
        ],
        &[FORBIDDEN, NOT_FOUND, NOT_FOUND, FORBIDDEN],
    );
}

#[test]
fn a_provider_failure_is_wait_with_a_generic_text() {
    let mut core = Core::new();
    core.send(&[PROSODY_PUBLISH]);
    let reply = core.finish(failed()).remove(0);
    assert_eq!(summary(&reply), WAIT);
    assert_eq!(error_text(&reply).as_deref(), Some("push not delivered"));
    assert_eq!(
        reply,
        "<iq xmlns='jabber:component:accept' from='push.localhost' id='f02a7cb7' to='localhost' type='error'>\
         <error type='wait'><internal-server-error xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>push not delivered</text></error></iq>"
    );
    assert!(core.row("localhost", "4VS_xOP4xeyO").is_some());
}

#[test]
fn a_full_queue_is_wait() {
    let mut core = Core::new();
    *core.queue_full.lock().unwrap() = true;
    let reply = core.one(PROSODY_PUBLISH);
    assert_eq!(summary(&reply), WAIT);
    assert_eq!(error_text(&reply).as_deref(), Some("push queue full"));
}

#[test]
fn a_dead_token_deletes_the_registration() {
    let core = check_with(&[dead()], &[PROSODY_PUBLISH], &[NOT_FOUND]);
    assert!(core.row("localhost", "4VS_xOP4xeyO").is_none());
    assert!(core.row("localhost", "0uPKy41C8ea0").is_some());
}

#[test]
fn a_dead_answer_for_a_token_that_changed_meanwhile_is_wait() {
    let mut core = Core::new();
    let (node, secret) = core.register("a@example.com/r", "d", "old");
    core.send(&[&publish_to(PROSODY_PUBLISH, "example.com", &node, &secret)]);
    core.register("a@example.com/r", "d", "new");
    let reply = core.finish(dead()).remove(0);
    assert_eq!(summary(&reply), WAIT);
    assert_eq!(core.row("example.com", &node).unwrap().token, "new");
}

#[test]
fn a_mismatch_before_the_credentials_proved_good_keeps_the_registration() {
    let core = check_with(&[mismatch()], &[PROSODY_PUBLISH], &[WAIT]);
    assert!(core.row("localhost", "4VS_xOP4xeyO").is_some());
}

#[test]
fn a_mismatch_after_a_delivery_deletes() {
    let core = check_with(
        &[Outcome::Delivered, mismatch()],
        &[EJABBERD_PUBLISH, PROSODY_PUBLISH],
        &[RESULT, NOT_FOUND],
    );
    assert!(core.row("localhost", "4VS_xOP4xeyO").is_none());
}

#[test]
fn a_restart_keeps_the_proof_for_a_week_and_only_for_the_same_credentials() {
    let mut core = Core::new();
    core.send(&[EJABBERD_PUBLISH]);
    core.finish(Outcome::Delivered);
    // Six days later, after a restart: still proven.
    core.advance(Duration::from_secs(6 * 86_400));
    core.restart();
    core.send(&[PROSODY_PUBLISH]);
    assert_eq!(summary(&core.finish(mismatch())[0]), NOT_FOUND);
    // Another week without a delivery, another restart: not proven any more.
    core.advance(Duration::from_secs(8 * 86_400));
    core.restart();
    core.send(&[EJABBERD_PUBLISH]);
    assert_eq!(summary(&core.finish(mismatch())[0]), WAIT);
    // Proven again by a delivery; but after a restart with other credentials, not.
    core.advance(Duration::from_secs(2));
    core.send(&[EJABBERD_PUBLISH]);
    core.finish(Outcome::Delivered);
    core.settings.providers[0].fingerprint = "fedcba9876543210".into();
    core.restart();
    core.advance(Duration::from_secs(2));
    core.send(&[EJABBERD_PUBLISH]);
    assert_eq!(summary(&core.finish(mismatch())[0]), WAIT);
    assert!(core.row("localhost", "0uPKy41C8ea0").is_some());
    assert_eq!(core.app.take_counters().unproven, 1);
}

#[test]
fn publishes_right_after_a_delivery_are_coalesced_until_the_window_ends() {
    let mut core = Core::new();
    core.send(&[PROSODY_PUBLISH]);
    core.finish(Outcome::Delivered);
    // Answered at once, without a provider request.
    assert_eq!(summary(&core.one(PROSODY_PUBLISH)), RESULT);
    assert_eq!(core.in_flight(), 0);
    core.advance(Duration::from_millis(1000));
    assert!(core.send(&[PROSODY_PUBLISH]).is_empty());
    assert_eq!(core.in_flight(), 1);
}

#[test]
fn a_new_token_is_never_coalesced_away() {
    let mut core = Core::new();
    let (node, secret) = core.register("a@example.com/r", "d", "old");
    let publish = publish_to(PROSODY_PUBLISH, "example.com", &node, &secret);
    core.send(&[&publish]);
    core.finish(Outcome::Delivered);
    core.register("a@example.com/r", "d", "new");
    assert!(core.send(&[&publish]).is_empty());
    assert_eq!(core.next_job().unwrap().message.token, "new");
}

#[test]
fn a_new_token_is_pushed_even_when_a_push_to_the_old_one_lands_after_it() {
    let mut core = Core::new();
    let (node, secret) = core.register("a@example.com/r", "d", "old");
    let publish = publish_to(PROSODY_PUBLISH, "example.com", &node, &secret);
    core.send(&[&publish]);
    core.register("a@example.com/r", "d", "new");
    core.finish(Outcome::Delivered);
    assert!(core.send(&[&publish]).is_empty());
    assert_eq!(core.next_job().unwrap().message.token, "new");
}

#[test]
fn an_oversized_get_or_set_is_wait_policy_violation_and_nothing_else_is_answered() {
    let mut core = Core::new();
    let reply = core.oversized("iq", Some("set"), "big1");
    assert_eq!(
        reply,
        ["<iq xmlns='jabber:component:accept' from='push.localhost' id='big1' to='localhost' type='error'>\
          <error type='wait'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
          <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>stanza too large or too deeply nested</text>\
          </error></iq>"]
    );
    assert!(core.oversized("iq", Some("result"), "big2").is_empty());
    assert!(core.oversized("message", None, "big3").is_empty());
}

#[test]
fn a_reply_for_a_connection_that_is_gone_is_dropped() {
    let mut core = Core::new();
    core.send(&[PROSODY_PUBLISH]);
    core.reconnect();
    assert!(core.finish(Outcome::Delivered).is_empty());
    // The new connection is served.
    assert_eq!(summary(&core.one(PING)), RESULT);
}

#[test]
fn a_dead_token_is_deleted_even_when_its_connection_is_gone() {
    let mut core = Core::new();
    core.send(&[PROSODY_PUBLISH]);
    core.reconnect();
    assert!(core.finish(dead()).is_empty());
    assert!(core.row("localhost", "4VS_xOP4xeyO").is_none());
}

// Expiry: limits.expireAfterDays.

#[test]
fn registrations_neither_refreshed_nor_pushed_to_expire() {
    let mut core = Core::new();
    let (kept, secret) = core.register("a@example.com/r", "used", "t");
    let (gone, _) = core.register("b@example.com/r", "idle", "t");
    // Day 100: a push to one of them is delivered.
    core.advance(Duration::from_secs(100 * 86_400));
    core.send(&[&publish_to(PROSODY_PUBLISH, "example.com", &kept, &secret)]);
    core.finish(Outcome::Delivered);
    // Day 181: the idle one (and the seeded ones) expired, the used one is kept.
    core.advance(Duration::from_secs(81 * 86_400));
    assert!(core.row("example.com", &gone).is_none());
    assert!(core.row("example.com", &kept).is_some());
    assert_eq!(core.rows().len(), 1);
    assert_eq!(core.app.take_counters().expired, 3);
    // Day 281: the used one too.
    core.advance(Duration::from_secs(100 * 86_400));
    assert!(core.rows().is_empty());
}

#[test]
fn a_refresh_keeps_a_registration_from_expiring() {
    let mut core = Core::new();
    let (node, _) = core.register("a@example.com/r", "d", "t");
    core.advance(Duration::from_secs(179 * 86_400));
    core.register("a@example.com/r", "d", "t");
    core.advance(Duration::from_secs(179 * 86_400));
    assert!(core.row("example.com", &node).is_some());
}

#[test]
fn expiry_off_keeps_everything() {
    let mut core = Core::with_limits(Limits {
        expire_after_days: 0,
        ..Limits::default()
    });
    assert_eq!(core.app.next_timer(), None);
    core.advance(Duration::from_secs(1000 * 86_400));
    assert_eq!(core.rows().len(), 2);
}

#[test]
fn the_expiry_runs_a_minute_after_the_start_and_then_hourly() {
    let core = Core::new();
    let start = core.now.mono;
    assert_eq!(core.app.next_timer(), Some(start + Duration::from_secs(60)));
    let mut core = core;
    core.advance(Duration::from_secs(60));
    assert_eq!(
        core.app.next_timer(),
        Some(start + Duration::from_secs(60 + 3600))
    );
}

// The batch's transaction.

#[test]
fn one_failed_write_answers_only_its_own_request() {
    let mut core = Core::new();
    // A write that fails half-way: the insert succeeds, the account cap's eviction of
    // the older registration is refused.
    core.settings.limits.registrations_per_account = 1;
    core.restart();
    core.register("a@example.com/r", "victim", "t0");
    let c = rusqlite::Connection::open(core.db()).unwrap();
    c.execute_batch(
        "CREATE TRIGGER poison BEFORE DELETE ON registration WHEN old.token = 't0'
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
    )
    .unwrap();
    drop(c);
    let stanzas = [
        with_id(&register_as("b@example.com/r", "one", "t1"), "s1"),
        with_id(&register_as("a@example.com/r", "second", "t2"), "s2"),
        with_id(&register_as("c@example.com/r", "three", "t3"), "s3"),
    ];
    let refs: Vec<&str> = stanzas.iter().map(String::as_str).collect();
    let replies = core.send(&refs);
    assert_eq!(match_replies(&refs, replies), [RESULT, WAIT, RESULT]);
    let tokens: Vec<String> = core.rows().into_iter().map(|r| r.token).collect();
    assert!(tokens.contains(&"t0".into()) && tokens.contains(&"t1".into()));
    assert!(tokens.contains(&"t3".into()));
    // The failed request's insert was undone with it.
    assert!(!tokens.contains(&"t2".into()), "{tokens:?}");
}

#[test]
fn a_locked_database_costs_one_busy_wait_per_batch() {
    let mut core = Core::new();
    core.busy_timeout = Some(Duration::from_millis(100));
    core.restart();
    let other = rusqlite::Connection::open(core.db()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let stanzas = [
        with_id(&register_as("a@example.com/r", "1", "t"), "s1"),
        PING.to_owned(),
        with_id(&register_as("b@example.com/r", "2", "t"), "s2"),
        PROSODY_PUBLISH.to_owned(),
        with_id(&register_as("c@example.com/r", "3", "t"), "s3"),
    ];
    let refs: Vec<&str> = stanzas.iter().map(String::as_str).collect();
    let mut replies = core.send(&refs);
    // Reads go on: the publish reaches the provider.
    replies.extend(core.finish(Outcome::Delivered));
    assert_eq!(
        match_replies(&refs, replies),
        [WAIT, RESULT, WAIT, RESULT, WAIT]
    );
    assert_eq!(core.app.take_counters().busy, 1);
    other.execute_batch("COMMIT").unwrap();
    core.register("a@example.com/r", "1", "t");
    assert_eq!(core.app.take_counters().busy, 0);
}
