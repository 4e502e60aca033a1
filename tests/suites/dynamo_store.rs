//! The storage conformance suite against a real DynamoDB-compatible server (Dynoxide, started
//! by tests/run-all and named by TEST_DYNAMODB_ENDPOINT): the same cases the in-memory store
//! passes, with real conditional writes.

mod support;

use std::sync::Arc;

use shared::adapters::dynamo::{DynamoStore, client_from_env, ensure_table};
use tokio::sync::OnceCell;

const TABLE: &str = "bridge-conformance";

async fn store() -> Arc<DynamoStore> {
    static TABLE_READY: OnceCell<()> = OnceCell::const_new();
    let endpoint = support::required_env("TEST_DYNAMODB_ENDPOINT");
    let client = client_from_env(Some(&endpoint));
    TABLE_READY.get_or_init(|| async { ensure_table(&client, TABLE).await.expect("the table is created") }).await;
    Arc::new(DynamoStore::new(client, TABLE))
}

shared::store_conformance_tests!(store().await);

#[tokio::test]
async fn creating_the_table_twice_is_harmless_and_enables_ttl() {
    let client = client_from_env(Some(&support::required_env("TEST_DYNAMODB_ENDPOINT")));
    let table = support::unique("bridge-ttl-");
    ensure_table(&client, &table).await.unwrap();
    ensure_table(&client, &table).await.unwrap();
    let ttl = client.describe_time_to_live().table_name(&table).send().await.unwrap();
    let description = ttl.time_to_live_description().expect("a TTL description");
    assert_eq!(description.attribute_name(), Some("expires_at"));
}

#[tokio::test]
async fn concurrent_claims_let_exactly_one_through() {
    use shared::ports::store::{DedupeKeys, KeyClaim, LeaseKey, TypingLeases};
    let store = store().await;
    let scope = support::unique("chan_");
    let now = shared::time::Clock::now_ms(&shared::time::SystemClock);
    let claims = (0..200).map(|_| {
        let store = store.clone();
        let scope = scope.clone();
        tokio::spawn(async move { store.claim(&scope, "once", now, 60_000).await.unwrap() })
    });
    let mut winners = 0;
    for claim in claims {
        winners += usize::from(matches!(claim.await.unwrap(), KeyClaim::Claimed { .. }));
    }
    assert_eq!(winners, 1);

    let key = LeaseKey::manager(&scope, "conv", "m");
    let starts = (0..50).map(|i| {
        let store = store.clone();
        let key = key.clone();
        tokio::spawn(async move { store.extend(&key, now + 5000 + i).await.unwrap() })
    });
    let mut started = 0;
    for change in starts {
        started += usize::from(change.await.unwrap() == shared::ports::store::LeaseChange::Started);
    }
    assert_eq!(started, 1, "one conditional write starts the lease, the others extend or see it");
}

/// Accounts are listed from their own partition (a `Query`, never a read of the whole table),
/// and accounts stored by a version that kept no list are found once, listed, and kept.
#[tokio::test]
async fn accounts_stored_before_the_list_existed_are_listed_once_and_then_by_query() {
    use shared::adapters::dynamo::AttributeValue;
    use shared::ports::store::{AccountRecord, AccountRegistry, AccountState, Store};
    let client = client_from_env(Some(&support::required_env("TEST_DYNAMODB_ENDPOINT")));
    let table = support::unique("bridge-accounts-");
    ensure_table(&client, &table).await.unwrap();
    // An account item as the previous version wrote it: no entry in the list.
    let text = |value: &str| AttributeValue::S(value.to_owned());
    client
        .put_item()
        .table_name(&table)
        .item("pk", text("account#7"))
        .item("sk", text("account"))
        .item("account_id", AttributeValue::N("7".into()))
        .item("host", text("old.kommo.com"))
        .item("amojo_id", text("amojo-7"))
        .item("scope_id", text("chan_amojo-7"))
        .item("state", text("connected"))
        .item("token_version", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let store = DynamoStore::new(client.clone(), &table);
    let listed = |accounts: Vec<AccountRecord>| accounts.iter().map(|a| a.account_id).collect::<Vec<_>>();
    assert_eq!(listed(store.list_accounts().await.unwrap()), [7], "found by the one-time scan");

    let new = AccountRecord {
        account_id: 3,
        host: "new.kommo.com".into(),
        amojo_id: "amojo-3".into(),
        scope_id: "chan_amojo-3".into(),
        state: AccountState::Connected,
        sealed_tokens: None,
        access_expires_at_ms: 0,
        token_version: 1,
        installed_at_ms: 0,
        tokens_renewed_at_ms: 0,
        users_refused: false,
    };
    store.put_account(&new).await.unwrap();
    let before = store.op_counts();
    assert_eq!(listed(store.list_accounts().await.unwrap()), [3, 7]);
    let after = store.op_counts();
    // The marker, one page of the list, one read per account: no scan, nothing written.
    assert_eq!((after.reads - before.reads, after.writes - before.writes), (4, 0));
}
