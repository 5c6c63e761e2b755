//! `--precision int8` (issue #25): linear-layer weights quantized by the
//! host at load (host/src/onnx/quantize.rs), on cpu and openvino.
//!
//! - The real all-MiniLM-L6-v2 at int8 stays close to sentence-transformers'
//!   f32 embeddings at batch sizes 1 and 32. On cpu: mean cosine >= 0.995
//!   (the goal) and every one >= 0.985 (measured: mean 0.9967, min
//!   0.9867). On openvino: mean >= 0.998, every one >= 0.99 (measured:
//!   0.9988 and 0.9942).
//! - Every text skill serves at int8 on cpu (an encoder of each task, a
//!   decoder, an encoder-decoder): answers have the normal shape.
//! - So does every image, video, audio and image-text skill; their
//!   embeddings stay close to f32's.
//! - cuda refuses int8 with a clear error (before it looks for a GPU).

mod common;

use common::*;
use host::backend::Precision;

/// Mean and minimum cosine of `got` against the reference embeddings.
fn cosines(reference: &Reference, got: &[(Vec<f32>, u32)]) -> (f64, f64) {
    let c: Vec<f64> = reference
        .embeddings
        .iter()
        .zip(got)
        .map(|(r, (g, _))| compare(r, g).0)
        .collect();
    let mean = c.iter().sum::<f64>() / c.len().max(1) as f64;
    (mean, c.iter().copied().fold(f64::INFINITY, f64::min))
}

/// MiniLM at int8 on `device`: mean and min cosine to the reference at
/// batch sizes 1 and 32 at least `mean_floor` and `min_floor`.
fn minilm_int8(device: &str, mean_floor: f64, min_floor: f64) {
    if !available(device) {
        return;
    }
    let Some(model) = minilm_dir() else {
        assert!(!required("cpu"), "MiniLM is required: run scripts/setup.sh");
        eprintln!("SKIP: MiniLM not installed (scripts/setup.sh installs it)");
        return;
    };
    let reference = reference("minilm/reference.json");
    let mut r = runner("text-embedding", &model, device, Precision::Int8);
    assert_eq!(r.precision, Precision::Int8);
    for batch in [1, 32] {
        let got = embed(&mut r, &reference.texts, batch);
        for (i, (_, tokens)) in got.iter().enumerate() {
            assert_eq!(
                *tokens, reference.token_counts[i],
                "token count of text {i}"
            );
        }
        let (mean, min) = cosines(&reference, &got);
        eprintln!("minilm int8 {device} bs{batch}: cosine to f32 mean {mean:.5}, min {min:.5}");
        assert!(
            mean >= mean_floor,
            "bs{batch}: mean cosine {mean:.5} < {mean_floor}"
        );
        assert!(
            min >= min_floor,
            "bs{batch}: min cosine {min:.5} < {min_floor}"
        );
    }
}

#[test]
fn minilm_int8_on_cpu_stays_close_to_sentence_transformers() {
    minilm_int8("cpu", 0.995, 0.985);
}

#[test]
fn minilm_int8_on_openvino_stays_close_to_sentence_transformers() {
    minilm_int8("openvino", 0.998, 0.99);
}

/// One request to `skill` on fixture `model` at int8; the answer's JSON.
fn ask(skill: &str, model: &str, request: serde_json::Value) -> serde_json::Value {
    let mut r = runner(skill, &fixture(model), "cpu", Precision::Int8);
    let out = r
        .handle(&[request.to_string()])
        .pop()
        .expect("one answer")
        .unwrap_or_else(|e| panic!("{skill} on {model} at int8: {e}"));
    assert_eq!(out.precision, "int8");
    serde_json::Value::Object(out.json)
}

#[test]
fn every_text_skill_serves_at_int8() {
    if !available("cpu") {
        return;
    }
    let text = serde_json::json!({ "text": "the quick brown fox jumps over the lazy dog" });
    let labels = ask("text-classification", "tiny-enc-bert-cls", text.clone());
    assert!(
        labels["labels"].is_array() || labels["label"].is_string(),
        "{labels}"
    );
    let tokens = ask("token-classification", "tiny-enc-bert-ner", text);
    assert!(tokens["entities"].is_array(), "{tokens}");
    let masked = ask(
        "fill-mask",
        "tiny-enc-bert",
        serde_json::json!({ "text": "the quick brown [MASK] jumps" }),
    );
    assert!(
        masked["predictions"].is_array() || masked["results"].is_array(),
        "{masked}"
    );
    for model in ["tiny-llama", "tiny-opt", "tiny-gpt2"] {
        let gen = ask(
            "text-generation",
            model,
            serde_json::json!({ "prompt": "hello there", "max_new_tokens": 8 }),
        );
        let n = gen["token_ids"].as_array().map_or(0, Vec::len);
        assert_eq!(n, 8, "{model}: {gen}");
    }
    let s2s = ask(
        "text2text-generation",
        "tiny-s2s-t5",
        serde_json::json!({ "text": "translate: hello there", "max_new_tokens": 6 }),
    );
    assert!(
        s2s["generated_text"].is_string() || s2s["text"].is_string(),
        "{s2s}"
    );
}

fn b64(path: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(fixture(path)).expect("fixture file"))
}

/// An embedding skill's vector for `request` at `precision` on cpu.
fn embedding(
    skill: &str,
    model: &str,
    request: &serde_json::Value,
    precision: Precision,
) -> Vec<f32> {
    let mut r = runner(skill, &fixture(model), "cpu", precision);
    let out = r.handle(&[request.to_string()]).pop().expect("one answer");
    let out = out.unwrap_or_else(|e| panic!("{skill} on {model}: {e}"));
    // A tensor (multimodal-embedding) or a JSON list (audio-embedding).
    if let Some(t) = out.tensor("embedding") {
        return t.to_f32("embedding").expect("f32 embedding");
    }
    let v = out.json.get("embedding").and_then(|v| v.as_array());
    let v = v.unwrap_or_else(|| panic!("{skill} on {model}: no embedding"));
    v.iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

#[test]
fn every_image_audio_and_vision_language_skill_serves_at_int8() {
    if !available("cpu") {
        return;
    }
    let image = b64("images/gradient_64x48.png");
    let audio = b64("audio/tone_16k.flac");
    let with_image = serde_json::json!({ "image": image });
    let labels = ask("image-classification", "tiny-vit", with_image.clone());
    assert!(labels["labels"].is_array(), "{labels}");
    let objects = ask("object-detection", "tiny-detr", with_image.clone());
    assert!(objects["objects"].is_array(), "{objects}");
    let zero_shot = serde_json::json!({ "image": image, "candidate_labels": ["a cat", "a dog"] });
    let scores = ask("zero-shot-image-classification", "tiny-clip", zero_shot);
    assert_eq!(
        scores["labels"].as_array().map(Vec::len),
        Some(2),
        "{scores}"
    );
    let frames = serde_json::json!({ "frames": vec![image.clone(); 16] });
    let video = ask("video-classification", "tiny-videomae-cls", frames);
    assert!(video["labels"].is_array(), "{video}");
    for model in ["tiny-wav2vec2-ctc", "tiny-whisper"] {
        let text = ask(
            "automatic-speech-recognition",
            model,
            serde_json::json!({ "audio": audio }),
        );
        assert!(text["text"].is_string(), "{model}: {text}");
    }
    let sounds = serde_json::json!({ "audio": audio, "candidate_labels": ["rain", "a dog"] });
    let scores = ask("zero-shot-audio-classification", "tiny-clap", sounds);
    assert_eq!(
        scores["labels"].as_array().map(Vec::len),
        Some(2),
        "{scores}"
    );
    let chat =
        serde_json::json!({ "prompt": "<image>hello", "images": [image], "max_new_tokens": 4 });
    let gen = ask("text-generation", "tiny-llava", chat);
    assert_eq!(gen["token_ids"].as_array().map(Vec::len), Some(4), "{gen}");
    // Embeddings at int8 stay close to f32's.
    let with_audio = serde_json::json!({ "audio": audio });
    for (skill, model, request) in [
        ("multimodal-embedding", "tiny-clip", &with_image),
        ("audio-embedding", "tiny-hubert", &with_audio),
    ] {
        let int8 = embedding(skill, model, request, Precision::Int8);
        let f32 = embedding(skill, model, request, Precision::F32);
        let (cos, _) = compare(&int8, &f32);
        eprintln!("{skill} {model}: int8 cosine to f32 {cos:.5}");
        assert!(cos >= 0.99, "{skill} {model}: cosine {cos}");
    }
}

#[test]
fn cuda_refuses_int8_clearly() {
    let devices = host::backend::registry::parse_list("cuda").expect("device list");
    let e = host::runner::Runner::open(
        sandbox(),
        skill("text-embedding").to_str().expect("utf-8"),
        fixture("tiny-bert").to_str().expect("utf-8"),
        &devices,
        Precision::Int8,
    )
    .err()
    .expect("int8 on cuda must fail");
    let m = e.to_string();
    assert!(m.contains("int8") && m.contains("cpu"), "{m}");
}
