//! Routing by the requested model, over real loopback HTTP through the gateway in
//! front of simulated providers: each listed model is served by an entry that
//! serves it, a group fails over inside itself and then to its declared fallback,
//! an unknown model is a 404, tools and context windows filter the candidates.
//! Plus the same group failover through `Stack::from_config` alone.

mod common;

use common::{Answer, Running, start};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::ServiceExt;
use tower_failover::sim::{Fault, FaultSpec, Flavor, Sim};
use tower_failover::{Config, Stack};
use tower_failover_gateway::SERVED_BY;

impl Running {
    async fn chat(&self, body: serde_json::Value) -> Answer {
        self.send("POST", "/v1/chat/completions", body.to_string())
            .await
    }
}

fn ask(model: &str) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello"}],
    })
}

async fn sim(flavor: Flavor, name: &str, seed: u64) -> Sim {
    Sim::builder(flavor)
        .name(name)
        .seed(seed)
        .ttft(Duration::from_millis(1))
        .token_interval(Duration::from_millis(1))
        .start()
        .await
        .unwrap()
}

/// The providers: two entries of the `gpt-4o-mini` group on two OpenAI-compatible
/// sims (`east` without tool support and with a small context window, `west` with
/// both), and `claude-haiku-4-5` (alias `haiku`) on an Anthropic sim as the
/// group's declared fallback.
struct Fleet {
    east: Sim,
    west: Sim,
    claude: Sim,
}

const EAST: &str = "east/gpt-4o-mini";
const WEST: &str = "west/gpt-4o-mini";
const CLAUDE: &str = "anthropic/claude-haiku-4-5";

impl Fleet {
    async fn start() -> Fleet {
        Fleet {
            east: sim(Flavor::OpenAi, "east", 1).await,
            west: sim(Flavor::OpenAi, "west", 2).await,
            claude: sim(Flavor::Anthropic, "anthropic", 3).await,
        }
    }

    fn toml(&self, router: &str) -> String {
        format!(
            r#"
            router = "{router}"
            deadline = "10s"

            [models."gpt-4o-mini"]
            fallbacks = ["claude-haiku-4-5"]

            [[providers]]
            name = "east"
            model = "gpt-4o-mini"
            kind = "openai"
            base_url = "{}/v1"
            tools = false
            context_window = 1000

            [[providers]]
            name = "west"
            model = "gpt-4o-mini"
            kind = "openai"
            base_url = "{}/v1"
            context_window = 128000

            [[providers]]
            name = "anthropic"
            model = "claude-haiku-4-5"
            aliases = ["haiku"]
            kind = "anthropic"
            base_url = "{}"
            "#,
            self.east.base_url(),
            self.west.base_url(),
            self.claude.base_url(),
        )
    }

    fn config(&self) -> Config {
        Config::from_toml_str(&self.toml("balance")).expect("a valid configuration")
    }

    fn down(sim: &Sim) {
        sim.set_faults([FaultSpec::always(Fault::Status(503))])
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listed_model_is_answered_by_an_entry_that_serves_it() {
    let fleet = Fleet::start().await;
    let config = fleet.config();
    let gw = start(&config).await;

    // Who may answer each name: the entries whose model or alias it is.
    let mut servers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in &config.providers {
        for name in std::iter::once(&p.model).chain(&p.aliases) {
            servers
                .entry(name.clone())
                .or_default()
                .insert(format!("{}/{}", p.name, p.model));
        }
    }

    let list = gw.send("GET", "/v1/models", "").await;
    assert_eq!(list.status, StatusCode::OK);
    let list: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let listed: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(listed.len(), ids.len(), "each model listed once: {ids:?}");
    assert_eq!(
        listed,
        servers.keys().map(String::as_str).collect::<BTreeSet<_>>()
    );

    let mut answered_by = BTreeSet::new();
    for id in &ids {
        for _ in 0..6 {
            let a = gw.chat(ask(id)).await;
            assert_eq!(a.status, StatusCode::OK, "{id}: {}", a.body);
            assert!(
                servers[*id].contains(a.served_by()),
                "{id} answered by {}",
                a.served_by()
            );
            answered_by.insert(a.served_by().to_owned());
        }
    }
    assert!(answered_by.contains(CLAUDE));
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_outage_fails_over_inside_the_group_then_to_the_fallback() {
    let fleet = Fleet::start().await;
    let gw = start(&fleet.config()).await;

    // One member down: the other member of the group answers, not the fallback.
    Fleet::down(&fleet.east);
    for _ in 0..12 {
        let a = gw.chat(ask("gpt-4o-mini")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.served_by(), WEST);
    }
    assert_eq!(fleet.claude.counters().received, 0);

    // The whole group down: its declared fallback answers.
    Fleet::down(&fleet.west);
    for _ in 0..8 {
        let a = gw.chat(ask("gpt-4o-mini")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.served_by(), CLAUDE);
    }

    // The fallback down too: every provider failed, a 503 (not a 404).
    Fleet::down(&fleet.claude);
    let a = gw.chat(ask("gpt-4o-mini")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);

    // No fallback is declared for claude's group: gpt-4o-mini never answers for it
    // (recovered, it would be available).
    fleet.east.set_faults([]).unwrap();
    fleet.west.set_faults([]).unwrap();
    let before = fleet.east.counters().received + fleet.west.counters().received;
    let a = gw.chat(ask("haiku")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(
        fleet.east.counters().received + fleet.west.counters().received,
        before
    );
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_is_a_404_model_not_found() {
    let fleet = Fleet::start().await;
    let gw = start(&fleet.config()).await;
    let a = gw.chat(ask("gpt-5-ultra")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": {
            "message": "The model `gpt-5-ultra` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }})
    );
    let sent = fleet.east.counters().received
        + fleet.west.counters().received
        + fleet.claude.counters().received;
    assert_eq!(sent, 0, "no provider is asked about an unknown model");

    // The `x-failover-model` header names the model over the body's.
    let req = Request::post(format!("http://{}/v1/chat/completions", gw.addr))
        .header("content-type", "application/json")
        .header("x-failover-model", "haiku")
        .body(Full::new(Bytes::from(ask("gpt-4o-mini").to_string())))
        .unwrap();
    let res = gw.client.request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[SERVED_BY], CLAUDE);
    gw.shutdown().await.unwrap();
}

/// A test double that answers with its own name.
fn named(name: &'static str) -> tower_failover::ProviderDef {
    let svc = tower::service_fn(
        move |_req: http::Request<tower_failover::replay::ReplayBody>| async move {
            Ok::<_, tower::BoxError>(
                http::Response::builder()
                    .header("content-type", "application/json")
                    .header("x-from", name)
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .unwrap(),
            )
        },
    );
    tower_failover::ProviderDef::new(name, name, svc)
}

#[tokio::test]
async fn requests_without_a_model_go_to_the_default_group_or_anywhere() {
    let from = |res: http::Response<tower_failover::BoxBody>| {
        res.headers()["x-from"].to_str().unwrap().to_owned()
    };
    let bare = || {
        http::Request::post("/")
            .body(Full::new(Bytes::from_static(b"{\"messages\":[]}")))
            .unwrap()
    };
    // With a default model: always its group.
    let stack = Stack::builder()
        .validate(tower_failover::Slot::Off)
        .provider(named("a"))
        .provider(named("b"))
        .default_model(Some("b".into()))
        .build()
        .unwrap();
    for _ in 0..10 {
        assert_eq!(from(stack.clone().oneshot(bare()).await.unwrap()), "b");
    }
    // Without one: any provider (both are reached).
    let stack = Stack::builder()
        .validate(tower_failover::Slot::Off)
        .provider(named("a"))
        .provider(named("b"))
        .balance(
            tower_failover::balance::BalanceConfig::default()
                .policy(tower_failover::balance::Policy::RoundRobin),
        )
        .build()
        .unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        seen.insert(from(stack.clone().oneshot(bare()).await.unwrap()));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // An unknown default is refused at build time, naming the field.
    let err = Stack::builder()
        .provider(named("a"))
        .default_model(Some("z".into()))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "default_model");
    let err = Stack::builder()
        .provider(named("a"))
        .model_fallbacks("a", ["z"])
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "models.\"a\".fallbacks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_and_long_prompts_skip_entries_that_cannot_take_them() {
    let fleet = Fleet::start().await;
    let gw = start(&fleet.config()).await;

    // With tools: never `east` (tools = false).
    let mut with_tools = ask("gpt-4o-mini");
    with_tools["tools"] = serde_json::json!([{
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }]);
    for _ in 0..12 {
        let a = gw.chat(with_tools.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.served_by(), WEST);
    }
    assert_eq!(fleet.east.counters().received, 0);

    // A prompt of about 2,500 tokens (10 kB at 4 bytes a token): never `east`
    // (context_window = 1000).
    let mut long = ask("gpt-4o-mini");
    long["messages"][0]["content"] = "word ".repeat(2_000).into();
    for _ in 0..12 {
        let a = gw.chat(long.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.served_by(), WEST);
    }
    assert_eq!(fleet.east.counters().received, 0);

    // With `west` down: a short request without tools is `east`'s to serve, but
    // one with tools (or a long prompt) moves on to the group's fallback instead.
    Fleet::down(&fleet.west);
    for _ in 0..4 {
        let a = gw.chat(ask("gpt-4o-mini")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.served_by(), EAST);
    }
    for body in [with_tools, long] {
        let east = fleet.east.counters().received;
        let a = gw.chat(body).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.served_by(), CLAUDE);
        assert_eq!(fleet.east.counters().received, east);
    }
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_from_config_fails_over_inside_the_group_then_along_fallbacks() {
    let fleet = Fleet::start().await;
    for router in ["balance", "fallback"] {
        let config = Config::from_toml_str(&fleet.toml(router)).unwrap();
        let stack = Stack::from_config(&config).unwrap().build().unwrap();
        let call = |model: &'static str| {
            let stack = stack.clone();
            async move {
                let req = http::Request::post("/v1/chat/completions")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(ask(model).to_string())))
                    .unwrap();
                stack.oneshot(req).await
            }
        };
        let counts = |s: &Sim| s.counters().received;
        for s in [&fleet.east, &fleet.west, &fleet.claude] {
            s.set_faults([]).unwrap();
        }
        let (w0, c0) = (counts(&fleet.west), counts(&fleet.claude));

        Fleet::down(&fleet.east);
        for _ in 0..6 {
            let res = call("gpt-4o-mini").await.expect("the group's other member");
            assert_eq!(res.status(), StatusCode::OK, "{router}");
        }
        assert_eq!(counts(&fleet.claude), c0, "{router}: fallback not needed");
        assert!(counts(&fleet.west) >= w0 + 6, "{router}");

        Fleet::down(&fleet.west);
        let served = counts(&fleet.claude);
        for _ in 0..4 {
            let res = call("gpt-4o-mini").await.expect("the fallback group");
            assert_eq!(res.status(), StatusCode::OK, "{router}");
        }
        assert_eq!(counts(&fleet.claude), served + 4, "{router}");

        // An unknown model is a typed error, before any provider is called.
        let before = counts(&fleet.east) + counts(&fleet.west) + counts(&fleet.claude);
        let err = call("nope").await.unwrap_err();
        let nf = err
            .downcast_ref::<tower_failover::ModelNotFound>()
            .expect("ModelNotFound");
        assert_eq!(nf.model(), "nope");
        assert_eq!(
            counts(&fleet.east) + counts(&fleet.west) + counts(&fleet.claude),
            before
        );
    }
}

#[test]
fn model_names_in_the_configuration_must_be_served() {
    let base = r#"
        [[providers]]
        name = "openai"
        model = "gpt-4o-mini"
        kind = "openai"
        aliases = ["mini"]
    "#;
    let with = |extra: &str| Config::from_toml_str(&format!("{extra}\n{base}"));
    with("default_model = \"mini\"").expect("an alias is a served name");
    with("[models.mini]\nfallbacks = []").expect("an alias has a group");
    let err = with("default_model = \"gpt-5\"").unwrap_err();
    assert_eq!(err.field(), "default_model", "{err}");
    let err = with("[models.\"gpt-5\"]\nfallbacks = []").unwrap_err();
    assert_eq!(err.field(), "models.\"gpt-5\"", "{err}");
    let err = with("[models.\"gpt-4o-mini\"]\nfallbacks = [\"claude\"]").unwrap_err();
    assert_eq!(err.field(), "models.\"gpt-4o-mini\".fallbacks", "{err}");
    assert!(err.to_string().contains("claude"), "{err}");
    let err = with("[models.mini]\nfallbacks = [\"mini\"]").unwrap_err();
    assert!(err.to_string().contains("itself"), "{err}");
    let err = with("[models.\"gpt-4o-mini\"]\nfallback = [\"mini\"]").unwrap_err();
    assert!(err.to_string().contains("fallback"), "{err}");
}

/// A test double answering `400` with a typed hint, as the provider adapters mark a
/// context window exceeded or a content-policy refusal.
fn refusing(name: &'static str, hint: tower_failover::ErrorHint) -> tower_failover::ProviderDef {
    let svc = tower::service_fn(
        move |_req: http::Request<tower_failover::replay::ReplayBody>| async move {
            let mut res = http::Response::builder()
                .status(400)
                .header("x-from", name)
                .body(Full::new(Bytes::from_static(b"{\"error\":{}}")))
                .unwrap();
            res.extensions_mut().insert(hint);
            Ok::<_, tower::BoxError>(res)
        },
    );
    tower_failover::ProviderDef::new(name, name, svc)
}

#[tokio::test]
async fn typed_refusals_move_along_the_group_fallbacks() {
    use tower_failover::ErrorHint;
    let stack = |hint| {
        Stack::builder()
            .validate(tower_failover::Slot::Off)
            .provider(refusing("small", hint))
            .provider(named("big"))
            .model_fallbacks("small", ["big"])
            .build()
            .unwrap()
    };
    let ask_small = || {
        http::Request::post("/")
            .body(Full::new(Bytes::from(ask("small").to_string())))
            .unwrap()
    };
    for hint in [ErrorHint::ContextWindowExceeded, ErrorHint::ContentPolicy] {
        let res = stack(hint).oneshot(ask_small()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{hint:?}");
        assert_eq!(res.headers()["x-from"], "big");
    }
    // Without a fallback group, the refusal is the answer.
    let alone = Stack::builder()
        .validate(tower_failover::Slot::Off)
        .provider(refusing("small", ErrorHint::ContextWindowExceeded))
        .provider(named("big"))
        .build()
        .unwrap();
    let res = alone.oneshot(ask_small()).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["x-from"], "small");
}
