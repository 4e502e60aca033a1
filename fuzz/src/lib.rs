//! What the fuzz targets share: a bridge on a manual clock with the in-memory store, manual
//! timers and the recording fakes of Kommo and the chat service; fixed secrets; one
//! current-thread runtime, built once, to drive the async handler; and the checks every answer
//! must pass.
//!
//! Each input gets a fresh store and clock (the configuration is built once), so a crash
//! reproduces from its input alone.

use std::future::Future;
use std::sync::OnceLock;

use http::StatusCode;
use shared::app::config::Config;
use shared::app::http::{HttpRequest, HttpResponse};
use shared::app::routes::EntryPoint;
pub use shared::testing::sim::{Sim, client_message, manager_message, manager_typing, presence_event};
use shared::time::Clock;

pub const CHANNEL_ID: &str = "local-channel";
pub const ACCOUNT: &str = "acc-1";
/// The one scope the bridge serves in the fuzz configuration (`{CHANNEL_ID}_{ACCOUNT}`).
pub const SCOPE: &str = "local-channel_acc-1";
/// The reference's channel secret (its signing vectors use it).
pub const CHANNEL_SECRET: &str = "5a44c5dff55f3c15a4cce8d7c4cc27e207c7e189";
pub const INTEGRATION_SECRET: &str = "integration-secret-for-tests";
/// The Standard Webhooks specification's example secret.
pub const CHAT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The Kommo account id (numeric, as in one-time tokens) linked to [`ACCOUNT`].
pub const KOMMO_ACCOUNT_ID: u64 = 1;
/// At most this much due work runs after a request (retries, refresh chains, checks).
pub const MAX_DUE_RUNS: usize = 64;

/// The runtime every target drives the handler with: current-thread, time enabled (the
/// handlers bound a best-effort call with a timeout), built once.
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a current-thread runtime")
        })
        .block_on(future)
}

/// The configuration, built once from fixed values (nothing generated, nothing random).
pub fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let accounts = format!("{KOMMO_ACCOUNT_ID}:{ACCOUNT}");
        let env = |name: &str| -> Option<String> {
            let value = match name {
                "KOMMO_CHANNEL_ID" => CHANNEL_ID,
                "KOMMO_CHANNEL_SECRET" => CHANNEL_SECRET,
                "KOMMO_INTEGRATION_SECRET" => INTEGRATION_SECRET,
                "CHAT_SERVICE_SECRET" => CHAT_SECRET,
                "KOMMO_AMOJO_URL" => "http://127.0.0.1:9",
                "CHAT_SERVICE_URL" => "http://127.0.0.1:9/_sink/chat",
                "KOMMO_ACCOUNTS" => &accounts,
                _ => return None,
            };
            Some(value.to_owned())
        };
        let (config, _) = Config::from_env_local(&env, "http://127.0.0.1:9").expect("the fuzz configuration is valid");
        config
    })
}

/// One bridge with everything in memory, on a clock that moves only when told: the shared
/// simulation ([`Sim`]) on the fuzz configuration, with each answer checked.
pub struct Harness {
    pub sim: Sim,
}

impl std::ops::Deref for Harness {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    pub fn new() -> Self {
        Self { sim: Sim::with_config(config().clone()) }
    }

    pub fn now_s(&self) -> i64 {
        self.clock.now_s()
    }

    /// Sends one request and checks the answer (see [`check_response`]).
    pub async fn send(&self, entry: EntryPoint, request: HttpRequest) -> HttpResponse {
        let response = self.bridge.handle(entry, request).await;
        check_response(&response);
        response
    }

    /// `POST /kommo/webhook/{scope}` with `body`, signed with the channel secret as Kommo signs.
    pub async fn kommo_webhook(&self, scope: &str, body: &[u8]) -> HttpResponse {
        self.send(EntryPoint::KommoWebhook, self.kommo_webhook_request(scope, body)).await
    }

    /// The three Standard Webhooks headers over `body`, now, with a message id not used before.
    pub fn chat_signature(&self, body: &[u8]) -> Vec<(String, String)> {
        let request = self.chat_event_request(None, body);
        let header = |name: &str| request.headers()[name].to_str().expect("ASCII").to_owned();
        ["webhook-signature", "webhook-id", "webhook-timestamp"].map(|name| (name.to_owned(), header(name))).to_vec()
    }

    /// `POST /chat/events` with `body`, signed as the chat service signs.
    pub async fn chat_event(&self, body: &[u8]) -> HttpResponse {
        self.send(EntryPoint::ChatCallback, self.chat_event_request(None, body)).await
    }

    /// Runs the due work, earliest first, moving the clock to each one's moment, at most
    /// `max` rounds. A transient failure (`Err`) is dropped, as a queue would retry it.
    pub async fn run_timers(&self, max: usize) {
        self.run_timers_until(i64::MAX, max).await;
    }

    /// Runs the work due up to `until_ms` as [`Self::run_timers`] does (at most `max` rounds),
    /// leaving the clock at `until_ms` when it gets there; returns the rounds run.
    pub async fn run_timers_until(&self, until_ms: i64, max: usize) -> usize {
        for round in 0..max {
            let due = self.timers.pending().iter().map(|(due, _)| *due).min();
            let Some(due) = due.filter(|due| *due <= until_ms) else {
                if until_ms != i64::MAX {
                    self.clock.set_ms(until_ms.max(self.clock.now_ms()));
                }
                return round;
            };
            self.clock.set_ms(due.max(self.clock.now_ms()));
            for work in self.timers.take_due(due) {
                let _ = self.run_due(work).await;
            }
        }
        max
    }

    /// State for a fuzzed request to land on: a manager message (Kommo msgid `kommo-1`) relayed
    /// and answered with chat msgid `chat-kommo-1`, a client message `chat-1` imported, the
    /// client online and typing, the manager typing. Every step must be accepted.
    pub async fn seed_state(&self) {
        let steps: [(&str, String); 5] = [
            ("kommo", manager_message("conv-1", "manager-1", "kommo-1")),
            ("chat", client_message("conv-1", "chat-1")),
            ("chat", presence_event("presence.online", "phone")),
            ("chat", shared::testing::sim::client_typing("typing.started", "conv-1", None)),
            ("kommo", manager_typing("conv-1", "manager-1", self.now_s() + 5)),
        ];
        for (side, body) in steps {
            let response = match side {
                "kommo" => self.kommo_webhook(SCOPE, body.as_bytes()).await,
                _ => self.chat_event(body.as_bytes()).await,
            };
            assert_eq!(response.status(), StatusCode::OK, "seed step refused: {body}");
            self.run_timers(4).await;
        }
    }
}

impl Harness {
    /// What the bridge promises about what it sent, whatever it was asked, checked on what the
    /// recording fakes received (for requests from outside, not for injected due work, which
    /// may ask for anything):
    /// - Kommo's delivery status of a message only moves forward (read after delivered, a
    ///   failure only first), so no status is reported twice;
    /// - a client message is imported once, a manager message relayed once, a client message
    ///   reported read once, and what became of a client message told once (delivered or failed);
    /// - a manager's typing is never started twice without a stop in between.
    pub fn check_invariants(&self) {
        use shared::models::chat::BridgeEvent;
        use std::collections::{HashMap, HashSet};

        self.check_kommo_invariants();
        let mut relayed = HashSet::new();
        let mut read = HashSet::new();
        let mut outcomes = HashSet::new();
        let mut typing: HashMap<(String, String, String), bool> = HashMap::new();
        for recorded in self.chat.events() {
            match recorded.call {
                BridgeEvent::MessageCreated { scope_id, reference, .. } => {
                    let key = (scope_id, reference);
                    assert!(relayed.insert(key.clone()), "manager message relayed twice: {key:?}");
                }
                BridgeEvent::MessageRead { scope_id, conversation_id, msgid, .. } => {
                    let key = (scope_id, conversation_id, msgid);
                    assert!(read.insert(key.clone()), "client message reported read twice: {key:?}");
                }
                BridgeEvent::TypingStarted { scope_id, conversation_id, manager, .. } => {
                    let key = (scope_id, conversation_id, manager.id);
                    let was_typing = typing.insert(key.clone(), true).unwrap_or(false);
                    assert!(!was_typing, "typing.started twice without typing.stopped: {key:?}");
                }
                BridgeEvent::TypingStopped { scope_id, conversation_id, manager } => {
                    typing.insert((scope_id, conversation_id, manager.id), false);
                }
                BridgeEvent::MessageDelivered { scope_id, msgid, .. }
                | BridgeEvent::MessageFailed { scope_id, msgid, .. } => {
                    let key = (scope_id, msgid);
                    assert!(outcomes.insert(key.clone()), "a client message's outcome told twice: {key:?}");
                }
                BridgeEvent::PresenceChanged { .. }
                | BridgeEvent::ReactionAdded(_)
                | BridgeEvent::ReactionRemoved(_) => {}
            }
        }
    }

    /// The promises about Kommo that hold whatever work ran, injected due work included (its
    /// lane and its record guard them): a message's delivery status only moves forward, and a
    /// client message is imported once.
    pub fn check_kommo_invariants(&self) {
        use shared::testing::KommoCall;
        use std::collections::{HashMap, HashSet};

        let mut statuses: HashMap<(String, String), i8> = HashMap::new();
        let mut imports = HashSet::new();
        for recorded in self.kommo.calls() {
            match recorded.call {
                KommoCall::DeliveryStatus(request) => {
                    let code = request.status.wire_code();
                    let key = (recorded.scope_id, request.msgid);
                    if let Some(before) = statuses.insert(key.clone(), code) {
                        assert!(code > before, "Kommo told delivery status {code} after {before} for {key:?}");
                    }
                }
                KommoCall::Import(request) => {
                    let key = (recorded.scope_id, request.payload.msgid.clone());
                    assert!(imports.insert(key.clone()), "client message imported twice: {key:?}");
                }
                _ => {}
            }
        }
    }
}

/// What every answer of the bridge must be: never a server error (the store and the fakes do
/// not fail here, so a 5xx is a bug), and a JSON body with `error.code` on a 4xx. A 204
/// (CORS preflight) has no body.
pub fn check_response(response: &HttpResponse) {
    let status = response.status();
    if trace() {
        eprintln!("answer: {status} {}", String::from_utf8_lossy(response.body()));
    }
    assert!(!status.is_server_error(), "server error {status}: {}", String::from_utf8_lossy(response.body()));
    if status == StatusCode::NO_CONTENT {
        assert!(response.body().is_empty(), "a 204 with a body");
        return;
    }
    let body: serde_json::Value = serde_json::from_slice(response.body())
        .unwrap_or_else(|e| panic!("{status} answered with a body that is not JSON ({e})"));
    if status.is_client_error() {
        assert!(body["error"]["code"].is_string(), "{status} without error.code: {body}");
    }
}

/// Whether to print each answer (`FUZZ_TRACE=1`), to see what an input reaches.
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some_and(|v| v == "1"))
}

/// The value of `account_id` when `body` is a JSON object naming one usable in a path, so a
/// webhook for any account reaches its handler rather than stopping at the scope check.
pub fn account_in(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Account {
        account_id: String,
    }
    let account = serde_json::from_slice::<Account>(body).ok()?.account_id;
    let usable = !account.is_empty()
        && account.len() <= 128
        && account.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    usable.then_some(account)
}
