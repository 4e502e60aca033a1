//! What the suites share: the servers the test script started (named by environment
//! variables; a missing one fails the test loudly, never skips it) and small clients for the
//! fakes' admin APIs.
#![allow(dead_code)] // each suite uses its own part of this module

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use dev_server::DevServerProcess;
use serde_json::Value;

/// A variable the test script must set; its absence is a failure, not a skip.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suites through tests/run-all, which starts the servers they need")
    })
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(shared::random::random_bytes::<6>()))
}

/// A Python fake (fake_amojo.py or fake_chat_service.py) started by the test script.
pub struct Fake {
    pub url: String,
    pub secret: String,
    http: reqwest::Client,
}

impl Fake {
    pub fn amojo() -> Self {
        Self::from_env("FAKE_AMOJO_URL", "FAKE_AMOJO_SECRET")
    }

    pub fn chat_service() -> Self {
        Self::from_env("FAKE_CHAT_URL", "FAKE_CHAT_SECRET")
    }

    /// The fake Kommo (OAuth and REST); its secret is the integration's client secret.
    pub fn kommo() -> Self {
        Self::from_env("FAKE_KOMMO_URL", "FAKE_KOMMO_SECRET")
    }

    fn from_env(url: &str, secret: &str) -> Self {
        Self { url: required_env(url), secret: required_env(secret), http: reqwest::Client::new() }
    }

    /// Every call the fake recorded for `scope`, in arrival order.
    pub async fn calls(&self, scope: &str) -> Vec<Value> {
        let answer: Value = self
            .http
            // Scopes in tests are [A-Za-z0-9_-]: nothing to escape.
            .get(format!("{}/__admin/calls?scope={scope}", self.url))
            .send()
            .await
            .expect("the fake answers")
            .json()
            .await
            .expect("the fake answers JSON");
        answer["calls"].as_array().cloned().unwrap_or_default()
    }

    /// Queues scripted answers for `scope` (see tests/fakes/common.py).
    pub async fn script(&self, scope: &str, responses: Value) {
        let status = self
            .http
            .post(format!("{}/__admin/script", self.url))
            .json(&serde_json::json!({"scope": scope, "responses": responses}))
            .send()
            .await
            .expect("the fake answers")
            .status();
        assert!(status.is_success(), "the fake refused the script: {status}");
    }

    /// An /__admin/ read (`path` may carry a query).
    pub async fn admin_get(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}/__admin/{path}", self.url)).send().await.expect("the fake answers");
        assert!(response.status().is_success(), "the fake refused GET /__admin/{path}: {}", response.status());
        response.json().await.expect("the fake answers JSON")
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}/__admin/{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("the fake answers")
            .json()
            .await
            .expect("the fake answers JSON")
    }
}

/// A workspace binary, built by the test script before the suites run.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let deps = std::env::current_exe().expect("the test knows its path");
    let path = deps.parent().and_then(|d| d.parent()).expect("target/<profile>/deps").join(name);
    assert!(path.exists(), "{} is missing: build the workspace first (tests/run-all does)", path.display());
    path
}

/// A running dev server, stopped when dropped; its stderr (logs) goes to the test's.
pub struct DevServer {
    pub base: String,
    process: DevServerProcess,
}

impl DevServer {
    /// Starts the dev server on a free port with exactly `env` as its configuration.
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::spawn(Command::new(workspace_binary("dev-server")), env)
    }

    /// Starts the dev server allowed at most `open_files` descriptors (`ulimit -n`).
    pub fn start_with_open_files(open_files: u32, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new("sh");
        command
            .args(["-c", r#"ulimit -n "$1" && exec "$0""#])
            .arg(workspace_binary("dev-server"))
            .arg(open_files.to_string());
        Self::spawn(command, env)
    }

    /// The operating system's id of the server's process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn spawn(mut command: Command, env: &[(&str, &str)]) -> Self {
        command.stderr(Stdio::inherit());
        let process = DevServerProcess::start(command, env, Arc::new(|_: &str| {}), Duration::from_secs(20))
            .unwrap_or_else(|why| panic!("the dev server did not start: {why}"));
        Self { base: process.base.clone(), process }
    }
}

/// The integration secret the end-to-end dev servers verify Kommo UI tokens with.
pub const INTEGRATION_SECRET: &str = "e2e-integration-secret";

/// The dev server between the fake amojo and the fake chat service, each verifying the
/// bridge's signatures independently, on a scope of its own.
pub struct E2e {
    pub server: DevServer,
    pub amojo: Fake,
    pub chat: Fake,
    pub scope: String,
    http: reqwest::Client,
}

impl E2e {
    /// Starts a dev server wired to the fakes, with `extra` configuration.
    pub fn start(extra: &[(&str, &str)]) -> Self {
        Self::between(Fake::amojo(), Fake::chat_service(), extra)
    }

    /// Posts a webhook as Kommo would (signed with the channel secret).
    pub async fn kommo_webhook(&self, body: String) -> reqwest::Response {
        self.kommo_webhook_to(&self.scope, body).await
    }

    /// Posts a webhook as Kommo would to the channel's webhook URL of `scope`.
    pub async fn kommo_webhook_to(&self, scope: &str, body: String) -> reqwest::Response {
        let signature = shared::signing::kommo_webhook::sign(&self.amojo.secret, body.as_bytes());
        self.http
            .post(format!("{}/kommo/webhook/{scope}", self.server.base))
            .header("x-signature", signature)
            .body(body)
            .send()
            .await
            .expect("the dev server answers")
    }

    pub async fn kommo_webhook_ok(&self, body: String) {
        assert_eq!(self.kommo_webhook(body).await.status(), 200);
    }

    /// Posts an event as the chat service would (Standard Webhooks).
    pub async fn chat_event(&self, body: String) -> reqwest::Response {
        let secret = shared::signing::standard_webhooks::WebhookSecret::parse(&self.chat.secret).unwrap();
        let now = shared::time::Clock::now_s(&shared::time::SystemClock);
        let id = unique("msg_");
        self.http
            .post(format!("{}/chat/events", self.server.base))
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", secret.sign(&id, now, body.as_bytes()))
            .body(body)
            .send()
            .await
            .expect("the dev server answers")
    }

    /// A Kommo UI call as the widget makes it: from a Kommo origin, with a one-time token for
    /// `user_id` of account 1.
    pub async fn ui(&self, method: reqwest::Method, path: &str, user_id: u64, body: &str) -> reqwest::Response {
        let now = shared::time::Clock::now_s(&shared::time::SystemClock);
        let claims = serde_json::json!({"iss": "https://acme.kommo.com", "account_id": 1, "user_id": user_id,
                                        "iat": now, "nbf": now, "exp": now + 60});
        let token = shared::signing::one_time_token::issue(INTEGRATION_SECRET, &claims);
        self.http
            .request(method, format!("{}{path}", self.server.base))
            .header("origin", "https://acme.kommo.com")
            .header("x-auth-token", token)
            .body(body.to_owned())
            .send()
            .await
            .expect("the dev server answers")
    }

    /// A GET signed as the chat service signs (Standard Webhooks over the empty body).
    pub async fn chat_get(&self, path_and_query: &str) -> reqwest::Response {
        let secret = shared::signing::standard_webhooks::WebhookSecret::parse(&self.chat.secret).unwrap();
        let now = shared::time::Clock::now_s(&shared::time::SystemClock);
        let id = unique("msg_");
        self.http
            .get(format!("{}{path_and_query}", self.server.base))
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", secret.sign(&id, now, b""))
            .send()
            .await
            .expect("the dev server answers")
    }

    pub async fn chat_event_ok(&self, body: String) {
        assert_eq!(self.chat_event(body).await.status(), 200);
    }

    /// Waits until `check` holds for the calls `fake` recorded for this scope (at most `limit`).
    pub async fn wait_for(&self, fake: &Fake, limit: Duration, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let calls = fake.calls(&self.scope).await;
            if check(&calls) || std::time::Instant::now() > deadline {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Fake {
    /// A fake at `url` (one a test started itself, see [`Restartable`]).
    pub fn at(url: &str, secret: &str) -> Self {
        Self { url: url.to_owned(), secret: secret.to_owned(), http: reqwest::Client::new() }
    }

    /// Opens a fault window (see tests/fakes/common.py): for `seconds`, every request of `scope`
    /// whose path contains `matching` (all when `None`) gets `reply`, one in `every`.
    pub async fn fault(&self, scope: &str, seconds: f64, matching: Option<&str>, every: u32, reply: Value) {
        let mut body = serde_json::json!({"scope": scope, "seconds": seconds, "every": every, "reply": reply});
        if let Some(matching) = matching {
            body["match"] = Value::from(matching);
        }
        let status = self
            .http
            .post(format!("{}/__admin/fault", self.url))
            .json(&body)
            .send()
            .await
            .expect("the fake answers")
            .status();
        assert!(status.is_success(), "the fake refused the fault: {status}");
    }

    /// Ends every fault window of `scope`.
    pub async fn clear_faults(&self, scope: &str) {
        let status = self
            .http
            .delete(format!("{}/__admin/fault?scope={scope}", self.url))
            .send()
            .await
            .expect("the fake answers")
            .status();
        assert!(status.is_success(), "the fake refused to clear faults: {status}");
    }
}

impl E2e {
    /// Starts a dev server between the given fakes (private ones a test started), with `extra`
    /// configuration.
    pub fn between(amojo: Fake, chat: Fake, extra: &[(&str, &str)]) -> Self {
        let channel = unique("chan");
        let chat_url = format!("{}/events", chat.url);
        let mut env = vec![
            ("KOMMO_CHANNEL_ID", channel.as_str()),
            ("KOMMO_CHANNEL_SECRET", amojo.secret.as_str()),
            ("KOMMO_AMOJO_URL", amojo.url.as_str()),
            ("CHAT_SERVICE_URL", chat_url.as_str()),
            ("CHAT_SERVICE_SECRET", chat.secret.as_str()),
            ("KOMMO_INTEGRATION_SECRET", INTEGRATION_SECRET),
            ("KOMMO_ACCOUNTS", "1:acc-1"),
        ];
        env.extend_from_slice(extra);
        let server = DevServer::start(&env);
        let scope = format!("{channel}_acc-1");
        Self { server, amojo, chat, scope, http: reqwest::Client::new() }
    }
}

/// The folder of the Python fakes.
pub fn fakes_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fakes")
}

/// A server process a test owns (a private fake, a private Dynoxide), which it can stop (the
/// port then refuses connections) and start again on the same port, to play an outage.
/// Stopped when dropped.
pub struct Restartable {
    name: String,
    program: std::path::PathBuf,
    args: Vec<String>,
    pub port: u16,
    child: Option<Child>,
}

impl Restartable {
    /// Starts `program args… --port 0` and waits for its `READY <port>` line.
    pub fn start(name: &str, program: impl Into<std::path::PathBuf>, args: &[&str]) -> Self {
        let mut server = Self {
            name: name.to_owned(),
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            port: 0,
            child: None,
        };
        server.spawn().unwrap_or_else(|problem| panic!("{name} did not start: {problem}"));
        server
    }

    /// A private fake (`fake_amojo.py` or `fake_chat_service.py`) with `secret`.
    pub fn fake(script: &str, secret: &str) -> Self {
        let script_path = fakes_dir().join(script);
        let script_path = script_path.to_str().expect("a UTF-8 path");
        Self::start(script, required_env("BRIDGE_TEST_PYTHON"), &[script_path, "--secret", secret])
    }

    /// A private Dynoxide keeping its data in `db_file`, so a restart keeps it.
    pub fn dynamodb(db_file: &std::path::Path) -> Self {
        let db = db_file.to_str().expect("a UTF-8 path");
        Self::start("dynamodb-test-server", workspace_binary("dynamodb-test-server"), &["--db", db])
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the process (no goodbye: connections are cut, then refused).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port (retrying for a few seconds while the port is
    /// not free yet).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(problem) if std::time::Instant::now() > deadline => {
                    panic!("{} did not start again on port {}: {problem}", self.name, self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .arg("--port")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            // Reads to the end, so the process never blocks on a full pipe.
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("READY ").and_then(|p| p.trim().parse::<u16>().ok()) {
                    let _ = sender.send(port);
                }
            }
        });
        match receiver.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => {
                self.port = port;
                self.child = Some(child);
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                Err(format!("no READY line ({status})"))
            }
        }
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A file path in the temporary directory, removed (with SQLite's companions) when dropped.
pub struct TempFile(pub std::path::PathBuf);

impl TempFile {
    pub fn new(prefix: &str, suffix: &str) -> Self {
        Self(std::env::temp_dir().join(format!("{}{suffix}", unique(prefix))))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for companion in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.0.clone().into_os_string();
            path.push(companion);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A stand-in for the Lambda Runtime API (`AWS_LAMBDA_RUNTIME_API`), enough for one invocation:
/// the first `GET …/invocation/next` gets `event`, the function's `POST …/response` or
/// `…/error` is recorded, and later `next` calls are left waiting until the test ends.
pub struct RuntimeApi {
    pub address: String,
    outcome: std::sync::mpsc::Receiver<(String, Value)>,
}

impl RuntimeApi {
    pub fn serve_one(event: Value) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let address = listener.local_addr().expect("bound").to_string();
        let (sender, outcome) = std::sync::mpsc::channel();
        let event = std::sync::Arc::new(std::sync::Mutex::new(Some(event.to_string())));
        std::thread::spawn(move || {
            // A thread per connection: the runtime client may post its answer on a new
            // connection while the first one stays open.
            for stream in listener.incoming().map_while(Result::ok) {
                let (event, sender) = (event.clone(), sender.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().expect("a socket clone"));
                    let mut writer = stream;
                    // One request after another on a kept-alive connection.
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0;
                        loop {
                            let mut header = String::new();
                            reader.read_line(&mut header).expect("a header line");
                            if header.trim().is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().expect("a length");
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).expect("the body");
                        let path = request_line.split(' ').nth(1).unwrap_or_default().to_owned();
                        let reply = if path.ends_with("/invocation/next") {
                            // The second `next` is left waiting: one invocation is all a test needs.
                            let Some(event) = event.lock().expect("not poisoned").take() else { return };
                            format!(
                                "HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: req-1\r\nLambda-Runtime-Deadline-Ms: {}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:eu-west-1:123456789012:function:test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{event}",
                                shared::time::Clock::now_ms(&shared::time::SystemClock) + 30_000,
                                event.len()
                            )
                        } else {
                            let kind = if path.ends_with("/response") { "response" } else { "error" };
                            let answer = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let _ = sender.send((kind.to_owned(), answer));
                            "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".to_owned()
                        };
                        if writer.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { address, outcome }
    }

    /// The function's answer to the event: ("response" or "error", its JSON body).
    pub fn outcome(&self, limit: Duration) -> (String, Value) {
        self.outcome.recv_timeout(limit).expect("the function answers the invocation")
    }
}

/// An API Gateway HTTP API (payload 2.0) event for a POST of `body` to `path`.
pub fn http_api_event(path: &str, headers: Value, body: &str) -> Value {
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012", "apiId": "api", "domainName": "api.example", "domainPrefix": "api",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "test"},
            "requestId": "req-1", "routeKey": "$default", "stage": "$default", "time": "27/Nov/2026:00:00:00 +0000",
            "timeEpoch": 1_800_000_000_000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}
