//! Property test: the compiled, flat, multi-lane evaluator gives the same
//! outputs as a naive recursive walk of the same trees, for random trees
//! (every branch mode, random missing-value flags, shuffled node order,
//! sparse tree ids), random aggregates and random inputs including NaN and
//! values equal to the thresholds. Batches up to 20 rows and up to 20 trees
//! cover both the row-block path and the tree-group path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use inferdb_inference::TreeEnsemble;
use inferdb_inference::onnx::proto;
use proptest::prelude::*;
use prost::Message;

const MODES: [&str; 6] = [
    "BRANCH_LEQ",
    "BRANCH_LT",
    "BRANCH_GTE",
    "BRANCH_GT",
    "BRANCH_EQ",
    "BRANCH_NEQ",
];
const VALUES: [f32; 5] = [-1.0, -0.5, 0.0, 0.5, 1.0];

#[derive(Debug, Clone)]
enum Tree {
    Leaf(Vec<f32>),
    Branch {
        mode: usize,
        feature: usize,
        threshold: f32,
        missing_true: bool,
        yes: Box<Tree>,
        no: Box<Tree>,
    },
}

use common::Rng;

trait Weight {
    fn weight(&mut self) -> f32;
}

impl Weight for Rng {
    fn weight(&mut self) -> f32 {
        (self.below(2001) as f32 - 1000.0) / 250.0
    }
}

fn gen_tree(rng: &mut Rng, depth: usize, n_features: usize, n_out: usize) -> Tree {
    if depth == 0 || rng.below(4) == 0 {
        return Tree::Leaf((0..n_out).map(|_| rng.weight()).collect());
    }
    Tree::Branch {
        mode: rng.below(MODES.len()),
        feature: rng.below(n_features),
        threshold: VALUES[rng.below(VALUES.len())],
        missing_true: rng.below(2) == 0,
        yes: Box::new(gen_tree(rng, depth - 1, n_features, n_out)),
        no: Box::new(gen_tree(rng, depth - 1, n_features, n_out)),
    }
}

fn naive_leaf<'a>(tree: &'a Tree, row: &[f32]) -> &'a [f32] {
    match tree {
        Tree::Leaf(w) => w,
        Tree::Branch {
            mode,
            feature,
            threshold: t,
            missing_true,
            yes,
            no,
        } => {
            let x = row[*feature];
            let cond = match *mode {
                0 => x <= *t,
                1 => x < *t,
                2 => x >= *t,
                3 => x > *t,
                4 => x == *t,
                _ => x != *t,
            } || (*missing_true && x.is_nan());
            naive_leaf(if cond { yes } else { no }, row)
        }
    }
}

#[derive(Default)]
struct Flat {
    tree: Vec<i64>,
    id: Vec<i64>,
    feature: Vec<i64>,
    value: Vec<f32>,
    mode: Vec<Vec<u8>>,
    yes: Vec<i64>,
    no: Vec<i64>,
    missing: Vec<i64>,
    w_tree: Vec<i64>,
    w_node: Vec<i64>,
    w_id: Vec<i64>,
    w_value: Vec<f32>,
}

/// Appends `tree` with node ids from `next_id`; returns the root's id.
fn flatten(t: &Tree, tree_id: i64, next_id: &mut i64, out: &mut Flat) -> i64 {
    let id = *next_id;
    *next_id += 1;
    let at = out.tree.len();
    out.tree.push(tree_id);
    out.id.push(id);
    out.feature.push(0);
    out.value.push(0.0);
    out.mode.push(b"LEAF".to_vec());
    out.yes.push(0);
    out.no.push(0);
    out.missing.push(0);
    match t {
        Tree::Leaf(w) => {
            for (k, v) in w.iter().enumerate() {
                out.w_tree.push(tree_id);
                out.w_node.push(id);
                out.w_id.push(k as i64);
                out.w_value.push(*v);
            }
        }
        Tree::Branch {
            mode,
            feature,
            threshold,
            missing_true,
            yes,
            no,
        } => {
            let y = flatten(yes, tree_id, next_id, out);
            let n = flatten(no, tree_id, next_id, out);
            out.feature[at] = *feature as i64;
            out.value[at] = *threshold;
            out.mode[at] = MODES[*mode].as_bytes().to_vec();
            out.yes[at] = y;
            out.no[at] = n;
            out.missing[at] = i64::from(*missing_true);
        }
    }
    id
}

fn ints(name: &str, v: Vec<i64>) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        ints: v,
        r#type: proto::attribute_proto::AttributeType::Ints as i32,
        ..Default::default()
    }
}
fn floats(name: &str, v: Vec<f32>) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        floats: v,
        r#type: proto::attribute_proto::AttributeType::Floats as i32,
        ..Default::default()
    }
}
fn string(name: &str, v: &str) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        s: v.as_bytes().to_vec(),
        r#type: proto::attribute_proto::AttributeType::String as i32,
        ..Default::default()
    }
}

struct Spec {
    classifier: bool,
    trees: Vec<Tree>,
    n_features: usize,
    n_out: usize,
    aggregate: &'static str,
    base: Vec<f32>,
    shuffle: u64,
}

fn encode(spec: &Spec) -> Vec<u8> {
    let mut flat = Flat::default();
    for (t, tree) in spec.trees.iter().enumerate() {
        let mut next = 0;
        flatten(tree, 3 * t as i64 + 1, &mut next, &mut flat);
    }
    // Shuffle node entries (same permutation for every node attribute).
    let n = flat.tree.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng(spec.shuffle | 1);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let pick_i = |v: &Vec<i64>| order.iter().map(|&i| v[i]).collect::<Vec<_>>();
    let (p, w) = if spec.classifier {
        ("class", "class_weights")
    } else {
        ("target", "target_weights")
    };
    let mut attribute = vec![
        ints("nodes_treeids", pick_i(&flat.tree)),
        ints("nodes_nodeids", pick_i(&flat.id)),
        ints("nodes_featureids", pick_i(&flat.feature)),
        floats(
            "nodes_values",
            order.iter().map(|&i| flat.value[i]).collect(),
        ),
        proto::AttributeProto {
            name: "nodes_modes".into(),
            strings: order.iter().map(|&i| flat.mode[i].clone()).collect(),
            r#type: proto::attribute_proto::AttributeType::Strings as i32,
            ..Default::default()
        },
        ints("nodes_truenodeids", pick_i(&flat.yes)),
        ints("nodes_falsenodeids", pick_i(&flat.no)),
        ints("nodes_missing_value_tracks_true", pick_i(&flat.missing)),
        ints(&format!("{p}_treeids"), flat.w_tree.clone()),
        ints(&format!("{p}_nodeids"), flat.w_node.clone()),
        ints(&format!("{p}_ids"), flat.w_id.clone()),
        floats(w, flat.w_value.clone()),
        string("post_transform", "NONE"),
    ];
    if !spec.base.is_empty() {
        attribute.push(floats("base_values", spec.base.clone()));
    }
    let op_type = if spec.classifier {
        attribute.push(ints(
            "classlabels_int64s",
            (0..spec.n_out as i64).map(|k| 100 + k).collect(),
        ));
        "TreeEnsembleClassifier"
    } else {
        attribute.push(proto::AttributeProto {
            name: "n_targets".into(),
            i: spec.n_out as i64,
            r#type: proto::attribute_proto::AttributeType::Int as i32,
            ..Default::default()
        });
        attribute.push(string("aggregate_function", spec.aggregate));
        "TreeEnsembleRegressor"
    };
    let input = common::value_info("X", Some("N"), spec.n_features);
    let model = proto::ModelProto {
        ir_version: 8,
        graph: Some(proto::GraphProto {
            node: vec![proto::NodeProto {
                input: vec!["X".into()],
                output: vec!["Y".into()],
                op_type: op_type.into(),
                domain: "ai.onnx.ml".into(),
                attribute,
                ..Default::default()
            }],
            input: vec![input],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// The naive model of the evaluator's semantics for these specs.
fn naive(spec: &Spec, input: &[f32], n: usize) -> (Vec<i64>, Vec<f32>) {
    let f = spec.n_features;
    let mut labels = Vec::new();
    let mut scores = Vec::new();
    for row in input.chunks(f).take(n) {
        let leaves: Vec<&[f32]> = spec.trees.iter().map(|t| naive_leaf(t, row)).collect();
        let mut out = Vec::new();
        for k in 0..spec.n_out {
            let vals = leaves.iter().map(|w| w[k]);
            let agg = match spec.aggregate {
                "SUM" => vals.fold(0.0f32, |a, b| a + b),
                "AVERAGE" => vals.fold(0.0f32, |a, b| a + b) / spec.trees.len() as f32,
                "MIN" => vals.fold(f32::INFINITY, f32::min),
                _ => vals.fold(f32::NEG_INFINITY, f32::max),
            };
            let base = if spec.base.len() == spec.n_out {
                spec.base[k]
            } else {
                0.0
            };
            out.push(agg + base);
        }
        if spec.classifier {
            let mut best = 0;
            for k in 1..out.len() {
                if out[k] > out[best] {
                    best = k;
                }
            }
            labels.push(100 + best as i64);
        }
        scores.extend(out);
    }
    (labels, scores)
}

fn input_value(rng: &mut Rng) -> f32 {
    match rng.below(8) {
        0 => f32::NAN,
        1 => (rng.below(2001) as f32 - 1000.0) / 400.0,
        _ => VALUES[rng.below(VALUES.len())],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn flat_evaluator_equals_naive_walk(
        seed in any::<u64>(),
        n_trees in 1usize..20,
        depth in 0usize..7,
        n_features in 1usize..6,
        n_out in 1usize..4,
        rows in 0usize..20,
        classifier in any::<bool>(),
        aggregate in prop::sample::select(vec!["SUM", "AVERAGE", "MIN", "MAX"]),
        with_base in any::<bool>(),
    ) {
        let mut rng = Rng(seed | 1);
        // Classifiers here have 3+ classes (the binary special cases are
        // covered by the onnxruntime fixtures) and always sum.
        let n_out = if classifier { n_out + 2 } else { n_out };
        let aggregate = if classifier { "SUM" } else { aggregate };
        let trees: Vec<Tree> = (0..n_trees).map(|_| gen_tree(&mut rng, depth, n_features, n_out)).collect();
        let base = if with_base { (0..n_out).map(|_| rng.weight()).collect() } else { Vec::new() };
        let spec = Spec { classifier, trees, n_features, n_out, aggregate, base, shuffle: rng.next() };
        let model = TreeEnsemble::from_onnx_bytes(&encode(&spec)).unwrap();
        prop_assert_eq!(model.n_trees(), n_trees);
        let input: Vec<f32> = (0..rows * n_features).map(|_| input_value(&mut rng)).collect();
        let (mut labels, mut scores) = (Vec::new(), Vec::new());
        model.predict(&input, rows, &mut labels, &mut scores).unwrap();
        let (want_labels, want_scores) = naive(&spec, &input, rows);
        prop_assert_eq!(scores.len(), want_scores.len());
        for (i, (g, w)) in scores.iter().zip(&want_scores).enumerate() {
            prop_assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "score {}: got {} want {}", i, g, w);
        }
        if classifier {
            // Ties are possible with few distinct weights; compare by score.
            for (r, (g, w)) in labels.iter().zip(&want_labels).enumerate() {
                let at = |l: i64| scores[r * n_out + (l - 100) as usize];
                prop_assert!(g == w || (at(*g) - at(*w)).abs() <= 1e-4, "row {} label {} vs {}", r, g, w);
            }
        } else {
            prop_assert!(labels.is_empty());
        }
    }
}
