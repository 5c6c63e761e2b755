//! Test launches: every [`Launch`] variant for every dtype or element
//! size its kernel family is instantiated for, each buffer at its own
//! address (for `source_tests.rs`).

use std::cell::Cell;

use super::*;
use crate::backend::cuda::plan::Buf;
use crate::ir::{BinaryOp, CompareOp, ReduceOp, UnaryOp};

/// The code of a unary op that has one.
fn unary(op: UnaryOp) -> UnaryCode {
    UnaryCode::of(op).unwrap_or_else(|| panic!("{op:?} has no code"))
}

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
const NUMS: [DType; 7] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::I64,
    DType::I32,
    DType::U8,
    DType::Bool,
];
const SIZES: [usize; 5] = [1, 2, 4, 8, 16];

/// A launch of every variant for every type or size it is instantiated
/// for; every buffer a distinct address.
pub(super) fn samples() -> Vec<Launch> {
    let next = Cell::new(0usize);
    let r = || {
        next.set(next.get() + 1);
        Ref {
            buf: Buf::Arena(next.get()),
            offset: 16 * next.get(),
        }
    };
    let ix = || Box::new(empty_idx().expect("an index space"));
    let sp = || CopySpan {
        idx: ix(),
        x: r(),
        y: r(),
    };
    let part = || RotaryPart {
        idx: ix(),
        x: r(),
        y: r(),
        x_last_stride: 1,
    };
    let rows = || RowIndex {
        start: r(),
        last: 3,
        row: 8,
    };
    let prologue = |full: bool| NormPrologue {
        rms: full,
        a: r(),
        b: full.then(r),
        pre: full.then(r),
        sum: full.then(r),
        scale: r(),
        bias: full.then(r),
        eps: 1e-5,
    };
    let attn = Box::new(AttnParam {
        b: 1,
        h: 1,
        kvh: 1,
        sq: 1,
        sk: 1,
        d: 64,
        dv: 64,
        causal: 0,
        mask_kind: 0,
        scale: 1.0,
        qs: [0; 4],
        ks: [0; 4],
        vs: [0; 4],
        ms: [0; 4],
    });
    let (u, b) = (unary(UnaryOp::Silu), BinaryCode::from(BinaryOp::Mul));
    let mut out = vec![
        Launch::NotBool {
            n: 1,
            x: r(),
            y: r(),
        },
        Launch::AndBool {
            idx: ix(),
            a: r(),
            b: r(),
            y: r(),
        },
    ];
    for size in SIZES {
        out.push(Launch::Select {
            size,
            idx: ix(),
            cond: r(),
            a: r(),
            b: r(),
            y: r(),
        });
        out.push(Launch::Copy { size, span: sp() });
        out.push(Launch::CopyPair {
            size,
            first: sp(),
            second: sp(),
        });
        for second in [None, Some(sp())] {
            out.push(Launch::WriteRows {
                size,
                first: sp(),
                second,
                rows: rows(),
            });
        }
        for index in [DType::I64, DType::I32] {
            out.push(Launch::Gather {
                unit: size,
                index,
                outer: 1,
                count: 1,
                axis_len: 1,
                inner: 1,
                x: r(),
                idx: r(),
                y: r(),
                flag: r(),
            });
        }
    }
    for dt in NUMS {
        out.push(Launch::Unary {
            dt,
            op: unary(UnaryOp::Neg),
            n: 1,
            x: r(),
            y: r(),
        });
        out.push(Launch::Binary {
            dt,
            op: BinaryCode::from(BinaryOp::Add),
            idx: ix(),
            a: r(),
            b: r(),
            y: r(),
        });
        out.push(Launch::Compare {
            dt,
            op: CompareCode::from(CompareOp::Less),
            idx: ix(),
            a: r(),
            b: r(),
            y: r(),
        });
        out.push(Launch::Reduce {
            dt,
            op: ReduceCode::from(ReduceOp::Max),
            rows: 1,
            len: 1,
            x: r(),
            y: r(),
        });
        out.push(Launch::ArgMax {
            dt,
            outer: 1,
            len: 1,
            inner: 1,
            x: r(),
            y: r(),
        });
        out.push(Launch::TopKPartial {
            dt,
            rows: 1,
            len: 1,
            k: 1,
            chunks: 1,
            x: r(),
            cand_values: r(),
            cand_indices: r(),
        });
        out.push(Launch::TopKMerge {
            dt,
            rows: 1,
            cands: 1,
            k: 1,
            cand_values: r(),
            cand_indices: r(),
            x: r(),
            len: 1,
            values: r(),
            indices: r(),
        });
        for to in NUMS {
            out.push(Launch::Cast {
                from: dt,
                to,
                n: 1,
                x: r(),
                y: r(),
            });
        }
    }
    for dt in FLOATS {
        out.extend(float_samples(
            dt, &r, &ix, &sp, &part, &rows, &prologue, &attn, u, b,
        ));
    }
    out
}

/// The launches instantiated for float type `dt` only.
#[allow(clippy::too_many_arguments)]
fn float_samples(
    dt: DType,
    r: &dyn Fn() -> Ref,
    ix: &dyn Fn() -> Box<IdxParam>,
    sp: &dyn Fn() -> CopySpan,
    part: &dyn Fn() -> RotaryPart,
    rows: &dyn Fn() -> RowIndex,
    prologue: &dyn Fn(bool) -> NormPrologue,
    attn: &AttnParam,
    u: UnaryCode,
    b: BinaryCode,
) -> Vec<Launch> {
    let half = dt != DType::F32;
    let mut out = vec![
        Launch::UnaryStrided {
            dt,
            op: u,
            idx: ix(),
            x: r(),
            y: r(),
        },
        Launch::UnaryBinary {
            dt,
            f: u,
            op: b,
            n: 1,
            a: r(),
            b: r(),
            y: r(),
        },
        Launch::UnaryBinaryStrided {
            dt,
            f: u,
            op: b,
            idx: ix(),
            vec: true,
            a: r(),
            b: r(),
            y: r(),
        },
        Launch::BiasAdd {
            dt,
            rows: 1,
            cols: 1,
            y: r(),
            bias: r(),
            act: Some(u),
        },
        Launch::Rotary {
            dt,
            part: part(),
            cos: r(),
            sin: r(),
            d: 4,
            r: 4,
            interleaved: false,
        },
        Launch::LayerNorm {
            dt,
            rows: 1,
            width: 1,
            x: r(),
            scale: r(),
            bias: Some(r()),
            eps: 1e-5,
            y: r(),
        },
        Launch::RmsNorm {
            dt,
            rows: 1,
            width: 1,
            x: r(),
            scale: r(),
            eps: 1e-5,
            y: r(),
        },
        Launch::AddNorm {
            dt,
            rms: false,
            rows: 1,
            width: 1,
            a: r(),
            b: r(),
            sum: r(),
            scale: r(),
            bias: Some(r()),
            eps: 1e-5,
            y: r(),
            pre: Some(r()),
        },
        Launch::Softmax {
            dt,
            outer: 1,
            len: 1,
            inner: 1,
            x: r(),
            y: r(),
        },
        Launch::L2Norm {
            dt,
            outer: 1,
            len: 1,
            inner: 1,
            eps: 1e-6,
            x: r(),
            y: r(),
        },
        Launch::Conv {
            dt,
            dims: ConvDims {
                batch: 1,
                in_channels: 1,
                out_channels: 1,
                groups: 1,
                h: 1,
                w: 1,
                out_h: 1,
                out_w: 1,
                kernel_h: 1,
                kernel_w: 1,
                stride_h: 1,
                stride_w: 1,
                pad_h: 0,
                pad_w: 0,
                dilation_h: 1,
                dilation_w: 1,
            },
            x: r(),
            w: r(),
            bias: Some(r()),
            y: r(),
        },
    ];
    let tails = [
        Rotary2Tail::None,
        Rotary2Tail::Copy(sp()),
        Rotary2Tail::Write {
            copy: None,
            rows: rows(),
        },
        Rotary2Tail::Write {
            copy: Some(sp()),
            rows: rows(),
        },
    ];
    for tail in tails {
        out.push(Launch::Rotary2 {
            dt,
            first: part(),
            second: part(),
            cos: r(),
            sin: r(),
            d: 4,
            r: 4,
            interleaved: true,
            tail,
        });
    }
    let mut kinds = vec![GemvKind::Plain, GemvKind::Norm(Box::new(prologue(true)))];
    if half {
        kinds.push(GemvKind::Mma);
    }
    for kind in kinds {
        let x = (!matches!(kind, GemvKind::Norm(_))).then(r);
        out.push(Launch::Gemv {
            dt,
            kind,
            m: 1,
            n: 1,
            k: 8,
            x,
            w: r(),
            bias: Some(r()),
            y: r(),
            act: None,
        });
    }
    for norm in [None, Some(Box::new(prologue(false)))] {
        out.push(Launch::GemvGlu {
            dt,
            x: norm.is_none().then(r),
            norm,
            m: 1,
            half: 1,
            k: 8,
            w: r(),
            bias: None,
            y: r(),
            act: u,
            op: b,
        });
    }
    let mut attention = vec![
        AttnKernel::Generic,
        AttnKernel::Rows,
        AttnKernel::Dec32,
        AttnKernel::Dec64,
    ];
    if half {
        attention.extend([
            AttnKernel::Mma64,
            AttnKernel::Mma128,
            AttnKernel::Gdec64,
            AttnKernel::Gdec128,
        ]);
    }
    for kernel in attention {
        out.push(Launch::Attention {
            dt,
            kernel,
            p: Box::new(*attn),
            q: r(),
            k: r(),
            v: r(),
            mask: Some(r()),
            y: r(),
        });
    }
    out
}

/// A number per variant (the match is exhaustive: a new variant must be
/// given samples).
pub(super) fn variant(l: &Launch) -> usize {
    use Launch as L;
    match l {
        L::Unary { .. } => 0,
        L::NotBool { .. } => 1,
        L::UnaryStrided { .. } => 2,
        L::Binary { .. } => 3,
        L::Compare { .. } => 4,
        L::AndBool { .. } => 5,
        L::Select { .. } => 6,
        L::Copy { .. } => 7,
        L::CopyPair { .. } => 8,
        L::Cast { .. } => 9,
        L::BiasAdd { .. } => 10,
        L::UnaryBinary { .. } => 11,
        L::UnaryBinaryStrided { .. } => 12,
        L::Rotary { .. } => 13,
        L::Rotary2 { .. } => 14,
        L::WriteRows { .. } => 15,
        L::LayerNorm { .. } => 16,
        L::RmsNorm { .. } => 17,
        L::AddNorm { .. } => 18,
        L::Softmax { .. } => 19,
        L::L2Norm { .. } => 20,
        L::Reduce { .. } => 21,
        L::Gather { .. } => 22,
        L::Attention { .. } => 23,
        L::Gemv { .. } => 24,
        L::GemvGlu { .. } => 25,
        L::Conv { .. } => 26,
        L::ArgMax { .. } => 27,
        L::TopKPartial { .. } => 28,
        L::TopKMerge { .. } => 29,
    }
}
pub(super) const VARIANTS: usize = 30;
