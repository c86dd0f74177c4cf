//! Fuzz target: any bytes as a config file, user-data or kernel command line must be
//! handled without panicking, hanging or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ros_config::{parse_user_data, resolve, validate_text, Cmdline, Layer, Mode};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = validate_text("fuzz.yml", &text, Mode::Strict);
    if let Ok(layer) = Layer::parse("fuzz.yml", &text) {
        let cmdline = Cmdline::parse(&text);
        let _ = resolve(vec![layer, cmdline.layer()], Mode::Boot);
    }
    let _ = parse_user_data(data);
});
