//! The playground of local mode: a page at `/` where a person plays Kommo's manager and the
//! chat service's client side by side, through the real bridge. The page's actions become what
//! the real peers would send, built and signed here (as Kommo with the channel and integration
//! secrets, as the chat service with its Standard Webhooks secret), and go through the bridge's
//! own routes, signature checks included; what the bridge sends back to the sink's stand-ins is
//! streamed to the page (server-sent events). The routes exist only while the sink stands in for
//! both peers: they sign only what the builders below produce, for the local scope.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, StatusCode};
use hyper::body::{Body, Bytes, Frame, SizeHint};
use serde_json::{Value, json};
use shared::app::config::Config;
use shared::app::http::{ApiError, HttpRequest, HttpResponse, json_response};
use shared::random::random_bytes;
use shared::signing::one_time_token;
use shared::signing::standard_webhooks::WebhookSecret;
use shared::signing::{Secret, kommo_webhook};
use shared::time::{Clock, SystemClock};
use tokio::sync::{broadcast, mpsc};

const INDEX_HTML: &str = include_str!("../playground/index.html");
const APP_JS: &str = include_str!("../playground/app.js");
const STYLE_CSS: &str = include_str!("../playground/style.css");

/// The prefix of the playground's own routes.
pub const PREFIX: &str = "/_playground/";
/// The client, as the chat service names them.
const CLIENT_ID: &str = "playground-client";
const CLIENT_NAME: &str = "Ana (client)";
/// The manager, as Kommo names them in webhooks (an amojo user id) and in the UI's tokens.
const MANAGER_AMOJO_ID: &str = "playground-manager";
const MANAGER_NAME: &str = "Bruno (manager)";
const MANAGER_USER_ID: u64 = 42;
/// The device the client's pane reports presence for.
const CLIENT_DEVICE: &str = "playground";
/// Kommo's typing webhook vouches for this long (its `expired_at`, as real Kommo sends it).
const MANAGER_TYPING_S: i64 = 5;
/// The origin the Kommo UI calls name, and the issuer of their tokens: an account address the
/// UI routes accept by default.
const KOMMO_UI_ORIGIN: &str = "https://playground.kommo.com";
const TOKEN_TTL_S: i64 = 60;
/// What the client's messenger says when the playground's control makes it refuse with 905.
const FAILED_905_TEXT: &str = "The playground's messenger refused this message";
/// The reactions the client's pane offers (the page's buttons): nothing else is signed.
const REACTIONS: [&str; 4] = ["👍", "❤️", "😂", "🙏"];
/// Longest text a composer may send (the bridge's own limits apply after this).
const MAX_TEXT_CHARS: usize = 4000;
/// A comment line every so often keeps proxies from closing the stream and finds gone watchers.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Pages watching the wire at once (tabs, scripts): each holds a connection and a task.
const MAX_WATCHERS: usize = 16;

/// What the playground signs with, and where it records the calls the page made.
pub struct Playground {
    channel_secret: Secret,
    integration_secret: Secret,
    chat_secret: WebhookSecret,
    /// The local account: its numeric id (in UI tokens) and its scope.
    account_numeric: String,
    account_amojo: String,
    scope: String,
    wire: broadcast::Sender<Value>,
}

/// One of the page's actions, built into the request the real peer would send.
pub struct PeerCall {
    /// `kommo` or `chat service`: whose call it plays.
    pub side: &'static str,
    pub request: HttpRequest,
}

impl Playground {
    /// `None` when the configuration lacks what the peers sign with (never in local mode).
    pub fn new(config: &Config, wire: broadcast::Sender<Value>) -> Option<Self> {
        let (numeric, amojo) = config.accounts.first()?.clone();
        Some(Self {
            channel_secret: config.channel_secret.clone(),
            integration_secret: config.integration_secret.clone()?,
            chat_secret: config.chat_service_secret.clone()?,
            scope: format!("{}_{amojo}", config.channel_id),
            account_numeric: numeric,
            account_amojo: amojo,
            wire,
        })
    }

    /// The page and its files, by path; `None` for any other path.
    pub fn static_file(path: &str) -> Option<HttpResponse> {
        let (content_type, text) = match path {
            "/" => ("text/html; charset=utf-8", INDEX_HTML),
            "/_playground/app.js" => ("text/javascript; charset=utf-8", APP_JS),
            "/_playground/style.css" => ("text/css; charset=utf-8", STYLE_CSS),
            _ => return None,
        };
        let mut response = HttpResponse::new(Bytes::from_static(text.as_bytes()));
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        response.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        Some(response)
    }

    /// What the page needs to know: the scope and who plays whom.
    pub fn about(&self) -> HttpResponse {
        json_response(
            StatusCode::OK,
            &json!({"scope_id": self.scope, "client": {"id": CLIENT_ID, "name": CLIENT_NAME},
                    "manager": {"id": MANAGER_AMOJO_ID, "name": MANAGER_NAME}}),
        )
    }

    /// A stream of the wire: every recorded call as one `data:` line of JSON. Each stream
    /// holds a connection open, so there are at most [`MAX_WATCHERS`] at a time.
    pub fn events(&self) -> Result<http::Response<EventStream>, ApiError> {
        if self.wire.receiver_count() >= MAX_WATCHERS {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_watchers",
                format!("at most {MAX_WATCHERS} pages may watch the wire at once"),
            ));
        }
        let mut watched = self.wire.subscribe();
        let (sender, receiver) = mpsc::channel::<Bytes>(16);
        tokio::spawn(async move {
            // Tells the page the stream is open before anything happens.
            if sender.send(Bytes::from_static(b": open\n\n")).await.is_err() {
                return;
            }
            loop {
                let chunk = tokio::select! {
                    record = watched.recv() => match record {
                        Ok(record) => Bytes::from(format!("data: {record}\n\n")),
                        Err(broadcast::error::RecvError::Lagged(skipped)) => {
                            Bytes::from(format!("data: {}\n\n", json!({"from": "playground", "skipped": skipped})))
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
                };
                if sender.send(chunk).await.is_err() {
                    return; // the page went away
                }
            }
        });
        let mut response = http::Response::new(EventStream { receiver });
        let headers = response.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream"));
        headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
        Ok(response)
    }

    /// Builds the peer's request for `action` (`kommo/typing`, `chat/message`, …) from the
    /// page's few fields (`body`), or says why not.
    pub fn build(&self, action: &str, body: &[u8]) -> Result<PeerCall, ApiError> {
        let fields: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|_| ApiError::bad_request("malformed_json", "the body is not JSON"))?
        };
        let conversation = identifier(&fields, "conversation_id")?;
        let now_ms = SystemClock.now_ms();
        let now_s = now_ms / 1000;
        // The sink answers amojo's `chats` and `new_message` calls with these ids.
        let kommo_chat = format!("sink-chat-{conversation}");
        let kommo_conversation = json!({"id": kommo_chat, "client_id": conversation});
        let (side, request) = match action {
            "kommo/typing" => (
                "kommo",
                self.kommo_webhook(json!({
                "account_id": self.account_amojo, "time": now_s,
                "action": {"typing": {"user": {"id": MANAGER_AMOJO_ID}, "conversation": kommo_conversation,
                                      "expired_at": now_s + MANAGER_TYPING_S}}})),
            ),
            "kommo/message" => {
                let text = text(&fields)?;
                let msgid = format!("kommo-msg-{}", hex::encode(random_bytes::<8>()));
                let mut message = json!({"id": msgid, "type": "text", "text": text});
                // A reply quotes a client's message by the chat service's id, as Kommo names it.
                if let Some(quoted) = optional_identifier(&fields, "reply_to_msgid")? {
                    message["reply_to"] = json!({"message": {"msgid": quoted}});
                }
                ("kommo", self.kommo_webhook(json!({
                    "account_id": self.account_amojo, "time": now_s,
                    "message": {
                        "receiver": {"id": format!("sink-user-{CLIENT_ID}"), "client_id": CLIENT_ID, "name": CLIENT_NAME},
                        "sender": {"id": MANAGER_AMOJO_ID, "name": MANAGER_NAME},
                        "conversation": kommo_conversation,
                        "timestamp": now_s, "msec_timestamp": now_ms,
                        "message": message}})))
            }
            "kommo/viewing" => {
                ("kommo", self.kommo_ui(Method::POST, &conversation, "presence", Some(json!({"state": "viewing"}))))
            }
            "kommo/left" => {
                ("kommo", self.kommo_ui(Method::POST, &conversation, "presence", Some(json!({"state": "left"}))))
            }
            "kommo/read" => ("kommo", self.kommo_ui(Method::POST, &conversation, "read", Some(json!({})))),
            "kommo/presence" => ("kommo", self.kommo_ui(Method::GET, &conversation, "presence", None)),
            "chat/message" => {
                let text = text(&fields)?;
                let msgid = format!("chat-msg-{}", hex::encode(random_bytes::<8>()));
                let mut event = json!({
                    "type": "message.created", "scope_id": self.scope, "conversation_id": conversation,
                    "msgid": msgid, "user": {"id": CLIENT_ID, "name": CLIENT_NAME},
                    "message": {"type": "text", "text": text}, "timestamp_ms": now_ms});
                // A reply quotes a manager's message by Kommo's id.
                if let Some(quoted) = optional_identifier(&fields, "reply_to_reference")? {
                    event["reply_to"] = json!({"reference": quoted});
                }
                ("chat service", self.chat_event(event))
            }
            "chat/edit" => {
                let msgid = identifier(&fields, "msgid")?;
                let text = text(&fields)?;
                (
                    "chat service",
                    self.chat_event(json!({
                        "type": "message.edited", "scope_id": self.scope, "conversation_id": conversation,
                        "msgid": msgid, "message": {"type": "text", "text": text}, "timestamp_ms": now_ms})),
                )
            }
            "chat/typing" | "chat/stopped" => {
                let kind = if action == "chat/typing" { "typing.started" } else { "typing.stopped" };
                (
                    "chat service",
                    self.chat_event(json!({
                    "type": kind, "scope_id": self.scope, "conversation_id": conversation, "user_id": CLIENT_ID})),
                )
            }
            "chat/online" | "chat/heartbeat" | "chat/offline" => {
                let kind = match action {
                    "chat/online" => "presence.online",
                    "chat/heartbeat" => "presence.heartbeat",
                    _ => "presence.offline",
                };
                (
                    "chat service",
                    self.chat_event(json!({
                    "type": kind, "scope_id": self.scope, "conversation_id": conversation, "user_id": CLIENT_ID,
                    "device_id": CLIENT_DEVICE})),
                )
            }
            "chat/status" => {
                let reference = identifier(&fields, "reference")?;
                let mut event = json!({"type": "message.status", "scope_id": self.scope,
                                       "conversation_id": conversation, "reference": reference});
                match (fields["status"].as_str(), fields["error_code"].as_u64()) {
                    (Some(status @ ("delivered" | "read")), None) => event["status"] = json!(status),
                    (Some("failed"), Some(code @ 901..=905)) => {
                        event["status"] = json!("failed");
                        event["error_code"] = json!(code);
                        // Kommo shows a 905's text to the manager: a fixed one, never the caller's.
                        if code == 905 {
                            event["error"] = json!(FAILED_905_TEXT);
                        }
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_body",
                            "status must be delivered or read, or failed with an error_code from 901 to 905",
                        ));
                    }
                }
                ("chat service", self.chat_event(event))
            }
            "chat/react" | "chat/unreact" => {
                let reference = identifier(&fields, "reference")?;
                let Some(emoji) = REACTIONS.iter().find(|emoji| fields["emoji"].as_str() == Some(**emoji)) else {
                    return Err(ApiError::bad_request(
                        "invalid_body",
                        format!("emoji must be one of {}", REACTIONS.join(" ")),
                    ));
                };
                let kind = if action == "chat/react" { "reaction.added" } else { "reaction.removed" };
                (
                    "chat service",
                    self.chat_event(json!({
                        "type": kind, "scope_id": self.scope, "conversation_id": conversation, "user_id": CLIENT_ID,
                        "reference": reference, "emoji": emoji})),
                )
            }
            _ => return Err(ApiError::not_found("no_route", format!("no playground action {action}"))),
        };
        Ok(PeerCall { side, request })
    }

    /// Records a call the page made (as the peer `side`) and the bridge's answer to it, and
    /// answers the page with both: what was sent (its ids) and what the bridge said, under the
    /// bridge's status.
    pub fn record(&self, call: &PeerCall, answer: &HttpResponse) -> HttpResponse {
        let json_of = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null);
        let sent = json_of(call.request.body());
        let answered = json_of(answer.body());
        // With nobody watching, the record is dropped: that is not an error.
        let _ = self.wire.send(json!({
            "from": call.side, "to": "bridge", "method": call.request.method().as_str(),
            "path": call.request.uri().path(), "body": sent,
            "status": answer.status().as_u16(), "answer": answered,
            "at_ms": SystemClock.now_ms(),
        }));
        json_response(answer.status(), &json!({"sent": sent, "answer": answered}))
    }

    /// A webhook as Kommo posts it, signed with the channel secret.
    fn kommo_webhook(&self, body: Value) -> HttpRequest {
        let body = body.to_string();
        let signature = kommo_webhook::sign(self.channel_secret.expose(), body.as_bytes());
        request(Method::POST, &format!("/kommo/webhook/{}", self.scope))
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .body(Bytes::from(body))
            .expect("a well-formed request")
    }

    /// A Kommo UI call as the widget makes it, with a fresh one-time token.
    fn kommo_ui(&self, method: Method, conversation: &str, route: &str, body: Option<Value>) -> HttpRequest {
        let now = SystemClock.now_s();
        let claims = json!({"iss": KOMMO_UI_ORIGIN, "aud": "bridge", "jti": hex::encode(random_bytes::<8>()),
                            "account_id": self.account_numeric.parse::<u64>().unwrap_or_default(),
                            "user_id": MANAGER_USER_ID, "iat": now, "nbf": now, "exp": now + TOKEN_TTL_S});
        let token = one_time_token::issue(self.integration_secret.expose(), &claims);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut builder = request(method, &format!("/kommo/ui/conversations/{conversation}/{route}"))
            .header("origin", KOMMO_UI_ORIGIN)
            .header("x-auth-token", token);
        if !body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        builder.body(Bytes::from(body)).expect("a well-formed request")
    }

    /// An event as the chat service posts it, signed as Standard Webhooks.
    fn chat_event(&self, body: Value) -> HttpRequest {
        let body = body.to_string();
        let id = shared::random::new_webhook_id();
        let timestamp = SystemClock.now_s();
        let signature = self.chat_secret.sign(&id, timestamp, body.as_bytes());
        request(Method::POST, "/chat/events")
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Bytes::from(body))
            .expect("a well-formed request")
    }
}

fn request(method: Method, path: &str) -> http::request::Builder {
    http::Request::builder().method(method).uri(path).header("host", "127.0.0.1")
}

/// The page's fault control: which stand-ins to put down or up, slow or prompt. A field left
/// out leaves that switch as it is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub amojo_down: Option<bool>,
    pub chat_service_down: Option<bool>,
    pub amojo_slow: Option<bool>,
    pub chat_service_slow: Option<bool>,
}

/// Reads `{"amojo_down": bool, "chat_service_down": bool, "amojo_slow": bool,
/// "chat_service_slow": bool}` (any may be absent); one bad field refuses the whole body.
pub fn faults(body: &[u8]) -> Result<Faults, ApiError> {
    let fields: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::bad_request("malformed_json", "the body is not JSON"))?;
    let flag = |name: &str| match fields.get(name) {
        None => Ok(None),
        Some(Value::Bool(down)) => Ok(Some(*down)),
        Some(_) => Err(ApiError::bad_request("invalid_body", format!("{name} must be true or false"))),
    };
    Ok(Faults {
        amojo_down: flag("amojo_down")?,
        chat_service_down: flag("chat_service_down")?,
        amojo_slow: flag("amojo_slow")?,
        chat_service_slow: flag("chat_service_slow")?,
    })
}

/// A short id from the page: letters, digits, `-` and `_` (it goes into paths and ids).
fn identifier(fields: &Value, name: &str) -> Result<String, ApiError> {
    match fields[name].as_str() {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(id.to_owned())
        }
        _ => Err(ApiError::bad_request("invalid_body", format!("{name} must be 1 to 64 letters, digits, '-' or '_'"))),
    }
}

/// Like [`identifier`], where the field may be absent.
fn optional_identifier(fields: &Value, name: &str) -> Result<Option<String>, ApiError> {
    if fields.get(name).is_none_or(Value::is_null) { Ok(None) } else { identifier(fields, name).map(Some) }
}

fn text(fields: &Value) -> Result<String, ApiError> {
    match fields["text"].as_str() {
        Some(text) if !text.trim().is_empty() && text.chars().count() <= MAX_TEXT_CHARS => Ok(text.to_owned()),
        _ => Err(ApiError::bad_request(
            "invalid_body",
            format!("text must be 1 to {MAX_TEXT_CHARS} characters, not only spaces"),
        )),
    }
}

/// The body of a server-sent event stream: whatever the forwarding task sends, until it stops.
pub struct EventStream {
    receiver: mpsc::Receiver<Bytes>,
}

impl Body for EventStream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.receiver.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::app::http::{header_str, standard_webhook_headers};

    fn playground() -> (Playground, Config) {
        let (config, _) =
            Config::from_env_local(&|_: &str| None, "http://127.0.0.1:1").expect("local mode needs nothing");
        (Playground::new(&config, broadcast::channel(4).0).expect("local mode has every secret"), config)
    }

    fn body_of(request: &HttpRequest) -> Value {
        serde_json::from_slice(request.body()).expect("a JSON body")
    }

    const CONVERSATION: &[u8] = br#"{"conversation_id": "pg-1"}"#;

    #[test]
    fn kommo_webhooks_are_signed_with_the_channel_secret_in_the_real_shape() {
        let (playground, config) = playground();
        let typing = playground.build("kommo/typing", CONVERSATION).unwrap();
        assert_eq!((typing.side, typing.request.uri().path()), ("kommo", "/kommo/webhook/local-channel_local-account"));
        let signature = header_str(&typing.request, "x-signature");
        kommo_webhook::verify(config.channel_secret.expose(), typing.request.body(), signature).expect("signed");
        kommo_webhook::verify("another-secret", typing.request.body(), signature).expect_err("not with any secret");
        let body = body_of(&typing.request);
        let action = &body["action"]["typing"];
        assert_eq!(action["conversation"], json!({"id": "sink-chat-pg-1", "client_id": "pg-1"}));
        assert_eq!(action["expired_at"].as_i64().unwrap() - body["time"].as_i64().unwrap(), MANAGER_TYPING_S);

        let message = playground.build("kommo/message", br#"{"conversation_id": "pg-1", "text": "Hi"}"#).unwrap();
        kommo_webhook::verify(
            config.channel_secret.expose(),
            message.request.body(),
            header_str(&message.request, "x-signature"),
        )
        .expect("signed");
        let body = body_of(&message.request);
        assert_eq!(body["account_id"], "local-account");
        assert_eq!(body["message"]["message"]["text"], "Hi");
        assert!(body["message"]["message"]["id"].as_str().unwrap().starts_with("kommo-msg-"));
        assert_eq!(body["message"]["receiver"]["client_id"], CLIENT_ID);
        assert!(body["message"]["message"].get("reply_to").is_none(), "no quote unless asked");
        let reply = playground
            .build("kommo/message", br#"{"conversation_id": "pg-1", "text": "Re", "reply_to_msgid": "chat-msg-1"}"#)
            .unwrap();
        assert_eq!(
            body_of(&reply.request)["message"]["message"]["reply_to"],
            json!({"message": {"msgid": "chat-msg-1"}})
        );
        let again = playground.build("kommo/message", br#"{"conversation_id": "pg-1", "text": "Hi"}"#).unwrap();
        assert_ne!(body_of(&again.request)["message"]["message"]["id"], body["message"]["message"]["id"]);
    }

    #[test]
    fn kommo_ui_calls_carry_a_fresh_token_for_the_local_account() {
        let (playground, config) = playground();
        let secret = config.integration_secret.as_ref().unwrap().expose().to_owned();
        for (action, method, path, body) in [
            ("kommo/viewing", Method::POST, "/kommo/ui/conversations/pg-1/presence", json!({"state": "viewing"})),
            ("kommo/left", Method::POST, "/kommo/ui/conversations/pg-1/presence", json!({"state": "left"})),
            ("kommo/read", Method::POST, "/kommo/ui/conversations/pg-1/read", json!({})),
            ("kommo/presence", Method::GET, "/kommo/ui/conversations/pg-1/presence", Value::Null),
        ] {
            let call = playground.build(action, CONVERSATION).unwrap();
            assert_eq!((call.request.method(), call.request.uri().path()), (&method, path), "{action}");
            let token = header_str(&call.request, "x-auth-token");
            let claims = one_time_token::verify(&secret, token, SystemClock.now_s()).expect("a valid token");
            assert_eq!(config.scope_of_account(&claims.account_id).as_deref(), Some(playground.scope.as_str()));
            assert!(config.ui_origin_allowed(header_str(&call.request, "origin").unwrap()), "{action}");
            let sent = serde_json::from_slice::<Value>(call.request.body()).unwrap_or(Value::Null);
            assert_eq!(sent, body, "{action}");
        }
    }

    #[test]
    fn chat_events_are_signed_as_standard_webhooks() {
        let (playground, config) = playground();
        let secret = config.chat_service_secret.as_ref().unwrap();
        for (action, fields, kind) in [
            ("chat/message", r#"{"conversation_id": "pg-1", "text": "Hello"}"#, "message.created"),
            ("chat/typing", r#"{"conversation_id": "pg-1"}"#, "typing.started"),
            ("chat/stopped", r#"{"conversation_id": "pg-1"}"#, "typing.stopped"),
            ("chat/online", r#"{"conversation_id": "pg-1"}"#, "presence.online"),
            ("chat/heartbeat", r#"{"conversation_id": "pg-1"}"#, "presence.heartbeat"),
            ("chat/offline", r#"{"conversation_id": "pg-1"}"#, "presence.offline"),
            (
                "chat/status",
                r#"{"conversation_id": "pg-1", "reference": "kommo-msg-1", "status": "read"}"#,
                "message.status",
            ),
            (
                "chat/status",
                r#"{"conversation_id": "pg-1", "reference": "kommo-msg-1", "status": "failed", "error_code": 905}"#,
                "message.status",
            ),
            (
                "chat/edit",
                r#"{"conversation_id": "pg-1", "msgid": "chat-msg-1", "text": "Hello again"}"#,
                "message.edited",
            ),
            (
                "chat/react",
                r#"{"conversation_id": "pg-1", "reference": "kommo-msg-1", "emoji": "👍"}"#,
                "reaction.added",
            ),
            (
                "chat/unreact",
                r#"{"conversation_id": "pg-1", "reference": "kommo-msg-1", "emoji": "👍"}"#,
                "reaction.removed",
            ),
        ] {
            let call = playground.build(action, fields.as_bytes()).unwrap();
            assert_eq!((call.side, call.request.uri().path()), ("chat service", "/chat/events"), "{action}");
            secret
                .verify(&standard_webhook_headers(&call.request), call.request.body(), SystemClock.now_s())
                .unwrap_or_else(|e| panic!("{action}: {e:?}"));
            let body = body_of(&call.request);
            assert_eq!(
                (body["type"].as_str(), body["scope_id"].as_str()),
                (Some(kind), Some("local-channel_local-account"))
            );
            assert_eq!(body["conversation_id"], "pg-1", "{action}");
        }
    }

    #[test]
    fn the_fault_control_reads_four_flags() {
        assert_eq!(faults(br#"{"amojo_down": true}"#).unwrap(), Faults { amojo_down: Some(true), ..Faults::default() });
        assert_eq!(
            faults(br#"{"amojo_down": false, "chat_service_down": true}"#).unwrap(),
            Faults { amojo_down: Some(false), chat_service_down: Some(true), ..Faults::default() }
        );
        assert_eq!(
            faults(br#"{"amojo_slow": true, "chat_service_slow": false}"#).unwrap(),
            Faults { amojo_slow: Some(true), chat_service_slow: Some(false), ..Faults::default() }
        );
        assert_eq!(faults(b"{}").unwrap(), Faults::default());
        assert!(faults(br#"{"chat_service_down": "yes"}"#).is_err());
        assert!(faults(br#"{"amojo_down": true, "chat_service_slow": 1}"#).is_err());
        assert!(faults(b"nope").is_err());
    }

    #[test]
    fn a_clients_reply_quotes_by_kommos_id() {
        let (playground, _) = playground();
        let fields = br#"{"conversation_id": "pg-1", "text": "Thanks", "reply_to_reference": "kommo-msg-1"}"#;
        let reply = body_of(&playground.build("chat/message", fields).unwrap().request);
        assert_eq!(reply["reply_to"], json!({"reference": "kommo-msg-1"}));
        let plain = body_of(
            &playground.build("chat/message", br#"{"conversation_id": "pg-1", "text": "Hi"}"#).unwrap().request,
        );
        assert!(plain.get("reply_to").is_none(), "no quote unless asked: {plain}");
    }

    #[test]
    fn only_the_builders_fields_are_signed_and_bad_ones_are_refused() {
        let (playground, _) = playground();
        let smuggled =
            br#"{"conversation_id": "pg-1", "scope_id": "other_acc", "type": "message.status", "text": "x"}"#;
        let typing = body_of(&playground.build("chat/typing", smuggled).unwrap().request);
        assert_eq!(
            (typing["type"].as_str(), typing["scope_id"].as_str()),
            (Some("typing.started"), Some("local-channel_local-account"))
        );
        assert!(typing.get("text").is_none(), "no field of the caller's is copied: {typing}");
        for (action, fields, code) in [
            ("kommo/typing", "{", "malformed_json"),
            ("kommo/typing", "{}", "invalid_body"),
            ("kommo/typing", r#"{"conversation_id": "../webhook"}"#, "invalid_body"),
            ("kommo/message", r#"{"conversation_id": "pg-1", "text": "  "}"#, "invalid_body"),
            ("chat/message", r#"{"conversation_id": "pg-1"}"#, "invalid_body"),
            ("chat/status", r#"{"conversation_id": "pg-1", "reference": "m-1", "status": "failed"}"#, "invalid_body"),
            (
                "chat/status",
                r#"{"conversation_id": "pg-1", "reference": "m-1", "status": "failed", "error_code": 906}"#,
                "invalid_body",
            ),
            (
                "chat/status",
                r#"{"conversation_id": "pg-1", "reference": "m-1", "status": "read", "error_code": 901}"#,
                "invalid_body",
            ),
            ("chat/status", r#"{"conversation_id": "pg-1", "status": "read"}"#, "invalid_body"),
            ("chat/react", r#"{"conversation_id": "pg-1", "reference": "m-1", "emoji": "🦀"}"#, "invalid_body"),
            ("chat/react", r#"{"conversation_id": "pg-1", "emoji": "👍"}"#, "invalid_body"),
            ("chat/edit", r#"{"conversation_id": "pg-1", "text": "no msgid"}"#, "invalid_body"),
            (
                "chat/message",
                r#"{"conversation_id": "pg-1", "text": "x", "reply_to_reference": "a b"}"#,
                "invalid_body",
            ),
            ("kommo/message", r#"{"conversation_id": "pg-1", "text": "x", "reply_to_msgid": 7}"#, "invalid_body"),
            ("kommo/anything", r#"{"conversation_id": "pg-1"}"#, "no_route"),
        ] {
            let Err(error) = playground.build(action, fields.as_bytes()) else { panic!("{action} {fields} was built") };
            let answer: Value = serde_json::from_slice(error.into_response().body()).unwrap();
            assert_eq!(answer["error"]["code"], code, "{action} {fields}");
        }
        let too_long = json!({"conversation_id": "pg-1", "text": "x".repeat(MAX_TEXT_CHARS + 1)}).to_string();
        assert!(playground.build("chat/message", too_long.as_bytes()).is_err());
    }

    #[test]
    fn the_page_is_served_from_the_binary() {
        for (path, content_type, marker) in [
            ("/", "text/html; charset=utf-8", "data-testid=\"manager-composer\""),
            ("/_playground/app.js", "text/javascript; charset=utf-8", "/_playground/events"),
            ("/_playground/style.css", "text/css; charset=utf-8", ".pane"),
        ] {
            let response = Playground::static_file(path).expect(path);
            assert_eq!(response.headers()["content-type"], content_type);
            assert!(String::from_utf8_lossy(response.body()).contains(marker), "{path}");
        }
        assert!(Playground::static_file("/_playground/../Cargo.toml").is_none());
        // Nothing from elsewhere: the page works offline.
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            assert!(!text.contains("https://") && !text.contains("http://"), "a URL off the dev server");
        }
    }

    #[tokio::test]
    async fn the_wire_has_a_bounded_number_of_watchers() {
        let (playground, _) = playground();
        let open: Vec<_> = (0..MAX_WATCHERS).map(|_| playground.events().expect("room for this one")).collect();
        let Err(refused) = playground.events() else { panic!("a watcher beyond {MAX_WATCHERS} was let in") };
        assert_eq!(refused.into_response().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(open[0].headers()["content-type"], "text/event-stream");
    }

    #[test]
    fn the_calls_of_the_page_are_recorded_with_the_bridges_answer() {
        let (playground, _) = playground();
        let mut watching = playground.wire.subscribe();
        let call = playground.build("chat/typing", CONVERSATION).unwrap();
        let answer = json_response(StatusCode::OK, &json!({"accepted": true}));
        let to_page = playground.record(&call, &answer);
        let to_page: Value = serde_json::from_slice(to_page.body()).unwrap();
        assert_eq!(to_page["answer"], json!({"accepted": true}));
        assert_eq!(to_page["sent"]["type"], "typing.started");
        let recorded = watching.try_recv().unwrap();
        assert_eq!((recorded["from"].as_str(), recorded["status"].as_u64()), (Some("chat service"), Some(200)));
        assert_eq!(recorded["path"], "/chat/events");
    }
}
