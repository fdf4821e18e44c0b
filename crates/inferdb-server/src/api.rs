//! The HTTP API: thin handlers that decode, call one engine method and map
//! the result. [`app`] builds the router, so tests drive it with
//! `tower::ServiceExt::oneshot`, no socket. Errors are JSON
//! `{"error": "…"}` with the status given by the engine error's kind.

use crate::metrics as m;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use inferdb_engine::{BodyFormat, Engine, EngineError};
use inferdb_types::{ErrorKind, PlainJson, Timestamp, Value};
use serde::Deserialize;
use serde_json::{Value as JsonValue, json};
use std::time::Instant;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub engine: Engine,
    /// Largest batch feature read.
    pub max_keys_per_read: usize,
    /// The model repository's models, when one is configured.
    pub models: Option<inferdb_inference::ModelManager>,
    /// Bounds of SQL queries.
    pub sql: inferdb_engine::SqlOptions,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// An error answer with this status.
    pub fn with_status(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError::new(status, message)
    }
    /// A 400 answer.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

/// The one place where error kinds become status codes.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status = status_of(e.kind());
        if status.is_server_error() && e.kind() != ErrorKind::Overloaded {
            tracing::error!(error = %e, "request failed");
        }
        ApiError::new(status, e.to_string())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        let status = r.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is larger than the configured limit (max_body_bytes)".to_string()
        } else {
            r.body_text()
        };
        ApiError::new(status, msg)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Builds the HTTP service over an engine: the [`router`] behind the
/// [`ApiService`] fast path for single feature reads.
pub fn app(state: AppState, max_body_bytes: usize) -> ApiService {
    ApiService {
        router: router(state.clone(), max_body_bytes),
        fast: std::sync::Arc::new(FastPath {
            state,
            max_body_bytes,
            read_ok: std::sync::OnceLock::new(),
            infer_ok: std::sync::OnceLock::new(),
        }),
    }
}

/// Every endpoint as an axum router.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/events/{stream}", post(post_events))
        .route("/v1/streams/{stream}/stats", get(stream_stats))
        .route("/v1/streams/{stream}/dead-letters", get(dead_letters))
        .route(FEATURE_READ_ROUTE, get(get_features))
        .route("/v1/features/{view}", post(post_features))
        .route("/get-online-features", post(feast_online_features))
        .route("/v1/entities/{stream}/{key}/records", get(entity_records))
        .route("/v1/catalog", get(catalog))
        .route("/healthz", get(healthz))
        .route(INFER_ROUTE, post(crate::infer::infer))
        .route("/v1/inferences/{id}", get(crate::infer::get_inference))
        .route("/v1/sql", post(crate::sql::post_sql))
        .route(
            "/v1/training-data",
            post(crate::training::post_training_data),
        )
        .route("/v1/entities/{key}", delete(erase_entity))
        .merge(crate::kserve::routes())
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .layer(middleware::from_fn(track))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// `DELETE /v1/entities/{key}`: the right to be forgotten.
async fn erase_entity(
    State(st): State<AppState>,
    Path(key): Path<String>,
) -> ApiResult<Json<inferdb_engine::Erasure>> {
    let engine = st.engine.clone();
    let r = tokio::task::spawn_blocking(move || engine.erase(&key))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(r))
}

/// HTTP metric handles by (route template, method, status), registered on
/// first use: resolving a labelled metric per request would hash and
/// allocate its labels every time.
type HttpHandles = (metrics::Counter, metrics::Histogram);
type HandleMap = std::collections::HashMap<String, Vec<(axum::http::Method, u16, HttpHandles)>>;
static HTTP_HANDLES: std::sync::OnceLock<parking_lot::RwLock<HandleMap>> =
    std::sync::OnceLock::new();

fn http_handles(route: &str, method: &axum::http::Method, status: u16) -> HttpHandles {
    let map = HTTP_HANDLES.get_or_init(Default::default);
    if let Some(v) = map.read().get(route)
        && let Some((_, _, h)) = v.iter().find(|(m, s, _)| m == method && *s == status)
    {
        return h.clone();
    }
    let h = (
        metrics::counter!(m::HTTP_REQUESTS_TOTAL, "route" => route.to_string(),
            "method" => method.as_str().to_string(), "status" => status.to_string()),
        metrics::histogram!(m::HTTP_REQUEST_SECONDS, "route" => route.to_string(),
            "method" => method.as_str().to_string()),
    );
    map.write()
        .entry(route.to_string())
        .or_default()
        .push((method.clone(), status, h.clone()));
    h
}

async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    record_http(&http_handles(route, &method, resp.status().as_u16()), start);
    resp
}

/// Counts one answer and its latency since `start`.
fn record_http((count, latency): &HttpHandles, start: Instant) {
    latency.record(start.elapsed().as_secs_f64());
    count.increment(1);
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn healthz(State(s): State<AppState>) -> Response {
    if s.engine.is_healthy() {
        (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "WAL write failed; restart required",
        )
        .into_response()
    }
}

async fn prometheus(State(s): State<AppState>) -> Response {
    s.engine.update_gauges();
    match m::handle() {
        Some(h) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
        .into_response(),
    }
}

async fn catalog(State(s): State<AppState>) -> Json<inferdb_types::Spec> {
    Json(s.engine.catalog().spec.clone())
}

fn body_format(headers: &HeaderMap) -> BodyFormat {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/x-ndjson")
        || ct.starts_with("application/jsonl")
        || ct.starts_with("application/ndjson")
    {
        BodyFormat::Ndjson
    } else {
        BodyFormat::Auto
    }
}

async fn post_events(
    State(s): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<inferdb_engine::IngestOutcome>> {
    let body = body?;
    let outcome = s
        .engine
        .ingest(&stream, &body, body_format(&headers))
        .await?;
    Ok(Json(outcome))
}

async fn stream_stats(
    State(s): State<AppState>,
    Path(stream): Path<String>,
) -> ApiResult<Json<JsonValue>> {
    let st = s.engine.stream_stats(&stream)?;
    let entities: serde_json::Map<String, JsonValue> = st
        .entities
        .iter()
        .map(|(v, n)| (v.clone(), json!(n)))
        .collect();
    Ok(Json(json!({
        "stream": st.stream,
        "events_stored": st.events_stored,
        "events_rejected": st.events_rejected,
        "events_late": st.events_late,
        "watermark": st.watermark,
        "watermark_ms": st.watermark_ms,
        "entities": entities,
        "hot_tier_bytes": st.hot_tier_bytes,
    })))
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn dead_letters(
    State(s): State<AppState>,
    Path(stream): Path<String>,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Json<JsonValue>> {
    let d = s.engine.dead_letters(&stream, q.limit.unwrap_or(100))?;
    let items: Vec<JsonValue> = d
        .iter()
        .map(|d| {
            json!({
                "index": d.index, "field": d.field, "reason": d.reason, "raw": d.raw,
                "received_at": Timestamp(d.received_ms).to_rfc3339(),
            })
        })
        .collect();
    Ok(Json(json!({ "stream": stream, "dead_letters": items })))
}

#[derive(Deserialize)]
struct AsOfQuery {
    as_of: Option<String>,
}

fn parse_as_of(s: Option<&str>) -> ApiResult<Option<i64>> {
    s.map(|t| {
        Timestamp::parse(t)
            .map(|t| t.0)
            .map_err(|e| ApiError::bad(format!("as_of: {e}")))
    })
    .transpose()
}

/// One feature row as JSON, serialized straight from the engine's values.
#[derive(serde::Serialize)]
struct FeatureRowJson<'a> {
    key: &'a str,
    found: bool,
    features: FeatureMap<'a>,
    as_of: Option<String>,
}

struct FeatureMap<'a> {
    features: &'a [inferdb_types::Feature],
    values: &'a [Value],
}

impl serde::Serialize for FeatureMap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.values.len()))?;
        for (f, v) in self.features.iter().zip(self.values) {
            m.serialize_entry(&f.name, &PlainJson(v))?;
        }
        m.end()
    }
}

fn feature_row_json<'a>(
    key: &'a str,
    features: &'a [inferdb_types::Feature],
    row: &'a inferdb_engine::FeatureRow,
) -> FeatureRowJson<'a> {
    FeatureRowJson {
        key,
        found: row.found,
        features: FeatureMap {
            features,
            values: &row.values,
        },
        as_of: row.as_of.map(|t| Timestamp(t).to_rfc3339()),
    }
}

fn view_features<'a>(s: &'a AppState, view: &str) -> ApiResult<&'a [inferdb_types::Feature]> {
    let c = s.engine.catalog();
    c.view_index(view)
        .map(|vi| c.views[vi].features.as_slice())
        .ok_or_else(|| EngineError::UnknownView(view.to_string()).into())
}

/// A JSON answer serialized straight from borrowed data.
pub(crate) fn json_response<T: serde::Serialize>(v: &T) -> Response {
    // Room for a feature row at once: the default 128 bytes would grow twice.
    let mut body = Vec::with_capacity(512);
    match serde_json::to_writer(&mut body, v) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn get_features(
    State(s): State<AppState>,
    Path((view, key)): Path<(String, String)>,
    Query(q): Query<AsOfQuery>,
) -> ApiResult<Response> {
    let as_of = parse_as_of(q.as_of.as_deref())?;
    read_one(&s, &view, &key, as_of)
}

/// `GET /v1/features/{view}/{key}` once its parts are decoded: the router's
/// handler and the [`ApiService`] fast path both answer with this.
fn read_one(s: &AppState, view: &str, key: &str, as_of: Option<i64>) -> ApiResult<Response> {
    let rows = s.engine.read_features(view, &[key], as_of)?;
    let features = view_features(s, view)?;
    let row = rows
        .first()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no row"))?;
    Ok(json_response(&feature_row_json(key, features, row)))
}

/// The route template of single feature reads, as the HTTP metrics label it.
const FEATURE_READ_ROUTE: &str = "/v1/features/{view}/{key}";
/// The inference route.
const INFER_ROUTE: &str = "/infer";

/// The HTTP service. The two hottest endpoints are answered here without
/// the router's generic machinery (route matching, parameter maps,
/// extractors, boxed middleware), which costs more CPU than a feature read
/// itself: a plain single feature read (a `GET` of
/// `/v1/features/{view}/{key}` with no query string and no `%` escapes in
/// either segment, so that the router would have decoded the same two
/// strings), and a `POST /infer` whose `Content-Length` is within the body
/// limit (so that the router's limit could not have refused it).
/// Everything else goes to the router. Both paths answer through the same
/// handler functions and count the same HTTP metrics, so the answers are
/// identical (`tests/api.rs` compares feature reads byte for byte; the
/// `/infer` tests run through this service).
#[derive(Clone)]
pub struct ApiService {
    router: Router,
    // hyper clones the service for every request: one reference count.
    fast: std::sync::Arc<FastPath>,
}

struct FastPath {
    state: AppState,
    max_body_bytes: usize,
    // The HTTP metric handles of a successful answer, resolved on the first.
    read_ok: std::sync::OnceLock<HttpHandles>,
    infer_ok: std::sync::OnceLock<HttpHandles>,
}

impl FastPath {
    /// Counts an answer in the HTTP metrics as the router's `track` would.
    fn count(
        &self,
        route: &'static str,
        method: &axum::http::Method,
        ok: &std::sync::OnceLock<HttpHandles>,
        status: StatusCode,
        start: Instant,
    ) {
        match status.as_u16() {
            200 => record_http(ok.get_or_init(|| http_handles(route, method, 200)), start),
            other => record_http(&http_handles(route, method, other), start),
        }
    }
}

impl ApiService {
    /// The (view, key) of a plain single feature read.
    fn plain_feature_read(req: &Request) -> Option<(&str, &str)> {
        if req.method() != axum::http::Method::GET || req.uri().query().is_some() {
            return None;
        }
        let rest = req.uri().path().strip_prefix("/v1/features/")?;
        let (view, key) = rest.split_once('/')?;
        let plain = |s: &str| !s.is_empty() && !s.contains(['/', '%']);
        (plain(view) && plain(key)).then_some((view, key))
    }

    /// Whether this is a `POST /infer` with a body the limit admits.
    fn plain_infer(&self, req: &Request) -> bool {
        req.method() == axum::http::Method::POST
            && req.uri().path() == INFER_ROUTE
            && req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .is_some_and(|n| n <= self.fast.max_body_bytes)
    }
}

type BoxedAnswer = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
>;

impl tower::Service<Request> for ApiService {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Response, std::convert::Infallible>>,
        futures_util::future::Either<
            BoxedAnswer,
            axum::routing::future::RouteFuture<std::convert::Infallible>,
        >,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<Request>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        use futures_util::future::Either;
        let start = Instant::now();
        if let Some((view, key)) = Self::plain_feature_read(&req) {
            let resp =
                read_one(&self.fast.state, view, key, None).unwrap_or_else(|e| e.into_response());
            let f = &self.fast;
            f.count(
                FEATURE_READ_ROUTE,
                &axum::http::Method::GET,
                &f.read_ok,
                resp.status(),
                start,
            );
            return Either::Left(std::future::ready(Ok(resp)));
        }
        if self.plain_infer(&req) {
            let f = self.fast.clone();
            return Either::Right(Either::Left(Box::pin(async move {
                // Within the limit by its Content-Length, which hyper holds
                // the body to: only a broken connection fails here.
                let resp = match axum::body::to_bytes(req.into_body(), f.max_body_bytes).await {
                    Ok(body) => crate::infer::infer(State(f.state.clone()), Ok(body))
                        .await
                        .into_response(),
                    Err(e) => ApiError::bad(format!("Failed to buffer the request body: {e}"))
                        .into_response(),
                };
                f.count(
                    INFER_ROUTE,
                    &axum::http::Method::POST,
                    &f.infer_ok,
                    resp.status(),
                    start,
                );
                Ok(resp)
            })));
        }
        Either::Right(Either::Right(tower::Service::call(&mut self.router, req)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRead {
    keys: Vec<String>,
    #[serde(default)]
    as_of: Option<String>,
}

async fn post_features(
    State(s): State<AppState>,
    Path(view): Path<String>,
    body: Result<Json<BatchRead>, JsonRejection>,
) -> ApiResult<Response> {
    let Json(req) = body?;
    if req.keys.len() > s.max_keys_per_read {
        return Err(ApiError::bad(format!(
            "keys: {} keys requested, at most {} per read (max_keys_per_read)",
            req.keys.len(),
            s.max_keys_per_read
        )));
    }
    let as_of = parse_as_of(req.as_of.as_deref())?;
    let keys: Vec<&str> = req.keys.iter().map(String::as_str).collect();
    let rows = s.engine.read_features(&view, &keys, as_of)?;
    let features = view_features(&s, &view)?;
    #[derive(serde::Serialize)]
    struct Batch<'a> {
        view: &'a str,
        results: Vec<FeatureRowJson<'a>>,
    }
    let results = keys
        .iter()
        .zip(&rows)
        .map(|(k, r)| feature_row_json(k, features, r))
        .collect();
    Ok(json_response(&Batch {
        view: &view,
        results,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeastRequest {
    features: Vec<String>,
    entities: serde_json::Map<String, JsonValue>,
    #[serde(default)]
    full_feature_names: bool,
}

/// Feast's feature-server read: columns of values, one per requested
/// feature, after the entity key column.
async fn feast_online_features(
    State(s): State<AppState>,
    body: Result<Json<FeastRequest>, JsonRejection>,
) -> ApiResult<Json<JsonValue>> {
    let Json(req) = body?;
    if req.entities.len() != 1 {
        return Err(ApiError::bad(
            "entities: give exactly one join key with a list of values",
        ));
    }
    let Some((join_key, values)) = req.entities.iter().next() else {
        return Err(ApiError::bad("entities: empty"));
    };
    let JsonValue::Array(values) = values else {
        return Err(ApiError::bad(format!(
            "entities.{join_key}: expected a list of values"
        )));
    };
    if values.len() > s.max_keys_per_read {
        return Err(ApiError::bad(format!(
            "entities.{join_key}: {} keys requested, at most {} per read",
            values.len(),
            s.max_keys_per_read
        )));
    }
    let keys: Vec<String> = values
        .iter()
        .map(|v| match v {
            JsonValue::String(s) => Ok(s.clone()),
            JsonValue::Number(n) if n.is_i64() => Ok(n.to_string()),
            other => Err(ApiError::bad(format!(
                "entities.{join_key}: {other} is not a string or integer key"
            ))),
        })
        .collect::<ApiResult<_>>()?;
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let catalog = s.engine.catalog();
    // Group the requested features by view, keeping request order for the output.
    let mut cols: Vec<(&str, usize, &str)> = Vec::with_capacity(req.features.len());
    for f in &req.features {
        let Some((view, feature)) = f.split_once(':') else {
            return Err(ApiError::bad(format!(
                "features: {f:?} is not of the form view:feature"
            )));
        };
        let Some(vi) = catalog.view_index(view) else {
            return Err(EngineError::UnknownView(view.to_string()).into());
        };
        let v = &catalog.views[vi];
        let Some(fi) = v.feature_index(feature) else {
            return Err(EngineError::UnknownFeature {
                view: view.into(),
                feature: feature.into(),
            }
            .into());
        };
        let key_field = &catalog.streams[v.stream].fields[v.key].name;
        if key_field != join_key {
            return Err(ApiError::bad(format!(
                "features: view {view} is keyed by {key_field}, but the request's entities give {join_key}"
            )));
        }
        cols.push((view, fi, feature));
    }
    let mut by_view: Vec<(&str, Vec<inferdb_engine::FeatureRow>)> = Vec::new();
    for (view, _, _) in &cols {
        if !by_view.iter().any(|(v, _)| v == view) {
            by_view.push((view, s.engine.read_features(view, &key_refs, None)?));
        }
    }
    let mut names = vec![json!(join_key)];
    let mut results = vec![json!({
        "values": keys,
        "statuses": vec!["PRESENT"; keys.len()],
        "event_timestamps": vec!["1970-01-01T00:00:00Z"; keys.len()],
    })];
    for (view, fi, feature) in &cols {
        let rows = by_view
            .iter()
            .find(|(v, _)| v == view)
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&[]);
        names.push(json!(if req.full_feature_names {
            format!("{view}__{feature}")
        } else {
            feature.to_string()
        }));
        let values: Vec<JsonValue> = rows.iter().map(|r| r.values[*fi].to_json()).collect();
        let statuses: Vec<&str> = rows
            .iter()
            .map(|r| if r.found { "PRESENT" } else { "NOT_FOUND" })
            .collect();
        let ts: Vec<JsonValue> = rows
            .iter()
            .map(|r| {
                json!(
                    r.as_of
                        .map(|t| Timestamp(t).to_rfc3339())
                        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
                )
            })
            .collect();
        results.push(json!({ "values": values, "statuses": statuses, "event_timestamps": ts }));
    }
    Ok(Json(
        json!({ "metadata": { "feature_names": names }, "results": results }),
    ))
}

async fn entity_records(
    State(s): State<AppState>,
    Path((stream, key)): Path<(String, String)>,
    Query(q): Query<LimitQuery>,
) -> ApiResult<Json<JsonValue>> {
    let limit = q.limit.unwrap_or(100).min(100_000);
    let records = s.engine.recent_records(&stream, &key, limit)?;
    Ok(Json(
        json!({ "stream": stream, "key": key, "records": records }),
    ))
}
