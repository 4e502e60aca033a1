//! A client's presence, chat service → Kommo UI. Kommo has no presence API, so the bridge
//! keeps the windows: the chat service's `presence.*` events keep a window per client and
//! device (online ⇔ a heartbeat within `PRESENCE_WINDOW_S`; `last_seen_at` kept; heartbeats
//! coalesced, [`crate::rules::presence::coalesce_ms`]), and the widget reads it.

use std::sync::Arc;

use super::FlowError;
use crate::models::chat::ClientPresenceSignal;
use crate::ports::store::{
    ConversationFacts, Conversations, LeaseKey, PresenceKey, PresenceView, PresenceWindows, TypingLeases,
};
use crate::rules::presence::{PresenceSettings, coalesce_ms, is_transition};
use crate::time::Clock;

const DEFAULT_DEVICE: &str = "default";

pub fn client_subject(user_id: &str) -> String {
    format!("client:{user_id}")
}

#[derive(Clone)]
pub struct ClientPresence {
    pub windows: Arc<dyn PresenceWindows>,
    pub conversations: Arc<dyn Conversations>,
    /// Read only, for the widget's "typing" beside the presence.
    pub leases: Arc<dyn TypingLeases>,
    pub clock: Arc<dyn Clock>,
    pub settings: PresenceSettings,
}

impl ClientPresence {
    /// The chat service's `presence.online` and `presence.heartbeat`.
    pub async fn on_heartbeat(&self, presence: &ClientPresenceSignal) -> Result<(), FlowError> {
        let window = self.settings.window_ms;
        let outcome = self.windows.heartbeat(&key(presence), self.clock.now_ms(), window, coalesce_ms(window)).await?;
        // On coming online (not on every heartbeat), note whose conversation it is, so the
        // Kommo UI can ask by conversation.
        if is_transition(outcome)
            && let Some(conversation_id) = presence.conversation_id.as_deref().filter(|id| !id.is_empty())
        {
            self.conversations
                .remember_conversation(
                    &presence.scope_id,
                    conversation_id,
                    &ConversationFacts { client_user_id: Some(&presence.user_id), ..Default::default() },
                )
                .await?;
        }
        Ok(())
    }

    /// The chat service's `presence.offline`.
    pub async fn on_offline(&self, presence: &ClientPresenceSignal) -> Result<(), FlowError> {
        self.windows.go_offline(&key(presence), self.clock.now_ms()).await?;
        Ok(())
    }

    /// What the Kommo UI shows beside the client's name: their presence, and whether they type.
    pub async fn view(
        &self,
        scope_id: &str,
        conversation_id: &str,
        client_user_id: Option<&str>,
    ) -> Result<(PresenceView, bool), FlowError> {
        let Some(user_id) = client_user_id else {
            return Ok((PresenceView::default(), false));
        };
        let now = self.clock.now_ms();
        let view = self.windows.presence(scope_id, &client_subject(user_id), now).await?;
        let lease = LeaseKey::client(scope_id, conversation_id, user_id);
        let typing = self.leases.get_lease(&lease, now).await?.is_some();
        Ok((view, typing))
    }
}

fn key(presence: &ClientPresenceSignal) -> PresenceKey {
    PresenceKey {
        scope_id: presence.scope_id.clone(),
        subject: client_subject(&presence.user_id),
        device: presence.device_id.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| DEFAULT_DEVICE.into()),
    }
}
