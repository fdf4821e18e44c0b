//! Times the reference ensemble of examples/models (feature_preprocessor →
//! main_model_v3 → confidence_calibrator, each a backend instance of our dense
//! engine, no batcher), each of its steps, and gbdt_fraud (our tree
//! evaluator) through `CompiledModel` at batch 1, 8 and 64; then prints our
//! median time per call next to onnxruntime's single-thread medians in
//! `fixtures/ort_timings.json` (the fused ensemble graph, its steps, and
//! gbdt_200), with the fused graph on our engine and the three steps on
//! tract as well.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use inferdb_inference::{Backend, CompiledModel, IoSpec};

const BATCHES: [usize; 3] = [1, 8, 64];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(name: &str, inputs: &[(&str, usize)], outputs: &[(&str, usize)]) -> CompiledModel {
    load_on(false, name, inputs, outputs)
}

/// A model of examples/models, on tract when `on_tract`; `name` may also be
/// a path to an .onnx file.
fn load_on(
    on_tract: bool,
    name: &str,
    inputs: &[(&str, usize)],
    outputs: &[(&str, usize)],
) -> CompiledModel {
    let path = if name.ends_with(".onnx") {
        root().join(name)
    } else {
        root()
            .join("../../examples/models")
            .join(name)
            .join("1/model.onnx")
    };
    let bytes = std::fs::read(path).expect("examples/models (run scripts/make_fixtures.py)");
    let specs = |items: &[(&str, usize)]| -> Vec<IoSpec> {
        items.iter().map(|&(n, w)| IoSpec::new(n, w)).collect()
    };
    let (i, o) = (specs(inputs), specs(outputs));
    if on_tract {
        CompiledModel::load_on_tract(&bytes, &i, &o, true).expect("model loads")
    } else {
        CompiledModel::load(&bytes, &i, &o, true).expect("model loads")
    }
}

/// The three steps, as backend instances, with their intermediate buffers.
struct Chain {
    steps: [Box<dyn Backend>; 3],
    bufs: [Vec<f32>; 3],
}

impl Chain {
    fn new(on_tract: bool) -> Chain {
        let steps = [
            load_on(
                on_tract,
                "feature_preprocessor",
                &[("input", 256)],
                &[("scaled", 256)],
            )
            .instance(),
            load_on(
                on_tract,
                "main_model_v3",
                &[("input", 256)],
                &[("logits", 10)],
            )
            .instance(),
            load_on(
                on_tract,
                "confidence_calibrator",
                &[("logits", 10)],
                &[("predictions", 10), ("confidence", 1)],
            )
            .instance(),
        ];
        Chain {
            steps,
            bufs: [Vec::new(), Vec::new(), Vec::new()],
        }
    }

    fn run(&mut self, input: &[f32], n: usize) -> &[f32] {
        let [a, b, c] = &mut self.bufs;
        let [s0, s1, s2] = &mut self.steps;
        a.clear();
        b.clear();
        c.clear();
        s0.run(input, n, a).unwrap();
        s1.run(a, n, b).unwrap();
        s2.run(b, n, c).unwrap();
        c
    }
}

fn features() -> Vec<f32> {
    // The 64-row case of fixtures/ensemble.json: realistic raw features.
    let text = std::fs::read_to_string(root().join("fixtures/ensemble.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["batch"] == 64)
        .unwrap();
    case["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn steps() -> Vec<(&'static str, Box<dyn Backend>, usize)> {
    vec![
        (
            "feature_preprocessor",
            load(
                "feature_preprocessor",
                &[("input", 256)],
                &[("scaled", 256)],
            )
            .instance(),
            256,
        ),
        (
            "main_model_v3",
            load("main_model_v3", &[("input", 256)], &[("logits", 10)]).instance(),
            256,
        ),
        (
            "confidence_calibrator",
            load(
                "confidence_calibrator",
                &[("logits", 10)],
                &[("predictions", 10), ("confidence", 1)],
            )
            .instance(),
            10,
        ),
    ]
}

fn gbdt() -> Box<dyn Backend> {
    load(
        "gbdt_fraud",
        &[("X", 256)],
        &[("label", 1), ("probabilities", 10)],
    )
    .instance()
}

/// A step's input of `n` rows: the first `width` values of each feature row.
fn step_input(x: &[f32], n: usize, width: usize) -> Vec<f32> {
    x.chunks(256)
        .take(n)
        .flat_map(|r| r[..width].to_vec())
        .collect()
}

fn bench(c: &mut Criterion) {
    let x = features();
    let mut group = c.benchmark_group("ensemble");
    let mut chain = Chain::new(false);
    for n in BATCHES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                std::hint::black_box(chain.run(&x[..n * 256], n));
            })
        });
    }
    group.finish();

    for (name, mut backend, width) in steps() {
        let mut group = c.benchmark_group(format!("step/{name}"));
        let mut out = Vec::new();
        for n in BATCHES {
            let input = step_input(&x, n, width);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
                b.iter(|| {
                    out.clear();
                    backend.run(&input, n, &mut out).unwrap();
                    std::hint::black_box(&out);
                })
            });
        }
        group.finish();
    }

    let mut group = c.benchmark_group("gbdt_fraud");
    let mut backend = gbdt();
    let mut out = Vec::new();
    for n in BATCHES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                out.clear();
                backend.run(&x[..n * 256], n, &mut out).unwrap();
                std::hint::black_box(&out);
            })
        });
    }
    group.finish();
}

/// Median µs per call of `f` over about half a second (at least 200 calls),
/// the statistic the fixture script uses for onnxruntime.
fn median_us(mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 200 || start.elapsed() < Duration::from_millis(500) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64() * 1e6);
        if times.len() >= 200_000 {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn summary() {
    let text = std::fs::read_to_string(root().join("fixtures/ort_timings.json")).unwrap();
    let ort: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ort_us = |v: &serde_json::Value, n: usize| v[n.to_string()].as_f64().unwrap_or(f64::NAN);
    let x = features();
    let line = |what: &str, n: usize, ours: f64, theirs: f64| {
        println!(
            "{what:<28} {n:>5} {ours:>12.1} {theirs:>12.1} {:>10.2}",
            ours / theirs
        );
    };
    println!();
    println!("median µs per call, one thread; onnxruntime from fixtures/ort_timings.json");
    println!(
        "{:<28} {:>5} {:>12} {:>12} {:>10}",
        "model", "batch", "inferdb", "onnxruntime", "ratio"
    );
    for (what, on_tract) in [
        ("ensemble (3 steps)", false),
        ("ensemble (3 steps, tract)", true),
    ] {
        let mut chain = Chain::new(on_tract);
        for n in BATCHES {
            let ours = median_us(|| {
                std::hint::black_box(chain.run(&x[..n * 256], n));
            });
            line(what, n, ours, ort_us(&ort["ensemble"]["us_per_call"], n));
        }
    }
    let mut fused = load(
        "fixtures/ensemble_fused.onnx",
        &[("features", 256)],
        &[("predictions", 10), ("confidence", 1)],
    )
    .instance();
    let mut out = Vec::new();
    for n in BATCHES {
        let ours = median_us(|| {
            out.clear();
            fused.run(&x[..n * 256], n, &mut out).unwrap();
        });
        line(
            "ensemble (fused graph)",
            n,
            ours,
            ort_us(&ort["ensemble"]["us_per_call"], n),
        );
    }
    for (name, mut backend, width) in steps() {
        let mut out = Vec::new();
        for n in BATCHES {
            let input = step_input(&x, n, width);
            let ours = median_us(|| {
                out.clear();
                backend.run(&input, n, &mut out).unwrap();
            });
            line(
                name,
                n,
                ours,
                ort_us(&ort["ensemble"]["steps_us_per_call"][name], n),
            );
        }
    }
    let mut backend = gbdt();
    let mut out = Vec::new();
    for n in BATCHES {
        let ours = median_us(|| {
            out.clear();
            backend.run(&x[..n * 256], n, &mut out).unwrap();
        });
        line("gbdt_fraud", n, ours, ort_us(&ort["us_per_call"], n));
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
