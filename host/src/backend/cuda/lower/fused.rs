//! Fused and specialised lowerings: the rotary embedding, and peepholes
//! that merge a step just planned into the next (residual add + norm, bias
//! add + norm, strided unaries, copies), and inputs uploaded straight into
//! the concat that reads them. Decode products are in `gemv.rs`.

use super::grid::{elementwise_grid, BLOCK};
use super::{PlanError, Planner};
use crate::backend::cuda::launch::{BinaryCode, Launch, Rotary2Tail, RotaryPart, UnaryCode};
use crate::backend::cuda::plan::*;
use crate::ir::{DType, NodeId};

/// Elements from which a strided SwiGLU over rows of 16-byte words runs a
/// word per thread (`unary_binary_s`'s `vec`; 16 x 5632, a batch-16
/// decode step, ran in 2.0 us an element per thread and 3.9 us a word per
/// thread; 2320 x 5632 in 123 and 93 us before the grid matched).
const VEC_MIN_ELEMENTS: usize = 1 << 20;

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
            let launch = Launch::Rotary {
                dt,
                part: RotaryPart {
                    idx: Box::new(p),
                    x: x.at,
                    y: y.at,
                    x_last_stride: x.strides[shape.len() - 1],
                },
                cos: c.at,
                sin: s.at,
                d: d as i32,
                r: r as i32,
                interleaved,
            };
            self.kernel(launch, elementwise_grid(n), BLOCK, 0);
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
        let Some((prev, Launch::Copy { size, span: c3 })) = self.last_two_launches() else {
            return;
        };
        let (size, c3) = (*size, c3.clone());
        let apart = |reads: &[&Ref], writes: &[&Ref]| {
            reads.iter().all(|r| r.buf != c3.y.buf) && writes.iter().all(|w| w.buf != c3.x.buf)
        };
        let merged = match prev {
            Launch::Copy { size: s1, span: c1 } if *s1 == size && apart(&[&c1.x], &[&c1.y]) => {
                let total = c1.idx.n + c3.idx.n;
                let pair = Launch::CopyPair {
                    size,
                    first: c1.clone(),
                    second: c3.clone(),
                };
                Some((pair, total))
            }
            Launch::Rotary2 {
                dt,
                first,
                second,
                cos,
                sin,
                tail: Rotary2Tail::None,
                ..
            } if dt.size() == size
                && matches!(dt, DType::F32 | DType::F16 | DType::BF16)
                && apart(&[&first.x, &second.x, cos, sin], &[&first.y, &second.y]) =>
            {
                let total = first.idx.n + second.idx.n + c3.idx.n;
                let mut l = prev.clone();
                if let Launch::Rotary2 { tail, .. } = &mut l {
                    *tail = Rotary2Tail::Copy(c3.clone());
                }
                Some((l, total))
            }
            _ => None,
        };
        let Some((launch, total)) = merged else {
            return;
        };
        self.replace_last_two(launch, total, c3.y.buf);
    }

    /// Two rotary steps in a row with the same tables (queries, then keys)
    /// become one `rotary2` launch, unless the second reads the first's
    /// output.
    fn merge_rotary_pair(&mut self) {
        let Some((
            Launch::Rotary {
                dt: dt1,
                part: p1,
                cos: c1,
                sin: s1,
                d: d1,
                r: r1,
                interleaved: i1,
            },
            Launch::Rotary {
                dt: dt2,
                part: p2,
                cos: c2,
                sin: s2,
                d: d2,
                r: r2,
                interleaved: i2,
            },
        )) = self.last_two_launches()
        else {
            return;
        };
        let same = dt1 == dt2 && (c1, s1, d1, r1, i1) == (c2, s2, d2, r2, i2);
        if !same || p2.x.buf == p1.y.buf {
            return;
        }
        let n = (p1.idx.n + p2.idx.n).max(0) as usize;
        let launch = Launch::Rotary2 {
            dt: *dt1,
            first: p1.clone(),
            second: p2.clone(),
            cos: *c1,
            sin: *s1,
            d: *d1,
            r: *r1,
            interleaved: *i1,
            tail: Rotary2Tail::None,
        };
        let second = p2.y.buf;
        self.steps.pop();
        self.steps.pop();
        let at = self.steps.len();
        // The second output is now written one step earlier.
        if let Buf::Arena(i) = second {
            self.buffers[i].first = self.buffers[i].first.min(at);
        }
        self.kernel(launch, elementwise_grid(n), BLOCK, 0);
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
        let Some(Step::Kernel {
            launch:
                Launch::BiasAdd {
                    dt,
                    rows,
                    cols,
                    y,
                    bias,
                    act: None,
                },
            ..
        }) = self.steps.last()
        else {
            return None;
        };
        let sum = self.val(add).ok()?;
        let whole = *cols as usize == width && (*rows * *cols) as usize == sum.numel();
        if *dt != sum.dtype || !whole {
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
            let op = UnaryCode::of(op).ok_or_else(|| self.err("`not` of a float"))?;
            let launch = Launch::UnaryStrided {
                dt: x.dtype,
                op,
                idx: Box::new(p),
                x: x.at,
                y: y.at,
            };
            self.kernel(launch, elementwise_grid(n), BLOCK, 0);
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
        let Some(f) = UnaryCode::of(f) else {
            return Ok(None);
        };
        let Some(Step::Kernel { launch, .. }) = self.steps.last() else {
            return Ok(None);
        };
        match launch {
            Launch::Unary {
                dt: d, op: g, x, y, ..
            }
            | Launch::UnaryStrided {
                dt: d, op: g, x, y, ..
            } if *y == va.at && *x == vx.at && *g == f && *d == dt => {}
            _ => return Ok(None),
        }
        self.steps.pop();
        let y = self.fresh(dt, shape.to_vec());
        let n = y.numel();
        self.use_val(&vb);
        self.use_val(&vx);
        let op = BinaryCode::from(op);
        let mut grid_n = n;
        let launch = if vx.is_contiguous() && vb.is_contiguous() {
            Launch::UnaryBinary {
                dt,
                f,
                op,
                n: n as i64,
                a: vx.at,
                b: vb.at,
                y: y.at,
            }
        } else {
            let zeros = vec![0i64; shape.len()];
            let p = index_param(shape, [&vx.strides, &vb.strides, &zeros])
                .ok_or_else(|| self.err("more than 8 non-mergeable axes"))?;
            // Large rows of 16-byte words (a prefill's SwiGLU over gate/up
            // slices) go a word per thread, the grid sized to match: a
            // thread per element spent more time scheduling blocks than
            // moving bytes (TinyLlama, 2320 x 5632: 123 us). Small ones
            // stay an element per thread (more loads in flight).
            let words = (16 / dt.size()) as i64;
            let aligned = |r: &Ref| r.offset.is_multiple_of(16);
            let vec = n >= VEC_MIN_ELEMENTS
                && p.rank == 2
                && p.s0[1] == 1
                && p.s1[1] == 1
                && [p.shape[1], p.s0[0], p.s1[0]]
                    .iter()
                    .all(|x| x % words == 0)
                && aligned(&vx.at)
                && aligned(&vb.at)
                && aligned(&y.at);
            if vec {
                grid_n = n / words as usize;
            }
            Launch::UnaryBinaryStrided {
                dt,
                f,
                op,
                idx: Box::new(p),
                vec,
                a: vx.at,
                b: vb.at,
                y: y.at,
            }
        };
        self.kernel(launch, elementwise_grid(grid_n), BLOCK, 0);
        Ok(Some(y))
    }

    /// When the last planned step is a same-shape (unbroadcast) add that
    /// wrote `x`, removes it and returns its operands, for a fused kernel.
    pub(super) fn take_dense_add(&mut self, x: &Val) -> Option<(Ref, Ref)> {
        let Some(Step::Kernel { launch, .. }) = self.steps.last() else {
            return None;
        };
        let dense = match launch {
            Launch::Binary {
                dt,
                op,
                idx: p,
                a,
                b,
                y,
            } if op.op() == crate::ir::BinaryOp::Add && *y == x.at && *dt == x.dtype => {
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
            Step::Kernel { launch, .. } => launch.refers_to(v.at.buf),
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
        if let Some(Step::Kernel { launch, .. }) = self.steps.get_mut(first) {
            launch.for_each_ref(&mut |r| {
                if r.buf == v.at.buf {
                    *r = Ref {
                        buf: dst.buf,
                        offset: dst.offset + r.offset,
                    };
                }
            });
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
#[path = "fused_tests.rs"]
mod tests;
