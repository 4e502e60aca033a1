//! Interoperability of the bridge's Standard Webhooks code with an independent implementation:
//! the `standardwebhooks` package from PyPI, inside the fake chat service.

mod support;

use std::sync::Arc;

use shared::adapters::chat_http::HttpChatService;
use shared::models::chat::{BridgeEvent, ManagerRef};
use shared::ports::chat::ChatService;
use shared::rules::retry::RetryPolicy;
use shared::signing::standard_webhooks::{SignatureHeaders, WebhookSecret};
use shared::time::{Clock, SystemClock};
use support::{Fake, unique};

#[tokio::test]
async fn what_the_bridge_signs_the_python_library_verifies() {
    let chat = Fake::chat_service();
    let scope = unique("chan_");
    let url = format!("{}/events", chat.url);
    let secret = WebhookSecret::parse(&chat.secret).unwrap();
    let client = HttpChatService::new(
        shared::adapters::outbound::http_client(std::time::Duration::from_secs(2)),
        &url,
        secret,
        Arc::new(SystemClock),
    );
    let event = BridgeEvent::TypingStarted {
        scope_id: scope.clone(),
        conversation_id: "conv-1".into(),
        manager: ManagerRef::by_amojo_id("manager-1", None),
        expires_at: 1_700_000_005,
    };
    client.deliver(&event, "msg_interop_1", RetryPolicy::EPHEMERAL).await.unwrap();
    let calls = chat.calls(&scope).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["signature_ok"], true, "{}", calls[0]);
    assert_eq!(calls[0]["body"]["type"], "typing.started");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_python_library() {
    let chat = Fake::chat_service();
    let scope = unique("chan_");
    let wrong = WebhookSecret::from_key(vec![9; 32]);
    let client =
        HttpChatService::new(reqwest::Client::new(), &format!("{}/events", chat.url), wrong, Arc::new(SystemClock));
    let event = BridgeEvent::TypingStopped {
        scope_id: scope.clone(),
        conversation_id: "conv-1".into(),
        manager: ManagerRef::by_amojo_id("manager-1", None),
    };
    let error = client.deliver(&event, "msg_interop_2", RetryPolicy::EPHEMERAL).await.unwrap_err();
    assert!(matches!(error, shared::ports::chat::ChatError::Rejected { status: 401, .. }), "{error:?}");
    assert_eq!(chat.calls(&scope).await[0]["signature_ok"], false);
}

#[tokio::test]
async fn what_the_python_library_signs_the_bridge_verifies() {
    let chat = Fake::chat_service();
    let secret = WebhookSecret::parse(&chat.secret).unwrap();
    let now = SystemClock.now_s();
    for payload in [r#"{"type":"typing.started","scope_id":"s","conversation_id":"c","user_id":"u"}"#, "", "ünïcode ✓"]
    {
        let signed = chat
            .admin_post("sign", serde_json::json!({"msg_id": "msg_from_python", "timestamp": now, "payload": payload}))
            .await;
        let headers = SignatureHeaders {
            id: signed["webhook-id"].as_str(),
            timestamp: signed["webhook-timestamp"].as_str(),
            signature: signed["webhook-signature"].as_str(),
        };
        assert_eq!(secret.verify(&headers, payload.as_bytes(), now), Ok(()), "{signed}");
        let tampered = format!("{payload} ");
        assert!(secret.verify(&headers, tampered.as_bytes(), now).is_err());
    }
}
