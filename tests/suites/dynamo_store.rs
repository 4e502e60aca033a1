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
