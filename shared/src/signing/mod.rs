//! Every signature the bridge makes or checks, each byte-exact to its protocol.
//!
//! - [`amojo`]: requests to Kommo's Chat API (Content-MD5 + HMAC-SHA1 over method, MD5, type, date, path).
//! - [`disable_hook`]: Kommo's call to the disable-hook URL (HMAC-SHA256 of client id and account).
//! - [`kommo_webhook`]: `X-Signature` on webhooks from Kommo (HMAC-SHA1 of the raw body).
//! - [`one_time_token`]: the Kommo UI widget's `X-Auth-Token` (JWT HS256).
//! - [`standard_webhooks`]: both directions with the chat service (www.standardwebhooks.com).

pub mod amojo;
pub mod disable_hook;
pub mod kommo_webhook;
pub mod one_time_token;
pub mod standard_webhooks;

use hmac::{Hmac, KeyInit, Mac};

/// A secret value that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub(crate) fn hmac_sha1(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Compares two byte strings in time that depends only on their lengths, so a forger
/// learns nothing from how long a rejection takes.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
