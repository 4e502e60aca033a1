//! Handler time per inbound event, warm: the whole handler (signature check, parsing, the
//! store's conditional writes, scheduling) with the in-memory store and a null outbound side, so
//! the figure is the bridge's own CPU time, network excluded. Then the queued work some events
//! cause (a `typing-expiry` run each in AWS), timed alone: the lane's turn, the store's reads
//! and the send to the null outbound.
//!
//! Run: `cargo bench -p shared --bench handlers` (release profile; prints a table).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shared::adapters::memory::MemoryStore;
use shared::app::config::Config;
use shared::app::http::HttpRequest;
use shared::app::routes::EntryPoint;
use shared::app::{Bridge, Ports};
use shared::ports::timers::DueWork;
use shared::signing::kommo_webhook;
use shared::testing::ManualTimers;
use shared::testing::NullOutbound;
use shared::time::{Clock, SystemClock};

const SCOPE: &str = "local-channel_acc-1";

/// Builds the i-th request of a case, signed, before the timing starts.
type MakeRequest = dyn Fn(&Bridge, usize) -> (EntryPoint, HttpRequest);
const ITERATIONS: usize = 20_000;

/// What a case times: the handler answering a request, or the queued work (picked by the
/// predicate) that the request left behind, run after the untimed request.
enum Timed {
    Handler(Box<MakeRequest>),
    QueuedAfter(Box<MakeRequest>, fn(&DueWork) -> bool),
}

fn bridge(timers: Arc<ManualTimers>) -> Bridge {
    let (config, _) = Config::from_env_local(&|_| None, "http://127.0.0.1:9").expect("local defaults");
    Bridge::new(
        config,
        Ports {
            clock: Arc::new(SystemClock),
            store: Arc::new(MemoryStore::new()),
            kommo: Arc::new(NullOutbound),
            chat: Some(Arc::new(NullOutbound)),
            timers,
            installs: None,
            metric_lines: Arc::new(shared::app::metrics::Stdout),
        },
    )
}

fn kommo_request(bridge: &Bridge, body: String) -> (EntryPoint, HttpRequest) {
    let signature = kommo_webhook::sign(bridge.config.channel_secret.expose(), body.as_bytes());
    let request =
        http::Request::post(format!("/kommo/webhook/{SCOPE}")).header("x-signature", signature).body(Bytes::from(body));
    (EntryPoint::KommoWebhook, request.unwrap())
}

/// The chat service's event number `i`, under a `webhook-id` of its own (a repeated id is a replay).
fn chat_request(bridge: &Bridge, i: usize, body: String) -> (EntryPoint, HttpRequest) {
    let now = SystemClock.now_s();
    let webhook_id = format!("msg_bench_{i}");
    let signature =
        bridge.config.chat_service_secret.as_ref().expect("local secrets").sign(&webhook_id, now, body.as_bytes());
    let request = http::Request::post("/chat/events")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signature)
        .body(Bytes::from(body));
    (EntryPoint::ChatCallback, request.unwrap())
}

/// Times the `count` steps of a case (numbered from `first`); returns the sorted durations.
async fn measure(timed: &Timed, first: usize, count: usize) -> Vec<Duration> {
    let timers = Arc::new(ManualTimers::default());
    let bridge = bridge(timers.clone());
    let mut times = Vec::with_capacity(count);
    for i in first..first + count {
        let started = match timed {
            Timed::Handler(make) => {
                let (entry, request) = make(&bridge, i);
                let started = Instant::now();
                let response = bridge.handle(entry, request).await;
                assert_eq!(response.status(), 200, "{:?}", response.body());
                started
            }
            Timed::QueuedAfter(make, wanted) => {
                let (entry, request) = make(&bridge, i);
                assert_eq!(bridge.handle(entry, request).await.status(), 200);
                let work = timers.take_due(i64::MAX).into_iter().find(wanted).expect("the request queued the work");
                let started = Instant::now();
                bridge.dispatcher().expect("every side is wired").run(work).await.expect("the queued work runs");
                started
            }
        };
        times.push(started.elapsed());
        timers.take_due(i64::MAX); // what the step queued besides is not run
    }
    times.sort_unstable();
    times
}

fn report(name: &str, times: &[Duration]) {
    let percentile = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "| {name:<49} | {:>8.1} | {:>8.1} | {:>8.1} | {:>10.0} |",
        percentile(0.5).as_secs_f64() * 1e6,
        percentile(0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        1.0 / mean.as_secs_f64()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let expired_at = SystemClock.now_s() + 3600;
    let cases: Vec<(&str, Timed)> = vec![
        (
            "manager typing webhook, new lease",
            Timed::Handler(Box::new(move |b, i| {
                kommo_request(
                    b,
                    format!(
                        r#"{{"account_id":"acc-1","time":1,"action":{{"typing":{{"user":{{"id":"m-1"}},"conversation":{{"id":"k-{i}","client_id":"conv-{i}"}},"expired_at":{expired_at}}}}}}}"#
                    ),
                )
            })),
        ),
        (
            "manager typing webhook, refresh",
            Timed::Handler(Box::new(move |b, i| {
                kommo_request(
                    b,
                    format!(
                        r#"{{"account_id":"acc-1","time":1,"action":{{"typing":{{"user":{{"id":"m-1"}},"conversation":{{"id":"k-1","client_id":"conv-1"}},"expired_at":{}}}}}}}"#,
                        expired_at + i as i64
                    ),
                )
            })),
        ),
        (
            "client typing.started",
            Timed::Handler(Box::new(|b, i| {
                chat_request(
                    b,
                    i,
                    format!(
                        r#"{{"type":"typing.started","scope_id":"{SCOPE}","conversation_id":"conv-{}","user_id":"client-1"}}"#,
                        i % 100
                    ),
                )
            })),
        ),
        (
            "message.status (delivered)",
            Timed::Handler(Box::new(|b, i| {
                chat_request(
                    b,
                    i,
                    format!(
                        r#"{{"type":"message.status","scope_id":"{SCOPE}","reference":"kommo-{i}","status":"delivered"}}"#
                    ),
                )
            })),
        ),
        (
            "manager message webhook",
            Timed::Handler(Box::new(|b, i| {
                kommo_request(
                    b,
                    format!(
                        r#"{{"account_id":"acc-1","time":1,"message":{{"receiver":{{"id":"r","client_id":"client-1"}},"sender":{{"id":"m-1"}},"conversation":{{"id":"k-1","client_id":"conv-1"}},"timestamp":1,"message":{{"id":"kommo-{i}","type":"text","text":"Hello there"}}}}}}"#
                    ),
                )
            })),
        ),
        (
            "client message.created",
            Timed::Handler(Box::new(|b, i| {
                chat_request(
                    b,
                    i,
                    format!(
                        r#"{{"type":"message.created","scope_id":"{SCOPE}","conversation_id":"conv-1","msgid":"chat-{i}","user":{{"id":"client-1"}},"message":{{"type":"text","text":"Hi"}},"timestamp_ms":1}}"#
                    ),
                )
            })),
        ),
    ];
    let queued: Vec<(&str, Timed)> = vec![
        (
            "queued: typing.started to the chat service",
            Timed::QueuedAfter(
                Box::new(move |b, i| {
                    kommo_request(
                        b,
                        format!(
                            r#"{{"account_id":"acc-1","time":1,"action":{{"typing":{{"user":{{"id":"m-1"}},"conversation":{{"id":"k-{i}","client_id":"conv-{i}"}},"expired_at":{expired_at}}}}}}}"#
                        ),
                    )
                }),
                |work| matches!(work, DueWork::DeliverChatEvent { .. }),
            ),
        ),
        (
            "queued: status report to Kommo",
            Timed::QueuedAfter(
                Box::new(|b, i| {
                    chat_request(
                        b,
                        i,
                        format!(
                            r#"{{"type":"message.status","scope_id":"{SCOPE}","reference":"kommo-{i}","status":"delivered"}}"#
                        ),
                    )
                }),
                |work| matches!(work, DueWork::ReportDeliveryStatus { .. }),
            ),
        ),
        (
            "queued: manager message relay",
            Timed::QueuedAfter(
                Box::new(|b, i| {
                    kommo_request(
                        b,
                        format!(
                            r#"{{"account_id":"acc-1","time":1,"message":{{"receiver":{{"id":"r","client_id":"client-1"}},"sender":{{"id":"m-1"}},"conversation":{{"id":"k-1","client_id":"conv-1"}},"timestamp":1,"message":{{"id":"kommo-{i}","type":"text","text":"Hello there"}}}}}}"#
                        ),
                    )
                }),
                |work| matches!(work, DueWork::RelayManagerMessage { .. }),
            ),
        ),
    ];
    println!("Handler time per event, warm, {ITERATIONS} events each (in-memory store, null outbound), one core:\n");
    println!("| event                                             | p50 µs   | p99 µs   | mean µs  | events/s   |");
    println!("|---------------------------------------------------|----------|----------|----------|------------|");
    for (name, timed) in cases.iter().chain(&queued) {
        measure(timed, ITERATIONS, 1000).await; // warm-up
        report(name, &measure(timed, 0, ITERATIONS).await);
    }
}
