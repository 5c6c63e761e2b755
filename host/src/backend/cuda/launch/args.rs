//! The one place a typed [`Launch`] becomes what cudarc launches: the
//! kernel's name (`<family>_<dtype>` as `kernels/instances.cu` instantiates
//! it) and its argument list in the kernel's parameter order.

use super::codes::act_arg;
use super::*;
use crate::backend::cuda::plan::Arg;

fn ptr(r: &Ref) -> Arg {
    Arg::Ptr(*r)
}

fn opt(r: &Option<Ref>) -> Arg {
    r.as_ref().map_or(Arg::Null, ptr)
}

fn idx(p: &IdxParam) -> Arg {
    Arg::Idx(Box::new(*p))
}

fn span(s: &CopySpan) -> [Arg; 3] {
    [idx(&s.idx), ptr(&s.x), ptr(&s.y)]
}

/// An empty copy slot when `s` is `None`.
fn span_or_empty(s: &Option<CopySpan>) -> Vec<Arg> {
    match s {
        Some(s) => span(s).to_vec(),
        None => match empty_idx() {
            Some(p) => vec![idx(&p), Arg::Null, Arg::Null],
            None => vec![Arg::Null, Arg::Null, Arg::Null],
        },
    }
}

fn rows(r: &RowIndex) -> [Arg; 3] {
    [ptr(&r.start), Arg::I64(r.last), Arg::I64(r.row)]
}

/// The `gemv` kernels' norm-prologue arguments (all null without one).
fn prologue(n: Option<&NormPrologue>) -> [Arg; 8] {
    match n {
        None => [
            Arg::I32(0),
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::F32(0.0),
        ],
        Some(n) => [
            Arg::I32(n.rms as i32),
            ptr(&n.a),
            opt(&n.b),
            opt(&n.pre),
            opt(&n.sum),
            ptr(&n.scale),
            opt(&n.bias),
            Arg::F32(n.eps),
        ],
    }
}

impl Launch {
    /// The kernel's name and argument list.
    pub fn kernel(&self) -> (String, Vec<Arg>) {
        use Launch as L;
        match self {
            L::Unary { dt, op, n, x, y } => (
                format!("unary_{}", suffix(*dt)),
                vec![Arg::I32(op.code()), Arg::I64(*n), ptr(x), ptr(y)],
            ),
            L::NotBool { n, x, y } => ("not_bool".into(), vec![Arg::I64(*n), ptr(x), ptr(y)]),
            L::UnaryStrided {
                dt,
                op,
                idx: p,
                x,
                y,
            } => (
                format!("unary_s_{}", suffix(*dt)),
                vec![Arg::I32(op.code()), idx(p), ptr(x), ptr(y)],
            ),
            L::Binary {
                dt,
                op,
                idx: p,
                a,
                b,
                y,
            } => (
                format!("binary_{}", suffix(*dt)),
                vec![Arg::I32(op.code()), idx(p), ptr(a), ptr(b), ptr(y)],
            ),
            L::Compare {
                dt,
                op,
                idx: p,
                a,
                b,
                y,
            } => (
                format!("compare_{}", suffix(*dt)),
                vec![Arg::I32(op.code()), idx(p), ptr(a), ptr(b), ptr(y)],
            ),
            L::AndBool { idx: p, a, b, y } => {
                ("and_bool".into(), vec![idx(p), ptr(a), ptr(b), ptr(y)])
            }
            L::Select {
                size,
                idx: p,
                cond,
                a,
                b,
                y,
            } => (
                format!("select_{size}"),
                vec![idx(p), ptr(cond), ptr(a), ptr(b), ptr(y)],
            ),
            L::Copy { size, span: s } => (format!("copy_{size}"), span(s).to_vec()),
            L::CopyPair {
                size,
                first,
                second,
            } => (
                format!("copy_pair_{size}"),
                span(first).into_iter().chain(span(second)).collect(),
            ),
            L::Cast { from, to, n, x, y } => {
                let to = if *to == DType::Bool {
                    "bool"
                } else {
                    to.name()
                };
                (
                    format!("cast_{}_{to}", suffix(*from)),
                    vec![Arg::I64(*n), ptr(x), ptr(y)],
                )
            }
            L::BiasAdd {
                dt,
                rows,
                cols,
                y,
                bias,
                act,
            } => (
                format!("bias_add_{}", suffix(*dt)),
                vec![
                    Arg::I64(*rows),
                    Arg::I64(*cols),
                    ptr(y),
                    ptr(bias),
                    Arg::I32(act_arg(*act)),
                ],
            ),
            L::UnaryBinary {
                dt,
                f,
                op,
                n,
                a,
                b,
                y,
            } => (
                format!("unary_binary_{}", suffix(*dt)),
                vec![
                    Arg::I32(f.code()),
                    Arg::I32(op.code()),
                    Arg::I64(*n),
                    ptr(a),
                    ptr(b),
                    ptr(y),
                ],
            ),
            L::UnaryBinaryStrided {
                dt,
                f,
                op,
                idx: p,
                vec,
                a,
                b,
                y,
            } => (
                format!("unary_binary_s_{}", suffix(*dt)),
                vec![
                    Arg::I32(f.code()),
                    Arg::I32(op.code()),
                    idx(p),
                    Arg::I32(*vec as i32),
                    ptr(a),
                    ptr(b),
                    ptr(y),
                ],
            ),
            L::Rotary {
                dt,
                part,
                cos,
                sin,
                d,
                r,
                interleaved,
            } => (
                format!("rotary_{}", suffix(*dt)),
                vec![
                    idx(&part.idx),
                    ptr(&part.x),
                    ptr(cos),
                    ptr(sin),
                    ptr(&part.y),
                    Arg::I32(*d),
                    Arg::I32(*r),
                    Arg::I64(part.x_last_stride),
                    Arg::I32(*interleaved as i32),
                ],
            ),
            L::Rotary2 {
                dt,
                first,
                second,
                cos,
                sin,
                d,
                r,
                interleaved,
                tail,
            } => {
                let mut args = Vec::with_capacity(19);
                for p in [first, second] {
                    args.extend([idx(&p.idx), ptr(&p.x), ptr(&p.y), Arg::I64(p.x_last_stride)]);
                }
                args.extend([
                    ptr(cos),
                    ptr(sin),
                    Arg::I32(*d),
                    Arg::I32(*r),
                    Arg::I32(*interleaved as i32),
                ]);
                let family = match tail {
                    Rotary2Tail::None => "rotary2",
                    Rotary2Tail::Copy(s) => {
                        args.extend(span(s));
                        "rotary2_copy"
                    }
                    Rotary2Tail::Write { copy, rows: r } => {
                        args.extend(span_or_empty(copy));
                        args.extend(rows(r));
                        "rotary2_write"
                    }
                };
                (format!("{family}_{}", suffix(*dt)), args)
            }
            L::WriteRows {
                size,
                first,
                second,
                rows: r,
            } => {
                let mut args = span(first).to_vec();
                args.extend(span_or_empty(second));
                args.extend(rows(r));
                (format!("write_rows_{size}"), args)
            }
            L::LayerNorm {
                dt,
                rows,
                width,
                x,
                scale,
                bias,
                eps,
                y,
            } => (
                format!("layer_norm_{}", suffix(*dt)),
                vec![
                    Arg::I64(*rows),
                    Arg::I32(*width),
                    ptr(x),
                    ptr(scale),
                    opt(bias),
                    Arg::F32(*eps),
                    ptr(y),
                ],
            ),
            L::RmsNorm {
                dt,
                rows,
                width,
                x,
                scale,
                eps,
                y,
            } => (
                format!("rms_norm_{}", suffix(*dt)),
                vec![
                    Arg::I64(*rows),
                    Arg::I32(*width),
                    ptr(x),
                    ptr(scale),
                    Arg::F32(*eps),
                    ptr(y),
                ],
            ),
            L::AddNorm {
                dt,
                rms,
                rows,
                width,
                a,
                b,
                sum,
                scale,
                bias,
                eps,
                y,
                pre,
            } => (
                format!("add_norm_{}", suffix(*dt)),
                vec![
                    Arg::I32(*rms as i32),
                    Arg::I64(*rows),
                    Arg::I32(*width),
                    ptr(a),
                    ptr(b),
                    ptr(sum),
                    ptr(scale),
                    opt(bias),
                    Arg::F32(*eps),
                    ptr(y),
                    opt(pre),
                ],
            ),
            L::Softmax {
                dt,
                outer,
                len,
                inner,
                x,
                y,
            } => (
                format!("softmax_{}", suffix(*dt)),
                vec![
                    Arg::I64(*outer),
                    Arg::I32(*len),
                    Arg::I64(*inner),
                    ptr(x),
                    ptr(y),
                ],
            ),
            L::L2Norm {
                dt,
                outer,
                len,
                inner,
                eps,
                x,
                y,
            } => (
                format!("l2_norm_{}", suffix(*dt)),
                vec![
                    Arg::I64(*outer),
                    Arg::I32(*len),
                    Arg::I64(*inner),
                    Arg::F32(*eps),
                    ptr(x),
                    ptr(y),
                ],
            ),
            L::Reduce {
                dt,
                op,
                rows,
                len,
                x,
                y,
            } => (
                format!("reduce_{}", suffix(*dt)),
                vec![
                    Arg::I32(op.code()),
                    Arg::I64(*rows),
                    Arg::I64(*len),
                    ptr(x),
                    ptr(y),
                ],
            ),
            L::Gather {
                unit,
                index,
                outer,
                count,
                axis_len,
                inner,
                x,
                idx: i,
                y,
                flag,
            } => (
                format!("gather_{unit}_{}", suffix(*index)),
                vec![
                    Arg::I64(*outer),
                    Arg::I64(*count),
                    Arg::I64(*axis_len),
                    Arg::I64(*inner),
                    ptr(x),
                    ptr(i),
                    ptr(y),
                    ptr(flag),
                ],
            ),
            L::Attention {
                dt,
                kernel,
                p,
                q,
                k,
                v,
                mask,
                y,
            } => (
                format!("{}_{}", kernel.family(), suffix(*dt)),
                vec![
                    Arg::Attn(p.clone()),
                    ptr(q),
                    ptr(k),
                    ptr(v),
                    opt(mask),
                    ptr(y),
                ],
            ),
            L::Gemv {
                dt,
                kind,
                m,
                n,
                k,
                x,
                w,
                bias,
                y,
                act,
            } => {
                let (family, norm) = match kind {
                    GemvKind::Plain => ("gemv", None),
                    GemvKind::Mma => ("gemv_mma", None),
                    GemvKind::Norm(p) => ("gemv_norm", Some(&**p)),
                };
                let mut args = vec![
                    Arg::I32(*m),
                    Arg::I32(*n),
                    Arg::I32(*k),
                    opt(x),
                    ptr(w),
                    opt(bias),
                    ptr(y),
                    Arg::I32(act_arg(*act)),
                ];
                args.extend(prologue(norm));
                (format!("{family}_{}", suffix(*dt)), args)
            }
            L::GemvGlu {
                dt,
                norm,
                m,
                half,
                k,
                x,
                w,
                bias,
                y,
                act,
                op,
            } => {
                let family = if norm.is_some() {
                    "gemv_glu_norm"
                } else {
                    "gemv_glu"
                };
                let mut args = vec![
                    Arg::I32(*m),
                    Arg::I32(*half),
                    Arg::I32(*k),
                    opt(x),
                    ptr(w),
                    opt(bias),
                    ptr(y),
                    Arg::I32(act.code()),
                    Arg::I32(op.code()),
                ];
                args.extend(prologue(norm.as_deref()));
                (format!("{family}_{}", suffix(*dt)), args)
            }
            L::Conv {
                dt,
                dims: c,
                x,
                w,
                bias,
                y,
            } => {
                let dims = [
                    c.batch,
                    c.in_channels,
                    c.out_channels,
                    c.groups,
                    c.h,
                    c.w,
                    c.out_h,
                    c.out_w,
                    c.kernel_h,
                    c.kernel_w,
                    c.stride_h,
                    c.stride_w,
                    c.pad_h,
                    c.pad_w,
                    c.dilation_h,
                    c.dilation_w,
                ];
                let mut args: Vec<Arg> = dims.iter().map(|&v| Arg::I64(v)).collect();
                args.extend([ptr(x), ptr(w), opt(bias), ptr(y)]);
                (format!("conv_{}", suffix(*dt)), args)
            }
            L::ArgMax {
                dt,
                outer,
                len,
                inner,
                x,
                y,
            } => (
                format!("argmax_{}", suffix(*dt)),
                vec![
                    Arg::I64(*outer),
                    Arg::I64(*len),
                    Arg::I64(*inner),
                    ptr(x),
                    ptr(y),
                ],
            ),
            L::TopKPartial {
                dt,
                rows,
                len,
                k,
                chunks,
                x,
                cand_values,
                cand_indices,
            } => (
                format!("top_k_partial_{}", suffix(*dt)),
                vec![
                    Arg::I64(*rows),
                    Arg::I64(*len),
                    Arg::I32(*k),
                    Arg::I32(*chunks),
                    ptr(x),
                    ptr(cand_values),
                    ptr(cand_indices),
                ],
            ),
            L::TopKMerge {
                dt,
                rows,
                cands,
                k,
                cand_values,
                cand_indices,
                x,
                len,
                values,
                indices,
            } => (
                format!("top_k_merge_{}", suffix(*dt)),
                vec![
                    Arg::I64(*rows),
                    Arg::I64(*cands),
                    Arg::I32(*k),
                    ptr(cand_values),
                    ptr(cand_indices),
                    ptr(x),
                    Arg::I64(*len),
                    ptr(values),
                    ptr(indices),
                ],
            ),
        }
    }
}
