//! Conversations as Kommo really has them, simulated: chats a manager starts, every client
//! message accounted for back to the chat service, edits, replies and reactions both ways.

mod support;

use serde_json::{Value, json};
use shared::models::chat::{BridgeEvent, ImportFailureCode};
use shared::ports::kommo::KommoError;
use shared::ports::store::{Conversations, IncomingState, MessageRecords};
use shared::testing::KommoCall;
use support::*;

/// Kommo's webhook for a message a manager wrote in a chat they started: no integration ids.
fn write_first_message(kommo_chat: &str, kommo_msgid: &str) -> String {
    json!({"account_id": "acc-1", "time": 1, "message": {
        "receiver": {"id": "kommo-client-7", "name": "Eve", "phone": "+1 555 0100", "email": "eve@example.com",
                     "avatar": "https://example.com/eve.png"},
        "sender": {"id": "manager-1", "name": "Ann"},
        "conversation": {"id": kommo_chat},
        "timestamp": 1, "message": {"id": kommo_msgid, "type": "text", "text": "Hello, we met at the fair"}}})
    .to_string()
}

/// The chat service's `message.created`, with `more` members merged in.
fn client_message_with(conversation: &str, msgid: &str, more: Value) -> String {
    let mut body = json!({"type": "message.created", "scope_id": SCOPE, "conversation_id": conversation,
        "msgid": msgid, "user": {"id": "client-7", "name": "Eve"}, "message": {"type": "text", "text": "hi"},
        "timestamp_ms": T0});
    body.as_object_mut().unwrap().extend(more.as_object().unwrap().clone());
    body.to_string()
}

fn told(sim: &Sim) -> Vec<BridgeEvent> {
    sim.chat.events().into_iter().map(|recorded| recorded.call).collect()
}

fn imports(sim: &Sim) -> Vec<shared::models::kommo::ImportPayload> {
    let calls = sim.kommo.calls().into_iter();
    calls.filter_map(|c| if let KommoCall::Import(request) = c.call { Some(request.payload) } else { None }).collect()
}

fn chats_created(sim: &Sim) -> usize {
    sim.kommo.calls().iter().filter(|c| matches!(c.call, KommoCall::CreateChat(_))).count()
}

#[tokio::test]
async fn a_manager_message_names_its_receiver_and_a_chat_the_manager_started_by_kommos_id() {
    let sim = Sim::new();
    assert_eq!(sim.kommo_webhook(&write_first_message("kommo-chat-7", "kommo-1")).await.status(), 200);
    sim.advance_to(T0 + 10_000).await;
    let [BridgeEvent::MessageCreated { conversation_id, client_id, receiver, .. }] = &told(&sim)[..] else {
        panic!("{:?}", told(&sim))
    };
    assert_eq!(conversation_id, "kommo-chat-7", "the only id there is");
    assert_eq!(client_id, "kommo-client-7");
    let receiver = serde_json::to_value(receiver).unwrap();
    assert_eq!(
        receiver,
        json!({"id": "kommo-client-7", "name": "Eve", "phone": "+1 555 0100", "email": "eve@example.com",
               "avatar": "https://example.com/eve.png"})
    );
}

#[tokio::test]
async fn a_reply_under_the_id_the_bridge_gave_lands_in_the_chat_the_manager_started() {
    let sim = Sim::new();
    sim.kommo_webhook(&write_first_message("kommo-chat-7", "kommo-1")).await;
    assert_eq!(sim.chat_event(&client_message_with("kommo-chat-7", "chat-1", json!({}))).await.status(), 200);
    assert_eq!(sim.chat_event(&client_message_with("kommo-chat-7", "chat-2", json!({}))).await.status(), 200);
    sim.advance_to(T0 + 10_000).await;
    assert_eq!(chats_created(&sim), 0, "Kommo has the chat: a new one would be a second lead");
    for payload in imports(&sim) {
        assert_eq!(payload.conversation_id, "kommo-chat-7");
        assert_eq!(payload.conversation_ref_id.as_deref(), Some("kommo-chat-7"));
        assert_eq!(payload.sender.ref_id.as_deref(), Some("kommo-client-7"), "Kommo's id of the client");
        assert_eq!(payload.sender.id, "client-7");
    }
    assert_eq!(imports(&sim).len(), 2);
}

#[tokio::test]
async fn a_reply_under_the_chat_services_own_id_lands_in_the_same_chat_and_both_ids_lead_there() {
    let sim = Sim::new();
    sim.kommo_webhook(&write_first_message("kommo-chat-7", "kommo-1")).await;
    let reply = client_message_with("conv-eve", "chat-1", json!({"conversation_ref_id": "kommo-chat-7"}));
    assert_eq!(sim.chat_event(&reply).await.status(), 200);
    sim.advance_to(T0 + 10_000).await;
    // Later messages name only the chat service's id.
    assert_eq!(sim.chat_event(&client_message_with("conv-eve", "chat-2", json!({}))).await.status(), 200);
    // And one that still names the bridge's id goes to the same conversation.
    assert_eq!(sim.chat_event(&client_message_with("kommo-chat-7", "chat-3", json!({}))).await.status(), 200);
    sim.advance_to(T0 + 20_000).await;
    assert_eq!(chats_created(&sim), 0);
    let landed: Vec<_> = imports(&sim)
        .into_iter()
        .map(|p| (p.msgid, p.conversation_id, p.conversation_ref_id, p.sender.ref_id))
        .collect();
    let linked = |msgid: &str| {
        (msgid.to_owned(), "conv-eve".to_owned(), Some("kommo-chat-7".to_owned()), Some("kommo-client-7".to_owned()))
    };
    assert_eq!(landed, [linked("chat-1"), linked("chat-2"), linked("chat-3")]);
    for id in ["conv-eve", "kommo-chat-7"] {
        let found = sim.store.find_conversation(SCOPE, id).await.unwrap().unwrap();
        assert_eq!(found.conversation_id, "conv-eve", "{id}");
        assert_eq!(found.client_user_id.as_deref(), Some("client-7"));
    }
    // The Kommo UI names the chat by Kommo's id: the read receipt names the conversation the
    // chat service now uses.
    let token = sim.token(42);
    let read = Sim::json(&sim.ui("POST", "/kommo/ui/conversations/kommo-chat-7/read", Some(token), "").await);
    assert_eq!(read["read"], "chat-2", "the newest client message under conv-eve");
}

#[tokio::test]
async fn every_client_message_ends_delivered_or_failed_and_the_chat_service_hears_which() {
    let sim = Sim::with_env(&[("RETRY_MAX_ATTEMPTS", "3")]);
    let refused =
        KommoError::Rejected { status: 400, error_type: "BAD_REQUEST".into(), description: "too long".into() };
    let down =
        || KommoError::Unavailable { attempts: 1, status: Some(503), reason: "HTTP 503".into(), retry_after: None };
    // chat-1 refused by Kommo at chat creation; chat-2 finds Kommo down until its attempts run out.
    sim.kommo.fail_next([refused]);
    sim.chat_event(&client_message_with("conv-1", "chat-1", json!({}))).await;
    sim.advance_to(T0 + 1000).await;
    sim.kommo.fail_next([down(), down(), down()]);
    sim.chat_event(&client_message_with("conv-2", "chat-2", json!({}))).await;
    sim.advance_to(T0 + 600_000).await;
    // Kommo is back: chat-3 goes in.
    sim.chat_event(&client_message_with("conv-3", "chat-3", json!({}))).await;
    sim.advance_to(T0 + 700_000).await;

    let outcomes: Vec<_> = told(&sim)
        .into_iter()
        .map(|event| match event {
            BridgeEvent::MessageDelivered { msgid, reference, .. } => (msgid, format!("delivered {reference:?}")),
            BridgeEvent::MessageFailed { msgid, error, .. } => (msgid, format!("failed {:?}", error.code)),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected = [
        ("chat-1", format!("failed {:?}", ImportFailureCode::KommoRefused)),
        ("chat-2", format!("failed {:?}", ImportFailureCode::KommoUnavailable)),
        ("chat-3", "delivered Some(\"kommo-chat-3\")".to_owned()),
    ];
    assert_eq!(outcomes, expected.map(|(msgid, outcome)| (msgid.to_owned(), outcome)));
    for (msgid, state) in [
        ("chat-1", IncomingState::Failed),
        ("chat-2", IncomingState::Failed),
        ("chat-3", IncomingState::Imported { kommo_msgid: Some("kommo-chat-3".into()) }),
    ] {
        assert_eq!(sim.store.incoming_state(SCOPE, msgid).await.unwrap(), Some(state), "{msgid}");
    }
    // A dead-lettered msgid sent again is a duplicate: nothing more happens.
    sim.chat_event(&client_message_with("conv-1", "chat-1", json!({}))).await;
    sim.advance_to(T0 + 800_000).await;
    assert_eq!(told(&sim).len(), 3);
}

#[tokio::test]
async fn what_kommo_would_refuse_is_a_400_at_once_and_changes_nothing() {
    let sim = Sim::new();
    let bad = [
        json!({"message": {"type": "text"}}),
        json!({"message": {"type": "picture", "media": "https://example.com/p.png"}}),
        json!({"message": {"type": "location", "location": {"lat": 1}}}),
        json!({"message": {"type": "contact", "contact": {}}}),
        json!({"message": {"type": "poll", "text": "?"}}),
        json!({"reply_to": {}}),
        json!({"reply_to": {"msgid": "a", "reference": "b"}}),
        json!({"conversation_ref_id": ""}),
    ];
    for more in bad {
        let response = sim.chat_event(&client_message_with("conv-1", "chat-1", more.clone())).await;
        assert_eq!(response.status(), 400, "{more}");
        assert_eq!(Sim::json(&response)["error"]["code"], "invalid_body", "{more}");
    }
    let bad_events = [
        json!({"type": "message.edited", "scope_id": SCOPE, "conversation_id": "conv-1", "msgid": "chat-1",
               "message": {"type": "text", "text": ""}}),
        json!({"type": "reaction.added", "scope_id": SCOPE, "conversation_id": "conv-1", "user_id": "client-7",
               "msgid": "chat-1"}),
        json!({"type": "reaction.removed", "scope_id": SCOPE, "conversation_id": "conv-1", "user_id": "client-7"}),
        json!({"type": "reaction.added", "scope_id": SCOPE, "conversation_id": "conv-1", "user_id": "client-7",
               "emoji": "👍", "reference": "../../x"}),
    ];
    for event in bad_events {
        assert_eq!(sim.chat_event(&event.to_string()).await.status(), 400, "{event}");
    }
    sim.advance_to(T0 + 60_000).await;
    assert!(sim.kommo.calls().is_empty());
    assert!(told(&sim).is_empty());
    assert_eq!(sim.store.incoming_state(SCOPE, "chat-1").await.unwrap(), None);
}

#[tokio::test]
async fn an_edit_waits_for_its_import_and_a_reply_names_its_message_as_kommo_knows_it() {
    let sim = Sim::new();
    // A manager's message the chat service knows by its own id (chat-kommo-1, from its answer).
    sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-1")).await;
    sim.advance_to(T0 + 1000).await;
    // Kommo is down for the import's first attempts: the edit, queued meanwhile, waits.
    let down =
        || KommoError::Unavailable { attempts: 1, status: Some(503), reason: "HTTP 503".into(), retry_after: None };
    sim.kommo.fail_next([down(), down()]);
    sim.chat_event(&client_message_with("conv-1", "chat-1", json!({"reply_to": {"msgid": "chat-kommo-1"}}))).await;
    let edit = json!({"type": "message.edited", "scope_id": SCOPE, "conversation_id": "conv-1", "msgid": "chat-1",
                      "message": {"type": "text", "text": "hi, edited"}, "timestamp_ms": T0 + 1500});
    assert_eq!(sim.chat_event(&edit.to_string()).await.status(), 200);
    sim.advance_to(T0 + 60_000).await;
    let order: Vec<_> = sim
        .kommo
        .calls()
        .into_iter()
        .filter_map(|c| match c.call {
            KommoCall::Import(_) => Some("import"),
            KommoCall::Edit(_) => Some("edit"),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["import", "import", "import", "edit"], "the edit only once the message is in");
    let reply = serde_json::to_value(&imports(&sim)[0].reply_to).unwrap();
    assert_eq!(reply, json!({"message": {"id": "kommo-1"}}), "a manager's message by Kommo's id");
    let edits: Vec<_> = sim
        .kommo
        .calls()
        .into_iter()
        .filter_map(|c| if let KommoCall::Edit(request) = c.call { Some(*request) } else { None })
        .collect();
    let [edited] = &edits[..] else { panic!("{edits:?}") };
    assert_eq!(edited.event_type, "edit_message");
    assert_eq!(edited.payload.msgid, "chat-1");
    assert_eq!(edited.payload.msec_timestamp, T0 + 1500);
    assert_eq!(edited.payload.message.text.as_deref(), Some("hi, edited"));
    // A reply to a client's own message names it by the chat service's id, which Kommo knows.
    sim.chat_event(&client_message_with("conv-1", "chat-2", json!({"reply_to": {"msgid": "chat-1"}}))).await;
    sim.chat_event(&client_message_with("conv-1", "chat-3", json!({"reply_to": {"reference": "kommo-9"}}))).await;
    sim.advance_to(T0 + 120_000).await;
    let replies: Vec<_> = imports(&sim).iter().skip(3).map(|p| serde_json::to_value(&p.reply_to).unwrap()).collect();
    assert_eq!(replies, [json!({"message": {"msgid": "chat-1"}}), json!({"message": {"id": "kommo-9"}})]);
}

#[tokio::test]
async fn reactions_go_both_ways() {
    let sim = Sim::new();
    sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-1")).await;
    sim.chat_event(&client_message_with("conv-1", "chat-1", json!({}))).await;
    sim.advance_to(T0 + 1000).await;
    // Kommo's reaction webhook, both shapes seen in public clients.
    let on_manager_message = json!({"account_id": "acc-1", "time": 1, "action": {"reaction": {
        "type": "react", "emoji": "👍", "user": {"id": "manager-1", "name": "Ann"},
        "conversation": {"id": "kommo-conv-1", "client_id": "conv-1"}, "msgid": "kommo-1"}}});
    let on_client_message = json!({"account_id": "acc-1", "time": 1, "action": {"reaction": {
        "type": "unreact", "user": {"id": "manager-1"},
        "conversation": {"id": "kommo-conv-1", "client_id": "conv-1"},
        "message": {"id": "kommo-chat-1", "client_id": "chat-1"}}}});
    for webhook in [on_manager_message, on_client_message] {
        assert_eq!(sim.kommo_webhook(&webhook.to_string()).await.status(), 200);
    }
    // A shape the bridge cannot read (Kommo does not document it) is acknowledged, and nothing
    // is sent for it: an error answer would count against the channel.
    let unreadable = [
        json!({"type": "react", "emoji": "👍"}),
        json!({"type": "like", "emoji": "👍", "user": {"id": "m"}, "conversation": {"id": "c"}, "msgid": "k"}),
        json!({"type": "unreact", "conversation": {"id": "c"}, "msgid": "k"}),
    ];
    for reaction in unreadable {
        let webhook = json!({"account_id": "acc-1", "time": 1, "action": {"reaction": reaction}});
        assert_eq!(sim.kommo_webhook(&webhook.to_string()).await.status(), 200, "{reaction}");
    }
    // The chat service's, on the manager's message (by its own id) and on the client's.
    for (kind, named) in
        [("reaction.added", json!({"msgid": "chat-kommo-1"})), ("reaction.removed", json!({"msgid": "chat-1"}))]
    {
        let mut event = json!({"type": kind, "scope_id": SCOPE, "conversation_id": "conv-1", "user_id": "client-7",
                               "emoji": "❤️"});
        event.as_object_mut().unwrap().extend(named.as_object().unwrap().clone());
        assert_eq!(sim.chat_event(&event.to_string()).await.status(), 200, "{event}");
    }
    sim.advance_to(T0 + 60_000).await;

    let reactions: Vec<_> = told(&sim)
        .into_iter()
        .filter(|e| matches!(e, BridgeEvent::ReactionAdded(_) | BridgeEvent::ReactionRemoved(_)))
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(
        reactions,
        [
            json!({"type": "reaction.added", "scope_id": SCOPE, "conversation_id": "conv-1",
                   "manager": {"id": "manager-1", "name": "Ann"}, "emoji": "👍", "reference": "kommo-1"}),
            json!({"type": "reaction.removed", "scope_id": SCOPE, "conversation_id": "conv-1",
                   "manager": {"id": "manager-1"}, "msgid": "chat-1"}),
        ]
    );
    let sent: Vec<_> = sim
        .kommo
        .calls()
        .into_iter()
        .filter_map(|c| {
            if let KommoCall::React(request) = c.call { Some(serde_json::to_value(request).unwrap()) } else { None }
        })
        .collect();
    assert_eq!(
        sent,
        [
            json!({"conversation_id": "conv-1", "id": "kommo-1", "user": {"id": "client-7"}, "type": "react", "emoji": "❤️"}),
            json!({"conversation_id": "conv-1", "msgid": "chat-1", "user": {"id": "client-7"}, "type": "unreact",
                   "emoji": "❤️"}),
        ]
    );
}

#[tokio::test]
async fn a_client_reaction_on_a_chat_the_manager_started_names_kommos_chat() {
    let sim = Sim::new();
    sim.kommo_webhook(&write_first_message("kommo-chat-7", "kommo-1")).await;
    let event = json!({"type": "reaction.added", "scope_id": SCOPE, "conversation_id": "kommo-chat-7",
                       "user_id": "client-7", "emoji": "👍", "reference": "kommo-1"});
    assert_eq!(sim.chat_event(&event.to_string()).await.status(), 200);
    sim.advance_to(T0 + 10_000).await;
    let sent: Vec<_> = sim
        .kommo
        .calls()
        .into_iter()
        .filter_map(|c| if let KommoCall::React(request) = c.call { Some(request) } else { None })
        .collect();
    let [sent] = &sent[..] else { panic!("{sent:?}") };
    assert_eq!(sent.conversation_ref_id.as_deref(), Some("kommo-chat-7"));
    assert_eq!(sent.message.id.as_deref(), Some("kommo-1"));
}

#[tokio::test]
async fn a_reply_to_a_message_not_in_kommo_yet_waits_for_it() {
    let sim = Sim::new();
    let down =
        || KommoError::Unavailable { attempts: 1, status: Some(503), reason: "HTTP 503".into(), retry_after: None };
    sim.kommo.fail_next([down(), down()]); // chat-1's chat creation, twice
    sim.chat_event(&client_message_with("conv-1", "chat-1", json!({}))).await;
    sim.chat_event(&client_message_with("conv-1", "chat-2", json!({"reply_to": {"msgid": "chat-1"}}))).await;
    sim.advance_to(T0 + 60_000).await;
    let landed: Vec<_> =
        imports(&sim).into_iter().map(|p| (p.msgid, serde_json::to_value(p.reply_to).unwrap())).collect();
    assert_eq!(
        landed,
        [("chat-1".to_owned(), Value::Null), ("chat-2".to_owned(), json!({"message": {"msgid": "chat-1"}}))],
        "the reply only after what it quotes, and quoting it"
    );
}

#[tokio::test]
async fn read_up_to_reaches_the_opening_of_a_chat_the_manager_started_under_either_id() {
    let sim = Sim::new();
    sim.kommo_webhook(&write_first_message("kommo-chat-7", "kommo-1")).await;
    let reply = client_message_with("conv-eve", "chat-1", json!({"conversation_ref_id": "kommo-chat-7"}));
    sim.chat_event(&reply).await;
    sim.advance_to(T0 + 10_000).await;
    // Kommo names the chat service's id from now on.
    let later = json!({"account_id": "acc-1", "time": 2, "message": {
        "receiver": {"id": "kommo-client-7", "client_id": "client-7"}, "sender": {"id": "manager-1"},
        "conversation": {"id": "kommo-chat-7", "client_id": "conv-eve"},
        "timestamp": 2, "message": {"id": "kommo-2", "type": "text", "text": "and another"}}});
    sim.kommo_webhook(&later.to_string()).await;
    sim.advance_to(T0 + 20_000).await;
    let read =
        json!({"type": "message.status", "scope_id": SCOPE, "reference": "kommo-2", "status": "read", "up_to": true});
    assert_eq!(sim.chat_event(&read.to_string()).await.status(), 200);
    sim.advance_to(T0 + 30_000).await;
    let mut reported: Vec<_> = kommo_statuses(&sim).into_iter().map(|(msgid, status, _)| (msgid, status)).collect();
    reported.sort();
    assert_eq!(reported, [("kommo-1".to_owned(), 2), ("kommo-2".to_owned(), 2)]);
}

#[tokio::test]
async fn a_reply_quoting_what_kommo_does_not_have_goes_unquoted_and_never_fails_the_message() {
    let sim = Sim::new();
    sim.chat_event(&client_message_with("conv-1", "chat-1", json!({}))).await;
    sim.advance_to(T0 + 1000).await;
    // A msgid the bridge never saw in this scope (another account's, or made up).
    sim.chat_event(&client_message_with("conv-1", "chat-2", json!({"reply_to": {"msgid": "never-seen"}}))).await;
    sim.advance_to(T0 + 2000).await;
    // Kommo's id of a message Kommo refuses to quote (another account's): tried quoted, then
    // sent unquoted at once.
    let refused = KommoError::Rejected {
        status: 400,
        error_type: "BAD_REQUEST".into(),
        description: "unknown reply_to message".into(),
    };
    sim.kommo.fail_next([refused]);
    sim.chat_event(&client_message_with("conv-1", "chat-3", json!({"reply_to": {"reference": "kommo-elsewhere"}})))
        .await;
    sim.advance_to(T0 + 3000).await;
    let landed: Vec<_> =
        imports(&sim).into_iter().map(|p| (p.msgid, serde_json::to_value(p.reply_to).unwrap())).collect();
    assert_eq!(
        landed,
        [
            ("chat-1".to_owned(), Value::Null),
            ("chat-2".to_owned(), Value::Null),
            ("chat-3".to_owned(), json!({"message": {"id": "kommo-elsewhere"}})),
            ("chat-3".to_owned(), Value::Null),
        ]
    );
    let delivered = told(&sim).into_iter().filter(|e| matches!(e, BridgeEvent::MessageDelivered { .. })).count();
    assert_eq!(delivered, 3, "every message delivered, none failed: {:?}", told(&sim));
}

#[tokio::test]
async fn kommo_gets_what_it_requires_filled_in_and_a_caption_edit_without_its_media() {
    let sim = Sim::new();
    let contact = json!({"message": {"type": "contact", "contact": {"phone": "+1 555 0100"}}});
    let file = json!({"message": {"type": "file", "media": "https://cdn.example/f/Price%20list.pdf", "file_size": 12}});
    let nameless_phone = json!({"message": {"type": "contact", "contact": {"name": "Ann"}}});
    assert_eq!(sim.chat_event(&client_message_with("conv-1", "chat-1", contact)).await.status(), 200);
    assert_eq!(sim.chat_event(&client_message_with("conv-1", "chat-2", file)).await.status(), 200);
    let refused = sim.chat_event(&client_message_with("conv-1", "chat-3", nameless_phone)).await;
    assert_eq!(refused.status(), 400, "a contact's phone cannot be made up");
    assert!(Sim::json(&refused)["error"]["message"].as_str().unwrap().contains("message.contact.phone"));
    sim.advance_to(T0 + 1000).await;
    let sent: Vec<_> = imports(&sim).into_iter().map(|p| serde_json::to_value(p.message).unwrap()).collect();
    assert_eq!(sent[0]["contact"], json!({"phone": "+1 555 0100", "name": "+1 555 0100"}));
    assert_eq!((sent[1]["file_name"].as_str(), sent[1]["file_size"].as_u64()), (Some("Price list.pdf"), Some(12)));
    assert_eq!(sent.len(), 2);
    let caption = json!({"type": "message.edited", "scope_id": SCOPE, "conversation_id": "conv-1", "msgid": "chat-2",
                         "message": {"type": "file", "text": "the May prices"}});
    assert_eq!(sim.chat_event(&caption.to_string()).await.status(), 200);
    sim.advance_to(T0 + 2000).await;
    let edited: Vec<_> = sim
        .kommo
        .calls()
        .into_iter()
        .filter_map(|c| if let KommoCall::Edit(request) = c.call { Some(request.payload.message) } else { None })
        .collect();
    let [edited] = &edited[..] else { panic!("{edited:?}") };
    assert_eq!((edited.media.as_deref(), edited.text.as_deref()), (None, Some("the May prices")));
}

#[tokio::test]
async fn client_typing_reaches_kommo_only_in_a_chat_kommo_has_under_the_id_it_has() {
    let typing_calls = |sim: &Sim| -> Vec<String> {
        let calls = sim.kommo.calls().into_iter();
        calls.filter_map(|c| if let KommoCall::Typing(r) = c.call { Some(r.conversation_id) } else { None }).collect()
    };
    let sim = Sim::new();
    // Before the conversation's first message Kommo has no chat for it: no call.
    sim.chat_event(&client_typing("typing.started", "conv-new", None)).await;
    sim.advance_to(T0 + 1000).await;
    assert_eq!(typing_calls(&sim), Vec::<String>::new());
    // A chat a manager started, not answered yet: Kommo knows it by its own id only.
    sim.kommo_webhook(&write_first_message("kommo-chat-7", "kommo-1")).await;
    sim.advance_to(T0 + 2000).await;
    let typing_in = |conversation: &str| {
        json!({"type": "typing.started", "scope_id": SCOPE, "conversation_id": conversation, "user_id": "client-7"})
            .to_string()
    };
    sim.chat_event(&typing_in("kommo-chat-7")).await;
    sim.advance_to(T0 + 3000).await;
    assert_eq!(typing_calls(&sim), Vec::<String>::new());
    // Answered under the chat service's own id: typing in either goes under that id.
    sim.chat_event(&client_message_with("conv-eve", "chat-1", json!({"conversation_ref_id": "kommo-chat-7"}))).await;
    sim.advance_to(T0 + 10_000).await;
    sim.chat_event(&typing_in("kommo-chat-7")).await;
    sim.advance_to(T0 + 11_000).await;
    let calls = typing_calls(&sim);
    assert!(!calls.is_empty() && calls.iter().all(|id| id == "conv-eve"), "{calls:?}");
}
