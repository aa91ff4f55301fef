//! Simulcast: a publisher's video layers, and each viewer's place among them.
//!
//! A stream's video arrives as one or more layers (one per SSRC: rid-based simulcast sends up to
//! three; a plain publisher sends one). Every layer keeps its own keyframe cache, keyframe
//! request coalescer and bitrate meter. A viewer receives exactly one layer at a time: the
//! lowest when it starts, then whatever [`media_core::layers::LayerChooser`] picks from its
//! bandwidth estimate (or its pin). A switch is armed by setting the viewer's target and asking
//! the target layer for a keyframe; it happens on that keyframe, with sequence numbers, RTP
//! time and VP8 picture ids continuing across it (see `core::forward`).

use std::time::{Duration, Instant};

use media_core::keyframe::KeyframeCoalescer;
use media_core::layers::{LayerChooser, Pin, RateMeter};
use media_core::timeline::MAX_LAYERS;
use media_core::vp8ids::PictureIdMap;
use str0m::media::Rid;
use str0m::rtp::{Ssrc, Vp8Descriptor, Vp8Patch};

use crate::forward::KeyframeCache;

/// Index of a layer in [`Layers::list`].
pub(crate) type LayerId = usize;

/// A layer that sent nothing for this long is inactive: it is not chosen, and a viewer on it
/// is moved to another.
pub(crate) const INACTIVE_AFTER: Duration = Duration::from_millis(1_500);

/// How often every viewer's layer choice is re-evaluated.
pub(crate) const EVALUATE_EVERY: Duration = Duration::from_millis(250);

/// One of the publisher's video encodings.
pub(crate) struct Layer {
    pub ssrc: Ssrc,
    pub rid: Option<Rid>,
    /// The video since this layer's last keyframe, for starting viewers at once.
    pub cache: KeyframeCache,
    pub keyframes: KeyframeCoalescer,
    pub meter: RateMeter,
}

/// The current publisher's video layers.
pub(crate) struct Layers {
    pub list: Vec<Layer>,
    interval: Duration,
}

impl Layers {
    pub fn new(keyframe_interval: Duration) -> Self {
        Self {
            list: Vec::new(),
            interval: keyframe_interval,
        }
    }

    /// Forget every layer (a new publisher).
    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// The layer a packet with `ssrc` (and `rid`, when the publisher sends the RTP stream id
    /// extension) belongs to, learning new layers as they appear. `None`: a packet to ignore
    /// (a further SSRC of a publisher without simulcast while its first is still active, or
    /// more layers than the SFU keeps apart).
    pub fn classify(&mut self, ssrc: Ssrc, rid: Option<Rid>, now: Instant) -> Option<LayerId> {
        if let Some(i) = self.list.iter().position(|l| l.ssrc == ssrc) {
            return Some(i);
        }
        // A new SSRC: a known rid (or the rid-less layer) that changed its SSRC, or a new layer.
        if let Some(i) = self.list.iter().position(|l| l.rid == rid) {
            let layer = &mut self.list[i];
            if rid.is_none() && layer.meter.active(now, INACTIVE_AFTER) {
                // Without rids, a second SSRC is not a layer this SFU can rank: keep the first.
                return None;
            }
            layer.ssrc = ssrc;
            layer.cache.clear();
            return Some(i);
        }
        if self.list.len() >= MAX_LAYERS {
            return None;
        }
        self.list.push(Layer {
            ssrc,
            rid,
            cache: KeyframeCache::default(),
            keyframes: KeyframeCoalescer::new(self.interval),
            meter: RateMeter::new(),
        });
        Some(self.list.len() - 1)
    }

    /// The layer a relay track names (layers are numbered by the upstream): created as needed.
    pub fn relayed(&mut self, layer: LayerId, _now: Instant) -> Option<LayerId> {
        if layer >= MAX_LAYERS {
            return None;
        }
        while self.list.len() <= layer {
            let i = self.list.len();
            self.list.push(Layer {
                ssrc: Ssrc::from(1 + i as u32),
                rid: None,
                cache: KeyframeCache::default(),
                keyframes: KeyframeCoalescer::new(self.interval),
                meter: RateMeter::new(),
            });
        }
        Some(layer)
    }

    /// Active layers with their bitrates (bit/s), lowest bitrate first.
    pub fn ranked(&mut self, now: Instant) -> Vec<(LayerId, u64)> {
        let mut out: Vec<(LayerId, u64)> = self
            .list
            .iter_mut()
            .enumerate()
            .filter(|(_, l)| l.meter.active(now, INACTIVE_AFTER))
            .map(|(i, l)| (i, l.meter.bitrate(now)))
            .collect();
        out.sort_by_key(|(i, b)| (*b, *i));
        out
    }

    /// The layer a new viewer starts on: the lowest active one (the first known when none has
    /// been measured yet).
    pub fn lowest(&mut self, now: Instant) -> Option<LayerId> {
        self.ranked(now)
            .first()
            .map(|(i, _)| *i)
            .or(if self.list.is_empty() { None } else { Some(0) })
    }

    /// The layer a pinned viewer starts on.
    pub fn pinned(&mut self, now: Instant, pin: Pin) -> Option<LayerId> {
        let ranked = self.ranked(now);
        let bitrates: Vec<u64> = ranked.iter().map(|(_, b)| *b).collect();
        let rank = LayerChooser::new().choose(now, &bitrates, None, None, pin);
        ranked
            .get(rank)
            .map(|(i, _)| *i)
            .or_else(|| self.lowest(now))
    }

    /// The rid (or the index, without rids) of a layer, for logs.
    pub fn name(&self, id: LayerId) -> String {
        match self.list.get(id).and_then(|l| l.rid) {
            Some(rid) => rid.to_string(),
            None => format!("#{id}"),
        }
    }
}

/// One viewer's video layer state.
#[derive(Default)]
pub(crate) struct ViewerLayer {
    /// The layer being forwarded now (`None`: not started yet, or restarting).
    pub current: Option<LayerId>,
    /// The layer wanted; differs from `current` while a switch waits for its keyframe.
    pub target: Option<LayerId>,
    pub chooser: LayerChooser,
    pub pin: Pin,
    /// The latest bandwidth estimate for this viewer (TWCC from its engine, or REMB).
    pub estimate: Option<u64>,
    /// The estimate comes from TWCC (REMB reports are then ignored).
    pub twcc: bool,
    /// When the pending switch was asked for (for the switch-time log and metric).
    pub switch_asked: Option<Instant>,
    /// VP8 picture ids continuing across switches.
    pub vp8: PictureIdMap,
    /// Last (minimum, desired) handed to the engine's bandwidth estimator.
    pub bwe_set: Option<(u64, u64)>,
    /// When the estimator is next restarted from its estimate to probe again (below the top
    /// layer only).
    pub probe_at: Option<Instant>,
}

/// A viewer below the top layer has its link probed this often, so that capacity that appears
/// later (a cap lifted, a congested Wi-Fi recovering) is discovered even while the viewer sends
/// only a low layer (libwebrtc's ALR probing does the same for its own sender).
pub(crate) const PROBE_EVERY: Duration = Duration::from_secs(4);

impl ViewerLayer {
    pub fn new(pin: Pin) -> Self {
        Self {
            pin,
            ..Self::default()
        }
    }

    /// Move to `layer` now (its keyframe is here): the next packets continue the viewer's
    /// picture ids.
    pub fn switch_to(&mut self, layer: LayerId) {
        self.current = Some(layer);
        self.target = Some(layer);
        self.vp8.restart();
    }

    /// Forget the layers (a new publisher): start over on the lowest.
    pub fn reset(&mut self) {
        self.current = None;
        self.target = None;
        self.switch_asked = None;
        self.vp8.restart();
    }

    /// The descriptor patch that keeps this viewer's VP8 picture ids continuous, if the packet
    /// needs one. Packets without a picture id pass untouched.
    pub fn vp8_patch(&mut self, payload: &[u8]) -> Option<Vp8Patch> {
        let descriptor = Vp8Descriptor::parse(payload).ok()?;
        let picture_id = descriptor.picture_id()?;
        // RFC 7741: X (byte 0) -> I (byte 1) -> M (byte 2) marks a 15-bit picture id.
        let wide = payload.len() > 2 && payload[0] & payload[1] & payload[2] & 0x80 != 0;
        let rewritten = self.vp8.map(picture_id, wide, descriptor.tl0_pic_idx());
        if !rewritten.changed {
            return None;
        }
        let mut builder = descriptor.patch().picture_id(rewritten.picture_id);
        if let Some(t) = rewritten.tl0_pic_idx {
            builder = builder.tl0_pic_idx(t);
        }
        builder.build().ok()
    }
}

/// What a viewer's bandwidth estimator should aim for: keep enough traffic (media plus
/// padding) to discover the next layer up, and probe towards the top layer.
pub(crate) fn bwe_goals(ranked: &[(LayerId, u64)], current_rank: Option<usize>) -> (u64, u64) {
    let top = ranked.last().map_or(0, |(_, b)| *b);
    let next = current_rank
        .and_then(|r| ranked.get(r + 1))
        .map_or(0, |(_, b)| *b);
    // Round up coarsely so meter noise does not reconfigure the estimator every tick.
    let round = |b: u64, step: u64| b.div_ceil(step) * step;
    (
        round(next * 12 / 10, 100_000),
        round(top * 13 / 10, 250_000),
    )
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary epoch
mod tests {
    use super::*;

    #[test]
    fn layers_are_learned_by_ssrc_and_ranked_by_bitrate() {
        let t0 = Instant::now();
        let mut l = Layers::new(Duration::from_millis(300));
        let (q, h, f) = (Rid::from("q"), Rid::from("h"), Rid::from("f"));
        let ids: Vec<_> = [(3u32, f), (1, q), (2, h)]
            .iter()
            .map(|(s, r)| l.classify(Ssrc::from(*s), Some(*r), t0).unwrap())
            .collect();
        assert_eq!(ids, vec![0, 1, 2]);
        for (id, bytes) in [(0usize, 6_000usize), (1, 600), (2, 2_000)] {
            l.list[id].meter.record(t0, bytes);
        }
        let order: Vec<LayerId> = l.ranked(t0).iter().map(|(i, _)| *i).collect();
        assert_eq!(order, vec![1, 2, 0], "q < h < f by bitrate");
        assert_eq!(l.lowest(t0), Some(1));
        // A rid that comes back with a new SSRC keeps its layer.
        assert_eq!(l.classify(Ssrc::from(9), Some(q), t0), Some(1));
    }

    #[test]
    fn a_second_ssrc_without_rid_is_ignored_while_the_first_is_active() {
        let t0 = Instant::now();
        let mut l = Layers::new(Duration::from_millis(300));
        assert_eq!(l.classify(Ssrc::from(1), None, t0), Some(0));
        l.list[0].meter.record(t0, 100);
        assert_eq!(l.classify(Ssrc::from(2), None, t0), None);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(l.classify(Ssrc::from(2), None, later), Some(0));
    }

    /// A VP8 payload with a 15-bit picture id, TL0PICIDX and TID (as libwebrtc sends).
    fn vp8_payload(picture_id: u16, tl0: u8) -> Vec<u8> {
        vec![
            0x90,
            0xe0,
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            0x20,
            0x10,
            0x02,
            0x00,
        ]
    }

    fn expected_patch(payload: &[u8], picture_id: u16, tl0: u8) -> Vp8Patch {
        Vp8Descriptor::parse(payload)
            .unwrap()
            .patch()
            .picture_id(picture_id)
            .tl0_pic_idx(tl0)
            .build()
            .unwrap()
    }

    #[test]
    fn vp8_picture_ids_continue_across_a_layer_switch() {
        let mut v = ViewerLayer::default();
        v.switch_to(0);
        // The first layer passes through untouched.
        assert_eq!(v.vp8_patch(&vp8_payload(500, 20)), None);
        assert_eq!(v.vp8_patch(&vp8_payload(501, 21)), None);
        // Switched to a layer numbering its pictures from 9000: rewritten to continue at 502.
        v.switch_to(1);
        let p = vp8_payload(9_000, 77);
        assert_eq!(v.vp8_patch(&p), Some(expected_patch(&p, 502, 22)));
        let p = vp8_payload(9_001, 78);
        assert_eq!(v.vp8_patch(&p), Some(expected_patch(&p, 503, 23)));
        // A payload without a descriptor extension is left alone.
        assert_eq!(v.vp8_patch(&[0x10, 0x02, 0x00]), None);
    }

    #[test]
    fn estimator_goals_reach_for_the_next_and_the_top_layer() {
        let ranked = [(1, 150_000), (2, 500_000), (0, 1_500_000)];
        assert_eq!(bwe_goals(&ranked, Some(0)), (600_000, 2_000_000));
        assert_eq!(bwe_goals(&ranked, Some(2)), (0, 2_000_000));
    }
}
