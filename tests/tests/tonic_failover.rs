//! The tonic example's client: circuit breaker, observer and ordered fallback
//! around tonic channels, failing over between two local gRPC backends.

use std::time::Duration;

use http::Response;
use tower_failover::circuit::CircuitConfig;
use tower_failover::{CircuitState, Classify, ClientErrorKind, FailureKind, Outcome, Registry};
use tower_failover_examples::tonic_failover::{self as grpc, Backend, GrpcClassifier};

fn circuit() -> CircuitConfig {
    CircuitConfig::default()
        .consecutive_failures(3)
        .cooldown(Duration::from_millis(200), Duration::from_millis(400))
        .half_open(1, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_between_grpc_backends() {
    let mut a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    let registry = Registry::new();
    let mut client = grpc::client(&registry, &[("a", a.url()), ("b", b.url())], circuit()).unwrap();
    let health_a = registry.provider("a", "greeter");
    let health_b = registry.provider("b", "greeter");

    for i in 0..3 {
        let reply = client.say_hello(&format!("n{i}")).await.unwrap();
        assert_eq!(reply.served_by, "a");
        assert_eq!(reply.message, format!("Hello, n{i}!"));
    }

    // Backend a goes down (listener and connections closed): every call succeeds
    // on b, and a's circuit opens after three failures.
    let addr = a.addr();
    a.stop().await;
    for i in 0..8 {
        let reply = client.say_hello(&format!("d{i}")).await.unwrap();
        assert_eq!(reply.served_by, "b");
    }
    assert_eq!(health_a.circuit(), CircuitState::Open);
    let failures = health_a.counters().failures;
    assert!((1..=3).contains(&failures), "{failures} failures reached a");

    // It comes back on the same port: after the cooldown a probe passes and it
    // serves again.
    let a = Backend::start_on("a", addr).await.unwrap();
    let mut back = false;
    for _ in 0..60 {
        if client.say_hello("r").await.unwrap().served_by == "a" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(back, "backend a serves again once it is back");
    assert_eq!(health_a.circuit(), CircuitState::Closed);

    // Up but answering UNAVAILABLE (a status in the headers of an HTTP 200): the
    // gRPC classifier counts it as a failure, so calls fail over and the circuit
    // opens again.
    a.set_unavailable(true);
    for _ in 0..6 {
        assert_eq!(client.say_hello("u").await.unwrap().served_by, "b");
    }
    assert_eq!(health_a.circuit(), CircuitState::Open);
    assert_eq!(health_b.circuit(), CircuitState::Closed);

    // Both unavailable: the caller gets an error status, not a hang.
    b.set_unavailable(true);
    let status = client.say_hello("x").await.unwrap_err();
    assert_ne!(status.code(), tonic::Code::Ok);
}

#[test]
fn the_grpc_classifier_reads_grpc_status() {
    let c = GrpcClassifier;
    let res = |status: u16, grpc: Option<&str>| {
        let mut b = Response::builder().status(status);
        if let Some(g) = grpc {
            b = b.header("grpc-status", g);
        }
        b.body(()).unwrap()
    };
    assert_eq!(c.classify_response(&res(200, None)), Outcome::Success);
    assert_eq!(c.classify_response(&res(200, Some("0"))), Outcome::Success);
    assert_eq!(
        c.classify_response(&res(200, Some("14"))),
        Outcome::failure(FailureKind::Status(503))
    );
    assert_eq!(
        c.classify_response(&res(200, Some("4"))),
        Outcome::failure(FailureKind::Timeout)
    );
    assert_eq!(
        c.classify_response(&res(200, Some("16"))),
        Outcome::ClientError {
            kind: ClientErrorKind::Auth
        }
    );
    assert_eq!(
        c.classify_response(&res(200, Some("3"))),
        Outcome::ClientError {
            kind: ClientErrorKind::Status(400)
        }
    );
    let limited = Response::builder()
        .header("grpc-status", "8")
        .header("grpc-retry-pushback-ms", "1500")
        .body(())
        .unwrap();
    assert_eq!(
        c.classify_response(&limited),
        Outcome::RateLimited {
            retry_after: Some(Duration::from_millis(1500))
        }
    );
    // A proxy's HTTP error is read as an HTTP error.
    assert_eq!(
        c.classify_response(&res(502, None)),
        Outcome::failure(FailureKind::Status(502))
    );
    // Errors: a tonic status in the chain, else the core's transport rules.
    let err: tower_failover::BoxError = tonic::Status::unavailable("down").into();
    assert_eq!(
        c.classify_error(&*err),
        Outcome::failure(FailureKind::Status(503))
    );
    let err: tower_failover::BoxError =
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
    assert_eq!(
        c.classify_error(&*err),
        Outcome::failure(FailureKind::Connect)
    );
}
