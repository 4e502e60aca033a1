//! Storage ports: one small trait per capability, each with two adapters,
//! [`crate::adapters::memory`] (the embedded default) and [`crate::adapters::dynamo`] (one
//! DynamoDB table). `crate::testing::conformance` is the one suite both must pass. A flow takes
//! only the capabilities it uses.
//!
//! Storage is truth and TTL is only garbage collection: every item carries `expires_at` (epoch
//! seconds, the table's TTL attribute) and a precise `*_ms` deadline, and every read filters on
//! the deadline, so an expired item that DynamoDB has not deleted yet is never taken as live.
//! Every key starts with the scope id, so one account never reaches another's items.
//!
//! One file per capability: [`TypingLeases`] (`leases`), [`PresenceWindows`] (`presence`),
//! [`MessageRecords`] (`messages`), [`Conversations`] (`conversations`), [`DedupeKeys`]
//! (`dedupe`), [`SendTurns`] (`turns`), [`AccountRegistry`] (`accounts`), [`ManagerDirectory`]
//! (`managers`), [`AccountSources`] (`sources`). Every item is re-exported here: `crate::ports::store::X` is the one path.

use std::sync::atomic::{AtomicU64, Ordering};

mod accounts;
mod conversations;
mod dedupe;
mod leases;
mod managers;
mod messages;
mod presence;
mod sources;
mod turns;

pub use accounts::{AccountRecord, AccountRegistry, AccountState, ScopeAccount};
pub use conversations::{ConversationFacts, ConversationInfo, Conversations};
pub use dedupe::{DedupeKeys, KeyClaim};
pub use leases::{ClientSignal, LEASE_GRACE_S, Lease, LeaseChange, LeaseKey, TypingLeases};
pub use managers::{KnownManager, ManagerDirectory, ManagerList};
pub use messages::{
    Direction, IncomingState, MESSAGE_RETENTION_S, MessageRecord, MessageRecords, RelayClaim, RelayOutcome, RelayState,
    StatusChange,
};
pub use presence::{HeartbeatOutcome, PRESENCE_RETENTION_S, PresenceKey, PresenceView, PresenceWindows};
pub use sources::{AccountSources, KnownSource};
pub use turns::{LaneView, SendTurns, Turn};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("a stored item is not in the expected shape: {0}")]
    Corrupt(String),
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
    + AccountSources
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
