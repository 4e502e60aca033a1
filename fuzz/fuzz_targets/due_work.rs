//! Due work as the `typing-expiry` function receives it: the fuzz input is the body of one SQS
//! record, handed to `Bridge::handle_sqs_batch` on a bridge that already holds state (the same
//! as `kommo_webhook`'s). Work that does not parse must be reported failed by its record id;
//! work that parses runs against the store and the recording fakes, then whatever it
//! scheduled runs too. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::due::{SqsEvent, SqsRecord};
use shared::timers::DueWork;
use shared_fuzz::{Harness, MAX_DUE_RUNS, block_on};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    block_on(async {
        let harness = Harness::new();
        harness.seed_state().await;
        let record = SqsRecord { message_id: "record-1".into(), body: body.to_owned() };
        let answer = harness.bridge.handle_sqs_batch(SqsEvent { records: vec![record] }).await;
        if serde_json::from_str::<DueWork>(body).is_err() {
            assert_eq!(answer.batch_item_failures.len(), 1, "unreadable work not reported failed");
        }
        harness.run_timers(MAX_DUE_RUNS).await;
    });
});
