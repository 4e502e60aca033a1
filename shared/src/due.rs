//! Running work that fell due (timers and queued deliveries), and the SQS batch shape the
//! `typing-expiry` function consumes, with per-record failures.

use serde::{Deserialize, Serialize};

use crate::app::Bridge;
use crate::chat_client::ChatError;
use crate::config::RetryPolicy;
use crate::models::chat::{BridgeEvent, ManagerRef};
use crate::outbound::wait_before_retry;
use crate::store::LeaseKey;
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
    ///
    /// A manager's `typing.started` is sent only while their lease lives, and when the lease
    /// ended while it was on its way (its `typing.stopped`, sent by the expiry timer or by the
    /// manager's message, may have got there first), a `typing.stopped` follows it: whatever the
    /// retries did to the order, the chat service's last word on a lease is that it ended.
    pub(crate) async fn deliver_chat_event(
        &self,
        event: BridgeEvent,
        webhook_id: String,
        attempt: u32,
    ) -> Result<(), DueError> {
        let now = self.clock.now_ms();
        let lease = match &event {
            BridgeEvent::TypingStarted { expires_at, .. } if expires_at.saturating_mul(1000) <= now => {
                tracing::debug!(scope_id = event.scope_id(), "typing.started past its expiry; not sent");
                return Ok(());
            }
            BridgeEvent::TypingStarted { scope_id, conversation_id, manager, .. } => {
                Some(LeaseKey::manager(scope_id, conversation_id, &manager.id))
            }
            _ => None,
        };
        if let Some(key) = &lease
            && self.store.get_lease(key, now).await?.is_none()
        {
            tracing::debug!(scope_id = event.scope_id(), "typing.started for a lease already ended; not sent");
            return Ok(());
        }
        match self.chat.deliver(&event, &webhook_id, RetryPolicy::EPHEMERAL).await {
            Ok(_) => {
                if let Some(key) = &lease
                    && self.store.get_lease(key, self.clock.now_ms()).await?.is_none()
                    && let BridgeEvent::TypingStarted { scope_id, conversation_id, manager, .. } = event
                {
                    tracing::info!(%scope_id, "the lease ended while typing.started was on its way; stopping again");
                    let stopped = BridgeEvent::TypingStopped {
                        scope_id,
                        conversation_id,
                        manager: ManagerRef { id: manager.id, name: None },
                    };
                    self.timers.schedule(DueWork::deliver(stopped), self.clock.now_ms()).await?;
                }
                Ok(())
            }
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

/// A bridge on a manual clock with manual timers and in-memory outbound ports, for the
/// regression tests of due work here and in [`crate::messages`].
#[cfg(test)]
pub(crate) mod sim {
    use std::sync::Arc;

    use bytes::Bytes;

    use crate::app::Bridge;
    use crate::config::Config;
    use crate::http::HttpResponse;
    use crate::models::chat::BridgeEvent;
    use crate::routes::EntryPoint;
    use crate::store::memory::MemoryStore;
    use crate::testing::{RecordingChat, RecordingKommo};
    use crate::time::{Clock, ManualClock};
    use crate::timers::{DueWork, ManualTimers, TimerError, Timers};

    pub const SCOPE: &str = "local-channel_acc-1";
    pub const T0: i64 = 1_700_000_000_000;

    /// Manual timers that can be told to refuse the next piece of work (a queue outage).
    pub struct FlakyTimers {
        pub inner: Arc<ManualTimers>,
        pub refuse_next: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl Timers for FlakyTimers {
        async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError> {
            if self.refuse_next.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(TimerError("the queue is unavailable".into()));
            }
            self.inner.schedule(work, due_at_ms).await
        }
    }

    pub struct Sim {
        pub clock: Arc<ManualClock>,
        pub timers: Arc<ManualTimers>,
        pub flaky_timers: Arc<FlakyTimers>,
        pub kommo: Arc<RecordingKommo>,
        pub chat: Arc<RecordingChat>,
        pub bridge: Bridge,
    }

    impl Sim {
        pub fn new() -> Self {
            let clock = Arc::new(ManualClock::at_ms(T0));
            let timers = Arc::new(ManualTimers::default());
            let flaky_timers = Arc::new(FlakyTimers { inner: timers.clone(), refuse_next: Default::default() });
            let kommo = Arc::new(RecordingKommo::new(clock.clone()));
            let chat = Arc::new(RecordingChat::new(clock.clone()));
            let env = |name: &str| (name == "KOMMO_ACCOUNTS").then(|| "1:acc-1".to_owned());
            let (config, _) = Config::from_env_local(&env, "http://127.0.0.1:9").expect("local defaults");
            let bridge = Bridge {
                config,
                clock: clock.clone(),
                store: Arc::new(MemoryStore::new()),
                kommo: kommo.clone(),
                chat: chat.clone(),
                timers: flaky_timers.clone(),
            };
            Self { clock, timers, flaky_timers, kommo, chat, bridge }
        }

        /// Moves time to `t_ms`, running the timers that fall due on the way, in order.
        pub async fn advance_to(&self, t_ms: i64) {
            while let Some(due) = self.timers.pending().iter().map(|(due, _)| *due).min().filter(|due| *due <= t_ms) {
                self.clock.set_ms(due.max(self.clock.now_ms()));
                for work in self.timers.take_due(due) {
                    self.bridge.run_due(work).await.expect("due work runs");
                }
            }
            self.clock.set_ms(t_ms);
        }

        pub async fn kommo_webhook(&self, body: String) -> HttpResponse {
            let signature =
                crate::signing::kommo_webhook::sign(self.bridge.config.channel_secret.expose(), body.as_bytes());
            let request = http::Request::post(format!("/kommo/webhook/{SCOPE}"))
                .header("x-signature", signature)
                .body(Bytes::from(body))
                .unwrap();
            self.bridge.handle(EntryPoint::KommoWebhook, request).await
        }

        pub async fn chat_event(&self, body: String) -> HttpResponse {
            let now_s = self.clock.now_s();
            let id = crate::typing::new_webhook_id();
            let signature = self.bridge.config.chat_service_secret.sign(&id, now_s, body.as_bytes());
            let request = http::Request::post("/chat/events")
                .header("webhook-id", &id)
                .header("webhook-timestamp", now_s.to_string())
                .header("webhook-signature", signature)
                .body(Bytes::from(body))
                .unwrap();
            self.bridge.handle(EntryPoint::ChatCallback, request).await
        }

        /// What the chat service accepted, in order: "started", "stopped", "message".
        pub fn chat_events(&self) -> Vec<&'static str> {
            let kinds = self.chat.events().into_iter().map(|recorded| match recorded.call {
                BridgeEvent::TypingStarted { .. } => "started",
                BridgeEvent::TypingStopped { .. } => "stopped",
                BridgeEvent::MessageCreated { .. } => "message",
                _ => "other",
            });
            kinds.collect()
        }
    }

    pub fn manager_typing(conversation: &str, expired_at_s: i64) -> String {
        serde_json::json!({"account_id": "acc-1", "time": expired_at_s - 5,
            "action": {"typing": {"user": {"id": "manager-1"},
                "conversation": {"id": format!("kommo-{conversation}"), "client_id": conversation},
                "expired_at": expired_at_s}}})
        .to_string()
    }

    pub fn manager_message(conversation: &str, kommo_msgid: &str) -> String {
        serde_json::json!({"account_id": "acc-1", "time": 1,
            "message": {"receiver": {"id": "r", "client_id": "client-1"}, "sender": {"id": "manager-1"},
                "conversation": {"id": format!("kommo-{conversation}"), "client_id": conversation}, "timestamp": 1,
                "message": {"id": kommo_msgid, "type": "text", "text": "hello"}}})
        .to_string()
    }

    pub fn chat_down() -> crate::chat_client::ChatError {
        crate::chat_client::ChatError::Unavailable { attempts: 2, status: Some(503), reason: "HTTP 503".into() }
    }
}

#[cfg(test)]
mod tests {
    use super::sim::*;

    #[tokio::test]
    async fn a_typing_started_held_back_by_a_failure_is_not_sent_after_the_lease_ended() {
        // Found by tests/suites/faults.rs: the retry of typing.started reached the chat service
        // after the typing.stopped of the manager's message, leaving the manager typing there.
        let sim = Sim::new();
        sim.chat.fail_next([chat_down()]);
        assert_eq!(sim.kommo_webhook(manager_typing("conv-1", T0 / 1000 + 5)).await.status(), 200);
        sim.advance_to(T0 + 10).await; // typing.started fails, and waits for its retry
        assert_eq!(sim.kommo_webhook(manager_message("conv-1", "kommo-1")).await.status(), 200);
        sim.advance_to(T0 + 60_000).await;
        assert_eq!(sim.chat_events(), ["stopped", "message"], "the chat service's last word is not a start");
    }
}
