//! Metrics as CloudWatch's embedded metric format (EMF): one JSON line on stdout per record,
//! which CloudWatch Logs turns into a metric, with no API call per event.
//!
//! `ServerErrors` (Count, by `Function`): every 5xx the bridge answers. Driven through the
//! Lambda Runtime API, a bridge that cannot reach its table answers HTTP 500 as a normal
//! response, which Lambda's own `Errors` metric does not count; this one does, and the
//! template alarms on it for both HTTP functions. The route template and the status are
//! properties of the line (searchable in Logs Insights), not dimensions: a dimension per route
//! would multiply the metrics billed.

use serde_json::json;

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

/// The EMF line of one 5xx answer of `function` on `route` (a route template, never a path
/// with ids in it).
pub fn server_error(function: &str, route: &str, status: u16, timestamp_ms: i64) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": [{"Name": "ServerErrors", "Unit": "Count"}],
            }],
        },
        "Function": function,
        "Route": route,
        "Status": status,
        "ServerErrors": 1,
    })
    .to_string()
}
