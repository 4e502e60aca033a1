//! Messages and statuses end to end over real HTTP, with the fakes failing on cue: the dev
//! server between the fake amojo and the fake chat service (retries shortened by configuration).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::E2e;

const FAST_RETRIES: [(&str, &str); 2] = [("RETRY_BASE_DELAY_MS", "50"), ("RETRY_MAX_ATTEMPTS", "4")];

fn manager_message(kommo_msgid: &str) -> String {
    json!({"account_id": "acc-1", "time": 1_700_000_000,
           "message": {"receiver": {"id": "r-1", "client_id": "client-1"}, "sender": {"id": "manager-1", "name": "Lama"},
                       "conversation": {"id": "kommo-chat-1", "client_id": "conv-1"}, "timestamp": 1_700_000_000,
                       "message": {"id": kommo_msgid, "type": "picture", "media": "https://example.com/p.png", "text": "see"}}})
    .to_string()
}

fn status(scope: &str, reference: &str, status: &str) -> String {
    json!({"type": "message.status", "scope_id": scope, "reference": reference, "status": status}).to_string()
}

fn of_type<'a>(calls: &'a [Value], kind: &str) -> Vec<&'a Value> {
    calls.iter().filter(|c| c["body"]["type"] == kind).collect()
}

fn accepted(calls: &[Value]) -> usize {
    calls.iter().filter(|c| c["signature_ok"] == true && c["body"]["type"] == "message.created").count()
}

#[tokio::test]
async fn a_manager_message_reaches_the_chat_service_and_its_status_reaches_kommo() {
    let e2e = E2e::start(&FAST_RETRIES);
    e2e.kommo_webhook_ok(manager_message("kommo-1")).await;
    let calls = e2e.wait_for(&e2e.chat, Duration::from_secs(5), |calls| accepted(calls) == 1).await;
    let created = of_type(&calls, "message.created");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["signature_ok"], true);
    assert_eq!(created[0]["body"]["reference"], "kommo-1");
    assert_eq!(created[0]["body"]["message"]["media"], "https://example.com/p.png", "relayed with its fields");

    e2e.chat_event_ok(status(&e2e.scope, "kommo-1", "delivered")).await;
    let calls = e2e.wait_for(&e2e.amojo, Duration::from_secs(5), |calls| !calls.is_empty()).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["signature_ok"], true);
    assert_eq!(calls[0]["path"], format!("/v2/origin/custom/{}/kommo-1/delivery_status", e2e.scope));
    assert_eq!(calls[0]["body"], json!({"msgid": "kommo-1", "delivery_status": 1}));
}

#[tokio::test]
async fn a_chat_service_failing_three_times_gets_the_message_once_and_kommo_hears_nothing() {
    let e2e = E2e::start(&FAST_RETRIES);
    e2e.chat.script(&e2e.scope, json!([{"status": 500}, {"status": 500}, {"status": 500}])).await;
    e2e.kommo_webhook_ok(manager_message("kommo-1")).await;
    let calls = e2e.wait_for(&e2e.chat, Duration::from_secs(10), |calls| calls.len() >= 4).await;
    assert_eq!(calls.len(), 4, "three failures and one success");
    assert!(calls.iter().all(|c| c["body"]["reference"] == "kommo-1"));
    let ids: std::collections::HashSet<_> = calls.iter().map(|c| c["headers"]["webhook-id"].clone()).collect();
    assert_eq!(ids.len(), 1, "one webhook-id across retries, so the chat service can drop duplicates");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(e2e.amojo.calls(&e2e.scope).await.is_empty());
}

#[tokio::test]
async fn a_chat_service_that_always_fails_gets_903_reported_to_kommo_once() {
    let e2e = E2e::start(&FAST_RETRIES);
    e2e.chat
        .script(
            &e2e.scope,
            json!([{"status": 500}, {"status": 502}, {"status": 503}, {"status": 500}, {"status": 500}]),
        )
        .await;
    e2e.kommo_webhook_ok(manager_message("kommo-1")).await;
    e2e.wait_for(&e2e.amojo, Duration::from_secs(10), |calls| !calls.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // room for a wrong second report
    let calls = e2e.amojo.calls(&e2e.scope).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0]["body"],
        json!({"msgid": "kommo-1", "delivery_status": -1, "error_code": 903,
               "error": "The message could not be delivered because of an internal error"})
    );
    assert_eq!(e2e.chat.calls(&e2e.scope).await.len(), 4, "RETRY_MAX_ATTEMPTS attempts");
}

#[tokio::test]
async fn a_refusal_with_a_reason_becomes_a_905_with_that_text() {
    let e2e = E2e::start(&FAST_RETRIES);
    let refusal = json!({"error": {"code": "blocked", "message": "The client blocked this business"}});
    e2e.chat.script(&e2e.scope, json!([{"status": 422, "body": refusal}])).await;
    e2e.kommo_webhook_ok(manager_message("kommo-1")).await;
    let calls = e2e.wait_for(&e2e.amojo, Duration::from_secs(5), |calls| !calls.is_empty()).await;
    assert_eq!(
        calls[0]["body"],
        json!({"msgid": "kommo-1", "delivery_status": -1, "error_code": 905, "error": "The client blocked this business"})
    );
}

#[tokio::test]
async fn amojo_rate_limiting_twice_delivers_the_status_on_the_third_re_signed_attempt() {
    let e2e = E2e::start(&FAST_RETRIES);
    e2e.amojo
        .script(
            &e2e.scope,
            json!([{"status": 429, "headers": {"Retry-After": "1"}}, {"status": 429, "headers": {"Retry-After": "1"}}]),
        )
        .await;
    e2e.chat_event_ok(status(&e2e.scope, "kommo-9", "read")).await;
    let calls = e2e.wait_for(&e2e.amojo, Duration::from_secs(8), |calls| calls.len() >= 3).await;
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c["signature_ok"] == true));
    assert!(
        calls[2]["received_at"].as_f64().unwrap() - calls[0]["received_at"].as_f64().unwrap() >= 2.0,
        "Retry-After honoured"
    );
    let dates: std::collections::HashSet<_> = calls.iter().map(|c| c["headers"]["date"].clone()).collect();
    assert_eq!(dates.len(), 3, "each attempt signed anew");
}

#[tokio::test]
async fn the_webhook_is_answered_at_once_while_the_chat_service_takes_10_s() {
    let e2e = E2e::start(&FAST_RETRIES);
    e2e.chat.script(&e2e.scope, json!([{"delay_ms": 10_000}])).await;
    let started = Instant::now();
    let response = e2e.kommo_webhook(manager_message("kommo-1")).await;
    let answered = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(answered < Duration::from_millis(300), "answered in {answered:?}");
}

#[tokio::test]
async fn a_client_message_is_imported_into_a_new_chat_with_valid_signatures() {
    let e2e = E2e::start(&FAST_RETRIES);
    let message = json!({"type": "message.created", "scope_id": e2e.scope, "conversation_id": "conv-7", "msgid": "chat-1",
                         "user": {"id": "client-7", "name": "Adam"}, "message": {"type": "text", "text": "Hello"},
                         "timestamp_ms": 1_700_000_000_000i64});
    e2e.chat_event_ok(message.to_string()).await;
    e2e.chat_event_ok(message.to_string()).await;
    e2e.wait_for(&e2e.amojo, Duration::from_secs(5), |calls| calls.len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // room for a wrong second import
    let calls = e2e.amojo.calls(&e2e.scope).await;
    let paths: Vec<String> = calls.iter().map(|c| c["path"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        paths,
        vec![format!("/v2/origin/custom/{}/chats", e2e.scope), format!("/v2/origin/custom/{}", e2e.scope)]
    );
    assert!(calls.iter().all(|c| c["signature_ok"] == true));
    assert_eq!(calls[1]["body"]["payload"]["msgid"], "chat-1");
    assert!(calls[1]["body"]["payload"].get("receiver").is_none());
}

#[tokio::test]
async fn a_client_without_a_name_reaches_kommo_under_a_readable_one() {
    // Kommo refuses a chat or an import without a name, and so does the fake amojo: the bridge
    // names the client by their phone, else their email, else "Client" and their id.
    let e2e = E2e::start(&FAST_RETRIES);
    for (conversation, msgid, user, shown) in [
        ("conv-p", "chat-p", json!({"id": "client-p", "phone": "+15550100"}), "+15550100"),
        ("conv-x", "chat-x", json!({"id": "client-x"}), "Client client-x"),
    ] {
        let message = json!({"type": "message.created", "scope_id": e2e.scope, "conversation_id": conversation,
                             "msgid": msgid, "user": user, "message": {"type": "text", "text": "Hello"},
                             "timestamp_ms": 1_700_000_000_000i64});
        e2e.chat_event_ok(message.to_string()).await;
        let imported =
            |calls: &[Value]| calls.iter().any(|c| c["body"]["payload"]["msgid"] == msgid && c["reply_status"] == 200);
        let calls = e2e.wait_for(&e2e.amojo, Duration::from_secs(5), imported).await;
        let chat = calls.iter().find(|c| c["body"]["conversation_id"] == conversation).expect("the chat was created");
        assert_eq!((chat["reply_status"].clone(), chat["body"]["user"]["name"].clone()), (json!(200), json!(shown)));
        let import = calls.iter().find(|c| c["body"]["payload"]["msgid"] == msgid).unwrap();
        assert_eq!(import["body"]["payload"]["sender"]["name"], shown);
    }
}
