//! Due work as the `typing-expiry` function receives it: the fuzz input is the body of one SQS
//! record, handed to `Dispatcher::run_batch` on a bridge that already holds state (the same
//! as `kommo_webhook`'s). Work that does not parse must be reported failed by its record id;
//! work that parses must run (nothing here fails on its own, so a failure is a bug) against
//! the store and the recording fakes, then whatever it scheduled runs too, and Kommo must
//! never be told a status backwards nor get a client message twice. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::ports::timers::DueWork;
use shared::queued::QueuedRecord;
use shared_fuzz::{Harness, MAX_DUE_RUNS, block_on};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    block_on(async {
        let harness = Harness::new();
        harness.seed_state().await;
        let record = QueuedRecord { message_id: "record-1".into(), body: body.to_owned() };
        let dispatcher = harness.bridge.dispatcher().expect("every side is wired");
        let failed = dispatcher.run_batch(vec![record]).await.len();
        if serde_json::from_str::<DueWork>(body).is_err() {
            assert_eq!(failed, 1, "unreadable work not reported failed");
        } else {
            assert_eq!(failed, 0, "readable work failed on a store and fakes that do not fail");
        }
        harness.run_timers(MAX_DUE_RUNS).await;
        harness.check_kommo_invariants();
    });
});
