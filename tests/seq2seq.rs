//! `text2text-generation` against transformers `generate` (fp32) on the tiny
//! encoder-decoder fixtures (tests/fixtures/gen_tiny_seq2seq.py): greedy,
//! beam search (3 beams; length penalty, early stopping, n-gram blocking,
//! minimum length) and the generation_config defaults (beams, forced
//! tokens, encoder n-gram blocking), token-identical, every case alone and
//! all of a fixture in one batch (mixed beam counts), on cpu and openvino,
//! on the fixed-slot cache (what cuda uses, forced on the cpu), and on cuda
//! where present (with f16/bf16 first-step logits, cosine >= 0.999); mBART
//! language codes; bad input; queued requests joining a running batch.

mod common;

use common::*;
use host::backend::Precision;
use host::runner::Runner;
use serde_json::{json, Value};

const FAMILIES: &[&str] = &[
    "t5",
    "t5-tied",
    "mt5",
    "bart",
    "mbart",
    "pegasus",
    "blenderbot",
    "blenderbot-small",
    "led",
    "mbart-cc25",
];

fn reference(family: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("tiny-s2s-{family}/reference.json")))
        .unwrap_or_else(|e| panic!("{family}: {e}"));
    serde_json::from_str(&text).expect("reference JSON")
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// The requests of one fixture and the tokens transformers generated:
/// (label, request, expected ids).
fn requests(family: &str, r: &Value) -> Vec<(String, Value, Vec<i64>)> {
    let mut out = Vec::new();
    let new = r["max_new_tokens"].as_u64().unwrap();
    for (i, c) in r["cases"].as_array().unwrap().iter().enumerate() {
        let mut base = json!({ "text": c["text"] });
        if let Some(src) = c.get("src_lang") {
            base["src_lang"] = src.clone();
            base["tgt_lang"] = c["tgt_lang"].clone();
        }
        out.push((
            format!("{family} case {i} defaults"),
            base.clone(),
            ids(&c["defaults"]),
        ));
        for (name, kw) in r["cases_kw"].as_object().unwrap() {
            let mut q = base.clone();
            q["max_new_tokens"] = json!(new);
            for (k, v) in kw.as_object().unwrap() {
                q[k] = v.clone();
            }
            out.push((format!("{family} case {i} {name}"), q, ids(&c[name])));
        }
    }
    out
}

fn answer(r: &mut Runner, reqs: &[Value]) -> Vec<Value> {
    let texts: Vec<String> = reqs.iter().map(|q| q.to_string()).collect();
    r.handle(&texts)
        .into_iter()
        .map(|o| Value::Object(o.unwrap_or_else(|e| panic!("request failed: {e}")).json))
        .collect()
}

fn check(label: &str, got: &Value, want: &[i64]) {
    assert_eq!(ids(&got["token_ids"]), want, "{label}: {got}");
    let eos = got["finish_reason"] == "eos";
    assert!(eos || got["finish_reason"] == "length", "{label}: {got}");
}

/// Every case of every family alone and batched on `device`.
fn every_family(device: &str, fixed_shapes: Option<bool>) {
    if !available(device) {
        return;
    }
    let label = match fixed_shapes {
        Some(true) => format!("{device} (fixed slots)"),
        _ => device.to_string(),
    };
    for family in FAMILIES {
        let r = reference(family);
        let reqs = requests(family, &r);
        let model = fixture(&format!("tiny-s2s-{family}"));
        let mut runner = runner_with(
            "text2text-generation",
            &model,
            device,
            Precision::F32,
            fixed_shapes,
        );
        for (name, q, want) in &reqs {
            let got = &answer(&mut runner, std::slice::from_ref(q))[0];
            check(&format!("{name} on {label}"), got, want);
        }
        let all: Vec<Value> = reqs.iter().map(|(_, q, _)| q.clone()).collect();
        for ((name, _, want), got) in reqs.iter().zip(answer(&mut runner, &all)) {
            check(&format!("{name} on {label}, batched"), &got, want);
        }
        record(
            json!({ "case": format!("text2text {family} {label} f32"), "requests": reqs.len(), "identical": true }),
        );
    }
}

#[test]
fn seq2seq_matches_transformers_on_cpu() {
    every_family("cpu", None);
}

#[test]
fn seq2seq_matches_transformers_on_cpu_with_fixed_slots() {
    every_family("cpu", Some(true));
}

#[test]
fn seq2seq_matches_transformers_on_openvino() {
    every_family("openvino", None);
}

#[test]
fn seq2seq_matches_transformers_on_cuda() {
    every_family("cuda", None);
}

/// The first decoder step's logits of a family's first case on `device`
/// at `precision` against transformers' fp32 ones: (cosine, max-abs).
fn first_step(family: &str, device: &str, precision: Precision) -> (f64, f64) {
    let r = reference(family);
    let want: Vec<f32> = r["first_step_logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let c = &r["cases"][0];
    let mut q = json!({ "text": c["text"], "max_new_tokens": 1, "return_logits": true });
    if let Some(src) = c.get("src_lang") {
        q["src_lang"] = src.clone();
    }
    let model = fixture(&format!("tiny-s2s-{family}"));
    let mut runner = runner("text2text-generation", &model, device, precision);
    let out = runner
        .handle(&[q.to_string()])
        .remove(0)
        .expect("logits request");
    let got = out
        .tensor("first_step_logits")
        .expect("first_step_logits")
        .to_f32("logits")
        .unwrap();
    compare(&got, &want)
}

/// f16/bf16 first decoder step logits against transformers' fp32 ones.
#[test]
fn seq2seq_reduced_precision_first_step_on_cuda() {
    if !available("cuda") {
        return;
    }
    for family in FAMILIES {
        for precision in [Precision::F16, Precision::BF16] {
            let (cos, max) = first_step(family, "cuda", precision);
            assert!(
                cos >= 0.999,
                "{family} {precision:?}: cosine {cos}, max-abs {max}"
            );
            record(
                json!({ "case": format!("text2text {family} cuda {precision:?} first-step logits"), "cosine": cos, "max_abs": max }),
            );
        }
    }
}

#[test]
fn seq2seq_first_step_logits_match_in_f32() {
    if !available("cpu") {
        return;
    }
    for family in FAMILIES {
        let (cos, max) = first_step(family, "cpu", Precision::F32);
        assert!(
            max <= 1e-4 && cos >= 0.99999,
            "{family}: cosine {cos}, max-abs {max}"
        );
    }
}

#[test]
fn bad_requests_get_clear_errors() {
    if !available("cpu") {
        return;
    }
    let mut r = runner(
        "text2text-generation",
        &fixture("tiny-s2s-mbart"),
        "cpu",
        Precision::F32,
    );
    let cases = [
        (json!({}), "missing `text`"),
        (json!({ "text": "" }), "empty"),
        (json!({ "text": "hi", "max_new_tokens": 0 }), "at least 1"),
        (json!({ "text": "hi", "num_beams": 99 }), "num_beams"),
        (
            json!({ "text": "hi", "src_lang": "xx_YY" }),
            "unknown language code",
        ),
        (
            json!({ "text": "hi", "tgt_lang": "klingon" }),
            "unknown language code",
        ),
        (
            json!({ "text": "hi", "num_beams": 2, "do_sample": true }),
            "beam sampling",
        ),
        (
            json!({ "text": "hi", "max_new_tokens": "many" }),
            "max_new_tokens",
        ),
        (json!({ "text": "hi", "bogus": 1 }), "unknown key"),
    ];
    let reqs: Vec<String> = cases.iter().map(|(q, _)| q.to_string()).collect();
    let mut ok = reqs.clone();
    ok.push(json!({ "text": "Hello world", "max_new_tokens": 3 }).to_string());
    let out = r.handle(&ok);
    for ((q, want), got) in cases.iter().zip(&out) {
        let e = got
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{q} should fail"));
        assert!(e.to_string().contains(want), "{q}: {e}");
    }
    // The good request in the same batch is answered.
    assert!(out.last().unwrap().is_ok());
    // No language codes on a model without them.
    let mut t5 = runner(
        "text2text-generation",
        &fixture("tiny-s2s-t5"),
        "cpu",
        Precision::F32,
    );
    let e = t5
        .handle(&[json!({ "text": "hi", "src_lang": "en_XX" }).to_string()])
        .remove(0);
    assert!(e.unwrap_err().to_string().contains("no language codes"));
    // An input longer than the encoder's positions is truncated and flagged.
    let long = "the cat sat on the mat ".repeat(40);
    let got = &answer(&mut r, &[json!({ "text": long, "max_new_tokens": 2 })])[0];
    assert_eq!(got["truncated"], true);
    assert!(got["input_tokens"].as_u64().unwrap() <= 64);
}

/// Queued requests join a running batch in the rows of requests that
/// stopped: a beam-search joiner takes three freed rows while the batch's
/// long request runs on (every row at its own position), a greedy joiner
/// that finds no room runs after the batch, a bad one gets its error; every
/// answer is still token-identical to transformers. LED (its windowed
/// encoder) takes no joiners.
fn joins_match(device: &str, fixed_shapes: Option<bool>) {
    if !available(device) {
        return;
    }
    for family in FAMILIES.iter().filter(|f| **f != "led") {
        let r = reference(family);
        let cases = r["cases"].as_array().unwrap();
        let max_new = r["max_new_tokens"].as_u64().unwrap() as usize;
        let ask = |c: &Value, kw: &str, new: usize| {
            let mut q = json!({ "text": c["text"], "max_new_tokens": new });
            if let Some(src) = c.get("src_lang") {
                q["src_lang"] = src.clone();
                q["tgt_lang"] = c["tgt_lang"].clone();
            }
            for (k, v) in r["cases_kw"][kw].as_object().unwrap() {
                q[k] = v.clone();
            }
            (q.to_string(), ids(&c[kw]))
        };
        // The long request runs past the first look at the queue (step 8).
        let Some(long) = cases
            .iter()
            .position(|c| ids(&c["greedy"]).len() == max_new)
        else {
            panic!("{family}: no case generates {max_new} greedy tokens");
        };
        let others: Vec<usize> = (0..cases.len()).filter(|&i| i != long).collect();
        let model = fixture(&format!("tiny-s2s-{family}"));
        let mut runner = runner_with(
            "text2text-generation",
            &model,
            device,
            Precision::F32,
            fixed_shapes,
        );
        let (long_q, long_want) = ask(&cases[long], "greedy", max_new);
        let mut batch = vec![long_q];
        let mut want = vec![long_want];
        // Short requests (2 tokens; a forced end of text may end them), as
        // they run alone (the other tests check those against transformers).
        for &i in &others[..3] {
            let (q, _) = ask(&cases[i], "greedy", 2);
            let v: Value = serde_json::from_str(&q).expect("request");
            want.push(ids(&answer(&mut runner, &[v])[0]["token_ids"]));
            batch.push(q);
        }
        let (beam_q, beam_want) = ask(&cases[others[3]], "beam3", max_new);
        let (greedy_q, greedy_want) = ask(&cases[others[4]], "greedy", max_new);
        let (answer, queue, early, queued) = joining(vec![
            (10, beam_q),
            (11, json!({ "text": "" }).to_string()),
            (12, greedy_q),
        ]);
        runner
            .try_handle_streaming(&batch, &[], Some(answer), Some(queue))
            .expect("batch runs");
        let label = format!("{family} on {device} ({fixed_shapes:?})");
        assert!(queued.lock().unwrap().is_empty(), "{label}: all taken");
        let early = early.lock().unwrap();
        let got = |i: usize| {
            early
                .iter()
                .find(|(j, _)| *j == i)
                .unwrap_or_else(|| panic!("{label}: request {i} was not answered"))
                .1
                .clone()
        };
        for (i, w) in want.iter().enumerate() {
            let v = got(i).unwrap_or_else(|e| panic!("{label}, request {i}: {e}"));
            check(&format!("{label}, request {i}"), &v, w);
        }
        let beam = got(10).unwrap_or_else(|e| panic!("{label}, beam joiner: {e}"));
        check(&format!("{label}, beam joiner"), &beam, &beam_want);
        // It ran in the batch's rows (the greedy joiner in a batch of its own).
        assert_eq!(beam["timings"]["batch_rows"], 4, "{label}: {beam}");
        let greedy = got(12).unwrap_or_else(|e| panic!("{label}, greedy joiner: {e}"));
        check(&format!("{label}, greedy joiner"), &greedy, &greedy_want);
        assert_eq!(got(11), Err("invalid-request".to_string()), "{label}");
        record(json!({ "case": format!("text2text {family} {device} joins"), "identical": true }));
    }
}

#[test]
fn seq2seq_requests_join_a_running_batch_on_cpu() {
    joins_match("cpu", None);
}

#[test]
fn seq2seq_requests_join_fixed_slots_on_cpu() {
    joins_match("cpu", Some(true));
}

#[test]
fn seq2seq_requests_join_a_running_batch_on_openvino() {
    joins_match("openvino", None);
}

#[test]
fn seq2seq_requests_join_a_running_batch_on_cuda() {
    joins_match("cuda", None);
}
