//! Any text as `config.toml`: loaded or refused with a message naming the problem, no panic;
//! what loads passes its own validation and the limits it implies parse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = aethex::Config::from_toml(text, std::path::Path::new("fuzz.toml")) {
        assert!(config.validate().is_ok());
        assert!(config.signaling_limits().is_ok());
        assert!(config.platform_limits().is_ok());
    }
});
