//! The provider's quick usage reader (core's strict `json::Reader`, no serde
//! derive) against the serde reader it replaced: wherever the quick one reads a
//! body at all, both find the same usage, and what the adapter returns (usage or
//! `InvalidJson` error, message included) is exactly what serde returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_failover_provider::fuzzing::usage_reader_agrees;

fuzz_target!(|data: &[u8]| {
    assert!(
        usage_reader_agrees(data),
        "the quick usage reader and serde disagree on {:?}",
        String::from_utf8_lossy(data)
    );
});
