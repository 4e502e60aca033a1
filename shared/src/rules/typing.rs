//! The typing decisions, pure: how long a lease runs, when the client's indicator is refreshed
//! in Kommo, and whether a manager's typing event goes out in its lane. The flows around them
//! (`crate::flows::manager_typing`, `client_typing`, `chat_delivery`, `manager_messages`) only
//! read, decide with these, write and send.

use super::rejection::Rejection;

/// How long a client's `typing.started` vouches for, unless it says (`ttl_ms`).
pub const CLIENT_TYPING_DEFAULT_TTL_MS: i64 = 6000;
pub const CLIENT_TYPING_MAX_TTL_MS: i64 = 30_000;
/// Kommo shows a typing call for 5 s: one every 4 s keeps the indicator up without flicker and
/// stays above the floor of one call per 3 s.
pub const KOMMO_TYPING_INTERVAL_MS: i64 = 4000;
/// A refresh is skipped when the lease ends sooner than this: the indicator would outlive it.
pub const MIN_USEFUL_REFRESH_MS: i64 = 1000;
/// Kommo re-sends the manager-typing webhook every 5 s with `expired_at` 5 s ahead, so each
/// one lands right at the previous expiry. The lease runs this much past `expired_at`, so a
/// webhook a little late does not end typing and start it again (flapping).
pub const MANAGER_TYPING_GRACE_MS: i64 = 1000;

/// Where a manager's lease ends for a typing webhook whose `expired_at` is `kommo_expired_at_s`:
/// a little past it (the grace), never more than the longest lease ahead (a far-future or
/// overflowing `expired_at` must not leave the indicator stuck on). `None`: already expired,
/// the webhook starts nothing.
pub fn manager_lease_end_ms(kommo_expired_at_s: i64, now_ms: i64) -> Option<i64> {
    let kommo_expiry_ms = kommo_expired_at_s.saturating_mul(1000);
    (kommo_expiry_ms > now_ms).then(|| kommo_expiry_ms.min(now_ms + CLIENT_TYPING_MAX_TTL_MS) + MANAGER_TYPING_GRACE_MS)
}

/// Kommo's `expired_at` (seconds) for a lease that ends at `lease_end_ms`: the grace taken off.
pub fn kommo_expired_at_s(lease_end_ms: i64) -> i64 {
    (lease_end_ms - MANAGER_TYPING_GRACE_MS).div_euclid(1000)
}

/// How long a client's `typing.started` holds: its `ttl_ms` (at least 1, capped) or the default.
pub fn client_typing_ttl_ms(ttl_ms: Option<u32>) -> Result<i64, Rejection> {
    match ttl_ms {
        None => Ok(CLIENT_TYPING_DEFAULT_TTL_MS),
        Some(0) => Err(Rejection::invalid("ttl_ms must be at least 1")),
        Some(ttl) => Ok(i64::from(ttl).min(CLIENT_TYPING_MAX_TTL_MS)),
    }
}

/// The next step of a client lease's refresh chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshStep {
    /// Claim the next typing call and make it, then look again one interval later.
    Show,
    /// The indicator would outlive the lease: look again when it would lapse, in case the
    /// client keeps typing and extends it.
    LookAgainAt(i64),
}

pub fn refresh_step(lease_end_ms: i64, now_ms: i64) -> RefreshStep {
    if lease_end_ms - now_ms < MIN_USEFUL_REFRESH_MS {
        RefreshStep::LookAgainAt(lease_end_ms)
    } else {
        RefreshStep::Show
    }
}

/// What a manager's typing lane last told the chat service, kept as the lane's mark: the number
/// of typing events delivered on it (marks only rise), odd while the indicator is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypingShown(i64);

impl TypingShown {
    pub fn from_mark(sent_mark: Option<i64>) -> Self {
        Self(sent_mark.unwrap_or(0))
    }
    pub fn on(self) -> bool {
        self.0 % 2 == 1
    }
    /// After one more event (a start when off, a stop when on).
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
    pub fn mark(self) -> i64 {
        self.0
    }
}

/// A manager typing event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypingEvent {
    Started,
    Stopped,
}

/// How one send to the chat service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered,
    /// A 4xx: the chat service did not take it.
    Refused,
    /// Unreachable, 5xx or timed out: it may have been taken.
    Uncertain,
}

/// Whether a manager typing event goes out in its lane: only when it is true of the lease
/// (a start while one lives, a stop while none does) and changes what the chat service shows.
/// A start's retry (`is_retry`) goes out while its lease lives even if the lane counts it shown:
/// its first attempt failed in a way that may or may not have shown it.
pub fn typing_send_due(event: TypingEvent, lease_live: bool, shown: TypingShown, is_retry: bool) -> bool {
    let starts = event == TypingEvent::Started;
    let already = starts == shown.on() && !(starts && is_retry);
    starts == lease_live && !already
}

/// What the lane records, as confirmed, after a send that [`typing_send_due`] allowed, by how it
/// ended; `None` leaves the lane as it was. A start is recorded as shown, unconfirmed, before it
/// is sent (a start that may land owes a stop, even if its worker is cut off after sending):
/// delivered, that mark is confirmed; otherwise it stays unconfirmed, and the stop that ends it
/// sends it again first.
pub fn typing_shown_after(event: TypingEvent, shown: TypingShown, outcome: SendOutcome) -> Option<TypingShown> {
    match (event, outcome) {
        (TypingEvent::Started, SendOutcome::Delivered) => Some(if shown.on() { shown } else { shown.next() }),
        (TypingEvent::Stopped, SendOutcome::Delivered) if shown.on() => Some(shown.next()),
        _ => None,
    }
}

/// A `typing.started` delivered after its lease ended (the manager's message or the expiry ran
/// while it was on its way) owes the chat service a `typing.stopped`.
pub fn stop_owed_after(event: TypingEvent, outcome: SendOutcome, lease_live_now: bool) -> bool {
    event == TypingEvent::Started && outcome == SendOutcome::Delivered && !lease_live_now
}

/// Whether the chat service may be showing a manager typing, from the lane alone: a send is
/// on its way, or the last one told left the indicator on. When it may not, a manager's
/// message needs no stop before it and a lease gone needs no stop after it.
pub fn lane_may_show_typing(held_by_a_sender: bool, shown: TypingShown) -> bool {
    held_by_a_sender || shown.on()
}

/// How the `typing.stopped` before a manager's message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBeforeMessage {
    /// The message may go; `stopped` when a typing.stopped was just delivered.
    Clear { stopped: bool },
    /// The chat service could not be reached: the message would not get through either, and
    /// both go again later, in this order.
    Unavailable,
}

/// The stop before a manager's message, inside the lane's turn: sent only while the lane shows
/// typing. Returns what became of it and what the lane records (`None`: the mark stays).
pub fn stop_before_message(
    shown: TypingShown,
    outcome: Option<SendOutcome>,
) -> (StopBeforeMessage, Option<TypingShown>) {
    match (shown.on(), outcome) {
        (false, _) | (true, None) => (StopBeforeMessage::Clear { stopped: false }, None),
        (true, Some(SendOutcome::Delivered)) => (StopBeforeMessage::Clear { stopped: true }, Some(shown.next())),
        // Refused: the chat service will not take a stop; the message still goes.
        (true, Some(SendOutcome::Refused)) => (StopBeforeMessage::Clear { stopped: false }, None),
        (true, Some(SendOutcome::Uncertain)) => (StopBeforeMessage::Unavailable, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SendOutcome::*;
    use TypingEvent::*;

    const OFF: TypingShown = TypingShown(2);
    const ON: TypingShown = TypingShown(3);

    #[test]
    fn a_manager_typing_event_goes_out_only_when_true_and_a_change() {
        // (event, lease live, shown, retry) -> sent
        let cases = [
            (Started, true, OFF, false, true),
            (Started, true, ON, false, false),   // already shown
            (Started, true, ON, true, true),     // the retry of a start that may not have landed
            (Started, false, OFF, false, false), // the lease ended while it waited
            (Started, false, OFF, true, false),
            (Started, false, ON, true, false),
            (Stopped, false, ON, false, true),
            (Stopped, false, OFF, false, false), // nothing shown to stop
            (Stopped, true, ON, false, false),   // typing again: the stop is no longer true
            (Stopped, true, OFF, false, false),
            (Stopped, false, ON, true, true),
        ];
        for (event, live, shown, retry, sent) in cases {
            assert_eq!(
                typing_send_due(event, live, shown, retry),
                sent,
                "{event:?} live={live} {shown:?} retry={retry}"
            );
        }
    }

    #[test]
    fn the_lane_counts_what_may_have_reached_the_chat_service() {
        // (event, shown before, outcome) -> shown after (None: mark unchanged)
        let cases = [
            (Started, OFF, Delivered, Some(ON)),
            (Started, OFF, Uncertain, None), // recorded shown before the send: stays unconfirmed
            (Started, OFF, Refused, None),
            (Started, ON, Delivered, Some(ON)), // a retry confirms the start recorded before it
            (Started, ON, Uncertain, None),
            (Stopped, ON, Delivered, Some(TypingShown(4))),
            (Stopped, ON, Uncertain, None), // retried; the indicator stays counted on
            (Stopped, ON, Refused, None),
        ];
        for (event, shown, outcome, after) in cases {
            assert_eq!(typing_shown_after(event, shown, outcome), after, "{event:?} {shown:?} {outcome:?}");
        }
    }

    #[test]
    fn a_start_that_landed_after_its_lease_ended_is_followed_by_a_stop() {
        let cases = [
            (Started, Delivered, false, true),
            (Started, Delivered, true, false),
            (Started, Uncertain, false, false), // its retry decides again
            (Started, Refused, false, false),
            (Stopped, Delivered, false, false),
        ];
        for (event, outcome, live, owed) in cases {
            assert_eq!(stop_owed_after(event, outcome, live), owed, "{event:?} {outcome:?} live={live}");
        }
    }

    #[test]
    fn the_stop_before_a_managers_message() {
        assert!(!lane_may_show_typing(false, OFF), "the common case: one read, no turn");
        assert!(lane_may_show_typing(true, OFF), "a start may be on its way");
        assert!(lane_may_show_typing(false, ON));
        let cases = [
            (OFF, None, StopBeforeMessage::Clear { stopped: false }, None),
            (ON, Some(Delivered), StopBeforeMessage::Clear { stopped: true }, Some(TypingShown(4))),
            (ON, Some(Refused), StopBeforeMessage::Clear { stopped: false }, None),
            (ON, Some(Uncertain), StopBeforeMessage::Unavailable, None),
        ];
        for (shown, outcome, expected, mark) in cases {
            assert_eq!(stop_before_message(shown, outcome), (expected, mark), "{shown:?} {outcome:?}");
        }
    }

    #[test]
    fn a_manager_lease_runs_a_grace_past_kommos_expiry_and_never_far_ahead() {
        let now = 1_700_000_000_000;
        let cases = [
            (now / 1000 + 5, Some(now + 6_000)),
            (now / 1000, None), // already expired
            (now / 1000 - 60, None),
            (now / 1000 + 31_536_000, Some(now + 31_000)), // a year ahead: capped
            (i64::MAX / 1000, Some(now + 31_000)),
            (i64::MAX, Some(now + 31_000)), // overflows seconds to milliseconds: saturates
        ];
        for (expired_at_s, end) in cases {
            assert_eq!(manager_lease_end_ms(expired_at_s, now), end, "expired_at {expired_at_s}");
        }
        assert_eq!(kommo_expired_at_s(now + 6_000), now / 1000 + 5);
    }

    #[test]
    fn a_client_typing_ttl_defaults_caps_and_refuses_zero() {
        assert_eq!(client_typing_ttl_ms(None), Ok(6000));
        assert_eq!(client_typing_ttl_ms(Some(1)), Ok(1));
        assert_eq!(client_typing_ttl_ms(Some(600_000)), Ok(30_000));
        assert!(client_typing_ttl_ms(Some(0)).is_err());
    }

    #[test]
    fn a_refresh_is_made_only_while_the_indicator_would_not_outlive_the_lease() {
        let now = 50_000;
        assert_eq!(refresh_step(now + 5_000, now), RefreshStep::Show);
        assert_eq!(refresh_step(now + 1_000, now), RefreshStep::Show);
        assert_eq!(refresh_step(now + 999, now), RefreshStep::LookAgainAt(now + 999));
        assert_eq!(refresh_step(now, now), RefreshStep::LookAgainAt(now));
    }
}
