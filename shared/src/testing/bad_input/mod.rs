//! Bad input across every route, on any store: each request gets a 4xx with a JSON error, and
//! nothing is stored, sent or scheduled. `shared/tests/bad_input.rs` runs these in memory,
//! `tests/suites/bad_input.rs` on the DynamoDB-compatible server.

mod cases;

use bytes::Bytes;

use super::CountItems;
use super::sim::*;
use crate::app::routes::EntryPoint;
use crate::ports::store::Store;
use crate::rules::id_checks::{MAX_ID_BYTES, MAX_PATH_ID_BYTES};
use crate::time::Clock;

pub async fn every_malformed_request_gets_a_json_4xx_and_changes_nothing<S: Store + CountItems + 'static>(sim: Sim<S>) {
    let cases = cases::cases(&sim);
    assert!(cases.len() >= 60, "{} cases", cases.len());
    println!("{} malformed requests", cases.len());
    for case in cases {
        let response = sim.bridge.handle(case.entry, case.request).await;
        assert_eq!(
            response.status().as_u16(),
            case.status,
            "{}: {:?}",
            case.name,
            String::from_utf8_lossy(response.body())
        );
        let body: serde_json::Value =
            serde_json::from_slice(response.body()).unwrap_or_else(|_| panic!("{}: not JSON", case.name));
        let code = body["error"]["code"].as_str().unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!code.is_empty() && !message.is_empty(), "{}: {body}", case.name);
        // A signed chat event refused after a store lookup (an unknown msgid) has had its
        // webhook-id remembered and forgotten again: writes, but nothing kept.
        assert_eq!(sim.store.count_items().await, 0, "{}: nothing stored", case.name);
    }
    sim.advance_to(T0 + 600_000).await;
    assert_eq!(sim.store.count_items().await, 0, "nothing stored");
    assert!(sim.kommo.calls().is_empty(), "nothing sent to Kommo");
    assert!(sim.chat.events().is_empty(), "nothing sent to the chat service");
    assert!(sim.timers.pending().is_empty(), "nothing scheduled");
}

/// The longest ids accepted are served on both stores: every key they become part of fits
/// DynamoDB's limits (partition key 2,048 bytes, sort key 1,024), so the largest request the
/// id discipline lets through is never a 500 there.
pub async fn ids_at_their_limit_are_served<S: Store + 'static>(sim: Sim<S>) {
    let id = |tag: char| format!("{tag}{}", "é".repeat((MAX_ID_BYTES - 1) / 2)); // 255 bytes
    let (conversation, client, msgid, device) = (id('c'), id('u'), id('m'), id('d'));
    assert!(conversation.len() <= MAX_ID_BYTES && conversation.len() > MAX_ID_BYTES - 2);
    let kommo_msgid = "k".repeat(MAX_PATH_ID_BYTES);
    let (manager, kommo_chat) = (id('a'), id('k'));
    let now = sim.clock.now_s();
    let chat_events = [
        format!(
            r#"{{"type":"typing.started","scope_id":"{SCOPE}","conversation_id":"{conversation}","user_id":"{client}"}}"#
        ),
        format!(
            r#"{{"type":"message.created","scope_id":"{SCOPE}","conversation_id":"{conversation}","msgid":"{msgid}","user":{{"id":"{client}"}},"message":{{"type":"text","text":"hi"}},"timestamp_ms":1,"conversation_ref_id":"{conversation}","reply_to":{{"reference":"{kommo_msgid}"}}}}"#
        ),
        format!(
            r#"{{"type":"presence.online","scope_id":"{SCOPE}","conversation_id":"{conversation}","user_id":"{client}","device_id":"{device}"}}"#
        ),
        format!(
            r#"{{"type":"message.edited","scope_id":"{SCOPE}","conversation_id":"{conversation}","msgid":"{msgid}","message":{{"type":"text","text":"hi!"}}}}"#
        ),
        format!(
            r#"{{"type":"reaction.added","scope_id":"{SCOPE}","conversation_id":"{conversation}","user_id":"{client}","emoji":"👍","msgid":"{msgid}"}}"#
        ),
    ];
    let webhooks = [
        format!(
            r#"{{"account_id":"acc-1","time":{now},"action":{{"typing":{{"user":{{"id":"{manager}"}},"conversation":{{"id":"{kommo_chat}","client_id":"{conversation}"}},"expired_at":{}}}}}}}"#,
            now + 5
        ),
        format!(
            r#"{{"account_id":"acc-1","time":{now},"message":{{"receiver":{{"id":"{client}","client_id":"{client}"}},"sender":{{"id":"{manager}"}},"conversation":{{"id":"{kommo_chat}","client_id":"{conversation}"}},"timestamp":{now},"message":{{"id":"{kommo_msgid}","type":"text","text":"hello"}}}}}}"#
        ),
    ];
    for body in &chat_events {
        let response = sim.chat_event(body).await;
        assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(response.body()));
    }
    for body in &webhooks {
        let response = sim.kommo_webhook(body).await;
        assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(response.body()));
    }
    let status = status_event(&kommo_msgid, "read", "");
    assert_eq!(sim.chat_event(&status).await.status(), 200);
    let viewing = sim
        .ui(
            "POST",
            &format!("/kommo/ui/conversations/{conversation}/presence"),
            Some(sim.token(42)),
            r#"{"state":"viewing"}"#,
        )
        .await;
    assert_eq!(viewing.status(), 200, "{}", String::from_utf8_lossy(viewing.body()));
    let read = sim.ui("POST", &format!("/kommo/ui/conversations/{kommo_chat}/read"), Some(sim.token(42)), "").await;
    assert_eq!(read.status(), 200, "{}", String::from_utf8_lossy(read.body()));
    sim.advance_to(T0 + 120_000).await;
    let sent = sim.chat_events();
    assert!(sent.contains(&"message"), "the manager's message relayed: {sent:?}");
    assert!(sim.kommo.calls().iter().any(|c| matches!(c.call, super::KommoCall::Import(_))), "imported");
}

/// A request signed ahead of the clock verifies until its timestamp plus the tolerance, read in
/// whole seconds: its `webhook-id` is remembered to that millisecond, so a replay at the edge
/// (here +600.49 s and +600.999 s) is a duplicate that changes nothing, and past it the
/// signature itself is too old.
pub async fn a_replay_at_the_edge_of_the_window_changes_nothing<S: Store + CountItems + 'static>(sim: Sim<S>) {
    use crate::signing::standard_webhooks::TOLERANCE_S;
    let body = client_typing("typing.started", "conv-edge", None);
    let signed_at = sim.clock.now_s() + TOLERANCE_S;
    let send = || {
        let request = http::Request::post("/chat/events")
            .header("webhook-id", "msg_edge")
            .header("webhook-timestamp", signed_at.to_string())
            .header("webhook-signature", sim.chat_secret().sign("msg_edge", signed_at, body.as_bytes()))
            .body(Bytes::from(body.clone()))
            .unwrap();
        sim.bridge.handle(EntryPoint::ChatCallback, request)
    };
    assert_eq!(send().await.status(), 200);
    // Stopped, so that the replay finds no lease at all and would start one.
    let stopped = client_typing("typing.stopped", "conv-edge", None);
    assert_eq!(sim.chat_event_with_id("msg_edge_stop", &stopped).await.status(), 200);
    for (at_ms, expected) in [(600_490, 200), (600_999, 200), (601_000, 401)] {
        sim.advance_to(T0 + at_ms).await;
        let before = (sim.store.count_items().await, sim.kommo.calls().len(), sim.timers.pending().len());
        let response = send().await;
        assert_eq!(response.status(), expected, "at +{at_ms} ms: {}", String::from_utf8_lossy(response.body()));
        let after = (sim.store.count_items().await, sim.kommo.calls().len(), sim.timers.pending().len());
        assert_eq!(after, before, "at +{at_ms} ms: no second typing lease, nothing changed");
    }
}
