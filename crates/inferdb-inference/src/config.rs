//! A model's `config.pbtxt`: Triton's model configuration, read into the
//! typed [`ModelConfig`] that the rest of inferdb uses.
//!
//! Decision: we do not write a protobuf text parser. `proto/model_config.proto`
//! is our own subset of Triton's `inference.ModelConfig` schema (Triton's
//! names and field numbers); build.rs compiles it with prost-build and writes
//! its file descriptor set, and [prost-reflect](prost_reflect) parses the
//! protobuf text format against that descriptor. Data flow:
//!
//! text → [`DynamicMessage`] (syntax errors and fields missing from our schema
//! fail here, with line and column and the field's name) → walk of the fields
//! that are set against an allow-list of the paths inferdb implements (any
//! other set field, e.g. `optimization` or `dynamic_batching.priority_levels`,
//! is refused by its dotted path, so a field added to the schema later is
//! refused until someone implements it) → prost type [`proto::ModelConfig`] →
//! validation and conversion into [`ModelConfig`], each error naming the field.
//!
//! The way back, [`ModelConfig::to_json`], builds a [`proto::ModelConfig`] and
//! prints it with prost-reflect's proto3 JSON mapping, as Triton's
//! `GET /v2/models/{model}/config` does.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use miette::Diagnostic;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions, Value};

use crate::error::InferenceError;

/// Types generated from `proto/model_config.proto` (package `inference`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

/// The file descriptor set of `proto/model_config.proto`, written by build.rs.
const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/model_config.bin"));

/// The largest `config.pbtxt` we read; real configs are a few KiB.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// The model file a version directory holds when the config names none.
pub const DEFAULT_MODEL_FILENAME: &str = "model.onnx";

/// The descriptor of `inference.ModelConfig`, decoded once.
static MODEL_CONFIG_DESCRIPTOR: LazyLock<Option<MessageDescriptor>> = LazyLock::new(|| {
    DescriptorPool::decode(DESCRIPTOR_SET)
        .ok()
        .and_then(|pool| pool.get_message_by_name("inference.ModelConfig"))
});

/// The field paths inferdb implements; any other field that is set is refused.
/// A message field listed here is walked into; a scalar, repeated scalar or map
/// field listed here is accepted whole.
const SUPPORTED_FIELDS: &[&str] = &[
    "name",
    "platform",
    "backend",
    "version_policy",
    "version_policy.latest",
    "version_policy.latest.num_versions",
    "version_policy.all",
    "version_policy.specific",
    "version_policy.specific.versions",
    "max_batch_size",
    "input",
    "input.name",
    "input.data_type",
    "input.dims",
    "input.reshape",
    "input.reshape.shape",
    "input.optional",
    "output",
    "output.name",
    "output.data_type",
    "output.dims",
    "output.reshape",
    "output.reshape.shape",
    "instance_group",
    "instance_group.name",
    "instance_group.kind",
    "instance_group.count",
    // Refused with a better message than "not supported" during validation.
    "instance_group.gpus",
    "default_model_filename",
    "dynamic_batching",
    "dynamic_batching.preferred_batch_size",
    "dynamic_batching.max_queue_delay_microseconds",
    // Our batcher is FIFO, so responses keep the order of requests anyway.
    "dynamic_batching.preserve_ordering",
    "dynamic_batching.default_queue_policy",
    // REJECT is accepted; DELAY is refused during validation.
    "dynamic_batching.default_queue_policy.timeout_action",
    "dynamic_batching.default_queue_policy.default_timeout_microseconds",
    "dynamic_batching.default_queue_policy.allow_timeout_override",
    "dynamic_batching.default_queue_policy.max_queue_size",
    "ensemble_scheduling",
    "ensemble_scheduling.step",
    "ensemble_scheduling.step.model_name",
    "ensemble_scheduling.step.model_version",
    "ensemble_scheduling.step.input_map",
    "ensemble_scheduling.step.output_map",
];

/// What runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    /// An ONNX model (`platform: "onnxruntime_onnx"` or
    /// `backend: "onnxruntime"`), run by inferdb's own ONNX executor.
    Onnx,
    /// A pipeline of other models (`platform: "ensemble"`).
    Ensemble,
}

impl Platform {
    /// Triton's `platform` string.
    pub fn triton_platform(self) -> &'static str {
        match self {
            Platform::Onnx => "onnxruntime_onnx",
            Platform::Ensemble => "ensemble",
        }
    }

    /// Triton's `backend` string (empty for ensembles, as Triton prints it).
    pub fn triton_backend(self) -> &'static str {
        match self {
            Platform::Onnx => "onnxruntime",
            Platform::Ensemble => "",
        }
    }
}

/// One input or output tensor of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorConfig {
    /// The tensor's name.
    pub name: String,
    /// Its element type (always one that [`crate::DataType::is_supported`]).
    pub data_type: crate::DataType,
    /// The shape as written, without the batch dimension; `-1` is variable.
    pub dims: Vec<i64>,
    /// The shape the model itself sees, when it differs from `dims`.
    pub reshape: Option<Vec<i64>>,
    /// Whether a request may leave this input out (always false for outputs).
    pub optional: bool,
}

/// The dynamic batcher's settings (`dynamic_batching { ... }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicBatching {
    /// Batch sizes to run as soon as they are reached.
    pub preferred_batch_sizes: Vec<u32>,
    /// How long the first request of a batch may wait for more.
    pub max_queue_delay: Duration,
    /// Time a request may wait in the queue before it is rejected (`None`:
    /// no limit).
    pub default_timeout: Option<Duration>,
    /// Whether a request may ask for a shorter timeout than the default.
    pub allow_timeout_override: bool,
    /// The most requests that may wait (`None`: Triton's `0`, unbounded).
    pub max_queue_size: Option<usize>,
}

/// Which of the versions found in the model's directory are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` highest-numbered versions (the default is `Latest(1)`).
    Latest(u32),
    /// Every version.
    All,
    /// Exactly these versions (those of them that exist).
    Specific(Vec<i64>),
}

/// One step of an ensemble: a model and how its tensors map onto the
/// ensemble's tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsembleStep {
    /// The model this step runs.
    pub model_name: String,
    /// The version it runs; `-1` is the latest.
    pub model_version: i64,
    /// `(step model's input name, ensemble tensor name)`, sorted.
    pub input_map: Vec<(String, String)>,
    /// `(step model's output name, ensemble tensor name)`, sorted.
    pub output_map: Vec<(String, String)>,
}

/// A model's configuration, validated: everything in it is something inferdb
/// implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// The model's name (its directory's name).
    pub name: String,
    /// What runs it.
    pub platform: Platform,
    /// The largest batch a request or a formed batch may have; `0` means the
    /// model does not batch and `dims` are the full shapes.
    pub max_batch_size: u32,
    /// The model's inputs (may be empty until auto-complete fills them).
    pub inputs: Vec<TensorConfig>,
    /// The model's outputs (may be empty until auto-complete fills them).
    pub outputs: Vec<TensorConfig>,
    /// The dynamic batcher's settings, when it is enabled.
    pub dynamic_batching: Option<DynamicBatching>,
    /// Instances (execution threads) of the model: the sum of the
    /// `instance_group` counts, 1 by default.
    pub instance_count: u32,
    /// Which versions are served.
    pub version_policy: VersionPolicy,
    /// The model file inside each version directory (`model.onnx` by default).
    pub default_model_filename: String,
    /// The steps of an ensemble (empty for other models).
    pub ensemble_steps: Vec<EnsembleStep>,
}

impl ModelConfig {
    /// Parses and validates a `config.pbtxt` of the model directory
    /// `dir_name`. Every error is [`InferenceError::Config`] naming the field
    /// at fault (and, for syntax errors, the line and column).
    pub fn parse(text: &str, dir_name: &str) -> Result<ModelConfig, InferenceError> {
        let err = |message: String| InferenceError::Config {
            model: dir_name.to_string(),
            message,
        };
        if text.len() > MAX_CONFIG_BYTES {
            return Err(err(format!(
                "config.pbtxt is {} bytes, more than the {MAX_CONFIG_BYTES} inferdb reads",
                text.len()
            )));
        }
        let desc = descriptor().map_err(err)?;
        let (normalized, inserted) = insert_list_colons(text);
        let dynamic = DynamicMessage::parse_text_format(desc, &normalized).map_err(|e| {
            let offset = e
                .labels()
                .and_then(|mut labels| labels.next())
                .map_or(normalized.len(), |label| label.offset());
            // Back to an offset in `text`: skip the colons we inserted.
            let offset = offset - inserted.iter().filter(|&&at| at < offset).count();
            let (line, column) = line_column(text, offset);
            err(format!(
                "config.pbtxt line {line}, column {column}: {e} \
                 (inferdb reads a subset of Triton's inference.ModelConfig)"
            ))
        })?;
        let mut unsupported = Vec::new();
        collect_unsupported(&dynamic, "", &mut unsupported);
        if let Some(first) = unsupported.first() {
            let mut message = format!("field `{first}` is not supported by inferdb");
            if unsupported.len() > 1 {
                let rest: Vec<String> = unsupported[1..].iter().map(|p| format!("`{p}`")).collect();
                message.push_str(&format!(" (nor are {})", rest.join(", ")));
            }
            return Err(err(message));
        }
        let raw: proto::ModelConfig = dynamic.transcode_to().map_err(|e| {
            err(format!(
                "internal: transcoding the parsed config failed: {e}"
            ))
        })?;
        from_proto(raw, dir_name).map_err(err)
    }

    /// The configuration of a model directory without `config.pbtxt`: the
    /// name, ONNX, and defaults everywhere (auto-complete fills the inputs and
    /// outputs from the model file later).
    pub fn minimal(name: &str) -> ModelConfig {
        ModelConfig {
            name: name.to_string(),
            platform: Platform::Onnx,
            max_batch_size: 0,
            inputs: Vec::new(),
            outputs: Vec::new(),
            dynamic_batching: None,
            instance_count: 1,
            version_policy: VersionPolicy::Latest(1),
            default_model_filename: DEFAULT_MODEL_FILENAME.to_string(),
            ensemble_steps: Vec::new(),
        }
    }

    /// The versions the policy serves out of `available`, ascending.
    pub fn version_selected(&self, available: &[i64]) -> Vec<i64> {
        let mut versions = available.to_vec();
        versions.sort_unstable();
        versions.dedup();
        match &self.version_policy {
            VersionPolicy::Latest(n) => {
                let keep = usize::try_from(*n)
                    .unwrap_or(usize::MAX)
                    .min(versions.len());
                versions.split_off(versions.len() - keep)
            }
            VersionPolicy::All => versions,
            VersionPolicy::Specific(wanted) => versions
                .into_iter()
                .filter(|v| wanted.contains(v))
                .collect(),
        }
    }

    /// This configuration as Triton's protobuf message (what the gRPC
    /// `ModelConfig` call answers). Fields inferdb does not implement are left
    /// at their defaults; one CPU instance group carries `instance_count`.
    pub fn to_proto(&self) -> proto::ModelConfig {
        let tensor_dims = |t: &TensorConfig| {
            (
                t.dims.clone(),
                t.reshape.as_ref().map(|shape| proto::ModelTensorReshape {
                    shape: shape.clone(),
                }),
                proto::DataType::from_str_name(&t.data_type.triton_name())
                    .unwrap_or(proto::DataType::TypeInvalid) as i32,
            )
        };
        let input = self
            .inputs
            .iter()
            .map(|t| {
                let (dims, reshape, data_type) = tensor_dims(t);
                proto::ModelInput {
                    name: t.name.clone(),
                    data_type,
                    dims,
                    reshape,
                    optional: t.optional,
                    ..Default::default()
                }
            })
            .collect();
        let output = self
            .outputs
            .iter()
            .map(|t| {
                let (dims, reshape, data_type) = tensor_dims(t);
                proto::ModelOutput {
                    name: t.name.clone(),
                    data_type,
                    dims,
                    reshape,
                    ..Default::default()
                }
            })
            .collect();
        let policy_choice = match &self.version_policy {
            VersionPolicy::Latest(n) => proto::model_version_policy::PolicyChoice::Latest(
                proto::model_version_policy::Latest { num_versions: *n },
            ),
            VersionPolicy::All => {
                proto::model_version_policy::PolicyChoice::All(proto::model_version_policy::All {})
            }
            VersionPolicy::Specific(versions) => {
                proto::model_version_policy::PolicyChoice::Specific(
                    proto::model_version_policy::Specific {
                        versions: versions.clone(),
                    },
                )
            }
        };
        let scheduling_choice = if self.platform == Platform::Ensemble {
            Some(proto::model_config::SchedulingChoice::EnsembleScheduling(
                proto::ModelEnsembling {
                    step: self
                        .ensemble_steps
                        .iter()
                        .map(|s| proto::model_ensembling::Step {
                            model_name: s.model_name.clone(),
                            model_version: s.model_version,
                            input_map: s.input_map.iter().cloned().collect(),
                            output_map: s.output_map.iter().cloned().collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            ))
        } else {
            self.dynamic_batching.as_ref().map(|d| {
                proto::model_config::SchedulingChoice::DynamicBatching(
                    proto::ModelDynamicBatching {
                        preferred_batch_size: d
                            .preferred_batch_sizes
                            .iter()
                            .map(|&b| i32::try_from(b).unwrap_or(i32::MAX))
                            .collect(),
                        max_queue_delay_microseconds: duration_micros(d.max_queue_delay),
                        default_queue_policy: Some(proto::ModelQueuePolicy {
                            timeout_action: proto::model_queue_policy::TimeoutAction::Reject as i32,
                            default_timeout_microseconds: d
                                .default_timeout
                                .map_or(0, duration_micros),
                            allow_timeout_override: d.allow_timeout_override,
                            max_queue_size: d
                                .max_queue_size
                                .map_or(0, |m| u32::try_from(m).unwrap_or(u32::MAX)),
                        }),
                        ..Default::default()
                    },
                )
            })
        };
        let instance_group = match self.platform {
            Platform::Ensemble => Vec::new(),
            Platform::Onnx => vec![proto::ModelInstanceGroup {
                name: self.name.clone(),
                kind: proto::model_instance_group::Kind::Cpu as i32,
                count: i32::try_from(self.instance_count).unwrap_or(i32::MAX),
                ..Default::default()
            }],
        };
        proto::ModelConfig {
            name: self.name.clone(),
            platform: self.platform.triton_platform().to_string(),
            backend: self.platform.triton_backend().to_string(),
            version_policy: Some(proto::ModelVersionPolicy {
                policy_choice: Some(policy_choice),
            }),
            max_batch_size: i32::try_from(self.max_batch_size).unwrap_or(i32::MAX),
            input,
            output,
            instance_group,
            default_model_filename: self.default_model_filename.clone(),
            scheduling_choice,
            ..Default::default()
        }
    }

    /// Triton's answer to `GET /v2/models/{model}/config`: the proto3 JSON
    /// mapping of [`ModelConfig::to_proto`] with the proto field names
    /// (`max_batch_size`), enum names (`"TYPE_FP32"`), 64-bit integers as
    /// strings (`"dims": ["256"]`) and default-valued fields printed.
    pub fn to_json(&self) -> serde_json::Value {
        let Ok(desc) = descriptor() else {
            return serde_json::Value::Null;
        };
        let mut dynamic = DynamicMessage::new(desc);
        if dynamic.transcode_from(&self.to_proto()).is_err() {
            return serde_json::Value::Null;
        }
        let options = SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(true)
            .skip_default_fields(false);
        dynamic
            .serialize_with_options(serde_json::value::Serializer, &options)
            .unwrap_or(serde_json::Value::Null)
    }

    /// This configuration in the protobuf text format of `config.pbtxt`
    /// (set fields only); [`ModelConfig::parse`] reads it back to an equal
    /// config.
    pub fn to_pbtxt(&self) -> String {
        let Ok(desc) = descriptor() else {
            return String::new();
        };
        let mut dynamic = DynamicMessage::new(desc);
        if dynamic.transcode_from(&self.to_proto()).is_err() {
            return String::new();
        }
        dynamic.to_text_format_with_options(
            &prost_reflect::text_format::FormatOptions::new().pretty(true),
        )
    }
}

fn descriptor() -> Result<MessageDescriptor, String> {
    MODEL_CONFIG_DESCRIPTOR
        .clone()
        .ok_or_else(|| "internal: the compiled model_config descriptor does not decode".to_string())
}

fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Inserts the optional `:` between a field name and a list (`input [ ... ]`
/// → `input: [ ... ]`), which prost-reflect 0.16's text parser requires but
/// the text format spec (`MessageField = FieldName [":"] (MessageValue |
/// MessageList)`) and Triton's configs omit. A colon before a list is always
/// valid, so this changes no meaning. It is a token scan, not a parser: it
/// skips strings and `#` comments and inserts after an identifier that is
/// followed by `[` and not preceded by `:` (a value is always after `:`).
/// Returns the text and the offsets in it of the inserted colons.
fn insert_list_colons(text: &str) -> (std::borrow::Cow<'_, str>, Vec<usize>) {
    let bytes = text.as_bytes();
    let mut inserts = Vec::new(); // offsets in `text` to insert after
    let mut previous = 0u8; // last significant byte outside strings/comments
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                previous = b;
            }
            b if b.is_ascii_whitespace() => i += 1,
            b if b.is_ascii_alphanumeric() || b == b'_' => {
                let starts_number = b.is_ascii_digit();
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || (starts_number && bytes[i] == b'.'))
                {
                    i += 1;
                }
                if !starts_number && previous != b':' && previous != b'.' {
                    let end = i;
                    let mut j = i;
                    while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if bytes.get(j) == Some(&b'[') {
                        inserts.push(end);
                    }
                }
                previous = b'a';
            }
            _ => {
                previous = b;
                i += 1;
            }
        }
    }
    if inserts.is_empty() {
        return (std::borrow::Cow::Borrowed(text), inserts);
    }
    let mut out = String::with_capacity(text.len() + inserts.len());
    let mut positions = Vec::with_capacity(inserts.len());
    let mut from = 0;
    for &at in &inserts {
        out.push_str(text.get(from..at).unwrap_or_default());
        positions.push(out.len());
        out.push(':');
        from = at;
    }
    out.push_str(text.get(from..).unwrap_or_default());
    (std::borrow::Cow::Owned(out), positions)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Appends the dotted path of every field set in `message` (under `prefix`)
/// that is not in [`SUPPORTED_FIELDS`], once each, in field order.
fn collect_unsupported(message: &DynamicMessage, prefix: &str, out: &mut Vec<String>) {
    for (field, value) in message.fields() {
        let path = if prefix.is_empty() {
            field.name().to_string()
        } else {
            format!("{prefix}.{}", field.name())
        };
        if !SUPPORTED_FIELDS.contains(&path.as_str()) {
            if !out.contains(&path) {
                out.push(path);
            }
            continue;
        }
        match value {
            Value::Message(inner) => collect_unsupported(inner, &path, out),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(inner) = item {
                        collect_unsupported(inner, &path, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Validates the parsed message and converts it; errors name the field.
fn from_proto(raw: proto::ModelConfig, dir_name: &str) -> Result<ModelConfig, String> {
    if !raw.name.is_empty() && raw.name != dir_name {
        return Err(format!(
            "`name`: \"{}\" differs from the model's directory name \"{dir_name}\"",
            raw.name
        ));
    }
    let platform = platform(&raw.platform, &raw.backend)?;
    let max_batch_size = u32::try_from(raw.max_batch_size)
        .map_err(|_| format!("`max_batch_size`: {} is negative", raw.max_batch_size))?;

    let inputs = raw
        .input
        .iter()
        .map(|i| {
            tensor(
                "input",
                &i.name,
                i.data_type,
                &i.dims,
                i.reshape.as_ref(),
                i.optional,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = raw
        .output
        .iter()
        .map(|o| {
            tensor(
                "output",
                &o.name,
                o.data_type,
                &o.dims,
                o.reshape.as_ref(),
                false,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    unique_names("input", &inputs)?;
    unique_names("output", &outputs)?;

    let instance_count = instance_count(&raw.instance_group)?;
    let version_policy = version_policy(raw.version_policy.as_ref())?;
    let default_model_filename = model_filename(&raw.default_model_filename)?;

    use proto::model_config::SchedulingChoice;
    let (dynamic_batching, ensemble) = match raw.scheduling_choice {
        None => (None, None),
        Some(SchedulingChoice::DynamicBatching(d)) => {
            (Some(dynamic_batching(&d, max_batch_size)?), None)
        }
        Some(SchedulingChoice::EnsembleScheduling(e)) => (None, Some(e)),
        // Refused by the allow-list already; kept for exhaustiveness.
        Some(SchedulingChoice::SequenceBatching(_)) => {
            return Err("field `sequence_batching` is not supported by inferdb".into());
        }
    };
    let ensemble_steps = match (platform, ensemble) {
        (Platform::Ensemble, Some(e)) => ensemble_steps(&e, &inputs, &outputs)?,
        (Platform::Ensemble, None) => {
            return Err(
                "`ensemble_scheduling`: platform \"ensemble\" needs ensemble_scheduling with at least one step"
                    .into(),
            );
        }
        (Platform::Onnx, Some(_)) => {
            return Err("`ensemble_scheduling` is only valid with platform \"ensemble\"".into());
        }
        (Platform::Onnx, None) => Vec::new(),
    };

    Ok(ModelConfig {
        name: dir_name.to_string(),
        platform,
        max_batch_size,
        inputs,
        outputs,
        dynamic_batching,
        instance_count,
        version_policy,
        default_model_filename,
        ensemble_steps,
    })
}

fn platform(platform: &str, backend: &str) -> Result<Platform, String> {
    const WHAT_RUNS: &str = "inferdb runs onnxruntime_onnx and ensemble models";
    match (platform, backend) {
        // Neither given: Triton infers the backend from the model file; ours
        // is always ONNX.
        ("" | "onnxruntime_onnx", "" | "onnxruntime") => Ok(Platform::Onnx),
        ("ensemble", "") => Ok(Platform::Ensemble),
        ("" | "onnxruntime_onnx" | "ensemble", other) => Err(format!(
            "`backend`: backend {other} is not supported; {WHAT_RUNS}"
        )),
        (other, _) => Err(format!(
            "`platform`: platform {other} is not supported; {WHAT_RUNS}"
        )),
    }
}

fn tensor(
    kind: &str,
    name: &str,
    data_type: i32,
    dims: &[i64],
    reshape: Option<&proto::ModelTensorReshape>,
    optional: bool,
) -> Result<TensorConfig, String> {
    if name.is_empty() {
        return Err(format!("`{kind}.name`: every {kind} needs a name"));
    }
    let type_name = proto::DataType::try_from(data_type)
        .map(|d| d.as_str_name())
        .unwrap_or("TYPE_INVALID");
    if type_name == "TYPE_INVALID" {
        return Err(format!("`{kind}.data_type` of {kind} `{name}` is not set"));
    }
    let data_type = crate::DataType::from_triton(type_name)
        .filter(|d| d.is_supported())
        .ok_or_else(|| {
            format!(
                "`{kind}.data_type` of {kind} `{name}`: {type_name} is not supported by inferdb \
                 (TYPE_STRING, TYPE_FP16 and TYPE_BF16 are not)"
            )
        })?;
    if dims.is_empty() {
        return Err(format!("`{kind}.dims` of {kind} `{name}` is empty"));
    }
    check_dims(&format!("`{kind}.dims` of {kind} `{name}`"), dims)?;
    let reshape = match reshape {
        None => None,
        Some(r) => {
            let what = format!("`{kind}.reshape.shape` of {kind} `{name}`");
            check_dims(&what, &r.shape)?;
            if let (Some(a), Some(b)) = (
                crate::Tensor::element_count(dims),
                crate::Tensor::element_count(&r.shape),
            ) && a != b
            {
                return Err(format!(
                    "{what}: {:?} holds {b} elements but dims {dims:?} hold {a}",
                    r.shape
                ));
            }
            Some(r.shape.clone())
        }
    };
    Ok(TensorConfig {
        name: name.to_string(),
        data_type,
        dims: dims.to_vec(),
        reshape,
        optional,
    })
}

fn check_dims(what: &str, dims: &[i64]) -> Result<(), String> {
    match dims.iter().find(|&&d| d < -1 || d == 0) {
        Some(d) => Err(format!(
            "{what}: dimension {d} is invalid (a dimension is >= 1, or -1 for variable)"
        )),
        None => Ok(()),
    }
}

fn unique_names(kind: &str, tensors: &[TensorConfig]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for t in tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(format!(
                "`{kind}.name`: {kind} `{}` is declared twice",
                t.name
            ));
        }
    }
    Ok(())
}

fn instance_count(groups: &[proto::ModelInstanceGroup]) -> Result<u32, String> {
    use proto::model_instance_group::Kind;
    if groups.is_empty() {
        return Ok(1);
    }
    let mut total: u32 = 0;
    for g in groups {
        match Kind::try_from(g.kind) {
            Ok(Kind::Auto | Kind::Cpu) => {}
            Ok(Kind::Gpu) => {
                return Err(
                    "`instance_group.kind`: KIND_GPU is not supported; inferdb runs models on CPU (use KIND_CPU)"
                        .into(),
                );
            }
            Ok(Kind::Model) | Err(_) => {
                return Err(
                    "`instance_group.kind`: only KIND_CPU and KIND_AUTO are supported; inferdb runs models on CPU"
                        .into(),
                );
            }
        }
        if !g.gpus.is_empty() {
            return Err(
                "`instance_group.gpus` is not supported; inferdb runs models on CPU".into(),
            );
        }
        // proto3 cannot tell `count: 0` from no count; Triton's default is 1.
        let count = match g.count {
            0 => 1,
            c => u32::try_from(c)
                .map_err(|_| format!("`instance_group.count`: {c} is invalid (at least 1)"))?,
        };
        total = total
            .checked_add(count)
            .ok_or_else(|| "`instance_group.count`: the counts overflow".to_string())?;
    }
    Ok(total)
}

fn version_policy(policy: Option<&proto::ModelVersionPolicy>) -> Result<VersionPolicy, String> {
    use proto::model_version_policy::PolicyChoice;
    match policy.and_then(|p| p.policy_choice.as_ref()) {
        None => Ok(VersionPolicy::Latest(1)),
        Some(PolicyChoice::Latest(l)) if l.num_versions == 0 => {
            Err("`version_policy.latest.num_versions` must be at least 1".into())
        }
        Some(PolicyChoice::Latest(l)) => Ok(VersionPolicy::Latest(l.num_versions)),
        Some(PolicyChoice::All(_)) => Ok(VersionPolicy::All),
        Some(PolicyChoice::Specific(s)) => {
            if s.versions.is_empty() {
                return Err("`version_policy.specific.versions` is empty".into());
            }
            if let Some(v) = s.versions.iter().find(|&&v| v < 0) {
                return Err(format!(
                    "`version_policy.specific.versions`: version {v} is negative"
                ));
            }
            let mut versions = s.versions.clone();
            versions.sort_unstable();
            versions.dedup();
            Ok(VersionPolicy::Specific(versions))
        }
    }
}

fn model_filename(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Ok(DEFAULT_MODEL_FILENAME.to_string());
    }
    // The name is joined onto the version directory: it must stay inside it.
    if name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "`default_model_filename`: \"{name}\" must be a plain file name"
        ));
    }
    Ok(name.to_string())
}

fn dynamic_batching(
    d: &proto::ModelDynamicBatching,
    max_batch_size: u32,
) -> Result<DynamicBatching, String> {
    if max_batch_size == 0 {
        return Err(
            "`dynamic_batching` needs `max_batch_size` > 0 (a model with max_batch_size 0 does not batch)"
                .into(),
        );
    }
    let preferred_batch_sizes = d
        .preferred_batch_size
        .iter()
        .map(|&b| match u32::try_from(b) {
            Ok(b) if b >= 1 && b <= max_batch_size => Ok(b),
            _ => Err(format!(
                "`dynamic_batching.preferred_batch_size`: {b} must be between 1 and max_batch_size {max_batch_size}"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = d.default_queue_policy.unwrap_or_default();
    if policy.timeout_action == proto::model_queue_policy::TimeoutAction::Delay as i32 {
        return Err(
            "`dynamic_batching.default_queue_policy.timeout_action`: DELAY is not supported; inferdb rejects timed-out requests (REJECT)"
                .into(),
        );
    }
    Ok(DynamicBatching {
        preferred_batch_sizes,
        max_queue_delay: Duration::from_micros(d.max_queue_delay_microseconds),
        default_timeout: match policy.default_timeout_microseconds {
            0 => None,
            us => Some(Duration::from_micros(us)),
        },
        allow_timeout_override: policy.allow_timeout_override,
        max_queue_size: match policy.max_queue_size {
            0 => None,
            n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        },
    })
}

fn ensemble_steps(
    e: &proto::ModelEnsembling,
    inputs: &[TensorConfig],
    outputs: &[TensorConfig],
) -> Result<Vec<EnsembleStep>, String> {
    if e.step.is_empty() {
        return Err("`ensemble_scheduling.step`: an ensemble needs at least one step".into());
    }
    if inputs.is_empty() || outputs.is_empty() {
        return Err("`input`/`output`: an ensemble must declare its inputs and outputs".into());
    }
    let mut steps = Vec::with_capacity(e.step.len());
    // Ensemble tensor name → the step that produces it.
    let mut produced: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in e.step.iter().enumerate() {
        if s.model_name.is_empty() {
            return Err(format!(
                "`ensemble_scheduling.step.model_name`: step {i} names no model"
            ));
        }
        let model = &s.model_name;
        if s.model_version < -1 {
            return Err(format!(
                "`ensemble_scheduling.step.model_version` of step {i} ({model}): {} is invalid (-1 for the latest)",
                s.model_version
            ));
        }
        if s.input_map.is_empty() {
            return Err(format!(
                "`ensemble_scheduling.step.input_map` of step {i} ({model}) is empty"
            ));
        }
        if s.output_map.is_empty() {
            return Err(format!(
                "`ensemble_scheduling.step.output_map` of step {i} ({model}) is empty"
            ));
        }
        for tensor in s.output_map.values() {
            if inputs.iter().any(|t| &t.name == tensor) {
                return Err(format!(
                    "`ensemble_scheduling.step.output_map` of step {i} ({model}): ensemble tensor `{tensor}` is an ensemble input and cannot be produced by a step"
                ));
            }
            if let Some(other) = produced.insert(tensor.as_str(), i) {
                return Err(format!(
                    "`ensemble_scheduling.step.output_map` of step {i} ({model}): ensemble tensor `{tensor}` is already produced by step {other}"
                ));
            }
        }
        let mut input_map: Vec<(String, String)> = s
            .input_map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        input_map.sort();
        let mut output_map: Vec<(String, String)> = s
            .output_map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        output_map.sort();
        steps.push(EnsembleStep {
            model_name: model.clone(),
            model_version: s.model_version,
            input_map,
            output_map,
        });
    }
    for (i, s) in steps.iter().enumerate() {
        for (_, tensor) in &s.input_map {
            let known =
                inputs.iter().any(|t| &t.name == tensor) || produced.contains_key(tensor.as_str());
            if !known {
                return Err(format!(
                    "`ensemble_scheduling.step.input_map` of step {i} ({}): ensemble tensor `{tensor}` is neither an ensemble input nor produced by a step",
                    s.model_name
                ));
            }
        }
    }
    for o in outputs {
        if !produced.contains_key(o.name.as_str()) {
            return Err(format!(
                "`output`: ensemble output `{}` is not produced by any step's output_map",
                o.name
            ));
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_colons_are_inserted_only_after_field_names() {
        let fix = |t: &str| insert_list_colons(t).0.into_owned();
        assert_eq!(fix("input [ { dims: [1] } ]"), "input: [ { dims: [1] } ]");
        assert_eq!(fix("a[1] b: [2] c :[3]"), "a:[1] b: [2] c :[3]");
        assert_eq!(
            fix("# x [\nname: \"y [\" z\n[1]"),
            "# x [\nname: \"y [\" z:\n[1]"
        );
        assert_eq!(fix("k: 'it\\'s [' v [1]"), "k: 'it\\'s [' v: [1]");
        assert_eq!(fix("kind: KIND_CPU [x]"), "kind: KIND_CPU [x]");
        assert_eq!(fix("1e5 [ 0x1f ["), "1e5 [ 0x1f [");
        let (_, at) = insert_list_colons("ab [ cd [");
        assert_eq!(at, vec![2, 8]);
    }

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }

    #[test]
    fn every_supported_path_exists_in_the_schema() {
        let desc = descriptor().unwrap();
        for path in SUPPORTED_FIELDS {
            let mut msg = desc.clone();
            let mut parts = path.split('.').peekable();
            while let Some(part) = parts.next() {
                let field = msg
                    .get_field_by_name(part)
                    .unwrap_or_else(|| panic!("{path}: no field {part}"));
                if parts.peek().is_some() {
                    msg = match field.kind() {
                        prost_reflect::Kind::Message(m) => m,
                        _ => panic!("{path}: {part} is not a message"),
                    };
                }
            }
        }
    }
}
