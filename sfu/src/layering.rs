//! Per-viewer layer choice: bandwidth estimates in, switch targets and estimator goals out.
//!
//! Every [`EVALUATE_EVERY`] each viewer of a stream is given a target layer by its
//! [`media_core::layers::LayerChooser`]. A target that differs from the current layer arms a
//! switch: the target layer is asked for a keyframe (coalesced per layer) and `fanout::forward`
//! moves the viewer when it arrives. The viewer's estimator is told how much traffic to keep
//! (enough to discover the next layer up) and what to probe for (the top layer), so that an
//! estimate can grow past what the current layer sends.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use media_core::layers::Pin;
use str0m::bwe::{Bitrate, BweKind};

use crate::core::Sfu;
use crate::simulcast::{bwe_goals, EVALUATE_EVERY, PROBE_EVERY};
use crate::{PeerId, SfuError, StreamId};

impl Sfu {
    /// A viewer's engine produced a bandwidth estimate (TWCC) or the viewer reported one (REMB).
    pub(crate) fn on_estimate(&mut self, id: PeerId, kind: BweKind) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match kind {
            BweKind::Twcc { estimate, .. } => {
                peer.layer.estimate = Some(estimate.as_u64());
                peer.layer.twcc = true;
            }
            // REMB only where the viewer gives no TWCC feedback (aiortc).
            BweKind::Remb { estimate, .. } if !peer.layer.twcc => {
                peer.layer.estimate = Some(estimate.as_u64());
            }
            _ => {}
        }
    }

    /// Change a viewer's layer preference (the player's quality menu).
    pub fn set_layer(&mut self, peer: PeerId, pin: Pin) -> Result<(), SfuError> {
        let p = self.peers.get_mut(&peer).ok_or(SfuError::UnknownPeer)?;
        if p.is_publisher() {
            return Err(SfuError::Unusable(
                "a layer can only be chosen for a viewing session".into(),
            ));
        }
        p.layer.pin = pin;
        let stream = p.stream.clone();
        if let Some(s) = self.streams.get_mut(&stream) {
            // Re-evaluate at once rather than at the next tick.
            s.next_evaluation = Some(self.last_now);
        }
        self.evaluate_layers(self.last_now);
        Ok(())
    }

    /// Give each viewer of each stream whose evaluation is due its target layer.
    pub(crate) fn evaluate_layers(&mut self, now: Instant) {
        let mut requests: Vec<(StreamId, usize)> = Vec::new();
        for (stream_id, stream) in self.streams.iter_mut() {
            if stream.subscribers.is_empty() || stream.layers.list.is_empty() {
                stream.next_evaluation = None;
                continue;
            }
            if stream.next_evaluation.is_some_and(|t| t > now) {
                continue;
            }
            stream.next_evaluation = Some(now + EVALUATE_EVERY);
            let ranked = stream.layers.ranked(now);
            if ranked.is_empty() {
                continue;
            }
            let bitrates: Vec<u64> = ranked.iter().map(|(_, b)| *b).collect();
            for &sid in &stream.subscribers {
                let Some(sub) = self.peers.get_mut(&sid) else {
                    continue;
                };
                if !sub.connected || sub.out_video.is_none() {
                    continue;
                }
                let l = &mut sub.layer;
                let current_rank = l
                    .current
                    .and_then(|c| ranked.iter().position(|(id, _)| *id == c));
                // A viewer on a layer that went quiet counts as starting over.
                let rank = l
                    .chooser
                    .choose(now, &bitrates, current_rank, l.estimate, l.pin);
                let want = ranked[rank].0;
                if l.target != Some(want) {
                    l.target = Some(want);
                    l.switch_asked = (l.current != Some(want)).then_some(now);
                }
                if l.current.is_some()
                    && l.current != Some(want)
                    && !requests.iter().any(|(s, w)| s == stream_id && *w == want)
                {
                    // Repeated while pending: coalesced per layer, and a lost request is
                    // sent again.
                    requests.push((stream_id.clone(), want));
                }
                if stream.simulcast && l.pin == Pin::Auto {
                    let goals = bwe_goals(&ranked, current_rank);
                    let below_top = current_rank.is_some_and(|r| r + 1 < ranked.len());
                    // Re-probe from the current estimate now and then while below the top
                    // layer: str0m probes on its own only at start and after large drops.
                    let reprobe =
                        below_top && l.estimate.is_some() && l.probe_at.is_some_and(|t| now >= t);
                    if below_top && (reprobe || l.probe_at.is_none()) {
                        l.probe_at = Some(now + PROBE_EVERY);
                    }
                    if l.bwe_set != Some(goals) || reprobe {
                        l.bwe_set = Some(goals);
                        let estimate = l.estimate;
                        let rtc = &mut sub.rtc;
                        let set = catch_unwind(AssertUnwindSafe(|| {
                            let mut bwe = rtc.bwe();
                            bwe.set_bitrate(Bitrate::bps(goals.0), Bitrate::bps(goals.1));
                            if let (true, Some(e)) = (reprobe, estimate) {
                                bwe.reset(Bitrate::bps(e));
                            }
                        }));
                        if set.is_err() {
                            tracing::error!(peer = %sid, "engine panicked in BWE setup");
                        }
                        self.dirty.push_back(sid);
                    }
                }
            }
        }
        for (stream, layer) in requests {
            self.request_keyframe(&stream, Some(layer));
        }
    }
}
