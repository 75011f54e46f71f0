//! Convex JSON ("format":"json") encoding rules.
//!
//! * Plain JSON numbers are float64 on the Convex side. Everything we send
//!   (counts, epoch milliseconds, seq < 2^53) fits; NaN and ±Infinity have
//!   no JSON form and are rejected here instead of silently becoming `null`.
//! * An int64 travels as `{"$integer": base64(little-endian i64)}`.
//! * Convex reserves field names starting with `$` (anywhere) and `_` (top
//!   level of a document); [`check_document`] reports them before a request
//!   is sent, along with the nesting / size limits of a document.
//! * Counts coming back may be `3` or `3.0` (float64): [`count`] accepts
//!   both, and `$integer` objects too.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Number, Value};

/// `{"$integer": "<base64 LE>"}` for an int64 argument.
pub fn int64(v: i64) -> Value {
    let mut m = Map::with_capacity(1);
    m.insert(
        "$integer".to_string(),
        Value::String(STANDARD.encode(v.to_le_bytes())),
    );
    Value::Object(m)
}

/// Reads a `{"$integer": ...}` value back.
pub fn decode_int64(v: &Value) -> Option<i64> {
    let s = v.as_object()?.get("$integer")?.as_str()?;
    let bytes = STANDARD.decode(s).ok()?;
    let arr: [u8; 8] = bytes.as_slice().try_into().ok()?;
    Some(i64::from_le_bytes(arr))
}

/// A float64 argument; NaN and infinities are refused.
pub fn float64(v: f64) -> Result<Value, EncodingError> {
    Number::from_f64(v)
        .map(Value::Number)
        .ok_or(EncodingError::NonFinite(v))
}

/// Reads a non-negative integral count: `3`, `3.0` or `{"$integer":...}`.
pub fn as_count(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            let f = n.as_f64()?;
            (f >= 0.0 && f.fract() == 0.0 && f <= 9_007_199_254_740_992.0).then_some(f as u64)
        }),
        Value::Object(_) => decode_int64(v).and_then(|i| u64::try_from(i).ok()),
        _ => None,
    }
}

/// serde helper: `#[serde(deserialize_with = "count")]`.
pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    as_count(&v).ok_or_else(|| serde::de::Error::custom(format!("expected a count, got {v}")))
}

/// serde helper for `number | null`.
pub fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    as_count(&v)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("expected a count or null, got {v}")))
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodingError {
    #[error("{0} is not a finite number; Convex JSON cannot carry NaN or Infinity")]
    NonFinite(f64),
    #[error("field name {0:?} is reserved by Convex (names must not start with '$', nor '_' at the top level)")]
    ReservedField(String),
    #[error("document nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("an object has {0} fields; Convex allows {MAX_FIELDS}")]
    TooManyFields(usize),
    #[error("an array has {0} elements; Convex allows {MAX_ARRAY}")]
    ArrayTooLong(usize),
}

pub const MAX_DEPTH: usize = 16;
pub const MAX_FIELDS: usize = 1024;
pub const MAX_ARRAY: usize = 8192;

/// Checks a document against Convex's value rules (reserved names,
/// nesting, fields per object, array length). Size is checked by
/// [`crate::sink::limits`].
pub fn check_document(doc: &Value) -> Result<(), EncodingError> {
    if let Value::Object(m) = doc {
        if let Some(k) = m.keys().find(|k| k.starts_with('_')) {
            return Err(EncodingError::ReservedField(k.clone()));
        }
    }
    check_value(doc, 1)
}

fn check_value(v: &Value, depth: usize) -> Result<(), EncodingError> {
    if depth > MAX_DEPTH {
        return Err(EncodingError::TooDeep);
    }
    match v {
        Value::Object(m) => {
            if m.len() > MAX_FIELDS {
                return Err(EncodingError::TooManyFields(m.len()));
            }
            for (k, v) in m {
                if k.starts_with('$') {
                    return Err(EncodingError::ReservedField(k.clone()));
                }
                check_value(v, depth + 1)?;
            }
            Ok(())
        }
        Value::Array(a) => {
            if a.len() > MAX_ARRAY {
                return Err(EncodingError::ArrayTooLong(a.len()));
            }
            a.iter().try_for_each(|v| check_value(v, depth + 1))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn int64_is_base64_little_endian() {
        assert_eq!(int64(1), json!({"$integer": "AQAAAAAAAAA="}));
        assert_eq!(int64(-1), json!({"$integer": "//////////8="}));
        assert_eq!(int64(256), json!({"$integer": "AAEAAAAAAAA="}));
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 1 << 53, 1_700_000_000_000] {
            assert_eq!(decode_int64(&int64(v)), Some(v));
        }
        assert_eq!(decode_int64(&json!({"$integer": "AQ=="})), None);
        assert_eq!(decode_int64(&json!({"$integer": "!!"})), None);
        assert_eq!(decode_int64(&json!(5)), None);
    }

    #[test]
    fn rejects_non_finite_floats() {
        assert_eq!(float64(1.5), Ok(json!(1.5)));
        assert!(matches!(
            float64(f64::NAN),
            Err(EncodingError::NonFinite(_))
        ));
        assert!(float64(f64::INFINITY).is_err());
        assert!(float64(f64::NEG_INFINITY).is_err());
    }

    #[test]
    fn counts_accept_float64_forms() {
        assert_eq!(as_count(&json!(3)), Some(3));
        assert_eq!(as_count(&json!(3.0)), Some(3));
        assert_eq!(as_count(&json!(3.5)), None);
        assert_eq!(as_count(&json!(-1)), None);
        assert_eq!(as_count(&json!("3")), None);
        assert_eq!(as_count(&int64(7)), Some(7));
        assert_eq!(as_count(&int64(-7)), None);
    }

    #[test]
    fn checks_documents() {
        assert!(check_document(&json!({"a": {"b": [1, {"c": null}]}})).is_ok());
        assert_eq!(
            check_document(&json!({"_id": 1})),
            Err(EncodingError::ReservedField("_id".into()))
        );
        assert!(check_document(&json!({"a": {"_nested_ok": 1}})).is_ok());
        assert_eq!(
            check_document(&json!({"a": {"$bad": 1}})),
            Err(EncodingError::ReservedField("$bad".into()))
        );
        let mut deep = json!(1);
        for _ in 0..20 {
            deep = json!({ "x": deep });
        }
        assert_eq!(check_document(&deep), Err(EncodingError::TooDeep));
        let long: Vec<u8> = vec![0; MAX_ARRAY + 1];
        assert_eq!(
            check_document(&json!({ "a": long })),
            Err(EncodingError::ArrayTooLong(MAX_ARRAY + 1))
        );
    }
}
