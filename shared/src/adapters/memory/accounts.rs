//! [`AccountRegistry`] in memory.

use async_trait::async_trait;

use super::MemoryStore;
use crate::ports::store::{AccountRecord, AccountRegistry, AccountState, ScopeAccount, StoreError};

#[async_trait]
impl AccountRegistry for MemoryStore {
    async fn put_account(&self, record: &AccountRecord) -> Result<(), StoreError> {
        self.ops.write();
        self.ops.write();
        let mut state = self.state();
        state.accounts_by_scope.insert(record.scope_id.clone(), record.account_id);
        state.accounts.insert(record.account_id, record.clone());
        Ok(())
    }

    async fn get_account(&self, account_id: u64) -> Result<Option<AccountRecord>, StoreError> {
        self.ops.read();
        Ok(self.state().accounts.get(&account_id).cloned())
    }

    async fn account_of_scope(&self, scope_id: &str) -> Result<Option<ScopeAccount>, StoreError> {
        self.ops.read();
        let state = self.state();
        let account_id = state.accounts_by_scope.get(scope_id).copied();
        Ok(account_id
            .and_then(|id| state.accounts.get(&id))
            .map(|account| ScopeAccount { account_id: account.account_id, state: account.state }))
    }

    async fn replace_tokens(
        &self,
        account_id: u64,
        expected_version: u64,
        sealed_tokens: &str,
        access_expires_at_ms: i64,
        renewed_at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let Some(account) = state.accounts.get_mut(&account_id) else { return Ok(false) };
        if account.token_version != expected_version || account.sealed_tokens.is_none() {
            return Ok(false);
        }
        account.sealed_tokens = Some(sealed_tokens.to_owned());
        account.access_expires_at_ms = access_expires_at_ms;
        account.tokens_renewed_at_ms = renewed_at_ms;
        account.token_version += 1;
        Ok(true)
    }

    async fn set_account_state(&self, account_id: u64, new_state: AccountState) -> Result<(), StoreError> {
        // The account and its scope's item, as DynamoDB writes them.
        self.ops.write();
        self.ops.write();
        let mut state = self.state();
        if let Some(account) = state.accounts.get_mut(&account_id) {
            account.state = new_state;
            if new_state == AccountState::Disconnected {
                account.sealed_tokens = None;
                account.token_version += 1;
            }
        }
        Ok(())
    }

    async fn transition_account(
        &self,
        account_id: u64,
        from: AccountState,
        to: AccountState,
    ) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let Some(account) = state.accounts.get_mut(&account_id).filter(|account| account.state == from) else {
            return Ok(false);
        };
        self.ops.write();
        account.state = to;
        if to == AccountState::Disconnected {
            account.sealed_tokens = None;
            account.token_version += 1;
        }
        Ok(true)
    }

    async fn note_users_refused(&self, account_id: u64, refused: bool) -> Result<bool, StoreError> {
        self.ops.write();
        let mut state = self.state();
        let Some(account) = state.accounts.get_mut(&account_id).filter(|account| account.users_refused != refused)
        else {
            return Ok(false);
        };
        account.users_refused = refused;
        Ok(true)
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.ops.read();
        let mut accounts: Vec<_> = self.state().accounts.values().cloned().collect();
        accounts.sort_by_key(|account| account.account_id);
        Ok(accounts)
    }
}
