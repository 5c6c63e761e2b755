//! `loadgen`: an HTTP load generator for `host serve` benchmarks.
//!
//! Keep-alive HTTP/1.1 connections (one per concurrent client), request
//! bodies cycled from a JSON-lines file, and two modes:
//! - closed loop (default): each connection sends its next request when the
//!   previous answer has been read;
//! - open loop (`--rate R`): requests are due at a fixed total rate, spread
//!   over the connections; latency counts from the time a request was due,
//!   so a server that falls behind is charged for the wait (no coordinated
//!   omission).
//!
//! Streaming answers (server-sent events) are read as they arrive: the time
//! to the first event and the number of `data:` events (tokens) are
//! reported too. The summary is printed and written as JSON (`--json`).
//!
//! ```text
//! loadgen --url http://127.0.0.1:8080/v1/embeddings --bodies bodies.jsonl \
//!         --concurrency 64 --duration 8 --json out.json
//! ```

mod client;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use client::{Target, Worker};
use stats::{Summary, WorkerStats};

/// Load generator for `host serve` (and any HTTP/1.1 JSON endpoint).
#[derive(Parser, Debug)]
#[command(name = "loadgen", version)]
struct Args {
    /// Endpoint URL (http only), e.g. http://127.0.0.1:8080/v1/embeddings.
    #[arg(long)]
    url: String,
    /// JSON-lines file: one request body per line, cycled (each connection
    /// starts at a different line).
    #[arg(long, conflicts_with = "body")]
    bodies: Option<PathBuf>,
    /// One request body, sent every time.
    #[arg(long)]
    body: Option<String>,
    /// Concurrent connections (closed loop: requests in flight).
    #[arg(long, short = 'c', default_value_t = 1)]
    concurrency: usize,
    /// Seconds of measurement.
    #[arg(long, short = 'd', default_value_t = 8.0)]
    duration: f64,
    /// Seconds of warm-up before measuring (requests sent, not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open loop: total requests per second, spread over the connections.
    #[arg(long)]
    rate: Option<f64>,
    /// Extra request header `Name: value` (repeatable), e.g. an API key.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Runtime threads (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bodies = read_bodies(&args)?;
    let target = Arc::new(Target::parse(&args.url, &args.headers)?);
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0) {
        bail!("--duration must be positive and --warmup not negative");
    }
    if let Some(r) = args.rate {
        if !(r > 0.0 && r.is_finite()) {
            bail!("--rate must be a positive number of requests per second, got {r}");
        }
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let summary = rt.block_on(run(&args, target, bodies))?;
    println!("{}", summary.text());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&summary.to_json())?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if summary.ok == 0 {
        bail!("no request succeeded ({} failed)", summary.failed());
    }
    Ok(())
}

fn read_bodies(args: &Args) -> Result<Arc<Vec<bytes::Bytes>>> {
    let bodies: Vec<bytes::Bytes> = match (&args.bodies, &args.body) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| bytes::Bytes::from(l.to_string()))
            .collect(),
        (None, Some(b)) => vec![bytes::Bytes::from(b.clone())],
        (None, None) => bail!("give --bodies FILE (JSON lines) or --body JSON"),
    };
    if bodies.is_empty() {
        bail!("no request bodies (the file has no non-empty line)");
    }
    Ok(Arc::new(bodies))
}

/// Runs the warm-up and the measurement; one task per connection.
async fn run(args: &Args, target: Arc<Target>, bodies: Arc<Vec<bytes::Bytes>>) -> Result<Summary> {
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let c = args.concurrency;
    // Open loop: connection i sends at start + (k * c + i) / rate.
    let interval = args.rate.map(|r| Duration::from_secs_f64(c as f64 / r));
    let mut tasks = Vec::with_capacity(c);
    for i in 0..c {
        let worker = Worker {
            target: target.clone(),
            bodies: bodies.clone(),
            first_body: i * bodies.len() / c,
            start: start + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / c as f64)),
            interval,
            measure_from,
            end,
        };
        tasks.push(tokio::spawn(worker.run()));
    }
    let mut all = WorkerStats::new()?;
    for t in tasks {
        let s = t.await.context("a connection task panicked")??;
        all.merge(&s)?;
    }
    Ok(Summary::new(
        all,
        args.duration,
        c,
        args.rate,
        target.describe(),
    ))
}
