//! Monotonic deque for the minimum of a sliding event-time window, with
//! out-of-order insertion. A maximum is the minimum of the negated values.
//!
//! The deque holds `(ts, value)` entries ordered by `ts` with strictly
//! increasing values. Invariant: every event of the window has an entry
//! with `ts >= its ts` and `value <= its value` (its *dominator*); an event
//! dominated that way can never be the minimum again, because its dominator
//! stays in the window at least as long. So the minimum of the window
//! `(cut, ∞)` is the first entry with `ts > cut`, found by binary search
//! (read-only, for evaluation past the frontier) or by popping the front.
//!
//! Entries with equal `ts` expire together, so an entry of the same `ts` and
//! a smaller or equal value dominates a new one too.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Minimum over a sliding window (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MinDeque {
    entries: VecDeque<(i64, f64)>,
}

impl MinDeque {
    /// Adds an event of the window (in or out of `ts` order).
    pub(crate) fn insert(&mut self, ts: i64, v: f64) {
        let len = self.entries.len();
        let p = match self.entries.back() {
            Some(&(bts, _)) if bts >= ts => self.entries.partition_point(|e| e.0 < ts),
            _ => len,
        };
        // The first entry at or after `ts` has the smallest value of all later
        // events: if it is not larger, it dominates the new event.
        if let Some(&(_, next)) = self.entries.get(p)
            && next <= v
        {
            return;
        }
        // Earlier entries with larger or equal values are dominated by the new one.
        let mut q = p;
        while q > 0 && self.entries[q - 1].1 >= v {
            q -= 1;
        }
        if q == p {
            self.entries.insert(p, (ts, v));
        } else {
            self.entries[q] = (ts, v);
            self.entries.drain(q + 1..p);
        }
    }

    /// Prefetches both ends of the deque (where `expire` and `insert`
    /// look first).
    pub(crate) fn prefetch(&self) {
        if let Some(f) = self.entries.front() {
            crate::prefetch::write(f);
        }
        if let Some(b) = self.entries.back() {
            crate::prefetch::write(b);
        }
    }

    /// Drops the entries with `ts <= cut` (they left the window for good).
    pub(crate) fn expire(&mut self, cut: i64) {
        while self.entries.front().is_some_and(|e| e.0 <= cut) {
            self.entries.pop_front();
        }
        let cap = self.entries.capacity();
        if cap > 64 && self.entries.len() * 4 < cap {
            self.entries.shrink_to(self.entries.len() * 2);
        }
    }

    /// The minimum over the entries with `ts > cut` (all of them for `None`).
    pub(crate) fn min_after(&self, cut: Option<i64>) -> Option<f64> {
        match cut {
            None => self.entries.front().map(|e| e.1),
            Some(c) => match self.entries.front() {
                Some(&(ts, v)) if ts > c => Some(v),
                Some(_) => {
                    let p = self.entries.partition_point(|e| e.0 <= c);
                    self.entries.get(p).map(|e| e.1)
                }
                None => None,
            },
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<(i64, f64)>()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_order_insertions_keep_the_minimum_of_every_suffix() {
        // ts, value; inserted out of order, with equal ts.
        let events = [
            (10, 5.0),
            (12, 3.0),
            (11, 1.0),
            (12, 4.0),
            (9, 0.5),
            (15, 7.0),
            (14, 2.0),
            (15, 2.0),
        ];
        let mut d = MinDeque::default();
        let mut seen: Vec<(i64, f64)> = Vec::new();
        for &(ts, v) in &events {
            d.insert(ts, v);
            seen.push((ts, v));
            for cut in 0..16 {
                let want = seen
                    .iter()
                    .filter(|e| e.0 > cut)
                    .map(|e| e.1)
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
                assert_eq!(d.min_after(Some(cut)), want, "cut {cut} after {seen:?}");
            }
        }
        d.expire(11);
        assert_eq!(d.min_after(None), Some(2.0));
        assert!(d.len() <= 2);
    }
}
