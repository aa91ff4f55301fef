//! Per-stream forwarding state: who publishes, who watches, and how samples are mapped.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use media_core::keyframe::KeyframeCoalescer;
use media_core::timeline::Rebaser;
use str0m::format::PayloadParams;

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
