//! The presence decisions, pure: how a window reads at a moment, how heartbeats are coalesced,
//! and what a manager's presence transition pushes to the chat service.

/// The subject under which the managers present in a conversation are kept (each manager a
/// device of it).
pub fn managers_subject(conversation_id: &str) -> String {
    format!("manager:{conversation_id}")
}

/// Whether a manager's `presence.changed` is due in its lane, and the lane's mark once it is
/// delivered. `wanted` is what the presence register says now; the lane's mark counts the
/// pushes delivered, odd while the chat service was last told online. A lane with no mark has
/// never sent, or has been forgotten (its item outlives its last turn by a day, the register a
/// month): then the register's state is sent, whatever it is, since the chat service may show
/// either.
pub fn presence_push_due(wanted: Option<bool>, sent_mark: Option<i64>) -> Option<i64> {
    let wanted = wanted?;
    match sent_mark {
        Some(mark) if (mark % 2 == 1) == wanted => None,
        Some(mark) => Some(mark + 1),
        None => Some(if wanted { 1 } else { 2 }),
    }
}

/// Presence windows, from `PRESENCE_WINDOW_S` and `PRESENCE_GRACE_S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceSettings {
    /// Online means a heartbeat within this window.
    pub window_ms: i64,
    /// A manager's `left` becomes an offline push only after this long without `viewing`.
    pub grace_ms: i64,
}

/// Heartbeats closer together than this (while online) are not written...
pub const HEARTBEAT_COALESCE_MS: i64 = 30_000;

/// ...nor closer than half the window, so that with a short window the heartbeats that are
/// written still arrive before it lapses (a coalescing longer than the window would flap).
pub fn coalesce_ms(window_ms: i64) -> i64 {
    HEARTBEAT_COALESCE_MS.min(window_ms / 2)
}

/// What one heartbeat did to a device's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// The device was not online: it is now.
    CameOnline,
    /// The window was pushed out.
    Refreshed,
    /// Written too recently to be worth a write: nothing written.
    Coalesced,
}

/// A subject's presence over all its devices: the most present one wins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceView {
    pub online: bool,
    pub last_seen_at_ms: Option<i64>,
    pub online_until_ms: Option<i64>,
}

impl PresenceView {
    /// The most present of two: online if either is, last seen the later.
    pub fn merge(self, other: Self) -> Self {
        Self {
            online: self.online || other.online,
            last_seen_at_ms: self.last_seen_at_ms.max(other.last_seen_at_ms),
            online_until_ms: self.online_until_ms.max(other.online_until_ms),
        }
    }

    /// One device's window at `now_ms`.
    pub fn of_window(last_seen_at_ms: i64, online_until_ms: i64, now_ms: i64) -> Self {
        let online = online_until_ms > now_ms;
        Self { online, last_seen_at_ms: Some(last_seen_at_ms), online_until_ms: online.then_some(online_until_ms) }
    }
}

/// Whether a heartbeat is a transition worth acting on: only coming online is (a client's
/// conversation is noted, a manager's online push is due); a refresh or a coalesced heartbeat
/// changes nothing anyone is told.
pub fn is_transition(outcome: HeartbeatOutcome) -> bool {
    outcome == HeartbeatOutcome::CameOnline
}

/// What the timer of a manager's window finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowCheck {
    /// Still online (a heartbeat moved the window): look again when it would lapse.
    LookAgainAt(i64),
    /// Lapsed or left: the offline push is due, once.
    Offline,
}

pub fn window_check(view: PresenceView) -> WindowCheck {
    match (view.online, view.online_until_ms) {
        (true, Some(until)) => WindowCheck::LookAgainAt(until),
        _ => WindowCheck::Offline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presence_push_is_due_only_when_it_changes_what_the_chat_service_was_told() {
        // (register now, lane's mark) → mark after the push, or None when not due.
        let table = [
            (None, None, None),              // nothing decided
            (None, Some(1), None),           // (cannot happen: a push was decided before)
            (Some(true), None, Some(1)),     // the first online
            (Some(true), Some(1), None),     // online told already
            (Some(false), Some(1), Some(2)), // offline after online
            (Some(false), Some(2), None),    // offline told already
            (Some(true), Some(2), Some(3)),  // online again
            (Some(false), None, Some(2)),    // the lane forgotten: say it anyway
        ];
        for (wanted, mark, due) in table {
            assert_eq!(presence_push_due(wanted, mark), due, "wanted {wanted:?}, mark {mark:?}");
        }
    }

    #[test]
    fn a_window_is_online_strictly_before_its_end() {
        let now = 100_000;
        assert_eq!(PresenceView::of_window(90_000, now + 1, now).online_until_ms, Some(now + 1));
        assert!(!PresenceView::of_window(90_000, now, now).online, "at its end the window has lapsed");
        let merged = PresenceView::of_window(90_000, now - 1, now).merge(PresenceView::of_window(80_000, now + 5, now));
        assert_eq!(
            merged,
            PresenceView { online: true, last_seen_at_ms: Some(90_000), online_until_ms: Some(now + 5) }
        );
    }

    #[test]
    fn coalescing_is_never_longer_than_half_the_window() {
        for (window, coalesce) in [(60_000, 30_000), (120_000, 30_000), (20_000, 10_000), (1_000, 500)] {
            assert_eq!(coalesce_ms(window), coalesce, "window {window}");
        }
    }

    #[test]
    fn manager_presence_transitions() {
        let cases = [
            (HeartbeatOutcome::CameOnline, true),
            (HeartbeatOutcome::Refreshed, false),
            (HeartbeatOutcome::Coalesced, false),
        ];
        for (outcome, transition) in cases {
            assert_eq!(is_transition(outcome), transition, "{outcome:?}");
        }
        let online = PresenceView { online: true, last_seen_at_ms: Some(1), online_until_ms: Some(70_000) };
        let checks = [
            (online, WindowCheck::LookAgainAt(70_000)),
            (PresenceView { online: false, last_seen_at_ms: Some(1), online_until_ms: None }, WindowCheck::Offline),
            (PresenceView::default(), WindowCheck::Offline), // never seen, or its item collected
        ];
        for (view, expected) in checks {
            assert_eq!(window_check(view), expected, "{view:?}");
        }
    }
}
