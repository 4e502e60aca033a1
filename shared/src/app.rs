//! The bridge as one value: configuration, clock, store and the two outbound clients, and the
//! entry point that routes a request to its handler. Lambda and the dev server both call
//! [`Bridge::handle`], so what runs locally is what is deployed.

use std::sync::Arc;

use http::StatusCode;

use crate::chat_client::ChatService;
use crate::config::Config;
use crate::http::standard_webhook_headers;
use crate::http::{ApiError, HttpRequest, HttpResponse, MAX_BODY_BYTES, header_str, json_response, parse_json};
use crate::kommo_client::KommoApi;
use crate::models::chat::ChatEvent;
use crate::models::kommo::{KommoWebhook, WebhookKind};
use crate::routes::{self, EntryPoint, RouteId};
use crate::signing::{kommo_webhook, standard_webhooks};
use crate::store::Store;
use crate::time::Clock;
use crate::timers::Timers;

/// How long a chat-service `webhook-id` is remembered: a signed request stays valid while its
/// timestamp is within the tolerance of the clock, either side, so twice that covers every replay.
const REPLAY_MEMORY_MS: i64 = 2 * standard_webhooks::TOLERANCE_S * 1000;

pub struct Bridge {
    pub config: Config,
    pub clock: Arc<dyn Clock>,
    pub store: Arc<dyn Store>,
    pub kommo: Arc<dyn KommoApi>,
    pub chat: Arc<dyn ChatService>,
    pub timers: Arc<dyn Timers>,
}

impl Bridge {
    #[cfg(feature = "adapters")]
    /// The bridge with real HTTP clients for amojo and the chat service (one client, built once).
    pub fn with_http_clients(
        config: Config,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        timers: Arc<dyn Timers>,
    ) -> Self {
        use crate::chat_client::{CHAT_REQUEST_TIMEOUT, HttpChatService};
        use crate::config::RetryPolicy;
        use crate::kommo_client::AmojoClient;
        let http = crate::outbound::http_client(CHAT_REQUEST_TIMEOUT);
        // Inline retries only: the queue carries longer backoff (config.retry), so no
        // invocation waits out an outage.
        let kommo = AmojoClient::new(
            http.clone(),
            &config.amojo_url,
            &config.channel_id,
            config.channel_secret.clone(),
            clock.clone(),
            RetryPolicy::INLINE,
        );
        let chat =
            HttpChatService::new(http, &config.chat_service_url, config.chat_service_secret.clone(), clock.clone());
        Self { config, clock, store, kommo: Arc::new(kommo), chat: Arc::new(chat), timers }
    }

    /// Answers one HTTP request for the routes `entry` serves; every failure is a JSON error.
    pub async fn handle(&self, entry: EntryPoint, request: HttpRequest) -> HttpResponse {
        match self.route(entry, &request).await {
            Ok(response) => response,
            Err(error) => {
                if error.status.is_server_error() {
                    tracing::error!(code = error.code, "request failed");
                }
                error.into_response()
            }
        }
    }

    async fn route(&self, entry: EntryPoint, request: &HttpRequest) -> Result<HttpResponse, ApiError> {
        let path = request.uri().path();
        let matched = routes::find(request.method(), path)?;
        if matched.served_by != entry {
            return Err(ApiError::not_found("no_route", format!("no route for {path}")));
        }
        if request.body().len() > MAX_BODY_BYTES {
            return Err(ApiError::payload_too_large());
        }
        match matched.id {
            RouteId::KommoWebhook => self.kommo_webhook(matched.params[0], request).await,
            RouteId::ChatEvents => self.chat_event(request).await,
            RouteId::ChatPresence => self.chat_presence(request).await,
            RouteId::UiPresence | RouteId::UiRead => Ok(self.kommo_ui(matched.id, matched.params[0], request).await),
            RouteId::Healthz | RouteId::SinkAmojo | RouteId::SinkChat => {
                Err(ApiError::not_found("no_route", format!("no route for {path}")))
            }
        }
    }

    /// `POST /kommo/webhook/{scope_id}`: verified over the raw body, then parsed. Kommo sends
    /// each webhook once and wants exactly 200 within 5 s.
    async fn kommo_webhook(&self, scope_id: &str, request: &HttpRequest) -> Result<HttpResponse, ApiError> {
        let account_id = self.config.account_of_scope(scope_id).ok_or_else(ApiError::unknown_scope)?;
        kommo_webhook::verify(self.config.channel_secret.expose(), request.body(), header_str(request, "x-signature"))
            .map_err(|e| ApiError::bad_signature(e.to_string()))?;
        let webhook: KommoWebhook = parse_json(request.body())?;
        if webhook.account_id != account_id {
            return Err(ApiError::bad_request("scope_mismatch", "account_id does not match the scope_id in the path"));
        }
        match webhook.kind() {
            WebhookKind::ManagerTyping(typing) => self.on_manager_typing(scope_id, typing).await?,
            WebhookKind::ManagerMessage(message) => self.on_manager_message(scope_id, message).await?,
            WebhookKind::Reaction(_) | WebhookKind::Other => {}
        }
        tracing::info!(scope_id, "kommo webhook accepted");
        Ok(json_response(StatusCode::OK, &serde_json::json!({})))
    }

    /// A request from the chat service: Standard Webhooks over the raw body, in constant time.
    pub(crate) fn verify_chat_signature(&self, request: &HttpRequest) -> Result<(), ApiError> {
        self.config
            .chat_service_secret
            .verify(&standard_webhook_headers(request), request.body(), self.clock.now_s())
            .map_err(|e| ApiError::bad_signature(e.to_string()))
    }

    /// `POST /chat/events`: Standard Webhooks verified over the raw body, then parsed. A
    /// `webhook-id` is accepted once: a captured request replayed within the signature's
    /// tolerance gets 409 and changes nothing. An event whose handling fails is forgotten, so
    /// the sender's retry with the same id is handled, not refused.
    async fn chat_event(&self, request: &HttpRequest) -> Result<HttpResponse, ApiError> {
        self.verify_chat_signature(request)?;
        let event: ChatEvent = parse_json(request.body())?;
        let scope_id = event.scope_id();
        if self.config.account_of_scope(scope_id).is_none() {
            return Err(ApiError::unknown_scope());
        }
        check_chat_event(&event)?;
        let webhook_id = header_str(request, "webhook-id").unwrap_or_default(); // verified present
        let replay_key = format!("webhook-id#{webhook_id}");
        let first = self.store.claim(scope_id, &replay_key, self.clock.now_ms(), REPLAY_MEMORY_MS).await;
        if !first.map_err(crate::typing::store_fault)? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "replayed_webhook",
                "this webhook-id was already accepted; the event is not applied twice",
            ));
        }
        if let Err(error) = self.apply_chat_event(&event).await {
            if let Err(release_error) = self.store.release(scope_id, &replay_key).await {
                tracing::error!(error = %release_error, "a failed event's webhook-id could not be released");
            }
            return Err(error);
        }
        tracing::info!(scope_id, kind = event.type_name(), "chat event accepted");
        Ok(json_response(StatusCode::OK, &serde_json::json!({"accepted": true})))
    }

    async fn apply_chat_event(&self, event: &ChatEvent) -> Result<(), ApiError> {
        match event {
            ChatEvent::TypingStarted(typing) => self.on_client_typing_started(typing).await?,
            ChatEvent::TypingStopped(typing) => {
                self.end_client_typing(&typing.scope_id, &typing.conversation_id, &typing.user_id).await?
            }
            ChatEvent::MessageCreated(message) => self.on_client_message(message).await?,
            ChatEvent::MessageStatus(report) => self.on_message_status(report).await?,
            ChatEvent::PresenceOnline(presence) | ChatEvent::PresenceHeartbeat(presence) => {
                self.on_client_heartbeat(presence).await?
            }
            ChatEvent::PresenceOffline(presence) => self.on_client_offline(presence).await?,
        }
        Ok(())
    }
}

/// The checks of a chat event that need no store, made before its `webhook-id` is remembered,
/// so that a malformed event changes nothing at all.
fn check_chat_event(event: &ChatEvent) -> Result<(), ApiError> {
    use crate::messages::require_non_empty;
    match event {
        ChatEvent::TypingStarted(typing) => {
            require_non_empty(&[("conversation_id", &typing.conversation_id), ("user_id", &typing.user_id)])?;
            crate::typing::client_typing_ttl_ms(typing).map(drop)
        }
        ChatEvent::TypingStopped(typing) => {
            require_non_empty(&[("conversation_id", &typing.conversation_id), ("user_id", &typing.user_id)])
        }
        ChatEvent::MessageCreated(message) => crate::messages::check_client_message(message),
        ChatEvent::MessageStatus(report) => crate::messages::reported_status(report).map(drop),
        ChatEvent::PresenceOnline(presence)
        | ChatEvent::PresenceHeartbeat(presence)
        | ChatEvent::PresenceOffline(presence) => require_non_empty(&[("user_id", &presence.user_id)]),
    }
}
