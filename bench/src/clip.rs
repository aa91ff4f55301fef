//! The bench's real media: a short AV1 clip encoded once at start with rav1e, and Opus audio
//! encoded with libopus, both looped by the publisher at the clip's own bitrate.
//!
//! The picture is a moving test pattern (a sliding gradient, noise so the rate control has
//! work to do, and the frame counter drawn as 16 black/white blocks). Each frame sent also
//! carries the bench stamp (frame counter and send time) in an AV1 metadata OBU of a
//! user-private type, which decoders ignore and RTP packetizers keep (padding OBUs would be
//! dropped, RFC-draft AV1 RTP section 5). The clip is one keyframe interval long, so looping it
//! gives a keyframe every `keyint` frames; a keyframe request restarts the loop at its keyframe.

use anyhow::{bail, Context};
use rav1e::prelude::*;

use crate::payload::{Stamp, MAGIC};

/// Metadata OBU type 5; `metadata_type` 6..=31 is unregistered user-private (AV1 spec 6.7.1).
const OBU_METADATA: u8 = 5;
const METADATA_TYPE_BENCH: u8 = 25;
const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;

/// What to encode.
#[derive(Debug, Clone, Copy)]
pub struct ClipSpec {
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    /// Frames in the clip (one keyframe interval).
    pub frames: u32,
    /// Target video bitrate, kbit/s.
    pub kbps: u32,
}

/// One encoded temporal unit.
#[derive(Debug, Clone)]
pub struct VideoFrame {
    /// OBUs with size fields (temporal delimiter removed).
    pub obus: Vec<u8>,
    pub keyframe: bool,
}

/// The encoded clip.
#[derive(Debug, Clone)]
pub struct Clip {
    pub spec: ClipSpec,
    pub video: Vec<VideoFrame>,
    /// 20 ms Opus packets, 48 kHz mono.
    pub audio: Vec<Vec<u8>>,
}

impl Clip {
    /// Video bitrate of the clip as encoded, kbit/s.
    pub fn video_kbps(&self) -> f64 {
        let bytes: usize = self.video.iter().map(|f| f.obus.len()).sum();
        let secs = self.video.len() as f64 / f64::from(self.spec.fps.max(1));
        bytes as f64 * 8.0 / 1000.0 / secs.max(1e-9)
    }

    /// The bytes to send for loop position `index`: the frame's OBUs with the stamp inserted
    /// after the sequence header (or first, when there is none).
    pub fn frame_with_stamp(&self, index: usize, counter: u32, sent_us: u64) -> (Vec<u8>, bool) {
        let frame = &self.video[index % self.video.len()];
        let mut stamp = Vec::with_capacity(32);
        stamp.push(OBU_METADATA << 3 | 0x02); // has_size_field
        let mut body = vec![METADATA_TYPE_BENCH];
        body.extend_from_slice(&MAGIC);
        body.extend_from_slice(&counter.to_be_bytes());
        body.extend_from_slice(&sent_us.to_be_bytes());
        body.push(0x80); // trailing bits
        leb128(body.len() as u64, &mut stamp);
        stamp.extend_from_slice(&body);

        let at = obus(&frame.obus)
            .find(|o| o.kind == OBU_SEQUENCE_HEADER)
            .map_or(0, |o| o.end);
        let mut out = Vec::with_capacity(frame.obus.len() + stamp.len());
        out.extend_from_slice(&frame.obus[..at]);
        out.extend_from_slice(&stamp);
        out.extend_from_slice(&frame.obus[at..]);
        (out, frame.keyframe)
    }
}

/// Find the bench stamp in a received AV1 temporal unit.
pub fn parse_stamp(data: &[u8], keyframe: bool) -> Option<Stamp> {
    let o = obus(data).find(|o| o.kind == OBU_METADATA)?;
    let body = data.get(o.payload..o.end)?;
    if body.first() != Some(&METADATA_TYPE_BENCH) || body.get(1..5)? != MAGIC {
        return None;
    }
    Some(Stamp {
        counter: u32::from_be_bytes(body.get(5..9)?.try_into().ok()?),
        sent_us: u64::from_be_bytes(body.get(9..17)?.try_into().ok()?),
        keyframe,
    })
}

struct Obu {
    kind: u8,
    start: usize,
    payload: usize,
    end: usize,
}

/// Walk OBUs that carry size fields (AV1 spec 5.3); stops at the first malformed one.
fn obus(data: &[u8]) -> impl Iterator<Item = Obu> + '_ {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = *data.get(pos)?;
        let kind = (header >> 3) & 0x0f;
        let mut p = pos + 1 + usize::from(header & 0x04 != 0);
        if header & 0x02 == 0 {
            return None;
        }
        let mut size = 0u64;
        for i in 0..8 {
            let b = *data.get(p)?;
            p += 1;
            size |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = p.checked_add(usize::try_from(size).ok()?)?;
        if end > data.len() {
            return None;
        }
        let start = pos;
        pos = end;
        Some(Obu {
            kind,
            start,
            payload: p,
            end,
        })
    })
}

fn leb128(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Encode the clip. Takes about a second for 60 frames at 640x360 in a release build.
pub fn encode(spec: ClipSpec) -> anyhow::Result<Clip> {
    if spec.width < 16 || spec.height < 16 || spec.frames == 0 || spec.fps == 0 {
        bail!("clip too small: {spec:?}");
    }
    let video = encode_video(spec)?;
    let audio = encode_audio(spec.frames as usize * 1000 / spec.fps as usize)?;
    Ok(Clip { spec, video, audio })
}

fn encode_video(spec: ClipSpec) -> anyhow::Result<Vec<VideoFrame>> {
    let enc = EncoderConfig {
        width: spec.width,
        height: spec.height,
        time_base: Rational::new(1, u64::from(spec.fps)),
        bitrate: i32::try_from(spec.kbps.saturating_mul(1000)).unwrap_or(i32::MAX),
        min_key_frame_interval: u64::from(spec.frames),
        max_key_frame_interval: u64::from(spec.frames),
        low_latency: true,
        speed_settings: SpeedSettings::from_preset(10),
        ..Default::default()
    };
    let cfg = Config::new().with_encoder_config(enc).with_threads(2);
    let mut ctx: rav1e::Context<u8> = cfg.new_context().context("rav1e config")?;
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    for n in 0..spec.frames {
        let mut f = ctx.new_frame();
        let (w, h) = (spec.width, spec.height);
        let mut luma = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                let gradient = ((x + y + n as usize * 4) % 256) as u8;
                luma[y * w + x] = gradient.wrapping_add((noise & 0x03) as u8);
            }
        }
        // The frame counter as 16 blocks along the top: white for 1, black for 0.
        let block = (w / 16).max(1);
        for bit in 0..16 {
            let v = if n >> bit & 1 == 1 { 235 } else { 16 };
            for y in 0..block.min(h) {
                for x in bit * block..((bit + 1) * block).min(w) {
                    luma[y * w + x] = v;
                }
            }
        }
        f.planes[0].copy_from_raw_u8(&luma, w, 1);
        let chroma = vec![128u8; w.div_ceil(2) * h.div_ceil(2)];
        f.planes[1].copy_from_raw_u8(&chroma, w.div_ceil(2), 1);
        f.planes[2].copy_from_raw_u8(&chroma, w.div_ceil(2), 1);
        ctx.send_frame(f).context("rav1e send_frame")?;
    }
    ctx.flush();
    let mut out = Vec::new();
    loop {
        match ctx.receive_packet() {
            Ok(p) => out.push(VideoFrame {
                obus: obus(&p.data)
                    .filter(|o| o.kind != OBU_TEMPORAL_DELIMITER)
                    .flat_map(|o| p.data[o.start..o.end].to_vec())
                    .collect(),
                keyframe: p.frame_type == FrameType::KEY,
            }),
            Err(EncoderStatus::Encoded) => {}
            Err(EncoderStatus::LimitReached) => break,
            Err(e) => bail!("rav1e: {e:?}"),
        }
    }
    if out.len() != spec.frames as usize || !out[0].keyframe {
        bail!("rav1e gave {} frames for {}", out.len(), spec.frames);
    }
    if !obus(&out[0].obus).any(|o| o.kind == OBU_SEQUENCE_HEADER) {
        bail!("the clip's keyframe has no sequence header");
    }
    Ok(out)
}

fn encode_audio(millis: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Audio)
        .context("opus encoder")?;
    enc.set_bitrate(opus::Bitrate::Bits(64_000))?;
    let mut packets = Vec::new();
    let mut buf = vec![0u8; 1500];
    for p in 0..(millis / 20).max(1) {
        let pcm: Vec<i16> = (0..960)
            .map(|i| {
                let t = (p * 960 + i) as f64 / 48_000.0;
                ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
            })
            .collect();
        let n = enc.encode(&pcm, &mut buf).context("opus encode")?;
        packets.push(buf[..n].to_vec());
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_clip_encodes_with_a_keyframe_and_stamps_round_trip() {
        let spec = ClipSpec {
            width: 64,
            height: 48,
            fps: 30,
            frames: 6,
            kbps: 300,
        };
        let clip = encode(spec).unwrap();
        assert_eq!(clip.video.len(), 6);
        assert!(clip.video[0].keyframe);
        assert!(clip.video[1..].iter().all(|f| !f.keyframe));
        assert_eq!(clip.audio.len(), 10, "200 ms of 20 ms Opus packets");
        assert!(clip.video_kbps() > 0.0);
        for i in 0..8 {
            let (data, key) = clip.frame_with_stamp(i, 1000 + i as u32, 77 * i as u64);
            assert_eq!(key, i % 6 == 0);
            let s = parse_stamp(&data, key).unwrap();
            assert_eq!((s.counter, s.sent_us), (1000 + i as u32, 77 * i as u64));
            // The stamp goes after the sequence header, so a keyframe still starts with one.
            let first = obus(&data).next().unwrap().kind;
            assert_eq!(first == OBU_SEQUENCE_HEADER, key);
        }
    }

    #[test]
    fn foreign_or_truncated_units_have_no_stamp() {
        assert!(parse_stamp(&[], false).is_none());
        assert!(parse_stamp(&[0x32, 0x05, 1, 2, 3], false).is_none());
        assert!(parse_stamp(&[0x2a, 0x7f, 25], false).is_none());
    }
}
