//! Keyframe-request coalescing.
//!
//! Viewers ask for keyframes (PLI/FIR) often: every new viewer, every decoder that lost a
//! packet, and some peers (aiortc) every frame until they can decode. The publisher must see
//! at most one request per interval per track, and no need may be lost:
//!
//! - while a request is in flight (sent less than one interval ago and no keyframe seen since),
//!   new requests are absorbed: the keyframe on its way serves them too;
//! - after a keyframe arrived, a request inside the interval is deferred to the interval's end;
//! - a request whose keyframe never came (lost) is repeated once the interval has passed.

use std::time::{Duration, Instant};

/// What the caller should do after [`KeyframeCoalescer::request`] or [`KeyframeCoalescer::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send one keyframe request to the publisher now.
    SendNow,
    /// Nothing to send now; a deferred request is due at this instant.
    DeferredUntil(Instant),
    /// Nothing to send: nothing pending, or a keyframe is already on its way.
    Idle,
}

/// Coalesces keyframe requests for one publisher track.
#[derive(Debug, Clone)]
pub struct KeyframeCoalescer {
    interval: Duration,
    last_sent: Option<Instant>,
    /// A request was sent and its keyframe has not been seen yet.
    in_flight: bool,
    /// A request arrived that the in-flight one does not cover.
    pending: bool,
}

impl KeyframeCoalescer {
    /// A coalescer letting through at most one request per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_sent: None,
            in_flight: false,
            pending: false,
        }
    }

    /// A viewer (or the SFU itself) wants a keyframe at `now`.
    pub fn request(&mut self, now: Instant) -> Decision {
        let recent = self
            .last_sent
            .is_some_and(|last| now < last + self.interval);
        if self.in_flight && recent {
            return Decision::Idle;
        }
        self.pending = true;
        self.poll(now)
    }

    /// A keyframe from the publisher arrived: the request in flight is answered.
    pub fn keyframe_seen(&mut self) {
        self.in_flight = false;
    }

    /// Call at (or after) a deferred deadline; also safe to call any time.
    pub fn poll(&mut self, now: Instant) -> Decision {
        if !self.pending {
            return Decision::Idle;
        }
        match self.last_sent {
            Some(last) if now < last + self.interval => {
                Decision::DeferredUntil(last + self.interval)
            }
            _ => {
                self.pending = false;
                self.in_flight = true;
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
        *self = Self::new(self.interval);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary epoch
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
    fn requests_while_a_keyframe_is_in_flight_are_absorbed() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::new(300 * MS);
        assert_eq!(c.request(t0), Decision::SendNow);
        for i in 1..29 {
            assert_eq!(c.request(t0 + i * 10 * MS), Decision::Idle);
        }
        assert_eq!(c.deadline(), None, "no second keyframe is scheduled");
    }

    #[test]
    fn lost_request_is_repeated_after_the_interval() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::new(300 * MS);
        c.request(t0);
        assert_eq!(c.request(t0 + 350 * MS), Decision::SendNow);
    }

    #[test]
    fn need_after_a_keyframe_is_deferred_to_the_window_end() {
        let t0 = Instant::now();
        let mut c = KeyframeCoalescer::new(300 * MS);
        c.request(t0);
        c.keyframe_seen();
        assert_eq!(
            c.request(t0 + 100 * MS),
            Decision::DeferredUntil(t0 + 300 * MS)
        );
        assert_eq!(
            c.request(t0 + 200 * MS),
            Decision::DeferredUntil(t0 + 300 * MS)
        );
        assert_eq!(
            c.poll(t0 + 299 * MS),
            Decision::DeferredUntil(t0 + 300 * MS)
        );
        assert_eq!(c.poll(t0 + 300 * MS), Decision::SendNow);
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
        /// Whatever the pattern of requests and keyframes: sends are at least `interval` apart,
        /// and every request is served by a later keyframe or a later send (none is lost).
        #[test]
        fn sends_are_spaced_and_no_need_is_lost(events in proptest::collection::vec((0u64..700, any::<bool>()), 1..80)) {
            let t0 = Instant::now();
            let interval = 300 * MS;
            let mut c = KeyframeCoalescer::new(interval);
            let mut sends: Vec<Instant> = Vec::new();
            let mut now = t0;
            let mut unserved: Option<Instant> = None;
            for (gap, keyframe) in events {
                now += Duration::from_millis(gap);
                if let Some(d) = c.deadline() {
                    if d <= now && c.poll(d) == Decision::SendNow { sends.push(d); unserved = None; }
                }
                if keyframe {
                    // A keyframe answers what was sent before it.
                    if sends.last().is_some_and(|s| *s <= now) { unserved = None; }
                    c.keyframe_seen();
                } else {
                    match c.request(now) {
                        Decision::SendNow => { sends.push(now); unserved = None; }
                        Decision::Idle => {} // absorbed by the request in flight
                        Decision::DeferredUntil(_) => unserved = Some(now),
                    }
                }
            }
            if let Some(d) = c.deadline() {
                prop_assert_eq!(c.poll(d), Decision::SendNow);
                sends.push(d);
                unserved = None;
            }
            prop_assert!(unserved.is_none());
            for w in sends.windows(2) {
                prop_assert!(w[1] - w[0] >= interval);
            }
        }
    }
}
