//! Every promise check can fail: a clean run keeps them all, and each one-record change to it
//! breaks exactly the promise it is about, once.

use super::*;
use crate::scenario::Attempt;

const SCOPE: &str = "scope-1";
/// The conversation of the log's events (`conversation: 1`) as the chat service names it.
const CONVERSATION: &str = "conv-1";
const MANAGER: &str = "m-1";
/// The manager's message (Kommo's msgid) and the client's (the chat service's msgid).
const MANAGER_MSG: &str = "km-1";
const CLIENT_MSG: &str = "cm-1";
const END_MS: i64 = 60_000;

/// A call as a fake records it: signed, answered 200, its webhook-id new to the fake.
fn record(webhook_id: Option<&str>, path: &str, at_s: f64, body: Value) -> Value {
    let headers = webhook_id.map_or_else(|| json!({}), |id| json!({"webhook-id": id}));
    json!({"signature_ok": true, "reply_status": 200, "duplicate_id": false, "headers": headers,
           "received_at": at_s, "path": path, "scope": SCOPE, "body": body})
}

/// An event the chat service received.
fn chat_event(webhook_id: &str, at_s: f64, body: Value) -> Value {
    record(Some(webhook_id), "/events", at_s, body)
}

fn relay(reference: &str, webhook_id: &str, at_s: f64) -> Value {
    chat_event(webhook_id, at_s, json!({"type": "message.created", "reference": reference}))
}

fn told_delivered(msgid: &str, webhook_id: &str, at_s: f64) -> Value {
    chat_event(webhook_id, at_s, json!({"type": "message.delivered", "msgid": msgid}))
}

fn manager_typing(kind: &str, webhook_id: &str, at_s: f64) -> Value {
    chat_event(webhook_id, at_s, json!({"type": kind, "conversation_id": CONVERSATION, "manager": {"id": MANAGER}}))
}

fn presence(online: bool, webhook_id: &str, at_s: f64) -> Value {
    let body = json!({"type": "presence.changed", "conversation_id": CONVERSATION, "manager": {"id": MANAGER},
                      "online": online});
    chat_event(webhook_id, at_s, body)
}

/// A call amojo received, at `/v2/origin/custom/{scope}{rest}`.
fn amojo_call(rest: &str, at_s: f64, body: Value) -> Value {
    record(None, &format!("/v2/origin/custom/{SCOPE}{rest}"), at_s, body)
}

fn import(msgid: &str, at_s: f64) -> Value {
    amojo_call("", at_s, json!({"event_type": "new_message", "payload": {"msgid": msgid}}))
}

fn edit(msgid: &str, at_s: f64) -> Value {
    amojo_call("", at_s, json!({"event_type": "edit_message", "payload": {"msgid": msgid}}))
}

fn reaction(msgid: &str, at_s: f64) -> Value {
    amojo_call("/react", at_s, json!({"msgid": msgid}))
}

fn client_typing_at_amojo(at_s: f64) -> Value {
    amojo_call("/typing", at_s, json!({"conversation_id": CONVERSATION}))
}

/// A delivery_status call: 1 delivered, 2 read, -1 failed.
fn status(msgid: &str, code: i64, at_s: f64) -> Value {
    amojo_call(&format!("/{msgid}/delivery_status"), at_s, json!({"delivery_status": code}))
}

fn is_status(record: &Value, code: i64) -> bool {
    record["path"].as_str().is_some_and(|p| p.ends_with("/delivery_status"))
        && record["body"]["delivery_status"] == code
}

fn answered(at_ms: i64, status: u16) -> Attempt {
    Attempt { at_ms, status: Some(status), code: None }
}

/// An event the chat service's sender sent once and had answered 200.
fn sent(kind: &'static str, subject: Option<&str>, at_ms: i64) -> ChatSent {
    ChatSent {
        conversation: 1,
        kind,
        subject: subject.map(str::to_owned),
        status: None,
        webhook_id: format!("msg_{kind}_{at_ms}"),
        attempts: vec![answered(at_ms, 200)],
    }
}

/// A run as the harness saw it, to change one thing in and reconcile.
struct World {
    chat: Vec<Value>,
    amojo: Vec<Value>,
    log: Log,
    settled: bool,
    runs: Runs,
    cut_off: Vec<(i64, i64)>,
}

impl World {
    /// A run that kept every promise, with something for each check to look at.
    fn clean() -> Self {
        let chat = vec![
            told_delivered(CLIENT_MSG, "w-told", 3.0),
            manager_typing("typing.started", "w-typing-on", 6.0),
            presence(true, "w-online", 6.0),
            manager_typing("typing.stopped", "w-typing-off", 7.0),
            relay(MANAGER_MSG, "w-1", 8.0),
            presence(false, "w-offline", 12.0),
        ];
        let amojo = vec![
            client_typing_at_amojo(1.5),
            import(CLIENT_MSG, 2.5),
            reaction(CLIENT_MSG, 4.5),
            edit(CLIENT_MSG, 5.5),
            status(MANAGER_MSG, 1, 9.0),
            status(MANAGER_MSG, 2, 10.0),
        ];
        let log = Log {
            kommo: vec![KommoSent {
                conversation: 1,
                kind: "message",
                msgid: Some(MANAGER_MSG.to_owned()),
                status: Some(200),
            }],
            chat: vec![
                sent("typing.started", None, 1_000),
                sent("message.created", Some(CLIENT_MSG), 2_000),
                sent("reaction.added", Some(CLIENT_MSG), 4_000),
                sent("message.edited", Some(CLIENT_MSG), 5_000),
                ChatSent { status: Some("read"), ..sent("message.status", Some(MANAGER_MSG), 9_500) },
            ],
        };
        Self { chat, amojo, log, settled: true, runs: Runs::new(), cut_off: Vec::new() }
    }

    /// Reconciles the records in arrival order, as the fakes keep them (tests push anywhere).
    fn reconcile(&self) -> Findings {
        let in_arrival_order = |records: &[Value]| {
            let mut records = records.to_vec();
            records.sort_by(|a, b| a["received_at"].as_f64().unwrap().total_cmp(&b["received_at"].as_f64().unwrap()));
            records
        };
        let (chat, amojo) = (in_arrival_order(&self.chat), in_arrival_order(&self.amojo));
        reconcile(&chat, &amojo, &self.log, self.settled, &self.runs, &self.cut_off, END_MS)
    }
}

/// The one check whose name contains `part`.
fn check<'a>(findings: &'a Findings, part: &str) -> &'a Check {
    let mut named = findings.checks.iter().filter(|c| c.name.contains(part));
    let found = named.next().unwrap_or_else(|| panic!("no check named like {part:?}"));
    assert!(named.next().is_none(), "more than one check named like {part:?}");
    found
}

/// The one figure whose label contains `part`.
fn figure(findings: &Findings, part: &str) -> u64 {
    let mut named = findings.figures.iter().filter(|(label, _)| label.contains(part));
    let (_, value) = named.next().unwrap_or_else(|| panic!("no figure labelled like {part:?}"));
    assert!(named.next().is_none(), "more than one figure labelled like {part:?}");
    *value
}

/// Asserts that the checks named by `parts` broke once each and every other check held.
fn assert_broken(findings: &Findings, parts: &[&str]) {
    let broken: Vec<&str> = parts.iter().map(|part| check(findings, part).name).collect();
    for check in &findings.checks {
        let expected = u64::from(broken.contains(&check.name));
        assert_eq!(check.violations, expected, "{}: {:?}", check.name, check.examples);
    }
}

/// Asserts that the check named by `part` broke once and every other check held.
fn assert_only_broken(world: &World, part: &str) {
    assert_broken(&world.reconcile(), &[part]);
}

#[test]
fn a_clean_run_keeps_every_promise() {
    let findings = World::clean().reconcile();
    assert_broken(&findings, &[]);
    for check in &findings.checks {
        assert!(check.checked > 0, "{} looked at nothing", check.name);
    }
}

#[test]
fn a_manager_message_neither_relayed_nor_reported_failed_is_lost() {
    let mut world = World::clean();
    world.chat.retain(|r| r["body"]["type"] != "message.created");
    assert_only_broken(&world, "relayed to the chat service, or reported failed");
}

#[test]
fn a_manager_message_relayed_under_two_webhook_ids_is_a_double() {
    let mut world = World::clean();
    world.chat.push(relay(MANAGER_MSG, "w-1-again", 8.5));
    assert_only_broken(&world, "relayed under one webhook-id");
}

#[test]
fn an_accepted_client_message_never_imported_is_lost() {
    let mut world = World::clean();
    world.amojo.retain(|r| r["body"]["event_type"] != "new_message");
    assert_only_broken(&world, "imported into amojo");
}

#[test]
fn a_client_message_told_delivered_twice_is_a_double() {
    let mut world = World::clean();
    world.chat.push(told_delivered(CLIENT_MSG, "w-told-again", 3.5));
    assert_only_broken(&world, "exactly once");
}

#[test]
fn an_accepted_read_that_never_reaches_amojo_is_lost() {
    let mut world = World::clean();
    world.amojo.retain(|r| !is_status(r, 2));
    assert_only_broken(&world, "reaches amojo (or a higher one)");
}

#[test]
fn an_accepted_reaction_or_edit_never_at_amojo_is_lost() {
    let is_reaction = |r: &Value| r["path"].as_str().is_some_and(|p| p.ends_with("/react"));
    let is_edit = |r: &Value| r["body"]["event_type"] == "edit_message";
    for lost in [is_reaction as fn(&Value) -> bool, is_edit] {
        let mut world = World::clean();
        world.amojo.retain(|r| !lost(r));
        assert_only_broken(&world, "reaction and edit reach amojo");
    }
}

#[test]
fn client_typing_at_amojo_long_after_the_last_start_is_stuck() {
    let mut world = World::clean();
    // The client's last typing.started was sent at 1 s.
    world.amojo.push(client_typing_at_amojo(1.0 + CLIENT_TYPING_STUCK_MS / 1000.0 + 1.0));
    assert_only_broken(&world, "client typing shown at amojo");
}

#[test]
fn typing_stopped_twice_in_a_row_breaks_alternation() {
    let mut world = World::clean();
    // A double send: the same stop under a second webhook-id.
    world.chat.push(manager_typing("typing.stopped", "w-typing-off-again", 7.5));
    assert_only_broken(&world, "typing.started and typing.stopped alternate");
}

#[test]
fn a_typing_indicator_started_last_is_left_on() {
    let mut world = World::clean();
    world.chat.push(manager_typing("typing.started", "w-typing-on-again", 13.0));
    assert_only_broken(&world, "left on");
}

#[test]
fn presence_ending_online_is_left_online() {
    let mut world = World::clean();
    world.chat.push(presence(true, "w-online-again", 13.0));
    assert_only_broken(&world, "presence.changed alternates");
}

#[test]
fn presence_offline_twice_in_a_row_is_a_double() {
    let mut world = World::clean();
    world.chat.push(presence(false, "w-offline-again", 13.0));
    assert_only_broken(&world, "presence.changed alternates");
}

#[test]
fn a_first_push_saying_offline_is_a_missed_online_spell_not_a_break() {
    // What the chat service showed before the first push is not known: it may say either.
    let mut world = World::clean();
    world.chat.retain(|r| !(r["body"]["type"] == "presence.changed" && r["body"]["online"] == true));
    let findings = world.reconcile();
    assert_broken(&findings, &[]);
    assert_eq!(figure(&findings, "online spell missed"), 1);
}

#[test]
fn a_status_sent_to_amojo_twice_is_a_double() {
    let mut world = World::clean();
    world.amojo.push(status(MANAGER_MSG, 1, 9.5));
    assert_only_broken(&world, "sent to amojo twice");
}

#[test]
fn delivered_after_read_at_amojo_goes_backwards() {
    let mut world = World::clean();
    // Moved, not repeated: codes [2, 1], each once, so only the order is wrong.
    world.amojo.retain(|r| !is_status(r, 1));
    world.amojo.push(status(MANAGER_MSG, 1, 11.0));
    assert_only_broken(&world, "backwards");
}

#[test]
fn a_client_message_imported_twice_is_a_double() {
    let mut world = World::clean();
    world.amojo.push(import(CLIENT_MSG, 3.0));
    assert_only_broken(&world, "imported once");
}

#[test]
fn a_retry_refused_as_a_replay_is_a_broken_answer() {
    let mut world = World::clean();
    let client_message = world.log.chat.iter_mut().find(|s| s.kind == "message.created").unwrap();
    // The first answer failed; the retry, under the same webhook-id, was refused as a replay.
    client_message.attempts = vec![
        answered(2_000, 503),
        Attempt { at_ms: 2_500, status: Some(409), code: Some("replayed_webhook".to_owned()) },
    ];
    assert_only_broken(&world, "409");
}

#[test]
fn a_run_that_never_settles_is_a_violation() {
    let mut world = World::clean();
    world.settled = false;
    assert_only_broken(&world, "settled");
}

/// The clean run with the client message imported again and delivered reported again, the
/// first of each made at 2.5 s and 9 s; `cut_off`: the invocations killed.
fn repeated_after(cut_off: Vec<(i64, i64)>) -> World {
    let mut world = World::clean();
    world.amojo.push(import(CLIENT_MSG, 3.0));
    world.amojo.push(status(MANAGER_MSG, 1, 9.5));
    world.cut_off = cut_off;
    world
}

#[test]
fn a_repeat_right_after_a_kill_is_counted_not_broken() {
    let findings = repeated_after(vec![(2_400, 2_600), (8_900, 9_100)]).reconcile();
    assert_broken(&findings, &[]);
    assert_eq!(figure(&findings, "statuses repeated after a kill"), 1);
    assert_eq!(figure(&findings, "imports repeated after a kill"), 1);
}

#[test]
fn a_repeat_no_kill_explains_is_broken() {
    // Each invocation died well before the first call was made (more than a request's time on
    // the wire): it did not make it.
    let findings = repeated_after(vec![(2_000, 2_300), (8_500, 8_800)]).reconcile();
    assert_broken(&findings, &["sent to amojo twice", "imported once"]);
    assert_eq!(figure(&findings, "statuses repeated after a kill"), 0);
    assert_eq!(figure(&findings, "imports repeated after a kill"), 0);
}

/// The clean run with its typing.stopped received again under the same webhook-id, which the
/// chat service marks `duplicate_id` when it had accepted it before.
fn stop_received_again(duplicate_id: bool) -> World {
    let mut world = World::clean();
    let mut again = manager_typing("typing.stopped", "w-typing-off", 7.5);
    again["duplicate_id"] = json!(duplicate_id);
    world.chat.push(again);
    world
}

#[test]
fn an_event_the_chat_service_had_before_is_not_counted_again() {
    assert_broken(&stop_received_again(true).reconcile(), &[]);
    // Without the mark it would be a second stop in a row.
    assert_only_broken(&stop_received_again(false), "typing.started and typing.stopped alternate");
}
