//! The AeThex LIVE selective forwarding unit.
//!
//! # Shape
//! [`Sfu`] is a sans-IO core: it owns every peer's str0m [`str0m::Rtc`], the demux maps of the
//! shared UDP port, and the per-stream forwarding state. It never reads a clock, spawns a task
//! or touches a socket. Time and datagrams come in through [`Sfu::handle_input`]; datagrams to
//! send, events and the next deadline come out of [`Sfu::poll_output`]. [`driver`] is the thin
//! tokio layer that owns the one UDP socket and feeds the core.
//!
//! # Modules, bottom up (each uses only those above it in this list)
//! - `ids`, `stats`, `sink`, `wire`, `types`: plain data (ids, counters, what a sink
//!   receives, the relay's wire shapes, config/inputs/outputs/errors).
//! - `stream`: one stream's state: its `Source` (a publisher or a feed from the node above),
//!   layers, keyframe caches, timelines, viewers and sinks.
//! - `viewer`: one viewer's forwarding state and the pure per-packet step that decides what it
//!   gets; `peer`: one str0m engine behind `catch_unwind`; `negotiate`: codec plans.
//! - `core`: the sans-IO core (`Core`): sessions, the I/O loop, forwarding, keyframes, layer
//!   choice, sinks and feeds, in neutral terms (no relay wire format).
//! - `relay`: the relay to edges as a sink outside the core (wire encoding, feed sequence
//!   extension); `node`: the public [`Sfu`], the core plus the relay.
//! - `driver`: the tokio driver (UDP, ICE-TCP, relay queues).
//!
//! # Run loop and time model
//! After any call that mutates the core (`handle_input`, `publish`, `subscribe`, `close`),
//! drain [`Sfu::poll_output`] until it returns [`Output::Timeout`]; then wait for the earliest
//! of that deadline, a datagram or a command, and feed it. Deadlines may already be past.
//!
//! # Panics versus errors
//! Client mistakes (bad SDP, unknown stream, garbage datagrams) are errors or counted drops.
//! Every call into a peer's engine runs under `catch_unwind`: a panic closes that peer only.
#![warn(missing_docs)]

mod core;
pub mod driver;
mod ids;
mod negotiate;
mod node;
mod peer;
mod relay;
mod sink;
mod stats;
mod stream;
mod types;
mod viewer;
mod wire;

pub use driver::relay_io::{
    RelayIn, RelayNotice, RelayQueues, INGEST_QUEUE, NOTICE_QUEUE, RELAY_QUEUE,
};
pub use ids::{PeerId, StreamId, StreamIdError};
pub use node::Sfu;
pub use stats::{DropReason, SfuStats, StreamStat};
pub use types::{
    CloseReason, IceRestarted, Input, Output, Pin, Published, Sections, SfuConfig, SfuError,
    SfuEvent, Shown, SubscribeOptions, Subscribed, Transmit,
};
pub use wire::{video_track, RelayCodec, RelayId, RelayPacket, RelayTracks, AUDIO_TRACK};
