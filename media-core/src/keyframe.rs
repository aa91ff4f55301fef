//! Keyframe-request coalescing.
//!
//! Viewers ask for keyframes (PLI/FIR) often: every new viewer, every decoder that lost a
//! packet, and some peers (aiortc) every frame until they can decode. The publisher must see
//! at most one request per interval per track, but a request made inside the interval must not
//! be lost: it is deferred to the end of the interval.

use std::time::{Duration, Instant};

/// What the caller should do after [`KeyframeCoalescer::request`] or [`KeyframeCoalescer::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send one keyframe request to the publisher now.
    SendNow,
    /// Nothing to send now; a deferred request is due at this instant.
    DeferredUntil(Instant),
    /// Nothing to send and nothing pending.
    Idle,
}

/// Coalesces keyframe requests for one publisher track.
#[derive(Debug, Clone)]
pub struct KeyframeCoalescer {
    interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeCoalescer {
    /// A coalescer letting through at most one request per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, last_sent: None, pending: false }
    }

    /// A viewer (or the SFU itself) wants a keyframe at `now`.
    pub fn request(&mut self, now: Instant) -> Decision {
        self.pending = true;
        self.poll(now)
    }

    /// Call at (or after) a deferred deadline; also safe to call any time.
    pub fn poll(&mut self, now: Instant) -> Decision {
        if !self.pending {
            return Decision::Idle;
        }
        match self.last_sent {
            Some(last) if now < last + self.interval => Decision::DeferredUntil(last + self.interval),
            _ => {
                self.pending = false;
                self.last_sent = Some(now);
                Decision::SendNow
            }
        }
    }

    /// The instant a deferred request becomes due, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(last)) => Some(last + self.interval),
            _ => None,
        }
    }

    /// Forget history (a new publisher took over the track).
    pub fn reset(&mut self) {
        self.last_sent = None;
        self.pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_request_goes_out_at_once() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::new(300 * MS);
        assert_eq!(c.request(t0), Decision::SendNow);
        assert_eq!(c.poll(t0 + 10 * MS), Decision::Idle);
    }

    #[test]
    fn burst_inside_interval_becomes_one_deferred_request() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::new(300 * MS);
        assert_eq!(c.request(t0), Decision::SendNow);
        for i in 1..30 {
            assert_eq!(c.request(t0 + i * 10 * MS), Decision::DeferredUntil(t0 + 300 * MS));
        }
        assert_eq!(c.deadline(), Some(t0 + 300 * MS));
        assert_eq!(c.poll(t0 + 299 * MS), Decision::DeferredUntil(t0 + 300 * MS));
        assert_eq!(c.poll(t0 + 300 * MS), Decision::SendNow);
        assert_eq!(c.poll(t0 + 301 * MS), Decision::Idle);
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn reset_lets_the_next_request_through() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::new(300 * MS);
        c.request(t0);
        c.reset();
        assert_eq!(c.request(t0 + MS), Decision::SendNow);
    }

    proptest! {
        /// Whatever the request pattern: sends are at least `interval` apart, and the last
        /// request is always followed by a send (none is lost).
        #[test]
        fn sends_are_spaced_and_none_is_lost(gaps in proptest::collection::vec(0u64..700, 1..80)) {
            let t0 = Instant::now();
            let interval = 300 * MS;
            let mut c = KeyframeCoalescer::new(interval);
            let mut sends: Vec<Instant> = Vec::new();
            let mut now = t0;
            let mut last_request = t0;
            for gap in gaps {
                now += Duration::from_millis(gap);
                if let Some(d) = c.deadline() {
                    if d <= now && c.poll(d) == Decision::SendNow { sends.push(d); }
                }
                last_request = now;
                if c.request(now) == Decision::SendNow { sends.push(now); }
            }
            if let Some(d) = c.deadline() {
                prop_assert_eq!(c.poll(d), Decision::SendNow);
                sends.push(d);
            }
            for w in sends.windows(2) {
                prop_assert!(w[1] - w[0] >= interval);
            }
            prop_assert!(*sends.last().unwrap() >= last_request);
        }
    }
}
