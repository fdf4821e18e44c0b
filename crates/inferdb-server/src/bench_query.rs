//! `inferdb bench query`: SQL over the history of the reference workload,
//! against PostgreSQL 15 on the same events, measured in the same run.
//!
//! Through `POST /v1/sql` of a real server (JSON answers, on one kept-alive
//! connection as psql's is one session), after one warm-up run of each:
//!
//! - Q1, `--runs` times: the 5-minute `time_bucket` count and average amount
//!   over every event; the counts must add up to the accepted events;
//! - Q2, `5 x --runs` times: one user's last 1,000 events, cycling over the
//!   three hottest users and seven seeded uniform-random ones (answered
//!   from the hot tier when it holds exactly the user's latest rows);
//! - Q2 again with `AND ts IS NOT NULL` added, which changes no answer but
//!   keeps it on the Parquet files: what the files alone give;
//! - bytes on disk per event: the `*.parquet` files under
//!   `DIR/history/transactions/`, against the NDJSON that was ingested.
//!
//! The first run on a `--data-dir` ingests the workload (NDJSON batches of
//! 1,000 over HTTP, like `bench ingest`), stops the server (which flushes the
//! history to Parquet) and writes `DIR/bench-query.json`; later runs reuse
//! it. PostgreSQL (unless `--no-postgres`) gets the same good events with
//! `COPY`, an index on `(entity_id, ts)` and `VACUUM ANALYZE`, in a temporary
//! cluster run as the `postgres` OS user, and answers the same queries
//! (`date_bin` for the buckets), timed by psql's `\timing`; its answers are
//! checked against inferdb's (bucket count, rows per user).
//!
//! Rerun: `inferdb bench query --size large --data-dir /var/tmp/bq-large`
//! (the first run ingests; later runs only query).

use crate::bench::server_config;
use crate::workload::{Generator, Size, USERS, WorkloadConfig, user_id};
use crate::{client, serve};
use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use inferdb_engine::FsyncPolicy;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tokio::runtime::Runtime;

/// Options of `bench query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryBenchArgs {
    /// Workload size: small (100k events), medium (1M) or large (10M).
    #[arg(long, default_value = "large")]
    pub size: Size,
    /// Workload seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Data directory, kept between runs: the workload is ingested on the first run only.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Timed runs of the bucket query; the user query runs 5x as often.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Skip the PostgreSQL comparison.
    #[arg(long)]
    pub no_postgres: bool,
}

/// What the ingest left in the data directory (`bench-query.json`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Loaded {
    size: String,
    seed: u64,
    events: u64,
    accepted: u64,
    bad: u64,
    ndjson_bytes: u64,
}

const MARKER: &str = "bench-query.json";
/// Events per request body, and bodies per progress line.
const BODY_EVENTS: usize = 1000;
const CHUNK_BODIES: usize = 500;
const Q1: &str = "SELECT time_bucket(INTERVAL '5 minutes', ts) AS bucket, count(*) AS n, \
     avg(amount) AS avg_amount FROM transactions GROUP BY bucket ORDER BY bucket";
const PG_Q1: &str = "SELECT date_bin('5 minutes', ts, TIMESTAMPTZ '2000-01-03') AS bucket, \
     count(*) AS n, avg(amount) FROM transactions GROUP BY bucket ORDER BY bucket";
const PG_TABLE: &str = "CREATE TABLE transactions (entity_id text, ts timestamptz, \
     amount float8, merchant_id text, category text, country text, channel text, card_present bool)";
const TARGET_Q1_MS: f64 = 500.0;
const TARGET_Q2_MS: f64 = 10.0;
const TARGET_RATIO: f64 = 8.0;

fn q2(user: &str) -> String {
    format!("SELECT * FROM transactions WHERE entity_id = '{user}' ORDER BY ts DESC LIMIT 1000")
}

/// Q2 with a predicate that changes no answer (`ts` is required) but keeps
/// the query off the hot tier's latest-rows path: what the Parquet files
/// alone give.
fn q2_files(user: &str) -> String {
    format!(
        "SELECT * FROM transactions WHERE entity_id = '{user}' AND ts IS NOT NULL \
         ORDER BY ts DESC LIMIT 1000"
    )
}

/// Min, median and p90 (nearest rank) of timings in ms.
#[derive(Debug, Clone, Copy)]
struct Stats {
    min: f64,
    median: f64,
    p90: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> anyhow::Result<Stats> {
        ensure!(!v.is_empty(), "no timings");
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        let (min, median, p90) = (v[0], rank(0.5), rank(0.9));
        Ok(Stats { min, median, p90 })
    }

    fn cell(&self) -> String {
        format!("{:.2} ({:.2})", self.median, self.p90)
    }
}

/// What the queries answered: Q1's bucket count, Q2's row count per user.
struct Answers {
    buckets: usize,
    rows: Vec<Option<usize>>,
}

/// `inferdb bench query`.
pub fn run(args: &QueryBenchArgs) -> anyhow::Result<()> {
    ensure!(args.runs > 0, "--runs must be at least 1");
    println!("inferdb bench query — machine: {}", machine());
    let dir = &args.data_dir;
    let l = load_or_ingest(args, dir)?;
    println!(
        "workload {} (seed {}): {} events, {} accepted, {} deliberately bad, NDJSON {} bytes",
        l.size, l.seed, l.events, l.accepted, l.bad, l.ndjson_bytes
    );
    let users = bench_users(args.seed);
    let rt = serve::runtime(None)?;
    let t = Instant::now();
    let server = rt.block_on(serve::start(config(dir)?))?;
    println!("server reopened in {:.2} s", t.elapsed().as_secs_f64());
    let measured = measure(&rt, server.addr, args.runs, &users, l.accepted);
    let stopped = rt.block_on(server.stop());
    let (q1, q2s, q2f, answers) = measured?;
    stopped?;
    let per_user: Vec<String> = users
        .iter()
        .zip(&answers.rows)
        .filter_map(|(u, n)| n.map(|n| format!("{u} {n}")))
        .collect();
    println!(
        "inferdb: Q1 {} buckets; Q2 rows: {}",
        answers.buckets,
        per_user.join(", ")
    );
    let parquet = parquet_bytes(&dir.join("history").join("transactions"))?;
    ensure!(
        parquet > 0,
        "no Parquet files under {}/history/transactions: was the history flushed?",
        dir.display()
    );
    let pg = match args.no_postgres {
        true => None,
        false => postgres(args, &users, l.accepted, &answers)?,
    };
    report(&l, q1, q2s, q2f, parquet, pg.as_ref());
    Ok(())
}

fn config(dir: &Path) -> anyhow::Result<crate::config::ServerConfig> {
    server_config(dir.to_path_buf(), FsyncPolicy::Batch, None, None, None)
}

/// The three hottest users, then seven uniform-random ones (seeded).
fn bench_users(seed: u64) -> Vec<String> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed ^ 0x9e7);
    let mut users: Vec<String> = (0..3).map(user_id).collect();
    users.extend((0..7).map(|_| user_id(rng.random_range(0..USERS))));
    users
}

fn load_or_ingest(args: &QueryBenchArgs, dir: &Path) -> anyhow::Result<Loaded> {
    let marker = dir.join(MARKER);
    if marker.exists() {
        let l: Loaded = serde_json::from_slice(&std::fs::read(&marker)?)
            .with_context(|| format!("reading {}", marker.display()))?;
        let (size, seed) = (&l.size, l.seed);
        ensure!(
            *size == args.size.name() && seed == args.seed,
            "{} holds the {size} workload with seed {seed}, not {} with seed {}: pass \
             --size {size} --seed {seed} or another --data-dir",
            dir.display(),
            args.size,
            args.seed
        );
        println!("reusing {} (ingested earlier)", marker.display());
        return Ok(l);
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} is not empty but has no {MARKER} (an interrupted load?): remove it or pick \
             another --data-dir",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)?;
    let rt = serve::runtime(None)?;
    let server = rt.block_on(serve::start(config(dir)?))?;
    let ingested = ingest(server.addr, args);
    let t = Instant::now();
    let stopped = rt.block_on(server.stop());
    let l = ingested?;
    stopped?;
    let secs = t.elapsed().as_secs_f64();
    println!("server stopped (history flushed) in {secs:.1} s");
    std::fs::write(&marker, serde_json::to_vec_pretty(&l)?)?;
    Ok(l)
}

/// Ingests the workload in NDJSON bodies of 1,000 events over 4
/// connections, like `bench ingest`, generating it a chunk at a time.
fn ingest(addr: SocketAddr, args: &QueryBenchArgs) -> anyhow::Result<Loaded> {
    let total = args.size.events();
    let into = args.data_dir.display();
    println!(
        "ingesting the {} workload ({total} events) into {into}",
        args.size
    );
    let mut events = Generator::new(&WorkloadConfig::sized(args.size, args.seed));
    let (mut n, mut bad, mut bytes, mut accepted, start) = (0, 0, 0, 0, Instant::now());
    loop {
        let mut bodies: Vec<Bytes> = Vec::with_capacity(CHUNK_BODIES);
        let (mut cur, mut in_body, n0, bad0) = (String::new(), 0, n, bad);
        for ev in events.by_ref() {
            (n, bad, in_body) = (n + 1, bad + ev.bad.is_some() as u64, in_body + 1);
            cur.push_str(&ev.line);
            cur.push('\n');
            if in_body == BODY_EVENTS {
                bodies.push(std::mem::take(&mut cur).into());
                in_body = 0;
                if bodies.len() == CHUNK_BODIES {
                    break;
                }
            }
        }
        if !cur.is_empty() {
            bodies.push(cur.into());
        }
        if bodies.is_empty() {
            break;
        }
        bytes += bodies.iter().map(|b| b.len() as u64).sum::<u64>();
        let r = crate::bench::ingest(addr, bodies, n - n0, bad - bad0, 4)?;
        let (errors, sent) = (r.report.errors, r.events);
        ensure!(errors == 0, "{errors} ingest requests failed");
        ensure!(
            r.accepted + r.rejected == sent,
            "accepted {} + rejected {} != {sent} events sent",
            r.accepted,
            r.rejected
        );
        accepted += r.accepted;
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!("  {n}/{total} events, {rate:.0} events/s");
    }
    let secs = start.elapsed().as_secs_f64();
    let rejected = n - accepted;
    println!("ingested in {secs:.1} s: accepted {accepted}, rejected {rejected} (bad: {bad})");
    let (size, seed) = (args.size.name().to_string(), args.seed);
    Ok(Loaded {
        size,
        seed,
        events: n,
        accepted,
        bad,
        ndjson_bytes: bytes,
    })
}

/// One `POST /v1/sql` with JSON rows on a kept-alive connection (as
/// psql's session is for PostgreSQL): the time in ms and the rows.
fn sql(
    rt: &Runtime,
    conn: &mut client::Conn,
    q: &str,
) -> anyhow::Result<(f64, Vec<serde_json::Value>)> {
    let t = Instant::now();
    let body = Bytes::from(q.to_string());
    let (status, body) = rt.block_on(conn.send(
        "POST",
        "/v1/sql",
        "text/plain",
        Some("application/json"),
        body,
    ))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let text = || String::from_utf8_lossy(&body).into_owned();
    ensure!(status == 200, "{q}: {status}: {}", text());
    match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Array(rows)) => Ok((ms, rows)),
        _ => bail!("{q}: expected an array of rows, got {}", text()),
    }
}

/// Times Q1, Q2 and Q2 from the files (one warm-up run each first).
fn measure(
    rt: &Runtime,
    addr: SocketAddr,
    runs: usize,
    users: &[String],
    accepted: u64,
) -> anyhow::Result<(Stats, Stats, Stats, Answers)> {
    let mut conn = rt.block_on(client::Conn::open(addr))?;
    let mut t1 = Vec::with_capacity(runs);
    let mut buckets = 0;
    for i in 0..=runs {
        let (ms, rows) = sql(rt, &mut conn, Q1)?;
        let n: u64 = rows.iter().map(|r| r["n"].as_u64().unwrap_or(0)).sum();
        buckets = rows.len();
        ensure!(
            n == accepted,
            "Q1 counted {n} events in {buckets} buckets, but the server accepted {accepted}"
        );
        if i > 0 {
            t1.push(ms);
        }
    }
    let (mut t2, mut rows) = (Vec::with_capacity(5 * runs), vec![None; users.len()]);
    sql(rt, &mut conn, &q2(&users[0]))?;
    for i in 0..5 * runs {
        let u = i % users.len();
        let (ms, r) = sql(rt, &mut conn, &q2(&users[u]))?;
        ensure!(r.len() <= 1000, "Q2 returned {} rows", r.len());
        rows[u] = Some(r.len());
        t2.push(ms);
    }
    let mut t3 = Vec::with_capacity(5 * runs);
    sql(rt, &mut conn, &q2_files(&users[0]))?;
    for i in 0..5 * runs {
        let u = i % users.len();
        let (ms, r) = sql(rt, &mut conn, &q2_files(&users[u]))?;
        ensure!(
            Some(r.len()) == rows[u],
            "Q2 from the files returned {} rows for {}, from memory {:?}",
            r.len(),
            users[u],
            rows[u]
        );
        t3.push(ms);
    }
    Ok((
        Stats::of(t1)?,
        Stats::of(t2)?,
        Stats::of(t3)?,
        Answers { buckets, rows },
    ))
}

/// Total bytes of the `*.parquet` files under `dir`.
fn parquet_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                total += parquet_bytes(&path)?;
            } else if path.extension().is_some_and(|e| e == "parquet") {
                total += std::fs::metadata(&path)?.len();
            }
        }
    }
    Ok(total)
}

/// What PostgreSQL measured.
struct PgResult {
    q1: Stats,
    q2: Stats,
    bytes: u64,
}

/// A temporary PostgreSQL cluster run as the `postgres` OS user (it refuses
/// to run as root); stopped and deleted when dropped, errors included.
struct Pg {
    /// initdb, pg_ctl, psql.
    bin: [PathBuf; 3],
    dir: tempfile::TempDir,
    port: u16,
    started: bool,
}

impl Pg {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `bin[tool]` as the `postgres` user.
    fn cmd(&self, tool: usize) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&self.bin[tool]);
        c.current_dir(self.dir.path());
        c
    }

    fn psql(&self) -> Command {
        let mut c = self.cmd(2);
        c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-h"]);
        c.arg(self.dir.path()).arg("-p").arg(self.port.to_string());
        c
    }

    /// One statement; its unaligned, tuples-only output.
    fn exec(&self, sql: &str) -> anyhow::Result<String> {
        Ok(output(self.psql().args(["-At", "-c", sql]), sql)?
            .trim()
            .to_string())
    }

    /// psql with `args`, fed by `feed` on its standard input; its output.
    fn feed(
        &self,
        args: &[&str],
        feed: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
    ) -> anyhow::Result<String> {
        let mut c = self.psql();
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn()?;
        let stdin = child.stdin.take().context("psql stdin")?;
        let fed = (|| {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, stdin);
            feed(&mut w)?;
            Ok::<_, anyhow::Error>(w.flush()?)
        })();
        let out = child.wait_with_output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(out.status.success(), "psql {}: {err}", args.join(" "));
        fed?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.started {
            let mut c = self.cmd(1);
            let _ = c
                .arg("-D")
                .arg(self.data())
                .args(["-m", "fast", "-w", "stop"])
                .output();
        }
    }
}

/// Runs a command; its standard output, or an error with both outputs.
fn output(c: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    ensure!(
        out.status.success(),
        "{what}: {}\n{stdout}{stderr}",
        out.status
    );
    Ok(stdout.into_owned())
}

/// A PostgreSQL program: on PATH, else under `/usr/lib/postgresql/*/bin`
/// (newest major version first).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versions.into_iter().map(|(_, d)| d));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Runs statements in one psql session; the `\timing` of each, in ms.
fn pg_times(pg: &Pg, statements: &[String]) -> anyhow::Result<Vec<f64>> {
    let out = pg.feed(&["-o", "/dev/null", "-f", "-"], |w| {
        writeln!(w, "\\timing on")?;
        statements.iter().try_for_each(|s| writeln!(w, "{s};"))?;
        Ok(())
    })?;
    let times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("Time: ")?.split(' ').next()?.parse().ok())
        .collect();
    let (got, want) = (times.len(), statements.len());
    ensure!(
        got == want,
        "psql printed {got} timings for {want} statements"
    );
    Ok(times)
}

/// The PostgreSQL side; `None` (with a message) when it cannot run here.
fn postgres(
    args: &QueryBenchArgs,
    users: &[String],
    accepted: u64,
    answers: &Answers,
) -> anyhow::Result<Option<PgResult>> {
    let tools = ["initdb", "pg_ctl", "psql", "postgres"].map(find_tool);
    let [Some(initdb), Some(pg_ctl), Some(psql), Some(_)] = tools else {
        println!("PostgreSQL: initdb, pg_ctl, postgres or psql not found; no comparison");
        return Ok(None);
    };
    if !Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("PostgreSQL: no `postgres` OS user to run it as; no comparison");
        return Ok(None);
    }
    let dir = tempfile::Builder::new()
        .prefix("inferdb-bench-pg-")
        .tempdir_in("/tmp")?;
    output(
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path()),
        "chown",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bin = [initdb, pg_ctl, psql];
    let mut pg = Pg {
        bin,
        dir,
        port,
        started: false,
    };
    let version = output(pg.cmd(2).arg("--version"), "psql --version")?;
    println!(
        "PostgreSQL: {} in {}",
        version.trim(),
        pg.dir.path().display()
    );
    let (data, log) = (pg.data(), pg.dir.path().join("postgres.log"));
    let init = "-A trust -U postgres -E UTF8 --locale=C --no-sync";
    output(
        pg.cmd(0).arg("-D").arg(&data).args(init.split(' ')),
        "initdb",
    )?;
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=''",
        pg.dir.path().display()
    );
    pg.started = true;
    let mut start = pg.cmd(1);
    start
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(&log)
        .args(["-o", &opts, "-w", "start"]);
    if let Err(e) = output(&mut start, "pg_ctl start") {
        bail!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    pg.exec(PG_TABLE)?;
    let t = Instant::now();
    pg_copy(&pg, args)?;
    let copied: u64 = pg.exec("SELECT count(*) FROM transactions")?.parse()?;
    println!("  COPY {copied} rows in {:.1} s", t.elapsed().as_secs_f64());
    ensure!(
        copied == accepted,
        "PostgreSQL has {copied} events, inferdb {accepted}"
    );
    let t = Instant::now();
    pg.exec("CREATE INDEX ON transactions (entity_id, ts)")?;
    pg.exec("VACUUM ANALYZE transactions")?;
    println!(
        "  index + VACUUM ANALYZE in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let count = |q: &str| -> anyhow::Result<usize> {
        Ok(pg.exec(&format!("SELECT count(*) FROM ({q}) q"))?.parse()?)
    };
    let (b, want) = (count(PG_Q1)?, answers.buckets);
    ensure!(b == want, "PostgreSQL: {b} buckets, inferdb {want}");
    for (u, n) in users.iter().zip(&answers.rows) {
        if let Some(n) = *n {
            let m = count(&q2(u))?;
            ensure!(m == n, "PostgreSQL: {m} rows for {u}, inferdb {n}");
        }
    }
    println!("  same answers as inferdb (bucket count, rows per user)");
    let t1 = pg_times(&pg, &vec![PG_Q1.to_string(); args.runs + 1])?;
    let q2s: Vec<String> = std::iter::once(0)
        .chain(0..5 * args.runs)
        .map(|i| q2(&users[i % users.len()]))
        .collect();
    let t2 = pg_times(&pg, &q2s)?;
    let bytes = pg
        .exec("SELECT pg_total_relation_size('transactions')")?
        .parse()?;
    let (q1, q2) = (Stats::of(t1[1..].to_vec())?, Stats::of(t2[1..].to_vec())?);
    Ok(Some(PgResult { q1, q2, bytes }))
}

/// The workload's good events (regenerated) as CSV into `COPY`.
fn pg_copy(pg: &Pg, args: &QueryBenchArgs) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Row<'a> {
        entity_id: &'a str,
        ts: &'a str,
        amount: f64,
        merchant_id: &'a str,
        category: &'a str,
        country: &'a str,
        channel: &'a str,
        card_present: bool,
    }
    let copy = "COPY transactions FROM STDIN WITH (FORMAT csv)";
    pg.feed(&["-c", copy], |w| {
        let cfg = WorkloadConfig::sized(args.size, args.seed);
        for ev in Generator::new(&cfg).filter(|e| e.bad.is_none()) {
            let r: Row = serde_json::from_str(&ev.line)?;
            let (m, c, k, ch) = (r.merchant_id, r.category, r.country, r.channel);
            let (e, ts, a, cp) = (r.entity_id, r.ts, r.amount, r.card_present);
            writeln!(w, "{e},{ts},{a},{m},{c},{k},{ch},{cp}")?;
        }
        Ok(())
    })?;
    Ok(())
}

fn report(l: &Loaded, q1: Stats, q2: Stats, q2f: Stats, parquet: u64, pg: Option<&PgResult>) {
    let per = |b: u64| b as f64 / l.accepted.max(1) as f64;
    let (inferdb, postgres) = ("inferdb median (p90) ms", "PostgreSQL median (p90) ms");
    println!(
        "\n{:<40} {inferdb:>24}  {postgres:>28}  PostgreSQL/inferdb",
        "query"
    );
    let rows = [
        (
            "Q1 5-min buckets, count/avg, all events",
            q1,
            pg.map(|p| p.q1),
        ),
        ("Q2 one user's last 1,000 events", q2, pg.map(|p| p.q2)),
        (
            "Q2 from the Parquet files (no hot tier)",
            q2f,
            pg.map(|p| p.q2),
        ),
    ];
    for (name, ours, theirs) in rows {
        let (cell, ratio) = match theirs {
            Some(t) => (
                t.cell(),
                format!("{:.2}x", t.median / ours.median.max(1e-9)),
            ),
            None => ("-".into(), "-".into()),
        };
        println!("{name:<40} {:>24}  {cell:>28}  {ratio:>18}", ours.cell());
    }
    println!(
        "  (min: inferdb Q1 {:.2} ms, Q2 {:.2} ms, Q2 files {:.2} ms)",
        q1.min, q2.min, q2f.min
    );
    let ratio = l.ndjson_bytes as f64 / parquet.max(1) as f64;
    println!("\nbytes per event ({} events):", l.accepted);
    println!("  NDJSON                    {:>8.1}", per(l.ndjson_bytes));
    let p = per(parquet);
    println!(
        "  inferdb Parquet           {p:>8.1}   (NDJSON/inferdb {ratio:.1}x; {parquet} bytes)"
    );
    if let Some(pg) = pg {
        let (p, b) = (per(pg.bytes), pg.bytes);
        println!("  PostgreSQL (table+index)  {p:>8.1}   ({b} bytes)");
    }
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let (m1, m2) = (q1.median, q2.median);
    println!("\ntargets (on the 2-core machine; medians):");
    println!(
        "  Q1 < {TARGET_Q1_MS} ms: {} ({m1:.2} ms)",
        met(m1 < TARGET_Q1_MS)
    );
    println!(
        "  Q2 < {TARGET_Q2_MS} ms: {} ({m2:.2} ms)",
        met(m2 < TARGET_Q2_MS)
    );
    let ok = met(ratio >= TARGET_RATIO);
    println!("  Parquet >= {TARGET_RATIO}x smaller than NDJSON: {ok} ({ratio:.1}x)");
}

/// Cores and CPU model.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
    format!("{cores} cores (nproc), {cpu}, {os} {arch}")
}
