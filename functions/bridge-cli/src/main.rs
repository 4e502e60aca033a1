//! The operator's CLI for the bridge: the one-off steps (connect an account to the channel,
//! disconnect it), signing and sending test events to a running bridge as Kommo or as the chat
//! service would, and `demo`, which plays the product's scenario against a local dev server and
//! prints what Kommo and the chat service each received.

mod args;
mod cost;
mod demo;
mod recorder;
mod sources;

use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use args::Options;
use shared::adapters::amojo::AmojoClient;
use shared::models::kommo::{ConnectRequest, DisconnectRequest};
use shared::ports::kommo::KommoApi;
use shared::rules::retry::RetryPolicy;
use shared::signing::Secret;
use shared::signing::standard_webhooks::WebhookSecret;
use shared::signing::{kommo_webhook, one_time_token};
use shared::time::{Clock, SystemClock};

const USAGE: &str = "\
bridge-cli: the operator's one-off steps for the Kommo bridge

Usage:
  bridge-cli connect --account-id <amojo account id> [--title <title>] [--kommo-account-id <numeric id>]
      Connects a Kommo account to the channel (signed amojo connect, hook_api_version v2) and
      prints its scope_id; with --kommo-account-id, registers it in TABLE_NAME's registry (the
      Kommo UI then serves it), or without TABLE_NAME prints the KOMMO_ACCOUNTS entry to add.
  bridge-cli disconnect --account-id <amojo account id>
      Disconnects the account from the channel; with TABLE_NAME also marks it disconnected in
      the registry (its tokens deleted), so the bridge refuses its scope.
  bridge-cli accounts
      Lists the accounts installed through Kommo's OAuth (the registry in the table): numeric
      id, host, scope, state (connecting: the channel is being connected by queued work;
      connected, needs_reinstall, disconnected), when the access token expires and the refresh
      token was last renewed, and a note when Kommo refuses the account's users list (it was
      authorised by a user who is not an administrator: managers are named from the webhooks).
      Never a token.
  bridge-cli sources list --kommo-account-id <numeric id>
      Lists the integration's sources in an account installed through Kommo's OAuth, as Kommo
      has them, and which the bridge remembers (a message naming a source the account lacks
      creates it on first use).
  bridge-cli sources create --kommo-account-id <numeric id> --external-id <id> [--name <name>]
      Creates the source in Kommo (or finds it there) and remembers it, named for managers.
      Both need TABLE_NAME, KOMMO_CLIENT_ID, KOMMO_REDIRECT_URI, KOMMO_INTEGRATION_SECRET and
      KOMMO_TOKEN_KEY (and KOMMO_API_URL in place of the account's host, for tests).
  bridge-cli sign kommo --body <file|->
      Prints the X-Signature Kommo would put on the body (KOMMO_CHANNEL_SECRET).
  bridge-cli sign chat --body <file|->
      Prints the three Standard Webhooks headers the chat service would send (CHAT_SERVICE_SECRET).
  bridge-cli sign token --account-id <numeric id> --user-id <numeric id>
      Prints a Kommo UI one-time token, valid 10 minutes (KOMMO_INTEGRATION_SECRET).
  bridge-cli sign state --nonce <nonce>
      Prints a `state` for the integration's install button (KOMMO_INTEGRATION_SECRET): the
      Redirect URI refuses a state it did not sign, and accepts none (docs/installs.md). The
      nonce is 1 to 64 of A-Z a-z 0-9 - _.
  bridge-cli send kommo --url <bridge base URL> --scope <scope_id> --body <file|->
      Posts the body, signed as Kommo would, to <url>/kommo/webhook/<scope_id>; prints the answer.
  bridge-cli send chat --url <bridge base URL> --body <file|->
      Posts the body, signed as the chat service would, to <url>/chat/events; prints the answer.
  bridge-cli demo
      Starts a dev server (the dev-server binary beside this one) between two in-process
      recorders standing in for Kommo and the chat service, plays the product's scenario (the
      client types and writes, the manager types and stops, a message delivered then read, a
      failure with 905, the client online then away, the manager opening the conversation) and
      prints a timeline of what each side received. About 10 s.
  bridge-cli cost [--conversations-per-day N] [--messages-per-conversation N] [--manager-share F]
                  [--active-minutes N] [--manager-typing-share F] [--client-typing-share F]
                  [--client-online-minutes N] [--widget-hours-per-day N] [--endpoint http-api|function-url]
                  [--price-http-api-per-million X] [--price-lambda-requests-per-million X]
                  [--price-lambda-gb-second X] [--price-dynamodb-writes-per-million X]
                  [--price-dynamodb-reads-per-million X] [--price-sqs-per-million X]
                  [--price-logs-per-gb X] [--price-custom-metric-per-month X]
      Prints what an account's traffic costs a month on AWS (30 days), by event kind and by
      service, fixed costs included, from the cost table the amplification test asserts. Every
      flag is optional (a default profile of 100 conversations a day; US East prices); shares
      F are 0 to 1.
  bridge-cli --help

`--body -` reads the body from standard input. Options also take the form --name=value.

Environment (the same names as the functions):
  KOMMO_CHANNEL_ID          connect, disconnect
  KOMMO_CHANNEL_SECRET      connect, disconnect, sign kommo, send kommo
  KOMMO_AMOJO_URL           amojo's origin for connect and disconnect (default: KOMMO_PLATFORM's)
  KOMMO_PLATFORM            kommo (default: https://amojo.kommo.com) or amocrm (https://amojo.amocrm.ru)
  CHAT_SERVICE_SECRET       sign chat, send chat (whsec_...)
  KOMMO_INTEGRATION_SECRET  sign token, sign state
  KOMMO_ACCOUNTS            read by connect, to print the whole new value
  TABLE_NAME                accounts, connect --kommo-account-id and disconnect (the deployment's table)
  DYNAMODB_ENDPOINT         with TABLE_NAME: a DynamoDB endpoint instead of AWS's (a local server)

Exit status: 0 done; 1 failed (an error, or a bridge answering other than 2xx); 2 bad usage or configuration.
";

const DEFAULT_TITLE: &str = "Kommo bridge";
/// The Kommo account address a token made by `sign token` names as its issuer.
const TOKEN_ISSUER: &str = "https://example.kommo.com";
/// How long a token made by `sign token` is valid: time enough to paste it into a request.
const TOKEN_TTL_S: i64 = 600;
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How a command ended when it did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or configuration: exit 2 (with the usage for arguments).
    Usage(String),
    Config(String),
    /// The command ran and failed: exit 1.
    Failed(String),
}

impl From<args::UsageError> for Failure {
    fn from(error: args::UsageError) -> Self {
        Self::Usage(error.0)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("bridge-cli: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Config(message)) => {
            eprintln!("bridge-cli: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("bridge-cli: {message}");
            ExitCode::from(1)
        }
    }
}

async fn run(argv: &[String]) -> Result<(), Failure> {
    if argv.first().is_some_and(|a| a == "help") || argv.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return Ok(());
    }
    let Some((command, rest)) = argv.split_first() else {
        return Err(Failure::Usage("no command given".into()));
    };
    match command.as_str() {
        "connect" => connect(&args::parse(rest, &["account-id", "title", "kommo-account-id"])?).await,
        "disconnect" => disconnect(&args::parse(rest, &["account-id"])?).await,
        "accounts" => {
            args::parse(rest, &[])?;
            accounts().await
        }
        "sign" => match args::target(rest, &["kommo", "chat", "token", "state"])? {
            ("kommo", rest) => sign_kommo(&args::parse(rest, &["body"])?),
            ("chat", rest) => sign_chat(&args::parse(rest, &["body"])?),
            ("state", rest) => sign_state(&args::parse(rest, &["nonce"])?),
            (_, rest) => sign_token(&args::parse(rest, &["account-id", "user-id"])?),
        },
        "send" => match args::target(rest, &["kommo", "chat"])? {
            ("kommo", rest) => send_kommo(&args::parse(rest, &["url", "scope", "body"])?).await,
            (_, rest) => send_chat(&args::parse(rest, &["url", "body"])?).await,
        },
        "sources" => match args::target(rest, &["list", "create"])? {
            ("list", rest) => sources::list(&args::parse(rest, &["kommo-account-id"])?).await,
            (_, rest) => sources::create(&args::parse(rest, &["kommo-account-id", "external-id", "name"])?).await,
        },
        "demo" => {
            args::parse(rest, &[])?;
            demo::run().await
        }
        "cost" => cost::run(rest),
        other => Err(Failure::Usage(format!("unknown command {other:?}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// connect, disconnect

async fn connect(options: &Options) -> Result<(), Failure> {
    let account_id = options.required("account-id")?;
    let title = options.non_empty("title")?.unwrap_or(DEFAULT_TITLE);
    let kommo_account = options.numeric("kommo-account-id")?;
    let (client, channel_id) = amojo_client()?;
    let connected = client
        .connect(&ConnectRequest::v2(account_id, title))
        .await
        .map_err(|e| Failure::Failed(format!("connect failed: {e}")))?;
    println!("scope_id: {}", connected.scope_id);
    println!("connected: account {account_id} to channel {channel_id} (hook_api_version v2)");
    if let Some(numeric) = kommo_account {
        match env("TABLE_NAME") {
            // The registry: the Kommo UI serves the account with no KOMMO_ACCOUNTS entry.
            Some(table) => {
                register(numeric, account_id, &connected.scope_id, &table).await?;
                println!("registered: account {numeric} in table {table} (the Kommo UI serves it)");
            }
            None => {
                let entry = format!("{numeric}:{account_id}");
                println!("add to KOMMO_ACCOUNTS: {entry}");
                if let Some(current) = env("KOMMO_ACCOUNTS") {
                    println!("KOMMO_ACCOUNTS={current},{entry}");
                }
            }
        }
    }
    Ok(())
}

/// An account connected by hand, in the registry: connected, with no OAuth tokens (installing
/// through Kommo later adds them).
async fn register(account_id: u64, amojo_id: &str, scope_id: &str, table: &str) -> Result<(), Failure> {
    use shared::ports::store::{AccountRecord, AccountRegistry, AccountState};
    let store = registry(table);
    let failed = |e: shared::ports::store::StoreError| Failure::Failed(format!("the registry: {e}"));
    let previous = store.get_account(account_id).await.map_err(failed)?;
    let record = AccountRecord {
        account_id,
        host: previous.as_ref().map(|p| p.host.clone()).unwrap_or_default(),
        amojo_id: amojo_id.to_owned(),
        scope_id: scope_id.to_owned(),
        state: AccountState::Connected,
        sealed_tokens: previous.as_ref().and_then(|p| p.sealed_tokens.clone()),
        access_expires_at_ms: previous.as_ref().map_or(0, |p| p.access_expires_at_ms),
        token_version: previous.as_ref().map_or(1, |p| p.token_version + 1),
        installed_at_ms: SystemClock.now_ms(),
        tokens_renewed_at_ms: previous.as_ref().map_or(0, |p| p.tokens_renewed_at_ms),
        users_refused: previous.as_ref().is_some_and(|p| p.users_refused),
    };
    store.put_account(&record).await.map_err(failed)
}

async fn disconnect(options: &Options) -> Result<(), Failure> {
    let account_id = options.required("account-id")?;
    let (client, channel_id) = amojo_client()?;
    client
        .disconnect(&DisconnectRequest { account_id: account_id.to_owned() })
        .await
        .map_err(|e| Failure::Failed(format!("disconnect failed: {e}")))?;
    println!("disconnected: account {account_id} from channel {channel_id}");
    if let Some(table) = env("TABLE_NAME") {
        // The registry: the bridge refuses the scope's webhooks and events from now on.
        use shared::ports::store::{AccountRegistry, AccountState};
        let store = registry(&table);
        let failed = |e: shared::ports::store::StoreError| Failure::Failed(format!("the registry: {e}"));
        let scope_id = format!("{channel_id}_{account_id}");
        match store.account_of_scope(&scope_id).await.map_err(failed)? {
            Some(account) => {
                store.set_account_state(account.account_id, AccountState::Disconnected).await.map_err(failed)?;
                println!("registry: account {} disconnected in table {table} (its tokens deleted)", account.account_id);
            }
            None => println!("registry: no account of scope {scope_id} in table {table}"),
        }
    }
    Ok(())
}

/// The registry in the table `table` (`DYNAMODB_ENDPOINT` for a local server).
fn registry(table: &str) -> shared::adapters::dynamo::DynamoStore {
    let client = shared::adapters::dynamo::client_from_env(env("DYNAMODB_ENDPOINT").as_deref());
    shared::adapters::dynamo::DynamoStore::new(client, table)
}

async fn accounts() -> Result<(), Failure> {
    use shared::ports::store::AccountRegistry;
    let store = registry(&required_env("TABLE_NAME")?);
    let accounts = store.list_accounts().await.map_err(|e| Failure::Failed(format!("the registry: {e}")))?;
    println!(
        "{:<12} {:<32} {:<16} {:<31} {:<31} scope_id",
        "account", "host", "state", "access token expires", "refresh token renewed"
    );
    for account in &accounts {
        let has_tokens = account.sealed_tokens.is_some();
        let expires = shared::time::rfc2822(account.access_expires_at_ms.div_euclid(1000));
        let expires = if has_tokens { expires } else { "(no tokens)".into() };
        let renewed = match account.tokens_renewed_at_ms {
            0 => "(not known)".to_owned(),
            ms if has_tokens => shared::time::rfc2822(ms.div_euclid(1000)),
            _ => "(no tokens)".to_owned(),
        };
        let state = account.state.as_str();
        println!(
            "{:<12} {:<32} {:<16} {:<31} {:<31} {}",
            account.account_id, account.host, state, expires, renewed, account.scope_id
        );
        if account.users_refused {
            println!(
                "{:<12} note: Kommo refuses this account's users list (authorised by a user who is not an administrator); managers are named from the webhooks. Reinstall as an administrator to name them from the directory.",
                ""
            );
        }
    }
    println!("{} account(s)", accounts.len());
    Ok(())
}

fn amojo_client() -> Result<(AmojoClient, String), Failure> {
    let channel_id = required_env("KOMMO_CHANNEL_ID")?;
    let secret = required_env("KOMMO_CHANNEL_SECRET")?;
    let platform = match env("KOMMO_PLATFORM") {
        None => shared::rules::install::Platform::default(),
        Some(text) => shared::rules::install::Platform::parse(&text)
            .ok_or_else(|| Failure::Config(format!("KOMMO_PLATFORM must be kommo or amocrm, not {text:?}")))?,
    };
    let amojo_url = env("KOMMO_AMOJO_URL")
        .map_or_else(|| platform.amojo_origin().to_owned(), |u| u.trim_end_matches('/').to_owned());
    let is_url = amojo_url.starts_with("http://") || amojo_url.starts_with("https://");
    if !is_url || !shared::app::config::is_origin(&amojo_url) {
        // amojo signs the path it is sent: a path here would make every signature wrong.
        return Err(Failure::Config(
            "KOMMO_AMOJO_URL must be an http:// or https:// origin (scheme, host, optional port; no path)".into(),
        ));
    }
    let http = shared::adapters::outbound::http_client(HTTP_TIMEOUT);
    let client = AmojoClient::new(
        http,
        &amojo_url,
        &channel_id,
        Secret::new(secret),
        Arc::new(SystemClock),
        RetryPolicy::INLINE,
    );
    Ok((client, channel_id))
}

// ---------------------------------------------------------------------------------------------
// sign

fn sign_kommo(options: &Options) -> Result<(), Failure> {
    let body = read_body(options.required("body")?)?;
    let secret = required_env("KOMMO_CHANNEL_SECRET")?;
    println!("X-Signature: {}", kommo_webhook::sign(&secret, &body));
    Ok(())
}

fn sign_chat(options: &Options) -> Result<(), Failure> {
    let body = read_body(options.required("body")?)?;
    for (name, value) in chat_headers(&chat_secret()?, &body) {
        println!("{name}: {value}");
    }
    Ok(())
}

fn sign_state(options: &Options) -> Result<(), Failure> {
    let nonce = options.required("nonce")?;
    let state = shared::rules::install::sign_install_state(&required_env("KOMMO_INTEGRATION_SECRET")?, nonce);
    // Checked as the Redirect URI checks it: a nonce it would refuse is refused here.
    shared::rules::install::check_install_state(&required_env("KOMMO_INTEGRATION_SECRET")?, Some(&state))
        .map_err(|_| Failure::Usage("--nonce must be 1 to 64 of A-Z a-z 0-9 - _".into()))?;
    println!("state={state}");
    Ok(())
}

fn sign_token(options: &Options) -> Result<(), Failure> {
    let account_id = options.numeric("account-id")?.ok_or_else(|| Failure::Usage("--account-id is required".into()))?;
    let user_id = options.numeric("user-id")?.ok_or_else(|| Failure::Usage("--user-id is required".into()))?;
    let secret = required_env("KOMMO_INTEGRATION_SECRET")?;
    println!("X-Auth-Token: {}", token(&secret, account_id, user_id));
    Ok(())
}

/// A one-time token as Kommo's `$authorizedAjax` adds it (ids as numbers, as Kommo sends them).
pub fn token(integration_secret: &str, account_id: u64, user_id: u64) -> String {
    let now = SystemClock.now_s();
    // `iss`: an account address the Kommo UI routes accept by default (deployed and local).
    let claims = serde_json::json!({"iss": TOKEN_ISSUER, "account_id": account_id, "user_id": user_id,
                                    "iat": now, "nbf": now, "exp": now + TOKEN_TTL_S});
    one_time_token::issue(integration_secret, &claims)
}

/// The Standard Webhooks headers of one message from the chat service.
pub fn chat_headers(secret: &WebhookSecret, body: &[u8]) -> [(&'static str, String); 3] {
    let id = shared::random::new_webhook_id();
    let timestamp = SystemClock.now_s();
    let signature = secret.sign(&id, timestamp, body);
    [("webhook-id", id), ("webhook-timestamp", timestamp.to_string()), ("webhook-signature", signature)]
}

fn chat_secret() -> Result<WebhookSecret, Failure> {
    let text = required_env("CHAT_SERVICE_SECRET")?;
    WebhookSecret::parse(&text).map_err(|e| Failure::Config(format!("CHAT_SERVICE_SECRET {e}")))
}

// ---------------------------------------------------------------------------------------------
// send

async fn send_kommo(options: &Options) -> Result<(), Failure> {
    let base = base_url(options.required("url")?)?;
    let scope = options.required("scope")?;
    let body = read_body(options.required("body")?)?;
    let secret = required_env("KOMMO_CHANNEL_SECRET")?;
    let request = http_client()
        .post(format!("{base}/kommo/webhook/{scope}"))
        .header("content-type", "application/json")
        .header("x-signature", kommo_webhook::sign(&secret, &body))
        .body(body);
    print_answer(request).await
}

async fn send_chat(options: &Options) -> Result<(), Failure> {
    let base = base_url(options.required("url")?)?;
    let body = read_body(options.required("body")?)?;
    let mut request = http_client().post(format!("{base}/chat/events")).header("content-type", "application/json");
    for (name, value) in chat_headers(&chat_secret()?, &body) {
        request = request.header(name, value);
    }
    print_answer(request.body(body)).await
}

/// Sends, prints the status and body; a status other than 2xx is a failure.
async fn print_answer(request: reqwest::RequestBuilder) -> Result<(), Failure> {
    let response = request.send().await.map_err(|e| Failure::Failed(format!("the bridge did not answer: {e}")))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!("HTTP {}", status.as_u16());
    println!("{body}");
    if status.is_success() { Ok(()) } else { Err(Failure::Failed(format!("the bridge answered {status}"))) }
}

fn base_url(url: &str) -> Result<String, Failure> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(Failure::Usage(format!("--url must be an http:// or https:// URL, not {url:?}")))
    }
}

fn http_client() -> reqwest::Client {
    shared::adapters::outbound::http_client(HTTP_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// input and environment

/// The body from a file, or from standard input for `-`, byte for byte (signatures cover the
/// exact bytes, a trailing newline included).
fn read_body(source: &str) -> Result<Vec<u8>, Failure> {
    if source == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| Failure::Failed(format!("cannot read the body from standard input: {e}")))?;
        return Ok(body);
    }
    std::fs::read(source).map_err(|e| Failure::Failed(format!("cannot read the body from {source}: {e}")))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

fn required_env(name: &str) -> Result<String, Failure> {
    env(name).ok_or_else(|| Failure::Config(format!("{name} is required and not set")))
}
