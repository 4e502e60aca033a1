//! Everything that arrives from Kommo (the `kommo-webhook` function): the chat webhooks,
//! verified over the raw body, and the Kommo UI widget's calls (`/kommo/ui/...`).
//!
//! The widget calls through Kommo's `$authorizedAjax`, which adds `X-Auth-Token`, a one-time
//! JWT signed with the integration's secret: it proves the Kommo account and user. The account
//! maps to a scope through `KOMMO_ACCOUNTS`; a conversation may be named by the integration's
//! id or by Kommo's chat id (what the widget sees). Browsers call from the account's Kommo
//! domain, so these routes answer CORS for the allowed origins, errors included.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use super::config::Config;
use super::http::{ApiError, HttpRequest, HttpResponse, header_str, json_response, parse_json};
use super::metrics::EventKind;
use super::routes::RouteId;
use super::scopes::ScopeGate;
use crate::flows::FlowError;
use crate::flows::client_presence::ClientPresence;
use crate::flows::installs::{InstallError, Installed, Installs};
use crate::flows::manager_messages::ManagerMessages;
use crate::flows::manager_presence::ManagerPresence;
use crate::flows::manager_typing::ManagerTyping;
use crate::flows::managers::{ManagerDirectoryRefresh, NamedBy};
use crate::flows::reactions::ManagerReactions;
use crate::flows::read_receipts::ReadReceipts;
use crate::models::kommo::{KommoWebhook, WebhookKind};
use crate::ports::store::{AccountRegistry, AccountState, Conversations};
use crate::rules::id_checks::{check_id, for_log};
use crate::rules::install::{check_install_state, check_redirect_client};
use crate::rules::validation::check_webhook_ids;
use crate::signing::{Secret, disable_hook, kommo_webhook, one_time_token};
use crate::time::Clock;

/// What a manager's message webhook may spend on the store before it hands the message to the
/// queue instead (`ManagerMessages::accept_later`): with the scope check's and the queue's
/// budgets, and a 903 report's, it is answered within the function's 4 s timeout and Kommo's 5 s.
const SCOPE_CHECK_BUDGET: Duration = Duration::from_millis(500);
const ACCEPT_BUDGET: Duration = Duration::from_millis(1500);

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_S: &str = "600";

pub struct KommoSide {
    pub config: Arc<Config>,
    /// Refuses the scopes of accounts that disabled the integration.
    pub scopes: Arc<ScopeGate>,
    /// Signs the widget's one-time tokens.
    pub integration_secret: Secret,
    pub clock: Arc<dyn Clock>,
    pub conversations: Arc<dyn Conversations>,
    /// The accounts installed through Kommo's OAuth: the Kommo UI's account → scope where
    /// `KOMMO_ACCOUNTS` does not name it.
    pub accounts: Arc<dyn AccountRegistry>,
    /// Installs through Kommo's OAuth, when configured (`super::wiring::InstallPorts`).
    pub installs: Option<Installs>,
    /// The installed accounts' managers, read from Kommo when one is named that it does not
    /// know (with installs).
    pub managers: Option<Arc<ManagerDirectoryRefresh>>,
    pub manager_typing: ManagerTyping,
    pub manager_messages: ManagerMessages,
    pub manager_reactions: ManagerReactions,
    pub manager_presence: ManagerPresence,
    pub client_presence: ClientPresence,
    pub read_receipts: ReadReceipts,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ManagerState {
    Viewing,
    Left,
}

#[derive(Deserialize)]
struct PresenceBody {
    state: ManagerState,
}

impl KommoSide {
    /// `POST /kommo/webhook/{scope_id}`: verified over the raw body, then parsed. Kommo sends
    /// each webhook once and wants exactly 200 within 5 s.
    pub async fn webhook(
        &self,
        scope_id: &str,
        request: &HttpRequest,
        kind: &mut EventKind,
    ) -> Result<HttpResponse, ApiError> {
        let span = tracing::Span::current();
        span.record("scope_id", for_log(scope_id));
        let account_id = self.config.account_of_scope(scope_id)?;
        kommo_webhook::verify(self.config.channel_secret.expose(), request.body(), header_str(request, "x-signature"))
            .map_err(|e| ApiError::bad_signature(e.to_string()))?;
        let webhook: KommoWebhook = parse_json(request.body())?;
        if webhook.account_id != account_id {
            return Err(ApiError::bad_request("scope_mismatch", "account_id does not match the scope_id in the path"));
        }
        check_webhook_ids(&webhook)?;
        self.scopes.check_in_time(scope_id, SCOPE_CHECK_BUDGET).await?;
        let mut signal = false;
        match webhook.kind() {
            WebhookKind::ManagerTyping(typing) => {
                kind.name_as("manager_typing");
                signal = true;
                span.record("conversation_id", for_log(typing.conversation.integration_id()));
                self.learn_manager(scope_id, NamedBy::Amojo(&typing.user.id)).await;
                self.manager_typing.on_webhook(scope_id, typing).await?
            }
            WebhookKind::ManagerMessage(message) => {
                kind.name_as("manager_message");
                span.record("conversation_id", for_log(message.conversation.integration_id()));
                if let Some(msgid) = message.message.id.as_deref() {
                    span.record("msgid", for_log(msgid));
                }
                // Measured before anything is read or written for it: a message too large to
                // queue is refused (413), and Kommo told at once (905), since it never sends the
                // webhook again.
                if let Err(too_large) = self.manager_messages.queueable(scope_id, message) {
                    return Err(self.manager_messages.refuse_too_large(scope_id, message, too_large).await.into());
                }
                // Recorded within a budget, else queued whole (or reported failed): Kommo never
                // sends this webhook again, so a store that stalls must not lose it.
                let recorded = tokio::time::timeout(ACCEPT_BUDGET, async {
                    self.learn_manager(scope_id, NamedBy::Amojo(&message.sender.id)).await;
                    self.manager_messages.on_webhook(scope_id, message).await
                });
                match recorded.await {
                    Ok(Ok(())) => {}
                    Ok(Err(FlowError::Rejected(rejection))) => return Err(rejection.into()),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "manager message not recorded; queued whole");
                        self.manager_messages.accept_later(scope_id, message).await?
                    }
                    Err(_) => {
                        tracing::warn!("manager message not recorded within its budget; queued whole");
                        self.manager_messages.accept_later(scope_id, message).await?
                    }
                }
            }
            WebhookKind::Reaction(reaction) => {
                kind.name_as("reaction");
                if let Some(conversation) = &reaction.conversation {
                    span.record("conversation_id", for_log(conversation.integration_id()));
                }
                if let Some(user_id) = reaction.user.as_ref().and_then(|user| user.id.as_deref()) {
                    self.learn_manager(scope_id, NamedBy::Amojo(user_id)).await;
                }
                self.manager_reactions.on_webhook(scope_id, reaction).await?
            }
            WebhookKind::Other => {
                kind.name_as("other");
            }
        }
        // A typing refresh comes every 5 s while a manager types: counted by the Events metric,
        // logged only at debug (each INFO line is about 400 bytes of CloudWatch Logs).
        if signal {
            tracing::debug!("kommo webhook accepted");
        } else {
            tracing::info!("kommo webhook accepted");
        }
        Ok(json_response(StatusCode::OK, &json!({})))
    }

    /// A `/kommo/ui/conversations/{conversation}/…` request, CORS answered on every outcome.
    pub async fn ui(
        &self,
        route: RouteId,
        conversation: &str,
        request: &HttpRequest,
        kind: &mut EventKind,
    ) -> HttpResponse {
        let origin = header_str(request, "origin").filter(|origin| self.config.ui_origin_allowed(origin));
        if request.method() == Method::OPTIONS {
            return preflight(origin);
        }
        let mut response = match self.ui_call(route, conversation, request, kind).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        response
    }

    async fn ui_call(
        &self,
        route: RouteId,
        conversation: &str,
        request: &HttpRequest,
        kind: &mut EventKind,
    ) -> Result<HttpResponse, ApiError> {
        let now_s = self.clock.now_s();
        let claims =
            one_time_token::verify(self.integration_secret.expose(), header_str(request, "x-auth-token"), now_s)
                .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", e.to_string()))?;
        check_id("conversation_id", conversation).map_err(ApiError::invalid_id)?;
        check_id("user_id", &claims.user_id).map_err(ApiError::invalid_id)?;
        let issuer = self.check_claims(&claims)?;
        let scope_id = match self.config.scope_of_account(&claims.account_id) {
            Some(scope_id) => scope_id,
            None => self.installed_scope(&claims.account_id, issuer).await?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "account_not_linked",
                    "this Kommo account is not served by this bridge",
                )
            })?,
        };
        // An account in KOMMO_ACCOUNTS that was installed, then disabled, is refused too.
        self.scopes.check(&scope_id).await?;
        let known = self
            .conversations
            .find_conversation(&scope_id, conversation)
            .await
            .map_err(crate::flows::FlowError::from)?;
        let conversation_id = known.as_ref().map_or(conversation, |c| c.conversation_id.as_str());
        let span = tracing::Span::current();
        span.record("scope_id", for_log(scope_id.as_str()));
        span.record("conversation_id", for_log(conversation_id));
        match (route, request.method().clone()) {
            (RouteId::UiPresence, Method::GET) => {
                kind.name_as("ui_client_presence");
                let client = known.as_ref().and_then(|c| c.client_user_id.as_deref());
                let (view, typing) = self.client_presence.view(&scope_id, conversation_id, client).await?;
                let last_seen_at = view.last_seen_at_ms.map(|ms| ms.div_euclid(1000));
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"client": {"online": view.online, "last_seen_at": last_seen_at, "typing": typing}}),
                ))
            }
            (RouteId::UiPresence, _) => {
                let body: PresenceBody = parse_json(request.body())?;
                let manager = &claims.user_id;
                if let Ok(user_id) = manager.parse::<u64>() {
                    self.learn_manager(&scope_id, NamedBy::KommoUser(user_id)).await;
                }
                match body.state {
                    ManagerState::Viewing => {
                        kind.name_as("ui_viewing");
                        self.manager_presence.on_viewing(&scope_id, conversation_id, manager).await?
                    }
                    ManagerState::Left => {
                        kind.name_as("ui_left");
                        self.manager_presence.on_left(&scope_id, conversation_id, manager).await?
                    }
                }
                Ok(json_response(StatusCode::OK, &json!({"ok": true})))
            }
            _ => {
                kind.name_as("ui_read");
                let read = self.read_receipts.on_opened(&scope_id, conversation_id).await?;
                Ok(json_response(StatusCode::OK, &json!({"read": read})))
            }
        }
    }
}

impl KommoSide {
    /// A manager was named: with installs, the directory learns them if it does not know them
    /// yet (see `crate::flows::managers`), so that the events sent for them name them fully.
    async fn learn_manager(&self, scope_id: &str, named: NamedBy<'_>) {
        if let Some(managers) = &self.managers {
            managers.on_named(scope_id, named).await;
        }
    }

    /// The claims Kommo's one-time tokens carry beyond the signature, checked (401 otherwise):
    /// `iss` is the account's Kommo address, one of the origins the Kommo UI may call from
    /// (`KOMMO_UI_ORIGINS`); with installs configured, `aud` is the origin of the Redirect URI and
    /// `client_uuid`, when the token has it, is `KOMMO_CLIENT_ID`. Returns the issuer's host.
    fn check_claims<'c>(&self, claims: &'c one_time_token::OneTimeClaims) -> Result<&'c str, ApiError> {
        let refused = |why: String| ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", why);
        let issuer = claims.iss.as_deref().unwrap_or_default().trim_end_matches('/');
        if !self.config.ui_origin_allowed(issuer) {
            return Err(refused("the token's iss is not a Kommo account address this bridge serves".into()));
        }
        if let Some(settings) = &self.config.installs {
            let origin_of = |url: &str| {
                let (scheme, rest) = url.split_once("://").unwrap_or_default();
                format!("{scheme}://{}", rest.split(['/', '?', '#']).next().unwrap_or_default())
            };
            let audience = claims.aud.as_deref().unwrap_or_default();
            if audience.is_empty() || origin_of(audience) != origin_of(&settings.redirect_uri) {
                return Err(refused("the token's aud is not this integration's Redirect URI".into()));
            }
            if claims.client_uuid.as_deref().is_some_and(|client| client != settings.client_id) {
                return Err(refused("the token was issued to another integration (client_uuid)".into()));
            }
        }
        Ok(issuer.split_once("://").map_or(issuer, |(_, host)| host))
    }

    /// The scope of an account installed through Kommo's OAuth and not disconnected since,
    /// when `issuer` (the token's) is that account's host.
    async fn installed_scope(&self, account_id: &str, issuer: &str) -> Result<Option<String>, ApiError> {
        let Ok(numeric) = account_id.parse::<u64>() else { return Ok(None) };
        let account = self.accounts.get_account(numeric).await.map_err(crate::flows::FlowError::from)?;
        let Some(account) = account.filter(|account| account.state != AccountState::Disconnected) else {
            return Ok(None);
        };
        if !account.host.is_empty() && account.host != issuer {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "the token's iss is not the address of the account it names",
            ));
        }
        Ok(Some(account.scope_id))
    }

    /// `GET /kommo/oauth/callback?code=…&referer=…[&state=…][&client_id=…]`: the integration's
    /// Redirect URI. Kommo sends the installing admin here (or, for a widget, calls it itself,
    /// once, waiting about 3 s): the account is installed and its channel connected, or, once
    /// the code is spent, kept `connecting` and connected by queued work; a small page says
    /// which, or what went wrong. Before any call: a declined install (`error=access_denied`)
    /// has its own page, a `client_id` that is not `KOMMO_CLIENT_ID` and a `state` that is not
    /// this integration's (`crate::rules::install::check_install_state`) are refused.
    pub async fn oauth_callback(&self, request: &HttpRequest, kind: &mut EventKind) -> HttpResponse {
        let span = tracing::Span::current();
        kind.name_as("oauth_callback");
        let (Some(installs), Some(settings)) = (&self.installs, &self.config.installs) else {
            return ApiError::not_found("installs_not_configured", "installs through Kommo are not configured here")
                .into_response();
        };
        let query = request.uri().query().unwrap_or_default();
        let given = |name: &str| super::http::query_param(query, name);
        let param = |name: &str| given(name).unwrap_or_default();
        if let Some(error) = given("error").filter(|error| !error.is_empty()) {
            let declined = error == "access_denied";
            tracing::info!(declined, "the installation was not authorised in Kommo");
            let message = match declined {
                true => "Access was declined in Kommo, so nothing was installed. To connect the chat channel, install the integration again and allow access.".to_owned(),
                false => "Kommo did not authorise the installation, so nothing was installed. Install the integration again from Kommo.".to_owned(),
            };
            return install_page(StatusCode::OK, "Not installed", &message);
        }
        let checked = check_redirect_client(&settings.client_id, given("client_id").as_deref())
            .and_then(|()| check_install_state(self.integration_secret.expose(), given("state").as_deref()));
        let outcome = match checked {
            Ok(()) => installs.install(&param("code"), &param("referer")).await,
            Err(rejection) => Err(InstallError::Rejected(rejection)),
        };
        match outcome {
            Ok(Installed::Connected(account)) => {
                span.record("scope_id", for_log(account.scope_id.as_str()));
                self.scopes.remember(&account.scope_id, false);
                let message = format!("The chat channel is connected to {}. You can close this page.", account.host);
                install_page(StatusCode::OK, "Installed", &message)
            }
            Ok(Installed::Connecting { host }) => {
                let message = format!(
                    "The integration is installed in {host}; its chat channel is being connected and will be within minutes. You can close this page."
                );
                install_page(StatusCode::OK, "Installed", &message)
            }
            Err(InstallError::Rejected(rejection)) => install_page(
                StatusCode::BAD_REQUEST,
                "Not installed",
                &format!("This is not a Kommo installation: {rejection}."),
            ),
            Err(InstallError::Refused(reason)) => install_page(
                StatusCode::FORBIDDEN,
                "Not installed",
                &format!("Kommo refused the installation ({reason}). Install the integration again from Kommo."),
            ),
            Err(InstallError::Unavailable(reason)) => {
                tracing::error!(reason = %reason.escape_debug(), "install not completed");
                install_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Not installed yet",
                    "Kommo or the bridge could not be reached. Nothing was saved: install the integration again from Kommo in a minute.",
                )
            }
        }
    }
}

impl KommoSide {
    /// `GET /kommo/oauth/disabled?account_id=…&client_uuid=…&signature=…`: Kommo's disable hook,
    /// called when access to the integration is revoked (which also disconnects the channel).
    /// Verified as Kommo signs it (a forged call is 401 and changes nothing). Kommo's documents
    /// do not say whether one user's revoked access fires it too, so the account is disconnected
    /// (tokens deleted, channel disconnected, its scope refused on every route until it is
    /// installed again) only once Kommo confirms its tokens stopped working; until then it stays
    /// as it was and the answer says so (`Installs::disable`).
    pub async fn oauth_disabled(&self, request: &HttpRequest, kind: &mut EventKind) -> Result<HttpResponse, ApiError> {
        let span = tracing::Span::current();
        kind.name_as("oauth_disabled");
        let (Some(installs), Some(settings)) = (&self.installs, &self.config.installs) else {
            return Err(ApiError::not_found(
                "installs_not_configured",
                "installs through Kommo are not configured here",
            ));
        };
        let query = request.uri().query().unwrap_or_default();
        let param = |name: &str| {
            super::http::query_param(query, name).filter(|value| !value.is_empty()).ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("the {name} query parameter is required"))
            })
        };
        let (account, client_uuid) = (param("account_id")?, param("client_uuid")?);
        let signature = super::http::query_param(query, "signature");
        disable_hook::verify(
            self.integration_secret.expose(),
            &settings.client_id,
            &client_uuid,
            &account,
            signature.as_deref(),
        )
        .map_err(|e| ApiError::bad_signature(e.to_string()))?;
        let account_id = account
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request("invalid_query", "account_id must be Kommo's numeric account id"))?;
        let Some(account) = installs.disable(account_id).await? else {
            return Err(ApiError::not_found("unknown_account", "this Kommo account is not installed here"));
        };
        span.record("scope_id", for_log(account.scope_id.as_str()));
        self.scopes.remember(&account.scope_id, account.state == AccountState::Disconnected);
        Ok(json_response(StatusCode::OK, &json!({"account_id": account_id, "state": account.state.as_str()})))
    }
}

/// The page the person installing sees: plain HTML, the text escaped, nothing to load.
fn install_page(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{message}</p></body></html>\n",
        title = escape(title),
        message = escape(message),
    );
    let mut response = HttpResponse::new(bytes::Bytes::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'"));
    response
}

fn preflight(origin: Option<&str>) -> HttpResponse {
    let Some(origin) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return ApiError::new(StatusCode::FORBIDDEN, "origin_not_allowed", "this origin may not call the bridge")
            .into_response();
    };
    let mut response = HttpResponse::default();
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("X-Auth-Token, Content-Type"));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE_S));
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_install_page_escapes_what_it_shows() {
        let page =
            install_page(StatusCode::FORBIDDEN, "Not <installed>", "Kommo said: <script>alert('x')</script> & \"q\"");
        let body = std::str::from_utf8(page.body()).unwrap();
        assert!(!body.contains("<script>") && !body.contains("<installed>"), "{body}");
        assert!(body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"), "{body}");
        assert_eq!(page.status(), StatusCode::FORBIDDEN);
        assert_eq!(page.headers()[header::CONTENT_SECURITY_POLICY], "default-src 'none'");
    }
}
