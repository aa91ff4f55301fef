//! The server-side Opus mix: one audio track of every unmuted participant, for players with one
//! audio section (OBS's WHEP source, any plain WHEP player). One encoder per stage, however many
//! viewers take the mix; every participant is decoded once.
//!
//! Sans-IO: the driver pushes each participant's Opus payloads as they arrive
//! ([`Mixer::push`]) and calls [`Mixer::mix`] every 20 ms. Each call takes at most one frame per
//! participant (a short queue absorbs jitter; a participant with nothing queued adds silence),
//! sums the decoded PCM with saturation, and encodes one Opus frame. It also returns each
//! participant's level of that frame (RFC 6464 dBov), which feeds the active-speaker detector
//! for publishers that send no audio-level extension (OBS).

use std::collections::{BTreeMap, VecDeque};

use crate::speaker::dbov_of_pcm;
use crate::ParticipantId;

/// 48 kHz mono, 20 ms frames.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per 20 ms frame.
pub const FRAME: usize = 960;
/// Frames queued per participant before the oldest is dropped (100 ms of jitter).
const QUEUE: usize = 5;
/// The mix's bitrate.
const BITRATE: i32 = 64_000;

/// Mixer errors.
#[derive(Debug, thiserror::Error)]
pub enum MixError {
    /// libopus refused (a bug or a bad parameter).
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

struct Input {
    decoder: opus::Decoder,
    queue: VecDeque<Vec<u8>>,
    muted: bool,
}

/// One mixed frame.
#[derive(Debug)]
pub struct Mixed {
    /// The Opus payload (20 ms, mono, 48 kHz).
    pub packet: Vec<u8>,
    /// Each participant's level in this frame (127: silent or muted).
    pub levels: Vec<(ParticipantId, u8)>,
}

/// The mix of one stage.
pub struct Mixer {
    inputs: BTreeMap<ParticipantId, Input>,
    encoder: opus::Encoder,
    pcm: Vec<i16>,
    sum: Vec<i32>,
    out: Vec<u8>,
}

impl Mixer {
    /// A mixer with no participants.
    pub fn new() -> Result<Self, MixError> {
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(BITRATE))?;
        Ok(Self {
            inputs: BTreeMap::new(),
            encoder,
            pcm: vec![0; FRAME * 6],
            sum: vec![0; FRAME],
            out: vec![0; 1500],
        })
    }

    /// `p` joins the mix.
    pub fn add(&mut self, p: ParticipantId) -> Result<(), MixError> {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.inputs.entry(p) {
            slot.insert(Input {
                decoder: opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono)?,
                queue: VecDeque::new(),
                muted: false,
            });
        }
        Ok(())
    }

    /// `p` leaves the mix.
    pub fn remove(&mut self, p: ParticipantId) {
        self.inputs.remove(&p);
    }

    /// Mute or unmute `p` in the mix (the host's control). Muted audio is not even decoded.
    pub fn set_muted(&mut self, p: ParticipantId, muted: bool) {
        if let Some(i) = self.inputs.get_mut(&p) {
            i.muted = muted;
            if muted {
                i.queue.clear();
            }
        }
    }

    /// One Opus payload (RTP payload, not RED) of `p`.
    pub fn push(&mut self, p: ParticipantId, payload: &[u8]) {
        let Some(i) = self.inputs.get_mut(&p) else {
            return;
        };
        if i.muted {
            return;
        }
        if i.queue.len() >= QUEUE {
            i.queue.pop_front();
        }
        i.queue.push_back(payload.to_vec());
    }

    /// The next 20 ms of the mix.
    pub fn mix(&mut self) -> Result<Mixed, MixError> {
        self.sum.iter_mut().for_each(|s| *s = 0);
        let mut levels = Vec::with_capacity(self.inputs.len());
        for (p, input) in &mut self.inputs {
            let Some(packet) = (!input.muted).then(|| input.queue.pop_front()).flatten() else {
                levels.push((*p, 127));
                continue;
            };
            // A frame that does not decode (corrupt, or not Opus) counts as silence.
            let n = match input.decoder.decode(&packet, &mut self.pcm, false) {
                Ok(n) => n.min(FRAME),
                Err(_) => {
                    levels.push((*p, 127));
                    continue;
                }
            };
            levels.push((*p, dbov_of_pcm(&self.pcm[..n])));
            for (s, x) in self.sum.iter_mut().zip(&self.pcm[..n]) {
                *s += i32::from(*x);
            }
        }
        for (x, s) in self.pcm.iter_mut().zip(&self.sum) {
            *x = (*s).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
        let len = self.encoder.encode(&self.pcm[..FRAME], &mut self.out)?;
        Ok(Mixed {
            packet: self.out[..len].to_vec(),
            levels,
        })
    }

    /// Participants in the mix.
    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    /// No participant.
    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `frames` 20 ms Opus frames of a sine at `hz`, amplitude 0.3.
    pub(crate) fn tone(hz: f64, frames: usize) -> Vec<Vec<u8>> {
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Audio)
                .unwrap();
        let mut out = Vec::new();
        for f in 0..frames {
            let pcm: Vec<i16> = (0..FRAME)
                .map(|i| {
                    let t = (f * FRAME + i) as f64 / f64::from(SAMPLE_RATE);
                    (0.3 * 32_767.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16
                })
                .collect();
            out.push(enc.encode_vec(&pcm, 1500).unwrap());
        }
        out
    }

    /// Power of `pcm` at `hz` (Goertzel), normalised by the signal's length.
    fn power_at(pcm: &[i16], hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / f64::from(SAMPLE_RATE);
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in pcm {
            let s = f64::from(*x) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / pcm.len() as f64
    }

    /// Mix `frames` frames of the given tones (muting some), decode the mix, and return its
    /// PCM after the first 10 frames (the codecs' warm-up).
    fn mixed(tones: &[(u64, f64)], muted: &[u64], frames: usize) -> Vec<i16> {
        let mut m = Mixer::new().unwrap();
        let streams: Vec<(ParticipantId, Vec<Vec<u8>>)> = tones
            .iter()
            .map(|(p, hz)| (ParticipantId(*p), tone(*hz, frames)))
            .collect();
        for (p, _) in &streams {
            m.add(*p).unwrap();
        }
        for p in muted {
            m.set_muted(ParticipantId(*p), true);
        }
        let mut dec = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0i16; FRAME * 6];
        for f in 0..frames {
            for (p, frames) in &streams {
                m.push(*p, &frames[f]);
            }
            let out = m.mix().unwrap();
            let n = dec.decode(&out.packet, &mut buf, false).unwrap();
            if f >= 10 {
                pcm.extend_from_slice(&buf[..n]);
            }
        }
        pcm
    }

    #[test]
    fn the_mix_contains_every_unmuted_participants_tone_and_no_muted_one() {
        let pcm = mixed(&[(1, 440.0), (2, 1_200.0), (3, 2_600.0)], &[3], 60);
        let off = power_at(&pcm, 1_900.0).max(1.0);
        let (a, b, c) = (
            power_at(&pcm, 440.0),
            power_at(&pcm, 1_200.0),
            power_at(&pcm, 2_600.0),
        );
        assert!(a > 100.0 * off, "440 Hz present: {a} vs {off}");
        assert!(b > 100.0 * off, "1200 Hz present: {b} vs {off}");
        assert!(c < 10.0 * off, "the muted 2600 Hz is absent: {c} vs {off}");
        // Both tones at comparable strength (neither drowned by the mix).
        assert!(a / b < 4.0 && b / a < 4.0, "{a} vs {b}");
    }

    #[test]
    fn levels_tell_who_is_heard_and_a_missing_frame_is_silence() {
        let mut m = Mixer::new().unwrap();
        let (a, b) = (ParticipantId(1), ParticipantId(2));
        m.add(a).unwrap();
        m.add(b).unwrap();
        let frames = tone(440.0, 20);
        let mut last = None;
        for f in frames.iter() {
            m.push(a, f);
            last = Some(m.mix().unwrap());
        }
        let levels = last.unwrap().levels;
        let level = |p| levels.iter().find(|(q, _)| *q == p).unwrap().1;
        assert!(level(a) < 30, "a tone at -10 dBov reads loud: {}", level(a));
        assert_eq!(level(b), 127, "b sent nothing");
        // Garbage from a participant is silence, not an error.
        m.push(b, &[0xff; 3]);
        assert!(m.mix().is_ok());
        m.remove(a);
        assert_eq!(m.len(), 1);
    }
}
