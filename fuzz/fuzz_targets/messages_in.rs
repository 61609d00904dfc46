//! Anthropic's Messages API in front of the stack, on arbitrary bytes: the
//! request and answer translations never panic and, when they succeed, give
//! JSON of the right shape; the stream translator gives well-formed events,
//! ending with `message_stop` or `error`, however the chunks look.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower_failover_provider::translate::messages::{
    MessagesStream, request_from_anthropic, response_to_anthropic,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = request_from_anthropic(data) {
        let v: Value = serde_json::from_slice(&r.body).expect("the OpenAI request is JSON");
        assert!(v["messages"].is_array());
        assert_eq!(v["model"].as_str(), Some(r.model.as_str()));
    }
    if let Ok(m) = response_to_anthropic(data, "m") {
        let v: Value = serde_json::from_slice(&m).expect("the Message is JSON");
        assert_eq!(v["type"], "message");
        assert!(v["content"].is_array());
    }
    // Each line one chunk's data.
    let mut t = MessagesStream::new("m");
    let mut out = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        if t.push(line, &mut out).is_err() {
            t.fail("api_error", "bad chunk", &mut out);
            break;
        }
    }
    t.finish(&mut out);
    let text = std::str::from_utf8(&out).expect("events are UTF-8");
    assert!(text.ends_with("\n\n"));
    let mut last = "";
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let (name, data) = event
            .split_once('\n')
            .expect("an event line and a data line");
        let name = name.strip_prefix("event: ").expect("an event name");
        let data: Value = serde_json::from_str(data.strip_prefix("data: ").expect("data"))
            .expect("event data is JSON");
        assert_eq!(data["type"], name);
        last = name;
    }
    assert!(last == "message_stop" || last == "error", "{last}");
});
