//! Which chat-service events are remembered by their `webhook-id`, so that a captured request
//! sent again inside the signature's 5-minute tolerance is refused (409) and changes nothing.
//! Remembering is one conditional write, as much as the event itself for the signals a chat
//! service repeats all day (typing and presence), so those are remembered only where a replay
//! could show something that is not true.
//!
//! | event | remembered | what a replay can do, at most |
//! |---|---|---|
//! | `message.*`, `reaction.*` | always, before it is applied | nothing (409) |
//! | `typing.started` starting a lease | when it starts the lease | nothing (409; the lease it opened is ended again) |
//! | `typing.started` within a live lease | no | lengthen the live lease by its `ttl_ms` (≤ 30 s), as the client's own next signal does |
//! | `typing.stopped` | no | hide the client's typing in Kommo until their next `typing.started` (a few seconds) |
//! | `presence.online`, `presence.heartbeat` | no | show the client online for one more window after they left |
//! | `presence.offline` | no | show the client offline until their next heartbeat |
//!
//! A sender's retry of an event whose answer was lost is then answered 200 for the unremembered
//! kinds (they are idempotent) instead of 409.

use crate::models::chat::ChatEvent;

/// When an event's `webhook-id` is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayMemory {
    /// Before the event is applied: its effect lasts, or is not idempotent.
    Always,
    /// Only when it starts a typing lease: within a live lease a replay is the same as the
    /// client typing on, and the write is spared on every repeated `typing.started`.
    WhenItStartsALease,
    /// Never: idempotent, and ends by itself within a presence window or a typing lease.
    Never,
}

pub fn replay_memory(event: &ChatEvent) -> ReplayMemory {
    match event {
        ChatEvent::MessageCreated(_)
        | ChatEvent::MessageStatus(_)
        | ChatEvent::MessageEdited(_)
        | ChatEvent::ReactionAdded(_)
        | ChatEvent::ReactionRemoved(_) => ReplayMemory::Always,
        ChatEvent::TypingStarted(_) => ReplayMemory::WhenItStartsALease,
        ChatEvent::TypingStopped(_)
        | ChatEvent::PresenceOnline(_)
        | ChatEvent::PresenceHeartbeat(_)
        | ChatEvent::PresenceOffline(_) => ReplayMemory::Never,
    }
}
