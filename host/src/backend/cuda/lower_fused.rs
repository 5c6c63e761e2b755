//! Fused and specialised lowerings: the rotary embedding, matrix-vector
//! products for decode (`gemv`), and peepholes that merge a step just
//! planned into the next (residual add + norm, activation + product),
//! and inputs uploaded straight into the concat that reads them.

use super::lower::{elementwise_grid, suffix, PlanError, Planner, BLOCK};
use super::plan::*;
use crate::ir::{DType, NodeId};

/// Most rows the `gemv` kernel takes (GEMV_MAX_M in kernels.cu).
const GEMV_MAX_M: usize = 4;

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
    /// Rotary embedding: one element-wise kernel over x's (strided) shape.
    pub(super) fn rotary(
        &mut self,
        x: NodeId,
        cos: NodeId,
        sin: NodeId,
        interleaved: bool,
        shape: Vec<usize>,
    ) -> Result<Val, PlanError> {
        let (x, c, s) = (self.val(x)?, self.val(cos)?, self.val(sin)?);
        let (dt, n) = (x.dtype, shape.iter().product::<usize>());
        let y = self.fresh(dt, shape.clone());
        let (Some(&d), Some(&r)) = (shape.last(), c.shape.last()) else {
            return Err(self.err("rotary needs rank >= 1"));
        };
        if n > 0 {
            // cos/sin strides over x's shape with their own last axis.
            let mut target = shape.clone();
            target[shape.len() - 1] = r;
            let (sc, ss) = (c.broadcast_strides(&target), s.broadcast_strides(&target));
            let p = index_param(&shape, [&x.strides, &sc, &ss])
                .ok_or_else(|| self.err("more than 8 non-mergeable axes"))?;
            for v in [&x, &c, &s] {
                self.use_val(v);
            }
            self.kernel(
                format!("rotary_{}", suffix(dt)),
                elementwise_grid(n),
                BLOCK,
                0,
                vec![
                    Arg::Idx(Box::new(p)),
                    Arg::Ptr(x.at),
                    Arg::Ptr(c.at),
                    Arg::Ptr(s.at),
                    Arg::Ptr(y.at),
                    Arg::I32(d as i32),
                    Arg::I32(r as i32),
                    Arg::I64(x.strides[shape.len() - 1]),
                    Arg::I32(interleaved as i32),
                ],
            );
            self.merge_rotary_pair();
        }
        Ok(y)
    }

    /// The copy just planned joins the step before it in one launch when
    /// that step neither reads what the copy writes nor writes what it
    /// reads, and is a copy of the same element size (`copy_pair`) or a
    /// `rotary2` of that element size (`rotary2_copy`): a decode step's new
    /// keys and values reach their caches in one kernel.
    pub(super) fn merge_copy(&mut self) {
        let n = self.steps.len();
        let (
            Some(Step::Kernel {
                name: pn, args: pa, ..
            }),
            Some(Step::Kernel {
                name: ln, args: la, ..
            }),
        ) = (
            n.checked_sub(2).and_then(|i| self.steps.get(i)),
            self.steps.last(),
        )
        else {
            return;
        };
        let ([Arg::Idx(p3), Arg::Ptr(x3), Arg::Ptr(y3)], Some(size)) =
            (la.as_slice(), ln.strip_prefix("copy_"))
        else {
            return;
        };
        let apart = |reads: &[&Ref], writes: &[&Ref]| {
            reads.iter().all(|r| r.buf != y3.buf) && writes.iter().all(|w| w.buf != x3.buf)
        };
        let copy = [Arg::Idx(p3.clone()), Arg::Ptr(*x3), Arg::Ptr(*y3)];
        let merged = match (pa.as_slice(), pn.strip_prefix("rotary2_")) {
            ([Arg::Idx(p1), Arg::Ptr(x1), Arg::Ptr(y1)], None)
                if pn == ln && apart(&[x1], &[y1]) =>
            {
                let mut args = pa.clone();
                args.extend(copy);
                Some((format!("copy_pair_{size}"), args, p1.n + p3.n))
            }
            (
                [Arg::Idx(p1), Arg::Ptr(x1), Arg::Ptr(y1), _, Arg::Idx(p2), Arg::Ptr(x2), Arg::Ptr(y2), _, Arg::Ptr(c), Arg::Ptr(s), ..],
                Some(dt),
            ) if pa.len() == 13
                && Some(size)
                    == match dt {
                        "f32" => Some("4"),
                        "f16" | "bf16" => Some("2"),
                        _ => None,
                    }
                && apart(&[x1, x2, c, s], &[y1, y2]) =>
            {
                let mut args = pa.clone();
                args.extend(copy);
                Some((format!("rotary2_copy_{dt}"), args, p1.n + p2.n + p3.n))
            }
            _ => None,
        };
        let Some((name, args, total)) = merged else {
            return;
        };
        let dst = y3.buf;
        self.steps.truncate(n - 2);
        if let Buf::Arena(j) = dst {
            self.buffers[j].first = self.buffers[j].first.min(n - 2);
        }
        self.kernel(
            name,
            elementwise_grid(total.max(0) as usize),
            BLOCK,
            0,
            args,
        );
    }

    /// Two rotary steps in a row with the same tables (queries, then keys)
    /// become one `rotary2` launch, unless the second reads the first's
    /// output.
    fn merge_rotary_pair(&mut self) {
        let [.., Step::Kernel {
            name: n1, args: a1, ..
        }, Step::Kernel {
            name: n2, args: a2, ..
        }] = self.steps.as_slice()
        else {
            return;
        };
        if n1 != n2 || !n1.starts_with("rotary_") {
            return;
        }
        let merged = match (a1.as_slice(), a2.as_slice()) {
            (
                [Arg::Idx(p1), Arg::Ptr(x1), c1, s1, Arg::Ptr(y1), d1, r1, xl1, i1],
                [Arg::Idx(p2), Arg::Ptr(x2), c2, s2, Arg::Ptr(y2), d2, r2, xl2, i2],
            ) if (c1, s1, d1, r1, i1) == (c2, s2, d2, r2, i2) && x2.buf != y1.buf => {
                let n = (p1.n + p2.n).max(0) as usize;
                let args = vec![
                    Arg::Idx(p1.clone()),
                    Arg::Ptr(*x1),
                    Arg::Ptr(*y1),
                    xl1.clone(),
                    Arg::Idx(p2.clone()),
                    Arg::Ptr(*x2),
                    Arg::Ptr(*y2),
                    xl2.clone(),
                    c1.clone(),
                    s1.clone(),
                    d1.clone(),
                    r1.clone(),
                    i1.clone(),
                ];
                (n1.replacen("rotary_", "rotary2_", 1), n, args, y2.buf)
            }
            _ => return,
        };
        let (name, n, args, second) = merged;
        self.steps.pop();
        self.steps.pop();
        let at = self.steps.len();
        // The second output is now written one step earlier.
        if let Buf::Arena(i) = second {
            self.buffers[i].first = self.buffers[i].first.min(at);
        }
        self.kernel(name, elementwise_grid(n), BLOCK, 0, args);
    }

    /// `x @ w^T (+ bias)` as the `gemv` kernel when x has at most
    /// [`GEMV_MAX_M`] dense rows and w is a dense [N, K] matrix whose rows
    /// are whole 16-byte words (decode steps); `None` leaves it to cuBLAS.
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
            || rows > GEMV_MAX_M
            || !x.is_contiguous()
            || !w.is_contiguous()
            || !aligned
            || !dense_bias
            || n == 0
        {
            return None;
        }
        let norm = self.take_norm(x_id, x, rows, k);
        let y = self.fresh(dt, shape.to_vec());
        for v in [Some(x), Some(w), bias].into_iter().flatten() {
            self.use_val(v);
        }
        let warps = (BLOCK / 32) as usize;
        let (name, xin, shared, norm) = match norm {
            Some(args) => ("gemv_norm", Arg::Null, (k * dt.size()) as u32, args),
            None => ("gemv", Arg::Ptr(x.at), 0, no_norm().to_vec()),
        };
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
            n.div_ceil(warps).clamp(1, 1 << 30) as u32,
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
        let prologue = match args.as_slice() {
            [Arg::I32(rms), Arg::I64(r), Arg::I32(w), a, b, sum, s, bias, eps @ Arg::F32(_), Arg::Ptr(y), pre]
                if *name == format!("add_norm_{sfx}") && one(r, w) && *y == x.at =>
            {
                vec![
                    Arg::I32(*rms),
                    a.clone(),
                    b.clone(),
                    pre.clone(),
                    sum.clone(),
                    s.clone(),
                    bias.clone(),
                    eps.clone(),
                ]
            }
            [Arg::I64(r), Arg::I32(w), a, s, bias, eps @ Arg::F32(_), Arg::Ptr(y)]
                if *name == format!("layer_norm_{sfx}") && one(r, w) && *y == x.at =>
            {
                vec![
                    Arg::I32(0),
                    a.clone(),
                    Arg::Null,
                    Arg::Null,
                    Arg::Null,
                    s.clone(),
                    bias.clone(),
                    eps.clone(),
                ]
            }
            [Arg::I64(r), Arg::I32(w), a, s, eps @ Arg::F32(_), Arg::Ptr(y)]
                if *name == format!("rms_norm_{sfx}") && one(r, w) && *y == x.at =>
            {
                vec![
                    Arg::I32(1),
                    a.clone(),
                    Arg::Null,
                    Arg::Null,
                    Arg::Null,
                    s.clone(),
                    Arg::Null,
                    eps.clone(),
                ]
            }
            _ => return None,
        };
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

    /// After [`Planner::take_dense_add`] removed the residual add `add`
    /// (operands at `lhs`, `rhs`, rows of `width`): when the step before it
    /// is the `bias_add` of a linear that wrote all of one operand, read
    /// only by that add, removes it too and returns (biased operand, other
    /// operand, bias) for `add_norm` to add the bias itself.
    pub(super) fn take_bias_add(
        &mut self,
        add: NodeId,
        lhs: Ref,
        rhs: Ref,
        width: usize,
    ) -> Option<(Ref, Ref, Ref)> {
        let crate::ir::Op::Binary(crate::ir::BinaryOp::Add, a, b) = self.g.node(add).op else {
            return None;
        };
        let Some(Step::Kernel { name, args, .. }) = self.steps.last() else {
            return None;
        };
        let [Arg::I64(rows), Arg::I64(cols), Arg::Ptr(y), Arg::Ptr(bias), Arg::I32(-1)] =
            args.as_slice()
        else {
            return None;
        };
        let sum = self.val(add).ok()?;
        let whole = *cols as usize == width && (*rows * *cols) as usize == sum.numel();
        if *name != format!("bias_add_{}", suffix(sum.dtype)) || !whole {
            return None;
        }
        let (biased, other, node) = if *y == lhs {
            (lhs, rhs, a)
        } else if *y == rhs {
            (rhs, lhs, b)
        } else {
            return None;
        };
        if !self.sole_reader(node) || self.val(node).ok()?.at != *y {
            return None;
        }
        let bias = *bias;
        self.steps.pop();
        Some((biased, other, bias))
    }

    /// Whether `id` is read only by the node being planned, through a chain
    /// of views each read once, down to the node that wrote its buffer: then
    /// nothing else ever reads that buffer.
    pub(super) fn sole_reader(&self, mut id: NodeId) -> bool {
        loop {
            if self.uses.get(id as usize) != Some(&1) {
                return false;
            }
            match &self.g.node(id).op {
                crate::ir::Op::Reshape { x, .. }
                | crate::ir::Op::Permute { x, .. }
                | crate::ir::Op::Unsqueeze { x, .. }
                | crate::ir::Op::Squeeze { x, .. } => id = *x,
                // Views of part of a buffer: others may read the rest.
                crate::ir::Op::Slice { .. } | crate::ir::Op::Expand { .. } => return false,
                _ => return true,
            }
        }
    }

    /// A float unary op over a strided `x`, read in place (no dense copy).
    pub(super) fn strided_unary(
        &mut self,
        op: crate::ir::UnaryOp,
        x: Val,
        shape: Vec<usize>,
    ) -> Result<Val, PlanError> {
        let y = self.fresh(x.dtype, shape);
        let n = y.numel();
        if n > 0 {
            let zeros = vec![0i64; y.shape.len()];
            let p = index_param(&y.shape, [&x.strides, &zeros, &zeros])
                .ok_or_else(|| self.err("more than 8 non-mergeable axes"))?;
            self.use_val(&x);
            self.kernel(
                format!("unary_s_{}", suffix(x.dtype)),
                elementwise_grid(n),
                BLOCK,
                0,
                vec![
                    Arg::I32(op as i32),
                    Arg::Idx(Box::new(p)),
                    Arg::Ptr(x.at),
                    Arg::Ptr(y.at),
                ],
            );
        }
        Ok(y)
    }

    /// `op(f(x), b)` as one kernel when the last planned step is the unary
    /// `f` that wrote `a = f(x)`, `a` is read only here and `x` and `b` have
    /// the result's shape (SwiGLU's `silu(gate) * up`; dense or strided).
    pub(super) fn unary_then_binary(
        &mut self,
        op: crate::ir::BinaryOp,
        a: NodeId,
        b: NodeId,
        shape: &[usize],
    ) -> Result<Option<Val>, PlanError> {
        let crate::ir::Op::Unary(f, xa) = self.g.node(a).op else {
            return Ok(None);
        };
        let (va, vb, vx) = (self.val(a)?, self.val(b)?, self.val(xa)?);
        let dt = va.dtype;
        let single = self.uses.get(a as usize) == Some(&1);
        let float = matches!(dt, DType::F32 | DType::F16 | DType::BF16);
        let same = vx.shape == shape && vb.shape == shape;
        if !single || !same || vb.dtype != dt || vx.dtype != dt || !float {
            return Ok(None);
        }
        let Some(Step::Kernel { name, args, .. }) = self.steps.last() else {
            return Ok(None);
        };
        let (dense, strided) = (
            format!("unary_{}", suffix(dt)),
            format!("unary_s_{}", suffix(dt)),
        );
        match args.as_slice() {
            [Arg::I32(g), _, Arg::Ptr(x), Arg::Ptr(y)]
                if *y == va.at
                    && *x == vx.at
                    && *g == f as i32
                    && (*name == dense || *name == strided) => {}
            _ => return Ok(None),
        }
        self.steps.pop();
        let y = self.fresh(dt, shape.to_vec());
        let n = y.numel();
        self.use_val(&vb);
        self.use_val(&vx);
        let mut args = vec![Arg::I32(f as i32), Arg::I32(op as i32)];
        let name = if vx.is_contiguous() && vb.is_contiguous() {
            args.push(Arg::I64(n as i64));
            format!("unary_binary_{}", suffix(dt))
        } else {
            let zeros = vec![0i64; shape.len()];
            let p = index_param(shape, [&vx.strides, &vb.strides, &zeros])
                .ok_or_else(|| self.err("more than 8 non-mergeable axes"))?;
            args.push(Arg::Idx(Box::new(p)));
            format!("unary_binary_s_{}", suffix(dt))
        };
        args.extend([Arg::Ptr(vx.at), Arg::Ptr(vb.at), Arg::Ptr(y.at)]);
        self.kernel(name, elementwise_grid(n), BLOCK, 0, args);
        Ok(Some(y))
    }

    /// When the last planned step is a same-shape (unbroadcast) add that
    /// wrote `x`, removes it and returns its operands, for a fused kernel.
    pub(super) fn take_dense_add(&mut self, x: &Val) -> Option<(Ref, Ref)> {
        let Some(Step::Kernel { name, args, .. }) = self.steps.last() else {
            return None;
        };
        let add = Arg::I32(crate::ir::BinaryOp::Add as i32);
        let dense = match args.as_slice() {
            [op, Arg::Idx(p), Arg::Ptr(a), Arg::Ptr(b), Arg::Ptr(y)]
                if *op == add && *y == x.at && name == &format!("binary_{}", suffix(x.dtype)) =>
            {
                let unit = |s: &[i64; 8]| s[0] == 1;
                (p.rank == 1
                    && p.n as usize == x.numel()
                    && unit(&p.s0)
                    && unit(&p.s1)
                    && unit(&p.s2))
                .then_some((*a, *b))
            }
            _ => None,
        };
        if dense.is_some() {
            self.steps.pop();
        }
        dense
    }

    /// Makes the one kernel that wrote `v` (dense, its whole buffer) write
    /// at `dst` instead, when nothing else reads `v` (node `id`): a decode
    /// step's rotated keys land in their cache slot, no copy. `dst`'s buffer
    /// then lives from that kernel on.
    pub(super) fn write_in_place(&mut self, id: NodeId, v: &Val, dst: Ref) -> bool {
        let Buf::Arena(i) = v.at.buf else {
            return false;
        };
        let whole = v.at.offset == 0 && self.buffers[i].bytes == v.numel() * v.dtype.size();
        if !whole || !v.is_contiguous() || !self.sole_reader(id) {
            return false;
        }
        let first = self.buffers[i].first;
        let refers = |step: &Step| match step {
            Step::Kernel { args, .. } => args
                .iter()
                .any(|a| matches!(a, Arg::Ptr(r) if r.buf == v.at.buf)),
            Step::Gemm(_) => true,
        };
        let writer_only = self
            .steps
            .get(first)
            .is_some_and(|s| matches!(s, Step::Kernel { .. }))
            && self.steps[first + 1..].iter().all(|s| !refers(s));
        if !writer_only {
            return false;
        }
        if let Some(Step::Kernel { args, .. }) = self.steps.get_mut(first) {
            for a in args.iter_mut() {
                if let Arg::Ptr(r) = a {
                    if r.buf == v.at.buf {
                        *r = Ref {
                            buf: dst.buf,
                            offset: dst.offset + r.offset,
                        };
                    }
                }
            }
        }
        if let Buf::Arena(j) = dst.buf {
            self.buffers[j].first = self.buffers[j].first.min(first);
        }
        self.buffers[i].last = self.buffers[i].first;
        true
    }

    /// Uploads input `id` (value `v`) straight to `dst` when the input is
    /// read only there and `v` is dense, instead of copying it on the device
    /// (a KV-cache state concatenated with the new keys). `dst`'s buffer then
    /// lives from the start of the run, when uploads land.
    pub(super) fn upload_in_place(&mut self, id: NodeId, v: &Val, dst: Ref) -> bool {
        let Some(&u) = self.upload_of.get(&id) else {
            return false;
        };
        let only_here = self.uses.get(id as usize) == Some(&1);
        if !only_here || !v.is_contiguous() || self.uploads[u].at != v.at {
            return false;
        }
        if let Buf::Arena(i) = dst.buf {
            self.buffers[i].first = 0;
        }
        self.uploads[u].at = dst;
        true
    }
}

#[cfg(test)]
#[path = "lower_fused_tests.rs"]
mod tests;
