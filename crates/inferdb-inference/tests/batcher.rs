//! The dynamic batcher: batch formation (full, delay, preferred sizes),
//! outputs equal to unbatched prediction, deadlines, overload, cancellation,
//! instance concurrency, shutdown, and a property test against a naive model
//! (each request answered once with its own rows; no batch over the limit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use inferdb_inference::{Backend, Batcher, BatcherConfig, InferenceError, TreeEnsemble};
use inferdb_types::ErrorKind;
use parking_lot::Mutex;
use proptest::prelude::*;

/// What a test backend saw: batch sizes in order, and how many runs overlapped.
#[derive(Default)]
struct Probe {
    batches: Mutex<Vec<usize>>,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// Names of the threads batches ran on.
    threads: Mutex<std::collections::BTreeSet<String>>,
}

/// Two values in, two out: `[x0 * 2, x1 + 1]` per row, optionally sleeping per
/// batch so the instance stays busy (this tests scheduling, not speed).
struct Echo {
    probe: Arc<Probe>,
    sleep: Duration,
    panic_on: Option<f32>,
}

impl Backend for Echo {
    fn run(&mut self, input: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        let now = self.probe.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.probe.max_running.fetch_max(now, Ordering::SeqCst);
        self.probe.batches.lock().push(n);
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        self.probe.threads.lock().insert(thread);
        if !self.sleep.is_zero() {
            std::thread::sleep(self.sleep);
        }
        self.probe.running.fetch_sub(1, Ordering::SeqCst);
        assert_eq!(input.len(), n * 2);
        if let Some(p) = self.panic_on {
            assert!(!input.contains(&p), "poisoned row");
        }
        for row in input.chunks(2) {
            out.extend_from_slice(&[row[0] * 2.0, row[1] + 1.0]);
        }
        Ok(())
    }
    fn input_width(&self) -> usize {
        2
    }
    fn output_width(&self) -> usize {
        2
    }
}

fn cfg(max_batch_size: usize, delay_ms: u64) -> BatcherConfig {
    BatcherConfig {
        max_batch_size,
        max_queue_delay: Duration::from_millis(delay_ms),
        max_queue_size: 1024,
        preferred_batch_sizes: Vec::new(),
        instances: 1,
    }
}

fn echo(cfg: BatcherConfig, sleep: Duration) -> (Batcher, Arc<Probe>) {
    echo_named("echo", cfg, sleep)
}

fn echo_named(name: &str, cfg: BatcherConfig, sleep: Duration) -> (Batcher, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let p = Arc::clone(&probe);
    let b = Batcher::start(name, cfg, move || {
        Ok(Box::new(Echo {
            probe: Arc::clone(&p),
            sleep,
            panic_on: None,
        }) as Box<dyn Backend>)
    })
    .unwrap();
    (b, probe)
}

fn expect_echo(input: &[f32]) -> Vec<f32> {
    input
        .chunks(2)
        .flat_map(|r| [r[0] * 2.0, r[1] + 1.0])
        .collect()
}

fn gbdt() -> TreeEnsemble {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/gbdt_200.onnx");
    TreeEnsemble::from_onnx_bytes(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_full_batch_runs_at_once() {
    let (b, probe) = echo(cfg(8, 200), Duration::ZERO);
    let t = Instant::now();
    let pending: Vec<_> = (0..8)
        .map(|i| b.submit(vec![i as f32, 0.0], 1, None).unwrap())
        .collect();
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(p.wait_blocking().unwrap(), vec![i as f32 * 2.0, 1.0]);
    }
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(*probe.batches.lock(), vec![8]);
    let s = b.stats();
    assert_eq!((s.batches, s.rows_executed, s.max_batch_rows), (1, 8, 8));
    assert_eq!(s.batch_size_histogram[3], 1, "8 rows fall in bucket (4, 8]");
}

#[test]
fn a_partial_batch_waits_for_the_queue_delay() {
    let (b, probe) = echo(cfg(8, 150), Duration::ZERO);
    let t = Instant::now();
    let pending: Vec<_> = (0..3)
        .map(|i| b.submit(vec![i as f32, 0.0], 1, None).unwrap())
        .collect();
    for p in pending {
        p.wait_blocking().unwrap();
    }
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(145), "{waited:?}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    assert_eq!(*probe.batches.lock(), vec![3]);
}

#[test]
fn a_preferred_batch_size_runs_at_once() {
    let mut c = cfg(8, 200);
    c.preferred_batch_sizes = vec![4];
    let (b, probe) = echo(c, Duration::ZERO);
    let t = Instant::now();
    let pending: Vec<_> = (0..4)
        .map(|i| b.submit(vec![i as f32, 0.0], 1, None).unwrap())
        .collect();
    for p in pending {
        p.wait_blocking().unwrap();
    }
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(*probe.batches.lock(), vec![4]);
}

#[test]
fn a_zero_delay_runs_without_waiting() {
    let (b, _) = echo(cfg(8, 0), Duration::ZERO);
    let t = Instant::now();
    let out = b.submit(vec![1.0, 2.0], 1, None).unwrap().wait_blocking();
    assert_eq!(out.unwrap(), vec![2.0, 3.0]);
    assert!(t.elapsed() < Duration::from_millis(150));
}

#[test]
fn batched_outputs_equal_row_by_row_prediction() {
    let model = gbdt();
    let (f, c) = (model.n_features(), model.n_outputs());
    assert_eq!((f, c), (256, 10));
    let b = Batcher::start("gbdt_200", cfg(8, 2), || {
        Ok(Box::new(gbdt()) as Box<dyn Backend>)
    })
    .unwrap();
    assert_eq!((b.input_width(), b.output_width()), (256, 10));
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
    };
    let requests: Vec<(usize, Vec<f32>)> = (0..24)
        .map(|i| {
            let rows = 1 + i % 4;
            (rows, (0..rows * f).map(|_| next()).collect())
        })
        .collect();
    let pending: Vec<_> = requests
        .iter()
        .map(|(rows, x)| b.submit(x.clone(), *rows, None).unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (mut labels, mut scores) = (Vec::new(), Vec::new());
    for (i, ((rows, x), p)) in requests.iter().zip(pending).enumerate() {
        // Half through the async path, half blocking.
        let got = if i % 2 == 0 {
            rt.block_on(p.wait()).unwrap()
        } else {
            p.wait_blocking().unwrap()
        };
        assert_eq!(got.len(), rows * c);
        for (r, row) in x.chunks(f).enumerate() {
            model.predict(row, 1, &mut labels, &mut scores).unwrap();
            for (a, e) in got[r * c..(r + 1) * c].iter().zip(&scores) {
                assert!((a - e).abs() <= 1e-6, "request {i} row {r}: {a} vs {e}");
            }
        }
    }
    let s = b.stats();
    assert_eq!(s.requests_executed, 24);
    assert_eq!(
        s.rows_executed,
        requests.iter().map(|r| r.0 as u64).sum::<u64>()
    );
    assert!(s.max_batch_rows <= 8);
    b.shutdown();
}

#[test]
fn an_expired_deadline_is_answered_timeout_and_not_run() {
    let (b, probe) = echo(cfg(8, 20), Duration::ZERO);
    let past = Instant::now()
        .checked_sub(Duration::from_millis(1))
        .unwrap();
    let err = b
        .submit(vec![1.0, 1.0], 1, Some(past))
        .unwrap()
        .wait_blocking()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let s = b.stats();
    assert_eq!((s.timeouts, s.rows_executed, s.batches), (1, 0, 0));
    assert!(probe.batches.lock().is_empty());
}

#[test]
fn a_deadline_shorter_than_the_queue_delay_times_out_promptly() {
    let (b, probe) = echo(cfg(8, 200), Duration::ZERO);
    let t = Instant::now();
    let soon = b
        .submit(vec![1.0, 1.0], 1, Some(t + Duration::from_millis(20)))
        .unwrap();
    let patient = b.submit(vec![2.0, 2.0], 1, None).unwrap();
    let err = soon.wait_blocking().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(patient.wait_blocking().unwrap(), vec![4.0, 3.0]);
    let s = b.stats();
    assert_eq!((s.timeouts, s.rows_executed), (1, 1));
    assert_eq!(*probe.batches.lock(), vec![1]);
}

#[test]
fn a_full_queue_is_overloaded_at_once_and_admitted_requests_are_answered() {
    let mut c = cfg(1, 0);
    c.max_queue_size = 2;
    let (b, _) = echo(c, Duration::from_millis(30));
    let mut admitted = Vec::new();
    let mut overloaded = 0;
    for i in 0..10 {
        match b.submit(vec![i as f32, 0.0], 1, None) {
            Ok(p) => admitted.push((i, p)),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Overloaded, "{e}");
                overloaded += 1;
            }
        }
    }
    // One request may be executing, two queued: the rest are refused.
    assert!(overloaded >= 7, "overloaded {overloaded}");
    assert!(admitted.len() >= 2);
    for (i, p) in admitted {
        assert_eq!(p.wait_blocking().unwrap(), vec![i as f32 * 2.0, 1.0]);
    }
    assert_eq!(b.stats().overloads, overloaded);
}

#[test]
fn a_dropped_pending_is_cancelled_and_not_run() {
    let (b, probe) = echo(cfg(8, 50), Duration::ZERO);
    let gone = b.submit(vec![1.0, 1.0], 1, None).unwrap();
    let kept = b.submit(vec![2.0, 2.0], 1, None).unwrap();
    drop(gone);
    assert_eq!(kept.wait_blocking().unwrap(), vec![4.0, 3.0]);
    let s = b.stats();
    assert_eq!(
        (s.dropped_cancelled, s.requests_executed, s.rows_executed),
        (1, 1, 1)
    );
    assert_eq!(*probe.batches.lock(), vec![1]);
}

fn max_overlap(instances: usize) -> (usize, Duration) {
    let mut c = cfg(1, 0);
    c.instances = instances;
    let (b, probe) = echo(c, Duration::from_millis(60));
    let t = Instant::now();
    let pending: Vec<_> = (0..2)
        .map(|i| b.submit(vec![i as f32, 0.0], 1, None).unwrap())
        .collect();
    for p in pending {
        p.wait_blocking().unwrap();
    }
    (probe.max_running.load(Ordering::SeqCst), t.elapsed())
}

#[test]
fn two_instances_run_two_batches_concurrently() {
    let (overlap, took) = max_overlap(2);
    assert_eq!(overlap, 2, "took {took:?}");
    assert!(took < Duration::from_millis(115), "{took:?}");
    let (overlap, took) = max_overlap(1);
    assert_eq!(overlap, 1);
    assert!(took >= Duration::from_millis(120), "{took:?}");
}

#[test]
fn shutdown_answers_everything_queued() {
    // A delay too large to add to an Instant: only shutdown runs these.
    let mut c = cfg(8, 0);
    c.max_queue_delay = Duration::MAX;
    let (b, _) = echo(c, Duration::ZERO);
    let pending: Vec<_> = (0..6)
        .map(|i| b.submit(vec![i as f32, 0.0], 1, None).unwrap())
        .collect();
    let t = Instant::now();
    b.shutdown();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "drain waited the delay"
    );
    for (i, p) in pending.into_iter().enumerate() {
        assert_eq!(p.wait_blocking().unwrap(), vec![i as f32 * 2.0, 1.0]);
    }
}

#[test]
fn a_panicking_backend_answers_internal_and_keeps_serving() {
    let probe = Arc::new(Probe::default());
    let p = Arc::clone(&probe);
    let b = Batcher::start("panics", cfg(1, 0), move || {
        Ok(Box::new(Echo {
            probe: Arc::clone(&p),
            sleep: Duration::ZERO,
            panic_on: Some(-1.0),
        }) as Box<dyn Backend>)
    })
    .unwrap();
    let err = b
        .submit(vec![-1.0, 0.0], 1, None)
        .unwrap()
        .wait_blocking()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(err.to_string().contains("poisoned row"), "{err}");
    let ok = b.submit(vec![3.0, 0.0], 1, None).unwrap().wait_blocking();
    assert_eq!(ok.unwrap(), vec![6.0, 1.0]);
    assert_eq!(b.stats().failed_batches, 1);
}

#[test]
fn bad_requests_and_configs_are_refused() {
    let (b, _) = echo(cfg(4, 10), Duration::ZERO);
    let err = b.submit(vec![0.0; 10], 5, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("max_batch_size 4"), "{err}");
    let err = b.submit(vec![0.0; 3], 1, None).unwrap_err();
    assert!(matches!(err, InferenceError::InputShape { .. }), "{err}");
    assert_eq!(
        b.submit(Vec::new(), 0, None).unwrap().wait_blocking(),
        Ok(vec![])
    );
    for bad in [
        cfg(0, 1),
        BatcherConfig {
            instances: 0,
            ..cfg(4, 1)
        },
        BatcherConfig {
            max_queue_size: 0,
            ..cfg(4, 1)
        },
        BatcherConfig {
            preferred_batch_sizes: vec![5],
            ..cfg(4, 1)
        },
    ] {
        let err =
            Batcher::start("bad", bad, || Ok(Box::new(gbdt()) as Box<dyn Backend>)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Against a naive model: each request is answered once, Ok, with exactly
    /// its own rows' outputs in order; no batch exceeds `max_batch_size`; the
    /// rows run are exactly the rows submitted.
    #[test]
    fn every_request_gets_its_own_rows_and_batches_stay_bounded(
        sizes in prop::collection::vec(1usize..=4, 1..40),
        delay_us in 0u64..2_000,
        instances in 1usize..=2,
        preferred in prop::option::of(1usize..=8),
    ) {
        let mut c = cfg(8, 0);
        c.max_queue_delay = Duration::from_micros(delay_us);
        c.instances = instances;
        c.preferred_batch_sizes = preferred.into_iter().collect();
        let (b, probe) = echo(c, Duration::ZERO);
        let requests: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &rows)| (0..rows).flat_map(|r| [i as f32, r as f32]).collect())
            .collect();
        let pending: Vec<_> = requests
            .iter()
            .zip(&sizes)
            .map(|(x, &rows)| b.submit(x.clone(), rows, None).unwrap())
            .collect();
        for (x, p) in requests.iter().zip(pending) {
            prop_assert_eq!(p.wait_blocking().unwrap(), expect_echo(x));
        }
        let batches = probe.batches.lock().clone();
        prop_assert!(batches.iter().all(|&n| (1..=8).contains(&n)), "{:?}", batches);
        let total: usize = sizes.iter().sum();
        prop_assert_eq!(batches.iter().sum::<usize>(), total);
        let s = b.stats();
        prop_assert_eq!(s.requests_executed, sizes.len() as u64);
        prop_assert_eq!(s.rows_executed, total as u64);
        prop_assert!(s.max_batch_rows <= 8);
    }
}

/// Queues request `i` on `a`, whose answer is queued on `b`, whose answer
/// is queued on `c`, whose answer goes to `tx` (an ensemble's three steps).
fn chain(
    i: usize,
    (a, b, c): (&Batcher, &Arc<Batcher>, &Arc<Batcher>),
    tx: &std::sync::mpsc::Sender<(usize, Result<Vec<f32>, InferenceError>)>,
) {
    let flag = || Arc::new(AtomicBool::new(false));
    let (b, c, tx) = (Arc::clone(b), Arc::clone(c), tx.clone());
    a.submit_then(
        vec![i as f32, 0.0],
        1,
        None,
        flag(),
        Box::new(move |r| {
            b.submit_then(
                r.unwrap(),
                1,
                None,
                flag(),
                Box::new(move |r| {
                    c.submit_then(
                        r.unwrap(),
                        1,
                        None,
                        flag(),
                        Box::new(move |r| tx.send((i, r)).unwrap()),
                    );
                }),
            );
        }),
    );
}

#[test]
fn a_chained_step_runs_on_the_execution_thread_that_fed_it_with_the_same_answers() {
    let (a, pa) = echo_named("a", cfg(16, 0), Duration::ZERO);
    let (b, pb) = echo_named("b", cfg(16, 0), Duration::ZERO);
    let (c, pc) = echo_named("c", cfg(16, 0), Duration::ZERO);
    let (b, c) = (Arc::new(b), Arc::new(c));
    let (tx, rx) = std::sync::mpsc::channel();
    let recv = || rx.recv_timeout(Duration::from_secs(20)).unwrap();
    // One request at a time: the first step's thread has nothing else to
    // do, so it runs steps 2 and 3 itself, every time.
    for i in 0..50 {
        chain(i, (&a, &b, &c), &tx);
        let (j, r) = recv();
        assert_eq!(j, i);
        // Each step doubles x0 and adds 1 to x1.
        assert_eq!(r.unwrap(), vec![i as f32 * 8.0, 3.0]);
    }
    // A model's own thread sees a handed-over request only if it happens
    // to be planning at that moment: on its first pass after starting, or
    // on its way back to sleep after taking one (a busy machine can stall
    // it there). Hand-over is the rule; a few stragglers are allowed.
    for s in [b.stats(), c.stats()] {
        assert_eq!(s.batches, 50);
        assert!(s.inline_batches >= 40, "{s:?}");
    }
    assert_eq!(
        a.stats().inline_batches,
        0,
        "the first step is fed by the caller"
    );
    for p in [&pb, &pc] {
        assert!(p.threads.lock().contains("inferdb-batch-a-0"));
    }
    // Bursts: hand-overs and wake-ups mix; every request is answered once,
    // right, and only on model execution threads.
    let n = 400;
    for i in 0..n {
        chain(i, (&a, &b, &c), &tx);
        if i % 40 == 39 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut seen = vec![false; n];
    for _ in 0..n {
        let (i, r) = recv();
        assert_eq!(r.unwrap(), vec![i as f32 * 8.0, 3.0], "request {i}");
        assert!(!seen[i], "request {i} answered twice");
        seen[i] = true;
    }
    for s in [b.stats(), c.stats()] {
        assert_eq!(s.requests_executed, n as u64 + 50);
        assert!(s.inline_batches <= s.batches);
    }
    for p in [&pa, &pb, &pc] {
        for t in p.threads.lock().iter() {
            assert!(t.starts_with("inferdb-batch-"), "a batch ran on {t}");
        }
    }
}

#[test]
fn a_batcher_dropped_by_a_continuation_on_its_own_thread_shuts_down() {
    // A model unloaded while its last request's continuation holds the last
    // handle: the drop happens on the batcher's own execution thread.
    let (a, probe) = echo_named("own", cfg(4, 0), Duration::ZERO);
    let slot = Arc::new(Mutex::new(None::<Batcher>));
    let (tx, rx) = std::sync::mpsc::channel();
    *slot.lock() = Some(a);
    let held = Arc::clone(&slot);
    let guard = slot.lock();
    // The continuation waits for this lock: the batcher is in the slot.
    guard.as_ref().unwrap().submit_then(
        vec![1.0, 2.0],
        1,
        None,
        Arc::new(AtomicBool::new(false)),
        Box::new(move |r| {
            let thread = std::thread::current().name().map(str::to_string);
            let last = held.lock().take();
            drop(last);
            tx.send((r, thread)).unwrap();
        }),
    );
    drop(guard);
    let (r, thread) = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(r.unwrap(), vec![2.0, 3.0]);
    assert_eq!(*probe.batches.lock(), vec![1]);
    assert!(slot.lock().is_none());
    assert_eq!(thread.as_deref(), Some("inferdb-batch-own-0"));
}
