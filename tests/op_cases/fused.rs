//! Decode-step fusions: a norm folded into the matrix-vector product that
//! reads it (CUDA's `gemv_norm` / `gemv_glu_norm` for one row), with and
//! without a residual add, a linear's bias before it and an activation after.

use super::{Built, Case, WeightSpec};
use host::ir::{BinaryOp, UnaryOp};

pub fn cases() -> Vec<Built> {
    vec![
        norm_then_linear(false, false),
        norm_then_linear(true, false),
        norm_then_linear(true, true),
        norm_then_swiglu(),
    ]
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
