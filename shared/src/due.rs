//! Running work that fell due (timers and queued deliveries), and the SQS batch shape the
//! `typing-expiry` function consumes, with per-record failures.

use serde::{Deserialize, Serialize};

use crate::app::Bridge;
use crate::chat_client::ChatError;
use crate::config::RetryPolicy;
use crate::models::chat::BridgeEvent;
use crate::outbound::wait_before_retry;
use crate::timers::DueWork;
use crate::typing::DueError;

impl DueWork {
    /// A delivery of `event` to the chat service, first attempt, with a fresh message id.
    pub fn deliver(event: BridgeEvent) -> Self {
        Self::DeliverChatEvent { event, webhook_id: crate::typing::new_webhook_id(), attempt: 0 }
    }
}

impl Bridge {
    /// Runs one piece of due work. An `Err` is transient (store or queue unavailable): the
    /// work is delivered again (SQS redelivery, or the in-process loop's retry).
    pub async fn run_due(&self, work: DueWork) -> Result<(), DueError> {
        match work {
            DueWork::ManagerTypingCheck { scope_id, conversation_id, manager_id } => {
                self.check_manager_typing(&scope_id, &conversation_id, &manager_id).await
            }
            DueWork::ManagerPresenceCheck { scope_id, conversation_id, manager_id } => {
                self.check_manager_presence(&scope_id, &conversation_id, &manager_id).await
            }
            DueWork::ClientTypingRefresh { scope_id, conversation_id, user_id } => {
                self.refresh_client_typing(&scope_id, &conversation_id, &user_id).await
            }
            DueWork::DeliverChatEvent { event, webhook_id, attempt } => {
                self.deliver_chat_event(event, webhook_id, attempt).await
            }
            DueWork::RelayManagerMessage { scope_id, kommo_msgid, event, typing_stopped, webhook_id, attempt } => {
                self.relay_manager_message(&scope_id, &kommo_msgid, event, typing_stopped, webhook_id, attempt).await
            }
            DueWork::ReportDeliveryStatus { scope_id, request, attempt } => {
                self.report_delivery_status(&scope_id, request, attempt).await
            }
            DueWork::ImportClientMessage { message, attempt } => self.import_client_message(&message, attempt).await,
        }
    }

    /// One delivery attempt (with a quick retry inside); while the chat service is unavailable
    /// the delivery is queued again with backoff, until the retry policy runs out. A typing
    /// signal whose moment has passed is not sent at all.
    pub(crate) async fn deliver_chat_event(
        &self,
        event: BridgeEvent,
        webhook_id: String,
        attempt: u32,
    ) -> Result<(), DueError> {
        let now = self.clock.now_ms();
        if let BridgeEvent::TypingStarted { expires_at, .. } = &event
            && expires_at.saturating_mul(1000) <= now
        {
            tracing::debug!(scope_id = event.scope_id(), "typing.started past its expiry; not sent");
            return Ok(());
        }
        match self.chat.deliver(&event, &webhook_id, RetryPolicy::EPHEMERAL).await {
            Ok(_) => Ok(()),
            Err(ChatError::Rejected { status, code, .. }) => {
                tracing::warn!(scope_id = event.scope_id(), status, code, "the chat service refused an event");
                Ok(())
            }
            Err(ChatError::Unavailable { reason, .. }) => {
                let next = attempt + 1;
                if next >= self.config.retry.max_attempts {
                    tracing::error!(scope_id = event.scope_id(), %reason, attempts = next, "event not delivered; given up");
                    return Ok(());
                }
                let wait = wait_before_retry(&self.config.retry, next, None);
                let again = DueWork::DeliverChatEvent { event, webhook_id, attempt: next };
                self.timers.schedule(again, now + wait.as_millis() as i64).await?;
                Ok(())
            }
        }
    }
}

/// The SQS event Lambda hands `typing-expiry` (only the fields it reads).
#[derive(Debug, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<SqsRecord>,
}

#[derive(Debug, Deserialize)]
pub struct SqsRecord {
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(default)]
    pub body: String,
}

/// Partial batch response: only the failed records are delivered again.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct SqsBatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct BatchItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

impl Bridge {
    /// Runs a batch concurrently. A record that cannot be parsed is logged (by id, never its
    /// body) and reported failed, so the queue's redrive moves it to the dead-letter queue after
    /// a few receives instead of retrying it forever; a transient failure is reported and
    /// retried. Everything else succeeds.
    pub async fn handle_sqs_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let runs = event.records.into_iter().map(|record| async move {
            let work: DueWork = match serde_json::from_str(&record.body) {
                Ok(work) => work,
                Err(error) => {
                    tracing::error!(message_id = %record.message_id, %error, "unreadable due work");
                    return Some(record.message_id);
                }
            };
            let kind = work.kind();
            match self.run_due(work).await {
                Ok(()) => None,
                Err(error) => {
                    tracing::warn!(message_id = %record.message_id, work = kind, %error, "due work failed; redelivered later");
                    Some(record.message_id)
                }
            }
        });
        let failures = futures_util::future::join_all(runs).await;
        SqsBatchResponse {
            batch_item_failures: failures
                .into_iter()
                .flatten()
                .map(|item_identifier| BatchItemFailure { item_identifier })
                .collect(),
        }
    }
}
