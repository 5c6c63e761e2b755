//! Hand-computed checks of the reference interpreter.

use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::ir::builder::BuilderLimits;
use crate::ir::{BinaryOp, CompareOp, GraphBuilder, ReduceOp, UnaryOp};

fn f(shape: &[u64]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Fixed(d)).collect()
}

fn builder(weights: &[(&str, &[u64])]) -> GraphBuilder {
    let types: HashMap<String, (DType, Vec<u64>)> = weights
        .iter()
        .map(|(n, s)| (n.to_string(), (DType::F32, s.to_vec())))
        .collect();
    GraphBuilder::new("t", Arc::new(types), BuilderLimits::default())
}

fn no_weights(_: &str) -> Option<Tensor> {
    None
}

fn floats(out: &[(String, Tensor)], i: usize) -> Vec<f32> {
    out[i].1.to_f32("out").unwrap()
}

fn ints(out: &[(String, Tensor)], i: usize) -> Vec<i64> {
    out[i].1.to_i64("out").unwrap()
}

fn close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

#[test]
fn linear_is_x_times_w_transposed_plus_bias() {
    let mut g = builder(&[("w", &[3, 2]), ("b", &[3])]);
    let x = g.input("x", DType::F32, f(&[1, 2])).unwrap();
    let (w, b) = (g.weight("w").unwrap(), g.weight("b").unwrap());
    let y = g.linear(x, w, Some(b)).unwrap();
    g.output("y", y).unwrap();
    let g = g.finish().unwrap();
    let weights = |n: &str| match n {
        "w" => Some(Tensor::from_f32(vec![3, 2], &[1., 0., 0., 1., 1., 1.])),
        "b" => Some(Tensor::from_f32(vec![3], &[0.5, -1., 0.])),
        _ => None,
    };
    let out = evaluate(
        &g,
        &[("x".into(), Tensor::from_f32(vec![1, 2], &[1., 2.]))],
        &weights,
    )
    .unwrap();
    assert_eq!(out[0].0, "y");
    assert_eq!(out[0].1.shape, vec![1, 3]);
    close(&floats(&out, 0), &[1.5, 1.0, 3.0]);
}

#[test]
fn causal_gqa_attention_by_hand() {
    // q [1, 2 heads, 2, 2], k/v [1, 1 kv head, 2, 2]; scale 1.
    let mut g = builder(&[]);
    let q = g.input("q", DType::F32, f(&[1, 2, 2, 2])).unwrap();
    let k = g.input("k", DType::F32, f(&[1, 1, 2, 2])).unwrap();
    let v = g.input("v", DType::F32, f(&[1, 1, 2, 2])).unwrap();
    let a = g.attention(q, k, v, None, true, Some(1.0)).unwrap();
    g.output("a", a).unwrap();
    let g = g.finish().unwrap();
    let inputs = vec![
        (
            "q".into(),
            Tensor::from_f32(vec![1, 2, 2, 2], &[1., 0., 1., 0., 0., 1., 0., 0.]),
        ),
        (
            "k".into(),
            Tensor::from_f32(vec![1, 1, 2, 2], &[1., 0., 0., 1.]),
        ),
        (
            "v".into(),
            Tensor::from_f32(vec![1, 1, 2, 2], &[2., 0., 0., 4.]),
        ),
    ];
    let out = evaluate(&g, &inputs, &no_weights).unwrap();
    let e = std::f64::consts::E;
    let (p0, p1) = (e / (e + 1.0), 1.0 / (e + 1.0));
    // Row 0 sees only key 0; head 0 row 1 scores [1, 0]; head 1 row 1
    // scores [0, 0] (uniform); both heads read the single kv head.
    close(
        &floats(&out, 0),
        &[2., 0., 2. * p0, 4. * p1, 2., 0., 1., 2.],
    );
}

#[test]
fn masks_add_rather_than_replace() {
    // One query, keys scoring [1, 0]. The float mask adds [0.5, 0]; the bool
    // mask forbids both keys, so -65504 is added to each and the softmax of
    // the original scores survives (a replacement would make it uniform).
    let mut g = builder(&[]);
    let q = g.input("q", DType::F32, f(&[1, 1, 1, 1])).unwrap();
    let k = g.input("k", DType::F32, f(&[1, 1, 2, 1])).unwrap();
    let v = g.input("v", DType::F32, f(&[1, 1, 2, 1])).unwrap();
    let m = g.input("m", DType::F32, f(&[1, 1, 1, 2])).unwrap();
    let zero = g.scalar(0.0, DType::F32).unwrap();
    let never = g.compare(CompareOp::Less, m, zero).unwrap();
    let a = g.attention(q, k, v, Some(m), false, Some(1.0)).unwrap();
    let b = g.attention(q, k, v, Some(never), false, Some(1.0)).unwrap();
    g.output("float", a).unwrap();
    g.output("bool", b).unwrap();
    let g = g.finish().unwrap();
    let inputs = vec![
        ("q".into(), Tensor::from_f32(vec![1, 1, 1, 1], &[1.])),
        ("k".into(), Tensor::from_f32(vec![1, 1, 2, 1], &[1., 0.])),
        ("v".into(), Tensor::from_f32(vec![1, 1, 2, 1], &[10., 20.])),
        ("m".into(), Tensor::from_f32(vec![1, 1, 1, 2], &[0.5, 0.])),
    ];
    let out = evaluate(&g, &inputs, &no_weights).unwrap();
    let (e, e15) = (std::f64::consts::E, 1.5f64.exp());
    close(&floats(&out, 0), &[(10. * e15 + 20.) / (e15 + 1.)]);
    close(&floats(&out, 1), &[(10. * e + 20.) / (e + 1.)]);
}

#[test]
fn top_k_and_argmax_break_ties_to_the_lower_index() {
    let mut g = builder(&[]);
    let x = g.input("x", DType::F32, f(&[2, 4])).unwrap();
    let (v, i) = g.top_k(x, 2).unwrap();
    let a = g.argmax(x, 1, false).unwrap();
    g.output("v", v).unwrap();
    g.output("i", i).unwrap();
    g.output("a", a).unwrap();
    let g = g.finish().unwrap();
    let x = Tensor::from_f32(vec![2, 4], &[3., 1., 3., 2., -1., 5., 0., 5.]);
    let out = evaluate(&g, &[("x".into(), x)], &no_weights).unwrap();
    close(&floats(&out, 0), &[3., 3., 5., 5.]);
    assert_eq!(ints(&out, 1), vec![0, 2, 1, 3]);
    assert_eq!(ints(&out, 2), vec![0, 1]);
    assert_eq!(out[2].1.dtype, DType::I64);
}

#[test]
fn gather_wraps_negative_indices_and_rejects_out_of_range() {
    let mut g = builder(&[]);
    let x = g.input("x", DType::F32, f(&[3, 2])).unwrap();
    let i = g.input("i", DType::I64, f(&[2])).unwrap();
    let y = g.gather(x, i, 0).unwrap();
    g.output("y", y).unwrap();
    let g = g.finish().unwrap();
    let x = Tensor::from_f32(vec![3, 2], &[1., 2., 3., 4., 5., 6.]);
    let run = |idx: &[i64]| {
        evaluate(
            &g,
            &[
                ("x".into(), x.clone()),
                ("i".into(), Tensor::from_i64(vec![2], idx)),
            ],
            &no_weights,
        )
    };
    close(&floats(&run(&[-1, 0]).unwrap(), 0), &[5., 6., 1., 2.]);
    let e = run(&[0, 3]).unwrap_err();
    assert!(
        matches!(&e, EvalError::Op { op: "gather", .. }) && e.to_string().contains("index 3"),
        "{e}"
    );
}

#[test]
fn broadcasting_norms_and_activations() {
    let mut g = builder(&[]);
    let a = g.input("a", DType::F32, f(&[2, 1])).unwrap();
    let b = g.input("b", DType::F32, f(&[3])).unwrap();
    let s = g.binary(BinaryOp::Sub, a, b).unwrap();
    g.output("s", s).unwrap();
    let one = g.scalar(1.0, DType::F32).unwrap();
    let ln_scale = g.expand(one, f(&[3])).unwrap();
    let ln = g.layer_norm(b, ln_scale, None, 0.0).unwrap();
    g.output("ln", ln).unwrap();
    let ge = g.unary(UnaryOp::Gelu, a).unwrap();
    g.output("gelu", ge).unwrap();
    let gt = g.unary(UnaryOp::GeluTanh, a).unwrap();
    g.output("gelu_tanh", gt).unwrap();
    let m = g.reduce(ReduceOp::Mean, s, vec![0], true).unwrap();
    g.output("mean", m).unwrap();
    let g = g.finish().unwrap();
    let inputs = vec![
        ("a".into(), Tensor::from_f32(vec![2, 1], &[1., 10.])),
        ("b".into(), Tensor::from_f32(vec![3], &[1., 2., 3.])),
    ];
    let out = evaluate(&g, &inputs, &no_weights).unwrap();
    close(&floats(&out, 0), &[0., -1., -2., 9., 8., 7.]);
    let r = 1.0 / (2.0f64 / 3.0).sqrt();
    close(&floats(&out, 1), &[-r, 0., r]);
    // gelu(1) = 0.5 (1 + erf(1/sqrt 2)); gelu(10) = 10 to f32.
    close(&floats(&out, 2), &[0.841_344_746_068_542_9, 10.]);
    close(&floats(&out, 3), &[0.841_191_990_608_276_8, 10.]);
    assert_eq!(out[4].1.shape, vec![1, 3]);
    close(&floats(&out, 4), &[4.5, 3.5, 2.5]);
}

#[test]
fn values_round_to_the_node_dtype() {
    let mut g = builder(&[]);
    let x = g.input("x", DType::F32, f(&[2])).unwrap();
    let h = g.cast(x, DType::F16).unwrap();
    let back = g.cast(h, DType::F32).unwrap();
    g.output("back", back).unwrap();
    let i = g.cast(x, DType::I32).unwrap();
    g.output("i", i).unwrap();
    let g = g.finish().unwrap();
    let x = Tensor::from_f32(vec![2], &[1.0 / 3.0, -2.75]);
    let out = evaluate(&g, &[("x".into(), x)], &no_weights).unwrap();
    // 1/3 in f16 is 0.333251953125; float -> int truncates toward zero.
    close(&floats(&out, 0), &[0.333_251_953_125, -2.75]);
    assert_eq!(out[1].1.dtype, DType::I32);
    assert_eq!(ints(&out, 1), vec![0, -2]);
}

#[test]
fn state_concat_binds_sum_axes_and_slices_clamp() {
    let sym = |s: &str| Dim::Sym(s.into());
    let mut g = builder(&[]);
    let past = g
        .state(
            "k",
            DType::F32,
            vec![Dim::Fixed(1), sym("past"), Dim::Fixed(2)],
        )
        .unwrap();
    let new = g
        .input(
            "x",
            DType::F32,
            vec![Dim::Fixed(1), sym("seq"), Dim::Fixed(2)],
        )
        .unwrap();
    let all = g.concat(vec![past, new], 1).unwrap();
    g.update_state("k", all).unwrap();
    let tail = g.slice(all, 2, 1, 99).unwrap();
    let flat = g.reshape(tail, vec![0, -1]).unwrap();
    g.output("tail", flat).unwrap();
    let g = g.finish().unwrap();
    let inputs = vec![
        ("state.k".into(), Tensor::from_f32(vec![1, 1, 2], &[1., 2.])),
        (
            "x".into(),
            Tensor::from_f32(vec![1, 2, 2], &[3., 4., 5., 6.]),
        ),
    ];
    let out = evaluate(&g, &inputs, &no_weights).unwrap();
    assert_eq!(out[0].0, "state.k.next");
    assert_eq!(out[0].1.shape, vec![1, 3, 2]);
    close(&floats(&out, 0), &[1., 2., 3., 4., 5., 6.]);
    assert_eq!(out[1].1.shape, vec![1, 3]);
    close(&floats(&out, 1), &[2., 4., 6.]);
}

#[test]
fn bad_inputs_are_errors() {
    let mut g = builder(&[]);
    let x = g.input("x", DType::F32, f(&[2])).unwrap();
    let y = g.unary(UnaryOp::Exp, x).unwrap();
    g.output("y", y).unwrap();
    let g = g.finish().unwrap();
    let e = evaluate(&g, &[], &no_weights).unwrap_err();
    assert!(matches!(e, EvalError::MissingInput { .. }), "{e}");
    let wrong = Tensor::from_i64(vec![2], &[1, 2]);
    let e = evaluate(&g, &[("x".into(), wrong)], &no_weights).unwrap_err();
    assert!(e.to_string().contains("expected f32, got i64"), "{e}");
    let short = Tensor {
        dtype: DType::F32,
        shape: vec![2],
        data: vec![0; 5],
    };
    assert!(evaluate(&g, &[("x".into(), short)], &no_weights).is_err());
    let long = Tensor::from_f32(vec![3], &[1., 2., 3.]);
    assert!(evaluate(&g, &[("x".into(), long)], &no_weights).is_err());
}
