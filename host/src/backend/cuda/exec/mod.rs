//! The CUDA executor: weights uploaded once per model and precision,
//! plans cached per input-shape bucket, one arena allocation reused across
//! runs, kernels launched from the plan's argument lists and GEMMs on
//! cuBLAS with f32 accumulation.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{sys as bsys, CudaBlas};
use cudarc::driver::{sys as dsys, CudaFunction, CudaGraph, CudaStream, DeviceRepr};

use super::convert::{convert, convert_owned};
use super::device::{CudaTensor, DeviceBuffer, Gpu, Pinned, RunDone};
use super::io::{Dst, Src, Transfers};

mod enqueue;
mod run;
mod weights;
use super::lower::{storage, Planner};
use super::plan::{Arg, AttnParam, Buf, IdxParam, Plan, Ref, Step};
use crate::backend::{
    bind_partial, Backend, BackendError, DeviceTensor, Executable, NamedDeviceTensors,
    NamedTensors, PendingRun, Precision,
};
use crate::config::{CudaOptions, CudaTrace};
use crate::ir::{DType, Graph, NodeId, Op};
use crate::model::Model;
use crate::tensor::Tensor;
use weights::foldable;

// SAFETY: both are #[repr(C)] plain data laid out like the kernels' structs.
unsafe impl DeviceRepr for IdxParam {}
unsafe impl DeviceRepr for AttnParam {}

/// The CUDA backend of one GPU at one precision.
pub struct CudaBackend {
    gpu: Arc<Gpu>,
    precision: Precision,
    options: CudaOptions,
}

impl CudaBackend {
    pub fn new(gpu: Arc<Gpu>, precision: Precision, options: CudaOptions) -> Self {
        CudaBackend {
            gpu,
            precision,
            options,
        }
    }

    fn device_name(&self) -> String {
        format!("cuda:{}", self.gpu.ordinal)
    }
}

/// A plan with its kernels resolved: per step, the function and the
/// argument list of its launch (none for a GEMM).
struct Prepared {
    plan: Plan,
    kernels: Vec<Option<Resolved>>,
}

/// A kernel step ready to enqueue.
struct Resolved {
    name: String,
    function: CudaFunction,
    args: Vec<Arg>,
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
    /// Device side of each run's bulk transfers (see `io`).
    staging: Option<DeviceBuffer>,
}

// SAFETY: the state is only touched under the executable's mutex, with the
// context bound to the running thread first.
unsafe impl Send for RunState {}

struct CudaExecutable {
    graph: Arc<Graph>,
    gpu: Arc<Gpu>,
    device: String,
    /// Graphs and tracing (`HOST_CUDA_GRAPHS`, `HOST_CUDA_TRACE`).
    options: CudaOptions,
    precision: Precision,
    persistent: Vec<Arc<DeviceBuffer>>,
    persistent_index: HashMap<NodeId, usize>,
    /// The batched-copy kernel of every run's transfers.
    copy: CudaFunction,
    state: Mutex<RunState>,
    /// Page-locked download buffers, one per run in flight.
    pinned: Arc<Mutex<Vec<Pinned>>>,
}

/// Most shape buckets kept per graph before the cache is cleared.
const MAX_PLANS: usize = 64;
/// cuBLAS workspace per executable.
const WORKSPACE_BYTES: usize = 32 << 20;

impl CudaExecutable {
    /// `HOST_CUDA_TRACE=1` logs planning and run timings (debug events of
    /// target `host::trace::cuda`); `2` also launches directly and logs a
    /// per-kernel profile of each bucket's 4th run; `3` also lists every
    /// planned step.
    fn trace_level(&self) -> CudaTrace {
        self.options.trace
    }

    fn trace(&self) -> bool {
        self.options.trace >= CudaTrace::Timings
    }
}

impl Backend for CudaBackend {
    fn device(&self) -> String {
        self.device_name()
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn replays_fixed_shapes(&self) -> bool {
        // CUDA graphs are on unless `HOST_CUDA_GRAPHS=0`.
        self.options.graphs
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
        let folded = foldable(&graph);
        // Persistent values read by a node that runs (or an output); the
        // operands of a folded concat are not uploaded on their own.
        let mut needed = vec![false; graph.nodes.len()];
        for (id, node) in graph.nodes.iter().enumerate() {
            if folded[id].is_none() {
                node.op
                    .operands()
                    .iter()
                    .for_each(|&x| needed[x as usize] = true);
            }
        }
        graph
            .outputs
            .iter()
            .for_each(|(_, id)| needed[*id as usize] = true);
        for (id, node) in graph.nodes.iter().enumerate() {
            if !needed[id] {
                continue;
            }
            let dtype = storage(node.dtype, self.precision);
            let buf = match (&node.op, &folded[id]) {
                (Op::Constant(c), _) => Arc::new(
                    DeviceBuffer::upload(&self.gpu.ctx, &convert(&c.bytes, c.dtype, dtype))
                        .map_err(&fail)?,
                ),
                (_, Some(key)) => self
                    .stored(model, &graph, id as NodeId, key, dtype)
                    .map_err(&fail)?,
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
        let copy = self.gpu.kernels.function("copy_many").map_err(&fail)?;
        Ok(Arc::new(CudaExecutable {
            graph,
            gpu: self.gpu.clone(),
            device: self.device_name(),
            options: self.options,
            precision: self.precision,
            persistent,
            persistent_index,
            copy,
            state: Mutex::new(RunState {
                stream,
                blas,
                _workspace: workspace,
                arena: None,
                plans: HashMap::new(),
                graphs: HashMap::new(),
                runs: HashMap::new(),
                graphs_off: !self.options.graphs,
                staging: None,
            }),
            pinned: Arc::new(Mutex::new(Vec::new())),
        }))
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

    fn prepare(
        &self,
        inputs: &NamedTensors,
        on_device: &[usize],
    ) -> Result<Arc<Prepared>, BackendError> {
        let started = std::time::Instant::now();
        let bindings = bind_partial(&self.graph, inputs);
        let plan = Planner::plan_resident(
            &self.graph,
            self.precision,
            &bindings,
            &self.persistent_index,
            on_device,
        )
        .map_err(|e| self.fail(format!("planning: {e}")))?;
        let mut kernels = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            kernels.push(match step {
                Step::Kernel {
                    launch,
                    shared,
                    grid,
                    ..
                } => {
                    let (name, args) = launch.kernel();
                    let f = (self.gpu.kernels)
                        .for_step(launch, *grid)
                        .map_err(|e| self.fail(e))?;
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
                    Some(Resolved {
                        name,
                        function: f,
                        args,
                    })
                }
                Step::Gemm(_) => None,
            });
        }
        if self.trace_level() >= CudaTrace::Steps {
            for (i, step) in plan.steps.iter().enumerate() {
                tracing::debug!(target: "host::trace::cuda", "cuda: step {i}: {}", describe(step));
            }
        }
        if self.trace() {
            tracing::debug!(
                target: "host::trace::cuda",
                "cuda: planned `{}` ({} nodes) in {:.3} ms: {} steps, arena {} KiB",
                self.graph.name,
                self.graph.nodes.len(),
                started.elapsed().as_secs_f64() * 1e3,
                plan.steps.len(),
                plan.arena_bytes >> 10
            );
        }
        Ok(Arc::new(Prepared { plan, kernels }))
    }
}

/// One step for `HOST_CUDA_TRACE=3`: kernel, grid and index shapes, or the
/// GEMM's sizes.
fn describe(step: &Step) -> String {
    match step {
        Step::Kernel { launch, grid, .. } => {
            let (name, args) = launch.kernel();
            let shapes: Vec<String> = args
                .iter()
                .filter_map(|a| match a {
                    Arg::Idx(p) => {
                        let r = p.rank.clamp(0, 8) as usize;
                        Some(format!("{:?}", &p.shape[..r]))
                    }
                    _ => None,
                })
                .collect();
            format!("{name} grid {grid} {}", shapes.join(" "))
        }
        Step::Gemm(g) => format!("gemm {}x{}x{} batch {}", g.m, g.n, g.k, g.batch),
    }
}

/// Where one run's buffers lie: the arena, and the device tensors bound to
/// the plan's external inputs.
struct Bases {
    arena: u64,
    external: Vec<u64>,
}

fn resolve(plan: &Plan, base: &Bases, persistent: &[Arc<DeviceBuffer>], r: &Ref) -> u64 {
    match r.buf {
        Buf::Arena(i) => {
            base.arena + plan.offsets.get(i).copied().unwrap_or(0) as u64 + r.offset as u64
        }
        Buf::External(i) => base.external.get(i).copied().unwrap_or(0) + r.offset as u64,
        Buf::Persistent(i) => persistent.get(i).map(|b| b.ptr).unwrap_or(0) + r.offset as u64,
    }
}

impl Executable for CudaExecutable {
    fn run(&self, inputs: NamedTensors) -> Result<NamedTensors, BackendError> {
        let (_, run) = self.start_run(inputs, Vec::new(), &[])?;
        Box::new(run).wait()
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
        let (kept, run) = self.start_run(inputs, resident, keep)?;
        Ok((Box::new(run).wait()?, kept))
    }

    fn submit(
        &self,
        inputs: NamedTensors,
        resident: NamedDeviceTensors,
        keep: &[String],
    ) -> Result<(NamedDeviceTensors, Box<dyn PendingRun>), BackendError> {
        let (kept, run) = self.start_run(inputs, resident, keep)?;
        Ok((kept, Box::new(run)))
    }

    fn zeros(
        &self,
        dtype: DType,
        shape: &[u64],
    ) -> Option<Result<Arc<dyn DeviceTensor>, BackendError>> {
        Some(self.zeros_impl(dtype, shape))
    }
}

impl CudaExecutable {
    /// A zeroed pooled tensor, set on this executable's stream and waited
    /// for (it is made once per session, before its first run).
    fn zeros_impl(
        &self,
        dtype: DType,
        shape: &[u64],
    ) -> Result<Arc<dyn DeviceTensor>, BackendError> {
        let device_dtype = storage(dtype, self.precision);
        let count = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| self.fail(format!("zero tensor {shape:?} is too large")))?;
        let bytes = (count as usize)
            .checked_mul(device_dtype.size())
            .ok_or_else(|| self.fail(format!("zero tensor {shape:?} is too large")))?;
        self.gpu
            .ctx
            .bind_to_thread()
            .map_err(|e| self.fail(e.to_string()))?;
        let st = self
            .state
            .lock()
            .map_err(|_| self.fail("a previous run panicked".into()))?;
        let buf = DeviceBuffer::pooled(&self.gpu.ctx, &st.stream, &self.gpu.free_stream, bytes)
            .map_err(|e| self.fail(e))?;
        if bytes > 0 {
            // SAFETY: the allocation holds `bytes` bytes, ordered on the stream.
            unsafe {
                cudarc::driver::result::memset_d8_async(buf.ptr, 0, bytes, st.stream.cu_stream())
            }
            .map_err(|e| self.fail(format!("memset: {e}")))?;
        }
        st.stream
            .synchronize()
            .map_err(|e| self.fail(format!("synchronize: {e}")))?;
        Ok(Arc::new(CudaTensor {
            ready: None,
            buf: Arc::new(buf),
            offset: 0,
            bytes,
            ordinal: self.gpu.ordinal,
            dtype,
            device_dtype,
            shape: shape.to_vec(),
        }))
    }
}
