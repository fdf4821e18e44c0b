//! Field types and the values a validated record holds.

use serde::{Deserialize, Serialize};

/// The type of a stream field, as declared in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float; JSON integers are accepted and widened.
    Float,
    /// `true` / `false`.
    Bool,
    /// RFC 3339 text or epoch milliseconds; stored as epoch milliseconds.
    Timestamp,
}

impl FieldType {
    /// The spec's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::Timestamp => "timestamp",
        }
    }

    /// Whether numeric aggregations (sum, avg, min, …) apply to the type.
    pub fn is_numeric(self) -> bool {
        !matches!(self, FieldType::String)
    }
}

/// One value of a record, already checked against its field's type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// Absent optional field, or an aggregate of an empty window.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float (never NaN or infinite: JSON cannot carry them).
    Float(f64),
    /// Text.
    Str(Box<str>),
    /// Epoch milliseconds.
    Ts(i64),
}

/// A [`Value`] borrowed from where it is stored: a string is not copied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// See [`Value::Null`].
    Null,
    /// See [`Value::Bool`].
    Bool(bool),
    /// See [`Value::Int`].
    Int(i64),
    /// See [`Value::Float`].
    Float(f64),
    /// See [`Value::Str`].
    Str(&'a str),
    /// See [`Value::Ts`].
    Ts(i64),
}

impl ValueRef<'_> {
    /// The owned value.
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Str(s) => Value::Str(s.into()),
            ValueRef::Ts(t) => Value::Ts(t),
        }
    }
}

impl Value {
    /// The value, borrowed.
    pub fn as_value_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Str(s) => ValueRef::Str(s),
            Value::Ts(t) => ValueRef::Ts(*t),
        }
    }

    /// The field type that holds this value (`None` for null).
    pub fn field_type(&self) -> Option<FieldType> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => FieldType::Bool,
            Value::Int(_) => FieldType::Int,
            Value::Float(f) if f.is_finite() => FieldType::Float,
            Value::Float(_) => return None,
            Value::Str(_) => FieldType::String,
            Value::Ts(_) => FieldType::Timestamp,
        })
    }

    /// The value as a float for numeric aggregation; `None` for null and text.
    #[inline]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            Value::Ts(t) => Some(*t as f64),
            Value::Null | Value::Str(_) => None,
        }
    }

    /// The text, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as JSON: timestamps as RFC 3339 text.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::Ts(t) => serde_json::Value::String(crate::Timestamp(*t).to_rfc3339()),
        }
    }

    /// Approximate heap plus inline size, for memory budgets.
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Value>()
            + match self {
                Value::Str(s) => s.len(),
                _ => 0,
            }
    }
}

/// A stable 64-bit hash of a value (XXH3), the same on every machine and
/// release: used for entity sharding and distinct counting, so it must not
/// change once data is stored.
pub fn stable_hash(v: &Value) -> u64 {
    use xxhash_rust::xxh3::xxh3_64_with_seed;
    match v {
        Value::Null => 0,
        Value::Bool(b) => xxh3_64_with_seed(&[*b as u8], 1),
        Value::Int(i) => xxh3_64_with_seed(&i.to_le_bytes(), 2),
        Value::Float(f) => xxh3_64_with_seed(&f.to_bits().to_le_bytes(), 3),
        Value::Str(s) => xxh3_64_with_seed(s.as_bytes(), 4),
        Value::Ts(t) => xxh3_64_with_seed(&t.to_le_bytes(), 5),
    }
}

/// The stable hash of a string key (the same as [`stable_hash`] of `Value::Str`).
pub fn stable_hash_str(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(s.as_bytes(), 4)
}

/// Serializes a [`Value`] as plain JSON (what [`Value::to_json`] builds),
/// without building a `serde_json::Value` first: for hot response paths.
pub struct PlainJson<'a>(pub &'a Value);

impl serde::Serialize for PlainJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(_) => s.serialize_unit(),
            Value::Str(t) => s.serialize_str(t),
            Value::Ts(t) => s.serialize_str(&crate::Timestamp(*t).to_rfc3339()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_json_matches_to_json() {
        for v in [
            Value::Null,
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(2.5),
            Value::Float(f64::NAN),
            Value::Str("a\"b".into()),
            Value::Ts(1_767_225_600_250),
        ] {
            assert_eq!(serde_json::to_value(PlainJson(&v)).unwrap(), v.to_json());
        }
    }
}
