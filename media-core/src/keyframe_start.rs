//! Does this RTP payload begin a keyframe? Read from the payload formats, so a packet-level
//! forwarder can start a viewer (or a cache) exactly at the first packet of a keyframe.
//!
//! - VP8, RFC 7741 section 4: start of partition 0 (`S=1`, `PID=0`) and the VP8 frame tag's
//!   inverse keyframe bit `P=0`.
//! - VP9, RFC 9628 section 4.2: beginning of a frame (`B=1`) that is not inter-picture
//!   predicted (`P=0`), on spatial layer 0 when layer indices are present.
//! - H.264, RFC 6184 section 5: a sequence parameter set or the start of an IDR slice, as a
//!   single NAL unit, inside a STAP-A, or as the first FU-A fragment.
//! - AV1, AV1 RTP payload format section 4.4: the aggregation header's `N` bit (first packet
//!   of a coded video sequence).
//!
//! Every function is total over any bytes.

/// The video payload formats the SFU forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoFormat {
    /// RFC 7741.
    Vp8,
    /// RFC 9628.
    Vp9,
    /// RFC 6184, packetization mode 1.
    H264,
    /// AOMedia AV1 RTP payload format.
    Av1,
}

/// True if `payload` is the first packet of a keyframe in `format`.
pub fn starts_keyframe(format: VideoFormat, payload: &[u8]) -> bool {
    match format {
        VideoFormat::Vp8 => vp8(payload),
        VideoFormat::Vp9 => vp9(payload),
        VideoFormat::H264 => h264(payload),
        VideoFormat::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
    }
}

fn vp8(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(1) else { return false };
        i = 2;
        if x & 0x80 != 0 {
            // I: picture id, 7 or 15 bits.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    p.get(i).is_some_and(|tag| tag & 0x01 == 0)
}

fn vp9(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let inter = b0 & 0x40 != 0;
    let begins = b0 & 0x08 != 0;
    if inter || !begins {
        return false;
    }
    if b0 & 0x20 == 0 {
        return true; // no layer indices: a single spatial layer
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&pid) = p.get(1) else { return false };
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer indices: TID(3) U(1) SID(3) D(1).
    p.get(i).is_some_and(|l| (l >> 1) & 0x07 == 0)
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

fn h264(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        NAL_IDR | NAL_SPS => true,
        NAL_STAP_A => {
            let mut rest = &p[1..];
            while rest.len() >= 3 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(nal) = rest.get(2..2 + size) else {
                    return false;
                };
                if nal
                    .first()
                    .is_some_and(|h| matches!(h & 0x1f, NAL_IDR | NAL_SPS))
                {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        NAL_FU_A => p
            .get(1)
            .is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == NAL_IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vp8_keyframe_start_with_and_without_extensions() {
        // S=1 PID=0, no extension, tag P=0.
        assert!(starts_keyframe(
            VideoFormat::Vp8,
            &[0x10, 0x10, 0x02, 0x00, 0x9d]
        ));
        // Delta frame (P=1).
        assert!(!starts_keyframe(
            VideoFormat::Vp8,
            &[0x10, 0x11, 0x02, 0x00]
        ));
        // Continuation packet (S=0).
        assert!(!starts_keyframe(VideoFormat::Vp8, &[0x00, 0x10]));
        // X with I (15-bit picture id), L and T/K: tag at index 6.
        assert!(starts_keyframe(
            VideoFormat::Vp8,
            &[0x90, 0xf0, 0x81, 0x23, 0x05, 0x40, 0x10, 0x02]
        ));
        assert!(!starts_keyframe(
            VideoFormat::Vp8,
            &[0x90, 0xf0, 0x81, 0x23, 0x05, 0x40, 0x11]
        ));
        assert!(!starts_keyframe(VideoFormat::Vp8, &[0x90, 0x80]));
    }

    #[test]
    fn vp9_needs_beginning_non_inter_layer_zero() {
        assert!(starts_keyframe(VideoFormat::Vp9, &[0x08]));
        assert!(
            !starts_keyframe(VideoFormat::Vp9, &[0x48]),
            "inter predicted"
        );
        assert!(
            !starts_keyframe(VideoFormat::Vp9, &[0x00]),
            "not the beginning"
        );
        // I + L: picture id (7 bits), layer byte with SID 0, then SID 1.
        assert!(starts_keyframe(VideoFormat::Vp9, &[0xa8, 0x12, 0x00]));
        assert!(!starts_keyframe(VideoFormat::Vp9, &[0xa8, 0x12, 0x02]));
    }

    #[test]
    fn h264_sps_idr_stap_a_and_fu_a() {
        assert!(starts_keyframe(VideoFormat::H264, &[0x67, 0x42]));
        assert!(starts_keyframe(VideoFormat::H264, &[0x65, 0x88]));
        assert!(!starts_keyframe(VideoFormat::H264, &[0x41, 0x9a]));
        // STAP-A with SEI (6) then SPS (7).
        assert!(starts_keyframe(
            VideoFormat::H264,
            &[0x78, 0x00, 0x02, 0x06, 0x01, 0x00, 0x02, 0x67, 0x42]
        ));
        assert!(!starts_keyframe(
            VideoFormat::H264,
            &[0x78, 0x00, 0x09, 0x06]
        ));
        // FU-A: start of IDR, middle of IDR, start of a P slice.
        assert!(starts_keyframe(VideoFormat::H264, &[0x7c, 0x85]));
        assert!(!starts_keyframe(VideoFormat::H264, &[0x7c, 0x05]));
        assert!(!starts_keyframe(VideoFormat::H264, &[0x7c, 0x81]));
    }

    #[test]
    fn av1_uses_the_n_bit() {
        assert!(starts_keyframe(VideoFormat::Av1, &[0x18, 0x0a]));
        assert!(!starts_keyframe(VideoFormat::Av1, &[0x10, 0x32]));
        assert!(!starts_keyframe(VideoFormat::Av1, &[]));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            for f in [VideoFormat::Vp8, VideoFormat::Vp9, VideoFormat::H264, VideoFormat::Av1] {
                let _ = starts_keyframe(f, &data);
            }
        }
    }
}
