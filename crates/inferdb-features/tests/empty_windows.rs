//! Every aggregation over an empty window: a state that saw no event, and
//! a state whose events all left the window (the unwindowed twin still
//! holds them). `count` is 0, `sum` is 0.0, the others are null.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use inferdb_features::EntityState;
use inferdb_types::Value;

const T0: i64 = 1_767_225_600_000;
const W: i64 = 60_000;

/// `[fresh windowed, fresh unwindowed, expired windowed, expired unwindowed]`.
fn empty_values(agg: &'static str, field: Option<usize>) -> [Value; 4] {
    let cat = catalog(5_000, &[feat(agg, field, Some(W)), feat(agg, field, None)]);
    let plan = plan_of(&cat);
    let mut st = EntityState::new(&plan);
    let mut fresh = Vec::new();
    st.eval(&plan, T0, &mut fresh).unwrap();
    for i in 0..3 {
        let ts = T0 + i * 1_000;
        st.insert(
            &plan,
            ts,
            &row(ts, 2.5 + i as f64, Some(1.0), Some(i), true, Some("m")),
            ts,
        );
    }
    let mut later = Vec::new();
    // Read-only past the frontier...
    st.eval(&plan, T0 + 2_000 + W, &mut later).unwrap();
    // ...and the same after the frontier moved there.
    st.advance(&plan, T0 + 2_000 + W);
    let mut advanced = Vec::new();
    st.eval(&plan, T0 + 2_000 + W, &mut advanced).unwrap();
    assert_eq!(later, advanced);
    [
        fresh[0].clone(),
        fresh[1].clone(),
        later[0].clone(),
        later[1].clone(),
    ]
}

#[test]
fn empty_count_is_zero() {
    let [a, b, c, d] = empty_values("count", None);
    assert_eq!([a, b, c], [Value::Int(0), Value::Int(0), Value::Int(0)]);
    assert_eq!(d, Value::Int(3));
    let [a, b, c, _] = empty_values("count", Some(MERCHANT));
    assert_eq!([a, b, c], [Value::Int(0), Value::Int(0), Value::Int(0)]);
}

#[test]
fn empty_sum_is_zero() {
    let [a, b, c, d] = empty_values("sum", Some(AMOUNT));
    assert_eq!(
        [a, b, c],
        [Value::Float(0.0), Value::Float(0.0), Value::Float(0.0)]
    );
    assert_eq!(d, Value::Float(10.5));
}

fn assert_null_when_empty(agg: &'static str, field: usize, full: Value) {
    let [a, b, c, d] = empty_values(agg, Some(field));
    assert_eq!([a, b, c], [Value::Null, Value::Null, Value::Null], "{agg}");
    assert_eq!(d, full, "{agg}");
}

#[test]
fn empty_avg_is_null() {
    assert_null_when_empty("avg", AMOUNT, Value::Float(3.5));
}

#[test]
fn empty_min_is_null() {
    assert_null_when_empty("min", AMOUNT, Value::Float(2.5));
}

#[test]
fn empty_max_is_null() {
    assert_null_when_empty("max", AMOUNT, Value::Float(4.5));
}

#[test]
fn empty_stddev_is_null() {
    let [a, b, c, d] = empty_values("stddev", Some(AMOUNT));
    assert_eq!([a, b, c], [Value::Null, Value::Null, Value::Null]);
    let Value::Float(s) = d else { panic!("{d:?}") };
    assert!((s - (2.0f64 / 3.0).sqrt()).abs() < 1e-15, "{s}");
}

#[test]
fn empty_last_is_null() {
    assert_null_when_empty("last", AMOUNT, Value::Float(4.5));
    assert_null_when_empty("last", N, Value::Int(2));
    assert_null_when_empty("last", FLAG, Value::Bool(true));
    assert_null_when_empty("last", TS, Value::Ts(T0 + 2_000));
}

#[test]
fn empty_approx_distinct_is_zero() {
    let [a, b, c, d] = empty_values("approx_distinct", Some(N));
    assert_eq!([a, b, c], [Value::Int(0), Value::Int(0), Value::Int(0)]);
    assert_eq!(d, Value::Int(3));
}

#[test]
fn empty_seconds_since_last_is_null() {
    let [a, b, c, d] = empty_values("seconds_since_last", None);
    assert_eq!([a, b, c], [Value::Null, Value::Null, Value::Null]);
    assert_eq!(d, Value::Float(60.0));
}
