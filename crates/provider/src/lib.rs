//! Per-provider hyper client services for tower-failover: the real clients at the
//! bottom of every stack.
//!
//! Each adapter is a [`tower_service::Service`] over `http::Request<B>` (any body;
//! the stacks use [`ReplayBody`](tower_failover_core::replay::ReplayBody)) that
//! speaks **OpenAI chat completions** to its caller, whatever the provider speaks:
//!
//! - [`OpenAiCompatible`]: OpenAI, Groq, DeepSeek, Mistral, Together, OpenRouter,
//!   vLLM, Ollama and every other OpenAI-compatible server, told apart by base URL
//!   alone. The caller's JSON is forwarded byte for byte except the model name
//!   (mapped) and, for streams, `stream_options.include_usage` (so the last chunk
//!   carries usage).
//! - [`Anthropic`]: `POST /v1/chat/completions` is translated into Anthropic's
//!   `POST /v1/messages` and the answer back, JSON and SSE (event by event, never
//!   buffering the stream), so a caller that fails over from an OpenAI model to a
//!   Claude model gets the same shape either way ([`translate::anthropic`]).
//! - [`Provider`]: either, chosen by a [`ProviderConfig`] loaded from TOML or JSON.
//!
//! Underneath is one pooled `hyper-util` client per provider: HTTP/1.1 and HTTP/2
//! (ALPN, or prior knowledge), rustls with the ring provider and webpki roots, the
//! system roots or both, plus an optional custom CA ([`TlsConfig`]).
//!
//! # Configuring OpenAI, Anthropic and a local vLLM
//!
//! ```
//! use std::time::Duration;
//! use tower_failover_provider::{Anthropic, OpenAiCompatible, Price};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let openai = OpenAiCompatible::builder()
//!     .api_key("sk-...") // or .api_key_env("OPENAI_API_KEY")
//!     .model("smart", "gpt-4o")
//!     .price("gpt-4o", Price::per_million(2.50, 10.00))
//!     .build()?;
//!
//! let claude = Anthropic::builder()
//!     .api_key("sk-ant-...") // or .api_key_env("ANTHROPIC_API_KEY")
//!     .model("smart", "claude-sonnet-4-5")
//!     .price("claude-sonnet-4-5", Price::per_million(3.00, 15.00))
//!     .first_byte_timeout(Duration::from_secs(20))
//!     .build()?;
//!
//! let vllm = OpenAiCompatible::builder()
//!     .name("vllm")
//!     .base_url("http://localhost:8000/v1") // no key needed
//!     .model("*", "meta-llama/Llama-3.1-8B-Instruct")
//!     .build()?;
//! # let _ = (openai, claude, vllm);
//! # Ok(()) }
//! ```
//!
//! Base URLs are written as OpenAI's SDKs take them, version path included:
//!
//! | provider | base URL |
//! | --- | --- |
//! | OpenAI | `https://api.openai.com/v1` (the default) |
//! | Groq | `https://api.groq.com/openai/v1` |
//! | DeepSeek | `https://api.deepseek.com/v1` |
//! | Mistral | `https://api.mistral.ai/v1` |
//! | Together | `https://api.together.xyz/v1` |
//! | OpenRouter | `https://openrouter.ai/api/v1` |
//! | vLLM | `http://localhost:8000/v1` |
//! | Ollama | `http://localhost:11434/v1` |
//! | Anthropic | `https://api.anthropic.com` (the default) |
//!
//! The caller's path replaces the `/v1` of its own: `POST /v1/chat/completions`
//! goes to `<base URL>/chat/completions`.
//!
//! # In a stack
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_failover_core::replay::ReplayLayer;
//! use tower_failover_provider::{Anthropic, Price, Usage};
//!
//! # async fn fake_anthropic() -> String {
//! #     use hyper_util::rt::TokioIo;
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! #     let addr = listener.local_addr().unwrap();
//! #     tokio::spawn(async move {
//! #         let (stream, _) = listener.accept().await.unwrap();
//! #         let svc = hyper::service::service_fn(|_req| async {
//! #             let body = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"output_tokens":5}}"#;
//! #             Ok::<_, std::convert::Infallible>(http::Response::builder()
//! #                 .header("content-type", "application/json")
//! #                 .body(Full::new(Bytes::from(body))).unwrap())
//! #         });
//! #         let _ = hyper::server::conn::http1::Builder::new()
//! #             .serve_connection(TokioIo::new(stream), svc).await;
//! #     });
//! #     format!("http://{addr}")
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! # let base_url = fake_anthropic().await;
//! let claude = Anthropic::builder()
//!     .base_url(base_url) // a local stand-in for https://api.anthropic.com
//!     .api_key("sk-ant-...")
//!     .model("smart", "claude-haiku-4-5")
//!     .price("claude-haiku-4-5", Price::per_million(1.00, 5.00))
//!     .build()?;
//!
//! // Buffer the body once so failover layers above can replay it.
//! let svc = ServiceBuilder::new()
//!     .layer(ReplayLayer::new(1 << 20))
//!     .service(claude);
//!
//! let req = http::Request::post("/v1/chat/completions").body(Full::new(Bytes::from(
//!     r#"{"model":"smart","messages":[{"role":"user","content":"Hi"}]}"#,
//! )))?;
//! let res = svc.oneshot(req).await?;
//!
//! // Usage and cost ride along as a response extension.
//! let usage = *res.extensions().get::<Usage>().unwrap();
//! assert_eq!((usage.prompt_tokens, usage.completion_tokens), (10, 5));
//! assert_eq!(usage.cost.unwrap().micros(), 35); // 10 × 1.00 + 5 × 5.00 per million
//!
//! // The answer is an OpenAI chat completion.
//! let body = res.into_body().collect().await?.to_bytes();
//! let chat: serde_json::Value = serde_json::from_slice(&body)?;
//! assert_eq!(chat["object"], "chat.completion");
//! assert_eq!(chat["choices"][0]["message"]["content"], "Hello!");
//! assert_eq!(chat["choices"][0]["finish_reason"], "stop");
//! # Ok(()) }
//! ```
//!
//! # What the layers above see
//!
//! Responses keep their status and headers (rate-limit headers included), so
//! [`LlmClassifier`](tower_failover_core::LlmClassifier) classifies them as usual.
//! Error answers are read (up to 64 KiB) and, when they say so, carry an
//! [`ErrorHint`](tower_failover_core::ErrorHint) extension: context window
//! exceeded or content policy (client errors), overloaded (server errors), rejected
//! credentials (`invalid_api_key`, `authentication_error`, …) or billing
//! (`insufficient_quota` even on a 429, Anthropic's "credit balance is too low"
//! 400, 402s). Anthropic's error bodies are rewritten in OpenAI's error shape.
//!
//! An answer that refuses the operator's account (401, 402, 403, or a credentials
//! or billing hint) keeps its status, but its body is replaced by one of ours
//! (`{"error": {"type": "upstream_credentials_error" | "upstream_billing_error", …}}`):
//! the provider's text may quote a fragment of the key, and the key is the
//! operator's, not the caller's. The provider's reason phrase (free text after the
//! status code) is never passed on either.
//!
//! | what happened | error (found with [`find`](tower_failover_core::error::find)) | outcome |
//! | --- | --- | --- |
//! | connection refused, DNS or TLS handshake failure | [`TransportError`](tower_failover_core::error::TransportError) (`Connect`) | `Failure(Connect)` |
//! | connection reset or closed mid-way (also mid-stream) | `TransportError` (`Reset`) | `Failure(Reset)` |
//! | connect, first-byte, total deadline | [`Elapsed`](tower_failover_core::error::Elapsed) (`Connect`, `FirstByte`, `Attempt`) | `Failure(Timeout)` |
//! | the request's [`Deadline`](tower_failover_core::Deadline) extension, when it comes first | `Elapsed` (`Total`) | `Failure(Timeout)` |
//! | malformed JSON or SSE from the provider | [`Invalid`](tower_failover_core::error::Invalid) | `Rejected` |
//! | a stream that ends without `[DONE]` / `message_stop` | [`TruncatedStream`](tower_failover_core::error::TruncatedStream) | `Failure(Reset)` |
//! | Anthropic `overloaded_error` event mid-stream | `TransportError` (`Overloaded`) | `Failure(Overloaded)` |
//! | answer larger than `max_response_bytes` | [`BodyTooLarge`](tower_failover_core::error::BodyTooLarge) | `Failure(Other)` |
//! | the caller's request cannot be translated, or is too large | none: a local `400` / `413` in OpenAI's error shape | `ClientError` |
//! | the request is well formed but uses a feature this provider lacks (`n > 1`, an audio part, a file by id at Anthropic) | none: a local `400` carrying [`ErrorHint::Unsupported`](tower_failover_core::ErrorHint::Unsupported) | `ClientError(Unsupported)`: the routers try another provider |
//!
//! Deadlines ([`Timeouts`]): `connect` covers TCP and TLS together; `first_byte`
//! runs from sending a streamed request to the first body byte, its time to first
//! token (default 60 s: a reasoning model thinks first), and `first_byte_unstreamed` does the same for any other
//! request, whose first byte comes only once the whole answer is generated
//! (default 120 s; [`Timeouts`] explains the choice); `idle` (default 30 s) is the
//! longest silence between two body chunks once bytes flow, so a stream that stalls
//! mid-way ends at it with a typed
//! [`TruncatedStream`](tower_failover_core::error::TruncatedStream) (a `Timeout`
//! for the provider's health) instead of at the caller's whole deadline; `total`
//! runs to the last byte, also mid-stream. A
//! [`Deadline`](tower_failover_core::Deadline) request extension (set by a retry
//! or fallback layer for the whole request) caps all of them.
//!
//! # Usage and cost
//!
//! Every answer's token usage is read: from the JSON body, from the usage chunk at
//! the end of an OpenAI stream, from `message_start` and `message_delta` of an
//! Anthropic stream. With a [`Price`] for the model it becomes a [`Cost`]. JSON
//! answers carry a [`Usage`] extension; every success carries a [`UsageHandle`]
//! that is filled when the stream ends. Given a
//! [`Health`](tower_failover_core::Health) handle ([`Builder::health`]), each
//! response is also recorded with `record_usage`, which is what snapshots total.
//!
//! # Credentials
//!
//! Keys live in a [`Secret`], which prints as `[redacted]`; the auth header is
//! marked sensitive (HTTP/2 never indexes it). The caller's own `authorization`,
//! `x-api-key`, `api-key`, `cookie`, `anthropic-*` and `openai-*` headers are
//! dropped, as are hop-by-hop headers (and those named in `Connection`) and
//! `accept-encoding`; each adapter adds only its own credential, so one provider's
//! key never reaches another. Base URLs with `user:password@` are refused.
//!
//! In axum, these services fail with [`BoxError`](tower_failover_core::BoxError):
//! wrap the stack in `HandleErrorLayer` and answer with
//! [`error_response`](tower_failover_core::error_response).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod builder;
mod client;
mod config;
mod error;
mod future;
mod headers;
mod hint;
mod secret;
mod service;
pub mod translate;
mod usage;

/// Hooks for the fuzz targets (`fuzz/`), behind the internal `fuzzing` feature:
/// not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use crate::translate::openai::{quick_usage, response_usage, serde_usage};

    /// Whether the quick usage reader, wherever it reads `body` at all, finds the
    /// usage serde finds, and the reader the adapter uses answers exactly as serde
    /// does (the same usage, or the same error).
    pub fn usage_reader_agrees(body: &[u8]) -> bool {
        let slow = serde_usage(body).map_err(|e| e.to_string());
        let quick_ok = match quick_usage(body) {
            Ok(quick) => Ok(quick) == slow,
            Err(_) => true,
        };
        quick_ok && response_usage(body).map_err(|e| e.to_string()) == slow
    }
}

pub use body::ResponseBody;
pub use builder::Builder;
pub use config::{
    HttpVersion, MaxTokensField, ModelMap, PoolConfig, ProviderConfig, ProviderKind, RootStore,
    Timeouts, TlsConfig,
};
pub use error::{ConfigError, TranslateError};
pub use future::ResponseFuture;
pub use secret::Secret;
pub use service::{Anthropic, OpenAiCompatible, Provider};
pub use usage::{Cost, Price, Usage, UsageHandle};
