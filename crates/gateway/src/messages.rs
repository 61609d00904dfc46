//! `POST /v1/messages`: Anthropic's Messages API, served by the same stack as
//! chat completions, so any provider behind it can answer.
//!
//! The request is translated to the stack's OpenAI shape
//! ([`request_from_anthropic`]), sent through the chat stack (failover, circuits,
//! ramps, quotas and the streaming commit point as for `/v1/chat/completions`),
//! and the answer translated back: a Message as JSON, or Anthropic's event
//! sequence for `"stream": true` ([`MessagesStream`]). Errors are Anthropic's
//! `{"type":"error","error":{"type","message"}}` with the statuses its SDKs
//! expect; with every provider down that is `529 overloaded_error` with
//! `retry-after`. The caller's `x-api-key` / `authorization` and `anthropic-*`
//! headers are the caller's credentials for the gateway: never sent upstream
//! (only what [`crate::upstream`] allows is).

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tower::ServiceExt;
use tower_failover::provider::UsageHandle;
use tower_failover::provider::translate::messages::{
    MessagesStream, error_body, error_for_status, error_message, request_from_anthropic,
    response_to_anthropic,
};
use tower_failover::replay::ReplayBody;
use tower_failover::sse::{SseLimits, SseParser};
use tower_failover::tokens::{BYTES_PER_TOKEN, estimate_tokens};
use tower_failover::{Failover, error_response};

use super::{AppState, SERVED_BY, auth, jobs};

/// The most an answer body the gateway buffers to translate (a non-streamed
/// answer; streams are translated chunk by chunk).
const MAX_ANSWER_BYTES: usize = 16 << 20;
/// The largest SSE event of an upstream stream.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// An Anthropic-shaped error answer.
fn anthropic_error(status: u16, kind: &str, message: &str) -> Response {
    let mut res = Response::new(Body::from(error_body(kind, message)));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Copies what the caller should see of the stack's answer headers.
fn pass_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in [
        SERVED_BY,
        "request-id",
        "x-request-id",
        "retry-after",
        tower_failover::REJECTED_HEADER,
    ] {
        if let Some(v) = from.get(name) {
            to.insert(HeaderName::from_static(name), v.clone());
        }
    }
}

/// An error answer of the stack (OpenAI-shaped) in Anthropic's shape.
async fn translate_error(res: http::Response<Body>) -> Response {
    let (parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ANSWER_BYTES)
        .await
        .unwrap_or_default();
    let (status, kind) = error_for_status(parts.status.as_u16());
    let mut out = anthropic_error(status, kind, &error_message(&bytes));
    pass_headers(&parts.headers, out.headers_mut());
    // What the answer spent, for the caller's budget (crate::auth).
    if let Some(usage) = parts.extensions.get::<UsageHandle>() {
        out.extensions_mut().insert(usage.clone());
    }
    out
}

/// A request body of at most `limit` bytes, or Anthropic's `413` for a larger one.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        anthropic_error(
            413,
            "request_too_large",
            &format!("the request body is larger than {limit} bytes"),
        )
    })
}

pub(super) async fn messages(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Deferral, when the store is on and the caller asked ([`jobs`]).
    let deferral = match &state.jobs {
        Some(jobs) => match jobs::asked(&parts.headers) {
            Ok(ask) => ask.map(|ask| (jobs, ask)),
            Err(message) => return anthropic_error(400, "invalid_request_error", &message),
        },
        None => None,
    };
    let bytes = match read_body(body, state.max_request_bytes).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let inbound = match request_from_anthropic(&bytes) {
        Ok(i) => i,
        Err(e) => return anthropic_error(400, "invalid_request_error", &e.to_string()),
    };
    // What a stream's `message_start` tells of the prompt's size until the
    // provider's own count comes with its last chunk (an answer in one piece
    // carries the provider's count: nothing to estimate).
    let input_estimate = if inbound.stream {
        estimate_prompt_tokens(&bytes)
    } else {
        0
    };
    let mut upstream = http::Request::builder()
        .method(http::Method::POST)
        .uri("/v1/chat/completions");
    if let Some(h) = upstream.headers_mut() {
        // The allowlist of `[upstream]`: never the caller's credentials or
        // Anthropic's protocol headers (the provider client sets its own).
        *h = state.forwarding.headers(&parts.headers);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Some((jobs, ask)) = deferral {
        if !inbound.stream {
            let Ok(req) = upstream.body(ReplayBody::from(inbound.body)) else {
                return anthropic_error(500, "api_error", "could not build the upstream request");
            };
            let door = jobs::Door::Messages {
                model: inbound.model.clone(),
            };
            let charge = parts.extensions.get::<auth::Charge>().cloned();
            let mount = jobs::mount(&parts);
            return match jobs::attempt(state.failover.clone(), jobs, req, door, ask, charge, &mount)
                .await
            {
                jobs::Attempt::Answer(res) => {
                    reply(res.map(Body::new), inbound.model, input_estimate).await
                }
                jobs::Attempt::Failed(err) => failed(&err).await,
                jobs::Attempt::Accepted(res) => res,
            };
        }
        if ask == jobs::Ask::Demand {
            return anthropic_error(400, "invalid_request_error", jobs::STREAM_REFUSED);
        }
        // A preference declined: a stream is served now.
    }
    let Ok(upstream) = upstream.body(Body::from(inbound.body)) else {
        return anthropic_error(500, "api_error", "could not build the upstream request");
    };
    answer(
        state.failover.clone(),
        upstream,
        inbound.model,
        input_estimate,
    )
    .await
}

/// `POST /v1/messages/count_tokens`, which Claude Code calls at start-up and for
/// `/context`: `{"input_tokens": N}` for a request as `/v1/messages` takes it (a
/// request it would refuse is refused here with the same `400`). The count is an
/// estimate ([`estimate_prompt_tokens`]): the providers behind the gateway are
/// not asked, and may not count tokens the same way.
pub(super) async fn count_tokens(State(state): State<AppState>, req: Request) -> Response {
    let bytes = match read_body(req.into_body(), state.max_request_bytes).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    if let Err(e) = request_from_anthropic(&bytes) {
        return anthropic_error(400, "invalid_request_error", &e.to_string());
    }
    let body = serde_json::json!({ "input_tokens": estimate_prompt_tokens(&bytes) });
    let mut out = Response::new(Body::from(body.to_string()));
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

/// Tokens in an Anthropic request, estimated without parsing it: about one per
/// four bytes ([`BYTES_PER_TOKEN`]), except that a long base64 `data` string (an
/// image or a document) counts as [`ATTACHMENT_TOKENS`], not as its length (a
/// 1 MB screenshot is about 1,600 tokens to Claude, not 250,000).
pub(super) fn estimate_prompt_tokens(body: &[u8]) -> u64 {
    /// About what Anthropic charges for an image at its largest size.
    const ATTACHMENT_TOKENS: u64 = 1_600;
    /// A `data` string shorter than this is counted as text.
    const ATTACHMENT_BYTES: usize = 1_024;
    static DATA: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"data\""));
    let mut text = body.len();
    let mut attachments = 0u64;
    let mut at = 0;
    while let Some(found) = DATA.find(&body[at..]) {
        let mut i = at + found + DATA.needle().len();
        while body
            .get(i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b':'))
        {
            i += 1;
        }
        at = i;
        if body.get(i) != Some(&b'"') {
            continue;
        }
        // Base64 holds no quote and no escape: the string ends at the next quote.
        let Some(len) = memchr::memchr(b'"', &body[i + 1..]) else {
            break;
        };
        if len >= ATTACHMENT_BYTES {
            text -= len;
            attachments += 1;
        }
        at = i + 1 + len;
    }
    estimate_tokens(text as u64, BYTES_PER_TOKEN) + attachments * ATTACHMENT_TOKENS
}

async fn answer(
    failover: Failover,
    req: http::Request<Body>,
    model: String,
    input_estimate: u64,
) -> Response {
    match failover.oneshot(req).await {
        Ok(res) => reply(res.map(Body::new), model, input_estimate).await,
        Err(err) => failed(&err).await,
    }
}

/// The stack's error in Anthropic's shape.
async fn failed(err: &tower::BoxError) -> Response {
    tracing::warn!(error = %err, "no provider could answer");
    translate_error(error_response(&**err).into_response()).await
}

/// The stack's answer in Anthropic's shape: a Message, an event stream (whose
/// `message_start` tells `input_estimate` prompt tokens), or an error.
pub(super) async fn reply(
    res: http::Response<Body>,
    model: String,
    input_estimate: u64,
) -> Response {
    if !res.status().is_success() {
        return translate_error(res).await;
    }
    let streamed = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let (parts, body) = res.into_parts();
    let mut out = if streamed {
        let mut out = Response::new(Body::from_stream(translate_stream(
            body,
            model,
            input_estimate,
        )));
        out.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        out.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        out
    } else {
        let bytes = match axum::body::to_bytes(body, MAX_ANSWER_BYTES).await {
            Ok(b) => b,
            Err(e) => return anthropic_error(502, "api_error", &format!("the answer broke: {e}")),
        };
        match response_to_anthropic(&bytes, &model) {
            Ok(json) => {
                let mut out = Response::new(Body::from(json));
                out.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                out
            }
            Err(e) => return anthropic_error(502, "api_error", &e.to_string()),
        }
    };
    pass_headers(&parts.headers, out.headers_mut());
    // What the answer spent, for the caller's budget (crate::auth).
    if let Some(usage) = parts.extensions.get::<UsageHandle>() {
        out.extensions_mut().insert(usage.clone());
    }
    out
}

/// The stack's OpenAI SSE body as Anthropic events, chunk by chunk. A body
/// that breaks (the stack's typed truncation error included) ends with an
/// `error` event; one that ends without `[DONE]` gets its `message_stop` only
/// if the provider said why it stopped.
fn translate_stream(
    body: Body,
    model: String,
    input_estimate: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    struct St {
        upstream: axum::body::BodyDataStream,
        parser: SseParser,
        tr: MessagesStream,
    }
    let st = St {
        upstream: body.into_data_stream(),
        parser: SseParser::with_limits(SseLimits::both(MAX_EVENT_BYTES)),
        tr: MessagesStream::new(model).with_input_estimate(input_estimate),
    };
    futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.tr.is_done() {
                return None;
            }
            let mut out = Vec::new();
            match st.upstream.next().await {
                Some(Ok(chunk)) => {
                    let St { parser, tr, .. } = &mut st;
                    let fed = parser.feed(&chunk, &mut |ev| {
                        if ev.data == b"[DONE]" {
                            tr.finish(&mut out);
                            return Ok(());
                        }
                        tr.push(ev.data, &mut out).map_err(|e| {
                            tower_failover::error::Invalid::new(
                                tower_failover::RejectKind::Shape,
                                e.to_string(),
                            )
                        })
                    });
                    if let Err(e) = fed {
                        st.tr.fail("api_error", &e.to_string(), &mut out);
                    } else if out.is_empty() {
                        // Nothing for the caller in it (thinking): a sign of life.
                        st.tr.ping(&mut out);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the answer broke after it started");
                    st.tr.fail("api_error", &e.to_string(), &mut out);
                }
                None => {
                    // A last event that lacked its blank line.
                    let St { parser, tr, .. } = &mut st;
                    let _ = parser.finish(&mut |ev| {
                        if ev.data == b"[DONE]" {
                            tr.finish(&mut out);
                            return Ok::<(), tower_failover::error::Invalid>(());
                        }
                        let _ = tr.push(ev.data, &mut out);
                        Ok(())
                    });
                    // Both are no-ops once the message has ended.
                    if st.tr.stopped() {
                        st.tr.finish(&mut out);
                    } else {
                        st.tr.fail(
                            "api_error",
                            "the answer ended before it was complete",
                            &mut out,
                        );
                    }
                }
            }
            if !out.is_empty() {
                return Some((Ok(Bytes::from(out)), st));
            }
        }
    })
}
