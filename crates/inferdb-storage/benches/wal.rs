//! Append throughput of the WAL in the shape the engine drives it: groups of
//! 16 frames, then either `flush` (FsyncPolicy::None) or `sync` (one
//! fdatasync per group, FsyncPolicy::Batch), for 100 KB and 200-byte frames.
//! Segments behind the writer are removed as it goes so the disk use stays
//! bounded. Files go to `$INFERDB_BENCH_DIR` if set, else a temp dir: fsync
//! figures depend on that file system and device, so report them with it.
//!
//! Run: `cargo bench -p inferdb-storage --bench wal`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inferdb_storage::{Wal, WalOptions};

/// Frames per group commit.
const GROUP: usize = 16;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("INFERDB_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (label, size) in [("100KB", 100_000usize), ("200B", 200)] {
        let payload = vec![0xA5u8; size];
        group.throughput(Throughput::Bytes((size * GROUP) as u64));
        for sync in [false, true] {
            let name = if sync {
                "sync_every_16"
            } else {
                "flush_every_16"
            };
            group.bench_function(BenchmarkId::new(name, label), |b| {
                let dir = bench_dir();
                let (mut wal, _) = Wal::open(WalOptions::new(dir.path())).unwrap();
                b.iter(|| {
                    for _ in 0..GROUP {
                        black_box(wal.append(1, &payload).unwrap());
                    }
                    if sync {
                        wal.sync().unwrap();
                    } else {
                        wal.flush().unwrap();
                    }
                    let next = wal.next_seq();
                    wal.remove_segments_before(next).unwrap();
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
