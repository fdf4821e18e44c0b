//! History: every event and inference record, kept as time-partitioned
//! Parquet files plus an in-memory head, queryable with SQL ([`sql`]).
//!
//! Rows enter the **head** ([`History::append`], from the engine's history
//! thread, in WAL order, each call stamped with its frame's seq). The head
//! is per table a list of sealed Arrow batches plus open column builders.
//! A **flush** ([`History::flush`]) moves the whole head out: per table and
//! partition (event time floored to the table's chunk interval) it sorts
//! the rows by (entity key, time) and writes one zstd Parquet file
//! (`<dir>/<table>/<partition ms>/<n>.parquet`, via `.tmp` + fsync +
//! rename), then commits a new [`manifest::Manifest`] listing the files and
//! `flushed_seq`, the WAL seq up to which every frame is in files. Until the
//! manifest commit, queries keep seeing those rows in memory; after it, in
//! files: never both, never neither.
//!
//! The WAL may be truncated only behind `flushed_seq` (and the snapshot):
//! after a crash, the engine replays the frames after `flushed_seq` into the
//! head again. A crash at any step of a flush, compaction or retention pass
//! leaves either the old manifest (new files are orphans, deleted at open;
//! their rows come back from the WAL) or the new one (old files are
//! orphans): nothing lost, nothing twice.
//!
//! **Compaction** ([`History::maintain`]) rewrites a partition whose files
//! have piled up into one file; a partition older than the table's
//! `compress_after` is rewritten once at a higher zstd level. **Retention**
//! drops partitions older than the table's limit. Replaced files are deleted
//! after a grace period, so queries that already listed them finish.

mod cagg;
mod columns;
mod files;
pub mod latest;
mod manifest;
pub mod sql;

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use inferdb_types::{Catalog, FieldType, Stream, Value};
use parking_lot::{Condvar, Mutex, RwLock};

pub use cagg::{BUCKET_ORIGIN_MS, CaggDef};
pub use columns::{UTC, arrow_type, schema_of};
pub use manifest::{FileMeta, KeyBound, Manifest};

use crate::StorageError;
use columns::RowBuilder;
use files::{NewFile, read_file, sort_rows, write_file};

/// The table of rejected records.
pub const DEAD_LETTERS: &str = "dead_letters";

/// Rows per sealed head batch.
const SEAL_ROWS: usize = 8 * 1024;

/// Steps of a flush or compaction at which a test can make the call fail
/// as a crash would, leaving the files as they are at that point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// A data file is written and fsynced under its `.tmp` name.
    DataWritten,
    /// The new manifest is written and fsynced under its `.tmp` name.
    ManifestWritten,
    /// The new manifest has replaced the old one.
    ManifestCommitted,
}

thread_local! {
    static FAIL_AT: Cell<Option<FailPoint>> = const { Cell::new(None) };
}

/// Makes the next flush, compaction or retention pass **on this thread**
/// fail at `point` (tests of crash safety); `None` clears it.
pub fn fail_at(point: Option<FailPoint>) {
    FAIL_AT.with(|f| f.set(point));
}

pub(crate) fn failpoint(at: FailPoint) -> Result<(), StorageError> {
    if FAIL_AT.with(|f| f.get()) == Some(at) {
        FAIL_AT.with(|f| f.set(None));
        return Err(StorageError::Injected(format!("{at:?}")));
    }
    Ok(())
}

/// How the history behaves.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    /// The history directory (`<data>/history`).
    pub dir: PathBuf,
    /// Flush when the head holds this many rows.
    pub flush_rows: usize,
    /// Flush when the oldest row of the head is this old.
    pub flush_interval: Duration,
    /// Compact a partition once it has this many files.
    pub compact_files: usize,
    /// zstd level of new files.
    pub zstd_level: i32,
    /// zstd level of partitions older than their table's `compress_after`.
    pub compressed_zstd_level: i32,
    /// How long a replaced file stays on disk for queries that listed it.
    pub delete_grace: Duration,
}

impl HistoryOptions {
    /// Defaults for a history in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> HistoryOptions {
        HistoryOptions {
            dir: dir.into(),
            flush_rows: 1_000_000,
            flush_interval: Duration::from_secs(60),
            compact_files: 8,
            zstd_level: 3,
            compressed_zstd_level: 12,
            delete_grace: Duration::from_secs(60),
        }
    }
}

/// One table of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// Name (the stream's).
    pub name: String,
    /// Columns: name and type.
    pub columns: Vec<(String, FieldType)>,
    /// Index of the entity key column.
    pub key: usize,
    /// Index of the event-time column.
    pub time: usize,
    /// Index of a column holding a unique id (`inference_id`): its values
    /// get a Parquet bloom filter, so a lookup by id skips row groups.
    pub id: Option<usize>,
    /// Partition span (ms).
    pub chunk_ms: i64,
    /// Retention (ms).
    pub retention_ms: Option<i64>,
    /// Recompress after (ms).
    pub compress_after_ms: Option<i64>,
}

impl TableDef {
    /// The table of a stream.
    pub fn of_stream(s: &Stream) -> TableDef {
        TableDef {
            name: s.name.clone(),
            columns: s.fields.iter().map(|f| (f.name.clone(), f.ty)).collect(),
            key: s.key,
            time: s.time,
            id: s.id_field,
            chunk_ms: s.chunk_ms,
            retention_ms: s.retention_ms,
            compress_after_ms: s.compress_after_ms,
        }
    }

    /// The `dead_letters` table: one row per rejected record, keyed by its
    /// stream, timed by its arrival.
    pub fn dead_letters() -> TableDef {
        let c = |n: &str, t| (n.to_string(), t);
        TableDef {
            name: DEAD_LETTERS.to_string(),
            columns: vec![
                c("stream", FieldType::String),
                c("received_at", FieldType::Timestamp),
                c("index", FieldType::Int),
                c("field", FieldType::String),
                c("reason", FieldType::String),
                c("raw", FieldType::String),
            ],
            key: 0,
            time: 1,
            id: None,
            chunk_ms: 86_400_000,
            retention_ms: None,
            compress_after_ms: None,
        }
    }

    /// Every stream of a catalog, then `dead_letters`.
    pub fn all(catalog: &Catalog) -> Vec<TableDef> {
        let mut t: Vec<TableDef> = catalog.streams.iter().map(TableDef::of_stream).collect();
        t.push(TableDef::dead_letters());
        t
    }
}

struct Table {
    def: TableDef,
    schema: SchemaRef,
    types: Vec<FieldType>,
}

struct Head {
    sealed: Vec<RecordBatch>,
    open: RowBuilder,
    /// Batches being written by a flush: still visible until its commit.
    flushing: Vec<RecordBatch>,
}

struct State {
    manifest: Arc<Manifest>,
    heads: Vec<Head>,
    head_rows: usize,
    oldest: Option<Instant>,
    /// Replaced files and when they were replaced.
    doomed: Vec<(Instant, PathBuf)>,
}

struct Inner {
    opts: HistoryOptions,
    tables: Vec<Table>,
    state: RwLock<State>,
    /// Serializes flushes, compactions and retention (manifest writers).
    maint: Mutex<()>,
    head_seq: Mutex<u64>,
    head_cv: Condvar,
    files_scanned: AtomicU64,
    /// Continuous aggregates; taken before `state` by appends, so that a
    /// rebuild (which holds it) sees a head no append is changing.
    caggs: Mutex<cagg::Caggs>,
    /// Parquet footers and page indexes, kept across queries (files are
    /// immutable: a rewrite gets a new name).
    pub(crate) metadata_cache: Arc<sql::MetadataCache>,
    /// Latest-rows query shapes planned so far.
    prepared: latest::PreparedCache,
}

/// The history of every table: head plus Parquet files. Cheap to clone.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("dir", &self.inner.opts.dir)
            .finish()
    }
}

/// What one table holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableStats {
    /// Table name.
    pub name: String,
    /// Parquet files.
    pub files: usize,
    /// Partitions with files.
    pub partitions: usize,
    /// Rows in files.
    pub file_rows: u64,
    /// Bytes of the files.
    pub file_bytes: u64,
    /// Rows in the head (not yet flushed).
    pub head_rows: u64,
}

/// What a maintenance pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaintenanceReport {
    /// Partitions rewritten into one file.
    pub compacted: usize,
    /// Of those, rewritten at the higher level because of `compress_after`.
    pub recompressed: usize,
    /// Partitions dropped by retention.
    pub dropped: usize,
}

fn floor_to(ts: i64, span: i64) -> i64 {
    ts.div_euclid(span) * span
}

impl History {
    /// Opens the history in `opts.dir` (created if missing) for `tables`
    /// and continuous aggregates `caggs` over them, deleting files the
    /// manifest does not list (leftovers of a crash), and rebuilding the
    /// aggregates from the files.
    pub fn open(
        opts: HistoryOptions,
        tables: Vec<TableDef>,
        caggs: Vec<CaggDef>,
    ) -> Result<History, StorageError> {
        fs::create_dir_all(&opts.dir)
            .map_err(|e| StorageError::io("create history directory", &opts.dir, e))?;
        let manifest = Manifest::load(&opts.dir)?;
        remove_orphans(&opts.dir, &manifest)?;
        let tables: Vec<Table> = tables
            .into_iter()
            .map(|def| {
                let schema = schema_of(&def.columns);
                let types = def.columns.iter().map(|c| c.1).collect();
                Table { def, schema, types }
            })
            .collect();
        let heads = tables
            .iter()
            .map(|t| Head {
                sealed: Vec::new(),
                open: RowBuilder::new(t.schema.clone(), &t.types),
                flushing: Vec::new(),
            })
            .collect();
        let flushed = manifest.flushed_seq;
        let h = History {
            inner: Arc::new(Inner {
                opts,
                tables,
                state: RwLock::new(State {
                    manifest: Arc::new(manifest),
                    heads,
                    head_rows: 0,
                    oldest: None,
                    doomed: Vec::new(),
                }),
                maint: Mutex::new(()),
                metadata_cache: sql::metadata_cache(),
                prepared: latest::PreparedCache::default(),
                head_seq: Mutex::new(flushed),
                head_cv: Condvar::new(),
                files_scanned: AtomicU64::new(0),
                caggs: Mutex::new(cagg::Caggs::new(caggs)),
            }),
        };
        for t in 0..h.inner.tables.len() {
            h.rebuild_aggregates(t)?;
        }
        Ok(h)
    }

    /// Recomputes the continuous aggregates over table `t` from its files
    /// and head (at open, and after rows were erased).
    pub fn rebuild_aggregates(&self, t: usize) -> Result<(), StorageError> {
        let mut caggs = self.inner.caggs.lock();
        if !caggs.reads(t) {
            return Ok(());
        }
        caggs.clear(t);
        let Some(table) = self.inner.tables.get(t) else {
            return Ok(());
        };
        let (files, batches) = self.scan_set(t, None, None, None);
        for f in files {
            for b in read_file(&f, &table.schema)? {
                caggs.add_batch(t, &b);
            }
        }
        for b in &batches {
            caggs.add_batch(t, b);
        }
        Ok(())
    }

    /// The continuous aggregates: name and current table.
    pub fn aggregate_tables(&self) -> Vec<(String, RecordBatch)> {
        let caggs = self.inner.caggs.lock();
        (0..caggs.defs.len())
            .filter_map(|i| Some((caggs.defs[i].name.clone(), caggs.batch(i)?)))
            .collect()
    }

    /// Every WAL frame at or below this seq is in the Parquet files.
    pub fn flushed_seq(&self) -> u64 {
        self.inner.state.read().manifest.flushed_seq
    }

    /// The seq of the last frame appended to the head (or flushed).
    pub fn head_seq(&self) -> u64 {
        *self.inner.head_seq.lock()
    }

    /// The tables, in order.
    pub fn tables(&self) -> impl Iterator<Item = &TableDef> {
        self.inner.tables.iter().map(|t| &t.def)
    }

    /// The index of a table.
    pub fn table_index(&self, name: &str) -> Option<usize> {
        self.inner.tables.iter().position(|t| t.def.name == name)
    }

    /// Appends the rows of WAL frame `seq` (per table index) to the head
    /// and marks the head as holding every frame up to `seq`. Frames must
    /// come in seq order; a frame at or below the flushed seq is skipped
    /// (it is in the files already).
    pub fn append(&self, seq: u64, parts: &[(usize, &[Vec<Value>])]) {
        if seq <= self.flushed_seq() {
            return;
        }
        let rows: usize = parts.iter().map(|p| p.1.len()).sum();
        let mut caggs = self.inner.caggs.lock();
        // The rows and the seq change under the same lock, so a flush
        // always records exactly the seq of the last frame it took.
        let mut st = self.inner.state.write();
        if rows > 0 {
            for (t, rows) in parts {
                let Some(head) = st.heads.get_mut(*t) else {
                    continue;
                };
                for r in rows.iter() {
                    head.open.push(r);
                    if head.open.len() >= SEAL_ROWS {
                        let b = head.open.seal(SEAL_ROWS);
                        head.sealed.push(b);
                    }
                }
            }
            st.head_rows += rows;
            if st.oldest.is_none() {
                st.oldest = Some(Instant::now());
            }
            for (t, rows) in parts {
                if caggs.reads(*t) {
                    caggs.add(*t, rows);
                }
            }
        }
        drop(caggs);
        {
            let mut hs = self.inner.head_seq.lock();
            if seq > *hs {
                *hs = seq;
            }
        }
        drop(st);
        self.inner.head_cv.notify_all();
    }

    /// Waits until the head holds every frame up to `seq`; false on timeout.
    pub fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut hs = self.inner.head_seq.lock();
        while *hs < seq {
            if self.inner.head_cv.wait_until(&mut hs, deadline).timed_out() {
                return *hs >= seq;
            }
        }
        true
    }

    /// Whether the head is due for a flush (size or age).
    pub fn flush_due(&self) -> bool {
        let st = self.inner.state.read();
        st.head_rows >= self.inner.opts.flush_rows
            || st
                .oldest
                .is_some_and(|t| t.elapsed() >= self.inner.opts.flush_interval)
    }

    /// Writes the whole head to Parquet and commits the manifest; returns
    /// the number of files written. On error the rows stay in memory (and
    /// in the WAL) and the next flush retries them.
    pub fn flush(&self) -> Result<usize, StorageError> {
        let _g = self.inner.maint.lock();
        let (target, work, base) = {
            let mut st = self.inner.state.write();
            let mut work = Vec::with_capacity(st.heads.len());
            for h in st.heads.iter_mut() {
                if !h.open.is_empty() {
                    let b = h.open.seal(SEAL_ROWS);
                    h.sealed.push(b);
                }
                let sealed = std::mem::take(&mut h.sealed);
                h.flushing.extend(sealed);
                work.push(h.flushing.clone());
            }
            st.head_rows = 0;
            st.oldest = None;
            (*self.inner.head_seq.lock(), work, st.manifest.clone())
        };
        let mut manifest = (*base).clone();
        let mut written: Vec<PathBuf> = Vec::new();
        let result = self.write_head(&work, &mut manifest, &mut written);
        let result = result.and_then(|n| {
            manifest.flushed_seq = manifest.flushed_seq.max(target);
            if n == 0 && manifest.flushed_seq == base.flushed_seq {
                return Ok(0);
            }
            self.commit(&manifest, &written).map(|_| n)
        });
        let mut st = self.inner.state.write();
        match result {
            Ok(n) => {
                st.manifest = Arc::new(manifest);
                for h in st.heads.iter_mut() {
                    h.flushing.clear();
                }
                Ok(n)
            }
            Err(e) => {
                // `flushing` keeps the rows visible; the next flush takes
                // them again together with what arrived meanwhile.
                st.head_rows += work.iter().flatten().map(|b| b.num_rows()).sum::<usize>();
                st.oldest.get_or_insert_with(Instant::now);
                Err(e)
            }
        }
    }

    /// Commits `manifest`; if that fails, finds out whether it reached the
    /// disk and, if not, deletes the files written for it.
    fn commit(&self, manifest: &Manifest, written: &[PathBuf]) -> Result<(), StorageError> {
        match manifest.commit(&self.inner.opts.dir) {
            Ok(()) => Ok(()),
            Err(e) => {
                let on_disk = Manifest::load(&self.inner.opts.dir).ok();
                if on_disk.as_ref() == Some(manifest) {
                    // The rename happened: the new state is the committed one.
                    tracing::warn!(error = %e, "history manifest committed, but a later step failed");
                    Ok(())
                } else {
                    for p in written {
                        let _ = fs::remove_file(p);
                    }
                    Err(e)
                }
            }
        }
    }

    fn write_head(
        &self,
        work: &[Vec<RecordBatch>],
        manifest: &mut Manifest,
        written: &mut Vec<PathBuf>,
    ) -> Result<usize, StorageError> {
        let dir = &self.inner.opts.dir;
        let mut n = 0;
        for (t, batches) in work.iter().enumerate() {
            let Some(table) = self.inner.tables.get(t) else {
                continue;
            };
            if batches.iter().all(|b| b.num_rows() == 0) {
                continue;
            }
            for (partition, rows) in split_partitions(table, batches)? {
                let sorted = sort_rows(&table.schema, &rows, table.def.key, table.def.time)
                    .map_err(|e| corrupt(dir, "sort history rows", e))?;
                let name = format!("{:012}.parquet", manifest.next_file);
                manifest.next_file += 1;
                let meta = write_file(
                    dir,
                    &sorted,
                    NewFile {
                        def: &table.def,
                        partition,
                        name,
                        zstd_level: self.inner.opts.zstd_level,
                    },
                );
                let meta = match meta {
                    Ok(m) => m,
                    Err(e) => {
                        for p in written.iter() {
                            let _ = fs::remove_file(p);
                        }
                        return Err(e);
                    }
                };
                written.push(dir.join(meta.rel_path()));
                manifest.files.push(meta);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Erases every row whose key column equals `key` from tables `tables`:
    /// from the head, and from every file whose key range holds it (each
    /// rewritten without those rows, all in one manifest commit; the old
    /// files are deleted at once, not after the usual grace period). Marks
    /// the head as holding frames up to `seq` (the erasure's WAL frame) and
    /// rebuilds the continuous aggregates over those tables. Idempotent:
    /// replaying the erasure after a crash finishes it. Returns the rows
    /// removed.
    pub fn erase(&self, seq: u64, tables: &[usize], key: &str) -> Result<u64, StorageError> {
        let _g = self.inner.maint.lock();
        let mut removed = 0u64;
        {
            let _caggs = self.inner.caggs.lock();
            let mut st = self.inner.state.write();
            let mut head_removed = 0usize;
            for &t in tables {
                let Some(table) = self.inner.tables.get(t) else {
                    continue;
                };
                let Some(h) = st.heads.get_mut(t) else {
                    continue;
                };
                if !h.open.is_empty() {
                    let b = h.open.finish();
                    h.sealed.push(b);
                }
                for list in [&mut h.sealed, &mut h.flushing] {
                    for b in list.iter_mut() {
                        let (kept, n) = without_key(b, table.def.key, key)
                            .map_err(|e| corrupt(&self.inner.opts.dir, "erase", e))?;
                        if n > 0 {
                            *b = kept;
                            head_removed += n;
                        }
                    }
                }
            }
            st.head_rows = st.head_rows.saturating_sub(head_removed);
            removed += head_removed as u64;
            let mut hs = self.inner.head_seq.lock();
            *hs = (*hs).max(seq);
        }
        let dir = self.inner.opts.dir.clone();
        let base = self.inner.state.read().manifest.clone();
        let mut m = (*base).clone();
        let mut gone: Vec<FileMeta> = Vec::new();
        let mut written: Vec<PathBuf> = Vec::new();
        let probe = KeyBound::Str(key.to_string());
        for &t in tables {
            let Some(table) = self.inner.tables.get(t) else {
                continue;
            };
            let files: Vec<FileMeta> = base
                .files
                .iter()
                .filter(|f| f.table == table.def.name && key_in(&probe, f))
                .cloned()
                .collect();
            for f in files {
                let mut kept = Vec::new();
                let mut n = 0;
                for b in read_file(&dir.join(f.rel_path()), &table.schema)? {
                    let (k, r) = without_key(&b, table.def.key, key)
                        .map_err(|e| corrupt(&dir, "erase", e))?;
                    n += r;
                    kept.push(k);
                }
                if n == 0 {
                    continue;
                }
                removed += n as u64;
                gone.push(f.clone());
                if kept.iter().any(|b| b.num_rows() > 0) {
                    let sorted = sort_rows(&table.schema, &kept, table.def.key, table.def.time)
                        .map_err(|e| corrupt(&dir, "erase", e))?;
                    let name = format!("{:012}.parquet", m.next_file);
                    m.next_file += 1;
                    let meta = write_file(
                        &dir,
                        &sorted,
                        NewFile {
                            def: &table.def,
                            partition: f.partition,
                            name,
                            zstd_level: f.zstd_level,
                        },
                    )?;
                    written.push(dir.join(meta.rel_path()));
                    m.files.push(meta);
                }
            }
        }
        if !gone.is_empty() {
            m.files.retain(|f| !gone.contains(f));
            self.commit(&m, &written)?;
            self.replace_manifest(m, &[]);
            for f in &gone {
                let p = dir.join(f.rel_path());
                if let Err(e) = fs::remove_file(&p)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(StorageError::io("remove an erased history file", &p, e));
                }
            }
        }
        drop(_g);
        for &t in tables {
            self.rebuild_aggregates(t)?;
        }
        self.inner.head_cv.notify_all();
        Ok(removed)
    }

    /// Compaction, recompression and retention, judged at wall-clock
    /// `now_ms`; then deletes replaced files whose grace period is over.
    pub fn maintain(&self, now_ms: i64) -> Result<MaintenanceReport, StorageError> {
        let _g = self.inner.maint.lock();
        let mut report = MaintenanceReport::default();
        let dir = self.inner.opts.dir.clone();
        for table in &self.inner.tables {
            let base = self.inner.state.read().manifest.clone();
            let mut parts: BTreeMap<i64, Vec<&FileMeta>> = BTreeMap::new();
            for f in base.files.iter().filter(|f| f.table == table.def.name) {
                parts.entry(f.partition).or_default().push(f);
            }
            // Retention: whole partitions older than the limit.
            let mut dropped: Vec<i64> = Vec::new();
            if let Some(keep) = table.def.retention_ms {
                for &p in parts.keys() {
                    if p + table.def.chunk_ms <= now_ms - keep {
                        dropped.push(p);
                    }
                }
            }
            if !dropped.is_empty() {
                let mut m = (*base).clone();
                let gone: Vec<FileMeta> = m
                    .files
                    .iter()
                    .filter(|f| f.table == table.def.name && dropped.contains(&f.partition))
                    .cloned()
                    .collect();
                m.files
                    .retain(|f| !(f.table == table.def.name && dropped.contains(&f.partition)));
                self.commit(&m, &[])?;
                self.replace_manifest(m, &gone);
                report.dropped += dropped.len();
                tracing::info!(table = %table.def.name, partitions = dropped.len(), "retention dropped partitions");
                continue;
            }
            for (p, files) in parts {
                let old_enough = table
                    .def
                    .compress_after_ms
                    .is_some_and(|age| p + table.def.chunk_ms <= now_ms - age);
                let level = if old_enough {
                    self.inner.opts.compressed_zstd_level
                } else {
                    self.inner.opts.zstd_level
                };
                let recompress = old_enough && files.iter().any(|f| f.zstd_level < level);
                if files.len() < self.inner.opts.compact_files.max(2) && !recompress {
                    continue;
                }
                let mut batches = Vec::new();
                for f in &files {
                    batches.extend(read_file(&dir.join(f.rel_path()), &table.schema)?);
                }
                let sorted = sort_rows(&table.schema, &batches, table.def.key, table.def.time)
                    .map_err(|e| corrupt(&dir, "sort history rows", e))?;
                let base = self.inner.state.read().manifest.clone();
                let mut m = (*base).clone();
                let name = format!("{:012}.parquet", m.next_file);
                m.next_file += 1;
                let meta = write_file(
                    &dir,
                    &sorted,
                    NewFile {
                        def: &table.def,
                        partition: p,
                        name,
                        zstd_level: level,
                    },
                )?;
                let new_path = dir.join(meta.rel_path());
                let gone: Vec<FileMeta> = files.iter().map(|f| (*f).clone()).collect();
                m.files.retain(|f| !gone.contains(f));
                m.files.push(meta);
                self.commit(&m, &[new_path])?;
                self.replace_manifest(m, &gone);
                report.compacted += 1;
                if recompress {
                    report.recompressed += 1;
                }
            }
        }
        self.delete_doomed(false);
        Ok(report)
    }

    /// Whether some partition has reached `compact_files` files (the
    /// flusher then runs [`History::maintain`] without waiting for its
    /// interval, so that a query reads few files).
    pub fn compaction_due(&self) -> bool {
        let st = self.inner.state.read();
        let mut counts: BTreeMap<(&str, i64), usize> = BTreeMap::new();
        for f in &st.manifest.files {
            *counts.entry((f.table.as_str(), f.partition)).or_default() += 1;
        }
        counts
            .values()
            .any(|&n| n >= self.inner.opts.compact_files.max(2))
    }

    fn replace_manifest(&self, m: Manifest, gone: &[FileMeta]) {
        let mut st = self.inner.state.write();
        st.manifest = Arc::new(m);
        let now = Instant::now();
        for f in gone {
            st.doomed
                .push((now, self.inner.opts.dir.join(f.rel_path())));
        }
    }

    /// Deletes replaced files whose grace period is over (all, if `all`).
    fn delete_doomed(&self, all: bool) {
        let grace = self.inner.opts.delete_grace;
        let due: Vec<PathBuf> = {
            let mut st = self.inner.state.write();
            let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut st.doomed)
                .into_iter()
                .partition(|(t, _)| all || t.elapsed() >= grace);
            st.doomed = keep;
            due.into_iter().map(|(_, p)| p).collect()
        };
        for p in due {
            if let Err(e) = fs::remove_file(&p)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %p.display(), error = %e, "could not delete a replaced history file");
            }
        }
    }

    /// What each table holds.
    pub fn stats(&self) -> Vec<TableStats> {
        let st = self.inner.state.read();
        self.inner
            .tables
            .iter()
            .zip(&st.heads)
            .map(|(t, h)| {
                let files: Vec<&FileMeta> = st
                    .manifest
                    .files
                    .iter()
                    .filter(|f| f.table == t.def.name)
                    .collect();
                let parts: HashSet<i64> = files.iter().map(|f| f.partition).collect();
                TableStats {
                    name: t.def.name.clone(),
                    files: files.len(),
                    partitions: parts.len(),
                    file_rows: files.iter().map(|f| f.rows).sum(),
                    file_bytes: files.iter().map(|f| f.bytes).sum(),
                    head_rows: (h
                        .sealed
                        .iter()
                        .chain(&h.flushing)
                        .map(|b| b.num_rows())
                        .sum::<usize>()
                        + h.open.len()) as u64,
                }
            })
            .collect()
    }

    /// The files and head batches of table `t`, files pruned to those that
    /// may hold rows with time in `[lo, hi]` and a key among `keys`.
    pub(crate) fn scan_set(
        &self,
        t: usize,
        lo: Option<i64>,
        hi: Option<i64>,
        keys: Option<&[KeyBound]>,
    ) -> (Vec<PathBuf>, Vec<RecordBatch>) {
        let st = self.inner.state.read();
        let Some(table) = self.inner.tables.get(t) else {
            return (Vec::new(), Vec::new());
        };
        let files: Vec<PathBuf> = st
            .manifest
            .files
            .iter()
            .filter(|f| f.table == table.def.name)
            .filter(|f| lo.is_none_or(|lo| f.max_ts >= lo) && hi.is_none_or(|hi| f.min_ts <= hi))
            .filter(|f| keys.is_none_or(|ks| ks.iter().any(|k| key_in(k, f))))
            .map(|f| self.inner.opts.dir.join(f.rel_path()))
            .collect();
        if lo.is_some() || hi.is_some() || keys.is_some() {
            self.inner
                .files_scanned
                .fetch_add(files.len() as u64, Ordering::Relaxed);
        }
        let mut batches = Vec::new();
        if let Some(h) = st.heads.get(t) {
            batches.extend(h.flushing.iter().cloned());
            batches.extend(h.sealed.iter().cloned());
            if !h.open.is_empty() {
                batches.push(h.open.snapshot());
            }
        }
        (files, batches)
    }

    /// Every row of table `t` (files and head, as values in column order)
    /// whose column `col` holds one of `keys` (an int key given as its
    /// decimal text). Reads each file once; prunes files by key range when
    /// `col` is the table's key.
    pub fn rows_with_keys(
        &self,
        t: usize,
        col: usize,
        keys: &HashSet<String>,
    ) -> Result<Vec<Vec<Value>>, StorageError> {
        let Some(table) = self.inner.tables.get(t) else {
            return Ok(Vec::new());
        };
        let bounds: Option<Vec<KeyBound>> = (col == table.def.key && keys.len() <= 4096)
            .then(|| keys.iter().map(|k| KeyBound::Str(k.clone())).collect());
        let (files, batches) = self.scan_set(t, None, None, bounds.as_deref());
        let mut out = Vec::new();
        let mut take = |b: &RecordBatch| {
            let Some(c) = b.columns().get(col) else {
                return;
            };
            for i in 0..b.num_rows() {
                let hit = match cagg::value_at(c, i) {
                    Value::Str(s) => keys.contains(&*s),
                    Value::Int(n) => keys.contains(&n.to_string()),
                    _ => false,
                };
                if hit {
                    out.push(b.columns().iter().map(|a| cagg::value_at(a, i)).collect());
                }
            }
        };
        for f in files {
            for b in read_file(&f, &table.schema)? {
                take(&b);
            }
        }
        for b in &batches {
            take(b);
        }
        Ok(out)
    }

    /// Every row of table `t` (files and head) as values in column order,
    /// one partition at a time in ascending time, each partition's rows
    /// sorted by event time (ties keep file, then head, order): the whole
    /// table in time order without holding more than a partition in memory.
    /// Rebuilds derived state (the engine's online state after a spec
    /// change, once the log no longer holds every event).
    pub fn for_each_partition(
        &self,
        t: usize,
        mut f: impl FnMut(Vec<Vec<Value>>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let Some(table) = self.inner.tables.get(t) else {
            return Ok(());
        };
        let (files, head) = self.scan_set(t, None, None, None);
        let mut parts: BTreeMap<i64, (Vec<PathBuf>, Vec<RecordBatch>)> = BTreeMap::new();
        for path in files {
            // `<table>/<partition start>/<name>.parquet`
            let partition = path
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| {
                    corrupt(&path, "history file outside a partition", "no partition")
                })?;
            parts.entry(partition).or_default().0.push(path);
        }
        for (p, batches) in split_partitions(table, &head)? {
            parts.entry(p).or_default().1.extend(batches);
        }
        for (_, (paths, batches)) in parts {
            let mut rows: Vec<Vec<Value>> = Vec::new();
            let mut take = |b: &RecordBatch| {
                for i in 0..b.num_rows() {
                    rows.push(b.columns().iter().map(|a| cagg::value_at(a, i)).collect());
                }
            };
            for path in &paths {
                for b in read_file(path, &table.schema)? {
                    take(&b);
                }
            }
            for b in &batches {
                take(b);
            }
            let time = table.def.time;
            rows.sort_by_key(|r| match r.get(time) {
                Some(Value::Ts(ts)) => *ts,
                _ => i64::MIN,
            });
            f(rows)?;
        }
        Ok(())
    }

    pub(crate) fn table_schema(&self, t: usize) -> Option<(SchemaRef, &TableDef)> {
        self.inner.tables.get(t).map(|x| (x.schema.clone(), &x.def))
    }

    /// Files handed to queries so far (to check partition pruning).
    pub fn files_scanned(&self) -> u64 {
        self.inner.files_scanned.load(Ordering::Relaxed)
    }

    /// The history directory.
    pub fn dir(&self) -> &Path {
        &self.inner.opts.dir
    }

    /// Flushes what is left and deletes every replaced file (shutdown).
    pub fn close(&self) -> Result<(), StorageError> {
        self.flush()?;
        self.delete_doomed(true);
        Ok(())
    }
}

/// `b` without the rows whose column `col` equals `key`, and how many
/// rows that removed.
fn without_key(
    b: &RecordBatch,
    col: usize,
    key: &str,
) -> Result<(RecordBatch, usize), datafusion::arrow::error::ArrowError> {
    let Some(c) = b.columns().get(col) else {
        return Ok((b.clone(), 0));
    };
    let keep: datafusion::arrow::array::BooleanArray = (0..b.num_rows())
        .map(|i| {
            Some(match cagg::value_at(c, i) {
                Value::Str(s) => &*s != key,
                Value::Int(n) => n.to_string() != key,
                _ => true,
            })
        })
        .collect();
    let n = keep.false_count();
    if n == 0 {
        return Ok((b.clone(), 0));
    }
    Ok((
        datafusion::arrow::compute::filter_record_batch(b, &keep)?,
        n,
    ))
}

fn key_in(k: &KeyBound, f: &FileMeta) -> bool {
    let (Some(lo), Some(hi)) = (&f.min_key, &f.max_key) else {
        return false;
    };
    match (k, lo, hi) {
        (KeyBound::Str(k), KeyBound::Str(lo), KeyBound::Str(hi)) => lo <= k && k <= hi,
        (KeyBound::Int(k), KeyBound::Int(lo), KeyBound::Int(hi)) => lo <= k && k <= hi,
        // A key of another type than the column's: let the scan decide.
        _ => true,
    }
}

fn corrupt(dir: &Path, what: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        path: dir.to_path_buf(),
        offset: 0,
        reason: format!("{what}: {e}"),
    }
}

/// The rows of `batches` grouped by partition (event time floored to the
/// table's chunk interval).
fn split_partitions(
    table: &Table,
    batches: &[RecordBatch],
) -> Result<Vec<(i64, Vec<RecordBatch>)>, StorageError> {
    let span = table.def.chunk_ms.max(1);
    let mut out: BTreeMap<i64, Vec<RecordBatch>> = BTreeMap::new();
    for b in batches {
        if b.num_rows() == 0 {
            continue;
        }
        let Some(ts) = b
            .column(table.def.time)
            .as_primitive_opt::<TimestampMillisecondType>()
        else {
            continue;
        };
        let first = floor_to(if ts.is_null(0) { 0 } else { ts.value(0) }, span);
        let part = |i: usize| floor_to(if ts.is_null(i) { 0 } else { ts.value(i) }, span);
        if (0..b.num_rows()).all(|i| part(i) == first) {
            out.entry(first).or_default().push(b.clone());
            continue;
        }
        let mut idx: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for i in 0..b.num_rows() {
            idx.entry(part(i)).or_default().push(i as u32);
        }
        for (p, rows) in idx {
            let rows = datafusion::arrow::array::UInt32Array::from(rows);
            let taken = datafusion::arrow::compute::take_record_batch(b, &rows)
                .map_err(|e| corrupt(Path::new(&table.def.name), "split partitions", e))?;
            out.entry(p).or_default().push(taken);
        }
    }
    Ok(out.into_iter().collect())
}

/// Deletes every file under `dir` that `manifest` does not list.
fn remove_orphans(dir: &Path, manifest: &Manifest) -> Result<(), StorageError> {
    let listed: HashSet<PathBuf> = manifest
        .files
        .iter()
        .map(|f| dir.join(f.rel_path()))
        .collect();
    let _ = fs::remove_file(dir.join("MANIFEST.json.tmp"));
    let read = |p: &Path| -> Result<Vec<PathBuf>, StorageError> {
        let rd = fs::read_dir(p).map_err(|e| StorageError::io("list history directory", p, e))?;
        Ok(rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
    };
    for table in read(dir)? {
        if !table.is_dir() {
            continue;
        }
        for part in read(&table)? {
            if !part.is_dir() {
                continue;
            }
            let mut left = 0;
            for f in read(&part)? {
                if listed.contains(&f) {
                    left += 1;
                    continue;
                }
                tracing::info!(path = %f.display(), "removing a history file no manifest lists");
                fs::remove_file(&f)
                    .map_err(|e| StorageError::io("remove orphan history file", &f, e))?;
            }
            if left == 0 {
                let _ = fs::remove_dir(&part);
            }
        }
    }
    Ok(())
}
