//! Enqueueing a plan's steps: kernel launches from the argument lists
//! resolved when the plan was prepared, GEMMs on cuBLAS, and CUDA graph capture and replay per shape
//! bucket.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{result as blas, sys as bsys, CudaBlas};
use cudarc::driver::{
    result as dr, sys as dsys, CudaFunction, CudaStream, LaunchConfig, PushKernelArg,
};

use super::{resolve, BackendError, Bases, CudaExecutable, Prepared, Resolved, RunState};
use crate::backend::cuda::plan::{Arg, AttnParam, GemmStep, IdxParam, Ref, Step};
use crate::config::CudaTrace;
use crate::ir::DType;

/// A bucket's launches are captured as a CUDA graph on its run number
/// `CAPTURE_AFTER`: capture and instantiation cost about a millisecond, so
/// only shapes that recur are worth it.
const CAPTURE_AFTER: u32 = 3;
/// With `HOST_CUDA_TRACE=2`, the run of a bucket whose profile is printed.
const PROFILE_RUN: u32 = 4;

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
    /// Runs the plan's steps: replays the bucket's CUDA graph when there is
    /// one, captures it on the bucket's [`CAPTURE_AFTER`]th run, else
    /// launches directly.
    pub(super) fn execute(
        &self,
        st: &mut RunState,
        key: &Vec<Vec<u64>>,
        prepared: &Prepared,
        base: &Bases,
        stream: &Arc<CudaStream>,
    ) -> Result<(), BackendError> {
        if let Some(g) = st.graphs.get(key) {
            return g
                .launch()
                .map_err(|x| self.fail(format!("graph launch: {x}")));
        }
        let runs = st.runs.entry(key.clone()).or_insert(0);
        *runs += 1;
        if self.trace_level() >= CudaTrace::Profile {
            let print = *runs == PROFILE_RUN;
            return self.profile(&st.blas, prepared, base, stream, print);
        }
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
        base: &Bases,
        stream: &Arc<CudaStream>,
    ) -> Result<(), BackendError> {
        for i in 0..prepared.plan.steps.len() {
            self.enqueue_step(blas, prepared, i, base, stream)?;
        }
        Ok(())
    }

    /// `HOST_CUDA_TRACE=2`: launches directly, times every step with events
    /// and, when `print`, logs the time per kernel (or GEMM shape), largest
    /// first (a debug event of target `host::trace::cuda`).
    fn profile(
        &self,
        blas: &CudaBlas,
        prepared: &Prepared,
        base: &Bases,
        stream: &Arc<CudaStream>,
        print: bool,
    ) -> Result<(), BackendError> {
        if !print {
            return self.enqueue(blas, prepared, base, stream);
        }
        let e = |err: dr::DriverError| self.fail(format!("profile: {err}"));
        let ctx = stream.context();
        let timing = Some(dsys::CUevent_flags::CU_EVENT_DEFAULT);
        let steps = prepared.plan.steps.len();
        let marks = (0..=steps)
            .map(|_| ctx.new_event(timing))
            .collect::<Result<Vec<_>, _>>()
            .map_err(e)?;
        // The GPU first sleeps while every step is enqueued, so the steps
        // then run back to back and the times are the GPU's, not the pace
        // of launches.
        let sleep = self
            .gpu
            .kernels
            .function("sleep_ns")
            .map_err(|x| self.fail(x))?;
        let ns: u64 = 20_000_000 + steps as u64 * 30_000;
        let mut b = stream.launch_builder(&sleep);
        b.arg(&ns);
        let one = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: sleep_ns takes one u64 and touches no memory.
        unsafe { b.launch(one) }.map_err(e)?;
        marks[0].record(stream).map_err(e)?;
        for (i, mark) in marks[1..].iter().enumerate() {
            self.enqueue_step(blas, prepared, i, base, stream)?;
            mark.record(stream).map_err(e)?;
        }
        let mut by: std::collections::BTreeMap<String, (u32, f64)> = Default::default();
        let mut total = 0.0;
        let steps = prepared.plan.steps.iter().zip(&prepared.kernels);
        for ((step, kernel), pair) in steps.zip(marks.windows(2)) {
            let ms = pair[0].elapsed_ms(&pair[1]).map_err(e)? as f64;
            let label = match (step, kernel) {
                (_, Some(k)) => k.name.clone(),
                (Step::Gemm(g), None) => format!("gemm {}x{}x{} b{}", g.m, g.n, g.k, g.batch),
                (Step::Kernel { .. }, None) => "unresolved kernel".into(),
            };
            let x = by.entry(label).or_default();
            x.0 += 1;
            x.1 += ms;
            total += ms;
        }
        let mut rows: Vec<_> = by.into_iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        let mut table = String::new();
        for (label, (n, ms)) in rows.iter().take(30) {
            table.push_str(&format!("\n  {ms:9.3} ms {n:5}x  {label}"));
        }
        tracing::debug!(
            target: "host::trace::cuda",
            "cuda profile `{}`: {} steps, {:.3} ms of kernels{table}",
            self.graph.name,
            prepared.plan.steps.len(),
            total
        );
        Ok(())
    }

    /// Enqueues step `i` of the plan on `stream`.
    fn enqueue_step(
        &self,
        blas: &CudaBlas,
        prepared: &Prepared,
        i: usize,
        base: &Bases,
        stream: &Arc<CudaStream>,
    ) -> Result<(), BackendError> {
        let plan = &prepared.plan;
        let at = |r: &Ref| resolve(plan, base, &self.persistent, r);
        let e = |what: &str, err: dr::DriverError| self.fail(format!("{what}: {err}"));
        if let (Some(step), Some(k)) = (plan.steps.get(i), prepared.kernels.get(i)) {
            match (step, k) {
                (
                    Step::Kernel {
                        grid,
                        block,
                        shared,
                        ..
                    },
                    Some(Resolved {
                        name,
                        function: f,
                        args,
                    }),
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
                    if self.gpu.kernels.pdl {
                        // SAFETY: as below; the parameters point into `owned`,
                        // alive for the call.
                        return unsafe { launch_pdl(stream, f, &owned, *grid, *block, *shared) }
                            .map_err(|x| e(name, x));
                    }
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
                (Step::Kernel { launch, .. }, None) => {
                    let name = launch.kernel().0;
                    return Err(self.fail(format!("kernel `{name}` was not resolved")));
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

/// Launches `f` with programmatic stream serialization (see
/// [`crate::backend::cuda::kernels::Kernels::pdl`]).
///
/// # Safety
/// `owned` must match the kernel's parameter list.
unsafe fn launch_pdl(
    stream: &Arc<CudaStream>,
    f: &CudaFunction,
    owned: &[Owned],
    grid: u32,
    block: u32,
    shared: u32,
) -> Result<(), dr::DriverError> {
    let mut params: Vec<*mut c_void> = owned
        .iter()
        .map(|o| match o {
            Owned::U64(v) => v as *const u64 as *mut c_void,
            Owned::I32(v) => v as *const i32 as *mut c_void,
            Owned::I64(v) => v as *const i64 as *mut c_void,
            Owned::F32(v) => v as *const f32 as *mut c_void,
            Owned::Idx(v) => v as *const IdxParam as *mut c_void,
            Owned::Attn(v) => v as *const AttnParam as *mut c_void,
        })
        .collect();
    // SAFETY: a zeroed attribute is a valid plain-data value; id and the
    // union's field are set next.
    let mut attr: dsys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = dsys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value.programmaticStreamSerializationAllowed = 1;
    let config = dsys::CUlaunchConfig {
        gridDimX: grid,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: block,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: shared,
        hStream: stream.cu_stream(),
        attrs: &mut attr,
        numAttrs: 1,
    };
    // SAFETY: the caller vouches for the parameters; config and attribute
    // live across the call.
    unsafe {
        dsys::cuLaunchKernelEx(
            &config,
            f.cu_function(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
    }
    .result()
}
