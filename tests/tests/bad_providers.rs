//! Providers that fail the way real ones do, through what users run: the stack
//! built by `Stack::from_config` and the gateway over real loopback HTTP, in front of
//! a misbehaving primary and a healthy backup (`router = "fallback"`), with callers
//! one after another.
//!
//! Every scenario asserts what each caller got, how many requests reached the bad
//! provider (at most its circuit threshold plus probes), that no caller-visible
//! body, header or log line carries the provider's error text or any key material,
//! and that the stack is still serving afterwards.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tower::ServiceExt;
use tower_failover::sim::{AbsurdHeaders, Billing, CutPoint, Fault, FaultSpec, Flavor, Sim};
use tower_failover::{Config, Stack, error_response};

/// The primary's API key. The simulator echoes a masked fragment of it in its 401
/// text, as OpenAI does ("Incorrect API key provided: sk-*****zq81").
const PRIMARY_KEY: &str = "sk-primaryREVOKEDzq81";
const BACKUP_KEY: &str = "sk-backupHEALTHYkx52";

/// Text that must never reach a caller or a log line: key material and the
/// providers' own error wording.
const SECRETS: &[&str] = &[
    "REVOKED",
    "zq81",
    "HEALTHY",
    "kx52",
    "Incorrect API key",
    "invalid x-api-key",
    "exceeded your current quota",
    "credit balance",
    "Insufficient Balance",
    "unsupported_country",
];

/// How many callers each scenario sends, one after another.
const CALLERS: usize = 20;

// ---------------------------------------------------------------------------
// Log capture: every log line of the process goes to one buffer, checked for
// secrets by every test.

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=info,hyper_util=info,h2=info,rustls=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        captured
    })
}

fn assert_logs_clean() {
    let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
    assert!(!text.is_empty(), "the capture sees the stack's log lines");
    for s in SECRETS {
        assert!(
            !text.contains(s),
            "a log line carries {s:?}:\n{}",
            text.lines()
                .filter(|l| l.contains(s))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

// ---------------------------------------------------------------------------
// The providers and the configuration.

async fn sim(name: &str, flavor: Flavor, seed: u64) -> Sim {
    Sim::builder(flavor)
        .name(name)
        .seed(seed)
        .ttft(Duration::from_millis(2))
        .token_interval(Duration::from_millis(1))
        .start()
        .await
        .unwrap()
}

fn base_url(sim: &Sim, flavor: Flavor) -> String {
    match flavor {
        Flavor::OpenAi => format!("{}/v1", sim.base_url()),
        Flavor::Anthropic => sim.base_url().to_owned(),
    }
}

/// A bad primary and a healthy backup.
struct Pair {
    primary: Sim,
    backup: Sim,
    primary_flavor: Flavor,
}

impl Pair {
    async fn new(primary_flavor: Flavor) -> Pair {
        Pair {
            primary: sim("primary", primary_flavor, 1).await,
            backup: sim("backup", Flavor::OpenAi, 2).await,
            primary_flavor,
        }
    }

    /// The shipped defaults, with the router set to the ordered fallback; `extra`
    /// is TOML added at the top level (before the providers) and `primary_extra`
    /// lines added to the primary's entry.
    fn config(&self, extra: &str, primary_extra: &str) -> Config {
        let text = format!(
            r#"
            router = "fallback"
            {extra}

            [[providers]]
            name = "primary"
            model = "gpt-4o-mini"
            kind = "{}"
            base_url = "{}"
            api_key = "{PRIMARY_KEY}"
            priority = 0
            {primary_extra}

            [[providers]]
            name = "backup"
            model = "gpt-4o-mini-backup"
            aliases = ["gpt-4o-mini"]    # in gpt-4o-mini's group: requests are routed by model
            kind = "openai"
            base_url = "{}"
            api_key = "{BACKUP_KEY}"
            priority = 1
            "#,
            common::wire(self.primary_flavor),
            base_url(&self.primary, self.primary_flavor),
            base_url(&self.backup, Flavor::OpenAi),
        );
        Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn break_primary(&self, fault: Fault) {
        self.primary.set_faults([FaultSpec::always(fault)]).unwrap();
    }
}

fn chat_body(stream: bool) -> String {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello"}],
    })
    .to_string()
}

// ---------------------------------------------------------------------------
// What a caller got.

#[derive(Debug)]
struct Got {
    status: u16,
    headers: String,
    body: String,
    /// The body ended with an error (a truncated stream), and its text.
    body_error: Option<String>,
}

impl Got {
    fn complete(&self, stream: bool) -> bool {
        if self.status != 200 || self.body_error.is_some() {
            return false;
        }
        if stream {
            self.body.contains("chat.completion.chunk")
                && self.body.trim_end().ends_with("data: [DONE]")
        } else {
            serde_json::from_str::<serde_json::Value>(&self.body)
                .ok()
                .and_then(|v| v["choices"][0]["message"]["content"].as_str().map(str::len))
                .is_some_and(|n| n > 0)
        }
    }

    fn assert_clean(&self) {
        for s in SECRETS {
            for (what, text) in [
                ("body", &self.body),
                ("headers", &self.headers),
                (
                    "body error",
                    self.body_error.as_ref().unwrap_or(&String::new()),
                ),
            ] {
                assert!(
                    !text.contains(s),
                    "the caller's {what} carries {s:?}: {text}"
                );
            }
        }
    }
}

fn headers_text(headers: &http::HeaderMap) -> String {
    headers
        .iter()
        .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
        .collect()
}

/// Reads a body to its end or its error, under a generous guard against hangs.
async fn read_body<B>(body: B) -> (String, Option<String>)
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = body;
    let mut text = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        text.extend_from_slice(d);
                    }
                }
                Err(e) => return Some(e.to_string()),
            }
        }
        None
    };
    let error = tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("a caller's body never hangs");
    (String::from_utf8_lossy(&text).into_owned(), error)
}

/// One caller through the stack built by `Stack::from_config`, answering errors as
/// the gateway would (`error_response`).
async fn through_stack(failover: &tower_failover::Failover, stream: bool) -> Got {
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat_body(stream))))
        .unwrap();
    let called = tokio::time::timeout(Duration::from_secs(120), failover.clone().oneshot(req))
        .await
        .expect("a caller never hangs");
    match called {
        Ok(res) => {
            let (parts, body) = res.into_parts();
            let (body, body_error) = read_body(body).await;
            Got {
                status: parts.status.as_u16(),
                headers: headers_text(&parts.headers),
                body,
                body_error,
            }
        }
        Err(e) => {
            let res = error_response(&*e);
            Got {
                status: res.status().as_u16(),
                headers: headers_text(res.headers()),
                body: res.body().clone(),
                body_error: None,
            }
        }
    }
}

/// A gateway on loopback, in front of the same configuration.
struct Gateway(common::Running);

impl Gateway {
    async fn start(config: &Config) -> Gateway {
        Gateway(common::start(config).await)
    }

    async fn call(&self, stream: bool) -> Got {
        let req = Request::post(format!("http://{}/v1/chat/completions", self.0.addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(chat_body(stream))))
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(120), self.0.client.request(req))
            .await
            .expect("the gateway answers")
            .expect("the gateway answers");
        let (parts, body) = res.into_parts();
        let (body, body_error) = read_body(body).await;
        Got {
            status: parts.status.as_u16(),
            headers: headers_text(&parts.headers),
            body,
            body_error,
        }
    }

    async fn health(&self) -> serde_json::Value {
        self.0.send("GET", "/health", "").await.json()
    }

    async fn shutdown(self) {
        self.0.shutdown().await.unwrap();
    }
}

/// Which front the callers go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Front {
    Stack,
    Gateway,
}

/// What the callers of one scenario got, and what the primary received.
struct Run {
    got: Vec<Got>,
    primary_received: u64,
}

/// Sends `callers` requests one after another through `front`, with `fault` on
/// the primary, then checks the stack still serves (a healthy call answered).
async fn run(
    front: Front,
    pair: &Pair,
    config: &Config,
    fault: Fault,
    stream: bool,
    callers: usize,
) -> Run {
    logs();
    pair.break_primary(fault);
    let mut got = Vec::with_capacity(callers);
    match front {
        Front::Stack => {
            let failover = Stack::from_config(config).unwrap().build().unwrap();
            for _ in 0..callers {
                got.push(through_stack(&failover, stream).await);
            }
            // Still serving: the primary heals, the stack answers.
            let received = pair.primary.counters().received;
            pair.primary.clear_faults();
            let after = through_stack(&failover, false).await;
            assert!(after.complete(false), "still serving: {after:?}");
            Run {
                got,
                primary_received: received,
            }
        }
        Front::Gateway => {
            let gw = Gateway::start(config).await;
            for _ in 0..callers {
                got.push(gw.call(stream).await);
            }
            let received = pair.primary.counters().received;
            pair.primary.clear_faults();
            let after = gw.call(false).await;
            assert!(after.complete(false), "still serving: {after:?}");
            let health = gw.health().await;
            assert_eq!(health["providers"].as_array().map(Vec::len), Some(2));
            gw.shutdown().await;
            Run {
                got,
                primary_received: received,
            }
        }
    }
}

fn assert_all_complete(run: &Run, stream: bool) {
    for (i, g) in run.got.iter().enumerate() {
        assert!(g.complete(stream), "caller {i} got {g:?}");
        g.assert_clean();
    }
    assert_logs_clean();
}

// ---------------------------------------------------------------------------
// Credential and billing failures: the provider's failure, not the caller's.

async fn credential_like(front: Front, primary_flavor: Flavor, fault: Fault) {
    let pair = Pair::new(primary_flavor).await;
    let config = pair.config("", "");
    for stream in [false, true] {
        pair.primary.handle().reset_counters();
        let run = run(front, &pair, &config, fault.clone(), stream, CALLERS).await;
        assert_all_complete(&run, stream);
        // One such answer is enough evidence: the circuit opened at once, and its
        // long cooldown keeps every later caller away.
        assert_eq!(
            run.primary_received, 1,
            "{fault:?} via {front:?} (stream {stream}): requests that reached the primary"
        );
    }
}

macro_rules! both_fronts {
    ($stack:ident, $gateway:ident, |$front:ident| $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $stack() {
            let $front = Front::Stack;
            $body
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $gateway() {
            let $front = Front::Gateway;
            $body
        }
    };
}

both_fronts!(
    revoked_key_fails_over_through_the_stack,
    revoked_key_fails_over_through_the_gateway,
    |front| credential_like(front, Flavor::OpenAi, Fault::Credential(401)).await
);

both_fronts!(
    forbidden_key_fails_over_through_the_stack,
    forbidden_key_fails_over_through_the_gateway,
    |front| credential_like(front, Flavor::OpenAi, Fault::Credential(403)).await
);

both_fronts!(
    payment_required_fails_over_through_the_stack,
    payment_required_fails_over_through_the_gateway,
    |front| credential_like(
        front,
        Flavor::OpenAi,
        Fault::Billing(Billing::PaymentRequired)
    )
    .await
);

both_fronts!(
    insufficient_quota_fails_over_through_the_stack,
    insufficient_quota_fails_over_through_the_gateway,
    |front| {
        credential_like(
            front,
            Flavor::OpenAi,
            Fault::Billing(Billing::InsufficientQuota),
        )
        .await
    }
);

both_fronts!(
    anthropic_credit_balance_fails_over_through_the_stack,
    anthropic_credit_balance_fails_over_through_the_gateway,
    |front| {
        credential_like(
            front,
            Flavor::Anthropic,
            Fault::Billing(Billing::CreditBalance),
        )
        .await
    }
);

both_fronts!(
    anthropic_revoked_key_fails_over_through_the_stack,
    anthropic_revoked_key_fails_over_through_the_gateway,
    |front| credential_like(front, Flavor::Anthropic, Fault::Credential(401)).await
);

// ---------------------------------------------------------------------------
// Hostile headers on a good answer: clamped or ignored, never a panic.

async fn absurd_but_parseable(front: Front) {
    let pair = Pair::new(Flavor::OpenAi).await;
    let config = pair.config("", "");
    for value in [None, Some("1e23"), Some("18446744073709551616"), Some("-0")] {
        pair.primary.handle().reset_counters();
        let fault = Fault::AbsurdHeaders(AbsurdHeaders {
            value: value.map(str::to_owned),
            count: 0,
        });
        let run = run(front, &pair, &config, fault, false, CALLERS).await;
        assert_all_complete(&run, false);
        // The primary answered well each time: nothing to fail over from.
        assert_eq!(run.primary_received, CALLERS as u64, "value {value:?}");
        assert_eq!(pair.backup.counters().received, 0, "value {value:?}");
    }
}

both_fronts!(
    absurd_rate_limit_headers_are_ignored_by_the_stack,
    absurd_rate_limit_headers_are_ignored_by_the_gateway,
    |front| absurd_but_parseable(front).await
);

/// Hundreds of headers: the HTTP client refuses the answer, which is the
/// provider's failure (the circuit opens after its threshold).
async fn too_many_headers(front: Front) {
    let pair = Pair::new(Flavor::OpenAi).await;
    let config = pair.config("", "");
    let fault = Fault::AbsurdHeaders(AbsurdHeaders::default());
    let run = run(front, &pair, &config, fault, false, CALLERS).await;
    assert_all_complete(&run, false);
    assert!(
        run.primary_received <= DEFAULT_THRESHOLD,
        "the primary received {}",
        run.primary_received
    );
}

/// The circuit breaker's default consecutive-failure threshold.
const DEFAULT_THRESHOLD: u64 = 5;

both_fronts!(
    thousands_of_headers_fail_over_through_the_stack,
    thousands_of_headers_fail_over_through_the_gateway,
    |front| too_many_headers(front).await
);

// 200s that are not answers (an HTML error page from a proxy, an empty body,
// broken JSON, an error object) are in `malformed.rs`.

// ---------------------------------------------------------------------------
// Streams that die or stall after their first bytes.

/// Each caller got a complete answer or, past the commit point, a stream that
/// ended with an error (never a clean but short one).
fn assert_complete_or_truncated(run: &Run, stream: bool) -> usize {
    let mut truncated = 0;
    for (i, g) in run.got.iter().enumerate() {
        g.assert_clean();
        if g.complete(stream) {
            continue;
        }
        assert_eq!(g.status, 200, "caller {i} got {g:?}");
        assert!(
            g.body_error.is_some(),
            "caller {i}: a short answer must end with an error, got {g:?}"
        );
        truncated += 1;
    }
    assert_logs_clean();
    truncated
}

async fn dies_mid_stream(front: Front, after_events: usize) {
    let pair = Pair::new(Flavor::OpenAi).await;
    let config = pair.config("", "");
    let fault = Fault::ResetAfter(CutPoint::new(after_events, 0));
    let run = run(front, &pair, &config, fault, true, CALLERS).await;
    let truncated = assert_complete_or_truncated(&run, true);
    assert!(
        truncated as u64 <= DEFAULT_THRESHOLD,
        "{truncated} truncated"
    );
    assert!(
        run.primary_received <= DEFAULT_THRESHOLD,
        "the primary received {}",
        run.primary_received
    );
}

both_fronts!(
    stream_reset_after_first_event_through_the_stack,
    stream_reset_after_first_event_through_the_gateway,
    |front| dies_mid_stream(front, 1).await
);

both_fronts!(
    stream_reset_after_content_through_the_stack,
    stream_reset_after_content_through_the_gateway,
    |front| dies_mid_stream(front, 4).await
);

/// Streams (and plain bodies) that go silent after their first bytes end at the
/// idle timeout (short here; 30 s by default), count as the provider's timeout, and
/// trip its circuit.
async fn stalls(front: Front, stream: bool) {
    let pair = Pair::new(Flavor::OpenAi).await;
    let config = pair.config("", r#"timeouts = { idle = "300ms" }"#);
    let fault = Fault::Stall(CutPoint::new(1, 0));
    let run = run(front, &pair, &config, fault, stream, CALLERS).await;
    let truncated = assert_complete_or_truncated(&run, stream);
    assert!(
        truncated as u64 <= DEFAULT_THRESHOLD,
        "{truncated} truncated"
    );
    assert!(
        run.primary_received <= DEFAULT_THRESHOLD,
        "the primary received {}",
        run.primary_received
    );
}

both_fronts!(
    stream_stall_after_first_event_through_the_stack,
    stream_stall_after_first_event_through_the_gateway,
    |front| stalls(front, true).await
);

both_fronts!(
    body_stall_after_headers_through_the_stack,
    body_stall_after_headers_through_the_gateway,
    |front| stalls(front, false).await
);

// ---------------------------------------------------------------------------
// A provider that accepts connections and never answers.

/// The router's attempt timeout drops each attempt at the hung primary: the
/// primary's health hears a timeout every time, so its circuit opens at its
/// threshold and later callers never wait on it.
async fn hang_with_attempt_timeout(front: Front) {
    let pair = Pair::new(Flavor::OpenAi).await;
    let config = pair.config("[fallback]\nattempt_timeout = \"300ms\"", "");
    let run = run(front, &pair, &config, Fault::Hang, false, CALLERS).await;
    assert_all_complete(&run, false);
    assert!(
        run.primary_received <= DEFAULT_THRESHOLD,
        "the primary received {}",
        run.primary_received
    );
}

both_fronts!(
    hang_under_attempt_timeout_through_the_stack,
    hang_under_attempt_timeout_through_the_gateway,
    |front| hang_with_attempt_timeout(front).await
);

/// The shipped defaults, with callers arriving every 100 ms (streamed): the first
/// ones wait for the 10 s first-byte timeout and then get the backup; once the
/// primary has been silent with requests waiting for longer than its suspicion
/// threshold, new callers go straight to the backup. Every caller is served.
async fn hang_with_defaults(front: Front) {
    const PACED: usize = 40;
    let pair = Pair::new(Flavor::OpenAi).await;
    let config = pair.config("", "");
    logs();
    pair.break_primary(Fault::Hang);
    let gateway = match front {
        Front::Gateway => Some(Arc::new(Gateway::start(&config).await)),
        Front::Stack => None,
    };
    let failover = Stack::from_config(&config).unwrap().build().unwrap();
    let mut callers = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for i in 0..PACED {
        tick.tick().await;
        let (gateway, failover) = (gateway.clone(), failover.clone());
        callers.spawn(async move {
            let got = match gateway {
                Some(gw) => gw.call(true).await,
                None => through_stack(&failover, true).await,
            };
            (i, got)
        });
    }
    let mut served = 0;
    while let Some(joined) = callers.join_next().await {
        let (i, got) = joined.unwrap();
        assert!(got.complete(true), "caller {i} got {got:?}");
        got.assert_clean();
        served += 1;
    }
    assert_eq!(served, PACED);
    assert_logs_clean();
    // Callers arrive every 100 ms; the primary is suspect about 2 s after the first
    // one started waiting (4 × an unmeasured 500 ms), so about twenty reached it. A
    // slower machine only sends fewer there. Without detection all forty would.
    let received = pair.primary.counters().received;
    assert!(
        received <= 30,
        "{received} of {PACED} callers were sent to the silent primary"
    );
    if let Some(gw) = gateway {
        Arc::into_inner(gw).unwrap().shutdown().await;
    }
}

both_fronts!(
    hang_with_shipped_defaults_through_the_stack,
    hang_with_shipped_defaults_through_the_gateway,
    |front| hang_with_defaults(front).await
);
