//! Late media at an edge. A relay path that stalled (the upstream or this edge starved of CPU,
//! a congested link, a process paused) delivers its backlog all at once: packets seconds
//! behind their own media clock. Fed to viewers, they replay the past and keep every viewer
//! that far behind live. The edge drops them instead and asks the upstream for a fresh
//! keyframe, so viewers jump back to live.
//!
//! Sans-IO: each packet's arrival instant and its time go in, a verdict comes out. Its time is
//! the upstream's stamp (when the packet entered the upstream, [`Clock::Stamp`]) where the
//! upstream sends one, so that only the relay path's delay counts: on the media time
//! ([`Clock::Media`], an older upstream) a publisher that falls behind its own clock looks
//! like a stalled path, and the edge dropped what the origin's viewers played. A
//! packet's *offset* is its arrival time minus its time; the *baseline* is the smallest
//! offset seen over the last one to two windows (a packet that crossed an empty path). A packet
//! whose offset exceeds the baseline by more than [`LATE_AFTER`] is late.
//!
//! Three cases are not lateness, and rebase the track instead: a jump of more than
//! [`DISCONTINUITY`] (the media clock itself jumped: the publisher restarted its encoder);
//! lateness that does not drain for [`STEP_AFTER`] (a step in the delay: the source fell
//! behind its own clock, or the path got slower; there is no queue to skip); and lateness that
//! lasts [`REBASE_AFTER`] (the path is now slower for good: dropping everything would leave
//! viewers with nothing at all). A backlog that drains, even slowly (a congestion window
//! recovering after a stall), is dropped rather than shown until then.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sfu::AUDIO_TRACK;

/// A packet this far behind the track's baseline is dropped.
pub const LATE_AFTER: Duration = Duration::from_millis(500);
/// Further behind than this is a jump of the media clock, not a queue: rebase.
pub const DISCONTINUITY: Duration = Duration::from_secs(5);
/// Late without a break for this long: the path's delay changed for good; rebase.
pub const REBASE_AFTER: Duration = Duration::from_secs(5);
/// Late for this long without draining (the offsets of the late run did not come down by
/// [`DRAINING`]): a step in the delay, not a backlog; rebase. A source that falls behind its
/// own clock (an encoder starved of CPU at the publisher) looks like this: its packets come
/// paced, each as late as the one before, and there is no queue to skip, so dropping them
/// would only leave the edge's viewers with nothing while the origin's play them.
pub const STEP_AFTER: Duration = Duration::from_secs(1);
/// A late run whose offsets came down by this much is a backlog draining.
pub const DRAINING: Duration = Duration::from_millis(250);
/// At most one keyframe request per video track this often.
pub const ASK_EVERY: Duration = Duration::from_secs(1);
/// After late packets were dropped on a track, packets filling its gaps (NACK resends,
/// reordered packets) are dropped too for this long: they belong to the stalled backlog (the
/// upstream's resend cache holds 2 s).
pub const REPAIR_QUIET: Duration = Duration::from_secs(3);
/// The baseline is the smallest offset of the current window and the one before.
const WINDOW: Duration = Duration::from_secs(5);

/// What a packet's time is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Its RTP timestamp (90 kHz video, 48 kHz audio): a late publisher looks late too.
    Media,
    /// The upstream's stamp (ms): when it entered the upstream, so only the relay path's
    /// delay counts.
    Stamp,
}

/// Verdict on one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it.
    Forward {
        /// Video packets of this track were dropped since the last one forwarded: the picture
        /// cannot go on from what is missing, so the stream starts again for the viewers (as
        /// a new source they wait for a keyframe, and their sequence numbers continue without
        /// the gap).
        restart: bool,
        /// Ask the upstream for a keyframe on this track now (needed since a restart; at most
        /// once per [`ASK_EVERY`], asked while packets come on time so it is not late itself).
        ask_keyframe: bool,
    },
    /// Drop it: it is late.
    Late,
}

/// Forward, nothing else to do.
pub const FRESH: Verdict = Verdict::Forward {
    restart: false,
    ask_keyframe: false,
};

/// Per relay track: its media clock and offsets.
struct Track {
    /// RTP ticks per second.
    clock: f64,
    /// The last timestamp, and the timestamp unwrapped to 64 bits.
    last_ts: u32,
    ext_ts: i64,
    /// Smallest offset (seconds) in the current window and in the previous one.
    current: f64,
    previous: f64,
    window_from: Instant,
    /// Since when every packet has been late.
    late_since: Option<Instant>,
    /// The first offset of the current late run, and its smallest since.
    late_first: f64,
    late_min: f64,
    /// The last packet judged late.
    last_late: Option<Instant>,
    /// Video packets were dropped since the last one forwarded.
    dropped: bool,
    /// A keyframe is needed (since a restart) and not asked for yet.
    want_keyframe: bool,
    asked: Option<Instant>,
}

/// Lateness of every track of one relay connection.
pub struct Freshness {
    epoch: Instant,
    tracks: HashMap<u16, Track>,
    /// Packets judged late so far.
    pub late: u64,
}

/// The RTP timestamp of a packet (none if it is too short to be RTP).
pub fn rtp_time(rtp: &[u8]) -> Option<u32> {
    (rtp.len() >= 12).then(|| u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]))
}

impl Freshness {
    /// No track seen yet; `epoch` is any instant before the first packet.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            tracks: HashMap::new(),
            late: 0,
        }
    }

    /// Forget tracks `base..base+len` (a channel got a new publisher, or was let go).
    pub fn reset(&mut self, base: u16, len: u16) {
        self.tracks
            .retain(|t, _| !(base..base.saturating_add(len)).contains(t));
    }

    /// Judge a packet that fills a gap of `track` (resent after a NACK, or reordered). Its
    /// media time is behind by nature (a cold edge's cache burst is repaired this way), so it
    /// is forwarded, unless the track dropped late packets within [`REPAIR_QUIET`]: then it is
    /// the stalled backlog coming back through repair, and is late too.
    pub fn observe_repair(&mut self, track: u16, core: u16, now: Instant) -> Verdict {
        let Some(t) = self.tracks.get_mut(&track) else {
            return FRESH;
        };
        let quiet = t
            .last_late
            .is_none_or(|at| now.saturating_duration_since(at) >= REPAIR_QUIET);
        if quiet {
            return FRESH;
        }
        t.dropped |= core != AUDIO_TRACK;
        self.late += 1;
        Verdict::Late
    }

    /// Judge one packet of relay track `track` by its media time (`core` is its track within
    /// the channel: [`AUDIO_TRACK`] is Opus at 48 kHz, the others video at 90 kHz).
    pub fn observe(&mut self, track: u16, core: u16, ts: u32, now: Instant) -> Verdict {
        self.observe_on(track, core, ts, Clock::Media, now)
    }

    /// Judge one packet whose time `ts` is on `clock`.
    pub fn observe_on(
        &mut self,
        track: u16,
        core: u16,
        ts: u32,
        clock: Clock,
        now: Instant,
    ) -> Verdict {
        let arrival = now.saturating_duration_since(self.epoch).as_secs_f64();
        let Some(t) = self.tracks.get_mut(&track) else {
            let clock = match clock {
                Clock::Stamp => 1_000.0,
                Clock::Media if core == AUDIO_TRACK => 48_000.0,
                Clock::Media => 90_000.0,
            };
            let offset = arrival - f64::from(ts) / clock;
            self.tracks.insert(
                track,
                Track {
                    clock,
                    last_ts: ts,
                    ext_ts: i64::from(ts),
                    current: offset,
                    previous: offset,
                    window_from: now,
                    late_since: None,
                    late_first: 0.0,
                    late_min: 0.0,
                    last_late: None,
                    dropped: false,
                    want_keyframe: false,
                    asked: None,
                },
            );
            return FRESH;
        };
        // Unwrap: the signed distance from the last timestamp (reordering goes backwards).
        t.ext_ts += i64::from(ts.wrapping_sub(t.last_ts) as i32);
        t.last_ts = ts;
        let offset = arrival - t.ext_ts as f64 / t.clock;
        if now.saturating_duration_since(t.window_from) >= WINDOW {
            t.previous = t.current;
            t.current = offset;
            t.window_from = now;
        }
        let baseline = t.current.min(t.previous);
        let behind = offset - baseline;
        let late = behind > LATE_AFTER.as_secs_f64();
        let late_for = t.late_since.map(|s| now.saturating_duration_since(s));
        if late && t.late_since.is_some() {
            t.late_min = t.late_min.min(offset);
        }
        let drained = t.late_first - t.late_min;
        let step = late_for.is_some_and(|d| d >= STEP_AFTER)
            && drained < DRAINING.as_secs_f64()
            && offset - t.late_min < DRAINING.as_secs_f64();
        let stuck = step || late_for.is_some_and(|d| d >= REBASE_AFTER);
        if !late || behind > DISCONTINUITY.as_secs_f64() || stuck {
            if late {
                // Rebase: this packet's offset is the track's baseline from now on.
                t.current = offset;
                t.previous = offset;
                t.window_from = now;
            } else {
                t.current = t.current.min(offset);
            }
            t.late_since = None;
            let restart = std::mem::take(&mut t.dropped);
            t.want_keyframe |= restart;
            let ask_keyframe = t.want_keyframe
                && t.asked
                    .is_none_or(|a| now.saturating_duration_since(a) >= ASK_EVERY);
            if ask_keyframe {
                t.want_keyframe = false;
                t.asked = Some(now);
            }
            return Verdict::Forward {
                restart,
                ask_keyframe,
            };
        }
        if t.late_since.is_none() {
            t.late_since = Some(now);
            t.late_first = offset;
            t.late_min = offset;
        }
        t.last_late = Some(now);
        t.dropped |= core != AUDIO_TRACK;
        self.late += 1;
        Verdict::Late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIDEO: u16 = 9;
    const AUDIO: u16 = 8;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A 30 fps video track: frame `i` has media time `i / 30` s, sent at `start + i / 30` s.
    fn frame_ts(i: u64, first: u32) -> u32 {
        first.wrapping_add((i * 3000) as u32)
    }

    /// A tracker that has seen `frames` video frames at 30 fps, each on time.
    fn on_time_for(frames: u64, t0: Instant) -> Freshness {
        let mut f = Freshness::new(t0);
        for i in 0..frames {
            assert_eq!(
                f.observe(VIDEO, 1, frame_ts(i, 0), t0 + ms(i * 1000 / 30)),
                FRESH
            );
        }
        f
    }

    #[test]
    fn a_steady_stream_with_jitter_is_all_fresh() {
        let t0 = Instant::now();
        let mut f = Freshness::new(t0);
        for i in 0..3000u64 {
            // Up to 120 ms of jitter, in a pattern that is not periodic with the frames.
            let jitter = (i * 37) % 120;
            let at = t0 + ms(i * 1000 / 30 + jitter);
            assert_eq!(f.observe(VIDEO, 1, frame_ts(i, 7), at), FRESH, "frame {i}");
        }
        assert_eq!(f.late, 0);
    }

    #[test]
    fn a_backlog_after_a_stall_is_dropped_and_the_first_packet_on_time_asks_for_a_keyframe() {
        let t0 = Instant::now();
        let mut f = Freshness::new(t0);
        let mut verdicts = Vec::new();
        for i in 0..90u64 {
            let at = t0 + ms(i * 1000 / 30);
            assert_eq!(f.observe(VIDEO, 1, frame_ts(i, 0), at), FRESH);
        }
        // A 2 s stall: frames 90..150 (media 3.0..5.0 s) all arrive at 5.01 s, then live again.
        let resume = t0 + ms(5010);
        for i in 90..150u64 {
            verdicts.push((i, f.observe(VIDEO, 1, frame_ts(i, 0), resume)));
        }
        for i in 150..180u64 {
            let at = t0 + ms(i * 1000 / 30);
            verdicts.push((i, f.observe(VIDEO, 1, frame_ts(i, 0), at)));
        }
        let late: Vec<u64> = verdicts
            .iter()
            .filter(|(_, v)| *v == Verdict::Late)
            .map(|(i, _)| *i)
            .collect();
        // Frames more than 500 ms old at 5.01 s: media time <= 4.5 s, frames 90..=135.
        assert_eq!(late, (90..136).collect::<Vec<_>>());
        // One keyframe request, with the first packet on time again: asked for earlier, the
        // keyframe would have queued behind the backlog.
        let asks: Vec<u64> = verdicts
            .iter()
            .filter(|(_, v)| {
                *v == Verdict::Forward {
                    restart: true,
                    ask_keyframe: true,
                }
            })
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(asks, [136]);
        assert_eq!(f.late, 46);
    }

    #[test]
    fn each_late_run_restarts_the_stream_and_keyframe_requests_stay_one_per_second() {
        let t0 = Instant::now();
        let mut f = on_time_for(60, t0);
        // A backlog drained in three bursts 200 ms apart, with packets on time in between.
        let mut verdicts = Vec::new();
        for (burst, at) in [(60u64, 3000u64), (70, 3200), (80, 3400)] {
            for i in burst..burst + 5 {
                verdicts.push(f.observe(VIDEO, 1, frame_ts(i, 0), t0 + ms(at)));
            }
            let live = at / 33 + 1;
            verdicts.push(f.observe(VIDEO, 1, frame_ts(live, 0), t0 + ms(live * 1000 / 30)));
        }
        let restarts = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Forward { restart: true, .. }))
            .count();
        let asks = verdicts
            .iter()
            .filter(|v| {
                matches!(
                    v,
                    Verdict::Forward {
                        ask_keyframe: true,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(
            restarts, 3,
            "every gap made by dropping is a restart: {verdicts:?}"
        );
        assert_eq!(
            asks, 1,
            "one keyframe request within the second: {verdicts:?}"
        );
        // After a second, the keyframe still needed is asked for again.
        let v = f.observe(VIDEO, 1, frame_ts(135, 0), t0 + ms(4500));
        assert_eq!(
            v,
            Verdict::Forward {
                restart: false,
                ask_keyframe: true
            }
        );
    }

    #[test]
    fn repairs_are_forwarded_unless_the_track_just_dropped_a_backlog() {
        let t0 = Instant::now();
        let mut f = on_time_for(90, t0);
        // A resend of a packet 2 s old (a cold edge's cache burst) is what repair is for.
        assert_eq!(f.observe_repair(VIDEO, 1, t0 + ms(3000)), FRESH);
        // After a stall's backlog was dropped, resends of it are the backlog too.
        assert_eq!(
            f.observe(VIDEO, 1, frame_ts(90, 0), t0 + ms(5000)),
            Verdict::Late
        );
        assert_eq!(f.observe_repair(VIDEO, 1, t0 + ms(5100)), Verdict::Late);
        // The gap it leaves restarts the stream at the next packet on time.
        let v = f.observe(VIDEO, 1, frame_ts(151, 0), t0 + ms(5033));
        assert!(matches!(v, Verdict::Forward { restart: true, .. }), "{v:?}");
        // Once the backlog is past, repairs are forwarded again.
        assert_eq!(f.observe_repair(VIDEO, 1, t0 + ms(8200)), FRESH);
        assert_eq!(f.observe_repair(7, 1, t0), FRESH, "an unknown track");
    }

    #[test]
    fn late_audio_is_dropped_and_asks_for_no_keyframe() {
        let t0 = Instant::now();
        let mut f = Freshness::new(t0);
        // 20 ms Opus packets: 960 ticks at 48 kHz.
        for i in 0..50u32 {
            let at = t0 + ms(u64::from(i) * 20);
            assert_eq!(f.observe(AUDIO, AUDIO_TRACK, i * 960, at), FRESH);
        }
        let v = f.observe(AUDIO, AUDIO_TRACK, 50 * 960, t0 + ms(1000 + 900));
        assert_eq!(v, Verdict::Late);
        // Audio needs no keyframe: the next packet on time is simply forwarded.
        assert_eq!(
            f.observe(AUDIO, AUDIO_TRACK, 96 * 960, t0 + ms(1920)),
            FRESH
        );
    }

    #[test]
    fn timestamps_wrapping_past_u32_max_stay_fresh() {
        let t0 = Instant::now();
        let mut f = Freshness::new(t0);
        let first = u32::MAX - 3000 * 45;
        for i in 0..300u64 {
            let at = t0 + ms(i * 1000 / 30);
            assert_eq!(
                f.observe(VIDEO, 1, frame_ts(i, first), at),
                FRESH,
                "frame {i}"
            );
        }
    }

    #[test]
    fn a_jump_of_the_media_clock_rebases_instead_of_dropping() {
        let t0 = Instant::now();
        let mut f = Freshness::new(t0);
        for i in 0..60u64 {
            let at = t0 + ms(i * 1000 / 30);
            assert_eq!(f.observe(VIDEO, 1, frame_ts(i, 90_000 * 60), at), FRESH);
        }
        // The encoder restarted: its clock is 60 s behind; it is not 60 s of queue.
        for i in 0..60u64 {
            let at = t0 + ms(2000 + i * 1000 / 30);
            assert_eq!(f.observe(VIDEO, 1, frame_ts(i, 0), at), FRESH, "frame {i}");
        }
        assert_eq!(f.late, 0);
    }

    #[test]
    fn a_path_that_stays_slower_is_accepted_after_the_rebase_time() {
        let t0 = Instant::now();
        let mut f = Freshness::new(t0);
        for i in 0..60u64 {
            let at = t0 + ms(i * 1000 / 30);
            assert_eq!(f.observe(VIDEO, 1, frame_ts(i, 0), at), FRESH);
        }
        // From frame 60 on (arriving at 2.8 s), every packet takes 800 ms longer, for good.
        let verdicts: Vec<(Instant, Verdict)> = (60..300u64)
            .map(|i| {
                let at = t0 + ms(i * 1000 / 30 + 800);
                (at, f.observe(VIDEO, 1, frame_ts(i, 0), at))
            })
            .collect();
        let first_fresh = verdicts
            .iter()
            .position(|(_, v)| *v != Verdict::Late)
            .expect("the track is accepted again");
        assert!(first_fresh > 0, "the first slower packets are late");
        assert_eq!(
            verdicts[first_fresh].1,
            Verdict::Forward {
                restart: true,
                ask_keyframe: true
            },
            "the rebase restarts the stream and asks for a keyframe"
        );
        assert!(
            verdicts[first_fresh + 1..].iter().all(|(_, v)| *v == FRESH),
            "fresh for good once rebased"
        );
        let late_for = verdicts[first_fresh].0 - verdicts[0].0;
        assert!(late_for <= REBASE_AFTER + ms(50), "{late_for:?}");
    }

    #[test]
    fn reset_forgets_a_blocks_tracks_only() {
        let t0 = Instant::now();
        let mut f = Freshness::new(t0);
        f.observe(1, 1, 0, t0);
        f.observe(9, 1, 0, t0);
        f.reset(8, 8);
        assert!(f.tracks.contains_key(&1));
        assert!(!f.tracks.contains_key(&9));
        // A new publisher on track 9 starts its own baseline: an old clock is not "late".
        assert_eq!(f.observe(9, 1, 0, t0 + ms(3000)), FRESH);
        assert_eq!(f.observe(9, 1, 3000, t0 + ms(3033)), FRESH);
    }

    #[test]
    fn rtp_time_reads_the_timestamp_field() {
        let mut p = vec![0x80, 96, 0, 1, 0x01, 0x02, 0x03, 0x04, 0, 0, 0, 1];
        assert_eq!(rtp_time(&p), Some(0x0102_0304));
        p.truncate(11);
        assert_eq!(rtp_time(&p), None);
    }

    #[test]
    fn a_source_falling_behind_its_clock_by_a_step_is_accepted_after_the_step_time() {
        let t0 = Instant::now();
        let mut f = on_time_for(30, t0);
        // From frame 30 on the publisher's encoder runs 700 ms behind its clock for good:
        // paced packets, each as late as the one before (with 60 ms of jitter).
        let verdicts: Vec<(Instant, Verdict)> = (30..120u64)
            .map(|i| {
                let at = t0 + ms(i * 1000 / 30 + 700 + (i * 37) % 60);
                (at, f.observe(VIDEO, 1, frame_ts(i, 0), at))
            })
            .collect();
        let first_fresh = verdicts
            .iter()
            .position(|(_, v)| *v != Verdict::Late)
            .expect("the step is accepted");
        let late_for = verdicts[first_fresh].0 - verdicts[0].0;
        assert!(
            late_for >= STEP_AFTER && late_for <= STEP_AFTER + ms(100),
            "accepted after the step time, not the rebase time: {late_for:?}"
        );
        assert!(verdicts[first_fresh + 1..].iter().all(|(_, v)| *v == FRESH));
    }

    #[test]
    fn a_backlog_draining_slowly_is_still_dropped_past_the_step_time() {
        let t0 = Instant::now();
        let mut f = on_time_for(30, t0);
        // A 2 s stall, then the backlog comes at 1.5x real time: it drains in 4 s.
        let resume = t0 + ms(3000);
        let mut late_at = Vec::new();
        for i in 30..200u64 {
            let media = ms(i * 1000 / 30);
            let at = resume + (media - ms(1000)) * 2 / 3;
            if at > t0 + media + ms(2000) {
                break;
            }
            if f.observe(VIDEO, 1, frame_ts(i, 0), at) == Verdict::Late {
                late_at.push(at);
            }
        }
        let dropped_for = *late_at.last().unwrap() - late_at[0];
        assert!(
            dropped_for > STEP_AFTER + ms(500),
            "a draining backlog is not taken for a step: dropped for {dropped_for:?}"
        );
    }

    #[test]
    fn on_the_upstreams_stamps_a_publisher_falling_behind_its_clock_is_not_late() {
        let t0 = Instant::now();
        let (mut media, mut stamped) = (Freshness::new(t0), Freshness::new(t0));
        let (mut late_media, mut late_stamped) = (0, 0);
        for i in 0..150u64 {
            // The encoder falls 800 ms behind its clock at frame 30; the relay path stays
            // empty: each packet reaches the edge 5 ms after it entered the upstream.
            let behind = if i >= 30 { 800 } else { 0 };
            let entered = ms(i * 1000 / 30 + behind);
            let at = t0 + entered + ms(5);
            if media.observe(VIDEO, 1, frame_ts(i, 0), at) == Verdict::Late {
                late_media += 1;
            }
            let stamp = entered.as_millis() as u32;
            if stamped.observe_on(VIDEO, 1, stamp, Clock::Stamp, at) == Verdict::Late {
                late_stamped += 1;
            }
        }
        assert!(
            late_media > 0,
            "on the media clock the publisher's delay looks late"
        );
        assert_eq!(late_stamped, 0, "on the stamps nothing is late");
    }
}
