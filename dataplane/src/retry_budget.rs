//! A retry budget per route: retries in flight may not exceed a share of
//! the route's requests in flight (at least a few), so that a failing or
//! overloaded backend does not get `1 + attempts` times its traffic exactly
//! when it can least take it. A request that finds the budget spent returns
//! the answer it has.
//!
//! Two atomics, no lock; kept with the route's statistics, so the counts
//! survive a configuration swap.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Retries in flight allowed per 100 requests in flight.
const BUDGET_PERCENT: usize = 20;
/// Retries in flight always allowed, however few requests there are.
const MIN_RETRY_CONCURRENCY: usize = 3;

#[derive(Debug, Default)]
pub struct RetryBudget {
    /// Requests of the route in flight under a retry policy.
    active: AtomicUsize,
    /// Retries of those in flight (waiting their backoff or sent).
    retrying: AtomicUsize,
}

/// Counts one request while it lives.
#[derive(Debug)]
pub struct Active<'b>(&'b RetryBudget);

/// Counts one retry while it lives.
#[derive(Debug)]
pub struct Retrying<'b>(&'b RetryBudget);

impl RetryBudget {
    pub fn begin(&self) -> Active<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self)
    }

    /// A retry, if the budget has room for one more.
    pub fn try_retry(&self) -> Option<Retrying<'_>> {
        let active = self.active.load(Ordering::Relaxed);
        let limit = (active * BUDGET_PERCENT / 100).max(MIN_RETRY_CONCURRENCY);
        if self.retrying.fetch_add(1, Ordering::Relaxed) >= limit {
            self.retrying.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Retrying(self))
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Retrying<'_> {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_in_flight_are_a_share_of_requests_in_flight() {
        let budget = RetryBudget::default();
        let active: Vec<_> = (0..50).map(|_| budget.begin()).collect();
        // 20% of 50.
        let retries: Vec<_> = std::iter::from_fn(|| budget.try_retry())
            .take(100)
            .collect();
        assert_eq!(retries.len(), 10);
        drop(retries);
        let again: Vec<_> = std::iter::from_fn(|| budget.try_retry())
            .take(100)
            .collect();
        assert_eq!(again.len(), 10, "finished retries give their place back");
        drop(again);
        drop(active);
        // A few are always allowed.
        let _one = budget.begin();
        let few: Vec<_> = std::iter::from_fn(|| budget.try_retry())
            .take(100)
            .collect();
        assert_eq!(few.len(), MIN_RETRY_CONCURRENCY);
    }
}
