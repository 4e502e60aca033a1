//! The conversations, and the two senders as they behave in production: Kommo posts each
//! webhook once and never again, whatever the answer (it waits 5 s); the chat service's sender
//! retries an event with backoff under the same `webhook-id`, each attempt signed afresh, while
//! the answer is a 5xx, a timeout or a connection error, and stops on a 2xx or a 4xx. Every
//! request and every answer is logged for the reconciliation.
//!
//! A conversation: the client types and writes; the manager opens it in the widget, types
//! (Kommo's refresh every 5 s) and writes, twice; the client's receipts (delivered, then read,
//! sometimes `up_to`) follow each manager message once the chat service has it; the client
//! edits and reacts to their first message; the manager starts typing again and gives up; the
//! widget is left.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use shared::signing::standard_webhooks::WebhookSecret;
use shared::signing::{kommo_webhook, one_time_token};

use crate::servers::FakeAdmin;
use crate::sim::{ORIGIN, Rng, now_ms};

/// Kommo waits this long for a webhook's answer.
const KOMMO_WAIT: Duration = Duration::from_secs(5);
/// The chat service's sender: the waits before each retry, and each attempt's own bound.
const CHAT_RETRY_WAITS_MS: [u64; 7] = [500, 1000, 2000, 4000, 8000, 8000, 8000];
const CHAT_ATTEMPT_WAIT: Duration = Duration::from_secs(15);
/// How long a client waits for a manager's message before giving up on receipts for it.
const RELAY_WAIT: Duration = Duration::from_secs(30);
/// Kommo's manager-typing webhook: `expired_at` this far ahead, sent again this often.
const TYPING_AHEAD_S: i64 = 5;
const TYPING_REFRESH_MS: u64 = 5000;

/// One conversation's parties and ids.
#[derive(Debug, Clone)]
pub struct Conv {
    pub index: usize,
    pub scope: String,
    pub amojo_account: String,
    pub account_numeric: u32,
    pub conversation_id: String,
    pub client_id: String,
    /// The manager: Kommo's amojo id in webhooks, the Kommo user id in the widget's tokens.
    pub manager: u64,
    pub kommo_chat_id: String,
    pub kommo_client_id: String,
}

/// A webhook Kommo sent (once).
#[derive(Debug, Clone)]
pub struct KommoSent {
    pub conversation: usize,
    /// `typing`, `message`, `viewing`, `left`.
    pub kind: &'static str,
    pub msgid: Option<String>,
    /// None: no answer within Kommo's wait.
    pub status: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub at_ms: i64,
    pub status: Option<u16>,
    /// The error code of a JSON error answer.
    pub code: Option<String>,
}

/// An event the chat service sent, with every attempt.
#[derive(Debug, Clone)]
pub struct ChatSent {
    pub conversation: usize,
    pub kind: &'static str,
    /// The message it is about: its msgid, or for a status the Kommo msgid.
    pub subject: Option<String>,
    /// A status event's status.
    pub status: Option<&'static str>,
    pub webhook_id: String,
    pub attempts: Vec<Attempt>,
}

impl ChatSent {
    pub fn final_status(&self) -> Option<u16> {
        self.attempts.last().and_then(|a| a.status)
    }

    /// Whether the sender may take it as delivered: a 2xx, or 409 (the contract: "a sender may
    /// treat 409 as delivered").
    pub fn accepted(&self) -> bool {
        self.final_status().is_some_and(|s| (200..300).contains(&s) || s == 409)
    }
}

#[derive(Debug, Default)]
pub struct Log {
    pub kommo: Vec<KommoSent>,
    pub chat: Vec<ChatSent>,
}

/// What the conversations share.
pub struct Ctx {
    pub webhook_url: String,
    pub callback_url: String,
    pub http: reqwest::Client,
    pub channel_secret: String,
    pub chat_secret: WebhookSecret,
    pub integration_secret: String,
    pub log: Mutex<Log>,
    /// Chat-service events still being sent (retrying).
    pub sending: AtomicU64,
    /// Kommo msgids the chat service has received as `message.created`.
    pub relayed: Mutex<HashSet<String>>,
    ids: AtomicU64,
}

impl Ctx {
    pub fn new(
        webhook_url: String,
        callback_url: String,
        channel_secret: String,
        chat_secret: WebhookSecret,
        integration_secret: String,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            webhook_url,
            callback_url,
            http,
            channel_secret,
            chat_secret,
            integration_secret,
            log: Mutex::new(Log::default()),
            sending: AtomicU64::new(0),
            relayed: Mutex::new(HashSet::new()),
            ids: AtomicU64::new(0),
        })
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A webhook as Kommo posts it, once.
    async fn kommo(&self, conv: &Conv, kind: &'static str, msgid: Option<String>, body: &Value) {
        let body = body.to_string();
        let request = self
            .http
            .post(format!("{}/kommo/webhook/{}", self.webhook_url, conv.scope))
            .header("content-type", "application/json")
            .header("x-signature", kommo_webhook::sign(&self.channel_secret, body.as_bytes()))
            .timeout(KOMMO_WAIT)
            .body(body);
        let status = request.send().await.ok().map(|answer| answer.status().as_u16());
        let sent = KommoSent { conversation: conv.index, kind, msgid, status };
        self.log.lock().expect("not poisoned").kommo.push(sent);
    }

    /// The widget's presence call: `viewing` or `left`, with a fresh one-time token.
    async fn widget(&self, conv: &Conv, state: &'static str) {
        let now = now_ms() / 1000;
        let claims = json!({"iss": ORIGIN, "account_id": conv.account_numeric, "user_id": conv.manager,
                            "jti": format!("jti-{}", self.next_id()), "iat": now, "nbf": now, "exp": now + 60});
        let token = one_time_token::issue(&self.integration_secret, &claims);
        let request = self
            .http
            .post(format!("{}/kommo/ui/conversations/{}/presence", self.webhook_url, conv.conversation_id))
            .header("origin", ORIGIN)
            .header("x-auth-token", token)
            .header("content-type", "application/json")
            .timeout(KOMMO_WAIT)
            .body(json!({"state": state}).to_string());
        let status = request.send().await.ok().map(|answer| answer.status().as_u16());
        let sent = KommoSent { conversation: conv.index, kind: state, msgid: None, status };
        self.log.lock().expect("not poisoned").kommo.push(sent);
    }

    /// Sends a chat-service event in the background, retried as the chat service's sender does.
    fn chat(
        self: &Arc<Self>,
        conv: &Conv,
        kind: &'static str,
        subject: Option<String>,
        status: Option<&'static str>,
        body: Value,
    ) {
        let webhook_id = format!("msg_chaos{}x{}", conv.index, self.next_id());
        let mut sent = ChatSent { conversation: conv.index, kind, subject, status, webhook_id, attempts: Vec::new() };
        let ctx = self.clone();
        ctx.sending.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let body = body.to_string();
            let mut waits = CHAT_RETRY_WAITS_MS.iter();
            loop {
                let attempt = ctx.chat_attempt(&sent.webhook_id, &body).await;
                let done = attempt.status.is_some_and(|s| s < 500);
                sent.attempts.push(attempt);
                match waits.next() {
                    Some(wait) if !done => tokio::time::sleep(Duration::from_millis(*wait)).await,
                    _ => break,
                }
            }
            ctx.log.lock().expect("not poisoned").chat.push(sent);
            ctx.sending.fetch_sub(1, Ordering::SeqCst);
        });
    }

    async fn chat_attempt(&self, webhook_id: &str, body: &str) -> Attempt {
        let now_s = now_ms() / 1000;
        let request = self
            .http
            .post(format!("{}/chat/events", self.callback_url))
            .header("content-type", "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", now_s.to_string())
            .header("webhook-signature", self.chat_secret.sign(webhook_id, now_s, body.as_bytes()))
            .timeout(CHAT_ATTEMPT_WAIT)
            .body(body.to_owned());
        let at_ms = now_ms();
        let Ok(answer) = request.send().await else { return Attempt { at_ms, status: None, code: None } };
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        let code =
            serde_json::from_str::<Value>(&text).ok().and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        Attempt { at_ms, status: Some(status), code }
    }

    /// Follows the chat service's records: which manager messages it has.
    pub async fn watch_relays(self: Arc<Self>, chat: FakeAdmin, scopes: Vec<String>) {
        loop {
            for scope in &scopes {
                let Ok(calls) = chat.calls(scope).await else { continue };
                let references = calls
                    .iter()
                    .filter(|c| c["body"]["type"] == "message.created" && c["reply_status"].as_u64() == Some(200))
                    .filter_map(|c| c["body"]["reference"].as_str().map(str::to_owned));
                self.relayed.lock().expect("not poisoned").extend(references);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A pause drawn in `from..=to` milliseconds.
async fn pause(rng: &mut Rng, from: u64, to: u64) {
    tokio::time::sleep(Duration::from_millis(from + rng.below(to - from + 1))).await;
}

/// Plays one conversation.
pub async fn run(ctx: Arc<Ctx>, conv: Conv, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut receipts = Vec::new();
    pause(&mut rng, 0, 4000).await;
    client_typing(&ctx, &conv, "typing.started");
    pause(&mut rng, 1000, 2000).await;
    client_typing(&ctx, &conv, "typing.started");
    pause(&mut rng, 500, 1500).await;
    let first = client_message(&ctx, &conv, 1);
    pause(&mut rng, 1000, 2000).await;
    ctx.widget(&conv, "viewing").await;
    receipts.push(manager_writes(&ctx, &conv, &mut rng, 1).await);
    pause(&mut rng, 1000, 2000).await;
    client_typing(&ctx, &conv, "typing.started");
    pause(&mut rng, 800, 1500).await;
    if rng.percent(50) {
        client_typing(&ctx, &conv, "typing.stopped");
        pause(&mut rng, 300, 800).await;
    }
    client_message(&ctx, &conv, 2);
    if rng.percent(50) {
        let body = json!({"type": "message.edited", "scope_id": conv.scope, "conversation_id": conv.conversation_id,
                          "msgid": first, "message": {"type": "text", "text": "edited"}});
        ctx.chat(&conv, "message.edited", Some(first.clone()), None, body);
    }
    if rng.percent(60) {
        let body = json!({"type": "reaction.added", "scope_id": conv.scope, "conversation_id": conv.conversation_id,
                          "user_id": conv.client_id, "emoji": "👍", "msgid": first});
        ctx.chat(&conv, "reaction.added", Some(first.clone()), None, body);
    }
    pause(&mut rng, 1000, 3000).await;
    receipts.push(manager_writes(&ctx, &conv, &mut rng, 2).await);
    pause(&mut rng, 2000, 4000).await;
    if rng.percent(50) {
        client_message(&ctx, &conv, 3);
    }
    // The manager starts typing again and gives up: the lease must lapse by itself.
    manager_typing(&ctx, &conv).await;
    if rng.percent(50) {
        tokio::time::sleep(Duration::from_millis(TYPING_REFRESH_MS)).await;
        manager_typing(&ctx, &conv).await;
    }
    pause(&mut rng, 6000, 8000).await;
    ctx.widget(&conv, "left").await;
    for receipt in receipts {
        let _ = receipt.await;
    }
}

fn client_typing(ctx: &Arc<Ctx>, conv: &Conv, kind: &'static str) {
    let body = json!({"type": kind, "scope_id": conv.scope, "conversation_id": conv.conversation_id, "user_id": conv.client_id});
    ctx.chat(conv, kind, None, None, body);
}

/// A client message; its msgid.
fn client_message(ctx: &Arc<Ctx>, conv: &Conv, n: u32) -> String {
    let msgid = format!("cm-{}-{n}", conv.index);
    let body = json!({"type": "message.created", "scope_id": conv.scope, "conversation_id": conv.conversation_id,
                      "msgid": msgid, "user": {"id": conv.client_id, "name": format!("Client {}", conv.index)},
                      "message": {"type": "text", "text": format!("client message {n}")}, "timestamp_ms": now_ms()});
    ctx.chat(conv, "message.created", Some(msgid.clone()), None, body);
    msgid
}

async fn manager_typing(ctx: &Ctx, conv: &Conv) {
    let now_s = now_ms() / 1000;
    let body = json!({"account_id": conv.amojo_account, "time": now_s,
                      "action": {"typing": {"user": {"id": conv.manager.to_string()},
                                            "conversation": {"id": conv.kommo_chat_id, "client_id": conv.conversation_id},
                                            "expired_at": now_s + TYPING_AHEAD_S}}});
    ctx.kommo(conv, "typing", None, &body).await;
}

/// The manager types (Kommo refreshing the webhook every 5 s) and sends message `n`; the task
/// of the client's receipts for it.
async fn manager_writes(ctx: &Arc<Ctx>, conv: &Conv, rng: &mut Rng, n: u32) -> tokio::task::JoinHandle<()> {
    manager_typing(ctx, conv).await;
    if rng.percent(50) {
        tokio::time::sleep(Duration::from_millis(TYPING_REFRESH_MS)).await;
        manager_typing(ctx, conv).await;
    }
    pause(rng, 1000, 3000).await;
    let msgid = format!("km-{}-{n}", conv.index);
    let sent_ms = now_ms();
    let body = json!({"account_id": conv.amojo_account, "time": sent_ms / 1000,
                      "message": {"receiver": {"id": conv.kommo_client_id, "client_id": conv.client_id},
                                  "sender": {"id": conv.manager.to_string(), "name": "Manager"},
                                  "conversation": {"id": conv.kommo_chat_id, "client_id": conv.conversation_id},
                                  "timestamp": sent_ms / 1000, "msec_timestamp": sent_ms,
                                  "message": {"id": msgid, "type": "text", "text": format!("manager message {n}")}}});
    ctx.kommo(conv, "message", Some(msgid.clone()), &body).await;
    let (read_after, up_to) = (200 + rng.below(1800), n > 1 && rng.percent(40));
    let (ctx, conv) = (ctx.clone(), conv.clone());
    tokio::spawn(async move {
        // The client can only acknowledge what reached them.
        let waited_from = std::time::Instant::now();
        while !ctx.relayed.lock().expect("not poisoned").contains(&msgid) {
            if waited_from.elapsed() > RELAY_WAIT {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        for status in ["delivered", "read"] {
            let mut body = json!({"type": "message.status", "scope_id": conv.scope,
                                  "conversation_id": conv.conversation_id, "reference": msgid, "status": status});
            if status == "read" {
                tokio::time::sleep(Duration::from_millis(read_after)).await;
                if up_to {
                    body["up_to"] = json!(true);
                }
            }
            ctx.chat(&conv, "message.status", Some(msgid.clone()), Some(status), body);
        }
    })
}
