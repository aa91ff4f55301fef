//! What the core hands a sink and takes from a feed, in neutral terms.
//!
//! A *sink* consumes whole streams outside the sessions: today the relay to edges. A *feed* is
//! a stream's source on the node above (at an edge). The core knows neither the relay's wire
//! format nor its track numbering: `relay` translates both ways.

use std::sync::Arc;
use std::time::Instant;

use str0m::format::PayloadParams;

use crate::ids::{LayerId, StreamId};

/// One sink attached to the core (a downstream relay connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SinkId(pub u64);

/// One packet entering a stream, for one sink.
#[derive(Debug)]
pub(crate) struct SinkPacket {
    pub sink: SinkId,
    pub stream: StreamId,
    /// The video layer; `None` for audio.
    pub layer: Option<LayerId>,
    /// The stream's payload type (for RED: the primary codec's, see `red`).
    pub pt: u8,
    /// The payload is RFC 2198 RED of codec `pt`; a sink that wants plain media takes its
    /// primary block.
    pub red: bool,
    pub seq: u16,
    /// The stream's (rebased) RTP time.
    pub time: u32,
    pub marker: bool,
    pub payload: Arc<[u8]>,
    /// When the packet entered this node (a cached one: when it first did). A relay below
    /// judges its path's lateness on it, not on the media time, which a late publisher skews.
    pub at: Instant,
    /// The RFC 6464 audio level its publisher sent with it, in -dBov (0 loudest, 127
    /// silence); `None` without one (video, OBS's audio, a cached packet).
    pub level: Option<u8>,
}

/// What a stream carries now: announced to its sinks on every new source.
#[derive(Debug, Clone)]
pub(crate) struct StreamShape {
    pub stream: StreamId,
    /// The stream's source generation (a new publisher is a new generation).
    pub generation: u64,
    /// The codecs the source negotiated.
    pub params: Vec<PayloadParams>,
}

/// A change of a stream, for the sinks attached to it.
#[derive(Debug)]
pub(crate) enum SinkNotice {
    /// A new source: what the stream carries now.
    Source(StreamShape),
    /// The source left.
    Offline(StreamId),
}

/// One packet from a feed, with its sequence number and RTP time already extended to 64 bits.
pub(crate) struct FeedPacket {
    pub layer: Option<LayerId>,
    pub pt: u8,
    pub seq: u64,
    pub ticks: u64,
    pub marker: bool,
    pub payload: Arc<[u8]>,
}
