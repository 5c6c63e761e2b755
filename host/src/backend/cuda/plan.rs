//! Execution plans: a graph lowered for one set of concrete input shapes
//! (a shape bucket) into a flat list of kernel launches and GEMMs over one
//! activation arena.
//!
//! Planning is pure CPU work and unit-tested without a GPU. Values are
//! strided views: permute, slice, expand, squeeze and unsqueeze (and reshape
//! of a contiguous value) cost nothing; consumers that need contiguous data
//! get a copy inserted. Every arena buffer's lifetime is known, so buffers
//! whose lifetimes do not overlap share memory ([`assign_offsets`]), and the
//! run needs exactly one allocation, reused while the plan is.

use super::launch::Launch;
use crate::ir::DType;

/// Largest rank a strided kernel handles after merging axes.
pub const MAX_RANK: usize = 8;
/// Arena buffers start at multiples of this many bytes.
pub const ALIGN: usize = 256;

/// Where a value's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    /// A buffer of the activation arena (its offset comes from the plan).
    Arena(usize),
    /// A weight or constant uploaded at compile time (index into the
    /// executable's persistent buffers).
    Persistent(usize),
    /// A device tensor a run is given (session state updated in place),
    /// index into [`Plan::externals`].
    External(usize),
}

/// A device address: a buffer plus a byte offset into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ref {
    pub buf: Buf,
    pub offset: usize,
}

/// A strided view of a tensor on the device.
#[derive(Clone, Debug, PartialEq)]
pub struct Val {
    pub at: Ref,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Element strides (0 on broadcast axes).
    pub strides: Vec<i64>,
}

/// Row-major strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<i64> {
    let mut s = vec![0i64; shape.len()];
    let mut acc = 1i64;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc = acc.saturating_mul(shape[i].max(1) as i64);
    }
    s
}

/// Strides that show a view of `shape`/`strides` as `new` without moving
/// data, when they exist: each group of axes merged or split must walk
/// memory evenly (as NumPy's no-copy reshape).
pub fn reshape_strides(shape: &[usize], strides: &[i64], new: &[usize]) -> Option<Vec<i64>> {
    if shape.iter().product::<usize>() != new.iter().product::<usize>() {
        return None;
    }
    if new.contains(&0) {
        return Some(contiguous_strides(new));
    }
    let old: Vec<(usize, i64)> = shape
        .iter()
        .zip(strides)
        .filter(|(&n, _)| n != 1)
        .map(|(&n, &s)| (n, s))
        .collect();
    let mut out = vec![0i64; new.len()];
    let (mut oi, mut ni) = (0usize, 0usize);
    while ni < new.len() {
        if new[ni] == 1 {
            ni += 1;
            continue;
        }
        let (o0, n0) = (oi, ni);
        let (mut op, mut np) = (old.get(oi)?.0, new[ni]);
        while op != np {
            if op < np {
                oi += 1;
                op *= old.get(oi)?.0;
            } else {
                ni += 1;
                np *= *new.get(ni)?;
            }
        }
        if (o0..oi).any(|k| old[k].1 != old[k + 1].1 * old[k + 1].0 as i64) {
            return None;
        }
        let mut st = old[oi].1;
        for k in (n0..=ni).rev() {
            out[k] = st;
            st *= new[k] as i64;
        }
        oi += 1;
        ni += 1;
    }
    (oi == old.len()).then_some(out)
}

impl Val {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the view is dense row-major (axes of length 1 ignored).
    pub fn is_contiguous(&self) -> bool {
        let want = contiguous_strides(&self.shape);
        self.shape
            .iter()
            .zip(self.strides.iter().zip(&want))
            .all(|(&n, (s, w))| n <= 1 || s == w)
    }

    /// The same bytes seen with another shape (the value must be contiguous).
    pub fn reshaped(&self, shape: Vec<usize>) -> Val {
        Val {
            at: self.at,
            dtype: self.dtype,
            strides: contiguous_strides(&shape),
            shape,
        }
    }

    /// Strides of this value broadcast (right-aligned) to `out`.
    pub fn broadcast_strides(&self, out: &[usize]) -> Vec<i64> {
        let lead = out.len().saturating_sub(self.shape.len());
        (0..out.len())
            .map(|d| {
                if d < lead {
                    return 0;
                }
                let i = d - lead;
                if self.shape[i] == 1 && out[d] != 1 {
                    0
                } else {
                    self.strides[i]
                }
            })
            .collect()
    }
}

/// Iteration space with up to three operands' strides, laid out as the
/// kernels' `Idx` struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IdxParam {
    pub rank: i32,
    pub n: i64,
    pub shape: [i64; MAX_RANK],
    pub s0: [i64; MAX_RANK],
    pub s1: [i64; MAX_RANK],
    pub s2: [i64; MAX_RANK],
}

/// Merges axes that every operand walks contiguously and drops axes of
/// length 1, so that most element-wise launches become rank 1 or 2.
/// `None` when more than [`MAX_RANK`] axes remain.
pub fn index_param(shape: &[usize], strides: [&[i64]; 3]) -> Option<IdxParam> {
    let mut dims: Vec<(i64, [i64; 3])> = Vec::new();
    for (d, &len) in shape.iter().enumerate() {
        if len == 1 {
            continue;
        }
        let s = [strides[0][d], strides[1][d], strides[2][d]];
        if let Some(last) = dims.last_mut() {
            if (0..3).all(|k| last.1[k] == s[k] * len as i64) {
                last.0 *= len as i64;
                last.1 = s;
                continue;
            }
        }
        dims.push((len as i64, s));
    }
    if dims.len() > MAX_RANK {
        return None;
    }
    let mut p = IdxParam {
        rank: dims.len() as i32,
        n: shape.iter().product::<usize>() as i64,
        shape: [1; MAX_RANK],
        s0: [0; MAX_RANK],
        s1: [0; MAX_RANK],
        s2: [0; MAX_RANK],
    };
    for (i, (len, s)) in dims.into_iter().enumerate() {
        p.shape[i] = len;
        p.s0[i] = s[0];
        p.s1[i] = s[1];
        p.s2[i] = s[2];
    }
    Some(p)
}

/// Parameters of the fused attention kernel, laid out as its `Attn` struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParam {
    pub b: i32,
    pub h: i32,
    pub kvh: i32,
    pub sq: i32,
    pub sk: i32,
    pub d: i32,
    pub dv: i32,
    pub causal: i32,
    pub mask_kind: i32,
    pub scale: f32,
    pub qs: [i64; 4],
    pub ks: [i64; 4],
    pub vs: [i64; 4],
    pub ms: [i64; 4],
}

/// One kernel argument, as [`Launch::kernel`] lists them.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Ptr(Ref),
    Null,
    I32(i32),
    I64(i64),
    F32(f32),
    Idx(Box<IdxParam>),
    Attn(Box<AttnParam>),
}

/// A GEMM in cuBLAS (column-major) terms: `C = op(A) op(B)`, batched by
/// strides, f32 accumulation.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmStep {
    pub dtype: DType,
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub a: Ref,
    pub lda: i32,
    pub stride_a: i64,
    pub b: Ref,
    pub ldb: i32,
    pub stride_b: i64,
    pub c: Ref,
    pub ldc: i32,
    pub stride_c: i64,
    pub batch: i32,
}

/// One launch: a typed kernel launch (see [`Launch::kernel`] for its name
/// and arguments) over `grid` blocks of `block` threads with `shared`
/// bytes of dynamic shared memory, or a GEMM.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Kernel {
        launch: Launch,
        grid: u32,
        block: u32,
        shared: u32,
    },
    Gemm(GemmStep),
}

/// An arena buffer: size and the steps that first write and last read it.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferLife {
    pub bytes: usize,
    pub first: usize,
    pub last: usize,
}

/// A graph input copied into the arena before the steps run.
#[derive(Clone, Debug, PartialEq)]
pub struct Upload {
    /// Position among the graph's inputs.
    pub input: usize,
    pub at: Ref,
    /// Dtype on the device (the host converts if it differs from the input's).
    pub dtype: DType,
}

/// A graph output copied back after the steps run.
#[derive(Clone, Debug, PartialEq)]
pub struct Download {
    pub name: String,
    pub at: Ref,
    pub shape: Vec<usize>,
    /// Dtype on the device.
    pub device_dtype: DType,
    /// Dtype the graph declares (the host converts).
    pub dtype: DType,
    /// The next value of the state bound as external input `k`, written in
    /// place: a kept run hands that tensor's memory back instead of copying.
    pub in_place: Option<usize>,
}

/// A graph lowered for concrete input shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub uploads: Vec<Upload>,
    pub downloads: Vec<Download>,
    /// Byte offset of every arena buffer.
    pub offsets: Vec<usize>,
    pub arena_bytes: usize,
    /// An i32 the gather kernels set when an index is out of range.
    pub error_flag: Ref,
    /// Graph input positions read and written where they lie on the device
    /// ([`Buf::External`]) instead of copied into the arena.
    pub externals: Vec<usize>,
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN).max(1) * ALIGN
}

/// Places buffers in one arena so that buffers alive at the same time never
/// overlap: a linear scan in order of first use, releasing buffers whose
/// last use has passed into a coalescing free list and taking the best-fit
/// free block (or growing the arena). O(n log n + n * free blocks), fast
/// enough to plan every decode step. Returns offsets and total size.
pub fn assign_offsets(buffers: &[BufferLife]) -> (Vec<usize>, usize) {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by_key(|&i| (buffers[i].first, i));
    let mut offsets = vec![0usize; buffers.len()];
    let mut active: BinaryHeap<Reverse<(usize, usize)>> = BinaryHeap::new();
    // Free blocks (offset, size), sorted by offset, never adjacent.
    let mut free: Vec<(usize, usize)> = Vec::new();
    let mut top = 0usize;
    for i in order {
        let b = &buffers[i];
        while let Some(&Reverse((last, j))) = active.peek() {
            if last >= b.first {
                break;
            }
            active.pop();
            release(&mut free, offsets[j], align(buffers[j].bytes));
        }
        let size = align(b.bytes);
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, f)| f.1 >= size)
            .min_by_key(|(_, f)| f.1)
            .map(|(k, _)| k);
        offsets[i] = match best {
            Some(k) => {
                let (at, len) = free[k];
                if len == size {
                    free.remove(k);
                } else {
                    free[k] = (at + size, len - size);
                }
                at
            }
            None => match free.last() {
                // The block at the end of the arena grows into new space.
                Some(&(at, len)) if at + len == top => {
                    free.pop();
                    top = at + size;
                    at
                }
                _ => {
                    top += size;
                    top - size
                }
            },
        };
        active.push(Reverse((b.last, i)));
    }
    (offsets, top)
}

/// Returns `[at, at + len)` to the free list, merging with its neighbours.
fn release(free: &mut Vec<(usize, usize)>, at: usize, len: usize) {
    let k = free.partition_point(|f| f.0 < at);
    free.insert(k, (at, len));
    if k + 1 < free.len() && free[k].0 + free[k].1 == free[k + 1].0 {
        free[k].1 += free[k + 1].1;
        free.remove(k + 1);
    }
    if k > 0 && free[k - 1].0 + free[k - 1].1 == free[k].0 {
        free[k - 1].1 += free[k].1;
        free.remove(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_views_when_memory_allows() {
        // Dense: any reshape is a view with dense strides.
        assert_eq!(reshape_strides(&[2, 6], &[6, 1], &[3, 4]), Some(vec![4, 1]));
        // A column slice [b=2, 4 of 12] split into heads [2, 2, 2].
        assert_eq!(
            reshape_strides(&[2, 4], &[12, 1], &[2, 2, 2]),
            Some(vec![12, 2, 1])
        );
        // Merging a batch and a sliced axis cannot be a view.
        assert_eq!(reshape_strides(&[2, 4], &[12, 1], &[8]), None);
        // Transposed axes do not merge; unit axes are free.
        assert_eq!(reshape_strides(&[3, 2], &[1, 3], &[6]), None);
        assert_eq!(
            reshape_strides(&[1, 3, 1], &[9, 3, 1], &[3, 1, 1]),
            Some(vec![3, 0, 0])
        );
        assert_eq!(reshape_strides(&[2, 3], &[3, 1], &[7]), None);
    }

    fn life(bytes: usize, first: usize, last: usize) -> BufferLife {
        BufferLife { bytes, first, last }
    }

    #[test]
    fn disjoint_lifetimes_share_memory() {
        let bufs = [life(1000, 0, 1), life(1000, 2, 3), life(100, 1, 2)];
        let (off, total) = assign_offsets(&bufs);
        assert_eq!(off[0], off[1], "0 and 1 never live together");
        // 2 overlaps both in time, so it must not overlap either in space.
        for j in [0, 1] {
            let (a, b) = (off[2], off[2] + align(100));
            let (c, d) = (off[j], off[j] + align(1000));
            assert!(b <= c || d <= a);
        }
        assert_eq!(total, align(1000) + align(100));
    }

    #[test]
    fn overlapping_lifetimes_never_overlap_in_space() {
        // A pseudo-random workload checked exhaustively.
        let mut seed = 12345u64;
        let mut next = |m: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m as u64) as usize
        };
        let bufs: Vec<BufferLife> = (0..200)
            .map(|_| {
                let first = next(100);
                life(1 + next(5000), first, first + next(20))
            })
            .collect();
        let (off, total) = assign_offsets(&bufs);
        for i in 0..bufs.len() {
            assert!(off[i] + align(bufs[i].bytes) <= total);
            for j in 0..i {
                let time = bufs[i].first <= bufs[j].last && bufs[j].first <= bufs[i].last;
                let space = off[i] < off[j] + align(bufs[j].bytes)
                    && off[j] < off[i] + align(bufs[i].bytes);
                assert!(!(time && space), "buffers {i} and {j} collide");
            }
        }
        let sum: usize = bufs.iter().map(|b| align(b.bytes)).sum();
        assert!(total < sum, "reuse must save memory ({total} vs {sum})");
    }

    #[test]
    fn index_params_merge_contiguous_axes() {
        // [2, 3, 4] + [4]: the output walks all axes contiguously, the
        // bias repeats every 4 elements: two axes remain.
        let out = [2usize, 3, 4];
        let c = contiguous_strides(&out);
        let bias = Val {
            at: Ref {
                buf: Buf::Arena(0),
                offset: 0,
            },
            dtype: DType::F32,
            shape: vec![4],
            strides: vec![1],
        };
        let b = bias.broadcast_strides(&out);
        assert_eq!(b, vec![0, 0, 1]);
        let p = index_param(&out, [&c, &b, &c]).unwrap();
        assert_eq!(p.rank, 2);
        assert_eq!(&p.shape[..2], &[6, 4]);
        assert_eq!(&p.s1[..2], &[0, 1]);
        assert_eq!(p.n, 24);
        // Same-shape operands collapse to one axis.
        let p = index_param(&out, [&c, &c, &c]).unwrap();
        assert_eq!((p.rank, p.shape[0]), (1, 24));
    }

    #[test]
    fn contiguity_ignores_unit_axes() {
        let v = Val {
            at: Ref {
                buf: Buf::Arena(0),
                offset: 0,
            },
            dtype: DType::F32,
            shape: vec![2, 1, 3],
            strides: vec![3, 99, 1],
        };
        assert!(v.is_contiguous());
        let t = Val {
            strides: vec![1, 3, 2],
            ..v.clone()
        };
        assert!(!t.is_contiguous());
        assert_eq!(v.broadcast_strides(&[4, 2, 5, 3]), vec![0, 3, 0, 1]);
    }
}
