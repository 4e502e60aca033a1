//! The manager directory: each scope's account's managers.

use async_trait::async_trait;

use super::StoreError;

/// A manager of an account: their Chat API id, Kommo user id and name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownManager {
    pub amojo_id: String,
    pub kommo_user_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An account's managers as last read from Kommo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagerList {
    pub fetched_at_ms: i64,
    pub managers: Vec<KnownManager>,
}

impl ManagerList {
    /// Kommo's users as the directory keeps them: those with a Chat API id.
    pub fn from_users(users: &[crate::models::oauth::KommoUser], fetched_at_ms: i64) -> Self {
        let managers = users
            .iter()
            .filter_map(|user| {
                let amojo_id = user.amojo_id.clone().filter(|id| !id.is_empty())?;
                let name = user.name.clone().filter(|name| !name.is_empty());
                Some(KnownManager { amojo_id, kommo_user_id: user.id, name })
            })
            .collect();
        Self { fetched_at_ms, managers }
    }
}

/// The managers of each scope's account (one item per scope: one read names every manager).
#[async_trait]
pub trait ManagerDirectory: Send + Sync {
    async fn managers_of(&self, scope_id: &str) -> Result<Option<ManagerList>, StoreError>;
    /// Replaces the scope's directory.
    async fn put_managers(&self, scope_id: &str, list: &ManagerList) -> Result<(), StoreError>;
}
