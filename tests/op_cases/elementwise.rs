//! Cases for unary, binary, compare, logical-and, select and cast.

use super::{count, fixed, int_tensor, Built, Case};
use host::ir::{BinaryOp, CompareOp, DType, UnaryOp};
use host::tensor::Tensor;

pub fn cases() -> Vec<Built> {
    let mut v = Vec::new();
    v.extend(unary_float());
    v.extend(unary_int());
    v.extend(binary_float());
    v.extend(binary_int());
    v.extend(compare());
    v.push(and_not());
    v.extend(select());
    v.extend(cast());
    v.extend(gated());
    v
}

/// Activations of strided slices, alone and times another slice (SwiGLU
/// over a fused gate/up projection of several rows): read in place on CUDA.
fn gated() -> Vec<Built> {
    let mut v = Vec::new();
    for (name, rows, times) in [
        ("unary/silu/strided-slice/4x2x10", 4u64, false),
        ("gated/silu-mul/strided-slices/4x2x10", 4, true),
        ("gated/silu-mul/dense-slices/1x1x10", 1, true),
    ] {
        v.push((|| {
            let mut c = Case::new(name);
            let x = c.uniform("x", &[rows, if rows == 1 { 1 } else { 2 }, 10], -4., 4.)?;
            let gate = c.b.slice(x, -1, 0, 5)?;
            let a = c.b.unary(UnaryOp::Silu, gate)?;
            let y = if times {
                let up = c.b.slice(x, -1, 5, 10)?;
                c.b.binary(BinaryOp::Mul, a, up)?
            } else {
                a
            };
            c.output("y", y)?;
            c.finish()
        })());
    }
    v
}

fn shape_name(shape: &[u64]) -> String {
    let parts: Vec<String> = shape.iter().map(u64::to_string).collect();
    parts.join("x")
}

fn op_name(op: impl std::fmt::Debug) -> String {
    format!("{op:?}").to_lowercase()
}

/// Float unary ops with inputs inside each op's domain.
fn unary_float() -> Vec<Built> {
    use UnaryOp::*;
    let ops: [(UnaryOp, f32, f32); 16] = [
        (Neg, -2., 2.),
        (Abs, -2., 2.),
        (Exp, -2., 2.),
        (Log, 0.05, 4.),
        (Sqrt, 0.01, 4.),
        (Rsqrt, 0.05, 4.),
        (Reciprocal, 0.1, 3.),
        (Tanh, -3., 3.),
        (Sigmoid, -6., 6.),
        (Relu, -2., 2.),
        (Gelu, -4., 4.),
        (GeluTanh, -4., 4.),
        (Silu, -4., 4.),
        (Erf, -3., 3.),
        (Sin, -4., 4.),
        (Cos, -4., 4.),
    ];
    let mut v = Vec::new();
    for (op, lo, hi) in ops {
        for shape in [&[17][..], &[2, 3, 8]] {
            v.push((|| {
                let mut c = Case::new(&format!("unary/{}/{}", op_name(op), shape_name(shape)));
                let x = c.uniform("x", shape, lo, hi)?;
                let y = c.b.unary(op, x)?;
                c.output("y", y)?;
                c.finish()
            })());
        }
    }
    v
}

/// Neg/Abs/Relu on integers, Not on bool.
fn unary_int() -> Vec<Built> {
    let mut v = Vec::new();
    for (dtype, shape) in [(DType::I64, &[13][..]), (DType::I32, &[2, 5])] {
        for op in [UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Relu] {
            v.push((|| {
                let mut c = Case::new(&format!("unary/{}/{dtype}", op_name(op)));
                let x = c.ints("x", dtype, shape, -100, 100)?;
                let y = c.b.unary(op, x)?;
                c.output("y", y)?;
                c.finish()
            })());
        }
    }
    v.push((|| {
        let mut c = Case::new("unary/not/bool");
        let x = c.ints("x", DType::Bool, &[3, 4], 0, 1)?;
        let y = c.b.unary(UnaryOp::Not, x)?;
        c.output("y", y)?;
        c.finish()
    })());
    v
}

const BROADCASTS: [(&[u64], &[u64]); 3] = [
    (&[2, 3, 4], &[2, 3, 4]),
    (&[2, 3, 4], &[4]),
    (&[2, 1, 4], &[1, 3, 1]),
];

fn binary_float() -> Vec<Built> {
    use BinaryOp::*;
    let mut v = Vec::new();
    for op in [Add, Sub, Mul, Div, Pow, Maximum, Minimum] {
        for (sa, sb) in BROADCASTS {
            v.push((|| {
                let name = format!(
                    "binary/{}/{}*{}",
                    op_name(op),
                    shape_name(sa),
                    shape_name(sb)
                );
                let mut c = Case::new(&name);
                let a = match op {
                    Pow => c.uniform("a", sa, 0.1, 2.5)?,
                    _ => c.uniform("a", sa, -2., 2.)?,
                };
                let b = match op {
                    Div => {
                        let vals = c.rng.away_from_zero(count(sb), 0.5, 2.);
                        c.values("b", sb, &vals)?
                    }
                    _ => c.uniform("b", sb, -2., 2.)?,
                };
                let y = c.b.binary(op, a, b)?;
                c.output("y", y)?;
                c.finish()
            })());
        }
    }
    v
}

fn binary_int() -> Vec<Built> {
    use BinaryOp::*;
    let mut v = Vec::new();
    for op in [Add, Sub, Mul, Div, Pow, Maximum, Minimum] {
        v.push((|| {
            let mut c = Case::new(&format!("binary/{}/i64", op_name(op)));
            let (a, b) = match op {
                Pow => (
                    c.ints("a", DType::I64, &[2, 3, 4], -5, 5)?,
                    c.ints("b", DType::I64, &[4], 0, 4)?,
                ),
                Div => {
                    let a = c.ints("a", DType::I64, &[2, 3, 4], -50, 50)?;
                    let vals: Vec<i64> = c
                        .rng
                        .ints(4, 1, 7)
                        .into_iter()
                        .zip([1, -1, 1, -1])
                        .map(|(x, s)| x * s)
                        .collect();
                    (
                        a,
                        c.input("b", fixed(&[4]), Tensor::from_i64(vec![4], &vals))?,
                    )
                }
                _ => (
                    c.ints("a", DType::I64, &[2, 3, 4], -1000, 1000)?,
                    c.ints("b", DType::I64, &[4], -1000, 1000)?,
                ),
            };
            let y = c.b.binary(op, a, b)?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    v.push((|| {
        let mut c = Case::new("binary/add/i32/2x1x4*1x3x1");
        let a = c.ints("a", DType::I32, &[2, 1, 4], -1000, 1000)?;
        let b = c.ints("b", DType::I32, &[1, 3, 1], -1000, 1000)?;
        let y = c.b.binary(BinaryOp::Add, a, b)?;
        c.output("y", y)?;
        c.finish()
    })());
    v
}

/// Comparisons on small integer grids, so that equal values occur.
fn compare() -> Vec<Built> {
    use CompareOp::*;
    let mut v = Vec::new();
    for op in [Equal, Less, LessOrEqual, Greater, GreaterOrEqual] {
        for (sa, sb) in &BROADCASTS[1..] {
            v.push((|| {
                let name = format!(
                    "compare/{}/{}*{}",
                    op_name(op),
                    shape_name(sa),
                    shape_name(sb)
                );
                let mut c = Case::new(&name);
                let (va, vb) = (
                    c.rng.grid(count(sa), -2., 2., 1.),
                    c.rng.grid(count(sb), -2., 2., 1.),
                );
                let a = c.values("a", sa, &va)?;
                let b = c.values("b", sb, &vb)?;
                let y = c.b.compare(op, a, b)?;
                c.output("y", y)?;
                c.finish()
            })());
        }
        v.push((|| {
            let mut c = Case::new(&format!("compare/{}/i64", op_name(op)));
            let a = c.ints("a", DType::I64, &[3, 5], -3, 3)?;
            let b = c.ints("b", DType::I64, &[5], -3, 3)?;
            let y = c.b.compare(op, a, b)?;
            c.output("y", y)?;
            c.finish()
        })());
    }
    v
}

/// Logical and of bool inputs and of comparisons, negated and cast back.
fn and_not() -> Built {
    let mut c = Case::new("and/bool");
    let a = c.ints("a", DType::Bool, &[2, 3], 0, 1)?;
    let b = c.ints("b", DType::Bool, &[3], 0, 1)?;
    let y = c.b.and(a, b)?;
    c.output("y", y)?;
    let x = c.uniform("x", &[2, 3], -2., 2.)?;
    let zero = c.b.scalar(0.0, DType::F32)?;
    let pos = c.b.compare(CompareOp::Greater, x, zero)?;
    let both = c.b.and(pos, y)?;
    let none = c.b.unary(UnaryOp::Not, both)?;
    let f = c.b.cast(none, DType::F32)?;
    c.output("f", f)?;
    c.finish()
}

fn select() -> Vec<Built> {
    let mut v = Vec::new();
    v.push((|| {
        let mut c = Case::new("select/f32/2x1x4,2x3x4,4");
        let cond = c.ints("cond", DType::Bool, &[2, 1, 4], 0, 1)?;
        let a = c.uniform("a", &[2, 3, 4], -2., 2.)?;
        let b = c.uniform("b", &[4], -2., 2.)?;
        let y = c.b.select(cond, a, b)?;
        c.output("y", y)?;
        c.finish()
    })());
    v.push((|| {
        let mut c = Case::new("select/i64/from-compare");
        let x = c.uniform("x", &[3, 5], -2., 2.)?;
        let zero = c.b.scalar(0.0, DType::F32)?;
        let cond = c.b.compare(CompareOp::Less, x, zero)?;
        let a = c.ints("a", DType::I64, &[3, 5], -9, 9)?;
        let b = c.ints("b", DType::I64, &[1], -9, 9)?;
        let y = c.b.select(cond, a, b)?;
        c.output("y", y)?;
        c.finish()
    })());
    v
}

/// Casts between float and integer dtypes, on grids every precision holds.
fn cast() -> Vec<Built> {
    use DType::*;
    // (from, via, to): `via` is the cast target, `to` casts back for output
    // when `via` is not a graph I/O dtype the harness compares directly.
    let chains: [(DType, DType, Option<DType>); 15] = [
        (F32, F16, Some(F32)),
        (F32, BF16, Some(F32)),
        (F32, I64, None),
        (F32, I32, None),
        (F32, U8, None),
        (F32, Bool, None),
        (I64, F32, None),
        (I32, F32, None),
        (I64, I32, None),
        (I32, I64, None),
        (Bool, F32, None),
        (Bool, I64, None),
        (U8, F32, None),
        (I64, Bool, None),
        (U8, I64, None),
    ];
    let mut v = Vec::new();
    for (from, via, back) in chains {
        v.push((|| {
            let mut c = Case::new(&format!("cast/{from}-{via}"));
            let shape = [3u64, 7];
            let x = match from {
                F32 if via == U8 => {
                    let vals = c.rng.grid(count(&shape), 0., 250., 1.);
                    c.values("x", &shape, &vals)?
                }
                F32 if via == F16 || via == BF16 => c.uniform("x", &shape, -3., 3.)?,
                F32 => {
                    let vals = c.rng.grid(count(&shape), -50., 50., 0.25);
                    c.values("x", &shape, &vals)?
                }
                Bool => c.ints("x", Bool, &shape, 0, 1)?,
                U8 => c.ints("x", U8, &shape, 0, 255)?,
                I64 if via == Bool => c.ints("x", I64, &shape, -2, 2)?,
                _ => {
                    // Integers f16 holds exactly (bf16 rounds them within tolerance).
                    let vals = c.rng.ints(count(&shape), -2048, 2048);
                    c.input("x", fixed(&shape), int_tensor(from, shape.to_vec(), &vals))?
                }
            };
            let mut y = c.b.cast(x, via)?;
            if let Some(to) = back {
                y = c.b.cast(y, to)?;
            }
            c.output("y", y)?;
            c.finish()
        })());
    }
    v
}
