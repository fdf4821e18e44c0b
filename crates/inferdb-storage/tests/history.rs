#![allow(clippy::unwrap_used, clippy::expect_used)]
//! History: flush to Parquet, queries over head and files, crash safety of
//! every step of a flush and a compaction, compaction, retention,
//! recompression, pruning, `time_bucket`, query bounds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use inferdb_storage::arrow::array::AsArray;
use inferdb_storage::arrow::datatypes::{Int64Type, TimestampMillisecondType};
use inferdb_storage::history::sql::{QueryResult, SqlOptions};
use inferdb_storage::history::{FailPoint, History, HistoryOptions, TableDef, fail_at};
use inferdb_types::{FieldType, Value};

const DAY: i64 = 86_400_000;
/// 2026-11-01T00:00:00Z.
const T0: i64 = 1_793_491_200_000;

fn table() -> TableDef {
    TableDef {
        name: "events".into(),
        columns: vec![
            ("id".into(), FieldType::Int),
            ("entity".into(), FieldType::String),
            ("ts".into(), FieldType::Timestamp),
            ("amount".into(), FieldType::Float),
        ],
        key: 1,
        time: 2,
        id: Some(0),
        chunk_ms: DAY,
        retention_ms: None,
        compress_after_ms: None,
    }
}

fn open(dir: &Path, def: TableDef) -> History {
    let mut o = HistoryOptions::new(dir);
    o.compact_files = 3;
    o.delete_grace = Duration::ZERO;
    History::open(o, vec![def], Vec::new()).unwrap()
}

/// Event `i`: entity `u{i % 7}`, time T0 + i minutes (so 1,440 per day).
fn row(i: i64) -> Vec<Value> {
    vec![
        Value::Int(i),
        Value::Str(format!("u{}", i % 7).into()),
        Value::Ts(T0 + i * 60_000),
        Value::Float(i as f64 / 4.0),
    ]
}

/// Appends events `from..to` as frames of 100 rows, frame seq = first/100+1.
fn append(h: &History, from: i64, to: i64) {
    let mut i = from;
    while i < to {
        let end = (i + 100).min(to);
        let rows: Vec<Vec<Value>> = (i..end).map(row).collect();
        h.append((i / 100 + 1) as u64, &[(0, &rows)]);
        i = end;
    }
}

/// Replays what a WAL would after a restart: every frame after the
/// flushed seq, for events `0..total`.
fn replay(h: &History, total: i64) {
    let from = (h.flushed_seq() as i64) * 100;
    append(h, from.min(total), total);
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn q(h: &History, sql: &str) -> QueryResult {
    rt().block_on(h.query(sql, &SqlOptions::default())).unwrap()
}

fn ints(r: &QueryResult, col: usize) -> Vec<i64> {
    r.batches
        .iter()
        .flat_map(|b| {
            let a = b.column(col).as_primitive::<Int64Type>();
            (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
        })
        .collect()
}

/// (rows, distinct ids, sum of ids).
fn census(h: &History) -> (i64, i64, i64) {
    let r = q(
        h,
        "SELECT count(*), count(DISTINCT id), sum(id) FROM events",
    );
    let b = &r.batches[0];
    let v = |c: usize| b.column(c).as_primitive::<Int64Type>().value(0);
    (v(0), v(1), v(2))
}

fn expect_all(h: &History, n: i64) {
    assert_eq!(
        census(h),
        (n, n, n * (n - 1) / 2),
        "every event exactly once"
    );
}

#[test]
fn head_and_files_are_one_table_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), table());
    append(&h, 0, 3000); // two days and a bit
    expect_all(&h, 3000);
    assert_eq!(h.flush().unwrap(), 3, "one file per day partition");
    assert_eq!(h.flushed_seq(), 30);
    append(&h, 3000, 3500);
    expect_all(&h, 3500);
    let per_day = q(
        &h,
        "SELECT count(*) FROM events GROUP BY date_trunc('day', ts) ORDER BY date_trunc('day', ts)",
    );
    assert_eq!(ints(&per_day, 0), vec![1440, 1440, 620]);
    drop(h);
    let h = open(dir.path(), table());
    // Only the flushed part is on disk; the WAL would replay the rest.
    expect_all(&h, 3000);
    replay(&h, 3500);
    expect_all(&h, 3500);
    let stats = &h.stats()[0];
    assert_eq!(
        (stats.files, stats.partitions, stats.file_rows),
        (3, 3, 3000)
    );
    assert_eq!(stats.head_rows, 500);
}

#[test]
fn files_are_sorted_by_key_then_time() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), table());
    append(&h, 0, 1000);
    h.flush().unwrap();
    let day = dir.path().join("events").join(T0.to_string());
    let file = std::fs::read_dir(&day)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let f = std::fs::File::open(file).unwrap();
    let reader = datafusion_reader(f);
    let mut last: Option<(String, i64)> = None;
    let mut n = 0;
    for b in reader {
        let b = b.unwrap();
        let keys = b.column(1).as_string::<i32>();
        let ts = b.column(2).as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            let cur = (keys.value(i).to_string(), ts.value(i));
            if let Some(l) = &last {
                assert!(*l <= cur, "{l:?} before {cur:?}");
            }
            last = Some(cur);
            n += 1;
        }
    }
    assert_eq!(n, 1000);
}

fn datafusion_reader(
    f: std::fs::File,
) -> impl Iterator<
    Item = Result<
        inferdb_storage::arrow::record_batch::RecordBatch,
        inferdb_storage::arrow::error::ArrowError,
    >,
> {
    use inferdb_storage::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
}

#[test]
fn a_crash_at_any_step_of_a_flush_loses_nothing_and_duplicates_nothing() {
    for point in [
        FailPoint::DataWritten,
        FailPoint::ManifestWritten,
        FailPoint::ManifestCommitted,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let h = open(dir.path(), table());
        append(&h, 0, 2000);
        h.flush().unwrap();
        append(&h, 2000, 4000);
        fail_at(Some(point));
        let r = h.flush();
        fail_at(None);
        // The crash: the process is gone, whatever the call returned.
        drop(h);
        let h = open(dir.path(), table());
        replay(&h, 4000);
        expect_all(&h, 4000);
        // And the history goes on working: the next flush takes the rest.
        h.flush().unwrap();
        drop(h);
        let h = open(dir.path(), table());
        expect_all(&h, 4000);
        assert_eq!(h.flushed_seq(), 40, "{point:?}: {r:?}");
        // Nothing but listed files and the manifest is left.
        let listed: usize = h.stats()[0].files;
        assert_eq!(count_files(dir.path()), listed + 1, "{point:?}");
    }
}

#[test]
fn a_failed_flush_keeps_rows_visible_and_the_next_one_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), table());
    append(&h, 0, 1000);
    fail_at(Some(FailPoint::DataWritten));
    assert!(h.flush().is_err());
    fail_at(None);
    expect_all(&h, 1000);
    append(&h, 1000, 1200);
    expect_all(&h, 1200);
    h.flush().unwrap();
    expect_all(&h, 1200);
    assert_eq!(h.stats()[0].head_rows, 0);
    drop(h);
    let h = open(dir.path(), table());
    expect_all(&h, 1200);
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in walk(dir) {
        if e.is_file() {
            n += 1;
        }
    }
    n
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn compaction_merges_files_and_a_crash_at_any_step_of_it_is_safe() {
    for point in [
        None,
        Some(FailPoint::DataWritten),
        Some(FailPoint::ManifestWritten),
        Some(FailPoint::ManifestCommitted),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let h = open(dir.path(), table());
        for k in 0..4 {
            append(&h, k * 300, (k + 1) * 300);
            h.flush().unwrap();
        }
        assert_eq!(h.stats()[0].files, 4);
        fail_at(point);
        let r = h.maintain(T0 + DAY);
        fail_at(None);
        drop(h);
        let h = open(dir.path(), table());
        replay(&h, 1200);
        expect_all(&h, 1200);
        if point.is_none() {
            assert_eq!(r.unwrap().compacted, 1);
        }
        h.maintain(T0 + DAY).unwrap();
        assert_eq!(h.stats()[0].files, 1, "{point:?}");
        expect_all(&h, 1200);
        drop(h);
        let h = open(dir.path(), table());
        expect_all(&h, 1200);
        assert_eq!(
            count_files(dir.path()),
            2,
            "{point:?}: one file and the manifest"
        );
    }
}

#[test]
fn retention_drops_old_partitions_and_compress_after_recompresses() {
    let dir = tempfile::tempdir().unwrap();
    let mut def = table();
    def.retention_ms = Some(3 * DAY);
    def.compress_after_ms = Some(DAY);
    let h = open(dir.path(), def.clone());
    append(&h, 0, 1440 * 5); // five days
    h.flush().unwrap();
    assert_eq!(h.stats()[0].partitions, 5);
    // "now" = the end of day 5: days 1 and 2 are 3 days old or more.
    let now = T0 + 5 * DAY;
    let r = h.maintain(now).unwrap();
    assert_eq!(r.dropped, 2);
    let days = q(
        &h,
        "SELECT count(*) FROM events GROUP BY date_trunc('day', ts)",
    );
    assert_eq!(ints(&days, 0), vec![1440, 1440, 1440]);
    let r = h.maintain(now).unwrap();
    // Days 3 and 4 ended a day or more before `now`: recompressed once.
    assert_eq!((r.compacted, r.recompressed), (2, 2));
    let again = h.maintain(now).unwrap();
    assert_eq!(again.compacted, 0, "already at the higher level");
    drop(h);
    let h = open(dir.path(), def);
    assert_eq!(census(&h).0, 1440 * 3);
}

#[test]
fn a_query_touching_one_day_reads_one_partition() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), table());
    append(&h, 0, 1440 * 4);
    h.flush().unwrap();
    let before = h.files_scanned();
    let r = q(
        &h,
        "SELECT count(*) FROM events WHERE ts >= '2026-11-02T00:00:00Z' AND ts < '2026-11-03T00:00:00Z'",
    );
    assert_eq!(ints(&r, 0), vec![1440]);
    assert_eq!(h.files_scanned() - before, 1);
    let before = h.files_scanned();
    let r = q(&h, "SELECT count(*) FROM events WHERE entity = 'u3'");
    assert_eq!(
        ints(&r, 0),
        vec![(0..1440 * 4).filter(|i| i % 7 == 3).count() as i64]
    );
    assert_eq!(h.files_scanned() - before, 4, "every day has u3");
    let before = h.files_scanned();
    let r = q(&h, "SELECT count(*) FROM events WHERE entity = 'nobody'");
    assert_eq!(ints(&r, 0), vec![0]);
    assert_eq!(
        h.files_scanned() - before,
        0,
        "outside every file's key range"
    );
}

#[test]
fn time_bucket_matches_timescaledb_and_a_naive_count() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), table());
    append(&h, 0, 1000);
    h.flush().unwrap();
    append(&h, 1000, 1300);
    let r = q(
        &h,
        "SELECT time_bucket(INTERVAL '5 minutes', ts) AS b, count(*) AS n, sum(id) AS s \
         FROM events GROUP BY b ORDER BY b",
    );
    let mut naive: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for i in 0..1300i64 {
        let ts = T0 + i * 60_000;
        let e = naive.entry(ts - ts.rem_euclid(300_000)).or_default();
        e.0 += 1;
        e.1 += i;
    }
    let buckets: Vec<i64> = r
        .batches
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_primitive::<TimestampMillisecondType>();
            (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(buckets, naive.keys().copied().collect::<Vec<_>>());
    assert_eq!(ints(&r, 1), naive.values().map(|v| v.0).collect::<Vec<_>>());
    assert_eq!(ints(&r, 2), naive.values().map(|v| v.1).collect::<Vec<_>>());
    // Weekly buckets start on Mondays, as in TimescaleDB (2026-11-01 is a
    // Sunday: its bucket starts on Monday 2026-10-26).
    let r = q(
        &h,
        "SELECT CAST(time_bucket(INTERVAL '7 days', ts) AS VARCHAR) FROM events WHERE id = 0",
    );
    let s = inferdb_storage::arrow::util::display::array_value_to_string(r.batches[0].column(0), 0)
        .unwrap();
    assert!(s.starts_with("2026-10-26T00:00:00"), "{s}");
}

#[test]
fn bad_queries_are_errors_and_queries_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let h = open(dir.path(), table());
    append(&h, 0, 5000);
    let rt = rt();
    let e = rt
        .block_on(h.query("SELECT nope FROM events", &SqlOptions::default()))
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let e = rt
        .block_on(h.query("SELEC 1", &SqlOptions::default()))
        .unwrap_err();
    assert!(e.to_string().contains("SELEC"), "{e}");
    let small = SqlOptions {
        max_rows: 10,
        ..SqlOptions::default()
    };
    let r = rt
        .block_on(h.query("SELECT * FROM events", &small))
        .unwrap();
    assert_eq!((r.num_rows(), r.truncated), (10, true));
    let tiny = SqlOptions {
        memory_limit: 64 << 10,
        ..SqlOptions::default()
    };
    let e = rt
        .block_on(h.query(
            "SELECT a.id, count(*) FROM events a JOIN events b ON a.entity = b.entity GROUP BY a.id ORDER BY 2",
            &tiny,
        ))
        .unwrap_err();
    assert!(
        e.to_string().to_lowercase().contains("resources exhausted"),
        "{e}"
    );
    let quick = SqlOptions {
        timeout: Duration::from_millis(1),
        ..SqlOptions::default()
    };
    let e = rt
        .block_on(h.query(
            "SELECT count(DISTINCT a.id * 100000 + b.id) FROM events a, events b",
            &quick,
        ))
        .unwrap_err();
    assert!(e.to_string().contains("time limit"), "{e}");
}
