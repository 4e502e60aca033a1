//! Presence and the Kommo UI routes end to end over real HTTP: the dev server, a browser-like
//! caller with one-time tokens and a Kommo origin, and the fake chat service.

mod support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::E2e;

const UI_PRESENCE: &str = "/kommo/ui/conversations/conv-1/presence";

fn presence_pushes(calls: &[Value]) -> Vec<(String, bool)> {
    calls
        .iter()
        .filter(|c| c["body"]["type"] == "presence.changed" && c["signature_ok"] == true)
        .map(|c| (c["body"]["manager"]["id"].as_str().unwrap().to_owned(), c["body"]["online"].as_bool().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_manager_viewing_is_pushed_pulled_and_pushed_offline_after_leaving() {
    let e2e = E2e::start(&[("PRESENCE_GRACE_S", "1")]);
    let response = e2e.ui(Method::POST, UI_PRESENCE, 42, r#"{"state":"viewing"}"#).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "https://acme.kommo.com");
    let calls = e2e.wait_for(&e2e.chat, Duration::from_secs(5), |calls| !presence_pushes(calls).is_empty()).await;
    assert_eq!(presence_pushes(&calls), vec![("42".to_owned(), true)]);

    let pulled = e2e.chat_get(&format!("/chat/presence?scope_id={}&conversation_id=conv-1", e2e.scope)).await;
    assert_eq!(pulled.status(), 200);
    let pulled: Value = pulled.json().await.unwrap();
    assert_eq!(
        pulled["managers"].as_array().unwrap().iter().map(|m| m["id"].clone()).collect::<Vec<_>>(),
        vec![json!("42")]
    );
    let unsigned =
        reqwest::get(format!("{}/chat/presence?scope_id={}&conversation_id=conv-1", e2e.server.base, e2e.scope)).await;
    assert_eq!(unsigned.unwrap().status(), 401);

    assert_eq!(e2e.ui(Method::POST, UI_PRESENCE, 42, r#"{"state":"left"}"#).await.status(), 200);
    let calls = e2e.wait_for(&e2e.chat, Duration::from_secs(5), |calls| presence_pushes(calls).len() == 2).await;
    assert_eq!(presence_pushes(&calls), vec![("42".to_owned(), true), ("42".to_owned(), false)]);
}

#[tokio::test]
async fn the_widget_reads_the_clients_presence_across_origins() {
    let e2e = E2e::start(&[]);
    let online =
        json!({"type": "presence.online", "scope_id": e2e.scope, "conversation_id": "conv-1", "user_id": "client-1"});
    e2e.chat_event_ok(online.to_string()).await;
    let response = e2e.ui(Method::GET, UI_PRESENCE, 42, "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["vary"], "Origin");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["client"]["online"], true);

    let preflight = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}{UI_PRESENCE}", e2e.server.base))
        .header("origin", "https://acme.kommo.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://acme.kommo.com");
}
