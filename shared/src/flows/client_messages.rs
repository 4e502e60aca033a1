//! A client's message, chat service → Kommo. The event records it once per chat-service msgid,
//! ends the client's typing and queues the import, all before the 200; the import (queued work)
//! creates the chat first when the bridge has not seen the conversation (none on a chat a
//! manager started: the import names Kommo's chat id instead), retries with backoff while amojo
//! is unavailable, and tells the chat service how it ended: `message.delivered` or
//! `message.failed`, so no client message ends in a log line alone.

use std::sync::Arc;

use super::kommo_names::{kommo_conversation, kommo_message, link_answer};
use super::{FlowError, requeue, wait_for_hold};
use crate::models::chat::{BridgeEvent, ChatUser, ClientMessage, ImportFailure, ImportFailureCode, MessageRef};
use crate::models::kommo::{
    CreateChatRequest, ImportMessageRequest, ImportPayload, KommoMessageRef, Participant, Profile, ReplyTo, Source,
};
use crate::ports::kommo::{KommoApi, KommoError};
use crate::ports::metrics::{Metric, Metrics, Peer};
use crate::ports::store::{
    ConversationFacts, Conversations, DedupeKeys, IncomingState, KeyClaim, LeaseKey, MessageRecords, TypingLeases,
};
use crate::ports::timers::{DueWork, Timers, check_queueable};
use crate::rules::kommo_content::for_kommo;
use crate::rules::names::client_display_name;
use crate::rules::rejection::Rejection;
use crate::rules::retry::RetryPolicy;
use crate::rules::validation::check_client_message;
use crate::signing::standard_webhooks::derived_webhook_id;
use crate::time::Clock;

/// The chat service's `message.created`.
#[derive(Clone)]
pub struct ClientMessages {
    pub records: Arc<dyn MessageRecords>,
    /// Where a reply to a chat a manager started is linked to it.
    pub conversations: Arc<dyn Conversations>,
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
        // Measured before the first write: a message that cannot be queued is refused (413)
        // with nothing recorded.
        let import =
            DueWork::ImportClientMessage { message: Box::new(message.clone()), attempt: 0, received_at_ms: now };
        check_queueable(&import).map_err(Rejection::from)?;
        let first = self
            .records
            .insert_incoming(scope_id, &message.msgid, &message.conversation_id, message.timestamp_ms)
            .await?;
        if !first {
            return self.recorded_before(message, now).await;
        }
        let queued = async {
            if let Some(ref_id) = message.conversation_ref_id.as_deref() {
                // Linked now, before the 200, so that the conversation's next messages (which
                // need not name the bridge's id again) find the chat even while this one waits.
                let conversations = self.conversations.as_ref();
                link_answer(conversations, scope_id, &message.conversation_id, ref_id, &message.user.id).await?;
            }
            let typing = LeaseKey::client(scope_id, &message.conversation_id, &message.user.id);
            self.leases.end(&typing, now).await?;
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

    /// A message recorded already: a duplicate, or the retry of a delivery cut off after it
    /// recorded the message and before it queued the import (the sender was answered an error,
    /// or nothing). While the message is not in Kommo its import is queued again: the import's
    /// claim ([`ClientContentToKommo::import`]) makes every copy of it one import.
    async fn recorded_before(&self, message: &ClientMessage, now: i64) -> Result<(), FlowError> {
        let msgid = message.msgid.escape_debug();
        if self.records.incoming_state(&message.scope_id, &message.msgid).await? != Some(IncomingState::Pending) {
            tracing::info!(msgid = %msgid, "client message already recorded; duplicate ignored");
            return Ok(());
        }
        tracing::info!(msgid = %msgid, "client message recorded, not yet in Kommo; its import queued again");
        let import =
            DueWork::ImportClientMessage { message: Box::new(message.clone()), attempt: 0, received_at_ms: now };
        self.timers.schedule(import, now).await?;
        Ok(())
    }
}

/// How long an import holds its claim: longer than the chat's creation and the import together
/// take at amojo (each at most 3 attempts of 5 s), so a copy of it never runs beside it; a
/// worker cut off mid-import delays the message this much.
const IMPORT_HOLD_MS: i64 = 40_000;

/// How one run of an import ended.
enum ImportRun {
    /// In Kommo, or dead-lettered: told to the chat service.
    Ended,
    /// Queued to run again later.
    Later,
}

/// The queued half of what a client sends: their messages imported into Kommo (here), with what
/// became of each told back to the chat service, their edits ([`super::client_edits`]) and
/// their reactions ([`super::reactions`]).
#[derive(Clone)]
pub struct ClientContentToKommo {
    pub records: Arc<dyn MessageRecords>,
    /// Each import's claim: one run of it at a time, however often it was queued.
    pub claims: Arc<dyn DedupeKeys>,
    pub conversations: Arc<dyn Conversations>,
    pub timers: Arc<dyn Timers>,
    pub kommo: Arc<dyn KommoApi>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    pub metrics: Arc<dyn Metrics>,
    /// Makes sure of a message's source in the account first (where Kommo's REST API is).
    pub sources: Option<super::sources::SourceRegistry>,
}

impl ClientContentToKommo {
    /// Imports a client's message into Kommo, the chat created first if needed. Its end is told
    /// to the chat service: `message.delivered`, or `message.failed` when Kommo refuses it or
    /// the attempts run out (the record then stays, dead-lettered).
    ///
    /// Every copy of the work (a queue message delivered twice, the import queued again by the
    /// sender's retry) claims the import first: a copy that finds it held looks again when the
    /// hold ends, so two copies never import at once, and the message is imported twice only
    /// when a worker is cut off between amojo's answer and the record.
    pub async fn import(&self, message: &ClientMessage, attempt: u32, received_at_ms: i64) -> Result<(), FlowError> {
        let scope_id = message.scope_id.as_str();
        let now = self.clock.now_ms();
        let key = format!("import#{}", message.msgid);
        let token = match self.claims.claim(scope_id, &key, now, IMPORT_HOLD_MS).await? {
            KeyClaim::Claimed { token } => token,
            KeyClaim::Done => return Ok(()),
            KeyClaim::Held { until_ms } => {
                let again =
                    DueWork::ImportClientMessage { message: Box::new(message.clone()), attempt, received_at_ms };
                let (claims, timers) = (self.claims.as_ref(), self.timers.as_ref());
                return wait_for_hold(claims, timers, scope_id, &key, &message.msgid, again, now, until_ms.max(now))
                    .await;
            }
        };
        let run = self.import_claimed(message, attempt, received_at_ms).await;
        // Ended: the claim lapses by itself (a later copy finds the record ended: one read).
        // Otherwise the next copy need not wait out the hold.
        if !matches!(run, Ok(ImportRun::Ended))
            && let Err(error) = self.claims.release(scope_id, &key, &token).await
        {
            tracing::warn!(%error, "an import's claim not released; the next copy waits for its hold");
        }
        run.map(drop)
    }

    async fn import_claimed(
        &self,
        message: &ClientMessage,
        attempt: u32,
        received_at_ms: i64,
    ) -> Result<ImportRun, FlowError> {
        let again =
            |attempt| DueWork::ImportClientMessage { message: Box::new(message.clone()), attempt, received_at_ms };
        let scope_id = message.scope_id.as_str();
        if let Some(IncomingState::Imported { .. } | IncomingState::Failed) =
            self.records.incoming_state(scope_id, &message.msgid).await?
        {
            return Ok(ImportRun::Ended); // ended by an earlier delivery of this work
        }
        let reply_to = match &message.reply_to {
            None => None,
            Some(reply_to) => match self.replied_to(scope_id, reply_to, attempt).await? {
                Replied::To(named) => Some(ReplyTo { message: named }),
                Replied::Unquoted => None,
                Replied::NotInKommoYet => {
                    let now = self.clock.now_ms();
                    requeue(self.timers.as_ref(), &self.retry, attempt, None, now, again).await?;
                    return Ok(ImportRun::Later);
                }
            },
        };
        // The source a message names must be one of the account's, which only the integration
        // creates: before the chat or the message names it. Once the attempts are spent the
        // message goes anyway.
        if let (Some(sources), Some(source)) = (&self.sources, &message.source)
            && let super::sources::SourceReadiness::Wait { retry_after } =
                sources.ready_for_import(scope_id, &source.external_id).await?
            && requeue(self.timers.as_ref(), &self.retry, attempt, retry_after, self.clock.now_ms(), again).await?
        {
            return Ok(ImportRun::Later);
        }
        let conversations = self.conversations.as_ref();
        let target = match message.conversation_ref_id.as_deref() {
            Some(ref_id) => {
                link_answer(conversations, scope_id, &message.conversation_id, ref_id, &message.user.id).await?
            }
            None => kommo_conversation(conversations, scope_id, &message.conversation_id).await?,
        };
        let mut sender = participant(&message.user);
        // Kommo's id of the client, on a chat a manager started: the reply is theirs.
        sender.ref_id = target.kommo_client_id.clone();
        if !target.chat_exists {
            let request = CreateChatRequest {
                conversation_id: target.conversation_id.clone(),
                source: kommo_source(message),
                user: sender.clone(),
            };
            let chat = match self.kommo.create_chat(scope_id, &request).await {
                Ok(chat) => chat,
                Err(error) => return self.unsuccessful(message, error, attempt, again).await,
            };
            let facts = ConversationFacts {
                kommo_chat_id: chat.id.as_deref(),
                client_user_id: Some(&message.user.id),
                ..Default::default()
            };
            self.conversations.remember_conversation(scope_id, &target.conversation_id, &facts).await?;
        }
        let payload = ImportPayload {
            timestamp: message.timestamp_ms.div_euclid(1000),
            msec_timestamp: message.timestamp_ms,
            msgid: message.msgid.clone(),
            conversation_id: target.conversation_id,
            conversation_ref_id: target.conversation_ref_id,
            sender,
            receiver: None,
            source: kommo_source(message),
            message: for_kommo(&message.message),
            reply_to,
            silent: false,
        };
        let mut imported =
            self.kommo.import_message(scope_id, &ImportMessageRequest::new_message(payload.clone())).await;
        if let (Err(KommoError::Rejected { .. }), Some(_)) = (&imported, &payload.reply_to) {
            // Kommo refuses a reply to a message it does not have (one from another account, or
            // a reference the chat service made up): the message itself still goes, unquoted.
            tracing::warn!(msgid = %message.msgid.escape_debug(), "Kommo refused the quote; the reply goes unquoted");
            let unquoted = ImportPayload { reply_to: None, ..payload };
            imported = self.kommo.import_message(scope_id, &ImportMessageRequest::new_message(unquoted)).await;
        }
        match imported {
            Ok(answer) => {
                if received_at_ms > 0 {
                    let ms = self.clock.now_ms() - received_at_ms;
                    self.metrics.record(Metric::RelayLatency { peer: Peer::Amojo, ms });
                }
                self.imported(message, answer.kommo_msgid()).await.map(|()| ImportRun::Ended)
            }
            Err(error) => self.unsuccessful(message, error, attempt, again).await,
        }
    }

    /// The message a reply quotes, as amojo takes it. A client's own message is quoted once it
    /// is in Kommo (which refuses a reply to a message it does not have): the reply waits for
    /// it while attempts remain, and goes unquoted rather than not at all if it never gets in.
    /// A msgid the bridge knows nothing of (in this scope: every lookup is the scope's) names
    /// no message Kommo has, so that reply goes unquoted too.
    async fn replied_to(&self, scope_id: &str, reply_to: &MessageRef, attempt: u32) -> Result<Replied, FlowError> {
        let named = kommo_message(self.records.as_ref(), scope_id, reply_to).await?;
        let Some(msgid) = &reply_to.msgid else { return Ok(Replied::To(named)) };
        match self.records.incoming_state(scope_id, msgid).await? {
            Some(IncomingState::Pending) if attempt + 1 < self.retry.max_attempts => Ok(Replied::NotInKommoYet),
            Some(IncomingState::Pending | IncomingState::Failed) => {
                tracing::warn!(msgid = %msgid.escape_debug(), "the quoted message is not in Kommo; the reply goes unquoted");
                Ok(Replied::Unquoted)
            }
            Some(IncomingState::Imported { .. }) => Ok(Replied::To(named)),
            // A manager's message the chat service names by its own id is known by Kommo's.
            None if named.id.is_some() => Ok(Replied::To(named)),
            None => {
                tracing::warn!(msgid = %msgid.escape_debug(), "the quoted message is unknown here; the reply goes unquoted");
                Ok(Replied::Unquoted)
            }
        }
    }

    /// The message is in Kommo: `message.delivered`, then the record.
    async fn imported(&self, message: &ClientMessage, kommo_msgid: Option<&str>) -> Result<(), FlowError> {
        let delivered = BridgeEvent::MessageDelivered {
            scope_id: message.scope_id.clone(),
            conversation_id: message.conversation_id.clone(),
            msgid: message.msgid.clone(),
            reference: kommo_msgid.map(str::to_owned),
        };
        // Told first: should the record's write fail, this work runs again and tells it again
        // under the same webhook-id, which the chat service drops; the other order could lose it.
        self.tell(message, delivered).await?;
        let state = IncomingState::Imported { kommo_msgid: kommo_msgid.map(str::to_owned) };
        self.records.finish_incoming(&message.scope_id, &message.msgid, &state).await?;
        tracing::info!(msgid = %message.msgid.escape_debug(), kommo_msgid, "client message imported");
        Ok(())
    }

    /// Kommo did not take the message: tried again later while that may help, else
    /// dead-lettered and `message.failed` told.
    async fn unsuccessful(
        &self,
        message: &ClientMessage,
        error: KommoError,
        attempt: u32,
        again: impl Fn(u32) -> DueWork,
    ) -> Result<ImportRun, FlowError> {
        let now = self.clock.now_ms();
        let retry_after = match &error {
            KommoError::Unavailable { retry_after, .. } => Some(*retry_after),
            // A 2xx the bridge could not read: the import may have landed, and Kommo takes a
            // msgid once, so trying again is safe and learns Kommo's answer.
            KommoError::InvalidResponse(_) => Some(None),
            KommoError::Rejected { .. } => None,
        };
        if let Some(retry_after) = retry_after
            && requeue(self.timers.as_ref(), &self.retry, attempt, retry_after, now, again).await?
        {
            tracing::warn!(msgid = %message.msgid.escape_debug(), %error, "import failed; queued again");
            return Ok(ImportRun::Later);
        }
        tracing::error!(msgid = %message.msgid.escape_debug(), %error, "client message not imported; dead-lettered");
        self.metrics.record(Metric::DeadLetter { what: "import_client_message" });
        let code = match error {
            KommoError::Rejected { .. } => ImportFailureCode::KommoRefused,
            _ => ImportFailureCode::KommoUnavailable,
        };
        let failed = BridgeEvent::MessageFailed {
            scope_id: message.scope_id.clone(),
            conversation_id: message.conversation_id.clone(),
            msgid: message.msgid.clone(),
            error: ImportFailure { code, message: failure_text(&error) },
        };
        self.tell(message, failed).await?;
        self.records.finish_incoming(&message.scope_id, &message.msgid, &IncomingState::Failed).await?;
        Ok(ImportRun::Ended)
    }

    /// Queues the one outcome event of a client message, under an id derived from the message.
    async fn tell(&self, message: &ClientMessage, event: BridgeEvent) -> Result<(), FlowError> {
        let webhook_id = derived_webhook_id(&[&message.scope_id, &message.msgid, "outcome"]);
        let work = DueWork::DeliverChatEvent { event, webhook_id, attempt: 0 };
        self.timers.schedule(work, self.clock.now_ms()).await?;
        Ok(())
    }
}

/// How often an edit or a reaction looks again for the import of its message, and how many
/// times: 15 minutes in all, longer than an import takes at its slowest (its own retries, a
/// killed worker's claim, a killed batch back after the queue's visibility timeout), so they
/// wait the import out instead of giving up on a message that is still coming.
const IMPORT_WAIT_STEP_MS: i64 = 5_000;
const IMPORT_WAITS: u32 = 180;

impl ClientContentToKommo {
    /// Work about a client's message that Kommo does not have yet (`waits`: how often it looked
    /// already): queued to look again, without spending an attempt, while the import may still
    /// come.
    pub(super) async fn wait_for_import(&self, waits: u32, again: DueWork) -> Result<(), FlowError> {
        if waits >= IMPORT_WAITS {
            tracing::error!(work = again.kind(), "the message never reached Kommo; given up");
            return Ok(());
        }
        self.timers.schedule(again, self.clock.now_ms() + IMPORT_WAIT_STEP_MS).await?;
        Ok(())
    }
}

/// What a reply quotes, for Kommo.
enum Replied {
    To(KommoMessageRef),
    /// Quoting a client's message that Kommo does not have.
    Unquoted,
    NotInKommoYet,
}

/// What the chat service reads in `message.failed`: Kommo's own words, never the message.
fn failure_text(error: &KommoError) -> String {
    match error {
        KommoError::Rejected { status, error_type, description } => {
            format!("Kommo refused the message ({status} {error_type}): {description}")
        }
        KommoError::Unavailable { attempts, reason, .. } => {
            format!("Kommo could not be reached; the last of {attempts} attempts failed: {reason}")
        }
        KommoError::InvalidResponse(reason) => format!("Kommo's answers could not be read: {reason}"),
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
