//! CPU backend: the emitted ONNX runs on ONNX Runtime through `ort` with
//! `load-dynamic`. The shared library comes from the `onnxruntime` PyPI
//! wheel (see [`crate::runtime_libs`]); it is loaded once per process.
//!
//! Weights stay out of the protobuf: the model's safetensors files are handed
//! to ONNX Runtime as in-memory external-data files, shared by every graph of
//! the model, and the initializers point into them by offset. Sessions run
//! without ONNX Runtime's CPU arena, so memory of large batches goes back.

mod convert;

use std::sync::{Arc, Mutex, OnceLock};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use super::{Backend, BackendError, DeviceStatus, Executable, NamedTensors, Precision};
use crate::config::BackendOptions;
use crate::ir::Graph;
use crate::model::Model;
use crate::onnx::quantize::{Flavor, MemoryFile};
use crate::onnx::{emit_for_model, emit_for_model_int8, used_weight_files, weight_file_name};

static ORT: OnceLock<Result<(ort::environment::Environment, String), String>> = OnceLock::new();

/// Loads ONNX Runtime once (the first caller's options decide the library
/// and the threads); returns the library path or why it failed.
fn environment(
    options: &BackendOptions,
) -> Result<&'static (ort::environment::Environment, String), String> {
    ORT.get_or_init(|| {
        let path = crate::runtime_libs::onnxruntime(&options.libraries)?;
        let builder =
            ort::init_from(&path).map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        // One thread pool for every session (embedding graphs, prefill and
        // decode graphs...): per-session pools would multiply the threads,
        // and idle pools spinning steal cores from the busy one. (Created
        // after `init_from`, which points ort at the library.)
        let pool = ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(options.cpu_threads())
            .and_then(|o| o.with_inter_threads(1))
            .map_err(|e| format!("ONNX Runtime thread pool: {e}"))?;
        let env = builder
            .with_name("host")
            .with_global_thread_pool(pool)
            .build()
            .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))?;
        Ok((env, path.display().to_string()))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Availability of the CPU backend.
pub fn probe(options: &BackendOptions) -> DeviceStatus {
    match environment(options) {
        Ok((_, path)) => DeviceStatus {
            device: "cpu".into(),
            available: true,
            detail: format!(
                "ONNX Runtime from {path}; precision f32, int8 (linear-layer weights); {} threads",
                options.cpu_threads()
            ),
        },
        Err(reason) => DeviceStatus {
            device: "cpu".into(),
            available: false,
            detail: reason,
        },
    }
}

/// ONNX Runtime on the CPU.
pub struct CpuBackend {
    precision: Precision,
    /// The process's ONNX Runtime.
    env: &'static ort::environment::Environment,
}

impl CpuBackend {
    pub fn new(precision: Precision, options: &BackendOptions) -> Result<Self, BackendError> {
        let (env, _) = environment(options).map_err(|reason| BackendError::Unavailable {
            device: "cpu".into(),
            reason,
        })?;
        if !matches!(precision, Precision::F32 | Precision::Int8) {
            return Err(BackendError::Precision {
                device: "cpu".into(),
                precision: precision.to_string(),
                supported: "f32, int8".into(),
            });
        }
        Ok(CpuBackend { precision, env })
    }
}

/// A compiled ONNX Runtime session. `run` needs `&mut Session`, so runs of
/// one graph are serialised; instances on other graphs run in parallel.
struct CpuExecutable {
    graph: Arc<Graph>,
    session: Mutex<Session>,
}

impl Backend for CpuBackend {
    fn device(&self) -> String {
        "cpu".into()
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
            device: "cpu".into(),
            graph: graph.name.clone(),
            message,
        };
        let env = self.env;
        // int8 graphs read each weight from an in-memory file of its own;
        // f32 graphs read the model's files, copied once per model.
        let (bytes, files): (Vec<u8>, Vec<MemoryFile>) = match self.precision {
            Precision::Int8 => emit_for_model_int8(&graph, model, Flavor::RowInt8, false)
                .map_err(|e| fail(e.to_string()))?,
            _ => {
                let onnx = emit_for_model(&graph, model, false).map_err(|e| fail(e.to_string()))?;
                let files = used_weight_files(&graph, model)
                    .into_iter()
                    .map(|i| MemoryFile {
                        name: weight_file_name(i),
                        bytes: model.file_bytes(i),
                    })
                    .collect();
                (onnx, files)
            }
        };
        let e2s = |e: ort::Error<ort::session::builder::SessionBuilder>| fail(e.to_string());
        let mut builder = Session::builder(env)
            .map_err(|e| fail(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(e2s)?;
        // No arena: ONNX Runtime's CPU arena grows to the largest batch
        // it has seen and never gives the memory back (the RSS of `host
        // serve` stayed 30-40 MiB up after large requests in half the
        // runs); plain allocations go back to malloc, which the host trims
        // after large requests (`memory.rs`). MiniLM at bs1 and bs32 ran at
        // the same speed either way on the 2-core Xeon.
        builder = builder
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
            .map_err(e2s)?;
        for f in files {
            builder = builder
                .with_external_initializer_file_in_memory(f.name, f.bytes)
                .map_err(e2s)?;
        }
        let session = builder
            .commit_from_memory(&bytes)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Arc::new(CpuExecutable {
            graph,
            session: Mutex::new(session),
        }))
    }
}

/// Session state kept as an ONNX Runtime value between runs: a decode
/// step's KV cache, or cross-attention keys read by every step, goes back
/// in without being converted or copied.
struct CpuTensor {
    value: ort::value::DynValue,
    dtype: crate::ir::DType,
    shape: Vec<u64>,
}

impl crate::backend::DeviceTensor for CpuTensor {
    fn dtype(&self) -> crate::ir::DType {
        self.dtype
    }
    fn shape(&self) -> &[u64] {
        &self.shape
    }
    fn bytes(&self) -> usize {
        self.shape.iter().product::<u64>() as usize * self.dtype.size()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Executable for CpuExecutable {
    fn device_resident(&self) -> bool {
        true
    }

    fn zeros(
        &self,
        dtype: crate::ir::DType,
        shape: &[u64],
    ) -> Option<Result<Arc<dyn crate::backend::DeviceTensor>, BackendError>> {
        let bytes = shape.iter().product::<u64>() as usize * dtype.size();
        let t = crate::tensor::Tensor {
            dtype,
            shape: shape.to_vec(),
            data: vec![0; bytes],
        };
        Some(
            convert::to_value(&t)
                .map(|value| {
                    Arc::new(CpuTensor {
                        value,
                        dtype,
                        shape: shape.to_vec(),
                    }) as Arc<dyn crate::backend::DeviceTensor>
                })
                .map_err(|message| BackendError::Run {
                    device: "cpu".into(),
                    graph: self.graph.name.clone(),
                    message,
                }),
        )
    }

    fn run_resident(
        &self,
        inputs: NamedTensors,
        resident: crate::backend::NamedDeviceTensors,
        keep: &[String],
    ) -> Result<(NamedTensors, crate::backend::NamedDeviceTensors), BackendError> {
        let fail = |message: String| BackendError::Run {
            device: "cpu".into(),
            graph: self.graph.name.clone(),
            message,
        };
        let mut values: Vec<(String, ort::session::SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len());
        for (name, t) in &inputs {
            match resident.iter().find(|(n, _)| n == name) {
                Some((_, d)) => {
                    let held = d
                        .as_any()
                        .downcast_ref::<CpuTensor>()
                        .ok_or_else(|| fail(format!("state `{name}` is not a cpu tensor")))?;
                    values.push((name.clone(), (&held.value).into()));
                }
                None => values.push((name.clone(), convert::to_value(t).map_err(&fail)?.into())),
            }
        }
        let mut session = self
            .session
            .lock()
            .map_err(|_| fail("a previous run panicked".into()))?;
        let mut outputs = session.run(values).map_err(|e| fail(e.to_string()))?;
        let (mut host, mut kept) = (Vec::new(), Vec::new());
        for (name, _) in &self.graph.outputs {
            match keep.contains(name) {
                true => {
                    let value = outputs
                        .remove(name)
                        .ok_or_else(|| fail(format!("output `{name}` missing")))?;
                    let (dtype, shape) = convert::value_type(&value).map_err(&fail)?;
                    let t: Arc<dyn crate::backend::DeviceTensor> = Arc::new(CpuTensor {
                        value,
                        dtype,
                        shape,
                    });
                    kept.push((name.clone(), t));
                }
                false => {
                    let v = outputs
                        .get(name)
                        .ok_or_else(|| fail(format!("output `{name}` missing")))?;
                    host.push((name.clone(), convert::from_value(v).map_err(&fail)?));
                }
            }
        }
        Ok((host, kept))
    }

    fn run(&self, inputs: NamedTensors) -> Result<NamedTensors, BackendError> {
        let fail = |message: String| BackendError::Run {
            device: "cpu".into(),
            graph: self.graph.name.clone(),
            message,
        };
        let values = inputs
            .iter()
            .map(|(n, t)| convert::to_value(t).map(|v| (n.clone(), v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| fail("a previous run panicked".into()))?;
        let outputs = session.run(values).map_err(|e| fail(e.to_string()))?;
        self.graph
            .outputs
            .iter()
            .map(|(name, _)| {
                let v = outputs
                    .get(name)
                    .ok_or_else(|| fail(format!("output `{name}` missing")))?;
                convert::from_value(v)
                    .map(|t| (name.clone(), t))
                    .map_err(fail)
            })
            .collect()
    }
}
