//! Forwarding: one packet entering a stream (from its publisher or its feed) to every viewer
//! of its stream (and of its layer) and to every sink. Per viewer the decision is the pure
//! [`video_step`](crate::viewer::step::video_step); here it is carried out. The payload
//! (`Arc<[u8]>`) is shared, never copied; each viewer's engine gets the packet with its own
//! payload type, sequence number (continuous across sources, layer switches and keyframe
//! gating), rebased timestamp and VP8 picture ids, and protects it with its own SRTP context.

use std::collections::VecDeque;
use std::sync::Arc;

use str0m::rtp::RtpPacket;

use super::{Core, CoreOutput};
use crate::ids::{LayerId, PeerId, StreamId};
use crate::peer::Role;
use crate::sink::SinkPacket;
use crate::stats::{DropReason, SfuStats};
use crate::stream::{CachedPacket, Ingested, Ingress};
use crate::types::CloseReason;
use crate::types::PeerBroken;
use crate::viewer::step::{PacketFacts, Step};
use crate::viewer::{Cut, Outgoing, Queued};

/// What one forwarded packet left for after the viewer loop.
#[derive(Default)]
struct After {
    want_keyframe: bool,
    broken: Vec<PeerId>,
    from_cache: Vec<PeerId>,
    replaying: Vec<PeerId>,
    /// Viewers that switched layers: (viewer, old layer, when the switch was asked).
    switched: Vec<(PeerId, Option<LayerId>, Option<std::time::Instant>)>,
}

impl After {
    /// A live packet was handed to viewer `sid`'s engine with this result.
    fn wrote(
        &mut self,
        sid: PeerId,
        result: Result<bool, PeerBroken>,
        stats: &mut SfuStats,
        dirty: &mut VecDeque<PeerId>,
    ) {
        match result {
            Ok(true) => {
                stats.packets_forwarded += 1;
                dirty.push_back(sid);
            }
            Ok(false) => {}
            Err(PeerBroken) => self.broken.push(sid),
        }
    }
}

impl Core {
    /// One RTP packet from a publisher's engine.
    pub(super) fn forward(&mut self, from: PeerId, packet: RtpPacket) {
        let Some(publisher) = self.peers.get(&from) else {
            return;
        };
        let Role::Publisher { generation } = publisher.role() else {
            return;
        };
        let stream_id = publisher.stream().clone();
        if self.streams.get(&stream_id).and_then(|s| s.publisher()) != Some(from) {
            return;
        }
        self.forward_ingress(
            &stream_id,
            Ingress {
                generation,
                pt: *packet.header.payload_type,
                ssrc: packet.header.ssrc,
                rid: packet.header.ext_vals.rid,
                layer: None,
                seq: *packet.seq_no,
                ticks: packet.time.numer(),
                wallclock: packet.timestamp,
                marker: packet.header.marker,
                ext_vals: &packet.header.ext_vals,
                payload: packet.payload,
            },
        );
    }

    /// Forward one packet of `stream_id` (from its publisher, or from its feed).
    pub(super) fn forward_ingress(&mut self, stream_id: &StreamId, packet: Ingress<'_>) {
        let now = self.last_now;
        let Some(stream) = self.streams.get_mut(stream_id) else {
            return;
        };
        let ingested = match stream.ingest(&packet, now) {
            Ok(Some(i)) => i,
            Ok(None) => return,
            Err(reason) => {
                self.stats.drop(reason);
                return;
            }
        };
        if ingested.layer.is_none() && self.muted.contains(stream_id) {
            return;
        }
        if !stream.sinks().is_empty() {
            self.tap_sinks(stream_id, &packet, &ingested);
        }
        let out = Outgoing {
            generation: packet.generation,
            params: ingested.params,
            seq: packet.seq,
            time: ingested.time,
            wallclock: packet.wallclock,
            marker: packet.marker,
            ext_vals: &ingested.ext_vals,
            payload: &packet.payload,
            red: ingested.red,
            // One copy per packet, shared by every viewer without RED.
            primary: ingested
                .red
                .then(|| media_core::red::primary(&packet.payload))
                .flatten()
                .map(|(_, p)| Arc::from(p)),
        };
        let after = match ingested.layer {
            Some(layer) => self.send_to_video_viewers(stream_id, layer, ingested.keyframe, &out),
            None => self.send_to_audio_viewers(stream_id, &out),
        };
        self.finish(stream_id, ingested.layer.unwrap_or(0), after);
    }

    fn send_to_audio_viewers(&mut self, stream_id: &StreamId, out: &Outgoing<'_>) -> After {
        let mut after = After::default();
        let Some(stream) = self.streams.get(stream_id) else {
            return after;
        };
        for &sid in stream.viewers() {
            let Some(sub) = self.peers.get_mut(&sid).filter(|p| p.is_connected()) else {
                continue;
            };
            let Some((rtc, viewer)) = sub.parts(stream_id).filter(|(_, v)| v.has_audio()) else {
                continue;
            };
            let written = viewer.write(rtc, false, out);
            after.wrote(sid, written, &mut self.stats, &mut self.dirty);
        }
        after
    }

    fn send_to_video_viewers(
        &mut self,
        stream_id: &StreamId,
        layer: LayerId,
        keyframe: bool,
        out: &Outgoing<'_>,
    ) -> After {
        let now = self.last_now;
        let mut after = After::default();
        let Some(stream) = self.streams.get_mut(stream_id) else {
            return after;
        };
        let facts = {
            let cached = stream.cache(layer).map_or(&[][..], |c| c.packets());
            PacketFacts {
                layer,
                keyframe,
                cache_ready: !cached.is_empty(),
                late_start: keyframe && cached.len() > 1 && cached[0].seq == out.seq,
            }
        };
        let (viewers, mut start) = stream.viewers_with_layers();
        for &sid in viewers {
            let Some(sub) = self.peers.get_mut(&sid).filter(|p| p.is_connected()) else {
                continue;
            };
            let Some((rtc, viewer)) = sub.parts(stream_id).filter(|(_, v)| v.has_video()) else {
                continue;
            };
            viewer.layer_mut().ensure_target(|pin| start.pick(pin, now));
            match viewer.video_step(facts) {
                Step::Skip => continue,
                Step::AwaitKeyframe => {
                    self.stats.drop(DropReason::AwaitingKeyframe);
                    after.want_keyframe = true;
                    continue;
                }
                Step::StartFromCache => {
                    after.from_cache.push(sid);
                    continue;
                }
                Step::Queue => {
                    viewer.queue(Queued {
                        generation: out.generation,
                        packet: CachedPacket {
                            params: out.params,
                            seq: out.seq,
                            time: out.time,
                            wallclock: out.wallclock,
                            marker: out.marker,
                            ext_vals: out.ext_vals.clone(),
                            payload: out.payload.clone(),
                        },
                    });
                    after.replaying.push(sid);
                    continue;
                }
                Step::Cut { switch, late } => {
                    if switch {
                        let old = viewer.layer().current();
                        let asked = viewer.layer_mut().take_switch_asked();
                        after.switched.push((sid, old, asked));
                    }
                    match viewer.cut(rtc, layer, late) {
                        Ok(Cut::Live(n)) => self.stats.packets_forwarded += n as u64,
                        Ok(Cut::FromCache(n)) => {
                            self.stats.packets_forwarded += n as u64;
                            after.from_cache.push(sid);
                            continue;
                        }
                        Err(PeerBroken) => {
                            after.broken.push(sid);
                            continue;
                        }
                    }
                }
                Step::Send => {}
            }
            let written = viewer.write(rtc, true, out);
            after.wrote(sid, written, &mut self.stats, &mut self.dirty);
        }
        after
    }

    /// What the viewer loop left: switch logs, broken peers, cache starts, replays, and a
    /// keyframe request for viewers waiting on one.
    fn finish(&mut self, stream_id: &StreamId, layer: LayerId, after: After) {
        let now = self.last_now;
        for (sid, old, asked) in after.switched {
            self.stats.layer_switches += 1;
            let took = asked.map(|t| now.saturating_duration_since(t));
            let (from_name, to_name) = match self.streams.get(stream_id) {
                Some(s) => (old.map(|o| s.layer_name(o)), s.layer_name(layer)),
                None => (None, String::new()),
            };
            tracing::debug!(peer = %sid, from = ?from_name, to = %to_name, ?took, "layer switch");
        }
        for sid in after.broken {
            self.remove_peer(sid, CloseReason::Failed);
        }
        for sid in after.from_cache {
            self.start_from_cache(sid, stream_id, layer);
        }
        for sid in after.replaying {
            self.pump_replay(sid, now);
        }
        if after.want_keyframe {
            self.request_keyframe(stream_id, Some(layer));
        }
    }

    /// Copy a packet entering `stream` to every sink attached to it.
    fn tap_sinks(&mut self, stream: &StreamId, packet: &Ingress<'_>, ingested: &Ingested) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        if ingested.red && media_core::red::primary(&packet.payload).is_none() {
            return; // a sink gets RED as its primary block: none here
        }
        let sinks: Vec<_> = s.sinks().iter().copied().collect();
        self.stats.relay_packets += sinks.len() as u64;
        for sink in sinks {
            self.out.push_back(CoreOutput::Sink(SinkPacket {
                sink,
                stream: stream.clone(),
                layer: ingested.layer,
                // RED is announced as its primary codec; the sink reduces the payload.
                pt: *ingested.params.pt(),
                red: ingested.red,
                seq: packet.seq as u16,
                time: ingested.time,
                marker: packet.marker,
                payload: packet.payload.clone(),
                at: self.last_now,
                // str0m reads the level as -dBov, negative (-127..=0).
                level: packet
                    .ext_vals
                    .audio_level
                    .map(|l| l.unsigned_abs().min(127)),
            }));
        }
    }
}
