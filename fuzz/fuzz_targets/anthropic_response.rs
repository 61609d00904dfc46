//! Anthropic answers → OpenAI answers on arbitrary provider bytes: the JSON
//! translation gives an OpenAI completion or a typed error; the stream translator
//! gives well-formed OpenAI SSE, the same output and the same verdict however the
//! provider's bytes are split, and never claims completion without `[DONE]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower_failover_provider::translate::anthropic::{StreamTranslator, response_to_openai};

/// The output's events with `created` (the translator's clock) removed, and the verdict.
fn stream(input: &[u8], step: usize, max_event: usize) -> (Vec<Value>, bool, bool) {
    let mut t = StreamTranslator::new(true, max_event);
    let mut out = Vec::new();
    let mut ok = true;
    for chunk in input.chunks(step.max(1)) {
        if t.push(chunk, &mut out).is_err() {
            ok = false;
            break;
        }
    }
    if ok {
        ok = t.finish(&mut out).is_ok();
    }
    let text = std::str::from_utf8(&out).expect("OpenAI SSE is UTF-8");
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    let mut events = Vec::new();
    let mut done = false;
    for ev in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = ev.strip_prefix("data: ").expect("a data line");
        assert!(!done, "an event after [DONE]");
        if data == "[DONE]" {
            done = true;
            events.push(Value::Null);
            continue;
        }
        let mut v: Value = serde_json::from_str(data).expect("event data is JSON");
        assert_eq!(v["object"], "chat.completion.chunk");
        v.as_object_mut().expect("an object").remove("created");
        events.push(v);
    }
    if ok {
        assert!(t.is_complete() && done);
    }
    (events, ok, done)
}

fuzz_target!(|data: &[u8]| {
    if let Ok((body, counts)) = response_to_openai(data) {
        let v: Value = serde_json::from_slice(&body).expect("the completion is JSON");
        assert!(v["choices"].is_array());
        assert_eq!(
            v["usage"]["prompt_tokens"].as_u64(),
            Some(counts.prompt_tokens)
        );
        assert_eq!(
            v["usage"]["completion_tokens"].as_u64(),
            Some(counts.completion_tokens)
        );
    }
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let max_event = 64 + usize::from(ctl) * 16;
    let whole = stream(input, input.len(), max_event);
    let split = stream(input, usize::from(ctl % 7) + 1, max_event);
    assert_eq!(whole, split);
});
