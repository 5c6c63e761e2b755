//! The binary's diagnostics: one `tracing` subscriber, installed once at
//! start-up, writing events to stderr as text or JSON lines
//! (`--log-format`). `HOST_LOG` (else `RUST_LOG`) filters them, in
//! `tracing_subscriber::EnvFilter` syntax (`info`, `host=debug,skill=warn`).
//! The library emits events and spans but never installs a subscriber.

use std::io::IsTerminal;

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// How events are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event, with its span and the spans around it.
    Json,
}

/// The filter without `HOST_LOG` or `RUST_LOG`: info and above, plus the
/// opt-in traces under the `host::trace` target, which their own variables
/// (`HOST_CUDA_TRACE`, `HOST_TRACE_SESSIONS`) turn on.
const DEFAULT_FILTER: &str = "info,host::trace=debug";

/// The filter directives: `HOST_LOG`, else `RUST_LOG`, else the default.
fn directives() -> String {
    ["HOST_LOG", "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_FILTER.to_string())
}

/// Installs the process's subscriber. A filter that does not parse falls
/// back to the default and says so (the command still runs).
pub(crate) fn init(format: LogFormat) {
    let wanted = directives();
    let (filter, bad) = match EnvFilter::try_new(&wanted) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(e)),
    };
    // Spans show as their close events, with busy and idle time, where the
    // filter enables them (they are at debug level).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::CLOSE);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    if let Err(e) = installed {
        eprintln!("warning: logging not set up: {e}");
    }
    if let Some(e) = bad {
        tracing::warn!(
            "HOST_LOG/RUST_LOG={wanted:?} is not a valid filter ({e}); using {DEFAULT_FILTER:?}"
        );
    }
}
