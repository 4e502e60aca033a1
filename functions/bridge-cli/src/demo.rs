//! `bridge-cli demo`: the product's scenario against a dev server of its own, between two
//! in-process recorders standing in for Kommo (amojo) and the chat service, with secrets made up
//! for the run. Prints a timeline of what each side received, then checks that everything the
//! scenario should cause arrived (exit 1 if not).

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dev_server::DevServerProcess;
use reqwest::Method;
use serde_json::{Value, json};
use shared::random::random_bytes;
use shared::signing::kommo_webhook;
use shared::signing::standard_webhooks::WebhookSecret;
use shared::time::{Clock, SystemClock};

use crate::Failure;
use crate::recorder::{self, Entry, Peer, Timeline, Who};

const CHANNEL: &str = "demo-channel";
const ACCOUNT: &str = "demo-account";
const SCOPE: &str = "demo-channel_demo-account";
/// The conversation and client as the chat service names them, and Kommo's chat id for it.
const CONVERSATION: &str = "conv-1";
const CLIENT: &str = "client-1";
const KOMMO_CHAT: &str = "kommo-chat-conv-1";
/// The manager: Kommo user 42 of account 1 (`KOMMO_ACCOUNTS=1:demo-account`).
const MANAGER: &str = "42";
const MANAGER_USER_ID: u64 = 42;
const KOMMO_ACCOUNT_ID: u64 = 1;
const STARTUP_LIMIT: Duration = Duration::from_secs(20);

struct Secrets {
    channel: String,
    integration: String,
    chat: WebhookSecret,
}

pub async fn run() -> Result<(), Failure> {
    let secrets = Secrets {
        channel: hex::encode(random_bytes::<20>()),
        integration: hex::encode(random_bytes::<32>()),
        chat: WebhookSecret::from_key(random_bytes::<32>().to_vec()),
    };
    let timeline = Arc::new(Timeline::new());
    let cannot_listen = |e: std::io::Error| Failure::Failed(format!("cannot start a recorder on loopback: {e}"));
    let amojo_url = recorder::start(Peer::Amojo { channel_secret: secrets.channel.clone() }, timeline.clone())
        .await
        .map_err(cannot_listen)?;
    let chat_url = recorder::start(Peer::ChatService { secret: secrets.chat.clone() }, timeline.clone())
        .await
        .map_err(cannot_listen)?;
    let chat_url = format!("{chat_url}/events");

    let starting = Instant::now();
    let server = DevServer::start(&[
        ("KOMMO_CHANNEL_ID", CHANNEL.to_owned()),
        ("KOMMO_CHANNEL_SECRET", secrets.channel.clone()),
        ("KOMMO_AMOJO_URL", amojo_url.clone()),
        ("CHAT_SERVICE_URL", chat_url.clone()),
        ("CHAT_SERVICE_SECRET", secrets.chat.expose()),
        ("KOMMO_INTEGRATION_SECRET", secrets.integration.clone()),
        ("KOMMO_ACCOUNTS", format!("{KOMMO_ACCOUNT_ID}:{ACCOUNT}")),
        ("PRESENCE_WINDOW_S", "3".to_owned()),
        ("PRESENCE_GRACE_S", "1".to_owned()),
    ])
    .await?;
    println!(
        "bridge-cli demo: dev server at {} (up in {} ms), scope {SCOPE}",
        server.base(),
        starting.elapsed().as_millis()
    );
    println!("  Kommo (amojo) → {amojo_url}   chat service → {chat_url}   PRESENCE_WINDOW_S=3 PRESENCE_GRACE_S=1");
    println!("  times are ms since the scenario started\n");

    timeline.restart();
    let demo = Demo {
        http: shared::adapters::outbound::http_client(Duration::from_secs(10)),
        base: server.base().to_owned(),
        secrets,
        timeline,
    };
    let played = demo.play().await;
    let total_ms = demo.timeline.elapsed_ms();
    let log = server.stop();
    summary(&demo.timeline.entries(), total_ms, played, &log)
}

struct Demo {
    http: reqwest::Client,
    base: String,
    secrets: Secrets,
    timeline: Arc<Timeline>,
}

impl Demo {
    async fn client_writes(&self, msgid: &str, text: &str) -> Result<(), String> {
        self.chat_event(json!({"type": "message.created", "scope_id": SCOPE, "conversation_id": CONVERSATION,
                               "msgid": msgid, "user": {"id": CLIENT, "name": "Ana"},
                               "message": {"type": "text", "text": text},
                               "timestamp_ms": SystemClock.now_ms()}))
            .await
    }

    async fn play(&self) -> Result<(), String> {
        let step = |text: &str| self.timeline.step(text);

        step("the client writes: message.created from the chat service (Kommo's chat is made)");
        self.client_writes("chat-msg-1", "Hi! Is my order on its way?").await?;
        self.wait_for("the import into Kommo", Duration::from_secs(3), |e| count(e, Who::Kommo, "new_message") > 0)
            .await;
        // Kommo shows typing only in a chat it has: after the first message.
        step("the client types: the chat service sends typing.started 4 times, 1.1 s apart (Kommo: one call per 4 s)");
        for _ in 0..4 {
            let typing = json!({"type": "typing.started", "scope_id": SCOPE, "conversation_id": CONVERSATION, "user_id": CLIENT});
            self.chat_event(typing).await?;
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        step("the client writes again: message.created (it ends the client's typing)");
        self.client_writes("chat-msg-2", "It was due yesterday.").await?;
        self.wait_for("the import into Kommo", Duration::from_secs(3), |e| count(e, Who::Kommo, "new_message") > 1)
            .await;

        step("the manager types: Kommo's typing webhook (expired_at now+2 s), then no more, so the lease lapses");
        let now_s = SystemClock.now_s();
        self.kommo_webhook(json!({"account_id": ACCOUNT, "time": now_s, "action": {"typing": {
            "user": {"id": MANAGER}, "conversation": {"id": KOMMO_CHAT, "client_id": CONVERSATION},
            "expired_at": now_s + 2}}}))
            .await?;
        self.wait_for("typing.stopped", Duration::from_secs(5), |e| count(e, Who::ChatService, "typing.stopped") > 0)
            .await;

        step("the manager writes: Kommo's message webhook");
        self.kommo_webhook(manager_message("kommo-msg-1", "Yes, it ships today!")).await?;
        self.wait_for("message.created", Duration::from_secs(3), |e| count(e, Who::ChatService, "message.created") > 0)
            .await;

        step("the client reads it: the chat service reports message.status read, by reference");
        self.chat_event(
            json!({"type": "message.status", "scope_id": SCOPE, "reference": "kommo-msg-1", "status": "read"}),
        )
        .await?;
        self.wait_for("the read status", Duration::from_secs(3), |e| count(e, Who::Kommo, "delivery_status") > 0).await;

        step("the manager writes again; the chat service refuses it (422: the client blocked this business)");
        self.kommo_webhook(manager_message("kommo-msg-2", "This one will fail")).await?;
        self.wait_for("the 905", Duration::from_secs(3), |e| count(e, Who::Kommo, "delivery_status") > 1).await;

        step("the client comes online: presence.online; the widget asks");
        self.chat_event(
            json!({"type": "presence.online", "scope_id": SCOPE, "conversation_id": CONVERSATION, "user_id": CLIENT}),
        )
        .await?;
        self.widget_reads_presence().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        step("the client goes away: presence.offline; the widget asks");
        self.chat_event(
            json!({"type": "presence.offline", "scope_id": SCOPE, "conversation_id": CONVERSATION, "user_id": CLIENT}),
        )
        .await?;
        self.widget_reads_presence().await?;

        step("the manager opens the conversation in Kommo: the widget posts presence viewing, then read");
        self.widget(Method::POST, "presence", Some(json!({"state": "viewing"}))).await?;
        let read = self.widget(Method::POST, "read", Some(json!({}))).await?;
        let read_text = format!("POST …/read → message.read up to {}", read["read"].as_str().unwrap_or("nothing"));
        self.timeline.add(Who::KommoUi, "read", &read_text, read, true);
        self.wait_for("presence.changed online", Duration::from_secs(3), |e| {
            count(e, Who::ChatService, "presence.changed") > 0
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        step("the manager closes it: the widget posts presence left; offline follows PRESENCE_GRACE_S later");
        self.widget(Method::POST, "presence", Some(json!({"state": "left"}))).await?;
        self.wait_for("presence.changed offline", Duration::from_secs(5), |e| {
            count(e, Who::ChatService, "presence.changed") > 1
        })
        .await;
        Ok(())
    }

    /// Waits until `check` holds of the timeline; notes it on the timeline when it does not.
    async fn wait_for(&self, what: &str, limit: Duration, check: impl Fn(&[Entry]) -> bool) {
        let deadline = Instant::now() + limit;
        while !check(&self.timeline.entries()) {
            if Instant::now() >= deadline {
                self.timeline.step(&format!("(no {what} after {} s: moving on)", limit.as_secs()));
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A webhook as Kommo posts it, signed with the channel secret.
    async fn kommo_webhook(&self, body: Value) -> Result<(), String> {
        let body = body.to_string();
        let request = self
            .http
            .post(format!("{}/kommo/webhook/{SCOPE}", self.base))
            .header("content-type", "application/json")
            .header("x-signature", kommo_webhook::sign(&self.secrets.channel, body.as_bytes()))
            .body(body);
        answer_of(request, "Kommo's webhook").await.map(drop)
    }

    /// An event as the chat service posts it (Standard Webhooks).
    async fn chat_event(&self, body: Value) -> Result<(), String> {
        let body = body.to_string();
        let mut request =
            self.http.post(format!("{}/chat/events", self.base)).header("content-type", "application/json");
        for (name, value) in crate::chat_headers(&self.secrets.chat, body.as_bytes()) {
            request = request.header(name, value);
        }
        answer_of(request.body(body), "the chat service's event").await.map(drop)
    }

    /// A Kommo UI widget call on the conversation, with a fresh one-time token.
    async fn widget(&self, method: Method, route: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/kommo/ui/conversations/{CONVERSATION}/{route}", self.base);
        let token = crate::token(&self.secrets.integration, KOMMO_ACCOUNT_ID, MANAGER_USER_ID);
        let mut request =
            self.http.request(method, url).header("origin", "https://demo.kommo.com").header("x-auth-token", token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        answer_of(request, "the widget's call").await
    }

    async fn widget_reads_presence(&self) -> Result<(), String> {
        let answer = self.widget(Method::GET, "presence", None).await?;
        let client = &answer["client"];
        let state = match (client["online"] == true, client["last_seen_at"].as_i64()) {
            (true, _) => "online".to_owned(),
            (false, Some(at)) => format!("offline, last seen {} s ago", SystemClock.now_s() - at),
            (false, None) => "offline, never seen".to_owned(),
        };
        let text = format!("GET …/presence → client {state}");
        self.timeline.add(Who::KommoUi, "presence", &text, answer, true);
        Ok(())
    }
}

/// Sends; anything but 200 from the bridge stops the scenario.
async fn answer_of(request: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| format!("{what}: the dev server did not answer: {e}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::OK {
        return Err(format!("{what}: the bridge answered {status}: {body}"));
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn manager_message(kommo_msgid: &str, text: &str) -> Value {
    let now = SystemClock.now_ms();
    json!({"account_id": ACCOUNT, "time": now / 1000, "message": {
        "receiver": {"id": "kommo-user-client-1", "client_id": CLIENT, "name": "Ana"},
        "sender": {"id": MANAGER, "name": "Bruno"},
        "conversation": {"id": KOMMO_CHAT, "client_id": CONVERSATION},
        "timestamp": now / 1000, "msec_timestamp": now,
        "message": {"id": kommo_msgid, "type": "text", "text": text}}})
}

fn of<'a>(entries: &'a [Entry], who: Who, kind: &'a str) -> impl Iterator<Item = &'a Entry> {
    entries.iter().filter(move |e| e.who == who && e.kind == kind)
}

fn count(entries: &[Entry], who: Who, kind: &str) -> usize {
    of(entries, who, kind).count()
}

/// What the scenario must have caused, each with whether it did.
fn checks(entries: &[Entry]) -> Vec<(&'static str, bool)> {
    let status_of = |msgid: &str| {
        of(entries, Who::Kommo, "delivery_status").find(|e| e.body["msgid"] == msgid).map(|e| e.body.clone())
    };
    let failed = status_of("kommo-msg-2");
    let client_online: Vec<bool> =
        of(entries, Who::KommoUi, "presence").map(|e| e.body["client"]["online"] == true).collect();
    let manager_online: Vec<bool> =
        of(entries, Who::ChatService, "presence.changed").map(|e| e.body["online"] == true).collect();
    vec![
        ("Kommo showed the client typing (typing)", count(entries, Who::Kommo, "typing") > 0),
        ("the client's message reached Kommo (chats, new_message)", count(entries, Who::Kommo, "new_message") > 0),
        (
            "the chat service saw the manager type and stop (typing.started, typing.stopped)",
            count(entries, Who::ChatService, "typing.started") > 0
                && count(entries, Who::ChatService, "typing.stopped") > 0,
        ),
        (
            "the manager's message reached the chat service (message.created)",
            of(entries, Who::ChatService, "message.created").any(|e| e.body["reference"] == "kommo-msg-1"),
        ),
        (
            "the read reached Kommo (delivery_status 2)",
            status_of("kommo-msg-1").is_some_and(|b| b["delivery_status"] == 2),
        ),
        (
            "the refusal reached Kommo as 905 with its text (delivery_status -1)",
            failed.is_some_and(|b| b["delivery_status"] == -1 && b["error_code"] == 905),
        ),
        ("the widget saw the client online, then offline (presence)", client_online == [true, false]),
        ("the chat service saw the manager come and go (presence.changed)", manager_online == [true, false]),
        (
            "the chat service got the manager's read receipt (message.read)",
            count(entries, Who::ChatService, "message.read") > 0,
        ),
        ("every call to Kommo and to the chat service was signed right", entries.iter().all(|e| e.signature_ok)),
    ]
}

fn summary(entries: &[Entry], total_ms: u128, played: Result<(), String>, log: &[String]) -> Result<(), Failure> {
    println!("\nsummary ({:.1} s):", total_ms as f64 / 1000.0);
    for (who, name) in [(Who::Kommo, "Kommo"), (Who::ChatService, "the chat service")] {
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for entry in entries.iter().filter(|e| e.who == who) {
            match kinds.iter_mut().find(|(kind, _)| *kind == entry.kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((&entry.kind, 1)),
            }
        }
        let total: usize = kinds.iter().map(|(_, n)| n).sum();
        let listed: Vec<String> = kinds.iter().map(|(kind, n)| format!("{kind} ×{n}")).collect();
        println!("  {name} received {total} calls: {}", listed.join(", "));
    }
    let checks = checks(entries);
    for (what, ok) in &checks {
        println!("  {} {what}", if *ok { "ok     " } else { "MISSING" });
    }
    let missing = checks.iter().filter(|(_, ok)| !ok).count();
    match (played, missing) {
        (Ok(()), 0) => {
            println!("the whole scenario played: everything expected arrived, signed");
            Ok(())
        }
        (played, _) => {
            if !log.is_empty() {
                eprintln!("the dev server's log (last lines):");
                for line in log.iter().rev().take(30).rev() {
                    eprintln!("  {line}");
                }
            }
            let reason = played.err().unwrap_or_else(|| format!("{missing} expected effect(s) missing"));
            Err(Failure::Failed(format!("the demo did not complete: {reason}")))
        }
    }
}

/// The dev server beside this executable, on a free port, with exactly the given environment,
/// what it prints kept for the summary; killed when dropped.
struct DevServer {
    process: DevServerProcess,
    log: Arc<Mutex<Vec<String>>>,
}

impl DevServer {
    async fn start(env: &[(&str, String)]) -> Result<Self, Failure> {
        let exe = std::env::current_exe().map_err(|e| Failure::Failed(format!("cannot find this executable: {e}")))?;
        let path = exe.with_file_name(format!("dev-server{}", std::env::consts::EXE_SUFFIX));
        if !path.exists() {
            return Err(Failure::Failed(format!(
                "{} is missing: the demo runs the dev server built beside bridge-cli (cargo build -p dev-server)",
                path.display()
            )));
        }
        let mut command = Command::new(&path);
        command.stderr(Stdio::piped());
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        let env: Vec<(String, String)> = env.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect();
        // The wait for its first line blocks a thread, not the runtime's.
        let started = tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
            DevServerProcess::start(
                command,
                &env,
                Arc::new(move |line: &str| kept.lock().expect("log lock").push(line.to_owned())),
                STARTUP_LIMIT,
            )
        });
        match started.await.map_err(|e| Failure::Failed(format!("the dev server's start panicked: {e}")))? {
            Ok(process) => Ok(Self { process, log }),
            Err(why) => {
                let printed = log.lock().expect("log lock").join("\n  ");
                Err(Failure::Failed(format!("the dev server did not start ({why}):\n  {printed}")))
            }
        }
    }

    fn base(&self) -> &str {
        &self.process.base
    }

    /// Kills the server and returns what it printed.
    fn stop(self) -> Vec<String> {
        self.process.stop();
        self.log.lock().expect("log lock").clone()
    }
}
