//! Models that must be refused at load with an error that names the problem:
//! unsupported operators and attributes, broken trees, inconsistent widths.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use inferdb_inference::onnx::{decode_model, proto};
use inferdb_inference::{InferenceError, TreeEnsemble};
use inferdb_types::ErrorKind;
use prost::Message;

fn small() -> proto::ModelProto {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/gbr_small.onnx");
    decode_model(&std::fs::read(path).unwrap()).unwrap()
}

fn ensemble(model: &mut proto::ModelProto) -> &mut proto::NodeProto {
    model
        .graph
        .as_mut()
        .unwrap()
        .node
        .iter_mut()
        .find(|n| n.op_type.starts_with("TreeEnsemble"))
        .unwrap()
}

fn attr<'a>(node: &'a mut proto::NodeProto, name: &str) -> &'a mut proto::AttributeProto {
    node.attribute.iter_mut().find(|a| a.name == name).unwrap()
}

fn load(model: &proto::ModelProto) -> Result<TreeEnsemble, InferenceError> {
    TreeEnsemble::from_onnx_bytes(&model.encode_to_vec())
}

#[test]
fn the_unmodified_model_loads() {
    let m = load(&small()).unwrap();
    assert_eq!(m.n_features(), 8);
    assert_eq!(m.n_outputs(), 1);
}

#[test]
fn an_unsupported_operator_is_named() {
    let mut model = small();
    model.graph.as_mut().unwrap().node.push(proto::NodeProto {
        op_type: "Relu".into(),
        name: "act".into(),
        input: vec!["variable".into()],
        output: vec!["y".into()],
        ..Default::default()
    });
    let err = load(&model).unwrap_err();
    assert!(matches!(&err, InferenceError::UnsupportedOp { op_type, .. } if op_type == "Relu"));
    assert!(err.to_string().contains("Relu"), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn opset5_tree_ensemble_is_reported_unsupported() {
    let mut model = small();
    ensemble(&mut model).op_type = "TreeEnsemble".into();
    let err = load(&model).unwrap_err();
    assert!(err.to_string().contains("TreeEnsemble"), "{err}");
}

#[test]
fn a_graph_without_an_ensemble_is_invalid() {
    let mut model = small();
    model.graph.as_mut().unwrap().node.clear();
    assert!(matches!(load(&model), Err(InferenceError::InvalidModel(_))));
}

#[test]
fn an_unknown_mode_is_named() {
    let mut model = small();
    attr(ensemble(&mut model), "nodes_modes").strings[0] = b"BRANCH_ODD".to_vec();
    let err = load(&model).unwrap_err();
    assert!(err.to_string().contains("BRANCH_ODD"), "{err}");
}

#[test]
fn double_tensor_attributes_are_unsupported() {
    let mut model = small();
    let node = ensemble(&mut model);
    node.attribute.push(proto::AttributeProto {
        name: "nodes_values_as_tensor".into(),
        ..Default::default()
    });
    let err = load(&model).unwrap_err();
    assert!(err.to_string().contains("nodes_values_as_tensor"), "{err}");
}

#[test]
fn a_cycle_is_refused() {
    let mut model = small();
    // Point the root's true child back at the root.
    attr(ensemble(&mut model), "nodes_truenodeids").ints[0] = 0;
    assert!(matches!(load(&model), Err(InferenceError::InvalidModel(_))));
}

#[test]
fn a_dangling_child_is_refused() {
    let mut model = small();
    attr(ensemble(&mut model), "nodes_falsenodeids").ints[0] = 9999;
    let err = load(&model).unwrap_err();
    assert!(err.to_string().contains("9999"), "{err}");
}

#[test]
fn mismatched_lengths_are_refused() {
    let mut model = small();
    attr(ensemble(&mut model), "nodes_values").floats.pop();
    let err = load(&model).unwrap_err();
    assert!(err.to_string().contains("nodes_values"), "{err}");
}

#[test]
fn a_feature_beyond_the_declared_width_is_refused() {
    let mut model = small();
    attr(ensemble(&mut model), "nodes_featureids").ints[0] = 8;
    let err = load(&model).unwrap_err();
    assert!(err.to_string().contains("feature 8"), "{err}");
}

#[test]
fn a_weight_on_a_missing_node_is_refused() {
    let mut model = small();
    attr(ensemble(&mut model), "target_nodeids").ints[0] = 4242;
    assert!(matches!(load(&model), Err(InferenceError::InvalidModel(_))));
}

#[test]
fn a_target_id_out_of_range_is_refused() {
    let mut model = small();
    attr(ensemble(&mut model), "target_ids").ints[0] = 1;
    assert!(matches!(load(&model), Err(InferenceError::InvalidModel(_))));
}
