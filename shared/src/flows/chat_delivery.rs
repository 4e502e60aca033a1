//! Every event the bridge sends the chat service goes out here, as queued work: one attempt
//! (with a quick retry inside), queued again with backoff while the chat service is unavailable,
//! until the retry policy runs out. A typing signal whose moment has passed is not sent at all.
//!
//! A manager's typing goes out in its lane ([`crate::rules::lanes`]), one event at a time, and
//! only when it changes what the chat service shows and is true
//! ([`crate::rules::typing::typing_send_due`]): `typing.started` while a lease lives and the
//! indicator is off there, `typing.stopped` while none lives and it is on. So starts and stops
//! alternate, whatever order the queue ran them in. When the lease ended while
//! `typing.started` was on its way, a `typing.stopped` follows.
//!
//! A manager's `presence.changed` goes out in its own lane too, and says what the presence
//! register says when it is sent, not what it said when the push was decided: two pushes
//! decided close together (offline, then online again) can run in either order or at once,
//! and the chat service must end up told the last state, each change once.

use std::sync::Arc;

use super::FlowError;
use crate::models::chat::{BridgeEvent, ManagerRef};
use crate::ports::chat::{ChatError, ChatService};
use crate::ports::store::{DedupeKeys, LeaseKey, PresenceWindows, SendTurns, Turn, TypingLeases};
use crate::ports::timers::{DueWork, Timers};
use crate::random::random_bytes;
use crate::rules::lanes::{SEND_TURN_HOLD_MS, busy_retry_at, presence_lane};
use crate::rules::presence::{managers_subject, presence_push_due};
use crate::rules::retry::{RetryPolicy, wait_before_retry};
use crate::rules::typing::{
    SendOutcome, TypingEvent, TypingShown, stop_owed_after, typing_send_due, typing_shown_after,
};
use crate::signing::standard_webhooks::derived_webhook_id;
use crate::time::Clock;

#[derive(Clone)]
pub struct ChatDelivery {
    pub leases: Arc<dyn TypingLeases>,
    pub lanes: Arc<dyn SendTurns>,
    /// Copies of an event waiting for its lane, one at a time ([`super::wait_for_hold`]).
    pub waits: Arc<dyn DedupeKeys>,
    pub timers: Arc<dyn Timers>,
    pub chat: Arc<dyn ChatService>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    /// The presence register: what a manager's `presence.changed` is to say.
    pub windows: Arc<dyn PresenceWindows>,
}

impl ChatDelivery {
    /// One delivery attempt of `event` under `webhook_id` (the same across its retries).
    pub async fn deliver(&self, event: BridgeEvent, webhook_id: String, attempt: u32) -> Result<(), FlowError> {
        let now = self.clock.now_ms();
        if let BridgeEvent::TypingStarted { expires_at, .. } = &event
            && expires_at.saturating_mul(1000) <= now
        {
            tracing::debug!("typing.started past its expiry; not sent");
            return Ok(());
        }
        if let BridgeEvent::PresenceChanged { .. } = &event {
            return self.deliver_presence(event, webhook_id, attempt, now).await;
        }
        let Some((key, typing)) = manager_typing_of(&event) else {
            return self.send(event, webhook_id, attempt, now).await.map(drop);
        };
        let lane = key.lane();
        let (token, lane_now) = match self.lanes.take_turn(&key.scope_id, &lane, now, SEND_TURN_HOLD_MS).await? {
            Turn::Busy { until_ms } => {
                let scope_id = key.scope_id.clone();
                return self.wait_for_lane(&scope_id, &lane, event, webhook_id, attempt, now, until_ms).await;
            }
            Turn::Yours { token, sent_mark, unconfirmed } => (token, (TypingShown::from_mark(sent_mark), unconfirmed)),
        };
        let sent = self.send_manager_typing(&key, typing, event, attempt, now, lane_now).await;
        let mark = sent.as_ref().ok().copied().flatten().map(TypingShown::mark);
        self.lanes.end_turn(&key.scope_id, &lane, &token, mark).await?;
        sent.map(drop)
    }

    /// A manager's `presence.changed`, in the lane of that manager in that conversation: sent
    /// only when the register's state differs from what the lane last told the chat service
    /// ([`presence_push_due`]), and saying that state.
    async fn deliver_presence(
        &self,
        mut event: BridgeEvent,
        webhook_id: String,
        attempt: u32,
        now: i64,
    ) -> Result<(), FlowError> {
        let BridgeEvent::PresenceChanged { scope_id, conversation_id, manager, .. } = &event else {
            unreachable!("only presence.changed comes here");
        };
        let (scope_id, manager_id) = (scope_id.clone(), manager.id.clone());
        let (lane, subject) = (presence_lane(conversation_id, &manager_id), managers_subject(conversation_id));
        let (token, sent_mark) = match self.lanes.take_turn(&scope_id, &lane, now, SEND_TURN_HOLD_MS).await? {
            Turn::Busy { until_ms } => {
                return self.wait_for_lane(&scope_id, &lane, event, webhook_id, attempt, now, until_ms).await;
            }
            Turn::Yours { token, sent_mark, .. } => (token, sent_mark),
        };
        let sent = async {
            let wanted = self.windows.pushed(&scope_id, &subject, &manager_id).await?;
            let Some(mark_after) = presence_push_due(wanted, sent_mark) else {
                tracing::debug!(?wanted, "presence.changed already told; not sent");
                return Ok(None);
            };
            if let BridgeEvent::PresenceChanged { online, .. } = &mut event {
                *online = wanted.unwrap_or_default();
            }
            // Every send of one push carries one id, however often it is made again (a retry, a
            // worker cut off before it recorded the send): the chat service drops the repeats.
            // A retry that finds the lane moved on makes a new decision, under a new id.
            let webhook_id = lane_webhook_id(&scope_id, &lane, mark_after, now);
            let outcome = self.send(event, webhook_id, attempt, now).await?;
            Ok::<_, FlowError>((outcome == SendOutcome::Delivered).then_some(mark_after))
        };
        let sent = sent.await;
        self.lanes.end_turn(&scope_id, &lane, &token, sent.as_ref().ok().copied().flatten()).await?;
        sent.map(drop)
    }

    /// Whether a manager's presence in a conversation is still to be told: the register and
    /// what the lane last told differ, or a push is on its way (one read, no turn).
    pub async fn presence_push_owed(
        &self,
        scope_id: &str,
        conversation_id: &str,
        manager_id: &str,
        now: i64,
    ) -> Result<bool, FlowError> {
        let view = self.lanes.peek_turn(scope_id, &presence_lane(conversation_id, manager_id), now).await?;
        let wanted = self.windows.pushed(scope_id, &managers_subject(conversation_id), manager_id).await?;
        Ok(view.held_until_ms.is_some() || presence_push_due(wanted, view.sent_mark).is_some())
    }

    /// This event again when its lane is free, one copy of it waiting at a time.
    #[allow(clippy::too_many_arguments)]
    async fn wait_for_lane(
        &self,
        scope_id: &str,
        lane: &str,
        event: BridgeEvent,
        webhook_id: String,
        attempt: u32,
        now: i64,
        until_ms: i64,
    ) -> Result<(), FlowError> {
        let identity = webhook_id.clone();
        let again = DueWork::DeliverChatEvent { event, webhook_id, attempt };
        let (waits, timers) = (self.waits.as_ref(), self.timers.as_ref());
        super::wait_for_hold(waits, timers, scope_id, lane, &identity, again, now, busy_retry_at(now, until_ms)).await
    }

    /// Sends a manager typing event inside its lane's turn, if it is due; returns what the lane
    /// records as confirmed after it (`None`: the lane stays as it is). `lane_now`: what the
    /// lane shows, and whether that was recorded before its send and never confirmed.
    #[allow(clippy::too_many_arguments)]
    async fn send_manager_typing(
        &self,
        key: &LeaseKey,
        typing: TypingEvent,
        event: BridgeEvent,
        attempt: u32,
        now: i64,
        (shown, unconfirmed): (TypingShown, bool),
    ) -> Result<Option<TypingShown>, FlowError> {
        let live = self.leases.get_lease(key, now).await?.is_some();
        // A start never confirmed is sent again while its lease lives, like a retry.
        if !typing_send_due(typing, live, shown, attempt > 0 || unconfirmed) {
            tracing::debug!(?typing, live, "typing event changes nothing true; not sent");
            return Ok(None);
        }
        // A start that may land counts as shown: recorded, unconfirmed, before it is sent, so a
        // worker cut off after the send still leaves a stop owed (`typing_shown_after`).
        if typing == TypingEvent::Started && !shown.on() {
            self.lanes.raise_mark(&key.scope_id, &key.lane(), shown.next().mark()).await?;
        }
        // Every send of one decision carries one id, however often it is made again (a retry, or
        // a worker cut off before it recorded the send): the chat service drops the repeats. A
        // retry that finds the lane moved on (a stop sent meanwhile) is a new decision, under a
        // new id: under its old one, the chat service would drop a start it has to show.
        let webhook_id = typing_webhook_id(key, typing, shown, now);
        if typing == TypingEvent::Stopped
            && unconfirmed
            && let Err(reason) = resend_unconfirmed_start(self.chat.as_ref(), key, shown, now).await
        {
            self.again_later(event, webhook_id, attempt, now, &reason).await?;
            return Ok(None);
        }
        let stop = typing_stopped_for(&event);
        let outcome = self.send(event, webhook_id, attempt, now).await?;
        let after = typing_shown_after(typing, shown, outcome);
        if outcome == SendOutcome::Delivered
            && let Some(stopped) = stop
        {
            let live_now = self.leases.get_lease(key, self.clock.now_ms()).await?.is_some();
            if stop_owed_after(typing, outcome, live_now) {
                tracing::info!("the lease ended while typing.started was on its way; stopping again");
                self.timers.schedule(DueWork::deliver(stopped), self.clock.now_ms()).await?;
            }
        }
        Ok(after)
    }

    /// One attempt at a chat-service event. Unavailable: queued again with backoff, or given
    /// up once the retry policy runs out.
    async fn send(
        &self,
        event: BridgeEvent,
        webhook_id: String,
        attempt: u32,
        now: i64,
    ) -> Result<SendOutcome, FlowError> {
        match send_once(self.chat.as_ref(), &event, &webhook_id).await {
            Ok(outcome) => Ok(outcome),
            Err(reason) => {
                self.again_later(event, webhook_id, attempt, now, &reason).await?;
                Ok(SendOutcome::Uncertain)
            }
        }
    }

    /// An event the chat service could not take now: queued again with backoff, or given up
    /// once the retry policy runs out.
    async fn again_later(
        &self,
        event: BridgeEvent,
        webhook_id: String,
        attempt: u32,
        now: i64,
        reason: &str,
    ) -> Result<(), FlowError> {
        let next = attempt + 1;
        if next >= self.retry.max_attempts {
            tracing::error!(%reason, attempts = next, "event not delivered; given up");
            return Ok(());
        }
        let wait = wait_before_retry(&self.retry, next, None, u64::from_le_bytes(random_bytes::<8>()));
        let again = DueWork::DeliverChatEvent { event, webhook_id, attempt: next };
        self.timers.schedule(again, now + wait.as_millis() as i64).await?;
        Ok(())
    }
}

/// One attempt at a chat-service event: delivered or refused (a 4xx), or why the chat service
/// could not be reached (it may have taken the event).
pub(super) async fn send_once(
    chat: &dyn ChatService,
    event: &BridgeEvent,
    webhook_id: &str,
) -> Result<SendOutcome, String> {
    match chat.deliver(event, webhook_id, RetryPolicy::EPHEMERAL).await {
        Ok(_) => Ok(SendOutcome::Delivered),
        Err(ChatError::Rejected { status, code, .. }) => {
            tracing::warn!(status, code, "the chat service refused an event");
            Ok(SendOutcome::Refused)
        }
        Err(ChatError::Unavailable { reason, .. }) => Err(reason),
    }
}

/// Before the stop that ends a start recorded before its send and never confirmed: the start
/// again, under its own id. Its worker may have been cut off before sending it, or the chat
/// service never answered; a chat service that took it drops the repeat, one that did not sees
/// the start and then the stop, never a stop alone. `Err`: the chat service could not be
/// reached, and the stop waits too.
pub(super) async fn resend_unconfirmed_start(
    chat: &dyn ChatService,
    key: &LeaseKey,
    shown: TypingShown,
    now: i64,
) -> Result<(), String> {
    let started = BridgeEvent::TypingStarted {
        scope_id: key.scope_id.clone(),
        conversation_id: key.conversation_id.clone(),
        manager: ManagerRef::by_amojo_id(key.manager_id().unwrap_or(&key.holder), None),
        // Stopped at once: the shortest bound the chat service can read.
        expires_at: now.div_euclid(1000) + 1,
    };
    let webhook_id = typing_webhook_id(key, TypingEvent::Started, shown, now);
    send_once(chat, &started, &webhook_id).await.map(drop)
}

/// The lease a manager typing event speaks of, and which event it is.
fn manager_typing_of(event: &BridgeEvent) -> Option<(LeaseKey, TypingEvent)> {
    match event {
        BridgeEvent::TypingStarted { scope_id, conversation_id, manager, .. } => {
            Some((LeaseKey::manager(scope_id, conversation_id, &manager.id), TypingEvent::Started))
        }
        BridgeEvent::TypingStopped { scope_id, conversation_id, manager } => {
            Some((LeaseKey::manager(scope_id, conversation_id, &manager.id), TypingEvent::Stopped))
        }
        _ => None,
    }
}

/// The `webhook-id` of a manager typing event: derived from its lane and the mark the event
/// brings the lane to (odd: shown; even: not), so the same decision made twice is one delivery.
pub(super) fn typing_webhook_id(key: &LeaseKey, typing: TypingEvent, shown: TypingShown, now_ms: i64) -> String {
    let target = if typing == TypingEvent::Started && shown.on() { shown } else { shown.next() };
    lane_webhook_id(&key.scope_id, &key.lane(), target.mark(), now_ms)
}

/// The `webhook-id` of the send that brings a lane to `mark`. The day is part of it: a lane
/// idle for a day is forgotten and counts from its start again, and its next sends must not
/// reuse the ids of the old ones.
fn lane_webhook_id(scope_id: &str, lane: &str, mark: i64, now_ms: i64) -> String {
    let day = now_ms.div_euclid(86_400_000).to_string();
    derived_webhook_id(&[scope_id, lane, &mark.to_string(), &day])
}

/// The `typing.stopped` that ends what a `typing.started` began.
fn typing_stopped_for(event: &BridgeEvent) -> Option<BridgeEvent> {
    match event {
        BridgeEvent::TypingStarted { scope_id, conversation_id, manager, .. } => {
            Some(typing_stopped(scope_id, conversation_id, &manager.id))
        }
        _ => None,
    }
}

/// `typing.stopped` for `manager_id` in a conversation.
pub fn typing_stopped(scope_id: &str, conversation_id: &str, manager_id: &str) -> BridgeEvent {
    BridgeEvent::TypingStopped {
        scope_id: scope_id.to_owned(),
        conversation_id: conversation_id.to_owned(),
        manager: ManagerRef::by_amojo_id(manager_id, None),
    }
}
