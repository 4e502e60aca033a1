//! What the bridge costs to run, from one table: what each kind of inbound event causes
//! downstream (store reads and writes, queued work, calls out), measured through the real
//! handlers and asserted by `tests/amplification.rs` (this crate), so the table here cannot drift
//! from the code. `bridge-cli cost` and the cost tables in docs/performance-and-cost.md are computed from it.
//!
//! Prices are list prices, and billed time is a model, not a measurement in AWS (below).

pub mod profile;

/// What one inbound event causes, marginally (the event after its setup, run until every
/// timer it starts has fired, minus the setup alone).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Strongly consistent reads: one read unit each (items are under 1 KB).
    pub reads: u64,
    /// Writes, conditional ones that fail included (DynamoDB bills them): one write unit each.
    pub writes: u64,
    /// Pieces of queued work: one SQS message and one `typing-expiry` invocation each.
    pub queued: u64,
    /// Calls to amojo (Kommo's Chat API).
    pub amojo: u64,
    /// Calls to the chat service.
    pub chat: u64,
    /// Bytes written to CloudWatch Logs at the template's levels (application INFO, platform
    /// WARN): the metric lines and the INFO log lines, each with the 26 bytes CloudWatch Logs
    /// counts per log event. Measured, and asserted within [`LOG_BYTES_TOLERANCE`]: log wording
    /// may change a little without a new table.
    pub log_bytes: u64,
}

/// How far a measured [`Counts::log_bytes`] may be from the table's.
pub const LOG_BYTES_TOLERANCE: f64 = 0.15;

/// What CloudWatch Logs counts per log event beyond its message.
pub const LOG_EVENT_OVERHEAD_BYTES: u64 = 26;

impl Counts {
    /// Equal but for log bytes, which must be within [`LOG_BYTES_TOLERANCE`] of `table`'s.
    pub fn matches(&self, table: &Counts) -> bool {
        let exact = Counts { log_bytes: table.log_bytes, ..*self } == *table;
        let allowed = (table.log_bytes as f64 * LOG_BYTES_TOLERANCE).max(64.0);
        exact && (self.log_bytes as f64 - table.log_bytes as f64).abs() <= allowed
    }
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, before: Counts) -> Counts {
        Counts {
            reads: self.reads - before.reads,
            writes: self.writes - before.writes,
            queued: self.queued - before.queued,
            amojo: self.amojo - before.amojo,
            chat: self.chat - before.chat,
            log_bytes: self.log_bytes - before.log_bytes,
        }
    }
}

/// The kinds of inbound event the cost model knows, each with its measured [`Counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Kommo's manager-typing webhook that starts a lease (with the `typing.started` and the
    /// `typing.stopped` it causes).
    ManagerTypingStart,
    /// Kommo's manager-typing webhook re-sent every 5 s while the manager types.
    ManagerTypingRefresh,
    /// A manager's message, relayed to the chat service and reported delivered to Kommo.
    ManagerMessage,
    /// A client's `typing.started` that starts a lease (with its refreshes in Kommo).
    ClientTypingStart,
    /// A client's `typing.started` while its lease lives.
    ClientTypingWithinLease,
    /// A client's message, imported into Kommo and told delivered to the chat service.
    ClientMessage,
    /// A `message.status` delivered for a manager's message.
    MessageStatus,
    /// A `message.status` read, after its delivered.
    MessageStatusRead,
    /// A client's `typing.started` that keeps Kommo's indicator up another 4 s (its write and
    /// the refresh to Kommo it brings): the one in every four seconds of a long burst.
    ClientTypingKeptUp,
    /// A client's `typing.stopped`.
    ClientTypingStopped,
    /// A client's `presence.offline`.
    ClientPresenceOffline,
    /// The Kommo UI telling a manager left a conversation.
    UiLeft,
    /// The Kommo UI marking a conversation's messages read as a manager opens it.
    UiRead,
    /// A client's first `presence.heartbeat` (online until its window ends).
    ClientHeartbeatFirst,
    /// A client's `presence.heartbeat` while already online (every 15 s).
    ClientHeartbeatCoalesced,
    /// The Kommo UI's heartbeat while a manager views a conversation (every 15 s).
    UiViewingHeartbeat,
    /// The Kommo UI reading a conversation's presence.
    UiPresenceRead,
}

/// Every kind, with what the docs and `bridge-cli cost` call it and what it costs. The
/// amplification test measures each row and fails when one differs.
pub const EVENT_COUNTS: &[(EventKind, &str, Counts)] = &[
    (
        EventKind::ManagerTypingStart,
        "manager typing webhook, new lease (with its stop)",
        Counts { reads: 4, writes: 7, queued: 2, amojo: 0, chat: 2, log_bytes: 1000 },
    ),
    (
        EventKind::ManagerTypingRefresh,
        "manager typing webhook, refresh (every 5 s)",
        Counts { reads: 1, writes: 1, queued: 1, amojo: 0, chat: 0, log_bytes: 247 },
    ),
    (
        EventKind::ManagerMessage,
        "manager message webhook (relayed, then delivered)",
        Counts { reads: 1, writes: 6, queued: 1, amojo: 0, chat: 1, log_bytes: 2339 },
    ),
    (
        EventKind::ClientTypingStart,
        "client typing.started, new lease (with its refreshes)",
        Counts { reads: 4, writes: 3, queued: 2, amojo: 2, chat: 0, log_bytes: 739 },
    ),
    (
        EventKind::ClientTypingWithinLease,
        "client typing.started, within the lease",
        Counts { reads: 0, writes: 1, queued: 0, amojo: 0, chat: 0, log_bytes: 247 },
    ),
    (
        EventKind::ClientMessage,
        "client message.created (imported into Kommo)",
        Counts { reads: 2, writes: 8, queued: 2, amojo: 2, chat: 1, log_bytes: 2233 },
    ),
    (
        EventKind::MessageStatus,
        "message.status delivered",
        Counts { reads: 0, writes: 5, queued: 1, amojo: 1, chat: 0, log_bytes: 1613 },
    ),
    (
        EventKind::ClientHeartbeatFirst,
        "client presence.heartbeat, first (online until its window ends)",
        Counts { reads: 1, writes: 2, queued: 0, amojo: 0, chat: 0, log_bytes: 251 },
    ),
    (
        EventKind::ClientHeartbeatCoalesced,
        "client presence.heartbeat, coalesced (every 15 s)",
        Counts { reads: 1, writes: 0, queued: 0, amojo: 0, chat: 0, log_bytes: 251 },
    ),
    (
        EventKind::UiViewingHeartbeat,
        "Kommo UI heartbeat, manager viewing (every 15 s)",
        Counts { reads: 2, writes: 0, queued: 0, amojo: 0, chat: 0, log_bytes: 243 },
    ),
    (
        EventKind::MessageStatusRead,
        "message.status read (after delivered)",
        Counts { reads: 0, writes: 5, queued: 1, amojo: 1, chat: 0, log_bytes: 1608 },
    ),
    (
        EventKind::ClientTypingKeptUp,
        "client typing.started keeping Kommo's indicator up (every 4 s)",
        Counts { reads: 2, writes: 2, queued: 1, amojo: 1, chat: 0, log_bytes: 493 },
    ),
    (
        EventKind::ClientTypingStopped,
        "client typing.stopped",
        Counts { reads: 0, writes: 1, queued: 0, amojo: 0, chat: 0, log_bytes: 247 },
    ),
    (
        EventKind::ClientPresenceOffline,
        "client presence.offline",
        Counts { reads: 0, writes: 1, queued: 0, amojo: 0, chat: 0, log_bytes: 249 },
    ),
    (
        EventKind::UiLeft,
        "Kommo UI left (a conversation closed)",
        Counts { reads: 4, writes: 2, queued: 1, amojo: 0, chat: 0, log_bytes: 240 },
    ),
    (
        EventKind::UiRead,
        "Kommo UI read (a conversation opened)",
        Counts { reads: 2, writes: 0, queued: 0, amojo: 0, chat: 0, log_bytes: 240 },
    ),
    (
        EventKind::UiPresenceRead,
        "Kommo UI presence read (GET)",
        Counts { reads: 1, writes: 0, queued: 0, amojo: 0, chat: 0, log_bytes: 251 },
    ),
];

/// What `kind` costs downstream, from [`EVENT_COUNTS`].
pub fn counts(kind: EventKind) -> Counts {
    EVENT_COUNTS.iter().find(|(k, _, _)| *k == kind).map(|(_, _, counts)| *counts).expect("every kind has a row")
}

/// How requests reach the functions (the template's `EndpointType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// API Gateway's HTTP API: a per-request charge, throttling, a custom domain.
    HttpApi,
    /// Lambda function URLs: no per-request charge beyond Lambda's own.
    FunctionUrl,
}

/// List prices in dollars. The defaults are US East (N. Virginia), read on 2026-11-27 from
/// AWS's pricing pages for Lambda, DynamoDB (on demand, after the November 2024 reduction),
/// SQS, API Gateway and CloudWatch; another region's are given as flags to `bridge-cli cost`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prices {
    pub http_api_per_million: f64,
    pub lambda_requests_per_million: f64,
    pub lambda_arm_gb_second: f64,
    pub dynamodb_writes_per_million: f64,
    pub dynamodb_reads_per_million: f64,
    pub sqs_requests_per_million: f64,
    /// CloudWatch Logs ingestion (standard class), per GB.
    pub logs_ingested_per_gb: f64,
    /// CloudWatch custom metrics, per metric a month (the first 10,000 tier).
    pub custom_metric_per_month: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Self {
            http_api_per_million: 1.00,
            lambda_requests_per_million: 0.20,
            lambda_arm_gb_second: 0.000_013_333_4,
            dynamodb_writes_per_million: 0.625,
            dynamodb_reads_per_million: 0.125,
            sqs_requests_per_million: 0.40,
            logs_ingested_per_gb: 0.50,
            custom_metric_per_month: 0.30,
        }
    }
}

/// The functions' memory (infra/template.yaml, `MemorySize`).
pub const MEMORY_GB: f64 = 128.0 / 1024.0;
/// Billed time is modelled: the handler's own microseconds are negligible (Lambda bills whole
/// ms); each DynamoDB or SQS call in the region is about 6 ms; each call out to amojo or the
/// chat service about 60 ms.
pub const MS_PER_INVOCATION: f64 = 1.0;
pub const MS_PER_AWS_CALL: f64 = 6.0;
pub const MS_PER_OUTBOUND_CALL: f64 = 60.0;
/// Each queued piece of work: SendMessage, then the event source's ReceiveMessage and
/// DeleteMessage (an upper bound: both are batched under load).
pub const SQS_REQUESTS_PER_QUEUED: f64 = 3.0;

/// The HTTP API's access log line per request (the template's format, filled in: about 330
/// bytes) and CloudWatch's per-event overhead. Function URLs write none.
pub const ACCESS_LOG_BYTES_PER_REQUEST: u64 = 330 + LOG_EVENT_OVERHEAD_BYTES;

/// Dollars per event, by AWS service.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ByService {
    pub api_gateway: f64,
    pub lambda: f64,
    pub dynamodb: f64,
    pub sqs: f64,
    pub cloudwatch_logs: f64,
}

impl ByService {
    pub fn total(&self) -> f64 {
        self.api_gateway + self.lambda + self.dynamodb + self.sqs + self.cloudwatch_logs
    }

    pub fn scaled(&self, factor: f64) -> ByService {
        ByService {
            api_gateway: self.api_gateway * factor,
            lambda: self.lambda * factor,
            dynamodb: self.dynamodb * factor,
            sqs: self.sqs * factor,
            cloudwatch_logs: self.cloudwatch_logs * factor,
        }
    }
}

impl std::ops::Add for ByService {
    type Output = ByService;
    fn add(self, other: ByService) -> ByService {
        ByService {
            api_gateway: self.api_gateway + other.api_gateway,
            lambda: self.lambda + other.lambda,
            dynamodb: self.dynamodb + other.dynamodb,
            sqs: self.sqs + other.sqs,
            cloudwatch_logs: self.cloudwatch_logs + other.cloudwatch_logs,
        }
    }
}

/// What one inbound HTTP event that causes `counts` costs, by service.
pub fn per_event(counts: Counts, endpoint: Endpoint, prices: &Prices) -> ByService {
    let invocations = 1.0 + counts.queued as f64;
    let access_log_bytes = match endpoint {
        Endpoint::HttpApi => ACCESS_LOG_BYTES_PER_REQUEST,
        Endpoint::FunctionUrl => 0,
    };
    let aws_calls = (counts.reads + counts.writes + counts.queued) as f64;
    let billed_ms = invocations * MS_PER_INVOCATION
        + aws_calls * MS_PER_AWS_CALL
        + (counts.amojo + counts.chat) as f64 * MS_PER_OUTBOUND_CALL;
    ByService {
        api_gateway: match endpoint {
            Endpoint::HttpApi => prices.http_api_per_million / 1e6,
            Endpoint::FunctionUrl => 0.0,
        },
        lambda: invocations * prices.lambda_requests_per_million / 1e6
            + billed_ms / 1000.0 * MEMORY_GB * prices.lambda_arm_gb_second,
        dynamodb: counts.writes as f64 * prices.dynamodb_writes_per_million / 1e6
            + counts.reads as f64 * prices.dynamodb_reads_per_million / 1e6,
        sqs: counts.queued as f64 * SQS_REQUESTS_PER_QUEUED * prices.sqs_requests_per_million / 1e6,
        cloudwatch_logs: (counts.log_bytes + access_log_bytes) as f64 / 1e9 * prices.logs_ingested_per_gb,
    }
}

/// Dollars per million events of `kind`.
pub fn per_million(kind: EventKind, endpoint: Endpoint, prices: &Prices) -> f64 {
    per_event(counts(kind), endpoint, prices).total() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_row() {
        for (kind, _, _) in EVENT_COUNTS {
            assert_eq!(EVENT_COUNTS.iter().filter(|(k, _, _)| k == kind).count(), 1, "{kind:?}");
        }
    }

    #[test]
    fn a_function_url_saves_the_http_api_request_and_its_access_log_line() {
        let prices = Prices::default();
        for (kind, _, _) in EVENT_COUNTS {
            let saved =
                per_million(*kind, Endpoint::HttpApi, &prices) - per_million(*kind, Endpoint::FunctionUrl, &prices);
            let access_log = ACCESS_LOG_BYTES_PER_REQUEST as f64 / 1e9 * prices.logs_ingested_per_gb * 1e6;
            assert!((saved - 1.00 - access_log).abs() < 1e-9, "{kind:?}: {saved}");
        }
    }

    #[test]
    fn the_refresh_of_one_read_two_writes_and_one_queued_piece_costs_3_02_per_million() {
        // 1 read, 2 writes, 1 queued, logs not counted: $4.02 per million on the HTTP API,
        // $3.02 without the HTTP API's request (a figure worked by hand from the prices).
        let counts = Counts { reads: 1, writes: 2, queued: 1, amojo: 0, chat: 0, log_bytes: 0 };
        let cost = per_event(counts, Endpoint::FunctionUrl, &Prices::default());
        assert!((cost.total() * 1e6 - 3.02).abs() < 0.005, "{}", cost.total() * 1e6);
    }

    /// The target: the events that repeat all day cost at most half of what they cost with
    /// every signal remembered by `webhook-id` on the HTTP API (`before`), now with function
    /// URLs. The refresh gets to 62 %: each 5 s of a manager's typing needs its own look at the
    /// lease (a queued piece: an invocation and three SQS requests) or typing.stopped would come
    /// late; docs/performance-and-cost.md says so.
    #[test]
    fn steady_state_events_cost_half_of_what_they_did_with_function_urls() {
        let before = [
            (EventKind::ManagerTypingRefresh, 4.02, 0.65),
            (EventKind::ClientTypingWithinLease, 2.47, 0.5),
            (EventKind::ClientHeartbeatCoalesced, 1.97, 0.5),
            (EventKind::UiViewingHeartbeat, 1.47, 0.5),
        ];
        for (kind, was, share) in before {
            let now = per_million(kind, Endpoint::FunctionUrl, &Prices::default());
            assert!(now <= was * share, "{kind:?}: ${now:.2} per million, was ${was:.2}");
        }
    }
}
