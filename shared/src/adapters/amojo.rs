//! The client of Kommo's Chat API (amojo) over HTTPS. Every attempt is signed when it is sent,
//! so a retry carries a fresh `Date`.

use crate::rules::id_checks::is_path_segment;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::outbound::{Attempt, peer_text, retry_after, transport_retry, with_retries};
use crate::models::kommo::{
    ConnectRequest, ConnectResponse, CreateChatRequest, CreateChatResponse, DeliveryStatusRequest, DisconnectRequest,
    EditMessageRequest, ImportMessageRequest, ImportMessageResponse, ReactRequest, TypingRequest,
};
use crate::ports::kommo::{KommoApi, KommoError};
use crate::rules::retry::{RetryPolicy, is_retryable_status};
use crate::signing::{Secret, amojo};
use crate::time::{Clock, rfc2822};

const API_PREFIX: &str = "/v2/origin/custom";
/// The longest path segment sent (a scope id is a 36-character channel id, `_` and an amojo id).
const MAX_SEGMENT_BYTES: usize = 256;

/// amojo over HTTPS.
pub struct AmojoClient {
    http: reqwest::Client,
    base_url: String,
    channel_id: String,
    channel_secret: Secret,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
}

impl AmojoClient {
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        channel_id: &str,
        channel_secret: Secret,
        clock: Arc<dyn Clock>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            channel_id: channel_id.to_owned(),
            channel_secret,
            clock,
            retry,
        }
    }

    /// Sends `body` to the path of `segments` (under `/v2/origin/custom/`), retrying per
    /// `policy`, and returns the 2xx answer's body.
    async fn call(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: &impl Serialize,
        policy: RetryPolicy,
        timeout: Duration,
    ) -> Result<bytes::Bytes, KommoError> {
        // The path is signed as it is sent: a segment that a server could read another way (a
        // dot-segment, a `?`, an escape) is refused here and never sent (ids are checked where
        // they arrive; this holds whatever a caller passes).
        if !segments.iter().all(|segment| is_path_segment(segment, MAX_SEGMENT_BYTES)) {
            return Err(KommoError::Rejected {
                status: 400,
                error_type: "invalid_path".into(),
                description: "a path segment is not a plain id; nothing was sent".into(),
            });
        }
        // Serialised once: the signature's Content-MD5 covers exactly these bytes.
        let body = bytes::Bytes::from(serde_json::to_vec(body).expect("models serialise"));
        let signed_path = format!("{API_PREFIX}/{}", segments.join("/"));
        let url = format!("{}{signed_path}", self.base_url);
        let outcome = with_retries(policy, "amojo", || {
            // Signed per attempt: amojo accepts a Date for 15 minutes only.
            let date = rfc2822(self.clock.now_s());
            let headers = amojo::sign(self.channel_secret.expose(), method.as_str(), &signed_path, &body, &date);
            let mut request = self.http.request(method.clone(), &url).timeout(timeout).body(body.clone());
            for (name, value) in headers.as_pairs() {
                request = request.header(name, value);
            }
            async move {
                let response = match request.send().await {
                    Ok(response) => response,
                    Err(error) => return transport_retry(&error),
                };
                let status = response.status().as_u16();
                if response.status().is_success() {
                    return Attempt::Final(
                        response.bytes().await.map_err(|e| KommoError::InvalidResponse(peer_text(&e.to_string()))),
                    );
                }
                let hint = retry_after(response.headers());
                if is_retryable_status(status) {
                    return Attempt::Retry {
                        status: Some(status),
                        retry_after: hint,
                        reason: format!("HTTP {status}"),
                    };
                }
                Attempt::Final(Err(rejected(status, &response.bytes().await.unwrap_or_default())))
            }
        })
        .await;
        outcome.unwrap_or_else(|e| {
            Err(KommoError::Unavailable {
                attempts: e.attempts,
                status: e.status,
                reason: e.reason,
                retry_after: e.retry_after,
            })
        })
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T, KommoError> {
        let bytes = self.call(method, segments, body, self.retry, AMOJO_REQUEST_TIMEOUT).await?;
        serde_json::from_slice(&bytes).map_err(|e| KommoError::InvalidResponse(peer_text(&e.to_string())))
    }

    /// A call whose 2xx answer is read for ids the bridge can do without: an answer that is
    /// not the JSON expected reads as one naming none, since the call did succeed.
    async fn call_lenient<T: DeserializeOwned + Default>(
        &self,
        segments: &[&str],
        body: &impl Serialize,
    ) -> Result<T, KommoError> {
        let bytes = self.call(reqwest::Method::POST, segments, body, self.retry, AMOJO_REQUEST_TIMEOUT).await?;
        Ok(serde_json::from_slice(&bytes).unwrap_or_else(|error: serde_json::Error| {
            let error = peer_text(&error.to_string());
            tracing::warn!(%error, "amojo's 2xx answer is not the JSON expected; read as naming no ids");
            T::default()
        }))
    }
}

#[async_trait]
impl KommoApi for AmojoClient {
    async fn connect(&self, request: &ConnectRequest) -> Result<ConnectResponse, KommoError> {
        self.call_json(reqwest::Method::POST, &[&self.channel_id, "connect"], request).await
    }

    async fn disconnect(&self, request: &DisconnectRequest) -> Result<(), KommoError> {
        let path = [self.channel_id.as_str(), "disconnect"];
        self.call(reqwest::Method::DELETE, &path, request, self.retry, AMOJO_REQUEST_TIMEOUT).await.map(drop)
    }

    async fn create_chat(&self, scope_id: &str, request: &CreateChatRequest) -> Result<CreateChatResponse, KommoError> {
        self.call_lenient(&[scope_id, "chats"], request).await
    }

    async fn import_message(
        &self,
        scope_id: &str,
        request: &ImportMessageRequest,
    ) -> Result<ImportMessageResponse, KommoError> {
        self.call_lenient(&[scope_id], request).await
    }

    async fn edit_message(&self, scope_id: &str, request: &EditMessageRequest) -> Result<(), KommoError> {
        self.call(reqwest::Method::POST, &[scope_id], request, self.retry, AMOJO_REQUEST_TIMEOUT).await.map(drop)
    }

    async fn react(&self, scope_id: &str, request: &ReactRequest) -> Result<(), KommoError> {
        self.call(reqwest::Method::POST, &[scope_id, "react"], request, self.retry, AMOJO_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    async fn typing(&self, scope_id: &str, request: &TypingRequest) -> Result<(), KommoError> {
        self.call(reqwest::Method::POST, &[scope_id, "typing"], request, RetryPolicy::EPHEMERAL, TYPING_REQUEST_TIMEOUT)
            .await
            .map(drop)
    }

    async fn delivery_status(&self, scope_id: &str, request: &DeliveryStatusRequest) -> Result<(), KommoError> {
        let path = [scope_id, request.msgid.as_str(), "delivery_status"];
        self.call(reqwest::Method::POST, &path, request, self.retry, AMOJO_REQUEST_TIMEOUT).await.map(drop)
    }
}

/// amojo's error body: `{"error_code": 403, "error_type": "...", "error_description": "..."}`,
/// its texts kept as [`peer_text`] keeps them: they reach logs and the chat service.
fn rejected(status: u16, body: &[u8]) -> KommoError {
    #[derive(serde::Deserialize, Default)]
    struct AmojoErrorBody {
        #[serde(default)]
        error_type: String,
        #[serde(default)]
        error_description: String,
    }
    let parsed: AmojoErrorBody = serde_json::from_slice(body).unwrap_or_default();
    KommoError::Rejected {
        status,
        error_type: peer_text(&parsed.error_type),
        description: peer_text(&parsed.error_description),
    }
}

/// Per-attempt bound for amojo calls.
pub const AMOJO_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Typing is worth little late: a short bound keeps the chat service's request quick.
pub const TYPING_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
