//! Continuous aggregates kept as events arrive.
//!
//! Each aggregate is a map (bucket start, group values) → one accumulator
//! per column, updated by [`super::History::append`] for every row of its
//! table (late rows too: the aggregate equals the same `GROUP BY` over the
//! raw history, which holds them). At open, and after an erasure, the map
//! is rebuilt from the table's files and head. A query sees it as a table,
//! one row per bucket and group, ordered by them.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimestampMillisecondType,
};
use inferdb_types::{BucketAgg, Catalog, ContinuousAggregate, FieldType, Value};

use super::columns::{UTC, arrow_type};

/// TimescaleDB's default `time_bucket` origin, 2000-01-03T00:00:00Z, in ms.
pub const BUCKET_ORIGIN_MS: i64 = 946_857_600_000;

/// An aggregate column: name, aggregation, source column and its type.
pub type CaggColumn = (String, BucketAgg, Option<(usize, FieldType)>);

/// A continuous aggregate as the history runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct CaggDef {
    /// Table name.
    pub name: String,
    /// Index of the source table.
    pub table: usize,
    /// Time column of the source.
    pub time: usize,
    /// Bucket width (ms).
    pub bucket_ms: i64,
    /// Group columns: index in the source, name, type.
    pub group_by: Vec<(usize, String, FieldType)>,
    /// Aggregate columns: name, aggregation, source column and its type.
    pub columns: Vec<CaggColumn>,
}

impl CaggDef {
    /// The definition of a catalog's aggregate (table index = stream index).
    pub fn of(c: &ContinuousAggregate, catalog: &Catalog) -> CaggDef {
        let s = &catalog.streams[c.stream];
        CaggDef {
            name: c.name.clone(),
            table: c.stream,
            time: s.time,
            bucket_ms: c.bucket_ms,
            group_by: c
                .group_by
                .iter()
                .map(|&i| (i, s.fields[i].name.clone(), s.fields[i].ty))
                .collect(),
            columns: c
                .columns
                .iter()
                .map(|(n, a, f)| (n.clone(), *a, f.map(|i| (i, s.fields[i].ty))))
                .collect(),
        }
    }

    /// Every aggregate of a catalog.
    pub fn all(catalog: &Catalog) -> Vec<CaggDef> {
        catalog
            .aggregates
            .iter()
            .map(|c| CaggDef::of(c, catalog))
            .collect()
    }

    /// The table's schema: `bucket`, the groups, the columns.
    pub fn schema(&self) -> SchemaRef {
        let mut fields = vec![Field::new(
            "bucket",
            arrow_type(FieldType::Timestamp),
            false,
        )];
        for (_, n, t) in &self.group_by {
            fields.push(Field::new(n, arrow_type(*t), true));
        }
        for (n, agg, f) in &self.columns {
            let t = match (agg, f) {
                (BucketAgg::Count, _) => DataType::Int64,
                (BucketAgg::Avg, _) => DataType::Float64,
                (BucketAgg::Sum, Some((_, FieldType::Int))) => DataType::Int64,
                (BucketAgg::Sum, _) => DataType::Float64,
                (_, Some((_, t))) => arrow_type(*t),
                (_, None) => DataType::Float64,
            };
            fields.push(Field::new(n, t, true));
        }
        Arc::new(Schema::new(fields))
    }

    fn bucket(&self, ts: i64) -> i64 {
        let b = self.bucket_ms.max(1);
        BUCKET_ORIGIN_MS + (ts - BUCKET_ORIGIN_MS).div_euclid(b) * b
    }
}

/// A group value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum GKey {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
}

fn gkey(v: &Value) -> GKey {
    match v {
        Value::Null | Value::Float(_) => GKey::Null,
        Value::Bool(b) => GKey::Bool(*b),
        Value::Int(i) | Value::Ts(i) => GKey::Int(*i),
        Value::Str(s) => GKey::Str(s.to_string()),
    }
}

/// One column's running state.
#[derive(Debug, Clone, Default)]
struct Acc {
    n: i64,
    fsum: f64,
    isum: i64,
    fext: Option<f64>,
    iext: Option<i64>,
}

impl Acc {
    fn add(&mut self, agg: BucketAgg, v: Option<&Value>) {
        let v = match v {
            None => {
                // count(*)
                self.n += 1;
                return;
            }
            Some(Value::Null) => return,
            Some(v) => v,
        };
        self.n += 1;
        match v {
            Value::Int(i) | Value::Ts(i) => {
                self.isum = self.isum.wrapping_add(*i);
                self.fsum += *i as f64;
                self.iext = Some(match (self.iext, agg) {
                    (None, _) => *i,
                    (Some(e), BucketAgg::Min) => e.min(*i),
                    (Some(e), _) => e.max(*i),
                });
            }
            Value::Float(f) => {
                self.fsum += f;
                self.fext = Some(match (self.fext, agg) {
                    (None, _) => *f,
                    (Some(e), BucketAgg::Min) => e.min(*f),
                    (Some(e), _) => e.max(*f),
                });
            }
            _ => {}
        }
    }
}

/// A hash map, not an ordered one: every history row looks its group up,
/// and a B-tree's dozen string comparisons per row cost about a tenth of
/// the ingest's CPU; [`Caggs::batch`] sorts the groups when it is read.
type Groups = HashMap<(i64, Vec<GKey>), Vec<Acc>>;

/// The running state of every aggregate.
#[derive(Default)]
pub(crate) struct Caggs {
    pub defs: Vec<CaggDef>,
    groups: Vec<Groups>,
}

impl Caggs {
    pub fn new(defs: Vec<CaggDef>) -> Caggs {
        let groups = defs.iter().map(|_| Groups::new()).collect();
        Caggs { defs, groups }
    }

    /// Whether any aggregate reads table `t`.
    pub fn reads(&self, t: usize) -> bool {
        self.defs.iter().any(|d| d.table == t)
    }

    /// Adds rows of table `t`.
    pub fn add(&mut self, t: usize, rows: &[Vec<Value>]) {
        for (d, g) in self.defs.iter().zip(self.groups.iter_mut()) {
            if d.table != t {
                continue;
            }
            for r in rows {
                let Some(Value::Ts(ts)) = r.get(d.time) else {
                    continue;
                };
                let key = (
                    d.bucket(*ts),
                    d.group_by
                        .iter()
                        .map(|(i, _, _)| r.get(*i).map_or(GKey::Null, gkey))
                        .collect(),
                );
                let accs = g
                    .entry(key)
                    .or_insert_with(|| vec![Acc::default(); d.columns.len()]);
                for (acc, (_, agg, f)) in accs.iter_mut().zip(&d.columns) {
                    match f {
                        None => acc.add(*agg, None),
                        Some((i, _)) => acc.add(*agg, Some(r.get(*i).unwrap_or(&Value::Null))),
                    }
                }
            }
        }
    }

    /// Empties aggregate state of table `t` (before a rebuild).
    pub fn clear(&mut self, t: usize) {
        for (d, g) in self.defs.iter().zip(self.groups.iter_mut()) {
            if d.table == t {
                g.clear();
            }
        }
    }

    /// Adds the rows of a batch of table `t` (rebuild).
    pub fn add_batch(&mut self, t: usize, b: &RecordBatch) {
        let cols: Vec<usize> = {
            let mut c: Vec<usize> = Vec::new();
            for d in self.defs.iter().filter(|d| d.table == t) {
                c.push(d.time);
                c.extend(d.group_by.iter().map(|g| g.0));
                c.extend(d.columns.iter().filter_map(|c| c.2.map(|f| f.0)));
            }
            c
        };
        if cols.is_empty() {
            return;
        }
        let width = b.num_columns();
        let mut rows = Vec::with_capacity(b.num_rows());
        for i in 0..b.num_rows() {
            let mut r = vec![Value::Null; width];
            for &c in &cols {
                if let Some(a) = b.columns().get(c) {
                    r[c] = value_at(a, i);
                }
            }
            rows.push(r);
        }
        self.add(t, &rows);
    }

    /// Aggregate `i` as a batch.
    pub fn batch(&self, i: usize) -> Option<RecordBatch> {
        let d = self.defs.get(i)?;
        let mut g: Vec<_> = self.groups.get(i)?.iter().collect();
        g.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let schema = d.schema();
        let mut cols: Vec<ArrayRef> = Vec::new();
        let mut bucket = TimestampMillisecondBuilder::new().with_timezone(UTC);
        for ((k, _), _) in &g {
            bucket.append_value(*k);
        }
        cols.push(Arc::new(bucket.finish()));
        for (gi, (_, _, ty)) in d.group_by.iter().enumerate() {
            let keys = g.iter().map(|((_, ks), _)| &ks[gi]);
            cols.push(match ty {
                FieldType::String => {
                    let mut b = StringBuilder::new();
                    for k in keys {
                        match k {
                            GKey::Str(s) => b.append_value(s),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                FieldType::Bool => {
                    let mut b = BooleanBuilder::new();
                    for k in keys {
                        match k {
                            GKey::Bool(x) => b.append_value(*x),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                FieldType::Timestamp => {
                    let mut b = TimestampMillisecondBuilder::new().with_timezone(UTC);
                    for k in keys {
                        match k {
                            GKey::Int(x) => b.append_value(*x),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                FieldType::Int | FieldType::Float => {
                    let mut b = Int64Builder::new();
                    for k in keys {
                        match k {
                            GKey::Int(x) => b.append_value(*x),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
            });
        }
        for (ci, (_, agg, f)) in d.columns.iter().enumerate() {
            let accs = g.iter().map(|(_, a)| &a[ci]);
            let int_field = matches!(f, Some((_, FieldType::Int | FieldType::Timestamp)));
            let col: ArrayRef = match agg {
                BucketAgg::Count => Arc::new(Int64Builder::new().tap(|b| {
                    accs.for_each(|a| b.append_value(a.n));
                })),
                BucketAgg::Avg => Arc::new(Float64Builder::new().tap(|b| {
                    accs.for_each(|a| {
                        b.append_option((a.n > 0).then(|| a.fsum / a.n as f64));
                    });
                })),
                BucketAgg::Sum if int_field => Arc::new(Int64Builder::new().tap(|b| {
                    accs.for_each(|a| b.append_option((a.n > 0).then_some(a.isum)));
                })),
                BucketAgg::Sum => Arc::new(Float64Builder::new().tap(|b| {
                    accs.for_each(|a| b.append_option((a.n > 0).then_some(a.fsum)));
                })),
                BucketAgg::Min | BucketAgg::Max => match f {
                    Some((_, FieldType::Timestamp)) => {
                        let mut b = TimestampMillisecondBuilder::new().with_timezone(UTC);
                        accs.for_each(|a| b.append_option(a.iext));
                        Arc::new(b.finish())
                    }
                    Some((_, FieldType::Int)) => Arc::new(Int64Builder::new().tap(|b| {
                        accs.for_each(|a| b.append_option(a.iext));
                    })),
                    _ => Arc::new(Float64Builder::new().tap(|b| {
                        accs.for_each(|a| b.append_option(a.fext));
                    })),
                },
            };
            cols.push(col);
        }
        match RecordBatch::try_new(schema.clone(), cols) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(aggregate = %d.name, error = %e, "continuous aggregate columns out of step");
                Some(RecordBatch::new_empty(schema))
            }
        }
    }
}

/// Builds an array through a closure over its builder.
trait Tap: Sized {
    type Out;
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self::Out;
}

impl Tap for Int64Builder {
    type Out = datafusion::arrow::array::Int64Array;
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self::Out {
        f(&mut self);
        self.finish()
    }
}

impl Tap for Float64Builder {
    type Out = datafusion::arrow::array::Float64Array;
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self::Out {
        f(&mut self);
        self.finish()
    }
}

/// One cell of a history column as a value.
pub(crate) fn value_at(a: &ArrayRef, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Utf8 => Value::Str(a.as_string::<i32>().value(i).into()),
        DataType::Int64 => Value::Int(a.as_primitive::<Int64Type>().value(i)),
        DataType::Float64 => Value::Float(a.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => Value::Bool(a.as_boolean().value(i)),
        DataType::Timestamp(_, _) => a
            .as_primitive_opt::<TimestampMillisecondType>()
            .map_or(Value::Null, |t| Value::Ts(t.value(i))),
        _ => Value::Null,
    }
}
