//! Presence windows: who is online, per device, and what the chat service was last told.

use async_trait::async_trait;

use super::StoreError;
pub use crate::rules::presence::{HeartbeatOutcome, PresenceView};

/// Whose presence, on which device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresenceKey {
    pub scope_id: String,
    /// `client:{user id}` or `manager:{conversation id}:{user id}`.
    pub subject: String,
    pub device: String,
}

/// Presence windows: online means a heartbeat within the window.
#[async_trait]
pub trait PresenceWindows: Send + Sync {
    /// Records a heartbeat in at most one conditional write, none if the device's last write
    /// is younger than `coalesce_ms` and it is still online.
    async fn heartbeat(
        &self,
        key: &PresenceKey,
        now_ms: i64,
        window_ms: i64,
        coalesce_ms: i64,
    ) -> Result<HeartbeatOutcome, StoreError>;
    /// Closes the device's window now; true when it was online.
    async fn go_offline(&self, key: &PresenceKey, now_ms: i64) -> Result<bool, StoreError>;
    /// The subject's presence over all devices at `now_ms`.
    async fn presence(&self, scope_id: &str, subject: &str, now_ms: i64) -> Result<PresenceView, StoreError> {
        let devices = self.presence_devices(scope_id, subject, now_ms).await?;
        Ok(devices.into_iter().map(|(_, view)| view).fold(PresenceView::default(), PresenceView::merge))
    }
    /// Each device's presence at `now_ms` (for managers, the device is the Kommo user).
    async fn presence_devices(
        &self,
        scope_id: &str,
        subject: &str,
        now_ms: i64,
    ) -> Result<Vec<(String, PresenceView)>, StoreError>;
    /// Compare-and-set of what the chat service was last told about a device's presence:
    /// true when this call changed it to `online` (and so the one push is due).
    async fn mark_pushed(&self, scope_id: &str, subject: &str, device: &str, online: bool) -> Result<bool, StoreError>;
    /// What [`Self::mark_pushed`] last recorded (`None`: nothing yet): the state the chat
    /// service is to be told.
    async fn pushed(&self, scope_id: &str, subject: &str, device: &str) -> Result<Option<bool>, StoreError>;
}

/// How long a presence item outlives its window, so `last_seen_at` survives reconnects.
pub const PRESENCE_RETENTION_S: i64 = 30 * 24 * 3600;
