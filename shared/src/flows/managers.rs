//! One identity per manager. Kommo names a manager by their Chat API (amojo) id in its chat
//! webhooks (typing, messages, reactions) and by their numeric user id in the Kommo UI's tokens
//! (presence). The chat service gets one shape everywhere, `{id, kommo_user_id?, name?}`, with
//! `id` the amojo id, from a directory of the account's users kept in the table.
//!
//! - [`ManagerDirectoryRefresh`] (where Kommo's calls arrive) queues a read of
//!   `GET /api/v4/users?with=amojo_id` ([`DueWork::RefreshManagers`]) when a manager is named
//!   that the directory does not know, at most once a minute per account, and at install; the
//!   read itself runs as queued work, never in a webhook's answer path. Kommo lists users to
//!   administrators only: when it answers 403 (an account authorised by a user who is not an
//!   administrator), the last directory is kept, managers are named as the webhooks name them
//!   (a non-empty `sender.name`), and the account says so once (log, `bridge-cli accounts`).
//! - [`ManagerNames`] (wherever events are sent, and the chat service's presence pull) fills
//!   each event's manager from the directory: [`NamedManagers`] wraps the chat-service port, so
//!   every event on every path is named the same way.
//!
//! Until the directory knows a manager (an account not installed through Kommo's OAuth, or a
//! manager added since the last read, within its minute), an event carries what its source
//! gave: the amojo id alone from a webhook; from the Kommo UI the Kommo user id as `id` (a
//! decimal string) and as `kommo_user_id`. The next event after the directory learns them
//! carries the amojo id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::FlowError;
use super::installs::{AccountTokens, TokenError};
use crate::models::chat::{BridgeEvent, ManagerRef};
use crate::ports::accounts::{KommoRest, KommoRestError};
use crate::ports::chat::{ChatAnswer, ChatError, ChatService};
use crate::ports::store::{AccountRegistry, ManagerDirectory, ManagerList};
use crate::ports::timers::{DueWork, Timers};
use crate::rules::retry::RetryPolicy;
use crate::time::Clock;

/// Kommo's users are read again on a miss at most this often per account.
pub const USERS_REFRESH_INTERVAL_MS: i64 = 60_000;
/// How long a reader trusts the directory it read; a manager it does not know makes it read
/// again once this much younger.
const DIRECTORY_TTL_MS: i64 = 60_000;
const DIRECTORY_RECHECK_MS: i64 = 5_000;
/// A read of the users Kommo rate-limited is tried again this many times.
const USERS_READ_RETRY: RetryPolicy =
    RetryPolicy { max_attempts: 4, base_delay: Duration::from_secs(2), max_delay: Duration::from_secs(60) };
/// Past this many scopes a cache starts again empty: it never grows without bound.
const MAX_CACHED_SCOPES: usize = 10_000;

/// Who the manager is, given `directory`: the amojo id as `id`, with the Kommo user id and the
/// name; as the source named them when the directory does not know them. A name is the one
/// the source gave unless empty (real webhooks carry `sender.name: ""`), else the directory's,
/// else none: the chat service never gets an empty name.
pub fn identify(directory: &ManagerList, manager: &ManagerRef) -> ManagerRef {
    let given_name = manager.name.clone().filter(|name| !name.trim().is_empty());
    let known = match manager.kommo_user_id {
        Some(user_id) => directory.managers.iter().find(|known| known.kommo_user_id == user_id),
        None => directory.managers.iter().find(|known| known.amojo_id == manager.id),
    };
    match known {
        Some(known) => ManagerRef {
            id: known.amojo_id.clone(),
            kommo_user_id: Some(known.kommo_user_id),
            name: given_name.or_else(|| known.name.clone().filter(|name| !name.trim().is_empty())),
        },
        None => ManagerRef { name: given_name, ..manager.clone() },
    }
}

/// A manager as the Kommo UI names them (its token's user id), before the directory is asked.
pub fn kommo_ui_manager(user_id: &str) -> ManagerRef {
    ManagerRef { id: user_id.to_owned(), kommo_user_id: user_id.parse().ok(), name: None }
}

/// Whether Kommo's users are to be read now for a manager `named` in a scope: only when the
/// directory does not know them, and neither it was read nor this instance tried in the last
/// [`USERS_REFRESH_INTERVAL_MS`] (a failed try waits its minute too).
pub fn users_read_due(
    directory: Option<&ManagerList>,
    named: NamedBy<'_>,
    last_attempt_ms: Option<i64>,
    now_ms: i64,
) -> bool {
    let known = directory.is_some_and(|directory| match named {
        NamedBy::Amojo(id) => directory.managers.iter().any(|known| known.amojo_id == id),
        NamedBy::KommoUser(id) => directory.managers.iter().any(|known| known.kommo_user_id == id),
    });
    let lately = |at: i64| now_ms - at < USERS_REFRESH_INTERVAL_MS;
    !known && !directory.is_some_and(|d| lately(d.fetched_at_ms)) && !last_attempt_ms.is_some_and(lately)
}

/// A small per-instance cache of one value per scope, with when it was read.
pub(crate) struct ScopeCache<T> {
    entries: Mutex<HashMap<String, (T, i64)>>,
}

impl<T: Clone> ScopeCache<T> {
    pub(crate) fn new() -> Self {
        Self { entries: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn get(&self, scope_id: &str) -> Option<(T, i64)> {
        self.lock().get(scope_id).cloned()
    }

    pub(crate) fn put(&self, scope_id: &str, value: T, at_ms: i64) {
        let mut entries = self.lock();
        if entries.len() >= MAX_CACHED_SCOPES && !entries.contains_key(scope_id) {
            entries.clear();
        }
        entries.insert(scope_id.to_owned(), (value, at_ms));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (T, i64)>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads the directory (cached per instance) and names managers from it.
pub struct ManagerNames {
    directory: Arc<dyn ManagerDirectory>,
    clock: Arc<dyn Clock>,
    cache: ScopeCache<Option<Arc<ManagerList>>>,
}

impl ManagerNames {
    pub fn new(directory: Arc<dyn ManagerDirectory>, clock: Arc<dyn Clock>) -> Self {
        Self { directory, clock, cache: ScopeCache::new() }
    }

    /// `manager` as the directory knows them. A directory that cannot be read leaves the
    /// manager as they are (logged): naming never stops an event.
    pub async fn identify(&self, scope_id: &str, manager: &ManagerRef) -> ManagerRef {
        let now = self.clock.now_ms();
        let cached = self.cache.get(scope_id);
        let fresh = |read_at: i64, limit: i64| now - read_at < limit;
        let directory = match cached {
            Some((directory, read_at)) if fresh(read_at, DIRECTORY_TTL_MS) => {
                let knows = directory.as_ref().is_some_and(|d| identify(d, manager) != *manager);
                if knows || fresh(read_at, DIRECTORY_RECHECK_MS) { directory } else { self.read(scope_id, now).await }
            }
            _ => self.read(scope_id, now).await,
        };
        let empty = ManagerList { fetched_at_ms: 0, managers: Vec::new() };
        identify(directory.as_deref().unwrap_or(&empty), manager)
    }

    async fn read(&self, scope_id: &str, now: i64) -> Option<Arc<ManagerList>> {
        match read_directory(&*self.directory, &self.cache, scope_id, now).await {
            Ok(directory) => directory,
            Err(error) => {
                tracing::warn!(%error, "the manager directory could not be read; managers named as the source named them");
                None
            }
        }
    }
}

/// Reads a scope's directory from the store into `cache`.
async fn read_directory(
    directory: &dyn ManagerDirectory,
    cache: &ScopeCache<Option<Arc<ManagerList>>>,
    scope_id: &str,
    now: i64,
) -> Result<Option<Arc<ManagerList>>, crate::ports::store::StoreError> {
    let read = directory.managers_of(scope_id).await?.map(Arc::new);
    cache.put(scope_id, read.clone(), now);
    Ok(read)
}

/// The chat-service port, every event's manager named by [`ManagerNames`] before it is sent.
pub struct NamedManagers {
    pub inner: Arc<dyn ChatService>,
    pub names: Arc<ManagerNames>,
}

#[async_trait]
impl ChatService for NamedManagers {
    async fn deliver(
        &self,
        event: &BridgeEvent,
        webhook_id: &str,
        policy: RetryPolicy,
    ) -> Result<ChatAnswer, ChatError> {
        let mut named = event.clone();
        let scope_id = event.scope_id().to_owned();
        if let Some(manager) = named.manager_mut() {
            *manager = self.names.identify(&scope_id, manager).await;
        }
        self.inner.deliver(&named, webhook_id, policy).await
    }
}

/// How a manager was named where they were seen.
#[derive(Debug, Clone, Copy)]
pub enum NamedBy<'a> {
    /// A chat webhook's user id.
    Amojo(&'a str),
    /// The Kommo UI token's user id.
    KommoUser(u64),
}

/// Keeps the directory of an installed account's managers current: read from Kommo after
/// install and when a manager is named that it does not know, at most once a minute per
/// account, always as queued work.
pub struct ManagerDirectoryRefresh {
    pub directory: Arc<dyn ManagerDirectory>,
    pub accounts: Arc<dyn AccountRegistry>,
    pub tokens: AccountTokens,
    pub rest: Arc<dyn KommoRest>,
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
    /// What this instance last read or wrote per scope (None: no directory there).
    cache: ScopeCache<Option<Arc<ManagerList>>>,
    /// When this instance last queued a read for a scope (a failure waits its minute too).
    attempts: ScopeCache<()>,
}

/// How a read of Kommo's users ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsersRead {
    /// The directory replaced by Kommo's list.
    Read(ManagerList),
    /// Kommo lists users to administrators only and refused (403): the last directory kept.
    Refused,
}

impl ManagerDirectoryRefresh {
    pub fn new(
        directory: Arc<dyn ManagerDirectory>,
        accounts: Arc<dyn AccountRegistry>,
        tokens: AccountTokens,
        rest: Arc<dyn KommoRest>,
        timers: Arc<dyn Timers>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { directory, accounts, tokens, rest, timers, clock, cache: ScopeCache::new(), attempts: ScopeCache::new() }
    }

    /// A manager was named in `scope_id`: when the directory does not know them, a read of
    /// Kommo's users is queued (at most once a minute per account). Reads the directory at most
    /// (cached), never Kommo, and never fails the caller: what could not be learnt now is
    /// learnt on a later miss.
    pub async fn on_named(&self, scope_id: &str, named: NamedBy<'_>) {
        let now = self.clock.now_ms();
        let directory = match self.cache.get(scope_id) {
            Some((directory, read_at)) if now - read_at < DIRECTORY_TTL_MS => directory,
            _ => match read_directory(&*self.directory, &self.cache, scope_id, now).await {
                Ok(directory) => directory,
                Err(error) => {
                    tracing::warn!(%error, "the manager directory could not be read");
                    return;
                }
            },
        };
        let last_attempt = self.attempts.get(scope_id).map(|(_, at)| at);
        if !users_read_due(directory.as_deref(), named, last_attempt, now) {
            return;
        }
        self.attempts.put(scope_id, (), now);
        let work = DueWork::RefreshManagers { scope_id: scope_id.to_owned(), attempt: 0 };
        if let Err(error) = self.timers.schedule(work, now).await {
            tracing::warn!(%error, "the managers' read could not be queued; a later miss queues it");
        }
    }

    /// Queued work ([`DueWork::RefreshManagers`]): Kommo's users read into the scope's
    /// directory. A rate-limited read is queued again after Kommo's `Retry-After`; another
    /// failure is logged and left to a later miss.
    pub async fn run_queued(&self, scope_id: &str, attempt: u32) -> Result<(), FlowError> {
        match self.refresh(scope_id).await {
            Ok(_) => Ok(()),
            Err(RefreshError::RateLimited(retry_after)) => {
                let again = |attempt| DueWork::RefreshManagers { scope_id: scope_id.to_owned(), attempt };
                let now = self.clock.now_ms();
                if !super::requeue(&*self.timers, &USERS_READ_RETRY, attempt, retry_after, now, again).await? {
                    tracing::info!("Kommo kept limiting the users' read; a later miss reads again");
                }
                Ok(())
            }
            Err(RefreshError::Other(reason)) => {
                tracing::info!(%reason, "the managers could not be read from Kommo");
                Ok(())
            }
        }
    }

    /// Reads the account's users from Kommo and stores them as the scope's directory; a 403
    /// (not an administrator's tokens) keeps the directory and marks the account, said once.
    pub async fn refresh(&self, scope_id: &str) -> Result<UsersRead, RefreshError> {
        let other = |e: &dyn std::fmt::Display| RefreshError::Other(e.to_string());
        let account = self.accounts.account_of_scope(scope_id).await.map_err(|e| other(&e))?;
        let account_id = account
            .ok_or_else(|| RefreshError::Other("the scope's account is not installed through Kommo's OAuth".into()))?
            .account_id;
        let record = self.accounts.get_account(account_id).await.map_err(|e| other(&e))?;
        let host = record.map(|record| record.host).filter(|host| !host.is_empty());
        let host =
            host.ok_or_else(|| RefreshError::Other("the account has no Kommo host (connected by hand)".into()))?;
        let token = self.tokens.access_token(account_id, None).await.map_err(token_error)?;
        let users = match self.rest.users(&host, &token).await {
            Err(KommoRestError::Refused { status: 401, .. }) => {
                let renewed = self.tokens.access_token(account_id, Some(&token)).await.map_err(token_error)?;
                self.rest.users(&host, &renewed).await
            }
            other => other,
        };
        let now = self.clock.now_ms();
        let users = match users {
            Ok(users) => users,
            Err(KommoRestError::Refused { status: 403, .. }) => {
                // Kept as it was, read again no sooner than a minute from now.
                let kept = self.directory.managers_of(scope_id).await.map_err(|e| other(&e))?;
                let kept =
                    ManagerList { fetched_at_ms: now, managers: kept.map(|list| list.managers).unwrap_or_default() };
                self.directory.put_managers(scope_id, &kept).await.map_err(|e| other(&e))?;
                self.cache.put(scope_id, Some(Arc::new(kept)), now);
                if self.accounts.note_users_refused(account_id, true).await.map_err(|e| other(&e))? {
                    tracing::warn!(
                        account_id,
                        "Kommo lists users to administrators only and refused this account's (authorised by a user who is not an administrator): managers are named as the webhooks name them"
                    );
                }
                return Ok(UsersRead::Refused);
            }
            Err(KommoRestError::RateLimited { retry_after_ms }) => {
                return Err(RefreshError::RateLimited(retry_after_ms.map(Duration::from_millis)));
            }
            Err(error) => return Err(other(&error)),
        };
        let list = ManagerList::from_users(&users, now);
        self.directory.put_managers(scope_id, &list).await.map_err(|e| other(&e))?;
        self.cache.put(scope_id, Some(Arc::new(list.clone())), now);
        if self.accounts.note_users_refused(account_id, false).await.map_err(|e| other(&e))? {
            tracing::info!(account_id, "Kommo lists this account's users again");
        }
        tracing::info!(managers = list.managers.len(), "the managers' ids read from Kommo");
        Ok(UsersRead::Read(list))
    }
}

/// Why Kommo's users were not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    /// Kommo answered 429 (with its `Retry-After`).
    RateLimited(Option<Duration>),
    Other(String),
}

impl std::fmt::Display for RefreshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RateLimited(after) => write!(f, "Kommo limited the rate of calls (retry after {after:?})"),
            Self::Other(reason) => f.write_str(reason),
        }
    }
}

fn token_error(error: TokenError) -> RefreshError {
    RefreshError::Other(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::oauth::KommoUser;
    use crate::ports::store::KnownManager;

    fn directory() -> ManagerList {
        ManagerList {
            fetched_at_ms: 0,
            managers: vec![KnownManager { amojo_id: "amojo-anna".into(), kommo_user_id: 7, name: Some("Anna".into()) }],
        }
    }

    #[test]
    fn a_manager_is_named_the_same_from_a_webhook_and_from_the_kommo_ui() {
        let from_webhook = ManagerRef { id: "amojo-anna".into(), kommo_user_id: None, name: None };
        let from_ui = kommo_ui_manager("7");
        let expected = ManagerRef { id: "amojo-anna".into(), kommo_user_id: Some(7), name: Some("Anna".into()) };
        assert_eq!(identify(&directory(), &from_webhook), expected);
        assert_eq!(identify(&directory(), &from_ui), expected);
    }

    #[test]
    fn an_unknown_manager_is_sent_as_their_source_named_them() {
        let unknown_ui = kommo_ui_manager("8");
        assert_eq!(unknown_ui, ManagerRef { id: "8".into(), kommo_user_id: Some(8), name: None });
        assert_eq!(identify(&directory(), &unknown_ui), unknown_ui);
        let unknown_webhook = ManagerRef { id: "amojo-bob".into(), kommo_user_id: None, name: Some("Bob".into()) };
        assert_eq!(identify(&directory(), &unknown_webhook), unknown_webhook);
        // The name Kommo's webhook gave wins over the directory's.
        let named = ManagerRef { id: "amojo-anna".into(), kommo_user_id: None, name: Some("Anna K.".into()) };
        assert_eq!(identify(&directory(), &named).name.as_deref(), Some("Anna K."));
    }

    #[test]
    fn an_empty_name_from_a_webhook_is_never_sent_the_directorys_is_or_none() {
        // Real manager-message webhooks carry `sender.name: ""`.
        let known = ManagerRef { id: "amojo-anna".into(), kommo_user_id: None, name: Some(String::new()) };
        assert_eq!(identify(&directory(), &known).name.as_deref(), Some("Anna"));
        let blank = ManagerRef { name: Some("  ".into()), ..known.clone() };
        assert_eq!(identify(&directory(), &blank).name.as_deref(), Some("Anna"));
        let unknown = ManagerRef { id: "amojo-bob".into(), kommo_user_id: None, name: Some(String::new()) };
        assert_eq!(identify(&directory(), &unknown).name, None);
        let nameless = ManagerList {
            fetched_at_ms: 0,
            managers: vec![KnownManager { amojo_id: "amojo-bob".into(), kommo_user_id: 8, name: Some(String::new()) }],
        };
        assert_eq!(identify(&nameless, &unknown).name, None);
    }

    #[test]
    fn kommo_is_read_for_an_unknown_manager_at_most_once_a_minute() {
        let read_at = |fetched_at_ms| ManagerList { fetched_at_ms, ..directory() };
        let (anna, bob) = (NamedBy::Amojo("amojo-anna"), NamedBy::Amojo("amojo-bob"));
        let minute = USERS_REFRESH_INTERVAL_MS;
        // (directory read at, manager, this instance's last try, now) → read Kommo's users?
        let cases = [
            (None, bob, None, 0, true),
            (Some(0), anna, None, 10 * minute, false),
            (Some(0), NamedBy::KommoUser(7), None, 10 * minute, false),
            (Some(0), bob, None, minute - 1, false),
            (Some(0), bob, None, minute, true),
            (Some(0), NamedBy::KommoUser(8), None, minute, true),
            (Some(0), bob, Some(minute), minute + 1, false),
            (None, bob, Some(0), minute - 1, false),
            (None, bob, Some(0), minute, true),
        ];
        for (fetched_at, named, last_try, now, due) in cases {
            let list = fetched_at.map(read_at);
            assert_eq!(
                users_read_due(list.as_ref(), named, last_try, now),
                due,
                "{fetched_at:?} {named:?} {last_try:?} {now}"
            );
        }
    }

    #[test]
    fn users_without_a_chat_api_id_are_left_out() {
        let users = [
            KommoUser { id: 1, name: Some("A".into()), amojo_id: Some("amojo-a".into()) },
            KommoUser { id: 2, name: None, amojo_id: None },
            KommoUser { id: 3, name: Some(String::new()), amojo_id: Some("amojo-c".into()) },
        ];
        let list = ManagerList::from_users(&users, 5);
        assert_eq!(list.fetched_at_ms, 5);
        assert_eq!(
            list.managers,
            [
                KnownManager { amojo_id: "amojo-a".into(), kommo_user_id: 1, name: Some("A".into()) },
                KnownManager { amojo_id: "amojo-c".into(), kommo_user_id: 3, name: None },
            ]
        );
    }
}
