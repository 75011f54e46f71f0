//! Reading numbers back from Convex ("format":"json").
//!
//! Every plain JSON number is a float64 on the Convex side, and the real
//! backend prints it as one: a count may come back as `3` or `3.0`. An
//! int64 travels as `{"$integer": base64(little-endian i64)}`. [`count`]
//! and [`opt_count`] accept all three forms wherever we read a count.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Reads a `{"$integer": ...}` value.
fn decode_int64(v: &Value) -> Option<i64> {
    let s = v.as_object()?.get("$integer")?.as_str()?;
    let bytes = STANDARD.decode(s).ok()?;
    let arr: [u8; 8] = bytes.as_slice().try_into().ok()?;
    Some(i64::from_le_bytes(arr))
}

/// Reads a non-negative integral count: `3`, `3.0` or `{"$integer":...}`.
pub(crate) fn as_count(v: &Value) -> Option<u64> {
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
pub(crate) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    as_count(&v).ok_or_else(|| serde::de::Error::custom(format!("expected a count, got {v}")))
}

/// serde helper for `number | null`.
pub(crate) fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    as_count(&v)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("expected a count or null, got {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    /// `{"$integer": "<base64 LE>"}`, as Convex sends an int64.
    fn int64(v: i64) -> Value {
        let mut m = Map::with_capacity(1);
        m.insert(
            "$integer".to_string(),
            Value::String(STANDARD.encode(v.to_le_bytes())),
        );
        Value::Object(m)
    }

    #[test]
    fn int64_is_base64_little_endian() {
        assert_eq!(int64(1), json!({"$integer": "AQAAAAAAAAA="}));
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 1 << 53, 1_700_000_000_000] {
            assert_eq!(decode_int64(&int64(v)), Some(v));
        }
        assert_eq!(decode_int64(&json!({"$integer": "AQ=="})), None);
        assert_eq!(decode_int64(&json!({"$integer": "!!"})), None);
        assert_eq!(decode_int64(&json!(5)), None);
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
}
