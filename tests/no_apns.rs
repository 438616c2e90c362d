//! A build without the cargo feature `apns` (the default) refuses a configuration that
//! asks for APNs, saying why, with exit code 78.
#![cfg(not(feature = "apns"))]

mod common;

use std::time::Duration;

use common::daemon::{cli, Daemon};

const LACKS: &str = "this build of p2 lacks APNs (built without the `apns` cargo feature); \
                     rebuild it with `cargo build --release --features apns`, or remove the \
                     APNs settings to run with FCM only";

#[test]
fn a_config_with_apns_exits_78_saying_the_build_lacks_it() {
    let dir = common::scratch::Scratch::new("no-apns");
    let config = serde_json::json!({
        "jid": "push.localhost", "sharedSecret": "x",
        "apns": {"certificate": "apns.pem", "privateKey": "apns.key",
                 "bundleId": "im.conversations.test", "sandbox": false}
    });
    let mut daemon = Daemon::start(&dir, &config, "info");
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("p2 exits on an apns config");
    assert_eq!(status.code(), Some(78));
    assert_eq!(
        daemon.log().trim(),
        format!("ERROR [p2] config.json: apns: {LACKS}")
    );

    let (code, out, err) = cli(&dir, &["check-config", "-c", "config.json"]);
    assert_eq!(code, 78, "{out}");
    assert_eq!(err.trim(), format!("p2: config.json: apns: {LACKS}"));
}

#[test]
fn apns_variables_alone_exit_78_too() {
    let dir = common::scratch::Scratch::new("no-apns-env");
    let config = serde_json::json!({"jid": "push.localhost", "sharedSecret": "x"});
    let mut daemon = Daemon::start_with_env(
        &dir,
        &config,
        "info",
        &[
            ("P2_APNS_BUNDLE_ID", "im.conversations.test"),
            ("P2_APNS_CERTIFICATE", "apns.pem"),
            ("P2_APNS_PRIVATE_KEY", "apns.key"),
        ],
    );
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("p2 exits on APNs variables");
    assert_eq!(status.code(), Some(78));
    assert_eq!(
        daemon.log().trim(),
        format!("ERROR [p2] environment: P2_APNS_*: {LACKS}")
    );
}
