//! Any requests to `Bridge::handle`, one after another: the fuzz input chooses each one's entry
//! point, method, path, query, headers and body, in a form close to HTTP/1.1 text so seeds are
//! readable, and how time passes between them:
//!
//! ```text
//! [kommo|chat|dev] METHOD PATH          (without the entry point: the one that serves the route)
//! Name: value
//! ...
//!                                       (an empty line)
//! body bytes
//! ===                                   (a line of its own: the next step follows)
//! sleep 7000                            (time passes, in ms: the work due on the way runs)
//! ===
//! POST /chat/events
//! ...
//! ```
//!
//! At most 8 steps. A header value may be a placeholder that the target fills in, so signed and
//! authorised paths are reached while the fuzzer varies everything around them:
//! - `@kommo-signature`: Kommo's `X-Signature` over the body;
//! - `@webhook-signature`: the Standard Webhooks signature over the body, with the request's
//!   own `webhook-id` and `webhook-timestamp` (missing or unreadable: empty id, now);
//! - `@now`: the clock's Unix seconds;
//! - `@token`: a fresh one-time token for user 42 of the linked account, or `@token{...}`: a
//!   token signed with the integration secret over the JSON claims that follow.
//!
//! After each request the work due at that moment runs; at the end, all that is left. The
//! state is the same as in `kommo_webhook` and `chat_event`. Every answer must be a JSON 2xx
//! or 4xx (or an empty 204), never a 5xx or a panic.
//! What was sent to Kommo and the chat service keeps the bridge's promises
//! (`Harness::check_invariants`): statuses only forward, each message relayed, imported and
//! read-reported once, no typing started twice without a stop.
#![no_main]

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use shared::app::http::HttpRequest;
use shared::app::routes::{self, EntryPoint};
use shared::signing::{kommo_webhook, one_time_token};
use shared::time::Clock;
use shared_fuzz::{CHANNEL_SECRET, Harness, INTEGRATION_SECRET, MAX_DUE_RUNS, block_on};

const MAX_STEPS: usize = 8;
const SEPARATOR: &[u8] = b"\n===\n";
/// The longest `sleep`: ten minutes (retries back off over about two).
const MAX_SLEEP_MS: i64 = 600_000;

fn split_steps(data: &[u8]) -> Vec<&[u8]> {
    let mut steps = Vec::new();
    let mut rest = data;
    while steps.len() + 1 < MAX_STEPS {
        let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) else { break };
        steps.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    steps.push(rest);
    steps
}

/// One step's request, or `None` for what an HTTP server would refuse before the bridge.
fn request(harness: &Harness, step: &[u8]) -> Option<(EntryPoint, HttpRequest)> {
    let (head, body) = match step.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&step[..at], &step[at + 2..]),
        None => (step, &b""[..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.lines();
    let mut words = lines.next()?.split(' ').filter(|w| !w.is_empty()).peekable();
    let entry = match words.peek().copied() {
        Some("kommo") => Some(EntryPoint::KommoWebhook),
        Some("chat") => Some(EntryPoint::ChatCallback),
        Some("dev") => Some(EntryPoint::DevServer),
        _ => None,
    };
    if entry.is_some() {
        words.next();
    }
    let method = Method::from_bytes(words.next()?.as_bytes()).ok()?;
    let uri = words.next()?.parse::<http::Uri>().ok()?;
    let entry =
        entry.unwrap_or_else(|| routes::find(&method, uri.path()).map_or(EntryPoint::KommoWebhook, |m| m.served_by));
    let headers: Vec<(&str, &str)> =
        lines.filter_map(|line| line.split_once(':')).map(|(n, v)| (n, v.trim_start())).collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v);

    let mut request = http::Request::builder().method(method).uri(uri);
    for (name, value) in &headers {
        let value = match *value {
            "@kommo-signature" => kommo_webhook::sign(CHANNEL_SECRET, body),
            "@webhook-signature" => {
                let id = header("webhook-id").unwrap_or_default();
                let timestamp = header("webhook-timestamp").and_then(|t| t.trim().parse().ok());
                harness.chat_secret().sign(id, timestamp.unwrap_or(harness.now_s()), body)
            }
            "@now" => harness.now_s().to_string(),
            "@token" => harness.token(42),
            other => match other.strip_prefix("@token").map(serde_json::from_str) {
                Some(Ok(claims)) => one_time_token::issue(INTEGRATION_SECRET, &claims),
                _ => other.to_owned(),
            },
        };
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) else {
            continue;
        };
        request = request.header(name, value);
    }
    Some((entry, request.body(Bytes::copy_from_slice(body)).ok()?))
}

fuzz_target!(|data: &[u8]| {
    block_on(async {
        let harness = Harness::new();
        harness.seed_state().await;
        let mut budget = MAX_DUE_RUNS;
        for step in split_steps(data) {
            let sleep = step.strip_prefix(b"sleep ").and_then(|ms| std::str::from_utf8(ms).ok()?.trim().parse().ok());
            let until = match sleep {
                Some(ms) => harness.clock.now_ms() + i64::clamp(ms, 0, MAX_SLEEP_MS),
                None => {
                    if let Some((entry, request)) = request(&harness, step) {
                        harness.send(entry, request).await;
                    }
                    harness.clock.now_ms()
                }
            };
            budget -= harness.run_timers_until(until, budget).await;
        }
        harness.run_timers(budget).await;
        harness.check_invariants();
    });
});
