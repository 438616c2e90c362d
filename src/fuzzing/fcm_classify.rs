//! A whole FCM answer on arbitrary bytes: classification, `Retry-After`, and what the
//! retry loop does with it.
//!
//! Input: `STATUS\nRETRY-AFTER\nBODY`. STATUS is a decimal number (anything else takes
//! the first two bytes as a big-endian u16), an empty RETRY-AFTER line means no header.
//! Checks: no panic (no overflow either, however long the `Retry-After`); 200 is always
//! accepted; a dead token always names an FCM error code, and only `SENDER_ID_MISMATCH`
//! is suspected to be our own mistake; rate limiting without a `Retry-After` is never
//! retried; a wait always leaves room for an attempt before the deadline; a reason is a
//! few ASCII words; a later clock never lengthens a `Retry-After`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::push::fcm::{classify, parse_retry_after, SENDER_ID_SUSPECT};
use crate::push::retry::{Classification, MAX_RETRY_AFTER};
use crate::push::Cause;

/// Checks one input (see the module's documentation).
pub fn fcm_classify(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let status_line = lines.next().unwrap_or("");
    let retry_after = lines.next().filter(|l| !l.is_empty());
    let body = lines.next().unwrap_or("");
    let status = super::status(status_line, data);

    let class = classify(status, retry_after, body);
    let _ = format!("{class:?}");
    match &class {
        Classification::Accepted => assert_eq!(status, 200),
        Classification::DeadToken { reason, suspect } => {
            assert!(
                ["UNREGISTERED", "SENDER_ID_MISMATCH", "INVALID_ARGUMENT"]
                    .contains(&reason.as_str()),
                "dead token for {reason:?}"
            );
            assert_eq!(
                *suspect,
                (reason == "SENDER_ID_MISMATCH").then_some(SENDER_ID_SUSPECT)
            );
        }
        Classification::Renew { reason } => {
            assert_eq!(status, 401);
            super::check_reason(reason);
        }
        Classification::Retry {
            cause,
            reason,
            after,
            immediate,
        } => {
            assert!(!immediate, "an answer was processed");
            assert!(after.is_none_or(|a| a <= MAX_RETRY_AFTER));
            assert!(
                *cause != Cause::RateLimited || after.is_some(),
                "rate limited without Retry-After is not retried"
            );
            super::check_reason(reason);
        }
        Classification::Fail { reason, .. } => super::check_reason(reason),
    }
    if status == 200 {
        assert_eq!(class, Classification::Accepted);
    }

    // What the retry loop makes of it, at the start of a push and near its end.
    super::check_retry_step("fcm", &class);

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
            assert!(early <= MAX_RETRY_AFTER);
        }
    }
}
