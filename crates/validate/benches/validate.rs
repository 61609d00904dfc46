//! Validation cost per KiB of body, against a baseline of just copying the body,
//! measured in the same run.
//!
//! Cases, each at several body sizes (criterion reports throughput in bytes):
//!
//! - `copy`: `Bytes::copy_from_slice` of the body: the baseline;
//! - `json_shape`: a buffered OpenAI completion through `ValidJson` + `ErrorObject` +
//!   `Shape` (one JSON parse plus the shape walk);
//! - `llm_default`: the same body through `Validators::llm()` (adds the refusal
//!   check; the finish-reason check is opt-in);
//! - `schema`: structured output (the content is a JSON document of that size)
//!   through `Validators::llm()` plus a `JsonSchema`;
//! - `sse_parse`: the SSE parser alone over an OpenAI stream of that size, fed in
//!   512-byte chunks;
//! - `sse_layer` vs `sse_passthrough`: the same stream end to end through
//!   `ValidateLayer` (parse, per-event JSON, hold-back, replay) and through the bare
//!   service, both collected by the caller.
//!
//! After criterion's own output, a summary prints ns per KiB and the ratio to the
//! copy baseline (and layer / passthrough for streams).
//!
//! Run with: `cargo bench -p tower-failover-validate --bench validate`

use std::collections::VecDeque;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};
use tower_failover_core::sse::{SseError, SseParser};
use tower_failover_validate::checks::{ErrorObject, JsonSchema, Shape, ValidJson};
use tower_failover_validate::{ValidateLayer, Validators, check_body};

const SIZES: [usize; 3] = [1024, 16 * 1024, 256 * 1024];
const CHUNK: usize = 512;

const WORDS: &[&str] = &[
    "the",
    "provider",
    "answered",
    "quickly",
    "and",
    "the",
    "caller",
    "never",
    "noticed",
    "failover",
    "latency",
    "stream",
    "token",
    "budget",
    "circuit",
    "recovered",
];

fn prose(n: usize) -> String {
    let mut s = String::with_capacity(n + 16);
    let mut i = 0;
    while s.len() < n {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[i % WORDS.len()]);
        i += 1;
    }
    s
}

fn completion(content: &str) -> Bytes {
    Bytes::from(
        json!({
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 100, "total_tokens": 110}
        })
        .to_string(),
    )
}

/// A completion of about `n` bytes.
fn text_body(n: usize) -> Bytes {
    completion(&prose(n.saturating_sub(220)))
}

fn schema() -> Value {
    json!({
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "name", "score"],
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "score": {"type": "number"}},
            "additionalProperties": false
        }}}
    })
}

/// A completion of about `n` bytes whose content is a JSON document matching
/// [`schema`].
fn schema_body(n: usize) -> Bytes {
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0u64;
    while len + 260 < n {
        let item = json!({"id": i, "name": WORDS[i as usize % WORDS.len()], "score": 0.5});
        len += item.to_string().len() * 2; // escaped inside a string, roughly
        items.push(item);
        i += 1;
    }
    completion(&json!({ "items": items }).to_string())
}

/// An OpenAI stream of about `n` bytes, cut in `CHUNK`-byte pieces.
fn sse_stream(n: usize) -> (usize, Vec<Bytes>) {
    let mut s = String::new();
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    s.push_str(&chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    let mut i = 0;
    while s.len() < n {
        s.push_str(&chunk(
            json!({"content": format!(" {}", WORDS[i % WORDS.len()])}),
            Value::Null,
        ));
        i += 1;
    }
    s.push_str(&chunk(json!({}), json!("stop")));
    s.push_str("data: [DONE]\n\n");
    let bytes = Bytes::from(s);
    let parts = (0..bytes.len())
        .step_by(CHUNK)
        .map(|a| bytes.slice(a..(a + CHUNK).min(bytes.len())))
        .collect();
    (bytes.len(), parts)
}

/// A body that yields prepared chunks.
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn provider(
    parts: Vec<Bytes>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<Chunks>,
    Error = tower::BoxError,
    Future = std::future::Ready<Result<Response<Chunks>, tower::BoxError>>,
> + Clone {
    tower::service_fn(move |_: Request<()>| {
        let res = Response::builder()
            .header("content-type", "text/event-stream")
            .body(Chunks(parts.iter().cloned().collect()))
            .map_err(Into::into);
        std::future::ready(res)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// The cases, as closures over one size, so criterion and the summary run the same code.
struct Cases {
    text: Bytes,
    schema_body: Bytes,
    stream_len: usize,
    stream: Vec<Bytes>,
    json_shape: Validators,
    llm: Validators,
    with_schema: Validators,
    layer: ValidateLayer,
    rt: tokio::runtime::Runtime,
}

impl Cases {
    fn new(n: usize) -> Self {
        let (stream_len, stream) = sse_stream(n);
        Cases {
            text: text_body(n),
            schema_body: schema_body(n),
            stream_len,
            stream,
            json_shape: Validators::new()
                .with(ValidJson)
                .with(ErrorObject)
                .with(Shape),
            llm: Validators::llm(),
            with_schema: Validators::llm().with(JsonSchema::new(&schema()).unwrap()),
            layer: ValidateLayer::llm(),
            rt: runtime(),
        }
    }

    fn copy(&self) {
        black_box(Bytes::copy_from_slice(black_box(&self.text)));
    }

    fn json_shape(&self) {
        assert!(check_body(&self.json_shape, black_box(&self.text)).is_pass());
    }

    fn llm(&self) {
        assert!(check_body(&self.llm, black_box(&self.text)).is_pass());
    }

    fn schema(&self) {
        assert!(check_body(&self.with_schema, black_box(&self.schema_body)).is_pass());
    }

    fn sse_parse(&self) {
        let mut p = SseParser::new();
        let mut n = 0;
        for c in &self.stream {
            p.feed(c, &mut |ev| {
                n += ev.data.len();
                Ok::<_, SseError>(())
            })
            .unwrap();
        }
        black_box(n);
    }

    fn sse_layer(&self) {
        let svc = self.layer.layer(provider(self.stream.clone()));
        let n = self.rt.block_on(async {
            let res = svc.oneshot(Request::new(())).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes().len()
        });
        assert_eq!(n, self.stream_len);
    }

    fn sse_passthrough(&self) {
        let svc = provider(self.stream.clone());
        let n = self.rt.block_on(async {
            let res = svc.oneshot(Request::new(())).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes().len()
        });
        assert_eq!(n, self.stream_len);
    }
}

type Case = (&'static str, fn(&Cases), fn(&Cases) -> usize);

const CASES: [Case; 7] = [
    ("copy", Cases::copy, |c| c.text.len()),
    ("json_shape", Cases::json_shape, |c| c.text.len()),
    ("llm_default", Cases::llm, |c| c.text.len()),
    ("schema", Cases::schema, |c| c.schema_body.len()),
    ("sse_parse", Cases::sse_parse, |c| c.stream_len),
    ("sse_passthrough", Cases::sse_passthrough, |c| c.stream_len),
    ("sse_layer", Cases::sse_layer, |c| c.stream_len),
];

fn bench(c: &mut Criterion) {
    for n in SIZES {
        let cases = Cases::new(n);
        let mut g = c.benchmark_group(format!("validate/{}KiB", n / 1024));
        for (name, f, len) in CASES {
            g.throughput(Throughput::Bytes(len(&cases) as u64));
            g.bench_with_input(BenchmarkId::from_parameter(name), &cases, |b, cases| {
                b.iter(|| f(cases))
            });
        }
        g.finish();
    }
}

/// Times each case again with a plain loop and prints ns/KiB and ratios.
// Real elapsed time is the point of a benchmark: the clippy rule for tests does not apply.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn summary() {
    use std::time::Instant;
    println!("\nsummary: ns per KiB of body (ratio to `copy`; streams also layer / passthrough)");
    for n in SIZES {
        let cases = Cases::new(n);
        let mut per_kib = Vec::new();
        for (name, f, len) in CASES {
            f(&cases);
            let budget = Duration::from_millis(300);
            let start = Instant::now();
            let mut iters = 0u64;
            while start.elapsed() < budget {
                f(&cases);
                iters += 1;
            }
            let ns = start.elapsed().as_nanos() as f64 / iters as f64;
            per_kib.push((name, ns / (len(&cases) as f64 / 1024.0)));
        }
        let copy = per_kib[0].1;
        let pass = per_kib
            .iter()
            .find(|c| c.0 == "sse_passthrough")
            .map_or(1.0, |c| c.1);
        print!("{:>4} KiB:", n / 1024);
        for (name, v) in &per_kib {
            print!("  {name} {v:.0} ns/KiB (x{:.1})", v / copy);
        }
        let layer = per_kib
            .iter()
            .find(|c| c.0 == "sse_layer")
            .map_or(0.0, |c| c.1);
        println!("  | sse_layer / sse_passthrough x{:.1}", layer / pass);
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    summary();
}
