//! The chaos harness: the bridge's deployed topology run locally, under faults, and its
//! promises checked afterwards.
//!
//! What it models. The three Lambda binaries (target/debug/kommo-webhook, chat-callback,
//! typing-expiry), each run by a stand-in of Lambda's Runtime API in several execution
//! environments (one process each, `--environments`, default 2), the template's timeouts
//! (read from infra/template.yaml; over it the process is killed and replaced, a cold start),
//! and an invocation queue the idle environments take from. kommo-webhook and chat-callback
//! each sit behind an HTTP front on a loopback port, as API Gateway (payload 2.0; a function
//! error answers 500, a dead process 502, a timeout 504). The timer queue is moto's
//! SQS-compatible server (tests/fakes/moto_sqs.py), created with the template's visibility
//! timeout or `--visibility-timeout`; an event source mapping long-polls it in batches of the
//! template's `BatchSize`, invokes typing-expiry with an SQS event, deletes what
//! `batchItemFailures` does not name (nothing after a function error, a kill or a timeout) and
//! moves a message received more than `maxReceiveCount` times to the dead letters. The store is
//! Dynoxide (its own process, a fresh table), reached by each environment through a proxy. The
//! peers are the Python fake amojo and fake chat service, which record what they receive.
//! Kommo's webhooks are sent signed with the channel secret, once, whatever the answer; the
//! chat service's events are signed as Standard Webhooks and retried with backoff (0.5, 1, 2,
//! 4, 8, 8, 8 s) under the same `webhook-id` while the answer is a 5xx, a timeout or a
//! connection error, and no more once it is a 2xx or a 4xx.
//!
//! The scenario (`--conversations`, default 20, over `--accounts` scopes): in each, the client
//! types and writes, edits and reacts; the manager opens the conversation in the widget, types
//! and writes twice, the client's receipts (delivered, read, sometimes `up_to`) following each
//! message once the chat service has it; the manager types once more and gives up; the widget
//! is left. The faults, drawn from `--seed` with the scenario: `--stalls` store stalls of
//! `--stall-seconds` (the store process stopped with SIGSTOP, then continued; default two of
//! 4 s), `--peer-faults` windows of 2 to 4 s in which a peer answers 503, 429 or slowly
//! (default 4), a share of invocations killed mid-flight with SIGKILL (`--kill-expiry` of
//! typing-expiry's batches, default 0.15; `--kill-callback` of chat-callback's, 0.05;
//! `--kill-webhook` of kommo-webhook's, 0), each either right after one of its first three
//! store calls was written or 0 to 200 ms after it was handed out (or, answering before that,
//! as it answers: the answer is lost with the process), and `--duplicate-sqs` of
//! the timer messages delivered twice (default 0.03). A harsher setting: `--conversations 40
//! --stalls 3 --kill-expiry 0.25`. With the template's visibility timeout (360 s) the records of
//! a killed batch come back only after six minutes, longer than any run waits: `--visibility-timeout
//! 6` brings them back after 6 s, so that a run with kills can settle.
//!
//! What it checks. After the conversations it waits for the run to settle (queue empty,
//! nothing in flight or delayed, every sender done, both peers quiet for 5 s; at most
//! `--settle-seconds`, default 180), then reconciles the fakes' records and its own log of
//! what it sent and was answered, and prints one line per promise with its violations:
//! every manager message relayed to the chat service or reported failed to Kommo, whatever its
//! webhook was answered; every client message, status, reaction and edit the chat service's
//! sender got a 2xx for at amojo (a status, or a higher one); each
//! client message told `message.delivered` or `message.failed` exactly once; no manager message
//! relayed under two webhook-ids; no typing indicator left on at either side, starts and
//! stops alternating; manager presence pushes alternating and ending offline; no (message,
//! status) sent to amojo twice, none backwards; no retry of the chat sender answered 409
//! `replayed_webhook`; settled within the bound. Then figures: invocations, cold starts and
//! faults injected per kind, answers (5xx among them), repeated amojo imports, the timer work
//! run most often (one piece of work handed to typing-expiry again and again), settle time.
//! Logs (each function's, and `batches.log`: every timer batch, its records and how it ended)
//! and `report.json` go to `--out` (default target/chaos/seed-<seed>). `--functions DIR` runs
//! other builds of the three functions; `RUST_LOG` is passed on to them (default `info`).
//! Exit 0: every promise kept; 1: one broken; 2: bad usage or a topology that did not start.

#[path = "bridge_chaos/args.rs"]
mod args;
#[path = "bridge_chaos/faults.rs"]
mod faults;
#[path = "bridge_chaos/http1.rs"]
mod http1;
#[path = "bridge_chaos/lambda.rs"]
mod lambda;
#[path = "bridge_chaos/procs.rs"]
mod procs;
#[path = "bridge_chaos/reconcile.rs"]
mod reconcile;
#[path = "bridge_chaos/scenario.rs"]
mod scenario;
#[path = "bridge_chaos/sqs.rs"]
mod sqs;

// Reused from the load tool (the seeded draws, the fakes' admin API) and the suites (the
// payload 2.0 event, the fakes' fault windows).
#[allow(dead_code)]
#[path = "bridge_load/presence.rs"]
mod presence;
#[allow(dead_code)]
#[path = "bridge_load/servers.rs"]
mod servers;
#[allow(dead_code)]
#[path = "bridge_load/sim.rs"]
mod sim;
#[path = "../../suites/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::signing::standard_webhooks::WebhookSecret;

use crate::args::{Args, Template, USAGE};
use crate::lambda::{Function, FunctionSpec};
use crate::procs::Proc;
use crate::scenario::{Conv, Ctx};
use crate::servers::FakeAdmin;
use crate::sim::Rng;
use crate::sqs::{EventSource, SourceStats, Sqs};

/// How long the conversations play, about: the faults are drawn within it.
const ACTIVE: Duration = Duration::from_secs(55);
/// Both peers without a new call this long, with nothing queued or in flight: settled.
const QUIET: Duration = Duration::from_secs(5);

/// How long a run may take beyond playing and settling (starting the topology, reading the
/// records) before the watchdog ends it.
const WATCHDOG_MARGIN: Duration = Duration::from_secs(120);

/// Ends the run, its processes first, if it has not ended by `bound`: a run that hangs must fail
/// loudly in CI, never hold it until its own limit.
fn watchdog(bound: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(bound);
        eprintln!("bridge-chaos: the run did not end within {} s; its processes are killed", bound.as_secs());
        let me = std::process::id().to_string();
        let _ = std::process::Command::new("pkill").args(["-KILL", "-P", &me]).status();
        std::process::exit(2);
    });
}

fn main() -> ExitCode {
    let args = Args::parse(std::env::args().skip(1));
    let Ok(args) = args.inspect_err(|problem| eprintln!("bridge-chaos: {problem}\n\n{USAGE}")) else {
        return ExitCode::from(2);
    };
    watchdog(ACTIVE + args.settle + WATCHDOG_MARGIN);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let result = runtime.block_on(run(args));
    lambda::shutting_down();
    // The environments' tasks (and with them their processes) end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(problem) => {
            eprintln!("bridge-chaos: {problem}");
            ExitCode::from(2)
        }
    }
}

/// `count` bytes from the seeded draws, as hex.
fn hex_of(rng: &mut Rng, count: usize) -> String {
    hex::encode(bytes_of(rng, count))
}

fn bytes_of(rng: &mut Rng, count: usize) -> Vec<u8> {
    (0..count).map(|_| rng.next() as u8).collect()
}

async fn run(args: Args) -> Result<bool, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("the workspace has no root")?.to_path_buf();
    let template = Template::read(&root.join("infra/template.yaml"))?;
    let seed = args.seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        (nanos as u64 ^ u64::from(std::process::id())) % 1_000_000
    });
    let mut rng = Rng::new(seed);
    let out = args.out.clone().unwrap_or_else(|| servers::target_dir().join("chaos").join(format!("seed-{seed}")));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    for log in ["dynamodb", "moto", "fake-amojo", "fake-chat", "kommo-webhook", "chat-callback", "typing-expiry"] {
        let _ = std::fs::remove_file(out.join(format!("{log}.log")));
    }
    let python = std::env::var_os("BRIDGE_TEST_PYTHON").map_or_else(|| root.join(".venv/bin/python"), PathBuf::from);
    if !python.exists() {
        return Err(format!(
            "{} is missing: python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt",
            python.display()
        ));
    }
    let binary = |name: &str| servers::sibling_binary(name);
    let function_binary = |name: &str| match &args.functions {
        Some(folder) if folder.join(name).exists() => Ok(folder.join(name)),
        Some(folder) => Err(format!("{} is missing", folder.join(name).display())),
        None => binary(name),
    };
    let binaries =
        [function_binary("kommo-webhook")?, function_binary("chat-callback")?, function_binary("typing-expiry")?];
    let started = Instant::now();

    // Secrets and ids, from the seed.
    let channel = format!("chaos{}", hex_of(&mut rng, 4));
    let channel_secret = hex_of(&mut rng, 20);
    let chat_secret = WebhookSecret::from_key(bytes_of(&mut rng, 32));
    let integration_secret = hex_of(&mut rng, 32);

    // The store, the queue and the peers.
    let store_command = {
        let mut command = Command::new(binary("dynamodb-test-server")?);
        command.args(["--port", "0"]);
        command
    };
    let (store, store_port) = Proc::spawn_server("dynamodb", store_command, &out.join("dynamodb.log"))?;
    let store = Arc::new(store);
    let store_url = format!("http://127.0.0.1:{store_port}");
    let table = format!("{channel}-table");
    let client = shared::adapters::dynamo::client_from_env(Some(&store_url));
    shared::adapters::dynamo::ensure_table(&client, &table).await.map_err(|e| format!("cannot create {table}: {e}"))?;
    let python_server = |script: &str, extra: &[&str]| {
        let mut command = Command::new(&python);
        command.arg(root.join("tests/fakes").join(script)).args(extra);
        command
    };
    let (_moto, moto_port) = Proc::spawn_server("moto", python_server("moto_sqs.py", &[]), &out.join("moto.log"))?;
    let sqs = Arc::new(Sqs::new(&format!("http://127.0.0.1:{moto_port}"))?);
    let visibility_s = args.visibility_timeout_s.unwrap_or(template.visibility_timeout_s);
    let queue = sqs.create_queue(&format!("{channel}-timers"), visibility_s).await?;
    let amojo_args = ["--port", "0", "--secret", channel_secret.as_str()];
    let (_amojo, amojo_port) =
        Proc::spawn_server("fake amojo", python_server("fake_amojo.py", &amojo_args), &out.join("fake-amojo.log"))?;
    let chat_secret_text = chat_secret.expose();
    let chat_args = ["--port", "0", "--secret", chat_secret_text.as_str()];
    let (_chat, chat_port) = Proc::spawn_server(
        "fake chat service",
        python_server("fake_chat_service.py", &chat_args),
        &out.join("fake-chat.log"),
    )?;
    let (amojo_url, chat_url) = (format!("http://127.0.0.1:{amojo_port}"), format!("http://127.0.0.1:{chat_port}"));

    // The functions.
    let accounts: Vec<(u32, String)> = (1..=args.accounts as u32).map(|k| (k, format!("acc-{k}"))).collect();
    let scopes: Vec<String> = accounts.iter().map(|(_, amojo)| format!("{channel}_{amojo}")).collect();
    let kommo_accounts: Vec<String> = accounts.iter().map(|(k, amojo)| format!("{k}:{amojo}")).collect();
    let env: Vec<(String, String)> = [
        ("KOMMO_CHANNEL_ID", channel.clone()),
        ("KOMMO_CHANNEL_SECRET", channel_secret.clone()),
        ("KOMMO_AMOJO_URL", amojo_url.clone()),
        ("KOMMO_INTEGRATION_SECRET", integration_secret.clone()),
        ("KOMMO_ACCOUNTS", kommo_accounts.join(",")),
        ("CHAT_SERVICE_URL", format!("{chat_url}/events")),
        ("CHAT_SERVICE_SECRET", chat_secret_text.clone()),
        ("TABLE_NAME", table.clone()),
        ("TIMER_QUEUE_URL", queue.clone()),
        ("SQS_ENDPOINT", format!("http://127.0.0.1:{moto_port}")),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        // The template's level; the harness's own RUST_LOG, when set, for a closer look.
        ("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())),
        ("NO_COLOR", "1".into()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let mut start_function = |name: &'static str, binary: &Path, timeout: Duration, kill_share: f64| {
        let mut env = env.clone();
        env.push(("AWS_LAMBDA_FUNCTION_NAME".into(), name.into()));
        let spec = FunctionSpec {
            name,
            binary: binary.to_path_buf(),
            env,
            timeout,
            kill_share,
            environments: args.environments,
            log: out.join(format!("{name}.log")),
            store_url: store_url.clone(),
        };
        Function::start(spec, rng.next())
    };
    let webhook = start_function("kommo-webhook", &binaries[0], template.webhook_timeout, args.kill_webhook);
    let callback = start_function("chat-callback", &binaries[1], template.callback_timeout, args.kill_callback);
    let expiry = start_function("typing-expiry", &binaries[2], template.expiry_timeout, args.kill_expiry);
    let (webhook_port, callback_port) = (webhook.front().await?, callback.front().await?);
    let source = Arc::new(EventSource {
        sqs: sqs.clone(),
        queue: queue.clone(),
        function: expiry.clone(),
        batch_size: template.batch_size,
        max_receive_count: template.max_receive_count,
        duplicate_share: args.duplicate_sqs,
        rng: std::sync::Mutex::new(Rng::new(rng.next())),
        stats: SourceStats::default(),
        stop: AtomicBool::new(false),
        polling: AtomicU64::new(0),
        trace: std::sync::Mutex::new(
            std::fs::File::create(out.join("batches.log")).map_err(|e| format!("cannot write batches.log: {e}"))?,
        ),
    });
    let pollers: Vec<_> = (0..args.environments).map(|_| tokio::spawn(source.clone().poll())).collect();

    println!(
        "bridge-chaos: seed {seed}; {} conversations over {} accounts (channel {channel}); {} environments per function",
        args.conversations,
        accounts.len(),
        args.environments
    );
    println!(
        "bridge-chaos: template: timeouts {} / {} / {} s (kommo-webhook / chat-callback / typing-expiry), visibility timeout {} s (used: {visibility_s} s), maxReceiveCount {}, BatchSize {}",
        template.webhook_timeout.as_secs(),
        template.callback_timeout.as_secs(),
        template.expiry_timeout.as_secs(),
        template.visibility_timeout_s,
        template.max_receive_count,
        template.batch_size
    );
    println!(
        "bridge-chaos: kills: typing-expiry {:.0} % of batches, chat-callback {:.0} %, kommo-webhook {:.0} % of invocations; timer messages delivered twice: {:.0} %",
        args.kill_expiry * 100.0,
        args.kill_callback * 100.0,
        args.kill_webhook * 100.0,
        args.duplicate_sqs * 100.0
    );
    println!("bridge-chaos: logs in {}", out.display());

    // The conversations, and the faults beside them.
    let ctx = Arc::new(Ctx::new(
        format!("http://127.0.0.1:{webhook_port}"),
        format!("http://127.0.0.1:{callback_port}"),
        channel_secret.clone(),
        chat_secret,
        integration_secret,
    )?);
    let admin_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let watcher = tokio::spawn(ctx.clone().watch_relays(FakeAdmin::new(&chat_url, admin_http.clone()), scopes.clone()));
    let conversations: Vec<Conv> = (0..args.conversations)
        .map(|index| {
            let (account_numeric, amojo_account) = accounts[index % accounts.len()].clone();
            Conv {
                index,
                scope: format!("{channel}_{amojo_account}"),
                amojo_account,
                account_numeric,
                conversation_id: format!("conv-{index}"),
                client_id: format!("client-{index}"),
                manager: 1000 + index as u64,
                kommo_chat_id: format!("kommo-chat-{index}"),
                kommo_client_id: format!("kommo-client-{index}"),
            }
        })
        .collect();
    let schedule = faults::schedule(rng.next(), ACTIVE, args.stalls, args.stall, args.peer_faults);
    println!("bridge-chaos: fault schedule:");
    for fault in &schedule {
        println!("  {}", fault.describe());
    }
    let start = Instant::now();
    let fault_run = tokio::spawn(faults::run(
        schedule.clone(),
        start,
        store.clone(),
        support::Fake::at(&amojo_url, &channel_secret),
        support::Fake::at(&chat_url, &chat_secret_text),
        scopes.clone(),
    ));
    let plays: Vec<_> =
        conversations.iter().map(|conv| tokio::spawn(scenario::run(ctx.clone(), conv.clone(), rng.next()))).collect();
    for play in plays {
        play.await.map_err(|e| format!("a conversation failed: {e}"))?;
    }
    fault_run.await.map_err(|e| format!("the fault schedule failed: {e}"))?;
    let played = start.elapsed();
    println!("bridge-chaos: conversations done in {:.1} s; settling", played.as_secs_f64());

    // Settle.
    let amojo_admin = FakeAdmin::new(&amojo_url, admin_http.clone());
    let chat_admin = FakeAdmin::new(&chat_url, admin_http);
    let settle_started = Instant::now();
    let (mut quiet_since, mut last_counts) = (Instant::now(), (0, 0));
    let mut last_depth: [u64; 3];
    let settled = loop {
        let (chat_records, amojo_records) = fetch(&chat_admin, &amojo_admin, &scopes).await?;
        let counts = (chat_records.len(), amojo_records.len());
        if counts != last_counts {
            (quiet_since, last_counts) = (Instant::now(), counts);
        }
        last_depth = sqs.depth(&queue).await.unwrap_or([u64::MAX; 3]);
        let busy = ctx.sending.load(Ordering::SeqCst) > 0
            || [&webhook, &callback, &expiry].iter().any(|f| f.busy())
            || source.polling.load(Ordering::SeqCst) > 0;
        if !busy && last_depth == [0; 3] && quiet_since.elapsed() >= QUIET {
            break true;
        }
        if settle_started.elapsed() >= args.settle {
            break false;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let settle_time = settle_started.elapsed();
    source.stop.store(true, Ordering::SeqCst);
    watcher.abort();
    let (chat_records, amojo_records) = fetch(&chat_admin, &amojo_admin, &scopes).await?;
    for poller in pollers {
        poller.abort();
    }
    let log = std::mem::take(&mut *ctx.log.lock().expect("not poisoned"));
    let runs = source.stats.runs.lock().expect("not poisoned").clone();
    let cut_off: Vec<(i64, i64)> = [&webhook, &callback, &expiry]
        .iter()
        .flat_map(|f| f.stats.cut_off.lock().expect("not poisoned").clone())
        .collect();
    let findings = reconcile::reconcile(&chat_records, &amojo_records, &log, settled, &runs, &cut_off, sim::now_ms());

    // The report.
    println!();
    println!("{:<90} {:>8} {:>10}", "promise", "checked", "violations");
    for check in &findings.checks {
        println!("{:<90} {:>8} {:>10}", check.name, check.checked, check.violations);
    }
    println!();
    println!("figures");
    let functions = [&webhook, &callback, &expiry];
    for function in functions {
        let s = &function.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        println!(
            "  {}: {} invocations, {} cold starts, {} answered, {} function errors, {} killed ({} after a store call, {} in time, {} at the answer), {} timed out, {} crashed, {} store calls",
            function.name,
            load(&s.invocations),
            load(&s.cold_starts),
            load(&s.responses),
            load(&s.errors),
            s.kills(),
            load(&s.killed_after_store_call),
            load(&s.killed_in_time),
            load(&s.killed_at_answer),
            load(&s.timed_out),
            load(&s.crashed),
            load(&s.store_calls)
        );
    }
    let q = &source.stats;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "  timer queue: {} batches of {} records, {} deleted, {} named in batchItemFailures, {} batches failed whole, {} delivered twice (injected), {} dead-lettered {:?}",
        load(&q.batches),
        load(&q.records),
        load(&q.deleted),
        load(&q.item_failures),
        load(&q.failed_batches),
        load(&q.duplicates),
        load(&q.dead_lettered),
        q.dead_kinds.lock().expect("not poisoned")
    );
    let kinds: Vec<String> =
        q.kinds.lock().expect("not poisoned").iter().map(|(kind, count)| format!("{kind} {count}")).collect();
    println!("  timer records by kind of work: {}", kinds.join(", "));
    let mut most: Vec<(&String, &sqs::Run)> = runs.iter().collect();
    most.sort_by_key(|(_, run)| std::cmp::Reverse(run.count));
    let most: Vec<String> = most.iter().take(3).map(|(what, run)| format!("{what} ×{}", run.count)).collect();
    println!("  timer work run most often: {}", most.join("; "));
    let stalls = schedule.iter().filter(|f| matches!(f.kind, faults::Kind::Stall)).count();
    println!(
        "  faults injected: {stalls} store stalls, {} peer windows, {} kills (typing-expiry {}, chat-callback {}, kommo-webhook {}), {} timeouts, {} duplicate deliveries",
        schedule.len() - stalls,
        functions.iter().map(|f| f.stats.kills()).sum::<u64>(),
        expiry.stats.kills(),
        callback.stats.kills(),
        webhook.stats.kills(),
        functions.iter().map(|f| load(&f.stats.timed_out)).sum::<u64>(),
        load(&q.duplicates)
    );
    for (name, value) in &findings.figures {
        println!("  {name}: {value}");
    }
    match settled {
        true => println!("  settle time: {:.1} s", settle_time.as_secs_f64()),
        false => println!(
            "  NOT settled within {} s (queue visible / in flight / delayed: {last_depth:?})",
            args.settle.as_secs()
        ),
    }
    println!("  run time: {:.1} s", started.elapsed().as_secs_f64());

    let broken: Vec<&reconcile::Check> = findings.checks.iter().filter(|c| c.violations > 0).collect();
    if !broken.is_empty() {
        println!();
        println!("examples");
        for check in &broken {
            for example in &check.examples {
                println!("  {}: {example}", check.name);
            }
        }
    }
    let report = json!({
        "seed": seed,
        "args": {"conversations": args.conversations, "accounts": accounts.len(), "environments": args.environments,
                 "stalls": args.stalls, "stall_s": args.stall.as_secs_f64(), "kill_expiry": args.kill_expiry,
                 "kill_callback": args.kill_callback, "kill_webhook": args.kill_webhook,
                 "duplicate_sqs": args.duplicate_sqs, "peer_faults": args.peer_faults,
                 "visibility_timeout_s": visibility_s, "settle_bound_s": args.settle.as_secs()},
        "faults": schedule.iter().map(faults::Fault::describe).collect::<Vec<_>>(),
        "functions": functions.iter().map(|f| function_json(f)).collect::<Vec<_>>(),
        "checks": findings.checks.iter().map(reconcile::Check::to_json).collect::<Vec<_>>(),
        "figures": findings.figures.iter().map(|(name, value)| json!({"figure": name.trim(), "value": value})).collect::<Vec<_>>(),
        "settled": settled, "settle_s": settle_time.as_secs_f64(), "run_s": started.elapsed().as_secs_f64(),
    });
    // What the fakes recorded, for tracing an example back.
    for (name, records) in [("chat-service-calls.json", &chat_records), ("amojo-calls.json", &amojo_records)] {
        let path = out.join(name);
        std::fs::write(&path, serde_json::to_string(records).expect("JSON serialises"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let report_path = out.join("report.json");
    let pretty = serde_json::to_string_pretty(&report).expect("JSON serialises");
    std::fs::write(&report_path, pretty + "\n").map_err(|e| format!("cannot write {}: {e}", report_path.display()))?;
    println!();
    println!("report: {}", report_path.display());
    if broken.is_empty() {
        println!("RESULT: PASS");
    } else {
        let names: Vec<String> = broken.iter().map(|c| format!("{} ({})", c.name, c.violations)).collect();
        println!("RESULT: FAIL: {}", names.join("; "));
    }
    Ok(broken.is_empty())
}

fn function_json(function: &Function) -> Value {
    let s = &function.stats;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    json!({"name": function.name, "invocations": load(&s.invocations), "cold_starts": load(&s.cold_starts),
           "responses": load(&s.responses), "errors": load(&s.errors), "kills": s.kills(),
           "killed_after_store_call": load(&s.killed_after_store_call), "killed_in_time": load(&s.killed_in_time),
           "killed_at_answer": load(&s.killed_at_answer), "timed_out": load(&s.timed_out),
           "crashed": load(&s.crashed), "store_calls": load(&s.store_calls)})
}

/// Every call the fakes recorded for the run's scopes: the chat service's, amojo's.
async fn fetch(chat: &FakeAdmin, amojo: &FakeAdmin, scopes: &[String]) -> Result<(Vec<Value>, Vec<Value>), String> {
    let (mut chat_records, mut amojo_records) = (Vec::new(), Vec::new());
    for scope in scopes {
        chat_records.extend(chat.calls(scope).await?);
        amojo_records.extend(amojo.calls(scope).await?);
    }
    Ok((chat_records, amojo_records))
}
