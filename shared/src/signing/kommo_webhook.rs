//! Verifying webhooks from Kommo: `X-Signature` = lowercase hex HMAC-SHA1(channel secret, raw body).
//!
//! Nothing else is signed and there is no timestamp header. Some Kommo clients hash the body
//! without a trailing newline, so a body with one trailing CR/LF stripped is accepted as well.

use super::{constant_time_eq, hmac_sha1};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookSignatureError {
    #[error("the X-Signature header is missing")]
    Missing,
    #[error("the X-Signature header is not 40 hex digits")]
    Malformed,
    #[error("the X-Signature does not match the body")]
    Mismatch,
}

/// The signature Kommo puts on `body`.
pub fn sign(channel_secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha1(channel_secret.as_bytes(), body))
}

/// Checks `X-Signature` against the raw body, in constant time.
pub fn verify(channel_secret: &str, body: &[u8], signature_header: Option<&str>) -> Result<(), WebhookSignatureError> {
    let header = signature_header.ok_or(WebhookSignatureError::Missing)?.trim();
    let claimed = hex::decode(header).map_err(|_| WebhookSignatureError::Malformed)?;
    if claimed.len() != 20 {
        return Err(WebhookSignatureError::Malformed);
    }
    let key = channel_secret.as_bytes();
    if constant_time_eq(&hmac_sha1(key, body), &claimed) {
        return Ok(());
    }
    let stripped = strip_one_line_ending(body);
    if stripped.len() != body.len() && constant_time_eq(&hmac_sha1(key, stripped), &claimed) {
        return Ok(());
    }
    Err(WebhookSignatureError::Mismatch)
}

fn strip_one_line_ending(body: &[u8]) -> &[u8] {
    body.strip_suffix(b"\r\n").or_else(|| body.strip_suffix(b"\n")).or_else(|| body.strip_suffix(b"\r")).unwrap_or(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "5a44c5dff55f3c15a4cce8d7c4cc27e207c7e189";
    const BODY: &[u8] = br#"{"account_id":"af9945ff-1490-4cad-807d-945c15d88bec","time":1639572261}"#;
    const SIGNATURE: &str = "fbca029c85eb9a2fded21e9d1a514a408ee48eac";

    #[test]
    fn reproduces_the_webhook_vector() {
        assert_eq!(sign(SECRET, BODY), SIGNATURE);
        assert_eq!(verify(SECRET, BODY, Some(SIGNATURE)), Ok(()));
    }

    #[test]
    fn accepts_upper_case_hex_and_a_body_with_one_trailing_newline() {
        assert_eq!(verify(SECRET, BODY, Some(&SIGNATURE.to_uppercase())), Ok(()));
        let mut with_newline = BODY.to_vec();
        with_newline.extend_from_slice(b"\r\n");
        assert_eq!(verify(SECRET, &with_newline, Some(SIGNATURE)), Ok(()));
    }

    #[test]
    fn rejects_a_tampered_body_a_wrong_secret_and_bad_headers() {
        let tampered = BODY.to_vec().iter().map(|b| if *b == b'1' { b'2' } else { *b }).collect::<Vec<_>>();
        assert_eq!(verify(SECRET, &tampered, Some(SIGNATURE)), Err(WebhookSignatureError::Mismatch));
        assert_eq!(verify("another-secret", BODY, Some(SIGNATURE)), Err(WebhookSignatureError::Mismatch));
        assert_eq!(verify(SECRET, BODY, None), Err(WebhookSignatureError::Missing));
        assert_eq!(verify(SECRET, BODY, Some("zz")), Err(WebhookSignatureError::Malformed));
        assert_eq!(verify(SECRET, BODY, Some(&SIGNATURE[..38])), Err(WebhookSignatureError::Malformed));
    }

    #[test]
    fn strips_only_one_line_ending() {
        let mut two = BODY.to_vec();
        two.extend_from_slice(b"\n\n");
        assert_eq!(verify(SECRET, &two, Some(SIGNATURE)), Err(WebhookSignatureError::Mismatch));
    }
}
