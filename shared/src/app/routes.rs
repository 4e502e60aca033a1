//! The route table: every HTTP route of the bridge, which entry point serves it, and a matcher.
//! `docs/openapi.yaml` names exactly these routes (a test holds the two together).

use http::Method;

use super::http::ApiError;

/// The entry points that serve HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// The `kommo-webhook` Lambda: everything that arrives from Kommo.
    KommoWebhook,
    /// The `chat-callback` Lambda: everything that arrives from the chat service.
    ChatCallback,
    /// Only the local dev server (health, the built-in sink).
    DevServer,
}

impl EntryPoint {
    /// The function's name, as metrics and logs give it.
    pub fn function_name(self) -> &'static str {
        match self {
            Self::KommoWebhook => "kommo-webhook",
            Self::ChatCallback => "chat-callback",
            Self::DevServer => "dev-server",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    KommoWebhook,
    OAuthCallback,
    OAuthDisabled,
    UiPresence,
    UiRead,
    ChatEvents,
    ChatPresence,
    Healthz,
    SinkAmojo,
    SinkChat,
}

impl RouteId {
    /// The kind of an event on this route until its handler names it more precisely (what a
    /// request refused before it is read counts as, in the `Events` metric).
    pub fn event_kind(self) -> &'static str {
        match self {
            Self::KommoWebhook => "kommo_webhook",
            Self::OAuthCallback => "oauth_callback",
            Self::OAuthDisabled => "oauth_disabled",
            Self::UiPresence => "ui_presence",
            Self::UiRead => "ui_read",
            Self::ChatEvents => "chat_event",
            Self::ChatPresence => "presence_pull",
            Self::Healthz | Self::SinkAmojo | Self::SinkChat => "dev_server",
        }
    }
}

#[derive(Debug)]
pub struct RouteDef {
    pub method: Method,
    /// Path with `{name}` parameters; a last `{path}` takes the rest of the path, slashes included.
    pub template: &'static str,
    pub id: RouteId,
    pub served_by: EntryPoint,
}

const UI_PRESENCE: &str = "/kommo/ui/conversations/{conversation_id}/presence";
const UI_READ: &str = "/kommo/ui/conversations/{conversation_id}/read";

pub static ROUTES: [RouteDef; 14] = [
    route(Method::POST, "/kommo/webhook/{scope_id}", RouteId::KommoWebhook, EntryPoint::KommoWebhook),
    route(Method::GET, "/kommo/oauth/callback", RouteId::OAuthCallback, EntryPoint::KommoWebhook),
    route(Method::GET, "/kommo/oauth/disabled", RouteId::OAuthDisabled, EntryPoint::KommoWebhook),
    route(Method::GET, UI_PRESENCE, RouteId::UiPresence, EntryPoint::KommoWebhook),
    route(Method::POST, UI_PRESENCE, RouteId::UiPresence, EntryPoint::KommoWebhook),
    route(Method::OPTIONS, UI_PRESENCE, RouteId::UiPresence, EntryPoint::KommoWebhook),
    route(Method::POST, UI_READ, RouteId::UiRead, EntryPoint::KommoWebhook),
    route(Method::OPTIONS, UI_READ, RouteId::UiRead, EntryPoint::KommoWebhook),
    route(Method::POST, "/chat/events", RouteId::ChatEvents, EntryPoint::ChatCallback),
    route(Method::GET, "/chat/presence", RouteId::ChatPresence, EntryPoint::ChatCallback),
    route(Method::GET, "/healthz", RouteId::Healthz, EntryPoint::DevServer),
    route(Method::POST, "/_sink/amojo/{path}", RouteId::SinkAmojo, EntryPoint::DevServer),
    route(Method::DELETE, "/_sink/amojo/{path}", RouteId::SinkAmojo, EntryPoint::DevServer),
    route(Method::POST, "/_sink/chat", RouteId::SinkChat, EntryPoint::DevServer),
];

const fn route(method: Method, template: &'static str, id: RouteId, served_by: EntryPoint) -> RouteDef {
    RouteDef { method, template, id, served_by }
}

/// A matched route and its path parameters, in template order.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'a> {
    pub id: RouteId,
    pub template: &'static str,
    pub served_by: EntryPoint,
    pub params: Vec<&'a str>,
}

/// Finds the route for `method` and `path`: 404 for an unknown path, 405 for a known path
/// with another method.
pub fn find<'a>(method: &Method, path: &'a str) -> Result<Matched<'a>, ApiError> {
    let mut path_known = false;
    for route in &ROUTES {
        if let Some(params) = match_template(route.template, path) {
            if route.method == *method {
                return Ok(Matched { id: route.id, template: route.template, served_by: route.served_by, params });
            }
            path_known = true;
        }
    }
    Err(if path_known {
        ApiError::new(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    } else {
        ApiError::not_found("no_route", format!("no route for {path}"))
    })
}

fn match_template<'a>(template: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let mut params = Vec::new();
    let mut rest = path.strip_prefix('/')?;
    let mut segments = template.trim_start_matches('/').split('/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        if segment == "{path}" && is_last {
            if rest.is_empty() {
                return None;
            }
            params.push(rest);
            return Some(params);
        }
        let (head, tail) = rest.split_once('/').map_or((rest, None), |(h, t)| (h, Some(t)));
        if segment.starts_with('{') {
            if head.is_empty() {
                return None;
            }
            params.push(head);
        } else if segment != head {
            return None;
        }
        match (tail, is_last) {
            (None, true) => return Some(params),
            (Some(t), false) => rest = t,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_parameters_and_the_rest_of_a_path() {
        let m = find(&Method::POST, "/kommo/webhook/chan_acc").unwrap();
        assert_eq!((m.id, m.params), (RouteId::KommoWebhook, vec!["chan_acc"]));
        let m = find(&Method::POST, "/_sink/amojo/v2/origin/custom/chan_acc/typing").unwrap();
        assert_eq!(m.params, vec!["v2/origin/custom/chan_acc/typing"]);
        assert_eq!(find(&Method::GET, "/healthz").unwrap().id, RouteId::Healthz);
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert_eq!(find(&Method::GET, "/nowhere").unwrap_err().status, 404);
        assert_eq!(find(&Method::POST, "/kommo/webhook/").unwrap_err().status, 404);
        assert_eq!(find(&Method::POST, "/kommo/webhook/a/b").unwrap_err().status, 404);
        assert_eq!(find(&Method::GET, "/chat/events").unwrap_err().status, 405);
        assert_eq!(find(&Method::POST, "/chat/events/").unwrap_err().status, 404);
    }
}
