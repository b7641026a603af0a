//! Gatehouse controller: Gateway API objects in, one snapshot per cluster
//! group and a status per object out.
//!
//! `store` holds typed objects from any source (Kubernetes watches, manifest
//! files); `compile` turns a store into snapshots and statuses without I/O;
//! `serve` streams snapshots to data planes; `standalone` runs the whole
//! pipeline from a directory of manifests, `kubernetes` from watches of an
//! API server, writing status back.

pub mod admin;
pub mod api;
pub mod compile;
pub mod explain;
pub mod group_snapshot;
pub mod handover;
pub mod k8s;
pub mod kubernetes;
pub mod manifest;
pub mod runtime;
pub mod serve;
pub mod standalone;
pub mod status;
pub mod store;
