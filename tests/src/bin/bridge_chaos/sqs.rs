//! The timer queue on moto's SQS-compatible server (it honours the visibility timeout and
//! per-message `DelaySeconds`, checked when the harness was written), spoken to in SQS's JSON
//! protocol, and the event source mapping that feeds `typing-expiry` as Lambda's does: long
//! polls of up to the template's `BatchSize`, one invocation per batch with an SQS event, the
//! records not named in `batchItemFailures` deleted on success, none on a function error, a
//! kill or a timeout (they come back after the visibility timeout), and a message received more
//! than `maxReceiveCount` times moved to the dead letters instead. Fault: a received message is
//! delivered twice (a copy of its body queued at once), as SQS's at-least-once delivery may.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::lambda::{Function, Outcome, chance};
use crate::sim::{Rng, now_ms};

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// What a piece of timer work is about: `relay:`, `import:`, `report:` and a message id, or
/// `deliver:` and the event's webhook-id, or its kind and the ids it names.
pub fn subject(work: &Value) -> String {
    let pointer = |p: &str| work.pointer(p).map(text_or_json).unwrap_or_default();
    match text(&work["work"]) {
        "relay_manager_message" => format!("relay:{}", pointer("/kommo_msgid")),
        "import_client_message" => format!("import:{}", pointer("/message/msgid")),
        "edit_client_message" => format!("edit:{}", pointer("/edit/msgid")),
        "send_client_reaction" => format!("react:{} {}", pointer("/reaction/msgid"), pointer("/added")),
        "report_delivery_status" => {
            format!("report:{} {}", pointer("/request/msgid"), pointer("/request/delivery_status"))
        }
        "deliver_chat_event" => {
            format!(
                "deliver:{} {} {}",
                pointer("/event/type"),
                pointer("/event/conversation_id"),
                pointer("/webhook_id")
            )
        }
        kind => format!("{kind}:{} {}", pointer("/conversation_id"), pointer("/manager_id")),
    }
}

fn text_or_json(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

/// The queue's ARN as the records name it (the event source's own, not checked by the function).
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:bridge-timers";
/// How long one receive waits: Lambda's pollers wait 20 s; shorter, so the harness can stop.
const RECEIVE_WAIT_S: u64 = 2;

/// An SQS client in the JSON protocol (what the bridge's SDK speaks too).
pub struct Sqs {
    http: reqwest::Client,
    endpoint: String,
}

impl Sqs {
    pub fn new(endpoint: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self { http, endpoint: endpoint.trim_end_matches('/').to_owned() })
    }

    async fn call(&self, action: &str, body: Value) -> Result<Value, String> {
        let answer = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("AmazonSQS.{action}"))
            // moto tells the service by the credential scope; it checks no signature.
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=local/20000101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("SQS {action}: {}", crate::servers::error_chain(&e)))?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| format!("SQS {action}: {e}"))?;
        if !status.is_success() {
            return Err(format!("SQS {action}: HTTP {status}: {text}"));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| format!("SQS {action}: not JSON ({e}): {text}"))
    }

    pub async fn create_queue(&self, name: &str, visibility_timeout_s: u64) -> Result<String, String> {
        let attributes = json!({"VisibilityTimeout": visibility_timeout_s.to_string(), "MaximumMessageSize": "262144"});
        let answer = self.call("CreateQueue", json!({"QueueName": name, "Attributes": attributes})).await?;
        answer["QueueUrl"].as_str().map(str::to_owned).ok_or_else(|| format!("CreateQueue answered {answer}"))
    }

    async fn receive(&self, queue: &str, max: u64, wait_s: u64) -> Result<Vec<Value>, String> {
        let request = json!({"QueueUrl": queue, "MaxNumberOfMessages": max, "WaitTimeSeconds": wait_s,
                             "AttributeNames": ["All"], "MessageSystemAttributeNames": ["All"]});
        let answer = self.call("ReceiveMessage", request).await?;
        Ok(answer["Messages"].as_array().cloned().unwrap_or_default())
    }

    async fn delete(&self, queue: &str, receipt_handle: &str) -> Result<(), String> {
        self.call("DeleteMessage", json!({"QueueUrl": queue, "ReceiptHandle": receipt_handle})).await.map(drop)
    }

    async fn send(&self, queue: &str, body: &str) -> Result<(), String> {
        self.call("SendMessage", json!({"QueueUrl": queue, "MessageBody": body})).await.map(drop)
    }

    /// Messages visible, in flight (received, not deleted) and delayed.
    pub async fn depth(&self, queue: &str) -> Result<[u64; 3], String> {
        let answer = self.call("GetQueueAttributes", json!({"QueueUrl": queue, "AttributeNames": ["All"]})).await?;
        let count = |name: &str| answer["Attributes"][name].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok([
            count("ApproximateNumberOfMessages"),
            count("ApproximateNumberOfMessagesNotVisible"),
            count("ApproximateNumberOfMessagesDelayed"),
        ])
    }
}

#[derive(Debug, Default)]
pub struct SourceStats {
    pub batches: AtomicU64,
    pub records: AtomicU64,
    pub deleted: AtomicU64,
    /// Records the function named in `batchItemFailures`.
    pub item_failures: AtomicU64,
    /// Batches whose invocation failed, was killed or timed out: none of their records deleted.
    pub failed_batches: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub duplicates: AtomicU64,
    pub receive_errors: AtomicU64,
    /// The kinds of work dead-lettered.
    pub dead_kinds: Mutex<Vec<String>>,
    /// Records handed to the function, by kind of work.
    pub kinds: Mutex<BTreeMap<String, u64>>,
    /// Per piece of work (by what it is about, [`subject`]): how often it was handed to the
    /// function, and when last.
    pub runs: Mutex<HashMap<String, Run>>,
}

/// How the timer work about one thing ran.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    /// Times handed to the function.
    pub count: u64,
    pub last_ms: i64,
    /// The last batch it was in failed whole (killed, timed out): it is back only after the
    /// visibility timeout.
    pub last_failed: bool,
}

/// The event source mapping of the timer queue.
pub struct EventSource {
    pub sqs: Arc<Sqs>,
    pub queue: String,
    pub function: Function,
    pub batch_size: u64,
    pub max_receive_count: u64,
    pub duplicate_share: f64,
    pub rng: Mutex<Rng>,
    pub stats: SourceStats,
    pub stop: AtomicBool,
    /// Pollers in the middle of a batch.
    pub polling: AtomicU64,
    /// One line per batch: when, the invocation, its records (id, kind, receive count), how it ended.
    pub trace: Mutex<std::fs::File>,
}

impl EventSource {
    /// One poller: receive, invoke, delete, until stopped.
    pub async fn poll(self: Arc<Self>) {
        while !self.stop.load(Ordering::SeqCst) {
            let messages = match self.sqs.receive(&self.queue, self.batch_size, RECEIVE_WAIT_S).await {
                Ok(messages) => messages,
                Err(problem) => {
                    if self.stats.receive_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("bridge-chaos: {problem}");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            if messages.is_empty() {
                continue;
            }
            self.polling.fetch_add(1, Ordering::SeqCst);
            self.batch(messages).await;
            self.polling.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn batch(&self, messages: Vec<Value>) {
        let mut records = Vec::new();
        for message in messages {
            let receipt = message["ReceiptHandle"].as_str().unwrap_or_default().to_owned();
            let received: u64 =
                message["Attributes"]["ApproximateReceiveCount"].as_str().and_then(|c| c.parse().ok()).unwrap_or(1);
            let body = message["Body"].as_str().unwrap_or_default().to_owned();
            if received > self.max_receive_count {
                // The redrive policy: to the dead-letter queue instead of the function.
                if self.sqs.delete(&self.queue, &receipt).await.is_ok() {
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    let kind =
                        serde_json::from_str::<Value>(&body).ok().and_then(|w| w["work"].as_str().map(str::to_owned));
                    self.stats.dead_kinds.lock().expect("not poisoned").push(kind.unwrap_or_default());
                }
                continue;
            }
            let work = serde_json::from_str::<Value>(&body).unwrap_or_default();
            *self.stats.kinds.lock().expect("not poisoned").entry(text(&work["work"]).to_owned()).or_default() += 1;
            {
                let mut runs = self.stats.runs.lock().expect("not poisoned");
                let run = runs.entry(subject(&work)).or_default();
                (run.count, run.last_ms, run.last_failed) = (run.count + 1, now_ms(), false);
            }
            let twice = chance(&mut self.rng.lock().expect("not poisoned"), self.duplicate_share);
            if twice && self.sqs.send(&self.queue, &body).await.is_ok() {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            records.push((message, receipt, received));
        }
        if records.is_empty() {
            return;
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.records.fetch_add(records.len() as u64, Ordering::Relaxed);
        let event = json!({"Records": records.iter().map(|(m, _, received)| record(m, *received)).collect::<Vec<_>>()});
        let (outcome, request_id) = self.function.invoke(event.to_string()).await;
        let described: Vec<String> = records
            .iter()
            .map(|(m, _, received)| {
                let work = serde_json::from_str::<Value>(m["Body"].as_str().unwrap_or_default()).unwrap_or_default();
                let about = [
                    "/conversation_id",
                    "/manager_id",
                    "/kommo_msgid",
                    "/request/msgid",
                    "/request/delivery_status",
                    "/event/type",
                    "/event/conversation_id",
                    "/message/msgid",
                    "/webhook_id",
                    "/attempt",
                ]
                .iter()
                .filter_map(|pointer| work.pointer(pointer).filter(|v| !v.is_null()).map(text_or_json))
                .collect::<Vec<_>>()
                .join(" ");
                format!("{} {} [{about}] #{received}", text(&m["MessageId"]), text(&work["work"]))
            })
            .collect();
        let ended = match &outcome {
            Outcome::Response(body) => String::from_utf8_lossy(body).into_owned(),
            Outcome::Killed(how) => format!("killed {how}"),
            other => format!("{other:?}"),
        };
        let line = format!("{} {request_id}: {} -> {ended}", now_ms(), described.join("; "));
        let _ = writeln!(self.trace.lock().expect("not poisoned"), "{line}");
        let failed: Vec<String> = match outcome {
            Outcome::Response(body) => {
                let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
                answer["batchItemFailures"]
                    .as_array()
                    .map(|items| items.iter().filter_map(|i| i["itemIdentifier"].as_str().map(str::to_owned)).collect())
                    .unwrap_or_default()
            }
            _ => {
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                let mut runs = self.stats.runs.lock().expect("not poisoned");
                for (message, _, _) in &records {
                    let work = serde_json::from_str::<Value>(text(&message["Body"])).unwrap_or_default();
                    runs.entry(subject(&work)).or_default().last_failed = true;
                }
                return;
            }
        };
        self.stats.item_failures.fetch_add(failed.len() as u64, Ordering::Relaxed);
        for (message, receipt, _) in &records {
            let id = message["MessageId"].as_str().unwrap_or_default();
            if !failed.iter().any(|f| f == id) && self.sqs.delete(&self.queue, receipt).await.is_ok() {
                self.stats.deleted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A record of Lambda's SQS event.
fn record(message: &Value, received: u64) -> Value {
    let attributes = &message["Attributes"];
    json!({
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            "ApproximateReceiveCount": received.to_string(),
            "SentTimestamp": attributes["SentTimestamp"].as_str().unwrap_or("0"),
            "SenderId": "123456789012",
            "ApproximateFirstReceiveTimestamp": attributes["ApproximateFirstReceiveTimestamp"].as_str().unwrap_or("0"),
        },
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN,
        "awsRegion": "us-east-1",
    })
}
