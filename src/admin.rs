//! The admin subcommands: `check-config`, `stats`, `prune`, `import`. Each returns the
//! text to print; `main` maps errors to exit codes.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::Config;
use crate::import::{self, ImportError};
use crate::store::{self, Store};
use crate::Error;

/// `check-config`: validates the configuration and the credentials (the service
/// account's key is parsed and usable for signing; the APNs key or certificate is loaded)
/// and describes the effective settings, without secrets.
pub fn check_config(config: &Config) -> Result<String, Error> {
    let fcm = crate::fcm_client_and_fingerprint(config)?;
    let apns = crate::apns_client(config)?;
    let mut out = String::new();
    let _ = writeln!(out, "config: {}", config.source);
    let _ = writeln!(out, "jid: {}", config.jid);
    let _ = writeln!(out, "server: {}:{}", config.host, config.port);
    let _ = writeln!(
        out,
        "shared secret: set ({} characters)",
        config.shared_secret.len()
    );
    let _ = writeln!(out, "database: {}", config.database.display());
    let _ = writeln!(out, "workers: {}", config.workers);
    let _ = writeln!(out, "keepalive: {} s", config.keepalive.as_secs());
    let _ = writeln!(out, "debug: {}", config.debug);
    match (&config.fcm, &fcm) {
        (Some(f), Some((client, fingerprint))) => {
            let _ = writeln!(
                out,
                "fcm: project {}, service account {} ({}), endpoint {}, priority {}, collapse {}, ttl {}, deadline {} s, credentials {fingerprint}",
                client.project_id(),
                f.service_account_file.display(),
                client.client_email(),
                f.base_url,
                match f.priority {
                    crate::push::fcm::Priority::High => "high",
                    crate::push::fcm::Priority::Normal => "normal",
                },
                if f.collapse { "on" } else { "off" },
                f.ttl.map_or("default".into(), |t| format!("{t} s")),
                f.deadline.as_secs()
            );
            let _ = writeln!(out, "{}", fcm_warning(client.project_id()));
        }
        _ if config.apns.is_some() => {
            let _ = writeln!(out, "fcm: not configured");
        }
        _ => {
            let _ = writeln!(out, "fcm: not configured (publishes are answered wait)");
        }
    }
    match (&config.apns, &apns) {
        (Some(a), Some(_)) => {
            let _ = writeln!(
                out,
                "apns: {}{}, deadline {} s, credentials {}",
                crate::describe_apns(a),
                a.ca_file
                    .as_ref()
                    .map_or(String::new(), |f| format!(", extra roots {}", f.display())),
                a.deadline.as_secs(),
                crate::apns_fingerprint(a)
            );
            let _ = writeln!(out, "{}", apns_warning(a));
        }
        _ if cfg!(feature = "apns") => {
            let _ = writeln!(out, "apns: not configured");
        }
        _ => {
            let _ = writeln!(out, "apns: not in this build (cargo feature apns)");
        }
    }
    if config.fcm.is_some() || config.apns.is_some() {
        let _ = writeln!(
            out,
            "credentials: an answer that may mean a wrong project, environment or bundle id \
             (SENDER_ID_MISMATCH, BadDeviceToken, DeviceTokenNotForTopic) deletes a \
             registration only after these credentials delivered a push (since start, or \
             within {} days before it); until then it is answered wait",
            crate::app::PROOF_WINDOW_SECS / 86_400
        );
    }
    let l = &config.limits;
    let _ = writeln!(
        out,
        "limits: {} registrations per account, {} new per domain and hour, {}, coalesce {} ms",
        l.registrations_per_account,
        l.new_registrations_per_domain_hour,
        match l.registrations_per_domain {
            0 => "no cap on registrations per domain".to_owned(),
            n => format!("{n} registrations per domain"),
        },
        l.coalesce.as_millis()
    );
    let _ = writeln!(
        out,
        "expiry: {}",
        match l.expire_after_days {
            0 => "never".to_owned(),
            d => format!("registrations neither refreshed nor pushed to for {d} days are deleted"),
        }
    );
    out.push_str("ok\n");
    Ok(out)
}

/// What `check-config` says about an FCM setup it cannot check: whether the app belongs
/// to the service account's Firebase project.
fn fcm_warning(project_id: &str) -> String {
    format!(
        "  the app's google-services.json must come from Firebase project {project_id}: with \
         another project's, FCM answers every push SENDER_ID_MISMATCH, which p2 answers wait \
         (keeping the registration) until these credentials have delivered a push"
    )
}

/// What `check-config` says about an APNs setup it cannot check: whether the app's
/// environment and bundle id match.
fn apns_warning(apns: &crate::config::ApnsConfig) -> String {
    let environment = match (&apns.base_url, apns.sandbox) {
        (Some(_), _) => "environment of apns.baseUrl",
        (None, false) => {
            "environment production (App Store and TestFlight builds; Xcode builds need \
             apns.sandbox)"
        }
        (None, true) => {
            "environment sandbox (Xcode builds; App Store and TestFlight builds need \
             production)"
        }
    };
    format!(
        "  {environment}, bundle id {}: the app must be built for this environment with \
         this bundle id, else APNs answers every push BadDeviceToken (environment) or \
         DeviceTokenNotForTopic (bundle id), which p2 answers wait (keeping the \
         registration) until these credentials have delivered a push",
        apns.bundle_id
    )
}

/// `stats`: registrations per service and per domain, age range, database size.
pub fn stats(config: &Config) -> Result<String, Error> {
    let store = Store::open(&config.database).map_err(Error::Store)?;
    let st = store.stats().map_err(Error::Store)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "database: {} ({} bytes)",
        config.database.display(),
        st.bytes
    );
    let _ = writeln!(out, "registrations: {}", st.total);
    for (service, n) in &st.per_service {
        let _ = writeln!(out, "  {service}: {n}");
    }
    if let Some((lo, hi)) = st.created {
        let _ = writeln!(
            out,
            "created: oldest {}, newest {}",
            crate::civil::utc(lo),
            crate::civil::utc(hi)
        );
    }
    if let Some((lo, hi)) = st.updated {
        let _ = writeln!(
            out,
            "refreshed: oldest {}, newest {}",
            crate::civil::utc(lo),
            crate::civil::utc(hi)
        );
    }
    let _ = writeln!(out, "domains: {}", st.per_domain.len());
    for (domain, n) in &st.per_domain {
        let _ = writeln!(out, "  {domain}: {n}");
    }
    Ok(out)
}

/// `prune --older-than DAYS`: deletes registrations not refreshed for that long.
pub fn prune(config: &Config, days: u32) -> Result<String, Error> {
    let mut store = Store::open(&config.database).map_err(Error::Store)?;
    let cutoff = store::unix_now() - i64::from(days) * 86_400;
    let n = store.prune(cutoff).map_err(Error::Store)?;
    Ok(format!(
        "deleted {n} registrations not refreshed since {}\n",
        crate::civil::utc(cutoff)
    ))
}

/// `import FILE`: the Java p2's exported `target` table, all or nothing. Warns about
/// rows whose provider this build or configuration lacks (imported all the same: their
/// publishes are answered `wait` until it is there), and reminds the operator that the
/// export holds every token and secret.
pub fn import(config: &Config, file: &Path) -> Result<String, ImportFailure> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ImportFailure::Input(match e.kind() {
            std::io::ErrorKind::InvalidData => format!(
                "{}: not UTF-8 text (exported in another character set?): export again \
                 with `mysql {}`; nothing imported",
                file.display(),
                import::UTF8_OPTION
            ),
            _ => format!("{}: {e}", file.display()),
        })
    })?;
    let mut store =
        Store::open(&config.database).map_err(|e| ImportFailure::Daemon(Error::Store(e)))?;
    let r = import::import(&mut store, &text)
        .map_err(|e| ImportFailure::Input(format!("{}: {e}", file.display())))?;
    let mut out = format!(
        "imported {} rows into {}: {} new, {} updated, {} unchanged\n",
        r.rows,
        config.database.display(),
        r.created,
        r.updated,
        r.unchanged
    );
    let lacking = |n: usize, service: &str, what: &str| {
        format!(
            "warning: {n} {service} registration{} imported, but {what}: publishes to {} \
             are answered `wait` until it is\n",
            if n == 1 { " was" } else { "s were" },
            if n == 1 { "it" } else { "them" },
        )
    };
    if r.apns > 0 && !cfg!(feature = "apns") {
        out.push_str(&lacking(
            r.apns,
            "APNs",
            "this build has no APNs (cargo feature `apns`)",
        ));
    } else if r.apns > 0 && config.apns.is_none() {
        out.push_str(&lacking(r.apns, "APNs", "`apns` is not configured"));
    }
    if r.fcm > 0 && config.fcm.is_none() {
        out.push_str(&lacking(
            r.fcm,
            "FCM",
            "`fcm` is not configured (fcm.serviceAccountFile)",
        ));
    }
    let _ = writeln!(
        out,
        "now delete {} (and any copy): it holds every push token and publish secret",
        file.display()
    );
    Ok(out)
}

/// Why `import` failed: bad input (exit 65) or the database (exit 1).
#[derive(Debug)]
pub enum ImportFailure {
    /// The file is unreadable or malformed; nothing was written.
    Input(String),
    /// The database could not be opened.
    Daemon(Error),
}

impl From<ImportError> for ImportFailure {
    fn from(e: ImportError) -> Self {
        ImportFailure::Input(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apns_warning_names_environment_and_bundle_id() {
        let mut apns = crate::config::ApnsConfig {
            source: "p2.json".into(),
            bundle_id: "im.conversations.ios".into(),
            sandbox: false,
            base_url: None,
            credentials: crate::config::ApnsCredentials::Token {
                key_file: "AuthKey.p8".into(),
                key_id: "ABC123DEFG".into(),
                team_id: "DEF123GHIJ".into(),
            },
            ca_file: None,
            deadline: crate::config::DEFAULT_APNS_DEADLINE,
        };
        let tail = ", bundle id im.conversations.ios: the app must be built for this \
                    environment with this bundle id, else APNs answers every push \
                    BadDeviceToken (environment) or DeviceTokenNotForTopic (bundle id), \
                    which p2 answers wait (keeping the registration) until these \
                    credentials have delivered a push";
        assert_eq!(
            apns_warning(&apns),
            format!(
                "  environment production (App Store and TestFlight builds; Xcode builds \
                 need apns.sandbox){tail}"
            )
        );
        apns.sandbox = true;
        assert_eq!(
            apns_warning(&apns),
            format!(
                "  environment sandbox (Xcode builds; App Store and TestFlight builds need \
                 production){tail}"
            )
        );
        apns.base_url = Some("https://127.0.0.1:2197".into());
        assert_eq!(
            apns_warning(&apns),
            format!("  environment of apns.baseUrl{tail}")
        );
    }
}
