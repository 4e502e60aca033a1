//! The servers a load run talks to: the fakes and Dynoxide named by the same variables the
//! suites read (a missing one is an error, never a skip), and a dev server of its own wired to
//! them (what `tests/suites/support::DevServer` does, here for a binary).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dev_server::DevServerProcess;
use serde_json::Value;

/// Where the fakes and Dynoxide are, from the environment `tests/run-all` (or
/// `tests/load/with-servers`) sets.
pub struct Servers {
    pub amojo_url: String,
    pub amojo_secret: String,
    pub chat_url: String,
    pub chat_secret: String,
    pub dynamodb: String,
}

impl Servers {
    pub fn from_env() -> Result<Self, String> {
        let names =
            ["FAKE_AMOJO_URL", "FAKE_AMOJO_SECRET", "FAKE_CHAT_URL", "FAKE_CHAT_SECRET", "TEST_DYNAMODB_ENDPOINT"];
        let missing: Vec<&str> =
            names.iter().copied().filter(|name| std::env::var(name).map_or(true, |v| v.trim().is_empty())).collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} not set: start Dynoxide and the fakes first (tests/load/with-servers COMMAND does, as tests/run-all does)",
                missing.join(", ")
            ));
        }
        let get = |name: &str| std::env::var(name).expect("checked above").trim().trim_end_matches('/').to_owned();
        Ok(Self {
            amojo_url: get("FAKE_AMOJO_URL"),
            amojo_secret: get("FAKE_AMOJO_SECRET"),
            chat_url: get("FAKE_CHAT_URL"),
            chat_secret: get("FAKE_CHAT_SECRET"),
            dynamodb: get("TEST_DYNAMODB_ENDPOINT"),
        })
    }
}

/// `target/<profile>/<name>`, beside this binary.
pub fn sibling_binary(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary's path: {e}"))?;
    let path = exe.parent().ok_or("this binary has no directory")?.join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} is missing: cargo build -p dev-server (tests/run-all builds every target)", path.display()))
    }
}

/// `target/` (or `CARGO_TARGET_DIR`): two levels above this binary.
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// A dev server of this run, stopped when dropped. Its output (the logs go to stdout, without
/// colours) is copied to its log file.
pub struct DevServer {
    pub base: String,
    process: DevServerProcess,
}

impl DevServer {
    /// Starts `binary` on a free port with exactly `env` as its environment, its output copied
    /// to `log`.
    pub fn start(binary: &Path, env: &[(String, String)], log: &Path) -> Result<Self, String> {
        let cannot = |e: std::io::Error| format!("cannot write {}: {e}", log.display());
        let log_file = Mutex::new(std::fs::File::create(log).map_err(cannot)?);
        let stderr_file = log_file.lock().expect("log lock").try_clone().map_err(cannot)?;
        let mut command = Command::new(binary);
        command.stderr(stderr_file);
        let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        let copy = move |line: &str| {
            if let Err(error) = writeln!(log_file.lock().expect("log lock"), "{line}") {
                eprintln!("bridge-load: the dev server's log lost a line: {error}");
            }
        };
        let process = DevServerProcess::start(command, &env, Arc::new(copy), Duration::from_secs(30))
            .map_err(|why| format!("{why}; its log:\n{}", tail(log, 30)))?;
        Ok(Self { base: process.base.clone(), process })
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.process.alive()
    }

    /// Stops it and waits until everything it wrote is in the log.
    pub fn stop(self) {
        self.process.stop();
    }
}

/// The last `lines` lines of a text file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The admin API of a Python fake (tests/fakes/common.py).
pub struct FakeAdmin {
    url: String,
    http: reqwest::Client,
}

impl FakeAdmin {
    pub fn new(url: &str, http: reqwest::Client) -> Self {
        Self { url: url.to_owned(), http }
    }

    /// Every call the fake recorded for `scope`, in arrival order.
    pub async fn calls(&self, scope: &str) -> Result<Vec<Value>, String> {
        // Scopes here are [A-Za-z0-9_-]: nothing to escape.
        let answer = self.admin(reqwest::Method::GET, &format!("calls?scope={scope}"), None).await?;
        Ok(answer["calls"].as_array().cloned().unwrap_or_default())
    }

    /// The fake amojo's `GET /__admin/state?scope=`: its chats (which conversation ids name
    /// each, whether a manager started it, the msgids imported into it) and its messages
    /// (Kommo's msgid and chat of each imported msgid).
    pub async fn state(&self, scope: &str) -> Result<Value, String> {
        self.admin(reqwest::Method::GET, &format!("state?scope={scope}"), None).await
    }

    /// The fake amojo's `POST /__admin/kommo_chat`: a chat a manager started in Kommo ("write
    /// first"). Kommo's ids of the chat and of the client.
    pub async fn kommo_chat(&self, scope: &str) -> Result<(String, String), String> {
        let answer = self.admin(reqwest::Method::POST, "kommo_chat", Some(serde_json::json!({"scope": scope}))).await?;
        match (answer["chat_id"].as_str(), answer["client_id"].as_str()) {
            (Some(chat), Some(client)) if !chat.is_empty() && !client.is_empty() => {
                Ok((chat.to_owned(), client.to_owned()))
            }
            _ => Err(format!("POST {}/__admin/kommo_chat answered {answer} (no chat_id and client_id)", self.url)),
        }
    }

    /// An admin call, with a few tries: the fake is a small threaded Python server that the
    /// bridge may still be keeping busy.
    async fn admin(&self, method: reqwest::Method, tail: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/__admin/{tail}", self.url);
        let mut last_error = String::new();
        for attempt in 0..5u64 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            match self.fetch(method.clone(), &url, body.as_ref()).await {
                Ok(answer) => return Ok(answer),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    async fn fetch(&self, method: reqwest::Method, url: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut request = self.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let what = format!("{method} {url}");
        let response = request.send().await.map_err(|e| format!("{what}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("{what}: HTTP {}", response.status()));
        }
        response.json().await.map_err(|e| format!("{what}: not JSON: {}", error_chain(&e)))
    }
}

/// An error with its sources, on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
