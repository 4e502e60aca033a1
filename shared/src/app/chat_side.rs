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
use crate::flows::client_typing::ClientTyping;
use crate::flows::delivery_status::DeliveryStatuses;
use crate::flows::manager_presence::ManagerPresence;
use crate::flows::managers::{ManagerNames, kommo_ui_manager};
use crate::flows::reactions::ClientReactions;
use crate::models::chat::{ChatEvent, ClientTypingSignal};
use crate::ports::store::DedupeKeys;
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
}

impl ChatSide {
    /// A request from the chat service: Standard Webhooks over the raw body, in constant time.
    fn verify_signature(&self, request: &HttpRequest) -> Result<(), ApiError> {
        self.secret
            .verify(&standard_webhook_headers(request), request.body(), self.clock.now_s())
            .map_err(|e| ApiError::bad_signature(e.to_string()))
    }

    /// `POST /chat/events`: Standard Webhooks verified over the raw body, then parsed. A
    /// remembered `webhook-id` is accepted once: a captured request replayed within the
    /// signature's tolerance gets 409 and changes nothing. Typing and presence signals are
    /// remembered only where a replay could show something untrue ([`replay_memory`]). An event
    /// whose handling fails is forgotten, so the sender's retry with the same id is handled.
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
        // Before its webhook-id is remembered, so that a malformed event changes nothing at all.
        check_chat_event(&event)?;
        let webhook_id = header_str(request, "webhook-id").unwrap_or_default(); // verified present
        check_id("webhook-id", webhook_id).map_err(ApiError::invalid_id)?;
        // Remembered for as long as its signature verifies (to the millisecond), so that no
        // replay, even one signed ahead of the clock, is ever applied twice.
        let now_ms = self.clock.now_ms();
        let timestamp_s = header_str(request, "webhook-timestamp").and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        let remember_ms = (standard_webhooks::verifies_until_ms(timestamp_s) - now_ms).max(1);
        let memory = ReplayMemo {
            replays: self.replays.as_ref(),
            scope_id,
            key: format!("webhook-id#{webhook_id}"),
            now_ms,
            remember_ms,
        };
        let remembered = replay_memory(&event) == ReplayMemory::Always;
        if remembered {
            memory.claim().await?;
        }
        if let Err(error) = self.apply(&event, &memory).await {
            if remembered {
                memory.forget().await;
            }
            return Err(error);
        }
        // Typing and presence signals repeat all day: counted by the Events metric, logged only
        // at debug (each INFO line is about 400 bytes of CloudWatch Logs).
        if event.is_signal() {
            tracing::debug!("chat event accepted");
        } else {
            tracing::info!("chat event accepted");
        }
        Ok(json_response(StatusCode::OK, &json!({"accepted": true})))
    }

    /// `typing.started`, remembered only when it starts a lease ([`ReplayMemory`]): a replay
    /// that would start one is refused and the lease it opened ended before anything is shown.
    async fn typing_started(&self, typing: &ClientTypingSignal, memory: &ReplayMemo<'_>) -> Result<(), ApiError> {
        let Some(started) = self.client_typing.signal(typing).await? else {
            return Ok(());
        };
        if let Err(refused) = memory.claim().await {
            if let Err(error) = self.client_typing.undo(&started).await {
                tracing::error!(%error, "the lease of a refused typing.started could not be ended; it lapses unshown");
            }
            return Err(refused);
        }
        if let Err(error) = self.client_typing.start(&started).await {
            memory.forget().await;
            return Err(error.into());
        }
        Ok(())
    }

    async fn apply(&self, event: &ChatEvent, memory: &ReplayMemo<'_>) -> Result<(), ApiError> {
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
        };
        Ok(applied?)
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

/// A chat-service event's `webhook-id`, remembered for as long as its signature verifies.
struct ReplayMemo<'a> {
    replays: &'a dyn DedupeKeys,
    scope_id: &'a str,
    key: String,
    now_ms: i64,
    remember_ms: i64,
}

impl ReplayMemo<'_> {
    /// Remembers the id; 409 when it was remembered already (a replay).
    async fn claim(&self) -> Result<(), ApiError> {
        let first = self.replays.claim(self.scope_id, &self.key, self.now_ms, self.remember_ms).await;
        if first.map_err(FlowError::from)? {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "replayed_webhook",
            "this webhook-id was already accepted; the event is not applied twice",
        ))
    }

    /// Forgets the id of an event that failed, so that the sender's retry is handled, not
    /// refused as a replay.
    async fn forget(&self) {
        if let Err(error) = self.replays.release(self.scope_id, &self.key).await {
            tracing::error!(%error, "a failed event's webhook-id could not be released");
        }
    }
}
