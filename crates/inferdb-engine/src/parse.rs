//! Decoding and validating a batch of JSON records against a stream's
//! schema, in one pass and without building a `serde_json::Value` per
//! record.
//!
//! A body is a JSON array of objects or NDJSON (one object per line). Each
//! record is checked on its own: a record with a missing or wrongly typed
//! field, a value outside its enum or range, an unknown field (unless the
//! stream ignores them) or — in NDJSON — an unparseable line becomes a
//! [`Rejection`] naming its index, field and reason, and the other records
//! of the batch go on. Only a body that is not JSON at all (a syntax error
//! in an array body, or NDJSON in which no line parses) fails as a whole.

use inferdb_types::{FieldType, Stream, Timestamp, UnknownFields, Value};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A record that failed validation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// Position of the record in the batch (0-based; NDJSON counts non-blank lines).
    pub index: usize,
    /// The offending field, when one field is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Why it was rejected.
    pub reason: String,
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// Look at the first non-blank byte: `[` is a JSON array, anything else NDJSON.
    Auto,
    /// A JSON array of objects.
    JsonArray,
    /// One JSON object per line.
    Ndjson,
}

/// The outcome of decoding a batch: the good rows (in stream field order)
/// and one rejection per bad record, each with the raw text of the record
/// where it could be recovered (kept in the dead-letter store).
#[derive(Debug, Default)]
pub struct ParsedBatch {
    /// Valid rows, in the order they appeared.
    pub rows: Vec<Vec<Value>>,
    /// Rejected records with their raw text (truncated).
    pub rejected: Vec<(Rejection, String)>,
}

/// Why a whole body was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyError(pub String);

const RAW_KEEP: usize = 2048;

fn clip(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(&raw[..raw.len().min(RAW_KEEP)]);
    s.into_owned()
}

/// Decodes and validates a body of records for `stream`.
pub fn parse_batch(
    stream: &Stream,
    body: &[u8],
    format: BodyFormat,
) -> Result<ParsedBatch, BodyError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let Some(&first) = first else {
        return Err(BodyError(
            "empty body: send a JSON array of records or NDJSON".into(),
        ));
    };
    let format = match format {
        BodyFormat::Auto if first == b'[' => BodyFormat::JsonArray,
        BodyFormat::Auto => BodyFormat::Ndjson,
        f => f,
    };
    match format {
        BodyFormat::JsonArray => parse_array(stream, body),
        _ => parse_ndjson(stream, body),
    }
}

fn parse_array(stream: &Stream, body: &[u8]) -> Result<ParsedBatch, BodyError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut out = ParsedBatch::default();
    de.deserialize_seq(ArrayVisitor {
        stream,
        out: &mut out,
    })
    .and_then(|_| de.end())
    .map_err(|e| BodyError(format!("body is not a valid JSON array of records: {e}")))?;
    Ok(out)
}

fn parse_ndjson(stream: &Stream, body: &[u8]) -> Result<ParsedBatch, BodyError> {
    // A body that is valid UTF-8 as a whole (the usual case) is checked once
    // here, so that the per-line parser can skip checking every string.
    let whole = std::str::from_utf8(body).ok();
    let mut out = ParsedBatch::default();
    let mut index = 0usize;
    let mut parsed_any = false;
    let mut offset = 0usize;
    for line in body.split(|b| *b == b'\n') {
        let start = offset;
        offset += line.len() + 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let seed = RecordSeed { stream, index };
        let res = match whole.and_then(|w| w.get(start..start + line.len())) {
            Some(text) => {
                let mut de = serde_json::Deserializer::from_str(text);
                seed.deserialize(&mut de).and_then(|r| de.end().map(|_| r))
            }
            None => {
                let mut de = serde_json::Deserializer::from_slice(line);
                seed.deserialize(&mut de).and_then(|r| de.end().map(|_| r))
            }
        };
        match res {
            Ok(Ok(row)) => {
                parsed_any = true;
                out.rows.push(row);
            }
            Ok(Err(rej)) => {
                parsed_any = true;
                out.rejected.push((rej, clip(line)));
            }
            Err(e) => out.rejected.push((
                Rejection {
                    index,
                    field: None,
                    reason: format!("invalid JSON: {e}"),
                },
                clip(line),
            )),
        }
        index += 1;
    }
    if !parsed_any {
        let reason = out
            .rejected
            .first()
            .map(|r| r.0.reason.clone())
            .unwrap_or_default();
        return Err(BodyError(format!(
            "body is not JSON: expected a JSON array of records or NDJSON ({reason})"
        )));
    }
    Ok(out)
}

struct ArrayVisitor<'a> {
    stream: &'a Stream,
    out: &'a mut ParsedBatch,
}

impl<'de> Visitor<'de> for ArrayVisitor<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Each element is framed first (borrowed, no copy) so that a
        // rejected record's raw text can go to the dead-letter store.
        let mut index = 0;
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            let text = raw.get();
            let mut de = serde_json::Deserializer::from_str(text);
            let seed = RecordSeed {
                stream: self.stream,
                index,
            };
            match seed.deserialize(&mut de) {
                Ok(Ok(row)) => self.out.rows.push(row),
                Ok(Err(rej)) => self.out.rejected.push((rej, clip(text.as_bytes()))),
                Err(e) => return Err(de::Error::custom(e)),
            }
            index += 1;
        }
        Ok(())
    }
}

/// Decodes one record; a validation failure is `Ok(Err(..))` so that the
/// surrounding array keeps parsing.
struct RecordSeed<'a> {
    stream: &'a Stream,
    index: usize,
}

type RecordResult = Result<Vec<Value>, Rejection>;

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = RecordResult;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RecordResult, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = RecordResult;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RecordResult, M::Error> {
        let fields = &self.stream.fields;
        let mut row = vec![Value::Null; fields.len()];
        // Which fields were seen: a bitmask for up to 128 fields, else a Vec.
        let mut seen_small = 0u128;
        let mut seen_big = if fields.len() > 128 {
            vec![false; fields.len()]
        } else {
            Vec::new()
        };
        let mut first_err: Option<Rejection> = None;
        let reject = |first_err: &mut Option<Rejection>, field: &str, reason: String| {
            if first_err.is_none() {
                *first_err = Some(Rejection {
                    index: self.index,
                    field: Some(field.to_string()),
                    reason,
                });
            }
        };
        // Producers usually write fields in declaration order: try the next
        // one first, then search.
        let mut next = 0usize;
        while let Some(key) = map.next_key::<KeyStr<'de>>()? {
            let key = key.0;
            let i = match fields.get(next) {
                Some(f) if f.name == key.as_ref() => Some(next),
                _ => fields.iter().position(|f| f.name == key.as_ref()),
            };
            let Some(i) = i else {
                map.next_value::<IgnoredAny>()?;
                if self.stream.unknown_fields == UnknownFields::Reject {
                    reject(&mut first_err, &key, "unknown field".to_string());
                }
                continue;
            };
            next = i + 1;
            let v = map.next_value_seed(ValueSeed(fields[i].ty))?;
            let dup = if seen_big.is_empty() {
                let bit = 1u128 << i;
                let d = seen_small & bit != 0;
                seen_small |= bit;
                d
            } else {
                std::mem::replace(&mut seen_big[i], true)
            };
            if dup {
                reject(&mut first_err, &key, "duplicate field".to_string());
                continue;
            }
            match v {
                Ok(v) => row[i] = v,
                Err(reason) => reject(&mut first_err, &key, reason),
            }
        }
        let seen = |i: usize| {
            if seen_big.is_empty() {
                seen_small & (1u128 << i) != 0
            } else {
                seen_big[i]
            }
        };
        if let Some(e) = first_err {
            return Ok(Err(e));
        }
        for (i, f) in fields.iter().enumerate() {
            let v = &row[i];
            if v.is_null() {
                if f.required {
                    let reason = if seen(i) {
                        "must not be null"
                    } else {
                        "missing required field"
                    };
                    return Ok(Err(Rejection {
                        index: self.index,
                        field: Some(f.name.clone()),
                        reason: reason.to_string(),
                    }));
                }
                continue;
            }
            if let (Some(allowed), Value::Str(s)) = (&f.values, v)
                && allowed.binary_search_by(|a| a.as_str().cmp(s)).is_err()
            {
                return Ok(Err(Rejection {
                    index: self.index,
                    field: Some(f.name.clone()),
                    reason: format!("value {s:?} is not one of the allowed values"),
                }));
            }
            if let Some(x) = v.as_f64() {
                let below = f.min.is_some_and(|m| x < m);
                let above = f.max.is_some_and(|m| x > m);
                if below || above {
                    let range = match (f.min, f.max) {
                        (Some(lo), Some(hi)) => format!("[{lo}, {hi}]"),
                        (Some(lo), None) => format!(">= {lo}"),
                        (None, Some(hi)) => format!("<= {hi}"),
                        (None, None) => String::new(),
                    };
                    return Ok(Err(Rejection {
                        index: self.index,
                        field: Some(f.name.clone()),
                        reason: format!("value {x} is out of range (must be {range})"),
                    }));
                }
            }
        }
        Ok(Ok(row))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RecordResult, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(self.not_object("an array")))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RecordResult, E> {
        Ok(Err(self.not_object("a string")))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RecordResult, E> {
        Ok(Err(self.not_object("a number")))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RecordResult, E> {
        Ok(Err(self.not_object("a number")))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RecordResult, E> {
        Ok(Err(self.not_object("a number")))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RecordResult, E> {
        Ok(Err(self.not_object("a boolean")))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RecordResult, E> {
        Ok(Err(self.not_object("null")))
    }
}

impl RecordSeed<'_> {
    fn not_object(&self, got: &str) -> Rejection {
        Rejection {
            index: self.index,
            field: None,
            reason: format!("record must be a JSON object, got {got}"),
        }
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct KeyStr<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for KeyStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyStr<'de>, E> {
                Ok(KeyStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Decodes one field value of a given type; a type mismatch is `Ok(Err(reason))`.
struct ValueSeed(FieldType);

type ValueResult = Result<Value, String>;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = ValueResult;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ValueResult, D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed {
    fn mismatch(&self, got: &str) -> ValueResult {
        Err(format!("expected {}, got {got}", self.0.name()))
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = ValueResult;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a {}", self.0.name())
    }
    fn visit_unit<E: de::Error>(self) -> Result<ValueResult, E> {
        Ok(Ok(Value::Null))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ValueResult, E> {
        Ok(match self.0 {
            FieldType::Bool => Ok(Value::Bool(v)),
            _ => self.mismatch("a boolean"),
        })
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ValueResult, E> {
        Ok(match self.0 {
            FieldType::Int => Ok(Value::Int(v)),
            FieldType::Float => Ok(Value::Float(v as f64)),
            FieldType::Timestamp => Ok(Value::Ts(v)),
            _ => self.mismatch(&format!("the number {v}")),
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ValueResult, E> {
        match i64::try_from(v) {
            Ok(i) => self.visit_i64(i),
            Err(_) => Ok(match self.0 {
                FieldType::Float => Ok(Value::Float(v as f64)),
                _ => Err(format!(
                    "the number {v} is too large for a {}",
                    self.0.name()
                )),
            }),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ValueResult, E> {
        Ok(match self.0 {
            FieldType::Float => Ok(Value::Float(v)),
            FieldType::Int if v.fract() == 0.0 && v.abs() < 9.0e15 => Ok(Value::Int(v as i64)),
            FieldType::Int => Err(format!("expected int, got the non-integer number {v}")),
            FieldType::Timestamp if v.fract() == 0.0 && v.abs() < 9.0e15 => Ok(Value::Ts(v as i64)),
            _ => self.mismatch(&format!("the number {v}")),
        })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ValueResult, E> {
        Ok(match self.0 {
            FieldType::String => Ok(Value::Str(v.into())),
            FieldType::Timestamp => match Timestamp::parse(v) {
                Ok(t) => Ok(Value::Ts(t.0)),
                Err(e) => Err(e.to_string()),
            },
            _ => {
                let shown: String = v.chars().take(40).collect();
                self.mismatch(&format!("the string {shown:?}"))
            }
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValueResult, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.mismatch("an array"))
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<ValueResult, M::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(self.mismatch("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferdb_types::Catalog;

    fn stream() -> Stream {
        let c = Catalog::from_toml(include_str!("../../../examples/payments/spec.toml")).unwrap();
        c.streams[0].clone()
    }

    const GOOD: &str = r#"{"entity_id":"user_000001","ts":"2026-01-01T00:00:00.000Z","amount":12.5,"merchant_id":"m_0001","category":"grocery","country":"US","channel":"pos","card_present":true}"#;

    #[test]
    fn good_records_in_array_and_ndjson() {
        let s = stream();
        let arr = format!("[{GOOD},{GOOD}]");
        let b = parse_batch(&s, arr.as_bytes(), BodyFormat::Auto).unwrap();
        assert_eq!((b.rows.len(), b.rejected.len()), (2, 0));
        assert_eq!(b.rows[0][2], Value::Float(12.5));
        assert_eq!(b.rows[0][1], Value::Ts(1_767_225_600_000));
        let nd = format!("{GOOD}\n\n{GOOD}\n");
        let b = parse_batch(&s, nd.as_bytes(), BodyFormat::Auto).unwrap();
        assert_eq!((b.rows.len(), b.rejected.len()), (2, 0));
    }

    fn one_bad(from: &str, to: &str) -> Rejection {
        let s = stream();
        let bad = GOOD.replacen(from, to, 1);
        assert_ne!(bad, GOOD);
        let body = format!("[{GOOD},{bad},{GOOD}]");
        let b = parse_batch(&s, body.as_bytes(), BodyFormat::Auto).unwrap();
        assert_eq!(b.rows.len(), 2, "good records kept");
        assert_eq!(b.rejected.len(), 1);
        let r = b.rejected[0].0.clone();
        assert_eq!(r.index, 1);
        // NDJSON gives the same verdict.
        let nd = format!("{GOOD}\n{bad}\n{GOOD}");
        let b2 = parse_batch(&s, nd.as_bytes(), BodyFormat::Auto).unwrap();
        assert_eq!(b2.rejected[0].0, r);
        assert!(b2.rejected[0].1.contains("user_000001"));
        r
    }

    #[test]
    fn each_bad_record_is_rejected_with_field_and_reason() {
        let r = one_bad(r#""amount":12.5,"#, "");
        assert_eq!(r.field.as_deref(), Some("amount"));
        assert_eq!(r.reason, "missing required field");
        let r = one_bad("12.5", r#""12.5x""#);
        assert_eq!(r.field.as_deref(), Some("amount"));
        assert!(r.reason.contains("expected float"), "{}", r.reason);
        let r = one_bad("12.5", "-3");
        assert!(r.reason.contains("out of range"), "{}", r.reason);
        let r = one_bad("grocery", "weapons");
        assert_eq!(r.field.as_deref(), Some("category"));
        assert!(r.reason.contains("allowed"), "{}", r.reason);
        let r = one_bad("\"card_present\":true", "\"card_present\":\"yes\"");
        assert_eq!(r.field.as_deref(), Some("card_present"));
        let r = one_bad("\"channel\"", "\"chanel\":1,\"channel\"");
        assert_eq!(
            (r.field.as_deref(), r.reason.as_str()),
            (Some("chanel"), "unknown field")
        );
        let r = one_bad("2026-01-01T00:00:00.000Z", "soon");
        assert_eq!(r.field.as_deref(), Some("ts"));
        let r = one_bad("\"country\":\"US\"", "\"country\":null");
        assert_eq!(r.reason, "must not be null");
        let r = one_bad(
            "\"country\":\"US\"",
            "\"country\":\"US\",\"country\":\"FR\"",
        );
        assert_eq!(r.reason, "duplicate field");
        let r = one_bad("\"country\":\"US\"", "\"country\":{\"a\":[1,2]}");
        assert!(r.reason.contains("an object"), "{}", r.reason);
    }

    #[test]
    fn epoch_millis_and_numbers_are_accepted_where_they_fit() {
        let s = stream();
        let rec = GOOD
            .replace("\"2026-01-01T00:00:00.000Z\"", "1767225600123")
            .replace("12.5", "12");
        let b = parse_batch(&s, rec.as_bytes(), BodyFormat::Auto).unwrap();
        assert_eq!(b.rows[0][1], Value::Ts(1_767_225_600_123));
        assert_eq!(b.rows[0][2], Value::Float(12.0));
    }

    #[test]
    fn non_objects_and_bad_lines_are_rejected_alone() {
        let s = stream();
        let body = format!("[{GOOD}, 5, \"x\", [1], null]");
        let b = parse_batch(&s, body.as_bytes(), BodyFormat::Auto).unwrap();
        assert_eq!((b.rows.len(), b.rejected.len()), (1, 4));
        assert!(b.rejected[0].0.reason.contains("JSON object"));
        let nd = format!("{GOOD}\n{{\"entity_id\": \n{GOOD}");
        let b = parse_batch(&s, nd.as_bytes(), BodyFormat::Auto).unwrap();
        assert_eq!((b.rows.len(), b.rejected.len()), (2, 1));
        assert_eq!(b.rejected[0].0.index, 1);
        assert!(b.rejected[0].0.reason.starts_with("invalid JSON"));
    }

    #[test]
    fn a_body_that_is_not_json_fails_whole() {
        let s = stream();
        for body in [
            "",
            "   ",
            "hello world",
            "[{\"entity_id\": 1",
            "<xml/>\n<a/>",
        ] {
            assert!(
                parse_batch(&s, body.as_bytes(), BodyFormat::Auto).is_err(),
                "{body:?}"
            );
        }
        let b = parse_batch(&s, b"[]", BodyFormat::Auto).unwrap();
        assert_eq!((b.rows.len(), b.rejected.len()), (0, 0));
    }
}
