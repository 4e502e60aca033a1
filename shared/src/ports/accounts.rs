//! What installing the integration in a Kommo account needs besides the store: Kommo's OAuth
//! and REST API ([`KommoRest`], the adapter is `crate::adapters::kommo_rest`), and a sealer
//! that keeps the account's tokens unreadable at rest ([`TokenSealer`], AES-256-GCM in
//! `crate::adapters::sealer`).

use async_trait::async_trait;

use crate::models::oauth::{KommoAccount, KommoUser, Tokens};

/// Why a call to Kommo's OAuth or REST API did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KommoRestError {
    /// Kommo refused the request (a 4xx): a used or expired code, a revoked refresh token, a
    /// wrong secret. `detail` is Kommo's own words.
    #[error("Kommo refused the call with {status}: {detail}")]
    Refused { status: u16, detail: String },
    /// Kommo could not be reached, or kept failing.
    #[error("Kommo is unavailable: {0}")]
    Unavailable(String),
    /// Kommo answered 429 (about 7 requests a second per account): `retry_after_ms` is what its
    /// `Retry-After` asked for, the least wait before the next try.
    #[error("Kommo limited the rate of calls (retry after {retry_after_ms:?} ms)")]
    RateLimited { retry_after_ms: Option<u64> },
    /// A 2xx the bridge could not read.
    #[error("Kommo answered with an unreadable body: {0}")]
    InvalidResponse(String),
}

/// Kommo's OAuth and REST API, on one account host (`{subdomain}.kommo.com`, checked by
/// `crate::rules::install::kommo_account_host` before any call).
#[async_trait]
pub trait KommoRest: Send + Sync {
    /// Exchanges an installation's authorization code for the account's tokens.
    async fn exchange_code(&self, host: &str, code: &str) -> Result<Tokens, KommoRestError>;
    /// New tokens for a refresh token. Kommo retires the old refresh token once the new one is
    /// used, not before: a refresh whose answer was lost can be made again.
    async fn refresh(&self, host: &str, refresh_token: &str) -> Result<Tokens, KommoRestError>;
    /// The account the access token belongs to, with its Chat API id.
    async fn account(&self, host: &str, access_token: &str) -> Result<KommoAccount, KommoRestError>;
    /// The account's users with their Chat API ids (every page).
    async fn users(&self, host: &str, access_token: &str) -> Result<Vec<KommoUser>, KommoRestError>;
}

/// Seals secrets for storage and opens them again. `context` binds a sealed value to what it
/// belongs to (the account), so a value copied onto another record does not open.
pub trait TokenSealer: Send + Sync {
    fn seal(&self, plaintext: &[u8], context: &str) -> String;
    fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a sealed value does not open: {0}")]
pub struct SealError(pub String);
