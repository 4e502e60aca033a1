//! The account registry: the Kommo accounts that installed the integration.

use async_trait::async_trait;

use super::StoreError;

/// Where an account's installation of the integration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    /// The code was exchanged (tokens held) but the chat channel is not connected yet: queued
    /// work connects it, retried until it succeeds.
    Connecting,
    /// Installed, the channel connected, tokens held.
    Connected,
    /// Kommo refused the refresh token: chats go on, the Kommo REST API waits for an install.
    NeedsReinstall,
    /// The integration was disabled in the account: nothing of it is forwarded or stored.
    Disconnected,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::NeedsReinstall => "needs_reinstall",
            Self::Disconnected => "disconnected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Connecting, Self::Connected, Self::NeedsReinstall, Self::Disconnected]
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// A Kommo account that installed the integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Kommo's numeric account id (what the Kommo UI's tokens name).
    pub account_id: u64,
    /// `{subdomain}.kommo.com`: the only host its tokens are sent to.
    pub host: String,
    /// The account's Chat API id.
    pub amojo_id: String,
    pub scope_id: String,
    pub state: AccountState,
    /// The OAuth tokens, sealed (`crate::ports::accounts::TokenSealer`): never stored in
    /// plaintext. None once disconnected.
    pub sealed_tokens: Option<String>,
    pub access_expires_at_ms: i64,
    /// Bumped by every change of the tokens: a refresh is written only over the version it read,
    /// so two refreshes at once never lose the newer (rotated) refresh token.
    pub token_version: u64,
    pub installed_at_ms: i64,
    /// When Kommo last issued the refresh token held (install or refresh): one unused for
    /// three months lapses, so a daily sweep renews those older than
    /// `crate::rules::install::RENEW_REFRESH_AFTER_MS`. 0: not known (renewed at the next sweep).
    pub tokens_renewed_at_ms: i64,
    /// Kommo answered 403 to the users list (the account was authorised by a user who is not an
    /// administrator): the last directory is kept and managers are named from the webhooks.
    pub users_refused: bool,
}

/// A scope's account in the registry, as events check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeAccount {
    pub account_id: u64,
    pub state: AccountState,
}

/// The accounts that installed the integration (global items: they map a scope to its account).
#[async_trait]
pub trait AccountRegistry: Send + Sync {
    /// Records an installation, or a new one of the same account (replacing what was stored).
    async fn put_account(&self, record: &AccountRecord) -> Result<(), StoreError>;
    async fn get_account(&self, account_id: u64) -> Result<Option<AccountRecord>, StoreError>;
    /// The account a scope belongs to, and where it stands (one read: events check it).
    async fn account_of_scope(&self, scope_id: &str) -> Result<Option<ScopeAccount>, StoreError>;
    /// Compare-and-set of the tokens: written (and the version bumped, `tokens_renewed_at_ms`
    /// set to `renewed_at_ms`) only if the stored version is still `expected_version`; true
    /// when this call wrote them.
    async fn replace_tokens(
        &self,
        account_id: u64,
        expected_version: u64,
        sealed_tokens: &str,
        access_expires_at_ms: i64,
        renewed_at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Moves the account (and its scope) to `state`; with `Disconnected` its tokens are deleted
    /// too.
    async fn set_account_state(&self, account_id: u64, state: AccountState) -> Result<(), StoreError>;
    /// Moves the account (and its scope) from `from` to `to` only if it is in `from` now (a
    /// disable that landed meanwhile is never undone); with `Disconnected` its tokens are
    /// deleted too. True when this call moved it.
    async fn transition_account(
        &self,
        account_id: u64,
        from: AccountState,
        to: AccountState,
    ) -> Result<bool, StoreError>;
    /// Records whether Kommo refuses the account's users list; true when this call changed it
    /// (so it is said once, not on every read).
    async fn note_users_refused(&self, account_id: u64, refused: bool) -> Result<bool, StoreError>;
    /// Every account, for the operator (never their tokens' plaintext).
    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError>;
}
