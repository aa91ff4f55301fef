//! One stream (channel): its source, its video layers with their keyframe caches, its
//! timelines, and who receives it (viewer sessions and sinks).

mod cache;
mod layers;

pub(crate) use cache::{compressed_times, replay_rate, CachedPacket, KeyframeCache, LONG_CACHE};
pub(crate) use layers::EVALUATE_EVERY;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::keyframe::{Decision, KeyframeCoalescer};
use media_core::keyframe_start::{starts_keyframe, VideoFormat};
use media_core::layers::Pin;
use media_core::timeline::Rebaser;
use str0m::format::{Codec, PayloadParams};
use str0m::media::Rid;
use str0m::rtp::{ExtensionValues, Ssrc};

use crate::ids::{LayerId, PeerId, StreamId};
use crate::sink::{SinkId, StreamShape};
use crate::stats::DropReason;
use layers::Layers;

/// What feeds a stream: exactly one of these, or nothing while it is offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A publisher session on this node.
    Publisher(PeerId),
    /// The node above (at an edge), with the generation it announced.
    Feed { generation: u64 },
}

/// One packet entering a stream: from its publisher's engine, or from its feed.
pub(crate) struct Ingress<'a> {
    pub generation: u64,
    pub pt: u8,
    pub ssrc: Ssrc,
    pub rid: Option<Rid>,
    /// The video layer when the source says it (a feed's track); else learned from SSRC/rid.
    pub layer: Option<LayerId>,
    /// Extended sequence number and RTP time.
    pub seq: u64,
    pub ticks: u64,
    pub wallclock: Instant,
    pub marker: bool,
    pub ext_vals: &'a ExtensionValues,
    pub payload: Arc<[u8]>,
}

/// What the stream made of one entering packet.
pub(crate) struct Ingested {
    /// The stream's codec it belongs to.
    pub params: PayloadParams,
    /// It is RFC 2198 RED of that codec.
    pub red: bool,
    /// Video: its layer (`None`: audio).
    pub layer: Option<LayerId>,
    /// It starts a keyframe.
    pub keyframe: bool,
    /// The rebased RTP time.
    pub time: u32,
    /// The header extensions as viewers get them (`forwarded_extensions`).
    pub ext_vals: ExtensionValues,
}

/// One stream: at most one source, any number of viewers and sinks.
pub(crate) struct Stream {
    source: Option<Source>,
    /// Incremented for each new source; feeds the timeline rebasers.
    generation: u64,
    viewers: BTreeSet<PeerId>,
    /// Codecs the current source negotiated: viewers are offered only these.
    params: Vec<PayloadParams>,
    video_timeline: Rebaser,
    audio_timeline: Rebaser,
    /// The source's video layers (one without simulcast), each with its keyframe cache.
    layers: Layers,
    /// Keyframe requests before any video arrived (no layer to address yet).
    keyframes_before_layers: KeyframeCoalescer,
    /// The publisher offered simulcast: viewers get a bandwidth estimator.
    simulcast: bool,
    /// When viewers' layer choices are next re-evaluated.
    next_evaluation: Option<Instant>,
    /// When the source left (without a replacement); viewers are closed after the grace.
    offline_since: Option<Instant>,
    /// Sinks (downstream relays) attached to this stream.
    sinks: BTreeSet<SinkId>,
}

impl Stream {
    pub fn new(keyframe_interval: Duration) -> Self {
        Self {
            source: None,
            generation: 0,
            viewers: BTreeSet::new(),
            params: Vec::new(),
            video_timeline: Rebaser::new(90_000),
            audio_timeline: Rebaser::new(48_000),
            layers: Layers::new(keyframe_interval),
            keyframes_before_layers: KeyframeCoalescer::new(keyframe_interval),
            simulcast: false,
            next_evaluation: None,
            offline_since: None,
            sinks: BTreeSet::new(),
        }
    }

    /// Nobody feeds or receives it: the entry can go.
    pub fn is_idle(&self) -> bool {
        self.source.is_none() && self.viewers.is_empty() && self.sinks.is_empty()
    }

    /// A publisher or a feed is live on it.
    pub fn is_live(&self) -> bool {
        self.source.is_some()
    }

    /// Its local publisher, if that is its source.
    pub fn publisher(&self) -> Option<PeerId> {
        match self.source {
            Some(Source::Publisher(p)) => Some(p),
            _ => None,
        }
    }

    /// Fed from the node above.
    pub fn is_fed(&self) -> bool {
        matches!(self.source, Some(Source::Feed { .. }))
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn params(&self) -> &[PayloadParams] {
        &self.params
    }

    pub fn simulcast(&self) -> bool {
        self.simulcast
    }

    /// A new source (`source`, negotiated `params`) takes the stream: a new generation, with
    /// no layers yet. Returns the publisher it replaced.
    fn new_source(&mut self, source: Source, params: Vec<PayloadParams>) -> Option<PeerId> {
        let replaced = self.publisher();
        self.source = Some(source);
        self.generation += 1;
        self.params = params;
        self.layers.clear();
        self.keyframes_before_layers.reset();
        self.offline_since = None;
        replaced
    }

    /// A local publisher takes the stream (from a previous publisher or a feed). Returns the
    /// publisher it replaced and the new generation.
    pub fn publish(
        &mut self,
        peer: PeerId,
        params: Vec<PayloadParams>,
        simulcast: bool,
    ) -> (Option<PeerId>, u64) {
        let replaced = self.new_source(Source::Publisher(peer), params);
        self.simulcast = simulcast;
        (replaced, self.generation)
    }

    /// The node above feeds the stream with `generation`. Returns whether that is a new
    /// source for the viewers (a new upstream generation). Refused while a local publisher
    /// has it.
    pub fn feed(&mut self, generation: u64, params: Vec<PayloadParams>) -> Result<bool, ()> {
        match self.source {
            Some(Source::Publisher(_)) => Err(()),
            Some(Source::Feed { generation: g }) if g == generation => {
                self.params = params;
                self.offline_since = None;
                Ok(false)
            }
            _ => {
                self.new_source(Source::Feed { generation }, params);
                Ok(true)
            }
        }
    }

    /// The local publisher `peer` left: offline from `now` (if it was the source).
    pub fn publisher_left(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.publisher() != Some(peer) {
            return false;
        }
        self.source = None;
        self.offline_since = Some(now);
        true
    }

    /// The feed ended (the node above has no source): offline from `now`.
    pub fn feed_ended(&mut self, now: Instant) -> bool {
        if !self.is_fed() {
            return false;
        }
        self.source = None;
        self.offline_since = Some(now);
        true
    }

    pub fn offline_since(&self) -> Option<Instant> {
        self.offline_since
    }

    pub fn viewers(&self) -> &BTreeSet<PeerId> {
        &self.viewers
    }

    pub fn add_viewer(&mut self, id: PeerId) {
        self.viewers.insert(id);
    }

    pub fn remove_viewer(&mut self, id: PeerId) {
        self.viewers.remove(&id);
    }

    pub fn sinks(&self) -> &BTreeSet<SinkId> {
        &self.sinks
    }

    pub fn add_sink(&mut self, sink: SinkId) {
        self.sinks.insert(sink);
    }

    /// Detach `sink`; whether it was attached.
    pub fn remove_sink(&mut self, sink: SinkId) -> bool {
        self.sinks.remove(&sink)
    }

    /// What it carries, for its sinks.
    pub fn shape(&self, id: &StreamId) -> StreamShape {
        StreamShape {
            stream: id.clone(),
            generation: self.generation,
            params: self.params.clone(),
        }
    }

    /// Whether any layer holds a usable cached group.
    pub fn has_cache(&self) -> bool {
        self.layers.iter().any(|l| !l.cache.packets().is_empty())
    }

    /// A layer's cache.
    pub fn cache(&self, layer: LayerId) -> Option<&KeyframeCache> {
        self.layers.get(layer).map(|l| &l.cache)
    }

    /// The cached packets of every layer, by layer.
    pub fn caches(&self) -> impl Iterator<Item = (LayerId, &[CachedPacket])> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.cache.packets()))
    }

    /// Record one entering packet: its codec, layer, rebased time, whether it starts a
    /// keyframe; the layer's meter, keyframe coalescer and cache learn it. `Ok(None)`: a
    /// packet to ignore (see `Layers::classify`).
    pub fn ingest(
        &mut self,
        packet: &Ingress<'_>,
        now: Instant,
    ) -> Result<Option<Ingested>, DropReason> {
        let pt = packet.pt;
        let Some(params) = self
            .params
            .iter()
            .find(|p| *p.pt() == pt || p.red().map(|r| *r) == Some(pt))
            .copied()
        else {
            return Err(DropReason::UnknownPayloadType);
        };
        let red = *params.pt() != pt;
        let codec = params.spec().codec;
        let ext_vals = forwarded_extensions(packet.ext_vals);
        if !codec.is_video() {
            let time = self
                .audio_timeline
                .map(packet.generation, packet.ticks, now) as u32;
            return Ok(Some(Ingested {
                params,
                red,
                layer: None,
                keyframe: false,
                time,
                ext_vals,
            }));
        }
        let classified = match packet.layer {
            Some(l) => self.layers.relayed(l, now),
            None => self.layers.classify(packet.ssrc, packet.rid, now),
        };
        let Some(layer) = classified else {
            return Ok(None);
        };
        let time = self
            .video_timeline
            .map_layer(packet.generation, layer, packet.ticks, now) as u32;
        let keyframe = video_format(codec).is_some_and(|f| starts_keyframe(f, &packet.payload));
        let Some(entry) = self.layers.get_mut(layer) else {
            return Ok(None);
        };
        entry.meter.record(now, packet.payload.len());
        if keyframe {
            entry.keyframes.keyframe_seen();
            self.keyframes_before_layers.keyframe_seen();
        }
        entry.cache.push(
            CachedPacket {
                params,
                seq: packet.seq,
                time,
                wallclock: packet.wallclock,
                marker: packet.marker,
                ext_vals: ext_vals.clone(),
                payload: packet.payload.clone(),
            },
            keyframe,
        );
        Ok(Some(Ingested {
            params,
            red,
            layer: Some(layer),
            keyframe,
            time,
            ext_vals,
        }))
    }

    /// Ask for a keyframe on `layer` (`None`: every layer), coalesced per layer: the layers
    /// whose request goes out now (`None` in the list: the source's video as a whole, before
    /// any layer is known).
    pub fn keyframe_requests(
        &mut self,
        layer: Option<LayerId>,
        now: Instant,
    ) -> Vec<Option<LayerId>> {
        let mut send = Vec::new();
        if self.layers.is_empty() && self.keyframes_before_layers.request(now) == Decision::SendNow
        {
            send.push(None);
        }
        for (i, l) in self.layers.iter_mut().enumerate() {
            if layer.is_some_and(|want| want != i) {
                continue;
            }
            if l.keyframes.request(now) == Decision::SendNow {
                send.push(Some(i));
            }
        }
        send
    }

    /// The deferred keyframe requests whose coalescing interval ended at `now`.
    pub fn due_keyframe_requests(&mut self, now: Instant) -> Vec<Option<LayerId>> {
        let mut send = Vec::new();
        if self.keyframes_before_layers.poll(now) == Decision::SendNow {
            send.push(None);
        }
        for (i, l) in self.layers.iter_mut().enumerate() {
            if l.keyframes.poll(now) == Decision::SendNow {
                send.push(Some(i));
            }
        }
        send
    }

    /// The earliest keyframe request deferred to the end of its interval, on any layer.
    pub fn keyframe_deadline(&self) -> Option<Instant> {
        self.layers
            .iter()
            .filter_map(|l| l.keyframes.deadline())
            .chain(self.keyframes_before_layers.deadline())
            .min()
    }

    /// The SSRC a keyframe request for `layer` goes to.
    pub fn layer_ssrc(&self, layer: LayerId) -> Option<Ssrc> {
        self.layers.get(layer).map(|l| l.ssrc)
    }

    /// The layer a new viewer starts on (see `Layers::lowest`).
    pub fn lowest_layer(&mut self, now: Instant) -> Option<LayerId> {
        self.layers.lowest(now)
    }

    /// Its viewers, with the means to pick a starting layer for any of them meanwhile.
    pub fn viewers_with_layers(&mut self) -> (&BTreeSet<PeerId>, StartLayer<'_>) {
        (
            &self.viewers,
            StartLayer {
                layers: &mut self.layers,
                lowest: None,
            },
        )
    }

    /// Active layers with their bitrates, lowest first.
    pub fn ranked_layers(&mut self, now: Instant) -> Vec<(LayerId, u64)> {
        self.layers.ranked(now)
    }

    pub fn has_layers(&self) -> bool {
        !self.layers.is_empty()
    }

    /// A layer's name for logs.
    pub fn layer_name(&self, id: LayerId) -> String {
        self.layers.name(id)
    }

    pub fn next_evaluation(&self) -> Option<Instant> {
        self.next_evaluation
    }

    pub fn set_next_evaluation(&mut self, at: Option<Instant>) {
        self.next_evaluation = at;
    }
}

/// Picks the layer a viewer starts on: the lowest for `Auto` (looked up once), else its pin.
pub(crate) struct StartLayer<'a> {
    layers: &'a mut Layers,
    lowest: Option<Option<LayerId>>,
}

impl StartLayer<'_> {
    pub fn pick(&mut self, pin: Pin, now: Instant) -> Option<LayerId> {
        if pin == Pin::Auto {
            *self.lowest.get_or_insert_with(|| self.layers.lowest(now))
        } else {
            self.layers.pinned(now, pin)
        }
    }
}

/// The publisher's header extensions as a viewer should get them: its own mid and rid are the
/// viewer engine's to set (a publisher's rid on a viewer's single-layer track, or its mid on a
/// viewer whose mids differ, would misroute the packet).
fn forwarded_extensions(ext: &ExtensionValues) -> ExtensionValues {
    let mut out = ext.clone();
    out.mid = None;
    out.rid = None;
    out.rid_repair = None;
    out
}

fn video_format(codec: Codec) -> Option<VideoFormat> {
    match codec {
        Codec::Vp8 => Some(VideoFormat::Vp8),
        Codec::Vp9 => Some(VideoFormat::Vp9),
        Codec::H264 => Some(VideoFormat::H264),
        Codec::Av1 => Some(VideoFormat::Av1),
        _ => None,
    }
}
