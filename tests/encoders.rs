//! Fidelity of the encoder skills against transformers on every tiny
//! encoder fixture (tests/fixtures/tiny-enc-*, written by
//! tests/fixtures/gen_tiny_encoders.py): `text-embedding` (fp32 cosine >=
//! 0.99999, max-abs <= 1e-4, token counts equal), `fill-mask` (same tokens
//! in the same order, scores within 1e-4, same strings),
//! `text-classification` (same labels, scores within 1e-4) and
//! `token-classification` (same entities, offsets and words, scores within
//! 1e-4), at batch sizes 1 and all, on cpu and openvino, and on cuda where
//! present (the GPU suite runs this binary), with f16/bf16 embeddings
//! (cosine >= 0.999) there.

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
    assert!(
        v.len() >= 20,
        "expected the tiny encoder fixtures, found {}",
        v.len()
    );
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
    assert!(
        (got - want).abs() <= 1e-4,
        "{name}: score {got}, expected {want}"
    );
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
        embeddings: (reference["embeddings"]
            .as_array()
            .expect("embeddings")
            .iter())
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| f(x) as f32)
                .collect()
        })
        .collect(),
        token_counts: (reference["token_counts"].as_array().expect("counts").iter())
            .map(|c| c.as_u64().expect("count") as u32)
            .collect(),
    };
    let mut r = runner("text-embedding", &model, device, Precision::F32);
    for bs in [1, texts.len()] {
        let got = embed(&mut r, &texts, bs);
        assert_fp32(
            &format!("{name} text-embedding {device} bs{bs}"),
            &want,
            &got,
        );
    }
    if device.starts_with("cuda") {
        for p in [Precision::F16, Precision::BF16] {
            let mut r = runner("text-embedding", &model, device, p);
            let got = embed(&mut r, &texts, texts.len());
            assert_reduced(&format!("{name} text-embedding {device} {p}"), &want, &got);
        }
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
    let mut r = runner(
        "text-classification",
        &fixture(name),
        device,
        Precision::F32,
    );
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
            let (g, w) = (
                got["labels"].as_array().expect("labels"),
                c["labels"].as_array().expect("labels"),
            );
            assert_eq!(g.len(), w.len(), "{case}");
            for (a, b) in g.iter().zip(w) {
                close(&case, f(&a["score"]), f(&b["score"]));
            }
            // Labels in the same order, except among near-ties.
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                if a["label"] != b["label"] {
                    let tie = w.iter().any(|x| {
                        x["label"] == a["label"] && (f(&x["score"]) - f(&b["score"])).abs() <= 1e-6
                    });
                    assert!(tie, "{case}: label {i}: {g:?} vs {w:?}");
                }
            }
        }
    }
}

fn ner(name: &str, cases: &[Value], device: &str) {
    let mut r = runner(
        "token-classification",
        &fixture(name),
        device,
        Precision::F32,
    );
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
            let (g, w) = (
                got["entities"].as_array().expect("entities"),
                c["entities"].as_array().expect("entities"),
            );
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

/// Families with fixtures that no skill serves yet, and why: loading them
/// must fail with this reason.
const UNSERVED: &[(&str, &str)] = &[];

/// Fixtures whose reference records the slow tokenizer's ids (FlauBERT:
/// no tokenizer.json, the host's port of it) get them compared one by one.
fn tokenizations(name: &str, reference: &Value) {
    let Some(want) = reference.get("input_ids").and_then(|v| v.as_array()) else {
        return;
    };
    let path = fixture(&format!("{name}/tokenizer.json"));
    let opts = host::tokenizer::TokenizerOptions {
        add_special_tokens: true,
        ..Default::default()
    };
    let tok = host::tokenizer::HostTokenizer::open(&path, &opts).expect("tokenizer");
    let ids = |v: &Value| -> Vec<i64> {
        (v.as_array().expect("ids").iter())
            .map(|x| x.as_i64().expect("id"))
            .collect()
    };
    let texts = reference["texts"].as_array().expect("texts");
    let mut cases: Vec<(String, Option<String>, Vec<i64>)> = texts
        .iter()
        .zip(want)
        .map(|(t, w)| (t.as_str().expect("text").to_string(), None, ids(w)))
        .collect();
    for c in reference["tokenizations"]
        .as_array()
        .expect("tokenizations")
    {
        let pair = c
            .get("text_pair")
            .and_then(|p| p.as_str())
            .map(String::from);
        let text = c["text"].as_str().expect("text").to_string();
        cases.push((text, pair, ids(&c["input_ids"])));
    }
    for (text, pair, want) in cases {
        let got = match &pair {
            Some(p) => tok.encode_pairs(vec![(text.clone(), p.clone())]),
            None => tok.encode_batch(vec![text.clone()]),
        }
        .expect("encode")
        .input_ids
        .to_i64("ids")
        .expect("ids");
        assert_eq!(got, want, "{name}: token ids of {text:?} / {pair:?}");
    }
}

fn every_fixture(device: &str) {
    if !available(device) {
        return;
    }
    let mut checked = 0;
    for (name, reference) in fixtures() {
        let family = reference["family"].as_str().unwrap_or("");
        if let Some((_, why)) = UNSERVED.iter().find(|(f, _)| *f == family) {
            refused(&name, device, why);
            continue;
        }
        tokenizations(&name, &reference);
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

/// Loading `text-embedding` on fixture `name` fails with `why`.
fn refused(name: &str, device: &str, why: &str) {
    let devices = host::backend::registry::parse_list(device).unwrap();
    let e = Runner::open(
        sandbox(),
        common::skill("text-embedding").to_str().unwrap(),
        fixture(name).to_str().unwrap(),
        &devices,
        Precision::F32,
    )
    .err()
    .unwrap_or_else(|| panic!("{name} loads but is listed as unserved"));
    assert!(e.to_string().contains(why), "{name}: {e}");
    eprintln!("{name} {device}: refused as expected ({why})");
}

/// Runs where a GPU is (the GPU suite runs this binary); f16 and bf16
/// embeddings are checked there too.
#[test]
fn tiny_encoders_match_transformers_on_cuda() {
    every_fixture("cuda");
}

/// The answer, or the error message, of one request.
fn one(r: &mut Runner, req: &str) -> Result<Value, String> {
    match r.handle(&[req.to_string()]).remove(0) {
        Ok(o) => Ok(Value::Object(o.json)),
        Err(e) => Err(e.to_string()),
    }
}

fn fails(r: &mut Runner, req: &str, text: &str) {
    match one(r, req) {
        Ok(v) => panic!("{req}: expected an error with {text:?}, got {v}"),
        Err(e) => assert!(e.contains(text), "{req}: {e}"),
    }
}

#[test]
fn bad_requests_and_models_get_clear_errors() {
    if !available("cpu") {
        return;
    }
    let cpu = |skill: &str, f: &str| runner(skill, &fixture(f), "cpu", Precision::F32);
    let mut fm = cpu("fill-mask", "tiny-enc-bert");
    fails(
        &mut fm,
        r#"{"text": "no mask here"}"#,
        "no mask token `[MASK]`",
    );
    fails(&mut fm, r#"{"text": "a [MASK]", "top_k": 0}"#, "at least 1");
    fails(
        &mut fm,
        r#"{"text": "a [MASK]", "top_k": -3}"#,
        "non-negative integer",
    );
    fails(
        &mut fm,
        r#"{"text": "a [MASK]", "targets": [""]}"#,
        "no token of the vocabulary",
    );
    fails(
        &mut fm,
        r#"{"text": "a [MASK]", "target": ["cat"]}"#,
        "unknown key `target`",
    );
    fails(&mut fm, r#"["a [MASK]"]"#, "JSON object");
    // A mask cut off by truncation is named as such.
    let long = format!("{} [MASK]", "word ".repeat(200));
    fails(
        &mut fm,
        &serde_json::json!({"text": long}).to_string(),
        "the model's limit",
    );
    // Good and bad requests in one batch: each gets its own answer.
    let answers = fm.handle(&[
        r#"{"text": "the [MASK] sat"}"#.to_string(),
        r#"{"text": "nothing"}"#.to_string(),
        r#"{"text": "a [MASK] and a [MASK]", "top_k": 2}"#.to_string(),
    ]);
    assert!(answers[0].is_ok() && answers[1].is_err() && answers[2].is_ok());
    let two = &answers[2].as_ref().unwrap().json["predictions"];
    assert_eq!(two.as_array().map(|m| m.len()), Some(2), "{two}");

    let mut tc = cpu("text-classification", "tiny-enc-bert-cls");
    fails(
        &mut tc,
        r#"{"text": "x", "function_to_apply": "relu"}"#,
        "softmax, sigmoid or none",
    );
    fails(
        &mut tc,
        r#"{"text": "x", "text_pair": 3}"#,
        "`text_pair` must be a string",
    );
    fails(&mut tc, r#"{"text_pair": "x"}"#, "missing `text`");
    // Texts beyond the model's positions are truncated and flagged.
    let long = serde_json::json!({"text": "word ".repeat(500), "text_pair": "cat"}).to_string();
    let v = one(&mut tc, &long).expect("a truncated pair is answered");
    assert_eq!(v["truncated"], true);
    assert_eq!(v["tokens"], 128);
    let v = one(&mut tc, r#"{"text": "x", "top_k": 1}"#).unwrap();
    assert_eq!(v["labels"].as_array().map(|l| l.len()), Some(1));

    let mut ner = cpu("token-classification", "tiny-enc-bert-ner");
    fails(
        &mut ner,
        r#"{"text": "x", "aggregation_strategy": "longest"}"#,
        "none, simple, first",
    );
    let v = one(
        &mut ner,
        r#"{"text": "", "aggregation_strategy": "simple"}"#,
    )
    .unwrap();
    assert_eq!(v["entities"], serde_json::json!([]));

    // A checkpoint without the task's head is refused at load, by name.
    let devices = host::backend::registry::parse_list("cpu").unwrap();
    for (skill, f, text) in [
        ("fill-mask", "tiny-enc-bert-cls", "no masked-LM head"),
        (
            "text-classification",
            "tiny-enc-bert",
            "no sequence-classification head",
        ),
        (
            "token-classification",
            "tiny-enc-dpr-question",
            "no token-classification head",
        ),
        ("text-embedding", "tiny-gpt2", "not a served encoder"),
    ] {
        let e = Runner::open(
            sandbox(),
            common::skill(skill).to_str().unwrap(),
            fixture(f).to_str().unwrap(),
            &devices,
            Precision::F32,
        )
        .err()
        .unwrap_or_else(|| panic!("{skill} on {f} must fail"));
        assert!(e.to_string().contains(text), "{skill} on {f}: {e}");
    }
}
