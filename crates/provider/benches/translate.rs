//! Translation cost per request, against a plain `serde_json` round trip of the same
//! bytes (parse into a `Value`, serialize it back) measured in the same run.
//!
//! - `request`: an OpenAI chat completion (system prompt, 8 turns, a tool call and
//!   its result, two tools) into an Anthropic messages request.
//! - `response`: an Anthropic JSON answer (text and a tool call) into an OpenAI chat
//!   completion.
//! - `stream`: a whole Anthropic SSE answer (about 100 events) into OpenAI chunks;
//!   the baseline parses and re-serializes each event's data.
//! - `sse_1kib`: the SSE parser alone over a 1 KiB OpenAI stream (7 events, fed in
//!   512-byte chunks), as the OpenAI-compatible adapter watches a stream; the
//!   baseline copies the same bytes.
//! - `openai_prepare`: the OpenAI-compatible adapter's only rewrite (map the model
//!   name, add `stream_options`) of the same request.
//!
//! After criterion's figures, a summary prints each case's time per request and its
//! ratio to its baseline.
//!
//! Then `system_4mib`, a pathological body: 4 MiB of 100 000 tiny system messages
//! (once quadratic: the system text was re-copied for every message), timed as the
//! median of 5 single calls against the same round-trip baseline. It is not a
//! criterion group so that the quadratic version can be timed too (a criterion run
//! of it would take hours); `cargo bench … -- none` skips criterion's groups and
//! prints only the summaries.
//!
//! Run with: `cargo bench -p tower-failover-provider --bench translate`

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::Criterion;
use serde_json::{Value, json};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::sse::{SseError, SseEvent, SseLimits, SseParser};
use tower_failover_provider::ModelMap;
use tower_failover_provider::translate::anthropic::{
    RequestOptions, StreamTranslator, request_to_anthropic, response_to_openai,
};
use tower_failover_provider::translate::openai::prepare_request;

fn request_body() -> Vec<u8> {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant for a travel agency. Answer briefly and use the tools when you need live data."}),
    ];
    for i in 0..3 {
        messages.push(json!({"role": "user", "content": format!("Question {i}: what should I pack for a week in Oslo in March? I will walk a lot and visit museums.")}));
        messages.push(json!({"role": "assistant", "content": format!("Answer {i}: layers, a waterproof jacket, good walking shoes, gloves and a hat. Museums are warm, so wear something you can take off.")}));
    }
    messages.push(json!({"role": "user", "content": "And the weather right now?"}));
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\",\"unit\":\"celsius\"}"}}
    ]}));
    messages.push(json!({"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": -3, \"sky\": \"snow\"}"}));
    let body = json!({
        "model": "smart",
        "messages": messages,
        "max_tokens": 512,
        "temperature": 0.4,
        "stream": true,
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "find_museums", "description": "Museums open today in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
        ],
        "tool_choice": "auto"
    });
    serde_json::to_vec(&body).unwrap()
}

fn response_body() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "It is snowing in Oslo at -3°C. Bring a warm coat, waterproof boots and gloves; most museums are a short walk from the centre, so plan indoor stops between walks. ".repeat(3)},
            {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "find_museums", "input": {"city": "Oslo"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 1520, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 96}
    }))
    .unwrap()
}

fn stream_body() -> Vec<u8> {
    let mut s = String::new();
    s.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":1520,\"output_tokens\":1}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for i in 0..96 {
        s.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" word{i}\"}}}}\n\n"));
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":96}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s.into_bytes()
}

fn round_trip(body: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap();
    serde_json::to_vec(&v).unwrap()
}

/// The baseline of the stream case: each event's data parsed and written back.
fn round_trip_events(stream: &[u8]) -> usize {
    let mut n = 0;
    for event in stream.split(|b| *b == b'\n') {
        if let Some(data) = event.strip_prefix(b"data: ") {
            n += round_trip(data).len();
        }
    }
    n
}

fn translate_stream(stream: &[u8], chunk: usize) -> usize {
    let mut t = StreamTranslator::new(true, 1 << 20);
    let mut out = Vec::with_capacity(stream.len() * 2);
    for c in stream.chunks(chunk) {
        t.push(c, &mut out).unwrap();
    }
    t.finish(&mut out).unwrap();
    out.len()
}

/// About 1 KiB of OpenAI chunks ending with `data: [DONE]`, in 512-byte pieces.
fn openai_stream_1kib() -> Vec<Bytes> {
    let mut s = String::new();
    let mut i = 0;
    while s.len() < 1024 - 200 {
        let c = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": format!(" word{i}")}, "finish_reason": null}]});
        s.push_str(&format!("data: {c}\n\n"));
        i += 1;
    }
    s.push_str("data: [DONE]\n\n");
    let bytes = Bytes::from(s);
    (0..bytes.len())
        .step_by(512)
        .map(|a| bytes.slice(a..(a + 512).min(bytes.len())))
        .collect()
}

/// Events in the stream, counted by the SSE parser.
fn parse_stream(chunks: &[Bytes]) -> usize {
    let mut p = SseParser::with_limits(SseLimits::both(1 << 20));
    let mut n = 0;
    let mut on = |ev: SseEvent<'_>| -> Result<(), SseError> {
        n += ev.data.len();
        Ok(())
    };
    for c in chunks {
        p.feed(c, &mut on).unwrap();
    }
    p.finish(&mut on).unwrap();
    n
}

struct Case {
    name: &'static str,
    baseline: Box<dyn Fn() -> usize>,
    subject: Box<dyn Fn() -> usize>,
}

fn cases() -> Vec<Case> {
    let models = ModelMap::from_iter([("smart", "claude-sonnet-4-5")]);
    let req = request_body();
    let res = response_body();
    let stream = stream_body();
    let req_bytes = Bytes::from(req.clone());
    let (r1, r2, r3) = (req.clone(), req.clone(), res.clone());
    let (m1, m2) = (models.clone(), models);
    let (s1, s2) = (stream.clone(), stream);
    let sse = openai_stream_1kib();
    vec![
        Case {
            name: "request",
            baseline: Box::new(move || round_trip(black_box(&r1)).len()),
            subject: Box::new(move || {
                let opts = RequestOptions {
                    models: &m1,
                    default_max_tokens: Some(4096),
                };
                request_to_anthropic(black_box(&r2), &opts)
                    .unwrap()
                    .body
                    .len()
            }),
        },
        Case {
            name: "response",
            baseline: Box::new({
                let r = res.clone();
                move || round_trip(black_box(&r)).len()
            }),
            subject: Box::new(move || response_to_openai(black_box(&r3)).unwrap().0.len()),
        },
        Case {
            name: "stream",
            baseline: Box::new(move || round_trip_events(black_box(&s1))),
            subject: Box::new(move || translate_stream(black_box(&s2), 1400)),
        },
        Case {
            name: "sse_1kib",
            baseline: Box::new({
                let c = sse.clone();
                move || black_box(&c).iter().map(|b| b.to_vec().len()).sum()
            }),
            subject: Box::new(move || parse_stream(black_box(&sse))),
        },
        Case {
            name: "openai_prepare",
            baseline: Box::new({
                let r = req.clone();
                move || round_trip(black_box(&r)).len()
            }),
            subject: Box::new(move || {
                // A fresh body each time: the parse is part of the preparation.
                let body = ReplayBody::from(black_box(req_bytes.clone()));
                prepare_request(&body, &m2, true).unwrap().body.len()
            }),
        },
    ]
}

/// Mean time per call over `iters` calls.
// Benchmarks measure real time; the clippy rule against std's clock is for tests.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn time(f: &dyn Fn() -> usize, iters: u32) -> Duration {
    let start = std::time::Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    start.elapsed() / iters
}

fn summary(cases: &[Case]) {
    println!(
        "\ntranslation cost per request (median of 7 rounds, baseline = serde_json Value round trip of the same input):"
    );
    println!(
        "{:<16} {:>12} {:>12} {:>8}",
        "case", "baseline", "translate", "ratio"
    );
    for case in cases {
        let mut base = Vec::new();
        let mut subj = Vec::new();
        for _ in 0..7 {
            base.push(time(&*case.baseline, 400));
            subj.push(time(&*case.subject, 400));
        }
        base.sort();
        subj.sort();
        let (b, s) = (base[3], subj[3]);
        println!(
            "{:<16} {:>9.1} µs {:>9.1} µs {:>7.2}x",
            case.name,
            b.as_secs_f64() * 1e6,
            s.as_secs_f64() * 1e6,
            s.as_secs_f64() / b.as_secs_f64()
        );
    }
}

/// An OpenAI request of `n` tiny system messages, then one user turn.
fn many_system_messages(n: usize) -> Vec<u8> {
    let mut body = String::with_capacity(n * 42 + 64);
    body.push_str(r#"{"model":"smart","max_tokens":16,"messages":["#);
    for i in 0..n {
        body.push_str(&format!(r#"{{"role":"system","content":"rule {i:06}"}},"#));
    }
    body.push_str(r#"{"role":"user","content":"hi"}]}"#);
    body.into_bytes()
}

/// Median of 5 single calls.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn median_of_5(f: &dyn Fn() -> usize) -> Duration {
    let mut t: Vec<Duration> = (0..5)
        .map(|_| {
            let start = std::time::Instant::now();
            black_box(f());
            start.elapsed()
        })
        .collect();
    t.sort();
    t[2]
}

fn pathological() {
    let models = ModelMap::new();
    let body = many_system_messages(100_000);
    let opts = RequestOptions {
        models: &models,
        default_max_tokens: Some(4096),
    };
    let base = median_of_5(&|| round_trip(black_box(&body)).len());
    let subj = median_of_5(&|| {
        request_to_anthropic(black_box(&body), &opts)
            .unwrap()
            .body
            .len()
    });
    println!(
        "\nsystem_4mib: {:.1} MiB, 100 000 system messages (median of 5 calls):\n\
         {:<16} {:>9.1} ms {:>9.1} ms {:>7.2}x",
        body.len() as f64 / (1 << 20) as f64,
        "system_4mib",
        base.as_secs_f64() * 1e3,
        subj.as_secs_f64() * 1e3,
        subj.as_secs_f64() / base.as_secs_f64()
    );
}

fn main() {
    let cases = cases();
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3));
    for case in &cases {
        let mut g = c.benchmark_group(case.name);
        g.bench_function("serde_json_round_trip", |b| b.iter(|| (case.baseline)()));
        g.bench_function("translate", |b| b.iter(|| (case.subject)()));
        g.finish();
    }
    c.final_summary();
    summary(&cases);
    pathological();
}
