#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Engine-level behaviour: ingest → features equal a naive recomputation;
//! restart from snapshot + log; spec changes; late events; dead letters.

use inferdb_engine::{BodyFormat, Engine, EngineConfig, FsyncPolicy, InferenceCommit};
use inferdb_types::{Catalog, Value};
use std::collections::BTreeMap;

const SPEC: &str = include_str!("../../../examples/payments/spec.toml");

/// A deterministic little stream: (user, ts ms, amount, merchant).
fn events(n: usize, seed: u64) -> Vec<(String, i64, f64, String)> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t = 1_767_225_600_000i64;
    (0..n)
        .map(|_| {
            t += (next() % 20_000) as i64; // up to 20 s between events
            let jitter = if next() % 10 == 0 {
                (next() % 4_000) as i64
            } else {
                0
            };
            let user = format!("user_{:06}", next() % 20);
            let amount = (next() % 100_000) as f64 / 100.0;
            let merchant = format!("m_{:04}", next() % 30);
            (user, t - jitter, amount, merchant)
        })
        .collect()
}

fn ndjson(evs: &[(String, i64, f64, String)]) -> String {
    evs.iter()
        .map(|(u, t, a, m)| {
            format!(
                r#"{{"entity_id":"{u}","ts":{t},"amount":{a},"merchant_id":"{m}","category":"fuel","country":"FR","channel":"web","card_present":false}}"#
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.spec = Some(Catalog::from_toml(SPEC).unwrap().spec);
    c.fsync = FsyncPolicy::Batch;
    c.shards = 8;
    c
}

/// Naive user_txn features at the final watermark, from the events the
/// engine stored on time (lateness 5 s, applied in arrival order).
fn naive(evs: &[(String, i64, f64, String)]) -> (i64, BTreeMap<String, Vec<Value>>) {
    let mut wm = i64::MIN;
    let mut kept: Vec<&(String, i64, f64, String)> = Vec::new();
    for e in evs {
        if wm != i64::MIN && e.1 < wm - 5_000 {
            continue;
        }
        wm = wm.max(e.1);
        kept.push(e);
    }
    let t = wm;
    let mut out = BTreeMap::new();
    let users: std::collections::BTreeSet<&String> = kept.iter().map(|e| &e.0).collect();
    for u in users {
        out.insert(u.clone(), naive_user(&kept, u, t));
    }
    (t, out)
}

/// Naive user_txn features of `u` at `t` over `kept` (events with time
/// after `t` are ignored).
fn naive_user(kept: &[&(String, i64, f64, String)], u: &str, t: i64) -> Vec<Value> {
    let mine: Vec<_> = kept.iter().filter(|e| e.0 == u && e.1 <= t).collect();
    let win = |w: i64| {
        mine.iter()
            .filter(move |e| e.1 > t - w && e.1 <= t)
            .collect::<Vec<_>>()
    };
    let (m5, h1, d1) = (win(300_000), win(3_600_000), win(86_400_000));
    let amounts: Vec<f64> = d1.iter().map(|e| e.2).collect();
    let n = amounts.len() as f64;
    let avg = amounts.iter().sum::<f64>() / n;
    let var = amounts.iter().map(|a| (a - avg) * (a - avg)).sum::<f64>() / n;
    let distinct: std::collections::BTreeSet<&String> = d1.iter().map(|e| &e.3).collect();
    let opt = |ok: bool, v: f64| if ok { Value::Float(v) } else { Value::Null };
    // last by event time, ties to the later arrival
    let last = mine
        .iter()
        .enumerate()
        .max_by_key(|(i, e)| (e.1, *i))
        .map(|x| x.1);
    vec![
        Value::Int(m5.len() as i64),
        Value::Int(h1.len() as i64),
        Value::Int(d1.len() as i64),
        Value::Float(h1.iter().map(|e| e.2).sum()),
        opt(n > 0.0, avg),
        opt(n > 0.0, amounts.iter().cloned().fold(f64::MIN, f64::max)),
        opt(n > 0.0, amounts.iter().cloned().fold(f64::MAX, f64::min)),
        opt(n > 0.0, var.sqrt()),
        Value::Int(distinct.len() as i64),
        last.map_or(Value::Null, |l| Value::Float(l.2)),
        last.map_or(Value::Null, |l| Value::Float((t - l.1) as f64 / 1000.0)),
    ]
}

fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

fn check_against_naive(engine: &Engine, evs: &[(String, i64, f64, String)]) {
    let (t, expected) = naive(evs);
    let keys: Vec<&str> = expected.keys().map(String::as_str).collect();
    let rows = engine.read_features("user_txn", &keys, None).unwrap();
    for (k, row) in keys.iter().zip(rows) {
        assert!(row.found, "{k}");
        assert_eq!(row.as_of, Some(t));
        let want = &expected[*k];
        for (i, (a, b)) in row.values.iter().zip(want).enumerate() {
            assert!(close(a, b), "{k} feature {i}: engine {a:?} naive {b:?}");
        }
    }
}

#[test]
fn features_equal_naive_recomputation_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let evs = events(3_000, 7);
    let engine = Engine::open(config(dir.path())).unwrap();
    for chunk in evs.chunks(500) {
        let out = engine
            .ingest_blocking("transactions", ndjson(chunk).as_bytes(), BodyFormat::Auto)
            .unwrap();
        assert_eq!((out.accepted, out.rejected.len()), (chunk.len(), 0));
    }
    check_against_naive(&engine, &evs);
    let stats = engine.stream_stats("transactions").unwrap();
    assert_eq!(stats.events_stored, 3_000);
    let late = stats.events_late;
    engine.shutdown();

    // Clean restart: from the shutdown snapshot.
    let engine = Engine::open(config(dir.path())).unwrap();
    assert!(engine.recovery().snapshot_seq.is_some());
    assert_eq!(engine.recovery().frames_replayed, 0);
    check_against_naive(&engine, &evs);
    assert_eq!(
        engine.stream_stats("transactions").unwrap().events_late,
        late
    );

    // More events after the snapshot, then a restart without a final
    // snapshot (the engine is leaked: its writer never runs shutdown).
    let more = events(1_000, 8)
        .into_iter()
        .map(|(u, t, a, m)| (u, t + 60_000_000, a, m))
        .collect::<Vec<_>>();
    engine
        .ingest_blocking("transactions", ndjson(&more).as_bytes(), BodyFormat::Auto)
        .unwrap();
    engine.abort();
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(
        engine.recovery().frames_replayed,
        1,
        "{:?}",
        engine.recovery()
    );
    let all: Vec<_> = evs.iter().cloned().chain(more).collect();
    check_against_naive(&engine, &all);
    assert_eq!(
        engine.stream_stats("transactions").unwrap().events_stored,
        4_000
    );
    engine.shutdown();
}

#[test]
fn bad_records_become_dead_letters_and_good_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let good = ndjson(&events(3, 1));
    let body = format!("{good}\n{{\"entity_id\":\"u\",\"ts\":5,\"amount\":-1}}\nnot json\n");
    let out = engine
        .ingest_blocking("transactions", body.as_bytes(), BodyFormat::Auto)
        .unwrap();
    assert_eq!(out.accepted, 3);
    assert_eq!(out.rejected.len(), 2);
    assert_eq!(out.rejected[0].index, 3);
    let dl = engine.dead_letters("transactions", 10).unwrap();
    assert_eq!(dl.len(), 2);
    assert!(dl[0].raw.contains("not json"));
    let s = engine.stream_stats("transactions").unwrap();
    assert_eq!((s.events_stored, s.events_rejected), (3, 2));
    engine.shutdown();
    let engine = Engine::open(config(dir.path())).unwrap();
    let s = engine.stream_stats("transactions").unwrap();
    assert_eq!((s.events_stored, s.events_rejected), (3, 2));
    assert_eq!(engine.dead_letters("transactions", 10).unwrap().len(), 2);
    assert!(
        engine
            .ingest_blocking("nope", b"{}", BodyFormat::Auto)
            .is_err()
    );
}

#[test]
fn late_events_are_stored_but_do_not_change_windows() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let t0 = 1_767_225_600_000i64;
    let evs = vec![
        ("user_a".to_string(), t0 + 100_000, 10.0, "m_1".to_string()),
        ("user_a".to_string(), t0 + 96_000, 20.0, "m_2".to_string()), // 4 s late: counts
        ("user_a".to_string(), t0 + 90_000, 40.0, "m_3".to_string()), // 10 s late: late
    ];
    engine
        .ingest_blocking("transactions", ndjson(&evs).as_bytes(), BodyFormat::Auto)
        .unwrap();
    let s = engine.stream_stats("transactions").unwrap();
    assert_eq!((s.events_stored, s.events_late), (3, 1));
    let r = &engine.read_features("user_txn", &["user_a"], None).unwrap()[0];
    assert_eq!(r.values[0], Value::Int(2));
    assert_eq!(r.values[3], Value::Float(30.0));
    assert_eq!(r.values[9], Value::Float(10.0), "last = latest event time");
    // The late record is still in the entity's recent records.
    assert_eq!(
        engine
            .recent_records("transactions", "user_a", 10)
            .unwrap()
            .len(),
        3
    );
    // as_of in the future slides the windows; before the watermark is refused.
    let later = engine
        .read_features("user_txn", &["user_a"], Some(t0 + 100_000 + 301_000))
        .unwrap();
    assert_eq!(
        later[0].values[0],
        Value::Int(0),
        "5 min window is empty 5 min later"
    );
    assert_eq!(later[0].values[1], Value::Int(2));
    assert!(
        engine
            .read_features("user_txn", &["user_a"], Some(t0))
            .is_err()
    );
    let missing = &engine.read_features("user_txn", &["nobody"], None).unwrap()[0];
    assert!(!missing.found);
    assert_eq!(missing.values[0], Value::Int(0));
    assert_eq!(missing.values[4], Value::Null);
}

#[test]
fn spec_changes_rebuild_views_and_stream_changes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let evs = events(500, 3);
    let engine = Engine::open(config(dir.path())).unwrap();
    engine
        .ingest_blocking("transactions", ndjson(&evs).as_bytes(), BodyFormat::Auto)
        .unwrap();
    engine.shutdown();

    // A new view over the same stream is built from the log.
    let spec2 = format!(
        "{SPEC}\n[[views]]\nname = \"by_merchant_sum\"\nstream = \"transactions\"\nkey = \"merchant_id\"\n\
         features = [{{ name = \"n\", agg = \"count\" }}]\n"
    );
    let mut c = config(dir.path());
    c.spec = Some(Catalog::from_toml(&spec2).unwrap().spec);
    let engine = Engine::open(c).unwrap();
    assert!(
        engine.recovery().snapshot_seq.is_none(),
        "old snapshot must not be used"
    );
    let keys: Vec<String> = (0..30).map(|i| format!("m_{i:04}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let total: i64 = engine
        .read_features("by_merchant_sum", &refs, None)
        .unwrap()
        .iter()
        .map(|r| match r.values[0] {
            Value::Int(n) => n,
            _ => 0,
        })
        .sum();
    let stored = engine.stream_stats("transactions").unwrap();
    assert_eq!(total as u64, stored.events_stored - stored.events_late);
    engine.shutdown();

    // Reopening without a spec uses the persisted one.
    let mut c = config(dir.path());
    c.spec = None;
    let engine = Engine::open(c).unwrap();
    assert!(engine.catalog().view_index("by_merchant_sum").is_some());
    engine.shutdown();

    // Changing a stream's fields is refused with a clear message.
    let spec3 = SPEC.replace("{ name = \"country\", type = \"string\" },", "");
    let mut c = config(dir.path());
    c.spec = Some(Catalog::from_toml(&spec3).unwrap().spec);
    let err = Engine::open(c).err().expect("must refuse").to_string();
    assert!(err.contains("transactions"), "{err}");
}

#[test]
fn torn_tail_of_the_log_is_cut_and_the_rest_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    for chunk in events(300, 5).chunks(100) {
        engine
            .ingest_blocking("transactions", ndjson(chunk).as_bytes(), BodyFormat::Auto)
            .unwrap();
    }
    engine.abort();
    // Append half a frame of garbage to the last segment.
    let wal = dir.path().join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let mut bytes = std::fs::read(last).unwrap();
    bytes.extend_from_slice(&[0x55; 37]);
    std::fs::write(last, bytes).unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    assert!(engine.recovery().truncated_bytes > 0);
    assert_eq!(
        engine.stream_stats("transactions").unwrap().events_stored,
        300
    );
    engine
        .ingest_blocking(
            "transactions",
            ndjson(&events(10, 6)).as_bytes(),
            BodyFormat::Auto,
        )
        .unwrap();
    engine.shutdown();
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(
        engine.stream_stats("transactions").unwrap().events_stored,
        310
    );
}

#[test]
fn large_batches_applied_on_two_threads_equal_naive_recomputation() {
    // Groups of 256 rows or more are applied on two threads.
    let dir = tempfile::tempdir().unwrap();
    let evs = events(6_000, 11);
    let engine = Engine::open(config(dir.path())).unwrap();
    for chunk in evs.chunks(3_000) {
        let out = engine
            .ingest_blocking("transactions", ndjson(chunk).as_bytes(), BodyFormat::Auto)
            .unwrap();
        assert_eq!(out.accepted, 3_000);
    }
    check_against_naive(&engine, &evs);
    assert_eq!(
        engine
            .recent_records("transactions", "user_000003", 5)
            .unwrap()
            .len(),
        5
    );
    engine.shutdown();
}

/// [`config`] with an allowed lateness of two days: no event of
/// [`events`] is late, whatever order concurrent clients deliver them in.
fn config_late_48h(dir: &std::path::Path) -> EngineConfig {
    let spec = SPEC.replacen("lateness = \"5s\"", "lateness = \"48h\"", 1);
    let mut cfg = config(dir);
    cfg.spec = Some(Catalog::from_toml(&spec).unwrap().spec);
    cfg
}

/// Four clients send `evs` in batches of `batch` at once (client i takes
/// every fourth batch from the i-th); each batch must be accepted whole.
fn ingest_from_four_clients(engine: &Engine, evs: &[(String, i64, f64, String)], batch: usize) {
    std::thread::scope(|s| {
        for client in 0..4 {
            s.spawn(move || {
                for chunk in evs.chunks(batch).skip(client).step_by(4) {
                    let out = engine
                        .ingest_blocking("transactions", ndjson(chunk).as_bytes(), BodyFormat::Auto)
                        .unwrap();
                    assert_eq!(out.accepted, chunk.len());
                }
            });
        }
    });
}

#[test]
fn concurrent_large_batches_through_the_fsync_pipeline_equal_naive_recomputation() {
    // Four clients send batches of 300 rows at once: groups large enough
    // that the next group's fsync runs on the sync thread while the
    // previous one is applied. With a lateness of two days no event is late
    // whatever the arrival order, so the windows must equal a naive
    // recomputation over every event, live and after a restart.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_late_48h(dir.path());
    let mut evs = events(12_000, 23);
    let engine = Engine::open(cfg.clone()).unwrap();
    ingest_from_four_clients(&engine, &evs, 300);
    let stats = engine.stream_stats("transactions").unwrap();
    assert_eq!((stats.events_stored, stats.events_late), (12_000, 0));
    evs.sort_by_key(|e| e.1);
    check_against_naive(&engine, &evs);
    engine.shutdown();
    let engine = Engine::open(cfg).unwrap();
    check_against_naive(&engine, &evs);
    engine.shutdown();
}

#[test]
fn snapshots_written_while_clients_ingest_restore_exactly_after_a_crash() {
    // Snapshots every 10 ms while four clients ingest: the writer only
    // captures the state and goes on applying groups while the snapshot
    // thread encodes it, so entities change under every snapshot being
    // written. After a crash, the newest snapshot plus the log after its
    // seq must give exactly the windows and counters of every event: a
    // snapshot that saw changes after its seq would count them twice.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_late_48h(dir.path());
    cfg.snapshot_interval = std::time::Duration::from_millis(10);
    let mut evs = events(12_000, 29);
    let engine = Engine::open(cfg.clone()).unwrap();
    ingest_from_four_clients(&engine, &evs, 100);
    evs.sort_by_key(|e| e.1);
    check_against_naive(&engine, &evs);
    engine.abort();
    let engine = Engine::open(cfg).unwrap();
    let recovery = engine.recovery();
    assert!(recovery.snapshot_seq.is_some(), "{recovery:?}");
    let stats = engine.stream_stats("transactions").unwrap();
    assert_eq!((stats.events_stored, stats.events_late), (12_000, 0));
    check_against_naive(&engine, &evs);
    engine.shutdown();
}

#[test]
fn a_full_queue_answers_overloaded_and_loses_nothing_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.queue_depth = 1;
    let engine = Engine::open(cfg).unwrap();
    let body = ndjson(&events(2_000, 21));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (engine, body, barrier) = (engine.clone(), body.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                engine.ingest_blocking("transactions", body.as_bytes(), BodyFormat::Auto)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let overloaded = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.kind() == inferdb_types::ErrorKind::Overloaded))
        .count();
    assert!(ok >= 1, "{results:?}");
    assert!(
        overloaded >= 1,
        "8 simultaneous batches through a queue of 1 must overflow"
    );
    assert_eq!(ok + overloaded, 8);
    assert_eq!(
        engine.stream_stats("transactions").unwrap().events_stored,
        2_000 * ok as u64
    );
    // The queue drains: the next batch is admitted.
    engine
        .ingest_blocking("transactions", body.as_bytes(), BodyFormat::Auto)
        .unwrap();
}

fn inference_row(i: usize, t: i64) -> Vec<Value> {
    vec![
        Value::Str(format!("inf-{i:04}").into()),
        Value::Str(format!("user_{:02}", i % 3).into()),
        Value::Ts(t),
        Value::Str("fraud_ensemble".into()),
        Value::Int(1),
        Value::Str(format!("{{\"amount\":{i}}}").into()),
        Value::Str("[0.25,0.75]".into()),
        Value::Float(0.75),
        Value::Float(0.5),
    ]
}

#[test]
fn inference_records_are_found_by_id_and_entity_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_767_225_600_000i64;
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        for i in 0..30 {
            engine
                .submit_rows(
                    inferdb_types::INFERENCE_STREAM,
                    vec![inference_row(i, t0 + i as i64)],
                )
                .unwrap()
                .wait_blocking()
                .unwrap();
        }
        // A row that does not fit the stream is refused whole.
        let mut bad = inference_row(99, t0);
        bad[4] = Value::Str("one".into());
        let Err(e) = engine.submit_rows(inferdb_types::INFERENCE_STREAM, vec![bad]) else {
            panic!("a wrongly typed row was accepted");
        };
        assert!(e.to_string().contains("model_version"), "{e}");
        let r = engine
            .record_by_id(inferdb_types::INFERENCE_STREAM, "inf-0007")
            .unwrap()
            .unwrap();
        assert_eq!(r["entity_id"], "user_01");
        assert_eq!(r["confidence"], 0.75);
        engine.shutdown();
    }
    // Restart from the snapshot taken at shutdown, then from the log alone.
    for drop_snapshots in [false, true] {
        if drop_snapshots {
            std::fs::remove_dir_all(dir.path().join("snapshots")).unwrap();
        }
        let engine = Engine::open(config(dir.path())).unwrap();
        let stats = engine
            .stream_stats(inferdb_types::INFERENCE_STREAM)
            .unwrap();
        assert_eq!(stats.events_stored, 30);
        for i in [0usize, 13, 29] {
            let r = engine
                .record_by_id(inferdb_types::INFERENCE_STREAM, &format!("inf-{i:04}"))
                .unwrap()
                .unwrap_or_else(|| panic!("record {i} lost (snapshots dropped: {drop_snapshots})"));
            assert_eq!(r["features"], format!("{{\"amount\":{i}}}"));
        }
        assert!(
            engine
                .record_by_id(inferdb_types::INFERENCE_STREAM, "inf-9999")
                .unwrap()
                .is_none()
        );
        let recent = engine
            .recent_records(inferdb_types::INFERENCE_STREAM, "user_02", 100)
            .unwrap();
        assert_eq!(recent.len(), 10);
        assert_eq!(recent[0]["inference_id"], "inf-0029");
        engine.shutdown();
    }
}

/// `record_inference` under both commit modes: `sync` returns with the
/// record readable; `async` may return first, yet every record is logged,
/// applied and there after a restart, even with a writer queue of one
/// batch (async records wait outside it); `async` with no room for
/// waiting records waits as `sync` does.
#[test]
fn record_inference_waits_as_its_commit_mode_says_and_loses_nothing_on_shutdown() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let t0 = 1_767_225_600_000i64;
    let readable = |engine: &Engine, i: usize| {
        engine
            .record_by_id(inferdb_types::INFERENCE_STREAM, &format!("inf-{i:04}"))
            .unwrap()
            .is_some()
    };
    // (mode, queue depth, async records at most, whether each call returns
    // with the record readable)
    let cases = [
        (InferenceCommit::Sync, 256, 4096, true),
        (InferenceCommit::Async, 256, 4096, false),
        (InferenceCommit::Async, 1, 4096, false),
        (InferenceCommit::Async, 256, 0, true),
    ];
    for (mode, depth, max, readable_at_once) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.inference_commit = mode;
        cfg.queue_depth = depth;
        cfg.async_records_max = max;
        {
            let engine = Engine::open(cfg.clone()).unwrap();
            for i in 0..200 {
                rt.block_on(engine.record_inference(inference_row(i, t0 + i as i64)))
                    .unwrap();
                if readable_at_once {
                    let stored = engine
                        .stream_stats(inferdb_types::INFERENCE_STREAM)
                        .unwrap()
                        .events_stored;
                    assert_eq!(stored, i as u64 + 1, "{mode} depth {depth}");
                    assert!(
                        readable(&engine, i),
                        "{mode} depth {depth}: record {i} not readable on return"
                    );
                }
            }
            // A bad row is refused at once in every mode.
            let mut bad = inference_row(999, t0);
            bad[4] = Value::Str("one".into());
            let e = rt.block_on(engine.record_inference(bad)).unwrap_err();
            assert!(e.to_string().contains("model_version"), "{e}");
            // Async records become readable once the writer has them durable.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while engine
                .stream_stats(inferdb_types::INFERENCE_STREAM)
                .unwrap()
                .events_stored
                < 200
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{mode}: records never applied"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            engine.shutdown();
        }
        let engine = Engine::open(cfg).unwrap();
        let stats = engine
            .stream_stats(inferdb_types::INFERENCE_STREAM)
            .unwrap();
        assert_eq!(stats.events_stored, 200, "{mode} depth {depth}");
        for i in [0usize, 117, 199] {
            assert!(
                readable(&engine, i),
                "{mode} depth {depth}: record {i} lost"
            );
        }
        engine.shutdown();
    }
}

#[test]
fn inference_commit_parses_its_names_and_refuses_others() {
    for (text, want) in [
        ("sync", InferenceCommit::Sync),
        (" ASYNC ", InferenceCommit::Async),
    ] {
        assert_eq!(text.parse::<InferenceCommit>().unwrap(), want);
    }
    assert_eq!(InferenceCommit::default(), InferenceCommit::Sync);
    let e = "later".parse::<InferenceCommit>().unwrap_err();
    assert!(e.contains("later") && e.contains("sync or async"), "{e}");
}

/// (count, sum of amount in cents) of `transactions` and the dead-letter
/// count, by SQL over the history.
fn history_census(engine: &Engine) -> (i64, i64, i64) {
    use inferdb_engine::arrow::array::AsArray;
    use inferdb_engine::arrow::datatypes::Int64Type;
    assert!(engine.history_caught_up());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let one = |sql: &str| -> i64 {
        let r = rt
            .block_on(engine.history().query(sql, &Default::default()))
            .unwrap();
        r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    (
        one("SELECT count(*) FROM transactions"),
        one("SELECT CAST(coalesce(sum(round(amount * 100)), 0) AS BIGINT) FROM transactions"),
        one("SELECT count(*) FROM dead_letters WHERE stream = 'transactions'"),
    )
}

#[test]
fn history_holds_every_event_once_across_flushes_a_crash_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.history_flush_rows = 700;
    cfg.history_flush_interval = std::time::Duration::from_millis(300);
    let evs = events(6000, 9);
    let cents: i64 = evs.iter().map(|e| (e.2 * 100.0).round() as i64).sum();
    let engine = Engine::open(cfg.clone()).unwrap();
    for (i, chunk) in evs.chunks(300).enumerate() {
        let body = format!(
            "{}\n{{\"entity_id\":\"bad\",\"ts\":1,\"amount\":-{i}}}\n",
            ndjson(chunk)
        );
        let out = engine
            .ingest_blocking("transactions", body.as_bytes(), BodyFormat::Auto)
            .unwrap();
        assert_eq!(out.rejected.len(), 1);
        if i % 5 == 4 {
            // Flush in the middle of the ingest (the background flusher
            // may too).
            assert!(engine.history_caught_up());
            engine.history().flush().unwrap();
        }
    }
    assert_eq!(history_census(&engine), (6000, cents, 20));
    let stats = engine.history().stats();
    assert!(stats[0].files > 0, "some rows were flushed: {stats:?}");
    assert!(stats[0].head_rows > 0 || stats[0].file_rows == 6000);
    // A crash: whatever is not in Parquet yet comes back from the log, once.
    engine.abort();
    drop(engine);
    let engine = Engine::open(cfg.clone()).unwrap();
    assert_eq!(history_census(&engine), (6000, cents, 20));
    engine.shutdown();
    let engine = Engine::open(cfg).unwrap();
    assert_eq!(history_census(&engine), (6000, cents, 20));
    let stats = engine.history().stats();
    assert_eq!(stats[0].file_rows, 6000, "shutdown flushed everything");
    engine.shutdown();
}

/// Every row of a query as strings (floats marked with a leading `#f:`, see
/// [`same_rows`]).
fn rows_of(engine: &Engine, sql: &str) -> Vec<Vec<String>> {
    result_rows(&files_result(engine, sql))
}

/// A query's answer from the history alone (never the hot tier).
fn files_result(engine: &Engine, sql: &str) -> inferdb_engine::QueryResult {
    // A query sees what is acknowledged once the history caught up (the
    // server's /v1/sql waits for it the same way).
    assert!(engine.history_caught_up());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt
        .block_on(engine.history().query(sql, &Default::default()))
        .unwrap();
    assert!(!r.from_memory);
    r
}

/// A query through `Engine::query` (which may answer from the hot tier):
/// its rows, and whether they came from memory.
fn engine_rows(engine: &Engine, sql: &str) -> (Vec<Vec<String>>, bool) {
    assert!(engine.history_caught_up());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(engine.query(sql, &Default::default())).unwrap();
    (result_rows(&r), r.from_memory)
}

fn result_rows(r: &inferdb_engine::QueryResult) -> Vec<Vec<String>> {
    use inferdb_engine::arrow::array::{Array, AsArray};
    use inferdb_engine::arrow::datatypes::{DataType, Float64Type};
    let mut out = Vec::new();
    for b in &r.batches {
        for i in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(i) {
                            "null".to_string()
                        } else if c.data_type() == &DataType::Float64 {
                            format!("#f:{}", c.as_primitive::<Float64Type>().value(i))
                        } else {
                            inferdb_engine::arrow::util::display::array_value_to_string(c, i)
                                .unwrap()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn continuous_aggregates_equal_the_same_query_over_raw_history() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        "{SPEC}\n[[aggregates]]\nname = \"merchant_1m\"\nstream = \"transactions\"\nbucket = \"1m\"\n\
         group_by = [\"merchant_id\", \"entity_id\"]\ncolumns = [\n\
         {{ name = \"n\", agg = \"count\" }},\n{{ name = \"lo\", agg = \"min\", field = \"amount\" }},\n\
         {{ name = \"hi\", agg = \"max\", field = \"amount\" }},\n{{ name = \"last_ts\", agg = \"max\", field = \"ts\" }},\n]\n"
    );
    let mut cfg = config(dir.path());
    cfg.spec = Some(Catalog::from_toml(&spec).unwrap().spec);
    cfg.history_flush_rows = 1500;
    cfg.history_flush_interval = std::time::Duration::from_millis(200);
    // Out of order by up to 4 s, some beyond the lateness: all are counted.
    let evs = events(4000, 3);
    let engine = Engine::open(cfg.clone()).unwrap();
    // Besides the background flusher, flush here for certain.
    ingest_flushing_after(&engine, &evs, 400, 4);
    let raw_5m = "SELECT time_bucket(INTERVAL '5 minutes', ts) AS bucket, category, count(*), \
                  sum(amount), avg(amount), max(amount) FROM transactions \
                  GROUP BY bucket, category ORDER BY bucket, category";
    let raw_1m = "SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, merchant_id, entity_id, \
                  count(*), min(amount), max(amount), max(ts) FROM transactions \
                  GROUP BY bucket, merchant_id, entity_id ORDER BY bucket, merchant_id, entity_id";
    let check = |engine: &Engine| {
        assert!(engine.history_caught_up());
        let a = rows_of(
            engine,
            "SELECT * FROM payments_5m ORDER BY bucket, category",
        );
        assert!(a.len() > 100, "{}", a.len());
        same_rows(&a, &rows_of(engine, raw_5m));
        let b = rows_of(
            engine,
            "SELECT * FROM merchant_1m ORDER BY bucket, merchant_id, entity_id",
        );
        same_rows(&b, &rows_of(engine, raw_1m));
        let total: i64 = a.iter().map(|r| r[2].parse::<i64>().unwrap()).sum();
        assert_eq!(total, 4000);
    };
    check(&engine);
    assert!(engine.history().stats()[0].files > 0);
    engine.abort();
    drop(engine);
    let engine = Engine::open(cfg).unwrap();
    check(&engine);
    engine.shutdown();
}

#[test]
fn point_in_time_features_reproduce_online_reads_and_a_naive_recomputation() {
    // An in-order stream (strictly increasing times): every online read
    // made during the ingest is reproduced exactly by the export.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.history_flush_rows = 800;
    cfg.history_flush_interval = std::time::Duration::from_millis(200);
    let mut evs = events(3000, 21);
    for (i, e) in evs.iter_mut().enumerate() {
        e.1 = 1_767_225_600_000 + i as i64 * 7_000;
    }
    let engine = Engine::open(cfg).unwrap();
    let users = ["user_000001", "user_000002", "user_000007", "user_999999"];
    let merchants = ["m_0003", "m_0011"];
    let mut seen_users = Vec::new();
    let mut seen_merchants = Vec::new();
    for (i, chunk) in evs.chunks(150).enumerate() {
        engine
            .ingest_blocking("transactions", ndjson(chunk).as_bytes(), BodyFormat::Auto)
            .unwrap();
        for (k, r) in users
            .iter()
            .zip(engine.read_features("user_txn", &users, None).unwrap())
        {
            seen_users.push((k.to_string(), r));
        }
        for (k, r) in merchants.iter().zip(
            engine
                .read_features("merchant_txn", &merchants, None)
                .unwrap(),
        ) {
            seen_merchants.push((k.to_string(), r));
        }
        if i % 6 == 5 {
            // Besides the background flusher, flush here for certain.
            assert!(engine.history_caught_up());
            engine.history().flush().unwrap();
        }
    }
    assert!(
        engine.history().stats()[0].files > 0,
        "part of it is in Parquet"
    );
    for (view, seen) in [("user_txn", &seen_users), ("merchant_txn", &seen_merchants)] {
        let reqs: Vec<(String, i64)> = seen
            .iter()
            .map(|(k, r)| (k.clone(), r.as_of.unwrap()))
            .collect();
        let got = engine.features_at(view, &reqs).unwrap();
        for ((k, r), g) in seen.iter().zip(&got) {
            assert_eq!(&r.values, g, "{view} {k} at {:?}", r.as_of);
        }
    }
    engine.shutdown();

    // Out of order: the export counts every stored event with time <= t.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let evs = events(2000, 4);
    let mut seen = std::collections::HashSet::new();
    let evs: Vec<_> = evs
        .into_iter()
        .filter(|e| seen.insert((e.0.clone(), e.1)))
        .collect();
    engine
        .ingest_blocking("transactions", ndjson(&evs).as_bytes(), BodyFormat::Auto)
        .unwrap();
    let kept: Vec<&(String, i64, f64, String)> = evs.iter().collect();
    let mut reqs = Vec::new();
    for (i, e) in evs.iter().enumerate().step_by(37) {
        reqs.push((e.0.clone(), e.1 + (i as i64 % 3) * 1_000));
        reqs.push(("user_000003".to_string(), e.1));
    }
    let got = engine.features_at("user_txn", &reqs).unwrap();
    for ((u, t), g) in reqs.iter().zip(&got) {
        let want = naive_user(&kept, u, *t);
        for (i, (a, b)) in g.iter().zip(&want).enumerate() {
            assert!(
                close(a, b),
                "{u} at {t} feature {i}: export {a:?} naive {b:?}"
            );
        }
    }
    engine.shutdown();
}

/// Rows equal, floats within 1e-9 relative (sums added in another order).
fn same_rows(a: &[Vec<String>], b: &[Vec<String>]) {
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(b) {
        assert_eq!(ra.len(), rb.len());
        for (x, y) in ra.iter().zip(rb) {
            match (x.strip_prefix("#f:"), y.strip_prefix("#f:")) {
                (Some(x), Some(y)) => {
                    let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                    assert!(
                        (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                        "{ra:?} vs {rb:?}"
                    );
                }
                _ => assert_eq!(x, y, "{ra:?} vs {rb:?}"),
            }
        }
    }
}

/// The count of a one-number query.
fn count_of(engine: &Engine, sql: &str) -> i64 {
    rows_of(engine, sql)[0][0].parse().unwrap()
}

#[test]
fn an_erased_entity_is_gone_from_everything_and_stays_gone_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.history_flush_rows = 500;
    cfg.history_flush_interval = std::time::Duration::from_millis(200);
    let evs = events(3000, 8);
    let victim = "user_000001";
    let mine = evs.iter().filter(|e| e.0 == victim).count() as i64;
    assert!(mine > 50);
    let engine = Engine::open(cfg.clone()).unwrap();
    for (i, chunk) in evs.chunks(500).enumerate() {
        engine
            .ingest_blocking("transactions", ndjson(chunk).as_bytes(), BodyFormat::Auto)
            .unwrap();
        if i == 2 {
            // Besides the background flusher, flush here for certain.
            assert!(engine.history_caught_up());
            engine.history().flush().unwrap();
        }
    }
    let t0 = 1_767_225_600_000i64;
    for i in 0..9 {
        let mut row = inference_row(i, t0 + i as i64);
        row[1] = Value::Str(if i % 3 == 0 { victim } else { "user_000002" }.into());
        engine
            .submit_rows(inferdb_types::INFERENCE_STREAM, vec![row])
            .unwrap()
            .wait_blocking()
            .unwrap();
    }
    assert!(engine.history().stats()[0].files > 0);
    let q_tx = format!("SELECT count(*) FROM transactions WHERE entity_id = '{victim}'");
    let q_inf = format!("SELECT count(*) FROM inference_records WHERE entity_id = '{victim}'");
    assert_eq!(count_of(&engine, &q_tx), mine);
    assert_eq!(count_of(&engine, &q_inf), 3);

    let e = engine.erase(victim).unwrap();
    assert_eq!(e.history_rows, mine as u64 + 3);
    assert!(e.hot_records > 0);
    let gone = |engine: &Engine| {
        assert!(engine.history_caught_up());
        assert_eq!(count_of(engine, &q_tx), 0);
        assert_eq!(count_of(engine, &q_inf), 0);
        assert_eq!(
            count_of(engine, "SELECT count(*) FROM transactions"),
            3000 - mine
        );
        assert_eq!(
            count_of(engine, "SELECT count(*) FROM inference_records"),
            6
        );
        // The continuous aggregate no longer counts the entity's payments.
        assert_eq!(
            count_of(engine, "SELECT sum(payments) FROM payments_5m"),
            3000 - mine
        );
        let f = engine.read_features("user_txn", &[victim], None).unwrap();
        assert!(!f[0].found);
        assert!(
            engine
                .recent_records("transactions", victim, 10)
                .unwrap()
                .is_empty()
        );
        assert!(
            engine
                .record_by_id(inferdb_types::INFERENCE_STREAM, "inf-0003")
                .unwrap()
                .is_none()
        );
        // Others are untouched.
        assert!(
            engine
                .read_features("user_txn", &["user_000002"], None)
                .unwrap()[0]
                .found
        );
        assert!(
            engine
                .record_by_id(inferdb_types::INFERENCE_STREAM, "inf-0004")
                .unwrap()
                .is_some()
        );
    };
    gone(&engine);
    // A crash right after: the log replays the entity's events, and the
    // erasure record after them removes them again.
    engine.abort();
    drop(engine);
    let engine = Engine::open(cfg.clone()).unwrap();
    gone(&engine);
    // New events of the key after the erasure are kept.
    engine
        .ingest_blocking(
            "transactions",
            ndjson(&[(victim.to_string(), evs[2999].1 + 1000, 5.0, "m_0001".into())]).as_bytes(),
            BodyFormat::Auto,
        )
        .unwrap();
    assert_eq!(count_of(&engine, &q_tx), 1);
    engine.shutdown();
    let engine = Engine::open(cfg).unwrap();
    assert_eq!(count_of(&engine, &q_tx), 1);
    engine.shutdown();
}

/// Ingests `evs` in bodies of `chunk` events and flushes the history once,
/// after body number `flush_after` (from 0).
fn ingest_flushing_after(
    engine: &Engine,
    evs: &[(String, i64, f64, String)],
    chunk: usize,
    flush_after: usize,
) {
    for (i, body) in evs.chunks(chunk).enumerate() {
        engine
            .ingest_blocking("transactions", ndjson(body).as_bytes(), BodyFormat::Auto)
            .unwrap();
        if i == flush_after {
            assert!(engine.history_caught_up());
            engine.history().flush().unwrap();
        }
    }
}

fn wal_segments(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn merchant_total(engine: &Engine, view: &str) -> i64 {
    let keys: Vec<String> = (0..30).map(|i| format!("m_{i:04}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    engine
        .read_features(view, &refs, None)
        .unwrap()
        .iter()
        .map(|r| match r.values[0] {
            Value::Int(n) => n,
            _ => 0,
        })
        .sum()
}

#[test]
fn the_log_is_truncated_behind_snapshot_and_history_and_a_spec_change_rebuilds_from_history() {
    let dir = tempfile::tempdir().unwrap();
    let all = events(4_000, 11);
    let (first, later) = all.split_at(3_000);
    let mut cfg = config(dir.path());
    cfg.wal_segment_bytes = 32 * 1024;
    let engine = Engine::open(cfg.clone()).unwrap();
    for chunk in first.chunks(100) {
        engine
            .ingest_blocking("transactions", ndjson(chunk).as_bytes(), BodyFormat::Auto)
            .unwrap();
    }
    let full = wal_segments(dir.path());
    assert!(full.len() > 5, "{full:?}");
    // A snapshot alone does not let the log go: the history is not flushed.
    engine.snapshot_blocking().unwrap();
    assert_eq!(wal_segments(dir.path()), full);
    // Flushed and snapshotted: only the segments after both remain.
    assert!(engine.history_caught_up());
    engine.history().flush().unwrap();
    engine.snapshot_blocking().unwrap();
    let cut = wal_segments(dir.path());
    assert!(
        cut.len() <= 2 && !cut.contains(&full[0]),
        "{full:?} -> {cut:?}"
    );
    check_against_naive(&engine, first);
    let recent = engine
        .recent_records("transactions", "user_000003", 1000)
        .unwrap();
    assert_eq!(
        recent.len(),
        first.iter().filter(|e| e.0 == "user_000003").count()
    );
    engine.shutdown();

    // Same spec: the snapshot and what is left of the log.
    let engine = Engine::open(cfg.clone()).unwrap();
    assert!(engine.recovery().snapshot_seq.is_some());
    assert_eq!(engine.recovery().rebuilt_rows, None);
    check_against_naive(&engine, first);
    // More events, only in the log (no flush), then a crash.
    for chunk in later.chunks(100) {
        engine
            .ingest_blocking("transactions", ndjson(chunk).as_bytes(), BodyFormat::Auto)
            .unwrap();
    }
    engine.abort();
    drop(engine);

    // A new view: the snapshot no longer fits and the log no longer starts
    // at seq 1, so the state is rebuilt from the history (files + the head
    // refilled from the log) and equals a replay of every event.
    let spec2 = format!(
        "{SPEC}\n[[views]]\nname = \"merchant_n\"\nstream = \"transactions\"\nkey = \"merchant_id\"\n\
         features = [{{ name = \"n\", agg = \"count\" }}]\n"
    );
    let mut cfg2 = cfg.clone();
    cfg2.spec = Some(Catalog::from_toml(&spec2).unwrap().spec);
    let engine = Engine::open(cfg2.clone()).unwrap();
    assert_eq!(engine.recovery().snapshot_seq, None);
    assert_eq!(engine.recovery().rebuilt_rows, Some(all.len() as u64));
    check_against_naive(&engine, &all);
    assert_eq!(merchant_total(&engine, "merchant_n"), all.len() as i64);
    // The hot tier holds every record of the user again, the later ones too.
    let again = engine
        .recent_records("transactions", "user_000003", 1000)
        .unwrap();
    let of_user = all.iter().filter(|e| e.0 == "user_000003").count();
    assert_eq!(again.len(), of_user);
    assert!(recent.iter().all(|r| again.contains(r)));
    assert!(engine.history_caught_up());
    assert_eq!(
        count_of(&engine, "SELECT count(*) FROM transactions"),
        all.len() as i64
    );
    // The rebuild was snapshotted: the next restart needs no rebuild.
    engine.shutdown();
    let engine = Engine::open(cfg2).unwrap();
    assert!(engine.recovery().snapshot_seq.is_some());
    assert_eq!(engine.recovery().rebuilt_rows, None);
    check_against_naive(&engine, &all);
    assert_eq!(merchant_total(&engine, "merchant_n"), all.len() as i64);
    engine.shutdown();
}

#[test]
fn an_entitys_latest_rows_come_from_the_hot_tier_and_equal_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.hot_records_per_entity = 40;
    let evs = events(3_000, 21);
    let u = "user_000005";
    let mut mine: Vec<i64> = evs.iter().filter(|e| e.0 == u).map(|e| e.1).collect();
    let n = mine.len();
    mine.sort_unstable();
    mine.dedup();
    assert!(n > 100 && mine.len() == n, "the user's times are distinct");
    let engine = Engine::open(cfg.clone()).unwrap();
    // Half in Parquet files, half in the head.
    ingest_flushing_after(&engine, &evs, 100, 15);
    let q = |tail: &str| format!("SELECT * FROM transactions WHERE entity_id = '{u}' {tail}");
    let cases = [
        (q("ORDER BY ts DESC LIMIT 20"), true, 20),
        (
            format!(
                "SELECT amount, merchant_id AS m FROM transactions \
                 WHERE '{u}' = entity_id ORDER BY ts DESC LIMIT 5"
            ),
            true,
            5,
        ),
        // An entity never seen: nothing was ever pushed out of the tier
        // but other users' records by the per-user cap, so it is exact.
        (
            "SELECT * FROM transactions WHERE entity_id = 'nobody' ORDER BY ts DESC LIMIT 3"
                .to_string(),
            true,
            0,
        ),
        // More than the 40 the hot tier keeps per user: the files answer.
        (q("ORDER BY ts DESC LIMIT 100"), false, 100),
        (q("AND amount > 100 ORDER BY ts DESC LIMIT 5"), false, 5),
        (q("ORDER BY ts DESC LIMIT 5 OFFSET 2"), false, 5),
        (q("ORDER BY ts ASC LIMIT 5"), false, 5),
        (q("ORDER BY amount DESC LIMIT 5"), false, 5),
        (
            format!("SELECT count(*) FROM transactions WHERE entity_id = '{u}'"),
            false,
            1,
        ),
    ];
    let other = "user_000007";
    let check = |engine: &Engine| {
        for (sql, memory, rows) in &cases {
            // Not planned yet (after a restart too): nothing prepared.
            assert!(prepared_rows(engine, sql).is_none(), "{sql}");
            let (fast, from_memory) = engine_rows(engine, sql);
            assert_eq!(from_memory, *memory, "{sql}");
            assert_eq!(fast.len(), *rows, "{sql}");
            let files = rows_of(engine, sql);
            same_rows(&fast, &files);
            // Planned once, the shape answers without planning: for this
            // entity and for another, as the files would.
            match prepared_rows(engine, sql) {
                Some((names, prepared)) => {
                    assert!(*memory, "{sql}");
                    assert_eq!(names, column_names(engine, sql), "{sql}");
                    same_rows(&prepared, &files);
                    let sql = sql.replace(u, other);
                    let (_, prepared) = prepared_rows(engine, &sql).unwrap();
                    same_rows(&prepared, &rows_of(engine, &sql));
                }
                None => assert!(!*memory, "{sql}"),
            }
        }
        // Another limit is another shape, not planned yet.
        assert!(prepared_rows(engine, &q("ORDER BY ts DESC LIMIT 21")).is_none());
    };
    check(&engine);
    // The same after a restart (the tier comes back from the snapshot).
    engine.shutdown();
    let engine = Engine::open(cfg).unwrap();
    check(&engine);
    engine.shutdown();

    // Under a retention older than the rows (events of 2026-01-01), the
    // files answer: retention may have dropped what the hot tier holds.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let spec = SPEC.replacen(
        "lateness = \"5s\"",
        "lateness = \"5s\"\nretention = \"7d\"",
        1,
    );
    cfg.spec = Some(Catalog::from_toml(&spec).unwrap().spec);
    let engine = Engine::open(cfg).unwrap();
    engine
        .ingest_blocking(
            "transactions",
            ndjson(&evs[..200]).as_bytes(),
            BodyFormat::Auto,
        )
        .unwrap();
    let (_, from_memory) = engine_rows(&engine, &cases[0].0);
    assert!(!from_memory);
    assert!(prepared_rows(&engine, &cases[0].0).is_none());
    engine.shutdown();
}

/// A query through `Engine::query_from_memory` (a latest-rows shape
/// planned before, answered without planning): its column names and rows.
fn prepared_rows(engine: &Engine, sql: &str) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let r = engine.query_from_memory(sql, &Default::default())?.unwrap();
    assert!(r.from_memory);
    let names = r.schema.fields().iter().map(|f| f.name().clone()).collect();
    Some((names, result_rows(&r)))
}

/// The column names of a query's answer from the files.
fn column_names(engine: &Engine, sql: &str) -> Vec<String> {
    let r = files_result(engine, sql);
    r.schema.fields().iter().map(|f| f.name().clone()).collect()
}

#[test]
fn an_inference_record_that_left_the_hot_tier_is_found_in_the_history() {
    use inferdb_engine::parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // One shard of a few dozen records: which ids leave it does not hang
    // on the per-process hash seed (with several shards it did).
    cfg.shards = 1;
    cfg.hot_tier_bytes = 4 * 1024;
    let t0 = 1_767_225_600_000i64;
    let engine = Engine::open(cfg).unwrap();
    let stream = inferdb_types::INFERENCE_STREAM;
    for chunk in 0..10 {
        let rows = (chunk * 30..chunk * 30 + 30)
            .map(|i| inference_row(i, t0 + i as i64))
            .collect();
        engine
            .submit_rows(stream, rows)
            .unwrap()
            .wait_blocking()
            .unwrap();
        if chunk == 6 {
            // Ids 0..210 in a Parquet file, the rest in the head.
            assert!(engine.history_caught_up());
            engine.history().flush().unwrap();
        }
    }
    assert!(engine.history_caught_up());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let find = |id: &str| {
        rt.block_on(engine.find_record_by_id(stream, id, &Default::default()))
            .unwrap()
    };
    let mut from_history = 0;
    for i in [0usize, 1, 77, 209, 210, 250, 299] {
        let id = format!("inf-{i:04}");
        if engine.record_by_id(stream, &id).unwrap().is_none() {
            from_history += 1;
        }
        let r = find(&id).unwrap_or_else(|| panic!("{id} not found"));
        assert_eq!(r["inference_id"], id);
        assert_eq!(r["entity_id"], format!("user_{:02}", i % 3));
        assert_eq!(r["features"], format!("{{\"amount\":{i}}}"));
        assert_eq!(r["confidence"], 0.75);
    }
    assert!(
        from_history >= 5,
        "only {from_history} lookups left the hot tier"
    );
    assert!(find("inf-9999").is_none());
    assert!(find("").is_none());
    assert!(find("x' OR '1'='1").is_none());
    // The id column of the file carries a bloom filter.
    let part = std::fs::read_dir(dir.path().join("history").join(stream))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let file = std::fs::read_dir(part)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
    let rg = reader.metadata().row_group(0);
    let id_col = (0..rg.num_columns())
        .find(|&c| rg.column(c).column_path().string() == "inference_id")
        .unwrap();
    assert!(rg.column(id_col).bloom_filter_offset().is_some());
    let other = if id_col == 0 { 1 } else { 0 };
    assert!(rg.column(other).bloom_filter_offset().is_none());
    engine.shutdown();
}
