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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;

/// How much of a body the sink prints.
const LOGGED_BODY_CHARS: usize = 2000;
/// How many recorded calls a slow watcher of the wire may fall behind before it skips some.
const WIRE_BACKLOG: usize = 256;
/// How long a slow stand-in holds each answer: one second past the bridge's per-attempt bound
/// for that peer, so every attempt times out on the bridge's side and its retries show.
pub const AMOJO_SLOW_DELAY: Duration =
    Duration::from_secs(shared::adapters::amojo::AMOJO_REQUEST_TIMEOUT.as_secs() + 1);
pub const CHAT_SERVICE_SLOW_DELAY: Duration =
    Duration::from_secs(shared::adapters::chat_http::CHAT_REQUEST_TIMEOUT.as_secs() + 1);

pub struct Sink {
    channel_secret: Secret,
    chat_secret: WebhookSecret,
    /// Every call the sink receives, as a JSON record, for whoever watches (the playground).
    wire: broadcast::Sender<Value>,
    /// Whether each stand-in is down on cue (the playground's control): it answers every call
    /// 503, so the bridge's retries, its 903 and its recovery can be watched.
    amojo_down: AtomicBool,
    chat_service_down: AtomicBool,
    /// Whether each stand-in is slow on cue: it answers as usual, but only after its
    /// `*_SLOW_DELAY`, when the bridge has given that attempt up.
    amojo_slow: AtomicBool,
    chat_service_slow: AtomicBool,
}

impl Sink {
    pub fn new(config: &Config) -> Self {
        Self {
            channel_secret: config.channel_secret.clone(),
            chat_secret: config.chat_service_secret.clone().expect("the local configuration has every secret"),
            wire: broadcast::channel(WIRE_BACKLOG).0,
            amojo_down: AtomicBool::new(false),
            chat_service_down: AtomicBool::new(false),
            amojo_slow: AtomicBool::new(false),
            chat_service_slow: AtomicBool::new(false),
        }
    }

    /// Puts a stand-in down or up (`None` leaves it as it is); answers which are down now.
    pub fn set_down(&self, amojo: Option<bool>, chat_service: Option<bool>) -> (bool, bool) {
        if let Some(down) = amojo {
            self.amojo_down.store(down, Ordering::Relaxed);
        }
        if let Some(down) = chat_service {
            self.chat_service_down.store(down, Ordering::Relaxed);
        }
        (self.amojo_down.load(Ordering::Relaxed), self.chat_service_down.load(Ordering::Relaxed))
    }

    /// Makes a stand-in slow or prompt (`None` leaves it as it is); answers which are slow now.
    pub fn set_slow(&self, amojo: Option<bool>, chat_service: Option<bool>) -> (bool, bool) {
        if let Some(slow) = amojo {
            self.amojo_slow.store(slow, Ordering::Relaxed);
        }
        if let Some(slow) = chat_service {
            self.chat_service_slow.store(slow, Ordering::Relaxed);
        }
        (self.amojo_slow.load(Ordering::Relaxed), self.chat_service_slow.load(Ordering::Relaxed))
    }

    /// How long this call's answer is held: decided once, when the call arrives, so the wire
    /// and the delay agree even if the switch flips meanwhile.
    fn slow_delay(&self, peer: &str) -> Option<Duration> {
        let (slow, delay) = match peer {
            "amojo" => (&self.amojo_slow, AMOJO_SLOW_DELAY),
            _ => (&self.chat_service_slow, CHAT_SERVICE_SLOW_DELAY),
        };
        slow.load(Ordering::Relaxed).then_some(delay)
    }

    fn is_down(&self, peer: &str) -> bool {
        match peer {
            "amojo" => self.amojo_down.load(Ordering::Relaxed),
            _ => self.chat_service_down.load(Ordering::Relaxed),
        }
    }

    /// The stream of recorded calls: subscribe to watch them, send to add a record of one's own.
    pub fn wire(&self) -> broadcast::Sender<Value> {
        self.wire.clone()
    }

    /// A call meant for amojo; `path` is what follows `/_sink/amojo/`.
    pub async fn amojo(&self, request: &HttpRequest, path: &str) -> HttpResponse {
        let delay = self.slow_delay("amojo");
        let answer = self.answer_amojo(request, path, delay);
        hold(delay).await;
        answer
    }

    fn answer_amojo(&self, request: &HttpRequest, path: &str, delay: Option<Duration>) -> HttpResponse {
        let signed_path = format!("/{path}");
        let date = header_str(request, "date").unwrap_or_default();
        let expected =
            amojo::sign(self.channel_secret.expose(), request.method().as_str(), &signed_path, request.body(), date);
        let signature_ok = header_str(request, "x-signature") == Some(expected.signature.as_str())
            && header_str(request, "content-md5") == Some(expected.content_md5.as_str());
        self.log(
            "amojo",
            request,
            &signed_path,
            signature_ok,
            delay,
            &["date", "content-type", "content-md5", "x-signature"],
        );
        if self.is_down("amojo") {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": 0, "error_code": 503, "error_type": "SERVICE_UNAVAILABLE", "error_description": "down on cue"}),
            );
        }
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
    pub async fn chat(&self, request: &HttpRequest) -> HttpResponse {
        let delay = self.slow_delay("chat service");
        let answer = self.answer_chat(request, delay);
        hold(delay).await;
        answer
    }

    fn answer_chat(&self, request: &HttpRequest, delay: Option<Duration>) -> HttpResponse {
        let headers = standard_webhook_headers(request);
        let now_s = shared::time::Clock::now_s(&shared::time::SystemClock);
        let signature_ok = self.chat_secret.verify(&headers, request.body(), now_s).is_ok();
        self.log(
            "chat service",
            request,
            request.uri().path(),
            signature_ok,
            delay,
            &["webhook-id", "webhook-timestamp", "webhook-signature"],
        );
        if self.is_down("chat service") {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": {"code": "unavailable", "message": "down on cue"}}),
            );
        }
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

    fn log(
        &self,
        peer: &str,
        request: &HttpRequest,
        path: &str,
        signature_ok: bool,
        delay: Option<Duration>,
        signed: &[&str],
    ) {
        // Anyone can post here: what is printed is escaped (a newline in it cannot start a
        // line of its own) and cut short.
        let escaped = |text: &str| text.chars().take(LOGGED_BODY_CHARS).collect::<String>().escape_debug().to_string();
        let headers: Vec<String> = signed
            .iter()
            .map(|name| format!("{name}: {}", escaped(header_str(request, name).unwrap_or("<missing>"))))
            .collect();
        let text = String::from_utf8_lossy(request.body());
        // With nobody watching, the record is dropped: that is not an error.
        let _ = self.wire.send(json!({
            "from": "bridge", "to": peer, "method": request.method().as_str(), "path": path,
            "signature_ok": signature_ok, "down": self.is_down(peer),
            "slow_ms": delay.map(|delay| delay.as_millis() as u64),
            "body": serde_json::from_str::<Value>(&text).unwrap_or_else(|_| Value::String(text.to_string())),
            "at_ms": shared::time::Clock::now_ms(&shared::time::SystemClock),
        }));
        let body = escaped(&text);
        let path = escaped(path);
        println!(
            "sink → {peer}: {} {path} (signature {}){}\n  {}\n  {body}",
            request.method(),
            if signature_ok { "ok" } else { "INVALID" },
            delay.map(|delay| format!(", answer held {} s", delay.as_secs())).unwrap_or_default(),
            headers.join("\n  "),
        );
    }
}

/// Holds a slow stand-in's answer; a bridge that gave the attempt up meanwhile never reads it.
async fn hold(delay: Option<Duration>) {
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::adapters::amojo::{AMOJO_REQUEST_TIMEOUT, TYPING_REQUEST_TIMEOUT};
    use shared::adapters::chat_http::CHAT_REQUEST_TIMEOUT;

    #[test]
    fn a_slow_stand_in_outlasts_every_bridge_timeout_for_its_peer() {
        assert!(AMOJO_SLOW_DELAY > AMOJO_REQUEST_TIMEOUT && AMOJO_SLOW_DELAY > TYPING_REQUEST_TIMEOUT);
        assert!(CHAT_SERVICE_SLOW_DELAY > CHAT_REQUEST_TIMEOUT);
    }
}
