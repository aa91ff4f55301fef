//! One viewer's place among its stream's video layers: which it receives, which it wants,
//! its bandwidth estimate, and the VP8 picture ids that continue across switches. A switch is
//! armed by setting the target and asking the target layer for a keyframe; it happens on that
//! keyframe (see `step`), with sequence numbers, RTP time and picture ids continuing across it.

use std::time::{Duration, Instant};

use media_core::layers::{LayerChooser, Pin};
use media_core::vp8ids::PictureIdMap;
use str0m::rtp::{Vp8Descriptor, Vp8Patch};

use crate::ids::LayerId;

/// One viewer's video layer state.
#[derive(Default)]
pub(crate) struct ViewerLayer {
    /// The layer being forwarded now (`None`: not started yet, or restarting).
    current: Option<LayerId>,
    /// The layer wanted; differs from `current` while a switch waits for its keyframe.
    target: Option<LayerId>,
    chooser: LayerChooser,
    pin: Pin,
    /// The latest bandwidth estimate for this viewer (TWCC from its engine, or REMB).
    estimate: Option<u64>,
    /// The estimate comes from TWCC (REMB reports are then ignored).
    twcc: bool,
    /// When the pending switch was asked for (for the switch-time log and metric).
    switch_asked: Option<Instant>,
    /// VP8 picture ids continuing across switches.
    vp8: PictureIdMap,
    /// Last (minimum, desired) handed to the engine's bandwidth estimator.
    bwe_set: Option<(u64, u64)>,
    /// When the estimator is next restarted from its estimate to probe again (below the top
    /// layer only).
    probe_at: Option<Instant>,
}

/// A viewer below the top layer has its link probed this often, so that capacity that appears
/// later (a cap lifted, a congested Wi-Fi recovering) is discovered even while the viewer sends
/// only a low layer (libwebrtc's ALR probing does the same for its own sender).
const PROBE_EVERY: Duration = Duration::from_secs(4);

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
fn bwe_goals(ranked: &[(LayerId, u64)], current_rank: Option<usize>) -> (u64, u64) {
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

/// What one evaluation of a viewer's layer asks of the core.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Evaluation {
    /// The viewer is on another layer: ask this one for a keyframe (coalesced per layer; a
    /// lost request is sent again while pending).
    pub keyframe_from: Option<LayerId>,
    /// Hand the engine's estimator these goals (minimum, desired bit/s), and restart it from
    /// this estimate to probe again.
    pub bwe: Option<((u64, u64), Option<u64>)>,
}

impl ViewerLayer {
    pub fn current(&self) -> Option<LayerId> {
        self.current
    }

    pub fn target(&self) -> Option<LayerId> {
        self.target
    }

    /// The player's choice of layer.
    pub fn pin(&self) -> Pin {
        self.pin
    }

    /// The player chose a layer (or `Auto`).
    pub fn set_pin(&mut self, pin: Pin) {
        self.pin = pin;
    }

    /// The layer a keyframe request from this viewer is for.
    pub fn wanted(&self) -> Option<LayerId> {
        self.current.or(self.target)
    }

    /// Give a viewer that has no target yet its first (`start`: the stream's choice for it).
    pub fn ensure_target(&mut self, start: impl FnOnce(Pin) -> Option<LayerId>) {
        if self.target.is_none() {
            self.target = start(self.pin);
        }
    }

    /// When the switch now happening was asked for (once).
    pub fn take_switch_asked(&mut self) -> Option<Instant> {
        self.switch_asked.take()
    }

    /// A bandwidth estimate from the viewer's engine: TWCC always wins; REMB only where the
    /// viewer gives no TWCC feedback (aiortc).
    pub fn on_estimate(&mut self, estimate: u64, twcc: bool) {
        if twcc {
            self.estimate = Some(estimate);
            self.twcc = true;
        } else if !self.twcc {
            self.estimate = Some(estimate);
        }
    }

    /// Choose this viewer's layer among `ranked` (active layers, lowest bitrate first).
    /// `bitrates` are `ranked`'s, in the same order (worked out once per stream).
    pub fn evaluate(
        &mut self,
        now: Instant,
        ranked: &[(LayerId, u64)],
        bitrates: &[u64],
        simulcast: bool,
    ) -> Evaluation {
        let mut out = Evaluation::default();
        let current_rank = self
            .current
            .and_then(|c| ranked.iter().position(|(id, _)| *id == c));
        // A viewer on a layer that went quiet counts as starting over.
        let rank = self
            .chooser
            .choose(now, bitrates, current_rank, self.estimate, self.pin);
        let want = ranked[rank].0;
        if self.target != Some(want) {
            self.target = Some(want);
            self.switch_asked = (self.current != Some(want)).then_some(now);
        }
        if self.current.is_some() && self.current != Some(want) {
            out.keyframe_from = Some(want);
        }
        if simulcast && self.pin == Pin::Auto {
            let goals = bwe_goals(ranked, current_rank);
            let below_top = current_rank.is_some_and(|r| r + 1 < ranked.len());
            // Re-probe from the current estimate now and then while below the top layer:
            // str0m probes on its own only at start and after large drops.
            let reprobe =
                below_top && self.estimate.is_some() && self.probe_at.is_some_and(|t| now >= t);
            if below_top && (reprobe || self.probe_at.is_none()) {
                self.probe_at = Some(now + PROBE_EVERY);
            }
            if self.bwe_set != Some(goals) || reprobe {
                self.bwe_set = Some(goals);
                out.bwe = Some((goals, self.estimate.filter(|_| reprobe)));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
