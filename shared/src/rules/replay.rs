//! Which chat-service events are remembered by their `webhook-id`, so that the same request
//! sent again inside the signature's 5-minute tolerance (a retry whose answer was lost, a
//! captured request replayed) is a duplicate (200) that changes nothing. Remembering costs
//! conditional writes, as much as the event itself for the signals a chat service repeats all
//! day (typing and presence), so those are remembered only where a replay could show something
//! that is not true.
//!
//! | event | remembered | what a replay can do, at most |
//! |---|---|---|
//! | `message.*`, `reaction.*`, `client.updated` | always, held while it is applied, then done | nothing (200 duplicate) |
//! | `typing.started` starting a lease | when it starts the lease, done at once | nothing (200 duplicate; the lease it opened is ended again) |
//! | `typing.started` within a live lease | no | lengthen the live lease by its `ttl_ms` (≤ 30 s), as the client's own next signal does |
//! | `typing.stopped` | no | hide the client's typing in Kommo until their next `typing.started` (a few seconds) |
//! | `presence.online`, `presence.heartbeat` | no | show the client online for one more window after they left |
//! | `presence.offline` | no | show the client offline until their next heartbeat |
//!
//! A sender's retry of an unremembered kind is applied again: they are idempotent.

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
        | ChatEvent::ReactionRemoved(_)
        | ChatEvent::ClientUpdated(_) => ReplayMemory::Always,
        ChatEvent::TypingStarted(_) => ReplayMemory::WhenItStartsALease,
        ChatEvent::TypingStopped(_)
        | ChatEvent::PresenceOnline(_)
        | ChatEvent::PresenceHeartbeat(_)
        | ChatEvent::PresenceOffline(_) => ReplayMemory::Never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sim::{SCOPE, client_message, client_typing, presence_event, status_event};

    #[test]
    fn each_kind_of_chat_event_is_remembered_as_the_table_says() {
        let edited = format!(
            r#"{{"type":"message.edited","scope_id":"{SCOPE}","conversation_id":"conv-1","msgid":"chat-1","message":{{"type":"text","text":"hi"}}}}"#
        );
        let reaction = |kind: &str| {
            format!(
                r#"{{"type":"{kind}","scope_id":"{SCOPE}","conversation_id":"conv-1","user_id":"client-1","emoji":"👍","msgid":"chat-1"}}"#
            )
        };
        let table = [
            (client_message("conv-1", "chat-1"), ReplayMemory::Always),
            (status_event("kommo-1", "read", ""), ReplayMemory::Always),
            (edited, ReplayMemory::Always),
            (reaction("reaction.added"), ReplayMemory::Always),
            (reaction("reaction.removed"), ReplayMemory::Always),
            (client_typing("typing.started", "conv-1", None), ReplayMemory::WhenItStartsALease),
            (client_typing("typing.stopped", "conv-1", None), ReplayMemory::Never),
            (presence_event("presence.online", "phone"), ReplayMemory::Never),
            (presence_event("presence.heartbeat", "phone"), ReplayMemory::Never),
            (presence_event("presence.offline", "phone"), ReplayMemory::Never),
        ];
        for (body, expected) in table {
            let event: ChatEvent = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(replay_memory(&event), expected, "{}", event.type_name());
            // What is never always remembered is what logs its acceptance only at debug.
            assert_eq!(expected != ReplayMemory::Always, event.is_signal(), "{}", event.type_name());
        }
    }
}
