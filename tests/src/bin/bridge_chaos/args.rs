//! The command line, and the deployed settings read from the SAM template.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub const USAGE: &str = "\
usage: bridge-chaos [options]

  --conversations N       conversations (default 20)
  --accounts K            Kommo accounts (scopes) they are spread over (default min(N, 4))
  --environments E        execution environments per function (default 2)
  --stalls S              store stalls (default 2)
  --stall-seconds T       how long each stall lasts (default 4)
  --kill-expiry P         share of typing-expiry batches killed mid-flight (default 0.15)
  --kill-callback P       share of chat-callback invocations killed mid-flight (default 0.05)
  --kill-webhook P        share of kommo-webhook invocations killed mid-flight (default 0)
  --duplicate-sqs P       share of timer messages delivered twice (default 0.03)
  --peer-faults F         windows of 2-4 s in which a peer answers 5xx, 429 or slowly (default 4)
  --visibility-timeout S  the timer queue's visibility timeout (default: the template's)
  --settle-seconds T      bound on the wait for the run to settle (default 180)
  --seed X                the seed of the scenario and the faults (default: from the clock; printed)
  --out DIR               logs and report (default target/chaos/seed-<X>)
  --functions DIR         where the three function binaries are (default: beside this one)

Needs target/debug/{kommo-webhook,chat-callback,typing-expiry,dynamodb-test-server} (cargo build
--workspace --bins) and .venv (tests/run-all makes it). Exit 0: every promise kept; 1: a promise
broken; 2: bad usage or the topology could not start.";

pub struct Args {
    pub conversations: usize,
    pub accounts: usize,
    pub environments: usize,
    pub stalls: usize,
    pub stall: Duration,
    pub kill_expiry: f64,
    pub kill_callback: f64,
    pub kill_webhook: f64,
    pub duplicate_sqs: f64,
    pub peer_faults: usize,
    pub visibility_timeout_s: Option<u64>,
    pub settle: Duration,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
    pub functions: Option<PathBuf>,
}

impl Args {
    /// The options after the program's name; `--help` prints the usage and exits.
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Self {
            conversations: 20,
            accounts: 4,
            environments: 2,
            stalls: 2,
            stall: Duration::from_secs(4),
            kill_expiry: 0.15,
            kill_callback: 0.05,
            kill_webhook: 0.0,
            duplicate_sqs: 0.03,
            peer_faults: 4,
            visibility_timeout_s: None,
            settle: Duration::from_secs(180),
            seed: None,
            out: None,
            functions: None,
        };
        let mut args = args.peekable();
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let text = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || text.parse::<f64>().map_err(|_| format!("{flag}: {text:?} is not a number"));
            let whole = || text.parse::<u64>().map_err(|_| format!("{flag}: {text:?} is not a whole number"));
            let share = || {
                number()
                    .and_then(|p| (0.0..=1.0).contains(&p).then_some(p).ok_or(format!("{flag}: a share from 0 to 1")))
            };
            match flag.as_str() {
                "--conversations" => parsed.conversations = whole()? as usize,
                "--accounts" => parsed.accounts = whole()? as usize,
                "--environments" => parsed.environments = whole()? as usize,
                "--stalls" => parsed.stalls = whole()? as usize,
                "--stall-seconds" => parsed.stall = Duration::from_secs_f64(number()?.max(0.0)),
                "--kill-expiry" => parsed.kill_expiry = share()?,
                "--kill-callback" => parsed.kill_callback = share()?,
                "--kill-webhook" => parsed.kill_webhook = share()?,
                "--duplicate-sqs" => parsed.duplicate_sqs = share()?,
                "--peer-faults" => parsed.peer_faults = whole()? as usize,
                "--visibility-timeout" => parsed.visibility_timeout_s = Some(whole()?.max(1)),
                "--settle-seconds" => parsed.settle = Duration::from_secs(whole()?),
                "--seed" => parsed.seed = Some(whole()?),
                "--out" => parsed.out = Some(PathBuf::from(text)),
                "--functions" => parsed.functions = Some(PathBuf::from(text)),
                other => return Err(format!("unexpected argument {other:?}")),
            }
        }
        if parsed.conversations == 0 || parsed.accounts == 0 || parsed.environments == 0 {
            return Err("--conversations, --accounts and --environments must be at least 1".into());
        }
        parsed.accounts = parsed.accounts.min(parsed.conversations);
        Ok(parsed)
    }
}

/// What the SAM template deploys, as far as the harness models it.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    pub webhook_timeout: Duration,
    pub callback_timeout: Duration,
    pub expiry_timeout: Duration,
    pub visibility_timeout_s: u64,
    pub max_receive_count: u64,
    pub batch_size: u64,
}

impl Template {
    /// Reads `infra/template.yaml`: each value from the resource that sets it.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let number = |resource: &str, key: &str| -> Result<u64, String> {
            setting(&text, resource, key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{}: no number {key} in {resource}", path.display()))
        };
        Ok(Self {
            webhook_timeout: Duration::from_secs(number("KommoWebhookFunction", "Timeout")?),
            callback_timeout: Duration::from_secs(number("ChatCallbackFunction", "Timeout")?),
            expiry_timeout: Duration::from_secs(number("TypingExpiryFunction", "Timeout")?),
            visibility_timeout_s: number("TimerQueue", "VisibilityTimeout")?,
            max_receive_count: number("TimerQueue", "maxReceiveCount")?,
            batch_size: number("TypingExpiryFunction", "BatchSize")?,
        })
    }
}

/// The value of the first `key:` inside the top-level resource `resource:` (indented two
/// spaces under `Resources:`), its comments left out.
fn setting(text: &str, resource: &str, key: &str) -> Option<String> {
    let header = format!("  {resource}:");
    let mut lines = text.lines().skip_while(|line| line.trim_end() != header).skip(1);
    lines
        .by_ref()
        .take_while(|line| line.trim().is_empty() || line.starts_with("   ") || line.trim_start().starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.trim().split_once(':')?;
            (name == key).then(|| value.split('#').next().unwrap_or_default().trim().to_owned())
        })
}
