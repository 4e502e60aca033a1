//! Work that falls due later, behind one [`Timers`] port: SQS message timers in AWS (consumed by
//! the `typing-expiry` function), an in-process timer loop in the dev server, and a manual one
//! for simulations (the adapters). Whoever runs the work when it falls due is the other port
//! here, [`DueWorkRunner`]: the queued-work dispatcher. A timer only says "look again at this moment": whoever runs the work
//! re-reads the store and acts only if the work is still due, so late, early and duplicate
//! timers are harmless.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::models::chat::{BridgeEvent, ClientEdit, ClientMessage, ClientReaction};
use crate::models::kommo::ManagerMessage;
use crate::models::status::DeliveryStatusRequest;

/// One piece of deferred work, as it travels in an SQS message body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "snake_case")]
pub enum DueWork {
    /// A manager's typing lease may have lapsed: end it once and tell the chat service.
    ManagerTypingCheck { scope_id: String, conversation_id: String, manager_id: String },
    /// A manager's presence window may have lapsed (or they left): push offline once.
    ManagerPresenceCheck { scope_id: String, conversation_id: String, manager_id: String },
    /// Keep Kommo's client-typing indicator up while the client's lease lives.
    ClientTypingRefresh { scope_id: String, conversation_id: String, user_id: String },
    /// Deliver an event to the chat service; `attempt` counts earlier tries.
    DeliverChatEvent { event: BridgeEvent, webhook_id: String, attempt: u32 },
    /// Relay a manager's message (`event` is its message.created), typing.stopped first if the
    /// chat service shows the manager typing.
    RelayManagerMessage {
        scope_id: String,
        kommo_msgid: String,
        event: Box<BridgeEvent>,
        webhook_id: String,
        attempt: u32,
        /// When Kommo's webhook reached the bridge (0: not known, queued by an older version).
        #[serde(default)]
        received_at_ms: i64,
    },
    /// Record and relay a manager's message whose webhook could not record it in time (the
    /// store stalled): what the webhook does, done when the store answers again.
    AcceptManagerMessage {
        scope_id: String,
        message: Box<ManagerMessage>,
        /// When Kommo's webhook reached the bridge.
        received_at_ms: i64,
    },
    /// Tell Kommo a status change that stuck; `attempt` counts earlier tries.
    ReportDeliveryStatus {
        scope_id: String,
        request: DeliveryStatusRequest,
        #[serde(default)]
        attempt: u32,
    },
    /// Import a client's message into Kommo.
    ImportClientMessage {
        message: Box<ClientMessage>,
        attempt: u32,
        /// When the chat event reached the bridge (0: not known, queued by an older version).
        #[serde(default)]
        received_at_ms: i64,
    },
    /// Change a client's message in Kommo, once it is imported; `waits` counts the looks at an
    /// import still under way (not attempts).
    EditClientMessage {
        edit: Box<ClientEdit>,
        attempt: u32,
        #[serde(default)]
        waits: u32,
    },
    /// Put a client's reaction into Kommo (`added`), or take it back; `waits` as for an edit.
    SendClientReaction {
        reaction: Box<ClientReaction>,
        added: bool,
        attempt: u32,
        #[serde(default)]
        waits: u32,
    },
}

impl DueWork {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ManagerTypingCheck { .. } => "manager_typing_check",
            Self::ClientTypingRefresh { .. } => "client_typing_refresh",
            Self::ManagerPresenceCheck { .. } => "manager_presence_check",
            Self::DeliverChatEvent { .. } => "deliver_chat_event",
            Self::AcceptManagerMessage { .. } => "accept_manager_message",
            Self::RelayManagerMessage { .. } => "relay_manager_message",
            Self::ReportDeliveryStatus { .. } => "report_delivery_status",
            Self::ImportClientMessage { .. } => "import_client_message",
            Self::EditClientMessage { .. } => "edit_client_message",
            Self::SendClientReaction { .. } => "send_client_reaction",
        }
    }

    /// A delivery of `event` to the chat service, first attempt, with a fresh message id.
    pub fn deliver(event: BridgeEvent) -> Self {
        Self::DeliverChatEvent { event, webhook_id: crate::random::new_webhook_id(), attempt: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the timer could not be scheduled: {0}")]
pub struct TimerError(pub String);

#[async_trait]
pub trait Timers: Send + Sync {
    /// Runs `work` at `due_at_ms` or shortly after, at least once.
    async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError>;
}

/// Runs a piece of due work when it falls due (the queued-work dispatcher). An `Err` is
/// transient: the work is to be delivered again later.
#[async_trait]
pub trait DueWorkRunner: Send + Sync {
    type Error: std::fmt::Display + Send;
    async fn run_due(&self, work: DueWork) -> Result<(), Self::Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_work_travels_as_tagged_json() {
        let work =
            DueWork::ManagerTypingCheck { scope_id: "s".into(), conversation_id: "c".into(), manager_id: "m".into() };
        let text = serde_json::to_string(&work).unwrap();
        assert_eq!(text, r#"{"work":"manager_typing_check","scope_id":"s","conversation_id":"c","manager_id":"m"}"#);
        assert_eq!(serde_json::from_str::<DueWork>(&text).unwrap(), work);
    }
}
