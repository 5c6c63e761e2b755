//! The buffer arguments of a [`Launch`], visited in argument order: the
//! peepholes that move a launch's output (`write_in_place`) rewrite them
//! here, and a test checks the order against [`Launch::kernel`].

use super::*;

/// Calls `f` on every buffer argument of `l`, in argument order (a test
/// checks that against [`Launch::kernel`]).
pub(super) fn for_each_ref(l: &mut Launch, f: &mut dyn FnMut(&mut Ref)) {
    use Launch as L;
    fn some<'a>(o: &'a mut Option<Ref>, v: &mut Vec<&'a mut Ref>) {
        if let Some(r) = o {
            v.push(r);
        }
    }
    let mut v: Vec<&mut Ref> = Vec::new();
    match l {
        L::Unary { x, y, .. }
        | L::NotBool { x, y, .. }
        | L::UnaryStrided { x, y, .. }
        | L::Cast { x, y, .. }
        | L::Softmax { x, y, .. }
        | L::L2Norm { x, y, .. }
        | L::Reduce { x, y, .. }
        | L::ArgMax { x, y, .. } => v.extend([x, y]),
        L::Binary { a, b, y, .. }
        | L::Compare { a, b, y, .. }
        | L::AndBool { a, b, y, .. }
        | L::UnaryBinary { a, b, y, .. }
        | L::UnaryBinaryStrided { a, b, y, .. } => v.extend([a, b, y]),
        L::Select { cond, a, b, y, .. } => v.extend([cond, a, b, y]),
        L::Copy { span, .. } => v.extend([&mut span.x, &mut span.y]),
        L::CopyPair { first, second, .. } => {
            v.extend([&mut first.x, &mut first.y, &mut second.x, &mut second.y])
        }
        L::BiasAdd { y, bias, .. } => v.extend([y, bias]),
        L::Rotary { part, cos, sin, .. } => v.extend([&mut part.x, cos, sin, &mut part.y]),
        L::Rotary2 {
            first,
            second,
            cos,
            sin,
            tail,
            ..
        } => {
            v.extend([
                &mut first.x,
                &mut first.y,
                &mut second.x,
                &mut second.y,
                cos,
                sin,
            ]);
            match tail {
                Rotary2Tail::None => {}
                Rotary2Tail::Copy(s) => v.extend([&mut s.x, &mut s.y]),
                Rotary2Tail::Write { copy, rows } => {
                    if let Some(s) = copy {
                        v.extend([&mut s.x, &mut s.y]);
                    }
                    v.push(&mut rows.start);
                }
            }
        }
        L::WriteRows {
            first,
            second,
            rows,
            ..
        } => {
            v.extend([&mut first.x, &mut first.y]);
            if let Some(s) = second {
                v.extend([&mut s.x, &mut s.y]);
            }
            v.push(&mut rows.start);
        }
        L::LayerNorm {
            x, scale, bias, y, ..
        } => {
            v.extend([x, scale]);
            some(bias, &mut v);
            v.push(y);
        }
        L::RmsNorm { x, scale, y, .. } => v.extend([x, scale, y]),
        L::AddNorm {
            a,
            b,
            sum,
            scale,
            bias,
            y,
            pre,
            ..
        } => {
            v.extend([a, b, sum, scale]);
            some(bias, &mut v);
            v.push(y);
            some(pre, &mut v);
        }
        L::Gather {
            x, idx, y, flag, ..
        } => v.extend([x, idx, y, flag]),
        L::Attention {
            q,
            k,
            v: vv,
            mask,
            y,
            ..
        } => {
            v.extend([q, k, vv]);
            some(mask, &mut v);
            v.push(y);
        }
        L::Gemv {
            kind,
            x,
            w,
            bias,
            y,
            ..
        } => {
            some(x, &mut v);
            v.push(w);
            some(bias, &mut v);
            v.push(y);
            if let GemvKind::Norm(p) = kind {
                prologue_refs(p, &mut v);
            }
        }
        L::GemvGlu {
            norm,
            x,
            w,
            bias,
            y,
            ..
        } => {
            some(x, &mut v);
            v.push(w);
            some(bias, &mut v);
            v.push(y);
            if let Some(p) = norm {
                prologue_refs(p, &mut v);
            }
        }
        L::Conv { x, w, bias, y, .. } => {
            v.extend([x, w]);
            some(bias, &mut v);
            v.push(y);
        }
        L::TopKPartial {
            x,
            cand_values,
            cand_indices,
            ..
        } => v.extend([x, cand_values, cand_indices]),
        L::TopKMerge {
            cand_values,
            cand_indices,
            x,
            values,
            indices,
            ..
        } => v.extend([cand_values, cand_indices, x, values, indices]),
    }
    for r in v {
        f(r);
    }
}

fn prologue_refs<'a>(p: &'a mut NormPrologue, v: &mut Vec<&'a mut Ref>) {
    v.push(&mut p.a);
    v.extend([&mut p.b, &mut p.pre, &mut p.sum].into_iter().flatten());
    v.push(&mut p.scale);
    if let Some(r) = &mut p.bias {
        v.push(r);
    }
}
