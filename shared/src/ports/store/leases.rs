//! Typing leases: who is typing in a conversation, as a lease that lapses by itself.

use async_trait::async_trait;

use super::StoreError;

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

/// Leases outlive their deadline by this much before TTL may collect them.
pub const LEASE_GRACE_S: i64 = 3600;
