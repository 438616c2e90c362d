//! The configuration loader on an arbitrary config file (and environment).
//!
//! Input: the JSON file's bytes; after a NUL byte (which JSON text cannot hold), optional
//! `NAME=value` lines that play the environment, which is otherwise empty. The file is
//! written to a temporary file per process, in /dev/shm when there is one. Checks:
//! `Config::load` never panics, and what it accepts is valid (a domain JID, a non-empty
//! secret, ports and workers in range).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use p2::config::Config;
use p2::xmpp::jid::Jid;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // Memory-backed where there is one: a file is written for every input.
        let shm = std::path::Path::new("/dev/shm");
        let dir = match shm.is_dir() {
            true => shm.to_owned(),
            false => std::env::temp_dir(),
        };
        dir.join(format!("p2-fuzz-config-{}.json", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let (file, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let vars: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let env = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    std::fs::write(path(), file).expect("the temporary file can be written");
    let Ok((config, warnings)) = Config::load(Some(path()), &env) else {
        return;
    };
    let _ = format!("{config:?} {warnings:?}");
    let jid = Jid::parse(&config.jid).expect("an accepted jid parses");
    assert!(!jid.has_local() && !jid.is_full());
    assert!(!config.shared_secret.trim().is_empty());
    assert!(config.port >= 1);
    assert!((1..=4096).contains(&config.workers));
    if let Some(fcm) = &config.fcm {
        assert!(!fcm.service_account_file.as_os_str().is_empty());
        assert!(fcm.base_url.starts_with("http://") || fcm.base_url.starts_with("https://"));
        assert!(!fcm.deadline.is_zero());
    }
});
