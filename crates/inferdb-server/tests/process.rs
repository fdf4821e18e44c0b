#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `inferdb` binary as a user runs it: `serve` on port 0, a clean
//! SIGTERM shutdown and restart, and the kill test — SIGKILL while clients
//! ingest, restart, and every acknowledged event is there, with feature
//! values equal to a recomputation over the stored events.

mod common;

use bytes::Bytes;
use inferdb_server::client::{get_json, request_json};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SPEC: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/payments/spec.toml"
);

fn start(dir: &Path) -> (Child, SocketAddr) {
    common::spawn_server(&[
        "--spec".as_ref(),
        SPEC.as_ref(),
        "--snapshot-interval-secs".as_ref(),
        "1".as_ref(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
    ])
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn event(user: &str, ts: i64, amount: f64, merchant: &str) -> String {
    format!(
        r#"{{"entity_id":"{user}","ts":{ts},"amount":{amount},"merchant_id":"{merchant}","category":"dining","country":"NL","channel":"app","card_present":false}}"#
    )
}

#[test]
fn serve_on_port_zero_sigterm_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path());
    let rt = rt();
    let body: String = (0..100)
        .map(|i| {
            event(
                &format!("user_{}", i % 7),
                1_767_225_600_000 + i * 1000,
                1.5,
                "m_1",
            ) + "\n"
        })
        .collect();
    let (s, v) = rt
        .block_on(request_json(
            addr,
            "POST",
            "/v1/events/transactions",
            "application/x-ndjson",
            Bytes::from(body),
        ))
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["accepted"], 100);
    let (_, before) = rt
        .block_on(get_json(addr, "/v1/features/user_txn/user_3"))
        .unwrap();
    // SIGTERM: graceful stop.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let (mut child, addr) = start(dir.path());
    let (_, stats) = rt
        .block_on(get_json(addr, "/v1/streams/transactions/stats"))
        .unwrap();
    assert_eq!(stats["events_stored"], 100);
    let (_, after) = rt
        .block_on(get_json(addr, "/v1/features/user_txn/user_3"))
        .unwrap();
    assert_eq!(before, after);
    // A second server on the same directory is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_inferdb"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// One client's batch: its events and a marker user that exists only in it.
struct Batch {
    marker: String,
    events: Vec<(String, i64, f64, String)>,
}

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path());
    let clock = Arc::new(AtomicI64::new(1_767_225_600_000));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let in_flight: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let clients = 4;
    let per_batch = 200;
    let mut handles = Vec::new();
    for c in 0..clients {
        let (clock, stop, acked, in_flight) = (
            clock.clone(),
            stop.clone(),
            acked.clone(),
            in_flight.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                // Timestamps come from one clock, 1 ms apart, so that concurrent
                // batches never fall behind the 5 s lateness: no event is late.
                let t0 = clock.fetch_add(per_batch as i64 + 1, Ordering::AcqRel);
                let marker = format!("marker_{c}_{n}");
                let mut events: Vec<(String, i64, f64, String)> = (0..per_batch)
                    .map(|i| {
                        let x = (n * 7919 + i as u64 * 104_729 + c as u64) % 1000;
                        (
                            format!("user_{}", x % 50),
                            t0 + i as i64,
                            (x as f64) / 4.0,
                            format!("m_{}", x % 13),
                        )
                    })
                    .collect();
                events.push((
                    marker.clone(),
                    t0 + per_batch as i64,
                    1.0,
                    "m_0".to_string(),
                ));
                let body: String = events
                    .iter()
                    .map(|(u, t, a, m)| event(u, *t, *a, m) + "\n")
                    .collect();
                in_flight.lock().unwrap().push(Batch {
                    marker: marker.clone(),
                    events: events.clone(),
                });
                let r = rt.block_on(request_json(
                    addr,
                    "POST",
                    "/v1/events/transactions",
                    "application/x-ndjson",
                    Bytes::from(body),
                ));
                let mut fl = in_flight.lock().unwrap();
                let pos = fl.iter().position(|b| b.marker == marker).unwrap();
                let b = fl.remove(pos);
                match r {
                    Ok((200, v)) if v["accepted"] == per_batch as u64 + 1 => {
                        acked.lock().unwrap().push(b)
                    }
                    _ => {
                        fl.push(b); // unknown fate: the server died under it
                        return;
                    }
                }
                n += 1;
            }
        }));
    }
    let started = Instant::now();
    while acked.lock().unwrap().len() < 40 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let at least one snapshot happen (interval 1 s) so that recovery uses snapshot + log.
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    stop.store(true, Ordering::Release);
    for h in handles {
        h.join().unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let unknown = std::mem::take(&mut *in_flight.lock().unwrap());
    assert!(
        acked.len() >= 40,
        "only {} batches acknowledged",
        acked.len()
    );

    let (mut child, addr) = start(dir.path());
    let rt = rt();
    // Which unacknowledged batches made it? Their marker says.
    let mut stored: Vec<&Batch> = acked.iter().collect();
    for b in &unknown {
        let (_, v) = rt
            .block_on(get_json(
                addr,
                &format!("/v1/features/user_txn/{}", b.marker),
            ))
            .unwrap();
        if v["found"] == true {
            stored.push(b);
        }
    }
    for b in &acked {
        let (_, v) = rt
            .block_on(get_json(
                addr,
                &format!("/v1/features/user_txn/{}", b.marker),
            ))
            .unwrap();
        assert_eq!(v["found"], true, "acknowledged batch {} lost", b.marker);
    }
    let events: Vec<&(String, i64, f64, String)> =
        stored.iter().flat_map(|b| b.events.iter()).collect();
    let (_, stats) = rt
        .block_on(get_json(addr, "/v1/streams/transactions/stats"))
        .unwrap();
    assert_eq!(stats["events_stored"], events.len() as u64, "stored count");
    assert_eq!(stats["events_late"], 0);

    // Feature values equal a recomputation over the stored events.
    let t = events.iter().map(|e| e.1).max().unwrap();
    assert_eq!(stats["watermark_ms"], t);
    let users: BTreeSet<&String> = events
        .iter()
        .map(|e| &e.0)
        .filter(|u| u.starts_with("user_"))
        .collect();
    for u in users {
        let mine: Vec<_> = events.iter().filter(|e| &e.0 == u).collect();
        let in_win = |w: i64| mine.iter().filter(|e| e.1 > t - w).count() as u64;
        let sum_1h: f64 = mine
            .iter()
            .filter(|e| e.1 > t - 3_600_000)
            .map(|e| e.2)
            .sum();
        let merchants: BTreeSet<&String> = mine.iter().map(|e| &e.3).collect();
        let last = mine.iter().max_by_key(|e| e.1).unwrap();
        let (_, v) = rt
            .block_on(get_json(addr, &format!("/v1/features/user_txn/{u}")))
            .unwrap();
        let f = &v["features"];
        assert_eq!(f["txn_count_5m"], in_win(300_000), "{u}");
        assert_eq!(f["txn_count_24h"], in_win(86_400_000), "{u}");
        let got = f["amount_sum_1h"].as_f64().unwrap();
        assert!(
            (got - sum_1h).abs() <= 1e-9 * sum_1h.max(1.0),
            "{u}: {got} vs {sum_1h}"
        );
        assert_eq!(f["distinct_merchants_24h"], merchants.len() as u64, "{u}");
        assert_eq!(f["last_amount"].as_f64().unwrap(), last.2, "{u}");
    }
    let by_user: BTreeMap<&String, usize> = events.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(&e.0).or_default() += 1;
        m
    });
    assert!(by_user.len() > 50);
    child.kill().unwrap();
    child.wait().unwrap();
}
