//! Reactions both ways. A manager's, from Kommo's `action.reaction` webhook, is queued to the
//! chat service as `reaction.added` / `reaction.removed` before the 200. A client's, from the
//! chat service, is checked and queued before the 200; the queued half waits for the message's
//! import when it is a client's own, then calls amojo's `react`, with backoff while amojo is
//! unavailable.

use std::sync::Arc;

use super::client_messages::ClientContentToKommo;
use super::kommo_names::{kommo_conversation, kommo_message};
use super::{FlowError, requeue};
use crate::models::chat::{BridgeEvent, ClientReaction, ManagerReaction, ManagerRef, MessageRef};
use crate::models::kommo::{KommoMessageRef, ReactRequest, ReactionAction, SenderRef};
use crate::ports::kommo::KommoError;
use crate::ports::store::IncomingState;
use crate::ports::timers::{DueWork, Timers};
use crate::rules::rejection::Rejection;
use crate::rules::validation::check_client_reaction;
use crate::time::Clock;

/// Kommo's reaction webhook.
#[derive(Clone)]
pub struct ManagerReactions {
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
}

impl ManagerReactions {
    /// Kommo does not document this webhook, so a shape the bridge cannot read is acknowledged
    /// and logged, like any webhook it does not know: an error answer would count against the
    /// channel, and Kommo never sends a webhook again anyway.
    pub async fn on_webhook(&self, scope_id: &str, reaction: &ReactionAction) -> Result<(), FlowError> {
        match manager_reaction(scope_id, reaction) {
            Ok(event) => self.timers.schedule(DueWork::deliver(event), self.clock.now_ms()).await?,
            Err(unreadable) => tracing::warn!(%unreadable, "a reaction webhook the bridge cannot read; acknowledged"),
        }
        Ok(())
    }
}

/// The chat service's event for Kommo's reaction webhook, in either shape Kommo is seen to send.
pub fn manager_reaction(scope_id: &str, reaction: &ReactionAction) -> Result<BridgeEvent, Rejection> {
    let given = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
    let added = match reaction.kind.as_deref() {
        Some("react") => true,
        Some("unreact") => false,
        _ => return Err(Rejection::invalid("action.reaction.type must be react or unreact")),
    };
    let emoji = given(&reaction.emoji);
    if added && emoji.is_none() {
        return Err(Rejection::invalid("action.reaction.emoji is required with react"));
    }
    let conversation = reaction
        .conversation
        .as_ref()
        .filter(|c| !c.id.is_empty())
        .ok_or_else(|| Rejection::invalid("action.reaction.conversation.id is required"))?;
    let user = reaction.user.as_ref();
    let manager_id =
        user.and_then(|u| given(&u.id)).ok_or_else(|| Rejection::invalid("action.reaction.user.id is required"))?;
    // The integration's id when Kommo names one (a client's message), else Kommo's.
    let message = reaction.message.as_ref();
    let message = match (message.and_then(|m| given(&m.client_id)), message.and_then(|m| given(&m.id))) {
        (Some(msgid), _) => MessageRef { msgid: Some(msgid), reference: None },
        (None, Some(kommo_msgid)) => MessageRef { msgid: None, reference: Some(kommo_msgid) },
        (None, None) => match given(&reaction.msgid) {
            Some(kommo_msgid) => MessageRef { msgid: None, reference: Some(kommo_msgid) },
            None => return Err(Rejection::invalid("action.reaction names no message (msgid or message.id)")),
        },
    };
    let reaction = ManagerReaction {
        scope_id: scope_id.to_owned(),
        conversation_id: conversation.integration_id().to_owned(),
        manager: ManagerRef::by_amojo_id(manager_id, user.and_then(|u| given(&u.name))),
        emoji,
        message,
    };
    Ok(if added { BridgeEvent::ReactionAdded(reaction) } else { BridgeEvent::ReactionRemoved(reaction) })
}

/// The chat service's `reaction.added` / `reaction.removed`.
#[derive(Clone)]
pub struct ClientReactions {
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
}

impl ClientReactions {
    pub async fn on_reaction(&self, reaction: &ClientReaction, added: bool) -> Result<(), FlowError> {
        check_client_reaction(reaction, added)?;
        let work = DueWork::SendClientReaction { reaction: Box::new(reaction.clone()), added, attempt: 0, waits: 0 };
        self.timers.schedule(work, self.clock.now_ms()).await?;
        Ok(())
    }
}

impl ClientContentToKommo {
    /// A client's reaction (`added`) or its withdrawal, put into Kommo: on their own message only
    /// once that is in Kommo; with backoff while amojo is unavailable.
    pub async fn react(
        &self,
        reaction: &ClientReaction,
        added: bool,
        attempt: u32,
        waits: u32,
    ) -> Result<(), FlowError> {
        let scope_id = reaction.scope_id.as_str();
        let retry_after = match self.kommo_message_reacted_to(reaction).await? {
            Reacted::To(message) => {
                let target =
                    kommo_conversation(self.conversations.as_ref(), scope_id, &reaction.conversation_id).await?;
                let request = ReactRequest {
                    conversation_id: target.conversation_id,
                    conversation_ref_id: target.conversation_ref_id,
                    message,
                    user: SenderRef { id: reaction.user_id.clone() },
                    kind: if added { "react" } else { "unreact" }.to_owned(),
                    emoji: reaction.emoji.clone(),
                };
                match self.kommo.react(scope_id, &request).await {
                    Ok(()) => {
                        tracing::info!(added, "client reaction sent to Kommo");
                        return Ok(());
                    }
                    Err(KommoError::Unavailable { retry_after, .. }) => retry_after,
                    Err(error) => {
                        tracing::error!(%error, "client reaction refused by Kommo; dropped");
                        return Ok(());
                    }
                }
            }
            Reacted::NotInKommoYet => {
                let again = DueWork::SendClientReaction {
                    reaction: Box::new(reaction.clone()),
                    added,
                    attempt,
                    waits: waits + 1,
                };
                return self.wait_for_import(waits, again).await;
            }
            Reacted::NeverInKommo => {
                tracing::warn!("reaction to a message Kommo never took; dropped");
                return Ok(());
            }
        };
        let again =
            |attempt| DueWork::SendClientReaction { reaction: Box::new(reaction.clone()), added, attempt, waits };
        let now = self.clock.now_ms();
        if !requeue(self.timers.as_ref(), &self.retry, attempt, retry_after, now, again).await? {
            tracing::error!("client reaction not sent to Kommo; attempts spent");
        }
        Ok(())
    }

    /// The message a client reacted to, as amojo takes it.
    async fn kommo_message_reacted_to(&self, reaction: &ClientReaction) -> Result<Reacted, FlowError> {
        let scope_id = reaction.scope_id.as_str();
        let Some(msgid) = &reaction.message.msgid else {
            return Ok(Reacted::To(KommoMessageRef { msgid: None, id: reaction.message.reference.clone() }));
        };
        Ok(match self.records.incoming_state(scope_id, msgid).await? {
            // The client's own message: Kommo knows it by the chat service's id once imported.
            Some(IncomingState::Imported { .. }) => {
                Reacted::To(KommoMessageRef { msgid: Some(msgid.clone()), id: None })
            }
            Some(IncomingState::Pending) => Reacted::NotInKommoYet,
            Some(IncomingState::Failed) => Reacted::NeverInKommo,
            // Not a client's: a manager's message the chat service names by its own id.
            None => Reacted::To(kommo_message(self.records.as_ref(), scope_id, &reaction.message).await?),
        })
    }
}

/// What a client's reaction is on, for Kommo.
enum Reacted {
    To(KommoMessageRef),
    NotInKommoYet,
    NeverInKommo,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(action: serde_json::Value) -> Result<serde_json::Value, String> {
        let reaction: ReactionAction = serde_json::from_value(action).unwrap();
        manager_reaction("chan_acc", &reaction).map(|e| serde_json::to_value(e).unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn both_shapes_of_kommo_reaction_webhooks_are_read() {
        let user = json!({"id": "mgr-1", "name": "Ann"});
        let conversation = json!({"id": "kommo-chat-1", "client_id": "conv-1"});
        // Shape A: the message as Kommo's msgid.
        let a =
            event(json!({"type": "react", "emoji": "👍", "user": user, "conversation": conversation, "msgid": "k-1"}));
        assert_eq!(
            a.unwrap(),
            json!({"type": "reaction.added", "scope_id": "chan_acc", "conversation_id": "conv-1",
                   "manager": {"id": "mgr-1", "name": "Ann"}, "emoji": "👍", "reference": "k-1"})
        );
        // Shape B: the message with the integration's id: a client's message.
        let b = event(json!({"type": "unreact", "user": {"id": "mgr-1"}, "conversation": {"id": "kommo-chat-1"},
                             "message": {"id": "k-2", "client_id": "c-2"}, "unknown": 1}));
        assert_eq!(
            b.unwrap(),
            json!({"type": "reaction.removed", "scope_id": "chan_acc", "conversation_id": "kommo-chat-1",
                   "manager": {"id": "mgr-1"}, "msgid": "c-2"})
        );
        let manager_message = event(json!({"type": "react", "emoji": "🔥", "user": {"id": "m"},
                                           "conversation": conversation, "message": {"id": "k-3"}}));
        assert_eq!(manager_message.unwrap()["reference"], "k-3");
    }

    #[test]
    fn a_reaction_webhook_missing_a_piece_is_refused() {
        let base =
            json!({"type": "react", "emoji": "👍", "user": {"id": "m"}, "conversation": {"id": "c"}, "msgid": "k"});
        for (field, replacement, error) in [
            ("type", json!("like"), "action.reaction.type must be react or unreact"),
            ("emoji", json!(""), "action.reaction.emoji is required with react"),
            ("conversation", json!({"id": ""}), "action.reaction.conversation.id is required"),
            ("user", json!({"name": "x"}), "action.reaction.user.id is required"),
            ("msgid", json!(null), "action.reaction names no message (msgid or message.id)"),
        ] {
            let mut action = base.clone();
            action[field] = replacement;
            assert_eq!(event(action).unwrap_err(), error, "{field}");
        }
    }
}
