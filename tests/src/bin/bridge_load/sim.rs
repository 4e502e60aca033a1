//! One conversation of the load: a task that, at a fixed pace with jitter, plays both sides of a
//! live chat against the dev server (the chat service's events, Kommo's webhooks, the Kommo UI
//! widget's calls), records each request's latency, and keeps a model of what the bridge must
//! have delivered, for the reconciliation. One conversation in ten opens as a chat the manager
//! started in Kommo ("write first"): the manager's message without the integration's ids, then
//! the client's reply naming Kommo's chat.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use shared::signing::standard_webhooks::WebhookSecret;
use shared::signing::{kommo_webhook, one_time_token};
use shared::time::{Clock, SystemClock};

use crate::presence::{ReadTally, WindowModel};

/// The origin the widget calls from (a Kommo account's domain).
pub const ORIGIN: &str = "https://acme.kommo.com";
/// Kommo re-sends the manager-typing webhook every 5 s while the manager types, `expired_at` 5 s ahead.
const MANAGER_TYPING_REFRESH: Duration = Duration::from_secs(5);
const MANAGER_TYPING_AHEAD_S: i64 = 5;
/// The widget's `viewing` heartbeat, at most this often.
const VIEWING_HEARTBEAT: Duration = Duration::from_secs(5);
/// `read` with `up_to` marks at most this many earlier messages (shared::flows::delivery_status::READ_UP_TO_LIMIT).
const READ_UP_TO_LIMIT: usize = shared::flows::delivery_status::READ_UP_TO_LIMIT;
/// A client reacts to a manager's message (by `reference`) only this long after the conversation's
/// first client message was acknowledged: amojo's `react` names the conversation, which the fake
/// amojo knows once a client message of it is imported (the bridge calls amojo at once for a
/// reference; for a client's own message, by msgid, it waits for that message's import).
const REFERENCE_REACTION_AFTER: Duration = Duration::from_secs(10);
/// What reactions are made of.
const EMOJIS: [&str; 4] = ["👍", "❤️", "😂", "🔥"];

// The routes, as the report names them (shared/src/app/routes.rs; /healthz and the sinks are the
// dev server's own and never seen by a deployment).
pub const WEBHOOK: &str = "POST /kommo/webhook/{scope_id}";
pub const CHAT_EVENTS: &str = "POST /chat/events";
pub const CHAT_PRESENCE: &str = "GET /chat/presence";
pub const UI_PRESENCE_GET: &str = "GET /kommo/ui/conversations/{id}/presence";
pub const UI_PRESENCE_POST: &str = "POST /kommo/ui/conversations/{id}/presence";
pub const UI_PRESENCE_OPTIONS: &str = "OPTIONS /kommo/ui/conversations/{id}/presence";
pub const UI_READ_POST: &str = "POST /kommo/ui/conversations/{id}/read";
pub const UI_READ_OPTIONS: &str = "OPTIONS /kommo/ui/conversations/{id}/read";
pub const ROUTES: [&str; 8] = [
    WEBHOOK,
    CHAT_EVENTS,
    CHAT_PRESENCE,
    UI_PRESENCE_GET,
    UI_PRESENCE_POST,
    UI_PRESENCE_OPTIONS,
    UI_READ_POST,
    UI_READ_OPTIONS,
];

/// A route and what was sent on it (the event type, the webhook kind, the widget state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    pub route: &'static str,
    pub kind: &'static str,
}

const fn key(route: &'static str, kind: &'static str) -> RouteKey {
    RouteKey { route, kind }
}

pub fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// SplitMix64: small, seeded, good enough to pick actions and jitter.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    pub fn percent(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// What every conversation shares: where the dev server is and the secrets to sign with.
pub struct Ctx {
    pub base: String,
    pub http: reqwest::Client,
    pub channel_secret: String,
    pub chat_secret: WebhookSecret,
    pub integration_secret: String,
    /// Mean pause between two actions of a conversation; each pause is drawn within ±1/3 of it.
    pub interval_ms: u64,
    /// How often the chat service re-sends a client message, and Kommo a manager message.
    pub duplicate_percent: u64,
    /// The dev server's `PRESENCE_WINDOW_S`, in milliseconds: how long a heartbeat keeps a
    /// client, or a manager viewing, online.
    pub presence_window_ms: i64,
    /// The dev server's `FORWARD_MANAGER_PRESENCE`: off, `viewing` is ignored and
    /// `GET /chat/presence` lists nobody.
    pub forward_manager_presence: bool,
}

/// Who is in one conversation, and under which scope.
#[derive(Debug, Clone)]
pub struct Spec {
    pub index: usize,
    pub scope: String,
    /// The Kommo account's numeric id (the widget's tokens) and amojo id (scopes, webhooks).
    pub account_numeric: u32,
    pub amojo_account: String,
    pub conversation_id: String,
    pub client_id: String,
    /// The manager, numeric as in the widget's tokens.
    pub manager: u64,
    /// Kommo's chat id: the fake amojo's, on a chat the manager started.
    pub kommo_chat_id: String,
    /// Kommo's id of the client (the manager message webhook's `receiver.id`).
    pub kommo_client_id: String,
    /// Started by the manager in Kommo ("write first"), and how the chat service answers.
    pub write_first: Option<WriteFirst>,
}

/// How the chat service answers a chat the manager started in Kommo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteFirst {
    /// (a) under the bridge's id for it, Kommo's chat id, as its own `conversation_id`.
    KommoId,
    /// (b) under a new id of its own, naming Kommo's chat id in `conversation_ref_id`.
    OwnId,
}

impl WriteFirst {
    pub fn name(self) -> &'static str {
        match self {
            Self::KommoId => "a",
            Self::OwnId => "b",
        }
    }
}

impl Spec {
    pub fn manager_id(&self) -> String {
        self.manager.to_string()
    }
}

/// A manager's message as the model knows it.
#[derive(Debug, Clone)]
pub struct ManagerMsg {
    pub msgid: String,
    /// `msec_timestamp` of the webhook: the bridge orders `read` with `up_to` by it.
    pub created_ms: i64,
    pub sent_ms: i64,
    /// The model of the bridge's status register (-1 failed, 1 delivered, 2 read; none: sent).
    pub rank: Option<i8>,
    /// The webhook got a 2xx: the bridge must relay it. Without one, whether it did is unknown.
    pub accepted: bool,
    /// A status request about it failed, so the register is unknown: left out of exact checks.
    pub status_uncertain: bool,
}

impl ManagerMsg {
    /// Whether the model knows the bridge's register for it.
    pub fn status_known(&self) -> bool {
        self.accepted && !self.status_uncertain
    }
}

/// A status change the bridge must report to Kommo: exactly one call per (message, status).
#[derive(Debug, Clone)]
pub struct ExpectedStatus {
    pub msgid: String,
    pub code: i8,
    /// When the request that moved the register was sent.
    pub sent_ms: i64,
}

/// A reaction sent to the bridge, by the manager (Kommo's webhook) or the client (the chat
/// service's event), as what it owes at the other end.
#[derive(Debug, Clone)]
pub struct ReactionSent {
    /// At the chat service `reaction.added` / `reaction.removed`; at amojo `react` / `unreact`.
    pub kind: &'static str,
    /// The message as the other end must name it: `reference:<Kommo msgid>` or
    /// `msgid:<chat service msgid>` at the chat service, `id:<Kommo msgid>` or
    /// `msgid:<chat service msgid>` at amojo.
    pub target: String,
    /// The emoji the chat service must be told (manager reactions only; amojo's `unreact`
    /// carries none).
    pub emoji: Option<String>,
    pub sent_ms: i64,
    /// The bridge answered 2xx: it owes exactly one delivery. Without one, at most one.
    pub accepted: bool,
}

/// The opening of a write-first conversation.
#[derive(Debug, Clone, Default)]
pub struct WriteFirstOpening {
    /// The manager's first message (no `conversation.client_id`), and whether it was accepted.
    pub manager_msgid: Option<String>,
    pub manager_accepted: bool,
    /// The client's reply (the conversation's first client message).
    pub reply_msgid: Option<String>,
    pub reply_accepted: bool,
}

/// A request that did not get a 2xx.
#[derive(Debug, Clone)]
pub struct Failure {
    pub key: RouteKey,
    /// None: no answer (connection error or timeout).
    pub status: Option<u16>,
    pub detail: String,
}

/// What one conversation did and saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub spec: Option<Spec>,
    pub requests: u64,
    /// Latency of every answered request, in milliseconds.
    pub samples: HashMap<RouteKey, Vec<f64>>,
    pub failures: Vec<Failure>,
    /// Client messages accepted by the bridge: (msgid, sent at).
    pub client_msgs: Vec<(String, i64)>,
    pub client_uncertain: Vec<String>,
    pub manager_msgs: Vec<ManagerMsg>,
    pub expected_status: Vec<ExpectedStatus>,
    /// What the widget's `…/read` answered: (msgid, sent at).
    pub reads: Vec<(String, i64)>,
    pub reads_uncertain: bool,
    /// The client's typing as the bridge acknowledged it: (started?, at). A start is stamped when
    /// sent, a stop (typing.stopped or a message) when acknowledged.
    pub client_typing_marks: Vec<(bool, i64)>,
    /// When each manager-typing webhook was sent.
    pub manager_typing_sends: Vec<i64>,
    /// When each widget `viewing` was sent.
    pub viewing_sends: Vec<i64>,
    pub manager_viewed: bool,
    /// The widget's GET …/presence against the model of the client's presence window.
    pub widget_presence_reads: ReadTally,
    /// GET /chat/presence against the model of the manager's viewing window.
    pub chat_presence_reads: ReadTally,
    /// The first few presence reads that disagreed with the model, described.
    pub presence_mismatches: Vec<String>,
    /// Kommo's reaction webhooks, as the chat service's `reaction.*` they owe.
    pub manager_reactions: Vec<ReactionSent>,
    /// The chat service's reactions, as the amojo `react` calls they owe.
    pub client_reactions: Vec<ReactionSent>,
    pub write_first: Option<WriteFirstOpening>,
}

/// Presence mismatches described per conversation (the counts are complete).
const PRESENCE_MISMATCH_EXAMPLES_PER_CONVERSATION: usize = 3;

/// Who reads a presence window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PresenceReader {
    /// The widget's `GET …/presence`: the client's window.
    Widget,
    /// `GET /chat/presence`: the manager's viewing window.
    ChatService,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    ClientTypingStart,
    ClientTypingStop,
    ClientMessage,
    ClientOnline,
    ClientHeartbeat,
    ClientOffline,
    Status,
    ChatPresence,
    ManagerTypingStart,
    ManagerMessage,
    Reaction,
    ClientReaction,
    WidgetOpen,
    WidgetViewing,
    WidgetLeave,
    WidgetPresence,
    WidgetRead,
}

/// The status sub-actions: the chat service's receipts, in order and out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusMove {
    Delivered,
    Read,
    ReadUpTo,
    /// delivered then read back to back, as a messenger reporting both at once.
    Burst,
    /// delivered again after read: must change nothing.
    Stale,
    /// failed (905) while nothing else was reported.
    Failed,
    /// the current status once more: must change nothing.
    Repeat,
}

pub struct Conversation {
    ctx: Arc<Ctx>,
    spec: Spec,
    rng: Rng,
    out: Outcome,
    seq: u64,
    client_typing: bool,
    /// What the conversation believes, to choose its next action. None: unknown (a request
    /// about it failed).
    client_online: Option<bool>,
    /// The bridge's window of the client's presence, to check the widget's reads against.
    client_window: WindowModel,
    manager_typing_since: Option<Instant>,
    /// As `client_online`, for the manager's viewing.
    viewing: Option<bool>,
    /// The bridge's window of the manager's viewing, to check `GET /chat/presence` against.
    viewing_window: WindowModel,
    last_viewing: Instant,
    /// The write-first opening's steps done (0: none, 1: the manager's message, 2: the reply).
    opening_steps: u8,
    /// When the conversation's first client message was acknowledged.
    first_client_ack: Option<Instant>,
    /// The manager's reactions in place: (Kommo msgid, emoji).
    manager_reacted: Vec<(String, String)>,
    /// The client's reactions in place: (`msgid:…` / `reference:…`, emoji).
    client_reacted: Vec<(String, String)>,
    /// Kommo's reaction webhooks sent, to alternate their two shapes.
    reaction_webhooks: u64,
}

impl Conversation {
    pub fn new(ctx: Arc<Ctx>, spec: Spec, seed: u64) -> Self {
        let window_ms = ctx.presence_window_ms;
        Self {
            ctx,
            spec,
            rng: Rng::new(seed),
            out: Outcome::default(),
            seq: 0,
            client_typing: false,
            client_online: Some(false),
            client_window: WindowModel::new(window_ms),
            manager_typing_since: None,
            viewing: Some(false),
            viewing_window: WindowModel::new(window_ms),
            last_viewing: Instant::now(),
            opening_steps: 0,
            first_client_ack: None,
            manager_reacted: Vec::new(),
            client_reacted: Vec::new(),
            reaction_webhooks: 0,
        }
    }

    /// Plays until `deadline`, one action per pause, then closes the widget if it is open.
    pub async fn run(mut self, start: Instant, deadline: Instant) -> Outcome {
        let mut next = start + Duration::from_millis(self.rng.below(self.ctx.interval_ms.max(1)));
        tokio::time::sleep_until(next.into()).await;
        while Instant::now() < deadline {
            self.step().await;
            let mean = self.ctx.interval_ms;
            let pause = mean - mean / 3 + self.rng.below(2 * (mean / 3) + 1);
            // A fixed pace: the next action starts one pause after this one started, or at once
            // if this one took longer (never a backlog, never a flood).
            next = (next + Duration::from_millis(pause)).max(Instant::now());
            tokio::time::sleep_until(next.into()).await;
        }
        if self.viewing != Some(false) {
            self.widget_state("left").await;
        }
        self.out.spec = Some(self.spec);
        self.out
    }

    async fn step(&mut self) {
        // A chat the manager started: their message, then the client's reply, before anything.
        if let Some(variant) = self.spec.write_first
            && self.opening_steps < 2
        {
            self.opening_steps += 1;
            if self.opening_steps == 1 {
                self.manager_message(true).await;
            } else {
                let ref_id = (variant == WriteFirst::OwnId).then(|| self.spec.kommo_chat_id.clone());
                self.client_message(ref_id.as_deref()).await;
            }
            return;
        }
        // Kommo's own timer: while the manager types, the webhook comes every 5 s.
        if let Some(since) = self.manager_typing_since
            && since.elapsed() >= MANAGER_TYPING_REFRESH
        {
            if self.rng.percent(75) {
                self.manager_typing().await;
                return;
            }
            self.manager_typing_since = None; // the manager stopped typing without sending
        }
        match self.choose() {
            Action::ClientTypingStart => self.client_typing_start().await,
            Action::ClientTypingStop => self.client_typing_stop().await,
            Action::ClientMessage => self.client_message(None).await,
            Action::ClientOnline => self.client_presence("presence.online").await,
            Action::ClientHeartbeat => self.client_presence("presence.heartbeat").await,
            Action::ClientOffline => self.client_presence("presence.offline").await,
            Action::Status => self.status().await,
            Action::ChatPresence => self.chat_presence().await,
            Action::ManagerTypingStart => self.manager_typing().await,
            Action::ManagerMessage => self.manager_message(false).await,
            Action::Reaction => self.reaction().await,
            Action::ClientReaction => self.client_reaction().await,
            Action::WidgetOpen => self.widget_open().await,
            Action::WidgetViewing => self.widget_state("viewing").await,
            Action::WidgetLeave => self.widget_state("left").await,
            Action::WidgetPresence => self.widget_presence().await,
            Action::WidgetRead => self.widget_read().await,
        }
    }

    /// A weighted draw among what makes sense in the conversation's state.
    fn choose(&mut self) -> Action {
        let online = self.client_online == Some(true);
        let viewing = self.viewing == Some(true);
        let open_messages = self.out.manager_msgs.iter().any(ManagerMsg::status_known);
        let accepted_manager_messages = self.out.manager_msgs.iter().any(|m| m.accepted);
        let client_reaction_targets = !self.out.client_msgs.is_empty() || !self.client_reacted.is_empty();
        let weights = [
            (Action::ClientTypingStart, 20),
            (Action::ClientTypingStop, if self.client_typing { 6 } else { 0 }),
            (Action::ClientMessage, 8),
            (Action::ClientOnline, if online { 0 } else { 3 }),
            (Action::ClientHeartbeat, if online { 5 } else { 0 }),
            (Action::ClientOffline, if online { 1 } else { 0 }),
            (Action::Status, if open_messages { 10 } else { 0 }),
            (Action::ChatPresence, 3),
            (Action::ManagerTypingStart, if self.manager_typing_since.is_none() { 4 } else { 0 }),
            (Action::ManagerMessage, if self.manager_typing_since.is_some() { 10 } else { 5 }),
            (Action::Reaction, if accepted_manager_messages { 2 } else { 0 }),
            (Action::ClientReaction, if client_reaction_targets { 2 } else { 0 }),
            (Action::WidgetOpen, if viewing { 0 } else { 3 }),
            (Action::WidgetViewing, if viewing && self.last_viewing.elapsed() >= VIEWING_HEARTBEAT { 8 } else { 0 }),
            (Action::WidgetLeave, if viewing { 1 } else { 0 }),
            (Action::WidgetPresence, if viewing { 6 } else { 1 }),
            (Action::WidgetRead, if viewing { 3 } else { 0 }),
        ];
        let total: u64 = weights.iter().map(|(_, w)| w).sum();
        let mut draw = self.rng.below(total);
        for (action, weight) in weights {
            if draw < weight {
                return action;
            }
            draw -= weight;
        }
        Action::ClientTypingStart
    }

    /// After a request that got no 2xx: whether it was answered at all (if not, the bridge may
    /// still be handling it).
    fn last_failure_answered(&self) -> bool {
        self.out.failures.last().is_some_and(|failure| failure.status.is_some())
    }

    /// Counts a presence read against the model, and describes the first few mismatches.
    fn presence_read(&mut self, reader: PresenceReader, sent_ms: i64, answered_ms: i64, shown: bool) {
        let (window, tally) = match reader {
            PresenceReader::Widget => (self.client_window, &mut self.out.widget_presence_reads),
            PresenceReader::ChatService => (self.viewing_window, &mut self.out.chat_presence_reads),
        };
        let mismatch = tally.record(window.expected(sent_ms, answered_ms), shown);
        if mismatch && self.out.presence_mismatches.len() < PRESENCE_MISMATCH_EXAMPLES_PER_CONVERSATION {
            let what = match reader {
                PresenceReader::Widget => {
                    format!("the widget's GET …/presence showed client {} online={shown}", self.spec.client_id)
                }
                PresenceReader::ChatService => format!(
                    "GET /chat/presence {} manager {}",
                    if shown { "listed" } else { "did not list" },
                    self.spec.manager
                ),
            };
            let example = format!(
                "{}/{}: {what}; the model: {} (the read took {} ms)",
                self.spec.scope,
                self.spec.conversation_id,
                window.describe(sent_ms),
                answered_ms - sent_ms
            );
            self.out.presence_mismatches.push(example);
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn webhook_id(&mut self) -> String {
        let (seq, noise) = (self.next_seq(), self.rng.next() as u32);
        format!("msg_load{}x{seq}x{noise:08x}", self.spec.index)
    }

    // --- requests ------------------------------------------------------------------------------

    /// Sends one request, timing it to the end of the answer's body. Some(body) on a 2xx.
    async fn exec(&mut self, key: RouteKey, request: RequestBuilder) -> Option<Vec<u8>> {
        self.out.requests += 1;
        let started = Instant::now();
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.bytes().await.map(|b| b.to_vec());
                let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
                self.out.samples.entry(key).or_default().push(elapsed_ms);
                match body {
                    Ok(body) if status.is_success() => Some(body),
                    Ok(body) => {
                        let detail = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
                        self.out.failures.push(Failure { key, status: Some(status.as_u16()), detail });
                        None
                    }
                    Err(error) => {
                        let detail = format!("the body could not be read: {error}");
                        self.out.failures.push(Failure { key, status: Some(status.as_u16()), detail });
                        None
                    }
                }
            }
            Err(error) => {
                self.out.failures.push(Failure { key, status: None, detail: crate::servers::error_chain(&error) });
                None
            }
        }
    }

    /// A webhook as Kommo posts it: X-Signature over the raw body with the channel secret.
    async fn kommo(&mut self, kind: &'static str, body: &str) -> Option<Vec<u8>> {
        let signature = kommo_webhook::sign(&self.ctx.channel_secret, body.as_bytes());
        let request = self
            .ctx
            .http
            .post(format!("{}/kommo/webhook/{}", self.ctx.base, self.spec.scope))
            .header("content-type", "application/json")
            .header("x-signature", signature)
            .body(body.to_owned());
        self.exec(key(WEBHOOK, kind), request).await
    }

    /// An event as the chat service posts it (Standard Webhooks), under `webhook_id`.
    async fn chat(&mut self, kind: &'static str, body: &str, webhook_id: &str) -> Option<Vec<u8>> {
        let now = SystemClock.now_s();
        let request = self
            .ctx
            .http
            .post(format!("{}/chat/events", self.ctx.base))
            .header("content-type", "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", self.ctx.chat_secret.sign(webhook_id, now, body.as_bytes()))
            .body(body.to_owned());
        self.exec(key(CHAT_EVENTS, kind), request).await
    }

    async fn chat_new(&mut self, kind: &'static str, body: &str) -> Option<Vec<u8>> {
        let id = self.webhook_id();
        self.chat(kind, body, &id).await
    }

    /// A widget call: from a Kommo origin, with a fresh one-time token for the manager.
    async fn ui(
        &mut self,
        method: Method,
        route: &'static str,
        kind: &'static str,
        tail: &str,
        body: Option<String>,
    ) -> Option<Vec<u8>> {
        let now = SystemClock.now_s();
        let claims = json!({"iss": ORIGIN, "account_id": self.spec.account_numeric, "user_id": self.spec.manager,
                            "jti": self.webhook_id(), "iat": now, "nbf": now, "exp": now + 60});
        let token = one_time_token::issue(&self.ctx.integration_secret, &claims);
        let url = format!("{}/kommo/ui/conversations/{}/{tail}", self.ctx.base, self.spec.conversation_id);
        let mut request = self.ctx.http.request(method, url).header("origin", ORIGIN).header("x-auth-token", token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        self.exec(key(route, kind), request).await
    }

    /// The browser's CORS preflight before the widget's first POST of a page.
    async fn preflight(&mut self, route: &'static str, tail: &str) {
        let url = format!("{}/kommo/ui/conversations/{}/{tail}", self.ctx.base, self.spec.conversation_id);
        let request = self
            .ctx
            .http
            .request(Method::OPTIONS, url)
            .header("origin", ORIGIN)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-auth-token, content-type");
        self.exec(key(route, "preflight"), request).await;
    }

    // --- the chat service's side ---------------------------------------------------------------

    fn typing_body(&self, kind: &str) -> String {
        json!({"type": kind, "scope_id": self.spec.scope, "conversation_id": self.spec.conversation_id,
               "user_id": self.spec.client_id})
        .to_string()
    }

    async fn client_typing_start(&mut self) {
        let body = self.typing_body("typing.started");
        // Stamped before sending: a typing call after this moment may be this start's.
        self.out.client_typing_marks.push((true, now_ms()));
        if self.chat_new("typing.started", &body).await.is_some() {
            self.client_typing = true;
        }
    }

    async fn client_typing_stop(&mut self) {
        let body = self.typing_body("typing.stopped");
        if self.chat_new("typing.stopped", &body).await.is_some() {
            self.out.client_typing_marks.push((false, now_ms()));
            self.client_typing = false;
        }
    }

    /// A client's message; `ref_id`: the reply to a chat the manager started, under the chat
    /// service's own id, naming Kommo's chat (write first, variant b).
    async fn client_message(&mut self, ref_id: Option<&str>) {
        let n = self.next_seq();
        let msgid = format!("cm-{}-{n}", self.spec.index);
        let sent = now_ms();
        let mut body = json!({"type": "message.created", "scope_id": self.spec.scope,
                              "conversation_id": self.spec.conversation_id, "msgid": msgid,
                              "user": {"id": self.spec.client_id, "name": format!("Client {}", self.spec.index)},
                              "message": {"type": "text", "text": format!("client message {n}")}, "timestamp_ms": sent});
        if let Some(ref_id) = ref_id {
            body["conversation_ref_id"] = json!(ref_id);
        }
        let body = body.to_string();
        let accepted = self.chat_new("message.created", &body).await.is_some();
        if let Some(opening) = self.out.write_first.as_mut()
            && opening.reply_msgid.is_none()
        {
            opening.reply_msgid = Some(msgid.clone());
            opening.reply_accepted = accepted;
        }
        if !accepted {
            self.out.client_uncertain.push(msgid);
            return;
        }
        self.first_client_ack.get_or_insert_with(Instant::now);
        self.out.client_msgs.push((msgid, sent));
        // A client's message ends their typing.
        self.out.client_typing_marks.push((false, now_ms()));
        self.client_typing = false;
        if self.rng.percent(self.ctx.duplicate_percent) {
            // The same message posted again as a new webhook (a client app re-sending it): the
            // bridge must dedupe on the msgid. (A replay under the same webhook-id is refused
            // with 409 before any handling, which tests nothing about delivery.)
            self.chat_new("message.created", &body).await;
        }
    }

    async fn client_presence(&mut self, kind: &'static str) {
        let body = json!({"type": kind, "scope_id": self.spec.scope, "conversation_id": self.spec.conversation_id,
                          "user_id": self.spec.client_id, "device_id": "phone"})
        .to_string();
        let sent = now_ms();
        let answered = self.chat_new(kind, &body).await.is_some();
        let online = kind != "presence.offline";
        self.client_online = answered.then_some(online);
        match (answered, online) {
            (true, true) => self.client_window.heartbeat(sent, now_ms()),
            (true, false) => self.client_window.offline(),
            (false, _) => self.client_window.failed(self.last_failure_answered()),
        }
    }

    /// The chat service's receipts for the manager's messages.
    async fn status(&mut self) {
        let moves = [
            (StatusMove::Delivered, 5),
            (StatusMove::Read, 3),
            (StatusMove::ReadUpTo, 1),
            (StatusMove::Burst, 2),
            (StatusMove::Stale, 1),
            (StatusMove::Failed, 1),
            (StatusMove::Repeat, 1),
        ];
        let mut draw = self.rng.below(moves.iter().map(|(_, w)| w).sum());
        let mut chosen = StatusMove::Delivered;
        for (candidate, weight) in moves {
            if draw < weight {
                chosen = candidate;
                break;
            }
            draw -= weight;
        }
        let fits = |m: &ManagerMsg| match chosen {
            StatusMove::Delivered | StatusMove::Burst => m.rank.is_none_or(|r| r < 1),
            StatusMove::Read => m.rank.is_none_or(|r| r < 2),
            StatusMove::ReadUpTo => true,
            StatusMove::Stale => m.rank == Some(2),
            StatusMove::Failed => m.rank.is_none(),
            StatusMove::Repeat => m.rank.is_some(),
        };
        let candidates: Vec<usize> = (0..self.out.manager_msgs.len())
            .filter(|&i| self.out.manager_msgs[i].status_known() && fits(&self.out.manager_msgs[i]))
            .collect();
        let Some(&index) = candidates.get(self.rng.below(candidates.len() as u64) as usize) else {
            // Nothing fits this move: a plain delivered for the newest message instead.
            if let Some(index) = self.out.manager_msgs.iter().rposition(ManagerMsg::status_known) {
                self.send_status(index, "delivered", false).await;
            }
            return;
        };
        match chosen {
            StatusMove::Delivered | StatusMove::Stale => self.send_status(index, "delivered", false).await,
            StatusMove::Read => self.send_status(index, "read", false).await,
            StatusMove::ReadUpTo => self.send_status(index, "read", true).await,
            StatusMove::Burst => {
                self.send_status(index, "delivered", false).await;
                self.send_status(index, "read", false).await;
            }
            StatusMove::Failed => self.send_status(index, "failed", false).await,
            StatusMove::Repeat => {
                let status = match self.out.manager_msgs[index].rank {
                    Some(2) => "read",
                    Some(-1) => "failed",
                    _ => "delivered",
                };
                self.send_status(index, status, false).await;
            }
        }
    }

    async fn send_status(&mut self, index: usize, status: &'static str, up_to: bool) {
        let msgid = self.out.manager_msgs[index].msgid.clone();
        let mut body = json!({"type": "message.status", "scope_id": self.spec.scope,
                              "conversation_id": self.spec.conversation_id, "reference": msgid, "status": status});
        if status == "failed" {
            body["error_code"] = json!(905);
            body["error"] = json!("The client blocked this business");
        }
        if up_to {
            body["up_to"] = json!(true);
        }
        let sent = now_ms();
        let accepted = self.chat_new("message.status", &body.to_string()).await.is_some();
        let (code, rank) = match status {
            "delivered" => (1, 1),
            "read" => (2, 2),
            _ => (-1, -1),
        };
        // The bridge's targets: the message, or with up_to the conversation's manager messages
        // up to it, the newest READ_UP_TO_LIMIT (a write-first chat's opening, relayed under
        // Kommo's chat id, included: it is older than everything under the chat service's id).
        let targets: Vec<usize> = if up_to {
            let created = self.out.manager_msgs[index].created_ms;
            let mut earlier: Vec<usize> =
                (0..self.out.manager_msgs.len()).filter(|&i| self.out.manager_msgs[i].created_ms <= created).collect();
            earlier.sort_by_key(|&i| std::cmp::Reverse(self.out.manager_msgs[i].created_ms));
            earlier.truncate(READ_UP_TO_LIMIT);
            earlier
        } else {
            vec![index]
        };
        for target in targets {
            let message = &mut self.out.manager_msgs[target];
            if !accepted {
                message.status_uncertain = true;
                continue;
            }
            // The register's rule (shared::models::status::DeliveryStatus::may_replace).
            let moves = match (rank, message.rank) {
                (-1, current) => current.is_none(),
                (_, None) => true,
                (rank, Some(current)) => rank > current,
            };
            if moves {
                message.rank = Some(rank);
                let expected = ExpectedStatus { msgid: message.msgid.clone(), code, sent_ms: sent };
                self.out.expected_status.push(expected);
            }
        }
    }

    /// The chat service's pull of the managers online in the conversation.
    async fn chat_presence(&mut self) {
        let path = format!("/chat/presence?scope_id={}&conversation_id={}", self.spec.scope, self.spec.conversation_id);
        let id = self.webhook_id();
        let now = SystemClock.now_s();
        let sent = now_ms();
        let request = self
            .ctx
            .http
            .get(format!("{}{path}", self.ctx.base))
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", self.ctx.chat_secret.sign(&id, now, b""));
        let Some(body) = self.exec(key(CHAT_PRESENCE, "pull"), request).await else { return };
        let answered = now_ms();
        let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
        let manager = self.spec.manager_id();
        let listed = answer["managers"].as_array().is_some_and(|all| all.iter().any(|m| m["id"] == manager.as_str()));
        self.presence_read(PresenceReader::ChatService, sent, answered, listed);
    }

    // --- Kommo's side --------------------------------------------------------------------------

    async fn manager_typing(&mut self) {
        let now_s = SystemClock.now_s();
        let body = json!({"account_id": self.spec.amojo_account, "time": now_s,
                          "action": {"typing": {"user": {"id": self.spec.manager_id()},
                                                "conversation": {"id": self.spec.kommo_chat_id, "client_id": self.spec.conversation_id},
                                                "expired_at": now_s + MANAGER_TYPING_AHEAD_S}}})
        .to_string();
        self.out.manager_typing_sends.push(now_ms());
        self.manager_typing_since = Some(Instant::now());
        self.kommo("typing", &body).await;
    }

    /// A manager's message; `opening`: the one that starts a write-first chat, which Kommo
    /// sends without the integration's ids (no `conversation.client_id`, no `receiver.client_id`;
    /// the client as Kommo knows them).
    async fn manager_message(&mut self, opening: bool) {
        let n = self.next_seq();
        let msgid = format!("km-{}-{n}", self.spec.index);
        let sent = now_ms();
        let (receiver, conversation) = if opening {
            let receiver = json!({"id": self.spec.kommo_client_id, "name": format!("Client {}", self.spec.index),
                                  "phone": format!("+1555{:07}", self.spec.index)});
            (receiver, json!({"id": self.spec.kommo_chat_id}))
        } else {
            (
                json!({"id": self.spec.kommo_client_id, "client_id": self.spec.client_id}),
                json!({"id": self.spec.kommo_chat_id, "client_id": self.spec.conversation_id}),
            )
        };
        let body = json!({"account_id": self.spec.amojo_account, "time": sent / 1000,
                          "message": {"receiver": receiver,
                                      "sender": {"id": self.spec.manager_id(), "name": "Manager"},
                                      "conversation": conversation,
                                      "timestamp": sent / 1000, "msec_timestamp": sent,
                                      "message": {"id": msgid, "type": "text", "text": format!("manager message {n}")}}})
        .to_string();
        let accepted = self.kommo(if opening { "message (write first)" } else { "message" }, &body).await.is_some();
        // Sending ends the manager's typing in Kommo.
        self.manager_typing_since = None;
        if opening {
            let opened = WriteFirstOpening {
                manager_msgid: Some(msgid.clone()),
                manager_accepted: accepted,
                ..Default::default()
            };
            self.out.write_first = Some(opened);
        }
        let record =
            ManagerMsg { msgid, created_ms: sent, sent_ms: sent, rank: None, accepted, status_uncertain: false };
        self.out.manager_msgs.push(record);
        if accepted && self.rng.percent(self.ctx.duplicate_percent) {
            self.kommo("message", &body).await;
        }
    }

    /// Kommo's reaction webhook: the manager reacts to (or withdraws a reaction from) one of
    /// their messages, named by Kommo's msgid in either shape Kommo sends, alternately: `msgid`
    /// (A) or `message.id` (B).
    async fn reaction(&mut self) {
        let (kind, kommo_msgid, emoji) = if !self.manager_reacted.is_empty() && self.rng.percent(35) {
            let index = self.rng.below(self.manager_reacted.len() as u64) as usize;
            let (kommo_msgid, emoji) = self.manager_reacted.swap_remove(index);
            ("unreact", kommo_msgid, emoji)
        } else {
            let accepted: Vec<&ManagerMsg> = self.out.manager_msgs.iter().filter(|m| m.accepted).collect();
            let Some(target) = accepted.get(self.rng.below(accepted.len() as u64) as usize) else { return };
            let target = target.msgid.clone();
            let emoji = EMOJIS[self.rng.below(EMOJIS.len() as u64) as usize].to_owned();
            ("react", target, emoji)
        };
        let mut reaction = json!({"type": kind, "emoji": emoji,
                                  "user": {"id": self.spec.manager_id(), "name": "Manager"},
                                  "conversation": {"id": self.spec.kommo_chat_id, "client_id": self.spec.conversation_id}});
        self.reaction_webhooks += 1;
        let shape = if self.reaction_webhooks % 2 == 1 {
            reaction["msgid"] = json!(kommo_msgid);
            "reaction (msgid)"
        } else {
            reaction["message"] = json!({"id": kommo_msgid});
            "reaction (message.id)"
        };
        let sent = now_ms();
        let body =
            json!({"account_id": self.spec.amojo_account, "time": sent / 1000, "action": {"reaction": reaction}})
                .to_string();
        let accepted = self.kommo(shape, &body).await.is_some();
        if accepted && kind == "react" {
            self.manager_reacted.push((kommo_msgid.clone(), emoji.clone()));
        }
        let kind = if kind == "react" { "reaction.added" } else { "reaction.removed" };
        let owed = ReactionSent {
            kind,
            target: format!("reference:{kommo_msgid}"),
            emoji: Some(emoji),
            sent_ms: sent,
            accepted,
        };
        self.out.manager_reactions.push(owed);
    }

    /// The chat service's reaction of the client: on their own message (by msgid, which the
    /// bridge sends once the message is imported) or, once the conversation is in the fake
    /// amojo, on a manager's (by reference, Kommo's msgid), or a reaction withdrawn.
    async fn client_reaction(&mut self) {
        let (added, target, emoji) = if !self.client_reacted.is_empty() && self.rng.percent(35) {
            let index = self.rng.below(self.client_reacted.len() as u64) as usize;
            let (target, emoji) = self.client_reacted.swap_remove(index);
            // reaction.removed may leave the emoji out.
            (false, target, self.rng.percent(50).then_some(emoji))
        } else {
            let mut targets: Vec<String> =
                self.out.client_msgs.iter().map(|(msgid, _)| format!("msgid:{msgid}")).collect();
            if self.first_client_ack.is_some_and(|at| at.elapsed() >= REFERENCE_REACTION_AFTER) {
                let manager = self.out.manager_msgs.iter().filter(|m| m.accepted);
                targets.extend(manager.map(|m| format!("reference:{}", m.msgid)));
            }
            let Some(target) = targets.get(self.rng.below(targets.len() as u64) as usize).cloned() else { return };
            (true, target, Some(EMOJIS[self.rng.below(EMOJIS.len() as u64) as usize].to_owned()))
        };
        let kind = if added { "reaction.added" } else { "reaction.removed" };
        let mut body = json!({"type": kind, "scope_id": self.spec.scope, "conversation_id": self.spec.conversation_id,
                              "user_id": self.spec.client_id});
        if let Some(emoji) = &emoji {
            body["emoji"] = json!(emoji);
        }
        let (field, id) = target.split_once(':').expect("targets are field:id");
        body[field] = json!(id);
        let sent = now_ms();
        let accepted = self.chat_new(kind, &body.to_string()).await.is_some();
        if accepted && added {
            self.client_reacted.push((target.clone(), emoji.unwrap_or_default()));
        }
        // amojo names a client's message by its msgid, a manager's by Kommo's (`id`).
        let owed_target = match field {
            "msgid" => format!("msgid:{id}"),
            _ => format!("id:{id}"),
        };
        let kind = if added { "react" } else { "unreact" };
        self.out.client_reactions.push(ReactionSent {
            kind,
            target: owed_target,
            emoji: None,
            sent_ms: sent,
            accepted,
        });
    }

    // --- the Kommo UI widget -------------------------------------------------------------------

    /// The manager opens the conversation: preflights, `viewing`, the client's presence, `read`.
    async fn widget_open(&mut self) {
        self.preflight(UI_PRESENCE_OPTIONS, "presence").await;
        self.widget_state("viewing").await;
        self.widget_presence().await;
        self.preflight(UI_READ_OPTIONS, "read").await;
        self.widget_read().await;
    }

    async fn widget_state(&mut self, state: &'static str) {
        let body = json!({"state": state}).to_string();
        if state == "viewing" {
            self.out.viewing_sends.push(now_ms());
            self.out.manager_viewed = true;
            self.last_viewing = Instant::now();
        }
        let sent = now_ms();
        let answered = self.ui(Method::POST, UI_PRESENCE_POST, state, "presence", Some(body)).await.is_some();
        let viewing = state == "viewing";
        self.viewing = answered.then_some(viewing);
        // With the forwarding off the bridge ignores both: the window stays closed.
        if !self.ctx.forward_manager_presence {
            return;
        }
        match (answered, viewing) {
            (true, true) => self.viewing_window.heartbeat(sent, now_ms()),
            (true, false) => self.viewing_window.offline(),
            (false, _) => self.viewing_window.failed(self.last_failure_answered()),
        }
    }

    async fn widget_presence(&mut self) {
        let sent = now_ms();
        let Some(body) = self.ui(Method::GET, UI_PRESENCE_GET, "client", "presence", None).await else { return };
        let answered = now_ms();
        let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
        let shown = answer["client"]["online"] == true;
        self.presence_read(PresenceReader::Widget, sent, answered, shown);
    }

    async fn widget_read(&mut self) {
        let sent = now_ms();
        match self.ui(Method::POST, UI_READ_POST, "opened", "read", Some("{}".to_owned())).await {
            Some(body) => {
                let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(msgid) = answer["read"].as_str() {
                    self.out.reads.push((msgid.to_owned(), sent));
                }
            }
            None => self.out.reads_uncertain = true,
        }
    }
}
