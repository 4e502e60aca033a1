//! The whole bridge on one local port (127.0.0.1:3000, `PORT` to change): the three functions'
//! handlers, the embedded store (or DynamoDB at `DYNAMODB_ENDPOINT`) and in-process timers.
//! With no configuration at all it still runs: it makes development secrets, prints them, and
//! sends what would go to Kommo and to the chat service to a built-in sink that logs each call.

mod playground;
mod sink;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use shared::adapters::dynamo::{DynamoStore, client_from_env, ensure_table};
use shared::adapters::in_process_timers::InProcessTimers;
use shared::adapters::memory::MemoryStore;
use shared::app::config::{self, Config, LocalDefaults};
use shared::app::http::{ApiError, HttpRequest, HttpResponse, MAX_BODY_BYTES, json_response};
use shared::app::metrics::MetricLines;
use shared::app::routes::{self, EntryPoint, RouteId};
use shared::app::{Bridge, Ports, wiring};
use shared::ports::store::Store;
use shared::time::SystemClock;
use tokio::net::TcpListener;

struct DevServer {
    bridge: Arc<Bridge>,
    sink: sink::Sink,
    /// The page at `/` and the routes that play the peers: only while the sink stands in for
    /// both of them.
    playground: Option<playground::Playground>,
    /// The sink's routes are there only where the sink stands in for a peer (local mode): with
    /// real peers configured they are not routes at all.
    sink_amojo: bool,
    sink_chat: bool,
    /// How long a request may take to arrive (headers, then body) and a connection may idle.
    idle_timeout: Duration,
}

/// A connection that sends nothing for this long, or a request slower than this, is closed:
/// idle or slow clients cannot hold the server's descriptors (`DEV_SERVER_IDLE_TIMEOUT_MS`).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// After an accept error (descriptors exhausted), the loop waits before trying again, doubling
/// up to this: it never spins.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let env = |name: &str| std::env::var(name).ok();
    let port = config::port(&env).unwrap_or_else(|e| refuse(&e));
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap_or_else(|e| {
        eprintln!("dev-server: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1);
    });
    let address = listener.local_addr().expect("a bound listener has an address");
    let base = format!("http://{address}");
    let (config, defaults) = Config::from_env_local(&env, &base).unwrap_or_else(|e| refuse(&e));
    announce_local_defaults(&config, &defaults);
    let idle_timeout = match env("DEV_SERVER_IDLE_TIMEOUT_MS").map(|ms| ms.parse::<u64>()) {
        None => DEFAULT_IDLE_TIMEOUT,
        Some(Ok(ms)) if ms > 0 => Duration::from_millis(ms),
        Some(_) => {
            eprintln!("dev-server: DEV_SERVER_IDLE_TIMEOUT_MS must be a positive number of milliseconds");
            std::process::exit(2);
        }
    };

    let store: Arc<dyn Store> = match &config.dynamodb_endpoint {
        Some(endpoint) => {
            let client = client_from_env(Some(endpoint));
            if let Err(e) = ensure_table(&client, &config.table_name).await {
                eprintln!("dev-server: DynamoDB at {endpoint} is not usable: {e}");
                std::process::exit(1);
            }
            println!("dev-server: store: DynamoDB at {endpoint}, table {}", config.table_name);
            Arc::new(DynamoStore::new(client, config.table_name.clone()))
        }
        None => {
            println!("dev-server: store: in memory (set DYNAMODB_ENDPOINT to use DynamoDB)");
            Arc::new(MemoryStore::new())
        }
    };
    let sink = sink::Sink::new(&config);
    let local_peers =
        defaults.generated.contains(&"KOMMO_AMOJO_URL") && defaults.generated.contains(&"CHAT_SERVICE_URL");
    let playground = if local_peers { playground::Playground::new(&config, sink.wire()) } else { None };
    // Timers run in process here; in AWS they are SQS message timers read by typing-expiry.
    let (timers, timer_loop) = InProcessTimers::new();
    let ports = Ports {
        metric_lines: Arc::new(MetricsAtDebug),
        ..wiring::http_ports(&config, Arc::new(SystemClock), store, Arc::new(timers))
    };
    let bridge = Arc::new(Bridge::new(config, ports));
    let dispatcher = Arc::new(bridge.dispatcher().expect("the local configuration wires every side").clone());
    tokio::spawn(timer_loop.run(dispatcher, Arc::new(SystemClock)));
    if playground.is_some() {
        println!("dev-server: playground (the manager and the client side by side): {base}/");
    }
    let server = Arc::new(DevServer {
        bridge,
        sink,
        playground,
        sink_amojo: defaults.generated.contains(&"KOMMO_AMOJO_URL"),
        sink_chat: defaults.generated.contains(&"CHAT_SERVICE_URL"),
        idle_timeout,
    });
    // Tests and scripts read this line to learn the port (PORT=0 picks a free one).
    println!("{}{base}", dev_server::LISTENING);

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(error) => {
                // Out of descriptors (EMFILE) and the like: wait for connections to close
                // (the idle timeout closes them) instead of spinning on the error.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                eprintln!("dev-server: accept failed ({error}); retrying in {} ms", backoff.as_millis());
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let server = server.clone();
        tokio::spawn(async move {
            let idle_timeout = server.idle_timeout;
            let service = service_fn(move |request| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(request).await) }
            });
            // The header timeout runs from when the connection starts waiting for a request,
            // so it closes idle keep-alive connections as well as slow senders.
            let mut builder = http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(idle_timeout);
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
    println!("dev-server: stopped");
}

/// A whole answer, or the playground's stream of events.
type Answer = hyper::Response<Either<Full<hyper::body::Bytes>, playground::EventStream>>;

impl DevServer {
    async fn handle(&self, request: hyper::Request<Incoming>) -> Answer {
        if let Some(playground) = &self.playground
            && request.method() == http::Method::GET
            && request.uri().path() == "/_playground/events"
        {
            return match playground.events() {
                Ok(stream) => stream.map(Either::Right),
                Err(error) => error.into_response().map(|body| Either::Left(Full::new(body))),
            };
        }
        self.answer(request).await.map(|body| Either::Left(Full::new(body)))
    }

    async fn answer(&self, request: hyper::Request<Incoming>) -> HttpResponse {
        let (parts, body) = request.into_parts();
        let collected = tokio::time::timeout(self.idle_timeout, Limited::new(body, MAX_BODY_BYTES).collect()).await;
        let body = match collected {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return ApiError::payload_too_large().into_response();
            }
            Ok(Err(_)) => {
                return ApiError::bad_request("unreadable_body", "the request body could not be read").into_response();
            }
            Err(_) => {
                return ApiError::new(http::StatusCode::REQUEST_TIMEOUT, "request_timeout", "the body came too slowly")
                    .into_response();
            }
        };
        let request = HttpRequest::from_parts(parts, body);
        if let Some(playground) = &self.playground
            && let Some(answer) = self.play(playground, &request).await
        {
            return answer;
        }
        self.route(request).await
    }

    /// The playground's page and routes; `None` for any other path.
    async fn play(&self, playground: &playground::Playground, request: &HttpRequest) -> Option<HttpResponse> {
        let path = request.uri().path();
        if request.method() == http::Method::GET {
            if path == "/_playground/about" {
                return Some(playground.about());
            }
            return playground::Playground::static_file(path);
        }
        let action = path.strip_prefix(playground::PREFIX)?;
        if request.method() != http::Method::POST {
            return None;
        }
        if action == "faults" {
            return Some(match playground::faults(request.body()) {
                Ok(faults) => {
                    let (amojo_down, chat_service_down) =
                        self.sink.set_down(faults.amojo_down, faults.chat_service_down);
                    let (amojo_slow, chat_service_slow) =
                        self.sink.set_slow(faults.amojo_slow, faults.chat_service_slow);
                    json_response(
                        http::StatusCode::OK,
                        &serde_json::json!({
                            "amojo_down": amojo_down, "chat_service_down": chat_service_down,
                            "amojo_slow": amojo_slow, "chat_service_slow": chat_service_slow,
                        }),
                    )
                }
                Err(error) => error.into_response(),
            });
        }
        let call = match playground.build(action, request.body()) {
            Ok(call) => call,
            Err(error) => return Some(error.into_response()),
        };
        // Through the same routing as a request from the network: the bridge checks the
        // signature the playground made, as it would Kommo's or the chat service's.
        let answer = self.route(call.request.clone()).await;
        Some(playground.record(&call, &answer))
    }

    async fn route(&self, request: HttpRequest) -> HttpResponse {
        let matched = match routes::find(request.method(), request.uri().path()) {
            Ok(matched) => matched,
            Err(error) => return error.into_response(),
        };
        match (matched.served_by, matched.id) {
            (EntryPoint::DevServer, RouteId::Healthz) => {
                json_response(http::StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }
            (EntryPoint::DevServer, RouteId::SinkAmojo) if self.sink_amojo => {
                let path = matched.params[0].to_owned();
                self.sink.amojo(&request, &path).await
            }
            (EntryPoint::DevServer, RouteId::SinkChat) if self.sink_chat => self.sink.chat(&request).await,
            (EntryPoint::DevServer, _) => {
                ApiError::not_found("no_route", format!("no route for {}", request.uri().path())).into_response()
            }
            (entry, _) => self.bridge.handle(entry, request).await,
        }
    }
}

/// Prints what the dev server made up, secrets included: they are development-only values,
/// and a newcomer needs them to sign requests by hand.
fn announce_local_defaults(config: &Config, defaults: &LocalDefaults) {
    if defaults.generated.is_empty() {
        return;
    }
    println!("dev-server: local mode: not set in the environment, so made up for this run:");
    for name in &defaults.generated {
        let value = match *name {
            "KOMMO_CHANNEL_ID" => config.channel_id.clone(),
            "KOMMO_CHANNEL_SECRET" => config.channel_secret.expose().to_owned(),
            "KOMMO_AMOJO_URL" => format!("{} (the built-in sink)", config.amojo_url),
            "KOMMO_INTEGRATION_SECRET" => {
                config.integration_secret.as_ref().map(|s| s.expose().to_owned()).unwrap_or_default()
            }
            "CHAT_SERVICE_URL" => {
                format!("{} (the built-in sink)", config.chat_service_url.as_deref().unwrap_or_default())
            }
            "CHAT_SERVICE_SECRET" => config.chat_service_secret.as_ref().map(|s| s.expose()).unwrap_or_default(),
            "KOMMO_ACCOUNTS" => {
                let (numeric, amojo) = &config.accounts[0];
                format!(
                    "{numeric}:{amojo} (Kommo UI tokens with account_id {numeric} act for scope {}_{amojo})",
                    config.channel_id
                )
            }
            _ => continue,
        };
        println!("  {name}={value}");
    }
}

fn refuse(error: &config::ConfigError) -> ! {
    eprintln!("dev-server: {error}");
    std::process::exit(2);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The metric lines Lambda writes to stdout for CloudWatch, here in the log at debug level
/// (`RUST_LOG=metrics=debug`): a terminal is no place for a JSON line per request.
struct MetricsAtDebug;

impl MetricLines for MetricsAtDebug {
    fn write(&self, line: String) {
        tracing::debug!(target: "metrics", "{line}");
    }
}
