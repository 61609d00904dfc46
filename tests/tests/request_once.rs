//! One buffer, one parse: the request body a caller sends reaches the provider as
//! the very bytes the stack buffered (over real loopback HTTP, checked by what the
//! simulated provider received), and the body's JSON is parsed once per request,
//! however many layers read it (model routing, the quota estimator, validation, the
//! provider adapter) and however many providers are tried. The answer too is read
//! once: the provider reads it whole (for its usage) and leaves an outline of its
//! members that output validation reads instead of the whole answer again.

mod common;

use common::{fast_sim, provider_entry, start};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tower::ServiceExt;
use tower_failover::json::{Outline, readers_on_this_thread};
use tower_failover::request::parses_on_this_thread;
use tower_failover::sim::{Fault, FaultSpec, Flavor, Sim};
use tower_failover::{Config, Stack};

/// A chat request as a client might format it: odd spacing, a vendor field, a
/// completion limit (the quota estimator reads it), key order of its own.
const BODY: &str = "{ \"messages\" : [{\"role\":\"user\",\"content\":\"Say hello\"}],\n  \"x_vendor\": {\"a\": [1, 2.50, \"\\u00e9\"]},  \"model\":\"m\", \"max_tokens\": 32 }";

async fn sim(name: &str, seed: u64) -> Sim {
    fast_sim(Flavor::OpenAi, name, seed).await
}

/// Two providers of model `m` in fallback order, with a token quota (so the
/// estimator reads the body) and the default validation.
fn config(first: &Sim, second: &Sim) -> Config {
    let toml = format!(
        "router = \"fallback\"\n[quota]\ntokens_per_minute = 1000000\n{}{}",
        provider_entry("first", "openai", first.base_url(), 0),
        provider_entry("second", "openai", second.base_url(), 1),
    );
    Config::from_toml_str(&toml).expect("a valid configuration")
}

/// The stack users build from [`config`].
fn stack(first: &Sim, second: &Sim) -> tower_failover::Failover {
    Stack::from_config(&config(first, second))
        .unwrap()
        .build()
        .unwrap()
}

/// [`BODY`] as a chat completion request.
fn chat_request() -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

fn received_bodies(sim: &Sim) -> Vec<Bytes> {
    sim.received()
        .iter()
        .filter(|r| r.uri.path().ends_with("/chat/completions"))
        .map(|r| r.body().cloned().unwrap_or_default())
        .collect()
}

/// Through the gateway with a real client: the provider receives the caller's
/// bytes unchanged, the body was parsed once and the answer read once (the
/// gateway, the client and the simulated providers all run on this test's single
/// thread).
#[tokio::test]
async fn the_gateway_sends_the_buffered_bytes_and_parses_once() {
    let (first, second) = (sim("first", 1).await, sim("second", 2).await);
    let gw = start(&config(&first, &second)).await;

    let before = parses_on_this_thread();
    let answers_before = readers_on_this_thread();
    let answer = gw.send("POST", "/v1/chat/completions", BODY).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.served_by(), "first/m");
    assert_eq!(parses_on_this_thread() - before, 1, "one parse per request");
    assert_eq!(
        readers_on_this_thread() - answers_before,
        1,
        "one read of the answer, validation included"
    );
    assert_eq!(
        received_bodies(&first),
        [Bytes::from_static(BODY.as_bytes())]
    );

    gw.shutdown().await.unwrap();
}

/// Through `Stack::from_config`: a failover resends the same buffer, byte for
/// byte, to the next provider, and the request is still parsed once.
#[tokio::test]
async fn a_failover_resends_the_same_bytes_without_a_second_parse() {
    let (first, second) = (sim("first", 3).await, sim("second", 4).await);
    first
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    let stack = stack(&first, &second);

    let before = parses_on_this_thread();
    let res = stack.oneshot(chat_request()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        parses_on_this_thread() - before,
        1,
        "one parse for both attempts"
    );
    // The failing provider answered before reading the body; the second got it.
    assert_eq!(first.received().len(), 1);
    assert_eq!(
        received_bodies(&second),
        [Bytes::from_static(BODY.as_bytes())]
    );
}

/// A model name the entry maps (an alias to its own model) is spliced in place:
/// everything else is the caller's bytes.
#[tokio::test]
async fn only_the_model_name_is_rewritten() {
    let target = sim("mapped", 5).await;
    let toml = format!(
        "{}aliases = [\"smart\"]\n",
        provider_entry("mapped", "openai", target.base_url(), 0)
    );
    let stack = Stack::from_config(&Config::from_toml_str(&toml).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let body = BODY.replace("\"model\":\"m\"", "\"model\":\"smart\"");
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let res = stack.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let want = body.replace("\"model\":\"smart\"", "\"model\":\"m\"");
    assert_ne!(want, body);
    assert_eq!(received_bodies(&target), [Bytes::from(want)]);
}

/// Through `Stack::from_config` with the default validation: a JSON answer is read
/// whole once (the provider's read, for its usage), and validation goes through
/// the outline that read left beside it, which reaches the caller with the very
/// bytes of the answer.
#[tokio::test]
async fn the_answer_is_read_once_and_its_outline_travels_with_it() {
    let (first, second) = (sim("first", 6).await, sim("second", 7).await);
    let stack = stack(&first, &second);
    let before = readers_on_this_thread();
    let res = stack.oneshot(chat_request()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        readers_on_this_thread() - before,
        1,
        "one read of the answer, validation included"
    );
    let outline = res
        .extensions()
        .get::<Outline>()
        .expect("the provider's outline reaches the caller")
        .clone();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(outline.bytes(), &body);
    assert_eq!(
        outline.bytes().as_ptr(),
        body.as_ptr(),
        "the same bytes, not a copy"
    );
    let keys: Vec<_> = outline.members().map(|(k, _)| k.to_vec()).collect();
    assert!(keys.contains(&b"choices".to_vec()) && keys.contains(&b"usage".to_vec()));
}
