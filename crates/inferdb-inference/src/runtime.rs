//! Loading an ONNX model into something the batcher runs.
//!
//! [`CompiledModel::load`] reads the model once per model version and picks
//! an engine:
//!
//! * graphs made only of one `ai.onnx.ml` `TreeEnsembleClassifier` or
//!   `TreeEnsembleRegressor` node (plus `Identity`/`Cast`) run on our own
//!   [`TreeEnsemble`] (engine `"inferdb-trees"`): tract evaluates tree
//!   ensembles about 1000× slower than onnxruntime, and lacks the regressor;
//! * every other graph runs on tract (engine `"tract"`): the batch dimension
//!   is made symbolic, the graph is optimized once, and the runnable plan is
//!   shared by all instances through an `Arc`.
//!
//! Both check the caller's [`IoSpec`]s (the model config's inputs and outputs)
//! against the graph when loading, naming the tensor and both sizes on a
//! mismatch. [`CompiledModel::instance`] then makes one [`Backend`] per batcher
//! thread. A backend's input row is the concatenation of every input's
//! `row_elems` values in the specs' order, its output row the concatenation of
//! every output's values in the specs' order; each instance keeps its own
//! scratch buffers (and, for tract, its own plan state), so a batch allocates
//! only the input tensors tract takes ownership of.
//!
//! [`onnx_signature`] reads the names, types and dims a graph declares with
//! our own protobuf decoding, for config auto-complete and validation.

use std::sync::Arc;

use tract_onnx::prelude::{
    Datum, DatumType, Framework, InferenceFact, InferenceModelExt, IntoRunnable, TDim, TValue,
    TVec, Tensor as TractTensor, TypedRunnableModel, TypedSimpleState,
};

use crate::batcher::Backend;
use crate::dense::DenseNet;
use crate::error::InferenceError;
use crate::onnx::{self, ML_DOMAIN, proto};
use crate::tensor::DataType;
use crate::tree::{TreeEnsemble, TreeEnsembleKind};

/// What a caller tells the runtime about one input/output: its name and its
/// per-row element count (product of dims after the batch dim; the whole
/// tensor when the model is not batched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoSpec {
    pub name: String,
    pub row_elems: usize,
}

impl IoSpec {
    /// A spec from a name and a per-row element count.
    pub fn new(name: impl Into<String>, row_elems: usize) -> IoSpec {
        IoSpec {
            name: name.into(),
            row_elems,
        }
    }
}

/// A model's signature as the ONNX graph declares it: for config
/// auto-complete and validation.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxSignature {
    pub inputs: Vec<OnnxIo>,
    pub outputs: Vec<OnnxIo>,
}

/// One declared graph input or output. `dims` is empty when the graph
/// declares no shape (or a scalar); a `None` dim is symbolic or unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxIo {
    pub name: String,
    pub data_type: DataType,
    pub dims: Vec<Option<i64>>,
}

/// Reads the graph's declared inputs (initializers excluded) and outputs.
pub fn onnx_signature(bytes: &[u8]) -> Result<OnnxSignature, InferenceError> {
    let model = onnx::decode_model(bytes)?;
    signature_of(&model)
}

fn signature_of(model: &proto::ModelProto) -> Result<OnnxSignature, InferenceError> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| InferenceError::InvalidModel("the model has no graph".into()))?;
    let initialized: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|vi| !initialized.contains(vi.name.as_str()))
        .map(|vi| value_info_io(vi, "input"))
        .collect::<Result<_, _>>()?;
    let outputs = graph
        .output
        .iter()
        .map(|vi| value_info_io(vi, "output"))
        .collect::<Result<_, _>>()?;
    Ok(OnnxSignature { inputs, outputs })
}

fn value_info_io(vi: &proto::ValueInfoProto, what: &str) -> Result<OnnxIo, InferenceError> {
    let Some(proto::type_proto::Value::TensorType(t)) =
        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(InferenceError::InvalidModel(format!(
            "graph {what} {:?} is not a tensor (a ZipMap output, a sequence or a map?)",
            vi.name
        )));
    };
    let data_type = onnx_data_type(t.elem_type).ok_or_else(|| {
        InferenceError::InvalidModel(format!(
            "graph {what} {:?} has ONNX element type {}, which inferdb does not support",
            vi.name, t.elem_type
        ))
    })?;
    let dims = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) if v >= 0 => {
                        Some(v)
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(OnnxIo {
        name: vi.name.clone(),
        data_type,
        dims,
    })
}

/// The ONNX `TensorProto.DataType` values inferdb knows.
fn onnx_data_type(elem_type: i32) -> Option<DataType> {
    Some(match elem_type {
        1 => DataType::Fp32,
        2 => DataType::Uint8,
        3 => DataType::Int8,
        4 => DataType::Uint16,
        5 => DataType::Int16,
        6 => DataType::Int32,
        7 => DataType::Int64,
        8 => DataType::Bytes,
        9 => DataType::Bool,
        10 => DataType::Fp16,
        11 => DataType::Fp64,
        12 => DataType::Uint32,
        13 => DataType::Uint64,
        _ => return None,
    })
}

/// A compiled model, shared by all instances.
pub struct CompiledModel {
    engine: Engine,
}

enum Engine {
    Tract(Arc<TractShared>),
    Trees(Arc<TreeShared>),
    Dense(Arc<DenseShared>),
}

impl std::fmt::Debug for CompiledModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModel")
            .field("engine", &self.engine_name())
            .finish_non_exhaustive()
    }
}

impl CompiledModel {
    /// `batched` = the config's max_batch_size > 0 (the first dim of every
    /// input/output is the batch). Checks that `inputs`/`outputs` exist in
    /// the graph with matching element counts (clear errors naming the tensor
    /// and both sizes).
    pub fn load(
        bytes: &[u8],
        inputs: &[IoSpec],
        outputs: &[IoSpec],
        batched: bool,
    ) -> Result<CompiledModel, InferenceError> {
        Self::load_with(bytes, inputs, outputs, batched, true)
    }

    /// As [`CompiledModel::load`], but a graph that is not a tree ensemble
    /// always runs on tract, even when our dense engine could run it: the
    /// independent oracle of our dense engine's tests and benchmarks.
    pub fn load_on_tract(
        bytes: &[u8],
        inputs: &[IoSpec],
        outputs: &[IoSpec],
        batched: bool,
    ) -> Result<CompiledModel, InferenceError> {
        Self::load_with(bytes, inputs, outputs, batched, false)
    }

    fn load_with(
        bytes: &[u8],
        inputs: &[IoSpec],
        outputs: &[IoSpec],
        batched: bool,
        dense: bool,
    ) -> Result<CompiledModel, InferenceError> {
        let model = onnx::decode_model(bytes)?;
        let signature = signature_of(&model)?;
        if inputs.is_empty() || outputs.is_empty() {
            return Err(InferenceError::InvalidModel(
                "a model needs at least one input and one output".into(),
            ));
        }
        check_unique(inputs, "input")?;
        check_unique(outputs, "output")?;
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| InferenceError::InvalidModel("the model has no graph".into()))?;
        let engine = if is_tree_graph(graph) {
            Engine::Trees(Arc::new(TreeShared::load(
                bytes, graph, &signature, inputs, outputs, batched,
            )?))
        } else if let Some(shared) = dense
            .then(|| DenseShared::load(graph, &signature, inputs, outputs, batched))
            .transpose()?
            .flatten()
        {
            Engine::Dense(Arc::new(shared))
        } else {
            Engine::Tract(Arc::new(TractShared::load(
                bytes, graph, &signature, inputs, outputs, batched,
            )?))
        };
        Ok(CompiledModel { engine })
    }

    /// A backend instance for one batcher thread. Its input row = the
    /// concatenation of each input's row_elems values in `inputs` order; its
    /// output row = the concatenation of each output's values in `outputs`
    /// order. For a tree classifier, an output named like the graph's label
    /// output yields the label as f32, the probabilities output the scores.
    pub fn instance(&self) -> Box<dyn Backend> {
        match &self.engine {
            Engine::Tract(shared) => Box::new(TractInstance {
                shared: Arc::clone(shared),
                state: None,
                gathered: vec![Vec::new(); shared.inputs.len()],
            }),
            Engine::Trees(shared) => Box::new(TreeInstance {
                shared: Arc::clone(shared),
                labels: Vec::new(),
                scores: Vec::new(),
            }),
            Engine::Dense(shared) => Box::new(DenseInstance {
                bufs: shared.net.scratch(),
                shared: Arc::clone(shared),
            }),
        }
    }

    /// `"tract"`, `"inferdb-trees"` or `"inferdb-dense"`.
    pub fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Tract(_) => "tract",
            Engine::Trees(_) => "inferdb-trees",
            Engine::Dense(_) => "inferdb-dense",
        }
    }

    /// Values per backend input row (the sum of the inputs' `row_elems`).
    pub fn input_width(&self) -> usize {
        match &self.engine {
            Engine::Tract(s) => s.input_width,
            Engine::Trees(s) => s.input_width,
            Engine::Dense(s) => s.net.input_width(),
        }
    }

    /// Values per backend output row (the sum of the outputs' `row_elems`).
    pub fn output_width(&self) -> usize {
        match &self.engine {
            Engine::Tract(s) => s.output_width,
            Engine::Trees(s) => s.output_width,
            Engine::Dense(s) => s.output_width,
        }
    }
}

fn check_unique(specs: &[IoSpec], what: &str) -> Result<(), InferenceError> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(InferenceError::InvalidModel(format!(
                "{what} {:?} is listed twice",
                s.name
            )));
        }
        if s.row_elems == 0 {
            return Err(InferenceError::InvalidModel(format!(
                "{what} {:?} has zero elements per row",
                s.name
            )));
        }
    }
    Ok(())
}

fn total_width(specs: &[IoSpec], what: &str) -> Result<usize, InferenceError> {
    specs
        .iter()
        .try_fold(0usize, |acc, s| acc.checked_add(s.row_elems))
        .ok_or_else(|| InferenceError::InvalidModel(format!("the {what} row width overflows")))
}

/// Whether the graph is one tree-ensemble node with only Identity/Cast nodes
/// around it: then our own evaluator runs it.
fn is_tree_graph(graph: &proto::GraphProto) -> bool {
    let mut trees = 0;
    for node in &graph.node {
        match (node.domain.as_str(), node.op_type.as_str()) {
            (ML_DOMAIN, "TreeEnsembleClassifier" | "TreeEnsembleRegressor") => trees += 1,
            ("" | "ai.onnx", "Identity" | "Cast") => {}
            _ => return false,
        }
    }
    trees == 1
}

fn find_io<'a>(ios: &'a [OnnxIo], name: &str, what: &str) -> Result<&'a OnnxIo, InferenceError> {
    ios.iter().find(|io| io.name == name).ok_or_else(|| {
        let names: Vec<&str> = ios.iter().map(|io| io.name.as_str()).collect();
        InferenceError::InvalidModel(format!(
            "{what} {name:?} is not a {what} of the ONNX graph (its {what}s: {names:?})"
        ))
    })
}

/// The per-row dims of a declared tensor (the dims after the batch dim when
/// `batched`), with at most one unknown dim filled from `spec.row_elems`.
/// `None` when the graph does not pin them down (several unknown dims).
fn row_dims(
    io: &OnnxIo,
    spec: &IoSpec,
    batched: bool,
    what: &str,
) -> Result<Option<Vec<usize>>, InferenceError> {
    let rest = if batched {
        if io.dims.is_empty() {
            return Err(InferenceError::InvalidModel(format!(
                "{what} {:?} has no batch dimension in the graph, but the config batches it (max_batch_size > 0)",
                io.name
            )));
        }
        &io.dims[1..]
    } else {
        &io.dims[..]
    };
    let unknown = rest.iter().filter(|d| d.is_none()).count();
    let known: Option<usize> = rest
        .iter()
        .flatten()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?));
    let Some(known) = known else {
        return Err(InferenceError::InvalidModel(format!(
            "{what} {:?} has dims {:?} whose product overflows",
            io.name, io.dims
        )));
    };
    let mismatch = |graph: String| {
        InferenceError::InvalidModel(format!(
            "{what} {:?}: the config gives {} elements per {}, the ONNX graph has {graph} (dims {})",
            io.name,
            spec.row_elems,
            if batched { "row" } else { "call" },
            fmt_dims(&io.dims)
        ))
    };
    match unknown {
        0 if known == spec.row_elems => {
            Ok(Some(rest.iter().flatten().map(|&d| d as usize).collect()))
        }
        0 => Err(mismatch(known.to_string())),
        1 if known > 0 && spec.row_elems.is_multiple_of(known) => Ok(Some(
            rest.iter()
                .map(|d| d.map_or(spec.row_elems / known, |d| d as usize))
                .collect(),
        )),
        1 => Err(mismatch(format!("a multiple of {known}"))),
        _ => Ok(None),
    }
}

fn fmt_dims(dims: &[Option<i64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

fn tract_err(context: &str) -> impl Fn(tract_onnx::prelude::TractError) -> InferenceError + '_ {
    move |e| InferenceError::InvalidModel(format!("{context}: {e:#}"))
}

// ---------------------------------------------------------------------------
// tract

/// One tract input: where its values sit in the backend's input row and the
/// tensor shape of one row (or of the whole call when unbatched).
struct TractInput {
    offset: usize,
    row_elems: usize,
    row_dims: Vec<usize>,
    datum: DatumType,
}

struct TractShared {
    plan: Arc<TypedRunnableModel>,
    /// In the plan's input order.
    inputs: Vec<TractInput>,
    /// `row_elems` of each output, in the plan's (= the specs') output order.
    outputs: Vec<usize>,
    batched: bool,
    input_width: usize,
    output_width: usize,
}

impl TractShared {
    fn load(
        bytes: &[u8],
        graph: &proto::GraphProto,
        signature: &OnnxSignature,
        inputs: &[IoSpec],
        outputs: &[IoSpec],
        batched: bool,
    ) -> Result<TractShared, InferenceError> {
        let framework = tract_onnx::onnx();
        // An op tract does not know would only fail deep in its analysis:
        // name it here.
        if let Some(node) = graph
            .node
            .iter()
            .find(|n| !framework.op_register.0.contains_key(&n.op_type))
        {
            return Err(unsupported(node));
        }
        let mut reader = bytes;
        let mut model = framework
            .model_for_read(&mut reader)
            .map_err(tract_err("tract could not read the model"))?;

        // Every configured input exists in the graph; the plan's inputs are
        // the graph's non-initializer inputs in order (= the signature's), and
        // every one must be fed.
        for spec in inputs {
            find_io(&signature.inputs, &spec.name, "input")?;
        }
        let offsets: Vec<usize> = inputs
            .iter()
            .scan(0usize, |at, s| {
                let o = *at;
                *at += s.row_elems;
                Some(o)
            })
            .collect();
        let mut tract_inputs = Vec::with_capacity(signature.inputs.len());
        let outlets = model
            .input_outlets()
            .map_err(tract_err("tract model inputs"))?
            .to_vec();
        if outlets.len() != signature.inputs.len() {
            return Err(InferenceError::InvalidModel(format!(
                "tract sees {} graph inputs, the ONNX graph declares {}",
                outlets.len(),
                signature.inputs.len()
            )));
        }
        for (ix, (io, outlet)) in signature.inputs.iter().zip(&outlets).enumerate() {
            let node_name = &model.node(outlet.node).name;
            if *node_name != io.name {
                return Err(InferenceError::InvalidModel(format!(
                    "tract's input {ix} is {node_name:?}, the ONNX graph's is {:?}",
                    io.name
                )));
            }
            let (spec_ix, spec) = inputs
                .iter()
                .enumerate()
                .find(|(_, s)| s.name == io.name)
                .ok_or_else(|| {
                    InferenceError::InvalidModel(format!(
                        "the ONNX graph's input {:?} is not in the config's inputs",
                        io.name
                    ))
                })?;
            let dims = row_dims(io, spec, batched, "input")?.ok_or_else(|| {
                InferenceError::InvalidModel(format!(
                    "input {:?} has dims {} with more than one unknown dim after the batch dim; inferdb needs them fixed",
                    io.name,
                    fmt_dims(&io.dims)
                ))
            })?;
            let datum = tract_datum(io.data_type).ok_or_else(|| {
                InferenceError::InvalidModel(format!(
                    "input {:?} has type {}, which inferdb cannot feed",
                    io.name, io.data_type
                ))
            })?;
            let mut shape: Vec<TDim> = Vec::with_capacity(dims.len() + 1);
            if batched {
                // The graph's own batch symbol when it names one ("N" in our
                // fixtures), so the declared shapes inside the graph agree.
                let sym = batch_symbol_name(graph, &io.name).unwrap_or_else(|| "N".to_string());
                shape.push(model.symbols.sym(&sym).into());
            }
            shape.extend(dims.iter().map(|&d| TDim::from(d)));
            model
                .set_input_fact(ix, InferenceFact::dt_shape(datum, shape))
                .map_err(tract_err("setting an input fact"))?;
            tract_inputs.push(TractInput {
                offset: offsets[spec_ix],
                row_elems: spec.row_elems,
                row_dims: dims,
                datum,
            });
        }
        // Every requested output exists in the graph; the plan computes only
        // those, in the specs' order.
        for spec in outputs {
            let io = find_io(&signature.outputs, &spec.name, "output")?;
            row_dims(io, spec, batched, "output")?;
        }
        model
            .select_outputs_by_name(outputs.iter().map(|s| s.name.as_str()))
            .map_err(tract_err("selecting the outputs"))?;
        for ix in 0..outputs.len() {
            // Let tract infer the outputs rather than trust declared shapes
            // whose batch symbol may differ from the inputs'.
            model
                .set_output_fact(ix, InferenceFact::default())
                .map_err(tract_err("resetting an output fact"))?;
        }
        let typed = model
            .into_optimized()
            .map_err(tract_err("tract could not analyse and optimize the model"))?;
        // Check the outputs' per-row sizes against what tract inferred.
        for (ix, spec) in outputs.iter().enumerate() {
            let fact = typed
                .output_fact(ix)
                .map_err(tract_err("reading an output fact"))?;
            let dims = fact.shape.dims();
            let rest = if batched { dims.get(1..) } else { Some(dims) };
            let concrete: Option<Vec<usize>> = rest.and_then(|r| {
                r.iter()
                    .map(|d| d.to_i64().ok().and_then(|d| usize::try_from(d).ok()))
                    .collect()
            });
            if let Some(c) = concrete {
                let elems: usize = c.iter().product();
                if elems != spec.row_elems {
                    return Err(InferenceError::InvalidModel(format!(
                        "output {:?}: the config gives {} elements per {}, the model computes {elems} (shape {:?})",
                        spec.name,
                        spec.row_elems,
                        if batched { "row" } else { "call" },
                        fact.shape
                    )));
                }
            }
        }
        let plan = typed
            .into_runnable()
            .map_err(tract_err("tract could not plan the model"))?;
        plan.spawn()
            .map_err(tract_err("tract could not start the model"))?;
        Ok(TractShared {
            plan,
            inputs: tract_inputs,
            outputs: outputs.iter().map(|s| s.row_elems).collect(),
            batched,
            input_width: total_width(inputs, "input")?,
            output_width: total_width(outputs, "output")?,
        })
    }
}

fn unsupported(node: &proto::NodeProto) -> InferenceError {
    InferenceError::UnsupportedOp {
        domain: node.domain.clone(),
        op_type: node.op_type.clone(),
        node: node.name.clone(),
    }
}

/// The `dim_param` of the input's first dim, when the graph names it.
fn batch_symbol_name(graph: &proto::GraphProto, input: &str) -> Option<String> {
    let vi = graph.input.iter().find(|vi| vi.name == input)?;
    let Some(proto::type_proto::Value::TensorType(t)) = vi.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    match t.shape.as_ref()?.dim.first()?.value.as_ref()? {
        proto::tensor_shape_proto::dimension::Value::DimParam(p) if !p.is_empty() => {
            Some(p.clone())
        }
        _ => None,
    }
}

fn tract_datum(t: DataType) -> Option<DatumType> {
    Some(match t {
        DataType::Fp32 => f32::datum_type(),
        DataType::Fp64 => f64::datum_type(),
        DataType::Int64 => i64::datum_type(),
        DataType::Int32 => i32::datum_type(),
        DataType::Int16 => i16::datum_type(),
        DataType::Int8 => i8::datum_type(),
        DataType::Uint8 => u8::datum_type(),
        DataType::Uint16 => u16::datum_type(),
        DataType::Uint32 => u32::datum_type(),
        DataType::Uint64 => u64::datum_type(),
        DataType::Bool => bool::datum_type(),
        DataType::Fp16 | DataType::Bytes => return None,
    })
}

struct TractInstance {
    shared: Arc<TractShared>,
    /// Spawned on the first batch (spawning can fail; `instance()` cannot).
    state: Option<TypedSimpleState>,
    /// Per-input gather buffers, used when there are several inputs.
    gathered: Vec<Vec<f32>>,
}

fn run_err(e: tract_onnx::prelude::TractError) -> InferenceError {
    InferenceError::Internal(format!("tract: {e:#}"))
}

impl TractInstance {
    /// Runs `rows` rows (1 when unbatched) starting at `input`.
    fn run_rows(
        &mut self,
        input: &[f32],
        rows: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), InferenceError> {
        let shared = &*self.shared;
        let width = shared.input_width;
        let mut feeds: TVec<TValue> = TVec::new();
        for (j, inp) in shared.inputs.iter().enumerate() {
            let mut shape: TVec<usize> = TVec::new();
            if shared.batched {
                shape.push(rows);
            }
            shape.extend(inp.row_dims.iter().copied());
            let data: &[f32] = if shared.inputs.len() == 1 && inp.row_elems == width {
                input
            } else {
                let buf = &mut self.gathered[j];
                buf.clear();
                for r in 0..rows {
                    let at = r * width + inp.offset;
                    buf.extend_from_slice(&input[at..at + inp.row_elems]);
                }
                buf
            };
            let t = TractTensor::from_shape(&shape, data).map_err(run_err)?;
            let t = if inp.datum == f32::datum_type() {
                t
            } else {
                t.cast_to_dt(inp.datum).map_err(run_err)?.into_owned()
            };
            feeds.push(t.into());
        }
        let state = match &mut self.state {
            Some(s) => s,
            None => self.state.insert(shared.plan.spawn().map_err(run_err)?),
        };
        let results = state.run(feeds).map_err(run_err)?;
        if results.len() != shared.outputs.len() {
            return Err(InferenceError::Internal(format!(
                "tract returned {} outputs, expected {}",
                results.len(),
                shared.outputs.len()
            )));
        }
        // Small vectors: no heap allocation for up to four outputs.
        let mut views: TVec<_> = TVec::new();
        for (value, &w) in results.iter().zip(&shared.outputs) {
            let t: &TractTensor = value;
            let t = t.cast_to::<f32>().map_err(run_err)?;
            if t.len() != rows * w {
                return Err(InferenceError::Internal(format!(
                    "tract returned an output of shape {:?} ({} values), expected {rows} x {w}",
                    t.shape(),
                    t.len()
                )));
            }
            views.push(t);
        }
        if views.len() == 1 {
            let v = views[0].try_as_plain_ram().map_err(run_err)?;
            out.extend_from_slice(v.as_slice::<f32>().map_err(run_err)?);
            return Ok(());
        }
        let mut plain: TVec<_> = TVec::new();
        for v in &views {
            plain.push(v.try_as_plain_ram().map_err(run_err)?);
        }
        let slices: TVec<&[f32]> = plain
            .iter()
            .map(|v| v.as_slice::<f32>())
            .collect::<Result<_, _>>()
            .map_err(run_err)?;
        for r in 0..rows {
            for (s, &w) in slices.iter().zip(&shared.outputs) {
                out.extend_from_slice(&s[r * w..(r + 1) * w]);
            }
        }
        Ok(())
    }
}

fn check_input(input: &[f32], n: usize, width: usize) -> Result<(), InferenceError> {
    let expected = n.saturating_mul(width);
    if input.len() != expected {
        return Err(InferenceError::InputShape {
            n,
            features: width,
            expected,
            got: input.len(),
        });
    }
    Ok(())
}

impl Backend for TractInstance {
    fn run(&mut self, input: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        let width = self.shared.input_width;
        check_input(input, n, width)?;
        if n == 0 {
            return Ok(());
        }
        out.reserve(n.saturating_mul(self.shared.output_width));
        if self.shared.batched {
            self.run_rows(input, n, out)
        } else {
            // An unbatched model takes one whole tensor per call: run each
            // "row" the batcher hands us on its own.
            for r in 0..n {
                self.run_rows(&input[r * width..(r + 1) * width], 1, out)?;
            }
            Ok(())
        }
    }

    fn input_width(&self) -> usize {
        self.shared.input_width
    }

    fn output_width(&self) -> usize {
        self.shared.output_width
    }
}

// ---------------------------------------------------------------------------
// Dense networks on our own kernel

struct DenseShared {
    net: DenseNet,
    output_width: usize,
}

impl DenseShared {
    /// `Ok(None)` when the graph is not one [`DenseNet`] runs (tract then
    /// runs it); an error when the config's inputs/outputs do not fit the
    /// graph's declarations (the same errors tract's path gives).
    fn load(
        graph: &proto::GraphProto,
        signature: &OnnxSignature,
        inputs: &[IoSpec],
        outputs: &[IoSpec],
        batched: bool,
    ) -> Result<Option<DenseShared>, InferenceError> {
        let [spec] = inputs else {
            return Ok(None);
        };
        if !batched {
            return Ok(None);
        }
        let io = find_io(&signature.inputs, &spec.name, "input")?;
        if row_dims(io, spec, batched, "input")?.is_none_or(|d| d.len() != 1) {
            return Ok(None);
        }
        for out in outputs {
            let io = find_io(&signature.outputs, &out.name, "output")?;
            row_dims(io, out, batched, "output")?;
        }
        let wanted: Vec<(&str, usize)> = outputs
            .iter()
            .map(|s| (s.name.as_str(), s.row_elems))
            .collect();
        match DenseNet::compile(graph, &spec.name, spec.row_elems, &wanted) {
            Ok(net) => Ok(Some(DenseShared {
                net,
                output_width: total_width(outputs, "output")?,
            })),
            Err(why) => {
                tracing::debug!(graph = %graph.name, %why, "not for the dense engine; tract runs it");
                Ok(None)
            }
        }
    }
}

struct DenseInstance {
    shared: Arc<DenseShared>,
    bufs: Vec<Vec<f32>>,
}

impl Backend for DenseInstance {
    fn run(&mut self, input: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        let shared = &*self.shared;
        check_input(input, n, shared.net.input_width())?;
        out.reserve(n.saturating_mul(shared.output_width));
        shared.net.run(input, n, &mut self.bufs, out)
    }

    fn input_width(&self) -> usize {
        self.shared.net.input_width()
    }

    fn output_width(&self) -> usize {
        self.shared.output_width
    }
}

// ---------------------------------------------------------------------------
// Tree ensembles

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TreeOutput {
    /// The classifier's label (as f32; the index for string labels).
    Label,
    /// Per-class scores or per-target values.
    Scores,
}

struct TreeShared {
    ensemble: TreeEnsemble,
    /// Ensemble rows per backend row: 1 for a batched `[N, F]` model; for an
    /// unbatched one, the rows of its whole `[R, F]` tensor.
    sub_rows: usize,
    outputs: Vec<TreeOutput>,
    input_width: usize,
    output_width: usize,
}

impl TreeShared {
    fn load(
        bytes: &[u8],
        graph: &proto::GraphProto,
        signature: &OnnxSignature,
        inputs: &[IoSpec],
        outputs: &[IoSpec],
        batched: bool,
    ) -> Result<TreeShared, InferenceError> {
        let ensemble = TreeEnsemble::from_onnx_bytes(bytes)?;
        let [spec] = inputs else {
            return Err(InferenceError::InvalidModel(format!(
                "a tree ensemble has one input, the config gives {}",
                inputs.len()
            )));
        };
        let io = find_io(&signature.inputs, &spec.name, "input")?;
        row_dims(io, spec, batched, "input")?;
        let f = ensemble.n_features();
        if !spec.row_elems.is_multiple_of(f) || (batched && spec.row_elems != f) {
            return Err(InferenceError::InvalidModel(format!(
                "input {:?}: the config gives {} elements per {}, the tree ensemble reads {f} features per row",
                spec.name,
                spec.row_elems,
                if batched { "row" } else { "call" },
            )));
        }
        let sub_rows = spec.row_elems / f;

        // The tree node's outputs, and the graph outputs reached from them
        // through Identity/Cast.
        let tree = graph
            .node
            .iter()
            .find(|n| n.domain == ML_DOMAIN)
            .ok_or_else(|| InferenceError::InvalidModel("no tree-ensemble node".into()))?;
        let source = |name: &str| -> Option<TreeOutput> {
            let mut cur = name.to_string();
            for _ in 0..=graph.node.len() {
                if let Some(ix) = tree.output.iter().position(|o| *o == cur) {
                    return match (ensemble.kind(), ix) {
                        (TreeEnsembleKind::Classifier, 0) => Some(TreeOutput::Label),
                        (TreeEnsembleKind::Classifier, 1) | (TreeEnsembleKind::Regressor, 0) => {
                            Some(TreeOutput::Scores)
                        }
                        _ => None,
                    };
                }
                let prev = graph
                    .node
                    .iter()
                    .find(|n| n.domain != ML_DOMAIN && n.output.first() == Some(&cur))?;
                cur = prev.input.first()?.clone();
            }
            None
        };
        let mut kinds = Vec::with_capacity(outputs.len());
        for spec in outputs {
            let io = find_io(&signature.outputs, &spec.name, "output")?;
            row_dims(io, spec, batched, "output")?;
            let kind = source(&spec.name).ok_or_else(|| {
                InferenceError::InvalidModel(format!(
                    "output {:?} is not computed from the tree ensemble's label or scores",
                    spec.name
                ))
            })?;
            let per_sub_row = match kind {
                TreeOutput::Label => 1,
                TreeOutput::Scores => ensemble.n_outputs(),
            };
            if spec.row_elems != sub_rows * per_sub_row {
                return Err(InferenceError::InvalidModel(format!(
                    "output {:?}: the config gives {} elements per {}, the tree ensemble computes {}",
                    spec.name,
                    spec.row_elems,
                    if batched { "row" } else { "call" },
                    sub_rows * per_sub_row
                )));
            }
            kinds.push(kind);
        }
        Ok(TreeShared {
            ensemble,
            sub_rows,
            outputs: kinds,
            input_width: spec.row_elems,
            output_width: total_width(outputs, "output")?,
        })
    }
}

struct TreeInstance {
    shared: Arc<TreeShared>,
    labels: Vec<i64>,
    scores: Vec<f32>,
}

impl Backend for TreeInstance {
    fn run(&mut self, input: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        let shared = &*self.shared;
        check_input(input, n, shared.input_width)?;
        let rows = n.saturating_mul(shared.sub_rows);
        if shared.outputs == [TreeOutput::Scores] && out.is_empty() {
            // Scores only (a regressor, or probabilities alone): straight into
            // the caller's buffer.
            return shared.ensemble.predict(input, rows, &mut self.labels, out);
        }
        shared
            .ensemble
            .predict(input, rows, &mut self.labels, &mut self.scores)?;
        let c = shared.ensemble.n_outputs();
        let k = shared.sub_rows;
        out.reserve(n.saturating_mul(shared.output_width));
        for r in 0..n {
            for kind in &shared.outputs {
                match kind {
                    TreeOutput::Label => {
                        out.extend(self.labels[r * k..(r + 1) * k].iter().map(|&l| l as f32))
                    }
                    TreeOutput::Scores => {
                        out.extend_from_slice(&self.scores[r * k * c..(r + 1) * k * c])
                    }
                }
            }
        }
        Ok(())
    }

    fn input_width(&self) -> usize {
        self.shared.input_width
    }

    fn output_width(&self) -> usize {
        self.shared.output_width
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(dims: &[Option<i64>]) -> OnnxIo {
        OnnxIo {
            name: "x".into(),
            data_type: DataType::Fp32,
            dims: dims.to_vec(),
        }
    }

    #[test]
    fn row_dims_fill_one_unknown() {
        let spec = IoSpec::new("x", 256);
        assert_eq!(
            row_dims(&io(&[None, Some(256)]), &spec, true, "input").unwrap(),
            Some(vec![256])
        );
        assert_eq!(
            row_dims(&io(&[None, None]), &spec, true, "input").unwrap(),
            Some(vec![256])
        );
        assert_eq!(
            row_dims(&io(&[None, Some(256)]), &spec, false, "input").unwrap(),
            Some(vec![1, 256])
        );
        assert_eq!(
            row_dims(&io(&[None, None, None]), &spec, true, "input").unwrap(),
            None
        );
        let err = row_dims(&io(&[None, Some(255)]), &spec, true, "input").unwrap_err();
        assert!(
            err.to_string().contains("256") && err.to_string().contains("255"),
            "{err}"
        );
        assert!(row_dims(&io(&[]), &spec, true, "input").is_err());
    }

    #[test]
    fn tree_graph_detection() {
        let node = |domain: &str, op: &str| proto::NodeProto {
            domain: domain.into(),
            op_type: op.into(),
            ..Default::default()
        };
        let mut g = proto::GraphProto {
            node: vec![
                node(ML_DOMAIN, "TreeEnsembleClassifier"),
                node("", "Identity"),
            ],
            ..Default::default()
        };
        assert!(is_tree_graph(&g));
        g.node.push(node("", "Softmax"));
        assert!(!is_tree_graph(&g));
        g.node = vec![node("", "Identity")];
        assert!(!is_tree_graph(&g));
    }
}
