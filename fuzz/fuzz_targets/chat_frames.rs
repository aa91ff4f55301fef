//! Any text as a chat socket frame from a client: parsed or refused with a message, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = platform::chat::parse_frame(text);
    }
});
