//! What one inbound event costs downstream, counted through the real handlers: store reads and
//! writes, queued work (one SQS message and one `typing-expiry` run each), calls to amojo and
//! to the chat service; and from those counts the AWS cost per million events.
//!
//! Each figure is marginal: the event after its setup, both run until every timer they start
//! has fired (typing leases lapsed, presence windows closed), minus the setup alone. The
//! counts are asserted, so amplification cannot grow unnoticed; the table prints with
//! `cargo test -p cost-model --test amplification -- --nocapture` (docs/performance-and-cost.md).

use std::sync::{Mutex, Once};

use cost_model::{Counts, EVENT_COUNTS, Endpoint, EventKind, LOG_EVENT_OVERHEAD_BYTES, Prices, per_event};
use shared::ports::store::Store;
use shared::testing::sim::*;

/// Long enough for every timer an event starts to fire (presence windows are the longest).
const SETTLE_MS: i64 = 30 * 60 * 1000;

#[derive(Clone)]
enum Step {
    Kommo(String),
    Chat(String),
    Ui(&'static str, &'static str, &'static str),
    Wait(i64),
    /// Kommo has the conversation's chat (made by an earlier message): client typing goes only there.
    KommoHasChat,
}

/// What the functions log, captured as Lambda's JSON log format writes it, at INFO.
static LOGGED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct CapturedLogs;

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOGGED.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes of CloudWatch Logs: each line and the overhead CloudWatch counts per log event.
fn log_bytes<'a>(lines: impl Iterator<Item = &'a str>) -> u64 {
    lines.map(|line| line.len() as u64 + LOG_EVENT_OVERHEAD_BYTES).sum()
}

async fn run(steps: &[Step]) -> Counts {
    static SUBSCRIBER: Once = Once::new();
    // What lambda_runtime's subscriber does with the template's JSON format and INFO level.
    SUBSCRIBER.call_once(|| {
        tracing_subscriber::fmt().json().with_max_level(tracing::Level::INFO).with_writer(|| CapturedLogs).init()
    });
    LOGGED.lock().unwrap().clear();
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
            Step::KommoHasChat => {
                sim.kommo_has_chat("conv-1").await;
                continue;
            }
        };
        assert_eq!(status, 200, "every step is accepted");
    }
    sim.advance_to(at + SETTLE_MS).await;
    let logged = String::from_utf8(std::mem::take(&mut *LOGGED.lock().unwrap())).expect("UTF-8 log lines");
    let metric_lines = sim.metrics.lines();
    let ops = sim.store.op_counts();
    Counts {
        reads: ops.reads,
        writes: ops.writes,
        queued: sim.due_runs(),
        amojo: sim.kommo.calls().len() as u64,
        chat: sim.chat.events().len() as u64,
        log_bytes: log_bytes(logged.lines()) + log_bytes(metric_lines.iter().map(String::as_str)),
    }
}

/// The cost of `event` after `setup`.
async fn marginal(setup: &[Step], event: Step) -> Counts {
    let mut with_event = setup.to_vec();
    with_event.push(event);
    run(&with_event).await - run(setup).await
}

/// How each kind of event is driven: its setup, then the event measured.
fn scenario(kind: EventKind) -> (Vec<Step>, Step) {
    let typing_at = |s: i64| manager_typing("conv-1", "manager-1", T0 / 1000 + s);
    let manager_msg = || manager_message("conv-1", "manager-1", "kommo-1");
    let client_typing_started = || client_typing("typing.started", "conv-1", None);
    let heartbeat = || presence_event("presence.heartbeat", "phone");
    let ui_presence = "/kommo/ui/conversations/conv-1/presence";
    let viewing = || Step::Ui("POST", ui_presence, r#"{"state":"viewing"}"#);
    match kind {
        EventKind::ManagerTypingStart => (vec![], Step::Kommo(typing_at(5))),
        EventKind::ManagerTypingRefresh => {
            (vec![Step::Kommo(typing_at(5)), Step::Wait(4000)], Step::Kommo(typing_at(9)))
        }
        EventKind::ManagerMessage => (vec![], Step::Kommo(manager_msg())),
        EventKind::ClientTypingStart => (vec![Step::KommoHasChat], Step::Chat(client_typing_started())),
        EventKind::ClientTypingWithinLease => (
            vec![Step::KommoHasChat, Step::Chat(client_typing_started()), Step::Wait(1000)],
            Step::Chat(client_typing_started()),
        ),
        EventKind::ClientMessage => (vec![], Step::Chat(client_message("conv-1", "chat-1"))),
        EventKind::MessageStatus => {
            (vec![Step::Kommo(manager_msg()), Step::Wait(1000)], Step::Chat(status_event("kommo-1", "delivered", "")))
        }
        EventKind::ClientHeartbeatFirst => (vec![], Step::Chat(heartbeat())),
        EventKind::ClientHeartbeatCoalesced => {
            (vec![Step::Chat(heartbeat()), Step::Wait(15_000)], Step::Chat(heartbeat()))
        }
        EventKind::UiViewingHeartbeat => (vec![viewing(), Step::Wait(15_000)], viewing()),
        EventKind::UiPresenceRead => (vec![], Step::Ui("GET", ui_presence, "")),
        EventKind::MessageStatusRead => (
            vec![
                Step::Kommo(manager_msg()),
                Step::Wait(1000),
                Step::Chat(status_event("kommo-1", "delivered", "")),
                Step::Wait(1000),
            ],
            Step::Chat(status_event("kommo-1", "read", "")),
        ),
        // The lease (6 s) would lapse before the chain's next look at 8 s: extended now, it
        // brings one more call to Kommo.
        EventKind::ClientTypingKeptUp => (
            vec![Step::KommoHasChat, Step::Chat(client_typing_started()), Step::Wait(5500)],
            Step::Chat(client_typing_started()),
        ),
        // After the lease's last call to Kommo: the stop spares nothing.
        EventKind::ClientTypingStopped => (
            vec![Step::KommoHasChat, Step::Chat(client_typing_started()), Step::Wait(5500)],
            Step::Chat(client_typing("typing.stopped", "conv-1", None)),
        ),
        EventKind::ClientPresenceOffline => {
            (vec![Step::Chat(heartbeat()), Step::Wait(15_000)], Step::Chat(presence_event("presence.offline", "phone")))
        }
        EventKind::UiLeft => {
            (vec![viewing(), Step::Wait(15_000)], Step::Ui("POST", ui_presence, r#"{"state":"left"}"#))
        }
        EventKind::UiRead => (
            vec![Step::Kommo(manager_msg()), Step::Wait(1000)],
            Step::Ui("POST", "/kommo/ui/conversations/conv-1/read", ""),
        ),
    }
}

#[tokio::test]
async fn each_event_kind_costs_what_the_cost_table_says() {
    let prices = Prices::default();
    println!(
        "{:<62} {:>5} {:>6} {:>6} {:>6} {:>5} {:>9} {:>13} {:>12}",
        "per inbound event", "reads", "writes", "queued", "amojo", "chat", "log bytes", "$/1M HTTP API", "$/1M fn URL"
    );
    let mut measured = Vec::new();
    for (kind, name, _) in EVENT_COUNTS {
        let (setup, event) = scenario(*kind);
        let counts = marginal(&setup, event).await;
        println!(
            "{name:<62} {:>5} {:>6} {:>6} {:>6} {:>5} {:>9} {:>13.2} {:>12.2}",
            counts.reads,
            counts.writes,
            counts.queued,
            counts.amojo,
            counts.chat,
            counts.log_bytes,
            per_event(counts, Endpoint::HttpApi, &prices).total() * 1e6,
            per_event(counts, Endpoint::FunctionUrl, &prices).total() * 1e6,
        );
        measured.push(counts);
    }
    for ((_, name, expected), counts) in EVENT_COUNTS.iter().zip(measured) {
        assert!(counts.matches(expected), "{name}: measured {counts:?}, bench/cost-model/src/lib.rs says {expected:?}");
    }
}
