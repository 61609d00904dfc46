//! Every fault kind, for both wire formats, streaming and not, over real loopback HTTP.
mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::time::Instant;
use tower_failover_sim::{Fault, FaultKind, FaultSpec, Flavor, RetryAfter, Sim};

const REFUSAL: &str = "I'm sorry, but I can't help with that request.";

/// Run `check` for each flavor × streaming, against a sim with `fault` always on.
async fn each<F, Fut>(fault: Fault, check: F)
where
    F: Fn(Flavor, bool, Reply, Sim) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for flavor in FLAVORS {
        for stream in [false, true] {
            let sim = sim(flavor).await;
            sim.set_faults([FaultSpec::always(fault.clone())]).unwrap();
            let r = within(
                5,
                post(&client(), &sim.completion_url(), &request(flavor, stream)),
            )
            .await;
            check(flavor, stream, r, sim).await;
        }
    }
}

#[tokio::test]
async fn status_outages_use_the_provider_error_shape() {
    for status in [500u16, 502, 503, 529] {
        each(
            Fault::Status(status),
            |flavor, _stream, r, sim| async move {
                assert_eq!(r.status, status);
                assert_eq!(r.header("x-sim-fault"), Some("status"));
                let v = r.json();
                match flavor {
                    Flavor::OpenAi => assert_eq!(v["error"]["type"], "server_error"),
                    Flavor::Anthropic => {
                        assert_eq!(v["type"], "error");
                        let ty = if status == 529 {
                            "overloaded_error"
                        } else {
                            "api_error"
                        };
                        assert_eq!(v["error"]["type"], ty);
                    }
                }
                let c = sim.counters();
                assert_eq!(
                    (c.received, c.status(status), c.fault(FaultKind::Status)),
                    (1, 1, 1)
                );
                assert_eq!(c.completed, 0);
            },
        )
        .await;
    }
}

#[tokio::test]
async fn outages_apply_to_the_models_route_but_output_faults_do_not() {
    let sim = sim(Flavor::OpenAi).await;
    let c = client();
    let url = format!("{}/v1/models", sim.base_url());
    sim.set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    assert_eq!(get(&c, &url).await.status, 503);
    sim.set_faults([FaultSpec::always(Fault::MalformedJson)])
        .unwrap();
    let r = get(&c, &url).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "list");
    assert_eq!(sim.counters().fault(FaultKind::MalformedJson), 0);
}

#[tokio::test]
async fn rate_limit_with_retry_after_seconds() {
    each(
        Fault::RateLimit(RetryAfter::Seconds(7)),
        |flavor, _, r, sim| async move {
            assert_eq!(r.status, 429);
            assert_eq!(r.header("retry-after"), Some("7"));
            match flavor {
                Flavor::OpenAi => {
                    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
                    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
                    assert_eq!(r.header("x-ratelimit-reset-requests"), Some("7s"));
                }
                Flavor::Anthropic => {
                    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
                    assert_eq!(
                        r.header("anthropic-ratelimit-requests-remaining"),
                        Some("0")
                    );
                }
            }
            assert_eq!(sim.counters().fault(FaultKind::RateLimit), 1);
            assert_eq!(sim.counters().quota_limited, 0);
        },
    )
    .await;
}

#[tokio::test]
async fn rate_limit_with_retry_after_http_date() {
    each(
        Fault::RateLimit(RetryAfter::HttpDate(30)),
        |_, _, r, _| async move {
            assert_eq!(r.status, 429);
            let when = httpdate::parse_http_date(r.header("retry-after").unwrap()).unwrap();
            let ahead = when.duration_since(std::time::SystemTime::now()).unwrap();
            assert!(
                ahead > Duration::from_secs(25) && ahead <= Duration::from_secs(31),
                "{ahead:?}"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn rate_limit_without_retry_after_is_a_bare_429() {
    each(
        Fault::RateLimit(RetryAfter::Absent),
        |_, _, r, _| async move {
            assert_eq!(r.status, 429);
            assert_eq!(r.header("retry-after"), None);
            assert!(
                !r.headers.keys().any(|k| k.as_str().contains("ratelimit")),
                "{:?}",
                r.headers
            );
        },
    )
    .await;
}

#[tokio::test]
async fn malformed_json() {
    each(Fault::MalformedJson, |flavor, stream, r, sim| async move {
        assert_eq!(r.status, 200);
        assert!(r.body_error.is_none());
        let bad = said(flavor, &r, stream).unwrap_err();
        assert!(!bad.is_empty());
        if stream {
            // The other events still parse.
            let good = r
                .events()
                .iter()
                .filter(|(_, d)| serde_json::from_str::<Value>(d).is_ok())
                .count();
            assert!(good >= 3, "{good}");
        }
        assert_eq!(sim.counters().fault(FaultKind::MalformedJson), 1);
    })
    .await;
}

#[tokio::test]
async fn error_object_with_status_200() {
    each(Fault::ErrorObject, |flavor, stream, r, _| async move {
        assert_eq!(r.status, 200);
        let s = said(flavor, &r, stream).unwrap();
        let e = s.error.expect("an error object");
        assert!(e["message"].is_string());
        assert!(!s.complete || !stream);
        if flavor == Flavor::Anthropic && stream {
            assert_eq!(r.events().last().unwrap().0.as_deref(), Some("error"));
        }
    })
    .await;
}

#[tokio::test]
async fn truncated_streams_end_cleanly_after_n_events() {
    each(Fault::Truncate(3), |flavor, stream, r, _| async move {
        assert_eq!(r.status, 200);
        assert!(r.body_error.is_none(), "a clean end, not a reset");
        if stream {
            assert_eq!(r.events().len(), 3);
            let s = said(flavor, &r, true).unwrap();
            assert!(!s.complete, "no [DONE] / message_stop");
            assert_eq!(s.finish, None);
        } else {
            assert!(said(flavor, &r, false).is_err(), "half a JSON body");
        }
    })
    .await;
}

#[tokio::test]
async fn refusal() {
    each(Fault::Refusal, |flavor, stream, r, _| async move {
        let s = said(flavor, &r, stream).unwrap();
        assert_eq!(s.text, REFUSAL);
        if flavor == Flavor::Anthropic {
            assert_eq!(s.finish.as_deref(), Some("refusal"));
        }
    })
    .await;
    // With OpenAI structured outputs, the refusal goes to its own field.
    for stream in [false, true] {
        let sim = sim(Flavor::OpenAi).await;
        sim.add_fault(Fault::Refusal).unwrap();
        let r = post(
            &client(),
            &sim.completion_url(),
            &json_request(Flavor::OpenAi, stream),
        )
        .await;
        let s = said(Flavor::OpenAi, &r, stream).unwrap();
        assert_eq!(s.refusal.as_deref(), Some(REFUSAL));
        assert!(s.text.is_empty());
        if !stream {
            assert!(s.no_content, "content is null");
        }
    }
}

#[tokio::test]
async fn wrong_schema_and_not_json() {
    for flavor in FLAVORS {
        for stream in [false, true] {
            let sim = sim(flavor).await;
            let c = client();
            let body = json_request(flavor, stream);
            let r = post(&c, &sim.completion_url(), &body).await;
            let good: Value =
                serde_json::from_str(&said(flavor, &r, stream).unwrap().text).unwrap();
            assert!(matches_city_schema(&good));

            sim.set_faults([FaultSpec::always(Fault::WrongSchema)])
                .unwrap();
            let r = post(&c, &sim.completion_url(), &body).await;
            let v: Value = serde_json::from_str(&said(flavor, &r, stream).unwrap().text).unwrap();
            assert_eq!(v, serde_json::json!({"wrong": true}));
            assert!(!matches_city_schema(&v));

            sim.set_faults([FaultSpec::always(Fault::NotJson)]).unwrap();
            let r = post(&c, &sim.completion_url(), &body).await;
            let text = said(flavor, &r, stream).unwrap().text;
            assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
            let k = sim.counters();
            assert_eq!(
                (k.fault(FaultKind::WrongSchema), k.fault(FaultKind::NotJson)),
                (1, 1)
            );
        }
    }
}

#[tokio::test]
async fn empty_content() {
    each(Fault::EmptyContent, |flavor, stream, r, _| async move {
        let s = said(flavor, &r, stream).unwrap();
        assert_eq!(s.text, "");
        assert!(s.complete);
        if !(stream && flavor == Flavor::OpenAi) {
            assert_eq!(s.output_tokens, Some(0));
        }
        if flavor == Flavor::Anthropic {
            assert!(s.no_content, "no content block at all");
        }
    })
    .await;
}

#[tokio::test]
async fn length() {
    each(Fault::Length, |flavor, stream, r, _| async move {
        let s = said(flavor, &r, stream).unwrap();
        let want = if flavor == Flavor::OpenAi {
            "length"
        } else {
            "max_tokens"
        };
        assert_eq!(s.finish.as_deref(), Some(want));
        assert!(!s.text.is_empty());
        assert!(s.complete);
    })
    .await;
}

#[tokio::test]
async fn reset_mid_body() {
    each(Fault::Reset, |flavor, stream, r, sim| async move {
        assert_eq!(r.status, 200, "headers arrive");
        assert!(r.body_error.is_some(), "then the body breaks");
        if stream {
            let events = r.events();
            assert!(!events.is_empty());
            assert!(!said(flavor, &r, true).is_ok_and(|s| s.complete));
        }
        assert_eq!(sim.counters().fault(FaultKind::Reset), 1);
    })
    .await;
}

#[tokio::test]
async fn hang_never_answers() {
    for flavor in FLAVORS {
        let sim = sim(flavor).await;
        sim.set_faults([FaultSpec::always(Fault::Hang)]).unwrap();
        let c = client();
        let res = tokio::time::timeout(
            Duration::from_millis(150),
            post(&c, &sim.completion_url(), &request(flavor, false)),
        )
        .await;
        assert!(res.is_err(), "the client's timeout fired");
        let k = sim.counters();
        assert_eq!(
            (k.received, k.answered, k.fault(FaultKind::Hang)),
            (1, 0, 1)
        );
        // Other requests still work once the fault is gone.
        sim.clear_faults();
        assert_eq!(
            within(5, post(&c, &sim.completion_url(), &request(flavor, false)))
                .await
                .status,
            200
        );
    }
}

#[tokio::test]
async fn slowdown_multiplies_time_to_first_token() {
    for flavor in FLAVORS {
        let sim = Sim::builder(flavor)
            .ttft(Duration::from_millis(20))
            .jitter(0.0)
            .start()
            .await
            .unwrap();
        sim.add_fault(Fault::Slowdown(5.0)).unwrap();
        let t = Instant::now();
        let r = post(&client(), &sim.completion_url(), &request(flavor, true)).await;
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-sim-fault"),
            None,
            "a slowdown alone is not an answer fault"
        );
        assert_eq!(sim.counters().fault(FaultKind::Slowdown), 1);
        assert_eq!(sim.counters().completed, 1, "slow, but a good answer");
    }
}

#[tokio::test]
async fn slowdowns_combine_with_other_faults() {
    let sim = Sim::builder(Flavor::OpenAi)
        .ttft(Duration::from_millis(10))
        .jitter(0.0)
        .start()
        .await
        .unwrap();
    sim.set_faults([
        FaultSpec::always(Fault::Slowdown(3.0)),
        FaultSpec::always(Fault::Length),
    ])
    .unwrap();
    let t = Instant::now();
    let r = post(&client(), &sim.completion_url(), &openai_chat(false)).await;
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(r.header("x-sim-fault"), Some("length"));
    let k = sim.counters();
    assert_eq!(
        (k.fault(FaultKind::Slowdown), k.fault(FaultKind::Length)),
        (1, 1)
    );
}

#[tokio::test]
async fn first_matching_fault_wins() {
    let sim = sim(Flavor::OpenAi).await;
    sim.set_faults([
        FaultSpec::new(Fault::Status(502)).limit(1),
        FaultSpec::always(Fault::Status(503)),
    ])
    .unwrap();
    let c = client();
    assert_eq!(
        post(&c, &sim.completion_url(), &openai_chat(false))
            .await
            .status,
        502
    );
    assert_eq!(
        post(&c, &sim.completion_url(), &openai_chat(false))
            .await
            .status,
        503
    );
    assert_eq!(sim.counters().fault(FaultKind::Status), 2);
}

#[tokio::test]
async fn windows_on_the_sim_clock() {
    let sim = sim(Flavor::Anthropic).await;
    let now = sim.handle().elapsed();
    sim.set_faults([
        FaultSpec::new(Fault::Status(529)).window(Duration::ZERO, now + Duration::from_millis(500)),
        FaultSpec::new(Fault::Status(500)).from(now + Duration::from_secs(3600)),
    ])
    .unwrap();
    let c = client();
    assert_eq!(
        post(&c, &sim.completion_url(), &anthropic_messages(false))
            .await
            .status,
        529
    );
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(
        post(&c, &sim.completion_url(), &anthropic_messages(false))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn limits_count_down() {
    let sim = sim(Flavor::OpenAi).await;
    sim.add_fault(FaultSpec::new(Fault::Status(500)).limit(3))
        .unwrap();
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            post(&c, &sim.completion_url(), &openai_chat(false))
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [500, 500, 500, 200, 200]);
}

#[tokio::test]
async fn fractions_are_seeded_and_deterministic() {
    let mut patterns = Vec::new();
    for seed in [5, 5, 6] {
        let sim = Sim::builder(Flavor::OpenAi)
            .seed(seed)
            .start()
            .await
            .unwrap();
        sim.add_fault(FaultSpec::new(Fault::Status(503)).fraction(0.5))
            .unwrap();
        let c = client();
        let mut p = Vec::new();
        for _ in 0..40 {
            p.push(
                post(&c, &sim.completion_url(), &openai_chat(false))
                    .await
                    .status
                    == 503,
            );
        }
        let n = p.iter().filter(|x| **x).count();
        assert!((10..=30).contains(&n), "{n} of 40 faulted");
        assert_eq!(sim.counters().status(503), n as u64);
        patterns.push(p);
    }
    assert_eq!(patterns[0], patterns[1]);
    assert_ne!(patterns[0], patterns[2]);
}

#[tokio::test]
async fn counters_reset() {
    let sim = sim(Flavor::OpenAi).await;
    sim.add_fault(FaultSpec::new(Fault::Status(500)).limit(1))
        .unwrap();
    let c = client();
    post(&c, &sim.completion_url(), &openai_chat(false)).await;
    post(&c, &sim.completion_url(), &openai_chat(true)).await;
    let k = sim.counters();
    assert_eq!(
        (k.total(), k.answered, k.faulted(), k.streamed, k.ok()),
        (2, 2, 1, 1, 1)
    );
    assert!(k.connections >= 1);
    sim.handle().reset_counters();
    assert_eq!(sim.counters(), Default::default());
}

#[tokio::test]
async fn stopping_a_sim_ends_hung_requests_over_h1_and_h2() {
    for h2 in [false, true] {
        let sim = sim(Flavor::OpenAi).await;
        sim.add_fault(Fault::Hang).unwrap();
        let c: HttpClient =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(h2)
                .build_http();
        let url = sim.completion_url();
        let pending = tokio::spawn(async move {
            send(&c, http::Method::POST, &url, Some(&openai_chat(false))).await
        });
        let h = sim.handle();
        within(2, async {
            while h.counters().received == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        sim.shutdown().await;
        let res = within(2, pending).await.unwrap();
        assert!(
            res.is_err(),
            "the hung request fails once the sim is gone (h2: {h2})"
        );
        assert_eq!(h.counters().answered, 0);
    }
}
