//! AeThex LIVE regional edges: the relay protocol between an upstream (the origin, or an edge in a
//! tier above) and an edge, over QUIC. See `docs/relay-protocol.md`.
//!
//! - [`proto`]: the wire format (frames, datagrams, handshake tags), sans-IO;
//! - [`quic`]: quinn endpoints (self-signed upstream, secret-authenticated edge);
//! - [`upstream`]: accept edges and serve their subscriptions from the local SFU;
//! - [`downstream`]: an edge's connection to its upstream, feeding the edge's SFU.
//!
//! Not built yet: routing (registry, 307 redirects), playback tokens, NACK repair on the relay.
#![warn(missing_docs)]

pub mod downstream;
pub mod proto;
pub mod quic;
mod session;
pub mod upstream;

pub use downstream::{EdgeConfig, Upstream};
pub use upstream::UpstreamConfig;
