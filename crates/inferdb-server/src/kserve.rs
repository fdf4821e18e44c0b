//! The KServe V2 / Open Inference Protocol over HTTP, as Triton serves it,
//! so Triton's clients (`tritonclient.http`, perf_analyzer) work unchanged:
//! health, server and model metadata, `infer` with JSON tensors (flat
//! row-major or nested `data`) and Triton's binary tensor data extension
//! (`Inference-Header-Content-Length`), plus Triton's `config`, `stats` and
//! model-repository (`index`, `load`, `unload`) extensions.
//!
//! Errors are `{"error": "…"}` with Triton's mapping: bad request 400,
//! unknown model 404 (Triton answers 400 for an unknown model on `infer`;
//! inferdb keeps 404 everywhere, as the issue asks of `/infer`), queue full
//! 503 with `Retry-After`, deadline passed 504.
//!
//! Decisions: `BYTES` and `FP16`/`BF16` tensors are refused; integer and
//! boolean tensors travel as f32 inside inferdb and must be exactly
//! representable (|v| ≤ 2^24); the `classification` output parameter and
//! shared-memory parameters are refused by name.

use crate::api::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use inferdb_inference::{DataType, InferenceError, ModelHandle, ModelManager, Tensor};
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The request header giving the JSON part's length when binary tensor
/// data follows it.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Largest integer magnitude f32 holds exactly.
const F32_EXACT: f64 = 16_777_216.0;

/// The V2 routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/config", get(model_config))
        .route("/v2/models/{model}/stats", get(model_stats))
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_v),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(model_config_v),
        )
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(model_stats_v),
        )
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_v))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository_unload),
        )
}

impl From<InferenceError> for ApiError {
    fn from(e: InferenceError) -> ApiError {
        let status = crate::api::status_of(e.kind());
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "inference failed");
        }
        ApiError::with_status(status, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn manager(s: &AppState) -> ApiResult<&ModelManager> {
    s.models.as_ref().ok_or_else(|| {
        ApiError::with_status(
            StatusCode::NOT_FOUND,
            "no model repository is configured (start with --model-repository DIR)",
        )
    })
}

fn parse_version(v: &str) -> ApiResult<i64> {
    v.parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ApiError::bad(format!("version {v:?} is not a positive integer")))
}

fn handle(s: &AppState, model: &str, version: Option<&str>) -> ApiResult<Arc<ModelHandle>> {
    let v = version.map(parse_version).transpose()?;
    Ok(manager(s)?.model(model, v)?)
}

async fn server_metadata() -> Json<JsonValue> {
    Json(json!({
        "name": "inferdb",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_configuration", "model_repository", "statistics"],
    }))
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(s): State<AppState>) -> StatusCode {
    if s.engine.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn metadata(h: &ModelHandle, m: &ModelManager) -> JsonValue {
    let cfg = h.config();
    let batched = cfg.max_batch_size > 0;
    let io = |ts: &[inferdb_inference::config::TensorConfig]| -> Vec<JsonValue> {
        ts.iter()
            .map(|t| {
                let dims = t.reshape.as_ref().unwrap_or(&t.dims);
                let shape: Vec<i64> = if batched {
                    std::iter::once(-1).chain(dims.iter().copied()).collect()
                } else {
                    dims.clone()
                };
                json!({ "name": t.name, "datatype": t.data_type.kserve_name(), "shape": shape })
            })
            .collect()
    };
    let versions: Vec<String> = m
        .versions(h.name())
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    json!({
        "name": h.name(),
        "versions": versions,
        "platform": if h.engine_name() == "ensemble" { "ensemble" } else { "onnxruntime_onnx" },
        "inputs": io(&cfg.inputs),
        "outputs": io(&cfg.outputs),
    })
}

async fn model_metadata(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<JsonValue>> {
    let h = handle(&s, &model, None)?;
    Ok(Json(metadata(&h, manager(&s)?)))
}

async fn model_metadata_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<JsonValue>> {
    let h = handle(&s, &model, Some(&version))?;
    Ok(Json(metadata(&h, manager(&s)?)))
}

fn ready_status(s: &AppState, model: &str, version: Option<&str>) -> Response {
    match handle(s, model, version) {
        Ok(_) => StatusCode::OK.into_response(),
        // Triton answers 400 for a model that is not ready.
        Err(_) => ApiError::bad(format!("model {model} is not ready")).into_response(),
    }
}

async fn model_ready(State(s): State<AppState>, Path(model): Path<String>) -> Response {
    ready_status(&s, &model, None)
}

async fn model_ready_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    ready_status(&s, &model, Some(&version))
}

async fn model_config(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<JsonValue>> {
    Ok(Json(handle(&s, &model, None)?.config_json().clone()))
}

async fn model_config_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<JsonValue>> {
    Ok(Json(
        handle(&s, &model, Some(&version))?.config_json().clone(),
    ))
}

fn duration_json(count: u64, ns: u64) -> JsonValue {
    json!({ "count": count, "ns": ns })
}

fn stats_json(h: &ModelHandle) -> JsonValue {
    let st = h.stats();
    let mut batch_stats = Vec::new();
    if let Some(b) = &st.batcher {
        for (i, n) in b.batch_size_histogram.iter().enumerate() {
            if *n > 0 {
                batch_stats.push(json!({
                    "batch_size_bucket_log2": i,
                    "compute_infer": { "count": n },
                }));
            }
        }
    }
    json!({
        "name": h.name(),
        "version": h.version().to_string(),
        "last_inference": st.last_inference_ms,
        "inference_count": st.inference_count,
        "execution_count": st.execution_count,
        "inference_stats": {
            "success": duration_json(st.success_count, st.success_ns),
            "fail": duration_json(st.fail_count, st.fail_ns),
        },
        "batch_stats": batch_stats,
        "queue_size": st.batcher.as_ref().map(|b| b.queued).unwrap_or(0),
        "timeouts": st.batcher.as_ref().map(|b| b.timeouts).unwrap_or(0),
        "rejected_overload": st.batcher.as_ref().map(|b| b.overloads).unwrap_or(0),
    })
}

async fn all_stats(State(s): State<AppState>) -> ApiResult<Json<JsonValue>> {
    let m = manager(&s)?;
    let mut stats = Vec::new();
    for name in m.loaded_names() {
        for v in m.versions(&name) {
            if let Ok(h) = m.model(&name, Some(v)) {
                stats.push(stats_json(&h));
            }
        }
    }
    Ok(Json(json!({ "model_stats": stats })))
}

async fn model_stats(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<JsonValue>> {
    let m = manager(&s)?;
    let versions = m.versions(&model);
    if versions.is_empty() {
        return Err(InferenceError::UnknownModel {
            name: model,
            version: None,
        }
        .into());
    }
    let stats: Vec<JsonValue> = versions
        .into_iter()
        .filter_map(|v| m.model(&model, Some(v)).ok())
        .map(|h| stats_json(&h))
        .collect();
    Ok(Json(json!({ "model_stats": stats })))
}

async fn model_stats_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Json<JsonValue>> {
    let h = handle(&s, &model, Some(&version))?;
    Ok(Json(json!({ "model_stats": [stats_json(&h)] })))
}

#[derive(Deserialize, Default)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

async fn repository_index(State(s): State<AppState>, body: Bytes) -> ApiResult<Json<JsonValue>> {
    let req: IndexRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IndexRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("index request: {e}")))?
    };
    let m = manager(&s)?.clone();
    let index = tokio::task::spawn_blocking(move || m.index())
        .await
        .map_err(|e| ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    let rows: Vec<_> = index
        .into_iter()
        .filter(|e| !req.ready || e.state == "READY")
        .collect();
    Ok(Json(json!(rows)))
}

async fn repository_load(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<JsonValue>> {
    let m = manager(&s)?.clone();
    tokio::task::spawn_blocking(move || m.load(&model))
        .await
        .map_err(|e| ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(json!({})))
}

async fn repository_unload(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> ApiResult<Json<JsonValue>> {
    manager(&s)?.unload(&model)?;
    Ok(Json(json!({})))
}

// ---------------------------------------------------------------- infer

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, JsonValue>>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, JsonValue>>,
    #[serde(default)]
    data: Option<JsonValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, JsonValue>>,
}

fn json_len_header(headers: &HeaderMap) -> ApiResult<Option<usize>> {
    headers
        .get(HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| ApiError::bad(format!("{HEADER_LENGTH}: not a byte count")))
        })
        .transpose()
}

/// Reads the values of one JSON `data` array (flat or nested) into f32,
/// checking each against the datatype.
fn json_values(name: &str, dt: DataType, data: &JsonValue, out: &mut Vec<f32>) -> ApiResult<()> {
    match data {
        JsonValue::Array(items) => {
            for it in items {
                json_values(name, dt, it, out)?;
            }
            Ok(())
        }
        JsonValue::Bool(b) if dt == DataType::Bool => {
            out.push(f32::from(u8::from(*b)));
            Ok(())
        }
        JsonValue::Number(n) if dt != DataType::Bool => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let is_int = !matches!(dt, DataType::Fp32 | DataType::Fp64);
            if is_int && (x.fract() != 0.0 || x.abs() > F32_EXACT) {
                return Err(ApiError::bad(format!(
                    "input {name}: {n} is not an integer that inferdb carries exactly (|v| ≤ 2^24)"
                )));
            }
            if !is_int && (dt == DataType::Fp32) && x.is_finite() && x.abs() > f64::from(f32::MAX) {
                return Err(ApiError::bad(format!("input {name}: {n} overflows FP32")));
            }
            out.push(x as f32);
            Ok(())
        }
        other => Err(ApiError::bad(format!(
            "input {name}: {other} is not a {dt} value"
        ))),
    }
}

fn binary_values(name: &str, dt: DataType, bytes: &[u8], out: &mut Vec<f32>) -> ApiResult<()> {
    let size = dt.byte_size().unwrap_or(1);
    if !bytes.len().is_multiple_of(size) {
        return Err(ApiError::bad(format!(
            "input {name}: {} bytes is not a whole number of {dt} values",
            bytes.len()
        )));
    }
    out.reserve(bytes.len() / size);
    let exact = |name: &str, x: f64| -> ApiResult<f32> {
        if x.abs() > F32_EXACT {
            Err(ApiError::bad(format!(
                "input {name}: {x} is beyond the integers inferdb carries exactly (|v| ≤ 2^24)"
            )))
        } else {
            Ok(x as f32)
        }
    };
    for c in bytes.chunks_exact(size) {
        let v = match dt {
            DataType::Fp32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            DataType::Fp64 => {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }
            DataType::Bool | DataType::Uint8 => f32::from(c[0]),
            DataType::Int8 => f32::from(c[0] as i8),
            DataType::Int16 => f32::from(i16::from_le_bytes([c[0], c[1]])),
            DataType::Uint16 => f32::from(u16::from_le_bytes([c[0], c[1]])),
            DataType::Int32 => exact(
                name,
                f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            )?,
            DataType::Uint32 => exact(
                name,
                f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            )?,
            DataType::Int64 => exact(
                name,
                i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64,
            )?,
            DataType::Uint64 => exact(
                name,
                u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64,
            )?,
            DataType::Fp16 | DataType::Bytes => {
                return Err(ApiError::bad(format!(
                    "input {name}: datatype {dt} is not supported"
                )));
            }
        };
        out.push(v);
    }
    Ok(())
}

fn param_u64(p: &Option<serde_json::Map<String, JsonValue>>, key: &str) -> Option<u64> {
    p.as_ref()
        .and_then(|m| m.get(key))
        .and_then(JsonValue::as_u64)
}

fn param_bool(p: &Option<serde_json::Map<String, JsonValue>>, key: &str) -> Option<bool> {
    p.as_ref()
        .and_then(|m| m.get(key))
        .and_then(JsonValue::as_bool)
}

/// Parameters inferdb refuses rather than ignores.
fn refuse_params(what: &str, p: &Option<serde_json::Map<String, JsonValue>>) -> ApiResult<()> {
    if let Some(m) = p {
        for k in m.keys() {
            if k.starts_with("shared_memory") || k == "classification" {
                return Err(ApiError::bad(format!(
                    "{what}: parameter {k} is not supported by inferdb"
                )));
            }
        }
    }
    Ok(())
}

/// Decodes a V2 infer request (JSON, or JSON header + binary tensors).
fn decode_request(headers: &HeaderMap, body: &[u8]) -> ApiResult<(InferRequest, Vec<Tensor>)> {
    let json_len = json_len_header(headers)?;
    let (head, mut rest) = match json_len {
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(ApiError::bad(format!(
                "{HEADER_LENGTH} {n} exceeds the body's {} bytes",
                body.len()
            )));
        }
        None => (body, &[][..]),
    };
    let req: InferRequest =
        serde_json::from_slice(head).map_err(|e| ApiError::bad(format!("infer request: {e}")))?;
    refuse_params("request", &req.parameters)?;
    let mut tensors = Vec::with_capacity(req.inputs.len());
    for t in &req.inputs {
        refuse_params(&format!("input {}", t.name), &t.parameters)?;
        let dt = DataType::from_kserve(&t.datatype).ok_or_else(|| {
            ApiError::bad(format!(
                "input {}: unknown datatype {:?}",
                t.name, t.datatype
            ))
        })?;
        if !dt.is_supported() {
            return Err(ApiError::bad(format!(
                "input {}: datatype {dt} is not supported by inferdb",
                t.name
            )));
        }
        let count = Tensor::element_count(&t.shape).ok_or_else(|| {
            ApiError::bad(format!("input {}: invalid shape {:?}", t.name, t.shape))
        })?;
        let mut data = Vec::with_capacity(count);
        match (param_u64(&t.parameters, "binary_data_size"), &t.data) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad(format!(
                    "input {}: both binary_data_size and data given",
                    t.name
                )));
            }
            (Some(n), None) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > rest.len() {
                    return Err(ApiError::bad(format!(
                        "input {}: binary_data_size {n} exceeds the {} binary bytes left",
                        t.name,
                        rest.len()
                    )));
                }
                let (mine, tail) = rest.split_at(n);
                rest = tail;
                binary_values(&t.name, dt, mine, &mut data)?;
            }
            (None, Some(d)) => json_values(&t.name, dt, d, &mut data)?,
            (None, None) => {
                return Err(ApiError::bad(format!("input {}: no data", t.name)));
            }
        }
        if data.len() != count {
            return Err(ApiError::bad(format!(
                "input {}: {} values for shape {:?} ({count} expected)",
                t.name,
                data.len(),
                t.shape
            )));
        }
        tensors.push(Tensor {
            name: t.name.clone(),
            datatype: dt,
            shape: t.shape.clone(),
            data,
        });
    }
    if !rest.is_empty() {
        return Err(ApiError::bad(format!(
            "{} bytes of binary data are not claimed by any input",
            rest.len()
        )));
    }
    Ok((req, tensors))
}

fn push_binary(dt: DataType, data: &[f32], out: &mut Vec<u8>) {
    for &x in data {
        match dt {
            DataType::Fp32 => out.extend_from_slice(&x.to_le_bytes()),
            DataType::Fp64 => out.extend_from_slice(&f64::from(x).to_le_bytes()),
            DataType::Bool | DataType::Uint8 => out.push(x as u8),
            DataType::Int8 => out.push((x as i8) as u8),
            DataType::Int16 => out.extend_from_slice(&(x as i16).to_le_bytes()),
            DataType::Uint16 => out.extend_from_slice(&(x as u16).to_le_bytes()),
            DataType::Int32 => out.extend_from_slice(&(x as i32).to_le_bytes()),
            DataType::Uint32 => out.extend_from_slice(&(x as u32).to_le_bytes()),
            DataType::Int64 => out.extend_from_slice(&(x as i64).to_le_bytes()),
            DataType::Uint64 => out.extend_from_slice(&(x as u64).to_le_bytes()),
            DataType::Fp16 | DataType::Bytes => {}
        }
    }
}

fn json_data(dt: DataType, data: &[f32]) -> JsonValue {
    match dt {
        DataType::Fp32 | DataType::Fp64 => json!(data),
        DataType::Bool => JsonValue::Array(data.iter().map(|&x| json!(x != 0.0)).collect()),
        _ => JsonValue::Array(data.iter().map(|&x| json!(x as i64)).collect()),
    }
}

/// Encodes the answer: outputs asked for (all when none are named), each as
/// JSON `data` or, when asked, as binary data after the JSON.
fn encode_response(
    h: &ModelHandle,
    req: &InferRequest,
    outputs: Vec<Tensor>,
) -> ApiResult<Response> {
    let binary_default = param_bool(&req.parameters, "binary_data_output").unwrap_or(false);
    let wanted: Vec<(Tensor, bool)> = match &req.outputs {
        None => outputs.into_iter().map(|t| (t, binary_default)).collect(),
        Some(list) => {
            let mut outputs = outputs;
            let mut v = Vec::with_capacity(list.len());
            for o in list {
                refuse_params(&format!("output {}", o.name), &o.parameters)?;
                let i = outputs
                    .iter()
                    .position(|t| t.name == o.name)
                    .ok_or_else(|| {
                        ApiError::bad(format!("model {} has no output {}", h.name(), o.name))
                    })?;
                let t = outputs.swap_remove(i);
                v.push((
                    t,
                    param_bool(&o.parameters, "binary_data").unwrap_or(binary_default),
                ));
            }
            v
        }
    };
    let mut binary = Vec::new();
    let outs: Vec<JsonValue> = wanted
        .iter()
        .map(|(t, bin)| {
            if *bin {
                let start = binary.len();
                push_binary(t.datatype, &t.data, &mut binary);
                json!({
                    "name": t.name, "datatype": t.datatype.kserve_name(), "shape": t.shape,
                    "parameters": { "binary_data_size": binary.len() - start },
                })
            } else {
                json!({
                    "name": t.name, "datatype": t.datatype.kserve_name(), "shape": t.shape,
                    "data": json_data(t.datatype, &t.data),
                })
            }
        })
        .collect();
    let mut head = json!({
        "model_name": h.name(),
        "model_version": h.version().to_string(),
        "outputs": outs,
    });
    if let Some(id) = &req.id {
        head["id"] = json!(id);
    }
    let head = serde_json::to_vec(&head)
        .map_err(|e| ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if binary.is_empty() {
        return Ok(([(header::CONTENT_TYPE, "application/json")], head).into_response());
    }
    let json_len = head.len();
    let mut body = head;
    body.extend_from_slice(&binary);
    let mut resp = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    resp.headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(json_len));
    Ok(resp)
}

async fn run_infer(
    s: AppState,
    model: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    let h = handle(&s, &model, version.as_deref())?;
    let (req, tensors) = decode_request(&headers, &body)?;
    let deadline =
        param_u64(&req.parameters, "timeout").map(|us| Instant::now() + Duration::from_micros(us));
    let outputs = h.infer(tensors, deadline).await?;
    encode_response(&h, &req, outputs)
}

async fn infer(
    State(s): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    run_infer(s, model, None, headers, body).await
}

async fn infer_v(
    State(s): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    run_infer(s, model, Some(version), headers, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_json_data_read_the_same() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        json_values("x", DataType::Fp32, &json!([[1, 2.5], [3, 4]]), &mut a).unwrap();
        json_values("x", DataType::Fp32, &json!([1, 2.5, 3, 4]), &mut b).unwrap();
        assert_eq!(a, vec![1.0, 2.5, 3.0, 4.0]);
        assert_eq!(a, b);
    }

    #[test]
    fn wrong_json_values_name_the_input() {
        let mut v = Vec::new();
        let e = json_values("x", DataType::Fp32, &json!(["a"]), &mut v).unwrap_err();
        assert!(format!("{e:?}").contains("input x"));
        let e = json_values("n", DataType::Int64, &json!([1.5]), &mut v).unwrap_err();
        assert!(format!("{e:?}").contains("input n"));
        let e = json_values("n", DataType::Int64, &json!([20_000_000]), &mut v).unwrap_err();
        assert!(format!("{e:?}").contains("2^24"));
        let e = json_values("b", DataType::Bool, &json!([1]), &mut v).unwrap_err();
        assert!(format!("{e:?}").contains("BOOL"));
    }

    #[test]
    fn binary_round_trips_per_datatype() {
        for dt in [
            DataType::Fp32,
            DataType::Fp64,
            DataType::Int64,
            DataType::Int32,
            DataType::Uint8,
            DataType::Bool,
            DataType::Int16,
        ] {
            let data = [0.0f32, 1.0, 7.0, 1.0];
            let mut bytes = Vec::new();
            push_binary(dt, &data, &mut bytes);
            assert_eq!(bytes.len(), 4 * dt.byte_size().unwrap());
            let mut back = Vec::new();
            binary_values("x", dt, &bytes, &mut back).unwrap();
            assert_eq!(back, data, "{dt}");
        }
        let mut back = Vec::new();
        assert!(binary_values("x", DataType::Fp32, &[0, 0, 0], &mut back).is_err());
    }

    #[test]
    fn binary_requests_split_by_the_header_length() {
        let head = br#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"b","shape":[2],"datatype":"INT64","data":[5,6]}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&1.5f32.to_le_bytes());
        body.extend_from_slice(&(-2.0f32).to_le_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_LENGTH, HeaderValue::from(head.len()));
        let (_, t) = decode_request(&headers, &body).unwrap();
        assert_eq!(t[0].data, vec![1.5, -2.0]);
        assert_eq!(t[1].data, vec![5.0, 6.0]);
        assert_eq!(t[1].datatype, DataType::Int64);
        // Too few bytes, extra bytes, a bad header: all 400s naming the problem.
        let e = decode_request(&headers, &body[..body.len() - 1]).unwrap_err();
        assert!(format!("{e:?}").contains("binary_data_size"));
        let mut extra = body.clone();
        extra.push(0);
        let e = decode_request(&headers, &extra).unwrap_err();
        assert!(format!("{e:?}").contains("not claimed"));
        headers.insert(HEADER_LENGTH, HeaderValue::from_static("x"));
        assert!(decode_request(&headers, &body).is_err());
    }

    #[test]
    fn shape_and_count_must_agree() {
        let body = br#"{"inputs":[{"name":"a","shape":[2,2],"datatype":"FP32","data":[1,2,3]}]}"#;
        let e = decode_request(&HeaderMap::new(), body).unwrap_err();
        assert!(
            format!("{e:?}").contains("3 values for shape [2, 2]"),
            "{e:?}"
        );
        let body = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"BYTES","data":["x"]}]}"#;
        let e = decode_request(&HeaderMap::new(), body).unwrap_err();
        assert!(format!("{e:?}").contains("BYTES"), "{e:?}");
        let body = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"y","parameters":{"classification":2}}]}"#;
        assert!(decode_request(&HeaderMap::new(), body).is_ok());
    }
}
