//! The HTTP load generator of the benchmarks, and the Redis baseline they are
//! compared with.
//!
//! Each call runs its client on a thread of its own, with a current-thread
//! tokio runtime, so that the client never competes with the server for the
//! server's worker threads. It opens one keep-alive HTTP/1.1 connection per
//! concurrency slot (hyper's low-level `client::conn::http1`), and each slot
//! sends its requests back to back (a closed loop), taking the index of its
//! next request from a counter shared by all slots. The latency of every 2xx
//! answer goes into an HDR histogram in microseconds; non-2xx answers,
//! transport failures and requests that take longer than [`REQUEST_TIMEOUT`]
//! count as errors and are kept out of the histogram. A slot whose request
//! failed in transport reconnects; a slot that cannot reconnect stops, and the
//! call fails if requests were left unsent.
//!
//! The calls block the calling thread until the run ends: call them from a
//! plain thread (or `spawn_blocking`), never from a task of the runtime that
//! serves the requests.
//!
//! [`redis_hgetall_baseline`] runs `redis-benchmark` against a throwaway
//! `redis-server` holding one hash per user, the reference point for the
//! online feature lookup (scenario S2).

use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Uri, header};
use hyper_util::rt::TokioIo;

/// A request that takes longer than this counts as an error and its
/// connection is replaced.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Highest latency the histograms track exactly (1 h, in µs); longer ones are
/// recorded as this value.
const HIST_MAX_US: u64 = 3_600_000_000;

/// The outcome of one load-generator run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests that were sent and finished, successfully or not.
    pub requests: u64,
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Non-2xx answers, transport failures and timeouts.
    pub errors: u64,
    /// Wall time from the first request (connections already open) to the
    /// last answer.
    pub elapsed: Duration,
    /// Latencies of the 2xx answers, in microseconds.
    pub hist: Histogram<u64>,
    /// With `collect_bodies` ([`post_bodies`]): one entry per body, in the
    /// order of the bodies — the answer parsed as JSON, a JSON string holding
    /// the raw text when it is not JSON, or `null` when no answer came.
    /// Empty otherwise.
    pub bodies_json: Vec<serde_json::Value>,
}

impl Report {
    /// Finished requests per second of wall time.
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency at quantile `q` (like 0.99) of the 2xx answers, in
    /// milliseconds; 0 when there were none.
    pub fn pct_ms(&self, q: f64) -> f64 {
        if self.hist.is_empty() {
            return 0.0;
        }
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    /// `N req in X s: R req/s, p50 a ms, p90 b ms, p99 c ms, p999 d ms, errors e`.
    pub fn summary_line(&self) -> String {
        format!(
            "{} req in {:.2} s: {:.0} req/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, errors {}",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.rps(),
            self.pct_ms(0.5),
            self.pct_ms(0.9),
            self.pct_ms(0.99),
            self.pct_ms(0.999),
            self.errors,
        )
    }
}

/// POSTs each body once, spread over `concurrency` connections, with the
/// given content type. Non-2xx counts as an error. With `collect_bodies`,
/// `Report::bodies_json[i]` is the answer to `bodies[i]`.
pub fn post_bodies(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    bodies: Vec<Bytes>,
    concurrency: usize,
    collect_bodies: bool,
) -> anyhow::Result<Report> {
    let uri: Uri = path
        .parse()
        .with_context(|| format!("bad request path {path:?}"))?;
    let content_type = header::HeaderValue::from_str(content_type)
        .with_context(|| format!("bad content type {content_type:?}"))?;
    let host = host_header(addr)?;
    let total = bodies.len() as u64;
    let build = move |i: u64| -> anyhow::Result<Request<Full<Bytes>>> {
        let body = bodies
            .get(i as usize)
            .cloned()
            .ok_or_else(|| anyhow!("no body {i}"))?;
        Ok(Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(header::HOST, host.clone())
            .header(header::CONTENT_TYPE, content_type.clone())
            .body(Full::new(body))?)
    };
    run(Plan {
        addr,
        total,
        concurrency,
        collect_bodies,
        build: Arc::new(build),
    })
}

/// GETs `paths[i]` for every i, over `concurrency` connections. Non-2xx
/// counts as an error.
pub fn get_paths(
    addr: SocketAddr,
    paths: Arc<Vec<String>>,
    concurrency: usize,
) -> anyhow::Result<Report> {
    // Parsed up front, so that the client spends its time on requests.
    let uris = paths
        .iter()
        .map(|p| {
            p.parse::<Uri>()
                .with_context(|| format!("bad request path {p:?}"))
        })
        .collect::<anyhow::Result<Vec<Uri>>>()?;
    let host = host_header(addr)?;
    let total = uris.len() as u64;
    let build = move |i: u64| -> anyhow::Result<Request<Full<Bytes>>> {
        let uri = uris
            .get(i as usize)
            .cloned()
            .ok_or_else(|| anyhow!("no path {i}"))?;
        Ok(Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(header::HOST, host.clone())
            .body(Full::new(Bytes::new()))?)
    };
    run(Plan {
        addr,
        total,
        concurrency,
        collect_bodies: false,
        build: Arc::new(build),
    })
}

/// POSTs `bodies[i % bodies.len()]` as `application/json`, `requests` times,
/// over `concurrency` connections. Non-2xx counts as an error.
pub fn post_json_repeat(
    addr: SocketAddr,
    path: &str,
    bodies: Arc<Vec<Bytes>>,
    requests: u64,
    concurrency: usize,
) -> anyhow::Result<Report> {
    if bodies.is_empty() && requests > 0 {
        bail!("post_json_repeat needs at least one body");
    }
    let uri: Uri = path
        .parse()
        .with_context(|| format!("bad request path {path:?}"))?;
    let host = host_header(addr)?;
    let json = header::HeaderValue::from_static("application/json");
    let build = move |i: u64| -> anyhow::Result<Request<Full<Bytes>>> {
        let body = bodies[(i % bodies.len() as u64) as usize].clone();
        Ok(Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(header::HOST, host.clone())
            .header(header::CONTENT_TYPE, json.clone())
            .body(Full::new(body))?)
    };
    run(Plan {
        addr,
        total: requests,
        concurrency,
        collect_bodies: false,
        build: Arc::new(build),
    })
}

type BuildRequest = dyn Fn(u64) -> anyhow::Result<Request<Full<Bytes>>> + Send + Sync;

/// One run: requests `0..total`, request `i` built by `build(i)`.
struct Plan {
    addr: SocketAddr,
    total: u64,
    concurrency: usize,
    collect_bodies: bool,
    build: Arc<BuildRequest>,
}

/// What one slot did.
struct SlotOutcome {
    requests: u64,
    ok: u64,
    errors: u64,
    hist: Histogram<u64>,
    bodies: Vec<(u64, serde_json::Value)>,
    /// Why the slot stopped before the requests ran out.
    failure: Option<anyhow::Error>,
}

fn host_header(addr: SocketAddr) -> anyhow::Result<header::HeaderValue> {
    Ok(header::HeaderValue::from_str(&addr.to_string())?)
}

fn new_hist() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).map_err(|e| anyhow!("histogram: {e:?}"))
}

/// Runs `plan` on a thread of its own with a current-thread runtime.
fn run(plan: Plan) -> anyhow::Result<Report> {
    let handle = std::thread::Builder::new()
        .name("inferdb-loadgen".to_string())
        .spawn(move || -> anyhow::Result<Report> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("load generator runtime")?;
            rt.block_on(drive(plan))
        })
        .context("spawning the load generator thread")?;
    handle
        .join()
        .map_err(|_| anyhow!("the load generator thread panicked"))?
}

async fn drive(plan: Plan) -> anyhow::Result<Report> {
    let Plan {
        addr,
        total,
        concurrency,
        collect_bodies,
        build,
    } = plan;
    let slots = concurrency
        .max(1)
        .min(usize::try_from(total).unwrap_or(usize::MAX));
    let mut senders = Vec::with_capacity(slots);
    for _ in 0..slots {
        senders.push(connect(addr).await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for sender in senders {
        let slot = Slot {
            addr,
            total,
            collect_bodies,
            build: Arc::clone(&build),
            next: Arc::clone(&next),
        };
        let hist = new_hist()?;
        set.spawn(slot.run(sender, hist));
    }
    let mut report = Report {
        requests: 0,
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        hist: new_hist()?,
        bodies_json: Vec::new(),
    };
    let mut bodies = Vec::new();
    let mut failure = None;
    while let Some(joined) = set.join_next().await {
        let outcome = joined.context("load generator slot")?;
        report.requests += outcome.requests;
        report.ok += outcome.ok;
        report.errors += outcome.errors;
        report
            .hist
            .add(&outcome.hist)
            .map_err(|e| anyhow!("merging histograms: {e:?}"))?;
        bodies.extend(outcome.bodies);
        if failure.is_none() {
            failure = outcome.failure;
        }
    }
    report.elapsed = start.elapsed();
    if report.requests < total {
        let why = failure.unwrap_or_else(|| anyhow!("no slot left"));
        return Err(why.context(format!(
            "only {} of {total} requests were sent to {addr}",
            report.requests
        )));
    }
    if collect_bodies {
        bodies.sort_unstable_by_key(|(i, _)| *i);
        report.bodies_json = bodies.into_iter().map(|(_, v)| v).collect();
    }
    Ok(report)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP/1.1 handshake with {addr}"))?;
    // The connection task ends when the sender is dropped or the peer closes.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "load generator connection ended");
        }
    });
    Ok(sender)
}

/// One concurrency slot: one connection, requests back to back.
struct Slot {
    addr: SocketAddr,
    total: u64,
    collect_bodies: bool,
    build: Arc<BuildRequest>,
    next: Arc<AtomicU64>,
}

impl Slot {
    async fn run(self, mut sender: SendRequest<Full<Bytes>>, hist: Histogram<u64>) -> SlotOutcome {
        let mut out = SlotOutcome {
            requests: 0,
            ok: 0,
            errors: 0,
            hist,
            bodies: Vec::new(),
            failure: None,
        };
        loop {
            // A connection the server closed while idle (keep-alive limit) is
            // replaced before a request is taken, and costs no error.
            if sender.is_closed() || sender.ready().await.is_err() {
                match connect(self.addr).await {
                    Ok(s) => sender = s,
                    Err(e) => {
                        out.failure = Some(e);
                        break;
                    }
                }
            }
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.total {
                break;
            }
            let request = match (self.build)(i) {
                Ok(r) => r,
                Err(e) => {
                    out.failure = Some(e.context(format!("building request {i}")));
                    break;
                }
            };
            let t0 = Instant::now();
            let answer =
                tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut sender, request)).await;
            let micros = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            out.requests += 1;
            let answer =
                answer.unwrap_or_else(|_| Err(anyhow!("no answer within {REQUEST_TIMEOUT:?}")));
            match answer {
                Ok((status, body)) => {
                    if status.is_success() {
                        out.ok += 1;
                        out.hist.saturating_record(micros.max(1));
                    } else {
                        out.errors += 1;
                    }
                    if self.collect_bodies {
                        out.bodies.push((i, parse_body(&body)));
                    }
                }
                Err(why) => {
                    out.errors += 1;
                    if self.collect_bodies {
                        out.bodies.push((i, serde_json::Value::Null));
                    }
                    tracing::debug!(error = %why, request = i, "load generator request failed");
                    // The connection is in an unknown state: replace it.
                    match connect(self.addr).await {
                        Ok(s) => sender = s,
                        Err(e) => {
                            out.failure = Some(e.context(why));
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn parse_body(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// What `redis-benchmark` measured for `HGETALL` of random user hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisBaseline {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// The `redis-benchmark` command line that was run.
    pub command: String,
}

/// Measures Redis answering `HGETALL` for random users, as the baseline of the
/// online feature lookup.
///
/// When `redis-server`, `redis-cli` and `redis-benchmark` are all on `PATH`:
/// starts `redis-server` on a free loopback port (no persistence, in a
/// temporary directory), loads `keys` hashes `user:000000000000` …
/// (12 digits, the expansion of redis-benchmark's `__rand_int__`) holding
/// `fields` with `redis-cli --pipe`, runs `redis-benchmark -h 127.0.0.1 -p P
/// -c CONC -n REQUESTS -r KEYS --csv HGETALL user:__rand_int__` (keys uniform,
/// one client thread, no pipelining), stops the server and returns
/// `Some`. Returns `Ok(None)` when any of the three tools is missing.
pub fn redis_hgetall_baseline(
    fields: &[(String, String)],
    keys: usize,
    concurrency: usize,
    requests: u64,
) -> anyhow::Result<Option<RedisBaseline>> {
    let (Some(server), Some(cli), Some(bench)) = (
        find_on_path("redis-server"),
        find_on_path("redis-cli"),
        find_on_path("redis-benchmark"),
    ) else {
        return Ok(None);
    };
    if fields.is_empty() {
        bail!("a Redis hash needs at least one field");
    }
    if keys == 0 || requests == 0 {
        bail!("the Redis baseline needs at least one key and one request");
    }
    let dir = tempfile::tempdir().context("temporary directory for redis-server")?;
    let (server, port) = start_redis(&server, dir.path())?;
    load_hashes(&cli, port, fields, keys)?;
    let dbsize = redis_cli(&cli, port, &["DBSIZE"])?;
    if dbsize.trim() != keys.to_string() {
        bail!(
            "redis holds {} keys after loading, expected {keys}",
            dbsize.trim()
        );
    }

    let args = [
        "-h".to_string(),
        "127.0.0.1".to_string(),
        "-p".to_string(),
        port.to_string(),
        "-c".to_string(),
        concurrency.max(1).to_string(),
        "-n".to_string(),
        requests.to_string(),
        "-r".to_string(),
        keys.to_string(),
        "--csv".to_string(),
        "HGETALL".to_string(),
        "user:__rand_int__".to_string(),
    ];
    let command = format!("redis-benchmark {}", args.join(" "));
    let output = Command::new(&bench)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command}"))?;
    drop(server);
    if !output.status.success() {
        bail!(
            "{command} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let csv = String::from_utf8_lossy(&output.stdout);
    let (rps, p50_ms, p99_ms) =
        parse_benchmark_csv(&csv).with_context(|| format!("reading the output of {command}"))?;
    Ok(Some(RedisBaseline {
        rps,
        p50_ms,
        p99_ms,
        command,
    }))
}

/// The first executable file called `name` in a directory of `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A child process killed and reaped when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `redis-server` on a free loopback port and waits until it answers
/// PING. The port is found by binding port 0 and closing it, so another
/// process may take it first: then the server exits and another port is
/// tried.
fn start_redis(server: &Path, dir: &Path) -> anyhow::Result<(KillOnDrop, u16)> {
    let log = dir.join("redis.log");
    let mut last_error = anyhow!("redis-server did not start");
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(server)
            .arg("--save")
            .arg("")
            .args(["--appendonly", "no", "--bind", "127.0.0.1"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", server.display()))?;
        let mut child = KillOnDrop(child);
        match wait_for_pong(&mut child, port) {
            Ok(()) => return Ok((child, port)),
            Err(e) => {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                last_error = e.context(format!("redis-server log: {}", tail.join(" | ")));
            }
        }
    }
    Err(last_error)
}

fn wait_for_pong(child: &mut KillOnDrop, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait()? {
            bail!("redis-server exited at start ({status})");
        }
        if ping(port).unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("redis-server on port {port} did not answer PING within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ping(port: u16) -> std::io::Result<bool> {
    let mut stream = StdTcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 16];
    let n = stream.read(&mut buf)?;
    Ok(buf[..n].starts_with(b"+PONG"))
}

/// Loads the hashes through `redis-cli --pipe`, as RESP `HSET` commands.
fn load_hashes(
    cli: &Path,
    port: u16,
    fields: &[(String, String)],
    keys: usize,
) -> anyhow::Result<()> {
    let mut child = Command::new(cli)
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("--pipe")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", cli.display()))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("redis-cli has no stdin"))?;
    // The fields are the same for every key: encode them once.
    let mut tail = Vec::new();
    for (name, value) in fields {
        push_bulk(&mut tail, name.as_bytes());
        push_bulk(&mut tail, value.as_bytes());
    }
    let head = format!("*{}\r\n$4\r\nHSET\r\n", 2 + 2 * fields.len());
    let written = (|| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, stdin);
        for k in 0..keys {
            w.write_all(head.as_bytes())?;
            let mut key = Vec::with_capacity(24);
            push_bulk(&mut key, format!("user:{k:012}").as_bytes());
            w.write_all(&key)?;
            w.write_all(&tail)?;
        }
        w.flush()
    })();
    // Closing stdin (the writer was consumed above) tells redis-cli the pipe
    // is over.
    let output = child
        .wait_with_output()
        .context("waiting for redis-cli --pipe")?;
    written.context("writing to redis-cli --pipe")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !stdout.contains("errors: 0,") {
        bail!(
            "redis-cli --pipe failed ({}): {} {}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn push_bulk(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(format!("${}\r\n", s.len()).as_bytes());
    buf.extend_from_slice(s);
    buf.extend_from_slice(b"\r\n");
}

fn redis_cli(cli: &Path, port: u16, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(cli)
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running redis-cli {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "redis-cli {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `(rps, p50_ms, p99_ms)` from `redis-benchmark --csv`, whose output is a
/// header `"test","rps","avg_latency_ms",…,"p50_latency_ms",…` and one row
/// per test.
fn parse_benchmark_csv(csv: &str) -> anyhow::Result<(f64, f64, f64)> {
    let split = |line: &str| -> Vec<String> {
        line.split(',')
            .map(|c| c.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut lines = csv.split(['\n', '\r']).filter(|l| !l.trim().is_empty());
    let header = lines
        .by_ref()
        .find(|l| l.contains("\"rps\""))
        .ok_or_else(|| anyhow!("no CSV header in {csv:?}"))?;
    let header = split(header);
    let row = lines
        .find(|l| l.trim_start_matches('"').starts_with("HGETALL"))
        .ok_or_else(|| anyhow!("no HGETALL row in {csv:?}"))?;
    let row = split(row);
    let column = |name: &str| -> anyhow::Result<f64> {
        let idx = header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| anyhow!("no column {name} in {header:?}"))?;
        let cell = row.get(idx).ok_or_else(|| anyhow!("short row {row:?}"))?;
        cell.parse::<f64>()
            .with_context(|| format!("column {name} is {cell:?}"))
    };
    Ok((
        column("rps")?,
        column("p50_latency_ms")?,
        column("p99_latency_ms")?,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    use axum::Router;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    use axum::routing::{get, post};

    /// What the test server was sent: POST /echo bodies and GET /get/{id}
    /// ids, with their counts.
    #[derive(Clone, Default)]
    pub(crate) struct Seen {
        pub(crate) bodies: Arc<Mutex<HashMap<Vec<u8>, u64>>>,
        pub(crate) gets: Arc<Mutex<HashMap<String, u64>>>,
    }

    /// A tiny axum server on 127.0.0.1:0, on a runtime thread of its own.
    pub(crate) fn serve() -> (SocketAddr, Seen) {
        let seen = Seen::default();
        let app = Router::new()
            .route(
                "/echo",
                post(|State(s): State<Seen>, body: Bytes| async move {
                    *s.bodies.lock().unwrap().entry(body.to_vec()).or_default() += 1;
                    format!("{{\"len\":{}}}", body.len())
                }),
            )
            .route(
                "/fail",
                post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .route("/text", post(|| async { "not json" }))
            .route(
                "/get/{id}",
                get(
                    |State(s): State<Seen>, UrlPath(id): UrlPath<String>| async move {
                        *s.gets.lock().unwrap().entry(id).or_default() += 1;
                        "{}"
                    },
                ),
            )
            .with_state(seen.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        (rx.recv().unwrap(), seen)
    }

    #[test]
    fn post_bodies_sends_each_body_once_and_collects_answers() {
        let (addr, seen) = serve();
        let bodies: Vec<Bytes> = (0..500)
            .map(|i| Bytes::from(format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 7))))
            .collect();
        let report =
            post_bodies(addr, "/echo", "application/json", bodies.clone(), 8, true).unwrap();
        assert_eq!(report.requests, 500);
        assert_eq!(report.ok, 500);
        assert_eq!(report.errors, 0);
        assert_eq!(report.hist.len(), 500);
        let counts = seen.bodies.lock().unwrap();
        assert_eq!(counts.len(), 500);
        for b in &bodies {
            assert_eq!(counts.get(b.as_ref()), Some(&1), "{b:?}");
        }
        // Answers come back in the order of the bodies.
        assert_eq!(report.bodies_json.len(), 500);
        for (b, answer) in bodies.iter().zip(&report.bodies_json) {
            assert_eq!(answer["len"].as_u64(), Some(b.len() as u64));
        }
        assert!(report.rps() > 0.0);
        let line = report.summary_line();
        assert!(
            line.starts_with("500 req in ") && line.ends_with("errors 0"),
            "{line}"
        );
    }

    #[test]
    fn non_2xx_counts_as_error_and_text_is_kept() {
        let (addr, _) = serve();
        let bodies = vec![Bytes::from_static(b"{}"); 50];
        let report =
            post_bodies(addr, "/fail", "application/json", bodies.clone(), 4, false).unwrap();
        assert_eq!((report.requests, report.ok, report.errors), (50, 0, 50));
        assert!(report.hist.is_empty());
        assert_eq!(report.pct_ms(0.99), 0.0);
        assert!(report.bodies_json.is_empty());

        let report = post_bodies(addr, "/text", "text/plain", bodies, 4, true).unwrap();
        assert_eq!(report.ok, 50);
        assert!(report.bodies_json.iter().all(|v| v == "not json"));
    }

    #[test]
    fn get_paths_and_repeat_with_monotone_percentiles() {
        let (addr, seen) = serve();
        let paths: Vec<String> = (0..2000).map(|i| format!("/get/u{}", i % 100)).collect();
        let report = get_paths(addr, Arc::new(paths), 16).unwrap();
        assert_eq!((report.requests, report.ok, report.errors), (2000, 2000, 0));
        let gets = seen.gets.lock().unwrap();
        assert_eq!(gets.len(), 100);
        assert!(gets.values().all(|&n| n == 20));
        drop(gets);
        let qs = [0.5, 0.9, 0.99, 0.999, 1.0];
        let ps: Vec<f64> = qs.iter().map(|&q| report.pct_ms(q)).collect();
        assert!(ps.windows(2).all(|w| w[0] <= w[1]), "{ps:?}");
        assert!(ps[0] > 0.0);

        let bodies = Arc::new(vec![Bytes::from_static(b"a"), Bytes::from_static(b"bb")]);
        let report = post_json_repeat(addr, "/echo", bodies, 301, 3).unwrap();
        assert_eq!((report.requests, report.ok), (301, 301));
        let counts = seen.bodies.lock().unwrap();
        assert_eq!(counts.get(b"a".as_slice()), Some(&151));
        assert_eq!(counts.get(b"bb".as_slice()), Some(&150));
    }

    #[test]
    fn more_slots_than_requests_and_zero_requests() {
        let (addr, _) = serve();
        let report = get_paths(addr, Arc::new(vec!["/get/a".to_string()]), 64).unwrap();
        assert_eq!(report.ok, 1);
        let report = get_paths(addr, Arc::new(Vec::new()), 8).unwrap();
        assert_eq!(report.requests, 0);
        assert_eq!(report.rps(), 0.0);
    }

    #[test]
    fn unreachable_server_is_an_error() {
        // A port that was free a moment ago.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let err = get_paths(addr, Arc::new(vec!["/".to_string()]), 1).unwrap_err();
        assert!(format!("{err:#}").contains("connecting"), "{err:#}");
    }

    #[test]
    fn benchmark_csv_is_parsed() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"HGETALL user:__rand_int__\",\"54054.05\",\"0.090\",\"0.032\",\"0.071\",\"0.183\",\"0.223\",\"0.495\"\n";
        assert_eq!(parse_benchmark_csv(csv).unwrap(), (54054.05, 0.071, 0.223));
        assert!(parse_benchmark_csv("garbage").is_err());
    }

    #[test]
    fn redis_baseline_gives_plausible_numbers() {
        let fields: Vec<(String, String)> = (0..11)
            .map(|i| (format!("feature_{i}"), format!("{}", 1.5 * i as f64)))
            .collect();
        let baseline = redis_hgetall_baseline(&fields, 10_000, 16, 20_000).unwrap();
        let Some(b) = baseline else {
            panic!(
                "redis-server, redis-cli and redis-benchmark must be on PATH for this test: \
                 install them with `apt-get install -y redis-server` (CI installs it in .ci/run)"
            );
        };
        assert!(b.rps > 1_000.0 && b.rps < 10_000_000.0, "{b:?}");
        assert!(
            b.p50_ms > 0.0 && b.p50_ms <= b.p99_ms && b.p99_ms < 1_000.0,
            "{b:?}"
        );
        assert!(b.command.contains("-r 10000") && b.command.ends_with("HGETALL user:__rand_int__"));
    }
}
