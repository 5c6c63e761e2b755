//! Lowering of graph nodes to plan steps for concrete shapes (see
//! [`super::plan`]). One function per op family; the GEMM layout analysis
//! lives in [`super::gemm`].

use std::collections::HashMap;

use super::lower_ops::split3;
use super::plan::*;
use crate::backend::Precision;
use crate::ir::shape::{eval_shape, Bindings};
use crate::ir::{DType, Graph, NodeId, Op};

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

/// Kernel-name suffix of a dtype (bool kernels read bytes as u8).
pub fn suffix(dt: DType) -> &'static str {
    match dt {
        DType::Bool => "u8",
        other => other.name(),
    }
}

pub(super) const BLOCK: u32 = 256;
/// Largest k of the top-k kernels (their merge buffer in shared memory).
const TOP_K_MAX: usize = 128;
/// Longest row slice one top-k block stages in shared memory.
const TOP_K_SLICE: usize = 1024;

pub(super) fn elementwise_grid(n: usize) -> u32 {
    (n.div_ceil(BLOCK as usize)).clamp(1, 1 << 16) as u32
}

pub(super) fn rows_grid(rows: usize) -> u32 {
    rows.clamp(1, 1 << 16) as u32
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
    /// read and written where they lie (`lower_rows.rs`).
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

    pub(super) fn kernel(
        &mut self,
        name: String,
        grid: u32,
        block: u32,
        shared: u32,
        args: Vec<Arg>,
    ) {
        self.steps.push(Step::Kernel {
            name,
            grid,
            block,
            shared,
            args,
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
        self.kernel(
            format!("copy_{}", src.dtype.size()),
            elementwise_grid(n),
            BLOCK,
            0,
            vec![Arg::Idx(Box::new(p)), Arg::Ptr(src.at), Arg::Ptr(*dst)],
        );
        self.merge_copy();
        Ok(())
    }

    fn lower(&mut self, id: NodeId, shape: Vec<usize>) -> Result<Val, PlanError> {
        let node = self.g.node(id).clone();
        let dt = storage(node.dtype, self.precision);
        let n: usize = shape.iter().product();
        match &node.op {
            Op::Input { .. } | Op::State { .. } | Op::Weight { .. } | Op::Constant(_) => {
                Err(self.err("has no uploaded value"))
            }
            Op::Unary(op, x) => {
                if let Some(y) = self.unary_epilogue(*op, *x, &shape)? {
                    return Ok(y);
                }
                let x = self.val(*x)?;
                let float = matches!(dt, DType::F32 | DType::F16 | DType::BF16);
                if float && !x.is_contiguous() {
                    // Strided float operands (a gate slice) are read in place.
                    return self.strided_unary(*op, x, shape);
                }
                let x = self.contiguous(x)?;
                let y = self.fresh(dt, shape);
                if n > 0 {
                    self.use_val(&x);
                    let (name, mut args) = if *op == crate::ir::UnaryOp::Not {
                        ("not_bool".to_string(), vec![])
                    } else {
                        (format!("unary_{}", suffix(dt)), vec![Arg::I32(*op as i32)])
                    };
                    args.extend([Arg::I64(n as i64), Arg::Ptr(x.at), Arg::Ptr(y.at)]);
                    self.kernel(name, elementwise_grid(n), BLOCK, 0, args);
                }
                Ok(y)
            }
            Op::Binary(op, a, b) => {
                if let Some(y) = self.gemv_glu(*op, *a, *b, &shape)? {
                    return Ok(y);
                }
                if let Some(y) = self.unary_then_binary(*op, *a, *b, &shape)? {
                    return Ok(y);
                }
                let name = format!("binary_{}", suffix(dt));
                self.strided2(name, Some(*op as i32), *a, *b, dt, shape)
            }
            Op::Compare(op, a, b) => {
                let src = storage(self.g.node(*a).dtype, self.precision);
                let name = format!("compare_{}", suffix(src));
                self.strided2(name, Some(*op as i32), *a, *b, DType::Bool, shape)
            }
            Op::And(a, b) => self.strided2("and_bool".into(), None, *a, *b, DType::Bool, shape),
            Op::Rotary {
                x,
                cos,
                sin,
                interleaved,
            } => self.rotary(*x, *cos, *sin, *interleaved, shape),
            Op::Select { cond, a, b } => {
                let (c, a, b) = (self.val(*cond)?, self.val(*a)?, self.val(*b)?);
                let y = self.fresh(dt, shape.clone());
                if n > 0 {
                    let (sc, sa, sb) = (
                        c.broadcast_strides(&shape),
                        a.broadcast_strides(&shape),
                        b.broadcast_strides(&shape),
                    );
                    let p = index_param(&shape, [&sc, &sa, &sb])
                        .ok_or_else(|| self.err("more than 8 non-mergeable axes"))?;
                    for v in [&c, &a, &b] {
                        self.use_val(v);
                    }
                    self.kernel(
                        format!("select_{}", dt.size()),
                        elementwise_grid(n),
                        BLOCK,
                        0,
                        vec![
                            Arg::Idx(Box::new(p)),
                            Arg::Ptr(c.at),
                            Arg::Ptr(a.at),
                            Arg::Ptr(b.at),
                            Arg::Ptr(y.at),
                        ],
                    );
                }
                Ok(y)
            }
            Op::Cast(x, _) => {
                let x = self.val(*x)?;
                if x.dtype == dt {
                    return Ok(x);
                }
                let x = self.contiguous(x)?;
                let y = self.fresh(dt, shape);
                if n > 0 {
                    self.use_val(&x);
                    let to = if dt == DType::Bool { "bool" } else { dt.name() };
                    self.kernel(
                        format!("cast_{}_{}", suffix(x.dtype), to),
                        elementwise_grid(n),
                        BLOCK,
                        0,
                        vec![Arg::I64(n as i64), Arg::Ptr(x.at), Arg::Ptr(y.at)],
                    );
                }
                Ok(y)
            }
            Op::MatMul(a, b) => {
                let (a, b) = (self.val(*a)?, self.val(*b)?);
                self.matmul(a, b, shape)
            }
            Op::Linear { x, weight, bias } => {
                let x_id = *x;
                let (x, w) = (self.val(*x)?, self.val(*weight)?);
                let b = bias.map(|b| self.val(b)).transpose()?;
                if let Some(y) = self.gemv(x_id, &x, &w, b.as_ref(), &shape) {
                    return Ok(y);
                }
                // x @ W^T: the transpose is a free view.
                let wt = Val {
                    at: w.at,
                    dtype: w.dtype,
                    shape: vec![w.shape[1], w.shape[0]],
                    strides: vec![w.strides[1], w.strides[0]],
                };
                let y = self.matmul(x, wt, shape)?;
                if let Some(b) = bias {
                    let b = self.val(*b)?;
                    let b = self.contiguous(b)?;
                    let cols = *y.shape.last().unwrap_or(&1);
                    if n > 0 {
                        self.use_val(&b);
                        self.use_val(&y);
                        self.kernel(
                            format!("bias_add_{}", suffix(dt)),
                            elementwise_grid(n),
                            BLOCK,
                            0,
                            vec![
                                Arg::I64((n / cols.max(1)) as i64),
                                Arg::I64(cols as i64),
                                Arg::Ptr(y.at),
                                Arg::Ptr(b.at),
                                Arg::I32(-1),
                            ],
                        );
                    }
                }
                Ok(y)
            }
            Op::LayerNorm {
                x,
                scale,
                bias,
                eps_bits,
            } => self.norm("layer_norm", *x, *scale, Some(*bias), *eps_bits, dt, shape),
            Op::RmsNorm { x, scale, eps_bits } => {
                self.norm("rms_norm", *x, *scale, None, *eps_bits, dt, shape)
            }
            Op::Softmax { x, axis } => self.along_axis("softmax", *x, *axis, None, dt, shape),
            Op::L2Normalize { x, axis, eps_bits } => self.along_axis(
                "l2_norm",
                *x,
                *axis,
                Some(f32::from_bits(*eps_bits)),
                dt,
                shape,
            ),
            Op::Attention {
                q,
                k,
                v,
                mask,
                causal,
                scale_bits,
            } => {
                let (q, k, v) = (self.val(*q)?, self.val(*k)?, self.val(*v)?);
                let mask = match mask {
                    Some(m) => Some(self.val(*m)?),
                    None => None,
                };
                self.attention(q, k, v, mask, *causal, f32::from_bits(*scale_bits), shape)
            }
            Op::Embedding { table, ids } => self.gather(*table, *ids, 0, dt, shape),
            Op::Gather { x, indices, axis } => self.gather(*x, *indices, *axis, dt, shape),
            Op::Conv {
                x,
                weight,
                bias,
                attrs,
            } => self.conv(*x, *weight, *bias, attrs, dt, shape),
            Op::WriteRows { x, update, start } => self.write_rows(*x, *update, *start),
            Op::Reshape { x, .. } => {
                let x = self.val(*x)?;
                if let Some(strides) = reshape_strides(&x.shape, &x.strides, &shape) {
                    return Ok(Val {
                        at: x.at,
                        dtype: x.dtype,
                        shape,
                        strides,
                    });
                }
                let x = self.contiguous(x)?;
                Ok(x.reshaped(shape))
            }
            Op::Permute { x, perm } => {
                let x = self.val(*x)?;
                Ok(Val {
                    at: x.at,
                    dtype: x.dtype,
                    shape: perm.iter().map(|&p| x.shape[p]).collect(),
                    strides: perm.iter().map(|&p| x.strides[p]).collect(),
                })
            }
            Op::Slice { x, axis, start, .. } => {
                let mut x = self.val(*x)?;
                let len = x.shape[*axis];
                let start = (*start as usize).min(len);
                let skip = start as i64 * x.strides[*axis];
                x.at.offset += (skip.max(0) as usize) * x.dtype.size();
                x.shape = shape;
                Ok(x)
            }
            Op::Concat { xs, axis } => {
                let y = self.fresh(dt, shape);
                // Pieces are whole slabs of y when no axis before `axis` is
                // longer than 1.
                let slabs = y.shape[..*axis].iter().all(|&d| d == 1);
                let mut at = 0usize;
                for &piece in xs {
                    let v = self.val(piece)?;
                    let dst = Ref {
                        buf: y.at.buf,
                        offset: y.at.offset + at * y.strides[*axis] as usize * dt.size(),
                    };
                    at += v.shape[*axis];
                    if slabs
                        && (self.upload_in_place(piece, &v, dst)
                            || self.write_in_place(piece, &v, dst))
                    {
                        continue;
                    }
                    self.copy_into(&v, &dst, &y.strides)?;
                }
                Ok(y)
            }
            Op::Unsqueeze { x, axis } => {
                let mut x = self.val(*x)?;
                x.shape.insert(*axis, 1);
                x.strides.insert(*axis, 0);
                Ok(x)
            }
            Op::Squeeze { x, axis } => {
                let mut x = self.val(*x)?;
                x.shape.remove(*axis);
                x.strides.remove(*axis);
                Ok(x)
            }
            Op::Expand { x, .. } => {
                let x = self.val(*x)?;
                Ok(Val {
                    at: x.at,
                    dtype: x.dtype,
                    strides: x.broadcast_strides(&shape),
                    shape,
                })
            }
            Op::Reduce { op, x, axes, .. } => self.reduce(*op, *x, axes, dt, shape),
            Op::ArgMax { x, axis, .. } => {
                let x = self.val(*x)?;
                let x = self.contiguous(x)?;
                let (outer, len, inner) = split3(&x.shape, *axis);
                let y = self.fresh(DType::I64, shape);
                if n > 0 {
                    self.use_val(&x);
                    self.kernel(
                        format!("argmax_{}", suffix(x.dtype)),
                        rows_grid(outer * inner),
                        // Long rows (a vocabulary) get a block of 1024.
                        if len >= 4096 { 1024 } else { BLOCK },
                        0,
                        vec![
                            Arg::I64(outer as i64),
                            Arg::I64(len as i64),
                            Arg::I64(inner as i64),
                            Arg::Ptr(x.at),
                            Arg::Ptr(y.at),
                        ],
                    );
                }
                Ok(y)
            }
            Op::TopKValues { x, k } => {
                let x = self.val(*x)?;
                let x = self.contiguous(x)?;
                let len = *x.shape.last().unwrap_or(&1);
                let rows = x.numel() / len.max(1);
                let k = *k as usize;
                if k > TOP_K_MAX {
                    return Err(self.err(format!(
                        "k = {k}: the cuda top-k selects at most {TOP_K_MAX}"
                    )));
                }
                let vals = self.fresh(dt, shape.clone());
                let idx = self.fresh(DType::I64, shape);
                if n > 0 {
                    // Stage 1 over slices of at most TOP_K_SLICE, stage 2
                    // over the slices' candidates.
                    let chunks = len.div_ceil(TOP_K_SLICE).max(1);
                    let cand = rows * chunks * k;
                    let cv = self.fresh(DType::F32, vec![cand]);
                    self.use_val(&x);
                    let ci = self.fresh(DType::I64, vec![cand]);
                    self.kernel(
                        format!("top_k_partial_{}", suffix(x.dtype)),
                        rows_grid(rows * chunks),
                        256,
                        0,
                        vec![
                            Arg::I64(rows as i64),
                            Arg::I64(len as i64),
                            Arg::I32(k as i32),
                            Arg::I32(chunks as i32),
                            Arg::Ptr(x.at),
                            Arg::Ptr(cv.at),
                            Arg::Ptr(ci.at),
                        ],
                    );
                    self.use_val(&x);
                    self.use_val(&cv);
                    self.use_val(&ci);
                    self.kernel(
                        format!("top_k_merge_{}", suffix(x.dtype)),
                        rows_grid(rows),
                        256,
                        0,
                        vec![
                            Arg::I64(rows as i64),
                            Arg::I64((chunks * k) as i64),
                            Arg::I32(k as i32),
                            Arg::Ptr(cv.at),
                            Arg::Ptr(ci.at),
                            Arg::Ptr(x.at),
                            Arg::I64(len as i64),
                            Arg::Ptr(vals.at),
                            Arg::Ptr(idx.at),
                        ],
                    );
                }
                // The builder puts the indices node right after the values.
                if let Some(slot) = self.vals.get_mut(id as usize + 1) {
                    *slot = Some(idx);
                }
                Ok(vals)
            }
            Op::TopKIndices { .. } => Err(self.err("indices without a top-k values node")),
        }
    }
}
