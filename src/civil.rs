//! Calendar dates from Unix time, for what people read: `p2 stats`, HTTP `Date` headers.
//! std has no calendar, and one small function beats a date crate.

/// Year, month (1–12) and day of the `days`th day after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`); days before 1970 count as 1970-01-01.
pub fn from_days(days: i64) -> (u64, u64, u64) {
    let z = days.max(0).unsigned_abs() + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time (before 1970: 1970-01-01 00:00:00).
pub fn utc(unix: i64) -> String {
    let unix = unix.max(0);
    let (y, m, d) = from_days(unix / 86_400);
    let secs = unix % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        // `date -u -d @N`.
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(4_107_542_399), "2100-02-28 23:59:59 UTC");
        assert_eq!(utc(-5), "1970-01-01 00:00:00 UTC");
        assert_eq!(from_days(19_782), (2024, 2, 29));
    }
}
