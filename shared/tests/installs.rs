//! Installing the integration simulated: the referer checked before anything
//! is sent, the code exchanged once, the channel connected, the account registered with its
//! tokens sealed; a failure stores nothing.

use std::sync::Arc;

use shared::adapters::memory::MemoryStore;
use shared::flows::installs::{InstallError, Installs, TokenError, sealing_context};
use shared::ports::accounts::{KommoRestError, TokenSealer};
use shared::ports::kommo::KommoError;
use shared::ports::store::{AccountRegistry, AccountState, ManagerDirectory};
use shared::testing::{KommoCall, ManualClock, RecordingKommo, RecordingKommoRest, TestSealer};

struct Setup {
    installs: Installs,
    clock: Arc<ManualClock>,
    rest: Arc<RecordingKommoRest>,
    kommo: Arc<RecordingKommo>,
    store: Arc<MemoryStore>,
    sealer: Arc<TestSealer>,
}

fn setup() -> Setup {
    let clock = Arc::new(ManualClock::at_ms(1_700_000_000_000));
    let rest = Arc::new(RecordingKommoRest::new());
    let kommo = Arc::new(RecordingKommo::new(clock.clone()));
    let store = Arc::new(MemoryStore::new());
    let sealer = Arc::new(TestSealer);
    let installs = Installs {
        rest: rest.clone(),
        kommo: kommo.clone(),
        accounts: store.clone(),
        directory: store.clone(),
        sealer: sealer.clone(),
        clock: clock.clone(),
        channel_title: "Bridge".into(),
    };
    Setup { installs, clock, rest, kommo, store, sealer }
}

#[tokio::test]
async fn an_install_connects_the_channel_and_registers_the_account_with_its_tokens_sealed() {
    let s = setup();
    let record = s.installs.install("code-1", "acme.kommo.com").await.unwrap();
    assert_eq!(
        s.rest.calls(),
        ["exchange acme.kommo.com code-1", "account acme.kommo.com access-1", "users acme.kommo.com access-1"]
    );
    // The managers' ids, read at install: the first events name them fully.
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
    let again = s.installs.install("code-2", "acme.kommo.com").await.unwrap();
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
    ] {
        let s = setup();
        let outcome = s.installs.install(code, referer).await;
        assert!(matches!(outcome, Err(InstallError::Rejected(_))), "{code:?} {referer:?}: {outcome:?}");
        assert!(s.rest.calls().is_empty(), "{referer:?}: nothing sent");
        assert!(s.store.list_accounts().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_refused_code_or_a_failed_connect_stores_nothing() {
    let s = setup();
    s.rest.fail_next(KommoRestError::Refused { status: 400, detail: "Authorization code has been revoked".into() });
    let refused = s.installs.install("code-1", "acme.kommo.com").await;
    assert_eq!(refused, Err(InstallError::Refused("Authorization code has been revoked".into())));
    s.kommo.fail_next([KommoError::Unavailable {
        attempts: 3,
        status: Some(503),
        reason: "HTTP 503".into(),
        retry_after: None,
    }]);
    let unavailable = s.installs.install("code-2", "acme.kommo.com").await;
    assert!(matches!(unavailable, Err(InstallError::Unavailable(_))), "{unavailable:?}");
    assert!(s.store.list_accounts().await.unwrap().is_empty(), "nothing half-done");
    assert!(s.installs.install("code-3", "acme.kommo.com").await.is_ok(), "installing again is the retry");
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
    let account_id = s.installs.install("code-1", "acme.kommo.com").await.unwrap().account_id;
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
    let account_id = s.installs.install("code-1", "acme.kommo.com").await.unwrap().account_id;
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
    let account_id = s.installs.install("code-1", "acme.kommo.com").await.unwrap().account_id;
    s.rest.fail_next(KommoRestError::Refused { status: 400, detail: "Token has been revoked".into() });
    let tokens = tokens_of(&s);
    let outcome = tokens.access_token(account_id, Some("access-1")).await;
    assert_eq!(outcome, Err(shared::flows::installs::TokenError::NeedsReinstall));
    let stored = s.store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!(stored.state, AccountState::NeedsReinstall);
    assert!(stored.sealed_tokens.is_some(), "kept: chats go on; an install replaces them");
    assert_eq!(s.installs.install("code-2", "acme.kommo.com").await.unwrap().state, AccountState::Connected);
}

#[tokio::test]
async fn a_disable_disconnects_the_account_even_when_amojo_cannot_be_reached() {
    let s = setup();
    assert_eq!(s.installs.disable(31_000_001).await.unwrap(), None, "never installed: nothing to disable");
    let record = s.installs.install("code-1", "acme.kommo.com").await.unwrap();
    // Kommo disconnects the channel itself on disable: amojo failing changes nothing here.
    s.kommo.fail_next([KommoError::Unavailable {
        attempts: 3,
        status: Some(503),
        reason: "down".into(),
        retry_after: None,
    }]);
    let disabled = s.installs.disable(record.account_id).await.unwrap().unwrap();
    assert_eq!((disabled.state, disabled.sealed_tokens.as_deref()), (AccountState::Disconnected, None));
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
async fn an_unknown_manager_makes_kommo_read_at_most_once_a_minute_per_account() {
    use shared::flows::managers::{ManagerDirectoryRefresh, NamedBy};
    let s = setup();
    let record = s.installs.install("code-1", "acme.kommo.com").await.unwrap();
    let scope = record.scope_id.clone();
    let refresh =
        ManagerDirectoryRefresh::new(s.store.clone(), s.store.clone(), tokens_of(&s), s.rest.clone(), s.clock.clone());
    let users_calls = |s: &Setup| s.rest.calls().iter().filter(|call| call.starts_with("users ")).count();
    assert_eq!(users_calls(&s), 1, "read at install");
    // Known managers, by either id: nothing read.
    refresh.on_named(&scope, NamedBy::Amojo("amojo-user-7")).await;
    refresh.on_named(&scope, NamedBy::KommoUser(8)).await;
    // Unknown, but Kommo was read less than a minute ago: nothing read either.
    refresh.on_named(&scope, NamedBy::Amojo("amojo-user-9")).await;
    assert_eq!(users_calls(&s), 1);
    s.clock.advance_ms(61_000);
    refresh.on_named(&scope, NamedBy::Amojo("amojo-user-9")).await;
    assert_eq!(users_calls(&s), 2, "a miss a minute later reads Kommo's users again");
    refresh.on_named(&scope, NamedBy::KommoUser(9)).await;
    s.clock.advance_ms(30_000);
    refresh.on_named(&scope, NamedBy::Amojo("amojo-user-9")).await;
    assert_eq!(users_calls(&s), 2, "still unknown, within the minute: not again");
    let stored = s.store.managers_of(&scope).await.unwrap().unwrap();
    assert_eq!(stored.fetched_at_ms, 1_700_000_061_000);
    // A scope with no installed account is never read from Kommo.
    s.clock.advance_ms(120_000);
    refresh.on_named("channel_hand-connected", NamedBy::Amojo("amojo-user-7")).await;
    assert_eq!(users_calls(&s), 2);
}
