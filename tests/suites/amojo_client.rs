//! The Kommo client against the independent fake amojo (tests/fakes/fake_amojo.py), which
//! checks every signature as Kommo does and can be told to fail.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shared::adapters::amojo::AmojoClient;
use shared::models::kommo::*;
use shared::models::status::{DeliveryError, DeliveryStatus};
use shared::ports::kommo::{KommoApi, KommoError};
use shared::rules::retry::RetryPolicy;
use shared::signing::Secret;
use shared::time::SystemClock;
use support::{Fake, unique};

/// Quick backoff; a `Retry-After` up to 5 × 300 ms is waited out in process.
const FAST_RETRIES: RetryPolicy =
    RetryPolicy { max_attempts: 4, base_delay: Duration::from_millis(20), max_delay: Duration::from_millis(300) };

fn client_with(fake: &Fake, channel_id: &str, secret: &str) -> AmojoClient {
    let http = shared::adapters::outbound::http_client(Duration::from_secs(2));
    AmojoClient::new(http, &fake.url, channel_id, Secret::new(secret), Arc::new(SystemClock), FAST_RETRIES)
}

fn typing(conversation: &str) -> TypingRequest {
    TypingRequest { conversation_id: conversation.into(), sender: SenderRef { id: "client-1".into() } }
}

#[tokio::test]
async fn every_call_is_accepted_by_the_fake_amojo() {
    let amojo = Fake::amojo();
    let channel = unique("chan");
    let client = client_with(&amojo, &channel, &amojo.secret);

    let connected = client.connect(&ConnectRequest::v2("acc-1", "Bridge")).await.unwrap();
    assert_eq!(connected.scope_id, format!("{channel}_acc-1"));
    let scope = connected.scope_id;

    let mut user = Participant::with_id("client-1");
    user.name = Some("Adam".into());
    let chat = client
        .create_chat(&scope, &CreateChatRequest { conversation_id: "conv-1".into(), source: None, user: user.clone() })
        .await
        .unwrap();
    let chat_id = chat.id.expect("the fake names the chat");

    let payload = ImportPayload {
        timestamp: 1_700_000_000,
        msec_timestamp: 1_700_000_000_123,
        msgid: "chat-msg-1".into(),
        conversation_id: "conv-1".into(),
        conversation_ref_id: None,
        sender: user,
        receiver: None,
        source: None,
        message: MessageContent::text("Hello, café ☕"),
        reply_to: None,
        silent: false,
    };
    let imported = client.import_message(&scope, &ImportMessageRequest::new_message(payload)).await.unwrap();
    let imported = imported.new_message.expect("the fake names the message");
    assert_eq!(imported.ref_id.as_deref(), Some("chat-msg-1"));
    assert_eq!(imported.conversation_id, Some(chat_id));

    client.typing(&scope, &typing("conv-1")).await.unwrap();
    let kommo_msgid = imported.msgid.expect("the fake names Kommo's msgid");
    let edit = EditPayload {
        timestamp: 1_700_000_001,
        msec_timestamp: 1_700_000_001_000,
        msgid: "chat-msg-1".into(),
        conversation_id: "conv-1".into(),
        message: MessageContent::text("Hello again"),
    };
    client.edit_message(&scope, &EditMessageRequest::edit_message(edit)).await.unwrap();
    let reaction = ReactRequest {
        conversation_id: "conv-1".into(),
        conversation_ref_id: None,
        message: KommoMessageRef { msgid: Some("chat-msg-1".into()), id: None },
        user: SenderRef { id: "client-1".into() },
        kind: "react".into(),
        emoji: Some("👍".into()),
    };
    client.react(&scope, &reaction).await.unwrap();
    for status in [
        DeliveryStatus::Delivered,
        DeliveryStatus::Read,
        DeliveryStatus::Failed(DeliveryError::from_code(905, Some("Blocked by the user")).unwrap()),
    ] {
        let request = DeliveryStatusRequest { msgid: kommo_msgid.clone(), status };
        client.delivery_status(&scope, &request).await.unwrap();
    }
    client.disconnect(&DisconnectRequest { account_id: "acc-1".into() }).await.unwrap();

    let calls = [amojo.calls(&channel).await, amojo.calls(&scope).await].concat();
    assert_eq!(calls.len(), 10);
    for call in &calls {
        assert_eq!(call["signature_ok"], true, "{call}");
    }
    let status_bodies: Vec<_> = calls
        .iter()
        .filter(|c| c["path"].as_str().unwrap().ends_with("/delivery_status"))
        .map(|c| c["body"].clone())
        .collect();
    assert_eq!(
        status_bodies[2],
        json!({"msgid": kommo_msgid, "delivery_status": -1, "error_code": 905, "error": "Blocked by the user"})
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_kommos_error_and_not_retried() {
    let amojo = Fake::amojo();
    let scope = unique("chan_");
    let client = client_with(&amojo, "chan", "not-the-channel-secret");
    let error = client.typing(&scope, &typing("conv-1")).await.unwrap_err();
    assert_eq!(
        error,
        KommoError::Rejected {
            status: 403,
            error_type: "ORIGIN_INVALID_SIGNATURE".into(),
            description: "invalid signature".into()
        }
    );
    assert_eq!(amojo.calls(&scope).await.len(), 1, "a 4xx is not retried");
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_and_each_attempt_is_signed_anew() {
    let amojo = Fake::amojo();
    let scope = unique("chan_");
    amojo
        .script(&scope, json!([{"status": 429, "headers": {"Retry-After": "1"}}, {"status": 503}, {"close": true}]))
        .await;
    let client = client_with(&amojo, "chan", &amojo.secret);
    let started = Instant::now();
    let request = DeliveryStatusRequest { msgid: "kommo-1".into(), status: DeliveryStatus::Delivered };
    client.delivery_status(&scope, &request).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    let calls = amojo.calls(&scope).await;
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| c["signature_ok"] == true));
    let dates: std::collections::HashSet<_> =
        calls.iter().map(|c| c["headers"]["date"].as_str().unwrap().to_owned()).collect();
    assert!(dates.len() >= 2, "a retry a second later carries a new Date: {dates:?}");
}

#[tokio::test]
async fn retries_end_in_a_typed_unavailable_error() {
    let amojo = Fake::amojo();
    let scope = unique("chan_");
    amojo
        .script(&scope, json!([{"status": 500}, {"status": 500}, {"status": 502}, {"status": 500}, {"status": 500}]))
        .await;
    let client = client_with(&amojo, "chan", &amojo.secret);
    let request = DeliveryStatusRequest { msgid: "kommo-1".into(), status: DeliveryStatus::Read };
    let error = client.delivery_status(&scope, &request).await.unwrap_err();
    assert!(matches!(error, KommoError::Unavailable { attempts: 4, status: Some(500), .. }), "{error:?}");
    assert_eq!(amojo.calls(&scope).await.len(), 4);
}

#[tokio::test]
async fn typing_gets_one_quick_retry_at_most() {
    let amojo = Fake::amojo();
    let scope = unique("chan_");
    amojo.script(&scope, json!([{"status": 500}, {"status": 500}, {"status": 500}])).await;
    let client = client_with(&amojo, "chan", &amojo.secret);
    let error = client.typing(&scope, &typing("conv-1")).await.unwrap_err();
    assert!(matches!(error, KommoError::Unavailable { attempts: 2, .. }), "{error:?}");
    assert_eq!(amojo.calls(&scope).await.len(), 2);
}

#[tokio::test]
async fn a_slow_amojo_times_out_and_is_retried() {
    let amojo = Fake::amojo();
    let scope = unique("chan_");
    let client = client_with(&amojo, "chan", &amojo.secret);
    // Kommo shows typing only in a chat it has.
    let mut user = Participant::with_id("client-1");
    user.name = Some("Adam".into());
    let chat = CreateChatRequest { conversation_id: "conv-1".into(), source: None, user };
    client.create_chat(&scope, &chat).await.unwrap();
    amojo.script(&scope, json!([{"delay_ms": 3000}])).await;
    client.typing(&scope, &typing("conv-1")).await.unwrap();
    assert_eq!(amojo.calls(&scope).await.len(), 3);
}

#[tokio::test]
async fn a_long_retry_after_is_handed_back_to_the_queue_instead_of_waited_out() {
    let amojo = Fake::amojo();
    let scope = unique("chan_");
    amojo.script(&scope, json!([{"status": 429, "headers": {"Retry-After": "30"}}])).await;
    let client = client_with(&amojo, "chan", &amojo.secret);
    let started = Instant::now();
    let request = DeliveryStatusRequest { msgid: "kommo-1".into(), status: DeliveryStatus::Delivered };
    let error = client.delivery_status(&scope, &request).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(error, KommoError::Unavailable { attempts: 1, retry_after: Some(wait), .. } if wait == Duration::from_secs(30)),
        "{error:?}"
    );
}

/// Whatever a caller passes, a path segment that a server could read another way (a
/// dot-segment, a slash, a query, an escape) is refused before anything is signed or sent: the
/// path signed is always the path sent.
#[tokio::test]
async fn a_path_segment_that_is_not_a_plain_id_is_never_sent() {
    let amojo = Fake::amojo();
    let scope = unique("chan_");
    let client = client_with(&amojo, "chan", &amojo.secret);
    for msgid in ["..", ".", "a/b", "a?b", "a#b", "a%2Fb", ""] {
        let request = DeliveryStatusRequest { msgid: msgid.into(), status: DeliveryStatus::Read };
        let error = client.delivery_status(&scope, &request).await.unwrap_err();
        assert!(
            matches!(&error, KommoError::Rejected { error_type, .. } if error_type == "invalid_path"),
            "{msgid:?}: {error:?}"
        );
    }
    for scope_id in [format!("{scope}/extra"), format!("{scope}/../x"), format!("{scope}?x=1")] {
        let error = client.typing(&scope_id, &typing("conv-1")).await.unwrap_err();
        assert!(matches!(error, KommoError::Rejected { status: 400, .. }), "{scope_id}: {error:?}");
    }
    assert!(amojo.calls(&scope).await.is_empty(), "nothing was sent");
    assert!(amojo.calls("").await.is_empty(), "nothing was sent anywhere");
}
