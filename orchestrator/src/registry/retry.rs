//! How often and how patiently transient failures are retried.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Exponential backoff: `first_delay`, doubling, at most `max_delay`, for
/// `attempts` tries in all. No jitter: a copy runs a handful of requests
/// at once, not enough to synchronise a registry's load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1 = never retry).
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed try number `failed` (1-based), or None when
    /// no try is left. A registry's `Retry-After: <seconds>` is honoured up
    /// to `max_delay`.
    pub fn delay(&self, failed: u32, headers: Option<&HeaderMap>) -> Option<Duration> {
        if failed >= self.attempts.max(1) {
            return None;
        }
        let asked = headers
            .and_then(|h| h.get(RETRY_AFTER))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let backoff = self
            .first_delay
            .saturating_mul(1u32 << (failed - 1).min(20));
        Some(asked.unwrap_or(backoff).min(self.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops_after_the_last_try() {
        let p = RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        };
        let d: Vec<_> = (1..=5).map(|n| p.delay(n, None)).collect();
        assert_eq!(
            d,
            vec![
                Some(Duration::from_millis(100)),
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(300)),
                Some(Duration::from_millis(300)),
                None
            ]
        );
        let once = RetryPolicy {
            attempts: 1,
            ..p.clone()
        };
        assert_eq!(once.delay(1, None), None);
        assert!(p.delay(u32::MAX - 1, None).is_none());
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let p = RetryPolicy::default();
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(p.delay(1, Some(&h)), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(p.delay(1, Some(&h)), Some(p.max_delay));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(p.delay(1, Some(&h)), Some(p.first_delay));
    }
}
