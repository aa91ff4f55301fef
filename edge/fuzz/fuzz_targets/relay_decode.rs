//! Any bytes through every relay decoder: no panic, no unbounded allocation.
#![no_main]

use edge::proto::{decode_datagram, Control, FrameReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_datagram(data);
    let _ = Control::decode(data);
    let mut reader = FrameReader::new();
    reader.push(data);
    for _ in 0..64 {
        match reader.next_frame() {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
});
