#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The ingest hot path in pieces, on 1,000-event batches shaped like the
//! reference workload (Zipf-ish users, 1.2 s apart in event time):
//! decoding + validation, frame encoding, and applying to online state.

use criterion::{Criterion, criterion_group, criterion_main};
use inferdb_engine::frame;
use inferdb_engine::parse::{BodyFormat, parse_batch};
use inferdb_engine::state::{OnlineState, StateLimits};
use inferdb_types::Catalog;
use std::hint::black_box;
use std::time::Duration;

// The same allocator as the `inferdb` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPEC: &str = include_str!("../../../examples/payments/spec.toml");

fn body(batch: usize, t0: i64, seed: u64) -> String {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..batch)
        .map(|i| {
            // Rough Zipf: a power of a uniform variate concentrates on low ranks.
            let u = (next() % 1_000_000) as f64 / 1_000_000.0;
            let user = ((u.powf(8.0)) * 100_000.0) as u64;
            let ts = t0 + i as i64 * 86;
            format!(
                "{{\"entity_id\":\"user_{user:06}\",\"ts\":\"{}\",\"amount\":{}.{:02},\"merchant_id\":\"m_{:04}\",\"category\":\"grocery\",\"country\":\"US\",\"channel\":\"web\",\"card_present\":false}}\n",
                inferdb_types::Timestamp(ts).to_rfc3339(),
                next() % 500,
                next() % 100,
                next() % 10_000
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let catalog = Catalog::from_toml(SPEC).unwrap();
    let stream = &catalog.streams[0];
    let t0 = 1_767_225_600_000i64;
    let one = body(1000, t0, 7);
    let mut g = c.benchmark_group("ingest_1000_events");
    g.measurement_time(Duration::from_secs(4)).sample_size(20);
    g.bench_function("parse_ndjson", |b| {
        b.iter(|| black_box(parse_batch(stream, one.as_bytes(), BodyFormat::Ndjson).unwrap()))
    });
    let parsed = parse_batch(stream, one.as_bytes(), BodyFormat::Ndjson).unwrap();
    g.bench_function("encode_frame", |b| {
        b.iter(|| black_box(frame::encode("transactions", 0, &parsed.rows, &[])))
    });
    // Apply: a stream of consecutive batches into one state, as the writer does.
    let limits = StateLimits {
        shards: 64,
        hot_records_per_entity: 1000,
        hot_tier_bytes: 512 << 20,
        dead_letters_kept: 100,
    };
    let state = OnlineState::new(&catalog, limits);
    let bodies: Vec<String> = (0..200)
        .map(|k| body(1000, t0 + k * 86_000, k as u64 + 1))
        .collect();
    let batches: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| {
            let p = parse_batch(stream, b.as_bytes(), BodyFormat::Ndjson).unwrap();
            frame::encode("transactions", 0, &p.rows, &[]).0
        })
        .collect();
    let mut k = 0i64;
    g.bench_function("apply", |b| {
        b.iter_batched(
            || {
                // Keep event time moving forward, as a live stream does.
                k += 1;
                let mut f = frame::decode(batches[k as usize % batches.len()].clone()).unwrap();
                let shift = (k / batches.len() as i64) * 200 * 86_000;
                for row in &mut f.rows {
                    if let inferdb_types::Value::Ts(t) = &mut row[stream.time] {
                        *t += shift;
                    }
                }
                f
            },
            |mut f| black_box(state.apply(&catalog, 0, &mut f)),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
