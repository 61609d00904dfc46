//! The middleware: host, key, content type, model and budget checks, and the
//! counting of what each answer spent.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use serde::Deserialize;
use tower_failover::provider::{Usage, UsageHandle};

use super::{Access, Caller, Key, keys};

/// The routes that show or change the stack's state.
fn is_admin(path: &str) -> bool {
    path == "/health" || path.starts_with("/health/") || path == crate::telemetry::METRICS
}

/// A refusal, OpenAI-shaped, or Anthropic-shaped on `/v1/messages`.
fn refuse(path: &str, status: StatusCode, code: &str, message: &str) -> Response {
    let mut res = crate::server::error_answer(path, status, code, message);
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    res
}

/// A refusal of a valid key's request, named for its caller: the answer is counted
/// and logged under the key's name (`caller="search"`), not as `anonymous`.
fn named(mut res: Response, caller: &Caller) -> Response {
    res.extensions_mut().insert(caller.clone());
    res
}

/// The request's host (the `Host` header, or the HTTP/2 authority), without its
/// port, lowercase.
fn host(req: &Request) -> Option<String> {
    let raw = match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok()?.to_owned(),
        None => req.uri().authority()?.as_str().to_owned(),
    };
    let authority: http::uri::Authority = raw.parse().ok()?;
    Some(authority.host().to_ascii_lowercase())
}

/// Whether the request's content type is JSON (`application/json`, any
/// parameters), and it has only one.
fn is_json(headers: &HeaderMap) -> bool {
    let mut all = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return false;
    };
    let essence = v
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[derive(Deserialize)]
struct ModelOnly {
    #[serde(default)]
    model: Option<String>,
}

/// The middleware around the router: see the [module documentation](super).
pub(crate) async fn check(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    if !access.hosts.is_empty() {
        let allowed = host(&req).is_some_and(|h| access.hosts.contains(&h));
        if !allowed {
            return refuse(
                req.uri().path(),
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                "this gateway does not answer to that host name",
            );
        }
    }
    let key = if access.is_enabled() {
        let Some(presented) = keys::presented(req.headers()) else {
            return refuse(
                req.uri().path(),
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                "no API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`",
            );
        };
        let Some(i) = keys::find(&access.digests, presented) else {
            return refuse(
                req.uri().path(),
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "the API key is not valid for this gateway",
            );
        };
        let key = &access.keys[i];
        tracing::Span::current().record("caller", key.caller.name());
        if is_admin(req.uri().path()) && !key.admin {
            let res = refuse(
                req.uri().path(),
                StatusCode::FORBIDDEN,
                "admin_key_required",
                "this route needs an admin key",
            );
            return named(res, &key.caller);
        }
        Some(i)
    } else {
        None
    };
    let writes = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    if writes && !is_json(req.headers()) {
        let res = refuse(
            req.uri().path(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `content-type: application/json`",
        );
        return match key {
            Some(i) => named(res, &access.keys[i].caller),
            None => res,
        };
    }
    let Some(i) = key else {
        return next.run(req).await;
    };
    let key = &access.keys[i];
    let spends = writes && req.uri().path().starts_with("/v1/");
    let mut req = req;
    if spends && key.models.is_some() {
        // Owned for the refusal: `allowed_model` takes the request.
        let path = req.uri().path().to_owned();
        req = match allowed_model(&access, key, req, &path).await {
            Ok(req) => req,
            Err(res) => return named(*res, &key.caller),
        };
    }
    if spends && let Some(wait) = exhausted(&access, key) {
        let mut res = refuse(
            req.uri().path(),
            StatusCode::TOO_MANY_REQUESTS,
            "budget_exceeded",
            &format!(
                "the budget of key {:?} is spent until its period ends",
                key.caller.name()
            ),
        );
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return named(res, &key.caller);
    }
    req.extensions_mut().insert(key.caller.clone());
    if !spends && let Some(models) = &key.models {
        // For `GET /v1/models`, which lists them; a completion's model was checked
        // above, so it carries nothing more (no insert on the hot path).
        req.extensions_mut().insert(models.clone());
    }
    if key.tokens.is_some() || key.cost_micros.is_some() {
        // For a request kept as a deferred job: it spends after this answer.
        req.extensions_mut().insert(Charge {
            access: access.clone(),
            key: i,
        });
    }
    let mut res = next.run(req).await;
    res.extensions_mut().insert(key.caller.clone());
    if key.tokens.is_none() && key.cost_micros.is_none() {
        return res;
    }
    let charge = Charge { access, key: i };
    let handle = res.extensions().get::<UsageHandle>().cloned();
    match handle.as_ref().and_then(UsageHandle::get) {
        Some(usage) => charge.usage(usage),
        None => match handle {
            // Known when the stream ends.
            Some(handle) => {
                return res.map(|body| {
                    Body::new(Counted {
                        inner: Some(body),
                        handle,
                        charge: Some(charge),
                    })
                });
            }
            None => {
                if let Some(usage) = res.extensions().get::<Usage>() {
                    charge.usage(*usage);
                }
            }
        },
    }
    res
}

/// The request's model (the `x-failover-model` header, which the stack reads
/// first; then the body's; then the default model) must be one of the key's.
async fn allowed_model(
    access: &Access,
    key: &Key,
    req: Request,
    path: &str,
) -> Result<Request, Box<Response>> {
    let allows = |m: &str| key.models.as_ref().is_some_and(|a| a.allows(m));
    let not_allowed = |model: &str| {
        Box::new(refuse(
            path,
            StatusCode::FORBIDDEN,
            "model_not_allowed",
            &format!(
                "key {:?} may not use model {:?}",
                key.caller.name(),
                quoted(model)
            ),
        ))
    };
    let header = req
        .headers()
        .get("x-failover-model")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(m) = &header
        && !allows(m)
    {
        return Err(not_allowed(m));
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, access.max_body).await else {
        return Err(Box::new(refuse(
            path,
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &format!("the request body is larger than {} bytes", access.max_body),
        )));
    };
    let Ok(body) = serde_json::from_slice::<ModelOnly>(&bytes) else {
        return Err(Box::new(refuse(
            path,
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not a JSON object (with at most one \"model\")",
        )));
    };
    let model = body
        .model
        .or(header)
        .or_else(|| access.default_model.clone());
    match model {
        Some(m) if allows(&m) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Some(m) => Err(not_allowed(&m)),
        None => Err(Box::new(refuse(
            path,
            StatusCode::FORBIDDEN,
            "model_not_allowed",
            "this key must name one of its models (\"model\")",
        ))),
    }
}

/// At most 64 characters of a caller's model name, for an error message.
fn quoted(model: &str) -> &str {
    let mut end = model.len().min(64);
    while !model.is_char_boundary(end) {
        end -= 1;
    }
    &model[..end]
}

/// The time until the key's spent budget renews, if it is spent.
fn exhausted(access: &Access, key: &Key) -> Option<Duration> {
    [key.tokens, key.cost_micros]
        .into_iter()
        .flatten()
        .filter_map(|(limit, i)| {
            let (spent, left) = access.meter.spent(i);
            (spent >= limit).then_some(left)
        })
        .max()
}

/// Counts an answer's usage against its key's budget.
/// What an answer spent goes to the caller key's budget. Also in the request's
/// extensions, so that a deferred job ([`crate::jobs`]) charges its caller when
/// it runs.
#[derive(Clone)]
pub(crate) struct Charge {
    access: Arc<Access>,
    key: usize,
}

impl Charge {
    pub(crate) fn usage(&self, usage: Usage) {
        let Some(key) = self.access.keys.get(self.key) else {
            return;
        };
        if let Some((_, i)) = key.tokens {
            self.access.meter.add(i, usage.total_tokens());
        }
        if let (Some((_, i)), Some(cost)) = (key.cost_micros, usage.cost) {
            self.access.meter.add(i, cost.micros());
        }
    }
}

/// A streamed answer's body, which counts the usage once the stream has ended
/// (or, dropped early, with what the provider had reported by then).
struct Counted {
    inner: Option<Body>,
    handle: UsageHandle,
    charge: Option<Charge>,
}

impl Counted {
    fn settle(&mut self) {
        if let Some(usage) = self.handle.get()
            && let Some(charge) = self.charge.take()
        {
            charge.usage(usage);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // The provider's body records what it counted when it is dropped.
        drop(self.inner.take());
        self.settle();
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.settle();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}
