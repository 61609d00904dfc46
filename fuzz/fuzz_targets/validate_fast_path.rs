//! The buffered answer's fast reader (validation reads the usual OpenAI answer
//! without building a `serde_json::Value`) against the `Value` reader: wherever the
//! fast one reads a body at all, both find the same facts (content, refusal, finish
//! reason, tool calls, error, shape), for every wire hint. The same bytes as a
//! streamed event's data: the fast chunk reader and serde's derive find the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_failover_validate::fuzzing::{fast_path_agrees, stream_fast_path_agrees};

fuzz_target!(|data: &[u8]| {
    assert!(
        fast_path_agrees(data),
        "the fast reader and the Value reader disagree on {:?}",
        String::from_utf8_lossy(data)
    );
    assert!(
        stream_fast_path_agrees(data),
        "the fast chunk reader and serde disagree on {:?}",
        String::from_utf8_lossy(data)
    );
});
