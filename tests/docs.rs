//! The documentation covers what the code knows: every setting of
//! `p2::config::KEYS` with its variable (and the Java p2's legacy ones), every
//! subcommand and option that the binary's `--help` lists, every environment variable
//! the source reads, and the exit codes, in the man page `p2.1` and in `README.md`; and
//! every test that ARCHITECTURE.md's table of rules names exists.

use std::path::Path;
use std::process::{Command, Stdio};

use p2::config::{KEYS, LEGACY_KEYS, LEGACY_VARS};

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of one roff line without its escapes; for a font macro (`.B`, `.BR`, …)
/// its arguments, joined as the macro prints them (the alternating ones without
/// spaces).
fn roff_text(line: &str) -> String {
    let unescape = |s: &str| {
        s.replace("\\%", "")
            .replace("\\&", "")
            .replace("\\-", "-")
            .replace("\\(dq", "\"")
            .replace("\\(aq", "'")
            .replace("\\e", "\\")
            .replace("\\fB", "")
            .replace("\\fI", "")
            .replace("\\fR", "")
            .replace("\\fP", "")
    };
    let Some(rest) = line.strip_prefix('.') else {
        return unescape(line);
    };
    let (name, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut words = Vec::new();
    let mut chars = args.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
        } else if c == '"' {
            chars.next();
            words.push(chars.by_ref().take_while(|&c| c != '"').collect::<String>());
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            words.push(word);
        }
    }
    let joined = match name {
        "BR" | "RB" | "BI" | "IB" | "IR" | "RI" => words.concat(),
        _ => words.join(" "),
    };
    unescape(&joined)
}

/// The man page as (section name, its lines as text).
fn man_sections() -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    for line in read("p2.1").lines() {
        if line.starts_with(".\\\"") {
            continue;
        }
        if let Some(name) = line.strip_prefix(".SH ") {
            sections.push((name.trim_matches('"').to_owned(), Vec::new()));
        } else if let Some((_, lines)) = sections.last_mut() {
            lines.push(roff_text(line));
        }
    }
    sections
}

fn man_section(name: &str) -> Vec<String> {
    man_sections()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("p2.1 has no section {name}"))
        .1
}

/// What `p2 ARGS --help` lists: (commands, options such as `-c` and `--config`).
fn help(args: &[&str]) -> (Vec<String>, Vec<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_p2"))
        .args(args)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .expect("run p2 --help");
    let text = String::from_utf8(out.stdout).unwrap();
    let (mut commands, mut options) = (Vec::new(), Vec::new());
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') {
            section = line;
            continue;
        }
        // An entry is indented by two spaces; its description's continuation by more.
        if line.starts_with("   ") {
            continue;
        }
        // "  -c, --config      the JSON config file": the names before the description.
        let names = line.trim_start().split("  ").next().unwrap();
        for name in names.split(", ") {
            match section {
                "Commands:" => commands.push(name.to_owned()),
                "Options:" if name.starts_with('-') && name != "--help" => {
                    options.push(name.to_owned())
                }
                _ => {}
            }
        }
    }
    assert!(!options.is_empty(), "no options in p2 {args:?} --help");
    (commands, options)
}

#[test]
fn every_setting_is_in_the_man_page_with_its_variable_and_default() {
    let lines = man_section("CONFIGURATION");
    for key in KEYS {
        // A tag line: "fcm.collapse (P2_FCM_COLLAPSE), default true".
        let head = format!("{} ({})", key.json, key.env);
        assert!(
            lines.iter().any(|l| l.starts_with(&head)),
            "p2.1, CONFIGURATION: no line starting with {head:?}"
        );
    }
    let text = lines.join(" ");
    for legacy in LEGACY_KEYS.iter().chain(LEGACY_VARS) {
        assert!(text.contains(legacy), "p2.1, CONFIGURATION: {legacy}");
    }
}

#[test]
fn every_setting_is_in_the_readme_table() {
    let readme = read("README.md");
    for key in KEYS {
        let row = format!("| `{}` | `{}` | ", key.json, key.env);
        assert!(readme.contains(&row), "README.md: no table row {row:?}");
    }
    for legacy in LEGACY_KEYS.iter().chain(LEGACY_VARS) {
        assert!(
            readme.contains(&format!("`{legacy}`")),
            "README.md: {legacy}"
        );
    }
}

#[test]
fn every_subcommand_and_option_is_documented() {
    let (commands, options) = help(&[]);
    assert!(
        commands.contains(&"check-config".to_owned()),
        "{commands:?}"
    );
    let synopsis = man_section("SYNOPSIS").join(" ");
    let described = man_section("COMMANDS");
    let options_section = man_section("OPTIONS").join(" ");
    let readme = read("README.md");
    for option in &options {
        assert!(
            options_section.contains(option.as_str()),
            "p2.1, OPTIONS: {option}"
        );
        assert!(readme.contains(option.as_str()), "README.md: {option}");
    }
    for command in &commands {
        assert!(
            synopsis.split(' ').any(|w| w == command),
            "p2.1, SYNOPSIS: {command}"
        );
        assert!(
            described
                .iter()
                .any(|l| l.split(' ').next() == Some(command)),
            "p2.1, COMMANDS: no entry for {command}"
        );
        assert!(
            readme.contains(&format!("`p2 {command}")),
            "README.md: `p2 {command}`"
        );
        let (_, options) = help(&[command]);
        let text = described.join(" ");
        for option in &options {
            assert!(
                text.contains(option.as_str()) || options_section.contains(option.as_str()),
                "p2.1: option {option} of {command}"
            );
            assert!(
                readme.contains(option.as_str()),
                "README.md: option {option} of {command}"
            );
        }
    }
}

#[test]
fn the_exit_codes_are_in_the_man_page() {
    // sysexits.h: EX_DATAERR 65, EX_CONFIG 78.
    let lines = man_section("EXIT STATUS");
    for code in ["0", "1", "65", "78"] {
        assert!(
            lines.iter().any(|l| l == code),
            "p2.1, EXIT STATUS: no entry for {code}"
        );
    }
}

/// The environment variables named in `src/` as `env("NAME")` or `env::var("NAME")`.
fn variables_read_by_the_source() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for call in ["env(\"", "env::var(\"", "env::var_os(\""] {
                    for rest in text.split(call).skip(1) {
                        let name = rest.split('"').next().unwrap();
                        if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                            out.push(name.to_owned());
                        }
                    }
                }
            }
        }
    }
    let mut names = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut names,
    );
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_environment_variable_is_in_the_man_page() {
    let names = variables_read_by_the_source();
    for expected in ["CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC"] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    let section = man_section("ENVIRONMENT").join(" ");
    let configuration = man_section("CONFIGURATION").join(" ");
    // RUST_LOG is read by simple_logger.
    for name in names.iter().map(String::as_str).chain(["RUST_LOG"]) {
        if name.starts_with("P2_") {
            assert!(configuration.contains(name), "p2.1, CONFIGURATION: {name}");
        } else {
            assert!(section.contains(name), "p2.1, ENVIRONMENT: {name}");
        }
    }
}

#[test]
fn the_man_page_has_the_sections_an_operator_looks_for() {
    let names: Vec<String> = man_sections().into_iter().map(|(n, _)| n).collect();
    for name in [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "COMMANDS",
        "CONFIGURATION",
        "ENVIRONMENT",
        "FILES",
        "SIGNALS",
        "EXIT STATUS",
        "SECURITY",
        "EXAMPLES",
        "SEE ALSO",
    ] {
        assert!(names.iter().any(|n| n == name), "p2.1: section {name}");
    }
    let signals = man_section("SIGNALS").join(" ");
    assert!(signals.contains("SIGTERM") && signals.contains("in flight"));
    let examples = man_section("EXAMPLES").join("\n");
    for needle in ["component_secret", "ejabberd_service", "p2 import", "mysql"] {
        assert!(examples.contains(needle), "p2.1, EXAMPLES: {needle}");
    }
    // The page states the crate's version.
    let th = read("p2.1")
        .lines()
        .find(|l| l.starts_with(".TH "))
        .unwrap()
        .to_owned();
    assert!(
        th.contains(&format!("\"p2 {}\"", env!("CARGO_PKG_VERSION"))),
        "{th}"
    );
}

#[test]
fn roff_text_joins_font_macros_as_printed() {
    assert_eq!(
        roff_text(r#".BR \%fcm.collapse " \%(" P2_FCM_COLLAPSE "), default " true"#),
        "fcm.collapse (P2_FCM_COLLAPSE), default true"
    );
    assert_eq!(roff_text(r".B \%check\-config"), "check-config");
    assert_eq!(
        roff_text(r#".BI "prune \-\-older\-than " days"#),
        "prune --older-than days"
    );
    assert_eq!(roff_text(r"plain \-c text"), "plain -c text");
}

/// Every `FILE::name` in ARCHITECTURE.md's table of rules names a file that exists and
/// has a `fn name`, and every file named in its code column exists: a renamed or deleted
/// test cannot leave the table pointing at nothing.
#[test]
fn every_test_the_rule_table_names_exists() {
    let architecture = read("ARCHITECTURE.md");
    let start = architecture
        .find("## Each rule, its code and the test that proves it")
        .expect("the table of rules");
    let table: Vec<&str> = architecture[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .collect();
    assert!(table.len() > 50, "{} rows", table.len());
    let mut missing = Vec::new();
    for row in &table {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 3, "{row}");
        let quoted = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        // The code: the files exist.
        for code in quoted(cells[1]) {
            if code.starts_with("src/")
                && !Path::new(env!("CARGO_MANIFEST_DIR")).join(&code).exists()
            {
                missing.push(format!("no file {code}"));
            }
        }
        // The test: one, `FILE::name`, a function of that file.
        let tests = quoted(cells[2]);
        assert_eq!(tests.len(), 1, "one test per rule: {row}");
        let (file, name) = tests[0].split_once("::").unwrap_or_else(|| panic!("{row}"));
        let text = read(file);
        if !text.contains(&format!("fn {name}(")) {
            missing.push(format!("no fn {name} in {file}"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}
