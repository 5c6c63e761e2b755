//! Lowering of graph nodes to plan steps for concrete shapes (see
//! [`super::plan`]). One function per op family; the GEMM layout analysis
//! lives in [`super::gemm`].

use std::collections::HashMap;

use super::gemm;
use super::plan::*;
use crate::backend::Precision;
use crate::ir::shape::{eval_shape, Bindings};
use crate::ir::{DType, Graph, NodeId, Op, ReduceOp};

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

const BLOCK: u32 = 256;
/// Largest k of the top-k kernels (their merge buffer in shared memory).
const TOP_K_MAX: usize = 128;
/// Longest row slice one top-k block stages in shared memory.
const TOP_K_SLICE: usize = 1024;

fn elementwise_grid(n: usize) -> u32 {
    (n.div_ceil(BLOCK as usize)).clamp(1, 1 << 16) as u32
}

fn rows_grid(rows: usize) -> u32 {
    rows.clamp(1, 1 << 16) as u32
}

/// Builds a [`Plan`] for one graph and one set of bindings.
pub struct Planner<'g> {
    g: &'g Graph,
    precision: Precision,
    vals: Vec<Option<Val>>,
    buffers: Vec<BufferLife>,
    steps: Vec<Step>,
    node: NodeId,
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
        let mut p = Planner {
            g,
            precision,
            vals: vec![None; g.nodes.len()],
            buffers: Vec::new(),
            steps: Vec::new(),
            node: 0,
        };
        let flag = p.alloc(4);
        let mut uploads = Vec::new();
        for (pos, &id) in g.inputs.iter().enumerate() {
            let node = g.node(id);
            let shape = p.shape_of(id, bindings)?;
            let dtype = storage(node.dtype, precision);
            let v = p.fresh(dtype, shape);
            uploads.push(Upload {
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
            uploads,
            downloads,
            offsets,
            arena_bytes,
            error_flag: flag,
        })
    }

    fn err(&self, message: impl Into<String>) -> PlanError {
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

    fn val(&self, id: NodeId) -> Result<Val, PlanError> {
        self.vals
            .get(id as usize)
            .and_then(|v| v.clone())
            .ok_or_else(|| self.err(format!("operand {id} has no value")))
    }

    /// A fresh contiguous arena value, written by the next step.
    fn fresh(&mut self, dtype: DType, shape: Vec<usize>) -> Val {
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
    fn use_val(&mut self, v: &Val) {
        if let Buf::Arena(i) = v.at.buf {
            let now = self.steps.len();
            self.buffers[i].last = self.buffers[i].last.max(now);
        }
    }

    fn kernel(&mut self, name: String, grid: u32, block: u32, shared: u32, args: Vec<Arg>) {
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
    fn copy_into(&mut self, src: &Val, dst: &Ref, dst_strides: &[i64]) -> Result<(), PlanError> {
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
                let x = self.val(*x)?;
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
                let name = format!("binary_{}", suffix(dt));
                self.strided2(name, Some(*op as i32), *a, *b, dt, shape)
            }
            Op::Compare(op, a, b) => {
                let src = storage(self.g.node(*a).dtype, self.precision);
                let name = format!("compare_{}", suffix(src));
                self.strided2(name, Some(*op as i32), *a, *b, DType::Bool, shape)
            }
            Op::And(a, b) => self.strided2("and_bool".into(), None, *a, *b, DType::Bool, shape),
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
                let (x, w) = (self.val(*x)?, self.val(*weight)?);
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
            } => {
                let x = self.val(*x)?;
                let x = self.contiguous(x)?;
                let s = self.val(*scale)?;
                let s = self.contiguous(s)?;
                let b = match bias {
                    Some(b) => {
                        let v = self.val(*b)?;
                        Some(self.contiguous(v)?)
                    }
                    None => None,
                };
                let width = *shape.last().unwrap_or(&1);
                let rows = n / width.max(1);
                let y = self.fresh(dt, shape);
                if n > 0 {
                    self.use_val(&x);
                    self.use_val(&s);
                    if let Some(b) = &b {
                        self.use_val(b);
                    }
                    self.kernel(
                        format!("layer_norm_{}", suffix(dt)),
                        rows_grid(rows),
                        row_block(width),
                        0,
                        vec![
                            Arg::I64(rows as i64),
                            Arg::I32(width as i32),
                            Arg::Ptr(x.at),
                            Arg::Ptr(s.at),
                            b.map(|b| Arg::Ptr(b.at)).unwrap_or(Arg::Null),
                            Arg::F32(f32::from_bits(*eps_bits)),
                            Arg::Ptr(y.at),
                        ],
                    );
                }
                Ok(y)
            }
            Op::RmsNorm { x, scale, eps_bits } => {
                let x = self.val(*x)?;
                let x = self.contiguous(x)?;
                let s = self.val(*scale)?;
                let s = self.contiguous(s)?;
                let width = *shape.last().unwrap_or(&1);
                let rows = n / width.max(1);
                let y = self.fresh(dt, shape);
                if n > 0 {
                    self.use_val(&x);
                    self.use_val(&s);
                    self.kernel(
                        format!("rms_norm_{}", suffix(dt)),
                        rows_grid(rows),
                        row_block(width),
                        0,
                        vec![
                            Arg::I64(rows as i64),
                            Arg::I32(width as i32),
                            Arg::Ptr(x.at),
                            Arg::Ptr(s.at),
                            Arg::F32(f32::from_bits(*eps_bits)),
                            Arg::Ptr(y.at),
                        ],
                    );
                }
                Ok(y)
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
            Op::Reshape { x, .. } => {
                let x = self.val(*x)?;
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
                let mut at = 0usize;
                for &piece in xs {
                    let v = self.val(piece)?;
                    let dst = Ref {
                        buf: y.at.buf,
                        offset: y.at.offset + at * y.strides[*axis] as usize * dt.size(),
                    };
                    self.copy_into(&v, &dst, &y.strides)?;
                    at += v.shape[*axis];
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
                        256,
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

    /// Two broadcast operands, one contiguous output.
    fn strided2(
        &mut self,
        name: String,
        op: Option<i32>,
        a: NodeId,
        b: NodeId,
        out: DType,
        shape: Vec<usize>,
    ) -> Result<Val, PlanError> {
        let (a, b) = (self.val(a)?, self.val(b)?);
        let y = self.fresh(out, shape.clone());
        let n = y.numel();
        if n > 0 {
            let (sa, sb) = (a.broadcast_strides(&shape), b.broadcast_strides(&shape));
            let p = index_param(&shape, [&sa, &sb, &y.strides])
                .ok_or_else(|| self.err("more than 8 non-mergeable axes"))?;
            self.use_val(&a);
            self.use_val(&b);
            let mut args: Vec<Arg> = op.map(Arg::I32).into_iter().collect();
            args.extend([
                Arg::Idx(Box::new(p)),
                Arg::Ptr(a.at),
                Arg::Ptr(b.at),
                Arg::Ptr(y.at),
            ]);
            self.kernel(name, elementwise_grid(n), BLOCK, 0, args);
        }
        Ok(y)
    }

    fn along_axis(
        &mut self,
        kernel: &str,
        x: NodeId,
        axis: usize,
        eps: Option<f32>,
        dt: DType,
        shape: Vec<usize>,
    ) -> Result<Val, PlanError> {
        let x = self.val(x)?;
        let x = self.contiguous(x)?;
        let (outer, len, inner) = split3(&x.shape, axis);
        let y = self.fresh(dt, shape);
        if y.numel() > 0 {
            self.use_val(&x);
            let mut args = vec![
                Arg::I64(outer as i64),
                Arg::I32(len as i32),
                Arg::I64(inner as i64),
            ];
            args.extend(eps.map(Arg::F32));
            args.extend([Arg::Ptr(x.at), Arg::Ptr(y.at)]);
            self.kernel(
                format!("{kernel}_{}", suffix(dt)),
                rows_grid(outer * inner),
                row_block(len),
                0,
                args,
            );
        }
        Ok(y)
    }

    fn reduce(
        &mut self,
        op: ReduceOp,
        x: NodeId,
        axes: &[usize],
        dt: DType,
        shape: Vec<usize>,
    ) -> Result<Val, PlanError> {
        let x = self.val(x)?;
        // Move the reduced axes last (a free view), then make it dense.
        let mut perm: Vec<usize> = (0..x.shape.len()).filter(|a| !axes.contains(a)).collect();
        perm.extend(axes.iter().copied());
        let moved = Val {
            at: x.at,
            dtype: x.dtype,
            shape: perm.iter().map(|&p| x.shape[p]).collect(),
            strides: perm.iter().map(|&p| x.strides[p]).collect(),
        };
        let moved = self.contiguous(moved)?;
        let len: usize = axes.iter().map(|&a| x.shape[a]).product();
        let rows = moved.numel() / len.max(1);
        let y = self.fresh(dt, shape);
        if y.numel() > 0 {
            if len == 0 {
                return Err(self.err("reducing an empty axis"));
            }
            self.use_val(&moved);
            let grid = if dt.is_float() {
                rows_grid(rows)
            } else {
                elementwise_grid(rows)
            };
            self.kernel(
                format!("reduce_{}", suffix(dt)),
                grid,
                if dt.is_float() { row_block(len) } else { BLOCK },
                0,
                vec![
                    Arg::I32(op as i32),
                    Arg::I64(rows as i64),
                    Arg::I64(len as i64),
                    Arg::Ptr(moved.at),
                    Arg::Ptr(y.at),
                ],
            );
        }
        Ok(y)
    }

    fn gather(
        &mut self,
        x: NodeId,
        indices: NodeId,
        axis: usize,
        dt: DType,
        shape: Vec<usize>,
    ) -> Result<Val, PlanError> {
        let (x, idx) = (self.val(x)?, self.val(indices)?);
        let x = self.contiguous(x)?;
        let idx = self.contiguous(idx)?;
        let (outer, axis_len, inner) = split3(&x.shape, axis);
        let y = self.fresh(dt, shape);
        let n = y.numel();
        if n > 0 {
            let flag = Ref {
                buf: Buf::Arena(0),
                offset: 0,
            };
            self.use_val(&x);
            self.use_val(&idx);
            self.kernel(
                format!("gather_{}_{}", dt.size(), suffix(idx.dtype)),
                elementwise_grid(n),
                BLOCK,
                0,
                vec![
                    Arg::I64(outer as i64),
                    Arg::I64(idx.numel() as i64),
                    Arg::I64(axis_len as i64),
                    Arg::I64(inner as i64),
                    Arg::Ptr(x.at),
                    Arg::Ptr(idx.at),
                    Arg::Ptr(y.at),
                    Arg::Ptr(flag),
                ],
            );
        }
        Ok(y)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        q: Val,
        k: Val,
        v: Val,
        mask: Option<Val>,
        causal: bool,
        scale: f32,
        shape: Vec<usize>,
    ) -> Result<Val, PlanError> {
        let dt = q.dtype;
        let (b, h, sq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
        let (kvh, sk, dv) = (k.shape[1], k.shape[2], v.shape[3]);
        let y = self.fresh(dt, shape);
        if y.numel() == 0 {
            return Ok(y);
        }
        let shared = (sk + d) * 4;
        if shared > 200 * 1024 {
            return Err(self.err(format!(
                "{sk} keys of head_dim {d} exceed the fused kernel's shared memory"
            )));
        }
        let four = |s: &[i64]| -> [i64; 4] { [s[0], s[1], s[2], s[3]] };
        let (mask_kind, ms, mref) = match &mask {
            None => (0, [0; 4], Arg::Null),
            Some(m) => {
                let s = m.broadcast_strides(&[b, h, sq, sk]);
                let kind = if m.dtype == DType::Bool { 2 } else { 1 };
                (kind, four(&s), Arg::Ptr(m.at))
            }
        };
        let p = AttnParam {
            b: b as i32,
            h: h as i32,
            kvh: kvh.max(1) as i32,
            sq: sq as i32,
            sk: sk as i32,
            d: d as i32,
            dv: dv as i32,
            causal: causal as i32,
            mask_kind,
            scale,
            qs: four(&q.strides),
            ks: four(&k.strides),
            vs: four(&v.strides),
            ms,
        };
        for val in [Some(&q), Some(&k), Some(&v), mask.as_ref()]
            .into_iter()
            .flatten()
        {
            self.use_val(val);
        }
        self.kernel(
            format!("attention_{}", suffix(dt)),
            rows_grid(b * h * sq),
            128,
            shared as u32,
            vec![
                Arg::Attn(Box::new(p)),
                Arg::Ptr(q.at),
                Arg::Ptr(k.at),
                Arg::Ptr(v.at),
                mref,
                Arg::Ptr(y.at),
            ],
        );
        Ok(y)
    }

    /// `a [.., m, k] @ b [.., k, n]` into a fresh dense `[.., m, n]`.
    fn matmul(&mut self, a: Val, b: Val, shape: Vec<usize>) -> Result<Val, PlanError> {
        let y = self.fresh(a.dtype, shape);
        if y.numel() == 0 {
            return Ok(y);
        }
        let step = match gemm::plan_gemm(&a, &b, &y) {
            Some(s) => s,
            None => {
                // Layout cuBLAS cannot walk: densify both operands over the
                // full batch shape, which always fits one strided batch.
                let rank = y.shape.len();
                let full = |v: &Val, last2: [usize; 2]| {
                    let mut s = y.shape[..rank - 2].to_vec();
                    s.extend(last2);
                    Val {
                        at: v.at,
                        dtype: v.dtype,
                        strides: v.broadcast_strides(&s),
                        shape: s,
                    }
                };
                let ra = a.shape.len();
                let rb = b.shape.len();
                let ea = full(&a, [a.shape[ra - 2], a.shape[ra - 1]]);
                let eb = full(&b, [b.shape[rb - 2], b.shape[rb - 1]]);
                let da = self.contiguous(ea)?;
                let db = self.contiguous(eb)?;
                gemm::plan_gemm(&da, &db, &y)
                    .ok_or_else(|| self.err("no cuBLAS layout for dense operands"))?
            }
        };
        for r in [&step.a, &step.b] {
            if let Buf::Arena(i) = r.buf {
                let now = self.steps.len();
                self.buffers[i].last = self.buffers[i].last.max(now);
            }
        }
        self.steps.push(Step::Gemm(step));
        Ok(y)
    }
}

/// (outer, len, inner) of `shape` around `axis`.
pub fn split3(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let len = shape.get(axis).copied().unwrap_or(1);
    let inner = shape[axis + 1..].iter().product();
    (outer, len, inner)
}

/// Threads per block for kernels that reduce a row of `width`.
fn row_block(width: usize) -> u32 {
    match width {
        0..=128 => 64,
        129..=1024 => 128,
        _ => 256,
    }
}
