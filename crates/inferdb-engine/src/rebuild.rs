//! Rebuilding the online state from the history.
//!
//! Once the log's oldest segments are deleted (they are, behind both the
//! latest snapshot and the history's flushed seq), a restart that cannot use
//! the snapshot — the spec's views changed, or every snapshot is unreadable
//! — can no longer replay the whole log. It rebuilds instead from the
//! history, which holds every acknowledged event: each stream's rows, one
//! partition at a time in event-time order, go through the same
//! `OnlineState::apply` as live batches (views, hot tier, inference-id
//! index, watermark, counters).
//!
//! What differs from a replay of the log: events are applied in event-time
//! order rather than arrival order, so none is judged late — an event the
//! live path had refused from its windows as too late is counted after a
//! rebuild (as in the point-in-time export). For a stream that arrives in
//! order the result is the same. The online list of recent dead letters
//! starts empty; the `dead_letters` table keeps them all.

use crate::EngineError;
use crate::frame::{self, BatchFrame};
use crate::state::OnlineState;
use inferdb_storage::history::History;
use inferdb_types::{Catalog, Value};

/// Rows per batch handed to `apply`.
const CHUNK: usize = 8192;

/// Applies every stored row of every stream to `state` (empty, fresh).
/// Returns how many rows it applied.
pub(crate) fn from_history(
    catalog: &Catalog,
    state: &OnlineState,
    history: &History,
) -> Result<u64, EngineError> {
    let started = std::time::Instant::now();
    let mut total = 0u64;
    for (si, stream) in catalog.streams.iter().enumerate() {
        history.for_each_partition(si, |rows| {
            let mut rows = rows.into_iter();
            loop {
                let chunk: Vec<Vec<Value>> = rows.by_ref().take(CHUNK).collect();
                if chunk.is_empty() {
                    break;
                }
                total += chunk.len() as u64;
                let (payload, spans) = frame::encode(&stream.name, 0, &chunk, &[]);
                let mut b = BatchFrame {
                    stream: stream.name.clone(),
                    received_ms: 0,
                    rows: chunk,
                    dead: Vec::new(),
                    payload,
                    spans,
                    routes: Vec::new(),
                    records: Vec::new(),
                };
                state.apply(catalog, si, &mut b);
            }
            Ok(())
        })?;
    }
    tracing::info!(
        rows = total,
        ms = started.elapsed().as_millis() as u64,
        "online state rebuilt from the history"
    );
    Ok(total)
}
