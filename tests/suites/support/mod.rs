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
