//! Keyframes: requests coalesced per layer (to the publisher, or up the feed), viewers started
//! from a layer's keyframe cache, and the paced replay of that cache.

use std::time::Instant;

use super::{Core, CoreOutput};
use crate::ids::{LayerId, PeerId, StreamId};
use crate::stream::{compressed_times, replay_rate, CachedPacket, LONG_CACHE};
use crate::types::CloseReason;
use crate::types::PeerBroken;
use crate::viewer::Queued;

impl Core {
    /// Start a viewer on `layer`'s cached group of pictures: the keyframe and everything
    /// since, with timestamps compressed to end at the live edge (`compressed_times`), then
    /// live packets follow in one continuous sequence. Returns whether it started.
    pub(super) fn start_from_cache(
        &mut self,
        id: PeerId,
        stream_id: &StreamId,
        layer: LayerId,
    ) -> bool {
        let now = self.last_now;
        let Some(stream) = self.streams.get(stream_id) else {
            return false;
        };
        let generation = stream.generation();
        let Some(cache) = stream.cache(layer) else {
            return false;
        };
        let cached = cache.packets();
        if cached.is_empty() {
            return false;
        }
        let span = cache.span();
        let rate = replay_rate(cache.bytes(), span);
        let times = compressed_times(cached);
        let queue: Vec<Queued> = cached
            .iter()
            .zip(times)
            .map(|(p, (time, wallclock))| Queued {
                generation,
                packet: CachedPacket {
                    time,
                    wallclock,
                    ..p.clone()
                },
            })
            .collect();
        let packets = queue.len();
        let keyframe_packets = cached
            .iter()
            .take_while(|p| p.time == cached[0].time)
            .count();
        let Some(viewer) = self.peers.get_mut(&id).and_then(|p| p.viewer_of(stream_id)) else {
            return false;
        };
        if !viewer.start_replay(layer, queue, keyframe_packets, rate, now) {
            return false;
        }
        self.stats.cache_starts += 1;
        tracing::debug!(peer = %id, layer, packets, ?span, "viewer starts from the keyframe cache");
        // A long group takes a while to replay even when paced: ask for a fresh keyframe too
        // (coalesced); the viewer jumps to it when it arrives.
        if span > LONG_CACHE {
            self.request_keyframe(stream_id, Some(layer));
        }
        self.pump_replay(id, now);
        true
    }

    /// Send a viewer's queued replay packets (of every slot) that are due at `now`, at each
    /// replay's rate.
    pub(super) fn pump_replay(&mut self, id: PeerId, now: Instant) {
        // Bounded: one call sends at most what the rates allow since the last one.
        for _ in 0..100_000 {
            let Some(peer) = self.peers.get_mut(&id) else {
                return;
            };
            let (rtc, slots) = peer.all_parts();
            let mut next = Ok(None);
            for slot in slots.iter_mut() {
                next = slot.viewer.replay_next(rtc, now);
                if !matches!(next, Ok(None)) {
                    break;
                }
            }
            match next {
                Ok(None) => return,
                Ok(Some(true)) => self.stats.packets_forwarded += 1,
                Ok(Some(false)) => {}
                Err(PeerBroken) => {
                    self.remove_peer(id, CloseReason::Failed);
                    return;
                }
            }
            // str0m's contract: drain after every mutation.
            if let Err(PeerBroken) = self.drain_peer(id) {
                self.remove_peer(id, CloseReason::Failed);
                return;
            }
        }
    }

    /// A viewer (or the SFU) wants a keyframe on `layer` of `stream` (`None`: every layer):
    /// coalesced per layer.
    pub(super) fn request_keyframe(&mut self, stream: &StreamId, layer: Option<LayerId>) {
        let now = self.last_now;
        self.stats.keyframe_requests_in += 1;
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        for layer in s.keyframe_requests(layer, now) {
            self.send_keyframe_request(stream, layer);
        }
    }

    /// Send the keyframe requests whose coalescing interval ended.
    pub(super) fn poll_keyframes(&mut self, stream: &StreamId, now: Instant) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        for layer in s.due_keyframe_requests(now) {
            self.send_keyframe_request(stream, layer);
        }
    }

    fn send_keyframe_request(&mut self, stream: &StreamId, layer: Option<LayerId>) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        let ssrc = layer.and_then(|l| s.layer_ssrc(l));
        let Some(pid) = s.publisher() else {
            if s.is_fed() {
                // Fed from above: the node above coalesces again and asks its source.
                self.stats.keyframe_requests_sent += 1;
                self.out
                    .push_back(CoreOutput::FeedKeyframe(stream.clone(), layer));
            }
            return;
        };
        let Some(publisher) = self.peers.get_mut(&pid) else {
            return;
        };
        if publisher.request_keyframe(ssrc) {
            self.stats.keyframe_requests_sent += 1;
            self.dirty.push_back(pid);
        }
    }
}
