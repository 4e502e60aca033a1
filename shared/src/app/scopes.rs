//! Which scopes the bridge serves: a scope whose account disabled the integration (Kommo's
//! disable hook, or `bridge-cli disconnect`) is refused on both sides until it is installed
//! again: nothing forwarded, nothing stored.
//!
//! The registry is read at most once a minute per scope and instance, not on every event: a
//! steady stream of events costs no read for this. The instance that handles the disable hook
//! or an install knows at once; another Lambda instance learns within [`SCOPE_STATE_TTL_MS`].
//! A scope the registry does not know (configured in `KOMMO_ACCOUNTS`, or connected before the
//! registry existed) is served.

use std::sync::Arc;

use http::StatusCode;

use super::http::ApiError;
use crate::flows::FlowError;
use crate::flows::managers::ScopeCache;
use crate::ports::store::{AccountRegistry, AccountState};
use crate::time::Clock;

/// How long an instance trusts what it read of a scope's state.
pub const SCOPE_STATE_TTL_MS: i64 = 60_000;

pub struct ScopeGate {
    accounts: Arc<dyn AccountRegistry>,
    clock: Arc<dyn Clock>,
    /// scope → disconnected, with when it was read.
    cache: ScopeCache<bool>,
}

impl ScopeGate {
    pub fn new(accounts: Arc<dyn AccountRegistry>, clock: Arc<dyn Clock>) -> Self {
        Self { accounts, clock, cache: ScopeCache::new() }
    }

    /// Ok when the scope is served; 403 `scope_disconnected` when its account disabled the
    /// integration.
    pub async fn check(&self, scope_id: &str) -> Result<(), ApiError> {
        let now = self.clock.now_ms();
        let cached = self.cache.get(scope_id);
        let disconnected = match cached {
            Some((disconnected, read_at)) if now - read_at < SCOPE_STATE_TTL_MS => disconnected,
            _ => {
                let account = self.accounts.account_of_scope(scope_id).await.map_err(FlowError::from)?;
                let disconnected = account.is_some_and(|account| account.state == AccountState::Disconnected);
                self.remember(scope_id, disconnected);
                disconnected
            }
        };
        match disconnected {
            false => Ok(()),
            true => Err(scope_disconnected()),
        }
    }

    /// As [`Self::check`], for a Kommo webhook, which must be answered in time whatever the
    /// store does (Kommo never sends it again): when the registry cannot be read within
    /// `budget`, what this instance last read of the scope decides, however old, and a scope it
    /// never read is served.
    pub async fn check_in_time(&self, scope_id: &str, budget: std::time::Duration) -> Result<(), ApiError> {
        match tokio::time::timeout(budget, self.check(scope_id)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) if error.status == StatusCode::FORBIDDEN => Err(error),
            Ok(Err(_)) | Err(_) => {
                tracing::warn!("the account registry did not answer in time; the scope's last known state decides");
                match self.cache.get(scope_id) {
                    Some((true, _)) => Err(scope_disconnected()),
                    _ => Ok(()),
                }
            }
        }
    }

    /// What this instance just did to a scope (disabled, or installed again), known at once.
    pub fn remember(&self, scope_id: &str, disconnected: bool) {
        self.cache.put(scope_id, disconnected, self.clock.now_ms());
    }
}

fn scope_disconnected() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "scope_disconnected",
        "the integration was disabled in this Kommo account: nothing is forwarded until it is installed again",
    )
}
