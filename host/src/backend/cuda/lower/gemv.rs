//! Matrix-vector products for decode (`gemv`): a linear of at most
//! [`GEMV_MAX_M`] rows, with the peepholes that fold into it the norm
//! before it (`gemv_norm`), the activation after it (its epilogue), and
//! SwiGLU over a fused gate/up projection (`gemv_glu`); up to
//! [`MMA_MAX_M`] rows of f16/bf16 on tensor cores (`gemv_mma`, bias and
//! activation folded in the same way).

use super::grid::BLOCK;
use super::{PlanError, Planner};
use crate::backend::cuda::launch::{BinaryCode, GemvKind, Launch, NormPrologue, UnaryCode};
use crate::backend::cuda::plan::*;
use crate::ir::{DType, NodeId};

/// Most rows the `gemv` kernel takes (GEMV_MAX_M in kernels/gemv.cu).
const GEMV_MAX_M: usize = 4;
/// Most rows the tensor-core `gemv_mma` kernel takes (one m16n8k16 tile).
const MMA_MAX_M: usize = 16;
/// Weights of this many elements or more stay with cuBLAS: on an H100 at
/// 16 rows `gemv_mma` streamed OPT-125m's products (0.6-2.4M elements) 9%
/// faster than cuBLAS but TinyLlama's (4.2-23M) 12% slower
/// (results/ab_cuda_decode_h100.md).
const MMA_MAX_WEIGHT: usize = 4 << 20;

impl Planner<'_> {
    /// `x @ w^T (+ bias)` as the `gemv` kernel when x has at most
    /// [`GEMV_MAX_M`] dense rows (`gemv_mma` up to [`MMA_MAX_M`]) and w is
    /// a dense [N, K] matrix whose rows are whole 16-byte words (decode
    /// steps); `None` leaves it to cuBLAS.
    /// A norm planned just before that only this product reads becomes the
    /// kernel's prologue (`gemv_norm`, see [`Planner::take_norm`]).
    pub(super) fn gemv(
        &mut self,
        x_id: NodeId,
        x: &Val,
        w: &Val,
        bias: Option<&Val>,
        shape: &[usize],
    ) -> Option<Val> {
        let dt = x.dtype;
        if !matches!(dt, DType::F32 | DType::F16 | DType::BF16) || w.shape.len() != 2 {
            return None;
        }
        let (n, k) = (w.shape[0], w.shape[1]);
        let rows = x.numel() / k.max(1);
        let dense_bias = bias.is_none_or(|b| b.is_contiguous() && b.numel() == n);
        let aligned = (k * dt.size()).is_multiple_of(16)
            && w.at.offset.is_multiple_of(16)
            && x.at.offset.is_multiple_of(16);
        if rows == 0
            || rows > MMA_MAX_M
            || !x.is_contiguous()
            || !w.is_contiguous()
            || !aligned
            || !dense_bias
            || n == 0
        {
            return None;
        }
        // 5-16 rows: tensor cores (`gemv_mma`, a block per 8 columns, its
        // warps splitting K in 32-element chunks) for f16/bf16, K a multiple
        // of 32 and weights under MMA_MAX_WEIGHT elements; else cuBLAS.
        let mma = rows > GEMV_MAX_M;
        let mma_fits = matches!(dt, DType::F16 | DType::BF16)
            && k.is_multiple_of(32)
            && n.saturating_mul(k) < MMA_MAX_WEIGHT;
        if mma && !mma_fits {
            return None;
        }
        let norm = match mma {
            true => None,
            false => self.take_norm(x_id, x, rows, k),
        };
        let y = self.fresh(dt, shape.to_vec());
        for v in [Some(x), Some(w), bias].into_iter().flatten() {
            self.use_val(v);
        }
        let (kind, xin, shared) = match norm {
            Some(p) => (
                GemvKind::Norm(Box::new(p)),
                None,
                (rows * k * dt.size()) as u32,
            ),
            None if mma => (GemvKind::Mma, Some(x.at), 0),
            None => (GemvKind::Plain, Some(x.at), 0),
        };
        // Output columns per block: a warp each (gemv), 8 (gemv_mma).
        let columns = if mma { 8 } else { (BLOCK / 32) as usize };
        let launch = Launch::Gemv {
            dt,
            kind,
            m: rows as i32,
            n: n as i32,
            k: k as i32,
            x: xin,
            w: w.at,
            bias: bias.map(|b| b.at),
            y: y.at,
            act: None,
        };
        let grid = n.div_ceil(columns).clamp(1, 1 << 30) as u32;
        self.kernel(launch, grid, BLOCK, shared);
        Some(y)
    }

    /// The norm kernel planned last, when it wrote exactly `x` (`rows` = 1
    /// row of `k`, at most BLOCK x 16 bytes) and only the product being
    /// planned reads it: removed, and returned as the `gemv_norm` prologue's
    /// arguments (rms, a, b, pre, sum, scale, bias, eps). Every block then
    /// computes the norm itself while its weights load, which saves the
    /// norm's launch at decode (one row; with more rows the repeated work
    /// costs more than it saves).
    fn take_norm(&mut self, x_id: NodeId, x: &Val, rows: usize, k: usize) -> Option<NormPrologue> {
        let dt = x.dtype;
        if rows != 1 || k * dt.size() > BLOCK as usize * 16 || !self.sole_reader(x_id) {
            return None;
        }
        let Some(Step::Kernel { launch, .. }) = self.steps.last() else {
            return None;
        };
        let one = |r: &i64, w: &i32| *r == 1 && *w as usize == k;
        let prologue = match launch {
            Launch::AddNorm {
                dt: d,
                rms,
                rows: r,
                width: w,
                a,
                b,
                sum,
                scale,
                bias,
                eps,
                y,
                pre,
            } if *d == dt && one(r, w) && *y == x.at => NormPrologue {
                rms: *rms,
                a: *a,
                b: Some(*b),
                pre: *pre,
                sum: Some(*sum),
                scale: *scale,
                bias: *bias,
                eps: *eps,
            },
            Launch::LayerNorm {
                dt: d,
                rows: r,
                width: w,
                x: a,
                scale,
                bias,
                eps,
                y,
            } if *d == dt && one(r, w) && *y == x.at => NormPrologue {
                rms: false,
                a: *a,
                b: None,
                pre: None,
                sum: None,
                scale: *scale,
                bias: *bias,
                eps: *eps,
            },
            Launch::RmsNorm {
                dt: d,
                rows: r,
                width: w,
                x: a,
                scale,
                eps,
                y,
            } if *d == dt && one(r, w) && *y == x.at => NormPrologue {
                rms: true,
                a: *a,
                b: None,
                pre: None,
                sum: None,
                scale: *scale,
                bias: None,
                eps: *eps,
            },
            _ => return None,
        };
        // The prologue reads and writes 16 bytes at a time.
        let refs = [Some(prologue.a), prologue.b, prologue.pre, prologue.sum]
            .into_iter()
            .chain([Some(prologue.scale), prologue.bias]);
        if !refs.flatten().all(|r| r.offset.is_multiple_of(16)) {
            return None;
        }
        self.steps.pop();
        Some(prologue)
    }

    /// A float unary `op` applied to `x` becomes the epilogue of the `gemv`
    /// or `bias_add` just planned when that wrote all of `x` and nothing else
    /// reads it (OPT's `relu(fc1(h))`, BERT's `gelu(intermediate)`); the
    /// result takes `x`'s buffer.
    pub(super) fn unary_epilogue(
        &mut self,
        op: crate::ir::UnaryOp,
        x: NodeId,
        shape: &[usize],
    ) -> Result<Option<Val>, PlanError> {
        let v = self.val(x)?;
        let float = matches!(v.dtype, DType::F32 | DType::F16 | DType::BF16);
        if op == crate::ir::UnaryOp::Not || !float || !v.is_contiguous() || !self.sole_reader(x) {
            return Ok(None);
        }
        let Some(code) = UnaryCode::of(op) else {
            return Ok(None);
        };
        let Some(Step::Kernel { launch, .. }) = self.steps.last_mut() else {
            return Ok(None);
        };
        match launch {
            Launch::Gemv {
                dt, m, n, y, act, ..
            } if *dt == v.dtype
                && act.is_none()
                && *y == v.at
                && (*m * *n) as usize == v.numel() =>
            {
                *act = Some(code);
            }
            Launch::BiasAdd {
                dt,
                rows,
                cols,
                y,
                act,
                ..
            } if *dt == v.dtype
                && act.is_none()
                && *y == v.at
                && (*rows * *cols) as usize == v.numel() =>
            {
                *act = Some(code);
            }
            _ => return Ok(None),
        }
        Ok(Some(v.reshaped(shape.to_vec())))
    }

    /// `op(f(gate), up)` over the two halves of a decode linear's output
    /// (a fused gate/up projection) as one `gemv_glu` kernel, when the last
    /// two steps are that `gemv` and the unary `f` of its gate half, and
    /// nothing else reads the projection. The full projection is never
    /// stored.
    pub(super) fn gemv_glu(
        &mut self,
        op: crate::ir::BinaryOp,
        a: NodeId,
        b: NodeId,
        shape: &[usize],
    ) -> Result<Option<Val>, PlanError> {
        use crate::ir::Op;
        let Op::Unary(f, gate) = self.g.node(a).op else {
            return Ok(None);
        };
        let (
            Op::Slice {
                x: l,
                axis: ga,
                start: 0,
                end: h,
            },
            Op::Slice {
                x: l2,
                axis: ua,
                start: h2,
                end: e2,
            },
        ) = (&self.g.node(gate).op, &self.g.node(b).op)
        else {
            return Ok(None);
        };
        let once = |n: NodeId| self.uses.get(n as usize) == Some(&1);
        let pair = l == l2 && ga == ua && h == h2 && *e2 == 2 * h;
        let last = self.g.node(*l).shape.len().checked_sub(1);
        if !pair
            || Some(*ga) != last
            || !once(a)
            || !once(gate)
            || !once(b)
            || self.uses.get(*l as usize) != Some(&2)
        {
            return Ok(None);
        }
        let (vl, va) = (self.val(*l)?, self.val(a)?);
        let dt = vl.dtype;
        let Some(f) = UnaryCode::of(f) else {
            return Ok(None);
        };
        let n = self.steps.len();
        let fused = match self.steps.get(n.saturating_sub(2)..) {
            Some(
                [Step::Kernel {
                    launch:
                        Launch::Gemv {
                            dt: gdt,
                            kind,
                            m,
                            n: cols,
                            k,
                            x,
                            w,
                            bias,
                            y,
                            act: None,
                        },
                    shared,
                    ..
                }, Step::Kernel {
                    launch:
                        Launch::Unary {
                            dt: udt,
                            op: g,
                            x: ux,
                            y: uy,
                            ..
                        }
                        | Launch::UnaryStrided {
                            dt: udt,
                            op: g,
                            x: ux,
                            y: uy,
                            ..
                        },
                    ..
                }],
            ) if *gdt == dt
                && *udt == dt
                && *y == vl.at
                && *ux == vl.at
                && *uy == va.at
                && *g == f
                && *cols as i64 == 2 * h =>
            {
                let norm = match kind {
                    GemvKind::Plain => Some(None),
                    GemvKind::Norm(p) => Some(Some(p.clone())),
                    GemvKind::Mma => None,
                };
                norm.map(|norm| (*m, *h as i32, *k, *x, *w, *bias, norm, *shared))
            }
            _ => None,
        };
        let Some((m, half, k, x, w, bias, norm, shared)) = fused else {
            return Ok(None);
        };
        self.steps.truncate(n - 2);
        let y = self.fresh(dt, shape.to_vec());
        if y.numel() != (m * half) as usize {
            return Err(self.err("gated projection: output size mismatch"));
        }
        let launch = Launch::GemvGlu {
            dt,
            norm,
            m,
            half,
            k,
            x,
            w,
            bias,
            y: y.at,
            act: f,
            op: BinaryCode::from(op),
        };
        self.kernel(launch, (half as u32).div_ceil(4).max(1), BLOCK, shared);
        Ok(Some(y))
    }
}
