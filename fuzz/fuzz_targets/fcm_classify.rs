//! FCM answer classification and `Retry-After` parsing on arbitrary answers.
//!
//! Input: `STATUS\nRETRY-AFTER\nBODY`. STATUS is a decimal number (anything else takes
//! the first two bytes as a big-endian u16), an empty RETRY-AFTER line means no header.
//! Checks: no panic, and the classification is consistent (200 is always accepted, a
//! dead token always names an FCM error code).
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use p2::push::fcm::{classify, parse_retry_after, Classification};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let status_line = lines.next().unwrap_or("");
    let retry_after = lines.next().filter(|l| !l.is_empty());
    let body = lines.next().unwrap_or("");
    let status = status_line.trim().parse::<u16>().unwrap_or_else(|_| {
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        u16::from_be_bytes([byte(0), byte(1)])
    });

    let class = classify(status, retry_after, body);
    let _ = format!("{class:?}");
    match &class {
        Classification::DeadToken(code) => assert!(
            ["UNREGISTERED", "SENDER_ID_MISMATCH", "INVALID_ARGUMENT"].contains(&code.as_str()),
            "dead token for {code:?}"
        ),
        _ if status == 200 => assert!(matches!(class, Classification::Accepted)),
        _ => {}
    }

    for value in [retry_after.unwrap_or(""), status_line, body] {
        let _ = parse_retry_after(value, SystemTime::now());
        let before_epoch = UNIX_EPOCH.checked_sub(Duration::from_secs(1));
        let _ = before_epoch.map(|t| parse_retry_after(value, t));
        // The later the clock, the shorter (or equal) the wait; whether there is one does
        // not depend on the clock.
        let early = parse_retry_after(value, UNIX_EPOCH);
        let late = parse_retry_after(value, UNIX_EPOCH + Duration::from_secs(4_102_444_800));
        assert_eq!(early.is_some(), late.is_some(), "{value:?}");
        if let (Some(early), Some(late)) = (early, late) {
            assert!(
                late <= early,
                "{value:?}: {late:?} after 2100, {early:?} in 1970"
            );
        }
    }
});
