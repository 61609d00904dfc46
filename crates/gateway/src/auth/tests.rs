use std::time::Duration;

use super::budget::Meter;
use super::*;
use crate::GatewayConfig;

const PROVIDER: &str = r#"
    [[providers]]
    name = "a"
    model = "m"
    kind = "openai"
    base_url = "http://127.0.0.1:1/v1"
    api_key = "sk-test"
"#;

fn parse(auth: &str) -> Result<GatewayConfig, ConfigError> {
    GatewayConfig::from_toml_str(&format!("{PROVIDER}\n{auth}"))
}

#[test]
fn the_auth_section_shares_the_file() {
    let c = parse(&format!(
        r#"
        [auth]
        admin_key_env = "ADMIN_KEY"
        allowed_hosts = ["localhost"]

        [[auth.keys]]
        name = "search"
        key_env = "SEARCH_KEY"
        models = ["m"]
        budget = {{ tokens = 100, cost = 1.5, period = "1d" }}

        [[auth.keys]]
        name = "ops"
        key_sha256 = "{}"
        admin = true
        "#,
        hash_key("an-ops-key-of-enough-bytes")
    ))
    .unwrap();
    assert!(c.auth.is_enabled());
    assert_eq!(c.auth.keys.len(), 2);
    let b = c.auth.keys[0].budget.as_ref().unwrap();
    assert_eq!(b.period, Duration::from_secs(86_400));
    assert_eq!(b.cost_micros(), Some(1_500_000));
    assert_eq!(
        c.auth.keys[0].models.as_deref(),
        Some(&["m".to_owned()][..])
    );
    assert!(c.auth.keys[1].admin);
    assert_eq!(c.stack.providers.len(), 1);
    assert!(!GatewayConfig::new(c.stack).auth.is_enabled());
}

#[test]
fn mistakes_name_their_field() {
    let hash = hash_key("x");
    let cases = [
        (
            r#"name = "a"
            key_env = "K"
            key_sha256 = "HASH""#,
            "auth.keys[0].key_env",
        ),
        (r#"name = "a""#, "auth.keys[0].key_env"),
        (
            r#"name = "a"
            key_sha256 = "abc""#,
            "auth.keys[0].key_sha256",
        ),
        (
            r#"name = "a b"
            key_env = "K""#,
            "auth.keys[0].name",
        ),
        (
            r#"name = "a"
            key_env = "K"
            budget = { period = "1d" }"#,
            "auth.keys[0].budget",
        ),
        (
            r#"name = "a"
            key_env = "K"
            budget = { tokens = 5, period = "0s" }"#,
            "auth.keys[0].budget.period",
        ),
        (
            r#"name = "a"
            key_env = "K"
            budget = { cost = -1.0, period = "1h" }"#,
            "auth.keys[0].budget.cost",
        ),
        (
            r#"name = "a"
            key_env = "K"
            models = [""]"#,
            "auth.keys[0].models",
        ),
    ];
    for (key, field) in cases {
        let text = format!("[[auth.keys]]\n{}", key.replace("HASH", &hash));
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field(), field, "{text}: {e}");
    }
    let twice = "[[auth.keys]]\nname = \"a\"\nkey_env = \"K\"\n[[auth.keys]]\nname = \"a\"\nkey_env = \"L\"";
    assert_eq!(parse(twice).unwrap_err().field(), "auth.keys[1].name");
    let e = parse("[auth]\nallowed_hosts = [\"a b\"]").unwrap_err();
    assert_eq!(e.field(), "auth.allowed_hosts");
    // A plaintext key field does not exist: refused as unknown.
    let e = parse("[[auth.keys]]\nname = \"a\"\nkey = \"sk-plain\"").unwrap_err();
    assert!(e.reason().contains("key"), "{e}");
}

fn access(config: &AuthConfig, env: &[(&str, &str)]) -> Result<Arc<Access>, ConfigError> {
    let var = |k: &str| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| (*v).to_owned())
    };
    Access::new(config, &var, None, None, 1 << 20)
}

#[tokio::test]
async fn keys_come_from_the_environment_and_never_show() {
    let secret = "sk-from-the-environment-0123";
    let mut c = AuthConfig::default();
    c.keys.push(KeyConfig::from_env("app", "APP_KEY"));
    let a = access(&c, &[("APP_KEY", secret)]).unwrap();
    assert!(a.is_enabled());
    assert_eq!(keys::find(&a.digests, secret.as_bytes()), Some(0));
    assert!(!format!("{a:?}").contains(secret));
    let digest = format!("{:?}", keys::hash(secret.as_bytes()));
    assert!(
        !format!("{a:?}").contains(&digest[1..20]),
        "no digest either"
    );
    assert!(!format!("{c:?}").contains(secret));

    // Unset, or too short to be a key: refused, naming the variable, never the value.
    let e = access(&c, &[]).unwrap_err();
    assert_eq!(e.field(), "auth.keys[0].key_env");
    assert!(e.reason().contains("APP_KEY"), "{e}");
    let e = access(&c, &[("APP_KEY", "short-key")]).unwrap_err();
    assert!(!e.to_string().contains("short-key"), "{e}");

    // One key given twice (under two names) is ambiguous.
    c.keys.push(KeyConfig::hashed("copy", hash_key(secret)));
    let e = access(&c, &[("APP_KEY", secret)]).unwrap_err();
    assert_eq!(e.field(), "auth.keys[1].key_sha256");

    // The separate admin key is named `admin`, and a key may not take that name.
    let mut c = AuthConfig {
        admin_key_sha256: Some(hash_key("an-admin-key-of-enough-bytes")),
        ..AuthConfig::default()
    };
    let a = access(&c, &[]).unwrap();
    let i = keys::find(&a.digests, b"an-admin-key-of-enough-bytes").unwrap();
    assert_eq!(a.keys[i].caller.name(), ADMIN_NAME);
    assert!(a.keys[i].admin);
    c.keys.push(KeyConfig::hashed(ADMIN_NAME, hash_key("x")));
    assert_eq!(c.validate().unwrap_err().field(), "auth.keys[0].name");
}

#[tokio::test]
async fn without_keys_the_gateway_is_open() {
    let a = access(&AuthConfig::default(), &[]).unwrap();
    assert!(!a.is_enabled());
}

#[tokio::test(start_paused = true)]
async fn a_local_budget_renews_when_its_period_ends() {
    let hour = Duration::from_secs(3600);
    let m = Meter::new(&[("caller:a:tokens".to_owned(), hour)], None).unwrap();
    m.add(0, 40);
    m.add(0, 2);
    let (spent, left) = m.spent(0);
    assert_eq!(spent, 42);
    assert!(left > Duration::ZERO && left <= hour);
    tokio::time::advance(left).await;
    assert_eq!(m.spent(0).0, 0, "a new period");
    assert_eq!(m.spent(0).1, hour);
    m.add(0, 1);
    assert_eq!(m.spent(0).0, 1);
    // Out of range: nothing, no panic.
    m.add(5, 1);
    assert_eq!(m.spent(5).0, 0);
}
