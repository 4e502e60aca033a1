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

/// CPU seconds (user + system) the process has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process is running");
    let after_name = &stat[stat.rfind(')').expect("stat names the command") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state field.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Idle connections filling every descriptor the dev server may open: it neither spins on the
/// failing accept nor stays deaf; the idle timeout closes them and `/healthz` answers again.
#[tokio::test]
async fn idle_connections_filling_the_descriptors_are_closed_and_the_server_answers_again() {
    let server = DevServer::start_with_open_files(64, &[("DEV_SERVER_IDLE_TIMEOUT_MS", "1000")]);
    let address = server.base.trim_start_matches("http://").to_owned();
    let healthz = || async {
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_millis(500)).build().unwrap();
        client.get(format!("{}/healthz", server.base)).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    assert_eq!(healthz().await, 200);
    // More idle connections than the server has descriptors: it runs out and its accept fails.
    let mut idle = Vec::new();
    for _ in 0..120 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), tokio::net::TcpStream::connect(&address)).await
        {
            idle.push(stream);
        }
    }
    let cpu_before = cpu_seconds(server.pid());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let cpu_spent = cpu_seconds(server.pid()) - cpu_before;
    assert!(cpu_spent < 0.2, "the accept loop backs off instead of spinning: {cpu_spent:.2} s of CPU in 0.5 s");
    // The idle ones are closed after a second; the server answers again though our sockets stay open.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let mut status = 0;
    while std::time::Instant::now() < deadline {
        status = healthz().await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "/healthz answers again once idle connections are closed");
    drop(idle);
}

/// A request whose body never finishes arriving is answered 408 after the idle timeout, and a
/// request that never finishes its headers is closed: a slow sender holds nothing for long.
#[tokio::test]
async fn slow_requests_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = DevServer::start(&[("DEV_SERVER_IDLE_TIMEOUT_MS", "500")]);
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut slow_body = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow_body.write_all(b"POST /chat/events HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), slow_body.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "answered and closed within the timeout");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "the JSON error: {answer}");
    let mut slow_headers = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow_headers.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), slow_headers.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a request whose headers never end is closed");
}

/// With real peers configured, the sink is not there: nobody can write to the server's log
/// through it.
#[tokio::test]
async fn the_sink_routes_exist_only_in_local_mode() {
    let configured = DevServer::start(&[
        ("KOMMO_AMOJO_URL", "http://127.0.0.1:9"),
        ("CHAT_SERVICE_URL", "http://127.0.0.1:9/events"),
    ]);
    let local = DevServer::start(&[]);
    let client = reqwest::Client::new();
    for (server, expected) in [(&configured, 404), (&local, 401)] {
        let response = client.post(format!("{}/_sink/chat", server.base)).body("{}").send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{}", server.base);
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
    let amojo = client.post(format!("{}/_sink/amojo/v2/origin/custom/x/typing", configured.base)).send().await.unwrap();
    assert_eq!(amojo.status().as_u16(), 404);
}

/// The playground signs as Kommo and as the chat service: only while the sink stands in for
/// both peers. With either peer real, its page, its stream and its routes are not there.
#[tokio::test]
async fn the_playground_exists_only_in_local_mode() {
    let configured = DevServer::start(&[
        ("KOMMO_AMOJO_URL", "http://127.0.0.1:9"),
        ("CHAT_SERVICE_URL", "http://127.0.0.1:9/events"),
    ]);
    let real_chat_service = DevServer::start(&[("CHAT_SERVICE_URL", "http://127.0.0.1:9/events")]);
    let client = reqwest::Client::new();
    for server in [&configured, &real_chat_service] {
        for path in ["/", "/_playground/events", "/_playground/app.js", "/_playground/about"] {
            let response = client.get(format!("{}{path}", server.base)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {path} on {}", server.base);
        }
        for action in ["kommo/typing", "kommo/message", "kommo/read", "chat/message", "chat/status", "faults"] {
            let body = r#"{"conversation_id": "pg-1", "text": "hi", "reference": "m-1", "status": "read", "chat_service_down": true}"#;
            let (status, answer) = post(format!("{}/_playground/{action}", server.base), &[], body).await;
            assert_eq!((status, error_code(&answer)), (StatusCode::NOT_FOUND, "no_route"), "{action}");
        }
    }

    let local = DevServer::start(&[]);
    let page = client.get(format!("{}/", local.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("data-testid=\"client-composer\""));
    let (status, answer) = post(format!("{}/_playground/kommo/typing", local.base), &[], "{}").await;
    assert_eq!((status, error_code(&answer)), (StatusCode::BAD_REQUEST, "invalid_body"), "bad input is refused");
}

/// The wire of the playground: what the page plays goes through the bridge, and what the
/// bridge sends to the stand-ins comes back on the event stream as it happens, checked.
#[tokio::test]
async fn the_playground_streams_the_wire() {
    let local = DevServer::start(&[]);
    let mut events = reqwest::get(format!("{}/_playground/events", local.base)).await.unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let first = events.chunk().await.unwrap().expect("the stream opens at once");
    assert!(String::from_utf8_lossy(&first).starts_with(": open"), "{first:?}");

    let (status, answer) = post(
        format!("{}/_playground/chat/message", local.base),
        &[],
        r#"{"conversation_id": "pg-wire", "text": "Hello from the client"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["answer"], json!({"accepted": true}));
    let msgid = answer["sent"]["msgid"].as_str().expect("the page learns its message's id").to_owned();

    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !records.iter().any(|r: &Value| r["body"]["event_type"] == "new_message") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let chunk = tokio::time::timeout(left, events.chunk()).await.expect("the import is streamed within 5 s");
        let chunk = chunk.unwrap().expect("the stream stays open");
        for line in String::from_utf8_lossy(&chunk).lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                records.push(serde_json::from_str(data).expect("each record is JSON"));
            }
        }
    }
    let played = &records[0];
    assert_eq!((played["from"].as_str(), played["path"].as_str()), (Some("chat service"), Some("/chat/events")));
    assert_eq!(played["status"], 200);
    let imported = records.iter().find(|r| r["body"]["event_type"] == "new_message").unwrap();
    assert_eq!((imported["from"].as_str(), imported["to"].as_str()), (Some("bridge"), Some("amojo")));
    assert_eq!(imported["signature_ok"], true, "the bridge signed it as amojo checks");
    assert_eq!(imported["body"]["payload"]["msgid"], msgid.as_str());
    assert_eq!(imported["body"]["payload"]["message"]["text"], "Hello from the client");
}
