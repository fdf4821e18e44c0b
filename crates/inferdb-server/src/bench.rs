//! `inferdb bench …`: the repository's benchmarks of the reference
//! workload, run against a real server over loopback HTTP, with the load
//! generator in the same process on its own thread ([`crate::loadgen`]).
//!
//! - `ingest`: the workload in NDJSON batches of 1,000 events; events/s and
//!   the acknowledgement latency of a batch (durable under the fsync policy
//!   and applied to every feature view).
//! - `features`: after ingesting the workload, Zipf-random reads of
//!   `user_txn` at a given concurrency; req/s and p50/p90/p99/p999, next to
//!   Redis answering HGETALL of a hash with the same features, measured in
//!   the same run (when redis-server is installed).
//! - `infer`: after ingesting the workload, `POST /infer` for Zipf-random
//!   users with random request fields (the reference ensemble: features
//!   joined, model run, record stored) at each concurrency level; req/s and
//!   p50/p90/p99/p999, then a check that the records stored equal the
//!   requests answered.

use crate::config::ServerConfig;
use crate::loadgen::{self, Report};
use crate::serve;
use crate::workload::{Generator, Size, UserSampler, WorkloadConfig};
use bytes::Bytes;
use inferdb_engine::{EngineConfig, FsyncPolicy};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Options shared by the benchmarks.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Workload size: small (100k events), medium (1M) or large (10M).
    #[arg(long, default_value = "medium")]
    pub size: Size,
    /// Workload seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Events per ingest request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Concurrent ingest connections.
    #[arg(long, default_value_t = 4)]
    pub ingest_concurrency: usize,
    /// fsync policy of the server under test.
    #[arg(long, default_value = "batch")]
    pub fsync: FsyncPolicy,
    /// Data directory (default: a fresh temporary one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Server worker threads (default: one per core).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Allowed lateness of the stream during the benchmark. The replay
    /// pushes 24 h of event time through in seconds (~20,000x real time), so
    /// batches sent concurrently are minutes apart in event time; at real-time
    /// speed they would be milliseconds apart. With the reference 5 s some
    /// batches would count as late and skip the window updates, flattering
    /// the figure; the default keeps every event of `medium` and `large` on
    /// time (`small` packs 14 min of event time into a batch: pass 1h). Pass
    /// 5s to see the effect.
    #[arg(long, default_value = "10m")]
    pub lateness: String,
    /// Seconds between snapshots of online state during the run (the
    /// server's default is 60, longer than most runs): pass 1 to measure
    /// ingest and inference while snapshots are taken.
    #[arg(long)]
    pub snapshot_interval_secs: Option<u64>,
}

/// Options of `bench infer`.
#[derive(Debug, Clone, clap::Args)]
pub struct InferBenchArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Concurrency levels, run one after the other.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub concurrency: Vec<usize>,
    /// Requests per concurrency level.
    #[arg(long, default_value_t = 20_000)]
    pub requests: u64,
    /// The model (default: the spec's default binding, the reference ensemble).
    #[arg(long)]
    pub model: Option<String>,
    /// Model repository (default: examples/models).
    #[arg(long)]
    pub model_repository: Option<PathBuf>,
    /// Seconds per concurrency level when wrk is the client (installed);
    /// without wrk, `--requests` requests from the built-in generator.
    #[arg(long, default_value_t = 10)]
    pub wrk_seconds: u64,
    /// Use the built-in load generator even when wrk is installed.
    #[arg(long)]
    pub builtin_client: bool,
    /// When `/infer` answers: sync (after its record is durable, the
    /// server's default) or async (once the record is queued for the log).
    #[arg(long, default_value = "sync")]
    pub inference_commit: inferdb_engine::InferenceCommit,
}

/// Options of `bench features`.
#[derive(Debug, Clone, clap::Args)]
pub struct FeatureBenchArgs {
    #[command(flatten)]
    pub common: BenchArgs,
    /// Concurrent readers.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Reads to send.
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
    /// Skip the Redis comparison.
    #[arg(long)]
    pub no_redis: bool,
    /// Seconds of reads when wrk is the client.
    #[arg(long, default_value_t = 10)]
    pub wrk_seconds: u64,
}

/// What wrk measured.
#[derive(Debug, Clone)]
pub struct WrkReport {
    /// Requests answered (any status).
    pub requests: u64,
    /// Seconds of the run.
    pub secs: f64,
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles (ms).
    pub p50_ms: f64,
    /// p90 (ms).
    pub p90_ms: f64,
    /// p99 (ms).
    pub p99_ms: f64,
    /// p99.9 (ms).
    pub p999_ms: f64,
    /// Socket errors and non-2xx answers.
    pub errors: u64,
}

// The requests are formatted once, before the run: formatting each in Lua
// as it is sent cost wrk about an eighth of its throughput, which on two
// shared cores is taken from the server (redis-benchmark's random keys cost
// it next to nothing). Each line of the file is a GET's path, or with
// INFERDB_WRK_POST set, the JSON body of a POST to that path.
const WRK_SCRIPT: &str = r#"
local reqs = {}
init = function(args)
  local post = os.getenv("INFERDB_WRK_POST")
  for line in io.lines(os.getenv("INFERDB_WRK_LINES")) do
    if post then
      reqs[#reqs + 1] = wrk.format("POST", post, {["Content-Type"] = "application/json"}, line)
    else
      reqs[#reqs + 1] = wrk.format("GET", line)
    end
  end
end
local i = 0
request = function()
  i = i + 1
  return reqs[(i % #reqs) + 1]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout + e.status))
end
"#;

/// What wrk sends, cycling through the list.
#[derive(Debug, Clone, Copy)]
pub enum WrkLoad<'a> {
    /// GETs of these paths.
    Get(&'a [String]),
    /// POSTs of these JSON bodies (one line each) to `path`.
    PostJson {
        /// The request path.
        path: &'a str,
        /// The bodies.
        bodies: &'a [Bytes],
    },
}

impl WrkReport {
    /// Requests wrk counted as answered with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.requests.saturating_sub(self.errors)
    }

    /// The figures as one line.
    pub fn summary_line(&self) -> String {
        format!(
            "{} req in {:.2} s: {:.0} req/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, errors {}",
            self.requests,
            self.secs,
            self.rps,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.errors
        )
    }
}

/// Whether wrk is installed.
pub fn wrk_installed() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok()
}

/// Runs wrk (one thread, `concurrency` connections) for `secs` seconds;
/// `None` if wrk is not installed.
pub fn wrk_run(
    addr: SocketAddr,
    load: WrkLoad<'_>,
    concurrency: usize,
    secs: u64,
) -> anyhow::Result<Option<WrkReport>> {
    if !wrk_installed() {
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let list = dir.path().join("requests.txt");
    let mut cmd = std::process::Command::new("wrk");
    match load {
        WrkLoad::Get(paths) => std::fs::write(&list, paths.join("\n"))?,
        WrkLoad::PostJson { path, bodies } => {
            let mut text = Vec::new();
            for b in bodies {
                anyhow::ensure!(
                    !b.contains(&b'\n'),
                    "a request body for wrk holds a line break"
                );
                text.extend_from_slice(b);
                text.push(b'\n');
            }
            std::fs::write(&list, text)?;
            cmd.env("INFERDB_WRK_POST", path);
        }
    }
    let script = dir.path().join("requests.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let out = cmd
        .args([
            "-t1",
            &format!("-c{concurrency}"),
            &format!("-d{secs}s"),
            "--timeout",
            "5s",
            "-s",
        ])
        .arg(&script)
        .arg(format!("http://{addr}"))
        .env("INFERDB_WRK_LINES", &list)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("WRK "))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "wrk printed no summary: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let n: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    anyhow::ensure!(n.len() == 7, "unexpected wrk summary {line:?}");
    let secs = (n[1] / 1e6).max(1e-9);
    Ok(Some(WrkReport {
        requests: n[0] as u64,
        secs,
        rps: n[0] / secs,
        p50_ms: n[2] / 1e3,
        p90_ms: n[3] / 1e3,
        p99_ms: n[4] / 1e3,
        p999_ms: n[5] / 1e3,
        errors: n[6] as u64,
    }))
}

const SPEC: &str = include_str!("../../../examples/payments/spec.toml");

/// The reference workload as NDJSON bodies of `batch` events; also the
/// number of deliberately bad events in them.
pub fn workload_bodies(size: Size, seed: u64, batch: usize) -> (Vec<Bytes>, u64, u64) {
    let cfg = WorkloadConfig::sized(size, seed);
    let mut bodies = Vec::new();
    let mut cur = String::with_capacity(batch * 200);
    let (mut n, mut bad, mut in_batch) = (0u64, 0u64, 0usize);
    for ev in Generator::new(&cfg) {
        n += 1;
        bad += ev.bad.is_some() as u64;
        cur.push_str(&ev.line);
        cur.push('\n');
        in_batch += 1;
        if in_batch == batch.max(1) {
            bodies.push(Bytes::from(std::mem::take(&mut cur)));
            in_batch = 0;
        }
    }
    if !cur.is_empty() {
        bodies.push(Bytes::from(cur));
    }
    (bodies, n, bad)
}

/// A server over a data directory with the reference spec.
/// `lateness` replaces the stream's allowed lateness of the reference spec
/// (5 s) when given.
pub fn server_config(
    data_dir: PathBuf,
    fsync: FsyncPolicy,
    worker_threads: Option<usize>,
    lateness: Option<&str>,
    model_repository: Option<PathBuf>,
) -> anyhow::Result<ServerConfig> {
    let spec = match lateness {
        Some(l) => SPEC.replacen("lateness = \"5s\"", &format!("lateness = \"{l}\""), 1),
        None => SPEC.to_string(),
    };
    let catalog = inferdb_types::Catalog::from_toml(&spec)?;
    let mut engine = EngineConfig::new(data_dir);
    engine.spec = Some(catalog.spec);
    engine.fsync = fsync;
    Ok(ServerConfig {
        listen: "127.0.0.1:0".parse()?,
        max_body_bytes: 64 << 20,
        max_keys_per_read: 1000,
        worker_threads,
        engine,
        model_repository,
        repository_poll: None,
        sql: Default::default(),
    })
}

/// The reference model repository: `./examples/models` when run from a
/// checkout, else the one next to the sources this binary was built from.
pub fn default_model_repository() -> Option<PathBuf> {
    let here = PathBuf::from("examples/models");
    if here.is_dir() {
        return Some(here);
    }
    let built = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/models"
    ));
    built.is_dir().then_some(built)
}

/// `n` `/infer` bodies: Zipf-random users, request fields drawn like the
/// workload's (merchant uniform, category/country/channel uniform,
/// log-normal amounts).
pub fn infer_bodies(n: usize, seed: u64) -> Vec<Bytes> {
    use crate::workload::{CATEGORIES, CHANNELS, COUNTRIES, MERCHANTS, merchant_id};
    use rand::{Rng, SeedableRng};
    let mut users = UserSampler::new(seed);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x1fe7);
    (0..n)
        .map(|_| {
            let amount = (rng.random_range(0.0f64..1.0).powi(3) * 2_000.0 * 100.0).round() / 100.0;
            let body = serde_json::json!({
                "entity_id": users.next_user(),
                "features": {
                    "amount": amount,
                    "merchant_id": merchant_id(rng.random_range(0..MERCHANTS)),
                    "category": CATEGORIES[rng.random_range(0..CATEGORIES.len())],
                    "country": COUNTRIES[rng.random_range(0..COUNTRIES.len())],
                    "channel": CHANNELS[rng.random_range(0..CHANNELS.len())],
                    "card_present": rng.random_bool(0.3),
                },
            });
            Bytes::from(body.to_string())
        })
        .collect()
}

/// Result of an ingest run.
pub struct IngestResult {
    /// Events sent.
    pub events: u64,
    /// Events the server accepted.
    pub accepted: u64,
    /// Events the server rejected.
    pub rejected: u64,
    /// Events the generator made bad on purpose.
    pub expected_bad: u64,
    /// The HTTP report (one request per batch).
    pub report: Report,
}

impl IngestResult {
    /// Events per second over the whole run.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.report.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Posts the bodies and adds up the answers.
pub fn ingest(
    addr: SocketAddr,
    bodies: Vec<Bytes>,
    events: u64,
    expected_bad: u64,
    concurrency: usize,
) -> anyhow::Result<IngestResult> {
    let report = loadgen::post_bodies(
        addr,
        "/v1/events/transactions",
        "application/x-ndjson",
        bodies,
        concurrency,
        true,
    )?;
    let (mut accepted, mut rejected) = (0u64, 0u64);
    for b in &report.bodies_json {
        accepted += b["accepted"].as_u64().unwrap_or(0);
        rejected += b["rejected"].as_array().map_or(0, |a| a.len() as u64);
    }
    Ok(IngestResult {
        events,
        accepted,
        rejected,
        expected_bad,
        report,
    })
}

fn print_ingest(r: &IngestResult, args: &BenchArgs) {
    println!(
        "ingest: {} events, NDJSON batches of {}, {} connections, fsync {}, lateness {}",
        r.events, args.batch, args.ingest_concurrency, args.fsync, args.lateness
    );
    println!(
        "  {:.0} events/s; accepted {}, rejected {} (generated bad: {}), HTTP errors {}",
        r.events_per_sec(),
        r.accepted,
        r.rejected,
        r.expected_bad,
        r.report.errors
    );
    println!(
        "  batch ack latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
        r.report.pct_ms(0.50),
        r.report.pct_ms(0.90),
        r.report.pct_ms(0.99),
        r.report.pct_ms(0.999),
        r.report.pct_ms(1.0)
    );
}

/// A histogram's sum and count in the server's Prometheus text.
fn metric_sum(text: &str, name: &str) -> (f64, f64) {
    let get = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{suffix}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get("_sum"), get("_count"))
}

/// Where the server spent its time, from its own histograms.
fn print_server_timings() {
    let Some(h) = crate::metrics::handle() else {
        return;
    };
    let text = h.render();
    let (apply, groups) = metric_sum(&text, inferdb_engine::metrics::APPLY_SECONDS);
    let (sync, _) = metric_sum(&text, inferdb_engine::metrics::WAL_SYNC_SECONDS);
    let (batches, _) = metric_sum(&text, inferdb_engine::metrics::WAL_GROUP_BATCHES);
    println!(
        "  server: {groups:.0} group commits ({:.1} batches each); {apply:.2} s applying, {sync:.2} s in fsync (large groups: the next fsync overlaps the apply)",
        batches / groups.max(1.0)
    );
    print_snapshots(&text);
}

/// How much the periodic snapshots taken so far cost the writer.
fn print_snapshots(text: &str) {
    let (capture, captures) = metric_sum(text, inferdb_engine::metrics::SNAPSHOT_CAPTURE_SECONDS);
    let (written, writes) = metric_sum(text, inferdb_engine::metrics::SNAPSHOT_SECONDS);
    if captures > 0.0 {
        println!(
            "  snapshots so far: {captures:.0}; the writer paused {:.1} ms per snapshot to capture the state, the snapshot thread took {:.0} ms to encode and write it",
            capture / captures * 1e3,
            written / writes.max(1.0) * 1e3
        );
    }
}

fn data_dir(args: &BenchArgs) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    Ok(match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("inferdb-bench-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    })
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "{cores} cores, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Generates the workload, starts a server on it and ingests it, printing
/// the ingest figures. The temporary data directory lives as long as the
/// returned guard.
fn start_and_ingest(
    args: &BenchArgs,
    models: Option<(PathBuf, inferdb_engine::InferenceCommit)>,
) -> anyhow::Result<(
    tokio::runtime::Runtime,
    serve::RunningServer,
    IngestResult,
    Option<tempfile::TempDir>,
)> {
    let t = Instant::now();
    let (bodies, events, bad) = workload_bodies(args.size, args.seed, args.batch);
    println!(
        "generated {} workload: {events} events, {} bodies in {:.1} s",
        args.size,
        bodies.len(),
        t.elapsed().as_secs_f64()
    );
    let (dir, keep) = data_dir(args)?;
    let rt = serve::runtime(args.worker_threads)?;
    let commit = models.as_ref().map(|m| m.1).unwrap_or_default();
    let mut config = server_config(
        dir,
        args.fsync,
        args.worker_threads,
        Some(&args.lateness),
        models.map(|m| m.0),
    )?;
    config.engine.inference_commit = commit;
    if let Some(secs) = args.snapshot_interval_secs {
        config.engine.snapshot_interval = std::time::Duration::from_secs(secs.max(1));
    }
    let server = rt.block_on(serve::start(config))?;
    let r = ingest(server.addr, bodies, events, bad, args.ingest_concurrency)?;
    print_ingest(&r, args);
    Ok((rt, server, r, keep))
}

/// Lets the history write what the ingest left in memory to Parquet (and
/// compact it) before reads are measured: otherwise that flush, one to two
/// seconds of a core after `medium`, runs during the first seconds of the
/// reads. Reads are measured on a settled server, as Redis's are.
fn settle(server: &serve::RunningServer) -> anyhow::Result<()> {
    let t = Instant::now();
    anyhow::ensure!(
        server.engine.history_caught_up(),
        "the history did not catch up with the ingest within 10 s"
    );
    let history = server.engine.history();
    history.flush()?;
    history.maintain(inferdb_types::Timestamp::now().millis())?;
    println!(
        "history flushed to Parquet before the reads ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `inferdb bench ingest`.
pub fn run_ingest(args: &BenchArgs) -> anyhow::Result<()> {
    println!("inferdb bench ingest — machine: {}", machine());
    let (rt, server, r, _keep) = start_and_ingest(args, None)?;
    let stats = server.engine.stream_stats("transactions")?;
    println!(
        "  server: stored {}, rejected {}, late {}; entities {:?}",
        stats.events_stored, stats.events_rejected, stats.events_late, stats.entities
    );
    print_server_timings();
    anyhow::ensure!(
        stats.events_stored == r.accepted,
        "server stored {} but acknowledged {}",
        stats.events_stored,
        r.accepted
    );
    rt.block_on(server.stop())?;
    Ok(())
}

/// `inferdb bench features`.
pub fn run_features(args: &FeatureBenchArgs) -> anyhow::Result<()> {
    println!("inferdb bench features — machine: {}", machine());
    let c = &args.common;
    let (rt, server, _, _keep) = start_and_ingest(c, None)?;
    settle(&server)?;

    let mut sampler = UserSampler::new(c.seed ^ 0x5eed);
    let paths: Vec<String> = (0..args.requests)
        .map(|_| format!("/v1/features/user_txn/{}", sampler.next_user()))
        .collect();
    let paths = Arc::new(paths);
    // Warm up connections and caches briefly, then measure.
    let warm: Arc<Vec<String>> = Arc::new(paths.iter().take(5_000).cloned().collect());
    loadgen::get_paths(server.addr, warm, args.concurrency)?;
    println!(
        "feature reads (user_txn, Zipf-random users, concurrency {}):",
        args.concurrency
    );
    // wrk, like redis-benchmark, is a lean single-threaded C client: with it
    // both servers get the same share of the two cores. Our own load
    // generator (hyper) is the fallback.
    let rps = match wrk_run(
        server.addr,
        WrkLoad::Get(&paths),
        args.concurrency,
        args.wrk_seconds,
    )? {
        Some(w) => {
            println!(
                "  inferdb (wrk -t1 -c{} -d{}s): {:.0} req/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, errors {}",
                args.concurrency,
                args.wrk_seconds,
                w.rps,
                w.p50_ms,
                w.p90_ms,
                w.p99_ms,
                w.p999_ms,
                w.errors
            );
            w.rps
        }
        None => {
            let rep = loadgen::get_paths(server.addr, paths, args.concurrency)?;
            println!(
                "  inferdb (built-in load generator; install wrk for a lean client): {}",
                rep.summary_line()
            );
            rep.rps()
        }
    };

    if !args.no_redis {
        let names = server.engine.feature_names("user_txn")?;
        let row = server
            .engine
            .read_features("user_txn", &["user_000000"], None)?;
        let fields: Vec<(String, String)> = names
            .iter()
            .zip(row.first().map(|r| r.values.clone()).unwrap_or_default())
            .map(|(n, v)| (n.clone(), v.to_json().to_string()))
            .collect();
        match loadgen::redis_hgetall_baseline(&fields, 100_000, args.concurrency, args.requests)? {
            Some(b) => {
                println!(
                    "  redis HGETALL ({} fields): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms  [{}]",
                    fields.len(),
                    b.rps,
                    b.p50_ms,
                    b.p99_ms,
                    b.command
                );
                println!("  ratio inferdb/redis req/s: {:.2}", rps / b.rps.max(1e-9));
            }
            None => {
                println!("  redis: redis-server / redis-benchmark not installed; no comparison")
            }
        }
    }
    rt.block_on(server.stop())?;
    Ok(())
}

/// `inferdb bench infer`.
pub fn run_infer(args: &InferBenchArgs) -> anyhow::Result<()> {
    println!("inferdb bench infer — machine: {}", machine());
    let repo = args
        .model_repository
        .clone()
        .or_else(default_model_repository)
        .ok_or_else(|| anyhow::anyhow!("no model repository: pass --model-repository DIR"))?;
    let (rt, server, _, _keep) =
        start_and_ingest(&args.common, Some((repo.clone(), args.inference_commit)))?;
    settle(&server)?;
    let mut bodies = infer_bodies(50_000, args.common.seed ^ 0x1f);
    if let Some(m) = &args.model {
        for b in &mut bodies {
            let mut v: serde_json::Value = serde_json::from_slice(b)?;
            v["model"] = serde_json::json!(m);
            *b = Bytes::from(v.to_string());
        }
    }
    let bodies = Arc::new(bodies);
    let model = args
        .model
        .as_deref()
        .unwrap_or("the default binding (fraud_ensemble)");
    println!(
        "POST /infer ({model}, repository {}), Zipf-random users, records stored, inference commit {}:",
        repo.display(),
        args.inference_commit
    );
    // Warm-up: connections, allocator, batcher threads.
    let warm = loadgen::post_json_repeat(server.addr, "/infer", bodies.clone(), 2_000, 16)?;
    anyhow::ensure!(warm.errors == 0, "{} warm-up requests failed", warm.errors);
    let stored = || -> anyhow::Result<u64> {
        Ok(server
            .engine
            .stream_stats(inferdb_types::INFERENCE_STREAM)?
            .events_stored)
    };
    let mut answered = warm.ok;
    // Requests wrk stopped waiting for at the end of a run (at most one per
    // connection): the server may still have answered them and stored
    // their records.
    let mut cut_off = 0u64;
    let use_wrk = !args.builtin_client && wrk_installed();
    if !use_wrk && !args.builtin_client {
        println!("  (wrk not installed: the built-in load generator is the client)");
    }
    for &c in &args.concurrency {
        if use_wrk {
            let load = WrkLoad::PostJson {
                path: "/infer",
                bodies: &bodies,
            };
            let Some(w) = wrk_run(server.addr, load, c, args.wrk_seconds)? else {
                anyhow::bail!("wrk could not be started");
            };
            println!(
                "  concurrency {c:>3} (wrk -t1 -c{c} -d{}s): {}",
                args.wrk_seconds,
                w.summary_line()
            );
            answered += w.ok();
            cut_off += c as u64;
        } else {
            let rep =
                loadgen::post_json_repeat(server.addr, "/infer", bodies.clone(), args.requests, c)?;
            answered += rep.ok;
            println!("  concurrency {c:>3}: {}", rep.summary_line());
        }
        // Let the requests in flight when wrk stopped finish, and (under
        // `async`) the records of answered requests reach the log.
        let mut last = stored()?;
        loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let now = stored()?;
            if now == last {
                break;
            }
            last = now;
        }
    }
    let stored = stored()?;
    println!("  inference records stored: {stored}, requests answered: {answered}");
    anyhow::ensure!(
        stored >= answered && stored <= answered + cut_off,
        "{stored} records stored for {answered} answered requests ({cut_off} may have been cut off by wrk)"
    );
    if let Some(m) = &server.models {
        for name in m.loaded_names() {
            if let Ok(h) = m.model(&name, None)
                && let Some(b) = h.stats().batcher
                && b.batches > 0
            {
                println!(
                    "  {name}: {} batches ({} run by the previous step's thread), {:.1} rows per batch on average, max {}",
                    b.batches,
                    b.inline_batches,
                    b.rows_executed as f64 / b.batches as f64,
                    b.max_batch_rows
                );
            }
        }
    }
    if let Some(h) = crate::metrics::handle() {
        print_snapshots(&h.render());
    }
    rt.block_on(server.stop())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::tests::serve;

    const NOT_INSTALLED: &str = "wrk is not installed (.ci/run installs it)";

    #[test]
    fn wrk_posts_the_bodies_and_counts_answers() {
        let (addr, seen) = serve();
        let bodies: Vec<Bytes> = (0..10)
            .map(|i| Bytes::from(format!("{{\"n\":{i}}}")))
            .collect();
        let load = WrkLoad::PostJson {
            path: "/echo",
            bodies: &bodies,
        };
        let r = wrk_run(addr, load, 4, 1).unwrap().expect(NOT_INSTALLED);
        assert!(r.requests > 50, "{}", r.summary_line());
        assert_eq!(r.errors, 0, "{}", r.summary_line());
        assert_eq!(r.ok(), r.requests);
        // Every body arrived intact, and nothing else; at most one request
        // per connection was cut off at the end.
        let got = seen.bodies.lock().unwrap().clone();
        assert_eq!(got.len(), bodies.len(), "{:?}", got.keys());
        for b in &bodies {
            assert!(got.contains_key(b.as_ref()), "{b:?} never arrived");
        }
        let total: u64 = got.values().sum();
        assert!(
            total >= r.requests && total <= r.requests + 4,
            "server saw {total}, wrk counted {}",
            r.requests
        );
    }

    #[test]
    fn wrk_gets_the_paths_and_counts_failures() {
        let (addr, seen) = serve();
        let paths: Vec<String> = (0..5).map(|i| format!("/get/k{i}")).collect();
        let r = wrk_run(addr, WrkLoad::Get(&paths), 2, 1)
            .unwrap()
            .expect(NOT_INSTALLED);
        assert!(r.requests > 50 && r.errors == 0, "{}", r.summary_line());
        let got = seen.gets.lock().unwrap().clone();
        let mut keys: Vec<&String> = got.keys().collect();
        keys.sort();
        assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"]);
        // A 500 is an error, not an answer.
        let body = [Bytes::from_static(b"{}")];
        let load = WrkLoad::PostJson {
            path: "/fail",
            bodies: &body,
        };
        let r = wrk_run(addr, load, 2, 1).unwrap().expect(NOT_INSTALLED);
        assert!(r.requests > 0, "{}", r.summary_line());
        assert_eq!(r.errors, r.requests, "{}", r.summary_line());
        assert_eq!(r.ok(), 0);
    }

    #[test]
    fn wrk_refuses_a_body_with_a_line_break() {
        let (addr, _) = serve();
        let body = [Bytes::from_static(b"{\n}")];
        let load = WrkLoad::PostJson {
            path: "/echo",
            bodies: &body,
        };
        let err = wrk_run(addr, load, 1, 1).unwrap_err().to_string();
        assert!(err.contains("line break"), "{err}");
    }
}
