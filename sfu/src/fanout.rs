//! Forwarding: one publisher packet to every viewer of its stream (and of its layer), viewers
//! started from a layer's keyframe cache, paced replays, layer switches on keyframes, and
//! coalesced keyframe requests per layer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_core::keyframe::Decision;
use media_core::keyframe_start::{starts_keyframe, VideoFormat};
use str0m::format::{Codec, PayloadParams};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};
use str0m::Rtc;

use crate::core::Sfu;
use crate::forward::{compressed_times, replay_rate, CachedPacket, OutTrack, Queued, LONG_CACHE};
use crate::peer::{PeerBroken, Role};
use crate::simulcast::{LayerId, ViewerLayer};
use crate::stats::DropReason;
use crate::{CloseReason, Output, PeerId, SfuEvent, StreamId};
use media_core::layers::Pin;

/// One packet entering a stream: from its publisher's engine, or from a relay upstream.
pub(crate) struct Ingress<'a> {
    pub stream: StreamId,
    pub generation: u64,
    pub pt: u8,
    pub ssrc: str0m::rtp::Ssrc,
    pub rid: Option<str0m::media::Rid>,
    /// The video layer when the source says it (a relay's track); else learned from SSRC/rid.
    pub layer: Option<LayerId>,
    /// Extended sequence number and RTP time.
    pub seq: u64,
    pub ticks: u64,
    pub wallclock: Instant,
    pub marker: bool,
    pub ext_vals: &'a ExtensionValues,
    pub payload: Arc<[u8]>,
}

/// What every subscriber's copy of a forwarded packet shares.
pub(crate) struct Outgoing<'a> {
    pub generation: u64,
    pub params: PayloadParams,
    pub seq: u64,
    pub time: u32,
    pub wallclock: Instant,
    pub marker: bool,
    pub ext_vals: &'a ExtensionValues,
    pub payload: &'a Arc<[u8]>,
    /// The payload is RFC 2198 RED; `primary` is its primary block for viewers without RED.
    pub red: bool,
    pub primary: Option<Arc<[u8]>>,
}

/// A cached keyframe's first packets go to a new viewer at once; a large one (OBS: ~135
/// packets, 157 KB at 640x360) sent whole in one burst overflowed a webrtc-rs viewer's UDP
/// receive buffer (the kernel's `RcvbufErrors` rose), and a viewer without RTX then waited for
/// the next keyframe, which OBS sends every 2 s.
const KEYFRAME_BURST_PACKETS: usize = 32;
/// The rest of the cached keyframe is paced at this rate (or the replay rate when higher):
/// 100 more packets take about 25 ms.
const KEYFRAME_RATE_BPS: u64 = 40_000_000;

impl Sfu {
    /// Start a viewer on `layer`'s cached group of pictures: the keyframe and everything since,
    /// with timestamps compressed to end at the live edge (`forward::compressed_times`), then
    /// live packets follow in one continuous sequence. Returns whether it started.
    pub(crate) fn start_from_cache(&mut self, id: PeerId, layer: LayerId) -> bool {
        let now = self.last_now;
        let Some(stream_id) = self.peers.get(&id).map(|p| p.stream.clone()) else {
            return false;
        };
        let Some(stream) = self.streams.get(&stream_id) else {
            return false;
        };
        let generation = stream.generation;
        let Some(cache) = stream.layers.list.get(layer).map(|l| &l.cache) else {
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
        {
            let Some(sub) = self.peers.get_mut(&id) else {
                return false;
            };
            let Some(track) = sub.out_video.as_mut() else {
                return false;
            };
            if !sub.needs_keyframe {
                return false;
            }
            sub.needs_keyframe = false;
            sub.layer.switch_to(layer);
            track.seq.restart();
            sub.replay.clear();
            sub.replay_partial = None;
            sub.replay_burst = keyframe_packets.min(KEYFRAME_BURST_PACKETS);
            sub.replay_keyframe = keyframe_packets - sub.replay_burst;
            sub.replay.extend(queue);
            sub.replay_at = now;
            sub.replay_rate = rate;
        }
        self.stats.cache_starts += 1;
        tracing::debug!(peer = %id, layer, packets, ?span, "viewer starts from the keyframe cache");
        // A long group takes a while to replay even when paced: ask for a fresh keyframe too
        // (coalesced); the viewer jumps to it when it arrives.
        if span > LONG_CACHE {
            self.request_keyframe(&stream_id, Some(layer));
        }
        self.pump_replay(id, now);
        true
    }

    /// Send a viewer's queued replay packets that are due at `now`, at its replay rate.
    pub(crate) fn pump_replay(&mut self, id: PeerId, now: Instant) {
        // Bounded: one call sends at most what the rate allows since the last one.
        for _ in 0..100_000 {
            let Some(sub) = self.peers.get_mut(&id) else {
                return;
            };
            if sub.replay_at > now {
                return;
            }
            let Some(q) = sub.replay.pop_front() else {
                return;
            };
            if sub.replay_burst > 0 {
                // The front of the keyframe goes out at once, as a live keyframe would.
                sub.replay_burst -= 1;
            } else {
                let rate = if sub.replay_keyframe > 0 {
                    sub.replay_keyframe -= 1;
                    sub.replay_rate.max(KEYFRAME_RATE_BPS)
                } else {
                    sub.replay_rate
                };
                let bits = (q.packet.payload.len() as u64 + 40) * 8;
                sub.replay_at += Duration::from_nanos(bits * 1_000_000_000 / rate.max(1));
            }
            let Some(track) = sub.out_video.as_mut() else {
                sub.replay.clear();
                return;
            };
            let (marker, time) = (q.packet.marker, q.packet.time);
            match write_rtp(&mut sub.rtc, track, Some(&mut sub.layer), &q.outgoing()) {
                Ok(true) => self.stats.packets_forwarded += 1,
                Ok(false) => {}
                Err(PeerBroken) => {
                    self.remove_peer(id, CloseReason::Failed);
                    return;
                }
            }
            sub.replay_partial = (!marker).then_some(time);
            // str0m's contract: drain after every mutation.
            if let Err(PeerBroken) = self.drain_peer(id) {
                self.remove_peer(id, CloseReason::Failed);
                return;
            }
        }
    }

    /// A subscriber (or the SFU) wants a keyframe on `layer` of `stream` (`None`: every
    /// layer): coalesced per layer.
    pub(crate) fn request_keyframe(&mut self, stream: &StreamId, layer: Option<LayerId>) {
        let now = self.last_now;
        self.stats.keyframe_requests_in += 1;
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        let mut send = Vec::new();
        if s.layers.list.is_empty() {
            // Nothing received yet: ask the publisher's video as a whole.
            if s.keyframes_before_layers.request(now) == Decision::SendNow {
                send.push(None);
            }
        }
        for (i, l) in s.layers.list.iter_mut().enumerate() {
            if layer.is_some_and(|want| want != i) {
                continue;
            }
            if l.keyframes.request(now) == Decision::SendNow {
                send.push(Some(i));
            }
        }
        for layer in send {
            self.send_keyframe_request(stream, layer);
        }
    }

    /// Send the keyframe requests whose coalescing interval ended.
    pub(crate) fn poll_keyframes(&mut self, stream: &StreamId, now: Instant) {
        let Some(s) = self.streams.get_mut(stream) else {
            return;
        };
        let mut send = Vec::new();
        if s.keyframes_before_layers.poll(now) == Decision::SendNow {
            send.push(None);
        }
        for (i, l) in s.layers.list.iter_mut().enumerate() {
            if l.keyframes.poll(now) == Decision::SendNow {
                send.push(Some(i));
            }
        }
        for layer in send {
            self.send_keyframe_request(stream, layer);
        }
    }

    fn send_keyframe_request(&mut self, stream: &StreamId, layer: Option<LayerId>) {
        let Some(s) = self.streams.get(stream) else {
            return;
        };
        let ssrc = layer.and_then(|l| s.layers.list.get(l)).map(|l| l.ssrc);
        let Some(pid) = s.publisher else {
            if s.upstream.is_some() {
                // Fed by a relay: the upstream coalesces again and asks its publisher.
                let track = crate::relay::video_track(layer.unwrap_or(0));
                self.stats.keyframe_requests_sent += 1;
                self.out.push_back(Output::Event(SfuEvent::UpstreamKeyframe(
                    stream.clone(),
                    track,
                )));
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

    /// One RTP packet from a publisher, fanned out to every subscriber of its stream that
    /// receives its layer. The payload (`Arc<[u8]>`) is shared, never copied; each subscriber's
    /// engine gets the packet with its own payload type, sequence number (continuous across
    /// publishers, layer switches and keyframe gating), rebased timestamp and VP8 picture ids,
    /// and protects it with its own SRTP context.
    pub(crate) fn forward(&mut self, from: PeerId, packet: RtpPacket) {
        let Some(publisher) = self.peers.get(&from) else {
            return;
        };
        let Role::Publisher { generation } = publisher.role else {
            return;
        };
        let stream_id = publisher.stream.clone();
        if self.streams.get(&stream_id).map(|s| s.publisher) != Some(Some(from)) {
            return;
        }
        self.forward_ingress(Ingress {
            stream: stream_id,
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
        });
    }

    /// Forward one packet of a stream (from its publisher, or from a relay upstream).
    pub(crate) fn forward_ingress(&mut self, packet: Ingress<'_>) {
        let Ingress {
            stream: stream_id,
            generation,
            ..
        } = &packet;
        let (stream_id, generation) = (stream_id.clone(), *generation);
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return;
        };
        let pt = packet.pt;
        let Some(params) = stream
            .params
            .iter()
            .find(|p| *p.pt() == pt || p.red().map(|r| *r) == Some(pt))
            .copied()
        else {
            self.stats.drop(DropReason::UnknownPayloadType);
            return;
        };
        let red = *params.pt() != pt;
        let codec = params.spec().codec;
        let video = codec.is_video();
        let now = self.last_now;
        let ext_vals = forwarded_extensions(packet.ext_vals);
        let mut layer = 0;
        let mut keyframe = false;
        let ticks = if video {
            let classified = match packet.layer {
                Some(l) => stream.layers.relayed(l, now),
                None => stream.layers.classify(packet.ssrc, packet.rid, now),
            };
            let Some(l) = classified else {
                return;
            };
            layer = l;
            let ticks = stream
                .video_timeline
                .map_layer(generation, l, packet.ticks, now);
            keyframe = video_format(codec).is_some_and(|f| starts_keyframe(f, &packet.payload));
            let entry = &mut stream.layers.list[l];
            entry.meter.record(now, packet.payload.len());
            if keyframe {
                entry.keyframes.keyframe_seen();
                stream.keyframes_before_layers.keyframe_seen();
            }
            entry.cache.push(
                CachedPacket {
                    params,
                    seq: packet.seq,
                    time: ticks as u32,
                    wallclock: packet.wallclock,
                    marker: packet.marker,
                    ext_vals: ext_vals.clone(),
                    payload: packet.payload.clone(),
                },
                keyframe,
            );
            ticks
        } else {
            stream.audio_timeline.map(generation, packet.ticks, now)
        };
        // Only streams that feed edges pay for the tap (and the second lookup it forces).
        let stream = if stream.relays.is_empty() {
            stream
        } else {
            self.relay_tap(&stream_id, &packet, video.then_some(layer), ticks as u32);
            let Some(stream) = self.streams.get_mut(&stream_id) else {
                return;
            };
            stream
        };
        let out = Outgoing {
            generation,
            params,
            seq: packet.seq,
            time: ticks as u32,
            wallclock: packet.wallclock,
            marker: packet.marker,
            ext_vals: &ext_vals,
            payload: &packet.payload,
            red,
            // One copy per packet, shared by every viewer without RED.
            primary: red
                .then(|| media_core::red::primary(&packet.payload))
                .flatten()
                .map(|(_, p)| Arc::from(p)),
        };
        let (cache_ready, late_keyframe_start) = {
            let cached = if video {
                stream.layers.list[layer].cache.packets()
            } else {
                &[]
            };
            // A keyframe whose first packet came after others of it (lost on a relay, repaired
            // by NACK): a viewer starting or jumping here takes the keyframe from the cache,
            // which holds those others in order, not from this packet on (it would never get
            // them).
            let late = keyframe && cached.len() > 1 && cached[0].seq == packet.seq;
            (!cached.is_empty(), late)
        };
        let mut lowest: Option<Option<LayerId>> = None;
        let mut want_keyframe = false;
        let mut broken = Vec::new();
        let mut from_cache = Vec::new();
        let mut replaying = Vec::new();
        let mut switched = Vec::new();
        for &sid in &stream.subscribers {
            let Some(sub) = self.peers.get_mut(&sid) else {
                continue;
            };
            if !sub.connected {
                continue;
            }
            let Some(track) = (if video {
                sub.out_video.as_mut()
            } else {
                sub.out_audio.as_mut()
            }) else {
                continue;
            };
            if video {
                if sub.layer.target.is_none() {
                    sub.layer.target = if sub.layer.pin == Pin::Auto {
                        *lowest.get_or_insert_with(|| stream.layers.lowest(now))
                    } else {
                        stream.layers.pinned(now, sub.layer.pin)
                    };
                }
                let on_layer = sub.layer.current == Some(layer) && !sub.needs_keyframe;
                if !on_layer {
                    if sub.layer.target != Some(layer) {
                        continue;
                    }
                    let starting = sub.needs_keyframe || sub.layer.current.is_none();
                    if !keyframe {
                        if !starting {
                            // A switch waits for this layer's keyframe.
                            continue;
                        }
                        if cache_ready {
                            // Started below from the cache, which already holds this packet.
                            from_cache.push(sid);
                        } else {
                            self.stats.drop(DropReason::AwaitingKeyframe);
                            want_keyframe = true;
                        }
                        continue;
                    }
                    // This layer's keyframe: start or switch here.
                    if !starting {
                        switched.push((sid, sub.layer.current, sub.layer.switch_asked.take()));
                    }
                    match finish_replayed_frame(
                        &mut sub.rtc,
                        track,
                        &mut sub.layer,
                        &mut sub.replay,
                        &mut sub.replay_partial,
                    ) {
                        Ok(n) => self.stats.packets_forwarded += n as u64,
                        Err(PeerBroken) => {
                            broken.push(sid);
                            continue;
                        }
                    }
                    if late_keyframe_start {
                        sub.needs_keyframe = true;
                        from_cache.push(sid);
                        continue;
                    }
                    sub.needs_keyframe = false;
                    sub.layer.switch_to(layer);
                    track.seq.restart();
                    sub.replay.clear();
                } else if !sub.replay.is_empty() {
                    if keyframe {
                        // A fresh keyframe: skip what is left of the replay (after the frame
                        // it is in the middle of) and go live here.
                        match finish_replayed_frame(
                            &mut sub.rtc,
                            track,
                            &mut sub.layer,
                            &mut sub.replay,
                            &mut sub.replay_partial,
                        ) {
                            Ok(n) => self.stats.packets_forwarded += n as u64,
                            Err(PeerBroken) => {
                                broken.push(sid);
                                continue;
                            }
                        }
                        if late_keyframe_start {
                            sub.needs_keyframe = true;
                            from_cache.push(sid);
                            continue;
                        }
                        sub.replay.clear();
                        sub.layer.switch_to(layer);
                        track.seq.restart();
                    } else {
                        // Keep order: live packets wait behind the replay, which drains faster
                        // than real time.
                        sub.replay.push_back(Queued {
                            generation,
                            packet: CachedPacket {
                                params,
                                seq: out.seq,
                                time: out.time,
                                wallclock: out.wallclock,
                                marker: out.marker,
                                ext_vals: out.ext_vals.clone(),
                                payload: out.payload.clone(),
                            },
                        });
                        replaying.push(sid);
                        continue;
                    }
                }
            }
            let layer_state = if video { Some(&mut sub.layer) } else { None };
            match write_rtp(&mut sub.rtc, track, layer_state, &out) {
                Ok(true) => {
                    self.stats.packets_forwarded += 1;
                    self.dirty.push_back(sid);
                }
                Ok(false) => {}
                Err(PeerBroken) => broken.push(sid),
            }
        }
        for (sid, old, asked) in switched {
            self.stats.layer_switches += 1;
            let took = asked.map(|t| now.saturating_duration_since(t));
            let (from_name, to_name) = match self.streams.get(&stream_id) {
                Some(s) => (old.map(|o| s.layers.name(o)), s.layers.name(layer)),
                None => (None, String::new()),
            };
            tracing::debug!(peer = %sid, from = ?from_name, to = %to_name, ?took, "layer switch");
        }
        for sid in broken {
            self.remove_peer(sid, CloseReason::Failed);
        }
        for sid in from_cache {
            self.start_from_cache(sid, layer);
        }
        for sid in replaying {
            self.pump_replay(sid, now);
        }
        if want_keyframe {
            self.request_keyframe(&stream_id, Some(layer));
        }
    }
}

/// Before a replay is abandoned for a fresh keyframe: send the rest of the frame the replay is
/// in the middle of (`partial`), so the viewer's last replayed frame is whole. Without this, a
/// depacketizer that releases frames on a timestamp change (webrtc-rs) glues the unfinished
/// FU-A onto the new IDR, and the sequence numbers, gapless, give it no reason to doubt it.
fn finish_replayed_frame(
    rtc: &mut Rtc,
    track: &mut OutTrack,
    layer: &mut ViewerLayer,
    replay: &mut std::collections::VecDeque<Queued>,
    partial: &mut Option<u32>,
) -> Result<usize, PeerBroken> {
    let Some(time) = partial.take() else {
        return Ok(0);
    };
    let mut sent = 0;
    while let Some(q) = replay.front().filter(|q| q.packet.time == time) {
        if write_rtp(rtc, track, Some(&mut *layer), &q.outgoing())? {
            sent += 1;
        }
        replay.pop_front();
    }
    Ok(sent)
}

impl Queued {
    /// The queued (cached, video) packet as one viewer's outgoing packet.
    fn outgoing(&self) -> Outgoing<'_> {
        let p = &self.packet;
        Outgoing {
            generation: self.generation,
            params: p.params,
            seq: p.seq,
            time: p.time,
            wallclock: p.wallclock,
            marker: p.marker,
            ext_vals: &p.ext_vals,
            payload: &p.payload,
            red: false,
            primary: None,
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

/// Hand one packet to a subscriber's engine. `layer` (video) rewrites VP8 picture ids to stay
/// continuous across switches. `Ok(false)`: this peer cannot carry it (no matching codec, no
/// send stream).
pub(crate) fn write_rtp(
    rtc: &mut Rtc,
    track: &mut OutTrack,
    layer: Option<&mut ViewerLayer>,
    out: &Outgoing<'_>,
) -> Result<bool, PeerBroken> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let Some(pts) = track.payload_type(rtc, out.generation, out.params) else {
            return false;
        };
        // RED goes out as RED to viewers that negotiated it, as its primary block to others.
        let (pt, payload) = match (out.red, pts.red, &out.primary) {
            (false, _, _) => (pts.main, out.payload.clone()),
            (true, Some(red), _) => (red, out.payload.clone()),
            (true, None, Some(primary)) => (pts.main, primary.clone()),
            (true, None, None) => return false,
        };
        let Some(seq) = track.seq.map(out.generation, out.seq) else {
            return false; // from before this viewer's cut: its number is taken
        };
        let codec = out.params.spec().codec;
        let patch = match layer {
            Some(l) if codec == Codec::Vp8 => l.vp8_patch(out.payload),
            _ => None,
        };
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(track.mid, None) else {
            return false;
        };
        let mut write = RtpWrite::new(pt, seq.into(), out.time, out.wallclock, payload)
            .marker(out.marker)
            .ext_vals(out.ext_vals.clone())
            .nackable(codec.is_video());
        if let Some(patch) = patch {
            write = write.vp8_patch(patch);
        }
        tx.write_rtp(write);
        true
    }));
    result.map_err(|_| {
        tracing::error!("engine panicked on write; closing peer");
        PeerBroken
    })
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
