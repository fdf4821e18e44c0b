//! Our dense engine against tract, an independent implementation of ONNX:
//! random networks (Gemm/MatMul layers of random widths, activations, heads,
//! extra outputs) and every operator form the engine accepts, built here as
//! ONNX protobufs, run on both at random batch sizes; graphs the engine does
//! not take fall back to tract and still answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use inferdb_inference::onnx::proto;
use inferdb_inference::{CompiledModel, IoSpec};
use proptest::prelude::*;

use proto::attribute_proto::AttributeType;

use common::Rng;

/// Seeding and uniform floats on top of the shared generator.
trait Draw {
    fn seeded(seed: u64) -> Self;
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32;
    fn vec(&mut self, len: usize) -> Vec<f32>;
}

impl Draw for Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn f(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f()).collect()
    }
}

#[derive(Default)]
struct Graph {
    nodes: Vec<proto::NodeProto>,
    inits: Vec<proto::TensorProto>,
    counter: usize,
}

fn attr_f(name: &str, f: f32) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        f,
        r#type: AttributeType::Float as i32,
        ..Default::default()
    }
}

fn attr_i(name: &str, i: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        i,
        r#type: AttributeType::Int as i32,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: AttributeType::Ints as i32,
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[i64], data: &[f32], raw: bool) -> proto::TensorProto {
    proto::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        float_data: if raw { Vec::new() } else { data.to_vec() },
        raw_data: if raw {
            data.iter().flat_map(|v| v.to_le_bytes()).collect()
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}

impl Graph {
    fn fresh(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("{what}{}", self.counter)
    }

    fn init(&mut self, dims: &[i64], data: &[f32], raw: bool) -> String {
        let name = self.fresh("c");
        self.inits.push(float_tensor(&name, dims, data, raw));
        name
    }

    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<proto::AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.nodes.push(proto::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        out
    }

    fn model(&self, input: (&str, usize), outputs: &[(String, usize)], opset: i64) -> Vec<u8> {
        common::model_bytes(
            self.nodes.clone(),
            self.inits.clone(),
            vec![common::value_info(input.0, Some("N"), input.1)],
            outputs
                .iter()
                .map(|(n, w)| common::value_info(n, Some("N"), *w))
                .collect(),
            opset,
        )
    }
}

/// Runs `bytes` on the dense engine (which must take it, when `dense`) and on
/// tract, and compares every output value.
fn compare(bytes: &[u8], input_width: usize, outputs: &[(String, usize)], n: usize, seed: u64) {
    let inputs = [IoSpec::new("x", input_width)];
    let outs: Vec<IoSpec> = outputs.iter().map(|(o, w)| IoSpec::new(o, *w)).collect();
    let ours = CompiledModel::load(bytes, &inputs, &outs, true).unwrap();
    assert_eq!(ours.engine_name(), "inferdb-dense");
    let theirs = CompiledModel::load_on_tract(bytes, &inputs, &outs, true).unwrap();
    assert_eq!(theirs.engine_name(), "tract");
    let x = Rng::seeded(seed ^ 0xABCD).vec(n * input_width);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut ours = ours.instance();
    // Twice: the second run reuses the instance's buffers.
    for _ in 0..2 {
        a.clear();
        ours.run(&x, n, &mut a).unwrap();
    }
    theirs.instance().run(&x, n, &mut b).unwrap();
    assert_eq!(a.len(), b.len());
    for (i, (p, q)) in a.iter().zip(&b).enumerate() {
        assert!(
            (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
            "value {i} of {}: dense {p}, tract {q}",
            a.len()
        );
    }
}

/// A random network: 1–3 dense layers of random widths (Gemm with random
/// transB/alpha/beta/C, or MatMul with or without an Add), each followed by
/// a random activation (or none), then a random head; sometimes an
/// intermediate tensor is asked for as a second output.
fn random_network(seed: u64) -> (Vec<u8>, usize, Vec<(String, usize)>) {
    let mut rng = Rng::seeded(seed);
    let mut g = Graph::default();
    let input_width = 1 + rng.below(70);
    let mut cur = "x".to_string();
    let mut width = input_width;
    let mut extra = None;
    for _ in 0..1 + rng.below(3) {
        let m = 1 + rng.below(80);
        let k = width;
        let raw = rng.below(2) == 0;
        cur = if rng.below(3) > 0 {
            let trans_b = rng.below(2) == 0;
            let dims = if trans_b { [m, k] } else { [k, m] };
            let b = g.init(&[dims[0] as i64, dims[1] as i64], &rng.vec(k * m), raw);
            let mut attrs = vec![attr_i("transB", i64::from(trans_b))];
            if rng.below(2) == 0 {
                attrs.push(attr_f("alpha", 0.5 + rng.f().abs()));
                attrs.push(attr_f("beta", rng.f()));
            }
            let c = match rng.below(4) {
                0 => None,
                1 => Some(g.init(&[], &[rng.f()], raw)),
                2 => Some(g.init(&[m as i64], &rng.vec(m), raw)),
                _ => Some(g.init(&[1, m as i64], &rng.vec(m), raw)),
            };
            match c {
                Some(c) => g.node("Gemm", &[&cur, &b, &c], attrs),
                None => g.node("Gemm", &[&cur, &b], attrs),
            }
        } else {
            let b = g.init(&[k as i64, m as i64], &rng.vec(k * m), raw);
            let y = g.node("MatMul", &[&cur, &b], vec![]);
            if rng.below(2) == 0 {
                let bias = g.init(&[m as i64], &rng.vec(m), raw);
                g.node("Add", &[&y, &bias], vec![])
            } else {
                y
            }
        };
        width = m;
        if extra.is_none() && rng.below(4) == 0 {
            // The product is also an output: a following Relu must not be
            // fused into it.
            extra = Some((cur.clone(), width));
        }
        cur = match rng.below(5) {
            0 => cur,
            1 => g.node("LeakyRelu", &[&cur], vec![attr_f("alpha", 0.1)]),
            2 => g.node("Sigmoid", &[&cur], vec![]),
            3 => g.node("Tanh", &[&cur], vec![]),
            _ => g.node("Relu", &[&cur], vec![]),
        };
    }
    let mut outputs = Vec::new();
    match rng.below(4) {
        0 => outputs.push((cur, width)),
        1 => outputs.push((g.node("Softmax", &[&cur], vec![attr_i("axis", -1)]), width)),
        2 => {
            // tract computes ln(softmax), which bottoms out at
            // ln(f32::MIN_POSITIVE) = -87.3 (onnxruntime and our engine give
            // the exact value there): keep log-probabilities above that.
            let t = g.init(&[1], &[0.02], false);
            let small = g.node("Mul", &[&cur, &t], vec![]);
            outputs.push((g.node("LogSoftmax", &[&small], vec![]), width))
        }
        _ => {
            let t = g.init(&[], &[1.5], false);
            let scaled = g.node("Div", &[&cur, &t], vec![]);
            let p = g.node("Softmax", &[&scaled], vec![attr_i("axis", 1)]);
            let conf = g.node(
                "ReduceMax",
                &[&p],
                vec![attr_ints("axes", &[-1]), attr_i("keepdims", 1)],
            );
            outputs.push((p, width));
            outputs.push((conf, 1));
        }
    }
    outputs.extend(extra.filter(|(name, _)| outputs.iter().all(|(o, _)| o != name)));
    (
        g.model(("x", input_width), &outputs, 17),
        input_width,
        outputs,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn random_networks_equal_tract(seed in any::<u64>(), n in 1usize..40) {
        let (bytes, width, outputs) = random_network(seed);
        compare(&bytes, width, &outputs, n, seed);
    }
}

#[test]
fn every_elementwise_form_equals_tract() {
    let mut g = Graph::default();
    let w = 7;
    let mut rng = Rng::seeded(5);
    let row = g.init(&[1, w as i64], &rng.vec(w), true);
    let one = g.init(&[1], &[1.0], false);
    // Constant on the left of Sub and Div, on the right of Mul and Add.
    let a = g.node("Sub", &[&one, "x"], vec![]);
    let b = g.node("Mul", &[&a, &row], vec![]);
    let c = g.node("Add", &[&b, "x"], vec![]);
    let sq = g.node("Mul", &[&c, &c], vec![]);
    let e = g.node("Exp", &[&sq], vec![]);
    // A running tensor over a width-1 one (and the other way round);
    // from opset 13 ReduceSum takes its axes as an input.
    g.inits.push(proto::TensorProto {
        name: "axes".into(),
        dims: vec![1],
        data_type: 7,
        raw_data: 1i64.to_le_bytes().to_vec(),
        ..Default::default()
    });
    let s = g.node("ReduceSum", &[&e, "axes"], vec![attr_i("keepdims", 1)]);
    let norm = g.node("Div", &[&e, &s], vec![]);
    let inv = g.node("Div", &[&s, &e], vec![]);
    let mean = g.node("ReduceMean", &[&inv], vec![attr_ints("axes", &[-1])]);
    let min = g.node("ReduceMin", &[&norm], vec![attr_ints("axes", &[1])]);
    // A Constant node, Identity and an inference Dropout.
    g.nodes.push(proto::NodeProto {
        output: vec!["k".into()],
        op_type: "Constant".into(),
        attribute: vec![proto::AttributeProto {
            name: "value_float".into(),
            f: 0.25,
            r#type: AttributeType::Float as i32,
            ..Default::default()
        }],
        ..Default::default()
    });
    let scaled = g.node("Mul", &["k", &min], vec![]);
    let id = g.node("Identity", &[&scaled], vec![]);
    let dropped = g.node("Dropout", &[&id], vec![]);
    let outputs = vec![(norm, w), (inv, w), (mean, 1), (dropped, 1)];
    let bytes = g.model(("x", w), &outputs, 13);
    for n in [1, 3, 17] {
        compare(&bytes, w, &outputs, n, n as u64);
    }
}

#[test]
fn opset_18_reduce_axes_as_an_input_equal_tract() {
    let mut g = Graph::default();
    g.inits.push(proto::TensorProto {
        name: "axes".into(),
        dims: vec![1],
        data_type: 7,
        int64_data: vec![-1],
        ..Default::default()
    });
    let p = g.node("Softmax", &["x"], vec![]);
    let m = g.node("ReduceMax", &[&p, "axes"], vec![attr_i("keepdims", 1)]);
    let outputs = vec![(p, 5), (m, 1)];
    let bytes = g.model(("x", 5), &outputs, 18);
    compare(&bytes, 5, &outputs, 9, 3);
}

/// A graph the dense engine does not run (here an operator it lacks, and a
/// Gemm with transA) goes to tract and answers there.
#[test]
fn other_graphs_fall_back_to_tract() {
    let mut rng = Rng::seeded(9);
    let mut a = Graph::default();
    let abs = a.node("Abs", &["x"], vec![]);
    let mut b = Graph::default();
    let w = b.init(&[4, 4], &rng.vec(16), false);
    let t = b.node("Gemm", &["x", &w], vec![attr_i("transA", 1)]);
    for (g, out) in [(a, abs), (b, t)] {
        let outputs = vec![(out.clone(), 4)];
        let bytes = g.model(("x", 4), &outputs, 17);
        let model = CompiledModel::load(
            &bytes,
            &[IoSpec::new("x", 4)],
            &[IoSpec::new(&out, 4)],
            true,
        );
        if out.starts_with("abs") {
            let model = model.unwrap();
            assert_eq!(model.engine_name(), "tract");
            let mut y = Vec::new();
            model
                .instance()
                .run(&[-1.0, 2.0, -3.0, 4.0], 1, &mut y)
                .unwrap();
            assert_eq!(y, vec![1.0, 2.0, 3.0, 4.0]);
        } else if let Ok(model) = model {
            // transA of an [N, 4] input is a [4, N] product: tract decides
            // whether it can run it; our engine must not have taken it.
            assert_eq!(model.engine_name(), "tract");
        }
    }
}
