//! Matrix-vector products for decode (`gemv`): a linear of at most
//! [`GEMV_MAX_M`] rows, with the peepholes that fold into it the norm
//! before it (`gemv_norm`), the activation after it (its epilogue), and
//! SwiGLU over a fused gate/up projection (`gemv_glu`); up to
//! [`MMA_MAX_M`] rows of f16/bf16 on tensor cores (`gemv_mma`, bias and
//! activation folded in the same way).

use super::grid::BLOCK;
use super::{suffix, PlanError, Planner};
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

/// The `gemv` kernels' norm-prologue arguments when there is none.
fn no_norm() -> [Arg; 8] {
    [
        Arg::I32(0),
        Arg::Null,
        Arg::Null,
        Arg::Null,
        Arg::Null,
        Arg::Null,
        Arg::Null,
        Arg::F32(0.0),
    ]
}

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
        let (name, xin, shared, norm) = match norm {
            Some(args) => ("gemv_norm", Arg::Null, (rows * k * dt.size()) as u32, args),
            None if mma => ("gemv_mma", Arg::Ptr(x.at), 0, no_norm().to_vec()),
            None => ("gemv", Arg::Ptr(x.at), 0, no_norm().to_vec()),
        };
        // Output columns per block: a warp each (gemv), 8 (gemv_mma).
        let columns = if mma { 8 } else { (BLOCK / 32) as usize };
        let mut args = vec![
            Arg::I32(rows as i32),
            Arg::I32(n as i32),
            Arg::I32(k as i32),
            xin,
            Arg::Ptr(w.at),
            bias.map_or(Arg::Null, |b| Arg::Ptr(b.at)),
            Arg::Ptr(y.at),
            Arg::I32(-1),
        ];
        args.extend(norm);
        self.kernel(
            format!("{name}_{}", suffix(dt)),
            n.div_ceil(columns).clamp(1, 1 << 30) as u32,
            BLOCK,
            shared,
            args,
        );
        Some(y)
    }

    /// The norm kernel planned last, when it wrote exactly `x` (`rows` = 1
    /// row of `k`, at most BLOCK x 16 bytes) and only the product being
    /// planned reads it: removed, and returned as the `gemv_norm` prologue's
    /// arguments (rms, a, b, pre, sum, scale, bias, eps). Every block then
    /// computes the norm itself while its weights load, which saves the
    /// norm's launch at decode (one row; with more rows the repeated work
    /// costs more than it saves).
    fn take_norm(&mut self, x_id: NodeId, x: &Val, rows: usize, k: usize) -> Option<Vec<Arg>> {
        let dt = x.dtype;
        if rows != 1 || k * dt.size() > BLOCK as usize * 16 || !self.sole_reader(x_id) {
            return None;
        }
        let Some(Step::Kernel { name, args, .. }) = self.steps.last() else {
            return None;
        };
        let sfx = suffix(dt);
        let one = |r: &i64, w: &i32| *r == 1 && *w as usize == k;
        // (rms, [a, b, pre, sum, scale, bias, eps]) of the norm step.
        let null = &Arg::Null;
        let (rms, rest) = match args.as_slice() {
            [Arg::I32(rms), Arg::I64(r), Arg::I32(w), a, b, sum, s, bias, eps @ Arg::F32(_), Arg::Ptr(y), pre]
                if *name == format!("add_norm_{sfx}") && one(r, w) && *y == x.at =>
            {
                (*rms, [a, b, pre, sum, s, bias, eps])
            }
            [Arg::I64(r), Arg::I32(w), a, s, bias, eps @ Arg::F32(_), Arg::Ptr(y)]
                if *name == format!("layer_norm_{sfx}") && one(r, w) && *y == x.at =>
            {
                (0, [a, null, null, null, s, bias, eps])
            }
            [Arg::I64(r), Arg::I32(w), a, s, eps @ Arg::F32(_), Arg::Ptr(y)]
                if *name == format!("rms_norm_{sfx}") && one(r, w) && *y == x.at =>
            {
                (1, [a, null, null, null, s, null, eps])
            }
            _ => return None,
        };
        let prologue: Vec<Arg> = std::iter::once(Arg::I32(rms))
            .chain(rest.into_iter().cloned())
            .collect();
        // The prologue reads and writes 16 bytes at a time.
        let aligned = prologue.iter().all(|a| match a {
            Arg::Ptr(r) => r.offset.is_multiple_of(16),
            _ => true,
        });
        if !aligned {
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
        let gemv = [
            format!("gemv_{}", suffix(v.dtype)),
            format!("gemv_norm_{}", suffix(v.dtype)),
            format!("gemv_mma_{}", suffix(v.dtype)),
        ];
        let bias_add = format!("bias_add_{}", suffix(v.dtype));
        let Some(Step::Kernel { name, args, .. }) = self.steps.last_mut() else {
            return Ok(None);
        };
        match args.as_mut_slice() {
            [Arg::I32(m), Arg::I32(n), _, _, _, _, Arg::Ptr(y), act @ Arg::I32(-1), ..]
                if gemv.contains(name) && *y == v.at && (*m * *n) as usize == v.numel() =>
            {
                *act = Arg::I32(op as i32);
            }
            [Arg::I64(r), Arg::I64(c), Arg::Ptr(y), Arg::Ptr(_), act @ Arg::I32(-1)]
                if *name == bias_add && *y == v.at && (*r * *c) as usize == v.numel() =>
            {
                *act = Arg::I32(op as i32);
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
        let (gemv, gemv_norm, dense, strided) = (
            format!("gemv_{}", suffix(dt)),
            format!("gemv_norm_{}", suffix(dt)),
            format!("unary_{}", suffix(dt)),
            format!("unary_s_{}", suffix(dt)),
        );
        let n = self.steps.len();
        let fused = match self.steps.get(n.saturating_sub(2)..) {
            Some(
                [Step::Kernel {
                    name: gn,
                    args: ga,
                    shared,
                    ..
                }, Step::Kernel {
                    name: un, args: ua, ..
                }],
            ) => match (ga.as_slice(), ua.as_slice()) {
                (
                    [Arg::I32(m), Arg::I32(cols), k, x, w, bias, Arg::Ptr(y), Arg::I32(-1), norm @ ..],
                    [Arg::I32(g), _, Arg::Ptr(ux), Arg::Ptr(uy)],
                ) if (*gn == gemv || *gn == gemv_norm)
                    && (*un == dense || *un == strided)
                    && *y == vl.at
                    && *ux == vl.at
                    && *uy == va.at
                    && *g == f as i32
                    && *cols as i64 == 2 * h =>
                {
                    let name = if *gn == gemv {
                        "gemv_glu"
                    } else {
                        "gemv_glu_norm"
                    };
                    let front = [k, x, w, bias].map(Arg::clone);
                    Some((*m, *h as i32, front, norm.to_vec(), name, *shared))
                }
                _ => None,
            },
            _ => None,
        };
        let Some((m, half, [k, x, w, bias], norm, name, shared)) = fused else {
            return Ok(None);
        };
        self.steps.truncate(n - 2);
        let y = self.fresh(dt, shape.to_vec());
        if y.numel() != (m * half) as usize {
            return Err(self.err("gated projection: output size mismatch"));
        }
        let mut args = vec![
            Arg::I32(m),
            Arg::I32(half),
            k,
            x,
            w,
            bias,
            Arg::Ptr(y.at),
            Arg::I32(f as i32),
            Arg::I32(op as i32),
        ];
        args.extend(norm);
        self.kernel(
            format!("{name}_{}", suffix(dt)),
            (half as u32).div_ceil(4).max(1),
            BLOCK,
            shared,
            args,
        );
        Ok(Some(y))
    }
}
