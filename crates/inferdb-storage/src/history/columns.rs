//! Rows of values to Arrow: the schema of a history table and the column
//! builders of its in-memory head.
//!
//! Types map one to one: string → Utf8, int → Int64, float → Float64,
//! bool → Boolean, timestamp → Timestamp(ms, "UTC"). Every column is
//! nullable, so that a batch can always be built from validated rows (a
//! required field is never null there anyway).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringArray,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use inferdb_types::codec::Decoder;
use inferdb_types::{FieldType, TypesError, Value, ValueRef};

/// Most bytes a string column's builder reserves ahead after a seal: a
/// batch of a few huge values (dead letters of long lines) must not make
/// the next one reserve thousands of times as much.
const SEAL_BYTES_MAX: usize = 16 << 20;

/// The time zone every timestamp column carries.
pub const UTC: &str = "UTC";

/// The Arrow type of a field type.
pub fn arrow_type(ty: FieldType) -> DataType {
    match ty {
        FieldType::String => DataType::Utf8,
        FieldType::Int => DataType::Int64,
        FieldType::Float => DataType::Float64,
        FieldType::Bool => DataType::Boolean,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some(UTC.into())),
    }
}

/// An Arrow schema from (name, type) columns.
pub fn schema_of(columns: &[(String, FieldType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, t)| Field::new(n, arrow_type(*t), true))
            .collect::<Vec<_>>(),
    ))
}

enum Col {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMillisecondBuilder),
}

impl Col {
    /// A column builder with room for `rows` values (strings of about
    /// 16 bytes).
    fn new(ty: FieldType, rows: usize) -> Col {
        match ty {
            FieldType::String => Col::Str(StringBuilder::with_capacity(rows, rows * 16)),
            FieldType::Int => Col::Int(Int64Builder::with_capacity(rows)),
            FieldType::Float => Col::Float(Float64Builder::with_capacity(rows)),
            FieldType::Bool => Col::Bool(BooleanBuilder::with_capacity(rows)),
            FieldType::Timestamp => {
                Col::Ts(TimestampMillisecondBuilder::with_capacity(rows).with_timezone(UTC))
            }
        }
    }

    /// Appends a value; a value of another type than the column's (which
    /// validation rules out) is stored as null rather than guessed at.
    fn push(&mut self, v: ValueRef<'_>) {
        match (self, v) {
            (Col::Str(b), ValueRef::Str(s)) => b.append_value(s),
            (Col::Int(b), ValueRef::Int(i)) => b.append_value(i),
            (Col::Float(b), ValueRef::Float(f)) => b.append_value(f),
            (Col::Float(b), ValueRef::Int(i)) => b.append_value(i as f64),
            (Col::Bool(b), ValueRef::Bool(x)) => b.append_value(x),
            (Col::Ts(b), ValueRef::Ts(t)) => b.append_value(t),
            (Col::Ts(b), ValueRef::Int(t)) => b.append_value(t),
            (c, _) => c.push_null(),
        }
    }

    fn push_null(&mut self) {
        match self {
            Col::Str(b) => b.append_null(),
            Col::Int(b) => b.append_null(),
            Col::Float(b) => b.append_null(),
            Col::Bool(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Str(b) => Arc::new(b.finish()),
            Col::Int(b) => Arc::new(b.finish()),
            Col::Float(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
        }
    }

    /// Like [`Col::finish`], but the builder starts again with room for
    /// `rows` values, and a string column with room for as many bytes per
    /// value as the batch just finished held (one sixteenth more), so that
    /// a head batch of the same rows grows without reallocating: each
    /// doubling of a column's buffer would copy it and touch a fresh
    /// allocation twice its size, which on a VM whose memory the host backs
    /// on first touch costs more than the copy.
    fn seal(&mut self, ty: FieldType, rows: usize) -> ArrayRef {
        let a = self.finish();
        let bytes = match a.as_any().downcast_ref::<StringArray>() {
            Some(s) if !s.is_empty() => {
                let per_row = s.value_data().len().div_ceil(s.len());
                let per_row = per_row + per_row.div_ceil(16);
                Some(rows.saturating_mul(per_row.max(1)).min(SEAL_BYTES_MAX))
            }
            _ => None,
        };
        *self = match (ty, bytes) {
            (FieldType::String, Some(b)) => Col::Str(StringBuilder::with_capacity(rows, b)),
            _ => Col::new(ty, rows),
        };
        a
    }

    fn finish_cloned(&self) -> ArrayRef {
        match self {
            Col::Str(b) => Arc::new(b.finish_cloned()),
            Col::Int(b) => Arc::new(b.finish_cloned()),
            Col::Float(b) => Arc::new(b.finish_cloned()),
            Col::Bool(b) => Arc::new(b.finish_cloned()),
            Col::Ts(b) => Arc::new(b.finish_cloned()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Col::Str(b) => b.len(),
            Col::Int(b) => b.len(),
            Col::Float(b) => b.len(),
            Col::Bool(b) => b.len(),
            Col::Ts(b) => b.len(),
        }
    }
}

/// Column builders for one table: rows in, record batches out.
pub struct RowBuilder {
    schema: SchemaRef,
    types: Vec<FieldType>,
    cols: Vec<Col>,
}

impl RowBuilder {
    /// Builders for `schema`'s columns, typed by `types`.
    pub fn new(schema: SchemaRef, types: &[FieldType]) -> RowBuilder {
        RowBuilder::with_capacity(schema, types, 1024)
    }

    /// Like [`RowBuilder::new`], with room for `rows` rows.
    pub fn with_capacity(schema: SchemaRef, types: &[FieldType], rows: usize) -> RowBuilder {
        RowBuilder {
            schema,
            types: types.to_vec(),
            cols: types.iter().map(|t| Col::new(*t, rows)).collect(),
        }
    }

    /// Appends a row of values in column order; missing trailing values
    /// are null.
    pub fn push(&mut self, row: &[Value]) {
        for (i, c) in self.cols.iter_mut().enumerate() {
            match row.get(i) {
                Some(v) => c.push(v.as_value_ref()),
                None => c.push_null(),
            }
        }
    }

    /// Appends a row encoded by `inferdb_types::codec::encode_row`, like
    /// [`RowBuilder::push`] but without decoding it into values first. A
    /// corrupt row is an error after which the builder's columns may be
    /// uneven: the caller gives up on the batch.
    pub fn push_encoded(&mut self, bytes: &[u8]) -> Result<(), TypesError> {
        let mut d = Decoder::new(bytes);
        let n = d.u16()? as usize;
        for (i, c) in self.cols.iter_mut().enumerate() {
            match i < n {
                true => c.push(d.value_ref()?),
                false => c.push_null(),
            }
        }
        Ok(())
    }

    /// Rows appended since the last [`RowBuilder::finish`].
    pub fn len(&self) -> usize {
        self.cols.first().map_or(0, Col::len)
    }

    /// Whether no row is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pending rows as a batch; the builders start empty again.
    pub fn finish(&mut self) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        self.batch(arrays)
    }

    /// Like [`RowBuilder::finish`], for a builder that fills batches of
    /// about `rows` rows again and again (the history head): its columns
    /// start again with room for `rows` rows of the sizes just seen, so the
    /// next batch is built without reallocations ([`Col::seal`]).
    pub fn seal(&mut self, rows: usize) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .zip(&self.types)
            .map(|(c, t)| c.seal(*t, rows))
            .collect();
        self.batch(arrays)
    }

    /// The pending rows as a batch; the builders keep them.
    pub fn snapshot(&self) -> RecordBatch {
        let arrays: Vec<ArrayRef> = self.cols.iter().map(Col::finish_cloned).collect();
        self.batch(arrays)
    }

    fn batch(&self, arrays: Vec<ArrayRef>) -> RecordBatch {
        // Each column got exactly one value per row, of its schema's type,
        // and every column is nullable: this cannot fail.
        match RecordBatch::try_new(self.schema.clone(), arrays) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "history head: column builders out of step");
                RecordBatch::new_empty(self.schema.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> RowBuilder {
        let cols = [
            ("k".to_string(), FieldType::String),
            ("n".to_string(), FieldType::Int),
        ];
        RowBuilder::new(schema_of(&cols), &[FieldType::String, FieldType::Int])
    }

    fn row(i: i64) -> Vec<Value> {
        vec![Value::Str(format!("{i:0>100}").into()), Value::Int(i)]
    }

    fn values_ptr(b: &RowBuilder) -> *const u8 {
        match &b.cols[0] {
            Col::Str(s) => s.values_slice().as_ptr(),
            _ => std::ptr::null(),
        }
    }

    #[test]
    fn seal_leaves_room_for_the_sizes_just_seen() {
        let mut b = builder();
        for i in 0..64 {
            b.push(&row(i));
        }
        let _ = b.seal(64);
        match &b.cols[0] {
            // 100 bytes a value, one sixteenth more, 64 rows.
            Col::Str(s) => assert_eq!(s.values_capacity(), 64 * 107),
            _ => panic!("column 0 is a string column"),
        }
    }

    #[test]
    fn seal_gives_the_rows_and_the_next_batch_needs_no_reallocation() {
        let mut b = builder();
        let mut plain = builder();
        for i in 0..64 {
            b.push(&row(i));
            plain.push(&row(i));
        }
        let sealed = b.seal(64);
        assert_eq!(sealed, plain.finish(), "a seal answers what finish does");
        assert!(b.is_empty());
        // The next 64 rows of the same sizes fit the room the seal left:
        // the string column's buffer is never moved.
        b.push(&row(64));
        let start = values_ptr(&b);
        for i in 65..128 {
            b.push(&row(i));
            assert_eq!(values_ptr(&b), start, "reallocated at row {i}");
        }
        let next = b.seal(64);
        assert_eq!(next.num_rows(), 64);
        let keys = next
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .map(|a| a.value(63).to_string());
        assert_eq!(keys, Some(format!("{:0>100}", 127)));
    }

    #[test]
    fn seal_reserves_a_bounded_room_after_huge_values() {
        let mut b = builder();
        let huge = "x".repeat(1 << 20);
        b.push(&[Value::Str(huge.as_str().into()), Value::Int(1)]);
        let _ = b.seal(8192);
        // 8192 rows of 1 MiB would be 8 GiB: the room is capped.
        match &b.cols[0] {
            Col::Str(s) => {
                assert!(s.values_slice().is_empty());
                assert!(s.values_capacity() >= SEAL_BYTES_MAX);
                assert!(s.values_capacity() < 2 * SEAL_BYTES_MAX);
            }
            _ => panic!("column 0 is a string column"),
        }
        b.push(&row(1));
        assert_eq!(b.seal(8192).num_rows(), 1);
    }
}
