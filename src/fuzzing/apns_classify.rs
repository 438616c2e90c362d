//! A whole APNs answer on arbitrary bytes: classification and what the retry loop does
//! with it.
//!
//! Input: `STATUS\nBODY`. STATUS is a decimal number (anything else takes the first two
//! bytes as a big-endian u16). Checks: no panic; 200 is always accepted; a dead token
//! only for 410, or 400 `BadDeviceToken` / `DeviceTokenNotForTopic` (and only those two
//! suspected to be our own mistake); a renewal only for 403 `ExpiredProviderToken`; an
//! answer is never retried at once; a reason is a few ASCII words.
#![cfg(feature = "apns")]

use crate::push::apns::classify;
use crate::push::retry::Classification;

/// Checks one input (see the module's documentation).
pub fn apns_classify(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (status_line, body) = text.split_once('\n').unwrap_or((&text, ""));
    let status = super::status(status_line, data);

    let class = classify(status, body);
    let _ = format!("{class:?}");
    match &class {
        Classification::Accepted => assert_eq!(status, 200),
        Classification::DeadToken { reason, suspect } => {
            super::check_reason(reason);
            match status {
                410 => assert!(suspect.is_none()),
                400 => {
                    assert!(["BadDeviceToken", "DeviceTokenNotForTopic"].contains(&reason.as_str()));
                    assert!(suspect.is_some());
                }
                _ => panic!("dead token for http {status}"),
            }
        }
        Classification::Renew { reason } => {
            assert_eq!(reason, "apns http 403 ExpiredProviderToken");
        }
        Classification::Retry {
            reason,
            after,
            immediate,
            ..
        } => {
            assert!(matches!(status, 429 | 500 | 502 | 503 | 504));
            assert!(!immediate && after.is_none());
            super::check_reason(reason);
        }
        Classification::Fail { reason, .. } => super::check_reason(reason),
    }
    if status == 200 {
        assert_eq!(class, Classification::Accepted);
    }

    super::check_retry_step("apns", &class);
}
