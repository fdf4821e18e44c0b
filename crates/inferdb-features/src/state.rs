//! [`EntityState`]: the incremental state of one entity (key) of one view,
//! its insertion path (writer thread) and its read-only evaluation path
//! (reader threads). See the crate doc for the design; this module holds the
//! position bookkeeping that makes it exact.
//!
//! Positions are absolute: event `i` of the buffer has position `base + i`,
//! and `base` grows as events are evicted from the front, so a window start
//! stays valid across evictions. An out-of-order insertion at index `p`
//! moves every later event up by one; a window whose start lies after `p`
//! (the event is too old for it) moves its start up by one too.

use crate::error::FeatureError;
use crate::hll::Distinct;
use crate::minmax::MinDeque;
use crate::moments::{Moments, Partial};
use crate::plan::{AccPlan, SlotKind, ViewPlan};
use inferdb_types::{Agg, FieldType, Value, stable_hash};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::size_of;

/// A `Num` slot's null: a NaN payload (values are never NaN).
pub(crate) const NULL_BITS: u64 = 0x7FF8_0000_0000_0BAD;
/// Bit 0 of a `Hash` slot: this event is the last occurrence of its hash.
const FLAG: u64 = 1;
/// A `Hash` slot's null (real hashes are remapped away from 0).
const NULL_HASH: u64 = 0;

static NULL: Value = Value::Null;

/// Hasher for keys that already are uniform 64-bit hashes. Bit 0 of our
/// keys is always clear (it is the flag's place), so high bits are folded
/// into the low ones that pick the bucket.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// Hash (flag cleared) → absolute position of its last occurrence in the buffer.
type PosMap = HashMap<u64, u64, BuildHasherDefault<KeyHasher>>;

/// The retained events, sorted by (ts, insertion order), row-major in one
/// ring: row `i` is the `stride` words `[ts, slot 0, slot 1, …]` starting at
/// `i * stride`. One allocation per entity, and appending a row and
/// evicting the oldest touch one cache line at each end, where a column per
/// slot touched one per column.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Buffer {
    /// Absolute position of row 0.
    base: u64,
    /// Words per row: the ts and one per [`crate::plan::SlotPlan`].
    stride: usize,
    data: VecDeque<u64>,
    /// Per slot: the last-occurrence index (empty unless the slot is `distinct`).
    last_pos: Vec<PosMap>,
}

impl Buffer {
    fn new(slots: usize) -> Buffer {
        Buffer {
            base: 0,
            stride: slots + 1,
            data: VecDeque::new(),
            last_pos: vec![PosMap::default(); slots],
        }
    }

    /// Rows held.
    #[inline]
    fn len(&self) -> usize {
        self.data.len() / self.stride.max(1)
    }

    /// The ts of row `i`.
    #[inline]
    fn ts(&self, i: usize) -> i64 {
        self.data[i * self.stride] as i64
    }

    /// Slot `s` of row `i`.
    #[inline]
    fn at(&self, i: usize, s: usize) -> u64 {
        self.data[i * self.stride + 1 + s]
    }

    #[inline]
    fn at_mut(&mut self, i: usize, s: usize) -> &mut u64 {
        &mut self.data[i * self.stride + 1 + s]
    }

    /// Slot `s` of rows `a..b`.
    fn col(&self, s: usize, a: usize, b: usize) -> impl Iterator<Item = u64> + '_ {
        let (from, to) = if a < b {
            (a * self.stride + 1 + s, b * self.stride)
        } else {
            (0, 0)
        };
        self.data
            .range(from..to)
            .step_by(self.stride.max(1))
            .copied()
    }

    /// The first row `>= lo` whose ts is after `cut` (ts are sorted).
    fn first_after(&self, lo: usize, cut: i64) -> usize {
        let (mut a, mut b) = (lo, self.len());
        while a < b {
            let m = a + (b - a) / 2;
            if self.ts(m) <= cut {
                a = m + 1;
            } else {
                b = m;
            }
        }
        a
    }

    /// Inserts the row `words` (ts first) at row `p`.
    fn insert_row(&mut self, p: usize, words: impl Iterator<Item = u64>) {
        if p == self.len() {
            self.data.extend(words);
        } else {
            for (k, w) in words.enumerate() {
                self.data.insert(p * self.stride + k, w);
            }
        }
    }
}

/// The additive accumulators of one (window, field): what an event adds on
/// insertion and subtracts on expiry.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Counts {
    nonnull: u64,
    moments: Moments,
    /// Windowed: number of last-occurrence flags in the window = distinct
    /// hashes in it. Unwindowed: the sketch's estimate (evaluation only).
    distinct: u64,
}

/// The accumulators of one (window, field).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AccState {
    counts: Counts,
    min: MinDeque,
    /// Minimum of the negated values.
    max: MinDeque,
}

/// The accumulators of one unwindowed field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UnwAcc {
    nonnull: u64,
    moments: Moments,
    min: Option<f64>,
    max: Option<f64>,
    distinct: Distinct,
}

/// What an evaluation reads from one accumulator, after discounting the
/// events that expired between the frontier and the evaluation time.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    counts: Counts,
    min: Option<f64>,
    max: Option<f64>,
}

/// The state of one entity of one view. Built by [`EntityState::new`] from
/// the view's [`ViewPlan`], which every other call must be given too.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntityState {
    /// Fingerprint of the plan layout it was built for.
    shape: u64,
    /// The watermark of the last insert/advance: evaluations at `t >=
    /// frontier` only; events no such evaluation can see are evicted.
    frontier: i64,
    /// Events inserted, ever.
    total: u64,
    /// Largest event ts inserted.
    latest: Option<i64>,
    buf: Buffer,
    /// Per window of the plan: the absolute position of its first event
    /// (all later events are in it).
    starts: Vec<u64>,
    /// The accumulators of every window, window after window in plan order.
    waccs: Vec<AccState>,
    accs: Vec<UnwAcc>,
    /// Per `last` field: `(ts, value bits)` of the latest non-null value.
    lasts: Vec<Option<(i64, u64)>>,
}

impl EntityState {
    /// An empty state for an entity of `plan`'s view.
    pub fn new(plan: &ViewPlan) -> EntityState {
        EntityState {
            shape: plan.shape,
            frontier: i64::MIN,
            total: 0,
            latest: None,
            buf: Buffer::new(plan.slots.len()),
            starts: vec![0; plan.windows.len()],
            waccs: vec![AccState::default(); plan.windows.iter().map(|w| w.accs.len()).sum()],
            accs: vec![UnwAcc::default(); plan.accs.len()],
            lasts: vec![None; plan.lasts.len()],
        }
    }

    /// Advances the frontier to `watermark` (evicting what no evaluation at
    /// `t >= watermark` can see), then adds the event. `row` is the full
    /// stream row; `ts` its event time (epoch ms).
    ///
    /// The caller guarantees `ts <= watermark`, a watermark that never
    /// decreases, and no events beyond the stream's lateness; `ts` may be
    /// smaller than earlier events'. An event older than a window at the
    /// frontier (`ts <= watermark − W`) is not counted in that window.
    pub fn insert(&mut self, plan: &ViewPlan, ts: i64, row: &[Value], watermark: i64) {
        if self.shape != plan.shape {
            debug_assert!(false, "entity state does not match the view plan");
            return;
        }
        debug_assert!(
            ts <= watermark,
            "event at {ts} is after the watermark {watermark}"
        );
        self.advance_to(plan, watermark);
        self.total += 1;
        if self.latest.is_none_or(|l| ts > l) {
            self.latest = Some(ts);
        }
        for (last, lp) in self.lasts.iter_mut().zip(&plan.lasts) {
            if let Some(bits) = last_bits(lp.ty, field(row, lp.field))
                && last.is_none_or(|(lts, _)| ts >= lts)
            {
                *last = Some((ts, bits));
            }
        }
        for (acc, ap) in self.accs.iter_mut().zip(&plan.accs) {
            acc.add(ap, field(row, ap.field));
        }
        if let Some(longest) = plan.longest_ms
            && self
                .frontier
                .checked_sub(longest)
                .is_none_or(|cut| ts > cut)
        {
            self.insert_buffered(plan, ts, row);
        }
    }

    /// Advances the frontier to `watermark` without an event (housekeeping:
    /// frees the memory of expired events and makes later reads cheaper).
    pub fn advance(&mut self, plan: &ViewPlan, watermark: i64) {
        if self.shape == plan.shape {
            self.advance_to(plan, watermark);
        }
    }

    /// Evaluates every feature at `t`, appending `plan.len()` values to `out`
    /// in view order. Read-only: events that expired between the frontier
    /// and `t` are discounted on the fly.
    pub fn eval(&self, plan: &ViewPlan, t: i64, out: &mut Vec<Value>) -> Result<(), FeatureError> {
        if self.shape != plan.shape {
            return Err(FeatureError::PlanMismatch);
        }
        if t < self.frontier {
            return Err(FeatureError::BeforeFrontier {
                t,
                frontier: self.frontier,
            });
        }
        let first = out.len();
        out.resize(first + plan.len(), Value::Null);
        let out = &mut out[first..];
        let buf = &self.buf;
        let len = buf.len();

        let mut waccs = self.waccs.as_slice();
        for (&start, wp) in self.starts.iter().zip(&plan.windows) {
            let Some((accs, rest)) = waccs.split_at_checked(wp.accs.len()) else {
                return Err(FeatureError::PlanMismatch);
            };
            waccs = rest;
            let cut = t.checked_sub(wp.len_ms);
            let lo = (start - buf.base) as usize;
            let new_lo = match cut {
                Some(c) if lo < len && buf.ts(lo) <= c => buf.first_after(lo, c),
                _ => lo,
            };
            let count = (len - new_lo) as i64;
            for &f in &wp.counts {
                out[f] = Value::Int(count);
            }
            for (acc, ap) in accs.iter().zip(&wp.accs) {
                let mut s = Summary {
                    counts: acc.counts,
                    min: if ap.min { acc.min.min_after(cut) } else { None },
                    max: if ap.max {
                        acc.max.min_after(cut).map(|v| -v)
                    } else {
                        None
                    },
                };
                if new_lo > lo {
                    // Walk the shorter side: subtract the expired events, or
                    // sum the remaining ones from scratch.
                    let k = acc.counts.moments.shift();
                    s.counts = if new_lo - lo <= len - new_lo {
                        acc.counts.without(&RangeCounts::of(ap, buf, lo, new_lo, k))
                    } else {
                        Counts::from_range(k, &RangeCounts::of(ap, buf, new_lo, len, k))
                    };
                }
                s.write(&ap.outputs, out);
            }
        }

        for &f in &plan.counts {
            out[f] = Value::Int(self.total as i64);
        }
        for (acc, ap) in self.accs.iter().zip(&plan.accs) {
            let s = Summary {
                counts: Counts {
                    nonnull: acc.nonnull,
                    moments: acc.moments,
                    distinct: if ap.distinct {
                        acc.distinct.estimate()
                    } else {
                        0
                    },
                },
                min: acc.min,
                max: acc.max,
            };
            s.write(&ap.outputs, out);
        }
        for (last, lp) in self.lasts.iter().zip(&plan.lasts) {
            for &(f, window) in &lp.outputs {
                out[f] = match *last {
                    Some((ts, bits)) if visible(ts, t, window) => last_value(lp.ty, bits),
                    _ => Value::Null,
                };
            }
        }
        for &(f, window) in &plan.since {
            out[f] = match self.latest {
                Some(ts) if visible(ts, t, window) => {
                    Value::Float(t.saturating_sub(ts) as f64 / 1000.0)
                }
                _ => Value::Null,
            };
        }
        Ok(())
    }

    /// Prefetches what an insert reads through the header (which must be
    /// cached by now, or this stalls): the ring's oldest and newest rows,
    /// the window starts, the accumulators, the last values and the
    /// distinct maps' headers. Then [`Self::prefetch_deep`] a little later.
    ///
    /// A caller about to insert into several entities prefetches each in
    /// stages (header, these parts, then what they point at) a few rows
    /// ahead, so that the cache misses of the next rows are served while
    /// it works on the current one ([`crate::prefetch`]).
    pub fn prefetch_parts(&self) {
        use crate::prefetch::{LINE, write, write_range};
        let d = &self.buf.data;
        if let Some(b) = d.back() {
            let b = std::ptr::from_ref(b);
            write(b);
            // The next row goes right after the newest.
            write(b.cast::<u8>().wrapping_add(LINE));
        }
        if let Some(f) = d.front() {
            write(f);
        }
        write(self.starts.as_ptr());
        write_range(self.waccs.as_ptr(), size_of_val(self.waccs.as_slice()));
        write_range(self.accs.as_ptr(), size_of_val(self.accs.as_slice()));
        write(self.lasts.as_ptr());
        write(self.buf.last_pos.as_ptr());
    }

    /// The last stage of prefetching an insert (after
    /// [`Self::prefetch_parts`]): the ring's rows at the windows' starts,
    /// where eviction reads, and both ends of the min/max deques.
    pub fn prefetch_deep(&self) {
        use crate::prefetch::write;
        let d = &self.buf.data;
        for &s in &self.starts {
            let row = (s.wrapping_sub(self.buf.base) as usize).saturating_mul(self.buf.stride);
            if let Some(w) = d.get(row) {
                write(w);
            }
        }
        for a in &self.waccs {
            a.min.prefetch();
            a.max.prefetch();
        }
    }

    /// The largest event ts inserted.
    pub fn latest_ts(&self) -> Option<i64> {
        self.latest
    }

    /// The frontier: evaluations before it are refused.
    pub fn frontier(&self) -> i64 {
        self.frontier
    }

    /// Estimated bytes held (inline and heap), for memory accounting.
    pub fn approx_bytes(&self) -> usize {
        let b = &self.buf;
        let mut n = size_of::<Self>()
            + b.data.capacity() * size_of::<u64>()
            + b.last_pos.capacity() * size_of::<PosMap>()
            + self.starts.capacity() * size_of::<u64>()
            + self.waccs.capacity() * size_of::<AccState>()
            + self.accs.capacity() * size_of::<UnwAcc>()
            + self.lasts.capacity() * size_of::<Option<(i64, u64)>>();
        // hashbrown: buckets of (key, value) plus one control byte, ~8/7 of capacity.
        n += b
            .last_pos
            .iter()
            .map(|m| m.capacity() * 8 / 7 * 17)
            .sum::<usize>();
        n += self
            .waccs
            .iter()
            .map(|a| a.min.heap_bytes() + a.max.heap_bytes())
            .sum::<usize>();
        n += self
            .accs
            .iter()
            .map(|a| a.distinct.heap_bytes())
            .sum::<usize>();
        n
    }

    /// Moves the frontier to `watermark`: each window's start passes the
    /// events at or before `watermark − W` (subtracting them), then the
    /// events before every window are evicted.
    fn advance_to(&mut self, plan: &ViewPlan, watermark: i64) {
        if watermark <= self.frontier {
            return;
        }
        self.frontier = watermark;
        if plan.longest_ms.is_none() {
            return;
        }
        let buf = &mut self.buf;
        let len = buf.len();
        let mut waccs = self.waccs.as_mut_slice();
        for (start, wp) in self.starts.iter_mut().zip(&plan.windows) {
            let Some((accs, rest)) = std::mem::take(&mut waccs).split_at_mut_checked(wp.accs.len())
            else {
                debug_assert!(false, "entity state does not match the view plan");
                return;
            };
            waccs = rest;
            let Some(cut) = watermark.checked_sub(wp.len_ms) else {
                continue;
            };
            let mut i = (*start - buf.base) as usize;
            while i < len && buf.ts(i) <= cut {
                for (acc, ap) in accs.iter_mut().zip(&wp.accs) {
                    acc.counts.remove(ap, buf, i);
                }
                i += 1;
            }
            *start = buf.base + i as u64;
            for (acc, ap) in accs.iter_mut().zip(&wp.accs) {
                if ap.min {
                    acc.min.expire(cut);
                }
                if ap.max {
                    acc.max.expire(cut);
                }
            }
        }
        let keep = self
            .starts
            .iter()
            .copied()
            .min()
            .unwrap_or(buf.base + len as u64);
        let evict = (keep - buf.base) as usize;
        if evict == 0 {
            return;
        }
        for (s, sp) in plan.slots.iter().enumerate() {
            if !sp.distinct {
                continue;
            }
            let map = &mut buf.last_pos[s];
            for &v in buf
                .data
                .range(1 + s..evict * buf.stride)
                .step_by(buf.stride)
            {
                if v & FLAG != 0 {
                    map.remove(&(v & !FLAG));
                }
            }
        }
        buf.data.drain(..evict * buf.stride);
        buf.base += evict as u64;
        let cap = buf.data.capacity() / buf.stride;
        if cap > 64 && buf.len() * 4 < cap {
            buf.data.shrink_to(buf.len() * 2 * buf.stride);
        }
        for m in &mut buf.last_pos {
            if m.capacity() > 64 && m.len() * 4 < m.capacity() {
                m.shrink_to(m.len() * 2);
            }
        }
    }

    /// Inserts an event that at least the longest window still holds.
    fn insert_buffered(&mut self, plan: &ViewPlan, ts: i64, row: &[Value]) {
        let EntityState {
            buf,
            starts,
            waccs,
            frontier,
            ..
        } = self;
        let len = buf.len();
        let p = if len > 0 && buf.ts(len - 1) > ts {
            buf.first_after(0, ts)
        } else {
            len
        };
        if p < len {
            // The events at and after `p` move up by one position.
            for (s, sp) in plan.slots.iter().enumerate() {
                if !sp.distinct {
                    continue;
                }
                let map = &mut buf.last_pos[s];
                for &v in buf.data.range(p * buf.stride + 1 + s..).step_by(buf.stride) {
                    if v & FLAG != 0
                        && let Some(q) = map.get_mut(&(v & !FLAG))
                    {
                        *q += 1;
                    }
                }
            }
        }
        let words = plan
            .slots
            .iter()
            .map(|sp| encode(sp.kind, field(row, sp.field)));
        buf.insert_row(p, std::iter::once(ts as u64).chain(words));
        let pos = buf.base + p as u64;

        let mut rest = waccs.as_mut_slice();
        for (start, wp) in starts.iter_mut().zip(&plan.windows) {
            let Some((accs, r)) = std::mem::take(&mut rest).split_at_mut_checked(wp.accs.len())
            else {
                break;
            };
            rest = r;
            let in_window = frontier.checked_sub(wp.len_ms).is_none_or(|cut| ts > cut);
            if !in_window {
                // Too old for this window: it lands before the window's start.
                *start += 1;
                continue;
            }
            for (acc, ap) in accs.iter_mut().zip(&wp.accs) {
                let (ps, kind) = ap.presence;
                if is_null(kind, buf.at(p, ps)) {
                    continue;
                }
                acc.counts.nonnull += 1;
                if let Some(vs) = ap.value_slot {
                    let x = f64::from_bits(buf.at(p, vs));
                    if ap.moments {
                        acc.counts.moments.add(x);
                    }
                    if ap.min {
                        acc.min.insert(ts, x);
                    }
                    if ap.max {
                        acc.max.insert(ts, -x);
                    }
                }
            }
        }

        // Last-occurrence index and per-window distinct counts. A window
        // holds the event iff its start is at or before `pos`.
        for (s, sp) in plan.slots.iter().enumerate() {
            if !sp.distinct {
                continue;
            }
            let h = buf.at(p, s);
            if h == NULL_HASH {
                continue;
            }
            let prev = match buf.last_pos[s].get_mut(&h) {
                // A later occurrence stays the last one: no count changes.
                Some(q) if *q > pos => continue,
                Some(q) => Some(std::mem::replace(q, pos)),
                None => {
                    buf.last_pos[s].insert(h, pos);
                    None
                }
            };
            *buf.at_mut(p, s) |= FLAG;
            if let Some(q) = prev {
                *buf.at_mut((q - buf.base) as usize, s) &= !FLAG;
            }
            let mut rest = waccs.as_mut_slice();
            for (&start, wp) in starts.iter().zip(&plan.windows) {
                let Some((accs, r)) = std::mem::take(&mut rest).split_at_mut_checked(wp.accs.len())
                else {
                    break;
                };
                rest = r;
                // New to the window unless its previous last occurrence is in it.
                if pos < start || prev.is_some_and(|q| q >= start) {
                    continue;
                }
                for (acc, ap) in accs.iter_mut().zip(&wp.accs) {
                    if ap.distinct && ap.hash_slot == Some(s) {
                        acc.counts.distinct += 1;
                    }
                }
            }
        }
    }
}

/// The counts of a run of buffered events, moments relative to a given shift.
struct RangeCounts {
    nonnull: u64,
    partial: Partial,
    distinct: u64,
}

impl RangeCounts {
    /// Sums the events at buffer indices `a..b` for accumulator `ap`, with
    /// moments relative to shift `k`: column by column, each a tight loop.
    fn of(ap: &AccPlan, buf: &Buffer, a: usize, b: usize, k: f64) -> RangeCounts {
        let (ps, kind) = ap.presence;
        let partial = match ap.value_slot {
            Some(vs) if ap.moments => {
                let values = buf.col(vs, a, b).filter(|&v| v != NULL_BITS);
                Moments::partial(k, values.map(f64::from_bits))
            }
            _ => Partial::default(),
        };
        let nonnull = if ap.moments && ap.value_slot == Some(ps) {
            partial.count() // the value column is the presence column
        } else {
            buf.col(ps, a, b).filter(|&v| !is_null(kind, v)).count() as u64
        };
        let distinct = match ap.hash_slot {
            Some(hs) if ap.distinct => buf.col(hs, a, b).map(|v| v & FLAG).sum::<u64>(),
            _ => 0,
        };
        RangeCounts {
            nonnull,
            partial,
            distinct,
        }
    }
}

impl Counts {
    /// These counts without the run `r` (summed with this shift).
    fn without(&self, r: &RangeCounts) -> Counts {
        Counts {
            nonnull: self.nonnull.saturating_sub(r.nonnull),
            moments: self.moments.without(&r.partial),
            distinct: self.distinct.saturating_sub(r.distinct),
        }
    }

    /// The counts of exactly the run `r` (summed with shift `k`).
    fn from_range(k: f64, r: &RangeCounts) -> Counts {
        Counts {
            nonnull: r.nonnull,
            moments: Moments::from_partial(k, &r.partial),
            distinct: r.distinct,
        }
    }

    /// Subtracts the event at buffer index `i` (it left the window).
    #[inline]
    fn remove(&mut self, ap: &AccPlan, buf: &Buffer, i: usize) {
        let (ps, kind) = ap.presence;
        if is_null(kind, buf.at(i, ps)) {
            return;
        }
        self.nonnull -= 1;
        if ap.moments
            && let Some(vs) = ap.value_slot
        {
            self.moments.remove(f64::from_bits(buf.at(i, vs)));
        }
        if ap.distinct
            && let Some(hs) = ap.hash_slot
            && buf.at(i, hs) & FLAG != 0
        {
            self.distinct -= 1;
        }
    }
}

impl Summary {
    /// Writes the value of every feature read from this accumulator.
    fn write(&self, outputs: &[(usize, Agg)], out: &mut [Value]) {
        let m = &self.counts.moments;
        for &(f, agg) in outputs {
            out[f] = match agg {
                Agg::Count => Value::Int(self.counts.nonnull as i64),
                Agg::Sum => Value::Float(m.sum()),
                Agg::Avg if m.count() > 0 => Value::Float(m.mean()),
                Agg::Stddev if m.count() > 0 => {
                    // Popoviciu: var <= (range / 2)^2, so equal values give exactly 0.
                    let half_range = match (self.min, self.max) {
                        (Some(lo), Some(hi)) => (hi - lo) / 2.0,
                        _ => f64::INFINITY,
                    };
                    Value::Float(m.variance().sqrt().min(half_range))
                }
                Agg::Min => self.min.map_or(Value::Null, Value::Float),
                Agg::Max => self.max.map_or(Value::Null, Value::Float),
                Agg::ApproxDistinct => Value::Int(self.counts.distinct as i64),
                Agg::Avg | Agg::Stddev | Agg::Last | Agg::SecondsSinceLast => Value::Null,
            };
        }
    }
}

impl UnwAcc {
    fn add(&mut self, ap: &AccPlan, v: &Value) {
        if v.is_null() {
            return;
        }
        self.nonnull += 1;
        if ap.distinct {
            self.distinct.insert(stable_hash(v));
        }
        if let Some(x) = v.as_f64().filter(|x| !x.is_nan()) {
            if ap.moments {
                self.moments.add(x);
            }
            if ap.min {
                self.min = Some(self.min.map_or(x, |m| m.min(x)));
            }
            if ap.max {
                self.max = Some(self.max.map_or(x, |m| m.max(x)));
            }
        }
    }
}

#[inline]
fn field(row: &[Value], i: usize) -> &Value {
    row.get(i).unwrap_or(&NULL)
}

/// Whether an event at `ts` is in `window` at time `t` (given `ts <= t`).
#[inline]
fn visible(ts: i64, t: i64, window: Option<i64>) -> bool {
    window.is_none_or(|w| t.checked_sub(w).is_none_or(|cut| ts > cut))
}

#[inline]
fn encode(kind: SlotKind, v: &Value) -> u64 {
    match kind {
        SlotKind::Num => match v.as_f64() {
            Some(x) if !x.is_nan() => x.to_bits(),
            _ => NULL_BITS,
        },
        SlotKind::Hash => {
            if v.is_null() {
                return NULL_HASH;
            }
            match stable_hash(v) & !FLAG {
                NULL_HASH => 2,
                h => h,
            }
        }
    }
}

#[inline]
fn is_null(kind: SlotKind, bits: u64) -> bool {
    match kind {
        SlotKind::Num => bits == NULL_BITS,
        SlotKind::Hash => bits == NULL_HASH,
    }
}

/// The bits `last` keeps for a value of a field of type `ty` (None: null).
fn last_bits(ty: FieldType, v: &Value) -> Option<u64> {
    Some(match (ty, v) {
        (_, Value::Null | Value::Str(_)) | (FieldType::String, _) => return None,
        (FieldType::Int | FieldType::Timestamp, Value::Int(i) | Value::Ts(i)) => *i as u64,
        (FieldType::Int | FieldType::Timestamp, v) => v.as_f64()? as i64 as u64,
        (FieldType::Bool, Value::Bool(b)) => u64::from(*b),
        (FieldType::Bool, v) => u64::from(v.as_f64()? != 0.0),
        (FieldType::Float, v) => v.as_f64()?.to_bits(),
    })
}

fn last_value(ty: FieldType, bits: u64) -> Value {
    match ty {
        FieldType::Int => Value::Int(bits as i64),
        FieldType::Timestamp => Value::Ts(bits as i64),
        FieldType::Bool => Value::Bool(bits != 0),
        FieldType::Float | FieldType::String => Value::Float(f64::from_bits(bits)),
    }
}
