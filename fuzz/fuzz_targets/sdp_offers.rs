//! Any text as an SDP offer or trickle fragment: every sniffing and rewriting helper the server
//! runs before (and after) the WebRTC engine. No panic; rewriting keeps the section count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media_core::{sdp, sdp_codecs};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sections = sdp::media_sections(text);
    let formats = sdp_codecs::section_formats(text);
    let _ = sdp::offers_codec(text, "0", "opus/48000");
    let _ = sdp::spread_candidates(text);
    let _ = sdp_codecs::unmapped_payload_types(text);
    if let Ok(sections) = sections {
        let all: Vec<usize> = (0..sections.len()).collect();
        let rejected = sdp_codecs::reject_sections(text, &all);
        let _ = sdp_codecs::complete_rejected(&rejected, text);
        let _ = sdp_codecs::set_inactive(text, &all);
        let _ = sdp::render_minimal(&sections);
        assert!(formats.len() <= sections.len() + 1);
    }
});
