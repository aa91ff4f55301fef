//! Who speaks, and who is featured.
//!
//! Levels come in as RFC 6464 audio levels (0 = loudest, 127 = silence, in -dBov): from the
//! header extension where the publisher sends it (browsers), else computed from its decoded
//! audio ([`dbov_of_pcm`]; OBS sends none). Each participant's level is smoothed (an
//! exponential average of the amplitude, [`SpeakerConfig::smoothing`]); it *speaks* while the
//! smoothed level is at or above [`SpeakerConfig::speaking_dbov`]. The featured participant
//! changes only to one that has been the loudest speaker for [`SpeakerConfig::hold`] without a
//! break, and never sooner than `hold` after the last change: a cough or a short "yes" does
//! not move the picture. A pin (the owner's choice) overrides it until unpinned.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::ParticipantId;

/// Tuning of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeakerConfig {
    /// Louder than this (a smaller dBov number) counts as speaking.
    pub speaking_dbov: u8,
    /// Time constant of the level smoothing.
    pub smoothing: Duration,
    /// How long a new speaker must stay the loudest before it is featured, and the least
    /// time between two changes.
    pub hold: Duration,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            // Speech at a normal microphone gain reads about 20-45 dBov; room noise 60+.
            speaking_dbov: 50,
            smoothing: Duration::from_millis(300),
            hold: Duration::from_millis(1_200),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Level {
    /// Smoothed linear amplitude (1.0 = 0 dBov).
    amplitude: f64,
    at: Instant,
}

/// The detector of one stage.
#[derive(Debug, Clone)]
pub struct ActiveSpeaker {
    config: SpeakerConfig,
    levels: HashMap<ParticipantId, Level>,
    featured: Option<ParticipantId>,
    changed_at: Option<Instant>,
    /// The loudest speaker other than the featured one, and since when it has been.
    candidate: Option<(ParticipantId, Instant)>,
    pinned: Option<ParticipantId>,
}

fn amplitude(dbov: u8) -> f64 {
    10f64.powf(-f64::from(dbov.min(127)) / 20.0)
}

fn dbov(amplitude: f64) -> u8 {
    if amplitude <= 0.0 {
        return 127;
    }
    (-20.0 * amplitude.log10()).round().clamp(0.0, 127.0) as u8
}

/// The RFC 6464 level of 16-bit PCM: its RMS in -dBov (0 loudest, 127 silence).
pub fn dbov_of_pcm(samples: &[i16]) -> u8 {
    if samples.is_empty() {
        return 127;
    }
    let energy: f64 = samples.iter().map(|s| f64::from(*s).powi(2)).sum();
    let rms = (energy / samples.len() as f64).sqrt() / 32_768.0;
    dbov(rms)
}

impl ActiveSpeaker {
    /// A detector with `config`.
    pub fn new(config: SpeakerConfig) -> Self {
        Self {
            config,
            levels: HashMap::new(),
            featured: None,
            changed_at: None,
            candidate: None,
            pinned: None,
        }
    }

    /// `p` is on the stage (with silence until it is heard). The first one is featured.
    pub fn join(&mut self, p: ParticipantId, now: Instant) {
        self.levels.entry(p).or_insert(Level {
            amplitude: 0.0,
            at: now,
        });
        if self.featured.is_none() {
            self.featured = Some(p);
            self.changed_at = Some(now);
        }
    }

    /// `p` left. If it was featured, the loudest of the rest is featured at once.
    pub fn leave(&mut self, p: ParticipantId, now: Instant) {
        self.levels.remove(&p);
        if self.pinned == Some(p) {
            self.pinned = None;
        }
        if self.candidate.is_some_and(|(c, _)| c == p) {
            self.candidate = None;
        }
        if self.featured == Some(p) {
            self.featured = self
                .loudest(now)
                .map(|(q, _)| q)
                .or_else(|| self.levels.keys().min().copied());
            self.changed_at = Some(now);
        }
    }

    /// Pin `p` as featured (`None`: back to automatic).
    pub fn pin(&mut self, p: Option<ParticipantId>, now: Instant) {
        self.pinned = p.filter(|p| self.levels.contains_key(p));
        if let Some(p) = self.pinned {
            if self.featured != Some(p) {
                self.featured = Some(p);
                self.changed_at = Some(now);
            }
        }
        self.candidate = None;
    }

    /// The pinned participant, if any.
    pub fn pinned(&self) -> Option<ParticipantId> {
        self.pinned
    }

    /// One level reading of `p` at `now` (RFC 6464: 0 loudest, 127 silence).
    pub fn observe(&mut self, p: ParticipantId, level_dbov: u8, now: Instant) {
        let tau = self.config.smoothing.as_secs_f64().max(1e-3);
        let Some(l) = self.levels.get_mut(&p) else {
            return;
        };
        let dt = now.saturating_duration_since(l.at).as_secs_f64();
        let alpha = 1.0 - (-dt.max(0.02) / tau).exp();
        l.amplitude += alpha * (amplitude(level_dbov) - l.amplitude);
        l.at = now;
        self.update(now);
    }

    /// The smoothed level of `p` now, decayed toward silence since its last reading.
    fn level(&self, p: ParticipantId, now: Instant) -> Option<f64> {
        let l = self.levels.get(&p)?;
        let dt = now.saturating_duration_since(l.at).as_secs_f64();
        let tau = self.config.smoothing.as_secs_f64().max(1e-3);
        // No reading for a while is silence (a muted or stalled publisher).
        let stale = dt > 0.2;
        Some(if stale {
            l.amplitude * (-(dt - 0.2) / tau).exp()
        } else {
            l.amplitude
        })
    }

    /// Whether `p` speaks now.
    pub fn speaking(&self, p: ParticipantId, now: Instant) -> bool {
        self.level(p, now)
            .is_some_and(|a| dbov(a) <= self.config.speaking_dbov)
    }

    fn loudest(&self, now: Instant) -> Option<(ParticipantId, f64)> {
        let mut best: Option<(ParticipantId, f64)> = None;
        let mut ids: Vec<&ParticipantId> = self.levels.keys().collect();
        ids.sort_unstable();
        for p in ids {
            let a = self.level(*p, now).unwrap_or(0.0);
            if dbov(a) <= self.config.speaking_dbov && best.is_none_or(|(_, b)| a > b) {
                best = Some((*p, a));
            }
        }
        best
    }

    fn update(&mut self, now: Instant) {
        if self.pinned.is_some() {
            return;
        }
        let Some((loudest, _)) = self.loudest(now) else {
            self.candidate = None;
            return;
        };
        if Some(loudest) == self.featured {
            self.candidate = None;
            return;
        }
        let since = match self.candidate {
            Some((c, since)) if c == loudest => since,
            _ => {
                self.candidate = Some((loudest, now));
                now
            }
        };
        let held = now.saturating_duration_since(since) >= self.config.hold;
        let rested = self
            .changed_at
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.hold);
        if held && rested {
            self.featured = Some(loudest);
            self.changed_at = Some(now);
            self.candidate = None;
        }
    }

    /// The featured participant now.
    pub fn featured(&mut self, now: Instant) -> Option<ParticipantId> {
        self.update(now);
        self.featured
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an epoch from the clock once
mod tests {
    use super::*;

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);
    const C: ParticipantId = ParticipantId(3);

    /// Feed readings every 20 ms for `ms`: `loud` at 25 dBov, the others at silence.
    fn talk(
        s: &mut ActiveSpeaker,
        t: &mut Instant,
        ms: u64,
        loud: &[ParticipantId],
        all: &[ParticipantId],
    ) {
        for _ in 0..ms / 20 {
            *t += Duration::from_millis(20);
            for p in all {
                let level = if loud.contains(p) { 25 } else { 110 };
                s.observe(*p, level, *t);
            }
        }
    }

    fn stage() -> (ActiveSpeaker, Instant) {
        let t0 = Instant::now();
        let mut s = ActiveSpeaker::new(SpeakerConfig::default());
        for p in [A, B, C] {
            s.join(p, t0);
        }
        (s, t0)
    }

    #[test]
    fn a_sustained_speaker_is_featured_after_the_hold_and_a_short_burst_is_not() {
        let (mut s, mut t) = stage();
        assert_eq!(s.featured(t), Some(A), "the first to join");
        talk(&mut s, &mut t, 400, &[B], &[A, B, C]);
        assert!(s.speaking(B, t) && !s.speaking(A, t));
        assert_eq!(s.featured(t), Some(A), "400 ms is a burst, not a turn");
        talk(&mut s, &mut t, 400, &[], &[A, B, C]);
        talk(&mut s, &mut t, 2_000, &[B], &[A, B, C]);
        assert_eq!(s.featured(t), Some(B));
    }

    #[test]
    fn alternating_bursts_do_not_flap_the_featured_participant() {
        let (mut s, mut t) = stage();
        let mut changes = 0;
        let mut last = s.featured(t);
        for i in 0..20 {
            let who = if i % 2 == 0 { B } else { C };
            talk(&mut s, &mut t, 500, &[who], &[A, B, C]);
            let now = s.featured(t);
            changes += usize::from(now != last);
            last = now;
        }
        assert_eq!(changes, 0, "no one held the floor for the hold time");
    }

    #[test]
    fn a_pin_overrides_the_speaker_until_unpinned_and_leaving_refeatures() {
        let (mut s, mut t) = stage();
        s.pin(Some(C), t);
        talk(&mut s, &mut t, 3_000, &[B], &[A, B, C]);
        assert_eq!(s.featured(t), Some(C));
        s.pin(None, t);
        talk(&mut s, &mut t, 1_500, &[B], &[A, B, C]);
        assert_eq!(s.featured(t), Some(B));
        s.leave(B, t);
        assert_ne!(s.featured(t), Some(B));
        assert!(s.featured(t).is_some());
    }

    #[test]
    fn pcm_levels_read_as_rfc_6464_dbov() {
        assert_eq!(dbov_of_pcm(&[0; 960]), 127);
        let full: Vec<i16> = (0..960)
            .map(|i| if i % 2 == 0 { 32_767 } else { -32_767 })
            .collect();
        assert_eq!(dbov_of_pcm(&full), 0);
        // A sine at half scale: RMS = 0.5 / sqrt(2), about 9 dBov.
        let sine: Vec<i16> = (0..960)
            .map(|i| {
                (16_384.0 * (i as f64 * 2.0 * std::f64::consts::PI * 440.0 / 48_000.0).sin()) as i16
            })
            .collect();
        assert_eq!(dbov_of_pcm(&sine), 9);
    }
}
