//! The integration's sources in each account. A client message's `source.external_id` must
//! name a source of the account, and only the integration that created a source can use it
//! (Kommo's sources API, `external_id` unique per integration). So the first message naming a
//! source, in an account installed through Kommo's OAuth, creates it before the message is
//! imported, and the store remembers it: later messages cost one read. An operator can create
//! them ahead, named, with `bridge-cli sources create`.
//!
//! A source Kommo has already (made by the CLI, or remembered by another deployment) is found
//! in the integration's list before one is created; two first messages at once both look, and
//! the one whose create Kommo refuses finds the other's in the list. An account without REST
//! tokens (`KOMMO_ACCOUNTS`) is left as it is: its sources are someone else's to create.

use std::sync::Arc;
use std::time::Duration;

use super::client_profiles::{CrmAccess, CrmFailure, CrmSession};
use crate::ports::crm::{CrmError, CrmSource};
use crate::ports::store::{AccountSources, KnownSource, StoreError};
use crate::time::Clock;

#[derive(Clone)]
pub struct SourceRegistry {
    pub access: CrmAccess,
    pub known: Arc<dyn AccountSources>,
    pub clock: Arc<dyn Clock>,
}

/// What an import does about its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceReadiness {
    /// Known, created now, or not the bridge's to create: the import goes on.
    Ready,
    /// Kommo could not be asked now: the import waits (not before `retry_after`).
    Wait { retry_after: Option<Duration> },
}

impl SourceRegistry {
    /// Before an import naming `external_id` in `scope_id`: the source made sure of. Only a
    /// store fault is an error; a source Kommo refuses is logged and the import goes on.
    pub async fn ready_for_import(&self, scope_id: &str, external_id: &str) -> Result<SourceReadiness, StoreError> {
        if self.known.source_of(scope_id, external_id).await?.is_some() {
            return Ok(SourceReadiness::Ready);
        }
        let name = external_id.to_owned();
        match self.ensure(scope_id, external_id, &name).await {
            Ok(_) | Err(CrmFailure::NotInstalled) => Ok(SourceReadiness::Ready),
            Err(CrmFailure::Store(error)) => Err(error),
            Err(CrmFailure::Crm(CrmError::Unavailable { retry_after, .. })) => {
                tracing::warn!("Kommo's sources API is unavailable; the import waits");
                Ok(SourceReadiness::Wait { retry_after })
            }
            Err(CrmFailure::Tokens(_) | CrmFailure::Crm(CrmError::InvalidResponse(_) | CrmError::Unauthorized)) => {
                Ok(SourceReadiness::Wait { retry_after: None })
            }
            Err(failure @ (CrmFailure::NeedsReinstall | CrmFailure::Crm(CrmError::Refused { .. }))) => {
                let external_id = external_id.escape_debug();
                tracing::error!(%external_id, error = %failure, "the source could not be created; the message goes without it being made sure of");
                Ok(SourceReadiness::Ready)
            }
        }
    }

    /// The source `external_id` of the scope's account: remembered, found in Kommo, or created
    /// there named `name`.
    pub async fn ensure(&self, scope_id: &str, external_id: &str, name: &str) -> Result<KnownSource, CrmFailure> {
        let mut session = self.access.session(scope_id).await?;
        self.ensure_in(&mut session, scope_id, external_id, name).await
    }

    /// [`Self::ensure`] in an account named by its numeric id (the operator's CLI).
    pub async fn ensure_for_account(
        &self,
        account_id: u64,
        external_id: &str,
        name: &str,
    ) -> Result<KnownSource, CrmFailure> {
        let scope_id = self.scope_of(account_id).await?;
        let mut session = self.access.session_of(account_id).await?;
        self.ensure_in(&mut session, &scope_id, external_id, name).await
    }

    /// The integration's sources in the account, as Kommo lists them, and those the bridge
    /// remembers (the CLI).
    pub async fn list_for_account(&self, account_id: u64) -> Result<(Vec<CrmSource>, Vec<KnownSource>), CrmFailure> {
        let scope_id = self.scope_of(account_id).await?;
        let mut session = self.access.session_of(account_id).await?;
        let in_kommo = self.listed(&mut session).await?;
        Ok((in_kommo, self.known.sources_of(&scope_id).await?))
    }

    async fn scope_of(&self, account_id: u64) -> Result<String, CrmFailure> {
        let record = self.access.accounts.get_account(account_id).await?.ok_or(CrmFailure::NotInstalled)?;
        Ok(record.scope_id)
    }

    async fn ensure_in(
        &self,
        session: &mut CrmSession,
        scope_id: &str,
        external_id: &str,
        name: &str,
    ) -> Result<KnownSource, CrmFailure> {
        let found = match self.listed(session).await?.into_iter().find(|s| s.external_id == external_id) {
            Some(found) => found,
            None => {
                let crm = self.access.crm.clone();
                let created = self
                    .access
                    .call(session, |host, token| {
                        let crm = crm.clone();
                        async move { crm.create_source(&host, &token, external_id, name).await }
                    })
                    .await;
                match created {
                    Ok(created) => {
                        tracing::info!(
                            account_id = session.account_id,
                            source_id = created.id,
                            "source created in Kommo"
                        );
                        created
                    }
                    // Created meanwhile by another import (the external id is taken): it is in
                    // the list now.
                    Err(CrmFailure::Crm(CrmError::Refused { status, detail })) => {
                        let listed = self.listed(session).await?;
                        listed
                            .into_iter()
                            .find(|s| s.external_id == external_id)
                            .ok_or(CrmFailure::Crm(CrmError::Refused { status, detail }))?
                    }
                    Err(other) => return Err(other),
                }
            }
        };
        let known = KnownSource {
            external_id: found.external_id,
            kommo_source_id: found.id,
            name: found.name,
            remembered_at_ms: self.clock.now_ms(),
        };
        self.known.remember_source(scope_id, &known).await?;
        Ok(known)
    }

    async fn listed(&self, session: &mut CrmSession) -> Result<Vec<CrmSource>, CrmFailure> {
        let crm = self.access.crm.clone();
        self.access
            .call(session, |host, token| {
                let crm = crm.clone();
                async move { crm.sources(&host, &token).await }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::flows::installs::{AccountTokens, sealing_context};
    use crate::ports::accounts::{KommoRest, TokenSealer};
    use crate::ports::crm::{Contact, ContactChange, KommoCrm};
    use crate::ports::store::{AccountRecord, AccountRegistry, AccountState};
    use crate::testing::{ManualClock, MemoryStore, RecordingKommoRest, TestSealer};

    const SCOPE: &str = "chan_amojo-account-42";
    const ACCOUNT: u64 = RecordingKommoRest::ACCOUNT_ID;
    const NOW: i64 = 1_700_000_000_000;

    /// The integration's sources in one account, answering as told first.
    #[derive(Default)]
    struct FakeSources {
        sources: Mutex<Vec<CrmSource>>,
        failures: Mutex<Vec<CrmError>>,
        calls: Mutex<Vec<&'static str>>,
        /// Another import creates the source between this one's list and its create.
        raced: Mutex<bool>,
    }

    impl FakeSources {
        fn answer(&self, call: &'static str) -> Result<(), CrmError> {
            self.calls.lock().unwrap().push(call);
            let mut failures = self.failures.lock().unwrap();
            if failures.is_empty() { Ok(()) } else { Err(failures.remove(0)) }
        }
        fn add(&self, external_id: &str, name: &str) -> CrmSource {
            let mut sources = self.sources.lock().unwrap();
            let source = CrmSource {
                id: 100 + sources.len() as u64,
                external_id: external_id.into(),
                name: name.into(),
                pipeline_id: None,
            };
            sources.push(source.clone());
            source
        }
        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl KommoCrm for FakeSources {
        async fn contact_of_chat(&self, _: &str, _: &str, _: &str) -> Result<Option<u64>, CrmError> {
            unreachable!()
        }
        async fn contact(&self, _: &str, _: &str, _: u64) -> Result<Option<Contact>, CrmError> {
            unreachable!()
        }
        async fn update_contact(&self, _: &str, _: &str, _: u64, _: &ContactChange) -> Result<(), CrmError> {
            unreachable!()
        }
        async fn sources(&self, _: &str, _: &str) -> Result<Vec<CrmSource>, CrmError> {
            self.answer("list")?;
            Ok(self.sources.lock().unwrap().clone())
        }
        async fn create_source(&self, _: &str, _: &str, external_id: &str, name: &str) -> Result<CrmSource, CrmError> {
            self.answer("create")?;
            if std::mem::take(&mut *self.raced.lock().unwrap()) {
                self.add(external_id, "made by the other import");
            }
            if self.sources.lock().unwrap().iter().any(|s| s.external_id == external_id) {
                return Err(CrmError::Refused { status: 400, detail: "Request validation failed".into() });
            }
            Ok(self.add(external_id, name))
        }
    }

    async fn registry(installed: bool) -> (SourceRegistry, Arc<FakeSources>, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        let rest = Arc::new(RecordingKommoRest::new());
        if installed {
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
        let clock = Arc::new(ManualClock::at_ms(NOW));
        let tokens =
            AccountTokens { rest, accounts: store.clone(), sealer: Arc::new(TestSealer), clock: clock.clone() };
        let crm = Arc::new(FakeSources::default());
        let access = CrmAccess { accounts: store.clone(), tokens, crm: crm.clone() };
        (SourceRegistry { access, known: store.clone(), clock }, crm, store)
    }

    #[tokio::test]
    async fn a_source_is_created_on_first_use_then_read_from_the_store() {
        let (sources, crm, store) = registry(true).await;
        assert_eq!(sources.ready_for_import(SCOPE, "line-1").await, Ok(SourceReadiness::Ready));
        assert_eq!(crm.calls(), ["list", "create"]);
        let known = store.source_of(SCOPE, "line-1").await.unwrap().expect("remembered");
        assert_eq!((known.kommo_source_id, known.name.as_str()), (100, "line-1"));
        assert_eq!(sources.ready_for_import(SCOPE, "line-1").await, Ok(SourceReadiness::Ready));
        assert_eq!(crm.calls(), ["list", "create"], "the second message asks Kommo nothing");
    }

    #[tokio::test]
    async fn a_source_kommo_has_is_found_not_created_again() {
        let (sources, crm, store) = registry(true).await;
        crm.add("line-2", "Line two");
        assert_eq!(sources.ready_for_import(SCOPE, "line-2").await, Ok(SourceReadiness::Ready));
        assert_eq!(crm.calls(), ["list"]);
        assert_eq!(store.source_of(SCOPE, "line-2").await.unwrap().unwrap().name, "Line two");
        // Two first messages at once: the create that loses finds the winner's in the list.
        *crm.raced.lock().unwrap() = true;
        assert_eq!(sources.ready_for_import(SCOPE, "line-3").await, Ok(SourceReadiness::Ready));
        assert_eq!(crm.calls(), ["list", "list", "create", "list"]);
        assert_eq!(store.source_of(SCOPE, "line-3").await.unwrap().unwrap().name, "made by the other import");
    }

    #[tokio::test]
    async fn an_unavailable_kommo_makes_the_import_wait_and_a_refusal_does_not() {
        let (sources, crm, store) = registry(true).await;
        let retry_after = Some(std::time::Duration::from_secs(3));
        crm.failures.lock().unwrap().push(CrmError::Unavailable { reason: "HTTP 429".into(), retry_after });
        assert_eq!(sources.ready_for_import(SCOPE, "line-1").await, Ok(SourceReadiness::Wait { retry_after }));
        assert_eq!(store.source_of(SCOPE, "line-1").await.unwrap(), None, "nothing remembered");
        crm.failures.lock().unwrap().extend([CrmError::Refused { status: 400, detail: "too many".into() }]);
        assert_eq!(sources.ready_for_import(SCOPE, "line-1").await, Ok(SourceReadiness::Ready));
        assert_eq!(store.source_of(SCOPE, "line-1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_account_without_rest_tokens_is_left_as_it_is() {
        let (sources, crm, _) = registry(false).await;
        assert_eq!(sources.ready_for_import(SCOPE, "line-1").await, Ok(SourceReadiness::Ready));
        assert!(crm.calls().is_empty());
        assert_eq!(sources.ensure_for_account(ACCOUNT, "line-1", "Line").await.err(), Some(CrmFailure::NotInstalled));
    }
}
