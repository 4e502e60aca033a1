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
pub mod wiring;

pub use self::wiring::{InstallPorts, Ports};

use std::sync::Arc;

use tracing::Instrument;

use self::chat_side::ChatSide;
use self::config::Config;
use self::http::{ApiError, HttpRequest, HttpResponse, MAX_BODY_BYTES};
use self::kommo_side::KommoSide;
use self::metrics::{EmfMetrics, EventKind};
use self::routes::{EntryPoint, RouteId};
use crate::queued::Dispatcher;

/// The sides a bridge serves, each there only when its function's configuration is: a Lambda
/// function is wired with its own side alone, the dev server and the simulations with all.
/// Built by [`wiring`] from the function's configuration and ports.
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
            let mut kind = EventKind::unrouted();
            let response = match self.route(entry, &request, &mut kind).await {
                Ok(response) => response,
                Err(error) => {
                    if error.status.is_server_error() {
                        tracing::error!(code = error.code, "request failed");
                    }
                    error.into_response()
                }
            };
            let now_ms = self.metrics.now_ms();
            self.metrics.write(metrics::event(&kind, response.status(), now_ms));
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

    /// Routes `request` to the side that serves it; `kind` ends naming the event as precisely as
    /// the side could read it, whatever the answer.
    async fn route(
        &self,
        entry: EntryPoint,
        request: &HttpRequest,
        kind: &mut EventKind,
    ) -> Result<HttpResponse, ApiError> {
        let path = request.uri().path();
        let matched = routes::find(request.method(), path)?;
        if matched.served_by != entry {
            return Err(ApiError::not_found("no_route", format!("no route for {path}")));
        }
        tracing::Span::current().record("route", matched.template);
        kind.name_as(matched.id.event_kind());
        if request.body().len() > MAX_BODY_BYTES {
            return Err(ApiError::payload_too_large());
        }
        let not_served = || ApiError::not_found("no_route", format!("no route for {path} in this function"));
        match matched.id {
            RouteId::KommoWebhook => {
                self.kommo_side.as_ref().ok_or_else(not_served)?.webhook(matched.params[0], request, kind).await
            }
            RouteId::OAuthCallback => {
                Ok(self.kommo_side.as_ref().ok_or_else(not_served)?.oauth_callback(request, kind).await)
            }
            RouteId::OAuthDisabled => {
                self.kommo_side.as_ref().ok_or_else(not_served)?.oauth_disabled(request, kind).await
            }
            RouteId::ChatEvents => self.chat_side.as_ref().ok_or_else(not_served)?.event(request, kind).await,
            RouteId::ChatPresence => self.chat_side.as_ref().ok_or_else(not_served)?.presence_pull(request, kind).await,
            RouteId::UiPresence | RouteId::UiRead => Ok(self
                .kommo_side
                .as_ref()
                .ok_or_else(not_served)?
                .ui(matched.id, matched.params[0], request, kind)
                .await),
            RouteId::Healthz | RouteId::SinkAmojo | RouteId::SinkChat => {
                Err(ApiError::not_found("no_route", format!("no route for {path}")))
            }
        }
    }

    /// The dispatcher of due work, where this bridge runs it (see [`Ports::chat`]).
    pub fn dispatcher(&self) -> Option<&Dispatcher> {
        self.queued.as_ref()
    }
}
