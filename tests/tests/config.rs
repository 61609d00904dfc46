//! The facade's configuration: bad files are refused with the field and the reason,
//! good ones (including the gateway example's) are accepted, and secrets never show.

use tower_failover::{Config, Stack};

/// The error message for `text`, which must be refused.
fn refused(text: &str) -> String {
    match Config::from_toml_str(text) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

const OK_PROVIDER: &str = r#"
[[providers]]
name = "openai"
model = "gpt-4o-mini"
api_key = "sk-test-not-a-secret"
"#;

#[test]
fn refuses_bad_files_naming_the_field() {
    let cases: &[(&str, &str)] = &[
        // A filter the overflow router would ignore.
        (
            r#"
            router = "overflow"
            [[providers]]
            name = "small"
            model = "m"
            api_key = "sk-test-not-a-secret"
            tools = false
            "#,
            "providers[0].tools: the overflow router does not skip providers by tools",
        ),
        (
            r#"
            router = "overflow"
            [[providers]]
            name = "small"
            model = "m"
            api_key = "sk-test-not-a-secret"
            context_window = 8000
            "#,
            "providers[0].context_window: the overflow router does not skip providers",
        ),
        // No provider at all.
        (
            "router = \"balance\"\n",
            "providers: at least one provider is required",
        ),
        // A base URL that is not one.
        (
            r#"
            [[providers]]
            name = "openai"
            model = "gpt-4o-mini"
            [[providers]]
            name = "local"
            model = "llama"
            base_url = "localhost:8000/v1"
            "#,
            "providers[1].base_url: not a valid URL",
        ),
        (
            r#"
            [[providers]]
            name = "local"
            model = "llama"
            base_url = "ftp://example.com"
            "#,
            "providers[0].base_url: not a valid URL (the scheme must be http or https)",
        ),
        (
            r#"
            [[providers]]
            name = "local"
            model = "llama"
            base_url = "https://user:pw@example.com/v1"
            "#,
            "providers[0].base_url: must not contain credentials",
        ),
        // A typo in a provider's key is caught by the client's configuration.
        (
            r#"
            [[providers]]
            name = "openai"
            model = "gpt-4o-mini"
            bsae_url = "https://api.openai.com/v1"
            "#,
            "providers[0]: unknown field `bsae_url`",
        ),
        // And at the top level, with the line.
        (
            "circuti = false\n[[providers]]\nname = \"a\"\nmodel = \"b\"\n",
            "invalid TOML: unknown field `circuti`",
        ),
        (
            r#"
            [[providers]]
            name = "openai"
            model = "gpt-4o-mini"
            [[providers]]
            name = "openai"
            model = "gpt-4o-mini"
            "#,
            "providers[1]: openai/gpt-4o-mini is already providers[0]",
        ),
        (
            r#"
            [[providers]]
            name = ""
            model = "gpt-4o-mini"
            "#,
            "providers[0].name: must not be empty",
        ),
        (
            r#"
            [[providers]]
            name = "openai"
            model = "gpt-4o-mini"
            weight = 0
            "#,
            "providers[0].weight: 0 is not a number in (0, 1e9]",
        ),
        (
            r#"
            [[providers]]
            name = "openai"
            model = "gpt-4o-mini"
            price = { input_per_million = -1, output_per_million = 2 }
            "#,
            "providers[0].price.input_per_million: -1 is not a price",
        ),
        (
            r#"
            [[providers]]
            name = "openai"
            model = "gpt-4o-mini"
            kind = "gemini"
            "#,
            "providers[0]: unknown variant `gemini`",
        ),
        // Each layer's own validation, under its section's name.
        (
            &format!("[circuit]\nhalf_open_permits = 0\n{OK_PROVIDER}"),
            "circuit.half_open_permits:",
        ),
        (
            &format!("[ramp]\nerror_rate_factor = -1\n{OK_PROVIDER}"),
            "ramp.error_rate_factor:",
        ),
        (
            &format!("[balance]\nlatency_buffer = -1\n{OK_PROVIDER}"),
            "balance.latency_buffer: -1 is not a fraction in [0, 10]",
        ),
        (
            &format!("router = \"fallback\"\n[fallback]\nmax_attempts = 0\n{OK_PROVIDER}"),
            "fallback.max_attempts: must be at least 1",
        ),
        (
            &format!("[validate]\nmax_body = 0\n{OK_PROVIDER}"),
            "validate.max_body: must be at least 1 byte",
        ),
        (
            &format!("[retry_budget]\nratio = 100\n{OK_PROVIDER}"),
            "retry_budget.ratio: must be a number between 0 and 10",
        ),
        (
            &format!("deadline = \"0s\"\n{OK_PROVIDER}"),
            "deadline: must be above zero",
        ),
        (
            &format!("wait_queue = {{ capacity = 0 }}\n{OK_PROVIDER}"),
            "wait_queue.capacity: must be at least 1",
        ),
        (
            &format!("max_request_bytes = 0\n{OK_PROVIDER}"),
            "max_request_bytes: must be at least 1 byte",
        ),
        (
            &format!("[health]\nsuspect_factor = 0.5\n{OK_PROVIDER}"),
            "health.suspect_factor: must be a number from 1 to 1000",
        ),
        (
            &format!("[health]\nsuspect_floor = \"0s\"\n{OK_PROVIDER}"),
            "health.suspect_floor: must be above zero",
        ),
        // A per-provider override is named under its provider.
        (
            r#"
            [[providers]]
            name = "openai"
            model = "gpt-4o-mini"
            [[providers]]
            name = "anthropic"
            model = "claude-haiku-4-5"
            kind = "anthropic"
            circuit = { half_open_permits = 0 }
            "#,
            "providers[1].circuit.half_open_permits:",
        ),
        // A duration that is not one.
        (
            &format!("deadline = \"thirty seconds\"\n{OK_PROVIDER}"),
            "invalid TOML:",
        ),
        // Nothing is dropped silently: a router section for another router is
        // refused, naming it, and so are a router section's own timeouts.
        (
            &format!("router = \"fallback\"\n[balance]\nweighting = \"cost\"\n{OK_PROVIDER}"),
            "balance: this section configures router = \"balance\", but the router is \"fallback\"",
        ),
        (
            &format!("[fallback]\nmax_attempts = 2\n{OK_PROVIDER}"),
            "fallback: this section configures router = \"fallback\", but the router is \"balance\"",
        ),
        (
            &format!("router = \"fallback\"\n[overflow]\njitter = 0.2\n{OK_PROVIDER}"),
            "overflow: this section configures router = \"overflow\"",
        ),
        (
            &format!(
                "attempt_timeout = \"20s\"\n[balance]\nattempt_timeout = \"30s\"\n{OK_PROVIDER}"
            ),
            "balance.attempt_timeout: set once: the top-level `attempt_timeout` (every router) or this one",
        ),
        (
            &format!("ramp = false\n[probe]\ninterval = \"5s\"\n{OK_PROVIDER}"),
            "probe: probes run in the recovery ramp's task",
        ),
        // Every section validates itself, whichever router is chosen.
        (
            &format!("router = \"fallback\"\n[retry]\nmax_retries = 50\n{OK_PROVIDER}"),
            "retry.max_retries: must be at most 10",
        ),
        (
            &format!("router = \"fallback\"\n[retry]\nbackoff = {{ jitter = 2 }}\n{OK_PROVIDER}"),
            "retry.backoff.jitter: must be a fraction",
        ),
        (
            &format!("[hedge]\npercentile = 1.5\n{OK_PROVIDER}"),
            "hedge.percentile: must be a fraction in (0, 1)",
        ),
        (
            &format!("router = \"fallback\"\nhedge = true\n{OK_PROVIDER}"),
            "hedge: needs router = \"balance\"",
        ),
        (
            &format!("[probe]\ninterval = \"0s\"\n{OK_PROVIDER}"),
            "probe.interval: must not be zero",
        ),
        (
            &format!("[balance]\nerror_penalty = -1\n{OK_PROVIDER}"),
            "balance.error_penalty: -1 is not a number in [0, 1000]",
        ),
        (
            &format!("attempt_timeout = \"0s\"\n{OK_PROVIDER}"),
            "attempt_timeout: must be above zero",
        ),
        (
            &format!("wait_queue = {{ max_wait = \"0s\" }}\n{OK_PROVIDER}"),
            "wait_queue.max_wait: must be above zero",
        ),
        // A provider's own probes and retry are checked as the stack's are.
        (
            &format!("{OK_PROVIDER}ramp = false\nprobe = {{ interval = \"5s\" }}\n"),
            "providers[0].probe: probes run in the recovery ramp's task",
        ),
        (
            &format!("{OK_PROVIDER}retry = {{ max_retries = 50 }}\n"),
            "providers[0].retry.max_retries: must be at most 10",
        ),
        // A layer toggle that is neither a bool nor a table.
        (
            &format!("circuit = \"off\"\n{OK_PROVIDER}"),
            "true, false or a table of settings",
        ),
    ];
    for (text, expected) in cases {
        let message = refused(text);
        assert!(
            message.starts_with(expected) || message.contains(expected),
            "expected {expected:?}, got {message:?}"
        );
    }
}

#[test]
fn messages_say_what_to_fix() {
    let message = refused(
        r#"
        [[providers]]
        name = "local"
        model = "llama"
        base_url = "localhost:8000/v1"
        "#,
    );
    assert_eq!(
        message,
        r#"providers[0].base_url: not a valid URL (expected http://host or https://host): "localhost:8000/v1""#
    );
    let message = refused(&format!("[circuit]\nhalf_open_permits = 0\n{OK_PROVIDER}"));
    assert_eq!(message, "circuit.half_open_permits: must be in 1..=65535");
    let message = refused("[[providers]]\nname = \"a\"\nmodel = \"b\"\nwieght = 2\n");
    assert!(message.contains("unknown field `wieght`"), "{message}");
    assert!(
        message.contains("`weight`") && message.contains("`base_url`"),
        "{message}"
    );
}

#[test]
fn parse_errors_say_where() {
    let message = refused("[[providers]]\nname = \"a\"\nmodel = \"b\"\n\n\nweight = \"heavy\"\n");
    assert!(message.contains("(line 6)"), "{message}");
}

#[test]
fn accepts_the_gateway_example_and_turns_layers_off() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/gateway/gateway.toml"
    );
    let config = Config::from_file(path).expect("the example configuration is valid");
    assert_eq!(config.providers.len(), 3);
    assert_eq!(config.providers[2].name, "groq");

    let config = Config::from_toml_str(&format!(
        "circuit = false\nramp = false\nvalidate = false\nquota = false\nwait_queue = true\n{OK_PROVIDER}"
    ))
    .unwrap();
    assert!(config.circuit.is_off() && config.ramp.is_off() && config.validate.is_off());
    assert!(!config.wait_queue.is_off());
}

/// A fingerprint of everything a configuration sets: the parsed configuration,
/// and what each provider entry gives the router and its client.
fn fingerprint(config: &Config) -> String {
    let mut f = format!("{config:?}");
    for p in &config.providers {
        f.push_str(&format!(
            "\n{:?} {:?} {:?}",
            p.options(),
            p.provider_config().map(|c| format!("{c:?}")),
            p.price
        ));
    }
    f
}

/// Every key path of a TOML document, down to the keys of each provider entry
/// (whose values are the client's) and into every other table.
fn key_paths(table: &toml::Table, at: Vec<String>, out: &mut Vec<Vec<String>>) {
    for (k, v) in table {
        let mut path = at.clone();
        path.push(k.clone());
        match v {
            toml::Value::Table(t) if !(at.len() >= 2 && at[0] == "providers") => {
                key_paths(t, path.clone(), out);
            }
            toml::Value::Array(items) if k == "providers" => {
                for (i, item) in items.iter().enumerate() {
                    if let toml::Value::Table(t) = item {
                        let mut p = path.clone();
                        p.push(i.to_string());
                        key_paths(t, p, out);
                    }
                }
                continue;
            }
            _ => {}
        }
        out.push(path);
    }
}

fn remove(table: &mut toml::Table, path: &[String]) {
    match path {
        [last] => {
            table.remove(last);
        }
        [first, rest @ ..] => match table.get_mut(first) {
            Some(toml::Value::Table(t)) => remove(t, rest),
            Some(toml::Value::Array(items)) => {
                let i: usize = rest[0].parse().unwrap();
                if let toml::Value::Table(t) = &mut items[i] {
                    remove(t, &rest[1..]);
                }
            }
            _ => {}
        },
        [] => {}
    }
}

/// The shipped configuration files load, build a stack (with inline test keys in
/// place of the environment variables they name), and every key in them is used:
/// leaving any one out changes what the configuration sets.
#[tokio::test]
async fn the_example_files_load_and_every_key_in_them_is_used() {
    for file in ["gateway.toml", "openai_anthropic.toml"] {
        let path = format!("{}/../examples/gateway/{file}", env!("CARGO_MANIFEST_DIR"));
        let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: toml::Table = toml::from_str(&text).unwrap();

        let mut inline = config.clone();
        for p in &mut inline.providers {
            assert!(
                p.client.remove("api_key_env").is_some(),
                "{file}: keys from the environment"
            );
            p.client
                .insert("api_key".into(), "sk-test-not-a-secret".into());
        }
        let stack = Stack::from_config(&inline).unwrap().build().unwrap();
        assert_eq!(
            stack.handle().snapshot().providers.len(),
            config.providers.len()
        );

        let whole = fingerprint(&config);
        let mut paths = Vec::new();
        key_paths(&doc, Vec::new(), &mut paths);
        assert!(paths.len() > 10, "{file}: {paths:?}");
        for path in paths {
            let mut less = doc.clone();
            remove(&mut less, &path);
            let text = toml::to_string(&less).unwrap();
            // Leaving out a key either makes the file invalid (a required key, a
            // name another key refers to) or changes the configuration.
            if let Ok(c) = Config::from_toml_str(&text) {
                assert_ne!(
                    fingerprint(&c),
                    whole,
                    "{file}: `{}` has no effect",
                    path.join(".")
                );
            }
        }
    }

    // The two-key file: OpenAI first, Anthropic as its fallback.
    let path = format!(
        "{}/../examples/gateway/openai_anthropic.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let config = Config::from_file(&path).unwrap();
    assert_eq!(config.router, tower_failover::RouterKind::Fallback);
    assert_eq!(config.providers[0].name, "openai");
    assert_eq!(config.providers[1].name, "anthropic");
    assert_eq!(config.models["gpt-4o-mini"].fallbacks, ["claude-haiku-4-5"]);
}

#[test]
fn a_missing_file_names_its_path() {
    let err = Config::from_file("/nonexistent/gateway.toml").unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/gateway.toml:"),
        "{err}"
    );
}

#[tokio::test]
async fn api_keys_come_from_the_environment_and_never_show() {
    // The variable is not set: the build says which one, not a value.
    let config = Config::from_toml_str(
        r#"
        [[providers]]
        name = "openai"
        model = "gpt-4o-mini"
        api_key_env = "TOWER_FAILOVER_TEST_SURELY_UNSET_KEY"
        "#,
    )
    .unwrap();
    let err = Stack::from_config(&config).unwrap_err();
    assert_eq!(err.field(), "providers[0].api_key_env");
    assert!(
        err.reason()
            .contains("TOWER_FAILOVER_TEST_SURELY_UNSET_KEY"),
        "{err}"
    );
    assert!(err.reason().contains("not set"), "{err}");

    // An inline key: the stack builds, and neither the configuration's nor the
    // stack's debug output shows the key.
    let config = Config::from_toml_str(OK_PROVIDER).unwrap();
    assert!(!format!("{config:?}").contains("sk-test-not-a-secret"));
    let stack = Stack::from_config(&config).unwrap().build().unwrap();
    assert!(!format!("{stack:?}").contains("sk-test-not-a-secret"));
    let snapshot = serde_json::to_string(&stack.handle().snapshot()).unwrap();
    assert!(!snapshot.contains("sk-test-not-a-secret"));
}

/// A `[redis]` section in the configuration really shares health between replicas:
/// two registries built from one file see each other's circuit openings. Uses the
/// Redis that `.ci/run` starts (`TOWER_FAILOVER_REDIS_URL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_section_shares_health_between_replicas() {
    let Ok(url) = std::env::var("TOWER_FAILOVER_REDIS_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide TOWER_FAILOVER_REDIS_URL (.ci/run starts Redis)"
        );
        eprintln!("SKIPPED: set TOWER_FAILOVER_REDIS_URL to run against a Redis");
        return;
    };
    // Unique per run: the Redis outlives the test binary, and a process id can come
    // back in a later run (whose state, an open circuit, would still be there).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let namespace = format!("config-test-{}-{nanos}", std::process::id());
    let text = format!(
        "[redis]\nurl = \"{url}\"\nnamespace = \"{namespace}\"\nresync_interval = \"100ms\"\n{OK_PROVIDER}"
    );
    let config =
        Config::from_toml_str(&text).expect("a valid configuration with a [redis] section");
    // The stack's retry budget is the fleet's (counted in Redis), not a local one.
    let stack = Stack::from_config(&config).unwrap().build().unwrap();
    assert_eq!(stack.handle().retry_budget_remaining(), None);
    let local = Stack::from_config(&Config::from_toml_str(OK_PROVIDER).unwrap())
        .unwrap()
        .build()
        .unwrap();
    assert!(local.handle().retry_budget_remaining().is_some());
    let a = config.registry().unwrap();
    let b = config.registry().unwrap();
    let (ha, hb) = (
        a.provider("openai", "gpt-4o-mini"),
        b.provider("openai", "gpt-4o-mini"),
    );
    let connected = |r: &tower_failover_core::Registry| r.store().status().connected;
    // Generous bounds: they only matter when something is broken.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(connected(&a) && connected(&b)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(a.snapshot().store.kind, "redis");
    assert!(connected(&a) && connected(&b), "both replicas reach Redis");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    use tower_failover_core::CircuitState;
    assert!(ha.transition(
        CircuitState::Closed,
        CircuitState::Open,
        Some(tokio::time::Instant::now() + std::time::Duration::from_secs(30))
    ));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while hb.circuit() != CircuitState::Open && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        hb.circuit(),
        CircuitState::Open,
        "replica B learned of A's outage"
    );
}

/// Members of one quota group share one quota tracker: a member whose own quota
/// settings differ from the group's first member's is refused when the stack is
/// built (they were silently ignored: its budget, its mode and its caps), and
/// members with the same settings build.
#[tokio::test]
async fn a_quota_group_member_with_its_own_quota_is_refused() {
    let group = |second: &str| {
        format!(
            r#"
            [[providers]]
            name = "a"
            model = "m"
            api_key = "sk-test-not-a-secret"
            quota_group = "org"

            [[providers]]
            name = "b"
            model = "m"
            api_key = "sk-test-not-a-secret"
            quota_group = "org"
            {second}
            "#
        )
    };
    let config = Config::from_toml_str(&group("quota = { requests_per_minute = 1 }")).unwrap();
    let err = Stack::from_config(&config)
        .unwrap()
        .build()
        .expect_err("a group member's own quota is refused");
    assert_eq!(err.field(), "providers[1].quota", "{err}");
    assert!(err.reason().contains("\"org\""), "{err}");

    let config = Config::from_toml_str(&group("")).unwrap();
    let stack = Stack::from_config(&config).unwrap().build().unwrap();
    let (a, b) = (
        stack.handle().provider("a", "m").unwrap(),
        stack.handle().provider("b", "m").unwrap(),
    );
    assert!(a.quota().same_as(b.quota()), "one group, one window");
}

/// A provider-level fallback for a context window names one provider, which only
/// its own model group's router holds: with requests routed by model over several
/// groups it is refused with what to do instead (it failed with "unknown
/// provider"); with one group, or with model routing off, it builds.
#[tokio::test]
async fn a_context_window_fallback_under_model_groups_says_what_to_use() {
    let text = |second_model: &str, by_model: bool| {
        format!(
            r#"
            route_by_model = {by_model}
            [balance]
            context_window_fallback = "big/m2"

            [[providers]]
            name = "small"
            model = "m1"
            api_key = "sk-test-not-a-secret"
            context_window = 8000

            [[providers]]
            name = "big"
            model = "{second_model}"
            api_key = "sk-test-not-a-secret"
            "#
        )
    };
    let config = Config::from_toml_str(&text("m2", true)).unwrap();
    let err = Stack::from_config(&config)
        .unwrap()
        .build()
        .expect_err("two model groups");
    assert_eq!(err.field(), "balance.context_window_fallback", "{err}");
    assert!(err.reason().contains("fallbacks"), "{err}");
    let config = Config::from_toml_str(&text("m2", false)).unwrap();
    Stack::from_config(&config)
        .unwrap()
        .build()
        .unwrap_or_else(|e| panic!("route_by_model = false: {e}"));
}
