//! The relay to edges (docs/relay-protocol.md), as a sink and a feed outside the core.
//!
//! **Origin side** (or an edge serving a tier below): a downstream relay is a sink of the core;
//! every packet entering one of its streams comes out of the core as a [`SinkPacket`] and is
//! encoded here as one plain RTP packet on the track of its layer ([`encode`]). A new source
//! of the stream is announced as its tracks and codecs ([`describe`]).
//!
//! **Edge side**: the stream is fed from the node above. [`Feeds`] extends the wire's 16-bit
//! sequence numbers and 32-bit times per track and maps tracks to layers; the core then treats
//! the feed as it treats a local publisher (keyframe caches, layers, viewers).

use std::collections::HashMap;
use std::sync::Arc;

use media_core::rtp::RtpHeader;
use media_core::timeline::MAX_LAYERS;
use str0m::format::{Codec, CodecSpec, FormatParams, PayloadParams};
use str0m::media::Frequency;

use crate::ids::{LayerId, StreamId};
use crate::sink::{FeedPacket, SinkId, SinkPacket, StreamShape};
use crate::types::SfuError;
use crate::wire::{video_track, RelayCodec, RelayId, RelayPacket, RelayTracks, AUDIO_TRACK};

impl From<RelayId> for SinkId {
    fn from(r: RelayId) -> Self {
        SinkId(r.0)
    }
}

impl From<SinkId> for RelayId {
    fn from(s: SinkId) -> Self {
        RelayId(s.0)
    }
}

/// The layer a relay track carries (`None`: the audio track).
pub(crate) fn track_layer(track: u16) -> Option<LayerId> {
    (track != AUDIO_TRACK).then(|| usize::from(track - 1))
}

/// One sink packet as the relay sends it. `None`: a RED packet without a readable primary
/// block (RED is reduced to its primary block on the relay).
pub(crate) fn encode(p: SinkPacket) -> Option<RelayPacket> {
    let payload: &[u8] = if p.red {
        media_core::red::primary(&p.payload)?.1
    } else {
        &p.payload
    };
    let (at, level) = (p.at, p.level);
    let data = rtp_bytes(
        p.pt,
        p.seq,
        p.time,
        p.layer.unwrap_or(usize::from(u16::MAX)),
        p.marker,
        payload,
    );
    Some(RelayPacket {
        relay: p.sink.into(),
        stream: p.stream,
        track: p.layer.map_or(AUDIO_TRACK, video_track),
        data,
        at,
        level,
    })
}

/// Per stream fed from above: the last extended sequence number and RTP time of each track.
#[derive(Default)]
pub(crate) struct Feeds {
    streams: HashMap<StreamId, Extender>,
}

impl Feeds {
    /// A new source upstream (or none before): start extending afresh.
    pub fn restart(&mut self, stream: &StreamId) {
        self.streams.insert(stream.clone(), Extender::default());
    }

    /// The stream is no longer fed (offline upstream, or a local publisher took it).
    pub fn end(&mut self, stream: &StreamId) {
        self.streams.remove(stream);
    }

    /// A relay packet as the core's feed packet. `Err`: malformed; `Ok(None)`: not fed.
    pub fn packet(
        &mut self,
        stream: &StreamId,
        track: u16,
        rtp: &[u8],
    ) -> Result<Option<FeedPacket>, ()> {
        let header = RtpHeader::parse(rtp).map_err(|_| ())?;
        let Some(ext) = self.streams.get_mut(stream) else {
            return Ok(None);
        };
        let (seq, ticks) = ext.extend(track, header.sequence, header.timestamp);
        let payload: Arc<[u8]> = header.payload(rtp).into();
        Ok(Some(FeedPacket {
            layer: track_layer(track),
            pt: header.payload_type,
            seq,
            ticks,
            marker: header.marker,
            payload,
        }))
    }
}

/// Extends one stream's 16-bit sequence numbers and 32-bit RTP times, per track.
#[derive(Debug, Default)]
struct Extender {
    last: HashMap<u16, (u64, u64)>,
}

impl Extender {
    fn extend(&mut self, track: u16, seq: u16, ts: u32) -> (u64, u64) {
        let (s, t) = match self.last.get(&track) {
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
        let last = self.last.entry(track).or_insert((s, t));
        if s > last.0 {
            *last = (s, t);
        }
        (s, t)
    }
}

/// The tracks and codecs of a stream, for its relays.
pub(crate) fn describe(s: &StreamShape) -> RelayTracks {
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
        stream: s.stream.clone(),
        generation: s.generation,
        tracks,
        codecs,
    }
}

/// The edge's payload params for the upstream's codecs.
pub(crate) fn codec_params(codecs: &[RelayCodec]) -> Result<Vec<PayloadParams>, SfuError> {
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
        let mut u = Extender::default();
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
