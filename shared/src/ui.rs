//! The Kommo UI widget's routes (`/kommo/ui/...`) and the chat service's presence pull.
//!
//! The widget calls through Kommo's `$authorizedAjax`, which adds `X-Auth-Token`, a one-time
//! JWT signed with the integration's secret: it proves the Kommo account and user. The account
//! maps to a scope through `KOMMO_ACCOUNTS`; a conversation may be named by the integration's
//! id or by Kommo's chat id (what the widget sees). Browsers call from the account's Kommo
//! domain, so these routes answer CORS for the allowed origins, errors included.

use http::{HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use crate::app::Bridge;
use crate::http::{ApiError, HttpRequest, HttpResponse, header_str, json_response, parse_json};
use crate::models::chat::BridgeEvent;
use crate::routes::RouteId;
use crate::signing::one_time_token;
use crate::timers::DueWork;
use crate::typing::store_fault;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_S: &str = "600";

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

impl Bridge {
    /// A `/kommo/ui/conversations/{conversation}/…` request, CORS answered on every outcome.
    pub(crate) async fn kommo_ui(&self, route: RouteId, conversation: &str, request: &HttpRequest) -> HttpResponse {
        let origin = header_str(request, "origin").filter(|origin| self.config.ui_origin_allowed(origin));
        if request.method() == Method::OPTIONS {
            return preflight(origin);
        }
        let mut response = match self.kommo_ui_call(route, conversation, request).await {
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

    async fn kommo_ui_call(
        &self,
        route: RouteId,
        conversation: &str,
        request: &HttpRequest,
    ) -> Result<HttpResponse, ApiError> {
        let now_s = self.clock.now_s();
        let claims =
            one_time_token::verify(self.config.integration_secret.expose(), header_str(request, "x-auth-token"), now_s)
                .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", e.to_string()))?;
        let scope_id = self.config.scope_of_account(&claims.account_id).ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "account_not_linked",
                "this Kommo account is not served by this bridge",
            )
        })?;
        let known = self.store.find_conversation(&scope_id, conversation).await.map_err(store_fault)?;
        let conversation_id = known.as_ref().map_or(conversation, |c| c.conversation_id.as_str());
        match (route, request.method().clone()) {
            (RouteId::UiPresence, Method::GET) => {
                let client = known.as_ref().and_then(|c| c.client_user_id.as_deref());
                let (view, typing) = self.client_presence(&scope_id, conversation_id, client).await?;
                let last_seen_at = view.last_seen_at_ms.map(|ms| ms.div_euclid(1000));
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"client": {"online": view.online, "last_seen_at": last_seen_at, "typing": typing}}),
                ))
            }
            (RouteId::UiPresence, _) => {
                let body: PresenceBody = parse_json(request.body())?;
                match body.state {
                    ManagerState::Viewing => {
                        self.on_manager_viewing(&scope_id, conversation_id, &claims.user_id).await?
                    }
                    ManagerState::Left => self.on_manager_left(&scope_id, conversation_id, &claims.user_id).await?,
                }
                Ok(json_response(StatusCode::OK, &json!({"ok": true})))
            }
            _ => {
                let read = self.on_conversation_opened(&scope_id, conversation_id).await?;
                Ok(json_response(StatusCode::OK, &json!({"read": read})))
            }
        }
    }

    /// A manager opened the conversation: one `message.read` naming the newest client message
    /// not yet reported read, recorded so it is never sent again. Returns its msgid.
    async fn on_conversation_opened(&self, scope_id: &str, conversation_id: &str) -> Result<Option<String>, ApiError> {
        if !self.config.privacy.forward_read_receipts {
            return Ok(None);
        }
        let Some((sent_at_ms, msgid)) =
            self.store.newest_incoming(scope_id, conversation_id).await.map_err(store_fault)?
        else {
            return Ok(None);
        };
        if !self.store.advance_read_mark(scope_id, conversation_id, sent_at_ms, &msgid).await.map_err(store_fault)? {
            return Ok(None);
        }
        let read = BridgeEvent::MessageRead {
            scope_id: scope_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            msgid: msgid.clone(),
            read_at: self.clock.now_s(),
        };
        self.timers.schedule(DueWork::deliver(read), self.clock.now_ms()).await.map_err(|error| {
            tracing::error!(scope_id, %error, "message.read not queued");
            ApiError::internal()
        })?;
        Ok(Some(msgid))
    }

    /// `GET /chat/presence?scope_id=…&conversation_id=…`, signed like the chat service's events
    /// (over an empty body): the managers online in that conversation.
    pub(crate) async fn chat_presence(&self, request: &HttpRequest) -> Result<HttpResponse, ApiError> {
        self.verify_chat_signature(request)?;
        let query = request.uri().query().unwrap_or_default();
        let param = |name: &str| {
            query_param(query, name).filter(|v| !v.is_empty()).ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("the {name} query parameter is required"))
            })
        };
        let (scope_id, conversation_id) = (param("scope_id")?, param("conversation_id")?);
        if self.config.account_of_scope(&scope_id).is_none() {
            return Err(ApiError::unknown_scope());
        }
        let managers: Vec<_> = self
            .managers_online(&scope_id, &conversation_id)
            .await?
            .into_iter()
            .map(|(id, last_seen_ms)| json!({"id": id, "last_seen_at": last_seen_ms.div_euclid(1000)}))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({"scope_id": scope_id, "conversation_id": conversation_id, "managers": managers}),
        ))
    }
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

/// One query parameter, percent-decoded (`+` as a space).
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_and_decoded() {
        let query = "scope_id=chan_acc%2D1&conversation_id=conv+1&x=%zz";
        assert_eq!(query_param(query, "scope_id").as_deref(), Some("chan_acc-1"));
        assert_eq!(query_param(query, "conversation_id").as_deref(), Some("conv 1"));
        assert_eq!(query_param(query, "x").as_deref(), Some("%zz"));
        assert_eq!(query_param(query, "missing"), None);
        assert_eq!(percent_decode("100%"), "100%");
    }
}
