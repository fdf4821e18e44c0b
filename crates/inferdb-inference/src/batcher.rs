//! The dynamic batcher of one model: a bounded request queue and the threads
//! that own the model's backend instances (Triton's dynamic batching and
//! `instance_group`).
//!
//! It owns the queue (one mutex + condvar), `instances` execution threads each
//! holding its own [`Backend`], and the counters behind [`Batcher::stats`].
//!
//! Request flow: [`Batcher::submit`] checks the shape and the row limit, then
//! pushes the request on the queue or, when `max_queue_size` requests already
//! wait, answers [`InferenceError::Overloaded`] at once (it never blocks). An
//! idle instance thread wakes, and forms a batch from the queue head in FIFO
//! order while the rows fit in `max_batch_size`; requests whose deadline has
//! passed are answered [`InferenceError::Timeout`] and requests whose caller
//! dropped its [`Pending`] are discarded, both without running. The batch runs
//! when it is full (`max_batch_size` rows, or the next request would not fit),
//! when its rows reach a preferred batch size, when the oldest request has
//! waited `max_queue_delay`, or at once when that delay is zero; otherwise the
//! thread sleeps on the condvar until the oldest request's delay (or the
//! earliest deadline) expires. The thread concatenates the rows, runs the
//! backend (outside the lock, with panics caught), and scatters each
//! request's slice of the outputs to its oneshot reply channel. Model
//! execution therefore never happens on a tokio worker: async callers only
//! await the reply.
//!
//! Chained models (an ensemble's steps): a request queued by a continuation
//! that runs on an execution thread (the previous step's batch just
//! finished) does not wake the next model's thread at once. After the whole
//! batch has answered, the same thread forms the next model's batch from its
//! queue, by the same rules, and runs it on that model's backend instance if
//! the instance is free (`try_lock`; its own thread is then asleep), which
//! saves one futex wake-up and two context switches per step on a small
//! machine. If every instance is busy, the batch must wait for its queue
//! delay, or the feeding model has requests of its own waiting (its thread
//! has work, so the next step runs beside it on its own thread: pipelining
//! across cores is kept under load), the model's own thread is woken as
//! before. Backends therefore sit
//! behind a mutex each (uncontended but for these hand-overs) and still run
//! only on model execution threads, one batch at a time per instance;
//! [`BatcherStats::inline_batches`] counts the batches run this way.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::{InferenceError, TreeEnsemble};

/// A model instance the batcher can run batches on. One batch at a time runs
/// on it (its mutex), always on a model execution thread, so implementations
/// need no internal locking.
pub trait Backend: Send + 'static {
    /// Runs one batch: `input` is row-major `[n, input_width()]`; appends
    /// `n * output_width()` values (row-major) to `out`.
    fn run(&mut self, input: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError>;
    /// Values per input row.
    fn input_width(&self) -> usize;
    /// Values per output row.
    fn output_width(&self) -> usize;
}

/// A tree ensemble answers its scores (`n_outputs()` per row); labels, when
/// the model has them, are derived by the caller from the scores.
impl Backend for TreeEnsemble {
    fn run(&mut self, input: &[f32], n: usize, out: &mut Vec<f32>) -> Result<(), InferenceError> {
        let mut labels = Vec::new();
        if out.is_empty() {
            // The batcher passes an empty buffer: predict into it directly.
            return self.predict(input, n, &mut labels, out);
        }
        let mut scores = Vec::new();
        self.predict(input, n, &mut labels, &mut scores)?;
        out.extend_from_slice(&scores);
        Ok(())
    }

    fn input_width(&self) -> usize {
        self.n_features()
    }

    fn output_width(&self) -> usize {
        self.n_outputs()
    }
}

/// How one model's requests are batched (Triton's `dynamic_batching` and
/// `instance_group` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Most rows in one batch; a single request with more rows is refused.
    pub max_batch_size: usize,
    /// How long the oldest queued request may wait for a fuller batch.
    pub max_queue_delay: Duration,
    /// Most requests waiting in the queue; beyond it submits are `Overloaded`.
    pub max_queue_size: usize,
    /// Batch sizes (in rows) that run at once when the queue head reaches them.
    pub preferred_batch_sizes: Vec<usize>,
    /// Execution threads, each owning its own backend instance.
    pub instances: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_batch_size: 64,
            max_queue_delay: Duration::from_micros(500),
            max_queue_size: 1024,
            preferred_batch_sizes: Vec::new(),
            instances: 1,
        }
    }
}

impl BatcherConfig {
    fn validate(&self) -> Result<(), InferenceError> {
        let bad = |m: String| Err(InferenceError::InvalidConfig(m));
        if self.max_batch_size == 0 {
            return bad("max_batch_size must be at least 1".into());
        }
        if self.max_queue_size == 0 {
            return bad("max_queue_size must be at least 1".into());
        }
        if self.instances == 0 {
            return bad("instances must be at least 1".into());
        }
        if let Some(p) = self
            .preferred_batch_sizes
            .iter()
            .find(|&&p| p == 0 || p > self.max_batch_size)
        {
            return bad(format!(
                "preferred batch size {p} must be in 1..={}",
                self.max_batch_size
            ));
        }
        Ok(())
    }
}

/// Number of buckets in [`BatcherStats::batch_size_histogram`].
pub const HISTOGRAM_BUCKETS: usize = 16;

/// A snapshot of a batcher's counters (monotonic since start, except `queued`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Requests admitted to the queue.
    pub requests: u64,
    /// Batches run.
    pub batches: u64,
    /// Requests whose rows were run (in a batch that succeeded or failed).
    pub requests_executed: u64,
    /// Rows run.
    pub rows_executed: u64,
    /// Requests answered `Timeout` without running.
    pub timeouts: u64,
    /// Submits refused `Overloaded`.
    pub overloads: u64,
    /// Requests dropped because their caller went away before execution.
    pub dropped_cancelled: u64,
    /// Batches whose backend failed (error, panic or wrong output length).
    pub failed_batches: u64,
    /// Requests answered `Unavailable` at shutdown.
    pub unavailable: u64,
    /// Sum of batch sizes in rows (`rows_executed / batches` is the mean).
    pub batch_rows_sum: u64,
    /// The largest batch run, in rows.
    pub max_batch_rows: u64,
    /// Batches by size: bucket 0 counts 1-row batches, bucket `i` sizes in
    /// `(2^(i-1), 2^i]`; the last bucket takes everything larger.
    pub batch_size_histogram: [u64; HISTOGRAM_BUCKETS],
    /// Requests waiting now.
    pub queued: usize,
    /// Batches run on the execution thread of the model that fed them (an
    /// ensemble's previous step) rather than on this model's own thread.
    pub inline_batches: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    batches: AtomicU64,
    requests_executed: AtomicU64,
    rows_executed: AtomicU64,
    timeouts: AtomicU64,
    overloads: AtomicU64,
    dropped_cancelled: AtomicU64,
    failed_batches: AtomicU64,
    unavailable: AtomicU64,
    max_batch_rows: AtomicU64,
    histogram: [AtomicU64; HISTOGRAM_BUCKETS],
    queued: AtomicUsize,
    inline_batches: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

fn bucket(rows: usize) -> usize {
    // ceil(log2(rows)): 1 -> 0, 2 -> 1, 3..=4 -> 2, 5..=8 -> 3, ...
    let b = usize::BITS - rows.saturating_sub(1).leading_zeros();
    (b as usize).min(HISTOGRAM_BUCKETS - 1)
}

/// A request's outputs (`rows * output_width` values) or why there are none.
pub type Reply = Result<Vec<f32>, InferenceError>;

/// A continuation run on the execution thread with a request's reply
/// (used to chain ensemble steps from one batcher thread to the next
/// without a round trip through the async runtime).
pub type Then = Box<dyn FnOnce(Reply) + Send>;

/// Where a request's answer goes.
enum ReplyTo {
    Channel(oneshot::Sender<Reply>),
    Then {
        then: Then,
        /// Set when the caller gave up; the request is then dropped unrun.
        cancelled: Arc<AtomicBool>,
    },
}

impl ReplyTo {
    fn send(self, r: Reply) {
        match self {
            ReplyTo::Channel(tx) => {
                let _ = tx.send(r);
            }
            ReplyTo::Then { then, .. } => then(r),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            ReplyTo::Channel(tx) => tx.is_closed(),
            ReplyTo::Then { cancelled, .. } => cancelled.load(Ordering::Acquire),
        }
    }
}

struct Request {
    input: Vec<f32>,
    rows: usize,
    deadline: Option<Instant>,
    enqueued: Instant,
    reply: ReplyTo,
}

struct Queue {
    requests: VecDeque<Request>,
    /// Rows of `requests` (kept by submit, recomputed by the workers).
    rows: usize,
    closing: bool,
}

struct Shared {
    name: String,
    cfg: BatcherConfig,
    input_width: usize,
    output_width: usize,
    queue: Mutex<Queue>,
    ready: Condvar,
    counters: Counters,
    /// The backend instances (one per instance thread).
    execs: Vec<Arc<Mutex<Exec>>>,
}

/// One backend instance and its scratch buffers.
struct Exec {
    backend: Box<dyn Backend>,
    input: Vec<f32>,
    out: Vec<f32>,
    /// Batch and expired requests of a hand-over run ([`run_inline`]).
    batch: Vec<Request>,
    expired: Vec<Request>,
}

thread_local! {
    /// While an execution thread sends a batch's answers: the batchers that
    /// the answers' continuations queued work on, whose threads were not
    /// woken (see the module doc). `None` elsewhere.
    static HANDED_OVER: RefCell<Option<Vec<Arc<Shared>>>> = const { RefCell::new(None) };
}

/// The answer to one submitted request. Dropping it before the request runs
/// cancels the request.
#[derive(Debug)]
pub struct Pending {
    rx: oneshot::Receiver<Reply>,
    model: Arc<str>,
}

impl Pending {
    fn gone(model: &str) -> InferenceError {
        InferenceError::Unavailable {
            model: model.to_string(),
            reason: "the execution thread stopped without answering".into(),
        }
    }

    /// Awaits the request's outputs (`rows * output_width` values, row-major).
    pub async fn wait(self) -> Result<Vec<f32>, InferenceError> {
        match self.rx.await {
            Ok(r) => r,
            Err(_) => Err(Pending::gone(&self.model)),
        }
    }

    /// Blocks the calling thread until the outputs arrive. Must not be called
    /// from inside an async runtime (tokio panics there); use [`Pending::wait`].
    pub fn wait_blocking(self) -> Result<Vec<f32>, InferenceError> {
        match self.rx.blocking_recv() {
            Ok(r) => r,
            Err(_) => Err(Pending::gone(&self.model)),
        }
    }
}

/// The dynamic batcher of one model. Dropping it shuts it down like
/// [`Batcher::shutdown`].
pub struct Batcher {
    shared: Arc<Shared>,
    model: Arc<str>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("name", &self.shared.name)
            .field("cfg", &self.shared.cfg)
            .field("input_width", &self.shared.input_width)
            .field("output_width", &self.shared.output_width)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts `cfg.instances` threads, each owning one backend built by `make`
    /// (called here, before spawning; the backend then lives on its thread).
    /// All instances must agree on their input and output widths.
    pub fn start(
        name: &str,
        cfg: BatcherConfig,
        make: impl Fn() -> Result<Box<dyn Backend>, InferenceError>,
    ) -> Result<Batcher, InferenceError> {
        cfg.validate()?;
        let mut backends = Vec::with_capacity(cfg.instances);
        for _ in 0..cfg.instances {
            backends.push(make()?);
        }
        let (input_width, output_width) = match backends.first() {
            Some(b) => (b.input_width(), b.output_width()),
            None => return Err(InferenceError::InvalidConfig("no instances".into())),
        };
        if backends
            .iter()
            .any(|b| b.input_width() != input_width || b.output_width() != output_width)
        {
            return Err(InferenceError::InvalidConfig(format!(
                "backend instances of model {name} disagree on input/output widths"
            )));
        }
        let execs: Vec<Arc<Mutex<Exec>>> = backends
            .into_iter()
            .map(|backend| {
                Arc::new(Mutex::new(Exec {
                    backend,
                    input: Vec::new(),
                    out: Vec::new(),
                    batch: Vec::new(),
                    expired: Vec::new(),
                }))
            })
            .collect();
        let shared = Arc::new(Shared {
            name: name.to_string(),
            cfg,
            input_width,
            output_width,
            queue: Mutex::new(Queue {
                requests: VecDeque::new(),
                rows: 0,
                closing: false,
            }),
            ready: Condvar::new(),
            counters: Counters::default(),
            execs,
        });
        let mut batcher = Batcher {
            shared: Arc::clone(&shared),
            model: Arc::from(name),
            threads: Vec::with_capacity(shared.execs.len()),
        };
        for (i, exec) in shared.execs.iter().enumerate() {
            let worker = Worker {
                shared: Arc::clone(&shared),
                exec: Arc::clone(exec),
                batch: Vec::new(),
                expired: Vec::new(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("inferdb-batch-{}-{i}", name.replace('\0', "")))
                .spawn(move || worker.run());
            match spawned {
                Ok(h) => batcher.threads.push(h),
                // Dropping `batcher` stops the threads already started.
                Err(e) => {
                    return Err(InferenceError::Unavailable {
                        model: name.to_string(),
                        reason: format!("cannot spawn execution thread: {e}"),
                    });
                }
            }
        }
        Ok(batcher)
    }

    /// Values per input row.
    pub fn input_width(&self) -> usize {
        self.shared.input_width
    }

    /// Values per output row.
    pub fn output_width(&self) -> usize {
        self.shared.output_width
    }

    /// Queues one request of `rows` rows (row-major `input`). Never blocks: a
    /// full queue is `Overloaded` at once. A request whose `deadline` passes
    /// before its batch starts is answered `Timeout` without running. The
    /// handle resolves to `rows * output_width()` values.
    pub fn submit(
        &self,
        input: Vec<f32>,
        rows: usize,
        deadline: Option<Instant>,
    ) -> Result<Pending, InferenceError> {
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            rx,
            model: Arc::clone(&self.model),
        };
        self.enqueue(input, rows, deadline, ReplyTo::Channel(tx))
            .map_err(|(e, _)| e)?;
        Ok(pending)
    }

    /// Like [`Batcher::submit`], but the answer (or the refusal) is given
    /// to `then`, run on the execution thread that finished the batch (or
    /// on the caller's thread when the request is refused or empty). `then`
    /// must be short and must not block: it runs before the thread's next
    /// batch. A request whose `cancelled` flag is set before it runs is
    /// dropped and `then` is never called.
    pub fn submit_then(
        &self,
        input: Vec<f32>,
        rows: usize,
        deadline: Option<Instant>,
        cancelled: Arc<AtomicBool>,
        then: Then,
    ) {
        if let Err((e, reply)) =
            self.enqueue(input, rows, deadline, ReplyTo::Then { then, cancelled })
        {
            reply.send(Err(e));
        }
    }

    fn enqueue(
        &self,
        input: Vec<f32>,
        rows: usize,
        deadline: Option<Instant>,
        reply: ReplyTo,
    ) -> Result<(), (InferenceError, ReplyTo)> {
        let sh = &*self.shared;
        if rows > sh.cfg.max_batch_size {
            let e = InferenceError::BatchTooLarge {
                model: sh.name.clone(),
                rows,
                max: sh.cfg.max_batch_size,
            };
            return Err((e, reply));
        }
        let expected = rows.saturating_mul(sh.input_width);
        if input.len() != expected {
            let e = InferenceError::InputShape {
                n: rows,
                features: sh.input_width,
                expected,
                got: input.len(),
            };
            return Err((e, reply));
        }
        if rows == 0 {
            // Nothing to run; answering here keeps empty requests out of batches.
            reply.send(Ok(Vec::new()));
            return Ok(());
        }
        let mut q = sh.queue.lock();
        if q.closing {
            drop(q);
            let e = InferenceError::Unavailable {
                model: sh.name.clone(),
                reason: "shutting down".into(),
            };
            return Err((e, reply));
        }
        if q.requests.len() >= sh.cfg.max_queue_size {
            drop(q);
            bump(&sh.counters.overloads, 1);
            let e = InferenceError::Overloaded {
                model: sh.name.clone(),
                max_queue_size: sh.cfg.max_queue_size,
            };
            return Err((e, reply));
        }
        let was_empty = q.requests.is_empty();
        q.requests.push_back(Request {
            input,
            rows,
            deadline,
            enqueued: Instant::now(),
            reply,
        });
        q.rows += rows;
        sh.counters
            .queued
            .store(q.requests.len(), Ordering::Relaxed);
        // Wake a worker only when this request can change its plan: an
        // idle worker (empty queue), a batch that is now full or at a
        // preferred size, no delay to wait for, or several instances. A
        // worker already waiting out the oldest request's delay would wake,
        // find nothing to run and sleep again: one futex round trip per
        // request for nothing. (A new request whose deadline is earlier than
        // that wake-up is answered Timeout at the wake-up, at most
        // `max_queue_delay` late.)
        let cfg = &sh.cfg;
        let wake = was_empty
            || q.rows >= cfg.max_batch_size
            || cfg.preferred_batch_sizes.contains(&q.rows)
            || cfg.max_queue_delay.is_zero()
            || cfg.instances > 1;
        drop(q);
        bump(&sh.counters.requests, 1);
        // Queued while an execution thread answers a batch: that thread
        // looks at this queue once the batch has answered.
        let handed_over = wake
            && HANDED_OVER.with_borrow_mut(|h| match h {
                Some(list) => {
                    if !list.iter().any(|x| Arc::ptr_eq(x, &self.shared)) {
                        list.push(Arc::clone(&self.shared));
                    }
                    true
                }
                None => false,
            });
        if wake && !handed_over {
            sh.ready.notify_one();
        }
        Ok(())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BatcherStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut histogram = [0u64; HISTOGRAM_BUCKETS];
        for (h, a) in histogram.iter_mut().zip(&c.histogram) {
            *h = get(a);
        }
        BatcherStats {
            requests: get(&c.requests),
            batches: get(&c.batches),
            requests_executed: get(&c.requests_executed),
            rows_executed: get(&c.rows_executed),
            timeouts: get(&c.timeouts),
            overloads: get(&c.overloads),
            dropped_cancelled: get(&c.dropped_cancelled),
            failed_batches: get(&c.failed_batches),
            unavailable: get(&c.unavailable),
            batch_rows_sum: get(&c.rows_executed),
            max_batch_rows: get(&c.max_batch_rows),
            batch_size_histogram: histogram,
            queued: c.queued.load(Ordering::Relaxed),
            inline_batches: get(&c.inline_batches),
        }
    }

    /// Stops accepting work, runs what is queued (without waiting for the
    /// queue delay), joins the threads, and answers anything left (only if a
    /// thread died) `Unavailable`.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let sh = &*self.shared;
        sh.queue.lock().closing = true;
        sh.ready.notify_all();
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            // Dropped by a continuation on one of its own threads: that
            // thread ends by itself once the queue is empty.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        let mut q = sh.queue.lock();
        for r in q.requests.drain(..) {
            bump(&sh.counters.unavailable, 1);
            r.reply.send(Err(InferenceError::Unavailable {
                model: sh.name.clone(),
                reason: "shut down".into(),
            }));
        }
        sh.counters.queued.store(0, Ordering::Relaxed);
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the queue head allows now.
enum Plan {
    /// Take this many requests from the head.
    Run(usize),
    /// Nothing to run before this instant (or a new request).
    WaitUntil(Instant),
    /// Nothing to run until a new request (or shutdown); the queue is empty
    /// unless the delay is unbounded.
    Idle,
}

struct Worker {
    shared: Arc<Shared>,
    exec: Arc<Mutex<Exec>>,
    batch: Vec<Request>,
    expired: Vec<Request>,
}

impl Worker {
    fn run(mut self) {
        let mut answers = Vec::new();
        while self.next_batch() {
            execute(
                &self.shared,
                &mut self.exec.lock(),
                &mut self.batch,
                &mut answers,
            );
            // Answered with no instance lock held: a continuation may queue
            // work anywhere, or drop the last handle of a model.
            let handed_over = answer(&mut answers);
            run_handed_over(&self.shared, handed_over);
        }
    }

    /// Waits until a batch is ready and moves it into `self.batch`; false when
    /// the batcher is closing and the queue is empty.
    fn next_batch(&mut self) -> bool {
        let sh = Arc::clone(&self.shared);
        let mut q = sh.queue.lock();
        loop {
            let plan = plan(&sh, &mut q, &mut self.expired);
            if !self.expired.is_empty() {
                let expired = std::mem::take(&mut self.expired);
                parking_lot::MutexGuard::unlocked(&mut q, || answer_expired(&sh, expired));
                // The queue may have changed meanwhile: plan again.
                continue;
            }
            match plan {
                Plan::Run(k) => {
                    take_batch(&sh, &mut q, k, &mut self.batch);
                    return true;
                }
                Plan::WaitUntil(t) => {
                    sh.ready.wait_until(&mut q, t);
                }
                Plan::Idle if q.closing => return false,
                Plan::Idle => sh.ready.wait(&mut q),
            }
        }
    }
}

/// Answers requests whose deadline passed in the queue (no lock held).
fn answer_expired(sh: &Shared, expired: Vec<Request>) {
    for r in expired {
        r.reply.send(Err(InferenceError::Timeout {
            model: sh.name.clone(),
        }));
    }
}

/// Moves the queue's first `k` requests into `batch`.
fn take_batch(sh: &Shared, q: &mut Queue, k: usize, batch: &mut Vec<Request>) {
    batch.extend(q.requests.drain(..k));
    q.rows = q.requests.iter().map(|r| r.rows).sum();
    sh.counters
        .queued
        .store(q.requests.len(), Ordering::Relaxed);
    if !q.requests.is_empty() {
        // Another idle instance may take the next batch.
        sh.ready.notify_one();
    }
}

/// Runs `batch` on one backend instance; each request's answer goes to
/// `answers`, to be sent by [`answer`] once the instance is unlocked.
fn execute(
    sh: &Shared,
    ex: &mut Exec,
    batch: &mut Vec<Request>,
    answers: &mut Vec<(ReplyTo, Reply)>,
) {
    let rows: usize = batch.iter().map(|r| r.rows).sum();
    ex.input.clear();
    for r in batch.iter() {
        ex.input.extend_from_slice(&r.input);
    }
    ex.out.clear();
    let Exec {
        backend,
        input,
        out,
        ..
    } = ex;
    let result = match catch_unwind(AssertUnwindSafe(|| backend.run(input, rows, out))) {
        Ok(Ok(())) if out.len() == rows * sh.output_width => Ok(()),
        Ok(Ok(())) => Err(InferenceError::Internal(format!(
            "model {} backend returned {} values for {rows} rows x {} outputs",
            sh.name,
            out.len(),
            sh.output_width
        ))),
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(InferenceError::Internal(format!(
                "model {} backend panicked: {msg}",
                sh.name
            )))
        }
    };
    let c = &sh.counters;
    bump(&c.batches, 1);
    bump(&c.requests_executed, batch.len() as u64);
    bump(&c.rows_executed, rows as u64);
    bump(&c.histogram[bucket(rows)], 1);
    c.max_batch_rows.fetch_max(rows as u64, Ordering::Relaxed);
    match result {
        Ok(()) => {
            let mut off = 0;
            for r in batch.drain(..) {
                let len = r.rows * sh.output_width;
                answers.push((r.reply, Ok(ex.out[off..off + len].to_vec())));
                off += len;
            }
        }
        Err(e) => {
            bump(&c.failed_batches, 1);
            answers.extend(batch.drain(..).map(|r| (r.reply, Err(e.clone()))));
        }
    }
}

/// Sends a batch's answers; returns the batchers their continuations queued
/// work on without waking their threads (for [`run_handed_over`]).
fn answer(answers: &mut Vec<(ReplyTo, Reply)>) -> Vec<Arc<Shared>> {
    let outer = HANDED_OVER.replace(Some(Vec::new()));
    for (reply, r) in answers.drain(..) {
        reply.send(r);
    }
    HANDED_OVER.replace(outer).unwrap_or_default()
}

/// Runs the batches handed over by [`execute`] on this thread (the thread of
/// model `own`), each on a free instance of its model, until none is left.
/// A model whose instances are all busy, or whose batch must wait, gets its
/// own thread woken; so does every one while `own` has requests waiting
/// (this thread has its own work: the next step runs beside it instead).
fn run_handed_over(own: &Shared, mut todo: Vec<Arc<Shared>>) {
    let mut next = 0;
    while let Some(sh) = todo.get(next).cloned() {
        next += 1;
        if own.counters.queued.load(Ordering::Relaxed) > 0 {
            sh.ready.notify_one();
            continue;
        }
        for more in run_inline(&sh) {
            if !todo[next..].iter().any(|x| Arc::ptr_eq(x, &more)) {
                todo.push(more);
            }
        }
    }
}

/// One batch of `sh` on this thread, if an instance is free and the queue
/// head may run now; returns the work its answers handed over.
fn run_inline(sh: &Arc<Shared>) -> Vec<Arc<Shared>> {
    for exec in &sh.execs {
        let Some(mut guard) = exec.try_lock() else {
            continue;
        };
        let ex = &mut *guard;
        let mut q = sh.queue.lock();
        let plan = plan(sh, &mut q, &mut ex.expired);
        let mut batch = std::mem::take(&mut ex.batch);
        let run = match plan {
            Plan::Run(k) => {
                take_batch(sh, &mut q, k, &mut batch);
                true
            }
            Plan::WaitUntil(_) => {
                // The model's thread sleeps until the batch is due.
                sh.ready.notify_one();
                false
            }
            Plan::Idle => false,
        };
        drop(q);
        let expired = std::mem::take(&mut ex.expired);
        let mut answers = Vec::new();
        if run && !batch.is_empty() {
            bump(&sh.counters.inline_batches, 1);
            execute(sh, ex, &mut batch, &mut answers);
        }
        ex.batch = batch;
        drop(guard);
        answer_expired(sh, expired);
        return answer(&mut answers);
    }
    // Every instance is running a batch; its thread (or this model's, if a
    // hand-over holds the instance) looks at the queue next.
    sh.ready.notify_one();
    Vec::new()
}

/// Drops expired and cancelled requests from the candidate batch at the queue
/// head, then decides whether it runs now. Only the head is scanned (at most
/// `max_batch_size` live requests), so the cost per wake-up is bounded.
/// Plans the queue head now ([`plan_head`]) and brings the queue's row
/// count and the queued gauge up to date.
fn plan(sh: &Shared, q: &mut Queue, expired: &mut Vec<Request>) -> Plan {
    let closing = q.closing;
    let p = plan_head(sh, &mut q.requests, expired, closing, Instant::now());
    q.rows = q.requests.iter().map(|r| r.rows).sum();
    sh.counters
        .queued
        .store(q.requests.len(), Ordering::Relaxed);
    p
}

fn plan_head(
    sh: &Shared,
    queue: &mut VecDeque<Request>,
    expired: &mut Vec<Request>,
    closing: bool,
    now: Instant,
) -> Plan {
    let cfg = &sh.cfg;
    let mut rows = 0usize;
    let mut take = 0usize;
    let mut preferred = None;
    let mut full = false;
    let mut earliest_deadline: Option<Instant> = None;
    let mut i = 0;
    while i < queue.len() {
        let r = &queue[i];
        if r.reply.is_closed() {
            bump(&sh.counters.dropped_cancelled, 1);
            queue.remove(i);
            continue;
        }
        if r.deadline.is_some_and(|d| d <= now) {
            bump(&sh.counters.timeouts, 1);
            // Answered by the caller once the queue lock is released: a
            // continuation may queue work on another (or this) batcher.
            if let Some(r) = queue.remove(i) {
                expired.push(r);
            }
            continue;
        }
        if rows + r.rows > cfg.max_batch_size {
            full = true;
            break;
        }
        rows += r.rows;
        take = i + 1;
        if let Some(d) = r.deadline {
            earliest_deadline = Some(earliest_deadline.map_or(d, |e| e.min(d)));
        }
        if cfg.preferred_batch_sizes.contains(&rows) {
            preferred = Some(take);
        }
        if rows == cfg.max_batch_size {
            full = true;
            break;
        }
        i += 1;
    }
    let Some(oldest) = queue.front() else {
        return Plan::Idle;
    };
    // A delay too large to add to an Instant means "never due".
    let due = oldest.enqueued.checked_add(cfg.max_queue_delay);
    if full || closing || cfg.max_queue_delay.is_zero() || due.is_some_and(|d| d <= now) {
        return Plan::Run(take);
    }
    if let Some(k) = preferred {
        return Plan::Run(k);
    }
    match (due, earliest_deadline) {
        (Some(a), Some(b)) => Plan::WaitUntil(a.min(b)),
        (Some(t), None) | (None, Some(t)) => Plan::WaitUntil(t),
        (None, None) => Plan::Idle,
    }
}
