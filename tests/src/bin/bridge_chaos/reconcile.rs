//! After the run has settled: the bridge's promises checked against what the fakes recorded
//! and the harness's own log of what it sent and what it was answered. One check per promise,
//! each with how many cases it looked at and how many broke it, and a few examples.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};

use crate::scenario::{ChatSent, KommoSent, Log};
use crate::sqs::Run;

/// A client typing call to amojo this long after the client's last `typing.started` was sent
/// (6 s lease, refreshes every 4 s) means a refresh chain that did not end.
const CLIENT_TYPING_STUCK_MS: f64 = 10_000.0;
const EXAMPLES_PER_CHECK: usize = 4;

/// One promise and how the run kept it.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub checked: u64,
    pub violations: u64,
    pub examples: Vec<String>,
}

impl Check {
    fn new(name: &'static str) -> Self {
        Self { name, checked: 0, violations: 0, examples: Vec::new() }
    }

    fn pass(&mut self) {
        self.checked += 1;
    }

    fn fail(&mut self, example: String) {
        self.checked += 1;
        self.violations += 1;
        if self.examples.len() < EXAMPLES_PER_CHECK {
            self.examples.push(example);
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"promise": self.name, "checked": self.checked, "violations": self.violations, "examples": self.examples})
    }
}

/// What the reconciliation found.
pub struct Findings {
    pub checks: Vec<Check>,
    /// Figures reported beside the checks (not promises).
    pub figures: Vec<(String, u64)>,
}

/// A call a fake recorded, with a valid signature.
struct Call<'a> {
    body: &'a Value,
    /// The fake answered 2xx.
    accepted: bool,
    /// The fake had accepted this webhook-id before (the chat service only).
    repeated: bool,
    webhook_id: &'a str,
    at_ms: f64,
    path: &'a str,
    scope: &'a str,
}

fn calls(records: &[Value]) -> (Vec<Call<'_>>, u64) {
    let mut unsigned = 0;
    let calls = records
        .iter()
        .filter(|record| {
            let ok = record["signature_ok"] == true;
            unsigned += u64::from(!ok);
            ok
        })
        .map(|record| Call {
            body: &record["body"],
            accepted: record["reply_status"].as_u64().is_some_and(|s| (200..300).contains(&s)),
            repeated: record["duplicate_id"] == true,
            webhook_id: record["headers"]["webhook-id"].as_str().unwrap_or_default(),
            at_ms: record["received_at"].as_f64().unwrap_or(0.0) * 1000.0,
            path: record["path"].as_str().unwrap_or_default(),
            scope: record["scope"].as_str().unwrap_or_default(),
        })
        .collect();
    (calls, unsigned)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// A status's place in the register: failed < delivered < read.
fn rank(code: i64) -> i64 {
    match code {
        -1 => 0,
        code => code,
    }
}

/// amojo's calls, by kind.
#[derive(Default)]
struct Amojo {
    /// client msgid → arrivals of accepted imports.
    imports: HashMap<String, Vec<f64>>,
    /// client msgid → accepted edits.
    edits: HashSet<String>,
    /// client msgid → accepted reactions.
    reactions: HashSet<String>,
    /// Kommo msgid → accepted delivery_status codes, in arrival order.
    statuses: BTreeMap<String, Vec<i64>>,
    /// (Kommo msgid, code) → arrivals.
    status_arrivals: HashMap<(String, i64), Vec<f64>>,
    /// conversation → arrivals of client typing calls.
    typing: HashMap<String, Vec<f64>>,
}

fn amojo(calls: &[Call<'_>]) -> Amojo {
    let mut amojo = Amojo::default();
    for call in calls.iter().filter(|c| c.accepted) {
        let rest = call.path.strip_prefix("/v2/origin/custom/").and_then(|r| r.strip_prefix(call.scope)).unwrap_or("");
        let body = call.body;
        if rest.is_empty() {
            let msgid = text(&body["payload"]["msgid"]).to_owned();
            if body["event_type"] == "edit_message" {
                amojo.edits.insert(msgid);
            } else {
                amojo.imports.entry(msgid).or_default().push(call.at_ms);
            }
        } else if rest == "/react" {
            amojo.reactions.insert(text(&body["msgid"]).to_owned());
        } else if rest == "/typing" {
            amojo.typing.entry(text(&body["conversation_id"]).to_owned()).or_default().push(call.at_ms);
        } else if let Some(msgid) = rest.strip_prefix('/').and_then(|r| r.strip_suffix("/delivery_status")) {
            let code = body["delivery_status"].as_i64().unwrap_or(0);
            amojo.statuses.entry(msgid.to_owned()).or_default().push(code);
            amojo.status_arrivals.entry((msgid.to_owned(), code)).or_default().push(call.at_ms);
        }
    }
    amojo
}

/// How the timer work about each thing ran (by [`crate::sqs::subject`]).
pub type Runs = HashMap<String, Run>;

/// The queued work about one thing, for an example: how often it ran, the last time when, and
/// whether that batch failed whole (the work then waits out the visibility timeout).
fn queued(runs: &Runs, prefix: &str, what: &str, end_ms: i64) -> String {
    let mine: Vec<&Run> = runs.iter().filter(|(key, _)| key.starts_with(prefix)).map(|(_, run)| run).collect();
    let count: u64 = mine.iter().map(|run| run.count).sum();
    match mine.iter().max_by_key(|run| run.last_ms) {
        None => format!("; no {what} ever ran"),
        Some(last) => format!(
            "; its {what} ran {count} times, the last {:.1} s before the end{}",
            (end_ms - last.last_ms) as f64 / 1000.0,
            if last.last_failed { " in a batch that failed whole" } else { "" }
        ),
    }
}

/// Whether a call that reached a peer at `at_ms` was made during an invocation that was then
/// killed or timed out (`cut_off`: when each was handed out and died): its record may never
/// have been written, and the work run again makes the call again. A peer that cannot tell a
/// repeat (amojo takes an import or a status twice) sees it twice; that is what the kill costs.
fn cut_off_after(at_ms: f64, cut_off: &[(i64, i64)]) -> bool {
    cut_off.iter().any(|(handed, died)| (*handed as f64) <= at_ms && at_ms <= (died + ON_THE_WIRE_MS) as f64)
}

/// The repeats among the arrivals of one call made more than once, and how many of them a kill
/// explains (each repeat needs an earlier arrival made by an invocation then cut off).
fn repeats(arrivals: &[f64], cut_off: &[(i64, i64)]) -> (u64, u64) {
    let repeats = arrivals.len().saturating_sub(1);
    let explained = arrivals[..repeats].iter().filter(|at| cut_off_after(**at, cut_off)).count();
    (repeats as u64, explained as u64)
}

/// How long after a process died a request it had sent may still reach a fake.
const ON_THE_WIRE_MS: i64 = 100;

/// Checks every promise. `settled`: whether the run settled within its bound; `runs`: the timer
/// work as it ran; `cut_off`: the invocations killed or timed out (handed out, died);
/// `end_ms`: when the fakes' records were read.
pub fn reconcile(
    chat_records: &[Value],
    amojo_records: &[Value],
    log: &Log,
    settled: bool,
    runs: &Runs,
    cut_off: &[(i64, i64)],
    end_ms: i64,
) -> Findings {
    let (chat, chat_unsigned) = calls(chat_records);
    let (amojo_calls, amojo_unsigned) = calls(amojo_records);
    let amojo = amojo(&amojo_calls);
    // The chat service's events, each the first time it accepted its webhook-id.
    let firsts: Vec<&Call<'_>> = chat.iter().filter(|c| c.accepted && !c.repeated).collect();
    let of_kind = |kind: &'static str| firsts.iter().copied().filter(move |c| c.body["type"] == kind);
    let chat_sent = |kind: &'static str| log.chat.iter().filter(move |sent| sent.kind == kind);
    let mut checks = Vec::new();

    // Manager messages: relayed, or reported failed, whatever Kommo was answered.
    let relayed: HashMap<&str, HashSet<&str>> = of_kind("message.created").fold(HashMap::new(), |mut map, call| {
        map.entry(text(&call.body["reference"])).or_default().insert(call.webhook_id);
        map
    });
    let mut check = Check::new("manager message relayed to the chat service, or reported failed (-1) to Kommo");
    let mut once = Check::new("manager message relayed under one webhook-id");
    for sent in log.kommo.iter().filter(|s| s.kind == "message") {
        let msgid = sent.msgid.as_deref().unwrap_or_default();
        let failed = amojo.statuses.get(msgid).is_some_and(|codes| codes.contains(&-1));
        match relayed.get(msgid) {
            Some(ids) => {
                check.pass();
                if ids.len() > 1 {
                    once.fail(format!("{msgid}: message.created under {} webhook-ids", ids.len()));
                } else {
                    once.pass();
                }
            }
            None if failed => check.pass(),
            None => check.fail(format!(
                "{msgid} (webhook answered {}): neither relayed nor reported failed{}",
                answer(sent.status),
                queued(runs, &format!("relay:{msgid}"), "relay", end_ms)
            )),
        }
    }
    checks.push(check);

    // Client messages the chat service's sender may take as delivered: imported, told once.
    let told: HashMap<&str, HashSet<&str>> = firsts
        .iter()
        .filter(|c| matches!(text(&c.body["type"]), "message.delivered" | "message.failed"))
        .fold(HashMap::new(), |mut map, call| {
            map.entry(text(&call.body["msgid"])).or_default().insert(call.webhook_id);
            map
        });
    let mut imported = Check::new("accepted client message imported into amojo");
    let mut told_once = Check::new("client message told message.delivered or message.failed exactly once");
    for sent in chat_sent("message.created") {
        let msgid = sent.subject.as_deref().unwrap_or_default();
        let in_kommo = amojo.imports.contains_key(msgid);
        if sent.accepted() {
            if in_kommo {
                imported.pass();
            } else {
                let import = queued(runs, &format!("import:{msgid}"), "import", end_ms);
                imported.fail(format!("{msgid} (answers {}): never imported{import}", answers(sent)));
            }
        }
        if sent.accepted() || in_kommo {
            match told.get(msgid).map_or(0, HashSet::len) {
                1 => told_once.pass(),
                0 => told_once.fail(format!("{msgid} (answers {}): never told", answers(sent))),
                n => told_once.fail(format!("{msgid}: told {n} times")),
            }
        }
    }
    checks.push(imported);

    // Statuses the chat service's sender may take as delivered: at amojo, or a higher one.
    let mut statuses = Check::new("accepted status reaches amojo (or a higher one)");
    for sent in chat_sent("message.status").filter(|s| s.accepted()) {
        let msgid = sent.subject.as_deref().unwrap_or_default();
        let wanted = if sent.status == Some("read") { 2 } else { 1 };
        let best = amojo.statuses.get(msgid).and_then(|codes| codes.iter().copied().map(rank).max());
        if best.is_some_and(|best| best >= wanted) {
            statuses.pass();
        } else {
            let status = sent.status.unwrap_or_default();
            let report = queued(runs, &format!("report:{msgid} "), "report", end_ms);
            statuses.fail(format!("{msgid} {status} (answers {}): amojo has {best:?}{report}", answers(sent)));
        }
    }
    checks.push(statuses);

    let mut extras = Check::new("accepted reaction and edit reach amojo");
    for sent in log.chat.iter().filter(|s| matches!(s.kind, "reaction.added" | "message.edited") && s.accepted()) {
        let msgid = sent.subject.as_deref().unwrap_or_default();
        let arrived =
            if sent.kind == "reaction.added" { amojo.reactions.contains(msgid) } else { amojo.edits.contains(msgid) };
        if arrived {
            extras.pass();
        } else {
            extras.fail(format!("{} of {msgid} (answers {}): never at amojo", sent.kind, answers(sent)));
        }
    }
    checks.push(extras);
    checks.push(told_once);
    checks.push(once);

    // Typing indicators: off at the end on both sides; starts and stops alternate.
    let mut typing_events: BTreeMap<(String, String), Vec<&str>> = BTreeMap::new();
    for call in firsts.iter().filter(|c| matches!(text(&c.body["type"]), "typing.started" | "typing.stopped")) {
        let key = (text(&call.body["conversation_id"]).to_owned(), text(&call.body["manager"]["id"]).to_owned());
        typing_events.entry(key).or_default().push(text(&call.body["type"]));
    }
    let mut left_on = Check::new("no manager typing indicator left on at the chat service");
    let mut alternate = Check::new("typing.started and typing.stopped alternate per manager and conversation");
    for ((conversation, manager), events) in &typing_events {
        if events.last() == Some(&"typing.started") {
            let checks = queued(runs, &format!("manager_typing_check:{conversation} "), "expiry check", end_ms);
            let stops = queued(runs, &format!("deliver:typing.stopped {conversation} "), "typing.stopped", end_ms);
            left_on.fail(format!("{conversation} manager {manager}: the last event is typing.started{checks}{stops}"));
        } else {
            left_on.pass();
        }
        let mut on = false;
        for event in events {
            let started = *event == "typing.started";
            if started == on {
                alternate
                    .fail(format!("{conversation} manager {manager}: {event} twice in a row ({})", events.join(", ")));
            } else {
                alternate.pass();
            }
            on = started;
        }
    }
    checks.push(left_on);

    let mut client_typing = Check::new("no client typing shown at amojo after the client stopped");
    let mut last_start: HashMap<String, f64> = HashMap::new();
    for sent in chat_sent("typing.started") {
        let conversation = format!("conv-{}", sent.conversation);
        let at = sent.attempts.last().map_or(0.0, |a| a.at_ms as f64);
        let entry = last_start.entry(conversation).or_insert(at);
        *entry = entry.max(at);
    }
    for (conversation, arrivals) in &amojo.typing {
        let last = last_start.get(conversation).copied().unwrap_or(0.0);
        let late: Vec<f64> = arrivals.iter().copied().filter(|at| *at > last + CLIENT_TYPING_STUCK_MS).collect();
        match late.last() {
            Some(at) => client_typing.fail(format!(
                "{conversation}: {} typing calls more than 10 s after the last typing.started, the last {:.1} s after",
                late.len(),
                (at - last) / 1000.0
            )),
            None => client_typing.pass(),
        }
    }
    checks.push(client_typing);
    checks.push(alternate);

    // What the chat service shows of a manager before their first push is not known to the
    // bridge, so the first push may say either; every later one must change it. A first push
    // saying offline is a manager whose online spell was over before its push could go out (a
    // worker killed holding the lane): counted.
    let mut presence = Check::new("presence.changed alternates and ends offline");
    let mut online_never_shown = 0;
    let mut pushes: BTreeMap<(String, String), Vec<bool>> = BTreeMap::new();
    for call in of_kind("presence.changed") {
        let key = (text(&call.body["conversation_id"]).to_owned(), text(&call.body["manager"]["id"]).to_owned());
        pushes.entry(key).or_default().push(call.body["online"] == true);
    }
    for ((conversation, manager), states) in &pushes {
        let mut broken = None;
        online_never_shown += u64::from(states.first() == Some(&false));
        for pair in states.windows(2) {
            if pair[0] == pair[1] {
                broken = Some(format!("online={} twice in a row", pair[1]));
            }
        }
        let online = states.last() == Some(&true);
        if online {
            broken = Some("left online".to_owned());
        }
        let widget: Vec<String> = log
            .kommo
            .iter()
            .filter(|k| matches!(k.kind, "viewing" | "left") && format!("conv-{}", k.conversation) == *conversation)
            .map(|k| format!("{} {}", k.kind, answer(k.status)))
            .collect();
        let subject = format!("manager_presence_check:{conversation} ");
        let check = queued(runs, &subject, "presence check", end_ms);
        let deliveries = queued(runs, &format!("deliver:presence.changed {conversation} "), "push", end_ms);
        match broken {
            Some(what) => presence.fail(format!(
                "{conversation} manager {manager}: {what} ({states:?}; widget: {}{check}{deliveries})",
                widget.join(", ")
            )),
            None => presence.pass(),
        }
    }
    checks.push(presence);

    // Statuses at amojo: each (message, status) once, never backwards. A repeat whose first
    // call was made by an invocation then cut off is what a kill costs (amojo cannot tell a
    // repeat): counted and reported, like a repeated import.
    let mut twice = Check::new("no (message, status) sent to amojo twice, but after a kill between call and record");
    let mut backwards = Check::new("no status backwards at amojo");
    let (mut statuses_after_kill, mut imports_after_kill) = (0, 0);
    for (msgid, codes) in &amojo.statuses {
        let mut unexplained = Vec::new();
        for code in codes.iter().copied().collect::<HashSet<_>>() {
            let (repeated, explained) = repeats(&amojo.status_arrivals[&(msgid.clone(), code)], cut_off);
            statuses_after_kill += repeated.min(explained);
            if repeated > explained {
                unexplained.push(code);
            }
        }
        if unexplained.is_empty() {
            twice.pass();
        } else {
            twice.fail(format!("{msgid}: {codes:?}, no kill explains the repeat of {unexplained:?}"));
        }
        let mut best = i64::MIN;
        let mut back = false;
        for code in codes {
            back |= rank(*code) < best;
            best = best.max(rank(*code));
        }
        if back {
            backwards.fail(format!("{msgid}: {codes:?}"));
        } else {
            backwards.pass();
        }
    }
    checks.push(twice);
    checks.push(backwards);

    let mut imported_once = Check::new("client message imported once, but after a kill between call and record");
    for (msgid, arrivals) in &amojo.imports {
        let (repeated, explained) = repeats(arrivals, cut_off);
        imports_after_kill += repeated.min(explained);
        if repeated > explained {
            imported_once.fail(format!(
                "{msgid}: imported {} times, no kill explains {}",
                arrivals.len(),
                repeated - explained
            ));
        } else {
            imported_once.pass();
        }
    }
    checks.push(imported_once);

    // Answers: a retry after a failed answer is handled, not refused as a replay.
    let mut replayed = Check::new("chat sender's retries never answered 409 replayed_webhook");
    for sent in &log.chat {
        let refused = sent.attempts.iter().skip(1).any(|a| a.status == Some(409));
        if refused {
            replayed.fail(format!("{} {} ({}): answers {}", sent.kind, subject(sent), sent.webhook_id, answers(sent)));
        } else {
            replayed.pass();
        }
    }
    checks.push(replayed);

    let mut settle = Check::new("settled (queue empty, peers quiet) within the bound");
    if settled {
        settle.pass();
    } else {
        settle.fail("messages still queued or in flight, or a peer still called".into());
    }
    checks.push(settle);

    let attempts = log.chat.iter().flat_map(|s| s.attempts.iter());
    let chat_5xx = attempts.clone().filter(|a| a.status.is_some_and(|s| s >= 500)).count() as u64;
    let chat_none = attempts.clone().filter(|a| a.status.is_none()).count() as u64;
    let chat_409 = attempts.filter(|a| a.status == Some(409)).count() as u64;
    let kommo_sent = |kinds: &[&str]| log.kommo.iter().filter(|k| kinds.contains(&k.kind)).collect::<Vec<_>>();
    let webhooks = kommo_sent(&["typing", "message"]);
    let widget = kommo_sent(&["viewing", "left"]);
    let figures = vec![
        ("Kommo webhooks sent (never re-sent)".into(), webhooks.len() as u64),
        ("  answered 5xx: typing".into(), failed(&webhooks, "typing")),
        ("  answered 5xx: message".into(), failed(&webhooks, "message")),
        ("  unanswered within 5 s".into(), webhooks.iter().filter(|k| k.status.is_none()).count() as u64),
        ("widget calls".into(), widget.len() as u64),
        (
            "  answered 5xx or unanswered".into(),
            widget.iter().filter(|k| k.status.is_none_or(|s| s >= 500)).count() as u64,
        ),
        ("chat-service events sent".into(), log.chat.len() as u64),
        ("  attempts".into(), log.chat.iter().map(|s| s.attempts.len() as u64).sum()),
        ("  attempts answered 5xx".into(), chat_5xx),
        ("  attempts unanswered".into(), chat_none),
        ("  attempts answered 409".into(), chat_409),
        (
            "  given up after every retry".into(),
            log.chat.iter().filter(|s| s.final_status().is_none_or(|st| st >= 500)).count() as u64,
        ),
        (
            "  refused 4xx (not 409)".into(),
            log.chat.iter().filter(|s| s.final_status().is_some_and(|st| (400..500).contains(&st) && st != 409)).count()
                as u64,
        ),
        ("amojo imports repeated after a kill between call and record (reported)".into(), imports_after_kill),
        ("managers whose first presence push said offline (online spell missed)".into(), online_never_shown),
        ("amojo statuses repeated after a kill between call and record (reported)".into(), statuses_after_kill),
        (
            "timer work run more than 20 times (one piece of work)".into(),
            runs.values().filter(|run| run.count > 20).count() as u64,
        ),
        ("calls with a bad signature at the fakes".into(), chat_unsigned + amojo_unsigned),
    ];
    Findings { checks, figures }
}

/// How many of the webhooks of `kind` were answered 5xx.
fn failed(sent: &[&KommoSent], kind: &str) -> u64 {
    sent.iter().filter(|k| k.kind == kind && k.status.is_some_and(|s| s >= 500)).count() as u64
}

fn answer(status: Option<u16>) -> String {
    status.map_or("nothing".to_owned(), |s| s.to_string())
}

/// Every answer an event got, in order, with the error code of a 409.
fn answers(sent: &ChatSent) -> String {
    let each: Vec<String> = sent
        .attempts
        .iter()
        .map(|a| match (a.status, &a.code) {
            (Some(409), Some(code)) => format!("409 {code}"),
            (status, _) => answer(status),
        })
        .collect();
    each.join(", ")
}

fn subject(sent: &ChatSent) -> String {
    match (&sent.subject, sent.status) {
        (Some(subject), Some(status)) => format!("{subject} {status}"),
        (Some(subject), None) => subject.clone(),
        (None, _) => format!("conv-{}", sent.conversation),
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
