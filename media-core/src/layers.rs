//! Simulcast layer selection: which of a publisher's layers one viewer receives.
//!
//! A publisher sends up to three encodings of the same picture (simulcast, RFC 8853). Each
//! viewer gets exactly one, chosen from that viewer's own bandwidth estimate (TWCC or REMB)
//! with hysteresis, or pinned by the viewer (`?layer=low|mid|high`):
//!
//! - a new viewer starts on the lowest layer (it starts fastest and fits any link);
//! - going **down** happens as soon as the estimate no longer carries the current layer:
//!   staying on it would build a queue and freeze the picture;
//! - going **up** needs the estimate to carry the higher layer, with headroom, for
//!   [`UP_HOLD`] without interruption, and not within [`SETTLE_AFTER_DOWN`] of a step down, so
//!   a link at the edge of a layer's bitrate does not flap between two layers.
//!
//! Layers are ranked by their measured bitrate, not by their rid: `q/h/f`, `l/m/h` and
//! `0/1/2` all exist in the wild, with opposite meanings. [`RateMeter`] measures them.

use std::time::{Duration, Instant};

/// Fraction of the estimate a layer may use (the rest is audio, RTCP, RTX and headroom).
const BUDGET_PERCENT: u64 = 85;
/// How long the estimate must carry a higher layer before the viewer moves up.
pub const UP_HOLD: Duration = Duration::from_secs(1);
/// After a step down, no step up for this long.
pub const SETTLE_AFTER_DOWN: Duration = Duration::from_secs(3);

/// A viewer's layer preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pin {
    /// Follow the bandwidth estimate.
    #[default]
    Auto,
    /// Always the lowest layer.
    Low,
    /// The middle layer (of three; the upper of two).
    Mid,
    /// Always the highest layer.
    High,
}

impl Pin {
    /// Parse the `layer` query value: `auto`, `low`, `mid`, `high` (case-insensitive; `q`/`h`/`f`
    /// and `l`/`m` are accepted as aliases).
    pub fn parse(text: &str) -> Option<Pin> {
        match text.to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Pin::Auto),
            "low" | "l" | "q" => Some(Pin::Low),
            "mid" | "medium" | "m" | "h" => Some(Pin::Mid),
            "high" | "f" | "full" => Some(Pin::High),
            _ => None,
        }
    }

    /// The name used in URLs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Pin::Auto => "auto",
            Pin::Low => "low",
            Pin::Mid => "mid",
            Pin::High => "high",
        }
    }
}

/// Chooses one viewer's layer. Ranks are indices into the layers sorted by bitrate, lowest
/// first.
#[derive(Debug, Clone, Default)]
pub struct LayerChooser {
    /// Since when the estimate has carried a layer above the current one, and which.
    up_since: Option<(Instant, usize)>,
    last_down: Option<Instant>,
}

impl LayerChooser {
    /// A chooser with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The rank this viewer should receive at `now`. `bitrates` are the active layers' bitrates
    /// in bit/s, lowest first (empty: returns 0); `current` is the rank received now (`None`:
    /// a new viewer); `estimate` the viewer's bandwidth estimate in bit/s, if any.
    pub fn choose(
        &mut self,
        now: Instant,
        bitrates: &[u64],
        current: Option<usize>,
        estimate: Option<u64>,
        pin: Pin,
    ) -> usize {
        let top = bitrates.len().saturating_sub(1);
        match pin {
            Pin::Low => return 0,
            Pin::Mid => return bitrates.len() / 2,
            Pin::High => return top,
            Pin::Auto => {}
        }
        let Some(current) = current.map(|c| c.min(top)) else {
            self.up_since = None;
            return 0;
        };
        let Some(estimate) = estimate else {
            return current;
        };
        let budget = estimate.saturating_mul(BUDGET_PERCENT) / 100;
        let fits = bitrates
            .iter()
            .rposition(|b| *b <= budget)
            .unwrap_or(0)
            .min(top);
        if fits < current {
            self.up_since = None;
            self.last_down = Some(now);
            return fits;
        }
        if fits == current {
            self.up_since = None;
            return current;
        }
        if self.last_down.is_some_and(|t| now < t + SETTLE_AFTER_DOWN) {
            return current;
        }
        let since = match self.up_since {
            // Keep the start of the streak while it carries at least one step up.
            Some((t, _)) => t,
            None => now,
        };
        self.up_since = Some((since, fits));
        if now >= since + UP_HOLD {
            self.up_since = None;
            return fits;
        }
        current
    }
}

/// Bytes over a sliding window, for a layer's bitrate: ten buckets of 100 ms.
#[derive(Debug, Clone)]
pub struct RateMeter {
    buckets: [u64; 10],
    /// Index of the bucket that `head` falls in, and that bucket's start.
    head: usize,
    head_start: Option<Instant>,
    last: Option<Instant>,
}

const BUCKET: Duration = Duration::from_millis(100);

impl Default for RateMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateMeter {
    /// An empty meter.
    pub fn new() -> Self {
        Self {
            buckets: [0; 10],
            head: 0,
            head_start: None,
            last: None,
        }
    }

    fn advance(&mut self, now: Instant) {
        let Some(start) = self.head_start else {
            self.head_start = Some(now);
            return;
        };
        if now < start + BUCKET {
            return;
        }
        let steps = (now.saturating_duration_since(start).as_millis() / BUCKET.as_millis()) as u64;
        for _ in 0..steps.min(10) {
            self.head = (self.head + 1) % self.buckets.len();
            self.buckets[self.head] = 0;
        }
        self.head_start = Some(start + BUCKET * steps.min(u64::from(u32::MAX)) as u32);
    }

    /// Count `bytes` seen at `now`.
    pub fn record(&mut self, now: Instant, bytes: usize) {
        self.advance(now);
        self.buckets[self.head] += bytes as u64;
        self.last = Some(now);
    }

    /// Bit/s over the last second (counting the partly filled current bucket as a whole).
    pub fn bitrate(&mut self, now: Instant) -> u64 {
        self.advance(now);
        self.buckets.iter().sum::<u64>() * 8
    }

    /// Whether anything was recorded in the last `within`.
    pub fn active(&self, now: Instant, within: Duration) -> bool {
        self.last
            .is_some_and(|t| now.saturating_duration_since(t) <= within)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary epoch
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RATES: [u64; 3] = [150_000, 500_000, 1_500_000];

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn a_new_viewer_starts_on_the_lowest_layer() {
        let mut c = LayerChooser::new();
        let t0 = Instant::now();
        assert_eq!(c.choose(t0, &RATES, None, Some(10_000_000), Pin::Auto), 0);
    }

    #[test]
    fn goes_up_only_after_the_estimate_held_for_the_hold_time() {
        let mut c = LayerChooser::new();
        let t0 = Instant::now();
        let est = Some(3_000_000);
        assert_eq!(c.choose(t0, &RATES, Some(0), est, Pin::Auto), 0);
        assert_eq!(c.choose(ms(t0, 500), &RATES, Some(0), est, Pin::Auto), 0);
        assert_eq!(c.choose(ms(t0, 1000), &RATES, Some(0), est, Pin::Auto), 2);
    }

    #[test]
    fn an_interrupted_streak_starts_over() {
        let mut c = LayerChooser::new();
        let t0 = Instant::now();
        c.choose(t0, &RATES, Some(0), Some(3_000_000), Pin::Auto);
        // The estimate drops to what the current layer carries: the streak ends.
        c.choose(ms(t0, 600), &RATES, Some(0), Some(200_000), Pin::Auto);
        assert_eq!(
            c.choose(ms(t0, 1100), &RATES, Some(0), Some(3_000_000), Pin::Auto),
            0
        );
        assert_eq!(
            c.choose(ms(t0, 2100), &RATES, Some(0), Some(3_000_000), Pin::Auto),
            2
        );
    }

    #[test]
    fn goes_down_at_once_and_waits_before_going_up_again() {
        let mut c = LayerChooser::new();
        let t0 = Instant::now();
        assert_eq!(c.choose(t0, &RATES, Some(2), Some(400_000), Pin::Auto), 0);
        // Plenty of bandwidth again, but within the settle time: stay.
        assert_eq!(
            c.choose(ms(t0, 1500), &RATES, Some(0), Some(3_000_000), Pin::Auto),
            0
        );
        assert_eq!(
            c.choose(ms(t0, 3000), &RATES, Some(0), Some(3_000_000), Pin::Auto),
            0
        );
        assert_eq!(
            c.choose(ms(t0, 4000), &RATES, Some(0), Some(3_000_000), Pin::Auto),
            2
        );
    }

    #[test]
    fn headroom_keeps_a_layer_that_exactly_fills_the_link_out_of_reach() {
        let mut c = LayerChooser::new();
        let t0 = Instant::now();
        assert_eq!(c.choose(t0, &RATES, Some(1), Some(500_000), Pin::Auto), 0);
    }

    #[test]
    fn pins_ignore_the_estimate() {
        let mut c = LayerChooser::new();
        let t0 = Instant::now();
        assert_eq!(c.choose(t0, &RATES, None, Some(1), Pin::High), 2);
        assert_eq!(c.choose(t0, &RATES, None, None, Pin::Mid), 1);
        assert_eq!(c.choose(t0, &RATES[..2], None, None, Pin::Mid), 1);
        assert_eq!(c.choose(t0, &RATES, Some(2), None, Pin::Low), 0);
    }

    #[test]
    fn without_an_estimate_the_viewer_stays_put() {
        let mut c = LayerChooser::new();
        let t0 = Instant::now();
        assert_eq!(c.choose(ms(t0, 5000), &RATES, Some(1), None, Pin::Auto), 1);
    }

    #[test]
    fn pin_names_parse() {
        assert_eq!(Pin::parse("HIGH"), Some(Pin::High));
        assert_eq!(Pin::parse("q"), Some(Pin::Low));
        assert_eq!(Pin::parse("auto"), Some(Pin::Auto));
        assert_eq!(Pin::parse("ultra"), None);
    }

    #[test]
    fn meter_measures_a_steady_rate_and_forgets_old_bytes() {
        let t0 = Instant::now();
        let mut m = RateMeter::new();
        // 1,250 bytes every 10 ms = 1 Mbit/s.
        for i in 0..300 {
            m.record(ms(t0, i * 10), 1_250);
        }
        let rate = m.bitrate(ms(t0, 2_999));
        assert!((900_000..=1_100_000).contains(&rate), "{rate}");
        assert!(m.active(ms(t0, 3_100), Duration::from_millis(500)));
        assert_eq!(m.bitrate(ms(t0, 5_000)), 0);
        assert!(!m.active(ms(t0, 5_000), Duration::from_millis(500)));
    }

    proptest! {
        #[test]
        fn the_choice_is_always_a_valid_rank(
            steps in proptest::collection::vec((0u64..5_000, 0u64..5_000_000, 0usize..4), 1..60),
            layers in 1usize..4,
        ) {
            let mut c = LayerChooser::new();
            let t0 = Instant::now();
            let mut now = t0;
            let mut current = None;
            for (dt, est, pin) in steps {
                now += Duration::from_millis(dt);
                let pin = [Pin::Auto, Pin::Low, Pin::Mid, Pin::High][pin];
                let r = c.choose(now, &RATES[..layers], current, Some(est), pin);
                prop_assert!(r < layers);
                if pin == Pin::Auto {
                    if let Some(cur) = current {
                        // Never up beyond what the estimate carries.
                        if r > cur {
                            prop_assert!(RATES[r] <= est * BUDGET_PERCENT / 100);
                        }
                    }
                }
                current = Some(r);
            }
        }
    }
}
