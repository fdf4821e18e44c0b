//! Rows of values to Arrow: the schema of a history table and the column
//! builders of its in-memory head.
//!
//! Types map one to one: string → Utf8, int → Int64, float → Float64,
//! bool → Boolean, timestamp → Timestamp(ms, "UTC"). Every column is
//! nullable, so that a batch can always be built from validated rows (a
//! required field is never null there anyway).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use inferdb_types::codec::Decoder;
use inferdb_types::{FieldType, TypesError, Value, ValueRef};

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
