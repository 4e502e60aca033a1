//! The one place a bridge is built: every function's sides from its configuration and its
//! ports, each flow given only the ports it uses. Each outbound chain is made by one named
//! function, so what wraps a call out (manager names, metering) is read here and nowhere else:
//!
//! | peer | chain, outermost first | made by |
//! |---|---|---|
//! | the chat service | manager names → metering → HTTP (Standard Webhooks) | [`chat_service_chain`] |
//! | amojo | metering → HTTP (Kommo's channel signature) | [`amojo_chain`] |
//! | Kommo's OAuth and REST API | metering → HTTP | [`kommo_rest_chain`] |
//!
//! A Lambda function is given the ports its configuration allows ([`http_ports`]), and the
//! sides follow from what it was given: nothing is added to a side once it is built.

use std::sync::Arc;

use super::Bridge;
use super::chat_side::ChatSide;
use super::config::Config;
use super::kommo_side::KommoSide;
use super::metrics::{EmfMetrics, MetricLines};
use super::scopes::ScopeGate;
use crate::adapters::metered::{MeteredChat, MeteredKommo, MeteredKommoRest};
use crate::flows::chat_delivery::ChatDelivery;
use crate::flows::client_edits::ClientEdits;
use crate::flows::client_messages::{ClientContentToKommo, ClientMessages};
use crate::flows::client_presence::ClientPresence;
use crate::flows::client_profiles::{ClientProfileUpdates, ClientProfiles, CrmAccess};
use crate::flows::client_typing::ClientTyping;
use crate::flows::delivery_status::{DeliveryStatuses, StatusRegister, StatusReports};
use crate::flows::installs::{AccountTokens, Installs};
use crate::flows::manager_messages::{ManagerMessages, MessageRelay};
use crate::flows::manager_presence::{ManagerPresence, ManagerPresenceExpiry};
use crate::flows::manager_typing::{ManagerTyping, ManagerTypingExpiry};
use crate::flows::managers::{ManagerDirectoryRefresh, ManagerNames, NamedManagers};
use crate::flows::reactions::{ClientReactions, ManagerReactions};
use crate::flows::read_receipts::ReadReceipts;
use crate::flows::sources::SourceRegistry;
use crate::ports::accounts::{KommoRest, TokenSealer};
use crate::ports::chat::ChatService;
use crate::ports::crm::KommoCrm;
use crate::ports::kommo::KommoApi;
use crate::ports::metrics::Metrics;
use crate::ports::store::Store;
use crate::ports::timers::Timers;
use crate::queued::{Dispatcher, InstallWork};
use crate::time::Clock;

/// The ports a bridge is built on: one adapter each, before any chain wraps it.
pub struct Ports {
    pub clock: Arc<dyn Clock>,
    pub store: Arc<dyn Store>,
    pub kommo: Arc<dyn KommoApi>,
    /// Only where queued work runs (`typing-expiry`, the dev server): nothing else sends to
    /// the chat service.
    pub chat: Option<Arc<dyn ChatService>>,
    pub timers: Arc<dyn Timers>,
    /// Only where installs through Kommo's OAuth are configured (`kommo-webhook`).
    pub installs: Option<InstallPorts>,
    /// Where metric lines go: [`super::metrics::Stdout`] under Lambda (CloudWatch Logs reads
    /// them as EMF), a recorder in tests, debug log lines on the dev server.
    pub metric_lines: Arc<dyn MetricLines>,
}

/// What installs through Kommo's OAuth need beyond the other ports.
pub struct InstallPorts {
    /// Kommo's OAuth and REST API.
    pub rest: Arc<dyn KommoRest>,
    /// Seals the tokens for the store.
    pub sealer: Arc<dyn TokenSealer>,
    /// Kommo's CRM REST API: client profiles into contacts, the integration's sources.
    pub crm: Arc<dyn KommoCrm>,
}

/// The chat service as the flows see it: every event names its manager as the directory
/// knows them (where installs keep a directory), each call metered, then the HTTP client.
pub fn chat_service_chain(
    http: Arc<dyn ChatService>,
    metrics: Arc<dyn Metrics>,
    names: Option<Arc<ManagerNames>>,
) -> Arc<dyn ChatService> {
    let metered: Arc<dyn ChatService> = Arc::new(MeteredChat { inner: http, metrics });
    match names {
        Some(names) => Arc::new(NamedManagers { inner: metered, names }),
        None => metered,
    }
}

/// amojo as the flows see it: each call metered, then the HTTP client.
pub fn amojo_chain(http: Arc<dyn KommoApi>, metrics: Arc<dyn Metrics>) -> Arc<dyn KommoApi> {
    Arc::new(MeteredKommo { inner: http, metrics })
}

/// Kommo's OAuth and REST API as the install flows see it: each call metered, then the HTTP
/// client.
pub fn kommo_rest_chain(http: Arc<dyn KommoRest>, metrics: Arc<dyn Metrics>) -> Arc<dyn KommoRest> {
    Arc::new(MeteredKommoRest { inner: http, metrics })
}

#[cfg(feature = "adapters")]
/// The HTTPS adapters `config` allows beside `store` and `timers`: amojo always, the chat
/// service where its URL and secret are configured, Kommo's OAuth and REST API where installs
/// are. One HTTP client, built once, without network calls. Metric lines go to stdout.
pub fn http_ports(config: &Config, clock: Arc<dyn Clock>, store: Arc<dyn Store>, timers: Arc<dyn Timers>) -> Ports {
    use crate::adapters::amojo::AmojoClient;
    use crate::adapters::chat_http::{CHAT_REQUEST_TIMEOUT, HttpChatService};
    use crate::adapters::kommo_rest::KommoRestClient;
    use crate::adapters::sealer::AesGcmSealer;
    use crate::rules::retry::RetryPolicy;
    let http = crate::adapters::outbound::http_client(CHAT_REQUEST_TIMEOUT);
    // Inline retries only: the queue carries longer backoff (config.retry), so no invocation
    // waits out an outage.
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
            Some(Arc::new(HttpChatService::new(http.clone(), url, secret.clone(), clock.clone()))
                as Arc<dyn ChatService>)
        }
        _ => None,
    };
    let installs = match (&config.installs, &config.integration_secret) {
        (Some(settings), Some(client_secret)) => Some(InstallPorts {
            crm: Arc::new(crate::adapters::kommo_crm::KommoCrmClient::new(http.clone(), settings.api_url.as_deref())),
            rest: Arc::new(KommoRestClient::new(
                http,
                &settings.client_id,
                client_secret.clone(),
                &settings.redirect_uri,
                settings.api_url.as_deref(),
            )),
            sealer: Arc::new(AesGcmSealer::new(&settings.token_key_bytes())),
        }),
        _ => None,
    };
    Ports {
        clock,
        store,
        kommo: Arc::new(kommo),
        chat,
        timers,
        installs,
        metric_lines: Arc::new(super::metrics::Stdout),
    }
}

impl Bridge {
    /// Wires every flow with the ports it uses, and only those, for each side the
    /// configuration and ports allow.
    pub fn new(config: Config, ports: Ports) -> Self {
        let config = Arc::new(config);
        let Ports { clock, store, kommo, chat, timers, installs, metric_lines } = ports;
        let emf = Arc::new(EmfMetrics::new(metric_lines, clock.clone()));
        let observed: Arc<dyn Metrics> = emf.clone();
        let kommo = amojo_chain(kommo, observed.clone());
        // Every event's manager named the same way, where installs keep a directory of them.
        let names = config.manager_directory.then(|| Arc::new(ManagerNames::new(store.clone(), clock.clone())));
        let chat = chat.map(|http| chat_service_chain(http, observed.clone(), names.clone()));
        let retry = config.retry;
        let privacy = config.privacy;
        let register = StatusRegister { records: store.clone(), lanes: store.clone(), timers: timers.clone() };
        let client_typing = ClientTyping {
            leases: store.clone(),
            conversations: store.clone(),
            timers: timers.clone(),
            kommo: kommo.clone(),
            clock: clock.clone(),
        };
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
        let manager_messages = ManagerMessages {
            records: store.clone(),
            conversations: store.clone(),
            leases: store.clone(),
            timers: timers.clone(),
            kommo: kommo.clone(),
            clock: clock.clone(),
        };
        let scopes = Arc::new(ScopeGate::new(store.clone(), clock.clone()));
        // Installs need the integration's secret (Kommo's client secret) and their settings.
        let installs = installs.filter(|_| config.installs.is_some() && config.integration_secret.is_some());
        // The CRM of installed accounts: for client profiles and sources, in queued work.
        let crm_access = installs.as_ref().map(|ports| CrmAccess {
            accounts: store.clone(),
            tokens: AccountTokens {
                rest: kommo_rest_chain(ports.rest.clone(), observed.clone()),
                accounts: store.clone(),
                sealer: ports.sealer.clone(),
                clock: clock.clone(),
            },
            crm: ports.crm.clone(),
        });
        let install_flows = installs.map(|InstallPorts { rest, sealer, .. }| {
            let rest = kommo_rest_chain(rest, observed.clone());
            let tokens = AccountTokens {
                rest: rest.clone(),
                accounts: store.clone(),
                sealer: sealer.clone(),
                clock: clock.clone(),
            };
            let managers = Arc::new(ManagerDirectoryRefresh::new(
                store.clone(),
                store.clone(),
                tokens.clone(),
                rest.clone(),
                timers.clone(),
                clock.clone(),
            ));
            let channel_title =
                config.installs.as_ref().map(|settings| settings.channel_title.clone()).unwrap_or_default();
            let installs = Installs {
                rest,
                kommo: kommo.clone(),
                accounts: store.clone(),
                tokens,
                sealer,
                timers: timers.clone(),
                metrics: observed.clone(),
                clock: clock.clone(),
                channel_title,
                channel_id: config.channel_id.clone(),
                platform: config.platform,
            };
            (installs, managers)
        });
        let install_work = install_flows
            .as_ref()
            .map(|(installs, managers)| InstallWork { installs: installs.clone(), managers: managers.clone() });
        let (installs, managers) = install_flows.unzip();
        let kommo_side = config.integration_secret.clone().map(|integration_secret| KommoSide {
            config: config.clone(),
            scopes: scopes.clone(),
            integration_secret,
            clock: clock.clone(),
            conversations: store.clone(),
            accounts: store.clone(),
            installs,
            managers,
            manager_typing: ManagerTyping {
                leases: store.clone(),
                timers: timers.clone(),
                clock: clock.clone(),
                enabled: privacy.forward_manager_typing,
            },
            manager_messages: manager_messages.clone(),
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
            client_profiles: ClientProfileUpdates {
                accounts: store.clone(),
                timers: timers.clone(),
                clock: clock.clone(),
            },
        });
        let queued = chat.map(|chat| {
            let sources =
                crm_access.clone().map(|access| SourceRegistry { access, known: store.clone(), clock: clock.clone() });
            let profiles = crm_access.map(|access| ClientProfiles {
                access,
                conversations: store.clone(),
                timers: timers.clone(),
                clock: clock.clone(),
                retry,
                metrics: observed.clone(),
            });
            let delivery = ChatDelivery {
                windows: store.clone(),
                leases: store.clone(),
                lanes: store.clone(),
                waits: store.clone(),
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
                accept: manager_messages,
                relay: MessageRelay {
                    records: store.clone(),
                    waits: store.clone(),
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
                    waits: store.clone(),
                    timers: timers.clone(),
                    kommo: kommo.clone(),
                    clock: clock.clone(),
                    retry,
                    metrics: observed.clone(),
                },
                into_kommo: ClientContentToKommo {
                    records: store.clone(),
                    claims: store.clone(),
                    conversations: store,
                    timers: timers.clone(),
                    kommo,
                    clock: clock.clone(),
                    retry,
                    metrics: observed,
                    sources,
                },
                profiles,
                installs: install_work,
                hand_back: timers,
                clock,
                delivery,
            }
        });
        Self { config, kommo_side, chat_side, queued, metrics: emf }
    }
}
