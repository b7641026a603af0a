//! A rule's retry policy (Gateway API `HTTPRouteRetry`, GEP-1731), digested
//! for the request path: which outcomes are retried, how often, and how long
//! to wait before each retry.

use std::time::Duration;

use gatehouse_snapshot as pb;

/// Longest wait between two attempts, however the backoff grows.
const MAX_BACKOFF: Duration = Duration::from_millis(pb::MAX_RETRY_BACKOFF_MS as u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Bit `status - 400` set for each retried status.
    codes: [u64; 4],
    /// Retries after the first attempt.
    pub retries: u32,
    /// The least wait before the first retry.
    pub backoff: Duration,
}

impl RetryPolicy {
    pub fn build(retry: &pb::Retry) -> Result<Self, String> {
        if retry.backoff_ms > pb::MAX_RETRY_BACKOFF_MS {
            return Err(format!(
                "backoff_ms {} is above {}",
                retry.backoff_ms,
                pb::MAX_RETRY_BACKOFF_MS
            ));
        }
        if retry.attempts > pb::MAX_RETRY_ATTEMPTS {
            return Err(format!(
                "attempts {} is above {}",
                retry.attempts,
                pb::MAX_RETRY_ATTEMPTS
            ));
        }
        let mut codes = [0u64; 4];
        for &code in &retry.codes {
            if !(400..=599).contains(&code) {
                return Err(format!("code {code} is outside 400..=599"));
            }
            let bit = (code - 400) as usize;
            codes[bit / 64] |= 1 << (bit % 64);
        }
        Ok(Self {
            codes,
            retries: retry.attempts,
            backoff: Duration::from_millis(u64::from(retry.backoff_ms)),
        })
    }

    pub fn retries_status(&self, status: u16) -> bool {
        let Some(bit) = status.checked_sub(400).map(usize::from) else {
            return false;
        };
        bit < 200 && self.codes[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The wait before retry number `retry` (1 for the first): the backoff,
    /// doubled for each further retry up to [`MAX_BACKOFF`] (the controller
    /// holds the backoff itself to it), plus up to a quarter of it at random
    /// (`jitter` in 0..1) so that clients failed together do not retry
    /// together.
    pub fn wait(&self, retry: u32, jitter: f64) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1 << retry.saturating_sub(1).min(16));
        let base = doubled.min(MAX_BACKOFF);
        base + base.mul_f64(jitter.clamp(0.0, 1.0) / 4.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(codes: &[u32], attempts: u32, backoff_ms: u32) -> RetryPolicy {
        RetryPolicy::build(&pb::Retry {
            codes: codes.to_vec(),
            attempts,
            backoff_ms,
        })
        .unwrap()
    }

    #[test]
    fn only_the_listed_statuses_are_retried() {
        let p = policy(&[500, 503, 599, 429], 2, 10);
        for status in [500, 503, 599, 429] {
            assert!(p.retries_status(status), "{status}");
        }
        for status in [200, 399, 400, 501, 502, 504, 600, 0, u16::MAX] {
            assert!(!p.retries_status(status), "{status}");
        }
    }

    #[test]
    fn backoff_doubles_is_capped_and_never_below_the_minimum() {
        let p = policy(&[500], 3, 100);
        assert_eq!(p.wait(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.wait(2, 0.0), Duration::from_millis(200));
        assert_eq!(p.wait(3, 0.0), Duration::from_millis(400));
        assert_eq!(p.wait(3, 1.0), Duration::from_millis(500));
        assert_eq!(p.wait(30, 0.0), MAX_BACKOFF);
        let slow = policy(&[500], 3, pb::MAX_RETRY_BACKOFF_MS);
        assert_eq!(slow.wait(5, 0.0), MAX_BACKOFF);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let bad_code = pb::Retry {
            codes: vec![200],
            attempts: 1,
            backoff_ms: 0,
        };
        assert!(RetryPolicy::build(&bad_code).is_err());
        let too_many = pb::Retry {
            codes: vec![500],
            attempts: pb::MAX_RETRY_ATTEMPTS + 1,
            backoff_ms: 0,
        };
        assert!(RetryPolicy::build(&too_many).is_err());
        let too_slow = pb::Retry {
            codes: vec![500],
            attempts: 1,
            backoff_ms: pb::MAX_RETRY_BACKOFF_MS + 1,
        };
        assert!(RetryPolicy::build(&too_slow).is_err());
    }
}
