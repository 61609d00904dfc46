//! Replayable requests: buffer the body once, clone the request per attempt.
//!
//! Failover resends the same request to another provider, so the body must still be
//! there after the first attempt consumed it. [`ReplayLayer`] reads the caller's body
//! once into [`Bytes`] (refusing anything past its limit with [`BodyTooLarge`],
//! before allocating for it when the length is declared) and hands the inner service
//! a `Request<ReplayBody>`; [`clone_request`] then makes a cheap copy per attempt
//! (the body is reference counted; headers are copied).
//!
//! ```
//! use bytes::Bytes;
//! use http::Request;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//! use tower_failover_core::replay::{ReplayBody, ReplayLayer, clone_request};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let svc = ServiceBuilder::new()
//!     .layer(ReplayLayer::new(1024 * 1024))
//!     .service(service_fn(|req: Request<ReplayBody>| async move {
//!         let copy = clone_request(&req); // what a retry would send
//!         assert_eq!(copy.body().bytes(), req.body().bytes());
//!         Ok::<_, tower::BoxError>(req.body().bytes().len())
//!     }));
//! let req = Request::post("/v1/chat/completions")
//!     .body(http_body_util::Full::new(Bytes::from_static(b"{\"model\":\"m\"}")))?;
//! assert_eq!(svc.oneshot(req).await?, 13);
//! # Ok(())
//! # }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::{Request, header};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::BodyTooLarge;
use crate::request::RequestInfo;

/// A fully buffered request or response body that can be cloned cheaply (the bytes are
/// reference counted) and sent again.
///
/// A request body also carries what the request asks for, its [`RequestInfo`], read
/// from the bytes the first time a layer asks ([`info`](ReplayBody::info)) and kept
/// for every later reader. Bodies made by [`ReplayLayer`] share it between all their
/// clones (one parse per request, however many attempts); bodies made with
/// [`new`](ReplayBody::new) keep it per copy (clones made after the first read share
/// the result).
///
/// Clone it before sending: a body that has been polled to its end is empty.
#[derive(Clone, Default)]
pub struct ReplayBody {
    data: Bytes,
    info: InfoCell,
}

/// Where a body keeps its parsed [`RequestInfo`] (small: a body is moved and copied
/// often, so the information itself lives behind a pointer).
#[derive(Clone)]
enum InfoCell {
    /// Per copy: a clone takes the result if it was already read.
    Local(OnceLock<Arc<RequestInfo>>),
    /// Shared by every clone of the body.
    Shared(Arc<OnceLock<RequestInfo>>),
}

impl Default for InfoCell {
    fn default() -> Self {
        InfoCell::Local(OnceLock::new())
    }
}

impl PartialEq for ReplayBody {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl Eq for ReplayBody {}

impl ReplayBody {
    /// A body holding `data`.
    pub fn new(data: impl Into<Bytes>) -> Self {
        ReplayBody {
            data: data.into(),
            info: InfoCell::default(),
        }
    }

    /// A body holding `data` whose [`RequestInfo`] is shared by all its clones
    /// (read at most once for all of them; one allocation). What [`ReplayLayer`]
    /// makes.
    pub fn shared(data: impl Into<Bytes>) -> Self {
        ReplayBody {
            data: data.into(),
            info: InfoCell::Shared(Arc::default()),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ReplayBody::default()
    }

    /// The bytes of the body (empty once it has been sent).
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// Takes the bytes out.
    pub fn into_bytes(self) -> Bytes {
        self.data
    }

    /// What the request asks for, read from the body the first time it is asked
    /// (see [`request`](crate::request)). Ask before the body is sent: a body
    /// polled to its end has no bytes left to read.
    pub fn info(&self) -> &RequestInfo {
        let parse = || RequestInfo::parse(self.data.clone());
        match &self.info {
            InfoCell::Local(cell) => cell.get_or_init(|| Arc::new(parse())),
            InfoCell::Shared(cell) => cell.get_or_init(parse),
        }
    }

    /// The [`RequestInfo`] if a layer has read it already.
    pub fn info_if_read(&self) -> Option<&RequestInfo> {
        match &self.info {
            InfoCell::Local(cell) => cell.get().map(|i| &**i),
            InfoCell::Shared(cell) => cell.get(),
        }
    }
}

impl fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies may carry user content: show the size only.
        f.debug_struct("ReplayBody")
            .field("len", &self.data.len())
            .finish()
    }
}

impl From<Bytes> for ReplayBody {
    fn from(data: Bytes) -> Self {
        ReplayBody::new(data)
    }
}

impl From<String> for ReplayBody {
    fn from(s: String) -> Self {
        ReplayBody::new(s)
    }
}

impl From<Vec<u8>> for ReplayBody {
    fn from(v: Vec<u8>) -> Self {
        ReplayBody::new(v)
    }
}

impl From<&'static str> for ReplayBody {
    fn from(s: &'static str) -> Self {
        ReplayBody::new(Bytes::from_static(s.as_bytes()))
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.data.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut this.data)))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.len() as u64)
    }
}

/// Copies a request for another attempt: method, URI, version, headers, extensions
/// and a clone of the body. With a [`ReplayBody`] the body copy is a reference-count
/// increment.
///
/// (`Request::clone`, field by field: building a default request first and
/// replacing its parts made and dropped an empty header map and URI each time.)
#[inline]
pub fn clone_request<B: Clone>(req: &Request<B>) -> Request<B> {
    req.clone()
}

/// Buffers request bodies into [`ReplayBody`] up to a size limit.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLayer {
    limit: usize,
}

impl ReplayLayer {
    /// Buffers bodies of up to `limit` bytes; larger ones fail with [`BodyTooLarge`].
    pub fn new(limit: usize) -> Self {
        ReplayLayer { limit }
    }
}

impl<S> Layer<S> for ReplayLayer {
    type Service = Replay<S>;

    fn layer(&self, inner: S) -> Replay<S> {
        Replay {
            inner,
            limit: self.limit,
        }
    }
}

/// The service made by [`ReplayLayer`].
#[derive(Debug, Clone)]
pub struct Replay<S> {
    inner: S,
    limit: usize,
}

impl<S> Replay<S> {
    /// Wraps `inner`, buffering bodies of up to `limit` bytes.
    pub fn new(inner: S, limit: usize) -> Self {
        Replay { inner, limit }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for Replay<S>
where
    S: Service<Request<ReplayBody>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready service goes with this request; a fresh clone stays for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let limit = self.limit;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let (parts, body) = req.into_parts();
        let too_large =
            declared.is_some_and(|n| n > limit as u64) || body.size_hint().lower() > limit as u64;
        let state = if too_large {
            State::Failed {
                error: Some(BodyTooLarge::new(limit as u64).into()),
            }
        } else {
            State::Collecting {
                body,
                buf: None,
                parts: Some(parts),
                inner: Some(inner),
                limit,
            }
        };
        ResponseFuture { state }
    }
}

pin_project! {
    /// The future of [`Replay`]: collects the body, then calls the inner service.
    pub struct ResponseFuture<S: Service<Request<ReplayBody>>, B> {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<ReplayBody>>, B> {
        Collecting {
            #[pin]
            body: B,
            buf: Option<Collected>,
            parts: Option<http::request::Parts>,
            inner: Option<S>,
            limit: usize,
        },
        Calling {
            #[pin]
            fut: S::Future,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

/// The body collected so far: a single chunk is kept as is (no copy).
enum Collected {
    One(Bytes),
    Many(BytesMut),
}

impl Collected {
    fn len(&self) -> usize {
        match self {
            Collected::One(b) => b.len(),
            Collected::Many(b) => b.len(),
        }
    }

    fn push(slot: &mut Option<Collected>, mut data: impl Buf) {
        let next = match slot.take() {
            None => Collected::One(data.copy_to_bytes(data.remaining())),
            Some(Collected::One(first)) => {
                let mut buf = BytesMut::with_capacity(first.len() + data.remaining());
                buf.extend_from_slice(&first);
                while data.has_remaining() {
                    let chunk = data.chunk();
                    let n = chunk.len();
                    buf.extend_from_slice(chunk);
                    data.advance(n);
                }
                Collected::Many(buf)
            }
            Some(Collected::Many(mut buf)) => {
                while data.has_remaining() {
                    let chunk = data.chunk();
                    let n = chunk.len();
                    buf.extend_from_slice(chunk);
                    data.advance(n);
                }
                Collected::Many(buf)
            }
        };
        *slot = Some(next);
    }

    fn into_bytes(slot: Option<Collected>) -> Bytes {
        match slot {
            None => Bytes::new(),
            Some(Collected::One(b)) => b,
            Some(Collected::Many(b)) => b.freeze(),
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<ReplayBody>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Collecting {
                    mut body,
                    buf,
                    parts,
                    inner,
                    limit,
                } => {
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                let have = buf.as_ref().map_or(0, Collected::len);
                                if have + data.remaining() > *limit {
                                    let err = BodyTooLarge::new(*limit as u64);
                                    *buf = None;
                                    this.state.set(State::Failed { error: None });
                                    return Poll::Ready(Err(err.into()));
                                }
                                Collected::push(buf, data);
                            }
                            // Request trailers are not replayed: LLM APIs do not use them.
                        }
                        Some(Err(e)) => {
                            let err = e.into();
                            this.state.set(State::Failed { error: None });
                            return Poll::Ready(Err(err));
                        }
                        None => {
                            let bytes = Collected::into_bytes(buf.take());
                            let (Some(parts), Some(mut svc)) = (parts.take(), inner.take()) else {
                                return Poll::Ready(Err(
                                    "replay future polled after completion".into()
                                ));
                            };
                            let req = Request::from_parts(parts, ReplayBody::shared(bytes));
                            let fut = svc.call(req);
                            this.state.set(State::Calling { fut });
                        }
                    }
                }
                StateProj::Calling { fut } => {
                    return fut.poll(cx).map_err(Into::into);
                }
                StateProj::Failed { error } => {
                    let err = error
                        .take()
                        .unwrap_or_else(|| "replay future polled after completion".into());
                    return Poll::Ready(Err(err));
                }
            }
        }
    }
}

impl<S: Service<Request<ReplayBody>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::find;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tower::{ServiceExt, service_fn};

    fn echo() -> impl Service<
        Request<ReplayBody>,
        Response = Bytes,
        Error = BoxError,
        Future = impl Future<Output = Result<Bytes, BoxError>>,
    > + Clone {
        service_fn(|req: Request<ReplayBody>| async move {
            let again = clone_request(&req);
            let a = req.into_body().collect().await?.to_bytes();
            let b = again.into_body().collect().await?.to_bytes();
            assert_eq!(a, b);
            Ok::<_, BoxError>(a)
        })
    }

    #[tokio::test]
    async fn buffers_single_and_multi_chunk_bodies() {
        let svc = ReplayLayer::new(64).layer(echo());
        let req = Request::post("/")
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        assert_eq!(svc.clone().oneshot(req).await.unwrap(), "hello");

        let chunks = futures_stream(vec![b"ab".as_slice(), b"cd", b"ef"]);
        let req = Request::post("/").body(chunks).unwrap();
        assert_eq!(svc.oneshot(req).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn refuses_declared_oversize_without_reading() {
        let svc = ReplayLayer::new(4).layer(echo());
        let req = Request::post("/")
            .header("content-length", "1000000")
            .body(Full::new(Bytes::from_static(b"tiny")))
            .unwrap();
        let err = svc.clone().oneshot(req).await.unwrap_err();
        assert_eq!(find::<BodyTooLarge>(&*err).unwrap().limit(), 4);

        let req = Request::post("/")
            .body(Full::new(Bytes::from_static(b"too long")))
            .unwrap();
        let err = svc.oneshot(req).await.unwrap_err();
        assert!(find::<BodyTooLarge>(&*err).is_some());
    }

    #[tokio::test]
    async fn refuses_undeclared_oversize_while_streaming() {
        let svc = ReplayLayer::new(5).layer(echo());
        let req = Request::post("/")
            .body(futures_stream(vec![b"abc".as_slice(), b"def"]))
            .unwrap();
        let err = svc.oneshot(req).await.unwrap_err();
        assert!(find::<BodyTooLarge>(&*err).is_some(), "{err}");
    }

    #[tokio::test]
    async fn body_errors_pass_through() {
        let svc = ReplayLayer::new(64).layer(echo());
        let stream = futures_util_stream(vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Err::<Frame<Bytes>, BoxError>("client went away".into()),
        ]);
        let req = Request::post("/").body(stream).unwrap();
        let err = svc.oneshot(req).await.unwrap_err();
        assert_eq!(err.to_string(), "client went away");
    }

    #[tokio::test]
    async fn the_request_is_parsed_once_for_every_copy() {
        let svc = ReplayLayer::new(1024).layer(service_fn(|req: Request<ReplayBody>| async move {
            // Two attempts' copies, made before anyone read the body.
            let a = clone_request(&req);
            let b = clone_request(&req);
            let before = crate::request::parses_on_this_thread();
            assert_eq!(a.body().info().model(), Some("m"));
            assert_eq!(b.body().info().max_tokens(), Some(9));
            assert!(std::ptr::eq(a.body().info(), req.body().info()));
            assert_eq!(crate::request::parses_on_this_thread() - before, 1);
            Ok::<_, BoxError>(())
        }));
        let req = Request::post("/")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"m","max_tokens":9}"#,
            )))
            .unwrap();
        svc.oneshot(req).await.unwrap();

        // A body made with `new` keeps the result per copy: copies made after the
        // first read share it.
        let body = ReplayBody::new(Bytes::from_static(br#"{"model":"m"}"#));
        assert!(body.info_if_read().is_none());
        assert_eq!(body.info().model(), Some("m"));
        let before = crate::request::parses_on_this_thread();
        assert_eq!(body.clone().info().model(), Some("m"));
        assert_eq!(crate::request::parses_on_this_thread(), before);
        assert!(std::mem::size_of::<ReplayBody>() <= 56);
        // The information outlives sending the bytes.
        let mut sent = body.clone();
        let _ = std::pin::Pin::new(&mut sent)
            .poll_frame(&mut Context::from_waker(std::task::Waker::noop()));
        assert!(sent.bytes().is_empty());
        assert_eq!(sent.info().model(), Some("m"));
    }

    #[test]
    fn clone_keeps_everything() {
        #[derive(Clone, Debug, PartialEq)]
        struct Tag(u32);
        let mut req = Request::post("http://x/v1")
            .header("x-a", "1")
            .body(ReplayBody::from("body"))
            .unwrap();
        req.extensions_mut().insert(Tag(7));
        let copy = clone_request(&req);
        assert_eq!(copy.method(), req.method());
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.headers(), req.headers());
        assert_eq!(copy.extensions().get::<Tag>(), Some(&Tag(7)));
        assert_eq!(copy.body().bytes(), "body");
        assert_eq!(format!("{:?}", copy.body()), "ReplayBody { len: 4 }");
    }

    fn futures_stream(chunks: Vec<&'static [u8]>) -> impl Body<Data = Bytes, Error = BoxError> {
        futures_util_stream(
            chunks
                .into_iter()
                .map(|c| Ok(Frame::data(Bytes::from_static(c))))
                .collect(),
        )
    }

    fn futures_util_stream(
        items: Vec<Result<Frame<Bytes>, BoxError>>,
    ) -> impl Body<Data = Bytes, Error = BoxError> {
        StreamBody::new(Iter(items.into_iter()))
    }

    /// A minimal stream over a vector, to avoid a dependency on futures-util here.
    struct Iter<I>(I);
    impl<I: Iterator + Unpin> futures_core::Stream for Iter<I> {
        type Item = I::Item;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
            Poll::Ready(self.0.next())
        }
    }
}
