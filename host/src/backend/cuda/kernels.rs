//! The kernel module: `kernels.cu` compiled by NVRTC for the device's
//! architecture, with the PTX cached on disk keyed by the SHA-256 of the
//! source, the architecture and the NVRTC version, so only the first run on
//! a machine pays the compile.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, Ptx};

/// CUDA C source of every kernel.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Loaded kernels of one device.
pub struct Kernels {
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    /// Where the PTX came from (`compiled in N ms` or `cache <path>`).
    pub origin: String,
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

fn cache_path(key: &str) -> Option<PathBuf> {
    crate::sandbox::cache_dir().map(|d| d.join("cuda").join(format!("kernels-{key}.ptx")))
}

fn nvrtc_version() -> (i32, i32) {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the caller checked that NVRTC is present; writes two ints.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (major, minor)
}

impl Kernels {
    /// Compiles (or loads from the cache) and loads the module on `ctx`.
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Kernels, String> {
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| format!("cannot read the compute capability: {e}"))?;
        let arch = format!("compute_{major}{minor}");
        let key = cache_key(&arch, nvrtc_version());
        let path = cache_path(&key);
        let cached = path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .filter(|s| s.contains(".entry"));
        let (ptx, origin) = match cached {
            Some(src) => (
                Ptx::from_src(src),
                format!(
                    "cache {}",
                    path.as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                ),
            ),
            None => {
                let started = std::time::Instant::now();
                let opts = CompileOptions {
                    options: vec![format!("--gpu-architecture={arch}"), "--std=c++14".into()],
                    ..Default::default()
                };
                let ptx = cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts)
                    .map_err(|e| format!("NVRTC could not compile the kernels for {arch}: {e}"))?;
                if let Some(p) = &path {
                    if let Some(dir) = p.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    // A failed cache write only costs the next run a compile.
                    let _ = std::fs::write(p, ptx.to_src());
                }
                (
                    ptx,
                    format!(
                        "compiled for {arch} in {} ms",
                        started.elapsed().as_millis()
                    ),
                )
            }
        };
        let module = ctx
            .load_module(ptx)
            .map_err(|e| format!("cannot load the kernel module: {e}"))?;
        Ok(Kernels {
            module,
            functions: Mutex::new(HashMap::new()),
            origin,
        })
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
            "gather",
            "argmax",
            "top_k",
            "copy_many",
        ] {
            assert!(
                SOURCE.contains(&format!("void {family}")),
                "no kernel family `{family}`"
            );
        }
        assert!(!SOURCE.contains("#include"));
    }

    #[test]
    fn cache_key_depends_on_arch_and_nvrtc() {
        let a = cache_key("compute_90", (13, 0));
        assert_ne!(a, cache_key("compute_80", (13, 0)));
        assert_ne!(a, cache_key("compute_90", (12, 8)));
        assert_eq!(a, cache_key("compute_90", (13, 0)));
    }
}
