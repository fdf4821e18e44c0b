//! Running count, sum and sum of squares of one numeric field, kept in
//! double-double arithmetic so that values can be added *and removed*
//! (sliding windows) for ever without drift.
//!
//! Values are accumulated as deviations from a shift `k` (the first value
//! seen since the accumulator was last empty): values equal to it add
//! exactly nothing, and the cancellation in `Σd² − (Σd)²/n` stays small when
//! `k` is near the data. Each deviation `x − k` is formed exactly (two-sum)
//! and squared exactly (Dekker two-product), and both sums are double-double
//! (~106 bits), so a stale shift far from the current window mean costs
//! nothing measurable: removal of a value cancels its addition to ~1e-32
//! relative, and the variance is accurate to about 1e-30 of `(mean − k)²`.
//! When the accumulator becomes empty the sums reset to exact zero. (That
//! residue means a window of equal values whose shift has expired reads
//! ~1e-15 relative instead of 0; the state clamps the variance with the
//! window's min and max, which makes it exactly 0.)

use serde::{Deserialize, Serialize};

/// A double-double number `hi + lo` with `|lo| <= ulp(hi) / 2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Dd {
    hi: f64,
    lo: f64,
}

/// Magnitudes beyond which Dekker's split would overflow; error terms are
/// dropped there (the values are far outside any real feature's range).
const BIG: f64 = 1e290;

/// `a + b` exactly, as the rounded sum and its rounding error.
#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    if !s.is_finite() {
        return (s, 0.0);
    }
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// Splits `a` into two halves of 26 bits (Dekker / Veltkamp).
#[inline]
fn split(a: f64) -> (f64, f64) {
    const C: f64 = 134_217_729.0; // 2^27 + 1
    let c = C * a;
    let hi = c - (c - a);
    (hi, a - hi)
}

/// `a * b` exactly, as the rounded product and its rounding error. Not
/// `mul_add`: without a target FMA that is a slow library call.
#[inline]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    if !(a.abs() < BIG && b.abs() < BIG && p.abs() < BIG) {
        return (p, 0.0);
    }
    let (ah, al) = split(a);
    let (bh, bl) = split(b);
    (p, ((ah * bh - p) + ah * bl + al * bh) + al * bl)
}

impl Dd {
    const ZERO: Dd = Dd { hi: 0.0, lo: 0.0 };

    #[inline]
    fn new(hi: f64, lo: f64) -> Dd {
        let (hi, lo) = two_sum(hi, lo);
        Dd { hi, lo }
    }

    #[inline]
    fn from_f64(x: f64) -> Dd {
        Dd { hi: x, lo: 0.0 }
    }

    #[inline]
    fn neg(self) -> Dd {
        Dd {
            hi: -self.hi,
            lo: -self.lo,
        }
    }

    /// Accurate double-double addition (the "IEEE" variant: both halves
    /// are summed with error terms, so cancelling operands stay exact).
    #[inline]
    fn add(self, o: Dd) -> Dd {
        let (s1, s2) = two_sum(self.hi, o.hi);
        let (t1, t2) = two_sum(self.lo, o.lo);
        let (s1, s2) = two_sum(s1, s2 + t1);
        Dd::new(s1, s2 + t2)
    }

    #[inline]
    fn mul(self, o: Dd) -> Dd {
        let (p, e) = two_prod(self.hi, o.hi);
        Dd::new(p, e + (self.hi * o.lo + self.lo * o.hi))
    }

    #[inline]
    fn div_f64(self, d: f64) -> Dd {
        let q1 = self.hi / d;
        let (p, e) = two_prod(q1, d);
        let r = self.add(Dd { hi: -p, lo: -e });
        Dd::new(q1, r.hi / d)
    }

    #[inline]
    fn to_f64(self) -> f64 {
        self.hi + self.lo
    }
}

/// Sums over a run of values, relative to a given shift (see [`Moments::partial`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Partial {
    n: u64,
    s1: Dd,
    s2: Dd,
}

impl Partial {
    /// Number of values summed.
    pub(crate) fn count(&self) -> u64 {
        self.n
    }
}

/// Count, sum and sum of squares of the non-null values of one field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Moments {
    n: u64,
    /// The shift: deviations are taken from it.
    k: f64,
    /// Σ (x − k).
    s1: Dd,
    /// Σ (x − k)².
    s2: Dd,
}

impl Moments {
    /// The deviation of `x` from the shift and its square, both exact to
    /// double-double precision.
    #[inline]
    fn deviation(&self, x: f64) -> (Dd, Dd) {
        let (dh, dl) = two_sum(x, -self.k);
        let (p, e) = two_prod(dh, dh);
        (Dd { hi: dh, lo: dl }, Dd::new(p, e + 2.0 * dh * dl))
    }

    /// Adds one value.
    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        if self.n == 0 {
            *self = Moments {
                n: 0,
                k: x,
                s1: Dd::ZERO,
                s2: Dd::ZERO,
            };
        }
        self.n += 1;
        if x != self.k {
            let (d, sq) = self.deviation(x);
            self.s1 = self.s1.add(d);
            self.s2 = self.s2.add(sq);
        }
    }

    /// Removes one value previously added.
    #[inline]
    pub(crate) fn remove(&mut self, x: f64) {
        self.n = self.n.saturating_sub(1);
        if self.n == 0 {
            self.s1 = Dd::ZERO;
            self.s2 = Dd::ZERO;
        } else if x != self.k {
            let (d, sq) = self.deviation(x);
            self.s1 = self.s1.add(d.neg());
            self.s2 = self.s2.add(sq.neg());
        }
    }

    /// The shift deviations are taken from.
    #[inline]
    pub(crate) fn shift(&self) -> f64 {
        self.k
    }

    /// The sums of `xs` as deviations from shift `k`, for subtracting a run
    /// of expired values (or summing the remaining ones) at read time.
    ///
    /// Cascaded summation: each running sum is a plain `f64` whose rounding
    /// errors (and the low parts of the exact deviations and squares) are
    /// collected in a second `f64`, so the loop-carried dependency is one
    /// addition per sum instead of a full double-double addition. The
    /// collected error is itself accurate to ~n²·ε² of the sum, far below
    /// what a read can observe for any window size.
    pub(crate) fn partial(k: f64, xs: impl Iterator<Item = f64>) -> Partial {
        let (mut n, mut s1, mut c1, mut s2, mut c2) = (0u64, 0.0, 0.0, 0.0, 0.0);
        for x in xs {
            n += 1;
            let (dh, dl) = two_sum(x, -k);
            let (p, pe) = two_prod(dh, dh);
            let (t1, e1) = two_sum(s1, dh);
            let (t2, e2) = two_sum(s2, p);
            s1 = t1;
            s2 = t2;
            c1 += e1 + dl;
            c2 += e2 + (pe + 2.0 * dh * dl);
        }
        Partial {
            n,
            s1: Dd::new(s1, c1),
            s2: Dd::new(s2, c2),
        }
    }

    /// These moments without the values summed in `p` (with the same shift).
    pub(crate) fn without(&self, p: &Partial) -> Moments {
        let n = self.n.saturating_sub(p.n);
        if n == 0 {
            return Moments::default();
        }
        Moments {
            n,
            k: self.k,
            s1: self.s1.add(p.s1.neg()),
            s2: self.s2.add(p.s2.neg()),
        }
    }

    /// The moments of exactly the values summed in `p` with shift `k`.
    pub(crate) fn from_partial(k: f64, p: &Partial) -> Moments {
        if p.n == 0 {
            return Moments::default();
        }
        Moments {
            n: p.n,
            k,
            s1: p.s1,
            s2: p.s2,
        }
    }

    /// Number of values.
    #[inline]
    pub(crate) fn count(&self) -> u64 {
        self.n
    }

    /// Σ x (0 when empty).
    pub(crate) fn sum(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let (p, e) = two_prod(self.n as f64, self.k);
        Dd::new(p, e).add(self.s1).to_f64()
    }

    /// The mean (NaN when empty; callers check the count).
    pub(crate) fn mean(&self) -> f64 {
        Dd::from_f64(self.k)
            .add(self.s1.div_f64(self.n as f64))
            .to_f64()
    }

    /// The population variance, clamped at 0 (NaN when empty).
    pub(crate) fn variance(&self) -> f64 {
        let n = self.n as f64;
        let centred = self.s2.add(self.s1.mul(self.s1).div_f64(n).neg());
        centred.div_f64(n).to_f64().max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(xs: &[f64]) -> (f64, f64, f64) {
        let n = xs.len() as f64;
        let sum: f64 = xs.iter().sum();
        let mean = sum / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        (sum, mean, var)
    }

    #[test]
    fn equal_values_have_zero_or_negligible_variance() {
        let mut m = Moments::default();
        m.add(5.0);
        for _ in 0..1000 {
            m.add(0.1);
        }
        m.remove(5.0);
        assert!(m.variance() < 1e-28, "{}", m.variance());
        assert_eq!(m.count(), 1000);
        assert!((m.mean() - 0.1).abs() < 1e-17, "{}", m.mean());
        let mut only = Moments::default();
        for _ in 0..7 {
            only.add(0.3);
        }
        assert_eq!(only.variance(), 0.0);
        assert_eq!(only.mean(), 0.3);
    }

    #[test]
    fn sliding_for_long_keeps_full_precision() {
        // A window of 100 values slides over 200k values of mixed magnitude.
        let xs: Vec<f64> = (0..200_000u64)
            .map(|i| {
                let r = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
                if i % 7 == 0 {
                    1e9 * (r - 0.5)
                } else {
                    100.0 + r
                }
            })
            .collect();
        let mut m = Moments::default();
        for (i, &x) in xs.iter().enumerate() {
            m.add(x);
            if i >= 100 {
                m.remove(xs[i - 100]);
            }
        }
        let tail = &xs[xs.len() - 100..];
        let (sum, mean, var) = naive(tail);
        assert!((m.sum() - sum).abs() <= 1e-12 * sum.abs().max(1.0));
        assert!((m.mean() - mean).abs() <= 1e-12 * mean.abs().max(1.0));
        assert!((m.variance() - var).abs() <= 1e-9 * var);
    }

    #[test]
    fn partial_sums_subtract_like_removals() {
        let xs: Vec<f64> = (0..5_000)
            .map(|i| (i as f64 * 0.37).sin() * 1e3 + 1e4)
            .collect();
        let mut all = Moments::default();
        for &x in &xs {
            all.add(x);
        }
        let mut tail = all;
        for &x in &xs[..3_000] {
            tail.remove(x);
        }
        let p = Moments::partial(all.shift(), xs[..3_000].iter().copied());
        let cut = all.without(&p);
        let rest = Moments::from_partial(
            all.shift(),
            &Moments::partial(all.shift(), xs[3_000..].iter().copied()),
        );
        for m in [cut, rest] {
            assert_eq!(m.count(), 2_000);
            assert!((m.sum() - tail.sum()).abs() <= 1e-15 * tail.sum().abs());
            assert!((m.variance() - tail.variance()).abs() <= 1e-13 * tail.variance());
        }
        assert_eq!(
            all.without(&Moments::partial(all.shift(), xs.iter().copied()))
                .count(),
            0
        );
    }

    #[test]
    fn tiny_spread_far_from_the_shift() {
        let mut m = Moments::default();
        m.add(5.0);
        for i in 0..1000 {
            m.add(if i % 2 == 0 { 100.01 } else { 100.02 });
        }
        m.remove(5.0);
        let var = m.variance();
        assert!((var - 0.000025).abs() < 1e-15, "{var}");
    }
}
