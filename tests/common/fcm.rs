//! FCM and Google's token endpoint as one loopback HTTP server, and what FCM answers:
//! the bodies of the Firebase error documentation.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::http::{MockServer, Request, Response};
use super::keys;

/// Where the test project's sends go.
pub const FCM_PATH: &str = "/v1/projects/p2-test/messages:send";

/// 200: accepted.
pub const OK_BODY: &str =
    r#"{"name":"projects/p2-test/messages/0:1500415314455276%31bd1c9631bd1c96"}"#;
/// 404 with the FcmError `UNREGISTERED`: the token is dead.
pub const UNREGISTERED: &str = r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
/// 503: try again later.
pub const UNAVAILABLE: &str = r#"{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}"#;
/// 401 without an FcmError: the access token expired.
pub const UNAUTHENTICATED: &str = r#"{"error":{"code":401,"message":"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.","status":"UNAUTHENTICATED"}}"#;
/// 404 without an FcmError: a wrong project id, never a dead token.
pub const WRONG_PROJECT: &str =
    r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND"}}"#;
/// 429 when the project's (or one device's) sending quota is used up.
pub const QUOTA_EXCEEDED: &str = r#"{"error":{"code":429,"message":"Quota exceeded for quota metric 'Send messages' and limit 'Send messages per minute' of service 'fcm.googleapis.com'","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"QUOTA_EXCEEDED"}]}}"#;

/// What the FCM stand-in answers to one send.
pub type Script = dyn Fn(&Request) -> Response + Send + Sync;

/// 200, accepted.
pub fn ok() -> Response {
    Response::json(200, OK_BODY)
}

/// An FCM error answer: `code`, `status` and, if given, an FcmError detail.
pub fn fcm_error(code: u16, status: &str, error_code: Option<&str>) -> Response {
    let details = match error_code {
        Some(c) => format!(
            r#","details":[{{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"{c}"}}]"#
        ),
        None => String::new(),
    };
    Response::json(
        code,
        format!(r#"{{"error":{{"code":{code},"message":"m","status":"{status}"{details}}}}}"#),
    )
}

/// Answers its i-th request with `answers[i]`, and [`ok`] after the last.
pub fn scripted(answers: Vec<Response>) -> impl Fn(&Request) -> Response + Send + Sync {
    let count = AtomicUsize::new(0);
    move |_| {
        let i = count.fetch_add(1, Ordering::SeqCst);
        answers.get(i).cloned().unwrap_or_else(ok)
    }
}

/// One server playing Google's token endpoint (`/token`, [`keys::token_endpoint`]) and
/// FCM (everything else, answered by `fcm`).
pub fn server(fcm: impl Fn(&Request) -> Response + Send + Sync + 'static) -> MockServer {
    server_with(keys::token_endpoint, fcm)
}

/// The same with another token endpoint.
pub fn server_with(
    token: impl Fn(&Request) -> Response + Send + Sync + 'static,
    fcm: impl Fn(&Request) -> Response + Send + Sync + 'static,
) -> MockServer {
    MockServer::start(move |req| {
        if req.path == "/token" {
            token(req)
        } else {
            fcm(req)
        }
    })
}
