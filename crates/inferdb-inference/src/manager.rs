//! The model manager: Triton's model repository brought to life.
//!
//! It owns every loaded model version, each behind its own [`Batcher`]
//! (ONNX models) or as an ensemble plan whose steps call other models'
//! batchers, and keeps them in step with the repository directory.
//!
//! Lifecycle decisions (Triton's `poll` model-control mode, plus the
//! repository extension's explicit `load`/`unload`):
//! - At start every model directory is loaded; models that fail stay in the
//!   index as `UNAVAILABLE` with the reason, and the others serve.
//! - A poller thread rescans the repository every `poll_interval`; a model
//!   whose files changed (a new version directory, a rewritten
//!   `config.pbtxt`) is reloaded. The new versions serve new requests at
//!   once; requests already holding the old [`ModelHandle`] finish on it
//!   (the handle keeps its batcher alive until the last one is answered). A
//!   reload that fails keeps the old versions serving and records the error.
//! - `unload` removes a model until `load` names it again (the poller does not
//!   bring it back). `load` rescans and reloads the model's directory.
//! - Without `config.pbtxt`, or with one that lists no inputs/outputs, the
//!   inputs and outputs are completed from the ONNX graph (Triton's
//!   auto-complete); a model whose every input and output has a symbolic
//!   first dimension then gets `max_batch_size` 64 with dynamic batching.
//! - Without `dynamic_batching`, requests are not delayed (queue delay 0),
//!   but requests that are already queued together run as one batch; the
//!   results per row are the same as running them one by one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::config::{DynamicBatching, ModelConfig, Platform, TensorConfig};
use crate::repository::{ModelDir, scan_model, scan_repository};
use crate::runtime::{CompiledModel, IoSpec, onnx_signature};
use crate::{Batcher, BatcherConfig, BatcherStats, InferenceError, Tensor};

/// How the manager runs.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// How often the repository is rescanned for changes; `None` turns the
    /// poller off (changes then need an explicit `load`).
    pub poll_interval: Option<Duration>,
    /// Queue bound of a model whose config sets none (Triton's default is
    /// unbounded; inferdb always bounds its queues).
    pub default_max_queue_size: usize,
    /// `max_batch_size` given to auto-completed models that batch.
    pub autocomplete_max_batch_size: u32,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            poll_interval: Some(Duration::from_secs(2)),
            default_max_queue_size: 4096,
            autocomplete_max_batch_size: 64,
        }
    }
}

/// One row of the repository index (Triton's repository extension).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexEntry {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Per-version request counters (Triton's statistics extension).
#[derive(Debug, Default)]
struct Counters {
    success: AtomicU64,
    success_ns: AtomicU64,
    fail: AtomicU64,
    fail_ns: AtomicU64,
    inference_count: AtomicU64,
    last_inference_ms: AtomicU64,
}

/// A snapshot of one version's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Requests answered successfully, and their total time from arrival at
    /// the manager to answer.
    pub success_count: u64,
    pub success_ns: u64,
    /// Requests that failed (timeouts, overload, bad shapes), and their time.
    pub fail_count: u64,
    pub fail_ns: u64,
    /// Rows inferred (Triton's `inference_count`).
    pub inference_count: u64,
    /// Batches executed (Triton's `execution_count`; for an ensemble, the
    /// number of ensemble requests).
    pub execution_count: u64,
    /// Milliseconds since the epoch of the last request, 0 if none.
    pub last_inference_ms: u64,
    /// The batcher's own counters (ONNX models only).
    pub batcher: Option<BatcherStats>,
}

enum Exec {
    Onnx {
        batcher: Batcher,
        engine: &'static str,
    },
    Ensemble(Arc<EnsemblePlan>),
}

/// One loaded version of a model. Cheap to clone behind an `Arc`; holding
/// it keeps the version's batcher alive.
pub struct ModelHandle {
    name: String,
    version: i64,
    config: Arc<ModelConfig>,
    config_json: serde_json::Value,
    exec: Exec,
    manager: Weak<Inner>,
    counters: Counters,
}

impl std::fmt::Debug for ModelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelHandle")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

struct EnsemblePlan {
    /// Steps in a topological order, each with the wave it may run in.
    steps: Vec<PlannedStep>,
    waves: usize,
    /// One step per wave: a chain, run by continuations from one step's
    /// execution thread to the next (see [`ChainRun`]).
    linear: bool,
}

struct PlannedStep {
    model: String,
    version: Option<i64>,
    /// (step input name, ensemble tensor name)
    inputs: Vec<(String, String)>,
    /// (step output name, ensemble tensor name)
    outputs: Vec<(String, String)>,
    wave: usize,
}

struct ModelEntry {
    dir: ModelDir,
    versions: BTreeMap<i64, Arc<ModelHandle>>,
    /// Why the last load failed, if it did (the versions may still be the
    /// previous good ones).
    error: Option<String>,
}

struct Inner {
    /// Itself, for the ensembles it loads (they look their steps up at call time).
    me: Weak<Inner>,
    root: PathBuf,
    opts: ManagerOptions,
    models: RwLock<HashMap<String, ModelEntry>>,
    /// Models taken out by `unload`: the poller leaves them alone.
    unloaded: Mutex<HashSet<String>>,
    /// Serializes loads (poller against explicit calls).
    loading: Mutex<()>,
    stop: AtomicBool,
}

/// The loaded models of one repository.
#[derive(Clone)]
pub struct ModelManager {
    inner: Arc<Inner>,
    poller: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for ModelManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelManager")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

impl ModelManager {
    /// Loads every model of the repository at `root` and starts the poller.
    /// Fails only when the repository itself cannot be read; a model that
    /// fails to load is reported by [`ModelManager::index`].
    pub fn open(root: &Path, opts: ManagerOptions) -> Result<ModelManager, InferenceError> {
        let inner = Arc::new_cyclic(|me| Inner {
            me: me.clone(),
            root: root.to_path_buf(),
            opts,
            models: RwLock::new(HashMap::new()),
            unloaded: Mutex::new(HashSet::new()),
            loading: Mutex::new(()),
            stop: AtomicBool::new(false),
        });
        let dirs = scan_repository(root)?;
        {
            let _g = inner.loading.lock();
            load_dirs(&inner, dirs);
        }
        let manager = ModelManager {
            inner,
            poller: Arc::new(Mutex::new(None)),
        };
        if let Some(every) = manager.inner.opts.poll_interval {
            let weak = Arc::downgrade(&manager.inner);
            let h = std::thread::Builder::new()
                .name("inferdb-model-poll".into())
                .spawn(move || poll_loop(weak, every))
                .map_err(|e| InferenceError::Internal(format!("cannot start poller: {e}")))?;
            *manager.poller.lock() = Some(h);
        }
        Ok(manager)
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// A loaded version of `name`: `version` or, when `None`, the highest
    /// loaded one.
    pub fn model(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Arc<ModelHandle>, InferenceError> {
        lookup(&self.inner, name, version)
    }

    /// The loaded versions of `name`, ascending (empty if none).
    pub fn versions(&self, name: &str) -> Vec<i64> {
        self.inner
            .models
            .read()
            .get(name)
            .map(|e| e.versions.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Whether `name` (at `version`, or any version) is loaded and ready.
    pub fn is_ready(&self, name: &str, version: Option<i64>) -> bool {
        self.model(name, version).is_ok()
    }

    /// Names of the loaded models, sorted.
    pub fn loaded_names(&self) -> Vec<String> {
        let models = self.inner.models.read();
        let mut names: Vec<String> = models
            .iter()
            .filter(|(_, e)| !e.versions.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        names.sort();
        names
    }

    /// Every model of the repository directory with its state, as Triton's
    /// `POST /v2/repository/index` lists them: one row per loaded version,
    /// and a versionless row for a model that is not loaded.
    pub fn index(&self) -> Result<Vec<IndexEntry>, InferenceError> {
        let dirs = scan_repository(&self.inner.root)?;
        let models = self.inner.models.read();
        let mut out = Vec::new();
        for d in dirs {
            match models.get(&d.name) {
                Some(e) if !e.versions.is_empty() => {
                    for v in e.versions.keys() {
                        out.push(IndexEntry {
                            name: d.name.clone(),
                            version: Some(v.to_string()),
                            state: "READY".into(),
                            reason: String::new(),
                        });
                    }
                }
                Some(e) => out.push(IndexEntry {
                    name: d.name.clone(),
                    version: None,
                    state: "UNAVAILABLE".into(),
                    reason: e.error.clone().unwrap_or_else(|| "not loaded".into()),
                }),
                None => out.push(IndexEntry {
                    name: d.name.clone(),
                    version: None,
                    state: "UNAVAILABLE".into(),
                    reason: "unloaded".into(),
                }),
            }
        }
        Ok(out)
    }

    /// Loads (or reloads) the model directory `name`. Errors name the
    /// problem; on error the previous versions, if any, keep serving.
    pub fn load(&self, name: &str) -> Result<(), InferenceError> {
        let _g = self.inner.loading.lock();
        let dir = scan_model(&self.inner.root, name)?;
        self.inner.unloaded.lock().remove(name);
        load_dirs(&self.inner, vec![dir]);
        let models = self.inner.models.read();
        match models.get(name) {
            Some(e) if e.error.is_none() => Ok(()),
            Some(e) => Err(InferenceError::Config {
                model: name.to_string(),
                message: e.error.clone().unwrap_or_default(),
            }),
            None => Err(InferenceError::UnknownModel {
                name: name.to_string(),
                version: None,
            }),
        }
    }

    /// Unloads every version of `name`; in-flight requests finish.
    pub fn unload(&self, name: &str) -> Result<(), InferenceError> {
        let _g = self.inner.loading.lock();
        let removed = self.inner.models.write().remove(name);
        match removed {
            Some(_) => {
                self.inner.unloaded.lock().insert(name.to_string());
                tracing::info!(model = name, "model unloaded");
                Ok(())
            }
            None => Err(InferenceError::UnknownModel {
                name: name.to_string(),
                version: None,
            }),
        }
    }

    /// Rescans the repository now and reloads what changed (what the poller
    /// does every `poll_interval`).
    pub fn poll_now(&self) {
        poll_once(&self.inner);
    }

    /// Stops the poller. Loaded models keep serving until dropped.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(h) = self.poller.lock().take() {
            let _ = h.join();
        }
    }
}

fn lookup(
    inner: &Inner,
    name: &str,
    version: Option<i64>,
) -> Result<Arc<ModelHandle>, InferenceError> {
    let models = inner.models.read();
    let unknown = || InferenceError::UnknownModel {
        name: name.to_string(),
        version,
    };
    let entry = models.get(name).ok_or_else(unknown)?;
    let handle = match version {
        Some(v) => entry.versions.get(&v),
        None => entry.versions.values().next_back(),
    };
    handle.cloned().ok_or_else(unknown)
}

fn poll_loop(inner: Weak<Inner>, every: Duration) {
    loop {
        // Sleep in short steps so shutdown is prompt.
        let until = Instant::now() + every;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50).min(every));
            match inner.upgrade() {
                Some(i) if !i.stop.load(Ordering::Acquire) => {}
                _ => return,
            }
        }
        match inner.upgrade() {
            Some(i) => poll_once(&i),
            None => return,
        }
    }
}

fn poll_once(inner: &Inner) {
    let _g = inner.loading.lock();
    let dirs = match scan_repository(&inner.root) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot rescan the model repository");
            return;
        }
    };
    let unloaded = inner.unloaded.lock().clone();
    let present: HashSet<String> = dirs.iter().map(|d| d.name.clone()).collect();
    let changed: Vec<ModelDir> = {
        let models = inner.models.read();
        dirs.into_iter()
            .filter(|d| !unloaded.contains(&d.name))
            .filter(|d| {
                models
                    .get(&d.name)
                    .is_none_or(|e| e.dir.fingerprint != d.fingerprint)
            })
            .collect()
    };
    // A model directory that disappeared is unloaded (Triton's poll mode).
    let gone: Vec<String> = inner
        .models
        .read()
        .keys()
        .filter(|n| !present.contains(*n))
        .cloned()
        .collect();
    if !gone.is_empty() {
        let mut models = inner.models.write();
        for n in &gone {
            models.remove(n);
            tracing::info!(model = %n, "model directory removed; unloaded");
        }
    }
    if !changed.is_empty() {
        load_dirs(inner, changed);
    }
}

/// Loads model directories: ONNX models first, then ensembles (whose steps
/// must be loaded to be checked). Each result replaces the entry of its
/// model; a failure keeps the old versions and records the error.
fn load_dirs(inner: &Inner, dirs: Vec<ModelDir>) {
    let (ensembles, plain): (Vec<ModelDir>, Vec<ModelDir>) = dirs.into_iter().partition(|d| {
        d.config
            .as_ref()
            .is_ok_and(|c| c.platform == Platform::Ensemble)
    });
    for dir in plain.into_iter().chain(ensembles) {
        let name = dir.name.clone();
        let loaded = load_model(inner, &dir);
        let mut models = inner.models.write();
        match loaded {
            Ok(versions) => {
                tracing::info!(
                    model = %name,
                    versions = ?versions.keys().collect::<Vec<_>>(),
                    "model loaded"
                );
                models.insert(
                    name,
                    ModelEntry {
                        dir,
                        versions,
                        error: None,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(model = %name, error = %e, "model failed to load");
                let versions = models
                    .remove(&name)
                    .map(|old| old.versions)
                    .unwrap_or_default();
                models.insert(
                    name,
                    ModelEntry {
                        dir,
                        versions,
                        error: Some(e.to_string()),
                    },
                );
            }
        }
    }
}

fn load_model(
    inner: &Inner,
    dir: &ModelDir,
) -> Result<BTreeMap<i64, Arc<ModelHandle>>, InferenceError> {
    let config = dir.config.clone()?;
    let available: Vec<i64> = dir.versions.iter().map(|(v, _)| *v).collect();
    let selected = config.version_selected(&available);
    if selected.is_empty() {
        return Err(InferenceError::Config {
            model: dir.name.clone(),
            message: format!(
                "no version directory with {} matches the version_policy (found {:?})",
                config.default_model_filename, available
            ),
        });
    }
    let mut out = BTreeMap::new();
    for v in selected {
        let handle = match config.platform {
            Platform::Ensemble => load_ensemble(inner, &dir.name, v, &config)?,
            Platform::Onnx => {
                let path = dir
                    .versions
                    .iter()
                    .find(|(x, _)| *x == v)
                    .map(|(_, p)| p.join(&config.default_model_filename))
                    .ok_or_else(|| InferenceError::Config {
                        model: dir.name.clone(),
                        message: format!("version {v} has no model file"),
                    })?;
                load_onnx(inner, &dir.name, v, &config, &path)?
            }
        };
        out.insert(v, Arc::new(handle));
    }
    Ok(out)
}

fn cfg_err(model: &str, message: impl Into<String>) -> InferenceError {
    InferenceError::Config {
        model: model.to_string(),
        message: message.into(),
    }
}

/// Fills inputs/outputs (and, for a config-less model, the batch size) from
/// the ONNX graph.
fn autocomplete(
    inner: &Inner,
    name: &str,
    config: &ModelConfig,
    bytes: &[u8],
) -> Result<ModelConfig, InferenceError> {
    let mut config = config.clone();
    if !config.inputs.is_empty() && !config.outputs.is_empty() {
        return Ok(config);
    }
    let sig = onnx_signature(bytes)?;
    let all_batched = sig
        .inputs
        .iter()
        .chain(&sig.outputs)
        .all(|io| io.dims.first().is_some_and(|d| d.is_none()));
    if config.max_batch_size == 0 && config.inputs.is_empty() && all_batched {
        config.max_batch_size = inner.opts.autocomplete_max_batch_size;
        if config.dynamic_batching.is_none() {
            config.dynamic_batching = Some(DynamicBatching {
                preferred_batch_sizes: Vec::new(),
                max_queue_delay: Duration::ZERO,
                default_timeout: None,
                allow_timeout_override: true,
                max_queue_size: None,
            });
        }
    }
    let skip = usize::from(config.max_batch_size > 0);
    let convert = |io: &crate::runtime::OnnxIo| -> Result<TensorConfig, InferenceError> {
        let dims: Vec<i64> = io.dims.iter().skip(skip).map(|d| d.unwrap_or(-1)).collect();
        Ok(TensorConfig {
            name: io.name.clone(),
            data_type: io.data_type,
            dims,
            reshape: None,
            optional: false,
        })
    };
    if config.inputs.is_empty() {
        config.inputs = sig.inputs.iter().map(convert).collect::<Result<_, _>>()?;
    }
    if config.outputs.is_empty() {
        config.outputs = sig.outputs.iter().map(convert).collect::<Result<_, _>>()?;
    }
    if config.inputs.is_empty() || config.outputs.is_empty() {
        return Err(cfg_err(
            name,
            "the ONNX graph declares no inputs or no outputs",
        ));
    }
    Ok(config)
}

/// Elements per row of a configured tensor (`reshape` does not change the
/// count). Variable dimensions cannot be batched by inferdb's fixed-width
/// batcher.
fn row_elems(model: &str, t: &TensorConfig) -> Result<usize, InferenceError> {
    if t.dims.iter().any(|&d| d < 0) {
        return Err(cfg_err(
            model,
            format!(
                "tensor {} has a variable dimension {:?}; inferdb needs fixed dims after the batch dimension",
                t.name, t.dims
            ),
        ));
    }
    Tensor::element_count(&t.dims)
        .ok_or_else(|| cfg_err(model, format!("tensor {} has dims too large", t.name)))
}

fn batcher_config(inner: &Inner, config: &ModelConfig) -> BatcherConfig {
    let db = config.dynamic_batching.as_ref();
    BatcherConfig {
        max_batch_size: (config.max_batch_size as usize).max(1),
        max_queue_delay: db.map(|d| d.max_queue_delay).unwrap_or(Duration::ZERO),
        max_queue_size: db
            .and_then(|d| d.max_queue_size)
            .unwrap_or(inner.opts.default_max_queue_size),
        preferred_batch_sizes: db
            .map(|d| {
                d.preferred_batch_sizes
                    .iter()
                    .map(|&p| p as usize)
                    .collect()
            })
            .unwrap_or_default(),
        instances: config.instance_count.max(1) as usize,
    }
}

fn load_onnx(
    inner: &Inner,
    name: &str,
    version: i64,
    config: &ModelConfig,
    path: &Path,
) -> Result<ModelHandle, InferenceError> {
    let bytes = std::fs::read(path)
        .map_err(|e| cfg_err(name, format!("cannot read {}: {e}", path.display())))?;
    let config = autocomplete(inner, name, config, &bytes)?;
    let spec = |t: &TensorConfig| -> Result<IoSpec, InferenceError> {
        Ok(IoSpec {
            name: t.name.clone(),
            row_elems: row_elems(name, t)?,
        })
    };
    let inputs: Vec<IoSpec> = config.inputs.iter().map(spec).collect::<Result<_, _>>()?;
    let outputs: Vec<IoSpec> = config.outputs.iter().map(spec).collect::<Result<_, _>>()?;
    let compiled = CompiledModel::load(&bytes, &inputs, &outputs, config.max_batch_size > 0)
        .map_err(|e| cfg_err(name, format!("version {version}: {e}")))?;
    let engine = compiled.engine_name();
    tracing::info!(model = name, version, engine, "model compiled");
    let batcher = Batcher::start(
        &format!("{name}:{version}"),
        batcher_config(inner, &config),
        || Ok(compiled.instance()),
    )?;
    let config_json = config.to_json();
    Ok(ModelHandle {
        name: name.to_string(),
        version,
        config: Arc::new(config),
        config_json,
        exec: Exec::Onnx { batcher, engine },
        manager: inner.me.clone(),
        counters: Counters::default(),
    })
}

/// Checks an ensemble against the loaded step models and orders its steps.
fn load_ensemble(
    inner: &Inner,
    name: &str,
    version: i64,
    config: &ModelConfig,
) -> Result<ModelHandle, InferenceError> {
    if config.ensemble_steps.is_empty() {
        return Err(cfg_err(name, "ensemble_scheduling has no step"));
    }
    // Which tensor is available after which wave.
    let mut ready: HashMap<String, usize> = config
        .inputs
        .iter()
        .map(|t| (t.name.clone(), 0usize))
        .collect();
    let mut pending: Vec<usize> = (0..config.ensemble_steps.len()).collect();
    let mut planned: Vec<PlannedStep> = Vec::new();
    while !pending.is_empty() {
        let mut progressed = false;
        let mut rest = Vec::new();
        for i in pending {
            let step = &config.ensemble_steps[i];
            let waits: Option<Vec<usize>> = step
                .input_map
                .iter()
                .map(|(_, t)| ready.get(t).copied())
                .collect();
            match waits {
                Some(w) => {
                    let wave = w.into_iter().max().unwrap_or(0);
                    // -1 (and 0, the field's default when omitted) mean the latest version.
                    let version = (step.model_version > 0).then_some(step.model_version);
                    let target = lookup(inner, &step.model_name, version).map_err(|e| {
                        cfg_err(name, format!("step model {}: {e}", step.model_name))
                    })?;
                    check_step(name, config, step, &target)?;
                    for (_, t) in &step.output_map {
                        if ready.insert(t.clone(), wave + 1).is_some() {
                            return Err(cfg_err(
                                name,
                                format!("ensemble tensor {t} is produced twice"),
                            ));
                        }
                    }
                    planned.push(PlannedStep {
                        model: step.model_name.clone(),
                        version,
                        inputs: step.input_map.clone(),
                        outputs: step.output_map.clone(),
                        wave,
                    });
                    progressed = true;
                }
                None => rest.push(i),
            }
        }
        if !progressed {
            let step = rest
                .first()
                .and_then(|&i| config.ensemble_steps.get(i))
                .map(|s| s.model_name.clone())
                .unwrap_or_default();
            return Err(cfg_err(
                name,
                format!(
                    "ensemble step {step} needs a tensor that no input or earlier step provides (or the steps form a cycle)"
                ),
            ));
        }
        pending = rest;
    }
    for out in &config.outputs {
        if !ready.contains_key(&out.name) {
            return Err(cfg_err(
                name,
                format!("ensemble output {} is not produced by any step", out.name),
            ));
        }
    }
    let waves = planned.iter().map(|s| s.wave + 1).max().unwrap_or(0);
    Ok(ModelHandle {
        name: name.to_string(),
        version,
        config_json: config.to_json(),
        config: Arc::new(config.clone()),
        exec: Exec::Ensemble(Arc::new(EnsemblePlan {
            linear: waves == planned.len(),
            steps: planned,
            waves,
        })),
        manager: inner.me.clone(),
        counters: Counters::default(),
    })
}

fn check_step(
    ensemble: &str,
    config: &ModelConfig,
    step: &crate::config::EnsembleStep,
    target: &ModelHandle,
) -> Result<(), InferenceError> {
    let tc = &target.config;
    if config.max_batch_size > tc.max_batch_size {
        return Err(cfg_err(
            ensemble,
            format!(
                "max_batch_size {} exceeds that of step model {} ({})",
                config.max_batch_size, step.model_name, tc.max_batch_size
            ),
        ));
    }
    for (input, _) in &step.input_map {
        if !tc.inputs.iter().any(|t| &t.name == input) {
            return Err(cfg_err(
                ensemble,
                format!("step {} has no input {input}", step.model_name),
            ));
        }
    }
    for (output, _) in &step.output_map {
        if !tc.outputs.iter().any(|t| &t.name == output) {
            return Err(cfg_err(
                ensemble,
                format!("step {} has no output {output}", step.model_name),
            ));
        }
    }
    Ok(())
}

impl ModelHandle {
    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This version.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The configuration (auto-completed where the file left gaps).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The configuration as Triton's `GET /v2/models/{m}/config` answers it.
    pub fn config_json(&self) -> &serde_json::Value {
        &self.config_json
    }

    /// `"ensemble"`, or the engine that runs the ONNX graph.
    pub fn engine_name(&self) -> &'static str {
        match &self.exec {
            Exec::Onnx { engine, .. } => engine,
            Exec::Ensemble(_) => "ensemble",
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ModelStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let batcher = match &self.exec {
            Exec::Onnx { batcher, .. } => Some(batcher.stats()),
            Exec::Ensemble(_) => None,
        };
        ModelStats {
            success_count: g(&c.success),
            success_ns: g(&c.success_ns),
            fail_count: g(&c.fail),
            fail_ns: g(&c.fail_ns),
            inference_count: g(&c.inference_count),
            execution_count: batcher
                .as_ref()
                .map(|b| b.batches)
                .unwrap_or_else(|| g(&c.success) + g(&c.fail)),
            last_inference_ms: g(&c.last_inference_ms),
            batcher,
        }
    }

    /// Runs one request. `inputs` must name every configured input once,
    /// each with shape `[rows, dims…]` (batched models) or `dims`. Returns
    /// every configured output, in config order. A `deadline` that passes
    /// before execution answers `Timeout`; the config's queue policy timeout
    /// applies when it is earlier (or when overrides are not allowed).
    pub async fn infer(
        self: &Arc<Self>,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Tensor>, InferenceError> {
        let start = Instant::now();
        let deadline = self.effective_deadline(start, deadline);
        let rows = self.rows_of(&inputs);
        let result = match &self.exec {
            Exec::Onnx { batcher, .. } => self.infer_onnx(batcher, inputs, deadline).await,
            Exec::Ensemble(plan) => match self.onnx_chain(plan) {
                Some(models) => self.infer_chain(plan, models, inputs, deadline).await,
                None => self.infer_ensemble(plan, inputs, deadline).await,
            },
        };
        self.count(start, rows, result.is_ok());
        result
    }

    fn effective_deadline(&self, start: Instant, deadline: Option<Instant>) -> Option<Instant> {
        let db = self.config.dynamic_batching.as_ref();
        let policy = db.and_then(|d| d.default_timeout).map(|t| start + t);
        let allow = db.is_none_or(|d| d.allow_timeout_override);
        match (deadline, policy) {
            (Some(d), Some(p)) if allow => Some(d.min(p)),
            (Some(_), Some(p)) => Some(p),
            (d, p) => d.or(p),
        }
    }

    fn rows_of(&self, inputs: &[Tensor]) -> usize {
        if self.config.max_batch_size == 0 {
            return 1;
        }
        inputs
            .first()
            .and_then(|t| t.shape.first())
            .map(|&d| d.max(0) as usize)
            .unwrap_or(0)
    }

    /// Checks the inputs against the config and returns the row count.
    fn check_inputs(&self, inputs: &[Tensor]) -> Result<usize, InferenceError> {
        let cfg = &*self.config;
        let batched = cfg.max_batch_size > 0;
        let mut rows: Option<usize> = None;
        for t in inputs {
            if !cfg.inputs.iter().any(|c| c.name == t.name) {
                return Err(InferenceError::InvalidInput(format!(
                    "model {} has no input named {}",
                    self.name, t.name
                )));
            }
        }
        for c in &cfg.inputs {
            let t = inputs.iter().find(|t| t.name == c.name).ok_or_else(|| {
                InferenceError::InvalidInput(format!(
                    "model {} expects input {} which the request does not give",
                    self.name, c.name
                ))
            })?;
            let dims = if batched {
                let (first, rest) = t.shape.split_first().ok_or_else(|| {
                    InferenceError::InvalidInput(format!(
                        "input {}: shape {:?} has no batch dimension",
                        t.name, t.shape
                    ))
                })?;
                let n = usize::try_from(*first).map_err(|_| {
                    InferenceError::InvalidInput(format!(
                        "input {}: negative batch dimension {first}",
                        t.name
                    ))
                })?;
                if let Some(r) = rows
                    && r != n
                {
                    return Err(InferenceError::InvalidInput(format!(
                        "input {}: batch dimension {n} differs from the other inputs' {r}",
                        t.name
                    )));
                }
                rows = Some(n);
                rest
            } else {
                rows = Some(1);
                &t.shape[..]
            };
            let fits = |want: &[i64]| {
                dims.len() == want.len() && dims.iter().zip(want).all(|(&g, &w)| w < 0 || g == w)
            };
            if !fits(&c.dims) && !c.reshape.as_deref().is_some_and(fits) {
                return Err(InferenceError::InvalidInput(format!(
                    "input {}: shape {:?} does not match the model's {}{:?}",
                    t.name,
                    t.shape,
                    if batched { "[-1] + " } else { "" },
                    c.dims
                )));
            }
            if Tensor::element_count(&t.shape) != Some(t.data.len()) {
                return Err(InferenceError::InvalidInput(format!(
                    "input {}: {} values for shape {:?}",
                    t.name,
                    t.data.len(),
                    t.shape
                )));
            }
            if t.datatype != c.data_type {
                return Err(InferenceError::InvalidInput(format!(
                    "input {}: datatype {} but the model expects {}",
                    t.name, t.datatype, c.data_type
                )));
            }
        }
        Ok(rows.unwrap_or(0))
    }

    /// Checks the inputs and lays them out as the batcher's rows.
    fn prepare(&self, mut inputs: Vec<Tensor>) -> Result<(Vec<f32>, usize), InferenceError> {
        let rows = self.check_inputs(&inputs)?;
        let cfg = &*self.config;
        // One input: its buffer is already the row-major batch. Several:
        // interleave their rows in config order.
        let data = if cfg.inputs.len() == 1 {
            inputs.pop().map(|t| t.data).unwrap_or_default()
        } else {
            let mut by_cfg: Vec<&Tensor> = Vec::with_capacity(cfg.inputs.len());
            for c in &cfg.inputs {
                if let Some(t) = inputs.iter().find(|t| t.name == c.name) {
                    by_cfg.push(t);
                }
            }
            let widths: Vec<usize> = by_cfg.iter().map(|t| t.data.len() / rows.max(1)).collect();
            let mut data = Vec::with_capacity(widths.iter().sum::<usize>() * rows);
            for r in 0..rows {
                for (t, &w) in by_cfg.iter().zip(&widths) {
                    data.extend_from_slice(&t.data[r * w..(r + 1) * w]);
                }
            }
            data
        };
        Ok((data, rows))
    }

    async fn infer_onnx(
        &self,
        batcher: &Batcher,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Tensor>, InferenceError> {
        let (data, rows) = self.prepare(inputs)?;
        let out = batcher.submit(data, rows, deadline)?.wait().await?;
        self.split_outputs(out, rows)
    }

    fn count(&self, start: Instant, rows: usize, ok: bool) {
        let ns = start.elapsed().as_nanos() as u64;
        let c = &self.counters;
        if ok {
            c.success.fetch_add(1, Ordering::Relaxed);
            c.success_ns.fetch_add(ns, Ordering::Relaxed);
            c.inference_count.fetch_add(rows as u64, Ordering::Relaxed);
        } else {
            c.fail.fetch_add(1, Ordering::Relaxed);
            c.fail_ns.fetch_add(ns, Ordering::Relaxed);
        }
        c.last_inference_ms.store(
            inferdb_types::Timestamp::now().0.max(0) as u64,
            Ordering::Relaxed,
        );
    }

    /// Queues a request on this ONNX model's batcher; `then` receives the
    /// outputs on the execution thread (counters kept as by `infer`).
    fn submit_then(
        self: &Arc<Self>,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
        cancelled: Arc<AtomicBool>,
        then: impl FnOnce(Result<Vec<Tensor>, InferenceError>) + Send + 'static,
    ) {
        let start = Instant::now();
        let Exec::Onnx { batcher, .. } = &self.exec else {
            then(Err(InferenceError::Internal(format!(
                "model {} is not an ONNX model",
                self.name
            ))));
            return;
        };
        let (data, rows) = match self.prepare(inputs) {
            Ok(x) => x,
            Err(e) => {
                self.count(start, 0, false);
                then(Err(e));
                return;
            }
        };
        let me = Arc::clone(self);
        batcher.submit_then(
            data,
            rows,
            deadline,
            cancelled,
            Box::new(move |r| {
                let res = r.and_then(|out| me.split_outputs(out, rows));
                me.count(start, rows, res.is_ok());
                then(res)
            }),
        );
    }

    fn split_outputs(&self, out: Vec<f32>, rows: usize) -> Result<Vec<Tensor>, InferenceError> {
        let cfg = &*self.config;
        let batched = cfg.max_batch_size > 0;
        let widths: Vec<usize> = cfg
            .outputs
            .iter()
            .map(|c| row_elems(&self.name, c))
            .collect::<Result<_, _>>()?;
        let total: usize = widths.iter().sum();
        if out.len() != total * rows {
            return Err(InferenceError::Internal(format!(
                "model {} answered {} values for {rows} rows of {total}",
                self.name,
                out.len()
            )));
        }
        let shape_of = |c: &TensorConfig| -> Vec<i64> {
            let dims = c.reshape.clone().unwrap_or_else(|| c.dims.clone());
            if batched {
                std::iter::once(rows as i64).chain(dims).collect()
            } else {
                dims
            }
        };
        if cfg.outputs.len() == 1 {
            let c = &cfg.outputs[0];
            return Ok(vec![Tensor {
                name: c.name.clone(),
                datatype: c.data_type,
                shape: shape_of(c),
                data: out,
            }]);
        }
        let mut tensors: Vec<Tensor> = cfg
            .outputs
            .iter()
            .zip(&widths)
            .map(|(c, &w)| Tensor {
                name: c.name.clone(),
                datatype: c.data_type,
                shape: shape_of(c),
                data: Vec::with_capacity(w * rows),
            })
            .collect();
        for r in 0..rows {
            let mut at = r * total;
            for (t, &w) in tensors.iter_mut().zip(&widths) {
                t.data.extend_from_slice(&out[at..at + w]);
                at += w;
            }
        }
        Ok(tensors)
    }

    /// The ensemble's outputs, in config order, out of the tensor pool.
    fn take_outputs(
        &self,
        mut pool: HashMap<String, Tensor>,
    ) -> Result<Vec<Tensor>, InferenceError> {
        self.config
            .outputs
            .iter()
            .map(|c| {
                pool.remove(&c.name).ok_or_else(|| {
                    InferenceError::Internal(format!("ensemble output {} missing", c.name))
                })
            })
            .collect()
    }

    /// For a linear plan whose every step is now an ONNX model, the step
    /// models (resolved once: the request keeps these versions to its end);
    /// `None` sends the request down the general path (a DAG, a step that
    /// is itself an ensemble, or a step not loaded, which that path reports).
    fn onnx_chain(&self, plan: &EnsemblePlan) -> Option<Vec<Arc<ModelHandle>>> {
        if !plan.linear {
            return None;
        }
        let inner = self.manager.upgrade()?;
        plan.steps
            .iter()
            .map(|s| {
                lookup(&inner, &s.model, s.version)
                    .ok()
                    .filter(|m| matches!(m.exec, Exec::Onnx { .. }))
            })
            .collect()
    }

    /// A linear ensemble: the request hops from one step's execution
    /// thread to the next by continuation; only the last step's answer comes
    /// back through the async runtime. Each step still queues in (and
    /// batches with the other requests of) its own model's batcher.
    async fn infer_chain(
        &self,
        plan: &Arc<EnsemblePlan>,
        models: Vec<Arc<ModelHandle>>,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Tensor>, InferenceError> {
        self.check_inputs(&inputs)?;
        let cancelled = Arc::new(AtomicBool::new(false));
        // Dropping this future (the client went away) cancels the steps not
        // yet run.
        let _guard = CancelOnDrop(Arc::clone(&cancelled));
        let (tx, rx) = tokio::sync::oneshot::channel();
        advance(ChainRun {
            models,
            plan: Arc::clone(plan),
            next: 0,
            pool: inputs.into_iter().map(|t| (t.name.clone(), t)).collect(),
            deadline,
            cancelled,
            done: tx,
        });
        let pool = rx.await.map_err(|_| InferenceError::Unavailable {
            model: self.name.clone(),
            reason: "a step stopped without answering".into(),
        })??;
        self.take_outputs(pool)
    }

    async fn infer_ensemble(
        &self,
        plan: &EnsemblePlan,
        inputs: Vec<Tensor>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Tensor>, InferenceError> {
        self.check_inputs(&inputs)?;
        let inner = self
            .manager
            .upgrade()
            .ok_or_else(|| InferenceError::Unavailable {
                model: self.name.clone(),
                reason: "the model manager is gone".into(),
            })?;
        let mut pool: HashMap<String, Tensor> =
            inputs.into_iter().map(|t| (t.name.clone(), t)).collect();
        for wave in 0..plan.waves {
            let steps: Vec<&PlannedStep> = plan.steps.iter().filter(|s| s.wave == wave).collect();
            let mut calls = Vec::with_capacity(steps.len());
            for step in &steps {
                let model = lookup(&inner, &step.model, step.version)?;
                let mut args = Vec::with_capacity(step.inputs.len());
                for (input, tensor) in &step.inputs {
                    let t = pool.get(tensor).ok_or_else(|| {
                        InferenceError::Internal(format!("ensemble tensor {tensor} missing"))
                    })?;
                    args.push(Tensor {
                        name: input.clone(),
                        datatype: t.datatype,
                        shape: t.shape.clone(),
                        data: t.data.clone(),
                    });
                }
                calls.push(async move { model.infer(args, deadline).await });
            }
            let results = futures_util::future::join_all(calls).await;
            for (step, result) in steps.iter().zip(results) {
                let outs = result?;
                for t in outs {
                    if let Some((_, name)) = step.outputs.iter().find(|(o, _)| *o == t.name) {
                        pool.insert(
                            name.clone(),
                            Tensor {
                                name: name.clone(),
                                ..t
                            },
                        );
                    }
                }
            }
        }
        self.take_outputs(pool)
    }
}

struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// One request travelling down a linear ensemble.
struct ChainRun {
    /// The model of each step, resolved when the request started.
    models: Vec<Arc<ModelHandle>>,
    plan: Arc<EnsemblePlan>,
    next: usize,
    pool: HashMap<String, Tensor>,
    deadline: Option<Instant>,
    cancelled: Arc<AtomicBool>,
    done: tokio::sync::oneshot::Sender<Result<HashMap<String, Tensor>, InferenceError>>,
}

/// Queues the run's next step, whose continuation queues the one after it;
/// the last answers `done`.
fn advance(mut run: ChainRun) {
    let plan = Arc::clone(&run.plan);
    let Some(step) = plan.steps.get(run.next) else {
        let _ = run.done.send(Ok(run.pool));
        return;
    };
    let Some(model) = run.models.get(run.next).cloned() else {
        let _ = run.done.send(Err(InferenceError::Internal(format!(
            "ensemble step {} has no model",
            step.model
        ))));
        return;
    };
    let mut args = Vec::with_capacity(step.inputs.len());
    for (input, tensor) in &step.inputs {
        // A tensor no later step reads moves; one read again is copied.
        let later = plan.steps[run.next + 1..]
            .iter()
            .any(|s| s.inputs.iter().any(|(_, t)| t == tensor));
        let t = if later {
            run.pool.get(tensor).cloned()
        } else {
            run.pool.remove(tensor)
        };
        match t {
            Some(t) => args.push(Tensor {
                name: input.clone(),
                ..t
            }),
            None => {
                let _ = run.done.send(Err(InferenceError::Internal(format!(
                    "ensemble tensor {tensor} missing"
                ))));
                return;
            }
        }
    }
    run.next += 1;
    let (deadline, cancelled) = (run.deadline, Arc::clone(&run.cancelled));
    model.submit_then(args, deadline, cancelled, move |res| match res {
        Ok(outs) => {
            let step = &run.plan.steps[run.next - 1];
            for t in outs {
                if let Some((_, name)) = step.outputs.iter().find(|(o, _)| *o == t.name) {
                    let name = name.clone();
                    run.pool.insert(name.clone(), Tensor { name, ..t });
                }
            }
            advance(run);
        }
        Err(e) => {
            let _ = run.done.send(Err(e));
        }
    });
}
