//! The hot tier: each entity's most recent records, in memory, for
//! `GET /v1/entities/{stream}/{key}/records`. A record is kept in its
//! encoded form (the bytes of its row in the WAL frame: one allocation,
//! about a third of the decoded size) and decoded when read.
//!
//! Bounded two ways: at most `per_entity` records per entity (the earliest
//! in event time are dropped first, so a late record does not push out a
//! newer one: an entity's records are its latest by event time), and at
//! most `budget_bytes` per shard in all; past the budget the shard drops
//! records oldest-arrival-first across its entities (a FIFO of record ids).
//! The shard remembers the latest event time it ever dropped, so that it
//! can tell when it holds *exactly* an entity's latest records (the SQL
//! latest-rows path). Dropped records are still in the history. One shard
//! is owned by the writer thread for changes; readers take its lock briefly.

use crate::key::StoredKey;
use crate::state::KeyHasher;
use hashbrown::HashTable;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// One stored record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HotRecord {
    /// Arrival id, unique within the shard.
    pub rid: u64,
    /// Event time (ms).
    pub ts: i64,
    /// The row, encoded by [`inferdb_types::codec::encode_row`]; shared
    /// with a snapshot being written rather than copied.
    #[serde(with = "shared")]
    pub bytes: Arc<[u8]>,
}

impl HotRecord {
    fn size(&self) -> usize {
        40 + self.bytes.len()
    }
}

/// One shard of the hot tier. Keys are looked up by a hash the caller
/// computed once per row with [`HotShard::hasher`]'s state.
#[derive(Debug, Default)]
pub struct HotShard {
    hasher: KeyHasher,
    entities: HashTable<Entity>,
    /// Every record in arrival order: (key, key hash, rid, event time).
    fifo: VecDeque<(StoredKey, u64, u64, i64)>,
    next_rid: u64,
    bytes: usize,
    records: usize,
    /// The latest event time of any record the byte budget pushed out
    /// (of any key of the shard).
    budget_evicted: Option<i64>,
}

/// One key's records, sorted by (event time, arrival): the front is the
/// earliest, the back the latest. An in-order record is a push at the
/// back; a late one is inserted where it belongs.
#[derive(Debug)]
struct Entity {
    key: StoredKey,
    /// Shared with a snapshot being written ([`HotShard::snap`]); copied
    /// on the next change ([`Arc::make_mut`]).
    recs: Arc<VecDeque<HotRecord>>,
    /// The latest event time of the key's records the per-entity cap
    /// pushed out.
    evicted: Option<i64>,
}

impl Entity {
    fn new(key: StoredKey, mut recs: Arc<VecDeque<HotRecord>>, evicted: Option<i64>) -> Entity {
        if !recs.iter().is_sorted_by_key(|r| (r.ts, r.rid)) {
            Arc::make_mut(&mut recs)
                .make_contiguous()
                .sort_by_key(|r| (r.ts, r.rid));
        }
        Entity { key, recs, evicted }
    }

    /// Where the record (ts, rid) is, or would be.
    fn position(&self, ts: i64, rid: u64) -> usize {
        self.recs.partition_point(|r| (r.ts, r.rid) < (ts, rid))
    }
}

/// The serialized form of a shard.
#[derive(Debug, Serialize, Deserialize)]
pub struct HotShardSnap {
    next_rid: u64,
    budget_evicted: Option<i64>,
    entities: Vec<SnapEntity>,
}

/// One key's records in a [`HotShardSnap`]: (key, records, the latest
/// event time the per-entity cap pushed out).
#[derive(Debug, Serialize, Deserialize)]
struct SnapEntity(
    StoredKey,
    #[serde(with = "shared")] Arc<VecDeque<HotRecord>>,
    Option<i64>,
);

/// Serde for shared (`Arc`) values, written exactly as their owned forms
/// (`String`, `Box<[u8]>`, a sequence of records): snapshots keep their
/// layout.
mod shared {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<T, S>(v: &Arc<T>, s: S) -> Result<S::Ok, S::Error>
    where
        T: Serialize + ?Sized,
        S: Serializer,
    {
        (**v).serialize(s)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Arc<T>, D::Error>
    where
        T: ?Sized,
        Box<T>: Deserialize<'de>,
        Arc<T>: From<Box<T>>,
        D: Deserializer<'de>,
    {
        Box::<T>::deserialize(d).map(Arc::from)
    }
}

impl HotShard {
    /// An empty shard whose keys hash with `hasher`.
    pub fn new(hasher: KeyHasher) -> HotShard {
        HotShard {
            hasher,
            ..HotShard::default()
        }
    }

    /// Prefetch stage `stage` of a push of `key` (see the engine's
    /// `by_shard_runs`): 0 finds the entity and prefetches its records'
    /// header, 1 the newest and oldest records (where a push looks).
    pub fn prefetch(&self, key: &str, h: u64, stage: usize) {
        let Some(e) = self.entities.find(h, |e| e.key.is(key)) else {
            return;
        };
        match stage {
            0 => inferdb_features::prefetch::write_arc(&e.recs, size_of::<VecDeque<HotRecord>>()),
            1 => {
                if let Some(b) = e.recs.back() {
                    inferdb_features::prefetch::write(b);
                }
                if let Some(f) = e.recs.front() {
                    inferdb_features::prefetch::write(f);
                }
            }
            _ => {}
        }
    }

    /// Adds a record for `key` (whose hash is `h`), then enforces both bounds.
    pub fn push(
        &mut self,
        key: &str,
        h: u64,
        ts: i64,
        bytes: Arc<[u8]>,
        per_entity: usize,
        budget: usize,
    ) {
        let rid = self.next_rid;
        self.next_rid += 1;
        let rec = HotRecord { rid, ts, bytes };
        self.bytes += rec.size();
        self.records += 1;
        let hasher = &self.hasher;
        let entry = self
            .entities
            .entry(h, |e| e.key.is(key), |e| hasher.hash(e.key.as_str()))
            .or_insert_with(|| Entity::new(StoredKey::new(key), Arc::default(), None));
        let e = entry.into_mut();
        let recs = Arc::make_mut(&mut e.recs);
        // rid is the largest yet: only the time decides the place.
        if recs.back().is_none_or(|b| b.ts <= ts) {
            recs.push_back(rec);
        } else {
            let i = recs.partition_point(|r| r.ts <= ts);
            recs.insert(i, rec);
        }
        while recs.len() > per_entity.max(1) {
            if let Some(old) = recs.pop_front() {
                self.bytes -= old.size();
                self.records -= 1;
                e.evicted = e.evicted.max(Some(old.ts));
            }
        }
        self.fifo.push_back((e.key.clone(), h, rid, ts));
        while self.bytes > budget {
            let Some((k, h, rid, ts)) = self.fifo.pop_front() else {
                break;
            };
            self.evict(&k, h, rid, ts);
        }
        // Ids of records already dropped by the per-entity cap pile up in
        // the FIFO; compact when they outnumber the live records.
        if self.fifo.len() > 1024 && self.fifo.len() > 2 * self.records {
            let entities = &self.entities;
            self.fifo.retain(|(k, h, rid, ts)| {
                entities.find(*h, |e| &e.key == k).is_some_and(|e| {
                    e.recs
                        .get(e.position(*ts, *rid))
                        .is_some_and(|r| r.rid == *rid)
                })
            });
        }
    }

    /// Drops the record (ts, rid) of `key` if it is still held (the budget).
    fn evict(&mut self, key: &StoredKey, h: u64, rid: u64, ts: i64) {
        let Ok(mut entry) = self.entities.find_entry(h, |e| &e.key == key) else {
            return;
        };
        let e = entry.get_mut();
        let i = e.position(ts, rid);
        if e.recs.get(i).is_some_and(|r| r.rid == rid)
            && let Some(old) = Arc::make_mut(&mut e.recs).remove(i)
        {
            self.bytes -= old.size();
            self.records -= 1;
            self.budget_evicted = self.budget_evicted.max(Some(old.ts));
        }
        if entry.get().recs.is_empty() {
            entry.remove();
        }
    }

    /// Removes every record of `key` (whose hash is `h`); returns them.
    /// Their ids left in the FIFO no longer match anything and are skipped.
    pub fn remove(&mut self, key: &str, h: u64) -> Vec<HotRecord> {
        let Ok(entry) = self.entities.find_entry(h, |e| e.key.is(key)) else {
            return Vec::new();
        };
        let (e, _) = entry.remove();
        for r in e.recs.iter() {
            self.bytes -= r.size();
            self.records -= 1;
        }
        Arc::unwrap_or_clone(e.recs).into()
    }

    /// Number of records held.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the shard holds no records.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Up to `limit` records of `key`, newest event time first (ties: latest arrival first).
    pub fn recent(&self, key: &str, h: u64, limit: usize) -> Vec<HotRecord> {
        let Some(e) = self.entities.find(h, |e| e.key.is(key)) else {
            return Vec::new();
        };
        e.recs.iter().rev().take(limit).cloned().collect()
    }

    /// The `limit` records of `key` with the latest event times, newest
    /// first, if the shard can vouch that they are exactly the key's
    /// latest among every record ever stored for it: every record pushed
    /// out (by the per-entity cap or by the byte budget, of any key) is
    /// strictly older than the oldest one returned, or fewer than `limit`
    /// exist and nothing was ever pushed out. `None` otherwise.
    pub fn recent_exact(&self, key: &str, h: u64, limit: usize) -> Option<Vec<HotRecord>> {
        let entity = self.entities.find(h, |e| e.key.is(key));
        let floor = self.budget_evicted.max(entity.and_then(|e| e.evicted));
        let v = self.recent(key, h, limit);
        match (floor, v.last()) {
            (None, _) => Some(v),
            (Some(f), Some(oldest)) if v.len() == limit && oldest.ts > f => Some(v),
            _ => None,
        }
    }

    /// The serialized form. Cheap: it shares every key's records, which
    /// the shard copies when it next changes that key.
    pub fn snap(&self) -> HotShardSnap {
        // Arrival order is kept by rid, which the FIFO rebuild relies on.
        HotShardSnap {
            next_rid: self.next_rid,
            budget_evicted: self.budget_evicted,
            entities: self
                .entities
                .iter()
                .map(|e| SnapEntity(e.key.clone(), e.recs.clone(), e.evicted))
                .collect(),
        }
    }

    /// Rebuilds a shard from its serialized form.
    pub fn from_snap(s: HotShardSnap, hasher: KeyHasher) -> HotShard {
        let mut shard = HotShard {
            next_rid: s.next_rid,
            budget_evicted: s.budget_evicted,
            ..HotShard::new(hasher.clone())
        };
        let mut order: Vec<(u64, StoredKey, u64, i64)> = Vec::new();
        for SnapEntity(k, recs, evicted) in s.entities {
            let h = hasher.hash(k.as_str());
            for r in recs.iter() {
                shard.bytes += r.size();
                shard.records += 1;
                order.push((r.rid, k.clone(), h, r.ts));
            }
            shard
                .entities
                .insert_unique(h, Entity::new(k, recs, evicted), |e| {
                    hasher.hash(e.key.as_str())
                });
        }
        order.sort_by_key(|(rid, ..)| *rid);
        shard.fifo = order
            .into_iter()
            .map(|(rid, k, h, ts)| (k, h, rid, ts))
            .collect();
        shard
    }

    /// Rebuilds the shards of one tier from a snapshot's shards. Keys hash
    /// with a seed chosen per process, so an entity may belong to another
    /// shard now: entities are dealt out again by `shard_of` of their new
    /// hash. Record ids stay unique per key, which is all eviction needs.
    pub fn redistribute(
        snaps: Vec<HotShardSnap>,
        n: usize,
        hasher: &KeyHasher,
        shard_of: impl Fn(u64, usize) -> usize,
    ) -> Vec<HotShard> {
        let next_rid = snaps.iter().map(|s| s.next_rid).max().unwrap_or(0);
        // Keys move between shards: each new shard takes the latest
        // budget eviction of all (conservative).
        let budget_evicted = snaps.iter().filter_map(|s| s.budget_evicted).max();
        let mut parts: Vec<HotShardSnap> = (0..n)
            .map(|_| HotShardSnap {
                next_rid,
                budget_evicted,
                entities: Vec::new(),
            })
            .collect();
        for e in snaps.into_iter().flat_map(|s| s.entities) {
            let i = shard_of(hasher.hash(e.0.as_str()), n);
            if let Some(p) = parts.get_mut(i) {
                p.entities.push(e);
            }
        }
        parts
            .into_iter()
            .map(|p| HotShard::from_snap(p, hasher.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64) -> Arc<[u8]> {
        let mut b = Vec::new();
        inferdb_types::codec::encode_row(&[inferdb_types::Value::Int(i)], &mut b);
        b.into()
    }

    fn push(s: &mut HotShard, key: &str, ts: i64, b: Arc<[u8]>, per: usize, budget: usize) {
        let h = s.hasher.hash(key);
        s.push(key, h, ts, b, per, budget);
    }

    fn recent(s: &HotShard, key: &str, limit: usize) -> Vec<HotRecord> {
        s.recent(key, s.hasher.hash(key), limit)
    }

    fn ts_of(v: Option<Vec<HotRecord>>) -> Option<Vec<i64>> {
        v.map(|v| v.iter().map(|r| r.ts).collect())
    }

    #[test]
    fn exact_recent_records_only_when_nothing_newer_was_pushed_out() {
        let mut s = HotShard::default();
        let exact = |s: &HotShard, key: &str, n| ts_of(s.recent_exact(key, s.hasher.hash(key), n));
        for ts in [10, 11, 12, 13] {
            push(&mut s, "a", ts, rec(ts), 4, usize::MAX);
        }
        // Nothing pushed out: any limit is exact, even past what is held.
        assert_eq!(exact(&s, "a", 10), Some(vec![13, 12, 11, 10]));
        assert_eq!(exact(&s, "b", 3), Some(vec![]));
        // A late event (ts 5) is the earliest of five: the cap of 4 drops
        // it, and the 4 latest stay exact.
        push(&mut s, "a", 5, rec(5), 4, usize::MAX);
        assert_eq!(exact(&s, "a", 4), Some(vec![13, 12, 11, 10]));
        assert_eq!(exact(&s, "a", 3), Some(vec![13, 12, 11]));
        // All five were asked for: 5 is gone, so no answer.
        assert_eq!(exact(&s, "a", 10), None);
        // A late event inside the window stays, the earliest goes.
        push(&mut s, "a", 12, rec(12), 4, usize::MAX);
        assert_eq!(exact(&s, "a", 4), Some(vec![13, 12, 12, 11]));
        push(&mut s, "a", 14, rec(14), 4, usize::MAX);
        assert_eq!(exact(&s, "a", 4), Some(vec![14, 13, 12, 12]));
        assert_eq!(exact(&s, "a", 5), None);
        // A budget eviction of another key makes short answers inexact.
        let mut s = HotShard::default();
        let one = rec(1).len() + 40;
        push(&mut s, "b", 100, rec(1), 10, 3 * one);
        push(&mut s, "a", 1, rec(1), 10, 3 * one);
        push(&mut s, "a", 2, rec(1), 10, 3 * one);
        assert_eq!(exact(&s, "a", 5), Some(vec![2, 1]));
        push(&mut s, "c", 50, rec(1), 10, 3 * one);
        // "b"'s record at 100 was pushed out: "a" may have lost one too.
        assert_eq!(exact(&s, "a", 5), None);
        assert_eq!(exact(&s, "c", 1), None);
        // What survives a snapshot.
        let back = HotShard::from_snap(s.snap(), s.hasher.clone());
        assert_eq!(exact(&back, "a", 5), None);
        assert_eq!(exact(&back, "a", 2), None);
    }

    #[test]
    fn keeps_the_newest_per_entity_newest_first() {
        let mut s = HotShard::default();
        for i in 0..10 {
            // out of order in event time: 3 arrives after 4
            let ts = if i == 3 { 5 } else { i };
            push(&mut s, "a", ts, rec(i), 4, usize::MAX);
        }
        let r = recent(&s, "a", 10);
        assert_eq!(r.iter().map(|r| r.ts).collect::<Vec<_>>(), vec![9, 8, 7, 6]);
        assert_eq!(recent(&s, "a", 2).len(), 2);
        assert!(recent(&s, "b", 2).is_empty());
    }

    #[test]
    fn memory_budget_drops_oldest_arrivals_across_entities() {
        let mut s = HotShard::default();
        let one = HotRecord {
            rid: 0,
            ts: 0,
            bytes: rec(0),
        }
        .size();
        for i in 0..100 {
            push(
                &mut s,
                if i % 2 == 0 { "a" } else { "b" },
                i,
                rec(i),
                1000,
                one * 10,
            );
        }
        assert!(s.bytes() <= one * 10);
        assert_eq!(s.len(), 10);
        let mut all: Vec<i64> = recent(&s, "a", 100).iter().map(|r| r.ts).collect();
        all.extend(recent(&s, "b", 100).iter().map(|r| r.ts));
        all.sort();
        assert_eq!(all, (90..100).collect::<Vec<_>>());
    }

    #[test]
    fn fifo_stays_bounded_under_the_per_entity_cap() {
        let mut s = HotShard::default();
        for i in 0..100_000 {
            push(&mut s, "hot", i, rec(i), 10, usize::MAX);
        }
        assert_eq!(s.len(), 10);
        assert!(s.fifo.len() <= 2048, "fifo grew to {}", s.fifo.len());
        // Every third record late (dropped at once, from the middle of the
        // arrival order): the FIFO still stays bounded, and the budget
        // still frees the records that remain.
        let mut s = HotShard::default();
        for i in 0..100_000i64 {
            let ts = if i % 3 == 0 { i - 1_000 } else { i };
            push(&mut s, "hot", ts, rec(i), 10, usize::MAX);
        }
        assert_eq!(s.len(), 10);
        assert!(s.fifo.len() <= 2048, "fifo grew to {}", s.fifo.len());
        let latest: Vec<i64> = recent(&s, "hot", 10).iter().map(|r| r.ts).collect();
        let mut want: Vec<i64> = (0..100_000i64)
            .map(|i| if i % 3 == 0 { i - 1_000 } else { i })
            .collect();
        want.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(latest, want[..10]);
        let one = rec(1).len() + 40;
        push(&mut s, "other", 0, rec(1), 10, 5 * one);
        assert_eq!(s.len(), 5);
        assert_eq!(s.bytes(), 5 * one);
    }

    #[test]
    fn snapshot_round_trip_keeps_order_and_bytes() {
        let mut s = HotShard::default();
        for i in 0..50 {
            push(&mut s, &format!("k{}", i % 7), i, rec(i), 5, usize::MAX);
        }
        let t = HotShard::from_snap(s.snap(), s.hasher.clone());
        assert_eq!(t.bytes(), s.bytes());
        assert_eq!(t.len(), s.len());
        for k in 0..7 {
            let key = format!("k{k}");
            let a: Vec<i64> = recent(&s, &key, 10).iter().map(|r| r.ts).collect();
            let b: Vec<i64> = recent(&t, &key, 10).iter().map(|r| r.ts).collect();
            assert_eq!(a, b);
        }
    }
}
