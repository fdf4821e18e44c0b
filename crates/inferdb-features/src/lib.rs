//! Feature views of inferdb: exact, incremental sliding-window aggregates
//! per entity.
//!
//! A view is compiled once into a [`ViewPlan`]; each entity (key) of the view
//! has an [`EntityState`]. The engine owns sharding and locking: one writer
//! thread calls [`EntityState::insert`] / [`EntityState::advance`], readers
//! call [`EntityState::eval`] through a shared reference.
//!
//! # Semantics
//!
//! A window of length `W` evaluated at `t` holds the events with
//! `t − W < ts <= t`; an unwindowed feature holds every inserted event.
//! Nulls are skipped (as in SQL): `count(field)` counts non-null values,
//! `last` is the latest *non-null* value (largest ts; on equal ts the one
//! inserted later). Empty windows give `count` 0, `sum` 0.0 and null for
//! the others. `stddev` is the population standard deviation.
//!
//! # Design
//!
//! * **One buffer per entity** of the events the longest window can still
//!   see, sorted by (ts, insertion order), row-major in one `VecDeque<u64>`:
//!   each row is the ts and one `u64` slot per aggregated field (`f64` bits
//!   with a NaN payload for null, or a 63-bit hash whose low bit flags "last
//!   occurrence"). One allocation per entity: an append and an eviction
//!   touch one cache line at each end rather than one per column. Out-of-order events are inserted at their sorted place
//!   (binary search; with bounded lateness that is near the back). Events at
//!   or before `frontier − longest window` are evicted, so memory is
//!   O(events in the longest window), and columns shrink when mostly empty.
//!   An event already too old for a window on arrival is not counted in it.
//! * **One window state per distinct length** (all windows' accumulators
//!   in one vector, window after window): its start position in the
//!   buffer (absolute positions over a running base, so front evictions do
//!   not move it; an insertion before it moves it up) and one accumulator per
//!   (window, field) shared by every feature on them: non-null count, sum and
//!   sum of squares of deviations from a shift (`moments.rs`), and monotonic
//!   deques for min/max that accept out-of-order events (`minmax.rs`).
//! * **Sums are double-double** rather than Neumaier-compensated doubles:
//!   each deviation and its square are formed exactly and accumulated in
//!   ~106 bits, so removing a value cancels its addition to ~1e-32 and a
//!   stale shift far from the current data costs no precision. `stddev` is
//!   clamped to half the window's range (min and max are kept for it), which
//!   makes it exactly 0 for equal values even after the shift expired.
//! * **Windowed distinct is exact, with no refcount map**: each distinct
//!   field keeps one map `hash → position of its last occurrence` for the
//!   whole buffer and flags that event; the distinct count of a window is
//!   the number of flags in it, kept per window as a counter. All windows on
//!   a field share the map, and a read past the frontier subtracts the flags
//!   of the expired events (bit tests: no hashing, no temporary map). Exact
//!   up to 63-bit hash collisions.
//! * **Unwindowed distinct** is an exact sparse set up to 512 hashes, then a
//!   HyperLogLog sketch of 2^14 registers with Ertl's estimator (`hll.rs`),
//!   so 100k idle low-cardinality entities stay small.
//! * **`last` and `seconds_since_last` keep O(1) state**: every retained
//!   event has `ts <= frontier <= t`, so the latest event overall is the
//!   latest event of any window that holds it, and a window holds it iff its
//!   ts is after `t − W`.
//! * **Evaluation is read-only**: at `t > frontier` the events that expired
//!   in `(frontier − W, t − W]` are found by binary search and summed column
//!   by column (cascaded summation, a few ns per event) to be subtracted from
//!   the accumulators; when more expired than remain, the remaining events
//!   are summed instead, so a read walks at most half a window. Min/max
//!   binary-search their deque; counts need only the binary search.
//!
//! # Costs
//!
//! Insertion is O(1) amortized: each event is added once and expired once
//! per window, plus one hash-map update per distinct field. Evaluation at
//! the frontier is O(features); at `t > frontier` it adds O(min(expired,
//! remaining)) for windows with sums or distinct counts: for an entity
//! quiet since its last event, the engine can call [`EntityState::advance`]
//! (e.g. when it sweeps idle entities) to make its reads O(features) again.

mod error;
mod hll;
mod minmax;
mod moments;
mod plan;
pub mod prefetch;
mod state;

pub use error::FeatureError;
pub use plan::ViewPlan;
pub use state::EntityState;
