//! How outbound work is retried: exponential backoff with jitter, bounded, and which answers
//! are worth another attempt. Pure: the randomness is passed in.

use std::time::Duration;

/// How outbound calls are retried: exponential backoff with jitter, bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Gives up within about two minutes: 1+2+4+…+32 s with jitter, capped at 30 s a wait.
    pub const DEFAULT: Self =
        Self { max_attempts: 7, base_delay: Duration::from_millis(1000), max_delay: Duration::from_secs(30) };

    /// Retries inside one invocation (a few seconds at most): longer backoff goes through the
    /// queue, as new work due later, so no Lambda waits out an outage.
    pub const INLINE: Self =
        Self { max_attempts: 3, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(1) };

    /// Typing is ephemeral: one quick retry at most, so it never backs up other work.
    pub const EPHEMERAL: Self =
        Self { max_attempts: 2, base_delay: Duration::from_millis(150), max_delay: Duration::from_millis(300) };

    /// The wait before attempt `attempt + 1` (1-based `attempt`), with "equal jitter":
    /// half fixed, half random, so retries of many callers spread out.
    pub fn delay_after(&self, attempt: u32, random: u64) -> Duration {
        let exponential = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let capped = exponential.min(self.max_delay);
        let half = capped / 2;
        let spread = half.as_millis() as u64;
        half + Duration::from_millis(if spread == 0 { 0 } else { random % (spread + 1) })
    }
}

/// How long to wait before the next attempt: the server's `Retry-After` if it gave one,
/// else the policy's backoff with jitter drawn from `random`.
pub fn wait_before_retry(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>, random: u64) -> Duration {
    retry_after.unwrap_or_else(|| policy.delay_after(attempt, random))
}

/// Milliseconds before queued work is tried again: the backoff for `attempt`, or longer if the
/// peer asked for it (a `Retry-After` is a floor here, not a replacement).
pub fn requeue_delay_ms(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>, random: u64) -> i64 {
    let backoff = policy.delay_after(attempt, random);
    backoff.max(retry_after.unwrap_or_default()).as_millis() as i64
}

/// Whether an HTTP status is worth another attempt: rate limiting and server faults.
pub fn is_retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_exponentially_with_bounded_jitter() {
        let policy = RetryPolicy::DEFAULT;
        let first = policy.delay_after(1, 0);
        assert_eq!(first, Duration::from_millis(500));
        assert!(policy.delay_after(1, u64::MAX - 1) <= Duration::from_millis(1000));
        assert_eq!(policy.delay_after(3, 0), Duration::from_millis(2000));
        assert_eq!(policy.delay_after(20, 0), Duration::from_secs(15));
        let total_max: Duration = (1..policy.max_attempts).map(|a| policy.delay_after(a, u64::MAX)).sum();
        assert!(total_max <= Duration::from_secs(130), "{total_max:?}");
    }

    #[test]
    fn a_retry_after_replaces_the_inline_wait_and_floors_the_queued_one() {
        let policy = RetryPolicy::DEFAULT;
        let asked = Some(Duration::from_secs(7));
        assert_eq!(wait_before_retry(&policy, 1, asked, 0), Duration::from_secs(7));
        assert_eq!(wait_before_retry(&policy, 1, None, 0), Duration::from_millis(500));
        assert_eq!(requeue_delay_ms(&policy, 1, asked, 0), 7000);
        assert_eq!(requeue_delay_ms(&policy, 6, Some(Duration::from_secs(1)), 0), 15_000);
    }

    #[test]
    fn only_rate_limits_and_server_faults_are_retried() {
        for (status, retried) in [(200, false), (400, false), (404, false), (429, true), (500, true), (503, true)] {
            assert_eq!(is_retryable_status(status), retried, "{status}");
        }
    }
}
