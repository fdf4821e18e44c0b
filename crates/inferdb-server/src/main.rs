//! The `inferdb` command line.

use clap::{Parser, Subcommand};
use inferdb_server::bench::{BenchArgs, FeatureBenchArgs, InferBenchArgs};
use inferdb_server::config::ServeArgs;
use inferdb_server::workload::{Size, WorkloadConfig, write_ndjson};
use inferdb_server::{bench, demo, serve};
use std::io::Write;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

// mimalloc: the ingest path allocates a few small strings per event; glibc's
// malloc spent ~20% of ingest CPU in consolidation (perf, bench ingest).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// inferdb: a real-time inference database.
#[derive(Parser)]
#[command(name = "inferdb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Start an embedded server, ingest the reference workload and show what inferdb does.
    Demo {
        /// Workload size.
        #[arg(long, default_value = "small")]
        size: Size,
        /// Workload seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Write the reference workload as NDJSON (deterministic per seed).
    Gen {
        /// small (100k events), medium (1M) or large (10M).
        #[arg(long, default_value = "small")]
        size: Size,
        /// Seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Benchmarks of the reference workload.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run SQL over the history, against a running server or a data directory.
    Sql(inferdb_server::sql::SqlArgs),
    /// Point-in-time training data: rows of (key, ts[, label]) with each view's features as of ts.
    Export(inferdb_server::training::ExportArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ingest over HTTP in batches: events/s and ack latency.
    Ingest(BenchArgs),
    /// Zipf-random feature reads: req/s and latency percentiles, against Redis HGETALL.
    Features(FeatureBenchArgs),
    /// POST /infer end to end (features joined, ensemble run, record stored) at several concurrencies.
    Infer(InferBenchArgs),
    /// SQL over the history (5-minute buckets, one user's last 1,000 events) and bytes on disk, against PostgreSQL.
    Query(inferdb_server::bench_query::QueryBenchArgs),
}

fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_env("INFERDB_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging("info");
            let cfg = args.resolve()?;
            let rt = serve::runtime(cfg.worker_threads)?;
            rt.block_on(async {
                let server = serve::start(cfg).await?;
                let r = server.engine.recovery().clone();
                tracing::info!(
                    snapshot_seq = ?r.snapshot_seq,
                    frames_replayed = r.frames_replayed,
                    truncated_bytes = r.truncated_bytes,
                    ms = r.millis,
                    "ready"
                );
                println!("inferdb listening on http://{}", server.addr);
                serve::shutdown_signal().await;
                tracing::info!("shutting down");
                server.stop().await
            })
        }
        Command::Demo { size, seed } => {
            init_logging("warn");
            demo::run(size, seed)
        }
        Command::Gen { size, seed, out } => {
            let cfg = WorkloadConfig::sized(size, seed);
            let summary = match out {
                Some(p) => {
                    let mut w = std::io::BufWriter::new(std::fs::File::create(&p)?);
                    let s = write_ndjson(&cfg, &mut w)?;
                    w.flush()?;
                    s
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut w = std::io::BufWriter::new(stdout.lock());
                    let s = write_ndjson(&cfg, &mut w)?;
                    w.flush()?;
                    s
                }
            };
            eprintln!(
                "{} events, {} deliberately bad",
                summary.events, summary.bad
            );
            Ok(())
        }
        Command::Export(a) => {
            init_logging("warn");
            inferdb_server::training::run_export(&a)
        }
        Command::Sql(a) => {
            init_logging("warn");
            inferdb_server::sql::run_cli(&a)
        }
        Command::Bench(b) => {
            init_logging("warn");
            match b {
                BenchCommand::Ingest(a) => bench::run_ingest(&a),
                BenchCommand::Features(a) => bench::run_features(&a),
                BenchCommand::Infer(a) => bench::run_infer(&a),
                BenchCommand::Query(a) => inferdb_server::bench_query::run(&a),
            }
        }
    }
}
