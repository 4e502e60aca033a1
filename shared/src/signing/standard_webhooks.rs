//! Standard Webhooks (www.standardwebhooks.com), the chat service's signatures both ways.
//!
//! ```text
//! webhook-id:        unique message id
//! webhook-timestamp: Unix seconds
//! webhook-signature: "v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>" (space-separated, several allowed)
//! secret:            "whsec_" + base64(key)
//! ```
//! Any Standard Webhooks library can verify what the bridge sends and sign what it accepts.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{constant_time_eq, hmac_sha256};

/// Messages older or newer than this (seconds) are refused, against replays.
pub const TOLERANCE_S: i64 = 5 * 60;

/// The first millisecond at which a request signed at `timestamp_s` no longer verifies: the
/// clock is read in whole seconds, so it verifies up to `timestamp_s + TOLERANCE_S` seconds and
/// 999 ms. A receiver that remembers a `webhook-id` until then refuses every replay.
pub fn verifies_until_ms(timestamp_s: i64) -> i64 {
    timestamp_s.saturating_add(TOLERANCE_S + 1).saturating_mul(1000)
}

/// Longest `webhook-id` accepted: ids are remembered to refuse replays, so they must fit a
/// storage key. Senders use short ids (`msg_` and a ULID or UUID).
pub const MAX_ID_BYTES: usize = 256;
const SECRET_PREFIX: &str = "whsec_";

/// A parsed `whsec_…` secret.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("must start with \"whsec_\"")]
    MissingPrefix,
    #[error("the part after \"whsec_\" must be standard base64")]
    NotBase64,
    #[error("the key must be between 24 and 64 bytes long")]
    BadLength,
}

impl WebhookSecret {
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(SecretError::MissingPrefix)?;
        let key = STANDARD.decode(encoded).map_err(|_| SecretError::NotBase64)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SecretError::BadLength);
        }
        Ok(Self(key))
    }

    pub fn from_key(key: Vec<u8>) -> Self {
        Self(key)
    }

    /// The `whsec_…` text form.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` value for one message.
    pub fn sign(&self, msg_id: &str, timestamp_s: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.raw_signature(msg_id, timestamp_s, body)))
    }

    fn raw_signature(&self, msg_id: &str, timestamp_s: i64, body: &[u8]) -> Vec<u8> {
        let mut signed = Vec::with_capacity(msg_id.len() + body.len() + 24);
        signed.extend_from_slice(msg_id.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(timestamp_s.to_string().as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        hmac_sha256(&self.0, &signed)
    }

    /// Verifies the three headers over the raw body at `now_s`, in constant time.
    pub fn verify(&self, headers: &SignatureHeaders<'_>, body: &[u8], now_s: i64) -> Result<(), SignatureError> {
        let msg_id = headers.id.filter(|v| !v.is_empty()).ok_or(SignatureError::MissingHeader("webhook-id"))?;
        if msg_id.len() > MAX_ID_BYTES {
            return Err(SignatureError::IdTooLong);
        }
        let timestamp = headers.timestamp.ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
        let signatures = headers.signature.ok_or(SignatureError::MissingHeader("webhook-signature"))?;
        let timestamp_s: i64 = timestamp.trim().parse().map_err(|_| SignatureError::MalformedTimestamp)?;
        if timestamp_s < now_s - TOLERANCE_S {
            return Err(SignatureError::TooOld);
        }
        if timestamp_s > now_s + TOLERANCE_S {
            return Err(SignatureError::TooNew);
        }
        let expected = self.raw_signature(msg_id, timestamp_s, body);
        let matched = signatures
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            .any(|claimed| constant_time_eq(&claimed, &expected));
        if matched { Ok(()) } else { Err(SignatureError::NoMatchingSignature) }
    }
}

/// The three Standard Webhooks headers as received (any may be absent).
#[derive(Debug, Default, Clone, Copy)]
pub struct SignatureHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("webhook-id is longer than 256 bytes")]
    IdTooLong,
    #[error("webhook-timestamp is not a whole number of seconds")]
    MalformedTimestamp,
    #[error("webhook-timestamp is more than 5 minutes old")]
    TooOld,
    #[error("webhook-timestamp is more than 5 minutes in the future")]
    TooNew,
    #[error("no v1 signature in webhook-signature matches the body")]
    NoMatchingSignature,
}

/// A Standard Webhooks message id derived from what an event is about, so that every send of
/// the one event, whichever worker or retry makes it, carries the same id and the chat service
/// can drop the repeats.
pub fn derived_webhook_id(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    format!("msg_{}", hex::encode(&hash.finalize()[..12]))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example in the Standard Webhooks specification's reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers<'a>(signature: &'a str, timestamp: &'a str) -> SignatureHeaders<'a> {
        SignatureHeaders { id: Some(MSG_ID), timestamp: Some(timestamp), signature: Some(signature) }
    }

    #[test]
    fn reproduces_the_specification_example() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        assert_eq!(secret.sign(MSG_ID, TIMESTAMP, BODY), SIGNATURE);
        assert_eq!(secret.verify(&headers(SIGNATURE, "1614265330"), BODY, TIMESTAMP), Ok(()));
        assert_eq!(secret.expose(), SECRET);
    }

    #[test]
    fn accepts_any_one_of_several_signatures() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let several = format!("v1,bm90LWl0 v2,abc {SIGNATURE}");
        assert_eq!(secret.verify(&headers(&several, "1614265330"), BODY, TIMESTAMP), Ok(()));
    }

    #[test]
    fn refuses_stale_future_tampered_and_incomplete_messages() {
        let secret = WebhookSecret::parse(SECRET).unwrap();
        let h = headers(SIGNATURE, "1614265330");
        assert_eq!(secret.verify(&h, BODY, TIMESTAMP + TOLERANCE_S + 1), Err(SignatureError::TooOld));
        assert_eq!(secret.verify(&h, BODY, TIMESTAMP - TOLERANCE_S - 1), Err(SignatureError::TooNew));
        assert_eq!(secret.verify(&h, br#"{"test": 2432232315}"#, TIMESTAMP), Err(SignatureError::NoMatchingSignature));
        assert_eq!(
            secret.verify(&SignatureHeaders { signature: None, ..h }, BODY, TIMESTAMP),
            Err(SignatureError::MissingHeader("webhook-signature"))
        );
        assert_eq!(
            secret.verify(&headers(SIGNATURE, "soon"), BODY, TIMESTAMP),
            Err(SignatureError::MalformedTimestamp)
        );
        let other = WebhookSecret::from_key(vec![7; 32]);
        assert_eq!(other.verify(&h, BODY, TIMESTAMP), Err(SignatureError::NoMatchingSignature));
    }

    #[test]
    fn parses_only_well_formed_secrets() {
        assert_eq!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(SecretError::MissingPrefix));
        assert_eq!(WebhookSecret::parse("whsec_not base64!"), Err(SecretError::NotBase64));
        assert_eq!(WebhookSecret::parse("whsec_c2hvcnQ="), Err(SecretError::BadLength));
        assert!(!format!("{:?}", WebhookSecret::parse(SECRET).unwrap()).contains("MfKQ"));
    }
}
