//! Any text handed to the manifest parser gets a manifest or an error that
//! names the file, a key and a reason: never a panic.

#![no_main]

use corral_protocol::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Manifest::parse(text, "plugin.toml") {
        Ok(manifest) => assert!(!manifest.name().is_empty()),
        Err(e) => {
            assert_eq!(e.file, "plugin.toml");
            assert!(!e.key.is_empty(), "an error without a key: {e:?}");
            assert!(!e.reason.is_empty(), "an error without a reason: {e:?}");
        }
    }
});
