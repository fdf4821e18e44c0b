//! Point-in-time training data: `POST /v1/training-data?view=V[&view=…]`
//! and `inferdb export`.
//!
//! The body is rows of (key, `ts`[, anything else, e.g. a label]): CSV with
//! a header (`text/csv`), or Parquet (`application/vnd.apache.parquet`, or
//! any body starting with Parquet's magic `PAR1`). Each view needs its key
//! column (`entity_id` for `user_txn`, `merchant_id` for `merchant_txn`);
//! `ts` is RFC 3339 or epoch milliseconds (in Parquet also a timestamp
//! column). The answer is the same rows in the same order with one column
//! per feature appended, named `{view}__{feature}` (Feast's "full feature
//! names"), in the format that came in. Each value is the feature as it
//! was at the row's `ts` (see `Engine::features_at`): no event after it
//! counts.

use crate::api::{ApiError, ApiResult, AppState};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use inferdb_engine::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMillisecondBuilder,
};
use inferdb_engine::arrow::datatypes::{DataType, Field, Schema};
use inferdb_engine::{Engine, EngineError};
use inferdb_types::{Timestamp, Value};
use std::sync::Arc;

/// The media type of a Parquet body.
pub const PARQUET: &str = "application/vnd.apache.parquet";

/// The input and output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsFormat {
    /// CSV with a header.
    Csv,
    /// Parquet.
    Parquet,
}

impl RowsFormat {
    /// Parquet when the type says so or the body starts with `PAR1`.
    pub fn detect(content_type: Option<&str>, body: &[u8]) -> RowsFormat {
        if content_type.is_some_and(|c| c.contains("parquet")) || body.starts_with(b"PAR1") {
            RowsFormat::Parquet
        } else {
            RowsFormat::Csv
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            RowsFormat::Csv => "text/csv; charset=utf-8",
            RowsFormat::Parquet => PARQUET,
        }
    }
}

fn bad(m: impl Into<String>) -> EngineError {
    EngineError::InvalidInput(m.into())
}

fn read_rows(body: &[u8], f: RowsFormat) -> Result<(Arc<Schema>, Vec<RecordBatch>), EngineError> {
    use inferdb_engine::arrow::csv;
    match f {
        RowsFormat::Csv => {
            let header = body.split(|b| *b == b'\n').next().unwrap_or_default();
            let mut names = Vec::new();
            // Every column is read as text and written back as it came.
            for n in String::from_utf8_lossy(header)
                .trim_end_matches('\r')
                .split(',')
            {
                names.push(Field::new(n.trim().trim_matches('"'), DataType::Utf8, true));
            }
            if names.iter().all(|f| f.name().is_empty()) {
                return Err(bad("body: the CSV has no header row"));
            }
            let schema = Arc::new(Schema::new(names));
            let reader = csv::ReaderBuilder::new(schema.clone())
                .with_header(true)
                .build(std::io::Cursor::new(body))
                .map_err(|e| bad(format!("body: CSV: {e}")))?;
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("body: CSV: {e}")))?;
            Ok((schema, batches))
        }
        RowsFormat::Parquet => {
            use inferdb_engine::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let b = ParquetRecordBatchReaderBuilder::try_new(Bytes::copy_from_slice(body))
                .map_err(|e| bad(format!("body: Parquet: {e}")))?;
            let schema = b.schema().clone();
            let reader = b.build().map_err(|e| bad(format!("body: Parquet: {e}")))?;
            let batches = reader
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("body: Parquet: {e}")))?;
            Ok((schema, batches))
        }
    }
}

/// A key or time cell as text / ms.
fn cell_text(a: &ArrayRef, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => Some(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Some(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Some(a.as_string_view().value(i).to_string()),
        DataType::Int64 => Some(
            a.as_primitive::<inferdb_engine::arrow::datatypes::Int64Type>()
                .value(i)
                .to_string(),
        ),
        DataType::Int32 => Some(
            a.as_primitive::<inferdb_engine::arrow::datatypes::Int32Type>()
                .value(i)
                .to_string(),
        ),
        _ => None,
    }
}

fn cell_ms(a: &ArrayRef, i: usize) -> Option<i64> {
    use inferdb_engine::arrow::datatypes::{
        Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
        TimestampNanosecondType, TimestampSecondType,
    };
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            Some(a.as_primitive::<TimestampSecondType>().value(i) * 1000)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Some(a.as_primitive::<TimestampMillisecondType>().value(i))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => Some(
            a.as_primitive::<TimestampMicrosecondType>()
                .value(i)
                .div_euclid(1000),
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Some(
            a.as_primitive::<TimestampNanosecondType>()
                .value(i)
                .div_euclid(1_000_000),
        ),
        DataType::Int64 => Some(a.as_primitive::<Int64Type>().value(i)),
        _ => cell_text(a, i).and_then(|s| Timestamp::parse(s.trim()).ok().map(|t| t.millis())),
    }
}

/// A column of feature values.
fn values_array(vals: &[&Value]) -> ArrayRef {
    let kind = vals.iter().fold(0u8, |k, v| match v {
        Value::Null => k,
        Value::Int(_) => k.max(1),
        Value::Float(_) => k.max(2),
        Value::Ts(_) => k.max(3),
        Value::Bool(_) => k.max(4),
        Value::Str(_) => 5,
    });
    match kind {
        0 | 2 => {
            let mut b = Float64Builder::new();
            for v in vals {
                b.append_option(match v {
                    Value::Float(f) => Some(*f),
                    Value::Int(i) => Some(*i as f64),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        1 => {
            let mut b = Int64Builder::new();
            for v in vals {
                b.append_option(match v {
                    Value::Int(i) => Some(*i),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        3 => {
            let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
            for v in vals {
                b.append_option(match v {
                    Value::Ts(t) => Some(*t),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        4 => {
            let mut b = BooleanBuilder::new();
            for v in vals {
                b.append_option(match v {
                    Value::Bool(x) => Some(*x),
                    _ => None,
                });
            }
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::new();
            for v in vals {
                match v {
                    Value::Null => b.append_null(),
                    Value::Str(s) => b.append_value(s),
                    other => b.append_value(format!("{other:?}")),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// Appends the point-in-time features of `views` to the rows in `body`.
/// Blocking (reads the history).
pub fn training_data(
    engine: &Engine,
    views: &[String],
    body: &[u8],
    format: RowsFormat,
) -> Result<Vec<u8>, EngineError> {
    if views.is_empty() {
        return Err(bad("query: name at least one view (?view=user_txn)"));
    }
    let (schema, batches) = read_rows(body, format)?;
    let all = inferdb_engine::arrow::compute::concat_batches(&schema, &batches)
        .map_err(|e| bad(format!("body: {e}")))?;
    let n = all.num_rows();
    let ts_col = schema
        .index_of("ts")
        .map_err(|_| bad("body: a `ts` column is required"))?;
    let ts: Vec<i64> = (0..n)
        .map(|i| {
            cell_ms(all.column(ts_col), i).ok_or_else(|| {
                bad(format!(
                    "body: row {}: ts: not a timestamp (RFC 3339 or epoch ms)",
                    i + 1
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut cols: Vec<ArrayRef> = all.columns().to_vec();
    let catalog = engine.catalog();
    for view in views {
        let v = catalog
            .views
            .iter()
            .find(|v| &v.name == view)
            .ok_or_else(|| EngineError::UnknownView(view.clone()))?;
        let key_name = &catalog.streams[v.stream].fields[v.key].name;
        let kc = schema.index_of(key_name).map_err(|_| {
            bad(format!(
                "body: a `{key_name}` column (the key of view {view}) is required"
            ))
        })?;
        let reqs: Vec<(String, i64)> = (0..n)
            .map(|i| {
                cell_text(all.column(kc), i)
                    .map(|k| (k, ts[i]))
                    .ok_or_else(|| bad(format!("body: row {}: {key_name}: missing", i + 1)))
            })
            .collect::<Result<_, _>>()?;
        let rows = engine.features_at(view, &reqs)?;
        for (fi, feat) in v.features.iter().enumerate() {
            let vals: Vec<&Value> = rows
                .iter()
                .map(|r| r.get(fi).unwrap_or(&Value::Null))
                .collect();
            let arr = values_array(&vals);
            fields.push(Field::new(
                format!("{view}__{}", feat.name),
                arr.data_type().clone(),
                true,
            ));
            cols.push(arr);
        }
    }
    let out_schema = Arc::new(Schema::new(fields));
    let out = RecordBatch::try_new(out_schema.clone(), cols)
        .map_err(|e| EngineError::Internal(format!("training data: {e}")))?;
    let mut bytes = Vec::new();
    match format {
        RowsFormat::Csv => {
            let mut w = inferdb_engine::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut bytes);
            w.write(&out)
                .map_err(|e| EngineError::Internal(format!("training data CSV: {e}")))?;
        }
        RowsFormat::Parquet => {
            let mut w =
                inferdb_engine::parquet::arrow::ArrowWriter::try_new(&mut bytes, out_schema, None)
                    .map_err(|e| EngineError::Internal(format!("training data Parquet: {e}")))?;
            w.write(&out)
                .map_err(|e| EngineError::Internal(format!("training data Parquet: {e}")))?;
            w.close()
                .map_err(|e| EngineError::Internal(format!("training data Parquet: {e}")))?;
        }
    }
    Ok(bytes)
}

/// `POST /v1/training-data?view=…`.
pub async fn post_training_data(
    State(st): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    let mut views = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "view" => views.push(v),
            other => return Err(ApiError::bad(format!("query: unknown parameter {other:?}"))),
        }
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = RowsFormat::detect(ct, &body);
    let engine = st.engine.clone();
    let bytes = tokio::task::spawn_blocking(move || training_data(&engine, &views, &body, format))
        .await
        .map_err(|e| {
            ApiError::with_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        })??;
    Ok(([(header::CONTENT_TYPE, format.content_type())], bytes).into_response())
}

/// `inferdb export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Feature views to add (repeat for several).
    #[arg(long = "view", required = true)]
    pub views: Vec<String>,
    /// Rows of (key, ts[, label…]): CSV with a header, or Parquet.
    #[arg(long)]
    pub input: std::path::PathBuf,
    /// Where to write the rows with features (same format as the input).
    #[arg(long)]
    pub output: std::path::PathBuf,
    /// A running server, host:port (default 127.0.0.1:8080).
    #[arg(long, conflicts_with = "data_dir")]
    pub server: Option<String>,
    /// Read a data directory directly instead (no server may hold it).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// Runs `inferdb export`.
pub fn run_export(args: &ExportArgs) -> anyhow::Result<()> {
    let body = std::fs::read(&args.input)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.input.display()))?;
    let format = RowsFormat::detect(None, &body);
    let out = match &args.data_dir {
        Some(dir) => {
            let engine = Engine::open(inferdb_engine::EngineConfig::new(dir))?;
            let r = training_data(&engine, &args.views, &body, format);
            engine.shutdown();
            r?
        }
        None => {
            let addr = crate::client::server_addr(args.server.as_deref())?;
            let query: Vec<String> = args.views.iter().map(|v| format!("view={v}")).collect();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (status, bytes) = rt.block_on(crate::client::request_bytes(
                addr,
                &format!("/v1/training-data?{}", query.join("&")),
                format.content_type(),
                format.content_type(),
                Bytes::from(body),
            ))?;
            if status != 200 {
                anyhow::bail!("{status}: {}", String::from_utf8_lossy(&bytes));
            }
            bytes.to_vec()
        }
    };
    std::fs::write(&args.output, &out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.output.display()))?;
    eprintln!("wrote {} ({} bytes)", args.output.display(), out.len());
    Ok(())
}
