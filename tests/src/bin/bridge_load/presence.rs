//! The model of a presence window (the client's, from the chat service's `presence.*`; the
//! manager's viewing, from the widget's `viewing` / `left`) and the rule that decides what a
//! presence read must show.
//!
//! The bridge keeps one window per subject and device: a heartbeat writes
//! `online_until = now + window` unless the device is online and its last write is younger than
//! the coalescing (`min(30 s, window / 2)`, shared::rules::presence); going offline closes it at once;
//! a read is online iff `online_until > now`. Nothing else writes it, and each conversation
//! sends its requests one at a time, so a read never races a change the tool made. What the
//! model cannot know is the bridge's `now` inside each request (somewhere between the send and
//! the answer) and so which heartbeats were coalesced: it keeps bounds on the window's end and
//! calls a read uncertain only when it falls between them (a window edge), or after a request
//! about the subject failed.

use serde_json::{Value, json};

/// shared::rules::presence::HEARTBEAT_COALESCE_MS.
const HEARTBEAT_COALESCE_MS: i64 = 30_000;
/// Slack on each side of a window edge, for a step of the system clock between the processes'
/// reads of it (both read the same clock, in whole milliseconds).
pub const WINDOW_EDGE_MARGIN_MS: i64 = 100;

/// What the model knows of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// Closed: never opened, closed by an acknowledged offline / `left`, or (known by time) lapsed.
    Offline,
    /// Open, ending somewhere in `earliest_end_ms ..= latest_end_ms`.
    Online { earliest_end_ms: i64, latest_end_ms: i64 },
    /// A request about it failed (answered): unknown until the next acknowledged change.
    Unknown,
    /// A request about it went unanswered: it may still be handled at any time, so unknown for
    /// the rest of the run.
    Abandoned,
}

/// What a read at some moment must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    Known(bool),
    /// The read fell between the bounds of the window's end.
    NearWindowEdge,
    /// A request about the subject failed.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub struct WindowModel {
    window: Window,
    window_ms: i64,
    coalesce_ms: i64,
}

impl WindowModel {
    /// A window closed at the start, of `window_ms` (`PRESENCE_WINDOW_S`).
    pub fn new(window_ms: i64) -> Self {
        Self { window: Window::Offline, window_ms, coalesce_ms: HEARTBEAT_COALESCE_MS.min(window_ms / 2) }
    }

    /// A heartbeat (`presence.online`, `presence.heartbeat`, `viewing`) sent at `sent_ms` and
    /// acknowledged at `answered_ms`.
    pub fn heartbeat(&mut self, sent_ms: i64, answered_ms: i64) {
        // Written, the window ends at the bridge's now + window, within these:
        let (written_earliest, written_latest) = (sent_ms + self.window_ms, answered_ms + self.window_ms);
        // Coalesced (only while online, with the last write younger than the coalescing), the
        // window ends where it did, which is later than now - coalescing + window.
        let coalesced_earliest = sent_ms + self.window_ms - self.coalesce_ms;
        let earliest_end_ms = match self.window {
            Window::Offline => written_earliest,
            Window::Online { earliest_end_ms, .. } => written_earliest.min(earliest_end_ms.max(coalesced_earliest)),
            Window::Unknown => coalesced_earliest,
            Window::Abandoned => return,
        };
        // Every write stamps a later now (the bridge refuses to move last_seen backwards), so no
        // earlier write can end it after this one could.
        self.window = Window::Online { earliest_end_ms, latest_end_ms: written_latest };
    }

    /// An acknowledged `presence.offline` or `left`: closed at once.
    pub fn offline(&mut self) {
        if self.window != Window::Abandoned {
            self.window = Window::Offline;
        }
    }

    /// A request about the subject got no 2xx: `answered` whether it got an answer at all.
    pub fn failed(&mut self, answered: bool) {
        if !answered {
            self.window = Window::Abandoned;
        } else if self.window != Window::Abandoned {
            self.window = Window::Unknown;
        }
    }

    /// What a read sent at `sent_ms` and answered at `answered_ms` must show.
    pub fn expected(&self, sent_ms: i64, answered_ms: i64) -> Expected {
        match self.window {
            Window::Offline => Expected::Known(false),
            Window::Online { earliest_end_ms, latest_end_ms } => {
                if answered_ms + WINDOW_EDGE_MARGIN_MS < earliest_end_ms {
                    Expected::Known(true)
                } else if sent_ms - WINDOW_EDGE_MARGIN_MS >= latest_end_ms {
                    Expected::Known(false)
                } else {
                    Expected::NearWindowEdge
                }
            }
            Window::Unknown | Window::Abandoned => Expected::Unknown,
        }
    }

    /// The model's window, for a mismatch's example, in ms from a read sent at `sent_ms`.
    pub fn describe(&self, sent_ms: i64) -> String {
        match self.window {
            Window::Offline => "offline".into(),
            Window::Online { earliest_end_ms, latest_end_ms } => format!(
                "online, the window ending {} to {} ms after the read was sent",
                earliest_end_ms - sent_ms,
                latest_end_ms - sent_ms
            ),
            Window::Unknown | Window::Abandoned => "unknown".into(),
        }
    }
}

/// One kind of presence read, over the run: the exact checks and what was left out of them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadTally {
    /// Reads the model knew the answer of.
    pub checked: u64,
    pub mismatched: u64,
    /// Left out: the read fell between the bounds of the window's end.
    pub near_window_edge: u64,
    /// Left out: a request about the subject had failed.
    pub unknown: u64,
}

impl ReadTally {
    /// Counts one read; true when it is a mismatch.
    pub fn record(&mut self, expected: Expected, shown: bool) -> bool {
        match expected {
            Expected::Known(online) => {
                self.checked += 1;
                let mismatch = online != shown;
                self.mismatched += u64::from(mismatch);
                mismatch
            }
            Expected::NearWindowEdge => {
                self.near_window_edge += 1;
                false
            }
            Expected::Unknown => {
                self.unknown += 1;
                false
            }
        }
    }

    pub fn add(&mut self, other: &Self) {
        self.checked += other.checked;
        self.mismatched += other.mismatched;
        self.near_window_edge += other.near_window_edge;
        self.unknown += other.unknown;
    }

    pub fn to_json(self) -> Value {
        json!({"checked": self.checked, "mismatched": self.mismatched,
               "near_window_edge": self.near_window_edge, "unknown": self.unknown})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: i64 = 60_000;

    #[test]
    fn a_fresh_window_is_online_until_it_may_have_lapsed() {
        let mut model = WindowModel::new(WINDOW);
        assert_eq!(model.expected(0, 10), Expected::Known(false));
        model.heartbeat(1000, 1200);
        assert_eq!(model.expected(2000, 2100), Expected::Known(true));
        assert_eq!(model.expected(60_800, 60_850), Expected::Known(true));
        assert_eq!(model.expected(60_950, 61_000), Expected::NearWindowEdge);
        assert_eq!(model.expected(61_300, 61_400), Expected::Known(false));
    }

    #[test]
    fn a_coalesced_heartbeat_only_promises_the_window_minus_the_coalescing() {
        let mut model = WindowModel::new(WINDOW);
        model.heartbeat(0, 100);
        // Within the coalescing of the first write: maybe not written.
        model.heartbeat(20_000, 20_100);
        assert_eq!(model.expected(59_000, 59_100), Expected::Known(true));
        assert_eq!(model.expected(65_000, 65_100), Expected::NearWindowEdge);
        // Coalesced again only if the second was written: its promise is from its own now.
        model.heartbeat(40_000, 40_100);
        assert_eq!(model.expected(69_000, 69_100), Expected::Known(true));
        assert_eq!(model.expected(75_000, 75_100), Expected::NearWindowEdge);
    }

    #[test]
    fn offline_is_at_once_and_failures_make_it_unknown() {
        let mut model = WindowModel::new(WINDOW);
        model.heartbeat(0, 100);
        model.offline();
        assert_eq!(model.expected(200, 300), Expected::Known(false));
        model.failed(true);
        assert_eq!(model.expected(400, 500), Expected::Unknown);
        model.heartbeat(600, 700);
        // After an unknown write, this heartbeat may have been coalesced against it.
        assert_eq!(model.expected(30_000, 30_100), Expected::Known(true));
        assert_eq!(model.expected(45_000, 45_100), Expected::NearWindowEdge);
        model.failed(false);
        model.offline();
        assert_eq!(model.expected(46_000, 46_100), Expected::Unknown);
    }
}
