//! Online presence both ways. Kommo has no presence API, so the bridge keeps the windows:
//!
//! - Client → Kommo UI: the chat service's `presence.*` events keep a window per client and
//!   device (online ⇔ a heartbeat within `PRESENCE_WINDOW_S`; `last_seen_at` kept; heartbeats
//!   coalesced to at most one write per 30 s). The widget reads it.
//! - Manager → chat service: the widget's `viewing` heartbeats keep a window per manager in the
//!   conversation open on their screen; the transitions are pushed as `presence.changed`, only
//!   for conversations a manager has open. `left` becomes an offline push only after a short
//!   grace without `viewing`, so a reconnect pushes nothing; a lapsed window is found by a
//!   timer, re-checked when it fires. What the chat service was last told is a compare-and-set
//!   register, so each transition is pushed once.

use crate::app::Bridge;
use crate::http::ApiError;
use crate::models::chat::{BridgeEvent, ClientPresence, ManagerRef};
use crate::store::{HeartbeatOutcome, PresenceKey, PresenceView};
use crate::timers::DueWork;
use crate::typing::{DueError, store_fault};

/// Heartbeats closer together than this (while online) are not written...
pub const HEARTBEAT_COALESCE_MS: i64 = 30_000;

/// ...nor closer than half the window, so that with a short window the heartbeats that are
/// written still arrive before it lapses (a coalescing longer than the window would flap).
fn coalesce_ms(window_ms: i64) -> i64 {
    HEARTBEAT_COALESCE_MS.min(window_ms / 2)
}
const DEFAULT_DEVICE: &str = "default";

pub fn client_subject(user_id: &str) -> String {
    format!("client:{user_id}")
}

pub fn managers_subject(conversation_id: &str) -> String {
    format!("manager:{conversation_id}")
}

impl Bridge {
    /// The chat service's `presence.online` and `presence.heartbeat`.
    pub(crate) async fn on_client_heartbeat(&self, presence: &ClientPresence) -> Result<(), ApiError> {
        let key = client_key(presence);
        let now = self.clock.now_ms();
        let outcome = self
            .store
            .heartbeat(&key, now, self.config.presence.window_ms, coalesce_ms(self.config.presence.window_ms))
            .await
            .map_err(store_fault)?;
        // On coming online (not on every heartbeat), note whose conversation it is, so the
        // Kommo UI can ask by conversation.
        if outcome == HeartbeatOutcome::CameOnline
            && let Some(conversation_id) = presence.conversation_id.as_deref().filter(|id| !id.is_empty())
        {
            self.store
                .remember_conversation(&presence.scope_id, conversation_id, None, Some(&presence.user_id))
                .await
                .map_err(store_fault)?;
        }
        Ok(())
    }

    /// The chat service's `presence.offline`.
    pub(crate) async fn on_client_offline(&self, presence: &ClientPresence) -> Result<(), ApiError> {
        self.store.go_offline(&client_key(presence), self.clock.now_ms()).await.map_err(store_fault)?;
        Ok(())
    }

    /// What the Kommo UI shows beside the client's name.
    pub(crate) async fn client_presence(
        &self,
        scope_id: &str,
        conversation_id: &str,
        client_user_id: Option<&str>,
    ) -> Result<(PresenceView, bool), ApiError> {
        let Some(user_id) = client_user_id else {
            return Ok((PresenceView::default(), false));
        };
        let now = self.clock.now_ms();
        let view = self.store.presence(scope_id, &client_subject(user_id), now).await.map_err(store_fault)?;
        let lease = crate::store::LeaseKey::client(scope_id, conversation_id, user_id);
        let typing = self.store.get_lease(&lease, now).await.map_err(store_fault)?.is_some();
        Ok((view, typing))
    }

    /// A manager's `viewing` heartbeat from the Kommo UI.
    pub(crate) async fn on_manager_viewing(
        &self,
        scope_id: &str,
        conversation_id: &str,
        manager_id: &str,
    ) -> Result<(), ApiError> {
        if !self.config.privacy.forward_manager_presence {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let key = manager_key(scope_id, conversation_id, manager_id);
        let window = self.config.presence.window_ms;
        let outcome = self.store.heartbeat(&key, now, window, coalesce_ms(window)).await.map_err(store_fault)?;
        if outcome != HeartbeatOutcome::CameOnline {
            return Ok(());
        }
        let subject = managers_subject(conversation_id);
        if self.store.mark_pushed(scope_id, &subject, manager_id, true).await.map_err(store_fault)? {
            let online = presence_changed(scope_id, conversation_id, manager_id, true);
            self.schedule_or_fault(DueWork::deliver(online), now).await?;
        }
        self.schedule_or_fault(manager_check(scope_id, conversation_id, manager_id), now + window).await
    }

    /// A manager's `left`: offline now in the store; pushed only if no `viewing` follows within
    /// the grace.
    pub(crate) async fn on_manager_left(
        &self,
        scope_id: &str,
        conversation_id: &str,
        manager_id: &str,
    ) -> Result<(), ApiError> {
        if !self.config.privacy.forward_manager_presence {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let key = manager_key(scope_id, conversation_id, manager_id);
        self.store.go_offline(&key, now).await.map_err(store_fault)?;
        let check = manager_check(scope_id, conversation_id, manager_id);
        self.schedule_or_fault(check, now + self.config.presence.grace_ms).await
    }

    /// The timer of a manager's window: still online, look again when it would lapse;
    /// offline, push it once.
    pub(crate) async fn check_manager_presence(
        &self,
        scope_id: &str,
        conversation_id: &str,
        manager_id: &str,
    ) -> Result<(), DueError> {
        let now = self.clock.now_ms();
        let subject = managers_subject(conversation_id);
        let devices = self.store.presence_devices(scope_id, &subject, now).await?;
        let view =
            devices.into_iter().find(|(device, _)| device == manager_id).map(|(_, view)| view).unwrap_or_default();
        if let (true, Some(until)) = (view.online, view.online_until_ms) {
            self.timers.schedule(manager_check(scope_id, conversation_id, manager_id), until).await?;
            return Ok(());
        }
        if self.store.mark_pushed(scope_id, &subject, manager_id, false).await? {
            let offline = presence_changed(scope_id, conversation_id, manager_id, false);
            self.deliver_chat_event(offline, crate::typing::new_webhook_id(), 0).await?;
        }
        Ok(())
    }

    /// The managers online in a conversation, for the chat service's pull.
    pub(crate) async fn managers_online(
        &self,
        scope_id: &str,
        conversation_id: &str,
    ) -> Result<Vec<(String, i64)>, ApiError> {
        if !self.config.privacy.forward_manager_presence {
            return Ok(Vec::new());
        }
        let now = self.clock.now_ms();
        let devices = self
            .store
            .presence_devices(scope_id, &managers_subject(conversation_id), now)
            .await
            .map_err(store_fault)?;
        Ok(devices
            .into_iter()
            .filter(|(_, view)| view.online)
            .map(|(manager_id, view)| (manager_id, view.last_seen_at_ms.unwrap_or(now)))
            .collect())
    }

    async fn schedule_or_fault(&self, work: DueWork, due_at_ms: i64) -> Result<(), ApiError> {
        self.timers.schedule(work, due_at_ms).await.map_err(|error| {
            tracing::error!(%error, "presence work not scheduled");
            ApiError::internal()
        })
    }
}

fn client_key(presence: &ClientPresence) -> PresenceKey {
    PresenceKey {
        scope_id: presence.scope_id.clone(),
        subject: client_subject(&presence.user_id),
        device: presence.device_id.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| DEFAULT_DEVICE.into()),
    }
}

fn manager_key(scope_id: &str, conversation_id: &str, manager_id: &str) -> PresenceKey {
    PresenceKey { scope_id: scope_id.into(), subject: managers_subject(conversation_id), device: manager_id.into() }
}

fn manager_check(scope_id: &str, conversation_id: &str, manager_id: &str) -> DueWork {
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
        manager: ManagerRef { id: manager_id.into(), name: None },
        online,
    }
}
