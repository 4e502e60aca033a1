//! Send lanes: what the bridge tells a peer about one thing goes out one send at a time, in the
//! order it was decided (see [`crate::store::SendTurns`]). Two lanes exist: a message's status
//! to Kommo, and a manager's typing to the chat service. Work that finds its lane busy is
//! queued again a moment later, unchanged; it then decides afresh whether it still has
//! anything to say.

use crate::store::LeaseKey;

/// How long a turn is held: longer than any one send on a lane (a status call is at most 3
/// attempts of 5 s at amojo; a typing event 2 attempts of 8 s at the chat service), so a
/// worker that died mid-send delays its lane by this much at most.
pub const SEND_TURN_HOLD_MS: i64 = 30_000;
/// How soon work that found its lane busy looks again: a send usually takes milliseconds. (SQS
/// delays are whole seconds, so in AWS this is one second.)
pub const BUSY_LANE_RETRY_MS: i64 = 250;

/// The lane of a manager message's status in Kommo.
pub fn status_lane(kommo_msgid: &str) -> String {
    format!("status#{kommo_msgid}")
}

/// The lane of a manager's typing in one conversation, as the chat service sees it.
pub fn typing_lane(key: &LeaseKey) -> String {
    format!("typing#{}#{}", key.conversation_id, key.holder)
}

/// When work that found its lane held until `held_until_ms` runs again.
pub fn busy_retry_at(now_ms: i64, held_until_ms: i64) -> i64 {
    held_until_ms.clamp(now_ms, now_ms + BUSY_LANE_RETRY_MS)
}
