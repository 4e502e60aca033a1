//! [`PresenceWindows`] in memory.

use async_trait::async_trait;

use super::{DeviceWindow, MemoryStore, slot};
use crate::ports::store::{HeartbeatOutcome, PresenceKey, PresenceView, PresenceWindows, StoreError};

#[async_trait]
impl PresenceWindows for MemoryStore {
    async fn heartbeat(
        &self,
        key: &PresenceKey,
        now_ms: i64,
        window_ms: i64,
        coalesce_ms: i64,
    ) -> Result<HeartbeatOutcome, StoreError> {
        self.ops.read();
        let mut state = self.state();
        let devices = state.presence.entry(slot(&key.scope_id, &key.subject)).or_default();
        let current = devices.get(&key.device).copied();
        let online = current.is_some_and(|w| w.online_until_ms > now_ms);
        if online && current.is_some_and(|w| w.last_seen_at_ms > now_ms - coalesce_ms) {
            return Ok(HeartbeatOutcome::Coalesced);
        }
        self.ops.write();
        devices
            .insert(key.device.clone(), DeviceWindow { last_seen_at_ms: now_ms, online_until_ms: now_ms + window_ms });
        Ok(if online { HeartbeatOutcome::Refreshed } else { HeartbeatOutcome::CameOnline })
    }

    async fn go_offline(&self, key: &PresenceKey, now_ms: i64) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let window = state
            .presence
            .get_mut(&slot(&key.scope_id, &key.subject))
            .and_then(|devices| devices.get_mut(&key.device))
            .filter(|w| w.online_until_ms > now_ms);
        match window {
            Some(window) => {
                *window = DeviceWindow { last_seen_at_ms: now_ms, online_until_ms: now_ms };
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn presence_devices(
        &self,
        scope_id: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Vec<(String, PresenceView)>, StoreError> {
        self.ops.read();
        let state = self.state();
        let Some(devices) = state.presence.get(&slot(scope_id, subject)) else {
            return Ok(Vec::new());
        };
        let mut views: Vec<_> = devices
            .iter()
            .map(|(device, w)| (device.clone(), PresenceView::of_window(w.last_seen_at_ms, w.online_until_ms, now_ms)))
            .collect();
        views.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(views)
    }

    async fn mark_pushed(&self, scope_id: &str, subject: &str, device: &str, online: bool) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let key = (scope_id.to_owned(), subject.to_owned(), device.to_owned());
        let changed = state.pushed.get(&key) != Some(&online);
        if changed {
            state.pushed.insert(key, online);
        }
        Ok(changed)
    }

    async fn pushed(&self, scope_id: &str, subject: &str, device: &str) -> Result<Option<bool>, StoreError> {
        self.ops.read();
        let key = (scope_id.to_owned(), subject.to_owned(), device.to_owned());
        Ok(self.state().pushed.get(&key).copied())
    }
}
