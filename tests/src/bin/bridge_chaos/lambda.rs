//! Lambda as the functions meet it: per function a stand-in of the Runtime API for each of its
//! execution environments (one process of the function's binary each, `AWS_LAMBDA_RUNTIME_API`
//! pointing at it), an invocation queue the idle environments take from, the function's
//! timeout (exceeded: the process is killed and replaced, a cold start), and kills mid-flight.
//!
//! Each environment also reaches the store through a proxy of its own, so that a kill can
//! land right after one of the invocation's store calls was written (its answer never comes
//! back), the moment where a redelivery finds work half done. A kill planned for a moment the
//! invocation outlived happens when it answers instead: the answer is lost with the process.
//!
//! An HTTP function gets a front (one loopback port, as API Gateway): each request becomes a
//! payload 2.0 event, and the function's answer the HTTP answer; a function error is 500, a
//! process that died 502, a timeout 504.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::http1::{self, Request, Response};
use crate::procs::Proc;
use crate::sim::{Rng, now_ms};

/// Set when the harness ends: the environments stop without a word.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

pub fn shutting_down() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
}

/// How an invocation ended, as Lambda knows it.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response(Vec<u8>),
    /// The function reported an error (`…/error`).
    Error,
    /// Killed by the harness mid-flight: how.
    Killed(String),
    /// Over the function's timeout: killed and replaced.
    TimedOut,
    /// The process ended by itself.
    Crashed,
}

impl Outcome {
    /// Whether the environment died with it (a fresh one replaces it).
    fn ends_environment(&self) -> bool {
        matches!(self, Self::Killed(_) | Self::TimedOut | Self::Crashed)
    }
}

/// How a killed invocation dies.
#[derive(Debug, Clone, Copy)]
enum KillPlan {
    /// Right after its n-th store call was written, before the function learns it was.
    AfterStoreCall(u32),
    /// This many milliseconds after it was handed out.
    AfterMs(u64),
}

#[derive(Debug, Default)]
pub struct FunctionStats {
    pub invocations: AtomicU64,
    pub responses: AtomicU64,
    pub errors: AtomicU64,
    pub killed_after_store_call: AtomicU64,
    pub killed_in_time: AtomicU64,
    /// Kills planned for later than the invocation lasted: the process died with its answer.
    pub killed_at_answer: AtomicU64,
    pub timed_out: AtomicU64,
    pub crashed: AtomicU64,
    pub cold_starts: AtomicU64,
    pub store_calls: AtomicU64,
    /// Invocations handed to an environment: their request ids.
    handed_out: AtomicU64,
    /// When each invocation killed or timed out was handed out and when it died (ms): a call
    /// to a peer made in one may have gone out without its record.
    pub cut_off: std::sync::Mutex<Vec<(i64, i64)>>,
    /// Invocations queued or in flight.
    active: AtomicI64,
}

impl FunctionStats {
    pub fn kills(&self) -> u64 {
        [&self.killed_after_store_call, &self.killed_in_time, &self.killed_at_answer]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// What runs a function.
pub struct FunctionSpec {
    pub name: &'static str,
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// The share of invocations killed mid-flight.
    pub kill_share: f64,
    pub environments: usize,
    pub log: PathBuf,
    /// The store the environments' proxies forward to.
    pub store_url: String,
}

struct Invocation {
    event: String,
    reply: oneshot::Sender<(Outcome, String)>,
}

type Queue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>>;

/// A deployed function: invoke it, and read what happened to its invocations.
#[derive(Clone)]
pub struct Function {
    pub name: &'static str,
    sender: mpsc::UnboundedSender<Invocation>,
    pub stats: Arc<FunctionStats>,
}

impl Function {
    /// Starts the function's environments (they run until the harness ends).
    pub fn start(spec: FunctionSpec, seed: u64) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queue: Queue = Arc::new(tokio::sync::Mutex::new(receiver));
        let stats = Arc::new(FunctionStats::default());
        let spec = Arc::new(spec);
        let rng = Arc::new(Mutex::new(Rng::new(seed)));
        for slot in 0..spec.environments {
            let (spec, queue, stats, rng) = (spec.clone(), queue.clone(), stats.clone(), rng.clone());
            tokio::spawn(async move {
                loop {
                    let ended = environment(slot, &spec, &queue, &stats, &rng).await;
                    if SHUTTING_DOWN.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Err(problem) = ended {
                        eprintln!("bridge-chaos: {} environment {slot}: {problem}", spec.name);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            });
        }
        Self { name: spec.name, sender, stats }
    }

    /// One invocation: queued until an environment is idle, then run. Its outcome, and its
    /// request id (as the function's log names it).
    pub async fn invoke(&self, event: String) -> (Outcome, String) {
        self.stats.invocations.fetch_add(1, Ordering::Relaxed);
        self.stats.active.fetch_add(1, Ordering::SeqCst);
        let (reply, answer) = oneshot::channel();
        let outcome = match self.sender.send(Invocation { event, reply }) {
            Ok(()) => answer.await.unwrap_or((Outcome::Crashed, String::new())),
            Err(_) => (Outcome::Crashed, String::new()),
        };
        self.stats.active.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    /// Whether an invocation is queued or in flight.
    pub fn busy(&self) -> bool {
        self.stats.active.load(Ordering::SeqCst) > 0
    }

    /// Serves this (HTTP) function on a loopback port as API Gateway does; the port.
    pub async fn front(&self) -> Result<u16, String> {
        let (listener, port) = http1::bind().await?;
        let function = self.clone();
        tokio::spawn(http1::serve(listener, move |request| {
            let function = function.clone();
            async move { Some(function.http(request).await) }
        }));
        Ok(port)
    }

    async fn http(&self, request: Request) -> Response {
        match self.invoke(api_gateway_event(&request).to_string()).await.0 {
            Outcome::Response(body) => from_lambda(&body),
            Outcome::Error => Response::json(500, &json!({"message": "Internal Server Error"})),
            Outcome::Killed(_) | Outcome::Crashed => Response::json(502, &json!({"message": "Internal Server Error"})),
            Outcome::TimedOut => Response::json(504, &json!({"message": "Service Unavailable"})),
        }
    }
}

/// A call of an environment's process to its Runtime API.
enum RuntimeCall {
    Next(oneshot::Sender<Response>),
    Done { request_id: String, ok: bool, body: Vec<u8> },
}

/// What the store proxy of an environment needs to know of its invocation.
#[derive(Debug, Default)]
struct Tap {
    active: bool,
    kill_after_call: Option<u32>,
    calls: u32,
}

/// Aborts the tasks when dropped (an environment's servers die with it).
struct Servers(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Servers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// One execution environment, from its cold start until it is killed (Ok) or cannot run (Err).
async fn environment(
    slot: usize,
    spec: &FunctionSpec,
    queue: &Queue,
    stats: &Arc<FunctionStats>,
    rng: &Mutex<Rng>,
) -> Result<(), String> {
    let (runtime_listener, runtime_port) = http1::bind().await?;
    let (store_listener, store_port) = http1::bind().await?;
    let (calls, mut calls_rx) = mpsc::unbounded_channel::<RuntimeCall>();
    let tap = Arc::new(Mutex::new(Tap::default()));
    let kill_now = Arc::new(Notify::new());
    let runtime = tokio::spawn(http1::serve(runtime_listener, move |request| runtime_api(request, calls.clone())));
    let proxy = StoreProxy {
        upstream: spec.store_url.clone(),
        http: reqwest::Client::new(),
        tap: tap.clone(),
        kill_now: kill_now.clone(),
        stats: stats.clone(),
    };
    let proxy = Arc::new(proxy);
    let store = tokio::spawn(http1::serve(store_listener, move |request| proxy.clone().forward(request)));
    let _servers = Servers(vec![runtime, store]);

    let mut command = Command::new(&spec.binary);
    command
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{runtime_port}"))
        .env("DYNAMODB_ENDPOINT", format!("http://127.0.0.1:{store_port}"));
    let process = Proc::spawn(&format!("{} #{slot}", spec.name), command, &spec.log)?;
    stats.cold_starts.fetch_add(1, Ordering::Relaxed);
    let mut waiting_next = None;
    loop {
        let next = match waiting_next.take() {
            Some(next) => next,
            None => tokio::select! {
                call = calls_rx.recv() => match call {
                    Some(RuntimeCall::Next(next)) => next,
                    // A late answer of an invocation already given up: nothing waits for it.
                    Some(RuntimeCall::Done { .. }) => continue,
                    None => return Err("its Runtime API stopped".into()),
                },
                () = exited(&process) => {
                    stats.crashed.fetch_add(1, Ordering::Relaxed);
                    return Err("the process ended before asking for an event".into());
                }
            },
        };
        let invocation = tokio::select! {
            invocation = async { queue.lock().await.recv().await } => match invocation {
                Some(invocation) => invocation,
                None => return Ok(()),
            },
            () = exited(&process) => {
                stats.crashed.fetch_add(1, Ordering::Relaxed);
                return Err("the process ended while idle".into());
            }
        };
        let request_id = format!("{}-{}", spec.name, stats.handed_out.fetch_add(1, Ordering::Relaxed) + 1);
        let plan = {
            let mut rng = rng.lock().expect("not poisoned");
            chance(&mut rng, spec.kill_share).then(|| {
                if rng.below(2) == 0 {
                    KillPlan::AfterStoreCall(1 + rng.below(3) as u32)
                } else {
                    KillPlan::AfterMs(rng.below(201))
                }
            })
        };
        *tap.lock().expect("not poisoned") = Tap {
            active: true,
            kill_after_call: match plan {
                Some(KillPlan::AfterStoreCall(n)) => Some(n),
                _ => None,
            },
            calls: 0,
        };
        let handed_at_ms = now_ms();
        let deadline_ms = handed_at_ms + spec.timeout.as_millis() as i64;
        let event = Response::new(200, invocation.event.clone())
            .with_header("content-type", "application/json")
            .with_header("lambda-runtime-aws-request-id", request_id.clone())
            .with_header("lambda-runtime-deadline-ms", deadline_ms.to_string())
            .with_header(
                "lambda-runtime-invoked-function-arn",
                format!("arn:aws:lambda:us-east-1:123456789012:function:{}", spec.name),
            );
        let _ = next.send(event);

        let timeout = tokio::time::sleep(spec.timeout);
        tokio::pin!(timeout);
        let in_time = tokio::time::sleep(match plan {
            Some(KillPlan::AfterMs(ms)) => Duration::from_millis(ms),
            _ => Duration::from_secs(24 * 3600),
        });
        tokio::pin!(in_time);
        let outcome = loop {
            tokio::select! {
                call = calls_rx.recv() => match call {
                    Some(RuntimeCall::Done { request_id: id, ok, body }) if id == request_id => {
                        if plan.is_some() {
                            stats.killed_at_answer.fetch_add(1, Ordering::Relaxed);
                            let calls = tap.lock().expect("not poisoned").calls;
                            break Outcome::Killed(format!("at its answer, after {calls} store calls"));
                        }
                        break if ok { Outcome::Response(body) } else { Outcome::Error };
                    }
                    Some(RuntimeCall::Next(next)) => waiting_next = Some(next),
                    Some(RuntimeCall::Done { .. }) => {}
                    None => break Outcome::Crashed,
                },
                () = kill_now.notified() => {
                    stats.killed_after_store_call.fetch_add(1, Ordering::Relaxed);
                    let calls = tap.lock().expect("not poisoned").calls;
                    break Outcome::Killed(format!("right after store call {calls} was written"));
                }
                () = &mut in_time => {
                    stats.killed_in_time.fetch_add(1, Ordering::Relaxed);
                    let calls = tap.lock().expect("not poisoned").calls;
                    let ms = match plan { Some(KillPlan::AfterMs(ms)) => ms, _ => 0 };
                    break Outcome::Killed(format!("{ms} ms in, after {calls} store calls"));
                }
                () = &mut timeout => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    break Outcome::TimedOut;
                }
                () = exited(&process) => {
                    stats.crashed.fetch_add(1, Ordering::Relaxed);
                    break Outcome::Crashed;
                }
            }
        };
        tap.lock().expect("not poisoned").active = false;
        let ends = outcome.ends_environment();
        if ends {
            // Dead before anyone hears of it: a retry never meets the old process.
            process.kill();
        }
        if matches!(outcome, Outcome::Killed(_) | Outcome::TimedOut) {
            stats.cut_off.lock().expect("not poisoned").push((handed_at_ms, now_ms()));
        }
        match &outcome {
            Outcome::Response(_) => stats.responses.fetch_add(1, Ordering::Relaxed),
            Outcome::Error => stats.errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let _ = invocation.reply.send((outcome, request_id));
        if ends {
            return Ok(());
        }
    }
}

/// Resolves when the process has ended.
async fn exited(process: &Proc) {
    while process.alive() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True with probability `share`.
pub fn chance(rng: &mut Rng, share: f64) -> bool {
    (rng.below(1_000_000) as f64) < share * 1_000_000.0
}

/// The Runtime API: `next` waits for the environment's task to hand out an event; an answer
/// or an error is passed on and acknowledged.
async fn runtime_api(request: Request, calls: mpsc::UnboundedSender<RuntimeCall>) -> Option<Response> {
    let path = request.path().to_owned();
    if path.ends_with("/runtime/invocation/next") {
        let (answer, event) = oneshot::channel();
        calls.send(RuntimeCall::Next(answer)).ok()?;
        // Dropped when the environment is replaced: the connection closes unanswered.
        return event.await.ok();
    }
    if let Some((request_id, kind)) =
        path.strip_prefix("/2018-06-01/runtime/invocation/").and_then(|rest| rest.split_once('/'))
    {
        let done = RuntimeCall::Done { request_id: request_id.to_owned(), ok: kind == "response", body: request.body };
        calls.send(done).ok()?;
        return Some(Response::new(202, ""));
    }
    if path.ends_with("/runtime/init/error") {
        // The process exits after it; the environment's task sees that.
        return Some(Response::new(202, ""));
    }
    Some(Response::new(404, ""))
}

/// An environment's way to the store.
struct StoreProxy {
    upstream: String,
    http: reqwest::Client,
    tap: Arc<Mutex<Tap>>,
    kill_now: Arc<Notify>,
    stats: Arc<FunctionStats>,
}

impl StoreProxy {
    async fn forward(self: Arc<Self>, request: Request) -> Option<Response> {
        // Sent on in a task of its own: a call the function gave up on still reaches the store,
        // as bytes already on the wire do.
        let (http, url) = (self.http.clone(), format!("{}{}", self.upstream, request.target));
        let answer = tokio::spawn(relay(http, url, request)).await.ok().flatten()?;
        let kill = {
            let mut tap = self.tap.lock().expect("not poisoned");
            if tap.active {
                tap.calls += 1;
                self.stats.store_calls.fetch_add(1, Ordering::Relaxed);
            }
            tap.active && tap.kill_after_call == Some(tap.calls)
        };
        if kill {
            self.kill_now.notify_one();
            return None;
        }
        Some(answer)
    }
}

async fn relay(http: reqwest::Client, url: String, request: Request) -> Option<Response> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).ok()?;
    let mut builder = http.request(method, url);
    for (name, value) in &request.headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection" | "transfer-encoding") {
            builder = builder.header(name, value);
        }
    }
    let answer = builder.body(request.body).send().await.ok()?;
    let status = answer.status().as_u16();
    let headers: Vec<(String, String)> = answer
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "content-length" | "connection" | "transfer-encoding"))
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    let body = answer.bytes().await.ok()?.to_vec();
    Some(Response { status, headers, body })
}

/// The payload 2.0 event API Gateway makes of a request.
fn api_gateway_event(request: &Request) -> Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in &request.headers {
        let joined = match headers.get(name).and_then(Value::as_str) {
            Some(earlier) => format!("{earlier},{value}"),
            None => value.clone(),
        };
        headers.insert(name.clone(), Value::from(joined));
    }
    let body = String::from_utf8_lossy(&request.body).into_owned();
    let mut event = crate::support::http_api_event(request.path(), Value::Object(headers), &body);
    event["rawQueryString"] = json!(request.query());
    event["requestContext"]["http"]["method"] = json!(request.method);
    event["requestContext"]["requestId"] = json!(format!("req-{}", now_ms()));
    event["requestContext"]["timeEpoch"] = json!(now_ms());
    event
}

/// The HTTP answer of a function's payload 2.0 response.
fn from_lambda(body: &[u8]) -> Response {
    let Ok(answer) = serde_json::from_slice::<Value>(body) else {
        return Response::json(502, &json!({"message": "Internal Server Error"}));
    };
    let status = answer["statusCode"].as_u64().and_then(|s| u16::try_from(s).ok()).unwrap_or(200);
    let mut response = Response::new(status, answer["body"].as_str().unwrap_or_default());
    if let Some(headers) = answer["headers"].as_object() {
        for (name, value) in headers {
            if let Some(value) = value.as_str() {
                response.headers.push((name.clone(), value.to_owned()));
            }
        }
    }
    response
}
