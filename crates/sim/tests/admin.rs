//! The admin endpoint (`/_sim/...`) on the sim's own listener.
mod common;

use common::*;
use http::Method;
use serde_json::json;
use tower_failover_sim::{Counters, Fault, FaultSpec, Flavor};

#[tokio::test]
async fn faults_can_be_set_added_listed_and_cleared_over_http() {
    let sim = sim(Flavor::OpenAi).await;
    let c = client();
    let faults = format!("{}/_sim/faults", sim.base_url());
    let body = json!([{"kind": "status", "status": 503, "until": "1h"}, {"kind": "slowdown", "factor": 2}]);
    let r = send(&c, Method::POST, &faults, Some(&body)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    assert_eq!(sim.handle().faults()[0].fault, Fault::Status(503));
    assert_eq!(
        post(&c, &sim.completion_url(), &openai_chat(false))
            .await
            .status,
        503
    );

    let one = json!({"kind": "rate_limit", "retry_after": 3, "retry_after_format": "http_date", "fraction": 0.5});
    let r = send(&c, Method::POST, &format!("{faults}/add"), Some(&one))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(get(&c, &faults).await.json().as_array().unwrap().len(), 3);

    let r = send(&c, Method::DELETE, &faults, None).await.unwrap();
    assert_eq!(r.json(), json!([]));
    assert!(sim.handle().faults().is_empty());
    assert_eq!(
        post(&c, &sim.completion_url(), &openai_chat(false))
            .await
            .status,
        200
    );

    // A single object replaces the list too.
    let r = send(
        &c,
        Method::PUT,
        &faults,
        Some(&json!({"kind": "hang", "limit": 1})),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        sim.handle().faults(),
        vec![FaultSpec::new(Fault::Hang).limit(1)]
    );
}

#[tokio::test]
async fn bad_admin_input_gets_a_clear_400() {
    let sim = sim(Flavor::Anthropic).await;
    let c = client();
    let faults = format!("{}/_sim/faults", sim.base_url());
    let r = send(
        &c,
        Method::POST,
        &faults,
        Some(&json!({"kind": "meltdown"})),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("meltdown"),
        "{}",
        r.text()
    );
    let r = send(
        &c,
        Method::POST,
        &faults,
        Some(&json!({"kind": "hang", "fraction": 2})),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("fraction"),
        "{}",
        r.text()
    );
    let r = send(
        &c,
        Method::POST,
        &faults,
        Some(&json!([{"kind": "hang", "from": "2s", "until": "1s"}])),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("until"));
    assert!(sim.handle().faults().is_empty(), "nothing applied");
    let r = get(&c, &format!("{}/_sim/nope", sim.base_url())).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("/_sim/faults"));
}

#[tokio::test]
async fn counters_info_and_quota_over_http() {
    let sim = sim(Flavor::OpenAi).await;
    let c = client();
    post(&c, &sim.completion_url(), &openai_chat(false)).await;
    let counters_url = format!("{}/_sim/counters", sim.base_url());
    let k: Counters = serde_json::from_slice(&get(&c, &counters_url).await.body).unwrap();
    assert_eq!(k, sim.counters());
    assert_eq!(k.received, 1, "admin requests are not counted");
    assert_eq!(k.by_status.get(&200), Some(&1));

    let info = get(&c, &format!("{}/_sim/info", sim.base_url()))
        .await
        .json();
    assert_eq!(info["name"], "openai");
    assert_eq!(info["flavor"], "openai");
    assert_eq!(info["base_url"], sim.base_url());

    let r = send(
        &c,
        Method::PUT,
        &format!("{}/_sim/quota", sim.base_url()),
        Some(&json!({"requests_per_minute": 5, "tokens_per_minute": 50000})),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let r = post(&c, &sim.completion_url(), &openai_chat(false)).await;
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("5"));

    let r = send(&c, Method::DELETE, &counters_url, None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(sim.counters(), Counters::default());
}
