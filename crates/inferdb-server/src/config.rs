//! The server's typed configuration, layered once at start:
//! defaults < TOML file (`--config`) < `INFERDB_…` environment < CLI flags.
//! clap resolves flag-over-environment; [`ServeArgs::resolve`] adds the file
//! and the defaults, and validates.

use clap::Args;
use inferdb_engine::{EngineConfig, FsyncPolicy, InferenceCommit, SqlOptions};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `inferdb serve` (each also an `INFERDB_…` variable).
#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// TOML config file; its keys are the flag names with `_` for `-`.
    #[arg(long, env = "INFERDB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (catalog, WAL, snapshots).
    #[arg(long, env = "INFERDB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Spec file (TOML: streams and feature views). Optional once the data
    /// directory holds a catalog.
    #[arg(long, env = "INFERDB_SPEC")]
    pub spec: Option<PathBuf>,
    /// Address to listen on (port 0 = any free port).
    #[arg(long, env = "INFERDB_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// When ingest is acknowledged: always | batch | none.
    #[arg(long, env = "INFERDB_FSYNC")]
    pub fsync: Option<FsyncPolicy>,
    /// When `/infer` answers: sync (after its inference record is durable)
    /// | async (once the record is queued for the log; see the README).
    #[arg(long, env = "INFERDB_INFERENCE_COMMIT")]
    pub inference_commit: Option<InferenceCommit>,
    /// Largest request body in bytes.
    #[arg(long, env = "INFERDB_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Recent records kept per entity in the hot tier.
    #[arg(long, env = "INFERDB_HOT_RECORDS_PER_ENTITY")]
    pub hot_records_per_entity: Option<usize>,
    /// Memory budget of the hot tier per stream, in bytes.
    #[arg(long, env = "INFERDB_HOT_TIER_BYTES")]
    pub hot_tier_bytes: Option<usize>,
    /// Batches queued for the WAL before ingest answers 503.
    #[arg(long, env = "INFERDB_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// Seconds between snapshots of online state.
    #[arg(long, env = "INFERDB_SNAPSHOT_INTERVAL_SECS")]
    pub snapshot_interval_secs: Option<u64>,
    /// Shards of online state.
    #[arg(long, env = "INFERDB_SHARDS")]
    pub shards: Option<usize>,
    /// Largest number of keys in one batch feature read.
    #[arg(long, env = "INFERDB_MAX_KEYS_PER_READ")]
    pub max_keys_per_read: Option<usize>,
    /// Tokio worker threads (default: one per core).
    #[arg(long, env = "INFERDB_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Triton-layout model repository (`<dir>/<model>/config.pbtxt`,
    /// `<dir>/<model>/<version>/model.onnx`) served by `/infer` and `/v2`.
    #[arg(long, env = "INFERDB_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,
    /// Seconds between rescans of the model repository (0 = never; models
    /// then change only through `/v2/repository/models/{m}/load`).
    #[arg(long, env = "INFERDB_REPOSITORY_POLL_SECS")]
    pub repository_poll_secs: Option<u64>,
    /// Flush the history head to Parquet once it holds this many rows (default 1,000,000).
    #[arg(long, env = "INFERDB_HISTORY_FLUSH_ROWS")]
    pub history_flush_rows: Option<usize>,
    /// ... or once its oldest row is this many seconds old (default 60).
    #[arg(long, env = "INFERDB_HISTORY_FLUSH_SECS")]
    pub history_flush_secs: Option<u64>,
    /// Seconds between compaction/retention passes over the history (default 300).
    #[arg(long, env = "INFERDB_HISTORY_MAINTENANCE_SECS")]
    pub history_maintenance_secs: Option<u64>,
    /// Time limit of one SQL query in seconds (default 30).
    #[arg(long, env = "INFERDB_SQL_TIMEOUT_SECS")]
    pub sql_timeout_secs: Option<u64>,
    /// Memory limit of one SQL query in bytes (default 512 MiB).
    #[arg(long, env = "INFERDB_SQL_MEMORY_BYTES")]
    pub sql_memory_bytes: Option<usize>,
    /// Most rows one SQL query returns; the rest is cut off (default 100,000).
    #[arg(long, env = "INFERDB_SQL_MAX_ROWS")]
    pub sql_max_rows: Option<usize>,
}

/// The same keys in a TOML file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    spec: Option<PathBuf>,
    listen: Option<SocketAddr>,
    fsync: Option<String>,
    inference_commit: Option<String>,
    max_body_bytes: Option<usize>,
    hot_records_per_entity: Option<usize>,
    hot_tier_bytes: Option<usize>,
    queue_depth: Option<usize>,
    snapshot_interval_secs: Option<u64>,
    shards: Option<usize>,
    max_keys_per_read: Option<usize>,
    worker_threads: Option<usize>,
    model_repository: Option<PathBuf>,
    repository_poll_secs: Option<u64>,
    history_flush_rows: Option<usize>,
    history_flush_secs: Option<u64>,
    history_maintenance_secs: Option<u64>,
    sql_timeout_secs: Option<u64>,
    sql_memory_bytes: Option<usize>,
    sql_max_rows: Option<usize>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest batch feature read.
    pub max_keys_per_read: usize,
    /// Tokio worker threads; `None` = one per core.
    pub worker_threads: Option<usize>,
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// The model repository, if any.
    pub model_repository: Option<PathBuf>,
    /// How often the repository is rescanned; `None` = never.
    pub repository_poll: Option<Duration>,
    /// Bounds of one SQL query.
    pub sql: SqlOptions,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl ServeArgs {
    /// Layers file and defaults under the flags and validates.
    pub fn resolve(&self) -> anyhow::Result<ServerConfig> {
        let file: FileConfig = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let data_dir = self.data_dir.clone().or(file.data_dir).ok_or_else(|| {
            anyhow::anyhow!("no data directory: pass --data-dir or set INFERDB_DATA_DIR")
        })?;
        let fsync = match (self.fsync, file.fsync) {
            (Some(f), _) => f,
            (None, Some(s)) => s
                .parse()
                .map_err(|e| anyhow::anyhow!("config fsync: {e}"))?,
            (None, None) => FsyncPolicy::Batch,
        };
        let mut engine = EngineConfig::new(data_dir);
        engine.fsync = fsync;
        engine.inference_commit = match (self.inference_commit, file.inference_commit) {
            (Some(c), _) => c,
            (None, Some(s)) => s
                .parse()
                .map_err(|e| anyhow::anyhow!("config inference_commit: {e}"))?,
            (None, None) => InferenceCommit::Sync,
        };
        if let Some(spec) = self.spec.clone().or(file.spec) {
            let text = std::fs::read_to_string(&spec)
                .map_err(|e| anyhow::anyhow!("cannot read spec {}: {e}", spec.display()))?;
            let catalog = inferdb_types::Catalog::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", spec.display()))?;
            engine.spec = Some(catalog.spec);
        }
        if let Some(v) = self.hot_records_per_entity.or(file.hot_records_per_entity) {
            engine.hot_records_per_entity = v;
        }
        if let Some(v) = self.hot_tier_bytes.or(file.hot_tier_bytes) {
            engine.hot_tier_bytes = v;
        }
        if let Some(v) = self.queue_depth.or(file.queue_depth) {
            engine.queue_depth = v;
        }
        if let Some(v) = self.snapshot_interval_secs.or(file.snapshot_interval_secs) {
            engine.snapshot_interval = Duration::from_secs(v.max(1));
        }
        if let Some(v) = self.shards.or(file.shards) {
            anyhow::ensure!((1..=4096).contains(&v), "shards must be between 1 and 4096");
            engine.shards = v;
        }
        if let Some(v) = self.history_flush_rows.or(file.history_flush_rows) {
            engine.history_flush_rows = v.max(1);
        }
        if let Some(v) = self.history_flush_secs.or(file.history_flush_secs) {
            engine.history_flush_interval = Duration::from_secs(v.max(1));
        }
        if let Some(v) = self
            .history_maintenance_secs
            .or(file.history_maintenance_secs)
        {
            engine.history_maintenance_interval = Duration::from_secs(v.max(1));
        }
        let mut sql = SqlOptions::default();
        if let Some(v) = self.sql_timeout_secs.or(file.sql_timeout_secs) {
            sql.timeout = Duration::from_secs(v.max(1));
        }
        if let Some(v) = self.sql_memory_bytes.or(file.sql_memory_bytes) {
            sql.memory_limit = v.max(1 << 20);
        }
        if let Some(v) = self.sql_max_rows.or(file.sql_max_rows) {
            sql.max_rows = v.max(1);
        }
        let listen = match self.listen.or(file.listen) {
            Some(l) => l,
            None => DEFAULT_LISTEN.parse()?,
        };
        Ok(ServerConfig {
            listen,
            max_body_bytes: self
                .max_body_bytes
                .or(file.max_body_bytes)
                .unwrap_or(32 << 20),
            max_keys_per_read: self
                .max_keys_per_read
                .or(file.max_keys_per_read)
                .unwrap_or(1000),
            worker_threads: self.worker_threads.or(file.worker_threads),
            engine,
            model_repository: self.model_repository.clone().or(file.model_repository),
            repository_poll: match self.repository_poll_secs.or(file.repository_poll_secs) {
                Some(0) => None,
                Some(n) => Some(Duration::from_secs(n)),
                None => Some(Duration::from_secs(2)),
            },
            sql,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            "data_dir = \"/tmp/x\"\nfsync = \"none\"\nqueue_depth = 7\nlisten = \"127.0.0.1:9\"\ninference_commit = \"async\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(cfg.clone()),
            queue_depth: Some(9),
            ..Default::default()
        };
        let r = args.resolve().unwrap();
        assert_eq!(r.engine.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(r.engine.fsync, FsyncPolicy::None);
        assert_eq!(r.engine.queue_depth, 9);
        assert_eq!(r.engine.inference_commit, InferenceCommit::Async);
        let flagged = ServeArgs {
            inference_commit: Some(InferenceCommit::Sync),
            ..args.clone()
        };
        assert_eq!(
            flagged.resolve().unwrap().engine.inference_commit,
            InferenceCommit::Sync
        );
        assert_eq!(r.listen.port(), 9);
        assert_eq!(r.max_body_bytes, 32 << 20);

        std::fs::write(&cfg, "data_dir = \"/tmp/x\"\nfsink = \"none\"\n").unwrap();
        let e = args.resolve().unwrap_err().to_string();
        assert!(e.contains("fsink"), "{e}");
        std::fs::write(
            &cfg,
            "data_dir = \"/tmp/x\"\ninference_commit = \"later\"\n",
        )
        .unwrap();
        let e = args.resolve().unwrap_err().to_string();
        assert!(e.contains("inference_commit") && e.contains("later"), "{e}");
        assert_eq!(
            ServeArgs {
                data_dir: Some("/tmp/y".into()),
                ..Default::default()
            }
            .resolve()
            .unwrap()
            .engine
            .inference_commit,
            InferenceCommit::Sync
        );
        assert!(ServeArgs::default().resolve().is_err());
    }
}
