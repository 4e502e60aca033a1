//! [`TokenSealer`] with AES-256-GCM (aws-lc-rs): a fresh random 96-bit nonce per value, the
//! context as associated data. A sealed value reads `v1.` and the base64 of nonce, ciphertext
//! and tag; the version prefix leaves room for another key or algorithm later.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::ports::accounts::{SealError, TokenSealer};
use crate::random::random_bytes;

const PREFIX: &str = "v1.";

pub struct AesGcmSealer {
    key: LessSafeKey,
}

impl AesGcmSealer {
    /// From the 32-byte key (`KOMMO_TOKEN_KEY`, held in SSM as a SecureString).
    pub fn new(key: &[u8; 32]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key is an AES-256 key");
        Self { key: LessSafeKey::new(key) }
    }
}

impl TokenSealer for AesGcmSealer {
    fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut sealed = plaintext.to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .expect("sealing a value of any size that fits in memory succeeds");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let encoded = sealed.strip_prefix(PREFIX).ok_or_else(|| SealError("unknown format".into()))?;
        let mut bytes = STANDARD.decode(encoded).map_err(|e| SealError(e.to_string()))?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError("too short".into()));
        }
        let mut ciphertext = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| SealError("bad nonce".into()))?;
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut ciphertext)
            .map_err(|_| SealError("wrong key, wrong context, or altered".into()))?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_context() {
        let sealer = AesGcmSealer::new(&[7; 32]);
        let sealed = sealer.seal(b"refresh-token-secret", "account#42");
        assert!(sealed.starts_with("v1.") && !sealed.contains("refresh-token-secret"));
        assert_eq!(sealer.open(&sealed, "account#42").unwrap(), b"refresh-token-secret");
        assert_ne!(sealer.seal(b"refresh-token-secret", "account#42"), sealed, "a fresh nonce each time");
        assert!(sealer.open(&sealed, "account#43").is_err(), "another account's record");
        assert!(AesGcmSealer::new(&[8; 32]).open(&sealed, "account#42").is_err(), "another key");
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(sealer.open(&String::from_utf8(altered).unwrap(), "account#42").is_err());
        assert!(sealer.open("v0.AAAA", "account#42").is_err());
        assert!(sealer.open("v1.AA", "account#42").is_err());
    }
}
