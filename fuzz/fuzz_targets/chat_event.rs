//! The chat service's routes through `Bridge::handle`, signed with Standard Webhooks over
//! exactly what is sent: the fuzz input is the body of `POST /chat/events`, or, when it starts
//! with `?`, the query of `GET /chat/presence` (signed over the empty body).
//!
//! The bridge already holds a relayed manager message (Kommo msgid `kommo-1`, chat msgid
//! `chat-kommo-1`), an imported client message `chat-1`, presence and typing in both
//! directions, so status reports, typing and presence events land on existing state. After the
//! answer, the work it scheduled runs. Every answer must be a JSON 200 or 4xx, never a 5xx or a
//! panic.
//! What was sent to Kommo and the chat service keeps the bridge's promises
//! (`Harness::check_invariants`): statuses only forward, each message relayed, imported and
//! read-reported once, no typing started twice without a stop.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shared::app::routes::EntryPoint;
use shared_fuzz::{Harness, MAX_DUE_RUNS, block_on};

fuzz_target!(|data: &[u8]| {
    block_on(async {
        let harness = Harness::new();
        harness.seed_state().await;
        if let Some(query) = data.strip_prefix(b"?") {
            // A query the URI parser refuses never reaches the bridge (hyper or API Gateway
            // would refuse it first).
            let Ok(query) = std::str::from_utf8(query) else { return };
            let mut request = http::Request::get(format!("/chat/presence?{query}"));
            for (name, value) in harness.chat_signature(b"") {
                request = request.header(name, value);
            }
            let Ok(request) = request.body(Bytes::new()) else { return };
            harness.send(EntryPoint::ChatCallback, request).await;
        } else {
            harness.chat_event(data).await;
        }
        harness.run_timers(MAX_DUE_RUNS).await;
        harness.check_invariants();
    });
});
