#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The model manager over a copy of the reference repository: ensembles as
//! chains and as DAGs give the same numbers as their steps run one by one,
//! deadlines, a bad config next to good models, version policies.

use inferdb_inference::{DataType, InferenceError, ManagerOptions, ModelManager, Tensor};
use std::path::Path;
use std::time::{Duration, Instant};

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

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models"),
        dir.path(),
    );
    dir
}

fn opts() -> ManagerOptions {
    ManagerOptions {
        poll_interval: None,
        ..ManagerOptions::default()
    }
}

fn input(name: &str, rows: usize, seed: u32) -> Tensor {
    let data = (0..rows * 256)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 250.0 - 2.0
        })
        .collect();
    Tensor {
        name: name.into(),
        datatype: DataType::Fp32,
        shape: vec![rows as i64, 256],
        data,
    }
}

async fn run(m: &ModelManager, model: &str, inputs: Vec<Tensor>) -> Vec<Tensor> {
    m.model(model, None)
        .unwrap()
        .infer(inputs, None)
        .await
        .unwrap()
}

fn renamed(t: &Tensor, name: &str) -> Tensor {
    Tensor {
        name: name.into(),
        ..t.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_and_dag_ensembles_equal_their_steps_run_by_hand() {
    let dir = repo();
    // A DAG: the MLP and the preprocessor both read `features` (wave 0);
    // the calibrator reads the MLP's logits (wave 1); outputs from both waves.
    std::fs::create_dir_all(dir.path().join("dag/1")).unwrap();
    std::fs::write(
        dir.path().join("dag/config.pbtxt"),
        r#"
name: "dag"
platform: "ensemble"
max_batch_size: 64
input [ { name: "features" data_type: TYPE_FP32 dims: [ 256 ] } ]
output [
  { name: "scaled" data_type: TYPE_FP32 dims: [ 256 ] },
  { name: "confidence" data_type: TYPE_FP32 dims: [ 1 ] }
]
ensemble_scheduling {
  step [
    { model_name: "feature_preprocessor" model_version: -1
      input_map { key: "input" value: "features" } output_map { key: "scaled" value: "scaled" } },
    { model_name: "main_model_v3" model_version: -1
      input_map { key: "input" value: "features" } output_map { key: "logits" value: "raw_logits" } },
    { model_name: "confidence_calibrator" model_version: -1
      input_map { key: "logits" value: "raw_logits" } output_map { key: "confidence" value: "confidence" } }
  ]
}
"#,
    )
    .unwrap();
    let m = ModelManager::open(dir.path(), opts()).unwrap();
    let index = m.index().unwrap();
    assert!(index.iter().all(|e| e.state == "READY"), "{index:?}");

    for rows in [1usize, 5, 64] {
        let x = input("features", rows, rows as u32);
        // By hand, step by step.
        let scaled = run(&m, "feature_preprocessor", vec![renamed(&x, "input")]).await;
        let logits = run(&m, "main_model_v3", vec![renamed(&scaled[0], "input")]).await;
        let cal = run(
            &m,
            "confidence_calibrator",
            vec![renamed(&logits[0], "logits")],
        )
        .await;
        // The chain.
        let out = run(&m, "fraud_ensemble", vec![x.clone()]).await;
        assert_eq!(out[0].name, "predictions");
        assert_eq!(out[0].shape, vec![rows as i64, 10]);
        assert_eq!(out[0].data, cal[0].data);
        assert_eq!(out[1].data, cal[1].data);
        // The DAG.
        let raw = run(&m, "main_model_v3", vec![renamed(&x, "input")]).await;
        let cal_raw = run(
            &m,
            "confidence_calibrator",
            vec![renamed(&raw[0], "logits")],
        )
        .await;
        let out = run(&m, "dag", vec![x]).await;
        assert_eq!(out[0].name, "scaled");
        assert_eq!(out[0].data, scaled[0].data);
        assert_eq!(out[1].name, "confidence");
        assert_eq!(out[1].data, cal_raw[1].data);
    }

    // Many concurrent chain requests: every one gets its own rows back.
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let x = input("features", 1, i);
            let chained = run(&m, "fraud_ensemble", vec![x.clone()]).await;
            (x, chained)
        }));
    }
    for t in tasks {
        let (x, chained) = t.await.unwrap();
        let scaled = run(&m, "feature_preprocessor", vec![renamed(&x, "input")]).await;
        let logits = run(&m, "main_model_v3", vec![renamed(&scaled[0], "input")]).await;
        let cal = run(
            &m,
            "confidence_calibrator",
            vec![renamed(&logits[0], "logits")],
        )
        .await;
        for (a, b) in chained[0].data.iter().zip(&cal[0].data) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
    let st = m.model("main_model_v3", None).unwrap().stats();
    assert!(st.batcher.unwrap().batches > 0);
    m.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_bad_inputs_are_refused_without_running() {
    let dir = repo();
    let m = ModelManager::open(dir.path(), opts()).unwrap();
    let h = m.model("fraud_ensemble", None).unwrap();
    let past = Instant::now() - Duration::from_millis(1);
    let e = h
        .infer(vec![input("features", 1, 1)], Some(past))
        .await
        .unwrap_err();
    assert!(matches!(e, InferenceError::Timeout { .. }), "{e}");
    let bad = Tensor {
        shape: vec![1, 255],
        data: vec![0.0; 255],
        ..input("features", 1, 1)
    };
    let e = h.infer(vec![bad], None).await.unwrap_err();
    assert!(e.to_string().contains("features"), "{e}");
    let e = h.infer(vec![input("wrong", 1, 1)], None).await.unwrap_err();
    assert!(e.to_string().contains("wrong"), "{e}");
    let e = m.model("nope", None).unwrap_err();
    assert!(matches!(e, InferenceError::UnknownModel { .. }));
    m.shutdown();
}

#[test]
fn a_bad_config_is_reported_and_the_other_models_serve() {
    let dir = repo();
    std::fs::write(
        dir.path().join("main_model_v3/config.pbtxt"),
        "name: \"main_model_v3\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 8\noptimization { }\n",
    )
    .unwrap();
    let m = ModelManager::open(dir.path(), opts()).unwrap();
    let index = m.index().unwrap();
    let row = |n: &str| index.iter().find(|e| e.name == n).unwrap().clone();
    assert_eq!(row("main_model_v3").state, "UNAVAILABLE");
    assert!(
        row("main_model_v3").reason.contains("optimization"),
        "{:?}",
        row("main_model_v3")
    );
    // The ensemble needs it, so it cannot load either; the GBDT serves.
    assert_eq!(row("fraud_ensemble").state, "UNAVAILABLE");
    assert!(row("fraud_ensemble").reason.contains("main_model_v3"));
    assert_eq!(row("gbdt_fraud").state, "READY");

    // Fixing the file and loading brings it back; a version policy keeps two.
    std::fs::write(
        dir.path().join("main_model_v3/config.pbtxt"),
        "name: \"main_model_v3\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 64\nversion_policy { all { } }\n",
    )
    .unwrap();
    copy_dir(
        &dir.path().join("main_model_v3/1"),
        &dir.path().join("main_model_v3/3"),
    );
    m.load("main_model_v3").unwrap();
    assert_eq!(m.versions("main_model_v3"), vec![1, 3]);
    m.load("fraud_ensemble").unwrap();
    assert!(m.is_ready("fraud_ensemble", None));
    m.shutdown();
}
