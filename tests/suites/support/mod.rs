//! What the suites share: the servers the test script started (named by environment
//! variables; a missing one fails the test loudly, never skips it) and small clients for the
//! fakes' admin APIs.
#![allow(dead_code)] // each suite uses its own part of this module

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A variable the test script must set; its absence is a failure, not a skip.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suites through tests/run-all, which starts the servers they need")
    })
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(shared::config::random_bytes::<6>()))
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

/// A running dev server, stopped when dropped.
pub struct DevServer {
    pub base: String,
    child: Child,
}

impl DevServer {
    /// Starts the dev server on a free port with exactly `env` as its configuration.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(workspace_binary("dev-server"));
        command.env_clear().env("PORT", "0").env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the dev server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(base) = line.strip_prefix("dev-server: listening on ") {
                    let _ = sender.send(base.to_owned());
                }
            }
        });
        let base = receiver.recv_timeout(Duration::from_secs(20)).expect("the dev server says where it listens");
        Self { base, child }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        let amojo = Fake::amojo();
        let chat = Fake::chat_service();
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

    /// Posts a webhook as Kommo would (signed with the channel secret).
    pub async fn kommo_webhook(&self, body: String) -> reqwest::Response {
        let signature = shared::signing::kommo_webhook::sign(&self.amojo.secret, body.as_bytes());
        self.http
            .post(format!("{}/kommo/webhook/{}", self.server.base, self.scope))
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
        let claims = serde_json::json!({"account_id": 1, "user_id": user_id, "iat": now, "nbf": now, "exp": now + 60});
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
