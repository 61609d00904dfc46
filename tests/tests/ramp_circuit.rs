//! Outage → recovery → ramp → full share, against simulated providers over real
//! loopback HTTP, with the real circuit breaker below the ramp and a minimal
//! fallback to a second provider in front. The caller never sees an error.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, sleep};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_failover_circuit::{CircuitBreakerLayer, CircuitConfig};
use tower_failover_core::{CircuitState, Health, HealthEventKind};
use tower_failover_ramp::{ProbeConfig, Prober, RampConfig, RampLayer, Step};
use tower_failover_sim::{Fault, FaultSpec, Flavor, Sim};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn completion(url: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    Primary,
    Backup,
}

/// Tries the primary stack, and on anything but a success (a shed request, an
/// open circuit, a 503) the backup provider. Errs only if the backup fails too.
async fn call<S, B>(
    primary: &mut S,
    primary_url: &str,
    backup: &HttpClient,
    backup_url: &str,
) -> Result<Served, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>, Error = BoxError>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    if let Ok(res) = primary.ready().await?.call(completion(primary_url)).await {
        let ok = res.status() == StatusCode::OK;
        res.into_body().collect().await.map_err(Into::into)?;
        if ok {
            return Ok(Served::Primary);
        }
    }
    let res = backup.request(completion(backup_url)).await?;
    let status = res.status();
    res.into_body().collect().await?;
    if status == StatusCode::OK {
        Ok(Served::Backup)
    } else {
        Err(format!("backup answered {status}").into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_recovery_ramp_full_share_without_caller_errors() {
    let primary_sim = Sim::builder(Flavor::OpenAi)
        .name("primary")
        .seed(1)
        .start()
        .await
        .unwrap();
    let backup_sim = Sim::builder(Flavor::OpenAi)
        .name("backup")
        .seed(2)
        .start()
        .await
        .unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let primary_url = primary_sim.completion_url();
    let backup_url = backup_sim.completion_url();

    let health = Health::standalone("primary", "gpt-4o-mini");
    let mut events = health.subscribe();
    // A long breaker cooldown: only a probe can bring the provider back quickly.
    let circuit = CircuitBreakerLayer::with_config(
        health.clone(),
        CircuitConfig::default()
            .consecutive_failures(3)
            .cooldown(Duration::from_secs(20), Duration::from_secs(40))
            .jitter(0.0)
            .half_open(1, 1)
            .seed(1),
    )
    .unwrap();
    let step = Duration::from_millis(200);
    let ramp_config = RampConfig::default()
        .steps([0.05, 0.25, 0.5, 1.0].map(|share| Step::new(share, step)))
        .min_requests(5)
        .min_sample(5)
        .check_interval(Duration::from_millis(20))
        .seed(7);
    let probe = ProbeConfig::default()
        .request("GET", format!("{}/v1/models", primary_sim.base_url()))
        .interval(Duration::from_millis(50))
        .timeout(Duration::from_secs(1));
    let ramp = RampLayer::with_config(health.clone(), ramp_config)
        .unwrap()
        .with_prober(Prober::new(client.clone(), &probe).unwrap());
    let mut primary = ramp.layer(circuit.layer(client.clone().map_err(BoxError::from)));

    let mut caller_errors = 0;
    let mut send = async |primary: &mut _| -> Served {
        match call(primary, &primary_url, &client, &backup_url).await {
            Ok(served) => served,
            Err(e) => {
                eprintln!("caller error: {e}");
                caller_errors += 1;
                Served::Backup
            }
        }
    };

    // Healthy: everything goes to the primary.
    for _ in 0..20 {
        assert_eq!(send(&mut primary).await, Served::Primary);
    }

    // Outage: the breaker opens after three 503s; the backup takes over.
    primary_sim
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    for _ in 0..50 {
        send(&mut primary).await;
    }
    assert_eq!(health.circuit(), CircuitState::Open);
    let outage_calls = primary_sim.counters().total();

    // Recovery: a probe notices, the breaker's half-open trial succeeds, the ramp
    // starts; all within a fraction of the breaker's 20 s cooldown.
    primary_sim.clear_faults();
    let recovered = Instant::now();
    // Bounds are loose for loaded machines but under the breaker's 20 s cooldown
    // (counted from the trip, earlier still): only a probe can start the ramp here.
    let deadline = recovered + Duration::from_secs(18);
    let mut by_step: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    while health.ramp_step().is_none() && Instant::now() < deadline {
        send(&mut primary).await;
        sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(health.ramp_step(), Some(0), "the ramp started");
    assert!(Instant::now() - recovered < Duration::from_secs(18));

    // The ramp: count what the primary got at each step.
    while health.ramp_step().is_some() && Instant::now() < deadline + Duration::from_secs(20) {
        let before = health.ramp_step();
        let served = send(&mut primary).await;
        if let Some(s) = before.filter(|_| health.ramp_step() == before) {
            let e = by_step.entry(s).or_default();
            e.0 += 1;
            e.1 += u64::from(served == Served::Primary);
        }
    }
    assert_eq!(health.ramp_step(), None, "the ramp completed");
    assert_eq!(health.ramp_share(), 1.0);
    for (step, share) in [(0u32, 0.05), (1, 0.25), (2, 0.5), (3, 1.0)] {
        let (offered, primary_got) = by_step[&step];
        let want = offered as f64 * share;
        assert!(
            (primary_got as f64 - want).abs() <= 4.0,
            "step {step}: primary got {primary_got} of {offered}, want about {want}"
        );
        assert!(
            primary_got >= 5,
            "step {step} verified on at least min_requests"
        );
    }

    // Full share again.
    for _ in 0..20 {
        assert_eq!(send(&mut primary).await, Served::Primary);
    }
    assert_eq!(caller_errors, 0, "no caller ever saw an error");
    assert!(primary_sim.counters().total() > outage_calls);

    let mut ramp_events = Vec::new();
    let mut probes_passed = 0;
    while let Ok(ev) = events.try_recv() {
        match ev.kind {
            HealthEventKind::Probe { ok: true } => probes_passed += 1,
            k @ (HealthEventKind::RampStep { .. }
            | HealthEventKind::RampRolledBack { .. }
            | HealthEventKind::RampCompleted) => ramp_events.push(k),
            _ => {}
        }
    }
    assert!(probes_passed >= 1, "a probe brought it back");
    assert_eq!(
        ramp_events,
        vec![
            HealthEventKind::RampStep {
                step: 0,
                share: 0.05
            },
            HealthEventKind::RampStep {
                step: 1,
                share: 0.25
            },
            HealthEventKind::RampStep {
                step: 2,
                share: 0.5
            },
            HealthEventKind::RampStep {
                step: 3,
                share: 1.0
            },
            HealthEventKind::RampCompleted,
        ]
    );
    primary_sim.shutdown().await;
    backup_sim.shutdown().await;
}

/// Through `Stack::from_config`: at traffic too low to bring a step its
/// `min_requests` (here out of reach: 1,000), the ramp still ends, each step after
/// its hold and `quiet_wait`, as none of the few requests it saw failed. Before, a
/// recovered provider stayed at its first share until traffic brought the minimum
/// (hours at the default 20 a step and one request a minute). Times are scaled
/// down; the only bound is a generous deadline, met many times over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_low_traffic_the_stack_s_ramp_ends_after_each_step_s_quiet_wait() {
    let primary = Sim::builder(Flavor::OpenAi)
        .name("primary")
        .seed(3)
        .start()
        .await
        .unwrap();
    let backup = Sim::builder(Flavor::OpenAi)
        .name("backup")
        .seed(4)
        .start()
        .await
        .unwrap();
    let text = format!(
        "router = \"fallback\"\nretry = false\nprobe = false\n\
         [circuit]\nconsecutive_failures = 2\ncooldown = \"100ms\"\njitter = 0.0\n\
         [ramp]\nmin_requests = 1000\nquiet_wait = \"150ms\"\ncheck_interval = \"20ms\"\n\
         schedule = {{ steps = [{{ share = 0.05, hold = \"100ms\" }}, {{ share = 0.5, hold = \"100ms\" }}, {{ share = 1.0, hold = \"100ms\" }}] }}\n\
         [[providers]]\nname = \"primary\"\nmodel = \"gpt-4o-mini\"\nbase_url = \"{}/v1\"\npriority = 0\n\
         [[providers]]\nname = \"backup\"\nmodel = \"gpt-4o-mini\"\nbase_url = \"{}/v1\"\npriority = 1\n",
        primary.base_url(),
        backup.base_url()
    );
    let config = tower_failover::Config::from_toml_str(&text).unwrap();
    let stack = tower_failover::Stack::from_config(&config)
        .unwrap()
        .build()
        .unwrap();
    let health = stack.handle().provider("primary", "gpt-4o-mini").unwrap();
    let ask = || async {
        let req = Request::post("http://stack.invalid/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(BODY.as_bytes())))
            .unwrap();
        let res = stack
            .clone()
            .oneshot(req)
            .await
            .expect("the backup answers");
        assert_eq!(res.status(), StatusCode::OK);
        // A 2xx is judged when its body ends.
        res.into_body().collect().await.expect("a whole answer");
    };

    primary
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    while health.circuit() != CircuitState::Open {
        ask().await;
    }
    let mut events = health.subscribe();
    primary.clear_faults();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ramp = Vec::new();
    // A request every 50 ms: a handful a step, far from 1,000.
    while Instant::now() < deadline && ramp.last() != Some(&HealthEventKind::RampCompleted) {
        ask().await;
        sleep(Duration::from_millis(50)).await;
        while let Ok(ev) = events.try_recv() {
            if let k @ (HealthEventKind::RampStep { .. }
            | HealthEventKind::RampRolledBack { .. }
            | HealthEventKind::RampCompleted) = ev.kind
            {
                ramp.push(k);
            }
        }
    }
    let step = |step, share| HealthEventKind::RampStep { step, share };
    assert_eq!(
        ramp,
        [
            step(0, 0.05),
            step(1, 0.5),
            step(2, 1.0),
            HealthEventKind::RampCompleted
        ]
    );
    assert_eq!(health.ramp_step(), None, "the ramp ended");
    assert_eq!(health.ramp_share(), 1.0);
}
