//! Push providers: what a worker hands to a provider and what comes back.
//!
//! A provider turns a [`PushMessage`] into one HTTP exchange (with bounded retries) and
//! reports an [`Outcome`]; the core decides what that means for the store and the reply.

#[cfg(feature = "apns")]
pub mod apns;
pub mod fcm;
pub mod google_auth;
pub mod resolver;

use std::fmt;

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
    /// The provider says the token will never work again (FCM `UNREGISTERED`,
    /// `SENDER_ID_MISMATCH`, `INVALID_ARGUMENT` with an FcmError detail; APNs 410).
    /// The registration is to be deleted.
    DeadToken {
        /// The provider's error code, for the log (never the token).
        reason: String,
    },
    /// Not delivered, but the registration stays: overload, 5xx, 429, timeouts,
    /// transport errors after the retry deadline, our own OAuth or configuration failing.
    Failed {
        /// Why, in a few words, for the log and the `<text>` of the `wait` error.
        reason: String,
    },
}
