//! Speech skills against transformers on the tiny fixtures
//! (tests/fixtures/gen_tiny_audio.py): `audio-embedding` (Wav2Vec2 with
//! group norm, Wav2Vec2 "stable" with layer norms and pre-norm layers,
//! HuBERT; fp32 cosine >= 0.99999, max-abs <= 1e-4) and
//! `automatic-speech-recognition` (CTC: the pipeline's transcript,
//! identical) on WAV files of several encodings (16-bit mono and stereo,
//! 24-bit, float) and on a raw `array`; bad audio fails its own request.

mod common;

use base64::Engine;
use common::*;
use host::backend::Precision;
use host::runner::{Output, RequestError};
use serde_json::{json, Value};

fn reference(name: &str) -> Value {
    let text =
        std::fs::read_to_string(fixture(&format!("{name}/reference.json"))).expect("reference");
    serde_json::from_str(&text).expect("reference JSON")
}

fn wav(file: &str) -> String {
    let bytes = std::fs::read(fixture(&format!("audio/{file}"))).expect("audio file");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn embeddings(device: &str) {
    if !available(device) {
        return;
    }
    for name in ["tiny-wav2vec2-ctc", "tiny-wav2vec2-stable", "tiny-hubert"] {
        let r = reference(name);
        let mut run = runner("audio-embedding", &fixture(name), device, Precision::F32);
        let cases = r["cases"].as_array().unwrap();
        let reqs: Vec<String> = cases
            .iter()
            .map(|c| json!({"audio": wav(c["file"].as_str().unwrap())}).to_string())
            .collect();
        for (c, got) in cases.iter().zip(run.handle(&reqs)) {
            let got = got.unwrap_or_else(|e| panic!("{name} {}: {e}", c["file"]));
            let e: Vec<f32> = got.json["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let want: Vec<f32> = c["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let (cos, max) = compare(&e, &want);
            assert!(
                cos >= 0.99999 && max <= 1e-4,
                "{name} {device} {}: cos {cos} max-abs {max}",
                c["file"]
            );
        }
    }
}

fn transcripts(device: &str) {
    if available(device) {
        transcripts_of(&fixture("tiny-wav2vec2-ctc"), device);
    }
}

/// The CTC fixture's cases on `model` (the fixture or a copy of it).
fn transcripts_of(model: &std::path::Path, device: &str) {
    let name = "tiny-wav2vec2-ctc";
    let r = reference(name);
    let mut run = runner(
        "automatic-speech-recognition",
        model,
        device,
        Precision::F32,
    );
    let cases = r["cases"].as_array().unwrap();
    let reqs: Vec<String> = cases
        .iter()
        .map(|c| json!({"audio": wav(c["file"].as_str().unwrap())}).to_string())
        .collect();
    for (c, got) in cases.iter().zip(run.handle(&reqs)) {
        let got = got.unwrap_or_else(|e| panic!("{name} {}: {e}", c["file"]));
        assert_eq!(got.json["text"], c["text"], "{name} {device} {}", c["file"]);
    }
}

/// A model saved by transformers 5 keeps its feature extractor's settings
/// in processor_config.json (`feature_extractor`), with no
/// preprocessor_config.json: read as transformers reads them. With neither,
/// loading fails saying so.
#[test]
fn feature_extractor_settings_nested_in_processor_config() {
    if !available("cpu") {
        return;
    }
    let dir = nested_processor_copy("tiny-wav2vec2-ctc", "feature_extractor");
    transcripts_of(dir.path(), "cpu");
    std::fs::remove_file(dir.path().join("processor_config.json")).unwrap();
    let model = host::model::Model::open(dir.path().to_str().unwrap()).unwrap();
    let e = host::runner::Runner::open_model_with(
        sandbox(),
        skill("automatic-speech-recognition").to_str().unwrap(),
        std::sync::Arc::new(model),
        &host::backend::registry::parse_list("cpu").unwrap(),
        Precision::F32,
        None,
    )
    .err()
    .expect("no settings: no model");
    assert!(e.to_string().contains("processor_config.json"), "{e}");
}

#[test]
fn audio_embeddings_match_transformers_on_cpu() {
    embeddings("cpu");
}

#[test]
fn audio_embeddings_match_transformers_on_openvino() {
    embeddings("openvino");
}

#[test]
fn audio_embeddings_match_transformers_on_cuda() {
    embeddings("cuda");
}

#[test]
fn ctc_transcripts_match_transformers_on_cpu() {
    transcripts("cpu");
}

#[test]
fn ctc_transcripts_match_transformers_on_openvino() {
    transcripts("openvino");
}

#[test]
fn ctc_transcripts_match_transformers_on_cuda() {
    transcripts("cuda");
}

#[test]
fn bad_audio_fails_its_own_request() {
    if !available("cpu") {
        return;
    }
    let mut run = runner(
        "automatic-speech-recognition",
        &fixture("tiny-wav2vec2-ctc"),
        "cpu",
        Precision::F32,
    );
    let png = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nnot audio");
    let out = run.handle(&[
        json!({"audio": png}).to_string(),
        json!({"array": [0.0, 0.1], "sampling_rate": 0}).to_string(),
        json!({"array": []}).to_string(),
        json!({"audio": wav("tone_16k.wav"), "return_timestamps": true}).to_string(),
        json!({"array": vec![0.01f32; 4000], "sampling_rate": 16000}).to_string(),
    ]);
    assert!(out[0].as_ref().unwrap_err().to_string().contains("WAV"));
    assert!(out[1]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("sampling_rate"));
    assert!(out[2].is_err());
    assert!(out[3]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("timestamps"));
    assert!(out[4].is_ok(), "{:?}", out[4]);
}

/// Whisper (tests/fixtures/gen_tiny_whisper.py): every case of a clip in
/// one batch (prompts of several lengths, detected and given languages,
/// translation, beams, timestamps with several decoding passes,
/// previous-text prompts with and without conditioning on earlier
/// segments, temperature fallback on deterministic paths): tokens
/// identical to transformers `generate`, text and chunks identical to its
/// ASR pipeline, and every fallback attempt's temperature and verdict as
/// `_need_fallback` gave them (average log-probability within 1e-4,
/// no-speech probability within 1e-5, compression ratio within 5%: the
/// skill's deflate is not CPython's zlib).
fn whisper(device: &str) {
    if !available(device) {
        return;
    }
    let r = reference("tiny-whisper");
    let mut run = runner(
        "automatic-speech-recognition",
        &fixture("tiny-whisper"),
        device,
        Precision::F32,
    );
    for (clip, entry) in r["clips"].as_object().unwrap() {
        let mut reqs = Vec::new();
        let mut want = Vec::new();
        for (case, c) in entry["cases"].as_object().unwrap() {
            // Word timestamps: `whisper_words`.
            if is_words(c) {
                continue;
            }
            let mut req = c["kwargs"].clone();
            req["audio"] = json!(wav(clip));
            reqs.push(req.to_string());
            want.push((clip, case, c));
        }
        check_whisper(device, want, run.handle(&reqs));
    }
}

type Case<'a> = (&'a String, &'a String, &'a Value);

/// One alignment position (0.02 s), plus rounding.
const TIME_TOLERANCE: f64 = 0.02 + 1e-9;

fn is_words(c: &Value) -> bool {
    c["kwargs"]["return_timestamps"] == "word"
}

/// Word-level timestamps (`return_timestamps: "word"`; the cases of
/// tests/fixtures/gen_tiny_whisper.py's `WORD_CASES` and `LONG_WORDS`: beam
/// search and greedy, a language without spaces, a previous-text prompt,
/// long-form): tokens identical to transformers `generate`, and the word
/// chunks of its ASR pipeline, texts identical and times equal (both
/// rounded to 0.01 s from 0.02 s alignment positions).
fn whisper_words(device: &str) {
    if !available(device) {
        return;
    }
    let r = reference("tiny-whisper");
    let mut run = runner(
        "automatic-speech-recognition",
        &fixture("tiny-whisper"),
        device,
        Precision::F32,
    );
    let mut reqs = Vec::new();
    let mut want = Vec::new();
    for (clip, entry) in r["clips"].as_object().unwrap() {
        for (case, c) in entry["cases"].as_object().unwrap() {
            if is_words(c) {
                let mut req = c["kwargs"].clone();
                req["audio"] = json!(wav(clip));
                reqs.push(req.to_string());
                want.push((clip, case, c));
            }
        }
    }
    assert!(
        want.len() >= 9,
        "word cases in the reference: {}",
        want.len()
    );
    let mut worst = 0f64;
    let mut moved = 0;
    let mut words = 0;
    for ((clip, case, c), got) in want.into_iter().zip(run.handle(&reqs)) {
        let at = format!("{device} {clip} {case}");
        let got = got.unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(got.json["token_ids"], c["tokens"], "{at}: tokens");
        assert_eq!(got.json["text"], c["pipeline"]["text"], "{at}: text");
        let (g, w) = (&got.json["chunks"], &c["pipeline"]["chunks"]);
        let (g, w) = (g.as_array().expect(&at), w.as_array().expect(&at));
        assert_eq!(g.len(), w.len(), "{at}: words {g:?}");
        for (g, w) in g.iter().zip(w) {
            assert_eq!(g["text"], w["text"], "{at}: {g} vs {w}");
            words += 1;
            let mut differs = false;
            for k in 0..2 {
                let (a, b) = (&g["timestamp"][k], &w["timestamp"][k]);
                let d = (a.as_f64().expect(&at) - b.as_f64().expect(&at)).abs();
                worst = worst.max(d);
                differs |= d > 0.0;
            }
            moved += differs as usize;
        }
    }
    eprintln!("{device}: {words} words, {moved} with other times, worst {worst}");
    assert!(
        worst <= TIME_TOLERANCE,
        "{device}: worst time difference {worst}"
    );
}

#[test]
fn whisper_words_match_transformers_on_cpu() {
    whisper_words("cpu");
}

#[test]
fn whisper_words_match_transformers_on_openvino() {
    whisper_words("openvino");
}

#[test]
fn whisper_words_match_transformers_on_cuda() {
    whisper_words("cuda");
}

/// Word timestamps need the generation config's `alignment_heads` (a copy
/// of the fixture without them refuses, as transformers does), and a CTC
/// model refuses them.
#[test]
fn whisper_words_need_alignment_heads() {
    if !available("cpu") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tiny-whisper-no-heads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(fixture("tiny-whisper")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let gen_path = dir.join("generation_config.json");
    let mut gen: Value = serde_json::from_slice(&std::fs::read(&gen_path).unwrap()).unwrap();
    gen.as_object_mut().unwrap().remove("alignment_heads");
    std::fs::write(&gen_path, gen.to_string()).unwrap();
    let tone = wav("tone_16k.wav");
    let word = json!({"audio": tone, "return_timestamps": "word", "max_new_tokens": 4}).to_string();
    let mut run = runner("automatic-speech-recognition", &dir, "cpu", Precision::F32);
    let out = run.handle(&[
        word.clone(),
        json!({"audio": tone, "max_new_tokens": 4}).to_string(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let e = out[0].as_ref().unwrap_err();
    assert_eq!(e.kind, "unsupported", "{e}");
    assert!(e.message.contains("alignment_heads"), "{e}");
    assert!(out[1].is_ok(), "{:?}", out[1]);
    let mut ctc = runner(
        "automatic-speech-recognition",
        &fixture("tiny-wav2vec2-ctc"),
        "cpu",
        Precision::F32,
    );
    let word = json!({"audio": tone, "return_timestamps": "word"}).to_string();
    let e = ctc.handle(&[word]).remove(0).unwrap_err();
    assert_eq!(e.kind, "unsupported", "{e}");
}

fn check_whisper(device: &str, want: Vec<Case>, got: Vec<Result<Output, RequestError>>) {
    for ((clip, case, c), got) in want.into_iter().zip(got) {
        let at = format!("{device} {clip} {case}");
        if let Some(needle) = c["error"].as_str() {
            let e = got.expect_err(&at).to_string();
            assert!(e.contains(needle), "{at}: {e}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{clip} {case}: {e}"));
        assert_eq!(got.json["token_ids"], c["tokens"], "{at}: tokens");
        assert_eq!(got.json["text"], c["pipeline"]["text"], "{at}: text");
        if let Some(chunks) = c["pipeline"].get("chunks") {
            assert_eq!(&got.json["chunks"], chunks, "{at}: chunks");
        }
        if let Some(want) = c.get("attempts") {
            attempts(&at, &got.json["attempts"], want);
        }
    }
}

/// The skill's fallback attempts against transformers' record.
fn attempts(at: &str, got: &Value, want: &Value) {
    let (got, want) = (got.as_array().expect(at), want.as_array().expect(at));
    assert_eq!(got.len(), want.len(), "{at}: attempts {got:?}");
    let near = |g: &Value, w: &Value, tol: f64, rel: bool| {
        let (g, w) = (
            g.as_f64().unwrap_or(f64::NAN),
            w.as_f64().unwrap_or(f64::NAN),
        );
        let d = (g - w).abs();
        d <= if rel { tol * w.abs() } else { tol }
    };
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let at = format!("{at} attempt {i}");
        assert_eq!(g["temperature"], w["temperature"], "{at}");
        assert_eq!(g["verdict"], w["verdict"], "{at}: {g} vs {w}");
        assert!(
            near(&g["compression_ratio"], &w["compression_ratio"], 0.05, true),
            "{at}: {g} vs {w}"
        );
        if w.get("avg_logprob").is_some() {
            assert!(
                near(&g["avg_logprob"], &w["avg_logprob"], 1e-4, false),
                "{at}: {g} vs {w}"
            );
        }
        if w.get("no_speech_prob").is_some() {
            assert!(
                near(&g["no_speech_prob"], &w["no_speech_prob"], 1e-5, false),
                "{at}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn whisper_matches_transformers_on_cpu() {
    whisper("cpu");
}

#[test]
fn whisper_matches_transformers_on_openvino() {
    whisper("openvino");
}

#[test]
fn whisper_matches_transformers_on_cuda() {
    whisper("cuda");
}

/// A fallback to a positive temperature samples with one beam from the
/// request's `seed`: the same request twice gives the same tokens (torch's
/// generator is not reproduced, so only the decisions are checked).
fn whisper_sampling(device: &str) {
    if !available(device) {
        return;
    }
    let mut run = runner(
        "automatic-speech-recognition",
        &fixture("tiny-whisper"),
        device,
        Precision::F32,
    );
    let req = json!({
        "audio": wav("tone_16k.wav"), "temperature": [0.0, 0.5], "logprob_threshold": 0.0,
        "seed": 7, "max_new_tokens": 24, "return_timestamps": true,
    })
    .to_string();
    let out = run.handle(&[req.clone(), req]);
    let a = out[0].as_ref().expect("first");
    let b = out[1].as_ref().expect("second");
    assert_eq!(
        a.json["token_ids"], b.json["token_ids"],
        "{device}: same seed"
    );
    let attempts = a.json["attempts"].as_array().expect("attempts");
    // Every window: beam search at 0 rejected, then sampling at 0.5 with
    // one beam (and one beam from then on, as transformers keeps it).
    assert_eq!(attempts[0]["temperature"], 0.0);
    assert_eq!(attempts[0]["beams"], 5);
    assert_eq!(attempts[0]["verdict"], "fallback");
    assert_eq!(attempts[1]["temperature"], 0.5);
    assert_eq!(attempts[1]["beams"], 1);
    assert!(
        attempts[2..].iter().all(|t| t["beams"] == 1),
        "{attempts:?}"
    );
}

#[test]
fn whisper_fallback_samples_from_the_seed_on_cpu() {
    whisper_sampling("cpu");
}

#[test]
fn whisper_fallback_samples_from_the_seed_on_openvino() {
    whisper_sampling("openvino");
}

#[test]
fn whisper_fallback_samples_from_the_seed_on_cuda() {
    whisper_sampling("cuda");
}

#[test]
fn whisper_refuses_what_it_cannot_do() {
    if !available("cpu") {
        return;
    }
    let mut run = runner(
        "automatic-speech-recognition",
        &fixture("tiny-whisper"),
        "cpu",
        Precision::F32,
    );
    let tone = wav("tone_16k.wav");
    let out = run.handle(&[
        json!({"audio": tone, "return_timestamps": 3}).to_string(),
        json!({"audio": tone, "language": "klingon"}).to_string(),
        json!({"audio": tone, "task": "summarize"}).to_string(),
        json!({"audio": tone, "return_timestamps": "words"}).to_string(),
        json!({"audio": tone, "max_new_tokens": 446}).to_string(),
        json!({"audio": tone, "language": "de", "max_new_tokens": 3}).to_string(),
        json!({"audio": tone, "prompt": "hi", "prompt_condition_type": "all-segments"}).to_string(),
        json!({"audio": tone, "no_speech_threshold": 0.6}).to_string(),
        json!({"audio": tone, "prompt": "say <|endoftext|>"}).to_string(),
        json!({"audio": tone, "temperature": []}).to_string(),
        json!({"audio": tone, "prompt": "x", "max_new_tokens": 444}).to_string(),
        json!({"audio": tone, "prompt": "the quick brown fox ".repeat(120)}).to_string(),
    ]);
    let err = |i: usize| out[i].as_ref().unwrap_err().to_string();
    assert!(err(0).contains("boolean"), "{}", err(0));
    assert!(err(1).contains("klingon"), "{}", err(1));
    assert!(err(2).contains("transcribe"), "{}", err(2));
    assert!(err(3).contains("word"), "{}", err(3));
    assert!(err(4).contains("positions"), "{}", err(4));
    assert!(err(6).contains("condition_on_prev_tokens"), "{}", err(6));
    assert!(err(7).contains("logprob_threshold"), "{}", err(7));
    assert!(err(8).contains("special token"), "{}", err(8));
    assert!(err(9).contains("empty"), "{}", err(9));
    assert!(err(10).contains("positions"), "{}", err(10));
    assert!(err(11).contains("prompt"), "{}", err(11));
    let ok = out[5].as_ref().expect("a valid request next to bad ones");
    assert_eq!(ok.json["language"], "de");
    assert_eq!(ok.json["token_ids"].as_array().map(Vec::len), Some(3));
}

// ---------------------------------------------------------------------------
// CLAP (tests/fixtures/gen_tiny_clap.py): `tiny-clap` (unfused, rand_trunc,
// as laion/larger_clap_general) and `tiny-clap-fused` (fusion), on every
// WAV clip (long_7s.wav is longer than the extractor's 5 s).
// ---------------------------------------------------------------------------

const CLAP_FIXTURES: [&str; 2] = ["tiny-clap", "tiny-clap-fused"];

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// `multimodal-embedding` on a CLAP checkpoint: audio and text embeddings
/// (L2-normalised, as `get_*_features`) in one batch.
fn clap_embeddings(device: &str) {
    if !available(device) {
        return;
    }
    for name in CLAP_FIXTURES {
        let r = reference(name);
        let mut run = runner(
            "multimodal-embedding",
            &fixture(name),
            device,
            Precision::F32,
        );
        let clips = r["clips"].as_array().unwrap();
        let texts = r["texts"].as_array().unwrap();
        let mut reqs: Vec<String> = (clips.iter())
            .map(|c| json!({"audio": wav(c["file"].as_str().unwrap())}).to_string())
            .collect();
        reqs.extend(texts.iter().map(|t| json!({"text": t}).to_string()));
        let mut want: Vec<(String, Vec<f32>)> = (clips.iter())
            .map(|c| (c["file"].to_string(), floats(&c["audio_embeds"])))
            .collect();
        for (t, e) in texts.iter().zip(r["text_embeds"].as_array().unwrap()) {
            want.push((t.to_string(), floats(e)));
        }
        let (mut worst_cos, mut worst_max) = (1f64, 0f64);
        for ((what, want), got) in want.iter().zip(run.handle(&reqs)) {
            let got = got.unwrap_or_else(|e| panic!("{name} {what}: {e}"));
            let v = got.tensor("embedding").unwrap();
            let (cos, max) = compare(&v.to_f32("embedding").unwrap(), want);
            assert!(
                cos >= 0.99999 && max <= 1e-4,
                "{name} {device} {what}: cos {cos} max-abs {max}"
            );
            (worst_cos, worst_max) = (worst_cos.min(cos), worst_max.max(max));
        }
        eprintln!("{name} {device}: worst cos {worst_cos}, max-abs {worst_max}");
    }
}

/// `zero-shot-audio-classification`: the pipeline's labels (same order)
/// and scores within 1e-4 with its default template, then
/// softmax(`logits_per_audio`) over the reference texts ("{}" template).
fn clap_zero_shot(device: &str) {
    if !available(device) {
        return;
    }
    for name in CLAP_FIXTURES {
        let r = reference(name);
        let mut run = runner(
            "zero-shot-audio-classification",
            &fixture(name),
            device,
            Precision::F32,
        );
        let zs = &r["zero_shot"];
        let results = zs["results"].as_array().unwrap();
        let mut reqs: Vec<String> = (results.iter())
            .map(|c| {
                json!({"audio": wav(c["file"].as_str().unwrap()),
                       "candidate_labels": zs["candidate_labels"]})
                .to_string()
            })
            .collect();
        let clips = r["clips"].as_array().unwrap();
        reqs.extend(clips.iter().map(|c| {
            json!({"audio": wav(c["file"].as_str().unwrap()), "candidate_labels": r["texts"],
                   "hypothesis_template": "{}"})
            .to_string()
        }));
        let got = run.handle(&reqs);
        let mut worst = 0f64;
        for (c, got) in results.iter().zip(&got) {
            let got = got
                .as_ref()
                .unwrap_or_else(|e| panic!("{name} {}: {e}", c["file"]));
            let (have, want) = (
                got.json["labels"].as_array().unwrap(),
                c["labels"].as_array().unwrap(),
            );
            assert_eq!(have.len(), want.len());
            for (h, w) in have.iter().zip(want) {
                assert_eq!(h["label"], w["label"], "{name} {device} {}", c["file"]);
                let d = (h["score"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs();
                assert!(d <= 1e-4, "{name} {device} {}: score off by {d}", c["file"]);
                worst = worst.max(d);
            }
        }
        let logits = r["logits_per_audio"].as_array().unwrap();
        for ((c, row), got) in clips.iter().zip(logits).zip(&got[results.len()..]) {
            let got = got
                .as_ref()
                .unwrap_or_else(|e| panic!("{name} {}: {e}", c["file"]));
            let want = softmax(&floats(row));
            for h in got.json["labels"].as_array().unwrap() {
                let k = (texts_index(&r, &h["label"])).unwrap();
                let d = (h["score"].as_f64().unwrap() - want[k]).abs();
                assert!(
                    d <= 1e-4,
                    "{name} {device} {}: logits score off by {d}",
                    c["file"]
                );
                worst = worst.max(d);
            }
        }
        eprintln!("{name} {device}: scores within {worst}");
    }
}

fn texts_index(r: &Value, label: &Value) -> Option<usize> {
    r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t == label)
}

#[test]
fn clap_embeddings_match_transformers_on_cpu() {
    clap_embeddings("cpu");
}

#[test]
fn clap_embeddings_match_transformers_on_openvino() {
    clap_embeddings("openvino");
}

#[test]
fn clap_embeddings_match_transformers_on_cuda() {
    clap_embeddings("cuda");
}

#[test]
fn clap_zero_shot_matches_the_pipeline_on_cpu() {
    clap_zero_shot("cpu");
}

#[test]
fn clap_zero_shot_matches_the_pipeline_on_openvino() {
    clap_zero_shot("openvino");
}

#[test]
fn clap_zero_shot_matches_the_pipeline_on_cuda() {
    clap_zero_shot("cuda");
}

#[test]
fn clap_bad_requests_fail_alone() {
    if !available("cpu") {
        return;
    }
    let tone = wav("tone_16k.wav");
    let mut zs = runner(
        "zero-shot-audio-classification",
        &fixture("tiny-clap"),
        "cpu",
        Precision::F32,
    );
    let out = zs.handle(&[
        json!({"audio": tone}).to_string(),
        json!({"audio": tone, "candidate_labels": []}).to_string(),
        json!({"array": [0.1, 0.2], "sampling_rate": 800000, "candidate_labels": ["a"]}).to_string(),
        json!({"audio": tone, "candidate_labels": ["a"], "top_k": 1}).to_string(),
        json!({"audio": "bm90IGEgd2F2", "candidate_labels": ["a"]}).to_string(),
        json!({"array": vec![0.01f32; 1000], "sampling_rate": 16000, "candidate_labels": ["a", "b"]})
            .to_string(),
    ]);
    let err = |i: usize| out[i].as_ref().unwrap_err().to_string();
    assert!(err(0).contains("candidate_labels"), "{}", err(0));
    assert!(err(1).contains("candidate_labels"), "{}", err(1));
    assert!(err(2).contains("768000 Hz"), "{}", err(2));
    assert!(err(3).contains("top_k"), "{}", err(3));
    assert!(err(4).contains("WAV"), "{}", err(4));
    let ok = out[5].as_ref().expect("a valid request next to bad ones");
    assert_eq!(ok.json["labels"].as_array().map(Vec::len), Some(2));

    let mut emb = runner(
        "multimodal-embedding",
        &fixture("tiny-clap"),
        "cpu",
        Precision::F32,
    );
    let out = emb.handle(&[
        json!({"image": tone}).to_string(),
        json!({"text": "a dog", "audio": tone}).to_string(),
        json!({}).to_string(),
        json!({"array": [0.5, -0.5, 0.25], "sampling_rate": 16000}).to_string(),
    ]);
    let err = |i: usize| out[i].as_ref().unwrap_err().to_string();
    assert!(err(0).contains("not images"), "{}", err(0));
    assert!(err(1).contains("one of"), "{}", err(1));
    assert!(err(2).contains("one of"), "{}", err(2));
    let ok = out[3].as_ref().expect("a short clip");
    let v = ok.tensor("embedding").unwrap().to_f32("embedding").unwrap();
    assert_eq!(v.len(), 16);
}

// ---------------------------------------------------------------------------
// Other formats and rates (tests/fixtures/gen_audio_formats.sh,
// gen_audio_formats_reference.py): FLAC, OGG/Vorbis and MP3 copies of
// tone_16k.wav against the WAV's references, and audio at 44.1 kHz and
// 8 kHz (files and `array`s) resampled as the transformers ASR pipeline
// does (torchaudio's default resampler).
// ---------------------------------------------------------------------------

const ENCODERS: [&str; 3] = ["tiny-wav2vec2-ctc", "tiny-wav2vec2-stable", "tiny-hubert"];

/// The samples of a committed 16-bit PCM mono WAV as floats (PCM / 32768),
/// for `array` requests.
fn pcm16_samples(file: &str) -> Vec<f32> {
    let raw = std::fs::read(fixture(&format!("audio/{file}"))).expect("audio file");
    let at = raw
        .windows(4)
        .position(|w| w == b"data")
        .expect("data chunk");
    let n = u32::from_le_bytes(raw[at + 4..at + 8].try_into().unwrap()) as usize;
    raw[at + 8..at + 8 + n]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

fn formats_reference() -> Value {
    let text = std::fs::read_to_string(fixture("audio/formats_reference.json")).expect("reference");
    serde_json::from_str(&text).expect("reference JSON")
}

/// The embeddings of `reqs` from `audio-embedding` on encoder `name`.
fn embed_audio(name: &str, device: &str, reqs: &[String]) -> Vec<Vec<f32>> {
    let mut run = runner("audio-embedding", &fixture(name), device, Precision::F32);
    run.handle(reqs)
        .into_iter()
        .map(|r| floats(&r.unwrap_or_else(|e| panic!("{name}: {e}")).json["embedding"]))
        .collect()
}

fn transcribe(device: &str, reqs: &[String]) -> Vec<Value> {
    let mut run = runner(
        "automatic-speech-recognition",
        &fixture("tiny-wav2vec2-ctc"),
        device,
        Precision::F32,
    );
    run.handle(reqs)
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("transcription: {e}")).json["text"].clone())
        .collect()
}

/// FLAC is lossless: the WAV's transcript and embeddings at the fp32
/// tolerances. OGG/Vorbis (quality 6) and MP3 (64 kbit/s) are lossy: the
/// transcript runs (the random tiny model's letters flip with small
/// changes, so it is not compared), and the embeddings stay close to the
/// WAV's: cosine >= 0.99 (0.9986 to 0.9998 measured). The codecs move the
/// samples by 0.1% (Vorbis) and 0.3% (MP3) of the clip's energy; both
/// decode gapless (the LAME tag's delay and padding, Vorbis' pre-skip
/// trimmed), so the frames align with the WAV's.
fn other_formats(device: &str) {
    if !available(device) {
        return;
    }
    let files = ["tone_16k.flac", "tone_16k.ogg", "tone_16k.mp3"];
    let reqs: Vec<String> = files
        .iter()
        .map(|f| json!({"audio": wav(f)}).to_string())
        .collect();
    let want_text = reference("tiny-wav2vec2-ctc")["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["file"] == "tone_16k.wav")
        .unwrap()["text"]
        .clone();
    let texts = transcribe(device, &reqs);
    assert_eq!(texts[0], want_text, "{device} FLAC transcript");
    for (f, t) in files.iter().zip(&texts).skip(1) {
        assert!(
            t.as_str().is_some_and(|s| !s.is_empty()),
            "{device} {f}: {t}"
        );
    }
    for name in ENCODERS {
        let r = reference(name);
        let case = r["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["file"] == "tone_16k.wav")
            .unwrap();
        let want = floats(&case["embedding"]);
        for (f, got) in files.iter().zip(embed_audio(name, device, &reqs)) {
            let (cos, max) = compare(&got, &want);
            if *f == "tone_16k.flac" {
                assert!(
                    cos >= 0.99999 && max <= 1e-4,
                    "{name} {device} {f}: cos {cos} max-abs {max}"
                );
            } else {
                assert!(cos >= 0.99, "{name} {device} {f}: cos {cos} max-abs {max}");
            }
            eprintln!("{name} {device} {f}: cos {cos} max-abs {max}");
        }
    }
}

/// 44.1 kHz and 8 kHz audio, as a WAV file and as an `array` with its
/// `sampling_rate`: the ASR pipeline's transcript (identical) and the
/// embeddings of the torchaudio-resampled samples (fp32 tolerances).
fn resampled(device: &str) {
    if !available(device) {
        return;
    }
    let r = formats_reference();
    let mut reqs = Vec::new();
    let mut want = Vec::new();
    for (file, clip) in r["clips"].as_object().unwrap() {
        let rate = clip["sampling_rate"].as_u64().unwrap();
        let samples = pcm16_samples(file);
        assert_eq!(samples.len() as u64, clip["samples"].as_u64().unwrap());
        reqs.push(json!({"audio": wav(file)}).to_string());
        reqs.push(json!({"array": samples, "sampling_rate": rate}).to_string());
        want.push((format!("{file} as a file"), clip));
        want.push((format!("{file} as an array"), clip));
    }
    for ((what, clip), got) in want.iter().zip(transcribe(device, &reqs)) {
        assert_eq!(got, clip["text"], "{device} {what}: transcript");
    }
    for name in ENCODERS {
        for ((what, clip), got) in want.iter().zip(embed_audio(name, device, &reqs)) {
            let (cos, max) = compare(&got, &floats(&clip["embedding"][name]));
            assert!(
                cos >= 0.99999 && max <= 1e-4,
                "{name} {device} {what}: cos {cos} max-abs {max}"
            );
        }
    }
}

#[test]
fn other_formats_match_the_wav_on_cpu() {
    other_formats("cpu");
}

#[test]
fn other_formats_match_the_wav_on_openvino() {
    other_formats("openvino");
}

#[test]
fn resampled_audio_matches_the_pipeline_on_cpu() {
    resampled("cpu");
}

#[test]
fn resampled_audio_matches_the_pipeline_on_openvino() {
    resampled("openvino");
}
