//! Metrics as CloudWatch's embedded metric format (EMF): one JSON line on stdout per record,
//! which CloudWatch Logs turns into a metric, with no API call per event. Namespace
//! `KommoBridge`; the dashboard and alarms in `infra/template.yaml` read these:
//!
//! | metric | unit | dimensions | one per |
//! |---|---|---|---|
//! | `Events` | Count | `Kind`, `Outcome` | inbound event (accepted, duplicate, refused, failed) |
//! | `ServerErrors` | Count | `Function` | 5xx answered (`Route`, `Status` as properties) |
//! | `TypingStopLag` | Milliseconds | `Function` | manager `typing.stopped` for a lapsed lease, after Kommo's `expired_at` |
//! | `RelayLatency` | Milliseconds | `Peer` | message that reached its peer, from when it reached the bridge |
//! | `StatusesReported` | Count | `Status` | status Kommo took (`delivered`, `read`, `901`…`905`) |
//! | `DeadLetters` | Count | `Function` | queued work given up (`Work` as a property) |
//! | `OutboundCalls` | Count | `Peer`, `Outcome` | call to the chat service, amojo or Kommo's API (ok, refused, unavailable) |
//! | `InstallsConnecting` | Count | (none) | install whose channel was not connected in time, or a queued connect that failed again |
//!
//! `ServerErrors` matters because, driven through the Lambda Runtime API, a bridge that cannot
//! reach its table answers HTTP 500 as a normal response, which Lambda's own `Errors` metric
//! does not count. Every dimension value comes from a small closed set (never an id), and
//! routes, work kinds and statuses beyond those are properties, not dimensions: each distinct
//! dimension value is a metric billed by the month.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};

use crate::ports::metrics::{Metric, Metrics};
use crate::time::Clock;

/// The CloudWatch namespace of the bridge's own metrics.
pub const NAMESPACE: &str = "KommoBridge";

/// Where metric lines go: stdout under Lambda (CloudWatch Logs reads them), a recorder in tests.
pub trait MetricLines: Send + Sync {
    fn write(&self, line: String);
}

/// Lambda's stdout.
pub struct Stdout;

impl MetricLines for Stdout {
    fn write(&self, line: String) {
        println!("{line}");
    }
}

/// One EMF line: `metrics` (name, unit, value) under the one dimension set `dimensions`, whose
/// values are among `fields` (with any other properties, searchable in Logs Insights).
fn emf_line(
    timestamp_ms: i64,
    dimensions: &[&str],
    metrics: &[(&str, &str, Value)],
    fields: &[(&str, Value)],
) -> String {
    let definitions: Vec<Value> = metrics.iter().map(|(name, unit, _)| json!({"Name": name, "Unit": unit})).collect();
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [dimensions], "Metrics": definitions}],
        },
    });
    for (name, _, value) in metrics {
        line[*name] = value.clone();
    }
    for (name, value) in fields {
        line[*name] = value.clone();
    }
    line.to_string()
}

/// The EMF line of one 5xx answer of `function` on `route` (a route template, never a path
/// with ids in it).
pub fn server_error(function: &str, route: &str, status: u16, timestamp_ms: i64) -> String {
    emf_line(
        timestamp_ms,
        &["Function"],
        &[("ServerErrors", "Count", json!(1))],
        &[("Function", json!(function)), ("Route", json!(route)), ("Status", json!(status))],
    )
}

/// How an inbound event was answered: 2xx accepted (a duplicate when its `webhook-id` was
/// applied already), 4xx refused, 5xx failed.
pub fn event_outcome(status: StatusCode, duplicate: bool) -> &'static str {
    match status.as_u16() {
        200..=299 if duplicate => "duplicate",
        200..=299 => "accepted",
        400..=499 => "refused",
        _ => "failed",
    }
}

/// The EMF line of one inbound event of `kind`, answered `status`.
pub fn event(kind: &EventKind, status: StatusCode, timestamp_ms: i64) -> String {
    emf_line(
        timestamp_ms,
        &["Kind", "Outcome"],
        &[("Events", "Count", json!(1))],
        &[("Kind", json!(kind.name())), ("Outcome", json!(event_outcome(status, kind.duplicate())))],
    )
}

/// The line of one observation of the flows ([`Metric`]).
pub fn observation(metric: &Metric, timestamp_ms: i64) -> String {
    // The queued work (typing stops, relays, imports, reports) runs in typing-expiry.
    let queued = ("Function", json!("typing-expiry"));
    match metric {
        Metric::TypingStopLag { ms } => {
            emf_line(timestamp_ms, &["Function"], &[("TypingStopLag", "Milliseconds", json!(ms))], &[queued])
        }
        Metric::RelayLatency { peer, ms } => emf_line(
            timestamp_ms,
            &["Peer"],
            &[("RelayLatency", "Milliseconds", json!(ms))],
            &[("Peer", json!(peer.name()))],
        ),
        Metric::StatusReported { status } => emf_line(
            timestamp_ms,
            &["Status"],
            &[("StatusesReported", "Count", json!(1))],
            &[("Status", json!(status))],
        ),
        Metric::DeadLetter { what } => emf_line(
            timestamp_ms,
            &["Function"],
            &[("DeadLetters", "Count", json!(1))],
            &[queued, ("Work", json!(what))],
        ),
        Metric::OutboundCall { peer, outcome } => emf_line(
            timestamp_ms,
            &["Peer", "Outcome"],
            &[("OutboundCalls", "Count", json!(1))],
            &[("Peer", json!(peer.name())), ("Outcome", json!(outcome.name()))],
        ),
        // At install (kommo-webhook) or in queued work (typing-expiry): one series for both.
        Metric::InstallConnecting => emf_line(timestamp_ms, &[], &[("InstallsConnecting", "Count", json!(1))], &[]),
    }
}

/// The flows' metrics as EMF lines, to where the bridge's ports say (stdout under Lambda).
pub struct EmfMetrics {
    lines: Arc<dyn MetricLines>,
    clock: Arc<dyn Clock>,
}

impl EmfMetrics {
    pub fn new(lines: Arc<dyn MetricLines>, clock: Arc<dyn Clock>) -> Self {
        Self { lines, clock }
    }

    pub fn write(&self, line: String) {
        self.lines.write(line);
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

impl Metrics for EmfMetrics {
    fn record(&self, metric: Metric) {
        self.write(observation(&metric, self.clock.now_ms()));
    }
}

/// The kind of the inbound event being answered, for its `Events` metric line and its log
/// span: the route's own until the side that reads the request names it more precisely. Each
/// request has its own, passed down and read back when the answer is made.
pub struct EventKind {
    name: &'static str,
    duplicate: bool,
}

impl EventKind {
    /// A request no route matched.
    pub fn unrouted() -> Self {
        Self { name: "unrouted", duplicate: false }
    }

    /// Names the event `kind`, in the metric line and in the request's log span.
    pub fn name_as(&mut self, kind: &'static str) {
        tracing::Span::current().record("kind", kind);
        self.name = kind;
    }

    /// The event was delivered again after it was applied: answered 200, counted a duplicate.
    pub fn note_duplicate(&mut self) {
        self.duplicate = true;
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn duplicate(&self) -> bool {
        self.duplicate
    }
}
