//! The history threads: `inferdb-history` appends every applied batch to
//! the history head (its rows to the stream's table, its rejected records
//! to `dead_letters`) in log order, then frees the batch; `inferdb-flush`
//! flushes the head to Parquet when it is due and runs compaction and
//! retention. Neither ever blocks the WAL writer: the writer hands batches
//! over an unbounded channel, and a flush holds the head's lock only to
//! swap batches out.

use crate::frame::BatchFrame;
use crossbeam_channel::Receiver;
use inferdb_storage::history::History;
use inferdb_types::{Timestamp, Value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Messages to the history thread.
pub(crate) enum HistoryMsg {
    /// An applied batch and its WAL seq.
    Frame(u64, usize, BatchFrame),
    /// Erase an entity's rows (WAL seq of the erasure, key, records the
    /// writer removed from the hot tier, the caller).
    Erase(
        u64,
        String,
        usize,
        tokio::sync::oneshot::Sender<Result<crate::Erasure, crate::EngineError>>,
    ),
    /// Append what is queued, flush, and stop.
    Close(tokio::sync::oneshot::Sender<()>),
}

/// The tables an erasure touches: every stream's (rows keyed by the
/// entity); not `dead_letters`, whose key is the stream.
pub(crate) fn erase_tables(history: &History) -> Vec<usize> {
    history
        .tables()
        .enumerate()
        .filter(|(_, t)| t.name != inferdb_storage::history::DEAD_LETTERS)
        .map(|(i, _)| i)
        .collect()
}

/// The rows a batch adds to the `dead_letters` table.
pub(crate) fn dead_letter_rows(stream: &str, b: &BatchFrame) -> Vec<Vec<Value>> {
    b.dead
        .iter()
        .map(|d| {
            vec![
                Value::Str(stream.into()),
                Value::Ts(d.received_ms),
                Value::Int(d.index as i64),
                d.field
                    .as_deref()
                    .map_or(Value::Null, |f| Value::Str(f.into())),
                Value::Str(d.reason.as_str().into()),
                Value::Str(d.raw.as_str().into()),
            ]
        })
        .collect()
}

/// Appends one batch to the head.
pub(crate) fn append(history: &History, dead_table: usize, seq: u64, si: usize, b: &BatchFrame) {
    if b.dead.is_empty() {
        history.append(seq, &[(si, &b.rows)]);
    } else {
        let dead = dead_letter_rows(&b.stream, b);
        history.append(seq, &[(si, &b.rows), (dead_table, &dead)]);
    }
}

pub(crate) fn run_appender(history: History, dead_table: usize, rx: Receiver<HistoryMsg>) {
    while let Ok(m) = rx.recv() {
        match m {
            HistoryMsg::Frame(seq, si, b) => append(&history, dead_table, seq, si, &b),
            HistoryMsg::Erase(seq, key, hot_records, done) => {
                let r = history
                    .erase(seq, &erase_tables(&history), &key)
                    .map(|rows| crate::Erasure {
                        key,
                        seq,
                        hot_records,
                        history_rows: rows,
                    })
                    .map_err(crate::EngineError::from);
                let _ = done.send(r);
            }
            HistoryMsg::Close(done) => {
                if let Err(e) = history.close() {
                    tracing::error!(error = %e, "final history flush failed; the log still holds the rows");
                }
                let _ = done.send(());
                return;
            }
        }
    }
}

/// Flushes when due and maintains every `maintenance` until `stop`.
pub(crate) fn run_flusher(history: History, maintenance: Duration, stop: Arc<AtomicBool>) {
    let mut last_maint = Instant::now();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(200));
        if history.flush_due() {
            let t = Instant::now();
            match history.flush() {
                Ok(files) => tracing::info!(
                    files,
                    ms = t.elapsed().as_millis() as u64,
                    "history flushed"
                ),
                Err(e) => tracing::error!(error = %e, "history flush failed; retrying later"),
            }
        }
        if last_maint.elapsed() >= maintenance || history.compaction_due() {
            last_maint = Instant::now();
            if let Err(e) = history.maintain(Timestamp::now().millis()) {
                tracing::error!(error = %e, "history maintenance failed");
            }
        }
    }
}

/// Waits, for a bounded time, until the head holds every frame up to `seq`.
pub(crate) fn catch_up(history: &History, seq: u64) -> bool {
    history.wait_for(seq, Duration::from_secs(10))
}
