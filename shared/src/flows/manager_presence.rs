//! A manager's presence, Kommo UI → chat service. The widget's `viewing` heartbeats keep a
//! window per manager in the conversation open on their screen; the transitions are pushed as
//! `presence.changed`, only for conversations a manager has open. `left` becomes an offline
//! push only after a short grace without `viewing`, so a reconnect pushes nothing; a lapsed
//! window is found by a timer, re-checked when it fires. What the chat service was last told is
//! a compare-and-set register, so each transition is pushed once.

use std::sync::Arc;

use super::FlowError;
use super::chat_delivery::ChatDelivery;
use crate::models::chat::BridgeEvent;
use crate::ports::store::{PresenceKey, PresenceWindows};
use crate::ports::timers::{DueWork, Timers};
use crate::random::new_webhook_id;
pub use crate::rules::presence::managers_subject;
use crate::rules::presence::{PresenceSettings, WindowCheck, coalesce_ms, is_transition, window_check};
use crate::time::Clock;

/// The widget's half, and the chat service's pull.
#[derive(Clone)]
pub struct ManagerPresence {
    pub windows: Arc<dyn PresenceWindows>,
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
    pub settings: PresenceSettings,
    /// `FORWARD_MANAGER_PRESENCE`: off, nothing is forwarded.
    pub enabled: bool,
}

impl ManagerPresence {
    /// A manager's `viewing` heartbeat from the Kommo UI.
    pub async fn on_viewing(&self, scope_id: &str, conversation_id: &str, manager_id: &str) -> Result<(), FlowError> {
        if !self.enabled {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let window = self.settings.window_ms;
        let key = key(scope_id, conversation_id, manager_id);
        let outcome = self.windows.heartbeat(&key, now, window, coalesce_ms(window)).await?;
        if !is_transition(outcome) {
            return Ok(());
        }
        if self.windows.mark_pushed(scope_id, &key.subject, manager_id, true).await? {
            let online = presence_changed(scope_id, conversation_id, manager_id, true);
            self.timers.schedule(DueWork::deliver(online), now).await?;
        }
        self.timers.schedule(window_check_work(scope_id, conversation_id, manager_id), now + window).await?;
        Ok(())
    }

    /// A manager's `left`: offline now in the store; pushed only if no `viewing` follows within
    /// the grace.
    pub async fn on_left(&self, scope_id: &str, conversation_id: &str, manager_id: &str) -> Result<(), FlowError> {
        if !self.enabled {
            return Ok(());
        }
        let now = self.clock.now_ms();
        self.windows.go_offline(&key(scope_id, conversation_id, manager_id), now).await?;
        let check = window_check_work(scope_id, conversation_id, manager_id);
        self.timers.schedule(check, now + self.settings.grace_ms).await?;
        Ok(())
    }

    /// The managers online in a conversation, with when each was last seen, for the chat
    /// service's pull.
    pub async fn online_in(&self, scope_id: &str, conversation_id: &str) -> Result<Vec<(String, i64)>, FlowError> {
        if !self.enabled {
            return Ok(Vec::new());
        }
        let now = self.clock.now_ms();
        let devices = self.windows.presence_devices(scope_id, &managers_subject(conversation_id), now).await?;
        Ok(devices
            .into_iter()
            .filter(|(_, view)| view.online)
            .map(|(manager_id, view)| (manager_id, view.last_seen_at_ms.unwrap_or(now)))
            .collect())
    }
}

/// The queued half: the timer of a manager's window.
#[derive(Clone)]
pub struct ManagerPresenceExpiry {
    pub windows: Arc<dyn PresenceWindows>,
    pub timers: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
    pub delivery: ChatDelivery,
}

impl ManagerPresenceExpiry {
    /// Still online: look again when the window would lapse; offline: push it, once.
    pub async fn check(&self, scope_id: &str, conversation_id: &str, manager_id: &str) -> Result<(), FlowError> {
        let now = self.clock.now_ms();
        let subject = managers_subject(conversation_id);
        let devices = self.windows.presence_devices(scope_id, &subject, now).await?;
        let view =
            devices.into_iter().find(|(device, _)| device == manager_id).map(|(_, view)| view).unwrap_or_default();
        match window_check(view) {
            WindowCheck::LookAgainAt(until) => {
                self.timers.schedule(window_check_work(scope_id, conversation_id, manager_id), until).await?;
            }
            WindowCheck::Offline => {
                // Marked already: by a `left`, by a copy of this check, or by this very check
                // cut off before its push went out. The lane tells whether the chat service was
                // told (one read); the push's lane decides again and sends at most once.
                let marked_now = self.windows.mark_pushed(scope_id, &subject, manager_id, false).await?;
                if marked_now || self.delivery.presence_push_owed(scope_id, conversation_id, manager_id, now).await? {
                    let offline = presence_changed(scope_id, conversation_id, manager_id, false);
                    self.delivery.deliver(offline, new_webhook_id(), 0).await?;
                }
            }
        }
        Ok(())
    }
}

fn key(scope_id: &str, conversation_id: &str, manager_id: &str) -> PresenceKey {
    PresenceKey { scope_id: scope_id.into(), subject: managers_subject(conversation_id), device: manager_id.into() }
}

fn window_check_work(scope_id: &str, conversation_id: &str, manager_id: &str) -> DueWork {
    DueWork::ManagerPresenceCheck {
        scope_id: scope_id.into(),
        conversation_id: conversation_id.into(),
        manager_id: manager_id.into(),
    }
}

fn presence_changed(scope_id: &str, conversation_id: &str, manager_id: &str, online: bool) -> BridgeEvent {
    BridgeEvent::PresenceChanged {
        scope_id: scope_id.into(),
        conversation_id: conversation_id.into(),
        // The Kommo UI names managers by their Kommo user id; delivery names them by amojo id.
        manager: crate::flows::managers::kommo_ui_manager(manager_id),
        online,
    }
}
