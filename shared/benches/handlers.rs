//! Handler time per inbound event, warm: the whole handler (signature check, parsing, the
//! store's conditional writes, scheduling) with the in-memory store, discarding timers and a
//! null outbound side, so the figure is the bridge's own CPU time, network excluded.
//!
//! Run: `cargo bench -p shared --bench handlers` (release profile; prints a table).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shared::app::Bridge;
use shared::config::Config;
use shared::http::HttpRequest;
use shared::routes::EntryPoint;
use shared::signing::kommo_webhook;
use shared::store::memory::MemoryStore;
use shared::testing::{DiscardTimers, NullOutbound};
use shared::time::{Clock, SystemClock};

const SCOPE: &str = "local-channel_acc-1";

/// Builds the i-th request of a case, signed, before the timing starts.
type MakeRequest = dyn Fn(&Bridge, usize) -> (EntryPoint, HttpRequest);
const ITERATIONS: usize = 20_000;

fn bridge() -> Bridge {
    let (config, _) = Config::from_env_local(&|_| None, "http://127.0.0.1:9").expect("local defaults");
    Bridge {
        config,
        clock: Arc::new(SystemClock),
        store: Arc::new(MemoryStore::new()),
        kommo: Arc::new(NullOutbound),
        chat: Arc::new(NullOutbound),
        timers: Arc::new(DiscardTimers),
    }
}

fn kommo_request(bridge: &Bridge, body: String) -> (EntryPoint, HttpRequest) {
    let signature = kommo_webhook::sign(bridge.config.channel_secret.expose(), body.as_bytes());
    let request =
        http::Request::post(format!("/kommo/webhook/{SCOPE}")).header("x-signature", signature).body(Bytes::from(body));
    (EntryPoint::KommoWebhook, request.unwrap())
}

fn chat_request(bridge: &Bridge, body: String) -> (EntryPoint, HttpRequest) {
    let now = SystemClock.now_s();
    let signature = bridge.config.chat_service_secret.sign("msg_bench", now, body.as_bytes());
    let request = http::Request::post("/chat/events")
        .header("webhook-id", "msg_bench")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", signature)
        .body(Bytes::from(body));
    (EntryPoint::ChatCallback, request.unwrap())
}

/// Times each request of `requests` through the handler; returns the sorted durations.
async fn measure(bridge: &Bridge, requests: Vec<(EntryPoint, HttpRequest)>) -> Vec<Duration> {
    let mut times = Vec::with_capacity(requests.len());
    for (entry, request) in requests {
        let started = Instant::now();
        let response = bridge.handle(entry, request).await;
        times.push(started.elapsed());
        assert_eq!(response.status(), 200, "{:?}", response.body());
    }
    times.sort_unstable();
    times
}

fn report(name: &str, times: &[Duration]) {
    let percentile = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "| {name:<34} | {:>8.1} | {:>8.1} | {:>8.1} | {:>10.0} |",
        percentile(0.5).as_secs_f64() * 1e6,
        percentile(0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
        1.0 / mean.as_secs_f64()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let expired_at = SystemClock.now_s() + 3600;
    let cases: Vec<(&str, Box<MakeRequest>)> = vec![
        (
            "manager typing webhook, new lease",
            Box::new(move |b, i| {
                kommo_request(
                    b,
                    format!(
                        r#"{{"account_id":"acc-1","time":1,"action":{{"typing":{{"user":{{"id":"m-1"}},"conversation":{{"id":"k-{i}","client_id":"conv-{i}"}},"expired_at":{expired_at}}}}}}}"#
                    ),
                )
            }),
        ),
        (
            "manager typing webhook, refresh",
            Box::new(move |b, i| {
                kommo_request(
                    b,
                    format!(
                        r#"{{"account_id":"acc-1","time":1,"action":{{"typing":{{"user":{{"id":"m-1"}},"conversation":{{"id":"k-1","client_id":"conv-1"}},"expired_at":{}}}}}}}"#,
                        expired_at + i as i64
                    ),
                )
            }),
        ),
        (
            "client typing.started",
            Box::new(|b, i| {
                chat_request(
                    b,
                    format!(
                        r#"{{"type":"typing.started","scope_id":"{SCOPE}","conversation_id":"conv-{}","user_id":"client-1"}}"#,
                        i % 100
                    ),
                )
            }),
        ),
        (
            "message.status (delivered)",
            Box::new(|b, i| {
                chat_request(
                    b,
                    format!(
                        r#"{{"type":"message.status","scope_id":"{SCOPE}","reference":"kommo-{i}","status":"delivered"}}"#
                    ),
                )
            }),
        ),
        (
            "manager message webhook",
            Box::new(|b, i| {
                kommo_request(
                    b,
                    format!(
                        r#"{{"account_id":"acc-1","time":1,"message":{{"receiver":{{"id":"r","client_id":"client-1"}},"sender":{{"id":"m-1"}},"conversation":{{"id":"k-1","client_id":"conv-1"}},"timestamp":1,"message":{{"id":"kommo-{i}","type":"text","text":"Hello there"}}}}}}"#
                    ),
                )
            }),
        ),
        (
            "client message.created",
            Box::new(|b, i| {
                chat_request(
                    b,
                    format!(
                        r#"{{"type":"message.created","scope_id":"{SCOPE}","conversation_id":"conv-1","msgid":"chat-{i}","user":{{"id":"client-1"}},"message":{{"type":"text","text":"Hi"}},"timestamp_ms":1}}"#
                    ),
                )
            }),
        ),
    ];
    println!("Handler time per event, warm, {ITERATIONS} events each (in-memory store, null outbound), one core:\n");
    println!("| event                              | p50 µs   | p99 µs   | mean µs  | events/s   |");
    println!("|------------------------------------|----------|----------|----------|------------|");
    for (name, make) in cases {
        let bridge = bridge();
        let warmup: Vec<_> = (0..1000).map(|i| make(&bridge, ITERATIONS + i)).collect();
        measure(&bridge, warmup).await;
        let requests: Vec<_> = (0..ITERATIONS).map(|i| make(&bridge, i)).collect();
        report(name, &measure(&bridge, requests).await);
    }
}
