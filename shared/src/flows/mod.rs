//! Use cases: one module per flow, each a struct holding only the ports it uses, built by the
//! composition root ([`crate::app`]). A flow reads, decides with a rule ([`crate::rules`]),
//! writes and sends; it never sees HTTP. Flows with work on both sides of the queue are two
//! structs: the inbound half (what a webhook or chat event does before its 200) and the queued
//! half (what `typing-expiry` runs later), so a function is wired with only its half.
//!
//! | flow | inbound (entry) | queued half |
//! |---|---|---|
//! | [`manager_typing`] | Kommo's typing webhook | the lease's expiry check |
//! | [`client_typing`] | the chat service's `typing.*` | the 4 s refresh of Kommo's indicator |
//! | [`manager_messages`] | Kommo's message webhook | the relay to the chat service |
//! | [`client_messages`] | the chat service's `message.created` | the import into Kommo, its outcome told back |
//! | [`client_edits`] | the chat service's `message.edited` | the edit in Kommo |
//! | [`reactions`] | Kommo's reaction webhook, the chat service's `reaction.*` | the reaction in Kommo |
//! | [`delivery_status`] | the chat service's `message.status` | the report to Kommo |
//! | [`client_presence`] | the chat service's `presence.*`, the widget's read | |
//! | [`manager_presence`] | the widget's `viewing` / `left`, the chat service's pull | the window's check |
//! | [`read_receipts`] | the widget's conversation opened | |
//! | [`client_profiles`] | the chat service's `client.updated` | the Kommo contact changed |
//! | [`chat_delivery`] | | every event to the chat service, a manager's typing in its lane |
//!
//! [`kommo_names`] turns the chat service's names for conversations and messages into amojo's.
//! [`installs`] installs the integration in a Kommo account (OAuth, the channel connected).
//! [`sources`] makes sure of a message's source in the account before its import.

pub mod chat_delivery;
pub mod client_edits;
pub mod client_messages;
pub mod client_presence;
pub mod client_profiles;
pub mod client_typing;
pub mod delivery_status;
pub mod installs;
pub mod kommo_names;
pub mod manager_messages;
pub mod manager_presence;
pub mod manager_typing;
pub mod managers;
pub mod reactions;
pub mod read_receipts;
pub mod sources;

use std::time::Duration;

use crate::ports::store::{DedupeKeys, KeyClaim, StoreError};
use crate::ports::timers::{DueWork, TimerError, Timers};
use crate::random::random_bytes;
use crate::rules::rejection::Rejection;
use crate::rules::retry::{RetryPolicy, requeue_delay_ms};

/// Why a flow did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The sender's mistake: nothing was changed (a 4xx at the root).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store failed: transient (a 5xx, or queued work delivered again).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Work could not be queued: transient, as above.
    #[error(transparent)]
    Timer(#[from] TimerError),
}

/// Queues work that failed for now (`attempt` counts the tries before this one) to run again
/// after the policy's backoff (at least `retry_after`): false when its attempts are spent and
/// nothing was queued. `again` makes the work for its next attempt.
pub(crate) async fn requeue(
    timers: &dyn Timers,
    retry: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    now_ms: i64,
    again: impl FnOnce(u32) -> DueWork,
) -> Result<bool, TimerError> {
    let next = attempt + 1;
    if next >= retry.max_attempts {
        return Ok(false);
    }
    let random = u64::from_le_bytes(random_bytes::<8>());
    timers.schedule(again(next), now_ms + requeue_delay_ms(retry, next, retry_after, random)).await?;
    Ok(true)
}

/// Queues `work` again at `retry_at` because what it needs is held (its send lane is busy, or
/// another copy holds its claim), unless a copy of the same work (`identity`) is known to be
/// queued for that hold already. A queue message delivered twice, or delivered again after a
/// worker was cut off once it had queued its copy, would otherwise start a second chain of
/// copies, each looking again for as long as a dead worker holds it, and the chains multiply.
///
/// The wait is claimed, the copy queued, and only then the wait marked done (until just before
/// the copy runs, so that copy can wait again): a worker cut off between the claim and the
/// queuing leaves the wait claimed, not done, and whoever finds it so queues a copy anyway. An
/// extra copy now and then is the price of never losing the work.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn wait_for_hold(
    waits: &dyn DedupeKeys,
    timers: &dyn Timers,
    scope_id: &str,
    held: &str,
    identity: &str,
    work: DueWork,
    now_ms: i64,
    retry_at_ms: i64,
) -> Result<(), FlowError> {
    let key = format!("lane-wait#{held}#{identity}");
    let queued_until_ms = (retry_at_ms - LANE_WAIT_MARGIN_MS).max(now_ms + 1);
    match waits.claim(scope_id, &key, now_ms, WAIT_CLAIM_HOLD_MS).await? {
        KeyClaim::Claimed { token } => {
            timers.schedule(work, retry_at_ms).await?;
            waits.finish(scope_id, &key, &token, queued_until_ms).await?;
        }
        KeyClaim::Done => tracing::debug!(work = work.kind(), "a copy of this work already waits; dropped"),
        KeyClaim::Held { .. } => {
            tracing::debug!(work = work.kind(), "a copy of this work may not have been queued; queued");
            timers.schedule(work, retry_at_ms).await?;
        }
    }
    Ok(())
}

/// How long a wait is claimed before its copy is queued: longer than queuing takes.
const WAIT_CLAIM_HOLD_MS: i64 = 5_000;
/// How much before its copy runs a wait lapses (timers fire a little early or late).
const LANE_WAIT_MARGIN_MS: i64 = 50;
