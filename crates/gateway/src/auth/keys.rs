//! Keys as SHA-256 digests: reading the caller's, comparing in constant time.

use std::fmt::Write as _;

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// A key's SHA-256.
pub(super) type Digest = [u8; 32];

/// The shortest key read from the environment.
pub(super) const MIN_KEY_BYTES: usize = 16;

/// The longest key read from a request: past it, the key is wrong without
/// being hashed.
const MAX_KEY_BYTES: usize = 512;

pub(super) fn hash(key: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The SHA-256 of `key` as 64 lowercase hex digits: what `key_sha256` holds
/// (the same as `printf %s "$KEY" | sha256sum`).
///
/// ```
/// use tower_failover_gateway::auth::hash_key;
///
/// assert_eq!(
///     hash_key("abc"),
///     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
/// );
/// ```
pub fn hash_key(key: &str) -> String {
    let mut s = String::with_capacity(64);
    for b in hash(key.as_bytes()) {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// 64 hex digits (either case) as a digest.
pub(super) fn parse_digest(hex: &str) -> Option<Digest> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// Equality whose time does not depend on where the digests differ.
pub(super) fn same(a: &Digest, b: &Digest) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The index of the digest `key` hashes to, comparing with every digest (no early
/// exit).
pub(super) fn find(digests: &[Digest], key: &[u8]) -> Option<usize> {
    if key.len() > MAX_KEY_BYTES {
        return None;
    }
    let presented = hash(key);
    let mut found = None;
    for (i, d) in digests.iter().enumerate() {
        if same(d, &presented) && found.is_none() {
            found = Some(i);
        }
    }
    found
}

/// The key a request presents: `Authorization: Bearer <key>` (OpenAI clients), or
/// else `x-api-key: <key>` (Anthropic clients). `None` when neither is there.
pub(super) fn presented(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(AUTHORIZATION) {
        let v = v.as_bytes();
        let bearer = v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ");
        return Some(if bearer { v[7..].trim_ascii() } else { v });
    }
    headers.get("x-api-key").map(|v| v.as_bytes().trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_and_compare() {
        let d = hash(b"abc");
        assert_eq!(parse_digest(&hash_key("abc")), Some(d));
        assert_eq!(parse_digest(&hash_key("abc").to_uppercase()), Some(d));
        assert!(parse_digest("xyz").is_none());
        assert!(parse_digest(&"g".repeat(64)).is_none());
        assert!(same(&d, &hash(b"abc")));
        assert!(!same(&d, &hash(b"abd")));
        let all = [hash(b"one"), hash(b"two")];
        assert_eq!(find(&all, b"two"), Some(1));
        assert_eq!(find(&all, b"three"), None);
        assert_eq!(find(&all, &[b'x'; 600]), None);
    }

    #[test]
    fn bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert("x-api-key", "  k1 ".parse().unwrap());
        assert_eq!(presented(&h), Some(&b"k1"[..]));
        h.insert(AUTHORIZATION, "bEaReR k2".parse().unwrap());
        assert_eq!(presented(&h), Some(&b"k2"[..]));
        // Another scheme is taken whole: it matches no key.
        h.insert(AUTHORIZATION, "Basic k3".parse().unwrap());
        assert_eq!(presented(&h), Some(&b"Basic k3"[..]));
    }
}
