//! Counters kept by the core; the driver exposes a snapshot to `/metrics`.

/// Why a datagram or media sample was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not STUN, DTLS or RTP by its first byte, or unparseable.
    Malformed,
    /// From an address no session knows, and not a STUN check naming one.
    UnknownSource,
    /// The session's engine refused it.
    Rejected,
    /// A video packet for a subscriber still waiting for a keyframe.
    AwaitingKeyframe,
    /// A publisher packet with a payload type it did not negotiate.
    UnknownPayloadType,
}

impl DropReason {
    /// All reasons, for exporting every series even at zero.
    pub const ALL: [DropReason; 5] = [
        DropReason::Malformed,
        DropReason::UnknownSource,
        DropReason::Rejected,
        DropReason::AwaitingKeyframe,
        DropReason::UnknownPayloadType,
    ];

    /// The label value used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownSource => "unknown_source",
            DropReason::Rejected => "rejected",
            DropReason::AwaitingKeyframe => "awaiting_keyframe",
            DropReason::UnknownPayloadType => "unknown_payload_type",
        }
    }
}

/// A snapshot of the SFU's gauges and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Live publishers (connected or connecting).
    pub publishers: u64,
    /// Subscribers (connected or connecting).
    pub subscribers: u64,
    /// Datagrams received on the media port.
    pub packets_in: u64,
    /// Bytes received on the media port.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// RTP packets handed to subscribers' engines.
    pub packets_forwarded: u64,
    /// Drops, indexed like [`DropReason::ALL`].
    pub drops: [u64; 5],
    /// Keyframe requests received from subscribers (before coalescing) and raised by the SFU.
    pub keyframe_requests_in: u64,
    /// Keyframe requests sent to publishers (after coalescing).
    pub keyframe_requests_sent: u64,
    /// Peers closed because their engine failed or panicked.
    pub peer_failures: u64,
    /// Sessions closed because the peer went silent (ICE consent freshness) or ICE/DTLS
    /// disconnected.
    pub disconnects: u64,
    /// Viewers started from the keyframe cache (without waiting for a publisher keyframe).
    pub cache_starts: u64,
    /// Viewers moved from one simulcast layer to another (on the target layer's keyframe).
    pub layer_switches: u64,
    /// Sessions whose ICE was restarted (PATCH with new credentials).
    pub ice_restarts: u64,
    /// RTP packets emitted to downstream relays.
    pub relay_packets: u64,
    /// Per live or watched stream, by name.
    pub streams: Vec<StreamStat>,
}

/// One stream's gauges in [`SfuStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamStat {
    /// Channel name.
    pub name: String,
    /// It has a publisher (or, at an edge, an upstream) now.
    pub live: bool,
    /// Viewers on this node.
    pub viewers: u64,
    /// On a channel's own stream: the viewer sessions here that show any stream of the
    /// channel (its host, a stage guest, the stage's mix), each counted once however many of
    /// them it shows. 0 on a guest's or a mix's stream. A stage's audience is this, not the
    /// sum of its streams' `viewers`.
    pub audience: u64,
    /// Edges this node feeds it to.
    pub relays: u64,
}

impl SfuStats {
    /// Count one drop.
    pub fn drop(&mut self, reason: DropReason) {
        let idx = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.drops[idx] += 1;
    }

    /// Drops for one reason.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.drops[i])
    }
}
