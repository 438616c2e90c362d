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

#[test]
fn http_answer_corpus() {
    replay("http_answer");
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

/// Prosody's stream header, as it answers a component: what the stream target's input
/// starts with after its two selector bytes.
const SERVER_HEADER: &str = "<?xml version='1.0'?><stream:stream \
    xmlns:stream='http://etherx.jabber.org/streams' xml:lang='en' \
    xmlns='jabber:component:accept' id='a1b2c3' from='push.localhost'>";

/// The seeds the real stanzas of PROTOCOL.md (`tests/fixtures/stanzas/*.xml`) make for
/// the targets that read stanzas, each in its input format: `fixture-NAME` for one, and
/// `fixture-all` for all of them in one stream.
/// - stream: chunking 0 (all at once), limit 0 (the default), the server's header, the
///   stanzas;
/// - stanza: the stanzas as they follow the header;
/// - core: outcome seed 0, batch byte 0, no failure reason, the stanzas.
fn fixture_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stanzas");
    let mut fixtures: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "xml"))
        .map(|path| {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    fixtures.sort();
    let all: String = fixtures.iter().map(|(_, text)| text.as_str()).collect();
    fixtures.push(("all".into(), all));
    let mut seeds = Vec::new();
    for (name, text) in fixtures {
        let file = format!("fixture-{name}");
        let stream = [&[0u8, 0][..], SERVER_HEADER.as_bytes(), text.as_bytes()].concat();
        let core = [&[0u8, 0, 0][..], text.as_bytes()].concat();
        seeds.push(("stream", file.clone(), stream));
        seeds.push(("stanza", file.clone(), text.into_bytes()));
        seeds.push(("core", file, core));
    }
    seeds
}

/// Every fixture is a seed of the stream, stanza and core targets, byte for byte, so the
/// fuzzers start from what real peers send. `P2_BLESS=1 cargo test --test fuzz_corpus`
/// writes them.
#[test]
fn the_real_stanzas_are_seeds() {
    let bless = std::env::var_os("P2_BLESS").is_some();
    let mut wrong = Vec::new();
    for (target, file, bytes) in fixture_seeds() {
        let path = corpus_dir().join(target).join(&file);
        if bless {
            std::fs::write(&path, &bytes).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            wrong.push(format!("{target}/{file}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "missing or stale seeds (P2_BLESS=1 writes them): {wrong:?}"
    );
}
