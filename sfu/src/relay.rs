//! The core's side of the relay to edges (docs/relay-protocol.md), sans-IO.
//!
//! **Upstream** (origin, or an edge serving a tier below): a downstream relay subscribes to a
//! stream; from then on every packet entering the stream is also emitted as
//! [`crate::Output::Relay`]: one plain RTP packet per relay, on the track of its layer. On
//! subscribe the stream's cached groups of pictures go first, so a cold edge starts its viewers
//! at once. A new publisher is announced with [`crate::SfuEvent::RelayTracks`].
//!
//! **Edge**: [`Sfu::relay_tracks`] makes a stream fed by its upstream instead of a local
//! publisher, and [`Sfu::relay_ingest`] feeds it packets. Everything downstream of that (keyframe
//! caches, layers, viewers) is the same code as for a local publisher; keyframe requests go up as
//! [`crate::SfuEvent::UpstreamKeyframe`].

use std::collections::HashMap;
use std::time::Instant;

use media_core::rtp::RtpHeader;
use media_core::timeline::MAX_LAYERS;
use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
use str0m::media::Frequency;
use str0m::rtp::{ExtensionValues, Ssrc};

use crate::core::Sfu;
use crate::fanout::Ingress;
use crate::forward::Stream;
use crate::simulcast::LayerId;
use crate::{Output, SfuError, SfuEvent, StreamId};

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
}

/// The audio track's id.
pub const AUDIO_TRACK: u16 = 0;

/// The track id of video layer `layer`.
pub fn video_track(layer: LayerId) -> u16 {
    1 + layer as u16
}

/// Per stream, at an edge: what the upstream feeds.
#[derive(Debug, Default)]
pub(crate) struct Upstream {
    pub generation: u64,
    /// Per track: the last extended sequence number and RTP time (to extend 16/32-bit fields).
    extend: HashMap<u16, (u64, u64)>,
}

impl Upstream {
    fn extend(&mut self, track: u16, seq: u16, ts: u32) -> (u64, u64) {
        let (s, t) = match self.extend.get(&track) {
            None => (u64::from(seq) + (1 << 16), u64::from(ts) + (1 << 32)),
            Some(&(ls, lt)) => {
                let ds = i64::from(seq.wrapping_sub(ls as u16) as i16);
                let dt = i64::from(ts.wrapping_sub(lt as u32) as i32);
                (
                    (ls as i64 + ds).max(0) as u64,
                    (lt as i64 + dt).max(0) as u64,
                )
            }
        };
        let last = self.extend.entry(track).or_insert((s, t));
        if s > last.0 {
            *last = (s, t);
        }
        (s, t)
    }
}

impl Sfu {
    /// A downstream relay wants `stream`: returns its tracks, and queues the cached groups of
    /// pictures for the relay at once.
    pub fn relay_subscribe(
        &mut self,
        relay: RelayId,
        stream: StreamId,
    ) -> Result<RelayTracks, SfuError> {
        let live = self.is_live(&stream);
        let Some(s) = self.streams.get_mut(&stream).filter(|_| live) else {
            return Err(SfuError::Offline(stream));
        };
        s.relays.insert(relay);
        let tracks = describe(&stream, s);
        let mut burst = Vec::new();
        for (layer, l) in s.layers.list.iter().enumerate() {
            for p in l.cache.packets() {
                let data = rtp_bytes(
                    *p.params.pt(),
                    p.seq as u16,
                    p.time,
                    layer,
                    p.marker,
                    &p.payload,
                );
                burst.push(RelayPacket {
                    relay,
                    stream: stream.clone(),
                    track: video_track(layer),
                    data,
                });
            }
        }
        self.stats.relay_packets += burst.len() as u64;
        self.out.extend(burst.into_iter().map(Output::Relay));
        Ok(tracks)
    }

    /// A downstream relay no longer wants `stream`.
    pub fn relay_unsubscribe(&mut self, relay: RelayId, stream: &StreamId) {
        if let Some(s) = self.streams.get_mut(stream) {
            s.relays.remove(&relay);
        }
        self.drop_idle(stream);
    }

    /// A downstream relay disconnected: forget it everywhere.
    pub fn relay_gone(&mut self, relay: RelayId) {
        let ids: Vec<StreamId> = self
            .streams
            .iter_mut()
            .filter_map(|(id, s)| s.relays.remove(&relay).then(|| id.clone()))
            .collect();
        for id in ids {
            self.drop_idle(&id);
        }
    }

    /// A downstream relay asks for a keyframe on `track` of `stream`.
    pub fn relay_keyframe(&mut self, stream: &StreamId, track: u16) {
        let layer = (track != AUDIO_TRACK).then(|| usize::from(track - 1));
        self.request_keyframe(stream, layer);
    }

    /// At an edge: `stream` is fed by the upstream with these tracks. A new upstream generation
    /// (its publisher changed) is a new source for the edge's viewers, as a republish is.
    pub fn relay_tracks(&mut self, tracks: RelayTracks) -> Result<(), SfuError> {
        let params = codec_params(&tracks.codecs)?;
        let now = self.last_now;
        let interval = self.config.keyframe_request_interval;
        let entry = self
            .streams
            .entry(tracks.stream.clone())
            .or_insert_with(|| Stream::new(interval));
        if entry.publisher.is_some() {
            return Err(SfuError::Unusable(
                "the stream has a local publisher; it cannot also be relayed".into(),
            ));
        }
        let same = entry
            .upstream
            .as_ref()
            .is_some_and(|u| u.generation == tracks.generation);
        entry.params = params;
        entry.offline_since = None;
        if same {
            return Ok(());
        }
        entry.upstream = Some(Upstream {
            generation: tracks.generation,
            ..Upstream::default()
        });
        entry.generation += 1;
        entry.layers.clear();
        entry.keyframes_before_layers.reset();
        let subscribers: Vec<_> = entry.subscribers.iter().copied().collect();
        for sub in subscribers {
            if let Some(p) = self.peers.get_mut(&sub) {
                p.needs_keyframe = true;
                p.layer.reset();
            }
        }
        tracing::info!(stream = %tracks.stream, generation = tracks.generation, "relayed stream live");
        let _ = now;
        self.out
            .push_back(Output::Event(SfuEvent::StreamLive(tracks.stream)));
        Ok(())
    }

    /// At an edge: the upstream says the stream has no publisher now. Viewers stay for the
    /// offline grace, as with a local publisher that left.
    pub fn relay_offline(&mut self, stream: &StreamId) {
        let now = self.last_now;
        if let Some(s) = self.streams.get_mut(stream) {
            if s.upstream.take().is_some() {
                s.offline_since = Some(now);
                self.out
                    .push_back(Output::Event(SfuEvent::StreamOffline(stream.clone())));
            }
        }
        self.drop_idle(stream);
    }

    /// At an edge: one RTP packet from the upstream on `track` of `stream`. Malformed or
    /// unexpected packets are counted drops.
    pub fn relay_ingest(&mut self, at: Instant, stream: &StreamId, track: u16, rtp: &[u8]) {
        self.last_now = self.last_now.max(at);
        let Ok(header) = RtpHeader::parse(rtp) else {
            self.stats.drop(crate::DropReason::Malformed);
            return;
        };
        let Some(s) = self.streams.get_mut(stream) else {
            self.stats.drop(crate::DropReason::UnknownSource);
            return;
        };
        let generation = s.generation;
        let Some(up) = s.upstream.as_mut() else {
            self.stats.drop(crate::DropReason::UnknownSource);
            return;
        };
        let (seq, ticks) = up.extend(track, header.sequence, header.timestamp);
        let layer = (track != AUDIO_TRACK).then(|| usize::from(track - 1));
        let ext = ExtensionValues::default();
        let payload: std::sync::Arc<[u8]> = header.payload(rtp).into();
        self.forward_ingress(Ingress {
            stream: stream.clone(),
            generation,
            pt: header.payload_type,
            ssrc: Ssrc::from(u32::from(track)),
            rid: None,
            layer,
            seq,
            ticks,
            wallclock: at,
            marker: header.marker,
            ext_vals: &ext,
            payload,
        });
        self.drain();
    }

    /// Copy a packet entering `stream` to every relay subscribed to it.
    pub(crate) fn relay_tap(
        &mut self,
        stream: &StreamId,
        packet: &Ingress<'_>,
        layer: Option<LayerId>,
        time: u32,
    ) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        if s.relays.is_empty() {
            return;
        }
        let track = layer.map_or(AUDIO_TRACK, video_track);
        // Opus RED goes up the relay as its primary block on the main payload type.
        let red_of = s
            .params
            .iter()
            .find(|p| p.red().map(|r| *r) == Some(packet.pt))
            .map(|p| *p.pt());
        let (pt, payload) = match red_of {
            Some(main) => match media_core::red::primary(&packet.payload) {
                Some((_, primary)) => (main, primary),
                None => return,
            },
            None => (packet.pt, &packet.payload[..]),
        };
        let data = rtp_bytes(
            pt,
            packet.seq as u16,
            time,
            layer.unwrap_or(usize::from(u16::MAX)),
            packet.marker,
            payload,
        );
        let relays: Vec<_> = s.relays.iter().copied().collect();
        self.stats.relay_packets += relays.len() as u64;
        for relay in relays {
            self.out.push_back(Output::Relay(RelayPacket {
                relay,
                stream: stream.clone(),
                track,
                data: data.clone(),
            }));
        }
    }

    /// Tell the stream's relays about its (new) publisher.
    pub(crate) fn announce_to_relays(&mut self, stream: &StreamId) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        let tracks = describe(stream, s);
        for relay in s.relays.iter().copied() {
            self.out
                .push_back(Output::Event(SfuEvent::RelayTracks(relay, tracks.clone())));
        }
    }

    /// Remove a stream nobody publishes, relays or watches.
    pub(crate) fn drop_idle(&mut self, stream: &StreamId) {
        if self.streams.get(stream).is_some_and(Stream::is_idle) {
            self.streams.remove(stream);
        }
    }
}

/// The tracks and codecs of a stream, for its relays.
fn describe(id: &StreamId, s: &Stream) -> RelayTracks {
    let mut tracks = Vec::new();
    if s.params.iter().any(|p| p.spec().codec.is_audio()) {
        tracks.push((AUDIO_TRACK, false));
    }
    if s.params.iter().any(|p| p.spec().codec.is_video()) {
        tracks.extend((0..MAX_LAYERS).map(|l| (video_track(l), true)));
    }
    let codecs = s
        .params
        .iter()
        .map(|p| {
            let spec = p.spec();
            RelayCodec {
                pt: *p.pt(),
                name: spec.codec.to_string(),
                clock_rate: spec.clock_rate.get(),
                channels: spec.channels,
                fmtp: spec.format.to_string(),
                rtx: p.resend().map(|r| *r),
                // RED is reduced to its primary block on the relay.
                red: None,
            }
        })
        .collect();
    RelayTracks {
        stream: id.clone(),
        generation: s.generation,
        tracks,
        codecs,
    }
}

/// The edge's payload params for the upstream's codecs.
fn codec_params(codecs: &[RelayCodec]) -> Result<Vec<PayloadParams>, SfuError> {
    let mut out = Vec::new();
    for c in codecs {
        let codec = Codec::from(c.name.as_str());
        if codec == Codec::Unknown {
            continue;
        }
        let Some(clock_rate) = Frequency::new(c.clock_rate) else {
            return Err(SfuError::Unusable(format!(
                "codec {} has clock rate 0",
                c.name
            )));
        };
        let spec = CodecSpec {
            codec,
            clock_rate,
            channels: c.channels,
            format: FormatParams::parse_line(&c.fmtp),
        };
        // RED never crosses the relay (the upstream sends the primary block), so the edge's
        // params have none.
        out.push(PayloadParams::new(c.pt.into(), c.rtx.map(Into::into), spec));
    }
    if out.is_empty() {
        return Err(SfuError::Unusable(
            "the relayed stream has no known codec".into(),
        ));
    }
    Ok(out)
}

/// A plain RTP packet: version 2, no padding, extensions or CSRCs; the SSRC names the layer (or
/// `0xffff` audio) so a capture of the relay reads clearly.
fn rtp_bytes(pt: u8, seq: u16, time: u32, layer: usize, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + payload.len());
    out.push(0x80);
    out.push((pt & 0x7f) | if marker { 0x80 } else { 0 });
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&(layer as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_and_time_extend_across_wraps_and_reordering() {
        let mut u = Upstream::default();
        let (s0, t0) = u.extend(1, 65_534, u32::MAX - 10);
        let (s1, t1) = u.extend(1, 1, 5);
        assert_eq!(s1 - s0, 3);
        assert_eq!(t1 - t0, 16);
        // A late packet from before the wrap stays behind.
        let (s2, _) = u.extend(1, 65_535, u32::MAX);
        assert_eq!(s2, s0 + 1);
        // Tracks are independent.
        let (a, _) = u.extend(0, 100, 0);
        assert_eq!(a, 100 + (1 << 16));
    }

    #[test]
    fn rtp_bytes_parse_back() {
        let b = rtp_bytes(96, 7, 9000, 2, true, b"abc");
        let h = RtpHeader::parse(&b).unwrap();
        assert_eq!(
            (h.payload_type, h.sequence, h.timestamp, h.marker),
            (96, 7, 9000, true)
        );
        assert_eq!(h.payload(&b), b"abc");
    }
}
