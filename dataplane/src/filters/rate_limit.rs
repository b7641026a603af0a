//! `rateLimit`: a token bucket per key, kept as GCRA (the generic cell rate
//! algorithm): one atomic "theoretical arrival time" per key, advanced by
//! compare-and-swap. No lock anywhere; keys live in a lock-free map.
//!
//! With `burst` b and one request per interval T, a request at `now` is
//! admitted when `tat - now <= (b - 1) T`, and then moves `tat` to
//! `max(tat, now) + T`. From a full bucket that admits b at once and then
//! one per T: exactly a token bucket of size b refilled at 1/T.
//!
//! A key whose `tat` has passed holds a full bucket, the same as no entry,
//! so a sweeper drops those; past `MAX_KEYS` live keys, new keys share one
//! overflow bucket, so that a flood of distinct keys costs bounded memory.

use std::hash::BuildHasher;
use std::sync::{
    Arc, Weak,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::{Duration, Instant};

/// Keys tracked one by one before new ones share the overflow bucket.
const MAX_KEYS: usize = 1_000_000;
/// Longest refill span, about 36 years in nanoseconds.
const MAX_SPAN: u64 = 1 << 60;
/// How often expired buckets are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct RateLimiter {
    /// Nanoseconds per token.
    interval: u64,
    /// (burst - 1) × interval.
    tolerance: u64,
    pub burst: u32,
    /// Seconds per period, for `RateLimit-Policy`-style reporting.
    buckets: papaya::HashMap<u64, AtomicU64>,
    /// Keyed per limiter, so that nobody can aim two keys at one bucket.
    hasher: std::collections::hash_map::RandomState,
    overflow: AtomicU64,
    epoch: Instant,
    sweeping: AtomicBool,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    /// Requests that could be admitted right after this one.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_seconds: u64,
    /// Refused: seconds until a request would be admitted.
    pub retry_after_seconds: u64,
}

impl RateLimiter {
    pub fn new(requests: u32, period: Duration, burst: u32) -> Self {
        let requests = u64::from(requests.max(1));
        // Clamped so that tat (nanoseconds since the limiter started) never
        // nears u64::MAX: a bucket that takes decades to refill is as good as
        // one that never does.
        let interval = (period.as_nanos() / u128::from(requests)).clamp(1, u128::from(MAX_SPAN));
        let interval = interval as u64;
        let burst = burst.max(1);
        RateLimiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst - 1)).min(MAX_SPAN),
            burst,
            buckets: papaya::HashMap::new(),
            hasher: Default::default(),
            overflow: AtomicU64::new(0),
            epoch: Instant::now(),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Nanoseconds since this limiter was made; 1 at least, so that 0
    /// stays "never seen".
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Takes a token for `key`, if there is one.
    pub fn check(self: &Arc<Self>, key: &[u8]) -> Decision {
        self.start_sweeper();
        let now = self.now();
        let key = self.hasher.hash_one(key);
        let buckets = self.buckets.pin();
        if let Some(tat) = buckets.get(&key) {
            return self.take(tat, now);
        }
        if buckets.len() >= MAX_KEYS {
            return self.take(&self.overflow, now);
        }
        let tat = buckets.get_or_insert_with(key, || AtomicU64::new(0));
        self.take(tat, now)
    }

    fn take(&self, tat: &AtomicU64, now: u64) -> Decision {
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let start = current.max(now);
            let ahead = start - now;
            if ahead > self.tolerance {
                let wait = ahead - self.tolerance;
                return Decision {
                    admitted: false,
                    remaining: 0,
                    reset_seconds: ceil_seconds(ahead),
                    retry_after_seconds: ceil_seconds(wait).max(1),
                };
            }
            let next = start.saturating_add(self.interval);
            match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    let used = next - now;
                    let left =
                        (self.tolerance + self.interval).saturating_sub(used) / self.interval;
                    return Decision {
                        admitted: true,
                        remaining: u32::try_from(left).unwrap_or(u32::MAX),
                        reset_seconds: ceil_seconds(used),
                        retry_after_seconds: 0,
                    };
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Keys tracked now (for tests and metrics).
    pub fn key_count(&self) -> usize {
        self.buckets.len()
    }

    /// Drops buckets that are full again, every `SWEEP_EVERY`, for as long
    /// as the limiter lives (the task holds it weakly).
    fn start_sweeper(self: &Arc<Self>) {
        if self.sweeping.load(Ordering::Relaxed) || self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.sweep();
            }
        });
    }

    pub fn sweep(&self) {
        self.sweep_at(self.now());
    }

    fn sweep_at(&self, now: u64) {
        self.buckets
            .pin()
            .retain(|_, tat| tat.load(Ordering::Acquire) > now);
    }
}

fn ceil_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_admits_burst_then_refuses() {
        let limiter = Arc::new(RateLimiter::new(1, Duration::from_secs(60), 3));
        let decisions: Vec<Decision> = (0..4).map(|_| limiter.check(b"k")).collect();
        assert_eq!(
            decisions.iter().map(|d| d.admitted).collect::<Vec<_>>(),
            [true, true, true, false]
        );
        assert_eq!(
            decisions.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        let refused = decisions[3];
        assert!(
            (59..=60).contains(&refused.retry_after_seconds),
            "{refused:?}"
        );
        assert!(
            limiter.check(b"other").admitted,
            "keys have their own buckets"
        );
    }

    #[test]
    fn admissions_follow_rate_times_time_plus_burst() {
        // Drives the algorithm with a synthetic clock: 10 per second, burst 5,
        // one attempt per millisecond for 3 seconds.
        let limiter = RateLimiter::new(10, Duration::from_secs(1), 5);
        let tat = AtomicU64::new(0);
        let admitted = (1..=3000u64)
            .filter(|ms| limiter.take(&tat, ms * 1_000_000).admitted)
            .count();
        // 5 at once, then one per 100 ms over the 3 s.
        assert_eq!(admitted, 5 + 29);
    }

    #[test]
    fn a_bucket_refilling_over_decades_still_holds_its_burst() {
        // requests 1 per 1000 h with burst 10000 spans far past u64 nanoseconds.
        let limiter = Arc::new(RateLimiter::new(1, Duration::from_secs(3_600_000), 10_000));
        let tat = AtomicU64::new(0);
        let admitted = (1..=20_000u64)
            .filter(|i| limiter.take(&tat, *i).admitted)
            .count();
        assert!(admitted < 20_000, "the burst must end somewhere");
    }

    #[test]
    fn swept_keys_are_the_ones_whose_bucket_is_full_again() {
        let limiter = Arc::new(RateLimiter::new(1, Duration::from_secs(1), 1));
        limiter.check(b"a");
        assert_eq!(limiter.key_count(), 1);
        let now = limiter.now();
        limiter.sweep_at(now);
        assert_eq!(limiter.key_count(), 1, "the bucket still refills");
        limiter.sweep_at(now + 2_000_000_000);
        assert_eq!(limiter.key_count(), 0);
    }
}
