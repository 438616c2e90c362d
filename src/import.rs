//! `p2 import`: the Java p2's `target` table, exported with
//! `mysql --batch -e 'select service,device,channel,domain,token,node,secret from target'`,
//! into the store with every node and secret unchanged.
//!
//! All or nothing: every row is checked first and any malformed one refuses the whole
//! file, naming its line; then all rows are written in one transaction. Running it
//! twice gives the same database.

use std::fmt;

use crate::store::{Registration, Store, StoreError};

/// The columns, in the order of the documented export.
pub const COLUMNS: [&str; 7] = [
    "service", "device", "channel", "domain", "token", "node", "secret",
];

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
}

/// Why an import was refused; nothing was written.
#[derive(Debug)]
pub enum ImportError {
    /// Malformed rows: `(line number, problem)`, at most the first 20.
    Rows(Vec<(usize, String)>),
    /// The header is not the expected column list.
    Header(String),
    /// The store refused (for example a node used by two rows of one domain).
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
            ImportError::Header(h) => write!(
                f,
                "line 1: expected the header {:?}, found {h:?}",
                COLUMNS.join("\t")
            ),
            ImportError::Store(e) => write!(f, "nothing imported: {e}"),
        }
    }
}

impl std::error::Error for ImportError {}

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

/// Reads one data row; the problem as text when malformed.
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
        other => return Err(format!("unknown service {other:?}")),
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
    if domain.contains(['@', '/']) || domain.chars().any(char::is_whitespace) {
        return Err("domain is not a domain".into());
    }
    let token = required(4)?;
    let node = required(5)?;
    let secret = required(6)?;
    for (name, value) in [("token", &token), ("node", &node), ("secret", &secret)] {
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("{name} holds whitespace or control characters"));
        }
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
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, h)| h.trim_end_matches('\r'))
        .unwrap_or("");
    if header.split('\t').collect::<Vec<_>>() != COLUMNS {
        return Err(ImportError::Header(header.to_owned()));
    }
    let mut rows = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        match parse_row(line) {
            Ok(r) => rows.push(r),
            Err(problem) if bad.len() < 20 => bad.push((i + 1, problem)),
            Err(_) => {}
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

    const DEVICE: &str = "ec164939a8485ee6b7f7871071a11c7bb18aead5";

    fn export(rows: &[&str]) -> String {
        let mut s = COLUMNS.join("\t");
        for r in rows {
            s.push('\n');
            s.push_str(r);
        }
        s.push('\n');
        s
    }

    #[test]
    fn reads_the_mysql_batch_export() {
        let rows = parse(&export(&[
            &format!("FCM\t{DEVICE}\t\tjabber.de\teeDXSJjASJY:APA91b\teKxTS5n3bOe0\tKK4+H5WMfpRG/2zCbuKq6wpX"),
            &format!("APNS\t{DEVICE}\tNULL\tjabber.de\tabc\tnode2\tsecret2"),
        ]))
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].service, "fcm");
        assert_eq!(rows[0].node, "eKxTS5n3bOe0");
        assert_eq!(rows[0].secret, "KK4+H5WMfpRG/2zCbuKq6wpX");
        assert_eq!(rows[1].service, "apns");
        assert_eq!(rows[1].channel, "");
    }

    #[test]
    fn malformed_rows_are_named_by_line() {
        let err = parse(&export(&[
            &format!("FCM\t{DEVICE}\t\tjabber.de\ttok\tnode\tsecret"),
            "FCM\tshort\t\tjabber.de\ttok\tnode\tsecret",
            &format!("GCM\t{DEVICE}\t\tjabber.de\ttok\tnode\tsecret"),
            &format!("FCM\t{DEVICE}\t\tjabber.de\ttok\tnode"),
            &format!("FCM\t{DEVICE}\t\tjabber.de\t\tnode\tsecret"),
        ]))
        .unwrap_err();
        let ImportError::Rows(rows) = err else {
            panic!("expected row errors")
        };
        assert_eq!(
            rows,
            vec![
                (3, "device is not a 40-character lowercase hex hash".into()),
                (4, "unknown service \"gcm\"".into()),
                (5, "6 fields instead of 7".into()),
                (6, "token is empty".into()),
            ]
        );
        assert!(matches!(
            parse("service\tdevice\n"),
            Err(ImportError::Header(_))
        ));
    }

    #[test]
    fn unescapes_mysql_batch_fields() {
        assert_eq!(unescape("a\\tb\\\\c\\nd"), Some("a\tb\\c\nd".into()));
        assert_eq!(unescape("NULL"), None);
    }
}
