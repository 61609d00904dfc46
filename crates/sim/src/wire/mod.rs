//! Wire formats: parsing requests and rendering replies for each provider flavor.

pub(crate) mod anthropic;
pub(crate) mod embeddings;
pub(crate) mod openai;
pub(crate) mod text;

use bytes::Bytes;
use serde_json::Value;

use crate::fault::Fault;
use tower_failover_core::rng::Rng;

/// What a completion request asks for, whatever the flavor.
#[derive(Debug)]
pub(crate) struct Ask {
    pub(crate) model: String,
    pub(crate) stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    pub(crate) max_tokens: Option<u64>,
    /// OpenAI: the limit came as the older `max_tokens` field.
    pub(crate) legacy_max_tokens: bool,
    pub(crate) json: JsonMode,
    /// Stop sequences (OpenAI `stop`, Anthropic `stop_sequences`): the reply ends
    /// before the first place one of them would appear.
    pub(crate) stop: Vec<String>,
    /// The tool the request makes the model call (`tool_choice` naming one, or
    /// `required` / `any` with tools given: the first), if any.
    pub(crate) tool: Option<ForcedTool>,
    pub(crate) prompt_tokens: u64,
    /// The last user message's text (for echo).
    pub(crate) last_user: String,
    /// Anthropic prompt caching: the prefix up to the request's last
    /// `cache_control` breakpoint (a hash of its bytes, and its tokens), when it is
    /// long enough to be cached.
    pub(crate) cache_prefix: Option<(u64, u64)>,
    /// Of `prompt_tokens`, those read from and written to the prompt cache (set by
    /// the service from the prefixes it has seen).
    pub(crate) cache_read: u64,
    pub(crate) cache_write: u64,
}

impl Ask {
    /// The prompt tokens neither read from nor written to the prompt cache
    /// (Anthropic's `input_tokens`).
    pub(crate) fn uncached_tokens(&self) -> u64 {
        self.prompt_tokens
            .saturating_sub(self.cache_read)
            .saturating_sub(self.cache_write)
    }
}

/// Whether the request asks for JSON output.
#[derive(Debug)]
pub(crate) enum JsonMode {
    Off,
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    Object,
    /// JSON matching this schema.
    Schema(Value),
}

/// A tool the model must call: its name and the JSON Schema of its arguments.
#[derive(Debug)]
pub(crate) struct ForcedTool {
    pub(crate) name: String,
    pub(crate) schema: Value,
}

impl ForcedTool {
    /// The tool `choice` forces among `tools`, each read as `(name, schema)` by
    /// `read`: a named one, or the first for `any_of`.
    pub(crate) fn pick<'a>(
        tools: &'a [Value],
        named: Option<&str>,
        any_of: bool,
        read: impl Fn(&'a Value) -> Option<(&'a str, Option<&'a Value>)>,
    ) -> Option<ForcedTool> {
        let (name, schema) = tools
            .iter()
            .filter_map(read)
            .find(|(name, _)| named.is_none_or(|n| n == *name))
            .filter(|_| named.is_some() || any_of)?;
        Some(ForcedTool {
            name: name.to_owned(),
            schema: schema.cloned().unwrap_or(Value::Bool(true)),
        })
    }
}

/// Why a reply stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
}

/// The generated answer, before rendering.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) content: String,
    /// OpenAI structured-output refusal (content is then `null`).
    pub(crate) refusal: Option<String>,
    /// Byte ranges of `content`, one per streamed delta.
    pub(crate) pieces: Vec<(usize, usize)>,
    pub(crate) finish: Finish,
    pub(crate) completion_tokens: u64,
    /// Of the completion tokens, those spent thinking (a reasoning model).
    pub(crate) reasoning_tokens: u64,
    /// The model refused ([`Fault::Refusal`]).
    pub(crate) refused: bool,
    /// The tool called, whose arguments are `content` (a forced tool call).
    pub(crate) tool: Option<String>,
    /// The stop sequence the reply ended at (not included in it), if one did.
    pub(crate) stop_sequence: Option<String>,
}

impl Reply {
    pub(crate) fn piece(&self, i: usize) -> &str {
        let (a, b) = self.pieces[i];
        &self.content[a..b]
    }
}

/// Generation settings from the sim's config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GenSettings<'a> {
    pub(crate) min_words: u32,
    pub(crate) max_words: u32,
    pub(crate) echo: bool,
    /// Hidden reasoning tokens before the answer (a reasoning model).
    pub(crate) reasoning_tokens: u64,
    /// Appended to every generated word (`word_<tag>`), when set.
    pub(crate) tag: Option<&'a str>,
}

/// Tokens in `s`, estimated as characters / 4 rounded up.
pub(crate) fn tokens(s: &str) -> u64 {
    (s.chars().count() as u64).div_ceil(4)
}

/// Characters of text in a message `content` (a string or an array of parts).
pub(crate) fn content_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(s);
        }
        Value::Array(parts) => {
            for p in parts {
                match p.get("text") {
                    Some(t) => content_text(t, out),
                    None => {
                        if let Some(c) = p.get("content") {
                            content_text(c, out)
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// [`Billing::PaymentRequired`](crate::Billing::PaymentRequired)'s message.
pub(crate) const INSUFFICIENT_BALANCE: &str = "Insufficient Balance";
/// [`Billing::InsufficientQuota`](crate::Billing::InsufficientQuota)'s message.
pub(crate) const INSUFFICIENT_QUOTA: &str = "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.";
/// [`Billing::CreditBalance`](crate::Billing::CreditBalance)'s message.
pub(crate) const CREDIT_BALANCE: &str = "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.";

/// A proxy's error page ([`Fault::HtmlPage`]).
pub(crate) const HTML_PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

pub(crate) const REFUSAL: &str = "I'm sorry, but I can't help with that request.";

/// Generate the reply for `ask`, deterministically from `rng`, shaped by an output
/// fault if there is one.
pub(crate) fn generate(
    ask: &Ask,
    g: GenSettings<'_>,
    rng: &mut Rng,
    fault: Option<&Fault>,
) -> Reply {
    let mut refusal = None;
    let mut content = match &ask.json {
        JsonMode::Off => {
            let mut s = String::new();
            if g.echo && !ask.last_user.is_empty() {
                let echo: String = ask.last_user.chars().take(60).collect();
                s.push_str("You said: \"");
                s.push_str(&echo);
                s.push_str("\". ");
            }
            text::prose(rng, g.min_words, g.max_words, g.tag, &mut s);
            s
        }
        JsonMode::Object => {
            let mut answer = String::new();
            text::prose(rng, g.min_words, g.max_words, g.tag, &mut answer);
            let conf = (rng.range(50, 99) as f64) / 100.0;
            serde_json::json!({ "answer": answer, "confidence": conf }).to_string()
        }
        JsonMode::Schema(schema) => text::instance(schema, schema, rng, 0).to_string(),
    };
    // A forced tool call: its arguments, made to its schema, are the reply (an
    // output fault still shapes an answer in text instead).
    let in_text = matches!(
        fault,
        Some(Fault::Refusal | Fault::WrongSchema | Fault::NotJson | Fault::EmptyContent)
    );
    let tool = match &ask.tool {
        Some(t) if !in_text => {
            content = text::instance(&t.schema, &t.schema, rng, 0).to_string();
            Some(t.name.clone())
        }
        _ => None,
    };
    let mut finish = Finish::Stop;
    match fault {
        Some(Fault::Refusal) => {
            if matches!(ask.json, JsonMode::Schema(_)) {
                refusal = Some(REFUSAL.to_string());
                content.clear();
            } else {
                content = REFUSAL.to_string();
            }
        }
        Some(Fault::WrongSchema) => content = r#"{"wrong": true}"#.to_string(),
        Some(Fault::NotJson) => {
            let mut s = String::from("Sure! Here is what you asked for: ");
            text::prose(rng, g.min_words, g.max_words, g.tag, &mut s);
            content = s;
        }
        Some(Fault::EmptyContent) => content.clear(),
        _ => {}
    }
    // A stop sequence ends the text before it (not a tool call's arguments).
    let mut stop_sequence = None;
    if tool.is_none()
        && let Some((at, seq)) = ask
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| content.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|&(at, _)| at)
    {
        content.truncate(at);
        stop_sequence = Some(seq.clone());
    }
    let mut pieces = text::split_pieces(&content);
    if let Some(Fault::Length) = fault {
        let keep = pieces.len().div_ceil(2).max(1).min(pieces.len());
        pieces.truncate(keep);
        finish = Finish::Length;
    }
    // A reasoning model thinks first, out of the same allowance.
    let reasoning_tokens = match ask.max_tokens {
        Some(max) => g.reasoning_tokens.min(max),
        None => g.reasoning_tokens,
    };
    if let Some(max) = ask.max_tokens {
        // Cut to the longest prefix of pieces that fits in what thinking left of
        // max_tokens (nothing at all when it took the whole allowance).
        let left = max - reasoning_tokens;
        let keep = pieces
            .iter()
            .take_while(|&&(_, b)| left > 0 && tokens(&content[..b]) <= left)
            .count();
        if keep < pieces.len() {
            pieces.truncate(keep);
            finish = Finish::Length;
        }
    }
    let end = pieces.last().map_or(0, |p| p.1);
    content.truncate(end);
    let completion_tokens =
        tokens(&content) + refusal.as_deref().map_or(0, tokens) + reasoning_tokens;
    Reply {
        content,
        refusal,
        pieces,
        finish,
        completion_tokens,
        reasoning_tokens,
        refused: matches!(fault, Some(Fault::Refusal)),
        tool,
        // Cut at the token limit before it: no stop sequence was met.
        stop_sequence: stop_sequence.filter(|_| finish == Finish::Stop),
    }
}

/// One SSE event: `data: <json>\n\n`, with an `event:` line when `event` is set.
pub(crate) fn sse(event: Option<&str>, data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(data.len() + 32);
    if let Some(e) = event {
        v.extend_from_slice(b"event: ");
        v.extend_from_slice(e.as_bytes());
        v.push(b'\n');
    }
    v.extend_from_slice(b"data: ");
    v.extend_from_slice(data);
    v.extend_from_slice(b"\n\n");
    Bytes::from(v)
}

/// Random alphanumeric characters.
pub(crate) fn alnum(rng: &mut Rng, n: usize, out: &mut String) {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for _ in 0..n {
        out.push(CHARS[rng.below(CHARS.len() as u64) as usize] as char);
    }
}

/// Unix time in seconds (wall clock: ids and `created` fields only).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Format a wall-clock time as RFC 3339 in UTC with whole seconds: `2024-06-01T12:00:30Z`.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "2024-02-29T12:34:56Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    fn ask(json: JsonMode, max_tokens: Option<u64>) -> Ask {
        Ask {
            model: "m".into(),
            stream: false,
            include_usage: false,
            max_tokens,
            legacy_max_tokens: false,
            json,
            stop: Vec::new(),
            tool: None,
            prompt_tokens: 3,
            last_user: "hello there".into(),
            cache_prefix: None,
            cache_read: 0,
            cache_write: 0,
        }
    }

    const G: GenSettings<'static> = GenSettings {
        min_words: 10,
        max_words: 20,
        echo: true,
        reasoning_tokens: 0,
        tag: None,
    };

    #[test]
    fn generation_is_deterministic_and_shaped() {
        let a = generate(&ask(JsonMode::Off, None), G, &mut Rng::seeded(1), None);
        let b = generate(&ask(JsonMode::Off, None), G, &mut Rng::seeded(1), None);
        assert_eq!(a.content, b.content);
        assert!(
            a.content.starts_with("You said: \"hello there\". "),
            "{}",
            a.content
        );
        assert_eq!(a.finish, Finish::Stop);
        let joined: String = (0..a.pieces.len()).map(|i| a.piece(i)).collect();
        assert_eq!(joined, a.content);
        assert_eq!(a.completion_tokens, tokens(&a.content));

        let cut = generate(&ask(JsonMode::Off, Some(5)), G, &mut Rng::seeded(1), None);
        assert_eq!(cut.finish, Finish::Length);
        assert!(cut.completion_tokens <= 5);

        let len = generate(
            &ask(JsonMode::Off, None),
            G,
            &mut Rng::seeded(1),
            Some(&Fault::Length),
        );
        assert_eq!(len.finish, Finish::Length);
        assert!(len.content.len() < a.content.len());

        let j = generate(&ask(JsonMode::Object, None), G, &mut Rng::seeded(1), None);
        let v: Value = serde_json::from_str(&j.content).unwrap();
        assert!(v["answer"].is_string());

        let r = generate(
            &ask(JsonMode::Schema(serde_json::json!({"type":"object"})), None),
            G,
            &mut Rng::seeded(1),
            Some(&Fault::Refusal),
        );
        assert_eq!(r.refusal.as_deref(), Some(REFUSAL));
        assert!(r.content.is_empty());
        let e = generate(
            &ask(JsonMode::Off, None),
            G,
            &mut Rng::seeded(1),
            Some(&Fault::EmptyContent),
        );
        assert!(e.content.is_empty() && e.pieces.is_empty());
    }
}
