//! The AWS SDK retries a DynamoDB attempt that timed out (1 s, `shared::aws`), and the first
//! attempt may have been written: its retry then fails its own condition. Found by the load
//! test (tests/LOAD.md, item 1). Every conditional write of the DynamoDB adapter must take such
//! a failure for its own write, not a rival's: each case here goes through a proxy that applies
//! the write at once but holds Dynoxide's answer 1.5 s, so the SDK times out and retries.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::adapters::dynamo::{DynamoStore, client_from_env, ensure_table};
use shared::models::status::DeliveryStatus;
use shared::ports::store::*;
use shared::time::{Clock, SystemClock};

const TABLE: &str = "bridge-sdk-retries";
/// Longer than the SDK's attempt timeout, shorter than its operation timeout with a retry.
const HOLD: Duration = Duration::from_millis(1500);

/// Forwards requests to Dynoxide; when armed with n, holds the answer to the n-th next request.
struct HoldingProxy {
    url: String,
    armed: Arc<AtomicUsize>,
    /// Requests with the body of the held one: the SDK's retries of it.
    repeats: Arc<AtomicUsize>,
}

impl HoldingProxy {
    fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let armed = Arc::new(AtomicUsize::new(0));
        let repeats = Arc::new(AtomicUsize::new(0));
        let held_body = Arc::new(Mutex::new(None::<Vec<u8>>));
        let (thread_armed, thread_repeats) = (armed.clone(), repeats.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let (upstream, armed, repeats, held_body) =
                    (upstream.clone(), thread_armed.clone(), thread_repeats.clone(), held_body.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().expect("a socket clone"));
                    let mut client = client;
                    // One request after another on a kept-alive connection, each forwarded on a
                    // connection of its own that Dynoxide closes after answering.
                    while let Some((head, body)) = read_request(&mut reader) {
                        let countdown = armed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                        let hold = countdown == Ok(1);
                        let mut held = held_body.lock().expect("not poisoned");
                        if hold {
                            *held = Some(body.clone());
                        } else if held.as_ref() == Some(&body) {
                            repeats.fetch_add(1, Ordering::SeqCst);
                        }
                        drop(held);
                        let answer = forward(&upstream, &head, &body);
                        if hold {
                            std::thread::sleep(HOLD);
                        }
                        if client.write_all(&answer).is_err() {
                            return; // the SDK gave up on this attempt and closed
                        }
                    }
                });
            }
        });
        Self { url, armed, repeats }
    }

    /// Runs `write` with the next request's answer held; checks the SDK did retry it.
    async fn held<T>(&self, write: impl Future<Output = T>) -> T {
        self.held_at(1, write).await
    }

    /// Runs `work` with the answer to its `nth` request held; checks the SDK did retry it.
    async fn held_at<T>(&self, nth: usize, work: impl Future<Output = T>) -> T {
        let repeats_before = self.repeats.load(Ordering::SeqCst);
        self.armed.store(nth, Ordering::SeqCst);
        let outcome = work.await;
        assert_eq!(self.armed.load(Ordering::SeqCst), 0, "the write went through the proxy");
        assert_eq!(self.repeats.load(Ordering::SeqCst), repeats_before + 1, "the SDK retried the held write once");
        outcome
    }
}

/// The request head (request line and headers, without Connection) and body, or None at EOF.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(Vec<String>, Vec<u8>)> {
    let mut head = Vec::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
            if name.eq_ignore_ascii_case("connection") {
                continue;
            }
        }
        head.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn forward(upstream: &str, head: &[String], body: &[u8]) -> Vec<u8> {
    let mut server = TcpStream::connect(upstream).expect("Dynoxide is up");
    let mut request = head.join("\r\n").into_bytes();
    request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    request.extend_from_slice(body);
    server.write_all(&request).expect("forwarded");
    let mut answer = Vec::new();
    server.read_to_end(&mut answer).expect("Dynoxide's answer");
    answer
}

struct Setup {
    proxy: HoldingProxy,
    /// Through the proxy.
    store: DynamoStore,
    /// Straight to Dynoxide, for the steps before and after the held write.
    direct: DynamoStore,
    scope: String,
    now: i64,
}

async fn setup() -> Setup {
    let endpoint = support::required_env("TEST_DYNAMODB_ENDPOINT");
    let direct_client = client_from_env(Some(&endpoint));
    ensure_table(&direct_client, TABLE).await.expect("the table is created");
    let proxy = HoldingProxy::start(&endpoint);
    let store = DynamoStore::new(client_from_env(Some(&proxy.url)), TABLE);
    let direct = DynamoStore::new(direct_client, TABLE);
    Setup { proxy, store, direct, scope: support::unique("chan_"), now: SystemClock.now_ms() }
}

#[tokio::test]
async fn typing_leases() {
    let Setup { proxy, store, direct, scope, now } = setup().await;
    let manager = LeaseKey::manager(&scope, "conv-1", "m-1");
    assert_eq!(proxy.held(store.extend(&manager, now + 5000)).await.unwrap(), LeaseChange::Started);
    assert_eq!(
        proxy.held(store.extend(&manager, now + 9000)).await.unwrap(),
        LeaseChange::Extended { previous_expires_at_ms: now + 5000 }
    );
    let client = LeaseKey::client(&scope, "conv-1", "c-1");
    let started = proxy.held(store.client_typing_signal(&client, now, now + 6000, 4000)).await.unwrap();
    assert_eq!(started, ClientSignal::Started { forward_now: true, next_forward_at_ms: now + 4000 });
    assert!(proxy.held(store.claim_refresh(&client, now + 4000, 4000)).await.unwrap(), "the refresh is claimed");
    assert_eq!(direct.get_lease(&client, now + 4001).await.unwrap().unwrap().last_forwarded_at_ms, Some(now + 4000));
}

#[tokio::test]
async fn presence_windows() {
    let Setup { proxy, store, direct, scope, now } = setup().await;
    let phone = PresenceKey { scope_id: scope.clone(), subject: "client:u-1".into(), device: "phone".into() };
    let first = proxy.held(store.heartbeat(&phone, now, 60_000, 30_000)).await.unwrap();
    assert_eq!(first, HeartbeatOutcome::CameOnline);
    assert!(proxy.held(store.mark_pushed(&scope, "client:u-1", "phone", true)).await.unwrap(), "the push is due");
    assert!(proxy.held(store.go_offline(&phone, now + 1000)).await.unwrap(), "it went offline");
    assert!(!direct.presence(&scope, "client:u-1", now + 1001).await.unwrap().online);
}

#[tokio::test]
async fn message_records_and_read_marks() {
    let Setup { proxy, store, direct, scope, now } = setup().await;
    let record = MessageRecord {
        scope_id: scope.clone(),
        kommo_msgid: "kommo-1".into(),
        conversation_id: "conv-1".into(),
        direction: Direction::Outgoing,
        chat_msgid: None,
        created_at_ms: now,
        status_rank: None,
        relay: RelayState::Pending,
    };
    assert!(direct.insert_message(&record).await.unwrap());
    let claim = proxy.held(store.claim_relay(&scope, "kommo-1", now, 60_000)).await.unwrap();
    assert_eq!(claim, RelayClaim::Claimed, "the relay is claimed");
    let change = proxy.held(store.advance_status(&scope, "kommo-1", &DeliveryStatus::Delivered, now)).await.unwrap();
    assert!(matches!(change, StatusChange::Advanced { .. }), "{change:?}");
    assert!(proxy.held(store.advance_read_mark(&scope, "conv-1", now, "chat-1")).await.unwrap(), "the mark moved");
    let claim = proxy.held(store.claim(&scope, "webhook-id#msg_1", now, 60_000)).await.unwrap();
    assert!(matches!(claim, shared::ports::store::KeyClaim::Claimed { .. }), "the id is claimed: {claim:?}");
}

#[tokio::test]
async fn send_turns() {
    let Setup { proxy, store, direct, scope, now } = setup().await;
    let Turn::Yours { token, sent_mark: None, .. } =
        proxy.held(store.take_turn(&scope, "lane", now, 30_000)).await.unwrap()
    else {
        panic!("the turn is this call's");
    };
    proxy.held(store.end_turn(&scope, "lane", &token, Some(1))).await.unwrap();
    let Turn::Yours { sent_mark, .. } = direct.take_turn(&scope, "lane", now + 1, 30_000).await.unwrap() else {
        panic!("given back");
    };
    assert_eq!(sent_mark, Some(1));
}

#[tokio::test]
async fn an_expiry_timer_whose_delete_was_retried_still_stops_the_typing_shown() {
    use shared::app::config::Config;
    use shared::app::{Bridge, Ports};
    use shared::models::chat::BridgeEvent;
    use shared::ports::timers::DueWork;
    use shared::testing::ManualTimers;
    use shared::testing::{RecordingChat, RecordingKommo};
    let Setup { proxy, store, direct, scope, now } = setup().await;
    // A lapsed lease whose typing.started the chat service shows.
    let lease = LeaseKey::manager(&scope, "conv-1", "m-1");
    direct.extend(&lease, now - 1).await.unwrap();
    let lane = lease.lane();
    let Turn::Yours { token, .. } = direct.take_turn(&scope, &lane, now, 1000).await.unwrap() else {
        panic!("a fresh lane is free");
    };
    direct.end_turn(&scope, &lane, &token, Some(1)).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let chat = Arc::new(RecordingChat::new(clock.clone()));
    let (config, _) = Config::from_env_local(&|_| None, "http://127.0.0.1:9").unwrap();
    let bridge = Bridge::new(
        config,
        Ports {
            clock: clock.clone(),
            store: Arc::new(store),
            kommo: Arc::new(RecordingKommo::new(clock.clone())),
            chat: Some(chat.clone()),
            timers: Arc::new(ManualTimers::default()),
            installs: None,
            metric_lines: Arc::new(shared::app::metrics::Stdout),
        },
    );
    let check = DueWork::ManagerTypingCheck {
        scope_id: scope.clone(),
        conversation_id: "conv-1".into(),
        manager_id: "m-1".into(),
    };
    // The check reads the lease, then deletes it on condition it lapsed: that delete is held.
    proxy.held_at(2, bridge.dispatcher().unwrap().run(check)).await.unwrap();
    let events: Vec<_> = chat.events().into_iter().map(|event| event.call).collect();
    assert!(matches!(&events[..], [BridgeEvent::TypingStopped { .. }]), "{events:?}");
}
