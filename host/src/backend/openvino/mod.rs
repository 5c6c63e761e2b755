//! OpenVINO backend: the emitted ONNX compiled by OpenVINO (`openvino` crate,
//! runtime linking against `libopenvino_c` from the `openvino` wheel).
//!
//! Each graph is staged as an ONNX file in a bounded cache directory
//! ([`stage`]), next to links to the model's weights. Inference precision is explicit
//! (`INFERENCE_PRECISION_HINT`), never the plugin's default (bf16 on CPUs
//! with AVX512-BF16), and read back after compilation: a device that would
//! compute in another precision is an error, not a silent substitution.
//! OpenVINO's own blob cache (`CACHE_DIR`) is kept per graph directory.
//!
//! At f32 the CPU plugin holds f16 as a storage type only: its
//! ConvertPrecision pass computes graph-internal f16 values in f32 (on every
//! CPU, also with `EXECUTION_MODE_HINT=ACCURACY`), so a cast to f16 whose
//! result stays inside the graph does not round (f32 -> f16 -> f32 is an
//! identity). An f16 graph output is rounded. The op cases list this as a
//! known deviation (tests/backend_ops.rs, `cast/f32-f16`).

mod convert;
mod stage;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use openvino::{CompiledModel, Core, DeviceType, InferRequest, PropertyKey, RwPropertyKey};

use super::{Backend, BackendError, DeviceStatus, Executable, NamedTensors, Precision};
use crate::config::{BackendOptions, LibraryPaths};
use crate::ir::Graph;
use crate::model::Model;
use crate::onnx::quantize::Flavor;
use crate::onnx::{emit_for_model, emit_for_model_int8};
use stage::StageCache;

static LIBRARY: OnceLock<Result<String, String>> = OnceLock::new();

/// Loads `libopenvino_c` once (the first caller's paths decide); returns
/// its path or why it failed.
fn library(paths: &LibraryPaths) -> Result<&'static str, String> {
    LIBRARY
        .get_or_init(|| {
            let path = crate::runtime_libs::openvino_c(paths)?;
            openvino_sys::library::load_from(&path)
                .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
            Ok(path.display().to_string())
        })
        .as_deref()
        .map_err(Clone::clone)
}

fn core(paths: &LibraryPaths) -> Result<Core, String> {
    library(paths)?;
    Core::new().map_err(|e| format!("cannot create the OpenVINO core: {e}"))
}

fn device_type(name: &str) -> DeviceType<'static> {
    match name {
        "CPU" => DeviceType::CPU,
        "GPU" => DeviceType::GPU,
        "NPU" => DeviceType::NPU,
        other => DeviceType::Other(other.to_string().into()),
    }
}

/// Device names OpenVINO reports (`CPU`, `GPU.0`, ...).
pub fn reported_devices(paths: &LibraryPaths) -> Result<Vec<String>, String> {
    let core = core(paths)?;
    let list = core
        .available_devices()
        .map_err(|e| format!("cannot list OpenVINO devices: {e}"))?;
    Ok(list.iter().map(|d| d.as_ref().to_string()).collect())
}

/// One status line per OpenVINO device kind we name.
pub fn probe(options: &BackendOptions) -> Vec<DeviceStatus> {
    let path = match library(&options.libraries) {
        Ok(p) => p,
        Err(reason) => {
            return vec![DeviceStatus {
                device: "openvino".into(),
                available: false,
                detail: reason,
            }];
        }
    };
    let devices = match reported_devices(&options.libraries) {
        Ok(d) => d,
        Err(reason) => {
            return vec![DeviceStatus {
                device: "openvino".into(),
                available: false,
                detail: reason,
            }]
        }
    };
    let mut out = Vec::new();
    for (name, ov) in [
        ("openvino", "CPU"),
        ("openvino:GPU", "GPU"),
        ("openvino:NPU", "NPU"),
    ] {
        let found = devices
            .iter()
            .any(|d| d == ov || d.starts_with(&format!("{ov}.")));
        out.push(DeviceStatus {
            device: name.into(),
            available: found,
            detail: if found {
                format!(
                    "OpenVINO {ov} from {path}; precision f32 (default), bf16, f16, int8 (weights)"
                )
            } else {
                format!(
                    "OpenVINO reports no {ov} device (reported: {})",
                    devices.join(", ")
                )
            },
        });
    }
    out
}

/// OpenVINO on one device at one precision.
pub struct OpenVinoBackend {
    device: String,
    precision: Precision,
    core: Mutex<Core>,
    /// Where compiled graphs are staged.
    stages: StageCache,
}

impl OpenVinoBackend {
    pub fn new(
        device: &str,
        precision: Precision,
        options: &BackendOptions,
    ) -> Result<Self, BackendError> {
        let name = if device == "CPU" {
            "openvino".to_string()
        } else {
            format!("openvino:{device}")
        };
        let unavailable = |reason: String| BackendError::Unavailable {
            device: name.clone(),
            reason,
        };
        let devices = reported_devices(&options.libraries).map_err(unavailable)?;
        if !devices
            .iter()
            .any(|d| d == device || d.starts_with(&format!("{device}.")))
        {
            return Err(unavailable(format!(
                "OpenVINO reports only: {}",
                devices.join(", ")
            )));
        }
        let mut core = core(&options.libraries).map_err(unavailable)?;
        let dt = device_type(device);
        let hint = match precision {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
            // int8 weights; activations in f32, quantized by the plugin
            // where it multiplies them with int8 weights.
            Precision::Int8 => "f32",
        };
        let perf = options.openvino_hint.as_openvino();
        let props = [
            (RwPropertyKey::HintInferencePrecision, hint.to_string()),
            (RwPropertyKey::HintPerformanceMode, perf.to_string()),
        ];
        for (k, v) in &props {
            core.set_property(&dt, k, v)
                .map_err(|e| BackendError::Precision {
                    device: name.clone(),
                    precision: precision.to_string(),
                    supported: format!("(setting {} = {v} failed: {e})", k.as_ref()),
                })?;
        }
        Ok(OpenVinoBackend {
            device: device.to_string(),
            precision,
            core: Mutex::new(core),
            stages: StageCache::new(options.cache_dir.as_deref(), options.openvino_cache_bytes()),
        })
    }

    fn name(&self) -> String {
        if self.device == "CPU" {
            "openvino".into()
        } else {
            format!("openvino:{}", self.device)
        }
    }
}

/// A compiled OpenVINO model and one infer request; runs are serialised.
struct OpenVinoExecutable {
    device: String,
    graph: Arc<Graph>,
    state: Mutex<(InferRequest, CompiledModel)>,
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("path {} is not UTF-8", p.display()))
}

impl Backend for OpenVinoBackend {
    fn device(&self) -> String {
        self.name()
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
            device: self.name(),
            graph: graph.name.clone(),
            message,
        };
        // OpenVINO's C API makes no rank-0 tensors: scalars cross as [1].
        let onnx = match self.precision {
            Precision::Int8 => emit_for_model_int8(&graph, model, Flavor::CompressedWeights, true)
                .map(|(onnx, _)| onnx),
            _ => emit_for_model(&graph, model, true),
        }
        .map_err(|e| fail(e.to_string()))?;
        let path = self
            .stages
            .stage(&graph, model, &onnx, self.precision)
            .map_err(&fail)?;
        let mut core = self
            .core
            .lock()
            .map_err(|_| fail("the OpenVINO core lock is poisoned".into()))?;
        // OpenVINO's blob cache lives inside this graph's own directory, whose
        // name hashes the graph and the weight files: a blob is never reused
        // for other weights of the same shapes.
        let blobs = path.with_file_name(format!("blobs-{}", self.precision));
        let dt = device_type(&self.device);
        core.set_property(
            &dt,
            &RwPropertyKey::CacheDir,
            path_str(&blobs).map_err(&fail)?,
        )
        .map_err(|e| fail(format!("setting CACHE_DIR: {e}")))?;
        let ov_model = core
            .read_model_from_file(path_str(&path).map_err(&fail)?, "")
            .map_err(|e| fail(format!("reading ONNX: {e}")))?;
        let mut compiled = core
            .compile_model(&ov_model, dt)
            .map_err(|e| fail(e.to_string()))?;
        let used = compiled
            .get_property(&PropertyKey::Rw(RwPropertyKey::HintInferencePrecision))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let wanted = match self.precision {
            Precision::Int8 => "f32",
            p => p.name(),
        };
        if !used.is_empty() && used != wanted {
            return Err(BackendError::Precision {
                device: self.name(),
                precision: self.precision.to_string(),
                supported: format!("this device computes in {used} instead"),
            });
        }
        let request = compiled
            .create_infer_request()
            .map_err(|e| fail(e.to_string()))?;
        Ok(Arc::new(OpenVinoExecutable {
            device: self.name(),
            graph,
            state: Mutex::new((request, compiled)),
        }))
    }
}

impl Executable for OpenVinoExecutable {
    fn run(&self, inputs: NamedTensors) -> Result<NamedTensors, BackendError> {
        let fail = |message: String| BackendError::Run {
            device: self.device.clone(),
            graph: self.graph.name.clone(),
            message,
        };
        let mut state = self
            .state
            .lock()
            .map_err(|_| fail("a previous run panicked".into()))?;
        let request = &mut state.0;
        for (name, t) in &inputs {
            let ov = convert::to_tensor(t).map_err(&fail)?;
            request
                .set_tensor(name, &ov)
                .map_err(|e| fail(format!("input `{name}`: {e}")))?;
        }
        request.infer().map_err(|e| fail(e.to_string()))?;
        self.graph
            .outputs
            .iter()
            .map(|(name, id)| {
                let t = request
                    .get_tensor(name)
                    .map_err(|e| fail(format!("output `{name}`: {e}")))?;
                let mut t = convert::from_tensor(&t).map_err(&fail)?;
                if self.graph.node(*id).shape.is_empty() {
                    t.shape.clear();
                }
                Ok((name.clone(), t))
            })
            .collect()
    }
}
