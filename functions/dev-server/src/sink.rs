//! The built-in sink of local mode: stands in for Kommo's amojo and for the chat service,
//! checks the signature of each call as the real peer would, logs it (method, path, signed
//! headers, body) and answers as the peer would, so every feature can be tried with no network.

use http::StatusCode;
use serde_json::{Value, json};
use shared::app::config::Config;
use shared::app::http::{HttpRequest, HttpResponse, header_str, json_response, standard_webhook_headers};
use shared::signing::Secret;
use shared::signing::amojo;
use shared::signing::standard_webhooks::WebhookSecret;

/// How much of a body the sink prints.
const LOGGED_BODY_CHARS: usize = 2000;

pub struct Sink {
    channel_secret: Secret,
    chat_secret: WebhookSecret,
}

impl Sink {
    pub fn new(config: &Config) -> Self {
        Self {
            channel_secret: config.channel_secret.clone(),
            chat_secret: config.chat_service_secret.clone().expect("the local configuration has every secret"),
        }
    }

    /// A call meant for amojo; `path` is what follows `/_sink/amojo/`.
    pub fn amojo(&self, request: &HttpRequest, path: &str) -> HttpResponse {
        let signed_path = format!("/{path}");
        let date = header_str(request, "date").unwrap_or_default();
        let expected =
            amojo::sign(self.channel_secret.expose(), request.method().as_str(), &signed_path, request.body(), date);
        let signature_ok = header_str(request, "x-signature") == Some(expected.signature.as_str())
            && header_str(request, "content-md5") == Some(expected.content_md5.as_str());
        self.log("amojo", request, &signed_path, signature_ok, &["date", "content-type", "content-md5", "x-signature"]);
        if !signature_ok {
            return json_response(
                StatusCode::FORBIDDEN,
                &json!({"status": 0, "error_code": 403, "error_type": "ORIGIN_INVALID_SIGNATURE", "error_description": "invalid signature"}),
            );
        }
        let body: Value = serde_json::from_slice(request.body()).unwrap_or(Value::Null);
        // Echoed fields are strings in amojo's answers, whatever the request held.
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        let last = path.rsplit('/').next().unwrap_or_default();
        let answer = match last {
            "typing" => {
                let mut no_content = HttpResponse::default();
                *no_content.status_mut() = StatusCode::NO_CONTENT;
                return no_content;
            }
            "connect" => {
                let account = body["account_id"].as_str().unwrap_or_default();
                let channel = path.split('/').nth(3).unwrap_or_default();
                json!({"account_id": account, "scope_id": format!("{channel}_{account}"), "title": text(&body["title"]), "hook_api_version": "v2"})
            }
            "chats" => json!({
                "id": format!("sink-chat-{}", body["conversation_id"].as_str().unwrap_or_default()),
                "user": {"id": format!("sink-user-{}", body["user"]["id"].as_str().unwrap_or_default()),
                         "client_id": text(&body["user"]["id"]), "name": text(&body["user"]["name"])}
            }),
            "delivery_status" | "react" | "disconnect" => json!({}),
            _ => json!({"new_message": {
                "conversation_id": format!("sink-chat-{}", body["payload"]["conversation_id"].as_str().unwrap_or_default()),
                "sender_id": format!("sink-user-{}", body["payload"]["sender"]["id"].as_str().unwrap_or_default()),
                "receiver_id": "",
                "msgid": format!("sink-msg-{}", hex::encode(shared::random::random_bytes::<8>())),
                "ref_id": text(&body["payload"]["msgid"]),
            }}),
        };
        json_response(StatusCode::OK, &answer)
    }

    /// An event meant for the chat service.
    pub fn chat(&self, request: &HttpRequest) -> HttpResponse {
        let headers = standard_webhook_headers(request);
        let now_s = shared::time::Clock::now_s(&shared::time::SystemClock);
        let signature_ok = self.chat_secret.verify(&headers, request.body(), now_s).is_ok();
        self.log(
            "chat service",
            request,
            request.uri().path(),
            signature_ok,
            &["webhook-id", "webhook-timestamp", "webhook-signature"],
        );
        if !signature_ok {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": {"code": "bad_signature", "message": "invalid signature"}}),
            );
        }
        // Like a chat service that accepted it: its own id for a message, nothing else otherwise.
        let event: Value = serde_json::from_slice(request.body()).unwrap_or(Value::Null);
        let answer = match event["type"].as_str() {
            Some("message.created") => {
                json!({"msgid": format!("sink-{}", hex::encode(shared::random::random_bytes::<6>()))})
            }
            _ => json!({}),
        };
        json_response(StatusCode::OK, &answer)
    }

    fn log(&self, peer: &str, request: &HttpRequest, path: &str, signature_ok: bool, signed: &[&str]) {
        // Anyone can post here: what is printed is escaped (a newline in it cannot start a
        // line of its own) and cut short.
        let escaped = |text: &str| text.chars().take(LOGGED_BODY_CHARS).collect::<String>().escape_debug().to_string();
        let headers: Vec<String> = signed
            .iter()
            .map(|name| format!("{name}: {}", escaped(header_str(request, name).unwrap_or("<missing>"))))
            .collect();
        let body = escaped(&String::from_utf8_lossy(request.body()));
        let path = escaped(path);
        println!(
            "sink → {peer}: {} {path} (signature {})\n  {}\n  {body}",
            request.method(),
            if signature_ok { "ok" } else { "INVALID" },
            headers.join("\n  "),
        );
    }
}
