//! Writing and reading one Parquet file of history.
//!
//! A file holds rows of one partition sorted by (entity key, time), so an
//! entity's range is a few pages; row groups carry min/max statistics and a
//! page index for pruning. It is written to `<name>.tmp`, fsynced and
//! renamed, so a file name only ever names a whole file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{SortColumn, SortOptions, concat_batches, lexsort_to_indices};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, TimestampMillisecondType};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

use foldhash::fast::FixedState;

use super::manifest::{FileMeta, KeyBound};
use super::{FailPoint, failpoint};
use crate::StorageError;
use crate::segment::sync_dir;

/// Rows per row group: small enough that a key lookup reads little, large
/// enough for good compression.
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Rows per data page at most: pages carry their own min/max (the page
/// index), so one entity's rows in a file sorted by key are found by
/// decoding a few small pages rather than a whole row group.
const PAGE_ROWS: usize = 4 * 1024;

fn arrow_err(path: &Path, what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason: format!("{what}: {e}"),
    }
}

/// Concatenates `batches` and sorts them by (key column, time column).
pub(crate) fn sort_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    key: usize,
    time: usize,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let all = concat_batches(schema, batches)?;
    if all.num_rows() <= 1 {
        return Ok(all);
    }
    if let Some(idx) = key_time_order(all.column(key).as_ref(), all.column(time).as_ref()) {
        return datafusion::arrow::compute::take_record_batch(&all, &idx);
    }
    let opts = SortOptions {
        descending: false,
        nulls_first: true,
    };
    let idx = lexsort_to_indices(
        &[
            SortColumn {
                values: all.column(key).clone(),
                options: Some(opts),
            },
            SortColumn {
                values: all.column(time).clone(),
                options: Some(opts),
            },
        ],
        None,
    )?;
    datafusion::arrow::compute::take_record_batch(&all, &idx)
}

/// The row order of (string key, time) with null keys first and ties kept
/// in arrival order, for the common case of a string key and a time column
/// without nulls; `None` otherwise (the caller falls back to Arrow's
/// generic `lexsort_to_indices`).
///
/// Each distinct key gets its rank among the distinct keys, then every row
/// sorts as one `u128` (rank, time, row): a few hundred thousand distinct
/// keys are compared as strings instead of every pair of a million rows
/// through Arrow's dynamic comparators, which made the history's flush
/// thread spend half its time sorting during ingest.
fn key_time_order(key: &dyn Array, time: &dyn Array) -> Option<UInt32Array> {
    let keys = key.as_string_opt::<i32>()?;
    let times = time.as_primitive_opt::<TimestampMillisecondType>()?;
    let n = keys.len();
    if time.null_count() > 0 || u32::try_from(n).is_err() {
        return None;
    }
    // Rank 0 is the null key; distinct keys get 1.. in sorted order.
    let mut distinct: HashMap<&str, u32, FixedState> = HashMap::with_hasher(FixedState::default());
    let mut row_key = Vec::with_capacity(n);
    for k in keys.iter() {
        row_key.push(match k {
            None => u32::MAX,
            Some(k) => {
                let next = distinct.len() as u32;
                *distinct.entry(k).or_insert(next)
            }
        });
    }
    let mut by_name: Vec<(&str, u32)> = distinct.into_iter().collect();
    by_name.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut rank = vec![0u32; by_name.len()];
    for (r, (_, id)) in by_name.iter().enumerate() {
        rank[*id as usize] = r as u32 + 1;
    }
    let mut order: Vec<u128> = row_key
        .iter()
        .zip(times.values().iter())
        .enumerate()
        .map(|(row, (&id, &t))| {
            let r = if id == u32::MAX { 0 } else { rank[id as usize] };
            // Flipping the sign bit orders i64 as u64.
            let t = (t as u64) ^ (1 << 63);
            (u128::from(r) << 96) | (u128::from(t) << 32) | row as u128
        })
        .collect();
    order.sort_unstable();
    Some(UInt32Array::from_iter_values(
        order.iter().map(|&o| o as u32),
    ))
}

fn key_bounds(batch: &RecordBatch, key: usize) -> (Option<KeyBound>, Option<KeyBound>) {
    let col = batch.column(key);
    // Sorted by key with nulls first: the bounds are the first non-null
    // and the last value.
    let first = (0..col.len()).find(|&i| col.is_valid(i));
    let last = (0..col.len()).rev().find(|&i| col.is_valid(i));
    let at = |i: usize| match col.data_type() {
        DataType::Utf8 => Some(KeyBound::Str(col.as_string::<i32>().value(i).to_string())),
        DataType::Int64 => Some(KeyBound::Int(col.as_primitive::<Int64Type>().value(i))),
        _ => None,
    };
    (first.and_then(at), last.and_then(at))
}

fn time_bounds(batch: &RecordBatch, time: usize) -> (i64, i64) {
    let col = batch.column(time);
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    if let Some(ts) = col.as_primitive_opt::<TimestampMillisecondType>() {
        for v in ts.iter().flatten() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    (lo, hi)
}

/// What a new file is.
pub(crate) struct NewFile<'a> {
    /// The table it belongs to (name, key, time and id columns).
    pub def: &'a super::TableDef,
    pub partition: i64,
    pub name: String,
    pub zstd_level: i32,
}

/// Writes `sorted` (already in (key, time) order) as a new file under
/// `dir/<table>/<partition>/`, durably; returns its manifest entry.
pub(crate) fn write_file(
    dir: &Path,
    sorted: &RecordBatch,
    f: NewFile<'_>,
) -> Result<FileMeta, StorageError> {
    let part_dir = dir.join(&f.def.name).join(f.partition.to_string());
    fs::create_dir_all(&part_dir)
        .map_err(|e| StorageError::io("create history partition", &part_dir, e))?;
    let path = part_dir.join(&f.name);
    let tmp = part_dir.join(format!("{}.tmp", f.name));
    let level = ZstdLevel::try_new(f.zstd_level).map_err(|e| arrow_err(&tmp, "zstd level", e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(vec![
            SortingColumn {
                column_idx: f.def.key as i32,
                descending: false,
                nulls_first: true,
            },
            SortingColumn {
                column_idx: f.def.time as i32,
                descending: false,
                nulls_first: true,
            },
        ]));
    let props = match f
        .def
        .id
        .and_then(|i| sorted.schema().fields().get(i).cloned())
    {
        // Sized for a row group of distinct ids at 1 % false positives.
        // Ids are distinct: a dictionary would only be built to be dropped.
        Some(field) => {
            let path = ColumnPath::from(field.name().as_str());
            props
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_max_ndv(path.clone(), ROW_GROUP_ROWS as u64)
                .set_column_bloom_filter_fpp(path, 0.01)
        }
        None => props,
    }
    .build();
    let file = File::create(&tmp).map_err(|e| StorageError::io("create history file", &tmp, e))?;
    let mut w = ArrowWriter::try_new(file, sorted.schema(), Some(props))
        .map_err(|e| arrow_err(&tmp, "parquet writer", e))?;
    w.write(sorted)
        .map_err(|e| arrow_err(&tmp, "parquet write", e))?;
    let file = w
        .into_inner()
        .map_err(|e| arrow_err(&tmp, "parquet close", e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsync history file", &tmp, e))?;
    let bytes = file
        .metadata()
        .map_err(|e| StorageError::io("stat history file", &tmp, e))?
        .len();
    drop(file);
    failpoint(FailPoint::DataWritten)?;
    fs::rename(&tmp, &path).map_err(|e| StorageError::io("rename history file", &tmp, e))?;
    sync_dir(&part_dir)?;
    let (min_ts, max_ts) = time_bounds(sorted, f.def.time);
    let (min_key, max_key) = key_bounds(sorted, f.def.key);
    Ok(FileMeta {
        table: f.def.name.clone(),
        partition: f.partition,
        name: f.name,
        rows: sorted.num_rows() as u64,
        bytes,
        min_ts,
        max_ts,
        min_key,
        max_key,
        zstd_level: f.zstd_level,
    })
}

/// Reads a whole file back (compaction, erasure).
pub(crate) fn read_file(path: &Path, schema: &SchemaRef) -> Result<Vec<RecordBatch>, StorageError> {
    let file = File::open(path).map_err(|e| StorageError::io("open history file", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(|e| arrow_err(path, "parquet read", e))?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| arrow_err(path, "parquet read", e))?;
        // Files are written with the table's schema; re-stamp it so that
        // batches from files and from the head concatenate.
        let b = RecordBatch::try_new(Arc::clone(schema), b.columns().to_vec())
            .map_err(|e| arrow_err(path, "history file schema", e))?;
        out.push(b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use proptest::prelude::*;

    fn batch(rows: &[(Option<u8>, i64)]) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("arrival", DataType::Int64, false),
        ]));
        let keys: StringArray = rows
            .iter()
            .map(|(k, _)| k.map(|k| format!("user_{k:03}")))
            .collect();
        let ts = TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1));
        let arrival = Int64Array::from_iter_values(0..rows.len() as i64);
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(keys), Arc::new(ts), Arc::new(arrival)],
        )
        .unwrap();
        (schema, b)
    }

    /// (key, time, arrival) of every row, in the batch's order.
    fn triples(b: &RecordBatch) -> Vec<(Option<String>, i64, i64)> {
        let k = b.column(0).as_string::<i32>();
        let t = b.column(1).as_primitive::<TimestampMillisecondType>();
        let a = b.column(2).as_primitive::<Int64Type>();
        (0..b.num_rows())
            .map(|i| {
                (
                    k.is_valid(i).then(|| k.value(i).to_string()),
                    t.value(i),
                    a.value(i),
                )
            })
            .collect()
    }

    proptest! {
        /// The ranked sort orders rows as a naive stable sort by (key with
        /// nulls first, time) does, across batches, with extreme times.
        #[test]
        fn ranked_sort_equals_a_naive_stable_sort(
            rows in prop::collection::vec(
                (
                    prop::option::weighted(0.95, 0u8..40),
                    prop_oneof![-3i64..3, Just(i64::MIN), Just(i64::MAX), any::<i64>()],
                ),
                0..300,
            ),
            split in 0usize..300,
        ) {
            let (schema, all) = batch(&rows);
            let at = split.min(rows.len());
            let parts = [all.slice(0, at), all.slice(at, rows.len() - at)];
            let sorted = sort_rows(&schema, &parts, 0, 1).unwrap();
            let mut expected = triples(&all);
            expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            prop_assert_eq!(triples(&sorted), expected);
        }
    }

    #[test]
    fn other_key_types_and_null_times_keep_the_generic_sort() {
        let ints = Int64Array::from(vec![3, 1, 2]);
        let ts = TimestampMillisecondArray::from(vec![Some(1), None, Some(0)]);
        assert!(key_time_order(&ints, &ts).is_none());
        let keys = StringArray::from(vec!["b", "a", "c"]);
        assert!(key_time_order(&keys, &ts).is_none());
        let ts = TimestampMillisecondArray::from(vec![5, 5, 4]);
        let order = key_time_order(&keys, &ts).unwrap();
        assert_eq!(order.values().to_vec(), vec![1, 0, 2]);
    }
}
