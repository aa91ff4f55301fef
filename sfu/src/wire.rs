//! The relay's wire shapes (docs/relay-protocol.md): plain data the edge crate speaks.

use crate::ids::{LayerId, StreamId};

/// A downstream relay (one edge connection), as the upstream's core knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u64);

/// One codec of a relayed stream (the protocol's `codecs` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCodec {
    /// Payload type in the relayed packets.
    pub pt: u8,
    /// Encoding name (`VP8`, `H264`, `opus`, ...).
    pub name: String,
    /// Clock rate.
    pub clock_rate: u32,
    /// Audio channels.
    pub channels: Option<u8>,
    /// `a=fmtp` parameters.
    pub fmtp: String,
    /// RTX payload type.
    pub rtx: Option<u8>,
    /// RED payload type.
    pub red: Option<u8>,
}

/// What a relayed stream carries (the protocol's `tracks` message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTracks {
    /// The stream.
    pub stream: StreamId,
    /// The upstream's publisher generation.
    pub generation: u64,
    /// Track ids and whether each is video: [`AUDIO_TRACK`], then one per video layer.
    pub tracks: Vec<(u16, bool)>,
    /// The publisher's codecs.
    pub codecs: Vec<RelayCodec>,
}

/// One RTP packet for a downstream relay.
#[derive(Debug)]
pub struct RelayPacket {
    /// The relay it goes to.
    pub relay: RelayId,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// The track it belongs to.
    pub track: u16,
    /// A plain RTP packet (12-byte header, no extensions, then the payload).
    pub data: Vec<u8>,
    /// When the packet entered this node (stamped on the datagram for an edge that reads
    /// stamps).
    pub at: std::time::Instant,
    /// The RFC 6464 audio level its publisher sent with it, in -dBov (0 loudest, 127
    /// silence), for a local sink (a stage's speaker detector); not carried on the relay's
    /// wire.
    pub level: Option<u8>,
}

/// The audio track's id.
pub const AUDIO_TRACK: u16 = 0;

/// The track id of video layer `layer`.
pub fn video_track(layer: LayerId) -> u16 {
    1 + layer as u16
}
