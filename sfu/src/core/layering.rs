//! Per-viewer layer choice: bandwidth estimates in, switch targets and estimator goals out.
//!
//! Every [`EVALUATE_EVERY`] each viewer of a stream is given a target layer by its
//! [`media_core::layers::LayerChooser`] (`ViewerLayer::evaluate`). A target that differs from
//! the current layer arms a switch: the target layer is asked for a keyframe (coalesced per
//! layer) and forwarding moves the viewer when it arrives. The viewer's estimator is told how
//! much traffic to keep (enough to discover the next layer up) and what to probe for (the top
//! layer), so that an estimate can grow past what the current layer sends.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use str0m::bwe::{Bitrate, BweKind};

use super::Core;
use crate::ids::{LayerId, PeerId, StreamId};
use crate::stream::EVALUATE_EVERY;
use crate::types::{Pin, SfuError};

impl Core {
    /// A viewer's engine produced a bandwidth estimate (TWCC) or the viewer reported one (REMB).
    pub(super) fn on_estimate(&mut self, id: PeerId, kind: BweKind) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let (estimate, twcc) = match kind {
            BweKind::Twcc { estimate, .. } => (estimate.as_u64(), true),
            BweKind::Remb { estimate, .. } => (estimate.as_u64(), false),
            _ => return,
        };
        // A stage viewer's estimate is the session's: its video slots share it.
        let (_, slots) = peer.all_parts();
        let videos = slots.iter().filter(|s| s.viewer.has_video()).count().max(1) as u64;
        for slot in slots.iter_mut().filter(|s| s.viewer.has_video()) {
            slot.viewer.layer_mut().on_estimate(estimate / videos, twcc);
        }
    }

    /// Change a viewer's layer preference (the player's quality menu).
    pub fn set_layer(&mut self, peer: PeerId, pin: Pin) -> Result<(), SfuError> {
        let p = self.peers.get_mut(&peer).ok_or(SfuError::UnknownPeer)?;
        let (_, slots) = p.all_parts();
        if slots.is_empty() {
            return Err(SfuError::Unusable(
                "a layer can only be chosen for a viewing session".into(),
            ));
        }
        let streams: Vec<StreamId> = slots.iter().map(|s| s.stream.clone()).collect();
        for slot in slots.iter_mut() {
            slot.viewer.layer_mut().set_pin(pin);
        }
        for stream in streams {
            if let Some(s) = self.streams.get_mut(&stream) {
                // Re-evaluate at once rather than at the next tick.
                s.set_next_evaluation(Some(self.last_now));
            }
        }
        self.evaluate_layers(self.last_now);
        Ok(())
    }

    /// Give each viewer of each stream whose evaluation is due its target layer.
    pub(super) fn evaluate_layers(&mut self, now: Instant) {
        let mut requests: Vec<(StreamId, LayerId)> = Vec::new();
        for (stream_id, stream) in self.streams.iter_mut() {
            if stream.viewers().is_empty() || !stream.has_layers() {
                stream.set_next_evaluation(None);
                continue;
            }
            if stream.next_evaluation().is_some_and(|t| t > now) {
                continue;
            }
            stream.set_next_evaluation(Some(now + EVALUATE_EVERY));
            let ranked = stream.ranked_layers(now);
            if ranked.is_empty() {
                continue;
            }
            let simulcast = stream.simulcast();
            let bitrates: Vec<u64> = ranked.iter().map(|(_, b)| *b).collect();
            for &sid in stream.viewers() {
                let Some(sub) = self.peers.get_mut(&sid).filter(|p| p.is_connected()) else {
                    continue;
                };
                let Some((rtc, viewer)) = sub.parts(stream_id).filter(|(_, v)| v.has_video())
                else {
                    continue;
                };
                let evaluation = viewer
                    .layer_mut()
                    .evaluate(now, &ranked, &bitrates, simulcast);
                if let Some(want) = evaluation.keyframe_from {
                    if !requests.iter().any(|(s, w)| s == stream_id && *w == want) {
                        // Repeated while pending: coalesced per layer, and a lost request is
                        // sent again.
                        requests.push((stream_id.clone(), want));
                    }
                }
                if let Some(((min, max), reprobe)) = evaluation.bwe {
                    let set = catch_unwind(AssertUnwindSafe(|| {
                        let mut bwe = rtc.bwe();
                        bwe.set_bitrate(Bitrate::bps(min), Bitrate::bps(max));
                        if let Some(e) = reprobe {
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
        for (stream, layer) in requests {
            self.request_keyframe(&stream, Some(layer));
        }
    }
}
