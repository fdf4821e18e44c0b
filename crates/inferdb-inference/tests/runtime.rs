//! `CompiledModel` against onnxruntime: every step of the reference ensemble
//! in examples/models, the chained ensemble and the GBDT, at batch 1, 8 and
//! 64 (fixtures/ensemble.json and fixtures/gbdt_200.json, made by
//! scripts/make_fixtures.py), plus the signature reader and load errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use inferdb_inference::onnx::proto;
use inferdb_inference::{
    Backend, CompiledModel, DataType, InferenceError, IoSpec, OnnxIo, onnx_signature,
};
use serde::Deserialize;

const TOL: f32 = 1e-4;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models")
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn model_bytes(name: &str) -> Vec<u8> {
    std::fs::read(models().join(name).join("1/model.onnx")).unwrap()
}

#[derive(Deserialize)]
struct Ensemble {
    cases: Vec<EnsembleCase>,
}

#[derive(Deserialize)]
struct EnsembleCase {
    batch: usize,
    features: Vec<f32>,
    scaled: Vec<f32>,
    logits: Vec<f32>,
    predictions: Vec<f32>,
    confidence: Vec<f32>,
}

fn ensemble() -> Ensemble {
    let text = std::fs::read_to_string(fixtures().join("ensemble.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn specs(items: &[(&str, usize)]) -> Vec<IoSpec> {
    items.iter().map(|&(n, w)| IoSpec::new(n, w)).collect()
}

fn load(name: &str, inputs: &[(&str, usize)], outputs: &[(&str, usize)]) -> CompiledModel {
    CompiledModel::load(&model_bytes(name), &specs(inputs), &specs(outputs), true).unwrap()
}

/// The reference ensemble's three steps, on our dense engine or on tract.
fn steps(on_tract: bool) -> [CompiledModel; 3] {
    let load = |name: &str, inputs: &[(&str, usize)], outputs: &[(&str, usize)]| {
        let (bytes, i, o) = (model_bytes(name), specs(inputs), specs(outputs));
        if on_tract {
            CompiledModel::load_on_tract(&bytes, &i, &o, true).unwrap()
        } else {
            CompiledModel::load(&bytes, &i, &o, true).unwrap()
        }
    };
    [
        load(
            "feature_preprocessor",
            &[("input", 256)],
            &[("scaled", 256)],
        ),
        load("main_model_v3", &[("input", 256)], &[("logits", 10)]),
        load(
            "confidence_calibrator",
            &[("logits", 10)],
            &[("predictions", 10), ("confidence", 1)],
        ),
    ]
}

fn mlp() -> CompiledModel {
    load("main_model_v3", &[("input", 256)], &[("logits", 10)])
}

fn run(backend: &mut dyn Backend, input: &[f32], n: usize) -> Vec<f32> {
    let mut out = Vec::new();
    backend.run(input, n, &mut out).unwrap();
    assert_eq!(out.len(), n * backend.output_width());
    out
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let diff = (g - w).abs();
        assert!(
            diff <= TOL || diff <= TOL * w.abs(),
            "{what}[{i}]: got {g}, onnxruntime {w}"
        );
    }
}

/// Row-major interleave of two outputs of widths `wa` and `wb`.
fn interleave(a: &[f32], wa: usize, b: &[f32], wb: usize) -> Vec<f32> {
    a.chunks(wa)
        .zip(b.chunks(wb))
        .flat_map(|(x, y)| x.iter().chain(y).copied())
        .collect()
}

#[test]
fn each_step_matches_onnxruntime_on_both_engines() {
    for (on_tract, engine) in [(false, "inferdb-dense"), (true, "tract")] {
        let [pre, mlp, cal] = steps(on_tract);
        for m in [&pre, &mlp, &cal] {
            assert_eq!(m.engine_name(), engine);
        }
        let (mut pre, mut mlp, mut cal) = (pre.instance(), mlp.instance(), cal.instance());
        assert_eq!((pre.input_width(), pre.output_width()), (256, 256));
        assert_eq!((mlp.input_width(), mlp.output_width()), (256, 10));
        assert_eq!((cal.input_width(), cal.output_width()), (10, 11));
        for case in ensemble().cases {
            let n = case.batch;
            let what = |s: &str| format!("{engine}: {s} at batch {n}");
            assert_close(
                &run(&mut *pre, &case.features, n),
                &case.scaled,
                &what("scaled"),
            );
            assert_close(
                &run(&mut *mlp, &case.scaled, n),
                &case.logits,
                &what("logits"),
            );
            assert_close(
                &run(&mut *cal, &case.logits, n),
                &interleave(&case.predictions, 10, &case.confidence, 1),
                &what("predictions+confidence"),
            );
        }
    }
}

#[test]
fn chained_ensemble_matches_onnxruntime_on_both_engines() {
    for on_tract in [false, true] {
        let [pre, mlp, cal] = steps(on_tract);
        let (mut pre, mut mlp, mut cal) = (pre.instance(), mlp.instance(), cal.instance());
        for case in ensemble().cases {
            let n = case.batch;
            let scaled = run(&mut *pre, &case.features, n);
            let logits = run(&mut *mlp, &scaled, n);
            let out = run(&mut *cal, &logits, n);
            let predictions: Vec<f32> = out.chunks(11).flat_map(|r| r[..10].to_vec()).collect();
            let confidence: Vec<f32> = out.chunks(11).map(|r| r[10]).collect();
            let what = |s: &str| format!("{s} at batch {n} (tract: {on_tract})");
            assert_close(&predictions, &case.predictions, &what("predictions"));
            assert_close(&confidence, &case.confidence, &what("confidence"));
        }
    }
}

/// The whole ensemble as one graph (fixtures/ensemble_fused.onnx, what
/// onnxruntime's timings are taken on) runs on the dense engine too.
#[test]
fn fused_ensemble_graph_matches_onnxruntime() {
    let bytes = std::fs::read(fixtures().join("ensemble_fused.onnx")).unwrap();
    let sig = onnx_signature(&bytes).unwrap();
    let input = sig.inputs[0].name.clone();
    let model = CompiledModel::load(
        &bytes,
        &specs(&[(&input, 256)]),
        &specs(&[("predictions", 10), ("confidence", 1)]),
        true,
    )
    .unwrap();
    assert_eq!(model.engine_name(), "inferdb-dense");
    let mut backend = model.instance();
    for case in ensemble().cases {
        let n = case.batch;
        assert_close(
            &run(&mut *backend, &case.features, n),
            &interleave(&case.predictions, 10, &case.confidence, 1),
            &format!("fused ensemble at batch {n}"),
        );
    }
}

#[test]
fn outputs_follow_the_specs_order() {
    let cal = load(
        "confidence_calibrator",
        &[("logits", 10)],
        &[("confidence", 1), ("predictions", 10)],
    );
    let only = load(
        "confidence_calibrator",
        &[("logits", 10)],
        &[("confidence", 1)],
    );
    let case = &ensemble().cases[1];
    let n = case.batch;
    assert_close(
        &run(&mut *cal.instance(), &case.logits, n),
        &interleave(&case.confidence, 1, &case.predictions, 10),
        "confidence+predictions",
    );
    assert_close(
        &run(&mut *only.instance(), &case.logits, n),
        &case.confidence,
        "confidence alone",
    );
}

#[test]
fn instances_share_the_plan_and_reuse_their_state() {
    let model = mlp();
    let (mut a, mut b) = (model.instance(), model.instance());
    let cases = ensemble().cases;
    for _ in 0..2 {
        for case in &cases {
            let got_a = run(&mut *a, &case.scaled, case.batch);
            let got_b = run(&mut *b, &case.scaled, case.batch);
            assert_eq!(got_a, got_b);
            assert_close(&got_a, &case.logits, "logits");
        }
    }
    // A caller's buffer that already holds values is appended to.
    let case = &cases[0];
    let mut out = vec![7.0];
    a.run(&case.scaled, 1, &mut out).unwrap();
    assert_eq!(out[0], 7.0);
    assert_close(&out[1..], &case.logits, "appended logits");
}

#[test]
fn unbatched_model_runs_one_whole_tensor_per_row() {
    // batched = false: the preprocessor's [N, 256] is one [1, 256] tensor per
    // call; a batch of n rows runs n calls.
    let model = CompiledModel::load(
        &model_bytes("feature_preprocessor"),
        &specs(&[("input", 256)]),
        &specs(&[("scaled", 256)]),
        false,
    )
    .unwrap();
    let case = &ensemble().cases[1];
    let got = run(&mut *model.instance(), &case.features, case.batch);
    assert_close(&got, &case.scaled, "unbatched scaled");
}

#[test]
fn wrong_input_length_is_a_shape_error() {
    let mut mlp = mlp().instance();
    let mut out = Vec::new();
    let err = mlp.run(&[0.0; 255], 1, &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            InferenceError::InputShape {
                expected: 256,
                got: 255,
                ..
            }
        ),
        "{err}"
    );
    assert!(out.is_empty());
    assert!(run(&mut *mlp, &[], 0).is_empty());
}

#[derive(Deserialize)]
struct TreeFixture {
    cases: Vec<TreeCase>,
}

#[derive(Deserialize)]
struct TreeCase {
    batch: usize,
    input: Vec<Option<f32>>,
    labels: Vec<i64>,
    scores: Vec<f32>,
}

#[test]
fn gbdt_fraud_matches_onnxruntime() {
    let text = std::fs::read_to_string(fixtures().join("gbdt_200.json")).unwrap();
    let fixture: TreeFixture = serde_json::from_str(&text).unwrap();
    let model = load(
        "gbdt_fraud",
        &[("X", 256)],
        &[("label", 1), ("probabilities", 10)],
    );
    assert_eq!(model.engine_name(), "inferdb-trees");
    let probs_only = load("gbdt_fraud", &[("X", 256)], &[("probabilities", 10)]);
    let mut backend = model.instance();
    let mut probs_backend = probs_only.instance();
    assert_eq!((backend.input_width(), backend.output_width()), (256, 11));
    for case in fixture.cases {
        let n = case.batch;
        let input: Vec<f32> = case.input.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
        let out = run(&mut *backend, &input, n);
        let labels: Vec<i64> = out.chunks(11).map(|r| r[0] as i64).collect();
        let probs: Vec<f32> = out.chunks(11).flat_map(|r| r[1..].to_vec()).collect();
        assert_eq!(labels, case.labels, "labels at batch {n}");
        assert_close(&probs, &case.scores, &format!("probabilities at batch {n}"));
        assert_close(
            &run(&mut *probs_backend, &input, n),
            &case.scores,
            &format!("probabilities alone at batch {n}"),
        );
    }
}

#[test]
fn signature_of_the_mlp() {
    let sig = onnx_signature(&model_bytes("main_model_v3")).unwrap();
    assert_eq!(
        sig.inputs,
        vec![OnnxIo {
            name: "input".into(),
            data_type: DataType::Fp32,
            dims: vec![None, Some(256)],
        }]
    );
    assert_eq!(
        sig.outputs,
        vec![OnnxIo {
            name: "logits".into(),
            data_type: DataType::Fp32,
            dims: vec![None, Some(10)],
        }]
    );
    let gbdt = onnx_signature(&model_bytes("gbdt_fraud")).unwrap();
    let outs: Vec<(&str, DataType, &[Option<i64>])> = gbdt
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.data_type, o.dims.as_slice()))
        .collect();
    assert_eq!(
        outs,
        vec![
            ("label", DataType::Int64, &[None][..]),
            ("probabilities", DataType::Fp32, &[None, Some(10)][..]),
        ]
    );
}

fn load_err(name: &str, inputs: &[(&str, usize)], outputs: &[(&str, usize)]) -> String {
    CompiledModel::load(&model_bytes(name), &specs(inputs), &specs(outputs), true)
        .unwrap_err()
        .to_string()
}

#[test]
fn wrong_names_are_named() {
    for model in ["main_model_v3", "gbdt_fraud"] {
        let input = if model == "gbdt_fraud" { "X" } else { "input" };
        let out = if model == "gbdt_fraud" {
            "probabilities"
        } else {
            "logits"
        };
        let w = 10;
        let err = load_err(model, &[("features", 256)], &[(out, w)]);
        assert!(err.contains("\"features\""), "{model}: {err}");
        let err = load_err(model, &[(input, 256)], &[("scores", w)]);
        assert!(err.contains("\"scores\""), "{model}: {err}");
    }
}

#[test]
fn wrong_sizes_name_both() {
    let err = load_err("main_model_v3", &[("input", 255)], &[("logits", 10)]);
    assert!(
        err.contains("\"input\"") && err.contains("255") && err.contains("256"),
        "{err}"
    );
    let err = load_err("main_model_v3", &[("input", 256)], &[("logits", 12)]);
    assert!(
        err.contains("\"logits\"") && err.contains("12") && err.contains("10"),
        "{err}"
    );
    let err = load_err("gbdt_fraud", &[("X", 256)], &[("probabilities", 3)]);
    assert!(
        err.contains("\"probabilities\"") && err.contains('3') && err.contains("10"),
        "{err}"
    );
    let err = load_err("gbdt_fraud", &[("X", 128)], &[("label", 1)]);
    assert!(
        err.contains("\"X\"") && err.contains("128") && err.contains("256"),
        "{err}"
    );
}

#[test]
fn garbage_is_a_decode_error() {
    let err = CompiledModel::load(
        b"\xff\xff\xff definitely not onnx",
        &specs(&[("input", 256)]),
        &specs(&[("logits", 10)]),
        true,
    )
    .unwrap_err();
    assert!(matches!(err, InferenceError::Decode(_)), "{err}");
    assert!(matches!(
        onnx_signature(b"\xff\xff\xff"),
        Err(InferenceError::Decode(_))
    ));
}

/// A one-node graph `x [N, 4] -> op -> y [N, 4]`; with `named` false the
/// batch dim has no `dim_param` (what `FloatTensorType([None, 4])` gives).
fn one_node_model(op: &str, named: bool) -> Vec<u8> {
    let batch = named.then_some("N");
    common::model_bytes(
        vec![proto::NodeProto {
            name: "the_node".into(),
            op_type: op.into(),
            input: vec!["x".into()],
            output: vec!["y".into()],
            ..Default::default()
        }],
        Vec::new(),
        vec![common::value_info("x", batch, 4)],
        vec![common::value_info("y", batch, 4)],
        17,
    )
}

#[test]
fn unknown_operator_is_named() {
    let err = CompiledModel::load(
        &one_node_model("NoSuchOp", true),
        &specs(&[("x", 4)]),
        &specs(&[("y", 4)]),
        true,
    )
    .unwrap_err();
    assert!(
        matches!(&err, InferenceError::UnsupportedOp { op_type, node, .. } if op_type == "NoSuchOp" && node == "the_node"),
        "{err}"
    );
    // The same graph with a known op runs, whether the batch dim is named
    // or not.
    for named in [true, false] {
        let model = CompiledModel::load(
            &one_node_model("Relu", named),
            &specs(&[("x", 4)]),
            &specs(&[("y", 4)]),
            true,
        )
        .unwrap();
        let mut backend = model.instance();
        let x = [-1.0, 2.0, -3.0, 4.0, 5.0, -6.0, 7.0, -8.0];
        assert_eq!(
            run(&mut *backend, &x, 2),
            [0.0, 2.0, 0.0, 4.0, 5.0, 0.0, 7.0, 0.0]
        );
        assert_eq!(run(&mut *backend, &x[..4], 1), [0.0, 2.0, 0.0, 4.0]);
    }
}
