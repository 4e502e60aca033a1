//! Message records: manager messages (their relay and status register) and client messages
//! (their import into Kommo).

use async_trait::async_trait;

use super::StoreError;
use crate::models::status::DeliveryStatus;

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

/// How long a message record is kept after its last change.
pub const MESSAGE_RETENTION_S: i64 = 90 * 24 * 3600;
