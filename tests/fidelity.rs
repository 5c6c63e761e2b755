//! Fidelity of `text-embedding` against sentence-transformers reference
//! embeddings (tests/fixtures/*/reference.json, written by the committed
//! generator scripts): fp32 cosine >= 0.99999 and max-abs <= 1e-4, at batch
//! sizes 1 and 32.

mod common;

use common::*;
use host::backend::Precision;

#[test]
fn minilm_cpu_matches_sentence_transformers() {
    if !available("cpu") {
        return;
    }
    let Some(model) = minilm_dir() else {
        assert!(!required("cpu"), "the MiniLM test model is required: run scripts/setup.sh");
        eprintln!("SKIP: MiniLM model not installed (scripts/setup.sh installs it)");
        return;
    };
    let reference = reference("minilm/reference.json");
    assert!(reference.texts.len() >= 30);
    assert!(reference.token_counts.iter().any(|&c| c >= 256), "the reference needs a truncated text");
    let mut r = runner("text-embedding", &model, "cpu", Precision::F32);
    assert_eq!(r.device, "cpu");
    let bs1 = embed(&mut r, &reference.texts, 1);
    assert_fp32("minilm cpu bs1", &reference, &bs1);
    let bs32 = embed(&mut r, &reference.texts, 32);
    assert_fp32("minilm cpu bs32", &reference, &bs32);
    for (i, (a, b)) in bs1.iter().zip(&bs32).enumerate() {
        let (cos, max) = compare(&a.0, &b.0);
        assert!(cos >= 0.999999 && max <= 1e-5, "text {i}: bs1 vs bs32 cosine {cos} max-abs {max}");
    }
}

#[test]
fn tiny_bert_cpu_matches_sentence_transformers() {
    if !available("cpu") {
        return;
    }
    let reference = reference("tiny-bert/reference.json");
    let mut r = runner("text-embedding", &fixture("tiny-bert"), "cpu", Precision::F32);
    let bs1 = embed(&mut r, &reference.texts, 1);
    assert_fp32("tiny-bert cpu bs1", &reference, &bs1);
    let all = embed(&mut r, &reference.texts, 32);
    assert_fp32("tiny-bert cpu bs32", &reference, &all);
}

#[test]
fn cpu_rejects_reduced_precision_with_a_clear_error() {
    if !available("cpu") {
        return;
    }
    let devices = host::backend::registry::parse_list("cpu").unwrap();
    let e = host::runner::Runner::open(
        sandbox(),
        skill("text-embedding").to_str().unwrap(),
        fixture("tiny-bert").to_str().unwrap(),
        &devices,
        Precision::F16,
    )
    .err()
    .expect("f16 on cpu must fail");
    assert!(e.to_string().contains("does not support precision f16"), "{e}");
}
