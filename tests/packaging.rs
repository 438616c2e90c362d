//! The Debian package's sources (`debian/`, `Cargo.toml`'s `[package.metadata.deb]`)
//! agree with the code: one unit in two copies that differ only in the binary's path,
//! a config that keeps the service stopped until edited, maintainer scripts that parse,
//! a changelog at the crate's version, and a copyright file that lists every crate
//! linked into the binary. `.ci/deb` builds, lints, installs and purges the package.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs the p2 binary in `dir` with `args` and no P2_* variables: (exit code, stderr).
fn p2(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2"));
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("P2_") || name == "CREDENTIALS_DIRECTORY" {
            cmd.env_remove(name);
        }
    }
    let out = cmd.output().expect("run p2");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("p2-packaging-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_two_units_differ_only_in_the_binary_path() {
    // p2.service is for a hand install (/usr/local/bin), debian/p2.service for the
    // package (/usr/bin); everything else is the same text.
    let hand = read("p2.service");
    let package = read("debian/p2.service");
    assert_eq!(
        package,
        hand.replace("/usr/local/bin/p2", "/usr/bin/p2"),
        "debian/p2.service must be p2.service with /usr/bin/p2: \
         sed 's#/usr/local/bin/p2#/usr/bin/p2#g' p2.service > debian/p2.service"
    );
    assert!(!package.contains("/usr/local"));
    let lines: Vec<&str> = package.lines().collect();
    assert!(lines
        .contains(&"ExecCondition=/usr/bin/p2 check-config --placeholders -c /etc/p2/config.json"));
    assert!(lines.contains(&"ExecStart=/usr/bin/p2 -c /etc/p2/config.json"));
    assert!(lines.contains(&"RestartPreventExitStatus=78"));
    assert!(lines.contains(&"User=p2"));
    assert!(lines.contains(&"StateDirectory=p2"));
}

#[test]
fn the_shipped_config_keeps_the_service_stopped_until_edited() {
    let dir = temp_dir("example");
    std::fs::write(dir.join("config.json"), read("p2.conf.example")).unwrap();
    let line = "p2: config.json: jid: \"p2.replace-me.invalid\" is the example's \
                placeholder, and so is sharedSecret: set jid to the component's domain \
                and sharedSecret to its password, as declared for p2 in your XMPP server \
                (see man p2)\n";
    // The unit's ExecCondition=: exit 78 (1..254 skips the start without failing the
    // unit), the line in the journal.
    let placeholders = ["check-config", "--placeholders", "-c", "config.json"];
    assert_eq!(p2(&dir, &placeholders), (78, line.to_owned()));
    // The operator's check and the daemon itself say the same.
    assert_eq!(
        p2(&dir, &["check-config", "-c", "config.json"]),
        (78, line.to_owned())
    );
    assert_eq!(p2(&dir, &["-c", "config.json"]), (78, line.to_owned()));

    // Edited: the condition passes, and the next problem (no service account key yet)
    // is the daemon's to report, failing the unit.
    let edited = read("p2.conf.example")
        .replace("p2.replace-me.invalid", "p2.example.net")
        .replace(p2::config::PLACEHOLDER_SECRET, "s3cret")
        .replace("/etc/p2/service-account.json", "missing.json");
    std::fs::write(dir.join("config.json"), edited).unwrap();
    assert_eq!(p2(&dir, &placeholders), (0, String::new()));
    let (code, err) = p2(&dir, &["check-config", "-c", "config.json"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.starts_with("p2: config.json: fcm.serviceAccountFile: "),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_maintainer_scripts_parse() {
    for script in ["debian/postinst", "debian/prerm", "debian/postrm"] {
        let text = read(script);
        assert!(text.starts_with("#!/bin/sh\n"), "{script}");
        assert!(text.contains("\nset -e\n"), "{script}");
        let status = Command::new("sh")
            .arg("-n")
            .arg(root().join(script))
            .status()
            .expect("run sh");
        assert!(status.success(), "sh -n {script}");
    }
}

#[test]
fn the_changelog_is_at_the_crates_version() {
    let changelog = read("debian/changelog");
    let first = changelog.lines().next().unwrap();
    let expected = format!("p2 ({}-", env!("CARGO_PKG_VERSION"));
    assert!(
        first.starts_with(&expected),
        "debian/changelog starts with {first:?}: add an entry for {}",
        env!("CARGO_PKG_VERSION")
    );
}

/// One crate linked into the binary, as `cargo metadata` describes it.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Crate {
    name: String,
    version: String,
    authors: Vec<String>,
    license: String,
    repository: String,
}

/// The crates linked into p2 for `target` with every feature: p2's normal dependencies,
/// transitively, without procedural macros (and what only they use).
fn linked_crates(target: &str) -> Vec<Crate> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--all-features",
            "--filter-platform",
            target,
        ])
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: BTreeMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let is_proc_macro = |id: &str| {
        packages[id]["targets"].as_array().unwrap().iter().any(|t| {
            t["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "proc-macro")
        })
    };
    let root_id = meta["resolve"]["root"].as_str().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![root_id];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().unwrap();
            if normal && !is_proc_macro(pkg) {
                stack.push(pkg);
            }
        }
    }
    seen.remove(root_id);
    seen.iter()
        .map(|id| {
            let p = packages[id];
            let text = |key: &str| p[key].as_str().unwrap_or_default().to_owned();
            Crate {
                name: text("name"),
                version: text("version"),
                authors: p["authors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect(),
                license: text("license"),
                repository: text("repository"),
            }
        })
        .collect()
}

/// An SPDX licence expression in the copyright format's syntax: `MIT OR Apache-2.0` →
/// `MIT or Apache-2.0`, `(A OR B) AND C` → `A or B, and C`, the old `A/B` → `A or B`.
fn dep5_license(spdx: &str) -> String {
    let words = |s: &str| -> String {
        s.replace('/', " OR ")
            .split_whitespace()
            .map(|w| match w {
                "OR" => "or",
                "AND" => "and",
                w => w,
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    match spdx.strip_prefix('(').and_then(|s| s.split_once(") AND ")) {
        Some((group, rest)) => format!("{}, and {}", words(group), words(rest)),
        None => {
            assert!(
                !spdx.contains('('),
                "licence expression {spdx:?}: teach dep5_license"
            );
            words(spdx)
        }
    }
}

/// The paragraphs of debian/copyright for `crates`.
fn crate_paragraphs(crates: &[Crate]) -> String {
    let mut out = String::new();
    for c in crates {
        let holders = if c.authors.is_empty() {
            vec![format!("the {} developers", c.name)]
        } else {
            c.authors.clone()
        };
        out.push_str(&format!(
            "Files: vendor/{}-{}/*\nCopyright: {}\nLicense: {}\n",
            c.name,
            c.version,
            holders.join("\n "),
            dep5_license(&c.license)
        ));
        if !c.repository.is_empty() {
            out.push_str(&format!("Comment: {}\n", c.repository));
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_copyright_file_lists_every_linked_crate() {
    let mut crates = linked_crates("x86_64-unknown-linux-gnu");
    crates.extend(linked_crates("aarch64-unknown-linux-musl"));
    crates.sort();
    crates.dedup();
    assert!(
        crates.iter().any(|c| c.name == "libsqlite3-sys"),
        "SQLite is bundled"
    );
    let expected = crate_paragraphs(&crates);

    let path = root().join("debian/copyright");
    let text = read("debian/copyright");
    let start = text
        .find("\nFiles: vendor/")
        .expect("debian/copyright has crate paragraphs")
        + 1;
    let sqlite = "Files: vendor/libsqlite3-sys-*/sqlite3/*\n";
    let end = text.find(sqlite).expect("the SQLite paragraph");
    if text[start..end] != expected {
        if std::env::var_os("P2_BLESS").is_some() {
            let new = format!("{}{expected}{}", &text[..start], &text[end..]);
            std::fs::write(&path, new).unwrap();
        } else {
            panic!(
                "debian/copyright does not list the crates of Cargo.lock: \
                 `P2_BLESS=1 cargo test --test packaging` rewrites the list, then check \
                 that each licence has its paragraph"
            );
        }
    }

    // Every licence named has its stand-alone paragraph.
    let text = read("debian/copyright");
    let defined: Vec<&str> = text
        .split("\n\n")
        .filter(|p| !p.starts_with("Files:"))
        .filter_map(|p| p.strip_prefix("License: "))
        .map(|p| p.lines().next().unwrap())
        .collect();
    for c in &crates {
        for name in dep5_license(&c.license)
            .split([' ', ','])
            .filter(|w| !w.is_empty() && *w != "or" && *w != "and")
        {
            assert!(
                defined.contains(&name),
                "{} {}: licence {name} has no paragraph in debian/copyright",
                c.name,
                c.version
            );
        }
    }
}

#[test]
fn licence_expressions_in_the_copyright_syntax() {
    assert_eq!(dep5_license("MIT OR Apache-2.0"), "MIT or Apache-2.0");
    assert_eq!(dep5_license("MIT/Apache-2.0"), "MIT or Apache-2.0");
    assert_eq!(dep5_license("Apache-2.0 / MIT"), "Apache-2.0 or MIT");
    assert_eq!(dep5_license("Apache-2.0 AND ISC"), "Apache-2.0 and ISC");
    assert_eq!(
        dep5_license("(MIT OR Apache-2.0) AND Unicode-3.0"),
        "MIT or Apache-2.0, and Unicode-3.0"
    );
}
