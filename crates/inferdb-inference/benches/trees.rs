//! Times the 200-tree GBDT fixture (the second main model of
//! shared/WORKLOAD.md) at batch 1, 8 and 64, to compare with onnxruntime's
//! single-thread figures in `fixtures/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inferdb_inference::TreeEnsemble;

fn gbdt(c: &mut Criterion) {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/gbdt_200.onnx"
    ))
    .expect("fixture gbdt_200.onnx");
    let model = TreeEnsemble::from_onnx_bytes(&bytes).expect("model compiles");
    let f = model.n_features();
    // Deterministic pseudo-normal-ish inputs (xorshift), so runs are comparable.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let input: Vec<f32> = (0..64 * f)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
        })
        .collect();
    let mut group = c.benchmark_group("gbdt_200");
    for batch in [1usize, 8, 64] {
        let (mut labels, mut scores) = (Vec::new(), Vec::new());
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter(|| {
                model
                    .predict(&input[..batch * f], batch, &mut labels, &mut scores)
                    .unwrap();
                std::hint::black_box(&scores);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, gbdt);
criterion_main!(benches);
