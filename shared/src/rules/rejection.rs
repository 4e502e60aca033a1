//! The domain's refusal of an inbound event: the sender's mistake, so nothing is changed.
//! The composition root alone turns it into an HTTP answer.

/// Why the bridge refuses an event: the sender's mistake, so nothing is changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The event is malformed or incomplete.
    #[error("{0}")]
    Invalid(String),
    /// A status names a chat-service msgid the bridge never relayed.
    #[error("no message with that msgid was relayed")]
    UnknownMessage,
    /// The work the event would queue is larger than the queue takes (a 413).
    #[error(
        "the request is too large to queue: it would take {bytes} bytes queued, more than the {limit} allowed \
         (numbers are queued written out in full: 1e15 as 1000000000000000.0)"
    )]
    TooLargeToQueue { bytes: usize, limit: usize },
}

impl Rejection {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}
