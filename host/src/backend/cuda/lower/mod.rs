//! Lowering of graph nodes to plan steps for concrete shapes (see
//! [`super::plan`]): the [`Planner`] (values, buffers and their lifetimes,
//! steps) here, the per-node dispatch in `nodes.rs`, one module per op
//! family beside it, and the peepholes that merge steps in `fused.rs`,
//! `rows.rs` and `gemv.rs`. The GEMM layout analysis lives in
//! [`super::gemm`].

mod conv;
mod fused;
mod gemv;
mod grid;
mod nodes;
mod ops;
mod rows;
#[cfg(test)]
mod snapshot_graphs;
#[cfg(test)]
mod snapshot_tests;

use std::collections::HashMap;

use super::launch::{CopySpan, Launch};
use super::plan::*;
use crate::backend::Precision;
use crate::ir::shape::{eval_shape, Bindings};
use crate::ir::{DType, Graph, NodeId, Op};
use grid::{elementwise_grid, BLOCK};

/// Why a graph cannot be planned for these shapes.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("node {node} ({op}): {message}")]
    Node {
        node: NodeId,
        op: &'static str,
        message: String,
    },
    #[error(transparent)]
    Graph(#[from] crate::ir::GraphError),
}

/// The dtype a value of graph dtype `dt` has on the device.
pub fn storage(dt: DType, precision: Precision) -> DType {
    match (dt.is_float(), precision) {
        (true, Precision::F16) => DType::F16,
        (true, Precision::BF16) => DType::BF16,
        _ => dt,
    }
}

/// Builds a [`Plan`] for one graph and one set of bindings.
pub struct Planner<'g> {
    pub(super) g: &'g Graph,
    precision: Precision,
    pub(super) vals: Vec<Option<Val>>,
    pub(super) buffers: Vec<BufferLife>,
    pub(super) steps: Vec<Step>,
    node: NodeId,
    pub(super) uploads: Vec<Upload>,
    /// Index in `uploads` of each input node.
    pub(super) upload_of: HashMap<NodeId, usize>,
    /// How many times each node is read (operands and graph outputs).
    pub(super) uses: Vec<u32>,
    /// Input positions bound as [`Buf::External`] so far.
    pub(super) externals: Vec<usize>,
}

impl<'g> Planner<'g> {
    /// Plans `g` under `bindings`. `persistent` maps weight and constant
    /// nodes to their uploaded buffers.
    pub fn plan(
        g: &'g Graph,
        precision: Precision,
        bindings: &Bindings,
        persistent: &HashMap<NodeId, usize>,
    ) -> Result<Plan, PlanError> {
        Self::plan_resident(g, precision, bindings, persistent, &[])
    }

    /// [`Planner::plan`] for a run given the inputs at positions `resident`
    /// as device tensors: states among them that a `write-rows` updates are
    /// read and written where they lie (`rows.rs`).
    pub fn plan_resident(
        g: &'g Graph,
        precision: Precision,
        bindings: &Bindings,
        persistent: &HashMap<NodeId, usize>,
        resident: &[usize],
    ) -> Result<Plan, PlanError> {
        let mut uses = vec![0u32; g.nodes.len()];
        for x in g.nodes.iter().flat_map(|n| n.op.operands()) {
            if let Some(u) = uses.get_mut(x as usize) {
                *u += 1;
            }
        }
        for (_, id) in &g.outputs {
            if let Some(u) = uses.get_mut(*id as usize) {
                *u += 1;
            }
        }
        let mut p = Planner {
            g,
            precision,
            vals: vec![None; g.nodes.len()],
            buffers: Vec::new(),
            steps: Vec::new(),
            node: 0,
            uploads: Vec::new(),
            upload_of: HashMap::new(),
            uses,
            externals: Vec::new(),
        };
        let flag = p.alloc(4);
        for (pos, &id) in g.inputs.iter().enumerate() {
            let node = g.node(id);
            let shape = p.shape_of(id, bindings)?;
            let dtype = storage(node.dtype, precision);
            if resident.contains(&pos) && p.writable_in_place(id) {
                let at = Ref {
                    buf: Buf::External(p.externals.len()),
                    offset: 0,
                };
                p.externals.push(pos);
                p.vals[id as usize] = Some(Val {
                    at,
                    dtype,
                    strides: contiguous_strides(&shape),
                    shape,
                });
                continue;
            }
            let v = p.fresh(dtype, shape);
            p.upload_of.insert(id, p.uploads.len());
            p.uploads.push(Upload {
                input: pos,
                at: v.at,
                dtype,
            });
            p.vals[id as usize] = Some(v);
        }
        for id in 0..g.nodes.len() as NodeId {
            p.node = id;
            if p.vals[id as usize].is_some() {
                continue;
            }
            let node = g.node(id);
            let stored = matches!(node.op, Op::Weight { .. } | Op::Constant(_));
            if stored && !persistent.contains_key(&id) {
                // Read only by a concat folded at compile time.
                continue;
            }
            let shape = p.shape_of(id, bindings)?;
            if let Some(&idx) = persistent.get(&id) {
                let dtype = storage(g.node(id).dtype, precision);
                p.vals[id as usize] = Some(Val {
                    at: Ref {
                        buf: Buf::Persistent(idx),
                        offset: 0,
                    },
                    dtype,
                    strides: contiguous_strides(&shape),
                    shape,
                });
                continue;
            }
            let v = p.lower(id, shape)?;
            p.vals[id as usize] = Some(v);
        }
        let mut downloads = Vec::new();
        for (name, id) in &g.outputs {
            let v = p.val(*id)?;
            let v = p.contiguous(v)?;
            p.use_val(&v);
            downloads.push(Download {
                name: name.clone(),
                in_place: p.state_in_place(name, &v),
                at: v.at,
                shape: v.shape.clone(),
                device_dtype: v.dtype,
                dtype: g.node(*id).dtype,
            });
        }
        let end = p.steps.len() + 1;
        for d in &downloads {
            if let Buf::Arena(i) = d.at.buf {
                p.buffers[i].last = end;
            }
        }
        p.buffers[0].last = end;
        let (offsets, arena_bytes) = assign_offsets(&p.buffers);
        Ok(Plan {
            steps: p.steps,
            uploads: p.uploads,
            downloads,
            offsets,
            arena_bytes,
            error_flag: flag,
            externals: p.externals,
        })
    }

    pub(super) fn err(&self, message: impl Into<String>) -> PlanError {
        PlanError::Node {
            node: self.node,
            op: self.g.node(self.node).op.kind(),
            message: message.into(),
        }
    }

    fn shape_of(&self, id: NodeId, b: &Bindings) -> Result<Vec<usize>, PlanError> {
        Ok(eval_shape(&self.g.node(id).shape, b)?
            .into_iter()
            .map(|d| d as usize)
            .collect())
    }

    pub(super) fn val(&self, id: NodeId) -> Result<Val, PlanError> {
        self.vals
            .get(id as usize)
            .and_then(|v| v.clone())
            .ok_or_else(|| self.err(format!("operand {id} has no value")))
    }

    /// A fresh contiguous arena value, written by the next step.
    pub(super) fn fresh(&mut self, dtype: DType, shape: Vec<usize>) -> Val {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        let at = self.alloc(bytes);
        Val {
            at,
            dtype,
            strides: contiguous_strides(&shape),
            shape,
        }
    }

    fn alloc(&mut self, bytes: usize) -> Ref {
        let now = self.steps.len();
        self.buffers.push(BufferLife {
            bytes,
            first: now,
            last: now,
        });
        Ref {
            buf: Buf::Arena(self.buffers.len() - 1),
            offset: 0,
        }
    }

    /// Marks `v` as read by the next step.
    pub(super) fn use_val(&mut self, v: &Val) {
        if let Buf::Arena(i) = v.at.buf {
            let now = self.steps.len();
            self.buffers[i].last = self.buffers[i].last.max(now);
        }
    }

    /// Appends a kernel launch.
    pub(super) fn kernel(&mut self, launch: Launch, grid: u32, block: u32, shared: u32) {
        self.steps.push(Step::Kernel {
            launch,
            grid,
            block,
            shared,
        });
    }

    /// `v` itself when dense, else a dense copy.
    pub(super) fn contiguous(&mut self, v: Val) -> Result<Val, PlanError> {
        if v.is_contiguous() {
            return Ok(v);
        }
        let out = self.fresh(v.dtype, v.shape.clone());
        self.copy_into(&v, &out.at, &out.strides)?;
        Ok(out)
    }

    /// Copies the view `src` element-wise to `dst` laid out by `dst_strides`.
    pub(super) fn copy_into(
        &mut self,
        src: &Val,
        dst: &Ref,
        dst_strides: &[i64],
    ) -> Result<(), PlanError> {
        let n = src.numel();
        if n == 0 {
            return Ok(());
        }
        let zeros = vec![0i64; src.shape.len()];
        let p = index_param(&src.shape, [&src.strides, dst_strides, &zeros])
            .ok_or_else(|| self.err("more than 8 non-mergeable axes"))?;
        self.use_val(src);
        let span = CopySpan {
            idx: Box::new(p),
            x: src.at,
            y: *dst,
        };
        let size = src.dtype.size();
        self.kernel(Launch::Copy { size, span }, elementwise_grid(n), BLOCK, 0);
        self.merge_copy();
        Ok(())
    }
}
