//! What the flows tell the operator as metrics (the adapter writes CloudWatch embedded-metric
//! lines, `crate::app::metrics`; the calls out are metered by `crate::adapters::metered`).
//! Recording never fails and never waits: a metric is one line on stdout.

/// Who the bridge calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    ChatService,
    Amojo,
    KommoApi,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Self::ChatService => "chat_service",
            Self::Amojo => "amojo",
            Self::KommoApi => "kommo_api",
        }
    }
}

/// How a call out ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    /// A 4xx: the peer will not take it as it is.
    Refused,
    /// A 5xx, a timeout, or unreachable (after the call's own quick retries).
    Unavailable,
}

impl CallOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// A manager's `typing.stopped` sent for a lapsed lease, this long after Kommo's
    /// `expired_at`.
    TypingStopLag { ms: i64 },
    /// A message reached its peer this long after it reached the bridge: a manager's message
    /// the chat service (from Kommo's webhook), a client's message Kommo (from the chat event).
    RelayLatency { peer: Peer, ms: i64 },
    /// A status Kommo took: `delivered`, `read`, or an error code (`901`…`905`).
    StatusReported { status: &'static str },
    /// Work given up after its attempts: `what` is the kind of queued work.
    DeadLetter { what: &'static str },
    /// One call out, and how it ended.
    OutboundCall { peer: Peer, outcome: CallOutcome },
    /// An installation's channel not connected in time (at install, or a queued retry that
    /// failed): the account waits `connecting`, its tokens kept.
    InstallConnecting,
}

pub trait Metrics: Send + Sync {
    fn record(&self, metric: Metric);
}
