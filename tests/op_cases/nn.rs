//! Cases for matmul, linear, norms, softmax, rotary, embedding,
//! reductions, l2-normalize, gather, argmax, top-k and conv (attention
//! in attention.rs).

use super::{count, fixed, int_tensor, Built, Case, WeightSpec};
use host::ir::{DType, ReduceOp, UnaryOp};
use host::tensor::Tensor;

pub fn cases() -> Vec<Built> {
    let mut v = Vec::new();
    v.extend(matmul());
    v.extend(linear());
    v.extend(norms());
    v.extend(softmax());
    v.extend(rotary());
    v.extend(super::attention::cases());
    v.extend(embedding());
    v.extend(reduce());
    v.extend(l2_normalize());
    v.extend(gather());
    v.extend(argmax_top_k());
    v.extend(conv());
    v
}

fn matmul() -> Vec<Built> {
    let shapes: [(&str, &[u64], &[u64]); 5] = [
        ("2d", &[5, 7], &[7, 3]),
        ("3d", &[3, 5, 7], &[3, 7, 4]),
        ("4d", &[2, 3, 4, 5], &[2, 3, 5, 6]),
        ("broadcast-2d", &[2, 3, 4, 5], &[5, 6]),
        ("broadcast-batch", &[1, 3, 4, 5], &[2, 1, 5, 6]),
    ];
    let mut v: Vec<Built> = shapes
        .iter()
        .map(|(name, sa, sb)| {
            let mut c = Case::new(&format!("matmul/{name}"));
            let a = c.uniform("a", sa, -2., 2.)?;
            let b = c.uniform("b", sb, -2., 2.)?;
            let y = c.b.matmul(a, b)?;
            c.output("y", y)?;
            c.finish()
        })
        .collect();
    v.push((|| {
        // a @ b^T with b given as [n, k] and permuted.
        let mut c = Case::new("matmul/permuted-operand");
        let a = c.uniform("a", &[2, 4, 5], -2., 2.)?;
        let b = c.uniform("b", &[2, 6, 5], -2., 2.)?;
        let bt = c.b.permute(b, vec![0, 2, 1])?;
        let y = c.b.matmul(a, bt)?;
        c.output("y", y)?;
        c.finish()
    })());
    v
}

fn linear() -> Vec<Built> {
    let mut v = Vec::new();
    for (name, x, out, bias) in [
        ("linear/bias/2x5x16-24", &[2u64, 5, 16][..], 24u64, true),
        ("linear/no-bias/3x16-8", &[3, 16], 8, false),
        ("linear/bias/1x64-96", &[1, 64], 96, true),
        // More gemv blocks than an H100 has multiprocessors, and rows of
        // several load passes: CUDA's two-blocks-per-SM gemv.
        ("linear/bias/1x2560-1200", &[1, 2560], 1200, true),
    ] {
        v.push((|| {
            let inf = *x.last().unwrap_or(&1);
            let r = 1.0 / (inf as f32).sqrt();
            let mut c = Case::with_weights(
                name,
                &[
                    WeightSpec("proj.weight", &[out, inf], -r, r),
                    WeightSpec("proj.bias", &[out], -0.5, 0.5),
                ],
            );
            let xs = c.uniform("x", x, -2., 2.)?;
            let w = c.weight("proj.weight")?;
            let b = if bias {
                Some(c.weight("proj.bias")?)
            } else {
                None
            };
            let y = c.b.linear(xs, w, b)?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    for (name, act) in [
        ("linear/relu-epilogue/2x64-96", UnaryOp::Relu),
        ("linear/gelu-epilogue/1x64-96", UnaryOp::Gelu),
    ] {
        v.push((|| {
            // Decode-sized rows: CUDA folds the activation into its gemv.
            let rows = if act == UnaryOp::Relu { 2 } else { 1 };
            let mut c = Case::with_weights(
                name,
                &[
                    WeightSpec("fc.weight", &[96, 64], -0.125, 0.125),
                    WeightSpec("fc.bias", &[96], -0.5, 0.5),
                ],
            );
            let xs = c.uniform("x", &[rows, 1, 64], -2., 2.)?;
            let (w, b) = (c.weight("fc.weight")?, c.weight("fc.bias")?);
            let y = c.b.linear(xs, w, Some(b))?;
            let y = c.b.unary(act, y)?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    // SwiGLU over a fused gate/up projection: of decode rows (one gated
    // gemv on CUDA) and of many rows (CUDA's strided SwiGLU kernel: a
    // 16-byte word per thread from 2^20 elements, else an element each).
    for (name, lead, f) in [
        ("linear/swiglu-fused/2x1x64-2x48", [2u64, 1], 48u64),
        ("linear/swiglu-fused/16x128x64-2x512", [16, 128], 512),
        ("linear/swiglu-fused/20x3x64-2x48", [20, 3], 48),
        ("linear/swiglu-fused/20x3x64-2x44", [20, 3], 44),
    ] {
        v.push((|| {
            let mut c = Case::with_weights(
                name,
                &[
                    WeightSpec("gate.weight", &[f, 64], -0.125, 0.125),
                    WeightSpec("up.weight", &[f, 64], -0.125, 0.125),
                ],
            );
            let xs = c.uniform("x", &[lead[0], lead[1], 64], -2., 2.)?;
            let (wg, wu) = (c.weight("gate.weight")?, c.weight("up.weight")?);
            let w = c.b.concat(vec![wg, wu], 0)?;
            let y = c.b.linear(xs, w, None)?;
            let f = f as i64;
            let (gate, up) = (c.b.slice(y, -1, 0, f)?, c.b.slice(y, -1, f, 2 * f)?);
            let a = c.b.unary(UnaryOp::Silu, gate)?;
            let m = c.b.binary(host::ir::BinaryOp::Mul, a, up)?;
            c.output("y", m)?;
            c.finish()
        })());
    }
    v.push((|| {
        // Concats of weights only (a fused q/k/v projection) are folded at
        // compile time on CUDA; an axis-1 concat interleaves rows.
        let mut c = Case::with_weights(
            "linear/fused-weight-concat",
            &[
                WeightSpec("a.weight", &[4, 6], -0.4, 0.4),
                WeightSpec("a.bias", &[4], -0.5, 0.5),
                WeightSpec("b.weight", &[3, 6], -0.4, 0.4),
                WeightSpec("b.bias", &[3], -0.5, 0.5),
                WeightSpec("c.weight", &[4, 2], -1., 1.),
            ],
        );
        let xs = c.uniform("x", &[2, 5, 6], -2., 2.)?;
        let (wa, wb) = (c.weight("a.weight")?, c.weight("b.weight")?);
        let (ba, bb) = (c.weight("a.bias")?, c.weight("b.bias")?);
        let w = c.b.concat(vec![wa, wb], 0)?;
        let bias = c.b.concat(vec![ba, bb], 0)?;
        let y = c.b.linear(xs, w, Some(bias))?;
        let (ya, yb) = (c.b.slice(y, -1, 0, 4)?, c.b.slice(y, -1, 4, 7)?);
        c.output("a", ya)?;
        c.output("b", yb)?;
        let wc = c.weight("c.weight")?;
        let side = c.b.concat(vec![wa, wc], 1)?;
        c.output("side", side)?;
        c.finish()
    })());
    v
}

fn norms() -> Vec<Built> {
    let mut v = Vec::new();
    for (name, shape, bias, eps) in [
        ("layer-norm/bias/2x5x32", &[2u64, 5, 32][..], true, 1e-5f32),
        ("layer-norm/no-bias/3x64", &[3, 64], false, 1e-12),
        ("rms-norm/2x5x32", &[2, 5, 32], false, 1e-6),
        ("rms-norm/4x48", &[4, 48], false, 1e-5),
        // Rows held in registers on CUDA (up to 4096 wide) and past them.
        ("layer-norm/bias/3x768", &[3, 768], true, 1e-5),
        ("rms-norm/2x2048", &[2, 2048], false, 1e-6),
        ("rms-norm/2x5000", &[2, 5000], false, 1e-6),
    ] {
        v.push((|| {
            let w = *shape.last().unwrap_or(&1);
            let mut c = Case::with_weights(
                name,
                &[
                    WeightSpec("norm.weight", &[w], 0.5, 1.5),
                    WeightSpec("norm.bias", &[w], -0.5, 0.5),
                ],
            );
            let x = c.uniform("x", shape, -2., 3.)?;
            let s = c.weight("norm.weight")?;
            let y = if name.starts_with("rms") {
                c.b.rms_norm(x, s, eps)?
            } else {
                let b = if bias {
                    Some(c.weight("norm.bias")?)
                } else {
                    None
                };
                c.b.layer_norm(x, s, b, eps)?
            };
            c.output("y", y)?;
            c.finish()
        })());
    }
    v
}

fn softmax() -> Vec<Built> {
    [
        ("softmax/last/2x3x17", &[2u64, 3, 17][..], -1, 4f32),
        ("softmax/middle/2x5x3", &[2, 5, 3], 1, 4.),
        ("softmax/first/4x6", &[4, 6], 0, 4.),
        ("softmax/wide-range/3x40", &[3, 40], -1, 12.),
    ]
    .into_iter()
    .map(|(name, shape, axis, r)| {
        let mut c = Case::new(name);
        let x = c.uniform("x", shape, -r, r)?;
        let y = c.b.softmax(x, axis)?;
        c.output("y", y)?;
        c.finish()
    })
    .collect()
}

/// Rotary embedding: rotate-half and interleaved, full and partial, on a
/// permuted (strided) x with cos/sin broadcast over heads.
fn rotary() -> Vec<Built> {
    let mut v = Vec::new();
    for (name, d, r, interleaved) in [
        ("rotary/half", 8u64, 8u64, false),
        ("rotary/interleaved", 8, 8, true),
        ("rotary/half-partial", 12, 4, false),
        ("rotary/interleaved-partial", 12, 6, true),
    ] {
        v.push((|| {
            let mut c = Case::new(name);
            // [batch 2, seq 3, heads 2, d] seen as [batch, heads, seq, d].
            let x = c.uniform("x", &[2, 3, 2, d], -2., 2.)?;
            let x = c.b.permute(x, vec![0, 2, 1, 3])?;
            let cos = c.uniform("cos", &[2, 1, 3, r], -1., 1.)?;
            let sin = c.uniform("sin", &[2, 1, 3, r], -1., 1.)?;
            let y = c.b.rotary(x, cos, sin, interleaved)?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    v
}

fn embedding() -> Vec<Built> {
    [DType::I64, DType::I32]
        .into_iter()
        .map(|dtype| {
            let mut c = Case::with_weights(
                &format!("embedding/{dtype}"),
                &[WeightSpec("embed.weight", &[50, 16], -1., 1.)],
            );
            let ids = c.ints("ids", dtype, &[2, 5], 0, 49)?;
            let table = c.weight("embed.weight")?;
            let y = c.b.embedding(table, ids)?;
            c.output("y", y)?;
            c.finish()
        })
        .collect()
}

fn reduce() -> Vec<Built> {
    use ReduceOp::*;
    let configs: [(&[i32], bool); 4] = [
        (&[-1], false),
        (&[0, 2], true),
        (&[1], true),
        (&[0, 1, 2], false),
    ];
    let mut v = Vec::new();
    for (i, op) in [Sum, Mean, Max, Min].into_iter().enumerate() {
        for (axes, keep) in [configs[i], configs[(i + 1) % 4], configs[(i + 2) % 4]] {
            v.push((|| {
                let name = format!("reduce/{op:?}/axes{axes:?}/keep-{keep}").to_lowercase();
                let mut c = Case::new(&name);
                let x = c.uniform("x", &[3, 4, 5], -2., 2.)?;
                let y = c.b.reduce(op, x, axes.to_vec(), keep)?;
                c.output("y", y)?;
                c.finish()
            })());
        }
    }
    for op in [Sum, Max] {
        v.push((|| {
            let mut c = Case::new(&format!("reduce/{op:?}/i64").to_lowercase());
            let x = c.ints("x", DType::I64, &[4, 6], -1000, 1000)?;
            let y = c.b.reduce(op, x, vec![1], false)?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    v.push((|| {
        let mut c = Case::new("reduce/sum/long-row");
        let x = c.uniform("x", &[2, 1000], -2., 2.)?;
        let y = c.b.reduce(Sum, x, vec![1], true)?;
        c.output("y", y)?;
        c.finish()
    })());
    v
}

fn l2_normalize() -> Vec<Built> {
    [
        ("l2-normalize/last/3x16", &[3u64, 16][..], -1),
        ("l2-normalize/middle/2x5x4", &[2, 5, 4], 1),
    ]
    .into_iter()
    .map(|(name, shape, axis)| {
        let mut c = Case::new(name);
        let x = c.uniform("x", shape, -2., 2.)?;
        let y = c.b.l2_normalize(x, axis, 1e-12)?;
        c.output("y", y)?;
        c.finish()
    })
    .collect()
}

fn gather() -> Vec<Built> {
    let mut v = Vec::new();
    v.push((|| {
        let mut c = Case::new("gather/axis0/negative/i64");
        let x = c.uniform("x", &[6, 5], -2., 2.)?;
        let idx = c.input(
            "idx",
            fixed(&[4]),
            Tensor::from_i64(vec![4], &[0, -1, 3, -6]),
        )?;
        let y = c.b.gather(x, idx, 0)?;
        c.output("y", y)?;
        c.finish()
    })());
    v.push((|| {
        let mut c = Case::new("gather/axis1/negative/i32/2d-indices");
        let x = c.uniform("x", &[3, 7, 2], -2., 2.)?;
        let idx = c.input(
            "idx",
            fixed(&[2, 2]),
            int_tensor(DType::I32, vec![2, 2], &[6, -2, 0, 3]),
        )?;
        let y = c.b.gather(x, idx, 1)?;
        c.output("y", y)?;
        c.finish()
    })());
    v.push((|| {
        // The last position of each sequence, as pooling does.
        let mut c = Case::new("gather/axis1/scalar-index");
        let x = c.uniform("x", &[2, 5, 3], -2., 2.)?;
        let idx = c.input("idx", vec![], Tensor::from_i64(vec![], &[-1]))?;
        let y = c.b.gather(x, idx, 1)?;
        c.output("y", y)?;
        c.finish()
    })());
    v
}

fn argmax_top_k() -> Vec<Built> {
    let mut v = Vec::new();
    for (name, shape, axis, keep, grid) in [
        ("argmax/last/4x37", &[4u64, 37][..], -1, false, false),
        ("argmax/first/keep/5x6", &[5, 6], 0, true, false),
        ("argmax/middle/ties/3x8x4", &[3, 8, 4], 1, false, true),
        // Vocabulary-long rows (a 1024-thread block on CUDA), with ties.
        ("argmax/last/vocab/3x50257", &[3, 50257], -1, false, false),
        ("argmax/last/vocab-ties/2x9001", &[2, 9001], -1, false, true),
    ] {
        v.push((|| {
            let mut c = Case::new(name);
            let x = if grid {
                let vals = c.rng.grid(count(shape), -2., 2., 1.);
                c.values("x", shape, &vals)?
            } else {
                c.uniform("x", shape, -2., 2.)?
            };
            let y = c.b.argmax(x, axis, keep)?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    for (name, shape, k, grid) in [
        ("top-k/k1/2x1000", &[2u64, 1000][..], 1u32, false),
        ("top-k/k5/1000", &[1000], 5, false),
        ("top-k/k5/3x1000", &[3, 1000], 5, false),
        ("top-k/k4/ties/3x12", &[3, 12], 4, true),
    ] {
        v.push((|| {
            let mut c = Case::new(name);
            let x = if grid {
                let vals = c.rng.grid(count(shape), 0., 5., 1.);
                c.values("x", shape, &vals)?
            } else {
                c.uniform("x", shape, -2., 2.)?
            };
            let (values, indices) = c.b.top_k(x, k)?;
            c.output("values", values)?;
            c.output("indices", indices)?;
            c.finish()
        })());
    }
    v
}

fn conv() -> Vec<Built> {
    use host::ir::conv::ConvAttrs;
    // (name, x shape, weight shape, stride, padding, dilation, groups, bias, symbolic length)
    type Spec<'a> = (
        &'a str,
        &'a [u64],
        &'a [u64],
        &'a [u64],
        &'a [(u64, u64)],
        &'a [u64],
        u64,
        bool,
        bool,
    );
    let specs: [Spec; 5] = [
        (
            "conv/1d/stride5-k10",
            &[2, 1, 53],
            &[6, 1, 10],
            &[5],
            &[(0, 0)],
            &[1],
            1,
            true,
            false,
        ),
        (
            "conv/1d/grouped-padded",
            &[1, 8, 17],
            &[8, 2, 5],
            &[1],
            &[(2, 2)],
            &[1],
            4,
            true,
            false,
        ),
        (
            "conv/1d/symbolic-stride2",
            &[2, 4, 19],
            &[6, 4, 3],
            &[2],
            &[(0, 0)],
            &[1],
            1,
            false,
            true,
        ),
        (
            "conv/2d/stride2-pad1-dil2",
            &[1, 4, 9, 11],
            &[6, 2, 3, 3],
            &[2, 2],
            &[(1, 1), (1, 2)],
            &[2, 1],
            2,
            true,
            false,
        ),
        (
            "conv/2d/depthwise-7x7",
            &[2, 5, 8, 8],
            &[5, 1, 7, 7],
            &[1, 1],
            &[(3, 3), (3, 3)],
            &[1, 1],
            5,
            true,
            false,
        ),
    ];
    specs
        .iter()
        .map(
            |&(name, xs, ws, stride, pad, dil, groups, bias, symbolic)| {
                let r = 1.0 / ((ws[1..].iter().product::<u64>()) as f32).sqrt();
                let mut c = Case::with_weights(
                    name,
                    &[
                        WeightSpec("conv.weight", ws, -r, r),
                        WeightSpec("conv.bias", &[ws[0]], -0.5, 0.5),
                    ],
                );
                let x = if symbolic {
                    let v = c.rng.floats(count(xs), -2., 2.);
                    let mut dims = fixed(xs);
                    dims[2] = super::sym("len");
                    c.input("x", dims, Tensor::from_f32(xs.to_vec(), &v))?
                } else {
                    c.uniform("x", xs, -2., 2.)?
                };
                let w = c.weight("conv.weight")?;
                let b = if bias {
                    Some(c.weight("conv.bias")?)
                } else {
                    None
                };
                let attrs = ConvAttrs {
                    stride: stride.to_vec(),
                    pad: pad.to_vec(),
                    dilation: dil.to_vec(),
                    groups,
                };
                let y = c.b.conv(x, w, b, attrs)?;
                c.output("y", y)?;
                c.finish()
            },
        )
        .collect()
}
