use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::server::JwksServer;
use super::*;
use crate::{Rejection, RemoteJwks, RemoteOptions};

fn options(refresh: Duration) -> RemoteOptions {
    RemoteOptions {
        refresh,
        timeout: Duration::from_secs(2),
        kid_wait: Duration::from_secs(2),
        min_early_interval: Duration::from_secs(10),
    }
}

fn remote_verifier(remote: &Arc<RemoteJwks>) -> Verifier {
    Verifier::new(settings(&[Algorithm::EdDSA]), Keys::Remote(remote.clone())).expect("verifier")
}

fn token(key: &TestKey, kid: &str) -> String {
    sign(Algorithm::EdDSA, Some(kid), &good_claims(), &key.encoding)
}

#[tokio::test]
async fn first_request_triggers_the_initial_fetch() {
    let a = ed_key();
    let server = JwksServer::start(jwks(&[a.jwk_with_kid("a")])).await;
    let remote = RemoteJwks::with_options(server.url.clone(), options(Duration::from_secs(3600)));
    assert_eq!(remote.url(), server.url);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.hits(), 0, "nothing is fetched before it is needed");
    assert_eq!(remote.key_count(), 0);

    let v = remote_verifier(&remote);
    let claims = v
        .verify(&token(&a, "a"), NOW)
        .await
        .expect("verifies once keys arrive");
    assert_eq!(claims.get("sub").as_deref(), Some("alice"));
    assert_eq!(remote.key_count(), 1);
    assert_eq!(server.hits(), 1);
    assert!(v.verify(&token(&a, "a"), NOW).await.is_ok());
    assert_eq!(server.hits(), 1, "a known kid needs no fetch");
}

#[tokio::test]
async fn rotation_is_picked_up_by_an_early_refresh() {
    let a = ed_key();
    let b = ed_key();
    let server = JwksServer::start(jwks(&[a.jwk_with_kid("a")])).await;
    let remote = RemoteJwks::with_options(server.url.clone(), options(Duration::from_secs(3600)));
    let v = remote_verifier(&remote);
    assert!(v.verify(&token(&a, "a"), NOW).await.is_ok());

    server.set_body(jwks(&[b.jwk_with_kid("b")]));
    let started = Instant::now();
    assert!(
        v.verify(&token(&b, "b"), NOW).await.is_ok(),
        "new kid verifies without restart"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(server.hits(), 2);

    // The old key is gone now; another early fetch is not due for ten
    // seconds, so the answer comes at once.
    let started = Instant::now();
    assert_eq!(
        v.verify(&token(&a, "a"), NOW).await,
        Err(Rejection::UnknownKey)
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(server.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kids_share_one_fetch() {
    let a = ed_key();
    let stranger = ed_key();
    let server = JwksServer::start(jwks(&[a.jwk_with_kid("a")])).await;
    let remote = RemoteJwks::with_options(server.url.clone(), options(Duration::from_secs(3600)));
    let v = Arc::new(remote_verifier(&remote));
    assert!(v.verify(&token(&a, "a"), NOW).await.is_ok());
    server.set_delay(Duration::from_millis(200));

    let forged = token(&stranger, "nobody");
    let mut tasks = JoinSet::new();
    for _ in 0..16 {
        let v = v.clone();
        let forged = forged.clone();
        tasks.spawn(async move { v.verify(&forged, NOW).await });
    }
    while let Some(outcome) = tasks.join_next().await {
        assert_eq!(outcome.expect("task"), Err(Rejection::UnknownKey));
    }
    assert_eq!(server.hits(), 2, "one initial fetch and one early refresh");
}

#[tokio::test]
async fn failed_fetches_keep_the_last_good_set() {
    let a = ed_key();
    let server = JwksServer::start(jwks(&[a.jwk_with_kid("a")])).await;
    let mut opts = options(Duration::from_millis(100));
    opts.timeout = Duration::from_millis(500);
    let remote = RemoteJwks::with_options(server.url.clone(), opts);
    let v = remote_verifier(&remote);
    assert!(v.verify(&token(&a, "a"), NOW).await.is_ok());
    assert_eq!(remote.last_error(), None);

    type Breakage = Box<dyn Fn(&JwksServer)>;
    let failures: [(&str, Breakage); 3] = [
        ("503", Box::new(|s| s.set_status(503))),
        (
            "bad JSON",
            Box::new(|s| {
                s.set_status(200);
                s.set_body(b"{\"keys\":[".to_vec());
            }),
        ),
        ("no usable keys", Box::new(|s| s.set_body(jwks(&[])))),
    ];
    for (what, break_it) in failures {
        let before = server.hits();
        break_it(&server);
        while server.hits() < before + 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(remote.key_count(), 1, "{what}");
        assert!(remote.last_error().is_some(), "{what}");
        assert!(v.verify(&token(&a, "a"), NOW).await.is_ok(), "{what}");
    }

    server.stop().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(remote.key_count(), 1);
    assert!(v.verify(&token(&a, "a"), NOW).await.is_ok(), "server down");
}

#[tokio::test]
async fn slow_server_does_not_hold_requests() {
    let a = ed_key();
    let server = JwksServer::start(jwks(&[a.jwk_with_kid("a")])).await;
    server.set_delay(Duration::from_secs(30));
    // Library defaults: kid_wait is two seconds.
    let remote = RemoteJwks::new(
        server.url.clone(),
        Duration::from_secs(300),
        Duration::from_secs(20),
    );
    let v = remote_verifier(&remote);
    let started = Instant::now();
    assert_eq!(v.verify(&token(&a, "a"), NOW).await, Err(Rejection::NoKeys));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn fetch_timeout_counts_as_failure() {
    let a = ed_key();
    let server = JwksServer::start(jwks(&[a.jwk_with_kid("a")])).await;
    server.set_delay(Duration::from_secs(30));
    let mut opts = options(Duration::from_secs(3600));
    opts.timeout = Duration::from_millis(200);
    // Far beyond the bound below: the answer must come from the failed
    // fetch, not from the end of the wait.
    opts.kid_wait = Duration::from_secs(10);
    let remote = RemoteJwks::with_options(server.url.clone(), opts);
    let v = remote_verifier(&remote);
    let started = Instant::now();
    assert_eq!(v.verify(&token(&a, "a"), NOW).await, Err(Rejection::NoKeys));
    assert!(started.elapsed() < Duration::from_secs(2));
    let error = remote.last_error().expect("timeout recorded");
    assert!(error.contains("timed out"), "{error}");
}

#[tokio::test]
async fn failing_server_rejects_quickly_then_recovers() {
    let a = ed_key();
    let server = JwksServer::start(jwks(&[a.jwk_with_kid("a")])).await;
    server.set_status(500);
    let mut opts = options(Duration::from_secs(3600));
    // Lets every request ask for a fetch, so recovery does not need the
    // routine interval.
    opts.min_early_interval = Duration::ZERO;
    // Far beyond the bound below: the answer must come from the failed
    // fetch, not from the end of the wait.
    opts.kid_wait = Duration::from_secs(10);
    let remote = RemoteJwks::with_options(server.url.clone(), opts);
    let v = remote_verifier(&remote);
    let started = Instant::now();
    assert_eq!(v.verify(&token(&a, "a"), NOW).await, Err(Rejection::NoKeys));
    assert!(started.elapsed() < Duration::from_secs(2));

    server.set_status(200);
    assert!(v.verify(&token(&a, "a"), NOW).await.is_ok());
    assert_eq!(remote.key_count(), 1);
}

#[tokio::test]
async fn refresh_task_stops_with_its_owner() {
    let a = ed_key();
    let server = JwksServer::start(jwks(&[a.jwk_with_kid("a")])).await;
    let remote = RemoteJwks::with_options(server.url.clone(), options(Duration::from_millis(50)));
    let v = remote_verifier(&remote);
    assert!(v.verify(&token(&a, "a"), NOW).await.is_ok());
    while server.hits() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let weak = Arc::downgrade(&remote);
    drop(v);
    drop(remote);
    assert!(
        weak.upgrade().is_none(),
        "the task holds no strong reference"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after_drop = server.hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.hits(), after_drop);
}

#[tokio::test]
async fn refused_headers_never_reach_the_key_server() {
    let a = ed_key();
    let server = JwksServer::start(jwks(&[a.jwk_with_kid("a")])).await;
    let remote = RemoteJwks::with_options(server.url.clone(), options(Duration::from_secs(3600)));
    let v = remote_verifier(&remote);
    let payload = b64::encode(&serde_json::to_vec(&good_claims()).expect("claims"));
    let sig = b64::encode(b"sig");
    let none = format!(
        "{}.{payload}.{sig}",
        b64::encode(br#"{"alg":"none","kid":"x"}"#)
    );
    let hs = sign(
        Algorithm::HS256,
        Some("x"),
        &good_claims(),
        &hmac_key().encoding,
    );
    for (token, expected) in [
        (none.as_str(), Rejection::Algorithm),
        (hs.as_str(), Rejection::Algorithm),
        ("a.b", Rejection::Malformed),
    ] {
        assert_eq!(v.verify(token, NOW).await, Err(expected));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.hits(), 0);
    assert_eq!(remote.key_count(), 0);
}
