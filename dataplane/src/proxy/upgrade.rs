//! Protocol upgrades through the proxy (RFC 9110 §7.8), for WebSocket
//! (RFC 6455) above all: an HTTP/1.1 request with `Connection: upgrade` and
//! an `Upgrade` header is sent upstream on a connection of its own with both
//! headers kept (they are hop-by-hop, so the usual forwarding drops them);
//! when the upstream answers 101, the two connections are joined and bytes
//! are copied both ways until either side closes. The tunnel holds no table
//! state, so it outlives any number of snapshot swaps.

use http::{HeaderMap, HeaderValue, Request, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The protocol a request asks to switch to, if it asks.
pub fn requested<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_11 {
        return None;
    }
    let asks = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| request.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// Puts back the upgrade headers the hop-by-hop removal took out.
pub fn restore(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

/// Joins the client's and the upstream's upgraded connections.
pub async fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(%error, "upgrade did not complete");
            return;
        }
    };
    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
        Err(error) => tracing::debug!(%error, "tunnel ended with an error"),
    }
}
