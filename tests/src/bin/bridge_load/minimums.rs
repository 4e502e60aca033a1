//! The least each reconciled category must reach, so that a run which exercised nothing (a
//! broken action, a feature off, a stack so slow that nothing happened) fails instead of
//! passing vacuously. The minimums scale with the paced actions of the run, conversations ×
//! seconds × 1000 / interval-ms (the actions it would do if the bridge answered at once), at a
//! small share of what a saturated run reaches (tests/LOAD.md, "Minimums").

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use crate::presence::ReadTally;
use crate::reconcile::Reconciliation;

/// A category the run reconciles.
struct Category {
    /// Its key in the JSON.
    key: &'static str,
    what: &'static str,
    /// The least it must reach per thousand paced actions.
    per_thousand_actions: f64,
    /// The dev-server switch that, turned off with `--dev-env`, empties it by design.
    switch: Option<&'static str>,
}

const fn category(key: &'static str, what: &'static str, per_thousand_actions: f64) -> Category {
    Category { key, what, per_thousand_actions, switch: None }
}

const fn switched(key: &'static str, what: &'static str, per_thousand_actions: f64, switch: &'static str) -> Category {
    Category { key, what, per_thousand_actions, switch: Some(switch) }
}

// A 200 × 60 run on this project's 2-core machine, saturated by other builds at a fifth of its
// pace (250 requests/s), reached 6 to 11 times these; the benchmark's 50 × 20, over 30 times
// (tests/LOAD.md).
const CLIENT_MESSAGES: Category = category("client_messages", "client messages reconciled", 3.0);
const MANAGER_MESSAGES: Category = category("manager_messages", "manager messages reconciled", 2.5);
const STATUS_CHANGES: Category = category("status_changes", "status changes reconciled", 2.5);
const READ_RECEIPTS: Category =
    switched("read_receipts", "widget read receipts reconciled", 0.75, "FORWARD_READ_RECEIPTS");
const TYPING_LEASES: Category =
    switched("manager_typing_leases", "manager typing leases (start then stop)", 0.75, "FORWARD_MANAGER_TYPING");
const PRESENCE_PUSHES: Category =
    switched("manager_presence_pushes", "manager presence.changed online pushes", 0.25, "FORWARD_MANAGER_PRESENCE");
const CLIENT_TYPING_CALLS: Category = category("client_typing_calls", "client typing calls to amojo", 4.0);
const WIDGET_PRESENCE_READS: Category = category("widget_presence_reads", "widget presence reads checked", 2.0);
const CHAT_PRESENCE_READS: Category = category("chat_presence_reads", "GET /chat/presence reads checked", 1.0);
const MESSAGE_DELIVERED: Category = category("message_delivered", "message.delivered reconciled", 3.0);
const MANAGER_REACTIONS: Category = category("manager_reactions", "manager reactions reconciled", 0.25);
const CLIENT_REACTIONS: Category = category("client_reactions", "client reactions reconciled", 0.25);
// One conversation in ten is write-first whatever the pace: this only catches none reconciled.
const WRITE_FIRST: Category = category("write_first_conversations", "write-first chats reconciled whole", 0.05);

/// One category: what the run reached against the least it must.
#[derive(Debug, Clone)]
pub struct Coverage {
    pub key: &'static str,
    pub what: &'static str,
    pub count: u64,
    pub minimum: u64,
    /// The `--dev-env` switch that turned the category off: no minimum.
    pub waived_by: Option<&'static str>,
}

impl Coverage {
    pub fn short(&self) -> bool {
        self.waived_by.is_none() && self.count < self.minimum
    }
}

/// The paced actions of a run: what each minimum is a share of.
pub fn paced_actions(conversations: usize, seconds: u64, interval_ms: u64) -> f64 {
    conversations as f64 * seconds as f64 * 1000.0 / interval_ms as f64
}

/// Every category's count and minimum. `switched_off(name)`: whether `--dev-env` turned that
/// dev-server switch off.
pub fn coverage(
    reconciliation: &Reconciliation,
    widget_reads: &ReadTally,
    chat_reads: &ReadTally,
    paced_actions: f64,
    switched_off: impl Fn(&str) -> bool,
) -> Vec<Coverage> {
    [
        (CLIENT_MESSAGES, reconciliation.client_messages.expected),
        (MANAGER_MESSAGES, reconciliation.manager_messages.expected),
        (STATUS_CHANGES, reconciliation.statuses.expected),
        (READ_RECEIPTS, reconciliation.reads.expected),
        (TYPING_LEASES, reconciliation.typing_leases),
        (PRESENCE_PUSHES, reconciliation.presence_online_pushes),
        (CLIENT_TYPING_CALLS, reconciliation.client_typing_calls),
        (WIDGET_PRESENCE_READS, widget_reads.checked),
        (CHAT_PRESENCE_READS, chat_reads.checked),
        (MESSAGE_DELIVERED, reconciliation.delivered.expected),
        (MANAGER_REACTIONS, reconciliation.manager_reactions.expected),
        (CLIENT_REACTIONS, reconciliation.client_reactions.expected),
        (WRITE_FIRST, reconciliation.write_first.reconciled),
    ]
    .into_iter()
    .map(|(category, count)| Coverage {
        key: category.key,
        what: category.what,
        count,
        // Never below one: an empty category fails however short the run.
        minimum: ((category.per_thousand_actions * paced_actions / 1000.0).ceil() as u64).max(1),
        waived_by: category.switch.filter(|switch| switched_off(switch)),
    })
    .collect()
}

pub fn to_json(coverage: &[Coverage]) -> Value {
    let categories: Map<String, Value> = coverage
        .iter()
        .map(|c| {
            let row = json!({"count": c.count, "minimum": c.minimum,
                             "waived_by": c.waived_by.map(|switch| format!("{switch}=false")), "short": c.short()});
            (c.key.to_owned(), row)
        })
        .collect();
    Value::Object(categories)
}

pub fn table(coverage: &[Coverage]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<48} {:>8} {:>8}", "coverage (each category must reach its minimum)", "count", "minimum");
    for c in coverage {
        let note = match (c.waived_by, c.short()) {
            (Some(switch), _) => format!("  (waived: {switch} off)"),
            (None, true) => "  SHORT".to_owned(),
            (None, false) => String::new(),
        };
        let _ = writeln!(out, "{:<48} {:>8} {:>8}{note}", c.what, c.count, c.minimum);
    }
    out
}
