//! Installing the integration in a Kommo account, with no manual step: Kommo redirects to the
//! Redirect URI with an authorization code and the account's host (`referer`); the bridge
//! checks the host (only Kommo's account hosts are ever called), exchanges the code, reads the
//! account, connects the chat channel (Kommo disconnects it whenever the integration is
//! disabled, so every installation connects it again), and only then registers the account,
//! its tokens sealed. A failure stores nothing, and installing again is the retry.

use std::sync::Arc;

use super::FlowError;
use crate::models::kommo::ConnectRequest;
use crate::models::oauth::Tokens;
use crate::ports::accounts::{KommoRest, KommoRestError, TokenSealer};
use crate::ports::kommo::{KommoApi, KommoError};
use crate::ports::store::{AccountRecord, AccountRegistry, AccountState};
use crate::rules::install::{check_authorization_code, kommo_account_host};
use crate::time::Clock;

#[derive(Clone)]
pub struct Installs {
    pub rest: Arc<dyn KommoRest>,
    /// amojo, for `connect`.
    pub kommo: Arc<dyn KommoApi>,
    pub accounts: Arc<dyn AccountRegistry>,
    pub sealer: Arc<dyn TokenSealer>,
    pub clock: Arc<dyn Clock>,
    /// The channel's title in Kommo.
    pub channel_title: String,
}

/// Why an installation did not complete; nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// The redirect itself is not one Kommo makes (no code, a host outside Kommo).
    #[error(transparent)]
    Rejected(#[from] crate::rules::rejection::Rejection),
    /// Kommo refused the code (used, expired, or issued to another integration).
    #[error("Kommo refused the installation: {0}")]
    Refused(String),
    /// Kommo or the store could not be reached: installing again may work.
    #[error("the installation could not be completed now: {0}")]
    Unavailable(String),
}

impl From<FlowError> for InstallError {
    fn from(error: FlowError) -> Self {
        Self::Unavailable(error.to_string())
    }
}

impl From<KommoRestError> for InstallError {
    fn from(error: KommoRestError) -> Self {
        match error {
            KommoRestError::Refused { detail, .. } => Self::Refused(detail),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl Installs {
    /// The Redirect URI's `code` and `referer`: the account installed and its channel connected.
    pub async fn install(&self, code: &str, referer: &str) -> Result<AccountRecord, InstallError> {
        let host = kommo_account_host(referer)?;
        check_authorization_code(code)?;
        let tokens = self.rest.exchange_code(&host, code).await?;
        let account = self.rest.account(&host, &tokens.access_token).await?;
        let connect = ConnectRequest::v2(account.amojo_id.clone(), self.channel_title.clone());
        let connected = self.kommo.connect(&connect).await.map_err(|error| match error {
            KommoError::Rejected { status, description, .. } => {
                InstallError::Refused(format!("the chat channel could not be connected ({status}: {description})"))
            }
            other => InstallError::Unavailable(other.to_string()),
        })?;
        let previous = self.accounts.get_account(account.id).await.map_err(FlowError::from)?;
        let now = self.clock.now_ms();
        let record = AccountRecord {
            account_id: account.id,
            host,
            amojo_id: account.amojo_id,
            scope_id: connected.scope_id,
            state: AccountState::Connected,
            sealed_tokens: Some(self.seal(account.id, &tokens)),
            access_expires_at_ms: now + tokens.expires_in.max(0) * 1000,
            token_version: previous.map_or(1, |previous| previous.token_version + 1),
            installed_at_ms: now,
        };
        self.accounts.put_account(&record).await.map_err(FlowError::from)?;
        tracing::info!(account_id = record.account_id, scope_id = %record.scope_id, "account installed");
        Ok(record)
    }

    fn seal(&self, account_id: u64, tokens: &Tokens) -> String {
        let plaintext = serde_json::to_vec(tokens).expect("tokens serialise");
        self.sealer.seal(&plaintext, &sealing_context(account_id))
    }
}

/// What a sealed value of an account is bound to: opened for another account, it fails.
pub fn sealing_context(account_id: u64) -> String {
    format!("account#{account_id}")
}
