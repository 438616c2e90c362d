//! The test service account: a committed RSA key pair, a service-account file writer, a JWT verifier and a fake token endpoint.
//!
//! `tests/fixtures/test-key.pk8.pem` (PKCS#8 PEM, RSA-2048) and
//! `tests/fixtures/test-key.pub.pkcs1.der` (its public key as a PKCS#1 `RSAPublicKey`) were made
//! once with:
//!
//! ```text
//! openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out test-key.pk8.pem
//! openssl rsa -in test-key.pk8.pem -RSAPublicKey_out -outform DER -out test-key.pub.pkcs1.der
//! ```
//!
//! The key protects nothing: it exists only for these tests.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::Value;

use super::http::{Request, Response};

/// `project_id` of the test account.
pub const PROJECT_ID: &str = "p2-test";
/// `client_email` of the test account.
pub const CLIENT_EMAIL: &str = "p2-push@p2-test.iam.gserviceaccount.com";
/// `private_key_id` of the test account (the JWT `kid`).
pub const PRIVATE_KEY_ID: &str = "5f1e9d0c3b7a2e4f6a8c0b1d3e5f7a9c2b4d6e8f";
/// The OAuth2 scope the daemon must ask for.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The private key, PKCS#8 PEM.
pub const PRIVATE_KEY_PEM: &str = include_str!("../fixtures/test-key.pk8.pem");
/// The public key, PKCS#1 `RSAPublicKey` DER, as ring's `UnparsedPublicKey` wants it.
pub const PUBLIC_KEY_DER: &[u8] = include_bytes!("../fixtures/test-key.pub.pkcs1.der");

/// The text of a service-account JSON file for the test account, shaped like Google's.
pub fn service_account_json(token_uri: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT_ID,
        "private_key_id": PRIVATE_KEY_ID,
        "private_key": PRIVATE_KEY_PEM,
        "client_email": CLIENT_EMAIL,
        "client_id": "104242424242424242424",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/p2-push%40p2-test.iam.gserviceaccount.com",
        "universe_domain": "googleapis.com",
    })
    .to_string()
}

/// Writes `service-account.json` for the test account into `dir`; returns its path.
pub fn write_service_account(dir: &Path, token_uri: &str) -> PathBuf {
    let path = dir.join("service-account.json");
    std::fs::write(&path, service_account_json(token_uri)).expect("write service account file");
    path
}

/// The decoded header and claims of a JWT whose signature checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The JOSE header: `alg`, `typ`, `kid`.
    pub header: Value,
    /// The claims: `iss`, `scope`, `aud`, `iat`, `exp`.
    pub payload: Value,
}

/// Checks an RS256 JWT against the test public key; returns its header and claims.
pub fn verify_jwt(assertion: &str) -> Result<Claims, String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(format!("jwt has {} parts, not 3", parts.len()));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("jwt {what} is not base64url without padding: {e}"))
    };
    let json = |bytes: Vec<u8>, what: &str| {
        serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("jwt {what} is not json: {e}"))
    };
    let header = json(decode(header, "header")?, "header")?;
    if header["alg"] != "RS256" {
        return Err(format!("jwt alg is {}, not RS256", header["alg"]));
    }
    let signed = &assertion[..parts[0].len() + 1 + parts[1].len()];
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, PUBLIC_KEY_DER)
        .verify(signed.as_bytes(), &decode(signature, "signature")?)
        .map_err(|_| "jwt signature does not verify".to_owned())?;
    let payload = json(decode(payload, "claims")?, "claims")?;
    Ok(Claims { header, payload })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// What Google's token endpoint would answer to `req`, checking it strictly: a form POST
/// with the jwt-bearer grant and an assertion signed by the test key, with `kid`, `iss`,
/// `scope`, `aud` (= `http://HOST/token`), `iat` near now and `exp` = `iat` + 3600.
///
/// Success gives `{"access_token":"ya29.test-SEQ","expires_in":3599,"token_type":"Bearer"}`
/// (SEQ = the request's `seq`, so each fetch yields a new token); a failed check gives
/// 400 `{"error":"invalid_grant","error_description":WHY}`.
pub fn token_endpoint(req: &Request) -> Response {
    match check_token_request(req) {
        Ok(()) => Response::json(
            200,
            format!(
                r#"{{"access_token":"{}","expires_in":3599,"token_type":"Bearer"}}"#,
                access_token_for(req.seq)
            ),
        ),
        Err(why) => Response::json(
            400,
            serde_json::json!({"error": "invalid_grant", "error_description": why}).to_string(),
        ),
    }
}

/// The access token [`token_endpoint`] hands out for the request numbered `seq`.
pub fn access_token_for(seq: usize) -> String {
    format!("ya29.test-{seq}")
}

/// The checks of [`token_endpoint`].
pub fn check_token_request(req: &Request) -> Result<(), String> {
    if req.method != "POST" {
        return Err(format!("method {}", req.method));
    }
    if req.header("content-type") != Some("application/x-www-form-urlencoded") {
        return Err(format!("content-type {:?}", req.header("content-type")));
    }
    let grant = req.form("grant_type");
    if grant.as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return Err(format!("grant_type {grant:?}"));
    }
    let assertion = req.form("assertion").ok_or("no assertion")?;
    let claims = verify_jwt(&assertion)?;
    let host = req.header("host").ok_or("no host header")?;
    let expect = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    expect(claims.header["typ"] == "JWT", "typ")?;
    expect(claims.header["kid"] == PRIVATE_KEY_ID, "kid")?;
    expect(claims.payload["iss"] == CLIENT_EMAIL, "iss")?;
    expect(claims.payload["scope"] == FCM_SCOPE, "scope")?;
    expect(
        claims.payload["aud"] == format!("http://{host}/token"),
        "aud",
    )?;
    let iat = claims.payload["iat"].as_u64().ok_or("iat")?;
    let exp = claims.payload["exp"].as_u64().ok_or("exp")?;
    expect(iat.abs_diff(unix_now()) <= 60, "iat not now")?;
    expect(exp == iat + 3600, "exp is not iat + 3600")?;
    Ok(())
}
