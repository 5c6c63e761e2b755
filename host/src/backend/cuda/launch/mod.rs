//! Typed kernel launches: one [`Launch`] variant per kernel family of
//! `kernels/instances.cu` (and the families instantiated beside their
//! templates), with named buffers, sizes, scalars and op codes. The
//! planner builds and the peepholes rewrite these; [`Launch::kernel`]
//! (`args.rs`) is the one place that turns a launch into the kernel name
//! and argument list cudarc passes, and `source_tests.rs` checks every
//! variant against the kernel source.

mod args;
pub mod codes;
mod refs;
#[cfg(test)]
mod samples;
#[cfg(test)]
mod source_tests;

pub use codes::{BinaryCode, CompareCode, ReduceCode, UnaryCode};

use super::plan::{index_param, AttnParam, IdxParam, Ref};
use crate::ir::DType;

/// One strided element-wise move: the index space, source and destination.
#[derive(Clone, Debug, PartialEq)]
pub struct CopySpan {
    pub idx: Box<IdxParam>,
    pub x: Ref,
    pub y: Ref,
}

/// The rows a write replaces: the device index of the first, the largest
/// index allowed, and the elements per row.
#[derive(Clone, Debug, PartialEq)]
pub struct RowIndex {
    pub start: Ref,
    pub last: i64,
    pub row: i64,
}

/// One tensor a rotary launch rotates: index space, input, output and the
/// input's last-axis stride.
#[derive(Clone, Debug, PartialEq)]
pub struct RotaryPart {
    pub idx: Box<IdxParam>,
    pub x: Ref,
    pub y: Ref,
    pub x_last_stride: i64,
}

/// What a `rotary2` launch does besides rotating two tensors.
#[derive(Clone, Debug, PartialEq)]
pub enum Rotary2Tail {
    /// Nothing (`rotary2_*`).
    None,
    /// Also a strided copy (`rotary2_copy_*`).
    Copy(CopySpan),
    /// The second output goes into cache rows, and optionally a copy into
    /// the same rows of another cache (`rotary2_write_*`).
    Write {
        copy: Option<CopySpan>,
        rows: RowIndex,
    },
}

/// A norm a `gemv` computes itself before its product (see `gemv_norm`):
/// rms or layer norm of `a` (plus `b` and the bias `pre` of a residual add,
/// whose sum is written to `sum`).
#[derive(Clone, Debug, PartialEq)]
pub struct NormPrologue {
    pub rms: bool,
    pub a: Ref,
    pub b: Option<Ref>,
    pub pre: Option<Ref>,
    pub sum: Option<Ref>,
    pub scale: Ref,
    pub bias: Option<Ref>,
    pub eps: f32,
}

/// Which `gemv` kernel: plain, tensor-core, or with a norm prologue.
#[derive(Clone, Debug, PartialEq)]
pub enum GemvKind {
    Plain,
    Mma,
    Norm(Box<NormPrologue>),
}

/// Which fused attention kernel (see `lower/ops.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnKernel {
    /// A block per query row, a thread per key.
    Generic,
    /// A block per 16 query rows sharing key chunks.
    Rows,
    /// Warp-split decode of head dim 32 or 64.
    Dec32,
    Dec64,
    /// Tensor-core many-row kernel of head dim 64 or 128.
    Mma64,
    Mma128,
    /// Tensor-core grouped-query decode of head dim 64 or 128.
    Gdec64,
    Gdec128,
}

/// Sizes of a direct convolution (1-D as 2-D with a height of 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub batch: i64,
    pub in_channels: i64,
    pub out_channels: i64,
    pub groups: i64,
    pub h: i64,
    pub w: i64,
    pub out_h: i64,
    pub out_w: i64,
    pub kernel_h: i64,
    pub kernel_w: i64,
    pub stride_h: i64,
    pub stride_w: i64,
    pub pad_h: i64,
    pub pad_w: i64,
    pub dilation_h: i64,
    pub dilation_w: i64,
}

/// One kernel launch of a plan. `dt` is the element type the kernel is
/// instantiated for; `size` the element size in bytes of the kernels that
/// only move data.
#[derive(Clone, Debug, PartialEq)]
pub enum Launch {
    Unary {
        dt: DType,
        op: UnaryCode,
        n: i64,
        x: Ref,
        y: Ref,
    },
    NotBool {
        n: i64,
        x: Ref,
        y: Ref,
    },
    /// A float unary op over a strided input.
    UnaryStrided {
        dt: DType,
        op: UnaryCode,
        idx: Box<IdxParam>,
        x: Ref,
        y: Ref,
    },
    Binary {
        dt: DType,
        op: BinaryCode,
        idx: Box<IdxParam>,
        a: Ref,
        b: Ref,
        y: Ref,
    },
    /// `dt` is the operands' type; the output is bool.
    Compare {
        dt: DType,
        op: CompareCode,
        idx: Box<IdxParam>,
        a: Ref,
        b: Ref,
        y: Ref,
    },
    AndBool {
        idx: Box<IdxParam>,
        a: Ref,
        b: Ref,
        y: Ref,
    },
    Select {
        size: usize,
        idx: Box<IdxParam>,
        cond: Ref,
        a: Ref,
        b: Ref,
        y: Ref,
    },
    Copy {
        size: usize,
        span: CopySpan,
    },
    CopyPair {
        size: usize,
        first: CopySpan,
        second: CopySpan,
    },
    Cast {
        from: DType,
        to: DType,
        n: i64,
        x: Ref,
        y: Ref,
    },
    /// `y [rows, cols] = act(y + bias)` in place.
    BiasAdd {
        dt: DType,
        rows: i64,
        cols: i64,
        y: Ref,
        bias: Ref,
        act: Option<UnaryCode>,
    },
    /// `op(f(a), b)` over dense operands.
    UnaryBinary {
        dt: DType,
        f: UnaryCode,
        op: BinaryCode,
        n: i64,
        a: Ref,
        b: Ref,
        y: Ref,
    },
    /// `op(f(a), b)` over strided operands, a 16-byte word per thread when
    /// `vec`.
    UnaryBinaryStrided {
        dt: DType,
        f: UnaryCode,
        op: BinaryCode,
        idx: Box<IdxParam>,
        vec: bool,
        a: Ref,
        b: Ref,
        y: Ref,
    },
    Rotary {
        dt: DType,
        part: RotaryPart,
        cos: Ref,
        sin: Ref,
        d: i32,
        r: i32,
        interleaved: bool,
    },
    /// Two rotations sharing their tables (queries and keys), plus `tail`.
    Rotary2 {
        dt: DType,
        first: RotaryPart,
        second: RotaryPart,
        cos: Ref,
        sin: Ref,
        d: i32,
        r: i32,
        interleaved: bool,
        tail: Rotary2Tail,
    },
    /// One or two updates written into rows of their tensors.
    WriteRows {
        size: usize,
        first: CopySpan,
        second: Option<CopySpan>,
        rows: RowIndex,
    },
    LayerNorm {
        dt: DType,
        rows: i64,
        width: i32,
        x: Ref,
        scale: Ref,
        bias: Option<Ref>,
        eps: f32,
        y: Ref,
    },
    RmsNorm {
        dt: DType,
        rows: i64,
        width: i32,
        x: Ref,
        scale: Ref,
        eps: f32,
        y: Ref,
    },
    /// `sum = a + b (+ pre)`, then `y` = its layer or rms norm.
    AddNorm {
        dt: DType,
        rms: bool,
        rows: i64,
        width: i32,
        a: Ref,
        b: Ref,
        sum: Ref,
        scale: Ref,
        bias: Option<Ref>,
        eps: f32,
        y: Ref,
        pre: Option<Ref>,
    },
    Softmax {
        dt: DType,
        outer: i64,
        len: i32,
        inner: i64,
        x: Ref,
        y: Ref,
    },
    L2Norm {
        dt: DType,
        outer: i64,
        len: i32,
        inner: i64,
        eps: f32,
        x: Ref,
        y: Ref,
    },
    Reduce {
        dt: DType,
        op: ReduceCode,
        rows: i64,
        len: i64,
        x: Ref,
        y: Ref,
    },
    /// Slices of `unit` bytes gathered by `index`-typed indices; an index
    /// out of range sets `flag`.
    Gather {
        unit: usize,
        index: DType,
        outer: i64,
        count: i64,
        axis_len: i64,
        inner: i64,
        x: Ref,
        idx: Ref,
        y: Ref,
        flag: Ref,
    },
    Attention {
        dt: DType,
        kernel: AttnKernel,
        p: Box<AttnParam>,
        q: Ref,
        k: Ref,
        v: Ref,
        mask: Option<Ref>,
        y: Ref,
    },
    /// `y [m, n] = act(x [m, k] . w [n, k] (+ bias))`; `x` is `None` when a
    /// norm prologue computes it.
    Gemv {
        dt: DType,
        kind: GemvKind,
        m: i32,
        n: i32,
        k: i32,
        x: Option<Ref>,
        w: Ref,
        bias: Option<Ref>,
        y: Ref,
        act: Option<UnaryCode>,
    },
    /// `y [m, half] = op(act(gate), up)` over the two halves of a gemv's
    /// output, with an optional norm prologue.
    GemvGlu {
        dt: DType,
        norm: Option<Box<NormPrologue>>,
        m: i32,
        half: i32,
        k: i32,
        x: Option<Ref>,
        w: Ref,
        bias: Option<Ref>,
        y: Ref,
        act: UnaryCode,
        op: BinaryCode,
    },
    Conv {
        dt: DType,
        dims: ConvDims,
        x: Ref,
        w: Ref,
        bias: Option<Ref>,
        y: Ref,
    },
    ArgMax {
        dt: DType,
        outer: i64,
        len: i64,
        inner: i64,
        x: Ref,
        y: Ref,
    },
    /// Top-k stage 1: `chunks` candidates lists per row.
    TopKPartial {
        dt: DType,
        rows: i64,
        len: i64,
        k: i32,
        chunks: i32,
        x: Ref,
        cand_values: Ref,
        cand_indices: Ref,
    },
    /// Top-k stage 2 over `cands` candidates per row.
    TopKMerge {
        dt: DType,
        rows: i64,
        cands: i64,
        k: i32,
        cand_values: Ref,
        cand_indices: Ref,
        x: Ref,
        len: i64,
        values: Ref,
        indices: Ref,
    },
}

/// Kernel-name suffix of a dtype (bool kernels read bytes as u8).
pub fn suffix(dt: DType) -> &'static str {
    match dt {
        DType::Bool => "u8",
        other => other.name(),
    }
}

/// The index space of nothing: an empty copy slot of `write_rows` and
/// `rotary2_write`.
pub fn empty_idx() -> Option<IdxParam> {
    index_param(&[0], [&[0], &[0], &[0]])
}

impl AttnKernel {
    /// The kernel family's name.
    pub fn family(self) -> &'static str {
        match self {
            AttnKernel::Generic => "attention",
            AttnKernel::Rows => "attention_rows",
            AttnKernel::Dec32 => "attention_dec32",
            AttnKernel::Dec64 => "attention_dec64",
            AttnKernel::Mma64 => "attention_mma64",
            AttnKernel::Mma128 => "attention_mma128",
            AttnKernel::Gdec64 => "attention_gdec64",
            AttnKernel::Gdec128 => "attention_gdec128",
        }
    }
}

impl Launch {
    /// The kernel that runs this launch over `grid` blocks on a device of
    /// `sms` multiprocessors: its own, but for a plain `gemv` whose grid has
    /// more blocks than the device has multiprocessors, which gets
    /// `gemv_2b` (at most 128 registers, so two blocks of 256 threads fit on
    /// one; e.g. TinyLlama's o-proj and down projections). One-wave grids
    /// keep the kernel that uses more registers and spills none (OPT-125m's
    /// 96-block products).
    pub fn kernel_on(&self, grid: u32, sms: u32) -> String {
        match self {
            Launch::Gemv {
                dt,
                kind: GemvKind::Plain,
                ..
            } if grid > sms => format!("gemv_2b_{}", suffix(*dt)),
            _ => self.kernel().0,
        }
    }

    /// Whether any buffer argument lies in `buf`.
    pub fn refers_to(&self, buf: super::plan::Buf) -> bool {
        (self.kernel().1.iter()).any(|a| matches!(a, super::plan::Arg::Ptr(r) if r.buf == buf))
    }

    /// Calls `f` on every buffer argument, in argument order.
    pub fn for_each_ref(&mut self, f: &mut dyn FnMut(&mut Ref)) {
        refs::for_each_ref(self, f)
    }
}
