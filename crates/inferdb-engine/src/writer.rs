//! The WAL writer thread: the single owner of the log and the only thread
//! that changes online state.
//!
//! Batches arrive with a ticket taken when their request body had been
//! read, before decoding; decoding runs in parallel on the callers'
//! threads, and the writer puts the batches back in ticket order (a
//! request that fails to decode sends a `Skip` for its ticket). So batches
//! are logged in the order their bodies arrived, whatever the decode times:
//! a source that sends in event-time order stays in order, which is what
//! the stream's lateness rule judges. The writer blocks on the queue, then
//! drains whatever else is ready (group commit): appends one frame per batch, makes the group
//! durable as the fsync policy says (`always`: fsync after each frame;
//! `batch`: one fsync for the group; `none`: hand to the OS), applies the
//! batches to online state in log order, and only then acknowledges each
//! one. Under `batch`, when a group is large enough for its apply to take
//! a while, the next group's fsync overlaps it: once the large group is
//! durable, the batches ready by then are appended and their fsync started
//! on the `inferdb-wal-sync` thread before the durable group is applied.
//! A group is still applied (made visible) and acknowledged only after its
//! own fsync. Snapshots are cut here between groups, so they are a consistent
//! cut at a known sequence number; the writer only captures the state (cheap:
//! entity states and hot records are shared, copied when next changed) and
//! the `inferdb-snapshot` thread encodes and writes it. If a write or fsync fails, every waiting
//! and later batch is refused: after a failed fsync the page cache can no
//! longer be trusted, and only a restart (which replays the log) is safe.

use crate::error::EngineError;
use crate::frame::{BatchFrame, KIND_BATCH};
use crate::metrics as m;
use crate::state::{Capture, OnlineState};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use inferdb_storage::{FsyncPolicy, SyncDone, SyncJob, Wal, write_snapshot_with};
use inferdb_types::Catalog;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a batch's submitter learns once it is durable and applied.
#[derive(Debug)]
pub struct BatchAck {
    /// The WAL sequence number of the batch's frame.
    pub seq: u64,
    /// The applied batch, handed back so that its thousands of small
    /// allocations are freed on the submitter's thread, not the writer's.
    pub(crate) _spent: Option<BatchFrame>,
}

/// A batch on its way to the log: its encoded frame, and the decoded rows
/// that are applied once the frame is durable.
pub struct PendingBatch {
    pub(crate) stream: usize,
    pub(crate) batch: BatchFrame,
    /// Records rejected by validation (the dead letters in `batch`).
    pub(crate) rejected: u64,
    pub(crate) enqueued: Instant,
    pub(crate) ack: oneshot::Sender<Result<BatchAck, EngineError>>,
    /// An `async` inference record: nobody waits for `ack`, and its place
    /// is in the writer's `detached` count, not `queued`.
    pub(crate) detached: bool,
}

/// Places held in the writer's queue, given back when a batch is
/// acknowledged or refused: batches (bounded by `queue_depth`) and, apart,
/// `async` inference records (bounded by `async_records_max`).
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Batches admitted and not yet acknowledged.
    pub queued: AtomicUsize,
    /// `async` inference records admitted and not yet acknowledged.
    pub detached: AtomicUsize,
}

impl Admission {
    /// Gives a place back (`detached`: an `async` record's).
    pub fn release(&self, detached: bool) {
        let count = if detached {
            &self.detached
        } else {
            &self.queued
        };
        count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Commands to the writer.
pub enum Command {
    /// Log, apply and acknowledge a batch, in ticket order.
    Batch(u64, Box<PendingBatch>),
    /// The request holding this ticket failed before it became a batch.
    Skip(u64),
    /// Erase an entity: log it, remove it from online state, snapshot,
    /// then have the history thread remove its rows and answer.
    Erase(String, oneshot::Sender<Result<crate::Erasure, EngineError>>),
    /// Take a snapshot now; answers its sequence number.
    Snapshot(oneshot::Sender<Result<u64, EngineError>>),
    /// Sync, snapshot and stop.
    Shutdown(oneshot::Sender<()>),
    /// Stop at once, as a crash would: no sync, no snapshot (tests).
    Abort(oneshot::Sender<()>),
}

pub(crate) struct Writer {
    /// Applied batches go on to the history thread.
    pub history_tx: crossbeam_channel::Sender<crate::history::HistoryMsg>,
    /// The history (its flushed seq bounds the log's truncation).
    pub history: inferdb_storage::history::History,
    /// Snapshot as soon as the thread starts (after a rebuild at open).
    pub snapshot_at_start: bool,
    pub catalog: Arc<Catalog>,
    pub state: Arc<OnlineState>,
    pub wal: Wal,
    pub fsync: FsyncPolicy,
    pub snapshot_dir: PathBuf,
    pub snapshot_interval: Duration,
    pub max_group: usize,
    pub applied_seq: Arc<AtomicU64>,
    pub failed: Arc<AtomicBool>,
    /// Places in the queue, given back as batches are acknowledged.
    pub admission: Arc<Admission>,
    /// Held while the writer runs: one process per data directory.
    pub lock: std::fs::File,
    /// Per stream: accepted, late and rejected event counters.
    pub events: Vec<[metrics::Counter; 3]>,
    /// The `inferdb-wal-sync` thread (fsync policy `batch`), started by
    /// [`Writer::run`].
    pub syncer: Option<Syncer>,
    /// The `inferdb-snapshot` thread, started by [`Writer::run`].
    pub snapshotter: Option<Snapshotter>,
}

/// Groups of at least this many rows have the next group's fsync run on
/// the sync thread during their apply (as for the parallel apply, a
/// thread handoff costs tens of microseconds, a row a few).
const PIPELINE_MIN_ROWS: usize = crate::state::PARALLEL_APPLY_MIN_ROWS;

/// A group whose frames are in the log, waiting for its fsync.
struct Written {
    group: Vec<PendingBatch>,
    /// Rows in the group: what its apply costs.
    rows: usize,
    seqs: Vec<u64>,
    bytes: u64,
    /// Its fsync runs on the sync thread (one answer to wait for).
    syncing: bool,
}

/// The sync thread's two channels: fsyncs to run, and their outcomes, in
/// the same order.
pub(crate) struct Syncer {
    jobs: Sender<SyncJob>,
    done: Receiver<SyncDone>,
}

impl Syncer {
    fn start() -> Option<Syncer> {
        let (jobs, job_rx) = crossbeam_channel::unbounded::<SyncJob>();
        let (done_tx, done) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("inferdb-wal-sync".into())
            .spawn(move || {
                while let Ok(job) = job_rx.recv() {
                    if done_tx.send(job.run()).is_err() {
                        return;
                    }
                }
            })
            .inspect_err(|e| tracing::warn!(error = %e, "no WAL sync thread; syncing inline"))
            .ok()?;
        Some(Syncer { jobs, done })
    }
}

/// A captured state on its way to disk, and who waits for it (`None`: the
/// periodic snapshot, whose outcome the writer collects later).
struct SnapshotJob {
    capture: Capture,
    reply: Option<Sender<Result<u64, EngineError>>>,
}

/// The snapshot thread: encodes and writes what the writer captured, one
/// job at a time in order (it is the only writer of snapshot files). The
/// periodic snapshot only costs the writer its capture; an explicit
/// snapshot, an erasure and shutdown wait for theirs.
pub(crate) struct Snapshotter {
    jobs: Sender<SnapshotJob>,
    /// Outcomes of the periodic snapshots, in order.
    done: Receiver<Result<u64, EngineError>>,
    thread: std::thread::JoinHandle<()>,
    /// Periodic snapshots sent and not yet collected.
    in_flight: usize,
}

impl Snapshotter {
    fn start(dir: PathBuf) -> Option<Snapshotter> {
        let (jobs, job_rx) = crossbeam_channel::unbounded::<SnapshotJob>();
        let (done_tx, done) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("inferdb-snapshot".into())
            .spawn(move || {
                while let Ok(job) = job_rx.recv() {
                    let r = write_capture(&dir, &job.capture);
                    drop(job.capture);
                    let _ = match job.reply {
                        Some(reply) => reply.send(r),
                        None => done_tx.send(r),
                    };
                }
            })
            .inspect_err(
                |e| tracing::warn!(error = %e, "no snapshot thread; snapshots block the writer"),
            )
            .ok()?;
        Some(Snapshotter {
            jobs,
            done,
            thread,
            in_flight: 0,
        })
    }

    /// Lets the jobs sent finish, then stops the thread.
    fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }
}

/// Encodes a captured state and writes it as the snapshot of its seq.
fn write_capture(dir: &std::path::Path, capture: &Capture) -> Result<u64, EngineError> {
    let t = Instant::now();
    let seq = capture.seq();
    let (_, bytes) = write_snapshot_with(dir, seq, |w| {
        capture
            .encode_into(w)
            .map_err(|e| std::io::Error::other(format!("snapshot encoding: {e}")))
    })?;
    metrics::counter!(m::SNAPSHOTS_TOTAL).increment(1);
    metrics::histogram!(m::SNAPSHOT_SECONDS).record(t.elapsed().as_secs_f64());
    tracing::info!(
        seq,
        bytes,
        ms = t.elapsed().as_millis() as u64,
        "snapshot encoded and written"
    );
    Ok(seq)
}

/// Puts ticketed batches back in order.
#[derive(Default)]
struct Sequencer {
    next: u64,
    waiting: BTreeMap<u64, Option<Box<PendingBatch>>>,
}

impl Sequencer {
    /// Whether the next batch in ticket order is here.
    fn ready(&self) -> bool {
        self.waiting
            .first_key_value()
            .is_some_and(|(&t, _)| t == self.next)
    }

    fn put(&mut self, ticket: u64, b: Option<Box<PendingBatch>>) {
        self.waiting.insert(ticket, b);
    }

    /// Moves the batches whose turn has come into `group`.
    fn release(&mut self, group: &mut Vec<PendingBatch>, max: usize) {
        while group.len() < max {
            match self.waiting.first_key_value() {
                Some((&t, _)) if t == self.next => {}
                _ => break,
            }
            self.next += 1;
            if let Some(Some(b)) = self.waiting.pop_first().map(|(_, b)| b) {
                group.push(*b);
            }
        }
    }
}

impl Writer {
    pub fn run(mut self, rx: Receiver<Command>) {
        self.events = self
            .catalog
            .streams
            .iter()
            .map(|s| {
                ["accepted", "late", "rejected"].map(|outcome| {
                    metrics::counter!(m::INGEST_EVENTS_TOTAL, "stream" => s.name.clone(), "outcome" => outcome)
                })
            })
            .collect();
        let mut last_snapshot = Instant::now();
        let mut snapshot_seq = self.applied_seq.load(Ordering::Acquire);
        if self.snapshot_at_start
            && let Err(e) = self.snapshot()
        {
            tracing::warn!(error = %e, "snapshot after the rebuild failed");
        }
        let mut seq = Sequencer::default();
        let mut group: Vec<PendingBatch> = Vec::with_capacity(self.max_group);
        let mut control: Vec<Command> = Vec::new();
        let idle = self
            .snapshot_interval
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let (mut housekeep_shard, mut groups) = (0usize, 0u64);
        if self.fsync == FsyncPolicy::Batch {
            self.syncer = Syncer::start();
        }
        self.snapshotter = Snapshotter::start(self.snapshot_dir.clone());
        let mut inflight: Option<Written> = None;
        loop {
            // Block only when there is nothing to do: no batch whose turn
            // has come (a group can leave some behind) and no command.
            if !seq.ready() && control.is_empty() {
                match rx.recv_timeout(idle) {
                    Ok(c) => self.take(c, &rx, &mut seq, &mut control),
                    Err(RecvTimeoutError::Timeout) => {
                        self.state.housekeep(&self.catalog, housekeep_shard);
                        housekeep_shard += 1;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        self.finish();
                        return;
                    }
                }
            }
            if control.is_empty() {
                seq.release(&mut group, self.max_group);
                if !group.is_empty() {
                    inflight = self.begin(&mut group, false);
                }
            }
            // Once a group is durable, the batches ready by then are logged
            // and their fsync started before the durable group is applied,
            // so that fsync and apply overlap. Commands wait for the
            // pipeline to drain.
            while let Some(mut w) = inflight.take() {
                let durable = self.wait_sync(&mut w);
                // Overlap only when the apply is long enough to be worth two
                // thread handoffs: a small group (an inference record or
                // two) is applied and acknowledged at once, and the next
                // group is synced on this thread.
                let overlap = durable && w.rows >= PIPELINE_MIN_ROWS && self.syncer.is_some();
                if overlap && control.is_empty() {
                    if let Ok(c) = rx.try_recv() {
                        self.take(c, &rx, &mut seq, &mut control);
                    }
                    if control.is_empty() {
                        seq.release(&mut group, self.max_group);
                        if !group.is_empty() {
                            inflight = self.begin(&mut group, true);
                        }
                    }
                }
                if durable {
                    self.apply_ack(w);
                }
                groups += 1;
                // One shard of housekeeping every 32 groups under load.
                if groups % 32 == 0 {
                    self.state.housekeep(&self.catalog, housekeep_shard);
                    housekeep_shard += 1;
                }
            }
            if !self.collect_snapshots() {
                snapshot_seq = 0;
            }
            let applied = self.applied_seq.load(Ordering::Acquire);
            if applied > snapshot_seq
                && last_snapshot.elapsed() >= self.snapshot_interval
                && !self.snapshot_in_flight()
            {
                if let Ok(s) = self.begin_snapshot() {
                    snapshot_seq = s;
                }
                last_snapshot = Instant::now();
            }
            for c in control.drain(..) {
                match c {
                    Command::Batch(..) | Command::Skip(_) => {}
                    Command::Erase(key, tx) => match self.erase(&key) {
                        Ok((seq, hot)) => {
                            if let Ok(s) = self.snapshot() {
                                snapshot_seq = s;
                                last_snapshot = Instant::now();
                            }
                            if let Err(e) = self
                                .history_tx
                                .send(crate::history::HistoryMsg::Erase(seq, key, hot, tx))
                                && let crate::history::HistoryMsg::Erase(.., tx) = e.into_inner()
                            {
                                let _ = tx.send(Err(EngineError::Unavailable(
                                    "the history thread stopped".into(),
                                )));
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    },
                    Command::Snapshot(tx) => {
                        let r = self.snapshot();
                        if let Ok(s) = r {
                            snapshot_seq = s;
                            last_snapshot = Instant::now();
                        }
                        let _ = tx.send(r);
                    }
                    Command::Abort(tx) => {
                        self.failed.store(true, Ordering::Release);
                        // A snapshot being written is of durable frames:
                        // whether a crash lets it finish or not, a restart
                        // is right. Let it finish, so nothing writes into
                        // the directory after this answer.
                        self.stop_snapshotter();
                        let _ = self.lock.unlock();
                        let _ = tx.send(());
                        return;
                    }
                    Command::Shutdown(tx) => {
                        // Batches queued before the shutdown are still logged.
                        while let Ok(c) = rx.try_recv() {
                            match c {
                                Command::Batch(t, b) => seq.put(t, Some(b)),
                                Command::Skip(t) => seq.put(t, None),
                                _ => {}
                            }
                        }
                        loop {
                            seq.release(&mut group, self.max_group);
                            if group.is_empty() {
                                break;
                            }
                            self.commit(&mut group);
                        }
                        for (_, b) in std::mem::take(&mut seq.waiting) {
                            if let Some(b) = b {
                                let _ = b
                                    .ack
                                    .send(Err(EngineError::Unavailable("shutting down".into())));
                            }
                        }
                        self.finish();
                        let _ = tx.send(());
                        return;
                    }
                }
            }
        }
    }

    fn finish(&mut self) {
        if self.failed.load(Ordering::Acquire) {
            self.stop_snapshotter();
            return;
        }
        if let Err(e) = self.wal.sync() {
            tracing::error!(error = %e, "final WAL sync failed");
            self.stop_snapshotter();
            return;
        }
        if let Err(e) = self.snapshot() {
            tracing::warn!(error = %e, "snapshot at shutdown failed; restart will replay the log");
        }
        self.stop_snapshotter();
    }

    fn fail_all(&self, group: &mut Vec<PendingBatch>, why: &str) {
        for b in group.drain(..) {
            self.admission.release(b.detached);
            let _ = b.ack.send(Err(EngineError::Unavailable(why.to_string())));
        }
    }

    /// Takes a command and whatever else is ready, up to a group's worth
    /// of batches or the first other command.
    fn take(
        &self,
        first: Command,
        rx: &Receiver<Command>,
        seq: &mut Sequencer,
        control: &mut Vec<Command>,
    ) {
        let mut next = Some(first);
        while let Some(c) = next.take() {
            match c {
                Command::Batch(t, b) => seq.put(t, Some(b)),
                Command::Skip(t) => seq.put(t, None),
                other => {
                    control.push(other);
                    break;
                }
            }
            if seq.waiting.len() >= self.max_group {
                break;
            }
            next = rx.try_recv().ok();
        }
    }

    /// Logs, syncs, applies and acknowledges a group, start to end.
    fn commit(&mut self, group: &mut Vec<PendingBatch>) {
        if let Some(mut w) = self.begin(group, false)
            && self.wait_sync(&mut w)
        {
            self.apply_ack(w);
        }
    }

    /// Appends the group's frames and starts making them durable as the
    /// fsync policy says (under `batch` with `overlap`, on the sync thread;
    /// otherwise here). `None` (every batch answered with the error) if the
    /// log failed.
    fn begin(&mut self, group: &mut Vec<PendingBatch>, overlap: bool) -> Option<Written> {
        if self.failed.load(Ordering::Acquire) {
            self.fail_all(group, "an earlier WAL write failed; restart the server");
            return None;
        }
        metrics::histogram!(m::WAL_GROUP_BATCHES).record(group.len() as f64);
        let mut seqs = Vec::with_capacity(group.len());
        let mut bytes = 0u64;
        let mut syncing = false;
        let mut result: Result<(), inferdb_storage::StorageError> = Ok(());
        for b in group.iter() {
            bytes += b.batch.payload.len() as u64;
            match self.wal.append(KIND_BATCH, &b.batch.payload) {
                Ok(seq) => seqs.push(seq),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            if self.fsync == FsyncPolicy::Always
                && let Err(e) = self.wal.sync()
            {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            let syncer = self.syncer.as_ref().filter(|_| overlap);
            result = match (self.fsync, syncer) {
                (FsyncPolicy::Batch, Some(syncer)) => match self.wal.begin_sync() {
                    Ok(Some(job)) => match syncer.jobs.send(job) {
                        Ok(()) => {
                            syncing = true;
                            Ok(())
                        }
                        // The sync thread is gone: sync here.
                        Err(e) => {
                            let done = e.into_inner().run();
                            metrics::histogram!(m::WAL_SYNC_SECONDS)
                                .record(done.elapsed.as_secs_f64());
                            self.wal.end_sync(done)
                        }
                    },
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
                (FsyncPolicy::Batch, None) => {
                    let t = Instant::now();
                    let r = self.wal.sync();
                    metrics::histogram!(m::WAL_SYNC_SECONDS).record(t.elapsed().as_secs_f64());
                    r
                }
                (FsyncPolicy::None, _) => self.wal.flush(),
                (FsyncPolicy::Always, _) => Ok(()),
            };
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "WAL write failed; refusing further writes");
            self.failed.store(true, Ordering::Release);
            self.fail_all(group, &e.to_string());
            return None;
        }
        Some(Written {
            rows: group.iter().map(|b| b.batch.rows.len()).sum(),
            group: std::mem::take(group),
            seqs,
            bytes,
            syncing,
        })
    }

    /// Waits for the group's fsync on the sync thread, if it has one;
    /// false (every batch answered with the error) if it failed.
    fn wait_sync(&mut self, w: &mut Written) -> bool {
        if !w.syncing {
            return true;
        }
        w.syncing = false;
        let outcome = match self.syncer.as_ref().map(|s| s.done.recv()) {
            Some(Ok(done)) => {
                metrics::histogram!(m::WAL_SYNC_SECONDS).record(done.elapsed.as_secs_f64());
                self.wal.end_sync(done).map_err(|e| e.to_string())
            }
            _ => Err("the WAL sync thread stopped".to_string()),
        };
        match outcome {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "WAL fsync failed; refusing further writes");
                self.failed.store(true, Ordering::Release);
                self.fail_all(&mut w.group, &e);
                false
            }
        }
    }

    /// Applies a durable group to online state in log order, then
    /// acknowledges each batch and hands it to the history thread.
    fn apply_ack(&mut self, w: Written) {
        let Written {
            mut group,
            seqs,
            bytes,
            ..
        } = w;
        metrics::counter!(m::WAL_BYTES_TOTAL).increment(bytes);
        let t = Instant::now();
        let counts = {
            let mut refs: Vec<(usize, &mut BatchFrame)> =
                group.iter_mut().map(|b| (b.stream, &mut b.batch)).collect();
            self.state.apply_group(&self.catalog, &mut refs)
        };
        for ((b, seq), (on_time, late)) in group.drain(..).zip(seqs).zip(counts) {
            if let Some([accepted, late_c, rejected]) = self.events.get(b.stream) {
                accepted.increment(on_time);
                late_c.increment(late);
                rejected.increment(b.rejected);
            }
            self.applied_seq.store(seq, Ordering::Release);
            self.admission.release(b.detached);
            metrics::histogram!(m::INGEST_ACK_SECONDS).record(b.enqueued.elapsed().as_secs_f64());
            // The history thread appends the rows and frees the batch.
            let spent = match self
                .history_tx
                .send(crate::history::HistoryMsg::Frame(seq, b.stream, b.batch))
            {
                Ok(()) => None,
                Err(e) => match e.into_inner() {
                    crate::history::HistoryMsg::Frame(_, _, batch) => Some(batch),
                    _ => None,
                },
            };
            let _ = b.ack.send(Ok(BatchAck { seq, _spent: spent }));
        }
        metrics::histogram!(m::APPLY_SECONDS).record(t.elapsed().as_secs_f64());
    }

    /// Logs an erasure durably and removes the key from online state;
    /// returns its seq and the hot-tier records removed.
    fn erase(&mut self, key: &str) -> Result<(u64, usize), EngineError> {
        if self.failed.load(Ordering::Acquire) {
            return Err(EngineError::Unavailable(
                "an earlier WAL write failed; restart the server".into(),
            ));
        }
        let seq = self
            .wal
            .append(crate::frame::KIND_ERASE, key.as_bytes())
            .and_then(|s| self.wal.sync().map(|()| s))
            .inspect_err(|_| self.failed.store(true, Ordering::Release))?;
        let hot = self.state.erase(&self.catalog, key);
        self.applied_seq.store(seq, Ordering::Release);
        Ok((seq, hot))
    }

    /// Deletes the log segments every frame of which is both in the
    /// snapshot at `snapshot_seq` and flushed to the history's Parquet
    /// files: a restart needs neither (the snapshot restores the online
    /// state; the history head is refilled from the flushed seq on), and a
    /// restart that cannot use the snapshot rebuilds from the history.
    fn truncate(&mut self, snapshot_seq: u64) {
        let cut = snapshot_seq.min(self.history.flushed_seq()) + 1;
        match self.wal.remove_segments_before(cut) {
            Ok(0) => {}
            Ok(n) => tracing::info!(segments = n, before_seq = cut, "WAL truncated"),
            Err(e) => tracing::warn!(error = %e, "could not delete old WAL segments"),
        }
    }

    /// Captures the state for a snapshot at the applied seq (between
    /// groups, so a consistent cut), after making the log durable: a
    /// snapshot must never cover frames the log could still lose.
    fn capture(&mut self) -> Result<Capture, EngineError> {
        let t = Instant::now();
        self.wal.sync()?;
        let seq = self.applied_seq.load(Ordering::Acquire);
        let capture = self.state.capture(&self.catalog, seq);
        metrics::histogram!(m::SNAPSHOT_CAPTURE_SECONDS).record(t.elapsed().as_secs_f64());
        tracing::debug!(seq, ms = t.elapsed().as_millis() as u64, "state captured");
        Ok(capture)
    }

    /// Hands a capture to the snapshot thread (`reply`: who waits for it;
    /// `None` for a periodic one, counted in flight). Gives the capture
    /// back when there is no snapshot thread, or it has stopped.
    fn hand_over(
        &mut self,
        capture: Capture,
        reply: Option<Sender<Result<u64, EngineError>>>,
    ) -> Result<(), Capture> {
        let Some(s) = &mut self.snapshotter else {
            return Err(capture);
        };
        let periodic = reply.is_none();
        match s.jobs.send(SnapshotJob { capture, reply }) {
            Ok(()) => {
                if periodic {
                    s.in_flight += 1;
                }
                Ok(())
            }
            Err(e) => Err(e.into_inner().capture),
        }
    }

    /// Takes a snapshot and waits until it is written (explicit snapshots,
    /// erasures, shutdown), then truncates the log behind it.
    fn snapshot(&mut self) -> Result<u64, EngineError> {
        let capture = self.capture()?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        let seq = match self.hand_over(capture, Some(reply)) {
            Ok(()) => answer
                .recv()
                .map_err(|_| EngineError::Internal("the snapshot thread stopped".into()))??,
            Err(capture) => write_capture(&self.snapshot_dir, &capture)?,
        };
        self.truncate(seq);
        Ok(seq)
    }

    /// Starts the periodic snapshot: captures the state and leaves the
    /// encoding and writing to the snapshot thread, whose outcome
    /// [`Writer::collect_snapshots`] picks up (without one, writes it here).
    /// Returns the seq it covers.
    fn begin_snapshot(&mut self) -> Result<u64, EngineError> {
        let capture = self.capture()?;
        let seq = capture.seq();
        if let Err(capture) = self.hand_over(capture, None) {
            write_capture(&self.snapshot_dir, &capture)?;
            self.truncate(seq);
        }
        Ok(seq)
    }

    /// Takes the outcomes of finished periodic snapshots: truncates the log
    /// behind each one written. False if one failed (the next is due then).
    fn collect_snapshots(&mut self) -> bool {
        let mut ok = true;
        let mut written = None;
        if let Some(s) = &mut self.snapshotter {
            while let Ok(r) = s.done.try_recv() {
                s.in_flight = s.in_flight.saturating_sub(1);
                match r {
                    Ok(seq) => written = Some(seq),
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot failed");
                        ok = false;
                    }
                }
            }
        }
        if let Some(seq) = written {
            self.truncate(seq);
        }
        ok
    }

    /// Whether a periodic snapshot is still being written.
    fn snapshot_in_flight(&self) -> bool {
        self.snapshotter.as_ref().is_some_and(|s| s.in_flight > 0)
    }

    /// Lets the snapshot thread finish what it was given and stops it.
    fn stop_snapshotter(&mut self) {
        if let Some(s) = self.snapshotter.take() {
            s.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Box<PendingBatch> {
        let (ack, _rx) = oneshot::channel();
        let (payload, spans) = crate::frame::encode("s", 0, &[], &[]);
        Box::new(PendingBatch {
            stream: 0,
            batch: BatchFrame {
                stream: "s".into(),
                received_ms: 0,
                routes: vec![],
                records: vec![],
                rows: vec![],
                dead: vec![],
                payload,
                spans,
            },
            rejected: 0,
            enqueued: Instant::now(),
            ack,
            detached: false,
        })
    }

    #[test]
    fn sequencer_releases_in_ticket_order_across_gaps_and_skips() {
        let mut s = Sequencer::default();
        let mut group = Vec::new();
        // Tickets 1..=5 arrive before 0; 2 was skipped.
        for t in [3u64, 1, 5, 4] {
            s.put(t, Some(pending()));
        }
        s.put(2, None);
        s.release(&mut group, 10);
        assert!(
            group.is_empty(),
            "ticket 0 is missing: nothing may go ahead of it"
        );
        s.put(0, Some(pending()));
        s.release(&mut group, 3);
        assert_eq!(group.len(), 3, "0, 1 and 3 (2 was skipped)");
        group.clear();
        s.release(&mut group, 3);
        assert_eq!(
            group.len(),
            2,
            "4 and 5: the rest is released by the next call"
        );
        assert!(s.waiting.is_empty());
        assert_eq!(s.next, 6);
    }
}
