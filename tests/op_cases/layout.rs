//! Cases for reshape, permute, slice, concat, unsqueeze, squeeze, expand,
//! symbolic axes, session state (a KV cache growing along `past+seq`, and
//! fixed-slot caches written with `write-rows`).

use super::{count, fixed, int_tensor, sym, Built, Case};
use host::ir::{BinaryOp, DType, Dim};
use host::tensor::Tensor;

pub fn cases() -> Vec<Built> {
    let mut v = Vec::new();
    v.extend(reshape_permute());
    v.extend(slice_concat());
    v.extend(squeeze_expand());
    v.extend(state());
    v
}

/// An f32 input with symbolic `dims`, fed uniform values of `shape`.
fn sym_input(
    c: &mut Case,
    name: &str,
    dims: Vec<Dim>,
    shape: &[u64],
) -> Result<u32, host::ir::GraphError> {
    let v = c.rng.floats(count(shape), -2., 2.);
    c.input(name, dims, Tensor::from_f32(shape.to_vec(), &v))
}

fn reshape_permute() -> Vec<Built> {
    let mut v = Vec::new();
    for (name, shape, spec) in [
        ("reshape/copy-and-infer", &[2u64, 3, 4][..], vec![0i64, -1]),
        ("reshape/split", &[6, 4], vec![2, 3, 2, 2]),
        ("reshape/flatten", &[2, 3, 4], vec![-1]),
    ] {
        v.push((|| {
            let mut c = Case::new(name);
            let x = c.uniform("x", shape, -2., 2.)?;
            let y = c.b.reshape(x, spec.clone())?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    v.push((|| {
        // Heads split over symbolic batch and sequence, as encoders do.
        let mut c = Case::new("reshape/symbolic-heads");
        let x = sym_input(
            &mut c,
            "x",
            vec![sym("batch"), sym("seq"), Dim::Fixed(16)],
            &[2, 5, 16],
        )?;
        let h = c.b.reshape(x, vec![0, 0, 4, -1])?;
        let p = c.b.permute(h, vec![0, 2, 1, 3])?;
        c.output("heads", p)?;
        let back = c.b.permute(p, vec![0, 2, 1, 3])?;
        let merged = c.b.reshape(back, vec![0, 0, -1])?;
        c.output("merged", merged)?;
        c.finish()
    })());
    for (name, perm) in [
        ("permute/0213", vec![0u32, 2, 1, 3]),
        ("permute/3102", vec![3, 1, 0, 2]),
    ] {
        v.push((|| {
            let mut c = Case::new(name);
            let x = c.uniform("x", &[2, 3, 4, 5], -2., 2.)?;
            let y = c.b.permute(x, perm.clone())?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    v
}

fn slice_concat() -> Vec<Built> {
    let mut v = Vec::new();
    for (name, axis, start, end) in [
        ("slice/middle", 1, 2i64, 7i64),
        ("slice/end-clamped", 1, 5, 100),
        ("slice/last-axis", -1, 1, 2),
        ("slice/first-axis", 0, 0, 3),
    ] {
        v.push((|| {
            let mut c = Case::new(name);
            let x = c.uniform("x", &[4, 10, 3], -2., 2.)?;
            let y = c.b.slice(x, axis, start, end)?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    v.push((|| {
        let mut c = Case::new("slice/symbolic-axis");
        let x = sym_input(
            &mut c,
            "x",
            vec![Dim::Fixed(2), sym("seq"), Dim::Fixed(3)],
            &[2, 9, 3],
        )?;
        let y = c.b.slice(x, 1, 1, 4)?;
        c.output("y", y)?;
        c.finish()
    })());
    for (name, shapes, axis) in [
        ("concat/axis0", vec![&[2u64, 3][..], &[4, 3]], 0),
        (
            "concat/axis1/three",
            vec![&[2, 1, 4][..], &[2, 3, 4], &[2, 2, 4]],
            1,
        ),
        ("concat/last-axis", vec![&[3, 2][..], &[3, 5]], -1),
    ] {
        v.push((|| {
            let mut c = Case::new(name);
            let mut xs = Vec::new();
            for (i, s) in shapes.iter().enumerate() {
                xs.push(c.uniform(&format!("x{i}"), s, -2., 2.)?);
            }
            let y = c.b.concat(xs, axis)?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    v.push((|| {
        // Slabs along axis 0: inputs read only by the concat are uploaded in
        // place (CUDA); `shared` is read twice, `new` is computed.
        let mut c = Case::new("concat/axis0/inputs-in-place");
        let new = c.uniform("x", &[1, 2, 3], -2., 2.)?;
        let new = c.b.unary(host::ir::UnaryOp::Neg, new)?;
        let cache = c.uniform("cache", &[5, 2, 3], -2., 2.)?;
        let shared = c.uniform("shared", &[2, 2, 3], -2., 2.)?;
        let y = c.b.concat(vec![new, cache, shared], 0)?;
        c.output("y", y)?;
        let twice = c.b.binary(BinaryOp::Add, shared, shared)?;
        c.output("twice", twice)?;
        c.finish()
    })());
    v.push((|| {
        // Rotate-half as RoPE does: concat(-x2, x1) of the two halves.
        let mut c = Case::new("concat/rotate-half");
        let x = c.uniform("x", &[2, 3, 8], -2., 2.)?;
        let x1 = c.b.slice(x, -1, 0, 4)?;
        let x2 = c.b.slice(x, -1, 4, 8)?;
        let n2 = c.b.unary(host::ir::UnaryOp::Neg, x2)?;
        let y = c.b.concat(vec![n2, x1], -1)?;
        c.output("y", y)?;
        c.finish()
    })());
    v
}

fn squeeze_expand() -> Vec<Built> {
    let mut v = Vec::new();
    v.push((|| {
        let mut c = Case::new("unsqueeze-squeeze");
        let x = c.uniform("x", &[3, 4], -2., 2.)?;
        let a = c.b.unsqueeze(x, 0)?;
        let b = c.b.unsqueeze(a, -1)?;
        c.output("unsqueezed", b)?;
        let s = c.b.squeeze(b, 0)?;
        let t = c.b.unsqueeze(s, 1)?;
        c.output("middle", t)?;
        let u = c.b.squeeze(t, 1)?;
        let w = c.b.squeeze(u, -1)?;
        c.output("back", w)?;
        c.finish()
    })());
    for (name, shape, target) in [
        ("expand/3x1-to-2x3x4", &[3u64, 1][..], &[2u64, 3, 4][..]),
        ("expand/1-to-5", &[1], &[5]),
        ("expand/same-rank", &[1, 4], &[3, 4]),
    ] {
        v.push((|| {
            let mut c = Case::new(name);
            let x = c.uniform("x", shape, -2., 2.)?;
            let y = c.b.expand(x, fixed(target))?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    v.push((|| {
        // A symbolic target whose axis comes from an input declared later
        // (the empty slots of a growing KV cache).
        let mut c = Case::new("expand/axis-of-a-later-input");
        let zero = c.b.scalar(0.5, DType::F32)?;
        let empty =
            c.b.expand(zero, vec![Dim::Fixed(2), sym("batch"), Dim::Fixed(3)])?;
        let x = sym_input(
            &mut c,
            "x",
            vec![Dim::Fixed(4), sym("batch"), Dim::Fixed(3)],
            &[4, 5, 3],
        )?;
        let y = c.b.concat(vec![x, empty], 0)?;
        c.output("y", y)?;
        c.finish()
    })());
    v.push((|| {
        // A padding mask [batch, seq] expanded to [batch, heads, seq, seq].
        let mut c = Case::new("expand/symbolic-mask");
        let dims = vec![sym("batch"), sym("seq")];
        let x = sym_input(&mut c, "x", dims, &[2, 6])?;
        let a = c.b.unsqueeze(x, 1)?;
        let m = c.b.unsqueeze(a, 1)?;
        let target = vec![sym("batch"), Dim::Fixed(3), sym("seq"), sym("seq")];
        let y = c.b.expand(m, target)?;
        c.output("y", y)?;
        c.finish()
    })());
    v
}

/// A KV-cache step: state `[batch, 2, past, 8]` concatenated with new keys
/// along the `past+seq` axis, the next state and causal attention over it.
fn kv_step(name: &str, past: u64, seq: u64) -> Built {
    let mut c = Case::new(name);
    let cache = vec![sym("batch"), Dim::Fixed(2), sym("past"), Dim::Fixed(8)];
    let new = vec![sym("batch"), Dim::Fixed(2), sym("seq"), Dim::Fixed(8)];
    let shape = |s: u64| [2u64, 2, s, 8];
    let kv = c.rng.floats(count(&shape(past)), -2., 2.);
    let st = c.state("k", cache, Tensor::from_f32(shape(past).to_vec(), &kv))?;
    let k = sym_input(&mut c, "k_new", new.clone(), &shape(seq))?;
    let q = sym_input(&mut c, "q", new, &shape(seq))?;
    let all = c.b.concat(vec![st, k], 2)?;
    c.b.update_state("k", all)?;
    let y = c.b.attention(q, all, all, None, true, None)?;
    c.output("y", y)?;
    // A fixed-length tail of the grown axis.
    let two = c.b.scalar(2.0, DType::F32)?;
    let scaled = c.b.binary(BinaryOp::Mul, all, two)?;
    let head = c.b.slice(scaled, 2, 0, 1)?;
    c.output("first", head)?;
    c.finish()
}

/// A slot-major cache [slots, batch 2, heads 2, 8] (a state) with a decode
/// step's keys [batch, heads, 1, 8] written into slot `start` (clamped)
/// with `write-rows`, then attended to: the decode step of fixed-slot KV
/// caches.
fn slot_step(name: &str, slots: u64, start: i64) -> Built {
    let mut c = Case::new(name);
    let cache = [slots, 2, 2, 8];
    let kv = c.rng.floats(count(&cache), -2., 2.);
    let st = c.state("k", fixed(&cache), Tensor::from_f32(cache.to_vec(), &kv))?;
    let k = sym_input(&mut c, "k_new", fixed(&[2, 2, 1, 8]), &[2, 2, 1, 8])?;
    let q = sym_input(&mut c, "q", fixed(&[2, 2, 1, 8]), &[2, 2, 1, 8])?;
    let at = c.input(
        "slot",
        fixed(&[1]),
        int_tensor(DType::I64, vec![1], &[start]),
    )?;
    let slot_major = c.b.permute(k, vec![2, 0, 1, 3])?;
    let written = c.b.write_rows(st, slot_major, at)?;
    c.b.update_state("k", written)?;
    let keys = c.b.permute(written, vec![1, 2, 0, 3])?;
    let y = c.b.attention(q, keys, keys, None, false, None)?;
    c.output("y", y)?;
    c.finish()
}

/// `write-rows` on plain inputs: several rows, strided updates, i64 data.
fn write_rows() -> Vec<Built> {
    let mut v = Vec::new();
    for (name, start) in [
        ("write-rows/middle", 2i64),
        ("write-rows/clamped-high", 9),
        ("write-rows/clamped-low", -3),
    ] {
        v.push((|| {
            let mut c = Case::new(name);
            let x = c.uniform("x", &[6, 3, 4], -2., 2.)?;
            // A transposed update: [4, 2, 3] seen as [2, 3, 4].
            let u = c.uniform("u", &[4, 2, 3], -2., 2.)?;
            let u = c.b.permute(u, vec![1, 2, 0])?;
            let at = c.input("at", fixed(&[1]), int_tensor(DType::I64, vec![1], &[start]))?;
            let y = c.b.write_rows(x, u, at)?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    v.push((|| {
        let mut c = Case::new("write-rows/i64-all-rows");
        let x = c.ints("x", DType::I64, &[3, 5], -9, 9)?;
        let u = c.ints("u", DType::I64, &[3, 5], -9, 9)?;
        let at = c.input("at", fixed(&[1]), int_tensor(DType::I64, vec![1], &[1]))?;
        let y = c.b.write_rows(x, u, at)?;
        c.output("y", y)?;
        c.finish()
    })());
    v
}

fn state() -> Vec<Built> {
    let mut v = vec![
        kv_step("state/kv-cache/past5-seq3", 5, 3),
        kv_step("state/kv-cache/decode-past7", 7, 1),
        kv_step("state/kv-cache/empty-past", 0, 4),
        slot_step("state/slot-cache/write-slot3", 8, 3),
        slot_step("state/slot-cache/write-last", 5, 4),
    ];
    v.extend(write_rows());
    v
}
