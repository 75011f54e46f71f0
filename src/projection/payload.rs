//! Payload reading: the jsonb text is parsed straight into the few fields
//! the reducers know (borrowing strings where possible), everything else is
//! skipped without building a `Value` tree. Each field remembers whether it
//! was absent, null, a string, a number or something else, which is
//! exactly what the payload contract of design.md §2 needs to decide.
//!
//! ```text
//! text ─▶ flat::read: no `\` or control byte, flat object? ──yes──▶ RawPayload
//!              │ no (escapes, nesting, other whitespace, any invalid text)
//!              ▼
//!         serde_json visitor (the definition) ──▶ RawPayload | PayloadError
//! ```
//!
//! Why the fast path is safe: it answers only for texts in which every
//! string ends at the next quote and every value is a string, literal or
//! number whose grammar it checks; numbers are converted by serde_json
//! itself. For everything else it declines, and serde decides. A property
//! test holds the two to the same answer whenever the fast path answers.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// A JSON number as serde_json reports it (no arbitrary precision).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Num {
    U(u64),
    I(i64),
    F(f64),
}

/// One payload field.
#[derive(Debug, Default, PartialEq)]
pub(crate) enum Field<'a> {
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    Num(Num),
    /// bool, array or object.
    Other,
}

/// The known payload keys of design.md §2 (unknown keys are ignored).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RawPayload<'a> {
    pub(crate) thread_id: Field<'a>,
    pub(crate) title: Field<'a>,
    pub(crate) name: Field<'a>,
    pub(crate) input_tokens: Field<'a>,
    pub(crate) output_tokens: Field<'a>,
    pub(crate) error: Field<'a>,
    pub(crate) reason: Field<'a>,
    pub(crate) repo: Field<'a>,
    pub(crate) host: Field<'a>,
    pub(crate) notification_id: Field<'a>,
    pub(crate) body: Field<'a>,
}

/// Why a payload could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PayloadError {
    /// Valid JSON, but not an object.
    NotObject,
    /// Not JSON at all (cannot come from jsonb, but the text is external).
    InvalidJson(String),
}

#[cfg(test)]
/// Reads a payload text.
pub(crate) fn read(text: &str) -> Result<RawPayload<'_>, PayloadError> {
    let mut p = RawPayload::default();
    read_into(text, &mut p).map(|()| p)
}

/// [`read`] into a caller's fresh (default) `RawPayload`: the hot path,
/// which does not move the ~350-byte struct through results.
///
/// Most payloads are what `jsonb` prints for a flat object: no escapes, no
/// nesting. `flat::read` reads those in one pass (a third of serde's
/// instructions); anything else, including every invalid text, goes to
/// serde_json, which stays the definition (a property test holds the two
/// to the same answer).
pub(crate) fn read_into<'a>(text: &'a str, p: &mut RawPayload<'a>) -> Result<(), PayloadError> {
    if flat::read(text, p).is_some() {
        return Ok(());
    }
    *p = RawPayload::default();
    read_with_serde(text, p)
}

/// [`read_into`] through serde_json only (the definition).
pub(crate) fn read_with_serde<'a>(
    text: &'a str,
    p: &mut RawPayload<'a>,
) -> Result<(), PayloadError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let is_object = TopSeed(p)
        .deserialize(&mut de)
        .and_then(|is_object| de.end().map(|()| is_object))
        .map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
    if is_object {
        Ok(())
    } else {
        Err(PayloadError::NotObject)
    }
}

/// The top level, read into the payload: `true` for an object, `false`
/// for any other JSON value.
struct TopSeed<'p, 'a>(&'p mut RawPayload<'a>);

impl<'de> DeserializeSeed<'de> for TopSeed<'_, 'de> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(TopVisitor(self.0))
    }
}

struct TopVisitor<'p, 'a>(&'p mut RawPayload<'a>);

impl<'de> Visitor<'de> for TopVisitor<'_, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let p = self.0;
        while let Some(key) = map.next_key::<Key>()? {
            match p.slot(key) {
                // Duplicate keys (not possible in jsonb): the last one wins.
                Some(slot) => *slot = map.next_value::<Field<'de>>()?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
}

impl<'a> RawPayload<'a> {
    /// Where a payload key goes (`None`: a key the reducers ignore).
    fn slot(&mut self, key: Key) -> Option<&mut Field<'a>> {
        Some(match key {
            Key::ThreadId => &mut self.thread_id,
            Key::Title => &mut self.title,
            Key::Name => &mut self.name,
            Key::InputTokens => &mut self.input_tokens,
            Key::OutputTokens => &mut self.output_tokens,
            Key::Error => &mut self.error,
            Key::Reason => &mut self.reason,
            Key::Repo => &mut self.repo,
            Key::Host => &mut self.host,
            Key::NotificationId => &mut self.notification_id,
            Key::Body => &mut self.body,
            Key::Other => return None,
        })
    }
}

/// The payload keys the reducers read (design.md §2), the ones `Key` knows.
pub const KNOWN_KEYS: [&str; 11] = [
    "thread_id",
    "title",
    "name",
    "input_tokens",
    "output_tokens",
    "error",
    "reason",
    "repo",
    "host",
    "notification_id",
    "body",
];

enum Key {
    ThreadId,
    Title,
    Name,
    InputTokens,
    OutputTokens,
    Error,
    Reason,
    Repo,
    Host,
    NotificationId,
    Body,
    Other,
}

impl Key {
    fn of(s: &str) -> Key {
        match s {
            "thread_id" => Key::ThreadId,
            "title" => Key::Title,
            "name" => Key::Name,
            "input_tokens" => Key::InputTokens,
            "output_tokens" => Key::OutputTokens,
            "error" => Key::Error,
            "reason" => Key::Reason,
            "repo" => Key::Repo,
            "host" => Key::Host,
            "notification_id" => Key::NotificationId,
            "body" => Key::Body,
            _ => Key::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(Key::of(s))
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The one-pass reader of flat objects without escapes.
mod flat {
    use std::borrow::Cow;

    use super::{Field, Key, Num, RawPayload};

    /// Reads `text` into `p` if it is a JSON object whose values are all
    /// strings, numbers, `true`, `false` or `null`, with no `\` and no
    /// control character anywhere, separated by spaces only. `None` for
    /// anything else, valid or not (`p` may then hold part of the fields).
    pub(super) fn read<'a>(text: &'a str, p: &mut RawPayload<'a>) -> Option<()> {
        let b = text.as_bytes();
        // One pass over the whole text, no early exit, so that it
        // vectorises: without a backslash a string ends at the next quote,
        // and without control characters no string holds a raw one.
        if b.iter()
            .fold(false, |acc, &c| acc | (c < 0x20) | (c == b'\\'))
        {
            return None;
        }
        let mut i = spaces(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        i = spaces(b, i + 1);
        if b.get(i) == Some(&b'}') {
            return (spaces(b, i + 1) == b.len()).then_some(());
        }
        loop {
            let (key, next) = string(text, i)?;
            i = spaces(b, next);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = spaces(b, i + 1);
            let (value, next) = value(text, i)?;
            // Duplicate keys (not possible in jsonb): the last one wins.
            if let Some(slot) = p.slot(Key::of(key)) {
                *slot = value;
            }
            i = spaces(b, next);
            match b.get(i) {
                Some(b',') => i = spaces(b, i + 1),
                Some(b'}') => return (spaces(b, i + 1) == b.len()).then_some(()),
                _ => return None,
            }
        }
    }

    fn spaces(b: &[u8], mut i: usize) -> usize {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        i
    }

    /// The string starting with the quote at `i` (no escapes: checked by
    /// the caller), and the index after its closing quote.
    fn string(text: &str, i: usize) -> Option<(&str, usize)> {
        let b = text.as_bytes();
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let len = memchr::memchr(b'"', b.get(i + 1..)?)?;
        // Both ends are ASCII quotes, so this is a char boundary.
        Some((text.get(i + 1..i + 1 + len)?, i + len + 2))
    }

    /// The value at `i` and the index after it. Numbers are checked
    /// against JSON's grammar here and converted by serde_json, so that a
    /// number is the same `Num` on both paths.
    fn value(text: &str, i: usize) -> Option<(Field<'_>, usize)> {
        let b = text.as_bytes();
        match *b.get(i)? {
            b'"' => string(text, i).map(|(s, next)| (Field::Str(Cow::Borrowed(s)), next)),
            b'n' => literal(b, i, b"null", Field::Null),
            b't' => literal(b, i, b"true", Field::Other),
            b'f' => literal(b, i, b"false", Field::Other),
            b'-' | b'0'..=b'9' => {
                let end = number_end(b, i)?;
                let digits = b.get(i..end)?;
                // Token counts and durations: plain non-negative integers,
                // which serde_json reads as u64 too (it cost ~200
                // instructions a number).
                if let Some(v) = plain_u64(digits) {
                    return Some((Field::Num(Num::U(v)), end));
                }
                let field = serde_json::from_str::<Field>(text.get(i..end)?).ok()?;
                Some((field, end))
            }
            _ => None,
        }
    }

    fn literal<'a>(
        b: &[u8],
        i: usize,
        word: &[u8],
        field: Field<'a>,
    ) -> Option<(Field<'a>, usize)> {
        (b.get(i..i + word.len())? == word).then_some((field, i + word.len()))
    }

    /// A number of ASCII digits only (the caller has checked it against
    /// JSON's grammar) that fits a u64.
    fn plain_u64(digits: &[u8]) -> Option<u64> {
        if digits.len() > 19 {
            return None; // may not fit; serde_json decides
        }
        digits.iter().try_fold(0u64, |v, &d| {
            d.is_ascii_digit().then(|| v * 10 + u64::from(d - b'0'))
        })
    }

    /// The end of the JSON number at `i`:
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
        let digits = |mut i: usize| {
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            (i > start).then_some(i)
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        i = match b.get(i)? {
            b'0' => i + 1,
            b'1'..=b'9' => digits(i)?,
            _ => return None,
        };
        if b.get(i) == Some(&b'.') {
            i = digits(i + 1)?;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = digits(i)?;
        }
        Some(i)
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Field::Str(Cow::Owned(s)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Field::Num(Num::U(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Field::Num(Num::I(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Field::Num(Num::F(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_known_fields_and_skips_the_rest() {
        let p = read(r#"{"thread_id":"t\"1","title":null,"x":{"$w":[1,{"a":2}]},"input_tokens":5.0,"output_tokens":-3,"name":true}"#).unwrap();
        assert_eq!(p.thread_id, Field::Str(Cow::Owned("t\"1".into())));
        assert_eq!(p.title, Field::Null);
        assert_eq!(p.input_tokens, Field::Num(Num::F(5.0)));
        assert_eq!(p.output_tokens, Field::Num(Num::I(-3)));
        assert_eq!(p.name, Field::Other);
        assert_eq!(p.body, Field::Absent);
        assert!(matches!(
            read(r#"{"title":"plain"}"#).unwrap().title,
            Field::Str(Cow::Borrowed("plain"))
        ));
    }

    #[test]
    fn flat_jsonb_text_takes_the_one_pass_reader() {
        for t in [
            r#"{}"#,
            r#" { } "#,
            r#"{"name": "step-3", "detail": "writer=0;lorem ipsum"}"#,
            r#"{"title": null, "thread_id": "t-1", "x": true, "y": false}"#,
            r#"{"input_tokens": 12, "output_tokens": 5.0, "z": -1.5e-3}"#,
            r#"{"input_tokens":0,"output_tokens":18446744073709551616}"#,
            r#"{"input_tokens":9999999999999999999,"output_tokens":18446744073709551615}"#,
            r#"{"input_tokens":10000000000000000000,"output_tokens":-0}"#,
            r#"{"input_tokens":-9223372036854775808,"output_tokens":0.0}"#,
            r#"{"body": "", "": "empty key", "title": "é ü 🙂"}"#,
        ] {
            let mut fast = RawPayload::default();
            assert!(flat::read(t, &mut fast).is_some(), "{t}");
            let mut slow = RawPayload::default();
            read_with_serde(t, &mut slow).unwrap();
            assert_eq!(fast, slow, "{t}");
        }
        // Escapes, nesting, other whitespace, bad numbers, trailing text:
        // serde decides.
        for t in [
            r#"{"title": "a\"b"}"#,
            r#"{"x": {"a": 1}}"#,
            r#"{"x": [1]}"#,
            "{\"title\":\n\"t\"}",
            r#"{"n": 01}"#,
            r#"{"n": 1.}"#,
            r#"{"n": -}"#,
            r#"{"n": 1e}"#,
            r#"{"n": 1e400}"#,
            r#"{"a": 1,}"#,
            r#"{"a" 1}"#,
            r#"{"a": 1} x"#,
            r#"{"a": tru}"#,
            r#"{"a": "unterminated}"#,
            r#"[1]"#,
            r#""s""#,
        ] {
            assert!(flat::read(t, &mut RawPayload::default()).is_none(), "{t}");
        }
    }

    proptest::proptest! {
        /// Whenever the one-pass reader answers, serde gives the same
        /// answer, on valid JSON of every shape and on near-misses of it.
        #[test]
        fn the_one_pass_reader_agrees_with_serde(
            entries in proptest::collection::vec((key(), value_text()), 0..6),
            compact in proptest::bool::ANY,
            edit in proptest::option::of((0usize..200, "[ -~é]{0,2}", 0usize..3)),
        ) {
            let (colon, comma) = if compact { (":", ",") } else { (": ", ", ") };
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}{colon}{v}", serde_json::to_string(k).unwrap()))
                .collect();
            let mut text = format!("{{{}}}", body.join(comma));
            if let Some((at, insert, remove)) = edit {
                let at = text.char_indices().map(|(i, _)| i).nth(at % text.chars().count()).unwrap_or(0);
                let end = text[at..].char_indices().nth(remove).map_or(text.len(), |(i, _)| at + i);
                text.replace_range(at..end, &insert);
            }
            let mut fast = RawPayload::default();
            let took_fast_path = flat::read(&text, &mut fast).is_some();
            let mut slow = RawPayload::default();
            let serde = read_with_serde(&text, &mut slow);
            if took_fast_path {
                proptest::prop_assert_eq!(&serde, &Ok(()), "{}", text);
                proptest::prop_assert_eq!(&fast, &slow, "{}", text);
            }
            let mut via_read_into = RawPayload::default();
            proptest::prop_assert_eq!(read_into(&text, &mut via_read_into), serde, "{}", text);
            proptest::prop_assert_eq!(via_read_into, slow, "{}", text);
        }
    }

    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::sample::select([&KNOWN_KEYS[..], &["detail"]].concat())
                .prop_map(str::to_owned),
            "[a-z_\"\\\\\n]{0,6}",
        ]
    }

    fn value_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(|x| serde_json::to_string(&x).unwrap()),
            "-?[0-9]{1,3}(\\.[0-9]{0,2})?([eE][+-]?[0-9]{0,3})?",
            ".{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            "[ -~]{0,8}".prop_map(|s| format!("\"{s}\"")),
            Just("{\"a\": [1, {\"b\": null}]}".to_owned()),
            Just("[]".to_owned()),
        ]
    }

    #[test]
    fn every_known_key_has_a_slot() {
        for k in KNOWN_KEYS {
            assert!(RawPayload::default().slot(Key::of(k)).is_some(), "{k}");
        }
        assert!(RawPayload::default().slot(Key::of("detail")).is_none());
    }

    #[test]
    fn non_objects_and_garbage() {
        for t in ["[1,2]", "1", "\"s\"", "null", "true", "1.5"] {
            assert_eq!(read(t).err(), Some(PayloadError::NotObject), "{t}");
        }
        assert!(matches!(read("{"), Err(PayloadError::InvalidJson(_))));
        assert!(matches!(read(""), Err(PayloadError::InvalidJson(_))));
        assert!(matches!(read("{} x"), Err(PayloadError::InvalidJson(_))));
    }
}
