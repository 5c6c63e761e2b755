//! CUDA backend (issue #4): device discovery through `cudarc` with dynamic
//! loading, so a host built without CUDA runs anywhere and reports why CUDA
//! cannot serve instead of panicking.
//!
//! The executor (NVRTC kernels, cuBLASLt GEMMs, fused attention, CUDA
//! graphs) is not written yet: opening a `cuda` device is a typed
//! "unavailable" error naming what is missing, never a fallback in disguise.

use super::{BackendError, DeviceStatus};

/// What the driver reports about one GPU.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub total_mem_bytes: usize,
    pub free_mem_bytes: usize,
}

/// Driver and library versions plus every GPU, or why CUDA is unusable.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CudaReport {
    pub driver_version: i32,
    pub nvrtc_version: Option<(i32, i32)>,
    pub cublaslt: bool,
    pub gpus: Vec<GpuInfo>,
}

fn version_str(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Probes the CUDA driver and libraries. cudarc panics when a library is
/// missing, so presence is checked first and the rest runs under
/// `catch_unwind`.
pub fn report() -> Result<CudaReport, String> {
    // SAFETY: only tries to dlopen the driver library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(
            "no CUDA driver: libcuda.so.1 not found (no NVIDIA driver on this machine)".into(),
        );
    }
    std::panic::catch_unwind(|| {
        cudarc::driver::result::init()
            .map_err(|e| format!("CUDA driver present but cuInit failed: {e}"))?;
        let mut driver_version = 0;
        // SAFETY: cuDriverGetVersion writes one int; the driver is loaded.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver_version) };
        // SAFETY: dlopen probes only.
        let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() }.then(|| {
            let (mut major, mut minor) = (0, 0);
            // SAFETY: nvrtcVersion writes two ints; the library is present.
            unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
            (major, minor)
        });
        // SAFETY: dlopen probe only.
        let cublaslt = unsafe { cudarc::cublaslt::sys::is_culib_present() };
        let count = cudarc::driver::CudaContext::device_count()
            .map_err(|e| format!("cannot count GPUs: {e}"))?;
        let mut gpus = Vec::new();
        for ordinal in 0..count.max(0) as usize {
            let ctx = cudarc::driver::CudaContext::new(ordinal)
                .map_err(|e| format!("cuda:{ordinal}: {e}"))?;
            let (free, total) = ctx.mem_get_info().unwrap_or((0, 0));
            gpus.push(GpuInfo {
                ordinal,
                name: ctx.name().unwrap_or_default(),
                compute_capability: ctx.compute_capability().unwrap_or((0, 0)),
                total_mem_bytes: total,
                free_mem_bytes: free,
            });
        }
        Ok(CudaReport {
            driver_version,
            nvrtc_version: nvrtc,
            cublaslt,
            gpus,
        })
    })
    .unwrap_or_else(|_| {
        Err("a CUDA library is present but unusable (cudarc panicked while loading it)".into())
    })
}

/// One status line per GPU (or one saying why there is none).
pub fn probe() -> Vec<DeviceStatus> {
    match report() {
        Err(reason) => vec![DeviceStatus { device: "cuda".into(), available: false, detail: reason }],
        Ok(r) if r.gpus.is_empty() => vec![DeviceStatus {
            device: "cuda".into(),
            available: false,
            detail: format!("CUDA driver {} reports no GPU", version_str(r.driver_version)),
        }],
        Ok(r) => r
            .gpus
            .iter()
            .map(|g| DeviceStatus {
                device: format!("cuda:{}", g.ordinal),
                available: false,
                detail: format!(
                    "{} (compute {}.{}, {:.1} GiB, {:.1} GiB free), driver CUDA {}, NVRTC {}, cuBLASLt {}; \
                     the CUDA executor is not implemented yet",
                    g.name,
                    g.compute_capability.0,
                    g.compute_capability.1,
                    g.total_mem_bytes as f64 / (1u64 << 30) as f64,
                    g.free_mem_bytes as f64 / (1u64 << 30) as f64,
                    version_str(r.driver_version),
                    r.nvrtc_version.map(|(a, b)| format!("{a}.{b}")).unwrap_or_else(|| "missing".into()),
                    if r.cublaslt { "found" } else { "missing" },
                ),
            })
            .collect(),
    }
}

/// Opening a CUDA device: what exists, and that the executor does not yet.
pub fn open(ordinal: u32) -> BackendError {
    let device = format!("cuda:{ordinal}");
    let reason = match report() {
        Err(r) => r,
        Ok(r) => match r.gpus.iter().find(|g| g.ordinal == ordinal as usize) {
            None => format!("no GPU {ordinal}; the driver reports {}", r.gpus.len()),
            Some(g) => format!(
                "{} found, but the CUDA executor is not implemented yet (issue #4)",
                g.name
            ),
        },
    };
    BackendError::Unavailable { device, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_render_like_nvidia_smi() {
        assert_eq!(version_str(13000), "13.0");
        assert_eq!(version_str(12080), "12.8");
    }

    #[test]
    fn probing_never_panics() {
        let s = probe();
        assert!(!s.is_empty());
        assert!(
            s.iter().all(|d| !d.available),
            "no CUDA executor yet, so nothing may claim to serve"
        );
    }
}
