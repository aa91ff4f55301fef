//! A viewer's paced replay of a cached group of pictures (its start from the keyframe cache),
//! with the live packets that arrive meanwhile queued behind it in order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::track::Outgoing;
use crate::stream::CachedPacket;

/// A cached keyframe's first packets go to a new viewer at once; a large one (OBS: ~135
/// packets, 157 KB at 640x360) sent whole in one burst overflowed a webrtc-rs viewer's UDP
/// receive buffer (the kernel's `RcvbufErrors` rose), and a viewer without RTX then waited for
/// the next keyframe, which OBS sends every 2 s.
const KEYFRAME_BURST_PACKETS: usize = 32;
/// The rest of the cached keyframe is paced at this rate (or the replay rate when higher):
/// 100 more packets take about 25 ms.
const KEYFRAME_RATE_BPS: u64 = 40_000_000;

/// A cached packet queued for one viewer's paced replay, with the source generation it
/// belongs to (for payload-type and sequence mapping).
pub(crate) struct Queued {
    pub generation: u64,
    pub packet: CachedPacket,
}

impl Queued {
    /// The queued (cached, video) packet as one viewer's outgoing packet.
    pub fn outgoing(&self) -> Outgoing<'_> {
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

/// The queue and its pacing.
pub(super) struct Replay {
    queue: VecDeque<Queued>,
    /// When the next packet may go, and the replay rate in bit/s.
    at: Instant,
    rate: u64,
    /// Packets still to send unpaced (the front of the cached keyframe).
    burst: usize,
    /// Then packets of the cached keyframe still to send at the keyframe pace.
    keyframe: usize,
    /// The (rewritten) RTP time of a replayed frame sent only in part: a replay cut short
    /// sends the rest of that frame first, so the viewer never gets half a frame glued to the
    /// next one under gapless sequence numbers.
    partial: Option<u32>,
}

impl Replay {
    pub fn new(now: Instant) -> Self {
        Self {
            queue: VecDeque::new(),
            at: now,
            rate: 0,
            burst: 0,
            keyframe: 0,
            partial: None,
        }
    }

    /// Replay `queue` from `now` at `rate`; its first `keyframe_packets` are the keyframe.
    pub fn start(&mut self, queue: Vec<Queued>, keyframe_packets: usize, rate: u64, now: Instant) {
        self.queue.clear();
        self.partial = None;
        self.burst = keyframe_packets.min(KEYFRAME_BURST_PACKETS);
        self.keyframe = keyframe_packets - self.burst;
        self.queue.extend(queue);
        self.at = now;
        self.rate = rate;
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// A live packet waits behind the replay.
    pub fn push(&mut self, q: Queued) {
        self.queue.push_back(q);
    }

    /// When the next packet is due, while any is queued.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.queue.is_empty()).then_some(self.at)
    }

    /// The next packet if it is due at `now`, advancing the pace.
    pub fn next_due(&mut self, now: Instant) -> Option<Queued> {
        if self.at > now {
            return None;
        }
        let q = self.queue.pop_front()?;
        if self.burst > 0 {
            // The front of the keyframe goes out at once, as a live keyframe would.
            self.burst -= 1;
        } else {
            let rate = if self.keyframe > 0 {
                self.keyframe -= 1;
                self.rate.max(KEYFRAME_RATE_BPS)
            } else {
                self.rate
            };
            let bits = (q.packet.payload.len() as u64 + 40) * 8;
            self.at += Duration::from_nanos(bits * 1_000_000_000 / rate.max(1));
        }
        Some(q)
    }

    /// `q` was sent: remember whether its frame is still unfinished.
    pub fn sent(&mut self, marker: bool, time: u32) {
        self.partial = (!marker).then_some(time);
    }

    /// The rest of the frame the replay is in the middle of, taken off the queue.
    pub fn take_unfinished_frame(&mut self) -> Vec<Queued> {
        let Some(time) = self.partial.take() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|q| q.packet.time == time) {
            out.extend(self.queue.pop_front());
        }
        out
    }
}
