//! The configuration loader on an arbitrary config file (and environment).
//!
//! Input: the JSON file's bytes; after a NUL byte (which JSON text cannot hold), optional
//! `NAME=value` lines that play the environment, which is otherwise empty. The file is
//! written to a temporary file per process and thread, in /dev/shm when there is one. Checks:
//! `Config::load` never panics, and what it accepts is valid (a domain JID, a non-empty
//! secret, ports and workers in range).

use std::path::PathBuf;

use crate::config::Config;
use crate::xmpp::jid::Jid;

/// The temporary file of this process and thread, memory-backed where there can be one:
/// a file is written for every input.
fn path() -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let dir = match shm.is_dir() {
        true => shm.to_owned(),
        false => std::env::temp_dir(),
    };
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    dir.join(format!(
        "p2-fuzz-config-{}-{thread}.json",
        std::process::id()
    ))
}

/// Removes the temporary file when the check ends, whatever way.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checks one input (see the module's documentation).
pub fn config(data: &[u8]) {
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
    let path = Remove(path());
    std::fs::write(&path.0, file).expect("the temporary file can be written");
    let Ok((config, warnings)) = Config::load(Some(&path.0), &env) else {
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
}
