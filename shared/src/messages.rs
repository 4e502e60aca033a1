//! Messages both ways and their delivery status.
//!
//! - A manager's message (Kommo webhook) is recorded once per Kommo msgid and acknowledged at
//!   once; relaying it to the chat service is queued work that retries with backoff, and a
//!   refusal or the retries running out is reported to Kommo as an error (901–905).
//! - A client's message (chat service) is recorded once per chat-service msgid and imported
//!   into Kommo behind the acknowledgement, creating the chat first when the bridge has not
//!   seen the conversation.
//! - Statuses go through the monotonic register: only a change that sticks is reported to
//!   Kommo, once, inside the message's status lane ([`crate::lanes`]), so the reports reach
//!   Kommo in the register's order.

use crate::app::Bridge;
use crate::chat_client::ChatError;
use crate::config::RetryPolicy;
use crate::due::TypingShown;
use crate::http::ApiError;
use crate::kommo_client::KommoError;
use crate::lanes::{SEND_TURN_HOLD_MS, busy_retry_at, status_lane, typing_lane};
use crate::models::chat::{BridgeEvent, ChatUser, ClientMessage, ManagerRef, ReportedStatus, StatusReport};
use crate::models::kommo::{
    CreateChatRequest, DeliveryStatusRequest, ImportMessageRequest, ImportPayload, ManagerMessage, Participant, Profile,
};
use crate::status::{DeliveryError, DeliveryStatus, ErrorText};
use crate::store::{Direction, LeaseKey, MessageRecord, RelayOutcome, RelayState, StatusChange, Turn};
use crate::timers::DueWork;
use crate::typing::{DueError, new_webhook_id, store_fault};

/// A relay worker holds a message this long; a crashed worker's claim lapses after it.
const RELAY_HOLD_MS: i64 = 60_000;
/// `read` with `up_to` marks at most this many earlier messages.
pub const READ_UP_TO_LIMIT: usize = 50;
/// One attempt per run: the retries of queued work are new queue messages with backoff.
const ONE_ATTEMPT: RetryPolicy = RetryPolicy { max_attempts: 1, ..RetryPolicy::EPHEMERAL };

/// What the chat service's refusal of a message means to Kommo: its code if it names 901,
/// 902 or 904; 902 for 403 and 410 (the channel is disabled there); 905 with its text otherwise.
pub fn refusal_to_error(status: u16, code: &str, message: &str) -> DeliveryError {
    match code.trim() {
        "901" => return DeliveryError::Deleted,
        "902" => return DeliveryError::IntegrationDisabled,
        "904" => return DeliveryError::ConversationNotCreated,
        _ => {}
    }
    if status == 403 || status == 410 {
        return DeliveryError::IntegrationDisabled;
    }
    let text = ErrorText::new(message)
        .or_else(|_| ErrorText::new(&format!("The chat service refused the message (HTTP {status} {code})")))
        .expect("the fallback text is not blank");
    DeliveryError::Other(text)
}

impl Bridge {
    /// Kommo's outgoing-message webhook: recorded (deduplicated on the Kommo msgid), the
    /// manager's typing ended, and the relay queued, all before the 200.
    pub(crate) async fn on_manager_message(&self, scope_id: &str, message: &ManagerMessage) -> Result<(), ApiError> {
        let kommo_msgid = message
            .message
            .id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ApiError::bad_request("invalid_body", "message.message.id is required"))?;
        let now = self.clock.now_ms();
        let conversation_id = message.conversation.integration_id();
        let created_at_ms = message.msec_timestamp.unwrap_or(message.timestamp.saturating_mul(1000));
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
        if !self.store.insert_message(&record).await.map_err(store_fault)? {
            // Kommo sends a webhook again only after an error answer, which may have come after
            // the record was written but before the relay was queued: then the relay is queued
            // now (the relay's claim keeps a second queued relay from sending twice).
            let stored = self.store.get_message(scope_id, kommo_msgid).await.map_err(store_fault)?;
            if stored.is_none_or(|stored| stored.relay != RelayState::Pending) {
                tracing::info!(scope_id, kommo_msgid, "manager message already recorded; duplicate ignored");
                return Ok(());
            }
            tracing::info!(scope_id, kommo_msgid, "manager message recorded but not yet relayed; relaying");
        }
        // What the webhook tells of the conversation: Kommo's chat id (what the Kommo UI sees)
        // and the client, so the UI can ask about either.
        let client_user_id = message.receiver.client_id.as_deref().filter(|id| !id.is_empty());
        let kommo_chat_id = (message.conversation.id != conversation_id).then_some(message.conversation.id.as_str());
        self.store
            .remember_conversation(scope_id, conversation_id, kommo_chat_id, client_user_id)
            .await
            .map_err(store_fault)?;
        let manager = ManagerRef { id: message.sender.id.clone(), name: message.sender.name.clone() };
        self.end_manager_typing(scope_id, conversation_id, &manager).await?;
        let event = BridgeEvent::MessageCreated {
            scope_id: scope_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            reference: kommo_msgid.to_owned(),
            client_id: message.receiver.integration_id().to_owned(),
            sender: manager,
            message: Box::new(message.message.clone()),
            timestamp_ms: created_at_ms,
        };
        let relay = DueWork::RelayManagerMessage {
            scope_id: scope_id.to_owned(),
            kommo_msgid: kommo_msgid.to_owned(),
            event: Box::new(event),
            webhook_id: new_webhook_id(),
            attempt: 0,
        };
        if let Err(error) = self.timers.schedule(relay, now).await {
            // Kommo never re-sends a webhook: mark the message failed so the manager sees it.
            tracing::error!(scope_id, kommo_msgid, %error, "relay not queued; reporting 903");
            let _ = self.store.finish_relay(scope_id, kommo_msgid, &RelayOutcome::Failed).await;
            let request = DeliveryStatusRequest {
                msgid: kommo_msgid.to_owned(),
                status: DeliveryStatus::Failed(DeliveryError::Internal),
            };
            // Best effort inside the webhook's budget: Kommo waits 5 s in all.
            let report = self.kommo.delivery_status(scope_id, &request);
            let _ = tokio::time::timeout(std::time::Duration::from_millis(1500), report).await;
            return Err(ApiError::internal());
        }
        tracing::info!(scope_id, kommo_msgid, "manager message accepted");
        Ok(())
    }

    /// Queued relay of a manager's message: typing.stopped first (if the chat service shows
    /// the manager typing), then message.created, then typing.started again if the manager
    /// has gone on typing meanwhile; a refusal or the retries running out become an error
    /// status in Kommo.
    pub(crate) async fn relay_manager_message(&self, relay: Relay<'_>) -> Result<(), DueError> {
        let now = self.clock.now_ms();
        let (scope_id, kommo_msgid) = (relay.scope_id, relay.kommo_msgid);
        if !self.store.claim_relay(scope_id, kommo_msgid, now, RELAY_HOLD_MS).await? {
            return Ok(()); // sent, failed, or another delivery of this work holds it
        }
        let typing = relay_typing_key(&relay.event);
        let before = match &typing {
            Some(key) => self.stop_typing_before_message(key, &typing_stopped_id(&relay.webhook_id), now).await?,
            None => TypingBeforeMessage::Clear { stopped: false },
        };
        let stopped = match before {
            TypingBeforeMessage::Clear { stopped } => stopped,
            TypingBeforeMessage::LaneBusy { until_ms } => {
                // A typing event of this manager is on its way: the message waits for it, so
                // it cannot overtake it (nor the stop that must come first).
                return self.requeue_relay(relay, busy_retry_at(now, until_ms)).await;
            }
            // The message would not get through either: both go again later, in this order,
            // so the manager never goes on typing after their message.
            TypingBeforeMessage::Unavailable(reason) => return self.relay_later(relay, &reason, now).await,
        };
        let outcome = match self.chat.deliver(&relay.event, &relay.webhook_id, ONE_ATTEMPT).await {
            Ok(answer) => {
                self.store
                    .finish_relay(scope_id, kommo_msgid, &RelayOutcome::Sent { chat_msgid: answer.msgid })
                    .await?;
                tracing::info!(scope_id, kommo_msgid, attempt = relay.attempt, "manager message delivered");
                Ok(())
            }
            Err(ChatError::Rejected { status, code, message }) => {
                tracing::warn!(scope_id, kommo_msgid, status, code, "the chat service refused the message");
                self.store.finish_relay(scope_id, kommo_msgid, &RelayOutcome::Failed).await?;
                let error = refusal_to_error(status, &code, &message);
                self.apply_status(scope_id, kommo_msgid, &DeliveryStatus::Failed(error), now).await
            }
            Err(ChatError::Unavailable { reason, .. }) => self.relay_later(relay, &reason, now).await,
        };
        if stopped
            && let Some(typing) = typing
            && let Some(lease) = self.store.get_lease(&typing, self.clock.now_ms()).await?
        {
            // Typing again already (a new lease the stop hid): shown again, after the message.
            let expires_at_ms = lease.expires_at_ms - crate::typing::MANAGER_TYPING_GRACE_MS;
            let started = BridgeEvent::TypingStarted {
                scope_id: typing.scope_id.clone(),
                conversation_id: typing.conversation_id.clone(),
                manager: ManagerRef { id: manager_id_of(&typing).to_owned(), name: None },
                expires_at: expires_at_ms.div_euclid(1000),
            };
            self.timers.schedule(DueWork::deliver(started), self.clock.now_ms()).await?;
        }
        outcome
    }

    /// The `typing.stopped` that goes before a manager's message, in the manager's typing lane:
    /// sent only if the chat service shows them typing (whichever lease it was; a start whose
    /// delivery timed out counts as shown).
    async fn stop_typing_before_message(
        &self,
        typing: &LeaseKey,
        webhook_id: &str,
        now: i64,
    ) -> Result<TypingBeforeMessage, DueError> {
        let lane = typing_lane(typing);
        // Most messages come with no typing shown and none on its way: one read, no turn.
        let view = self.store.peek_turn(&typing.scope_id, &lane, now).await?;
        if view.held_until_ms.is_none() && !TypingShown::from_mark(view.sent_mark).on() {
            return Ok(TypingBeforeMessage::Clear { stopped: false });
        }
        let (token, shown) = match self.store.take_turn(&typing.scope_id, &lane, now, SEND_TURN_HOLD_MS).await? {
            Turn::Busy { until_ms } => return Ok(TypingBeforeMessage::LaneBusy { until_ms }),
            Turn::Yours { token, sent_mark } => (token, TypingShown::from_mark(sent_mark)),
        };
        let (outcome, shown_after) = if !shown.on() {
            (TypingBeforeMessage::Clear { stopped: false }, None)
        } else {
            let stopped = BridgeEvent::TypingStopped {
                scope_id: typing.scope_id.clone(),
                conversation_id: typing.conversation_id.clone(),
                manager: ManagerRef { id: manager_id_of(typing).to_owned(), name: None },
            };
            match self.chat.deliver(&stopped, webhook_id, RetryPolicy::EPHEMERAL).await {
                Ok(_) => (TypingBeforeMessage::Clear { stopped: true }, Some(shown.next().mark())),
                Err(ChatError::Rejected { status, code, .. }) => {
                    tracing::warn!(scope_id = %typing.scope_id, status, code, "the chat service refused typing.stopped before the message");
                    (TypingBeforeMessage::Clear { stopped: false }, None)
                }
                Err(ChatError::Unavailable { reason, .. }) => (TypingBeforeMessage::Unavailable(reason), None),
            }
        };
        self.store.end_turn(&typing.scope_id, &lane, &token, shown_after).await?;
        Ok(outcome)
    }

    /// The chat service was unavailable for a relay: queued again with backoff, or, the
    /// attempts spent, dead-lettered and reported to Kommo as 903 (a typing.stopped still owed
    /// then goes on alone).
    async fn relay_later(&self, relay: Relay<'_>, reason: &str, now: i64) -> Result<(), DueError> {
        let next = relay.attempt + 1;
        let (scope_id, kommo_msgid) = (relay.scope_id, relay.kommo_msgid);
        if next >= self.config.retry.max_attempts {
            tracing::error!(scope_id, kommo_msgid, attempts = next, %reason, "message not delivered; dead-lettered");
            self.store.finish_relay(scope_id, kommo_msgid, &RelayOutcome::Failed).await?;
            if let Some(typing) = relay_typing_key(&relay.event) {
                let stopped = BridgeEvent::TypingStopped {
                    scope_id: typing.scope_id.clone(),
                    conversation_id: typing.conversation_id.clone(),
                    manager: ManagerRef { id: manager_id_of(&typing).to_owned(), name: None },
                };
                let alone = DueWork::DeliverChatEvent {
                    event: stopped,
                    webhook_id: typing_stopped_id(&relay.webhook_id),
                    attempt: 0,
                };
                self.timers.schedule(alone, now).await?;
            }
            let failed = DeliveryStatus::Failed(DeliveryError::Internal);
            return self.apply_status(scope_id, kommo_msgid, &failed, now).await;
        }
        let at = now + self.requeue_delay(next, None);
        self.requeue_relay(Relay { attempt: next, ..relay }, at).await
    }

    /// Queues the relay again for `at_ms`, keeping other deliveries of it off until then.
    async fn requeue_relay(&self, relay: Relay<'_>, at_ms: i64) -> Result<(), DueError> {
        let Relay { scope_id, kommo_msgid, event, webhook_id, attempt } = relay;
        self.store.finish_relay(scope_id, kommo_msgid, &RelayOutcome::RetryAt(at_ms)).await?;
        let again = DueWork::RelayManagerMessage {
            scope_id: scope_id.to_owned(),
            kommo_msgid: kommo_msgid.to_owned(),
            event,
            webhook_id,
            attempt,
        };
        self.timers.schedule(again, at_ms).await?;
        Ok(())
    }

    /// Moves the register and, only when it moved, queues the one Kommo status call.
    async fn apply_status(
        &self,
        scope_id: &str,
        kommo_msgid: &str,
        status: &DeliveryStatus,
        now: i64,
    ) -> Result<(), DueError> {
        match self.store.advance_status(scope_id, kommo_msgid, status, now).await? {
            StatusChange::Advanced { .. } => {
                let request = DeliveryStatusRequest { msgid: kommo_msgid.to_owned(), status: status.clone() };
                let report = DueWork::ReportDeliveryStatus { scope_id: scope_id.to_owned(), request, attempt: 0 };
                self.timers.schedule(report, now).await?;
            }
            StatusChange::Unchanged { current_rank } => {
                tracing::info!(
                    scope_id,
                    kommo_msgid,
                    rank = status.rank(),
                    current_rank,
                    "status ignored: not forward"
                );
            }
        }
        Ok(())
    }

    /// Queued status call to Kommo, made inside the message's status lane: a report that a
    /// better one has already reached Kommo is dropped, so Kommo's status never goes backwards
    /// (read, then delivered) whatever order the queue ran the reports in. The client retries
    /// 429 (honouring `Retry-After`) and 5xx a few times, re-signing every attempt; past that,
    /// the call is queued again with backoff.
    pub(crate) async fn report_delivery_status(
        &self,
        scope_id: &str,
        request: DeliveryStatusRequest,
        attempt: u32,
    ) -> Result<(), DueError> {
        let now = self.clock.now_ms();
        let lane = status_lane(&request.msgid);
        let mark = request.status.report_mark();
        let token = match self.store.take_turn(scope_id, &lane, now, SEND_TURN_HOLD_MS).await? {
            Turn::Busy { until_ms } => {
                let again = DueWork::ReportDeliveryStatus { scope_id: scope_id.to_owned(), request, attempt };
                return Ok(self.timers.schedule(again, busy_retry_at(now, until_ms)).await?);
            }
            Turn::Yours { token, sent_mark } if sent_mark >= Some(mark) => {
                tracing::info!(scope_id, kommo_msgid = %request.msgid, "delivery status overtaken by a later one; not sent");
                return Ok(self.store.end_turn(scope_id, &lane, &token, None).await?);
            }
            Turn::Yours { token, .. } => token,
        };
        let outcome = self.kommo.delivery_status(scope_id, &request).await;
        self.store.end_turn(scope_id, &lane, &token, outcome.is_ok().then_some(mark)).await?;
        match outcome {
            Ok(()) => Ok(()),
            Err(KommoError::Unavailable { reason, retry_after, .. })
                if attempt + 1 < self.config.retry.max_attempts =>
            {
                let at = self.clock.now_ms() + self.requeue_delay(attempt + 1, retry_after);
                tracing::warn!(scope_id, kommo_msgid = %request.msgid, %reason, "delivery status queued again");
                let again =
                    DueWork::ReportDeliveryStatus { scope_id: scope_id.to_owned(), request, attempt: attempt + 1 };
                Ok(self.timers.schedule(again, at).await?)
            }
            Err(error) => {
                tracing::error!(scope_id, kommo_msgid = %request.msgid, %error, "delivery status not reported to Kommo");
                Ok(())
            }
        }
    }

    /// Milliseconds before queued work is tried again: the backoff for `attempt`, or longer if
    /// the peer asked for it.
    fn requeue_delay(&self, attempt: u32, retry_after: Option<std::time::Duration>) -> i64 {
        let backoff = crate::outbound::wait_before_retry(&self.config.retry, attempt, None);
        backoff.max(retry_after.unwrap_or_default()).as_millis() as i64
    }

    /// The chat service's `message.status` (checked by [`reported_status`]).
    pub(crate) async fn on_message_status(&self, report: &StatusReport) -> Result<(), ApiError> {
        let status = reported_status(report)?;
        let scope_id = report.scope_id.as_str();
        let kommo_msgid = match (&report.reference, &report.msgid) {
            (Some(reference), _) if !reference.is_empty() => reference.clone(),
            (_, Some(msgid)) => self
                .store
                .kommo_msgid_for(scope_id, msgid)
                .await
                .map_err(store_fault)?
                .ok_or_else(|| ApiError::not_found("unknown_message", "no message with that msgid was relayed"))?,
            _ => return Err(ApiError::bad_request("invalid_body", "name the message by msgid or reference")),
        };
        let now = self.clock.now_ms();
        let mut targets = vec![kommo_msgid.clone()];
        if report.up_to
            && let Some(record) = self.store.get_message(scope_id, &kommo_msgid).await.map_err(store_fault)?
            && !record.conversation_id.is_empty()
        {
            targets = self
                .store
                .outgoing_up_to(scope_id, &record.conversation_id, record.created_at_ms, READ_UP_TO_LIMIT)
                .await
                .map_err(store_fault)?;
        }
        for target in targets {
            self.apply_status(scope_id, &target, &status, now).await.map_err(|error| {
                tracing::error!(scope_id, %error, "status not applied");
                ApiError::internal()
            })?;
        }
        Ok(())
    }

    /// The chat service's `message.created`: recorded once per msgid, the client's typing
    /// ended, the import queued.
    pub(crate) async fn on_client_message(&self, message: &ClientMessage) -> Result<(), ApiError> {
        check_client_message(message)?;
        let scope_id = message.scope_id.as_str();
        let now = self.clock.now_ms();
        if !self
            .store
            .insert_incoming(scope_id, &message.msgid, &message.conversation_id, message.timestamp_ms)
            .await
            .map_err(store_fault)?
        {
            tracing::info!(scope_id, msgid = %message.msgid, "client message already recorded; duplicate ignored");
            return Ok(());
        }
        let queued = async {
            self.end_client_typing(scope_id, &message.conversation_id, &message.user.id).await?;
            let import = DueWork::ImportClientMessage { message: Box::new(message.clone()), attempt: 0 };
            self.timers.schedule(import, now).await.map_err(|error| {
                tracing::error!(scope_id, %error, "import not queued");
                ApiError::internal()
            })
        };
        if let Err(error) = queued.await {
            // Not accepted (5xx): the record goes too, so the chat service's retry is a first
            // delivery again rather than a duplicate that nobody would import.
            let forgotten =
                self.store.forget_incoming(scope_id, &message.msgid, &message.conversation_id, message.timestamp_ms);
            if let Err(forget_error) = forgotten.await {
                tracing::error!(scope_id, error = %forget_error, "a refused client message's record stays");
            }
            return Err(error);
        }
        Ok(())
    }

    /// Queued import of a client's message into Kommo, the chat created first if needed.
    pub(crate) async fn import_client_message(&self, message: &ClientMessage, attempt: u32) -> Result<(), DueError> {
        let scope_id = message.scope_id.as_str();
        if self.store.incoming_kommo_msgid(scope_id, &message.msgid).await?.is_some() {
            return Ok(()); // imported by an earlier delivery of this work
        }
        let sender = participant(&message.user);
        let outcome = async {
            let known = self.store.find_conversation(scope_id, &message.conversation_id).await?;
            if known.and_then(|conversation| conversation.kommo_chat_id).is_none() {
                let request = CreateChatRequest {
                    conversation_id: message.conversation_id.clone(),
                    source: None,
                    user: sender.clone(),
                };
                match self.kommo.create_chat(scope_id, &request).await {
                    Ok(chat) => {
                        let client = Some(message.user.id.as_str());
                        self.store
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
                source: None,
                message: message.message.clone(),
                silent: false,
            };
            Ok::<_, DueError>(self.kommo.import_message(scope_id, &ImportMessageRequest::new_message(payload)).await)
        }
        .await?;
        match outcome {
            Ok(imported) => {
                self.store.link_incoming(scope_id, &message.msgid, &imported.new_message.msgid).await?;
                tracing::info!(scope_id, msgid = %message.msgid, kommo_msgid = %imported.new_message.msgid, "client message imported");
            }
            Err(KommoError::Unavailable { reason, retry_after, .. })
                if attempt + 1 < self.config.retry.max_attempts =>
            {
                let at = self.clock.now_ms() + self.requeue_delay(attempt + 1, retry_after);
                tracing::warn!(scope_id, msgid = %message.msgid, %reason, "import failed; queued again");
                let again = DueWork::ImportClientMessage { message: Box::new(message.clone()), attempt: attempt + 1 };
                self.timers.schedule(again, at).await?;
            }
            Err(error) => {
                tracing::error!(scope_id, msgid = %message.msgid, %error, "client message not imported; given up");
            }
        }
        Ok(())
    }
}

/// One relay of a manager's message (queued work, unpacked).
pub(crate) struct Relay<'a> {
    pub scope_id: &'a str,
    pub kommo_msgid: &'a str,
    /// The message.created.
    pub event: Box<BridgeEvent>,
    pub webhook_id: String,
    pub attempt: u32,
}

/// What [`Bridge::stop_typing_before_message`] found.
enum TypingBeforeMessage {
    /// The message may go; `stopped` when a typing.stopped was just sent.
    Clear { stopped: bool },
    /// Another typing event of the manager is on its way.
    LaneBusy { until_ms: i64 },
    /// The chat service could not be reached.
    Unavailable(String),
}

/// The typing lease of the manager who sent a relayed message.
fn relay_typing_key(event: &BridgeEvent) -> Option<LeaseKey> {
    match event {
        BridgeEvent::MessageCreated { scope_id, conversation_id, sender, .. } => {
            Some(LeaseKey::manager(scope_id, conversation_id, &sender.id))
        }
        _ => None,
    }
}

/// The manager id a manager's lease key names.
fn manager_id_of(key: &LeaseKey) -> &str {
    key.holder.strip_prefix("manager:").unwrap_or(&key.holder)
}

/// The `webhook-id` of the typing.stopped that goes before a message: derived from the
/// message's, so it stays the same across retries and the chat service can drop duplicates.
fn typing_stopped_id(message_webhook_id: &str) -> String {
    format!("{message_webhook_id}_typing_stopped")
}

/// The client as amojo takes them.
fn participant(user: &ChatUser) -> Participant {
    let mut participant = Participant::with_id(user.id.clone());
    participant.name = user.name.clone();
    participant.avatar = user.avatar.clone();
    participant.profile_link = user.profile_link.clone();
    if user.phone.is_some() || user.email.is_some() {
        participant.profile =
            Some(Profile { phone: user.phone.clone(), email: user.email.clone(), extra: Default::default() });
    }
    participant
}

/// What a `message.status` report says, checked without the store: a status the register knows,
/// error codes only with `failed`, `up_to` only with `read`, and a message named.
pub(crate) fn reported_status(report: &StatusReport) -> Result<DeliveryStatus, ApiError> {
    let status = match (report.status, report.error_code) {
        (ReportedStatus::Failed, Some(code)) => DeliveryStatus::Failed(
            DeliveryError::from_code(code, report.error.as_deref())
                .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?,
        ),
        (ReportedStatus::Failed, None) => {
            return Err(ApiError::bad_request("invalid_body", "a failed status needs error_code 901-905"));
        }
        (_, Some(_)) => {
            return Err(ApiError::bad_request("invalid_body", "error_code belongs only to status failed"));
        }
        (ReportedStatus::Delivered, None) => DeliveryStatus::Delivered,
        (ReportedStatus::Read, None) => DeliveryStatus::Read,
    };
    if report.up_to && status != DeliveryStatus::Read {
        return Err(ApiError::bad_request("invalid_body", "up_to belongs only to status read"));
    }
    let names_a_message = report.reference.as_deref().is_some_and(|r| !r.is_empty())
        || report.msgid.as_deref().is_some_and(|m| !m.is_empty());
    if !names_a_message {
        return Err(ApiError::bad_request("invalid_body", "name the message by msgid or reference"));
    }
    // A reference is a Kommo msgid, which goes into the path of amojo's delivery_status call:
    // Kommo's ids are short and URL-safe, anything else is not one of them.
    if let Some(reference) = report.reference.as_deref().filter(|r| !r.is_empty())
        && !is_url_safe_id(reference)
    {
        return Err(ApiError::bad_request("invalid_body", "reference is not a Kommo msgid"));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_kommos_error_codes() {
        assert_eq!(refusal_to_error(404, "901", "gone"), DeliveryError::Deleted);
        assert_eq!(refusal_to_error(422, "904", "no such user"), DeliveryError::ConversationNotCreated);
        assert_eq!(refusal_to_error(403, "forbidden", ""), DeliveryError::IntegrationDisabled);
        assert_eq!(refusal_to_error(410, "", ""), DeliveryError::IntegrationDisabled);
        let DeliveryError::Other(text) =
            refusal_to_error(422, "blocked", "The user blocked this business\n  at x.rs:1")
        else {
            panic!("905 expected")
        };
        assert_eq!(text.as_str(), "The user blocked this business");
        let DeliveryError::Other(text) = refusal_to_error(400, "bad", "") else { panic!("905 expected") };
        assert_eq!(text.as_str(), "The chat service refused the message (HTTP 400 bad)");
    }
}

/// A `message.created` names its conversation, message and sender.
pub(crate) fn check_client_message(message: &ClientMessage) -> Result<(), ApiError> {
    require_non_empty(&[
        ("conversation_id", &message.conversation_id),
        ("msgid", &message.msgid),
        ("user.id", &message.user.id),
    ])
}

/// 400 naming the first of `fields` that is empty.
pub(crate) fn require_non_empty(fields: &[(&str, &str)]) -> Result<(), ApiError> {
    match fields.iter().find(|(_, value)| value.is_empty()) {
        Some((field, _)) => Err(ApiError::bad_request("invalid_body", format!("{field} must not be empty"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod fault_regressions {
    use crate::kommo_client::KommoError;
    use crate::testing::KommoCall;
    use crate::testing::sim::*;

    #[tokio::test]
    async fn the_typing_stopped_before_a_message_is_retried_with_it_not_dropped() {
        // Found by tests/suites/faults.rs: with the chat service failing as the manager's message
        // came, the typing.stopped before it was dropped, and the manager typed on forever there.
        let sim = Sim::new();
        assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
        sim.advance_to(T0 + 10).await;
        sim.chat.fail_next([chat_down()]);
        assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-1")).await.status(), 200);
        sim.advance_to(T0 + 60_000).await;
        assert_eq!(sim.chat_events(), ["started", "stopped", "message"]);
    }

    #[tokio::test]
    async fn a_client_message_refused_for_a_queue_fault_is_imported_when_the_chat_service_retries() {
        // Found by tests/suites/faults.rs: the record was written (the dedupe claim), then
        // queueing the import failed: 500. The chat service's retry got 200 "duplicate ignored"
        // and the message never reached Kommo. Now the retry queues the import.
        let sim = Sim::new();
        let message = serde_json::json!({"type": "message.created", "scope_id": SCOPE, "conversation_id": "conv-1",
            "msgid": "chat-1", "user": {"id": "client-1"}, "message": {"type": "text", "text": "hi"},
            "timestamp_ms": T0})
        .to_string();
        sim.queue.refuse_next.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(sim.chat_event(&message).await.status(), 500, "not accepted: the sender retries");
        assert_eq!(sim.chat_event(&message).await.status(), 200);
        sim.advance_to(T0 + 60_000).await;
        let imported = sim.kommo.calls().into_iter().filter(|c| matches!(c.call, KommoCall::Import(_))).count();
        assert_eq!(imported, 1, "the acknowledged message reached Kommo");
    }

    #[tokio::test]
    async fn a_status_report_overtaken_while_kommo_was_down_never_moves_kommo_backwards() {
        // Found by tests/suites/faults.rs: delivered waited out an amojo outage, read was
        // reported meanwhile, and Kommo was told delivered after read.
        let sim = Sim::new();
        let down = KommoError::Unavailable {
            attempts: 3,
            status: None,
            reason: "could not connect".into(),
            retry_after: None,
        };
        sim.kommo.fail_next([down]);
        assert_eq!(sim.chat_event(&status_event("kommo-1", "delivered", "")).await.status(), 200);
        sim.advance_to(T0 + 10).await; // delivered fails, and waits for its retry
        assert_eq!(sim.chat_event(&status_event("kommo-1", "read", "")).await.status(), 200);
        sim.advance_to(T0 + 60_000).await;
        let told: Vec<i8> = kommo_statuses(&sim).into_iter().map(|(_, status, _)| status).collect();
        assert_eq!(told, [1, 2], "the failed delivered, then read; never delivered again after read");
    }

    #[tokio::test]
    async fn two_status_reports_run_at_once_reach_kommo_in_the_registers_order() {
        // Found by bridge-load (200 conversations): delivered and read, queued a moment apart,
        // ran in two workers at once; the delivered call was slower and landed after read.
        let sim = Sim::new();
        assert_eq!(sim.chat_event(&status_event("kommo-1", "delivered", "")).await.status(), 200);
        let [delivered] = <[_; 1]>::try_from(sim.timers.take_due(T0)).unwrap();
        assert_eq!(sim.chat_event(&status_event("kommo-1", "read", "")).await.status(), 200);
        let [read] = <[_; 1]>::try_from(sim.timers.take_due(T0)).unwrap();
        let slow_network = sim.kommo.hold_next_status();
        let (first, second) = tokio::join!(sim.bridge.run_due(delivered), async {
            let outcome = sim.bridge.run_due(read).await;
            slow_network.notify_one();
            outcome
        });
        first.unwrap();
        second.unwrap();
        sim.advance_to(T0 + 60_000).await; // the report that found its lane busy runs again
        let told: Vec<i8> = kommo_statuses(&sim).into_iter().map(|(_, status, _)| status).collect();
        assert_eq!(told, [1, 2], "delivered landed first, then read");
    }
}

/// Up to 128 of URL's unreserved characters (letters, digits, `-._~`).
fn is_url_safe_id(id: &str) -> bool {
    id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}
