#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The inference path through a real server on a socket: `/infer` with the
//! reference ensemble (features joined, record stored), the KServe V2 API
//! (metadata, config, JSON and binary tensors, stats, repository index /
//! load / unload, a new version picked up from disk), against
//! onnxruntime's outputs saved as fixtures.

use bytes::Bytes;
use inferdb_server::client::{get_json, post_json, request_json};
use inferdb_server::config::ServerConfig;
use inferdb_server::serve::{RunningServer, start};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const SPEC: &str = include_str!("../../../examples/payments/spec.toml");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    models: PathBuf,
    server: RunningServer,
    addr: SocketAddr,
}

async fn setup() -> Setup {
    setup_with(inferdb_engine::InferenceCommit::Sync).await
}

async fn setup_with(commit: inferdb_engine::InferenceCommit) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    copy_dir(&repo_root().join("examples/models"), &models);
    let mut engine = inferdb_engine::EngineConfig::new(dir.path().join("data"));
    engine.spec = Some(inferdb_types::Catalog::from_toml(SPEC).unwrap().spec);
    engine.inference_commit = commit;
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_body_bytes: 8 << 20,
        max_keys_per_read: 100,
        worker_threads: None,
        engine,
        model_repository: Some(models.clone()),
        repository_poll: None,
        sql: Default::default(),
    };
    let server = start(cfg).await.unwrap();
    let addr = server.addr;
    Setup {
        _dir: dir,
        models,
        server,
        addr,
    }
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(
        repo_root().join("crates/inferdb-inference/fixtures/ensemble.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Number(n) => out.push(n.as_f64().unwrap()),
            other => panic!("not a number: {other}"),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * w.abs().max(1.0),
            "{what}[{i}]: {g} vs onnxruntime {w}"
        );
    }
}

fn txn(user: &str, ts: &str, amount: f64, merchant: &str) -> Value {
    json!({"entity_id": user, "ts": ts, "amount": amount, "merchant_id": merchant,
           "category": "fuel", "country": "FR", "channel": "web", "card_present": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_answers_like_onnxruntime() {
    let s = setup().await;
    let a = s.addr;
    assert_eq!(get_json(a, "/v2/health/live").await.unwrap().0, 200);
    assert_eq!(get_json(a, "/v2/health/ready").await.unwrap().0, 200);
    let (st, meta) = get_json(a, "/v2").await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(meta["name"], "inferdb");

    let (st, m) = get_json(a, "/v2/models/fraud_ensemble").await.unwrap();
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["platform"], "ensemble");
    assert_eq!(m["inputs"][0]["shape"], json!([-1, 256]));
    assert_eq!(m["outputs"][1]["name"], "confidence");
    assert_eq!(
        get_json(a, "/v2/models/fraud_ensemble/ready")
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        get_json(a, "/v2/models/fraud_ensemble/versions/1/ready")
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(get_json(a, "/v2/models/nope/ready").await.unwrap().0, 400);
    let (st, cfg) = get_json(a, "/v2/models/main_model_v3/config")
        .await
        .unwrap();
    assert_eq!(st, 200);
    assert_eq!(cfg["max_batch_size"], 64);
    assert_eq!(cfg["input"][0]["dims"], json!(["256"]));

    // JSON tensors, nested rows, every fixture batch size.
    let fx = fixture();
    for case in fx["cases"].as_array().unwrap() {
        let n = case["batch"].as_u64().unwrap() as usize;
        let flat = floats(&case["features"]);
        let rows: Vec<Vec<f64>> = flat.chunks(256).map(<[f64]>::to_vec).collect();
        let req = json!({"id": "r1", "inputs": [{"name": "features", "shape": [n, 256], "datatype": "FP32", "data": rows}]});
        let (st, out) = post_json(a, "/v2/models/fraud_ensemble/infer", &req)
            .await
            .unwrap();
        assert_eq!(st, 200, "{out}");
        assert_eq!(out["id"], "r1");
        assert_eq!(out["model_name"], "fraud_ensemble");
        let outputs = out["outputs"].as_array().unwrap();
        let by = |name: &str| outputs.iter().find(|o| o["name"] == name).unwrap().clone();
        assert_eq!(by("predictions")["shape"], json!([n, 10]));
        assert_eq!(by("confidence")["shape"], json!([n, 1]));
        assert_close(
            &floats(&by("predictions")["data"]),
            &floats(&case["predictions"]),
            "predictions",
        );
        assert_close(
            &floats(&by("confidence")["data"]),
            &floats(&case["confidence"]),
            "confidence",
        );
    }

    // Binary tensor data in and out (what tritonclient sends by default).
    let case = &fx["cases"][1];
    let n = case["batch"].as_u64().unwrap() as usize;
    let flat = floats(&case["features"]);
    let head = json!({"inputs": [{"name": "features", "shape": [n, 256], "datatype": "FP32",
        "parameters": {"binary_data_size": flat.len() * 4}}],
        "outputs": [{"name": "confidence", "parameters": {"binary_data": true}}]})
    .to_string();
    let mut body = head.clone().into_bytes();
    for x in &flat {
        body.extend_from_slice(&(*x as f32).to_le_bytes());
    }
    let resp = raw_post(a, "/v2/models/fraud_ensemble/infer", head.len(), body).await;
    let (json_len, bytes) = resp;
    let json_len = json_len.expect("binary answers carry Inference-Header-Content-Length");
    let out: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(out["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(out["outputs"][0]["parameters"]["binary_data_size"], n * 4);
    let conf: Vec<f64> = bytes[json_len..]
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    assert_close(&conf, &floats(&case["confidence"]), "binary confidence");

    // The tree model: labels as INT64, probabilities like onnxruntime's.
    let gb: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root().join("crates/inferdb-inference/fixtures/gbdt_200.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let gcase = &gb["cases"][1];
    let gn = gcase["batch"].as_u64().unwrap() as usize;
    // The fixture has NaNs (JSON null): send them as binary FP32.
    let head = json!({"inputs": [{"name": "X", "shape": [gn, 256], "datatype": "FP32",
        "parameters": {"binary_data_size": gn * 256 * 4}}]})
    .to_string();
    let mut body = head.clone().into_bytes();
    for v in gcase["input"].as_array().unwrap() {
        let x = v.as_f64().map_or(f32::NAN, |x| x as f32);
        body.extend_from_slice(&x.to_le_bytes());
    }
    let (len, bytes) = raw_post(a, "/v2/models/gbdt_fraud/infer", head.len(), body).await;
    assert_eq!(len, None, "JSON outputs unless binary ones are asked for");
    let out: Value = serde_json::from_slice(&bytes).unwrap();
    let outputs = out["outputs"].as_array().unwrap();
    let label = outputs.iter().find(|o| o["name"] == "label").unwrap();
    assert_eq!(label["datatype"], "INT64");
    assert_eq!(label["shape"], json!([gn]));
    assert_eq!(label["data"], gcase["labels"]);
    let probs = outputs
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    assert_close(
        &floats(&probs["data"]),
        &floats(&gcase["scores"]),
        "gbdt probabilities",
    );

    // Errors: Triton's mapping, each naming the problem.
    let bad = json!({"inputs": [{"name": "features", "shape": [1, 255], "datatype": "FP32", "data": vec![0.0; 255]}]});
    let (st, e) = post_json(a, "/v2/models/fraud_ensemble/infer", &bad)
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(e["error"].as_str().unwrap().contains("features"), "{e}");
    let bad = json!({"inputs": [{"name": "features", "shape": [1, 256], "datatype": "FP32", "data": vec![0.0; 3]}]});
    let (st, e) = post_json(a, "/v2/models/fraud_ensemble/infer", &bad)
        .await
        .unwrap();
    assert_eq!(st, 400, "{e}");
    let bad = json!({"inputs": [{"name": "wrong", "shape": [1, 256], "datatype": "FP32", "data": vec![0.0; 256]}]});
    let (st, e) = post_json(a, "/v2/models/fraud_ensemble/infer", &bad)
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(e["error"].as_str().unwrap().contains("wrong"), "{e}");
    let (st, _) = post_json(a, "/v2/models/nope/infer", &bad).await.unwrap();
    assert_eq!(st, 404);
    let (st, e) = request_json(
        a,
        "POST",
        "/v2/models/fraud_ensemble/infer",
        "application/json",
        Bytes::from_static(b"{not json"),
    )
    .await
    .unwrap();
    assert_eq!(st, 400, "{e}");

    // Stats count what ran.
    let (st, stats) = get_json(a, "/v2/models/main_model_v3/stats").await.unwrap();
    assert_eq!(st, 200);
    let ms = &stats["model_stats"][0];
    assert_eq!(ms["inference_stats"]["success"]["count"], 4);
    assert_eq!(ms["inference_count"], 1 + 8 + 64 + 8);

    // Repository: index, unload, load.
    let (st, idx) = post_json(a, "/v2/repository/index", &json!({}))
        .await
        .unwrap();
    assert_eq!(st, 200);
    let names: Vec<&str> = idx
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for m in [
        "confidence_calibrator",
        "feature_preprocessor",
        "fraud_ensemble",
        "gbdt_fraud",
        "main_model_v3",
    ] {
        assert!(names.contains(&m), "{m} missing from {idx}");
    }
    assert!(
        idx.as_array()
            .unwrap()
            .iter()
            .all(|e| e["state"] == "READY"),
        "{idx}"
    );
    let (st, _) = post_json(a, "/v2/repository/models/gbdt_fraud/unload", &json!({}))
        .await
        .unwrap();
    assert_eq!(st, 200);
    assert_eq!(get_json(a, "/v2/models/gbdt_fraud").await.unwrap().0, 404);
    let (_, idx) = post_json(a, "/v2/repository/index", &json!({}))
        .await
        .unwrap();
    let g = idx
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "gbdt_fraud")
        .unwrap();
    assert_eq!(g["state"], "UNAVAILABLE");
    let (st, _) = post_json(a, "/v2/repository/models/gbdt_fraud/load", &json!({}))
        .await
        .unwrap();
    assert_eq!(st, 200);
    assert_eq!(get_json(a, "/v2/models/gbdt_fraud").await.unwrap().0, 200);

    // A new version directory is picked up; the default policy serves the latest.
    copy_dir(
        &s.models.join("main_model_v3/1"),
        &s.models.join("main_model_v3/2"),
    );
    let m = s.server.models.clone().unwrap();
    tokio::task::spawn_blocking(move || m.poll_now())
        .await
        .unwrap();
    let (_, meta) = get_json(a, "/v2/models/main_model_v3").await.unwrap();
    assert_eq!(meta["versions"], json!(["2"]));
    assert_eq!(
        get_json(a, "/v2/models/main_model_v3/versions/1")
            .await
            .unwrap()
            .0,
        404
    );
    // The ensemble follows its step's latest version.
    let case = &fx["cases"][0];
    let req = json!({"inputs": [{"name": "features", "shape": [1, 256], "datatype": "FP32", "data": case["features"]}]});
    let (st, out) = post_json(a, "/v2/models/fraud_ensemble/infer", &req)
        .await
        .unwrap();
    assert_eq!(st, 200, "{out}");
    let (_, stats) = get_json(a, "/v2/models/main_model_v3/versions/2/stats")
        .await
        .unwrap();
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        1
    );

    s.server.stop().await.unwrap();
}

/// POSTs a body with the binary-data header; returns the answer's header
/// value and body.
async fn raw_post(
    a: SocketAddr,
    path: &str,
    json_len: usize,
    body: Vec<u8>,
) -> (Option<usize>, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    let extra = ("inference-header-content-length", json_len.to_string());
    let resp = post_on_new_connection(
        a,
        path,
        "application/octet-stream",
        Some(extra),
        Full::new(Bytes::from(body)),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let len = resp
        .headers()
        .get("inference-header-content-length")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (
        len,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

/// POSTs `body` to `path` on a fresh HTTP/1.1 connection, with one more
/// header if given.
async fn post_on_new_connection<B>(
    a: SocketAddr,
    path: &str,
    content_type: &str,
    extra: Option<(&str, String)>,
    body: B,
) -> hyper::Response<hyper::body::Incoming>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(a).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", a.to_string())
        .header("content-type", content_type);
    if let Some((name, value)) = extra {
        req = req.header(name, value);
    }
    sender.send_request(req.body(body).unwrap()).await.unwrap()
}

fn one_hot(values: &[&str], v: &str) -> Vec<f64> {
    values
        .iter()
        .map(|x| if *x == v { 1.0 } else { 0.0 })
        .collect()
}

/// Ingests two users' payments; the request fields of a payment to score.
async fn seed_and_request(a: SocketAddr) -> Value {
    let events = vec![
        txn("user_000001", "2026-01-01T10:00:00Z", 20.0, "m_0001"),
        txn("user_000001", "2026-01-01T10:30:00Z", 40.0, "m_0002"),
        txn("user_000002", "2026-01-01T10:40:00Z", 7.5, "m_0002"),
    ];
    let (st, r) = post_json(a, "/v1/events/transactions", &json!(events))
        .await
        .unwrap();
    assert_eq!(st, 200, "{r}");
    json!({"amount": 99.5, "merchant_id": "m_0002", "category": "travel",
        "country": "DE", "channel": "app", "card_present": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_joins_features_runs_the_ensemble_and_records_it() {
    let s = setup().await;
    let a = s.addr;
    let request = seed_and_request(a).await;
    // 2026-01-01T11:15:00Z is a Thursday.
    let body = json!({"entity_id": "user_000001", "features": request,
        "context": {"timestamp": "2026-01-01T11:15:00Z"}});
    let (st, out) = post_json(a, "/infer", &body).await.unwrap();
    assert_eq!(st, 200, "{out}");
    let preds = floats(&out["result"]["predictions"]);
    assert_eq!(preds.len(), 10);
    assert!((preds.iter().sum::<f64>() - 1.0).abs() < 1e-4);
    let conf = out["result"]["confidence"].as_f64().unwrap();
    assert!((conf - preds.iter().cloned().fold(f64::MIN, f64::max)).abs() < 1e-6);
    assert_eq!(out["model_version"], "1");
    let id = out["inference_id"].as_str().unwrap().to_string();

    // Oracle: the same vector built by hand from the feature reads, run
    // through the V2 API.
    let (_, uf) = get_json(a, "/v1/features/user_txn/user_000001")
        .await
        .unwrap();
    let (_, mf) = get_json(a, "/v1/features/merchant_txn/m_0002")
        .await
        .unwrap();
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut x: Vec<f64> = [
        "txn_count_5m",
        "txn_count_1h",
        "txn_count_24h",
        "amount_sum_1h",
        "amount_avg_24h",
        "amount_max_24h",
        "amount_min_24h",
        "amount_std_24h",
        "distinct_merchants_24h",
        "last_amount",
        "seconds_since_last_txn",
    ]
    .iter()
    .map(|f| num(&uf["features"][f]))
    .collect();
    assert_eq!(x[1], 2.0, "{uf}");
    x.push(num(&mf["features"]["txn_count_1h"]));
    x.push(num(&mf["features"]["amount_avg_24h"]));
    x.extend(one_hot(&inferdb_server::workload::CATEGORIES, "travel"));
    x.extend(one_hot(&inferdb_server::workload::COUNTRIES, "DE"));
    x.extend(one_hot(&inferdb_server::workload::CHANNELS, "app"));
    x.extend([1.0, 99.5, (100.5f64).ln(), 11.0, 3.0]);
    let bucket = (xxhash_rust::xxh3::xxh3_64(b"m_0002") % 187) as usize;
    x.extend((0..187).map(|j| if j == bucket { 1.0 } else { 0.0 }));
    assert_eq!(x.len(), 256);
    let req =
        json!({"inputs": [{"name": "features", "shape": [1, 256], "datatype": "FP32", "data": x}]});
    let (st, v2) = post_json(a, "/v2/models/fraud_ensemble/infer", &req)
        .await
        .unwrap();
    assert_eq!(st, 200, "{v2}");
    let want = floats(
        &v2["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "predictions")
            .unwrap()["data"],
    );
    assert_close(&preds, &want, "/infer predictions vs the hand-built vector");

    // The record, by id and among the entity's recent records.
    let (st, rec) = get_json(a, &format!("/v1/inferences/{id}")).await.unwrap();
    assert_eq!(st, 200, "{rec}");
    assert_eq!(rec["entity_id"], "user_000001");
    assert_eq!(rec["model"], "fraud_ensemble");
    assert_eq!(rec["features"]["merchant_id"], "m_0002");
    assert_eq!(rec["features"]["user_txn:txn_count_1h"], 2);
    assert_close(&floats(&rec["predictions"]), &preds, "recorded predictions");
    let (_, recent) = get_json(a, "/v1/entities/inference_records/user_000001/records")
        .await
        .unwrap();
    assert_eq!(recent["records"][0]["inference_id"], id.as_str());
    assert_eq!(get_json(a, "/v1/inferences/nope").await.unwrap().0, 404);

    // The tree model through the same binding.
    let mut gb = body.clone();
    gb["model"] = json!("gbdt_fraud");
    let (st, out) = post_json(a, "/infer", &gb).await.unwrap();
    assert_eq!(st, 200, "{out}");
    assert_eq!(floats(&out["result"]["predictions"]).len(), 10);

    // Bad requests: 4xx naming the problem, nothing recorded.
    let cases = [
        (json!({"features": request}), 400, "entity_id"),
        (json!({"entity_id": "user_000001"}), 400, "features"),
        (
            json!({"entity_id": "user_000001", "features": {"amount": 1}}),
            400,
            "features.merchant_id",
        ),
        (
            json!({"entity_id": "u", "features": request, "model": "nope"}),
            404,
            "nope",
        ),
        (
            json!({"entity_id": "u", "features": request, "colour": 1}),
            400,
            "colour",
        ),
        (
            json!({"entity_id": "u", "features": {"amount": "x", "merchant_id": "m", "category": "fuel",
            "country": "FR", "channel": "web", "card_present": false}}),
            400,
            "features.amount",
        ),
    ];
    for (b, status, word) in cases {
        let (st, e) = post_json(a, "/infer", &b).await.unwrap();
        assert_eq!(st, status, "{b} -> {e}");
        assert!(e["error"].as_str().unwrap().contains(word), "{b} -> {e}");
    }
    // A deadline that has already passed: 504, not run, not recorded.
    let mut late = body.clone();
    late["timeout_ms"] = json!(0);
    let (st, e) = post_json(a, "/infer", &late).await.unwrap();
    assert_eq!(st, 504, "{e}");

    // Records stored == requests answered.
    let mut answered = 2;
    for i in 0..40 {
        let b = json!({"entity_id": format!("user_{:06}", i % 5), "features": request});
        let (st, out) = post_json(a, "/infer", &b).await.unwrap();
        assert_eq!(st, 200, "{out}");
        answered += 1;
    }
    let (_, stats) = get_json(a, "/v1/streams/inference_records/stats")
        .await
        .unwrap();
    assert_eq!(stats["events_stored"], answered, "{stats}");
    s.server.stop().await.unwrap();
}

/// Under `inference_commit = async` the answer does not wait for the
/// record, yet every answered request's record becomes readable, with what
/// the answer said, and records stored == requests answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_inference_commit_records_every_answered_request() {
    let s = setup_with(inferdb_engine::InferenceCommit::Async).await;
    let a = s.addr;
    let request = seed_and_request(a).await;
    let mut answers = Vec::new();
    for i in 0..60 {
        let b = json!({"entity_id": format!("user_{:06}", i % 4), "features": request,
            "context": {"timestamp": "2026-01-01T11:15:00Z"}});
        let (st, out) = post_json(a, "/infer", &b).await.unwrap();
        assert_eq!(st, 200, "{out}");
        answers.push(out);
    }
    for out in &answers {
        let id = out["inference_id"].as_str().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let rec = loop {
            let (st, rec) = get_json(a, &format!("/v1/inferences/{id}")).await.unwrap();
            if st == 200 {
                break rec;
            }
            assert_eq!(st, 404, "{rec}");
            assert!(
                std::time::Instant::now() < deadline,
                "record {id} never readable"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        assert_close(
            &floats(&rec["predictions"]),
            &floats(&out["result"]["predictions"]),
            "recorded predictions",
        );
        assert_eq!(rec["features"]["merchant_id"], "m_0002");
    }
    let (_, stats) = get_json(a, "/v1/streams/inference_records/stats")
        .await
        .unwrap();
    assert_eq!(stats["events_stored"], answers.len(), "{stats}");
    s.server.stop().await.unwrap();
}

/// POSTs `body` to `/infer` with or without a `Content-Length` (without:
/// chunked, which the router answers instead of the fast path); the
/// status and the JSON answer.
async fn post_infer(a: SocketAddr, body: Vec<u8>, with_length: bool) -> (u16, Value) {
    use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
    use hyper::body::Frame;
    let body: BoxBody<Bytes, std::convert::Infallible> = if with_length {
        Full::new(Bytes::from(body)).boxed()
    } else {
        let frames = futures_util::stream::iter(vec![Ok(Frame::data(Bytes::from(body)))]);
        StreamBody::new(frames).boxed()
    };
    let resp = post_on_new_connection(a, "/infer", "application/json", None, body).await;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// `inferdb_http_requests_total` of `POST /infer` answered 200.
async fn infer_ok_counted(a: SocketAddr) -> f64 {
    let (_, text) =
        inferdb_server::client::request_json(a, "GET", "/metrics", "text/plain", Bytes::new())
            .await
            .unwrap();
    text.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("inferdb_http_requests_total{"))
        .filter(|l| l.contains(r#"route="/infer""#) && l.contains(r#"status="200""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_answers_alike_with_and_without_a_content_length() {
    let s = setup().await;
    let a = s.addr;
    let request = seed_and_request(a).await;
    let good = json!({"entity_id": "user_000001", "features": request,
        "context": {"timestamp": "2026-01-01T11:15:00Z"}})
    .to_string();

    // With a length: the fast path; chunked: the router. Same answers
    // (the inference id and time differ by nature).
    let (s1, fast) = post_infer(a, good.clone().into_bytes(), true).await;
    let (s2, routed) = post_infer(a, good.clone().into_bytes(), false).await;
    assert_eq!((s1, s2), (200, 200), "{fast} {routed}");
    assert_eq!(fast["result"], routed["result"]);
    assert_eq!(fast["model_version"], routed["model_version"]);
    assert_ne!(fast["inference_id"], routed["inference_id"]);
    let bad = [
        "{not json".to_string(),
        json!({"entity_id": "u", "features": request, "colour": 1}).to_string(),
        json!({"features": request}).to_string(),
        String::new(),
    ];
    for b in bad {
        let (s1, e1) = post_infer(a, b.clone().into_bytes(), true).await;
        let (s2, e2) = post_infer(a, b.clone().into_bytes(), false).await;
        assert_eq!(s1, 400, "{b:?} -> {e1}");
        assert_eq!((s1, &e1), (s2, &e2), "{b:?}");
    }
    // Over the body limit (8 MiB here): refused by the router's limit with
    // the same message whichever way the body comes.
    let huge = vec![b' '; (8 << 20) + 1];
    let (s1, e1) = post_infer(a, huge.clone(), true).await;
    let (s2, e2) = post_infer(a, huge, false).await;
    assert_eq!((s1, s2), (413, 413), "{e1} {e2}");
    assert!(
        e1["error"].as_str().unwrap().contains("max_body_bytes"),
        "{e1}"
    );
    assert_eq!(e1, e2);

    // The fast path counts its answers in the HTTP metrics.
    let before = infer_ok_counted(a).await;
    for _ in 0..30 {
        let (st, out) = post_infer(a, good.clone().into_bytes(), true).await;
        assert_eq!(st, 200, "{out}");
    }
    assert!(infer_ok_counted(a).await >= before + 30.0);
    s.server.stop().await.unwrap();
}
