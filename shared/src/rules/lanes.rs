//! Send lanes: what the bridge tells a peer about one thing goes out one send at a time, in the
//! order it was decided (see [`crate::ports::store::SendTurns`]). Three lanes exist: a message's
//! status to Kommo, a manager's typing to the chat service, and a manager's presence in a
//! conversation to the chat service. Work that finds its lane busy
//! is queued again a moment later, unchanged; it then decides afresh whether it still has
//! anything to say.

/// How long a turn is held: longer than any one send on a lane (a status call is at most 3
/// attempts of 5 s at amojo; a typing event 2 attempts of 8 s at the chat service), so a
/// worker that died mid-send delays its lane by this much at most.
pub const SEND_TURN_HOLD_MS: i64 = 30_000;
/// How soon work that found its lane busy looks again: a send usually takes milliseconds. (SQS
/// delays are whole seconds, so in AWS this is one second.)
pub const BUSY_LANE_RETRY_MS: i64 = 250;
/// A lane held longer than this is held by a slow send or by a worker that died holding it:
/// work waiting for it looks again every [`SLOW_LANE_RETRY_MS`], not every 250 ms.
pub const SLOW_HOLDER_MS: i64 = 2_000;
pub const SLOW_LANE_RETRY_MS: i64 = 2_000;

/// The lane of a manager message's status in Kommo.
pub fn status_lane(kommo_msgid: &str) -> String {
    format!("status#{kommo_msgid}")
}

/// The lane of a typing holder's events in one conversation, as the chat service sees them.
pub fn typing_lane(conversation_id: &str, holder: &str) -> String {
    format!("typing#{conversation_id}#{holder}")
}

/// The lane of a manager's presence in one conversation, as the chat service sees it.
pub fn presence_lane(conversation_id: &str, manager_id: &str) -> String {
    format!("presence#{conversation_id}#{manager_id}")
}

/// A lane as it stands, read without taking it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneView {
    /// Until when another sender holds it, if one does now.
    pub held_until_ms: Option<i64>,
    pub sent_mark: Option<i64>,
    /// The mark was raised before its send and not confirmed since.
    pub unconfirmed: bool,
}

/// When work that found its lane held until `held_until_ms` (a turn of [`SEND_TURN_HOLD_MS`])
/// runs again.
pub fn busy_retry_at(now_ms: i64, held_until_ms: i64) -> i64 {
    let held_for_ms = now_ms - (held_until_ms - SEND_TURN_HOLD_MS);
    let step = if held_for_ms > SLOW_HOLDER_MS { SLOW_LANE_RETRY_MS } else { BUSY_LANE_RETRY_MS };
    held_until_ms.clamp(now_ms, now_ms + step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_work_looks_again_soon_but_never_before_now() {
        let now = 10_000;
        let cases = [
            (9_000, now),
            (now, now),
            (now + 100, now + 100),
            (now + 30_000, now + 250),   // just taken: a send takes milliseconds
            (now + 27_000, now + 2_000), // held 3 s: a slow send or a dead holder
        ];
        for (held_until, again) in cases {
            assert_eq!(busy_retry_at(now, held_until), again, "held until {held_until}");
        }
    }
}
