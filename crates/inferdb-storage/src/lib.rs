//! Durable storage of inferdb: the write-ahead log (WAL) and snapshots.
//!
//! The engine's single writer thread owns a [`Wal`]: for each ingest batch
//! it calls [`Wal::append`] (one checksummed [`Frame`] per batch), then
//! [`Wal::sync`] once per group of batches before applying them and
//! acknowledging (group commit); the [`FsyncPolicy`] decides how often. The
//! log is a directory of segment files; [`Wal::open`] recovers it after a
//! crash by truncating a torn tail, and [`WalReader`] replays frames from a
//! given seq at start.
//!
//! A snapshot ([`write_snapshot`], [`read_latest_snapshot`]) is an opaque
//! payload from the engine stamped with the last seq it covers: restart is
//! the latest valid snapshot, then WAL replay from the seq after it. Once a
//! snapshot (or Parquet history) covers a prefix of the log,
//! [`Wal::remove_segments_before`] deletes the segments behind it.
//!
//! Everything here is blocking `std::fs` code, meant for dedicated threads.

mod error;
mod frame;
pub mod history;
mod reader;
mod segment;
mod snapshot;
mod wal;

pub use datafusion::arrow;
pub use datafusion::parquet;
pub use error::StorageError;
pub use frame::{FRAME_HEADER_LEN, FRAME_MAGIC, Frame, MAX_PAYLOAD_LEN};
pub use reader::WalReader;
pub use snapshot::{
    SNAPSHOT_HEADER_LEN, SnapshotWriter, read_latest_snapshot, write_snapshot, write_snapshot_with,
};
pub use wal::{
    DEFAULT_SEGMENT_BYTES, FsyncPolicy, RecoveryReport, SyncDone, SyncJob, Wal, WalOptions,
};
