//! Wire translation, usable on its own (the adapters call it; so can tests and
//! benchmarks).
//!
//! The canonical wire format is OpenAI chat completions. [`openai`] forwards it to
//! OpenAI-compatible servers with the model name mapped; [`anthropic`] translates
//! requests to Anthropic's messages API and responses (JSON and SSE, event by event)
//! back, so a caller that fails over from an OpenAI model to a Claude model gets the
//! same shape either way.

pub mod anthropic;
pub mod messages;
pub mod openai;
mod str;

use crate::error::TranslateError;

/// Refuses a request body that is not a JSON object.
///
/// serde reads a struct from a JSON array too (its fields by position), so
/// `["gpt-4o", true]` would otherwise pass for `{"model": "gpt-4o", "stream": true}`
/// and be spliced into. Checked on the first non-blank byte, before any parse.
pub(crate) fn require_object(body: &[u8]) -> Result<(), TranslateError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(TranslateError::new("request body must be a JSON object")),
    }
}

/// Token counts as providers send them, read leniently: a count is bookkeeping, so
/// an odd one (`1e20`, `-1`, `2.5`, a string, 2^64) must not turn a good answer into
/// a rejected one. Negative and non-numeric values read as 0 (`None` for the
/// optional form), fractions are truncated and values beyond `u64` saturate.
pub(crate) mod count {
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

    struct Count;

    impl<'de> Visitor<'de> for Count {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a token count")
        }

        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(u64::try_from(v).unwrap_or(0)))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
            // `as` saturates at u64::MAX; NaN cannot come from JSON.
            Ok(Some(if v > 0.0 { v as u64 } else { 0 }))
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Count)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }

    /// A count; anything unreadable is 0.
    pub(crate) fn de<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Ok(d.deserialize_any(Count)?.unwrap_or(0))
    }

    /// An optional count; `null` and anything unreadable are `None`.
    pub(crate) fn de_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(Count)
    }

    /// OpenAI's `usage.prompt_tokens_details`, for its `cached_tokens` (the prompt
    /// tokens read from the provider's cache): read as [`de`] reads a count; 0 for
    /// anything but an object, and the last one when the key repeats.
    pub(crate) fn de_cached<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(Details)
    }

    struct Details;

    /// A key of `prompt_tokens_details`: ours, or another (not kept).
    enum DetailsKey {
        Cached,
        Other,
    }

    impl<'de> serde::Deserialize<'de> for DetailsKey {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Key;
            impl Visitor<'_> for Key {
                type Value = DetailsKey;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a key")
                }

                fn visit_str<E>(self, v: &str) -> Result<DetailsKey, E> {
                    Ok(if v == "cached_tokens" {
                        DetailsKey::Cached
                    } else {
                        DetailsKey::Other
                    })
                }
            }
            d.deserialize_identifier(Key)
        }
    }

    /// One count as [`de`] reads it, as a map value.
    struct CountValue(u64);

    impl<'de> serde::Deserialize<'de> for CountValue {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            de(d).map(CountValue)
        }
    }

    impl<'de> Visitor<'de> for Details {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("prompt token details")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
            let mut cached = 0;
            while let Some(key) = map.next_key::<DetailsKey>()? {
                match key {
                    DetailsKey::Cached => cached = map.next_value::<CountValue>()?.0,
                    DetailsKey::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(cached)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(0)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
            d.deserialize_any(Details)
        }

        fn visit_u64<E>(self, _: u64) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_i64<E>(self, _: i64) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_f64<E>(self, _: f64) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_bool<E>(self, _: bool) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_str<E>(self, _: &str) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_unit<E>(self) -> Result<u64, E> {
            Ok(0)
        }

        fn visit_none<E>(self) -> Result<u64, E> {
            Ok(0)
        }
    }
}
