//! Keep an outgoing RTP timeline continuous across publisher changes.
//!
//! When OBS reconnects with the same stream key, the new publisher starts a fresh RTP
//! timestamp timeline (random start). Viewers stay connected, so the SFU maps the new
//! timeline onto the old one: the first sample of the new source is placed where the old
//! timeline would be by now (last output + wall-clock time since, at the media clock rate).
//! Within one source, timestamps pass through shifted by a constant offset, so relative timing
//! is untouched.

use std::time::Instant;

/// Identifies one publisher generation feeding a timeline.
pub type SourceGeneration = u64;

/// Maps the timestamps of successive sources onto one continuous output timeline.
#[derive(Debug, Clone)]
pub struct Rebaser {
    clock_hz: u32,
    source: Option<SourceGeneration>,
    /// Offset per simulcast layer of the current source (layer 0 without simulcast).
    offsets: [Option<i128>; MAX_LAYERS],
    last_out: Option<(u64, Instant)>,
}

/// Simulcast layers a timeline keeps apart (RFC 8853 allows more; browsers and OBS send <= 3).
pub const MAX_LAYERS: usize = 4;

impl Rebaser {
    /// A timeline at `clock_hz` ticks per second (90 000 for video, 48 000 for Opus).
    pub fn new(clock_hz: u32) -> Self {
        Self {
            clock_hz: clock_hz.max(1),
            source: None,
            offsets: [None; MAX_LAYERS],
            last_out: None,
        }
    }

    /// The output timestamp for a sample with `ticks` from `source`, observed at `now`.
    pub fn map(&mut self, source: SourceGeneration, ticks: u64, now: Instant) -> u64 {
        self.map_layer(source, 0, ticks, now)
    }

    /// Like [`Rebaser::map`] for one simulcast `layer` of the source. Each layer has its own
    /// random timestamp base; its first sample is placed where the timeline is by the wall
    /// clock, so the layers line up to within their arrival jitter and a viewer switched
    /// between them sees time run on. Layers at or above [`MAX_LAYERS`] share the last slot.
    pub fn map_layer(
        &mut self,
        source: SourceGeneration,
        layer: usize,
        ticks: u64,
        now: Instant,
    ) -> u64 {
        if self.source != Some(source) {
            self.offsets = [None; MAX_LAYERS];
            self.source = Some(source);
        }
        let slot = layer.min(MAX_LAYERS - 1);
        let offset = match self.offsets[slot] {
            Some(o) => o,
            None => {
                let o = match self.last_out {
                    None => 0,
                    Some((last, at)) => {
                        let elapsed = now.saturating_duration_since(at);
                        let advance = (elapsed.as_nanos() * u128::from(self.clock_hz)
                            / 1_000_000_000)
                            .max(1) as i128;
                        i128::from(last) + advance - i128::from(ticks)
                    }
                };
                self.offsets[slot] = Some(o);
                o
            }
        };
        let out = (i128::from(ticks) + offset).clamp(0, i128::from(u64::MAX)) as u64;
        self.last_out = Some((out, now));
        out
    }

    /// The current source, if any sample has been mapped.
    pub fn source(&self) -> Option<SourceGeneration> {
        self.source
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary epoch
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[test]
    fn first_source_passes_through_unchanged() {
        let t0 = Instant::now();
        let mut r = Rebaser::new(90_000);
        assert_eq!(r.map(1, 1_000, t0), 1_000);
        assert_eq!(r.map(1, 4_000, t0 + Duration::from_millis(33)), 4_000);
    }

    #[test]
    fn new_source_continues_where_wall_clock_says() {
        let t0 = Instant::now();
        let mut r = Rebaser::new(90_000);
        r.map(1, 900_000, t0);
        // Publisher reconnects 2 s later with a random timeline.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(r.map(2, 12_345, t1), 900_000 + 180_000);
        // Relative timing of the new source is preserved.
        assert_eq!(
            r.map(2, 12_345 + 3_000, t1 + Duration::from_millis(33)),
            900_000 + 183_000
        );
    }

    #[test]
    fn switch_at_same_instant_still_moves_forward() {
        let t0 = Instant::now();
        let mut r = Rebaser::new(48_000);
        r.map(1, 500, t0);
        assert!(r.map(2, 0, t0) > 500);
    }

    #[test]
    fn simulcast_layers_with_their_own_bases_line_up_by_wall_clock() {
        let t0 = Instant::now();
        let mut r = Rebaser::new(90_000);
        assert_eq!(r.map_layer(1, 0, 10_000, t0), 10_000);
        // The high layer's first packet arrives 2 ms later with an unrelated base.
        let t1 = t0 + Duration::from_millis(2);
        assert_eq!(r.map_layer(1, 2, 7_000_000, t1), 10_180);
        // Both continue with their own relative timing.
        let t2 = t0 + Duration::from_millis(33);
        assert_eq!(r.map_layer(1, 0, 13_000, t2), 13_000);
        assert_eq!(r.map_layer(1, 2, 7_003_000, t2), 13_180);
        // A new publisher resets every layer.
        let t3 = t0 + Duration::from_secs(1);
        let out = r.map_layer(2, 2, 5, t3);
        assert_eq!(out, 13_180 + 90_000 - 2_970);
    }

    proptest! {
        /// Output never goes backwards at a source switch, whatever the input timelines.
        #[test]
        fn switch_is_monotonic(a in any::<u32>(), b in any::<u32>(), gap_ms in 0u64..10_000, rate in prop_oneof![Just(8_000u32), Just(48_000), Just(90_000)]) {
            let t0 = Instant::now();
            let mut r = Rebaser::new(rate);
            let before = r.map(1, u64::from(a), t0);
            let after = r.map(2, u64::from(b), t0 + Duration::from_millis(gap_ms));
            prop_assert!(after > before);
            let expected = u128::from(gap_ms) * u128::from(rate) / 1000;
            prop_assert_eq!(u128::from(after - before), expected.max(1));
        }

        #[test]
        fn never_panics(samples in proptest::collection::vec((0u64..4, any::<u64>(), 0u64..100_000), 0..50)) {
            let t0 = Instant::now();
            let mut r = Rebaser::new(90_000);
            for (src, ticks, at_ms) in samples {
                let _ = r.map(src, ticks, t0 + Duration::from_millis(at_ms));
            }
        }
    }
}
