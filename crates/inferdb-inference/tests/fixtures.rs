//! Numerical equality with onnxruntime: every committed fixture model, at
//! batch 1, 8 and 64, must give onnxruntime's labels exactly and its scores
//! within 1e-4 (fixtures made by scripts/make_fixtures.py). Also the error
//! paths of loading and of `predict`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use inferdb_inference::{InferenceError, TreeEnsemble};
use inferdb_types::ErrorKind;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    model: String,
    n_features: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    batch: usize,
    input: Vec<Option<f32>>,
    #[serde(default)]
    labels: Option<Vec<i64>>,
    scores: Vec<Option<f32>>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn load(name: &str) -> (TreeEnsemble, Fixture) {
    let fixture: Fixture =
        serde_json::from_slice(&std::fs::read(dir().join(format!("{name}.json"))).unwrap())
            .unwrap();
    let bytes = std::fs::read(dir().join(&fixture.model)).unwrap();
    let model = TreeEnsemble::from_onnx_bytes(&bytes)
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"));
    (model, fixture)
}

/// Runs every case of a fixture and returns the largest score difference.
fn check(name: &str) -> f32 {
    let (model, fixture) = load(name);
    assert_eq!(model.n_features(), fixture.n_features, "{name} n_features");
    assert_eq!(fixture.cases.len(), 3, "{name}: batches 1, 8, 64");
    let mut worst = 0.0f32;
    for case in &fixture.cases {
        let input: Vec<f32> = case.input.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
        let (mut labels, mut scores) = (Vec::new(), Vec::new());
        model
            .predict(&input, case.batch, &mut labels, &mut scores)
            .unwrap();
        assert_eq!(
            scores.len(),
            case.scores.len(),
            "{name} batch {}: score count",
            case.batch
        );
        assert_eq!(scores.len(), case.batch * model.n_outputs());
        for (i, (got, want)) in scores.iter().zip(&case.scores).enumerate() {
            let want = want.unwrap_or(f32::NAN);
            let diff = (got - want).abs();
            assert!(
                diff <= 1e-4,
                "{name} batch {} score {i}: got {got}, onnxruntime {want}",
                case.batch
            );
            worst = worst.max(diff);
        }
        match &case.labels {
            Some(want) => assert_eq!(&labels, want, "{name} batch {} labels", case.batch),
            None => assert!(labels.is_empty(), "{name}: a regressor returns no labels"),
        }
    }
    worst
}

#[test]
fn gbdt_200_matches_onnxruntime() {
    let (model, _) = load("gbdt_200");
    assert_eq!(model.n_trees(), 200);
    assert_eq!(model.n_outputs(), 10);
    assert_eq!(model.n_features(), 256);
    check("gbdt_200");
}

#[test]
fn gbr_small_matches_onnxruntime() {
    check("gbr_small");
}

#[test]
fn rfr_small_matches_onnxruntime() {
    check("rfr_small");
}

#[test]
fn gbc_binary_logistic_matches_onnxruntime() {
    check("gbc_binary");
}

#[test]
fn rfc_binary_single_class_weights_matches_onnxruntime() {
    check("rfc_binary");
}

#[test]
fn rfc_3class_int_labels_matches_onnxruntime() {
    let (model, _) = load("rfc_3class");
    assert_eq!(model.class_labels(), &[3, 13, 23]);
    check("rfc_3class");
}

#[test]
fn every_branch_mode_with_missing_tracks_true_and_max_matches_onnxruntime() {
    check("modes_max");
}

#[test]
fn every_branch_mode_with_average_matches_onnxruntime() {
    check("modes_avg");
}

#[test]
fn min_aggregate_with_logistic_matches_onnxruntime() {
    check("modes_min_logistic");
}

#[test]
fn single_target_probit_matches_onnxruntime() {
    check("modes_probit");
}

#[test]
fn softmax_zero_matches_onnxruntime() {
    check("modes_softmax_zero");
}

#[test]
fn malformed_bytes_are_an_error_not_a_panic() {
    let bytes = std::fs::read(dir().join("gbdt_200.onnx")).unwrap();
    for cut in [0usize, 1, 7, 100, 1000, bytes.len() / 2, bytes.len() - 1] {
        let r = TreeEnsemble::from_onnx_bytes(&bytes[..cut]);
        assert!(r.is_err(), "truncated at {cut} must not load");
        assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(TreeEnsemble::from_onnx_bytes(&garbage).is_err());
    // Flip bytes across the file: each load must return (ok or error), never panic.
    for i in (0..bytes.len()).step_by(bytes.len() / 64) {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        let _ = TreeEnsemble::from_onnx_bytes(&b);
    }
}

#[test]
fn wrong_input_width_is_an_error() {
    let (model, _) = load("gbdt_200");
    let (mut labels, mut scores) = (Vec::new(), Vec::new());
    let err = model
        .predict(&vec![0.0; 255], 1, &mut labels, &mut scores)
        .unwrap_err();
    assert_eq!(
        err,
        InferenceError::InputShape {
            n: 1,
            features: 256,
            expected: 256,
            got: 255
        }
    );
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        model
            .predict(&vec![0.0; 512], 3, &mut labels, &mut scores)
            .is_err()
    );
    assert!(
        model
            .predict(&[], usize::MAX, &mut labels, &mut scores)
            .is_err()
    );
    // Zero rows is fine and gives empty outputs.
    model.predict(&[], 0, &mut labels, &mut scores).unwrap();
    assert!(labels.is_empty() && scores.is_empty());
}

#[test]
fn string_class_labels_give_label_indices() {
    use inferdb_inference::onnx::{decode_model, proto};
    use prost::Message;
    let (int_model, fixture) = load("rfc_3class");
    let mut model = decode_model(&std::fs::read(dir().join("rfc_3class.onnx")).unwrap()).unwrap();
    let node = model
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type == "TreeEnsembleClassifier")
        .unwrap();
    node.attribute.retain(|a| a.name != "classlabels_int64s");
    node.attribute.push(proto::AttributeProto {
        name: "classlabels_strings".into(),
        strings: vec![b"low".to_vec(), b"mid".to_vec(), b"high".to_vec()],
        r#type: proto::attribute_proto::AttributeType::Strings as i32,
        ..Default::default()
    });
    let str_model = TreeEnsemble::from_onnx_bytes(&model.encode_to_vec()).unwrap();
    assert_eq!(str_model.class_label_strings(), &["low", "mid", "high"]);
    let case = &fixture.cases[2];
    let input: Vec<f32> = case.input.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
    let (mut l1, mut s1, mut l2, mut s2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    int_model
        .predict(&input, case.batch, &mut l1, &mut s1)
        .unwrap();
    str_model
        .predict(&input, case.batch, &mut l2, &mut s2)
        .unwrap();
    assert_eq!(s1, s2);
    let as_index: Vec<i64> = l1.iter().map(|l| (l - 3) / 10).collect();
    assert_eq!(l2, as_index);
}
