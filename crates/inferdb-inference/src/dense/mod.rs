//! inferdb's own executor for dense float networks (engine `"inferdb-dense"`).
//!
//! Multi-layer perceptrons, scalers and calibrators — the graphs real-time
//! scoring serves most — are a chain of matrix products and element-wise
//! operations over `[N, width]` float tensors. tract runs them correctly, but
//! its matrix multiply took twice onnxruntime's time at batch 64 on our
//! AVX-512 machine, and each of its element-wise steps costs microseconds of
//! bookkeeping. This module compiles such a graph once into a list of steps
//! over row-major buffers and runs them with the kernel in [`gemm`].
//!
//! What it runs (everything else goes to tract, unchanged): one FP32 graph
//! input of shape `[N, F]`; nodes of the default domain, in the graph's
//! (topological) order, each reading the running `[N, w]` tensors and
//! initializers (or `Constant` nodes):
//!
//! * `Gemm` (`transA` 0, any `transB`, `alpha`, `beta`; `C` a scalar, `[M]`
//!   or `[1, M]`) and `MatMul` with a constant 2-D right-hand side: packed
//!   once, `alpha` folded into the weights and `beta` into the bias; a `Relu`
//!   that is the only reader of a product runs inside the kernel;
//! * `Add`, `Sub`, `Mul`, `Div` of two running tensors of the same width (or
//!   one of width 1), or of a running tensor and a constant that broadcasts
//!   along the row (a scalar, `[w]` or `[1, w]`), either side;
//! * `Relu`, `LeakyRelu`, `Sigmoid`, `Tanh`, `Exp`, `Identity`, `Dropout`
//!   (inference: identity);
//! * `Softmax` / `LogSoftmax` over the last axis;
//! * `ReduceMax` / `ReduceMin` / `ReduceSum` / `ReduceMean` over the last
//!   axis with `keepdims` 1 (`axes` as an attribute or, from opset 18, a
//!   constant input).
//!
//! An attribute it does not know, a shape it cannot follow or any other
//! operator makes [`DenseNet::compile`] say why, and the model is given to
//! tract instead; the choice is logged at load and reported as the model's
//! engine. Results equal onnxruntime's within 1e-4 (tests against the
//! committed fixtures, and against tract on random networks).

pub(crate) mod gemm;

use std::collections::HashMap;

use crate::error::InferenceError;
use crate::onnx::{Attrs, proto};
use gemm::Packed;

/// Id of a running tensor; 0 is the graph input.
type ValueId = usize;

/// A compiled network.
#[derive(Debug)]
pub(crate) struct DenseNet {
    input_width: usize,
    /// Row width of every running tensor, by id.
    widths: Vec<usize>,
    ops: Vec<Op>,
    /// The requested outputs, in request order.
    outputs: Vec<ValueId>,
}

#[derive(Debug)]
enum Op {
    Dense {
        x: ValueId,
        y: ValueId,
        w: Packed,
        relu: bool,
    },
    Binary {
        a: Operand,
        b: Operand,
        y: ValueId,
        f: BinOp,
    },
    Unary {
        x: ValueId,
        y: ValueId,
        f: UnOp,
    },
    Softmax {
        x: ValueId,
        y: ValueId,
        log: bool,
    },
    Reduce {
        x: ValueId,
        y: ValueId,
        f: ReduceOp,
    },
}

#[derive(Debug)]
enum Operand {
    Value(ValueId),
    /// One value, or one per column.
    Const(Vec<f32>),
}

#[derive(Debug, Clone, Copy)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum UnOp {
    Relu,
    LeakyRelu(f32),
    Sigmoid,
    Tanh,
    Exp,
}

#[derive(Debug, Clone, Copy)]
enum ReduceOp {
    Max,
    Min,
    Sum,
    Mean,
}

/// What a name in the graph stands for while compiling.
#[derive(Debug, Clone)]
enum Sym {
    Value(ValueId),
    Const { dims: Vec<usize>, data: Vec<f32> },
    ConstInts(Vec<i64>),
}

/// Why a graph is not for this engine (tract runs it instead).
pub(crate) type NotDense = String;

struct Compiler {
    syms: HashMap<String, Sym>,
    widths: Vec<usize>,
    ops: Vec<Op>,
}

impl DenseNet {
    /// Compiles `graph` for one input named `input` of `input_width` values
    /// per row, computing the named `outputs` with their per-row widths.
    pub(crate) fn compile(
        graph: &proto::GraphProto,
        input: &str,
        input_width: usize,
        outputs: &[(&str, usize)],
    ) -> Result<DenseNet, NotDense> {
        let mut c = Compiler {
            syms: HashMap::new(),
            widths: vec![input_width],
            ops: Vec::new(),
        };
        for t in &graph.initializer {
            c.syms.insert(t.name.clone(), tensor_sym(t)?);
        }
        let fed: Vec<&proto::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|vi| !c.syms.contains_key(&vi.name))
            .collect();
        match fed.as_slice() {
            [only] if only.name == input => {}
            _ => return Err(format!("the graph has {} fed inputs, not one", fed.len())),
        }
        let Some(proto::type_proto::Value::TensorType(t)) =
            fed[0].r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Err("the input is not a tensor".into());
        };
        if t.elem_type != 1 || t.shape.as_ref().is_none_or(|s| s.dim.len() != 2) {
            return Err("the input is not a 2-D float tensor".into());
        }
        c.syms.insert(input.to_string(), Sym::Value(0));
        for node in &graph.node {
            c.node(node)?;
        }
        let mut ids = Vec::with_capacity(outputs.len());
        for &(name, width) in outputs {
            match c.syms.get(name) {
                Some(Sym::Value(id)) if c.widths[*id] == width => ids.push(*id),
                Some(Sym::Value(id)) => {
                    return Err(format!(
                        "output {name:?} has {} values per row, not {width}",
                        c.widths[*id]
                    ));
                }
                _ => return Err(format!("output {name:?} is not computed from the input")),
            }
        }
        let mut net = DenseNet {
            input_width,
            widths: c.widths,
            ops: c.ops,
            outputs: ids,
        };
        net.fuse_relu();
        Ok(net)
    }

    /// Moves a `Relu` into the product before it when it is that product's
    /// only reader and the product is not an output.
    fn fuse_relu(&mut self) {
        let mut i = 0;
        while i + 1 < self.ops.len() {
            let fusable = match (&self.ops[i], &self.ops[i + 1]) {
                (
                    Op::Dense { y, relu: false, .. },
                    Op::Unary {
                        x, f: UnOp::Relu, ..
                    },
                ) => *x == *y && self.readers(*y) == 1 && !self.outputs.contains(y),
                _ => false,
            };
            if fusable
                && let Op::Unary { y: relu_out, .. } = self.ops.remove(i + 1)
                && let Op::Dense { y, relu, .. } = &mut self.ops[i]
            {
                *y = relu_out;
                *relu = true;
            }
            i += 1;
        }
    }

    fn readers(&self, v: ValueId) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Dense { x, .. }
                | Op::Unary { x, .. }
                | Op::Softmax { x, .. }
                | Op::Reduce { x, .. } => usize::from(*x == v),
                Op::Binary { a, b, .. } => [a, b]
                    .iter()
                    .filter(|o| matches!(o, Operand::Value(id) if *id == v))
                    .count(),
            })
            .sum()
    }

    /// Values per input row.
    pub(crate) fn input_width(&self) -> usize {
        self.input_width
    }

    /// Scratch buffers for [`DenseNet::run`], one per running tensor.
    pub(crate) fn scratch(&self) -> Vec<Vec<f32>> {
        vec![Vec::new(); self.widths.len()]
    }

    /// Runs `n` rows of `input` (`n × input_width` values), appending each
    /// row's outputs (concatenated in request order) to `out`.
    pub(crate) fn run(
        &self,
        input: &[f32],
        n: usize,
        bufs: &mut [Vec<f32>],
        out: &mut Vec<f32>,
    ) -> Result<(), InferenceError> {
        if bufs.len() != self.widths.len() || input.len() != n * self.input_width {
            return Err(InferenceError::Internal(
                "dense network: scratch or input of the wrong size".into(),
            ));
        }
        for op in &self.ops {
            let y_id = op.output();
            let mut y = std::mem::take(&mut bufs[y_id]);
            let len = n * self.widths[y_id];
            if y.len() != len {
                y.resize(len, 0.0);
            }
            let get = |id: ValueId| -> &[f32] { if id == 0 { input } else { &bufs[id] } };
            match op {
                Op::Dense { x, w, relu, .. } => gemm::gemm(get(*x), n, w, *relu, &mut y)?,
                Op::Binary { a, b, f, .. } => {
                    let (a, b) = (self.side(a, input, bufs), self.side(b, input, bufs));
                    binary(*f, a, b, self.widths[y_id], &mut y);
                }
                Op::Unary { x, f, .. } => unary(*f, get(*x), &mut y),
                Op::Softmax { x, log, .. } => softmax(get(*x), self.widths[*x], *log, &mut y),
                Op::Reduce { x, f, .. } => reduce(*f, get(*x), self.widths[*x], &mut y),
            }
            bufs[y_id] = y;
        }
        let get = |id: ValueId| -> &[f32] { if id == 0 { input } else { &bufs[id] } };
        if let [only] = self.outputs.as_slice() {
            out.extend_from_slice(get(*only));
            return Ok(());
        }
        for r in 0..n {
            for &id in &self.outputs {
                let w = self.widths[id];
                out.extend_from_slice(&get(id)[r * w..(r + 1) * w]);
            }
        }
        Ok(())
    }
}

impl DenseNet {
    fn side<'a>(&self, o: &'a Operand, input: &'a [f32], bufs: &'a [Vec<f32>]) -> Side<'a> {
        match o {
            Operand::Value(id) => Side {
                data: if *id == 0 { input } else { &bufs[*id] },
                width: self.widths[*id],
                per_row: true,
            },
            Operand::Const(c) => Side {
                data: c,
                width: c.len(),
                per_row: false,
            },
        }
    }
}

impl Op {
    fn output(&self) -> ValueId {
        match self {
            Op::Dense { y, .. }
            | Op::Binary { y, .. }
            | Op::Unary { y, .. }
            | Op::Softmax { y, .. }
            | Op::Reduce { y, .. } => *y,
        }
    }
}

impl Compiler {
    fn new_value(&mut self, name: &str, width: usize) -> ValueId {
        let id = self.widths.len();
        self.widths.push(width);
        self.syms.insert(name.to_string(), Sym::Value(id));
        id
    }

    /// A product step `out = x · w` (ReLU fused later if it follows).
    fn push_dense(&mut self, x: ValueId, out: &str, w: Packed) {
        let y = self.new_value(out, w.m());
        self.ops.push(Op::Dense {
            x,
            y,
            w,
            relu: false,
        });
    }

    fn sym(&self, name: &str) -> Result<&Sym, NotDense> {
        self.syms
            .get(name)
            .ok_or_else(|| format!("{name:?} is used before it is computed"))
    }

    fn value(&self, name: &str) -> Result<ValueId, NotDense> {
        match self.sym(name)? {
            Sym::Value(id) => Ok(*id),
            _ => Err(format!("{name:?} is a constant where a tensor is expected")),
        }
    }

    fn node(&mut self, node: &proto::NodeProto) -> Result<(), NotDense> {
        if !matches!(node.domain.as_str(), "" | "ai.onnx") {
            return Err(format!("operator {}:{}", node.domain, node.op_type));
        }
        let attrs = Attrs::new(node);
        let op = node.op_type.as_str();
        let allowed: &[&str] = match op {
            "Gemm" => &["alpha", "beta", "transA", "transB"],
            "LeakyRelu" => &["alpha"],
            "Softmax" | "LogSoftmax" => &["axis"],
            "ReduceMax" | "ReduceMin" | "ReduceSum" | "ReduceMean" => {
                &["axes", "keepdims", "noop_with_empty_axes"]
            }
            "Dropout" => &["seed"],
            "Constant" => &["value", "value_float", "value_floats"],
            _ => &[],
        };
        if let Some(a) = attrs.names().find(|a| !allowed.contains(a)) {
            return Err(format!("attribute {a} of {op}"));
        }
        let input = |i: usize| -> Result<&str, NotDense> {
            node.input
                .get(i)
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{op} without input {i}"))
        };
        let [out] = node.output.as_slice() else {
            if op == "Dropout" && node.output.len() == 2 && node.output[1].is_empty() {
                let x = self.value(input(0)?)?;
                self.syms.insert(node.output[0].clone(), Sym::Value(x));
                return Ok(());
            }
            return Err(format!("{op} with {} outputs", node.output.len()));
        };
        match op {
            "Constant" => {
                let sym = if let Some(t) = attrs.get("value").and_then(|a| a.t.as_ref()) {
                    tensor_sym(t)?
                } else if let Some(a) = attrs.get("value_float") {
                    Sym::Const {
                        dims: Vec::new(),
                        data: vec![a.f],
                    }
                } else if let Some(a) = attrs.get("value_floats") {
                    Sym::Const {
                        dims: vec![a.floats.len()],
                        data: a.floats.clone(),
                    }
                } else {
                    return Err("a Constant of another kind".into());
                };
                self.syms.insert(out.clone(), sym);
            }
            "Identity" | "Dropout" => {
                if node.input.len() > 1 {
                    return Err(format!("{op} with a ratio or training mode"));
                }
                let x = self.value(input(0)?)?;
                self.syms.insert(out.clone(), Sym::Value(x));
            }
            "Gemm" => {
                if attrs.int_or("transA", 0) != 0 {
                    return Err("Gemm with transA".into());
                }
                let alpha = attrs.get("alpha").map_or(1.0, |a| a.f);
                let beta = attrs.get("beta").map_or(1.0, |a| a.f);
                let trans_b = attrs.int_or("transB", 0) != 0;
                let x = self.value(input(0)?)?;
                let (dims, b) = self.constant(input(1)?)?;
                let [r, c] = dims.as_slice() else {
                    return Err("Gemm with a B that is not 2-D".into());
                };
                let (k, m) = if trans_b { (*c, *r) } else { (*r, *c) };
                if self.widths[x] != k {
                    return Err(format!(
                        "Gemm of a {}-wide input by a {k}-row B",
                        self.widths[x]
                    ));
                }
                let bias = match node.input.get(2).filter(|s| !s.is_empty()) {
                    None => vec![0.0; m],
                    Some(name) => {
                        let (cd, cv) = self.constant(name)?;
                        broadcast_row(&cd, cv, m).ok_or("Gemm with a C that is not a row vector")?
                    }
                };
                let w = Packed::new(
                    k,
                    m,
                    |kk, j| {
                        alpha
                            * if trans_b {
                                b[j * k + kk]
                            } else {
                                b[kk * m + j]
                            }
                    },
                    |j| beta * bias[j],
                );
                self.push_dense(x, out, w);
            }
            "MatMul" => {
                let x = self.value(input(0)?)?;
                let (dims, b) = self.constant(input(1)?)?;
                let [k, m] = dims.as_slice() else {
                    return Err("MatMul by a constant that is not 2-D".into());
                };
                let (k, m) = (*k, *m);
                if self.widths[x] != k {
                    return Err(format!(
                        "MatMul of a {}-wide input by {k} rows",
                        self.widths[x]
                    ));
                }
                let w = Packed::new(k, m, |kk, j| b[kk * m + j], |_| 0.0);
                self.push_dense(x, out, w);
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let f = match op {
                    "Add" => BinOp::Add,
                    "Sub" => BinOp::Sub,
                    "Mul" => BinOp::Mul,
                    _ => BinOp::Div,
                };
                let (a, b) = (self.operand(input(0)?)?, self.operand(input(1)?)?);
                let width = |o: &Operand| match o {
                    Operand::Value(id) => self.widths[*id],
                    Operand::Const(c) => c.len(),
                };
                let (wa, wb) = (width(&a), width(&b));
                if matches!((&a, &b), (Operand::Const(_), Operand::Const(_))) {
                    return Err(format!("{op} of two constants"));
                }
                if wa != wb && wa != 1 && wb != 1 {
                    return Err(format!("{op} of widths {wa} and {wb}"));
                }
                let y = self.new_value(out, wa.max(wb));
                self.ops.push(Op::Binary { a, b, y, f });
            }
            "Relu" | "LeakyRelu" | "Sigmoid" | "Tanh" | "Exp" => {
                let f = match op {
                    "Relu" => UnOp::Relu,
                    "LeakyRelu" => UnOp::LeakyRelu(attrs.get("alpha").map_or(0.01, |a| a.f)),
                    "Sigmoid" => UnOp::Sigmoid,
                    "Tanh" => UnOp::Tanh,
                    _ => UnOp::Exp,
                };
                let x = self.value(input(0)?)?;
                let y = self.new_value(out, self.widths[x]);
                self.ops.push(Op::Unary { x, y, f });
            }
            "Softmax" | "LogSoftmax" => {
                // Over a 2-D tensor, opset < 13's default axis 1 and opset
                // 13's -1 are both the last axis.
                let axis = attrs.get("axis").map(|a| a.i);
                if !matches!(axis, None | Some(1 | -1)) {
                    return Err(format!("{op} over axis {axis:?}"));
                }
                let x = self.value(input(0)?)?;
                let y = self.new_value(out, self.widths[x]);
                self.ops.push(Op::Softmax {
                    x,
                    y,
                    log: op == "LogSoftmax",
                });
            }
            "ReduceMax" | "ReduceMin" | "ReduceSum" | "ReduceMean" => {
                let f = match op {
                    "ReduceMax" => ReduceOp::Max,
                    "ReduceMin" => ReduceOp::Min,
                    "ReduceSum" => ReduceOp::Sum,
                    _ => ReduceOp::Mean,
                };
                let axes: Vec<i64> = match (attrs.get("axes"), node.input.get(1)) {
                    (Some(a), None) => a.ints.clone(),
                    (None, Some(name)) => match self.sym(name)? {
                        Sym::ConstInts(v) => v.clone(),
                        _ => return Err(format!("{op} with axes that are not constant ints")),
                    },
                    _ => return Err(format!("{op} without axes")),
                };
                if !matches!(axes.as_slice(), [1] | [-1]) || attrs.int_or("keepdims", 1) != 1 {
                    return Err(format!("{op} over axes {axes:?} or without keepdims"));
                }
                let x = self.value(input(0)?)?;
                let y = self.new_value(out, 1);
                self.ops.push(Op::Reduce { x, y, f });
            }
            _ => return Err(format!("operator {op}")),
        }
        Ok(())
    }

    fn constant(&self, name: &str) -> Result<(Vec<usize>, &[f32]), NotDense> {
        match self.sym(name)? {
            Sym::Const { dims, data } => Ok((dims.clone(), data)),
            _ => Err(format!("{name:?} is not a float constant")),
        }
    }

    fn operand(&self, name: &str) -> Result<Operand, NotDense> {
        match self.sym(name)? {
            Sym::Value(id) => Ok(Operand::Value(*id)),
            Sym::Const { dims, data } => {
                let width = match dims.as_slice() {
                    [] | [_] => data.len(),
                    [1, w] => *w,
                    _ => return Err(format!("constant {name:?} of shape {dims:?}")),
                };
                if width == 0 || data.len() < width {
                    return Err(format!("constant {name:?} of shape {dims:?}"));
                }
                Ok(Operand::Const(data[..width].to_vec()))
            }
            Sym::ConstInts(_) => Err(format!("{name:?} is an integer constant")),
        }
    }
}

/// A constant of shape `[]`, `[1]`, `[m]` or `[1, m]` as `m` values.
fn broadcast_row(dims: &[usize], data: &[f32], m: usize) -> Option<Vec<f32>> {
    match (dims, data.len()) {
        (_, 1) => Some(vec![data[0]; m]),
        ([w] | [1, w], len) if *w == m && len == m => Some(data.to_vec()),
        _ => None,
    }
}

/// An initializer or `Constant` value: floats (any shape) or int64s (for
/// `axes` inputs); other element types are not for this engine.
fn tensor_sym(t: &proto::TensorProto) -> Result<Sym, NotDense> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor {:?} dims {:?}", t.name, t.dims)))
        .collect::<Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("tensor {:?} too large", t.name))?;
    let bad = || format!("tensor {:?} holds the wrong number of values", t.name);
    match t.data_type {
        1 => {
            let data: Vec<f32> = if t.raw_data.is_empty() {
                t.float_data.clone()
            } else {
                t.raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            if data.len() != count || (!t.raw_data.is_empty() && t.raw_data.len() != 4 * count) {
                return Err(bad());
            }
            Ok(Sym::Const { dims, data })
        }
        7 => {
            let data: Vec<i64> = if t.raw_data.is_empty() {
                t.int64_data.clone()
            } else {
                t.raw_data
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect()
            };
            if data.len() != count {
                return Err(bad());
            }
            Ok(Sym::ConstInts(data))
        }
        other => Err(format!("tensor {:?} of element type {other}", t.name)),
    }
}

/// One operand of an element-wise op: a running tensor (`per_row`: its
/// values repeat every `width`) or a constant row.
struct Side<'a> {
    data: &'a [f32],
    width: usize,
    per_row: bool,
}

impl Side<'_> {
    fn row(&self, r: usize) -> &[f32] {
        if self.per_row {
            &self.data[r * self.width..(r + 1) * self.width]
        } else {
            self.data
        }
    }
}

fn binary(f: BinOp, a: Side<'_>, b: Side<'_>, width: usize, y: &mut [f32]) {
    match f {
        BinOp::Add => rows(|p, q| p + q, &a, &b, width, y),
        BinOp::Sub => rows(|p, q| p - q, &a, &b, width, y),
        BinOp::Mul => rows(|p, q| p * q, &a, &b, width, y),
        BinOp::Div => rows(|p, q| p / q, &a, &b, width, y),
    }
}

#[inline(always)]
fn rows(f: impl Fn(f32, f32) -> f32, a: &Side<'_>, b: &Side<'_>, width: usize, y: &mut [f32]) {
    if width == 0 {
        return;
    }
    for (r, yr) in y.chunks_exact_mut(width).enumerate() {
        let (ar, br) = (a.row(r), b.row(r));
        match (ar.len() == width, br.len() == width) {
            (true, true) => {
                for ((o, &p), &q) in yr.iter_mut().zip(ar).zip(br) {
                    *o = f(p, q);
                }
            }
            (true, false) => {
                let q = br[0];
                for (o, &p) in yr.iter_mut().zip(ar) {
                    *o = f(p, q);
                }
            }
            (false, _) => {
                let p = ar[0];
                for (o, &q) in yr.iter_mut().zip(br.iter().cycle()) {
                    *o = f(p, q);
                }
            }
        }
    }
}

fn unary(f: UnOp, x: &[f32], y: &mut [f32]) {
    let each = |g: &dyn Fn(f32) -> f32, y: &mut [f32]| {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = g(v);
        }
    };
    match f {
        UnOp::Relu => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = v.max(0.0);
            }
        }
        UnOp::LeakyRelu(alpha) => {
            for (o, &v) in y.iter_mut().zip(x) {
                *o = if v < 0.0 { alpha * v } else { v };
            }
        }
        UnOp::Sigmoid => each(&|v| 1.0 / (1.0 + (-v).exp()), y),
        UnOp::Tanh => each(&f32::tanh, y),
        UnOp::Exp => each(&f32::exp, y),
    }
}

fn softmax(x: &[f32], width: usize, log: bool, y: &mut [f32]) {
    if width == 0 {
        return;
    }
    for (xr, yr) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)) {
        let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - max).exp();
            sum += *o;
        }
        if log {
            let ls = sum.ln();
            for (o, &v) in yr.iter_mut().zip(xr) {
                *o = v - max - ls;
            }
        } else {
            for o in yr.iter_mut() {
                *o /= sum;
            }
        }
    }
}

fn reduce(f: ReduceOp, x: &[f32], width: usize, y: &mut [f32]) {
    if width == 0 {
        return;
    }
    for (xr, o) in x.chunks_exact(width).zip(y.iter_mut()) {
        *o = match f {
            ReduceOp::Max => xr.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            ReduceOp::Min => xr.iter().copied().fold(f32::INFINITY, f32::min),
            ReduceOp::Sum => xr.iter().sum(),
            ReduceOp::Mean => xr.iter().sum::<f32>() / width as f32,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax and log-softmax against f64 arithmetic, with logits far
    /// apart (log-probabilities far below ln of the smallest normal f32,
    /// where ln(softmax) would bottom out).
    #[test]
    fn softmax_and_log_softmax_equal_f64_arithmetic() {
        let x = [3.0f32, -95.0, 0.5, 120.0, -4.0, 119.0];
        for log in [false, true] {
            let mut y = [0.0f32; 6];
            softmax(&x, 3, log, &mut y);
            for (xr, yr) in x.chunks(3).zip(y.chunks(3)) {
                let max = xr.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let sum: f64 = xr.iter().map(|&v| (v as f64 - max).exp()).sum();
                for (&v, &got) in xr.iter().zip(yr) {
                    let lp = v as f64 - max - sum.ln();
                    let want = if log { lp } else { lp.exp() };
                    assert!(
                        (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "log={log}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn reductions_and_broadcasts() {
        let x = [1.0f32, -2.0, 4.0, 0.5, 0.5, 0.5];
        let mut y = [0.0f32; 2];
        for (f, want) in [
            (ReduceOp::Max, [4.0, 0.5]),
            (ReduceOp::Min, [-2.0, 0.5]),
            (ReduceOp::Sum, [3.0, 1.5]),
            (ReduceOp::Mean, [1.0, 0.5]),
        ] {
            reduce(f, &x, 3, &mut y);
            assert_eq!(y, want, "{f:?}");
        }
        // [2, 3] / [2, 1], and a constant row minus a running tensor.
        fn per_row(data: &[f32], width: usize) -> Side<'_> {
            Side {
                data,
                width,
                per_row: true,
            }
        }
        let mut z = [0.0f32; 6];
        binary(
            BinOp::Div,
            per_row(&x, 3),
            per_row(&[2.0, 0.5], 1),
            3,
            &mut z,
        );
        assert_eq!(z, [0.5, -1.0, 2.0, 1.0, 1.0, 1.0]);
        let row = [10.0f32, 20.0, 30.0];
        let konst = Side {
            data: &row,
            width: 3,
            per_row: false,
        };
        binary(BinOp::Sub, konst, per_row(&x, 3), 3, &mut z);
        assert_eq!(z, [9.0, 22.0, 26.0, 9.5, 19.5, 29.5]);
    }
}
