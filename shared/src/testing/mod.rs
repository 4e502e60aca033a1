//! Test doubles, behind the `testing` feature (never in the release binaries): in-memory
//! stand-ins for the outbound ports, for handler tests, simulations and benchmarks: real
//! implementations that record what they were asked and can be told to fail, not mocks with
//! canned answers. (The HTTP clients themselves are tested against independent fakes over real
//! HTTP in `tests/`.) Also a clock and timers that move only when told, the simulated bridge
//! ([`sim`]) and the storage conformance suite ([`conformance`]).

pub mod bad_input;
pub mod conformance;
pub mod sim;

/// The embedded store, for the unit tests of flows (which name no adapter themselves).
pub use crate::adapters::memory::MemoryStore;

/// Metric lines, kept for a test to read.
#[derive(Default)]
pub struct RecordingMetrics(Mutex<Vec<String>>);

impl RecordingMetrics {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl crate::app::metrics::MetricLines for RecordingMetrics {
    fn write(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

/// How many items a store holds: the bad-input tables check that a refused request left none,
/// on each store.
#[async_trait]
pub trait CountItems {
    async fn count_items(&self) -> usize;
}

#[async_trait]
impl CountItems for crate::adapters::memory::MemoryStore {
    async fn count_items(&self) -> usize {
        self.item_count()
    }
}

#[cfg(feature = "adapters")]
#[async_trait]
impl CountItems for crate::adapters::dynamo::DynamoStore {
    async fn count_items(&self) -> usize {
        self.item_count().await.expect("the table can be scanned")
    }
}

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::models::chat::BridgeEvent;
use crate::models::kommo::*;
use crate::ports::accounts::{KommoRest, KommoRestError, SealError, TokenSealer};
use crate::ports::chat::{ChatAnswer, ChatError, ChatService};
use crate::ports::kommo::{KommoApi, KommoError};
use crate::ports::timers::{DueWork, TimerError, Timers};
use crate::rules::retry::RetryPolicy;
use crate::time::Clock;

/// A clock that stands still until moved: for tests of windows and leases.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn at_ms(ms: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(ms))
    }
    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Timers that only record: a test takes what is due and runs it, with a manual clock.
#[derive(Debug, Default)]
pub struct ManualTimers {
    pending: Mutex<Vec<(i64, DueWork)>>,
}

impl ManualTimers {
    /// Removes and returns the work due at `now_ms`, earliest first.
    pub fn take_due(&self, now_ms: i64) -> Vec<DueWork> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.sort_by_key(|(due, _)| *due);
        let split = pending.partition_point(|(due, _)| *due <= now_ms);
        pending.drain(..split).map(|(_, work)| work).collect()
    }

    pub fn pending(&self) -> Vec<(i64, DueWork)> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl Timers for ManualTimers {
    async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push((due_at_ms, work));
        Ok(())
    }
}

/// What a recording fake keeps: the calls it took (with the clock's time), the failures it was
/// told to answer next, and a call it was told to hold on its way: that one lands (is recorded
/// and answered) only once released, like a request on a slow network, so tests can make one
/// send overtake another.
struct Recorder<C, E> {
    clock: std::sync::Arc<dyn Clock>,
    calls: Mutex<Vec<Recorded<C>>>,
    failures: Mutex<VecDeque<E>>,
    held: Mutex<Option<std::sync::Arc<tokio::sync::Notify>>>,
}

impl<C: Clone, E> Recorder<C, E> {
    fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        Self { clock, calls: Mutex::default(), failures: Mutex::default(), held: Mutex::default() }
    }

    fn calls(&self) -> Vec<Recorded<C>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn fail_next(&self, errors: impl IntoIterator<Item = E>) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).extend(errors);
    }

    fn next_failure(&self) -> Option<E> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }

    fn record(&self, scope_id: &str, call: C) {
        let recorded = Recorded { at_ms: self.clock.now_ms(), scope_id: scope_id.into(), call };
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(recorded);
    }

    fn hold_next(&self) -> std::sync::Arc<tokio::sync::Notify> {
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate.clone());
        gate
    }

    /// Waits here if this is the held call, until it is released.
    async fn pass(&self) {
        let gate = self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(gate) = gate {
            gate.notified().await;
        }
    }
}

/// One call the bridge made, with the clock's time.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded<T> {
    pub at_ms: i64,
    pub scope_id: String,
    pub call: T,
}

/// What the bridge asked of amojo.
#[derive(Debug, Clone, PartialEq)]
pub enum KommoCall {
    Connect(ConnectRequest),
    Disconnect(DisconnectRequest),
    CreateChat(Box<CreateChatRequest>),
    Import(Box<ImportMessageRequest>),
    Edit(Box<EditMessageRequest>),
    React(ReactRequest),
    Typing(TypingRequest),
    DeliveryStatus(DeliveryStatusRequest),
}

/// Kommo in memory: records each call and answers as amojo would, or with a queued failure.
pub struct RecordingKommo(Recorder<KommoCall, KommoError>);

impl RecordingKommo {
    pub fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        Self(Recorder::new(clock))
    }

    /// The next delivery-status call lands only when the returned gate is notified.
    pub fn hold_next_status(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.0.hold_next()
    }

    pub fn calls(&self) -> Vec<Recorded<KommoCall>> {
        self.0.calls()
    }

    /// The next calls fail with these errors, in order (each still recorded).
    pub fn fail_next(&self, errors: impl IntoIterator<Item = KommoError>) {
        self.0.fail_next(errors);
    }

    fn record(&self, scope_id: &str, call: KommoCall) -> Result<(), KommoError> {
        self.0.record(scope_id, call);
        self.0.next_failure().map_or(Ok(()), Err)
    }
}

#[async_trait]
impl KommoApi for RecordingKommo {
    async fn connect(&self, request: &ConnectRequest) -> Result<ConnectResponse, KommoError> {
        self.record("", KommoCall::Connect(request.clone()))?;
        Ok(ConnectResponse { scope_id: format!("channel_{}", request.account_id), extra: Default::default() })
    }

    async fn disconnect(&self, request: &DisconnectRequest) -> Result<(), KommoError> {
        self.record("", KommoCall::Disconnect(request.clone()))
    }

    async fn create_chat(&self, scope_id: &str, request: &CreateChatRequest) -> Result<CreateChatResponse, KommoError> {
        self.record(scope_id, KommoCall::CreateChat(Box::new(request.clone())))?;
        Ok(CreateChatResponse { id: Some(format!("chat-{}", request.conversation_id)), extra: Default::default() })
    }

    async fn import_message(
        &self,
        scope_id: &str,
        request: &ImportMessageRequest,
    ) -> Result<ImportMessageResponse, KommoError> {
        self.record(scope_id, KommoCall::Import(Box::new(request.clone())))?;
        Ok(ImportMessageResponse {
            new_message: Some(ImportedMessage {
                conversation_id: Some(format!("chat-{}", request.payload.conversation_id)),
                sender_id: None,
                receiver_id: None,
                msgid: Some(format!("kommo-{}", request.payload.msgid)),
                ref_id: Some(request.payload.msgid.clone()),
            }),
        })
    }

    async fn edit_message(&self, scope_id: &str, request: &EditMessageRequest) -> Result<(), KommoError> {
        self.record(scope_id, KommoCall::Edit(Box::new(request.clone())))
    }

    async fn react(&self, scope_id: &str, request: &ReactRequest) -> Result<(), KommoError> {
        self.record(scope_id, KommoCall::React(request.clone()))
    }

    async fn typing(&self, scope_id: &str, request: &TypingRequest) -> Result<(), KommoError> {
        self.record(scope_id, KommoCall::Typing(request.clone()))
    }

    async fn delivery_status(&self, scope_id: &str, request: &DeliveryStatusRequest) -> Result<(), KommoError> {
        self.0.pass().await;
        self.record(scope_id, KommoCall::DeliveryStatus(request.clone()))
    }
}

/// The chat service in memory: records each delivered event and its `webhook-id`, or fails as
/// told.
pub struct RecordingChat(Recorder<BridgeEvent, ChatError>, Mutex<Vec<String>>);

impl RecordingChat {
    pub fn new(clock: std::sync::Arc<dyn Clock>) -> Self {
        Self(Recorder::new(clock), Mutex::new(Vec::new()))
    }

    /// The `webhook-id` of each event of [`Self::events`], in the same order.
    pub fn webhook_ids(&self) -> Vec<String> {
        self.1.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The next event lands only when the returned gate is notified.
    pub fn hold_next(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.0.hold_next()
    }

    pub fn events(&self) -> Vec<Recorded<BridgeEvent>> {
        self.0.calls()
    }

    /// The next deliveries fail with these errors, in order (a failed one is not recorded).
    pub fn fail_next(&self, errors: impl IntoIterator<Item = ChatError>) {
        self.0.fail_next(errors);
    }
}

#[async_trait]
impl ChatService for RecordingChat {
    async fn deliver(
        &self,
        event: &BridgeEvent,
        webhook_id: &str,
        _policy: RetryPolicy,
    ) -> Result<ChatAnswer, ChatError> {
        self.0.pass().await;
        if let Some(error) = self.0.next_failure() {
            return Err(error);
        }
        let mut ids = self.1.lock().unwrap_or_else(|p| p.into_inner());
        self.0.record(event.scope_id(), event.clone());
        ids.push(webhook_id.to_owned());
        // Like a chat service that keeps its own ids: `chat-<Kommo msgid>` for a message.
        let msgid = match event {
            BridgeEvent::MessageCreated { reference, .. } => Some(format!("chat-{reference}")),
            _ => None,
        };
        Ok(ChatAnswer { msgid })
    }
}

/// Kommo's OAuth and REST API in memory, for one account: each exchange or refresh issues the
/// next numbered pair of tokens; records each call (`exchange {host} {code}`, `account {host}
/// {access token}`, `refresh {host} {refresh token}`), or fails as told.
#[derive(Default)]
pub struct RecordingKommoRest {
    calls: Mutex<Vec<String>>,
    failures: Mutex<VecDeque<KommoRestError>>,
    /// Failures for the next call of one kind (its record starts with the prefix).
    failures_of_kind: Mutex<Vec<(String, KommoRestError)>>,
    issued: std::sync::atomic::AtomicU64,
    /// Refresh tokens that still work: Kommo rotates them, and "the old refresh token will still
    /// be functional until you use the new one".
    live_refresh_tokens: Mutex<std::collections::HashSet<String>>,
    /// Each refresh token issued by a refresh → the one it was refreshed from, retired when it
    /// is used.
    refreshed_from: Mutex<std::collections::HashMap<String, String>>,
    held_refresh: Mutex<Option<std::sync::Arc<tokio::sync::Notify>>>,
}

impl RecordingKommoRest {
    pub const ACCOUNT_ID: u64 = 42;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The next call fails with `error`.
    pub fn fail_next(&self, error: KommoRestError) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).push_back(error);
    }

    /// The next refresh waits, after it is recorded and before Kommo decides, until the gate is
    /// notified: so another refresh can overtake it.
    pub fn hold_next_refresh(&self) -> std::sync::Arc<tokio::sync::Notify> {
        let gate = std::sync::Arc::new(tokio::sync::Notify::new());
        *self.held_refresh.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate.clone());
        gate
    }

    /// The account's Chat API id.
    pub fn amojo_id(&self) -> String {
        "amojo-account-42".into()
    }

    /// The next call whose record starts with `prefix` (`"account "`, `"users "`, `"refresh "`)
    /// fails with `error`.
    pub fn fail_next_call(&self, prefix: &str, error: KommoRestError) {
        self.failures_of_kind.lock().unwrap_or_else(|p| p.into_inner()).push((prefix.to_owned(), error));
    }

    fn record(&self, call: String) -> Result<(), KommoRestError> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).push(call.clone());
        let mut of_kind = self.failures_of_kind.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = of_kind.iter().position(|(prefix, _)| call.starts_with(prefix.as_str())) {
            return Err(of_kind.remove(at).1);
        }
        drop(of_kind);
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).pop_front().map_or(Ok(()), Err)
    }

    fn issue(&self) -> crate::models::oauth::Tokens {
        let n = self.issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.live_refresh_tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(format!("refresh-{n}"));
        crate::models::oauth::Tokens {
            access_token: format!("access-{n}"),
            refresh_token: format!("refresh-{n}"),
            expires_in: 86_400,
            token_type: Some("Bearer".into()),
        }
    }
}

#[async_trait]
impl KommoRest for RecordingKommoRest {
    async fn exchange_code(&self, host: &str, code: &str) -> Result<crate::models::oauth::Tokens, KommoRestError> {
        self.record(format!("exchange {host} {code}"))?;
        Ok(self.issue())
    }

    async fn refresh(&self, host: &str, refresh_token: &str) -> Result<crate::models::oauth::Tokens, KommoRestError> {
        self.record(format!("refresh {host} {refresh_token}"))?;
        let gate = self.held_refresh.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(gate) = gate {
            gate.notified().await;
        }
        {
            let mut live = self.live_refresh_tokens.lock().unwrap_or_else(|p| p.into_inner());
            if !live.contains(refresh_token) {
                return Err(KommoRestError::Refused { status: 400, detail: "Token has been revoked".into() });
            }
            // Using a token retires the one it replaced.
            let parents = self.refreshed_from.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(parent) = parents.get(refresh_token) {
                live.remove(parent);
            }
        }
        let issued = self.issue();
        let mut parents = self.refreshed_from.lock().unwrap_or_else(|p| p.into_inner());
        parents.insert(issued.refresh_token.clone(), refresh_token.to_owned());
        Ok(issued)
    }

    async fn account(
        &self,
        host: &str,
        access_token: &str,
    ) -> Result<crate::models::oauth::KommoAccount, KommoRestError> {
        self.record(format!("account {host} {access_token}"))?;
        Ok(crate::models::oauth::KommoAccount {
            id: Self::ACCOUNT_ID,
            subdomain: host.split('.').next().map(str::to_owned),
            amojo_id: self.amojo_id(),
            extra: Default::default(),
        })
    }

    async fn users(
        &self,
        host: &str,
        access_token: &str,
    ) -> Result<Vec<crate::models::oauth::KommoUser>, KommoRestError> {
        self.record(format!("users {host} {access_token}"))?;
        let user = |id: u64, name: &str| crate::models::oauth::KommoUser {
            id,
            name: Some(name.to_owned()),
            amojo_id: Some(format!("amojo-user-{id}")),
        };
        Ok(vec![user(7, "Ann"), user(8, "Bob")])
    }
}

/// A sealer for tests and the pure core: not encryption, but never the plaintext as it is, and
/// bound to its context like the real one (`crate::adapters::sealer`).
#[derive(Debug, Default, Clone, Copy)]
pub struct TestSealer;

impl TokenSealer for TestSealer {
    fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let masked: Vec<u8> = plaintext.iter().map(|b| b ^ 0x5a).collect();
        format!("test.{}.{}", hex::encode(context), hex::encode(masked))
    }

    fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let rest = sealed.strip_prefix("test.").ok_or_else(|| SealError("unknown format".into()))?;
        let (sealed_context, masked) = rest.split_once('.').ok_or_else(|| SealError("unknown format".into()))?;
        if sealed_context != hex::encode(context) {
            return Err(SealError("another context".into()));
        }
        let masked = hex::decode(masked).map_err(|e| SealError(e.to_string()))?;
        Ok(masked.iter().map(|b| b ^ 0x5a).collect())
    }
}

/// An outbound side that accepts everything at once and keeps nothing: for benchmarks, so a
/// figure measures the bridge, not a fake.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullOutbound;

#[async_trait]
impl KommoApi for NullOutbound {
    async fn connect(&self, request: &ConnectRequest) -> Result<ConnectResponse, KommoError> {
        Ok(ConnectResponse { scope_id: request.account_id.clone(), extra: Default::default() })
    }
    async fn disconnect(&self, _: &DisconnectRequest) -> Result<(), KommoError> {
        Ok(())
    }
    async fn create_chat(&self, _: &str, request: &CreateChatRequest) -> Result<CreateChatResponse, KommoError> {
        Ok(CreateChatResponse { id: Some(request.conversation_id.clone()), extra: Default::default() })
    }
    async fn import_message(
        &self,
        _: &str,
        request: &ImportMessageRequest,
    ) -> Result<ImportMessageResponse, KommoError> {
        Ok(ImportMessageResponse {
            new_message: Some(ImportedMessage {
                conversation_id: Some(request.payload.conversation_id.clone()),
                sender_id: None,
                receiver_id: None,
                msgid: Some(request.payload.msgid.clone()),
                ref_id: None,
            }),
        })
    }
    async fn edit_message(&self, _: &str, _: &EditMessageRequest) -> Result<(), KommoError> {
        Ok(())
    }
    async fn react(&self, _: &str, _: &ReactRequest) -> Result<(), KommoError> {
        Ok(())
    }
    async fn typing(&self, _: &str, _: &TypingRequest) -> Result<(), KommoError> {
        Ok(())
    }
    async fn delivery_status(&self, _: &str, _: &DeliveryStatusRequest) -> Result<(), KommoError> {
        Ok(())
    }
}

#[async_trait]
impl ChatService for NullOutbound {
    async fn deliver(&self, _: &BridgeEvent, _: &str, _: RetryPolicy) -> Result<ChatAnswer, ChatError> {
        Ok(ChatAnswer::default())
    }
}

/// Timers that drop what they are given: for benchmarks of the inbound path alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardTimers;

#[async_trait]
impl Timers for DiscardTimers {
    async fn schedule(&self, _: DueWork, _: i64) -> Result<(), TimerError> {
        Ok(())
    }
}
