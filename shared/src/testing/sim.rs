//! A simulated bridge for tests, fuzz targets and benchmarks: manual clock, in-memory store,
//! manual timers, recording Kommo and chat service. Time moves only when the caller moves it,
//! and due timers run in order as it passes. Also the request bodies the tests send, as Kommo
//! and the chat service send them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::{KommoCall, ManualClock, ManualTimers, RecordingChat, RecordingKommo};
use crate::adapters::memory::MemoryStore;
use crate::app::config::Config;
use crate::app::http::{HttpRequest, HttpResponse};
use crate::app::routes::EntryPoint;
use crate::app::{Bridge, Ports};
use crate::models::chat::BridgeEvent;
use crate::ports::chat::ChatError;
use crate::ports::store::Store;
use crate::ports::timers::{DueWork, TimerError, Timers};
use crate::signing::kommo_webhook;
use crate::time::Clock;

/// The scope the local configuration serves for account `acc-1` (Kommo account id 1).
pub const SCOPE: &str = "local-channel_acc-1";
/// The clock's start, in Unix milliseconds.
pub const T0: i64 = 1_700_000_000_000;

/// Manual timers that can be told to refuse the next piece of work (a queue outage).
pub struct RefusingTimers {
    pub inner: Arc<ManualTimers>,
    /// How many of the next schedules to refuse.
    pub refuse_next: AtomicU32,
}

#[async_trait]
impl Timers for RefusingTimers {
    async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError> {
        let refused = self.refuse_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if refused.is_ok() {
            return Err(TimerError("the queue is unavailable".into()));
        }
        self.inner.schedule(work, due_at_ms).await
    }
}

/// The simulation, on the in-memory store unless built [`Sim::on_store`] (the same tables then
/// run on the DynamoDB-compatible server).
pub struct Sim<S = MemoryStore> {
    pub clock: Arc<ManualClock>,
    pub store: Arc<S>,
    pub timers: Arc<ManualTimers>,
    /// The bridge's timers: [`Self::timers`], unless told to refuse (`refuse_next`).
    pub queue: Arc<RefusingTimers>,
    pub kommo: Arc<RecordingKommo>,
    pub chat: Arc<RecordingChat>,
    /// The bridge's metric lines (EMF).
    pub metrics: Arc<super::RecordingMetrics>,
    pub bridge: Bridge,
    /// Numbers the chat service's `webhook-id`s: each event is a new delivery.
    sent_events: AtomicU64,
    /// Queued work run so far (in AWS, one SQS message and one `typing-expiry` run each).
    due_runs: AtomicU64,
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    pub fn new() -> Self {
        Self::with_env(&[])
    }

    /// A simulation whose configuration adds `env` to the local defaults (the scope's
    /// account is linked: one-time tokens with account_id 1 act for [`SCOPE`]).
    pub fn with_env(env: &[(&str, &str)]) -> Self {
        Self::with_config(Self::local_config(env))
    }

    /// The local defaults with `env` added (the scope's account linked, as [`Self::with_env`]).
    pub fn local_config(env: &[(&str, &str)]) -> Config {
        let mut vars: std::collections::HashMap<String, String> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vars.entry("KOMMO_ACCOUNTS".into()).or_insert_with(|| "1:acc-1".into());
        let (config, _) =
            Config::from_env_local(&|name| vars.get(name).cloned(), "http://127.0.0.1:9").expect("local defaults");
        config
    }

    pub fn with_config(config: Config) -> Self {
        Sim::on_store(config, Arc::new(MemoryStore::new()))
    }

    /// A response's JSON body.
    pub fn json(response: &HttpResponse) -> serde_json::Value {
        serde_json::from_slice(response.body()).expect("a JSON body")
    }
}

impl<S: Store + 'static> Sim<S> {
    /// The simulation with `config` on `store`.
    pub fn on_store(config: Config, store: Arc<S>) -> Self {
        let clock = Arc::new(ManualClock::at_ms(T0));
        let timers = Arc::new(ManualTimers::default());
        let queue = Arc::new(RefusingTimers { inner: timers.clone(), refuse_next: AtomicU32::new(0) });
        let kommo = Arc::new(RecordingKommo::new(clock.clone()));
        let chat = Arc::new(RecordingChat::new(clock.clone()));
        let metrics = Arc::new(super::RecordingMetrics::default());
        let ports = Ports {
            clock: clock.clone(),
            store: store.clone() as Arc<dyn Store>,
            kommo: kommo.clone(),
            chat: Some(chat.clone()),
            timers: queue.clone(),
            installs: None,
            metric_lines: metrics.clone(),
        };
        let bridge = Bridge::new(config, ports);
        Self {
            metrics,
            clock,
            store,
            timers,
            queue,
            kommo,
            chat,
            bridge,
            sent_events: AtomicU64::new(0),
            due_runs: AtomicU64::new(0),
        }
    }

    /// Kommo has a chat for `conversation` (as its first client message would have made): the
    /// client's typing is shown there.
    pub async fn kommo_has_chat(&self, conversation: &str) {
        let kommo_chat_id = format!("kommo-{conversation}");
        let facts =
            crate::ports::store::ConversationFacts { kommo_chat_id: Some(&kommo_chat_id), ..Default::default() };
        self.store.remember_conversation(SCOPE, conversation, &facts).await.expect("the simulation's store works");
    }

    pub fn due_runs(&self) -> u64 {
        self.due_runs.load(Ordering::Relaxed)
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Moves time to `t_ms`, running every timer that falls due on the way, at its moment.
    /// Panics if due work fails (the simulation's store and queue do not).
    pub async fn advance_to(&self, t_ms: i64) {
        while let Some(due) = self.timers.pending().iter().map(|(due, _)| *due).min().filter(|due| *due <= t_ms) {
            self.clock.set_ms(due.max(self.now()));
            for work in self.timers.take_due(due) {
                self.due_runs.fetch_add(1, Ordering::Relaxed);
                self.run_due(work).await.expect("due work runs");
            }
        }
        self.clock.set_ms(t_ms);
    }

    /// Runs one piece of due work through the bridge's dispatcher.
    pub async fn run_due(&self, work: DueWork) -> Result<(), crate::flows::FlowError> {
        self.bridge.dispatcher().expect("the simulation wires every side").run(work).await
    }

    /// The chat service's secret, as the local configuration made it.
    pub fn chat_secret(&self) -> &crate::signing::standard_webhooks::WebhookSecret {
        self.bridge.config.chat_service_secret.as_ref().expect("the local configuration has every secret")
    }

    /// The integration's secret (the widget's tokens), as the local configuration made it.
    pub fn integration_secret(&self) -> &str {
        self.bridge.config.integration_secret.as_ref().expect("the local configuration has every secret").expose()
    }

    /// `POST /kommo/webhook/{scope}` with `body`, signed with the channel secret as Kommo signs.
    pub fn kommo_webhook_request(&self, scope: &str, body: &[u8]) -> HttpRequest {
        let signature = kommo_webhook::sign(self.bridge.config.channel_secret.expose(), body);
        http::Request::post(format!("/kommo/webhook/{scope}"))
            .header("x-signature", signature)
            .body(Bytes::copy_from_slice(body))
            .expect("a valid request")
    }

    /// `POST /chat/events` with `body`, signed as the chat service signs, under `webhook_id`
    /// (the same id again is a replay or a retry) or, without one, an id not used before.
    pub fn chat_event_request(&self, webhook_id: Option<&str>, body: &[u8]) -> HttpRequest {
        let fresh;
        let webhook_id = match webhook_id {
            Some(id) => id,
            None => {
                fresh = format!("msg_sim_{}", self.sent_events.fetch_add(1, Ordering::Relaxed));
                &fresh
            }
        };
        let now_s = self.clock.now_s();
        http::Request::post("/chat/events")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", now_s.to_string())
            .header("webhook-signature", self.chat_secret().sign(webhook_id, now_s, body))
            .body(Bytes::copy_from_slice(body))
            .expect("a valid request")
    }

    pub async fn kommo_webhook(&self, body: &str) -> HttpResponse {
        let request = self.kommo_webhook_request(SCOPE, body.as_bytes());
        self.bridge.handle(EntryPoint::KommoWebhook, request).await
    }

    /// An event from the chat service, under a `webhook-id` of its own.
    pub async fn chat_event(&self, body: &str) -> HttpResponse {
        let request = self.chat_event_request(None, body.as_bytes());
        self.bridge.handle(EntryPoint::ChatCallback, request).await
    }

    /// An event from the chat service under `webhook_id` (the same id again is a replay or a retry).
    pub async fn chat_event_with_id(&self, webhook_id: &str, body: &str) -> HttpResponse {
        let request = self.chat_event_request(Some(webhook_id), body.as_bytes());
        self.bridge.handle(EntryPoint::ChatCallback, request).await
    }

    /// A one-time token as Kommo's `$authorizedAjax` adds it, for `user_id` in account 1.
    pub fn token(&self, user_id: u64) -> String {
        let now = self.clock.now_s();
        let claims = serde_json::json!({"iss": "https://acme.kommo.com", "iat": now, "nbf": now, "exp": now + 60,
                                        "account_id": 1, "user_id": user_id});
        crate::signing::one_time_token::issue(self.integration_secret(), &claims)
    }

    /// A Kommo UI call with a token for `user_id`.
    pub async fn ui(&self, method: &str, path: &str, token: Option<String>, body: &str) -> HttpResponse {
        let mut request = http::Request::builder().method(method).uri(path).header("origin", "https://acme.kommo.com");
        if let Some(token) = token {
            request = request.header("x-auth-token", token);
        }
        let request = request.body(Bytes::from(body.to_owned())).expect("a valid request");
        self.bridge.handle(EntryPoint::KommoWebhook, request).await
    }

    /// What the chat service accepted, in order: "started", "stopped", "message", "other".
    /// [`Self::chat_events`] as a chat service that drops a repeated `webhook-id` takes them.
    pub fn chat_events_once(&self) -> Vec<&'static str> {
        let mut seen = std::collections::HashSet::new();
        let ids = self.chat.webhook_ids();
        self.chat_events()
            .into_iter()
            .zip(ids)
            .filter(|(_, id)| seen.insert(id.clone()))
            .map(|(kind, _)| kind)
            .collect()
    }

    pub fn chat_events(&self) -> Vec<&'static str> {
        let kinds = self.chat.events().into_iter().map(|recorded| match recorded.call {
            BridgeEvent::TypingStarted { .. } => "started",
            BridgeEvent::TypingStopped { .. } => "stopped",
            BridgeEvent::MessageCreated { .. } => "message",
            _ => "other",
        });
        kinds.collect()
    }

    /// The `presence.changed` pushes the chat service received: when, and online or not.
    pub fn presence_pushes(&self) -> Vec<(i64, bool)> {
        let pushes = self.chat.events().into_iter().filter_map(|recorded| match recorded.call {
            BridgeEvent::PresenceChanged { online, .. } => Some((recorded.at_ms, online)),
            _ => None,
        });
        pushes.collect()
    }
}

/// The delivery-status calls Kommo received: (Kommo msgid, wire status, error code).
pub fn kommo_statuses(sim: &Sim) -> Vec<(String, i8, Option<u16>)> {
    let statuses = sim.kommo.calls().into_iter().filter_map(|recorded| match recorded.call {
        KommoCall::DeliveryStatus(request) => {
            let code = match &request.status {
                crate::models::status::DeliveryStatus::Failed(error) => Some(error.code()),
                _ => None,
            };
            Some((request.msgid, request.status.wire_code(), code))
        }
        _ => None,
    });
    statuses.collect()
}

/// The chat service unreachable (503 after its quick retry).
pub fn chat_down() -> ChatError {
    ChatError::Unavailable { attempts: 2, status: Some(503), reason: "HTTP 503".into() }
}

/// The chat service's presence event for client-1 in conv-1.
pub fn presence_event(kind: &str, device: &str) -> String {
    format!(
        r#"{{"type":"{kind}","scope_id":"{SCOPE}","conversation_id":"conv-1","user_id":"client-1","device_id":"{device}"}}"#
    )
}

/// Kommo's manager-typing webhook, sent 5 s before `expired_at_s`.
pub fn manager_typing(conversation: &str, manager: &str, expired_at_s: i64) -> String {
    format!(
        r#"{{"account_id":"acc-1","time":{},"action":{{"typing":{{"user":{{"id":"{manager}"}},"conversation":{{"id":"kommo-{conversation}","client_id":"{conversation}"}},"expired_at":{expired_at_s}}}}}}}"#,
        expired_at_s - 5
    )
}

/// Kommo's outgoing-message webhook: `manager` writes to client-1, as real accounts send it
/// (`sender.name` and the media fields empty, `markup` null, `file_size` 0 on a text).
pub fn manager_message(conversation: &str, manager: &str, msgid: &str) -> String {
    format!(
        r#"{{"account_id":"acc-1","time":1,"message":{{"receiver":{{"id":"r","client_id":"client-1","name":"","phone":"","email":""}},"sender":{{"id":"{manager}","name":""}},"conversation":{{"id":"kommo-{conversation}","client_id":"{conversation}"}},"timestamp":1,"message":{{"id":"{msgid}","type":"text","text":"hello","markup":null,"media":"","thumbnail":"","file_name":"","file_size":0,"template":null}}}}}}"#
    )
}

/// The chat service's `typing.started` / `typing.stopped` of client-1.
pub fn client_typing(kind: &str, conversation: &str, ttl_ms: Option<u32>) -> String {
    let ttl = ttl_ms.map(|t| format!(r#","ttl_ms":{t}"#)).unwrap_or_default();
    format!(r#"{{"type":"{kind}","scope_id":"{SCOPE}","conversation_id":"{conversation}","user_id":"client-1"{ttl}}}"#)
}

/// The chat service's `message.status` for the manager message `reference`; `extra` is more
/// JSON members, each after a comma.
pub fn status_event(reference: &str, status: &str, extra: &str) -> String {
    format!(r#"{{"type":"message.status","scope_id":"{SCOPE}","reference":"{reference}","status":"{status}"{extra}}}"#)
}

/// The chat service's `message.created` from client-1.
pub fn client_message(conversation: &str, msgid: &str) -> String {
    format!(
        r#"{{"type":"message.created","scope_id":"{SCOPE}","conversation_id":"{conversation}","msgid":"{msgid}","user":{{"id":"client-1","name":"Adam","phone":"+100"}},"message":{{"type":"text","text":"hi"}},"timestamp_ms":1700000000000}}"#
    )
}
