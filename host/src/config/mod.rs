//! One configuration: every setting the host takes from its environment,
//! typed and validated in one place ([`HostConfig::from_env`]).
//!
//! The `host` binary builds it once at start-up (environment, then its
//! flags: [`ConfigArgs`]) and passes it down: the sandbox is built from it
//! and carries it ([`crate::sandbox::Sandbox::config`]), so runners and
//! endpoints take their backends' [`BackendOptions`], skill directories,
//! hub mode and the rest from the sandbox they are handed. Constructors for
//! callers without a configuration (tests, library users) read the
//! environment at that call ([`HostConfig::from_env_lenient`]: a value that
//! does not parse keeps its default there); for the binary a value that
//! does not parse is an error.
//!
//! Empty variables count as unset. `HOST_LOG` (a `tracing` filter) is read
//! by the binary's logging; its bare level names also set the skills' log
//! level here. `HF_HOME` and `HF_ENDPOINT` are read by `hf-hub` itself.

use std::ffi::OsString;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr;

use crate::sandbox::SandboxLimits;

/// A setting that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}={value:?} is not valid: {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: String,
    },
    #[error("{var} is not valid UTF-8")]
    NotUnicode { var: &'static str },
}

/// OpenVINO's performance hint (`PERFORMANCE_HINT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PerformanceHint {
    /// Lowest latency of one request (one stream).
    #[default]
    Latency,
    /// Most requests per second (several streams).
    Throughput,
    /// Throughput over every device of a multi-device plugin.
    CumulativeThroughput,
}

impl PerformanceHint {
    /// The value OpenVINO takes.
    pub fn as_openvino(self) -> &'static str {
        match self {
            PerformanceHint::Latency => "LATENCY",
            PerformanceHint::Throughput => "THROUGHPUT",
            PerformanceHint::CumulativeThroughput => "CUMULATIVE_THROUGHPUT",
        }
    }
}

impl FromStr for PerformanceHint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().replace('-', "_").as_str() {
            "LATENCY" => Ok(PerformanceHint::Latency),
            "THROUGHPUT" => Ok(PerformanceHint::Throughput),
            "CUMULATIVE_THROUGHPUT" => Ok(PerformanceHint::CumulativeThroughput),
            _ => Err("expected LATENCY, THROUGHPUT or CUMULATIVE_THROUGHPUT".into()),
        }
    }
}

/// How much the CUDA backend reports on stderr (`HOST_CUDA_TRACE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum CudaTrace {
    /// Nothing (0).
    #[default]
    Off,
    /// Planning and run timings (1).
    Timings,
    /// Also launches directly and profiles each bucket's 4th run per kernel (2).
    Profile,
    /// Also lists every planned step (3).
    Steps,
}

impl FromStr for CudaTrace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "0" => Ok(CudaTrace::Off),
            "1" => Ok(CudaTrace::Timings),
            "2" => Ok(CudaTrace::Profile),
            "3" => Ok(CudaTrace::Steps),
            _ => Err("expected 0, 1, 2 or 3".into()),
        }
    }
}

/// The CUDA backend's switches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaOptions {
    /// Replay captured CUDA graphs for repeated shapes (`HOST_CUDA_GRAPHS`,
    /// default on).
    pub graphs: bool,
    /// Programmatic dependent launch on compute capability 9.0 and later
    /// (`HOST_CUDA_PDL`, default on).
    pub pdl: bool,
    /// What is reported on stderr (`HOST_CUDA_TRACE`).
    pub trace: CudaTrace,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            graphs: true,
            pdl: true,
            trace: CudaTrace::Off,
        }
    }
}

/// Where the native runtime libraries are (see [`crate::runtime_libs`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LibraryPaths {
    /// A directory holding the wheels (`HOST_RUNTIME_DIR`), searched before
    /// `.runtime/py` of the executable's and working directory's ancestors.
    pub runtime_dir: Option<PathBuf>,
    /// `libonnxruntime.so` itself (`ORT_DYLIB_PATH`).
    pub onnxruntime: Option<PathBuf>,
    /// `libopenvino_c.so` itself (`OPENVINO_LIB_PATH`).
    pub openvino_c: Option<PathBuf>,
}

/// What a backend is constructed with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendOptions {
    /// Threads of ONNX Runtime's pool (`HOST_CPU_THREADS`; default: every
    /// core). Fixed by the first cpu backend of the process.
    pub cpu_threads: Option<NonZeroUsize>,
    /// OpenVINO's performance hint (`HOST_OPENVINO_HINT`).
    pub openvino_hint: PerformanceHint,
    /// The CUDA backend's switches.
    pub cuda: CudaOptions,
    /// Where the runtime libraries are.
    pub libraries: LibraryPaths,
    /// Where staged OpenVINO graphs and compiled CUDA kernels are cached
    /// (`None`: OpenVINO stages under the temporary directory, CUDA
    /// kernels are compiled every time).
    pub cache_dir: Option<PathBuf>,
    /// Most MiB the staged OpenVINO graphs may hold of their own
    /// (`HOST_OPENVINO_CACHE_MB`; `None`: [`DEFAULT_OPENVINO_CACHE_MB`]).
    pub openvino_cache_mb: Option<u64>,
}

/// The default budget of the staged OpenVINO graphs, MiB.
pub const DEFAULT_OPENVINO_CACHE_MB: u64 = 4096;

impl BackendOptions {
    /// The staged OpenVINO graphs' budget in bytes.
    pub fn openvino_cache_bytes(&self) -> u64 {
        (self.openvino_cache_mb.unwrap_or(DEFAULT_OPENVINO_CACHE_MB)).saturating_mul(1 << 20)
    }

    /// The ONNX Runtime pool's threads: the setting, else every core.
    pub fn cpu_threads(&self) -> usize {
        self.cpu_threads.map(NonZeroUsize::get).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

/// The least severe skill log message printed (`HOST_LOG`'s bare level).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkillLogLevel {
    Trace,
    Debug,
    Info,
    #[default]
    Warn,
    Error,
}

impl SkillLogLevel {
    /// The level's rank, 0 (trace) to 4 (error).
    pub fn rank(self) -> u8 {
        self as u8
    }
}

impl FromStr for SkillLogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(SkillLogLevel::Trace),
            "debug" => Ok(SkillLogLevel::Debug),
            "info" => Ok(SkillLogLevel::Info),
            "warn" | "warning" => Ok(SkillLogLevel::Warn),
            "error" => Ok(SkillLogLevel::Error),
            _ => Err("expected trace, debug, info, warn or error".into()),
        }
    }
}

/// Every setting of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// Cache of compiled skill components, staged OpenVINO graphs and CUDA
    /// kernels: `HOST_CACHE_DIR`, else `$XDG_CACHE_HOME/wasm-skill-host`,
    /// else `~/.cache/wasm-skill-host` (`None`: no home, no cache).
    pub cache_dir: Option<PathBuf>,
    /// Directories searched first for skills by name (`HOST_SKILLS_DIR`,
    /// colon-separated).
    pub skills_dirs: Vec<PathBuf>,
    /// What backends are constructed with (less the cache directory, which
    /// [`HostConfig::backend_options`] adds).
    pub backends: BackendOptions,
    /// Enables the `faulty` device, whose runs always fail
    /// (`HOST_FAULT_INJECTION`, for testing fallback).
    pub fault_injection: bool,
    /// The operator's ceilings of what a skill may declare
    /// (`HOST_SKILL_MEMORY_MB`, `HOST_SKILL_FUEL`, `HOST_MAX_TEXT_BYTES`).
    pub limits: SandboxLimits,
    /// The least severe skill log message printed (`HOST_LOG`, when it is a
    /// bare level; a `tracing` filter such as `host=debug` leaves `warn`).
    pub skill_log: SkillLogLevel,
    /// What `runtime.device` tells skills about replaying repeated shapes,
    /// instead of the backend's answer (`HOST_FIXED_SHAPES`).
    pub fixed_shapes: Option<bool>,
    /// Prints the host time of every session run (`HOST_TRACE_SESSIONS`).
    pub trace_sessions: bool,
    /// Hub ids only from the local cache (`HF_HUB_OFFLINE`).
    pub hub_offline: bool,
    /// Returns freed heap memory after large requests (`HOST_TRIM_MEMORY`,
    /// default on).
    pub trim_memory: bool,
}

impl Default for HostConfig {
    /// Every default, and no cache directory.
    fn default() -> Self {
        HostConfig {
            cache_dir: None,
            skills_dirs: Vec::new(),
            backends: BackendOptions::default(),
            fault_injection: false,
            limits: SandboxLimits::default(),
            skill_log: SkillLogLevel::default(),
            fixed_shapes: None,
            trace_sessions: false,
            hub_offline: false,
            trim_memory: true,
        }
    }
}

/// Reads variables through `lookup`, keeping the first error.
struct Reader<F> {
    lookup: F,
    error: Option<ConfigError>,
}

impl<F: Fn(&str) -> Option<OsString>> Reader<F> {
    /// The variable as UTF-8 text (`None`: unset, empty or not UTF-8).
    fn text(&mut self, var: &'static str) -> Option<String> {
        let v = (self.lookup)(var).filter(|v| !v.is_empty())?;
        match v.into_string() {
            Ok(s) => Some(s),
            Err(_) => {
                self.error.get_or_insert(ConfigError::NotUnicode { var });
                None
            }
        }
    }

    /// The variable as a path (`None`: unset or empty).
    fn path(&mut self, var: &'static str) -> Option<PathBuf> {
        (self.lookup)(var).filter(|v| !v.is_empty()).map(Into::into)
    }

    /// The variable parsed by `parse` (`None`: unset, or did not parse).
    fn parsed<T>(
        &mut self,
        var: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(var)?;
        match parse(&text) {
            Ok(v) => Some(v),
            Err(expected) => {
                self.error.get_or_insert(ConfigError::Invalid {
                    var,
                    value: text,
                    expected,
                });
                None
            }
        }
    }
}

/// A boolean: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off` (any case).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected 1 or 0 (or true/false, yes/no, on/off)".into()),
    }
}

/// A positive integer.
pub fn parse_positive(s: &str) -> Result<NonZeroU64, String> {
    (s.trim().parse()).map_err(|_| "expected a positive integer".into())
}

/// A positive integer that fits a `usize`.
pub fn parse_positive_usize(s: &str) -> Result<NonZeroUsize, String> {
    (s.trim().parse()).map_err(|_| "expected a positive integer".into())
}

/// A size in MiB, zero included.
pub fn parse_mib(s: &str) -> Result<u64, String> {
    (s.trim().parse()).map_err(|_| "expected a whole number of MiB".into())
}

/// Linear memory in MiB: positive, and its bytes fit a `usize`.
pub fn parse_memory_mib(s: &str) -> Result<NonZeroUsize, String> {
    parse_positive_usize(s).and_then(|n| {
        n.get()
            .checked_mul(1 << 20)
            .map(|_| n)
            .ok_or_else(|| "too large a number of MiB".into())
    })
}

impl HostConfig {
    /// The configuration the environment gives; a value that does not
    /// parse is an error naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|v| std::env::var_os(v))
    }

    /// [`HostConfig::from_env`], keeping the default of any value that
    /// does not parse.
    pub fn from_env_lenient() -> Self {
        Self::read(|v| std::env::var_os(v)).0
    }

    /// The configuration variables read through `lookup` give.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, ConfigError> {
        match Self::read(lookup) {
            (_, Some(e)) => Err(e),
            (config, None) => Ok(config),
        }
    }

    fn read(lookup: impl Fn(&str) -> Option<OsString>) -> (Self, Option<ConfigError>) {
        let mut r = Reader {
            lookup,
            error: None,
        };
        let cache_dir = r.path("HOST_CACHE_DIR").or_else(|| {
            (r.path("XDG_CACHE_HOME").map(|d| d.join("wasm-skill-host")))
                .or_else(|| (r.path("HOME")).map(|h| h.join(".cache").join("wasm-skill-host")))
        });
        let mut c = HostConfig {
            cache_dir,
            ..HostConfig::default()
        };
        if let Some(dirs) = (r.lookup)("HOST_SKILLS_DIR") {
            c.skills_dirs = std::env::split_paths(&dirs)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
        }
        let b = &mut c.backends;
        b.libraries = LibraryPaths {
            runtime_dir: r.path("HOST_RUNTIME_DIR"),
            onnxruntime: r.path("ORT_DYLIB_PATH"),
            openvino_c: r.path("OPENVINO_LIB_PATH"),
        };
        b.cpu_threads = r.parsed("HOST_CPU_THREADS", parse_positive_usize);
        if let Some(h) = r.parsed("HOST_OPENVINO_HINT", str::parse) {
            b.openvino_hint = h;
        }
        b.openvino_cache_mb = r.parsed("HOST_OPENVINO_CACHE_MB", parse_mib);
        if let Some(on) = r.parsed("HOST_CUDA_GRAPHS", parse_bool) {
            b.cuda.graphs = on;
        }
        if let Some(on) = r.parsed("HOST_CUDA_PDL", parse_bool) {
            b.cuda.pdl = on;
        }
        if let Some(t) = r.parsed("HOST_CUDA_TRACE", str::parse) {
            b.cuda.trace = t;
        }
        c.fault_injection = r.parsed("HOST_FAULT_INJECTION", parse_bool) == Some(true);
        if let Some(mib) = r.parsed("HOST_SKILL_MEMORY_MB", parse_memory_mib) {
            c.limits.memory_bytes = mib.get() << 20;
        }
        if let Some(f) = r.parsed("HOST_SKILL_FUEL", parse_positive) {
            c.limits.fuel_per_call = f.get();
        }
        if let Some(b) = r.parsed("HOST_MAX_TEXT_BYTES", parse_positive_usize) {
            c.limits.max_text_bytes = b.get();
        }
        // A `tracing` filter is the binary's logging's to judge.
        if let Some(level) = r.text("HOST_LOG").and_then(|v| v.parse().ok()) {
            c.skill_log = level;
        }
        c.fixed_shapes = r.parsed("HOST_FIXED_SHAPES", parse_bool);
        c.trace_sessions = r.parsed("HOST_TRACE_SESSIONS", parse_bool) == Some(true);
        c.hub_offline = r.parsed("HF_HUB_OFFLINE", parse_bool) == Some(true);
        if let Some(on) = r.parsed("HOST_TRIM_MEMORY", parse_bool) {
            c.trim_memory = on;
        }
        (c, r.error)
    }

    /// What backends are constructed with, the cache directory included.
    pub fn backend_options(&self) -> BackendOptions {
        BackendOptions {
            cache_dir: self.cache_dir.clone(),
            ..self.backends.clone()
        }
    }
}

/// The settings the command line takes as flags. Each flag wins over its
/// variable, read by [`HostConfig::from_env`] (not by clap, so that an empty
/// variable stays unset and every value has one parser and one error).
#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "Host configuration")]
pub struct ConfigArgs {
    /// Cache of compiled skills, staged OpenVINO graphs and CUDA kernels
    /// [env: HOST_CACHE_DIR] [default: $XDG_CACHE_HOME/wasm-skill-host, else
    /// ~/.cache/wasm-skill-host].
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Directory searched first for skills by name; repeatable
    /// [env: HOST_SKILLS_DIR, colon-separated].
    #[arg(long = "skills-dir", value_name = "DIR", global = true)]
    pub skills_dirs: Vec<PathBuf>,
    /// Directory holding the runtime wheels (onnxruntime, openvino),
    /// searched before `.runtime/py` near the executable and the working
    /// directory [env: HOST_RUNTIME_DIR].
    #[arg(long, value_name = "DIR", global = true)]
    pub runtime_dir: Option<PathBuf>,
    /// Threads of the cpu backend (ONNX Runtime) [env: HOST_CPU_THREADS]
    /// [default: every core].
    #[arg(long, value_name = "N", value_parser = parse_positive_usize, global = true)]
    pub cpu_threads: Option<NonZeroUsize>,
    /// OpenVINO performance hint: LATENCY, THROUGHPUT or
    /// CUMULATIVE_THROUGHPUT [env: HOST_OPENVINO_HINT] [default: LATENCY].
    #[arg(long, value_name = "HINT", value_parser = PerformanceHint::from_str, global = true)]
    pub openvino_hint: Option<PerformanceHint>,
    /// Most disk the staged OpenVINO graphs may use of their own, MiB; the
    /// least recently staged go first [env: HOST_OPENVINO_CACHE_MB]
    /// [default: 4096].
    #[arg(long, value_name = "MIB", value_parser = parse_mib, global = true)]
    pub openvino_cache_mb: Option<u64>,
    /// Most linear memory a skill instance may declare, MiB
    /// [env: HOST_SKILL_MEMORY_MB] [default: 512].
    #[arg(long, value_name = "MIB", value_parser = parse_memory_mib, global = true)]
    pub skill_memory_mb: Option<NonZeroUsize>,
    /// Most fuel per call a skill may declare, about 2.7e10 per second of
    /// guest CPU [env: HOST_SKILL_FUEL] [default: 50000000000].
    #[arg(long, value_name = "UNITS", value_parser = parse_positive, global = true)]
    pub skill_fuel: Option<NonZeroU64>,
    /// Longest text a skill may have the host tokenize, bytes
    /// [env: HOST_MAX_TEXT_BYTES] [default: 1048576].
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_usize, global = true)]
    pub max_text_bytes: Option<NonZeroUsize>,
    /// Resolve hub ids from the local cache only [env: HF_HUB_OFFLINE=1].
    #[arg(long, global = true)]
    pub offline: bool,
}

impl ConfigArgs {
    /// The environment's configuration with these flags over it.
    pub fn resolve(&self) -> Result<HostConfig, ConfigError> {
        let mut c = HostConfig::from_env()?;
        self.apply(&mut c);
        Ok(c)
    }

    /// Sets what these flags set.
    pub fn apply(&self, c: &mut HostConfig) {
        if let Some(d) = &self.cache_dir {
            c.cache_dir = Some(d.clone());
        }
        if !self.skills_dirs.is_empty() {
            c.skills_dirs = self.skills_dirs.clone();
        }
        if let Some(d) = &self.runtime_dir {
            c.backends.libraries.runtime_dir = Some(d.clone());
        }
        if let Some(n) = self.cpu_threads {
            c.backends.cpu_threads = Some(n);
        }
        if let Some(h) = self.openvino_hint {
            c.backends.openvino_hint = h;
        }
        if let Some(m) = self.openvino_cache_mb {
            c.backends.openvino_cache_mb = Some(m);
        }
        if let Some(mib) = self.skill_memory_mb {
            c.limits.memory_bytes = mib.get() << 20;
        }
        if let Some(f) = self.skill_fuel {
            c.limits.fuel_per_call = f.get();
        }
        if let Some(b) = self.max_text_bytes {
            c.limits.max_text_bytes = b.get();
        }
        c.hub_offline |= self.offline;
    }
}

#[cfg(test)]
mod tests;
