//! The `host` command line: `host run`, `host bench`, `host serve`,
//! `host devices`, `host skills`, `host test`, `host new`.

mod logging;
mod serve_cli;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use host::backend::{registry, Precision};
use host::config::HostConfig;
use host::endpoint::contract::request;
use host::endpoint::{BatchPolicy, EndpointConfig, Endpoints, Handler};
use host::runner::{Output, RequestError};
use host::sandbox::{Sandbox, SkillContext};

/// Run Hugging Face models through sandboxed WebAssembly skills.
#[derive(Parser)]
#[command(name = "host", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Diagnostics on stderr: `text` lines or `json` objects (filter them
    /// with HOST_LOG or RUST_LOG, such as `info` or `host=debug`).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(flatten)]
    config: host::config::ConfigArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run a skill on a model: JSON Lines out, one response per input, in input order.
    Run(RunArgs),
    /// Time a skill on a model in one process (warm-up passes, then timed passes).
    Bench(BenchArgs),
    /// Serve endpoints over HTTP (OpenAI /v1/embeddings, TEI /embed, admin, metrics).
    Serve(serve_cli::ServeArgs),
    /// List devices and why unavailable ones cannot serve.
    Devices {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List the skills found and what they serve.
    Skills {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Include the test-only skills (tasks `test-*`, such as `hostile`).
        #[arg(long)]
        all: bool,
    },
    /// Test a skill in the sandbox: its cases plus the host's conformance
    /// checks; exit 1 when any fails (JUnit XML and JSON reports for CI).
    Test(host::authoring::cli::TestArgs),
    /// Write a new standalone skill crate for a task.
    New(host::authoring::cli::NewArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Skill name (e.g. `text-embedding`) or path to a .wasm component.
    skill: String,
    /// Model directory or hub id (`owner/name`).
    #[arg(long)]
    model: String,
    /// Ordered device list; the first that can load the model serves it.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Numeric precision: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Input text; repeatable. Becomes the request `{"text": TEXT}` (or the
    /// skill's own text field, such as text-generation's `prompt`).
    #[arg(long = "input")]
    inputs: Vec<String>,
    /// Image file; repeatable. Becomes the request `{"image": BASE64}`.
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// Audio file (WAV); repeatable. Becomes the request `{"audio": BASE64}`.
    #[arg(long = "audio")]
    audio: Vec<PathBuf>,
    /// JSON Lines file of request objects (`-` for stdin).
    #[arg(long = "inputs")]
    inputs_file: Option<PathBuf>,
    /// Requests per skill call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Print a JSON stats line to stderr at the end.
    #[arg(long)]
    stats: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Untimed passes over the inputs first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed passes over the inputs.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Write the responses of the last pass here (JSON Lines).
    #[arg(long)]
    output: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let config = match configure(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(exit::ERROR);
        }
    };
    let result = match cli.command {
        Command::Run(args) => run(args, &config),
        Command::Bench(args) => bench(args, &config),
        Command::Serve(args) => serve_cli::serve(args, &config),
        Command::Devices { json } => devices(json, &config),
        Command::Skills { json, all } => skills(json, all, &config),
        Command::Test(args) => {
            sandbox(&config).and_then(|sb| host::authoring::cli::test(args, sb).map_err(Into::into))
        }
        Command::New(args) => host::authoring::cli::new(args).map_err(Into::into),
    };
    // Every endpoint is gone with its command's runtime; let the workers
    // release their skills (and device memory) before the process exits.
    if !host::endpoint::wait_for_workers(std::time::Duration::from_secs(30)) {
        tracing::warn!("worker threads still busy at exit");
    }
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(exit::ERROR);
        }
    }
}

/// The process's exit codes, whatever the kind of a request's error.
mod exit {
    /// Everything succeeded.
    pub const OK: i32 = 0;
    /// The command ran, but some requests failed (`host test`: a case or
    /// check failed).
    pub const FAILURES: i32 = 1;
    /// The command itself failed (arguments, a skill or model that cannot
    /// load).
    pub const ERROR: i32 = 2;

    /// `OK`, or `FAILURES` when any request failed.
    pub fn for_failures(failures: usize) -> i32 {
        if failures > 0 {
            FAILURES
        } else {
            OK
        }
    }
}

/// The process's configuration: the environment, then the flags; a value
/// that does not parse is an error naming it. Read once, and handed to
/// every command (the library is given it, mostly through the sandbox).
fn configure(args: &host::config::ConfigArgs) -> Result<HostConfig> {
    Ok(args.resolve()?)
}

/// The sandbox of the process's configuration: its limits
/// (`HOST_SKILL_MEMORY_MB`, `HOST_SKILL_FUEL`, `HOST_MAX_TEXT_BYTES`, the
/// ceilings of what a skill may declare) and cache directory; it carries
/// the configuration to the endpoints and runners built on it.
fn sandbox(config: &HostConfig) -> Result<Arc<Sandbox>> {
    Ok(Arc::new(Sandbox::from_config(config)?))
}

/// The request field `--input` fills: `text` when the skill's request
/// schema has it, else the schema's one required string property (such as
/// text-generation's `prompt`).
fn input_field(args: &RunArgs, config: &HostConfig) -> Result<String> {
    let sb = sandbox(config)?;
    let (name, path) = host::skills::resolve(&args.skill, &config.skills_dirs)?;
    let info = sb
        .load(&name, &path)
        .and_then(|c| sb.instantiate(&c, Arc::new(SkillContext::empty())))
        .and_then(|mut i| i.describe())?;
    let schema: serde_json::Value =
        serde_json::from_str(&info.request_schema).unwrap_or(serde_json::Value::Null);
    let props = &schema["properties"];
    if props.get(request::TEXT).is_some() || props.is_null() {
        return Ok(request::TEXT.into());
    }
    let strings: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|k| k.as_str())
                .filter(|k| props[*k]["type"] == "string")
                .collect()
        })
        .unwrap_or_default();
    match strings.as_slice() {
        [one] => Ok(one.to_string()),
        _ => bail!(
            "skill `{name}` takes no single text field (its request schema: {}); \
             send JSON requests with --inputs FILE",
            info.request_schema
        ),
    }
}

fn read_requests(args: &RunArgs, config: &HostConfig) -> Result<Vec<String>> {
    let field = match args.inputs.is_empty() {
        true => String::new(),
        false => input_field(args, config)?,
    };
    let mut reqs: Vec<String> = args
        .inputs
        .iter()
        .map(|t| serde_json::json!({ field.as_str(): t }).to_string())
        .collect();
    for (key, paths) in [
        (request::IMAGE, &args.images),
        (request::AUDIO, &args.audio),
    ] {
        for path in paths {
            use base64::Engine;
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read --{key} {}", path.display()))?;
            let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
            reqs.push(serde_json::json!({ key: b64 }).to_string());
        }
    }
    if let Some(path) = &args.inputs_file {
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot open --inputs {}", path.display()))?;
            Box::new(std::io::BufReader::new(f))
        };
        for (n, line) in reader.lines().enumerate() {
            let line =
                line.with_context(|| format!("{}: cannot read line {}", path.display(), n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(serde_json::Value::Object(_)) => reqs.push(line),
                Ok(_) => bail!(
                    "{} line {}: expected a JSON object such as {{\"text\": \"...\"}}",
                    path.display(),
                    n + 1
                ),
                Err(e) => bail!("{} line {}: not valid JSON: {e}", path.display(), n + 1),
            }
        }
    }
    if reqs.is_empty() {
        bail!("no inputs: pass --input TEXT, --image FILE or --audio FILE (repeatable) or --inputs FILE.jsonl");
    }
    Ok(reqs)
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// An in-process endpoint for `run` and `bench`: every request is queued at
/// once, so the batcher forms full batches of similar length.
async fn local_endpoint(
    args: &RunArgs,
    queue: usize,
    host_config: &HostConfig,
) -> Result<(Endpoints, Handler)> {
    let devices = registry::parse_list_with(&args.device, host_config.fault_injection)?;
    let precision: Precision = args.precision.parse().map_err(anyhow::Error::msg)?;
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let endpoints = Endpoints::new(sandbox(host_config)?);
    let mut config = EndpointConfig::new("run", &args.skill, &args.model, devices, precision);
    config.batching = BatchPolicy {
        max_batch_size: args.batch_size,
        // Requests are queued in a tight loop; a short wait lets batches fill.
        max_wait_ms: if args.batch_size > 1 { 2 } else { 0 },
        max_batch_tokens: args.batch_size.saturating_mul(1 << 16),
        queue_capacity: queue.max(1),
        // Every request is queued up front: fill batches rather than start
        // the first one with a single request.
        dispatch_when_idle: false,
    };
    endpoints.add(config).await.map_err(|e| match e {
        host::endpoint::EndpointError::Load { source, .. } => anyhow::Error::new(source),
        other => anyhow::Error::new(other),
    })?;
    let handler = endpoints.handler("run").context("endpoint vanished")?;
    Ok((endpoints, handler))
}

/// Answers every request, in input order (queued shortest first).
async fn answer_all(handler: &Handler, requests: &[String]) -> Vec<Result<Output, RequestError>> {
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_cached_key(|&i| handler.estimate(&requests[i]));
    let mut receivers: Vec<Option<_>> = (0..requests.len()).map(|_| None).collect();
    for &i in &order {
        receivers[i] = Some(handler.call_waiting(requests[i].clone()).await);
    }
    let mut out = Vec::with_capacity(requests.len());
    for rx in receivers.into_iter().flatten() {
        out.push(
            rx.await
                .unwrap_or_else(|_| Err(RequestError::internal("request lost"))),
        );
    }
    out
}

/// Writes one line per answer; returns the number of failures.
fn write_answers(
    out: &mut dyn Write,
    answers: Vec<Result<Output, RequestError>>,
    report: bool,
) -> Result<usize> {
    let mut failures = 0;
    for (i, a) in answers.into_iter().enumerate() {
        match a.and_then(|o| o.to_json_line()) {
            Ok(l) => writeln!(out, "{l}")?,
            Err(e) => {
                failures += 1;
                if report {
                    eprintln!("error: input {}: {e}", i + 1);
                }
                writeln!(
                    out,
                    "{}",
                    serde_json::json!({ "error": { "kind": e.kind, "message": e.message } })
                )?;
            }
        }
    }
    out.flush()?;
    Ok(failures)
}

fn run(args: RunArgs, config: &HostConfig) -> Result<i32> {
    let requests = read_requests(&args, config)?;
    tokio_runtime()?.block_on(async {
        let t0 = Instant::now();
        let (endpoints, handler) = local_endpoint(&args, requests.len(), config).await?;
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let answers = answer_all(&handler, &requests).await;
        let run_ms = t1.elapsed().as_secs_f64() * 1e3;
        let status = endpoints.status();
        drop(handler);
        let stdout = std::io::stdout();
        let failures = write_answers(&mut std::io::BufWriter::new(stdout.lock()), answers, true)?;
        if args.stats {
            let m = &endpoints.metrics;
            let n = requests.len() as f64;
            eprintln!(
                "{}",
                serde_json::json!({ "stats": {
                    "inputs": requests.len(), "batches": m.batch_size.with_label_values(&["run"]).get_sample_count(),
                    "mean_batch_size": m.mean_batch_size("run"), "load_ms": load_ms, "run_ms": run_ms,
                    "per_second": n / (run_ms / 1e3).max(1e-9),
                    "device": status.first().map(|s| s.device.clone()), "precision": status.first().map(|s| s.precision.clone()),
                    "failures": failures,
                }})
            );
        }
        endpoints.shutdown().await;
        Ok(exit::for_failures(failures))
    })
}

fn bench(args: BenchArgs, config: &HostConfig) -> Result<i32> {
    let requests = read_requests(&args.run, config)?;
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    tokio_runtime()?.block_on(async {
        let t0 = Instant::now();
        let (endpoints, handler) = local_endpoint(&args.run, requests.len(), config).await?;
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut rates = Vec::new();
        let mut last = Vec::new();
        for pass in 0..args.warmup + args.reps {
            let t = Instant::now();
            last = answer_all(&handler, &requests).await;
            if pass >= args.warmup {
                rates.push(requests.len() as f64 / t.elapsed().as_secs_f64().max(1e-9));
            }
        }
        let failures = last.iter().filter(|a| a.is_err()).count();
        if let Some(path) = &args.output {
            let f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            write_answers(&mut std::io::BufWriter::new(f), last, false)?;
        }
        let mut sorted = rates.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let status = endpoints.status();
        println!(
            "{}",
            serde_json::json!({ "bench": {
                "inputs": requests.len(), "batch_size": args.run.batch_size, "warmup": args.warmup,
                "per_second": rates, "median_per_second": sorted[sorted.len() / 2], "load_ms": load_ms,
                "mean_batch_size": endpoints.metrics.mean_batch_size("run"),
                "device": status.first().map(|s| s.device.clone()), "precision": status.first().map(|s| s.precision.clone()),
                "failures": failures,
            }})
        );
        drop(handler);
        endpoints.shutdown().await;
        Ok(exit::for_failures(failures))
    })
}

fn devices(json: bool, config: &HostConfig) -> Result<i32> {
    let list = registry::probe_all_with(&config.backend_options());
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for d in &list {
            println!(
                "{:<12} {:<13} {}",
                d.device,
                if d.available {
                    "available"
                } else {
                    "unavailable"
                },
                d.detail
            );
        }
    }
    Ok(exit::OK)
}

fn skills(json: bool, all: bool, config: &HostConfig) -> Result<i32> {
    let sb = sandbox(config)?;
    let mut rows = Vec::new();
    // What each row's skill was granted (its declaration under the ceiling).
    let mut grants = Vec::new();
    for (name, path) in host::skills::discover(&config.skills_dirs) {
        let info = sb
            .load(&name, &path)
            .and_then(|c| sb.instantiate(&c, Arc::new(SkillContext::empty())))
            .and_then(|mut i| Ok((i.describe()?, i.granted())));
        rows.push(match info {
            Ok((i, _)) if i.task.starts_with("test-") && !all => continue,
            Ok((i, granted)) => {
                let digest = host::digest::Digest::of_file(&path)?;
                let row = serde_json::json!({
                    "name": i.name, "task": i.task, "architectures": i.architectures,
                    "version": i.version, "path": path.display().to_string(),
                    "sha256": digest.to_string(), "cid": digest.cid(),
                    "needs": host::sandbox::Needs::of(&i), "limits": granted,
                });
                grants.push(Some(granted));
                row
            }
            Err(e) => {
                grants.push(None);
                serde_json::json!({ "name": name, "path": path.display().to_string(), "error": e.to_string() })
            }
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!(
            "no skills found in: {:?}",
            host::skills::search_dirs(&config.skills_dirs)
        );
    } else {
        for (r, granted) in rows.iter().zip(&grants) {
            match r.get("error") {
                Some(e) => println!("{:<16} error: {}", r["name"].as_str().unwrap_or(""), e),
                None => println!(
                    "{:<16} {:<20} {}  ({}, {})",
                    r["name"].as_str().unwrap_or(""),
                    r["task"].as_str().unwrap_or(""),
                    r["architectures"],
                    r["path"].as_str().unwrap_or(""),
                    r["sha256"].as_str().map_or("", |d| &d[..19.min(d.len())])
                ),
            }
            if let Some(g) = granted {
                println!("{:<16} limits: {}", "", g.summary());
            }
        }
    }
    Ok(exit::OK)
}
