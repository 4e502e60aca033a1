//! The fault schedule, drawn from the seed before the run: store stalls (the store process
//! stopped with SIGSTOP, then continued) and short windows in which a peer answers 5xx, 429
//! (with `Retry-After`) or slowly (within the bridge's client timeouts, so slow is only slow).
//! Kills and duplicate SQS deliveries are drawn where they happen (`lambda`, `sqs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::procs::Proc;
use crate::sim::Rng;
use crate::support::Fake;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Amojo,
    Chat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    ServerError,
    TooMany,
    /// 2xx after this many milliseconds.
    Slow(u64),
}

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Stall,
    Peer(Peer, Answer),
}

#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// From the start of the conversations.
    pub at: Duration,
    pub lasts: Duration,
    pub kind: Kind,
}

impl Fault {
    pub fn describe(&self) -> String {
        let what = match self.kind {
            Kind::Stall => "store stopped (SIGSTOP)".to_owned(),
            Kind::Peer(peer, answer) => {
                let peer = match peer {
                    Peer::Amojo => "amojo",
                    Peer::Chat => "chat service",
                };
                match answer {
                    Answer::ServerError => format!("{peer} answers 503"),
                    Answer::TooMany => format!("{peer} answers 429"),
                    Answer::Slow(ms) => format!("{peer} answers after {ms} ms"),
                }
            }
        };
        format!("t+{:.1} s: {what} for {:.1} s", self.at.as_secs_f64(), self.lasts.as_secs_f64())
    }
}

/// The run's faults: `stalls` store stalls of `stall` each, spread over the conversations'
/// time (one per equal slot of it), and `peer_faults` windows of 2 to 4 s.
pub fn schedule(seed: u64, active: Duration, stalls: usize, stall: Duration, peer_faults: usize) -> Vec<Fault> {
    let mut rng = Rng::new(seed);
    let mut faults = Vec::new();
    // The first seconds are left alone: the environments' cold starts.
    let (from, to) = (Duration::from_secs(8), active.saturating_sub(Duration::from_secs(5)));
    let span = to.saturating_sub(from);
    if stalls > 0 {
        let slot = span / stalls as u32;
        for n in 0..stalls {
            let room = slot.saturating_sub(stall).as_millis() as u64;
            let at = from + slot * n as u32 + Duration::from_millis(rng.below(room + 1));
            faults.push(Fault { at, lasts: stall, kind: Kind::Stall });
        }
    }
    for _ in 0..peer_faults {
        let peer = if rng.below(2) == 0 { Peer::Amojo } else { Peer::Chat };
        let answer = match rng.below(3) {
            0 => Answer::ServerError,
            1 => Answer::TooMany,
            // amojo's client gives up after 5 s, the chat service's after 8 s.
            _ => Answer::Slow(if peer == Peer::Amojo { 1000 + rng.below(2001) } else { 1500 + rng.below(3501) }),
        };
        let at = from + Duration::from_millis(rng.below(span.as_millis() as u64 + 1));
        let lasts = Duration::from_millis(2000 + rng.below(2001));
        faults.push(Fault { at, lasts, kind: Kind::Peer(peer, answer) });
    }
    faults.sort_by_key(|f| f.at);
    faults
}

/// What a fake answers in a fault window, and which of its paths it applies to: a slow
/// answer stands in for the real one, so at amojo it is given only where the real one is an
/// empty 2xx (`delivery_status`).
fn reply(peer: Peer, answer: Answer) -> (Option<&'static str>, Value) {
    let error = json!({"error": {"code": "chaos", "message": "a fault window of the chaos harness"}});
    match (peer, answer) {
        (_, Answer::ServerError) => (None, json!({"status": 503, "body": error})),
        (_, Answer::TooMany) => (None, json!({"status": 429, "headers": {"Retry-After": "1"}, "body": error})),
        (Peer::Chat, Answer::Slow(ms)) => (None, json!({"status": 200, "body": {}, "delay_ms": ms})),
        (Peer::Amojo, Answer::Slow(ms)) => {
            (Some("/delivery_status"), json!({"status": 200, "body": {}, "delay_ms": ms}))
        }
    }
}

/// Runs the schedule from `start`; returns when the last fault is over.
pub async fn run(faults: Vec<Fault>, start: Instant, store: Arc<Proc>, amojo: Fake, chat: Fake, scopes: Vec<String>) {
    let mut tasks = Vec::new();
    for fault in faults {
        let (store, scopes) = (store.clone(), scopes.clone());
        let fake = match fault.kind {
            Kind::Peer(Peer::Amojo, _) => Some(Fake::at(&amojo.url, &amojo.secret)),
            Kind::Peer(Peer::Chat, _) => Some(Fake::at(&chat.url, &chat.secret)),
            Kind::Stall => None,
        };
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until((start + fault.at).into()).await;
            match (fault.kind, fake) {
                (Kind::Stall, _) => {
                    if let Err(problem) = store.signal("STOP") {
                        eprintln!("bridge-chaos: {problem}");
                        return;
                    }
                    tokio::time::sleep(fault.lasts).await;
                    if let Err(problem) = store.signal("CONT") {
                        eprintln!("bridge-chaos: {problem}");
                    }
                }
                (Kind::Peer(peer, answer), Some(fake)) => {
                    let (matching, reply) = reply(peer, answer);
                    for scope in &scopes {
                        fake.fault(scope, fault.lasts.as_secs_f64(), matching, 1, reply.clone()).await;
                    }
                }
                (Kind::Peer(..), None) => {}
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}
