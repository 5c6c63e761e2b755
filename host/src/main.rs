//! The `host` command line: `host run`, `host devices`, `host skills`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use host::backend::{registry, Precision};
use host::runner::Runner;
use host::sandbox::{Sandbox, SandboxLimits, SkillContext};

/// Run Hugging Face models through sandboxed WebAssembly skills.
#[derive(Parser)]
#[command(name = "host", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a skill on a model: JSON Lines out, one response per input, in input order.
    Run(RunArgs),
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
    },
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
    /// Input text; repeatable. Becomes the request `{"text": TEXT}`.
    #[arg(long = "input")]
    inputs: Vec<String>,
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

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Devices { json } => devices(json),
        Command::Skills { json } => skills(json),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn sandbox() -> Result<Arc<Sandbox>> {
    let mut limits = SandboxLimits::default();
    if let Some(mb) = env_u64("HOST_SKILL_MEMORY_MB") {
        limits.memory_bytes = (mb as usize) << 20;
    }
    if let Some(f) = env_u64("HOST_SKILL_FUEL") {
        limits.fuel_per_call = f;
    }
    Ok(Arc::new(Sandbox::new(limits)?))
}

fn read_requests(args: &RunArgs) -> Result<Vec<String>> {
    let mut reqs: Vec<String> = args.inputs.iter().map(|t| serde_json::json!({ "text": t }).to_string()).collect();
    if let Some(path) = &args.inputs_file {
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let f = std::fs::File::open(path).with_context(|| format!("cannot open --inputs {}", path.display()))?;
            Box::new(std::io::BufReader::new(f))
        };
        for (n, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("{}: cannot read line {}", path.display(), n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(serde_json::Value::Object(_)) => reqs.push(line),
                Ok(_) => bail!("{} line {}: expected a JSON object such as {{\"text\": \"...\"}}", path.display(), n + 1),
                Err(e) => bail!("{} line {}: not valid JSON: {e}", path.display(), n + 1),
            }
        }
    }
    if reqs.is_empty() {
        bail!("no inputs: pass --input TEXT (repeatable) or --inputs FILE.jsonl");
    }
    Ok(reqs)
}

fn run(args: RunArgs) -> Result<i32> {
    let devices = registry::parse_list(&args.device)?;
    let precision: Precision = args.precision.parse().map_err(anyhow::Error::msg)?;
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let requests = read_requests(&args)?;
    let t0 = Instant::now();
    let mut runner = Runner::open(sandbox()?, &args.skill, &args.model, &devices, precision)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;

    // Group requests of similar size so batches carry little padding;
    // answers go back to input order below.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    if args.batch_size > 1 {
        order.sort_by_key(|&i| requests[i].len());
    }
    let progress = std::io::stderr().is_terminal() && requests.len() > args.batch_size * 4;
    let t1 = Instant::now();
    let mut answers = vec![None; requests.len()];
    let mut batches = 0;
    for chunk in order.chunks(args.batch_size) {
        let batch: Vec<String> = chunk.iter().map(|&i| requests[i].clone()).collect();
        for (&i, r) in chunk.iter().zip(runner.handle(&batch)) {
            answers[i] = Some(r);
        }
        batches += 1;
        if progress {
            eprint!("\rprocessed {}/{}", (batches * args.batch_size).min(requests.len()), requests.len());
        }
    }
    if progress {
        eprintln!();
    }
    let run_ms = t1.elapsed().as_secs_f64() * 1e3;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failures = 0;
    for (i, a) in answers.into_iter().enumerate() {
        let line = match a {
            Some(Ok(o)) => o.to_json_line(),
            Some(Err(e)) => Err(e),
            None => Err(host::runner::RequestError { kind: "internal", message: "request lost".into() }),
        };
        match line {
            Ok(l) => writeln!(out, "{l}")?,
            Err(e) => {
                failures += 1;
                eprintln!("error: input {}: {e}", i + 1);
                writeln!(out, "{}", serde_json::json!({ "error": { "kind": e.kind, "message": e.message } }))?;
            }
        }
    }
    out.flush()?;
    if args.stats {
        let n = requests.len() as f64;
        eprintln!(
            "{}",
            serde_json::json!({ "stats": {
                "inputs": requests.len(), "batches": batches, "load_ms": load_ms, "run_ms": run_ms,
                "per_second": n / (run_ms / 1e3).max(1e-9), "device": runner.device,
                "precision": runner.precision.to_string(), "failures": failures, "traps": runner.traps,
            }})
        );
    }
    Ok(if failures > 0 { 1 } else { 0 })
}

fn devices(json: bool) -> Result<i32> {
    let list = registry::probe_all();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for d in &list {
            println!("{:<12} {:<13} {}", d.device, if d.available { "available" } else { "unavailable" }, d.detail);
        }
    }
    Ok(0)
}

fn skills(json: bool) -> Result<i32> {
    let sb = sandbox()?;
    let mut rows = Vec::new();
    for (name, path) in host::skills::discover() {
        let info = sb
            .load(&name, &path)
            .and_then(|c| sb.instantiate(&c, Arc::new(SkillContext::empty())))
            .and_then(|mut i| i.describe());
        rows.push(match info {
            Ok(i) => serde_json::json!({
                "name": i.name, "task": i.task, "architectures": i.architectures,
                "version": i.version, "path": path.display().to_string(),
            }),
            Err(e) => serde_json::json!({ "name": name, "path": path.display().to_string(), "error": e.to_string() }),
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no skills found in: {:?}", host::skills::search_dirs());
    } else {
        for r in &rows {
            match r.get("error") {
                Some(e) => println!("{:<16} error: {}", r["name"].as_str().unwrap_or(""), e),
                None => println!(
                    "{:<16} {:<20} {}  ({})",
                    r["name"].as_str().unwrap_or(""),
                    r["task"].as_str().unwrap_or(""),
                    r["architectures"],
                    r["path"].as_str().unwrap_or("")
                ),
            }
        }
    }
    Ok(0)
}
