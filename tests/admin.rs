//! The admin subcommands in-process: `check-config`, `stats`, `prune` and `import` as
//! `p2::admin` runs them for `main`, on a real config file and SQLite database in a
//! scratch directory. (Their exit codes are the binary's: tests/daemon.rs.)

mod common;

use std::path::{Path, PathBuf};

use common::keys;
use common::scratch::Scratch;
use p2::config::Config;
use p2::store::{Caps, NewRegistration, Store};

const JID: &str = "push.localhost";
const SECRET: &str = "s3cr3t-component";

/// A config file `name` in `dir` with `json`, its database `dir/p2.sqlite`; loaded with
/// no environment.
fn load(dir: &Path, name: &str, mut json: serde_json::Value) -> Result<Config, String> {
    json["database"] = dir.join("p2.sqlite").display().to_string().into();
    let path = dir.join(name);
    std::fs::write(&path, json.to_string()).unwrap();
    let (config, _) = Config::load(Some(&path), &|_| None).map_err(|e| e.to_string())?;
    Ok(config)
}

/// A config with FCM (the test service account; nothing is contacted).
fn with_fcm(dir: &Path) -> Config {
    let account = keys::write_service_account(dir, "http://127.0.0.1:9/token");
    load(
        dir,
        "config.json",
        serde_json::json!({
            "jid": JID, "sharedSecret": SECRET,
            "fcm": {"serviceAccountFile": account},
        }),
    )
    .unwrap()
}

/// A config with neither `fcm` nor `apns`.
fn bare(dir: &Path) -> Config {
    load(
        dir,
        "config.json",
        serde_json::json!({"jid": JID, "sharedSecret": SECRET}),
    )
    .unwrap()
}

/// Stores a registration as the core would (device `device`, domain `domain`).
fn register(config: &Config, device: &str, domain: &str) {
    let mut store = Store::open(&config.database).unwrap();
    store
        .register(
            NewRegistration {
                service: "fcm",
                device,
                channel: "",
                domain,
                token: "token",
                account: None,
            },
            Caps {
                per_account: 10,
                per_domain: 0,
                may_create: true,
            },
            p2::store::unix_now(),
        )
        .unwrap();
}

fn import_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

#[test]
fn check_config_describes_the_settings_without_secrets() {
    let dir = Scratch::new("admin-check");
    let out = p2::admin::check_config(&with_fcm(&dir)).unwrap();
    assert!(out.contains(&format!("jid: {JID}\n")), "{out}");
    assert!(
        out.contains("fcm: project p2-test, service account "),
        "{out}"
    );
    assert!(
        out.contains("service-account.json (p2-push@p2-test.iam.gserviceaccount.com), "),
        "{out}"
    );
    // What a wrong google-services.json would do.
    assert!(
        out.contains(
            "\n  the app's google-services.json must come from Firebase project p2-test: \
             with another project's, FCM answers every push SENDER_ID_MISMATCH, which p2 \
             answers wait (keeping the registration) until these credentials have \
             delivered a push\n"
        ),
        "{out}"
    );
    // The effective cap and expiry (the defaults here).
    assert!(out.contains("100000 registrations per domain"), "{out}");
    assert!(
        out.contains(
            "\nexpiry: registrations neither refreshed nor pushed to for 180 days are deleted\n"
        ),
        "{out}"
    );
    assert!(out.ends_with("\nok\n"), "{out}");
    assert!(
        !out.contains(SECRET) && !out.contains("PRIVATE KEY"),
        "{out}"
    );
}

#[test]
fn check_config_names_the_key_and_the_file_of_a_broken_service_account() {
    let dir = Scratch::new("admin-broken");
    let config = load(
        &dir,
        "broken.json",
        serde_json::json!({"jid": "p2.x", "sharedSecret": "s",
                           "fcm": {"serviceAccountFile": "missing.json"}}),
    )
    .unwrap();
    let err = p2::admin::check_config(&config).unwrap_err().to_string();
    let file = dir.join("broken.json").display().to_string();
    assert!(
        err.starts_with(&format!("{file}: fcm.serviceAccountFile: ")),
        "{err}"
    );
}

#[test]
fn stats_count_per_service_and_domain_and_prune_deletes_the_stale() {
    let dir = Scratch::new("admin-stats");
    let config = with_fcm(&dir);
    // Three devices (what their hashes are does not matter here).
    register(&config, &"1".repeat(40), "one.example");
    register(&config, &"2".repeat(40), "two.example");
    register(&config, &"3".repeat(40), "two.example");
    let out = p2::admin::stats(&config).unwrap();
    assert!(out.contains("registrations: 3\n  fcm: 3\n"), "{out}");
    assert!(
        out.contains("domains: 2\n  two.example: 2\n  one.example: 1\n"),
        "{out}"
    );
    // One registration untouched for 200 days.
    let db = rusqlite::Connection::open(&config.database).unwrap();
    let old = p2::store::unix_now() - 200 * 86_400;
    db.execute(
        "UPDATE registration SET updated = ?1 WHERE domain = 'one.example'",
        [old],
    )
    .unwrap();
    let out = p2::admin::prune(&config, 180).unwrap();
    assert!(
        out.starts_with("deleted 1 registrations not refreshed since "),
        "{out}"
    );
    let out = p2::admin::stats(&config).unwrap();
    assert!(out.contains("registrations: 2\n"), "{out}");
}

/// The text of an import refused as bad input.
fn refused(config: &Config, file: &Path) -> String {
    match p2::admin::import(config, file) {
        Err(p2::admin::ImportFailure::Input(message)) => message,
        Err(p2::admin::ImportFailure::Daemon(e)) => panic!("not an input error: {e}"),
        Ok(out) => panic!("imported: {out}"),
    }
}

#[test]
fn malformed_exports_are_refused_naming_the_line_and_showing_no_data() {
    let dir = Scratch::new("admin-import-bad");
    let config = bare(&dir);
    let good = std::fs::read_to_string(import_fixture("java-p2.tsv")).unwrap();
    for (file, message) in [
        (
            "cut.tsv",
            "cut.tsv: line 4: the file ends inside this line (no final newline): it was cut \
             short; export it again; nothing imported",
        ),
        (
            "lossy-domain.tsv",
            "line 3: domain holds '?': the export lost its non-ASCII characters (a client \
             without a UTF-8 locale); export again with `mysql --default-character-set=utf8mb4`",
        ),
        (
            "wrong-lengths.tsv",
            "line 2: node is not 12 base64 characters as the Java p2 makes them",
        ),
        (
            "wrong-lengths.tsv",
            "line 3: secret is not 24 base64 characters as the Java p2 makes them",
        ),
        (
            "latin1-domain.tsv",
            "latin1-domain.tsv: not UTF-8 text (exported in another character set?): export \
             again with `mysql --default-character-set=utf8mb4`; nothing imported",
        ),
        (
            "no-header.tsv",
            "no-header.tsv: line 1: expected the header \
             \"service\\tdevice\\tchannel\\tdomain\\ttoken\\tnode\\tsecret\", found 7 fields, \
             none of them a column name",
        ),
    ] {
        let err = refused(&config, &import_fixture(file));
        assert!(err.contains(message), "{file}: {err}");
        // Not a token, a node or a secret (nor a part of one).
        for row in good.lines().skip(1) {
            for value in row.split('\t').skip(4) {
                assert!(!err.contains(&value[..8]), "{file} shows data: {err}");
            }
        }
        let stats = p2::admin::stats(&config).unwrap();
        assert!(stats.contains("registrations: 0\n"), "{file}: {stats}");
    }
    // A device that is not a hash, in an export otherwise good.
    let bad = dir.join("bad.tsv");
    std::fs::write(&bad, good + "FCM\tnot-a-hash\t\tjabber.de\tt\tn\ts\n").unwrap();
    let err = refused(&config, &bad);
    assert!(
        err.contains("line 5: device is not a 40-character lowercase hex hash"),
        "{err}"
    );
}

#[test]
fn an_import_is_idempotent_names_missing_providers_and_asks_to_delete_the_export() {
    let dir = Scratch::new("admin-import");
    let config = with_fcm(&dir);
    let file = dir.join("java-p2.tsv");
    std::fs::copy(import_fixture("java-p2.tsv"), &file).unwrap();
    let out = p2::admin::import(&config, &file).unwrap();
    assert!(
        out.starts_with(&format!(
            "imported 3 rows into {}: 3 new, 0 updated, 0 unchanged\n",
            config.database.display()
        )),
        "{out}"
    );
    // FCM is configured; the APNs row is imported and the operator told why it waits.
    let apns = if cfg!(feature = "apns") {
        "warning: 1 APNs registration was imported, but `apns` is not configured: \
         publishes to it are answered `wait` until it is\n"
    } else {
        "warning: 1 APNs registration was imported, but this build has no APNs (cargo \
         feature `apns`): publishes to it are answered `wait` until it is\n"
    };
    assert!(out.contains(apns), "{out}");
    assert!(!out.contains("FCM registration"), "{out}");
    assert!(
        out.ends_with(&format!(
            "now delete {} (and any copy): it holds every push token and publish secret\n",
            file.display()
        )),
        "{out}"
    );
    let again = p2::admin::import(&config, &file).unwrap();
    assert!(
        again.contains(": 0 new, 0 updated, 3 unchanged\n"),
        "{again}"
    );

    // Without `fcm`, the FCM rows are named too.
    let dir = Scratch::new("admin-import-nofcm");
    let out = p2::admin::import(&bare(&dir), &file).unwrap();
    assert!(
        out.contains(
            "warning: 2 FCM registrations were imported, but `fcm` is not configured \
             (fcm.serviceAccountFile): publishes to them are answered `wait` until it is\n"
        ),
        "{out}"
    );
}

#[cfg(feature = "apns")]
#[test]
fn check_config_describes_apns_and_names_a_bad_key() {
    use common::apns::{fixture, KEY_ID, TEAM_ID, TOPIC};
    let dir = Scratch::new("admin-apns");
    let token = |base_url: &str| {
        serde_json::json!({
            "bundleId": TOPIC,
            "baseUrl": base_url,
            "keyFile": fixture("apns-token-key.p8"),
            "keyId": KEY_ID,
            "teamId": TEAM_ID,
            "deadline": 3,
        })
    };
    let config = load(
        &dir,
        "config.json",
        serde_json::json!({"jid": JID, "sharedSecret": SECRET, "apns": token("https://127.0.0.1:9")}),
    )
    .unwrap();
    let out = p2::admin::check_config(&config).unwrap();
    assert!(
        out.contains(&format!(
            "apns: topic {TOPIC}, endpoint https://127.0.0.1:9, provider token from {} \
             (key id {KEY_ID}, team id {TEAM_ID}), deadline 3 s, credentials ",
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
    assert!(out.contains("\nfcm: not configured\n"), "{out}");
    assert!(
        !out.contains("PRIVATE KEY") && !out.contains(SECRET),
        "{out}"
    );

    // Each refusal names the file and the key.
    let broken = |name: &str, apns: serde_json::Value| -> String {
        let file = dir.join(name).display().to_string();
        let config = serde_json::json!({"jid": JID, "sharedSecret": SECRET, "apns": apns});
        let err = match load(&dir, name, config) {
            Ok(config) => p2::admin::check_config(&config).unwrap_err().to_string(),
            Err(e) => e,
        };
        err.strip_prefix(&format!("{file}: "))
            .unwrap_or_else(|| panic!("{err}"))
            .to_owned()
    };
    let mut missing = token("https://127.0.0.1:9");
    missing["keyFile"] = serde_json::json!("AuthKey_missing.p8");
    let err = broken("missing.json", missing);
    assert!(
        err.starts_with("apns.keyFile: cannot read AuthKey_missing.p8: "),
        "{err}"
    );
    let err = broken(
        "mismatch.json",
        serde_json::json!({
            "bundleId": TOPIC,
            "certificate": fixture("apns-client.pem"),
            "privateKey": fixture("apns-server.key"),
        }),
    );
    assert!(
        err.starts_with(&format!(
            "apns.privateKey: bad private key in {}: does not belong to ",
            fixture("apns-server.key").display()
        )),
        "{err}"
    );
    let mut both = token("https://127.0.0.1:9");
    both["certificate"] = serde_json::json!("c.pem");
    let err = broken("both.json", both);
    assert!(
        err.starts_with("apns.keyFile: cannot be combined with apns.certificate"),
        "{err}"
    );
}
