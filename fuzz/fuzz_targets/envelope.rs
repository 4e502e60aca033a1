//! The wire models parsed straight from the fuzz bytes: the Kommo webhook envelope, the chat
//! service's events, the bridge's own events, due work as it travels through SQS (also as the
//! body of each record of an SQS batch), the delivery-status request and the amojo calls and
//! answers.
//!
//! Whatever parses must write back as JSON that parses to the same value, and writing that
//! value again must give the same bytes: nothing a relay carries changes on the way through.
//! Never a panic, whatever the bytes.
#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shared::models::chat::{BridgeEvent, ChatEvent};
use shared::models::kommo::*;
use shared::models::status::ErrorText;
use shared::ports::timers::DueWork;

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) -> Option<T> {
    let parsed: T = serde_json::from_slice(data).ok()?;
    let name = std::any::type_name::<T>();
    let written = serde_json::to_vec(&parsed).unwrap_or_else(|e| panic!("{name} does not serialise: {e}"));
    let again: T = serde_json::from_slice(&written).unwrap_or_else(|e| {
        panic!("{name} does not read back what it wrote ({e}): {}", String::from_utf8_lossy(&written))
    });
    assert_eq!(parsed, again, "{name} changed on the way through: {}", String::from_utf8_lossy(&written));
    let rewritten = serde_json::to_vec(&again).expect("serialises");
    assert_eq!(written, rewritten, "{name} writes differently the second time");
    Some(parsed)
}

fuzz_target!(|data: &[u8]| {
    if let Some(webhook) = round_trip::<KommoWebhook>(data) {
        match webhook.kind() {
            WebhookKind::ManagerMessage(message) => {
                let _ = (message.conversation.integration_id(), message.receiver.integration_id());
            }
            WebhookKind::ManagerTyping(typing) => {
                let _ = typing.conversation.integration_id();
            }
            WebhookKind::Reaction(_) | WebhookKind::Other => {}
        }
    }
    if let Some(event) = round_trip::<ChatEvent>(data) {
        let _ = (event.scope_id(), event.type_name());
    }
    if let Some(event) = round_trip::<BridgeEvent>(data) {
        let _ = event.scope_id();
    }
    if let Some(work) = round_trip::<DueWork>(data) {
        let _ = work.kind();
    }
    round_trip::<DeliveryStatusRequest>(data);
    round_trip::<ErrorText>(data);
    round_trip::<ManagerMessage>(data);
    round_trip::<MessageContent>(data);
    round_trip::<ConnectRequest>(data);
    round_trip::<ConnectResponse>(data);
    round_trip::<CreateChatRequest>(data);
    round_trip::<CreateChatResponse>(data);
    round_trip::<ImportMessageRequest>(data);
    round_trip::<ImportMessageResponse>(data);
    round_trip::<TypingRequest>(data);
    // The batch itself is the runtime's type (typing-expiry); what the bridge parses of it is
    // each record's body.
    if let Ok(batch) = serde_json::from_slice::<serde_json::Value>(data) {
        let bodies = batch["Records"].as_array().into_iter().flatten().filter_map(|record| record["body"].as_str());
        for body in bodies {
            round_trip::<DueWork>(body.as_bytes());
        }
    }
});
