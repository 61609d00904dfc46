//! Deterministic reply text and JSON instances.

use serde_json::{Map, Value};

use tower_failover_core::rng::Rng;

const WORDS: &[&str] = &[
    "the",
    "provider",
    "answered",
    "quickly",
    "and",
    "the",
    "gateway",
    "kept",
    "serving",
    "traffic",
    "while",
    "a",
    "circuit",
    "opened",
    "on",
    "the",
    "primary",
    "model",
    "so",
    "requests",
    "moved",
    "to",
    "a",
    "healthy",
    "fallback",
    "with",
    "low",
    "latency",
    "every",
    "token",
    "arrived",
    "in",
    "order",
    "after",
    "the",
    "outage",
    "ended",
    "recovery",
    "ramped",
    "back",
    "slowly",
    "from",
    "five",
    "percent",
    "to",
    "full",
    "share",
    "without",
    "errors",
    "retries",
    "stayed",
    "within",
    "budget",
    "quota",
    "headers",
    "told",
    "us",
    "when",
    "to",
    "return",
    "output",
    "was",
    "validated",
    "before",
    "commit",
];

/// Append `min..=max` words of prose: capitalised sentences ending with periods,
/// every word followed by `_<tag>` when a tag is given.
pub(crate) fn prose(rng: &mut Rng, min: u32, max: u32, tag: Option<&str>, out: &mut String) {
    let n = rng.range(u64::from(min), u64::from(max)).max(1);
    let mut sentence_left = rng.range(5, 12);
    let mut start = true;
    for i in 0..n {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        if !start || (i > 0) {
            out.push(' ');
        }
        if start {
            let mut cs = w.chars();
            if let Some(c) = cs.next() {
                out.extend(c.to_uppercase());
                out.push_str(cs.as_str());
            }
            start = false;
        } else {
            out.push_str(w);
        }
        if let Some(tag) = tag {
            out.push('_');
            out.push_str(tag);
        }
        sentence_left -= 1;
        if sentence_left == 0 || i + 1 == n {
            out.push('.');
            start = true;
            sentence_left = rng.range(5, 12);
        }
    }
}

/// Split `s` into streaming deltas: each word with its leading whitespace, long
/// words and JSON split into pieces of at most 8 bytes (on char boundaries).
pub(crate) fn split_pieces(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(s.len() / 5 + 1);
    let mut start = 0;
    let mut prev_space = false;
    for (i, c) in s.char_indices() {
        let space = c == ' ';
        let too_long = i - start >= 8;
        if i > start && ((space && !prev_space) || too_long) {
            out.push((start, i));
            start = i;
        }
        prev_space = space;
    }
    if start < s.len() {
        out.push((start, s.len()));
    }
    out
}

/// A JSON value that satisfies `schema` (a practical subset of JSON Schema:
/// `type`, `properties`, `required`, `items`, `enum`, `const`, `anyOf`/`oneOf`/`allOf`,
/// local `$ref`, numeric bounds, string lengths and common formats).
pub(crate) fn instance(schema: &Value, root: &Value, rng: &mut Rng, depth: u32) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    let Value::Object(s) = schema else {
        // `true` or a missing schema accepts anything.
        return Value::String(word(rng).to_string());
    };
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(Value::Array(e)) = s.get("enum")
        && !e.is_empty()
    {
        return e[rng.below(e.len() as u64) as usize].clone();
    }
    if let Some(Value::String(r)) = s.get("$ref")
        && let Some(target) = resolve(root, r)
    {
        return instance(target, root, rng, depth + 1);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(options)) = s.get(key)
            && let Some(first) = options
                .iter()
                .find(|o| o.get("type") != Some(&Value::from("null")))
        {
            return instance(first, root, rng, depth + 1);
        }
    }
    let ty = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut m = Map::new();
            if let Some(Value::Object(props)) = s.get("properties") {
                for (k, v) in props {
                    m.insert(k.clone(), instance(v, root, rng, depth + 1));
                }
            }
            if let Some(Value::Array(req)) = s.get("required") {
                for k in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(k) {
                        m.insert(k.to_string(), Value::String(word(rng).to_string()));
                    }
                }
            }
            Value::Object(m)
        }
        "array" => {
            let min = s.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let max = s
                .get("maxItems")
                .and_then(Value::as_u64)
                .unwrap_or(min.max(3));
            let n = rng.range(min, max.max(min).min(min.max(3)));
            let items = s.get("items").unwrap_or(&Value::Bool(true));
            Value::Array(
                (0..n)
                    .map(|_| instance(items, root, rng, depth + 1))
                    .collect(),
            )
        }
        "integer" => {
            let (lo, hi) = bounds(s, 0.0, 100.0);
            let (lo, hi) = (lo.ceil() as i64, hi.floor() as i64);
            let v = if hi > lo {
                lo + rng.below((hi - lo) as u64 + 1) as i64
            } else {
                lo
            };
            Value::from(v)
        }
        "number" => {
            let (lo, hi) = bounds(s, 0.0, 1.0);
            let v = lo + (hi - lo) * rng.f64();
            Value::from((v * 100.0).round() / 100.0)
        }
        "boolean" => Value::Bool(rng.below(2) == 1),
        "null" => Value::Null,
        _ => Value::String(string(s, rng)),
    }
}

fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let path = r.strip_prefix('#')?;
    root.pointer(path)
}

fn bounds(s: &Map<String, Value>, lo: f64, hi: f64) -> (f64, f64) {
    let min = s.get("minimum").and_then(Value::as_f64).or_else(|| {
        s.get("exclusiveMinimum")
            .and_then(Value::as_f64)
            .map(|x| x + 1.0)
    });
    let max = s.get("maximum").and_then(Value::as_f64).or_else(|| {
        s.get("exclusiveMaximum")
            .and_then(Value::as_f64)
            .map(|x| x - 1.0)
    });
    let lo = min.unwrap_or(if max.is_some_and(|m| m < lo) {
        max.unwrap_or(0.0) - 100.0
    } else {
        lo
    });
    let hi = max.unwrap_or(if lo > hi { lo + 100.0 } else { hi });
    (lo, hi.max(lo))
}

fn string(s: &Map<String, Value>, rng: &mut Rng) -> String {
    match s.get("format").and_then(Value::as_str) {
        Some("date-time") => return "2025-01-01T00:00:00Z".into(),
        Some("date") => return "2025-01-01".into(),
        Some("time") => return "12:00:00Z".into(),
        Some("email") => return "sim@example.com".into(),
        Some("uri") | Some("url") => return "https://example.com/sim".into(),
        Some("uuid") => return "00000000-0000-4000-8000-000000000000".into(),
        _ => {}
    }
    let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(1) as usize;
    let max = s
        .get("maxLength")
        .and_then(Value::as_u64)
        .map(|m| m as usize);
    let mut out = String::new();
    let target = rng.range(1, 3) as usize;
    for i in 0.. {
        if i >= target && out.len() >= min {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word(rng));
    }
    if let Some(max) = max {
        out.truncate(max);
    }
    out
}

fn word(rng: &mut Rng) -> &'static str {
    WORDS[rng.below(WORDS.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prose_is_sentences() {
        let mut s = String::new();
        prose(&mut Rng::seeded(3), 12, 12, None, &mut s);
        assert_eq!(s.split(' ').count(), 12);
        assert!(s.ends_with('.'));
        assert!(s.chars().next().unwrap().is_uppercase());
    }

    #[test]
    fn a_tag_marks_every_word() {
        let mut s = String::new();
        prose(&mut Rng::seeded(3), 12, 12, Some("p2"), &mut s);
        assert_eq!(s.split(' ').count(), 12);
        for w in s.split(' ') {
            assert!(w.trim_end_matches('.').ends_with("_p2"), "{w} in {s}");
        }
    }

    #[test]
    fn pieces_cover_the_string() {
        for s in [
            "Hello big world.",
            "{\"answer\":\"abcdefghijklmnop\"}",
            "",
            "é à ü longwordwithaccentséééé",
        ] {
            let p = split_pieces(s);
            let joined: String = p.iter().map(|&(a, b)| &s[a..b]).collect();
            assert_eq!(joined, s);
            assert!(p.iter().all(|&(a, b)| b > a));
        }
    }

    #[test]
    fn instances_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 3, "maxLength": 20},
                "age": {"type": "integer", "minimum": 18, "maximum": 99},
                "score": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                "kind": {"enum": ["a", "b"]},
                "fixed": {"const": 7},
                "when": {"type": "string", "format": "date-time"},
                "maybe": {"type": ["string", "null"]},
                "nested": {"$ref": "#/$defs/n"},
                "flag": {"type": "boolean"}
            },
            "required": ["name", "age", "extra"],
            "$defs": {"n": {"type": "object", "properties": {"x": {"type": "integer"}}}}
        });
        let v = instance(&schema, &schema, &mut Rng::seeded(9), 0);
        let name = v["name"].as_str().unwrap();
        assert!((3..=20).contains(&name.len()), "{name}");
        let age = v["age"].as_i64().unwrap();
        assert!((18..=99).contains(&age));
        assert!(v["score"].is_number());
        assert!(v["tags"].as_array().unwrap().len() >= 2);
        assert!(v["kind"] == "a" || v["kind"] == "b");
        assert_eq!(v["fixed"], 7);
        assert_eq!(v["when"], "2025-01-01T00:00:00Z");
        assert!(v["maybe"].is_string());
        assert!(v["nested"]["x"].is_i64());
        assert!(v["flag"].is_boolean());
        assert!(v["extra"].is_string());
    }
}
