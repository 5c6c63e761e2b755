//! Sessions: the state of stateful graphs (a KV cache) between runs, on the
//! host or on the device, and runs submitted ahead of their collection
//! (`session.submit` / `session.collect`), so a device can go on with the
//! next decode step while the skill reads the last one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use wasmtime::component::Resource;

use super::accel::skill::{runtime, types};
use super::convert::*;
use super::imports::CompiledGraph;
use super::HostState;
use crate::backend::{
    bind_partial, check_inputs, check_inputs_resident, DeviceTensor, Finished, PendingRun,
};
use crate::ir::shape::eval_dim;
use crate::ir::{state_input_name, state_output_name, Op};
use crate::tensor::Tensor;
use types::Error as WitError;

type WResult<T> = wasmtime::Result<Result<T, WitError>>;

/// Most bytes of state one session may hold.
pub const MAX_SESSION_BYTES: usize = 4 << 30;

/// Most submitted runs one session keeps uncollected.
pub const MAX_PENDING: usize = 4;

/// State tensors of one generation batch (on the host, or on the device for
/// backends that keep them there) and its submitted runs.
#[derive(Default)]
pub struct HostSession {
    states: HashMap<String, Tensor>,
    device: HashMap<String, Arc<dyn DeviceTensor>>,
    /// Submitted runs not yet collected, oldest first.
    pending: VecDeque<Box<dyn PendingRun>>,
}

impl HostSession {
    fn clear(&mut self) {
        // Runs in flight may still write the state buffers: dropping a
        // pending run waits for the device, so they go first.
        self.pending.clear();
        self.states.clear();
        self.device.clear();
    }
}

/// The state name of a `state.<name>.next` output.
fn state_of(output: &str) -> Option<&str> {
    output
        .strip_prefix("state.")
        .and_then(|n| n.strip_suffix(".next"))
}

impl HostState {
    /// Starts a run of `g` in session `s`: gives it the session's state,
    /// queues it on the backend and stores the state it will leave. On any
    /// error the session is cleared.
    fn start(
        &mut self,
        s: &Resource<HostSession>,
        g: &Resource<CompiledGraph>,
        inputs: Vec<types::NamedTensor>,
    ) -> WResult<Box<dyn PendingRun>> {
        let started = std::time::Instant::now();
        let trace = self.ctx.trace_sessions;
        let cg = self.table.get(g)?;
        let (graph, exe) = (cg.graph.clone(), cg.exe.clone());
        let mut inputs: Vec<(String, Tensor)> = inputs
            .into_iter()
            .map(|n| (n.name, tensor_in(n.value)))
            .collect();
        if let Some((bad, _)) = inputs.iter().find(|(n, _)| n.starts_with("state.")) {
            return Ok(Err(WitError::InvalidRequest(format!(
                "input `{bad}`: state is supplied by the session"
            ))));
        }
        let run_span = self.run_span(&graph.name);
        let session = self.table.get_mut(s)?;
        let bindings = bind_partial(&graph, &inputs);
        let resident_mode = exe.device_resident();
        let mut resident = Vec::new();
        for &id in &graph.inputs {
            let node = graph.node(id);
            let Op::State { name } = &node.op else {
                continue;
            };
            // A state the graph reads but does not update stays in the
            // session as it is (read-only for this graph: cross-attention
            // keys and values written once by an encoder graph). Device
            // tensors are shared, host tensors copied into the run.
            let read_only = !graph.states.iter().any(|(n, _)| n == name);
            let on_device = if read_only {
                session.device.get(name).cloned()
            } else {
                session.device.remove(name)
            };
            if let Some(d) = on_device {
                if !resident_mode {
                    session.clear();
                    return Ok(Err(WitError::InvalidRequest(format!(
                        "state `{name}` lives on another device than graph `{}`",
                        graph.name
                    ))));
                }
                resident.push((state_input_name(name), d));
                continue;
            }
            let held = if read_only {
                session.states.get(name).cloned()
            } else {
                session.states.remove(name)
            };
            let t = match held {
                Some(t) => t,
                None => {
                    // Empty state: axes no input binds are 0.
                    let shape: Vec<u64> = node
                        .shape
                        .iter()
                        .map(|d| eval_dim(d, &bindings).unwrap_or(0))
                        .collect();
                    let bytes = shape.iter().product::<u64>() as usize * node.dtype.size();
                    if bytes > MAX_SESSION_BYTES {
                        session.clear();
                        return Ok(Err(WitError::ResourceExhausted(format!(
                            "state `{name}` would need {bytes} bytes"
                        ))));
                    }
                    // Device backends zero it in place (no upload).
                    if let Some(made) = resident_mode
                        .then(|| exe.zeros(node.dtype, &shape))
                        .flatten()
                    {
                        match made {
                            Ok(d) => {
                                resident.push((state_input_name(name), d));
                                continue;
                            }
                            Err(e) => {
                                session.clear();
                                return Ok(Err(backend_error(e)));
                            }
                        }
                    }
                    Tensor {
                        dtype: node.dtype,
                        shape,
                        data: vec![0; bytes],
                    }
                }
            };
            inputs.push((state_input_name(name), t));
        }
        let run_span = run_span.entered();
        let backend_started = std::time::Instant::now();
        let mut checked_ms = 0.0;
        let result = if resident_mode {
            let keep: Vec<String> = graph
                .states
                .iter()
                .map(|(n, _)| state_output_name(n))
                .collect();
            check_inputs_resident(&graph, inputs, &resident).and_then(|(ordered, _)| {
                checked_ms = backend_started.elapsed().as_secs_f64() * 1e3;
                exe.submit(ordered, resident, &keep)
            })
        } else {
            check_inputs(&graph, inputs)
                .and_then(|(ordered, _)| exe.run(ordered))
                .map(|outputs| {
                    let mut visible = Vec::new();
                    let mut kept = Vec::new();
                    for (name, t) in outputs {
                        match state_of(&name) {
                            Some(state) => kept.push((state.to_string(), t)),
                            None => visible.push((name, t)),
                        }
                    }
                    session.states.extend(kept);
                    (
                        Vec::new(),
                        Box::new(Finished(visible)) as Box<dyn PendingRun>,
                    )
                })
        };
        let backend_ms = backend_started.elapsed().as_secs_f64() * 1e3;
        drop(run_span);
        let (on_device, pending) = match result {
            Ok(o) => o,
            Err(e) => {
                session.clear();
                return Ok(Err(backend_error(e)));
            }
        };
        for (name, d) in on_device {
            if let Some(state) = state_of(&name) {
                session.device.insert(state.to_string(), d);
            }
        }
        let held: usize = session.device.values().map(|d| d.bytes()).sum::<usize>()
            + session.states.values().map(|t| t.data.len()).sum::<usize>();
        if held > MAX_SESSION_BYTES {
            drop(pending);
            session.clear();
            return Ok(Err(WitError::ResourceExhausted(format!(
                "session state of {held} bytes exceeds {MAX_SESSION_BYTES}"
            ))));
        }
        if trace {
            tracing::debug!(
                target: "host::trace::session",
                "session: started `{}` in {:.3} ms (backend {backend_ms:.3} ms, of which input checks {checked_ms:.3} ms)",
                graph.name,
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok(Ok(pending))
    }

    /// Waits for a started run; a failure clears the session.
    fn finish(
        &mut self,
        s: &Resource<HostSession>,
        run: Box<dyn PendingRun>,
    ) -> WResult<Vec<types::NamedTensor>> {
        let waited = std::time::Instant::now();
        let result = run.wait();
        if self.ctx.trace_sessions {
            tracing::debug!(
                target: "host::trace::session",
                "session: waited {:.3} ms for a run",
                waited.elapsed().as_secs_f64() * 1e3
            );
        }
        match result {
            Ok(outputs) => Ok(Ok(named_out(
                outputs
                    .into_iter()
                    .filter(|(n, _)| state_of(n).is_none())
                    .collect(),
            ))),
            Err(e) => {
                self.table.get_mut(s)?.clear();
                Ok(Err(backend_error(e)))
            }
        }
    }
}

impl runtime::HostSession for HostState {
    fn new(&mut self) -> wasmtime::Result<Resource<HostSession>> {
        Ok(self.table.push(HostSession::default())?)
    }

    fn run(
        &mut self,
        s: Resource<HostSession>,
        g: Resource<CompiledGraph>,
        inputs: Vec<types::NamedTensor>,
    ) -> WResult<Vec<types::NamedTensor>> {
        let waiting = self.table.get(&s)?.pending.len();
        if waiting > 0 {
            return Ok(Err(WitError::InvalidRequest(format!(
                "{waiting} submitted run(s) wait to be collected; collect them before `run`"
            ))));
        }
        match self.start(&s, &g, inputs)? {
            Ok(run) => self.finish(&s, run),
            Err(e) => Ok(Err(e)),
        }
    }

    fn submit(
        &mut self,
        s: Resource<HostSession>,
        g: Resource<CompiledGraph>,
        inputs: Vec<types::NamedTensor>,
    ) -> WResult<()> {
        if self.table.get(&s)?.pending.len() >= MAX_PENDING {
            return Ok(Err(WitError::ResourceExhausted(format!(
                "{MAX_PENDING} submitted runs wait to be collected; collect one before submitting more"
            ))));
        }
        match self.start(&s, &g, inputs)? {
            Ok(run) => {
                self.table.get_mut(&s)?.pending.push_back(run);
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    fn collect(&mut self, s: Resource<HostSession>) -> WResult<Vec<types::NamedTensor>> {
        match self.table.get_mut(&s)?.pending.pop_front() {
            Some(run) => self.finish(&s, run),
            None => Ok(Err(WitError::InvalidRequest(
                "no submitted run is waiting to be collected".into(),
            ))),
        }
    }

    fn reset(&mut self, s: Resource<HostSession>) -> wasmtime::Result<()> {
        self.table.get_mut(&s)?.clear();
        Ok(())
    }

    fn drop(&mut self, s: Resource<HostSession>) -> wasmtime::Result<()> {
        self.table.delete(s)?.clear();
        Ok(())
    }
}
