//! Decode-step fusions: a norm folded into the matrix-vector product that
//! reads it (CUDA's `gemv_norm` / `gemv_glu_norm` for one row), with and
//! without a residual add, a linear's bias before it and an activation after;
//! a decode step over slot-major caches (its cache writes in one launch,
//! `copy_pair` / `rotary2_copy`, then the decode attention).

use super::{fixed, tensor_bool, Built, Case, WeightSpec};
use host::ir::{BinaryOp, GraphError, NodeId, UnaryOp};
use host::tensor::Tensor;

pub fn cases() -> Vec<Built> {
    vec![
        norm_then_linear(false, false),
        norm_then_linear(true, false),
        norm_then_linear(true, true),
        norm_then_swiglu(),
        decode_attention_slots(false),
        decode_attention_slots(true),
        small_batch_linear(
            "fused/linear-mma-bias-relu/16x64-20",
            &[16, 1, 64],
            20,
            true,
        ),
        small_batch_linear("fused/linear-mma/7x96-48", &[7, 96], 48, false),
        small_batch_linear("fused/linear-mma/5x3x32-16", &[5, 3, 32], 16, true),
        small_batch_linear("fused/linear-mma-k48/8x48-16", &[8, 48], 16, true),
    ]
}

/// A linear over 5-16 rows (a decode batch): CUDA's tensor-core `gemv_mma`
/// in f16/bf16 when K is a multiple of 32 (its column tail when `n` is not
/// a multiple of 8), cuBLAS otherwise; `bias` also adds a bias and a ReLU
/// (folded into the kernel).
fn small_batch_linear(name: &str, x_shape: &[u64], n: u64, bias: bool) -> Built {
    let k = *x_shape.last().unwrap_or(&1);
    let mut c = Case::with_weights(
        name,
        &[
            WeightSpec("fc.weight", &[n, k], -0.25, 0.25),
            WeightSpec("fc.bias", &[n], -0.5, 0.5),
        ],
    );
    (|| {
        let x = c.uniform("x", x_shape, -2., 2.)?;
        let w = c.weight("fc.weight")?;
        let y = if bias {
            let b = c.weight("fc.bias")?;
            let y = c.b.linear(x, w, Some(b))?;
            c.b.unary(UnaryOp::Relu, y)?
        } else {
            c.b.linear(x, w, None)?
        };
        c.output("y", y)
    })()?;
    c.finish()
}

const H: u64 = 64;

/// `linear(norm(x))` for one decode row. `residual`: the norm reads a
/// residual add (layer norm with bias, the sum also an output) and the
/// linear has a bias and a ReLU; else rms norm, no bias. `rows2`: two rows,
/// which CUDA leaves unfused.
fn norm_then_linear(residual: bool, rows2: bool) -> Built {
    let name = match (residual, rows2) {
        (false, _) => "fused/rms-norm-gemv/1x64-96",
        (true, false) => "fused/add-layer-norm-gemv-relu/1x64-96",
        (true, true) => "fused/add-layer-norm-gemv-relu/2x64-96",
    };
    let rows = if rows2 { 2 } else { 1 };
    let mut c = Case::with_weights(
        name,
        &[
            WeightSpec("ln.weight", &[H], 0.8, 1.2),
            WeightSpec("ln.bias", &[H], -0.2, 0.2),
            WeightSpec("fc.weight", &[96, H], -0.125, 0.125),
            WeightSpec("fc.bias", &[96], -0.5, 0.5),
        ],
    );
    (|| {
        let x = c.uniform("x", &[rows, 1, H], -2., 2.)?;
        let s = c.weight("ln.weight")?;
        let w = c.weight("fc.weight")?;
        let y = if residual {
            let r = c.uniform("residual", &[rows, 1, H], -2., 2.)?;
            let h = c.b.binary(BinaryOp::Add, x, r)?;
            c.output("sum", h)?;
            let bias = c.weight("ln.bias")?;
            let n = c.b.layer_norm(h, s, Some(bias), 1e-5)?;
            let fb = c.weight("fc.bias")?;
            let y = c.b.linear(n, w, Some(fb))?;
            c.b.unary(UnaryOp::Relu, y)?
        } else {
            let n = c.b.rms_norm(x, s, 1e-6)?;
            c.b.linear(n, w, None)?
        };
        c.output("y", y)
    })()?;
    c.finish()
}

/// SwiGLU over a fused gate/up projection of an rms-normed decode row.
fn norm_then_swiglu() -> Built {
    let mut c = Case::with_weights(
        "fused/rms-norm-swiglu/1x64-2x48",
        &[
            WeightSpec("ln.weight", &[H], 0.8, 1.2),
            WeightSpec("gate.weight", &[48, H], -0.125, 0.125),
            WeightSpec("up.weight", &[48, H], -0.125, 0.125),
        ],
    );
    (|| {
        let x = c.uniform("x", &[1, 1, H], -2., 2.)?;
        let s = c.weight("ln.weight")?;
        let n = c.b.rms_norm(x, s, 1e-6)?;
        let (wg, wu) = (c.weight("gate.weight")?, c.weight("up.weight")?);
        let w = c.b.concat(vec![wg, wu], 0)?;
        let y = c.b.linear(n, w, None)?;
        let (gate, up) = (c.b.slice(y, -1, 0, 48)?, c.b.slice(y, -1, 48, 96)?);
        let a = c.b.unary(UnaryOp::Silu, gate)?;
        let m = c.b.binary(BinaryOp::Mul, a, up)?;
        c.output("y", m)
    })()?;
    c.finish()
}

/// A decode step over slot-major caches as text-generation builds it for
/// CUDA: q/k/v slices of one projection (two rows), RoPE on q and k
/// (`rope`, with 4 query heads over 2 kv heads) or none (2 and 2), the new
/// key and value prepended to their caches (newest first, the oldest slot
/// falls off), attention with key padding over new + cached keys.
fn decode_attention_slots(rope: bool) -> Built {
    let (batch, heads, hd, slots) = (2u64, 4u64, 8u64, 3u64);
    let kvh = if rope { 2 } else { heads };
    let width = (heads + 2 * kvh) * hd;
    let name = match rope {
        true => "fused/decode-attention-slots/rope-gqa",
        false => "fused/decode-attention-slots/plain",
    };
    let mut c = Case::with_weights(
        name,
        &[WeightSpec("qkv.weight", &[width, H], -0.125, 0.125)],
    );
    (|| {
        let x = c.uniform("x", &[batch, 1, H], -2., 2.)?;
        let w = c.weight("qkv.weight")?;
        let y = c.b.linear(x, w, None)?;
        // [b, 1, n x hd] slice -> [b, n, 1, hd].
        let heads_of = |c: &mut Case, from: u64, n: u64| -> Result<NodeId, GraphError> {
            let s =
                c.b.slice(y, -1, (from * hd) as i64, ((from + n) * hd) as i64)?;
            let r = c.b.reshape(s, vec![0, 0, n as i64, -1])?;
            c.b.permute(r, vec![0, 2, 1, 3])
        };
        let mut q = heads_of(&mut c, 0, heads)?;
        let mut k = heads_of(&mut c, heads, kvh)?;
        let v = heads_of(&mut c, heads + kvh, kvh)?;
        if rope {
            // Each row at its own position.
            let (mut cos, mut sin) = (Vec::new(), Vec::new());
            for pos in [5.0f64, 2.0] {
                for i in 0..hd {
                    let freq = 1.0 / 10000f64.powf((i % (hd / 2)) as f64 * 2.0 / hd as f64);
                    cos.push((pos * freq).cos() as f32);
                    sin.push((pos * freq).sin() as f32);
                }
            }
            let cos = c.values("cos", &[batch, 1, 1, hd], &cos)?;
            let sin = c.values("sin", &[batch, 1, 1, hd], &sin)?;
            q = c.b.rotary(q, cos, sin, false)?;
            k = c.b.rotary(k, cos, sin, false)?;
        }
        let mut all = Vec::new();
        for (name, new) in [("k0", k), ("v0", v)] {
            let shape = [slots, batch, kvh, hd];
            let old = c.rng.floats((slots * batch * kvh * hd) as usize, -2., 2.);
            let old = c.state(name, fixed(&shape), Tensor::from_f32(shape.to_vec(), &old))?;
            let slot_major = c.b.permute(new, vec![2, 0, 1, 3])?;
            let prepended = c.b.concat(vec![slot_major, old], 0)?;
            let kept = c.b.slice(prepended, 0, 0, slots as i64)?;
            c.b.update_state(name, kept)?;
            all.push(c.b.permute(prepended, vec![1, 2, 0, 3])?);
        }
        // The second row's oldest slot is free (masked).
        let keep: Vec<i64> = (0..batch * (slots + 1))
            .map(|i| (i != 2 * (slots + 1) - 1) as i64)
            .collect();
        let total = slots + 1;
        let keys = c.input(
            "key_mask",
            fixed(&[batch, 1, 1, total]),
            tensor_bool(vec![batch, 1, 1, total], &keep),
        )?;
        let a = c.b.attention(q, all[0], all[1], Some(keys), true, None)?;
        c.output("attention", a)
    })()?;
    c.finish()
}
