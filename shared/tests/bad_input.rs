//! Bad input across every route, in memory: each request gets a 4xx with a JSON error, and
//! nothing is stored, sent or scheduled (the table is `shared::testing::bad_input`; the same
//! runs on the DynamoDB-compatible server in `tests/suites/bad_input.rs`). And what a replayed
//! `webhook-id` may change.

mod support;

use shared::testing::bad_input::*;
use support::*;

#[tokio::test]
async fn every_malformed_request_gets_a_json_4xx_and_changes_nothing_in_memory() {
    every_malformed_request_gets_a_json_4xx_and_changes_nothing(Sim::new()).await;
}

/// A chat-service request sent again (same `webhook-id`, still inside the signature's 5-minute
/// tolerance: a sender's retry whose answer was lost, or a captured request replayed) is
/// answered 200 `duplicate` and changes nothing once the first was applied; the sender's retry
/// of an event that failed is applied: a failed event's id is forgotten.
#[tokio::test]
async fn a_webhook_id_applied_already_is_a_duplicate_that_changes_nothing() {
    let sim = Sim::new();
    // A typing.started is remembered when it starts a lease: replayed after the lease lapsed,
    // it would start another (typing shown in Kommo that nobody types).
    let typing = client_typing("typing.started", "conv-1", None);
    assert_eq!(sim.chat_event_with_id("msg_once", &typing).await.status(), 200);
    let stopped = client_typing("typing.stopped", "conv-1", None);
    assert_eq!(sim.chat_event_with_id("msg_stop", &stopped).await.status(), 200);
    let message = support::client_message("conv-1", "chat-once");
    assert_eq!(sim.chat_event_with_id("msg_message", &message).await.status(), 200);
    sim.advance_to(support::T0 + 240_000).await;
    let (items, kommo_calls, pending) = (sim.store.item_count(), sim.kommo.calls().len(), sim.timers.pending().len());
    for (webhook_id, body) in [("msg_once", &typing), ("msg_message", &message)] {
        let replayed = sim.chat_event_with_id(webhook_id, body).await;
        assert_eq!(replayed.status(), 200, "{webhook_id}");
        assert_eq!(Sim::json(&replayed), serde_json::json!({"accepted": true, "duplicate": true}), "{webhook_id}");
    }
    assert_eq!(
        (sim.store.item_count(), sim.kommo.calls().len(), sim.timers.pending().len()),
        (items, kommo_calls, pending),
        "a duplicate changes nothing"
    );

    // A status naming the chat service's id of a message whose relay it has not yet answered
    // fails (404); the retry under the same id, once the relay is recorded, is handled.
    let status = format!(
        r#"{{"type":"message.status","scope_id":"{}","msgid":"chat-kommo-late","status":"delivered"}}"#,
        support::SCOPE
    );
    assert_eq!(sim.chat_event_with_id("msg_retry", &status).await.status(), 404);
    assert_eq!(sim.kommo_webhook(&support::manager_message("conv-1", "manager-1", "kommo-late")).await.status(), 200);
    sim.advance_to(support::T0 + 250_000).await;
    assert_eq!(sim.chat_event_with_id("msg_retry", &status).await.status(), 200);
    sim.advance_to(support::T0 + 251_000).await;
    assert!(support::kommo_statuses(&sim).iter().any(|(msgid, status, _)| msgid == "kommo-late" && *status == 1));
}

/// A delivery that stopped half-way (its process killed after it held the `webhook-id`) is
/// applied by the sender's retry once its hold lapses; a retry while it may still run is 503
/// with `Retry-After`, so the two never apply the event side by side.
#[tokio::test]
async fn a_delivery_killed_half_way_is_applied_by_the_retry() {
    use shared::ports::store::{DedupeKeys, KeyClaim};
    let sim = Sim::new();
    let claimed = sim.store.claim(support::SCOPE, "webhook-id#msg_killed", support::T0, 15_000).await.unwrap();
    assert!(matches!(claimed, KeyClaim::Claimed { .. }), "the killed delivery held the id");
    let message = support::client_message("conv-1", "chat-killed");
    let early = sim.chat_event_with_id("msg_killed", &message).await;
    assert_eq!(early.status(), 503);
    assert_eq!(Sim::json(&early)["error"]["code"], "delivery_in_progress");
    assert_eq!(early.headers()["retry-after"], "15");
    sim.advance_to(support::T0 + 15_000).await;
    let retried = sim.chat_event_with_id("msg_killed", &message).await;
    assert_eq!(retried.status(), 200);
    assert_eq!(Sim::json(&retried), serde_json::json!({"accepted": true}));
    sim.advance_to(support::T0 + 20_000).await;
    let imported = sim.kommo.calls().iter().filter(|c| matches!(c.call, shared::testing::KommoCall::Import(_))).count();
    assert_eq!(imported, 1, "imported once, by the retry");
    assert_eq!(Sim::json(&sim.chat_event_with_id("msg_killed", &message).await)["duplicate"], true);
}

/// Presence signals and a `typing.started` within a live lease are not remembered (one write
/// spared on each; `shared::rules::replay`): a replay is answered 200 and can only re-assert
/// what the signal said, for no longer than its own window or lease.
#[tokio::test]
async fn a_replayed_presence_or_typing_signal_only_re_asserts_itself() {
    let sim = Sim::new();
    let heartbeat = support::presence_event("presence.heartbeat", "phone");
    assert_eq!(sim.chat_event_with_id("hb_once", &heartbeat).await.status(), 200);
    let typing = client_typing("typing.started", "conv-1", None);
    assert_eq!(sim.chat_event_with_id("typing_1", &typing).await.status(), 200);
    sim.advance_to(support::T0 + 2_000).await;
    let (items, pending) = (sim.store.item_count(), sim.timers.pending().len());
    assert_eq!(sim.chat_event_with_id("typing_1", &typing).await.status(), 200, "within the lease: not remembered");
    assert_eq!(sim.chat_event_with_id("hb_once", &heartbeat).await.status(), 200, "presence: not remembered");
    assert_eq!((sim.store.item_count(), sim.timers.pending().len()), (items, pending), "no new lease, window or timer");
    // The typing lease runs its replayed ttl from now and then ends: Kommo is shown the typing
    // no longer than the client's own next signal would have kept it.
    let shown_before = sim.kommo.calls().len();
    sim.advance_to(support::T0 + 60_000).await;
    let shown = sim.kommo.calls().len() - shown_before;
    assert!(shown <= 2, "at most the refreshes of one 6 s ttl: {shown}");
    assert_eq!(
        Sim::json(&sim.ui("GET", "/kommo/ui/conversations/conv-1/presence", Some(sim.token(42)), "").await)["client"]["typing"],
        false
    );
}

#[tokio::test]
async fn ids_at_their_limit_are_served_in_memory() {
    ids_at_their_limit_are_served(Sim::new()).await;
}
#[tokio::test]
async fn a_replay_at_the_edge_of_the_window_changes_nothing_in_memory() {
    a_replay_at_the_edge_of_the_window_changes_nothing(Sim::new()).await;
}
