//! What the bridge asks of Kommo's Chat API (amojo): connect, create chat, import message,
//! edit, react, typing, delivery status (the adapter is `crate::adapters::amojo`, or a fake in tests).

use std::time::Duration;

use async_trait::async_trait;

use crate::models::kommo::{
    ConnectRequest, ConnectResponse, CreateChatRequest, CreateChatResponse, DeliveryStatusRequest, DisconnectRequest,
    EditMessageRequest, ImportMessageRequest, ImportMessageResponse, ReactRequest, TypingRequest,
};

/// Why an amojo call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KommoError {
    /// amojo refused the request (a 4xx other than 429): retrying would not help.
    #[error("amojo refused the call with {status}: {error_type} {description}")]
    Rejected { status: u16, error_type: String, description: String },
    /// amojo could not be reached or kept failing (429, 5xx, timeouts) until the retries ran out;
    /// `retry_after` when amojo asked for a longer pause than is waited out in process.
    #[error("amojo unavailable after {attempts} attempts: {reason}")]
    Unavailable { attempts: u32, status: Option<u16>, reason: String, retry_after: Option<Duration> },
    /// amojo answered 2xx with a body the bridge cannot read.
    #[error("amojo answered with an unreadable body: {0}")]
    InvalidResponse(String),
}

/// What the bridge asks of Kommo.
#[async_trait]
pub trait KommoApi: Send + Sync {
    async fn connect(&self, request: &ConnectRequest) -> Result<ConnectResponse, KommoError>;
    async fn disconnect(&self, request: &DisconnectRequest) -> Result<(), KommoError>;
    async fn create_chat(&self, scope_id: &str, request: &CreateChatRequest) -> Result<CreateChatResponse, KommoError>;
    async fn import_message(
        &self,
        scope_id: &str,
        request: &ImportMessageRequest,
    ) -> Result<ImportMessageResponse, KommoError>;
    /// Changes a message imported before.
    async fn edit_message(&self, scope_id: &str, request: &EditMessageRequest) -> Result<(), KommoError>;
    /// A client's reaction to a message, or its withdrawal.
    async fn react(&self, scope_id: &str, request: &ReactRequest) -> Result<(), KommoError>;
    /// Shows the client typing for 5 s. One quick retry at most: typing is ephemeral.
    async fn typing(&self, scope_id: &str, request: &TypingRequest) -> Result<(), KommoError>;
    async fn delivery_status(&self, scope_id: &str, request: &DeliveryStatusRequest) -> Result<(), KommoError>;
}
