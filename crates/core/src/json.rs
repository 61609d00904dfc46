//! A strict pull reader over JSON bytes, for layers that need a few fields of a
//! buffered answer and nothing else (issue 19).
//!
//! Going through serde for that (a derive that skips the rest with `IgnoredAny`, or
//! hand-written visitors) costs a round trip through the deserializer for every key
//! and every value; reading the bytes directly costs a fraction of it. The reader
//! borrows everything, allocates only to decode a string with escapes, and skips
//! whole values (strings found with `memchr`) without recursion.
//!
//! It is deliberately narrow: it accepts only text that `serde_json` parses into a
//! `serde_json::Value`, read exactly as `serde_json` reads it, and answers
//! [`Unsure`] for everything else, including some valid JSON it does not bother
//! with: a key with escapes, a `\u` escape of a lone surrogate, a number with more
//! than 300 digits before the point or an exponent past 300 (where `serde_json`
//! may find it out of range), nesting deeper than [`MAX_DEPTH`]. A caller then
//! reads the bytes again with `serde_json`, which decides and words any error. So
//! `Unsure` is never shown to anyone; it only means "take the slow path".
//!
//! ```
//! use tower_failover_core::json::{Kind, Reader};
//!
//! let body = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3}}"#;
//! let mut r = Reader::new(body);
//! r.object().unwrap();
//! let mut first = true;
//! let mut usage = None;
//! while let Some(key) = r.key(&mut first).unwrap() {
//!     if key == b"usage" && r.peek().unwrap() == Kind::Object {
//!         usage = Some(r.skip().unwrap());
//!     } else {
//!         r.skip().unwrap();
//!     }
//! }
//! r.end().unwrap();
//! assert_eq!(&body[usage.unwrap()], br#"{"prompt_tokens":3}"#);
//! ```

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

thread_local! {
    static READERS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many documents this thread has begun to read with [`Reader::new`] (an
/// [`Outline`] included); a test hook for "the answer is read once" (a
/// current-thread runtime runs a whole request on one thread).
#[doc(hidden)]
pub fn readers_on_this_thread() -> u64 {
    READERS.with(std::cell::Cell::get)
}

/// The deepest nesting the reader follows (`serde_json` stops at 128).
pub const MAX_DEPTH: u32 = 100;

/// The most digits before the decimal point (and the largest exponent) read:
/// beyond, `serde_json` may find a number out of range.
const MAX_MAGNITUDE: usize = 300;

/// The reader cannot vouch for these bytes: read them with `serde_json` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsure;

impl fmt::Display for Unsure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not read by the strict JSON reader")
    }
}

impl std::error::Error for Unsure {}

/// What the reader returns.
pub type Result<T> = std::result::Result<T, Unsure>;

/// The kind of the next value, told by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

/// A cursor over one JSON document. See the [module](self) documentation.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: u32,
    /// Numbers of any size are skipped (see [`Reader::structure`]).
    any_number: bool,
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The bytes of `w` (little-endian) that need a look inside a string: a quote, a
/// backslash, a control character or a byte of a multi-byte character. Each test
/// may also flag bytes above the first one it finds, never below: the lowest flag
/// is exact.
fn special(w: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    zero(w ^ (ONES * u64::from(b'"')))
        | zero(w ^ (ONES * u64::from(b'\\')))
        | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS)
        | (w & HIGHS)
}

/// From `at`, inside a string, the offset of the next `"` or `\`, the text
/// before it checked as `serde_json` checks it (no control character, valid
/// UTF-8). ASCII text is read eight bytes at a time, here; anything else (a
/// multi-byte character, the last bytes of the input, an error) by [`run_end_slow`].
#[inline]
fn run_end(b: &[u8], at: usize) -> Result<usize> {
    let mut i = at;
    while let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let flags = special(u64::from_le_bytes(word));
        if flags != 0 {
            let end = i + (flags.trailing_zeros() / 8) as usize;
            if let Some(b'"' | b'\\') = b.get(end) {
                return Ok(end);
            }
            break;
        }
        i += 8;
    }
    run_end_slow(b, at)
}

/// [`run_end`] a byte at a time.
#[cold]
#[inline(never)]
fn run_end_slow(b: &[u8], at: usize) -> Result<usize> {
    let rest = b.get(at..).unwrap_or_default();
    let len = memchr::memchr2(b'"', b'\\', rest).ok_or(Unsure)?;
    let run = &rest[..len];
    if run.iter().any(|&c| c < 0x20) || std::str::from_utf8(run).is_err() {
        return Err(Unsure);
    }
    Ok(at + len)
}

fn hex4(b: &[u8]) -> Option<u32> {
    let digits = b.get(..4)?;
    let mut n = 0;
    for &d in digits {
        n = n * 16 + char::from(d).to_digit(16)?;
    }
    Some(n)
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        READERS.with(|n| n.set(n.get() + 1));
        Reader {
            bytes,
            at: 0,
            depth: 0,
            any_number: false,
        }
    }

    /// A reader for the document's structure only (where its members are), that
    /// also [skips](Self::skip) numbers too large for serde_json's `f64` (JSON
    /// allows them, and an editor that only splices around them need not read
    /// them). Everything else is as strict as [`new`](Self::new)'s.
    pub fn structure(bytes: &'a [u8]) -> Self {
        Reader {
            any_number: true,
            ..Reader::new(bytes)
        }
    }

    /// The bytes being read.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.at
    }

    #[inline]
    fn blanks(&mut self) {
        while self.bytes.get(self.at).copied().is_some_and(is_blank) {
            self.at += 1;
        }
    }

    /// The next non-blank byte, not consumed.
    #[inline]
    fn next_byte(&mut self) -> Result<u8> {
        self.blanks();
        self.bytes.get(self.at).copied().ok_or(Unsure)
    }

    #[inline]
    fn expect(&mut self, b: u8) -> Result<()> {
        if self.next_byte()? == b {
            self.at += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    #[inline]
    fn enter(&mut self) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(Unsure);
        }
        self.depth += 1;
        Ok(())
    }

    /// The kind of the next value (not consumed).
    #[inline]
    pub fn peek(&mut self) -> Result<Kind> {
        Ok(match self.next_byte()? {
            b'n' => Kind::Null,
            b't' | b'f' => Kind::Bool,
            b'-' | b'0'..=b'9' => Kind::Number,
            b'"' => Kind::String,
            b'[' => Kind::Array,
            b'{' => Kind::Object,
            _ => return Err(Unsure),
        })
    }

    /// Only blanks are left.
    #[inline]
    pub fn end(&mut self) -> Result<()> {
        self.blanks();
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// Enters an object: the next value must be one.
    #[inline]
    pub fn object(&mut self) -> Result<()> {
        self.expect(b'{')?;
        self.enter()
    }

    /// The next key of the object entered last, its `:` consumed, or `None` at its
    /// end (consumed). `first` starts `true` for each object and is kept by the
    /// reader. The key comes as its bytes (valid UTF-8: compare them with a byte
    /// string); a key with escapes is [`Unsure`].
    #[inline]
    pub fn key(&mut self, first: &mut bool) -> Result<Option<&'a [u8]>> {
        // Compact JSON, as providers send it: `"key":` (the first) or `,"key":`
        // with no blank around, read straight. Anything else, and the end of the
        // object, is read by the general path below, which would meet exactly
        // what this one meets (so its errors are the same).
        let b = self.bytes;
        let quote = self.at + usize::from(!*first);
        if (*first || b.get(self.at) == Some(&b',')) && b.get(quote) == Some(&b'"') {
            let start = quote + 1;
            let end = run_end(b, start)?;
            if b[end] == b'"' && b.get(end + 1) == Some(&b':') {
                *first = false;
                self.at = end + 2;
                return Ok(Some(&b[start..end]));
            }
        }
        self.key_spaced(first)
    }

    /// [`key`](Self::key) where blanks may come between the tokens, or the object
    /// ends.
    #[inline(never)]
    fn key_spaced(&mut self, first: &mut bool) -> Result<Option<&'a [u8]>> {
        match self.next_byte()? {
            b'}' => {
                self.at += 1;
                self.depth -= 1;
                return Ok(None);
            }
            b',' if !*first => {
                self.at += 1;
                self.blanks();
            }
            _ if *first => {}
            _ => return Err(Unsure),
        }
        *first = false;
        if self.bytes.get(self.at) != Some(&b'"') {
            return Err(Unsure);
        }
        let start = self.at + 1;
        let end = run_end(self.bytes, start)?;
        if self.bytes[end] != b'"' {
            return Err(Unsure);
        }
        self.at = end + 1;
        self.expect(b':')?;
        Ok(Some(&self.bytes[start..end]))
    }

    /// Enters an array: the next value must be one.
    #[inline]
    pub fn array(&mut self) -> Result<()> {
        self.expect(b'[')?;
        self.enter()
    }

    /// Whether the array entered last has another element (then read it next);
    /// `false` at its end (consumed). `first` starts `true` for each array.
    #[inline]
    pub fn element(&mut self, first: &mut bool) -> Result<bool> {
        match self.next_byte()? {
            b']' => {
                self.at += 1;
                self.depth -= 1;
                Ok(false)
            }
            b',' if !*first => {
                self.at += 1;
                Ok(true)
            }
            _ if *first => {
                *first = false;
                Ok(true)
            }
            _ => Err(Unsure),
        }
    }

    /// Reads `null`.
    #[inline]
    pub fn null(&mut self) -> Result<()> {
        self.blanks();
        self.literal(b"null")
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Result<()> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// Reads a number and returns its text.
    pub fn number(&mut self) -> Result<&'a str> {
        self.blanks();
        let start = self.at;
        self.skip_number()?;
        // Only ASCII digits, signs, `.` and `e` were consumed.
        std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| Unsure)
    }

    /// Skips a number starting at the current byte.
    #[inline]
    fn skip_number(&mut self) -> Result<()> {
        let b = self.bytes;
        let mut at = self.at;
        let digits = |at: &mut usize| {
            let from = *at;
            while let Some(b'0'..=b'9') = b.get(*at) {
                *at += 1;
            }
            *at - from
        };
        if b.get(at) == Some(&b'-') {
            at += 1;
        }
        let whole = match b.get(at) {
            Some(b'0') => {
                at += 1;
                1
            }
            Some(b'1'..=b'9') => digits(&mut at),
            _ => return Err(Unsure),
        };
        let mut exponent = 0;
        match b.get(at) {
            Some(b'.') => {
                at += 1;
                if digits(&mut at) == 0 {
                    return Err(Unsure);
                }
            }
            // A leading zero followed by a digit.
            Some(b'0'..=b'9') => return Err(Unsure),
            _ => {}
        }
        if let Some(b'e' | b'E') = b.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = b.get(at) {
                at += 1;
            }
            let from = at;
            let n = digits(&mut at);
            if n == 0 || (n > 3 && !self.any_number) {
                return Err(Unsure);
            }
            // Saturating: a structure reader skips exponents of any length.
            exponent = b[from..at].iter().fold(0usize, |e, d| {
                e.saturating_mul(10).saturating_add(usize::from(d - b'0'))
            });
        }
        if whole.saturating_add(exponent) > MAX_MAGNITUDE && !self.any_number {
            return Err(Unsure);
        }
        self.at = at;
        Ok(())
    }

    /// Reads a string, borrowed unless it has escapes.
    pub fn string(&mut self) -> Result<Cow<'a, str>> {
        self.expect(b'"')?;
        let b = self.bytes;
        let mut owned: Option<String> = None;
        loop {
            let end = run_end(b, self.at)?;
            let text = std::str::from_utf8(&b[self.at..end]).map_err(|_| Unsure)?;
            self.at = end + 1;
            if b[end] == b'"' {
                return Ok(match owned {
                    Some(mut s) => {
                        s.push_str(text);
                        Cow::Owned(s)
                    }
                    None => Cow::Borrowed(text),
                });
            }
            let s = owned.get_or_insert_with(String::new);
            s.push_str(text);
            s.push(self.escape()?);
        }
    }

    /// Skips a string whose opening quote is the current byte.
    #[inline]
    fn skip_string(&mut self) -> Result<()> {
        self.at += 1;
        loop {
            let end = run_end(self.bytes, self.at)?;
            self.at = end + 1;
            if self.bytes[end] == b'"' {
                return Ok(());
            }
            self.escape()?;
        }
    }

    /// The character of the escape after a `\` (consumed); a lone surrogate is
    /// [`Unsure`].
    fn escape(&mut self) -> Result<char> {
        let b = self.bytes;
        let c = *b.get(self.at).ok_or(Unsure)?;
        self.at += 1;
        let simple = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(&b[self.at..]).ok_or(Unsure)?;
                self.at += 4;
                let code = match hi {
                    0xD800..=0xDBFF => {
                        if !b[self.at..].starts_with(b"\\u") {
                            return Err(Unsure);
                        }
                        let lo = hex4(&b[self.at + 2..]).ok_or(Unsure)?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(Unsure);
                        }
                        self.at += 6;
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(Unsure),
                    _ => hi,
                };
                return char::from_u32(code).ok_or(Unsure);
            }
            _ => return Err(Unsure),
        };
        Ok(simple)
    }

    /// Skips the next value, whatever it is, and returns where it was.
    pub fn skip(&mut self) -> Result<Range<usize>> {
        self.blanks();
        let start = self.at;
        // The open containers inside this value, innermost in the lowest bit:
        // 1 for an object, 0 for an array.
        let mut open: u128 = 0;
        let mut depth = 0u32;
        loop {
            // A value.
            match self.next_byte()? {
                c @ (b'{' | b'[') => {
                    if self.depth + depth >= MAX_DEPTH {
                        return Err(Unsure);
                    }
                    self.at += 1;
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.next_byte()? != close {
                        open = open << 1 | u128::from(c == b'{');
                        depth += 1;
                        if c == b'{' {
                            self.member_key()?;
                        }
                        continue;
                    }
                    self.at += 1;
                }
                b'"' => self.skip_string()?,
                b'-' | b'0'..=b'9' => self.skip_number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return Err(Unsure),
            }
            // After a value: close what ends here, then the next member.
            loop {
                if depth == 0 {
                    return Ok(start..self.at);
                }
                let object = open & 1 == 1;
                match self.next_byte()? {
                    b',' => {
                        self.at += 1;
                        if object {
                            self.blanks();
                            self.member_key()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return Err(Unsure),
                }
                self.at += 1;
                open >>= 1;
                depth -= 1;
            }
        }
    }

    /// A key (any string) and its `:`, inside a skipped object.
    #[inline]
    fn member_key(&mut self) -> Result<()> {
        if self.next_byte()? != b'"' {
            return Err(Unsure);
        }
        self.skip_string()?;
        self.expect(b':')
    }
}

/// The most members an [`Outline`] keeps (an OpenAI chat completion has eight at
/// the top level; compatible servers add a few).
pub const OUTLINE_MEMBERS: usize = 16;

/// Where each top-level member of a JSON object is, found by one strict read of
/// the whole document, so that a second reader of the same bytes can go straight
/// to the members it wants instead of reading everything again.
///
/// The provider service reads every JSON answer whole (for its `usage`, and to
/// refuse a malformed one); output validation above it reads the same bytes for a
/// few members. The provider leaves the outline it made in the response's
/// [extensions](http::Response::extensions); validation takes it only if it was
/// made from the very bytes it holds ([`Outline::of`]: the same allocation and
/// length), so a layer between them that rewrites the body is safe: the outline is
/// then ignored and the body read again.
///
/// An outline vouches that the bytes are one JSON object read as strictly as
/// [`Reader`] reads (serde_json would parse it into a `Value`), with each member's
/// key (without escapes) and value; duplicate keys are kept in order, as the
/// bytes have them. An object with more than [`OUTLINE_MEMBERS`] members, or with
/// anything the reader cannot vouch for, has none ([`Unsure`]).
///
/// ```
/// use bytes::Bytes;
/// use tower_failover_core::json::{Kind, Outline};
///
/// let body = Bytes::from_static(br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3}}"#);
/// let outline = Outline::read(&body).unwrap();
/// let (key, mut value) = outline.members().nth(2).unwrap();
/// assert_eq!(key, b"usage");
/// assert_eq!(value.peek().unwrap(), Kind::Object);
/// assert_eq!(&body[value.skip().unwrap()], br#"{"prompt_tokens":3}"#);
///
/// // Only the bytes it was read from: a copy of them is not vouched for.
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(outline);
/// assert!(Outline::of(&body, res.extensions()).is_some());
/// assert!(Outline::of(&Bytes::copy_from_slice(&body), res.extensions()).is_none());
/// ```
#[derive(Clone)]
pub struct Outline {
    bytes: bytes::Bytes,
    len: u8,
    /// Per member: its key's first byte and end, and its value's first byte.
    members: [[u32; 3]; OUTLINE_MEMBERS],
}

impl Outline {
    /// Reads `bytes` whole: one JSON object and nothing after it but blanks.
    pub fn read(bytes: &bytes::Bytes) -> Result<Outline> {
        Outline::read_with(bytes, |_, _| Ok(false))?.ok_or(Unsure)
    }

    /// [`read`](Self::read), handing each member to `visit` on the way: it may read
    /// the value with the reader it is given (then it returns `true`, and must have
    /// read the value whole), or leave it to be skipped (`false`). A reader that
    /// wants one member reads it here instead of going through the outline after.
    ///
    /// `Ok(None)`: the object has more members than an outline keeps; `visit` has
    /// still seen every one of them.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_failover_core::json::Outline;
    ///
    /// let body = Bytes::from_static(br#"{"usage":{"prompt_tokens":3},"id":"x"}"#);
    /// let mut usage = None;
    /// let outline = Outline::read_with(&body, |key, value| {
    ///     if key == b"usage" {
    ///         usage = Some(value.skip()?);
    ///         return Ok(true);
    ///     }
    ///     Ok(false)
    /// });
    /// assert_eq!(outline.unwrap().unwrap().members().count(), 2);
    /// assert_eq!(&body[usage.unwrap()], br#"{"prompt_tokens":3}"#);
    /// ```
    pub fn read_with<'b>(
        bytes: &'b bytes::Bytes,
        mut visit: impl FnMut(&'b [u8], &mut Reader<'b>) -> Result<bool>,
    ) -> Result<Option<Outline>> {
        // Offsets are kept in 32 bits.
        if u32::try_from(bytes.len()).is_err() {
            return Err(Unsure);
        }
        let mut r = Reader::new(bytes);
        r.object()?;
        let mut members = [[0u32; 3]; OUTLINE_MEMBERS];
        let mut len = 0;
        let mut first = true;
        while let Some(key) = r.key(&mut first)? {
            let value_at = r.position();
            if !visit(key, &mut r)? {
                r.skip()?;
            }
            if let Some(slot) = members.get_mut(len) {
                // The key is a sub-slice of `bytes`: its offset is its distance.
                let key_at = key.as_ptr() as usize - bytes.as_ptr() as usize;
                // Every offset is at most `bytes.len()`, checked above to fit.
                *slot = [key_at, key_at + key.len(), value_at].map(|n| n as u32);
            }
            len += 1;
        }
        r.end()?;
        Ok((len <= OUTLINE_MEMBERS).then(|| Outline {
            bytes: bytes.clone(),
            len: len as u8,
            members,
        }))
    }

    /// The outline among `extensions`, if it was read from exactly `bytes`.
    pub fn of<'e>(bytes: &[u8], extensions: &'e http::Extensions) -> Option<&'e Outline> {
        extensions
            .get::<Outline>()
            .filter(|o| o.bytes.as_ptr() == bytes.as_ptr() && o.bytes.len() == bytes.len())
    }

    /// The bytes this outline was read from.
    pub fn bytes(&self) -> &bytes::Bytes {
        &self.bytes
    }

    /// Each member in order: its key, and a reader at its value (inside the
    /// object, so nesting limits count as for a reader that got there itself).
    pub fn members(&self) -> impl Iterator<Item = (&[u8], Reader<'_>)> + '_ {
        let bytes: &[u8] = &self.bytes;
        self.members[..usize::from(self.len)]
            .iter()
            .map(move |&[key, key_end, value]| {
                let key = &bytes[key as usize..key_end as usize];
                let reader = Reader {
                    bytes,
                    at: value as usize,
                    depth: 1,
                    any_number: false,
                };
                (key, reader)
            })
    }
}

impl fmt::Debug for Outline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<_> = self
            .members()
            .map(|(k, _)| String::from_utf8_lossy(k))
            .collect();
        f.debug_struct("Outline")
            .field("bytes", &self.bytes.len())
            .field("keys", &keys)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the reader skips `text` as one whole document.
    fn skips(text: &str) -> bool {
        let mut r = Reader::new(text.as_bytes());
        r.skip().is_ok() && r.end().is_ok()
    }

    #[test]
    fn the_structure_reader_skips_numbers_of_any_size() {
        for big in ["1e400", "-1E+99999999999999999999999999", &"9".repeat(400)] {
            assert!(!skips(big), "{big}");
            let mut r = Reader::structure(big.as_bytes());
            assert!(r.skip().is_ok() && r.end().is_ok(), "{big}");
        }
        // Only numbers: what is not JSON is still refused.
        for bad in ["1e", "01", "1.", "-", "1e+"] {
            let mut r = Reader::structure(bad.as_bytes());
            assert!(r.skip().is_err() || r.end().is_err(), "{bad}");
        }
    }

    #[test]
    fn skips_only_what_serde_json_parses() {
        for good in [
            "null",
            " true ",
            "false",
            "0",
            "-0.5e-3",
            "12E+2",
            r#""a\"b\\c\/\b\f\n\r\t\u00e9\ud83d\ude00""#,
            "\"h\u{e9}llo\"",
            "[]",
            "{}",
            "[1,[2,[]],{}]",
            r#"{"a":{"b":[1,{"c":null}]},"d":"e"}"#,
            " { \"a\" : [ 1 , 2 ] } ",
        ] {
            assert!(skips(good), "{good}");
            assert!(serde_json::from_str::<serde_json::Value>(good).is_ok());
        }
        for bad in [
            "",
            "nul",
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "+1",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{\"a\":1,}",
            "{\"a\"1}",
            "{1:2}",
            "{\"a\":1 \"b\":2}",
            "[}",
            "{]",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"a\u{1}\"",
            "\"abc",
            "[1] 2",
            "1e400",
            "NaN",
        ] {
            assert!(!skips(bad), "{bad:?}");
        }
        assert!(!skips(
            &format!("\"{}\"", "\u{e9}").replace('\u{e9}', "\u{0}")
        ));
        let mut invalid = b"\"ab".to_vec();
        invalid.extend_from_slice(&[0xff, b'"']);
        assert!(Reader::new(&invalid).skip().is_err());
    }

    #[test]
    fn every_position_of_a_word_is_looked_at() {
        for len in 0..20 {
            for at in 0..len {
                let mut text: Vec<char> = "abcdefghijklmnopqrst".chars().take(len).collect();
                for (c, good) in [
                    ('\u{1}', false),
                    ('\u{1f}', false),
                    ('\u{e9}', true),
                    ('\u{7f}', true),
                ] {
                    text[at] = c;
                    let body: String = text.iter().collect();
                    let quoted = format!("\"{body}\"");
                    assert_eq!(skips(&quoted), good, "{quoted:?}");
                    if good {
                        assert_eq!(Reader::new(quoted.as_bytes()).string().unwrap(), body);
                    }
                }
                // Cut short anywhere: never a string.
                let quoted = format!("\"{}", text.iter().collect::<String>());
                assert!(!skips(&quoted[..at + 1]));
            }
        }
    }

    #[test]
    fn nesting_stops_at_the_limit() {
        let at = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(skips(&at(MAX_DEPTH as usize)));
        assert!(!skips(&at(MAX_DEPTH as usize + 1)));
        let mut r = Reader::new(b"{\"a\":[[1]]}");
        r.object().unwrap();
        assert_eq!(r.key(&mut true).unwrap(), Some(&b"a"[..]));
        assert_eq!(r.skip().unwrap(), 5..10);
    }

    #[test]
    fn reads_members_and_strings() {
        let body = br#" {"a" : "x\ny", "b":[ 1 , "z" ], "c":{}} "#;
        let mut r = Reader::new(body);
        r.object().unwrap();
        let mut first = true;
        assert_eq!(r.key(&mut first).unwrap(), Some(&b"a"[..]));
        assert_eq!(r.string().unwrap(), "x\ny");
        assert_eq!(r.key(&mut first).unwrap(), Some(&b"b"[..]));
        r.array().unwrap();
        let mut f = true;
        assert!(r.element(&mut f).unwrap());
        assert_eq!(r.peek().unwrap(), Kind::Number);
        assert_eq!(r.number().unwrap(), "1");
        assert!(r.element(&mut f).unwrap());
        assert!(matches!(r.string().unwrap(), Cow::Borrowed("z")));
        assert!(!r.element(&mut f).unwrap());
        assert_eq!(r.key(&mut first).unwrap(), Some(&b"c"[..]));
        assert_eq!(r.peek().unwrap(), Kind::Object);
        r.skip().unwrap();
        assert_eq!(r.key(&mut first).unwrap(), None);
        r.end().unwrap();
        // A key with escapes is left to serde_json.
        let mut r = Reader::new(br#"{"us\u0061ge":1}"#);
        r.object().unwrap();
        assert!(r.key(&mut true).is_err());
    }

    /// JSON-like text built from the pieces that matter to a reader.
    fn texty() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop::sample::select(vec![
            "{", "}", "[", "]", ",", ":", " ", "\"", "\"a\"", "\\", "\\u", "d83d", "\\ude00",
            "\\n", "0", "-", "1", ".", "e", "+", "9", "null", "true", "fals", "\u{e9}", "\u{1}",
            "x",
        ]);
        prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    /// The members a reader finds walking the object itself: each key, and the
    /// bytes of its value.
    fn walked(bytes: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut r = Reader::new(bytes);
        r.object()?;
        let mut out = Vec::new();
        let mut first = true;
        while let Some(key) = r.key(&mut first)? {
            let value = r.skip()?;
            out.push((key.to_vec(), bytes[value].to_vec()));
        }
        r.end()?;
        Ok(out)
    }

    /// The same members, from an outline.
    fn outlined(bytes: &bytes::Bytes) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let outline = Outline::read(bytes)?;
        let mut out = Vec::new();
        for (key, mut value) in outline.members() {
            let at = value.skip().expect("an outlined value reads again");
            out.push((key.to_vec(), bytes[at].to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn an_outline_finds_the_members_a_walk_finds() {
        for text in [
            r#"{}"#,
            r#" { "a" : 1 , "b":[1,{"c":"}"}], "a":null } "#,
            r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"h\u00e9"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9}}"#,
        ] {
            let bytes = bytes::Bytes::from(text);
            assert_eq!(outlined(&bytes), walked(&bytes), "{text}");
            assert!(outlined(&bytes).is_ok(), "{text}");
        }
        // What a walk refuses, an outline refuses; and one member too many.
        for text in [
            r#"[1]"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"\u0061":1}"#,
            r#"{"a":01}"#,
        ] {
            let bytes = bytes::Bytes::from(text);
            assert!(
                walked(&bytes).is_err() && Outline::read(&bytes).is_err(),
                "{text}"
            );
        }
        let wide: String = (0..=OUTLINE_MEMBERS)
            .map(|i| format!(",\"k{i}\":{i}"))
            .collect();
        let wide = bytes::Bytes::from(format!("{{{}}}", &wide[1..]));
        assert!(walked(&wide).is_ok());
        assert!(Outline::read(&wide).is_err(), "more members than it keeps");
        let mut seen = 0;
        let none = Outline::read_with(&wide, |_, _| {
            seen += 1;
            Ok(false)
        });
        assert!(matches!(none, Ok(None)));
        assert_eq!(seen, OUTLINE_MEMBERS + 1, "every member is still visited");
        // A member the visitor reads is not skipped again, and is outlined.
        let body = bytes::Bytes::from_static(br#"{"a":[1,2],"b":true}"#);
        let outline = Outline::read_with(&body, |key, r| {
            if key == b"a" {
                r.skip()?;
                return Ok(true);
            }
            Ok(false)
        });
        let outline = outline.unwrap().unwrap();
        assert_eq!(outlined(&body), walked(&body));
        let (_, mut a) = outline.members().next().unwrap();
        assert_eq!(&body[a.skip().unwrap()], b"[1,2]");
        // A visitor that leaves its value half read: the document is refused.
        let half = Outline::read_with(&body, |key, r| {
            if key == b"a" {
                r.array()?;
                return Ok(true);
            }
            Ok(false)
        });
        assert!(half.is_err());
    }

    #[test]
    fn an_outline_is_found_only_beside_the_bytes_it_was_read_from() {
        let body = bytes::Bytes::from_static(br#"{"a":1}"#);
        let mut ext = http::Extensions::new();
        assert!(Outline::of(&body, &ext).is_none());
        ext.insert(Outline::read(&body).unwrap());
        assert!(Outline::of(&body, &ext).is_some());
        assert!(
            Outline::of(&body.clone(), &ext).is_some(),
            "a clone shares the bytes"
        );
        // The same text elsewhere, or a part of the same bytes: not vouched for.
        assert!(Outline::of(&bytes::Bytes::copy_from_slice(&body), &ext).is_none());
        assert!(Outline::of(&body.slice(..3), &ext).is_none());
        let outline = ext.get::<Outline>().unwrap();
        assert_eq!(
            format!("{outline:?}"),
            r#"Outline { bytes: 7, keys: ["a"] }"#
        );
    }

    /// The keys of the object `text` as [`Reader::key`] reads them (values
    /// skipped), or `None` where the reader gives up.
    fn keys_of(text: &str) -> Option<Vec<String>> {
        let mut r = Reader::new(text.as_bytes());
        r.object().ok()?;
        let (mut first, mut keys) = (true, Vec::new());
        while let Some(k) = r.key(&mut first).ok()? {
            keys.push(std::str::from_utf8(k).ok()?.to_owned());
            r.skip().ok()?;
        }
        r.end().ok()?;
        Some(keys)
    }

    #[test]
    fn keys_are_read_alike_with_and_without_blanks() {
        let ab = Some(vec!["a".to_owned(), "b".to_owned()]);
        for text in [
            r#"{"a":1,"b":2}"#,
            r#"{ "a":1,"b":2}"#,
            r#"{"a" :1,"b":2}"#,
            r#"{"a": 1 ,"b":2}"#,
            r#"{"a":1, "b" : 2 }"#,
            "{\n  \"a\": 1,\n  \"b\": 2\n}",
        ] {
            assert_eq!(keys_of(text), ab, "{text}");
        }
        assert_eq!(keys_of("{}"), Some(vec![]));
        assert_eq!(keys_of(r#"{"é":1}"#), Some(vec!["é".to_owned()]));
        assert_eq!(
            keys_of(r#"{"a long key, past eight bytes":1}"#).map(|k| k.len()),
            Some(1)
        );
        // Escapes, a missing colon or comma, a cut key: given up, either way.
        for bad in [
            r#"{"a\"b":1}"#,
            r#"{"a"1}"#,
            r#"{"a":1"b":2}"#,
            r#"{"a":1,,"b":2}"#,
            r#"{,"a":1}"#,
            r#"{"ab"#,
            r#"{"a":1,"#,
            "{\"a\u{1}\":1}",
        ] {
            assert_eq!(keys_of(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn keys_are_read_as_serde_json_writes_them(
            map in proptest::collection::btree_map("[a-z_é\"\\\\\u{1}]{0,12}", 0u8..9, 0..6),
        ) {
            let object: serde_json::Map<String, serde_json::Value> =
                map.iter().map(|(k, v)| (k.clone(), (*v).into())).collect();
            let value = serde_json::Value::Object(object);
            // A key the writer escapes is one the reader gives up on.
            let plain = map.keys().all(|k| !k.chars().any(|c| c == '"' || c == '\\' || c < ' '));
            let expected = plain.then(|| map.keys().cloned().collect::<Vec<_>>());
            let compact = serde_json::to_string(&value).unwrap();
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            proptest::prop_assert_eq!(keys_of(&compact), expected.clone(), "{}", compact);
            proptest::prop_assert_eq!(keys_of(&pretty), expected, "{}", pretty);
        }

        #[test]
        fn never_accepts_what_serde_json_refuses(text in texty()) {
            if skips(&text) {
                let v = serde_json::from_str::<serde_json::Value>(&text);
                proptest::prop_assert!(v.is_ok(), "{:?}", text);
            }
        }

        #[test]
        fn an_outline_agrees_with_a_walk(body in texty()) {
            let text = format!("{{\"k\":{body}}}");
            let bytes = bytes::Bytes::from(text.clone());
            proptest::prop_assert_eq!(outlined(&bytes), walked(&bytes), "{:?}", text);
        }

        #[test]
        fn reads_strings_as_serde_json_does(s in ".*") {
            let text = serde_json::to_string(&s).unwrap();
            let mut r = Reader::new(text.as_bytes());
            proptest::prop_assert_eq!(r.string().unwrap(), s.as_str());
            // And with every character escaped, as an ASCII-only writer sends it.
            let mut escaped = String::from("\"");
            for unit in s.encode_utf16() {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
            escaped.push('"');
            let mut r = Reader::new(escaped.as_bytes());
            proptest::prop_assert_eq!(r.string().unwrap(), s.as_str());
        }
    }
}
