//! Fidelity of the encoder skills against transformers on every tiny
//! encoder fixture (tests/fixtures/tiny-enc-*, written by
//! tests/fixtures/gen_tiny_encoders.py): `text-embedding` (fp32 cosine >=
//! 0.99999, max-abs <= 1e-4, token counts equal), `fill-mask` (same tokens
//! in the same order, scores within 1e-4, same strings),
//! `text-classification` (same labels, scores within 1e-4) and
//! `token-classification` (same entities, offsets and words, scores within
//! 1e-4), at batch sizes 1 and all, on cpu and openvino (and cuda where
//! present, which the GPU suite runs).

mod common;

use common::*;
use host::backend::Precision;
use host::runner::Runner;
use serde_json::Value;

/// Every tiny encoder fixture with its parsed reference.
fn fixtures() -> Vec<(String, Value)> {
    let dir = fixture("");
    let mut v: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tiny-enc-"))
        .map(|n| {
            let text = std::fs::read_to_string(fixture(&format!("{n}/reference.json")))
                .unwrap_or_else(|e| panic!("{n}/reference.json: {e}"));
            (n, serde_json::from_str(&text).expect("reference JSON"))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(v.len() >= 20, "expected the tiny encoder fixtures, found {}", v.len());
    v
}

/// Runs `reqs` in batches of `batch` and returns each JSON answer.
fn answers(r: &mut Runner, reqs: &[Value], batch: usize) -> Vec<Value> {
    let texts: Vec<String> = reqs.iter().map(|q| q.to_string()).collect();
    let mut out = Vec::new();
    for chunk in texts.chunks(batch) {
        for res in r.handle(chunk) {
            let o = res.unwrap_or_else(|e| panic!("request failed: {e}"));
            out.push(Value::Object(o.json));
        }
    }
    out
}

fn close(name: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-4, "{name}: score {got}, expected {want}");
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

fn embeddings(name: &str, reference: &Value, device: &str) {
    let model = fixture(name);
    let texts: Vec<String> = (reference["texts"].as_array().expect("texts").iter())
        .map(|t| t.as_str().expect("text").to_string())
        .collect();
    let want = Reference {
        texts: texts.clone(),
        embeddings: (reference["embeddings"].as_array().expect("embeddings").iter())
            .map(|r| r.as_array().expect("row").iter().map(|x| f(x) as f32).collect())
            .collect(),
        token_counts: (reference["token_counts"].as_array().expect("counts").iter())
            .map(|c| c.as_u64().expect("count") as u32)
            .collect(),
    };
    let mut r = runner("text-embedding", &model, device, Precision::F32);
    for bs in [1, texts.len()] {
        let got = embed(&mut r, &texts, bs);
        assert_fp32(&format!("{name} text-embedding {device} bs{bs}"), &want, &got);
    }
}

fn fill_mask(name: &str, cases: &[Value], device: &str) {
    let mut r = runner("fill-mask", &fixture(name), device, Precision::F32);
    let reqs: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut q = serde_json::json!({"text": c["text"], "top_k": c["top_k"]});
            if let Some(t) = c.get("targets").filter(|t| !t.is_null()) {
                q["targets"] = t.clone();
            }
            q
        })
        .collect();
    for bs in [1, reqs.len()] {
        for (c, got) in cases.iter().zip(answers(&mut r, &reqs, bs)) {
            let case = format!("{name} fill-mask {device} bs{bs} {:?}", c["text"]);
            let want = c["predictions"].as_array().expect("predictions");
            let got = got["predictions"].as_array().expect("predictions").clone();
            assert_eq!(got.len(), want.len(), "{case}: masks");
            for (g, w) in got.iter().zip(want) {
                let (g, w) = (g.as_array().expect("list"), w.as_array().expect("list"));
                assert_eq!(g.len(), w.len(), "{case}: candidates");
                for (a, b) in g.iter().zip(w) {
                    assert_eq!(a["token"], b["token"], "{case}: {g:?} vs {w:?}");
                    assert_eq!(a["token_str"], b["token_str"], "{case}");
                    assert_eq!(a["sequence"], b["sequence"], "{case}");
                    close(&case, f(&a["score"]), f(&b["score"]));
                }
            }
        }
    }
}

fn classification(name: &str, cases: &[Value], device: &str) {
    let mut r = runner("text-classification", &fixture(name), device, Precision::F32);
    let reqs: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut q = serde_json::json!({"text": c["text"]});
            for k in ["text_pair", "top_k", "function_to_apply"] {
                if let Some(v) = c.get(k).filter(|v| !v.is_null()) {
                    q[k] = v.clone();
                }
            }
            q
        })
        .collect();
    for bs in [1, reqs.len()] {
        for (c, got) in cases.iter().zip(answers(&mut r, &reqs, bs)) {
            let case = format!("{name} text-classification {device} bs{bs} {:?}", c["text"]);
            let (g, w) = (got["labels"].as_array().expect("labels"), c["labels"].as_array().expect("labels"));
            assert_eq!(g.len(), w.len(), "{case}");
            for (a, b) in g.iter().zip(w) {
                close(&case, f(&a["score"]), f(&b["score"]));
            }
            // Labels in the same order, except among near-ties.
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                if a["label"] != b["label"] {
                    let tie = w.iter().any(|x| x["label"] == a["label"] && (f(&x["score"]) - f(&b["score"])).abs() <= 1e-6);
                    assert!(tie, "{case}: label {i}: {g:?} vs {w:?}");
                }
            }
        }
    }
}

fn ner(name: &str, cases: &[Value], device: &str) {
    let mut r = runner("token-classification", &fixture(name), device, Precision::F32);
    let cases: Vec<&Value> = cases.iter().filter(|c| c.get("error").is_none()).collect();
    let reqs: Vec<Value> = cases
        .iter()
        .map(|c| serde_json::json!({"text": c["text"], "aggregation_strategy": c["aggregation_strategy"]}))
        .collect();
    for bs in [1, reqs.len()] {
        for (c, got) in cases.iter().zip(answers(&mut r, &reqs, bs)) {
            let case = format!(
                "{name} token-classification {device} bs{bs} {} {:?}",
                c["aggregation_strategy"], c["text"]
            );
            let (g, w) = (got["entities"].as_array().expect("entities"), c["entities"].as_array().expect("entities"));
            assert_eq!(g.len(), w.len(), "{case}: {g:?} vs {w:?}");
            for (a, b) in g.iter().zip(w) {
                for k in ["entity", "entity_group", "word", "start", "end", "index"] {
                    assert_eq!(a.get(k), b.get(k), "{case}: `{k}` of {a} vs {b}");
                }
                close(&case, f(&a["score"]), f(&b["score"]));
            }
        }
    }
}

fn every_fixture(device: &str) {
    if !available(device) {
        return;
    }
    let mut checked = 0;
    for (name, reference) in fixtures() {
        embeddings(&name, &reference, device);
        let cases = |k: &str| reference.get(k).and_then(|v| v.as_array()).cloned();
        if let Some(c) = cases("fill_mask") {
            fill_mask(&name, &c, device);
        }
        if let Some(c) = cases("classification") {
            classification(&name, &c, device);
        }
        if let Some(c) = cases("ner") {
            ner(&name, &c, device);
        }
        eprintln!("{name} {device}: ok");
        checked += 1;
    }
    record(serde_json::json!({"case": format!("tiny encoders {device}"), "fixtures": checked}));
}

#[test]
fn tiny_encoders_match_transformers_on_cpu() {
    every_fixture("cpu");
}

#[test]
fn tiny_encoders_match_transformers_on_openvino() {
    every_fixture("openvino");
}

#[test]
fn tiny_encoders_match_transformers_on_cuda() {
    if std::env::var("HOST_TEST_CUDA").is_err() {
        eprintln!("SKIP: cuda encoder fidelity runs in the GPU suite (HOST_TEST_CUDA=1)");
        return;
    }
    every_fixture("cuda");
}
