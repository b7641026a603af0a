//! Retries (Gateway API `HTTPRouteRetry`, GEP-1731) around one rule's
//! upstream call.
//!
//! A request can only be sent again if its body can: a body the data plane
//! has not read yet cannot be rewound once an attempt has streamed it. So a
//! body whose length is known and at most [`MAX_BUFFERED_BODY`] (every
//! body-less request, and most API calls) is read whole first and replayed
//! from memory; a larger one, or one of unknown length, is streamed once,
//! without retries. Upgrade requests are never retried: the client's
//! connection is handed over on the first attempt.
//!
//! What is retried:
//! - an attempt that could not connect (nothing reached the backend), always;
//! - a response with one of the policy's codes;
//! - an attempt that got no response (a reset after sending, answered 502)
//!   or hit `timeouts.backendRequest` (answered 504), when that status is one
//!   of the codes.
//!
//! Each retry chooses backend and endpoint anew, and waits the policy's
//! backoff first. Retries in flight stay within the route's retry budget
//! (`crate::retry_budget`: a fifth of its requests in flight, at least 3);
//! past it, a request answers with what it has. `timeouts.request`, when set, bounds all attempts and waits
//! together (the caller wraps this future in it), as the spec asks.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;

use super::{
    Connection, Dataplane, ProxyError, body::ProxyBody, request_body::BodyError,
    request_body::Buffered, request_body::RequestBody, upgrade,
};
use crate::table::{Found, RetryPolicy, Table};

/// Largest request body held in memory so that it can be sent again.
pub const MAX_BUFFERED_BODY: u64 = 128 * 1024;

impl Dataplane {
    /// `forward`, again under the rule's retry policy when it has one.
    pub(super) async fn forward_with_retries(
        self: &Arc<Self>,
        table: &Table,
        found: Found<'_>,
        conn: &Connection,
        request: Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Some(policy) = found.rule.retry.as_deref() else {
            return self.forward(table, found, conn, request, 0).await;
        };
        let replay = match Replay::take(request).await? {
            Ok(replay) => replay,
            Err(request) => return self.forward(table, found, conn, request, 0).await,
        };
        let budget = &found.rule.stats.retry_budget;
        let _active = budget.begin();
        // Held from a retry's backoff to the end of its attempt.
        let mut _retrying = None;
        let mut retry = 0;
        loop {
            let result = self
                .forward(table, found, conn, replay.request(), retry)
                .await;
            if retry == policy.retries || !retried(policy, &result) {
                return result;
            }
            _retrying = None;
            let Some(admitted) = budget.try_retry() else {
                tracing::debug!(rule = %found.rule.object, "retry budget spent; not retried");
                return result;
            };
            _retrying = Some(admitted);
            retry += 1;
            found.rule.stats.record_retry();
            tracing::debug!(
                rule = %found.rule.object,
                retry,
                outcome = %describe(&result),
                "retrying upstream request"
            );
            // The failed attempt's response (and its connection) goes first.
            drop(result);
            tokio::time::sleep(policy.wait(retry, rand::random())).await;
        }
    }
}

/// Whether an attempt's outcome is one the policy sends again.
fn retried(policy: &RetryPolicy, result: &Result<Response<ProxyBody>, ProxyError>) -> bool {
    match result {
        Ok(response) => policy.retries_status(response.status().as_u16()),
        Err(ProxyError::Connect) => true,
        Err(error @ (ProxyError::Upstream | ProxyError::Timeout)) => {
            policy.retries_status(error.status().as_u16())
        }
        // The gateway's own answers (no endpoint, an invalid backend's
        // share, a bad request) would be the same again.
        Err(_) => false,
    }
}

fn describe(result: &Result<Response<ProxyBody>, ProxyError>) -> String {
    match result {
        Ok(response) => response.status().to_string(),
        Err(error) => error.label().to_owned(),
    }
}

/// A request held so that it can be sent more than once.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Buffered,
}

impl Replay {
    /// The request held whole, or given back (`Ok(Err)`) when its body
    /// cannot be replayed. `Err` when the client's body failed while read.
    async fn take(
        request: Request<RequestBody>,
    ) -> Result<Result<Self, Request<RequestBody>>, ProxyError> {
        let replayable = request
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= MAX_BUFFERED_BODY);
        if !replayable || upgrade::requested(&request).is_some() {
            return Ok(Err(request));
        }
        let (parts, body) = request.into_parts();
        let collected = body.collect().await.map_err(|error| {
            tracing::debug!(%error, "client body failed while buffered for retries");
            match error {
                BodyError::Stalled(_) => ProxyError::ClientTimeout,
                _ => ProxyError::BadRequest,
            }
        })?;
        let trailers = collected.trailers().cloned();
        let data: Bytes = collected.to_bytes();
        Ok(Ok(Self {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body: Buffered::new(data, trailers),
        }))
    }

    fn request(&self) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::Buffered(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}
