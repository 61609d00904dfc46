//! The [`Validator`] trait, its [`Verdict`], and composing validators.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tower_failover_core::RejectKind;
use tower_failover_core::error::Invalid;
use tower_failover_core::json::Outline;
use tower_failover_core::replay::ReplayBody;

use crate::output::{Facts, LazyJson, Output, Wire};

/// What a [`Validator`] thinks of an [`Output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing wrong (so far, for a partial stream).
    Pass,
    /// Cannot tell yet: hold the stream back a little longer before committing (for
    /// example, the content so far could still turn into a refusal phrase). Streams
    /// commit anyway once the hold-back limit is reached; for a complete output, a
    /// `Wait` counts as [`Pass`](Verdict::Pass).
    Wait,
    /// The output is unusable: the attempt fails with this error, and a router may
    /// try another provider.
    Reject(Invalid),
}

impl Verdict {
    /// A rejection of `kind` with a short detail (never the whole body).
    pub fn reject(kind: RejectKind, detail: impl Into<String>) -> Self {
        Verdict::Reject(Invalid::new(kind, detail))
    }

    /// Whether this is [`Pass`](Verdict::Pass).
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }

    /// Whether this is a [`Reject`](Verdict::Reject).
    pub fn is_reject(&self) -> bool {
        matches!(self, Verdict::Reject(_))
    }
}

/// A check of one response's output.
///
/// A validator is called on a buffered body once, and on a stream after every chunk
/// that completed an event until the commit point, then once more when the stream
/// has ended (a late verdict, which can only be reported). It must be cheap and must
/// not panic; [`Output`] gives it a normalized view that is the same for both wire
/// formats and for buffered and streamed bodies.
///
/// Write your own with [`from_fn`] or by implementing the trait; compose several with
/// [`Validators`].
pub trait Validator: Send + Sync + 'static {
    /// Judges `output`.
    fn check(&self, output: &Output<'_>) -> Verdict;
}

impl<V: Validator + ?Sized> Validator for Arc<V> {
    fn check(&self, output: &Output<'_>) -> Verdict {
        (**self).check(output)
    }
}

impl<V: Validator + ?Sized> Validator for Box<V> {
    fn check(&self, output: &Output<'_>) -> Verdict {
        (**self).check(output)
    }
}

/// A validator made from a closure; see [`from_fn`].
#[derive(Clone)]
pub struct FnValidator<F> {
    f: F,
}

impl<F> fmt::Debug for FnValidator<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnValidator").finish_non_exhaustive()
    }
}

impl<F> Validator for FnValidator<F>
where
    F: Fn(&Output<'_>) -> Verdict + Send + Sync + 'static,
{
    fn check(&self, output: &Output<'_>) -> Verdict {
        (self.f)(output)
    }
}

/// Makes a validator from any closure.
///
/// ```
/// use tower_failover_core::RejectKind;
/// use tower_failover_validate::{Verdict, from_fn, check_body};
///
/// // Answers must mention a citation.
/// let cites = from_fn(|out| {
///     if !out.is_complete() || out.content().contains("[1]") {
///         Verdict::Pass
///     } else {
///         Verdict::reject(RejectKind::Custom, "no citation")
///     }
/// });
/// let body = br#"{"choices":[{"message":{"content":"Paris [1]"}}]}"#;
/// assert!(check_body(&cites, body).is_pass());
/// ```
pub fn from_fn<F>(f: F) -> FnValidator<F>
where
    F: Fn(&Output<'_>) -> Verdict + Send + Sync + 'static,
{
    FnValidator { f }
}

/// Several validators applied in order: the first rejection wins; otherwise the
/// result is [`Wait`](Verdict::Wait) if any of them waits, else
/// [`Pass`](Verdict::Pass).
///
/// ```
/// use tower_failover_validate::{Validators, checks};
///
/// let v = Validators::new()
///     .with(checks::ValidJson)
///     .with(checks::ErrorObject)
///     .with(checks::Shape);
/// assert_eq!(v.len(), 3);
/// ```
#[derive(Clone, Default)]
pub struct Validators {
    list: Vec<Arc<dyn Validator>>,
}

impl fmt::Debug for Validators {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validators")
            .field("len", &self.list.len())
            .finish()
    }
}

impl Validators {
    /// No validators: everything passes.
    pub fn new() -> Self {
        Validators::default()
    }

    /// The default set for LLM APIs, in this order: [`ValidJson`](crate::checks::ValidJson),
    /// [`ErrorObject`](crate::checks::ErrorObject), [`Shape`](crate::checks::Shape)
    /// and [`Refusal`](crate::checks::Refusal) (with its default phrases).
    ///
    /// [`FinishReason`](crate::checks::FinishReason) is opt-in (add it with
    /// [`with`](Self::with)): an answer cut at the caller's `max_tokens` is correct.
    pub fn llm() -> Self {
        use crate::checks::*;
        Validators::new()
            .with(ValidJson)
            .with(ErrorObject)
            .with(Shape)
            .with(Refusal::default())
    }

    /// Adds a validator at the end.
    pub fn with(mut self, v: impl Validator) -> Self {
        self.list.push(Arc::new(v));
        self
    }

    /// Adds a validator at the end, in place.
    pub fn push(&mut self, v: impl Validator) {
        self.list.push(Arc::new(v));
    }

    /// How many validators there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl Validator for Validators {
    fn check(&self, output: &Output<'_>) -> Verdict {
        let mut wait = false;
        for v in &self.list {
            match v.check(output) {
                Verdict::Pass => {}
                Verdict::Wait => wait = true,
                reject @ Verdict::Reject(_) => return reject,
            }
        }
        if wait { Verdict::Wait } else { Verdict::Pass }
    }
}

/// Runs `validator` on a buffered JSON body (status 200, no headers, wire format
/// detected), as [`ValidateLayer`](crate::ValidateLayer) would: handy to unit-test a
/// validator of your own.
///
/// ```
/// use tower_failover_validate::{Validators, Verdict, check_body};
///
/// let verdict = check_body(&Validators::llm(), br#"{"choices":[{"message":{"content":""}}]}"#);
/// assert!(matches!(verdict, Verdict::Reject(e) if e.kind() == tower_failover_core::RejectKind::Empty));
/// ```
pub fn check_body<V: Validator + ?Sized>(validator: &V, body: &[u8]) -> Verdict {
    let body = Bytes::copy_from_slice(body);
    let (parts, ()) = http::Response::new(()).into_parts();
    check_buffered(validator, &parts, &body, None, usize::MAX, None)
}

/// Runs `validator` on a complete buffered body; `Wait` counts as `Pass`. The
/// body is read through the [`Outline`] the provider left in `parts` when it was
/// made from these very bytes.
pub(crate) fn check_buffered<V: Validator + ?Sized>(
    validator: &V,
    parts: &http::response::Parts,
    body: &Bytes,
    wire: Option<Wire>,
    cap: usize,
    request: Option<&ReplayBody>,
) -> Verdict {
    let outline = Outline::of(body, &parts.extensions);
    let (facts, json) = Facts::from_body(body, wire, cap, outline);
    let json = LazyJson::new(body, json, facts.json_error.is_some());
    let out = Output {
        status: parts.status,
        headers: &parts.headers,
        body: Some(body),
        json: Some(&json),
        facts: &facts,
        stream: false,
        request,
    };
    match validator.check(&out) {
        Verdict::Wait => Verdict::Pass,
        v => v,
    }
}
