//! Typing end to end over real HTTP: the dev server (in-process timers) between the fake amojo
//! and the fake chat service, each verifying the bridge's signatures independently.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use shared::rules::typing::MANAGER_TYPING_GRACE_MS;
use shared::time::{Clock, SystemClock};
use support::E2e;

fn received_ms(call: &Value) -> i64 {
    (call["received_at"].as_f64().unwrap() * 1000.0) as i64
}

#[tokio::test]
async fn a_hundred_manager_leases_expiring_together_each_stop_once_on_time() {
    let setup = E2e::start(&[]);
    let expired_at = SystemClock.now_s() + 3;
    let webhooks = (0..100).flat_map(|i| {
        let body = format!(
            r#"{{"account_id":"acc-1","time":{},"action":{{"typing":{{"user":{{"id":"manager-{i}"}},"conversation":{{"id":"k-{i}","client_id":"conv-{i}"}},"expired_at":{expired_at}}}}}}}"#,
            expired_at - 5
        );
        // Each webhook twice: a duplicate must change nothing.
        [body.clone(), body]
    });
    futures_util::future::join_all(webhooks.map(|body| setup.kommo_webhook_ok(body))).await;
    let expiry_ms = expired_at * 1000;
    tokio::time::sleep(Duration::from_millis((expiry_ms - SystemClock.now_ms()).max(0) as u64 + 3000)).await;

    let calls = setup.chat.calls(&setup.scope).await;
    assert!(calls.iter().all(|c| c["signature_ok"] == true));
    let mut per_conversation: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for call in &calls {
        let conversation = call["body"]["conversation_id"].as_str().unwrap().to_owned();
        let kind = call["body"]["type"].as_str().unwrap().to_owned();
        per_conversation.entry(conversation).or_default().push((kind, received_ms(call)));
    }
    assert_eq!(per_conversation.len(), 100);
    let mut lateness: Vec<i64> = Vec::new();
    for (conversation, events) in &per_conversation {
        let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
        assert_eq!(kinds, ["typing.started", "typing.stopped"], "{conversation}");
        let stopped_at = events[1].1;
        assert!(stopped_at >= expiry_ms + MANAGER_TYPING_GRACE_MS, "{conversation}: stopped before the lease ended");
        lateness.push(stopped_at - expiry_ms);
    }
    lateness.sort_unstable();
    let p99 = lateness[98];
    println!("typing.stopped after Kommo's expired_at: p50 {} ms, p99 {p99} ms, max {} ms", lateness[49], lateness[99]);
    assert!(p99 <= 1500, "p99 {p99} ms after expiry");
}

#[tokio::test]
async fn a_client_typing_on_every_keystroke_reaches_kommo_every_4_s_and_never_after_stopping() {
    let setup = E2e::start(&[]);
    let event = |kind: &str| {
        format!(r#"{{"type":"{kind}","scope_id":"{}","conversation_id":"conv-1","user_id":"client-1"}}"#, setup.scope)
    };
    // Kommo shows typing only in a chat it has: the client's first message makes it.
    let first = format!(
        r#"{{"type":"message.created","scope_id":"{}","conversation_id":"conv-1","msgid":"m-1","user":{{"id":"client-1"}},"message":{{"type":"text","text":"hi"}},"timestamp_ms":1700000000000}}"#,
        setup.scope
    );
    setup.chat_event_ok(first).await;
    let imported = |calls: &[serde_json::Value]| calls.iter().any(|c| c["body"]["event_type"] == "new_message");
    setup.wait_for(&setup.amojo, Duration::from_secs(5), imported).await;
    let before = setup.amojo.calls(&setup.scope).await.len();
    let started = SystemClock.now_ms();
    while SystemClock.now_ms() - started < 9000 {
        setup.chat_event_ok(event("typing.started")).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    setup.chat_event_ok(event("typing.stopped")).await;
    let stopped = SystemClock.now_ms();
    tokio::time::sleep(Duration::from_secs(6)).await;

    let calls = setup.amojo.calls(&setup.scope).await.split_off(before);
    let times: Vec<i64> = calls.iter().map(received_ms).collect();
    assert!(calls.iter().all(|c| c["signature_ok"] == true && c["path"].as_str().unwrap().ends_with("/typing")));
    assert_eq!(times.len(), 3, "at 0, 4 and 8 s: {times:?}");
    assert!(times.iter().all(|at| *at <= stopped), "no typing call after typing.stopped");
    for pair in times.windows(2) {
        assert!((3000..=5000).contains(&(pair[1] - pair[0])), "{times:?}");
    }
}
