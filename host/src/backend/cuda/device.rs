//! GPU resources: device allocations (plain and stream-ordered), the
//! process-wide handle of each GPU (context, kernels, uploaded weights) and
//! tensors kept on the device between runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{result as dr, CudaContext, CudaStream};

use super::kernels::Kernels;
use crate::backend::DeviceTensor;
use crate::config::BackendOptions;
use crate::ir::DType;

/// A raw device allocation, freed on drop.
pub struct DeviceBuffer {
    pub(super) ptr: u64,
    pub(super) bytes: usize,
    ctx: Arc<CudaContext>,
    /// Stream-ordered allocations are freed on this stream.
    free_on: Option<Arc<CudaStream>>,
}

impl DeviceBuffer {
    pub(super) fn new(ctx: &Arc<CudaContext>, bytes: usize) -> Result<Self, String> {
        ctx.bind_to_thread().map_err(|e| e.to_string())?;
        // SAFETY: plain allocation on the bound context.
        let ptr = unsafe { dr::malloc_sync(bytes.max(256)) }
            .map_err(|e| format!("cannot allocate {bytes} bytes on the GPU: {e}"))?;
        Ok(DeviceBuffer {
            ptr,
            bytes,
            ctx: ctx.clone(),
            free_on: None,
        })
    }

    /// A stream-ordered allocation from the driver's pool (no device-wide
    /// synchronisation on free): for buffers made every step, such as
    /// session state. Usable on `stream` in order; freed on `free_on`.
    pub(super) fn pooled(
        ctx: &Arc<CudaContext>,
        stream: &CudaStream,
        free_on: &Arc<CudaStream>,
        bytes: usize,
    ) -> Result<Self, String> {
        ctx.bind_to_thread().map_err(|e| e.to_string())?;
        // SAFETY: stream-ordered allocation on a live stream.
        let ptr = unsafe { dr::malloc_async(stream.cu_stream(), bytes.max(256)) }
            .map_err(|e| format!("cannot allocate {bytes} bytes on the GPU: {e}"))?;
        Ok(DeviceBuffer {
            ptr,
            bytes,
            ctx: ctx.clone(),
            free_on: Some(free_on.clone()),
        })
    }

    pub(super) fn upload(ctx: &Arc<CudaContext>, data: &[u8]) -> Result<Self, String> {
        let b = DeviceBuffer::new(ctx, data.len())?;
        if !data.is_empty() {
            // SAFETY: the buffer holds data.len() bytes.
            unsafe { dr::memcpy_htod_sync(b.ptr, data) }
                .map_err(|e| format!("copy to the GPU failed: {e}"))?;
        }
        Ok(b)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: freed once, by the call matching its allocation. Users of
        // pooled buffers synchronise their streams before dropping them.
        let _ = unsafe {
            match &self.free_on {
                Some(s) => dr::free_async(self.ptr, s.cu_stream()),
                None => dr::free_sync(self.ptr),
            }
        };
    }
}

/// One GPU: its context, kernels and the weights uploaded so far (shared
/// by every graph and endpoint using the same model at the same precision).
pub struct Gpu {
    pub ordinal: usize,
    pub name: String,
    pub(super) ctx: Arc<CudaContext>,
    /// Frees pooled buffers (their users synchronise before dropping).
    pub(super) free_stream: Arc<CudaStream>,
    pub(super) kernels: Kernels,
    pub(super) weights: Mutex<HashMap<(String, String, DType), Arc<DeviceBuffer>>>,
}

static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();

/// The process-wide handle of GPU `ordinal` (created on first use).
pub fn gpu(ordinal: usize, options: &BackendOptions) -> Result<Arc<Gpu>, String> {
    let map = GPUS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().map_err(|_| "GPU table poisoned".to_string())?;
    if let Some(g) = map.get(&ordinal) {
        return Ok(g.clone());
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| format!("cannot open cuda:{ordinal}: {e}"))?;
    // Streams are synchronised explicitly; raw pointers carry no events.
    // SAFETY: called before any allocation on this context.
    unsafe { ctx.disable_event_tracking() };
    keep_pool_memory(&ctx);
    let kernels = Kernels::load(&ctx, options)?;
    let free_stream = ctx
        .new_stream()
        .map_err(|e| format!("cannot create a stream: {e}"))?;
    let g = Arc::new(Gpu {
        ordinal,
        name: ctx.name().unwrap_or_default(),
        free_stream,
        ctx,
        kernels,
        weights: Mutex::new(HashMap::new()),
    });
    map.insert(ordinal, g.clone());
    Ok(g)
}

/// Keeps freed memory of the default stream-ordered pool cached instead of
/// returning it to the driver at every synchronisation (the default), which
/// made each decode step's state allocation a fresh mapping. Best effort: a
/// driver without pools just allocates slower.
fn keep_pool_memory(ctx: &CudaContext) {
    use cudarc::driver::sys;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: queries the default pool of the context's device into `pool`
    // and sets one attribute of it from a live u64.
    unsafe {
        if sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
            .result()
            .is_ok()
        {
            let mut threshold = u64::MAX;
            let _ = sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut std::ffi::c_void,
            );
        }
    }
}

/// Page-locked host memory: device-to-host copies into it are truly
/// asynchronous (into pageable memory they wait for the stream).
pub struct Pinned {
    ptr: *mut u8,
    pub(super) len: usize,
    ctx: Arc<CudaContext>,
}

// SAFETY: plain host memory owned by this value; the driver call that frees
// it binds the context first.
unsafe impl Send for Pinned {}

impl Pinned {
    pub(super) fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self, String> {
        ctx.bind_to_thread().map_err(|e| e.to_string())?;
        // SAFETY: a plain allocation; freed in Drop.
        let ptr = unsafe { dr::malloc_host(len.max(1), 0) }
            .map_err(|e| format!("cannot allocate {len} bytes of page-locked memory: {e}"))?;
        Ok(Pinned {
            ptr: ptr as *mut u8,
            len,
            ctx: ctx.clone(),
        })
    }

    /// The bytes; the caller makes sure no copy into them is in flight.
    pub(super) fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes were allocated at `ptr` and live as long as self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: allocated by malloc_host and freed once.
        let _ = unsafe { dr::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}

/// The end of one run on its stream: an event recorded after its last copy.
pub struct RunDone {
    pub(super) event: cudarc::driver::CudaEvent,
    /// The stream it was recorded on (a reader there needs no wait).
    pub(super) stream: usize,
}

/// A tensor kept in GPU memory between runs (session state): `bytes` at
/// `offset` of a buffer that the outputs of one run share.
pub struct CudaTensor {
    /// The run that writes it, when it was made on a stream without waiting
    /// (a reader on another stream waits for it first).
    pub(super) ready: Option<Arc<RunDone>>,
    pub(super) buf: Arc<DeviceBuffer>,
    pub(super) offset: usize,
    pub(super) bytes: usize,
    pub(super) ordinal: usize,
    /// Dtype the graph declares.
    pub(super) dtype: DType,
    /// Dtype of the bytes on the device.
    pub(super) device_dtype: DType,
    pub(super) shape: Vec<u64>,
}

impl Drop for CudaTensor {
    fn drop(&mut self) {
        // The last tensor of a run's buffer frees it on the free stream:
        // order that after the run that writes it.
        if Arc::strong_count(&self.buf) == 1 {
            if let (Some(r), Some(s)) = (&self.ready, &self.buf.free_on) {
                let _ = s.wait(&r.event);
            }
        }
    }
}

impl CudaTensor {
    /// Device address of the first byte.
    pub(super) fn ptr(&self) -> u64 {
        self.buf.ptr + self.offset as u64
    }
}

impl DeviceTensor for CudaTensor {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn shape(&self) -> &[u64] {
        &self.shape
    }
    fn bytes(&self) -> usize {
        self.bytes
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
