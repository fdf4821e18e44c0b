//! The hot tier: each entity's most recent records, in memory, for
//! `GET /v1/entities/{stream}/{key}/records`. A record is kept in its
//! encoded form (the bytes of its row in the WAL frame: one allocation,
//! about a third of the decoded size) and decoded when read.
//!
//! Bounded two ways: at most `per_entity` records per entity (older ones are
//! dropped first), and at most `budget_bytes` per shard in all; past the
//! budget the shard drops records oldest-arrival-first across its entities
//! (a FIFO of record ids). Dropped records are still in the log. One shard
//! is owned by the writer thread for changes; readers take its lock briefly.

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
    /// The row, encoded by [`inferdb_types::codec::encode_row`].
    pub bytes: Box<[u8]>,
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
    entities: HashTable<(Arc<str>, VecDeque<HotRecord>)>,
    fifo: VecDeque<(Arc<str>, u64, u64)>,
    next_rid: u64,
    bytes: usize,
    records: usize,
}

/// The serialized form of a shard.
#[derive(Debug, Serialize, Deserialize)]
pub struct HotShardSnap {
    next_rid: u64,
    entities: Vec<(String, Vec<HotRecord>)>,
}

impl HotShard {
    /// An empty shard whose keys hash with `hasher`.
    pub fn new(hasher: KeyHasher) -> HotShard {
        HotShard {
            hasher,
            ..HotShard::default()
        }
    }

    /// Adds a record for `key` (whose hash is `h`), then enforces both bounds.
    pub fn push(
        &mut self,
        key: &str,
        h: u64,
        ts: i64,
        bytes: Box<[u8]>,
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
            .entry(h, |(k, _)| k.as_ref() == key, |(k, _)| hasher.hash(k))
            .or_insert_with(|| (Arc::from(key), VecDeque::new()));
        let (k, q) = entry.into_mut();
        q.push_back(rec);
        while q.len() > per_entity.max(1) {
            if let Some(old) = q.pop_front() {
                self.bytes -= old.size();
                self.records -= 1;
            }
        }
        self.fifo.push_back((k.clone(), h, rid));
        while self.bytes > budget {
            let Some((k, h, rid)) = self.fifo.pop_front() else {
                break;
            };
            self.evict(&k, h, rid);
        }
        // Ids of records already dropped by the per-entity cap pile up in
        // the FIFO; compact when they outnumber the live records.
        if self.fifo.len() > 1024 && self.fifo.len() > 2 * self.records {
            let entities = &self.entities;
            self.fifo.retain(|(k, h, rid)| {
                entities
                    .find(*h, |(x, _)| x == k)
                    .and_then(|(_, q)| q.front())
                    .is_some_and(|f| f.rid <= *rid)
            });
        }
    }

    fn evict(&mut self, key: &Arc<str>, h: u64, rid: u64) {
        let Ok(mut entry) = self.entities.find_entry(h, |(k, _)| k == key) else {
            return;
        };
        if entry.get().1.front().is_some_and(|f| f.rid == rid) {
            if let Some(old) = entry.get_mut().1.pop_front() {
                self.bytes -= old.size();
                self.records -= 1;
            }
            if entry.get().1.is_empty() {
                entry.remove();
            }
        }
    }

    /// Removes every record of `key` (whose hash is `h`); returns them.
    /// Their ids left in the FIFO no longer match anything and are skipped.
    pub fn remove(&mut self, key: &str, h: u64) -> Vec<HotRecord> {
        let Ok(entry) = self.entities.find_entry(h, |(k, _)| k.as_ref() == key) else {
            return Vec::new();
        };
        let ((_, q), _) = entry.remove();
        for r in &q {
            self.bytes -= r.size();
            self.records -= 1;
        }
        q.into()
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
        let Some((_, q)) = self.entities.find(h, |(k, _)| k.as_ref() == key) else {
            return Vec::new();
        };
        let mut v: Vec<&HotRecord> = q.iter().collect();
        v.sort_by_key(|r| std::cmp::Reverse((r.ts, r.rid)));
        v.into_iter().take(limit).cloned().collect()
    }

    /// The serialized form.
    pub fn snap(&self) -> HotShardSnap {
        // Arrival order is kept by rid, which the FIFO rebuild relies on.
        HotShardSnap {
            next_rid: self.next_rid,
            entities: self
                .entities
                .iter()
                .map(|(k, q)| (k.to_string(), q.iter().cloned().collect()))
                .collect(),
        }
    }

    /// Rebuilds a shard from its serialized form.
    pub fn from_snap(s: HotShardSnap, hasher: KeyHasher) -> HotShard {
        let mut shard = HotShard {
            next_rid: s.next_rid,
            ..HotShard::new(hasher.clone())
        };
        let mut order: Vec<(u64, Arc<str>, u64)> = Vec::new();
        for (k, recs) in s.entities {
            let k: Arc<str> = Arc::from(k.as_str());
            let h = hasher.hash(&k);
            for r in &recs {
                shard.bytes += r.size();
                shard.records += 1;
                order.push((r.rid, k.clone(), h));
            }
            shard
                .entities
                .insert_unique(h, (k, recs.into()), |(k, _)| hasher.hash(k));
        }
        order.sort_by_key(|(rid, _, _)| *rid);
        shard.fifo = order.into_iter().map(|(rid, k, h)| (k, h, rid)).collect();
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
        let mut parts: Vec<HotShardSnap> = (0..n)
            .map(|_| HotShardSnap {
                next_rid,
                entities: Vec::new(),
            })
            .collect();
        for (k, recs) in snaps.into_iter().flat_map(|s| s.entities) {
            let i = shard_of(hasher.hash(&k), n);
            if let Some(p) = parts.get_mut(i) {
                p.entities.push((k, recs));
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

    fn rec(i: i64) -> Box<[u8]> {
        let mut b = Vec::new();
        inferdb_types::codec::encode_row(&[inferdb_types::Value::Int(i)], &mut b);
        b.into_boxed_slice()
    }

    fn push(s: &mut HotShard, key: &str, ts: i64, b: Box<[u8]>, per: usize, budget: usize) {
        let h = s.hasher.hash(key);
        s.push(key, h, ts, b, per, budget);
    }

    fn recent(s: &HotShard, key: &str, limit: usize) -> Vec<HotRecord> {
        s.recent(key, s.hasher.hash(key), limit)
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
