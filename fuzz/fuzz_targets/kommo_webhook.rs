//! `POST /kommo/webhook/{scope_id}` through `Bridge::handle`, the fuzz input as the body,
//! correctly signed with the channel secret so the parser and the handlers behind the signature
//! are reached. The scope names the body's `account_id` when it has a usable one (so any
//! account's webhook gets past the scope check), else the served account's.
//!
//! The bridge already holds a relayed manager message, an imported client message, presence
//! and typing in both directions, so a webhook can land on existing state (duplicates, lease
//! extensions). After the answer, the work it scheduled runs (relays, typing checks, reports).
//! Every answer must be a JSON 200 or 4xx, never a 5xx or a panic.
//! What was sent to Kommo and the chat service keeps the bridge's promises
//! (`Harness::check_invariants`): statuses only forward, each message relayed, imported and
//! read-reported once, no typing started twice without a stop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared_fuzz::{CHANNEL_ID, Harness, MAX_DUE_RUNS, SCOPE, account_in, block_on};

fuzz_target!(|body: &[u8]| {
    block_on(async {
        let harness = Harness::new();
        harness.seed_state().await;
        let scope = account_in(body).map_or_else(|| SCOPE.to_owned(), |account| format!("{CHANNEL_ID}_{account}"));
        harness.kommo_webhook(&scope, body).await;
        harness.run_timers(MAX_DUE_RUNS).await;
        harness.check_invariants();
    });
});
