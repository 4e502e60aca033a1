//! After the load: what the fakes recorded, per scope, against what the conversations' models
//! say the bridge must have delivered. Losses, duplicates, statuses going backwards, typing
//! indicators or presence left on, and a client's typing shown after it stopped.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};

use crate::sim::{ManagerMsg, Outcome};
use crate::stats::Summary;

/// A typing call to amojo this long after the client's stop was acknowledged means a refresh
/// chain that did not end (a call already in flight when the stop lands is a race, reported).
pub const CLIENT_TYPING_STUCK_MS: i64 = 2000;
const MAX_EXAMPLES: usize = 25;

/// Every call the fakes recorded for this run's scopes.
#[derive(Debug, Default)]
pub struct Fetched {
    pub amojo: Vec<Value>,
    pub chat: Vec<Value>,
}

/// One delivery check: what the models expected and what arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Delivered more than once, retries with the same webhook-id not counted.
    pub duplicated: u64,
    /// Further attempts under a webhook-id already recorded (the bridge's retries).
    pub retries: u64,
    /// Arrived though nothing the models know of asked for it.
    pub unexpected: u64,
    /// Left out of the exact check because a request about them got no 2xx.
    pub uncertain: u64,
}

impl Tally {
    fn to_json(self) -> Value {
        json!({"expected": self.expected, "delivered": self.delivered, "lost": self.lost,
               "duplicated": self.duplicated, "retries": self.retries, "unexpected": self.unexpected,
               "uncertain": self.uncertain})
    }
}

#[derive(Debug, Default)]
pub struct Reconciliation {
    pub client_messages: Tally,
    pub manager_messages: Tally,
    pub statuses: Tally,
    pub statuses_backwards: u64,
    /// Statuses not sent because a later one of the same message had reached amojo first (read
    /// before delivered): by design, not a loss (the message shows the later one).
    pub statuses_overtaken: u64,
    pub reads: Tally,
    /// typing.started / typing.stopped pairs at the chat service, per manager and conversation.
    pub typing_leases: u64,
    pub typing_retries: u64,
    pub typing_stuck: u64,
    pub typing_double_start: u64,
    /// Of those, the ones where the stop that followed belonged to the earlier lease (the
    /// manager's message sent before the new typing webhook): the new lease's start overtook it,
    /// so the chat service hides the indicator while the manager types. The others restarted a
    /// lapsed lease before its expiry timer ended it (that lease's stop is never sent).
    pub typing_double_start_reordered: u64,
    /// A typing.stopped with no typing.started open: redundant, harmless (the bridge may
    /// stop again when a lease ended while its start was on the way).
    pub typing_redundant_stop: u64,
    /// presence.changed online / offline pairs at the chat service.
    pub presence_online_pushes: u64,
    pub presence_retries: u64,
    pub presence_stuck: u64,
    pub presence_repeated: u64,
    /// amojo typing calls for the clients' typing.
    pub client_typing_calls: u64,
    pub client_typing_after_stop: u64,
    pub client_typing_after_stop_max_ms: i64,
    pub client_typing_stuck: u64,
    pub chat_creations: u64,
    pub conversations_created_twice: u64,
    pub bad_signatures: u64,
    /// Records the fake chat service flagged `duplicate_id`: a webhook-id it had already accepted.
    pub redelivered_after_acceptance: u64,
    /// Request sent → the fake received what it caused, in milliseconds.
    pub delivery: BTreeMap<&'static str, Vec<f64>>,
    pub examples: Vec<String>,
}

impl Reconciliation {
    /// Nothing is missing any more: every expected delivery arrived and every indicator is off.
    pub fn settled(&self) -> bool {
        self.client_messages.lost == 0
            && self.manager_messages.lost == 0
            && self.statuses.lost == 0
            && self.reads.lost == 0
            && self.typing_stuck == 0
            && self.presence_stuck == 0
    }

    /// The failures, named; empty when the run passes.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |count: u64, what: &str| {
            if count > 0 {
                problems.push(format!("{count} {what}"));
            }
        };
        for (name, tally) in [
            ("client messages", self.client_messages),
            ("manager messages", self.manager_messages),
            ("statuses", self.statuses),
            ("message.read events", self.reads),
        ] {
            check(tally.lost, &format!("{name} lost"));
            check(tally.duplicated, &format!("{name} duplicated"));
            check(tally.unexpected, &format!("{name} unexpected"));
        }
        check(self.statuses_backwards, "statuses went backwards at amojo");
        check(self.typing_stuck, "manager typing indicators left on (typing.started never stopped)");
        check(
            self.typing_double_start,
            &format!(
                "typing.started twice without a typing.stopped between ({} overtaken by the previous lease's stop, {} restarting a lapsed lease)",
                self.typing_double_start_reordered,
                self.typing_double_start - self.typing_double_start_reordered
            ),
        );
        check(self.presence_stuck, "manager presence left online");
        check(self.presence_repeated, "presence.changed repeated without a change");
        check(self.client_typing_stuck, "client typing calls to amojo more than 2 s after the client stopped");
        check(self.bad_signatures, "calls with a bad signature at the fakes");
        problems
    }

    pub fn to_json(&self) -> Value {
        let delivery: serde_json::Map<String, Value> = self
            .delivery
            .iter()
            .map(|(name, samples)| ((*name).to_owned(), Summary::of(&mut samples.clone()).to_json()))
            .collect();
        json!({
            "client_messages_to_amojo": self.client_messages.to_json(),
            "manager_messages_to_chat": self.manager_messages.to_json(),
            "statuses_to_amojo": self.statuses.to_json(),
            "statuses_backwards": self.statuses_backwards,
            "statuses_overtaken": self.statuses_overtaken,
            "message_read_to_chat": self.reads.to_json(),
            "manager_typing": {"leases": self.typing_leases, "retries": self.typing_retries, "stuck": self.typing_stuck,
                               "double_start": self.typing_double_start,
                               "double_start_reordered": self.typing_double_start_reordered,
                               "redundant_stop": self.typing_redundant_stop},
            "manager_presence": {"online_pushes": self.presence_online_pushes, "retries": self.presence_retries,
                                 "stuck": self.presence_stuck, "repeated": self.presence_repeated},
            "client_typing_to_amojo": {"calls": self.client_typing_calls, "after_stop": self.client_typing_after_stop,
                                       "after_stop_max_ms": self.client_typing_after_stop_max_ms,
                                       "stuck": self.client_typing_stuck},
            "chat_creations": self.chat_creations,
            "conversations_created_twice": self.conversations_created_twice,
            "bad_signatures": self.bad_signatures,
            "redelivered_after_acceptance": self.redelivered_after_acceptance,
            "delivery_latency": delivery,
            "examples": self.examples,
        })
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(text);
        }
    }

    fn latency(&mut self, name: &'static str, sent_ms: i64, received_ms: f64) {
        self.delivery.entry(name).or_default().push(received_ms - sent_ms as f64);
    }
}

fn received_ms(record: &Value) -> f64 {
    record["received_at"].as_f64().unwrap_or(0.0) * 1000.0
}

/// Whether the fake answered this call with something other than a 2xx (`reply_status`, when
/// the fake records it; null: closed unanswered): a failed attempt, not a delivery.
fn reply_failed(record: &Value) -> bool {
    match record.get("reply_status") {
        None => false,
        Some(status) => !status.as_i64().is_some_and(|code| (200..300).contains(&code)),
    }
}

fn text(value: &Value) -> String {
    value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string())
}

/// An event the chat service received, the first time under its webhook-id.
struct ChatEvent {
    kind: String,
    body: Value,
    received_ms: f64,
}

/// The fakes' calls, indexed by what they are about.
#[derive(Default)]
struct Index {
    /// (scope, conversation) → events in arrival order.
    chat: HashMap<(String, String), Vec<ChatEvent>>,
    /// (scope, client msgid) → arrivals of its import.
    imports: HashMap<(String, String), Vec<f64>>,
    /// (scope, Kommo msgid) → (delivery_status, arrival), in arrival order.
    statuses: HashMap<(String, String), Vec<(i64, f64)>>,
    /// (scope, conversation) → arrivals of typing calls.
    typing: HashMap<(String, String), Vec<f64>>,
    /// (scope, conversation) → chat creations.
    creations: HashMap<(String, String), u64>,
}

fn index(fetched: &Fetched, result: &mut Reconciliation) -> Index {
    let mut index = Index::default();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for record in &fetched.chat {
        if record["signature_ok"] != true {
            result.bad_signatures += 1;
            result.example(format!("chat service: bad signature: {}", text(&record["error"])));
            continue;
        }
        if record["duplicate_id"] == true {
            result.redelivered_after_acceptance += 1;
        }
        let scope = text(&record["scope"]);
        let body = &record["body"];
        let kind = text(&body["type"]);
        let webhook_id = text(&record["headers"]["webhook-id"]);
        if reply_failed(record) || !seen.insert((scope.clone(), webhook_id)) {
            match kind.as_str() {
                "message.created" => result.manager_messages.retries += 1,
                "message.read" => result.reads.retries += 1,
                "typing.started" | "typing.stopped" => result.typing_retries += 1,
                "presence.changed" => result.presence_retries += 1,
                _ => {}
            }
            continue;
        }
        let conversation = text(&body["conversation_id"]);
        let event = ChatEvent { kind, body: body.clone(), received_ms: received_ms(record) };
        index.chat.entry((scope, conversation)).or_default().push(event);
    }
    for record in &fetched.amojo {
        if record["signature_ok"] != true {
            result.bad_signatures += 1;
            result.example(format!("amojo: bad signature on {}: {}", text(&record["path"]), text(&record["error"])));
            continue;
        }
        let scope = text(&record["scope"]);
        let path = text(&record["path"]);
        let rest = path.strip_prefix(&format!("/v2/origin/custom/{scope}")).unwrap_or(&path);
        let body = &record["body"];
        let at = received_ms(record);
        if reply_failed(record) {
            if rest.is_empty() {
                result.client_messages.retries += 1;
            } else if rest.ends_with("/delivery_status") {
                result.statuses.retries += 1;
            }
            continue;
        }
        if rest.is_empty() {
            let msgid = text(&body["payload"]["msgid"]);
            index.imports.entry((scope, msgid)).or_default().push(at);
        } else if rest == "/chats" {
            *index.creations.entry((scope, text(&body["conversation_id"]))).or_default() += 1;
        } else if rest == "/typing" {
            index.typing.entry((scope, text(&body["conversation_id"]))).or_default().push(at);
        } else if let Some(msgid) = rest.strip_prefix('/').and_then(|r| r.strip_suffix("/delivery_status")) {
            let code = body["delivery_status"].as_i64().unwrap_or(0);
            index.statuses.entry((scope, msgid.to_owned())).or_default().push((code, at));
        } else {
            result.example(format!("amojo: unexpected call {} {path}", text(&record["method"])));
        }
    }
    index
}

/// Checks everything the fakes recorded against the conversations' models.
pub fn reconcile(fetched: &Fetched, outcomes: &[Outcome]) -> Reconciliation {
    let mut result = Reconciliation::default();
    let mut index = index(fetched, &mut result);
    for outcome in outcomes {
        let spec = outcome.spec.as_ref().expect("every outcome names its conversation");
        let scope = spec.scope.clone();
        let conversation = (scope.clone(), spec.conversation_id.clone());
        client_messages(&mut result, &mut index, &scope, outcome);
        let events = index.chat.remove(&conversation).unwrap_or_default();
        manager_messages(&mut result, &events, outcome);
        statuses(&mut result, &mut index, &scope, outcome);
        reads(&mut result, &events, outcome);
        manager_typing(&mut result, &events, outcome);
        manager_presence(&mut result, &events, outcome);
        client_typing(&mut result, index.typing.remove(&conversation).unwrap_or_default(), outcome);
        let creations = index.creations.remove(&conversation).unwrap_or(0);
        result.chat_creations += creations;
        if creations > 1 {
            result.conversations_created_twice += 1;
        }
    }
    // What is left arrived for nothing the models sent.
    for ((scope, msgid), arrivals) in &index.imports {
        result.client_messages.unexpected += arrivals.len() as u64;
        result.example(format!("{scope}: import of unknown client msgid {msgid}"));
    }
    let leftover_statuses: Vec<String> =
        index.statuses.keys().map(|(scope, msgid)| format!("{scope}/{msgid}")).collect();
    for name in leftover_statuses {
        result.statuses.unexpected += 1;
        result.example(format!("status for unknown message {name}"));
    }
    let leftover_events: Vec<String> = index
        .chat
        .iter()
        .flat_map(|((scope, conversation), events)| {
            events.iter().map(move |e| format!("{scope}/{conversation}: {} for no conversation of this run", e.kind))
        })
        .collect();
    for example in leftover_events {
        result.example(example);
    }
    result
}

fn client_messages(result: &mut Reconciliation, index: &mut Index, scope: &str, outcome: &Outcome) {
    for msgid in &outcome.client_uncertain {
        result.client_messages.uncertain += 1;
        if let Some(arrivals) = index.imports.remove(&(scope.to_owned(), msgid.clone()))
            && arrivals.len() > 1
        {
            result.client_messages.duplicated += arrivals.len() as u64 - 1;
        }
    }
    for (msgid, sent_ms) in &outcome.client_msgs {
        let tally = &mut result.client_messages;
        tally.expected += 1;
        let arrivals = index.imports.remove(&(scope.to_owned(), msgid.clone())).unwrap_or_default();
        match arrivals.len() {
            0 => {
                tally.lost += 1;
                result.example(format!("{scope}: client message {msgid} never imported into amojo"));
            }
            n => {
                tally.delivered += 1;
                tally.duplicated += n as u64 - 1;
                if n > 1 {
                    result.example(format!("{scope}: client message {msgid} imported {n} times"));
                }
                result.latency("client message → amojo import", *sent_ms, arrivals[0]);
            }
        }
    }
}

fn manager_messages(result: &mut Reconciliation, events: &[ChatEvent], outcome: &Outcome) {
    let scope = &outcome.spec.as_ref().expect("named").scope;
    let mut by_reference: HashMap<String, Vec<f64>> = HashMap::new();
    for event in events.iter().filter(|e| e.kind == "message.created") {
        by_reference.entry(text(&event.body["reference"])).or_default().push(event.received_ms);
    }
    for message in &outcome.manager_msgs {
        let arrivals = by_reference.remove(&message.msgid).unwrap_or_default();
        let tally = &mut result.manager_messages;
        if !message.accepted {
            tally.uncertain += 1;
            tally.duplicated += (arrivals.len() as u64).saturating_sub(1);
            continue;
        }
        tally.expected += 1;
        match arrivals.len() {
            0 => {
                tally.lost += 1;
                result.example(format!("{scope}: manager message {} never reached the chat service", message.msgid));
            }
            n => {
                tally.delivered += 1;
                tally.duplicated += n as u64 - 1;
                if n > 1 {
                    result.example(format!(
                        "{scope}: manager message {} reached the chat service {n} times under different webhook-ids",
                        message.msgid
                    ));
                }
                result.latency("manager message → chat message.created", message.sent_ms, arrivals[0]);
            }
        }
    }
    for (reference, arrivals) in by_reference {
        result.manager_messages.unexpected += arrivals.len() as u64;
        result.example(format!("{scope}: message.created for unknown reference {reference}"));
    }
}

fn statuses(result: &mut Reconciliation, index: &mut Index, scope: &str, outcome: &Outcome) {
    let mut expected: HashMap<&str, Vec<(i8, i64)>> = HashMap::new();
    for status in &outcome.expected_status {
        expected.entry(status.msgid.as_str()).or_default().push((status.code, status.sent_ms));
    }
    for message in &outcome.manager_msgs {
        let actual = index.statuses.remove(&(scope.to_owned(), message.msgid.clone())).unwrap_or_default();
        // Arrival order: each call must rank above the one before (-1 < 1 < 2).
        if actual.windows(2).any(|pair| pair[1].0 <= pair[0].0) {
            result.statuses_backwards += 1;
            let codes: Vec<i64> = actual.iter().map(|(code, _)| *code).collect();
            let example = format!("{scope}: statuses of {} arrived at amojo in the order {codes:?}", message.msgid);
            result.example(example);
        }
        let mut counts: HashMap<i64, u64> = HashMap::new();
        for (code, _) in &actual {
            *counts.entry(*code).or_default() += 1;
        }
        let duplicated: u64 = counts.values().map(|n| n - 1).sum();
        result.statuses.duplicated += duplicated;
        if duplicated > 0 {
            result.example(format!("{scope}: a status of {} reported to amojo more than once", message.msgid));
        }
        let wanted = expected.remove(message.msgid.as_str()).unwrap_or_default();
        if !ManagerMsg::status_known(message) {
            result.statuses.uncertain += wanted.len().max(1) as u64;
            continue;
        }
        let highest_arrived = actual.iter().map(|(code, _)| *code).max();
        for (code, sent_ms) in &wanted {
            let arrived = actual.iter().any(|(c, _)| *c == i64::from(*code));
            if !arrived && highest_arrived.is_some_and(|highest| highest > i64::from(*code)) {
                result.statuses_overtaken += 1;
                continue;
            }
            let tally = &mut result.statuses;
            tally.expected += 1;
            match actual.iter().find(|(c, _)| *c == i64::from(*code)) {
                Some((_, at)) => {
                    tally.delivered += 1;
                    result.latency("status → amojo delivery_status", *sent_ms, *at);
                }
                None => {
                    tally.lost += 1;
                    result.example(format!("{scope}: status {code} of {} never reported to amojo", message.msgid));
                }
            }
        }
        for code in counts.keys() {
            if !wanted.iter().any(|(c, _)| i64::from(*c) == *code) {
                result.statuses.unexpected += 1;
                result.example(format!(
                    "{scope}: amojo got status {code} for {}, which no receipt asked for",
                    message.msgid
                ));
            }
        }
    }
}

fn reads(result: &mut Reconciliation, events: &[ChatEvent], outcome: &Outcome) {
    let scope = &outcome.spec.as_ref().expect("named").scope;
    let mut arrived: HashMap<String, Vec<f64>> = HashMap::new();
    for event in events.iter().filter(|e| e.kind == "message.read") {
        arrived.entry(text(&event.body["msgid"])).or_default().push(event.received_ms);
    }
    for arrivals in arrived.values() {
        if arrivals.len() > 1 {
            result.reads.duplicated += arrivals.len() as u64 - 1;
            result.example(format!("{scope}: one message.read sent {} times", arrivals.len()));
        }
    }
    if outcome.reads_uncertain {
        result.reads.uncertain += arrived.len() as u64;
        return;
    }
    for (msgid, sent_ms) in &outcome.reads {
        result.reads.expected += 1;
        match arrived.remove(msgid) {
            Some(arrivals) => {
                result.reads.delivered += 1;
                result.latency("widget read → chat message.read", *sent_ms, arrivals[0]);
            }
            None => {
                result.reads.lost += 1;
                result.example(format!("{scope}: message.read for {msgid} never reached the chat service"));
            }
        }
    }
    for msgid in arrived.keys() {
        result.reads.unexpected += 1;
        result.example(format!("{scope}: message.read for {msgid}, which the widget was not told"));
    }
}

/// After a second typing.started (`events[0]`): whether the typing.stopped that follows it
/// comes with a manager message sent before the typing webhook that caused this start, i.e.
/// belongs to the previous lease.
fn stop_of_earlier_lease(events: &[ChatEvent], outcome: &Outcome) -> bool {
    let Some(cause) = latest_before(&outcome.manager_typing_sends, events[0].received_ms) else { return false };
    let mut rest = events[1..].iter().skip_while(|e| !e.kind.starts_with("typing."));
    if rest.next().is_none_or(|e| e.kind != "typing.stopped") {
        return false;
    }
    let Some(message) = rest.take_while(|e| !e.kind.starts_with("typing.")).find(|e| e.kind == "message.created")
    else {
        return false;
    };
    let reference = text(&message.body["reference"]);
    outcome.manager_msgs.iter().any(|m| m.msgid == reference && m.sent_ms < cause)
}

/// The latest send at or before `at`, for a latency from the request that caused an event.
fn latest_before(sends: &[i64], at: f64) -> Option<i64> {
    sends.iter().copied().filter(|sent| (*sent as f64) <= at).max()
}

/// What happened to a conversation's manager typing, in time order: the webhooks sent
/// (`>typing`, `>message`) and what the chat service received, in ms from the first.
fn typing_timeline(events: &[ChatEvent], outcome: &Outcome) -> String {
    let mut timeline: Vec<(f64, String)> = Vec::new();
    for sent in &outcome.manager_typing_sends {
        timeline.push((*sent as f64, ">typing webhook".into()));
    }
    for message in &outcome.manager_msgs {
        timeline.push((message.sent_ms as f64, format!(">message webhook {}", message.msgid)));
    }
    for event in events {
        if event.kind.starts_with("typing.") || event.kind == "message.created" {
            timeline.push((event.received_ms, event.kind.clone()));
        }
    }
    timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
    let first = timeline.first().map_or(0.0, |(at, _)| *at);
    timeline.iter().map(|(at, what)| format!("{:.0} {what}", at - first)).collect::<Vec<_>>().join(", ")
}

fn manager_typing(result: &mut Reconciliation, events: &[ChatEvent], outcome: &Outcome) {
    let scope = &outcome.spec.as_ref().expect("named").scope;
    let problems_before = result.typing_double_start + result.typing_stuck;
    let mut open: HashMap<String, bool> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        let started = match event.kind.as_str() {
            "typing.started" => true,
            "typing.stopped" => false,
            _ => continue,
        };
        let manager = text(&event.body["manager"]["id"]);
        let is_open = open.entry(manager.clone()).or_default();
        match (started, *is_open) {
            (true, false) => {
                result.typing_leases += 1;
                if let Some(sent) = latest_before(&outcome.manager_typing_sends, event.received_ms) {
                    result.latency("manager typing webhook → chat typing.started", sent, event.received_ms);
                }
            }
            (true, true) => {
                result.typing_double_start += 1;
                let reordered = stop_of_earlier_lease(&events[i..], outcome);
                if reordered {
                    result.typing_double_start_reordered += 1;
                }
                let why = if reordered { "overtaken by the previous lease's stop" } else { "a lapsed lease restarted" };
                result.example(format!("{scope}: typing.started twice in a row for manager {manager} ({why})"));
            }
            (false, true) => {}
            (false, false) => result.typing_redundant_stop += 1,
        }
        *is_open = started;
    }
    for (manager, is_open) in open {
        if is_open {
            result.typing_stuck += 1;
            let conversation = &outcome.spec.as_ref().expect("named").conversation_id;
            result.example(format!("{scope}/{conversation}: manager {manager}'s typing.started never stopped"));
        }
    }
    if result.typing_double_start + result.typing_stuck > problems_before {
        let conversation = &outcome.spec.as_ref().expect("named").conversation_id;
        result.example(format!("{scope}/{conversation} timeline (ms): {}", typing_timeline(events, outcome)));
    }
}

fn manager_presence(result: &mut Reconciliation, events: &[ChatEvent], outcome: &Outcome) {
    let scope = &outcome.spec.as_ref().expect("named").scope;
    let mut online: HashMap<String, bool> = HashMap::new();
    for event in events.iter().filter(|e| e.kind == "presence.changed") {
        let manager = text(&event.body["manager"]["id"]);
        let now_online = event.body["online"] == true;
        let was_online = online.entry(manager.clone()).or_default();
        if now_online == *was_online {
            result.presence_repeated += 1;
            result.example(format!("{scope}: presence.changed online={now_online} twice in a row for {manager}"));
        } else if now_online {
            result.presence_online_pushes += 1;
            if let Some(sent) = latest_before(&outcome.viewing_sends, event.received_ms) {
                result.latency("widget viewing → chat presence.changed", sent, event.received_ms);
            }
        }
        *was_online = now_online;
    }
    for (manager, is_online) in online {
        if is_online {
            result.presence_stuck += 1;
            result.example(format!("{scope}: manager {manager} left but presence.changed offline never came"));
        }
    }
}

fn client_typing(result: &mut Reconciliation, calls: Vec<f64>, outcome: &Outcome) {
    let scope = &outcome.spec.as_ref().expect("named").scope;
    result.client_typing_calls += calls.len() as u64;
    for at in calls {
        let last = outcome.client_typing_marks.iter().rev().find(|(_, mark)| (*mark as f64) <= at);
        if let Some((false, stopped)) = last {
            let after = (at - *stopped as f64).round() as i64;
            result.client_typing_after_stop += 1;
            result.client_typing_after_stop_max_ms = result.client_typing_after_stop_max_ms.max(after);
            if after > CLIENT_TYPING_STUCK_MS {
                result.client_typing_stuck += 1;
                result.example(format!(
                    "{scope}: a client typing call reached amojo {after} ms after the client stopped"
                ));
            }
        }
    }
}
