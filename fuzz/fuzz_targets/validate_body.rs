//! The default validators on arbitrary response bodies: a verdict, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_failover_validate::{Validators, check_body};

fuzz_target!(|data: &[u8]| {
    let _ = check_body(&Validators::llm(), data);
});
