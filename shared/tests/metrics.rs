//! The metric lines a run emits (CloudWatch's embedded metric format), read back and checked:
//! names, units, dimensions and properties, as CloudWatch would take them.

mod support;

use serde_json::Value;
use support::*;

#[tokio::test]
async fn every_5xx_the_bridge_answers_is_counted_and_nothing_else_is() {
    let sim = Sim::new();
    // Accepted, refused with a 4xx: no metric.
    assert_eq!(sim.kommo_webhook(&manager_typing("conv-1", "manager-1", T0 / 1000 + 5)).await.status(), 200);
    assert_eq!(sim.chat_event(r#"{"type":"typing.started"}"#).await.status(), 400);
    assert!(sim.metrics.lines().is_empty(), "{:?}", sim.metrics.lines());
    // The queue refusing: the bridge answers 500, as a normal response, which Lambda's own
    // Errors metric would not count.
    sim.queue.refuse_next.store(true, std::sync::atomic::Ordering::SeqCst);
    let failed = sim.kommo_webhook(&manager_typing("conv-2", "manager-1", T0 / 1000 + 5)).await;
    assert_eq!(failed.status(), 500);
    let lines = sim.metrics.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line: Value = serde_json::from_str(&lines[0]).expect("one JSON object a line");
    let emf = &line["_aws"];
    assert_eq!(emf["Timestamp"], T0);
    let directive = &emf["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "KommoBridge");
    assert_eq!(directive["Dimensions"], serde_json::json!([["Function"]]));
    assert_eq!(directive["Metrics"], serde_json::json!([{"Name": "ServerErrors", "Unit": "Count"}]));
    assert_eq!(line["Function"], "kommo-webhook", "the dimension's value is on the line");
    assert_eq!(line["ServerErrors"], 1);
    assert_eq!(
        (&line["Route"], &line["Status"]),
        (&serde_json::json!("/kommo/webhook/{scope_id}"), &serde_json::json!(500))
    );
    assert!(!lines[0].contains("conv-2") && !lines[0].contains("manager-1"), "no ids, no content: {}", lines[0]);
}
