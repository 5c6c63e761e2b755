//! `text-generation` against transformers `generate` (greedy, fp32) on tiny
//! random decoders (tests/fixtures/gen_tiny_decoders.py): token-identical
//! continuations for every architecture on every device, one prompt at a
//! time and all prompts in one left-padded batch; seeded sampling; bad input.

mod common;

use common::*;
use host::backend::Precision;
use host::runner::Runner;

const ARCHS: &[&str] = &[
    "gpt2", "opt", "llama", "qwen2", "bloom", "gptj", "gpt_neo", "codegen", "mistral",
];

struct Case {
    prompt: String,
    new_ids: Vec<i64>,
    /// Greedy with repetition_penalty = 1.3.
    new_ids_penalty: Vec<i64>,
    prefill_logits: Vec<f32>,
}

fn cases(arch: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(fixture(&format!("tiny-{arch}/reference.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            prompt: c["prompt"].as_str().unwrap().to_string(),
            new_ids: c["new_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect(),
            new_ids_penalty: c["new_ids_repetition_penalty_1_3"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect(),
            prefill_logits: c["prefill_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

fn request(prompt: &str, extra: serde_json::Value) -> String {
    let mut v = serde_json::json!({ "prompt": prompt, "max_new_tokens": 24 });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v.to_string()
}

fn tokens(r: &serde_json::Value) -> Vec<i64> {
    r["token_ids"]
        .as_array()
        .expect("token_ids")
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// A tiny fixture (`tiny-<arch>`) on cpu, or `None` (skipped) when cpu is
/// unavailable.
fn on_cpu(arch: &str) -> Option<Runner> {
    available("cpu").then(|| {
        runner(
            "text-generation",
            &fixture(&format!("tiny-{arch}")),
            "cpu",
            Precision::F32,
        )
    })
}

/// The tiny Llama on cpu, or `None` (skipped).
fn llama_on_cpu() -> Option<Runner> {
    on_cpu("llama")
}

fn ask(r: &mut Runner, reqs: &[String]) -> Vec<serde_json::Value> {
    r.handle(reqs)
        .into_iter()
        .map(|o| {
            let line = o
                .unwrap_or_else(|e| panic!("generation failed: {e}"))
                .to_json_line()
                .unwrap();
            serde_json::from_str(&line).unwrap()
        })
        .collect()
}

/// Greedy generation (alone, with repetition penalty, batched) and prefill
/// logits of every architecture against transformers; `fixed_shapes` makes
/// the skill keep the KV cache in fixed slots written with `write-rows`
/// (what it does on cuda) instead of the backend's choice.
fn greedy_matches(device: &str, fixed_shapes: Option<bool>) {
    if !available(device) {
        return;
    }
    let slots = if fixed_shapes == Some(true) {
        " (fixed slots)"
    } else {
        ""
    };
    let device_label = format!("{device}{slots}");
    let device_label = device_label.as_str();
    for arch in ARCHS {
        let cases = cases(arch);
        let mut r = runner_with(
            "text-generation",
            &fixture(&format!("tiny-{arch}")),
            device,
            Precision::F32,
            fixed_shapes,
        );
        let mut worst_logits = 0f64;
        for c in &cases {
            let got = &ask(&mut r, &[request(&c.prompt, serde_json::json!({}))])[0];
            assert_eq!(
                tokens(got),
                c.new_ids,
                "{arch} on {device_label}: prompt {:?}",
                c.prompt
            );
            // transformers stopped early only at the end-of-sequence token.
            let finish = match c.new_ids.len() < 24 {
                true => "eos",
                false => "length",
            };
            assert_eq!(got["finish_reason"], finish, "{arch}: {:?}", c.prompt);
            let served = got["device"].as_str().unwrap_or_default();
            assert!(served.starts_with(device), "{arch}: served on {served}");
            assert!(got["timings"]["tokens_per_second"].as_f64().unwrap() > 0.0);
            let req = request(
                &c.prompt,
                serde_json::json!({ "return_logits": true, "max_new_tokens": 1 }),
            );
            let out = r.handle(&[req]).remove(0).expect("logits request");
            let logits = out
                .tensor("prefill_logits")
                .expect("prefill_logits")
                .to_f32("logits")
                .unwrap();
            let (_, max) = compare(&logits, &c.prefill_logits);
            assert!(
                max <= 1e-4,
                "{arch} on {device_label}: prefill logits differ by {max}"
            );
            worst_logits = worst_logits.max(max);
            let pen = &ask(
                &mut r,
                &[request(
                    &c.prompt,
                    serde_json::json!({ "repetition_penalty": 1.3 }),
                )],
            )[0];
            assert_eq!(
                tokens(pen),
                c.new_ids_penalty,
                "{arch} on {device_label} with repetition_penalty 1.3: {:?}",
                c.prompt
            );
        }
        let batch: Vec<String> = cases
            .iter()
            .map(|c| request(&c.prompt, serde_json::json!({})))
            .collect();
        for (got, c) in ask(&mut r, &batch).iter().zip(&cases) {
            assert_eq!(
                tokens(got),
                c.new_ids,
                "{arch} on {device_label}, batched: prompt {:?}",
                c.prompt
            );
            assert_eq!(got["timings"]["batch_size"], cases.len());
        }
        let batch: Vec<String> = cases
            .iter()
            .map(|c| request(&c.prompt, serde_json::json!({ "repetition_penalty": 1.3 })))
            .collect();
        for (got, c) in ask(&mut r, &batch).iter().zip(&cases) {
            assert_eq!(
                tokens(got),
                c.new_ids_penalty,
                "{arch} on {device_label}, batched with penalty: {:?}",
                c.prompt
            );
        }
        record(
            serde_json::json!({ "case": format!("generation {arch} {device_label} f32 greedy"), "prompts": cases.len(), "identical": true, "prefill_logits_max_abs": worst_logits }),
        );
    }
}

#[test]
fn greedy_generation_is_token_identical_on_cpu() {
    greedy_matches("cpu", None);
}

/// The fixed-slot KV cache that cuda uses (`write-rows` into the next slot,
/// masks over all slots, run-ahead steps), checked here on the cpu.
#[test]
fn greedy_generation_on_fixed_slots_is_token_identical_on_cpu() {
    greedy_matches("cpu", Some(true));
}

#[test]
fn greedy_generation_is_token_identical_on_openvino() {
    greedy_matches("openvino", None);
}

#[test]
fn seeded_sampling_repeats_and_top_k_one_is_greedy() {
    if !available("cpu") {
        return;
    }
    let c = &cases("llama")[0];
    let mut r = runner(
        "text-generation",
        &fixture("tiny-llama"),
        "cpu",
        Precision::F32,
    );
    let sample = serde_json::json!({ "do_sample": true, "temperature": 1.5, "top_k": 50, "top_p": 0.95, "seed": 7 });
    let a = tokens(&ask(&mut r, &[request(&c.prompt, sample.clone())])[0]);
    let b = tokens(&ask(&mut r, &[request(&c.prompt, sample)])[0]);
    assert_eq!(a, b, "the same seed must give the same tokens");
    let other = tokens(
        &ask(
            &mut r,
            &[request(
                &c.prompt,
                serde_json::json!({ "do_sample": true, "temperature": 1.5, "top_k": 50, "seed": 8 }),
            )],
        )[0],
    );
    assert_ne!(a, other, "another seed should sample differently");
    let k1 = tokens(
        &ask(
            &mut r,
            &[request(
                &c.prompt,
                serde_json::json!({ "do_sample": true, "top_k": 1, "seed": 3 }),
            )],
        )[0],
    );
    assert_eq!(k1, c.new_ids, "top_k = 1 is greedy");
}

#[test]
fn stop_strings_end_generation() {
    let Some(mut r) = llama_on_cpu() else {
        return;
    };
    let c = &cases("llama")[1];
    let full = &ask(&mut r, &[request(&c.prompt, serde_json::json!({}))])[0];
    let text = full["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let got = &ask(
        &mut r,
        &[request(
            &c.prompt,
            serde_json::json!({ "stop": [stop.clone()] }),
        )],
    )[0];
    assert_eq!(got["finish_reason"], "stop", "{got}");
    assert!(!got["text"].as_str().unwrap().contains(&stop));
    assert!(tokens(got).len() < 24);
}

#[test]
fn bad_generation_requests_are_clear_errors() {
    let Some(mut r) = on_cpu("gpt2") else {
        return;
    };
    let long = "word ".repeat(400);
    let bad = [
        (r#"{"prompt": ""}"#.to_string(), "`prompt` is empty"),
        (
            r#"{"prompt": "hi", "max_new_tokens": 0}"#.to_string(),
            "at least 1",
        ),
        (r#"{"text": "hi"}"#.to_string(), "missing `prompt`"),
        (
            serde_json::json!({ "prompt": long }).to_string(),
            "the model's context is 128",
        ),
        (
            r#"{"prompt": "hi", "repetition_penalty": 0}"#.to_string(),
            "must be a positive number",
        ),
        (
            r#"{"prompt": "hi", "temperature": 0}"#.to_string(),
            "temperature",
        ),
    ];
    for (req, text) in bad {
        let e = r
            .handle(std::slice::from_ref(&req))
            .remove(0)
            .err()
            .unwrap_or_else(|| panic!("{req} must fail"));
        assert!(e.message.contains(text), "{req}: {e}");
    }
    let capped = &ask(
        &mut r,
        &[r#"{"prompt": "hi", "max_new_tokens": 100000}"#.to_string()],
    )[0];
    assert!(
        capped["warnings"][0].as_str().unwrap().contains("capped"),
        "{capped}"
    );
    assert!(tokens(capped).len() <= 128);
}

#[test]
fn unsupported_decoder_is_refused_at_load() {
    if !available("cpu") {
        return;
    }
    let devices = host::backend::registry::parse_list("cpu").unwrap();
    let e = Runner::open(
        sandbox(),
        skill("text-generation").to_str().unwrap(),
        fixture("tiny-bert").to_str().unwrap(),
        &devices,
        Precision::F32,
    )
    .err()
    .expect("bert is not a decoder");
    assert!(
        e.to_string()
            .contains("model_type `bert` is not served by text-generation"),
        "{e}"
    );
}

/// A sequence that stops before the rest of its batch is answered then
/// (`partial.complete`), before the longer one, and a bad request at once;
/// the early answers equal the batch's own results.
#[test]
fn finished_sequences_are_answered_before_the_batch_ends() {
    let Some(mut r) = llama_on_cpu() else {
        return;
    };
    let c = &cases("llama")[0];
    let batch = [
        request(&c.prompt, serde_json::json!({ "max_new_tokens": 20 })),
        request(&c.prompt, serde_json::json!({ "max_new_tokens": 2 })),
        request("", serde_json::json!({})),
    ];
    let early: std::sync::Arc<std::sync::Mutex<Vec<(usize, String)>>> = Default::default();
    let sink = early.clone();
    let answer: host::runner::EarlyAnswer = std::sync::Arc::new(move |i, a| {
        let line = match a {
            Ok(o) => o.to_json_line().unwrap(),
            Err(e) => format!("error: {}", e.kind),
        };
        sink.lock().unwrap().push((i, line));
    });
    let results = r
        .try_handle_streaming(&batch, &[], Some(answer), None)
        .expect("batch runs");
    let early = early.lock().unwrap().clone();
    let order: Vec<usize> = early.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [2, 1, 0], "bad request first, then by length");
    assert_eq!(early[0].1, "error: invalid-request");
    for (i, line) in &early[1..] {
        let full = results[*i]
            .as_ref()
            .expect("generated")
            .to_json_line()
            .unwrap();
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(line).unwrap(),
            serde_json::from_str(&full).unwrap(),
        );
        assert_eq!(tokens(&a), tokens(&b), "request {i}");
        assert_eq!(a["finish_reason"], "length");
    }
    assert_eq!(tokens(&serde_json::from_str(&early[1].1).unwrap()).len(), 2);
    assert_eq!(
        tokens(&serde_json::from_str(&early[2].1).unwrap()).len(),
        20
    );
}

/// Queued requests join a running batch in the rows of stopped sequences
/// (growing caches): a joined prompt is prefilled next to the others' next
/// token, and every sequence, joined or not, still matches transformers
/// token for token; a bad joiner is answered with its error.
#[test]
fn queued_requests_join_a_running_batch_on_cpu() {
    if available("cpu") {
        ARCHS.iter().for_each(|a| join_matches(a, "cpu"));
    }
}

#[test]
fn queued_requests_join_a_running_batch_on_openvino() {
    if available("openvino") {
        ["gpt2", "llama", "bloom", "gpt_neo"]
            .iter()
            .for_each(|a| join_matches(a, "openvino"));
    }
}

/// Joins into a fixed-slot cache (what cuda keeps): the joiner's prompt is
/// written into the next slots of every row, causal by position; with a
/// long joiner the cache first grows (the resize graph). Every sequence
/// still matches transformers (or, the long joiner, its run alone).
#[test]
fn queued_requests_join_fixed_slots_on_cpu() {
    if !available("cpu") {
        return;
    }
    for arch in ARCHS {
        join_matches_with(arch, "cpu", Some(true), None);
    }
    let long = "the quick brown fox jumps over the lazy dog and then ".repeat(2);
    for arch in ["llama", "opt", "bloom", "gpt_neo", "mistral"] {
        join_matches_with(arch, "cpu", Some(true), Some(&long));
    }
}

/// The same joins where fixed slots are the backend's own choice (cuda,
/// on the GPU machine): token-identical in f32.
#[test]
fn queued_requests_join_a_running_batch_on_cuda() {
    if !available("cuda") {
        return;
    }
    for arch in ARCHS {
        join_matches_with(arch, "cuda", None, None);
    }
    let long = "the quick brown fox jumps over the lazy dog and then ".repeat(2);
    for arch in ["llama", "opt", "bloom", "gpt_neo", "mistral"] {
        join_matches_with(arch, "cuda", None, Some(&long));
    }
}

fn join_matches(arch: &str, device: &str) {
    join_matches_with(arch, device, None, None);
}

/// [`join_matches`] with `fixed_shapes` told to the skill; with `long`, the
/// joiner is that prompt instead, checked against its run alone (greedy,
/// the same device).
fn join_matches_with(arch: &str, device: &str, fixed_shapes: Option<bool>, long: Option<&str>) {
    let model = fixture(&format!("tiny-{arch}"));
    let mut r = runner_with(
        "text-generation",
        &model,
        device,
        Precision::F32,
        fixed_shapes,
    );
    let cs = cases(arch);
    let lengths = [20usize, 3, 5];
    let ask_for = |i: usize| {
        let prompt = match (i, long) {
            (2, Some(p)) => p,
            _ => cs[i].prompt.as_str(),
        };
        request(prompt, serde_json::json!({ "max_new_tokens": lengths[i] }))
    };
    let alone = long.map(|_| {
        let mut solo = runner("text-generation", &model, device, Precision::F32);
        tokens(&ask(&mut solo, &[ask_for(2)])[0])
    });
    let batch = [ask_for(0), ask_for(1)];
    let (answer, queue, early, queued) = joining(vec![
        (10usize, ask_for(2)),
        (11, request("", serde_json::json!({}))),
    ]);
    r.try_handle_streaming(&batch, &[], Some(answer), Some(queue))
        .expect("batch runs");
    assert!(
        queued.lock().unwrap().is_empty(),
        "both queued requests joined"
    );
    let early = early.lock().unwrap();
    let got = |i: usize| {
        early
            .iter()
            .find(|(j, _)| *j == i)
            .unwrap_or_else(|| panic!("request {i} was not answered"))
            .1
            .clone()
    };
    for (i, at) in [(0usize, 0usize), (1, 1), (2, 10)] {
        let v = got(at).unwrap_or_else(|e| panic!("{arch} on {device}, request {i}: {e}"));
        let want = match (i, &alone) {
            (2, Some(ids)) => ids.as_slice(),
            _ => &cs[i].new_ids[..lengths[i]],
        };
        assert_eq!(tokens(&v), want, "{arch} on {device}, request {i}");
    }
    assert_eq!(got(11), Err("invalid-request".to_string()));
    let order: Vec<usize> = early.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        order,
        [1, 10, 11, 0],
        "{arch} on {device}: answered as they stop"
    );
}

/// A sequence that reaches the model's context (its max_new_tokens capped)
/// stops there while a shorter prompt in its batch runs on, with steps
/// submitted ahead: no position past the context is ever fed (GPT-2 looks
/// positions up in a table), and both match their runs alone.
#[test]
fn a_sequence_at_the_context_end_stops_while_its_batch_runs_on() {
    let Some(mut r) = on_cpu("gpt2") else {
        return;
    };
    // About 120 tokens of the fixture's 128 (its tokenizer is nearly one
    // token per character), so at most 8 new tokens fit.
    let long = "the quick brown fox ".repeat(20)[..215].to_string();
    let batch = [
        request(&long, serde_json::json!({ "max_new_tokens": 64 })),
        request("the quick brown fox", serde_json::json!({})),
    ];
    let together = ask(&mut r, &batch);
    let context = 128;
    let prompt = together[0]["prompt_tokens"]
        .as_i64()
        .expect("prompt_tokens");
    assert!(context - prompt < 20, "the long prompt has {prompt} tokens");
    assert_eq!(tokens(&together[0]).len() as i64, context - prompt);
    assert_eq!(tokens(&together[1]).len(), 24);
    for (i, req) in batch.iter().enumerate() {
        let alone = ask(&mut r, std::slice::from_ref(req));
        assert_eq!(tokens(&alone[0]), tokens(&together[i]), "request {i}");
    }
}
