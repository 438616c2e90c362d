//! `p2 import`: the Java p2's `target` table, exported with
//! `mysql --batch --default-character-set=utf8mb4 -e 'select service,device,channel,domain,token,node,secret from target'`,
//! into the store with every node and secret unchanged.
//!
//! All or nothing: every row is checked first and any malformed one refuses the whole
//! file, naming its line; then all rows are written in one transaction. Running it
//! twice gives the same database. The checks catch the ways a real export goes wrong
//! without anybody noticing: a file cut short (it must end with a newline, and nodes
//! and secrets must have the Java p2's lengths), a client without a UTF-8 locale
//! (`?` in place of every non-ASCII character of a domain), a missing header. No
//! message ever shows a token, a secret or a node: only line numbers and column names.
//! Domains are stored in canonical form ([`normalise_domain`]), as live registrations.

use std::collections::HashMap;
use std::fmt;

use crate::store::{Registration, Store, StoreError};
use crate::xmpp::jid::normalise_domain;

/// The columns, in the order of the documented export (also the Java p2's table order).
pub const COLUMNS: [&str; 7] = [
    "service", "device", "channel", "domain", "token", "node", "secret",
];

/// Length of a Java p2 node: base64 of 9 random bytes (`Utils.random(3, …)` in
/// `Target.create`, column `node char(12)`).
pub const NODE_LEN: usize = 12;
/// Length of a Java p2 secret: base64 of 18 random bytes (`Utils.random(6, …)`, column
/// `secret char(24)`).
pub const SECRET_LEN: usize = 24;

/// The option that keeps `mysql` from turning non-ASCII characters into `?`.
pub const UTF8_OPTION: &str = "--default-character-set=utf8mb4";

/// At most this many malformed rows are listed.
const MAX_REPORTED: usize = 20;

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Rows read.
    pub rows: usize,
    /// Registrations that did not exist.
    pub created: usize,
    /// Registrations that existed with other values and were replaced.
    pub updated: usize,
    /// Registrations that existed with the same values.
    pub unchanged: usize,
    /// Rows of service `fcm`.
    pub fcm: usize,
    /// Rows of service `apns`.
    pub apns: usize,
}

/// Why an import was refused; nothing was written.
#[derive(Debug)]
pub enum ImportError {
    /// Malformed rows: `(line number, problem)`, at most the first 20.
    Rows(Vec<(usize, String)>),
    /// The first line is not the expected column list; what it holds, described
    /// without its content (it may be a data row).
    Header(String),
    /// The file does not end with a newline: cut short inside this line.
    Truncated(usize),
    /// The store refused (for example a node already used in the database by another
    /// registration of the same domain).
    Store(StoreError),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::Rows(rows) => {
                write!(f, "malformed rows, nothing imported:")?;
                for (line, problem) in rows {
                    write!(f, "\n  line {line}: {problem}")?;
                }
                Ok(())
            }
            ImportError::Header(found) => write!(
                f,
                "line 1: expected the header {:?}, found {found}; nothing imported",
                COLUMNS.join("\t")
            ),
            ImportError::Truncated(line) => write!(
                f,
                "line {line}: the file ends inside this line (no final newline): it was cut \
                 short; export it again; nothing imported"
            ),
            ImportError::Store(e) => write!(f, "nothing imported: {e}"),
        }
    }
}

impl std::error::Error for ImportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ImportError::Store(e) => Some(e),
            _ => None,
        }
    }
}

/// Undoes `mysql --batch` escaping (`\t`, `\n`, `\\`, `\0`); `NULL` stays a marker.
fn unescape(field: &str) -> Option<String> {
    if field == "NULL" {
        return None;
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('0') => out.push('\0'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn is_sha1_hex(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `len` characters of the standard base64 alphabet (Java's `Base64.getEncoder()`; no
/// padding, the byte counts being multiples of 3).
fn is_java_random(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Describes a header line without showing anything but known column names: the line
/// may be a data row (an export made with `--skip-column-names`).
fn describe_header(line: &str) -> String {
    if line.is_empty() {
        return "an empty line".into();
    }
    let fields: Vec<&str> = line.split('\t').collect();
    let known: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| COLUMNS.contains(f))
        .collect();
    let others = fields.len() - known.len();
    let mut out = format!("{} field{}", fields.len(), plural(fields.len()));
    if known.is_empty() {
        out.push_str(", none of them a column name");
    } else {
        out.push_str(&format!(": the columns {}", known.join(", ")));
        if others > 0 {
            out.push_str(&format!(" and {others} other field{}", plural(others)));
        }
    }
    if others > 0 {
        out.push_str(
            " (not shown: a data row? the export needs its header line, so no \
             --skip-column-names)",
        );
    }
    out
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Reads one data row; the problem as text when malformed. The text never holds a
/// value from the row but a short service name.
fn parse_row(line: &str) -> Result<Registration, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != COLUMNS.len() {
        return Err(format!(
            "{} fields instead of {}",
            fields.len(),
            COLUMNS.len()
        ));
    }
    let v: Vec<Option<String>> = fields.iter().map(|f| unescape(f)).collect();
    let required = |i: usize| -> Result<String, String> {
        match &v[i] {
            Some(s) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!("{} is empty", COLUMNS[i])),
        }
    };
    let service = match required(0)?.to_ascii_lowercase().as_str() {
        s @ ("fcm" | "apns") => s.to_owned(),
        other if other.len() <= 8 && other.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            return Err(format!("unknown service {other:?}"))
        }
        _ => return Err("unknown service".into()),
    };
    let device = required(1)?;
    if !is_sha1_hex(&device) {
        return Err("device is not a 40-character lowercase hex hash".into());
    }
    // The Java p2 stored '' for no channel; NULL means the same.
    let channel = v[2].clone().unwrap_or_default();
    if !channel.is_empty() && !is_sha1_hex(&channel) {
        return Err("channel is neither empty nor a 40-character hex hash".into());
    }
    let domain = required(3)?;
    if domain.contains('?') {
        return Err(format!(
            "domain holds '?': the export lost its non-ASCII characters (a client \
             without a UTF-8 locale); export again with `mysql {UTF8_OPTION}`"
        ));
    }
    let domain = normalise_domain(&domain).map_err(|_| "domain is not a domain name")?;
    let token = required(4)?;
    if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("token holds whitespace or control characters".into());
    }
    let node = required(5)?;
    if !is_java_random(&node, NODE_LEN) {
        return Err(format!(
            "node is not {NODE_LEN} base64 characters as the Java p2 makes them (cut short \
             or altered?)"
        ));
    }
    let secret = required(6)?;
    if !is_java_random(&secret, SECRET_LEN) {
        return Err(format!(
            "secret is not {SECRET_LEN} base64 characters as the Java p2 makes them (cut \
             short or altered?)"
        ));
    }
    Ok(Registration {
        service,
        device,
        channel,
        domain,
        token,
        node,
        secret,
    })
}

/// Parses the whole export; every malformed row is reported (the first 20).
pub fn parse(text: &str) -> Result<Vec<Registration>, ImportError> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ImportError::Truncated(text.lines().count()));
    }
    let mut lines = text.lines().enumerate();
    let header = lines.next().map_or("", |(_, h)| h);
    if header.split('\t').ne(COLUMNS) {
        return Err(ImportError::Header(describe_header(header)));
    }
    let mut rows: Vec<Registration> = Vec::new();
    let mut bad = Vec::new();
    // (domain, node) → line: two rows may not share a node within a domain.
    let mut nodes: HashMap<(String, String), usize> = HashMap::new();
    for (i, line) in lines {
        let number = i + 1;
        if line.is_empty() {
            continue;
        }
        let problem = match parse_row(line) {
            Ok(r) => match nodes.insert((r.domain.clone(), r.node.clone()), number) {
                Some(first) => Some(format!(
                    "node already used in the same domain on line {first}"
                )),
                None => {
                    rows.push(r);
                    None
                }
            },
            Err(problem) => Some(problem),
        };
        if let Some(problem) = problem {
            if bad.len() < MAX_REPORTED {
                bad.push((number, problem));
            }
        }
    }
    if bad.is_empty() {
        Ok(rows)
    } else {
        Err(ImportError::Rows(bad))
    }
}

/// Imports the export `text` into `store` in one transaction.
pub fn import(store: &mut Store, text: &str) -> Result<Report, ImportError> {
    let rows = parse(text)?;
    let mut report = Report {
        rows: rows.len(),
        fcm: rows.iter().filter(|r| r.service == "fcm").count(),
        apns: rows.iter().filter(|r| r.service == "apns").count(),
        ..Report::default()
    };
    store.begin().map_err(ImportError::Store)?;
    let written = (|| {
        for r in &rows {
            match store.get(&r.service, &r.device, &r.channel)? {
                None => report.created += 1,
                Some(old) if old == *r => {
                    report.unchanged += 1;
                    continue;
                }
                Some(_) => report.updated += 1,
            }
            store.put(r)?;
        }
        store.commit()
    })();
    if let Err(e) = written {
        store.rollback();
        return Err(ImportError::Store(e));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAVA_P2: &str = include_str!("../tests/fixtures/import/java-p2.tsv");
    const CUT: &str = include_str!("../tests/fixtures/import/cut.tsv");
    const LOSSY: &str = include_str!("../tests/fixtures/import/lossy-domain.tsv");
    const LENGTHS: &str = include_str!("../tests/fixtures/import/wrong-lengths.tsv");
    const NO_HEADER: &str = include_str!("../tests/fixtures/import/no-header.tsv");

    const DEVICE: &str = "ec164939a8485ee6b7f7871071a11c7bb18aead5";
    const ROW: &str = "eKxTS5n3bOe0\tKK4+H5WMfpRG/2zCbuKq6wpX";

    fn export(rows: &[&str]) -> String {
        let mut s = COLUMNS.join("\t");
        for r in rows {
            s.push('\n');
            s.push_str(r);
        }
        s.push('\n');
        s
    }

    fn row_errors(text: &str) -> Vec<(usize, String)> {
        match parse(text) {
            Err(ImportError::Rows(rows)) => rows,
            other => panic!("expected row errors, got {other:?}"),
        }
    }

    /// Every token, node and secret of the fixtures: none may appear in a message.
    fn assert_shows_no_data(message: &str) {
        for row in JAVA_P2.lines().skip(1) {
            for value in row.split('\t').skip(4) {
                for piece in [value, &value[..8]] {
                    assert!(!message.contains(piece), "{message:?} shows {piece:?}");
                }
            }
        }
    }

    #[test]
    fn reads_the_java_p2_export() {
        let rows = parse(JAVA_P2).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].service, "fcm");
        assert_eq!(rows[0].device, DEVICE);
        assert_eq!(rows[0].channel, "");
        assert_eq!(rows[0].domain, "jabber.de");
        assert_eq!(rows[0].node, "eKxTS5n3bOe0");
        assert_eq!(rows[0].secret, "KK4+H5WMfpRG/2zCbuKq6wpX");
        assert_eq!(rows[1].domain, "пример.рф");
        assert_eq!(rows[2].service, "apns");
        assert_eq!(rows[2].node, "Y15uN/+GXjD/");
    }

    #[test]
    fn domains_are_stored_in_canonical_form() {
        for spelling in [
            "xn--e1afmkfd.xn--p1ai",
            "ПРИМЕР.РФ",
            "пример.рф.",
            "XN--E1AFMKFD.рф",
        ] {
            let rows = parse(&export(&[&format!(
                "FCM\t{DEVICE}\t\t{spelling}\ttok\t{ROW}"
            )]))
            .unwrap();
            assert_eq!(rows[0].domain, "пример.рф", "{spelling}");
        }
        let rows = parse(&export(&[&format!(
            "FCM\t{DEVICE}\tNULL\tJabber.DE.\ttok\t{ROW}"
        )]))
        .unwrap();
        assert_eq!(
            (rows[0].domain.as_str(), rows[0].channel.as_str()),
            ("jabber.de", "")
        );
        // Two spellings of one domain with one node are one node used twice.
        let other = DEVICE.replace('e', "f");
        assert_eq!(
            row_errors(&export(&[
                &format!("FCM\t{DEVICE}\t\txn--e1afmkfd.xn--p1ai\ttok\t{ROW}"),
                &format!("FCM\t{other}\t\tпример.рф\ttok\t{ROW}"),
            ])),
            vec![(3, "node already used in the same domain on line 2".into())]
        );
    }

    #[test]
    fn a_file_cut_short_is_refused_naming_its_last_line() {
        let err = parse(CUT).unwrap_err();
        assert!(matches!(err, ImportError::Truncated(4)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "line 4: the file ends inside this line (no final newline): it was cut short; \
             export it again; nothing imported"
        );
        // Cut right after the header, too.
        assert!(matches!(
            parse(&COLUMNS.join("\t")),
            Err(ImportError::Truncated(1))
        ));
    }

    #[test]
    fn a_domain_with_question_marks_asks_for_a_utf8_export() {
        let rows = row_errors(LOSSY);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 3);
        assert_eq!(
            rows[0].1,
            "domain holds '?': the export lost its non-ASCII characters (a client without a \
             UTF-8 locale); export again with `mysql --default-character-set=utf8mb4`"
        );
    }

    #[test]
    fn nodes_and_secrets_must_have_the_java_p2_lengths() {
        assert_eq!(
            row_errors(LENGTHS),
            vec![
                (
                    2,
                    "node is not 12 base64 characters as the Java p2 makes them (cut short or \
                     altered?)"
                        .into()
                ),
                (
                    3,
                    "secret is not 24 base64 characters as the Java p2 makes them (cut short \
                     or altered?)"
                        .into()
                ),
            ]
        );
        // The right length, but not the Java p2's alphabet.
        let rows = row_errors(&export(&[&format!(
            "FCM\t{DEVICE}\t\tjabber.de\ttok\teKxTS5n3bOe-\tKK4+H5WMfpRG/2zCbuKq6wpX"
        )]));
        assert_eq!(rows[0].0, 2);
        assert!(rows[0].1.starts_with("node is not 12 base64"), "{rows:?}");
    }

    #[test]
    fn a_header_that_is_not_the_column_list_shows_no_data() {
        let err = parse(NO_HEADER).unwrap_err();
        let shown = err.to_string();
        assert_eq!(
            shown,
            "line 1: expected the header \"service\\tdevice\\tchannel\\tdomain\\ttoken\\tnode\\tsecret\", \
             found 7 fields, none of them a column name (not shown: a data row? the export \
             needs its header line, so no --skip-column-names); nothing imported"
        );
        assert_shows_no_data(&shown);
        // Known column names are shown, anything else only counted.
        assert_eq!(
            describe_header("service\tdevice\tdomain\ttoken\tnode\tKK4+H5WMfpRG/2zCbuKq6wpX"),
            "6 fields: the columns service, device, domain, token, node and 1 other field \
             (not shown: a data row? the export needs its header line, so no \
             --skip-column-names)"
        );
        assert_eq!(
            describe_header("service\tdevice\tdomain"),
            "3 fields: the columns service, device, domain"
        );
        assert_eq!(describe_header(""), "an empty line");
    }

    #[test]
    fn malformed_rows_are_named_by_line_without_their_values() {
        let rows = row_errors(&export(&[
            &format!("FCM\t{DEVICE}\t\tjabber.de\ttok\t{ROW}"),
            &format!("FCM\tshort\t\tjabber.de\ttok\t{ROW}"),
            &format!("GCM\t{DEVICE}\t\tjabber.de\ttok\t{ROW}"),
            &format!("FCM\t{DEVICE}\t\tjabber.de\ttok\teKxTS5n3bOe0"),
            &format!("FCM\t{DEVICE}\t\tjabber.de\t\t{ROW}"),
            &format!("eKxTS5n3bOe0KK4+H5WMfpRG/2z\t{DEVICE}\t\tjabber.de\ttok\t{ROW}"),
            &format!("FCM\t{DEVICE}\tnot-a-hash\tjabber.de\ttok\t{ROW}"),
            &format!("FCM\t{DEVICE}\t\texa mple.com\ttok\t{ROW}"),
            &format!("FCM\t{DEVICE}\t\tjabber.de\tto ken\t{ROW}"),
        ]));
        assert_eq!(
            rows,
            vec![
                (3, "device is not a 40-character lowercase hex hash".into()),
                (4, "unknown service \"gcm\"".into()),
                (5, "6 fields instead of 7".into()),
                (6, "token is empty".into()),
                (7, "unknown service".into()),
                (
                    8,
                    "channel is neither empty nor a 40-character hex hash".into()
                ),
                (9, "domain is not a domain name".into()),
                (10, "token holds whitespace or control characters".into()),
            ]
        );
        assert!(matches!(
            parse("service\tdevice\n"),
            Err(ImportError::Header(_))
        ));
        assert_eq!(parse("").map(|r| r.len()).ok(), None);
    }

    #[test]
    fn all_or_nothing_and_idempotent() {
        let dir = crate::store::tests::TempDir::new("import");
        let path = dir.db();
        let mut store = Store::open(&path).unwrap();
        assert!(import(&mut store, LENGTHS).is_err());
        assert_eq!(store.count().unwrap(), 0);
        let r = import(&mut store, JAVA_P2).unwrap();
        assert_eq!(
            r,
            Report {
                rows: 3,
                created: 3,
                updated: 0,
                unchanged: 0,
                fcm: 2,
                apns: 1
            }
        );
        let again = import(&mut store, JAVA_P2).unwrap();
        assert_eq!((again.created, again.unchanged), (0, 3));
        let r = store.lookup("пример.рф", "twV50HbUmSgk").unwrap().unwrap();
        assert_eq!(r.registration.secret, "eviLlBrcdeNchE3iGwfQ6gca");
    }

    #[test]
    fn unescapes_mysql_batch_fields() {
        assert_eq!(unescape("a\\tb\\\\c\\nd"), Some("a\tb\\c\nd".into()));
        assert_eq!(unescape("NULL"), None);
    }
}
