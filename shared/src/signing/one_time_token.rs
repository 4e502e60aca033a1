//! Kommo one-time tokens: the `X-Auth-Token` that the widget's `$authorizedAjax` adds.
//! A JWT signed HS256 with the integration's secret key; only HS256 is accepted (never
//! `none`, never an asymmetric algorithm whose "key" could be the shared secret).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::{constant_time_eq, hmac_sha256};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_S: i64 = 10;
/// The longest a token may be valid, from now or from its `iat`. Kommo documents no lifetime
/// for its one-time tokens; an hour is far more than a widget call needs and refuses a token
/// made to live for years (one leaked with a log or a proxy stays useless).
pub const MAX_LIFETIME_S: i64 = 3600;

/// The claims the bridge uses. Kommo sends ids as numbers; strings are accepted too.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OneTimeClaims {
    #[serde(default)]
    pub iss: Option<String>,
    #[serde(default)]
    pub aud: Option<String>,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub nbf: Option<i64>,
    pub exp: i64,
    #[serde(deserialize_with = "id_as_string")]
    pub account_id: String,
    #[serde(deserialize_with = "id_as_string")]
    pub user_id: String,
    #[serde(default)]
    pub client_uuid: Option<String>,
    #[serde(default)]
    pub subdomain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the X-Auth-Token header is missing")]
    Missing,
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm must be HS256")]
    WrongAlgorithm,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token lacks a claim the bridge needs (exp, account_id, user_id)")]
    MissingClaims,
    #[error("the token is valid for longer than the bridge accepts (at most one hour)")]
    TooLongLived,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Verifies a token with the integration secret at `now_s` and returns its claims.
pub fn verify(integration_secret: &str, token: Option<&str>, now_s: i64) -> Result<OneTimeClaims, TokenError> {
    let token = token.map(str::trim).filter(|t| !t.is_empty()).ok_or(TokenError::Missing)?;
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = decode_json(header_b64)?;
    if header.alg != "HS256" {
        return Err(TokenError::WrongAlgorithm);
    }
    let claimed = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| TokenError::Malformed)?;
    let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
    let expected = hmac_sha256(integration_secret.as_bytes(), signing_input.as_bytes());
    if !constant_time_eq(&claimed, &expected) {
        return Err(TokenError::BadSignature);
    }
    let claims: OneTimeClaims = decode_json(claims_b64).map_err(|_| TokenError::MissingClaims)?;
    // Signed claims are still outside input: an `exp` near i64::MAX must not overflow.
    if now_s > claims.exp.saturating_add(LEEWAY_S) {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| now_s.saturating_add(LEEWAY_S) < nbf) {
        return Err(TokenError::NotYetValid);
    }
    let lives_too_long = |from: i64| claims.exp.saturating_sub(from) > MAX_LIFETIME_S + LEEWAY_S;
    if lives_too_long(now_s) || claims.iat.is_some_and(lives_too_long) {
        return Err(TokenError::TooLongLived);
    }
    Ok(claims)
}

/// Makes a token as Kommo would: for the local dev server, the widget harness and tests.
pub fn issue(integration_secret: &str, claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(hmac_sha256(integration_secret.as_bytes(), signing_input.as_bytes()));
    format!("{signing_input}.{signature}")
}

fn decode_json<T: serde::de::DeserializeOwned>(segment: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

fn id_as_string<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(s) if !s.is_empty() => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom("expected a non-empty id")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &str = "integration-secret-for-tests";
    const NOW: i64 = 1_700_000_000;

    fn claims() -> serde_json::Value {
        json!({"iss": "https://example.kommo.com", "aud": "https://bridge.example", "jti": "a1",
               "iat": NOW - 1, "nbf": NOW - 1, "exp": NOW + 60,
               "account_id": 31_000_001, "user_id": 42, "client_uuid": "c-1", "subdomain": "example"})
    }

    // Made with PyJWT 2.10.1: jwt.encode({"exp": 1700000060, "account_id": 31000001, "user_id": 42}, SECRET, "HS256").
    const PYJWT_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDAwNjAsImFjY291bnRfaWQiOjMxMDAwMDAxLCJ1c2VyX2lkIjo0Mn0.ur-t5X1Mmu4ifAcNFDDYCrDfiBkr0rhlJVtkCNtDvcQ";

    #[test]
    fn accepts_a_token_made_by_an_independent_library() {
        let claims = verify(SECRET, Some(PYJWT_TOKEN), NOW).unwrap();
        assert_eq!((claims.account_id.as_str(), claims.user_id.as_str()), ("31000001", "42"));
    }

    #[test]
    fn round_trips_a_token_it_issues() {
        let claims = verify(SECRET, Some(&issue(SECRET, &claims())), NOW).unwrap();
        assert_eq!(claims.subdomain.as_deref(), Some("example"));
    }

    #[test]
    fn refuses_expired_early_forged_and_wrong_algorithm_tokens() {
        let token = issue(SECRET, &claims());
        assert_eq!(verify(SECRET, Some(&token), NOW + 60 + LEEWAY_S + 1), Err(TokenError::Expired));
        assert!(verify(SECRET, Some(&token), NOW + 60 + LEEWAY_S).is_ok());
        assert_eq!(verify(SECRET, Some(&token), NOW - 1 - LEEWAY_S - 1), Err(TokenError::NotYetValid));
        assert_eq!(verify("another-secret", Some(&token), NOW), Err(TokenError::BadSignature));
        assert_eq!(verify(SECRET, None, NOW), Err(TokenError::Missing));
        assert_eq!(verify(SECRET, Some("a.b"), NOW), Err(TokenError::Malformed));

        let payload = token.split('.').nth(1).unwrap();
        for header in [r#"{"alg":"none"}"#, r#"{"alg":"RS256"}"#, r#"{"alg":"hs256"}"#] {
            let forged = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(header));
            assert_eq!(verify(SECRET, Some(&forged), NOW), Err(TokenError::WrongAlgorithm));
        }
    }

    #[test]
    fn refuses_a_token_made_to_live_longer_than_an_hour() {
        let lasting =
            |iat: i64, exp: i64| issue(SECRET, &json!({"iat": iat, "exp": exp, "account_id": 1, "user_id": 2}));
        assert!(verify(SECRET, Some(&lasting(NOW, NOW + MAX_LIFETIME_S)), NOW).is_ok());
        let ten_years = lasting(NOW, NOW + 10 * 365 * 86_400);
        assert_eq!(verify(SECRET, Some(&ten_years), NOW), Err(TokenError::TooLongLived));
        let issued_long_ago = lasting(NOW - 2 * MAX_LIFETIME_S, NOW + 60);
        assert_eq!(verify(SECRET, Some(&issued_long_ago), NOW), Err(TokenError::TooLongLived));
        let without_iat = issue(SECRET, &json!({"exp": NOW + 2 * MAX_LIFETIME_S, "account_id": 1, "user_id": 2}));
        assert_eq!(verify(SECRET, Some(&without_iat), NOW), Err(TokenError::TooLongLived));
    }

    #[test]
    fn refuses_a_token_without_the_claims_the_bridge_needs() {
        let token = issue(SECRET, &json!({"exp": NOW + 60, "user_id": 42}));
        assert_eq!(verify(SECRET, Some(&token), NOW), Err(TokenError::MissingClaims));
    }

    #[test]
    fn extreme_times_in_signed_claims_neither_overflow_nor_pass() {
        // Found by fuzz/ (one_time_token): an `exp` at i64's end overflowed the leeway sum.
        let far = issue(SECRET, &json!({"exp": i64::MAX, "nbf": i64::MAX, "account_id": 1, "user_id": 2}));
        assert_eq!(verify(SECRET, Some(&far), NOW), Err(TokenError::NotYetValid));
        let past = issue(SECRET, &json!({"exp": i64::MIN, "account_id": 1, "user_id": 2}));
        assert_eq!(verify(SECRET, Some(&past), NOW), Err(TokenError::Expired));
    }
}
