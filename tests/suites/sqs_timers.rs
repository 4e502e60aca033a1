//! The SQS timer adapter and the `typing-expiry` handler against a real SQS-compatible server
//! (moto's, started by tests/run-all and named by TEST_SQS_ENDPOINT).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::adapters::memory::MemoryStore;
use shared::adapters::sqs::{SqsTimers, sqs_client_from_env};
use shared::app::config::Config;
use shared::app::{Bridge, Ports};
use shared::models::chat::BridgeEvent;
use shared::ports::store::{LeaseKey, SendTurns, Turn, TypingLeases};
use shared::ports::timers::{DueWork, Timers};
use shared::queued::QueuedRecord;
use shared::testing::{RecordingChat, RecordingKommo};
use shared::time::{Clock, SystemClock};

/// A client for the test's own receiving: long polls outlast the bridge's tight SDK timeouts.
fn receiving_client() -> aws_sdk_sqs::Client {
    let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(30))
        .operation_attempt_timeout(Duration::from_secs(30))
        .build();
    let config = aws_sdk_sqs::config::Builder::from(&shared::adapters::aws::sdk_config())
        .endpoint_url(support::required_env("TEST_SQS_ENDPOINT"))
        .timeout_config(timeouts)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

async fn fresh_queue(client: &aws_sdk_sqs::Client) -> String {
    let name = support::unique("bridge-timers-");
    client.create_queue().queue_name(name).send().await.expect("moto creates the queue").queue_url.unwrap()
}

async fn receive(client: &aws_sdk_sqs::Client, queue: &str, wait_s: i32) -> Vec<aws_sdk_sqs::types::Message> {
    let output = client
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .wait_time_seconds(wait_s)
        .send()
        .await
        .expect("moto answers");
    output.messages.unwrap_or_default()
}

fn check(scope: &str) -> DueWork {
    DueWork::ManagerTypingCheck { scope_id: scope.into(), conversation_id: "conv-1".into(), manager_id: "m-1".into() }
}

#[tokio::test]
async fn a_timer_message_stays_invisible_until_it_falls_due() {
    let client = receiving_client();
    let queue = fresh_queue(&client).await;
    let sender = sqs_client_from_env(Some(&support::required_env("TEST_SQS_ENDPOINT")));
    let timers = SqsTimers::new(sender, &queue, Arc::new(SystemClock));
    let scheduled_at = Instant::now();
    timers.schedule(check("chan_a"), SystemClock.now_ms() + 2000).await.unwrap();
    assert!(receive(&client, &queue, 0).await.is_empty(), "not visible before it is due");
    let mut received = Vec::new();
    while received.is_empty() && scheduled_at.elapsed() < Duration::from_secs(10) {
        received = receive(&client, &queue, 1).await;
    }
    let waited = scheduled_at.elapsed();
    assert!(waited >= Duration::from_millis(1900), "visible after {waited:?}, before the 2 s delay");
    // Generous: the point is "not early"; late only means a loaded machine.
    assert!(waited < Duration::from_secs(8), "visible only after {waited:?}");
    let body: DueWork = serde_json::from_str(received[0].body().unwrap()).unwrap();
    assert_eq!(body, check("chan_a"));
}

#[tokio::test]
async fn typing_expiry_runs_a_batch_from_the_queue_and_reports_only_the_unreadable_record() {
    let client = receiving_client();
    let queue = fresh_queue(&client).await;
    let sender = sqs_client_from_env(Some(&support::required_env("TEST_SQS_ENDPOINT")));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(MemoryStore::new());
    let chat = Arc::new(RecordingChat::new(clock.clone()));
    let (config, _) = Config::from_env_local(&|_| None, "http://127.0.0.1:9").unwrap();
    let timers = Arc::new(SqsTimers::new(sender, &queue, clock.clone()));
    let bridge = Bridge::new(
        config,
        Ports {
            clock: clock.clone(),
            store: store.clone(),
            kommo: Arc::new(RecordingKommo::new(clock.clone())),
            chat: Some(chat.clone()),
            timers: timers.clone(),
            installs: None,
            metric_lines: Arc::new(shared::app::metrics::Stdout),
        },
    );
    // One lease that lapsed (its typing.started shown at the chat service), one still live.
    let now = clock.now_ms();
    let lapsed = LeaseKey::manager("chan_lapsed", "conv-1", "m-1");
    store.extend(&lapsed, now - 1).await.unwrap();
    let lane = lapsed.lane();
    let Turn::Yours { token, .. } = store.take_turn("chan_lapsed", &lane, now, 1000).await.unwrap() else {
        panic!("a fresh lane is free");
    };
    store.end_turn("chan_lapsed", &lane, &token, Some(1)).await.unwrap();
    store.extend(&LeaseKey::manager("chan_live", "conv-1", "m-1"), now + 3000).await.unwrap();
    timers.schedule(check("chan_lapsed"), now).await.unwrap();
    timers.schedule(check("chan_live"), now).await.unwrap();
    client.send_message().queue_url(&queue).message_body("{not due work").send().await.unwrap();

    let mut messages = Vec::new();
    let started = Instant::now();
    while messages.len() < 3 && started.elapsed() < Duration::from_secs(10) {
        messages.extend(receive(&client, &queue, 1).await);
    }
    assert_eq!(messages.len(), 3);
    let garbage_id =
        messages.iter().find(|m| m.body() == Some("{not due work")).unwrap().message_id().unwrap().to_owned();
    let records = messages
        .iter()
        .map(|m| QueuedRecord { message_id: m.message_id().unwrap().into(), body: m.body().unwrap().into() })
        .collect();
    let failed = bridge.dispatcher().unwrap().run_batch(records).await;
    assert_eq!(failed, vec![garbage_id]);

    let stopped: Vec<_> = chat.events().into_iter().map(|e| e.call).collect();
    assert!(
        matches!(&stopped[..], [BridgeEvent::TypingStopped { scope_id, .. }] if scope_id == "chan_lapsed"),
        "{stopped:?}"
    );
    // The live lease's check was put back on the queue, due at its expiry.
    assert!(receive(&client, &queue, 0).await.is_empty(), "not due yet");
    let mut again = Vec::new();
    while again.is_empty() && started.elapsed() < Duration::from_secs(15) {
        again = receive(&client, &queue, 1).await;
    }
    assert_eq!(serde_json::from_str::<DueWork>(again[0].body().unwrap()).unwrap(), check("chan_live"));
}

/// The deployed functions read their secrets from SSM Parameter Store (moto's server here,
/// which speaks SSM too), named by `*_PARAM`, on their first event, under a stand-in Lambda
/// Runtime API. Init checks the rest of the configuration and exits 2 on a missing variable; a
/// parameter SSM does not have fails the invocation (a function error), naming the variable.
/// Each function reads only its own secrets and variables: chat-callback is given the
/// integration secret's parameter (which SSM does not have) and a malformed `CHAT_SERVICE_URL`,
/// and starts and answers all the same, since it uses neither. Its answer also writes the
/// event's metric line on stdout, where Lambda hands it to CloudWatch Logs.
#[tokio::test]
async fn a_lambda_function_reads_its_own_secrets_from_ssm_on_its_first_event() {
    let endpoint = support::required_env("TEST_SQS_ENDPOINT");
    // moto loads its SSM backend on the first call, which under a loaded machine can take longer
    // than the bridge's own 1 s per attempt: the test's setup client waits (seen in CI once).
    let timeouts = aws_sdk_ssm::config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(30))
        .operation_attempt_timeout(Duration::from_secs(30))
        .build();
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::config::Builder::from(&shared::adapters::aws::sdk_config())
            .endpoint_url(&endpoint)
            .timeout_config(timeouts)
            .build(),
    );
    let prefix = format!("/{}", support::unique("bridge-"));
    // No integration secret is stored: chat-callback never uses it, so it must not ask SSM for
    // it (SSM would answer without it, and the function would fail naming it).
    let secrets =
        [("channel", "5a44c5dff55f3c15a4cce8d7c4cc27e207c7e189"), ("chat", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")];
    for (name, value) in secrets {
        ssm.put_parameter()
            .name(format!("{prefix}/{name}"))
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .expect("moto stores the parameter");
    }
    let env = |chat_param: String| {
        vec![
            ("KOMMO_CHANNEL_ID", "chan".to_owned()),
            ("TABLE_NAME", "bridge".to_owned()),
            ("TIMER_QUEUE_URL", "https://sqs.example/timers".to_owned()),
            ("SSM_ENDPOINT", endpoint.clone()),
            ("KOMMO_CHANNEL_SECRET_PARAM", format!("{prefix}/channel")),
            ("KOMMO_INTEGRATION_SECRET_PARAM", format!("{prefix}/integration")),
            ("CHAT_SERVICE_URL", "not read by chat-callback".to_owned()),
            ("CHAT_SERVICE_SECRET_PARAM", chat_param),
            ("AWS_LAMBDA_FUNCTION_NAME", "chat-callback".to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ]
    };
    // One invocation: a chat event with no signature. Answering it needs the chat secret.
    let invoke = |chat_param: String| {
        let runtime = support::RuntimeApi::serve_one(support::http_api_event(
            "/chat/events",
            serde_json::json!({"content-type": "application/json"}),
            "{}",
        ));
        let mut function = std::process::Command::new(support::workspace_binary("chat-callback"))
            .env_clear()
            .envs(env(chat_param))
            .env("AWS_LAMBDA_RUNTIME_API", &runtime.address)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the function starts");
        let outcome = runtime.outcome(Duration::from_secs(20));
        let _ = function.kill();
        let output = function.wait_with_output().expect("the function's output");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (outcome, text(&output.stderr), text(&output.stdout))
    };
    let ((kind, error), _, _) = invoke(format!("{prefix}/nowhere"));
    assert_eq!(kind, "error");
    assert_eq!(error["errorType"], "configuration", "the kind, not a Rust type's name: {error}");
    assert!(error.to_string().contains("CHAT_SERVICE_SECRET_PARAM"), "{error}");
    // With every secret found the bridge is built and answers: 401, the event is unsigned.
    let ((kind, response), stderr, stdout) = invoke(format!("{prefix}/chat"));
    assert_eq!(kind, "response", "{stderr}");
    assert_eq!(response["statusCode"], 401, "{response}");
    // The function's metric line, on stdout as CloudWatch Logs reads it: the event, refused.
    let metric_lines: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "KommoBridge")
        .collect();
    assert_eq!(metric_lines.len(), 1, "one metric line for one event: {stdout}");
    assert_eq!(
        (&metric_lines[0]["Events"], &metric_lines[0]["Kind"], &metric_lines[0]["Outcome"]),
        (&serde_json::json!(1), &serde_json::json!("chat_event"), &serde_json::json!("refused")),
        "{stdout}"
    );

    // A variable missing at init: exit code 2 at once, before any event, naming it.
    let mut missing = env(format!("{prefix}/chat"));
    missing.retain(|(name, _)| *name != "TABLE_NAME");
    let output = std::process::Command::new(support::workspace_binary("chat-callback"))
        .env_clear()
        .envs(missing)
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")
        .output()
        .expect("the function runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("TABLE_NAME"));
}

/// The typing-expiry binary under a stand-in Lambda Runtime API, given an SQS event as Lambda
/// delivers it (every field of AWS's documented sample) with one readable and one unreadable
/// record: it parses the batch with the runtime's own event types, runs the readable work
/// against Dynoxide, and answers a partial batch failure naming only the unreadable record.
#[tokio::test]
async fn typing_expiry_answers_a_real_sqs_event_with_the_partial_batch_failure() {
    let endpoint = support::required_env("TEST_DYNAMODB_ENDPOINT");
    let table = support::unique("expiry-");
    shared::adapters::dynamo::ensure_table(&shared::adapters::dynamo::client_from_env(Some(&endpoint)), &table)
        .await
        .expect("the table is created");
    let work = serde_json::to_string(&check("chan_real")).unwrap();
    let record = |id: &str, body: &str| {
        serde_json::json!({
            "messageId": id,
            "receiptHandle": "MessageReceiptHandle",
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": "1523232000000",
                "SenderId": "123456789012",
                "ApproximateFirstReceiveTimestamp": "1523232000001"
            },
            "messageAttributes": {},
            "md5OfBody": "7b270e59b47ff90a553787216d55d91d",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bridge-timers",
            "awsRegion": "us-east-1"
        })
    };
    let event = serde_json::json!({"Records": [record("good-1", &work), record("bad-1", "{not due work")]});
    let runtime = support::RuntimeApi::serve_one(event);
    let mut function = std::process::Command::new(support::workspace_binary("typing-expiry"))
        .env_clear()
        .envs([
            ("KOMMO_CHANNEL_ID", "chan"),
            ("KOMMO_CHANNEL_SECRET", "5a44c5dff55f3c15a4cce8d7c4cc27e207c7e189"),
            ("CHAT_SERVICE_URL", "http://127.0.0.1:9/chat"),
            ("CHAT_SERVICE_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("TABLE_NAME", table.as_str()),
            ("DYNAMODB_ENDPOINT", endpoint.as_str()),
            ("TIMER_QUEUE_URL", "http://127.0.0.1:9/queue"),
            ("AWS_LAMBDA_FUNCTION_NAME", "typing-expiry"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ])
        .env("AWS_LAMBDA_RUNTIME_API", &runtime.address)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the function starts");
    let (kind, answer) = runtime.outcome(Duration::from_secs(20));
    let _ = function.kill();
    let stderr =
        function.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
    assert_eq!(kind, "response", "{answer} {stderr}");
    assert_eq!(answer, serde_json::json!({"batchItemFailures": [{"itemIdentifier": "bad-1"}]}), "{stderr}");
}

/// The largest request the bridge accepts is queueable: a client's `message.created` and a
/// Kommo manager message, each exactly the request limit with its text filling it, go through
/// the bridge onto the SQS-compatible server as one message each, within SQS's 262,144 bytes
/// (which moto enforces: shown first, so this test can fail).
#[tokio::test]
async fn the_largest_accepted_request_queues_as_one_sqs_message() {
    use bytes::Bytes;
    use shared::app::http::MAX_BODY_BYTES;
    use shared::app::routes::EntryPoint;
    const SQS_MAX_MESSAGE_BYTES: usize = 262_144;
    let client = receiving_client();
    // The timer queue as the template makes it: SQS's classic limit, whatever a new queue's
    // default (AWS raised the maximum to 1 MiB in 2025; the bridge fits either).
    let queue = client
        .create_queue()
        .queue_name(support::unique("bridge-timers-"))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize, SQS_MAX_MESSAGE_BYTES.to_string())
        .send()
        .await
        .expect("moto creates the queue")
        .queue_url
        .unwrap();
    let refused =
        client.send_message().queue_url(&queue).message_body("x".repeat(SQS_MAX_MESSAGE_BYTES + 1)).send().await;
    assert!(refused.is_err(), "moto refuses a message over SQS's limit");
    let sender = sqs_client_from_env(Some(&support::required_env("TEST_SQS_ENDPOINT")));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (config, _) = Config::from_env_local(&|_| None, "http://127.0.0.1:9").unwrap();
    let scope = format!("{}_{}", config.channel_id, config.accounts[0].1);
    let bridge = Bridge::new(
        config,
        Ports {
            clock: clock.clone(),
            store: Arc::new(MemoryStore::new()),
            kommo: Arc::new(RecordingKommo::new(clock.clone())),
            chat: Some(Arc::new(RecordingChat::new(clock.clone()))),
            timers: Arc::new(SqsTimers::new(sender, &queue, clock.clone())),
            installs: None,
            metric_lines: Arc::new(shared::app::metrics::Stdout),
        },
    );
    let filled = |template: &dyn Fn(&str) -> String| template(&"x".repeat(MAX_BODY_BYTES - template("").len()));
    let client_message = filled(&|text| {
        format!(
            r#"{{"type":"message.created","scope_id":"{scope}","conversation_id":"conv-big","msgid":"m-big","user":{{"id":"client-1","name":"Adam"}},"message":{{"type":"text","text":"{text}"}},"timestamp_ms":1}}"#
        )
    });
    let account = scope.split_once('_').unwrap().1.to_owned();
    let manager_message = filled(&|text| {
        format!(
            r#"{{"account_id":"{account}","time":1,"message":{{"receiver":{{"id":"r","client_id":"client-1"}},"sender":{{"id":"manager-1"}},"conversation":{{"id":"kommo-big","client_id":"conv-big"}},"timestamp":1,"message":{{"id":"kommo-big-1","type":"text","text":"{text}"}}}}}}"#
        )
    });
    assert_eq!((client_message.len(), manager_message.len()), (MAX_BODY_BYTES, MAX_BODY_BYTES));

    let now = clock.now_s();
    let secret = bridge.config.chat_service_secret.clone().unwrap();
    let chat_request = http::Request::post("/chat/events")
        .header("webhook-id", "msg_big")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", secret.sign("msg_big", now, client_message.as_bytes()))
        .body(Bytes::from(client_message))
        .unwrap();
    let answer = bridge.handle(EntryPoint::ChatCallback, chat_request).await;
    assert_eq!(answer.status(), 200, "{}", String::from_utf8_lossy(answer.body()));
    let signature =
        shared::signing::kommo_webhook::sign(bridge.config.channel_secret.expose(), manager_message.as_bytes());
    let kommo_request = http::Request::post(format!("/kommo/webhook/{scope}"))
        .header("x-signature", signature)
        .body(Bytes::from(manager_message))
        .unwrap();
    let answer = bridge.handle(EntryPoint::KommoWebhook, kommo_request).await;
    assert_eq!(answer.status(), 200, "{}", String::from_utf8_lossy(answer.body()));

    let mut kinds = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while kinds.len() < 2 && Instant::now() < deadline {
        for message in receive(&client, &queue, 1).await {
            let body = message.body().unwrap_or_default();
            assert!(body.len() <= SQS_MAX_MESSAGE_BYTES, "{} bytes", body.len());
            let work: DueWork = serde_json::from_str(body).expect("queued work");
            kinds.push(work.kind());
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["import_client_message", "relay_manager_message"]);
}

/// Numbers in free-form fields are queued as serde_json writes them (`1e15` as
/// `1000000000000000.0`): requests around the queue's limit, each well under the body limit, go
/// through the bridge onto the SQS-compatible server (a queue of SQS's classic 262,144 bytes).
/// Each is accepted (200) or refused before acceptance (413), never failed by the queue (500);
/// every one accepted is on the queue, within the limit; every one refused left nothing there.
/// Text with the two characters SQS refuses in a body (U+FFFE, U+FFFF) is queued escaped and
/// read back unchanged.
#[tokio::test]
async fn what_is_accepted_fits_the_queue_whatever_its_numbers() {
    use bytes::Bytes;
    use shared::adapters::sqs::SQS_MAX_MESSAGE_BYTES;
    use shared::app::routes::EntryPoint;
    let client = receiving_client();
    let queue = client
        .create_queue()
        .queue_name(support::unique("bridge-timers-"))
        .attributes(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize, SQS_MAX_MESSAGE_BYTES.to_string())
        .send()
        .await
        .expect("moto creates the queue")
        .queue_url
        .unwrap();
    let sender = sqs_client_from_env(Some(&support::required_env("TEST_SQS_ENDPOINT")));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (config, _) = Config::from_env_local(&|_| None, "http://127.0.0.1:9").unwrap();
    let scope = format!("{}_{}", config.channel_id, config.accounts[0].1);
    let account = config.accounts[0].1.clone();
    let bridge = Bridge::new(
        config,
        Ports {
            clock: clock.clone(),
            store: Arc::new(MemoryStore::new()),
            kommo: Arc::new(RecordingKommo::new(clock.clone())),
            chat: Some(Arc::new(RecordingChat::new(clock.clone()))),
            timers: Arc::new(SqsTimers::new(sender, &queue, clock.clone())),
            installs: None,
            metric_lines: Arc::new(shared::app::metrics::Stdout),
        },
    );
    let numbers = |count: usize| vec!["1e15"; count].join(",");
    let chat_secret = bridge.config.chat_service_secret.clone().unwrap();
    let chat_event = |id: &str, body: String| {
        let now = SystemClock.now_s();
        http::Request::post("/chat/events")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", chat_secret.sign(id, now, body.as_bytes()))
            .body(Bytes::from(body))
            .unwrap()
    };
    let kommo_webhook = |body: String| {
        let signature = shared::signing::kommo_webhook::sign(bridge.config.channel_secret.expose(), body.as_bytes());
        http::Request::post(format!("/kommo/webhook/{scope}"))
            .header("x-signature", signature)
            .body(Bytes::from(body))
            .unwrap()
    };

    // 19 bytes a number queued: the limit falls within these counts for both kinds of request.
    let (mut accepted, mut refused) = (0, 0);
    for count in (13_640..13_780).step_by(7) {
        let chat = format!(
            r#"{{"type":"message.created","scope_id":"{scope}","conversation_id":"conv-n","msgid":"m-{count}","user":{{"id":"client-1","name":"Adam"}},"message":{{"type":"text","text":"hi","metrics":[{}]}},"timestamp_ms":1}}"#,
            numbers(count)
        );
        let manager = format!(
            r#"{{"account_id":"{account}","time":1,"message":{{"receiver":{{"id":"r","client_id":"client-1"}},"sender":{{"id":"manager-1","name":"Ann"}},"conversation":{{"id":"kommo-n","client_id":"conv-n"}},"timestamp":1,"message":{{"id":"kommo-{count}","type":"text","text":"hi","metrics":[{}]}}}}}}"#,
            numbers(count)
        );
        assert!(chat.len() < 80_000 && manager.len() < 80_000);
        let requests = [
            (EntryPoint::ChatCallback, chat_event(&format!("msg_{count}"), chat)),
            (EntryPoint::KommoWebhook, kommo_webhook(manager)),
        ];
        for (entry, request) in requests {
            let answer = bridge.handle(entry, request).await;
            match answer.status().as_u16() {
                200 => accepted += 1,
                413 => refused += 1,
                other => panic!("{other}: {}", String::from_utf8_lossy(answer.body())),
            }
        }
    }
    assert!(accepted >= 4 && refused >= 4, "the limit falls inside: {accepted} accepted, {refused} refused");
    // The two characters SQS refuses, in a message's text.
    let odd = format!(
        r#"{{"type":"message.created","scope_id":"{scope}","conversation_id":"conv-odd","msgid":"m-odd","user":{{"id":"client-1","name":"Adam"}},"message":{{"type":"text","text":"a\ufffeb\uffffc"}},"timestamp_ms":1}}"#
    );
    assert_eq!(bridge.handle(EntryPoint::ChatCallback, chat_event("msg_odd", odd)).await.status(), 200);
    accepted += 1;

    // Every work an accepted request queued (one each) is on the queue, within the limit.
    let mut queued = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while queued.len() < accepted && Instant::now() < deadline {
        for message in receive(&client, &queue, 1).await {
            let body = message.body().unwrap_or_default().to_owned();
            assert!(body.len() <= SQS_MAX_MESSAGE_BYTES, "{} bytes", body.len());
            queued.push(serde_json::from_str::<DueWork>(&body).expect("queued work"));
        }
    }
    assert_eq!(queued.len(), accepted, "one queued work per accepted request, none for a refused one");
    assert!(receive(&client, &queue, 1).await.is_empty(), "nothing more");
    let odd_text = queued.iter().find_map(|work| match work {
        DueWork::ImportClientMessage { message, .. } if message.msgid == "m-odd" => message.message.text.clone(),
        _ => None,
    });
    assert_eq!(odd_text.as_deref(), Some("a\u{fffe}b\u{ffff}c"));
}
