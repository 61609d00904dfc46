//! The failover layers around tonic client channels: nothing in them is tied to
//! LLM wire formats.
//!
//! The program is `examples/tonic_failover/main.rs`; this module is its library half (the
//! message types, a small gRPC backend, the classifier and the client stack), so a
//! test can run the same failover.
//!
//! No code generation: the two messages are written by hand with
//! `#[derive(prost::Message)]`, the client calls [`tonic::client::Grpc::unary`] with
//! [`tonic_prost::ProstCodec`], and the backend serves them with
//! [`tonic::server::Grpc::unary`] on a plain hyper HTTP/2 connection.
//!
//! The client stack, per backend (innermost first): the tonic `Channel` →
//! [`ObserveLayer`] → [`CircuitBreakerLayer`]; across backends an ordered
//! [`Fallback`], behind the core's replay layer so that a failed call can be sent
//! again. Every layer judges outcomes with [`GrpcClassifier`], which reads
//! `grpc-status` instead of HTTP status codes.

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::util::MapRequest;
use tower::{BoxError, Layer, ServiceExt};
use tower_failover::balance::{Fallback, FallbackConfig, ProviderOptions};
use tower_failover::circuit::{CircuitBreaker, CircuitBreakerLayer, CircuitConfig};
use tower_failover::error::find;
use tower_failover::observe::{Observe, ObserveLayer};
use tower_failover::replay::{Replay, ReplayBody};
use tower_failover::{
    Classify, ClientErrorKind, FailureKind, LlmClassifier, Outcome, Registry, classify_error_chain,
};

/// The request of `greeter.Greeter/SayHello`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// The reply of `greeter.Greeter/SayHello`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
    /// The backend that answered.
    #[prost(string, tag = "2")]
    pub served_by: String,
}

/// The method's path.
pub const SAY_HELLO: &str = "/greeter.Greeter/SayHello";

/// Outcomes of gRPC calls, from `grpc-status` rather than HTTP status codes.
///
/// A gRPC error answers HTTP 200 with its status in the headers ("trailers-only")
/// or in the trailers. The layers classify a response when its headers arrive, so
/// this reads `grpc-status` there; a status that only comes in the trailers of a
/// streamed answer is not seen (such a call counts as a success).
///
/// | `grpc-status` | outcome |
/// | --- | --- |
/// | absent, `OK` | `Success` |
/// | `UNAVAILABLE`, `INTERNAL`, `DATA_LOSS`, `UNKNOWN`, `ABORTED`, `CANCELLED` | `Failure`: counts against the backend, retried on another |
/// | `DEADLINE_EXCEEDED` | `Failure(Timeout)` |
/// | `RESOURCE_EXHAUSTED` | `RateLimited`, waiting `grpc-retry-pushback-ms` if given |
/// | `UNAUTHENTICATED`, `PERMISSION_DENIED` | `ClientError(Auth)` |
/// | any other | `ClientError`: the request is at fault, not retried elsewhere |
///
/// A non-200 HTTP status (a proxy in the way) is read as [`LlmClassifier`] would.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClassifier;

fn outcome_of(code: Code, pushback: Option<Duration>) -> Outcome {
    match code {
        Code::Ok => Outcome::Success,
        Code::Unavailable => Outcome::failure(FailureKind::Status(503)),
        Code::Internal | Code::DataLoss => Outcome::failure(FailureKind::Status(500)),
        Code::Unknown | Code::Aborted | Code::Cancelled => Outcome::failure(FailureKind::Other),
        Code::DeadlineExceeded => Outcome::failure(FailureKind::Timeout),
        Code::ResourceExhausted => Outcome::RateLimited {
            retry_after: pushback,
        },
        Code::Unauthenticated | Code::PermissionDenied => Outcome::ClientError {
            kind: ClientErrorKind::Auth,
        },
        _ => Outcome::ClientError {
            kind: ClientErrorKind::Status(400),
        },
    }
}

impl Classify for GrpcClassifier {
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        if response.status() != http::StatusCode::OK {
            return LlmClassifier::default().classify_response(response);
        }
        let headers = response.headers();
        let Some(code) = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
        else {
            return Outcome::Success;
        };
        let pushback = headers
            .get("grpc-retry-pushback-ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        outcome_of(Code::from_i32(code), pushback)
    }

    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        if let Some(status) = find::<Status>(error) {
            return outcome_of(status.code(), None);
        }
        classify_error_chain(error)
    }
}

/// A backend's behaviour, switchable while it runs.
#[derive(Debug, Clone, Default)]
struct Mode {
    unavailable: Arc<AtomicBool>,
}

/// A small gRPC backend on loopback serving `SayHello`.
///
/// [`stop`](Backend::stop) closes its listener and every connection (clients then
/// see refused connections); [`set_unavailable`](Backend::set_unavailable) keeps it
/// up but answering `UNAVAILABLE`.
#[derive(Debug)]
pub struct Backend {
    name: String,
    addr: SocketAddr,
    mode: Mode,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts a backend on a free loopback port.
    pub async fn start(name: &str) -> std::io::Result<Backend> {
        Backend::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a backend on `addr` (to bring a stopped one back on its port).
    pub async fn start_on(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let mode = Mode::default();
        let task = tokio::spawn(accept(listener, name.to_owned(), mode.clone()));
        Ok(Backend {
            name: name.to_owned(),
            addr,
            mode,
            task: Some(task),
        })
    }

    /// The backend's name (what it puts in `served_by`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer every call with `UNAVAILABLE` (or normally again).
    pub fn set_unavailable(&self, on: bool) {
        self.mode.unavailable.store(on, Ordering::SeqCst);
    }

    /// Stops serving: the listener and every open connection are closed.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept(listener: TcpListener, name: String, mode: Mode) {
    // Connections live in this set: aborting the accept task drops it, which
    // aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (name, mode) = (name.clone(), mode.clone());
                connections.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(req, name.clone(), mode.clone())
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    name: String,
    mode: Mode,
) -> Result<Response<tonic::body::Body>, Infallible> {
    if req.uri().path() != SAY_HELLO {
        return Ok(Status::unimplemented(req.uri().path().to_owned()).into_http());
    }
    let greet = tower::service_fn(move |call: tonic::Request<HelloRequest>| {
        let name = name.clone();
        let unavailable = mode.unavailable.load(Ordering::SeqCst);
        async move {
            if unavailable {
                return Err(Status::unavailable(format!("{name} is unavailable")));
            }
            Ok(tonic::Response::new(HelloReply {
                message: format!("Hello, {}!", call.get_ref().name),
                served_by: name,
            }))
        }
    });
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
    Ok(grpc.unary(greet, req).await)
}

fn to_tonic_body(req: Request<ReplayBody>) -> Request<tonic::body::Body> {
    req.map(tonic::body::Body::new)
}

/// One backend's client stack: the channel, observed, behind a circuit breaker.
pub type BackendStack = CircuitBreaker<
    Observe<
        MapRequest<Channel, fn(Request<ReplayBody>) -> Request<tonic::body::Body>>,
        GrpcClassifier,
    >,
    GrpcClassifier,
>;

/// The client side: the failover stack that a [`tonic::client::Grpc`] calls into.
pub type FailoverChannel = Replay<Fallback<BackendStack, GrpcClassifier>>;

/// A `SayHello` client failing over across backends.
#[derive(Debug, Clone)]
pub struct GreeterClient {
    grpc: tonic::client::Grpc<FailoverChannel>,
}

/// Builds the client for `backends` (name, URL), tried in that order. Health is
/// kept in `registry`, keyed `(name, "greeter")`.
pub fn client(
    registry: &Registry,
    backends: &[(&str, String)],
    circuit: CircuitConfig,
) -> Result<GreeterClient, BoxError> {
    let mut chain = Fallback::builder()
        .config(FallbackConfig::default().max_ready_wait(Duration::ZERO))
        .classifier(GrpcClassifier);
    for (priority, (name, url)) in backends.iter().enumerate() {
        let health = registry.provider(name, "greeter");
        let channel = Endpoint::from_shared(url.clone())?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let observed = ObserveLayer::new(health.clone())
            .classifier(GrpcClassifier)
            .layer(channel.map_request(to_tonic_body as fn(_) -> _));
        let stack = CircuitBreakerLayer::with_config(health.clone(), circuit.clone())?
            .classifier(GrpcClassifier)
            .layer(observed);
        chain = chain.provider_with(
            health,
            stack,
            ProviderOptions::default().priority(priority as u32),
        );
    }
    let svc = Replay::new(chain.build()?, 64 * 1024);
    Ok(GreeterClient {
        grpc: tonic::client::Grpc::new(svc),
    })
}

impl GreeterClient {
    /// Calls `SayHello`.
    pub async fn say_hello(&mut self, name: &str) -> Result<HelloReply, Status> {
        self.grpc.ready().await.map_err(Status::from_error)?;
        let request = tonic::Request::new(HelloRequest {
            name: name.to_owned(),
        });
        let path = http::uri::PathAndQuery::from_static(SAY_HELLO);
        let reply = self
            .grpc
            .unary(
                request,
                path,
                ProstCodec::<HelloRequest, HelloReply>::default(),
            )
            .await?;
        Ok(reply.into_inner())
    }
}
