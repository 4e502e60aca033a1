//! A simulated bridge: manual clock, in-memory store, manual timers, recording Kommo and chat
//! service. Time moves only when the test moves it, and due timers run in order as it passes.
#![allow(dead_code)] // each test file uses its own part

use std::sync::Arc;

use bytes::Bytes;
use shared::app::Bridge;
use shared::config::Config;
use shared::http::{HttpRequest, HttpResponse};
use shared::routes::EntryPoint;
use shared::signing::kommo_webhook;
use shared::store::memory::MemoryStore;
use shared::testing::{RecordingChat, RecordingKommo};
use shared::time::{Clock, ManualClock};
use shared::timers::ManualTimers;

pub const SCOPE: &str = "local-channel_acc-1";
pub const T0: i64 = 1_700_000_000_000;

pub struct Sim {
    pub clock: Arc<ManualClock>,
    pub store: Arc<MemoryStore>,
    pub timers: Arc<ManualTimers>,
    pub kommo: Arc<RecordingKommo>,
    pub chat: Arc<RecordingChat>,
    pub bridge: Bridge,
    /// Numbers the chat service's `webhook-id`s: each event is a new delivery.
    sent_events: std::sync::atomic::AtomicU64,
    /// Queued work run so far (in AWS, one SQS message and one `typing-expiry` run each).
    due_runs: std::sync::atomic::AtomicU64,
}

impl Sim {
    pub fn new() -> Self {
        Self::with_env(&[])
    }

    /// A simulation whose configuration adds `env` to the local defaults (the scope's
    /// account is linked: one-time tokens with account_id 1 act for SCOPE).
    pub fn with_env(env: &[(&str, &str)]) -> Self {
        let mut vars: std::collections::HashMap<String, String> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vars.entry("KOMMO_ACCOUNTS".into()).or_insert_with(|| "1:acc-1".into());
        let clock = Arc::new(ManualClock::at_ms(T0));
        let store = Arc::new(MemoryStore::new());
        let timers = Arc::new(ManualTimers::default());
        let kommo = Arc::new(RecordingKommo::new(clock.clone()));
        let chat = Arc::new(RecordingChat::new(clock.clone()));
        let (config, _) =
            Config::from_env_local(&|name| vars.get(name).cloned(), "http://127.0.0.1:9").expect("local defaults");
        let bridge = Bridge {
            config,
            clock: clock.clone(),
            store: store.clone(),
            kommo: kommo.clone(),
            chat: chat.clone(),
            timers: timers.clone(),
        };
        Self {
            clock,
            store,
            timers,
            kommo,
            chat,
            bridge,
            sent_events: Default::default(),
            due_runs: Default::default(),
        }
    }

    pub fn due_runs(&self) -> u64 {
        self.due_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Moves time to `t_ms`, running every timer that falls due on the way, at its moment.
    pub async fn advance_to(&self, t_ms: i64) {
        loop {
            let next = self.timers.pending().iter().map(|(due, _)| *due).min();
            match next {
                Some(due) if due <= t_ms => {
                    self.clock.set_ms(due.max(self.now()));
                    for work in self.timers.take_due(due) {
                        self.due_runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.bridge.run_due(work).await.expect("due work runs");
                    }
                }
                _ => break,
            }
        }
        self.clock.set_ms(t_ms);
    }

    pub async fn kommo_webhook(&self, body: &str) -> HttpResponse {
        let signature = kommo_webhook::sign(self.bridge.config.channel_secret.expose(), body.as_bytes());
        let request = http::Request::post(format!("/kommo/webhook/{SCOPE}"))
            .header("x-signature", signature)
            .body(Bytes::from(body.to_owned()))
            .unwrap();
        self.bridge.handle(EntryPoint::KommoWebhook, request).await
    }

    /// An event from the chat service, under a `webhook-id` of its own.
    pub async fn chat_event(&self, body: &str) -> HttpResponse {
        let number = self.sent_events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.chat_event_with_id(&format!("msg_sim_{number}"), body).await
    }

    /// An event from the chat service under `webhook_id` (the same id again is a replay or a retry).
    pub async fn chat_event_with_id(&self, webhook_id: &str, body: &str) -> HttpResponse {
        let now_s = self.clock.now_s();
        let signature = self.bridge.config.chat_service_secret.sign(webhook_id, now_s, body.as_bytes());
        let request: HttpRequest = http::Request::post("/chat/events")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", now_s.to_string())
            .header("webhook-signature", signature)
            .body(Bytes::from(body.to_owned()))
            .unwrap();
        self.bridge.handle(EntryPoint::ChatCallback, request).await
    }
}

impl Sim {
    /// A one-time token as Kommo's `$authorizedAjax` adds it, for `user_id` in account 1.
    pub fn token(&self, user_id: u64) -> String {
        let now = self.clock.now_s();
        let claims = serde_json::json!({"iss": "https://acme.kommo.com", "iat": now, "nbf": now, "exp": now + 60,
                                        "account_id": 1, "user_id": user_id});
        shared::signing::one_time_token::issue(self.bridge.config.integration_secret.expose(), &claims)
    }

    /// A Kommo UI call with a token for `user_id`.
    pub async fn ui(&self, method: &str, path: &str, token: Option<String>, body: &str) -> HttpResponse {
        let mut request = http::Request::builder().method(method).uri(path).header("origin", "https://acme.kommo.com");
        if let Some(token) = token {
            request = request.header("x-auth-token", token);
        }
        let request = request.body(Bytes::from(body.to_owned())).unwrap();
        self.bridge.handle(EntryPoint::KommoWebhook, request).await
    }

    pub fn json(response: &HttpResponse) -> serde_json::Value {
        serde_json::from_slice(response.body()).expect("a JSON body")
    }
}

pub fn presence_event(kind: &str, device: &str) -> String {
    format!(
        r#"{{"type":"{kind}","scope_id":"{SCOPE}","conversation_id":"conv-1","user_id":"client-1","device_id":"{device}"}}"#
    )
}

pub fn manager_typing(conversation: &str, manager: &str, expired_at_s: i64) -> String {
    format!(
        r#"{{"account_id":"acc-1","time":{},"action":{{"typing":{{"user":{{"id":"{manager}"}},"conversation":{{"id":"kommo-{conversation}","client_id":"{conversation}"}},"expired_at":{expired_at_s}}}}}}}"#,
        expired_at_s - 5
    )
}

pub fn manager_message(conversation: &str, manager: &str, msgid: &str) -> String {
    format!(
        r#"{{"account_id":"acc-1","time":1,"message":{{"receiver":{{"id":"r","client_id":"client-1"}},"sender":{{"id":"{manager}"}},"conversation":{{"id":"kommo-{conversation}","client_id":"{conversation}"}},"timestamp":1,"message":{{"id":"{msgid}","type":"text","text":"hello"}}}}}}"#
    )
}

pub fn client_typing(kind: &str, conversation: &str, ttl_ms: Option<u32>) -> String {
    let ttl = ttl_ms.map(|t| format!(r#","ttl_ms":{t}"#)).unwrap_or_default();
    format!(r#"{{"type":"{kind}","scope_id":"{SCOPE}","conversation_id":"{conversation}","user_id":"client-1"{ttl}}}"#)
}

pub fn status_event(reference: &str, status: &str, extra: &str) -> String {
    format!(r#"{{"type":"message.status","scope_id":"{SCOPE}","reference":"{reference}","status":"{status}"{extra}}}"#)
}

pub fn client_message(conversation: &str, msgid: &str) -> String {
    format!(
        r#"{{"type":"message.created","scope_id":"{SCOPE}","conversation_id":"{conversation}","msgid":"{msgid}","user":{{"id":"client-1","name":"Adam","phone":"+100"}},"message":{{"type":"text","text":"hi"}},"timestamp_ms":1700000000000}}"#
    )
}

/// The delivery-status calls Kommo received: (Kommo msgid, wire status, error code).
pub fn kommo_statuses(sim: &Sim) -> Vec<(String, i8, Option<u16>)> {
    sim.kommo
        .calls()
        .into_iter()
        .filter_map(|c| match c.call {
            shared::testing::KommoCall::DeliveryStatus(request) => {
                let code = match &request.status {
                    shared::status::DeliveryStatus::Failed(error) => Some(error.code()),
                    _ => None,
                };
                Some((request.msgid, request.status.wire_code(), code))
            }
            _ => None,
        })
        .collect()
}
