//! Loss repair on the relay (docs/relay-protocol.md, "Loss repair"), sans-IO:
//!
//! - [`SendCache`], upstream side: the last 2 s (at most 2,048 packets) of each track's
//!   datagrams, by RTP sequence number, to resend on `nack`;
//! - [`GapTracker`], edge side: finds sequence gaps, asks for them once they are older than
//!   a 10 ms reorder window, asks again after a relay RTT (at least 20 ms), doubling the wait
//!   each time, at most 3 times, then gives up one doubled wait later (150 ms at the least).
//!   The floor and the backoff matter under load: on a starved CPU the measured RTT stays a
//!   millisecond while a resend takes tens, and fixed RTT spacing gave up on repairs that were
//!   on their way (a CPU-hog run counted 296 of 936 NACKed packets unrepaired).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::proto::MAX_NACK;

/// How long the upstream keeps a packet.
pub const KEEP: Duration = Duration::from_secs(2);
/// Slots per track in the upstream's cache.
const SLOTS: usize = 2048;
/// A gap younger than this may still be reordering, not loss.
pub const REORDER: Duration = Duration::from_millis(10);
/// NACKs per missing packet.
const MAX_TRIES: u8 = 3;
/// The shortest wait between NACKs of one packet (before doubling).
pub const MIN_RETRY: Duration = Duration::from_millis(20);
/// A jump larger than this is a new sequence (publisher change), not loss.
const MAX_GAP: u16 = 512;

/// One cached datagram: its RTP sequence number, when it was sent, the datagram.
type Slot = Option<(u16, Instant, Bytes)>;

/// The upstream's recent datagrams per track id.
#[derive(Default)]
pub struct SendCache {
    tracks: HashMap<u16, Vec<Slot>>,
}

impl SendCache {
    /// Keep `datagram` (the whole relay datagram) of `track` with RTP sequence `seq`.
    pub fn record(&mut self, track: u16, seq: u16, now: Instant, datagram: Bytes) {
        let slots = self
            .tracks
            .entry(track)
            .or_insert_with(|| vec![None; SLOTS]);
        slots[usize::from(seq) % SLOTS] = Some((seq, now, datagram));
    }

    /// The datagram of `track` with sequence `seq`, if still kept.
    pub fn get(&self, track: u16, seq: u16, now: Instant) -> Option<Bytes> {
        let slot = self.tracks.get(&track)?.get(usize::from(seq) % SLOTS)?;
        match slot {
            Some((s, at, d)) if *s == seq && now.saturating_duration_since(*at) <= KEEP => {
                Some(d.clone())
            }
            _ => None,
        }
    }

    /// Drop the tracks `base..base+block` (the stream was unsubscribed).
    pub fn forget(&mut self, base: u16, block: u16) {
        self.tracks
            .retain(|t, _| !(*t >= base && *t < base.saturating_add(block)));
    }
}

/// The RTP sequence number of a plain RTP packet.
pub fn rtp_seq(rtp: &[u8]) -> Option<u16> {
    (rtp.len() >= 12).then(|| u16::from_be_bytes([rtp[2], rtp[3]]))
}

struct Missing {
    since: Instant,
    tries: u8,
    last: Option<Instant>,
}

#[derive(Default)]
struct Track {
    highest: Option<u16>,
    missing: HashMap<u16, Missing>,
}

/// What the edge knows about gaps on each track.
#[derive(Default)]
pub struct GapTracker {
    tracks: HashMap<u16, Track>,
    /// Packets that arrived after being NACKed.
    pub repaired: u64,
    /// Packets given up on (never arrived after every NACK, or too old).
    pub unrepaired: u64,
    /// NACKed sequence numbers sent (each try counts).
    pub nacked: u64,
    /// Tracks that gave up on a packet since [`GapTracker::take_lost`] last asked.
    lost: Vec<u16>,
}

impl GapTracker {
    /// A packet of `track` with sequence `seq` arrived. Whether it filled a gap (it came
    /// after a later packet: reordered, or resent after a NACK).
    pub fn on_packet(&mut self, track: u16, seq: u16, now: Instant) -> bool {
        let t = self.tracks.entry(track).or_default();
        let Some(highest) = t.highest else {
            t.highest = Some(seq);
            return false;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 {
            return false;
        }
        if ahead < 0x8000 {
            if ahead > MAX_GAP {
                // A new sequence (publisher change): nothing to repair across it.
                t.missing.clear();
            } else {
                for k in 1..ahead {
                    t.missing.insert(
                        highest.wrapping_add(k),
                        Missing {
                            since: now,
                            tries: 0,
                            last: None,
                        },
                    );
                }
            }
            t.highest = Some(seq);
            false
        } else if let Some(m) = t.missing.remove(&seq) {
            if m.tries > 0 {
                self.repaired += 1;
            }
            true
        } else {
            false
        }
    }

    /// Forget `base..base+block` (a new publisher generation, or unsubscribed).
    pub fn reset(&mut self, base: u16, block: u16) {
        self.tracks
            .retain(|t, _| !(*t >= base && *t < base.saturating_add(block)));
    }

    /// The NACKs due now, per track, at most [`MAX_NACK`] sequence numbers each; `rtt` is the
    /// relay's round-trip time.
    pub fn due(&mut self, now: Instant, rtt: Duration) -> Vec<(u16, Vec<u16>)> {
        let base = rtt.max(MIN_RETRY);
        // The wait after try `n` (1-based): base, 2 base, 4 base.
        let wait_after = |tries: u8| base * (1u32 << (tries.saturating_sub(1)).min(8));
        let mut out = Vec::new();
        for (track, t) in &mut self.tracks {
            let mut seqs = Vec::new();
            let mut given_up = 0;
            t.missing.retain(|seq, m| {
                let waited = now.saturating_duration_since(m.last.unwrap_or(m.since));
                if m.tries >= MAX_TRIES || now.saturating_duration_since(m.since) > KEEP {
                    if waited >= wait_after(m.tries)
                        || now.saturating_duration_since(m.since) > KEEP
                    {
                        given_up += 1;
                        return false;
                    }
                    return true;
                }
                let ready = if m.tries == 0 {
                    waited >= REORDER
                } else {
                    waited >= wait_after(m.tries)
                };
                if ready && seqs.len() < MAX_NACK {
                    seqs.push(*seq);
                    m.tries += 1;
                    m.last = Some(now);
                }
                true
            });
            self.unrepaired += given_up;
            if given_up > 0 && !self.lost.contains(track) {
                self.lost.push(*track);
            }
            if !seqs.is_empty() {
                seqs.sort_unstable();
                self.nacked += seqs.len() as u64;
                out.push((*track, seqs));
            }
        }
        out
    }

    /// The tracks that lost a packet for good since the last call: their pictures cannot go
    /// on from what was lost, and their viewers need a keyframe.
    pub fn take_lost(&mut self) -> Vec<u16> {
        std::mem::take(&mut self.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_gap_is_nacked_after_the_reorder_window_and_counted_repaired_when_it_arrives() {
        let t0 = Instant::now();
        let mut g = GapTracker::default();
        for seq in [10, 11, 14] {
            g.on_packet(1, seq, t0);
        }
        assert!(
            g.due(t0 + 5 * MS, 20 * MS).is_empty(),
            "still in the reorder window"
        );
        assert_eq!(g.due(t0 + 11 * MS, 20 * MS), vec![(1, vec![12, 13])]);
        g.on_packet(1, 12, t0 + 30 * MS);
        assert_eq!(g.repaired, 1);
        // 13 is asked again after one RTT, then after two, then given up four RTTs later.
        assert!(g.due(t0 + 20 * MS, 20 * MS).is_empty());
        assert_eq!(g.due(t0 + 32 * MS, 20 * MS), vec![(1, vec![13])]);
        assert!(g.due(t0 + 53 * MS, 20 * MS).is_empty(), "the wait doubles");
        assert_eq!(g.due(t0 + 73 * MS, 20 * MS), vec![(1, vec![13])]);
        assert!(g.due(t0 + 100 * MS, 20 * MS).is_empty());
        assert_eq!(g.unrepaired, 0, "still waiting for the last try's answer");
        assert!(g.take_lost().is_empty(), "nothing given up yet");
        assert!(g.due(t0 + 154 * MS, 20 * MS).is_empty());
        assert_eq!(g.unrepaired, 1);
        assert_eq!(g.nacked, 4);
        assert_eq!(g.take_lost(), vec![1], "the track that lost 13 for good");
        assert!(g.take_lost().is_empty(), "told once");
    }

    #[test]
    fn on_a_starved_cpu_a_resend_slower_than_the_measured_rtt_still_counts_as_repaired() {
        // The relay's RTT says 1 ms; the resend takes 60 ms to be read (scheduling delay).
        let t0 = Instant::now();
        let mut g = GapTracker::default();
        g.on_packet(1, 1, t0);
        g.on_packet(1, 3, t0);
        assert_eq!(g.due(t0 + 11 * MS, MS), vec![(1, vec![2])]);
        for at in [20, 40, 60] {
            let _ = g.due(t0 + at * MS, MS);
        }
        assert!(g.on_packet(1, 2, t0 + 71 * MS), "it filled the gap");
        assert_eq!((g.repaired, g.unrepaired), (1, 0));
        assert!(
            g.nacked <= 3,
            "tries are spaced, not spent at once: {}",
            g.nacked
        );
    }

    #[test]
    fn reordering_inside_the_window_costs_no_nack() {
        let t0 = Instant::now();
        let mut g = GapTracker::default();
        for seq in [1, 3, 2, 4] {
            g.on_packet(0, seq, t0 + MS);
        }
        assert!(g.due(t0 + 50 * MS, 20 * MS).is_empty());
        assert_eq!((g.repaired, g.unrepaired, g.nacked), (0, 0, 0));
    }

    #[test]
    fn gaps_across_the_sequence_wrap_are_found_and_a_huge_jump_is_a_new_sequence() {
        let t0 = Instant::now();
        let mut g = GapTracker::default();
        g.on_packet(2, 65534, t0);
        g.on_packet(2, 1, t0);
        assert_eq!(
            g.due(t0 + 20 * MS, Duration::ZERO),
            vec![(2, vec![0, 65535])]
        );
        let mut g = GapTracker::default();
        g.on_packet(2, 100, t0);
        g.on_packet(2, 30_000, t0);
        assert!(g.due(t0 + 20 * MS, Duration::ZERO).is_empty());
    }

    #[test]
    fn the_cache_answers_only_for_the_exact_sequence_within_two_seconds() {
        let t0 = Instant::now();
        let mut c = SendCache::default();
        c.record(3, 7, t0, Bytes::from_static(b"seven"));
        assert_eq!(c.get(3, 7, t0 + KEEP).as_deref(), Some(&b"seven"[..]));
        assert_eq!(
            c.get(3, 7 + SLOTS as u16, t0),
            None,
            "same slot, other packet"
        );
        assert_eq!(c.get(3, 7, t0 + KEEP + MS), None);
        assert_eq!(c.get(4, 7, t0), None);
        c.forget(0, 8);
        assert_eq!(c.get(3, 7, t0), None);
    }
}
