//! Resource and accuracy bounds: the state of a long-lived entity does not
//! grow with its event count, idle entities are small, and unwindowed
//! `approx_distinct` stays within 2% from 1k to 1M distinct values.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use inferdb_features::EntityState;
use inferdb_types::Value;

const T0: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;

#[test]
fn memory_is_bounded_by_the_window_not_the_event_count() {
    let w = Some(HOUR);
    let feats = vec![
        feat("count", None, w),
        feat("sum", Some(AMOUNT), w),
        feat("stddev", Some(AMOUNT), w),
        feat("min", Some(AMOUNT), w),
        feat("max", Some(AMOUNT), w),
        feat("approx_distinct", Some(MERCHANT), w),
        feat("count", None, Some(60_000)),
        feat("last", Some(AMOUNT), None),
        feat("approx_distinct", Some(MERCHANT), None),
    ];
    let cat = catalog(5_000, &feats);
    let plan = plan_of(&cat);
    let mut st = EntityState::new(&plan);
    let merchants: Vec<String> = (0..5_000).map(|i| format!("merchant-{i}")).collect();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut wm = T0;
    let mut peak_early = 0usize;
    let mut peak_late = 0usize;
    let n = 1_000_000i64;
    for i in 0..n {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // One event a second (3 600 in the window), up to 3 s out of order.
        let ts = T0 + i * 1_000 - (rng % 3_000) as i64;
        wm = wm.max(ts);
        let amount = (rng >> 16) as f64 % 100_000.0 / 100.0;
        let m = &merchants[(rng >> 40) as usize % merchants.len()];
        st.insert(&plan, ts, &row(ts, amount, None, None, false, Some(m)), wm);
        if i % 1_000 == 0 {
            let b = st.approx_bytes();
            if (50_000..200_000).contains(&i) {
                peak_early = peak_early.max(b);
            } else if i >= n / 2 {
                peak_late = peak_late.max(b);
            }
        }
    }
    let mut out = Vec::new();
    st.eval(&plan, wm, &mut out).unwrap();
    assert!(
        matches!(out[0], Value::Int(c) if (3_590..=3_601).contains(&c)),
        "{:?}",
        out[0]
    );
    // About 24 bytes per event in the window plus the distinct index and the sketch.
    assert!(
        peak_early < 1_000_000,
        "{peak_early} bytes for ~3600 events in the window"
    );
    eprintln!("approx_bytes: peak {peak_early} (50k-200k events), {peak_late} (500k-1M)");
    assert!(
        peak_late <= peak_early * 5 / 4,
        "grew from {peak_early} to {peak_late} bytes"
    );

    // After a long quiet period the buffers are released.
    st.advance(&plan, wm + 2 * HOUR);
    let idle = st.approx_bytes();
    eprintln!("approx_bytes once idle: {idle}");
    assert!(idle < 40_000, "{idle} bytes once the window is empty");
}

#[test]
fn idle_entities_are_small() {
    let feats = vec![
        feat("count", None, Some(HOUR)),
        feat("sum", Some(AMOUNT), Some(HOUR)),
        feat("approx_distinct", Some(MERCHANT), Some(HOUR)),
        feat("approx_distinct", Some(MERCHANT), None),
        feat("seconds_since_last", None, None),
    ];
    let cat = catalog(5_000, &feats);
    let plan = plan_of(&cat);
    let mut st = EntityState::new(&plan);
    for i in 0..3 {
        let ts = T0 + i * 1_000;
        st.insert(&plan, ts, &row(ts, 1.0, None, None, false, Some("m")), ts);
    }
    let bytes = st.approx_bytes();
    assert!(bytes < 2_048, "{bytes} bytes for 3 events");
    let snapshot = postcard::to_allocvec(&st).unwrap();
    assert!(snapshot.len() < 512, "{} snapshot bytes", snapshot.len());
}

fn distinct_state() -> (inferdb_features::ViewPlan, EntityState) {
    let cat = catalog(
        0,
        &[
            feat("approx_distinct", Some(N), None),
            feat("count", Some(N), None),
        ],
    );
    let plan = plan_of(&cat);
    let st = EntityState::new(&plan);
    (plan, st)
}

#[test]
fn unwindowed_approx_distinct_is_within_two_percent() {
    let (plan, mut st) = distinct_state();
    let mut checked = 0;
    let mut out = Vec::new();
    for i in 1..=1_000_000i64 {
        let ts = T0 + i;
        // Each value twice: duplicates must not count.
        let r = row(
            ts,
            0.0,
            None,
            Some(i.wrapping_mul(0x5DEECE66D)),
            false,
            None,
        );
        st.insert(&plan, ts, &r, ts);
        st.insert(&plan, ts, &r, ts);
        if [1_000, 10_000, 100_000, 1_000_000].contains(&i) {
            out.clear();
            st.eval(&plan, ts, &mut out).unwrap();
            let Value::Int(est) = out[0] else {
                panic!("{:?}", out[0])
            };
            let err = (est - i).abs() as f64 / i as f64;
            eprintln!("approx_distinct: {est} for {i} distinct (error {err:.4})");
            assert!(err < 0.02, "{est} for {i} distinct: error {err}");
            assert_eq!(out[1], Value::Int(2 * i));
            checked += 1;
        }
    }
    assert_eq!(checked, 4);
}

#[test]
fn unwindowed_approx_distinct_is_exact_while_small_and_survives_snapshots() {
    let (plan, mut st) = distinct_state();
    for i in 0..400i64 {
        let r = row(T0 + i, 0.0, None, Some(i % 300), false, None);
        st.insert(&plan, T0 + i, &r, T0 + i);
    }
    let mut out = Vec::new();
    st.eval(&plan, T0 + 400, &mut out).unwrap();
    assert_eq!(out[0], Value::Int(300));
    for i in 400..20_000i64 {
        let r = row(T0 + i, 0.0, None, Some(i), false, None);
        st.insert(&plan, T0 + i, &r, T0 + i);
    }
    let back: EntityState = postcard::from_bytes(&postcard::to_allocvec(&st).unwrap()).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    st.eval(&plan, T0 + 20_000, &mut a).unwrap();
    back.eval(&plan, T0 + 20_000, &mut b).unwrap();
    assert_eq!(a, b);
}
