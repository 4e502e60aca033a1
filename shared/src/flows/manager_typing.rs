//! A manager's typing, Kommo → chat service. Typing is a lease that lapses by itself, never a
//! toggle. Kommo's typing webhook (every 5 s, with `expired_at`) opens or extends the manager's
//! lease in one conditional write. Only the write that starts a lease queues `typing.started`;
//! a timer at the expiry ends a lapsed lease with a compare-and-set and queues
//! `typing.stopped` once. A manager's message ends the lease at once (its relay tells the chat
//! service, see [`super::manager_messages`]). A webhook that finds the lease lapsed but not yet
//! ended (its timer late) extends it: the chat service was never told it stopped, so a new
//! start would be a second one.

use std::sync::Arc;

use super::FlowError;
use super::chat_delivery::{ChatDelivery, typing_stopped};
use crate::models::chat::{BridgeEvent, ManagerRef};
use crate::models::kommo::TypingAction;
use crate::ports::metrics::{Metric, Metrics};
use crate::ports::store::{LeaseChange, LeaseKey, SendTurns, TypingLeases};
use crate::ports::timers::{DueWork, Timers};
use crate::random::new_webhook_id;
use crate::rules::typing::{TypingShown, kommo_expired_at_s, lane_may_show_typing, manager_lease_end_ms};
use crate::time::Clock;

/// The webhook's half.
#[derive(Clone)]
pub struct ManagerTyping {
    pub leases: Arc<dyn TypingLeases>,
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
    /// `FORWARD_MANAGER_TYPING`: off, nothing is forwarded.
    pub enabled: bool,
}

impl ManagerTyping {
    /// Kommo's manager-typing webhook: one conditional write; on a new lease, `typing.started`
    /// is queued for the chat service and the expiry timer set.
    pub async fn on_webhook(&self, scope_id: &str, typing: &TypingAction) -> Result<(), FlowError> {
        if !self.enabled {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let Some(lease_end_ms) = manager_lease_end_ms(typing.expired_at, now) else {
            tracing::debug!("manager typing already expired; ignored");
            return Ok(());
        };
        let conversation_id = typing.conversation.integration_id();
        let key = LeaseKey::manager(scope_id, conversation_id, &typing.user.id);
        if self.leases.extend(&key, lease_end_ms).await? != LeaseChange::Started {
            return Ok(());
        }
        let started = BridgeEvent::TypingStarted {
            scope_id: scope_id.to_owned(),
            conversation_id: conversation_id.to_owned(),
            manager: ManagerRef::by_amojo_id(&typing.user.id, None),
            expires_at: typing.expired_at,
        };
        // The check first, then the start: a process cut off between the two leaves a lease
        // that ends unshown, never a start with nothing owing its stop.
        let check = self.timers.schedule(expiry_check(&key, &typing.user.id), lease_end_ms).await;
        let scheduled = match check {
            Ok(()) => self.timers.schedule(DueWork::deliver(started), now).await,
            failed => failed,
        };
        if let Err(error) = scheduled {
            // Without its timer the lease could never send typing.stopped: undo it, so the
            // next webhook (5 s later) starts afresh, and let Kommo see the fault.
            tracing::error!(%error, "typing timer not scheduled; the lease is undone");
            if let Err(error) = self.leases.end(&key, now).await {
                tracing::error!(%error, "the lease without its timer could not be undone");
            }
            return Err(error.into());
        }
        Ok(())
    }
}

/// The queued half: the timer at a lease's expiry.
#[derive(Clone)]
pub struct ManagerTypingExpiry {
    pub leases: Arc<dyn TypingLeases>,
    pub lanes: Arc<dyn SendTurns>,
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
    pub delivery: ChatDelivery,
    pub metrics: Arc<dyn Metrics>,
}

impl ManagerTypingExpiry {
    /// Ends the lease if it lapsed (once) and tells the chat service, or looks again at its
    /// new expiry if it was extended. One read decides: while the manager types, Kommo's next
    /// webhook has extended the lease before nearly every check, and a read costs a fifth of
    /// the conditional delete that would fail to say the same.
    pub async fn check(&self, scope_id: &str, conversation_id: &str, manager_id: &str) -> Result<(), FlowError> {
        let now = self.clock.now_ms();
        let key = LeaseKey::manager(scope_id, conversation_id, manager_id);
        let stopped = || typing_stopped(scope_id, conversation_id, manager_id);
        let live = match self.leases.stored_lease(&key).await? {
            Some(lease) if lease.expires_at_ms > now => Some(lease),
            Some(_) => match self.leases.end_if_lapsed(&key, now).await? {
                Some(lease_end_ms) => {
                    self.delivery.deliver(stopped(), new_webhook_id(), 0).await?;
                    // How late the chat service was told, after the expiry Kommo gave (or, when
                    // the chat service was unavailable, its first try).
                    let ms = self.clock.now_ms() - kommo_expired_at_s(lease_end_ms) * 1000;
                    self.metrics.record(Metric::TypingStopLag { ms });
                    return Ok(());
                }
                // Extended or ended since the read: as it is now.
                None => self.leases.get_lease(&key, now).await?,
            },
            None => None,
        };
        if let Some(lease) = live {
            self.timers.schedule(expiry_check(&key, manager_id), lease.expires_at_ms).await?;
            return Ok(());
        }
        // Gone: ended by the manager's message (whose relay stops the typing), or by this very
        // check, when the SDK retried a delete that had landed. The lane tells whether the chat
        // service may still show the typing.
        let view = self.lanes.peek_turn(scope_id, &key.lane(), now).await?;
        if lane_may_show_typing(view.held_until_ms.is_some(), TypingShown::from_mark(view.sent_mark)) {
            return self.delivery.deliver(stopped(), new_webhook_id(), 0).await;
        }
        Ok(())
    }
}

fn expiry_check(key: &LeaseKey, manager_id: &str) -> DueWork {
    DueWork::ManagerTypingCheck {
        scope_id: key.scope_id.clone(),
        conversation_id: key.conversation_id.clone(),
        manager_id: manager_id.to_owned(),
    }
}
