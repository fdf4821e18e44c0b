//! SQL over the history with DataFusion.
//!
//! Each table of the [`History`] is a [`HistoryTable`]: a scan is the
//! union of the table's Parquet files (pruned by the query's time and key
//! predicates against the manifest's per-file bounds, then by DataFusion
//! against row-group statistics and page indexes) and the head's batches,
//! taken at scan time, so a query sees every row appended so far.
//!
//! `time_bucket(interval, ts[, origin])` is TimescaleDB's: DataFusion's
//! `date_bin` with TimescaleDB's default origin (2000-01-03, a Monday, or
//! 2000-01-01 for month buckets) instead of the Unix epoch, so weekly
//! buckets start on Mondays as they do there.
//!
//! Every query runs with its own memory pool (a query that needs more fails
//! with "Resources exhausted"), under a time limit, and returns at most
//! `max_rows` rows (the rest is cut off and reported as truncated).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, IntervalUnit, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::TableReference;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::cache::cache_manager::{CacheManagerConfig, FileMetadataCache};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{
    ColumnarValue, Expr, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableProviderFilterPushDown, TableType, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{SessionConfig, SessionContext, ident, lit};
use futures::StreamExt;

use super::latest::{EncodedRow, LatestRows, latest_rows_pattern, on_rows};
use super::{History, KeyBound};
use crate::StorageError;
use inferdb_types::Value;

/// Bounds of one query.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// Memory a query may use (bytes).
    pub memory_limit: usize,
    /// Time a query may take.
    pub timeout: Duration,
    /// Rows returned at most; the rest is cut off.
    pub max_rows: usize,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            memory_limit: 512 << 20,
            timeout: Duration::from_secs(30),
            max_rows: 100_000,
        }
    }
}

/// A query's answer.
#[derive(Debug, Clone)]
pub struct QueryResult {
    /// Columns.
    pub schema: SchemaRef,
    /// Rows.
    pub batches: Vec<RecordBatch>,
    /// Whether rows past `max_rows` were cut off.
    pub truncated: bool,
    /// Whether the latest-rows fast path answered from memory.
    pub from_memory: bool,
}

impl QueryResult {
    /// Rows returned.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// The cache of Parquet footers and page indexes shared by every query of
/// a history.
pub(crate) type MetadataCache = FileMetadataCache;

/// Bytes of Parquet metadata kept across queries.
const METADATA_CACHE_BYTES: usize = 64 << 20;

pub(crate) fn metadata_cache() -> Arc<MetadataCache> {
    Arc::new(DefaultCache::new(METADATA_CACHE_BYTES).with_name("inferdb-parquet-metadata"))
}

fn query_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Query(e.to_string())
}

impl History {
    /// A DataFusion session with every table and `time_bucket` registered,
    /// bounded by `opts.memory_limit`.
    pub fn session(&self, opts: &SqlOptions) -> Result<SessionContext, StorageError> {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(opts.memory_limit, 1.0)
            .with_cache_manager(
                CacheManagerConfig::default()
                    .with_file_metadata_cache(Some(self.inner.metadata_cache.clone()))
                    .with_metadata_cache_limit(METADATA_CACHE_BYTES),
            )
            .build_arc()
            .map_err(query_err)?;
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(2);
        let o = config.options_mut();
        o.execution.time_zone = Some("UTC".to_string());
        // Late materialization: decode the filter columns first and the
        // rest only for matching rows (one entity's rows of a file).
        o.execution.parquet.pushdown_filters = true;
        o.execution.parquet.reorder_filters = true;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.register_udf(ScalarUDF::new_from_impl(TimeBucket::new()));
        for (i, t) in self.tables().enumerate() {
            let Some((schema, _)) = self.table_schema(i) else {
                continue;
            };
            let table = HistoryTable {
                history: self.clone(),
                table: i,
                schema,
            };
            ctx.register_table(t.name.as_str(), Arc::new(table))
                .map_err(query_err)?;
        }
        for (name, batch) in self.aggregate_tables() {
            let t = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(query_err)?;
            ctx.register_table(name.as_str(), Arc::new(t))
                .map_err(query_err)?;
        }
        Ok(ctx)
    }

    /// Runs one SQL statement over the history (the head as it is now and
    /// the files) within `opts`' bounds.
    pub async fn query(&self, sql: &str, opts: &SqlOptions) -> Result<QueryResult, StorageError> {
        self.query_latest(sql, opts, |_| None).await
    }

    /// Like [`History::query`], but a query for one entity's latest rows
    /// (see [`super::latest`]) is first offered to `latest`: when it
    /// returns the entity's latest rows (at least the `limit` newest by
    /// event time, or all of them), the query runs on those instead of the
    /// files, and the result says so (`QueryResult::from_memory`).
    pub async fn query_latest(
        &self,
        sql: &str,
        opts: &SqlOptions,
        latest: impl FnOnce(&LatestRows) -> Option<Vec<EncodedRow>> + Send,
    ) -> Result<QueryResult, StorageError> {
        let ctx = self.session(opts)?;
        let run = async {
            let mut plan = ctx
                .state()
                .create_logical_plan(sql)
                .await
                .map_err(query_err)?;
            let mut from_memory = false;
            if let Some(want) = latest_rows_pattern(&plan, self) {
                self.inner.prepared.remember(sql, &plan, &want, self);
                if let Some(rows) = latest(&want) {
                    plan = on_rows(plan, self, &want, &rows)?;
                    from_memory = true;
                }
            }
            let df = ctx.execute_logical_plan(plan).await.map_err(query_err)?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let mut stream = df.execute_stream().await.map_err(query_err)?;
            let mut batches = Vec::new();
            let mut rows = 0usize;
            let mut truncated = false;
            while let Some(b) = stream.next().await {
                let b = b.map_err(query_err)?;
                if rows + b.num_rows() > opts.max_rows {
                    let keep = opts.max_rows - rows;
                    batches.push(b.slice(0, keep));
                    truncated = true;
                    break;
                }
                rows += b.num_rows();
                batches.push(b);
            }
            Ok::<_, StorageError>(QueryResult {
                schema,
                batches,
                truncated,
                from_memory,
            })
        };
        match tokio::time::timeout(opts.timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(StorageError::QueryTimeout(opts.timeout)),
        }
    }
}

impl History {
    /// The first row of table `t` whose column `col` equals `value` (a
    /// lookup by unique id), as values in column order, or `None`. Files
    /// and row groups whose statistics or bloom filter rule the value out
    /// are not read. Bounded like a query by `opts`.
    pub async fn find_row(
        &self,
        t: usize,
        col: usize,
        value: &str,
        opts: &SqlOptions,
    ) -> Result<Option<Vec<Value>>, StorageError> {
        let Some((_, def)) = self.table_schema(t) else {
            return Ok(None);
        };
        let Some((column, _)) = def.columns.get(col) else {
            return Ok(None);
        };
        let ctx = self.session(opts)?;
        let run = async {
            ctx.table(TableReference::bare(def.name.as_str()))
                .await?
                .filter(ident(column.as_str()).eq(lit(value)))?
                .limit(0, Some(1))?
                .collect()
                .await
        };
        let batches = match tokio::time::timeout(opts.timeout, run).await {
            Ok(r) => r.map_err(query_err)?,
            Err(_) => return Err(StorageError::QueryTimeout(opts.timeout)),
        };
        Ok(batches.iter().find(|b| b.num_rows() > 0).map(|b| {
            b.columns()
                .iter()
                .map(|a| super::cagg::value_at(a, 0))
                .collect()
        }))
    }
}

/// One history table as DataFusion sees it.
#[derive(Debug)]
pub struct HistoryTable {
    history: History,
    table: usize,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for HistoryTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used to prune files and row groups; DataFusion still applies them.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some((_, def)) = self.history.table_schema(self.table) else {
            return datafusion::common::plan_err!("unknown history table");
        };
        let time_col = def.columns[def.time].0.clone();
        let key_col = def.columns[def.key].0.clone();
        let (mut lo, mut hi) = (None::<i64>, None::<i64>);
        let mut keys: Option<Vec<KeyBound>> = None;
        for f in filters {
            prune_bounds(f, &time_col, &key_col, &mut lo, &mut hi, &mut keys);
        }
        let (files, batches) = self.history.scan_set(self.table, lo, hi, keys.as_deref());
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            let urls = files
                .iter()
                .map(|p| ListingTableUrl::parse(p.to_string_lossy()))
                .collect::<DfResult<Vec<_>>>()?;
            let format =
                ParquetFormat::default().with_options(state.table_options().parquet.clone());
            let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(self.schema.clone());
            let listing = ListingTable::try_new(config)?;
            plans.push(listing.scan(state, projection, filters, limit).await?);
        }
        if !batches.is_empty() || plans.is_empty() {
            let mem = MemTable::try_new(self.schema.clone(), vec![batches])?;
            plans.push(mem.scan(state, projection, filters, limit).await?);
        }
        UnionExec::try_new(plans)
    }
}

/// The column a predicate side names, through casts.
fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        Expr::TryCast(c) => column_name(&c.expr),
        _ => None,
    }
}

/// A timestamp literal in ms: (floor, ceil).
fn literal_ms(e: &Expr) -> Option<(i64, i64)> {
    let v = match e {
        Expr::Literal(v, _) => v,
        Expr::Cast(c) => return literal_ms(&c.expr),
        _ => return None,
    };
    let (x, per_ms): (i64, i64) = match v {
        ScalarValue::TimestampSecond(Some(x), _) => return Some((x * 1000, x * 1000)),
        ScalarValue::TimestampMillisecond(Some(x), _) => (*x, 1),
        ScalarValue::TimestampMicrosecond(Some(x), _) => (*x, 1_000),
        ScalarValue::TimestampNanosecond(Some(x), _) => (*x, 1_000_000),
        _ => return None,
    };
    Some((x.div_euclid(per_ms), -(-x).div_euclid(per_ms)))
}

pub(crate) fn key_literal(e: &Expr) -> Option<KeyBound> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(s)), _)
        | Expr::Literal(ScalarValue::Utf8View(Some(s)), _)
        | Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _) => Some(KeyBound::Str(s.clone())),
        Expr::Literal(ScalarValue::Int64(Some(i)), _) => Some(KeyBound::Int(*i)),
        Expr::Cast(c) => key_literal(&c.expr),
        _ => None,
    }
}

/// Narrows the time range and key set from one conjunct of the filters.
fn prune_bounds(
    e: &Expr,
    time: &str,
    key: &str,
    lo: &mut Option<i64>,
    hi: &mut Option<i64>,
    keys: &mut Option<Vec<KeyBound>>,
) {
    let mut raise = |v: i64| *lo = Some(lo.map_or(v, |l| l.max(v)));
    match e {
        Expr::BinaryExpr(b) if b.op == Operator::And => {
            prune_bounds(&b.left, time, key, lo, hi, keys);
            prune_bounds(&b.right, time, key, lo, hi, keys);
        }
        Expr::BinaryExpr(b) => {
            // Put the column on the left.
            let (col, op, lit) = match (column_name(&b.left), column_name(&b.right)) {
                (Some(c), None) => (c, b.op, &*b.right),
                (None, Some(c)) => match b.op.swap() {
                    Some(op) => (c, op, &*b.left),
                    None => return,
                },
                _ => return,
            };
            if col == time {
                let Some((floor, ceil)) = literal_ms(lit) else {
                    return;
                };
                // A bound on a whole millisecond is exact: `<` excludes it.
                let exact = floor == ceil;
                match op {
                    Operator::Gt if exact => raise(floor.saturating_add(1)),
                    Operator::Lt if exact => {
                        let c = ceil.saturating_sub(1);
                        *hi = Some(hi.map_or(c, |h| h.min(c)));
                    }
                    Operator::Gt | Operator::GtEq => raise(floor),
                    Operator::Lt | Operator::LtEq => *hi = Some(hi.map_or(ceil, |h| h.min(ceil))),
                    Operator::Eq => {
                        raise(floor);
                        *hi = Some(hi.map_or(ceil, |h| h.min(ceil)));
                    }
                    _ => {}
                }
            } else if col == key
                && op == Operator::Eq
                && let Some(k) = key_literal(lit)
            {
                *keys = Some(vec![k]);
            }
        }
        Expr::Between(b) if !b.negated && column_name(&b.expr) == Some(time) => {
            if let Some((floor, _)) = literal_ms(&b.low) {
                raise(floor);
            }
            if let Some((_, ceil)) = literal_ms(&b.high) {
                *hi = Some(hi.map_or(ceil, |h| h.min(ceil)));
            }
        }
        Expr::InList(l) if !l.negated && column_name(&l.expr) == Some(key) => {
            let ks: Option<Vec<KeyBound>> = l.list.iter().map(key_literal).collect();
            if let Some(ks) = ks {
                *keys = Some(ks);
            }
        }
        _ => {}
    }
}

/// TimescaleDB's `time_bucket(interval, ts[, origin])` over `date_bin`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeBucket {
    signature: Signature,
}

impl TimeBucket {
    fn new() -> TimeBucket {
        TimeBucket {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// 2000-01-03T00:00:00Z and 2000-01-01T00:00:00Z in ns.
const ORIGIN_NS: i64 = 946_857_600_000_000_000;
const MONTH_ORIGIN_NS: i64 = 946_684_800_000_000_000;

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types.get(1) {
            Some(t @ DataType::Timestamp(_, _)) => Ok(t.clone()),
            _ => datafusion::common::plan_err!("time_bucket(interval, timestamp[, origin])"),
        }
    }

    /// Keeps the timestamp's unit and zone (so `bucket` has the type of
    /// the column it buckets); the origin becomes a nanosecond timestamp,
    /// as `date_bin` wants it.
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        if !(2..=3).contains(&arg_types.len()) {
            return datafusion::common::plan_err!(
                "time_bucket takes (interval, timestamp[, origin]), got {} arguments",
                arg_types.len()
            );
        }
        let ts = match &arg_types[1] {
            DataType::Timestamp(u, tz) => DataType::Timestamp(*u, tz.clone()),
            DataType::Date32 | DataType::Date64 | DataType::Utf8 | DataType::Utf8View => {
                DataType::Timestamp(TimeUnit::Nanosecond, None)
            }
            other => {
                return datafusion::common::plan_err!(
                    "time_bucket: the second argument must be a timestamp, not {other}"
                );
            }
        };
        let tz = match &ts {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let mut out = vec![DataType::Interval(IntervalUnit::MonthDayNano), ts];
        if arg_types.len() == 3 {
            out.push(DataType::Timestamp(TimeUnit::Nanosecond, tz));
        }
        Ok(out)
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        if args.args.len() == 2 {
            let months = match &args.args[0] {
                ColumnarValue::Scalar(ScalarValue::IntervalMonthDayNano(Some(v))) => v.months != 0,
                ColumnarValue::Scalar(ScalarValue::IntervalYearMonth(Some(_))) => true,
                _ => false,
            };
            let origin = if months { MONTH_ORIGIN_NS } else { ORIGIN_NS };
            let tz = match args.args[1].data_type() {
                DataType::Timestamp(_, tz) => tz,
                _ => None,
            };
            args.args
                .push(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(
                    Some(origin),
                    tz.clone(),
                )));
            args.arg_fields
                .push(Arc::new(datafusion::arrow::datatypes::Field::new(
                    "origin",
                    DataType::Timestamp(TimeUnit::Nanosecond, tz),
                    false,
                )));
        }
        datafusion::functions::datetime::date_bin().invoke_with_args(args)
    }
}
