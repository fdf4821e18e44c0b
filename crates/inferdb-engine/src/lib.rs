//! The inferdb database as a value: an [`Engine`] owns the catalog, the
//! write-ahead log (through its writer thread) and the online state, and
//! offers ingest and read methods. No networking: the server crate maps
//! HTTP onto these methods and [`EngineError::kind`] onto status codes.
//!
//! Path of an event: [`Engine::ingest`] decodes and validates the body on
//! the caller's thread ([`parse`]), encodes the good rows and the dead
//! letters into one frame ([`frame`]), and queues it to the writer thread
//! ([`writer`]) — refusing at once with [`EngineError::Overloaded`] when the
//! bounded queue is full. The writer appends the frame, fsyncs per policy
//! (group commit), applies it to online state ([`state`]: windows of every
//! view, hot tier, counters) and acknowledges. Restart = latest snapshot +
//! replay of the frames after it.

pub mod error;
pub mod frame;
mod history;
pub mod hot;
mod key;
pub mod metrics;
pub mod parse;
mod rebuild;
pub mod state;
mod training;
mod writer;

pub use error::EngineError;
pub use frame::DeadLetter;
pub use inferdb_storage::FsyncPolicy;
pub use inferdb_storage::arrow;
pub use inferdb_storage::history::sql::{QueryResult, SqlOptions};
pub use inferdb_storage::history::{History, TableStats};
pub use inferdb_storage::parquet;
pub use parse::{BodyFormat, Rejection};
pub use state::FeatureRow;
pub use writer::BatchAck;

use crate::state::{NO_WATERMARK, OnlineState, StateLimits};
use crate::writer::{Admission, Command, PendingBatch, Writer};
use crossbeam_channel::Sender;
use inferdb_storage::history::latest::{EncodedRow, LatestRows};
use inferdb_storage::history::{HistoryOptions, TableDef};
use inferdb_storage::{Wal, WalOptions, WalReader, read_latest_snapshot};
use inferdb_types::{Catalog, Spec, Timestamp, Value};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Everything needed to open an engine. Defaults suit the reference workload.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the catalog, the log and the snapshots live.
    pub data_dir: PathBuf,
    /// The spec to run; `None` = the one persisted in `data_dir`.
    pub spec: Option<Spec>,
    /// When an acknowledged batch is durable (default `batch`: after the fsync that covers it).
    pub fsync: FsyncPolicy,
    /// Shards of online state per view and of the hot tier per stream.
    pub shards: usize,
    /// Records kept per entity in the hot tier (default 1,000).
    pub hot_records_per_entity: usize,
    /// Memory budget of the hot tier, per stream (default 512 MiB).
    pub hot_tier_bytes: usize,
    /// Dead letters kept in memory per stream (all are in the log).
    pub dead_letters_kept: usize,
    /// Batches waiting for the writer before ingest answers "overloaded".
    pub queue_depth: usize,
    /// Most batches made durable by one fsync.
    pub max_group: usize,
    /// Time between snapshots (taken only if something changed).
    pub snapshot_interval: Duration,
    /// WAL segment size.
    pub wal_segment_bytes: u64,
    /// Flush the history head to Parquet once it holds this many rows.
    pub history_flush_rows: usize,
    /// ... or once its oldest row is this old.
    pub history_flush_interval: Duration,
    /// Time between compaction and retention passes.
    pub history_maintenance_interval: Duration,
    /// Compact a partition once it has this many files.
    pub history_compact_files: usize,
    /// Whether [`Engine::record_inference`] waits for the record to be
    /// durable (default `sync`).
    pub inference_commit: InferenceCommit,
    /// Most `async` inference records waiting for the log at once (a few
    /// KB each; default 4,096: at 10,000 answers a second, a disk stall of
    /// 0.4 s). 0 makes `async` wait as `sync` does.
    pub async_records_max: usize,
}

/// When an inference's answer may go out relative to its record's
/// durability: PostgreSQL's `synchronous_commit`, for the
/// `inference_records` stream only (events are always acknowledged after
/// the fsync policy's sync).
///
/// Under `sync` a slow `fdatasync` (a VM's disk can take 15–75 ms over a
/// few of them a minute, idle or not) holds every answer in flight; under
/// `async` it holds only the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InferenceCommit {
    /// The answer waits until the record is durable (as the fsync policy
    /// says) and readable: every answered inference has its record,
    /// whatever crashes.
    #[default]
    Sync,
    /// The answer goes out once the record is queued for the log, in
    /// order; the writer makes it durable with its next group commit,
    /// about a millisecond later. A crash of the process or the machine in
    /// that window loses the records of the last answers (never a torn log
    /// or a record out of order). A record is readable once durable, so
    /// `GET /v1/inferences/{id}` may miss it for that long. Such records
    /// wait outside the writer's batch queue (`queue_depth`), at most
    /// [`EngineConfig::async_records_max`] of them; past that the answer
    /// waits as under `sync`.
    Async,
}

impl InferenceCommit {
    /// The name used in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            InferenceCommit::Sync => "sync",
            InferenceCommit::Async => "async",
        }
    }
}

impl std::fmt::Display for InferenceCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for InferenceCommit {
    type Err = String;

    /// Parses `sync` or `async` (ASCII case and surrounding whitespace
    /// ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        [InferenceCommit::Sync, InferenceCommit::Async]
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("inference commit {s:?}: expected sync or async"))
    }
}

impl EngineConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            spec: None,
            fsync: FsyncPolicy::Batch,
            shards: 64,
            hot_records_per_entity: 1000,
            hot_tier_bytes: 512 << 20,
            dead_letters_kept: 1000,
            queue_depth: 256,
            max_group: 64,
            snapshot_interval: Duration::from_secs(60),
            wal_segment_bytes: 64 << 20,
            history_flush_rows: 1_000_000,
            history_flush_interval: Duration::from_secs(60),
            history_maintenance_interval: Duration::from_secs(300),
            history_compact_files: 8,
            inference_commit: InferenceCommit::Sync,
            async_records_max: 4096,
        }
    }
}

/// What an ingest call answers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IngestOutcome {
    /// Records stored (durable under the fsync policy).
    pub accepted: usize,
    /// Records refused, with index, field and reason.
    pub rejected: Vec<Rejection>,
}

/// Counters of a stream.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamStats {
    /// Stream name.
    pub stream: String,
    /// Records stored (including late ones).
    pub events_stored: u64,
    /// Records rejected by validation.
    pub events_rejected: u64,
    /// Stored records that arrived beyond the allowed lateness.
    pub events_late: u64,
    /// Largest event time seen, RFC 3339; null before the first event.
    pub watermark: Option<String>,
    /// The same in epoch milliseconds.
    pub watermark_ms: Option<i64>,
    /// Keys with state in each view over this stream.
    pub entities: Vec<(String, usize)>,
    /// Bytes held by the stream's hot tier.
    pub hot_tier_bytes: usize,
}

/// What an erasure removed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Erasure {
    /// The entity key.
    pub key: String,
    /// The WAL seq of the erasure record.
    pub seq: u64,
    /// Recent records removed from the hot tier.
    pub hot_records: usize,
    /// Rows removed from the history (head and Parquet files).
    pub history_rows: u64,
}

/// What recovery found at open.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryInfo {
    /// Sequence number of the snapshot used, if any.
    pub snapshot_seq: Option<u64>,
    /// Rows the online state was rebuilt from, when it was rebuilt from
    /// the history (no usable snapshot and a truncated log).
    pub rebuilt_rows: Option<u64>,
    /// Frames replayed from the log after it.
    pub frames_replayed: u64,
    /// Bytes of a torn tail that were cut off.
    pub truncated_bytes: u64,
    /// Time recovery took.
    pub millis: u64,
}

/// Metric handles registered once at open (a labelled macro call per
/// request would hash and allocate its labels every time).
struct Handles {
    reads: Vec<::metrics::Counter>,
    batches: Vec<::metrics::Counter>,
    overloaded: ::metrics::Counter,
}

struct Inner {
    handles: Handles,
    catalog: Arc<Catalog>,
    state: Arc<OnlineState>,
    tx: Sender<Command>,
    writer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    applied_seq: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    /// Places taken in the writer's queue: batches, and `async` inference
    /// records apart (not counted among the batches).
    admission: Arc<Admission>,
    queue_depth: usize,
    async_records_max: usize,
    inference_commit: InferenceCommit,
    /// Next ticket: the order in which batches are logged.
    tickets: AtomicU64,
    recovery: RecoveryInfo,
    data_dir: PathBuf,
    history: inferdb_storage::history::History,
    history_tx: Sender<history::HistoryMsg>,
    history_threads: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
    flush_stop: Arc<AtomicBool>,
}

/// The database. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

const CATALOG_FILE: &str = "catalog.json";

impl Engine {
    /// Opens (or creates) a database: resolves the catalog, recovers state
    /// from the latest snapshot and the log, and starts the writer thread.
    /// Blocking.
    pub fn open(cfg: EngineConfig) -> Result<Engine, EngineError> {
        let started = Instant::now();
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            EngineError::Unavailable(format!("cannot create {}: {e}", cfg.data_dir.display()))
        })?;
        let catalog = Arc::new(resolve_catalog(&cfg.data_dir, cfg.spec.clone())?);
        let limits = StateLimits {
            shards: cfg.shards.max(1),
            hot_records_per_entity: cfg.hot_records_per_entity.max(1),
            hot_tier_bytes: cfg.hot_tier_bytes,
            dead_letters_kept: cfg.dead_letters_kept,
        };
        let lock_path = cfg.data_dir.join("LOCK");
        let lock = std::fs::File::create(&lock_path).map_err(|e| {
            EngineError::Unavailable(format!("cannot create {}: {e}", lock_path.display()))
        })?;
        if lock.try_lock().is_err() {
            return Err(EngineError::Unavailable(format!(
                "{} is in use by another inferdb process",
                cfg.data_dir.display()
            )));
        }
        let wal_dir = cfg.data_dir.join("wal");
        let snap_dir = cfg.data_dir.join("snapshots");
        std::fs::create_dir_all(&snap_dir).map_err(|e| {
            EngineError::Unavailable(format!("cannot create {}: {e}", snap_dir.display()))
        })?;
        let (wal, report) = Wal::open(WalOptions {
            dir: wal_dir.clone(),
            segment_bytes: cfg.wal_segment_bytes,
        })?;

        // The log may start after seq 1: segments behind both the snapshot
        // and the history's flushed seq are deleted (see `Writer::truncate`).
        let first_seq = wal.first_seq();
        let mut snapshot_seq = None;
        let mut state = None;
        if let Some((seq, bytes)) = read_latest_snapshot(&snap_dir)? {
            match OnlineState::restore(&catalog, limits.clone(), &bytes) {
                Ok(Some(_)) if seq + 1 < first_seq => tracing::warn!(
                    seq,
                    first_seq,
                    "the log no longer reaches back to the snapshot; rebuilding from the history"
                ),
                Ok(Some((s, sseq))) if sseq == seq && seq < wal.next_seq() => {
                    snapshot_seq = Some(seq);
                    state = Some(s);
                }
                Ok(_) => tracing::info!(
                    seq,
                    "snapshot is for another spec or layout; replaying the whole log"
                ),
                Err(e) => {
                    tracing::warn!(seq, error = %e, "snapshot unreadable; replaying the whole log")
                }
            }
        }
        let state = state.unwrap_or_else(|| OnlineState::new(&catalog, limits));
        let mut hopts = HistoryOptions::new(cfg.data_dir.join("history"));
        hopts.flush_rows = cfg.history_flush_rows.max(1);
        hopts.flush_interval = cfg.history_flush_interval;
        hopts.compact_files = cfg.history_compact_files.max(2);
        let history = inferdb_storage::history::History::open(
            hopts,
            TableDef::all(&catalog),
            inferdb_storage::history::CaggDef::all(&catalog),
        )?;
        let dead_table = catalog.streams.len();
        if history.flushed_seq() + 1 < first_seq {
            return Err(EngineError::Catalog(format!(
                "the log starts at seq {first_seq} but the history holds only up to seq {}: \
                 the history directory was lost or replaced",
                history.flushed_seq()
            )));
        }
        // Without a usable snapshot and with the log's start deleted, the
        // online state is rebuilt from the history once the head holds the
        // log's frames; until then frames go to the history only.
        let rebuild = snapshot_seq.is_none() && first_seq > 1;
        // Frames after `to_state` go to online state (none when it is
        // rebuilt); frames after the last history flush to the history head.
        let to_state = (!rebuild).then(|| snapshot_seq.unwrap_or(0));
        let applies = |seq: u64| to_state.is_some_and(|s| seq > s);
        let from = to_state.map_or(history.flushed_seq(), |s| s.min(history.flushed_seq())) + 1;
        let mut replayed = 0u64;
        let mut last = to_state.unwrap_or(first_seq.saturating_sub(1));
        for f in WalReader::open(&wal_dir, from)? {
            let f = f?;
            if f.kind == frame::KIND_BATCH {
                let mut b = frame::decode(f.payload)?;
                let Some(si) = catalog.stream_index(&b.stream) else {
                    return Err(EngineError::Catalog(format!(
                        "the log holds events of stream {:?}, which the spec no longer declares",
                        b.stream
                    )));
                };
                history::append(&history, dead_table, f.seq, si, &b);
                if applies(f.seq) {
                    state.apply(&catalog, si, &mut b);
                }
            } else if f.kind == frame::KIND_ERASE {
                let key = String::from_utf8_lossy(&f.payload).into_owned();
                if applies(f.seq) {
                    state.erase(&catalog, &key);
                }
                if f.seq > history.flushed_seq() {
                    history.erase(f.seq, &history::erase_tables(&history), &key)?;
                }
            } else {
                history.append(f.seq, &[]);
            }
            if applies(f.seq) {
                replayed += 1;
            }
            last = last.max(f.seq);
        }
        let rebuilt_rows = if rebuild {
            Some(rebuild::from_history(&catalog, &state, &history)?)
        } else {
            None
        };
        let recovery = RecoveryInfo {
            snapshot_seq,
            rebuilt_rows,
            frames_replayed: replayed,
            truncated_bytes: report.truncated_bytes,
            millis: started.elapsed().as_millis() as u64,
        };
        tracing::info!(?recovery, "recovered");

        let state = Arc::new(state);
        let applied_seq = Arc::new(AtomicU64::new(last));
        let failed = Arc::new(AtomicBool::new(false));
        // Unbounded channel, bounded by admission (`queued`): a Skip for a
        // failed request must never be refused.
        let (tx, rx) = crossbeam_channel::unbounded();
        let admission = Arc::new(Admission::default());
        let (history_tx, history_rx) = crossbeam_channel::unbounded();
        let flush_stop = Arc::new(AtomicBool::new(false));
        let mut history_threads = Vec::new();
        {
            let h = history.clone();
            history_threads.push(
                std::thread::Builder::new()
                    .name("inferdb-history".into())
                    .spawn(move || history::run_appender(h, dead_table, history_rx))
                    .map_err(|e| {
                        EngineError::Internal(format!("cannot start the history thread: {e}"))
                    })?,
            );
            let h = history.clone();
            let stop = flush_stop.clone();
            let every = cfg.history_maintenance_interval;
            history_threads.push(
                std::thread::Builder::new()
                    .name("inferdb-flush".into())
                    .spawn(move || history::run_flusher(h, every, stop))
                    .map_err(|e| {
                        EngineError::Internal(format!("cannot start the flush thread: {e}"))
                    })?,
            );
        }
        let writer = Writer {
            history_tx: history_tx.clone(),
            history: history.clone(),
            snapshot_at_start: rebuild,
            catalog: catalog.clone(),
            state: state.clone(),
            wal,
            fsync: cfg.fsync,
            snapshot_dir: snap_dir,
            snapshot_interval: cfg.snapshot_interval,
            max_group: cfg.max_group.max(1),
            applied_seq: applied_seq.clone(),
            failed: failed.clone(),
            admission: admission.clone(),
            lock,
            events: Vec::new(),
            syncer: None,
            snapshotter: None,
        };
        let handle = std::thread::Builder::new()
            .name("inferdb-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| EngineError::Internal(format!("cannot start the WAL thread: {e}")))?;
        let handles = Handles {
            reads: catalog
                .views
                .iter()
                .map(|v| ::metrics::counter!(metrics::FEATURE_READS_TOTAL, "view" => v.name.clone()))
                .collect(),
            batches: catalog
                .streams
                .iter()
                .map(|s| ::metrics::counter!(metrics::INGEST_BATCHES_TOTAL, "stream" => s.name.clone()))
                .collect(),
            overloaded: ::metrics::counter!(metrics::INGEST_OVERLOADED_TOTAL),
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                handles,
                catalog,
                state,
                tx,
                writer: parking_lot::Mutex::new(Some(handle)),
                applied_seq,
                failed,
                admission,
                queue_depth: cfg.queue_depth.max(1),
                async_records_max: cfg.async_records_max,
                inference_commit: cfg.inference_commit,
                tickets: AtomicU64::new(0),
                recovery,
                data_dir: cfg.data_dir,
                history,
                history_tx,
                history_threads: parking_lot::Mutex::new(history_threads),
                flush_stop,
            }),
        })
    }

    /// The catalog in force.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// What recovery did at open.
    pub fn recovery(&self) -> &RecoveryInfo {
        &self.inner.recovery
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Whether the engine accepts writes (false after a failed fsync).
    pub fn is_healthy(&self) -> bool {
        !self.inner.failed.load(Ordering::Acquire)
    }

    fn stream_index(&self, stream: &str) -> Result<usize, EngineError> {
        self.inner
            .catalog
            .stream_index(stream)
            .ok_or_else(|| EngineError::UnknownStream(stream.to_string()))
    }

    fn view_index(&self, view: &str) -> Result<usize, EngineError> {
        self.inner
            .catalog
            .view_index(view)
            .ok_or_else(|| EngineError::UnknownView(view.to_string()))
    }

    /// Validates a body of records and queues the good ones (and the dead
    /// letters) for the log. Returns a handle that resolves once the batch
    /// is durable and applied. CPU-bound: decode happens on the caller's thread.
    pub fn submit(
        &self,
        stream: &str,
        body: &[u8],
        format: BodyFormat,
    ) -> Result<Submitted, EngineError> {
        let si = self.stream_index(stream)?;
        let inner = &*self.inner;
        let ticket = self.admit()?;
        let parsed = parse::parse_batch(&inner.catalog.streams[si], body, format)
            .map_err(|e| EngineError::InvalidInput(e.0))?;
        let received_ms = Timestamp::now().0;
        let dead: Vec<DeadLetter> = parsed
            .rejected
            .iter()
            .map(|(r, raw)| DeadLetter {
                index: r.index as u32,
                field: r.field.clone(),
                reason: r.reason.clone(),
                raw: raw.clone(),
                received_ms,
            })
            .collect();
        let rejected: Vec<Rejection> = parsed.rejected.into_iter().map(|(r, _)| r).collect();
        self.enqueue(ticket, si, parsed.rows, dead, rejected, received_ms)
    }

    /// Queues rows that inferdb built itself (the inference records of
    /// `/infer`) for the log, like [`Engine::submit`] without the JSON: each
    /// row is checked against the stream's fields (count, types, required),
    /// and a row that does not fit refuses the whole call.
    pub fn submit_rows(
        &self,
        stream: &str,
        rows: Vec<Vec<Value>>,
    ) -> Result<Submitted, EngineError> {
        let si = self.stream_index(stream)?;
        self.check_rows(si, &rows)?;
        let ticket = self.admit()?;
        self.enqueue(ticket, si, rows, Vec::new(), Vec::new(), Timestamp::now().0)
    }

    /// Whether every row has the stream's arity and field types.
    fn check_rows(&self, si: usize, rows: &[Vec<Value>]) -> Result<(), EngineError> {
        let s = &self.inner.catalog.streams[si];
        for (i, row) in rows.iter().enumerate() {
            if row.len() != s.fields.len() {
                return Err(EngineError::InvalidInput(format!(
                    "row {i} has {} values; stream {} has {} fields",
                    row.len(),
                    s.name,
                    s.fields.len()
                )));
            }
            for (v, f) in row.iter().zip(&s.fields) {
                let ok = match v {
                    Value::Null => !f.required,
                    other => other.field_type() == Some(f.ty),
                };
                if !ok {
                    return Err(EngineError::InvalidInput(format!(
                        "row {i}: field {} of stream {} cannot hold {v:?}",
                        f.name, s.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Logs an inference record (a row of the `inference_records` stream)
    /// and returns as the configured [`InferenceCommit`] says: once it is
    /// durable and readable (`sync`), or once it is queued for the log
    /// (`async`, unless [`EngineConfig::async_records_max`] records
    /// already wait).
    pub async fn record_inference(&self, row: Vec<Value>) -> Result<(), EngineError> {
        let si = self.stream_index(inferdb_types::INFERENCE_STREAM)?;
        let rows = vec![row];
        self.check_rows(si, &rows)?;
        let now = Timestamp::now().0;
        if self.inner.inference_commit == InferenceCommit::Async
            && let Some(ticket) = self.admit_detached()
        {
            // The writer still logs, applies and acknowledges it; nobody
            // waits for the acknowledgement.
            self.enqueue(ticket, si, rows, Vec::new(), Vec::new(), now)?;
            return Ok(());
        }
        let ticket = self.admit()?;
        self.enqueue(ticket, si, rows, Vec::new(), Vec::new(), now)?
            .wait()
            .await
            .map(|_| ())
    }

    /// Admission of an `async` inference record: `None` when the writer
    /// failed or `async_records_max` records already wait (the caller then takes
    /// the waiting path, which reports a failure).
    fn admit_detached(&self) -> Option<Ticket<'_>> {
        let inner = &*self.inner;
        if inner.failed.load(Ordering::Acquire) {
            return None;
        }
        if inner.admission.detached.fetch_add(1, Ordering::AcqRel) >= inner.async_records_max {
            inner.admission.release(true);
            return None;
        }
        Some(Ticket {
            inner,
            n: inner.tickets.fetch_add(1, Ordering::AcqRel),
            live: true,
            detached: true,
        })
    }

    /// Admission (fail fast when the writer is behind or failed), then the
    /// ticket that fixes the batch's place in the log. Dropping the ticket
    /// unused tells the writer to skip its number.
    fn admit(&self) -> Result<Ticket<'_>, EngineError> {
        let inner = &*self.inner;
        if inner.failed.load(Ordering::Acquire) {
            return Err(EngineError::Unavailable(
                "an earlier WAL write failed; restart the server".into(),
            ));
        }
        if inner.admission.queued.fetch_add(1, Ordering::AcqRel) >= inner.queue_depth {
            inner.admission.release(false);
            inner.handles.overloaded.increment(1);
            return Err(EngineError::Overloaded);
        }
        Ok(Ticket {
            inner,
            n: inner.tickets.fetch_add(1, Ordering::AcqRel),
            live: true,
            detached: false,
        })
    }

    /// Frames a validated batch and hands it to the writer under `ticket`.
    fn enqueue(
        &self,
        mut ticket: Ticket<'_>,
        si: usize,
        rows: Vec<Vec<Value>>,
        dead: Vec<DeadLetter>,
        rejected: Vec<Rejection>,
        received_ms: i64,
    ) -> Result<Submitted, EngineError> {
        let inner = &*self.inner;
        let stream = inner.catalog.streams[si].name.as_str();
        let accepted = rows.len();
        let (payload, spans) = frame::encode(stream, received_ms, &rows, &dead);
        let mut batch = frame::BatchFrame {
            stream: stream.to_string(),
            received_ms,
            rows,
            dead,
            payload,
            spans,
            routes: Vec::new(),
            records: Vec::new(),
        };
        inner.state.prepare(&inner.catalog, si, &mut batch);
        let (ack_tx, ack_rx) = oneshot::channel();
        let pending = PendingBatch {
            stream: si,
            rejected: batch.dead.len() as u64,
            batch,
            enqueued: Instant::now(),
            ack: ack_tx,
            detached: ticket.detached,
        };
        ticket.live = false;
        if inner
            .tx
            .send(Command::Batch(ticket.n, Box::new(pending)))
            .is_err()
        {
            inner.admission.release(ticket.detached);
            return Err(EngineError::Unavailable(
                "the engine is shutting down".into(),
            ));
        }
        inner.handles.batches[si].increment(1);
        Ok(Submitted {
            rx: ack_rx,
            outcome: IngestOutcome { accepted, rejected },
        })
    }

    /// [`Engine::submit`] then wait (async) for durability.
    pub async fn ingest(
        &self,
        stream: &str,
        body: &[u8],
        format: BodyFormat,
    ) -> Result<IngestOutcome, EngineError> {
        self.submit(stream, body, format)?.wait().await
    }

    /// [`Engine::submit`] then wait (blocking) for durability.
    pub fn ingest_blocking(
        &self,
        stream: &str,
        body: &[u8],
        format: BodyFormat,
    ) -> Result<IngestOutcome, EngineError> {
        self.submit(stream, body, format)?.wait_blocking()
    }

    /// Evaluates features of `keys` in `view`, at `as_of` (epoch ms) or at
    /// the stream's watermark. An `as_of` before the watermark is refused:
    /// online state only looks forward; point-in-time reads of the past are
    /// the job of the history (training-data export).
    pub fn read_features(
        &self,
        view: &str,
        keys: &[&str],
        as_of: Option<i64>,
    ) -> Result<Vec<FeatureRow>, EngineError> {
        let vi = self.view_index(view)?;
        let v = &self.inner.catalog.views[vi];
        if let Some(t) = as_of {
            let wm = self.inner.state.streams[v.stream]
                .watermark
                .load(Ordering::Acquire);
            if wm != NO_WATERMARK && t < wm {
                return Err(EngineError::InvalidInput(format!(
                    "as_of {} is before the watermark {} of stream {}; online reads look at the present",
                    Timestamp(t),
                    Timestamp(wm),
                    self.inner.catalog.streams[v.stream].name
                )));
            }
        }
        let rows = self.inner.state.read(&self.inner.catalog, vi, keys, as_of);
        if let Some(t) = as_of
            && rows.iter().any(|r| r.as_of.is_some_and(|a| a != t))
        {
            return Err(EngineError::InvalidInput(format!(
                "as_of {} fell behind the watermark while reading; retry",
                Timestamp(t)
            )));
        }
        self.inner.handles.reads[vi].increment(rows.len() as u64);
        Ok(rows)
    }

    /// Names of a view's features, in order.
    pub fn feature_names(&self, view: &str) -> Result<Vec<String>, EngineError> {
        let vi = self.view_index(view)?;
        Ok(self.inner.catalog.views[vi]
            .features
            .iter()
            .map(|f| f.name.clone())
            .collect())
    }

    /// Up to `limit` most recent records of `key` in `stream`, newest first,
    /// as JSON objects.
    pub fn recent_records(
        &self,
        stream: &str,
        key: &str,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, EngineError> {
        let si = self.stream_index(stream)?;
        let s = &self.inner.catalog.streams[si];
        self.inner
            .state
            .recent(si, key, limit)
            .into_iter()
            .map(|r| {
                inferdb_types::codec::Decoder::new(&r.bytes)
                    .row()
                    .map(|row| row_to_json(s, &row))
                    .map_err(EngineError::from)
            })
            .collect()
    }

    /// The record of `stream` whose id field equals `id` (the built-in
    /// `inference_records` stream: its `inference_id`), as a JSON object,
    /// while it is in the hot tier.
    pub fn record_by_id(
        &self,
        stream: &str,
        id: &str,
    ) -> Result<Option<serde_json::Value>, EngineError> {
        let si = self.stream_index(stream)?;
        let s = &self.inner.catalog.streams[si];
        match self.inner.state.by_id(si, id) {
            Some(r) => Ok(Some(row_to_json(
                s,
                &inferdb_types::codec::Decoder::new(&r.bytes).row()?,
            ))),
            None => Ok(None),
        }
    }

    /// Like [`Engine::record_by_id`], but a record no longer in the hot
    /// tier is looked up in the history (its Parquet files carry a bloom
    /// filter on the id column, so most row groups are skipped unread).
    pub async fn find_record_by_id(
        &self,
        stream: &str,
        id: &str,
        opts: &SqlOptions,
    ) -> Result<Option<serde_json::Value>, EngineError> {
        if let Some(r) = self.record_by_id(stream, id)? {
            return Ok(Some(r));
        }
        let si = self.stream_index(stream)?;
        let s = &self.inner.catalog.streams[si];
        let Some(col) = s.id_field else {
            return Ok(None);
        };
        let row = self.inner.history.find_row(si, col, id, opts).await?;
        Ok(row.map(|r| row_to_json(s, &r)))
    }

    /// The most recent dead letters of a stream, newest first.
    pub fn dead_letters(&self, stream: &str, limit: usize) -> Result<Vec<DeadLetter>, EngineError> {
        let si = self.stream_index(stream)?;
        Ok(self.inner.state.dead_letters(si, limit))
    }

    /// Counters and watermark of a stream.
    pub fn stream_stats(&self, stream: &str) -> Result<StreamStats, EngineError> {
        let si = self.stream_index(stream)?;
        let c = &self.inner.catalog;
        let st = &self.inner.state.streams[si];
        let wm = st.watermark.load(Ordering::Acquire);
        let wm = (wm != NO_WATERMARK).then_some(wm);
        let entities = c.streams[si]
            .views
            .iter()
            .map(|&vi| (c.views[vi].name.clone(), self.inner.state.entity_count(vi)))
            .collect();
        Ok(StreamStats {
            stream: stream.to_string(),
            events_stored: st.stored.load(Ordering::Relaxed),
            events_rejected: st.rejected.load(Ordering::Relaxed),
            events_late: st.late.load(Ordering::Relaxed),
            watermark: wm.map(|t| Timestamp(t).to_rfc3339()),
            watermark_ms: wm,
            entities,
            hot_tier_bytes: self.inner.state.hot_bytes(si),
        })
    }

    /// Refreshes gauges that are costly to keep live (entity counts, hot
    /// tier bytes); the server calls it when `/metrics` is scraped.
    pub fn update_gauges(&self) {
        let c = &self.inner.catalog;
        for (vi, v) in c.views.iter().enumerate() {
            ::metrics::gauge!(metrics::ONLINE_ENTITIES, "view" => v.name.clone())
                .set(self.inner.state.entity_count(vi) as f64);
        }
        for (si, s) in c.streams.iter().enumerate() {
            ::metrics::gauge!(metrics::HOT_TIER_BYTES, "stream" => s.name.clone())
                .set(self.inner.state.hot_bytes(si) as f64);
        }
    }

    /// Sequence number of the last frame applied to online state.
    pub fn applied_seq(&self) -> u64 {
        self.inner.applied_seq.load(Ordering::Acquire)
    }

    /// Takes a snapshot now (blocking); returns the sequence number it covers.
    pub fn snapshot_blocking(&self) -> Result<u64, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Snapshot(tx))
            .map_err(|_| EngineError::Unavailable("the engine is shutting down".into()))?;
        rx.blocking_recv()
            .map_err(|_| EngineError::Internal("the WAL thread stopped".into()))?
    }

    /// Stops the writer at once without syncing or snapshotting, as a crash
    /// would (acknowledged batches are already durable). For tests.
    #[doc(hidden)]
    pub fn abort(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Abort(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
        if let Some(h) = self.inner.writer.lock().take() {
            let _ = h.join();
        }
        // No final flush: what is not in Parquet yet is in the log.
        self.inner.flush_stop.store(true, Ordering::Release);
        let threads = std::mem::take(&mut *self.inner.history_threads.lock());
        if let Some(flusher) = threads.into_iter().nth(1) {
            let _ = flusher.join();
        }
    }

    /// Logs what is queued, syncs, writes a final snapshot and stops the
    /// writer, then flushes the history. Blocking; later ingest calls fail
    /// with `Unavailable`.
    pub fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Shutdown(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
        if let Some(h) = self.inner.writer.lock().take() {
            let _ = h.join();
        }
        self.inner.flush_stop.store(true, Ordering::Release);
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .history_tx
            .send(history::HistoryMsg::Close(tx))
            .is_ok()
        {
            let _ = rx.blocking_recv();
        }
        for h in std::mem::take(&mut *self.inner.history_threads.lock()) {
            let _ = h.join();
        }
    }

    /// Forgets an entity (right to be forgotten): its online state in
    /// every view keyed by a stream's key, its recent records, its rows in
    /// every stream's history (head and Parquet files, rewritten) and so
    /// its inference records, and the continuous aggregates' inputs. An
    /// erasure record in the WAL makes a restart redo it rather than bring
    /// the entity back; a snapshot is taken right after it. Blocking.
    pub fn erase(&self, key: &str) -> Result<Erasure, EngineError> {
        if key.is_empty() {
            return Err(EngineError::InvalidInput("the key is empty".into()));
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Erase(key.to_string(), tx))
            .map_err(|_| EngineError::Unavailable("the engine is shutting down".into()))?;
        rx.blocking_recv()
            .map_err(|_| EngineError::Internal("the WAL thread stopped".into()))?
    }

    /// The history (Parquet files and head) of every stream.
    pub fn history(&self) -> &inferdb_storage::history::History {
        &self.inner.history
    }

    /// Runs one SQL statement over the history (call
    /// [`Engine::history_caught_up`] first to see every acknowledged
    /// batch). A query for one entity's latest rows of a stream
    /// (`… WHERE key = 'k' ORDER BY time DESC LIMIT n`) runs on the hot
    /// tier's records of that entity instead of the files when the hot
    /// tier holds exactly its `n` latest (`QueryResult::from_memory`).
    pub async fn query(&self, sql: &str, opts: &SqlOptions) -> Result<QueryResult, EngineError> {
        let me = self.clone();
        self.inner
            .history
            .query_latest(sql, opts, move |want| me.latest_rows(want))
            .await
            .map_err(EngineError::from)
    }

    /// Answers `sql` at once, from the hot tier and without planning it,
    /// when it is an entity's-latest-rows query of a shape planned before
    /// (see `inferdb_storage::history::latest`) and the hot tier holds
    /// those rows exactly; `None` otherwise: run [`Engine::query`].
    pub fn query_from_memory(
        &self,
        sql: &str,
        opts: &SqlOptions,
    ) -> Option<Result<QueryResult, EngineError>> {
        let r = self
            .inner
            .history
            .query_prepared(sql, opts, |want| self.latest_rows(want))?;
        Some(r.map_err(EngineError::from))
    }

    /// The entity's latest stored rows, newest first, when the hot tier
    /// can vouch for them (see `HotShard::recent_exact`) and the stream's
    /// retention cannot have dropped them from the files.
    fn latest_rows(&self, want: &LatestRows) -> Option<Vec<EncodedRow>> {
        // History tables are the streams, in order, then the rest.
        let keep = self.inner.catalog.streams.get(want.table)?.retention_ms;
        let recs = self
            .inner
            .state
            .recent_exact(want.table, &want.key, want.limit)?;
        // Rows that retention may have dropped from the files are left to
        // the files to answer.
        if let (Some(keep), Some(oldest)) = (keep, recs.last())
            && oldest.ts < inferdb_types::Timestamp::now().millis() - keep
        {
            return None;
        }
        Some(recs.into_iter().map(|r| r.bytes).collect())
    }

    /// Waits (blocking, up to 10 s) until the history holds every batch
    /// acknowledged so far, so that a query sees them; false on timeout.
    pub fn history_caught_up(&self) -> bool {
        history::catch_up(&self.inner.history, self.applied_seq())
    }
}

/// A batch's place in the log, released with a `Skip` if the request
/// fails before it becomes a batch (decode error, panic).
struct Ticket<'a> {
    inner: &'a Inner,
    n: u64,
    live: bool,
    /// Admitted as an `async` inference record (counted in `detached`).
    detached: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.live {
            self.inner.admission.release(self.detached);
            let _ = self.inner.tx.send(Command::Skip(self.n));
        }
    }
}

/// A queued batch: its validation outcome, and a handle on its durability.
pub struct Submitted {
    rx: oneshot::Receiver<Result<BatchAck, EngineError>>,
    outcome: IngestOutcome,
}

impl Submitted {
    /// Waits until the batch is durable and applied.
    pub async fn wait(self) -> Result<IngestOutcome, EngineError> {
        let ack = self.rx.await;
        Self::outcome(ack, self.outcome)
    }

    /// Blocking [`Submitted::wait`].
    pub fn wait_blocking(self) -> Result<IngestOutcome, EngineError> {
        let ack = self.rx.blocking_recv();
        Self::outcome(ack, self.outcome)
    }

    fn outcome(
        ack: Result<Result<BatchAck, EngineError>, oneshot::error::RecvError>,
        outcome: IngestOutcome,
    ) -> Result<IngestOutcome, EngineError> {
        match ack {
            Ok(Ok(_)) => Ok(outcome),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(EngineError::Unavailable("the WAL thread stopped".into())),
        }
    }
}

/// A row as a JSON object keyed by field name (nulls omitted).
pub fn row_to_json(stream: &inferdb_types::Stream, row: &[Value]) -> serde_json::Value {
    let mut m = serde_json::Map::with_capacity(row.len());
    for (f, v) in stream.fields.iter().zip(row) {
        if !v.is_null() {
            m.insert(f.name.clone(), v.to_json());
        }
    }
    serde_json::Value::Object(m)
}

/// Chooses the catalog: the given spec (persisted if new or if only views
/// changed) or the one persisted in the data directory. Changing a stream's
/// fields is refused: rows in the log are positional.
fn resolve_catalog(dir: &Path, given: Option<Spec>) -> Result<Catalog, EngineError> {
    let path = dir.join(CATALOG_FILE);
    let persisted: Option<Spec> = match std::fs::read(&path) {
        Ok(b) => Some(serde_json::from_slice(&b).map_err(|e| {
            EngineError::Catalog(format!("{} is not a valid catalog: {e}", path.display()))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(EngineError::Unavailable(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    let spec = match (given, persisted) {
        (None, None) => {
            return Err(EngineError::Catalog(format!(
                "no spec: {} has no catalog yet, so pass one (--spec FILE)",
                dir.display()
            )));
        }
        (None, Some(p)) => return Ok(Catalog::new(p)?),
        (Some(g), Some(p)) if g == p => return Ok(Catalog::new(g)?),
        (Some(g), Some(p)) => {
            for ps in &p.streams {
                match g.streams.iter().find(|s| s.name == ps.name) {
                    Some(gs)
                        if gs.fields == ps.fields
                            && gs.key == ps.key
                            && gs.time_field == ps.time_field => {}
                    _ => {
                        return Err(EngineError::Catalog(format!(
                            "stream {:?} differs from the one stored in {}: changing or removing a stream's \
                             fields, key or time field is not supported yet (use a new data directory)",
                            ps.name,
                            dir.display()
                        )));
                    }
                }
            }
            tracing::info!("spec changed; online state will be rebuilt from the log");
            g
        }
        (Some(g), None) => g,
    };
    let catalog = Catalog::new(spec)?;
    let tmp = dir.join(format!("{CATALOG_FILE}.tmp"));
    let text = serde_json::to_vec_pretty(&catalog.spec)
        .map_err(|e| EngineError::Internal(format!("catalog encoding: {e}")))?;
    let io = |e: std::io::Error| {
        EngineError::Unavailable(format!("cannot write {}: {e}", path.display()))
    };
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(catalog)
}
