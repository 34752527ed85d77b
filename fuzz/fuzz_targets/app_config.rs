//! The app's config on any text, and `APP_*` overrides made from it: a config or an error that
//! names the field, never a panic.
#![no_main]

use app::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Config::from_toml_str(text);
    // The same text as environment overrides: one `KEY=VALUE` per line.
    let env = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("APP_{k}"), v.to_string()));
    let _ = Config::load(None, env);
});
