//! One-pass payload reader: the jsonb text is parsed straight into the few
//! fields the reducers know (borrowing strings where possible), everything
//! else is skipped without building a `Value` tree. Each field remembers
//! whether it was absent, null, a string, a number or something else, which
//! is exactly what the payload contract of DESIGN §2 needs to decide.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// A JSON number as serde_json reports it (no arbitrary precision).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    U(u64),
    I(i64),
    F(f64),
}

/// One payload field.
#[derive(Debug, Default, PartialEq)]
pub enum Field<'a> {
    #[default]
    Absent,
    Null,
    Str(Cow<'a, str>),
    Num(Num),
    /// bool, array or object.
    Other,
}

/// The known payload keys of DESIGN §2 (unknown keys are ignored).
#[derive(Debug, Default)]
pub struct RawPayload<'a> {
    pub thread_id: Field<'a>,
    pub title: Field<'a>,
    pub name: Field<'a>,
    pub input_tokens: Field<'a>,
    pub output_tokens: Field<'a>,
    pub error: Field<'a>,
    pub reason: Field<'a>,
    pub repo: Field<'a>,
    pub host: Field<'a>,
    pub notification_id: Field<'a>,
    pub body: Field<'a>,
}

/// Why a payload could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// Valid JSON, but not an object.
    NotObject,
    /// Not JSON at all (cannot come from jsonb, but the text is external).
    InvalidJson(String),
}

/// Reads a payload text.
pub fn read(text: &str) -> Result<RawPayload<'_>, PayloadError> {
    let mut p = RawPayload::default();
    read_into(text, &mut p).map(|()| p)
}

/// [`read`] into a caller's `RawPayload` (fields not in the text are left
/// as they were): the hot path, which does not move the ~350-byte struct
/// through the deserializer's results.
pub fn read_into<'a>(text: &'a str, p: &mut RawPayload<'a>) -> Result<(), PayloadError> {
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
            let slot = match key {
                Key::ThreadId => &mut p.thread_id,
                Key::Title => &mut p.title,
                Key::Name => &mut p.name,
                Key::InputTokens => &mut p.input_tokens,
                Key::OutputTokens => &mut p.output_tokens,
                Key::Error => &mut p.error,
                Key::Reason => &mut p.reason,
                Key::Repo => &mut p.repo,
                Key::Host => &mut p.host,
                Key::NotificationId => &mut p.notification_id,
                Key::Body => &mut p.body,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            // Duplicate keys (not possible in jsonb): the last one wins.
            *slot = map.next_value::<Field<'de>>()?;
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

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
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
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
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
    fn non_objects_and_garbage() {
        for t in ["[1,2]", "1", "\"s\"", "null", "true", "1.5"] {
            assert_eq!(read(t).err(), Some(PayloadError::NotObject), "{t}");
        }
        assert!(matches!(read("{"), Err(PayloadError::InvalidJson(_))));
        assert!(matches!(read(""), Err(PayloadError::InvalidJson(_))));
        assert!(matches!(read("{} x"), Err(PayloadError::InvalidJson(_))));
    }
}
