//! `host serve`: its flags (endpoints from flags or a file, limits,
//! timeouts, keys, model roots, replicas) and the start-up that turns them
//! into a running server.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use host::backend::{registry, Precision};
use host::endpoint::{BatchPolicy, EndpointConfig, Endpoints, EndpointsFile};
use host::serve::ServeOptions;

use crate::{sandbox, tokio_runtime};

#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Endpoints file (JSON `{"endpoints": [...]}` or TOML `[[endpoints]]`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// Name of an endpoint given by flags.
    #[arg(long, default_value = "default")]
    name: String,
    /// Skill of an endpoint given by flags.
    #[arg(long)]
    skill: Option<String>,
    /// Model of an endpoint given by flags.
    #[arg(long)]
    model: Option<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Skill instances (worker threads) of the endpoint (per replica).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Replicas: devices that each serve the endpoint (`cuda:0,cuda:1`,
    /// `cuda:*` for every visible GPU, `cpu,openvino`); instead of --device.
    #[arg(long)]
    replicas: Option<String>,
    #[arg(long, default_value_t = 32)]
    max_batch_size: usize,
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    #[arg(long, default_value_t = 1024)]
    queue_capacity: usize,
    /// Requests handled at once; more get HTTP 429.
    #[arg(long, default_value_t = 512)]
    max_concurrent_requests: usize,
    /// Largest request body in bytes; larger gets HTTP 413.
    #[arg(long, default_value_t = 32 << 20)]
    max_body_bytes: usize,
    /// Endpoint used when a request names none.
    #[arg(long)]
    default_endpoint: Option<String>,
    /// API key the inference routes require (`Authorization: Bearer KEY`);
    /// repeatable, or comma-separated in HOST_API_KEY. Prefer the file or
    /// the variable: arguments show in `ps`.
    #[arg(
        long = "api-key",
        env = "HOST_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// File of API keys, one per line (`#` comments).
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Admin key: turns the admin routes on and is required by them;
    /// repeatable, or comma-separated in HOST_ADMIN_KEY.
    #[arg(
        long = "admin-key",
        env = "HOST_ADMIN_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    admin_keys: Vec<String>,
    /// File of admin keys, one per line (`#` comments).
    #[arg(long)]
    admin_key_file: Option<PathBuf>,
    /// Directory admin-added models may come from (repeatable); their
    /// `model` is a path relative to it.
    #[arg(long = "model-root")]
    model_roots: Vec<PathBuf>,
    /// Let admin-added endpoints name hub ids (downloads on request).
    #[arg(long)]
    admin_hub: bool,
    /// Seconds a client has to send a request's headers (also closes idle
    /// keep-alive connections).
    #[arg(long, default_value_t = 30.0)]
    header_timeout_s: f64,
    /// Seconds a client has to send a request's body.
    #[arg(long, default_value_t = 60.0)]
    body_timeout_s: f64,
    /// Seconds in-flight requests get after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30.0)]
    shutdown_timeout_s: f64,
}

pub(crate) fn serve(args: ServeArgs, config: &host::config::HostConfig) -> Result<i32> {
    let mut configs = Vec::new();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --config {}", path.display()))?;
        configs.extend(
            EndpointsFile::parse(path, &text)
                .map_err(anyhow::Error::msg)?
                .endpoints,
        );
    }
    match (&args.skill, &args.model) {
        (Some(skill), Some(model)) => {
            let devices = registry::parse_list_with(&args.device, config.fault_injection)?;
            let precision: Precision = args.precision.parse().map_err(anyhow::Error::msg)?;
            let mut c = EndpointConfig::new(&args.name, skill, model, devices, precision);
            c.instances = args.instances;
            if let Some(r) = &args.replicas {
                c.replicas = host::endpoint::parse_replicas(r)?;
            }
            c.batching = BatchPolicy {
                max_batch_size: args.max_batch_size,
                max_wait_ms: args.max_wait_ms,
                queue_capacity: args.queue_capacity,
                ..BatchPolicy::default()
            };
            configs.push(c);
        }
        (None, None) => {}
        _ => bail!("an endpoint given by flags needs both --skill and --model"),
    }
    let keys = host::serve::auth::Keys::new(
        &with_file(&args.api_keys, args.api_key_file.as_deref())?,
        &with_file(&args.admin_keys, args.admin_key_file.as_deref())?,
    )?;
    let model_roots = host::serve::confine::ModelRoots::new(&args.model_roots, args.admin_hub)?;
    let timeouts = host::serve::listen::Timeouts {
        header: seconds("--header-timeout-s", args.header_timeout_s)?,
        body: seconds("--body-timeout-s", args.body_timeout_s)?,
        shutdown: seconds("--shutdown-timeout-s", args.shutdown_timeout_s)?,
    };
    if keys.admin_enabled() && model_roots.is_empty() && !args.admin_hub {
        tracing::warn!("admin routes are on but no --model-root is set: admin-added endpoints cannot name a model");
    }
    if configs.is_empty() {
        tracing::info!(
            "no endpoints configured; add them with POST /admin/endpoints (needs an admin key)"
        );
    }
    tokio_runtime()?.block_on(async {
        let endpoints = Arc::new(Endpoints::new(sandbox(config)?));
        for c in configs {
            let name = c.name.clone();
            tracing::info!(
                "loading endpoint `{name}` ({} on {})",
                c.model,
                (if c.replicas.is_empty() {
                    &c.devices
                } else {
                    &c.replicas
                })
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
            );
            endpoints.add(c).await?;
        }
        let opts = ServeOptions {
            addr: args.addr,
            max_concurrent_requests: args.max_concurrent_requests,
            max_body_bytes: args.max_body_bytes,
            default_endpoint: args.default_endpoint.clone(),
            keys,
            model_roots,
            timeouts,
        };
        host::serve::serve(endpoints, opts, None).await?;
        Ok(0)
    })
}

/// `keys` plus the non-empty, non-comment lines of `file`.
fn with_file(keys: &[String], file: Option<&std::path::Path>) -> Result<Vec<String>> {
    let mut out: Vec<String> = keys.to_vec();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read key file {}", f.display()))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    Ok(out)
}

/// A positive, finite number of seconds.
fn seconds(flag: &str, s: f64) -> Result<std::time::Duration> {
    if !(s.is_finite() && s > 0.0 && s < 1e9) {
        bail!("{flag} must be a positive number of seconds (got {s})");
    }
    Ok(std::time::Duration::from_secs_f64(s))
}
