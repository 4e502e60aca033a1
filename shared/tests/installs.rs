//! Installing the integration simulated: the referer checked before anything
//! is sent, the code exchanged once, the channel connected, the account registered with its
//! tokens sealed; a failure stores nothing.

use std::sync::Arc;

use shared::adapters::memory::MemoryStore;
use shared::app::metrics::EmfMetrics;
use shared::flows::installs::{InstallError, Installed, Installs, TokenError, sealing_context};
use shared::flows::managers::ManagerDirectoryRefresh;
use shared::ports::accounts::{KommoRestError, TokenSealer};
use shared::ports::kommo::KommoError;
use shared::ports::store::{AccountRecord, AccountRegistry, AccountState, ManagerDirectory};
use shared::ports::timers::DueWork;
use shared::rules::install::Platform;
use shared::testing::{
    KommoCall, ManualClock, ManualTimers, RecordingKommo, RecordingKommoRest, RecordingMetrics, TestSealer,
};

struct Setup {
    installs: Installs,
    managers: ManagerDirectoryRefresh,
    clock: Arc<ManualClock>,
    rest: Arc<RecordingKommoRest>,
    kommo: Arc<RecordingKommo>,
    store: Arc<MemoryStore>,
    sealer: Arc<TestSealer>,
    timers: Arc<ManualTimers>,
    metrics: Arc<RecordingMetrics>,
}

fn setup() -> Setup {
    let clock = Arc::new(ManualClock::at_ms(1_700_000_000_000));
    let rest = Arc::new(RecordingKommoRest::new());
    let kommo = Arc::new(RecordingKommo::new(clock.clone()));
    let store = Arc::new(MemoryStore::new());
    let sealer = Arc::new(TestSealer);
    let timers = Arc::new(ManualTimers::default());
    let metrics = Arc::new(RecordingMetrics::default());
    let tokens = shared::flows::installs::AccountTokens {
        rest: rest.clone(),
        accounts: store.clone(),
        sealer: sealer.clone(),
        clock: clock.clone(),
    };
    let installs = Installs {
        rest: rest.clone(),
        kommo: kommo.clone(),
        accounts: store.clone(),
        tokens: tokens.clone(),
        sealer: sealer.clone(),
        timers: timers.clone(),
        metrics: Arc::new(EmfMetrics::new(metrics.clone(), clock.clone())),
        clock: clock.clone(),
        channel_title: "Bridge".into(),
        channel_id: "channel".into(),
        platform: Platform::Kommo,
    };
    let managers =
        ManagerDirectoryRefresh::new(store.clone(), store.clone(), tokens, rest.clone(), timers.clone(), clock.clone());
    Setup { installs, managers, clock, rest, kommo, store, sealer, timers, metrics }
}

impl Setup {
    /// Installs and expects the channel connected.
    async fn installed(&self, code: &str) -> AccountRecord {
        match self.installs.install(code, "acme.kommo.com").await.unwrap() {
            Installed::Connected(record) => record,
            other => panic!("not connected: {other:?}"),
        }
    }

    /// Runs the installs' queued work due now (as the dispatcher would).
    async fn run_due(&self) -> Vec<&'static str> {
        let mut ran = Vec::new();
        for work in self.timers.take_due(self.clock.now_ms_value()) {
            ran.push(work.kind());
            match work {
                DueWork::FinishInstall { host, account_id, sealed_tokens, attempt } => {
                    self.installs.finish(&host, account_id, sealed_tokens.as_deref(), attempt).await.unwrap()
                }
                DueWork::SweepAccountTokens => self.installs.sweep().await.unwrap(),
                DueWork::RefreshManagers { scope_id, attempt } => {
                    self.managers.run_queued(&scope_id, attempt).await.unwrap()
                }
                DueWork::ConfirmDisable { account_id, attempt } => {
                    self.installs.confirm_disable(account_id, attempt).await.unwrap()
                }
                other => panic!("unexpected work {other:?}"),
            }
        }
        ran
    }

    fn connecting_metrics(&self) -> usize {
        self.metrics.lines().iter().filter(|line| line.contains("\"InstallsConnecting\"")).count()
    }
}

trait NowMs {
    fn now_ms_value(&self) -> i64;
}

impl NowMs for ManualClock {
    fn now_ms_value(&self) -> i64 {
        shared::time::Clock::now_ms(self)
    }
}

#[tokio::test]
async fn an_install_connects_the_channel_and_registers_the_account_with_its_tokens_sealed() {
    let s = setup();
    let record = s.installed("code-1").await;
    assert_eq!(s.rest.calls(), ["exchange acme.kommo.com code-1", "account acme.kommo.com access-1"]);
    // The managers' ids, read as queued work right after: the first events name them fully.
    assert_eq!(s.run_due().await, ["refresh_managers"]);
    assert_eq!(s.rest.calls().last().map(String::as_str), Some("users acme.kommo.com access-1"));
    let directory = s.store.managers_of(&record.scope_id).await.unwrap().expect("the managers stored");
    let ids: Vec<_> = directory.managers.iter().map(|m| (m.kommo_user_id, m.amojo_id.as_str())).collect();
    assert_eq!(ids, [(7, "amojo-user-7"), (8, "amojo-user-8")]);
    let connects: Vec<_> = s
        .kommo
        .calls()
        .into_iter()
        .filter_map(|c| match c.call {
            KommoCall::Connect(request) => Some(request.account_id),
            _ => None,
        })
        .collect();
    assert_eq!(connects, [s.rest.amojo_id()]);
    assert_eq!(record.state, AccountState::Connected);
    assert_eq!(record.scope_id, format!("channel_{}", s.rest.amojo_id()));
    assert_eq!(s.store.get_account(record.account_id).await.unwrap(), Some(record.clone()));
    assert_eq!(
        s.store.account_of_scope(&record.scope_id).await.unwrap().map(|a| a.account_id),
        Some(record.account_id)
    );
    let sealed = record.sealed_tokens.clone().unwrap();
    assert!(!sealed.contains("refresh-1") && !sealed.contains("access-1"), "never stored in plaintext");
    let opened = s.sealer.open(&sealed, &sealing_context(record.account_id)).unwrap();
    assert!(String::from_utf8(opened).unwrap().contains("refresh-1"));
    // Installing again (the integration re-enabled) is the same account, newer tokens.
    let again = s.installed("code-2").await;
    assert_eq!((again.account_id, again.token_version), (record.account_id, record.token_version + 1));
}

#[tokio::test]
async fn a_redirect_kommo_would_not_make_sends_nothing_and_stores_nothing() {
    for (code, referer) in [
        ("code-1", "evil.example.com"),
        ("code-1", "acme.kommo.com.evil.example.com"),
        ("code-1", "acme.kommo.com/path"),
        ("", "acme.kommo.com"),
        ("code 1", "acme.kommo.com"),
        // Another platform's account, and the platform's own service hosts.
        ("code-1", "acme.amocrm.ru"),
        ("code-1", "acme.amocrm.com"),
        ("code-1", "www.kommo.com"),
        ("code-1", "api.kommo.com"),
        ("code-1", "amojo.kommo.com"),
        ("code-1", "id.kommo.com"),
    ] {
        let s = setup();
        let outcome = s.installs.install(code, referer).await;
        assert!(matches!(outcome, Err(InstallError::Rejected(_))), "{code:?} {referer:?}: {outcome:?}");
        assert!(s.rest.calls().is_empty(), "{referer:?}: nothing sent");
        assert!(s.store.list_accounts().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_refused_code_stores_nothing_and_installing_again_is_the_retry() {
    let s = setup();
    s.rest.fail_next(KommoRestError::Refused { status: 400, detail: "Authorization code has been revoked".into() });
    let refused = s.installs.install("code-1", "acme.kommo.com").await;
    assert_eq!(refused, Err(InstallError::Refused("Authorization code has been revoked".into())));
    assert!(s.store.list_accounts().await.unwrap().is_empty(), "nothing half-done");
    assert!(s.timers.pending().is_empty());
    assert!(matches!(s.installs.install("code-2", "acme.kommo.com").await, Ok(Installed::Connected(_))));
}

fn amojo_down() -> KommoError {
    KommoError::Unavailable { attempts: 3, status: Some(503), reason: "HTTP 503".into(), retry_after: None }
}

#[tokio::test]
async fn a_connect_that_fails_once_the_code_is_spent_keeps_the_tokens_and_is_retried_until_it_succeeds() {
    let s = setup();
    s.kommo.fail_next([amojo_down()]);
    let outcome = s.installs.install("code-1", "acme.kommo.com").await.unwrap();
    assert_eq!(outcome, Installed::Connecting { host: "acme.kommo.com".into() });
    let account_id = RecordingKommoRest::ACCOUNT_ID;
    let stored = s.store.get_account(account_id).await.unwrap().expect("kept, with its tokens");
    assert_eq!(stored.state, AccountState::Connecting);
    let opened = s.sealer.open(stored.sealed_tokens.as_deref().unwrap(), &sealing_context(account_id)).unwrap();
    assert!(String::from_utf8(opened).unwrap().contains("refresh-1"));
    assert_eq!(s.connecting_metrics(), 1, "the alarm's metric counts it");
    // amojo still down at the first retry: queued again, later, and counted again.
    s.kommo.fail_next([amojo_down()]);
    assert_eq!(s.run_due().await, ["finish_install"]);
    let pending = s.timers.pending();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].0 > shared::time::Clock::now_ms(&*s.clock), "with backoff");
    assert!(matches!(pending[0].1, DueWork::FinishInstall { attempt: 1, .. }));
    assert_eq!(s.connecting_metrics(), 2);
    assert_eq!(s.store.get_account(account_id).await.unwrap().unwrap().state, AccountState::Connecting);
    // amojo back: connected, the managers read, the code never asked for again.
    s.clock.advance_ms(900_000);
    assert_eq!(s.run_due().await, ["finish_install"]);
    let stored = s.store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!(stored.state, AccountState::Connected);
    assert_eq!(s.store.account_of_scope(&stored.scope_id).await.unwrap().unwrap().state, AccountState::Connected);
    assert_eq!(s.run_due().await, ["refresh_managers"]);
    assert_eq!(s.rest.calls().iter().filter(|c| c.starts_with("exchange")).count(), 1);
}

#[tokio::test]
async fn an_account_that_could_not_be_read_at_install_is_read_and_connected_by_queued_work() {
    let s = setup();
    s.rest.fail_next_call("account ", KommoRestError::Unavailable("HTTP 503".into()));
    let outcome = s.installs.install("code-1", "acme.kommo.com").await.unwrap();
    assert_eq!(outcome, Installed::Connecting { host: "acme.kommo.com".into() });
    assert!(s.store.list_accounts().await.unwrap().is_empty(), "the account is not known yet");
    let pending = s.timers.pending();
    let DueWork::FinishInstall { account_id: None, sealed_tokens: Some(sealed), .. } = &pending[0].1 else {
        panic!("{pending:?}")
    };
    assert!(!sealed.contains("refresh-1"), "the tokens travel sealed");
    // Read and stored now, but amojo down: the next try names the stored account, and its
    // tokens no longer travel (they may move on before it runs).
    s.kommo.fail_next([amojo_down()]);
    assert_eq!(s.run_due().await, ["finish_install"]);
    assert_eq!(
        s.store.get_account(RecordingKommoRest::ACCOUNT_ID).await.unwrap().unwrap().state,
        AccountState::Connecting
    );
    let pending = s.timers.pending();
    assert!(
        matches!(
            pending.as_slice(),
            [(
                _,
                DueWork::FinishInstall {
                    account_id: Some(RecordingKommoRest::ACCOUNT_ID),
                    sealed_tokens: None,
                    attempt: 1,
                    ..
                }
            )]
        ),
        "{pending:?}"
    );
    s.clock.advance_ms(900_000);
    assert_eq!(s.run_due().await, ["finish_install"]);
    let stored = s.store.get_account(RecordingKommoRest::ACCOUNT_ID).await.unwrap().unwrap();
    assert_eq!(stored.state, AccountState::Connected);
    assert_eq!(s.rest.calls().iter().filter(|c| c.starts_with("exchange")).count(), 1);
}

fn tokens_of(s: &Setup) -> shared::flows::installs::AccountTokens {
    shared::flows::installs::AccountTokens {
        rest: s.rest.clone(),
        accounts: s.store.clone(),
        sealer: s.sealer.clone(),
        clock: s.clock.clone(),
    }
}

#[tokio::test]
async fn an_access_token_is_refreshed_before_it_expires_and_on_a_401_and_stored_once() {
    let s = setup();
    let account_id = s.installed("code-1").await.account_id;
    let tokens = tokens_of(&s);
    assert_eq!(tokens.access_token(account_id, None).await.unwrap(), "access-1", "fresh: no refresh");
    // Kommo answered 401 to access-1: refreshed at once.
    assert_eq!(tokens.access_token(account_id, Some("access-1")).await.unwrap(), "access-2");
    assert_eq!(s.store.get_account(account_id).await.unwrap().unwrap().token_version, 2);
    // Nearly expired: refreshed ahead of time.
    let expires = s.store.get_account(account_id).await.unwrap().unwrap().access_expires_at_ms;
    s.clock.set_ms(expires - shared::rules::install::REFRESH_AHEAD_MS + 1);
    assert_eq!(tokens.access_token(account_id, None).await.unwrap(), "access-3");
    assert_eq!(s.rest.calls().iter().filter(|c| c.starts_with("refresh")).count(), 2);
}

#[tokio::test]
async fn two_refreshes_at_once_keep_the_newer_tokens_and_the_account_connected() {
    let s = setup();
    let account_id = s.installed("code-1").await.account_id;
    let tokens = tokens_of(&s);
    // The first refresh is held on its way to Kommo; a second one overtakes it and spends the
    // refresh token; Kommo then refuses the first, which finds the second's tokens.
    let gate = s.rest.hold_next_refresh();
    let first = tokens.access_token(account_id, Some("access-1"));
    let second = async {
        tokio::task::yield_now().await;
        let renewed = tokens.access_token(account_id, Some("access-1")).await;
        gate.notify_one();
        renewed
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!((first.unwrap(), second.unwrap()), ("access-2".to_owned(), "access-2".to_owned()));
    let stored = s.store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!(stored.state, AccountState::Connected);
    let opened = s.sealer.open(stored.sealed_tokens.as_deref().unwrap(), &sealing_context(account_id)).unwrap();
    assert!(String::from_utf8(opened).unwrap().contains("refresh-2"), "the newer refresh token kept");
}

#[tokio::test]
async fn a_refresh_token_kommo_refuses_marks_the_account_for_reinstall() {
    let s = setup();
    let account_id = s.installed("code-1").await.account_id;
    s.rest.fail_next(KommoRestError::Refused { status: 400, detail: "Token has been revoked".into() });
    let tokens = tokens_of(&s);
    let outcome = tokens.access_token(account_id, Some("access-1")).await;
    assert_eq!(outcome, Err(shared::flows::installs::TokenError::NeedsReinstall));
    let stored = s.store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!(stored.state, AccountState::NeedsReinstall);
    assert!(stored.sealed_tokens.is_some(), "kept: chats go on; an install replaces them");
    assert_eq!(s.installed("code-2").await.state, AccountState::Connected);
}

#[tokio::test]
async fn an_unpaid_or_blocked_account_is_not_marked_for_reinstall() {
    for status in [402, 403] {
        let s = setup();
        let account_id = s.installed("code-1").await.account_id;
        s.rest.fail_next(KommoRestError::Refused { status, detail: "Account is blocked".into() });
        let outcome = tokens_of(&s).access_token(account_id, Some("access-1")).await;
        assert!(matches!(outcome, Err(TokenError::Unavailable(_))), "{status}: {outcome:?}");
        let stored = s.store.get_account(account_id).await.unwrap().unwrap();
        assert_eq!(stored.state, AccountState::Connected, "{status}");
        // Paid again: the same refresh token works.
        assert_eq!(tokens_of(&s).access_token(account_id, Some("access-1")).await.unwrap(), "access-2");
    }
}

#[tokio::test]
async fn a_refresh_whose_answer_was_lost_leaves_the_old_refresh_token_working() {
    let s = setup();
    let account_id = s.installed("code-1").await.account_id;
    // Kommo issued refresh-2 but the bridge never stored it: refresh-1 still works, as
    // Kommo documents, because refresh-2 was never used.
    use shared::ports::accounts::KommoRest;
    let lost = s.rest.refresh("acme.kommo.com", "refresh-1").await.unwrap();
    assert_eq!(lost.refresh_token, "refresh-2");
    assert_eq!(tokens_of(&s).access_token(account_id, Some("access-1")).await.unwrap(), "access-3");
    assert_eq!(s.store.get_account(account_id).await.unwrap().unwrap().state, AccountState::Connected);
}

#[tokio::test]
async fn the_daily_sweep_renews_refresh_tokens_a_month_old_and_requeues_unfinished_installs() {
    let s = setup();
    let account_id = s.installed("code-1").await.account_id;
    s.run_due().await;
    let renewed_at = s.store.get_account(account_id).await.unwrap().unwrap().tokens_renewed_at_ms;
    assert_eq!(renewed_at, shared::time::Clock::now_ms(&*s.clock), "renewed at install");
    let refreshes = |s: &Setup| s.rest.calls().iter().filter(|c| c.starts_with("refresh")).count();
    // A day later nothing is due (the access token is refreshed on use anyway).
    s.clock.advance_ms(86_400_000);
    s.installs.sweep().await.unwrap();
    assert_eq!(refreshes(&s), 0);
    // A month without a call: renewed, well before Kommo's three months.
    s.clock.advance_ms(shared::rules::install::RENEW_REFRESH_AFTER_MS);
    s.installs.sweep().await.unwrap();
    assert_eq!(refreshes(&s), 1);
    let stored = s.store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!(stored.tokens_renewed_at_ms, shared::time::Clock::now_ms(&*s.clock));
    s.installs.sweep().await.unwrap();
    assert_eq!(refreshes(&s), 1, "swept twice: renewed once");
    // A connecting account whose queued connect was lost gets it again.
    let connecting =
        AccountRecord { account_id: 77, state: AccountState::Connecting, scope_id: "channel_other".into(), ..stored };
    s.store.put_account(&connecting).await.unwrap();
    s.installs.sweep().await.unwrap();
    let pending = s.timers.pending();
    assert!(
        pending.iter().any(|(_, work)| matches!(work, DueWork::FinishInstall { account_id: Some(77), .. })),
        "{pending:?}"
    );
}

#[tokio::test]
async fn a_disable_hook_disconnects_only_once_kommo_confirms_the_tokens_stopped() {
    let s = setup();
    assert_eq!(s.installs.disable(31_000_001).await.unwrap(), None, "never installed: nothing to disable");
    let record = s.installed("code-1").await;
    s.run_due().await;
    // The tokens still work (one user's access revoked?): kept connected, checked again later.
    let kept = s.installs.disable(record.account_id).await.unwrap().unwrap();
    assert_eq!(kept.state, AccountState::Connected);
    assert_eq!(s.store.get_account(record.account_id).await.unwrap().unwrap().state, AccountState::Connected);
    let pending = s.timers.pending();
    assert!(matches!(pending.as_slice(), [(_, DueWork::ConfirmDisable { attempt: 1, .. })]), "{pending:?}");
    // Kommo revokes them after all: the recheck disconnects, even with amojo down.
    s.rest.fail_next_call("account ", KommoRestError::Refused { status: 401, detail: "Unauthorized".into() });
    s.rest.fail_next_call("refresh ", KommoRestError::Refused { status: 400, detail: "Token has been revoked".into() });
    s.kommo.fail_next([amojo_down()]);
    s.clock.advance_ms(60_000);
    assert_eq!(s.run_due().await, ["confirm_disable"]);
    let stored = s.store.get_account(record.account_id).await.unwrap().unwrap();
    assert_eq!((stored.state, stored.sealed_tokens), (AccountState::Disconnected, None));
    let scope = s.store.account_of_scope(&record.scope_id).await.unwrap().unwrap();
    assert_eq!(scope.state, AccountState::Disconnected);
    let disconnects =
        |s: &Setup| s.kommo.calls().into_iter().filter(|c| matches!(c.call, KommoCall::Disconnect(_))).count();
    assert_eq!(disconnects(&s), 1);
    // Kommo calling again: the same answer, no second call to amojo.
    assert_eq!(s.installs.disable(record.account_id).await.unwrap().unwrap().state, AccountState::Disconnected);
    assert_eq!(disconnects(&s), 1);
    assert_eq!(tokens_of(&s).access_token(record.account_id, None).await, Err(TokenError::NotInstalled));
}

#[tokio::test]
async fn a_disable_hook_kommo_confirms_at_once_disconnects_at_once() {
    let s = setup();
    let record = s.installed("code-1").await;
    s.rest.fail_next_call("account ", KommoRestError::Refused { status: 401, detail: "Unauthorized".into() });
    s.rest.fail_next_call("refresh ", KommoRestError::Refused { status: 400, detail: "Token has been revoked".into() });
    let disabled = s.installs.disable(record.account_id).await.unwrap().unwrap();
    assert_eq!((disabled.state, disabled.sealed_tokens.as_deref()), (AccountState::Disconnected, None));
    // An unpaid account (402) says nothing: kept, asked again later.
    let s = setup();
    let record = s.installed("code-1").await;
    s.run_due().await;
    s.rest.fail_next_call("account ", KommoRestError::Refused { status: 402, detail: "Payment required".into() });
    assert_eq!(s.installs.disable(record.account_id).await.unwrap().unwrap().state, AccountState::Connected);
    assert!(matches!(s.timers.pending().as_slice(), [(_, DueWork::ConfirmDisable { .. })]));
}

#[tokio::test]
async fn an_unknown_manager_queues_a_read_of_kommos_users_at_most_once_a_minute_per_account() {
    use shared::flows::managers::NamedBy;
    let s = setup();
    let record = s.installed("code-1").await;
    let scope = record.scope_id.clone();
    let users_calls = |s: &Setup| s.rest.calls().iter().filter(|call| call.starts_with("users ")).count();
    assert_eq!(s.run_due().await, ["refresh_managers"]);
    assert_eq!(users_calls(&s), 1, "read after install, as queued work");
    // Known managers, by either id: nothing queued.
    s.managers.on_named(&scope, NamedBy::Amojo("amojo-user-7")).await;
    s.managers.on_named(&scope, NamedBy::KommoUser(8)).await;
    // Unknown, but Kommo was read less than a minute ago: nothing queued either.
    s.managers.on_named(&scope, NamedBy::Amojo("amojo-user-9")).await;
    assert!(s.timers.pending().is_empty());
    s.clock.advance_ms(61_000);
    s.managers.on_named(&scope, NamedBy::Amojo("amojo-user-9")).await;
    assert_eq!(users_calls(&s), 1, "never read in the caller's path");
    assert_eq!(s.run_due().await, ["refresh_managers"]);
    assert_eq!(users_calls(&s), 2, "read as queued work");
    s.managers.on_named(&scope, NamedBy::KommoUser(9)).await;
    s.clock.advance_ms(30_000);
    s.managers.on_named(&scope, NamedBy::Amojo("amojo-user-9")).await;
    assert!(s.timers.pending().is_empty(), "still unknown, within the minute: not again");
    // A scope with no installed account is never read from Kommo.
    s.clock.advance_ms(120_000);
    s.managers.on_named("channel_hand-connected", NamedBy::Amojo("amojo-user-7")).await;
    s.run_due().await;
    assert_eq!(users_calls(&s), 2);
}

#[tokio::test]
async fn a_users_list_kommo_refuses_keeps_the_directory_and_is_said_once() {
    use shared::flows::managers::UsersRead;
    let s = setup();
    let record = s.installed("code-1").await;
    s.run_due().await;
    let before = s.store.managers_of(&record.scope_id).await.unwrap().unwrap();
    let forbidden = || KommoRestError::Refused { status: 403, detail: "Access denied".into() };
    s.rest.fail_next_call("users ", forbidden());
    s.clock.advance_ms(61_000);
    assert_eq!(s.managers.refresh(&record.scope_id).await.unwrap(), UsersRead::Refused);
    let kept = s.store.managers_of(&record.scope_id).await.unwrap().unwrap();
    assert_eq!(kept.managers, before.managers, "the last directory kept");
    let account = s.store.get_account(record.account_id).await.unwrap().unwrap();
    assert!(account.users_refused);
    assert_eq!(account.state, AccountState::Connected, "not a reason to reinstall");
    // Said once: refused again, nothing changes.
    assert!(!s.store.note_users_refused(record.account_id, true).await.unwrap());
    // Listed again (an administrator reinstalled): the mark goes.
    assert!(matches!(s.managers.refresh(&record.scope_id).await.unwrap(), UsersRead::Read(_)));
    assert!(!s.store.get_account(record.account_id).await.unwrap().unwrap().users_refused);
}
