//! The WAL writer thread: the single owner of the log and the only thread
//! that changes online state.
//!
//! It blocks on a bounded queue of batches, then drains whatever else is
//! queued (group commit): appends one frame per batch, makes the group
//! durable as the fsync policy says (`always`: fsync after each frame;
//! `batch`: one fsync for the group; `none`: hand to the OS), applies the
//! batches to online state in log order, and only then acknowledges each
//! one. Snapshots are taken here between groups, so they are a consistent
//! cut at a known sequence number. If a write or fsync fails, every waiting
//! and later batch is refused: after a failed fsync the page cache can no
//! longer be trusted, and only a restart (which replays the log) is safe.

use crate::error::EngineError;
use crate::frame::{self, KIND_BATCH};
use crate::metrics as m;
use crate::state::OnlineState;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use inferdb_storage::{FsyncPolicy, Wal, write_snapshot};
use inferdb_types::Catalog;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What a batch's submitter learns once it is durable and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAck {
    /// The WAL sequence number of the batch's frame.
    pub seq: u64,
}

/// A batch on its way to the log.
pub struct PendingBatch {
    pub(crate) stream: usize,
    pub(crate) payload: Vec<u8>,
    pub(crate) enqueued: Instant,
    pub(crate) ack: oneshot::Sender<Result<BatchAck, EngineError>>,
}

/// Commands to the writer.
pub enum Command {
    /// Log, apply and acknowledge a batch.
    Batch(PendingBatch),
    /// Take a snapshot now; answers its sequence number.
    Snapshot(oneshot::Sender<Result<u64, EngineError>>),
    /// Sync, snapshot and stop.
    Shutdown(oneshot::Sender<()>),
    /// Stop at once, as a crash would: no sync, no snapshot (tests).
    Abort(oneshot::Sender<()>),
}

pub(crate) struct Writer {
    pub catalog: Arc<Catalog>,
    pub state: Arc<OnlineState>,
    pub wal: Wal,
    pub fsync: FsyncPolicy,
    pub snapshot_dir: PathBuf,
    pub snapshot_interval: Duration,
    pub max_group: usize,
    pub applied_seq: Arc<AtomicU64>,
    pub failed: Arc<AtomicBool>,
    /// Held while the writer runs: one process per data directory.
    pub lock: std::fs::File,
}

impl Writer {
    pub fn run(mut self, rx: Receiver<Command>) {
        let mut last_snapshot = Instant::now();
        let mut snapshot_seq = self.applied_seq.load(Ordering::Acquire);
        let mut group: Vec<PendingBatch> = Vec::with_capacity(self.max_group);
        let mut deferred: Vec<Command> = Vec::new();
        loop {
            let first = match rx.recv_timeout(self.snapshot_interval.max(Duration::from_millis(10))) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.finish();
                    return;
                }
            };
            if let Some(c) = first {
                match c {
                    Command::Batch(b) => group.push(b),
                    other => deferred.push(other),
                }
                while group.len() < self.max_group {
                    match rx.try_recv() {
                        Ok(Command::Batch(b)) => group.push(b),
                        Ok(other) => {
                            deferred.push(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            if !group.is_empty() {
                self.commit(&mut group);
            }
            let applied = self.applied_seq.load(Ordering::Acquire);
            if applied > snapshot_seq && last_snapshot.elapsed() >= self.snapshot_interval {
                if let Ok(seq) = self.snapshot() {
                    snapshot_seq = seq;
                }
                last_snapshot = Instant::now();
            }
            for c in deferred.drain(..) {
                match c {
                    Command::Batch(_) => {}
                    Command::Snapshot(tx) => {
                        let r = self.snapshot();
                        if let Ok(seq) = r {
                            snapshot_seq = seq;
                            last_snapshot = Instant::now();
                        }
                        let _ = tx.send(r);
                    }
                    Command::Abort(tx) => {
                        self.fail_all(&mut group, "aborted");
                        self.failed.store(true, Ordering::Release);
                        let _ = self.lock.unlock();
                        let _ = tx.send(());
                        return;
                    }
                    Command::Shutdown(tx) => {
                        // Batches queued behind the shutdown are still logged.
                        while let Ok(Command::Batch(b)) = rx.try_recv() {
                            group.push(b);
                        }
                        if !group.is_empty() {
                            self.commit(&mut group);
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
            return;
        }
        if let Err(e) = self.wal.sync() {
            tracing::error!(error = %e, "final WAL sync failed");
            return;
        }
        if let Err(e) = self.snapshot() {
            tracing::warn!(error = %e, "snapshot at shutdown failed; restart will replay the log");
        }
    }

    fn fail_all(&self, group: &mut Vec<PendingBatch>, why: &str) {
        for b in group.drain(..) {
            let _ = b.ack.send(Err(EngineError::Unavailable(why.to_string())));
        }
    }

    fn commit(&mut self, group: &mut Vec<PendingBatch>) {
        if self.failed.load(Ordering::Acquire) {
            self.fail_all(group, "an earlier WAL write failed; restart the server");
            return;
        }
        metrics::histogram!(m::WAL_GROUP_BATCHES).record(group.len() as f64);
        let mut seqs = Vec::with_capacity(group.len());
        let mut bytes = 0u64;
        let mut result: Result<(), inferdb_storage::StorageError> = Ok(());
        for b in group.iter() {
            bytes += b.payload.len() as u64;
            match self.wal.append(KIND_BATCH, &b.payload) {
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
            let t = Instant::now();
            result = match self.fsync {
                FsyncPolicy::Batch => self.wal.sync(),
                FsyncPolicy::None => self.wal.flush(),
                FsyncPolicy::Always => Ok(()),
            };
            metrics::histogram!(m::WAL_SYNC_SECONDS).record(t.elapsed().as_secs_f64());
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "WAL write failed; refusing further writes");
            self.failed.store(true, Ordering::Release);
            self.fail_all(group, &e.to_string());
            return;
        }
        metrics::counter!(m::WAL_BYTES_TOTAL).increment(bytes);
        let t = Instant::now();
        for (b, seq) in group.drain(..).zip(seqs) {
            let res = frame::decode(&b.payload).map(|f| {
                let stream = &self.catalog.streams[b.stream].name;
                let dead = f.dead.len() as u64;
                let (on_time, late) = self.state.apply(&self.catalog, b.stream, f);
                metrics::counter!(m::INGEST_EVENTS_TOTAL, "stream" => stream.clone(), "outcome" => "accepted")
                    .increment(on_time);
                metrics::counter!(m::INGEST_EVENTS_TOTAL, "stream" => stream.clone(), "outcome" => "late")
                    .increment(late);
                metrics::counter!(m::INGEST_EVENTS_TOTAL, "stream" => stream.clone(), "outcome" => "rejected")
                    .increment(dead);
                BatchAck { seq }
            });
            self.applied_seq.store(seq, Ordering::Release);
            metrics::histogram!(m::INGEST_ACK_SECONDS).record(b.enqueued.elapsed().as_secs_f64());
            let _ = b.ack.send(res);
        }
        metrics::histogram!(m::APPLY_SECONDS).record(t.elapsed().as_secs_f64());
    }

    fn snapshot(&mut self) -> Result<u64, EngineError> {
        let t = Instant::now();
        // A snapshot must never cover frames the log could still lose.
        self.wal.sync()?;
        let seq = self.applied_seq.load(Ordering::Acquire);
        let bytes = self
            .state
            .snapshot(&self.catalog, seq)
            .map_err(|e| EngineError::Internal(format!("snapshot encoding: {e}")))?;
        write_snapshot(&self.snapshot_dir, seq, &bytes)?;
        metrics::counter!(m::SNAPSHOTS_TOTAL).increment(1);
        metrics::histogram!(m::SNAPSHOT_SECONDS).record(t.elapsed().as_secs_f64());
        tracing::info!(seq, bytes = bytes.len(), ms = t.elapsed().as_millis() as u64, "snapshot written");
        Ok(seq)
    }
}
