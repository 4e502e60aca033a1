//! Send turns: one sender at a time per lane.

use async_trait::async_trait;

use super::StoreError;
pub use crate::rules::lanes::LaneView;

/// A turn on a lane, from [`SendTurns::take_turn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// This caller may send; `sent_mark` is the highest mark recorded on the lane so far, and
    /// `unconfirmed` says it was raised before its send ([`SendTurns::raise_mark`]) and no send
    /// has confirmed it since.
    Yours { token: String, sent_mark: Option<i64>, unconfirmed: bool },
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
    /// Gives the lane back, recording `sent_mark` when given, as confirmed (marks only rise: a
    /// lower one is not written).
    async fn end_turn(&self, scope_id: &str, lane: &str, token: &str, sent_mark: Option<i64>)
    -> Result<(), StoreError>;
    /// Raises the lane's mark to `mark`, unconfirmed, kept or not by the holder (marks only
    /// rise): what a send may tell the peer, recorded before the send, so a sender cut off
    /// between the send and [`Self::end_turn`] leaves the lane saying what the peer may be
    /// showing, and that it may not have been told.
    async fn raise_mark(&self, scope_id: &str, lane: &str, mark: i64) -> Result<(), StoreError>;
}
