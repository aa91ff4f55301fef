//! Bitstream helpers: H.264 Annex B access units, VP8/H.264 keyframe tests, the length-prefixed
//! Opus packet file, and an IVF writer for depacketized VP8 frames.
//!
//! Length-prefixed packet file (`audio.opus.lp`, written by make_clip.py and by the viewer):
//! a sequence of records `u32 big-endian payload length, u32 big-endian timestamp (48 kHz
//! units: the RTP timestamp in a dump), payload`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::Result;
use bytes::Bytes;

/// The NAL units of an Annex B stream, without their start codes.
fn annexb_nals(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // index of the first byte after each 00 00 01
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map(|&n| n - 3).unwrap_or(data.len());
        while end > s && data[end - 1] == 0 {
            end -= 1; // trailing_zero_8bits, or the leading 00 of a 4-byte start code
        }
        if end > s {
            nals.push(&data[s..end]);
        }
    }
    nals
}

/// Groups an Annex B stream into access units (one per frame), each NAL with a 4-byte start
/// code, as `TrackLocalStaticSample` wants a sample. A new access unit starts at an SEI, SPS,
/// PPS or AUD after a slice, or at a slice with first_mb_in_slice == 0 after a slice.
pub fn read_annexb_access_units(data: &[u8]) -> Vec<Bytes> {
    let mut units = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut has_slice = false;
    for nal in annexb_nals(data) {
        let t = nal[0] & 0x1f;
        let is_slice = (1..=5).contains(&t);
        // first_mb_in_slice is ue(v) right after the header: 0 is coded as a single 1 bit
        let starts_picture = is_slice && nal.len() > 1 && nal[1] & 0x80 != 0;
        if has_slice && (matches!(t, 6..=9) || starts_picture) {
            units.push(Bytes::from(std::mem::take(&mut cur)));
            has_slice = false;
        }
        cur.extend_from_slice(&[0, 0, 0, 1]);
        cur.extend_from_slice(nal);
        has_slice |= is_slice;
    }
    if has_slice {
        units.push(Bytes::from(cur));
    }
    units
}

/// An H.264 access unit (Annex B) holding an IDR slice.
pub fn h264_is_key(au: &[u8]) -> bool {
    annexb_nals(au).iter().any(|n| n[0] & 0x1f == 5)
}

/// An H.264 access unit a decoder can start from: IDR slice plus SPS and PPS.
pub fn h264_is_decodable_start(au: &[u8]) -> bool {
    let types: Vec<u8> = annexb_nals(au).iter().map(|n| n[0] & 0x1f).collect();
    [5, 7, 8].iter().all(|t| types.contains(t))
}

/// A VP8 frame whose frame tag says keyframe (bit 0 clear) with the start code 9d 01 2a.
pub fn vp8_is_key(frame: &[u8]) -> bool {
    frame.len() >= 10 && frame[0] & 1 == 0 && frame[3..6] == [0x9d, 0x01, 0x2a]
}

/// Width and height from a VP8 keyframe header.
pub fn vp8_size(frame: &[u8]) -> (u16, u16) {
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (w, h)
}

/// Parses a length-prefixed packet file into (timestamp, payload); a truncated last record is
/// ignored.
pub fn read_length_prefixed(data: &[u8]) -> Vec<(u32, Bytes)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 8 <= data.len() {
        let len = u32::from_be_bytes(data[i..i + 4].try_into().expect("4 bytes")) as usize;
        let ts = u32::from_be_bytes(data[i + 4..i + 8].try_into().expect("4 bytes"));
        if i + 8 + len > data.len() {
            break;
        }
        out.push((ts, Bytes::copy_from_slice(&data[i + 8..i + 8 + len])));
        i += 8 + len;
    }
    out
}

pub struct LengthPrefixedWriter(BufWriter<File>);

impl LengthPrefixedWriter {
    pub fn create(path: &Path) -> Result<Self> {
        Ok(Self(BufWriter::new(File::create(path)?)))
    }
    pub fn write(&mut self, timestamp: u32, payload: &[u8]) -> Result<()> {
        self.0.write_all(&(payload.len() as u32).to_be_bytes())?;
        self.0.write_all(&timestamp.to_be_bytes())?;
        self.0.write_all(payload)?;
        Ok(())
    }
    pub fn finish(mut self) -> Result<()> {
        self.0.flush()?;
        Ok(())
    }
}

/// IVF file of VP8 frames, time base 1/90000 (RTP clock), the frame count patched in at the end.
pub struct IvfWriter {
    out: BufWriter<File>,
    frames: u32,
    first_ts: Option<u32>,
}

impl IvfWriter {
    pub fn create(path: &Path, width: u16, height: u16) -> Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(b"DKIF")?;
        out.write_all(&0u16.to_le_bytes())?; // version
        out.write_all(&32u16.to_le_bytes())?; // header size
        out.write_all(b"VP80")?;
        out.write_all(&width.to_le_bytes())?;
        out.write_all(&height.to_le_bytes())?;
        out.write_all(&90000u32.to_le_bytes())?; // time base denominator
        out.write_all(&1u32.to_le_bytes())?; // numerator
        out.write_all(&0u32.to_le_bytes())?; // frame count, patched by finish()
        out.write_all(&0u32.to_le_bytes())?;
        Ok(Self {
            out,
            frames: 0,
            first_ts: None,
        })
    }

    pub fn write(&mut self, rtp_timestamp: u32, frame: &[u8]) -> Result<()> {
        let first = *self.first_ts.get_or_insert(rtp_timestamp);
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out
            .write_all(&u64::from(rtp_timestamp.wrapping_sub(first)).to_le_bytes())?;
        self.out.write_all(frame)?;
        self.frames += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.out.flush()?;
        let mut f = self.out.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::Start(24))?;
        f.write_all(&self.frames.to_le_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_units_split_at_parameter_sets_and_new_pictures() {
        // SPS, PPS, IDR (first_mb 0), then a P slice (first_mb 0) with a 3-byte start code
        let s: &[u8] = &[
            0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 0x88, 3, 0, 0, 1, 0x41,
            0x9a, 4,
        ];
        let aus = read_annexb_access_units(s);
        assert_eq!(aus.len(), 2);
        assert!(h264_is_key(&aus[0]) && h264_is_decodable_start(&aus[0]));
        assert!(!h264_is_key(&aus[1]));
        assert_eq!(&aus[1][..], &[0, 0, 0, 1, 0x41, 0x9a, 4]);
    }

    #[test]
    fn length_prefixed_round_trip_ignores_truncated_tail() {
        let mut data = Vec::new();
        for (ts, p) in [(0u32, &b"ab"[..]), (960, &b"cde"[..])] {
            data.extend_from_slice(&(p.len() as u32).to_be_bytes());
            data.extend_from_slice(&ts.to_be_bytes());
            data.extend_from_slice(p);
        }
        data.extend_from_slice(&[0, 0, 0, 9, 0, 0]);
        let r = read_length_prefixed(&data);
        assert_eq!(
            r,
            vec![
                (0, Bytes::from_static(b"ab")),
                (960, Bytes::from_static(b"cde"))
            ]
        );
    }
}
