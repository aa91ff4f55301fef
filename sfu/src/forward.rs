//! Per-stream forwarding state (who publishes, who watches) and per-subscriber track state
//! (how a publisher's packets are renumbered for one viewer).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use media_core::keyframe::KeyframeCoalescer;
use media_core::rtp::SequenceMap;
use media_core::timeline::Rebaser;
use str0m::format::PayloadParams;
use str0m::media::{Mid, Pt};
use str0m::Rtc;

use crate::PeerId;

/// One stream (channel): at most one live publisher and any number of subscribers.
pub(crate) struct Stream {
    pub publisher: Option<PeerId>,
    /// Incremented for each new publisher; feeds the timeline rebasers.
    pub generation: u64,
    pub subscribers: BTreeSet<PeerId>,
    /// Codecs the current publisher negotiated: subscribers are offered only these.
    pub params: Vec<PayloadParams>,
    pub video_timeline: Rebaser,
    pub audio_timeline: Rebaser,
    pub keyframes: KeyframeCoalescer,
    /// When the publisher left (without a replacement); viewers are closed after the grace.
    pub offline_since: Option<Instant>,
}

impl Stream {
    pub fn new(keyframe_interval: Duration) -> Self {
        Self {
            publisher: None,
            generation: 0,
            subscribers: BTreeSet::new(),
            params: Vec::new(),
            video_timeline: Rebaser::new(90_000),
            audio_timeline: Rebaser::new(48_000),
            keyframes: KeyframeCoalescer::new(keyframe_interval),
            offline_since: None,
        }
    }

    /// Nobody publishes or watches: the entry can go.
    pub fn is_idle(&self) -> bool {
        self.publisher.is_none() && self.subscribers.is_empty()
    }
}

/// A subscriber's outgoing track (its video or audio m-line).
pub(crate) struct OutTrack {
    pub mid: Mid,
    pub seq: SequenceMap,
    /// Publisher payload type -> this viewer's, for the current publisher generation.
    pts: Vec<(u64, Pt, Option<Pt>)>,
}

impl OutTrack {
    pub fn new(mid: Mid, first_seq: u16) -> Self {
        Self {
            mid,
            seq: SequenceMap::new(first_seq),
            pts: Vec::new(),
        }
    }

    /// The viewer's payload type for the publisher's `params` (looked up once per publisher
    /// generation and payload type).
    pub fn payload_type(
        &mut self,
        rtc: &Rtc,
        generation: u64,
        params: PayloadParams,
    ) -> Option<Pt> {
        if let Some((_, _, out)) = self
            .pts
            .iter()
            .find(|(g, p, _)| *g == generation && *p == params.pt())
        {
            return *out;
        }
        self.pts.retain(|(g, _, _)| *g == generation);
        let out = rtc.codec_config().match_params(params).map(|p| p.pt());
        self.pts.push((generation, params.pt(), out));
        out
    }
}
