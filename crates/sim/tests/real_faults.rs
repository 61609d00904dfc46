//! The faults modelled on how real providers fail (credential and billing failures,
//! stalls, resets and drips mid-answer, proxy pages, absurd headers), for both wire
//! formats, over real loopback HTTP.
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tower_failover_sim::{
    ABSURD_HEADER_NAMES, ABSURD_HEADER_VALUES, AbsurdHeaders, Billing, CutPoint, Fault, FaultKind,
    FaultSpec, Flavor, Sim,
};

/// A key whose fragments the tests look for.
const KEY: &str = "sk-test-0123456789abcdefWXYZ";

/// A sim with one fault always on.
async fn faulty(flavor: Flavor, fault: Fault) -> Sim {
    let sim = sim(flavor).await;
    sim.set_faults([FaultSpec::always(fault)]).unwrap();
    sim
}

/// Send a completion request with `KEY` as the provider expects it; the response
/// with its body still to read.
async fn open(c: &HttpClient, sim: &Sim, stream: bool) -> Response<Incoming> {
    let flavor = sim.handle().flavor();
    let mut b = Request::post(sim.completion_url()).header("content-type", "application/json");
    b = match flavor {
        Flavor::OpenAi => b.header("authorization", format!("Bearer {KEY}")),
        Flavor::Anthropic => b
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01"),
    };
    let body = Full::new(Bytes::from(request(flavor, stream).to_string()));
    within(5, c.request(b.body(body).unwrap()))
        .await
        .expect("request failed")
}

/// Read the whole response.
async fn whole(c: &HttpClient, sim: &Sim, stream: bool) -> (u16, HeaderMap, Value) {
    let res = open(c, sim, stream).await;
    let status = res.status().as_u16();
    let (parts, body) = res.into_parts();
    let bytes = within(5, body.collect()).await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, parts.headers, v)
}

/// Read body frames into `got` until `enough` says so (fails after 5 s).
async fn read_until(body: &mut Incoming, got: &mut Vec<u8>, enough: impl Fn(&[u8]) -> bool) {
    within(5, async {
        while !enough(got) {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        got.extend_from_slice(d);
                    }
                }
                other => panic!(
                    "the body ended before enough arrived ({} bytes): {other:?}",
                    got.len()
                ),
            }
        }
    })
    .await
}

/// Whether the body sends nothing (no frame, no end, no error) for `d`.
async fn silent_for(body: &mut Incoming, d: Duration) -> bool {
    tokio::time::timeout(d, body.frame()).await.is_err()
}

/// How many whole SSE events `bytes` holds.
fn events(bytes: &[u8]) -> usize {
    tower_failover_core::sse::events(bytes).map_or(0, |e| e.len())
}

fn no_rate_limit_headers(h: &HeaderMap) {
    assert!(
        !h.keys()
            .any(|k| k.as_str().contains("ratelimit") || k.as_str().starts_with("retry-after")),
        "{h:?}"
    );
}

#[tokio::test]
async fn credential_401_names_a_masked_fragment_of_the_key_received() {
    for flavor in FLAVORS {
        for stream in [false, true] {
            let sim = faulty(flavor, Fault::Credential(401)).await;
            let (status, h, v) = whole(&client(), &sim, stream).await;
            assert_eq!(status, 401);
            assert_eq!(h.get("x-sim-fault").unwrap(), "credential");
            no_rate_limit_headers(&h);
            match flavor {
                Flavor::OpenAi => {
                    assert_eq!(v["error"]["code"], "invalid_api_key");
                    assert_eq!(v["error"]["type"], "invalid_request_error");
                    assert!(v["error"]["param"].is_null());
                    let m = v["error"]["message"].as_str().unwrap();
                    let masked = format!("sk-{}WXYZ", "*".repeat(KEY.len() - 7));
                    assert_eq!(
                        m,
                        format!(
                            "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com/account/api-keys."
                        )
                    );
                    assert!(!m.contains(KEY) && !m.contains("0123"), "{m}");
                }
                Flavor::Anthropic => {
                    assert_eq!(
                        v,
                        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
                    );
                }
            }
            let k = sim.counters();
            assert_eq!((k.fault(FaultKind::Credential), k.status(401)), (1, 1));
        }
    }
}

#[tokio::test]
async fn credential_rejection_without_a_key_and_on_the_models_route() {
    let sim = faulty(Flavor::OpenAi, Fault::Credential(401)).await;
    let c = client();
    let r = post(&c, &sim.completion_url(), &openai_chat(false)).await;
    assert_eq!(r.status, 401);
    let m = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(m.starts_with("You didn't provide an API key."), "{m}");
    // Probes see it too.
    let r = get(&c, &format!("{}/v1/models", sim.base_url())).await;
    assert_eq!(r.status, 401);
    assert_eq!(sim.counters().fault(FaultKind::Credential), 2);
}

#[tokio::test]
async fn credential_403_is_a_permission_error() {
    for flavor in FLAVORS {
        let sim = faulty(flavor, Fault::Credential(403)).await;
        let (status, h, v) = whole(&client(), &sim, false).await;
        assert_eq!(status, 403);
        no_rate_limit_headers(&h);
        match flavor {
            Flavor::OpenAi => {
                assert_eq!(v["error"]["code"], "unsupported_country_region_territory");
                assert_eq!(v["error"]["type"], "request_forbidden");
            }
            Flavor::Anthropic => assert_eq!(v["error"]["type"], "permission_error"),
        }
    }
}

#[tokio::test]
async fn the_configured_key_check_answers_like_a_credential_fault() {
    let sim = Sim::builder(Flavor::OpenAi)
        .api_key("sk-right-key-0000")
        .start()
        .await
        .unwrap();
    let (status, _, v) = whole(&client(), &sim, false).await;
    assert_eq!(status, 401);
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("sk-*********************WXYZ"), "{m}");
    assert_eq!(
        sim.counters().fault(FaultKind::Credential),
        0,
        "not a fault"
    );
}

#[tokio::test]
async fn billing_failures_in_all_three_shapes() {
    let quota = "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.";
    let credit = "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.";
    for flavor in FLAVORS {
        for shape in [
            Billing::Native,
            Billing::PaymentRequired,
            Billing::InsufficientQuota,
            Billing::CreditBalance,
        ] {
            let sim = faulty(flavor, Fault::Billing(shape)).await;
            let (status, h, v) = whole(&client(), &sim, true).await;
            no_rate_limit_headers(&h);
            let shape = match (shape, flavor) {
                (Billing::Native, Flavor::OpenAi) => Billing::InsufficientQuota,
                (Billing::Native, Flavor::Anthropic) => Billing::CreditBalance,
                (s, _) => s,
            };
            let (want_status, message) = match shape {
                Billing::PaymentRequired => (402, "Insufficient Balance"),
                Billing::InsufficientQuota => (429, quota),
                _ => (400, credit),
            };
            assert_eq!(status, want_status, "{flavor} {shape:?}");
            assert_eq!(v["error"]["message"], message);
            match (flavor, shape) {
                (Flavor::OpenAi, Billing::InsufficientQuota) => {
                    assert_eq!(v["error"]["type"], "insufficient_quota");
                    assert_eq!(v["error"]["code"], "insufficient_quota");
                }
                (Flavor::OpenAi, Billing::PaymentRequired) => {
                    assert_eq!(v["error"]["code"], "invalid_request_error")
                }
                (Flavor::OpenAi, _) => {
                    assert_eq!(v["error"]["type"], "invalid_request_error");
                    assert!(v["error"]["code"].is_null());
                }
                (Flavor::Anthropic, s) => {
                    assert_eq!(v["type"], "error");
                    let ty = match s {
                        Billing::PaymentRequired => "billing_error",
                        Billing::InsufficientQuota => "rate_limit_error",
                        _ => "invalid_request_error",
                    };
                    assert_eq!(v["error"]["type"], ty);
                }
            }
            let c = get(&client(), &format!("{}/v1/models", sim.base_url())).await;
            assert_eq!(c.status, 200, "a key without credit still lists models");
            assert_eq!(sim.counters().fault(FaultKind::Billing), 1);
        }
    }
}

#[tokio::test]
async fn a_stalled_stream_sends_n_events_then_nothing() {
    for flavor in FLAVORS {
        let sim = faulty(flavor, Fault::Stall(CutPoint::new(2, 0))).await;
        let res = open(&client(), &sim, true).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers().get("x-sim-fault").unwrap(), "stall");
        let mut body = res.into_body();
        let mut got = Vec::new();
        read_until(&mut body, &mut got, |b| events(b) >= 2).await;
        assert_eq!(events(&got), 2, "{}", String::from_utf8_lossy(&got));
        assert!(
            silent_for(&mut body, Duration::from_millis(300)).await,
            "nothing after the stall"
        );
        assert_eq!(sim.counters().fault(FaultKind::Stall), 1);
    }
}

#[tokio::test]
async fn a_stalled_body_declares_its_length_sends_n_bytes_then_nothing() {
    for flavor in FLAVORS {
        for after in [0usize, 10] {
            let sim = faulty(flavor, Fault::Stall(CutPoint::new(1, after))).await;
            let res = open(&client(), &sim, false).await;
            assert_eq!(res.status(), 200);
            let len: usize = res.headers()["content-length"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(len > after, "{len}");
            let mut body = res.into_body();
            let mut got = Vec::new();
            read_until(&mut body, &mut got, |b| b.len() >= after).await;
            assert_eq!(got.len(), after);
            assert!(silent_for(&mut body, Duration::from_millis(300)).await);
        }
    }
}

#[tokio::test]
async fn a_stall_ends_when_the_client_goes_away_or_the_sim_stops() {
    let sim = faulty(Flavor::OpenAi, Fault::Stall(CutPoint::new(1, 5))).await;
    let req = format!(
        "GET /v1/models HTTP/1.1\r\nhost: {}\r\nconnection: keep-alive\r\n\r\n",
        sim.addr()
    );
    // The client closes its side: the sim lets the connection go (no task leaks).
    let mut s = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    within(5, async {
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "headers first");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    s.shutdown().await.unwrap();
    let end = within(5, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    let () = end;

    // A stalled request on a connection that stays open ends when the sim stops.
    let c = client();
    let res = open(&c, &sim, true).await;
    let mut body = res.into_body();
    let mut got = Vec::new();
    read_until(&mut body, &mut got, |b| events(b) >= 1).await;
    sim.shutdown().await;
    let next = within(5, body.frame()).await;
    assert!(
        !matches!(next, Some(Ok(_))),
        "the stalled body ends with the sim: {next:?}"
    );
}

#[tokio::test]
async fn reset_after_n_events_or_bytes() {
    for flavor in FLAVORS {
        let sim = faulty(flavor, Fault::ResetAfter(CutPoint::new(2, 10))).await;
        let r = post(&client(), &sim.completion_url(), &request(flavor, true)).await;
        assert_eq!(r.status, 200);
        assert!(
            r.body_error.is_some(),
            "a connection error, not a clean end"
        );
        assert_eq!(r.events().len(), 2, "{}", r.text());

        let r = post(&client(), &sim.completion_url(), &request(flavor, false)).await;
        assert_eq!(r.status, 200);
        assert!(r.body_error.is_some());
        assert_eq!(r.body.len(), 10);
        assert_eq!(sim.counters().fault(FaultKind::ResetAfter), 2);

        // At zero, the headers still arrive first.
        sim.set_faults([FaultSpec::always(Fault::ResetAfter(CutPoint::new(0, 0)))])
            .unwrap();
        for stream in [false, true] {
            let r = post(&client(), &sim.completion_url(), &request(flavor, stream)).await;
            assert_eq!(r.status, 200);
            assert!(r.body_error.is_some());
            assert!(r.body.is_empty());
        }
    }
}

#[tokio::test]
async fn drip_sends_one_byte_per_interval() {
    let every = Duration::from_millis(40);
    for flavor in FLAVORS {
        for stream in [false, true] {
            let sim = faulty(flavor, Fault::Drip(every)).await;
            let t = Instant::now();
            let res = open(&client(), &sim, stream).await;
            assert_eq!(res.status(), 200);
            let mut body = res.into_body();
            let mut got = 0usize;
            // However late this client reads, the sim cannot have sent more than one
            // byte plus one per interval since the request.
            within(5, async {
                while got < 4 {
                    let f = body.frame().await.unwrap().unwrap();
                    got += f.data_ref().map_or(0, |d| d.len());
                    let allowed = 1 + (t.elapsed().as_millis() / every.as_millis()) as usize;
                    assert!(got <= allowed, "{got} bytes after {:?}", t.elapsed());
                }
            })
            .await;
        }
    }
}

#[tokio::test]
async fn a_fast_drip_delivers_the_whole_answer() {
    for flavor in FLAVORS {
        for stream in [false, true] {
            let sim = Sim::builder(flavor)
                .reply_words(1, 2)
                .fault(Fault::Drip(Duration::from_millis(1)))
                .start()
                .await
                .unwrap();
            let res = open(&client(), &sim, stream).await;
            let declared = res
                .headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap().parse::<usize>().unwrap());
            let mut body = res.into_body();
            let mut bytes = Vec::new();
            let mut frames = 0;
            within(30, async {
                while let Some(f) = body.frame().await {
                    let f = f.unwrap();
                    if let Some(d) = f.data_ref() {
                        frames += 1;
                        if stream {
                            assert_eq!(d.len(), 1, "one byte per chunk");
                        }
                        bytes.extend_from_slice(d);
                    }
                }
            })
            .await;
            let r = Reply {
                status: http::StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from(bytes),
                body_error: None,
            };
            let s = said(flavor, &r, stream).unwrap();
            assert!(s.complete && !s.text.is_empty());
            if stream {
                assert_eq!(frames, r.body.len());
            } else {
                assert_eq!(declared, Some(r.body.len()));
            }
        }
    }
}

#[tokio::test]
async fn html_pages_and_empty_bodies_with_status_200() {
    for flavor in FLAVORS {
        for stream in [false, true] {
            let sim = faulty(flavor, Fault::HtmlPage).await;
            let r = post(&client(), &sim.completion_url(), &request(flavor, stream)).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
            assert!(
                r.text().contains("<h1>502 Bad Gateway</h1>"),
                "{}",
                r.text()
            );
            assert_eq!(sim.counters().fault(FaultKind::HtmlPage), 1);

            let sim = faulty(flavor, Fault::EmptyBody).await;
            let r = post(&client(), &sim.completion_url(), &request(flavor, stream)).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("content-length"), Some("0"));
            assert!(r.body.is_empty() && r.body_error.is_none());
            let m = get(&client(), &format!("{}/v1/models", sim.base_url())).await;
            assert!(m.status == 200 && m.body.is_empty());
            assert_eq!(sim.counters().fault(FaultKind::EmptyBody), 2);
        }
    }
}

#[tokio::test]
async fn absurd_rate_limit_headers_on_a_good_answer() {
    for flavor in FLAVORS {
        for stream in [false, true] {
            let sim = faulty(
                flavor,
                Fault::AbsurdHeaders(AbsurdHeaders {
                    value: None,
                    count: 0,
                }),
            )
            .await;
            let r = post(&client(), &sim.completion_url(), &request(flavor, stream)).await;
            assert_eq!(r.status, 200);
            for (i, name) in ABSURD_HEADER_NAMES.iter().enumerate() {
                assert_eq!(
                    r.headers[*name].as_bytes(),
                    ABSURD_HEADER_VALUES[i % ABSURD_HEADER_VALUES.len()],
                    "{name}"
                );
            }
            assert_eq!(r.headers["x-ratelimit-reset-requests"], "1e23");
            assert_eq!(
                r.headers["x-ratelimit-reset-tokens"],
                "18446744073709551616"
            );
            assert!(r.headers["retry-after"].to_str().is_err(), "obs-text");
            let s = said(flavor, &r, stream).unwrap();
            assert!(s.complete && !s.text.is_empty(), "otherwise a good answer");
            assert_eq!(sim.counters().fault(FaultKind::AbsurdHeaders), 1);
        }
    }
}

#[tokio::test]
async fn absurd_headers_with_one_value_or_thousands_of_headers() {
    let sim = sim(Flavor::Anthropic).await;
    let admin = format!("{}/_sim/faults", sim.base_url());
    let c = client();
    let set = |v: Value| {
        let c = c.clone();
        let admin = admin.clone();
        async move {
            let r = send(&c, Method::POST, &admin, Some(&v)).await.unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    set(json!({"kind": "absurd_headers", "value": "ñ-5", "count": 3})).await;
    let r = post(&c, &sim.completion_url(), &anthropic_messages(false)).await;
    assert_eq!(r.status, 200);
    for name in ABSURD_HEADER_NAMES {
        assert_eq!(r.headers[name].as_bytes(), "ñ-5".as_bytes());
    }
    assert_eq!(r.headers["x-sim-filler-2"].as_bytes(), "ñ-5".as_bytes());
    assert!(!r.headers.contains_key("x-sim-filler-3"));

    // By default, a few hundred headers: more than hyper's client accepts.
    set(json!({"kind": "absurd_headers"})).await;
    let refused = send(
        &c,
        Method::POST,
        &sim.completion_url(),
        Some(&anthropic_messages(false)),
    )
    .await;
    assert!(refused.is_err(), "too many headers for a default client");
    let mut b = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    b.http1_max_headers(5000);
    let lenient: HttpClient = b.build_http();
    set(json!({"kind": "absurd_headers", "count": 3000})).await;
    let r = post(&lenient, &sim.completion_url(), &anthropic_messages(false)).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.len() > 3000, "{}", r.headers.len());
    assert_eq!(
        r.headers["x-sim-filler-2999"],
        ABSURD_HEADER_VALUES[2999 % 7]
    );
}

#[tokio::test]
async fn every_new_fault_is_scriptable_and_switchable_over_http() {
    let sim = sim(Flavor::OpenAi).await;
    let c = client();
    let admin = format!("{}/_sim/faults", sim.base_url());
    let specs = json!([
        {"kind": "credential", "limit": 1},
        {"kind": "credential", "status": 403, "limit": 1},
        {"kind": "billing", "shape": "payment_required", "limit": 1},
        {"kind": "html_page", "limit": 1},
        {"kind": "empty_body", "limit": 1},
        {"kind": "reset_after", "after_events": 0, "after_bytes": 3, "limit": 1},
        {"kind": "absurd_headers", "value": "NaN", "count": 0, "limit": 1},
        {"kind": "drip", "interval": "1ms", "limit": 1},
        {"kind": "stall", "after_bytes": 4, "limit": 1},
    ]);
    let r = send(&c, Method::POST, &admin, Some(&specs)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let listed = r.json();
    assert_eq!(listed[0]["status"], 401);
    assert_eq!(listed[7]["interval"], "1ms");
    assert_eq!(listed[8]["after_events"], 1);

    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = post(&c, &sim.completion_url(), &openai_chat(false)).await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [401, 403, 402, 200, 200, 200, 200, 200]);
    // The last one stalls.
    let res = open(&c, &sim, false).await;
    let mut body = res.into_body();
    let mut got = Vec::new();
    read_until(&mut body, &mut got, |b| b.len() >= 4).await;
    assert!(silent_for(&mut body, Duration::from_millis(300)).await);
    let k = sim.counters();
    for kind in [
        FaultKind::Billing,
        FaultKind::HtmlPage,
        FaultKind::EmptyBody,
        FaultKind::ResetAfter,
        FaultKind::AbsurdHeaders,
        FaultKind::Drip,
        FaultKind::Stall,
    ] {
        assert_eq!(k.fault(kind), 1, "{kind}");
    }
    assert_eq!(k.fault(FaultKind::Credential), 2);

    let bad = json!({"kind": "credential", "status": 500});
    let r = send(&c, Method::POST, &admin, Some(&bad)).await.unwrap();
    assert_eq!(r.status, 400);
}
