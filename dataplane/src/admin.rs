//! The admin endpoint: readiness, Prometheus metrics and the applied
//! snapshot. Metrics are read from the request path's atomics at scrape
//! time through a custom collector, so serving never takes a lock.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter},
    registry::Registry,
};
use tokio::net::TcpListener;

use crate::{
    Dataplane,
    stats::{DURATION_BUCKETS, STATUS_CLASSES},
};

struct Admin {
    dataplane: Arc<Dataplane>,
    registry: Registry,
}

/// The admin routes: `/readyz`, `/metrics`, `/debug/snapshot`.
pub fn router(dataplane: Arc<Dataplane>) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(DataplaneCollector(dataplane.clone())));
    Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/snapshot", get(snapshot))
        .with_state(Arc::new(Admin {
            dataplane,
            registry,
        }))
}

/// Serves the admin routes on `listener` until the task is dropped.
pub async fn serve_admin(listener: TcpListener, dataplane: Arc<Dataplane>) -> std::io::Result<()> {
    axum::serve(listener, router(dataplane)).await
}

async fn readyz(State(admin): State<Arc<Admin>>) -> StatusCode {
    if admin.dataplane.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &admin.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn snapshot(State(admin): State<Arc<Admin>>) -> Response {
    let table = admin.dataplane.table();
    Json(gatehouse_snapshot::debug_json(&table.snapshot())).into_response()
}

struct DataplaneCollector(Arc<Dataplane>);

impl std::fmt::Debug for DataplaneCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataplaneCollector")
    }
}

impl Collector for DataplaneCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let dataplane = &self.0;
        let views = dataplane.stats().views();

        let mut requests = encoder.encode_descriptor(
            "gatehouse_requests",
            "Requests served, by route (namespace/name, empty for no match) and status class",
            None,
            MetricType::Counter,
        )?;
        for view in &views {
            for (class, count) in STATUS_CLASSES.iter().zip(view.by_class) {
                let labels = [("route", &*view.route), ("status_class", *class)];
                ConstCounter::new(count).encode(requests.encode_family(&labels)?)?;
            }
        }

        let mut durations = encoder.encode_descriptor(
            "gatehouse_request_duration_seconds",
            "Time from request received to response headers sent",
            None,
            MetricType::Histogram,
        )?;
        for view in &views {
            let buckets: Vec<(f64, u64)> = DURATION_BUCKETS
                .iter()
                .copied()
                .chain([f64::MAX])
                .zip(view.buckets)
                .collect();
            let count = view.buckets.iter().sum();
            durations
                .encode_family(&[("route", &*view.route)])?
                .encode_histogram::<NoLabelSet>(view.sum_seconds, count, &buckets, None)?;
        }

        let mut retries = encoder.encode_descriptor(
            "gatehouse_retries",
            "Upstream requests sent again under a route rule's retry policy",
            None,
            MetricType::Counter,
        )?;
        for view in &views {
            ConstCounter::new(view.retries)
                .encode(retries.encode_family(&[("route", &*view.route)])?)?;
        }

        if let Some(version) = dataplane.applied_version() {
            let mut info = encoder.encode_descriptor(
                "gatehouse_snapshot",
                "The snapshot version being served",
                None,
                MetricType::Info,
            )?;
            info.encode_info(&[("version", version.as_str())])?;
        }

        let (acks, nacks) = dataplane.apply_counts();
        let mut applies = encoder.encode_descriptor(
            "gatehouse_snapshot_applies",
            "Snapshots applied (ack) or rejected (nack)",
            None,
            MetricType::Counter,
        )?;
        for (result, count) in [("ack", acks), ("nack", nacks)] {
            ConstCounter::new(count).encode(applies.encode_family(&[("result", result)])?)?;
        }
        let (header, body) = dataplane.stats().client_timeouts().counts();
        let mut timeouts = encoder.encode_descriptor(
            "gatehouse_client_timeouts",
            "Client connections closed for sending no request head in time (header; on HTTP/2, no stream open), and requests answered 408 for a stalled body (body)",
            None,
            MetricType::Counter,
        )?;
        for (kind, count) in [("header", header), ("body", body)] {
            ConstCounter::new(count).encode(timeouts.encode_family(&[("kind", kind)])?)?;
        }
        let updates = encoder.encode_descriptor(
            "gatehouse_endpoint_updates_applied",
            "Endpoint updates applied in place of whole snapshots (also counted as acks)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(dataplane.endpoint_updates()).encode(updates)?;
        Ok(())
    }
}
