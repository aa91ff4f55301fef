//! AeThex LIVE regional edges: the relay protocol between an upstream (the origin, or an edge in a
//! tier above) and an edge, over QUIC. See `docs/relay-protocol.md`.
//!
//! Status: the wire format ([`proto`]) is built and tested; the QUIC transport, the edge role
//! and routing are not built yet.
#![warn(missing_docs)]

pub mod proto;
