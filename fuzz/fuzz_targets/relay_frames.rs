//! Any bytes through every relay decoder (datagrams, control frames, the frame reader): no
//! panic, no unbounded allocation.
#![no_main]

use edge::proto::{decode_datagram, Control, FrameReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_datagram(data);
    if let Ok(msg) = Control::decode(data) {
        // What decodes re-encodes and decodes to the same message.
        let frame = msg.encode();
        assert_eq!(Control::decode(&frame[4..]).ok(), Some(msg));
    }
    let mut reader = FrameReader::new();
    reader.push(data);
    for _ in 0..64 {
        match reader.next_frame() {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
});
