//! The TOML configuration on arbitrary text: `Config::from_toml_str` gives a
//! config or an error naming a field, and a config it accepts builds a stack (or
//! fails with a typed error), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_failover::{Config, Stack};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_toml_str(text) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        if let Ok(builder) = Stack::from_config(&config) {
            let _ = builder.build();
        }
    });
});
