//! The composition root: configuration, routing, wiring and the mapping of domain errors to
//! HTTP answers. It builds every flow with only the ports that flow uses, and routes a request
//! to the side it arrived on ([`kommo_side`], [`chat_side`]) or a piece of due work to the
//! dispatcher ([`crate::queued`]). Lambda and the dev server both call [`Bridge::handle`], so
//! what runs locally is what is deployed. Nothing below this module imports it.

mod chat_side;
pub mod config;
#[cfg(feature = "adapters")]
pub mod deploy;
pub mod http;
mod kommo_side;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod metrics;
pub mod routes;
mod scopes;

use std::sync::Arc;

use tracing::Instrument;

use self::chat_side::ChatSide;
use self::config::Config;
use self::http::{ApiError, HttpRequest, HttpResponse, MAX_BODY_BYTES};
use self::kommo_side::KommoSide;
use self::metrics::{EmfMetrics, MetricLines};
use self::routes::{EntryPoint, RouteId};
use self::scopes::ScopeGate;
use crate::flows::chat_delivery::ChatDelivery;
use crate::flows::client_edits::ClientEdits;
use crate::flows::client_messages::{ClientMessages, IntoKommo};
use crate::flows::client_presence::ClientPresence;
use crate::flows::client_typing::ClientTyping;
use crate::flows::delivery_status::{DeliveryStatuses, StatusRegister, StatusReports};
use crate::flows::installs::{AccountTokens, Installs};
use crate::flows::manager_messages::{ManagerMessages, MessageRelay};
use crate::flows::manager_presence::{ManagerPresence, ManagerPresenceExpiry};
use crate::flows::manager_typing::{ManagerTyping, ManagerTypingExpiry};
use crate::flows::managers::{ManagerDirectoryRefresh, ManagerNames, NamedManagers};
use crate::flows::reactions::{ClientReactions, ManagerReactions};
use crate::flows::read_receipts::ReadReceipts;
use crate::ports::accounts::{KommoRest, TokenSealer};
use crate::ports::chat::ChatService;
use crate::ports::kommo::KommoApi;
use crate::ports::metrics::{MeteredChat, MeteredKommo, MeteredKommoRest, Metrics};
use crate::ports::store::Store;
use crate::ports::timers::Timers;
use crate::queued::Dispatcher;
use crate::time::Clock;

/// The ports a bridge is built on: one adapter each.
pub struct Ports {
    pub clock: Arc<dyn Clock>,
    pub store: Arc<dyn Store>,
    pub kommo: Arc<dyn KommoApi>,
    /// Only where queued work runs (`typing-expiry`, the dev server): nothing else sends to
    /// the chat service.
    pub chat: Option<Arc<dyn ChatService>>,
    pub timers: Arc<dyn Timers>,
}

/// The sides a bridge serves, each there only when its function's configuration is: a Lambda
/// function is wired with its own side alone, the dev server and the simulations with all.
pub struct Bridge {
    pub config: Arc<Config>,
    /// With the integration secret (the widget's tokens): `kommo-webhook`.
    kommo_side: Option<KommoSide>,
    /// With the chat service's secret: `chat-callback` (and `typing-expiry`, which never uses it).
    chat_side: Option<ChatSide>,
    /// With a chat-service client: `typing-expiry`.
    queued: Option<Dispatcher>,
    /// Where the metric lines go (stdout, read by CloudWatch Logs as EMF).
    metrics: Arc<EmfMetrics>,
}

impl Bridge {
    /// Wires every flow with the ports it uses, and only those, for each side the
    /// configuration and ports allow.
    pub fn new(config: Config, ports: Ports) -> Self {
        let config = Arc::new(config);
        let Ports { clock, store, kommo, chat, timers } = ports;
        let emf = Arc::new(EmfMetrics::new(Arc::new(metrics::Stdout), clock.clone()));
        let observed: Arc<dyn Metrics> = emf.clone();
        // Every call out counted by peer and outcome, where the ports are wired.
        let kommo: Arc<dyn KommoApi> = Arc::new(MeteredKommo { inner: kommo, metrics: observed.clone() });
        let chat = chat.map(|inner| Arc::new(MeteredChat { inner, metrics: observed.clone() }) as Arc<dyn ChatService>);
        let retry = config.retry;
        let privacy = config.privacy;
        let register = StatusRegister { records: store.clone(), timers: timers.clone() };
        let client_typing =
            ClientTyping { leases: store.clone(), timers: timers.clone(), kommo: kommo.clone(), clock: clock.clone() };
        let client_presence = ClientPresence {
            windows: store.clone(),
            conversations: store.clone(),
            leases: store.clone(),
            clock: clock.clone(),
            settings: config.presence,
        };
        let manager_presence = ManagerPresence {
            windows: store.clone(),
            timers: timers.clone(),
            clock: clock.clone(),
            settings: config.presence,
            enabled: privacy.forward_manager_presence,
        };
        let scopes = Arc::new(ScopeGate::new(store.clone(), clock.clone()));
        // Every event's manager named the same way, where installs keep a directory of them.
        let names = config.manager_directory.then(|| Arc::new(ManagerNames::new(store.clone(), clock.clone())));
        let chat = match (chat, &names) {
            (Some(inner), Some(names)) => {
                Some(Arc::new(NamedManagers { inner, names: names.clone() }) as Arc<dyn ChatService>)
            }
            (chat, _) => chat,
        };
        let kommo_side = config.integration_secret.clone().map(|integration_secret| KommoSide {
            config: config.clone(),
            scopes: scopes.clone(),
            integration_secret,
            clock: clock.clone(),
            conversations: store.clone(),
            accounts: store.clone(),
            directory: store.clone(),
            installs: None,
            managers: None,
            amojo: kommo.clone(),
            manager_typing: ManagerTyping {
                leases: store.clone(),
                timers: timers.clone(),
                clock: clock.clone(),
                enabled: privacy.forward_manager_typing,
            },
            manager_messages: ManagerMessages {
                records: store.clone(),
                conversations: store.clone(),
                leases: store.clone(),
                timers: timers.clone(),
                kommo: kommo.clone(),
                clock: clock.clone(),
            },
            manager_reactions: ManagerReactions { timers: timers.clone(), clock: clock.clone() },
            manager_presence: manager_presence.clone(),
            client_presence: client_presence.clone(),
            read_receipts: ReadReceipts {
                records: store.clone(),
                conversations: store.clone(),
                timers: timers.clone(),
                clock: clock.clone(),
                enabled: privacy.forward_read_receipts,
            },
        });
        let chat_side = config.chat_service_secret.clone().map(|secret| ChatSide {
            config: config.clone(),
            scopes,
            names,
            secret,
            clock: clock.clone(),
            replays: store.clone(),
            client_typing: client_typing.clone(),
            client_messages: ClientMessages {
                records: store.clone(),
                conversations: store.clone(),
                leases: store.clone(),
                timers: timers.clone(),
                clock: clock.clone(),
            },
            client_edits: ClientEdits { timers: timers.clone(), clock: clock.clone() },
            client_reactions: ClientReactions { timers: timers.clone(), clock: clock.clone() },
            statuses: DeliveryStatuses {
                records: store.clone(),
                conversations: store.clone(),
                register: register.clone(),
                clock: clock.clone(),
            },
            client_presence,
            manager_presence,
        });
        let queued = chat.map(|chat| {
            let delivery = ChatDelivery {
                windows: store.clone(),
                leases: store.clone(),
                lanes: store.clone(),
                timers: timers.clone(),
                chat: chat.clone(),
                clock: clock.clone(),
                retry,
            };
            Dispatcher {
                manager_typing: ManagerTypingExpiry {
                    leases: store.clone(),
                    lanes: store.clone(),
                    timers: timers.clone(),
                    clock: clock.clone(),
                    delivery: delivery.clone(),
                    metrics: observed.clone(),
                },
                manager_presence: ManagerPresenceExpiry {
                    windows: store.clone(),
                    timers: timers.clone(),
                    clock: clock.clone(),
                    delivery: delivery.clone(),
                },
                client_typing,
                relay: MessageRelay {
                    records: store.clone(),
                    leases: store.clone(),
                    lanes: store.clone(),
                    timers: timers.clone(),
                    chat,
                    register,
                    clock: clock.clone(),
                    retry,
                    metrics: observed.clone(),
                },
                reports: StatusReports {
                    lanes: store.clone(),
                    timers: timers.clone(),
                    kommo: kommo.clone(),
                    clock: clock.clone(),
                    retry,
                    metrics: observed.clone(),
                },
                into_kommo: IntoKommo {
                    records: store.clone(),
                    conversations: store,
                    timers,
                    kommo,
                    clock,
                    retry,
                    metrics: observed,
                },
                delivery,
            }
        });
        Self { config, kommo_side, chat_side, queued, metrics: emf }
    }

    #[cfg(feature = "adapters")]
    /// The bridge with real HTTP clients for amojo and the chat service (one client, built once).
    pub fn with_http_clients(
        config: Config,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        timers: Arc<dyn Timers>,
    ) -> Self {
        use crate::adapters::amojo::AmojoClient;
        use crate::adapters::chat_http::{CHAT_REQUEST_TIMEOUT, HttpChatService};
        use crate::rules::retry::RetryPolicy;
        let http = crate::adapters::outbound::http_client(CHAT_REQUEST_TIMEOUT);
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
        let chat = match (&config.chat_service_url, &config.chat_service_secret) {
            (Some(url), Some(secret)) => {
                let client = HttpChatService::new(http.clone(), url, secret.clone(), clock.clone());
                Some(Arc::new(client) as Arc<dyn ChatService>)
            }
            _ => None,
        };
        let installs = match (&config.installs, &config.integration_secret) {
            (Some(settings), Some(client_secret)) => {
                use crate::adapters::kommo_rest::KommoRestClient;
                use crate::adapters::sealer::AesGcmSealer;
                let rest = KommoRestClient::new(
                    http,
                    &settings.client_id,
                    client_secret.clone(),
                    &settings.redirect_uri,
                    settings.api_url.as_deref(),
                );
                Some((rest, AesGcmSealer::new(&settings.token_key_bytes())))
            }
            _ => None,
        };
        let bridge = Self::new(config, Ports { clock, store, kommo: Arc::new(kommo), chat, timers });
        match installs {
            Some((rest, sealer)) => bridge.with_installs(Arc::new(rest), Arc::new(sealer)),
            None => bridge,
        }
    }

    /// Answers one HTTP request for the routes `entry` serves; every failure is a JSON error.
    /// One span per request carries the ids it names (never a message's text nor a secret).
    pub async fn handle(&self, entry: EntryPoint, request: HttpRequest) -> HttpResponse {
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            route = tracing::field::Empty,
            kind = tracing::field::Empty,
            scope_id = tracing::field::Empty,
            conversation_id = tracing::field::Empty,
            msgid = tracing::field::Empty,
        );
        async move {
            let answer = async {
                match self.route(entry, &request).await {
                    Ok(response) => response,
                    Err(error) => {
                        if error.status.is_server_error() {
                            tracing::error!(code = error.code, "request failed");
                        }
                        error.into_response()
                    }
                }
            };
            let (response, kind) = metrics::with_event_kind("unrouted", answer).await;
            let now_ms = self.metrics.now_ms();
            self.metrics.write(metrics::event(kind, response.status(), now_ms));
            if response.status().is_server_error() {
                // Matched again only here: a healthy request pays nothing for the metric.
                let route = routes::find(request.method(), request.uri().path())
                    .map_or("(no route)", |matched| matched.template);
                let status = response.status().as_u16();
                self.metrics.write(metrics::server_error(entry.function_name(), route, status, now_ms));
            }
            response
        }
        .instrument(span)
        .await
    }

    async fn route(&self, entry: EntryPoint, request: &HttpRequest) -> Result<HttpResponse, ApiError> {
        let path = request.uri().path();
        let matched = routes::find(request.method(), path)?;
        if matched.served_by != entry {
            return Err(ApiError::not_found("no_route", format!("no route for {path}")));
        }
        tracing::Span::current().record("route", matched.template);
        metrics::note_kind(matched.id.event_kind());
        if request.body().len() > MAX_BODY_BYTES {
            return Err(ApiError::payload_too_large());
        }
        let not_served = || ApiError::not_found("no_route", format!("no route for {path} in this function"));
        match matched.id {
            RouteId::KommoWebhook => {
                self.kommo_side.as_ref().ok_or_else(not_served)?.webhook(matched.params[0], request).await
            }
            RouteId::OAuthCallback => {
                Ok(self.kommo_side.as_ref().ok_or_else(not_served)?.oauth_callback(request).await)
            }
            RouteId::OAuthDisabled => self.kommo_side.as_ref().ok_or_else(not_served)?.oauth_disabled(request).await,
            RouteId::ChatEvents => self.chat_side.as_ref().ok_or_else(not_served)?.event(request).await,
            RouteId::ChatPresence => self.chat_side.as_ref().ok_or_else(not_served)?.presence_pull(request).await,
            RouteId::UiPresence | RouteId::UiRead => {
                Ok(self.kommo_side.as_ref().ok_or_else(not_served)?.ui(matched.id, matched.params[0], request).await)
            }
            RouteId::Healthz | RouteId::SinkAmojo | RouteId::SinkChat => {
                Err(ApiError::not_found("no_route", format!("no route for {path}")))
            }
        }
    }

    /// Turns installs through Kommo's OAuth on (when the configuration has them): `rest` is
    /// Kommo's OAuth and REST API, `sealer` seals the tokens for the store.
    pub fn with_installs(mut self, rest: Arc<dyn KommoRest>, sealer: Arc<dyn TokenSealer>) -> Self {
        let rest: Arc<dyn KommoRest> = Arc::new(MeteredKommoRest { inner: rest, metrics: self.metrics.clone() });
        if let (Some(side), Some(settings)) = (self.kommo_side.as_mut(), self.config.installs.as_ref()) {
            let tokens = AccountTokens {
                rest: rest.clone(),
                accounts: side.accounts.clone(),
                sealer: sealer.clone(),
                clock: side.clock.clone(),
            };
            side.managers = Some(Arc::new(ManagerDirectoryRefresh::new(
                side.directory.clone(),
                side.accounts.clone(),
                tokens,
                rest.clone(),
                side.clock.clone(),
            )));
            side.installs = Some(Installs {
                rest,
                kommo: side.amojo.clone(),
                accounts: side.accounts.clone(),
                directory: side.directory.clone(),
                sealer,
                clock: side.clock.clone(),
                channel_title: settings.channel_title.clone(),
            });
        }
        self
    }

    /// Sends the bridge's metric lines to `metrics` instead of stdout (tests).
    pub fn with_metrics(self, lines: Arc<dyn MetricLines>) -> Self {
        self.metrics.redirect(lines);
        self
    }

    /// The dispatcher of due work, where this bridge runs it (see [`Ports::chat`]).
    pub fn dispatcher(&self) -> Option<&Dispatcher> {
        self.queued.as_ref()
    }
}
