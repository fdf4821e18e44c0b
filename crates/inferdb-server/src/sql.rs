//! `POST /v1/sql`: SQL over the history (every stream, `inference_records`,
//! `dead_letters`), and what `inferdb sql` prints.
//!
//! The body is the query as text (`text/plain`, or any non-JSON type) or
//! `{"query": "…"}` (`application/json`). The answer's format follows
//! `Accept`: JSON rows (`application/json`, the default: an array of
//! objects, nulls explicit, timestamps RFC 3339), CSV with a header
//! (`text/csv`) or an Arrow IPC stream
//! (`application/vnd.apache.arrow.stream`). Rows past the configured
//! maximum are cut off and the answer carries `x-inferdb-truncated: true`.
//! A query that DataFusion refuses or that runs out of its memory is a 400
//! with DataFusion's message; one that runs out of time is a 504.
//!
//! Queries run on their own small runtime (`inferdb-sql` threads), so a
//! heavy query does not stall the HTTP workers, and only after the history
//! holds every batch acknowledged before the query arrived. The exception
//! is an entity's latest rows in a shape planned before, answered from the
//! hot tier in the handler itself (`Engine::query_from_memory`).

use crate::api::{ApiError, ApiResult, AppState};
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use inferdb_engine::arrow::record_batch::RecordBatch;
use inferdb_engine::{Engine, EngineError, QueryResult, SqlOptions};
use serde::Deserialize;
use std::sync::OnceLock;

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// How a result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An array of row objects.
    Json,
    /// CSV with a header row.
    Csv,
    /// Arrow IPC stream.
    Arrow,
}

impl Format {
    /// The format an `Accept` header asks for (JSON when it names none).
    pub fn from_accept(accept: Option<&str>) -> Format {
        let a = accept.unwrap_or("").to_ascii_lowercase();
        if a.contains(ARROW_STREAM) {
            Format::Arrow
        } else if a.contains("text/csv") {
            Format::Csv
        } else {
            Format::Json
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => ARROW_STREAM,
        }
    }
}

/// Writes batches in a format.
pub fn encode(
    batches: &[RecordBatch],
    schema: &inferdb_engine::arrow::datatypes::Schema,
    f: Format,
) -> Result<Vec<u8>, String> {
    use inferdb_engine::arrow::{csv, ipc, json};
    let mut out = Vec::new();
    match f {
        Format::Json if crate::json_rows::write(batches, &mut out) => {}
        Format::Json => {
            let mut w = json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, json::writer::JsonArray>(&mut out);
            for b in batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())?;
            drop(w);
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
        }
        Format::Csv => {
            let mut w = csv::WriterBuilder::new().with_header(true).build(&mut out);
            for b in batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
            drop(w);
            if batches.is_empty() {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                out.extend_from_slice(names.join(",").as_bytes());
                out.push(b'\n');
            }
        }
        Format::Arrow => {
            let mut w =
                ipc::writer::StreamWriter::try_new(&mut out, schema).map_err(|e| e.to_string())?;
            for b in batches {
                w.write(b).map_err(|e| e.to_string())?;
            }
            w.finish().map_err(|e| e.to_string())?;
        }
    }
    Ok(out)
}

pub(crate) fn sql_runtime() -> Result<&'static tokio::runtime::Runtime, EngineError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("inferdb-sql")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| EngineError::Internal(format!("cannot start the SQL runtime: {e}")))
}

/// Runs a query once the history holds every acknowledged batch.
pub async fn run_query(
    engine: Engine,
    sql: String,
    opts: SqlOptions,
) -> Result<QueryResult, EngineError> {
    if engine.history().head_seq() < engine.applied_seq() {
        let e = engine.clone();
        let caught = tokio::task::spawn_blocking(move || e.history_caught_up())
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        if !caught {
            return Err(EngineError::Unavailable(
                "the history is more than 10 s behind the log; retry".into(),
            ));
        }
    }
    sql_runtime()?
        .spawn(async move { engine.query(&sql, &opts).await })
        .await
        .map_err(|e| EngineError::Internal(format!("query task: {e}")))?
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    query: String,
}

/// `POST /v1/sql`.
pub async fn post_sql(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let query = if is_json {
        serde_json::from_slice::<SqlBody>(&body)
            .map_err(|e| ApiError::bad(format!("body: expected {{\"query\": \"…\"}}: {e}")))?
            .query
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad("body: the query is not valid UTF-8"))?
    };
    if query.trim().is_empty() {
        return Err(ApiError::bad("body: the query is empty"));
    }
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let engine = &st.engine;
    // An entity's latest rows, in a shape planned before, are answered
    // here from the hot tier (no planning, no hop to the SQL runtime).
    let prepared = match engine.history().head_seq() >= engine.applied_seq() {
        true => engine.query_from_memory(&query, &st.sql),
        false => None,
    };
    let r = match prepared {
        Some(r) => r?,
        None => run_query(engine.clone(), query, st.sql.clone()).await?,
    };
    let bytes = encode(&r.batches, &r.schema, format)
        .map_err(|e| ApiError::with_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let mut resp = ([(header::CONTENT_TYPE, format.content_type())], bytes).into_response();
    if r.truncated {
        resp.headers_mut()
            .insert("x-inferdb-truncated", HeaderValue::from_static("true"));
    }
    if r.from_memory {
        resp.headers_mut()
            .insert("x-inferdb-from-memory", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// How `inferdb sql` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    /// An aligned table.
    Table,
    /// JSON rows.
    Json,
    /// CSV with a header.
    Csv,
}

/// `inferdb sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT count(*) FROM transactions".
    pub query: String,
    /// A running server, host:port (default 127.0.0.1:8080).
    #[arg(long, conflicts_with = "data_dir")]
    pub server: Option<String>,
    /// Query a data directory directly instead (no server may hold it).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// table, json or csv.
    #[arg(long, default_value = "table")]
    pub format: OutFormat,
}

/// Prints a result in a format.
pub fn render(r: &QueryResult, f: OutFormat) -> anyhow::Result<String> {
    let text = match f {
        OutFormat::Table => {
            inferdb_engine::arrow::util::pretty::pretty_format_batches(&r.batches)?.to_string()
        }
        OutFormat::Json => String::from_utf8(
            encode(&r.batches, &r.schema, Format::Json).map_err(anyhow::Error::msg)?,
        )?,
        OutFormat::Csv => String::from_utf8(
            encode(&r.batches, &r.schema, Format::Csv).map_err(anyhow::Error::msg)?,
        )?,
    };
    Ok(text)
}

/// Decodes an Arrow IPC stream.
pub fn decode_arrow(bytes: &[u8]) -> anyhow::Result<QueryResult> {
    let reader = inferdb_engine::arrow::ipc::reader::StreamReader::try_new(
        std::io::Cursor::new(bytes),
        None,
    )?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(QueryResult {
        schema,
        batches,
        truncated: false,
        from_memory: false,
    })
}

/// Runs `inferdb sql`.
pub fn run_cli(args: &SqlArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = match &args.data_dir {
        Some(dir) => {
            let engine = Engine::open(inferdb_engine::EngineConfig::new(dir))?;
            let r = rt.block_on(engine.query(&args.query, &SqlOptions::default()));
            engine.shutdown();
            r?
        }
        None => {
            let addr = crate::client::server_addr(args.server.as_deref())?;
            let (status, body) = rt.block_on(crate::client::request_bytes(
                addr,
                "/v1/sql",
                "text/plain",
                ARROW_STREAM,
                Bytes::from(args.query.clone()),
            ))?;
            if status != 200 {
                let msg = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                anyhow::bail!("{status}: {msg}");
            }
            decode_arrow(&body)?
        }
    };
    println!("{}", render(&result, args.format)?);
    Ok(())
}
