//! The operator CLI (`bridge-cli`) as an operator runs it: connect and disconnect against the
//! fake amojo (which checks every signature as Kommo does), the signatures against published
//! vectors and the verifiers, `send` against a dev server, the whole `demo`, and bad usage.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::signing::one_time_token;
use shared::signing::standard_webhooks::{SignatureHeaders, WebhookSecret};
use shared::time::{Clock, SystemClock};
use support::{DevServer, Fake, unique, workspace_binary};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `bridge-cli` with exactly `env`, `stdin` as its input, killed after `limit`.
fn cli_with(args: &[&str], env: &[(&str, &str)], stdin: &[u8], limit: Duration) -> Run {
    let mut command = Command::new(workspace_binary("bridge-cli"));
    command.args(args).env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("bridge-cli starts");
    child.stdin.take().expect("piped stdin").write_all(stdin).expect("bridge-cli reads its input");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited on") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bridge-cli {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().expect("bridge-cli exits, not killed by a signal"),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn cli(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Run {
    cli_with(args, env, stdin, Duration::from_secs(30))
}

/// The value of `name: value` in the output.
fn header_line<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} line in {output:?}"))
}

#[tokio::test]
async fn connect_and_disconnect_an_account_against_the_fake_amojo() {
    let amojo = Fake::amojo();
    let channel = unique("chan");
    let env = [
        ("KOMMO_CHANNEL_ID", channel.as_str()),
        ("KOMMO_CHANNEL_SECRET", amojo.secret.as_str()),
        ("KOMMO_AMOJO_URL", amojo.url.as_str()),
        ("KOMMO_ACCOUNTS", "5:other-account"),
    ];
    let args = ["connect", "--account-id", "acc-1", "--title", "CLI test", "--kommo-account-id", "31000001"];
    let connected = cli(&args, &env, b"");
    assert_eq!(connected.code, 0, "{}", connected.stderr);
    assert_eq!(header_line(&connected.stdout, "scope_id"), format!("{channel}_acc-1"));
    assert_eq!(header_line(&connected.stdout, "add to KOMMO_ACCOUNTS"), "31000001:acc-1");
    assert!(connected.stdout.contains("KOMMO_ACCOUNTS=5:other-account,31000001:acc-1"), "{}", connected.stdout);

    let calls = amojo.calls(&channel).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["signature_ok"], true, "{}", calls[0]);
    assert_eq!(calls[0]["method"], "POST");
    assert_eq!(calls[0]["path"], format!("/v2/origin/custom/{channel}/connect"));
    assert_eq!(calls[0]["body"], json!({"account_id": "acc-1", "title": "CLI test", "hook_api_version": "v2"}));

    let disconnected = cli(&["disconnect", "--account-id", "acc-1"], &env, b"");
    assert_eq!(disconnected.code, 0, "{}", disconnected.stderr);
    let calls = amojo.calls(&channel).await;
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1]["signature_ok"], true, "{}", calls[1]);
    assert_eq!(calls[1]["method"], "DELETE");
    assert_eq!(calls[1]["path"], format!("/v2/origin/custom/{channel}/disconnect"));
    assert_eq!(calls[1]["body"], json!({"account_id": "acc-1"}));

    // amojo's refusal of a wrong secret is a failure with its reason; a missing secret is bad configuration.
    let mut wrong = env;
    wrong[1] = ("KOMMO_CHANNEL_SECRET", "not-the-channel-secret");
    let refused = cli(&["connect", "--account-id", "acc-1"], &wrong, b"");
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("ORIGIN_INVALID_SIGNATURE"), "{}", refused.stderr);
    let unconfigured = cli(&["connect", "--account-id", "acc-1"], &[("KOMMO_CHANNEL_ID", "chan")], b"");
    assert_eq!(unconfigured.code, 2);
    assert!(unconfigured.stderr.contains("KOMMO_CHANNEL_SECRET"), "{}", unconfigured.stderr);
}

#[test]
fn sign_kommo_reproduces_the_published_vector_from_stdin_and_from_a_file() {
    const SECRET: &str = "5a44c5dff55f3c15a4cce8d7c4cc27e207c7e189";
    const BODY: &[u8] = br#"{"account_id":"af9945ff-1490-4cad-807d-945c15d88bec","time":1639572261}"#;
    let env = [("KOMMO_CHANNEL_SECRET", SECRET)];
    let from_stdin = cli(&["sign", "kommo", "--body", "-"], &env, BODY);
    assert_eq!(from_stdin.code, 0, "{}", from_stdin.stderr);
    assert_eq!(header_line(&from_stdin.stdout, "X-Signature"), "fbca029c85eb9a2fded21e9d1a514a408ee48eac");

    let file = std::env::temp_dir().join(unique("bridge-cli-body-"));
    std::fs::write(&file, BODY).unwrap();
    let from_file = cli(&["sign", "kommo", "--body", file.to_str().unwrap()], &env, b"");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(from_file.stdout, from_stdin.stdout);
}

#[test]
fn sign_chat_and_sign_token_make_what_the_bridge_verifies() {
    let secret = WebhookSecret::from_key(vec![7; 32]);
    let body = br#"{"type":"presence.online","scope_id":"chan_acc-1","user_id":"client-1"}"#;
    let signed = cli(&["sign", "chat", "--body", "-"], &[("CHAT_SERVICE_SECRET", &secret.expose())], body);
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    let headers = SignatureHeaders {
        id: Some(header_line(&signed.stdout, "webhook-id")),
        timestamp: Some(header_line(&signed.stdout, "webhook-timestamp")),
        signature: Some(header_line(&signed.stdout, "webhook-signature")),
    };
    assert_eq!(secret.verify(&headers, body, SystemClock.now_s()), Ok(()));

    let env = [("KOMMO_INTEGRATION_SECRET", "integration-secret")];
    let token = cli(&["sign", "token", "--account-id", "31000001", "--user-id", "42"], &env, b"");
    assert_eq!(token.code, 0, "{}", token.stderr);
    let token = header_line(&token.stdout, "X-Auth-Token");
    let claims = one_time_token::verify("integration-secret", Some(token), SystemClock.now_s()).unwrap();
    assert_eq!((claims.account_id.as_str(), claims.user_id.as_str()), ("31000001", "42"));
}

#[test]
fn send_posts_signed_events_to_a_running_bridge_and_reports_its_answer() {
    let chat_secret = WebhookSecret::from_key(vec![9; 32]).expose();
    let server = DevServer::start(&[
        ("KOMMO_CHANNEL_ID", "chan"),
        ("KOMMO_CHANNEL_SECRET", "channel-secret"),
        ("CHAT_SERVICE_SECRET", &chat_secret),
    ]);
    let webhook = br#"{"account_id":"acc-1","time":1700000000}"#;
    let kommo = ["send", "kommo", "--url", &server.base, "--scope", "chan_acc-1", "--body", "-"];
    let sent = cli(&kommo, &[("KOMMO_CHANNEL_SECRET", "channel-secret")], webhook);
    assert_eq!(sent.code, 0, "{}{}", sent.stdout, sent.stderr);
    assert!(sent.stdout.starts_with("HTTP 200\n"), "{}", sent.stdout);
    let forged = cli(&kommo, &[("KOMMO_CHANNEL_SECRET", "another-secret")], webhook);
    assert_eq!(forged.code, 1);
    assert!(forged.stdout.starts_with("HTTP 401\n") && forged.stdout.contains("bad_signature"), "{}", forged.stdout);

    let online = br#"{"type":"presence.online","scope_id":"chan_acc-1","user_id":"client-1"}"#;
    let url = format!("{}/", server.base);
    let sent = cli(&["send", "chat", "--url", &url, "--body", "-"], &[("CHAT_SERVICE_SECRET", &chat_secret)], online);
    assert_eq!(sent.code, 0, "{}{}", sent.stdout, sent.stderr);
    assert!(sent.stdout.starts_with("HTTP 200\n"), "{}", sent.stdout);
}

#[tokio::test]
async fn the_demo_plays_the_whole_scenario_and_stops_its_dev_server() {
    let started = Instant::now();
    let demo = cli_with(&["demo"], &[], b"", Duration::from_secs(60));
    let took = started.elapsed();
    assert_eq!(demo.code, 0, "{}\n{}", demo.stdout, demo.stderr);
    let out = &demo.stdout;
    println!("{out}");
    let lines: Vec<&str> = out.lines().collect();
    let line_with =
        |who: &str, what: &str| lines.iter().any(|l| l.starts_with('+') && l.contains(who) && l.contains(what));
    assert!(line_with("Kommo        POST", "…/typing"), "{out}");
    for event in ["typing.started", "typing.stopped", "message.created", "presence.changed", "message.read"] {
        assert!(line_with("chat service ", event), "no {event} for the chat service:\n{out}");
    }
    assert!(line_with("Kommo        POST", "delivery_status 2 (read)"), "{out}");
    assert!(
        line_with("Kommo        POST", "delivery_status -1 (error 905: The client blocked this business)"),
        "{out}"
    );
    assert!(line_with("Kommo UI", "presence → client online"), "{out}");
    assert!(out.contains("the whole scenario played"), "{out}");
    assert!(!out.contains("MISSING") && !out.contains("INVALID"), "{out}");
    assert!(took < Duration::from_secs(30), "the demo took {took:?}");

    // The dev server it started is gone.
    let base = out.split("dev server at ").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("its address");
    let after: Result<Value, reqwest::Error> =
        async { reqwest::get(format!("{base}/healthz")).await?.json().await }.await;
    assert!(after.is_err(), "the dev server at {base} still answers");
}

#[test]
fn bad_usage_exits_2_with_the_usage_and_help_lists_every_command() {
    let bad: [&[&str]; 11] = [
        &[],
        &["frobnicate"],
        &["connect"],
        &["connect", "--account-id"],
        &["connect", "--account-id", "a", "--kommo-account-id", "not-a-number"],
        &["sign"],
        &["sign", "kommo"],
        &["sign", "kommo", "--body", "-", "--extra", "x"],
        &["sign", "token", "--account-id", "abc", "--user-id", "1"],
        &["send", "chat", "--url", "ftp://bridge", "--body", "-"],
        &["demo", "now"],
    ];
    for args in bad {
        let run = cli(args, &[], b"");
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("Usage:"), "{args:?}: {}", run.stderr);
    }
    let help = cli(&["--help"], &[], b"");
    assert_eq!(help.code, 0);
    for command in ["connect", "disconnect", "sign kommo", "sign chat", "sign token", "send kommo", "send chat", "demo"]
    {
        assert!(help.stdout.contains(&format!("bridge-cli {command}")), "{command} missing from:\n{}", help.stdout);
    }
    assert_eq!(cli(&["sign", "kommo", "--help"], &[], b"").code, 0);
}

#[tokio::test]
async fn accounts_lists_the_registry_with_states_and_expiry_never_a_token() {
    use shared::ports::store::{AccountRecord, AccountRegistry, AccountState};
    let endpoint = support::required_env("TEST_DYNAMODB_ENDPOINT");
    let table = unique("cli-accounts-");
    let client = shared::adapters::dynamo::client_from_env(Some(&endpoint));
    shared::adapters::dynamo::ensure_table(&client, &table).await.unwrap();
    let store = shared::adapters::dynamo::DynamoStore::new(client, table.clone());
    for (account_id, state) in [(31_001, AccountState::Connected), (31_002, AccountState::NeedsReinstall)] {
        let record = AccountRecord {
            account_id,
            host: format!("shop{account_id}.kommo.com"),
            amojo_id: format!("amojo-{account_id}"),
            scope_id: format!("chan_amojo-{account_id}"),
            state,
            sealed_tokens: Some("v1.SEALED-TOKENS-NEVER-PRINTED".into()),
            access_expires_at_ms: 1_700_086_400_000,
            token_version: 1,
            installed_at_ms: 1_700_000_000_000,
            tokens_renewed_at_ms: 1_700_000_000_000,
            users_refused: account_id == 31_002,
        };
        store.put_account(&record).await.unwrap();
    }
    store.set_account_state(31_003, AccountState::Disconnected).await.unwrap(); // unknown: nothing
    let run = cli(&["accounts"], &[("TABLE_NAME", table.as_str()), ("DYNAMODB_ENDPOINT", endpoint.as_str())], b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("31001") && run.stdout.contains("shop31001.kommo.com") && run.stdout.contains("connected")
    );
    assert!(run.stdout.contains("31002") && run.stdout.contains("needs_reinstall"));
    assert!(run.stdout.contains("Wed, 15 Nov 2023 22:13:20 +0000"), "{}", run.stdout);
    assert!(run.stdout.contains("2 account(s)"));
    assert_eq!(run.stdout.matches("refuses this account's users list").count(), 1, "{}", run.stdout);
    assert!(!run.stdout.contains("SEALED") && !run.stderr.contains("SEALED"), "never a token");
    let unconfigured = cli(&["accounts"], &[], b"");
    assert_eq!((unconfigured.code, unconfigured.stderr.contains("TABLE_NAME")), (2, true));
}

#[tokio::test]
async fn connect_with_a_table_registers_the_account_for_the_kommo_ui() {
    use shared::ports::store::{AccountRegistry, AccountState};
    let amojo = Fake::amojo();
    let channel = unique("chan");
    let endpoint = support::required_env("TEST_DYNAMODB_ENDPOINT");
    let table = unique("cli-connect-");
    let client = shared::adapters::dynamo::client_from_env(Some(&endpoint));
    shared::adapters::dynamo::ensure_table(&client, &table).await.unwrap();
    let env = [
        ("KOMMO_CHANNEL_ID", channel.as_str()),
        ("KOMMO_CHANNEL_SECRET", amojo.secret.as_str()),
        ("KOMMO_AMOJO_URL", amojo.url.as_str()),
        ("TABLE_NAME", table.as_str()),
        ("DYNAMODB_ENDPOINT", endpoint.as_str()),
    ];
    let connected = cli(&["connect", "--account-id", "acc-9", "--kommo-account-id", "31000009"], &env, b"");
    assert_eq!(connected.code, 0, "{}", connected.stderr);
    assert!(connected.stdout.contains("registered: account 31000009"), "{}", connected.stdout);
    assert!(!connected.stdout.contains("KOMMO_ACCOUNTS"));
    let store = shared::adapters::dynamo::DynamoStore::new(client, table.clone());
    let account = store.get_account(31_000_009).await.unwrap().expect("registered");
    assert_eq!(
        (account.scope_id.as_str(), account.state),
        (format!("{channel}_acc-9").as_str(), AccountState::Connected)
    );
    assert_eq!(store.account_of_scope(&account.scope_id).await.unwrap().map(|a| a.account_id), Some(31_000_009));
    let listed = cli(&["accounts"], &env[3..], b"");
    assert!(listed.stdout.contains("31000009") && listed.stdout.contains("(no tokens)"), "{}", listed.stdout);
    // Disconnected by hand: the registry follows, so the bridge refuses the scope.
    let disconnected = cli(&["disconnect", "--account-id", "acc-9"], &env, b"");
    assert_eq!(disconnected.code, 0, "{}", disconnected.stderr);
    assert!(disconnected.stdout.contains("registry: account 31000009 disconnected"), "{}", disconnected.stdout);
    let scope = store.account_of_scope(&account.scope_id).await.unwrap().unwrap();
    assert_eq!(scope.state, AccountState::Disconnected);
    assert!(cli(&["accounts"], &env[3..], b"").stdout.contains("disconnected"));
}
