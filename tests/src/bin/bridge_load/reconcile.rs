//! After the load: what the fakes recorded, per scope, against what the conversations' models
//! say the bridge must have delivered. Losses, duplicates, statuses going backwards, typing
//! indicators or presence left on, a client's typing shown after it stopped, a client message's
//! outcome (`message.delivered`) missing or naming the wrong Kommo msgid, reactions lost or
//! repeated either way, and a write-first chat's reply not landing in Kommo's chat.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use serde_json::{Value, json};

use crate::sim::{ManagerMsg, Outcome, ReactionSent, WriteFirst};
use crate::stats::Summary;

/// A typing call to amojo this long after the client's stop was acknowledged means a refresh
/// chain that did not end (a call already in flight when the stop lands is a race, reported).
pub const CLIENT_TYPING_STUCK_MS: i64 = 2000;
const MAX_EXAMPLES: usize = 25;

/// Every call the fakes recorded for this run's scopes, and the fake amojo's state per scope
/// (`GET /__admin/state`).
#[derive(Debug, Default)]
pub struct Fetched {
    pub amojo: Vec<Value>,
    pub chat: Vec<Value>,
    pub amojo_state: HashMap<String, Value>,
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

/// The client messages' outcomes at the chat service, beyond the tally.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcomes {
    /// `message.failed` events (none is due in a healthy run).
    pub failed: u64,
    /// `message.delivered` whose `reference` was compared with the Kommo msgid the fake amojo gave.
    pub reference_checked: u64,
    /// Of those, the ones that named another (or none).
    pub reference_mismatched: u64,
}

/// The chats the managers started in Kommo ("write first").
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteFirstTally {
    pub conversations: u64,
    /// Answered under Kommo's chat id (a) or an id of the chat service's own (b).
    pub variant_a: u64,
    pub variant_b: u64,
    /// The opening (the manager's message and the client's reply) both acknowledged, the
    /// manager's message relayed under Kommo's chat id and the reply in Kommo's chat: checked whole.
    pub reconciled: u64,
    /// The opening got no 2xx: left out of the exact checks.
    pub uncertain: u64,
    /// The opening manager message relayed under another conversation id than Kommo's chat id,
    /// or without Kommo's id of the client as `receiver.id`.
    pub opening_misrelayed: u64,
    /// amojo chat creations for them (each a second lead in Kommo).
    pub chats_created: u64,
    /// Client messages of theirs in Kommo's chat, and elsewhere.
    pub messages_in_kommo_chat: u64,
    pub messages_elsewhere: u64,
    /// Kommo's chat missing from the fake amojo, or not marked as started by the manager.
    pub chat_missing: u64,
}

#[derive(Debug, Default)]
pub struct Reconciliation {
    pub client_messages: Tally,
    /// Client message → the chat service's `message.delivered`, one per msgid.
    pub delivered: Tally,
    pub outcomes: Outcomes,
    /// Kommo's reaction webhook → the chat service's `reaction.added` / `reaction.removed`.
    pub manager_reactions: Tally,
    /// The chat service's reaction → amojo's `react`.
    pub client_reactions: Tally,
    pub write_first: WriteFirstTally,
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
            && self.delivered.lost == 0
            && self.manager_reactions.lost == 0
            && self.client_reactions.lost == 0
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
            ("message.delivered events", self.delivered),
            ("manager reactions (reaction.* at the chat service)", self.manager_reactions),
            ("client reactions (amojo react)", self.client_reactions),
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
        check(self.outcomes.failed, "message.failed events (a client message Kommo did not take)");
        check(
            self.outcomes.reference_mismatched,
            "message.delivered naming another Kommo msgid than the one amojo gave",
        );
        let first = self.write_first;
        check(first.opening_misrelayed, "write-first opening messages relayed under another id than Kommo's chat");
        check(first.chats_created, "amojo chats created for write-first conversations (a second lead in Kommo)");
        check(first.messages_elsewhere, "client messages of write-first conversations outside Kommo's chat");
        check(first.chat_missing, "write-first chats missing from the fake amojo or not marked started in Kommo");
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
            "message_delivered_to_chat": {"tally": self.delivered.to_json(), "failed": self.outcomes.failed,
                                          "reference_checked": self.outcomes.reference_checked,
                                          "reference_mismatched": self.outcomes.reference_mismatched},
            "manager_reactions_to_chat": self.manager_reactions.to_json(),
            "client_reactions_to_amojo": self.client_reactions.to_json(),
            "write_first": {"conversations": self.write_first.conversations,
                            "variant_a": self.write_first.variant_a, "variant_b": self.write_first.variant_b,
                            "reconciled": self.write_first.reconciled, "uncertain": self.write_first.uncertain,
                            "opening_misrelayed": self.write_first.opening_misrelayed,
                            "chats_created": self.write_first.chats_created,
                            "messages_in_kommo_chat": self.write_first.messages_in_kommo_chat,
                            "messages_elsewhere": self.write_first.messages_elsewhere,
                            "chat_missing": self.write_first.chat_missing},
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
    /// (scope, conversation as amojo was told) → `react` calls and their arrivals.
    reacts: HashMap<(String, String), Vec<(ReactCall, f64)>>,
}

/// An amojo `react` call: its type and the message, `msgid:…` or `id:…`.
type ReactCall = (String, String);

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
                "message.delivered" | "message.failed" => result.delivered.retries += 1,
                "reaction.added" | "reaction.removed" => result.manager_reactions.retries += 1,
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
            } else if rest == "/react" {
                result.client_reactions.retries += 1;
            }
            continue;
        }
        if rest.is_empty() {
            let msgid = text(&body["payload"]["msgid"]);
            index.imports.entry((scope, msgid)).or_default().push(at);
        } else if rest == "/chats" {
            *index.creations.entry((scope, text(&body["conversation_id"]))).or_default() += 1;
        } else if rest == "/react" {
            let target = match (body.get("msgid"), body.get("id")) {
                (Some(msgid), _) => format!("msgid:{}", text(msgid)),
                (None, Some(id)) => format!("id:{}", text(id)),
                (None, None) => "none".to_owned(),
            };
            let call = ((text(&body["type"]), target), at);
            index.reacts.entry((scope, text(&body["conversation_id"]))).or_default().push(call);
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
        let mut events = index.chat.remove(&conversation).unwrap_or_default();
        // A write-first chat answered under the chat service's own id (b): what the bridge sent
        // under Kommo's chat id (the opening message) belongs to it too, in arrival order.
        let kommo_chat = (scope.clone(), spec.kommo_chat_id.clone());
        if spec.write_first.is_some()
            && kommo_chat != conversation
            && let Some(more) = index.chat.remove(&kommo_chat)
        {
            events.extend(more);
            events.sort_by(|a, b| a.received_ms.total_cmp(&b.received_ms));
        }
        let state = fetched.amojo_state.get(&scope);
        delivered(&mut result, &events, state, outcome);
        manager_reactions(&mut result, &events, outcome);
        client_reactions(&mut result, index.reacts.remove(&conversation).unwrap_or_default(), outcome);
        manager_messages(&mut result, &events, outcome);
        statuses(&mut result, &mut index, &scope, outcome);
        reads(&mut result, &events, outcome);
        manager_typing(&mut result, &events, outcome);
        manager_presence(&mut result, &events, outcome);
        client_typing(&mut result, index.typing.remove(&conversation).unwrap_or_default(), outcome);
        let mut creations = index.creations.remove(&conversation).unwrap_or(0);
        if spec.write_first.is_some() && kommo_chat != conversation {
            creations += index.creations.remove(&kommo_chat).unwrap_or(0);
        }
        result.chat_creations += creations;
        if creations > 1 {
            result.conversations_created_twice += 1;
        }
        write_first(&mut result, &events, state, creations, outcome);
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
    let leftover_reacts: Vec<(String, usize)> = index
        .reacts
        .iter()
        .map(|((scope, conversation), calls)| (format!("{scope}/{conversation}"), calls.len()))
        .collect();
    for (name, calls) in leftover_reacts {
        result.client_reactions.unexpected += calls as u64;
        result.example(format!("{name}: {calls} amojo react calls for no conversation of this run"));
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

/// Each client message the bridge acknowledged owes exactly one `message.delivered` naming its
/// msgid, with Kommo's msgid (as the fake amojo gave it) as `reference`; one that got no 2xx at
/// most one. Any `message.failed` is a problem: nothing in a healthy run is refused.
fn delivered(result: &mut Reconciliation, events: &[ChatEvent], state: Option<&Value>, outcome: &Outcome) {
    let scope = &outcome.spec.as_ref().expect("named").scope;
    let mut arrived: HashMap<String, Vec<(Option<String>, f64)>> = HashMap::new();
    for event in events {
        let msgid = text(&event.body["msgid"]);
        match event.kind.as_str() {
            "message.delivered" => {
                let reference = event.body["reference"].as_str().map(str::to_owned);
                arrived.entry(msgid).or_default().push((reference, event.received_ms));
            }
            "message.failed" => {
                result.outcomes.failed += 1;
                let error = &event.body["error"];
                let example = format!(
                    "{scope}: message.failed for client message {msgid}: {}: {}",
                    text(&error["code"]),
                    text(&error["message"])
                );
                result.example(example);
            }
            _ => {}
        }
    }
    for msgid in &outcome.client_uncertain {
        result.delivered.uncertain += 1;
        if let Some(arrivals) = arrived.remove(msgid)
            && arrivals.len() > 1
        {
            result.delivered.duplicated += arrivals.len() as u64 - 1;
            result.example(format!("{scope}: message.delivered for {msgid} sent {} times", arrivals.len()));
        }
    }
    for (msgid, sent_ms) in &outcome.client_msgs {
        result.delivered.expected += 1;
        let arrivals = arrived.remove(msgid).unwrap_or_default();
        let Some((reference, at)) = arrivals.first().cloned() else {
            result.delivered.lost += 1;
            result.example(format!("{scope}: client message {msgid}: no message.delivered at the chat service"));
            continue;
        };
        result.delivered.delivered += 1;
        result.latency("client message → chat message.delivered", *sent_ms, at);
        if arrivals.len() > 1 {
            result.delivered.duplicated += arrivals.len() as u64 - 1;
            result.example(format!(
                "{scope}: message.delivered for {msgid} sent {} times under different webhook-ids",
                arrivals.len()
            ));
        }
        let kommo_msgid = state.and_then(|state| state["messages"][msgid.as_str()]["kommo_msgid"].as_str());
        if let Some(kommo_msgid) = kommo_msgid {
            result.outcomes.reference_checked += 1;
            if reference.as_deref() != Some(kommo_msgid) {
                result.outcomes.reference_mismatched += 1;
                result.example(format!(
                    "{scope}: message.delivered for {msgid} names reference {reference:?}; amojo gave it {kommo_msgid}"
                ));
            }
        }
    }
    for (msgid, arrivals) in arrived {
        result.delivered.unexpected += arrivals.len() as u64;
        result.example(format!("{scope}: message.delivered for {msgid}, which no acknowledged message names"));
    }
}

/// Deliveries owed against arrivals, as multisets per key: a request the bridge acknowledged
/// owes exactly one arrival of its key, one that got no 2xx at most one. Arrivals beyond that
/// are duplicates (or unexpected, when nothing asked for the key). Latency pairs the k-th send
/// of a key with its k-th arrival. Returns each key that came short or over, with what happened.
fn multiset<K: Hash + Eq + Clone>(
    tally: &mut Tally,
    owed: impl IntoIterator<Item = (K, i64, bool)>,
    arrivals: impl IntoIterator<Item = (K, f64)>,
    latencies: &mut Vec<(i64, f64)>,
) -> Vec<(K, &'static str, u64)> {
    let mut arrived: HashMap<K, Vec<f64>> = HashMap::new();
    for (key, at) in arrivals {
        arrived.entry(key).or_default().push(at);
    }
    let mut wanted: HashMap<K, (Vec<i64>, u64)> = HashMap::new();
    let mut order: Vec<K> = Vec::new();
    for (key, sent_ms, accepted) in owed {
        let entry = wanted.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            (Vec::new(), 0)
        });
        if accepted {
            entry.0.push(sent_ms);
        } else {
            entry.1 += 1;
        }
    }
    let mut off = Vec::new();
    for key in order {
        let (sends, uncertain) = wanted.remove(&key).expect("each key once");
        let arrivals = arrived.remove(&key).unwrap_or_default();
        let (expected, got) = (sends.len() as u64, arrivals.len() as u64);
        tally.expected += expected;
        tally.uncertain += uncertain;
        tally.delivered += got.min(expected);
        latencies.extend(sends.iter().copied().zip(arrivals.iter().copied()));
        if got < expected {
            tally.lost += expected - got;
            off.push((key, "lost", expected - got));
        } else if got > expected + uncertain {
            tally.duplicated += got - expected - uncertain;
            off.push((key, "duplicated", got - expected - uncertain));
        }
    }
    for (key, arrivals) in arrived {
        tally.unexpected += arrivals.len() as u64;
        off.push((key, "unexpected", arrivals.len() as u64));
    }
    off
}

/// Kommo's reaction webhooks against the chat service's `reaction.added` / `reaction.removed`,
/// per conversation as multisets of (type, message, emoji, manager).
fn manager_reactions(result: &mut Reconciliation, events: &[ChatEvent], outcome: &Outcome) {
    let spec = outcome.spec.as_ref().expect("named");
    let manager = spec.manager_id();
    let arrivals = events.iter().filter(|e| e.kind.starts_with("reaction.")).map(|event| {
        let body = &event.body;
        let target = match body.get("msgid") {
            Some(msgid) => format!("msgid:{}", text(msgid)),
            None => format!("reference:{}", text(&body["reference"])),
        };
        let emoji = body["emoji"].as_str().map(str::to_owned);
        ((event.kind.clone(), target, emoji, text(&body["manager"]["id"])), event.received_ms)
    });
    let owed = outcome.manager_reactions.iter().map(|r: &ReactionSent| {
        ((r.kind.to_owned(), r.target.clone(), r.emoji.clone(), manager.clone()), r.sent_ms, r.accepted)
    });
    let mut latencies = Vec::new();
    let off = multiset(&mut result.manager_reactions, owed, arrivals, &mut latencies);
    for (sent, at) in latencies {
        result.latency("manager reaction webhook → chat reaction.*", sent, at);
    }
    for ((kind, target, emoji, manager), what, n) in off {
        result.example(format!(
            "{}/{}: {kind} of {target} ({}) by manager {manager}: {n} {what} at the chat service",
            spec.scope,
            spec.conversation_id,
            emoji.as_deref().unwrap_or("no emoji")
        ));
    }
}

/// The chat service's reactions against amojo's `react` calls for the conversation, as
/// multisets of (type, message, user).
fn client_reactions(result: &mut Reconciliation, calls: Vec<(ReactCall, f64)>, outcome: &Outcome) {
    let spec = outcome.spec.as_ref().expect("named");
    let owed = outcome.client_reactions.iter().map(|r| ((r.kind.to_owned(), r.target.clone()), r.sent_ms, r.accepted));
    let mut latencies = Vec::new();
    let off = multiset(&mut result.client_reactions, owed, calls, &mut latencies);
    for (sent, at) in latencies {
        result.latency("client reaction → amojo react", sent, at);
    }
    for ((kind, target), what, n) in off {
        result.example(format!("{}/{}: amojo {kind} of {target}: {n} {what}", spec.scope, spec.conversation_id));
    }
}

/// A chat the manager started in Kommo: its opening message relayed under Kommo's chat id with
/// Kommo's id of the client as `receiver.id`, no chat created, and every client message of the
/// conversation imported into Kommo's chat (the fake amojo's state), which the manager started.
fn write_first(
    result: &mut Reconciliation,
    events: &[ChatEvent],
    state: Option<&Value>,
    creations: u64,
    outcome: &Outcome,
) {
    let spec = outcome.spec.as_ref().expect("named");
    let Some(variant) = spec.write_first else { return };
    let name = format!("{}/{} (write first, {})", spec.scope, spec.conversation_id, variant.name());
    let kommo_chat = spec.kommo_chat_id.as_str();
    let tally = &mut result.write_first;
    tally.conversations += 1;
    match variant {
        WriteFirst::KommoId => tally.variant_a += 1,
        WriteFirst::OwnId => tally.variant_b += 1,
    }
    if creations > 0 {
        tally.chats_created += creations;
        result.example(format!(
            "{name}: {creations} amojo chats created, a second lead beside Kommo's chat {kommo_chat}"
        ));
    }
    let chat = state.map(|state| &state["chats"][kommo_chat]);
    if chat.is_none_or(|chat| chat["started_in_kommo"] != true) {
        result.write_first.chat_missing += 1;
        result.example(format!("{name}: the fake amojo has no chat {kommo_chat} started in Kommo"));
    }
    let landed = |msgid: &str| state.and_then(|state| state["messages"][msgid]["chat_id"].as_str().map(str::to_owned));
    let accepted = outcome.client_msgs.iter().map(|(msgid, _)| msgid);
    let mut elsewhere: Vec<String> = Vec::new();
    for msgid in accepted.chain(outcome.client_uncertain.iter()) {
        // Not imported at all: the import check reports it.
        let Some(chat_id) = landed(msgid) else { continue };
        if chat_id == kommo_chat {
            result.write_first.messages_in_kommo_chat += 1;
        } else {
            elsewhere.push(format!("{msgid} in chat {chat_id}"));
        }
    }
    if let Some(first) = elsewhere.first() {
        result.write_first.messages_elsewhere += elsewhere.len() as u64;
        let example = format!(
            "{name}: {} client messages imported outside Kommo's chat {kommo_chat} ({first}, …)",
            elsewhere.len()
        );
        result.example(example);
    }
    let opening = outcome.write_first.clone().unwrap_or_default();
    let (Some(manager_msgid), Some(reply_msgid)) = (opening.manager_msgid, opening.reply_msgid) else {
        result.write_first.uncertain += 1;
        return;
    };
    if !(opening.manager_accepted && opening.reply_accepted) {
        result.write_first.uncertain += 1;
        return;
    }
    let relayed = events.iter().find(|e| e.kind == "message.created" && text(&e.body["reference"]) == manager_msgid);
    // Never relayed: the manager-message check reports it.
    let Some(relayed) = relayed else { return };
    let (under, receiver) = (text(&relayed.body["conversation_id"]), text(&relayed.body["receiver"]["id"]));
    if under != kommo_chat || receiver != spec.kommo_client_id {
        result.write_first.opening_misrelayed += 1;
        result.example(format!(
            "{name}: the opening message {manager_msgid} reached the chat service under {under} for receiver {receiver}, \
             not under Kommo's chat {kommo_chat} for {}",
            spec.kommo_client_id
        ));
        return;
    }
    if landed(&reply_msgid).as_deref() == Some(kommo_chat) {
        result.write_first.reconciled += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_deliveries_reconcile_as_multisets() {
        let mut tally = Tally::default();
        let owed = [("a", 10, true), ("a", 20, true), ("b", 30, false), ("d", 40, false)];
        let arrivals = [("a", 15.0), ("b", 31.0), ("b", 32.0), ("c", 50.0), ("d", 41.0)];
        let mut latencies = Vec::new();
        let mut off = multiset(&mut tally, owed, arrivals, &mut latencies);
        off.sort();
        // a: 2 owed, 1 arrived; b: 1 uncertain may arrive once, not twice; c: nothing asked; d: fine.
        assert_eq!(off, vec![("a", "lost", 1), ("b", "duplicated", 1), ("c", "unexpected", 1)]);
        assert_eq!(
            (tally.expected, tally.delivered, tally.lost, tally.duplicated, tally.unexpected, tally.uncertain),
            (2, 1, 1, 1, 1, 2)
        );
        assert_eq!(latencies, vec![(10, 15.0)]);
    }
}
