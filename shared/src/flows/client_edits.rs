//! A client's edit, chat service → Kommo. The event is checked and queued before the 200; the
//! edit (queued work, in [`ClientContentToKommo`]) waits for the message's import, then changes it in
//! Kommo (`edit_message`), with backoff while amojo is unavailable.

use std::sync::Arc;

use super::client_messages::ClientContentToKommo;
use super::kommo_names::kommo_conversation;
use super::{FlowError, requeue};
use crate::models::chat::ClientEdit;
use crate::models::kommo::{EditMessageRequest, EditPayload};
use crate::ports::kommo::KommoError;
use crate::ports::store::IncomingState;
use crate::ports::timers::{DueWork, Timers, check_queueable};
use crate::rules::kommo_content::for_kommo;
use crate::rules::rejection::Rejection;
use crate::rules::validation::check_client_edit;
use crate::time::Clock;

/// The chat service's `message.edited`.
#[derive(Clone)]
pub struct ClientEdits {
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
}

impl ClientEdits {
    pub async fn on_edit(&self, edit: &ClientEdit) -> Result<(), FlowError> {
        check_client_edit(edit)?;
        let work = DueWork::EditClientMessage { edit: Box::new(edit.clone()), attempt: 0, waits: 0 };
        check_queueable(&work).map_err(Rejection::from)?;
        self.timers.schedule(work, self.clock.now_ms()).await?;
        Ok(())
    }
}

impl ClientContentToKommo {
    /// A client's edit: changed in Kommo once the message is in, with backoff while amojo is
    /// unavailable.
    pub async fn edit(&self, edit: &ClientEdit, attempt: u32, waits: u32) -> Result<(), FlowError> {
        let scope_id = edit.scope_id.as_str();
        let retry_after = match self.records.incoming_state(scope_id, &edit.msgid).await? {
            Some(IncomingState::Imported { .. }) => {
                let target = kommo_conversation(self.conversations.as_ref(), scope_id, &edit.conversation_id).await?;
                let edited_at_ms = edit.timestamp_ms.unwrap_or_else(|| self.clock.now_ms());
                let request = EditMessageRequest::edit_message(EditPayload {
                    timestamp: edited_at_ms.div_euclid(1000),
                    msec_timestamp: edited_at_ms,
                    msgid: edit.msgid.clone(),
                    conversation_id: target.conversation_id,
                    message: for_kommo(&edit.message),
                });
                match self.kommo.edit_message(scope_id, &request).await {
                    Ok(()) => {
                        tracing::info!(msgid = %edit.msgid.escape_debug(), "client message edited");
                        return Ok(());
                    }
                    Err(KommoError::Unavailable { retry_after, .. }) => retry_after,
                    Err(error) => {
                        tracing::error!(msgid = %edit.msgid.escape_debug(), %error, "edit refused by Kommo; dropped");
                        return Ok(());
                    }
                }
            }
            // Kommo cannot change what it does not have yet: the edit waits for the import.
            Some(IncomingState::Pending) => {
                let again = DueWork::EditClientMessage { edit: Box::new(edit.clone()), attempt, waits: waits + 1 };
                return self.wait_for_import(waits, again).await;
            }
            Some(IncomingState::Failed) => {
                tracing::warn!(msgid = %edit.msgid.escape_debug(), "edit of a message Kommo never took; dropped");
                return Ok(());
            }
            None => {
                tracing::warn!(msgid = %edit.msgid.escape_debug(), "edit of a message the bridge never had; dropped");
                return Ok(());
            }
        };
        let again = |attempt| DueWork::EditClientMessage { edit: Box::new(edit.clone()), attempt, waits };
        let now = self.clock.now_ms();
        if !requeue(self.timers.as_ref(), &self.retry, attempt, retry_after, now, again).await? {
            tracing::error!(msgid = %edit.msgid.escape_debug(), "edit not applied in Kommo; attempts spent");
        }
        Ok(())
    }
}
