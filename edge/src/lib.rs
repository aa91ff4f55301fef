//! AeThex LIVE regional edges: the relay protocol between an upstream (the origin, or an edge in a
//! tier above) and an edge, over QUIC. See `docs/relay-protocol.md`.
//!
//! - [`proto`]: the wire format (frames, datagrams, handshake tags), sans-IO;
//! - [`quic`]: quinn endpoints (self-signed upstream, secret-authenticated edge);
//! - [`upstream`]: accept edges and serve their subscriptions from the local SFU;
//! - [`downstream`]: an edge's connection to its upstream, feeding the edge's SFU;
//! - [`freshness`]: late media at an edge (a stalled path's backlog) is dropped;
//! - `large`: datagrams too large for the path go on streams of their own;
//! - [`audience`]: the viewers below a node, from its edges' load reports.
//!
//! Routing (the registry, 307 redirects) and playback tokens are in the `cluster` and
//! `signaling` crates; this crate registers edges and carries their load reports.
#![warn(missing_docs)]

pub mod audience;
pub mod blocks;
pub mod downstream;
pub mod freshness;
mod large;
pub mod metrics;
pub mod proto;
pub mod quic;
pub mod repair;
mod session;
pub mod upstream;

pub use audience::Audience;
pub use downstream::{EdgeConfig, Upstream};
pub use metrics::RelayMetrics;
pub use upstream::{ChannelPolicy, RelayedStage, StageSource, UpstreamConfig};
