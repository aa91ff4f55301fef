//! The core's public data: configuration, inputs, outputs, events, errors and the results of
//! accepting a session. Plain data, at the bottom of the crate: every other module may use it
//! and it uses none of them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use media_core::layers::Pin;

use crate::ids::{PeerId, StreamId};
use crate::wire::{RelayId, RelayPacket, RelayTracks};

/// Configuration of the sans-IO core.
#[derive(Debug, Clone, PartialEq)]
pub struct SfuConfig {
    /// Addresses put in answers as host candidates (the advertised IPs with the UDP port).
    pub candidates: Vec<SocketAddr>,
    /// Addresses put in answers as passive ICE-TCP host candidates (RFC 6544), for networks
    /// that block UDP; empty when ICE-TCP is off.
    pub tcp_candidates: Vec<SocketAddr>,
    /// At most one keyframe request per this interval reaches a publisher track.
    pub keyframe_request_interval: Duration,
    /// Peers (publishers + subscribers) this node accepts before answering "full".
    pub max_peers: usize,
    /// A peer that has not connected (ICE + DTLS) within this time is closed.
    pub connect_timeout: Duration,
    /// Viewers of a stream whose publisher left stay connected this long (a reconnecting OBS
    /// continues seamlessly); then they are closed.
    pub offline_grace: Duration,
    /// ICE-TCP connections one client address may hold (IPv6: per /64).
    pub tcp_per_ip: usize,
    /// An ICE-TCP connection whose first frame is not, within this time, a STUN request for a
    /// session's ufrag is closed.
    pub tcp_first_frame: Duration,
}

/// The server side of an ICE restart, for the PATCH response (RFC 9725 section 4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceRestarted {
    /// The session's new local ICE ufrag.
    pub ufrag: String,
    /// The session's new local ICE password.
    pub pwd: String,
    /// `a=candidate:` lines of this node.
    pub candidates: Vec<String>,
}

/// One input to the core.
#[derive(Debug)]
pub enum Input<'a> {
    /// Time has advanced to this instant.
    Timeout(Instant),
    /// A datagram arrived on the shared media socket.
    Datagram {
        /// When it was received.
        at: Instant,
        /// Remote address.
        from: SocketAddr,
        /// Local address it arrived on (an unspecified IP is replaced by the first candidate).
        to: SocketAddr,
        /// The payload.
        data: &'a [u8],
    },
    /// One RFC 4571 frame from an ICE-TCP connection (the driver strips the length prefix).
    Framed {
        /// When it was received.
        at: Instant,
        /// Remote address of the connection.
        from: SocketAddr,
        /// Local address of the connection.
        to: SocketAddr,
        /// The frame's payload (STUN, DTLS, RTP or RTCP, as on UDP).
        data: &'a [u8],
    },
}

/// A datagram the driver must send.
#[derive(Debug)]
pub struct Transmit {
    /// Destination address.
    pub to: SocketAddr,
    /// Payload.
    pub data: Vec<u8>,
    /// Send it as an RFC 4571 frame on the ICE-TCP connection from `to`, not as a UDP datagram.
    pub tcp: bool,
}

/// Something that happened, for logs, metrics and (later) webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// A publisher connected: the stream is live.
    StreamLive(StreamId),
    /// The stream's publisher went away and none replaced it.
    StreamOffline(StreamId),
    /// A peer completed ICE + DTLS.
    PeerConnected(PeerId),
    /// A peer was removed, with the reason.
    PeerClosed(PeerId, CloseReason),
    /// Upstream: a relayed stream has a new publisher; tell the relay (`tracks`). The driver
    /// puts it on that relay's own queue ([`crate::RelayNotice`]), not on the event broadcast.
    RelayTracks(RelayId, RelayTracks),
    /// Upstream: a relayed stream lost its publisher; tell the relay (`offline`). Queued like
    /// `RelayTracks`.
    RelayOffline(RelayId, StreamId),
    /// Edge: a viewer needs a keyframe on this track of a relayed stream (`keyframe`).
    UpstreamKeyframe(StreamId, u16),
}

/// Why a peer was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The application (WHIP/WHEP DELETE, shutdown) closed it.
    Closed,
    /// A new publisher with the same key took over the stream.
    Replaced,
    /// ICE or DTLS failed, timed out, or the peer disconnected.
    Disconnected,
    /// It never connected within the connect timeout.
    ConnectTimeout,
    /// Its engine reported an error or panicked.
    Failed,
    /// Viewer of a stream whose publisher left and did not come back within the grace period.
    StreamEnded,
}

/// Output of the core, drained by [`crate::Sfu::poll_output`].
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// Send this datagram.
    Transmit(Transmit),
    /// Something happened.
    Event(SfuEvent),
    /// An RTP packet for a downstream relay.
    Relay(RelayPacket),
    /// Nothing more to do until this instant (or the next input).
    Timeout(Instant),
}

/// Errors of the SFU's control operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// The SDP offer could not be parsed or accepted.
    #[error("bad SDP offer: {0}")]
    BadOffer(String),
    /// The offer is valid SDP but offers nothing this SFU can use (no common codec, wrong
    /// direction).
    #[error("unusable offer: {0}")]
    Unusable(String),
    /// The viewer cannot receive the codec the stream is published in.
    #[error("codec mismatch: {0}")]
    CodecMismatch(String),
    /// The stream has no live publisher.
    #[error("stream {0} is offline")]
    Offline(StreamId),
    /// No such peer.
    #[error("no such session")]
    UnknownPeer,
    /// The node has no room for another peer.
    #[error("node is full ({0} peers)")]
    Full(usize),
    /// The SFU is shutting down or its driver is gone.
    #[error("media engine is unavailable")]
    Unavailable,
}

/// A publisher was accepted.
#[derive(Debug, Clone)]
pub struct Published {
    /// The new session.
    pub peer: PeerId,
    /// SDP answer for the WHIP client.
    pub answer: String,
    /// The publisher it replaced (same stream key reconnecting), if any.
    pub replaced: Option<PeerId>,
}

/// A subscriber was accepted.
#[derive(Debug, Clone)]
pub struct Subscribed {
    /// The new session.
    pub peer: PeerId,
    /// SDP answer for the WHEP client.
    pub answer: String,
}

/// Which of a viewing session's free sections a stream is shown on: a one-section stage viewer
/// sees the featured participant on its video section and hears the mix on its audio one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sections {
    /// The first free video section and the first free audio section.
    Both,
    /// The first free video section only.
    Video,
    /// The first free audio section only.
    Audio,
}

impl Sections {
    /// It takes a video section.
    pub fn video(self) -> bool {
        self != Sections::Audio
    }

    /// It takes an audio section.
    pub fn audio(self) -> bool {
        self != Sections::Video
    }
}

/// One stream a viewing session shows, and on which of its sections (mids as in its offer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shown {
    /// The stream.
    pub stream: StreamId,
    /// The mid of the video section it is shown on.
    pub video: Option<String>,
    /// The mid of the audio section it is heard on.
    pub audio: Option<String>,
}

/// Options a viewer subscribes with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Which simulcast layer to receive (`Auto`: follow the viewer's bandwidth estimate).
    pub layer: Pin,
    /// Further streams to watch in the same session, one per further video/audio section
    /// pair of the offer, in order (a stage's other participants). Empty for a plain viewer.
    pub also: Vec<StreamId>,
    /// Negotiate every format the viewer offers that can be forwarded, not only the stream's:
    /// a one-section viewer of a live stage, whose video section may show a participant that
    /// sends another codec. (Sessions with several section pairs always do.)
    pub open: bool,
}

/// A session's engine failed or panicked: the peer must be closed.
#[derive(Debug)]
pub(crate) struct PeerBroken;
