//! Gatehouse data plane: receives snapshots, builds routing tables, swaps
//! them atomically and proxies HTTP/1.1 and HTTP/2 (h2c) to upstreams.

pub mod admin;
pub mod client;
pub mod filters;
pub mod proxy;
pub mod retry_budget;
pub mod stats;
pub mod table;

pub use proxy::{Applied, ApplyError, Dataplane, Options};
