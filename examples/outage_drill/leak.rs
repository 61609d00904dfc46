//! What must never reach a caller: the primary's API key, the fragment of it a
//! provider echoes in a 401 (OpenAI's "Incorrect API key provided: sk-***…abcd"),
//! and the provider's wording of that rejection. The load generator looks for these
//! in everything a caller sees: the status line's headers, the body (streamed or
//! not) and the text of an error.

use http::HeaderMap;

/// The primary's API key. The default script's last phase revokes it: the
/// simulator then answers 401 with a masked fragment of it, as OpenAI does.
pub(crate) const PRIMARY_API_KEY: &str = "sk-drill-revoked-primary-Zq9X";

/// The key of the other providers (never rejected by the default script).
pub(crate) const OTHER_API_KEY: &str = "sk-drill-not-a-secret";

/// The key a provider of the drill is configured with.
pub(crate) fn api_key(provider: usize) -> &'static str {
    match provider {
        0 => PRIMARY_API_KEY,
        _ => OTHER_API_KEY,
    }
}

/// The key as OpenAI echoes it in a 401: its first 3 and last 4 characters with one
/// `*` per hidden character (at most 40) between; all `*` under 8 characters.
pub(crate) fn masked(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let n = chars.len();
    if n < 8 {
        return "*".repeat(n);
    }
    let mut out: String = chars[..3].iter().collect();
    out.push_str(&"*".repeat((n - 7).min(40)));
    out.extend(&chars[n - 4..]);
    out
}

/// The byte strings whose presence in a caller-visible answer is a leak.
#[derive(Debug, Clone)]
pub(crate) struct Needles(Vec<Vec<u8>>);

impl Needles {
    /// The drill's: the primary's key, its masked echo and the providers' wording
    /// of a rejected key (OpenAI's 401 message and its link, Anthropic's 401). The
    /// key's last four characters alone are not searched for: the simulators'
    /// random answer ids could hold them by chance.
    pub(crate) fn drill() -> Needles {
        Needles(
            [
                PRIMARY_API_KEY.to_owned(),
                masked(PRIMARY_API_KEY),
                "Incorrect API key provided".to_owned(),
                "You didn't provide an API key".to_owned(),
                "platform.openai.com/account/api-keys".to_owned(),
                "invalid x-api-key".to_owned(),
            ]
            .into_iter()
            .map(String::into_bytes)
            .collect(),
        )
    }

    /// Whether `hay` contains any needle.
    pub(crate) fn found_in(&self, hay: &[u8]) -> bool {
        self.0
            .iter()
            .any(|n| !n.is_empty() && hay.windows(n.len()).any(|w| w == n.as_slice()))
    }

    /// Whether any header name or value contains a needle.
    pub(crate) fn found_in_headers(&self, headers: &HeaderMap) -> bool {
        headers
            .iter()
            .any(|(k, v)| self.found_in(k.as_str().as_bytes()) || self.found_in(v.as_bytes()))
    }

    /// Whether the text of `err`, or of any error in its chain, contains a needle.
    pub(crate) fn found_in_error(&self, err: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(err);
        while let Some(e) = next {
            if self.found_in(e.to_string().as_bytes()) {
                return true;
            }
            next = e.source();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_like_openai() {
        assert_eq!(masked("sk-abcdefgh1234"), "sk-********1234");
        assert_eq!(masked("short"), "*****");
        assert_eq!(masked(PRIMARY_API_KEY), "sk-**********************Zq9X");
    }

    #[test]
    fn finds_the_fragment_and_the_wording_only() {
        let n = Needles::drill();
        let echo = format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {}.","code":"invalid_api_key"}}}}"#,
            masked(PRIMARY_API_KEY)
        );
        assert!(n.found_in(echo.as_bytes()));
        assert!(n.found_in(b"key sk-**********************Zq9X."));
        assert!(!n.found_in(br#"{"choices":[{"message":{"content":"lorem ipsum"}}]}"#));
        assert!(!n.found_in(b"all providers failed (3 attempts)"));
        let err: Box<dyn std::error::Error> = "upstream said: Incorrect API key provided".into();
        assert!(n.found_in_error(&*err));
    }

    /// The simulator's 401 really echoes what [`Needles::drill`] looks for: if its
    /// wording or masking changes, this fails instead of the drill going blind.
    #[tokio::test]
    async fn the_simulators_401_contains_the_needles() {
        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;
        use tower_failover_sim::{Fault, Flavor, Sim};

        let sim = Sim::builder(Flavor::OpenAi)
            .fault(Fault::Credential(401))
            .start()
            .await
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let req = http::Request::post(sim.completion_url())
            .header("authorization", format!("Bearer {PRIMARY_API_KEY}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            )))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), 401);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(&masked(PRIMARY_API_KEY)), "{text}");
        assert!(Needles::drill().found_in(&body));
    }
}
