//! The outbound ports, each call metered: one `OutboundCalls` metric line per call, by peer
//! and outcome. [`crate::app::wiring`] puts these in each outbound chain.

use std::sync::Arc;

use async_trait::async_trait;

use crate::models::chat::BridgeEvent;
use crate::models::kommo::{
    ConnectRequest, ConnectResponse, CreateChatRequest, CreateChatResponse, DeliveryStatusRequest, DisconnectRequest,
    EditMessageRequest, ImportMessageRequest, ImportMessageResponse, ReactRequest, TypingRequest,
};
use crate::models::oauth::{KommoAccount, KommoUser, Tokens};
use crate::ports::accounts::{KommoRest, KommoRestError};
use crate::ports::chat::{ChatAnswer, ChatError, ChatService};
use crate::ports::kommo::{KommoApi, KommoError};
use crate::ports::metrics::{CallOutcome, Metric, Metrics, Peer};
use crate::rules::retry::RetryPolicy;

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
            Err(
                KommoRestError::Unavailable(_)
                | KommoRestError::InvalidResponse(_)
                | KommoRestError::RateLimited { .. },
            ) => CallOutcome::Unavailable,
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
