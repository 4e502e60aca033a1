//! The fault suite: the dev server between the fakes while they fail (amojo down, refusing
//! connections, for 20 s; amojo answering 429 with `Retry-After`; amojo and the chat service
//! closing connections unanswered; the chat service taking 10 s, or failing for good; the
//! DynamoDB-compatible server stopped and restarted on its data file) and, afterwards, a ledger
//! of what the bridge acknowledged checked against what its destinations received: every
//! accepted message and status arrived exactly once, or sits in the dead-letter state with a
//! Kommo error status; nothing acknowledged was lost; every typing lease ended.
//!
//! "Exactly once" is what a receiver sees that deduplicates the way the contract lets it:
//! Kommo by msgid (an import, a (message, status) pair), the chat service by `webhook-id`, the
//! same on every retry of one event. A retry after a fault that left the outcome unknown (a
//! timeout, a connection closed unanswered) is expected; a second *accepted* copy is not.
//!
//! Each scenario has its own scope and dev server, and its own fake or Dynoxide process when
//! it stops one, so the scenarios run in parallel.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::time::{Clock, SystemClock};
use support::{E2e, Fake, Restartable, TempFile};

// ---------------------------------------------------------------------------------------------
// Configuration of the dev servers under test

/// Retries that outlast a 20 s outage and still come back soon after it: waits of
/// 0.125–0.25 s doubling each time (capped at 30 s), 12 attempts, so 75 s or more in all.
fn outage_env() -> Vec<(&'static str, &'static str)> {
    vec![("RETRY_BASE_DELAY_MS", "250"), ("RETRY_MAX_ATTEMPTS", "12"), ("RUST_LOG", "error")]
}

/// Quick retries, for the scenarios where giving up is the point: 4 attempts, 0.1 s apart and up.
fn give_up_env() -> Vec<(&'static str, &'static str)> {
    vec![("RETRY_BASE_DELAY_MS", "100"), ("RETRY_MAX_ATTEMPTS", "4"), ("RUST_LOG", "error")]
}

// ---------------------------------------------------------------------------------------------
// What the senders send

fn now_s() -> i64 {
    SystemClock.now_s()
}

/// Kommo's webhook for a manager's message in `conversation`.
fn manager_message(kommo_msgid: &str, conversation: &str) -> String {
    let now = now_s();
    json!({"account_id": "acc-1", "time": now,
           "message": {"receiver": {"id": format!("r-{conversation}"), "client_id": format!("client-{conversation}")},
                       "sender": {"id": "manager-1", "name": "Lama"},
                       "conversation": {"id": format!("kommo-{conversation}"), "client_id": conversation},
                       "timestamp": now, "msec_timestamp": now * 1000,
                       "message": {"id": kommo_msgid, "type": "text", "text": "Your order has shipped"}}})
    .to_string()
}

/// Kommo's manager-typing webhook (it comes every 5 s while the manager types).
fn manager_typing(conversation: &str) -> String {
    let expired_at = now_s() + 5;
    json!({"account_id": "acc-1", "time": expired_at - 5,
           "action": {"typing": {"user": {"id": "manager-1"},
                                 "conversation": {"id": format!("kommo-{conversation}"), "client_id": conversation},
                                 "expired_at": expired_at}}})
    .to_string()
}

/// The chat service's client message.
fn client_message(scope: &str, msgid: &str, conversation: &str) -> String {
    json!({"type": "message.created", "scope_id": scope, "conversation_id": conversation, "msgid": msgid,
           "user": {"id": format!("client-{conversation}"), "name": "Adam"},
           "message": {"type": "text", "text": "Where is my parcel?"},
           "timestamp_ms": SystemClock.now_ms()})
    .to_string()
}

/// The chat service's status for a manager's message.
fn status(scope: &str, kommo_msgid: &str, status: &str) -> String {
    json!({"type": "message.status", "scope_id": scope, "reference": kommo_msgid, "status": status}).to_string()
}

/// The chat service's client typing signal (ephemeral: dropped when amojo fails).
fn client_typing(scope: &str, conversation: &str) -> String {
    json!({"type": "typing.started", "scope_id": scope, "conversation_id": conversation,
           "user_id": format!("client-{conversation}")})
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// The ledger: what the bridge acknowledged, hence owes its destinations

/// A status call to amojo: (Kommo msgid, delivery_status, error_code).
type StatusKey = (String, i64, Option<i64>);

#[derive(Debug, Default)]
struct Ledger {
    /// Kommo msgids of manager messages acknowledged: each owes the chat service one
    /// `message.created`, unless it is one of `dead_letters`.
    manager_messages: BTreeSet<String>,
    /// Manager messages the chat service refused or never took: each owes Kommo one error
    /// status (listed in `statuses`) and the chat service no acceptance.
    dead_letters: BTreeSet<String>,
    /// Chat-service msgids of client messages acknowledged: each owes Kommo one import and the
    /// chat service one `message.delivered`, unless it is one of `client_dead_letters`.
    client_messages: BTreeSet<String>,
    /// Client messages Kommo never takes: each owes the chat service one `message.failed` and
    /// Kommo no accepted import.
    client_dead_letters: BTreeSet<String>,
    /// Statuses acknowledged: each owes Kommo one call, unless a better status of the same
    /// message overtook it while it waited (then at most one, and never after the better one).
    statuses: BTreeSet<StatusKey>,
    /// Whether an import may reach Kommo more than once: when the store fails right after an
    /// import, before the bridge has recorded it, the import is made again, and Kommo
    /// deduplicates it by msgid (the fake answers with the same Kommo msgid).
    imports_may_repeat: bool,
}

impl Ledger {
    fn delivered(&mut self, kommo_msgid: &str) {
        self.statuses.insert((kommo_msgid.to_owned(), 1, None));
    }

    fn read(&mut self, kommo_msgid: &str) {
        self.statuses.insert((kommo_msgid.to_owned(), 2, None));
    }

    fn manager_message(&mut self, kommo_msgid: &str) {
        self.manager_messages.insert(kommo_msgid.to_owned());
    }

    /// A manager message that ends in the dead-letter state with error `code` in Kommo.
    fn dead_letter(&mut self, kommo_msgid: &str, code: i64) {
        self.manager_messages.insert(kommo_msgid.to_owned());
        self.dead_letters.insert(kommo_msgid.to_owned());
        self.statuses.insert((kommo_msgid.to_owned(), -1, Some(code)));
    }

    /// Whether a better status of the same message was acknowledged too: Kommo's status then
    /// ends at that one, and this one may have been left out.
    fn overtaken(&self, (msgid, code, _): &StatusKey) -> bool {
        self.statuses.iter().any(|(other, better, _)| other == msgid && better > code)
    }

    /// The manager messages owed to the chat service.
    fn relayed(&self) -> impl Iterator<Item = &String> {
        self.manager_messages.difference(&self.dead_letters)
    }
}

/// A call the fake answered with a 2xx (so the bridge knows it arrived), correctly signed.
fn answered_ok(call: &Value) -> bool {
    call["signature_ok"] == true && call["reply_status"].as_u64().is_some_and(|status| (200..300).contains(&status))
}

/// What an amojo call was about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum AmojoKey {
    Import(String),
    Status(StatusKey),
    CreateChat(String),
    Typing(String),
    Other(String),
}

fn amojo_key(scope: &str, call: &Value) -> AmojoKey {
    let path = call["path"].as_str().unwrap_or_default();
    let body = &call["body"];
    let base = format!("/v2/origin/custom/{scope}");
    if path == base {
        AmojoKey::Import(body["payload"]["msgid"].as_str().unwrap_or_default().to_owned())
    } else if path.ends_with("/delivery_status") {
        AmojoKey::Status((
            body["msgid"].as_str().unwrap_or_default().to_owned(),
            body["delivery_status"].as_i64().unwrap_or_default(),
            body["error_code"].as_i64(),
        ))
    } else if path == format!("{base}/chats") {
        AmojoKey::CreateChat(body["conversation_id"].as_str().unwrap_or_default().to_owned())
    } else if path == format!("{base}/typing") {
        AmojoKey::Typing(body["conversation_id"].as_str().unwrap_or_default().to_owned())
    } else {
        AmojoKey::Other(path.to_owned())
    }
}

/// How many 2xx answers amojo gave per key.
fn amojo_accepted(scope: &str, calls: &[Value]) -> BTreeMap<AmojoKey, usize> {
    let mut accepted = BTreeMap::new();
    for call in calls.iter().filter(|call| answered_ok(call)) {
        *accepted.entry(amojo_key(scope, call)).or_insert(0) += 1;
    }
    accepted
}

/// Every import and status the ledger owes Kommo has been accepted at least once.
fn amojo_complete(scope: &str, calls: &[Value], ledger: &Ledger) -> bool {
    let accepted = amojo_accepted(scope, calls);
    ledger
        .client_messages
        .difference(&ledger.client_dead_letters)
        .all(|msgid| accepted.contains_key(&AmojoKey::Import(msgid.clone())))
        && ledger
            .statuses
            .iter()
            .all(|status| ledger.overtaken(status) || accepted.contains_key(&AmojoKey::Status(status.clone())))
}

/// Kommo got every import and status the ledger owes it exactly once (an overtaken status at
/// most once), nothing it does not owe, every call correctly signed, and never `delivered`
/// after `read` for one message.
fn assert_amojo_exactly_once(scope: &str, calls: &[Value], ledger: &Ledger) {
    assert!(calls.iter().all(|call| call["signature_ok"] == true), "every amojo call is correctly signed");
    let accepted = amojo_accepted(scope, calls);
    for msgid in ledger.client_messages.difference(&ledger.client_dead_letters) {
        let times = accepted.get(&AmojoKey::Import(msgid.clone())).copied().unwrap_or(0);
        if ledger.imports_may_repeat {
            assert!(times >= 1, "client message {msgid} never imported into Kommo");
        } else {
            assert_eq!(times, 1, "client message {msgid} imported into Kommo {times} times");
        }
    }
    for status in &ledger.statuses {
        let times = accepted.get(&AmojoKey::Status(status.clone())).copied().unwrap_or(0);
        if ledger.overtaken(status) {
            assert!(times <= 1, "status {status:?} reported to Kommo {times} times");
        } else {
            assert_eq!(times, 1, "status {status:?} reported to Kommo {times} times");
        }
    }
    for key in accepted.keys() {
        match key {
            AmojoKey::Import(msgid) => {
                assert!(ledger.client_messages.contains(msgid), "Kommo got an import nobody sent: {msgid}")
            }
            AmojoKey::Status(status) => {
                assert!(ledger.statuses.contains(status), "Kommo got a status nobody reported: {status:?}")
            }
            AmojoKey::CreateChat(_) | AmojoKey::Typing(_) => {}
            AmojoKey::Other(path) => panic!("an unexpected amojo call: {path}"),
        }
    }
    let mut best: BTreeMap<String, i64> = BTreeMap::new();
    for call in calls.iter().filter(|call| answered_ok(call)) {
        if let AmojoKey::Status((msgid, code, _)) = amojo_key(scope, call)
            && code > 0
        {
            let seen = best.entry(msgid.clone()).or_insert(0);
            assert!(code >= *seen, "Kommo was told {code} after {seen} for {msgid}: a status went backwards");
            *seen = code;
        }
    }
}

/// The chat service's `message.created` calls, by Kommo msgid.
fn relays(calls: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut by_reference: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for call in calls.iter().filter(|call| call["body"]["type"] == "message.created") {
        by_reference.entry(call["body"]["reference"].as_str().unwrap_or_default().to_owned()).or_default().push(call);
    }
    by_reference
}

/// Accepted by the chat service for the first time: what a receiver deduplicating on
/// `webhook-id` acts on.
fn first_acceptance(call: &Value) -> bool {
    answered_ok(call) && call["duplicate_id"] == false
}

/// The chat service's `message.delivered` / `message.failed` calls, by chat-service msgid.
fn outcomes(calls: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut by_msgid: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    let told = calls
        .iter()
        .filter(|call| matches!(call["body"]["type"].as_str(), Some("message.delivered" | "message.failed")));
    for call in told {
        by_msgid.entry(call["body"]["msgid"].as_str().unwrap_or_default().to_owned()).or_default().push(call);
    }
    by_msgid
}

/// Every manager message and every client message's outcome the ledger owes the chat service
/// has been accepted by it.
fn chat_complete(calls: &[Value], ledger: &Ledger) -> bool {
    let accepted = |calls: Option<&Vec<&Value>>| calls.is_some_and(|calls| calls.iter().any(|c| first_acceptance(c)));
    let (relays, outcomes) = (relays(calls), outcomes(calls));
    ledger.relayed().all(|msgid| accepted(relays.get(msgid)))
        && ledger.client_messages.iter().all(|msgid| accepted(outcomes.get(msgid)))
}

/// The chat service got every manager message the ledger owes it exactly once after
/// deduplication (all attempts of one message under one `webhook-id`, one of them accepted
/// first), none of the dead letters, and nothing else.
fn assert_chat_exactly_once(calls: &[Value], ledger: &Ledger) {
    assert!(calls.iter().all(|call| call["signature_ok"] == true), "every chat-service call is correctly signed");
    let relays = relays(calls);
    for msgid in &ledger.manager_messages {
        let attempts =
            relays.get(msgid).unwrap_or_else(|| panic!("manager message {msgid} never reached the chat service"));
        let ids: BTreeSet<&str> = attempts.iter().map(|c| c["headers"]["webhook-id"].as_str().unwrap_or("")).collect();
        assert_eq!(ids.len(), 1, "{msgid}: every attempt under one webhook-id, got {ids:?}");
        let accepted = attempts.iter().filter(|c| first_acceptance(c)).count();
        let owed = usize::from(!ledger.dead_letters.contains(msgid));
        assert_eq!(
            accepted,
            owed,
            "{msgid}: accepted {accepted} times after deduplication ({} attempts)",
            attempts.len()
        );
    }
    for msgid in relays.keys() {
        assert!(ledger.manager_messages.contains(msgid), "the chat service got a message nobody sent: {msgid}");
    }
    // What became of each client message: told once (after deduplication), and truly.
    let outcomes = outcomes(calls);
    for msgid in &ledger.client_messages {
        let told = outcomes.get(msgid).unwrap_or_else(|| panic!("client message {msgid}: its outcome never told"));
        let ids: BTreeSet<&str> = told.iter().map(|c| c["headers"]["webhook-id"].as_str().unwrap_or("")).collect();
        assert_eq!(ids.len(), 1, "{msgid}: its outcome told under one webhook-id, got {ids:?}");
        let accepted: Vec<_> = told.iter().filter(|c| first_acceptance(c)).collect();
        assert_eq!(accepted.len(), 1, "{msgid}: outcome accepted {} times after deduplication", accepted.len());
        let expected = if ledger.client_dead_letters.contains(msgid) { "message.failed" } else { "message.delivered" };
        assert_eq!(accepted[0]["body"]["type"], expected, "{msgid}");
    }
    for msgid in outcomes.keys() {
        assert!(ledger.client_messages.contains(msgid), "an outcome of a message nobody sent: {msgid}");
    }
}

/// The typing leases still open at the chat service: for each (conversation, manager), a
/// `typing.started` it accepted (deduplicated on `webhook-id`) with no accepted
/// `typing.stopped` after it. Also how many leases were seen.
fn open_leases(calls: &[Value]) -> (Vec<(String, String)>, usize) {
    let mut last: BTreeMap<(String, String), (Option<usize>, Option<usize>)> = BTreeMap::new();
    for (index, call) in calls.iter().enumerate().filter(|(_, call)| first_acceptance(call)) {
        let body = &call["body"];
        let kind = body["type"].as_str().unwrap_or_default();
        if kind != "typing.started" && kind != "typing.stopped" {
            continue;
        }
        let lease = (
            body["conversation_id"].as_str().unwrap_or_default().to_owned(),
            body["manager"]["id"].as_str().unwrap_or_default().to_owned(),
        );
        let entry = last.entry(lease).or_default();
        if kind == "typing.started" {
            entry.0 = Some(index);
        } else {
            entry.1 = Some(index);
        }
    }
    let open = last
        .iter()
        .filter(|(_, (started, stopped))| {
            started.is_some_and(|started| stopped.is_none_or(|stopped| stopped < started))
        })
        .map(|(lease, _)| lease.clone())
        .collect();
    (open, last.values().filter(|(started, _)| started.is_some()).count())
}

/// Every typing lease the chat service heard start has ended; returns how many there were.
fn assert_typing_ended(calls: &[Value]) -> usize {
    let (open, leases) = open_leases(calls);
    assert!(open.is_empty(), "typing leases never ended (typing.started with no typing.stopped after it): {open:?}");
    leases
}

/// One line per call, for the log of a failing scenario.
fn summary(calls: &[Value]) -> String {
    let first = calls.first().map(received_at).unwrap_or_default();
    let lines = calls.iter().map(|call| {
        let body = &call["body"];
        let what = match body["type"].as_str() {
            Some(kind) => format!("{kind} {} {}", body["conversation_id"], body["reference"]),
            None => format!("{} {}", call["path"], body.get("payload").map_or(body, |p| &p["msgid"])),
        };
        format!(
            "{:7.3} {what} id={} reply={} fault={} duplicate={}",
            received_at(call) - first,
            call["headers"]["webhook-id"],
            call["reply_status"],
            call["fault"],
            call["duplicate_id"]
        )
    });
    lines.collect::<Vec<_>>().join("\n")
}

/// Waits until `done` holds for `fake`'s calls for the scope (at most `limit`); the calls.
async fn settle(e2e: &E2e, fake: &Fake, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let calls = e2e.wait_for(fake, limit, &done).await;
    if !done(&calls) {
        println!("not settled after {limit:?}; the calls so far:\n{}", summary(&calls));
    }
    // Room for a wrong extra call to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = fake.calls(&e2e.scope).await;
    assert!(after.len() >= calls.len());
    // Shown only when the scenario fails.
    println!("{} calls at {}:\n{}", after.len(), fake.url, summary(&after));
    after
}

fn received_at(call: &Value) -> f64 {
    call["received_at"].as_f64().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// (1) amojo down for 20 s: connections refused, then back

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amojo_down_for_20_s_then_back_gets_every_status_and_client_message_once() {
    let secret = hex::encode(shared::random::random_bytes::<20>());
    let mut amojo_process = Restartable::fake("fake_amojo.py", &secret);
    let e2e = E2e::between(Fake::at(&amojo_process.url(), &secret), Fake::chat_service(), &outage_env());
    let scope = e2e.scope.clone();
    let mut ledger = Ledger::default();

    // Before: four manager messages relayed, one status reported.
    for (msgid, conversation) in [("m-1", "conv-a"), ("m-2", "conv-a"), ("m-3", "conv-b"), ("m-4", "conv-b")] {
        e2e.kommo_webhook_ok(manager_message(msgid, conversation)).await;
        ledger.manager_message(msgid);
    }
    e2e.chat_event_ok(status(&scope, "m-1", "delivered")).await;
    ledger.delivered("m-1");
    let before =
        settle(&e2e, &e2e.amojo, Duration::from_secs(10), |calls| amojo_complete(&scope, calls, &ledger)).await;
    assert_amojo_exactly_once(&scope, &before, &ledger);

    // Down: the port refuses connections for 20 s while both sides keep talking.
    tokio::task::block_in_place(|| amojo_process.stop());
    let down = Instant::now();
    let refusal = json!({"error": {"code": "blocked", "message": "The client blocked this business"}});
    e2e.chat.script(&scope, json!([{"status": 422, "body": refusal}])).await;
    e2e.kommo_webhook_ok(manager_message("m-5", "conv-c")).await; // refused: -1 905 owed to Kommo
    ledger.dead_letter("m-5", 905);
    let during: Vec<(&str, String)> = vec![
        ("read m-1", status(&scope, "m-1", "read")),
        ("client c-1 (known conversation)", client_message(&scope, "c-1", "conv-a")),
        ("delivered m-2", status(&scope, "m-2", "delivered")),
        ("client typing", client_typing(&scope, "conv-d")),
        ("client c-2 (new conversation)", client_message(&scope, "c-2", "conv-d")),
        ("read m-2", status(&scope, "m-2", "read")),
        ("client c-3 (new conversation)", client_message(&scope, "c-3", "conv-e")),
        ("read m-3", status(&scope, "m-3", "read")),
        ("client c-4 (same new conversation)", client_message(&scope, "c-4", "conv-d")),
        ("delivered m-4", status(&scope, "m-4", "delivered")),
    ];
    for (i, (what, body)) in during.into_iter().enumerate() {
        // Spread over the outage, the last one near its end.
        tokio::time::sleep_until((down + Duration::from_millis(1800 * i as u64 + 500)).into()).await;
        let response = e2e.chat_event(body).await;
        assert_eq!(response.status(), 200, "{what}: acknowledged while amojo is down");
    }
    ledger.read("m-1");
    ledger.delivered("m-2");
    ledger.read("m-2");
    ledger.read("m-3");
    ledger.delivered("m-4");
    ledger.client_messages.extend(["c-1", "c-2", "c-3", "c-4"].map(String::from));
    e2e.kommo_webhook_ok(manager_message("m-6", "conv-b")).await;
    ledger.manager_message("m-6");

    tokio::time::sleep_until((down + Duration::from_secs(20)).into()).await;
    tokio::task::block_in_place(|| amojo_process.restart());
    let back = Instant::now();

    let after = settle(&e2e, &e2e.amojo, Duration::from_secs(60), |calls| amojo_complete(&scope, calls, &ledger)).await;
    println!("amojo back after 20 s down: all caught up {:?} later", back.elapsed());
    let all: Vec<Value> = before.into_iter().chain(after).collect();
    assert_amojo_exactly_once(&scope, &all, &ledger);
    let chat = e2e.chat.calls(&scope).await;
    assert!(chat_complete(&chat, &ledger));
    assert_chat_exactly_once(&chat, &ledger);
}

// ---------------------------------------------------------------------------------------------
// (2) amojo answering 429 with Retry-After

/// Calls to amojo grouped by the piece of work that makes them: a status report, or a client
/// message's import with the chat created first (keyed by conversation).
fn amojo_work(scope: &str, call: &Value) -> Option<String> {
    match amojo_key(scope, call) {
        AmojoKey::Status((msgid, code, _)) => Some(format!("status {msgid} {code}")),
        AmojoKey::CreateChat(conversation) => Some(format!("import into {conversation}")),
        AmojoKey::Import(_) => {
            Some(format!("import into {}", call["body"]["payload"]["conversation_id"].as_str().unwrap_or_default()))
        }
        AmojoKey::Typing(_) | AmojoKey::Other(_) => None,
    }
}

#[tokio::test]
async fn amojo_answering_429_has_its_retry_after_honoured_and_gets_everything_once() {
    let e2e = E2e::start(&outage_env());
    let scope = e2e.scope.clone();
    let mut ledger = Ledger::default();
    let start = Instant::now();

    // First 4 s: Retry-After 2, short enough to be waited out within one run.
    e2e.amojo.fault(&scope, 4.0, None, 1, json!({"status": 429, "headers": {"Retry-After": "2"}})).await;
    e2e.chat_event_ok(status(&scope, "m-1", "delivered")).await;
    e2e.chat_event_ok(client_message(&scope, "c-1", "conv-a")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    e2e.chat_event_ok(status(&scope, "m-2", "read")).await;
    e2e.chat_event_ok(client_typing(&scope, "conv-b")).await;
    e2e.chat_event_ok(client_message(&scope, "c-2", "conv-b")).await;
    ledger.delivered("m-1");
    ledger.read("m-2");
    ledger.client_messages.extend(["c-1", "c-2"].map(String::from));

    // Then 5 s of Retry-After 8: longer than is waited in process, so handed to the queue.
    tokio::time::sleep_until((start + Duration::from_millis(4100)).into()).await;
    e2e.amojo.fault(&scope, 5.0, None, 1, json!({"status": 429, "headers": {"Retry-After": "8"}})).await;
    e2e.chat_event_ok(status(&scope, "m-1", "read")).await;
    e2e.chat_event_ok(client_message(&scope, "c-3", "conv-c")).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    e2e.chat_event_ok(status(&scope, "m-3", "delivered")).await;
    ledger.read("m-1");
    ledger.delivered("m-3");
    ledger.client_messages.insert("c-3".into());

    let calls = settle(&e2e, &e2e.amojo, Duration::from_secs(45), |calls| amojo_complete(&scope, calls, &ledger)).await;
    println!("amojo rate limiting for 9 s: all caught up {:?} after the start", start.elapsed());
    assert_amojo_exactly_once(&scope, &calls, &ledger);

    let mut work: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for call in &calls {
        if let Some(name) = amojo_work(&scope, call) {
            work.entry(name).or_default().push(call);
        }
    }
    let mut honoured = BTreeSet::new();
    for (name, attempts) in &work {
        for pair in attempts.windows(2) {
            if pair[0]["reply_status"] != 429 {
                continue;
            }
            let asked: f64 = pair[0]["reply_headers"]["Retry-After"].as_str().unwrap().parse().unwrap();
            let waited = received_at(pair[1]) - received_at(pair[0]);
            assert!(waited >= asked - 0.05, "{name}: asked to wait {asked} s, tried again after {waited:.2} s");
            honoured.insert(asked as u64);
        }
    }
    assert_eq!(honoured, BTreeSet::from([2, 8]), "both kinds of Retry-After were met and honoured");
}

// ---------------------------------------------------------------------------------------------
// (3) Connections closed without an answer, on both sides

#[tokio::test]
async fn connections_closed_unanswered_on_both_sides_lose_nothing_and_duplicate_nothing() {
    let e2e = E2e::start(&outage_env());
    let scope = e2e.scope.clone();
    let mut ledger = Ledger::default();
    let start = Instant::now();

    // amojo reads each request and hangs up: all of them for 3 s, then one in two for 4 s;
    // the chat service hangs up on one request in two for 7 s.
    e2e.amojo.fault(&scope, 3.0, None, 1, json!({"close": true})).await;
    e2e.chat.fault(&scope, 7.0, None, 2, json!({"close": true})).await;
    for (i, conversation) in ["conv-a", "conv-b", "conv-c"].into_iter().enumerate() {
        e2e.kommo_webhook_ok(manager_typing(conversation)).await;
        let msgid = format!("m-{i}");
        e2e.kommo_webhook_ok(manager_message(&msgid, conversation)).await;
        ledger.manager_message(&msgid);
        e2e.chat_event_ok(status(&scope, &msgid, "delivered")).await;
        ledger.delivered(&msgid);
        let chat_msgid = format!("c-{i}");
        e2e.chat_event_ok(client_message(&scope, &chat_msgid, conversation)).await;
        ledger.client_messages.insert(chat_msgid);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep_until((start + Duration::from_secs(3)).into()).await;
    e2e.amojo.fault(&scope, 4.0, None, 2, json!({"close": true})).await;
    for (i, conversation) in ["conv-d", "conv-e"].into_iter().enumerate() {
        e2e.kommo_webhook_ok(manager_typing(conversation)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let msgid = format!("m-{}", i + 3);
        e2e.kommo_webhook_ok(manager_message(&msgid, conversation)).await;
        ledger.manager_message(&msgid);
        e2e.chat_event_ok(status(&scope, &format!("m-{i}"), "read")).await;
        ledger.read(&format!("m-{i}"));
        let chat_msgid = format!("c-{}", i + 3);
        e2e.chat_event_ok(client_message(&scope, &chat_msgid, conversation)).await;
        ledger.client_messages.insert(chat_msgid);
    }

    let chat = settle(&e2e, &e2e.chat, Duration::from_secs(45), |calls| {
        chat_complete(calls, &ledger) && open_leases(calls).0.is_empty()
    })
    .await;
    let amojo = settle(&e2e, &e2e.amojo, Duration::from_secs(45), |calls| amojo_complete(&scope, calls, &ledger)).await;
    println!("connections closed for 7 s: all caught up {:?} after the start", start.elapsed());
    let unanswered = |calls: &[Value]| calls.iter().filter(|c| c["reply_status"].is_null()).count();
    assert!(unanswered(&amojo) > 0 && unanswered(&chat) > 0, "both fakes hung up on some calls");
    assert_amojo_exactly_once(&scope, &amojo, &ledger);
    assert_chat_exactly_once(&chat, &ledger);
    // A start held back until the manager's message had ended its lease is not sent at all.
    let leases = assert_typing_ended(&chat);
    assert!((1..=5).contains(&leases), "{leases} typing leases started");
}

// ---------------------------------------------------------------------------------------------
// (4) The chat service taking 10 s to answer

#[tokio::test]
async fn a_chat_service_taking_10_s_gets_webhooks_answered_at_once_and_each_message_once_by_webhook_id() {
    let e2e = E2e::start(&outage_env());
    let scope = e2e.scope.clone();
    let mut ledger = Ledger::default();
    let start = Instant::now();

    // For 3 s, each request to the chat service is answered 200, but only after 10 s: past the
    // bridge's 8 s bound, so it cannot know the chat service took it, and tries again.
    e2e.chat.fault(&scope, 3.0, None, 1, json!({"status": 200, "delay_ms": 10_000})).await;
    let mut slowest = Duration::ZERO;
    // In conv-b the manager types for a second first, so the message's relay starts with
    // typing.stopped.
    let webhooks = [
        manager_message("m-0", "conv-a"),
        manager_typing("conv-b"),
        manager_message("m-1", "conv-b"),
        manager_message("m-2", "conv-c"),
    ];
    for body in webhooks {
        let sent = Instant::now();
        let response = e2e.kommo_webhook(body).await;
        let took = sent.elapsed();
        assert_eq!(response.status(), 200);
        assert!(took < Duration::from_secs(1), "a Kommo webhook answered in {took:?}");
        slowest = slowest.max(took);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    ledger.manager_message("m-0");
    ledger.manager_message("m-1");
    ledger.manager_message("m-2");
    println!("Kommo webhooks while the chat service takes 10 s: slowest answered in {slowest:?}");

    let chat = settle(&e2e, &e2e.chat, Duration::from_secs(45), |calls| {
        chat_complete(calls, &ledger) && open_leases(calls).0.is_empty()
    })
    .await;
    println!("chat service slow for 3 s: all caught up {:?} after the start", start.elapsed());
    assert_chat_exactly_once(&chat, &ledger);
    for msgid in ["m-0", "m-2"] {
        let attempts = &relays(&chat)[msgid];
        assert!(attempts.len() >= 2, "{msgid}: the slow first attempt timed out and was tried again");
        assert!(attempts[0]["fault"] == true && first_acceptance(attempts[0]), "{msgid}: the slow attempt counts");
        assert!(attempts[1..].iter().all(|c| c["duplicate_id"] == true), "{msgid}: retries are duplicates by id");
    }
    assert_eq!(assert_typing_ended(&chat), 1);
    // Delivered (slowly) is not failed: Kommo heard no error.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_amojo_exactly_once(&scope, &e2e.amojo.calls(&scope).await, &ledger);
}

// ---------------------------------------------------------------------------------------------
// (5) The chat service failing for good

#[tokio::test]
async fn a_chat_service_failing_for_good_dead_letters_each_message_and_kommo_hears_903_once() {
    let endpoint = support::required_env("TEST_DYNAMODB_ENDPOINT");
    let table = support::unique("faults-dead-letters-");
    let mut env = give_up_env();
    env.extend([("DYNAMODB_ENDPOINT", endpoint.as_str()), ("TABLE_NAME", table.as_str())]);
    let e2e = E2e::start(&env);
    let scope = e2e.scope.clone();
    let mut ledger = Ledger::default();

    e2e.chat.fault(&scope, 120.0, None, 1, json!({"status": 503})).await;
    for (msgid, conversation) in [("m-1", "conv-a"), ("m-2", "conv-b"), ("m-3", "conv-a")] {
        e2e.kommo_webhook_ok(manager_message(msgid, conversation)).await;
        ledger.dead_letter(msgid, 903);
    }
    let amojo = settle(&e2e, &e2e.amojo, Duration::from_secs(20), |calls| amojo_complete(&scope, calls, &ledger)).await;
    e2e.chat.clear_faults(&scope).await;
    assert_amojo_exactly_once(&scope, &amojo, &ledger);
    let chat = e2e.chat.calls(&scope).await;
    assert_chat_exactly_once(&chat, &ledger);
    for (msgid, attempts) in relays(&chat) {
        assert_eq!(attempts.len(), 4, "{msgid}: RETRY_MAX_ATTEMPTS attempts, then given up");
    }

    // The dead-letter state, as stored.
    use shared::ports::store::{MessageRecords, RelayState};
    let store =
        shared::adapters::dynamo::DynamoStore::new(shared::adapters::dynamo::client_from_env(Some(&endpoint)), table);
    for msgid in &ledger.dead_letters {
        let record = store.get_message(&scope, msgid).await.unwrap().expect("the message is recorded");
        assert_eq!(record.relay, RelayState::Failed, "{msgid} is dead-lettered");
        assert_eq!(record.status_rank, Some(-1), "{msgid} carries the error status");
    }
}

// ---------------------------------------------------------------------------------------------
// (5b) Kommo refusing or unreachable for good, for client messages

#[tokio::test]
async fn client_messages_kommo_never_takes_are_dead_lettered_and_told_failed_once() {
    let endpoint = support::required_env("TEST_DYNAMODB_ENDPOINT");
    let table = support::unique("faults-client-dead-letters-");
    let mut env = give_up_env();
    env.extend([("DYNAMODB_ENDPOINT", endpoint.as_str()), ("TABLE_NAME", table.as_str())]);
    let e2e = E2e::start(&env);
    let scope = e2e.scope.clone();
    let mut ledger = Ledger::default();

    // c-1 is refused at once (400); c-2 and c-3 find amojo answering 503 until their attempts
    // run out; c-4 comes after amojo is back.
    let refusal =
        json!({"status": 400, "body": {"error_code": 400, "error_type": "BAD_REQUEST", "error_description": "no"}});
    e2e.amojo.script(&scope, json!([refusal])).await;
    e2e.chat_event_ok(client_message(&scope, "c-1", "conv-a")).await;
    settle(&e2e, &e2e.chat, Duration::from_secs(10), |calls| !outcomes(calls).is_empty()).await;
    e2e.amojo.fault(&scope, 6.0, None, 1, json!({"status": 503})).await;
    for (msgid, conversation) in [("c-2", "conv-b"), ("c-3", "conv-c")] {
        e2e.chat_event_ok(client_message(&scope, msgid, conversation)).await;
    }
    ledger.client_messages.extend(["c-1", "c-2", "c-3"].map(String::from));
    ledger.client_dead_letters.extend(["c-1", "c-2", "c-3"].map(String::from));
    settle(&e2e, &e2e.chat, Duration::from_secs(20), |calls| chat_complete(calls, &ledger)).await;
    e2e.amojo.clear_faults(&scope).await;
    e2e.chat_event_ok(client_message(&scope, "c-4", "conv-d")).await;
    ledger.client_messages.insert("c-4".into());
    let chat = settle(&e2e, &e2e.chat, Duration::from_secs(10), |calls| chat_complete(calls, &ledger)).await;
    assert_chat_exactly_once(&chat, &ledger);
    let failed: Vec<_> =
        outcomes(&chat).into_iter().map(|(msgid, told)| (msgid, told[0]["body"]["error"]["code"].clone())).collect();
    assert_eq!(
        failed,
        [
            ("c-1".to_owned(), json!("kommo_refused")),
            ("c-2".to_owned(), json!("kommo_unavailable")),
            ("c-3".to_owned(), json!("kommo_unavailable")),
            ("c-4".to_owned(), Value::Null),
        ]
    );
    assert_amojo_exactly_once(&scope, &e2e.amojo.calls(&scope).await, &ledger);

    // The dead-letter state, as stored.
    use shared::ports::store::{IncomingState, MessageRecords};
    let store =
        shared::adapters::dynamo::DynamoStore::new(shared::adapters::dynamo::client_from_env(Some(&endpoint)), table);
    for msgid in ["c-1", "c-2", "c-3"] {
        assert_eq!(store.incoming_state(&scope, msgid).await.unwrap(), Some(IncomingState::Failed), "{msgid}");
    }
    let taken = store.incoming_state(&scope, "c-4").await.unwrap();
    assert!(matches!(taken, Some(IncomingState::Imported { kommo_msgid: Some(_) })), "{taken:?}");
}

// ---------------------------------------------------------------------------------------------
// (6) The DynamoDB-compatible server stopped and restarted mid-run

/// What one sender saw: every answer, with when it came (since the start) and how long it took.
#[derive(Debug, Default)]
struct Answers(Vec<(Duration, u16, Duration)>);

/// Sends like a sender that retries until acknowledged (a 5xx is "not accepted, try again");
/// panics on a 4xx (the request was good) or after 30 s without an acknowledgement.
async fn until_acknowledged(
    e2e: &E2e,
    to_kommo: bool,
    body: &str,
    start: Instant,
    answers: &std::cell::RefCell<Answers>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sent = Instant::now();
        let response =
            if to_kommo { e2e.kommo_webhook(body.to_owned()).await } else { e2e.chat_event(body.to_owned()).await };
        let status = response.status().as_u16();
        answers.borrow_mut().0.push((sent - start, status, sent.elapsed()));
        match status {
            200 => return,
            500..=599 if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(300)).await,
            _ => panic!("answered {status} to a good request: {}", response.text().await.unwrap_or_default()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_stopped_and_restarted_mid_run_loses_nothing_acknowledged() {
    let db = TempFile::new("faults-dynoxide-", ".sqlite");
    let mut dynamo = Restartable::dynamodb(&db.0);
    let endpoint = dynamo.url();
    let mut env = outage_env();
    env.extend([("DYNAMODB_ENDPOINT", endpoint.as_str()), ("TABLE_NAME", "kommo-bridge")]);
    let e2e = E2e::start(&env);
    let scope = e2e.scope.clone();
    let start = Instant::now();
    const STOP_AT: Duration = Duration::from_millis(2500);
    const OUTAGE: Duration = Duration::from_secs(25);

    // Kommo and the chat service talk side by side, each request sent until acknowledged, while
    // the store is stopped at 2.5 s for 25 s, then started again on the same file. Work falls
    // due during the outage (a lease's end, the import of a message acknowledged just before
    // it) and must outlive it: 25 s is more than the dev server's timer loop used to retry.
    let ledger = std::cell::RefCell::new(Ledger::default());
    let answers = std::cell::RefCell::new(Answers::default());
    let kommo_side = async {
        for i in 0..18 {
            tokio::time::sleep_until((start + Duration::from_millis(550 * i)).into()).await;
            let conversation = format!("conv-{}", i % 3);
            if i % 2 == 0 {
                let msgid = format!("m-{i}");
                until_acknowledged(&e2e, true, &manager_message(&msgid, &conversation), start, &answers).await;
                ledger.borrow_mut().manager_message(&msgid);
            } else {
                until_acknowledged(&e2e, true, &manager_typing(&conversation), start, &answers).await;
            }
        }
    };
    let chat_side = async {
        for i in 0..18 {
            tokio::time::sleep_until((start + Duration::from_millis(550 * i + 275)).into()).await;
            let conversation = format!("conv-{}", i % 3);
            // A status for a manager message acknowledged and not reported on yet.
            let unreported = {
                let ledger = ledger.borrow();
                let reported: BTreeSet<&String> = ledger.statuses.iter().map(|(msgid, _, _)| msgid).collect();
                ledger.manager_messages.iter().find(|msgid| !reported.contains(msgid)).cloned()
            };
            match unreported {
                Some(msgid) if i % 2 == 1 => {
                    until_acknowledged(&e2e, false, &status(&scope, &msgid, "delivered"), start, &answers).await;
                    ledger.borrow_mut().delivered(&msgid);
                }
                _ => {
                    let msgid = format!("c-{i}");
                    let body = client_message(&scope, &msgid, &conversation);
                    until_acknowledged(&e2e, false, &body, start, &answers).await;
                    ledger.borrow_mut().client_messages.insert(msgid);
                }
            }
        }
    };
    let outage = async {
        // A lease nobody touches again: its end falls due while the store is down.
        tokio::time::sleep_until((start + STOP_AT - Duration::from_millis(300)).into()).await;
        until_acknowledged(&e2e, true, &manager_typing("conv-quiet"), start, &answers).await;
        tokio::time::sleep_until((start + STOP_AT).into()).await;
        tokio::task::block_in_place(|| dynamo.stop());
        tokio::time::sleep_until((start + STOP_AT + OUTAGE).into()).await;
        tokio::task::block_in_place(|| dynamo.restart());
    };
    tokio::join!(kommo_side, chat_side, outage);
    let (mut ledger, answers) = (ledger.into_inner(), answers.into_inner());
    ledger.imports_may_repeat = true;

    let refused: Vec<_> = answers.0.iter().filter(|(_, status, _)| *status != 200).collect();
    let slowest = answers.0.iter().map(|(_, _, took)| *took).max().unwrap_or_default();
    println!(
        "store down {OUTAGE:?}: {} requests, {} not acknowledged (5xx) and sent again; slowest answer {slowest:?}",
        answers.0.len(),
        refused.len()
    );
    assert!(!refused.is_empty(), "the outage was felt");
    for (at, _, _) in &refused {
        assert!(
            *at + Duration::from_secs(3) >= STOP_AT && *at <= STOP_AT + OUTAGE,
            "refused at {at:?}, outside the outage"
        );
    }

    let chat = settle(&e2e, &e2e.chat, Duration::from_secs(60), |calls| {
        chat_complete(calls, &ledger) && open_leases(calls).0.is_empty()
    })
    .await;
    let amojo = settle(&e2e, &e2e.amojo, Duration::from_secs(60), |calls| amojo_complete(&scope, calls, &ledger)).await;
    println!("store down {OUTAGE:?}: all caught up {:?} after the start", start.elapsed());
    assert_chat_exactly_once(&chat, &ledger);
    assert_amojo_exactly_once(&scope, &amojo, &ledger);
    assert!(assert_typing_ended(&chat) >= 3);
}

// ---------------------------------------------------------------------------------------------
// (7) Typing leases end, whatever the chat service does around their end

#[tokio::test]
async fn typing_leases_all_end_when_the_chat_service_fails_as_they_end() {
    let e2e = E2e::start(&outage_env());
    let scope = e2e.scope.clone();
    let mut ledger = Ledger::default();
    let start = Instant::now();

    // Two managers start typing; the chat service hears both.
    e2e.kommo_webhook_ok(manager_typing("conv-a")).await;
    e2e.kommo_webhook_ok(manager_typing("conv-b")).await;
    e2e.wait_for(&e2e.chat, Duration::from_secs(5), |calls| open_leases(calls).0.len() == 2).await;

    // In conv-a the manager's message ends the lease while the chat service answers 503 (2 s).
    e2e.chat.fault(&scope, 2.0, None, 1, json!({"status": 503})).await;
    e2e.kommo_webhook_ok(manager_message("m-1", "conv-a")).await;
    ledger.manager_message("m-1");

    // In conv-b the lease lapses (5 s + 1 s grace) while the chat service hangs up on every call
    // (from 5.5 s to 7.5 s).
    tokio::time::sleep_until((start + Duration::from_millis(5500)).into()).await;
    e2e.chat.fault(&scope, 2.0, None, 1, json!({"close": true})).await;

    let chat = settle(&e2e, &e2e.chat, Duration::from_secs(30), |calls| {
        chat_complete(calls, &ledger) && open_leases(calls).0.is_empty()
    })
    .await;
    println!("typing under chat-service faults: all ended {:?} after the start", start.elapsed());
    assert_chat_exactly_once(&chat, &ledger);
    assert_eq!(assert_typing_ended(&chat), 2);
    // The manager's typing stopped before their message appeared.
    let accepted: Vec<&Value> =
        chat.iter().filter(|c| first_acceptance(c) && c["body"]["conversation_id"] == "conv-a").collect();
    let kinds: Vec<&str> = accepted.iter().map(|c| c["body"]["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["typing.started", "typing.stopped", "message.created"], "conv-a as the chat service saw it");
}
