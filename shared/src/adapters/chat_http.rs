//! The client of the chat service: posts [`BridgeEvent`]s to `CHAT_SERVICE_URL`, signed per
//! Standard Webhooks. The `webhook-id` stays the same across the retries of one event, so
//! the chat service can drop duplicates; the timestamp and signature are made per attempt.

use std::sync::Arc;

use async_trait::async_trait;

use super::outbound::{Attempt, peer_text, retry_after, transport_retry, with_retries};
use crate::models::chat::BridgeEvent;
use crate::ports::chat::{ChatAnswer, ChatError, ChatService};
use crate::rules::retry::{RetryPolicy, is_retryable_status};
use crate::signing::standard_webhooks::WebhookSecret;
use crate::time::Clock;

/// Per-attempt bound for a delivery to the chat service.
pub const CHAT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

pub struct HttpChatService {
    http: reqwest::Client,
    url: String,
    secret: WebhookSecret,
    clock: Arc<dyn Clock>,
}

impl HttpChatService {
    pub fn new(http: reqwest::Client, url: &str, secret: WebhookSecret, clock: Arc<dyn Clock>) -> Self {
        Self { http, url: url.to_owned(), secret, clock }
    }
}

#[async_trait]
impl ChatService for HttpChatService {
    async fn deliver(
        &self,
        event: &BridgeEvent,
        webhook_id: &str,
        policy: RetryPolicy,
    ) -> Result<ChatAnswer, ChatError> {
        let body = bytes::Bytes::from(serde_json::to_vec(event).expect("models serialise"));
        let outcome = with_retries(policy, "chat service", || {
            let timestamp = self.clock.now_s();
            let request = self
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .header("webhook-id", webhook_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", self.secret.sign(webhook_id, timestamp, &body))
                .body(body.clone());
            async move {
                let response = match request.send().await {
                    Ok(response) => response,
                    Err(error) => return transport_retry(&error),
                };
                let status = response.status().as_u16();
                if response.status().is_success() {
                    // Any 2xx accepts the event; a body without a msgid is still an acceptance.
                    let bytes = response.bytes().await.unwrap_or_default();
                    return Attempt::Final(Ok(serde_json::from_slice(&bytes).unwrap_or_default()));
                }
                let hint = retry_after(response.headers());
                if is_retryable_status(status) {
                    return Attempt::Retry {
                        status: Some(status),
                        retry_after: hint,
                        reason: format!("HTTP {status}"),
                    };
                }
                let (code, message) = error_of(&response.bytes().await.unwrap_or_default());
                Attempt::Final(Err(ChatError::Rejected { status, code, message }))
            }
        })
        .await;
        outcome.unwrap_or_else(|e| {
            Err(ChatError::Unavailable { attempts: e.attempts, status: e.status, reason: e.reason })
        })
    }
}

/// The contract's error body `{"error": {"code", "message"}}`; anything else gives empty strings.
/// Both kept as [`peer_text`] keeps them; of the message only its first line, which is all Kommo
/// shows of it (a 905's text).
fn error_of(body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize, Default)]
    struct Envelope {
        #[serde(default)]
        error: Inner,
    }
    #[derive(serde::Deserialize, Default)]
    struct Inner {
        #[serde(default)]
        code: serde_json::Value,
        #[serde(default)]
        message: String,
    }
    let envelope: Envelope = serde_json::from_slice(body).unwrap_or_default();
    let code = match envelope.error.code {
        serde_json::Value::String(s) => s,
        serde_json::Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let first_line = envelope.error.message.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or_default();
    (peer_text(&code), peer_text(first_line))
}
