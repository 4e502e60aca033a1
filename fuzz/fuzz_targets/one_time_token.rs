//! The Kommo UI's one-time token verifier (JWT HS256 with the integration secret), with the
//! fuzz input as the token, and, when the input is JSON, as the claims of a token issued with
//! the secret (the round trip).
//!
//! - Any text: never a panic, and an accepted token is one whose HS256 signature, recomputed
//!   here independently, matches, whose header says HS256 and whose times hold.
//! - Claims: the issued token verifies unless its claims are unusable (missing, expired, not
//!   yet valid, living over an hour, and then for the right reason), gives back the claims it was made with, and
//!   fails with another secret or with any one character changed.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::signing::one_time_token::{LEEWAY_S, MAX_LIFETIME_S, OneTimeClaims, TokenError, issue, verify};
use shared_fuzz::INTEGRATION_SECRET;

const NOW_S: i64 = 1_700_000_000;

fn hs256(message: &str) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(INTEGRATION_SECRET.as_bytes()).expect("any key length");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// What an accepted token must be, checked without the verifier's code.
fn check_accepted(token: &str, claims: &OneTimeClaims) {
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token of {} parts", parts.len());
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("header base64")).expect("JSON");
    assert_eq!(header["alg"], "HS256", "accepted alg {}", header["alg"]);
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature base64");
    assert_eq!(signature, hs256(&format!("{}.{}", parts[0], parts[1])), "accepted a signature the secret did not make");
    assert!(i128::from(NOW_S) <= i128::from(claims.exp) + i128::from(LEEWAY_S), "accepted an expired token");
    if let Some(nbf) = claims.nbf {
        assert!(i128::from(nbf) <= i128::from(NOW_S) + i128::from(LEEWAY_S), "accepted a token not valid yet");
    }
    let longest = i128::from(MAX_LIFETIME_S) + i128::from(LEEWAY_S);
    assert!(i128::from(claims.exp) - i128::from(NOW_S) <= longest, "accepted a token living over an hour from now");
    if let Some(iat) = claims.iat {
        assert!(i128::from(claims.exp) - i128::from(iat) <= longest, "accepted a token living over an hour from iat");
    }
    assert!(!claims.account_id.is_empty() && !claims.user_id.is_empty());
}

/// An id claim as the verifier reads it: a non-empty string, or a number in its JSON form.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn round_trip(claims_json: &Value, salt: usize) {
    let token = issue(INTEGRATION_SECRET, claims_json);
    // The claims as the verifier reads them back from the token's text: serde_json (without
    // its `float_roundtrip` feature) may read a float written from a float one ULP off, so a
    // float id is compared as it reads back, not as it was first parsed.
    let claims_json: &Value = &serde_json::from_str(&claims_json.to_string()).expect("JSON it wrote");
    match verify(INTEGRATION_SECRET, Some(&token), NOW_S) {
        Ok(claims) => {
            check_accepted(&token, &claims);
            assert_eq!(Some(claims.exp), claims_json["exp"].as_i64(), "exp changed on the way");
            assert_eq!(Some(&claims.account_id), id_text(&claims_json["account_id"]).as_ref());
            assert_eq!(Some(&claims.user_id), id_text(&claims_json["user_id"]).as_ref());
            assert_eq!(claims.nbf, claims_json["nbf"].as_i64());
            assert_eq!(claims.subdomain.as_deref(), claims_json["subdomain"].as_str());
        }
        Err(TokenError::Expired) => {
            let exp = claims_json["exp"].as_i64().expect("expired without an integer exp");
            assert!(i128::from(NOW_S) > i128::from(exp) + i128::from(LEEWAY_S), "refused as expired at exp {exp}");
        }
        Err(TokenError::NotYetValid) => {
            let nbf = claims_json["nbf"].as_i64().expect("not yet valid without an integer nbf");
            assert!(i128::from(nbf) > i128::from(NOW_S) + i128::from(LEEWAY_S), "refused as early at nbf {nbf}");
        }
        Err(TokenError::TooLongLived) => {
            let exp = i128::from(claims_json["exp"].as_i64().expect("too long-lived without an integer exp"));
            let longest = i128::from(MAX_LIFETIME_S) + i128::from(LEEWAY_S);
            let from_iat = claims_json["iat"].as_i64().map(|iat| exp - i128::from(iat));
            assert!(exp - i128::from(NOW_S) > longest || from_iat.is_some_and(|lifetime| lifetime > longest));
        }
        Err(TokenError::MissingClaims) => {}
        Err(other) => panic!("a token the secret issued was refused: {other}"),
    }
    assert!(verify("another-secret", Some(&token), NOW_S).is_err(), "verified with another secret");

    // Any one character changed (to another base64url character, or a separator) is refused.
    let at = salt % token.len();
    let original = token.as_bytes()[at];
    let replacement = [b'A', b'B', b'-', b'_', b'.', b'0', b'a'][salt % 7];
    let replacement = if replacement == original { b'Q' } else { replacement };
    let mut tampered = token.into_bytes();
    tampered[at] = replacement;
    let tampered = String::from_utf8(tampered).expect("ASCII");
    assert!(verify(INTEGRATION_SECRET, Some(&tampered), NOW_S).is_err(), "a changed token verified: {tampered}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(claims) = verify(INTEGRATION_SECRET, Some(&text), NOW_S) {
        check_accepted(&text, &claims);
    }
    if let Ok(claims_json) = serde_json::from_slice::<Value>(data) {
        round_trip(&claims_json, data.len().wrapping_mul(31).wrapping_add(data.first().copied().unwrap_or(0).into()));
    }
});
