//! The error replies the core sends, each with the short generic text remote servers
//! get (PROTOCOL.md §5: details go to the log, never to the federated network).
//!
//! Which type goes where matters: ejabberd drops a user's push registration on any
//! error that is not `wait`, so every failure that is ours or transient is `wait`.

use crate::xmpp::stanza::{Condition, ErrorType, StanzaError};

/// `wait` `internal-server-error`: the database failed (disk full, locked, read-only).
pub fn storage_failure() -> StanzaError {
    StanzaError::new(
        ErrorType::Wait,
        Condition::InternalServerError,
        "storage failure",
    )
}

/// `wait` `internal-server-error`: the provider did not take the push (overloaded,
/// unreachable, our credentials failing or not yet proven, the token changed while the
/// push was under way).
pub fn not_delivered() -> StanzaError {
    StanzaError::new(
        ErrorType::Wait,
        Condition::InternalServerError,
        "push not delivered",
    )
}

/// `wait` `internal-server-error`: every worker is busy and the queue is full.
pub fn queue_full() -> StanzaError {
    StanzaError::new(
        ErrorType::Wait,
        Condition::InternalServerError,
        "push queue full",
    )
}

/// `wait` `internal-server-error`: the registration's service is not configured here.
pub fn service_not_configured() -> StanzaError {
    StanzaError::new(
        ErrorType::Wait,
        Condition::InternalServerError,
        "push service not configured",
    )
}

/// `wait` `policy-violation`: a stanza the parser skipped for its size or depth. `wait`,
/// because the start tag cannot tell whether it was a publish.
pub fn oversized() -> StanzaError {
    StanzaError::new(
        ErrorType::Wait,
        Condition::PolicyViolation,
        "stanza too large or too deeply nested",
    )
}

/// `wait` `resource-constraint`: the domain is over its hourly budget of new
/// registrations.
pub fn registration_rate() -> StanzaError {
    StanzaError::new(
        ErrorType::Wait,
        Condition::ResourceConstraint,
        "too many new registrations from this domain; try again later",
    )
}

/// `wait` `resource-constraint`: the domain holds as many registrations as allowed.
pub fn domain_full() -> StanzaError {
    StanzaError::new(
        ErrorType::Wait,
        Condition::ResourceConstraint,
        "too many registrations for this domain",
    )
}

/// `cancel` `item-not-found`: the provider says the token is dead; the registration
/// was deleted.
pub fn dead_token() -> StanzaError {
    StanzaError::new(
        ErrorType::Cancel,
        Condition::ItemNotFound,
        "the device is no longer registered with its push service",
    )
}

/// `cancel` `item-not-found` with a text.
pub fn not_found(text: &str) -> StanzaError {
    StanzaError::new(ErrorType::Cancel, Condition::ItemNotFound, text)
}

/// `cancel` `item-not-found`: a command node p2 does not have.
pub fn unknown_command() -> StanzaError {
    not_found("unknown command")
}

/// `cancel` `item-not-found`: a register or unregister command for a push service p2
/// does not know.
pub fn unknown_service() -> StanzaError {
    not_found("unknown push service")
}

/// `modify` `bad-request`: a command action other than execute or cancel.
pub fn unsupported_action(action: &str) -> StanzaError {
    bad_request(format!(
        "action {action:?} is not supported by this command"
    ))
}

/// `cancel` `item-not-found` without text (disco of an unknown node).
pub fn no_such_node() -> StanzaError {
    StanzaError::bare(ErrorType::Cancel, Condition::ItemNotFound)
}

/// `cancel` `service-unavailable`: a payload p2 does not serve.
pub fn unsupported() -> StanzaError {
    StanzaError::bare(ErrorType::Cancel, Condition::ServiceUnavailable)
}

/// `cancel` `service-unavailable` with a text: a command for a service not configured
/// here.
pub fn service_unavailable(text: impl Into<String>) -> StanzaError {
    StanzaError::new(ErrorType::Cancel, Condition::ServiceUnavailable, text)
}

/// `auth` `forbidden`.
pub fn forbidden(text: &str) -> StanzaError {
    StanzaError::new(ErrorType::Auth, Condition::Forbidden, text)
}

/// `modify` `bad-request`.
pub fn bad_request(text: impl Into<String>) -> StanzaError {
    StanzaError::new(ErrorType::Modify, Condition::BadRequest, text)
}
