//! A client's profile, chat service → the Kommo contact linked to their chat. `client.updated`
//! is accepted (202) once the update is queued, for an account installed through Kommo's OAuth
//! (only those have REST tokens); the update (queued work) finds the contact Kommo linked to
//! the conversation's chat (`GET /api/v4/contacts/chats`), reads it and changes what the profile
//! says differently ([`crate::rules::profiles`]). It waits, with backoff, for a chat the import
//! has not created yet and for a contact Kommo has not linked yet, and honours Kommo's
//! `Retry-After`.
//!
//! [`CrmAccess`] is how this flow and [`super::sources`] reach an account's CRM: the account of a
//! scope, its host and a live access token, refreshed once when Kommo refuses it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::installs::{AccountTokens, TokenError};
use super::{FlowError, requeue};
use crate::models::chat::ClientProfile;
use crate::ports::crm::{CrmError, KommoCrm};
use crate::ports::metrics::{Metric, Metrics};
use crate::ports::store::{AccountRegistry, AccountState, Conversations, StoreError};
use crate::ports::timers::{DueWork, Timers};
use crate::rules::profiles::{check_client_profile, contact_change};
use crate::rules::retry::RetryPolicy;
use crate::time::Clock;

/// Whether a scope's account can take a profile update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileAcceptance {
    /// Queued.
    Queued,
    /// The account is served without REST tokens (`KOMMO_ACCOUNTS`, or connected by hand):
    /// nothing was queued.
    NoRestAccess,
    /// Kommo refused the account's refresh token: nothing was queued until it is installed again.
    NeedsReinstall,
}

/// The chat service's `client.updated`: checked, and queued for an installed account.
#[derive(Clone)]
pub struct ClientProfileUpdates {
    pub accounts: Arc<dyn AccountRegistry>,
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
}

impl ClientProfileUpdates {
    pub async fn on_update(&self, profile: &ClientProfile) -> Result<ProfileAcceptance, FlowError> {
        check_client_profile(profile)?;
        let account = self.accounts.account_of_scope(&profile.scope_id).await?;
        match account.map(|account| account.state) {
            None => return Ok(ProfileAcceptance::NoRestAccess),
            Some(AccountState::NeedsReinstall) => return Ok(ProfileAcceptance::NeedsReinstall),
            // A disconnected scope is refused before this (403 scope_disconnected); a connecting
            // one has its tokens, and the update waits for the chat like any other.
            Some(_) => {}
        }
        let now = self.clock.now_ms();
        let work = DueWork::UpdateClientProfile { profile: Box::new(profile.clone()), attempt: 0, received_at_ms: now };
        self.timers.schedule(work, now).await?;
        Ok(ProfileAcceptance::Queued)
    }
}

/// The queued half: the contact changed in Kommo.
#[derive(Clone)]
pub struct ClientProfiles {
    pub access: CrmAccess,
    pub conversations: Arc<dyn Conversations>,
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    pub metrics: Arc<dyn Metrics>,
}

/// How one run of a profile update ended, short of a store fault.
enum Run {
    Done,
    /// Not possible yet (`why`); worth looking again, not before `retry_after`.
    NotYet {
        why: &'static str,
        retry_after: Option<Duration>,
    },
    /// Never possible (`why`, for the log).
    GivenUp(String),
}

impl ClientProfiles {
    pub async fn update(&self, profile: &ClientProfile, attempt: u32, received_at_ms: i64) -> Result<(), FlowError> {
        let run = self.run(profile).await?;
        let why = match run {
            Run::Done => return Ok(()),
            Run::GivenUp(why) => why,
            Run::NotYet { why, retry_after } => {
                let again = |attempt| DueWork::UpdateClientProfile {
                    profile: Box::new(profile.clone()),
                    attempt,
                    received_at_ms,
                };
                let now = self.clock.now_ms();
                if requeue(self.timers.as_ref(), &self.retry, attempt, retry_after, now, again).await? {
                    tracing::info!(why, "client profile not applied yet; queued again");
                    return Ok(());
                }
                format!("{why}, after {} attempts", attempt + 1)
            }
        };
        tracing::error!(why = %why.escape_debug(), "client profile not applied; given up");
        self.metrics.record(Metric::DeadLetter { what: "update_client_profile" });
        Ok(())
    }

    async fn run(&self, profile: &ClientProfile) -> Result<Run, FlowError> {
        let scope_id = profile.scope_id.as_str();
        let conversation = self.conversations.find_conversation(scope_id, &profile.conversation_id).await?;
        let Some(chat_id) = conversation.and_then(|conversation| conversation.kommo_chat_id) else {
            return Ok(Run::NotYet { why: "the conversation has no chat in Kommo yet", retry_after: None });
        };
        let mut session = match self.access.session(scope_id).await {
            Ok(session) => session,
            Err(failure) => return Ok(failure.into_run()),
        };
        let crm = self.access.crm.clone();
        let linked = self
            .access
            .call(&mut session, |host, token| {
                let (crm, chat_id) = (crm.clone(), chat_id.clone());
                async move { crm.contact_of_chat(&host, &token, &chat_id).await }
            })
            .await;
        let contact_id = match linked {
            Ok(Some(contact_id)) => contact_id,
            Ok(None) => {
                return Ok(Run::NotYet { why: "Kommo has linked no contact to the chat yet", retry_after: None });
            }
            Err(failure) => return Ok(failure.into_run()),
        };
        let read = self
            .access
            .call(&mut session, |host, token| {
                let crm = crm.clone();
                async move { crm.contact(&host, &token, contact_id).await }
            })
            .await;
        let contact = match read {
            Ok(Some(contact)) => contact,
            Ok(None) => return Ok(Run::GivenUp(format!("the chat's contact {contact_id} is not in Kommo"))),
            Err(failure) => return Ok(failure.into_run()),
        };
        let change = contact_change(&contact, profile);
        if change.is_empty() {
            tracing::info!(contact_id, "client profile already in Kommo");
            return Ok(Run::Done);
        }
        let updated = self
            .access
            .call(&mut session, |host, token| {
                let (crm, change) = (crm.clone(), change.clone());
                async move { crm.update_contact(&host, &token, contact_id, &change).await }
            })
            .await;
        match updated {
            Ok(()) => {
                let (name, phone, email) = (change.name.is_some(), change.phones.is_some(), change.emails.is_some());
                tracing::info!(contact_id, name, phone, email, "client profile applied to the Kommo contact");
                Ok(Run::Done)
            }
            Err(failure) => Ok(failure.into_run()),
        }
    }
}

/// Why the CRM of a scope's account could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrmFailure {
    #[error("the account was not installed through Kommo's OAuth: it has no REST tokens")]
    NotInstalled,
    #[error("Kommo refused the account's refresh token: it needs installing again")]
    NeedsReinstall,
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error("the account's tokens could not be read now: {0}")]
    Tokens(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CrmFailure {
    fn into_run(self) -> Run {
        match self {
            Self::NotInstalled | Self::NeedsReinstall | Self::Crm(CrmError::Refused { .. }) => {
                Run::GivenUp(self.to_string())
            }
            Self::Crm(CrmError::Unavailable { retry_after, .. }) => {
                Run::NotYet { why: "Kommo's REST API is unavailable", retry_after }
            }
            Self::Crm(CrmError::Unauthorized) => {
                Run::NotYet { why: "Kommo refused a fresh access token", retry_after: None }
            }
            Self::Crm(CrmError::InvalidResponse(_)) => {
                Run::NotYet { why: "Kommo's answer was unreadable", retry_after: None }
            }
            Self::Tokens(_) | Self::Store(_) => {
                Run::NotYet { why: "the account's tokens could not be read", retry_after: None }
            }
        }
    }
}

impl From<TokenError> for CrmFailure {
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::NotInstalled => Self::NotInstalled,
            TokenError::NeedsReinstall => Self::NeedsReinstall,
            TokenError::Unavailable(reason) => Self::Tokens(reason),
        }
    }
}

/// An account's CRM, with a token that works.
pub struct CrmSession {
    pub account_id: u64,
    pub host: String,
    token: String,
}

/// The CRM of the accounts installed through Kommo's OAuth.
#[derive(Clone)]
pub struct CrmAccess {
    pub accounts: Arc<dyn AccountRegistry>,
    pub tokens: AccountTokens,
    pub crm: Arc<dyn KommoCrm>,
}

impl CrmAccess {
    /// The CRM of `scope_id`'s account.
    pub async fn session(&self, scope_id: &str) -> Result<CrmSession, CrmFailure> {
        let account = self.accounts.account_of_scope(scope_id).await?.ok_or(CrmFailure::NotInstalled)?;
        self.session_of(account.account_id).await
    }

    /// The CRM of account `account_id`.
    pub async fn session_of(&self, account_id: u64) -> Result<CrmSession, CrmFailure> {
        let record = self.accounts.get_account(account_id).await?.ok_or(CrmFailure::NotInstalled)?;
        if record.host.is_empty() {
            return Err(CrmFailure::NotInstalled); // connected by hand: no OAuth, no host
        }
        let token = self.tokens.access_token(account_id, None).await?;
        Ok(CrmSession { account_id, host: record.host, token })
    }

    /// One call with the session's token; when Kommo refuses the token, once more with one
    /// refreshed for it.
    pub async fn call<T, F, Fut>(&self, session: &mut CrmSession, call: F) -> Result<T, CrmFailure>
    where
        F: Fn(String, String) -> Fut,
        Fut: Future<Output = Result<T, CrmError>>,
    {
        match call(session.host.clone(), session.token.clone()).await {
            Err(CrmError::Unauthorized) => {
                session.token = self.tokens.access_token(session.account_id, Some(&session.token)).await?;
                Ok(call(session.host.clone(), session.token.clone()).await?)
            }
            other => Ok(other?),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::flows::installs::sealing_context;
    use crate::models::chat::ChatUser;
    use crate::ports::accounts::{KommoRest, TokenSealer};
    use crate::ports::crm::{Contact, ContactChange, CrmSource};
    use crate::ports::store::{AccountRecord, ConversationFacts};
    use crate::testing::{ManualClock, ManualTimers, MemoryStore, RecordingKommoRest, TestSealer};

    const SCOPE: &str = "chan_amojo-account-42";
    const ACCOUNT: u64 = RecordingKommoRest::ACCOUNT_ID;
    const NOW: i64 = 1_700_000_000_000;

    /// A CRM with one account's contacts and chat links, answering as told first.
    #[derive(Default)]
    struct FakeCrm {
        contacts: Mutex<Vec<Contact>>,
        links: Mutex<Vec<(String, u64)>>,
        failures: Mutex<Vec<CrmError>>,
        /// (call, token) of every call.
        calls: Mutex<Vec<(String, String)>>,
    }

    impl FakeCrm {
        fn answer(&self, call: &str, token: &str) -> Result<(), CrmError> {
            self.calls.lock().unwrap().push((call.to_owned(), token.to_owned()));
            let mut failures = self.failures.lock().unwrap();
            if failures.is_empty() { Ok(()) } else { Err(failures.remove(0)) }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().iter().map(|(call, _)| call.clone()).collect()
        }
    }

    #[async_trait]
    impl KommoCrm for FakeCrm {
        async fn contact_of_chat(&self, _: &str, token: &str, chat_id: &str) -> Result<Option<u64>, CrmError> {
            self.answer("links", token)?;
            Ok(self.links.lock().unwrap().iter().find(|(chat, _)| chat == chat_id).map(|(_, id)| *id))
        }
        async fn contact(&self, _: &str, token: &str, contact_id: u64) -> Result<Option<Contact>, CrmError> {
            self.answer("contact", token)?;
            Ok(self.contacts.lock().unwrap().iter().find(|c| c.id == contact_id).cloned())
        }
        async fn update_contact(&self, _: &str, token: &str, id: u64, change: &ContactChange) -> Result<(), CrmError> {
            self.answer("update", token)?;
            let mut contacts = self.contacts.lock().unwrap();
            let contact = contacts.iter_mut().find(|c| c.id == id).expect("a contact");
            if let Some(name) = &change.name {
                contact.name = name.clone();
            }
            if let Some(phones) = &change.phones {
                contact.phones = phones.clone();
            }
            Ok(())
        }
        async fn sources(&self, _: &str, _: &str) -> Result<Vec<CrmSource>, CrmError> {
            unreachable!("profiles list no sources")
        }
        async fn create_source(&self, _: &str, _: &str, _: &str, _: &str) -> Result<CrmSource, CrmError> {
            unreachable!("profiles create no sources")
        }
    }

    /// The kinds of work given up, as the metric counts them.
    #[derive(Default)]
    struct DeadLetters(Mutex<Vec<&'static str>>);

    impl Metrics for DeadLetters {
        fn record(&self, metric: Metric) {
            if let Metric::DeadLetter { what } = metric {
                self.0.lock().unwrap().push(what);
            }
        }
    }

    struct Bridge {
        store: Arc<MemoryStore>,
        timers: Arc<ManualTimers>,
        crm: Arc<FakeCrm>,
        metrics: Arc<DeadLetters>,
        inbound: ClientProfileUpdates,
        profiles: ClientProfiles,
    }

    async fn bridge(installed: bool) -> Bridge {
        let store = Arc::new(MemoryStore::new());
        let timers = Arc::new(ManualTimers::default());
        let clock = Arc::new(ManualClock::at_ms(NOW));
        let crm = Arc::new(FakeCrm::default());
        let metrics = Arc::new(DeadLetters::default());
        let rest = Arc::new(RecordingKommoRest::new());
        if installed {
            // Tokens Kommo issued (`access-1`, `refresh-1`), so that a refresh works.
            let tokens = rest.exchange_code("shop.kommo.com", "code").await.unwrap();
            let sealed = TestSealer.seal(&serde_json::to_vec(&tokens).unwrap(), &sealing_context(ACCOUNT));
            let record = AccountRecord {
                account_id: ACCOUNT,
                host: "shop.kommo.com".into(),
                amojo_id: "amojo-account-42".into(),
                scope_id: SCOPE.into(),
                state: AccountState::Connected,
                sealed_tokens: Some(sealed),
                access_expires_at_ms: NOW + 86_400_000,
                token_version: 1,
                installed_at_ms: NOW,
                tokens_renewed_at_ms: NOW,
                users_refused: false,
            };
            store.put_account(&record).await.unwrap();
        }
        let tokens =
            AccountTokens { rest, accounts: store.clone(), sealer: Arc::new(TestSealer), clock: clock.clone() };
        let access = CrmAccess { accounts: store.clone(), tokens, crm: crm.clone() };
        let inbound = ClientProfileUpdates { accounts: store.clone(), timers: timers.clone(), clock: clock.clone() };
        let profiles = ClientProfiles {
            access,
            conversations: store.clone(),
            timers: timers.clone(),
            clock,
            retry: RetryPolicy::DEFAULT,
            metrics: metrics.clone(),
        };
        Bridge { store, timers, crm, metrics, inbound, profiles }
    }

    fn profile(name: &str) -> ClientProfile {
        ClientProfile {
            scope_id: SCOPE.into(),
            conversation_id: "conv-1".into(),
            user: ChatUser {
                id: "u-1".into(),
                name: Some(name.into()),
                avatar: None,
                phone: None,
                email: None,
                profile_link: None,
            },
        }
    }

    impl Bridge {
        async fn chat_in_kommo(&self) {
            let facts = ConversationFacts { kommo_chat_id: Some("chat-1"), ..Default::default() };
            self.store.remember_conversation(SCOPE, "conv-1", &facts).await.unwrap();
        }
        fn contact_linked(&self, name: &str) {
            self.crm.contacts.lock().unwrap().push(Contact { id: 9, name: name.into(), ..Default::default() });
            self.crm.links.lock().unwrap().push(("chat-1".into(), 9));
        }
        fn name(&self) -> String {
            self.crm.contacts.lock().unwrap()[0].name.clone()
        }
        /// The profile updates queued, with when they fall due.
        fn queued(&self) -> Vec<(i64, u32)> {
            let pending = self.timers.pending();
            pending
                .into_iter()
                .filter_map(|(due, work)| match work {
                    DueWork::UpdateClientProfile { attempt, .. } => Some((due, attempt)),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn a_queued_update_reads_back_without_its_optional_fields() {
        let work = DueWork::UpdateClientProfile { profile: Box::new(profile("Adam")), attempt: 2, received_at_ms: NOW };
        let text = serde_json::to_string(&work).unwrap();
        assert!(text.starts_with(r#"{"work":"update_client_profile","profile":{"#), "{text}");
        assert_eq!(serde_json::from_str::<DueWork>(&text).unwrap(), work);
        let bare = serde_json::json!({"work": "update_client_profile", "profile": {"scope_id": SCOPE,
            "conversation_id": "conv-1", "user": {"id": "u-1", "name": "Adam"}}});
        let read: DueWork = serde_json::from_value(bare).unwrap();
        assert_eq!(
            read,
            DueWork::UpdateClientProfile { profile: Box::new(profile("Adam")), attempt: 0, received_at_ms: 0 }
        );
    }

    #[tokio::test]
    async fn an_update_is_queued_only_for_an_account_with_rest_tokens() {
        let installed = bridge(true).await;
        assert_eq!(installed.inbound.on_update(&profile("Adam")).await, Ok(ProfileAcceptance::Queued));
        assert_eq!(installed.queued(), vec![(NOW, 0)]);
        let listed_only = bridge(false).await;
        assert_eq!(listed_only.inbound.on_update(&profile("Adam")).await, Ok(ProfileAcceptance::NoRestAccess));
        assert!(listed_only.queued().is_empty(), "nothing queued");
        let refused = bridge(true).await;
        refused.store.set_account_state(ACCOUNT, AccountState::NeedsReinstall).await.unwrap();
        assert_eq!(refused.inbound.on_update(&profile("Adam")).await, Ok(ProfileAcceptance::NeedsReinstall));
        assert!(refused.queued().is_empty());
        assert!(matches!(installed.inbound.on_update(&profile(" ")).await, Err(FlowError::Rejected(_))));
    }

    #[tokio::test]
    async fn an_update_waits_for_the_chat_and_its_contact_then_renames_it() {
        let b = bridge(true).await;
        b.profiles.update(&profile("Adam"), 0, NOW).await.unwrap();
        assert!(b.crm.calls().is_empty(), "no chat yet: Kommo is not asked");
        assert_eq!(b.queued().len(), 1, "looked at again later");
        b.chat_in_kommo().await;
        b.profiles.update(&profile("Adam"), 1, NOW).await.unwrap();
        assert_eq!(b.crm.calls(), ["links"], "no contact linked yet");
        assert_eq!(b.queued().len(), 2);
        b.contact_linked("Client u-1");
        b.profiles.update(&profile("Adam"), 2, NOW).await.unwrap();
        assert_eq!(b.name(), "Adam");
        assert_eq!(b.queued().len(), 2, "done: nothing more queued");
        b.profiles.update(&profile("Adam"), 0, NOW).await.unwrap();
        assert_eq!(b.crm.calls(), ["links", "links", "contact", "update", "links", "contact"], "unchanged: no update");
    }

    #[tokio::test]
    async fn a_rate_limited_update_waits_at_least_as_long_as_kommo_asks() {
        let b = bridge(true).await;
        b.chat_in_kommo().await;
        b.contact_linked("Client u-1");
        let retry_after = Some(Duration::from_secs(40));
        b.crm.failures.lock().unwrap().push(CrmError::Unavailable { reason: "HTTP 429".into(), retry_after });
        b.profiles.update(&profile("Adam"), 0, NOW).await.unwrap();
        let queued = b.queued();
        assert_eq!(queued.len(), 1);
        assert!(queued[0].0 >= NOW + 40_000 && queued[0].1 == 1, "{queued:?}");
        assert_eq!(b.name(), "Client u-1");
    }

    #[tokio::test]
    async fn a_refused_token_is_refreshed_once_and_the_call_made_again() {
        let b = bridge(true).await;
        b.chat_in_kommo().await;
        b.contact_linked("Client u-1");
        b.crm.failures.lock().unwrap().push(CrmError::Unauthorized);
        b.profiles.update(&profile("Adam"), 0, NOW).await.unwrap();
        assert_eq!(b.name(), "Adam");
        let tokens: Vec<String> = b.crm.calls.lock().unwrap().iter().map(|(_, token)| token.clone()).collect();
        assert_eq!(tokens[0], "access-1");
        assert!(tokens[1..].iter().all(|token| token == "access-2"), "the refreshed token after: {tokens:?}");
    }

    #[tokio::test]
    async fn an_update_kommo_refuses_or_one_out_of_attempts_is_given_up_and_counted() {
        let b = bridge(true).await;
        b.chat_in_kommo().await;
        b.contact_linked("Client u-1");
        b.crm.failures.lock().unwrap().push(CrmError::Refused { status: 400, detail: "no".into() });
        b.profiles.update(&profile("Adam"), 0, NOW).await.unwrap();
        assert!(b.queued().is_empty(), "not tried again");
        let last = RetryPolicy::DEFAULT.max_attempts - 1;
        let b2 = bridge(true).await;
        b2.profiles.update(&profile("Adam"), last, NOW).await.unwrap();
        assert!(b2.queued().is_empty(), "out of attempts");
        for metrics in [&b.metrics, &b2.metrics] {
            assert_eq!(*metrics.0.lock().unwrap(), ["update_client_profile"]);
        }
    }
}
