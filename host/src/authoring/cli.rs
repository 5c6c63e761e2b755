//! Command-line arguments and entry points of `host new` and `host test`
//! (`main.rs` only dispatches here).

use std::path::PathBuf;
use std::sync::Arc;

use super::cases::Tolerance;
use super::new::{self, NewOptions, SdkSource};
use super::test::{self, TestOptions};
use super::AuthoringError;
use crate::backend::registry;
use crate::sandbox::Sandbox;

/// `host test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Skill name or path to a .wasm component; `@sha256:...` (or `@CID`)
    /// after it pins the component's digest.
    pub skill: String,
    /// Model directory or hub id.
    #[arg(long)]
    pub model: String,
    /// JSON Lines cases file (default: `tests/cases.jsonl` when it exists).
    #[arg(long)]
    pub cases: Option<PathBuf>,
    /// Ordered device list; the first that can load the model serves.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Numeric precision: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Write a JUnit XML report here.
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write this run's answers into the cases file as the expectations
    /// (a trusted run: the cpu device in f32).
    #[arg(long)]
    pub record: bool,
    /// Absolute tolerance for every number (overrides the cases').
    #[arg(long)]
    pub atol: Option<f64>,
    /// Relative tolerance for every number (overrides the cases').
    #[arg(long)]
    pub rtol: Option<f64>,
}

/// `host new`.
#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// Skill and crate name (lower-case letters, digits, '-').
    pub name: String,
    /// The task whose contract the skill serves (e.g. text-classification).
    #[arg(long)]
    pub task: String,
    /// Directory of the new crate (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Take the SDK from this directory (default: this checkout's
    /// guest-skills/skill-sdk, when the host runs from its checkout).
    #[arg(long, conflicts_with_all = ["sdk_git", "sdk_version"])]
    pub sdk_path: Option<PathBuf>,
    /// Take the SDK from this git repository (the host's workspace).
    #[arg(long, conflicts_with = "sdk_version")]
    pub sdk_git: Option<String>,
    /// Revision (commit, tag) of --sdk-git.
    #[arg(long, requires = "sdk_git")]
    pub sdk_rev: Option<String>,
    /// Take the SDK from the registry at this version.
    #[arg(long)]
    pub sdk_version: Option<String>,
}

/// Runs `host test`; the exit code is 0 when everything passed, 1 when a
/// case or check failed.
pub fn test(args: TestArgs, sandbox: Arc<Sandbox>) -> Result<i32, AuthoringError> {
    let usage = |m: String| AuthoringError::Usage(m);
    let devices = registry::parse_list_with(&args.device, sandbox.config().fault_injection)
        .map_err(|e| usage(e.to_string()))?;
    let precision = args.precision.parse().map_err(usage)?;
    let tolerance = match (args.atol, args.rtol) {
        (None, None) => None,
        (a, r) => {
            let t = Tolerance {
                abs: a.unwrap_or(Tolerance::default().abs),
                rel: r.unwrap_or(Tolerance::default().rel),
            };
            if !(t.abs >= 0.0 && t.rel >= 0.0 && t.abs.is_finite() && t.rel.is_finite()) {
                return Err(usage(
                    "--atol and --rtol must be finite and non-negative".into(),
                ));
            }
            Some(t)
        }
    };
    let cases = args.cases.or_else(|| {
        let p = PathBuf::from("tests/cases.jsonl");
        p.is_file().then(|| {
            tracing::info!("using the cases in {}", p.display());
            p
        })
    });
    let opts = TestOptions {
        skill: args.skill,
        model: args.model,
        cases,
        devices,
        precision,
        record: args.record,
        tolerance,
    };
    let report = test::run(sandbox, &opts)?;
    if let Some(path) = &args.junit {
        std::fs::write(path, report.junit())
            .map_err(|e| AuthoringError::io("cannot write the JUnit report", path, e))?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.json()).unwrap_or_default()
        );
    } else {
        print!("{}", report.table());
    }
    if opts.record {
        if let Some(p) = &opts.cases {
            eprintln!("recorded the expectations of {}", p.display());
        }
    }
    Ok(if report.ok() { 0 } else { 1 })
}

/// Runs `host new`.
pub fn new(args: NewArgs) -> Result<i32, AuthoringError> {
    let sdk = match (args.sdk_path, args.sdk_git, args.sdk_version) {
        (Some(p), _, _) => SdkSource::Path(p.canonicalize().unwrap_or(p)),
        (_, Some(url), _) => SdkSource::Git {
            url,
            rev: args.sdk_rev,
        },
        (_, _, Some(v)) => SdkSource::Version(v),
        _ => SdkSource::Path(new::default_sdk_path().ok_or_else(|| {
            AuthoringError::Usage(
                "this host does not run from its checkout: give --sdk-path DIR, \
                 --sdk-git URL or --sdk-version VERSION"
                    .into(),
            )
        })?),
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let opts = NewOptions {
        name: args.name,
        task: args.task,
        dir,
        sdk,
    };
    let files = new::create(&opts)?;
    for f in &files {
        println!("{}", f.display());
    }
    let file = opts.name.replace('-', "_");
    eprintln!(
        "\nnext:\n  cd {dir}\n  cargo build --release --target wasm32-wasip2\n  \
         host test target/wasm32-wasip2/release/{file}.wasm --model MODEL_DIR --cases tests/cases.jsonl --record",
        dir = opts.dir.display()
    );
    Ok(0)
}
