//! `inferdb demo`: the whole system on the embedded default, in under a
//! minute — start a server in a temporary directory, ingest the `small`
//! reference workload over HTTP with a progress bar, then show the ingest
//! rate, the stream's counters, a few users' features, a Feast-style read
//! and a user's most recent records; then load the reference ensemble from
//! `examples/models`, answer a few hundred `POST /infer` requests and show
//! predictions, latency percentiles and a stored inference record; and
//! ends with SQL over the history (`time_bucket` of payments and of
//! inferences, dead letters) printed as tables. It grows as inferdb does.

use crate::bench::{default_model_repository, infer_bodies, server_config, workload_bodies};
use crate::client::{get_json, post_json};
use crate::loadgen;
use crate::serve;
use crate::workload::Size;
use indicatif::{ProgressBar, ProgressStyle};
use inferdb_engine::FsyncPolicy;
use serde_json::json;
use std::time::Instant;

/// Runs the demo; prints to stdout.
pub fn run(size: Size, seed: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::Builder::new().prefix("inferdb-demo-").tempdir()?;
    println!(
        "inferdb demo — embedded server, data in {}",
        dir.path().display()
    );
    let rt = serve::runtime(None)?;
    let models = default_model_repository();
    let server = rt.block_on(serve::start(server_config(
        dir.path().to_path_buf(),
        FsyncPolicy::Batch,
        None,
        None,
        models.clone(),
    )?))?;
    let addr = server.addr;
    println!("listening on http://{addr}  (spec: examples/payments/spec.toml)");

    let (bodies, events, bad) = workload_bodies(size, seed, 1000);
    println!(
        "generated the {size} reference workload: {events} card payments, {bad} deliberately bad"
    );
    let bar = ProgressBar::new(events);
    bar.set_style(
        ProgressStyle::with_template("ingest [{bar:40}] {pos}/{len} events {per_sec} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let t = Instant::now();
    let (mut accepted, mut rejected, mut p99) = (0u64, 0u64, 0f64);
    for chunk in bodies.chunks(20) {
        let n: u64 = chunk
            .iter()
            .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
            .sum();
        let r = loadgen::post_bodies(
            addr,
            "/v1/events/transactions",
            "application/x-ndjson",
            chunk.to_vec(),
            // One connection: the stream is sent in event-time order, as a
            // single source would, so only its own <5 s jitter is out of order.
            1,
            true,
        )?;
        anyhow::ensure!(r.errors == 0, "{} ingest requests failed", r.errors);
        for b in &r.bodies_json {
            accepted += b["accepted"].as_u64().unwrap_or(0);
            rejected += b["rejected"].as_array().map_or(0, |a| a.len() as u64);
        }
        p99 = p99.max(r.pct_ms(0.99));
        bar.inc(n);
    }
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "ingested {events} events in {secs:.2} s ({:.0} events/s over HTTP, durable with fsync=batch, every feature updated); \
         accepted {accepted}, rejected {rejected}; worst per-chunk p99 batch ack {p99:.1} ms",
        events as f64 / secs
    );

    rt.block_on(async {
        let (_, stats) = get_json(addr, "/v1/streams/transactions/stats").await?;
        println!("\nGET /v1/streams/transactions/stats\n{}", serde_json::to_string_pretty(&stats)?);
        let (_, dl) = get_json(addr, "/v1/streams/transactions/dead-letters?limit=2").await?;
        println!("\nGET /v1/streams/transactions/dead-letters?limit=2\n{}", serde_json::to_string_pretty(&dl)?);
        for user in ["user_000000", "user_000001", "user_004242"] {
            let path = format!("/v1/features/user_txn/{user}");
            let (_, f) = get_json(addr, &path).await?;
            println!("\nGET {path}\n{}", serde_json::to_string_pretty(&f)?);
        }
        let req = json!({
            "features": ["user_txn:txn_count_1h", "user_txn:amount_avg_24h", "user_txn:distinct_merchants_24h"],
            "entities": {"entity_id": ["user_000000", "user_000007", "user_999999"]}
        });
        let (_, feast) = post_json(addr, "/get-online-features", &req).await?;
        println!("\nPOST /get-online-features {req}\n{}", serde_json::to_string_pretty(&feast)?);
        let (_, recs) = get_json(addr, "/v1/entities/transactions/user_000000/records?limit=3").await?;
        println!("\nGET /v1/entities/transactions/user_000000/records?limit=3\n{}", serde_json::to_string_pretty(&recs)?);
        anyhow::Ok(())
    })?;

    match &models {
        None => println!(
            "\n(no examples/models directory found: run from the repository root to see /infer)"
        ),
        Some(repo) => {
            println!(
                "\nmodel repository {}: fraud_ensemble = feature_preprocessor -> main_model_v3 (MLP 256-256-128-10) -> confidence_calibrator",
                repo.display()
            );
            let bodies = infer_bodies(400, seed);
            let first = bodies.first().cloned().unwrap_or_default();
            let rep =
                loadgen::post_json_repeat(addr, "/infer", std::sync::Arc::new(bodies), 400, 8)?;
            anyhow::ensure!(rep.errors == 0, "{} /infer requests failed", rep.errors);
            println!(
                "POST /infer x {} (8 connections): {}",
                rep.requests,
                rep.summary_line()
            );
            rt.block_on(async {
                let req: serde_json::Value = serde_json::from_slice(&first)?;
                let (_, out) = post_json(addr, "/infer", &req).await?;
                println!(
                    "\nPOST /infer {req}\n{}",
                    serde_json::to_string_pretty(&out)?
                );
                if let Some(id) = out["inference_id"].as_str() {
                    let path = format!("/v1/inferences/{id}");
                    let (_, rec) = get_json(addr, &path).await?;
                    println!("\nGET {path}\n{}", serde_json::to_string_pretty(&rec)?);
                }
                let (_, st) = get_json(addr, "/v1/streams/inference_records/stats").await?;
                println!(
                    "\ninference records stored: {} (requests answered: {})",
                    st["events_stored"],
                    rep.ok + 1
                );
                anyhow::Ok(())
            })?;
        }
    }
    let mut queries = vec![
        "SELECT time_bucket(INTERVAL '4 hours', ts) AS bucket, count(*) AS payments, \
         round(sum(amount), 2) AS amount FROM transactions GROUP BY bucket ORDER BY bucket",
        "SELECT category, count(*) AS payments, round(avg(amount), 2) AS avg_amount \
         FROM transactions GROUP BY category ORDER BY payments DESC LIMIT 5",
        "SELECT field, count(*) AS rejected FROM dead_letters GROUP BY field ORDER BY rejected DESC",
    ];
    if models.is_some() {
        queries.push(
            "SELECT time_bucket(INTERVAL '5 minutes', ts) AS bucket, model, count(*) AS inferences, \
             round(avg(confidence), 4) AS avg_confidence, round(avg(latency_ms), 3) AS avg_latency_ms \
             FROM inference_records GROUP BY bucket, model ORDER BY bucket",
        );
    }
    println!("\nSQL over the history (POST /v1/sql; also `inferdb sql \"…\"`):");
    for q in queries {
        let t = Instant::now();
        let (status, body) = rt.block_on(crate::client::request_bytes(
            addr,
            "/v1/sql",
            "text/plain",
            crate::sql::ARROW_STREAM,
            bytes::Bytes::from(q.to_string()),
        ))?;
        anyhow::ensure!(
            status == 200,
            "query failed ({status}): {}",
            String::from_utf8_lossy(&body)
        );
        let r = crate::sql::decode_arrow(&body)?;
        println!(
            "\n{q}\n{}\n({} rows, {:.1} ms)",
            crate::sql::render(&r, crate::sql::OutFormat::Table)?,
            r.num_rows(),
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    rt.block_on(server.stop())?;
    println!(
        "\ndemo finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
