//! Small serde helpers that borrow from the input whenever JSON allows it.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

/// A string borrowed from the input when it has no escapes, owned otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Str<'a>(pub(crate) Cow<'a, str>);

impl Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Owned(v)))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor)
    }
}

/// A value that may be one string or a list of them (`stop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OneOrMany<'a> {
    One(Str<'a>),
    Many(Vec<Str<'a>>),
}

impl<'a> OneOrMany<'a> {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            OneOrMany::One(s) => (Some(&**s), &[][..]),
            OneOrMany::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().map(|s| &**s))
    }
}

struct OneOrManyVisitor;

impl<'de> Visitor<'de> for OneOrManyVisitor {
    type Value = OneOrMany<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        StrVisitor.visit_borrowed_str(v).map(OneOrMany::One)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        StrVisitor.visit_str(v).map(OneOrMany::One)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        StrVisitor.visit_string(v).map(OneOrMany::One)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(s) = seq.next_element::<Str<'de>>()? {
            v.push(s);
        }
        Ok(OneOrMany::Many(v))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for OneOrMany<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OneOrManyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_when_it_can() {
        let s: Str<'_> = serde_json::from_str("\"plain\"").unwrap();
        assert!(matches!(s.0, Cow::Borrowed("plain")));
        let s: Str<'_> = serde_json::from_str("\"a\\nb\"").unwrap();
        assert!(matches!(s.0, Cow::Owned(ref o) if o == "a\nb"));
    }

    #[test]
    fn one_or_many() {
        let one: OneOrMany<'_> = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(one.iter().collect::<Vec<_>>(), ["x"]);
        let many: OneOrMany<'_> = serde_json::from_str("[\"x\",\"y\"]").unwrap();
        assert_eq!(many.iter().collect::<Vec<_>>(), ["x", "y"]);
        assert!(serde_json::from_str::<OneOrMany<'_>>("3").is_err());
    }
}
