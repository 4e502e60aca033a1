//! Verifying Kommo's call to the integration's disable-hook URL: `GET {url}?account_id=…&
//! client_uuid=…&signature=…`, where `signature` = lowercase hex HMAC-SHA256(the integration's
//! secret key, `{client_uuid}|{account_id}`).
//!
//! Nothing else is signed: no time, no nonce. The same account's disable call therefore always
//! carries the same signature, and a captured one can be replayed; docs/installs.md says what that
//! allows (disconnecting an account the bridge serves, until it is installed again) and why
//! nothing in the protocol prevents it.

use super::{constant_time_eq, hmac_sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DisableHookError {
    #[error("the signature parameter is missing")]
    Missing,
    #[error("the signature is not 64 hex digits")]
    Malformed,
    #[error("the call is for another integration (client_uuid)")]
    OtherIntegration,
    #[error("the signature does not match client_uuid and account_id")]
    Mismatch,
}

/// The signature Kommo puts on the disable call of `account_id` for the integration `client_id`.
pub fn sign(integration_secret: &str, client_id: &str, account_id: &str) -> String {
    hex::encode(hmac_sha256(integration_secret.as_bytes(), format!("{client_id}|{account_id}").as_bytes()))
}

/// Checks a disable call: it names this integration, and its signature matches, in constant time.
pub fn verify(
    integration_secret: &str,
    client_id: &str,
    client_uuid: &str,
    account_id: &str,
    signature: Option<&str>,
) -> Result<(), DisableHookError> {
    let signature = signature.filter(|s| !s.is_empty()).ok_or(DisableHookError::Missing)?;
    let claimed = hex::decode(signature.trim()).map_err(|_| DisableHookError::Malformed)?;
    if claimed.len() != 32 {
        return Err(DisableHookError::Malformed);
    }
    if client_uuid != client_id {
        return Err(DisableHookError::OtherIntegration);
    }
    let expected = hmac_sha256(integration_secret.as_bytes(), format!("{client_id}|{account_id}").as_bytes());
    match constant_time_eq(&expected, &claimed) {
        true => Ok(()),
        false => Err(DisableHookError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "integration-secret-key-0123456789";
    const CLIENT_ID: &str = "5f0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b";
    /// Computed with Python's `hmac` module, independently of this crate.
    const SIGNATURE: &str = "3b8250b90020c3bb80d3a2dbead2fbedb56fbc8e3bb0f3d0452e15c4bd39969d";

    #[test]
    fn reproduces_an_independently_computed_signature() {
        assert_eq!(sign(SECRET, CLIENT_ID, "31000001"), SIGNATURE);
        assert_eq!(verify(SECRET, CLIENT_ID, CLIENT_ID, "31000001", Some(SIGNATURE)), Ok(()));
        assert_eq!(verify(SECRET, CLIENT_ID, CLIENT_ID, "31000001", Some(&SIGNATURE.to_uppercase())), Ok(()));
    }

    #[test]
    fn refuses_what_kommo_did_not_sign() {
        let verify = |client_uuid: &str, account: &str, signature: Option<&str>| {
            verify(SECRET, CLIENT_ID, client_uuid, account, signature)
        };
        assert_eq!(verify(CLIENT_ID, "31000002", Some(SIGNATURE)), Err(DisableHookError::Mismatch));
        assert_eq!(verify("another-integration", "31000001", Some(SIGNATURE)), Err(DisableHookError::OtherIntegration));
        assert_eq!(verify(CLIENT_ID, "31000001", None), Err(DisableHookError::Missing));
        assert_eq!(verify(CLIENT_ID, "31000001", Some("")), Err(DisableHookError::Missing));
        assert_eq!(verify(CLIENT_ID, "31000001", Some(&SIGNATURE[..40])), Err(DisableHookError::Malformed));
        assert_eq!(verify(CLIENT_ID, "31000001", Some("zz")), Err(DisableHookError::Malformed));
        let other_secret = super::sign("another-secret", CLIENT_ID, "31000001");
        assert_eq!(verify(CLIENT_ID, "31000001", Some(&other_secret)), Err(DisableHookError::Mismatch));
    }
}
