//! Simulated LLM providers with scripted faults, for failover drills and tests.
//!
//! A [`Sim`] is a real HTTP server on loopback speaking the OpenAI chat
//! completions or the Anthropic messages wire format ([`Flavor`]), streaming (SSE)
//! and not, with a seeded latency model, real RPM/TPM quotas ([`Quota`]), and
//! [`Fault`]s you switch on and off over time: outages (status codes, refused
//! connections, TCP resets, hangs, stalls and slow drips mid-answer, rejected keys,
//! proxy error pages, absurd headers), billing failures, slowdowns, rate limits,
//! and bad output. It
//! counts what it received and answered ([`Counters`]), so a test can assert, for
//! example, that no request reached a provider while its circuit was open.
//!
//! # A drill in a few lines
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower_failover_sim::{Fault, FaultKind, FaultSpec, Flavor, Sim};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Sim::builder(Flavor::OpenAi)
//!     .name("primary")
//!     .seed(7)
//!     .ttft(Duration::from_millis(5))
//!     .start()
//!     .await?; // listening on 127.0.0.1:<free port>
//!
//! // An outage: 503 for every request until the faults change.
//! let h = sim.handle();
//! h.set_faults([FaultSpec::always(Fault::Status(503))])?;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
//! let request = || http::Request::post(sim.completion_url()).body(Full::new(Bytes::from(body)));
//! assert_eq!(client.request(request()?).await?.status(), 503);
//!
//! // Recovery.
//! h.clear_faults();
//! assert_eq!(client.request(request()?).await?.status(), 200);
//!
//! let c = h.counters();
//! assert_eq!((c.received, c.status(503), c.ok()), (2, 1, 1));
//! assert_eq!(c.fault(FaultKind::Status), 1);
//! # Ok(()) }
//! ```
//!
//! # Wire formats
//!
//! | flavor | routes | rate-limit headers |
//! | --- | --- | --- |
//! | [`Flavor::OpenAi`] | `POST /v1/chat/completions`, `POST /v1/embeddings` (deterministic unit vectors seeded by the text), `GET /v1/models` | `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (resets as Go durations: `6m0s`, `1s`, `20ms`) |
//! | [`Flavor::Anthropic`] | `POST /v1/messages`, `GET /v1/models` | `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` (resets in RFC 3339) |
//!
//! Bodies are what the official SDKs expect (a test runs the Python `openai` and
//! `anthropic` packages against the sims when they are installed): ids
//! (`chatcmpl-…`, `msg_01…`), the requested model, `finish_reason` / `stop_reason`,
//! `usage`, request ids (`x-request-id` / `request-id`). Streams are SSE:
//! `chat.completion.chunk`s ending with `data: [DONE]` (plus a final usage chunk
//! with `stream_options.include_usage`), or Anthropic's `message_start`,
//! `content_block_start`, `ping`, `content_block_delta`…, `content_block_stop`,
//! `message_delta`, `message_stop`. HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN
//! with TLS) are served. The Anthropic flavor models prompt caching roughly: a
//! prompt prefix up to a `cache_control` breakpoint, of at least 1,024 tokens, is
//! counted as `cache_creation_input_tokens` the first time that simulator sees it
//! and as `cache_read_input_tokens` after.
//!
//! Replies are generated from the seed and the request's sequence number: the same
//! seed and the same request order give the same text, ids and fault draws. Token
//! counts are characters / 4 (rounded up); `max_tokens` (`max_completion_tokens`)
//! cuts the reply with `finish_reason: "length"` / `stop_reason: "max_tokens"`;
//! a stop sequence (`stop`, `stop_sequences`) ends it before the first place one
//! appears (`stop_reason: "stop_sequence"` naming it, for Anthropic; a sequence
//! of only whitespace is refused, as Anthropic does).
//! When the request asks for JSON (OpenAI `response_format` `json_object` or
//! `json_schema`, Anthropic `output_format` `json_schema`), the content is JSON
//! that satisfies the given schema, so [`Fault::WrongSchema`] and
//! [`Fault::NotJson`] are meaningful to a validator. OpenAI's strict mode
//! (`"strict": true`) refuses, as OpenAI does, a schema it cannot enforce: an
//! object without `additionalProperties: false` or with a property left out of
//! `required` answers `400 Invalid schema for response_format '…'`. When the request makes the
//! model call a tool (OpenAI `tool_choice` `"required"` or naming a function,
//! Anthropic `{"type": "any"}` or `{"type": "tool"}`), the reply is that call, with
//! arguments that satisfy the tool's schema: `tool_calls` and `finish_reason:
//! "tool_calls"`, or a `tool_use` block and `stop_reason: "tool_use"` (streamed as
//! argument deltas, `input_json_delta`s for Anthropic). With `auto` it answers in
//! text. Each response also carries
//! `x-sim-name` and, when a fault shaped it, `x-sim-fault: <kind>`.
//!
//! # Latency
//!
//! [`SimBuilder::ttft`] delays the response headers (time to first token);
//! [`SimBuilder::token_interval`] paces streamed events, and a non-streaming reply
//! waits `ttft + deltas × interval`. Every delay gets a seeded relative jitter
//! ([`SimBuilder::jitter`], ±10 % by default). All time is `tokio::time`.
//!
//! # Faults and timelines
//!
//! A [`FaultSpec`] is a [`Fault`] plus when it applies: a window on the sim's
//! clock (time since it started; [`SimHandle::elapsed`] tells the time now), a
//! seeded `fraction` of the requests, and an optional `limit` on how many requests
//! it hits. Set them on the builder, from a script, live through the
//! [`SimHandle`], or over HTTP on the sim's own port:
//!
//! ```text
//! GET  /_sim/info                      name, flavor, clock, faults, counters
//! GET  /_sim/faults                    the fault list (JSON)
//! POST /_sim/faults  (or PUT)          replace it: a spec or a list of specs
//! POST /_sim/faults/add                append a spec or a list
//! DELETE /_sim/faults                  clear
//! GET  /_sim/counters                  the Counters as JSON
//! DELETE /_sim/counters                reset them (also POST /_sim/counters/reset)
//! PUT  /_sim/quota                     {"requests_per_minute": 60, "tokens_per_minute": 40000}
//! ```
//!
//! ```json
//! [{"kind": "status", "status": 529, "from": "2s", "until": "10s"},
//!  {"kind": "slowdown", "factor": 8, "fraction": 0.25},
//!  {"kind": "rate_limit", "retry_after": 5, "retry_after_format": "http_date", "limit": 3}]
//! ```
//!
//! Admin requests are never counted nor faulted (but while the listener is closed
//! by [`Fault::Refuse`] they cannot connect either).
//!
//! # Quotas
//!
//! [`Quota`] enforces requests and tokens per minute with token buckets: over it a
//! request gets the provider's 429 with `Retry-After`, and the rate-limit headers
//! of every response report the buckets truthfully. The default quota is so large
//! that it never triggers.
//!
//! # Scripts and the binary
//!
//! A [`Script`] (TOML or JSON) defines several named providers with their flavor,
//! port, latency, quota and fault timeline; `tower-failover-sim --script FILE`
//! starts them and prints their addresses (`--help` shows the format with a full
//! example). Here is that example:
//!
//! ```toml
#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc = include_str!("example_script.toml")]
//! ```
//!
//! # TLS
//!
//! With the `tls` feature (on by default), [`tls::self_signed`] generates a CA and
//! a certificate for `localhost` / `127.0.0.1` / `::1`, and
//! [`SimBuilder::tls`] serves HTTPS with it; clients trust the CA's PEM or DER.
//!
//! # Tests with paused time
//!
//! Fault windows, the quota buckets and the latency model follow `tokio::time`, so
//! under `#[tokio::test(start_paused = true)]` the sim's clock is the paused clock.
//! Real sockets are still used, though: prefer real time (with short latencies and
//! windows) for tests that wait on the network.
//!
//! # Features
//!
//! * `tls` (default): HTTPS and the certificate helper (rustls, ring, rcgen).
//! * `cli` (default): the `tower-failover-sim` binary (clap).

mod admin;
mod body;
mod counters;
pub mod duration;
mod error;
mod fault;
mod quota;
mod received;
mod script;
mod server;
mod service;
mod sim;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
mod wire;

pub use body::SimBody;
pub use counters::Counters;
pub use error::SimError;
pub use fault::{
    ABSURD_HEADER_NAMES, ABSURD_HEADER_VALUES, AbsurdHeaders, Billing, CutPoint, Fault, FaultKind,
    FaultSpec, RetryAfter,
};
pub use quota::Quota;
pub use received::Received;
pub use script::{ProviderScript, Script};
pub use sim::{Flavor, Sim, SimBuilder, SimHandle};
