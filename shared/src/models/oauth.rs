//! Kommo's OAuth 2.0 and REST API, as far as installing the integration needs them: the token
//! endpoint (`POST https://{account host}/oauth2/access_token`), the account
//! (`GET /api/v4/account?with=amojo_id`) and its users (`GET /api/v4/users?with=amojo_id`).
//! Only what the bridge uses is required; the rest is kept.

use serde::{Deserialize, Serialize};

use super::ExtraFields;

/// The token endpoint's request: an authorization code exchanged, or a refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRequest {
    pub client_id: String,
    pub client_secret: String,
    /// `authorization_code` or `refresh_token`.
    pub grant_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub redirect_uri: String,
}

/// The token endpoint's answer. Kommo rotates refresh tokens: each refresh answers a new one,
/// and "the old refresh token will still be functional until you use the new one".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds the access token lives (86400 as documented).
    pub expires_in: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
}

/// `GET /api/v4/account?with=amojo_id`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KommoAccount {
    /// The numeric account id (what the Kommo UI's tokens name).
    pub id: u64,
    #[serde(default)]
    pub subdomain: Option<String>,
    /// The account's id in the Chat API: what `connect` takes and webhooks name.
    pub amojo_id: String,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// One page of `GET /api/v4/users?with=amojo_id`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct KommoUsersPage {
    #[serde(default, rename = "_embedded")]
    pub embedded: KommoUsersEmbedded,
    #[serde(default, rename = "_page_count")]
    pub page_count: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct KommoUsersEmbedded {
    #[serde(default)]
    pub users: Vec<KommoUser>,
}

/// A Kommo user (a manager): the numeric id the Kommo UI's tokens carry, and the Chat API id
/// (`amojo_id`) Kommo's chat webhooks name them by.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KommoUser {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub amojo_id: Option<String>,
}
