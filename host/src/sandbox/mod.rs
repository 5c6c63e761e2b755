//! The WebAssembly sandbox: wasmtime components with no filesystem, network,
//! environment or inherited stdio; guest CPU time bounded by fuel and linear
//! memory bounded by store limits. Compiled components are cached on disk so
//! the second start of a skill does not recompile.
//!
//! A skill instance that traps is poisoned: the owner drops it and makes a
//! fresh one, the host itself keeps serving.
//!
//! [`SandboxLimits`] are the operator's ceiling. A skill declares what it
//! needs in `describe` and each instance gets that up to the ceiling
//! ([`limits`]): an instance is created under the ceiling, its component's
//! `describe` is read once per sandbox, and the instance's memory limit and
//! fuel per call are lowered to the grant before `load` runs.

mod convert;
mod imports;
mod imports_tokenizer;
pub mod limits;
mod meter;
mod session;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::config::HostConfig;

pub use imports::SkillContext;
pub use limits::{Granted, Needs};
pub use meter::Usage;

/// Types the runner needs from the import side.
pub mod imports_api {
    pub use super::imports::{CompileCache, SkillContext};
}

/// A host tensor from a WIT tensor.
pub fn tensor_from_wit(t: accel::skill::types::Tensor) -> crate::tensor::Tensor {
    convert::tensor_in(t)
}

wasmtime::component::bindgen!({
    world: "skill",
    path: "../wit",
    imports: { default: trappable },
    with: {
        "accel:skill/graph.builder": crate::ir::GraphBuilder,
        "accel:skill/tokenizer.tokenizer": crate::tokenizer::HostTokenizer,
        "accel:skill/runtime.compiled-graph": imports::CompiledGraph,
        "accel:skill/runtime.session": session::HostSession,
    },
});

pub use accel::skill::api::ResourceNeeds;
pub use accel::skill::types::Error as WitError;

/// Most bytes the cache of compiled components holds; the least recently
/// used go first.
const COMPONENT_CACHE_BYTES: u64 = 1 << 30;

/// A skill's response as it crosses the boundary.
pub type WitResponse = Response;

/// The operator's resource limits for skill instances: ceilings for what a
/// skill may declare ([`limits::Granted`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Most linear memory per instance, bytes; a skill that declares
    /// nothing gets [`limits::DEFAULT_MEMORY_BYTES`] (capped by this).
    pub memory_bytes: usize,
    /// Most fuel per export call (about 2.7e10 units per second of tight
    /// guest code on this class of CPU); host calls cost no fuel. A skill
    /// that declares nothing gets [`limits::DEFAULT_FUEL_PER_CALL`] (capped
    /// by this).
    pub fuel_per_call: u64,
    /// Longest text (bytes) a skill may ask the host to tokenize: host
    /// calls cost no fuel, so this bounds the one host call whose work
    /// grows with untrusted input (about 1.3 MB/s of tokenization).
    pub max_text_bytes: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            memory_bytes: limits::DEFAULT_MEMORY_BYTES,
            fuel_per_call: limits::DEFAULT_FUEL_PER_CALL,
            max_text_bytes: 1 << 20,
        }
    }
}

/// Why a call into a skill failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("skill `{skill}` exceeded its CPU budget ({fuel} fuel units) and was stopped")]
    CpuBudget { skill: String, fuel: u64 },
    #[error(
        "skill `{skill}` exceeded its memory limit of {limit_mib} MiB and was stopped: {message}"
    )]
    Memory {
        skill: String,
        limit_mib: usize,
        message: String,
    },
    #[error("skill `{skill}` trapped: {message}")]
    Trap { skill: String, message: String },
    #[error("skill `{skill}` could not be loaded: {message}")]
    Load { skill: String, message: String },
    /// The file's bytes are not the pinned ones.
    #[error("{0}")]
    DigestMismatch(Box<crate::digest::PinMismatch>),
}

/// Store data of one instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: meter::MeteredLimits,
    pub(crate) ctx: Arc<SkillContext>,
    /// Stream senders of the batch being handled, by request index.
    pub(crate) streams: Vec<Option<StreamSender>>,
    /// Takes the early answers (`partial.complete`) of the batch being
    /// handled, by request index.
    pub(crate) completer: Option<Completer>,
    /// Hands queued requests to the batch being handled (`take-queued`).
    pub(crate) queue: Option<Queue>,
    /// [`SandboxLimits::max_text_bytes`].
    pub(crate) max_text_bytes: usize,
}

/// Gives a running batch at most `max` queued requests (`take-queued`),
/// each with its stream sender; they are numbered after the batch's.
pub type Queue = Box<dyn FnMut(usize) -> Vec<(String, Option<StreamSender>)> + Send>;

/// Receives a request's answer given before `handle` returns
/// (`partial.complete`): request index in the batch, and the answer.
pub type Completer = Box<dyn FnMut(u32, Result<WitResponse, WitError>) + Send>;

/// Where a request's partial results go.
pub type StreamSender = tokio::sync::mpsc::UnboundedSender<String>;

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The process-wide engine and linker, and the host configuration it was
/// built from ([`Sandbox::config`]), which runners and endpoints take their
/// settings from.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<HostState>,
    pub limits: SandboxLimits,
    /// The configuration; its limits are those of construction
    /// ([`Sandbox::limits`] counts).
    config: Arc<HostConfig>,
    /// What each component (by digest) was granted, from its `describe`.
    grants: Mutex<HashMap<crate::digest::Digest, Granted>>,
}

/// A compiled skill component, ready to instantiate.
#[derive(Clone)]
pub struct SkillComponent {
    pub name: String,
    pub path: PathBuf,
    pre: SkillPre<HostState>,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// SHA-256 of the component bytes that were compiled.
    pub digest: crate::digest::Digest,
}

/// A live skill instance.
pub struct SkillInstance {
    skill: String,
    store: Store<HostState>,
    bindings: Skill,
    fuel: u64,
    memory_limit: usize,
    poisoned: bool,
    /// Most fuel one call burnt so far.
    max_fuel_used: u64,
    /// The limits this instance was granted.
    granted: Granted,
}

impl Sandbox {
    /// The engine of the environment's configuration
    /// ([`HostConfig::from_env_lenient`]) with `limits`: compiled components
    /// are cached under its cache directory.
    pub fn new(limits: SandboxLimits) -> Result<Self, SandboxError> {
        Self::from_config(&HostConfig {
            limits,
            ..HostConfig::from_env_lenient()
        })
    }

    /// [`Sandbox::new`] caching compiled components under `cache` (`None`:
    /// no cache).
    pub fn with_cache_dir(
        limits: SandboxLimits,
        cache: Option<PathBuf>,
    ) -> Result<Self, SandboxError> {
        Self::from_config(&HostConfig {
            limits,
            cache_dir: cache,
            ..HostConfig::from_env_lenient()
        })
    }

    /// The engine `config` describes (its limits and cache directory),
    /// carrying `config` for what is built on it.
    pub fn from_config(config: &HostConfig) -> Result<Self, SandboxError> {
        let err = |e: wasmtime::Error| SandboxError::Load {
            skill: "<engine>".into(),
            message: e.to_string(),
        };
        let mut engine_config = wasmtime::Config::new();
        engine_config.wasm_component_model(true);
        engine_config.consume_fuel(true);
        let engine = Engine::new(&engine_config).map_err(err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(err)?;
        Skill::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(err)?;
        Ok(Sandbox {
            engine,
            linker,
            limits: config.limits.clone(),
            config: Arc::new(config.clone()),
            grants: Mutex::new(HashMap::new()),
        })
    }

    /// The host configuration this sandbox was built from: what runners
    /// open backends with, where skills are found, the hub mode, ...
    pub fn config(&self) -> &Arc<HostConfig> {
        &self.config
    }

    /// Compiles (or loads from the on-disk cache) the component at `path`.
    pub fn load(&self, name: &str, path: &Path) -> Result<SkillComponent, SandboxError> {
        self.load_pinned(name, path, None)
    }

    /// [`Sandbox::load`], refusing a component whose bytes do not have the
    /// digest `pin` (checked on the very bytes that are compiled).
    pub fn load_pinned(
        &self,
        name: &str,
        path: &Path,
        pin: Option<&crate::digest::Digest>,
    ) -> Result<SkillComponent, SandboxError> {
        let fail = |message: String| SandboxError::Load {
            skill: name.to_string(),
            message,
        };
        let bytes = std::fs::read(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        let digest = crate::digest::Digest::of(&bytes);
        if let Some(expected) = pin.filter(|p| **p != digest) {
            return Err(SandboxError::DigestMismatch(Box::new(
                crate::digest::PinMismatch {
                    skill: name.to_string(),
                    path: path.display().to_string(),
                    expected: *expected,
                    got: digest,
                },
            )));
        }
        let (component, cached) = self.cached_compile(&bytes, &digest).map_err(fail)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| fail(format!("imports do not match the host: {e}")))?;
        let pre =
            SkillPre::new(pre).map_err(|e| fail(format!("not a `skill` world component: {e}")))?;
        Ok(SkillComponent {
            name: name.to_string(),
            path: path.to_path_buf(),
            pre,
            from_cache: cached,
            digest,
        })
    }

    fn cached_compile(
        &self,
        bytes: &[u8],
        digest: &crate::digest::Digest,
    ) -> Result<(Component, bool), String> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let key = format!("{}-{:016x}", digest.hex(), h.finish());
        let file = (self.config.cache_dir.as_ref())
            .map(|d| d.join("components").join(format!("{key}.cwasm")));
        if let Some(data) = file.as_ref().and_then(|f| std::fs::read(f).ok()) {
            // SAFETY: the file was written by `precompile_component` of an
            // engine with the same compatibility hash (part of its name) into
            // the user's own cache directory; it is read into memory (not
            // mapped), so a concurrent rewrite cannot change code in use.
            if let Ok(c) = unsafe { Component::deserialize(&self.engine, &data) } {
                if let Some(f) = &file {
                    crate::disk_cache::touch(f);
                }
                return Ok((c, true));
            }
        }
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| format!("not a valid component: {e}"))?;
        if let Some(f) = &file {
            if let Some(dir) = f.parent() {
                let _ = std::fs::create_dir_all(dir);
                let tmp = f.with_extension(format!("tmp{}", std::process::id()));
                if std::fs::write(&tmp, &compiled).is_ok() {
                    let _ = std::fs::rename(&tmp, f);
                } else {
                    let _ = std::fs::remove_file(&tmp);
                }
                crate::disk_cache::prune(
                    dir,
                    COMPONENT_CACHE_BYTES,
                    Some(f),
                    crate::disk_cache::GRACE,
                );
            }
        }
        // SAFETY: `compiled` was produced just above by this engine.
        unsafe { Component::deserialize(&self.engine, &compiled) }
            .map(|c| (c, false))
            .map_err(|e| e.to_string())
    }

    /// The limits granted to the component with digest `digest`, once one
    /// of its instances was made by this sandbox.
    pub fn granted(&self, digest: &crate::digest::Digest) -> Option<Granted> {
        self.grants.lock().ok()?.get(digest).copied()
    }

    /// A fresh instance of `skill` serving `ctx`, with the limits the skill
    /// declared (up to the ceiling [`Sandbox::limits`]). The first instance
    /// of a component asks its `describe` (under the ceiling) and reports a
    /// declaration above the ceiling (a `tracing` warning).
    pub fn instantiate(
        &self,
        skill: &SkillComponent,
        ctx: Arc<SkillContext>,
    ) -> Result<SkillInstance, SandboxError> {
        let mut inst = self.instantiate_with(skill, ctx, Granted::ceiling(&self.limits))?;
        let known = self.granted(&skill.digest);
        let granted = match known {
            Some(g) => g,
            None => {
                let g = Granted::new(Needs::of(&inst.describe()?), &self.limits);
                for w in g.warnings(&skill.name) {
                    tracing::warn!("{w}");
                }
                if let Ok(mut m) = self.grants.lock() {
                    m.insert(skill.digest, g);
                }
                g
            }
        };
        inst.grant(granted);
        Ok(inst)
    }

    /// A fresh instance under `granted` (the ceiling until `describe` said
    /// what the skill needs).
    fn instantiate_with(
        &self,
        skill: &SkillComponent,
        ctx: Arc<SkillContext>,
        granted: Granted,
    ) -> Result<SkillInstance, SandboxError> {
        let state = HostState {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            limits: meter::MeteredLimits::new(granted.memory_bytes.granted),
            ctx,
            streams: Vec::new(),
            completer: None,
            queue: None,
            max_text_bytes: self.limits.max_text_bytes,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        let fuel = granted.fuel_per_call.granted;
        let _ = store.set_fuel(fuel);
        let memory_limit = granted.memory_bytes.granted;
        let bindings = skill
            .pre
            .instantiate(&mut store)
            .map_err(|e| classify(&skill.name, fuel, memory_limit, e))?;
        Ok(SkillInstance {
            skill: skill.name.clone(),
            store,
            bindings,
            fuel,
            memory_limit,
            poisoned: false,
            max_fuel_used: 0,
            granted,
        })
    }
}

impl SkillInstance {
    /// Whether a trap made this instance unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn classify(&mut self, e: wasmtime::Error) -> SandboxError {
        self.poisoned = true;
        classify(&self.skill, self.fuel, self.memory_limit, e)
    }

    /// The `skill_call` span of a call into the skill's `phase` export.
    fn call_span(&self, phase: &'static str) -> tracing::Span {
        tracing::debug_span!("skill_call", skill = %self.skill, phase)
    }

    fn refuel(&mut self) {
        let _ = self.store.set_fuel(self.fuel);
    }

    /// Notes the fuel the call that just returned burnt.
    fn meter(&mut self) {
        if let Ok(left) = self.store.get_fuel() {
            self.max_fuel_used = self.max_fuel_used.max(self.fuel.saturating_sub(left));
        }
    }

    /// Lowers (or raises, up to the ceiling the instance was made under)
    /// the memory limit and fuel per call to `granted`.
    fn grant(&mut self, granted: Granted) {
        self.granted = granted;
        self.fuel = granted.fuel_per_call.granted;
        self.memory_limit = granted.memory_bytes.granted;
        self.store
            .data_mut()
            .limits
            .set_memory_limit(self.memory_limit);
    }

    /// The limits this instance was granted.
    pub fn granted(&self) -> Granted {
        self.granted
    }

    /// The fuel each later call gets (tests provoke an out-of-fuel trap with
    /// a tiny budget); a fresh instance gets its grant again.
    pub fn set_fuel_per_call(&mut self, fuel: u64) {
        self.fuel = fuel;
    }

    /// Memory and fuel used so far, against the limits.
    pub fn usage(&self) -> Usage {
        Usage {
            peak_memory_bytes: self.store.data().limits.peak_memory,
            memory_limit_bytes: self.memory_limit,
            max_fuel_per_call: self.max_fuel_used,
            fuel_limit_per_call: self.fuel,
        }
    }

    pub fn describe(&mut self) -> Result<SkillInfo, SandboxError> {
        let _call = self.call_span("describe").entered();
        self.refuel();
        let r = self.bindings.call_describe(&mut self.store);
        self.meter();
        r.map_err(|e| self.classify(e))
    }

    pub fn load(&mut self) -> Result<Result<(), WitError>, SandboxError> {
        let _call = self.call_span("load").entered();
        self.refuel();
        let r = self.bindings.call_load(&mut self.store);
        self.meter();
        r.map_err(|e| self.classify(e))
    }

    pub fn handle(
        &mut self,
        batch: &[String],
    ) -> Result<Vec<Result<WitResponse, WitError>>, SandboxError> {
        self.handle_streaming(batch, Vec::new(), None, None)
    }

    /// Like `handle`, forwarding the skill's partial results of request `i`
    /// to `streams[i]` when present.
    pub fn handle_streaming(
        &mut self,
        batch: &[String],
        streams: Vec<Option<StreamSender>>,
        completer: Option<Completer>,
        queue: Option<Queue>,
    ) -> Result<Vec<Result<WitResponse, WitError>>, SandboxError> {
        let _call = self.call_span("handle").entered();
        self.refuel();
        self.store.data_mut().streams = streams;
        self.store.data_mut().completer = completer;
        self.store.data_mut().queue = queue;
        let r = self.bindings.call_handle(&mut self.store, batch);
        self.meter();
        self.store.data_mut().streams = Vec::new();
        self.store.data_mut().completer = None;
        self.store.data_mut().queue = None;
        r.map_err(|e| self.classify(e))
    }
}

/// Maps a wasmtime error to a typed sandbox error.
fn classify(skill: &str, fuel: u64, memory_limit: usize, e: wasmtime::Error) -> SandboxError {
    let skill = skill.to_string();
    let text = format!("{e:?}");
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => SandboxError::CpuBudget { skill, fuel },
        _ if text.contains("growing memory")
            || text.contains("memory growth")
            || text.contains("memory minimum size") =>
        {
            SandboxError::Memory {
                skill,
                limit_mib: memory_limit >> 20,
                message: first_line(&text),
            }
        }
        _ => SandboxError::Trap {
            skill,
            message: first_line(&text),
        },
    }
}

fn first_line(s: &str) -> String {
    let mut lines = s.lines().filter(|l| !l.trim().is_empty());
    let head = lines.next().unwrap_or("").trim().to_string();
    match lines.find(|l| l.contains("trap") || l.contains("memory") || l.contains("error")) {
        Some(more) if !head.contains(more.trim()) => format!("{head}: {}", more.trim()),
        _ => head,
    }
}
