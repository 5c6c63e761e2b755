//! The CUDA executor: weights uploaded once per model and precision,
//! plans cached per input-shape bucket, one arena allocation reused across
//! runs, kernels launched from the plan's argument lists and GEMMs on
//! cuBLAS with f32 accumulation.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::cublas::{result as blas, sys as bsys, CudaBlas};
use cudarc::driver::{
    result as dr, sys as dsys, CudaFunction, CudaGraph, CudaStream, DeviceRepr, LaunchConfig,
    PushKernelArg,
};

use super::convert::{convert, convert_owned};
use super::device::{CudaTensor, DeviceBuffer, Gpu};
use super::lower::{storage, Planner};
use super::plan::{Arg, AttnParam, Buf, GemmStep, IdxParam, Plan, Ref, Step};
use crate::backend::{
    bind_partial, Backend, BackendError, DeviceTensor, Executable, NamedDeviceTensors,
    NamedTensors, Precision,
};
use crate::ir::{DType, Graph, NodeId, Op};
use crate::model::Model;
use crate::tensor::Tensor;

// SAFETY: both are #[repr(C)] plain data laid out like the kernels' structs.
unsafe impl DeviceRepr for IdxParam {}
unsafe impl DeviceRepr for AttnParam {}

/// The CUDA backend of one GPU at one precision.
pub struct CudaBackend {
    gpu: Arc<Gpu>,
    precision: Precision,
}

impl CudaBackend {
    pub fn new(gpu: Arc<Gpu>, precision: Precision) -> Self {
        CudaBackend { gpu, precision }
    }

    fn device_name(&self) -> String {
        format!("cuda:{}", self.gpu.ordinal)
    }

    /// Uploads weight `name` of `model` as `dtype`, once per process.
    fn weight(&self, model: &Model, name: &str, dtype: DType) -> Result<Arc<DeviceBuffer>, String> {
        let key = (model.root.display().to_string(), name.to_string(), dtype);
        let mut map = self
            .gpu
            .weights
            .lock()
            .map_err(|_| "weight table poisoned".to_string())?;
        if let Some(b) = map.get(&key) {
            return Ok(b.clone());
        }
        let entry = model
            .weights
            .index
            .get(name)
            .ok_or_else(|| format!("weight `{name}` is not in the model"))?;
        let bytes = model
            .weights
            .bytes(name)
            .ok_or_else(|| format!("weight `{name}` has no bytes"))?;
        let data = convert(bytes, entry.dtype, dtype);
        let b = Arc::new(DeviceBuffer::upload(&self.gpu.ctx, &data)?);
        map.insert(key, b.clone());
        Ok(b)
    }
}

/// A plan with its kernels resolved.
struct Prepared {
    plan: Plan,
    functions: Vec<Option<CudaFunction>>,
}

struct RunState {
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    /// cuBLAS workspace, set explicitly so GEMMs can be captured in graphs.
    _workspace: DeviceBuffer,
    arena: Option<DeviceBuffer>,
    plans: HashMap<Vec<Vec<u64>>, Arc<Prepared>>,
    /// Captured CUDA graphs per shape bucket, valid for the arena they were
    /// captured on; the number of runs seen per bucket (capture on the second).
    graphs: HashMap<Vec<Vec<u64>>, CudaGraph>,
    runs: HashMap<Vec<Vec<u64>>, u32>,
    /// Set when a capture failed: this executable launches directly.
    graphs_off: bool,
}

// SAFETY: the state is only touched under the executable's mutex, with the
// context bound to the running thread first.
unsafe impl Send for RunState {}

struct CudaExecutable {
    graph: Arc<Graph>,
    gpu: Arc<Gpu>,
    device: String,
    precision: Precision,
    persistent: Vec<Arc<DeviceBuffer>>,
    persistent_index: HashMap<NodeId, usize>,
    state: Mutex<RunState>,
}

/// Most shape buckets kept per graph before the cache is cleared.
const MAX_PLANS: usize = 64;
/// A bucket's launches are captured as a CUDA graph on its run number
/// `CAPTURE_AFTER`: capture and instantiation cost about a millisecond, so
/// only shapes that recur are worth it.
const CAPTURE_AFTER: u32 = 3;
/// cuBLAS workspace per executable.
const WORKSPACE_BYTES: usize = 32 << 20;

/// `HOST_CUDA_TRACE=1` prints planning and run timings to stderr.
fn trace() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("HOST_CUDA_TRACE").is_ok_and(|v| v == "1"))
}

/// CUDA graphs are on unless `HOST_CUDA_GRAPHS=0`.
fn graphs_enabled() -> bool {
    std::env::var("HOST_CUDA_GRAPHS").map_or(true, |v| v != "0")
}

impl Backend for CudaBackend {
    fn device(&self) -> String {
        self.device_name()
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn compile(
        &self,
        graph: Arc<Graph>,
        model: &Model,
    ) -> Result<Arc<dyn Executable>, BackendError> {
        let fail = |message: String| BackendError::Compile {
            device: self.device_name(),
            graph: graph.name.clone(),
            message,
        };
        let mut persistent = Vec::new();
        let mut persistent_index = HashMap::new();
        for (id, node) in graph.nodes.iter().enumerate() {
            let dtype = storage(node.dtype, self.precision);
            let buf = match &node.op {
                Op::Weight { name } => self.weight(model, name, dtype).map_err(&fail)?,
                Op::Constant(c) => Arc::new(
                    DeviceBuffer::upload(&self.gpu.ctx, &convert(&c.bytes, c.dtype, dtype))
                        .map_err(&fail)?,
                ),
                _ => continue,
            };
            persistent_index.insert(id as NodeId, persistent.len());
            persistent.push(buf);
        }
        let stream = self
            .gpu
            .ctx
            .new_stream()
            .map_err(|e| fail(format!("cannot create a stream: {e}")))?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| fail(format!("cuBLAS: {e}")))?;
        let workspace = DeviceBuffer::new(&self.gpu.ctx, WORKSPACE_BYTES).map_err(&fail)?;
        // SAFETY: the workspace outlives the handle (both live in RunState).
        unsafe {
            bsys::cublasSetWorkspace_v2(
                *blas.handle(),
                workspace.ptr as *mut c_void,
                WORKSPACE_BYTES,
            )
        }
        .result()
        .map_err(|e| fail(format!("cuBLAS workspace: {e}")))?;
        Ok(Arc::new(CudaExecutable {
            graph,
            gpu: self.gpu.clone(),
            device: self.device_name(),
            precision: self.precision,
            persistent,
            persistent_index,
            state: Mutex::new(RunState {
                stream,
                blas,
                _workspace: workspace,
                arena: None,
                plans: HashMap::new(),
                graphs: HashMap::new(),
                runs: HashMap::new(),
                graphs_off: !graphs_enabled(),
            }),
        }))
    }
}

/// Kernel arguments with their values resolved, kept alive for the launch.
enum Owned {
    U64(u64),
    I32(i32),
    I64(i64),
    F32(f32),
    Idx(IdxParam),
    Attn(AttnParam),
}

fn data_type(dt: DType) -> Option<bsys::cudaDataType> {
    match dt {
        DType::F32 => Some(bsys::cudaDataType::CUDA_R_32F),
        DType::F16 => Some(bsys::cudaDataType::CUDA_R_16F),
        DType::BF16 => Some(bsys::cudaDataType::CUDA_R_16BF),
        _ => None,
    }
}

fn op(trans: bool) -> bsys::cublasOperation_t {
    if trans {
        bsys::cublasOperation_t::CUBLAS_OP_T
    } else {
        bsys::cublasOperation_t::CUBLAS_OP_N
    }
}

impl CudaExecutable {
    fn fail(&self, message: String) -> BackendError {
        BackendError::Run {
            device: self.device.clone(),
            graph: self.graph.name.clone(),
            message,
        }
    }

    fn prepare(&self, inputs: &NamedTensors) -> Result<Arc<Prepared>, BackendError> {
        let started = std::time::Instant::now();
        let bindings = bind_partial(&self.graph, inputs);
        let plan = Planner::plan(
            &self.graph,
            self.precision,
            &bindings,
            &self.persistent_index,
        )
        .map_err(|e| self.fail(format!("planning: {e}")))?;
        let mut functions = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            functions.push(match step {
                Step::Kernel { name, shared, .. } => {
                    let f = self.gpu.kernels.function(name).map_err(|e| self.fail(e))?;
                    if *shared > 48 * 1024 {
                        // SAFETY: sets a launch limit on a loaded function.
                        unsafe {
                            dsys::cuFuncSetAttribute(
                                f.cu_function(),
                                dsys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                *shared as i32,
                            )
                        }
                        .result()
                        .map_err(|e| self.fail(format!("shared memory of {shared} bytes: {e}")))?;
                    }
                    Some(f)
                }
                Step::Gemm(_) => None,
            });
        }
        if trace() {
            eprintln!(
                "cuda: planned `{}` ({} nodes) in {:.3} ms: {} steps, arena {} KiB",
                self.graph.name,
                self.graph.nodes.len(),
                started.elapsed().as_secs_f64() * 1e3,
                plan.steps.len(),
                plan.arena_bytes >> 10
            );
        }
        Ok(Arc::new(Prepared { plan, functions }))
    }
}

fn resolve(plan: &Plan, base: u64, persistent: &[Arc<DeviceBuffer>], r: &Ref) -> u64 {
    match r.buf {
        Buf::Arena(i) => base + plan.offsets.get(i).copied().unwrap_or(0) as u64 + r.offset as u64,
        Buf::Persistent(i) => persistent.get(i).map(|b| b.ptr).unwrap_or(0) + r.offset as u64,
    }
}

impl Executable for CudaExecutable {
    fn run(&self, inputs: NamedTensors) -> Result<NamedTensors, BackendError> {
        self.run_impl(inputs, &[], &[]).map(|(host, _)| host)
    }

    fn device_resident(&self) -> bool {
        true
    }

    fn run_resident(
        &self,
        inputs: NamedTensors,
        resident: NamedDeviceTensors,
        keep: &[String],
    ) -> Result<(NamedTensors, NamedDeviceTensors), BackendError> {
        self.run_impl(inputs, &resident, keep)
    }
}

impl CudaExecutable {
    /// One run: `resident` inputs are copied device to device, outputs named
    /// in `keep` are returned as [`CudaTensor`]s, the rest downloaded.
    fn run_impl(
        &self,
        inputs: NamedTensors,
        resident: &[(String, Arc<dyn DeviceTensor>)],
        keep: &[String],
    ) -> Result<(NamedTensors, NamedDeviceTensors), BackendError> {
        self.gpu
            .ctx
            .bind_to_thread()
            .map_err(|e| self.fail(e.to_string()))?;
        let mut st = self
            .state
            .lock()
            .map_err(|_| self.fail("a previous run panicked".into()))?;
        let key: Vec<Vec<u64>> = inputs.iter().map(|(_, t)| t.shape.clone()).collect();
        let prepared = match st.plans.get(&key) {
            Some(p) => p.clone(),
            None => {
                let p = self.prepare(&inputs)?;
                if st.plans.len() >= MAX_PLANS {
                    st.plans.clear();
                    st.graphs.clear();
                    st.runs.clear();
                }
                st.plans.insert(key.clone(), p.clone());
                p
            }
        };
        let plan = &prepared.plan;
        if st.arena.as_ref().is_none_or(|a| a.bytes < plan.arena_bytes) {
            // Captured graphs point into the old arena. Growing by a quarter
            // more than asked spares most regrowths as a KV cache lengthens.
            st.graphs.clear();
            st.arena = None;
            let bytes = plan.arena_bytes + plan.arena_bytes / 4;
            st.arena = Some(DeviceBuffer::new(&self.gpu.ctx, bytes).map_err(|e| self.fail(e))?);
        }
        let base = st.arena.as_ref().map(|a| a.ptr).unwrap_or(0);
        let stream = st.stream.clone();
        let cu = stream.cu_stream();
        let at = |r: &Ref| resolve(plan, base, &self.persistent, r);
        let e = |what: &str, err: dr::DriverError| self.fail(format!("{what}: {err}"));
        // SAFETY: every address below is inside the arena sized by the plan,
        // a persistent buffer or a resident tensor of the checked size; host
        // slices outlive the synchronisation at the end.
        unsafe {
            dr::memset_d8_async(at(&plan.error_flag), 0, 4, cu).map_err(|x| e("memset", x))?;
        }
        let mut staged: Vec<Vec<u8>> = Vec::new();
        for u in &plan.uploads {
            let (name, t) = inputs
                .get(u.input)
                .ok_or_else(|| self.fail(format!("input {} missing", u.input)))?;
            if let Some((_, d)) = resident.iter().find(|(n, _)| n == name) {
                let src = d
                    .as_any()
                    .downcast_ref::<CudaTensor>()
                    .filter(|c| c.ordinal == self.gpu.ordinal && c.device_dtype == u.dtype)
                    .ok_or_else(|| {
                        self.fail(format!(
                            "input `{name}` lives on another device or precision"
                        ))
                    })?;
                let n: usize = src.shape.iter().product::<u64>() as usize * u.dtype.size();
                if n > 0 {
                    // SAFETY: see above; both ranges hold n bytes.
                    unsafe { dsys::cuMemcpyDtoDAsync_v2(at(&u.at), src.buf.ptr, n, cu) }
                        .result()
                        .map_err(|x| e("device copy", x))?;
                }
                continue;
            }
            let src: &[u8] = if t.dtype == u.dtype {
                &t.data
            } else {
                staged.push(convert(&t.data, t.dtype, u.dtype));
                staged.last().map(|v| v.as_slice()).unwrap_or(&[])
            };
            if !src.is_empty() {
                // SAFETY: see above.
                unsafe { dr::memcpy_htod_async(at(&u.at), src, cu) }.map_err(|x| e("upload", x))?;
            }
        }
        let launched = std::time::Instant::now();
        self.execute(&mut st, &key, &prepared, base, &stream)?;
        let enqueued = launched.elapsed();
        let mut host: Vec<Option<Vec<u8>>> = Vec::with_capacity(plan.downloads.len());
        let mut kept: NamedDeviceTensors = Vec::new();
        for d in &plan.downloads {
            let bytes = d.shape.iter().product::<usize>() * d.device_dtype.size();
            if keep.contains(&d.name) {
                let buf =
                    DeviceBuffer::pooled(&self.gpu.ctx, &stream, &self.gpu.free_stream, bytes)
                        .map_err(|x| self.fail(x))?;
                if bytes > 0 {
                    // SAFETY: see above.
                    unsafe { dsys::cuMemcpyDtoDAsync_v2(buf.ptr, at(&d.at), bytes, cu) }
                        .result()
                        .map_err(|x| e("device copy", x))?;
                }
                kept.push((
                    d.name.clone(),
                    Arc::new(CudaTensor {
                        buf,
                        ordinal: self.gpu.ordinal,
                        dtype: d.dtype,
                        device_dtype: d.device_dtype,
                        shape: d.shape.iter().map(|&x| x as u64).collect(),
                    }),
                ));
                host.push(None);
                continue;
            }
            let mut buf = vec![0u8; bytes];
            if !buf.is_empty() {
                // SAFETY: see above.
                unsafe { dr::memcpy_dtoh_async(&mut buf, at(&d.at), cu) }
                    .map_err(|x| e("download", x))?;
            }
            host.push(Some(buf));
        }
        let mut flag = [0i32; 1];
        // SAFETY: see above.
        unsafe { dr::memcpy_dtoh_async(&mut flag, at(&plan.error_flag), cu) }
            .map_err(|x| e("download", x))?;
        stream.synchronize().map_err(|x| e("synchronize", x))?;
        if trace() {
            eprintln!(
                "cuda: ran `{}`: enqueue {:.3} ms, until synchronised {:.3} ms{}",
                self.graph.name,
                enqueued.as_secs_f64() * 1e3,
                launched.elapsed().as_secs_f64() * 1e3,
                if st.graphs.contains_key(&key) {
                    " (graph)"
                } else {
                    ""
                }
            );
        }
        drop(staged);
        if flag[0] != 0 {
            return Err(
                self.fail("an embedding or gather index is out of range for its table".into())
            );
        }
        let mut outputs = Vec::with_capacity(plan.downloads.len());
        for (d, buf) in plan.downloads.iter().zip(host) {
            if let Some(buf) = buf {
                outputs.push((
                    d.name.clone(),
                    Tensor {
                        dtype: d.dtype,
                        shape: d.shape.iter().map(|&x| x as u64).collect(),
                        data: convert_owned(buf, d.device_dtype, d.dtype),
                    },
                ));
            }
        }
        Ok((outputs, kept))
    }
}

impl CudaExecutable {
    /// Runs the plan's steps: replays the bucket's CUDA graph when there is
    /// one, captures it on the bucket's [`CAPTURE_AFTER`]th run, else
    /// launches directly.
    fn execute(
        &self,
        st: &mut RunState,
        key: &Vec<Vec<u64>>,
        prepared: &Prepared,
        base: u64,
        stream: &Arc<CudaStream>,
    ) -> Result<(), BackendError> {
        if let Some(g) = st.graphs.get(key) {
            return g
                .launch()
                .map_err(|x| self.fail(format!("graph launch: {x}")));
        }
        let runs = st.runs.entry(key.clone()).or_insert(0);
        *runs += 1;
        if st.graphs_off || *runs < CAPTURE_AFTER {
            return self.enqueue(&st.blas, prepared, base, stream);
        }
        let mode = dsys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        stream
            .begin_capture(mode)
            .map_err(|x| self.fail(format!("graph capture: {x}")))?;
        let enqueued = self.enqueue(&st.blas, prepared, base, stream);
        let captured = stream.end_capture(dsys::CUgraphInstantiate_flags(0));
        match (enqueued, captured) {
            (Ok(()), Ok(Some(g))) => {
                g.launch()
                    .map_err(|x| self.fail(format!("graph launch: {x}")))?;
                st.graphs.insert(key.clone(), g);
                Ok(())
            }
            (Err(e), _) => Err(e),
            (Ok(()), _) => {
                // Capture is an optimisation: launch directly from now on.
                st.graphs_off = true;
                self.enqueue(&st.blas, prepared, base, stream)
            }
        }
    }

    /// Enqueues every step of the plan on `stream`.
    fn enqueue(
        &self,
        blas: &CudaBlas,
        prepared: &Prepared,
        base: u64,
        stream: &Arc<CudaStream>,
    ) -> Result<(), BackendError> {
        let plan = &prepared.plan;
        let at = |r: &Ref| resolve(plan, base, &self.persistent, r);
        let e = |what: &str, err: dr::DriverError| self.fail(format!("{what}: {err}"));
        for (step, f) in plan.steps.iter().zip(&prepared.functions) {
            match (step, f) {
                (
                    Step::Kernel {
                        grid,
                        block,
                        shared,
                        args,
                        name,
                    },
                    Some(f),
                ) => {
                    let owned: Vec<Owned> = args
                        .iter()
                        .map(|a| match a {
                            Arg::Ptr(r) => Owned::U64(at(r)),
                            Arg::Null => Owned::U64(0),
                            Arg::I32(v) => Owned::I32(*v),
                            Arg::I64(v) => Owned::I64(*v),
                            Arg::F32(v) => Owned::F32(*v),
                            Arg::Idx(p) => Owned::Idx(**p),
                            Arg::Attn(p) => Owned::Attn(**p),
                        })
                        .collect();
                    let mut b = stream.launch_builder(f);
                    for o in &owned {
                        match o {
                            Owned::U64(v) => b.arg(v),
                            Owned::I32(v) => b.arg(v),
                            Owned::I64(v) => b.arg(v),
                            Owned::F32(v) => b.arg(v),
                            Owned::Idx(v) => b.arg(v),
                            Owned::Attn(v) => b.arg(v),
                        };
                    }
                    let cfg = LaunchConfig {
                        grid_dim: (*grid, 1, 1),
                        block_dim: (*block, 1, 1),
                        shared_mem_bytes: *shared,
                    };
                    // SAFETY: argument lists are built by the planner to
                    // match each kernel's signature.
                    unsafe { b.launch(cfg) }.map_err(|x| e(name, x))?;
                }
                (Step::Gemm(g), _) => self.gemm(blas, g, &at)?,
                (Step::Kernel { name, .. }, None) => {
                    return Err(self.fail(format!("kernel `{name}` was not resolved")))
                }
            }
        }
        Ok(())
    }

    fn gemm(
        &self,
        handle: &CudaBlas,
        g: &GemmStep,
        at: &dyn Fn(&Ref) -> u64,
    ) -> Result<(), BackendError> {
        let dt = data_type(g.dtype)
            .ok_or_else(|| self.fail(format!("matmul of {} is not supported on cuda", g.dtype)))?;
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: operand addresses and strides come from the plan, which
        // sized every buffer for them.
        unsafe {
            blas::gemm_strided_batched_ex(
                *handle.handle(),
                op(g.trans_a),
                op(g.trans_b),
                g.m,
                g.n,
                g.k,
                &alpha as *const f32 as *const c_void,
                at(&g.a) as *const c_void,
                dt,
                g.lda,
                g.stride_a,
                at(&g.b) as *const c_void,
                dt,
                g.ldb,
                g.stride_b,
                &beta as *const f32 as *const c_void,
                at(&g.c) as *mut c_void,
                dt,
                g.ldc,
                g.stride_c,
                g.batch,
                bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|x| {
            self.fail(format!(
                "cuBLAS GEMM {}x{}x{} (batch {}): {x}",
                g.m, g.n, g.k, g.batch
            ))
        })
    }
}
