//! Host implementations of the skill world's imports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wasmtime::component::Resource;

use super::accel::skill::{api, graph, log, model, partial, runtime, types};
use super::convert::*;
use super::HostState;
use crate::backend::{check_inputs, Backend, Executable};
use crate::ir::builder::{BuilderLimits, WeightTypes};
use crate::ir::{ConstData, Graph, GraphBuilder, GraphError};
use crate::model::Model;
use types::Error as WitError;

type WResult<T> = wasmtime::Result<Result<T, WitError>>;

/// `From<graph::Enum>` for the IR enum of the same name, from the rows of
/// the op table (`ir::ops`): a WIT case without a row, or a row without a
/// WIT case, does not compile.
macro_rules! from_wit {
    ($(#[$m:meta])* $name:ident; $($(#[$vm:meta])* $v:ident { $($field:tt)* }),* $(,)?) => {
        impl From<graph::$name> for crate::ir::$name {
            fn from(op: graph::$name) -> Self {
                match op {
                    $(graph::$name::$v => Self::$v,)*
                }
            }
        }
    };
}
crate::ir::op_table!(unary, from_wit);
crate::ir::op_table!(binary, from_wit);
crate::ir::op_table!(compare, from_wit);
crate::ir::op_table!(reduce, from_wit);

/// Compiled graphs shared by every instance of an endpoint, keyed by graph
/// fingerprint (the backend and model are fixed per context).
#[derive(Default)]
pub struct CompileCache {
    map: Mutex<HashMap<String, Arc<dyn Executable>>>,
}

/// What one skill instance sees of the host: its model and backend.
pub struct SkillContext {
    pub skill: String,
    pub model: Option<Arc<Model>>,
    pub backend: Option<Arc<dyn Backend>>,
    pub weight_types: WeightTypes,
    pub cache: Arc<CompileCache>,
    /// Minimum level printed (0 trace .. 4 error).
    pub log_level: u8,
    /// Overrides the backend's [`Backend::replays_fixed_shapes`] in what
    /// `runtime.device` tells the skill (`HOST_FIXED_SHAPES=1`/`0`).
    pub fixed_shapes: Option<bool>,
    /// Logs the host time of every session run (`HOST_TRACE_SESSIONS=1`:
    /// debug events of target `host::trace::session`).
    pub trace_sessions: bool,
}

impl SkillContext {
    /// A context without model or backend (for `describe`).
    pub fn empty() -> Self {
        SkillContext {
            skill: String::new(),
            model: None,
            backend: None,
            weight_types: Arc::new(HashMap::new()),
            cache: Arc::new(CompileCache::default()),
            log_level: 3,
            fixed_shapes: None,
            trace_sessions: false,
        }
    }

    /// A context serving `model` on `backend`, with the skill log level,
    /// fixed-shapes answer and session tracing of `config`.
    pub fn new(
        skill: &str,
        model: Arc<Model>,
        backend: Arc<dyn Backend>,
        cache: Arc<CompileCache>,
        config: &crate::config::HostConfig,
    ) -> Self {
        SkillContext {
            skill: skill.to_string(),
            weight_types: model.weights.types(),
            model: Some(model),
            backend: Some(backend),
            cache,
            log_level: config.skill_log.rank(),
            fixed_shapes: config.fixed_shapes,
            trace_sessions: config.trace_sessions,
        }
    }

    pub(super) fn model(&self) -> Result<&Arc<Model>, WitError> {
        self.model.as_ref().ok_or_else(|| {
            WitError::Model("no model is loaded in this context (describe only)".into())
        })
    }
}

/// A graph compiled for the endpoint's backend.
pub struct CompiledGraph {
    pub(super) graph: Arc<Graph>,
    pub(super) exe: Arc<dyn Executable>,
}

impl HostState {
    /// The `backend_run` span of a run of graph `graph` on this
    /// instance's backend.
    pub(super) fn run_span(&self, graph: &str) -> tracing::Span {
        tracing::debug_span!(
            "backend_run",
            device = %self.ctx.backend.as_ref().map(|b| b.device()).unwrap_or_default(),
            graph,
        )
    }
}

impl types::Host for HostState {}
impl api::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let n = match level {
            log::Level::Trace => 0,
            log::Level::Debug => 1,
            log::Level::Info => 2,
            log::Level::Warn => 3,
            log::Level::Error => 4,
        };
        if n >= self.ctx.log_level {
            let text: String = message.chars().take(4096).collect();
            let skill = self.ctx.skill.as_str();
            // Target `skill`: HOST_LOG can filter skills apart from the host.
            match level {
                log::Level::Trace => tracing::trace!(target: "skill", skill, "{text}"),
                log::Level::Debug => tracing::debug!(target: "skill", skill, "{text}"),
                log::Level::Info => tracing::info!(target: "skill", skill, "{text}"),
                log::Level::Warn => tracing::warn!(target: "skill", skill, "{text}"),
                log::Level::Error => tracing::error!(target: "skill", skill, "{text}"),
            }
        }
        Ok(())
    }
}

impl partial::Host for HostState {
    fn emit(&mut self, index: u32, chunk: String) -> wasmtime::Result<()> {
        if let Some(Some(tx)) = self.streams.get(index as usize) {
            let _ = tx.send(chunk);
        }
        Ok(())
    }

    fn wanted(&mut self, index: u32) -> wasmtime::Result<bool> {
        Ok(matches!(self.streams.get(index as usize), Some(Some(_))))
    }

    fn complete(
        &mut self,
        index: u32,
        answer: Result<api::Response, types::Error>,
    ) -> wasmtime::Result<()> {
        if let Some(c) = self.completer.as_mut() {
            c(index, answer);
        }
        Ok(())
    }

    fn take_queued(&mut self, max: u32) -> wasmtime::Result<Vec<String>> {
        let Some(q) = self.queue.as_mut() else {
            return Ok(Vec::new());
        };
        let taken = q(max as usize);
        let mut out = Vec::with_capacity(taken.len());
        for (request, stream) in taken {
            self.streams.push(stream);
            out.push(request);
        }
        Ok(out)
    }
}

impl model::Host for HostState {
    fn id(&mut self) -> wasmtime::Result<String> {
        Ok(self
            .ctx
            .model
            .as_ref()
            .map(|m| m.id.clone())
            .unwrap_or_default())
    }

    fn config(&mut self) -> WResult<String> {
        Ok(self.ctx.model().map(|m| m.config.clone()))
    }

    fn asset(&mut self, path: String) -> WResult<Option<String>> {
        Ok(self
            .ctx
            .model()
            .and_then(|m| m.asset(&path).map_err(|e| WitError::Model(e.to_string()))))
    }

    fn weights(&mut self) -> wasmtime::Result<Vec<model::WeightInfo>> {
        let mut v: Vec<model::WeightInfo> = self
            .ctx
            .weight_types
            .iter()
            .map(|(name, (d, s))| model::WeightInfo {
                name: name.clone(),
                dtype: dtype_out(*d),
                shape: s.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }
}

impl HostState {
    fn with_builder<R>(
        &mut self,
        b: &Resource<GraphBuilder>,
        f: impl FnOnce(&mut GraphBuilder) -> Result<R, GraphError>,
    ) -> WResult<R> {
        let builder = self.table.get_mut(b)?;
        Ok(f(builder).map_err(graph_error))
    }
}

type Node = u32;
type B = Resource<GraphBuilder>;

impl graph::Host for HostState {}

impl graph::HostBuilder for HostState {
    fn new(&mut self, name: String) -> wasmtime::Result<B> {
        let name: String = name.chars().take(128).collect();
        let b = GraphBuilder::new(
            &name,
            self.ctx.weight_types.clone(),
            BuilderLimits::default(),
        );
        Ok(self.table.push(b)?)
    }

    fn input(
        &mut self,
        b: B,
        name: String,
        dtype: types::Dtype,
        shape: Vec<types::Dim>,
    ) -> WResult<Node> {
        self.with_builder(&b, |g| {
            g.input(
                &name,
                dtype_in(dtype),
                shape.into_iter().map(dim_in).collect(),
            )
        })
    }

    fn weight(&mut self, b: B, name: String) -> WResult<Node> {
        self.with_builder(&b, |g| g.weight(&name))
    }

    fn constant(&mut self, b: B, value: types::Tensor) -> WResult<Node> {
        let t = tensor_in(value);
        self.with_builder(&b, |g| {
            g.constant(ConstData {
                dtype: t.dtype,
                shape: t.shape,
                bytes: t.data,
            })
        })
    }

    fn scalar(&mut self, b: B, value: f64, dtype: types::Dtype) -> WResult<Node> {
        self.with_builder(&b, |g| g.scalar(value, dtype_in(dtype)))
    }

    fn unary(&mut self, b: B, op: graph::UnaryOp, x: Node) -> WResult<Node> {
        self.with_builder(&b, |g| g.unary(op.into(), x))
    }

    fn binary(&mut self, b: B, op: graph::BinaryOp, x: Node, y: Node) -> WResult<Node> {
        self.with_builder(&b, |g| g.binary(op.into(), x, y))
    }

    fn compare(&mut self, b: B, op: graph::CompareOp, x: Node, y: Node) -> WResult<Node> {
        self.with_builder(&b, |g| g.compare(op.into(), x, y))
    }

    fn logical_and(&mut self, b: B, x: Node, y: Node) -> WResult<Node> {
        self.with_builder(&b, |g| g.and(x, y))
    }

    fn select(&mut self, b: B, cond: Node, x: Node, y: Node) -> WResult<Node> {
        self.with_builder(&b, |g| g.select(cond, x, y))
    }

    fn cast(&mut self, b: B, x: Node, to: types::Dtype) -> WResult<Node> {
        self.with_builder(&b, |g| g.cast(x, dtype_in(to)))
    }

    fn matmul(&mut self, b: B, x: Node, y: Node) -> WResult<Node> {
        self.with_builder(&b, |g| g.matmul(x, y))
    }

    fn linear(&mut self, b: B, x: Node, w: Node, bias: Option<Node>) -> WResult<Node> {
        self.with_builder(&b, |g| g.linear(x, w, bias))
    }

    fn layer_norm(
        &mut self,
        b: B,
        x: Node,
        scale: Node,
        bias: Option<Node>,
        eps: f32,
    ) -> WResult<Node> {
        self.with_builder(&b, |g| g.layer_norm(x, scale, bias, eps))
    }

    fn rms_norm(&mut self, b: B, x: Node, scale: Node, eps: f32) -> WResult<Node> {
        self.with_builder(&b, |g| g.rms_norm(x, scale, eps))
    }

    fn rotary(&mut self, b: B, x: Node, cos: Node, sin: Node, interleaved: bool) -> WResult<Node> {
        self.with_builder(&b, |g| g.rotary(x, cos, sin, interleaved))
    }

    fn softmax(&mut self, b: B, x: Node, axis: i32) -> WResult<Node> {
        self.with_builder(&b, |g| g.softmax(x, axis))
    }

    fn attention(
        &mut self,
        b: B,
        q: Node,
        k: Node,
        v: Node,
        mask: Option<Node>,
        o: graph::AttentionOptions,
    ) -> WResult<Node> {
        self.with_builder(&b, |g| g.attention(q, k, v, mask, o.causal, o.scale))
    }

    fn embedding(&mut self, b: B, table: Node, ids: Node) -> WResult<Node> {
        self.with_builder(&b, |g| g.embedding(table, ids))
    }

    fn reshape(&mut self, b: B, x: Node, shape: Vec<i64>) -> WResult<Node> {
        self.with_builder(&b, |g| g.reshape(x, shape))
    }

    fn permute(&mut self, b: B, x: Node, perm: Vec<u32>) -> WResult<Node> {
        self.with_builder(&b, |g| g.permute(x, perm))
    }

    fn slice(&mut self, b: B, x: Node, axis: i32, start: i64, end: i64) -> WResult<Node> {
        self.with_builder(&b, |g| g.slice(x, axis, start, end))
    }

    fn concat(&mut self, b: B, xs: Vec<Node>, axis: i32) -> WResult<Node> {
        self.with_builder(&b, |g| g.concat(xs, axis))
    }

    fn unsqueeze(&mut self, b: B, x: Node, axis: i32) -> WResult<Node> {
        self.with_builder(&b, |g| g.unsqueeze(x, axis))
    }

    fn squeeze(&mut self, b: B, x: Node, axis: i32) -> WResult<Node> {
        self.with_builder(&b, |g| g.squeeze(x, axis))
    }

    fn expand(&mut self, b: B, x: Node, shape: Vec<types::Dim>) -> WResult<Node> {
        self.with_builder(&b, |g| g.expand(x, shape.into_iter().map(dim_in).collect()))
    }

    fn reduce(
        &mut self,
        b: B,
        op: graph::ReduceOp,
        x: Node,
        axes: Vec<i32>,
        keep: bool,
    ) -> WResult<Node> {
        self.with_builder(&b, |g| g.reduce(op.into(), x, axes, keep))
    }

    fn l2_normalize(&mut self, b: B, x: Node, axis: i32, eps: f32) -> WResult<Node> {
        self.with_builder(&b, |g| g.l2_normalize(x, axis, eps))
    }

    fn state(
        &mut self,
        b: B,
        name: String,
        dtype: types::Dtype,
        shape: Vec<types::Dim>,
    ) -> WResult<Node> {
        self.with_builder(&b, |g| {
            g.state(
                &name,
                dtype_in(dtype),
                shape.into_iter().map(dim_in).collect(),
            )
        })
    }

    fn update_state(&mut self, b: B, name: String, x: Node) -> WResult<()> {
        self.with_builder(&b, |g| g.update_state(&name, x))
    }

    fn write_rows(&mut self, b: B, x: Node, update: Node, start: Node) -> WResult<Node> {
        self.with_builder(&b, |g| g.write_rows(x, update, start))
    }

    fn conv(
        &mut self,
        b: B,
        x: Node,
        weight: Node,
        bias: Option<Node>,
        o: graph::ConvOptions,
    ) -> WResult<Node> {
        let attrs = crate::ir::conv::ConvAttrs {
            stride: o.stride.iter().map(|&v| v as u64).collect(),
            pad: o
                .padding
                .iter()
                .map(|&(a, z)| (a as u64, z as u64))
                .collect(),
            dilation: o.dilation.iter().map(|&v| v as u64).collect(),
            groups: o.groups as u64,
        };
        self.with_builder(&b, |g| g.conv(x, weight, bias, attrs))
    }

    fn gather(&mut self, b: B, x: Node, indices: Node, axis: i32) -> WResult<Node> {
        self.with_builder(&b, |g| g.gather(x, indices, axis))
    }

    fn argmax(&mut self, b: B, x: Node, axis: i32, keep: bool) -> WResult<Node> {
        self.with_builder(&b, |g| g.argmax(x, axis, keep))
    }

    fn top_k(&mut self, b: B, x: Node, k: u32) -> WResult<(Node, Node)> {
        self.with_builder(&b, |g| g.top_k(x, k))
    }

    fn info(&mut self, b: B, x: Node) -> WResult<graph::NodeInfo> {
        self.with_builder(&b, |g| {
            g.get(x).map(|n| graph::NodeInfo {
                dtype: dtype_out(n.dtype),
                shape: n.shape.iter().map(dim_out).collect(),
            })
        })
    }

    fn output(&mut self, b: B, name: String, x: Node) -> WResult<()> {
        self.with_builder(&b, |g| g.output(&name, x))
    }

    fn drop(&mut self, b: B) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl runtime::Host for HostState {
    fn compile(&mut self, b: B) -> WResult<Resource<CompiledGraph>> {
        let builder = self.table.delete(b)?;
        let graph = match builder.finish() {
            Ok(g) => Arc::new(g),
            Err(e) => return Ok(Err(graph_error(e))),
        };
        let (Some(model), Some(backend)) = (self.ctx.model.clone(), self.ctx.backend.clone())
        else {
            return Ok(Err(WitError::Backend(
                "no backend in this context (describe only)".into(),
            )));
        };
        let key = graph.fingerprint();
        let cached = self
            .ctx
            .cache
            .map
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned());
        let exe = match cached {
            Some(e) => e,
            None => match backend.compile(graph.clone(), &model) {
                Ok(e) => {
                    if let Ok(mut m) = self.ctx.cache.map.lock() {
                        m.insert(key, e.clone());
                    }
                    e
                }
                Err(e) => return Ok(Err(backend_error(e))),
            },
        };
        Ok(Ok(self.table.push(CompiledGraph { graph, exe })?))
    }

    fn device(&mut self) -> wasmtime::Result<runtime::DeviceInfo> {
        Ok(match &self.ctx.backend {
            Some(b) => runtime::DeviceInfo {
                device: b.device(),
                precision: b.precision().to_string(),
                fixed_shapes: self
                    .ctx
                    .fixed_shapes
                    .unwrap_or_else(|| b.replays_fixed_shapes()),
            },
            None => runtime::DeviceInfo {
                device: String::new(),
                precision: String::new(),
                fixed_shapes: false,
            },
        })
    }
}

impl runtime::HostCompiledGraph for HostState {
    fn run(
        &mut self,
        g: Resource<CompiledGraph>,
        inputs: Vec<types::NamedTensor>,
    ) -> WResult<Vec<types::NamedTensor>> {
        let cg = self.table.get(&g)?;
        let (graph, exe) = (cg.graph.clone(), cg.exe.clone());
        if !graph.states.is_empty() {
            return Ok(Err(WitError::Graph(format!(
                "graph `{}` has state; run it in a runtime.session",
                graph.name
            ))));
        }
        let inputs = inputs
            .into_iter()
            .map(|n| (n.name, tensor_in(n.value)))
            .collect();
        let _run = self.run_span(&graph.name).entered();
        let result = check_inputs(&graph, inputs).and_then(|(ordered, _)| exe.run(ordered));
        Ok(result.map(named_out).map_err(backend_error))
    }

    fn input_names(&mut self, g: Resource<CompiledGraph>) -> wasmtime::Result<Vec<String>> {
        let cg = self.table.get(&g)?;
        Ok(cg
            .graph
            .inputs
            .iter()
            .map(|&i| cg.graph.input_name(i).to_string())
            .collect())
    }

    fn output_names(&mut self, g: Resource<CompiledGraph>) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .table
            .get(&g)?
            .graph
            .outputs
            .iter()
            .map(|(n, _)| n.clone())
            .collect())
    }

    fn drop(&mut self, g: Resource<CompiledGraph>) -> wasmtime::Result<()> {
        self.table.delete(g)?;
        Ok(())
    }
}
