//! The Kommo models read Kommo's own published examples (the product page's, verbatim, and the
//! request/response examples of Kommo's OpenAPI description) and write them back unchanged.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shared::models::kommo::*;
use shared::models::status::{DeliveryError, DeliveryStatus};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/kommo/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
}

/// Parses a fixture into `T` and checks that writing it back gives the same JSON.
fn round_trip<T: DeserializeOwned + Serialize>(name: &str) -> T {
    let original = fixture(name);
    let parsed: T = serde_json::from_value(original.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(serde_json::to_value(&parsed).unwrap(), original, "{name} changed on the way through");
    parsed
}

#[test]
fn the_product_pages_manager_typing_webhook_round_trips() {
    let webhook: KommoWebhook = round_trip("manager_typing_webhook_product_page");
    let WebhookKind::ManagerTyping(typing) = webhook.kind() else { panic!("not typing: {webhook:?}") };
    assert_eq!(typing.expired_at, 1_670_585_315);
    assert_eq!(typing.user.id, "b0bc49f0-ec21-4463-965f-1fe1d4cd5b89");
    assert_eq!(typing.conversation.integration_id(), "62ef74a4-80c5-403d-93d9-bada6302810f");
}

#[test]
fn the_product_pages_typing_call_round_trips() {
    let typing: TypingRequest = round_trip("typing_request_product_page");
    assert_eq!(typing.sender.id, "209beccc-4f66-46ff-b06f-d245fca1af0a");
    round_trip::<TypingRequest>("typing_request_openapi");
}

#[test]
fn a_real_accounts_manager_message_webhook_round_trips_blank_fields_and_all() {
    let webhook: KommoWebhook = round_trip("manager_message_webhook_real");
    let WebhookKind::ManagerMessage(message) = webhook.kind() else { panic!("not a message") };
    assert_eq!((message.sender.name.as_deref(), message.message.file_size), (Some(""), Some(0)));
    assert!(message.message.extra["markup"].is_null());
}

#[test]
fn an_outgoing_manager_message_webhook_round_trips() {
    let webhook: KommoWebhook = round_trip("manager_message_webhook");
    let WebhookKind::ManagerMessage(message) = webhook.kind() else { panic!("not a message") };
    assert_eq!(message.message.id.as_deref(), Some("1d2b6a80-8f25-4b3a-9c1e-0c2f5e7d9a31"));
    assert_eq!(message.message.kind, MessageKind::Text);
    assert_eq!(message.receiver.integration_id(), "client-409");
    assert_eq!(message.conversation.integration_id(), "62ef74a4-80c5-403d-93d9-bada6302810f");
}

#[test]
fn kommos_call_examples_round_trip() {
    let connect: ConnectRequest = round_trip("connect_request");
    assert_eq!(connect, ConnectRequest::v2("52fd2a28-d2eb-4bd8-b862-a67934927b38", "MyKommo"));
    let connected: ConnectResponse = round_trip("connect_response");
    assert!(connected.scope_id.ends_with("_52fd2a28-d2eb-4bd8-b862-b57934927b38"));
    round_trip::<CreateChatRequest>("create_chat_request");
    let chat: CreateChatResponse = round_trip("create_chat_response");
    assert!(chat.id.is_some());
    assert_eq!(chat.extra["user"]["client_id"], "XXXXXXX-86df-4c49-a0c3-a4816df41af0", "the rest is kept");
    let client_message: ImportMessageRequest = round_trip("import_client_message");
    assert!(client_message.payload.receiver.is_none(), "a client message carries the sender only");
    round_trip::<ImportMessageRequest>("import_manager_message");
    let media: ImportMessageRequest = round_trip("import_manager_media_message");
    assert_eq!(media.payload.message.kind, MessageKind::File);
    let imported: ImportMessageResponse = round_trip("import_response");
    assert_eq!(imported.new_message.as_ref().and_then(|m| m.ref_id.as_deref()), Some("msgid1"));
    assert!(imported.kommo_msgid().is_some());
}

#[test]
fn thinner_answers_than_documented_still_read() {
    // Only the ids the bridge uses are read, and none is required: a call that succeeded
    // must never turn into a failure because its answer says less than the docs.
    for body in ["{}", r#"{"new_message":{}}"#, r#"{"new_message":{"msgid":""}}"#] {
        let answer: ImportMessageResponse = serde_json::from_str(body).unwrap();
        assert_eq!(answer.kommo_msgid(), None, "{body}");
    }
    let chat: CreateChatResponse = serde_json::from_str("{}").unwrap();
    assert_eq!(chat.id, None);
}

#[test]
fn the_905_example_round_trips_and_needs_its_text() {
    let request: DeliveryStatusRequest = round_trip("delivery_status_error_905");
    let DeliveryStatus::Failed(DeliveryError::Other(text)) = &request.status else { panic!("{request:?}") };
    assert_eq!(text.as_str(), "An unknown error occurred");
}

#[test]
fn unknown_message_types_fields_and_webhook_kinds_are_kept() {
    let webhook = json!({
        "account_id": "a", "time": 1, "future_field": {"x": 1},
        "message": {
            "receiver": {"id": "r"}, "sender": {"id": "s"}, "conversation": {"id": "c"},
            "timestamp": 1, "message": {"id": "m", "type": "hologram", "hologram_url": "https://h/1"}
        }
    });
    let parsed: KommoWebhook = serde_json::from_value(webhook.clone()).unwrap();
    let WebhookKind::ManagerMessage(message) = parsed.kind() else { panic!() };
    assert_eq!(message.message.kind, MessageKind::Other("hologram".into()));
    assert_eq!(serde_json::to_value(&parsed).unwrap(), webhook);

    let reaction: KommoWebhook =
        serde_json::from_value(json!({"account_id": "a", "time": 1, "action": {"reaction": {"emoji": "👍"}}})).unwrap();
    assert!(matches!(reaction.kind(), WebhookKind::Reaction(_)));
    let other: KommoWebhook =
        serde_json::from_value(json!({"account_id": "a", "time": 1, "action": {"read": {}}})).unwrap();
    assert_eq!(other.kind(), WebhookKind::Other);
}
