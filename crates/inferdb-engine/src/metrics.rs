//! Metric names of the engine, declared once. Labels are bounded: stream
//! and view names come from the catalog, never from request data.

/// Events by outcome (`accepted`, `rejected`, `late`), label `stream`.
pub const INGEST_EVENTS_TOTAL: &str = "inferdb_ingest_events_total";
/// Batches that reached the WAL writer, label `stream`.
pub const INGEST_BATCHES_TOTAL: &str = "inferdb_ingest_batches_total";
/// Batches refused because the ingest queue was full.
pub const INGEST_OVERLOADED_TOTAL: &str = "inferdb_ingest_overloaded_total";
/// Time from a batch entering the queue to its acknowledgement (durable and applied).
pub const INGEST_ACK_SECONDS: &str = "inferdb_ingest_ack_duration_seconds";
/// Batches per group commit.
pub const WAL_GROUP_BATCHES: &str = "inferdb_wal_group_batches";
/// Time spent in fsync per group commit.
pub const WAL_SYNC_SECONDS: &str = "inferdb_wal_sync_duration_seconds";
/// Bytes appended to the WAL.
pub const WAL_BYTES_TOTAL: &str = "inferdb_wal_bytes_total";
/// Time to apply a group to online state.
pub const APPLY_SECONDS: &str = "inferdb_online_apply_duration_seconds";
/// Snapshots written.
pub const SNAPSHOTS_TOTAL: &str = "inferdb_snapshots_total";
/// Time to encode and write a snapshot (on the snapshot thread).
pub const SNAPSHOT_SECONDS: &str = "inferdb_snapshot_duration_seconds";
/// Time the writer paused to capture the state for a snapshot.
pub const SNAPSHOT_CAPTURE_SECONDS: &str = "inferdb_snapshot_capture_duration_seconds";
/// Feature rows read, label `view`.
pub const FEATURE_READS_TOTAL: &str = "inferdb_feature_reads_total";
/// Entities held in online state, label `view`.
pub const ONLINE_ENTITIES: &str = "inferdb_online_entities";
/// Bytes held by the hot tier of recent records, label `stream`.
pub const HOT_TIER_BYTES: &str = "inferdb_hot_tier_bytes";

/// Histogram buckets (seconds) used for every latency above.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];
