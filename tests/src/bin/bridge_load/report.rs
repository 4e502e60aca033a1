//! The run's figures as a table on stdout and as JSON (target/bench/load-<N>x<S>.json).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::reconcile::{CLIENT_TYPING_STUCK_MS, Reconciliation, Tally};
use crate::sim::{Failure, Outcome, ROUTES, RouteKey};
use crate::stats::{Summary, round3};

/// Per route and kind: the latency samples and the non-2xx answers.
pub struct RouteTable {
    pub rows: Vec<(RouteKey, Summary, u64)>,
}

impl RouteTable {
    pub fn build(outcomes: &[Outcome]) -> Self {
        let mut samples: BTreeMap<RouteKey, Vec<f64>> = BTreeMap::new();
        let mut failures: BTreeMap<RouteKey, u64> = BTreeMap::new();
        for outcome in outcomes {
            for (key, values) in &outcome.samples {
                samples.entry(*key).or_default().extend_from_slice(values);
            }
            for failure in &outcome.failures {
                *failures.entry(failure.key).or_default() += 1;
                samples.entry(failure.key).or_default();
            }
        }
        let mut rows = Vec::new();
        for route in ROUTES {
            let kinds: Vec<RouteKey> = samples.keys().copied().filter(|k| k.route == route).collect();
            let mut all: Vec<f64> = kinds.iter().flat_map(|k| samples[k].iter().copied()).collect();
            let all_failures: u64 = kinds.iter().map(|k| failures.get(k).copied().unwrap_or(0)).sum();
            rows.push((RouteKey { route, kind: "(all)" }, Summary::of(&mut all), all_failures));
            if kinds.len() > 1 {
                for kind in kinds {
                    let mut values = samples[&kind].clone();
                    rows.push((kind, Summary::of(&mut values), failures.get(&kind).copied().unwrap_or(0)));
                }
            }
        }
        Self { rows }
    }

    /// Routes that saw no request at all.
    pub fn uncovered(&self) -> Vec<&'static str> {
        self.rows
            .iter()
            .filter(|(key, summary, failures)| key.kind == "(all)" && summary.count == 0 && *failures == 0)
            .map(|(key, _, _)| key.route)
            .collect()
    }

    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|(key, summary, failures)| {
                    let mut row = summary.to_json();
                    row["route"] = json!(key.route);
                    row["kind"] = json!(key.kind);
                    row["non_2xx"] = json!(failures);
                    row
                })
                .collect(),
        )
    }
}

pub fn ms(value: f64) -> String {
    format!("{value:.2}")
}

/// 12345 → "12,345".
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn routes_table(table: &RouteTable) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<47} {:<18} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "route", "sent", "count", "p50 ms", "p99 ms", "max ms", "non-2xx"
    );
    for (key, summary, failures) in &table.rows {
        let route = if key.kind == "(all)" { key.route } else { "" };
        let _ = writeln!(
            out,
            "{:<47} {:<18} {:>8} {:>8} {:>8} {:>8} {:>7}",
            route,
            key.kind,
            summary.count,
            ms(summary.p50),
            ms(summary.p99),
            ms(summary.max),
            failures
        );
    }
    out
}

pub fn delivery_table(reconciliation: &Reconciliation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<56} {:>8} {:>8} {:>8} {:>8}",
        "delivery (request sent → the fake received)", "count", "p50 ms", "p99 ms", "max ms"
    );
    for (name, samples) in &reconciliation.delivery {
        let summary = Summary::of(&mut samples.clone());
        let _ = writeln!(
            out,
            "{:<56} {:>8} {:>8} {:>8} {:>8}",
            name,
            summary.count,
            ms(summary.p50),
            ms(summary.p99),
            ms(summary.max)
        );
    }
    out
}

pub fn reconciliation_table(r: &Reconciliation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:>8} {:>9} {:>5} {:>10} {:>7} {:>10} {:>9}",
        "reconciliation", "expected", "delivered", "lost", "duplicated", "retries", "unexpected", "uncertain"
    );
    let rows: [(&str, Tally); 7] = [
        ("client message → amojo (by msgid)", r.client_messages),
        ("client message → chat message.delivered", r.delivered),
        ("manager message → chat (by reference)", r.manager_messages),
        ("status → amojo (by msgid, status)", r.statuses),
        ("widget read → chat message.read", r.reads),
        ("manager reaction → chat reaction.*", r.manager_reactions),
        ("client reaction → amojo react", r.client_reactions),
    ];
    for (name, t) in rows {
        let _ = writeln!(
            out,
            "{:<40} {:>8} {:>9} {:>5} {:>10} {:>7} {:>10} {:>9}",
            name, t.expected, t.delivered, t.lost, t.duplicated, t.retries, t.unexpected, t.uncertain
        );
    }
    let _ = writeln!(
        out,
        "statuses arriving backwards at amojo: {}; overtaken (a later one was there first, so not sent): {}",
        r.statuses_backwards, r.statuses_overtaken
    );
    let _ = writeln!(
        out,
        "client message outcomes: message.failed {}; message.delivered references checked against amojo's msgid {}, differing {}",
        r.outcomes.failed, r.outcomes.reference_checked, r.outcomes.reference_mismatched
    );
    let w = &r.write_first;
    let _ = writeln!(
        out,
        "write-first chats: {} ({} answered under Kommo's id, {} under their own), {} reconciled whole, {} uncertain; \
         opening misrelayed {}, chats created {}, client messages in Kommo's chat {} / elsewhere {}, chat missing {}",
        w.conversations,
        w.variant_a,
        w.variant_b,
        w.reconciled,
        w.uncertain,
        w.opening_misrelayed,
        w.chats_created,
        w.messages_in_kommo_chat,
        w.messages_elsewhere,
        w.chat_missing
    );
    let _ = writeln!(
        out,
        "manager typing → chat: {} leases started; left on {}, started twice {} ({} overtaken by the previous lease's stop), \
         redundant stops {}, retries {}",
        r.typing_leases,
        r.typing_stuck,
        r.typing_double_start,
        r.typing_double_start_reordered,
        r.typing_redundant_stop,
        r.typing_retries
    );
    let _ = writeln!(
        out,
        "manager presence → chat: {} online pushes; left online {}, repeated {}, retries {}",
        r.presence_online_pushes, r.presence_stuck, r.presence_repeated, r.presence_retries
    );
    let _ = writeln!(
        out,
        "client typing → amojo: {} calls; {} after an acknowledged stop (max {} ms after it), {} more than {} ms after",
        r.client_typing_calls,
        r.client_typing_after_stop,
        r.client_typing_after_stop_max_ms,
        r.client_typing_stuck,
        CLIENT_TYPING_STUCK_MS
    );
    let _ = writeln!(
        out,
        "amojo chats created: {} ({} conversations created more than once); bad signatures at the fakes: {}; \
         chat redeliveries of an accepted webhook-id: {}",
        r.chat_creations, r.conversations_created_twice, r.bad_signatures, r.redelivered_after_acceptance
    );
    out
}

pub fn failures_json(outcomes: &[Outcome], limit: usize) -> Value {
    let failures: Vec<&Failure> = outcomes.iter().flat_map(|o| o.failures.iter()).take(limit).collect();
    Value::Array(
        failures
            .iter()
            .map(|f| json!({"route": f.key.route, "kind": f.key.kind, "status": f.status, "detail": f.detail}))
            .collect(),
    )
}

pub fn seconds(value: f64) -> Value {
    json!(round3(value))
}
