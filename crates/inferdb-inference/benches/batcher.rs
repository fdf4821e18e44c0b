//! Throughput of one-row requests through the dynamic batcher with the
//! 200-tree GBDT fixture as backend, with 1 and 8 submitting threads (each a
//! closed loop: submit, wait, repeat). One thread sees batch-1 latency plus the
//! queue hop; eight threads let batches form.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inferdb_inference::{Backend, Batcher, BatcherConfig, TreeEnsemble};

fn gbdt() -> TreeEnsemble {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/gbdt_200.onnx"
    ))
    .expect("fixture gbdt_200.onnx");
    TreeEnsemble::from_onnx_bytes(&bytes).expect("model compiles")
}

fn batcher(c: &mut Criterion) {
    let f = gbdt().n_features();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let row: Vec<f32> = (0..f)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect();
    let mut group = c.benchmark_group("batcher_gbdt_200");
    for delay_us in [0u64, 200] {
        let cfg = BatcherConfig {
            max_batch_size: 64,
            max_queue_delay: Duration::from_micros(delay_us),
            max_queue_size: 1024,
            preferred_batch_sizes: Vec::new(),
            instances: 1,
        };
        let b = Batcher::start("gbdt_200", cfg, || Ok(Box::new(gbdt()) as Box<dyn Backend>))
            .expect("batcher starts");
        for threads in [1usize, 8] {
            group.throughput(Throughput::Elements(threads as u64));
            let id = BenchmarkId::new(format!("delay_{delay_us}us"), format!("threads_{threads}"));
            group.bench_with_input(id, &threads, |bench, &t| {
                bench.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..t {
                            s.spawn(|| {
                                for _ in 0..iters {
                                    let p = b.submit(row.clone(), 1, None).expect("admitted");
                                    p.wait_blocking().expect("answered");
                                }
                            });
                        }
                    });
                    start.elapsed()
                });
            });
        }
        let s = b.stats();
        println!(
            "delay {delay_us}us: batches {} rows {} mean batch {:.2} max {}",
            s.batches,
            s.rows_executed,
            s.rows_executed as f64 / s.batches.max(1) as f64,
            s.max_batch_rows
        );
    }
    group.finish();
}

criterion_group!(benches, batcher);
criterion_main!(benches);
