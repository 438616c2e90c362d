//! One line per rule of PROTOCOL.md §3–§5: real stanzas in, the replies and the store
//! compared with literals from the spec.

use std::time::Duration;

use p2::app::Service;
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

/// A disco#info reply's identity (category, type) and its features, in order, read with
/// roxmltree.
fn disco_info(reply: &str) -> ((String, String), Vec<String>) {
    let doc = roxmltree::Document::parse(reply).unwrap();
    let ns = "http://jabber.org/protocol/disco#info";
    let identity = doc
        .descendants()
        .find(|n| n.has_tag_name((ns, "identity")))
        .unwrap();
    let attr = |name| identity.attribute(name).unwrap().to_owned();
    let features = doc
        .descendants()
        .filter(|n| n.has_tag_name((ns, "feature")))
        .filter_map(|n| n.attribute("var"))
        .map(str::to_owned)
        .collect();
    ((attr("category"), attr("type")), features)
}

#[test]
fn disco_info_shows_the_push_identity_and_the_features_of_the_spec() {
    let mut core = Core::new();
    let (identity, mut features) = disco_info(&core.one(DISCO_INFO));
    assert_eq!(identity, ("pubsub".to_owned(), "push".to_owned()));
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

#[test]
fn the_version_is_p2_and_a_command_node_is_an_automation_command_node() {
    let mut core = Core::new();
    let version = core.one(VERSION);
    let doc = roxmltree::Document::parse(&version).unwrap();
    let text = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name(("jabber:iq:version", name)))
            .and_then(|n| n.text())
            .map(str::to_owned)
    };
    assert_eq!(text("name").as_deref(), Some("p2"));
    assert_eq!(text("version").as_deref(), Some(env!("CARGO_PKG_VERSION")));
    let info = core.one(&DISCO_INFO.replace(
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "<query xmlns='http://jabber.org/protocol/disco#info' node='register-push-fcm'/>",
    ));
    let (identity, features) = disco_info(&info);
    assert_eq!(
        identity,
        ("automation".to_owned(), "command-node".to_owned())
    );
    assert_eq!(
        features,
        ["http://jabber.org/protocol/commands", "jabber:x:data"]
    );
    // A node that is not a command here.
    let other = core.one(&DISCO_INFO.replace(
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "<query xmlns='http://jabber.org/protocol/disco#info' node='register-push-apns'/>",
    ));
    assert_eq!(summary(&other), NOT_FOUND);
}

/// The (jid, node) of each item of the commands' disco#items.
fn command_items(core: &mut Core) -> Vec<(String, String)> {
    let reply = core.one(DISCO_ITEMS);
    let doc = roxmltree::Document::parse(&reply).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name(("http://jabber.org/protocol/disco#items", "item")))
        .map(|n| {
            (
                n.attribute("jid").unwrap().to_owned(),
                n.attribute("node").unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn disco_items_lists_the_commands_of_the_configured_providers_only() {
    let items = |services: &[Service]| -> Vec<String> {
        let mut core = Core::with_providers(services);
        command_items(&mut core)
            .into_iter()
            .map(|(jid, node)| {
                assert_eq!(jid, "push.localhost");
                node
            })
            .collect()
    };
    assert_eq!(
        items(&[Service::Apns]),
        ["register-push-apns", "unregister-push-apns"]
    );
    assert_eq!(
        items(&[Service::Fcm, Service::Apns]),
        [
            "register-push-fcm",
            "unregister-push-fcm",
            "register-push-apns",
            "unregister-push-apns"
        ]
    );
}

#[test]
fn every_request_gets_exactly_one_reply_in_a_mixed_batch() {
    // What the fake server of the daemon tests once sent in one go: publishes good and
    // bad, a registration without a device, ping, disco, an unknown payload, and what
    // must not be answered. check() pairs each request with exactly one reply and fails
    // on a reply to nothing.
    check(
        &[
            PROSODY_PUBLISH,
            &with_id(
                &PROSODY_PUBLISH.replace("G4yJr4P6XSecKI6H4Jt8AxUm", "bad"),
                "p-bad",
            ),
            &command(
                "c@example.net/x",
                "push.localhost",
                "r-1",
                "register-push-fcm",
                &field("token", "t"),
            ),
            PING,
            DISCO_INFO,
            "<iq type='get' from='localhost' to='push.localhost' id='x-1'><x xmlns='urn:example'/></iq>",
            "<iq type='result' from='localhost' to='push.localhost' id='r1'/>",
            "<message from='a@localhost' to='push.localhost'><body>hi</body></message>",
            "<presence from='a@localhost' to='push.localhost'/>",
        ],
        &[
            RESULT,
            FORBIDDEN,
            "error modify bad-request",
            RESULT,
            RESULT,
            "error cancel service-unavailable",
        ],
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
    logs();
    core.register("a@example.com/r", "d1", "t");
    for device in ["d2", "d3"] {
        let refused = core.one(&register_as("b@example.com/r", device, "t"));
        assert_eq!(summary(&refused), TOO_MANY);
        assert_eq!(
            error_text(&refused).as_deref(),
            Some("too many new registrations from this domain; try again later")
        );
    }
    // Renewals go on, and other domains are not affected.
    core.register("a@example.com/r", "d1", "t");
    core.register("a@example.org/r", "d1", "t");
    // One warning for the domain, not one per refusal.
    let warnings: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.starts_with("WARN"))
        .collect();
    assert_eq!(
        warnings,
        ["WARN example.com: more than 1 new registrations this hour; refusing more"]
    );
    core.advance(Duration::from_secs(3600));
    core.register("b@example.com/r", "d2", "t");
}

#[test]
fn device_id_is_preferred_and_another_device_gets_another_node() {
    let mut core = Core::new();
    let (node, _) = core.register("alice@example.com/phone", "dev1", "token-one");
    // Conversations sends android-id; a client sending both is taken by device-id.
    let reply = core.one(&command(
        "alice@example.com/phone",
        "push.localhost",
        "both",
        "register-push-fcm",
        &(field("token", "token-two")
            + &field("android-id", "other")
            + &field("device-id", "dev1")),
    ));
    assert_eq!(node_and_secret(&reply).0, node);
    assert_eq!(core.row("example.com", &node).unwrap().token, "token-two");
    let (other, _) = core.register("alice@example.com/phone", "dev2", "token-x");
    assert_ne!(other, node);
}

#[test]
fn registration_refusals_say_which_field() {
    let mut core = Core::new();
    let from = "c@example.net/x";
    let cases = [
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
            "register-push-fcm",
            field("token", &"t".repeat(5000)) + &field("device-id", "d"),
            "error modify bad-request",
            Some("field 'token' is longer than 4096 bytes"),
        ),
        (
            "register-push-gcm",
            field("token", "t") + &field("device-id", "d"),
            NOT_FOUND,
            Some("unknown push service"),
        ),
        (
            "list-users",
            field("token", "t"),
            NOT_FOUND,
            Some("unknown command"),
        ),
        (
            "register-push-apns",
            field("token", "t") + &field("device-id", "d"),
            "error cancel service-unavailable",
            Some("apns is not configured on this app server"),
        ),
        (
            "unregister-push-fcm",
            field("device-id", "never-registered"),
            NOT_FOUND,
            Some("no such registration"),
        ),
    ];
    for (i, (node, fields, expected, text)) in cases.iter().enumerate() {
        let reply = core.one(&command(
            from,
            "push.localhost",
            &format!("c{i}"),
            node,
            fields,
        ));
        assert_eq!(summary(&reply), *expected, "{node} {fields}");
        assert_eq!(error_text(&reply).as_deref(), *text, "{node} {fields}");
    }
    // No form at all.
    let reply = core.one(
        "<iq type='set' from='c@example.net/x' to='push.localhost' id='noform'><command \
         xmlns='http://jabber.org/protocol/commands' node='register-push-fcm'/></iq>",
    );
    assert_eq!(summary(&reply), "error modify bad-request");
    assert_eq!(error_text(&reply).as_deref(), Some("missing data form"));
    assert_eq!(core.rows().len(), 2, "nothing stored");
}

#[test]
fn cancel_ends_the_session() {
    let mut core = Core::new();
    let reply = core.one(
        "<iq type='set' from='c@example.net/x' to='push.localhost' id='cancel1'><command \
         xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' action='cancel' \
         sessionid='s1'/></iq>",
    );
    assert_eq!(
        reply,
        "<iq xmlns='jabber:component:accept' from='push.localhost' id='cancel1' to='c@example.net/x' type='result'>\
         <command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' sessionid='s1' status='canceled'/></iq>"
    );
}

#[test]
fn a_muc_registration_has_its_channel_and_old_conversations_unregister_it_by_channel() {
    let mut core = Core::new();
    let from = "c@example.net/x";
    let (node, _) = core.register(from, "d", "tok");
    let reply = core.one(&command(
        from,
        "push.localhost",
        "muc",
        "register-push-fcm",
        &(field("token", "tok") + &field("device-id", "d") + &field("muc", "room@muc.example.net")),
    ));
    let (muc_node, muc_secret) = node_and_secret(&reply);
    assert_ne!(muc_node, node);
    core.send(&[&publish_to(
        PROSODY_PUBLISH,
        "example.net",
        &muc_node,
        &muc_secret,
    )]);
    let job = core.next_job().unwrap();
    // printf 'room@muc.example.net\000d' | sha1sum
    let channel = "c9dbb9db382e92dca50e9b440414d8665ca4377d";
    assert_eq!(job.message.channel, channel);
    // printf 'c@example.net\000d' | sha1sum
    let account_hash = "2d5fbc354d650126e47cf3b9467852f05371a6d2";
    assert_eq!(job.message.device, account_hash);
    core.finish(Outcome::Delivered);

    // Conversations 2.5 to 2.8 unregistered a group chat with `channel` and `android-id`
    // only, and (a bug of theirs) sent the account's hash as the channel: that names no
    // registration and must not remove the account's own.
    let old_unregister = |id: &str, channel: &str| {
        command(
            from,
            "push.localhost",
            id,
            "unregister-push-fcm",
            &(field("channel", channel) + &field("android-id", "d")),
        )
    };
    assert_eq!(
        summary(&core.one(&old_unregister("u1", account_hash))),
        NOT_FOUND
    );
    assert_eq!(core.rows().len(), 4);
    // The account's own unregistration leaves the group chat's.
    let reply = core.one(&command(
        from,
        "push.localhost",
        "u2",
        "unregister-push-fcm",
        &field("device-id", "d"),
    ));
    assert_eq!(summary(&reply), RESULT);
    assert!(core.row("example.net", &node).is_none());
    assert!(core.row("example.net", &muc_node).is_some());
    // Until the channel form names it.
    assert_eq!(summary(&core.one(&old_unregister("u3", channel))), RESULT);
    assert!(core.row("example.net", &muc_node).is_none());
}

#[test]
fn an_account_keeps_at_most_its_cap_of_registrations() {
    let mut core = Core::with_limits(Limits {
        registrations_per_account: 2,
        ..Limits::default()
    });
    let first = core.register("alice@example.com/a", "d1", "t1");
    let bob = core.register("bob@example.com/a", "b1", "tb");
    let second = core.register("alice@example.com/b", "d2", "t2");
    // Refreshing d1 makes d2 the least recently refreshed.
    core.advance(Duration::from_secs(1));
    core.register("alice@example.com/a", "d1", "t1");
    core.advance(Duration::from_secs(1));
    let third = core.register("alice@example.com/c", "d3", "t3");
    let nodes: Vec<String> = core.rows().into_iter().map(|r| r.node).collect();
    for kept in [&first.0, &bob.0, &third.0] {
        assert!(nodes.contains(kept), "{nodes:?}");
    }
    assert!(
        !nodes.contains(&second.0),
        "the least recently refreshed stays"
    );
    assert_eq!(nodes.len(), 2 + 3);
}

#[test]
fn no_account_jid_is_stored_in_any_column_or_file() {
    let mut core = Core::new();
    core.register("alice@example.com/a", "d1", "token-in-the-store");
    core.register("Bob@Example.COM/b", "d2", "token-in-the-store");
    let sql = rusqlite::Connection::open(core.db()).unwrap();
    // Every column of every table, through SQL: what the files hold, WAL or not.
    let columns = |needle: &str| -> Vec<String> {
        let tables: Vec<String> = sql
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut hits = Vec::new();
        for table in tables {
            let names: Vec<String> = sql
                .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for column in names {
                let n: i64 = sql
                    .query_row(
                        &format!(
                            "SELECT count(*) FROM \"{table}\" \
                             WHERE instr(lower(CAST(\"{column}\" AS TEXT)), ?1) > 0"
                        ),
                        [needle],
                        |r| r.get(0),
                    )
                    .unwrap();
                if n > 0 {
                    hits.push(format!("{table}.{column}"));
                }
            }
        }
        hits
    };
    // And every file SQLite wrote (the database, its -wal and -shm), byte for byte.
    let files = |needle: &str| -> Vec<String> {
        std::fs::read_dir(core.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|path| {
                let bytes = std::fs::read(path).unwrap().to_ascii_lowercase();
                bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
            .map(|path| path.display().to_string())
            .collect()
    };
    // The scans see what is stored: the token is in a column and in a file.
    assert_eq!(columns("token-in-the-store"), ["registration.token"]);
    assert!(!files("token-in-the-store").is_empty());
    for local in ["alice", "bob"] {
        assert_eq!(columns(local), Vec::<String>::new(), "{local}");
        assert_eq!(files(local), Vec::<String>::new(), "{local}");
    }
}

#[cfg(feature = "apns")]
#[test]
fn an_apns_registration_needs_a_device_token_and_renews_like_fcm() {
    // An APNs device token as iOS hands it out: 32 bytes, hex.
    const TOKEN: &str = "740f4707bebcf74f9b7c25d48e3358945f6aa01da5ddb387462c7eaf61bb78ad";
    let mut core = Core::with_providers(&[Service::Apns]);
    let from = "c@example.net/x";
    let apns =
        |id: &str, node: &str, fields: &str| command(from, "push.localhost", id, node, fields);
    let reply = core.one(&apns(
        "a1",
        "register-push-apns",
        &(field("token", "not-a-device-token") + &field("device-id", "d")),
    ));
    assert_eq!(summary(&reply), "error modify bad-request");
    assert_eq!(
        error_text(&reply).as_deref(),
        Some("field 'token' is not an APNs device token")
    );
    let reply = core.one(&apns(
        "a2",
        "register-push-fcm",
        &(field("token", "t") + &field("device-id", "d")),
    ));
    assert_eq!(
        error_text(&reply).as_deref(),
        Some("fcm is not configured on this app server")
    );
    let (node, secret) = node_and_secret(&core.one(&apns(
        "a3",
        "register-push-apns",
        &(field("token", TOKEN) + &field("device-id", "d")),
    )));
    let new_token = "a".repeat(64);
    let again = node_and_secret(&core.one(&apns(
        "a4",
        "register-push-apns",
        &(field("token", &new_token) + &field("device-id", "d")),
    )));
    assert_eq!(again, (node.clone(), secret.clone()));
    core.send(&[&publish_to(
        EJABBERD_PUBLISH_EMPTY,
        "example.net",
        &node,
        &secret,
    )]);
    let job = core.next_job().unwrap();
    assert_eq!(
        (job.service, job.message.token.as_str()),
        (Service::Apns, new_token.as_str())
    );
    assert!(!job.message.has_body, "background");
    core.finish(Outcome::Delivered);
    let reply = core.one(&apns(
        "a5",
        "unregister-push-apns",
        &field("device-id", "d"),
    ));
    assert_eq!(summary(&reply), RESULT);
    assert!(core.row("example.net", &node).is_none());
}

// The import of the Java p2's table.

/// A Java p2 export as `mysql --batch` writes it: the design note's device with its node
/// and secret, and an APNs row.
const JAVA_EXPORT: &str = "service\tdevice\tchannel\tdomain\ttoken\tnode\tsecret\n\
    FCM\tec164939a8485ee6b7f7871071a11c7bb18aead5\t\tjabber.de\tjava-era-token\teKxTS5n3bOe0\tKK4+H5WMfpRG/2zCbuKq6wpX\n\
    APNS\tec164939a8485ee6b7f7871071a11c7bb18aead5\tNULL\tjabber.de\tapns-token\tAbCdEfGhIjKl\tapnssecretapnssecretapns\n";

#[test]
fn imported_registrations_keep_node_and_secret_and_are_pushed() {
    let mut core = Core::new();
    let report = core.import(JAVA_EXPORT);
    assert_eq!((report.created, report.fcm, report.apns), (2, 1, 1));
    core.send(&[&publish_to(
        PROSODY_PUBLISH,
        "jabber.de",
        "eKxTS5n3bOe0",
        "KK4+H5WMfpRG/2zCbuKq6wpX",
    )]);
    let job = core.next_job().unwrap();
    assert_eq!(job.message.token, "java-era-token");
    assert_eq!(
        job.message.device,
        "ec164939a8485ee6b7f7871071a11c7bb18aead5"
    );
    core.finish(Outcome::Delivered);
    // The phone re-registers as it does on every session: the same node and secret.
    let again = core.register(
        "xiaomia1@jabber.de/Conversations.sAdA",
        "92afd7a91cdba9a0",
        "fresh",
    );
    assert_eq!(
        again,
        (
            "eKxTS5n3bOe0".to_owned(),
            "KK4+H5WMfpRG/2zCbuKq6wpX".to_owned()
        )
    );
    // An APNs row without APNs configured: kept, answered wait.
    let reply = core.one(&publish_to(
        PROSODY_PUBLISH,
        "jabber.de",
        "AbCdEfGhIjKl",
        "apnssecretapnssecretapns",
    ));
    assert_eq!(summary(&reply), WAIT);
    assert_eq!(
        error_text(&reply).as_deref(),
        Some("push service not configured")
    );
    assert!(core.row("jabber.de", "AbCdEfGhIjKl").is_some());
}

#[test]
fn imported_idn_rows_answer_either_spelling() {
    let mut core = Core::new();
    let export = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import/java-p2.tsv"),
    )
    .unwrap();
    core.import(&export);
    // The Java p2 stored the Unicode form; the user's server may stamp either.
    for (i, from) in [
        "xn--e1afmkfd.xn--p1ai",
        "пример.рф",
        "XN--E1AFMKFD.xn--P1AI.",
    ]
    .iter()
    .enumerate()
    {
        let publish = with_id(
            &publish_to(
                PROSODY_PUBLISH,
                from,
                "twV50HbUmSgk",
                "eviLlBrcdeNchE3iGwfQ6gca",
            ),
            &format!("idn{i}"),
        );
        core.send(&[&publish]);
        let job = core
            .next_job()
            .unwrap_or_else(|| panic!("no push for {from}"));
        // printf 'user@пример.рф\000''92afd7a91cdba9a0' | sha1sum
        assert_eq!(
            job.message.device,
            "6d175fd22ee38513e7c615407eab942c8603aa9f"
        );
        assert_eq!(
            summary(&core.finish(Outcome::Delivered)[0]),
            RESULT,
            "{from}"
        );
        core.advance(Duration::from_secs(2));
    }
    // The phone re-registers through a server that stamps the ACE form, in capitals:
    // the same device hash, so the imported node and secret.
    let again = core.register(
        "User@XN--E1AFMKFD.xn--p1ai/Conversations.a b",
        "92afd7a91cdba9a0",
        "fresh",
    );
    assert_eq!(
        again,
        (
            "twV50HbUmSgk".to_owned(),
            "eviLlBrcdeNchE3iGwfQ6gca".to_owned()
        )
    );
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
    logs();
    let core = check_with(&[dead()], &[PROSODY_PUBLISH], &[NOT_FOUND]);
    assert!(core.row("localhost", "4VS_xOP4xeyO").is_none());
    assert!(core.row("localhost", "0uPKy41C8ea0").is_some());
    assert!(logs().contains(
        &"INFO push for localhost: token dead (UNREGISTERED), registration deleted".into()
    ));
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
    logs();
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
    // One warning an hour for the domain, naming the element and why.
    let warnings: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.starts_with("WARN"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("WARN localhost: <iq/> "),
        "{warnings:?}"
    );
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
fn generation_0_is_never_served() {
    // The connection thread numbers its connections from 1: a stanza tagged 0 (what a
    // default value would carry) is never answered, connected or not.
    let mut core = Core::new();
    let ping = |gen| p2::app::Event::Stanza(gen, element(PING));
    assert!(core.batch(vec![ping(0)]).is_empty());
    core.batch(vec![p2::app::Event::Disconnected(1)]);
    assert!(core.batch(vec![ping(0), ping(1)]).is_empty());
    core.gen = 2;
    core.batch(vec![p2::app::Event::Connected(2)]);
    assert!(core.batch(vec![ping(0)]).is_empty());
    assert_eq!(core.batch(vec![ping(2)]).len(), 1);
}

#[test]
fn a_dead_token_is_deleted_even_when_its_connection_is_gone() {
    let mut core = Core::new();
    core.send(&[PROSODY_PUBLISH]);
    core.reconnect();
    assert!(core.finish(dead()).is_empty());
    assert!(core.row("localhost", "4VS_xOP4xeyO").is_none());
}

#[test]
fn publish_senders_and_fields_as_protocol_md_reads_them() {
    let mut core = Core::new();
    let (node, secret) = core.register("c@example.net/x", "d", "tok");
    let from =
        |from: &str, id: &str| with_id(&publish_to(PROSODY_PUBLISH, from, &node, &secret), id);
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        // Older servers publish from the user's bare JID: accepted.
        (from("c@example.net", "bare"), RESULT, None),
        // The domain as XMPP compares it: case and a trailing dot do not matter.
        (from("Example.NET.", "case"), RESULT, None),
        (
            from("c@example.net/x", "full"),
            FORBIDDEN,
            Some("publish from a full JID"),
        ),
        (
            from("exa mple.net", "invalid"),
            FORBIDDEN,
            Some("publish from an invalid JID"),
        ),
        (
            from("example.net", "no-secret").replace(
                &format!("<field var='secret'><value>{secret}</value></field>"),
                "",
            ),
            FORBIDDEN,
            Some("publish without a secret"),
        ),
        (
            from("example.net", "no-node").replace(&format!(" node='{node}'"), ""),
            FORBIDDEN,
            Some("publish without a node"),
        ),
        (
            from("example.net", "no-from").replace(" from='example.net'", ""),
            FORBIDDEN,
            Some("publish without a sender"),
        ),
        (
            with_id(
                &publish_to(PROSODY_PUBLISH, "example.net", &node, &"s".repeat(300)),
                "long",
            ),
            FORBIDDEN,
            Some("node or secret too long"),
        ),
        (
            with_id(
                &publish_to(
                    PROSODY_PUBLISH,
                    "example.net",
                    &node,
                    "wrong-secret-xxxxxxxxxxx",
                ),
                "wrong",
            ),
            FORBIDDEN,
            Some("wrong secret"),
        ),
        (
            with_id(
                &publish_to(PROSODY_PUBLISH, "example.net", "unknownnode0", &secret),
                "unknown",
            ),
            NOT_FOUND,
            Some("no such node"),
        ),
    ];
    for (stanza, expected, text) in &cases {
        let mut replies = core.send(&[stanza]);
        while core.in_flight() > 0 {
            replies.extend(core.finish(Outcome::Delivered));
        }
        let reply = match_replies(&[stanza], replies).remove(0);
        assert_eq!(reply, *expected, "{stanza}");
        if let Some(text) = text {
            let reply = core.send(&[stanza]).remove(0);
            assert_eq!(error_text(&reply).as_deref(), Some(*text), "{stanza}");
        }
    }
    // The two accepted ones were one push: the second fell in the coalescing window.
    assert_eq!(core.submitted.lock().unwrap().len(), 1);
}

#[test]
fn a_dead_token_is_gone_for_the_next_publish_too() {
    let mut core = check_with(&[dead()], &[PROSODY_PUBLISH], &[NOT_FOUND]);
    let reply = core.one(&with_id(PROSODY_PUBLISH, "again"));
    assert_eq!(summary(&reply), NOT_FOUND);
    assert_eq!(core.submitted.lock().unwrap().len(), 1, "no second push");
}

#[test]
fn ejabberd_with_a_body_is_an_alert_and_without_one_a_background_push() {
    let core = check(&[EJABBERD_PUBLISH], &[RESULT]);
    assert!(core.submitted.lock().unwrap()[0].message.has_body);
    let core = check(&[EJABBERD_PUBLISH_EMPTY], &[RESULT]);
    assert!(!core.submitted.lock().unwrap()[0].message.has_body);
}

#[test]
fn within_the_window_a_wrong_secret_is_still_refused_and_no_window_pushes_each() {
    let mut core = Core::new();
    core.send(&[PROSODY_PUBLISH]);
    core.finish(Outcome::Delivered);
    let wrong = PROSODY_PUBLISH.replace("G4yJr4P6XSecKI6H4Jt8AxUm", "G4yJr4P6XSecKI6H4Jt8AxUn");
    assert_eq!(summary(&core.one(&wrong)), FORBIDDEN);

    let mut core = Core::with_limits(Limits {
        coalesce: Duration::ZERO,
        ..Limits::default()
    });
    for i in 0..3 {
        core.send(&[&with_id(PROSODY_PUBLISH, &format!("p{i}"))]);
        assert_eq!(summary(&core.finish(Outcome::Delivered)[0]), RESULT);
    }
    assert_eq!(core.submitted.lock().unwrap().len(), 3);
}

#[test]
fn failing_pushes_are_logged_once_with_their_cause_and_their_end_too() {
    let mut core = Core::new();
    logs();
    for i in 0..3 {
        core.send(&[&with_id(PROSODY_PUBLISH, &format!("f{i}"))]);
        assert_eq!(summary(&core.finish(failed())[0]), WAIT);
    }
    core.send(&[&with_id(PROSODY_PUBLISH, "ok")]);
    assert_eq!(summary(&core.finish(Outcome::Delivered)[0]), RESULT);
    let warnings: Vec<String> = logs()
        .into_iter()
        .filter(|l| !l.starts_with("DEBUG"))
        .collect();
    assert_eq!(
        warnings,
        [
            "WARN pushes are failing: fcm http 503 UNAVAILABLE projects/p2-secret",
            "INFO pushes are delivered again",
        ]
    );
}

#[test]
fn unproven_credentials_are_named_once_an_hour() {
    let mut core = Core::new();
    logs();
    for i in 0..2 {
        core.send(&[&with_id(PROSODY_PUBLISH, &format!("m{i}"))]);
        assert_eq!(summary(&core.finish(mismatch())[0]), WAIT);
    }
    let warnings: Vec<String> = logs()
        .into_iter()
        .filter(|l| l.starts_with("WARN"))
        .collect();
    assert_eq!(
        warnings,
        [
            "WARN FCM refuses pushes with SENDER_ID_MISMATCH and these credentials have not \
          delivered a push yet: is fcm.serviceAccountFile of another Firebase project? \
          Registrations are kept (answered wait) until a push is delivered"
        ]
    );
    core.advance(Duration::from_secs(3600));
    core.send(&[&with_id(PROSODY_PUBLISH, "m-later")]);
    core.finish(mismatch());
    assert_eq!(logs().iter().filter(|l| l.starts_with("WARN")).count(), 1);
    assert_eq!(core.rows().len(), 2, "nothing deleted");
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
        match_replies(&refs, replies.clone()),
        [WAIT, RESULT, WAIT, RESULT, WAIT]
    );
    let refused = replies
        .iter()
        .find(|r| iq_attr(r, "id").as_deref() == Some("s1"))
        .unwrap();
    assert_eq!(error_text(refused).as_deref(), Some("storage failure"));
    assert_eq!(core.app.take_counters().busy, 1);
    other.execute_batch("COMMIT").unwrap();
    core.register("a@example.com/r", "1", "t");
    assert_eq!(core.app.take_counters().busy, 0);
}
