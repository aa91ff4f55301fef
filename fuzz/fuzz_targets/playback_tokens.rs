//! Any text as a playback token (`?token=`, `Authorization: Bearer`): never accepted unless
//! signed with the key, never a panic.
#![no_main]

use cluster::TokenKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let key = TokenKey::new(b"fuzzing-secret-0123456789abcdef");
    // Random text is never a valid signature under this key.
    assert!(key.verify(text, "demo", 1_700_000_000).is_err());
});
