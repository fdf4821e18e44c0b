//! Property tests: the incremental state against a naive recomputation over
//! the inserted events, on random streams driven the way the engine drives
//! it (watermark = max ts so far, late events dropped, the stream watermark
//! also moved on by other entities, reads at random times past it, state
//! round-tripped through postcard mid-stream).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use inferdb_features::{EntityState, FeatureError, ViewPlan};
use inferdb_types::{Value, stable_hash};
use proptest::prelude::*;
use std::collections::HashSet;

const T0: i64 = 1_767_225_600_000;
const WINDOWS: [Option<i64>; 4] = [Some(1_000), Some(7_000), Some(60_000), None];

/// Every aggregation on every field it applies to, over every window.
fn features() -> Vec<FeatureDef> {
    let mut v = Vec::new();
    for w in WINDOWS {
        v.push(feat("count", None, w));
        for f in [OPT, MERCHANT, N] {
            v.push(feat("count", Some(f), w));
        }
        for f in [AMOUNT, OPT, FLAG, N] {
            v.push(feat("sum", Some(f), w));
        }
        for f in [AMOUNT, OPT, N] {
            v.push(feat("avg", Some(f), w));
            v.push(feat("stddev", Some(f), w));
        }
        for f in [AMOUNT, OPT, N] {
            v.push(feat("min", Some(f), w));
        }
        for f in [AMOUNT, OPT, TS] {
            v.push(feat("max", Some(f), w));
        }
        for f in [AMOUNT, OPT, N, FLAG, TS] {
            v.push(feat("last", Some(f), w));
        }
        for f in [MERCHANT, N, AMOUNT, FLAG] {
            v.push(feat("approx_distinct", Some(f), w));
        }
        v.push(feat("seconds_since_last", None, w));
    }
    v
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Positive two-decimal amounts, log-uniform from 0.01 to 10 000.
    Prices,
    /// Mixed signs and magnitudes from 1e-4 to 1e9.
    MixedSign,
    /// A few repeated values (equal-value windows: stddev 0).
    Pool,
}

#[derive(Debug, Clone)]
enum Step {
    /// The entity's clock moves `gap` ms; an event `jitter` per mille of
    /// (lateness + 2 s) behind it arrives, with values drawn from `r`.
    Event { gap: i64, jitter: u32, r: u64 },
    /// Another entity moves the stream watermark by `gap`.
    Advance { gap: i64 },
    /// Read at watermark + `ahead`.
    Eval { ahead: i64 },
    /// Snapshot and restore the state.
    RoundTrip,
}

fn gap() -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(0i64), 4 => 0i64..400, 2 => 0i64..3_000, 1 => 0i64..200_000]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (gap(), prop_oneof![Just(0u32), 0u32..=1000], any::<u64>())
            .prop_map(|(gap, jitter, r)| Step::Event { gap, jitter, r }),
        4 => prop_oneof![Just(0i64), 0i64..2_000, 0i64..120_000, Just(10_000_000)]
            .prop_map(|ahead| Step::Eval { ahead }),
        1 => gap().prop_map(|gap| Step::Advance { gap }),
        1 => Just(Step::RoundTrip),
    ]
}

fn lateness() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), Just(5_000), Just(90_000)]
}

fn amount(mode: Mode, r: u64) -> f64 {
    match mode {
        Mode::Prices => {
            let u = (r % 1_000_000) as f64 / 1e6;
            (1e6f64.powf(u)).round().max(1.0) / 100.0
        }
        Mode::MixedSign => {
            let m = ((r >> 8) % 1_000_000) as f64 / 1e3;
            let e = ((r >> 28) % 10) as i32 - 4;
            let s = if (r >> 27) & 1 == 0 { 1.0 } else { -1.0 };
            s * m * 10f64.powi(e)
        }
        Mode::Pool => [100.01, 100.02, 7.5][(r % 3) as usize],
    }
}

fn make_row(mode: Mode, ts: i64, r: u64) -> Vec<Value> {
    let r2 = r.rotate_left(17).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let opt = ((r >> 20) % 10 >= 3).then(|| amount(mode, r2));
    let n = (!(r >> 30).is_multiple_of(7)).then(|| ((r >> 33) % 25) as i64 - 5);
    let merchant = (!(r >> 52).is_multiple_of(9)).then(|| format!("m{}", (r >> 55) % 17));
    row(
        ts,
        amount(mode, r),
        opt,
        n,
        (r >> 50) & 1 == 1,
        merchant.as_deref(),
    )
}

struct Event {
    ts: i64,
    row: Vec<Value>,
}

/// The naive value of feature `f` at `t`, and the scale of the inputs for
/// the absolute error floor of floats.
fn naive(f: &FeatureDef, events: &[Event], t: i64) -> (Value, f64) {
    let w = f
        .window
        .as_deref()
        .map(|w| inferdb_types::parse_duration_ms(w).unwrap());
    // Later-inserted events come later in `events`: the last maximum wins ties.
    let held: Vec<&Event> = events
        .iter()
        .filter(|e| e.ts <= t && w.is_none_or(|w| e.ts > t - w))
        .collect();
    let vals: Vec<&Event> = match f.field {
        Some(i) => held
            .iter()
            .copied()
            .filter(|e| !e.row[i].is_null())
            .collect(),
        None => held.clone(),
    };
    let xs: Vec<f64> = match f.field {
        Some(i) => vals.iter().filter_map(|e| e.row[i].as_f64()).collect(),
        None => Vec::new(),
    };
    let n = xs.len() as f64;
    let abs_sum: f64 = xs.iter().map(|x| x.abs()).sum();
    let sum: f64 = xs.iter().sum();
    match f.agg {
        "count" => (Value::Int(vals.len() as i64), 0.0),
        "sum" => (Value::Float(sum), abs_sum),
        "avg" if !xs.is_empty() => (Value::Float(sum / n), abs_sum / n),
        "stddev" if !xs.is_empty() => {
            let mean = sum / n;
            let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
            let max = xs.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            (Value::Float(var.sqrt()), max)
        }
        "min" if !xs.is_empty() => (
            Value::Float(xs.iter().copied().fold(f64::MAX, f64::min)),
            0.0,
        ),
        "max" if !xs.is_empty() => (
            Value::Float(xs.iter().copied().fold(f64::MIN, f64::max)),
            0.0,
        ),
        "last" => {
            let i = f.field.unwrap();
            (
                vals.iter()
                    .max_by_key(|e| e.ts)
                    .map_or(Value::Null, |e| e.row[i].clone()),
                0.0,
            )
        }
        "approx_distinct" => {
            let i = f.field.unwrap();
            let set: HashSet<u64> = vals.iter().map(|e| stable_hash(&e.row[i])).collect();
            (Value::Int(set.len() as i64), 0.0)
        }
        "seconds_since_last" => (
            held.iter()
                .map(|e| e.ts)
                .max()
                .map_or(Value::Null, |ts| Value::Float((t - ts) as f64 / 1000.0)),
            0.0,
        ),
        _ => (Value::Null, 0.0),
    }
}

fn check_eval(
    plan: &ViewPlan,
    feats: &[FeatureDef],
    st: &EntityState,
    events: &[Event],
    t: i64,
) -> Result<(), TestCaseError> {
    let mut out = vec![Value::Str("before".into())];
    st.eval(plan, t, &mut out).unwrap();
    prop_assert_eq!(out.len(), 1 + feats.len());
    prop_assert_eq!(&out[0], &Value::Str("before".into()));
    for (f, got) in feats.iter().zip(&out[1..]) {
        let (want, scale) = naive(f, events, t);
        match (got, &want) {
            (Value::Float(g), Value::Float(w)) => {
                let tol = 1e-9 * w.abs() + 1e-12 * scale;
                prop_assert!(
                    (g - w).abs() <= tol,
                    "{} at t={}: got {}, want {}",
                    f.name,
                    t,
                    g,
                    w
                );
            }
            _ => prop_assert_eq!(got, &want, "{} at t={}", f.name, t),
        }
    }
    Ok(())
}

fn run(mode: Mode, lateness: i64, steps: &[Step]) -> Result<(), TestCaseError> {
    let feats = features();
    let cat = catalog(lateness, &feats);
    let plan = plan_of(&cat);
    prop_assert_eq!(plan.len(), feats.len());
    prop_assert!(
        plan.feature_names()
            .eq(feats.iter().map(|f| f.name.as_str()))
    );
    let mut st = EntityState::new(&plan);
    let mut events: Vec<Event> = Vec::new();
    let mut clock = T0;
    let mut wm: Option<i64> = None;
    for step in steps {
        match *step {
            Step::Event { gap, jitter, r } => {
                clock += gap;
                let ts = clock - i64::from(jitter) * (lateness + 2_000) / 1000;
                if wm.is_some_and(|w| ts < w - lateness) {
                    continue; // late: the caller drops it
                }
                let w = wm.map_or(ts, |w| w.max(ts));
                wm = Some(w);
                let row = make_row(mode, ts, r);
                st.insert(&plan, ts, &row, w);
                events.push(Event { ts, row });
                prop_assert_eq!(st.latest_ts(), events.iter().map(|e| e.ts).max());
            }
            Step::Advance { gap } => {
                if let Some(w) = wm {
                    wm = Some(w + gap);
                    clock = clock.max(w + gap);
                    st.advance(&plan, w + gap);
                }
            }
            Step::Eval { ahead } => {
                let base = wm.unwrap_or(T0);
                check_eval(&plan, &feats, &st, &events, base + ahead)?;
                if let Some(w) = wm {
                    let err = st.eval(&plan, w - 1, &mut Vec::new());
                    let refused = matches!(
                        err,
                        Err(FeatureError::BeforeFrontier { t, frontier }) if t == w - 1 && frontier == w
                    );
                    prop_assert!(refused, "eval before the frontier gave {:?}", err);
                }
            }
            Step::RoundTrip => {
                let bytes = postcard::to_allocvec(&st).unwrap();
                let back: EntityState = postcard::from_bytes(&bytes).unwrap();
                let t = wm.unwrap_or(T0);
                for t in [t, t + 3_000, t + 100_000] {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    st.eval(&plan, t, &mut a).unwrap();
                    back.eval(&plan, t, &mut b).unwrap();
                    prop_assert_eq!(a, b);
                }
                prop_assert_eq!(back.latest_ts(), st.latest_ts());
                st = back;
            }
        }
    }
    // Always end with reads at the watermark and just past each window edge.
    let w = wm.unwrap_or(T0);
    for ahead in [0, 999, 1_000, 6_999, 7_000, 59_999, 60_000] {
        check_eval(&plan, &feats, &st, &events, w + ahead)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn incremental_equals_naive_for_two_decimal_prices(
        lateness in lateness(),
        steps in prop::collection::vec(step(), 1..160),
    ) {
        run(Mode::Prices, lateness, &steps)?;
    }

    #[test]
    fn incremental_equals_naive_for_mixed_sign_floats(
        lateness in lateness(),
        steps in prop::collection::vec(step(), 1..160),
    ) {
        run(Mode::MixedSign, lateness, &steps)?;
    }

    #[test]
    fn incremental_equals_naive_for_repeated_values(
        lateness in lateness(),
        steps in prop::collection::vec(step(), 1..160),
    ) {
        run(Mode::Pool, lateness, &steps)?;
    }
}

/// Equal values give a standard deviation of exactly 0, even after the
/// value the accumulator was shifted by has expired.
#[test]
fn stddev_of_equal_values_is_exactly_zero() {
    let feats = vec![
        feat("stddev", Some(AMOUNT), Some(10_000)),
        feat("stddev", Some(AMOUNT), None),
    ];
    let cat = catalog(0, &feats);
    let plan = plan_of(&cat);
    let mut st = EntityState::new(&plan);
    st.insert(&plan, T0, &row(T0, 5.0, None, None, false, None), T0);
    for i in 1..100 {
        let ts = T0 + 1_000 * i;
        st.insert(&plan, ts, &row(ts, 0.1, None, None, false, None), ts);
    }
    let mut out = Vec::new();
    st.eval(&plan, T0 + 99_000, &mut out).unwrap();
    assert_eq!(out[0], Value::Float(0.0));
    assert!(matches!(out[1], Value::Float(s) if s > 0.4));
}

/// A hot entity over a long run: 200k out-of-order events through 1 min and
/// 1 h windows, compared with the naive values at checkpoints, reading both
/// at the watermark and well past it. Guards against drift of the running
/// sums over many additions and removals.
#[test]
fn long_run_matches_naive_at_checkpoints() {
    let mut feats = Vec::new();
    for w in [Some(60_000), Some(3_600_000)] {
        feats.push(feat("count", None, w));
        for agg in ["sum", "avg", "stddev", "min", "max", "last"] {
            feats.push(feat(agg, Some(AMOUNT), w));
        }
        feats.push(feat("approx_distinct", Some(MERCHANT), w));
        feats.push(feat("seconds_since_last", None, w));
    }
    let cat = catalog(5_000, &feats);
    let plan = plan_of(&cat);
    let mut st = EntityState::new(&plan);
    let mut kept: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut wm = T0;
    for i in 0..200_000i64 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let ts = T0 + i * 100 - (rng % 4_000) as i64;
        if ts < wm - 5_000 {
            continue;
        }
        wm = wm.max(ts);
        let mode = if i % 3 == 0 {
            Mode::MixedSign
        } else {
            Mode::Prices
        };
        let row = make_row(mode, ts, rng);
        st.insert(&plan, ts, &row, wm);
        kept.push_back(Event { ts, row });
        while kept.front().is_some_and(|e| e.ts <= wm - 3_600_000) {
            kept.pop_front();
        }
        if i % 20_000 == 19_999 {
            let events = kept.make_contiguous();
            for ahead in [0, 30_000, 1_800_000] {
                check_eval(&plan, &feats, &st, events, wm + ahead).unwrap();
            }
        }
    }
}

/// A snapshot restored through postcard evaluates identically, and keeps
/// evaluating identically as both copies take the same further events.
#[test]
fn state_round_trips_through_postcard() {
    let feats = features();
    let cat = catalog(5_000, &feats);
    let plan = plan_of(&cat);
    let mut st = EntityState::new(&plan);
    let mut wm = T0;
    let feed = |st: &mut EntityState, range: std::ops::Range<i64>, wm: &mut i64| {
        for i in range {
            let r = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let ts = T0 + i * 250 - (r % 4_000) as i64;
            if ts < *wm - 5_000 {
                continue;
            }
            *wm = (*wm).max(ts);
            st.insert(&plan, ts, &make_row(Mode::Prices, ts, r), *wm);
        }
    };
    feed(&mut st, 0..3_000, &mut wm);
    let bytes = postcard::to_allocvec(&st).unwrap();
    let mut back: EntityState = postcard::from_bytes(&bytes).unwrap();
    // Restored collections are sized to their contents.
    assert!(back.approx_bytes() <= st.approx_bytes());
    assert_eq!(back.latest_ts(), st.latest_ts());
    let same = |a: &EntityState, b: &EntityState, wm: i64| {
        for t in [wm, wm + 500, wm + 6_500, wm + 59_000, wm + 3_600_000] {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            a.eval(&plan, t, &mut x).unwrap();
            b.eval(&plan, t, &mut y).unwrap();
            assert_eq!(x, y, "at {t}");
        }
    };
    same(&st, &back, wm);
    let mut wm2 = wm;
    feed(&mut st, 3_000..4_000, &mut wm);
    feed(&mut back, 3_000..4_000, &mut wm2);
    same(&st, &back, wm);
}
