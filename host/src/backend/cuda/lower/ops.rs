//! Lowering of the op families that need more than a line or two: broadcast
//! element-wise, norms, per-axis kernels, reductions, gathers, attention and
//! matmul (layouts from [`crate::backend::cuda::gemm`]).

use super::grid::{elementwise_grid, row_block, rows_grid, split3, BLOCK};
use super::{PlanError, Planner};
use crate::backend::cuda::gemm;
use crate::backend::cuda::launch::{AttnKernel, Launch, ReduceCode};
use crate::backend::cuda::plan::*;
use crate::ir::{DType, NodeId, ReduceOp};

/// Threads per block of the attention kernel.
const ATTN_BLOCK: u32 = 256;
/// Most key groups of the attention kernel's vector-load path
/// (`ATTN_GROUPS` in kernels/attention.cu).
const ATTN_GROUPS: usize = 32;
/// Largest value head_dim of the attention kernels (32 lanes x
/// `ATTN_DV_LANE` in kernels/attention.cu).
const ATTN_MAX_DV: usize = 256;
/// Query rows per warp and per block of the many-row attention kernel
/// (`ATTN_RPW`, `ATTN_ROWS`).
const ATTN_RPW: usize = 2;
const ATTN_ROWS: usize = 8 * ATTN_RPW;
/// Keys per shared-memory chunk of the many-row kernel (`ATTN_CHUNK`).
const ATTN_CHUNK: usize = 32;
/// Query rows per block of the tensor-core kernel (`AMMA_ROWS`).
const AMMA_ROWS: usize = 128;
/// Blocks (batch rows x kv heads) from which grouped-query decode runs on
/// tensor cores: on an H100, TinyLlama's 16 x 4 took a layer's attention
/// from 17.5 to 13.0 us (ncu), while its 1 x 4 at batch 1 made decode 3.6%
/// slower than a block per head (results/ab_cuda_decode_h100.md).
const GDEC_MIN_BLOCKS: usize = 64;
// ATTN_RPW query rows per warp of the many-row kernel.
const _: () = assert!(ATTN_ROWS * 32 == ATTN_BLOCK as usize * ATTN_RPW);

impl Planner<'_> {
    /// Two broadcast operands, one contiguous output.
    /// `launch` builds the kernel from the index space and the addresses
    /// of `a`, `b` and the output.
    pub(super) fn strided2(
        &mut self,
        a: NodeId,
        b: NodeId,
        out: DType,
        shape: Vec<usize>,
        launch: impl FnOnce(Box<IdxParam>, Ref, Ref, Ref) -> Launch,
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
            let launch = launch(Box::new(p), a.at, b.at, y.at);
            self.kernel(launch, elementwise_grid(n), BLOCK, 0);
        }
        Ok(y)
    }

    /// Layer-norm (`bias` is `Some(optional bias)`) or rms-norm (`None`)
    /// over the last axis, one block per row.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn norm(
        &mut self,
        x: NodeId,
        scale: NodeId,
        bias: Option<Option<NodeId>>,
        eps_bits: u32,
        dt: DType,
        shape: Vec<usize>,
    ) -> Result<Val, PlanError> {
        let x_id = x;
        let x = self.val(x)?;
        let x = self.contiguous(x)?;
        let s = self.val(scale)?;
        let s = self.contiguous(s)?;
        let b = match bias.flatten() {
            Some(b) => {
                let v = self.val(b)?;
                Some(self.contiguous(v)?)
            }
            None => None,
        };
        let width = *shape.last().unwrap_or(&1);
        let y = self.fresh(dt, shape);
        let n = y.numel();
        if n > 0 {
            let rows = n / width.max(1);
            for v in [Some(&x), Some(&s), b.as_ref()].into_iter().flatten() {
                self.use_val(v);
            }
            if let Some((lhs, rhs)) = self.take_dense_add(&x) {
                // The residual add just planned, fused: its sum is still
                // written (the residual stream reads it later), and so is
                // the bias add of the linear before it when it can go too.
                // y and the sum are now written earlier than planned: their
                // buffers must not share memory with anything that step
                // reads.
                let (lhs, rhs, pre) = match self.take_bias_add(x_id, lhs, rhs, width) {
                    Some((a, b, bias)) => (a, b, Some(bias)),
                    None => (lhs, rhs, None),
                };
                for r in [&y.at, &x.at] {
                    if let Buf::Arena(i) = r.buf {
                        self.buffers[i].first = self.buffers[i].first.min(self.steps.len());
                    }
                }
                let launch = Launch::AddNorm {
                    dt,
                    rms: bias.is_none(),
                    rows: rows as i64,
                    width: width as i32,
                    a: lhs,
                    b: rhs,
                    sum: x.at,
                    scale: s.at,
                    bias: b.map(|b| b.at),
                    eps: f32::from_bits(eps_bits),
                    y: y.at,
                    pre,
                };
                self.kernel(launch, rows_grid(rows), row_block(width), 0);
                return Ok(y);
            }
            let (rows, width, eps) = (rows as i64, width as i32, f32::from_bits(eps_bits));
            let (x, scale, y_at) = (x.at, s.at, y.at);
            let launch = match bias {
                Some(_) => Launch::LayerNorm {
                    dt,
                    rows,
                    width,
                    x,
                    scale,
                    bias: b.map(|b| b.at),
                    eps,
                    y: y_at,
                },
                None => Launch::RmsNorm {
                    dt,
                    rows,
                    width,
                    x,
                    scale,
                    eps,
                    y: y_at,
                },
            };
            self.kernel(
                launch,
                rows_grid(rows as usize),
                row_block(width as usize),
                0,
            );
        }
        Ok(y)
    }

    /// Softmax (`eps` is `None`) or l2 normalisation along `axis`.
    pub(super) fn along_axis(
        &mut self,
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
            let (o, l, i) = (outer as i64, len as i32, inner as i64);
            let (x, y_at) = (x.at, y.at);
            let launch = match eps {
                None => Launch::Softmax {
                    dt,
                    outer: o,
                    len: l,
                    inner: i,
                    x,
                    y: y_at,
                },
                Some(eps) => Launch::L2Norm {
                    dt,
                    outer: o,
                    len: l,
                    inner: i,
                    eps,
                    x,
                    y: y_at,
                },
            };
            self.kernel(launch, rows_grid(outer * inner), row_block(len), 0);
        }
        Ok(y)
    }

    pub(super) fn reduce(
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
            let launch = Launch::Reduce {
                dt,
                op: ReduceCode::from(op),
                rows: rows as i64,
                len: len as i64,
                x: moved.at,
                y: y.at,
            };
            let block = if dt.is_float() { row_block(len) } else { BLOCK };
            self.kernel(launch, grid, block, 0);
        }
        Ok(y)
    }

    pub(super) fn gather(
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
        // Move each gathered slice in the widest units its size and
        // alignment allow (a KV cache row of 768 f16 in 16-byte units).
        let bytes = inner * dt.size();
        let unit = [16, 8, 4, 2, 1]
            .into_iter()
            .find(|&u| u >= dt.size() && bytes.is_multiple_of(u) && x.at.offset.is_multiple_of(u))
            .unwrap_or(dt.size());
        let inner = bytes / unit;
        let n = outer * idx.numel() * inner;
        if n > 0 {
            let flag = Ref {
                buf: Buf::Arena(0),
                offset: 0,
            };
            self.use_val(&x);
            self.use_val(&idx);
            let launch = Launch::Gather {
                unit,
                index: idx.dtype,
                outer: outer as i64,
                count: idx.numel() as i64,
                axis_len: axis_len as i64,
                inner: inner as i64,
                x: x.at,
                idx: idx.at,
                y: y.at,
                flag,
            };
            self.kernel(launch, elementwise_grid(n), BLOCK, 0);
        }
        Ok(y)
    }

    /// Fused attention: one block of [`ATTN_BLOCK`] threads per query row
    /// for one query row per (batch, head) (decode: warps over 32-key
    /// chunks for dense rows of head dim 32 or 64, else a thread per key),
    /// else a block per [`ATTN_ROWS`] rows that shares each chunk of keys
    /// among them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention(
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
        if dv > ATTN_MAX_DV {
            return Err(self.err(format!(
                "value head_dim {dv} exceeds the fused kernel's {ATTN_MAX_DV}"
            )));
        }
        // Decode keeps a block per head even with grouped-query heads: a
        // many-row variant with a block per (batch row, kv head) and the
        // group's heads as its rows walks the keys chunk after chunk and was
        // 2.3x slower there (TinyLlama bs16, 256 slots: 56 against 25 us a
        // layer; results/ab_cuda_decode_h100.md).
        let rows = sq > 1;
        let mma = rows && mma_dense(&q, &k, &v);
        let group = h / kvh.max(1);
        // Grouped-query decode takes the tensor-core kernel (a block per
        // batch row and kv head) from GDEC_MIN_BLOCKS such blocks; with fewer
        // the per-head kernel spreads the keys over more multiprocessors.
        // Ungrouped heads keep the per-head kernel (opt-125m bs16 decode
        // was 13% slower with one head per tile).
        let gdec = !rows
            && (2..=16).contains(&group)
            && group * kvh == h
            && b * kvh >= GDEC_MIN_BLOCKS
            && mma_dense(&q, &k, &v);
        let shared = match rows {
            // Keys transposed (padded), values, query rows, probabilities;
            // the tensor-core kernel's value chunk (rows padded by 16 bytes)
            // in the same space.
            true => ((d * (ATTN_CHUNK + 1) + ATTN_CHUNK * dv + ATTN_ROWS * (d + ATTN_CHUNK)) * 4)
                .max(ATTN_CHUNK * (dv + 8) * 2),
            // Scores, the query row, up to ATTN_GROUPS key groups' partial
            // sums per value dim; the grouped kernel's per-warp value chunks,
            // then per-warp partials (16 maxima, sums and value rows).
            false => {
                let warps = ATTN_BLOCK as usize / 32;
                let gdec_bytes =
                    (warps * ATTN_CHUNK * (dv + 8) * 2).max(warps * (32 + 16 * dv) * 4);
                ((sk + d + ATTN_GROUPS * dv) * 4).max(if gdec { gdec_bytes } else { 0 })
            }
        };
        if shared > 200 * 1024 {
            return Err(self.err(format!(
                "{sk} keys of head_dim {d} exceed the fused kernel's shared memory"
            )));
        }
        let four = |s: &[i64]| -> [i64; 4] { [s[0], s[1], s[2], s[3]] };
        let (mask_kind, ms, mref) = match &mask {
            None => (0, [0; 4], None),
            Some(m) => {
                let s = m.broadcast_strides(&[b, h, sq, sk]);
                let kind = if m.dtype == DType::Bool { 2 } else { 1 };
                (kind, four(&s), Some(m.at))
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
        // The warp-split decode kernel runs two blocks of 256 threads per
        // multiprocessor (128 registers): past ~2 blocks per SM of an H100
        // (more than 256 rows), blocks of 128 threads fit the rows in one
        // wave (TinyLlama bs16, 512 rows: 15.3 against 19.2 us a layer;
        // 192 or 32 rows are faster with 256; results/ab_cuda_decode_h100.md).
        let (kernel, blocks, threads) = match rows {
            true if mma => (
                if d == 64 {
                    AttnKernel::Mma64
                } else {
                    AttnKernel::Mma128
                },
                b * h * sq.div_ceil(AMMA_ROWS),
                ATTN_BLOCK,
            ),
            true => (AttnKernel::Rows, b * h * sq.div_ceil(ATTN_ROWS), ATTN_BLOCK),
            false if gdec => (
                if d == 64 {
                    AttnKernel::Gdec64
                } else {
                    AttnKernel::Gdec128
                },
                b * kvh,
                ATTN_BLOCK,
            ),
            false if decode_dense(&k, &v) => (
                if d == 32 {
                    AttnKernel::Dec32
                } else {
                    AttnKernel::Dec64
                },
                b * h,
                if b * h > 256 { 128 } else { ATTN_BLOCK },
            ),
            false => (AttnKernel::Generic, b * h * sq, ATTN_BLOCK),
        };
        let launch = Launch::Attention {
            dt,
            kernel,
            p: Box::new(p),
            q: q.at,
            k: k.at,
            v: v.at,
            mask: mref,
            y: y.at,
        };
        self.kernel(launch, rows_grid(blocks), threads, shared as u32);
        Ok(y)
    }

    /// `a [.., m, k] @ b [.., k, n]` into a fresh dense `[.., m, n]`.
    pub(super) fn matmul(&mut self, a: Val, b: Val, shape: Vec<usize>) -> Result<Val, PlanError> {
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

/// Whether a one-row attention can take the `attention_dec{32,64}` kernel:
/// key and value head dims equal and 32 or 64, both read as whole 16-byte
/// words (unit element stride, other strides and offsets on 16-byte
/// boundaries; arena and weight buffers start aligned).
fn decode_dense(k: &Val, v: &Val) -> bool {
    let d = k.shape[3];
    matches!(d, 32 | 64) && v.shape[3] == d && k.dtype == v.dtype && dense16(k) && dense16(v)
}

/// Whether the tensor-core many-row kernel (`attention_mma{64,128}`, f16
/// and bf16) takes these operands: head dims 64 or 128 (keys and values)
/// over dense, 16-byte aligned rows of queries, keys and values.
fn mma_dense(q: &Val, k: &Val, v: &Val) -> bool {
    let d = q.shape[3];
    matches!(q.dtype, DType::F16 | DType::BF16)
        && matches!(d, 64 | 128)
        && k.shape[3] == d
        && v.shape[3] == d
        && q.dtype == k.dtype
        && k.dtype == v.dtype
        && [q, k, v].into_iter().all(dense16)
}

/// Rows of 16-byte aligned, contiguous elements (16-byte loads).
fn dense16(x: &Val) -> bool {
    let words = 16 / x.dtype.size().max(1);
    x.strides[3] == 1
        && x.strides[..3].iter().all(|&s| s % words as i64 == 0)
        && x.at.offset.is_multiple_of(16)
}
