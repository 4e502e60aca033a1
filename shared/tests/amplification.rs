//! What one inbound event costs downstream, counted through the real handlers: store reads and
//! writes, queued work (one SQS message and one `typing-expiry` run each), calls to amojo and
//! to the chat service; and from those counts the AWS cost per million events.
//!
//! Each figure is marginal: the event after its setup, both run until every timer they start
//! has fired (typing leases lapsed, presence windows closed), minus the setup alone. The
//! counts are asserted, so amplification cannot grow unnoticed; the table prints with
//! `cargo test -p shared --test amplification -- --nocapture` (copied into the README).

mod support;

use shared::ports::store::Store;
use support::*;

/// Long enough for every timer an event starts to fire (presence windows are the longest).
const SETTLE_MS: i64 = 30 * 60 * 1000;

#[derive(Clone)]
enum Step {
    Kommo(String),
    Chat(String),
    Ui(&'static str, &'static str, &'static str),
    Wait(i64),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    reads: u64,
    writes: u64,
    queued: u64,
    amojo: u64,
    chat: u64,
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
        }
    }
}

async fn run(steps: &[Step]) -> Counts {
    let sim = Sim::new();
    // The scope gate reads the scope's state at most once a minute per instance, not per event:
    // a webhook the bridge ignores pays that read before what is measured.
    let warm_up = sim.kommo_webhook(r#"{"account_id":"acc-1","time":1}"#).await;
    assert_eq!(warm_up.status(), 200);
    let mut at = sim.now();
    for step in steps {
        let status = match step {
            Step::Kommo(body) => sim.kommo_webhook(body).await.status(),
            Step::Chat(body) => sim.chat_event(body).await.status(),
            Step::Ui(method, path, body) => sim.ui(method, path, Some(sim.token(42)), body).await.status(),
            Step::Wait(ms) => {
                at += ms;
                sim.advance_to(at).await;
                continue;
            }
        };
        assert_eq!(status, 200, "every step is accepted");
    }
    sim.advance_to(at + SETTLE_MS).await;
    let ops = sim.store.op_counts();
    Counts {
        reads: ops.reads,
        writes: ops.writes,
        queued: sim.due_runs(),
        amojo: sim.kommo.calls().len() as u64,
        chat: sim.chat.events().len() as u64,
    }
}

/// The cost of `event` after `setup`.
async fn marginal(setup: &[Step], event: Step) -> Counts {
    let mut with_event = setup.to_vec();
    with_event.push(event);
    run(&with_event).await - run(setup).await
}

/// US East (N. Virginia) list prices, read on 2026-11-27 from AWS's pricing pages for Lambda,
/// DynamoDB (on-demand, after the November 2024 reduction), SQS and API Gateway.
mod price {
    pub const HTTP_API_REQUEST: f64 = 1.00 / 1e6;
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    pub const LAMBDA_ARM_GB_SECOND: f64 = 0.000_013_333_4;
    pub const DYNAMODB_WRITE_UNIT: f64 = 0.625 / 1e6;
    pub const DYNAMODB_READ_UNIT: f64 = 0.125 / 1e6;
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
}

/// The function's memory (infra/template.yaml) and a model of billed time per invocation: the
/// handler's own microseconds are negligible; each DynamoDB or SQS call in the region is about
/// 6 ms, each call out to amojo or the chat service about 60 ms, and Lambda bills whole ms.
const MEMORY_GB: f64 = 128.0 / 1024.0;
const MS_PER_AWS_CALL: f64 = 6.0;
const MS_PER_OUTBOUND_CALL: f64 = 60.0;
const MS_PER_INVOCATION: f64 = 1.0;

/// Dollars per million events of a kind that arrives over HTTP and causes `counts`.
fn cost_per_million(counts: Counts) -> f64 {
    let invocations = 1.0 + counts.queued as f64;
    // Each queued piece of work: SendMessage, then the event source's ReceiveMessage and
    // DeleteMessage (an upper bound: both are batched under load).
    let sqs_requests = 3.0 * counts.queued as f64;
    let aws_calls = (counts.reads + counts.writes + counts.queued) as f64;
    let billed_ms = invocations * MS_PER_INVOCATION
        + aws_calls * MS_PER_AWS_CALL
        + (counts.amojo + counts.chat) as f64 * MS_PER_OUTBOUND_CALL;
    let per_event = price::HTTP_API_REQUEST
        + invocations * price::LAMBDA_REQUEST
        + billed_ms / 1000.0 * MEMORY_GB * price::LAMBDA_ARM_GB_SECOND
        // Items are under 1 KB; reads are strongly consistent (one read unit each).
        + counts.writes as f64 * price::DYNAMODB_WRITE_UNIT
        + counts.reads as f64 * price::DYNAMODB_READ_UNIT
        + sqs_requests * price::SQS_REQUEST;
    per_event * 1e6
}

#[tokio::test]
async fn each_event_kind_costs_what_the_table_says() {
    let typing_at = |s: i64| manager_typing("conv-1", "manager-1", T0 / 1000 + s);
    let manager_msg = || manager_message("conv-1", "manager-1", "kommo-1");
    let ui_presence = "/kommo/ui/conversations/conv-1/presence";
    let kinds: Vec<(&str, Vec<Step>, Step, Counts)> = vec![
        (
            "manager typing webhook, new lease (with its stop)",
            vec![],
            Step::Kommo(typing_at(5)),
            Counts { reads: 3, writes: 6, queued: 2, amojo: 0, chat: 2 },
        ),
        (
            "manager typing webhook, refresh (every 5 s)",
            vec![Step::Kommo(typing_at(5)), Step::Wait(4000)],
            Step::Kommo(typing_at(9)),
            Counts { reads: 1, writes: 2, queued: 1, amojo: 0, chat: 0 },
        ),
        (
            "manager message webhook (relayed, then delivered)",
            vec![],
            Step::Kommo(manager_msg()),
            Counts { reads: 1, writes: 6, queued: 1, amojo: 0, chat: 1 },
        ),
        (
            "client typing.started, new lease (with its refreshes)",
            vec![],
            Step::Chat(client_typing("typing.started", "conv-1", None)),
            Counts { reads: 2, writes: 3, queued: 2, amojo: 2, chat: 0 },
        ),
        (
            "client typing.started, within the lease",
            vec![Step::Chat(client_typing("typing.started", "conv-1", None)), Step::Wait(1000)],
            Step::Chat(client_typing("typing.started", "conv-1", None)),
            Counts { reads: 0, writes: 2, queued: 0, amojo: 0, chat: 0 },
        ),
        (
            "client message.created (imported into Kommo)",
            vec![],
            Step::Chat(client_message("conv-1", "chat-1")),
            Counts { reads: 2, writes: 6, queued: 2, amojo: 2, chat: 1 },
        ),
        (
            "message.status delivered",
            vec![Step::Kommo(manager_msg()), Step::Wait(1000)],
            Step::Chat(status_event("kommo-1", "delivered", "")),
            Counts { reads: 0, writes: 4, queued: 1, amojo: 1, chat: 0 },
        ),
        (
            "client presence.heartbeat, first (online until its window ends)",
            vec![],
            Step::Chat(presence_event("presence.heartbeat", "phone")),
            Counts { reads: 1, writes: 3, queued: 0, amojo: 0, chat: 0 },
        ),
        (
            "client presence.heartbeat, coalesced (every 15 s)",
            vec![Step::Chat(presence_event("presence.heartbeat", "phone")), Step::Wait(15_000)],
            Step::Chat(presence_event("presence.heartbeat", "phone")),
            Counts { reads: 1, writes: 1, queued: 0, amojo: 0, chat: 0 },
        ),
        (
            "Kommo UI heartbeat, manager viewing (every 15 s)",
            vec![Step::Ui("POST", ui_presence, r#"{"state":"viewing"}"#), Step::Wait(15_000)],
            Step::Ui("POST", ui_presence, r#"{"state":"viewing"}"#),
            Counts { reads: 2, writes: 0, queued: 0, amojo: 0, chat: 0 },
        ),
        (
            "Kommo UI presence read (GET)",
            vec![],
            Step::Ui("GET", ui_presence, ""),
            Counts { reads: 1, writes: 0, queued: 0, amojo: 0, chat: 0 },
        ),
    ];
    println!(
        "{:<62} {:>5} {:>6} {:>6} {:>6} {:>5} {:>10}",
        "per inbound event", "reads", "writes", "queued", "amojo", "chat", "$ per 1M"
    );
    let mut measured = Vec::new();
    for (name, setup, event, _) in &kinds {
        let counts = marginal(setup, event.clone()).await;
        println!(
            "{name:<62} {:>5} {:>6} {:>6} {:>6} {:>5} {:>10.2}",
            counts.reads,
            counts.writes,
            counts.queued,
            counts.amojo,
            counts.chat,
            cost_per_million(counts)
        );
        measured.push(counts);
    }
    for ((name, _, _, expected), counts) in kinds.iter().zip(measured) {
        assert_eq!(&counts, expected, "{name}");
    }
}
