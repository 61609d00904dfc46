//! The type-erased services the [`Stack`](crate::Stack) assembles, and the finished
//! [`Failover`] service.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceExt};
use tower_failover_core::error::{AllProvidersFailed, RejectedAnswer, find};
use tower_failover_core::replay::{self, Replay, ReplayBody};
use tower_failover_core::trace;
use tower_service::Service;
use tracing::instrument::{Instrument, Instrumented};

use crate::handle::Handle;

/// The response body of every service the stack builds: any body of [`Bytes`],
/// type-erased (it is `Send`, not `Sync`).
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// A type-erased per-provider service: takes a buffered, replayable request and
/// answers with a [`BoxBody`]. Provider clients, each layer of a provider's stack and
/// the router are all of this type inside the [`Stack`](crate::Stack), which is what
/// lets you replace any of them with your own.
pub type ProviderService = BoxCloneSyncService<Request<ReplayBody>, Response<BoxBody>, BoxError>;

/// Type-erases any service of the right shape into a [`ProviderService`].
///
/// The service must be `Clone + Send + Sync` (routers clone it per attempt) and its
/// response body must yield [`Bytes`].
///
/// Erasing is done at most once: a service that already is a [`ProviderService`] is
/// returned as it is, and a service whose response body already is a [`BoxBody`]
/// (a router, a retry, a timer: layers that pass the body below them through
/// unchanged) keeps that body instead of boxing it again. Only the layers that wrap
/// the body (the observer, the circuit breaker, the ramp, validation) add a box.
///
/// ```
/// use tower_failover::{ProviderService, boxed};
/// # use tower::service_fn;
/// # use http::{Request, Response};
/// # use tower_failover::replay::ReplayBody;
/// let client = service_fn(|_req: Request<ReplayBody>| async {
///     Ok::<_, tower::BoxError>(Response::new(ReplayBody::from("{}")))
/// });
/// let once: ProviderService = boxed(client);
/// let again: ProviderService = boxed(once); // the same service, not a box in a box
/// # let _ = again;
/// ```
pub fn boxed<S, B>(service: S) -> ProviderService
where
    S: Service<Request<ReplayBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Some(same) = (&service as &dyn Any).downcast_ref::<ProviderService>() {
        // Cloning a boxed service shares nothing and costs one allocation, once,
        // when the stack is built.
        return same.clone();
    }
    if is::<B, BoxBody>() {
        // The body is already erased: only the future and the error are.
        BoxCloneSyncService::new(
            service
                .map_response(keep_body::<B> as fn(Response<B>) -> Response<BoxBody>)
                .map_err(Into::<BoxError>::into as fn(S::Error) -> BoxError),
        )
    } else {
        BoxCloneSyncService::new(
            service
                .map_response(erase_body::<B> as fn(Response<B>) -> Response<BoxBody>)
                .map_err(Into::<BoxError>::into as fn(S::Error) -> BoxError),
        )
    }
}

/// Whether `T` and `U` are the same type.
fn is<T: 'static, U: 'static>() -> bool {
    std::any::TypeId::of::<T>() == std::any::TypeId::of::<U>()
}

/// Takes the value out of `slot` as a `U`, when `T` is `U` (a safe downcast by
/// value, without an allocation).
fn take_as<T: 'static, U: 'static>(slot: &mut Option<T>) -> Option<U> {
    (slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
}

/// The body of a response whose body is a [`BoxBody`] already (see [`boxed`]).
fn keep_body<B>(res: Response<B>) -> Response<BoxBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    res.map(into_box_body)
}

fn erase_body<B>(res: Response<B>) -> Response<BoxBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    res.map(|b| b.map_err(Into::into).boxed_unsync())
}

/// `body` as a [`BoxBody`]: itself when it is one, else boxed once.
pub(crate) fn into_box_body<B>(body: B) -> BoxBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut slot = Some(body);
    match take_as::<B, BoxBody>(&mut slot) {
        Some(same) => same,
        None => match slot {
            Some(b) => b.map_err(Into::into).boxed_unsync(),
            None => BoxBody::default(),
        },
    }
}

/// The assembled stack: a `Service<http::Request<B>>` for any request body `B`,
/// built by [`Stack::build`](crate::StackBuilder::build).
///
/// It buffers the request body once (up to the configured limit; larger bodies fail
/// with [`BodyTooLarge`](tower_failover_core::error::BodyTooLarge)), then hands the
/// replayable request to the deadline, the wait queue and the router. It is always
/// ready (the routers never hold a caller in `poll_ready`) and cheap to clone; every
/// clone shares the same providers and state.
///
/// Errors are the core's small error types, boxed; turn them into HTTP answers with
/// [`error_response`](tower_failover_core::error_response).
#[derive(Clone)]
pub struct Failover {
    inner: Replay<ProviderService>,
    handle: Handle,
}

impl Failover {
    pub(crate) fn new(routed: ProviderService, limit: usize, handle: Handle) -> Self {
        Failover {
            inner: Replay::new(routed, limit),
            handle,
        }
    }

    /// The handle: snapshots, events and manual overrides.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The service below the body buffering (deadline, wait queue, router), which
    /// takes already-buffered [`ReplayBody`] requests.
    pub fn routed(&self) -> &ProviderService {
        self.inner.get_ref()
    }
}

impl fmt::Debug for Failover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failover")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for Failover
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = FailoverFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let span = trace::request_span(req.headers());
        // Entered, not `in_scope`: its closure would move the request in and the
        // future out once more.
        let fut = {
            let _in = span.enter();
            self.inner.call(req)
        };
        FailoverFuture {
            inner: fut.instrument(span),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Failover`]: the stack's answer, inside the request's span
    /// (see [`trace`](tower_failover_core::trace)).
    ///
    /// When every provider that was asked answered and every answer was rejected
    /// for its content (a refusal every model gives, an empty answer, a schema none
    /// meets: [`AllProvidersFailed::answer`]), the caller gets the last of those
    /// answers, `200` with an `x-failover-rejected` header naming why it was
    /// rejected, instead of the `503` an error would become: its SDK would retry
    /// it, each time paid for, and get the same. A streamed answer rejected before
    /// its first bytes is not kept, and stays an error.
    pub struct FailoverFuture<B> {
        #[pin]
        inner: Instrumented<replay::ResponseFuture<ProviderService, B>>,
    }
}

impl<B> fmt::Debug for FailoverFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailoverFuture").finish_non_exhaustive()
    }
}

/// The header naming why the answer of a [`Failover`] was rejected, when it is a
/// rejected answer given for want of a better one (see [`FailoverFuture`]).
pub const REJECTED_HEADER: &str = "x-failover-rejected";

impl<B> Future for FailoverFuture<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<BoxBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match ready!(self.project().inner.poll(cx)) {
            Err(err) => Poll::Ready(
                match find::<AllProvidersFailed>(&*err).and_then(AllProvidersFailed::answer) {
                    Some(answer) => Ok(rejected_answer(answer)),
                    None => Err(err),
                },
            ),
            ok => Poll::Ready(ok),
        }
    }
}

/// A rejected answer given to the caller: `200`, its JSON body, and why.
fn rejected_answer(answer: &RejectedAnswer) -> Response<BoxBody> {
    tracing::info!(
        rejected = answer.kind().as_str(),
        "every provider's answer was rejected for its content: the caller gets the last"
    );
    let body = http_body_util::Full::new(answer.body().clone())
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut res = Response::new(body);
    let headers = res.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::HeaderName::from_static(REJECTED_HEADER),
        http::HeaderValue::from_static(answer.kind().as_str()),
    );
    res
}
