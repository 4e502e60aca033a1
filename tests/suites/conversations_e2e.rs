//! Conversations as Kommo really has them, end to end over real HTTP: the dev server
//! between the fake amojo (which enforces Kommo's rules: names, `conversation_ref_id`,
//! `edit_message`, `/react`) and the fake chat service, on the in-memory store and on the
//! DynamoDB-compatible server.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::E2e;

const FAST_RETRIES: [(&str, &str); 2] = [("RETRY_BASE_DELAY_MS", "50"), ("RETRY_MAX_ATTEMPTS", "3")];

/// The dev server on the in-memory store, or on a fresh table of the DynamoDB-compatible server.
fn start(on_dynamodb: bool, name: &str) -> E2e {
    let mut env: Vec<(&str, String)> = FAST_RETRIES.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
    if on_dynamodb {
        env.push(("DYNAMODB_ENDPOINT", support::required_env("TEST_DYNAMODB_ENDPOINT")));
        env.push(("TABLE_NAME", support::unique(name)));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    E2e::start(&env)
}

fn client_message(scope: &str, conversation: &str, msgid: &str, more: Value) -> String {
    let mut body = json!({"type": "message.created", "scope_id": scope, "conversation_id": conversation,
        "msgid": msgid, "user": {"id": format!("user-{conversation}"), "name": "Eve"},
        "message": {"type": "text", "text": "hi"}, "timestamp_ms": 1_700_000_000_000i64});
    body.as_object_mut().unwrap().extend(more.as_object().unwrap().clone());
    body.to_string()
}

/// The chat-service events of `kind` that the fake accepted (signature verified, answered 2xx).
fn accepted<'a>(calls: &'a [Value], kind: &str) -> Vec<&'a Value> {
    calls
        .iter()
        .filter(|c| c["signature_ok"] == true && c["reply_status"] == 200 && c["body"]["type"] == kind)
        .collect()
}

async fn fake_state(e2e: &E2e) -> Value {
    e2e.amojo.admin_get(&format!("state?scope={}", e2e.scope)).await
}

async fn chats_started_in_kommo(e2e: &E2e) -> (String, String) {
    let chat = e2e.amojo.admin_post("kommo_chat", json!({"scope": e2e.scope})).await;
    (chat["chat_id"].as_str().unwrap().to_owned(), chat["client_id"].as_str().unwrap().to_owned())
}

fn write_first_message(kommo_chat: &str, kommo_client: &str, kommo_msgid: &str) -> String {
    json!({"account_id": "acc-1", "time": 1_700_000_000, "message": {
        "receiver": {"id": kommo_client, "name": "Eve", "phone": "+15550100"},
        "sender": {"id": "manager-1", "name": "Ann"}, "conversation": {"id": kommo_chat},
        "source": {"external_id": "line-2"},
        "timestamp": 1_700_000_000, "message": {"id": kommo_msgid, "type": "text", "text": "Hello first"}}})
    .to_string()
}

async fn both_answers_to_chats_a_manager_started_land_in_those_chats(on_dynamodb: bool) {
    let e2e = start(on_dynamodb, "write-first-");
    let (chat_a, client_a) = chats_started_in_kommo(&e2e).await;
    let (chat_b, client_b) = chats_started_in_kommo(&e2e).await;
    e2e.kommo_webhook_ok(write_first_message(&chat_a, &client_a, "kommo-a")).await;
    e2e.kommo_webhook_ok(write_first_message(&chat_b, &client_b, "kommo-b")).await;
    let calls = e2e.wait_for(&e2e.chat, Duration::from_secs(5), |c| accepted(c, "message.created").len() == 2).await;
    let created = accepted(&calls, "message.created");
    let first = created.iter().find(|c| c["body"]["reference"] == "kommo-a").unwrap();
    assert_eq!(first["body"]["conversation_id"], json!(chat_a), "named by Kommo's chat id");
    assert_eq!(first["body"]["receiver"], json!({"id": client_a, "name": "Eve", "phone": "+15550100"}));
    assert_eq!(first["body"]["source"], json!({"external_id": "line-2"}), "Kommo's source, forwarded");

    // (a) under the id the bridge gave; (b) under the chat service's own, naming the bridge's.
    let source = json!({"source": {"external_id": "line-2"}});
    e2e.chat_event_ok(client_message(&e2e.scope, &chat_a, "chat-a", source)).await;
    let own = json!({"conversation_ref_id": chat_b});
    e2e.chat_event_ok(client_message(&e2e.scope, "conv-own", "chat-b", own)).await;
    e2e.chat_event_ok(client_message(&e2e.scope, "conv-own", "chat-b2", json!({}))).await;
    let calls = e2e.wait_for(&e2e.chat, Duration::from_secs(10), |c| accepted(c, "message.delivered").len() == 3).await;
    let state = fake_state(&e2e).await;
    // Imports of one conversation may run side by side: Kommo orders them by their timestamps.
    let messages = |chat: &str| {
        let mut msgids: Vec<String> = serde_json::from_value(state["chats"][chat]["messages"].clone()).unwrap();
        msgids.sort();
        msgids
    };
    assert_eq!(messages(&chat_a), ["chat-a"]);
    assert_eq!(messages(&chat_b), ["chat-b", "chat-b2"]);
    assert_eq!(state["chats"].as_object().unwrap().len(), 2, "no second chat (and so no second lead): {state}");
    let imports = e2e.amojo.calls(&e2e.scope).await;
    let reply = imports.iter().find(|c| c["body"]["payload"]["msgid"] == "chat-a").expect("imported");
    assert_eq!(reply["body"]["payload"]["source"], json!({"external_id": "line-2"}), "the source, sent on import");
    for delivered in accepted(&calls, "message.delivered") {
        let msgid = delivered["body"]["msgid"].as_str().unwrap();
        assert_eq!(delivered["body"]["reference"], state["messages"][msgid]["kommo_msgid"], "{msgid}");
    }
}

#[tokio::test]
async fn both_answers_to_chats_a_manager_started_land_in_those_chats_in_memory() {
    both_answers_to_chats_a_manager_started_land_in_those_chats(false).await;
}

#[tokio::test]
async fn both_answers_to_chats_a_manager_started_land_in_those_chats_on_dynamodb() {
    both_answers_to_chats_a_manager_started_land_in_those_chats(true).await;
}

async fn edits_replies_and_reactions_reach_the_other_side(on_dynamodb: bool) {
    let e2e = start(on_dynamodb, "edits-reactions-");
    let scope = e2e.scope.clone();
    e2e.chat_event_ok(client_message(&scope, "conv-7", "chat-1", json!({}))).await;
    let edit = json!({"type": "message.edited", "scope_id": scope, "conversation_id": "conv-7", "msgid": "chat-1",
                      "message": {"type": "text", "text": "hi, edited"}});
    e2e.chat_event_ok(edit.to_string()).await;
    e2e.chat_event_ok(client_message(&scope, "conv-7", "chat-2", json!({"reply_to": {"msgid": "chat-1"}}))).await;
    let reaction = json!({"type": "reaction.added", "scope_id": scope, "conversation_id": "conv-7",
                          "user_id": "user-conv-7", "emoji": "👍", "msgid": "chat-1"});
    e2e.chat_event_ok(reaction.to_string()).await;
    let all_in = |calls: &[Value]| {
        let taken = |check: &dyn Fn(&Value) -> bool| calls.iter().any(|c| c["reply_status"] == 200 && check(c));
        taken(&|c| c["path"].as_str().unwrap().ends_with("/react"))
            && taken(&|c| c["body"]["event_type"] == "edit_message")
            && taken(&|c| c["body"]["payload"]["msgid"] == "chat-2")
    };
    let calls = e2e.wait_for(&e2e.amojo, Duration::from_secs(10), all_in).await;
    assert!(calls.iter().all(|c| c["signature_ok"] == true && c["reply_status"] == 200), "all taken: {calls:#?}");
    let state = fake_state(&e2e).await;
    assert_eq!(state["messages"]["chat-1"]["edits"], 1);
    assert_eq!(state["reactions"][0]["msgid"], "chat-1");
    assert_eq!(state["reactions"][0]["emoji"], "👍");
    let reply = calls.iter().find(|c| c["body"]["payload"]["msgid"] == "chat-2").unwrap();
    assert_eq!(reply["body"]["payload"]["reply_to"], json!({"message": {"msgid": "chat-1"}}));

    // A manager reacts to the client's message in Kommo.
    let kommo_msgid = state["messages"]["chat-1"]["kommo_msgid"].clone();
    let webhook = json!({"account_id": "acc-1", "time": 1_700_000_000, "action": {"reaction": {
        "type": "react", "emoji": "🔥", "user": {"id": "manager-1", "name": "Ann"},
        "conversation": {"id": "kommo-chat", "client_id": "conv-7"},
        "message": {"id": kommo_msgid, "client_id": "chat-1"}}}});
    e2e.kommo_webhook_ok(webhook.to_string()).await;
    let calls = e2e.wait_for(&e2e.chat, Duration::from_secs(5), |c| !accepted(c, "reaction.added").is_empty()).await;
    assert_eq!(
        accepted(&calls, "reaction.added")[0]["body"],
        json!({"type": "reaction.added", "scope_id": scope, "conversation_id": "conv-7",
               "manager": {"id": "manager-1", "name": "Ann"}, "emoji": "🔥", "msgid": "chat-1"})
    );
}

#[tokio::test]
async fn edits_replies_and_reactions_reach_the_other_side_in_memory() {
    edits_replies_and_reactions_reach_the_other_side(false).await;
}

#[tokio::test]
async fn edits_replies_and_reactions_reach_the_other_side_on_dynamodb() {
    edits_replies_and_reactions_reach_the_other_side(true).await;
}

async fn a_message_kommo_refuses_is_told_failed_once_and_one_it_takes_delivered_once(on_dynamodb: bool) {
    let e2e = start(on_dynamodb, "outcomes-");
    let scope = e2e.scope.clone();
    let refusal =
        json!({"status": 400, "body": {"error_code": 400, "error_type": "BAD_REQUEST", "error_description": "no"}});
    e2e.amojo.script(&scope, json!([refusal])).await;
    e2e.chat_event_ok(client_message(&scope, "conv-1", "chat-refused", json!({}))).await;
    e2e.wait_for(&e2e.chat, Duration::from_secs(5), |c| !accepted(c, "message.failed").is_empty()).await;
    e2e.chat_event_ok(client_message(&scope, "conv-2", "chat-taken", json!({}))).await;
    e2e.chat_event_ok(client_message(&scope, "conv-2", "chat-taken", json!({}))).await;
    e2e.wait_for(&e2e.chat, Duration::from_secs(5), |c| !accepted(c, "message.delivered").is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // room for a wrong second one
    let calls = e2e.chat.calls(&scope).await;
    let failed = accepted(&calls, "message.failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["body"]["msgid"], "chat-refused");
    assert_eq!(failed[0]["body"]["error"]["code"], "kommo_refused");
    let delivered = accepted(&calls, "message.delivered");
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["body"]["msgid"], "chat-taken");
    assert!(delivered[0]["body"]["reference"].is_string());
}

#[tokio::test]
async fn a_message_kommo_refuses_is_told_failed_once_and_one_it_takes_delivered_once_in_memory() {
    a_message_kommo_refuses_is_told_failed_once_and_one_it_takes_delivered_once(false).await;
}

#[tokio::test]
async fn a_message_kommo_refuses_is_told_failed_once_and_one_it_takes_delivered_once_on_dynamodb() {
    a_message_kommo_refuses_is_told_failed_once_and_one_it_takes_delivered_once(true).await;
}

/// What real accounts send and require, through the fakes that enforce Kommo's Russian
/// reference: blank names in a manager's webhook, a contact's name and a file's name filled in,
/// a caption edited alone, a text with every failed status, typing only in a chat Kommo has,
/// and replies whose quote Kommo will not take going out unquoted.
async fn what_real_accounts_send_and_require_goes_through(on_dynamodb: bool) {
    let e2e = start(on_dynamodb, "real-accounts-");
    let scope = e2e.scope.clone();
    let calls_to = |calls: &[Value], suffix: &str| {
        calls.iter().filter(|c| c["path"].as_str().unwrap().ends_with(suffix)).cloned().collect::<Vec<_>>()
    };

    // Typing before Kommo has a chat for the conversation: no call (Kommo would answer 404).
    let typing =
        json!({"type": "typing.started", "scope_id": scope, "conversation_id": "conv-r", "user_id": "user-conv-r"});
    e2e.chat_event_ok(typing.to_string()).await;
    let contact = json!({"message": {"type": "contact", "contact": {"phone": "+15550100"}}});
    e2e.chat_event_ok(client_message(&scope, "conv-r", "chat-contact", contact)).await;
    let file = json!({"message": {"type": "file", "media": "https://cdn.example/f/Price%20list.pdf", "file_size": 12}});
    e2e.chat_event_ok(client_message(&scope, "conv-r", "chat-file", file)).await;
    let imported = |calls: &[Value], msgid: &str| {
        calls.iter().any(|c| c["reply_status"] == 200 && c["body"]["payload"]["msgid"] == msgid)
    };
    let calls = e2e
        .wait_for(&e2e.amojo, Duration::from_secs(10), |c| imported(c, "chat-contact") && imported(c, "chat-file"))
        .await;
    assert!(calls_to(&calls, "/typing").is_empty(), "typing before the chat existed: {calls:#?}");
    let state = fake_state(&e2e).await;
    assert_eq!(state["messages"]["chat-file"]["type"], "file");

    // Now the chat is Kommo's: the client's typing is shown.
    let typing =
        json!({"type": "typing.started", "scope_id": scope, "conversation_id": "conv-r", "user_id": "user-conv-r"});
    e2e.chat_event_ok(typing.to_string()).await;
    let calls = e2e.wait_for(&e2e.amojo, Duration::from_secs(5), |c| !calls_to(c, "/typing").is_empty()).await;
    assert_eq!(calls_to(&calls, "/typing")[0]["reply_status"], 204);

    // A caption-only edit, and replies Kommo cannot quote.
    let caption = json!({"type": "message.edited", "scope_id": scope, "conversation_id": "conv-r", "msgid": "chat-file",
                         "message": {"type": "file", "text": "the May prices"}});
    e2e.chat_event_ok(caption.to_string()).await;
    e2e.wait_for(&e2e.amojo, Duration::from_secs(5), |c| {
        c.iter().any(|c| c["body"]["event_type"] == "edit_message" && c["reply_status"] == 200)
    })
    .await;
    let unknown = json!({"reply_to": {"msgid": "never-seen"}});
    e2e.chat_event_ok(client_message(&scope, "conv-r", "chat-reply-unknown", unknown)).await;
    e2e.wait_for(&e2e.amojo, Duration::from_secs(5), |c| imported(c, "chat-reply-unknown")).await;
    let refusal = json!({"status": 400, "body": {"error_code": 400, "error_type": "BAD_REQUEST",
                                                 "error_description": "unknown reply_to message"}});
    e2e.amojo.script(&scope, json!([refusal])).await;
    let foreign = json!({"reply_to": {"reference": "kommo-of-another-account"}});
    e2e.chat_event_ok(client_message(&scope, "conv-r", "chat-reply-foreign", foreign)).await;
    let calls = e2e.wait_for(&e2e.amojo, Duration::from_secs(5), |c| imported(c, "chat-reply-foreign")).await;
    let replies: Vec<_> = calls
        .iter()
        .filter(|c| c["body"]["payload"]["msgid"].as_str().is_some_and(|m| m.starts_with("chat-reply")))
        .map(|c| {
            (c["body"]["payload"]["msgid"].clone(), c["body"]["payload"]["reply_to"].clone(), c["reply_status"].clone())
        })
        .collect();
    assert_eq!(
        replies,
        [
            (json!("chat-reply-unknown"), Value::Null, json!(200)),
            (json!("chat-reply-foreign"), json!({"message": {"id": "kommo-of-another-account"}}), json!(400)),
            (json!("chat-reply-foreign"), Value::Null, json!(200)),
        ]
    );

    // A real account's manager webhook: blank name and contact fields, markup null.
    let webhook = json!({"account_id": "acc-1", "time": 1_700_000_000, "message": {
        "receiver": {"id": "kommo-client-r", "client_id": "user-conv-r", "name": "", "phone": "", "email": ""},
        "sender": {"id": "manager-r", "name": ""}, "conversation": {"id": "kommo-chat-r", "client_id": "conv-r"},
        "timestamp": 1_700_000_000, "msec_timestamp": 1_700_000_000_000i64,
        "message": {"id": "kommo-r1", "type": "text", "text": "Hello", "markup": null, "template": null,
                    "media": "", "thumbnail": "", "file_name": "", "file_size": 0}}});
    e2e.kommo_webhook_ok(webhook.to_string()).await;
    let calls = e2e.wait_for(&e2e.chat, Duration::from_secs(5), |c| !accepted(c, "message.created").is_empty()).await;
    let created = &accepted(&calls, "message.created")[0]["body"];
    assert_eq!(created["sender"], json!({"id": "manager-r"}), "never an empty name");
    assert!(created["receiver"].get("name").is_none() && created["receiver"].get("phone").is_none());
    // The chat service reports 901: Kommo takes a -1 only with its text.
    let failed = json!({"type": "message.status", "scope_id": scope, "reference": "kommo-r1", "status": "failed",
                        "error_code": 901});
    e2e.chat_event_ok(failed.to_string()).await;
    let calls = e2e.wait_for(&e2e.amojo, Duration::from_secs(5), |c| !calls_to(c, "/delivery_status").is_empty()).await;
    let status = &calls_to(&calls, "/delivery_status")[0];
    assert_eq!((status["reply_status"].clone(), status["body"]["error_code"].clone()), (json!(200), json!(901)));
    assert!(status["body"]["error"].as_str().is_some_and(|text| !text.is_empty()));

    // The Kommo UI names a conversation the bridge never saw (from before the install): it goes
    // to the chat service under the caller's own scope.
    let viewing = e2e
        .ui(reqwest::Method::POST, "/kommo/ui/conversations/conv-before-install/presence", 42, r#"{"state":"viewing"}"#)
        .await;
    assert_eq!(viewing.status(), 200);
    let calls = e2e.wait_for(&e2e.chat, Duration::from_secs(5), |c| !accepted(c, "presence.changed").is_empty()).await;
    let pushed = &accepted(&calls, "presence.changed")[0]["body"];
    assert_eq!(
        (pushed["scope_id"].as_str(), pushed["conversation_id"].as_str()),
        (Some(scope.as_str()), Some("conv-before-install"))
    );
}

#[tokio::test]
async fn what_real_accounts_send_and_require_goes_through_in_memory() {
    what_real_accounts_send_and_require_goes_through(false).await;
}

#[tokio::test]
async fn what_real_accounts_send_and_require_goes_through_on_dynamodb() {
    what_real_accounts_send_and_require_goes_through(true).await;
}
