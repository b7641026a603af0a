//! Per-route request statistics kept in atomics, so the request path never
//! takes a lock to count (prometheus-client's own `Histogram` does).
//!
//! A `RouteStats` is created once per route when a table is built and kept
//! in the table beside the rule; the `StatsRegistry` hands out the same
//! handle for the same route across rebuilds so counters stay monotonic.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// Upper bounds (seconds) of the request duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status classes counted per route, in label order.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Counters and a duration histogram for one route ("namespace/name", or ""
/// for requests that matched no route).
#[derive(Debug)]
pub struct RouteStats {
    route: Arc<str>,
    by_class: [AtomicU64; STATUS_CLASSES.len()],
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    /// Upstream requests sent again under the rule's retry policy.
    retries: AtomicU64,
    /// Retries in flight against requests in flight (see `retry_budget`).
    pub retry_budget: crate::retry_budget::RetryBudget,
}

/// A point-in-time copy of one route's statistics, for the metrics endpoint.
#[derive(Debug, Clone)]
pub struct RouteStatsView {
    pub route: Arc<str>,
    pub by_class: [u64; STATUS_CLASSES.len()],
    /// Per-bucket (not cumulative) counts; the last bucket is +Inf.
    pub buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub sum_seconds: f64,
    pub retries: u64,
}

impl RouteStats {
    pub fn new(route: Arc<str>) -> Self {
        Self {
            route,
            by_class: Default::default(),
            buckets: Default::default(),
            sum_nanos: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            retry_budget: Default::default(),
        }
    }

    pub fn route(&self) -> &Arc<str> {
        &self.route
    }

    /// Counts one response. Statuses outside 100..=599 cannot be built by
    /// `http::StatusCode`, so the class index is always in range.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|upper| seconds <= *upper)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn view(&self) -> RouteStatsView {
        RouteStatsView {
            route: self.route.clone(),
            by_class: std::array::from_fn(|i| self.by_class[i].load(Ordering::Relaxed)),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_seconds: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64(),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// Client connections and requests the data plane ended because the
/// client took too long: no request head in time (`--client-header-timeout`;
/// on HTTP/2, no stream open), or a request body that stopped
/// (`--client-body-timeout`, answered 408). Send timeouts are the kernel's
/// (TCP_USER_TIMEOUT) and not counted here.
#[derive(Debug, Default)]
pub struct ClientTimeouts {
    header: AtomicU64,
    body: AtomicU64,
}

impl ClientTimeouts {
    pub fn record_header(&self) {
        self.header.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_body(&self) {
        self.body.fetch_add(1, Ordering::Relaxed);
    }

    /// (header, body) timeouts counted so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.header.load(Ordering::Relaxed),
            self.body.load(Ordering::Relaxed),
        )
    }
}

/// Every route's statistics handle, by route name.
///
/// The lock is taken only when a table is built and when metrics are
/// scraped, never per request.
#[derive(Debug)]
pub struct StatsRegistry {
    #[allow(
        clippy::disallowed_types,
        reason = "locked at table build and scrape only"
    )]
    routes: std::sync::Mutex<HashMap<Arc<str>, Arc<RouteStats>>>,
    no_route: Arc<RouteStats>,
    client_timeouts: Arc<ClientTimeouts>,
}

impl Default for StatsRegistry {
    fn default() -> Self {
        Self {
            routes: Default::default(),
            no_route: Arc::new(RouteStats::new(Arc::from(""))),
            client_timeouts: Arc::default(),
        }
    }
}

impl StatsRegistry {
    /// The handle for `route`, created on first use.
    pub fn route(&self, route: &str) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stats) = routes.get(route) {
            return stats.clone();
        }
        let name: Arc<str> = Arc::from(route);
        let stats = Arc::new(RouteStats::new(name.clone()));
        routes.insert(name, stats.clone());
        stats
    }

    /// The handle for requests that matched no route.
    pub fn no_route(&self) -> &Arc<RouteStats> {
        &self.no_route
    }

    pub fn client_timeouts(&self) -> &Arc<ClientTimeouts> {
        &self.client_timeouts
    }

    /// Copies of all routes' statistics, sorted by route name, the no-route
    /// entry first.
    pub fn views(&self) -> Vec<RouteStatsView> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let mut views: Vec<_> = routes.values().map(|s| s.view()).collect();
        drop(routes);
        views.sort_by(|a, b| a.route.cmp(&b.route));
        views.insert(0, self.no_route.view());
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counts_class_and_bucket() {
        let stats = RouteStats::new("ns/a".into());
        stats.record(204, Duration::from_micros(300));
        stats.record(503, Duration::from_secs(60));
        let view = stats.view();
        assert_eq!(view.by_class, [0, 1, 0, 0, 1]);
        assert_eq!(view.buckets[0], 1);
        assert_eq!(view.buckets[DURATION_BUCKETS.len()], 1);
        assert!((view.sum_seconds - 60.0003).abs() < 1e-6);
    }

    #[test]
    fn registry_returns_the_same_handle_for_a_route() {
        let registry = StatsRegistry::default();
        assert!(Arc::ptr_eq(
            &registry.route("ns/a"),
            &registry.route("ns/a")
        ));
        assert!(!Arc::ptr_eq(
            &registry.route("ns/a"),
            &registry.route("ns/b")
        ));
    }
}
