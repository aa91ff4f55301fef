//! One peer connection: a str0m `Rtc` plus what the SFU knows about it.
//!
//! Every call into the engine goes through a wrapper here that catches panics, so a peer that
//! trips a bug in the engine is closed without disturbing anyone else.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use std::net::SocketAddr;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use str0m::rtp::Ssrc;
use str0m::{Candidate, Input, Output, Rtc};

use crate::forward::{OutTrack, Queued};
use crate::simulcast::ViewerLayer;
use crate::{PeerId, StreamId};
use std::collections::VecDeque;

/// Publisher or subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Sends media into a stream; `generation` tells successive publishers apart.
    Publisher { generation: u64 },
    /// Receives a stream's media.
    Subscriber,
}

/// The engine failed or panicked: the peer must be closed.
#[derive(Debug)]
pub(crate) struct PeerBroken;

pub(crate) struct Peer {
    pub id: PeerId,
    pub stream: StreamId,
    pub role: Role,
    pub ufrag: String,
    pub rtc: Rtc,
    pub created: Instant,
    /// The instant the engine wants to be woken up.
    pub deadline: Instant,
    pub connected: bool,
    /// Listed in the core's due-now queue.
    pub due_queued: bool,
    /// Subscriber: cached and live video waiting for a paced replay (keyframe cache start).
    pub replay: VecDeque<Queued>,
    /// When the next replay packet may go, and the replay rate in bit/s.
    pub replay_at: Instant,
    pub replay_rate: u64,
    /// Replay packets still to send unpaced (the front of the cached keyframe).
    pub replay_burst: usize,
    /// Then packets of the cached keyframe still to send at the keyframe pace.
    pub replay_keyframe: usize,
    /// The (rewritten) RTP time of a replayed frame sent only in part: a replay cut short
    /// sends the rest of that frame first, so the viewer never gets half a frame glued to the
    /// next one under gapless sequence numbers.
    pub replay_partial: Option<u32>,
    /// Kind of each negotiated mid, from the offer.
    pub kinds: HashMap<Mid, MediaKind>,
    /// Subscriber: the track carrying the stream's video / audio to this peer.
    pub out_video: Option<OutTrack>,
    pub out_audio: Option<OutTrack>,
    /// Subscriber: drop video until a keyframe arrives (new viewer, new publisher, loss).
    pub needs_keyframe: bool,
    /// Subscriber: which simulcast layer it receives and wants.
    pub layer: ViewerLayer,
    /// An ICE restart is under way: the first check from a new address retires the old ones.
    pub ice_restarting: bool,
}

impl Peer {
    pub fn new(
        id: PeerId,
        stream: StreamId,
        role: Role,
        ufrag: String,
        rtc: Rtc,
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
            replay: VecDeque::new(),
            replay_at: now,
            replay_rate: 0,
            replay_burst: 0,
            replay_keyframe: 0,
            replay_partial: None,
            kinds: HashMap::new(),
            out_video: None,
            out_audio: None,
            needs_keyframe: true,
            layer: ViewerLayer::default(),
            ice_restarting: false,
        }
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
