//! CUDA backend: our own kernels (CUDA C compiled at run time by NVRTC),
//! GEMMs on cuBLAS, a fused attention kernel, all through `cudarc` with
//! dynamic loading, so a host built without CUDA runs anywhere and reports
//! why CUDA cannot serve instead of panicking.
//!
//! - [`plan`] / [`lower`] / [`gemm`]: CPU-side planning per shape bucket
//!   (strided views, one arena with lifetime-based reuse, GEMM layouts).
//! - [`launch`]: typed kernel launches, their op codes, and the one
//!   mapping to kernel names and argument lists (checked against the source).
//! - [`kernels`]: the `kernels/*.cu` module and its on-disk PTX cache.
//! - [`device`]: allocations, the per-GPU handle, device-resident tensors.
//! - [`exec`]: the backend and executables: weights, plan cache, launches.
//! - [`convert`]: f32/f16/bf16 conversion of tensor bytes on the host.

pub mod convert;
pub mod device;
pub mod exec;
pub mod gemm;
mod io;
pub mod kernels;
pub mod launch;
pub mod lower;
pub mod plan;

use std::sync::Arc;

use super::{Backend, BackendError, DeviceStatus, Precision};
use crate::config::BackendOptions;

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
    pub cublas: bool,
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
        let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() }.then(kernels::nvrtc_version);
        // SAFETY: dlopen probes only.
        let cublas = unsafe {
            cudarc::cublas::sys::is_culib_present() && cudarc::cublaslt::sys::is_culib_present()
        };
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
            cublas,
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
                available: missing_library(&r).is_none(),
                detail: format!(
                    "{} (compute {}.{}, {:.1} GiB, {:.1} GiB free), driver CUDA {}, NVRTC {}, cuBLAS {}{}; \
                     precision f32, f16, bf16",
                    g.name,
                    g.compute_capability.0,
                    g.compute_capability.1,
                    g.total_mem_bytes as f64 / (1u64 << 30) as f64,
                    g.free_mem_bytes as f64 / (1u64 << 30) as f64,
                    version_str(r.driver_version),
                    r.nvrtc_version.map(|(a, b)| format!("{a}.{b}")).unwrap_or_else(|| "missing".into()),
                    if r.cublas { "found" } else { "missing" },
                    missing_library(&r).map(|m| format!(" ({m})")).unwrap_or_default(),
                ),
            })
            .collect(),
    }
}

/// What keeps a present GPU from serving, if anything.
fn missing_library(r: &CudaReport) -> Option<String> {
    if r.nvrtc_version.is_none() {
        return Some("libnvrtc.so.13 not found: kernels cannot be compiled".into());
    }
    if !r.cublas {
        return Some("libcublas.so.13 / libcublasLt.so.13 not found".into());
    }
    None
}

/// Opens GPU `ordinal` at `precision`: checks drivers and libraries first
/// (cudarc panics on a missing library), then compiles or loads the kernels
/// (the first opening of a GPU decides its kernels' cache and launch mode).
pub fn open(
    ordinal: u32,
    precision: Precision,
    options: &BackendOptions,
) -> Result<Arc<dyn Backend>, BackendError> {
    let device = format!("cuda:{ordinal}");
    if precision == Precision::Int8 {
        return Err(BackendError::Precision {
            device,
            precision: precision.to_string(),
            supported: "f32, f16, bf16 (int8 runs on cpu so far)".into(),
        });
    }
    let unavailable = |reason: String| BackendError::Unavailable {
        device: device.clone(),
        reason,
    };
    let r = report().map_err(unavailable)?;
    if !r.gpus.iter().any(|g| g.ordinal == ordinal as usize) {
        return Err(unavailable(format!(
            "no GPU {ordinal}; the driver reports {}",
            r.gpus.len()
        )));
    }
    if let Some(m) = missing_library(&r) {
        return Err(unavailable(m));
    }
    let gpu = std::panic::catch_unwind(|| device::gpu(ordinal as usize, options))
        .unwrap_or_else(|_| Err("cudarc panicked while opening the device".into()))
        .map_err(unavailable)?;
    Ok(Arc::new(exec::CudaBackend::new(
        gpu,
        precision,
        options.cuda,
    )))
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
        if let Err(reason) = report() {
            // Without a driver nothing may claim to serve, and the reason
            // names what is missing.
            assert!(s.iter().all(|d| !d.available && d.detail == reason));
            assert!(open(0, Precision::F32, &BackendOptions::default()).is_err());
        }
    }
}
