//! The metric lines a run emits (CloudWatch's embedded metric format), read back and checked:
//! names, units, dimensions and properties, as CloudWatch would take them, against the table
//! the dashboard and alarms in infra/template.yaml are built on (`shared::app::metrics`).

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use shared::ports::chat::ChatError;
use support::*;

/// A dimension and the values it may take (a small closed set, never an id).
type Dimension = (&'static str, &'static [&'static str]);

/// Every metric the bridge emits: name, unit, and its one dimension set.
const METRICS: &[(&str, &str, &[Dimension])] = &[
    (
        "Events",
        "Count",
        &[
            (
                "Kind",
                &[
                    "unrouted",
                    "kommo_webhook",
                    "manager_typing",
                    "manager_message",
                    "reaction",
                    "other",
                    "oauth_callback",
                    "oauth_disabled",
                    "ui_presence",
                    "ui_client_presence",
                    "ui_viewing",
                    "ui_left",
                    "ui_read",
                    "chat_event",
                    "message.created",
                    "message.status",
                    "typing.started",
                    "typing.stopped",
                    "presence.online",
                    "presence.heartbeat",
                    "presence.offline",
                    "message.edited",
                    "reaction.added",
                    "reaction.removed",
                    "presence_pull",
                    "dev_server",
                ],
            ),
            ("Outcome", &["accepted", "duplicate", "refused", "failed"]),
        ],
    ),
    ("ServerErrors", "Count", &[("Function", &["kommo-webhook", "chat-callback"])]),
    ("TypingStopLag", "Milliseconds", &[("Function", &["typing-expiry"])]),
    ("RelayLatency", "Milliseconds", &[("Peer", &["chat_service", "amojo"])]),
    ("StatusesReported", "Count", &[("Status", &["delivered", "read", "901", "902", "903", "904", "905"])]),
    ("DeadLetters", "Count", &[("Function", &["typing-expiry"])]),
    (
        "OutboundCalls",
        "Count",
        &[("Peer", &["chat_service", "amojo", "kommo_api"]), ("Outcome", &["ok", "refused", "unavailable"])],
    ),
    ("InstallsConnecting", "Count", &[]),
];

/// One metric line, checked against [`METRICS`] and the EMF specification.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Observed {
    name: String,
    dimensions: Vec<(String, String)>,
    value: i64,
}

fn read(line: &str) -> Observed {
    let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
    let emf = &parsed["_aws"];
    assert!(emf["Timestamp"].is_i64(), "a Timestamp in ms: {line}");
    let directives = emf["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics");
    assert_eq!(directives.len(), 1, "{line}");
    let directive = &directives[0];
    assert_eq!(directive["Namespace"], "KommoBridge", "{line}");
    let defined = directive["Metrics"].as_array().expect("Metrics");
    assert_eq!(defined.len(), 1, "one metric a line: {line}");
    let name = defined[0]["Name"].as_str().expect("a metric name");
    let (_, unit, dimensions) =
        METRICS.iter().find(|(known, _, _)| *known == name).unwrap_or_else(|| panic!("an unknown metric: {line}"));
    assert_eq!(defined[0]["Unit"], *unit, "{line}");
    let wanted: Vec<&str> = dimensions.iter().map(|(dimension, _)| *dimension).collect();
    assert_eq!(directive["Dimensions"], serde_json::json!([wanted]), "{line}");
    let values = dimensions
        .iter()
        .map(|(dimension, allowed)| {
            let value = parsed[*dimension].as_str().unwrap_or_else(|| panic!("{dimension} is on the line: {line}"));
            assert!(allowed.contains(&value), "{dimension} = {value} is not one of {allowed:?}: {line}");
            (dimension.to_string(), value.to_owned())
        })
        .collect();
    let value = parsed[name].as_i64().unwrap_or_else(|| panic!("{name}'s value is a number on the line: {line}"));
    Observed { name: name.to_owned(), dimensions: values, value }
}

fn observed(sim: &Sim) -> Vec<Observed> {
    sim.metrics.lines().iter().map(|line| read(line)).collect()
}

fn named<'a>(all: &'a [Observed], name: &str) -> Vec<&'a Observed> {
    all.iter().filter(|o| o.name == name).collect()
}

fn dims(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn every_5xx_the_bridge_answers_is_counted_with_its_route_and_no_ids() {
    let sim = Sim::new();
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
    assert_eq!(sim.chat_event(r#"{"type":"typing.started"}"#).await.status(), 400);
    assert!(named(&observed(&sim), "ServerErrors").is_empty(), "no 5xx yet");
    // The queue refusing: the bridge answers 500, as a normal response, which Lambda's own
    // Errors metric would not count.
    sim.queue.refuse_next.store(1, std::sync::atomic::Ordering::SeqCst);
    let failed = sim.kommo_webhook(&manager_typing("conv-2", "manager-1", T0 / 1000 + 5)).await;
    assert_eq!(failed.status(), 500);
    let lines = sim.metrics.lines();
    let errors: Vec<&String> = lines.iter().filter(|line| line.contains("\"ServerErrors\"")).collect();
    assert_eq!(errors.len(), 1, "{lines:?}");
    let line: Value = serde_json::from_str(errors[0]).unwrap();
    assert_eq!(line["_aws"]["Timestamp"], T0);
    assert_eq!(line["Function"], "kommo-webhook", "the dimension's value is on the line");
    assert_eq!(
        (&line["Route"], &line["Status"]),
        (&serde_json::json!("/kommo/webhook/{scope_id}"), &serde_json::json!(500))
    );
    for line in &lines {
        assert!(!line.contains("conv-") && !line.contains("manager-1"), "no ids, no content: {line}");
    }
    // Each of the three requests is one event, by kind and outcome.
    let events: Vec<Vec<(String, String)>> =
        named(&observed(&sim), "Events").into_iter().map(|o| o.dimensions.clone()).collect();
    assert_eq!(
        events,
        vec![
            dims(&[("Kind", "manager_typing"), ("Outcome", "accepted")]),
            dims(&[("Kind", "chat_event"), ("Outcome", "refused")]),
            dims(&[("Kind", "manager_typing"), ("Outcome", "failed")]),
        ]
    );
}

/// A day in miniature: a manager types and stops, sends a message the client reads, the client
/// writes, a replay is refused, and a message the chat service never takes is given up. Every
/// metric of the table is emitted, each with what happened.
#[tokio::test]
async fn a_run_emits_every_metric_with_its_unit_dimensions_and_values() {
    let sim = Sim::new();
    // A manager's typing, lapsing: typing.stopped 1 s (the grace) after Kommo's expired_at.
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
    sim.advance_to(T0 + 10_000).await;
    // A manager's message, relayed at once, then read by the client.
    assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-1")).await.status(), 200);
    sim.advance_to(T0 + 11_000).await;
    assert_eq!(sim.chat_event(&status_event("kommo-1", "read", "")).await.status(), 200);
    // A client's message, imported, and the same webhook-id again.
    let message = client_message("conv-1", "chat-1");
    assert_eq!(sim.chat_event_with_id("msg_metrics", &message).await.status(), 200);
    assert_eq!(sim.chat_event_with_id("msg_metrics", &message).await.status(), 200);
    sim.advance_to(T0 + 20_000).await;
    // A manager's message the chat service never takes: dead-lettered, 903 to Kommo.
    let outage = (0..20).map(|_| ChatError::Unavailable { attempts: 1, status: Some(503), reason: "HTTP 503".into() });
    sim.chat.fail_next(outage);
    assert_eq!(sim.kommo_webhook(&manager_message("conv-1", "manager-1", "kommo-2")).await.status(), 200);
    sim.advance_to(T0 + 3_600_000).await;

    let all = observed(&sim);
    let names: BTreeSet<&str> = all.iter().map(|o| o.name.as_str()).collect();
    // An install not connected in time is not part of this day (tests/installs.rs makes one).
    let elsewhere = ["ServerErrors", "InstallsConnecting"];
    let every: BTreeSet<&str> =
        METRICS.iter().map(|(name, _, _)| *name).filter(|name| !elsewhere.contains(name)).collect();
    assert_eq!(names, every, "every metric but ServerErrors (above) and InstallsConnecting is emitted");
    let connecting = read(&shared::app::metrics::observation(&shared::ports::metrics::Metric::InstallConnecting, T0));
    assert_eq!((connecting.name.as_str(), connecting.dimensions.len(), connecting.value), ("InstallsConnecting", 0, 1));

    let lag = named(&all, "TypingStopLag");
    assert_eq!(lag.len(), 1, "{lag:?}");
    assert_eq!(lag[0].value, 1000, "the stop went out at the lease's end, the grace after Kommo's expired_at");
    let relays: Vec<(String, i64)> =
        named(&all, "RelayLatency").iter().map(|o| (o.dimensions[0].1.clone(), o.value)).collect();
    let to_chat: Vec<i64> = relays.iter().filter(|(peer, _)| peer == "chat_service").map(|(_, ms)| *ms).collect();
    assert_eq!(to_chat, vec![0], "kommo-1, relayed at once; kommo-2 never arrived");
    assert_eq!(relays.iter().filter(|(peer, _)| peer == "amojo").count(), 1, "imported once: {relays:?}");
    let statuses: BTreeSet<String> =
        named(&all, "StatusesReported").iter().map(|o| o.dimensions[0].1.clone()).collect();
    assert!(statuses.contains("read") && statuses.contains("903"), "{statuses:?}");
    let dead = named(&all, "DeadLetters");
    assert_eq!(dead.len(), 1, "kommo-2, once: {dead:?}");
    let calls = |peer: &str, outcome: &str| {
        all.iter()
            .filter(|o| o.name == "OutboundCalls" && o.dimensions == dims(&[("Peer", peer), ("Outcome", outcome)]))
            .count()
    };
    assert!(calls("chat_service", "ok") >= 3, "typing.started, typing.stopped, kommo-1");
    assert!(calls("chat_service", "unavailable") >= 2, "kommo-2's attempts");
    assert!(calls("amojo", "ok") >= 3, "the import, the read, the 903");
    let outcomes: BTreeSet<String> = named(&all, "Events").iter().map(|o| o.dimensions[1].1.clone()).collect();
    assert_eq!(outcomes, ["accepted", "duplicate"].map(String::from).into(), "the replay is a duplicate");
    // The Kommo webhooks and chat events above, one line each: none missed, none twice.
    assert_eq!(named(&all, "Events").len(), 6);
}

/// Every call out is counted by how it ended: a 4xx refused, anything that may go better later
/// (5xx, timeout, unreachable, a 2xx that could not be read) unavailable.
#[tokio::test]
async fn calls_out_are_counted_by_peer_and_outcome() {
    use std::sync::{Arc, Mutex};

    use shared::adapters::metered::{MeteredKommo, MeteredKommoRest};
    use shared::ports::accounts::{KommoRest, KommoRestError};
    use shared::ports::kommo::{KommoApi, KommoError};
    use shared::ports::metrics::{CallOutcome, Metric, Metrics, Peer};
    use shared::testing::{RecordingKommo, RecordingKommoRest};

    #[derive(Default)]
    struct Recorded(Mutex<Vec<Metric>>);
    impl Metrics for Recorded {
        fn record(&self, metric: Metric) {
            self.0.lock().unwrap().push(metric);
        }
    }
    let recorded = Arc::new(Recorded::default());
    let call = |peer, outcome| Metric::OutboundCall { peer, outcome };

    let rest = Arc::new(RecordingKommoRest::new());
    let metered = MeteredKommoRest { inner: rest.clone(), metrics: recorded.clone() };
    assert!(metered.exchange_code("acme.kommo.com", "code-1").await.is_ok());
    rest.fail_next(KommoRestError::Refused { status: 400, detail: "revoked".into() });
    assert!(metered.exchange_code("acme.kommo.com", "code-2").await.is_err());
    rest.fail_next(KommoRestError::InvalidResponse("not JSON".into()));
    assert!(metered.refresh("acme.kommo.com", "refresh-1").await.is_err());

    let clock: Arc<dyn shared::time::Clock> = Arc::new(shared::testing::ManualClock::at_ms(T0));
    let amojo = Arc::new(RecordingKommo::new(clock));
    let metered = MeteredKommo { inner: amojo.clone(), metrics: recorded.clone() };
    let typing = || shared::models::kommo::TypingRequest {
        conversation_id: "conv-1".into(),
        sender: shared::models::kommo::SenderRef { id: "client-1".into() },
    };
    assert!(metered.typing(SCOPE, &typing()).await.is_ok());
    amojo.fail_next([
        KommoError::Rejected { status: 400, error_type: "bad".into(), description: "no".into() },
        KommoError::Unavailable { attempts: 2, status: None, reason: "timed out".into(), retry_after: None },
    ]);
    assert!(metered.typing(SCOPE, &typing()).await.is_err());
    assert!(metered.typing(SCOPE, &typing()).await.is_err());

    use CallOutcome::{Ok as Took, Refused, Unavailable};
    assert_eq!(
        *recorded.0.lock().unwrap(),
        vec![
            call(Peer::KommoApi, Took),
            call(Peer::KommoApi, Refused),
            call(Peer::KommoApi, Unavailable),
            call(Peer::Amojo, Took),
            call(Peer::Amojo, Refused),
            call(Peer::Amojo, Unavailable),
        ]
    );
}

/// The dashboard and alarms in infra/template.yaml read these metrics by name, dimensions and
/// values: each one they name must be one the functions write, as written, and the dashboard
/// shows every metric. Read from the template's text, so a renamed metric or value fails here.
#[test]
fn the_template_reads_the_metrics_as_the_functions_write_them() {
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/template.yaml"))
        .expect("infra/template.yaml is readable");
    let lines: Vec<&str> = template.lines().collect();
    let known = |name: &str| METRICS.iter().find(|(known, _, _)| *known == name);
    // Alarms: `Namespace: KommoBridge`, then `MetricName` and `{Name: …, Value: …}` dimensions.
    let mut alarmed = 0;
    for (at, line) in lines.iter().enumerate() {
        if line.trim() != "Namespace: KommoBridge" {
            continue;
        }
        let name = lines[at + 1].trim().strip_prefix("MetricName: ").expect("MetricName after the namespace");
        let (_, _, dimensions) = known(name).unwrap_or_else(|| panic!("line {}: {name} is not written", at + 2));
        let mut named = Vec::new();
        for dimension in lines[at + 2..].iter().skip(1).take_while(|l| l.trim_start().starts_with("- {Name:")) {
            let inner = dimension.trim().trim_start_matches("- {").trim_end_matches('}');
            let (key, value) = inner.split_once(", Value: ").expect("{Name: …, Value: …}");
            let key = key.trim_start_matches("Name: ");
            let (_, allowed) =
                dimensions.iter().find(|(d, _)| *d == key).unwrap_or_else(|| panic!("{name} has no {key}"));
            assert!(allowed.contains(&value), "line {}: {name} {key} = {value} is never written", at + 1);
            named.push(key);
        }
        let wanted: Vec<&str> = dimensions.iter().map(|(d, _)| *d).collect();
        assert_eq!(named, wanted, "line {}: {name} is written with exactly these dimensions", at + 1);
        alarmed += 1;
    }
    assert!(alarmed >= 8, "the alarms on the bridge's metrics were found ({alarmed})");
    // The dashboard: `["KommoBridge", name, dimension, value, …]` and SEARCH expressions.
    let mut shown = BTreeSet::new();
    for (at, line) in lines.iter().enumerate() {
        for part in line.split("[\"KommoBridge\", ").skip(1) {
            let fields: Vec<&str> = part.split(", ").map(|f| f.trim_matches(|c| c == '"' || c == ']')).collect();
            let (_, _, dimensions) =
                known(fields[0]).unwrap_or_else(|| panic!("line {}: {} is not written", at + 1, fields[0]));
            for pair in fields[1..].chunks(2).take(dimensions.len()) {
                let (_, allowed) = dimensions.iter().find(|(d, _)| *d == pair[0]).expect("a dimension the metric has");
                assert!(
                    allowed.contains(&pair[1]),
                    "line {}: {} {} = {} is never written",
                    at + 1,
                    fields[0],
                    pair[0],
                    pair[1]
                );
            }
            shown.insert(fields[0].to_owned());
        }
        for part in line.split("SEARCH('{KommoBridge,").skip(1) {
            let (set, rest) = part.split_once('}').expect("a dimension set");
            let name = rest.split("MetricName=\\\"").nth(1).and_then(|r| r.split('\\').next()).expect("a MetricName");
            let (_, _, dimensions) = known(name).unwrap_or_else(|| panic!("line {}: {name} is not written", at + 1));
            let wanted: Vec<&str> = dimensions.iter().map(|(d, _)| *d).collect();
            assert_eq!(set.split(',').collect::<Vec<_>>(), wanted, "line {}: {name}'s dimension set", at + 1);
            shown.insert(name.to_owned());
        }
    }
    let every: BTreeSet<String> = METRICS.iter().map(|(name, _, _)| name.to_string()).collect();
    assert_eq!(shown, every, "the dashboard shows every metric the functions write");
}
