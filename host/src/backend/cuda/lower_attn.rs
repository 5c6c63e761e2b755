//! Decode attention fused with the launch before it. A decode step writes
//! its new key and value into their cache slots (`copy_pair`), or rotates
//! its queries and keys and writes the new key and value (`rotary2_copy`),
//! and the attention then reads them. When that launch writes nothing else
//! the attention reads, it folds into the attention (`attention_kv`,
//! `attention_rope`): each attention block computes its kv head's new key
//! and value (and its own rotated query) itself, so no block waits for
//! another, and the first head of each kv group still writes the slots, so
//! memory ends as the two launches would leave it. One launch per layer
//! fewer (TinyLlama: 22 of 142 per decode step).

use super::lower::{suffix, Planner};
use super::plan::*;

/// A decode attention's geometry, in elements.
struct Geo {
    b: i64,
    h: i64,
    kvh: i64,
    sk: i64,
    d: i64,
    dv: i64,
    esize: usize,
}

/// A reference's buffer and element offset.
fn at(r: &Ref, esize: usize) -> Option<(Buf, i64)> {
    r.offset
        .is_multiple_of(esize)
        .then_some((r.buf, (r.offset / esize) as i64))
}

/// Every (a, b, c) below (na, nb, nc).
fn all3(na: i64, nb: i64, nc: i64, mut f: impl FnMut(i64, i64, i64) -> bool) -> bool {
    (0..na).all(|a| (0..nb).all(|b| (0..nc).all(|c| f(a, b, c))))
}

/// Whether query view `q` [b, h, 1, d] reads exactly the `n` elements of
/// the contiguous output at `y`: row (bb, hh) from flat (bb x h + hh) x d,
/// as the fused kernel computes it.
fn query_rows(q: &Val, y: &Ref, n: i64, g: &Geo) -> bool {
    let (Some((qb, qo)), Some((yb, yo))) = (at(&q.at, g.esize), at(y, g.esize)) else {
        return false;
    };
    let s = &q.strides;
    qb == yb
        && n == g.b * g.h * g.d
        && all3(g.b, g.h, g.d, |bb, hh, t| {
            qo + bb * s[0] + hh * s[1] + t * s[3] == yo + (bb * g.h + hh) * g.d + t
        })
}

/// The key index whose rows in `view` [b, kvh, sk, width] are exactly
/// where a step writing `n` elements into `buf` puts them: element t of
/// (batch bb, kv head kh) is flat f = (bb x kvh + kh) x width + t, stored
/// at element `dst(f)`. `None` unless the other keys' rows lie outside
/// those slots (the fused kernel reads them from memory while the slots
/// are being written).
fn new_slot(
    view: &Val,
    width: i64,
    buf: Buf,
    n: i64,
    g: &Geo,
    dst: impl Fn(i64) -> i64,
) -> Option<i64> {
    let (vb, vo) = at(&view.at, g.esize)?;
    let s = &view.strides;
    if vb != buf || n != g.b * g.kvh * width || s[2] == 0 {
        return None;
    }
    let delta = dst(0) - vo;
    if delta % s[2] != 0 || !(0..g.sk).contains(&(delta / s[2])) {
        return None;
    }
    let j = delta / s[2];
    let addr =
        |bb: i64, kh: i64, jj: i64, t: i64| vo + bb * s[0] + kh * s[1] + jj * s[2] + t * s[3];
    if !all3(g.b, g.kvh, width, |bb, kh, t| {
        addr(bb, kh, j, t) == dst((bb * g.kvh + kh) * width + t)
    }) {
        return None;
    }
    // Lowest and highest element of key jj's rows (affine in each index).
    let span = |jj: i64| {
        let base = addr(0, 0, jj, 0);
        let ext = [(g.b, s[0]), (g.kvh, s[1]), (width, s[3])].map(|(len, st)| (len - 1) * st);
        let lo: i64 = ext.iter().map(|e| (*e).min(0)).sum();
        let hi: i64 = ext.iter().map(|e| (*e).max(0)).sum();
        (base + lo, base + hi)
    };
    let (lo, hi) = span(j);
    (0..g.sk)
        .filter(|&jj| jj != j)
        .all(|jj| {
            let (a, z) = span(jj);
            z < lo || a > hi
        })
        .then_some(j)
}

impl Planner<'_> {
    /// When the launch planned last writes this decode attention's new key
    /// and value (and, for `rotary2_copy`, its rotated queries) where the
    /// attention reads them, and nothing else the attention reads, removes
    /// it and returns the fused kernel's name and the arguments that follow
    /// the attention's own: the new key's index, then that launch's
    /// arguments (keys first for `attention_kv`).
    pub(super) fn take_new_kv(
        &mut self,
        q: &Val,
        k: &Val,
        v: &Val,
        mask: Option<&Val>,
    ) -> Option<(String, Vec<Arg>)> {
        let dims = |s: &[usize]| s.iter().map(|&x| x as i64).collect::<Vec<_>>();
        let (qs, ks, vs) = (dims(&q.shape), dims(&k.shape), dims(&v.shape));
        let g = Geo {
            b: qs[0],
            h: qs[1],
            kvh: ks[1],
            sk: ks[2],
            d: qs[3],
            dv: vs[3],
            esize: q.dtype.size(),
        };
        if qs[2] != 1 || g.kvh == 0 || g.h % g.kvh != 0 || k.dtype != q.dtype || v.dtype != q.dtype
        {
            return None;
        }
        let dt = suffix(q.dtype);
        let Some(Step::Kernel { name, args, .. }) = self.steps.last() else {
            return None;
        };
        let (name, args) = (name.clone(), args.clone());
        // Element offset of a written reference in `buf`.
        let off = |r: &Ref| at(r, g.esize).map(|(_, o)| o);
        let (kind, extra, written) = if name == format!("rotary2_copy_{dt}") {
            let [Arg::Idx(p1), Arg::Ptr(x1), Arg::Ptr(y1), xl1, Arg::Idx(p2), Arg::Ptr(x2), Arg::Ptr(y2), xl2, c, s, rd, rr, inter, Arg::Idx(p3), Arg::Ptr(x3), Arg::Ptr(y3)] =
                args.as_slice()
            else {
                return None;
            };
            let group1 = (p1, x1, y1, xl1);
            let group2 = (p2, x2, y2, xl2);
            // The queries' rotary is usually planned first.
            let (qg, kg) = if query_rows(q, y1, p1.n, &g) {
                (group1, group2)
            } else if query_rows(q, y2, p2.n, &g) {
                (group2, group1)
            } else {
                return None;
            };
            let (yk, y3o) = (off(kg.2)?, off(y3)?);
            let jk = new_slot(k, g.d, kg.2.buf, kg.0.n, &g, |f| yk + f)?;
            let jv = new_slot(v, g.dv, y3.buf, p3.n, &g, |f| y3o + p3.offsets(f)[1])?;
            if jk != jv {
                return None;
            }
            let extra = vec![
                Arg::I32(jk as i32),
                Arg::Idx(qg.0.clone()),
                Arg::Ptr(*qg.1),
                Arg::Ptr(*qg.2),
                qg.3.clone(),
                Arg::Idx(kg.0.clone()),
                Arg::Ptr(*kg.1),
                Arg::Ptr(*kg.2),
                kg.3.clone(),
                c.clone(),
                s.clone(),
                rd.clone(),
                rr.clone(),
                inter.clone(),
                Arg::Idx(p3.clone()),
                Arg::Ptr(*x3),
                Arg::Ptr(*y3),
            ];
            ("rope", extra, vec![qg.2.buf, kg.2.buf, y3.buf])
        } else if name == format!("copy_pair_{}", g.esize) {
            let [Arg::Idx(p1), Arg::Ptr(x1), Arg::Ptr(y1), Arg::Idx(p3), Arg::Ptr(x3), Arg::Ptr(y3)] =
                args.as_slice()
            else {
                return None;
            };
            let slots = |p: &IdxParam, y: &Ref, view: &Val, width: i64| {
                let yo = off(y)?;
                new_slot(view, width, y.buf, p.n, &g, |f| yo + p.offsets(f)[1])
            };
            let one = (p1, x1, y1);
            let two = (p3, x3, y3);
            let (kc, vc, j) = match (slots(p1, y1, k, g.d), slots(p3, y3, v, g.dv)) {
                (Some(a), Some(b)) if a == b => (one, two, a),
                _ => match (slots(p3, y3, k, g.d), slots(p1, y1, v, g.dv)) {
                    (Some(a), Some(b)) if a == b => (two, one, a),
                    _ => return None,
                },
            };
            let extra = vec![
                Arg::I32(j as i32),
                Arg::Idx(kc.0.clone()),
                Arg::Ptr(*kc.1),
                Arg::Ptr(*kc.2),
                Arg::Idx(vc.0.clone()),
                Arg::Ptr(*vc.1),
                Arg::Ptr(*vc.2),
            ];
            ("kv", extra, vec![kc.2.buf, vc.2.buf])
        } else {
            return None;
        };
        // What the attention reads from memory must not be written by the
        // fused launch, but for the new slots (served from shared memory):
        // queries, keys and values in three buffers, the mask in none of
        // the written ones.
        let (qbuf, kbuf, vbuf) = (q.at.buf, k.at.buf, v.at.buf);
        if qbuf == kbuf
            || qbuf == vbuf
            || kbuf == vbuf
            || mask.is_some_and(|m| written.contains(&m.at.buf))
        {
            return None;
        }
        self.steps.pop();
        Some((format!("attention_{kind}_{dt}"), extra))
    }
}
