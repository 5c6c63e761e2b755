//! Planner tests for the fused and specialised lowerings.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::Planner;
use crate::backend::cuda::launch::Launch;
use crate::backend::cuda::plan::*;
use crate::backend::Precision;
use crate::ir::builder::{BuilderLimits, GraphBuilder};
use crate::ir::DType;
use crate::ir::{BinaryOp, Dim};

/// The names of a plan's kernels, in order (GEMMs left out).
fn kernel_names(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Kernel { launch, .. } => Some(launch.kernel().0),
            _ => None,
        })
        .collect()
}

/// Byte range of a planned reference holding `bytes`.
fn range(plan: &Plan, r: &Ref, bytes: usize) -> Option<(usize, usize)> {
    match r.buf {
        Buf::Arena(i) => {
            let at = plan.offsets[i] + r.offset;
            Some((at, at + bytes))
        }
        Buf::Persistent(_) | Buf::External(_) => None,
    }
}

/// A residual add followed by rms-norm plans as one `add_norm` kernel,
/// and its output never shares memory with its operands.
#[test]
fn residual_add_and_norm_fuse_without_aliasing() {
    let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
    let (rows, width) = (5u64, 8u64);
    let shape = vec![Dim::Fixed(rows), Dim::Fixed(width)];
    let x = b.input("x", DType::F32, shape.clone()).unwrap();
    let r = b.input("r", DType::F32, shape).unwrap();
    let scale = b
        .input("scale", DType::F32, vec![Dim::Fixed(width)])
        .unwrap();
    let h = b.binary(BinaryOp::Add, x, r).unwrap();
    let y = b.rms_norm(h, scale, 1e-6).unwrap();
    let z = b.binary(BinaryOp::Add, h, y).unwrap();
    b.output("z", z).unwrap();
    let g = b.finish().unwrap();
    let plan = Planner::plan(&g, Precision::F32, &HashMap::new(), &HashMap::new()).unwrap();
    let fused: Vec<Vec<Arg>> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Kernel { launch, .. } => Some(launch.kernel()),
            _ => None,
        })
        .filter_map(|(name, args)| (name == "add_norm_f32").then_some(args))
        .collect();
    assert_eq!(fused.len(), 1, "one fused add + norm: {:?}", plan.steps);
    let bytes = (rows * width * 4) as usize;
    let Arg::Ptr(out) = &fused[0][9] else {
        panic!("argument 9 is the output")
    };
    let out = range(&plan, out, bytes).unwrap();
    for k in [3, 4] {
        let Arg::Ptr(input) = &fused[0][k] else {
            panic!("argument {k} is an operand")
        };
        let input = range(&plan, input, bytes).unwrap();
        assert!(
            out.1 <= input.0 || input.1 <= out.0,
            "output {out:?} overlaps operand {input:?}"
        );
    }
}

/// A decode step's rotated keys are written straight into their slot of
/// the concatenated cache: no copy kernel, and the keys' rotary output is
/// the concat's first slab.
#[test]
fn rotary_writes_into_the_concat() {
    let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
    let f = |d: &[u64]| d.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
    let x = b.input("x", DType::F32, f(&[1, 2, 1, 4])).unwrap();
    let cos = b.input("cos", DType::F32, f(&[1, 1, 1, 4])).unwrap();
    let sin = b.input("sin", DType::F32, f(&[1, 1, 1, 4])).unwrap();
    let old = b.input("old", DType::F32, f(&[3, 1, 2, 4])).unwrap();
    let xq = b.input("xq", DType::F32, f(&[1, 3, 1, 4])).unwrap();
    let q = b.rotary(xq, cos, sin, false).unwrap();
    b.output("q", q).unwrap();
    let r = b.rotary(x, cos, sin, false).unwrap();
    let p = b.permute(r, vec![2, 0, 1, 3]).unwrap();
    let c = b.concat(vec![p, old], 0).unwrap();
    let y = b.unary(crate::ir::UnaryOp::Neg, c).unwrap();
    b.output("y", y).unwrap();
    let g = b.finish().unwrap();
    let plan = Planner::plan(&g, Precision::F32, &HashMap::new(), &HashMap::new()).unwrap();
    let names = kernel_names(&plan);
    // Queries and keys rotate in one launch.
    assert_eq!(names, ["rotary2_f32", "unary_f32"], "{:?}", plan.steps);
    let (Step::Kernel { launch: rot, .. }, Step::Kernel { launch: neg, .. }) =
        (&plan.steps[0], &plan.steps[1])
    else {
        panic!("two kernels")
    };
    let (rot, neg) = (rot.kernel().1, neg.kernel().1);
    let (Arg::Ptr(written), Arg::Ptr(read)) = (&rot[6], &neg[2]) else {
        panic!("pointer arguments")
    };
    assert_eq!(range(&plan, written, 32), range(&plan, read, 32));
}

/// An activation of part of a decode linear's output (SwiGLU's gate
/// slice) is not folded into the gemv, which would apply it to every
/// column; an activation of the whole output is.
#[test]
fn gemv_epilogue_only_for_whole_outputs() {
    let plan_of = |slice: bool| {
        let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let x = b
            .input("x", DType::F32, vec![Dim::Fixed(1), Dim::Fixed(4)])
            .unwrap();
        let wn = b
            .input("w", DType::F32, vec![Dim::Fixed(8), Dim::Fixed(4)])
            .unwrap();
        let y = b.linear(x, wn, None).unwrap();
        let a = if slice {
            b.slice(y, 1, 0, 4).unwrap()
        } else {
            y
        };
        let s = b.unary(crate::ir::UnaryOp::Silu, a).unwrap();
        b.output("s", s).unwrap();
        if slice {
            let up = b.slice(y, 1, 4, 8).unwrap();
            b.output("up", up).unwrap();
        }
        let g = b.finish().unwrap();
        Planner::plan(&g, Precision::F32, &HashMap::new(), &HashMap::new()).unwrap()
    };
    assert_eq!(kernel_names(&plan_of(false)), ["gemv_f32"]);
    assert_eq!(kernel_names(&plan_of(true)), ["gemv_f32", "unary_f32"]);
}

/// SwiGLU over a fused gate/up decode projection plans as one `gemv_glu`.
#[test]
fn gated_projection_is_one_kernel() {
    let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
    let x = b
        .input("x", DType::F32, vec![Dim::Fixed(1), Dim::Fixed(8)])
        .unwrap();
    let w = b
        .input("w", DType::F32, vec![Dim::Fixed(6), Dim::Fixed(8)])
        .unwrap();
    let y = b.linear(x, w, None).unwrap();
    let gate = b.slice(y, 1, 0, 3).unwrap();
    let up = b.slice(y, 1, 3, 6).unwrap();
    let a = b.unary(crate::ir::UnaryOp::Silu, gate).unwrap();
    let m = b.binary(BinaryOp::Mul, a, up).unwrap();
    b.output("m", m).unwrap();
    let g = b.finish().unwrap();
    let plan = Planner::plan(&g, Precision::F32, &HashMap::new(), &HashMap::new()).unwrap();
    let names = kernel_names(&plan);
    assert_eq!(names, ["gemv_glu_f32"], "{:?}", plan.steps);
}

/// Slices of one projection copied into two caches (a decode step's keys
/// and values) are one `copy_pair` launch; both land where the concats read.
#[test]
fn cache_copies_share_a_launch() {
    let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
    let f = |d: &[u64]| d.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
    let x = b.input("x", DType::F32, f(&[1, 2, 8])).unwrap();
    let y = b.unary(crate::ir::UnaryOp::Neg, x).unwrap();
    let mut caches = Vec::new();
    for (i, name) in ["k", "v"].iter().enumerate() {
        let old = b.input(name, DType::F32, f(&[3, 2, 4])).unwrap();
        let new = b.slice(y, 2, 4 * i as i64, 4 * (i as i64 + 1)).unwrap();
        caches.push(b.concat(vec![new, old], 0).unwrap());
    }
    for (c, name) in caches.into_iter().zip(["k", "v"]) {
        let out = b.unary(crate::ir::UnaryOp::Abs, c).unwrap();
        b.output(name, out).unwrap();
    }
    let g = b.finish().unwrap();
    let plan = Planner::plan(&g, Precision::F32, &HashMap::new(), &HashMap::new()).unwrap();
    let names = kernel_names(&plan);
    assert_eq!(
        names,
        ["unary_f32", "copy_pair_4", "unary_f32", "unary_f32"],
        "{:?}",
        plan.steps
    );
}

/// Above gemv's rows, a linear's bias add takes the activation after it,
/// and a residual add + norm takes the bias add of the linear before it.
#[test]
fn bias_adds_fuse_forward() {
    let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
    let f = |d: &[u64]| d.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
    let x = b.input("x", DType::F32, f(&[8, 4])).unwrap();
    let w1 = b.input("w1", DType::F32, f(&[4, 4])).unwrap();
    let b1 = b.input("b1", DType::F32, f(&[4])).unwrap();
    let w2 = b.input("w2", DType::F32, f(&[4, 4])).unwrap();
    let b2 = b.input("b2", DType::F32, f(&[4])).unwrap();
    let scale = b.input("scale", DType::F32, f(&[4])).unwrap();
    let up = b.linear(x, w1, Some(b1)).unwrap();
    let up = b.unary(crate::ir::UnaryOp::Gelu, up).unwrap();
    let down = b.linear(up, w2, Some(b2)).unwrap();
    let r = b.binary(BinaryOp::Add, down, x).unwrap();
    let y = b.layer_norm(r, scale, None, 1e-5).unwrap();
    b.output("y", y).unwrap();
    let g = b.finish().unwrap();
    let plan = Planner::plan(&g, Precision::F32, &HashMap::new(), &HashMap::new()).unwrap();
    assert_eq!(
        kernel_names(&plan),
        ["bias_add_f32", "add_norm_f32"],
        "{:?}",
        plan.steps
    );
}

/// An rms norm read only by a one-row decode linear becomes the gemv's
/// prologue; with two rows, or with another reader, it stays a kernel.
#[test]
fn norm_folds_into_one_row_gemv() {
    let plan_of = |rows: u64, shared_norm: bool| {
        let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let x = b
            .input("x", DType::F32, vec![Dim::Fixed(rows), Dim::Fixed(8)])
            .unwrap();
        let s = b.input("s", DType::F32, vec![Dim::Fixed(8)]).unwrap();
        let w = b
            .input("w", DType::F32, vec![Dim::Fixed(4), Dim::Fixed(8)])
            .unwrap();
        let n = b.rms_norm(x, s, 1e-6).unwrap();
        let y = b.linear(n, w, None).unwrap();
        b.output("y", y).unwrap();
        if shared_norm {
            b.output("n", n).unwrap();
        }
        let g = b.finish().unwrap();
        Planner::plan(&g, Precision::F32, &HashMap::new(), &HashMap::new()).unwrap()
    };
    assert_eq!(kernel_names(&plan_of(1, false)), ["gemv_norm_f32"]);
    assert_eq!(
        kernel_names(&plan_of(2, false)),
        ["rms_norm_f32", "gemv_f32"]
    );
    let shared = kernel_names(&plan_of(1, true));
    assert_eq!(shared.first().map(String::as_str), Some("rms_norm_f32"));
    assert!(shared.contains(&"gemv_f32".to_string()), "{shared:?}");
}

/// A decode step over slot-major caches (the new key and value prepended,
/// as text-generation builds them for CUDA) writes its new key and value
/// into their slots in one launch (`copy_pair`, or with RoPE on queries and
/// keys `rotary2_copy`) before the attention that reads them.
#[test]
fn decode_cache_writes_take_one_launch() {
    for rope in [false, true] {
        let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let f = |d: &[u64]| d.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
        let (heads, kvh, hd, slots) = (4i64, 2i64, 4u64, 3u64);
        let x = b.input("x", DType::F32, f(&[2, 1, 32])).unwrap();
        let y = b.unary(crate::ir::UnaryOp::Neg, x).unwrap();
        let part = |b: &mut GraphBuilder, from: i64, n: i64| {
            let s = b.slice(y, -1, from * 4, (from + n) * 4).unwrap();
            let r = b.reshape(s, vec![0, 0, n, -1]).unwrap();
            b.permute(r, vec![0, 2, 1, 3]).unwrap()
        };
        let (mut q, mut k) = (part(&mut b, 0, heads), part(&mut b, heads, kvh));
        let v = part(&mut b, heads + kvh, kvh);
        if rope {
            let cos = b.input("cos", DType::F32, f(&[2, 1, 1, hd])).unwrap();
            let sin = b.input("sin", DType::F32, f(&[2, 1, 1, hd])).unwrap();
            q = b.rotary(q, cos, sin, false).unwrap();
            k = b.rotary(k, cos, sin, false).unwrap();
        }
        let mut all = Vec::new();
        for (name, new) in [("k", k), ("v", v)] {
            let old = b.state(name, DType::F32, f(&[slots, 2, 2, hd])).unwrap();
            let slot_major = b.permute(new, vec![2, 0, 1, 3]).unwrap();
            let prepended = b.concat(vec![slot_major, old], 0).unwrap();
            let kept = b.slice(prepended, 0, 0, slots as i64).unwrap();
            b.update_state(name, kept).unwrap();
            all.push(b.permute(prepended, vec![1, 2, 0, 3]).unwrap());
        }
        let a = b.attention(q, all[0], all[1], None, true, None).unwrap();
        b.output("a", a).unwrap();
        let g = b.finish().unwrap();
        let plan = Planner::plan(&g, Precision::F32, &HashMap::new(), &HashMap::new()).unwrap();
        let writes = if rope {
            "rotary2_copy_f32"
        } else {
            "copy_pair_4"
        };
        assert_eq!(
            kernel_names(&plan),
            ["unary_f32", writes, "attention_f32"],
            "{:?}",
            plan.steps
        );
    }
}

/// A linear over 5-16 rows in f16 is one tensor-core `gemv_mma` with its
/// bias and ReLU folded in, when K is a multiple of 32; f32, more rows or
/// another K stay with cuBLAS (and a separate bias add).
#[test]
fn small_batch_linears_take_tensor_cores() {
    let plan_of = |rows: u64, k: u64, precision: Precision| {
        let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let f = |d: &[u64]| d.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
        let x = b.input("x", DType::F32, f(&[rows, k])).unwrap();
        let w = b.input("w", DType::F32, f(&[24, k])).unwrap();
        let bias = b.input("b", DType::F32, f(&[24])).unwrap();
        let y = b.linear(x, w, Some(bias)).unwrap();
        let y = b.unary(crate::ir::UnaryOp::Relu, y).unwrap();
        b.output("y", y).unwrap();
        let g = b.finish().unwrap();
        let plan = Planner::plan(&g, precision, &HashMap::new(), &HashMap::new()).unwrap();
        kernel_names(&plan)
            .into_iter()
            .filter(|n| !n.starts_with("cast_"))
            .collect::<Vec<_>>()
    };
    assert_eq!(plan_of(16, 64, Precision::F16), ["gemv_mma_f16"]);
    assert_eq!(plan_of(5, 32, Precision::BF16), ["gemv_mma_bf16"]);
    assert_eq!(plan_of(16, 64, Precision::F32), ["bias_add_f32"]);
    assert_eq!(plan_of(17, 64, Precision::F16), ["bias_add_f16"]);
    assert_eq!(plan_of(8, 48, Precision::F16), ["bias_add_f16"]);
}

/// A strided SwiGLU of 2^20 elements or more over 16-byte aligned rows goes
/// a word per thread with the grid sized for words; smaller ones an
/// element per thread.
#[test]
fn large_swiglu_goes_a_word_per_thread() {
    let plan_of = |rows: u64, f: u64| {
        let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let d = |v: &[u64]| v.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
        let x = b.input("x", DType::F32, d(&[rows, 64])).unwrap();
        let w = b.input("w", DType::F32, d(&[2 * f, 64])).unwrap();
        let y = b.linear(x, w, None).unwrap();
        let gate = b.slice(y, 1, 0, f as i64).unwrap();
        let up = b.slice(y, 1, f as i64, 2 * f as i64).unwrap();
        let a = b.unary(crate::ir::UnaryOp::Silu, gate).unwrap();
        let m = b.binary(BinaryOp::Mul, a, up).unwrap();
        b.output("m", m).unwrap();
        let g = b.finish().unwrap();
        let plan = Planner::plan(&g, Precision::F16, &HashMap::new(), &HashMap::new()).unwrap();
        plan.steps
            .into_iter()
            .find_map(|s| match s {
                Step::Kernel {
                    launch:
                        Launch::UnaryBinaryStrided {
                            dt: DType::F16,
                            vec,
                            ..
                        },
                    grid,
                    ..
                } => Some((grid, Arg::I32(vec as i32))),
                _ => None,
            })
            .expect("a strided SwiGLU kernel")
    };
    assert_eq!(plan_of(2048, 512), ((1 << 20) / 8 / 256, Arg::I32(1)));
    assert_eq!(plan_of(2048, 500), (2048 * 500 / 256, Arg::I32(0)));
    assert_eq!(plan_of(20, 48), (4, Arg::I32(0)));
}

/// Many-row attention in f16/bf16 over dense rows of head dim 64 or 128
/// runs on tensor cores; f32 and other head dims keep `attention_rows`.
#[test]
fn many_row_attention_takes_tensor_cores() {
    let plan_of = |d: u64, precision: Precision| {
        let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let dims = |v: &[u64]| v.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
        let q = b.input("q", DType::F32, dims(&[2, 4, 20, d])).unwrap();
        let k = b.input("k", DType::F32, dims(&[2, 2, 20, d])).unwrap();
        let v = b.input("v", DType::F32, dims(&[2, 2, 20, d])).unwrap();
        let y = b.attention(q, k, v, None, true, None).unwrap();
        b.output("y", y).unwrap();
        let g = b.finish().unwrap();
        let plan = Planner::plan(&g, precision, &HashMap::new(), &HashMap::new()).unwrap();
        kernel_names(&plan)
            .into_iter()
            .find(|n| n.starts_with("attention"))
            .expect("an attention kernel")
    };
    assert_eq!(plan_of(64, Precision::F16), "attention_mma64_f16");
    assert_eq!(plan_of(128, Precision::BF16), "attention_mma128_bf16");
    assert_eq!(plan_of(64, Precision::F32), "attention_rows_f32");
    assert_eq!(plan_of(32, Precision::F16), "attention_rows_f16");
}

/// Decode attention of grouped heads in f16/bf16 runs a block per kv head
/// on tensor cores from 64 such blocks; fewer blocks, ungrouped heads and
/// f32 keep the per-head kernel.
#[test]
fn grouped_decode_takes_tensor_cores() {
    let plan_of = |batch: u64, h: u64, kvh: u64, precision: Precision| {
        let mut b = GraphBuilder::new("t", Arc::new(HashMap::new()), BuilderLimits::default());
        let dims = |v: &[u64]| v.iter().map(|&x| Dim::Fixed(x)).collect::<Vec<_>>();
        let q = b.input("q", DType::F32, dims(&[batch, h, 1, 64])).unwrap();
        let k = b
            .input("k", DType::F32, dims(&[batch, kvh, 40, 64]))
            .unwrap();
        let v = b
            .input("v", DType::F32, dims(&[batch, kvh, 40, 64]))
            .unwrap();
        let y = b.attention(q, k, v, None, true, None).unwrap();
        b.output("y", y).unwrap();
        let g = b.finish().unwrap();
        let plan = Planner::plan(&g, precision, &HashMap::new(), &HashMap::new()).unwrap();
        plan.steps
            .into_iter()
            .find_map(|s| match s {
                Step::Kernel {
                    launch: launch @ Launch::Attention { .. },
                    grid,
                    ..
                } => Some((launch.kernel().0, grid)),
                _ => None,
            })
            .expect("an attention kernel")
    };
    let cases = [
        ((32, 8, 2, Precision::F16), "attention_gdec64_f16", 64),
        ((16, 64, 4, Precision::BF16), "attention_gdec64_bf16", 64),
        ((2, 8, 2, Precision::F16), "attention_dec64_f16", 16),
        ((32, 4, 4, Precision::F16), "attention_dec64_f16", 128),
        ((32, 8, 2, Precision::F32), "attention_dec64_f32", 256),
    ];
    for ((batch, h, kvh, precision), name, grid) in cases {
        assert_eq!(plan_of(batch, h, kvh, precision), (name.to_string(), grid));
    }
}
