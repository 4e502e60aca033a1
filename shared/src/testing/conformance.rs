//! The one suite every store adapter passes: the in-memory store in unit tests, the DynamoDB
//! adapter against a real DynamoDB-compatible server in `tests/`. Each case takes a fresh
//! scope, so the cases can share one table and run in parallel.

use crate::models::status::{DeliveryError, DeliveryStatus};
use crate::ports::store::*;
use crate::time::{Clock, SystemClock};

/// Generates one `#[tokio::test]` per conformance case for the store that `$make` (an async
/// expression) builds.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases $make;
            a_lease_starts_extends_and_ignores_a_duplicate,
            an_expired_lease_still_stored_is_not_live_until_extended,
            ending_a_lease_happens_once,
            a_timer_ends_only_a_lapsed_lease_and_only_once,
            client_typing_extends_in_one_write_and_claims_calls_at_most_once_per_gap,
            presence_comes_online_coalesces_and_goes_offline,
            presence_is_exact_at_the_window_edges,
            the_most_present_device_wins,
            a_message_is_recorded_once,
            the_status_register_only_moves_forward,
            a_status_for_an_unseen_message_creates_its_record,
            a_relay_is_claimed_by_one_worker_and_finished_once,
            a_status_names_a_message_by_the_chat_services_id_once_relayed,
            read_up_to_lists_a_conversations_messages_newest_first,
            a_client_message_is_recorded_once_and_its_import_ends_once,
            conversations_are_found_by_either_id_and_read_marks_only_move_forward,
            a_chat_a_manager_started_leads_to_the_id_it_was_answered_under,
            an_account_is_registered_and_its_tokens_replaced_only_over_what_was_read,
            an_install_moves_from_connecting_only_where_it_stands_and_says_a_refused_users_list_once,
            a_scopes_manager_directory_is_replaced_whole,
            a_scopes_sources_are_remembered_by_external_id,
            the_newest_client_message_of_a_conversation_is_found,
            a_presence_push_is_due_only_when_what_was_told_changes,
            a_dedupe_key_is_held_by_one_attempt_then_remembered_as_done,
            a_lane_has_one_sender_at_a_time_and_its_mark_only_rises,
            scopes_never_see_each_other);
    };
    (@cases $make:expr; $($case:ident),+) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store = $make;
                $crate::testing::conformance::$case(&*store).await;
            }
        )+
    };
}

fn fresh_scope() -> String {
    format!("chan_{}", hex::encode(crate::random::random_bytes::<6>()))
}

/// A base time near now, so TTL values are realistic for servers that look at them.
fn base_ms() -> i64 {
    SystemClock.now_ms()
}

pub async fn a_lease_starts_extends_and_ignores_a_duplicate(store: &dyn Store) {
    let key = LeaseKey::manager(&fresh_scope(), "conv-1", "manager-1");
    let now = base_ms();
    assert_eq!(store.extend(&key, now + 5000).await.unwrap(), LeaseChange::Started);
    assert_eq!(
        store.extend(&key, now + 10_000).await.unwrap(),
        LeaseChange::Extended { previous_expires_at_ms: now + 5000 }
    );
    assert_eq!(store.extend(&key, now + 10_000).await.unwrap(), LeaseChange::Unchanged { expires_at_ms: now + 10_000 });
    assert_eq!(store.extend(&key, now + 8000).await.unwrap(), LeaseChange::Unchanged { expires_at_ms: now + 10_000 });
    let lease = store.get_lease(&key, now + 9999).await.unwrap().unwrap();
    assert_eq!(lease.expires_at_ms, now + 10_000);
}

pub async fn an_expired_lease_still_stored_is_not_live_until_extended(store: &dyn Store) {
    let key = LeaseKey::manager(&fresh_scope(), "conv-1", "manager-1");
    let now = base_ms();
    store.extend(&key, now + 5000).await.unwrap();
    assert_eq!(store.get_lease(&key, now + 5000).await.unwrap(), None, "a lease is over at its expiry");
    // Not ended yet (its timer is late): the next extension takes it on, it does not start anew.
    assert_eq!(
        store.extend(&key, now + 12_000).await.unwrap(),
        LeaseChange::Extended { previous_expires_at_ms: now + 5000 }
    );
    assert_eq!(store.end_if_lapsed(&key, now + 7001).await.unwrap(), None, "live again");
    assert_eq!(store.end_if_lapsed(&key, now + 12_000).await.unwrap(), Some(now + 12_000));
    assert_eq!(store.extend(&key, now + 20_000).await.unwrap(), LeaseChange::Started, "ended: anew");
}

pub async fn ending_a_lease_happens_once(store: &dyn Store) {
    let key = LeaseKey::manager(&fresh_scope(), "conv-1", "manager-1");
    let now = base_ms();
    store.extend(&key, now + 5000).await.unwrap();
    let ended = store.end(&key, now + 1000).await.unwrap();
    assert_eq!(ended.map(|l| l.expires_at_ms), Some(now + 5000));
    assert_eq!(store.end(&key, now + 1001).await.unwrap(), None);
    assert_eq!(store.get_lease(&key, now + 1002).await.unwrap(), None);
    // A lapsed lease cannot be "ended" again by a late message.
    store.extend(&key, now + 8000).await.unwrap();
    assert_eq!(store.end(&key, now + 9000).await.unwrap(), None);
}

pub async fn a_timer_ends_only_a_lapsed_lease_and_only_once(store: &dyn Store) {
    let key = LeaseKey::manager(&fresh_scope(), "conv-1", "manager-1");
    let now = base_ms();
    store.extend(&key, now + 5000).await.unwrap();
    assert_eq!(store.end_if_lapsed(&key, now + 4999).await.unwrap(), None, "not before expiry");
    store.extend(&key, now + 10_000).await.unwrap();
    assert_eq!(store.end_if_lapsed(&key, now + 5001).await.unwrap(), None, "the lease was extended");
    assert_eq!(
        store.end_if_lapsed(&key, now + 12_000).await.unwrap(),
        Some(now + 10_000),
        "a late timer still ends it"
    );
    assert_eq!(store.end_if_lapsed(&key, now + 12_001).await.unwrap(), None, "exactly once");
}

pub async fn client_typing_extends_in_one_write_and_claims_calls_at_most_once_per_gap(store: &dyn Store) {
    let key = LeaseKey::client(&fresh_scope(), "conv-1", "client-1");
    let now = base_ms();
    let started = store.client_typing_signal(&key, now, now + 6000, 4000).await.unwrap();
    assert_eq!(started, ClientSignal::Started { forward_now: true, next_forward_at_ms: now + 4000 });
    let writes = store.op_counts().writes;
    for later in [50, 1000, 3000] {
        let signal = store.client_typing_signal(&key, now + later, now + later + 6000, 4000).await.unwrap();
        assert_eq!(signal, ClientSignal::Extended);
    }
    assert_eq!(store.op_counts().writes - writes, 3, "one write per signal while the lease lives");
    assert_eq!(store.get_lease(&key, now + 8999).await.unwrap().unwrap().expires_at_ms, now + 9000);
    assert_eq!(store.client_typing_signal(&key, now + 3100, now + 5000, 4000).await.unwrap(), ClientSignal::Extended);
    assert_eq!(store.get_lease(&key, now + 3200).await.unwrap().unwrap().expires_at_ms, now + 9000, "never shortened");

    assert!(!store.claim_refresh(&key, now + 3999, 4000).await.unwrap(), "within the gap");
    assert!(store.claim_refresh(&key, now + 4000, 4000).await.unwrap());
    assert!(!store.claim_refresh(&key, now + 4000, 4000).await.unwrap(), "a duplicate refresh is denied");
    assert!(store.claim_refresh(&key, now + 8000, 4000).await.unwrap());
    assert!(!store.claim_refresh(&key, now + 9000, 0).await.unwrap(), "not after the lease lapsed");

    // Started again soon after the last call: the lease restarts, the call waits for the gap.
    let restarted = store.client_typing_signal(&key, now + 9100, now + 15_100, 4000).await.unwrap();
    assert_eq!(restarted, ClientSignal::Started { forward_now: false, next_forward_at_ms: now + 12_000 });
    assert!(!store.claim_refresh(&key, now + 9100, 4000).await.unwrap());
    assert!(store.claim_refresh(&key, now + 12_000, 4000).await.unwrap(), "the chain forwards once the gap passed");
    store.end(&key, now + 9200).await.unwrap();
    assert!(!store.claim_refresh(&key, now + 20_000, 0).await.unwrap(), "never after the lease ended");
}

fn client_presence(scope: &str, device: &str) -> PresenceKey {
    PresenceKey { scope_id: scope.into(), subject: "client:user-1".into(), device: device.into() }
}

pub async fn presence_comes_online_coalesces_and_goes_offline(store: &dyn Store) {
    let scope = fresh_scope();
    let key = client_presence(&scope, "phone");
    let now = base_ms();
    assert_eq!(store.heartbeat(&key, now, 60_000, 30_000).await.unwrap(), HeartbeatOutcome::CameOnline);
    let writes_before = store.op_counts().writes;
    for i in 1..=20 {
        assert_eq!(store.heartbeat(&key, now + i * 1000, 60_000, 30_000).await.unwrap(), HeartbeatOutcome::Coalesced);
    }
    assert_eq!(store.op_counts().writes, writes_before, "coalesced heartbeats write nothing");
    assert_eq!(store.heartbeat(&key, now + 30_000, 60_000, 30_000).await.unwrap(), HeartbeatOutcome::Refreshed);
    assert!(store.go_offline(&key, now + 31_000).await.unwrap());
    assert!(!store.go_offline(&key, now + 31_001).await.unwrap());
    let view = store.presence(&scope, "client:user-1", now + 31_002).await.unwrap();
    assert_eq!(view, PresenceView { online: false, last_seen_at_ms: Some(now + 31_000), online_until_ms: None });
    assert_eq!(store.heartbeat(&key, now + 32_000, 60_000, 30_000).await.unwrap(), HeartbeatOutcome::CameOnline);
}

pub async fn presence_is_exact_at_the_window_edges(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    store.heartbeat(&client_presence(&scope, "web"), now, 60_000, 30_000).await.unwrap();
    let before = store.presence(&scope, "client:user-1", now + 59_000).await.unwrap();
    assert!(before.online);
    let after = store.presence(&scope, "client:user-1", now + 61_000).await.unwrap();
    assert!(!after.online, "offline once the window passed, though the item is still stored");
    assert_eq!(after.last_seen_at_ms, Some(now));
    let nobody = store.presence(&scope, "client:someone-else", now).await.unwrap();
    assert_eq!(nobody, PresenceView::default());
}

pub async fn the_most_present_device_wins(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    store.heartbeat(&client_presence(&scope, "phone"), now, 60_000, 30_000).await.unwrap();
    store.heartbeat(&client_presence(&scope, "laptop"), now + 40_000, 60_000, 30_000).await.unwrap();
    store.go_offline(&client_presence(&scope, "phone"), now + 41_000).await.unwrap();
    let view = store.presence(&scope, "client:user-1", now + 50_000).await.unwrap();
    assert!(view.online, "the laptop is still online");
    assert_eq!(view.last_seen_at_ms, Some(now + 41_000));
    assert_eq!(view.online_until_ms, Some(now + 100_000));
}

fn outgoing(scope: &str, msgid: &str, now: i64) -> MessageRecord {
    MessageRecord {
        scope_id: scope.into(),
        kommo_msgid: msgid.into(),
        conversation_id: "conv-1".into(),
        direction: Direction::Outgoing,
        chat_msgid: Some("chat-7".into()),
        created_at_ms: now,
        status_rank: None,
        relay: RelayState::Pending,
    }
}

pub async fn a_message_is_recorded_once(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    let record = outgoing(&scope, "kommo-1", now);
    assert!(store.insert_message(&record).await.unwrap());
    assert!(!store.insert_message(&MessageRecord { created_at_ms: now + 5, ..record.clone() }).await.unwrap());
    assert_eq!(store.get_message(&scope, "kommo-1").await.unwrap(), Some(record));
    assert_eq!(store.get_message(&scope, "kommo-2").await.unwrap(), None);
}

pub async fn the_status_register_only_moves_forward(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    store.insert_message(&outgoing(&scope, "kommo-1", now)).await.unwrap();
    let failed = DeliveryStatus::Failed(DeliveryError::Internal);
    let steps = [
        (DeliveryStatus::Read, StatusChange::Advanced { previous_rank: None }),
        (DeliveryStatus::Delivered, StatusChange::Unchanged { current_rank: Some(2) }),
        (DeliveryStatus::Read, StatusChange::Unchanged { current_rank: Some(2) }),
        (failed.clone(), StatusChange::Unchanged { current_rank: Some(2) }),
    ];
    for (status, expected) in steps {
        assert_eq!(store.advance_status(&scope, "kommo-1", &status, now).await.unwrap(), expected, "{status:?}");
    }
    store.insert_message(&outgoing(&scope, "kommo-2", now)).await.unwrap();
    assert_eq!(
        store.advance_status(&scope, "kommo-2", &failed, now).await.unwrap(),
        StatusChange::Advanced { previous_rank: None }
    );
    assert_eq!(
        store.advance_status(&scope, "kommo-2", &failed, now).await.unwrap(),
        StatusChange::Unchanged { current_rank: Some(-1) }
    );
    assert_eq!(
        store.advance_status(&scope, "kommo-2", &DeliveryStatus::Delivered, now).await.unwrap(),
        StatusChange::Advanced { previous_rank: Some(-1) }
    );
    assert_eq!(store.get_message(&scope, "kommo-2").await.unwrap().unwrap().status_rank, Some(1));
}

pub async fn a_status_for_an_unseen_message_creates_its_record(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    assert_eq!(
        store.advance_status(&scope, "kommo-9", &DeliveryStatus::Delivered, now).await.unwrap(),
        StatusChange::Advanced { previous_rank: None }
    );
    let record = store.get_message(&scope, "kommo-9").await.unwrap().unwrap();
    assert_eq!((record.status_rank, record.direction, record.created_at_ms), (Some(1), Direction::Outgoing, now));
    assert_eq!(
        record.relay,
        RelayState::Pending,
        "not relayed by this bridge: its webhook, if recorded later, relays it"
    );
    assert!(!store.insert_message(&outgoing(&scope, "kommo-9", now + 1)).await.unwrap(), "its webhook finds it");
    assert_eq!(store.claim_relay(&scope, "kommo-9", now + 1, 30_000).await.unwrap(), RelayClaim::Claimed);
}

pub async fn a_relay_is_claimed_by_one_worker_and_finished_once(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    store.insert_message(&outgoing(&scope, "kommo-1", now)).await.unwrap();
    let claim = |at: i64| store.claim_relay(&scope, "kommo-1", at, 30_000);
    assert_eq!(claim(now).await.unwrap(), RelayClaim::Claimed);
    assert_eq!(claim(now + 1).await.unwrap(), RelayClaim::HeldUntil(now + 30_000), "held by the first worker");
    store.finish_relay(&scope, "kommo-1", &RelayOutcome::RetryAt(now + 5000)).await.unwrap();
    assert_eq!(claim(now + 4999).await.unwrap(), RelayClaim::HeldUntil(now + 5000), "not before the retry");
    assert_eq!(claim(now + 5000).await.unwrap(), RelayClaim::Claimed);
    store.finish_relay(&scope, "kommo-1", &RelayOutcome::Failed).await.unwrap();
    assert_eq!(claim(now + 60_000).await.unwrap(), RelayClaim::Done, "a failed relay stays failed");
    assert_eq!(store.get_message(&scope, "kommo-1").await.unwrap().unwrap().relay, RelayState::Failed);
    assert_eq!(store.claim_relay(&scope, "kommo-unknown", now, 30_000).await.unwrap(), RelayClaim::Done);
}

pub async fn a_status_names_a_message_by_the_chat_services_id_once_relayed(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    store.insert_message(&MessageRecord { chat_msgid: None, ..outgoing(&scope, "kommo-1", now) }).await.unwrap();
    assert_eq!(store.kommo_msgid_for(&scope, "chat-1").await.unwrap(), None);
    assert_eq!(store.claim_relay(&scope, "kommo-1", now, 30_000).await.unwrap(), RelayClaim::Claimed);
    store.finish_relay(&scope, "kommo-1", &RelayOutcome::Sent { chat_msgid: Some("chat-1".into()) }).await.unwrap();
    assert_eq!(store.kommo_msgid_for(&scope, "chat-1").await.unwrap().as_deref(), Some("kommo-1"));
    let record = store.get_message(&scope, "kommo-1").await.unwrap().unwrap();
    assert_eq!((record.relay, record.chat_msgid.as_deref()), (RelayState::Sent, Some("chat-1")));
}

pub async fn read_up_to_lists_a_conversations_messages_newest_first(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    for (i, msgid) in ["kommo-a", "kommo-b", "kommo-c", "kommo-d"].iter().enumerate() {
        store.insert_message(&outgoing(&scope, msgid, now + i as i64 * 10)).await.unwrap();
    }
    let other = MessageRecord { conversation_id: "conv-2".into(), ..outgoing(&scope, "kommo-x", now + 5) };
    store.insert_message(&other).await.unwrap();
    assert_eq!(
        store.outgoing_up_to(&scope, "conv-1", now + 20, 50).await.unwrap(),
        vec!["kommo-c", "kommo-b", "kommo-a"]
    );
    assert_eq!(store.outgoing_up_to(&scope, "conv-1", now + 30, 2).await.unwrap(), vec!["kommo-d", "kommo-c"]);
    assert!(store.outgoing_up_to(&scope, "conv-1", now - 1, 50).await.unwrap().is_empty());
}

pub async fn a_client_message_is_recorded_once_and_its_import_ends_once(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    assert!(store.insert_incoming(&scope, "chat-7", "conv-1", now).await.unwrap());
    assert!(!store.insert_incoming(&scope, "chat-7", "conv-1", now + 1).await.unwrap());
    assert_eq!(store.incoming_state(&scope, "chat-7").await.unwrap(), Some(IncomingState::Pending));
    assert_eq!(store.incoming_state(&scope, "chat-unknown").await.unwrap(), None);
    let imported = IncomingState::Imported { kommo_msgid: Some("kommo-7".into()) };
    store.finish_incoming(&scope, "chat-7", &imported).await.unwrap();
    assert_eq!(store.incoming_state(&scope, "chat-7").await.unwrap(), Some(imported));
    // Kommo's answer may name no msgid; a message Kommo refused stays, dead-lettered.
    assert!(store.insert_incoming(&scope, "chat-9", "conv-1", now).await.unwrap());
    let unnamed = IncomingState::Imported { kommo_msgid: None };
    store.finish_incoming(&scope, "chat-9", &unnamed).await.unwrap();
    assert_eq!(store.incoming_state(&scope, "chat-9").await.unwrap(), Some(unnamed));
    assert!(store.insert_incoming(&scope, "chat-10", "conv-1", now).await.unwrap());
    store.finish_incoming(&scope, "chat-10", &IncomingState::Failed).await.unwrap();
    assert_eq!(store.incoming_state(&scope, "chat-10").await.unwrap(), Some(IncomingState::Failed));
    assert!(!store.insert_incoming(&scope, "chat-10", "conv-1", now).await.unwrap(), "dead-lettered, not forgotten");
    // A message refused after it was recorded is forgotten, index entry included.
    assert!(store.insert_incoming(&scope, "chat-8", "conv-2", now).await.unwrap());
    store.forget_incoming(&scope, "chat-8", "conv-2", now).await.unwrap();
    assert_eq!(store.newest_incoming(&scope, "conv-2").await.unwrap(), None);
    assert!(store.insert_incoming(&scope, "chat-8", "conv-2", now).await.unwrap(), "a first delivery again");
}

pub async fn conversations_are_found_by_either_id_and_read_marks_only_move_forward(store: &dyn Store) {
    let scope = fresh_scope();
    assert_eq!(store.find_conversation(&scope, "conv-1").await.unwrap(), None);
    let chat = ConversationFacts { kommo_chat_id: Some("kommo-chat-1"), ..Default::default() };
    store.remember_conversation(&scope, "conv-1", &chat).await.unwrap();
    let client = ConversationFacts { client_user_id: Some("client-1"), ..Default::default() };
    store.remember_conversation(&scope, "conv-1", &client).await.unwrap();
    let expected = ConversationInfo {
        conversation_id: "conv-1".into(),
        kommo_chat_id: Some("kommo-chat-1".into()),
        client_user_id: Some("client-1".into()),
        ..Default::default()
    };
    assert_eq!(store.find_conversation(&scope, "conv-1").await.unwrap(), Some(expected.clone()));
    assert_eq!(store.find_conversation(&scope, "kommo-chat-1").await.unwrap(), Some(expected), "by Kommo's chat id");
    assert_eq!(store.find_conversation(&fresh_scope(), "kommo-chat-1").await.unwrap(), None);

    assert!(store.advance_read_mark(&scope, "conv-1", 1000, "chat-b").await.unwrap());
    assert!(!store.advance_read_mark(&scope, "conv-1", 1000, "chat-b").await.unwrap(), "the same mark again");
    assert!(!store.advance_read_mark(&scope, "conv-1", 900, "chat-z").await.unwrap(), "an older message");
    assert!(store.advance_read_mark(&scope, "conv-1", 1000, "chat-c").await.unwrap());
    assert!(store.advance_read_mark(&scope, "conv-1", 2000, "chat-a").await.unwrap());
    assert_eq!(
        store.find_conversation(&scope, "conv-1").await.unwrap().unwrap().kommo_chat_id.as_deref(),
        Some("kommo-chat-1")
    );
}

pub async fn a_chat_a_manager_started_leads_to_the_id_it_was_answered_under(store: &dyn Store) {
    let scope = fresh_scope();
    // Started in Kommo: named by Kommo's chat id, Kommo's id of the client kept.
    let started = ConversationFacts {
        kommo_chat_id: Some("kommo-chat-9"),
        kommo_client_id: Some("kommo-client-9"),
        ..Default::default()
    };
    store.remember_conversation(&scope, "kommo-chat-9", &started).await.unwrap();
    let found = store.find_conversation(&scope, "kommo-chat-9").await.unwrap().unwrap();
    assert!(found.started_in_kommo());
    assert_eq!(found.kommo_client_id.as_deref(), Some("kommo-client-9"));
    // The chat service answers under its own id: both ids lead there from now on.
    let answer = ConversationFacts {
        kommo_chat_id: Some("kommo-chat-9"),
        client_user_id: Some("client-9"),
        kommo_client_id: Some("kommo-client-9"),
        ..Default::default()
    };
    store.remember_conversation(&scope, "conv-9", &answer).await.unwrap();
    let link = ConversationFacts { answered_as: Some("conv-9"), ..Default::default() };
    store.remember_conversation(&scope, "kommo-chat-9", &link).await.unwrap();
    let expected = ConversationInfo {
        conversation_id: "conv-9".into(),
        kommo_chat_id: Some("kommo-chat-9".into()),
        client_user_id: Some("client-9".into()),
        kommo_client_id: Some("kommo-client-9".into()),
        answered_as: None,
    };
    assert_eq!(store.find_conversation(&scope, "kommo-chat-9").await.unwrap(), Some(expected.clone()));
    assert_eq!(store.find_conversation(&scope, "conv-9").await.unwrap(), Some(expected));
    assert!(!store.find_conversation(&scope, "conv-9").await.unwrap().unwrap().started_in_kommo());
}

pub async fn an_account_is_registered_and_its_tokens_replaced_only_over_what_was_read(store: &dyn Store) {
    let scope = fresh_scope();
    let account_id = u64::from_le_bytes(crate::random::random_bytes::<8>()) >> 12;
    assert_eq!(store.get_account(account_id).await.unwrap(), None);
    let installed = AccountRecord {
        account_id,
        host: "acme.kommo.com".into(),
        amojo_id: "amojo-1".into(),
        scope_id: scope.clone(),
        state: AccountState::Connected,
        sealed_tokens: Some("sealed-1".into()),
        access_expires_at_ms: 1000,
        token_version: 1,
        installed_at_ms: 5,
        tokens_renewed_at_ms: 5,
        users_refused: false,
    };
    store.put_account(&installed).await.unwrap();
    assert_eq!(store.get_account(account_id).await.unwrap(), Some(installed.clone()));
    let connected = ScopeAccount { account_id, state: AccountState::Connected };
    assert_eq!(store.account_of_scope(&scope).await.unwrap(), Some(connected));
    assert_eq!(store.account_of_scope(&fresh_scope()).await.unwrap(), None);
    // Two refreshes read version 1; only the first write lands, the second must read again.
    assert!(store.replace_tokens(account_id, 1, "sealed-2", 2000, 1500).await.unwrap());
    assert!(!store.replace_tokens(account_id, 1, "sealed-3", 3000, 2500).await.unwrap());
    let refreshed = store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!((refreshed.sealed_tokens.as_deref(), refreshed.token_version), (Some("sealed-2"), 2));
    assert_eq!((refreshed.access_expires_at_ms, refreshed.tokens_renewed_at_ms), (2000, 1500));
    assert!(store.list_accounts().await.unwrap().iter().any(|a| a.account_id == account_id));
    // Disabled: the tokens go, and no refresh can bring them back.
    store.set_account_state(account_id, AccountState::Disconnected).await.unwrap();
    let disconnected = store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!((disconnected.state, disconnected.sealed_tokens), (AccountState::Disconnected, None));
    assert!(!store.replace_tokens(account_id, disconnected.token_version, "sealed-4", 4000, 3500).await.unwrap());
    // The scope follows (events read it there), and a new install brings both back.
    let scope_state = |state| Some(ScopeAccount { account_id, state });
    assert_eq!(store.account_of_scope(&scope).await.unwrap(), scope_state(AccountState::Disconnected));
    store.put_account(&AccountRecord { token_version: 5, ..installed.clone() }).await.unwrap();
    assert_eq!(store.account_of_scope(&scope).await.unwrap(), scope_state(AccountState::Connected));
    store.set_account_state(account_id + 1, AccountState::NeedsReinstall).await.unwrap(); // unknown: nothing
    assert_eq!(store.get_account(account_id + 1).await.unwrap(), None);
}

pub async fn an_install_moves_from_connecting_only_where_it_stands_and_says_a_refused_users_list_once(
    store: &dyn Store,
) {
    let scope = fresh_scope();
    let account_id = u64::from_le_bytes(crate::random::random_bytes::<8>()) >> 12;
    let connecting = AccountRecord {
        account_id,
        host: "acme.kommo.com".into(),
        amojo_id: "amojo-1".into(),
        scope_id: scope.clone(),
        state: AccountState::Connecting,
        sealed_tokens: Some("sealed-1".into()),
        access_expires_at_ms: 1000,
        token_version: 1,
        installed_at_ms: 5,
        tokens_renewed_at_ms: 5,
        users_refused: false,
    };
    store.put_account(&connecting).await.unwrap();
    assert_eq!(store.get_account(account_id).await.unwrap(), Some(connecting.clone()));
    let scope_state = |state| Some(ScopeAccount { account_id, state });
    assert_eq!(store.account_of_scope(&scope).await.unwrap(), scope_state(AccountState::Connecting));
    // Only from where it stands: a second connect, or one after a disable, moves nothing.
    assert!(store.transition_account(account_id, AccountState::Connecting, AccountState::Connected).await.unwrap());
    assert!(!store.transition_account(account_id, AccountState::Connecting, AccountState::Connected).await.unwrap());
    assert_eq!(store.account_of_scope(&scope).await.unwrap(), scope_state(AccountState::Connected));
    assert!(store.transition_account(account_id, AccountState::Connected, AccountState::Disconnected).await.unwrap());
    let disconnected = store.get_account(account_id).await.unwrap().unwrap();
    assert_eq!((disconnected.state, disconnected.sealed_tokens), (AccountState::Disconnected, None));
    assert_eq!(disconnected.token_version, 2);
    assert_eq!(store.account_of_scope(&scope).await.unwrap(), scope_state(AccountState::Disconnected));
    assert!(!store.transition_account(account_id, AccountState::Connecting, AccountState::Connected).await.unwrap());
    assert!(
        !store.transition_account(account_id + 1, AccountState::Connecting, AccountState::Connected).await.unwrap()
    );
    assert_eq!(store.get_account(account_id + 1).await.unwrap(), None, "unknown: nothing made");
    // The users list refused: changed once, then again only when it changes back.
    assert!(store.note_users_refused(account_id, true).await.unwrap());
    assert!(!store.note_users_refused(account_id, true).await.unwrap());
    assert!(store.get_account(account_id).await.unwrap().unwrap().users_refused);
    assert!(store.note_users_refused(account_id, false).await.unwrap());
    assert!(!store.note_users_refused(account_id, false).await.unwrap());
    assert!(!store.note_users_refused(account_id + 1, true).await.unwrap(), "unknown: nothing");
    assert_eq!(store.get_account(account_id + 1).await.unwrap(), None);
}

pub async fn a_scopes_manager_directory_is_replaced_whole(store: &dyn Store) {
    let (scope, other) = (fresh_scope(), fresh_scope());
    assert_eq!(store.managers_of(&scope).await.unwrap(), None);
    let anna = KnownManager { amojo_id: "amojo-anna".into(), kommo_user_id: 7, name: Some("Anna \"Q\" ü".into()) };
    let bob = KnownManager { amojo_id: "amojo-bob".into(), kommo_user_id: 8, name: None };
    let first = ManagerList { fetched_at_ms: 1000, managers: vec![anna.clone(), bob] };
    store.put_managers(&scope, &first).await.unwrap();
    assert_eq!(store.managers_of(&scope).await.unwrap(), Some(first));
    assert_eq!(store.managers_of(&other).await.unwrap(), None);
    let second = ManagerList { fetched_at_ms: 2000, managers: vec![anna] };
    store.put_managers(&scope, &second).await.unwrap();
    assert_eq!(store.managers_of(&scope).await.unwrap(), Some(second));
}

pub async fn a_scopes_sources_are_remembered_by_external_id(store: &dyn Store) {
    let (scope, other) = (fresh_scope(), fresh_scope());
    let now = base_ms();
    let source = |external_id: &str, kommo_source_id: u64| KnownSource {
        external_id: external_id.into(),
        kommo_source_id,
        name: format!("Line {external_id}"),
        remembered_at_ms: now,
    };
    assert_eq!(store.source_of(&scope, "line-b").await.unwrap(), None);
    assert_eq!(store.sources_of(&scope).await.unwrap(), vec![]);
    store.remember_source(&scope, &source("line-b", 20)).await.unwrap();
    store.remember_source(&scope, &source("line-a", 10)).await.unwrap();
    assert_eq!(store.source_of(&scope, "line-b").await.unwrap(), Some(source("line-b", 20)));
    // The same external id again replaces it (Kommo gave it a new id: created again).
    store.remember_source(&scope, &source("line-b", 21)).await.unwrap();
    assert_eq!(store.sources_of(&scope).await.unwrap(), vec![source("line-a", 10), source("line-b", 21)]);
    assert_eq!(store.source_of(&other, "line-b").await.unwrap(), None, "another scope's");
    assert_eq!(store.sources_of(&other).await.unwrap(), vec![]);
}

pub async fn the_newest_client_message_of_a_conversation_is_found(store: &dyn Store) {
    let scope = fresh_scope();
    assert_eq!(store.newest_incoming(&scope, "conv-1").await.unwrap(), None);
    store.insert_incoming(&scope, "chat-2", "conv-1", 2000).await.unwrap();
    store.insert_incoming(&scope, "chat-1", "conv-1", 1000).await.unwrap();
    store.insert_incoming(&scope, "chat-9", "conv-2", 9000).await.unwrap();
    assert_eq!(store.newest_incoming(&scope, "conv-1").await.unwrap(), Some((2000, "chat-2".into())));
}

pub async fn a_presence_push_is_due_only_when_what_was_told_changes(store: &dyn Store) {
    let scope = fresh_scope();
    assert_eq!(store.pushed(&scope, "manager:conv-1", "42").await.unwrap(), None, "nothing pushed yet");
    assert!(store.mark_pushed(&scope, "manager:conv-1", "42", true).await.unwrap());
    assert_eq!(store.pushed(&scope, "manager:conv-1", "42").await.unwrap(), Some(true));
    assert!(!store.mark_pushed(&scope, "manager:conv-1", "42", true).await.unwrap());
    assert!(store.mark_pushed(&scope, "manager:conv-1", "43", true).await.unwrap(), "per device");
    assert!(store.mark_pushed(&scope, "manager:conv-1", "42", false).await.unwrap());
    assert!(!store.mark_pushed(&scope, "manager:conv-1", "42", false).await.unwrap());
    assert_eq!(store.pushed(&scope, "manager:conv-1", "42").await.unwrap(), Some(false));
    assert_eq!(store.pushed(&scope, "manager:conv-1", "43").await.unwrap(), Some(true), "per device");
    let now = base_ms();
    let key =
        |device: &str| PresenceKey { scope_id: scope.clone(), subject: "manager:conv-1".into(), device: device.into() };
    store.heartbeat(&key("42"), now, 60_000, 30_000).await.unwrap();
    store.heartbeat(&key("43"), now - 70_000, 60_000, 30_000).await.unwrap();
    let devices = store.presence_devices(&scope, "manager:conv-1", now).await.unwrap();
    let online: Vec<(&str, bool)> = devices.iter().map(|(d, v)| (d.as_str(), v.online)).collect();
    assert_eq!(online, vec![("42", true), ("43", false)]);
}

pub async fn a_dedupe_key_is_held_by_one_attempt_then_remembered_as_done(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    let claimed = |claim: KeyClaim| match claim {
        KeyClaim::Claimed { token } => token,
        other => panic!("claimed expected, found {other:?}"),
    };
    let first = claimed(store.claim(&scope, "webhook:abc", now, 15_000).await.unwrap());
    assert_eq!(
        store.claim(&scope, "webhook:abc", now + 14_999, 15_000).await.unwrap(),
        KeyClaim::Held { until_ms: now + 15_000 }
    );
    claimed(store.claim(&scope, "webhook:abd", now + 1, 15_000).await.unwrap());
    store.finish(&scope, "webhook:abc", &first, now + 300_000).await.unwrap();
    assert_eq!(store.claim(&scope, "webhook:abc", now + 1_000, 15_000).await.unwrap(), KeyClaim::Done);
    assert_eq!(store.claim(&scope, "webhook:abc", now + 299_999, 15_000).await.unwrap(), KeyClaim::Done);
    store.release(&scope, "webhook:abc", &first).await.unwrap();
    assert_eq!(
        store.claim(&scope, "webhook:abc", now + 2_000, 15_000).await.unwrap(),
        KeyClaim::Done,
        "a key done is not released"
    );
    claimed(store.claim(&scope, "webhook:abc", now + 300_000, 15_000).await.unwrap());

    // An attempt that stopped: its hold lapses and the next attempt takes the key over; the
    // stopped attempt's late finish or release then changes nothing.
    let stopped = claimed(store.claim(&scope, "webhook:k", now, 15_000).await.unwrap());
    let next = claimed(store.claim(&scope, "webhook:k", now + 15_000, 15_000).await.unwrap());
    assert_ne!(stopped, next);
    store.release(&scope, "webhook:k", &stopped).await.unwrap();
    store.finish(&scope, "webhook:k", &stopped, now + 300_000).await.unwrap();
    assert_eq!(
        store.claim(&scope, "webhook:k", now + 16_000, 15_000).await.unwrap(),
        KeyClaim::Held { until_ms: now + 30_000 }
    );
    store.release(&scope, "webhook:k", &next).await.unwrap();
    claimed(store.claim(&scope, "webhook:k", now + 16_001, 15_000).await.unwrap());
    store.release(&scope, "never-claimed", "no-token").await.unwrap();
}

pub async fn a_lane_has_one_sender_at_a_time_and_its_mark_only_rises(store: &dyn Store) {
    let scope = fresh_scope();
    let now = base_ms();
    let Turn::Yours { token: first, sent_mark: None, .. } =
        store.take_turn(&scope, "status#m1", now, 30_000).await.unwrap()
    else {
        panic!("a fresh lane is free and has no mark");
    };
    assert_eq!(
        store.take_turn(&scope, "status#m1", now + 10, 30_000).await.unwrap(),
        Turn::Busy { until_ms: now + 30_000 }
    );
    let view = store.peek_turn(&scope, "status#m1", now + 10).await.unwrap();
    assert_eq!(view, LaneView { held_until_ms: Some(now + 30_000), sent_mark: None, unconfirmed: false });
    assert_eq!(store.peek_turn(&scope, "status#m9", now).await.unwrap(), LaneView::default(), "never used");
    assert!(
        matches!(store.take_turn(&scope, "status#m2", now, 30_000).await.unwrap(), Turn::Yours { .. }),
        "lanes are apart"
    );
    store.end_turn(&scope, "status#m1", &first, Some(2)).await.unwrap();
    let Turn::Yours { token: second, sent_mark: Some(2), .. } =
        store.take_turn(&scope, "status#m1", now + 20, 30_000).await.unwrap()
    else {
        panic!("given back with its mark");
    };
    store.end_turn(&scope, "status#m1", &second, None).await.unwrap();
    let view = store.peek_turn(&scope, "status#m1", now + 25).await.unwrap();
    assert_eq!(view, LaneView { held_until_ms: None, sent_mark: Some(2), unconfirmed: false }, "free, with its mark");
    // A holder that outlived its hold: the lane was taken over; its late end neither frees the
    // new holder's turn nor lowers the mark, but a higher mark still counts.
    let Turn::Yours { token: slow, .. } = store.take_turn(&scope, "status#m1", now + 30, 1000).await.unwrap() else {
        panic!("free again");
    };
    let Turn::Yours { token: next, sent_mark: Some(2), .. } =
        store.take_turn(&scope, "status#m1", now + 1030, 30_000).await.unwrap()
    else {
        panic!("a lapsed hold is taken over");
    };
    store.end_turn(&scope, "status#m1", &slow, Some(1)).await.unwrap();
    assert!(matches!(store.take_turn(&scope, "status#m1", now + 1040, 30_000).await.unwrap(), Turn::Busy { .. }));
    store.end_turn(&scope, "status#m1", &slow, Some(3)).await.unwrap();
    store.end_turn(&scope, "status#m1", &next, None).await.unwrap();
    let Turn::Yours { token: holder, sent_mark, unconfirmed: false } =
        store.take_turn(&scope, "status#m1", now + 1050, 30_000).await.unwrap()
    else {
        panic!("given back, its mark confirmed");
    };
    assert_eq!(sent_mark, Some(3));
    // What a send may tell, recorded before it while the turn is held: it only rises, it is
    // unconfirmed until a turn ends with it, and the holder's turn stays its own.
    store.raise_mark(&scope, "status#m1", 5).await.unwrap();
    store.raise_mark(&scope, "status#m1", 4).await.unwrap();
    assert!(matches!(store.take_turn(&scope, "status#m1", now + 1060, 30_000).await.unwrap(), Turn::Busy { .. }));
    let view = store.peek_turn(&scope, "status#m1", now + 1060).await.unwrap();
    assert_eq!((view.sent_mark, view.unconfirmed), (Some(5), true));
    store.end_turn(&scope, "status#m1", &holder, None).await.unwrap();
    let Turn::Yours { token: holder, sent_mark: Some(5), unconfirmed: true } =
        store.take_turn(&scope, "status#m1", now + 1070, 30_000).await.unwrap()
    else {
        panic!("a turn ended without a mark leaves the raised one unconfirmed");
    };
    store.end_turn(&scope, "status#m1", &holder, Some(5)).await.unwrap();
    let view = store.peek_turn(&scope, "status#m1", now + 1080).await.unwrap();
    assert_eq!(view, LaneView { held_until_ms: None, sent_mark: Some(5), unconfirmed: false }, "confirmed");
}

pub async fn scopes_never_see_each_other(store: &dyn Store) {
    let (a, b) = (fresh_scope(), fresh_scope());
    let now = base_ms();
    store.extend(&LeaseKey::manager(&a, "conv-1", "m"), now + 5000).await.unwrap();
    assert_eq!(store.get_lease(&LeaseKey::manager(&b, "conv-1", "m"), now).await.unwrap(), None);
    store.insert_message(&outgoing(&a, "kommo-1", now)).await.unwrap();
    assert_eq!(store.get_message(&b, "kommo-1").await.unwrap(), None);
    assert!(matches!(store.claim(&a, "k", now, 1000).await.unwrap(), KeyClaim::Claimed { .. }));
    assert!(matches!(store.claim(&b, "k", now, 1000).await.unwrap(), KeyClaim::Claimed { .. }));
    store.heartbeat(&client_presence(&a, "d"), now, 60_000, 30_000).await.unwrap();
    assert!(!store.presence(&b, "client:user-1", now).await.unwrap().online);
}
