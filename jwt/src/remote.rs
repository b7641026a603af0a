use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwapOption, Guard};
use tokio::sync::{Notify, mpsc};

use crate::keys::KeySet;

/// A JWKS document larger than this is refused rather than buffered.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Knobs for [`RemoteJwks`]; [`RemoteJwks::new`] fills in the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOptions {
    /// Time between routine fetches.
    pub refresh: Duration,
    /// Bound on one fetch, from connecting to the last body byte.
    pub timeout: Duration,
    /// How long a request may wait for a fetch it needs (first keys, or a
    /// new `kid`) before being rejected.
    pub kid_wait: Duration,
    /// Floor between fetches triggered by requests, so a stream of tokens
    /// with made-up kids cannot turn the gateway into a load generator
    /// against the identity provider.
    pub min_early_interval: Duration,
}

impl RemoteOptions {
    pub const DEFAULT_KID_WAIT: Duration = Duration::from_secs(2);
    pub const DEFAULT_MIN_EARLY_INTERVAL: Duration = Duration::from_secs(10);

    pub fn new(refresh: Duration, timeout: Duration) -> Self {
        RemoteOptions {
            refresh,
            timeout,
            kid_wait: Self::DEFAULT_KID_WAIT,
            min_early_interval: Self::DEFAULT_MIN_EARLY_INTERVAL,
        }
    }
}

/// A JWKS served at a URL, kept fresh by a background task.
///
/// Requests only ever read the current set through an atomic pointer; the
/// network is touched by a single task per `RemoteJwks`, started by the first
/// request that needs keys. That task holds only a weak reference and stops
/// once the last `Arc<RemoteJwks>` is gone.
pub struct RemoteJwks {
    url: String,
    options: RemoteOptions,
    keys: ArcSwapOption<KeySet>,
    started: AtomicBool,
    /// Capacity one, so concurrent wake-ups coalesce into one fetch. Dropping
    /// the sender (with `self`) is what tells the task to stop.
    wake_tx: mpsc::Sender<()>,
    wake_rx: Mutex<Option<mpsc::Receiver<()>>>,
    /// True from the moment a fetch is due until it has finished, so that
    /// requests can tell whether waiting is worth it.
    fetch_pending: AtomicBool,
    fetch_done: Notify,
    clock_origin: Instant,
    /// Milliseconds after `clock_origin` of the last request-triggered fetch,
    /// or `u64::MAX` when there has been none.
    last_early_ms: AtomicU64,
    last_error: ArcSwapOption<String>,
    /// Bumped after each key set is installed, so that a cache of verified
    /// tokens can tell its entries were checked against older keys.
    generation: AtomicU64,
}

impl RemoteJwks {
    /// A key set at `url`, refetched every `refresh`, each fetch bounded by
    /// `timeout`. Nothing is fetched until a request needs keys.
    pub fn new(url: String, refresh: Duration, timeout: Duration) -> Arc<RemoteJwks> {
        Self::with_options(url, RemoteOptions::new(refresh, timeout))
    }

    pub fn with_options(url: String, options: RemoteOptions) -> Arc<RemoteJwks> {
        let (wake_tx, wake_rx) = mpsc::channel(1);
        Arc::new(RemoteJwks {
            url,
            options,
            keys: ArcSwapOption::empty(),
            started: AtomicBool::new(false),
            wake_tx,
            wake_rx: Mutex::new(Some(wake_rx)),
            fetch_pending: AtomicBool::new(false),
            fetch_done: Notify::new(),
            clock_origin: Instant::now(),
            last_early_ms: AtomicU64::new(u64::MAX),
            last_error: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
        })
    }

    /// Changes whenever a fetched key set replaces the current one.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn options(&self) -> &RemoteOptions {
        &self.options
    }

    /// Number of keys held now (0 before the first successful fetch).
    pub fn key_count(&self) -> usize {
        self.keys.load().as_ref().map_or(0, |k| k.len())
    }

    /// Why the most recent fetch failed; `None` once a fetch succeeds again.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.load_full().map(|e| (*e).clone())
    }

    pub(crate) fn current(&self) -> Guard<Option<Arc<KeySet>>> {
        self.keys.load()
    }

    /// Starts the refresh task unless it runs already. Cheap after the
    /// first call: one atomic load.
    pub(crate) fn ensure_started(self: &Arc<Self>) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .started
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let Some(wake_rx) = self.wake_rx.lock().ok().and_then(|mut rx| rx.take()) else {
            return;
        };
        self.fetch_pending.store(true, Ordering::SeqCst);
        let task = RefreshTask {
            remote: Arc::downgrade(self),
            url: self.url.clone(),
            options: self.options.clone(),
            wake_rx,
        };
        runtime.spawn(task.run());
    }

    /// Waits, at most `kid_wait`, for a fetch to finish: the one in flight
    /// if any, else a new one if the early-fetch budget allows. Returns
    /// whether a fetch finished, successful or not.
    pub(crate) async fn refresh_and_wait(&self) -> bool {
        let done = self.fetch_done.notified();
        tokio::pin!(done);
        // Registered before looking at the flags, so a fetch that ends
        // between the check and the await still wakes us.
        done.as_mut().enable();

        if !self.fetch_pending.load(Ordering::SeqCst)
            && !self.claim_early_fetch()
            && !self.fetch_pending.load(Ordering::SeqCst)
        {
            return false;
        }
        tokio::time::timeout(self.options.kid_wait, done)
            .await
            .is_ok()
    }

    /// Takes the early-fetch slot if `min_early_interval` has passed and
    /// wakes the task. Only one of many racing requests wins.
    fn claim_early_fetch(&self) -> bool {
        let now = self.clock_origin.elapsed().as_millis() as u64;
        let floor = self.options.min_early_interval.as_millis() as u64;
        let last = self.last_early_ms.load(Ordering::Acquire);
        if last != u64::MAX && now.saturating_sub(last) < floor {
            return false;
        }
        if self
            .last_early_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.fetch_pending.store(true, Ordering::SeqCst);
        // A full channel already holds a wake-up, which serves this one too.
        let _ = self.wake_tx.try_send(());
        true
    }

    fn finish_fetch(&self, outcome: Result<KeySet, String>) {
        match outcome {
            Ok(set) => {
                tracing::debug!(url = %self.url, keys = set.len(), "fetched JWKS");
                let unchanged = self
                    .keys
                    .load()
                    .as_ref()
                    .is_some_and(|current| current.same_source(&set));
                // The same document again: tokens checked against it stay
                // checked (the generation is what caches compare).
                if !unchanged {
                    self.keys.store(Some(Arc::new(set)));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                self.last_error.store(None);
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "JWKS fetch failed; keeping the previous keys");
                self.last_error.store(Some(Arc::new(error)));
            }
        }
        self.fetch_pending.store(false, Ordering::SeqCst);
        self.fetch_done.notify_waiters();
    }
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.url)
            .field("keys", &self.key_count())
            .finish_non_exhaustive()
    }
}

/// Checks that `url` can serve as a JWKS location: absolute http or https with a host.
pub fn validate_jwks_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid JWKS URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("JWKS URL {url:?} must use http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("JWKS URL {url:?} has no host"));
    }
    // A URL is shown in status, debug output and logs: no place for a
    // password (a JWKS is public by nature anyway).
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("JWKS URL must not carry credentials (user:password@)".into());
    }
    Ok(())
}

#[cfg(test)]
mod url_tests {
    use super::validate_jwks_url;

    #[test]
    fn jwks_urls_are_http_with_a_host_and_no_credentials() {
        assert!(validate_jwks_url("https://login.example/.well-known/jwks.json").is_ok());
        assert!(validate_jwks_url("ftp://login.example/jwks").is_err());
        assert!(validate_jwks_url("https://user:secret@login.example/jwks").is_err());
        assert!(validate_jwks_url("https://token@login.example/jwks").is_err());
    }
}

struct RefreshTask {
    remote: Weak<RemoteJwks>,
    url: String,
    options: RemoteOptions,
    wake_rx: mpsc::Receiver<()>,
}

impl RefreshTask {
    async fn run(mut self) {
        let mut client = None;
        let mut failures: u32 = 0;
        loop {
            let outcome = self.fetch(&mut client).await;
            failures = if outcome.is_ok() {
                0
            } else {
                failures.saturating_add(1)
            };
            {
                let Some(remote) = self.remote.upgrade() else {
                    return;
                };
                remote.finish_fetch(outcome);
            }
            let delay = next_delay(self.options.refresh, failures);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                woken = self.wake_rx.recv() => {
                    if woken.is_none() {
                        return;
                    }
                }
            }
            match self.remote.upgrade() {
                Some(remote) => remote.fetch_pending.store(true, Ordering::SeqCst),
                None => return,
            }
        }
    }

    async fn fetch(&self, client: &mut Option<reqwest::Client>) -> Result<KeySet, String> {
        if client.is_none() {
            *client = Some(
                reqwest::Client::builder()
                    .connect_timeout(self.options.timeout)
                    .redirect(reqwest::redirect::Policy::limited(3))
                    .build()
                    .map_err(|e| format!("cannot build HTTP client: {e}"))?,
            );
        }
        let Some(client) = client.as_ref() else {
            return Err("no HTTP client".into());
        };
        match tokio::time::timeout(self.options.timeout, fetch_jwks(client, &self.url)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {:?}", self.options.timeout)),
        }
    }
}

async fn fetch_jwks(client: &reqwest::Client, url: &str) -> Result<KeySet, String> {
    let mut response = client
        .get(url)
        .header(
            reqwest::header::ACCEPT,
            "application/jwk-set+json, application/json",
        )
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("server answered {status}"));
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
    {
        return Err(format!("document larger than {MAX_JWKS_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading body failed: {e}"))?
    {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("document larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    KeySet::from_jwks(&body, false)
}

/// After a success, the routine interval; after failures, a quicker retry
/// that backs off but never waits longer than the routine interval.
fn next_delay(refresh: Duration, failures: u32) -> Duration {
    const FIRST_RETRY: Duration = Duration::from_secs(10);
    if failures == 0 {
        return refresh;
    }
    let base = refresh.min(FIRST_RETRY);
    let factor = 1u32 << (failures - 1).min(16);
    base.saturating_mul(factor).min(refresh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_back_off_up_to_refresh() {
        let hour = Duration::from_secs(3600);
        assert_eq!(next_delay(hour, 0), hour);
        assert_eq!(next_delay(hour, 1), Duration::from_secs(10));
        assert_eq!(next_delay(hour, 2), Duration::from_secs(20));
        assert_eq!(next_delay(hour, 3), Duration::from_secs(40));
        assert_eq!(next_delay(hour, 60), hour);
        let short = Duration::from_millis(300);
        assert_eq!(next_delay(short, 1), short);
        assert_eq!(next_delay(short, 5), short);
    }

    #[test]
    fn url_validation() {
        assert!(validate_jwks_url("https://idp.example.com/.well-known/jwks.json").is_ok());
        assert!(validate_jwks_url("http://10.0.0.1:8080/keys").is_ok());
        for bad in [
            "",
            "idp.example.com/jwks",
            "ftp://x/keys",
            "file:///etc/keys",
            "https://",
        ] {
            assert!(validate_jwks_url(bad).is_err(), "{bad}");
        }
    }
}
