//! The dev server as a newcomer and Kommo meet it: one command, no configuration needed,
//! real HTTP, and the error contract on every route.

mod support;

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::signing::{kommo_webhook, standard_webhooks::WebhookSecret};
use shared::time::{Clock, SystemClock};
use support::{DevServer, workspace_binary};

const CHANNEL_SECRET: &str = "5a44c5dff55f3c15a4cce8d7c4cc27e207c7e189";
const CHAT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SCOPE: &str = "chan-1_acc-1";

fn configured() -> DevServer {
    DevServer::start(&[
        ("KOMMO_CHANNEL_ID", "chan-1"),
        ("KOMMO_CHANNEL_SECRET", CHANNEL_SECRET),
        ("CHAT_SERVICE_SECRET", CHAT_SECRET),
    ])
}

async fn post(url: String, headers: &[(&str, String)], body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the dev server answers");
    let status = response.status();
    assert_eq!(response.headers()["content-type"], "application/json", "every answer is JSON");
    (status, response.json().await.expect("a JSON body"))
}

async fn kommo_webhook(server: &DevServer, scope: &str, body: &str) -> (StatusCode, Value) {
    let signature = kommo_webhook::sign(CHANNEL_SECRET, body.as_bytes());
    post(format!("{}/kommo/webhook/{scope}", server.base), &[("x-signature", signature)], body.to_owned()).await
}

fn chat_headers(body: &str, timestamp: i64) -> Vec<(&'static str, String)> {
    let secret = WebhookSecret::parse(CHAT_SECRET).unwrap();
    vec![
        ("webhook-id", "msg_1".into()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", secret.sign("msg_1", timestamp, body.as_bytes())),
    ]
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not the error contract: {body}"))
}

const TYPING: &str = r#"{"account_id":"acc-1","time":1670585310,"action":{"typing":{"user":{"id":"m-1"},"conversation":{"id":"c-1","client_id":"conv-1"},"expired_at":1670585315}}}"#;

#[tokio::test]
async fn it_starts_with_no_configuration_and_answers_healthz() {
    let server = DevServer::start(&[]);
    let response = reqwest::get(format!("{}/healthz", server.base)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn a_signed_kommo_webhook_is_answered_200() {
    let server = configured();
    assert_eq!(kommo_webhook(&server, SCOPE, TYPING).await, (StatusCode::OK, json!({})));
    let with_newline = format!("{TYPING}\n");
    let signature = kommo_webhook::sign(CHANNEL_SECRET, TYPING.as_bytes());
    let (status, _) =
        post(format!("{}/kommo/webhook/{SCOPE}", server.base), &[("x-signature", signature)], with_newline).await;
    assert_eq!(status, StatusCode::OK, "a trailing newline Kommo did not sign is tolerated");
}

#[tokio::test]
async fn bad_kommo_webhooks_get_a_json_4xx() {
    let server = configured();
    let url = format!("{}/kommo/webhook/{SCOPE}", server.base);
    let (status, body) = post(url.clone(), &[], TYPING).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "bad_signature"));
    let forged = kommo_webhook::sign("another-secret", TYPING.as_bytes());
    let (status, _) = post(url.clone(), &[("x-signature", forged)], TYPING).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = kommo_webhook(&server, SCOPE, "{\"account_id\": ").await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "malformed_json"));
    let (status, body) = kommo_webhook(&server, SCOPE, r#"{"account_id": 5}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_body"));
    let (status, body) = kommo_webhook(&server, "chan-1_acc-2", TYPING).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "scope_mismatch"));
    let (status, body) = kommo_webhook(&server, "other-channel_acc-1", TYPING).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "unknown_scope"));
    let huge = format!(r#"{{"account_id":"acc-1","time":1,"pad":"{}"}}"#, "x".repeat(300 * 1024));
    let (status, body) = kommo_webhook(&server, SCOPE, &huge).await;
    assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
}

#[tokio::test]
async fn chat_events_are_verified_per_standard_webhooks() {
    let server = configured();
    let url = format!("{}/chat/events", server.base);
    let now = SystemClock.now_s();
    let event =
        format!(r#"{{"type":"typing.started","scope_id":"{SCOPE}","conversation_id":"conv-1","user_id":"u-1"}}"#);
    assert_eq!(
        post(url.clone(), &chat_headers(&event, now), event.clone()).await,
        (StatusCode::OK, json!({"accepted": true}))
    );

    let (status, body) = post(url.clone(), &[], event.clone()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "bad_signature"));
    let (status, _) = post(url.clone(), &chat_headers(&event, now - 301), event.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a stale timestamp is refused");
    let unknown_type = event.replace("typing.started", "typing.paused");
    let (status, body) = post(url.clone(), &chat_headers(&unknown_type, now), unknown_type).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_body"));
    assert!(body["error"]["message"].as_str().unwrap().contains("typing.paused"));
    let foreign = event.replace(SCOPE, "other_acc-1");
    let (status, body) = post(url, &chat_headers(&foreign, now), foreign).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "unknown_scope"));
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let server = configured();
    let response = reqwest::get(format!("{}/nowhere", server.base)).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&response.json().await.unwrap()), "no_route");
    let response = reqwest::get(format!("{}/chat/events", server.base)).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

fn run_refusing(binary: &str, env: &[(&str, &str)]) -> String {
    let mut command = Command::new(workspace_binary(binary));
    command.env_clear();
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{binary} must refuse with exit code 2");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn malformed_configuration_is_refused_by_name() {
    assert!(run_refusing("dev-server", &[("PORT", "three-thousand")]).contains("PORT"));
    assert!(
        run_refusing("dev-server", &[("PORT", "0"), ("CHAT_SERVICE_SECRET", "secret")]).contains("CHAT_SERVICE_SECRET")
    );
    assert!(
        run_refusing("dev-server", &[("PORT", "0"), ("KOMMO_AMOJO_URL", "amojo.kommo.com")])
            .contains("KOMMO_AMOJO_URL")
    );
    assert!(
        run_refusing("dev-server", &[("PORT", "0"), ("KOMMO_AMOJO_URL", "https://amojo.kommo.com/v2")])
            .contains("KOMMO_AMOJO_URL"),
        "a path in amojo's URL would be signed wrong: refused at start"
    );
}

#[test]
fn the_lambda_functions_refuse_to_start_unconfigured() {
    for binary in ["kommo-webhook", "chat-callback", "typing-expiry"] {
        let message = run_refusing(binary, &[]);
        assert!(message.contains("KOMMO_CHANNEL_ID"), "{binary}: {message}");
    }
}
