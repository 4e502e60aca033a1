//! Work that falls due later, behind one [`Timers`] port: SQS message timers in AWS (consumed by
//! the `typing-expiry` function), an in-process timer loop in the dev server, and a manual one
//! for simulations. A timer only says "look again at this moment": whoever runs the work
//! re-reads the store and acts only if the work is still due, so late, early and duplicate
//! timers are harmless.

// Without the adapters (the fuzz build) only the pure parts remain; their imports are expected to go unused.
#![cfg_attr(not(feature = "adapters"), allow(unused_imports, dead_code))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::models::chat::{BridgeEvent, ClientMessage};
use crate::models::kommo::DeliveryStatusRequest;

/// One piece of deferred work, as it travels in an SQS message body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "snake_case")]
pub enum DueWork {
    /// A manager's typing lease may have lapsed: end it once and tell the chat service.
    ManagerTypingCheck { scope_id: String, conversation_id: String, manager_id: String },
    /// A manager's presence window may have lapsed (or they left): push offline once.
    ManagerPresenceCheck { scope_id: String, conversation_id: String, manager_id: String },
    /// Keep Kommo's client-typing indicator up while the client's lease lives.
    ClientTypingRefresh { scope_id: String, conversation_id: String, user_id: String },
    /// Deliver an event to the chat service; `attempt` counts earlier tries.
    DeliverChatEvent { event: BridgeEvent, webhook_id: String, attempt: u32 },
    /// Relay a manager's message (`event` is its message.created), typing.stopped first if the
    /// chat service shows the manager typing.
    RelayManagerMessage {
        scope_id: String,
        kommo_msgid: String,
        event: Box<BridgeEvent>,
        webhook_id: String,
        attempt: u32,
    },
    /// Tell Kommo a status change that stuck; `attempt` counts earlier tries.
    ReportDeliveryStatus {
        scope_id: String,
        request: DeliveryStatusRequest,
        #[serde(default)]
        attempt: u32,
    },
    /// Import a client's message into Kommo.
    ImportClientMessage { message: Box<ClientMessage>, attempt: u32 },
}

impl DueWork {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ManagerTypingCheck { .. } => "manager_typing_check",
            Self::ClientTypingRefresh { .. } => "client_typing_refresh",
            Self::ManagerPresenceCheck { .. } => "manager_presence_check",
            Self::DeliverChatEvent { .. } => "deliver_chat_event",
            Self::RelayManagerMessage { .. } => "relay_manager_message",
            Self::ReportDeliveryStatus { .. } => "report_delivery_status",
            Self::ImportClientMessage { .. } => "import_client_message",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the timer could not be scheduled: {0}")]
pub struct TimerError(pub String);

#[async_trait]
pub trait Timers: Send + Sync {
    /// Runs `work` at `due_at_ms` or shortly after, at least once.
    async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError>;
}

// ---------------------------------------------------------------------------------------------
// SQS

/// SQS's longest per-message delay; work due later fires early and is re-checked.
pub const SQS_MAX_DELAY_S: i64 = 900;

/// SQS message timers: one message per piece of work, `DelaySeconds` rounded up so that work
/// never fires before it is due.
#[cfg(feature = "adapters")]
pub struct SqsTimers {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    clock: Arc<dyn crate::time::Clock>,
}

#[cfg(feature = "adapters")]
impl SqsTimers {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>, clock: Arc<dyn crate::time::Clock>) -> Self {
        Self { client, queue_url: queue_url.into(), clock }
    }
}

/// Whole seconds to wait so that `due_at_ms` has passed, within SQS's 0–900.
pub fn sqs_delay_seconds(due_at_ms: i64, now_ms: i64) -> i32 {
    let wait_ms = (due_at_ms - now_ms).max(0);
    (wait_ms.div_euclid(1000) + i64::from(wait_ms % 1000 != 0)).min(SQS_MAX_DELAY_S) as i32
}

#[cfg(feature = "adapters")]
#[async_trait]
impl Timers for SqsTimers {
    async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError> {
        let body = serde_json::to_string(&work).expect("due work serialises");
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(sqs_delay_seconds(due_at_ms, self.clock.now_ms()))
            .send()
            .await
            .map_err(|e| TimerError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

#[cfg(feature = "adapters")]
/// An SQS client configured from the environment, at `endpoint` when given (a local server).
pub fn sqs_client_from_env(endpoint: Option<&str>) -> aws_sdk_sqs::Client {
    let mut builder = aws_sdk_sqs::config::Builder::from(&crate::aws::sdk_config());
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_sqs::Client::from_conf(builder.build())
}

// ---------------------------------------------------------------------------------------------
// In process (the dev server)

/// Timers as tokio tasks: what SQS does in AWS, for the dev server.
pub struct InProcessTimers {
    sender: tokio::sync::mpsc::UnboundedSender<(DueWork, i64)>,
}

/// The other end of [`InProcessTimers`]: run it with the bridge that does the work.
pub struct InProcessTimerLoop {
    receiver: tokio::sync::mpsc::UnboundedReceiver<(DueWork, i64)>,
}

/// Like SQS redelivery (a failed record comes back after the visibility timeout, a few times
/// over): a failed run is tried again, 1 s later, then 2, 4, … up to 30 s apart, for about two
/// minutes in all, so work that falls due while the store is down outlives an outage of that
/// long instead of being dropped (a lapsed lease would never be ended, a relay never made).
const IN_PROCESS_DELIVERIES: u32 = 9;
const IN_PROCESS_MAX_REDELIVERY_WAIT: Duration = Duration::from_secs(30);

/// The wait after failed delivery `delivery` (1-based).
fn redelivery_wait(delivery: u32) -> Duration {
    Duration::from_secs(1u64 << (delivery - 1).min(10)).min(IN_PROCESS_MAX_REDELIVERY_WAIT)
}

impl InProcessTimers {
    pub fn new() -> (Self, InProcessTimerLoop) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Self { sender }, InProcessTimerLoop { receiver })
    }
}

#[async_trait]
impl Timers for InProcessTimers {
    async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError> {
        self.sender.send((work, due_at_ms)).map_err(|_| TimerError("the timer loop has stopped".into()))
    }
}

impl InProcessTimerLoop {
    /// Runs every scheduled piece of work when it falls due, until the timers are dropped.
    pub async fn run(mut self, bridge: Arc<crate::app::Bridge>) {
        while let Some((work, due_at_ms)) = self.receiver.recv().await {
            let bridge = bridge.clone();
            tokio::spawn(async move {
                let wait = (due_at_ms - bridge.clock.now_ms()).max(0) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                for delivery in 1..=IN_PROCESS_DELIVERIES {
                    match bridge.run_due(work.clone()).await {
                        Ok(()) => return,
                        Err(error) if delivery < IN_PROCESS_DELIVERIES => {
                            tracing::warn!(work = work.kind(), delivery, %error, "due work failed; trying again");
                            tokio::time::sleep(redelivery_wait(delivery)).await;
                        }
                        Err(error) => tracing::warn!(work = work.kind(), delivery, %error, "due work failed"),
                    }
                }
                tracing::error!(work = work.kind(), "due work failed on every delivery; dropped");
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manual (simulations and handler tests)

/// Timers that only record: a test takes what is due and runs it, with a manual clock.
#[derive(Debug, Default)]
pub struct ManualTimers {
    pending: Mutex<Vec<(i64, DueWork)>>,
}

impl ManualTimers {
    /// Removes and returns the work due at `now_ms`, earliest first.
    pub fn take_due(&self, now_ms: i64) -> Vec<DueWork> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.sort_by_key(|(due, _)| *due);
        let split = pending.partition_point(|(due, _)| *due <= now_ms);
        pending.drain(..split).map(|(_, work)| work).collect()
    }

    pub fn pending(&self) -> Vec<(i64, DueWork)> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl Timers for ManualTimers {
    async fn schedule(&self, work: DueWork, due_at_ms: i64) -> Result<(), TimerError> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).push((due_at_ms, work));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqs_delays_round_up_so_work_never_fires_early() {
        assert_eq!(sqs_delay_seconds(10_000, 10_000), 0);
        assert_eq!(sqs_delay_seconds(10_001, 10_000), 1);
        assert_eq!(sqs_delay_seconds(15_000, 10_000), 5);
        assert_eq!(sqs_delay_seconds(5_000, 10_000), 0);
        assert_eq!(sqs_delay_seconds(10_000_000, 0), 900);
    }

    #[test]
    fn in_process_redelivery_backs_off_for_about_two_minutes() {
        let waits: Vec<u64> = (1..IN_PROCESS_DELIVERIES).map(|d| redelivery_wait(d).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn due_work_travels_as_tagged_json() {
        let work =
            DueWork::ManagerTypingCheck { scope_id: "s".into(), conversation_id: "c".into(), manager_id: "m".into() };
        let text = serde_json::to_string(&work).unwrap();
        assert_eq!(text, r#"{"work":"manager_typing_check","scope_id":"s","conversation_id":"c","manager_id":"m"}"#);
        assert_eq!(serde_json::from_str::<DueWork>(&text).unwrap(), work);
    }
}
