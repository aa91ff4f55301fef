//! One viewer's forwarding state: its outgoing tracks, its place among the layers, its gate
//! on keyframes and its replay from the keyframe cache; and the pure step (`step`) that says
//! what it gets of each video packet.

mod layer;
mod replay;
pub(crate) mod step;
mod track;

pub(crate) use layer::ViewerLayer;
pub(crate) use replay::Queued;
pub(crate) use track::{OutTrack, Outgoing};

use std::time::Instant;

use str0m::Rtc;

use crate::ids::LayerId;
use crate::types::PeerBroken;
use replay::Replay;
use step::{PacketFacts, Step, ViewerState};

/// A viewer session's forwarding state.
pub(crate) struct Viewer {
    video: Option<OutTrack>,
    audio: Option<OutTrack>,
    /// Drop video until a keyframe arrives (new viewer, new source, loss).
    needs_keyframe: bool,
    layer: ViewerLayer,
    replay: Replay,
}

/// What carrying out a cut did.
pub(crate) enum Cut {
    /// Live from this keyframe on; `n` packets of the replayed frame were finished first.
    Live(usize),
    /// The keyframe's start came late: start from the cache (`n` as above).
    FromCache(usize),
}

impl Viewer {
    pub fn new(
        video: Option<OutTrack>,
        audio: Option<OutTrack>,
        layer: ViewerLayer,
        now: Instant,
    ) -> Self {
        Self {
            video,
            audio,
            needs_keyframe: true,
            layer,
            replay: Replay::new(now),
        }
    }

    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// Its tracks back, to show someone else on them (their numbering goes on).
    pub fn into_tracks(self) -> (Option<OutTrack>, Option<OutTrack>) {
        (self.video, self.audio)
    }

    /// The mid of its audio section.
    pub fn audio_mid(&self) -> Option<str0m::media::Mid> {
        self.audio.as_ref().map(OutTrack::mid)
    }

    /// The mid of its video section.
    pub fn video_mid(&self) -> Option<str0m::media::Mid> {
        self.video.as_ref().map(OutTrack::mid)
    }

    pub fn layer(&self) -> &ViewerLayer {
        &self.layer
    }

    pub fn layer_mut(&mut self) -> &mut ViewerLayer {
        &mut self.layer
    }

    /// The stream has a new source: wait for its keyframe, start over on its lowest layer.
    pub fn source_changed(&mut self) {
        self.needs_keyframe = true;
        self.layer.reset();
    }

    /// The step for one video packet.
    pub fn video_step(&self, packet: PacketFacts) -> Step {
        step::video_step(
            ViewerState {
                current: self.layer.current(),
                target: self.layer.target(),
                needs_keyframe: self.needs_keyframe,
                replaying: !self.replay.is_empty(),
            },
            packet,
        )
    }

    /// Carry out [`Step::Cut`] on `layer`.
    pub fn cut(&mut self, rtc: &mut Rtc, layer: LayerId, late: bool) -> Result<Cut, PeerBroken> {
        let finished = self.finish_replayed_frame(rtc)?;
        if late {
            self.needs_keyframe = true;
            return Ok(Cut::FromCache(finished));
        }
        self.needs_keyframe = false;
        self.layer.switch_to(layer);
        if let Some(t) = self.video.as_mut() {
            t.restart();
        }
        self.replay.clear();
        Ok(Cut::Live(finished))
    }

    /// Before a replay is abandoned for a fresh keyframe: send the rest of the frame the
    /// replay is in the middle of, so the viewer's last replayed frame is whole. Without this,
    /// a depacketizer that releases frames on a timestamp change (webrtc-rs) glues the
    /// unfinished FU-A onto the new IDR, and the sequence numbers, gapless, give it no reason
    /// to doubt it.
    fn finish_replayed_frame(&mut self, rtc: &mut Rtc) -> Result<usize, PeerBroken> {
        let Some(track) = self.video.as_mut() else {
            return Ok(0);
        };
        let mut sent = 0;
        for q in self.replay.take_unfinished_frame() {
            if track.write(rtc, Some(&mut self.layer), &q.outgoing())? {
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// Carry out [`Step::Queue`].
    pub fn queue(&mut self, q: Queued) {
        self.replay.push(q);
    }

    /// Forward one live packet on its video (or audio) track.
    pub fn write(
        &mut self,
        rtc: &mut Rtc,
        video: bool,
        out: &Outgoing<'_>,
    ) -> Result<bool, PeerBroken> {
        if video {
            match self.video.as_mut() {
                Some(t) => t.write(rtc, Some(&mut self.layer), out),
                None => Ok(false),
            }
        } else {
            match self.audio.as_mut() {
                Some(t) => t.write(rtc, None, out),
                None => Ok(false),
            }
        }
    }

    /// Start on `layer` from its cached group (`queue`, the first `keyframe_packets` of it the
    /// keyframe) paced at `rate`. `false`: the viewer has no video or is not waiting for a
    /// keyframe.
    pub fn start_replay(
        &mut self,
        layer: LayerId,
        queue: Vec<Queued>,
        keyframe_packets: usize,
        rate: u64,
        now: Instant,
    ) -> bool {
        let Some(track) = self.video.as_mut() else {
            return false;
        };
        if !self.needs_keyframe {
            return false;
        }
        self.needs_keyframe = false;
        self.layer.switch_to(layer);
        track.restart();
        self.replay.start(queue, keyframe_packets, rate, now);
        true
    }

    /// When the next replay packet is due, while a replay is under way.
    pub fn replay_deadline(&self) -> Option<Instant> {
        self.replay.deadline()
    }

    /// Send the next replay packet if it is due at `now`. `Ok(None)`: nothing due; else
    /// whether the engine took it.
    pub fn replay_next(&mut self, rtc: &mut Rtc, now: Instant) -> Result<Option<bool>, PeerBroken> {
        let Some(q) = self.replay.next_due(now) else {
            return Ok(None);
        };
        let Some(track) = self.video.as_mut() else {
            self.replay.clear();
            return Ok(None);
        };
        let written = track.write(rtc, Some(&mut self.layer), &q.outgoing())?;
        self.replay.sent(q.packet.marker, q.packet.time);
        Ok(Some(written))
    }
}
