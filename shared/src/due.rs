//! Running work that fell due (timers and queued deliveries), and the SQS batch shape the
//! `typing-expiry` function consumes, with per-record failures.

use serde::{Deserialize, Serialize};

use crate::app::Bridge;
use crate::chat_client::ChatError;
use crate::config::RetryPolicy;
use crate::lanes::{SEND_TURN_HOLD_MS, busy_retry_at, typing_lane};
use crate::models::chat::{BridgeEvent, ManagerRef};
use crate::outbound::wait_before_retry;
use crate::store::{LeaseKey, Turn};
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
            DueWork::RelayManagerMessage { scope_id, kommo_msgid, event, webhook_id, attempt } => {
                let relay = crate::messages::Relay {
                    scope_id: &scope_id,
                    kommo_msgid: &kommo_msgid,
                    event,
                    webhook_id,
                    attempt,
                };
                self.relay_manager_message(relay).await
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
    /// A manager's typing goes out in its lane ([`crate::lanes`]), one event at a time, and
    /// only when it changes what the chat service shows and is true: `typing.started` while a
    /// lease lives and the indicator is off there, `typing.stopped` while none lives and it is
    /// on. So starts and stops alternate, whatever order the queue ran them in. When the lease
    /// ended while `typing.started` was on its way, a `typing.stopped` follows.
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
        let Some(key) = manager_typing_key(&event) else {
            return self.send_chat_event(event, webhook_id, attempt, now).await.map(drop);
        };
        let lane = typing_lane(&key);
        let (token, shown) = match self.store.take_turn(&key.scope_id, &lane, now, SEND_TURN_HOLD_MS).await? {
            Turn::Busy { until_ms } => {
                let again = DueWork::DeliverChatEvent { event, webhook_id, attempt };
                return Ok(self.timers.schedule(again, busy_retry_at(now, until_ms)).await?);
            }
            Turn::Yours { token, sent_mark } => (token, TypingShown::from_mark(sent_mark)),
        };
        let sent = self.send_manager_typing(&key, event, webhook_id, attempt, now, shown).await;
        let mark = sent.as_ref().ok().copied().flatten().map(TypingShown::mark);
        self.store.end_turn(&key.scope_id, &lane, &token, mark).await?;
        sent.map(drop)
    }

    /// Sends a manager typing event inside its lane's turn, if it changes what the chat service
    /// shows and is true of the lease; returns what the chat service shows after it, if sent.
    async fn send_manager_typing(
        &self,
        key: &LeaseKey,
        event: BridgeEvent,
        webhook_id: String,
        attempt: u32,
        now: i64,
        shown: TypingShown,
    ) -> Result<Option<TypingShown>, DueError> {
        let starts = matches!(event, BridgeEvent::TypingStarted { .. });
        let live = self.store.get_lease(key, now).await?.is_some();
        // A start's retry goes out while its lease lives even if the lane counts it shown: its
        // first attempt failed in a way that may or may not have shown it (below).
        let already = starts == shown.on() && !(starts && attempt > 0);
        if starts != live || already {
            tracing::debug!(scope_id = %key.scope_id, starts, live, "typing event changes nothing true; not sent");
            return Ok(None);
        }
        let stop_after = typing_stopped_for(&event);
        // What the chat service shows after this event, if it changes.
        let after = (starts != shown.on()).then(|| shown.next());
        match self.send_chat_event(event, webhook_id, attempt, now).await? {
            Delivery::Delivered => {}
            // A start that timed out may have been shown: counted as shown, so a stop follows
            // (and its retry, above, still goes out).
            Delivery::Uncertain if starts => return Ok(after),
            Delivery::Uncertain | Delivery::Refused => return Ok(None),
        }
        if let Some(stopped) = stop_after
            && self.store.get_lease(key, self.clock.now_ms()).await?.is_none()
        {
            tracing::info!(scope_id = %key.scope_id, "the lease ended while typing.started was on its way; stopping again");
            self.timers.schedule(DueWork::deliver(stopped), self.clock.now_ms()).await?;
        }
        Ok(after)
    }

    /// One attempt at a chat-service event. Unavailable: queued again with backoff, or given
    /// up once the retry policy runs out.
    async fn send_chat_event(
        &self,
        event: BridgeEvent,
        webhook_id: String,
        attempt: u32,
        now: i64,
    ) -> Result<Delivery, DueError> {
        match self.chat.deliver(&event, &webhook_id, RetryPolicy::EPHEMERAL).await {
            Ok(_) => Ok(Delivery::Delivered),
            Err(ChatError::Rejected { status, code, .. }) => {
                tracing::warn!(scope_id = event.scope_id(), status, code, "the chat service refused an event");
                Ok(Delivery::Refused)
            }
            Err(ChatError::Unavailable { reason, .. }) => {
                let next = attempt + 1;
                if next >= self.config.retry.max_attempts {
                    tracing::error!(scope_id = event.scope_id(), %reason, attempts = next, "event not delivered; given up");
                    return Ok(Delivery::Uncertain);
                }
                let wait = wait_before_retry(&self.config.retry, next, None);
                let again = DueWork::DeliverChatEvent { event, webhook_id, attempt: next };
                self.timers.schedule(again, now + wait.as_millis() as i64).await?;
                Ok(Delivery::Uncertain)
            }
        }
    }
}

/// The lease a manager typing event speaks of.
pub(crate) fn manager_typing_key(event: &BridgeEvent) -> Option<LeaseKey> {
    match event {
        BridgeEvent::TypingStarted { scope_id, conversation_id, manager, .. }
        | BridgeEvent::TypingStopped { scope_id, conversation_id, manager } => {
            Some(LeaseKey::manager(scope_id, conversation_id, &manager.id))
        }
        _ => None,
    }
}

/// How one send to the chat service ended.
enum Delivery {
    Delivered,
    /// A 4xx: the chat service did not take it.
    Refused,
    /// Unreachable, 5xx or timed out: it may have been taken (and is retried if still due).
    Uncertain,
}

/// What a manager's typing lane last told the chat service, kept as the lane's mark: the number
/// of typing events delivered on it (marks only rise), odd while the indicator is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TypingShown(i64);

impl TypingShown {
    pub(crate) fn from_mark(sent_mark: Option<i64>) -> Self {
        Self(sent_mark.unwrap_or(0))
    }
    pub(crate) fn on(self) -> bool {
        self.0 % 2 == 1
    }
    /// After one more event (a start when off, a stop when on).
    pub(crate) fn next(self) -> Self {
        Self(self.0 + 1)
    }
    pub(crate) fn mark(self) -> i64 {
        self.0
    }
}

/// The `typing.stopped` that ends what a `typing.started` began.
fn typing_stopped_for(event: &BridgeEvent) -> Option<BridgeEvent> {
    match event {
        BridgeEvent::TypingStarted { scope_id, conversation_id, manager, .. } => Some(BridgeEvent::TypingStopped {
            scope_id: scope_id.clone(),
            conversation_id: conversation_id.clone(),
            manager: ManagerRef { id: manager.id.clone(), name: None },
        }),
        _ => None,
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
mod tests {
    use crate::testing::sim::*;

    #[tokio::test]
    async fn a_typing_started_held_back_by_a_failure_is_not_sent_after_the_lease_ended() {
        // Found by tests/suites/faults.rs: the retry of typing.started reached the chat service
        // after the typing.stopped of the manager's message, leaving the manager typing there.
        let sim = Sim::new();
        sim.chat.fail_next([chat_down()]);
        assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
        sim.advance_to(T0 + 10).await; // typing.started fails, and waits for its retry
        assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-1")).await.status(), 200);
        sim.advance_to(T0 + 60_000).await;
        assert_eq!(sim.chat_events(), ["stopped", "message"], "the chat service's last word is not a start");
    }

    #[tokio::test]
    async fn a_typing_started_that_failed_is_sent_again_while_the_manager_types() {
        // The first attempt failed in a way that may have shown it: counted as shown (so a
        // stop is owed), but its retry must still go out, or the manager is never seen typing.
        let sim = Sim::new();
        sim.chat.fail_next([chat_down()]);
        assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
        sim.advance_to(T0 + 60_000).await;
        assert_eq!(sim.chat_events(), ["started", "stopped"]);
    }

    #[tokio::test]
    async fn a_slow_typing_stopped_is_never_overtaken_by_the_next_typing_started() {
        // Found by bridge-load (200 conversations): the expiry timer's typing.stopped was slow;
        // the manager typed again, and the new typing.started landed first, then the stop: the
        // chat service showed no typing while the manager typed.
        let sim = Sim::new();
        assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
        sim.advance_to(T0 + 5_000).await; // started; the lease runs to 6 s (its grace)
        sim.clock.set_ms(T0 + 6_500);
        let [expiry] = <[_; 1]>::try_from(sim.timers.take_due(T0 + 6_500)).unwrap();
        let slow_network = sim.chat.hold_next();
        let (stop, restart) = tokio::join!(sim.bridge.run_due(expiry), async {
            assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 11)).await.status(), 200);
            for work in sim.timers.take_due(T0 + 6_500) {
                sim.bridge.run_due(work).await?;
            }
            slow_network.notify_one();
            Ok::<_, crate::typing::DueError>(())
        });
        stop.unwrap();
        restart.unwrap();
        sim.advance_to(T0 + 60_000).await;
        assert_eq!(sim.chat_events(), ["started", "stopped", "started", "stopped"]);
    }

    #[tokio::test]
    async fn typing_again_before_a_late_expiry_timer_goes_on_without_a_second_start() {
        // Found by bridge-load (200 conversations): the lease lapsed, its timer ran late, and
        // the next webhook started a new lease: typing.started twice, the first never stopped.
        let sim = Sim::new();
        assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
        sim.advance_to(T0 + 100).await;
        sim.clock.set_ms(T0 + 6_500); // past the lease (6 s), its timer not run yet
        assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 11)).await.status(), 200);
        sim.advance_to(T0 + 60_000).await;
        assert_eq!(sim.chat_events(), ["started", "stopped"]);
        let stopped_at = sim.chat.events().last().map(|event| event.at_ms);
        assert_eq!(stopped_at, Some(T0 + 12_000), "stopped when the extended lease ran out");
    }
}
