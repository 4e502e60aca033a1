//! Requests whose queued form would not fit one queue message, and peers' error texts in the
//! log, end to end over real HTTP: the dev server between the fake amojo and the fake chat
//! service, on the in-memory store and on the DynamoDB-compatible server.
//!
//! serde_json writes a number back in its own form, so `1e15` (4 bytes as sent) is queued as
//! `1000000000000000.0` (18): a request well under the body limit can queue far over SQS's
//! 256 KiB. Such a request is refused with 413 before it is accepted, and nothing is stored or
//! queued; a manager's message so refused is reported failed to Kommo at once (905 with its
//! text), since Kommo never sends a webhook again.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{E2e, Fake};

/// The dev server on the in-memory store, or on a fresh table of the DynamoDB-compatible
/// server (whose name is returned, to count what was stored).
fn start(on_dynamodb: bool, name: &str) -> (E2e, Option<String>) {
    let table = on_dynamodb.then(|| support::unique(name));
    let mut env: Vec<(&str, String)> = vec![("RETRY_BASE_DELAY_MS", "50".into()), ("RETRY_MAX_ATTEMPTS", "3".into())];
    if let Some(table) = &table {
        env.push(("DYNAMODB_ENDPOINT", support::required_env("TEST_DYNAMODB_ENDPOINT")));
        env.push(("TABLE_NAME", table.clone()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    (E2e::start(&env), table)
}

/// How many items the table holds (the dev server creates it on start).
async fn items_stored(table: &str) -> usize {
    let client = shared::adapters::dynamo::client_from_env(Some(&support::required_env("TEST_DYNAMODB_ENDPOINT")));
    shared::adapters::dynamo::DynamoStore::new(client, table).item_count().await.expect("the table is read")
}

/// `count` numbers written as `1e15`, 5 bytes each as sent and 19 as queued.
fn numbers(count: usize) -> Value {
    serde_json::from_str(&format!("[{}]", vec!["1e15"; count].join(","))).unwrap()
}

fn client_message(scope: &str, msgid: &str, metrics: Value) -> String {
    let body = json!({"type": "message.created", "scope_id": scope, "conversation_id": "conv-big", "msgid": msgid,
        "user": {"id": "client-1", "name": "Eve"}, "timestamp_ms": 1_700_000_000_000i64,
        "message": {"type": "text", "text": "hi", "metrics": metrics}});
    // As the chat service sends it: the numbers as it wrote them, not as serde_json would.
    body.to_string().replace("1000000000000000.0", "1e15")
}

fn manager_message(kommo_msgid: &str, metrics: Value) -> String {
    let body = json!({"account_id": "acc-1", "time": 1_700_000_000, "message": {
        "receiver": {"id": "r-1", "client_id": "client-1"}, "sender": {"id": "manager-1", "name": "Ann"},
        "conversation": {"id": "kommo-chat-1", "client_id": "conv-1"}, "timestamp": 1_700_000_000,
        "message": {"id": kommo_msgid, "type": "text", "text": "hello", "metrics": metrics}}});
    body.to_string().replace("1000000000000000.0", "1e15")
}

async fn refused_as_too_large(response: reqwest::Response) {
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "too_large_to_queue", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("too large to queue") && message.contains("1e15"), "{body}");
}

async fn an_80_kb_chat_message_of_numbers_is_refused_whole_before_acceptance(on_dynamodb: bool) {
    let (e2e, table) = start(on_dynamodb, "too-large-chat-");
    // GIVEN a client's message whose extra field holds 16,000 numbers written `1e15`: 80 KB as
    // sent, over 300 KB queued.
    let big = client_message(&e2e.scope, "m-big", numbers(16_000));
    assert!((80_000..90_000).contains(&big.len()), "{} bytes", big.len());
    // WHEN the chat service sends it THEN it is refused with a clear 413...
    refused_as_too_large(e2e.chat_event(big).await).await;
    // ...and nothing was stored (its webhook-id and record included) nor queued: Kommo hears
    // nothing, the chat service is told nothing.
    if let Some(table) = &table {
        assert_eq!(items_stored(table).await, 0, "nothing stored");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(e2e.amojo.calls(&e2e.scope).await, Vec::<Value>::new(), "nothing reached Kommo");
    assert_eq!(e2e.chat.calls(&e2e.scope).await, Vec::<Value>::new(), "no outcome told");

    // The same message with a tenth of the numbers fits: accepted and imported, numbers kept.
    e2e.chat_event_ok(client_message(&e2e.scope, "m-big", numbers(1_600))).await;
    let calls = e2e
        .wait_for(&e2e.amojo, Duration::from_secs(10), |calls| {
            calls.iter().any(|c| c["body"]["payload"]["msgid"] == "m-big" && c["reply_status"] == 200)
        })
        .await;
    let imported: Vec<_> = calls.iter().filter(|c| c["body"]["payload"]["msgid"] == "m-big").collect();
    assert_eq!(imported.len(), 1, "{calls:?}");
    let metrics = &imported[0]["body"]["payload"]["message"]["metrics"];
    assert_eq!(metrics.as_array().map(Vec::len), Some(1_600), "relayed with its extra field");
    assert_eq!(metrics[0].as_f64(), Some(1e15));
}

#[tokio::test]
async fn an_80_kb_chat_message_of_numbers_is_refused_whole_before_acceptance_in_memory() {
    an_80_kb_chat_message_of_numbers_is_refused_whole_before_acceptance(false).await;
}

#[tokio::test]
async fn an_80_kb_chat_message_of_numbers_is_refused_whole_before_acceptance_on_dynamodb() {
    an_80_kb_chat_message_of_numbers_is_refused_whole_before_acceptance(true).await;
}

async fn a_manager_message_too_large_to_queue_is_refused_and_kommo_told_at_once(on_dynamodb: bool) {
    let (e2e, table) = start(on_dynamodb, "too-large-manager-");
    // GIVEN a manager's message of 200 KB (under the body limit) that would queue at over 750 KB.
    let big = manager_message("kommo-big-1", numbers(40_000));
    assert!(big.len() < shared::app::http::MAX_BODY_BYTES, "{} bytes", big.len());
    // WHEN Kommo sends it THEN the webhook answers 413...
    refused_as_too_large(e2e.kommo_webhook(big).await).await;
    // ...Kommo was told at once that it failed, with a text the manager reads...
    let calls = e2e.amojo.calls(&e2e.scope).await;
    let reports: Vec<_> =
        calls.iter().filter(|c| c["path"].as_str().unwrap_or("").ends_with("/delivery_status")).collect();
    assert_eq!(reports.len(), 1, "{calls:?}");
    assert_eq!(reports[0]["path"], format!("/v2/origin/custom/{}/kommo-big-1/delivery_status", e2e.scope));
    assert_eq!((reports[0]["signature_ok"].clone(), reports[0]["reply_status"].clone()), (json!(true), json!(200)));
    let report = &reports[0]["body"];
    assert_eq!((report["delivery_status"].clone(), report["error_code"].clone()), (json!(-1), json!(905)), "{report}");
    assert!(report["error"].as_str().unwrap_or_default().contains("too large"), "{report}");
    // ...and nothing was stored nor relayed.
    if let Some(table) = &table {
        assert_eq!(items_stored(table).await, 0, "nothing stored");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(e2e.chat.calls(&e2e.scope).await, Vec::<Value>::new(), "nothing relayed");

    // A manager's message that fits goes through as always.
    e2e.kommo_webhook_ok(manager_message("kommo-fits-1", numbers(100))).await;
    let calls = e2e.wait_for(&e2e.chat, Duration::from_secs(10), |calls| !calls.is_empty()).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["body"]["reference"], "kommo-fits-1");
    assert_eq!(calls[0]["body"]["message"]["metrics"].as_array().map(Vec::len), Some(100));
}

#[tokio::test]
async fn a_manager_message_too_large_to_queue_is_refused_and_kommo_told_at_once_in_memory() {
    a_manager_message_too_large_to_queue_is_refused_and_kommo_told_at_once(false).await;
}

#[tokio::test]
async fn a_manager_message_too_large_to_queue_is_refused_and_kommo_told_at_once_on_dynamodb() {
    a_manager_message_too_large_to_queue_is_refused_and_kommo_told_at_once(true).await;
}

/// amojo's refusal carries a newline (and an escape sequence) in its texts, as any peer's body
/// can: the dev server's log (tracing's text format, what Lambda writes unless the function's
/// log format is JSON) has one line for it, the texts escaped, and no line forged.
#[tokio::test]
async fn an_error_text_with_a_newline_stays_one_escaped_log_line() {
    let amojo = Fake::amojo();
    let chat = Fake::chat_service();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let channel = support::unique("chan");
    let scope = format!("{channel}_acc-1");
    let chat_url = format!("{}/events", chat.url);
    let env = [
        ("KOMMO_CHANNEL_ID", channel.as_str()),
        ("KOMMO_CHANNEL_SECRET", amojo.secret.as_str()),
        ("KOMMO_AMOJO_URL", amojo.url.as_str()),
        ("CHAT_SERVICE_URL", chat_url.as_str()),
        ("CHAT_SERVICE_SECRET", chat.secret.as_str()),
        ("KOMMO_INTEGRATION_SECRET", support::INTEGRATION_SECRET),
        ("KOMMO_ACCOUNTS", "1:acc-1"),
    ];
    let mut command = std::process::Command::new(support::workspace_binary("dev-server"));
    command.stderr(std::process::Stdio::piped());
    let collected = lines.clone();
    let sink: dev_server::LineSink = Arc::new(move |line: &str| collected.lock().unwrap().push(line.to_owned()));
    let server = dev_server::DevServerProcess::start(command, &env, sink, Duration::from_secs(20)).expect("starts");

    // GIVEN amojo refuses the chat's creation with texts that would each start a line of their own.
    let forged = "2026-01-01T00:00:00.000000Z  INFO request: all good";
    amojo
        .script(
            &scope,
            json!([{"status": 400, "match": "/chats", "body": {"error_code": 400,
                "error_type": format!("BAD\n{forged}"), "error_description": format!("no chat\r\n{forged}\u{1b}[2J")}}]),
        )
        .await;
    // WHEN a client's message is imported
    let secret = shared::signing::standard_webhooks::WebhookSecret::parse(&chat.secret).unwrap();
    let now = shared::time::Clock::now_s(&shared::time::SystemClock);
    let body = json!({"type": "message.created", "scope_id": scope, "conversation_id": "conv-log", "msgid": "m-log",
        "user": {"id": "client-1", "name": "Eve"}, "message": {"type": "text", "text": "hi"},
        "timestamp_ms": 1_700_000_000_000i64})
    .to_string();
    let answer = reqwest::Client::new()
        .post(format!("{}/chat/events", server.base))
        .header("webhook-id", "msg_log_1")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", secret.sign("msg_log_1", now, body.as_bytes()))
        .body(body)
        .send()
        .await
        .expect("the dev server answers");
    assert_eq!(answer.status(), 200);
    // THEN (once the chat service is told it failed) the refusal is logged on one line, escaped.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while chat.calls(&scope).await.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed = chat.calls(&scope).await;
    assert_eq!(failed.first().map(|c| c["body"]["type"].clone()), Some(json!("message.failed")), "{failed:?}");
    server.stop();
    let lines = lines.lock().unwrap().clone();
    let mentioning: Vec<_> = lines.iter().filter(|line| line.contains("all good")).collect();
    assert_eq!(mentioning.len(), 1, "one line carries the refusal: {lines:#?}");
    let line = mentioning[0];
    assert!(line.contains("client message not imported"), "{line}");
    assert!(line.contains(r"BAD\n2026-01-01") && line.contains(r"no chat\r\n2026-01-01"), "{line}");
    assert!(line.contains(r"\u{1b}[2J") && !line.contains("\u{1b}[2J"), "{line}");
    assert!(!lines.iter().any(|line| line.starts_with("2026-01-01")), "no forged line: {lines:#?}");
    // What the chat service reads of it is escaped the same way.
    let told = failed[0]["body"]["error"]["message"].as_str().unwrap_or_default();
    assert!(told.contains(r"no chat\r\n2026") && !told.contains('\n'), "{told}");
}
