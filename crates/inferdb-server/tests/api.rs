#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The HTTP API driven through `app()` with `tower::ServiceExt::oneshot`:
//! no socket, a real engine in a temporary directory.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use inferdb_engine::{Engine, EngineConfig};
use inferdb_server::api::{AppState, app};
use serde_json::{Value, json};
use tower::ServiceExt;

const SPEC: &str = include_str!("../../../examples/payments/spec.toml");

struct Fixture {
    _dir: tempfile::TempDir,
    engine: Engine,
    /// Answers that carried `x-inferdb-from-memory`.
    from_memory: std::sync::atomic::AtomicUsize,
}

fn fixture() -> Fixture {
    // The recorder must exist before the engine registers its metrics.
    inferdb_server::metrics::handle();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EngineConfig::new(dir.path());
    cfg.spec = Some(inferdb_types::Catalog::from_toml(SPEC).unwrap().spec);
    cfg.shards = 4;
    Fixture {
        engine: Engine::open(cfg).unwrap(),
        _dir: dir,
        from_memory: Default::default(),
    }
}

impl Fixture {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        ct: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        inferdb_server::metrics::handle();
        let router = app(
            AppState {
                engine: self.engine.clone(),
                max_keys_per_read: 100,
                models: None,
                sql: Default::default(),
            },
            64 * 1024,
        );
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ct)
            .body(body.into())
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }
    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call("GET", uri, "application/json", Body::empty())
            .await
    }
    async fn post(&self, uri: &str, body: &str) -> (StatusCode, Value) {
        self.call("POST", uri, "application/json", body.to_string())
            .await
    }
}

fn ev(user: &str, ts: &str, amount: f64, merchant: &str) -> String {
    format!(
        r#"{{"entity_id":"{user}","ts":"{ts}","amount":{amount},"merchant_id":"{merchant}","category":"grocery","country":"DE","channel":"pos","card_present":true}}"#
    )
}

#[tokio::test]
async fn ingest_reports_each_bad_record_and_keeps_the_good_ones() {
    let f = fixture();
    let body = format!(
        "[{}, {}, {{\"entity_id\":\"user_1\",\"ts\":\"2026-01-01T00:00:03Z\"}}, {}]",
        ev("user_1", "2026-01-01T00:00:01Z", 10.0, "m_1"),
        ev("user_1", "2026-01-01T00:00:02Z", -5.0, "m_1"),
        ev("user_2", "2026-01-01T00:00:04Z", 7.25, "m_2"),
    );
    let (s, v) = f.post("/v1/events/transactions", &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 2);
    let rej = v["rejected"].as_array().unwrap();
    assert_eq!(rej.len(), 2);
    assert_eq!(rej[0]["index"], 1);
    assert_eq!(rej[0]["field"], "amount");
    assert!(rej[0]["reason"].as_str().unwrap().contains("out of range"));
    assert_eq!(rej[1]["index"], 2);
    assert_eq!(rej[1]["reason"], "missing required field");

    let (s, v) = f.get("/v1/streams/transactions/stats").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["events_stored"], 2);
    assert_eq!(v["events_rejected"], 2);
    assert_eq!(v["watermark"], "2026-01-01T00:00:04.000Z");
    assert_eq!(v["entities"]["user_txn"], 2);

    let (_, v) = f
        .get("/v1/streams/transactions/dead-letters?limit=10")
        .await;
    assert_eq!(v["dead_letters"].as_array().unwrap().len(), 2);
    assert!(v["dead_letters"][1]["raw"].as_str().unwrap().contains("-5"));
}

#[tokio::test]
async fn whole_body_errors_are_clear_4xx_and_the_server_stays_up() {
    let f = fixture();
    let (s, v) = f.post("/v1/events/transactions", "this is not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("not JSON"), "{v}");
    let (s, v) = f.post("/v1/events/transactions", "[{\"entity_id\": ").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = f.post("/v1/events/transactions", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = f
        .post(
            "/v1/events/nope",
            &format!("[{}]", ev("u", "2026-01-01T00:00:00Z", 1.0, "m")),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(v["error"].as_str().unwrap().contains("nope"));
    let big = format!(
        "[{}]",
        vec![ev("u", "2026-01-01T00:00:00Z", 1.0, "m"); 1000].join(",")
    );
    let (s, v) = f.post("/v1/events/transactions", &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max_body_bytes"));
    let (s, _) = f.get("/v1/nothing/here").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Still up, nothing stored from the refused bodies.
    let (s, v) = f.get("/v1/streams/transactions/stats").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["events_stored"], 0);
    let (s, _) = f.get("/healthz").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn ndjson_with_an_unparseable_line() {
    let f = fixture();
    let body = format!(
        "{}\n{{oops\n{}\n",
        ev("user_1", "2026-01-01T00:00:01Z", 1.0, "m_1"),
        ev("user_1", "2026-01-01T00:00:02Z", 2.0, "m_2")
    );
    let (s, v) = f
        .call(
            "POST",
            "/v1/events/transactions",
            "application/x-ndjson",
            body,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["rejected"][0]["index"], 1);
    assert!(
        v["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON")
    );
}

#[tokio::test]
async fn feature_reads_single_batch_and_feast_shaped() {
    let f = fixture();
    let body = format!(
        "[{},{},{},{}]",
        ev("user_1", "2026-01-01T00:00:00Z", 10.0, "m_1"),
        ev("user_1", "2026-01-01T00:10:00Z", 20.0, "m_2"),
        ev("user_1", "2026-01-01T00:12:00Z", 30.0, "m_2"),
        ev("user_2", "2026-01-01T00:12:30Z", 5.0, "m_1"),
    );
    let (s, _) = f.post("/v1/events/transactions", &body).await;
    assert_eq!(s, StatusCode::OK);

    let (s, v) = f.get("/v1/features/user_txn/user_1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["key"], "user_1");
    assert_eq!(v["found"], true);
    assert_eq!(v["as_of"], "2026-01-01T00:12:30.000Z");
    let ft = &v["features"];
    assert_eq!(ft["txn_count_5m"], 2);
    assert_eq!(ft["txn_count_1h"], 3);
    assert_eq!(ft["amount_sum_1h"], 60.0);
    assert_eq!(ft["amount_avg_24h"], 20.0);
    assert_eq!(ft["amount_max_24h"], 30.0);
    assert_eq!(ft["amount_min_24h"], 10.0);
    let std = ft["amount_std_24h"].as_f64().unwrap();
    assert!((std - (200.0f64 / 3.0).sqrt()).abs() < 1e-9);
    assert_eq!(ft["distinct_merchants_24h"], 2);
    assert_eq!(ft["last_amount"], 30.0);
    assert_eq!(ft["seconds_since_last_txn"], 30.0);

    // as_of slides the windows forward.
    let (s, v) = f
        .get("/v1/features/user_txn/user_1?as_of=2026-01-01T01:05:00Z")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["features"]["txn_count_1h"], 2);
    let (s, v) = f
        .get("/v1/features/user_txn/user_1?as_of=2025-01-01T00:00:00Z")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = f.get("/v1/features/user_txn/user_1?as_of=yesterday").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("as_of"));

    // Unknown key: empty-window values.
    let (_, v) = f.get("/v1/features/user_txn/ghost").await;
    assert_eq!(v["found"], false);
    assert_eq!(v["features"]["txn_count_1h"], 0);
    assert_eq!(v["features"]["amount_avg_24h"], Value::Null);
    let (s, _) = f.get("/v1/features/nope/user_1").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, v) = f
        .post(
            "/v1/features/user_txn",
            r#"{"keys": ["user_1", "user_2", "ghost"]}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(r[1]["features"]["txn_count_5m"], 1);
    assert_eq!(r[2]["found"], false);
    let (s, _) = f.post("/v1/features/user_txn", r#"{"keyz": []}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let many = json!({"keys": (0..101).map(|i| format!("u{i}")).collect::<Vec<_>>()}).to_string();
    let (s, v) = f.post("/v1/features/user_txn", &many).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("at most 100"));

    let req = json!({
        "features": ["user_txn:txn_count_1h", "user_txn:amount_avg_24h"],
        "entities": {"entity_id": ["user_1", "ghost"]}
    });
    let (s, v) = f.post("/get-online-features", &req.to_string()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["metadata"]["feature_names"],
        json!(["entity_id", "txn_count_1h", "amount_avg_24h"])
    );
    assert_eq!(v["results"][0]["values"], json!(["user_1", "ghost"]));
    assert_eq!(v["results"][1]["values"], json!([3, 0]));
    assert_eq!(v["results"][1]["statuses"], json!(["PRESENT", "NOT_FOUND"]));
    assert_eq!(v["results"][2]["values"], json!([20.0, null]));
    let bad =
        json!({"features": ["merchant_txn:txn_count_1h"], "entities": {"entity_id": ["user_1"]}});
    let (s, v) = f.post("/get-online-features", &bad.to_string()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("merchant_id"), "{v}");
    let bad = json!({"features": ["user_txn:nope"], "entities": {"entity_id": ["user_1"]}});
    let (s, _) = f.post("/get-online-features", &bad.to_string()).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let merchant = json!({"features": ["merchant_txn:txn_count_1h"], "entities": {"merchant_id": ["m_1", "m_2"]}, "full_feature_names": true});
    let (_, v) = f.post("/get-online-features", &merchant.to_string()).await;
    assert_eq!(
        v["metadata"]["feature_names"],
        json!(["merchant_id", "merchant_txn__txn_count_1h"])
    );
    assert_eq!(v["results"][1]["values"], json!([2, 2]));
}

/// The feature-read count of the HTTP metrics for one status.
async fn feature_reads_counted(f: &Fixture, status: u16) -> f64 {
    let (_, v) = f.get("/metrics").await;
    let text = v.as_str().unwrap().to_string();
    text.lines()
        .filter(|l| l.starts_with("inferdb_http_requests_total{"))
        .filter(|l| l.contains(r#"route="/v1/features/{view}/{key}""#))
        .filter(|l| l.contains(&format!(r#"status="{status}""#)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_fast_feature_read_answers_byte_for_byte_as_the_router() {
    let f = fixture();
    let body = format!(
        "[{},{},{}]",
        ev("user_1", "2026-01-01T00:00:00Z", 10.0, "m_1"),
        ev("user_1", "2026-01-01T00:10:00Z", 20.5, "m_2"),
        ev("user 2", "2026-01-01T00:12:30Z", 5.0, "m_1"),
    );
    let (s, _) = f.post("/v1/events/transactions", &body).await;
    assert_eq!(s, StatusCode::OK);
    let state = AppState {
        engine: f.engine.clone(),
        max_keys_per_read: 100,
        models: None,
        sql: Default::default(),
    };
    let fast = app(state.clone(), 64 * 1024);
    let slow = inferdb_server::api::router(state, 64 * 1024);
    async fn answer<S>(svc: S, method: &str, uri: &str) -> (StatusCode, String, String)
    where
        S: tower::Service<
                Request<Body>,
                Response = axum::response::Response,
                Error = std::convert::Infallible,
            >,
    {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let resp = svc.oneshot(req).await.unwrap();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }
    // Plain reads (the fast path) and reads the router must decode.
    let cases = [
        ("GET", "/v1/features/user_txn/user_1", StatusCode::OK),
        ("GET", "/v1/features/user_txn/ghost", StatusCode::OK),
        ("GET", "/v1/features/merchant_txn/m_1", StatusCode::OK),
        ("GET", "/v1/features/nope/user_1", StatusCode::NOT_FOUND),
        ("GET", "/v1/features/user_txn/user%202", StatusCode::OK),
        ("GET", "/v1/features/user_txn/user%5F1", StatusCode::OK),
        ("GET", "/v1/features/user_txn/%FF", StatusCode::BAD_REQUEST),
        (
            "GET",
            "/v1/features/user_txn/user_1?as_of=2026-01-01T01:05:00Z",
            StatusCode::OK,
        ),
        (
            "GET",
            "/v1/features/user_txn/user_1?as_of=soon",
            StatusCode::BAD_REQUEST,
        ),
        ("GET", "/v1/features/user_txn/", StatusCode::NOT_FOUND),
        (
            "GET",
            "/v1/features/user_txn/user_1/more",
            StatusCode::NOT_FOUND,
        ),
        ("GET", "/v1/features//user_1", StatusCode::NOT_FOUND),
        (
            "DELETE",
            "/v1/features/user_txn/user_1",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (method, uri, want) in cases {
        let a = answer(fast.clone(), method, uri).await;
        let b = answer(slow.clone(), method, uri).await;
        assert_eq!(a.0, want, "{method} {uri}: {}", a.2);
        assert_eq!(a, b, "{method} {uri}");
    }
    // The escaped key reads the same entity as the plain one.
    let plain = answer(fast.clone(), "GET", "/v1/features/user_txn/user_1").await;
    let escaped = answer(fast.clone(), "GET", "/v1/features/user_txn/user%5F1").await;
    assert_eq!(plain, escaped);
    let v: Value = serde_json::from_str(&plain.2).unwrap();
    assert_eq!(v["features"]["txn_count_1h"], 2);
    assert_eq!(v["features"]["last_amount"], 20.5);
    assert_eq!(plain.1, "application/json");

    // The fast path counts its reads in the HTTP metrics like the router.
    // (Other tests of this binary read features too, but far fewer than 60.)
    let (ok0, missing0) = (
        feature_reads_counted(&f, 200).await,
        feature_reads_counted(&f, 404).await,
    );
    for _ in 0..60 {
        let (s, _, _) = answer(fast.clone(), "GET", "/v1/features/user_txn/user_1").await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, _) = answer(fast.clone(), "GET", "/v1/features/nope/x").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    assert!(feature_reads_counted(&f, 200).await >= ok0 + 60.0);
    assert!(feature_reads_counted(&f, 404).await >= missing0 + 60.0);
}

#[tokio::test]
async fn recent_records_newest_first_and_metrics() {
    let f = fixture();
    let body: Vec<String> = (0..5)
        .map(|i| {
            ev(
                "user_1",
                &format!("2026-01-01T00:00:0{i}Z"),
                i as f64,
                "m_1",
            )
        })
        .collect();
    f.post("/v1/events/transactions", &format!("[{}]", body.join(",")))
        .await;
    let (s, v) = f
        .get("/v1/entities/transactions/user_1/records?limit=2")
        .await;
    assert_eq!(s, StatusCode::OK);
    let recs = v["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["amount"], 4.0);
    assert_eq!(recs[0]["ts"], "2026-01-01T00:00:04.000Z");
    assert_eq!(recs[1]["amount"], 3.0);
    let (s, v) = f.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(text.contains("inferdb_ingest_events_total"), "{text}");
    assert!(text.contains("inferdb_http_requests_total"));
    assert!(text.contains("inferdb_ingest_ack_duration_seconds_bucket"));
}

impl Fixture {
    /// A request with an `Accept` header and a chosen SQL row limit; the
    /// status, the `x-inferdb-truncated` header and the raw body.
    async fn raw(
        &self,
        uri: &str,
        ct: &str,
        accept: &str,
        body: &str,
        max_rows: usize,
    ) -> (StatusCode, bool, Vec<u8>) {
        let router = app(
            AppState {
                engine: self.engine.clone(),
                max_keys_per_read: 100,
                models: None,
                sql: inferdb_engine::SqlOptions {
                    max_rows,
                    ..Default::default()
                },
            },
            64 * 1024,
        );
        let req = Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", ct)
            .header("accept", accept)
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = router.oneshot(req).await.unwrap();
        let status = resp.status();
        let truncated = resp.headers().get("x-inferdb-truncated").is_some();
        if resp.headers().get("x-inferdb-from-memory").is_some() {
            self.from_memory
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, truncated, bytes.to_vec())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_json_csv_and_arrow_and_refuses_bad_queries() {
    let f = fixture();
    let body = format!(
        "[{}, {}, {}, {{\"entity_id\":\"user_9\",\"ts\":\"2026-01-01T00:07:00Z\",\"amount\":\"x\"}}]",
        ev("user_1", "2026-01-01T00:01:00Z", 10.5, "m_1"),
        ev("user_2", "2026-01-01T00:02:00Z", 7.25, "m_2"),
        ev("user_1", "2026-01-01T00:06:00Z", 1.0, "m_1"),
    );
    let (s, v) = f.post("/v1/events/transactions", &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The query as text, JSON rows back: seen at once, before any flush.
    let q = "SELECT entity_id, amount, ts FROM transactions ORDER BY amount";
    let (s, _, b) = f
        .raw("/v1/sql", "text/plain", "application/json", q, 100)
        .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let rows: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        rows,
        json!([
            {"entity_id": "user_1", "amount": 1.0, "ts": "2026-01-01T00:06:00Z"},
            {"entity_id": "user_2", "amount": 7.25, "ts": "2026-01-01T00:02:00Z"},
            {"entity_id": "user_1", "amount": 10.5, "ts": "2026-01-01T00:01:00Z"},
        ])
    );
    // The same as {"query": …}, with time_bucket.
    let q = json!({"query": "SELECT time_bucket(INTERVAL '5 minutes', ts) AS b, count(*) AS n, sum(amount) AS s \
                             FROM transactions GROUP BY b ORDER BY b"});
    let (s, v) = f.post("/v1/sql", &q.to_string()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!([
            {"b": "2026-01-01T00:00:00Z", "n": 2, "s": 17.75},
            {"b": "2026-01-01T00:05:00Z", "n": 1, "s": 1.0},
        ])
    );
    // CSV and Arrow by Accept.
    let q = "SELECT entity_id, amount FROM transactions ORDER BY amount";
    let (s, _, b) = f.raw("/v1/sql", "text/plain", "text/csv", q, 100).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        String::from_utf8(b).unwrap(),
        "entity_id,amount\nuser_1,1.0\nuser_2,7.25\nuser_1,10.5\n"
    );
    let (s, _, b) = f
        .raw(
            "/v1/sql",
            "text/plain",
            inferdb_server::sql::ARROW_STREAM,
            q,
            100,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let r = inferdb_server::sql::decode_arrow(&b).unwrap();
    assert_eq!(r.num_rows(), 3);
    assert_eq!(r.schema.field(1).name(), "amount");
    // One user's latest rows: from the hot tier (said by a header), the
    // same rows as the files give.
    let latest = "SELECT entity_id, amount, ts FROM transactions WHERE entity_id = 'user_1' \
             ORDER BY ts DESC LIMIT 5";
    let (s, _, memory) = f
        .raw("/v1/sql", "text/plain", "text/csv", latest, 100)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(f.from_memory.load(std::sync::atomic::Ordering::Relaxed), 1);
    let on_files = latest.replace("ORDER", "AND ts IS NOT NULL ORDER");
    let (s, _, files) = f
        .raw("/v1/sql", "text/plain", "text/csv", &on_files, 100)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(f.from_memory.load(std::sync::atomic::Ordering::Relaxed), 1);
    let memory = String::from_utf8(memory).unwrap();
    assert_eq!(
        memory,
        "entity_id,amount,ts\nuser_1,1.0,2026-01-01T00:06:00Z\nuser_1,10.5,2026-01-01T00:01:00Z\n"
    );
    assert_eq!(String::from_utf8(files).unwrap(), memory);
    // The same shape again (answered in the handler, not planned), as
    // JSON, for this user and another: what the files give.
    for user in ["user_1", "user_2"] {
        let q = latest.replace("user_1", user);
        let (s, _, memory) = f
            .raw("/v1/sql", "text/plain", "application/json", &q, 100)
            .await;
        assert_eq!(s, StatusCode::OK);
        let on_files = q.replace("ORDER", "AND ts IS NOT NULL ORDER");
        let (s, _, files) = f
            .raw("/v1/sql", "text/plain", "application/json", &on_files, 100)
            .await;
        assert_eq!(s, StatusCode::OK);
        let memory = String::from_utf8(memory).unwrap();
        assert!(
            memory.contains(&format!("\"entity_id\":\"{user}\"")),
            "{memory}"
        );
        assert_eq!(String::from_utf8(files).unwrap(), memory);
    }
    assert_eq!(f.from_memory.load(std::sync::atomic::Ordering::Relaxed), 3);
    // Dead letters are a table too.
    let (s, v) = f
        .post(
            "/v1/sql",
            &json!({"query": "SELECT stream, field, \"index\" FROM dead_letters"}).to_string(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        json!([{"stream": "transactions", "field": "amount", "index": 3}])
    );
    // Rows past the limit are cut off, and the answer says so.
    let (s, truncated, b) = f
        .raw("/v1/sql", "text/plain", "application/json", q, 2)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(truncated);
    assert_eq!(
        serde_json::from_slice::<Value>(&b)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Bad queries: 400 with DataFusion's message; the server stays up.
    for (body, needle) in [
        ("SELECT nope FROM transactions", "nope"),
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELEC 1", "SELEC"),
        ("   ", "empty"),
    ] {
        let (s, _, b) = f
            .raw("/v1/sql", "text/plain", "application/json", body, 100)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    let (s, v) = f.post("/v1/sql", r#"{"sql": "SELECT 1"}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("query"), "{v}");
    let (s, v) = f
        .post(
            "/v1/sql",
            r#"{"query": "SELECT count(*) AS n FROM inference_records"}"#,
        )
        .await;
    assert_eq!((s, v), (StatusCode::OK, json!([{"n": 0}])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_data_appends_features_as_of_each_row_in_csv_and_parquet() {
    let f = fixture();
    let body = format!(
        "[{}, {}, {}]",
        ev("user_1", "2026-01-01T00:01:00Z", 10.0, "m_1"),
        ev("user_1", "2026-01-01T00:02:00Z", 20.0, "m_2"),
        ev("user_2", "2026-01-01T00:03:00Z", 7.0, "m_1"),
    );
    let (s, v) = f.post("/v1/events/transactions", &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rows = "entity_id,ts,label\n\
                user_1,2026-01-01T00:01:30Z,1\n\
                user_1,2026-01-01T00:05:00Z,0\n\
                user_2,1767225600000,1\n\
                nobody,2026-01-01T00:05:00Z,0\n";
    let (s, _, b) = f
        .raw(
            "/v1/training-data?view=user_txn",
            "text/csv",
            "text/csv",
            rows,
            100,
        )
        .await;
    let text = String::from_utf8(b).unwrap();
    assert_eq!(s, StatusCode::OK, "{text}");
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(
        &lines[0][..5],
        [
            "entity_id",
            "ts",
            "label",
            "user_txn__txn_count_5m",
            "user_txn__txn_count_1h"
        ]
    );
    assert_eq!(lines.len(), 5, "same rows, same order");
    let col = |name: &str| lines[0].iter().position(|c| *c == name).unwrap();
    let (n5, sum1h) = (
        col("user_txn__txn_count_5m"),
        col("user_txn__amount_sum_1h"),
    );
    // As of 00:01:30 only the first payment counts; as of 00:05 both.
    assert_eq!(
        (lines[1][0], lines[1][n5], lines[1][sum1h]),
        ("user_1", "1", "10.0")
    );
    assert_eq!((lines[2][n5], lines[2][sum1h]), ("2", "30.0"));
    // user_2 at midnight: before its payment. nobody: no events at all.
    assert_eq!((lines[3][n5], lines[4][n5]), ("0", "0"));
    assert_eq!(lines[3][2], "1", "the label passes through");

    // Parquet in, Parquet out, two views.
    use inferdb_engine::arrow::array::{
        AsArray, RecordBatch, StringArray, TimestampMillisecondArray,
    };
    use inferdb_engine::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("entity_id", DataType::Utf8, false),
        Field::new("merchant_id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(StringArray::from(vec!["user_1", "user_2"])),
            std::sync::Arc::new(StringArray::from(vec!["m_1", "m_1"])),
            std::sync::Arc::new(
                TimestampMillisecondArray::from(vec![1_767_225_780_000, 1_767_225_780_000])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let mut pq = Vec::new();
    let mut w =
        inferdb_engine::parquet::arrow::ArrowWriter::try_new(&mut pq, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let router = app(
        AppState {
            engine: f.engine.clone(),
            max_keys_per_read: 100,
            models: None,
            sql: Default::default(),
        },
        1 << 20,
    );
    let req = Request::builder()
        .method("POST")
        .uri("/v1/training-data?view=user_txn&view=merchant_txn")
        .header("content-type", inferdb_server::training::PARQUET)
        .body(Body::from(pq))
        .unwrap();
    let resp = router.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let out = resp.into_body().collect().await.unwrap().to_bytes();
    let reader =
        inferdb_engine::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(out)
            .unwrap()
            .build()
            .unwrap();
    let b = reader.map(|b| b.unwrap()).next().unwrap();
    let get = |name: &str| {
        let c = b.column(b.schema().index_of(name).unwrap()).clone();
        (0..2)
            .map(|i| c.as_primitive::<Int64Type>().value(i))
            .collect::<Vec<_>>()
    };
    // At 00:03: user_1 has 2 payments in 1 h, user_2 one; m_1 has 2.
    assert_eq!(get("user_txn__txn_count_1h"), vec![2, 1]);
    assert_eq!(get("merchant_txn__txn_count_1h"), vec![2, 2]);

    // Errors name what is wrong.
    for (uri, body, status, needle) in [
        ("/v1/training-data", rows, StatusCode::BAD_REQUEST, "view"),
        (
            "/v1/training-data?view=nope",
            rows,
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            "/v1/training-data?view=user_txn",
            "entity_id,label\nu,1\n",
            StatusCode::BAD_REQUEST,
            "ts",
        ),
        (
            "/v1/training-data?view=merchant_txn",
            rows,
            StatusCode::BAD_REQUEST,
            "merchant_id",
        ),
        (
            "/v1/training-data?view=user_txn",
            "entity_id,ts\nu,yesterday\n",
            StatusCode::BAD_REQUEST,
            "row 1",
        ),
    ] {
        let (s, _, b) = f.raw(uri, "text/csv", "text/csv", body, 100).await;
        let text = String::from_utf8_lossy(&b);
        assert_eq!(s, status, "{uri}: {text}");
        assert!(text.contains(needle), "{uri}: {text}");
    }
}
