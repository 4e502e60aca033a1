//! What the bridge asks of the chat service: deliver one event (the adapter is
//! `crate::adapters::chat_http`, signed per Standard Webhooks).

use async_trait::async_trait;

use crate::models::chat::BridgeEvent;
use crate::rules::retry::RetryPolicy;

/// The chat service's 2xx answer: for `message.created`, optionally its own message id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ChatAnswer {
    #[serde(default)]
    pub msgid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The chat service refused the event (4xx other than 429), with its error if it gave one.
    #[error("the chat service refused the event with {status}: {code}")]
    Rejected { status: u16, code: String, message: String },
    /// Unreachable, timing out or failing (429, 5xx) until the retries ran out.
    #[error("the chat service is unavailable after {attempts} attempts: {reason}")]
    Unavailable { attempts: u32, status: Option<u16>, reason: String },
}

/// What the bridge asks of the chat service (a port).
#[async_trait]
pub trait ChatService: Send + Sync {
    /// Delivers one event; `webhook_id` identifies it across retries.
    async fn deliver(
        &self,
        event: &BridgeEvent,
        webhook_id: &str,
        policy: RetryPolicy,
    ) -> Result<ChatAnswer, ChatError>;
}
