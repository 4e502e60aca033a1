//! The demo's stand-ins for Kommo's amojo and for the chat service: two tiny HTTP servers on
//! loopback that check the bridge's signatures as the real peers do, answer as they would, and
//! put every call on the timeline, which prints each line as it happens and keeps it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use shared::signing::amojo;
use shared::signing::standard_webhooks::{SignatureHeaders, WebhookSecret};
use shared::time::{Clock, SystemClock};
use tokio::net::TcpListener;

/// Who a timeline line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// What the demo does next.
    Scenario,
    /// A call Kommo (amojo) received from the bridge.
    Kommo,
    /// An event the chat service received from the bridge.
    ChatService,
    /// What the bridge answered the Kommo UI widget.
    KommoUi,
}

impl Who {
    fn label(self) -> &'static str {
        match self {
            Self::Scenario => "scenario",
            Self::Kommo => "Kommo",
            Self::ChatService => "chat service",
            Self::KommoUi => "Kommo UI",
        }
    }
}

/// One line of the timeline.
#[derive(Debug, Clone)]
pub struct Entry {
    pub who: Who,
    /// The kind of call: `typing`, `delivery_status`, `typing.started`, `presence`…
    pub kind: String,
    /// The JSON received (or, for the Kommo UI, answered), for the summary's checks.
    pub body: Value,
    pub signature_ok: bool,
}

/// The lines of the demo, printed as they happen (`+1234 ms  Kommo        POST …/typing`).
pub struct Timeline {
    state: Mutex<(Instant, Vec<Entry>)>,
}

impl Timeline {
    pub fn new() -> Self {
        Self { state: Mutex::new((Instant::now(), Vec::new())) }
    }

    /// Time zero is now.
    pub fn restart(&self) {
        self.state.lock().expect("timeline lock").0 = Instant::now();
    }

    pub fn elapsed_ms(&self) -> u128 {
        self.state.lock().expect("timeline lock").0.elapsed().as_millis()
    }

    pub fn step(&self, text: &str) {
        self.add(Who::Scenario, "", text, Value::Null, true);
    }

    /// Prints and keeps one line; under the lock, so lines print in time order.
    pub fn add(&self, who: Who, kind: &str, text: &str, body: Value, signature_ok: bool) {
        let mut state = self.state.lock().expect("timeline lock");
        let at_ms = state.0.elapsed().as_millis();
        println!("+{at_ms:>5} ms  {:<12} {text}", who.label());
        state.1.push(Entry { who, kind: kind.to_owned(), body, signature_ok });
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.state.lock().expect("timeline lock").1.clone()
    }
}

/// Which peer a recorder plays, with the secret it verifies the bridge's signatures with.
pub enum Peer {
    Amojo { channel_secret: String },
    ChatService { secret: WebhookSecret },
}

type Response = hyper::Response<Full<Bytes>>;

/// Starts a recorder on a free loopback port; returns its base URL.
pub async fn start(peer: Peer, timeline: Arc<Timeline>) -> std::io::Result<String> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let peer = Arc::new(peer);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (peer, timeline) = (peer.clone(), timeline.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let (peer, timeline) = (peer.clone(), timeline.clone());
                    async move { Ok::<_, Infallible>(answer(&peer, &timeline, request).await) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(base)
}

async fn answer(peer: &Peer, timeline: &Timeline, request: hyper::Request<Incoming>) -> Response {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|collected| collected.to_bytes()).unwrap_or_default();
    match peer {
        Peer::Amojo { channel_secret } => {
            amojo(channel_secret, &parts.method, parts.uri.path(), &parts.headers, &body, timeline)
        }
        Peer::ChatService { secret } => chat_service(secret, &parts.headers, &body, timeline),
    }
}

/// As amojo: a signed call to `/v2/origin/custom/{scope or channel}/{rest}`.
fn amojo(secret: &str, method: &Method, path: &str, headers: &HeaderMap, body: &[u8], timeline: &Timeline) -> Response {
    let expected = amojo::sign(secret, method.as_str(), path, body, header(headers, "date").unwrap_or_default());
    let signature_ok = header(headers, "x-signature") == Some(expected.signature.as_str())
        && header(headers, "content-md5") == Some(expected.content_md5.as_str());
    let call: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let rest = path.strip_prefix("/v2/origin/custom/").and_then(|p| p.split_once('/')).map_or("", |(_, rest)| rest);
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let payload = &call["payload"];
    let (kind, detail, status, reply) = match rest.rsplit('/').next().unwrap_or_default() {
        "" => (
            "new_message",
            format!(
                "new message {} from {}: {}",
                text(&payload["msgid"]),
                text(&payload["sender"]["id"]),
                payload["message"]["text"]
            ),
            StatusCode::OK,
            Some(json!({"new_message": {
                "conversation_id": format!("kommo-chat-{}", text(&payload["conversation_id"])),
                "sender_id": format!("kommo-user-{}", text(&payload["sender"]["id"])),
                "receiver_id": "",
                "msgid": format!("kommo-{}", text(&payload["msgid"])),
                "ref_id": payload["msgid"],
            }})),
        ),
        "typing" => (
            "typing",
            format!("client {} typing in {}", text(&call["sender"]["id"]), text(&call["conversation_id"])),
            StatusCode::NO_CONTENT,
            None,
        ),
        "delivery_status" => ("delivery_status", delivery_status(&call), StatusCode::OK, Some(json!({}))),
        "chats" => (
            "chats",
            format!("create the chat of {}", text(&call["conversation_id"])),
            StatusCode::OK,
            Some(json!({
                "id": format!("kommo-chat-{}", text(&call["conversation_id"])),
                "user": {"id": format!("kommo-user-{}", text(&call["user"]["id"])),
                         "client_id": call["user"]["id"], "name": call["user"]["name"]},
            })),
        ),
        other => (other, String::new(), StatusCode::OK, Some(json!({}))),
    };
    let shown = if rest.is_empty() { "…".to_owned() } else { format!("…/{rest}") };
    let mut line = format!("{method} {shown}  {detail}");
    let (status, reply) = if signature_ok {
        (status, reply)
    } else {
        line.push_str("  (INVALID SIGNATURE: refused with 403)");
        let refusal = json!({"status": 0, "error_code": 403, "error_type": "ORIGIN_INVALID_SIGNATURE",
                             "error_description": "invalid signature"});
        (StatusCode::FORBIDDEN, Some(refusal))
    };
    timeline.add(Who::Kommo, kind, line.trim_end(), call, signature_ok);
    respond(status, reply)
}

fn delivery_status(call: &Value) -> String {
    let msgid = call["msgid"].as_str().unwrap_or("?");
    match call["delivery_status"].as_i64() {
        Some(1) => format!("delivery_status 1 (delivered) for {msgid}"),
        Some(2) => format!("delivery_status 2 (read) for {msgid}"),
        Some(-1) => format!(
            "delivery_status -1 (error {}: {}) for {msgid}",
            call["error_code"],
            call["error"].as_str().unwrap_or("no text")
        ),
        _ => format!("delivery_status {} for {msgid}", call["delivery_status"]),
    }
}

/// As the chat service: a Standard Webhooks event; a manager message whose text says "fail" is
/// refused the way a chat service refuses one it cannot deliver.
fn chat_service(secret: &WebhookSecret, headers: &HeaderMap, body: &[u8], timeline: &Timeline) -> Response {
    let signature = SignatureHeaders {
        id: header(headers, "webhook-id"),
        timestamp: header(headers, "webhook-timestamp"),
        signature: header(headers, "webhook-signature"),
    };
    let signature_ok = secret.verify(&signature, body, SystemClock.now_s()).is_ok();
    let event: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = event["type"].as_str().unwrap_or("?").to_owned();
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let conversation = text(&event["conversation_id"]);
    let manager = text(&event["manager"]["id"]);
    let (detail, status, reply) = match kind.as_str() {
        "message.created" => {
            let reference = text(&event["reference"]);
            let said = &event["message"]["text"];
            if said.as_str().unwrap_or_default().contains("fail") {
                let refusal = json!({"error": {"code": "blocked", "message": "The client blocked this business"}});
                (format!("{reference} {said} → refused: 422 blocked"), StatusCode::UNPROCESSABLE_ENTITY, refusal)
            } else {
                let msgid = format!("chat-{reference}");
                (format!("{reference} {said} → msgid {msgid}"), StatusCode::OK, json!({"msgid": msgid}))
            }
        }
        "typing.started" => (format!("manager {manager} typing in {conversation}"), StatusCode::OK, json!({})),
        "typing.stopped" => (format!("manager {manager} stopped typing in {conversation}"), StatusCode::OK, json!({})),
        "presence.changed" => {
            let state = if event["online"] == true { "online" } else { "offline" };
            (format!("manager {manager} {state} in {conversation}"), StatusCode::OK, json!({}))
        }
        "message.read" => (
            format!("client messages up to {} read in {conversation}", text(&event["msgid"])),
            StatusCode::OK,
            json!({}),
        ),
        _ => (String::new(), StatusCode::OK, json!({})),
    };
    let mut line = format!("{kind}  {detail}");
    let (status, reply) = if signature_ok {
        (status, reply)
    } else {
        line.push_str("  (INVALID SIGNATURE: refused with 401)");
        (StatusCode::UNAUTHORIZED, json!({"error": {"code": "bad_signature", "message": "invalid signature"}}))
    };
    timeline.add(Who::ChatService, &kind, line.trim_end(), event, signature_ok);
    respond(status, Some(reply))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn respond(status: StatusCode, body: Option<Value>) -> Response {
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let mut response = hyper::Response::new(Full::new(bytes));
    *response.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    }
    response
}
