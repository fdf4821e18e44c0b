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
