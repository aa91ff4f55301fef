//! Any bytes as an RTP packet and as each codec payload: header parse, rewrite, RED primary,
//! keyframe detection (VP8, VP9, H.264, AV1). No panic; a rewrite keeps the length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media_core::keyframe_start::{starts_keyframe, VideoFormat};
use media_core::rtp::{rewrite, Rewrite, RtpHeader};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = RtpHeader::parse(data) {
        let payload = header.payload(data);
        assert!(payload.len() <= data.len());
        let mut copy = data.to_vec();
        let to = Rewrite {
            ssrc: 0x1234_5678,
            sequence: 7,
            timestamp: 90_000,
            payload_type: 96,
        };
        if rewrite(&mut copy, to).is_ok() {
            assert_eq!(copy.len(), data.len());
            let again = RtpHeader::parse(&copy).expect("a rewritten packet parses");
            assert_eq!(again.sequence, 7);
        }
    }
    let _ = media_core::red::primary(data);
    for format in [
        VideoFormat::Vp8,
        VideoFormat::Vp9,
        VideoFormat::H264,
        VideoFormat::Av1,
    ] {
        let _ = starts_keyframe(format, data);
    }
});
