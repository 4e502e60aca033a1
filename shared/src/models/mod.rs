//! Typed wire models: what Kommo sends and accepts ([`kommo`]) and the chat-service
//! contract ([`chat`]), Kommo's OAuth and REST API for installs ([`oauth`]) and its CRM's contacts ([`crm`]).

pub mod chat;
pub mod crm;
pub mod kommo;
pub mod oauth;
pub mod status;

/// Fields a model does not name, kept so that nothing Kommo or the chat service adds is lost
/// when the bridge relays a payload.
pub type ExtraFields = serde_json::Map<String, serde_json::Value>;
