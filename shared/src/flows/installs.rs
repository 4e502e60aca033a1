//! Installing the integration in a Kommo account, with no manual step: Kommo redirects to the
//! Redirect URI with an authorization code and the account's host (`referer`); the bridge
//! checks the host (only Kommo's account hosts are ever called), exchanges the code, reads the
//! account, connects the chat channel (Kommo disconnects it whenever the integration is
//! disabled, so every installation connects it again), and only then registers the account,
//! its tokens sealed. A failure stores nothing, and installing again is the retry.

use std::sync::Arc;

use super::FlowError;
use crate::models::kommo::{ConnectRequest, DisconnectRequest};
use crate::models::oauth::Tokens;
use crate::ports::accounts::{KommoRest, KommoRestError, TokenSealer};
use crate::ports::kommo::{KommoApi, KommoError};
use crate::ports::store::{AccountRecord, AccountRegistry, AccountState, ManagerDirectory, ManagerList};
use crate::rules::install::{check_authorization_code, kommo_account_host, refresh_due};
use crate::time::Clock;

#[derive(Clone)]
pub struct Installs {
    pub rest: Arc<dyn KommoRest>,
    /// amojo, for `connect` and `disconnect`.
    pub kommo: Arc<dyn KommoApi>,
    pub accounts: Arc<dyn AccountRegistry>,
    /// The account's managers, read at install (see `super::managers`).
    pub directory: Arc<dyn ManagerDirectory>,
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
        tracing::info!(account_id = record.account_id, scope_id = %record.scope_id.escape_debug(), "account installed");
        // The managers' ids now, so that the first events name them fully; what fails here is
        // read again when a manager is named (the install itself is done).
        match self.rest.users(&record.host, &tokens.access_token).await {
            Ok(users) => {
                let directory = ManagerList::from_users(&users, now);
                if let Err(error) = self.directory.put_managers(&record.scope_id, &directory).await {
                    tracing::warn!(%error, "the managers could not be stored at install");
                }
            }
            Err(error) => tracing::warn!(%error, "the managers could not be read at install"),
        }
        Ok(record)
    }

    /// Kommo's disable hook for `account_id` (verified by the caller): the account is marked
    /// disconnected and its tokens deleted, then the channel is disconnected. Kommo disconnects
    /// the channel itself when the integration is disabled, so a failure of that call is only
    /// logged. None when the account was never installed; disabling twice changes nothing more.
    pub async fn disable(&self, account_id: u64) -> Result<Option<AccountRecord>, FlowError> {
        let Some(record) = self.accounts.get_account(account_id).await? else { return Ok(None) };
        if record.state == AccountState::Disconnected {
            return Ok(Some(record));
        }
        self.accounts.set_account_state(account_id, AccountState::Disconnected).await?;
        let disconnect = DisconnectRequest { account_id: record.amojo_id.clone() };
        if let Err(error) = self.kommo.disconnect(&disconnect).await {
            tracing::warn!(account_id, error = %error, "the channel could not be disconnected (Kommo disconnects it on disable)");
        }
        tracing::info!(account_id, scope_id = %record.scope_id.escape_debug(), "account disconnected");
        Ok(Some(AccountRecord { state: AccountState::Disconnected, sealed_tokens: None, ..record }))
    }

    fn seal(&self, account_id: u64, tokens: &Tokens) -> String {
        let plaintext = serde_json::to_vec(tokens).expect("tokens serialise");
        self.sealer.seal(&plaintext, &sealing_context(account_id))
    }
}

/// A refresh that lost to another finds the winner's tokens on its next read; past this many
/// reads something else is wrong.
const TOKEN_READS: usize = 3;

/// An installed account's tokens, kept fresh for the calls the bridge makes to Kommo's REST API.
#[derive(Clone)]
pub struct AccountTokens {
    pub rest: Arc<dyn KommoRest>,
    pub accounts: Arc<dyn AccountRegistry>,
    pub sealer: Arc<dyn TokenSealer>,
    pub clock: Arc<dyn Clock>,
}

/// Why no access token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the account is not installed, or was disconnected")]
    NotInstalled,
    /// Kommo refused the refresh token: only installing again brings access back (chats go on).
    #[error("Kommo refused the account's refresh token: it needs installing again")]
    NeedsReinstall,
    #[error("the tokens could not be refreshed now: {0}")]
    Unavailable(String),
}

impl AccountTokens {
    /// A live access token of the account, refreshed when [`refresh_due`] says so (near its end,
    /// or `refused` by Kommo with a 401). Kommo
    /// rotates refresh tokens, so of two refreshes at once Kommo takes one and refuses the other;
    /// the new tokens are written only over the version they were read at, and the refresh that
    /// lost reads again and finds the winner's. Only a refusal nobody else explains marks the
    /// account as needing a new install.
    pub async fn access_token(&self, account_id: u64, refused: Option<&str>) -> Result<String, TokenError> {
        let context = sealing_context(account_id);
        for _ in 0..TOKEN_READS {
            let record = self.accounts.get_account(account_id).await.map_err(unavailable)?;
            let record = match record {
                Some(record) if record.state == AccountState::Connected => record,
                Some(record) if record.state == AccountState::NeedsReinstall => return Err(TokenError::NeedsReinstall),
                _ => return Err(TokenError::NotInstalled),
            };
            let sealed = record.sealed_tokens.as_deref().ok_or(TokenError::NotInstalled)?;
            let opened = self.sealer.open(sealed, &context).map_err(|e| TokenError::Unavailable(e.to_string()))?;
            let tokens: Tokens =
                serde_json::from_slice(&opened).map_err(|e| TokenError::Unavailable(format!("sealed tokens: {e}")))?;
            let now = self.clock.now_ms();
            if !refresh_due(record.access_expires_at_ms, now, refused == Some(tokens.access_token.as_str())) {
                return Ok(tokens.access_token);
            }
            match self.rest.refresh(&record.host, &tokens.refresh_token).await {
                Ok(renewed) => {
                    let sealed = self.sealer.seal(&serde_json::to_vec(&renewed).expect("tokens serialise"), &context);
                    let expires_at_ms = now + renewed.expires_in.max(0) * 1000;
                    let written =
                        self.accounts.replace_tokens(account_id, record.token_version, &sealed, expires_at_ms);
                    if written.await.map_err(unavailable)? {
                        tracing::info!(account_id, "account tokens refreshed");
                        return Ok(renewed.access_token);
                    }
                    // Another writer (an install, or a refresh whose write landed first) moved
                    // the tokens on: theirs are the ones to use.
                }
                Err(KommoRestError::Refused { detail, .. }) => {
                    let now_stored = self.accounts.get_account(account_id).await.map_err(unavailable)?;
                    if now_stored.is_some_and(|stored| stored.token_version != record.token_version) {
                        continue; // spent by a refresh that won: read its tokens
                    }
                    tracing::error!(account_id, %detail, "Kommo refused the refresh token; the account needs installing again");
                    self.accounts
                        .set_account_state(account_id, AccountState::NeedsReinstall)
                        .await
                        .map_err(unavailable)?;
                    return Err(TokenError::NeedsReinstall);
                }
                Err(other) => return Err(TokenError::Unavailable(other.to_string())),
            }
        }
        Err(TokenError::Unavailable("the tokens kept changing while being refreshed".into()))
    }
}

fn unavailable(error: crate::ports::store::StoreError) -> TokenError {
    TokenError::Unavailable(error.to_string())
}

/// What a sealed value of an account is bound to: opened for another account, it fails.
pub fn sealing_context(account_id: u64) -> String {
    format!("account#{account_id}")
}
