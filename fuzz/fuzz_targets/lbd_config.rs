//! lbd's config parser on any text: a config, or an error that names `file:line: field`.
#![no_main]

use lb_config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, "fuzz.toml") {
        let msg = e.to_string();
        assert!(msg.starts_with("fuzz.toml:"), "{msg}");
    }
});
