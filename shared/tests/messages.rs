//! Messages and delivery status, simulated: relay both ways, automatic errors, the monotonic
//! register (with a property test), nothing lost and nothing sent twice.

mod support;

use proptest::prelude::*;
use shared::models::chat::BridgeEvent;
use shared::ports::chat::ChatError;
use shared::ports::store::{IncomingState, MessageRecords, RelayState};
use shared::testing::KommoCall;
use support::*;

fn down() -> ChatError {
    ChatError::Unavailable { attempts: 1, status: Some(500), reason: "HTTP 500".into() }
}

fn messages_delivered(sim: &Sim) -> Vec<String> {
    sim.chat
        .events()
        .into_iter()
        .filter_map(|e| match e.call {
            BridgeEvent::MessageCreated { reference, .. } => Some(reference),
            _ => None,
        })
        .collect()
}

async fn manager_writes(sim: &Sim, msgid: &str) {
    assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", msgid)).await.status(), 200);
}

#[tokio::test]
async fn a_manager_message_is_relayed_once_however_often_kommo_sends_it() {
    let sim = Sim::new();
    for _ in 0..3 {
        manager_writes(&sim, "kommo-1").await;
    }
    sim.advance_to(T0 + 60_000).await;
    assert_eq!(messages_delivered(&sim), vec!["kommo-1"]);
    let record = sim.store.get_message(SCOPE, "kommo-1").await.unwrap().unwrap();
    assert_eq!((record.relay, record.conversation_id.as_str()), (RelayState::Sent, "conv-1"));
    assert_eq!(record.chat_msgid.as_deref(), Some("chat-kommo-1"), "the chat service's own id is recorded");
    assert!(kommo_statuses(&sim).is_empty(), "delivery alone reports nothing: the chat service reports statuses");
}

#[tokio::test]
async fn a_real_accounts_webhook_with_blank_names_reaches_the_chat_service_with_none() {
    // Real webhooks write what they have no value for as "" (`sender.name`, the receiver's
    // contact fields) and carry `markup: null` and `file_size: 0` on a text.
    let sim = Sim::new();
    manager_writes(&sim, "kommo-1").await;
    sim.advance_to(T0 + 60_000).await;
    let [event] = &sim.chat.events()[..] else { panic!("{:?}", sim.chat.events()) };
    let BridgeEvent::MessageCreated { sender, receiver, message, .. } = &event.call else { panic!() };
    assert_eq!(sender.name, None, "never an empty manager name");
    assert_eq!((&receiver.name, &receiver.phone, &receiver.email, &receiver.avatar), (&None, &None, &None, &None));
    let relayed = serde_json::to_value(message).unwrap();
    assert_eq!((relayed["text"].as_str(), relayed["markup"].is_null()), (Some("hello"), true), "relayed as it came");
}

#[tokio::test]
async fn the_webhook_is_acknowledged_before_any_delivery_is_tried() {
    let sim = Sim::new();
    sim.chat.fail_next(std::iter::repeat_with(down).take(100));
    manager_writes(&sim, "kommo-1").await;
    assert!(sim.chat.events().is_empty());
    assert_eq!(sim.timers.pending().len(), 1, "the relay waits in the queue");
}

#[tokio::test]
async fn a_chat_service_failing_three_times_then_accepting_gets_the_message_once() {
    let sim = Sim::new();
    sim.chat.fail_next([down(), down(), down()]);
    manager_writes(&sim, "kommo-1").await;
    sim.advance_to(T0 + 600_000).await;
    assert_eq!(messages_delivered(&sim), vec!["kommo-1"]);
    assert!(kommo_statuses(&sim).is_empty());
}

#[tokio::test]
async fn a_chat_service_that_never_recovers_gets_903_reported_once_and_a_dead_letter() {
    let sim = Sim::new();
    sim.chat.fail_next(std::iter::repeat_with(down).take(100));
    manager_writes(&sim, "kommo-1").await;
    sim.advance_to(T0 + 600_000).await;
    assert_eq!(kommo_statuses(&sim), vec![("kommo-1".to_owned(), -1, Some(903))]);
    let record = sim.store.get_message(SCOPE, "kommo-1").await.unwrap().unwrap();
    assert_eq!((record.relay, record.status_rank), (RelayState::Failed, Some(-1)));
    assert!(sim.timers.pending().is_empty());
    let attempts = sim.kommo.calls().len();
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn refusals_become_kommo_errors_901_to_905() {
    let cases = [
        (422, "904", "unknown user", 904),
        (404, "901", "deleted", 901),
        (403, "forbidden", "", 902),
        (410, "gone", "", 902),
        (400, "blocked", "The user blocked this number", 905),
    ];
    for (status, code, message, expected) in cases {
        let sim = Sim::new();
        sim.chat.fail_next([ChatError::Rejected { status, code: code.into(), message: message.into() }]);
        manager_writes(&sim, "kommo-1").await;
        sim.advance_to(T0 + 60_000).await;
        assert_eq!(kommo_statuses(&sim), vec![("kommo-1".to_owned(), -1, Some(expected))], "{status} {code}");
        if expected == 905 {
            let text = sim.kommo.calls().into_iter().find_map(|c| match c.call {
                KommoCall::DeliveryStatus(request) => serde_json::to_value(&request).ok(),
                _ => None,
            });
            assert_eq!(text.unwrap()["error"], "The user blocked this number");
        }
    }
}

#[tokio::test]
async fn a_status_named_by_the_chat_services_msgid_reaches_kommo() {
    let sim = Sim::new();
    manager_writes(&sim, "kommo-1").await;
    sim.advance_to(T0 + 1000).await;
    // The chat service answered the relay with its own id, chat-kommo-1.
    let by_msgid = |msgid: &str| {
        format!(r#"{{"type":"message.status","scope_id":"{SCOPE}","msgid":"{msgid}","status":"delivered"}}"#)
    };
    assert_eq!(sim.chat_event(&by_msgid("chat-404")).await.status(), 404, "an unknown chat msgid");
    assert_eq!(sim.chat_event(&by_msgid("chat-kommo-1")).await.status(), 200);
    assert_eq!(sim.chat_event(&status_event("kommo-1", "read", "")).await.status(), 200);
    sim.advance_to(T0 + 2000).await;
    assert_eq!(kommo_statuses(&sim), vec![("kommo-1".to_owned(), 1, None), ("kommo-1".to_owned(), 2, None)]);
}

#[tokio::test]
async fn a_status_for_a_message_the_bridge_never_saw_is_still_forwarded_and_recorded() {
    let sim = Sim::new();
    assert_eq!(sim.chat_event(&status_event("kommo-old", "read", "")).await.status(), 200);
    sim.advance_to(T0 + 1000).await;
    assert_eq!(kommo_statuses(&sim), vec![("kommo-old".to_owned(), 2, None)]);
    assert_eq!(sim.store.get_message(SCOPE, "kommo-old").await.unwrap().unwrap().status_rank, Some(2));
}

#[tokio::test]
async fn read_up_to_marks_every_earlier_unread_message_once() {
    let sim = Sim::new();
    for i in 1..=5 {
        sim.advance_to(T0 + i * 1000).await;
        let body = manager_message("conv-1", "manager-1", &format!("kommo-{i}"))
            .replace(r#""timestamp":1,"#, &format!(r#""timestamp":1,"msec_timestamp":{},"#, T0 + i * 1000));
        sim.kommo_webhook(&body).await;
    }
    sim.advance_to(T0 + 10_000).await;
    sim.chat_event(&status_event("kommo-2", "read", "")).await;
    sim.chat_event(&status_event("kommo-4", "read", r#","up_to":true"#)).await;
    sim.advance_to(T0 + 11_000).await;
    let mut read: Vec<String> = kommo_statuses(&sim).into_iter().map(|(msgid, _, _)| msgid).collect();
    read.sort();
    assert_eq!(read, vec!["kommo-1", "kommo-2", "kommo-3", "kommo-4"], "kommo-2 once, kommo-5 untouched");
}

#[tokio::test]
async fn bad_status_events_change_nothing() {
    let sim = Sim::new();
    let bad = [
        status_event("kommo-1", "seen", ""),
        status_event("kommo-1", "failed", ""),
        status_event("kommo-1", "failed", r#","error_code":906"#),
        status_event("kommo-1", "failed", r#","error_code":905"#),
        status_event("kommo-1", "failed", r#","error_code":905,"error":"   ""#),
        status_event("kommo-1", "delivered", r#","error_code":903"#),
        status_event("kommo-1", "delivered", r#","up_to":true"#),
        format!(r#"{{"type":"message.status","scope_id":"{SCOPE}","status":"read"}}"#),
    ];
    for body in bad {
        let response = sim.chat_event(&body).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    sim.advance_to(T0 + 60_000).await;
    assert!(sim.kommo.calls().is_empty());
    assert_eq!(sim.store.get_message(SCOPE, "kommo-1").await.unwrap(), None);
}

#[tokio::test]
async fn a_client_message_creates_the_chat_once_and_is_imported_once() {
    let sim = Sim::new();
    sim.chat_event(&client_typing("typing.started", "conv-1", None)).await;
    for msgid in ["chat-1", "chat-1", "chat-2"] {
        assert_eq!(sim.chat_event(&client_message("conv-1", msgid)).await.status(), 200);
    }
    sim.advance_to(T0 + 60_000).await;
    let calls: Vec<&'static str> = sim
        .kommo
        .calls()
        .iter()
        .map(|c| match &c.call {
            KommoCall::CreateChat(_) => "create_chat",
            KommoCall::Import(_) => "import",
            KommoCall::Typing(_) => "typing",
            _ => "other",
        })
        .collect();
    // No typing call: Kommo has no chat before the first message, and its typing ends with it.
    assert_eq!(calls, vec!["create_chat", "import", "import"]);
    let imported = sim.kommo.calls().into_iter().find_map(|c| match c.call {
        KommoCall::Import(request) => Some(request),
        _ => None,
    });
    let payload = imported.unwrap().payload;
    assert!(payload.receiver.is_none(), "a client message carries the sender only");
    assert_eq!(payload.sender.profile.unwrap().phone.as_deref(), Some("+100"));
    let imported = IncomingState::Imported { kommo_msgid: Some("kommo-chat-1".into()) };
    assert_eq!(sim.store.incoming_state(SCOPE, "chat-1").await.unwrap(), Some(imported));
    let told: Vec<_> = sim
        .chat
        .events()
        .into_iter()
        .filter_map(|e| match e.call {
            BridgeEvent::MessageDelivered { msgid, reference, .. } => Some((msgid, reference)),
            _ => None,
        })
        .collect();
    let expected = [("chat-1", "kommo-chat-1"), ("chat-2", "kommo-chat-2")]
        .map(|(msgid, reference)| (msgid.to_owned(), Some(reference.to_owned())));
    assert_eq!(told, expected, "message.delivered once per msgid, naming Kommo's msgid");
}

#[derive(Debug, Clone, Copy)]
enum Reported {
    Delivered,
    Read,
    Failed(u16),
}

fn reported() -> impl Strategy<Value = (usize, Reported)> {
    let status =
        prop_oneof![Just(Reported::Delivered), Just(Reported::Read), (901u16..=905).prop_map(Reported::Failed),];
    (0usize..4, status)
}

fn rank(status: Reported) -> i8 {
    match status {
        Reported::Delivered => 1,
        Reported::Read => 2,
        Reported::Failed(_) => -1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any order and duplication of statuses: the register ends at the best status each message
    /// reached, and Kommo heard each (message, status) at most once, never backwards.
    #[test]
    fn the_register_ends_at_the_best_status_and_kommo_never_hears_one_twice_or_backwards(
        events in proptest::collection::vec(reported(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let sim = Sim::new();
            for (message, status) in &events {
                let body = match status {
                    Reported::Delivered => status_event(&format!("kommo-{message}"), "delivered", ""),
                    Reported::Read => status_event(&format!("kommo-{message}"), "read", ""),
                    Reported::Failed(code) => status_event(
                        &format!("kommo-{message}"), "failed", &format!(r#","error_code":{code},"error":"refused""#)),
                };
                assert_eq!(sim.chat_event(&body).await.status(), 200);
            }
            sim.advance_to(T0 + 60_000).await;
            let calls = kommo_statuses(&sim);
            for message in 0..4 {
                let msgid = format!("kommo-{message}");
                let best = events.iter().filter(|(m, _)| *m == message).map(|(_, s)| rank(*s)).max();
                let stored = sim.store.get_message(SCOPE, &msgid).await.unwrap().and_then(|r| r.status_rank);
                assert_eq!(stored, best, "{msgid}");
                let heard: Vec<i8> = calls.iter().filter(|(m, _, _)| *m == msgid).map(|(_, s, _)| *s).collect();
                assert!(heard.windows(2).all(|w| w[0] < w[1]), "{msgid}: {heard:?} moved backwards or repeated");
                assert_eq!(heard.last().copied(), best, "{msgid}: Kommo ends at the best status");
            }
        });
    }
}

#[tokio::test]
async fn a_manager_message_the_webhook_cannot_record_is_queued_whole_or_reported_903() {
    // Kommo never sends a webhook again and counts error answers against the channel. A
    // message the webhook cannot record and queue is queued whole, to be accepted when the
    // store answers; if the queue does not take it either, the manager sees the failure (903)
    // and the webhook is acknowledged.
    use std::sync::atomic::Ordering::SeqCst;
    let sim = Sim::new();
    sim.queue.refuse_next.store(1, SeqCst);
    assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-0")).await.status(), 200);
    sim.advance_to(T0 + 5_000).await;
    assert_eq!(sim.chat_events(), ["message"], "queued whole, then accepted and relayed");
    assert!(kommo_statuses(&sim).is_empty(), "no failure to report");
    sim.queue.refuse_next.store(2, SeqCst);
    assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-1")).await.status(), 200);
    assert_eq!(kommo_statuses(&sim), [("kommo-1".to_owned(), -1, Some(903))]);
    // When Kommo cannot be told either, the fault is the bridge's to show: a 500.
    sim.queue.refuse_next.store(2, SeqCst);
    sim.kommo.fail_next([shared::ports::kommo::KommoError::Unavailable {
        attempts: 3,
        status: Some(503),
        reason: "HTTP 503".into(),
        retry_after: None,
    }]);
    assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-2")).await.status(), 500);
    sim.advance_to(T0 + 60_000).await;
    assert_eq!(sim.chat_events(), ["message"], "neither of the last two was relayed");
}

#[tokio::test]
async fn a_source_travels_with_messages_both_ways() {
    // Kommo's source.external_id (one channel, several numbers or pages) reaches the chat
    // service with a manager's message, and the chat service's reaches Kommo with a client's,
    // on chat creation and on import.
    let sim = Sim::new();
    let manager = serde_json::json!({"account_id": "acc-1", "time": 1, "message": {
        "receiver": {"id": "r", "client_id": "client-1"}, "sender": {"id": "manager-1"},
        "conversation": {"id": "kommo-conv-1", "client_id": "conv-1"}, "source": {"external_id": "line-2"},
        "timestamp": 1, "message": {"id": "kommo-1", "type": "text", "text": "hello"}}});
    assert_eq!(sim.kommo_webhook(&manager.to_string()).await.status(), 200);
    let client = serde_json::json!({"type": "message.created", "scope_id": SCOPE, "conversation_id": "conv-2",
        "msgid": "chat-1", "user": {"id": "client-2", "name": "Eve"}, "message": {"type": "text", "text": "hi"},
        "timestamp_ms": T0, "source": {"external_id": "+1 555 0100"}});
    assert_eq!(sim.chat_event(&client.to_string()).await.status(), 200);
    sim.advance_to(T0 + 60_000).await;

    let created: Vec<_> = sim
        .chat
        .events()
        .into_iter()
        .map(|recorded| recorded.call)
        .filter(|event| matches!(event, BridgeEvent::MessageCreated { .. }))
        .collect();
    let [BridgeEvent::MessageCreated { source, .. }] = &created[..] else { panic!("{created:?}") };
    assert_eq!(source.as_ref().map(|s| s.external_id.as_str()), Some("line-2"));
    let sources: Vec<_> = sim
        .kommo
        .calls()
        .into_iter()
        .filter_map(|recorded| match recorded.call {
            KommoCall::CreateChat(request) => Some(("chat", request.source)),
            KommoCall::Import(request) => Some(("import", request.payload.source)),
            _ => None,
        })
        .map(|(call, source)| (call, source.and_then(|s| s.external_id)))
        .collect();
    let expected = Some("+1 555 0100".to_owned());
    assert_eq!(sources, [("chat", expected.clone()), ("import", expected)]);
}

/// `count` numbers written `1e15` (5 bytes each as sent, 19 as serde_json queues them).
fn numbers_as_sent(count: usize) -> String {
    vec!["1e15"; count].join(",")
}

#[tokio::test]
async fn a_client_message_whose_numbers_would_not_fit_the_queue_is_refused_and_changes_nothing() {
    use shared::testing::CountItems;
    // GIVEN a client's message of 80 KB whose extra field would queue at over 300 KB.
    let sim = Sim::new();
    let body = client_message("conv-1", "m-big")
        .replace(r#""text":"hi""#, &format!(r#""text":"hi","metrics":[{}]"#, numbers_as_sent(16_000)));
    // WHEN the chat service sends it THEN it is refused with 413, naming why.
    let response = sim.chat_event(&body).await;
    assert_eq!(response.status(), 413);
    let error = Sim::json(&response);
    assert_eq!(error["error"]["code"], "too_large_to_queue", "{error}");
    // AND nothing is stored (not even its webhook-id) nor queued, nothing sent anywhere.
    assert_eq!(sim.store.count_items().await, 0);
    assert!(sim.timers.pending().is_empty(), "{:?}", sim.timers.pending());
    sim.advance_to(T0 + 60_000).await;
    assert!(sim.kommo.calls().is_empty() && sim.chat.events().is_empty());
    // An edit of the same size is refused the same way.
    let edit = format!(
        r#"{{"type":"message.edited","scope_id":"{SCOPE}","conversation_id":"conv-1","msgid":"m-1","message":{{"type":"text","text":"hi","metrics":[{}]}}}}"#,
        numbers_as_sent(16_000)
    );
    assert_eq!(sim.chat_event(&edit).await.status(), 413);
    assert_eq!(sim.store.count_items().await, 0);
    assert!(sim.timers.pending().is_empty());
}

#[tokio::test]
async fn a_manager_message_whose_numbers_would_not_fit_the_queue_is_refused_and_reported_failed_at_once() {
    use shared::testing::CountItems;
    // GIVEN a manager's message of 200 KB whose extra field would queue at over 750 KB.
    let sim = Sim::new();
    let body = manager_message("conv-1", "manager-1", "kommo-big")
        .replace(r#""text":"hello""#, &format!(r#""text":"hello","metrics":[{}]"#, numbers_as_sent(40_000)));
    // WHEN Kommo sends it THEN the webhook is refused with 413...
    let response = sim.kommo_webhook(&body).await;
    assert_eq!(response.status(), 413);
    assert_eq!(Sim::json(&response)["error"]["code"], "too_large_to_queue");
    // ...Kommo is told at once that it failed (it never sends a webhook again), with a text
    // the manager reads, and nothing is stored nor queued.
    assert_eq!(kommo_statuses(&sim), [("kommo-big".to_owned(), -1, Some(905))]);
    let told = sim.kommo.calls().into_iter().find_map(|recorded| match recorded.call {
        KommoCall::DeliveryStatus(request) => Some(serde_json::to_value(&request).unwrap()),
        _ => None,
    });
    let told = told.unwrap();
    assert!(told["error"].as_str().unwrap_or_default().contains("too large"), "{told}");
    assert_eq!(sim.store.count_items().await, 0);
    assert!(sim.timers.pending().is_empty());
    sim.advance_to(T0 + 60_000).await;
    assert!(sim.chat.events().is_empty(), "nothing relayed");
}
