//! Online state: per stream its watermark, counters, hot tier and recent
//! dead letters; per view the [`EntityState`] of every key. Both are split
//! into shards by the key's stable hash, each behind its own lock.
//!
//! Only the WAL writer thread changes state ([`OnlineState::apply`]), in
//! log order, so the state after frame N is a pure function of frames 1..=N
//! — what makes snapshot + replay equal to the state before a crash.
//! Readers take one shard's read lock for the microseconds an evaluation
//! takes, so reads never wait for ingest of other keys and never block it
//! for long. (The style guide's "one owner" rule is kept in spirit: one
//! thread writes; the locks exist only so that readers see whole updates.)

use crate::frame::{BatchFrame, DeadLetter};
use crate::hot::{HotRecord, HotShard, HotShardSnap};
use crate::key::StoredKey;
use hashbrown::HashTable;
use inferdb_features::{EntityState, ViewPlan, prefetch};
use inferdb_types::{Catalog, Value, stable_hash};
use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

/// Sentinel for "no event yet" in a watermark.
pub const NO_WATERMARK: i64 = i64::MIN;

/// The rows one apply pass takes: every structure (each view's table, the
/// hot tier's two indexes) is split into the same shards, and a large group
/// is applied in [`APPLY_CHUNKS`] passes, each taking the shards of one
/// residue in every structure, which two threads claim one at a time. A
/// per-structure split (the user view on one thread, the merchant view and
/// the hot tier on the other) left one thread with 0.72 of a core and the
/// other with 0.3 in `bench ingest`; by residue the passes are even whatever
/// the spec, and every shard still takes its rows in log order. Claimed
/// rather than dealt (one parity each, as before), a pass never waits for a
/// thread that the scheduler has not run yet: the helper thread is spawned
/// on two busy cores, and the writer takes its passes while it is not
/// running. Each pass picks its rows by their routes (a few nanoseconds a
/// row) and sorts them by shard, so that it locks each shard once per run
/// of its rows and can prefetch a run's entities ahead ([`PREFETCH_AHEAD`]).
#[derive(Debug, Clone, Copy)]
enum Part {
    All,
    Residue(usize, usize),
}

impl Part {
    fn owns(self, shard: usize) -> bool {
        match self {
            Part::All => true,
            Part::Residue(r, k) => shard % k == r,
        }
    }
}

/// How many rows ahead of the one being applied each prefetch stage runs
/// (see [`by_shard_runs`]): stage 0 finds the row's entity (the table's
/// lines are loaded) and prefetches what the entry points at, stage 1
/// prefetches what that points at, and so on. A view row's apply takes
/// about a microsecond, several memory latencies, but a hot-tier push much
/// less: two rows between stages measured better than one (the criterion
/// `apply` bench, six alternated pairs on the AMD VM: median 1.77 against
/// 1.96 ms per 1,000 events for `[3, 2, 1]`).
const PREFETCH_AHEAD: [usize; 3] = [6, 4, 2];

/// Row `i` of `batch` with its route in `slot` (of `width` per row) and the
/// text of its key field `key`.
fn keyed_row(
    batch: &BatchFrame,
    width: usize,
    slot: usize,
    key: usize,
    i: usize,
) -> Option<(u64, &Vec<Value>, std::borrow::Cow<'_, str>)> {
    let h = *batch.routes.get(i * width + slot)?;
    let row = batch.rows.get(i)?;
    Some((h, row, key_string(row.get(key)?)?))
}

/// Row `i`'s route in `slot` and its key field `key`, for a prefetch stage
/// to find the entity with: only a string key, which is borrowed. An
/// integer key would be formatted anew by every stage of every row, an
/// allocation each, for a hint; its rows are applied unprefetched.
fn prefetch_key(
    batch: &BatchFrame,
    width: usize,
    slot: usize,
    key: usize,
    i: usize,
) -> Option<(u64, &str)> {
    let h = *batch.routes.get(i * width + slot)?;
    match batch.rows.get(i)?.get(key)? {
        Value::Str(s) => Some((h, s)),
        _ => None,
    }
}

/// Applies the rows `mine` names (`(shard, row index)`, in log order) shard
/// by shard: `lock` takes a shard once per run of its rows, and while row
/// `j` of a run is `apply`d, `prefetch(guard, row, s)` runs stage `s` for
/// row `j + PREFETCH_AHEAD[s]` (each row gets every stage once, in order,
/// before its apply). An entity's state is a chain of heap objects, each
/// found through the one before; the stages walk the chain with prefetch
/// instructions, which do not wait for their lines, so the next rows'
/// cache misses are served while this one is applied instead of one after
/// the other in it. Each stage finds the entity again (its table's lines
/// are cached after stage 0): a reference found earlier cannot be kept
/// across the applies in between, which change the table. Used by the
/// view tables and the hot tier's entity index.
fn by_shard_runs<G>(
    mine: &mut [(u32, u32)],
    lock: impl Fn(usize) -> G,
    prefetch: impl Fn(&G, usize, usize),
    mut apply: impl FnMut(&mut G, usize),
) {
    // Stable within a shard: the row index is the second key.
    mine.sort_unstable();
    let far = PREFETCH_AHEAD[0];
    for run in mine.chunk_by(|a, b| a.0 == b.0) {
        let mut guard = lock(run[0].0 as usize);
        // Step k applies row k (from 0) after staging the rows ahead of it;
        // the first `far` steps only stage.
        for k in 0..run.len() + far {
            for (stage, &ahead) in PREFETCH_AHEAD.iter().enumerate() {
                if let Some(&(_, i)) = (k + ahead).checked_sub(far).and_then(|j| run.get(j)) {
                    prefetch(&guard, i as usize, stage);
                }
            }
            if let Some(&(_, i)) = k.checked_sub(far).and_then(|j| run.get(j)) {
                apply(&mut guard, i as usize);
            }
        }
    }
}

/// Passes a large group is applied in (see [`Part`]).
const APPLY_CHUNKS: usize = 4;

/// Groups at least this large are applied on two threads. Starting the
/// second thread costs tens of microseconds, a row a few: at 2,048 the
/// typical group of `bench ingest` (two batches of 999 good rows) stayed on
/// one thread, and that thread was the bottleneck.
pub(crate) const PARALLEL_APPLY_MIN_ROWS: usize = 256;

/// Limits of the in-memory tiers.
#[derive(Debug, Clone)]
pub struct StateLimits {
    /// Number of shards per view and per stream's hot tier.
    pub shards: usize,
    /// Records kept per entity in the hot tier.
    pub hot_records_per_entity: usize,
    /// Bytes the hot tier of one stream may hold in all.
    pub hot_tier_bytes: usize,
    /// Dead letters kept in memory per stream (all are in the log).
    pub dead_letters_kept: usize,
}

/// Per-stream state.
pub struct StreamState {
    /// Largest on-time event time seen (ms), or [`NO_WATERMARK`].
    pub watermark: AtomicI64,
    /// Records stored (on time and late).
    pub stored: AtomicU64,
    /// Records rejected by validation.
    pub rejected: AtomicU64,
    /// Records stored but too late to count in windows.
    pub late: AtomicU64,
    hot: Vec<Padded<Mutex<HotShard>>>,
    /// For a stream with an `id_field`: the same records keyed by their id
    /// (one per key), bounded like the hot tier. Empty otherwise.
    by_id: Vec<Padded<Mutex<HotShard>>>,
    dead: Mutex<VecDeque<DeadLetter>>,
}

/// Per-view state.
pub struct ViewState {
    /// The compiled feature plan.
    pub plan: ViewPlan,
    shards: Vec<Padded<RwLock<HashTable<ViewEntry>>>>,
    default_row: Vec<Value>,
}

/// A shard (its lock and its table's header) alone on its cache lines.
/// Neighbouring shards belong to the two apply threads ([`Part`]): packed
/// side by side (40 bytes for a view shard, 120 for a hot one), every lock
/// and unlock of one thread took the line from the other's core. 128
/// bytes, not 64: the adjacent-line prefetcher fetches lines in pairs.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Entities housekeeping advances per hold of a shard's write lock.
const HOUSEKEEP_CHUNK: usize = 64;

/// All online state.
pub struct OnlineState {
    /// Indexed like `Catalog::streams`.
    pub streams: Vec<StreamState>,
    /// Indexed like `Catalog::views`.
    pub views: Vec<ViewState>,
    limits: StateLimits,
    hasher: KeyHasher,
}

/// A key as the string used in maps: strings as they are, ints in decimal.
pub fn key_string(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::Str(s) => Some(std::borrow::Cow::Borrowed(s)),
        Value::Int(i) => Some(std::borrow::Cow::Owned(i.to_string())),
        _ => None,
    }
}

/// The in-memory hash of keys: computed once per row and key, it picks
/// the shard and finds the key within it (view tables and hot tier alike).
/// Seeded at random per process (keys come from users: no predictable
/// collisions); nothing persisted depends on it.
#[derive(Debug, Clone)]
pub struct KeyHasher(foldhash::fast::FixedState);

impl Default for KeyHasher {
    fn default() -> KeyHasher {
        use std::hash::BuildHasher;
        // A random seed from the standard library's per-process keys.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x1DB_u64);
        KeyHasher(foldhash::fast::FixedState::with_seed(seed))
    }
}

impl KeyHasher {
    /// The hash of a key; never [`NO_KEY`].
    #[inline]
    pub fn hash(&self, key: &str) -> u64 {
        use std::hash::BuildHasher;
        self.0.hash_one(key).min(NO_KEY - 1)
    }
}

/// In a batch's routes: the row has no key in that slot.
pub(crate) const NO_KEY: u64 = u64::MAX;

/// Routing slots per row of `stream`: one per view it feeds (in
/// `stream.views` order), then its own key (the hot tier), then its id
/// field, if it has one.
fn route_width(stream: &inferdb_types::Stream) -> usize {
    stream.views.len() + 1 + usize::from(stream.id_field.is_some())
}

#[inline]
fn shard_of(h: u64, n: usize) -> usize {
    // High bits: the tables use the low bits and the top 7 for themselves.
    ((h >> 32) % n as u64) as usize
}

/// One entity's state in a view table.
struct ViewEntry {
    key: StoredKey,
    /// Shared with a snapshot being written ([`OnlineState::capture`]):
    /// the writer copies it on its next change ([`Arc::make_mut`]), so the
    /// snapshot keeps the state as it was at its seq.
    state: Arc<EntityState>,
}

/// One evaluated feature row.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    /// Whether the key has state in the view.
    pub found: bool,
    /// Feature values in view order.
    pub values: Vec<Value>,
    /// Evaluation time (ms); `None` when the stream has no events yet.
    pub as_of: Option<i64>,
}

impl OnlineState {
    /// Empty state for a catalog.
    pub fn new(catalog: &Catalog, limits: StateLimits) -> OnlineState {
        let n = limits.shards.max(1);
        let hasher = KeyHasher::default();
        let streams = catalog
            .streams
            .iter()
            .map(|s| StreamState {
                watermark: AtomicI64::new(NO_WATERMARK),
                stored: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                late: AtomicU64::new(0),
                hot: (0..n)
                    .map(|_| Padded(Mutex::new(HotShard::new(hasher.clone()))))
                    .collect(),
                by_id: (0..if s.id_field.is_some() { n } else { 0 })
                    .map(|_| Padded(Mutex::new(HotShard::new(hasher.clone()))))
                    .collect(),
                dead: Mutex::new(VecDeque::new()),
            })
            .collect();
        let views = catalog
            .views
            .iter()
            .map(|v| {
                let plan = ViewPlan::new(v, &catalog.streams[v.stream]);
                let mut default_row = Vec::new();
                // A fresh entity evaluated at any time gives the empty-window
                // values (count 0, sum 0, the rest null).
                let _ = EntityState::new(&plan).eval(&plan, 0, &mut default_row);
                ViewState {
                    plan,
                    shards: (0..n).map(|_| Padded::default()).collect(),
                    default_row,
                }
            })
            .collect();
        OnlineState {
            streams,
            views,
            limits: StateLimits {
                shards: n,
                ..limits
            },
            hasher,
        }
    }

    /// Applies one decoded batch (writer thread only, in log order).
    /// Returns (on-time, late) counts.
    pub fn apply(
        &self,
        catalog: &Catalog,
        stream_idx: usize,
        batch: &mut BatchFrame,
    ) -> (u64, u64) {
        self.apply_group(catalog, &mut [(stream_idx, batch)])[0]
    }

    /// Applies a group of batches in log order (writer thread only).
    /// Returns (on-time, late) counts per batch.
    ///
    /// First, serially, each row is judged on time or late against the
    /// watermark as it stood when the row arrived. Then the shards, which
    /// share nothing, are updated on two threads when the group is large:
    /// the even shards of every view and of the hot tier on a second
    /// thread, the odd ones on this one ([`Part`]). Each shard still takes
    /// its rows in log order, so the result is the same as a serial apply.
    pub fn apply_group(
        &self,
        catalog: &Catalog,
        group: &mut [(usize, &mut BatchFrame)],
    ) -> Vec<(u64, u64)> {
        let mut counts = Vec::with_capacity(group.len());
        // The watermark in force for each row, or NO_WATERMARK if it is late.
        let mut marks: Vec<Vec<i64>> = Vec::with_capacity(group.len());
        let mut rows_total = 0usize;
        for (si, batch) in group.iter() {
            let stream = &catalog.streams[*si];
            let st = &self.streams[*si];
            let mut wm = st.watermark.load(Ordering::Acquire);
            let (mut on_time, mut late) = (0u64, 0u64);
            let mut m = Vec::with_capacity(batch.rows.len());
            for row in &batch.rows {
                let Value::Ts(ts) = row[stream.time] else {
                    m.push(NO_WATERMARK);
                    continue;
                };
                // "More than the allowed lateness late" is late.
                if wm != NO_WATERMARK && ts < wm.saturating_sub(stream.lateness_ms) {
                    late += 1;
                    m.push(NO_WATERMARK);
                } else {
                    on_time += 1;
                    wm = wm.max(ts);
                    m.push(wm);
                }
            }
            st.watermark.store(wm, Ordering::Release);
            st.stored.fetch_add(on_time + late, Ordering::Relaxed);
            st.late.fetch_add(late, Ordering::Relaxed);
            rows_total += batch.rows.len();
            counts.push((on_time, late));
            marks.push(m);
        }

        for (si, batch) in group.iter_mut() {
            self.prepare(catalog, *si, batch);
        }
        let shared: Vec<(usize, &BatchFrame)> = group.iter().map(|(si, b)| (*si, &**b)).collect();
        let part = |p: Part| self.apply_part(catalog, &shared, &marks, p);
        let chunks = APPLY_CHUNKS.min(self.limits.shards);
        if rows_total >= PARALLEL_APPLY_MIN_ROWS && chunks >= 2 {
            let next = AtomicUsize::new(0);
            let claim = || {
                loop {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    if r >= chunks {
                        break;
                    }
                    part(Part::Residue(r, chunks));
                }
            };
            std::thread::scope(|scope| {
                let helper = std::thread::Builder::new()
                    .name("inferdb-apply".into())
                    .spawn_scoped(scope, claim);
                // Without a helper this thread claims every pass.
                claim();
                if let Ok(h) = helper {
                    let _ = h.join();
                }
            });
        } else {
            part(Part::All);
        }
        for (si, batch) in group.iter_mut() {
            self.keep_dead_letters(&self.streams[*si], &batch.dead);
        }
        counts
    }

    /// Applies the group to the shards `part` owns: every view of each
    /// batch's stream, then its hot tier.
    fn apply_part(
        &self,
        catalog: &Catalog,
        group: &[(usize, &BatchFrame)],
        marks: &[Vec<i64>],
        part: Part,
    ) {
        for ((si, batch), m) in group.iter().zip(marks) {
            let stream = &catalog.streams[*si];
            for (slot, &vi) in stream.views.iter().enumerate() {
                self.apply_view(catalog, vi, slot, batch, m, part);
            }
            self.apply_hot(stream, &self.streams[*si], batch, part);
        }
    }

    /// Gives `batch` (of stream `si`) what the apply takes besides its
    /// rows, unless it has it: its [`OnlineState::routes`] and its records'
    /// bytes. A submitter does this on its own thread; a frame read back
    /// from the log gets it when it is applied.
    pub(crate) fn prepare(&self, catalog: &Catalog, si: usize, batch: &mut BatchFrame) {
        if batch.routes.len() != batch.rows.len() * route_width(&catalog.streams[si]) {
            batch.routes = self.routes(catalog, si, &batch.rows);
        }
        if batch.records.len() != batch.rows.len() {
            let payload = &batch.payload;
            batch.records = batch
                .spans
                .iter()
                .map(|&(s0, s1)| {
                    payload
                        .get(s0 as usize..s1 as usize)
                        .unwrap_or_default()
                        .into()
                })
                .collect();
        }
    }

    /// The key hashes of `rows` (of stream `si`) that pick their shards,
    /// row-major, [`route_width`] per row: the key of each view the stream
    /// feeds, the stream's own key, then a string id; [`NO_KEY`] where a
    /// row has none. Computed where a batch is submitted, off the writer
    /// thread; the apply threads then skip the rows of the other parity
    /// without touching them.
    pub(crate) fn routes(&self, catalog: &Catalog, si: usize, rows: &[Vec<Value>]) -> Vec<u64> {
        let stream = &catalog.streams[si];
        let mut out = Vec::with_capacity(rows.len() * route_width(stream));
        let hash_key = |v: Option<&Value>| {
            v.and_then(key_string)
                .map_or(NO_KEY, |k| self.hasher.hash(&k))
        };
        for row in rows {
            for &vi in &stream.views {
                out.push(hash_key(row.get(catalog.views[vi].key)));
            }
            out.push(hash_key(row.get(stream.key)));
            if let Some(i) = stream.id_field {
                out.push(match row.get(i) {
                    Some(Value::Str(id)) => self.hasher.hash(id),
                    _ => NO_KEY,
                });
            }
        }
        out
    }

    fn keep_dead_letters(&self, st: &StreamState, dead: &[DeadLetter]) {
        if dead.is_empty() {
            return;
        }
        st.rejected.fetch_add(dead.len() as u64, Ordering::Relaxed);
        let mut dq = st.dead.lock();
        // Cloned, not drained: the batch goes on to the history's
        // `dead_letters` table (rejections are rare: 0.1 % here).
        dq.extend(dead.iter().cloned());
        while dq.len() > self.limits.dead_letters_kept {
            dq.pop_front();
        }
    }

    /// Applies the rows of `batch` to view `vi`, whose key hash is in
    /// routing slot `slot`.
    fn apply_view(
        &self,
        catalog: &Catalog,
        vi: usize,
        slot: usize,
        batch: &BatchFrame,
        marks: &[i64],
        part: Part,
    ) {
        let view = &catalog.views[vi];
        let stream = &catalog.streams[view.stream];
        let vs = &self.views[vi];
        let n = self.limits.shards;
        let hashes = batch.routes.iter().skip(slot).step_by(route_width(stream));
        // The rows this part takes, by shard (in log order within a shard),
        // so that each shard is locked once per run of its rows.
        let mut mine: Vec<(u32, u32)> = Vec::with_capacity(batch.rows.len() / 2);
        for (i, (&wm, &h)) in marks.iter().zip(hashes).enumerate() {
            if wm == NO_WATERMARK || h == NO_KEY {
                continue;
            }
            let si = shard_of(h, n);
            if part.owns(si) {
                mine.push((si as u32, i as u32));
            }
        }
        let hasher = &self.hasher;
        let width = route_width(stream);
        let key_at = |i: usize| keyed_row(batch, width, slot, view.key, i);
        by_shard_runs(
            &mut mine,
            |si| vs.shards[si].write(),
            |shard, i, stage| {
                let Some(e) = prefetch_key(batch, width, slot, view.key, i)
                    .and_then(|(h, key)| shard.find(h, |e| e.key.is(key)))
                else {
                    return;
                };
                match stage {
                    0 => prefetch::write_arc(&e.state, size_of::<EntityState>()),
                    1 => e.state.prefetch_parts(),
                    _ => e.state.prefetch_deep(),
                }
            },
            |shard, i| {
                let (Some((h, row, key)), Some(&wm)) = (key_at(i), marks.get(i)) else {
                    return;
                };
                let Value::Ts(ts) = &row[stream.time] else {
                    return;
                };
                let entry = shard
                    .entry(h, |e| e.key.is(&key), |e| hasher.hash(e.key.as_str()))
                    .or_insert_with(|| ViewEntry {
                        key: StoredKey::new(&key),
                        state: Arc::new(EntityState::new(&vs.plan)),
                    });
                Arc::make_mut(&mut entry.into_mut().state).insert(&vs.plan, *ts, row, wm);
            },
        );
    }

    fn apply_hot(
        &self,
        stream: &inferdb_types::Stream,
        st: &StreamState,
        batch: &BatchFrame,
        part: Part,
    ) {
        let n = self.limits.shards;
        let width = route_width(stream);
        let slot = stream.views.len();
        let budget = self.limits.hot_tier_bytes / n;
        let routes = batch.routes.chunks_exact(width);
        // The id index (streams with an id field), row by row; the rows of
        // the entity index this part takes are gathered by shard.
        let mut mine: Vec<(u32, u32)> = Vec::with_capacity(batch.rows.len() / 2);
        for (i, (row, hs)) in batch.rows.iter().zip(routes).enumerate() {
            let (h, hid) = (hs[slot], hs.get(slot + 1).copied().unwrap_or(NO_KEY));
            let Value::Ts(ts) = &row[stream.time] else {
                continue;
            };
            if hid != NO_KEY
                && part.owns(shard_of(hid, n))
                && let Some(Value::Str(id)) = stream.id_field.and_then(|f| row.get(f))
                && matches!(row[stream.key], Value::Str(_) | Value::Int(_))
                && let Some(bytes) = batch.records.get(i)
            {
                st.by_id[shard_of(hid, n)]
                    .lock()
                    .push(id, hid, *ts, Arc::clone(bytes), 1, budget);
            }
            if h != NO_KEY && part.owns(shard_of(h, n)) {
                mine.push((shard_of(h, n) as u32, i as u32));
            }
        }
        let key_at = |i: usize| keyed_row(batch, width, slot, stream.key, i);
        by_shard_runs(
            &mut mine,
            |si| st.hot[si].lock(),
            |shard, i, stage| {
                if let Some((h, key)) = prefetch_key(batch, width, slot, stream.key, i) {
                    shard.prefetch(key, h, stage);
                }
                if stage == 0
                    && let Some(bytes) = batch.records.get(i)
                {
                    // The record's counts, which the push increments.
                    prefetch::write_arc(bytes, 0);
                }
            },
            |shard, i| {
                let (Some((h, row, key)), Some(bytes)) = (key_at(i), batch.records.get(i)) else {
                    return;
                };
                let Value::Ts(ts) = &row[stream.time] else {
                    return;
                };
                shard.push(
                    &key,
                    h,
                    *ts,
                    Arc::clone(bytes),
                    self.limits.hot_records_per_entity,
                    budget,
                );
            },
        );
    }

    /// Housekeeping (writer thread): advances every entity of shard
    /// `shard % shards` of every view to its stream's watermark, freeing the
    /// window state of entities that went quiet (reads stay correct without
    /// it, but pay for discounting their expired events).
    pub fn housekeep(&self, catalog: &Catalog, shard: usize) {
        let n = self.limits.shards;
        for (vi, vs) in self.views.iter().enumerate() {
            let wm = self.streams[catalog.views[vi].stream]
                .watermark
                .load(Ordering::Acquire);
            if wm == NO_WATERMARK {
                continue;
            }
            // A chunk of entities per hold of the write lock, handed
            // fairly to the readers waiting in between: a reader of this
            // shard (a runtime worker, with every connection it serves)
            // waits for one chunk, not for the whole shard. Only this
            // thread changes the table, so it is the same between chunks.
            let lock = &vs.shards[shard % n];
            let mut done = 0;
            loop {
                let mut table = lock.write();
                let mut advanced = 0;
                for e in table.iter_mut().skip(done).take(HOUSEKEEP_CHUNK) {
                    Arc::make_mut(&mut e.state).advance(&vs.plan, wm);
                    advanced += 1;
                }
                RwLockWriteGuard::unlock_fair(table);
                if advanced < HOUSEKEEP_CHUNK {
                    break;
                }
                done += advanced;
            }
        }
    }

    /// Evaluates a view for `keys` at `t` (or the stream's watermark).
    pub fn read(
        &self,
        catalog: &Catalog,
        view_idx: usize,
        keys: &[&str],
        t: Option<i64>,
    ) -> Vec<FeatureRow> {
        let view = &catalog.views[view_idx];
        let vs = &self.views[view_idx];
        let wm = self.streams[view.stream].watermark.load(Ordering::Acquire);
        let base_t = t.or((wm != NO_WATERMARK).then_some(wm));
        let n = self.limits.shards;
        keys.iter()
            .map(|key| {
                let h = self.hasher.hash(key);
                let shard = vs.shards[shard_of(h, n)].read();
                let Some(e) = shard.find(h, |e| e.key.is(key)).map(|e| &e.state) else {
                    return FeatureRow {
                        found: false,
                        values: vs.default_row.clone(),
                        as_of: base_t,
                    };
                };
                let mut t = base_t.unwrap_or(i64::MIN);
                let mut values = Vec::with_capacity(vs.plan.len());
                // The writer may have moved this entity past the watermark we
                // loaded; evaluate at its frontier then (still <= the live
                // watermark). An explicit as_of is checked by the caller.
                if let Err(inferdb_features::FeatureError::BeforeFrontier { frontier, .. }) =
                    e.eval(&vs.plan, t, &mut values)
                {
                    t = frontier;
                    values.clear();
                    let _ = e.eval(&vs.plan, t, &mut values);
                }
                FeatureRow {
                    found: true,
                    values,
                    as_of: Some(t),
                }
            })
            .collect()
    }

    /// Up to `limit` recent records of `key`, newest first.
    pub fn recent(&self, stream_idx: usize, key: &str, limit: usize) -> Vec<HotRecord> {
        let st = &self.streams[stream_idx];
        let h = self.hasher.hash(key);
        st.hot[shard_of(h, self.limits.shards)]
            .lock()
            .recent(key, h, limit)
    }

    /// The `limit` latest records of `key` by event time, newest first, if
    /// the hot tier holds exactly the key's latest stored records (see
    /// [`HotShard::recent_exact`]); `None` when some may have been pushed
    /// out.
    pub fn recent_exact(
        &self,
        stream_idx: usize,
        key: &str,
        limit: usize,
    ) -> Option<Vec<HotRecord>> {
        let st = self.streams.get(stream_idx)?;
        let h = self.hasher.hash(key);
        st.hot[shard_of(h, self.limits.shards)]
            .lock()
            .recent_exact(key, h, limit)
    }

    /// Forgets `key`: its state in every view keyed by its stream's key
    /// field, and its records in every stream's hot tier (and, for a stream
    /// with an id field, those records' ids). Writer thread only. Returns
    /// the records removed from the hot tier.
    pub fn erase(&self, catalog: &Catalog, key: &str) -> usize {
        let n = self.limits.shards;
        let h = self.hasher.hash(key);
        for (vi, v) in catalog.views.iter().enumerate() {
            if v.key != catalog.streams[v.stream].key {
                continue;
            }
            let mut shard = self.views[vi].shards[shard_of(h, n)].write();
            if let Ok(e) = shard.find_entry(h, |e| e.key.is(key)) {
                e.remove();
            }
        }
        let mut removed = 0;
        for (si, s) in catalog.streams.iter().enumerate() {
            let st = &self.streams[si];
            let recs = st.hot[shard_of(h, n)].lock().remove(key, h);
            removed += recs.len();
            if let Some(idf) = s.id_field
                && !st.by_id.is_empty()
            {
                for r in recs {
                    let Ok(row) = inferdb_types::codec::Decoder::new(&r.bytes).row() else {
                        continue;
                    };
                    if let Some(Value::Str(id)) = row.get(idf) {
                        let hid = self.hasher.hash(id);
                        st.by_id[shard_of(hid, n)].lock().remove(id, hid);
                    }
                }
            }
        }
        removed
    }

    /// The record whose id field equals `id` (streams with an id field),
    /// while it is in the hot tier.
    pub fn by_id(&self, stream_idx: usize, id: &str) -> Option<HotRecord> {
        let st = &self.streams[stream_idx];
        if st.by_id.is_empty() {
            return None;
        }
        let h = self.hasher.hash(id);
        st.by_id[shard_of(h, self.limits.shards)]
            .lock()
            .recent(id, h, 1)
            .pop()
    }

    /// The most recent dead letters of a stream, newest first.
    pub fn dead_letters(&self, stream_idx: usize, limit: usize) -> Vec<DeadLetter> {
        self.streams[stream_idx]
            .dead
            .lock()
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// Number of keys with state in a view.
    pub fn entity_count(&self, view_idx: usize) -> usize {
        self.views[view_idx]
            .shards
            .iter()
            .map(|s| s.read().len())
            .sum()
    }

    /// Bytes held by a stream's hot tier.
    pub fn hot_bytes(&self, stream_idx: usize) -> usize {
        self.streams[stream_idx]
            .hot
            .iter()
            .map(|s| s.lock().bytes())
            .sum()
    }

    /// The state as it stands, for a snapshot at `seq` (writer thread,
    /// between groups). Cheap: every view entity's state and every key's
    /// recent records are shared, not copied (the writer copies one when
    /// it next changes it). The slow part, encoding
    /// and writing, is [`Capture::encode_into`] on another thread, while
    /// the writer goes on.
    pub fn capture(&self, catalog: &Catalog, seq: u64) -> Capture {
        let streams = self
            .streams
            .iter()
            .map(|s| StreamSnap {
                watermark: s.watermark.load(Ordering::Acquire),
                stored: s.stored.load(Ordering::Relaxed),
                rejected: s.rejected.load(Ordering::Relaxed),
                late: s.late.load(Ordering::Relaxed),
                hot: s.hot.iter().map(|h| h.lock().snap()).collect(),
                by_id: s.by_id.iter().map(|h| h.lock().snap()).collect(),
                dead: s.dead.lock().iter().cloned().collect(),
            })
            .collect();
        let views = self
            .views
            .iter()
            .map(|v| {
                let mut entities = Vec::new();
                for shard in &v.shards {
                    let shard = shard.read();
                    entities.reserve(shard.len());
                    entities.extend(shard.iter().map(|e| (e.key.clone(), e.state.clone())));
                }
                entities
            })
            .collect();
        Capture {
            spec: spec_fingerprint(catalog),
            seq,
            shards: self.limits.shards,
            streams,
            views,
        }
    }

    /// Rebuilds state from a snapshot; `None` if it was taken under another
    /// spec or shard count (then the caller replays the whole log).
    pub fn restore(
        catalog: &Catalog,
        limits: StateLimits,
        bytes: &[u8],
    ) -> Result<Option<(OnlineState, u64)>, postcard::Error> {
        let snap: SnapshotOwned = postcard::from_bytes(bytes)?;
        if snap.spec != spec_fingerprint(catalog)
            || snap.shards != limits.shards.max(1)
            || snap.streams.len() != catalog.streams.len()
            || snap.views.len() != catalog.views.len()
        {
            return Ok(None);
        }
        let state = OnlineState::new(catalog, limits);
        for (st, s) in state.streams.iter().zip(snap.streams) {
            st.watermark.store(s.watermark, Ordering::Release);
            st.stored.store(s.stored, Ordering::Relaxed);
            st.rejected.store(s.rejected, Ordering::Relaxed);
            st.late.store(s.late, Ordering::Relaxed);
            if s.hot.len() != st.hot.len() || s.by_id.len() != st.by_id.len() {
                return Ok(None);
            }
            let n = st.hot.len();
            for (h, shard) in
                st.hot
                    .iter()
                    .zip(HotShard::redistribute(s.hot, n, &state.hasher, shard_of))
            {
                *h.lock() = shard;
            }
            let n = st.by_id.len();
            for (h, shard) in
                st.by_id
                    .iter()
                    .zip(HotShard::redistribute(s.by_id, n, &state.hasher, shard_of))
            {
                *h.lock() = shard;
            }
            *st.dead.lock() = s.dead.into();
        }
        let n = state.limits.shards;
        let hasher = &state.hasher;
        for (vs, entities) in state.views.iter().zip(snap.views) {
            for (k, e) in entities {
                let h = hasher.hash(&k);
                vs.shards[shard_of(h, n)].write().insert_unique(
                    h,
                    ViewEntry {
                        key: StoredKey::new(&k),
                        state: Arc::new(e),
                    },
                    |e| hasher.hash(e.key.as_str()),
                );
            }
        }
        Ok(Some((state, snap.seq)))
    }
}

/// The version of the snapshot's layout: a snapshot of another layout is
/// not used (2: the hot tier records what it pushed out; 3: an entity's
/// buffer is one row-major ring and its windows' accumulators one vector).
const SNAPSHOT_LAYOUT: u32 = 3;

/// Identifies the spec a snapshot was taken under.
/// What the state's layout depends on: streams and views (model bindings
/// change nothing stored).
fn spec_fingerprint(catalog: &Catalog) -> u64 {
    let text =
        serde_json::to_string(&(SNAPSHOT_LAYOUT, &catalog.spec.streams, &catalog.spec.views))
            .unwrap_or_default();
    stable_hash(&Value::Str(text.into()))
}

/// The snapshot as written: a [`Capture`], borrowed.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    spec: u64,
    seq: u64,
    shards: usize,
    streams: &'a [StreamSnap],
    views: Vec<Vec<(&'a str, &'a EntityState)>>,
}

/// Online state captured at a seq ([`OnlineState::capture`]), to be
/// encoded away from the writer.
pub struct Capture {
    spec: u64,
    seq: u64,
    shards: usize,
    streams: Vec<StreamSnap>,
    views: Vec<Vec<(StoredKey, Arc<EntityState>)>>,
}

impl Capture {
    /// The seq the state was captured at.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Writes the snapshot's bytes (what [`OnlineState::restore`] reads)
    /// into `w` as they are encoded.
    pub fn encode_into<W: std::io::Write>(&self, w: W) -> Result<(), postcard::Error> {
        postcard::serialize_with_flavor(&self.as_snapshot(), Spill::new(w))
    }

    fn as_snapshot(&self) -> SnapshotRef<'_> {
        SnapshotRef {
            spec: self.spec,
            seq: self.seq,
            shards: self.shards,
            streams: &self.streams,
            views: self
                .views
                .iter()
                .map(|v| v.iter().map(|(k, e)| (k.as_str(), e.as_ref())).collect())
                .collect(),
        }
    }
}

/// A postcard output that gathers the encoded bytes in a buffer and writes
/// them to `out` a buffer at a time. (`postcard::to_io` writes each value's
/// few bytes to the writer as it goes, which cost the snapshot thread more
/// CPU than the page faults of a whole-state buffer it replaced.)
struct Spill<W> {
    buf: Vec<u8>,
    out: W,
}

/// Bytes [`Spill`] gathers before each write.
const SPILL_BYTES: usize = 256 << 10;

impl<W: std::io::Write> Spill<W> {
    fn new(out: W) -> Spill<W> {
        Spill {
            buf: Vec::with_capacity(SPILL_BYTES + 64),
            out,
        }
    }

    /// Writes the buffer out. postcard's errors carry no message: an error
    /// of the writer's file is kept by the writer (`SnapshotWriter`).
    fn spill(&mut self) -> postcard::Result<()> {
        self.out
            .write_all(&self.buf)
            .map_err(|_| postcard::Error::SerializeBufferFull)?;
        self.buf.clear();
        Ok(())
    }
}

impl<W: std::io::Write> postcard::ser_flavors::Flavor for Spill<W> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.buf.push(byte);
        if self.buf.len() >= SPILL_BYTES {
            self.spill()?;
        }
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SPILL_BYTES {
            self.spill()?;
        }
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<()> {
        self.spill()?;
        self.out
            .flush()
            .map_err(|_| postcard::Error::SerializeBufferFull)
    }
}

#[derive(Deserialize)]
struct SnapshotOwned {
    spec: u64,
    seq: u64,
    shards: usize,
    streams: Vec<StreamSnap>,
    views: Vec<Vec<(String, EntityState)>>,
}

#[derive(Serialize, Deserialize)]
struct StreamSnap {
    watermark: i64,
    stored: u64,
    rejected: u64,
    late: u64,
    hot: Vec<HotShardSnap>,
    by_id: Vec<HotShardSnap>,
    dead: Vec<DeadLetter>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;
    use inferdb_types::INFERENCE_STREAM;

    /// The reference catalog and an empty state over it with `shards`.
    fn payments_state(shards: usize) -> (Catalog, OnlineState) {
        let catalog =
            Catalog::from_toml(include_str!("../../../examples/payments/spec.toml")).unwrap();
        let limits = StateLimits {
            shards,
            hot_records_per_entity: 10,
            hot_tier_bytes: 1 << 20,
            dead_letters_kept: 10,
        };
        let state = OnlineState::new(&catalog, limits);
        (catalog, state)
    }

    /// A `transactions` row of `user` at `ts` for `amount`.
    fn row(user: &str, ts: i64, amount: f64) -> Vec<Value> {
        vec![
            Value::Str(user.into()),
            Value::Ts(ts),
            Value::Float(amount),
            Value::Str(format!("m_{}", ts % 7).into()),
            Value::Str("fuel".into()),
            Value::Str("FR".into()),
            Value::Str("web".into()),
            Value::Bool(false),
        ]
    }

    #[test]
    fn housekeeping_changes_no_feature_value() {
        let (catalog, state) = payments_state(4);
        let t0 = 1_767_225_600_000i64;
        // "a" is busy early, then only "b" sends for two hours.
        let mut rows: Vec<Vec<Value>> = (0..200)
            .map(|i| row("a", t0 + i * 1_000, i as f64))
            .collect();
        rows.extend((0..100).map(|i| row("b", t0 + 7_200_000 + i * 60_000, 1.0)));
        let (payload, _) = frame::encode("transactions", 0, &rows, &[]);
        state.apply(&catalog, 0, &mut frame::decode(payload).unwrap());
        let keys = ["a", "b"];
        let before = state.read(&catalog, 0, &keys, None);
        for s in 0..4 {
            state.housekeep(&catalog, s);
        }
        let after = state.read(&catalog, 0, &keys, None);
        assert_eq!(before, after);
        // a's events left the 1h window but are still in the 24h one.
        assert_eq!(after[0].values[1], Value::Int(0));
        assert_eq!(after[0].values[2], Value::Int(200));
    }

    #[test]
    fn a_group_applied_on_two_threads_equals_the_same_rows_applied_serially() {
        // One group large enough for the two-thread apply (four passes, each
        // the shards of one residue in both views and the hot tier, claimed
        // by two threads and taken shard by shard), against
        // the same rows in groups small enough for one thread. Some rows
        // arrive out of order (within the 5 s lateness), a few too late.
        let t0 = 1_767_225_600_000i64;
        let rows: Vec<Vec<Value>> = (0..600i64)
            .map(|i| {
                let back = [0, 4_000, 9_000][(i % 3) as usize];
                row(&format!("u{}", i % 41), t0 + i * 700 - back, i as f64)
            })
            .collect();
        let chunk = 100;
        assert!(rows.len() >= PARALLEL_APPLY_MIN_ROWS && chunk < PARALLEL_APPLY_MIN_ROWS);
        let apply = |state: &OnlineState, catalog: &Catalog, rows: &[Vec<Value>]| {
            let (payload, _) = frame::encode("transactions", 0, rows, &[]);
            state.apply(catalog, 0, &mut frame::decode(payload).unwrap())
        };
        let (catalog, parallel) = payments_state(8);
        let (_, serial) = payments_state(8);
        // The parallel group comes with its routes computed beforehand, as
        // a submitter computes them; the serial groups, like frames read
        // back from the log, get theirs when they are applied.
        let (payload, _) = frame::encode("transactions", 0, &rows, &[]);
        let mut group = frame::decode(payload).unwrap();
        group.routes = parallel.routes(&catalog, 0, &group.rows);
        let counts = parallel.apply(&catalog, 0, &mut group);
        let serial_counts = rows
            .chunks(chunk)
            .map(|c| apply(&serial, &catalog, c))
            .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
        assert_eq!(counts, serial_counts);
        assert!(counts.1 > 0, "some rows should be late");

        let users: Vec<String> = (0..41).map(|i| format!("u{i}")).collect();
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let merchants: Vec<String> = (0..7).map(|i| format!("m_{i}")).collect();
        let merchants: Vec<&str> = merchants.iter().map(String::as_str).collect();
        // Every user has on-time rows; the merchants are `ts % 7` of them.
        for (view, keys, at_least) in [(0, &users, 41), (1, &merchants, 2)] {
            let got = parallel.read(&catalog, view, keys, None);
            assert!(got.iter().filter(|r| r.found).count() >= at_least);
            assert_eq!(got, serial.read(&catalog, view, keys, None));
        }
        // (Arrival ids are per shard, and each state hashes keys with its
        // own seed: not comparable across the two.)
        let recent = |state: &OnlineState, key: &str| -> Vec<(i64, Arc<[u8]>)> {
            state
                .recent(0, key, 100)
                .into_iter()
                .map(|r| (r.ts, r.bytes))
                .collect()
        };
        for u in &users {
            let got = recent(&parallel, u);
            assert_eq!(got.len(), 10);
            assert_eq!(got, recent(&serial, u));
        }
    }

    #[test]
    fn routes_hold_each_rows_key_hashes_in_slot_order() {
        let (catalog, state) = payments_state(8);
        let h = |k: &str| state.hasher.hash(k);
        let tx = catalog.stream_index("transactions").unwrap();
        let stream = &catalog.streams[tx];
        // transactions feeds user_txn (entity_id) then merchant_txn
        // (merchant_id); its own key is entity_id; it has no id field.
        assert_eq!(route_width(stream), 3);
        let mut keyless = row("u9", 5, 1.0);
        keyless[stream.key] = Value::Null;
        let rows = vec![row("u1", 3, 1.0), keyless];
        let routes = state.routes(&catalog, tx, &rows);
        assert_eq!(
            routes,
            [h("u1"), h("m_3"), h("u1"), NO_KEY, h("m_5"), NO_KEY]
        );
        // The inference records: no views, keyed by entity, with a string
        // id; an integer key routes as its decimal text.
        let ir = catalog.stream_index(INFERENCE_STREAM).unwrap();
        let s = &catalog.streams[ir];
        assert_eq!(route_width(s), 2);
        let (key, id) = (s.key, s.id_field.unwrap());
        let mut r = vec![Value::Null; s.fields.len()];
        r[key] = Value::Int(42);
        r[id] = Value::Str("abc".into());
        assert_eq!(state.routes(&catalog, ir, &[r]), [h("42"), h("abc")]);
    }

    #[test]
    fn an_inference_records_bytes_are_one_allocation_for_its_entity_and_its_id() {
        let (catalog, state) = payments_state(8);
        let ir = catalog.stream_index(INFERENCE_STREAM).unwrap();
        let s = &catalog.streams[ir];
        let t0 = 1_767_225_600_000i64;
        let rows: Vec<Vec<Value>> = (0..3i64)
            .map(|i| {
                let mut r = vec![Value::Null; s.fields.len()];
                r[s.field_index("inference_id").unwrap()] = Value::Str(format!("id{i}").into());
                r[s.key] = Value::Str("u1".into());
                r[s.time] = Value::Ts(t0 + i);
                r
            })
            .collect();
        let (payload, spans) = frame::encode(INFERENCE_STREAM, 0, &rows, &[]);
        let mut batch = frame::decode(payload.clone()).unwrap();
        // As a submitter does it: the records are made before the writer
        // sees the batch.
        state.prepare(&catalog, ir, &mut batch);
        assert_eq!(batch.records.len(), 3);
        state.apply(&catalog, ir, &mut batch);
        let recent = state.recent(ir, "u1", 10);
        assert_eq!(recent.len(), 3);
        for (i, &(s0, s1)) in spans.iter().enumerate() {
            let by_id = state.by_id(ir, &format!("id{i}")).unwrap();
            let newest_first = &recent[2 - i];
            assert_eq!(*by_id.bytes, payload[s0 as usize..s1 as usize]);
            assert!(Arc::ptr_eq(&by_id.bytes, &newest_first.bytes));
        }
    }

    #[test]
    fn a_capture_keeps_the_state_of_its_seq_while_the_writer_goes_on() {
        // Capture after the first rows, then apply more (to the same
        // entities, new ones, and housekeeping): the capture, encoded only
        // afterwards (as the snapshot thread does), restores to exactly the
        // state of a second instance that only ever saw the first rows.
        // Odd users have keys too long to be held inline ([`StoredKey`]).
        let t0 = 1_767_225_600_000i64;
        let user = |i: i64| match i % 2 {
            0 => format!("u{i}"),
            _ => format!("user-with-a-key-longer-than-inline-{i}"),
        };
        let rows = |from: i64, to: i64| -> Vec<Vec<Value>> {
            (from..to)
                .map(|i| row(&user(i % 23), t0 + i * 900, i as f64))
                .collect()
        };
        let apply = |state: &OnlineState, catalog: &Catalog, rows: &[Vec<Value>]| {
            let (payload, _) = frame::encode("transactions", 0, rows, &[]);
            state.apply(catalog, 0, &mut frame::decode(payload).unwrap())
        };
        let (catalog, live) = payments_state(4);
        let (_, reference) = payments_state(4);
        apply(&live, &catalog, &rows(0, 300));
        apply(&reference, &catalog, &rows(0, 300));
        let capture = live.capture(&catalog, 7);
        apply(&live, &catalog, &rows(300, 700));
        apply(&live, &catalog, &[row("newcomer", t0 + 800_000, 1.0)]);
        for shard in 0..4 {
            live.housekeep(&catalog, shard);
        }
        let limits = live.limits.clone();
        let mut bytes = Vec::new();
        capture.encode_into(&mut bytes).unwrap();
        assert_eq!(
            bytes,
            postcard::to_allocvec(&capture.as_snapshot()).unwrap(),
            "the buffered encoding writes postcard's bytes"
        );
        let (restored, seq) = OnlineState::restore(&catalog, limits, &bytes)
            .unwrap()
            .expect("same spec and shards");
        assert_eq!(seq, 7);

        let users: Vec<String> = (0..23).map(user).chain(["newcomer".into()]).collect();
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let got = restored.read(&catalog, 0, &users, None);
        assert_eq!(got, reference.read(&catalog, 0, &users, None));
        assert!(got[..23].iter().all(|r| r.found), "short and long keys");
        assert!(!got[23].found, "the newcomer came after the capture");
        assert_ne!(
            got,
            live.read(&catalog, 0, &users, None),
            "the live state moved on"
        );
        assert_eq!(
            restored.streams[0].stored.load(Ordering::Relaxed),
            300,
            "counters as at the capture"
        );
        for u in &users {
            let ts = |s: &OnlineState| {
                s.recent(0, u, 1_000)
                    .iter()
                    .map(|r| (r.ts, r.bytes.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(ts(&restored), ts(&reference), "{u}");
        }
    }

    #[test]
    fn housekeeping_advances_every_entity_of_a_shard_chunk_by_chunk() {
        let (catalog, state) = payments_state(1);
        let t0 = 1_767_225_600_000i64;
        // More than three chunks of users, then one event two days later
        // moves the watermark past every window.
        let users = HOUSEKEEP_CHUNK * 3 + 5;
        let mut rows: Vec<Vec<Value>> = (0..users)
            .map(|i| row(&format!("u{i}"), t0 + i as i64, 1.0))
            .collect();
        let late = t0 + 2 * 86_400_000;
        rows.push(row("last", late, 1.0));
        let (payload, _) = frame::encode("transactions", 0, &rows, &[]);
        state.apply(&catalog, 0, &mut frame::decode(payload).unwrap());
        let frontiers = |state: &OnlineState| -> Vec<i64> {
            state.views[0].shards[0]
                .read()
                .iter()
                .map(|e| e.state.frontier())
                .collect()
        };
        assert_eq!(frontiers(&state).len(), users + 1);
        assert!(frontiers(&state).iter().any(|&f| f < late));
        let keys: Vec<String> = (0..users).map(|i| format!("u{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let before = state.read(&catalog, 0, &keys, None);

        state.housekeep(&catalog, 0);
        assert!(frontiers(&state).iter().all(|&f| f == late));
        assert_eq!(state.read(&catalog, 0, &keys, None), before);
    }
}
