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

/// The most characters of a peer's error text the bridge keeps (after escaping).
pub const PEER_TEXT_MAX_CHARS: usize = 300;

/// A peer's error text (amojo's `error_description`, Kommo's `detail`, the chat service's
/// `code`, a parser's complaint about their answer) as the bridge keeps it: control and
/// line-breaking characters escaped (`\n`, `\u{1b}`, …) so that no text from outside can end a
/// log line and forge the next, bidirectional overrides escaped so that none can reorder what a
/// reader sees, and the whole cut to [`PEER_TEXT_MAX_CHARS`] (a `…` marks the cut).
pub fn peer_text(text: &str) -> String {
    let mut kept = String::with_capacity(text.len().min(PEER_TEXT_MAX_CHARS));
    let mut chars = 0;
    // Where the text is cut if it turns out too long: the last whole piece that leaves room for `…`.
    let mut cut_at = None;
    for c in text.chars() {
        let reorders_or_breaks = matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        );
        let piece: String =
            if reorders_or_breaks || c.is_control() { c.escape_default().collect() } else { c.to_string() };
        let width = piece.chars().count();
        if chars + width > PEER_TEXT_MAX_CHARS {
            kept.truncate(cut_at.unwrap_or(kept.len()));
            kept.push('…');
            return kept;
        }
        if cut_at.is_none() && chars + width > PEER_TEXT_MAX_CHARS - 1 {
            cut_at = Some(kept.len());
        }
        chars += width;
        kept.push_str(&piece);
    }
    kept
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_text_keeps_to_one_bounded_line() {
        // (what the peer said, what the bridge keeps)
        let cases = [
            ("Chat not found", "Chat not found".to_owned()),
            ("bad\nINFO forged line", "bad\\nINFO forged line".to_owned()),
            ("a\r\nb\tc\u{1b}[31m", "a\\r\\nb\\tc\\u{1b}[31m".to_owned()),
            ("\u{85}next\u{2028}line\u{202e}gnp.exe", "\\u{85}next\\u{2028}line\\u{202e}gnp.exe".to_owned()),
            ("", String::new()),
            ("Ünïcödé stays", "Ünïcödé stays".to_owned()),
        ];
        for (said, kept) in cases {
            assert_eq!(peer_text(said), kept, "{said:?}");
        }
        let long = peer_text(&"x".repeat(10_000));
        assert_eq!(long, format!("{}…", "x".repeat(PEER_TEXT_MAX_CHARS - 1)));
        // A text of exactly the limit is kept whole; an escape is never cut in half.
        assert_eq!(peer_text(&"z".repeat(PEER_TEXT_MAX_CHARS)), "z".repeat(PEER_TEXT_MAX_CHARS));
        let edge = peer_text(&format!("{}\n", "y".repeat(PEER_TEXT_MAX_CHARS - 1)));
        assert_eq!(edge, format!("{}…", "y".repeat(PEER_TEXT_MAX_CHARS - 1)));
    }
}
