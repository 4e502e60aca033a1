//! What the flows tell the operator as metrics (the adapter writes CloudWatch embedded-metric
//! lines, `crate::app::metrics`), and the calls out metered where the ports are wired.
//! Recording never fails and never waits: a metric is one line on stdout.

use std::sync::Arc;

use async_trait::async_trait;

use super::accounts::{KommoRest, KommoRestError};
use super::chat::{ChatAnswer, ChatError, ChatService};
use super::kommo::{KommoApi, KommoError};
use crate::models::chat::BridgeEvent;
use crate::models::kommo::{
    ConnectRequest, ConnectResponse, CreateChatRequest, CreateChatResponse, DeliveryStatusRequest, DisconnectRequest,
    EditMessageRequest, ImportMessageRequest, ImportMessageResponse, ReactRequest, TypingRequest,
};
use crate::models::oauth::{KommoAccount, KommoUser, Tokens};
use crate::rules::retry::RetryPolicy;

/// Who the bridge calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    ChatService,
    Amojo,
    KommoApi,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Self::ChatService => "chat_service",
            Self::Amojo => "amojo",
            Self::KommoApi => "kommo_api",
        }
    }
}

/// How a call out ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    /// A 4xx: the peer will not take it as it is.
    Refused,
    /// A 5xx, a timeout, or unreachable (after the call's own quick retries).
    Unavailable,
}

impl CallOutcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// A manager's `typing.stopped` sent for a lapsed lease, this long after Kommo's
    /// `expired_at`.
    TypingStopLag { ms: i64 },
    /// A message reached its peer this long after it reached the bridge: a manager's message
    /// the chat service (from Kommo's webhook), a client's message Kommo (from the chat event).
    RelayLatency { peer: Peer, ms: i64 },
    /// A status Kommo took: `delivered`, `read`, or an error code (`901`…`905`).
    StatusReported { status: &'static str },
    /// Work given up after its attempts: `what` is the kind of queued work.
    DeadLetter { what: &'static str },
    /// One call out, and how it ended.
    OutboundCall { peer: Peer, outcome: CallOutcome },
}

pub trait Metrics: Send + Sync {
    fn record(&self, metric: Metric);
}

/// Records nothing (where nobody reads the metrics).
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn record(&self, _: Metric) {}
}

/// The chat service, each call metered.
pub struct MeteredChat {
    pub inner: Arc<dyn ChatService>,
    pub metrics: Arc<dyn Metrics>,
}

#[async_trait]
impl ChatService for MeteredChat {
    async fn deliver(
        &self,
        event: &BridgeEvent,
        webhook_id: &str,
        policy: RetryPolicy,
    ) -> Result<ChatAnswer, ChatError> {
        let result = self.inner.deliver(event, webhook_id, policy).await;
        let outcome = match &result {
            Ok(_) => CallOutcome::Ok,
            Err(ChatError::Rejected { .. }) => CallOutcome::Refused,
            Err(ChatError::Unavailable { .. }) => CallOutcome::Unavailable,
        };
        self.metrics.record(Metric::OutboundCall { peer: Peer::ChatService, outcome });
        result
    }
}

/// amojo, each call metered.
pub struct MeteredKommo {
    pub inner: Arc<dyn KommoApi>,
    pub metrics: Arc<dyn Metrics>,
}

impl MeteredKommo {
    fn metered<T>(&self, result: Result<T, KommoError>) -> Result<T, KommoError> {
        let outcome = match &result {
            Ok(_) => CallOutcome::Ok,
            Err(KommoError::Rejected { .. }) => CallOutcome::Refused,
            // A 2xx the bridge could not read is retried like an outage.
            Err(KommoError::Unavailable { .. } | KommoError::InvalidResponse(_)) => CallOutcome::Unavailable,
        };
        self.metrics.record(Metric::OutboundCall { peer: Peer::Amojo, outcome });
        result
    }
}

#[async_trait]
impl KommoApi for MeteredKommo {
    async fn connect(&self, request: &ConnectRequest) -> Result<ConnectResponse, KommoError> {
        self.metered(self.inner.connect(request).await)
    }
    async fn disconnect(&self, request: &DisconnectRequest) -> Result<(), KommoError> {
        self.metered(self.inner.disconnect(request).await)
    }
    async fn create_chat(&self, scope_id: &str, request: &CreateChatRequest) -> Result<CreateChatResponse, KommoError> {
        self.metered(self.inner.create_chat(scope_id, request).await)
    }
    async fn import_message(
        &self,
        scope_id: &str,
        request: &ImportMessageRequest,
    ) -> Result<ImportMessageResponse, KommoError> {
        self.metered(self.inner.import_message(scope_id, request).await)
    }
    async fn edit_message(&self, scope_id: &str, request: &EditMessageRequest) -> Result<(), KommoError> {
        self.metered(self.inner.edit_message(scope_id, request).await)
    }
    async fn react(&self, scope_id: &str, request: &ReactRequest) -> Result<(), KommoError> {
        self.metered(self.inner.react(scope_id, request).await)
    }
    async fn typing(&self, scope_id: &str, request: &TypingRequest) -> Result<(), KommoError> {
        self.metered(self.inner.typing(scope_id, request).await)
    }
    async fn delivery_status(&self, scope_id: &str, request: &DeliveryStatusRequest) -> Result<(), KommoError> {
        self.metered(self.inner.delivery_status(scope_id, request).await)
    }
}

/// Kommo's OAuth and REST API (installs), each call metered.
pub struct MeteredKommoRest {
    pub inner: Arc<dyn KommoRest>,
    pub metrics: Arc<dyn Metrics>,
}

impl MeteredKommoRest {
    fn metered<T>(&self, result: Result<T, KommoRestError>) -> Result<T, KommoRestError> {
        let outcome = match &result {
            Ok(_) => CallOutcome::Ok,
            Err(KommoRestError::Refused { .. }) => CallOutcome::Refused,
            Err(KommoRestError::Unavailable(_) | KommoRestError::InvalidResponse(_)) => CallOutcome::Unavailable,
        };
        self.metrics.record(Metric::OutboundCall { peer: Peer::KommoApi, outcome });
        result
    }
}

#[async_trait]
impl KommoRest for MeteredKommoRest {
    async fn exchange_code(&self, host: &str, code: &str) -> Result<Tokens, KommoRestError> {
        self.metered(self.inner.exchange_code(host, code).await)
    }
    async fn refresh(&self, host: &str, refresh_token: &str) -> Result<Tokens, KommoRestError> {
        self.metered(self.inner.refresh(host, refresh_token).await)
    }
    async fn account(&self, host: &str, access_token: &str) -> Result<KommoAccount, KommoRestError> {
        self.metered(self.inner.account(host, access_token).await)
    }
    async fn users(&self, host: &str, access_token: &str) -> Result<Vec<KommoUser>, KommoRestError> {
        self.metered(self.inner.users(host, access_token).await)
    }
}
