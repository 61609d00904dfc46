//! Real RPM/TPM enforcement and truthful rate-limit headers.
mod common;

use std::time::Duration;

use common::*;
use tower_failover_sim::{Flavor, Quota, Sim, duration::parse_duration};

#[tokio::test]
async fn requests_per_minute_are_enforced_with_truthful_headers() {
    let sim = Sim::builder(Flavor::OpenAi)
        .quota(Quota::new(3, 1_000_000))
        .start()
        .await
        .unwrap();
    let c = client();
    for left in ["2", "1", "0"] {
        let r = post(&c, &sim.completion_url(), &openai_chat(false)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(left));
    }
    let r = post(&c, &sim.completion_url(), &openai_chat(false)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    // One request per 20 s comes back; the whole bucket in a minute.
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((19..=20).contains(&retry), "{retry}");
    let reset = parse_duration(r.header("x-ratelimit-reset-requests").unwrap()).unwrap();
    assert!(
        reset > Duration::from_secs(59) && reset <= Duration::from_secs(60),
        "{reset:?}"
    );
    let v = r.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests per min")
    );
    let k = sim.counters();
    assert_eq!((k.quota_limited, k.status(429), k.ok()), (1, 1, 3));
}

#[tokio::test]
async fn tokens_per_minute_are_enforced() {
    let sim = Sim::builder(Flavor::OpenAi)
        .reply_words(20, 20)
        .quota(Quota::new(1000, 100))
        .start()
        .await
        .unwrap();
    let c = client();
    let mut used = 0;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = post(&c, &sim.completion_url(), &openai_chat(false)).await;
        statuses.push(r.status.as_u16());
        if r.status == 200 {
            used += r.json()["usage"]["total_tokens"].as_u64().unwrap();
            let remaining: u64 = r
                .header("x-ratelimit-remaining-tokens")
                .unwrap()
                .parse()
                .unwrap();
            // Refill during the test is a few tokens at most.
            assert!(
                remaining >= 100 - used && remaining <= 100 - used + 2,
                "{remaining} vs {used}"
            );
        } else {
            assert_eq!(r.json()["error"]["type"], "tokens");
            assert!(r.header("retry-after").is_some());
        }
    }
    assert_eq!(statuses[0], 200);
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        sim.counters().prompt_tokens + sim.counters().completion_tokens,
        used
    );
}

#[tokio::test]
async fn anthropic_headers_report_rfc3339_resets() {
    let sim = Sim::builder(Flavor::Anthropic)
        .quota(Quota::new(2, 100_000))
        .start()
        .await
        .unwrap();
    let c = client();
    post(&c, &sim.completion_url(), &anthropic_messages(false)).await;
    post(&c, &sim.completion_url(), &anthropic_messages(false)).await;
    let r = post(&c, &sim.completion_url(), &anthropic_messages(false)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(r.header("anthropic-ratelimit-requests-limit"), Some("2"));
    assert_eq!(
        r.header("anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    assert_eq!(r.header("retry-after"), Some("30"));
    let reset = r.header("anthropic-ratelimit-requests-reset").unwrap();
    // 60 s from now, to the second: compare with our own clock, formatted the same way.
    let secs = |t: &str| -> u64 {
        let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap();
        let hms: Vec<u64> = time.split(':').map(|x| x.parse().unwrap()).collect();
        let _ = date;
        hms[0] * 3600 + hms[1] * 60 + hms[2]
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400;
    let delta = (secs(reset) + 86_400 - now) % 86_400;
    assert!((59..=61).contains(&delta), "{reset}: {delta}s ahead");
}

#[tokio::test]
async fn the_quota_can_change_live() {
    let sim = Sim::builder(Flavor::OpenAi)
        .quota(Quota::new(1, 10_000))
        .start()
        .await
        .unwrap();
    let c = client();
    assert_eq!(
        post(&c, &sim.completion_url(), &openai_chat(false))
            .await
            .status,
        200
    );
    assert_eq!(
        post(&c, &sim.completion_url(), &openai_chat(false))
            .await
            .status,
        429
    );
    sim.handle().set_quota(Quota::new(10, 10_000)).unwrap();
    let r = post(&c, &sim.completion_url(), &openai_chat(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("9"));
    assert!(sim.handle().set_quota(Quota::new(0, 1)).is_err());
}
