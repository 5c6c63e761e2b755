//! Session state carried between runs on the backend under test
//! (`OPS_DEVICE`), step by step against the reference interpreter: slot
//! caches written with `write-rows`, which device backends update where the
//! state lies, including a state whose next value is another state's
//! written cache (it must get its own copy, not share the memory).

use std::collections::HashMap;
use std::sync::Arc;

use host::backend::{check_inputs, check_inputs_resident, Precision};
use host::ir::builder::{BuilderLimits, GraphBuilder};
use host::ir::eval::evaluate;
use host::ir::{state_input_name, state_output_name, BinaryOp, DType, Dim, Graph};
use host::tensor::Tensor;

/// Caches `k` and `v` [6, 2, 4]: each step writes `new` into slot `slot` of
/// `k` and `2 new` into `v`; `k` keeps its written cache and `v` takes a
/// copy of `k`'s.
fn graph() -> Graph {
    let mut b = GraphBuilder::new("slots", Arc::new(HashMap::new()), BuilderLimits::default());
    let fixed = |s: &[u64]| s.iter().map(|&d| Dim::Fixed(d)).collect::<Vec<_>>();
    let k = b.state("k", DType::F32, fixed(&[6, 2, 4])).unwrap();
    let v = b.state("v", DType::F32, fixed(&[6, 2, 4])).unwrap();
    let new = b.input("new", DType::F32, fixed(&[1, 2, 4])).unwrap();
    let slot = b.input("slot", DType::I64, fixed(&[1])).unwrap();
    let two = b.scalar(2.0, DType::F32).unwrap();
    let doubled = b.binary(BinaryOp::Mul, new, two).unwrap();
    let kw = b.write_rows(k, new, slot).unwrap();
    let vw = b.write_rows(v, doubled, slot).unwrap();
    b.update_state("k", kw).unwrap();
    b.update_state("v", kw).unwrap();
    b.output("k_out", kw).unwrap();
    b.output("v_out", vw).unwrap();
    b.finish().unwrap()
}

#[test]
fn state_written_in_place_matches_the_reference() {
    let Some((device_name, precision, backend)) = super::backend_under_test() else {
        return;
    };
    let g = Arc::new(graph());
    let (_dir, model) = super::model_with(&[]).expect("model");
    let exe = backend.compile(g.clone(), &model).expect("compile");
    let zeros = Tensor::from_f32(vec![6, 2, 4], &[0.0; 48]);
    let mut host_state: HashMap<String, Tensor> =
        ["k", "v"].map(|n| (n.to_string(), zeros.clone())).into();
    let mut device_state = HashMap::new();
    if exe.device_resident() {
        for n in ["k", "v"] {
            let z = exe
                .zeros(DType::F32, &[6, 2, 4])
                .expect("zeros")
                .expect("zeros");
            device_state.insert(n.to_string(), z);
        }
    }
    let tol = if precision == Precision::F32 {
        1e-6
    } else {
        1e-2
    };
    for (step, slot) in [0i64, 3, 5, 9].into_iter().enumerate() {
        let vals: Vec<f32> = (0..8).map(|i| (step * 8 + i) as f32 * 0.25 - 3.0).collect();
        let inputs = vec![
            ("new".to_string(), Tensor::from_f32(vec![1, 2, 4], &vals)),
            ("slot".to_string(), Tensor::from_i64(vec![1], &[slot])),
        ];
        let mut all = inputs.clone();
        for (n, t) in &host_state {
            all.push((state_input_name(n), t.clone()));
        }
        let expected = evaluate(&g, &all, &|_| None).expect("reference");
        let got = if exe.device_resident() {
            let resident: Vec<_> = ["k", "v"]
                .iter()
                .map(|n| (state_input_name(n), device_state[*n].clone()))
                .collect();
            let keep: Vec<String> = ["k", "v"].iter().map(|n| state_output_name(n)).collect();
            let (ordered, _) = check_inputs_resident(&g, inputs, &resident).expect("inputs");
            let (outputs, kept) = exe.run_resident(ordered, resident, &keep).expect("run");
            for (name, t) in kept {
                let n = name.trim_start_matches("state.").trim_end_matches(".next");
                device_state.insert(n.to_string(), t);
            }
            outputs
        } else {
            let (ordered, _) = check_inputs(&g, all).expect("inputs");
            exe.run(ordered).expect("run")
        };
        for (name, want) in &expected {
            if let Some(n) = name
                .strip_prefix("state.")
                .and_then(|n| n.strip_suffix(".next"))
            {
                host_state.insert(n.to_string(), want.clone());
                continue;
            }
            let have = got
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("step {step}: no output `{name}`"));
            let (w, h) = (want.to_f32(name).unwrap(), have.1.to_f32(name).unwrap());
            for (i, (a, b)) in w.iter().zip(&h).enumerate() {
                assert!(
                    (a - b).abs() <= tol * a.abs().max(1.0),
                    "step {step} (slot {slot}) `{name}`[{i}]: expected {a}, got {b} on {device_name}"
                );
            }
        }
    }
}
