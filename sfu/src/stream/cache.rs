//! A layer's keyframe cache: the video since its last keyframe start, kept in sequence order,
//! so a new viewer (or a cold edge) starts at once; and the replay timing that brings a viewer
//! from the cached keyframe to the live edge quickly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::rtp::ExtensionValues;

/// One forwarded video packet as the cache keeps it (the payload is shared, not copied).
#[derive(Clone)]
pub(crate) struct CachedPacket {
    pub params: PayloadParams,
    /// The publisher's extended sequence number.
    pub seq: u64,
    /// Rebased (stream) timestamp.
    pub time: u32,
    pub wallclock: Instant,
    pub marker: bool,
    pub ext_vals: ExtensionValues,
    pub payload: Arc<[u8]>,
}

/// A cached group longer than this makes the SFU also ask for a fresh keyframe.
pub(crate) const LONG_CACHE: Duration = Duration::from_secs(1);

/// Replay pace: four times the group's own bitrate (so a viewer reaches the live edge in a
/// quarter of the group's age), and never below 2 Mbit/s.
pub(crate) fn replay_rate(bytes: usize, span: Duration) -> u64 {
    let secs = span.as_secs_f64().max(0.033);
    let bitrate = (bytes as f64 * 8.0 / secs) as u64;
    (bitrate * 4).max(2_000_000)
}

/// Bounds of the keyframe cache; a group of pictures beyond them is not cached (viewers then
/// wait for a keyframe as without a cache).
const CACHE_MAX_PACKETS: usize = 6_000;
const CACHE_MAX_BYTES: usize = 8 << 20;
/// Packets held while no group is valid, for a keyframe whose first packet comes late.
const PENDING_MAX: usize = 512;

/// The current publisher's video from its last keyframe start to now: a new viewer is sent this
/// at once and decodes a picture without waiting for the publisher's next keyframe.
#[derive(Default)]
pub(crate) struct KeyframeCache {
    packets: Vec<CachedPacket>,
    bytes: usize,
    /// A keyframe start was seen and nothing overflowed since.
    valid: bool,
}

impl KeyframeCache {
    /// Record a packet; `keyframe_start` begins a new group, unless it belongs to the frame that
    /// began the current one (H.264 sends the SPS/PPS and then the IDR slice, and both read as
    /// keyframe starts: the group must keep the parameter sets).
    ///
    /// Packets are kept in sequence order, so one that arrives late (reordered, or lost on a
    /// relay and repaired by NACK) takes its place. A keyframe whose first packet arrives after
    /// others of the same keyframe keeps them: while no group is valid the last
    /// [`PENDING_MAX`] packets are held, and a new group keeps the packets numbered after its
    /// first. Found by the relay loss test: a repaired keyframe start used to begin a group
    /// without the rest of its keyframe, and the edge's new viewers stalled on it.
    pub fn push(&mut self, packet: CachedPacket, keyframe_start: bool) {
        let first = self.packets.first().map(|f| (f.seq, f.time));
        let same_frame = self.valid && first.is_some_and(|(_, time)| time == packet.time);
        if keyframe_start && !same_frame {
            let start = packet.seq;
            self.packets.retain(|p| p.seq > start);
            self.bytes = self.packets.iter().map(|p| p.payload.len()).sum();
            self.valid = true;
        } else if self.valid && first.is_some_and(|(seq, _)| packet.seq < seq) {
            return; // a late packet of the previous group
        }
        let at = self
            .packets
            .iter()
            .rposition(|p| p.seq < packet.seq)
            .map_or(0, |i| i + 1);
        if self.packets.get(at).is_some_and(|p| p.seq == packet.seq) {
            return; // a duplicate (the original and its repair both arrived)
        }
        self.bytes += packet.payload.len();
        self.packets.insert(at, packet);
        if !self.valid {
            if self.packets.len() > PENDING_MAX {
                let old = self.packets.remove(0);
                self.bytes -= old.payload.len();
            }
        } else if self.packets.len() > CACHE_MAX_PACKETS || self.bytes > CACHE_MAX_BYTES {
            self.clear();
        }
    }

    /// Payload bytes cached.
    pub fn bytes(&self) -> usize {
        if self.valid {
            self.bytes
        } else {
            0
        }
    }

    /// Media time from the first to the last cached packet (90 kHz timestamps).
    pub fn span(&self) -> Duration {
        match (self.packets().first(), self.packets().last()) {
            (Some(a), Some(b)) => {
                Duration::from_micros(u64::from(b.time.wrapping_sub(a.time)) * 1_000 / 90)
            }
            _ => Duration::ZERO,
        }
    }

    /// Forget everything (a new publisher).
    pub fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.valid = false;
    }

    /// The cached packets, oldest first; empty when there is no usable group.
    pub fn packets(&self) -> &[CachedPacket] {
        if self.valid {
            &self.packets
        } else {
            &[]
        }
    }
}

/// Timestamps for replaying a cached group so that it ends at the live edge: the `n` frames
/// are placed 1 ms apart, the latest at the group's latest timestamp, in both RTP time (90 kHz)
/// and wall clock. The viewer decodes the group as a fast burst and then continues live, instead
/// of playing it out at its original pace and staying behind by the group's age. Frames are
/// ranked by their own timestamps, not by arrival, so a stream with B-frames (decode order
/// differs from presentation order) keeps its presentation order.
pub(crate) fn compressed_times(packets: &[CachedPacket]) -> Vec<(u32, Instant)> {
    let (Some(first), Some(last)) = (packets.first(), packets.last()) else {
        return Vec::new();
    };
    // Signed distance from the first packet's timestamp (wrap-safe within +-13 hours).
    let offset = |p: &CachedPacket| i64::from(p.time.wrapping_sub(first.time) as i32);
    let mut distinct: Vec<i64> = packets.iter().map(offset).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let n = distinct.len();
    let newest = distinct[n - 1];
    let anchor = first.time.wrapping_add(newest as u32);
    packets
        .iter()
        .map(|p| {
            let rank = distinct.binary_search(&offset(p)).unwrap_or(0);
            let back = (n - 1 - rank) as u32;
            let time = anchor.wrapping_sub(back * 90);
            let wallclock = last
                .wallclock
                .checked_sub(Duration::from_millis(u64::from(back)))
                .unwrap_or(last.wallclock);
            (time, wallclock)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an epoch from the clock once
mod tests {
    use super::*;
    use str0m::format::CodecConfig;

    fn packet(time: u32, byte: u8) -> CachedPacket {
        let params = *CodecConfig::new_with_defaults().params().first().unwrap();
        CachedPacket {
            params,
            seq: u64::from(byte),
            time,
            wallclock: Instant::now(),
            marker: false,
            ext_vals: ExtensionValues::default(),
            payload: Arc::from(vec![byte; 100]),
        }
    }

    #[test]
    fn a_keyframe_over_several_start_packets_stays_one_group() {
        let mut c = KeyframeCache::default();
        c.push(packet(0, 1), false); // no keyframe yet: not cached
        assert!(c.packets().is_empty());
        c.push(packet(3000, 2), true); // SPS/PPS
        c.push(packet(3000, 3), true); // IDR start, same frame
        c.push(packet(6000, 4), false);
        let seqs: Vec<u64> = c.packets().iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        c.push(packet(9000, 5), true); // the next keyframe starts a new group
        let seqs: Vec<u64> = c.packets().iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![5]);
        assert_eq!(c.bytes(), 100);
    }

    fn seqs(c: &KeyframeCache) -> Vec<u64> {
        c.packets().iter().map(|p| p.seq).collect()
    }

    #[test]
    fn a_keyframe_whose_first_packet_comes_late_keeps_the_rest_of_it() {
        // The first keyframe: its start (1) arrives after 2 and 3.
        let mut c = KeyframeCache::default();
        c.push(packet(0, 2), false);
        c.push(packet(0, 3), false);
        assert!(c.packets().is_empty(), "no group before a keyframe start");
        c.push(packet(0, 1), true);
        assert_eq!(seqs(&c), vec![1, 2, 3]);
        c.push(packet(3000, 4), false);
        // A later keyframe (5, 6, 7) whose start was lost and repaired after 7.
        c.push(packet(6000, 6), false);
        c.push(packet(6000, 7), false);
        c.push(packet(6000, 5), true);
        assert_eq!(seqs(&c), vec![5, 6, 7]);
        assert_eq!(c.bytes(), 300);
    }

    #[test]
    fn late_packets_take_their_place_and_duplicates_and_stale_ones_are_dropped() {
        let mut c = KeyframeCache::default();
        c.push(packet(0, 10), true);
        c.push(packet(0, 11), false);
        c.push(packet(3000, 13), false);
        c.push(packet(3000, 12), false); // repaired
        c.push(packet(3000, 12), false); // and the original, late
        c.push(packet(0, 9), false); // from before the group
        assert_eq!(seqs(&c), vec![10, 11, 12, 13]);
        assert_eq!(c.bytes(), 400);
    }

    #[test]
    fn compressed_times_end_at_the_last_frame_one_ms_apart() {
        let t0 = Instant::now();
        let mut group: Vec<CachedPacket> = [0u32, 0, 3000, 6000, 6000]
            .iter()
            .map(|t| packet(*t, 0))
            .collect();
        for (i, p) in group.iter_mut().enumerate() {
            p.wallclock = t0 + Duration::from_millis(33 * i as u64);
        }
        let times = compressed_times(&group);
        let rtp: Vec<u32> = times.iter().map(|t| t.0).collect();
        assert_eq!(rtp, vec![6000 - 180, 6000 - 180, 6000 - 90, 6000, 6000]);
        let last = group.last().unwrap().wallclock;
        assert_eq!(times[0].1, last - Duration::from_millis(2));
        assert_eq!(times[4].1, last);
    }

    #[test]
    fn compressed_times_keep_the_presentation_order_of_b_frames() {
        // Decode order I0 P3 B1 B2 (timestamps 0, 9000, 3000, 6000).
        let group: Vec<CachedPacket> = [0u32, 9000, 3000, 6000]
            .iter()
            .map(|t| packet(t.wrapping_add(u32::MAX - 1000), 0))
            .collect();
        let times: Vec<u32> = compressed_times(&group).iter().map(|t| t.0).collect();
        let end = 9000u32.wrapping_add(u32::MAX - 1000);
        assert_eq!(
            times,
            vec![
                end.wrapping_sub(270),
                end,
                end.wrapping_sub(180),
                end.wrapping_sub(90)
            ]
        );
    }

    #[test]
    fn an_oversized_group_is_dropped_until_the_next_keyframe() {
        let mut c = KeyframeCache::default();
        c.push(packet(0, 1), true);
        for i in 0..CACHE_MAX_PACKETS as u64 {
            let mut p = packet(3000 + i as u32, 2);
            p.seq = 2 + i; // distinct numbers: equal ones are duplicates
            c.push(p, false);
        }
        assert!(c.packets().is_empty(), "over the packet bound");
        let next = 2 + CACHE_MAX_PACKETS as u64;
        let mut p = packet(1, 3);
        p.seq = next;
        c.push(p, false);
        assert!(c.packets().is_empty(), "stays empty until a keyframe");
        let mut p = packet(2, 4);
        p.seq = next + 1;
        c.push(p, true);
        assert_eq!(c.packets().len(), 1);
    }
}
