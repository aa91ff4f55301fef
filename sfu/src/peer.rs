//! One peer connection: a str0m `Rtc` plus what the SFU knows about it.
//!
//! Every call into the engine goes through a wrapper here that catches panics, so a peer that
//! trips a bug in the engine is closed without disturbing anyone else.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::{Input, Output, Rtc};

use crate::{PeerId, StreamId};

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
    /// Kind of each negotiated mid, from the offer.
    pub kinds: HashMap<Mid, MediaKind>,
    /// Subscriber: the mid carrying the stream's video / audio to this peer.
    pub out_video: Option<Mid>,
    pub out_audio: Option<Mid>,
    /// Subscriber: drop video until a keyframe arrives (new viewer, new publisher, loss).
    pub needs_keyframe: bool,
    /// Publisher: the simulcast layer (rid) forwarded, once seen.
    pub video_rid: Option<Rid>,
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
            kinds: HashMap::new(),
            out_video: None,
            out_audio: None,
            needs_keyframe: true,
            video_rid: None,
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

    /// Write one media sample on `mid`, matching the payload type to the source's codec.
    /// Returns `Ok(false)` when this peer cannot carry the sample (no matching codec).
    pub fn write_sample(
        &mut self,
        mid: Mid,
        params: str0m::format::PayloadParams,
        wallclock: Instant,
        time: str0m::media::MediaTime,
        data: std::sync::Arc<[u8]>,
    ) -> Result<bool, PeerBroken> {
        let rtc = &mut self.rtc;
        let result = catch_unwind(AssertUnwindSafe(|| {
            let Some(writer) = rtc.writer(mid) else {
                return Ok(false);
            };
            let Some(pt) = writer.match_params(params) else {
                return Ok(false);
            };
            writer.write(pt, wallclock, time, data).map(|()| true)
        }));
        match result {
            Ok(Ok(written)) => Ok(written),
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.id, error = %e, "write failed");
                Err(PeerBroken)
            }
            Err(_) => {
                tracing::error!(peer = %self.id, "engine panicked on write; closing peer");
                Err(PeerBroken)
            }
        }
    }

    /// Ask this (publisher) peer for a keyframe on every video mid. Returns whether a request
    /// went out.
    pub fn request_keyframe(&mut self) -> bool {
        let rid = self.video_rid;
        let video_mids: Vec<Mid> = self
            .kinds
            .iter()
            .filter(|(_, k)| **k == MediaKind::Video)
            .map(|(m, _)| *m)
            .collect();
        let rtc = &mut self.rtc;
        let sent = catch_unwind(AssertUnwindSafe(|| {
            let mut sent = false;
            for mid in video_mids {
                let Some(mut writer) = rtc.writer(mid) else {
                    continue;
                };
                let kind = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
                    KeyframeRequestKind::Pli
                } else {
                    KeyframeRequestKind::Fir
                };
                sent |= writer.request_keyframe(rid, kind).is_ok();
            }
            sent
        }));
        sent.unwrap_or(false)
    }

    /// Close the engine side (sends DTLS close where possible).
    pub fn disconnect(&mut self) {
        let rtc = &mut self.rtc;
        let _ = catch_unwind(AssertUnwindSafe(|| rtc.disconnect()));
    }
}
