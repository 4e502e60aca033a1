//! Storage ports: one small trait per capability, each with two adapters,
//! [`crate::adapters::memory`] (the embedded default) and [`crate::adapters::dynamo`] (one
//! DynamoDB table). `crate::testing::conformance` is the one suite both must pass. A flow takes
//! only the capabilities it uses.
//!
//! Storage is truth and TTL is only garbage collection: every item carries `expires_at` (epoch
//! seconds, the table's TTL attribute) and a precise `*_ms` deadline, and every read filters on
//! the deadline, so an expired item that DynamoDB has not deleted yet is never taken as live.
//! Every key starts with the scope id, so one account never reaches another's items.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::models::status::DeliveryStatus;
pub use crate::rules::lanes::LaneView;
pub use crate::rules::presence::{HeartbeatOutcome, PresenceView};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("a stored item is not in the expected shape: {0}")]
    Corrupt(String),
}

/// Who holds a typing lease in a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseKey {
    pub scope_id: String,
    pub conversation_id: String,
    /// `manager:{kommo user id}` or `client:{integration user id}`.
    pub holder: String,
}

impl LeaseKey {
    pub fn manager(scope_id: &str, conversation_id: &str, manager_id: &str) -> Self {
        Self {
            scope_id: scope_id.into(),
            conversation_id: conversation_id.into(),
            holder: format!("manager:{manager_id}"),
        }
    }
    pub fn client(scope_id: &str, conversation_id: &str, user_id: &str) -> Self {
        Self { scope_id: scope_id.into(), conversation_id: conversation_id.into(), holder: format!("client:{user_id}") }
    }
    /// The manager a manager's lease names.
    pub fn manager_id(&self) -> Option<&str> {
        self.holder.strip_prefix("manager:")
    }
    /// The send lane of this holder's typing events ([`crate::rules::lanes`]).
    pub fn lane(&self) -> String {
        crate::rules::lanes::typing_lane(&self.conversation_id, &self.holder)
    }
}

/// A live typing lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub expires_at_ms: i64,
    pub last_forwarded_at_ms: Option<i64>,
}

/// What one [`TypingLeases::extend`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    /// No lease was stored: this write started one.
    Started,
    /// A stored lease was pushed further out: a live one, or one that lapsed but was not ended
    /// yet (its end is announced when it is ended, so until then it may go on).
    Extended { previous_expires_at_ms: i64 },
    /// The live lease already reaches as far (a duplicate or a late webhook): nothing written.
    Unchanged { expires_at_ms: i64 },
}

/// What one client typing signal did to the client's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSignal {
    /// A live lease reaches at least as far now (the common case: one write).
    Extended,
    /// No live lease was there: this signal started one. `forward_now` when it also claimed the
    /// next typing call (none in the last `min_gap_ms`); `next_forward_at_ms` is when the
    /// refresh chain should forward next.
    Started { forward_now: bool, next_forward_at_ms: i64 },
}

/// Typing leases: typing is a lease that lapses by itself, never a toggle.
#[async_trait]
pub trait TypingLeases: Send + Sync {
    /// Opens or extends the lease to `expires_at_ms` in one conditional write. A lease that
    /// lapsed is extended, not started anew, until [`Self::end_if_lapsed`] or [`Self::end`]
    /// removes it.
    async fn extend(&self, key: &LeaseKey, expires_at_ms: i64) -> Result<LeaseChange, StoreError>;
    /// The live lease, if any.
    async fn get_lease(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<Lease>, StoreError>;
    /// The stored lease, live or lapsed and not yet ended (what a timer at its expiry decides on).
    async fn stored_lease(&self, key: &LeaseKey) -> Result<Option<Lease>, StoreError> {
        self.get_lease(key, i64::MIN).await
    }
    /// Ends a live lease now; returns it if this call is the one that ended it.
    async fn end(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<Lease>, StoreError>;
    /// Compare-and-set for timers: ends the lease only if it has lapsed (and is still stored);
    /// returns the expiry it had when this call is the one that ended it.
    async fn end_if_lapsed(&self, key: &LeaseKey, now_ms: i64) -> Result<Option<i64>, StoreError>;
    /// A client's typing signal: extends the live lease to `expires_at_ms` in one conditional
    /// write, or (when there is none) starts one, claiming the next typing call if none was made
    /// in the last `min_gap_ms`.
    async fn client_typing_signal(
        &self,
        key: &LeaseKey,
        now_ms: i64,
        expires_at_ms: i64,
        min_gap_ms: i64,
    ) -> Result<ClientSignal, StoreError>;
    /// The refresh chain's claim on the next typing call: only for a live lease whose last
    /// call is at least `min_gap_ms` old. One conditional write; false leaves everything as it was.
    async fn claim_refresh(&self, key: &LeaseKey, now_ms: i64, min_gap_ms: i64) -> Result<bool, StoreError>;
}

/// Whose presence, on which device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresenceKey {
    pub scope_id: String,
    /// `client:{user id}` or `manager:{conversation id}:{user id}`.
    pub subject: String,
    pub device: String,
}

/// Presence windows: online means a heartbeat within the window.
#[async_trait]
pub trait PresenceWindows: Send + Sync {
    /// Records a heartbeat in at most one conditional write, none if the device's last write
    /// is younger than `coalesce_ms` and it is still online.
    async fn heartbeat(
        &self,
        key: &PresenceKey,
        now_ms: i64,
        window_ms: i64,
        coalesce_ms: i64,
    ) -> Result<HeartbeatOutcome, StoreError>;
    /// Closes the device's window now; true when it was online.
    async fn go_offline(&self, key: &PresenceKey, now_ms: i64) -> Result<bool, StoreError>;
    /// The subject's presence over all devices at `now_ms`.
    async fn presence(&self, scope_id: &str, subject: &str, now_ms: i64) -> Result<PresenceView, StoreError> {
        let devices = self.presence_devices(scope_id, subject, now_ms).await?;
        Ok(devices.into_iter().map(|(_, view)| view).fold(PresenceView::default(), PresenceView::merge))
    }
    /// Each device's presence at `now_ms` (for managers, the device is the Kommo user).
    async fn presence_devices(
        &self,
        scope_id: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Vec<(String, PresenceView)>, StoreError>;
    /// Compare-and-set of what the chat service was last told about a device's presence:
    /// true when this call changed it to `online` (and so the one push is due).
    async fn mark_pushed(&self, scope_id: &str, subject: &str, device: &str, online: bool) -> Result<bool, StoreError>;
    /// What [`Self::mark_pushed`] last recorded (`None`: nothing yet): the state the chat
    /// service is to be told.
    async fn pushed(&self, scope_id: &str, subject: &str, device: &str) -> Result<Option<bool>, StoreError>;
}

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A manager's message, Kommo → chat service.
    Outgoing,
    /// A client's message, chat service → Kommo.
    Incoming,
}

/// Where relaying a manager's message to the chat service stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayState {
    /// Accepted, not delivered yet (maybe being delivered, maybe waiting to retry).
    Pending,
    /// The chat service accepted it.
    Sent,
    /// Refused, or the retries ran out: the dead-letter state, reported to Kommo as an error.
    Failed,
}

/// What the bridge knows of one manager message (or of one it only heard a status for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub scope_id: String,
    pub kommo_msgid: String,
    pub conversation_id: String,
    pub direction: Direction,
    pub chat_msgid: Option<String>,
    pub created_at_ms: i64,
    /// The status register (see [`crate::models::status`]); `None` while only sent.
    pub status_rank: Option<i8>,
    pub relay: RelayState,
}

/// How a relay attempt ended, for [`MessageRecords::finish_relay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayOutcome {
    Sent {
        chat_msgid: Option<String>,
    },
    /// Try again, not before this moment.
    RetryAt(i64),
    Failed,
}

/// What [`MessageRecords::claim_relay`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayClaim {
    /// The caller holds the relay now.
    Claimed,
    /// Sent, failed, or no such message: nothing left to relay.
    Done,
    /// Still pending, but held until this moment: by another delivery of the work, by a retry's
    /// wait, or by a claim whose answer was lost (a timeout after the write landed). Whoever
    /// finds this looks again then, so the message is never left unrelayed.
    HeldUntil(i64),
}

/// What [`MessageRecords::advance_status`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// The register moved; the one status call to Kommo is due.
    Advanced { previous_rank: Option<i8> },
    /// A duplicate, a regression or a late failure: nothing written, nothing to send.
    Unchanged { current_rank: Option<i8> },
}

/// Message records, their relay state and their monotonic status register.
#[async_trait]
pub trait MessageRecords: Send + Sync {
    /// Records a manager message once (and indexes it under its conversation): false if its
    /// Kommo msgid is already recorded.
    async fn insert_message(&self, record: &MessageRecord) -> Result<bool, StoreError>;
    async fn get_message(&self, scope_id: &str, kommo_msgid: &str) -> Result<Option<MessageRecord>, StoreError>;
    /// Applies a status with one conditional update, creating the record if the bridge never
    /// saw the message (deployments start mid-conversation).
    async fn advance_status(
        &self,
        scope_id: &str,
        kommo_msgid: &str,
        status: &DeliveryStatus,
        now_ms: i64,
    ) -> Result<StatusChange, StoreError>;
    /// Claims the relay of a pending message for `hold_ms`, so two deliveries of the same
    /// queued work never both post it.
    async fn claim_relay(
        &self,
        scope_id: &str,
        kommo_msgid: &str,
        now_ms: i64,
        hold_ms: i64,
    ) -> Result<RelayClaim, StoreError>;
    /// Records how a claimed relay ended; a chat-service msgid becomes a name for the message.
    async fn finish_relay(&self, scope_id: &str, kommo_msgid: &str, outcome: &RelayOutcome) -> Result<(), StoreError>;
    /// The Kommo msgid of the message the chat service calls `chat_msgid`.
    async fn kommo_msgid_for(&self, scope_id: &str, chat_msgid: &str) -> Result<Option<String>, StoreError>;
    /// The manager messages of a conversation created at or before `created_at_ms`, newest
    /// first, at most `limit`.
    async fn outgoing_up_to(
        &self,
        scope_id: &str,
        conversation_id: &str,
        created_at_ms: i64,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;
    /// Records a client message once, by the chat service's msgid (and indexes it under its
    /// conversation by `sent_at_ms`): false for a duplicate.
    async fn insert_incoming(
        &self,
        scope_id: &str,
        chat_msgid: &str,
        conversation_id: &str,
        sent_at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Undoes [`MessageRecords::insert_incoming`] for a message that was then refused.
    async fn forget_incoming(
        &self,
        scope_id: &str,
        chat_msgid: &str,
        conversation_id: &str,
        sent_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// The newest client message of a conversation: (sent_at_ms, chat msgid).
    async fn newest_incoming(&self, scope_id: &str, conversation_id: &str)
    -> Result<Option<(i64, String)>, StoreError>;
    /// Records how a client message's import ended: in Kommo (with Kommo's msgid when its answer
    /// named one), or dead-lettered.
    async fn finish_incoming(&self, scope_id: &str, chat_msgid: &str, state: &IncomingState) -> Result<(), StoreError>;
    /// Where a client message stands; `None` if the bridge never recorded it.
    async fn incoming_state(&self, scope_id: &str, chat_msgid: &str) -> Result<Option<IncomingState>, StoreError>;
}

/// Where importing a client message into Kommo stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingState {
    /// Recorded, not in Kommo yet.
    Pending,
    /// In Kommo, under Kommo's msgid when its answer named one.
    Imported { kommo_msgid: Option<String> },
    /// Refused by Kommo, or the attempts ran out: the dead-letter state.
    Failed,
}

/// What the bridge knows of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationInfo {
    /// The integration's id.
    pub conversation_id: String,
    pub kommo_chat_id: Option<String>,
    /// The client's user id in the chat service.
    pub client_user_id: Option<String>,
    /// Kommo's id of the client, on a conversation a manager started in Kommo (the chat service
    /// did not know it then).
    pub kommo_client_id: Option<String>,
    /// On a conversation a manager started, the id the chat service answered under instead of
    /// the bridge's: [`Conversations::find_conversation`] leads there.
    pub answered_as: Option<String>,
}

impl ConversationInfo {
    /// A manager started it in Kommo ("write first"): Kommo gave no id of the integration's, so
    /// the bridge named it by Kommo's chat id.
    pub fn started_in_kommo(&self) -> bool {
        self.kommo_chat_id.as_deref() == Some(self.conversation_id.as_str())
    }
}

/// What [`Conversations::remember_conversation`] learned; a field left `None` is kept as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversationFacts<'a> {
    pub kommo_chat_id: Option<&'a str>,
    pub client_user_id: Option<&'a str>,
    pub kommo_client_id: Option<&'a str>,
    pub answered_as: Option<&'a str>,
}

/// Conversations: the integration's ids, Kommo's chat ids, the client, and the read mark.
#[async_trait]
pub trait Conversations: Send + Sync {
    /// Records what is known of a conversation; a field given as `None` is left as it is. A
    /// Kommo chat id also becomes a name of the conversation (the last one given wins).
    async fn remember_conversation(
        &self,
        scope_id: &str,
        conversation_id: &str,
        facts: &ConversationFacts<'_>,
    ) -> Result<(), StoreError>;
    /// A conversation named by the integration's id or by Kommo's chat id (what the Kommo UI
    /// sees); one that was answered under another id leads to that one.
    async fn find_conversation(&self, scope_id: &str, id: &str) -> Result<Option<ConversationInfo>, StoreError>;
    /// Moves the conversation's read mark forward to the client message (sent_at_ms, chat msgid):
    /// true when it moved, so the one `message.read` is due.
    async fn advance_read_mark(
        &self,
        scope_id: &str,
        conversation_id: &str,
        sent_at_ms: i64,
        chat_msgid: &str,
    ) -> Result<bool, StoreError>;
}

/// Keys remembered for a while, so a repeated delivery is done once.
#[async_trait]
pub trait DedupeKeys: Send + Sync {
    /// True for the first claim of `key` within `ttl_ms`.
    async fn claim(&self, scope_id: &str, key: &str, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Forgets a claim, so the work it guarded can be tried again (after that work failed).
    async fn release(&self, scope_id: &str, key: &str) -> Result<(), StoreError>;
}

/// A turn on a lane, from [`SendTurns::take_turn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// This caller may send; `sent_mark` is the highest mark recorded on the lane so far.
    Yours { token: String, sent_mark: Option<i64> },
    /// Another sender holds the lane until `until_ms`.
    Busy { until_ms: i64 },
}

/// One sender at a time per lane. What the bridge tells a peer about one thing (a message's
/// status to Kommo, a manager's typing to the chat service) is decided and sent inside a turn,
/// so a slow send is never overtaken by a later one about the same thing: two queued sends run
/// by two workers at once would otherwise reach the peer in either order.
#[async_trait]
pub trait SendTurns: Send + Sync {
    /// Takes the lane for `hold_ms` (longer than any one send may take, so a worker that died
    /// holding it delays the lane, never blocks it), unless another sender holds it.
    async fn take_turn(&self, scope_id: &str, lane: &str, now_ms: i64, hold_ms: i64) -> Result<Turn, StoreError>;
    /// Reads the lane without taking it (one read): lets a caller with nothing to send, and
    /// no one sending, skip the two writes of a turn.
    async fn peek_turn(&self, scope_id: &str, lane: &str, now_ms: i64) -> Result<LaneView, StoreError>;
    /// Gives the lane back, recording `sent_mark` when given (marks only rise: a lower or equal
    /// one is not written).
    async fn end_turn(&self, scope_id: &str, lane: &str, token: &str, sent_mark: Option<i64>)
    -> Result<(), StoreError>;
}

/// Where an account's installation of the integration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    /// Installed, the channel connected, tokens held.
    Connected,
    /// Kommo refused the refresh token: chats go on, the Kommo REST API waits for an install.
    NeedsReinstall,
    /// The integration was disabled in the account: nothing of it is forwarded or stored.
    Disconnected,
}

impl AccountState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::NeedsReinstall => "needs_reinstall",
            Self::Disconnected => "disconnected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Connected, Self::NeedsReinstall, Self::Disconnected].into_iter().find(|state| state.as_str() == text)
    }
}

/// A Kommo account that installed the integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    /// Kommo's numeric account id (what the Kommo UI's tokens name).
    pub account_id: u64,
    /// `{subdomain}.kommo.com`: the only host its tokens are sent to.
    pub host: String,
    /// The account's Chat API id.
    pub amojo_id: String,
    pub scope_id: String,
    pub state: AccountState,
    /// The OAuth tokens, sealed (`crate::ports::accounts::TokenSealer`): never stored in
    /// plaintext. None once disconnected.
    pub sealed_tokens: Option<String>,
    pub access_expires_at_ms: i64,
    /// Bumped by every change of the tokens: a refresh is written only over the version it read,
    /// so two refreshes at once never lose the newer (rotated) refresh token.
    pub token_version: u64,
    pub installed_at_ms: i64,
}

/// A scope's account in the registry, as events check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeAccount {
    pub account_id: u64,
    pub state: AccountState,
}

/// The accounts that installed the integration (global items: they map a scope to its account).
#[async_trait]
pub trait AccountRegistry: Send + Sync {
    /// Records an installation, or a new one of the same account (replacing what was stored).
    async fn put_account(&self, record: &AccountRecord) -> Result<(), StoreError>;
    async fn get_account(&self, account_id: u64) -> Result<Option<AccountRecord>, StoreError>;
    /// The account a scope belongs to, and where it stands (one read: events check it).
    async fn account_of_scope(&self, scope_id: &str) -> Result<Option<ScopeAccount>, StoreError>;
    /// Compare-and-set of the tokens: written (and the version bumped) only if the stored
    /// version is still `expected_version`; true when this call wrote them.
    async fn replace_tokens(
        &self,
        account_id: u64,
        expected_version: u64,
        sealed_tokens: &str,
        access_expires_at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Moves the account (and its scope) to `state`; with `Disconnected` its tokens are deleted
    /// too.
    async fn set_account_state(&self, account_id: u64, state: AccountState) -> Result<(), StoreError>;
    /// Every account, for the operator (never their tokens' plaintext).
    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError>;
}

/// A manager of an account: their Chat API id, Kommo user id and name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownManager {
    pub amojo_id: String,
    pub kommo_user_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An account's managers as last read from Kommo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerList {
    pub fetched_at_ms: i64,
    pub managers: Vec<KnownManager>,
}

impl ManagerList {
    /// Kommo's users as the directory keeps them: those with a Chat API id.
    pub fn from_users(users: &[crate::models::oauth::KommoUser], fetched_at_ms: i64) -> Self {
        let managers = users
            .iter()
            .filter_map(|user| {
                let amojo_id = user.amojo_id.clone().filter(|id| !id.is_empty())?;
                let name = user.name.clone().filter(|name| !name.is_empty());
                Some(KnownManager { amojo_id, kommo_user_id: user.id, name })
            })
            .collect();
        Self { fetched_at_ms, managers }
    }
}

/// The managers of each scope's account (one item per scope: one read names every manager).
#[async_trait]
pub trait ManagerDirectory: Send + Sync {
    async fn managers_of(&self, scope_id: &str) -> Result<Option<ManagerList>, StoreError>;
    /// Replaces the scope's directory.
    async fn put_managers(&self, scope_id: &str, list: &ManagerList) -> Result<(), StoreError>;
}

/// Everything the handlers store, in one adapter.
pub trait Store:
    TypingLeases
    + PresenceWindows
    + MessageRecords
    + Conversations
    + DedupeKeys
    + SendTurns
    + AccountRegistry
    + ManagerDirectory
{
    /// Reads and writes made so far, for tests and the amplification figures.
    fn op_counts(&self) -> OpCounts;
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub reads: u64,
    pub writes: u64,
}

/// Counters the adapters bump on every read and write they make (including failed conditional writes, which
/// DynamoDB bills as writes).
#[derive(Debug, Default)]
pub struct OpCounter {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl OpCounter {
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn counts(&self) -> OpCounts {
        OpCounts { reads: self.reads.load(Ordering::Relaxed), writes: self.writes.load(Ordering::Relaxed) }
    }
}

/// TTL (epoch seconds) for an item whose precise deadline is `deadline_ms`, kept `grace_s` longer.
pub fn ttl_seconds(deadline_ms: i64, grace_s: i64) -> i64 {
    deadline_ms.div_euclid(1000) + 1 + grace_s
}

/// How long a presence item outlives its window, so `last_seen_at` survives reconnects.
pub const PRESENCE_RETENTION_S: i64 = 30 * 24 * 3600;
/// How long a message record is kept after its last change.
pub const MESSAGE_RETENTION_S: i64 = 90 * 24 * 3600;
/// Leases outlive their deadline by this much before TTL may collect them.
pub const LEASE_GRACE_S: i64 = 3600;
