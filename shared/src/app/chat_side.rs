//! Everything that arrives from the chat service (the `chat-callback` function): its events,
//! verified per Standard Webhooks over the raw body and refused when replayed, and its pull of
//! the managers online in a conversation.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;

use super::config::Config;
use super::http::{
    ApiError, HttpRequest, HttpResponse, header_str, json_response, parse_json, standard_webhook_headers,
};
use super::metrics::EventKind;
use super::scopes::ScopeGate;
use crate::flows::FlowError;
use crate::flows::client_edits::ClientEdits;
use crate::flows::client_messages::ClientMessages;
use crate::flows::client_presence::ClientPresence;
use crate::flows::client_profiles::{ClientProfileUpdates, ProfileAcceptance};
use crate::flows::client_typing::ClientTyping;
use crate::flows::delivery_status::DeliveryStatuses;
use crate::flows::manager_presence::ManagerPresence;
use crate::flows::managers::{ManagerNames, kommo_ui_manager};
use crate::flows::reactions::ClientReactions;
use crate::models::chat::{ChatEvent, ClientTypingSignal};
use crate::ports::store::{DedupeKeys, KeyClaim};
use crate::rules::id_checks::{check_id, for_log};
use crate::rules::replay::{ReplayMemory, replay_memory};
use crate::rules::validation::check_chat_event;
use crate::signing::standard_webhooks::{self, WebhookSecret};
use crate::time::Clock;

pub struct ChatSide {
    pub config: Arc<Config>,
    /// Refuses the scopes of accounts that disabled the integration.
    pub scopes: Arc<ScopeGate>,
    /// Names the managers of the presence pull as events name them (with installs).
    pub names: Option<Arc<ManagerNames>>,
    /// The chat service's Standard Webhooks secret.
    pub secret: WebhookSecret,
    pub clock: Arc<dyn Clock>,
    /// The `webhook-id`s accepted lately.
    pub replays: Arc<dyn DedupeKeys>,
    pub client_typing: ClientTyping,
    pub client_messages: ClientMessages,
    pub client_edits: ClientEdits,
    pub client_reactions: ClientReactions,
    pub statuses: DeliveryStatuses,
    pub client_presence: ClientPresence,
    pub manager_presence: ManagerPresence,
    /// `client.updated`, for accounts installed through Kommo's OAuth.
    pub client_profiles: ClientProfileUpdates,
}

impl ChatSide {
    /// A request from the chat service: Standard Webhooks over the raw body, in constant time.
    fn verify_signature(&self, request: &HttpRequest) -> Result<(), ApiError> {
        self.secret
            .verify(&standard_webhook_headers(request), request.body(), self.clock.now_s())
            .map_err(|e| ApiError::bad_signature(e.to_string()))
    }

    /// `POST /chat/events`: Standard Webhooks verified over the raw body, then parsed. A
    /// remembered `webhook-id` is applied once: the same id again within the signature's
    /// tolerance (a sender's retry whose answer was lost, or a captured request replayed) is
    /// answered 200 `duplicate` and changes nothing once its first delivery was applied, and is
    /// applied by the retry when that delivery stopped half-way (killed, or its store calls
    /// failed). Typing and presence signals are remembered only where a replay could show
    /// something untrue ([`replay_memory`]).
    pub async fn event(&self, request: &HttpRequest, kind: &mut EventKind) -> Result<HttpResponse, ApiError> {
        self.verify_signature(request)?;
        let event: ChatEvent = parse_json(request.body())?;
        let scope_id = event.scope_id();
        let span = tracing::Span::current();
        span.record("scope_id", for_log(scope_id));
        kind.name_as(event.type_name());
        if let Some(conversation_id) = event.conversation_id() {
            span.record("conversation_id", for_log(conversation_id));
        }
        if let Some(msgid) = event.msgid() {
            span.record("msgid", for_log(msgid));
        }
        self.config.account_of_scope(scope_id)?;
        self.scopes.check(scope_id).await?;
        // Before its webhook-id is claimed, so that a malformed event changes nothing at all.
        check_chat_event(&event)?;
        let webhook_id = header_str(request, "webhook-id").unwrap_or_default(); // verified present
        check_id("webhook-id", webhook_id).map_err(ApiError::invalid_id)?;
        // Remembered as done for as long as its signature verifies (to the millisecond), so
        // that no replay, even one signed ahead of the clock, is ever applied twice.
        let now_ms = self.clock.now_ms();
        let timestamp_s = header_str(request, "webhook-timestamp").and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        let memory = ReplayMemo {
            replays: self.replays.as_ref(),
            scope_id,
            key: format!("webhook-id#{webhook_id}"),
            now_ms,
            remember_until_ms: standard_webhooks::verifies_until_ms(timestamp_s).max(now_ms + 1),
            claim: std::sync::Mutex::new(None),
        };
        if replay_memory(&event) == ReplayMemory::Always
            && memory.claim(Hold::WhileApplied).await? == Delivery::Duplicate
        {
            return Ok(duplicate(kind));
        }
        match self.apply(&event, &memory).await {
            Ok(Delivery::Duplicate) => return Ok(duplicate(kind)),
            Ok(Delivery::First) => memory.finish().await,
            Err(error) => {
                memory.forget().await;
                return Err(error);
            }
        }
        // Typing and presence signals repeat all day: counted by the Events metric, logged only
        // at debug (each INFO line is about 400 bytes of CloudWatch Logs).
        if event.is_signal() {
            tracing::debug!("chat event accepted");
        } else {
            tracing::info!("chat event accepted");
        }
        // A profile update is only queued here (it runs against Kommo's REST API later): 202.
        let status = match event {
            ChatEvent::ClientUpdated(_) => StatusCode::ACCEPTED,
            _ => StatusCode::OK,
        };
        Ok(json_response(status, &json!({"accepted": true})))
    }

    /// `typing.started`, remembered only when it starts a lease ([`ReplayMemory`]): a repeat of
    /// one that started a lease ends the lease it opened before anything is shown. Its id is
    /// remembered as done at once (one write, as for every lease a client starts): a start
    /// killed half-way is not retried, the client's next `typing.started` a few seconds later
    /// shows the typing.
    async fn typing_started(&self, typing: &ClientTypingSignal, memory: &ReplayMemo<'_>) -> Result<Delivery, ApiError> {
        let Some(started) = self.client_typing.signal(typing).await? else {
            return Ok(Delivery::First);
        };
        let claimed = memory.claim(Hold::Remembered).await;
        if !matches!(claimed, Ok(Delivery::First)) {
            if let Err(error) = self.client_typing.undo(&started).await {
                tracing::error!(%error, "the lease of a repeated typing.started could not be ended; it lapses unshown");
            }
            return claimed;
        }
        self.client_typing.start(&started).await?;
        Ok(Delivery::First)
    }

    async fn apply(&self, event: &ChatEvent, memory: &ReplayMemo<'_>) -> Result<Delivery, ApiError> {
        let applied = match event {
            ChatEvent::TypingStarted(typing) => return self.typing_started(typing, memory).await,
            ChatEvent::TypingStopped(typing) => {
                self.client_typing.end(&typing.scope_id, &typing.conversation_id, &typing.user_id).await
            }
            ChatEvent::MessageCreated(message) => self.client_messages.on_message(message).await,
            ChatEvent::MessageStatus(report) => self.statuses.on_report(report).await,
            ChatEvent::PresenceOnline(presence) | ChatEvent::PresenceHeartbeat(presence) => {
                self.client_presence.on_heartbeat(presence).await
            }
            ChatEvent::PresenceOffline(presence) => self.client_presence.on_offline(presence).await,
            ChatEvent::MessageEdited(edit) => self.client_edits.on_edit(edit).await,
            ChatEvent::ReactionAdded(reaction) => self.client_reactions.on_reaction(reaction, true).await,
            ChatEvent::ReactionRemoved(reaction) => self.client_reactions.on_reaction(reaction, false).await,
            ChatEvent::ClientUpdated(profile) => return self.client_updated(profile).await,
        };
        applied?;
        Ok(Delivery::First)
    }

    /// `client.updated`: queued for an account with REST tokens; 409 for one without (nothing
    /// queued, nothing remembered), which the chat service should not send again as it is.
    async fn client_updated(&self, profile: &crate::models::chat::ClientProfile) -> Result<Delivery, ApiError> {
        match self.client_profiles.on_update(profile).await? {
            ProfileAcceptance::Queued => Ok(Delivery::First),
            ProfileAcceptance::NoRestAccess => Err(ApiError::new(
                StatusCode::CONFLICT,
                "profiles_need_install",
                "this account was not installed through Kommo's OAuth, so the bridge cannot change its contacts; \
                 install the integration from Kommo to send client.updated",
            )),
            ProfileAcceptance::NeedsReinstall => Err(ApiError::new(
                StatusCode::CONFLICT,
                "account_needs_reinstall",
                "Kommo refused this account's tokens; client.updated is taken again once the integration is installed again",
            )),
        }
    }

    /// `GET /chat/presence?scope_id=…&conversation_id=…`, signed like the chat service's events
    /// (over an empty body): the managers online in that conversation.
    pub async fn presence_pull(&self, request: &HttpRequest, kind: &mut EventKind) -> Result<HttpResponse, ApiError> {
        self.verify_signature(request)?;
        let query = request.uri().query().unwrap_or_default();
        let param = |name: &str| {
            super::http::query_param(query, name).filter(|v| !v.is_empty()).ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("the {name} query parameter is required"))
            })
        };
        let (scope_id, conversation_id) = (param("scope_id")?, param("conversation_id")?);
        let span = tracing::Span::current();
        span.record("scope_id", for_log(scope_id.as_str()));
        span.record("conversation_id", for_log(conversation_id.as_str()));
        kind.name_as("presence_pull");
        self.config.account_of_scope(&scope_id)?;
        check_id("conversation_id", &conversation_id).map_err(ApiError::invalid_id)?;
        self.scopes.check(&scope_id).await?;
        let mut managers = Vec::new();
        for (id, last_seen_ms) in self.manager_presence.online_in(&scope_id, &conversation_id).await? {
            // Windows are kept by the Kommo UI's user id; the answer names managers as events do.
            let manager = kommo_ui_manager(&id);
            let manager = match &self.names {
                Some(names) => names.identify(&scope_id, &manager).await,
                None => manager,
            };
            let mut entry = serde_json::to_value(&manager).expect("a manager serialises");
            entry["last_seen_at"] = json!(last_seen_ms.div_euclid(1000));
            managers.push(entry);
        }
        Ok(json_response(
            StatusCode::OK,
            &json!({"scope_id": scope_id, "conversation_id": conversation_id, "managers": managers}),
        ))
    }
}

/// How long one delivery holds its `webhook-id` while it is applied: longer than
/// `chat-callback` may run (its timeout, 10 s), so that a retry arriving while the first
/// delivery still runs waits (503) rather than applying the event beside it, and a delivery
/// killed half-way is taken over by the retry that comes after this.
const DELIVERY_HOLD_MS: i64 = 15_000;

/// How a delivery holds its `webhook-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Held while it is applied ([`DELIVERY_HOLD_MS`]), then marked done: a delivery that
    /// stopped half-way is applied by the sender's retry.
    WhileApplied,
    /// Remembered as done from the claim: a repeat is a duplicate whatever became of the first.
    Remembered,
}

/// Whether a delivery of an event is its first to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    First,
    /// The same `webhook-id` was applied already: answered 200, nothing changed.
    Duplicate,
}

/// The 200 of a delivery applied already, counted as a duplicate by the Events metric.
fn duplicate(kind: &mut EventKind) -> HttpResponse {
    kind.note_duplicate();
    tracing::debug!("chat event already applied; duplicate ignored");
    json_response(StatusCode::OK, &json!({"accepted": true, "duplicate": true}))
}

/// A chat-service event's `webhook-id`: held while this delivery applies it, then remembered as
/// done for as long as its signature verifies.
struct ReplayMemo<'a> {
    replays: &'a dyn DedupeKeys,
    scope_id: &'a str,
    key: String,
    now_ms: i64,
    remember_until_ms: i64,
    /// This delivery's claim, once it holds the id.
    claim: std::sync::Mutex<Option<(String, Hold)>>,
}

impl ReplayMemo<'_> {
    /// Holds the id for this delivery. A delivery applied already is a duplicate; one still
    /// being applied by another attempt is 503 (the sender retries, and finds it done or takes
    /// it over once its hold lapses).
    async fn claim(&self, hold: Hold) -> Result<Delivery, ApiError> {
        let hold_ms = match hold {
            Hold::WhileApplied => DELIVERY_HOLD_MS,
            Hold::Remembered => self.remember_until_ms - self.now_ms,
        };
        let claim = self.replays.claim(self.scope_id, &self.key, self.now_ms, hold_ms).await;
        match claim.map_err(FlowError::from)? {
            KeyClaim::Claimed { token } => {
                *self.claim.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((token, hold));
                Ok(Delivery::First)
            }
            KeyClaim::Done => Ok(Delivery::Duplicate),
            KeyClaim::Held { .. } if hold == Hold::Remembered => Ok(Delivery::Duplicate),
            KeyClaim::Held { .. } => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "delivery_in_progress",
                "this webhook-id is being applied by an earlier delivery; retry later",
            )
            .with_retry_after(DELIVERY_HOLD_MS / 1000)),
        }
    }

    fn taken(&self) -> Option<(String, Hold)> {
        self.claim.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
    }

    /// Remembers the id as applied (an id [`Hold::Remembered`] is already). If this write fails
    /// the event stands applied: a retry after the hold applies it again, which each remembered
    /// kind takes without a second effect (one record per msgid, a monotonic status, the same
    /// edit or reaction again).
    async fn finish(&self) {
        let Some((token, Hold::WhileApplied)) = self.taken() else { return };
        if let Err(error) = self.replays.finish(self.scope_id, &self.key, &token, self.remember_until_ms).await {
            tracing::warn!(%error, "an applied event's webhook-id could not be marked done");
        }
    }

    /// Forgets the id of an event that failed, so that the sender's retry is applied at once.
    async fn forget(&self) {
        let Some((token, _)) = self.taken() else { return };
        if let Err(error) = self.replays.release(self.scope_id, &self.key, &token).await {
            tracing::error!(%error, "a failed event's webhook-id could not be released; a retry waits out its hold");
        }
    }
}
