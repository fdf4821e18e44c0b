//! Hot-path benchmarks of the reference view `user_txn`
//! (examples/payments/spec.toml) for its hottest entity: a user with an
//! event every ~0.6 s of event time, so the 24 h window holds ~144k events.
//!
//! * `insert_hot_entity`: one insert in steady state (window full, each
//!   insert also evicts), 10% of events up to 3 s out of order.
//! * `eval_hot_entity/at_watermark`: a read at the frontier.
//! * `eval_hot_entity/watermark_plus_10m`: a read 10 minutes past the
//!   frontier (the entity went quiet; expired events are discounted on the fly).
//! * `eval_hot_entity/watermark_plus_12h`: the worst case of that, half the
//!   24 h window expired.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use inferdb_features::{EntityState, ViewPlan};
use inferdb_types::{Catalog, Value};
use std::hint::black_box;
use std::time::Duration;

const SPEC: &str = include_str!("../../../examples/payments/spec.toml");
const T0: i64 = 1_767_225_600_000;
const MINUTE: i64 = 60_000;

/// xorshift64*: deterministic and dependency-free.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The hot user's event source: ts every 600 ± 300 ms, log-normal amounts in
/// cents, merchants log-uniform (Zipf-like) over 2 000.
#[derive(Clone)]
struct Source {
    rng: Rng,
    clock: i64,
    watermark: i64,
    rows: Vec<Vec<Value>>,
    next_row: usize,
}

impl Source {
    fn new() -> Source {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let categories = ["grocery", "fuel", "travel", "dining"];
        let rows = (0..512)
            .map(|_| {
                // Box-Muller: ln(amount) ~ N(3.5, 1.2).
                let z = (-2.0 * rng.unit().max(1e-12).ln()).sqrt()
                    * (std::f64::consts::TAU * rng.unit()).cos();
                let amount = ((3.5 + 1.2 * z).exp() * 100.0).round().max(1.0) / 100.0;
                let merchant = (2_000f64.powf(rng.unit()) as u64).min(1_999);
                vec![
                    Value::Str("user-1".into()),
                    Value::Ts(0),
                    Value::Float(amount),
                    Value::Str(format!("merchant-{merchant}").into()),
                    Value::Str(categories[(rng.next() % 4) as usize].into()),
                    Value::Str("FR".into()),
                    Value::Str("app".into()),
                    Value::Bool(rng.next().is_multiple_of(2)),
                ]
            })
            .collect();
        Source {
            rng,
            clock: T0,
            watermark: T0,
            rows,
            next_row: 0,
        }
    }

    /// The next event: `(ts, row, watermark)`.
    fn next(&mut self) -> (i64, &[Value], i64) {
        self.clock += 300 + (self.rng.next() % 600) as i64;
        let late = if self.rng.next().is_multiple_of(10) {
            (self.rng.next() % 3_000) as i64
        } else {
            0
        };
        let ts = self.clock - late;
        self.watermark = self.watermark.max(ts);
        self.next_row = (self.next_row + 1) % self.rows.len();
        (ts, &self.rows[self.next_row], self.watermark)
    }
}

fn user_txn_plan() -> ViewPlan {
    let cat = Catalog::from_toml(SPEC).unwrap();
    let view = &cat.views[cat.view_index("user_txn").unwrap()];
    ViewPlan::new(view, &cat.streams[view.stream])
}

/// A hot entity with 26 h of events behind it (its 24 h window is full).
fn hot_entity(plan: &ViewPlan) -> (EntityState, Source) {
    let mut src = Source::new();
    let mut st = EntityState::new(plan);
    while src.clock < T0 + 26 * 60 * MINUTE {
        let (ts, row, wm) = src.next();
        st.insert(plan, ts, row, wm);
    }
    (st, src)
}

fn benches(c: &mut Criterion) {
    let plan = user_txn_plan();
    let (hot, src) = hot_entity(&plan);
    let mut out = Vec::with_capacity(plan.len());
    hot.eval(&plan, src.watermark, &mut out).unwrap();
    eprintln!(
        "hot entity: {} events in 24h, {} KiB",
        match out[2] {
            Value::Int(n) => n,
            _ => -1,
        },
        hot.approx_bytes() / 1024
    );

    {
        let (mut st, mut src) = (hot.clone(), src.clone());
        c.bench_function("insert_hot_entity", |b| {
            b.iter(|| {
                let (ts, row, wm) = src.next();
                st.insert(&plan, ts, black_box(row), wm);
            })
        });
    }

    let mut g = c.benchmark_group("eval_hot_entity");
    for (name, ahead) in [
        ("at_watermark", 0),
        ("watermark_plus_10m", 10 * MINUTE),
        ("watermark_plus_12h", 720 * MINUTE),
    ] {
        let t = src.watermark + ahead;
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                hot.eval(&plan, black_box(t), &mut out).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = window;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(window);
