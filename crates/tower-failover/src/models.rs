//! Routing by the requested model: model groups and their fallbacks.
//!
//! Every provider entry answers to its own model name and to its aliases
//! ([`ProviderOptions::models`](tower_failover_balance::ProviderOptions::models)).
//! The entries that answer to one name form that name's **group** (the same model at
//! several providers, or on several keys). A request is routed like this:
//!
//! 1. Its model is read once, from the `x-failover-model` header or else the
//!    buffered JSON body (`"model"`), together with whether it defines tools and an
//!    estimate of its prompt's size (see
//!    [`tower_failover_balance::JsonBodyAttributes`]; the body is parsed once, into
//!    the [`RequestInfo`](tower_failover_core::request::RequestInfo) its buffer
//!    keeps for every layer). What the routers below need is left on the request
//!    as a [`tower_failover_balance::RouteInfo`] extension.
//! 2. A model that no entry answers to fails at once with [`ModelNotFound`] (an HTTP
//!    gateway answers `404 model_not_found`; no provider is called).
//! 3. The group's router (the configured [`Routing`](crate::Routing), over the
//!    group's members only) picks a member and fails over inside the group; members
//!    without tool support (for a request with tools) or with a context window
//!    smaller than the prompt are skipped.
//! 4. When every member of the group failed or is unavailable, the group's declared
//!    fallbacks are tried in order, each as a whole group (not transitively: a
//!    fallback group's own fallbacks are not followed). The error of the last one
//!    lists every attempt made. So does an answer that a bigger or more lenient
//!    model may give: a `400` the provider says is a context window exceeded or a
//!    content-policy refusal (an [`ErrorHint`] on the response) moves on to the
//!    next fallback group, if there is one, and is returned as it is otherwise.
//!
//! Tools and context windows filter candidates under the `balance` and `fallback`
//! routers (and custom routers that read the
//! [`tower_failover_balance::RouteInfo`] extension); the `overflow`
//! router does not filter (a configuration file that sets `tools = false`,
//! `context_window` or `tiers` under it is refused).
//!
//! A request that names no model goes to the [default
//! model](crate::StackBuilder::default_model)'s group when one is set, and otherwise
//! to every provider (one router over all of them, as without model routing).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::BoxError;
use tower_failover_balance::{Attributes, JsonBodyAttributes, RouteInfo};
use tower_failover_core::error::{AllProvidersFailed, Attempt};
use tower_failover_core::metrics;
use tower_failover_core::replay::{ReplayBody, clone_request};
use tower_failover_core::{
    Classify, ClientErrorKind, Deadline, ErrorHint, LlmClassifier, Outcome, RejectKind,
};
use tower_service::Service;

use crate::service::{BoxBody, ProviderService};

/// The longest model name quoted back in a [`ModelNotFound`] error.
const MAX_QUOTED: usize = 256;

/// The request asked for a model that no provider serves.
///
/// An HTTP front end should answer `404` with OpenAI's `model_not_found` error (not
/// a `503`, which clients would retry), as [`error_response`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelNotFound {
    model: String,
}

impl ModelNotFound {
    /// The error for `model` (quoted back truncated to 256 bytes).
    pub fn new(model: &str) -> Self {
        let mut end = model.len().min(MAX_QUOTED);
        while !model.is_char_boundary(end) {
            end -= 1;
        }
        ModelNotFound {
            model: model[..end].to_owned(),
        }
    }

    /// The model asked for.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The error as OpenAI sends it with a `404`:
    /// `{"error": {"message", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}`.
    pub fn openai_body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        })
    }
}

impl fmt::Display for ModelNotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "The model `{}` does not exist or you do not have access to it.",
            self.model
        )
    }
}

impl std::error::Error for ModelNotFound {}

/// The HTTP answer to an error of the stack: [`ModelNotFound`] (anywhere in the
/// error's source chain) as OpenAI's `404 model_not_found`
/// ([`ModelNotFound::openai_body`]), everything else as
/// [`tower_failover_core::error_response`] answers it (`503` with `Retry-After`
/// when every provider is down, `413`, `429`, `504`, …).
///
/// ```
/// use tower_failover::{ModelNotFound, error_response};
///
/// let err: tower::BoxError = ModelNotFound::new("gpt-9").into();
/// let res = error_response(&*err);
/// assert_eq!(res.status(), 404);
/// assert!(res.body().contains("model_not_found"));
/// ```
pub fn error_response(err: &(dyn std::error::Error + 'static)) -> Response<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(nf) = e.downcast_ref::<ModelNotFound>() {
            let mut res = Response::new(nf.openai_body().to_string());
            *res.status_mut() = http::StatusCode::NOT_FOUND;
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            return res;
        }
        cur = e.source();
    }
    tower_failover_core::error_response(err)
}

/// One public model name: its router and the groups to try after it.
struct Group {
    service: ProviderService,
    /// The groups to try, as indices into [`Groups::list`]: this one, then its
    /// fallbacks that are served, in order. Resolved once, when the router is built.
    chain: Box<[usize]>,
}

/// Every group, found by name once a request.
struct Groups {
    by_name: HashMap<String, usize>,
    list: Vec<Group>,
}

/// The router by model: one router per group, one over every provider.
#[derive(Clone)]
pub(crate) struct ModelRouter {
    groups: Arc<Groups>,
    any: ProviderService,
    default_model: Option<Arc<str>>,
    attributes: JsonBodyAttributes,
    /// The routers' `total_timeout`: the time for the whole request, across the
    /// fallback groups too (each group's router would otherwise start its own).
    total_timeout: Option<std::time::Duration>,
}

impl ModelRouter {
    pub(crate) fn new(
        groups: Vec<(String, ProviderService, Vec<String>)>,
        any: ProviderService,
        default_model: Option<String>,
        total_timeout: Option<std::time::Duration>,
    ) -> Self {
        let by_name: HashMap<String, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| (name.clone(), i))
            .collect();
        let list = groups
            .into_iter()
            .enumerate()
            .map(|(i, (_, service, fallbacks))| Group {
                service,
                chain: std::iter::once(i)
                    .chain(fallbacks.iter().filter_map(|f| by_name.get(f).copied()))
                    .collect(),
            })
            .collect();
        ModelRouter {
            groups: Arc::new(Groups { by_name, list }),
            any,
            default_model: default_model.map(Into::into),
            attributes: JsonBodyAttributes::default(),
            total_timeout,
        }
    }
}

impl Service<Request<ReplayBody>> for ModelRouter {
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<BoxBody>, BoxError>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the routers' business, per request (they are always ready).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<ReplayBody>) -> Self::Future {
        // One look at the request (the header, else the buffered body).
        let attrs = self.attributes.attributes(&req);
        let info = RouteInfo {
            // The group is chosen here: the routers below must not filter by model.
            model: None,
            tier: attrs.tier.clone().map(std::borrow::Cow::into_owned),
            tools: attrs.tools,
            prompt_tokens: attrs.prompt_tokens,
        };
        // One lookup by name; the group's chain was resolved when the router was built.
        let found = match attrs.model.as_deref().or(self.default_model.as_deref()) {
            None => None,
            Some(name) => match self.groups.by_name.get(name) {
                Some(&i) => Some(i),
                None => {
                    let err: BoxError = ModelNotFound::new(name).into();
                    return Box::pin(async move { Err(err) });
                }
            },
        };
        drop(attrs);
        req.extensions_mut().insert(info);
        let Some(first) = found else {
            let mut any = self.any.clone();
            return Box::pin(async move {
                std::future::poll_fn(|cx| any.poll_ready(cx)).await?;
                any.call(req).await
            });
        };
        if let Some(total) = self.total_timeout
            && self.groups.list[first].chain.len() > 1
        {
            // Set once, here: every group's copy of the request carries it, so a
            // fallback group gets what is left of the time, not a new allowance.
            Deadline::set_on(&mut req, tokio::time::Instant::now() + total);
        }
        let groups = self.groups.clone();
        Box::pin(async move {
            let chain = &groups.list[first].chain;
            let mut earlier: Vec<Attempt> = Vec::new();
            let mut last: Option<BoxError> = None;
            let mut retry_after: Option<std::time::Duration> = None;
            for (n, &group) in chain.iter().enumerate() {
                let g = &groups.list[group];
                let more = n + 1 < chain.len();
                let mut svc = g.service.clone();
                // The last group gets the request itself: no copy of its headers
                // and extensions (nothing reads `req` after it but the error path).
                let attempt = if more {
                    clone_request(&req)
                } else {
                    std::mem::replace(&mut req, Request::new(ReplayBody::empty()))
                };
                let res = async {
                    std::future::poll_fn(|cx| svc.poll_ready(cx)).await?;
                    svc.call(attempt).await
                }
                .await;
                match res {
                    Ok(res) if more && moves_on(&res) => {
                        // A bigger or more lenient model may take it.
                        continue;
                    }
                    Ok(res) if !earlier.is_empty() && unsupported(&res) => {
                        // The last group cannot serve it, and an earlier one that
                        // might have is down: the caller hears of the failures (a
                        // 503: later may work), as a balancer's group answers.
                        let mut merged =
                            AllProvidersFailed::new(earlier).with_retry_after(retry_after);
                        if let Some(reason) = last
                            .as_ref()
                            .and_then(|e| e.downcast_ref::<AllProvidersFailed>())
                            .and_then(AllProvidersFailed::reason)
                        {
                            merged = merged.with_reason(reason);
                        }
                        return Err(merged.into());
                    }
                    Ok(res) => return Ok(res),
                    Err(e) => match e.downcast_ref::<AllProvidersFailed>() {
                        // The whole group is down: on to the next group.
                        Some(all) => {
                            // The next group's router counts the failover from the
                            // last provider this one sent the request to.
                            let sent_to = all.attempts().iter().rev().find(|a| {
                                !matches!(
                                    a.outcome,
                                    Outcome::Rejected {
                                        kind: RejectKind::Shed
                                    }
                                )
                            });
                            if let Some(a) = sent_to {
                                req.extensions_mut()
                                    .insert(metrics::FailedOver(a.provider.clone()));
                            }
                            earlier.extend(all.attempts().iter().cloned());
                            retry_after = match (retry_after, all.retry_after()) {
                                (Some(a), Some(b)) => Some(a.min(b)),
                                (a, b) => a.or(b),
                            };
                            last = Some(e);
                        }
                        None => return Err(e),
                    },
                }
            }
            let Some(last) = last else {
                return Err("model router: empty group chain".into());
            };
            if let Some(all) = last.downcast_ref::<AllProvidersFailed>()
                && (earlier.len() > all.attempts().len() || retry_after != all.retry_after())
            {
                // Several groups were tried: one error listing every attempt, and
                // the soonest any of the groups expects a provider back (an earlier
                // group whose circuits are open knows it, though it made no
                // attempt the list would show).
                let mut merged = AllProvidersFailed::new(earlier).with_retry_after(retry_after);
                if let Some(reason) = all.reason() {
                    merged = merged.with_reason(reason);
                }
                return Err(merged.into());
            }
            Err(last)
        })
    }
}

/// Whether an answer is a typed client error that another model may not give:
/// a context window exceeded, a content-policy refusal, a feature this group's
/// providers lack.
fn moves_on<B>(res: &Response<B>) -> bool {
    if res.status().is_success() || res.extensions().get::<ErrorHint>().is_none() {
        return false;
    }
    matches!(
        LlmClassifier::default().classify_response(res),
        Outcome::ClientError {
            kind: ClientErrorKind::ContextWindowExceeded
                | ClientErrorKind::ContentPolicy
                | ClientErrorKind::Unsupported
        }
    )
}

/// Whether an answer is the typed refusal of a request this group's providers
/// cannot serve ([`ClientErrorKind::Unsupported`]).
fn unsupported<B>(res: &Response<B>) -> bool {
    res.extensions().get::<ErrorHint>() == Some(&ErrorHint::Unsupported)
}

impl fmt::Debug for ModelRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.groups.by_name.keys().collect();
        names.sort();
        f.debug_struct("ModelRouter")
            .field("groups", &names)
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

/// Checks a default model and declared fallbacks against the names served
/// (`served`): every name must be served, and a group must not fall back to
/// itself. Fields are named as in a configuration file (`default_model`,
/// `models."gpt-4o-mini".fallbacks`).
pub(crate) fn check_names<'a>(
    served: &dyn Fn(&str) -> bool,
    default_model: Option<&str>,
    fallbacks: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> Result<(), crate::ConfigError> {
    use crate::ConfigError;
    if let Some(m) = default_model
        && !served(m)
    {
        return Err(ConfigError::new(
            "default_model",
            format!("no provider serves `{m}` (a provider's `model` or one of its `aliases`)"),
        ));
    }
    for (name, list) in fallbacks {
        let at = format!("models.{name:?}");
        if !served(name) {
            return Err(ConfigError::new(
                at,
                format!(
                    "no provider serves `{name}` (a provider's `model` or one of its `aliases`)"
                ),
            ));
        }
        for f in list {
            if f == name {
                return Err(ConfigError::new(
                    format!("{at}.fallbacks"),
                    format!("`{name}` cannot fall back to itself"),
                ));
            }
            if !served(f) {
                return Err(ConfigError::new(
                    format!("{at}.fallbacks"),
                    format!(
                        "no provider serves `{f}` (a provider's `model` or one of its `aliases`)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_is_openai_shaped_and_bounded() {
        let e = ModelNotFound::new("gpt-9");
        assert_eq!(
            e.openai_body(),
            serde_json::json!({"error": {
                "message": "The model `gpt-9` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }})
        );
        let long = "é".repeat(300);
        assert!(ModelNotFound::new(&long).model().len() <= MAX_QUOTED);
    }
}
