//! Backends: one folder per backend behind one trait.
//!
//! A [`Backend`] compiles a validated [`Graph`] for one device and precision
//! into an [`Executable`]. Input checking (names, dtypes, ranks, bound
//! symbolic axes, size limits) happens here, once, before any backend sees
//! the data. [`registry`] parses device names and reports availability.

pub mod cpu;
pub mod cuda;
pub mod faulty;
pub mod openvino;
pub mod registry;

use std::collections::HashMap;
use std::sync::Arc;

use crate::ir::shape::{check_sizes, eval_dim, is_sum, Bindings};
use crate::ir::{shape_str, Dim, Graph};
use crate::model::Model;
use crate::tensor::Tensor;

pub use registry::{Device, DeviceStatus, Precision};

/// Backend failures.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("device `{device}` is not available: {reason}")]
    Unavailable { device: String, reason: String },
    #[error("unknown device `{0}`; known devices: cpu, openvino, openvino:GPU, openvino:NPU, cuda, cuda:N (see `host devices`)")]
    UnknownDevice(String),
    #[error("device `{device}` does not support precision {precision}; supported: {supported}")]
    Precision {
        device: String,
        precision: String,
        supported: String,
    },
    #[error("{device}: compiling graph `{graph}` failed: {message}")]
    Compile {
        device: String,
        graph: String,
        message: String,
    },
    #[error("{device}: running graph `{graph}` failed: {message}")]
    Run {
        device: String,
        graph: String,
        message: String,
    },
    #[error("graph `{graph}` input: {message}")]
    Input { graph: String, message: String },
    #[error(transparent)]
    Graph(#[from] crate::ir::GraphError),
}

/// Named tensors in and out of a graph.
pub type NamedTensors = Vec<(String, Tensor)>;

/// Something that executes compiled graphs on one device.
pub trait Backend: Send + Sync {
    /// Device name, e.g. `cpu`.
    fn device(&self) -> String;
    /// Precision graphs compute in.
    fn precision(&self) -> Precision;
    /// Whether runs of repeated input shapes are replayed much faster than
    /// new shapes (CUDA graphs), so that stateful skills should keep state
    /// of a fixed size (told to skills by `runtime.device`).
    fn replays_fixed_shapes(&self) -> bool {
        false
    }
    /// Compiles a validated graph whose weights live in `model`.
    fn compile(
        &self,
        graph: Arc<Graph>,
        model: &Model,
    ) -> Result<Arc<dyn Executable>, BackendError>;
}

/// A tensor a backend keeps in its device memory between runs (session
/// state such as a KV cache), opaque to the rest of the host.
pub trait DeviceTensor: Send + Sync {
    fn dtype(&self) -> crate::ir::DType;
    fn shape(&self) -> &[u64];
    fn bytes(&self) -> usize;
    fn as_any(&self) -> &dyn std::any::Any;
}

/// Device tensors by input or output name.
pub type NamedDeviceTensors = Vec<(String, Arc<dyn DeviceTensor>)>;

/// A graph compiled for one device.
pub trait Executable: Send + Sync {
    /// Runs with inputs already checked by [`check_inputs`], in graph input order.
    fn run(&self, inputs: NamedTensors) -> Result<NamedTensors, BackendError>;

    /// Whether [`Executable::run_resident`] keeps tensors on the device.
    fn device_resident(&self) -> bool {
        false
    }

    /// Like [`Executable::run`], but the inputs named in `resident` come
    /// from device tensors of an earlier run (their entries in `inputs` carry
    /// dtype and shape only, see [`check_inputs_resident`]), and the outputs
    /// named in `keep` stay on the device. Only backends whose
    /// [`Executable::device_resident`] is true implement it.
    fn run_resident(
        &self,
        inputs: NamedTensors,
        resident: NamedDeviceTensors,
        keep: &[String],
    ) -> Result<(NamedTensors, NamedDeviceTensors), BackendError> {
        let _ = (inputs, resident, keep);
        Err(BackendError::Input {
            graph: String::new(),
            message: "this backend keeps no tensors on a device".into(),
        })
    }

    /// [`Executable::run_resident`] without waiting for the device: returns
    /// the kept outputs (valid inputs of a later run on this device, which
    /// orders itself after this one) and the pending rest. The default runs
    /// to completion first; backends that queue work override it.
    fn submit(
        &self,
        inputs: NamedTensors,
        resident: NamedDeviceTensors,
        keep: &[String],
    ) -> Result<(NamedDeviceTensors, Box<dyn PendingRun>), BackendError> {
        let (outputs, kept) = self.run_resident(inputs, resident, keep)?;
        Ok((kept, Box::new(Finished(outputs))))
    }

    /// A zero-filled device tensor for input use by [`Executable::run_resident`]
    /// (a session's empty state), made on the device instead of uploaded.
    /// `None` where the backend keeps no tensors on a device.
    fn zeros(
        &self,
        dtype: crate::ir::DType,
        shape: &[u64],
    ) -> Option<Result<Arc<dyn DeviceTensor>, BackendError>> {
        let _ = (dtype, shape);
        None
    }
}

/// A run queued on a device by [`Executable::submit`]. Dropping it without
/// waiting still waits for the device before its buffers are released.
pub trait PendingRun: Send {
    /// Waits for the run and returns its host outputs.
    fn wait(self: Box<Self>) -> Result<NamedTensors, BackendError>;
}

/// A run that was complete when it was submitted.
pub struct Finished(pub NamedTensors);

impl PendingRun for Finished {
    fn wait(self: Box<Self>) -> Result<NamedTensors, BackendError> {
        Ok(self.0)
    }
}

/// Largest tensor any run may create, in elements (2^31: 8 GiB of f32).
pub const MAX_RUN_ELEMENTS: u64 = 1 << 31;

/// Checks `inputs` against the graph's declared inputs, binds the symbolic
/// axes and checks every tensor of the run against [`MAX_RUN_ELEMENTS`].
/// Returns the inputs in declaration order.
pub fn check_inputs(
    g: &Graph,
    inputs: NamedTensors,
) -> Result<(NamedTensors, Bindings), BackendError> {
    check_inputs_resident(g, inputs, &[])
}

/// [`check_inputs`] where the inputs named in `resident` are device tensors:
/// their dtype and shape are checked like any input's, and in the returned
/// inputs they appear as host tensors with that dtype and shape but no data
/// (the backend reads the device tensor instead).
pub fn check_inputs_resident(
    g: &Graph,
    mut inputs: NamedTensors,
    resident: &[(String, Arc<dyn DeviceTensor>)],
) -> Result<(NamedTensors, Bindings), BackendError> {
    for (name, d) in resident {
        inputs.push((
            name.clone(),
            Tensor {
                dtype: d.dtype(),
                shape: d.shape().to_vec(),
                data: Vec::new(),
            },
        ));
    }
    let err = |message: String| BackendError::Input {
        graph: g.name.clone(),
        message,
    };
    let mut bindings: Bindings = HashMap::new();
    let mut ordered = Vec::with_capacity(g.inputs.len());
    for &id in &g.inputs {
        let name = g.input_name(id);
        let node = g.node(id);
        let pos = inputs
            .iter()
            .position(|(n, _)| *n == name)
            .ok_or_else(|| err(format!("missing input `{name}`")))?;
        let (_, t) = inputs.swap_remove(pos);
        if !resident.iter().any(|(n, _)| *n == name) {
            t.check(&name).map_err(|e| err(e.to_string()))?;
        }
        if t.dtype != node.dtype {
            return Err(err(format!(
                "input `{name}`: expected {}, got {}",
                node.dtype, t.dtype
            )));
        }
        if t.shape.len() != node.shape.len() {
            return Err(err(format!(
                "input `{name}`: expected shape {}, got {:?}",
                shape_str(&node.shape),
                t.shape
            )));
        }
        for (d, &got) in node.shape.iter().zip(&t.shape) {
            match d {
                Dim::Fixed(n) if *n != got => {
                    return Err(err(format!(
                        "input `{name}`: expected shape {}, got {:?}",
                        shape_str(&node.shape),
                        t.shape
                    )))
                }
                Dim::Sym(s) if !is_sum(d) => {
                    if let Some(&prev) = bindings.get(s) {
                        if prev != got {
                            return Err(err(format!(
                                "axis `{s}` is {prev} in one input and {got} in `{name}`"
                            )));
                        }
                    }
                    bindings.insert(s.clone(), got);
                }
                _ => {}
            }
        }
        ordered.push((name, t));
    }
    if let Some((extra, _)) = inputs.first() {
        return Err(err(format!("unknown input `{extra}`")));
    }
    // Sums such as `past+seq` are checked once every plain axis is bound.
    for (id, (name, t)) in g.inputs.iter().zip(&ordered) {
        for (d, &got) in g.node(*id).shape.iter().zip(&t.shape) {
            if is_sum(d) {
                let want = eval_dim(d, &bindings)?;
                if want != got {
                    return Err(err(format!(
                        "input `{name}`: axis {d} must be {want}, got {got}"
                    )));
                }
            }
        }
    }
    check_sizes(g, &bindings, MAX_RUN_ELEMENTS)?;
    Ok((ordered, bindings))
}

/// Binds the symbolic axes of the non-state inputs present in `inputs`
/// (used to size empty state before a session's first run).
pub fn bind_partial(g: &Graph, inputs: &NamedTensors) -> Bindings {
    let mut b = Bindings::new();
    for &id in &g.inputs {
        let name = g.input_name(id);
        if let Some((_, t)) = inputs.iter().find(|(n, _)| *n == name) {
            for (d, &got) in g.node(id).shape.iter().zip(&t.shape) {
                if let Dim::Sym(s) = d {
                    if !is_sum(d) {
                        b.insert(s.clone(), got);
                    }
                }
            }
        }
    }
    b
}
