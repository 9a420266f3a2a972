//! The config-value parsers on arbitrary text: `GUNICORN_CMD_ARGS` splitting and the command
//! line parser (every setting's validator runs on what it is given) never panic; whatever they
//! accept resolves into a `Config`.
#![no_main]

use ferrocorn_config::{Config, Sources, parse_args, parse_env_args};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cli) = parse_env_args(text) {
        let _ = Config::resolve(Sources { cli, ..Sources::default() });
    }
    let words: Vec<String> = text.split('\u{0}').map(str::to_owned).collect();
    if let Ok(cli) = parse_args(&words) {
        let _ = Config::resolve(Sources { cli, ..Sources::default() });
    }
});
