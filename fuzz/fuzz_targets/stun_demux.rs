//! Any bytes as a datagram on the media port: classification and STUN ufrag extraction (what
//! routes a datagram to a session). No panic; a ufrag found is a substring of the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media_core::demux::{classify, stun_local_ufrag};

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    if let Some(ufrag) = stun_local_ufrag(data) {
        assert!(ufrag.len() <= data.len());
    }
});
