//! The load test and the end-to-end latency benchmark of the bridge (tests/LOAD.md).
//!
//! `bridge-load --conversations N --seconds S` starts a dev server of its own (target/debug/dev-server)
//! on DynamoDB (Dynoxide at TEST_DYNAMODB_ENDPOINT), between the fake amojo and the fake chat
//! service (FAKE_AMOJO_URL/SECRET, FAKE_CHAT_URL/SECRET), on scopes of its own. N conversations
//! then each play, at a fixed pace, both sides of a live chat for S seconds: the client typing,
//! writing and coming online (the chat service's events), the manager typing and writing
//! (Kommo's webhooks), receipts for the manager's messages, reactions both ways, and the Kommo
//! UI widget (viewing heartbeats, presence reads, read on open, preflights); one conversation in
//! ten is a chat the manager started in Kommo ("write first"). Every request is timed per route.
//! After the load it waits (bounded) for the in-process timers to settle and reconciles what
//! the fakes recorded with what the bridge acknowledged: nothing lost, nothing delivered twice,
//! no status backwards, no indicator left on, every presence read as the model says, every
//! write-first reply in Kommo's chat without a chat created. It prints
//! tables, writes target/bench/load-<N>x<S>.json, and exits 1 on any non-2xx, loss,
//! duplication, presence mismatch, ERROR line in the dev server's log, or category that
//! reconciled fewer than its minimum.

#[path = "bridge_load/minimums.rs"]
mod minimums;
#[path = "bridge_load/presence.rs"]
mod presence;
#[path = "bridge_load/reconcile.rs"]
mod reconcile;
#[path = "bridge_load/report.rs"]
mod report;
#[path = "bridge_load/servers.rs"]
mod servers;
#[path = "bridge_load/sim.rs"]
mod sim;
#[path = "bridge_load/stats.rs"]
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use shared::random::random_bytes;
use shared::signing::standard_webhooks::WebhookSecret;

use crate::presence::ReadTally;
use crate::reconcile::{Fetched, reconcile};
use crate::servers::{DevServer, FakeAdmin, Servers};
use crate::sim::{Conversation, Ctx, Outcome, Spec, WriteFirst};

const USAGE: &str = "\
usage: bridge-load [--conversations N] [--seconds S] [options]

  --conversations N     concurrent conversations (default 50)
  --seconds S           how long each plays (default 20)
  --accounts K          Kommo accounts (scopes) they are spread over (default min(N, 10))
  --interval-ms M       mean pause between two actions of a conversation, drawn in M ±M/3 (default 150)
  --duplicate-percent P how often a message is re-sent, as the chat service's retry or Kommo's (default 5)
  --settle-seconds T    how long to wait for the timers to settle after the load (default 30)
  --seed X              the random seed (default: from the clock; printed)
  --out FILE            the JSON report (default target/bench/load-<N>x<S>.json)
  --dev-env NAME=VALUE  extra configuration for the dev server (repeatable)
  --dev-server FILE     the dev server binary (default: target/<profile>/dev-server beside this one)

Needs FAKE_AMOJO_URL, FAKE_AMOJO_SECRET, FAKE_CHAT_URL, FAKE_CHAT_SECRET and TEST_DYNAMODB_ENDPOINT
(tests/load/with-servers sets them) and target/debug/dev-server. Exit 0: every request 2xx, nothing
lost or duplicated, every presence read as expected, no ERROR in the dev server's log, every
category at its minimum; 1: a failure; 2: bad usage or missing servers.";

/// Dev server log lines shown as examples, and the characters kept of each.
const LOG_ERROR_EXAMPLES: usize = 5;
const LOG_LINE_MAX_CHARS: usize = 300;
/// Presence mismatches shown as examples over the run.
const PRESENCE_MISMATCH_EXAMPLES: usize = 10;
/// shared::app::config's default `PRESENCE_WINDOW_S`.
const DEFAULT_PRESENCE_WINDOW_S: i64 = 60;
/// One conversation in this many is a chat the manager started in Kommo ("write first").
const WRITE_FIRST_EVERY: usize = 10;

struct Args {
    conversations: usize,
    seconds: u64,
    accounts: usize,
    interval_ms: u64,
    duplicate_percent: u64,
    settle_seconds: u64,
    seed: Option<u64>,
    out: Option<PathBuf>,
    dev_env: Vec<(String, String)>,
    dev_server: Option<PathBuf>,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let mut parsed = Self {
            conversations: 50,
            seconds: 20,
            accounts: 10,
            interval_ms: 150,
            duplicate_percent: 5,
            settle_seconds: 30,
            seed: None,
            out: None,
            dev_env: Vec::new(),
            dev_server: None,
        };
        fn number<T: std::str::FromStr>(name: &str, value: Option<String>) -> Result<T, String> {
            let value = value.ok_or_else(|| format!("{name} needs a value"))?;
            value.parse().map_err(|_| format!("{name}: {value:?} is not a valid number"))
        }
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--conversations" => parsed.conversations = number(&arg, args.next())?,
                "--seconds" => parsed.seconds = number(&arg, args.next())?,
                "--accounts" => parsed.accounts = number(&arg, args.next())?,
                "--interval-ms" => parsed.interval_ms = number(&arg, args.next())?,
                "--duplicate-percent" => parsed.duplicate_percent = number(&arg, args.next())?,
                "--settle-seconds" => parsed.settle_seconds = number(&arg, args.next())?,
                "--seed" => parsed.seed = Some(number(&arg, args.next())?),
                "--out" => parsed.out = Some(PathBuf::from(args.next().ok_or("--out needs a file")?)),
                "--dev-server" => {
                    parsed.dev_server = Some(PathBuf::from(args.next().ok_or("--dev-server needs a file")?))
                }
                "--dev-env" => {
                    let pair = args.next().ok_or("--dev-env needs NAME=VALUE")?;
                    let (name, value) =
                        pair.split_once('=').ok_or_else(|| format!("--dev-env {pair:?}: not NAME=VALUE"))?;
                    parsed.dev_env.push((name.to_owned(), value.to_owned()));
                }
                other => return Err(format!("unexpected argument {other:?}")),
            }
        }
        if parsed.conversations == 0 || parsed.seconds == 0 || parsed.accounts == 0 || parsed.interval_ms < 3 {
            return Err("--conversations, --seconds and --accounts must be at least 1, --interval-ms at least 3".into());
        }
        if parsed.duplicate_percent > 100 {
            return Err("--duplicate-percent is at most 100".into());
        }
        parsed.accounts = parsed.accounts.min(parsed.conversations);
        Ok(Some(parsed))
    }
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("bridge-load: {problem}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let servers = match Servers::from_env() {
        Ok(servers) => servers,
        Err(problem) => {
            eprintln!("bridge-load: {problem}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    match runtime.block_on(run(args, servers)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(problem) => {
            eprintln!("bridge-load: FAILED: {problem}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, servers: Servers) -> Result<bool, String> {
    let seed = args.seed.unwrap_or_else(|| u64::from_le_bytes(random_bytes::<8>()) >> 11);
    let channel = format!("load{}", hex::encode(random_bytes::<4>()));
    let accounts: Vec<(u32, String)> = (1..=args.accounts as u32).map(|k| (k, format!("acc-{k}"))).collect();
    let kommo_accounts: Vec<String> = accounts.iter().map(|(k, amojo)| format!("{k}:{amojo}")).collect();
    let integration_secret = hex::encode(random_bytes::<32>());
    let table = format!("{channel}-table");
    let chat_secret = WebhookSecret::parse(&servers.chat_secret)
        .map_err(|e| format!("FAKE_CHAT_SECRET is not a Standard Webhooks secret: {e}"))?;

    let bench = servers::target_dir().join("bench");
    std::fs::create_dir_all(&bench).map_err(|e| format!("cannot create {}: {e}", bench.display()))?;
    let out =
        args.out.clone().unwrap_or_else(|| bench.join(format!("load-{}x{}.json", args.conversations, args.seconds)));
    let log = out.with_extension("dev-server.log");

    let mut env: Vec<(String, String)> = vec![
        ("KOMMO_CHANNEL_ID".into(), channel.clone()),
        ("KOMMO_CHANNEL_SECRET".into(), servers.amojo_secret.clone()),
        ("KOMMO_AMOJO_URL".into(), servers.amojo_url.clone()),
        ("CHAT_SERVICE_URL".into(), format!("{}/events", servers.chat_url)),
        ("CHAT_SERVICE_SECRET".into(), servers.chat_secret.clone()),
        ("KOMMO_INTEGRATION_SECRET".into(), integration_secret.clone()),
        ("KOMMO_ACCOUNTS".into(), kommo_accounts.join(",")),
        ("DYNAMODB_ENDPOINT".into(), servers.dynamodb.clone()),
        ("TABLE_NAME".into(), table.clone()),
    ];
    env.extend(args.dev_env.iter().cloned());
    let binary = match &args.dev_server {
        Some(path) if path.exists() => path.clone(),
        Some(path) => return Err(format!("{} does not exist", path.display())),
        None => servers::sibling_binary("dev-server")?,
    };
    let mut dev_server = DevServer::start(&binary, &env, &log)?;

    let pace = args.conversations as f64 * 1000.0 / args.interval_ms as f64;
    println!(
        "bridge-load: {} conversations × {} s over {} accounts (channel {channel}, seed {seed}); \
         one action per {} ms ±{} per conversation ≈ {pace:.0} actions/s",
        args.conversations,
        args.seconds,
        accounts.len(),
        args.interval_ms,
        args.interval_ms / 3
    );
    println!(
        "bridge-load: dev server {} on DynamoDB {} (table {table}) between fake amojo {} and fake chat service {}",
        dev_server.base, servers.dynamodb, servers.amojo_url, servers.chat_url
    );

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.conversations + 16)
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let ctx = Arc::new(Ctx {
        base: dev_server.base.clone(),
        http,
        channel_secret: servers.amojo_secret.clone(),
        chat_secret,
        integration_secret,
        interval_ms: args.interval_ms,
        duplicate_percent: args.duplicate_percent,
        presence_window_ms: dev_env_value(&args.dev_env, "PRESENCE_WINDOW_S")
            .and_then(|value| value.parse::<i64>().ok())
            .unwrap_or(DEFAULT_PRESENCE_WINDOW_S)
            * 1000,
        forward_manager_presence: !switched_off(&args.dev_env, "FORWARD_MANAGER_PRESENCE"),
    });
    // The fakes' admin API: the write-first chats now, the reconciliation after the load.
    let admin_http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let amojo = FakeAdmin::new(&servers.amojo_url, admin_http.clone());
    let chat = FakeAdmin::new(&servers.chat_url, admin_http);
    let mut specs: Vec<Spec> = Vec::with_capacity(args.conversations);
    // Which conversations are write-first: one in each WRITE_FIRST_EVERY, at an offset drawn from
    // the seed and shifted by one each block (so that they spread over the accounts), at least
    // one however few the conversations; answered in variants a and b by turns.
    let write_first_offset = (seed % WRITE_FIRST_EVERY.min(args.conversations) as u64) as usize;
    for index in 0..args.conversations {
        let (account_numeric, amojo_account) = accounts[index % accounts.len()].clone();
        let scope = format!("{channel}_{amojo_account}");
        let in_block = (index % WRITE_FIRST_EVERY + index / WRITE_FIRST_EVERY) % WRITE_FIRST_EVERY;
        let write_first = (in_block == write_first_offset).then(|| {
            if (index / WRITE_FIRST_EVERY).is_multiple_of(2) { WriteFirst::KommoId } else { WriteFirst::OwnId }
        });
        let (conversation_id, kommo_chat_id, kommo_client_id) = match write_first {
            None => (format!("conv-{index}"), format!("kommo-chat-{index}"), format!("kommo-client-{index}")),
            Some(variant) => {
                // A chat the manager started: Kommo's ids of it and of the client, from the fake.
                let (chat_id, client_id) = amojo.kommo_chat(&scope).await?;
                let conversation_id = match variant {
                    WriteFirst::KommoId => chat_id.clone(),
                    WriteFirst::OwnId => format!("conv-{index}"),
                };
                (conversation_id, chat_id, client_id)
            }
        };
        specs.push(Spec {
            index,
            scope,
            account_numeric,
            amojo_account,
            conversation_id,
            client_id: format!("client-{index}"),
            manager: 1000 + index as u64,
            kommo_chat_id,
            kommo_client_id,
            write_first,
        });
    }
    let write_first_count = specs.iter().filter(|spec| spec.write_first.is_some()).count();
    if write_first_count > 0 {
        println!(
            "bridge-load: {write_first_count} conversations start as chats the manager started in Kommo (write first: one in {WRITE_FIRST_EVERY})"
        );
    }
    let scopes: Vec<String> = accounts.iter().map(|(_, amojo)| format!("{channel}_{amojo}")).collect();

    let load_before = load_average();
    let start = Instant::now() + Duration::from_millis(200);
    let deadline = start + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = specs
        .into_iter()
        .map(|spec| {
            let conversation_seed = seed ^ (spec.index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let conversation = Conversation::new(ctx.clone(), spec, conversation_seed);
            tokio::spawn(conversation.run(start, deadline))
        })
        .collect();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(tasks.len());
    for task in tasks {
        outcomes.push(task.await.map_err(|e| format!("a conversation task failed: {e}"))?);
    }
    let load_s = start.elapsed().as_secs_f64();
    let load_after = load_average();
    let requests: u64 = outcomes.iter().map(|o| o.requests).sum();
    let failures: Vec<&sim::Failure> = outcomes.iter().flat_map(|o| o.failures.iter()).collect();
    let count_if = |f: &dyn Fn(Option<u16>) -> bool| failures.iter().filter(|x| f(x.status)).count() as u64;
    let (status_5xx, status_4xx, no_answer) = (
        count_if(&|s| s.is_some_and(|s| s >= 500)),
        count_if(&|s| s.is_some_and(|s| s < 500)),
        count_if(&|s| s.is_none()),
    );
    println!(
        "bridge-load: load done: {} requests in {load_s:.1} s = {:.1} requests/s; non-2xx {} (5xx {status_5xx}, 4xx {status_4xx}, no answer {no_answer}); \
         machine load average {load_before} before, {load_after} after ({} cores)",
        report::thousands(requests),
        requests as f64 / load_s,
        failures.len(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );

    // Settle: the in-process timers (relays, imports, status reports, typing and presence
    // checks) finish behind the acknowledgements; poll the fakes until nothing is missing.
    let settle_started = Instant::now();
    let settle_bound = Duration::from_secs(args.settle_seconds);
    let (reconciliation, settled_after) = loop {
        let fetched = fetch(&amojo, &chat, &scopes).await?;
        let reconciliation = reconcile(&fetched, &outcomes);
        if reconciliation.settled() {
            let settled_after = settle_started.elapsed();
            // Room for a late duplicate, then the final look.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let fetched = fetch(&amojo, &chat, &scopes).await?;
            break (reconcile(&fetched, &outcomes), Some(settled_after));
        }
        if settle_started.elapsed() >= settle_bound {
            break (reconciliation, None);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let alive = dev_server.alive();
    dev_server.stop();

    let table = report::RouteTable::build(&outcomes);
    println!();
    print!("{}", report::routes_table(&table));
    println!();
    print!("{}", report::delivery_table(&reconciliation));
    println!();
    print!("{}", report::reconciliation_table(&reconciliation));
    let (mut widget_reads, mut chat_reads) = (ReadTally::default(), ReadTally::default());
    for outcome in &outcomes {
        widget_reads.add(&outcome.widget_presence_reads);
        chat_reads.add(&outcome.chat_presence_reads);
    }
    let presence_mismatches: Vec<&String> =
        outcomes.iter().flat_map(|o| o.presence_mismatches.iter()).take(PRESENCE_MISMATCH_EXAMPLES).collect();
    for (what, reads) in [("the widget's GET …/presence", widget_reads), ("GET /chat/presence", chat_reads)] {
        println!(
            "presence reads, {what}: {} checked, {} disagreed with the model; left out: {} near a window edge, {} unknown",
            reads.checked, reads.mismatched, reads.near_window_edge, reads.unknown
        );
    }
    match settled_after {
        Some(after) => {
            println!("settled {:.1} s after the load (bound {} s)", after.as_secs_f64(), args.settle_seconds)
        }
        None => println!("NOT settled within {} s after the load", args.settle_seconds),
    }

    let log_text = strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
    let error_lines: Vec<&str> = log_text.lines().filter(|line| is_error_line(line)).collect();
    let log_errors = error_lines.len();
    let log_warnings = log_text.lines().filter(|l| l.contains(" WARN ")).count();
    let error_examples: Vec<String> =
        error_lines.iter().take(LOG_ERROR_EXAMPLES).map(|line| truncated(line, LOG_LINE_MAX_CHARS)).collect();
    println!("dev server log: {} ({log_errors} errors, {log_warnings} warnings)", log.display());

    let paced_actions = minimums::paced_actions(args.conversations, args.seconds, args.interval_ms);
    let coverage = minimums::coverage(&reconciliation, &widget_reads, &chat_reads, paced_actions, |switch| {
        switched_off(&args.dev_env, switch)
    });
    println!();
    print!("{}", minimums::table(&coverage));

    let mut problems = reconciliation.problems();
    if widget_reads.mismatched > 0 {
        problems.push(format!(
            "{} widget presence reads disagreed with the client's presence window",
            widget_reads.mismatched
        ));
    }
    if chat_reads.mismatched > 0 {
        problems.push(format!(
            "{} GET /chat/presence reads disagreed with the manager's viewing window",
            chat_reads.mismatched
        ));
    }
    if log_errors > 0 {
        problems.push(format!("{log_errors} ERROR lines (or panics) in the dev server's log"));
    }
    for short in coverage.iter().filter(|c| c.short()) {
        problems.push(format!("only {} {} (the minimum is {})", short.count, short.what, short.minimum));
    }
    if !failures.is_empty() {
        problems.insert(
            0,
            format!(
                "{} requests without a 2xx ({status_5xx} 5xx, {status_4xx} 4xx, {no_answer} unanswered)",
                failures.len()
            ),
        );
    }
    if settled_after.is_none() {
        problems.push(format!("not settled within {} s", args.settle_seconds));
    }
    if !alive {
        problems.push("the dev server exited during the run".into());
    }
    let uncovered = table.uncovered();
    if !uncovered.is_empty() {
        println!("note: no request on {} (a run too short to reach them)", uncovered.join(", "));
    }
    let passed = problems.is_empty();
    let document = json!({
        "run": {
            "conversations": args.conversations, "seconds": args.seconds, "accounts": accounts.len(),
            "interval_ms": args.interval_ms, "duplicate_percent": args.duplicate_percent, "seed": seed,
            "channel": channel, "started_at": sim::now_ms() / 1000 - load_s as i64,
            "dev_env": args.dev_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        },
        "load": {
            "requests": requests, "elapsed_s": report::seconds(load_s),
            "requests_per_s": report::seconds(requests as f64 / load_s), "pace_actions_per_s": report::seconds(pace),
            "non_2xx": failures.len(), "status_5xx": status_5xx, "status_4xx": status_4xx, "no_answer": no_answer,
            "machine_load_average_before": load_before, "machine_load_average_after": load_after,
            "cores": std::thread::available_parallelism().map_or(0, usize::from),
            "dev_server_binary": binary.display().to_string(),
        },
        "routes": table.to_json(),
        "uncovered_routes": uncovered,
        "failures": report::failures_json(&outcomes, 50),
        "presence_reads": {"widget": widget_reads.to_json(), "chat": chat_reads.to_json(),
                           "window_edge_margin_ms": presence::WINDOW_EDGE_MARGIN_MS,
                           "mismatch_examples": presence_mismatches},
        "reconciliation": reconciliation.to_json(),
        "minimums": {"paced_actions": report::seconds(paced_actions), "categories": minimums::to_json(&coverage)},
        "settled_after_s": settled_after.map(|d| report::seconds(d.as_secs_f64())),
        "dev_server": {"log": log.display().to_string(), "errors": log_errors, "warnings": log_warnings,
                       "error_examples": error_examples, "alive_at_end": alive},
        "result": if passed { "pass" } else { "fail" },
        "problems": problems,
    });
    let pretty = serde_json::to_string_pretty(&document).expect("JSON serialises");
    std::fs::write(&out, pretty + "\n").map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("report: {}", out.display());

    if passed {
        println!("RESULT: PASS");
    } else {
        for failure in failures.iter().take(10) {
            println!(
                "  {} {} → {}: {}",
                failure.key.route,
                failure.key.kind,
                failure.status.map_or("no answer".to_owned(), |s| s.to_string()),
                failure.detail
            );
        }
        for example in reconciliation.examples.iter().chain(presence_mismatches.iter().copied()) {
            println!("  {example}");
        }
        if log_errors > 0 {
            println!("dev server log, the first errors:");
            for line in &error_examples {
                println!("  {line}");
            }
        }
        println!("RESULT: FAIL: {}", problems.join("; "));
    }
    Ok(passed)
}

/// Text without ANSI colour sequences (ESC [ … letter).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A line of the dev server's log at level ERROR (tracing_subscriber's fmt format: the level,
/// padded to five, between spaces after the timestamp), or a panic's message (on stderr).
fn is_error_line(line: &str) -> bool {
    line.contains(" ERROR ") || line.contains(" panicked at ")
}

/// At most `max_chars` characters of `line`, marked when cut.
fn truncated(line: &str, max_chars: usize) -> String {
    match line.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

/// What `--dev-env` gives the dev server for `name`: the last one wins, as in its environment.
fn dev_env_value<'a>(dev_env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    dev_env.iter().rev().find(|(n, _)| n == name).map(|(_, value)| value.trim())
}

/// Whether `--dev-env` turns a dev-server switch off (the values shared::app::config reads as false).
fn switched_off(dev_env: &[(String, String)], name: &str) -> bool {
    dev_env_value(dev_env, name)
        .is_some_and(|value| matches!(value.to_ascii_lowercase().as_str(), "false" | "0" | "off" | "no"))
}

/// The machine's 1-minute load average (Linux), to read the latencies against.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Every call the fakes recorded for the run's scopes, and what the fake amojo holds of them.
async fn fetch(amojo: &FakeAdmin, chat: &FakeAdmin, scopes: &[String]) -> Result<Fetched, String> {
    let mut fetched = Fetched::default();
    for scope in scopes {
        fetched.amojo.extend(amojo.calls(scope).await?);
        fetched.chat.extend(chat.calls(scope).await?);
        fetched.amojo_state.insert(scope.clone(), amojo.state(scope).await?);
    }
    Ok(fetched)
}
