//! What the bridge asks of Kommo's CRM REST API beyond installing (`crate::ports::accounts`):
//! the contact a chat is linked to and its profile, and the integration's sources. The adapter
//! is `crate::adapters::kommo_crm`; every call goes to one account host with that account's
//! access token, which the caller gets from `crate::flows::installs::AccountTokens`.
//!
//! Kommo's shapes, as its API v4 reference gives them:
//! - `GET /api/v4/contacts/chats?chat_id=…`: the chat–contact links of a Chat API chat.
//! - `GET /api/v4/contacts/{id}`, `PATCH /api/v4/contacts/{id}`: a contact, its `name` and its
//!   multitext fields `PHONE` and `EMAIL` (`custom_fields_values`, by `field_code`).
//! - `GET /api/v4/sources`, `POST /api/v4/sources`: the sources this integration created (an
//!   integration sees and manages only its own; `external_id` unique).

use std::time::Duration;

use async_trait::async_trait;

pub use crate::models::crm::{Contact, ContactChange, FieldValue};

/// Why a CRM call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrmError {
    /// The access token was refused (401): refreshed once, then the call is made again.
    #[error("Kommo refused the access token")]
    Unauthorized,
    /// Kommo refused the request (a 4xx other than 401 and 429): sending it again as it is would
    /// not help. `detail` is Kommo's own words, short and on one line.
    #[error("Kommo refused the call with {status}: {detail}")]
    Refused { status: u16, detail: String },
    /// Too many requests (429), a server fault or no answer: worth another attempt later, not
    /// before `retry_after` when Kommo said.
    #[error("Kommo is unavailable: {reason}")]
    Unavailable { reason: String, retry_after: Option<Duration> },
    /// A 2xx the bridge could not read.
    #[error("Kommo answered with an unreadable body: {0}")]
    InvalidResponse(String),
}

/// One of the integration's sources in an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmSource {
    /// Kommo's id of the source.
    pub id: u64,
    pub external_id: String,
    pub name: String,
    pub pipeline_id: Option<u64>,
}

/// Kommo's CRM REST API on one account host, with that account's access token.
#[async_trait]
pub trait KommoCrm: Send + Sync {
    /// The contact a Chat API chat is linked to, if any yet.
    async fn contact_of_chat(&self, host: &str, token: &str, chat_id: &str) -> Result<Option<u64>, CrmError>;
    /// A contact by its id; None when the account has no such contact (any more).
    async fn contact(&self, host: &str, token: &str, contact_id: u64) -> Result<Option<Contact>, CrmError>;
    async fn update_contact(
        &self,
        host: &str,
        token: &str,
        contact_id: u64,
        change: &ContactChange,
    ) -> Result<(), CrmError>;
    /// The sources this integration created in the account.
    async fn sources(&self, host: &str, token: &str) -> Result<Vec<CrmSource>, CrmError>;
    /// Creates a source of this integration (in the account's main pipeline).
    async fn create_source(
        &self,
        host: &str,
        token: &str,
        external_id: &str,
        name: &str,
    ) -> Result<CrmSource, CrmError>;
}
