//! Simulcast: a stream's video layers (each viewer's place among them is `viewer::layer`).
//!
//! A stream's video arrives as one or more layers (one per SSRC: rid-based simulcast sends up to
//! three; a plain publisher sends one). Every layer keeps its own keyframe cache, keyframe
//! request coalescer and bitrate meter. A viewer receives exactly one layer at a time: the
//! lowest when it starts, then whatever [`media_core::layers::LayerChooser`] picks from its
//! bandwidth estimate (or its pin). A switch is armed by setting the viewer's target and asking
//! the target layer for a keyframe; it happens on that keyframe, with sequence numbers, RTP
//! time and VP8 picture ids continuing across it (see `viewer::step`).

use std::time::{Duration, Instant};

use media_core::keyframe::KeyframeCoalescer;
use media_core::layers::{LayerChooser, Pin, RateMeter};
use media_core::timeline::MAX_LAYERS;
use str0m::media::Rid;
use str0m::rtp::Ssrc;

use super::cache::KeyframeCache;
use crate::ids::LayerId;

/// A layer that sent nothing for this long is inactive: it is not chosen, and a viewer on it
/// is moved to another.
pub(super) const INACTIVE_AFTER: Duration = Duration::from_millis(1_500);

/// How often every viewer's layer choice is re-evaluated.
pub(crate) const EVALUATE_EVERY: Duration = Duration::from_millis(250);

/// One of the publisher's video encodings.
pub(super) struct Layer {
    pub ssrc: Ssrc,
    rid: Option<Rid>,
    /// The video since this layer's last keyframe, for starting viewers at once.
    pub cache: KeyframeCache,
    pub keyframes: KeyframeCoalescer,
    pub meter: RateMeter,
}

/// The current source's video layers.
pub(super) struct Layers {
    list: Vec<Layer>,
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

    /// No video arrived yet from the current source.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A layer by index.
    pub fn get(&self, id: LayerId) -> Option<&Layer> {
        self.list.get(id)
    }

    /// A layer by index, to record into.
    pub fn get_mut(&mut self, id: LayerId) -> Option<&mut Layer> {
        self.list.get_mut(id)
    }

    /// Every layer, by index.
    pub fn iter(&self) -> impl Iterator<Item = &Layer> {
        self.list.iter()
    }

    /// Every layer, by index, to poll.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Layer> {
        self.list.iter_mut()
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
}
