//! The per-node dispatch of the [`Planner`]: views, element-wise ops,
//! casts, linears, norms, attention, gathers, concats, reductions,
//! arg-max and top-k, each to its family's lowering.

use super::grid::{elementwise_grid, rows_grid, split3, BLOCK};
use super::{storage, PlanError, Planner};
use crate::backend::cuda::launch::{BinaryCode, CompareCode, Launch, UnaryCode};
use crate::backend::cuda::plan::*;
use crate::ir::{DType, NodeId, Op};

/// Largest k of the top-k kernels (their merge buffer in shared memory).
const TOP_K_MAX: usize = 128;
/// Longest row slice one top-k block stages in shared memory.
const TOP_K_SLICE: usize = 1024;

impl Planner<'_> {
    pub(super) fn lower(&mut self, id: NodeId, shape: Vec<usize>) -> Result<Val, PlanError> {
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
                    let (n64, x, y) = (n as i64, x.at, y.at);
                    let launch = match UnaryCode::of(*op) {
                        None => Launch::NotBool { n: n64, x, y },
                        Some(op) => Launch::Unary {
                            dt,
                            op,
                            n: n64,
                            x,
                            y,
                        },
                    };
                    self.kernel(launch, elementwise_grid(n), BLOCK, 0);
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
                let op = BinaryCode::from(*op);
                self.strided2(*a, *b, dt, shape, |idx, a, b, y| Launch::Binary {
                    dt,
                    op,
                    idx,
                    a,
                    b,
                    y,
                })
            }
            Op::Compare(op, a, b) => {
                let src = storage(self.g.node(*a).dtype, self.precision);
                let op = CompareCode::from(*op);
                self.strided2(*a, *b, DType::Bool, shape, |idx, a, b, y| Launch::Compare {
                    dt: src,
                    op,
                    idx,
                    a,
                    b,
                    y,
                })
            }
            Op::And(a, b) => self.strided2(*a, *b, DType::Bool, shape, |idx, a, b, y| {
                Launch::AndBool { idx, a, b, y }
            }),
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
                    let launch = Launch::Select {
                        size: dt.size(),
                        idx: Box::new(p),
                        cond: c.at,
                        a: a.at,
                        b: b.at,
                        y: y.at,
                    };
                    self.kernel(launch, elementwise_grid(n), BLOCK, 0);
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
                    let launch = Launch::Cast {
                        from: x.dtype,
                        to: dt,
                        n: n as i64,
                        x: x.at,
                        y: y.at,
                    };
                    self.kernel(launch, elementwise_grid(n), BLOCK, 0);
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
                        let launch = Launch::BiasAdd {
                            dt,
                            rows: (n / cols.max(1)) as i64,
                            cols: cols as i64,
                            y: y.at,
                            bias: b.at,
                            act: None,
                        };
                        self.kernel(launch, elementwise_grid(n), BLOCK, 0);
                    }
                }
                Ok(y)
            }
            Op::LayerNorm {
                x,
                scale,
                bias,
                eps_bits,
            } => self.norm(*x, *scale, Some(*bias), *eps_bits, dt, shape),
            Op::RmsNorm { x, scale, eps_bits } => self.norm(*x, *scale, None, *eps_bits, dt, shape),
            Op::Softmax { x, axis } => self.along_axis(*x, *axis, None, dt, shape),
            Op::L2Normalize { x, axis, eps_bits } => {
                self.along_axis(*x, *axis, Some(f32::from_bits(*eps_bits)), dt, shape)
            }
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
                    let launch = Launch::ArgMax {
                        dt: x.dtype,
                        outer: outer as i64,
                        len: len as i64,
                        inner: inner as i64,
                        x: x.at,
                        y: y.at,
                    };
                    // Long rows (a vocabulary) get a block of 1024.
                    let block = if len >= 4096 { 1024 } else { BLOCK };
                    self.kernel(launch, rows_grid(outer * inner), block, 0);
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
                    let partial = Launch::TopKPartial {
                        dt: x.dtype,
                        rows: rows as i64,
                        len: len as i64,
                        k: k as i32,
                        chunks: chunks as i32,
                        x: x.at,
                        cand_values: cv.at,
                        cand_indices: ci.at,
                    };
                    self.kernel(partial, rows_grid(rows * chunks), 256, 0);
                    self.use_val(&x);
                    self.use_val(&cv);
                    self.use_val(&ci);
                    let merge = Launch::TopKMerge {
                        dt: x.dtype,
                        rows: rows as i64,
                        cands: (chunks * k) as i64,
                        k: k as i32,
                        cand_values: cv.at,
                        cand_indices: ci.at,
                        x: x.at,
                        len: len as i64,
                        values: vals.at,
                        indices: idx.at,
                    };
                    self.kernel(merge, rows_grid(rows), 256, 0);
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
