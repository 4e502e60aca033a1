//! A manager's message, Kommo → chat service. The webhook records it once per Kommo msgid, ends
//! the manager's typing and queues the relay, all before the 200. The relay (queued work) sends
//! `typing.stopped` first if the chat service shows the manager typing, then `message.created`,
//! then `typing.started` again if the manager has gone on typing meanwhile; it retries with
//! backoff, and a refusal or the retries running out become an error status in Kommo
//! (901–905, [`crate::rules::status::refusal_to_error`]).

use std::sync::Arc;
use std::time::Duration;

use super::chat_delivery::{resend_unconfirmed_start, send_once, typing_stopped, typing_webhook_id};
use super::delivery_status::StatusRegister;
use super::{FlowError, wait_for_hold};
use crate::models::chat::{BridgeEvent, ManagerRef, MessageSource, Receiver};
use crate::models::kommo::ManagerMessage;
use crate::models::status::{DeliveryError, DeliveryStatus, DeliveryStatusRequest, ErrorText};
use crate::ports::chat::{ChatError, ChatService};
use crate::ports::kommo::KommoApi;
use crate::ports::metrics::{Metric, Metrics, Peer};
use crate::ports::store::{
    ConversationFacts, Conversations, DedupeKeys, Direction, LeaseKey, MessageRecord, MessageRecords, RelayClaim,
    RelayOutcome, RelayState, SendTurns, Turn, TypingLeases,
};
use crate::ports::timers::{DueWork, TimerError, Timers, TooLargeToQueue, check_queueable};
use crate::random::{new_webhook_id, random_bytes};
use crate::rules::lanes::{SEND_TURN_HOLD_MS, busy_retry_at};
use crate::rules::rejection::Rejection;
use crate::rules::retry::{RetryPolicy, requeue_delay_ms};
use crate::rules::status::{RELAY_GIVEN_UP, refusal_to_error};
use crate::rules::typing::{
    SendOutcome, StopBeforeMessage, TypingEvent, TypingShown, kommo_expired_at_s, lane_may_show_typing,
    stop_before_message,
};
use crate::time::Clock;

/// A relay worker holds a message this long; a worker killed holding it delays the message by
/// this much. Longer than a relay takes but in its slowest case (every call to the chat service
/// timing out): a copy that then takes the relay over posts the message again under its one
/// `webhook-id`, which the chat service drops.
const RELAY_HOLD_MS: i64 = 20_000;
/// One attempt per run: the retries of queued work are new queue messages with backoff.
const ONE_ATTEMPT: RetryPolicy = RetryPolicy { max_attempts: 1, ..RetryPolicy::EPHEMERAL };
/// How long a webhook that could not record its message waits for the queue to take it, and
/// then for its 903 report when the queue did not: with the store's own budget
/// (`app::kommo_side`), within the function's 4 s timeout and Kommo's 5 s wait.
pub const QUEUE_BUDGET: Duration = Duration::from_millis(700);
const FAULT_REPORT_BUDGET: Duration = Duration::from_millis(1000);

/// The webhook's half.
#[derive(Clone)]
pub struct ManagerMessages {
    pub records: Arc<dyn MessageRecords>,
    pub conversations: Arc<dyn Conversations>,
    pub leases: Arc<dyn TypingLeases>,
    pub timers: Arc<dyn Timers>,
    /// Only for the 903 Kommo must see when the relay cannot even be queued.
    pub kommo: Arc<dyn KommoApi>,
    pub clock: Arc<dyn Clock>,
}

impl ManagerMessages {
    /// Kommo's outgoing-message webhook: recorded (deduplicated on the Kommo msgid), the
    /// manager's typing ended, and the relay queued, all before the 200. A store or queue fault
    /// is an `Err` (nothing reported): the webhook then hands the message to
    /// [`Self::accept_later`], since Kommo never sends it again.
    pub async fn on_webhook(&self, scope_id: &str, message: &ManagerMessage) -> Result<(), FlowError> {
        self.accept(scope_id, message, self.clock.now_ms()).await
    }

    /// What the webhook does, also run as queued work for a webhook that could not do it in
    /// time (`received_at_ms`: when Kommo's webhook reached the bridge).
    pub async fn accept(&self, scope_id: &str, message: &ManagerMessage, received_at_ms: i64) -> Result<(), FlowError> {
        let kommo_msgid = message
            .message
            .id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Rejection::invalid("message.message.id is required"))?;
        let now = self.clock.now_ms();
        let conversation_id = message.conversation.integration_id();
        let created_at_ms = created_at_ms(message);
        // Built and measured before the first write: a message that cannot be queued is refused
        // with nothing recorded (the webhook tells Kommo, see `Self::refuse_too_large`).
        let relay = relay_of(scope_id, kommo_msgid, message, received_at_ms);
        check_queueable(&relay).map_err(Rejection::from)?;
        let record = MessageRecord {
            scope_id: scope_id.to_owned(),
            kommo_msgid: kommo_msgid.to_owned(),
            conversation_id: conversation_id.to_owned(),
            direction: Direction::Outgoing,
            chat_msgid: None,
            created_at_ms,
            status_rank: None,
            relay: RelayState::Pending,
        };
        if !self.records.insert_message(&record).await? {
            // Kommo sends a webhook again only after an error answer, which may have come after
            // the record was written but before the relay was queued: then the relay is queued
            // now (the relay's claim keeps a second queued relay from sending twice).
            let stored = self.records.get_message(scope_id, kommo_msgid).await?;
            if stored.is_none_or(|stored| stored.relay != RelayState::Pending) {
                tracing::info!(kommo_msgid, "manager message already recorded; duplicate ignored");
                return Ok(());
            }
            tracing::info!(kommo_msgid, "manager message recorded but not yet relayed; relaying");
        }
        // What the webhook tells of the conversation: Kommo's chat id (what the Kommo UI sees)
        // and the client, so the UI can ask about either. A chat a manager started ("write
        // first") has no id of the integration's: it is named by Kommo's chat id, and Kommo's id
        // of the client is kept for the client's reply.
        let write_first = message.conversation.client_id.as_deref().is_none_or(str::is_empty);
        let facts = ConversationFacts {
            kommo_chat_id: Some(message.conversation.id.as_str()),
            client_user_id: message.receiver.client_id.as_deref().filter(|id| !id.is_empty()),
            kommo_client_id: write_first.then_some(message.receiver.id.as_str()),
            answered_as: None,
        };
        self.conversations.remember_conversation(scope_id, conversation_id, &facts).await?;
        // Their typing is over, at once; the relay tells the chat service, just before the message.
        self.leases.end(&LeaseKey::manager(scope_id, conversation_id, &message.sender.id), now).await?;
        self.timers.schedule(relay, now).await?;
        tracing::info!(kommo_msgid, "manager message accepted");
        Ok(())
    }

    /// Whether the webhook's message can be queued in each form the webhook may queue it: its
    /// relay ([`Self::accept`]) and the message whole ([`Self::accept_later`]). Checked before
    /// anything is written or read for it.
    pub fn queueable(&self, scope_id: &str, message: &ManagerMessage) -> Result<(), TooLargeToQueue> {
        let kommo_msgid = message.message.id.as_deref().unwrap_or_default();
        check_queueable(&relay_of(scope_id, kommo_msgid, message, self.clock.now_ms()))?;
        check_queueable(&accept_later_work(scope_id, message, self.clock.now_ms()))
    }

    /// A manager's message too large to queue, refused: nothing is recorded, and since Kommo
    /// never sends the webhook again (whatever the answer), Kommo is told at once that it failed,
    /// with a reason the manager reads (905 with its text), within the same budget as a 903.
    /// The refusal is what the webhook answers (413).
    pub async fn refuse_too_large(
        &self,
        scope_id: &str,
        message: &ManagerMessage,
        too_large: TooLargeToQueue,
    ) -> Rejection {
        let kommo_msgid = message.message.id.as_deref().unwrap_or_default();
        tracing::warn!(
            kommo_msgid,
            bytes = too_large.bytes,
            limit = too_large.limit,
            "manager message too large to queue; refused"
        );
        if kommo_msgid.is_empty() {
            return too_large.into(); // nothing to report on: the message is refused as it is
        }
        let text = ErrorText::new(TOO_LARGE_TEXT).expect("the text is not blank");
        let request = DeliveryStatusRequest {
            msgid: kommo_msgid.to_owned(),
            status: DeliveryStatus::Failed(DeliveryError::Other(text)),
        };
        match tokio::time::timeout(FAULT_REPORT_BUDGET, self.kommo.delivery_status(scope_id, &request)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(kommo_msgid, %error, "the refusal of a message too large could not be reported")
            }
            Err(_) => tracing::error!(kommo_msgid, "the refusal of a message too large was not reported in time"),
        }
        too_large.into()
    }

    /// A manager's message whose webhook could not record it in time (the store stalled or
    /// failed): queued whole, to be accepted by queued work ([`Self::accept`]) when the store
    /// answers again. If even the queue does not take it within [`QUEUE_BUDGET`], Kommo is told
    /// at once that it failed (903), so the manager sees it: Kommo never sends the webhook
    /// again. `Ok` when either went through, so the webhook is answered 200.
    pub async fn accept_later(&self, scope_id: &str, message: &ManagerMessage) -> Result<(), FlowError> {
        let kommo_msgid = message.message.id.as_deref().unwrap_or_default();
        let now = self.clock.now_ms();
        let work = accept_later_work(scope_id, message, now);
        let queued = match tokio::time::timeout(QUEUE_BUDGET, self.timers.schedule(work, now)).await {
            Ok(queued) => queued,
            Err(_) => Err(TimerError(format!("the queue did not answer within {} ms", QUEUE_BUDGET.as_millis()))),
        };
        let Err(error) = queued else {
            tracing::warn!(kommo_msgid, "manager message queued to be recorded when the store answers");
            return Ok(());
        };
        tracing::error!(kommo_msgid, %error, "manager message neither recorded nor queued; reporting 903");
        let request =
            DeliveryStatusRequest { msgid: kommo_msgid.to_owned(), status: DeliveryStatus::Failed(RELAY_GIVEN_UP) };
        let report = self.kommo.delivery_status(scope_id, &request);
        if let Ok(Ok(())) = tokio::time::timeout(FAULT_REPORT_BUDGET, report).await {
            // The manager sees the failure: an error answer now would only count against
            // the channel, since Kommo never sends the webhook again.
            return Ok(());
        }
        Err(error.into())
    }
}

/// One relay of a manager's message (queued work, unpacked).
pub struct Relay<'a> {
    pub scope_id: &'a str,
    pub kommo_msgid: &'a str,
    /// The message.created.
    pub event: Box<BridgeEvent>,
    pub webhook_id: String,
    pub attempt: u32,
    /// When Kommo's webhook reached the bridge (0: not known).
    pub received_at_ms: i64,
}

impl Relay<'_> {
    /// The same relay as queued work again, unchanged but for what the caller set.
    fn into_work(self) -> DueWork {
        DueWork::RelayManagerMessage {
            scope_id: self.scope_id.to_owned(),
            kommo_msgid: self.kommo_msgid.to_owned(),
            event: self.event,
            webhook_id: self.webhook_id,
            attempt: self.attempt,
            received_at_ms: self.received_at_ms,
        }
    }
}

/// The queued half: the relay.
#[derive(Clone)]
pub struct MessageRelay {
    pub records: Arc<dyn MessageRecords>,
    /// Copies of a relay waiting for its hold to end, one at a time ([`wait_for_hold`]).
    pub waits: Arc<dyn DedupeKeys>,
    pub leases: Arc<dyn TypingLeases>,
    pub lanes: Arc<dyn SendTurns>,
    pub timers: Arc<dyn Timers>,
    pub chat: Arc<dyn ChatService>,
    pub register: StatusRegister,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    pub metrics: Arc<dyn Metrics>,
}

impl MessageRelay {
    pub async fn relay(&self, relay: Relay<'_>) -> Result<(), FlowError> {
        let now = self.clock.now_ms();
        let (scope_id, kommo_msgid) = (relay.scope_id, relay.kommo_msgid);
        match self.records.claim_relay(scope_id, kommo_msgid, now, RELAY_HOLD_MS).await? {
            RelayClaim::Claimed => {}
            RelayClaim::Done => return Ok(()), // sent or failed by another delivery of this work
            RelayClaim::HeldUntil(until_ms) => {
                // Another delivery holds it, or an earlier claim of this one landed after its
                // call had given up: look again when the hold ends (one copy waiting at a time),
                // or the message could be left unrelayed for good.
                let (waits, timers) = (self.waits.as_ref(), self.timers.as_ref());
                let (key, identity) = (format!("relay#{kommo_msgid}"), relay.webhook_id.clone());
                let again = relay.into_work();
                return wait_for_hold(waits, timers, scope_id, &key, &identity, again, now, until_ms.max(now)).await;
            }
        }
        let typing = sender_lease(&relay.event);
        let stopped = match &typing {
            None => false,
            Some(key) => match self.stop_typing_before(key, now).await? {
                Before::Clear { stopped } => stopped,
                Before::LaneBusy { until_ms } => {
                    // A typing event of this manager is on its way: the message waits for it, so
                    // it cannot overtake it (nor the stop that must come first).
                    return self.requeue(relay, busy_retry_at(now, until_ms)).await;
                }
                // The message would not get through either: both go again later, in this order,
                // so the manager never goes on typing after their message.
                Before::Unavailable(reason) => return self.later(relay, &reason, now).await,
            },
        };
        let outcome = match self.chat.deliver(&relay.event, &relay.webhook_id, ONE_ATTEMPT).await {
            Ok(answer) => {
                let sent = RelayOutcome::Sent { chat_msgid: answer.msgid };
                self.records.finish_relay(scope_id, kommo_msgid, &sent).await?;
                tracing::info!(kommo_msgid, attempt = relay.attempt, "manager message delivered");
                if relay.received_at_ms > 0 {
                    let ms = self.clock.now_ms() - relay.received_at_ms;
                    self.metrics.record(Metric::RelayLatency { peer: Peer::ChatService, ms });
                }
                Ok(())
            }
            Err(ChatError::Rejected { status, code, message }) => {
                tracing::warn!(kommo_msgid, status, code, "the chat service refused the message");
                self.records.finish_relay(scope_id, kommo_msgid, &RelayOutcome::Failed).await?;
                let error = refusal_to_error(status, &code, &message);
                self.register.apply(scope_id, kommo_msgid, &DeliveryStatus::Failed(error), now).await
            }
            Err(ChatError::Unavailable { reason, .. }) => self.later(relay, &reason, now).await,
        };
        // Only a stop just sent can have hidden a lease that lives again: no read otherwise.
        if let Some(key) = typing.filter(|_| stopped)
            && let Some(lease) = self.leases.get_lease(&key, self.clock.now_ms()).await?
        {
            // Typing again already (a new lease the stop hid): shown again, after the message.
            let started = BridgeEvent::TypingStarted {
                scope_id: key.scope_id.clone(),
                conversation_id: key.conversation_id.clone(),
                manager: ManagerRef::by_amojo_id(manager_id_of(&key), None),
                expires_at: kommo_expired_at_s(lease.expires_at_ms),
            };
            self.timers.schedule(DueWork::deliver(started), self.clock.now_ms()).await?;
        }
        outcome
    }

    /// The `typing.stopped` that goes before a manager's message, in the manager's typing lane:
    /// sent only if the chat service may show them typing (whichever lease it was; a start not
    /// confirmed delivered counts as shown, and goes again first).
    async fn stop_typing_before(&self, typing: &LeaseKey, now: i64) -> Result<Before, FlowError> {
        let lane = typing.lane();
        // Most messages come with no typing shown and none on its way: one read, no turn.
        let view = self.lanes.peek_turn(&typing.scope_id, &lane, now).await?;
        if !lane_may_show_typing(view.held_until_ms.is_some(), TypingShown::from_mark(view.sent_mark)) {
            return Ok(Before::Clear { stopped: false });
        }
        let (token, shown, unconfirmed) =
            match self.lanes.take_turn(&typing.scope_id, &lane, now, SEND_TURN_HOLD_MS).await? {
                Turn::Busy { until_ms } => return Ok(Before::LaneBusy { until_ms }),
                Turn::Yours { token, sent_mark, unconfirmed } => {
                    (token, TypingShown::from_mark(sent_mark), unconfirmed)
                }
            };
        let stop = async {
            let chat = self.chat.as_ref();
            if unconfirmed {
                resend_unconfirmed_start(chat, typing, shown, now).await?;
            }
            let stopped = typing_stopped(&typing.scope_id, &typing.conversation_id, manager_id_of(typing));
            // The id of this lane's stop, whoever sends it (this relay or the lease's expiry
            // check, one of them cut off before it recorded the stop): the chat service drops
            // the repeat.
            send_once(chat, &stopped, &typing_webhook_id(typing, TypingEvent::Stopped, shown, now)).await
        };
        let mut unavailable = None;
        let outcome = match shown.on() {
            false => None,
            true => Some(stop.await.unwrap_or_else(|reason| {
                unavailable = Some(reason);
                SendOutcome::Uncertain
            })),
        };
        let (before, shown_after) = stop_before_message(shown, outcome);
        self.lanes.end_turn(&typing.scope_id, &lane, &token, shown_after.map(TypingShown::mark)).await?;
        Ok(match before {
            StopBeforeMessage::Clear { stopped } => Before::Clear { stopped },
            StopBeforeMessage::Unavailable => Before::Unavailable(unavailable.unwrap_or_default()),
        })
    }

    /// The chat service was unavailable for a relay: queued again with backoff, or, the
    /// attempts spent, dead-lettered and reported to Kommo as 903 (a typing.stopped still owed
    /// then goes on alone).
    async fn later(&self, relay: Relay<'_>, reason: &str, now: i64) -> Result<(), FlowError> {
        let next = relay.attempt + 1;
        let (scope_id, kommo_msgid) = (relay.scope_id, relay.kommo_msgid);
        if next >= self.retry.max_attempts {
            tracing::error!(kommo_msgid, attempts = next, %reason, "message not delivered; dead-lettered");
            self.metrics.record(Metric::DeadLetter { what: "relay_manager_message" });
            self.records.finish_relay(scope_id, kommo_msgid, &RelayOutcome::Failed).await?;
            if let Some(key) = sender_lease(&relay.event) {
                let stopped = typing_stopped(&key.scope_id, &key.conversation_id, manager_id_of(&key));
                let alone = DueWork::DeliverChatEvent {
                    event: stopped,
                    webhook_id: typing_stopped_id(&relay.webhook_id),
                    attempt: 0,
                };
                self.timers.schedule(alone, now).await?;
            }
            let failed = DeliveryStatus::Failed(RELAY_GIVEN_UP);
            return self.register.apply(scope_id, kommo_msgid, &failed, now).await;
        }
        let random = u64::from_le_bytes(random_bytes::<8>());
        let at = now + requeue_delay_ms(&self.retry, next, None, random);
        self.requeue(Relay { attempt: next, ..relay }, at).await
    }

    /// Queues the relay again for `at_ms`, keeping other deliveries of it off until then.
    async fn requeue(&self, relay: Relay<'_>, at_ms: i64) -> Result<(), FlowError> {
        self.records.finish_relay(relay.scope_id, relay.kommo_msgid, &RelayOutcome::RetryAt(at_ms)).await?;
        self.timers.schedule(relay.into_work(), at_ms).await?;
        Ok(())
    }
}

/// What the stop before a message found.
enum Before {
    Clear {
        stopped: bool,
    },
    /// Another typing event of the manager is on its way.
    LaneBusy {
        until_ms: i64,
    },
    /// The chat service could not be reached.
    Unavailable(String),
}

/// What a manager sees in Kommo beside a message too large to relay.
const TOO_LARGE_TEXT: &str = "Not delivered: the message is too large for this chat channel. Send it in shorter parts.";

/// A manager's message queued whole by [`ManagerMessages::accept_later`].
fn accept_later_work(scope_id: &str, message: &ManagerMessage, received_at_ms: i64) -> DueWork {
    DueWork::AcceptManagerMessage { scope_id: scope_id.to_owned(), message: Box::new(message.clone()), received_at_ms }
}

/// The relay of a manager's message as [`ManagerMessages::accept`] queues it: its
/// `message.created` for the chat service, first attempt, under a fresh `webhook-id`.
fn relay_of(scope_id: &str, kommo_msgid: &str, message: &ManagerMessage, received_at_ms: i64) -> DueWork {
    let event = BridgeEvent::MessageCreated {
        scope_id: scope_id.to_owned(),
        conversation_id: message.conversation.integration_id().to_owned(),
        reference: kommo_msgid.to_owned(),
        client_id: message.receiver.integration_id().to_owned(),
        sender: ManagerRef::by_amojo_id(&message.sender.id, message.sender.name.clone()),
        message: Box::new(message.message.clone()),
        timestamp_ms: created_at_ms(message),
        source: message
            .source
            .as_ref()
            .and_then(|source| source.external_id.clone())
            .map(|external_id| MessageSource { external_id }),
        receiver: Box::new(receiver_of(message)),
    };
    DueWork::RelayManagerMessage {
        scope_id: scope_id.to_owned(),
        kommo_msgid: kommo_msgid.to_owned(),
        event: Box::new(event),
        webhook_id: new_webhook_id(),
        attempt: 0,
        received_at_ms,
    }
}

/// When the manager wrote: `msec_timestamp`, else `timestamp` in milliseconds.
fn created_at_ms(message: &ManagerMessage) -> i64 {
    message.msec_timestamp.unwrap_or(message.timestamp.saturating_mul(1000))
}

/// Whom a manager's message is for, as Kommo's webhook names them (contact details at the top
/// level or in `profile`). Real webhooks write a field they have no value for as `""`: that
/// is no value.
fn receiver_of(message: &ManagerMessage) -> Receiver {
    let receiver = &message.receiver;
    let profile = receiver.profile.as_ref();
    let given = |value: Option<&String>| value.filter(|value| !value.trim().is_empty()).cloned();
    Receiver {
        id: receiver.id.clone(),
        name: given(receiver.name.as_ref()),
        phone: given(receiver.phone.as_ref()).or_else(|| given(profile.and_then(|p| p.phone.as_ref()))),
        email: given(receiver.email.as_ref()).or_else(|| given(profile.and_then(|p| p.email.as_ref()))),
        avatar: given(receiver.avatar.as_ref()),
    }
}

/// The typing lease of the manager who sent a relayed message.
fn sender_lease(event: &BridgeEvent) -> Option<LeaseKey> {
    match event {
        BridgeEvent::MessageCreated { scope_id, conversation_id, sender, .. } => {
            Some(LeaseKey::manager(scope_id, conversation_id, &sender.id))
        }
        _ => None,
    }
}

fn manager_id_of(key: &LeaseKey) -> &str {
    key.manager_id().unwrap_or(&key.holder)
}

/// The `webhook-id` of the typing.stopped queued alone after a message was given up: derived
/// from the message's, so every relay that gives up queues the same one.
fn typing_stopped_id(message_webhook_id: &str) -> String {
    format!("{message_webhook_id}_typing_stopped")
}
