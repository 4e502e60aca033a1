//! What outbound calls share: one HTTP client per process, retry waits and `Retry-After`.

use std::time::Duration;

use crate::random::random_bytes;
use crate::rules::retry::{RetryPolicy, wait_before_retry};

/// Longest `Retry-After` the bridge honours; a longer one is treated as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One client per process (built at cold start), rustls, bounded connect and request times.
pub fn http_client(request_timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(request_timeout)
        .pool_idle_timeout(Duration::from_secs(50))
        .user_agent(concat!("kommo-feel-connected-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initialises")
}

/// Seconds from a `Retry-After` header in its delay-seconds form (the HTTP-date form is
/// ignored in favour of the backoff schedule).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// How one attempt of an outbound call ended.
pub enum Attempt<T> {
    /// Finished, well or badly: no retry would change it.
    Final(T),
    /// Worth another try (429, 5xx, timeout, refused connection).
    Retry { status: Option<u16>, retry_after: Option<Duration>, reason: String },
}

/// The last failure when the attempts ran out (or the peer asked for a longer pause than is
/// worth waiting in process: `retry_after` then says how long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub attempts: u32,
    pub status: Option<u16>,
    pub reason: String,
    pub retry_after: Option<Duration>,
}

/// A `Retry-After` longer than this many times the policy's longest wait is not waited out in
/// process: the caller gets it back and schedules the retry through the queue.
const LONGEST_INLINE_WAIT_FACTOR: u32 = 5;

/// Runs `attempt` until it is final or `policy` runs out, waiting between tries.
/// `peer` names the other side in logs ("amojo", "chat service"), nothing more.
pub async fn with_retries<T, F, Fut>(policy: RetryPolicy, peer: &'static str, mut attempt: F) -> Result<T, Exhausted>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Attempt<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Attempt::Final(value) => return Ok(value),
            Attempt::Retry { status, retry_after, reason } => {
                let too_long = retry_after.is_some_and(|wait| wait > policy.max_delay * LONGEST_INLINE_WAIT_FACTOR);
                if tries >= policy.max_attempts || too_long {
                    return Err(Exhausted { attempts: tries, status, reason, retry_after });
                }
                let wait = wait_before_retry(&policy, tries, retry_after, u64::from_le_bytes(random_bytes::<8>()));
                tracing::warn!(peer, attempt = tries, status, wait_ms = wait.as_millis() as u64, %reason, "outbound call failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Classifies a transport error (no response at all) as retryable.
pub fn transport_retry<T>(error: &reqwest::Error) -> Attempt<T> {
    let reason = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    Attempt::Retry { status: None, retry_after: None, reason: reason.into() }
}
