//! Every committed fuzz input goes through its target's check (`p2::fuzzing`), so a bug a
//! fuzzer once found stays fixed. The targets in `fuzz/` call the same functions.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// Runs every input of `fuzz/corpus/TARGET/` through the target's check; fails naming
/// each input whose check panicked.
fn replay(target: &str) {
    let (_, check) = p2::fuzzing::targets()
        .into_iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no check for target {target}"));
    let dir = corpus_dir().join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no input", dir.display());
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs fail: {failed:?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn stream_corpus() {
    replay("stream");
}

#[test]
fn stanza_corpus() {
    replay("stanza");
}

#[test]
fn core_corpus() {
    replay("core");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn fcm_classify_corpus() {
    replay("fcm_classify");
}

#[test]
fn oauth_token_corpus() {
    replay("oauth_token");
}

#[cfg(feature = "apns")]
#[test]
fn apns_classify_corpus() {
    replay("apns_classify");
}

/// Every corpus directory and every target of `fuzz/Cargo.toml` has its check here, so
/// no new target's inputs go unreplayed.
#[test]
fn every_target_is_replayed() {
    let checks: Vec<&str> = p2::fuzzing::targets()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    // Checked only in a build with the feature that compiles them.
    let elsewhere: &[&str] = if cfg!(feature = "apns") {
        &[]
    } else {
        &["apns_classify"]
    };
    let known = |name: &str| checks.contains(&name) || elsewhere.contains(&name);
    let mut dirs: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .unwrap();
    let mut bins: Vec<String> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            let line = section
                .lines()
                .find(|l| l.trim_start().starts_with("name"))?;
            Some(line.split('"').nth(1)?.to_owned())
        })
        .collect();
    bins.sort();
    assert_eq!(dirs, bins, "a corpus directory per target");
    for name in &bins {
        assert!(known(name), "target {name} has no check in p2::fuzzing");
    }
    assert_eq!(bins.len(), checks.len() + elsewhere.len());
}
