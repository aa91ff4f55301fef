//! AeThex LIVE signaling: the HTTP surface of a node.
//!
//! WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep) endpoints, channels and stream keys (in the
//! `storage` crate),
//! Prometheus `/metrics`, `/healthz`, and the embedded web client. It reaches the media engine
//! only through [`SfuControl`], so its tests run with a fake engine and no sockets. The API
//! error and the request and limit helpers it shares with the platform API are in
//! `http-common` (re-exported here where they were: [`ApiError`], [`routing::ClientIp`], ...).
#![warn(missing_docs)]

pub mod control;
pub mod error;
pub mod http;
pub mod key_watch;
pub mod limits;
pub mod metrics;
pub mod protect;
mod request;
mod resource;
pub mod routing;
pub mod sessions;
pub mod stage;
pub mod stage_board;
pub mod stage_map;
pub mod web;

pub use control::{Availability, ChannelSource, RelayedStage, SfuControl};
pub use error::ApiError;
pub use http::{metrics_router, router, router_with, AppState, HttpSettings, IceServer};
pub use limits::{Admission, Limits};
pub use metrics::Metrics;
pub use routing::{Cluster, MetricsText};
pub use sessions::Sessions;
pub use storage::{Store, StoreError, StreamKey};
