//! The kernel module: `kernels/*.cu` (one source, in parts) compiled by NVRTC to machine code
//! (CUBIN) for the device's architecture, cached on disk keyed by the
//! SHA-256 of the source, the architecture and the NVRTC version, so only the
//! first run on a machine pays the compile. Loading PTX instead would make
//! the driver JIT-compile each kernel on its first launch (hundreds of
//! milliseconds inside the first requests); PTX remains the fallback when
//! NVRTC cannot emit code for the architecture.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};

use super::launch::Launch;
use crate::config::BackendOptions;

/// CUDA C source of every kernel.
pub const SOURCE: &str = concat!(
    include_str!("kernels/base.cu"),
    include_str!("kernels/norm.cu"),
    include_str!("kernels/attention.cu"),
    include_str!("kernels/attention_mma.cu"),
    include_str!("kernels/gemv.cu"),
    include_str!("kernels/instances.cu"),
);

/// Loaded kernels of one device.
pub struct Kernels {
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    /// Where the PTX came from (`compiled in N ms` or `cache <path>`).
    pub origin: String,
    /// Launch with programmatic dependent launch (compute capability 9.0
    /// and later, unless `HOST_CUDA_PDL=0`): a kernel may be scheduled while
    /// the previous one finishes (each waits for its predecessor's results
    /// first, see `pdl_enter` in kernels/base.cu).
    pub pdl: bool,
    /// The device's multiprocessors (see [`Launch::kernel_on`]).
    sms: u32,
}

/// The cache key of the kernels for `arch` under NVRTC `version`.
pub fn cache_key(arch: &str, nvrtc: (i32, i32)) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(SOURCE.as_bytes());
    h.update(arch.as_bytes());
    h.update(format!("{}.{}", nvrtc.0, nvrtc.1).as_bytes());
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where the kernels of `key` are cached under `cache_dir`.
fn cache_path(cache_dir: Option<&Path>, key: &str, ext: &str) -> Option<PathBuf> {
    cache_dir.map(|d| d.join("cuda").join(format!("kernels-{key}.{ext}")))
}

/// Writes `bytes` to the cache (a failed write only costs a compile later).
fn store(path: &Option<PathBuf>, bytes: &[u8]) {
    if let Some(p) = path {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(p, bytes);
    }
}

/// NVRTC options for `arch` (`sm_90` for machine code, `compute_90` for PTX).
fn options(arch: &str) -> Vec<String> {
    vec![format!("--gpu-architecture={arch}"), "--std=c++14".into()]
}

/// Compiles the source to a CUBIN for real architecture `arch`.
fn compile_cubin(arch: &str) -> Result<Vec<u8>, String> {
    use cudarc::nvrtc::{result, sys};
    let src = std::ffi::CString::new(SOURCE).map_err(|e| e.to_string())?;
    let prog = result::create_program(&src, None).map_err(|e| e.to_string())?;
    // SAFETY: `prog` is live until destroyed below; the buffers are sized by
    // the size queries.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options(arch));
        let cubin = compiled.map_err(|e| {
            let log = result::get_program_log(prog)
                .map(|l| l.iter().map(|&c| c as u8 as char).collect::<String>())
                .unwrap_or_default();
            format!("{e}: {}", log.trim_end_matches('\0'))
        });
        cubin.and_then(|()| {
            let mut size = 0usize;
            sys::nvrtcGetCUBINSize(prog, &mut size)
                .result()
                .map_err(|e| e.to_string())?;
            let mut bytes = vec![0u8; size];
            sys::nvrtcGetCUBIN(prog, bytes.as_mut_ptr() as *mut std::ffi::c_char)
                .result()
                .map_err(|e| e.to_string())?;
            Ok(bytes)
        })
    };
    // SAFETY: created above, destroyed once.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// Machine code for `sm` from the cache or NVRTC; `None` if NVRTC cannot
/// emit it (the caller falls back to PTX).
fn cubin(cache_dir: Option<&Path>, sm: &str, origin: &mut String) -> Option<Ptx> {
    let path = cache_path(cache_dir, &cache_key(sm, nvrtc_version()), "cubin");
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()) {
        if !bytes.is_empty() {
            *origin = cached_at(&path);
            return Some(Ptx::from_binary(bytes));
        }
    }
    let started = std::time::Instant::now();
    let bytes = compile_cubin(sm).ok()?;
    store(&path, &bytes);
    *origin = format!("compiled for {sm} in {} ms", started.elapsed().as_millis());
    Some(Ptx::from_binary(bytes))
}

/// The module's origin when read from the cache at `path`.
fn cached_at(path: &Option<PathBuf>) -> String {
    let shown = path.as_ref().map(|p| p.display().to_string());
    format!("cache {}", shown.unwrap_or_default())
}

/// NVRTC's (major, minor) version; NVRTC must be present.
pub(super) fn nvrtc_version() -> (i32, i32) {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the caller checked that NVRTC is present; writes two ints.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (major, minor)
}

/// PTX for virtual architecture `arch` from the cache or NVRTC.
fn ptx(cache_dir: Option<&Path>, arch: &str, origin: &mut String) -> Result<Ptx, String> {
    let path = cache_path(cache_dir, &cache_key(arch, nvrtc_version()), "ptx");
    let cached = path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .filter(|s| s.contains(".entry"));
    if let Some(src) = cached {
        *origin = cached_at(&path);
        return Ok(Ptx::from_src(src));
    }
    let started = std::time::Instant::now();
    let opts = CompileOptions {
        options: options(arch),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts)
        .map_err(|e| format!("NVRTC could not compile the kernels for {arch}: {e}"))?;
    store(&path, ptx.to_src().as_bytes());
    *origin = format!(
        "compiled for {arch} in {} ms",
        started.elapsed().as_millis()
    );
    Ok(ptx)
}

impl Kernels {
    /// Compiles (or loads from the cache under `options.cache_dir`) and
    /// loads the module on `ctx`.
    pub fn load(ctx: &Arc<CudaContext>, options: &BackendOptions) -> Result<Kernels, String> {
        let cache_dir = options.cache_dir.as_deref();
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| format!("cannot read the compute capability: {e}"))?;
        let mut origin = String::new();
        let ptx = match cubin(cache_dir, &format!("sm_{major}{minor}"), &mut origin) {
            Some(code) => code,
            None => ptx(cache_dir, &format!("compute_{major}{minor}"), &mut origin)?,
        };
        let module = ctx
            .load_module(ptx)
            .map_err(|e| format!("cannot load the kernel module: {e}"))?;
        let pdl = major >= 9 && options.cuda.pdl;
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(|e| format!("cannot read the multiprocessor count: {e}"))?
            .max(1) as u32;
        Ok(Kernels {
            module,
            functions: Mutex::new(HashMap::new()),
            origin,
            pdl,
            sms,
        })
    }

    /// The kernel that runs `launch` over `grid` blocks on this device
    /// (see [`Launch::kernel_on`]).
    pub fn for_step(&self, launch: &Launch, grid: u32) -> Result<CudaFunction, String> {
        self.function(&launch.kernel_on(grid, self.sms))
    }

    /// The kernel called `name`.
    pub fn function(&self, name: &str) -> Result<CudaFunction, String> {
        let mut map = self
            .functions
            .lock()
            .map_err(|_| "kernel table poisoned".to_string())?;
        if let Some(f) = map.get(name) {
            return Ok(f.clone());
        }
        let f = self
            .module
            .load_function(name)
            .map_err(|e| format!("kernel `{name}` is missing from the module: {e}"))?;
        map.insert(name.to_string(), f.clone());
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel family the planner emits is defined in the source, and
    /// the source needs no CUDA header (NVRTC gets no include path).
    #[test]
    fn kernel_families_are_defined_without_headers() {
        for family in [
            "unary",
            "binary",
            "compare",
            "and_bool",
            "not_bool",
            "select",
            "copy",
            "cast",
            "layer_norm",
            "rms_norm",
            "rotary",
            "softmax",
            "l2_norm",
            "reduce",
            "bias_add",
            "attention",
            "attention_rows",
            "attention_dec32",
            "attention_dec64",
            "attention_mma64",
            "attention_mma128",
            "attention_gdec64",
            "attention_gdec128",
            "gemv",
            "gemv_2b",
            "gemv_norm",
            "gemv_glu",
            "gemv_glu_norm",
            "gemv_mma",
            "gather",
            "argmax",
            "top_k",
            "copy_many",
        ] {
            // A family instantiated per type (`name_##n(`, `name_part_##n(`)
            // or on its own.
            assert!(
                [format!(" {family}_"), format!("void {family}(")]
                    .iter()
                    .any(|s| SOURCE.contains(s.as_str())),
                "no kernel family `{family}`"
            );
        }
        assert!(!SOURCE.contains("#include"));
    }

    /// Machine code compiles with NVRTC alone (no GPU needed); skipped with
    /// a reason where NVRTC is not installed, unless `REQUIRE_NVRTC=1`
    /// (scripts/test.sh installs it and sets that).
    #[test]
    fn compiles_machine_code_for_hopper() {
        // SAFETY: only probes whether the library loads.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            assert!(
                std::env::var("REQUIRE_NVRTC").as_deref() != Ok("1"),
                "REQUIRE_NVRTC=1 but libnvrtc was not found (LD_LIBRARY_PATH)"
            );
            eprintln!("skipped: libnvrtc not found");
            return;
        }
        let cubin = compile_cubin("sm_90").expect("NVRTC compiles the kernels for sm_90");
        assert_eq!(&cubin[..4], b"\x7fELF", "a CUBIN is an ELF image");
    }

    #[test]
    fn cache_key_depends_on_arch_and_nvrtc() {
        let a = cache_key("compute_90", (13, 0));
        assert_ne!(a, cache_key("compute_80", (13, 0)));
        assert_ne!(a, cache_key("compute_90", (12, 8)));
        assert_eq!(a, cache_key("compute_90", (13, 0)));
    }
}
