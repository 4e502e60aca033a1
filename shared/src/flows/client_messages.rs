//! A client's message, chat service → Kommo. The event records it once per chat-service msgid,
//! ends the client's typing and queues the import, all before the 200; the import (queued work)
//! creates the chat first when the bridge has not seen the conversation, and retries with
//! backoff while amojo is unavailable.

use std::sync::Arc;

use super::FlowError;
use crate::ids::random_bytes;
use crate::models::chat::{ChatUser, ClientMessage};
use crate::models::kommo::{CreateChatRequest, ImportMessageRequest, ImportPayload, Participant, Profile, Source};
use crate::ports::kommo::{KommoApi, KommoError};
use crate::ports::store::{Conversations, LeaseKey, MessageRecords, TypingLeases};
use crate::ports::timers::{DueWork, Timers};
use crate::rules::names::client_display_name;
use crate::rules::retry::{RetryPolicy, requeue_delay_ms};
use crate::rules::validation::check_client_message;
use crate::time::Clock;

/// The chat service's `message.created`.
#[derive(Clone)]
pub struct ClientMessages {
    pub records: Arc<dyn MessageRecords>,
    /// The client's typing lease, ended by their message.
    pub leases: Arc<dyn TypingLeases>,
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
}

impl ClientMessages {
    /// Recorded once per msgid, the client's typing ended, the import queued.
    pub async fn on_message(&self, message: &ClientMessage) -> Result<(), FlowError> {
        check_client_message(message)?;
        let scope_id = message.scope_id.as_str();
        let now = self.clock.now_ms();
        let first = self
            .records
            .insert_incoming(scope_id, &message.msgid, &message.conversation_id, message.timestamp_ms)
            .await?;
        if !first {
            tracing::info!(msgid = %message.msgid, "client message already recorded; duplicate ignored");
            return Ok(());
        }
        let queued = async {
            let typing = LeaseKey::client(scope_id, &message.conversation_id, &message.user.id);
            self.leases.end(&typing, now).await?;
            let import = DueWork::ImportClientMessage { message: Box::new(message.clone()), attempt: 0 };
            self.timers.schedule(import, now).await?;
            Ok::<_, FlowError>(())
        };
        if let Err(error) = queued.await {
            // Not accepted (5xx): the record goes too, so the chat service's retry is a first
            // delivery again rather than a duplicate that nobody would import.
            tracing::error!(%error, "import not queued; the message is not accepted");
            let forgotten =
                self.records.forget_incoming(scope_id, &message.msgid, &message.conversation_id, message.timestamp_ms);
            if let Err(forget_error) = forgotten.await {
                tracing::error!(error = %forget_error, "a refused client message's record stays");
            }
            return Err(error);
        }
        Ok(())
    }
}

/// The queued half: the import into Kommo.
#[derive(Clone)]
pub struct MessageImport {
    pub records: Arc<dyn MessageRecords>,
    pub conversations: Arc<dyn Conversations>,
    pub timers: Arc<dyn Timers>,
    pub kommo: Arc<dyn KommoApi>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
}

impl MessageImport {
    /// Imports a client's message into Kommo, the chat created first if needed.
    pub async fn import(&self, message: &ClientMessage, attempt: u32) -> Result<(), FlowError> {
        let scope_id = message.scope_id.as_str();
        if self.records.incoming_kommo_msgid(scope_id, &message.msgid).await?.is_some() {
            return Ok(()); // imported by an earlier delivery of this work
        }
        let sender = participant(&message.user);
        let outcome = async {
            let known = self.conversations.find_conversation(scope_id, &message.conversation_id).await?;
            if known.and_then(|conversation| conversation.kommo_chat_id).is_none() {
                let request = CreateChatRequest {
                    conversation_id: message.conversation_id.clone(),
                    source: kommo_source(message),
                    user: sender.clone(),
                };
                match self.kommo.create_chat(scope_id, &request).await {
                    Ok(chat) => {
                        let client = Some(message.user.id.as_str());
                        self.conversations
                            .remember_conversation(scope_id, &message.conversation_id, Some(&chat.id), client)
                            .await?
                    }
                    Err(error) => return Ok(Err(error)),
                }
            }
            let payload = ImportPayload {
                timestamp: message.timestamp_ms.div_euclid(1000),
                msec_timestamp: message.timestamp_ms,
                msgid: message.msgid.clone(),
                conversation_id: message.conversation_id.clone(),
                conversation_ref_id: None,
                sender,
                receiver: None,
                source: kommo_source(message),
                message: message.message.clone(),
                silent: false,
            };
            Ok::<_, FlowError>(self.kommo.import_message(scope_id, &ImportMessageRequest::new_message(payload)).await)
        }
        .await?;
        match outcome {
            Ok(imported) => {
                self.records.link_incoming(scope_id, &message.msgid, &imported.new_message.msgid).await?;
                tracing::info!(msgid = %message.msgid, kommo_msgid = %imported.new_message.msgid, "client message imported");
            }
            Err(KommoError::Unavailable { reason, retry_after, .. }) if attempt + 1 < self.retry.max_attempts => {
                let random = u64::from_le_bytes(random_bytes::<8>());
                let at = self.clock.now_ms() + requeue_delay_ms(&self.retry, attempt + 1, retry_after, random);
                tracing::warn!(msgid = %message.msgid, %reason, "import failed; queued again");
                let again = DueWork::ImportClientMessage { message: Box::new(message.clone()), attempt: attempt + 1 };
                self.timers.schedule(again, at).await?;
            }
            Err(error) => {
                tracing::error!(msgid = %message.msgid, %error, "client message not imported; given up");
            }
        }
        Ok(())
    }
}

/// The source the client wrote to, as amojo takes it.
fn kommo_source(message: &ClientMessage) -> Option<Source> {
    let external_id = message.source.as_ref()?.external_id.clone();
    Some(Source { external_id: Some(external_id), extra: Default::default() })
}

/// The client as amojo takes them, always named ([`client_display_name`]): Kommo refuses a
/// chat or an import without a name.
fn participant(user: &ChatUser) -> Participant {
    let mut participant = Participant::with_id(user.id.clone());
    participant.name = Some(client_display_name(user));
    participant.avatar = user.avatar.clone();
    participant.profile_link = user.profile_link.clone();
    if user.phone.is_some() || user.email.is_some() {
        participant.profile =
            Some(Profile { phone: user.phone.clone(), email: user.email.clone(), extra: Default::default() });
    }
    participant
}
