//! Installing the integration in a Kommo account, with no manual step: Kommo redirects to the
//! Redirect URI with an authorization code and the account's host (`referer`); the bridge
//! checks the host (only an account host of the deployment's platform is ever called),
//! exchanges the code, reads the account, keeps its tokens sealed, and connects the chat
//! channel (Kommo disconnects it whenever the integration is disabled, so every installation
//! connects it again).
//!
//! Kommo calls the Redirect URI once, waits about 3 s and ignores the answer, and a code works
//! once: so the answer comes within [`INSTALL_ANSWER_BUDGET`], and what is not done by then
//! once the code is spent is never lost. The account is kept `connecting` with its tokens and
//! queued work ([`DueWork::FinishInstall`]) connects it, retried with backoff until it
//! succeeds; each deferral counts in the `InstallsConnecting` metric. A refused code or a
//! redirect Kommo would not make stores nothing, and installing again is the retry.
//!
//! Also here: the account's tokens kept fresh ([`AccountTokens`]), renewed by a daily sweep
//! before an unused refresh token lapses, and Kommo's disable hook, which disconnects an account
//! only once Kommo confirms its tokens stopped working (see [`Installs::disable`]).

use std::sync::Arc;
use std::time::Duration;

use super::FlowError;
use crate::models::kommo::{ConnectRequest, DisconnectRequest};
use crate::models::oauth::{KommoAccount, Tokens};
use crate::ports::accounts::{KommoRest, KommoRestError, TokenSealer};
use crate::ports::kommo::KommoApi;
use crate::ports::metrics::{Metric, Metrics};
use crate::ports::store::{AccountRecord, AccountRegistry, AccountState};
use crate::ports::timers::{DueWork, Timers};
use crate::rules::install::{
    Platform, check_authorization_code, kommo_account_host, refresh_due, refresh_refused_for_good,
    refresh_token_renewal_due,
};
use crate::rules::retry::RetryPolicy;
use crate::time::Clock;

/// Kommo waits about 3 s for the Redirect URI's answer: what is not done within this is
/// finished as queued work.
pub const INSTALL_ANSWER_BUDGET: Duration = Duration::from_millis(2500);
/// How long the disable hook waits for Kommo to confirm the tokens stopped working before it
/// leaves the confirmation to queued work.
pub const DISABLE_CONFIRM_BUDGET: Duration = Duration::from_secs(3);

/// A connect that fails is tried again until it succeeds: backoff from 5 s up to SQS's longest
/// delay, 15 minutes, with no last attempt (the `InstallsConnecting` alarm says it keeps failing).
pub const FINISH_INSTALL_RETRY: RetryPolicy =
    RetryPolicy { max_attempts: u32::MAX, base_delay: Duration::from_secs(5), max_delay: Duration::from_secs(900) };
/// Tokens that still work after a disable hook are checked again this long after it, then
/// after the second delay: Kommo may revoke them just after calling.
const DISABLE_RECHECKS_MS: [i64; 2] = [60_000, 10 * 60_000];
/// A confirmation Kommo could not give (unreachable, rate-limited) is tried this many times.
const DISABLE_CONFIRM_RETRY: RetryPolicy =
    RetryPolicy { max_attempts: 12, base_delay: Duration::from_secs(10), max_delay: Duration::from_secs(900) };

#[derive(Clone)]
pub struct Installs {
    pub rest: Arc<dyn KommoRest>,
    /// amojo, for `connect` and `disconnect`.
    pub kommo: Arc<dyn KommoApi>,
    pub accounts: Arc<dyn AccountRegistry>,
    pub tokens: AccountTokens,
    pub sealer: Arc<dyn TokenSealer>,
    /// Where a connect that did not finish in time, and the managers' first read, are queued.
    pub timers: Arc<dyn Timers>,
    pub metrics: Arc<dyn Metrics>,
    pub clock: Arc<dyn Clock>,
    /// The channel's title in Kommo.
    pub channel_title: String,
    /// The channel's id: an account's scope is `{channel_id}_{amojo_id}`.
    pub channel_id: String,
    /// The platform whose account hosts are accepted (`KOMMO_PLATFORM`).
    pub platform: Platform,
}

/// Why an installation did not complete; nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// The redirect itself is not one Kommo makes (no code, a host outside the platform).
    #[error(transparent)]
    Rejected(#[from] crate::rules::rejection::Rejection),
    /// Kommo refused the code (used, expired, or issued to another integration).
    #[error("Kommo refused the installation: {0}")]
    Refused(String),
    /// Kommo or the store could not be reached before the code was spent: installing again
    /// may work.
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

/// An installation whose code was exchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The channel is connected: the account is served.
    Connected(AccountRecord),
    /// The tokens are kept; the channel is connected by queued work, retried until it succeeds.
    Connecting { host: String },
}

impl Installs {
    /// The Redirect URI's `code` and `referer`: the code exchanged, then, within
    /// [`INSTALL_ANSWER_BUDGET`], the account read and its channel connected; what is left is
    /// queued.
    pub async fn install(&self, code: &str, referer: &str) -> Result<Installed, InstallError> {
        let deadline = tokio::time::Instant::now() + INSTALL_ANSWER_BUDGET;
        let host = kommo_account_host(referer, self.platform)?;
        check_authorization_code(code)?;
        let tokens = self.rest.exchange_code(&host, code).await?;
        // From here the code is spent: whatever fails, the tokens are kept.
        let read = tokio::time::timeout_at(deadline, self.rest.account(&host, &tokens.access_token)).await;
        let kept = match read {
            Ok(Ok(account)) => self.keep_connecting(&host, &account, &tokens).await.map_err(|e| e.to_string()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("timed out".to_owned()),
        };
        let record = match kept {
            Ok(record) => record,
            Err(reason) => {
                // Not even stored: the tokens travel in the queued work, sealed for the host.
                tracing::warn!(%reason, "the account could not be read or stored at install; finished as queued work");
                let sealed = self.sealer.seal(&token_bytes(&tokens), &host_sealing_context(&host));
                let work = DueWork::FinishInstall {
                    host: host.clone(),
                    account_id: None,
                    sealed_tokens: Some(sealed),
                    attempt: 0,
                };
                self.defer(work).await?;
                return Ok(Installed::Connecting { host });
            }
        };
        match tokio::time::timeout_at(deadline, self.connect(&record)).await {
            Ok(Ok(connected)) => Ok(Installed::Connected(connected)),
            outcome => {
                let reason = outcome.map_or_else(|_| "timed out".to_owned(), |e| e.err().unwrap_or_default());
                tracing::warn!(account_id = record.account_id, %reason, "the channel was not connected at install; retried as queued work");
                let work = DueWork::FinishInstall {
                    host,
                    account_id: Some(record.account_id),
                    sealed_tokens: None,
                    attempt: 0,
                };
                self.defer(work).await?;
                Ok(Installed::Connecting { host: record.host })
            }
        }
    }

    /// Queued work of an install not finished in time ([`DueWork::FinishInstall`]): the account
    /// read (when it could not be at install, from the tokens sealed for `host`), then the
    /// channel connected. A failure queues it again with backoff, forever: the account's
    /// tokens are spent otherwise.
    pub async fn finish(
        &self,
        host: &str,
        account_id: Option<u64>,
        sealed_tokens: Option<&str>,
        attempt: u32,
    ) -> Result<(), FlowError> {
        let mut retry_after = None;
        // Once stored, the account is what later attempts connect: its tokens may have moved on
        // since, and the sealed copy in this work must never be stored over them.
        let mut known_account = account_id;
        let outcome: Result<(), String> = async {
            let account_id = match known_account {
                Some(account_id) => account_id,
                None => {
                    let sealed = sealed_tokens.ok_or("neither the account nor its tokens are known")?;
                    let opened = self.sealer.open(sealed, &host_sealing_context(host)).map_err(|e| e.to_string())?;
                    let tokens: Tokens = serde_json::from_slice(&opened).map_err(|e| format!("sealed tokens: {e}"))?;
                    let account = match self.rest.account(host, &tokens.access_token).await {
                        Ok(account) => account,
                        Err(error) => {
                            retry_after = rate_limit_wait(&error);
                            return Err(error.to_string());
                        }
                    };
                    let stored = self.keep_connecting(host, &account, &tokens).await.map_err(|e| e.to_string())?;
                    known_account = Some(stored.account_id);
                    stored.account_id
                }
            };
            let Some(record) = self.accounts.get_account(account_id).await.map_err(|e| e.to_string())? else {
                return Err("the account is not in the registry".into());
            };
            if record.state != AccountState::Connecting {
                return Ok(()); // connected, installed again, or disabled meanwhile: nothing left to do
            }
            self.connect(&record).await.map(drop)
        }
        .await;
        match outcome {
            Ok(()) => Ok(()),
            Err(reason) => {
                tracing::warn!(%reason, attempt, "the installation is still not finished; tried again later");
                let sealed = match known_account {
                    Some(_) => None,
                    None => sealed_tokens.map(str::to_owned),
                };
                let host = host.to_owned();
                self.metrics.record(Metric::InstallConnecting);
                let again = |attempt| DueWork::FinishInstall {
                    host,
                    account_id: known_account,
                    sealed_tokens: sealed,
                    attempt,
                };
                let now = self.clock.now_ms();
                super::requeue(&*self.timers, &FINISH_INSTALL_RETRY, attempt, retry_after, now, again).await?;
                Ok(())
            }
        }
    }

    /// The account stored `connecting` with its tokens, sealed: from here nothing is lost.
    async fn keep_connecting(
        &self,
        host: &str,
        account: &KommoAccount,
        tokens: &Tokens,
    ) -> Result<AccountRecord, InstallError> {
        let previous = self.accounts.get_account(account.id).await.map_err(FlowError::from)?;
        let now = self.clock.now_ms();
        let record = AccountRecord {
            account_id: account.id,
            host: host.to_owned(),
            amojo_id: account.amojo_id.clone(),
            scope_id: format!("{}_{}", self.channel_id, account.amojo_id),
            state: AccountState::Connecting,
            sealed_tokens: Some(self.sealer.seal(&token_bytes(tokens), &sealing_context(account.id))),
            access_expires_at_ms: now + tokens.expires_in.max(0) * 1000,
            token_version: previous.as_ref().map_or(1, |previous| previous.token_version + 1),
            installed_at_ms: now,
            tokens_renewed_at_ms: now,
            users_refused: previous.is_some_and(|previous| previous.users_refused),
        };
        self.accounts.put_account(&record).await.map_err(FlowError::from)?;
        Ok(record)
    }

    /// Connects the channel of a `connecting` account and marks it connected (unless it moved on
    /// meanwhile), then queues the first read of its managers. Err: why it did not connect.
    async fn connect(&self, record: &AccountRecord) -> Result<AccountRecord, String> {
        let connect = ConnectRequest::v2(record.amojo_id.clone(), self.channel_title.clone());
        let connected = self.kommo.connect(&connect).await.map_err(|e| e.to_string())?;
        let moved = if connected.scope_id == record.scope_id {
            self.accounts.transition_account(record.account_id, AccountState::Connecting, AccountState::Connected).await
        } else {
            // amojo named another scope than `{channel_id}_{amojo_id}`: its word is the scope.
            let record = AccountRecord {
                state: AccountState::Connected,
                scope_id: connected.scope_id.clone(),
                ..record.clone()
            };
            self.accounts.put_account(&record).await.map(|()| true)
        };
        moved.map_err(|e| e.to_string())?;
        let stored = self.accounts.get_account(record.account_id).await.map_err(|e| e.to_string())?;
        let stored = stored.ok_or("the account left the registry")?;
        tracing::info!(account_id = stored.account_id, scope_id = %stored.scope_id.escape_debug(), state = stored.state.as_str(), "account installed");
        // The managers' ids, read as queued work: the answer to Kommo does not wait for them.
        let refresh = DueWork::RefreshManagers { scope_id: stored.scope_id.clone(), attempt: 0 };
        if let Err(error) = self.timers.schedule(refresh, self.clock.now_ms()).await {
            tracing::warn!(%error, "the managers' first read could not be queued; a later event queues it");
        }
        Ok(stored)
    }

    /// Queues an install's unfinished work, counted in the `InstallsConnecting` metric.
    async fn defer(&self, work: DueWork) -> Result<(), InstallError> {
        self.metrics.record(Metric::InstallConnecting);
        self.timers.schedule(work, self.clock.now_ms()).await.map_err(|e| InstallError::Unavailable(e.to_string()))
    }

    /// Kommo's disable hook for `account_id` (verified by the caller). Kommo's documents do not
    /// say whether one user's revoked access fires it, so the hook alone never takes an account
    /// dark: the account is disconnected (tokens deleted, channel disconnected, its scope
    /// refused) only once Kommo confirms its tokens stopped working, here within
    /// [`DISABLE_CONFIRM_BUDGET`] or later as queued work ([`DueWork::ConfirmDisable`]).
    /// Returns the account as it now stands; None when it was never installed.
    pub async fn disable(&self, account_id: u64) -> Result<Option<AccountRecord>, FlowError> {
        let Some(record) = self.accounts.get_account(account_id).await? else { return Ok(None) };
        if record.state == AccountState::Disconnected {
            return Ok(Some(record));
        }
        let confirmed = tokio::time::timeout(DISABLE_CONFIRM_BUDGET, self.tokens_stopped(account_id)).await;
        let confirmed = confirmed.unwrap_or(Confirmation::Unknown(None));
        self.on_confirmation(record, confirmed, 0).await
    }

    /// Queued work after a disable hook: Kommo asked again whether the tokens stopped working.
    pub async fn confirm_disable(&self, account_id: u64, attempt: u32) -> Result<(), FlowError> {
        let Some(record) = self.accounts.get_account(account_id).await? else { return Ok(()) };
        if record.state == AccountState::Disconnected {
            return Ok(());
        }
        let confirmed = self.tokens_stopped(account_id).await;
        self.on_confirmation(record, confirmed, attempt).await.map(drop)
    }

    async fn on_confirmation(
        &self,
        record: AccountRecord,
        confirmed: Confirmation,
        attempt: u32,
    ) -> Result<Option<AccountRecord>, FlowError> {
        let account_id = record.account_id;
        let now = self.clock.now_ms();
        match confirmed {
            Confirmation::Stopped => self.disconnect(record).await.map(Some),
            Confirmation::StillWork => {
                tracing::warn!(
                    account_id,
                    attempt,
                    "a disable hook, but the account's tokens still work (one user's access revoked?): kept connected"
                );
                if let Some(delay) = DISABLE_RECHECKS_MS.get(attempt as usize) {
                    let work = DueWork::ConfirmDisable { account_id, attempt: attempt + 1 };
                    self.timers.schedule(work, now + delay).await?;
                }
                Ok(Some(record))
            }
            Confirmation::Unknown(retry_after) => {
                tracing::warn!(account_id, attempt, "a disable hook Kommo could not confirm yet; asked again later");
                let again = |attempt| DueWork::ConfirmDisable { account_id, attempt };
                super::requeue(&*self.timers, &DISABLE_CONFIRM_RETRY, attempt, retry_after, now, again).await?;
                Ok(Some(record))
            }
        }
    }

    /// Whether the account's tokens stopped working, as Kommo says: its account read with them
    /// (refreshed when Kommo refuses the access token). Only a refused refresh token says
    /// stopped; a 402 or 403 (unpaid, blocked) and an unreachable Kommo say nothing.
    async fn tokens_stopped(&self, account_id: u64) -> Confirmation {
        let mut refused = None;
        for _ in 0..2 {
            let token = match self.tokens.access_token(account_id, refused.as_deref()).await {
                Ok(token) => token,
                Err(TokenError::NeedsReinstall | TokenError::NotInstalled) => return Confirmation::Stopped,
                Err(TokenError::Unavailable(_)) => return Confirmation::Unknown(None),
            };
            let host = match self.accounts.get_account(account_id).await {
                Ok(Some(record)) => record.host,
                _ => return Confirmation::Unknown(None),
            };
            match self.rest.account(&host, &token).await {
                Ok(_) => return Confirmation::StillWork,
                Err(KommoRestError::Refused { status: 401, .. }) => refused = Some(token),
                Err(error) => return Confirmation::Unknown(rate_limit_wait(&error)),
            }
        }
        Confirmation::Unknown(None)
    }

    /// The account marked disconnected, its tokens deleted, then the channel disconnected.
    /// Kommo disconnects the channel itself when the integration is disabled, so a failure of
    /// that call is only logged.
    async fn disconnect(&self, record: AccountRecord) -> Result<AccountRecord, FlowError> {
        let account_id = record.account_id;
        self.accounts.set_account_state(account_id, AccountState::Disconnected).await?;
        let disconnect = DisconnectRequest { account_id: record.amojo_id.clone() };
        if let Err(error) = self.kommo.disconnect(&disconnect).await {
            tracing::warn!(account_id, error = %error, "the channel could not be disconnected (Kommo disconnects it on disable)");
        }
        tracing::info!(account_id, scope_id = %record.scope_id.escape_debug(), "account disconnected");
        Ok(AccountRecord { state: AccountState::Disconnected, sealed_tokens: None, ..record })
    }

    /// The daily sweep ([`DueWork::SweepAccountTokens`]): every connected account whose refresh
    /// token was renewed [`crate::rules::install::RENEW_REFRESH_AFTER_MS`] ago or more is
    /// refreshed (Kommo's lapse after three months unused never comes), and every account still
    /// `connecting` gets its connect queued again (should its queued work have been lost). One
    /// account failing never stops the others; run again, renewed accounts are skipped.
    pub async fn sweep(&self) -> Result<(), FlowError> {
        let accounts = self.accounts.list_accounts().await?;
        let now = self.clock.now_ms();
        let (mut renewed, mut failed) = (0, 0);
        for account in accounts {
            match account.state {
                AccountState::Connected if refresh_token_renewal_due(account.tokens_renewed_at_ms, now) => {
                    match self.tokens.renew(account.account_id).await {
                        Ok(()) => renewed += 1,
                        Err(error) => {
                            failed += 1;
                            tracing::warn!(account_id = account.account_id, %error, "the account's tokens could not be renewed");
                        }
                    }
                }
                AccountState::Connecting => {
                    let work = DueWork::FinishInstall {
                        host: account.host.clone(),
                        account_id: Some(account.account_id),
                        sealed_tokens: None,
                        attempt: 0,
                    };
                    self.timers.schedule(work, now).await?;
                }
                _ => {}
            }
        }
        tracing::info!(renewed, failed, "account tokens swept");
        Ok(())
    }
}

/// What Kommo says of an account's tokens after a disable hook.
enum Confirmation {
    /// Refused for good: the integration is gone from the account.
    Stopped,
    /// They work: the account still has the integration.
    StillWork,
    /// Kommo could not say now (with its `Retry-After`, if it gave one).
    Unknown(Option<Duration>),
}

fn rate_limit_wait(error: &KommoRestError) -> Option<Duration> {
    match error {
        KommoRestError::RateLimited { retry_after_ms } => retry_after_ms.map(Duration::from_millis),
        _ => None,
    }
}

fn token_bytes(tokens: &Tokens) -> Vec<u8> {
    serde_json::to_vec(tokens).expect("tokens serialise")
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
    /// Kommo could not be reached, limited the rate, or refused the account for now (402
    /// unpaid, 403 blocked): the tokens are kept and tried again later.
    #[error("the tokens could not be refreshed now: {0}")]
    Unavailable(String),
}

/// When [`AccountTokens`] refreshes.
#[derive(Clone, Copy)]
enum RefreshWhen<'a> {
    /// Near the access token's end, or when it is the one Kommo just refused.
    Due { refused: Option<&'a str> },
    /// When the refresh token was renewed a month ago or more (the sweep).
    RenewalDue,
}

impl AccountTokens {
    /// A live access token of the account, refreshed when [`refresh_due`] says so (near its end,
    /// or `refused` by Kommo with a 401).
    pub async fn access_token(&self, account_id: u64, refused: Option<&str>) -> Result<String, TokenError> {
        self.tokens(account_id, RefreshWhen::Due { refused }).await
    }

    /// Refreshes the account's tokens if their refresh token was renewed a month ago or more
    /// (re-checked on every read, so two sweeps at once refresh once).
    pub async fn renew(&self, account_id: u64) -> Result<(), TokenError> {
        self.tokens(account_id, RefreshWhen::RenewalDue).await.map(drop)
    }

    /// Kommo rotates refresh tokens, and "the old refresh token will still be functional until
    /// you use the new one": of two refreshes at once both may succeed, or (when the winner's
    /// tokens were used already) the loser is refused. The new tokens are written only over
    /// the version they were read at; a refresh that lost reads again and uses the winner's,
    /// and a refresh whose write failed leaves the old refresh token working (its successor was
    /// never used). Only a refusal (400, 401) nobody else explains marks the account as
    /// needing a new install.
    async fn tokens(&self, account_id: u64, when: RefreshWhen<'_>) -> Result<String, TokenError> {
        let context = sealing_context(account_id);
        for _ in 0..TOKEN_READS {
            let record = self.accounts.get_account(account_id).await.map_err(unavailable)?;
            let record = match record {
                Some(record) if matches!(record.state, AccountState::Connected | AccountState::Connecting) => record,
                Some(record) if record.state == AccountState::NeedsReinstall => return Err(TokenError::NeedsReinstall),
                _ => return Err(TokenError::NotInstalled),
            };
            let sealed = record.sealed_tokens.as_deref().ok_or(TokenError::NotInstalled)?;
            let opened = self.sealer.open(sealed, &context).map_err(|e| TokenError::Unavailable(e.to_string()))?;
            let tokens: Tokens =
                serde_json::from_slice(&opened).map_err(|e| TokenError::Unavailable(format!("sealed tokens: {e}")))?;
            let now = self.clock.now_ms();
            let due = match when {
                RefreshWhen::Due { refused } => {
                    refresh_due(record.access_expires_at_ms, now, refused == Some(tokens.access_token.as_str()))
                }
                RefreshWhen::RenewalDue => refresh_token_renewal_due(record.tokens_renewed_at_ms, now),
            };
            if !due {
                return Ok(tokens.access_token);
            }
            match self.rest.refresh(&record.host, &tokens.refresh_token).await {
                Ok(renewed) => {
                    let sealed = self.sealer.seal(&token_bytes(&renewed), &context);
                    let expires_at_ms = now + renewed.expires_in.max(0) * 1000;
                    let written =
                        self.accounts.replace_tokens(account_id, record.token_version, &sealed, expires_at_ms, now);
                    if written.await.map_err(unavailable)? {
                        tracing::info!(account_id, "account tokens refreshed");
                        return Ok(renewed.access_token);
                    }
                    // Another writer (an install, or a refresh whose write landed first) moved
                    // the tokens on: theirs are the ones to use.
                }
                Err(KommoRestError::Refused { status, detail }) if refresh_refused_for_good(status) => {
                    let now_stored = self.accounts.get_account(account_id).await.map_err(unavailable)?;
                    if now_stored.is_some_and(|stored| stored.token_version != record.token_version) {
                        continue; // spent by a refresh that won: read its tokens
                    }
                    let detail = detail.escape_debug().to_string();
                    tracing::error!(account_id, %detail, "Kommo refused the refresh token; the account needs installing again");
                    let moved =
                        self.accounts.transition_account(account_id, record.state, AccountState::NeedsReinstall);
                    moved.await.map_err(unavailable)?;
                    return Err(TokenError::NeedsReinstall);
                }
                Err(KommoRestError::Refused { status, .. }) => {
                    tracing::warn!(
                        account_id,
                        status,
                        "Kommo refused the account for now (unpaid or blocked?); its tokens are kept"
                    );
                    return Err(TokenError::Unavailable(format!("Kommo refused the account for now ({status})")));
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

/// What the tokens of an install whose account could not be read are bound to, in its queued
/// work: its account host.
pub fn host_sealing_context(host: &str) -> String {
    format!("install#{host}")
}
