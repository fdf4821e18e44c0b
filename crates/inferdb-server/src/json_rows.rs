//! Query results as JSON rows, fast, for the column types the history's
//! tables have: text, int64, float64, bool and millisecond UTC timestamps.
//!
//! Arrow's JSON writer formats every timestamp through chrono and a time
//! zone lookup, which on an entity's latest 1,000 rows costs more than the
//! whole query. This writer gives the same bytes as Arrow's (a test checks
//! it): text and column names escaped by serde_json, numbers formatted by
//! lexical-core as Arrow's writer does (a float that is not finite is
//! `null`), timestamps written here as RFC 3339 in UTC with `Z` and
//! milliseconds only when they are not zero. [`write`] answers `false` for
//! anything else (another column type, a year outside 0–9999), and the
//! caller uses Arrow's writer.

use inferdb_engine::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use inferdb_engine::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType,
};
use lexical_core::FormattedSize;

/// A column of one of the types this writer handles, downcast once.
enum Column<'a> {
    Str(&'a StringArray),
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Bool(&'a BooleanArray),
    Ts(&'a TimestampMillisecondArray),
}

impl Column<'_> {
    fn of(a: &ArrayRef) -> Option<Column<'_>> {
        Some(match a.data_type() {
            DataType::Utf8 => Column::Str(a.as_string::<i32>()),
            DataType::Int64 => Column::Int(a.as_primitive::<Int64Type>()),
            DataType::Float64 => Column::Float(a.as_primitive::<Float64Type>()),
            DataType::Boolean => Column::Bool(a.as_boolean()),
            DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => {
                Column::Ts(a.as_primitive::<TimestampMillisecondType>())
            }
            _ => return None,
        })
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Column::Str(a) => a.is_null(i),
            Column::Int(a) => a.is_null(i),
            Column::Float(a) => a.is_null(i),
            Column::Bool(a) => a.is_null(i),
            Column::Ts(a) => a.is_null(i),
        }
    }
}

/// Writes `batches` to `out` as a JSON array of row objects (nulls
/// explicit); `false`, with `out` as it was, where it cannot.
pub fn write(batches: &[RecordBatch], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    match write_rows(batches, out) {
        Some(()) => true,
        None => {
            out.truncate(start);
            false
        }
    }
}

fn write_rows(batches: &[RecordBatch], out: &mut Vec<u8>) -> Option<()> {
    let mut num = [0u8; f64::FORMATTED_SIZE];
    let mut ts = [0u8; 24];
    out.push(b'[');
    let mut first = true;
    for b in batches {
        let columns = b
            .columns()
            .iter()
            .map(Column::of)
            .collect::<Option<Vec<_>>>()?;
        // `"name":` of each column, escaped once per batch.
        let keys: Vec<Vec<u8>> = b
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let mut k = serde_json::to_vec(f.name()).unwrap_or_default();
                k.push(b':');
                k
            })
            .collect();
        let key_bytes: usize = keys.iter().map(Vec::len).sum();
        out.reserve(b.num_rows() * (key_bytes + 16 * keys.len() + 3));
        for i in 0..b.num_rows() {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.push(b'{');
            for (c, (key, col)) in keys.iter().zip(&columns).enumerate() {
                if c > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(key);
                if col.is_null(i) {
                    out.extend_from_slice(b"null");
                    continue;
                }
                match col {
                    Column::Str(a) => serde_json::to_writer(&mut *out, a.value(i)).ok()?,
                    Column::Int(a) => {
                        out.extend_from_slice(lexical_core::write(a.value(i), &mut num))
                    }
                    Column::Float(a) => {
                        let v = a.value(i);
                        match v.is_finite() {
                            true => out.extend_from_slice(lexical_core::write(v, &mut num)),
                            false => out.extend_from_slice(b"null"),
                        }
                    }
                    Column::Bool(a) => out.extend_from_slice(match a.value(i) {
                        true => b"true",
                        false => b"false",
                    }),
                    Column::Ts(a) => {
                        out.push(b'"');
                        out.extend_from_slice(rfc3339_millis(a.value(i), &mut ts)?.as_bytes());
                        out.push(b'"');
                    }
                }
            }
            out.push(b'}');
        }
    }
    out.push(b']');
    Some(())
}

/// `ms` (since the epoch) as `YYYY-MM-DDTHH:MM:SS[.mmm]Z` in `buf`;
/// `None` outside years 0–9999.
fn rfc3339_millis(ms: i64, buf: &mut [u8; 24]) -> Option<&str> {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, mo, d) = inferdb_types::time::civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let (s, milli) = (ms_of_day / 1000, ms_of_day % 1000);
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for k in (0..width).rev() {
            buf[at + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y, 4);
    put(5, i64::from(mo), 2);
    put(8, i64::from(d), 2);
    put(11, s / 3600, 2);
    put(14, s / 60 % 60, 2);
    put(17, s % 60, 2);
    put(20, milli, 3);
    for (at, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        buf[at] = c;
    }
    let end = match milli {
        0 => 19,
        _ => {
            buf[19] = b'.';
            23
        }
    };
    buf[end] = b'Z';
    std::str::from_utf8(&buf[..=end]).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use inferdb_engine::arrow::array::{
        BooleanArray, Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use inferdb_engine::arrow::datatypes::{Field, Schema};
    use inferdb_engine::arrow::json;
    use std::sync::Arc;

    fn arrow_json(batches: &[RecordBatch]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, json::writer::JsonArray>(&mut out);
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        drop(w);
        out
    }

    fn ours(batches: &[RecordBatch]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        write(batches, &mut out).then_some(out)
    }

    fn batch(ts: Vec<Option<i64>>) -> RecordBatch {
        let n = ts.len();
        let i = |k: usize| k as i64;
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("i", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Boolean, true),
        ]);
        let texts = [
            "plain",
            "quote \" and \\ back",
            "tab\tnew\nline",
            "ünï €",
            "\u{1}",
        ];
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from_iter(
                    (0..n).map(|k| (k % 7 != 3).then(|| texts[k % texts.len()])),
                )),
                Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|k| (k % 5 != 1).then(|| i(k) * 7_919 - 40_000)),
                )),
                Arc::new(Float64Array::from_iter((0..n).map(|k| {
                    (k % 9 != 2).then(|| {
                        [
                            0.1,
                            30.58,
                            1.0,
                            -2.5e-7,
                            1e300,
                            f64::NAN,
                            f64::INFINITY,
                            123456.789,
                        ][k % 8]
                    })
                }))),
                Arc::new(BooleanArray::from_iter(
                    (0..n).map(|k| (k % 4 != 0).then_some(k % 3 == 0)),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_are_written_as_arrows_json_writer_writes_them() {
        // Whole seconds, milliseconds, before 1970, leap days, year ends,
        // the ends of the supported range.
        let mut ts = vec![
            Some(0),
            Some(1),
            Some(-1),
            Some(999),
            Some(1_000),
            Some(1_767_311_999_870),
            Some(1_767_225_600_000),
            Some(951_782_400_000),     // 2000-02-29
            Some(-2_203_891_200_000),  // 1900-03-01
            Some(-62_167_219_200_000), // 0000-01-01
            Some(253_402_300_799_999), // 9999-12-31T23:59:59.999
            None,
        ];
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ts.push(Some(
                x.rem_euclid(253_402_300_800_000 + 62_167_219_200_000) - 62_167_219_200_000,
            ));
        }
        let batches = [batch(ts), batch(vec![Some(86_400_000), None])];
        assert_eq!(
            String::from_utf8(ours(&batches[1..]).unwrap()).unwrap(),
            "[{\"s\":\"plain\",\"ts\":\"1970-01-02T00:00:00Z\",\"i\":-40000,\"f\":0.1,\"b\":null},\
             {\"s\":\"quote \\\" and \\\\ back\",\"ts\":null,\"i\":null,\"f\":30.58,\"b\":false}]"
        );
        let want = arrow_json(&batches);
        let got = ours(&batches).expect("supported");
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(want).unwrap()
        );
        assert_eq!(ours(&[]).unwrap(), b"[]");
    }

    #[test]
    fn what_it_cannot_write_is_left_to_arrows_writer() {
        // A year past 9999.
        assert!(ours(&[batch(vec![Some(253_402_300_800_000)])]).is_none());
        // Another column type.
        let schema = Arc::new(Schema::new(vec![Field::new("i", DataType::Int32, true)]));
        let int32 =
            RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
        assert!(ours(&[int32]).is_none());
    }
}
