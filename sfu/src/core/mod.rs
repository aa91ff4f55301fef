//! The sans-IO core: peers, demux, streams and their viewers and sinks. It knows no wire
//! format but RTP/SRTP through str0m: sinks and feeds (the relay, outside) get neutral types.
//!
//! Behaviour lives in child modules over the private state here: `sessions` (accept, close,
//! ICE), `io` (inputs, the engines' outputs, deadlines), `forwarding` (one packet to every
//! viewer and sink), `keyframes` (requests, cache starts, paced replays), `layering`
//! (simulcast layer choice), `sinks` (sinks and feeds).

mod accept;
mod forwarding;
mod io;
mod keyframes;
mod layering;
mod sessions;
mod sinks;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use media_core::routes::Routes;
use str0m::IceCreds;

use crate::ids::{LayerId, PeerId, StreamId};
use crate::peer::Peer;
use crate::sink::{SinkId, SinkNotice, SinkPacket};
use crate::stats::{DropReason, SfuStats, StreamStat};
use crate::stream::Stream;
use crate::types::{SfuConfig, SfuError, SfuEvent, Transmit};

/// Output of the core, drained by [`Core::poll_output`].
#[derive(Debug)]
pub(crate) enum CoreOutput {
    /// Send this datagram.
    Transmit(Transmit),
    /// Something happened.
    Event(SfuEvent),
    /// A packet for a sink.
    Sink(SinkPacket),
    /// A change of a stream, for one sink.
    Notice(SinkId, SinkNotice),
    /// A fed stream: a viewer needs a keyframe of this layer (`None`: the video as a whole).
    FeedKeyframe(StreamId, Option<LayerId>),
    /// Nothing more to do until this instant (or the next input).
    Timeout(Instant),
}

/// The sans-IO core.
pub(crate) struct Core {
    config: SfuConfig,
    peers: HashMap<PeerId, Peer>,
    routes: Routes<PeerId>,
    /// Peers whose engine has work due now, run once per `poll_output`.
    due_now: Vec<PeerId>,
    streams: HashMap<StreamId, Stream>,
    /// Peers with work to drain.
    dirty: VecDeque<PeerId>,
    out: VecDeque<CoreOutput>,
    next_id: u64,
    rng: u64,
    stats: SfuStats,
    /// The latest instant seen in any input.
    last_now: Instant,
    /// Streams whose audio goes nowhere (a stage host muted a participant).
    muted: std::collections::HashSet<StreamId>,
}

impl Core {
    /// A core that puts `config.candidates` in its answers, starting at `now`. `seed` feeds
    /// session ids.
    pub fn new(config: SfuConfig, seed: u64, now: Instant) -> Self {
        Self {
            config,
            peers: HashMap::new(),
            routes: Routes::new(),
            due_now: Vec::new(),
            streams: HashMap::new(),
            dirty: VecDeque::new(),
            out: VecDeque::new(),
            next_id: 1,
            rng: seed | 1,
            stats: SfuStats::default(),
            last_now: now,
            muted: Default::default(),
        }
    }

    /// Mute or unmute `stream`'s audio: a muted stream's audio reaches no viewer and no sink
    /// (an edge, a stage's mix), whoever publishes it.
    pub fn set_muted(&mut self, stream: &StreamId, muted: bool) {
        if muted {
            self.muted.insert(stream.clone());
        } else {
            self.muted.remove(stream);
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> SfuStats {
        let mut s = self.stats.clone();
        s.publishers = self.peers.values().filter(|p| p.is_publisher()).count() as u64;
        s.subscribers = self.peers.len() as u64 - s.publishers;
        let mut by_channel: HashMap<&str, BTreeSet<PeerId>> = HashMap::new();
        for (id, st) in self.streams.iter() {
            by_channel
                .entry(id.channel())
                .or_default()
                .extend(st.viewers().iter().copied());
        }
        s.streams = self
            .streams
            .iter()
            .map(|(id, st)| StreamStat {
                name: id.to_string(),
                live: st.is_live(),
                viewers: st.viewers().len() as u64,
                audience: if id.as_str() == id.channel() {
                    by_channel.get(id.channel()).map_or(0, |v| v.len() as u64)
                } else {
                    0
                },
                relays: st.sinks().len() as u64,
            })
            .collect();
        s.streams.sort();
        s
    }

    /// Count a dropped input.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.drop(reason);
    }

    /// Whether `stream` has a publisher (or, at an edge, a feed).
    pub fn is_live(&self, stream: &StreamId) -> bool {
        self.streams.get(stream).is_some_and(Stream::is_live)
    }

    /// Demand for `stream` on this node: its viewers plus the sinks (edges below) it feeds.
    pub fn subscriber_count(&self, stream: &StreamId) -> usize {
        self.streams
            .get(stream)
            .map_or(0, |s| s.viewers().len() + s.sinks().len())
    }

    /// Whether the first frame of a new ICE-TCP connection from `from` may open it: a STUN
    /// request naming a session's ufrag (or from an address a session already uses).
    pub fn opens_tcp(&self, from: SocketAddr, frame: &[u8]) -> bool {
        matches!(
            self.routes.route(from, frame),
            media_core::routes::Route::Introduced(_) | media_core::routes::Route::Known(..)
        ) && media_core::demux::classify(frame) == media_core::demux::DatagramKind::Stun
    }

    /// Number of peers (publishers + subscribers).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Which stream a session belongs to, and whether it publishes.
    pub fn peer_info(&self, peer: PeerId) -> Option<(StreamId, bool)> {
        self.peers
            .get(&peer)
            .map(|p| (p.stream().clone(), p.is_publisher()))
    }

    fn random(&mut self) -> u64 {
        // xorshift64*, for what needs no secrecy (first sequence numbers, the counter-free
        // half of peer ids). Credentials come from the OS: see `new_ice_creds`.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn new_ice_creds(&mut self) -> IceCreds {
        // From the OS CSPRNG, each value drawn on its own: nothing about one session's
        // credentials (or the pwd of an answer from its ufrag) follows from another's.
        IceCreds {
            ufrag: os_random_hex(8),
            pass: os_random_hex(16),
        }
    }

    fn admit(&self) -> Result<(), SfuError> {
        if self.peers.len() >= self.config.max_peers {
            return Err(SfuError::Full(self.peers.len()));
        }
        Ok(())
    }

    fn alloc_id(&mut self) -> PeerId {
        // Random high bits, a counter below so ids never repeat. Peer ids are not secrets:
        // session URLs carry their own token.
        let id = (self.random() & 0xFFFF_FFFF_0000_0000) | (self.next_id & 0xFFFF_FFFF);
        self.next_id += 1;
        PeerId(id)
    }

    fn event(&mut self, e: SfuEvent) {
        self.out.push_back(CoreOutput::Event(e));
    }

    /// Remove a stream nobody feeds, watches or sinks.
    fn drop_idle(&mut self, stream: &StreamId) {
        if self.streams.get(stream).is_some_and(Stream::is_idle) {
            self.streams.remove(stream);
        }
    }
}

/// `bytes` bytes from the OS CSPRNG, hex-encoded. Should the OS source ever fail, a keyed
/// SipHash of a counter stands in (its key is itself drawn from the OS at process start).
fn os_random_hex(bytes: usize) -> String {
    use std::fmt::Write;
    let mut raw = vec![0u8; bytes];
    if getrandom::fill(&mut raw).is_err() {
        use std::hash::{BuildHasher, Hasher};
        static FALLBACK: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let keyed = FALLBACK.get_or_init(Default::default);
        for chunk in raw.chunks_mut(8) {
            let mut h = keyed.build_hasher();
            h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            let v = h.finish().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    raw.iter()
        .fold(String::with_capacity(bytes * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
