//! Push providers: what a worker hands to a provider and what comes back.
//!
//! A provider turns a [`PushMessage`] into one HTTP exchange (with bounded retries) and
//! reports an [`Outcome`]; the core decides what that means for the store and the reply.
//! The retries, their timing and the cool-down of a provider that keeps refusing are the
//! same for every provider ([`retry`], [`cooldown`]): a provider only makes one attempt
//! and classifies its answer.

#[cfg(feature = "apns")]
pub mod apns;
pub mod cooldown;
pub mod fcm;
pub mod google_auth;
pub mod http;
pub mod resolver;
pub mod retry;
#[cfg(test)]
mod testing;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One wake-up for one registered device, as the core hands it to a worker.
///
/// Holds no message content: only the address (token) and the hashes the phone uses to
/// find the account.
#[derive(Clone, PartialEq, Eq)]
pub struct PushMessage {
    /// The provider token (FCM registration token). Secret: never logged.
    pub token: String,
    /// Lowercase hex SHA-1 of `bare JID \0 device id`: the `account` data field.
    pub device: String,
    /// `""`, or the hex SHA-1 of `muc JID \0 device id` for a group chat registration.
    pub channel: String,
    /// Whether the publish carried `last-message-body` (APNs alert vs background).
    pub has_body: bool,
}

impl fmt::Debug for PushMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushMessage")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("device", &self.device)
            .field("channel", &self.channel)
            .field("has_body", &self.has_body)
            .finish()
    }
}

/// What became of one push, after the provider's retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted the message.
    Delivered,
    /// The provider says this token will never work again, in a way only the token can
    /// cause (FCM `UNREGISTERED`, `INVALID_ARGUMENT` about the token; APNs 410). The
    /// registration is to be deleted if it still holds that token.
    DeadToken {
        /// The provider's error code, for the log (never the token).
        reason: String,
    },
    /// The provider refused the token with a code that every push also gets when our own
    /// setup is wrong (PROTOCOL.md §5, "our own mistake"): FCM `SENDER_ID_MISMATCH` (a
    /// service account of another Firebase project), APNs `BadDeviceToken` (the wrong
    /// environment) or `DeviceTokenNotForTopic` (the wrong bundle id). The core treats it
    /// as a dead token only once these credentials have proven good.
    DeadUnlessMisconfigured {
        /// The provider's error code, for the log.
        reason: String,
        /// The misconfiguration it would mean, in a few words for the operator's log
        /// (e.g. "fcm.serviceAccountFile belongs to another Firebase project than the app").
        suspect: &'static str,
    },
    /// Not delivered, but the registration stays: overload, 5xx, 429, timeouts,
    /// transport errors after the retry deadline, our own OAuth or configuration failing.
    Failed {
        /// What kind of failure, for the metrics and the log.
        cause: Cause,
        /// Why, in a few words, for the log (never sent to remote servers).
        reason: String,
    },
}

/// Why a push failed without saying anything against its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The provider answered 5xx (or an equivalent code) until the deadline.
    ProviderError,
    /// The provider asked us to slow down: 429, FCM `QUOTA_EXCEEDED`, APNs
    /// `TooManyRequests`.
    RateLimited,
    /// No answer in time: the request timeout or the push deadline passed.
    Timeout,
    /// The provider could not be reached: DNS, TCP, TLS, a connection lost.
    Transport,
    /// Our credentials: the OAuth token fetch failing, 401/403 for our access token,
    /// certificate or provider token.
    Auth,
    /// The provider refused the request for a reason on our side that retrying does not
    /// cure (a wrong project id, a bad request of ours, a wrong topic).
    Rejected,
    /// The provider is not configured in this build or configuration.
    NotConfigured,
    /// The provider refused so many pushes in a row that p2 stopped asking it for a
    /// short cool-down; this push was not sent.
    CoolingDown,
}

impl Cause {
    /// A short lowercase name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ProviderError => "provider_error",
            Cause::RateLimited => "rate_limited",
            Cause::Timeout => "timeout",
            Cause::Transport => "transport",
            Cause::Auth => "auth",
            Cause::Rejected => "rejected",
            Cause::NotConfigured => "not_configured",
            Cause::CoolingDown => "cooling_down",
        }
    }
}

impl Outcome {
    /// A failure of `cause` for `reason`.
    pub fn failed(cause: Cause, reason: impl Into<String>) -> Outcome {
        Outcome::Failed {
            cause,
            reason: reason.into(),
        }
    }
}

/// `base` scaled by a random factor in [0.5, 1.5), so that workers retrying after the same
/// failure do not retry in step.
pub fn jittered(base: Duration) -> Duration {
    // Without OS randomness, the sub-second clock is random enough for spreading retries.
    let r = getrandom::u64().unwrap_or_else(|_| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::from(d.subsec_nanos()))
            .unwrap_or(0)
    });
    let ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis((ms / 2).saturating_add(r % ms.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(200));
            assert!(
                d >= Duration::from_millis(100) && d < Duration::from_millis(300),
                "{d:?}"
            );
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
