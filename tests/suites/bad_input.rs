//! The bad-input table (`shared::testing::bad_input`) on the DynamoDB-compatible server, each
//! case on a fresh table: limits only DynamoDB has (key sizes) are met here, and a request that
//! is a 400 in memory must not be a 500 there.

use std::sync::Arc;

use shared::adapters::dynamo::{DynamoStore, client_from_env, ensure_table};
use shared::testing::bad_input::*;
use shared::testing::sim::Sim;

/// A simulation on a fresh table of the DynamoDB-compatible server (`TEST_DYNAMODB_ENDPOINT`,
/// which tests/run-all and tests/load/with-servers start: never skipped without it).
async fn on_dynamodb() -> Sim<DynamoStore> {
    let endpoint = std::env::var("TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| {
        panic!("TEST_DYNAMODB_ENDPOINT is not set: run through tests/run-all or tests/load/with-servers")
    });
    let client = client_from_env(Some(&endpoint));
    let table = format!("bad-input-{}", hex::encode(shared::random::random_bytes::<6>()));
    ensure_table(&client, &table).await.expect("a fresh table");
    Sim::on_store(Sim::local_config(&[]), Arc::new(DynamoStore::new(client, table)))
}

#[tokio::test]
async fn every_malformed_request_gets_a_json_4xx_and_changes_nothing_on_dynamodb() {
    every_malformed_request_gets_a_json_4xx_and_changes_nothing(on_dynamodb().await).await;
}

#[tokio::test]
async fn ids_at_their_limit_are_served_on_dynamodb() {
    ids_at_their_limit_are_served(on_dynamodb().await).await;
}

#[tokio::test]
async fn a_replay_at_the_edge_of_the_window_changes_nothing_on_dynamodb() {
    a_replay_at_the_edge_of_the_window_changes_nothing(on_dynamodb().await).await;
}
