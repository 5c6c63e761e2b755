//! The graphs of the plan snapshot (`snapshot_tests.rs`): an encoder
//! layer, a decode step over fixed-slot caches, decode steps over prepended
//! caches, prefill attention, convolutions, reductions and element-wise
//! families, and the families left over.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ir::builder::{BuilderLimits, GraphBuilder};
use crate::ir::conv::ConvAttrs;
use crate::ir::{BinaryOp, CompareOp, DType, Dim, Graph, ReduceOp, UnaryOp};

fn fixed(d: &[u64]) -> Vec<Dim> {
    d.iter().map(|&x| Dim::Fixed(x)).collect()
}

fn sym(name: &str) -> Dim {
    Dim::Sym(name.into())
}

fn weights(list: &[(&str, &[u64])]) -> Arc<HashMap<String, (DType, Vec<u64>)>> {
    Arc::new(
        list.iter()
            .map(|(n, s)| (n.to_string(), (DType::F32, s.to_vec())))
            .collect(),
    )
}

/// A BERT-style encoder layer over [batch, seq, 32], 4 heads of 8, with a
/// boolean padding mask.
pub(super) fn encoder_layer() -> Graph {
    let (d, ff) = (32u64, 64u64);
    let w = weights(&[
        ("q.w", &[d, d]),
        ("q.b", &[d]),
        ("k.w", &[d, d]),
        ("k.b", &[d]),
        ("v.w", &[d, d]),
        ("v.b", &[d]),
        ("o.w", &[d, d]),
        ("o.b", &[d]),
        ("ln1.s", &[d]),
        ("ln1.b", &[d]),
        ("up.w", &[ff, d]),
        ("up.b", &[ff]),
        ("down.w", &[d, ff]),
        ("down.b", &[d]),
        ("ln2.s", &[d]),
        ("ln2.b", &[d]),
    ]);
    let mut b = GraphBuilder::new("encoder", w, BuilderLimits::default());
    let x = b
        .input(
            "x",
            DType::F32,
            vec![sym("batch"), sym("seq"), Dim::Fixed(d)],
        )
        .unwrap();
    let mask = b
        .input(
            "mask",
            DType::Bool,
            vec![sym("batch"), Dim::Fixed(1), Dim::Fixed(1), sym("seq")],
        )
        .unwrap();
    let mut heads = Vec::new();
    for p in ["q", "k", "v"] {
        let (wn, bn) = (
            b.weight(&format!("{p}.w")).unwrap(),
            b.weight(&format!("{p}.b")).unwrap(),
        );
        let y = b.linear(x, wn, Some(bn)).unwrap();
        let y = b.reshape(y, vec![0, 0, 4, 8]).unwrap();
        heads.push(b.permute(y, vec![0, 2, 1, 3]).unwrap());
    }
    let a = b
        .attention(heads[0], heads[1], heads[2], Some(mask), false, None)
        .unwrap();
    let a = b.permute(a, vec![0, 2, 1, 3]).unwrap();
    let a = b.reshape(a, vec![0, 0, -1]).unwrap();
    let (ow, ob) = (b.weight("o.w").unwrap(), b.weight("o.b").unwrap());
    let o = b.linear(a, ow, Some(ob)).unwrap();
    let r = b.binary(BinaryOp::Add, o, x).unwrap();
    let (s1, b1) = (b.weight("ln1.s").unwrap(), b.weight("ln1.b").unwrap());
    let h = b.layer_norm(r, s1, Some(b1), 1e-12).unwrap();
    let (uw, ub) = (b.weight("up.w").unwrap(), b.weight("up.b").unwrap());
    let u = b.linear(h, uw, Some(ub)).unwrap();
    let u = b.unary(UnaryOp::Gelu, u).unwrap();
    let (dw, db) = (b.weight("down.w").unwrap(), b.weight("down.b").unwrap());
    let dn = b.linear(u, dw, Some(db)).unwrap();
    let r2 = b.binary(BinaryOp::Add, dn, h).unwrap();
    let (s2, b2) = (b.weight("ln2.s").unwrap(), b.weight("ln2.b").unwrap());
    let y = b.layer_norm(r2, s2, Some(b2), 1e-12).unwrap();
    b.output("y", y).unwrap();
    b.finish().unwrap()
}

/// A Llama-style decode step over [batch, 1] tokens: embedding, rms norm,
/// fused q/k/v projection, RoPE, keys and values written into fixed-slot
/// caches [slots, batch, 2, 64] (`write-rows`), grouped-query attention
/// (4 heads over 2), output projection, residual, fused gate/up SwiGLU,
/// final norm, lm head and argmax.
pub(super) fn decode_step() -> Graph {
    let (d, hd, ff, vocab, slots) = (256u64, 64u64, 128u64, 96u64, 8u64);
    let w = weights(&[
        ("embed", &[vocab, d]),
        ("n1", &[d]),
        ("qkv", &[(4 + 2 + 2) * hd, d]),
        ("o", &[d, d]),
        ("n2", &[d]),
        ("gate_up", &[2 * ff, d]),
        ("down", &[d, ff]),
        ("nf", &[d]),
        ("head", &[vocab, d]),
    ]);
    let mut b = GraphBuilder::new("decode", w, BuilderLimits::default());
    let ids = b
        .input("ids", DType::I64, vec![sym("batch"), Dim::Fixed(1)])
        .unwrap();
    let slot = b.input("slot", DType::I64, fixed(&[1])).unwrap();
    let rope = vec![sym("batch"), Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(hd)];
    let cos = b.input("cos", DType::F32, rope.clone()).unwrap();
    let sin = b.input("sin", DType::F32, rope).unwrap();
    let table = b.weight("embed").unwrap();
    let x = b.embedding(table, ids).unwrap();
    let n1 = b.weight("n1").unwrap();
    let h = b.rms_norm(x, n1, 1e-6).unwrap();
    let wqkv = b.weight("qkv").unwrap();
    let qkv = b.linear(h, wqkv, None).unwrap();
    let part = |b: &mut GraphBuilder, from: i64, n: i64| {
        let s = b.slice(qkv, -1, from * 64, (from + n) * 64).unwrap();
        let r = b.reshape(s, vec![0, 0, n, -1]).unwrap();
        b.permute(r, vec![0, 2, 1, 3]).unwrap()
    };
    let (q, k, v) = (part(&mut b, 0, 4), part(&mut b, 4, 2), part(&mut b, 6, 2));
    let q = b.rotary(q, cos, sin, false).unwrap();
    let k = b.rotary(k, cos, sin, false).unwrap();
    let mut kv = Vec::new();
    for (name, new) in [("k", k), ("v", v)] {
        let shape = vec![
            Dim::Fixed(slots),
            sym("batch"),
            Dim::Fixed(2),
            Dim::Fixed(hd),
        ];
        let old = b.state(name, DType::F32, shape).unwrap();
        let new = b.permute(new, vec![2, 0, 1, 3]).unwrap();
        let written = b.write_rows(old, new, slot).unwrap();
        b.update_state(name, written).unwrap();
        kv.push(b.permute(written, vec![1, 2, 0, 3]).unwrap());
    }
    let a = b.attention(q, kv[0], kv[1], None, false, None).unwrap();
    let a = b.permute(a, vec![0, 2, 1, 3]).unwrap();
    let a = b.reshape(a, vec![0, 0, -1]).unwrap();
    let wo = b.weight("o").unwrap();
    let o = b.linear(a, wo, None).unwrap();
    let r = b.binary(BinaryOp::Add, x, o).unwrap();
    let n2 = b.weight("n2").unwrap();
    let h2 = b.rms_norm(r, n2, 1e-6).unwrap();
    let wgu = b.weight("gate_up").unwrap();
    let gu = b.linear(h2, wgu, None).unwrap();
    let gate = b.slice(gu, -1, 0, ff as i64).unwrap();
    let up = b.slice(gu, -1, ff as i64, 2 * ff as i64).unwrap();
    let g = b.unary(UnaryOp::Silu, gate).unwrap();
    let m = b.binary(BinaryOp::Mul, g, up).unwrap();
    let wd = b.weight("down").unwrap();
    let dn = b.linear(m, wd, None).unwrap();
    let r2 = b.binary(BinaryOp::Add, r, dn).unwrap();
    let nf = b.weight("nf").unwrap();
    let f = b.rms_norm(r2, nf, 1e-6).unwrap();
    let wh = b.weight("head").unwrap();
    let logits = b.linear(f, wh, None).unwrap();
    let next = b.argmax(logits, -1, false).unwrap();
    b.output("logits", logits).unwrap();
    b.output("next", next).unwrap();
    b.finish().unwrap()
}

/// A decode step over caches the new key and value are prepended to (a
/// concat, then a slice kept as the next state), with or without RoPE.
pub(super) fn prepend_step(rope: bool) -> Graph {
    let mut b = GraphBuilder::new(
        "prepend",
        Arc::new(HashMap::new()),
        BuilderLimits::default(),
    );
    let (heads, kvh, hd, slots) = (4i64, 2i64, 4u64, 3u64);
    let x = b.input("x", DType::F32, fixed(&[2, 1, 32])).unwrap();
    let y = b.unary(UnaryOp::Neg, x).unwrap();
    let part = |b: &mut GraphBuilder, from: i64, n: i64| {
        let s = b.slice(y, -1, from * 4, (from + n) * 4).unwrap();
        let r = b.reshape(s, vec![0, 0, n, -1]).unwrap();
        b.permute(r, vec![0, 2, 1, 3]).unwrap()
    };
    let (mut q, mut k) = (part(&mut b, 0, heads), part(&mut b, heads, kvh));
    let v = part(&mut b, heads + kvh, kvh);
    if rope {
        let cos = b.input("cos", DType::F32, fixed(&[2, 1, 1, hd])).unwrap();
        let sin = b.input("sin", DType::F32, fixed(&[2, 1, 1, hd])).unwrap();
        q = b.rotary(q, cos, sin, false).unwrap();
        k = b.rotary(k, cos, sin, false).unwrap();
    }
    let mut all = Vec::new();
    for (name, new) in [("k", k), ("v", v)] {
        let old = b
            .state(name, DType::F32, fixed(&[slots, 2, 2, hd]))
            .unwrap();
        let slot_major = b.permute(new, vec![2, 0, 1, 3]).unwrap();
        let prepended = b.concat(vec![slot_major, old], 0).unwrap();
        let kept = b.slice(prepended, 0, 0, slots as i64).unwrap();
        b.update_state(name, kept).unwrap();
        all.push(b.permute(prepended, vec![1, 2, 0, 3]).unwrap());
    }
    let a = b.attention(q, all[0], all[1], None, true, None).unwrap();
    b.output("a", a).unwrap();
    b.finish().unwrap()
}

/// Causal prefill attention over [1, heads, seq, 64] with a float mask,
/// softmax of the scores of a separate matmul and an l2 normalisation.
pub(super) fn prefill_attention() -> Graph {
    let mut b = GraphBuilder::new(
        "prefill",
        Arc::new(HashMap::new()),
        BuilderLimits::default(),
    );
    let qs = vec![Dim::Fixed(1), Dim::Fixed(4), sym("seq"), Dim::Fixed(64)];
    let ks = vec![Dim::Fixed(1), Dim::Fixed(2), sym("seq"), Dim::Fixed(64)];
    let q = b.input("q", DType::F32, qs).unwrap();
    let k = b.input("k", DType::F32, ks.clone()).unwrap();
    let v = b.input("v", DType::F32, ks).unwrap();
    let y = b.attention(q, k, v, None, true, Some(0.125)).unwrap();
    b.output("y", y).unwrap();
    let mask = b
        .input(
            "m",
            DType::F32,
            vec![Dim::Fixed(1), Dim::Fixed(1), sym("seq"), sym("seq")],
        )
        .unwrap();
    let z = b.attention(q, k, v, Some(mask), false, None).unwrap();
    b.output("z", z).unwrap();
    let kt = b.permute(k, vec![0, 1, 3, 2]).unwrap();
    let q2 = b.slice(q, 1, 0, 2).unwrap();
    let s = b.matmul(q2, kt).unwrap();
    let p = b.softmax(s, -1).unwrap();
    let n = b.l2_normalize(p, -1, 1e-6).unwrap();
    b.output("n", n).unwrap();
    b.finish().unwrap()
}

/// A 1-D strided, padded convolution with bias, GELU, and a grouped 2-D
/// dilated one without.
pub(super) fn convs() -> Graph {
    let w = weights(&[
        ("c1.w", &[8, 4, 3]),
        ("c1.b", &[8]),
        ("c2.w", &[8, 2, 3, 3]),
    ]);
    let mut b = GraphBuilder::new("conv", w, BuilderLimits::default());
    let x = b
        .input(
            "x",
            DType::F32,
            vec![Dim::Fixed(2), Dim::Fixed(4), sym("len")],
        )
        .unwrap();
    let (w1, b1) = (b.weight("c1.w").unwrap(), b.weight("c1.b").unwrap());
    let a1 = ConvAttrs {
        stride: vec![2],
        pad: vec![(1, 1)],
        dilation: vec![1],
        groups: 1,
    };
    let y = b.conv(x, w1, Some(b1), a1).unwrap();
    let y = b.unary(UnaryOp::Gelu, y).unwrap();
    b.output("y", y).unwrap();
    let img = b.input("img", DType::F32, fixed(&[1, 8, 9, 7])).unwrap();
    let w2 = b.weight("c2.w").unwrap();
    let a2 = ConvAttrs {
        stride: vec![1, 2],
        pad: vec![(2, 2), (1, 1)],
        dilation: vec![2, 1],
        groups: 4,
    };
    let z = b.conv(img, w2, None, a2).unwrap();
    b.output("z", z).unwrap();
    b.finish().unwrap()
}

/// Reductions, arg-max, top-k, casts, compares, selects, gathers and
/// broadcast element-wise ops over floats, integers and booleans.
pub(super) fn reductions_and_elementwise() -> Graph {
    let mut b = GraphBuilder::new("misc", Arc::new(HashMap::new()), BuilderLimits::default());
    let x = b
        .input(
            "x",
            DType::F32,
            vec![sym("rows"), Dim::Fixed(6), Dim::Fixed(40)],
        )
        .unwrap();
    let i = b.input("i", DType::I64, fixed(&[3, 5])).unwrap();
    let ids = b.input("ids", DType::I32, fixed(&[4])).unwrap();
    for (k, op) in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min]
        .into_iter()
        .enumerate()
    {
        let axes = if k % 2 == 0 { vec![-1] } else { vec![0, 2] };
        let r = b.reduce(op, x, axes, k == 1).unwrap();
        b.output(&format!("r{k}"), r).unwrap();
        let ri = b.reduce(op, i, vec![1], false).unwrap();
        b.output(&format!("ri{k}"), ri).unwrap();
    }
    let am = b.argmax(x, 1, true).unwrap();
    b.output("am", am).unwrap();
    let (tv, ti) = b.top_k(x, 5).unwrap();
    b.output("tv", tv).unwrap();
    b.output("ti", ti).unwrap();
    let c = b.cast(x, DType::I32).unwrap();
    let cb = b.cast(c, DType::Bool).unwrap();
    let nb = b.unary(UnaryOp::Not, cb).unwrap();
    let half = b.scalar(0.5, DType::F32).unwrap();
    let gt = b.compare(CompareOp::Greater, x, half).unwrap();
    let both = b.and(gt, nb).unwrap();
    let sel = b.select(both, x, half).unwrap();
    b.output("sel", sel).unwrap();
    let back = b.cast(both, DType::F32).unwrap();
    b.output("back", back).unwrap();
    let ci = b.compare(CompareOp::LessOrEqual, i, i).unwrap();
    b.output("ci", ci).unwrap();
    let neg = b.unary(UnaryOp::Abs, i).unwrap();
    let sum = b.binary(BinaryOp::Maximum, neg, i).unwrap();
    b.output("sum", sum).unwrap();
    let t = b.permute(x, vec![2, 0, 1]).unwrap();
    let e = b.unary(UnaryOp::Exp, t).unwrap();
    let p = b.binary(BinaryOp::Pow, e, half).unwrap();
    b.output("p", p).unwrap();
    let row = b.slice(x, 1, 0, 1).unwrap();
    let g = b.gather(x, ids, 1).unwrap();
    let sub = b.binary(BinaryOp::Sub, g, row).unwrap();
    b.output("sub", sub).unwrap();
    let u = b.unsqueeze(row, 0).unwrap();
    let ex = b
        .expand(
            u,
            vec![Dim::Fixed(2), sym("rows"), Dim::Fixed(1), Dim::Fixed(40)],
        )
        .unwrap();
    let cat = b.concat(vec![ex, ex], 2).unwrap();
    let s = b.unary(UnaryOp::Sigmoid, cat).unwrap();
    b.output("cat", s).unwrap();
    b.finish().unwrap()
}

/// The remaining families: plain layer and rms norms, a dense SwiGLU, a
/// lone rotary and a rotary pair that cannot merge, decode attention of
/// head dim 32 and prefill attention of head dim 128.
pub(super) fn leftovers() -> Graph {
    let mut b = GraphBuilder::new(
        "leftovers",
        Arc::new(HashMap::new()),
        BuilderLimits::default(),
    );
    let x = b.input("x", DType::F32, fixed(&[4, 32])).unwrap();
    let s = b.input("s", DType::F32, fixed(&[32])).unwrap();
    let ln = b.layer_norm(x, s, None, 1e-5).unwrap();
    let rn = b.rms_norm(ln, s, 1e-6).unwrap();
    let up = b.input("up", DType::F32, fixed(&[4, 32])).unwrap();
    let g = b.unary(UnaryOp::Silu, rn).unwrap();
    let m = b.binary(BinaryOp::Mul, g, up).unwrap();
    b.output("m", m).unwrap();
    let t = b.input("t", DType::F32, fixed(&[1, 2, 3, 8])).unwrap();
    let cos = b.input("cos", DType::F32, fixed(&[1, 1, 3, 4])).unwrap();
    let sin = b.input("sin", DType::F32, fixed(&[1, 1, 3, 4])).unwrap();
    let r1 = b.rotary(t, cos, sin, true).unwrap();
    let r2 = b.rotary(r1, cos, sin, true).unwrap();
    b.output("r2", r2).unwrap();
    let lone = b.input("lone", DType::F32, fixed(&[2, 3, 8])).unwrap();
    let r3 = b.unary(UnaryOp::Tanh, lone).unwrap();
    let c3 = b.input("c3", DType::F32, fixed(&[3, 8])).unwrap();
    let r3 = b.rotary(r3, c3, c3, false).unwrap();
    b.output("r3", r3).unwrap();
    let q = b.input("q", DType::F32, fixed(&[2, 2, 1, 32])).unwrap();
    let k = b.input("k", DType::F32, fixed(&[2, 2, 9, 32])).unwrap();
    let a = b.attention(q, k, k, None, false, None).unwrap();
    b.output("a", a).unwrap();
    let q2 = b.input("q2", DType::F32, fixed(&[1, 2, 24, 128])).unwrap();
    let a2 = b.attention(q2, q2, q2, None, true, None).unwrap();
    b.output("a2", a2).unwrap();
    let bools = b.compare(CompareOp::Equal, ln, rn).unwrap();
    let same = b.compare(CompareOp::Equal, bools, bools).unwrap();
    b.output("same", same).unwrap();
    b.finish().unwrap()
}
