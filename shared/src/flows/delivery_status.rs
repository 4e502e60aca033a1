//! Delivery status of a manager's message, chat service → Kommo. Statuses go through the
//! monotonic register: only a change that sticks is reported to Kommo, once, inside the
//! message's status lane ([`crate::rules::lanes`]), so the reports reach Kommo in the
//! register's order and Kommo's status never goes backwards.

use std::sync::Arc;

use super::FlowError;
use crate::models::chat::StatusReport;
use crate::models::status::{DeliveryStatus, DeliveryStatusRequest};
use crate::ports::kommo::{KommoApi, KommoError};
use crate::ports::metrics::{Metric, Metrics};
use crate::ports::store::{Conversations, DedupeKeys, MessageRecords, SendTurns, StatusChange, Turn};
use crate::ports::timers::{DueWork, Timers};
use crate::random::random_bytes;
use crate::rules::lanes::{SEND_TURN_HOLD_MS, busy_retry_at, status_lane};
use crate::rules::rejection::Rejection;
use crate::rules::retry::{RetryPolicy, requeue_delay_ms};
use crate::rules::status::{Report, report_decision};
use crate::rules::validation::reported_status;
use crate::time::Clock;

/// `read` with `up_to` marks at most this many earlier messages.
pub const READ_UP_TO_LIMIT: usize = 50;

/// The register: a status is applied in one conditional write, and only a change that sticks
/// queues its one report to Kommo.
#[derive(Clone)]
pub struct StatusRegister {
    pub records: Arc<dyn MessageRecords>,
    /// The status lanes: whether a status applied already reached Kommo.
    pub lanes: Arc<dyn SendTurns>,
    pub timers: Arc<dyn Timers>,
}

impl StatusRegister {
    pub async fn apply(
        &self,
        scope_id: &str,
        kommo_msgid: &str,
        status: &DeliveryStatus,
        now: i64,
    ) -> Result<(), FlowError> {
        let queue_report = match self.records.advance_status(scope_id, kommo_msgid, status, now).await? {
            StatusChange::Advanced { .. } => true,
            // This very status, applied already: by a duplicate, or by a delivery cut off after
            // its write and before it queued the report. Not yet in Kommo (one read of the
            // lane), the report is queued again; the lane sends it at most once.
            StatusChange::Unchanged { current_rank } if current_rank == Some(status.rank()) => {
                let view = self.lanes.peek_turn(scope_id, &status_lane(kommo_msgid), now).await?;
                report_decision(view.sent_mark, status) == Report::Send
            }
            StatusChange::Unchanged { current_rank } => {
                tracing::info!(kommo_msgid, rank = status.rank(), current_rank, "status ignored: not forward");
                false
            }
        };
        if queue_report {
            let request = DeliveryStatusRequest { msgid: kommo_msgid.to_owned(), status: status.clone() };
            let report = DueWork::ReportDeliveryStatus { scope_id: scope_id.to_owned(), request, attempt: 0 };
            self.timers.schedule(report, now).await?;
        }
        Ok(())
    }
}

/// The chat service's `message.status`.
#[derive(Clone)]
pub struct DeliveryStatuses {
    pub records: Arc<dyn MessageRecords>,
    /// For `up_to` across the two ids of a chat a manager started.
    pub conversations: Arc<dyn Conversations>,
    pub register: StatusRegister,
    pub clock: Arc<dyn Clock>,
}

impl DeliveryStatuses {
    /// Applies a report (checked by [`reported_status`]) to the message it names, or with
    /// `up_to` to every earlier manager message of its conversation too.
    pub async fn on_report(&self, report: &StatusReport) -> Result<(), FlowError> {
        let status = reported_status(report)?;
        let scope_id = report.scope_id.as_str();
        let kommo_msgid = match (&report.reference, &report.msgid) {
            (Some(reference), _) if !reference.is_empty() => reference.clone(),
            (_, Some(msgid)) => {
                self.records.kommo_msgid_for(scope_id, msgid).await?.ok_or(Rejection::UnknownMessage)?
            }
            _ => return Err(Rejection::invalid("name the message by msgid or reference").into()),
        };
        let now = self.clock.now_ms();
        let mut targets = vec![kommo_msgid.clone()];
        if report.up_to
            && let Some(record) = self.records.get_message(scope_id, &kommo_msgid).await?
            && !record.conversation_id.is_empty()
        {
            targets = self
                .records
                .outgoing_up_to(scope_id, &record.conversation_id, record.created_at_ms, READ_UP_TO_LIMIT)
                .await?;
            // A chat a manager started and the chat service answered under its own id: the
            // manager's first messages were relayed under Kommo's chat id, and are earlier too.
            let known = self.conversations.find_conversation(scope_id, &record.conversation_id).await?;
            if let Some(started_as) = known
                .filter(|c| c.kommo_client_id.is_some())
                .and_then(|c| c.kommo_chat_id)
                .filter(|kommo_chat_id| *kommo_chat_id != record.conversation_id)
            {
                let opening =
                    self.records.outgoing_up_to(scope_id, &started_as, record.created_at_ms, READ_UP_TO_LIMIT).await?;
                targets.extend(opening);
                targets.truncate(READ_UP_TO_LIMIT);
            }
        }
        for target in targets {
            self.register.apply(scope_id, &target, &status, now).await?;
        }
        Ok(())
    }
}

/// The queued half: the status call to Kommo.
#[derive(Clone)]
pub struct StatusReports {
    pub lanes: Arc<dyn SendTurns>,
    /// Copies of a report waiting for its lane, one at a time ([`super::wait_for_hold`]).
    pub waits: Arc<dyn DedupeKeys>,
    pub timers: Arc<dyn Timers>,
    pub kommo: Arc<dyn KommoApi>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    pub metrics: Arc<dyn Metrics>,
}

impl StatusReports {
    /// Made inside the message's status lane: a report that a better one has already reached
    /// Kommo is dropped ([`report_decision`]). The client retries 429 (honouring
    /// `Retry-After`) and 5xx a few times, re-signing every attempt; past that, the call is
    /// queued again with backoff.
    pub async fn report(&self, scope_id: &str, request: DeliveryStatusRequest, attempt: u32) -> Result<(), FlowError> {
        let now = self.clock.now_ms();
        let lane = status_lane(&request.msgid);
        let token = match self.lanes.take_turn(scope_id, &lane, now, SEND_TURN_HOLD_MS).await? {
            Turn::Busy { until_ms } => {
                let identity = format!("{}", request.status.rank());
                let again = DueWork::ReportDeliveryStatus { scope_id: scope_id.to_owned(), request, attempt };
                let (waits, timers) = (self.waits.as_ref(), self.timers.as_ref());
                let at = busy_retry_at(now, until_ms);
                return super::wait_for_hold(waits, timers, scope_id, &lane, &identity, again, now, at).await;
            }
            Turn::Yours { token, sent_mark, .. } => match report_decision(sent_mark, &request.status) {
                Report::Send => token,
                Report::Overtaken => {
                    tracing::info!(kommo_msgid = %request.msgid.escape_debug(), "delivery status overtaken by a later one; not sent");
                    return Ok(self.lanes.end_turn(scope_id, &lane, &token, None).await?);
                }
            },
        };
        let outcome = self.kommo.delivery_status(scope_id, &request).await;
        let mark = outcome.is_ok().then_some(request.status.report_mark());
        self.lanes.end_turn(scope_id, &lane, &token, mark).await?;
        match outcome {
            Ok(()) => {
                tracing::info!(status = request.status.wire_code(), "delivery status reported to Kommo");
                self.metrics.record(Metric::StatusReported { status: request.status.label() });
                Ok(())
            }
            Err(KommoError::Unavailable { reason, retry_after, .. }) if attempt + 1 < self.retry.max_attempts => {
                let random = u64::from_le_bytes(random_bytes::<8>());
                let at = self.clock.now_ms() + requeue_delay_ms(&self.retry, attempt + 1, retry_after, random);
                tracing::warn!(kommo_msgid = %request.msgid.escape_debug(), %reason, "delivery status queued again");
                let again =
                    DueWork::ReportDeliveryStatus { scope_id: scope_id.to_owned(), request, attempt: attempt + 1 };
                Ok(self.timers.schedule(again, at).await?)
            }
            Err(error) => {
                tracing::error!(kommo_msgid = %request.msgid.escape_debug(), %error, "delivery status not reported to Kommo");
                Ok(())
            }
        }
    }
}
