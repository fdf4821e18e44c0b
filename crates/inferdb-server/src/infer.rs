//! `POST /infer`: the tutorial's inference call, end to end. The request
//! names an entity and carries its own fields; the model's feature binding
//! (spec `[[models]]`) reads the entity's online features (and related
//! entities', e.g. the merchant's), joins them with the request's fields
//! into the input vector, the model (or ensemble) runs under the request's
//! deadline through its dynamic batcher, and the inference record goes
//! through the WAL into the built-in `inference_records` stream. With
//! `inference_commit = sync` (the default) the answer waits until the
//! record is durable, so every answered request has a durable record; with
//! `async` it goes out once the record is queued for the log
//! ([`inferdb_engine::InferenceCommit`]). `GET /v1/inferences/{id}` reads a
//! record back.

use crate::api::{ApiError, ApiResult, AppState, json_response};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use inferdb_inference::{DataType, ModelHandle, Tensor};
use inferdb_types::binding::Slot;
use inferdb_types::{Binding, INFERENCE_STREAM, PlainJson, Timestamp, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as JsonValue;
use std::time::{Duration, Instant};

/// Default deadline of a request that gives no `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 100;
/// Longest deadline a request may ask for.
pub const MAX_TIMEOUT_MS: u64 = 60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferBody {
    #[serde(default)]
    entity_id: Option<JsonValue>,
    #[serde(default)]
    features: Option<serde_json::Map<String, JsonValue>>,
    #[serde(default)]
    context: Option<serde_json::Map<String, JsonValue>>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    model: Option<String>,
}

/// Checks a binding against a loaded model: the input it feeds exists and
/// is as wide as the binding's vector; names the input to use.
pub fn check_binding(binding: &Binding, model: &ModelHandle) -> Result<String, String> {
    let cfg = model.config();
    let input = match &binding.input {
        Some(name) => cfg.inputs.iter().find(|t| &t.name == name).ok_or_else(|| {
            format!(
                "model {} has no input {name} (binding's `input`)",
                binding.model
            )
        })?,
        None => match cfg.inputs.as_slice() {
            [only] => only,
            _ => {
                return Err(format!(
                    "model {} has {} inputs; name the one the binding feeds with `input`",
                    binding.model,
                    cfg.inputs.len()
                ));
            }
        },
    };
    if input.data_type != DataType::Fp32 {
        return Err(format!(
            "model {} input {} is {}; a binding feeds FP32",
            binding.model, input.name, input.data_type
        ));
    }
    let dims = input.reshape.as_ref().unwrap_or(&input.dims);
    let width = Tensor::element_count(dims).unwrap_or(0);
    if width != binding.width
        || cfg.max_batch_size == 0 && dims.first() != Some(&1) && dims.len() > 1
    {
        return Err(format!(
            "the binding of model {} builds {} values but input {} takes {:?}",
            binding.model, binding.width, input.name, dims
        ));
    }
    Ok(input.name.clone())
}

fn key_text(v: &JsonValue, what: &str) -> ApiResult<String> {
    match v {
        JsonValue::String(s) if !s.is_empty() => Ok(s.clone()),
        JsonValue::Number(n) if n.is_i64() => Ok(n.to_string()),
        other => Err(ApiError::bad(format!(
            "{what}: {other} is not a non-empty string or integer key"
        ))),
    }
}

fn request_time(ctx: &Option<serde_json::Map<String, JsonValue>>) -> ApiResult<i64> {
    match ctx.as_ref().and_then(|c| c.get("timestamp")) {
        None | Some(JsonValue::Null) => Ok(Timestamp::now().0),
        Some(JsonValue::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ApiError::bad("context.timestamp: not epoch milliseconds")),
        Some(JsonValue::String(s)) => Timestamp::parse(s)
            .map(|t| t.0)
            .map_err(|e| ApiError::bad(format!("context.timestamp: {e}"))),
        Some(other) => Err(ApiError::bad(format!(
            "context.timestamp: {other} is not a timestamp"
        ))),
    }
}

fn new_inference_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let x: u128 = rand::random();
    // UUID version 4, variant 1, as 8-4-4-4-12 lowercase hex digits.
    let x = (x & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut id = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            id.push('-');
        }
        id.push(char::from(HEX[((x >> (124 - 4 * i)) & 0xf) as usize]));
    }
    id
}

/// `POST /infer`.
pub async fn infer(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let start = Instant::now();
    let body = body?;
    let req: InferBody =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("infer request: {e}")))?;
    let entity = match &req.entity_id {
        None | Some(JsonValue::Null) => return Err(ApiError::bad("entity_id: missing")),
        Some(v) => key_text(v, "entity_id")?,
    };
    let Some(features) = req.features.as_ref() else {
        return Err(ApiError::bad("features: missing"));
    };
    let timeout = Duration::from_millis(
        req.timeout_ms
            .unwrap_or(DEFAULT_TIMEOUT_MS)
            .min(MAX_TIMEOUT_MS),
    );
    let deadline = start + timeout;
    let models = s.models.as_ref().ok_or_else(|| {
        ApiError::with_status(
            StatusCode::NOT_FOUND,
            "no model repository is configured (start with --model-repository DIR)",
        )
    })?;
    let catalog = s.engine.catalog();
    let binding = match catalog.binding(req.model.as_deref()) {
        Some(b) => b,
        None => {
            return Err(match &req.model {
                Some(m) if models.is_ready(m, None) => ApiError::bad(format!(
                    "model {m} has no feature binding in the spec; call it with raw tensors at /v2/models/{m}/infer"
                )),
                Some(m) => {
                    ApiError::with_status(StatusCode::NOT_FOUND, format!("unknown model {m}"))
                }
                None => ApiError::bad(
                    "model: none named and the spec marks no binding `default = true`",
                ),
            });
        }
    };
    let model = models.model(&binding.model, None)?;
    let input = check_binding(binding, &model)
        .map_err(|e| ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let ts = request_time(&req.context)?;

    // Online features of every view slot; `picked` remembers which
    // (slot, position in the slot's features) the record names.
    let mut rows: Vec<Vec<Value>> = vec![Vec::new(); binding.slots.len()];
    let mut picked: Vec<(usize, usize)> = Vec::new();
    for (i, key_field) in binding.key_fields() {
        let key = match key_field {
            None => entity.clone(),
            Some(f) => match features.get(f) {
                Some(v) if !v.is_null() => key_text(v, &format!("features.{f}"))?,
                _ => {
                    return Err(ApiError::bad(format!(
                        "features.{f}: missing (a feature key)"
                    )));
                }
            },
        };
        let Slot::View {
            view, features: fs, ..
        } = &binding.slots[i]
        else {
            continue;
        };
        let v = &catalog.views[*view];
        let mut read = s.engine.read_features(&v.name, &[key.as_str()], None)?;
        let values = read.pop().map(|r| r.values).unwrap_or_default();
        picked.extend(
            fs.iter()
                .enumerate()
                .filter(|&(_, &f)| f < v.features.len() && f < values.len())
                .map(|(j, _)| (i, j)),
        );
        rows[i] = values;
    }
    let views: Vec<&[Value]> = rows.iter().map(Vec::as_slice).collect();
    let mut vector = Vec::with_capacity(binding.width);
    binding
        .assemble(&views, features, ts, &mut vector)
        .map_err(ApiError::bad)?;

    let outputs = model
        .infer(
            vec![Tensor {
                name: input,
                datatype: DataType::Fp32,
                shape: vec![1, binding.width as i64],
                data: vector,
            }],
            Some(deadline),
        )
        .await?;
    let pick = |name: Option<&str>| outputs.iter().find(|t| Some(t.name.as_str()) == name);
    let predictions = pick(binding.predictions_output.as_deref())
        .or_else(|| pick(Some("predictions")))
        .or_else(|| outputs.first())
        .ok_or_else(|| {
            ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, "model gave no output")
        })?;
    let confidence =
        match pick(binding.confidence_output.as_deref()).or_else(|| pick(Some("confidence"))) {
            Some(t) => t.data.first().copied(),
            None => predictions.data.iter().copied().reduce(f32::max),
        };
    let latency_ms = start.elapsed().as_secs_f64() * 1e3;
    let inference_id = new_inference_id();
    let version = model.version().to_string();
    // FP32 outputs are written as f32 (the shortest text that reads back
    // as the same f32), not widened to f64 with digits the model never had.
    let preds: &[f32] = &predictions.data;
    let inputs = RecordInputs {
        picked: &picked,
        rows: &rows,
        slots: &binding.slots,
        request: features,
    };
    let record = vec![
        Value::Str(inference_id.as_str().into()),
        Value::Str(entity.as_str().into()),
        Value::Ts(ts),
        Value::Str(model.name().into()),
        Value::Int(model.version()),
        Value::Str(json_text(&inputs)?.into()),
        Value::Str(json_text(preds)?.into()),
        confidence.map_or(Value::Null, |c| Value::Float(f64::from(c))),
        Value::Float(latency_ms),
    ];
    s.engine.record_inference(record).await?;
    Ok(json_response(&InferAnswer {
        result: InferResult {
            predictions: preds,
            confidence,
            model_version: &version,
        },
        inference_id: &inference_id,
        latency_ms,
        timestamp: Timestamp(ts).to_rfc3339(),
        model: model.name(),
        model_version: &version,
    }))
}

/// The answer of `/infer`, serialized straight from borrowed data.
#[derive(Serialize)]
struct InferAnswer<'a> {
    result: InferResult<'a>,
    inference_id: &'a str,
    latency_ms: f64,
    timestamp: String,
    model: &'a str,
    model_version: &'a str,
}

#[derive(Serialize)]
struct InferResult<'a> {
    predictions: &'a [f32],
    confidence: Option<f32>,
    model_version: &'a str,
}

/// The record's `features`: every bound view feature as `"view:feature"`
/// and every request field, one JSON object written without building a map;
/// a request field of the same name as a view feature wins (a view bound in
/// two slots writes its names twice, the later slot last: what a JSON parser
/// keeps).
struct RecordInputs<'a> {
    picked: &'a [(usize, usize)],
    rows: &'a [Vec<Value>],
    slots: &'a [Slot],
    request: &'a serde_json::Map<String, JsonValue>,
}

impl Serialize for RecordInputs<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        // Only a request field with a colon can shadow a view feature.
        let shadowing = self.request.keys().any(|k| k.contains(':'));
        for &(slot, j) in self.picked {
            let Some(Slot::View {
                features, names, ..
            }) = self.slots.get(slot)
            else {
                continue;
            };
            let (Some(&f), Some(name)) = (features.get(j), names.get(j)) else {
                continue;
            };
            let Some(value) = self.rows.get(slot).and_then(|r| r.get(f)) else {
                continue;
            };
            if shadowing && self.request.contains_key(name) {
                continue;
            }
            m.serialize_entry(name.as_str(), &PlainJson(value))?;
        }
        for (k, v) in self.request {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// JSON text of a value (a 500 if it cannot be written, which serde_json
/// does not do for these types).
fn json_text<T: Serialize + ?Sized>(v: &T) -> ApiResult<String> {
    serde_json::to_string(v)
        .map_err(|e| ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `GET /v1/inferences/{id}`: the inference record, from the hot tier or,
/// once it left it, from the history.
pub async fn get_inference(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<JsonValue>> {
    let (engine, opts, key) = (s.engine.clone(), s.sql.clone(), id.clone());
    let found = crate::sql::sql_runtime()?
        .spawn(async move {
            engine
                .find_record_by_id(INFERENCE_STREAM, &key, &opts)
                .await
        })
        .await
        .map_err(|e| inferdb_engine::EngineError::Internal(format!("lookup task: {e}")))??;
    match found {
        Some(mut r) => {
            // Stored as JSON text; answer them as JSON.
            for field in ["features", "predictions"] {
                if let Some(JsonValue::String(t)) = r.get(field)
                    && let Ok(v) = serde_json::from_str::<JsonValue>(t)
                {
                    r[field] = v;
                }
            }
            Ok(Json(r))
        }
        None => Err(ApiError::with_status(
            StatusCode::NOT_FOUND,
            format!("no inference record {id}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inference_ids_are_uuid_v4() {
        let a = new_inference_id();
        let b = new_inference_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        for (i, c) in a.char_indices() {
            if matches!(i, 8 | 13 | 18 | 23) {
                assert_eq!(c, '-', "{a}");
            } else {
                assert!(matches!(c, '0'..='9' | 'a'..='f'), "{a}");
            }
        }
        // 122 random bits: no repeats in a few thousand.
        let ids: std::collections::HashSet<String> =
            (0..5000).map(|_| new_inference_id()).collect();
        assert_eq!(ids.len(), 5000);
    }
}
