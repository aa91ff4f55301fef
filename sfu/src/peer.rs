//! One peer connection: a str0m `Rtc` plus what the SFU knows about it.
//!
//! Every call into the engine goes through a wrapper here that catches panics, so a peer that
//! trips a bug in the engine is closed without disturbing anyone else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Input, Output, Rtc};

use crate::ids::{PeerId, StreamId};
use crate::types::{PeerBroken, Sections};
use crate::viewer::{OutTrack, Viewer};

/// Publisher or subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Sends media into a stream; `generation` tells successive publishers apart.
    Publisher { generation: u64 },
    /// Receives a stream's media.
    Subscriber,
}

/// One session's engine and what the core tracks of it.
pub(crate) struct Peer {
    id: PeerId,
    stream: StreamId,
    role: Role,
    ufrag: String,
    rtc: Rtc,
    created: Instant,
    /// The instant the engine wants to be woken up.
    deadline: Instant,
    connected: bool,
    /// Listed in the core's due-now queue.
    due_queued: bool,
    /// Kind of each negotiated mid, from the offer.
    kinds: HashMap<Mid, MediaKind>,
    /// An ICE restart is under way: the first check from a new address retires the old ones.
    ice_restarting: bool,
    /// A subscriber's forwarding state, one per stream it watches (a stage viewer watches
    /// several, each on its own video/audio sections; a plain viewer one, its `stream`).
    slots: Vec<Slot>,
    /// A stage viewer's sections that show no one now, video and audio, in offer order: a
    /// participant who arrives later takes the first of each, and one who leaves gives its
    /// tracks (and their numbering) back.
    free: (Vec<OutTrack>, Vec<OutTrack>),
    /// Every section's mid in offer order (to keep `free` in it).
    sections: Vec<Mid>,
}

/// One watched stream of a subscriber and its forwarding state.
pub(crate) struct Slot {
    pub stream: StreamId,
    pub viewer: Viewer,
}

impl Peer {
    pub fn new(
        id: PeerId,
        stream: StreamId,
        role: Role,
        ufrag: String,
        rtc: Rtc,
        kinds: HashMap<Mid, MediaKind>,
        now: Instant,
    ) -> Self {
        Self {
            id,
            stream,
            role,
            ufrag,
            rtc,
            created: now,
            deadline: now,
            connected: false,
            due_queued: false,
            kinds,
            ice_restarting: false,
            slots: Vec::new(),
            free: (Vec::new(), Vec::new()),
            sections: Vec::new(),
        }
    }

    /// A subscriber's forwarding state: one slot per watched stream, the first its `stream`.
    /// `free`: the sections showing no one yet; `sections`: every mid in offer order.
    pub fn with_slots(
        mut self,
        slots: Vec<Slot>,
        free: (Vec<OutTrack>, Vec<OutTrack>),
        sections: Vec<Mid>,
    ) -> Self {
        self.slots = slots;
        self.free = free;
        self.sections = sections;
        self
    }

    pub fn id(&self) -> PeerId {
        self.id
    }

    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// New local ICE credentials took over; returns the old ufrag.
    pub fn set_ufrag(&mut self, ufrag: String) -> String {
        std::mem::replace(&mut self.ufrag, ufrag)
    }

    pub fn created(&self) -> Instant {
        self.created
    }

    /// The instant the engine wants to be woken up.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The engine's next timeout was `at`. Returns whether it is due already (at or before
    /// `now`) and the peer was not yet listed as due: the caller lists it, once.
    pub fn set_deadline(&mut self, at: Instant, now: Instant) -> bool {
        self.deadline = at;
        let list = at <= now && !self.due_queued;
        self.due_queued |= list;
        list
    }

    /// Taken off the due-now list.
    pub fn unlist_due(&mut self) {
        self.due_queued = false;
    }

    /// ICE and DTLS completed.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn set_connected(&mut self) {
        self.connected = true;
    }

    /// An ICE restart began: the next check from a new address retires the old ones.
    pub fn start_ice_restart(&mut self) {
        self.ice_restarting = true;
    }

    /// A check from a new address arrived: whether it ends an ICE restart (once).
    pub fn finish_ice_restart(&mut self) -> bool {
        std::mem::take(&mut self.ice_restarting)
    }

    pub fn rtc(&self) -> &Rtc {
        &self.rtc
    }

    pub fn rtc_mut(&mut self) -> &mut Rtc {
        &mut self.rtc
    }

    /// The streams this subscriber watches, with their forwarding state.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The forwarding state for `stream`, if this subscriber watches it.
    pub fn viewer_of(&mut self, stream: &StreamId) -> Option<&mut Viewer> {
        self.slots
            .iter_mut()
            .find(|s| &s.stream == stream)
            .map(|s| &mut s.viewer)
    }

    /// The engine and the forwarding state for `stream` together, to write into one from the
    /// other.
    pub fn parts(&mut self, stream: &StreamId) -> Option<(&mut Rtc, &mut Viewer)> {
        let slot = self.slots.iter_mut().find(|s| &s.stream == stream)?;
        Some((&mut self.rtc, &mut slot.viewer))
    }

    /// The engine and every slot, for work across all of a subscriber's streams.
    pub fn all_parts(&mut self) -> (&mut Rtc, &mut [Slot]) {
        (&mut self.rtc, &mut self.slots)
    }

    /// Stop watching `stream`, its sections free for someone else; whether any slot is left.
    pub fn unbind(&mut self, stream: &StreamId) -> bool {
        if let Some(i) = self.slots.iter().position(|s| &s.stream == stream) {
            let (video, audio) = self.slots.remove(i).viewer.into_tracks();
            let (free_video, free_audio) = &mut self.free;
            let sections = &self.sections;
            for (track, free) in [(video, free_video), (audio, free_audio)] {
                if let Some(t) = track {
                    free.push(t);
                    free.sort_by_key(|t| sections.iter().position(|m| *m == t.mid()));
                }
            }
        }
        !self.slots.is_empty()
    }

    /// Show `stream` on the first free video and/or audio section (`sections`) with `viewer`
    /// made of them; `false` when it is shown already or no such section is free.
    pub fn bind(
        &mut self,
        stream: &StreamId,
        sections: Sections,
        viewer: impl FnOnce(Option<OutTrack>, Option<OutTrack>) -> Viewer,
    ) -> bool {
        if self.slots.iter().any(|s| &s.stream == stream) {
            return false;
        }
        let video = (sections.video() && !self.free.0.is_empty()).then(|| self.free.0.remove(0));
        let audio = (sections.audio() && !self.free.1.is_empty()).then(|| self.free.1.remove(0));
        if video.is_none() && audio.is_none() {
            return false;
        }
        self.slots.push(Slot {
            stream: stream.clone(),
            viewer: viewer(video, audio),
        });
        true
    }

    /// What this viewer shows, in the order of its sections in the offer.
    pub fn shown(&self) -> Vec<crate::types::Shown> {
        let position = |s: &Slot| {
            let mid = s.viewer.video_mid().or(s.viewer.audio_mid());
            self.sections.iter().position(|m| Some(*m) == mid)
        };
        let mut slots: Vec<&Slot> = self.slots.iter().collect();
        slots.sort_by_key(|s| position(s));
        slots
            .into_iter()
            .map(|s| crate::types::Shown {
                stream: s.stream.clone(),
                video: s.viewer.video_mid().map(|m| m.to_string()),
                audio: s.viewer.audio_mid().map(|m| m.to_string()),
            })
            .collect()
    }

    /// The stream shown on video section `mid` (where a viewer's keyframe request goes).
    pub fn stream_on(&self, mid: Mid) -> Option<&StreamId> {
        self.slots
            .iter()
            .find(|s| s.viewer.video_mid() == Some(mid))
            .map(|s| &s.stream)
    }

    pub fn is_publisher(&self) -> bool {
        matches!(self.role, Role::Publisher { .. })
    }

    /// Feed one input to the engine.
    pub fn handle_input(&mut self, input: Input<'_>) -> Result<(), PeerBroken> {
        let rtc = &mut self.rtc;
        match catch_unwind(AssertUnwindSafe(|| rtc.handle_input(input))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.id, error = %e, "engine refused input");
                Err(PeerBroken)
            }
            Err(_) => {
                tracing::error!(peer = %self.id, "engine panicked on input; closing peer");
                Err(PeerBroken)
            }
        }
    }

    /// Poll the engine once.
    pub fn poll_output(&mut self) -> Result<Output, PeerBroken> {
        let rtc = &mut self.rtc;
        match catch_unwind(AssertUnwindSafe(|| rtc.poll_output())) {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.id, error = %e, "engine poll failed");
                Err(PeerBroken)
            }
            Err(_) => {
                tracing::error!(peer = %self.id, "engine panicked in poll; closing peer");
                Err(PeerBroken)
            }
        }
    }

    /// Ask this (publisher) peer for a keyframe on the video stream `ssrc` (a simulcast
    /// layer), or on every video mid. Returns whether a request went out.
    pub fn request_keyframe(&mut self, ssrc: Option<Ssrc>) -> bool {
        let video_mids: Vec<Mid> = self
            .kinds
            .iter()
            .filter(|(_, k)| **k == MediaKind::Video)
            .map(|(m, _)| *m)
            .collect();
        let rtc = &mut self.rtc;
        let sent = catch_unwind(AssertUnwindSafe(|| {
            let mut api = rtc.direct_api();
            if let Some(rx) = ssrc.and_then(|s| api.stream_rx(&s)) {
                rx.request_keyframe(KeyframeRequestKind::Pli);
                return true;
            }
            let mut sent = false;
            for mid in video_mids {
                if let Some(rx) = api.stream_rx_by_mid(mid, None) {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                    sent = true;
                }
            }
            sent
        }));
        sent.unwrap_or(false)
    }

    /// Retire the remote candidates at `addrs` (after an ICE restart moved the peer elsewhere),
    /// so the engine sends on the new path instead of a higher-priority dead one.
    pub fn retire_remote_addresses(&mut self, addrs: &[SocketAddr]) {
        let rtc = &mut self.rtc;
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let mut api = rtc.direct_api();
            for addr in addrs {
                for kind in ["host", "prflx"] {
                    let line = format!(
                        "candidate:retired 1 udp 1 {} {} typ {kind}",
                        addr.ip(),
                        addr.port()
                    );
                    if let Ok(c) = Candidate::from_sdp_string(&line) {
                        api.invalidate_candidate(&c);
                    }
                }
            }
        }));
    }

    /// Close the engine side (sends DTLS close where possible).
    pub fn disconnect(&mut self) {
        let rtc = &mut self.rtc;
        let _ = catch_unwind(AssertUnwindSafe(|| rtc.disconnect()));
    }
}
