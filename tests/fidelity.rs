//! Fidelity of `text-embedding` against sentence-transformers reference
//! embeddings (tests/fixtures/*/reference.json, written by the committed
//! generator scripts): fp32 cosine >= 0.99999 and max-abs <= 1e-4 at batch
//! sizes 1 and 32; bf16 cosine >= 0.999. Every device this build has.

mod common;

use common::*;
use host::backend::Precision;

/// A real model, or None (skip) when it is not installed.
fn installed(name: &str, dir: Option<std::path::PathBuf>) -> Option<std::path::PathBuf> {
    if dir.is_none() {
        assert!(
            !required("cpu"),
            "the {name} test model is required: run scripts/setup.sh"
        );
        eprintln!("SKIP: {name} model not installed (scripts/setup.sh installs it)");
    }
    dir
}

fn minilm() -> Option<std::path::PathBuf> {
    installed("MiniLM", minilm_dir())
}

fn minilm_fp32(device: &str) {
    real_fp32(device, "minilm", minilm_dir(), 256)
}

/// A real sentence-transformers model against its reference at bs1 and
/// bs32; `long` is a token count some text must reach (truncation).
fn real_fp32(device: &str, name: &str, dir: Option<std::path::PathBuf>, long: u32) {
    if !available(device) {
        return;
    }
    let Some(model) = installed(name, dir) else {
        return;
    };
    let reference = reference(&format!("{name}/reference.json"));
    assert!(reference.texts.len() >= 30);
    assert!(
        reference.token_counts.iter().any(|&c| c >= long),
        "the reference needs a truncated text"
    );
    let mut r = runner("text-embedding", &model, device, Precision::F32);
    assert_eq!(r.device, device);
    let bs1 = embed(&mut r, &reference.texts, 1);
    assert_fp32(&format!("{name} {device} f32 bs1"), &reference, &bs1);
    let bs32 = embed(&mut r, &reference.texts, 32);
    assert_fp32(&format!("{name} {device} f32 bs32"), &reference, &bs32);
    for (i, (a, b)) in bs1.iter().zip(&bs32).enumerate() {
        let (cos, max) = compare(&a.0, &b.0);
        assert!(
            cos >= 0.999999 && max <= 1e-5,
            "text {i}: bs1 vs bs32 cosine {cos} max-abs {max}"
        );
    }
}

fn tiny_bert(device: &str, precision: Precision) {
    if !available(device) {
        return;
    }
    let reference = reference("tiny-bert/reference.json");
    let mut r = runner("text-embedding", &fixture("tiny-bert"), device, precision);
    for bs in [1, 32] {
        let got = embed(&mut r, &reference.texts, bs);
        let name = format!("tiny-bert {device} {precision} bs{bs}");
        if precision == Precision::F32 {
            assert_fp32(&name, &reference, &got);
        } else {
            assert_reduced(&name, &reference, &got);
        }
    }
}

#[test]
fn minilm_cpu_matches_sentence_transformers() {
    minilm_fp32("cpu");
}

#[test]
fn minilm_openvino_f32_matches_sentence_transformers() {
    minilm_fp32("openvino");
}

#[test]
fn mpnet_cpu_matches_sentence_transformers() {
    real_fp32("cpu", "mpnet", mpnet_dir(), 384);
}

#[test]
fn mpnet_openvino_f32_matches_sentence_transformers() {
    real_fp32("openvino", "mpnet", mpnet_dir(), 384);
}

#[test]
fn minilm_openvino_bf16_is_close() {
    if !available("openvino") {
        return;
    }
    let Some(model) = minilm() else { return };
    let reference = reference("minilm/reference.json");
    let mut r = runner("text-embedding", &model, "openvino", Precision::BF16);
    assert_eq!(r.precision, Precision::BF16);
    let got = embed(&mut r, &reference.texts, 32);
    assert_reduced("minilm openvino bf16 bs32", &reference, &got);
}

#[test]
fn tiny_bert_cpu_matches_sentence_transformers() {
    tiny_bert("cpu", Precision::F32);
}

#[test]
fn tiny_bert_openvino_matches_sentence_transformers() {
    tiny_bert("openvino", Precision::F32);
    tiny_bert("openvino", Precision::BF16);
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
    assert!(
        e.to_string().contains("does not support precision f16"),
        "{e}"
    );
}

#[test]
fn unavailable_openvino_device_lists_what_exists() {
    if !available("openvino") {
        return;
    }
    let devices = host::backend::registry::parse_list("openvino:NOSUCH").unwrap();
    let e = host::runner::Runner::open(
        sandbox(),
        skill("text-embedding").to_str().unwrap(),
        fixture("tiny-bert").to_str().unwrap(),
        &devices,
        Precision::F32,
    )
    .err()
    .expect("a missing device must fail");
    let msg = e.to_string();
    assert!(
        msg.contains("openvino:NOSUCH") && msg.contains("OpenVINO reports only: CPU"),
        "{msg}"
    );
}

#[test]
fn fallback_moves_to_the_next_device() {
    if !available("cpu") {
        return;
    }
    let r = runner(
        "text-embedding",
        &fixture("tiny-bert"),
        "openvino:NOSUCH,cpu",
        Precision::F32,
    );
    assert_eq!(r.device, "cpu");
}

#[test]
fn openvino_never_reuses_a_compiled_model_for_other_weights() {
    if !available("openvino") {
        return;
    }
    // Same architecture and graph, different weights: answers must differ.
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture("tiny-bert")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
    std::fs::copy(
        fixture("tiny-bert/1_Pooling/config.json"),
        dir.path().join("1_Pooling/config.json"),
    )
    .unwrap();
    let file = dir.path().join("model.safetensors");
    let store = host::model::WeightStore::open(std::slice::from_ref(&file)).unwrap();
    let e = store.index["embeddings.LayerNorm.bias"].clone();
    drop(store);
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[e.offset as usize..(e.offset + e.length) as usize].chunks_exact_mut(4) {
        b.copy_from_slice(&(0.5f32).to_le_bytes());
    }
    std::fs::write(&file, bytes).unwrap();
    let texts = vec!["Hello world".to_string()];
    let a = embed(
        &mut runner(
            "text-embedding",
            &fixture("tiny-bert"),
            "openvino",
            Precision::F32,
        ),
        &texts,
        1,
    );
    let b = embed(
        &mut runner("text-embedding", dir.path(), "openvino", Precision::F32),
        &texts,
        1,
    );
    let (cos, _) = compare(&a[0].0, &b[0].0);
    assert!(
        cos < 0.9999,
        "changed weights must change the answer (cosine {cos})"
    );
}
