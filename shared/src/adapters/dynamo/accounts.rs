//! [`AccountRegistry`] on the table: the account's item, its scope's (what events read), and an
//! entry in the one partition that lists the accounts (what the daily token sweep and
//! `bridge-cli accounts` read with a `Query`, so that listing never reads the whole table).

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{DynamoStore, Item, conditional, n, num, s, text, unavailable};
use crate::ports::store::{AccountRecord, AccountRegistry, AccountState, ScopeAccount, StoreError};

#[async_trait]
impl AccountRegistry for DynamoStore {
    async fn put_account(&self, record: &AccountRecord) -> Result<(), StoreError> {
        self.ops.write();
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("account#{}", record.account_id)))
            .item("sk", s("account"))
            .item("account_id", n(record.account_id as i64))
            .item("host", s(&record.host))
            .item("amojo_id", s(&record.amojo_id))
            .item("scope_id", s(&record.scope_id))
            .item("state", s(record.state.as_str()))
            .item("access_expires_at_ms", n(record.access_expires_at_ms))
            .item("token_version", n(record.token_version as i64))
            .item("installed_at_ms", n(record.installed_at_ms))
            .item("tokens_renewed_at_ms", n(record.tokens_renewed_at_ms))
            .item("users_refused", AttributeValue::Bool(record.users_refused));
        if let Some(sealed) = &record.sealed_tokens {
            put = put.item("sealed_tokens", s(sealed));
        }
        put.send().await.map_err(unavailable)?;
        self.ops.write();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("{}#account", record.scope_id)))
            .item("sk", s("account"))
            .item("account_id", n(record.account_id as i64))
            .item("state", s(record.state.as_str()))
            .send()
            .await
            .map_err(unavailable)?;
        self.index_account(record.account_id).await
    }

    async fn get_account(&self, account_id: u64) -> Result<Option<AccountRecord>, StoreError> {
        let item = self.get_item(format!("account#{account_id}"), "account").await?;
        item.map(|item| account_record(&item)).transpose()
    }

    async fn account_of_scope(&self, scope_id: &str) -> Result<Option<ScopeAccount>, StoreError> {
        let item = self.get_item(format!("{scope_id}#account"), "account").await?;
        let Some(item) = item else { return Ok(None) };
        let account_id = num(&item, "account_id").ok_or_else(|| StoreError::Corrupt("scope without account".into()))?;
        let state = text(&item, "state").unwrap_or_else(|| AccountState::Connected.as_str().into());
        let state = AccountState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("scope state {state:?}")))?;
        Ok(Some(ScopeAccount { account_id: account_id as u64, state }))
    }

    async fn replace_tokens(
        &self,
        account_id: u64,
        expected_version: u64,
        sealed_tokens: &str,
        access_expires_at_ms: i64,
        renewed_at_ms: i64,
    ) -> Result<bool, StoreError> {
        // A retried write that had landed fails its own condition and reads as lost: the caller
        // reads the account again and finds its own tokens, so nothing is lost either way.
        let result = self
            .update(format!("account#{account_id}"), "account")
            .condition_expression("token_version = :expected AND attribute_exists(sealed_tokens)")
            .update_expression(
                "SET sealed_tokens = :sealed, access_expires_at_ms = :expires, token_version = :next, \
                 tokens_renewed_at_ms = :renewed",
            )
            .expression_attribute_values(":renewed", n(renewed_at_ms))
            .expression_attribute_values(":expected", n(expected_version as i64))
            .expression_attribute_values(":next", n(expected_version as i64 + 1))
            .expression_attribute_values(":sealed", s(sealed_tokens))
            .expression_attribute_values(":expires", n(access_expires_at_ms))
            .send()
            .await;
        conditional(result)
    }

    async fn set_account_state(&self, account_id: u64, state: AccountState) -> Result<(), StoreError> {
        let update = self
            .update(format!("account#{account_id}"), "account")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":state", s(state.as_str()));
        let update = match state {
            AccountState::Disconnected => update
                .update_expression("SET #state = :state ADD token_version :one REMOVE sealed_tokens")
                .expression_attribute_values(":one", n(1)),
            _ => update.update_expression("SET #state = :state"),
        };
        // `state` is a DynamoDB reserved word.
        let update = update.expression_attribute_names("#state", "state").return_values(ReturnValue::AllNew);
        let account = match update.send().await {
            Ok(output) => output.attributes,
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => return Ok(()), // not registered
            Err(error) => return Err(unavailable(error)),
        };
        self.scope_follows(account.as_ref(), state).await
    }

    async fn transition_account(
        &self,
        account_id: u64,
        from: AccountState,
        to: AccountState,
    ) -> Result<bool, StoreError> {
        let update = self
            .update(format!("account#{account_id}"), "account")
            .condition_expression("#state = :from")
            .expression_attribute_values(":from", s(from.as_str()))
            .expression_attribute_values(":state", s(to.as_str()));
        let update = match to {
            AccountState::Disconnected => update
                .update_expression("SET #state = :state ADD token_version :one REMOVE sealed_tokens")
                .expression_attribute_values(":one", n(1)),
            _ => update.update_expression("SET #state = :state"),
        };
        let update = update.expression_attribute_names("#state", "state").return_values(ReturnValue::AllNew);
        // A retried write that had landed fails its own condition and reads as not moved: the
        // caller reads the account again and finds it moved.
        let account = match update.send().await {
            Ok(output) => output.attributes,
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => return Ok(false),
            Err(error) => return Err(unavailable(error)),
        };
        self.scope_follows(account.as_ref(), to).await?;
        Ok(true)
    }

    async fn note_users_refused(&self, account_id: u64, refused: bool) -> Result<bool, StoreError> {
        // A missing attribute reads as false (an account stored before it existed).
        let changes = match refused {
            true => "attribute_exists(pk) AND (attribute_not_exists(users_refused) OR users_refused = :was)",
            false => "users_refused = :was",
        };
        let result = self
            .update(format!("account#{account_id}"), "account")
            .condition_expression(changes)
            .update_expression("SET users_refused = :refused")
            .expression_attribute_values(":refused", AttributeValue::Bool(refused))
            .expression_attribute_values(":was", AttributeValue::Bool(!refused))
            .send()
            .await;
        conditional(result)
    }

    async fn list_accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let account_ids = match self.get_item(ACCOUNTS_PK.into(), INDEXED_SK).await? {
            Some(_) => self.indexed_account_ids().await?,
            None => self.index_accounts_stored_before_the_index().await?,
        };
        let mut accounts = Vec::with_capacity(account_ids.len());
        for account_id in account_ids {
            if let Some(account) = self.get_account(account_id).await? {
                accounts.push(account);
            }
        }
        accounts.sort_by_key(|account| account.account_id);
        Ok(accounts)
    }
}

/// The partition listing every account, one entry each (`sk` `account#{id}`), and the entry
/// saying every account stored before the list existed is in it.
const ACCOUNTS_PK: &str = "accounts";
const INDEXED_SK: &str = "#indexed";

impl DynamoStore {
    async fn index_account(&self, account_id: u64) -> Result<(), StoreError> {
        self.ops.write();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(ACCOUNTS_PK))
            .item("sk", s(format!("account#{account_id}")))
            .item("account_id", n(account_id as i64))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn indexed_account_ids(&self) -> Result<Vec<u64>, StoreError> {
        let mut account_ids = Vec::new();
        let mut start = None;
        loop {
            self.ops.read();
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(ACCOUNTS_PK))
                .expression_attribute_values(":prefix", s("account#"))
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .await
                .map_err(unavailable)?;
            account_ids.extend(page.items().iter().filter_map(|item| num(item, "account_id")).map(|id| id as u64));
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(account_ids);
            }
        }
    }

    /// Once per table: accounts stored by a version that kept no list are found with one `Scan`
    /// and listed, then the list is marked complete. An account stored meanwhile lists itself
    /// (`put_account`), so none is missed; two of these at once write the same entries.
    async fn index_accounts_stored_before_the_index(&self) -> Result<Vec<u64>, StoreError> {
        let mut account_ids = Vec::new();
        let mut start = None;
        loop {
            self.ops.read();
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :sk AND begins_with(pk, :prefix)")
                .expression_attribute_values(":sk", s("account"))
                .expression_attribute_values(":prefix", s("account#"))
                .projection_expression("account_id")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            account_ids.extend(page.items().iter().filter_map(|item| num(item, "account_id")).map(|id| id as u64));
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        for account_id in &account_ids {
            self.index_account(*account_id).await?;
        }
        self.ops.write();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(ACCOUNTS_PK))
            .item("sk", s(INDEXED_SK))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(account_ids)
    }

    /// Events read the state from the scope's item (one read each): it follows the account's.
    async fn scope_follows(&self, account: Option<&Item>, state: AccountState) -> Result<(), StoreError> {
        let Some(scope_id) = account.and_then(|item| text(item, "scope_id")) else { return Ok(()) };
        self.update(format!("{scope_id}#account"), "account")
            .update_expression("SET #state = :state")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(state.as_str()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

fn account_record(item: &Item) -> Result<AccountRecord, StoreError> {
    let required = |name: &str| text(item, name).ok_or_else(|| StoreError::Corrupt(format!("account without {name}")));
    let state = required("state")?;
    Ok(AccountRecord {
        account_id: num(item, "account_id").unwrap_or_default() as u64,
        host: required("host")?,
        amojo_id: required("amojo_id")?,
        scope_id: required("scope_id")?,
        state: AccountState::parse(&state).ok_or_else(|| StoreError::Corrupt(format!("account state {state:?}")))?,
        sealed_tokens: text(item, "sealed_tokens"),
        access_expires_at_ms: num(item, "access_expires_at_ms").unwrap_or_default(),
        token_version: num(item, "token_version").unwrap_or_default() as u64,
        installed_at_ms: num(item, "installed_at_ms").unwrap_or_default(),
        tokens_renewed_at_ms: num(item, "tokens_renewed_at_ms").unwrap_or_default(),
        users_refused: item.get("users_refused").and_then(|value| value.as_bool().ok()).copied().unwrap_or(false),
    })
}
