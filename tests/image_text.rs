//! `image-text-to-text` (LLaVA served by the `text-generation` skill)
//! against transformers `generate` (greedy, fp32) on tiny random LLaVA
//! models (tests/fixtures/gen_tiny_llava.py: SigLIP tower, projector, Qwen2
//! decoder): token-identical continuations and first-step logits with one
//! and with two images, one request at a time and all in one batch, on every
//! device, with the growing and the fixed-slot KV cache; bad requests are
//! typed errors.

mod common;

use base64::Engine;
use common::*;
use host::backend::Precision;
use host::runner::Runner;

const FIXTURES: &[&str] = &["tiny-llava", "tiny-llava-layers", "tiny-llava-ragged"];

struct Case {
    prompt: String,
    images: Vec<String>,
    /// Each video's frames (Qwen2-VL's `video_cases`).
    videos: Vec<Vec<String>>,
    new_ids: Vec<i64>,
    prompt_len: usize,
    prefill_logits: Vec<f32>,
}

fn b64(file: &str) -> String {
    let bytes = std::fs::read(fixture(&format!("images/{file}"))).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn cases(name: &str) -> Vec<Case> {
    cases_of(name, "cases")
}

/// The reference's cases under `key` (`cases`, or `video_cases` whose
/// frames are files of the fixture).
fn cases_of(name: &str, key: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(fixture(&format!("{name}/reference.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ints = |x: &serde_json::Value| -> Vec<i64> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap())
            .collect()
    };
    let frame = |f: &serde_json::Value| {
        let bytes = std::fs::read(fixture(&format!("{name}/{}", f.as_str().unwrap()))).unwrap();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            prompt: c["prompt"].as_str().unwrap().to_string(),
            images: c["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| b64(f.as_str().unwrap()))
                .collect(),
            videos: (c["videos"].as_array().into_iter().flatten())
                .map(|v| v.as_array().unwrap().iter().map(frame).collect())
                .collect(),
            new_ids: ints(&c["new_ids"]),
            prompt_len: c["prompt_ids"].as_array().unwrap().len(),
            prefill_logits: c["prefill_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

fn request(c: &Case, extra: serde_json::Value) -> String {
    let mut v = serde_json::json!({
        "prompt": c.prompt, "images": c.images, "max_new_tokens": c.new_ids.len(),
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        if !c.videos.is_empty() {
            o.insert("videos".into(), serde_json::json!(c.videos));
        }
        o.extend(e.clone());
    }
    v.to_string()
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

fn tokens(r: &serde_json::Value) -> Vec<i64> {
    r["token_ids"]
        .as_array()
        .expect("token_ids")
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Every case of each fixture of `names` alone (tokens, prompt length,
/// first-step logits), then all in one left-padded batch (images of several
/// rows, rope deltas, tiles, in one step's graph).
fn greedy_matches(names: &[&str], device: &str, fixed_shapes: Option<bool>) {
    greedy_matches_of(names, "cases", device, fixed_shapes)
}

/// [`greedy_matches`] on the reference's cases under `key`.
fn greedy_matches_of(names: &[&str], key: &str, device: &str, fixed_shapes: Option<bool>) {
    if !available(device) {
        return;
    }
    for name in names {
        let cases = cases_of(name, key);
        let mut r = runner_with(
            "text-generation",
            &fixture(name),
            device,
            Precision::F32,
            fixed_shapes,
        );
        let label = format!("{name} on {device} (fixed slots {fixed_shapes:?})");
        let mut worst = 0f64;
        for c in &cases {
            let got = &ask(
                &mut r,
                &[request(c, serde_json::json!({"return_logits": true}))],
            )[0];
            assert_eq!(tokens(got), c.new_ids, "{label}: {:?}", c.prompt);
            // The expanded prompt: as many image tokens as transformers'.
            assert_eq!(
                got["prompt_tokens"], c.prompt_len,
                "{label}: {:?}",
                c.prompt
            );
            let served = got["device"].as_str().unwrap_or_default();
            assert!(served.starts_with(device), "{label}: served on {served}");
            let logits: Vec<f32> = got["prefill_logits"]
                .as_array()
                .expect("prefill_logits")
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let (cos, max_abs) = compare(&logits, &c.prefill_logits);
            assert!(
                cos >= 0.99999 && max_abs <= 1e-4,
                "{label}: {:?}: logits cos {cos} max-abs {max_abs}",
                c.prompt
            );
            worst = worst.max(max_abs);
        }
        // All cases in one left-padded batch (images of several rows in one
        // step's graph).
        let reqs: Vec<String> = cases
            .iter()
            .map(|c| request(c, serde_json::json!({})))
            .collect();
        for (c, got) in cases.iter().zip(ask(&mut r, &reqs)) {
            assert_eq!(tokens(&got), c.new_ids, "{label} batched: {:?}", c.prompt);
        }
        eprintln!(
            "{label}: {} cases token-identical, logits max-abs {worst:.2e}",
            cases.len()
        );
    }
}

#[test]
fn llava_greedy_matches_transformers_on_cpu() {
    greedy_matches(FIXTURES, "cpu", None);
}

#[test]
fn llava_greedy_matches_transformers_with_fixed_slots() {
    greedy_matches(FIXTURES, "cpu", Some(true));
}

#[test]
fn llava_greedy_matches_transformers_on_openvino() {
    greedy_matches(FIXTURES, "openvino", None);
}

#[test]
fn llava_greedy_matches_transformers_on_cuda() {
    greedy_matches(FIXTURES, "cuda", None);
}

/// Each request of `bad` fails alone as `invalid-request`, its message
/// containing the text paired with it.
fn refuses(r: &mut Runner, bad: &[(serde_json::Value, &str)]) {
    for (req, text) in bad {
        let req = req.to_string();
        let e = r
            .handle(std::slice::from_ref(&req))
            .remove(0)
            .err()
            .unwrap_or_else(|| panic!("{req} must fail"));
        assert_eq!(e.kind, "invalid-request", "{e}");
        assert!(e.message.contains(text), "{text}: {e}");
    }
}

#[test]
fn bad_image_requests_are_clear_errors() {
    if !available("cpu") {
        return;
    }
    let mut r = runner(
        "text-generation",
        &fixture("tiny-llava"),
        "cpu",
        Precision::F32,
    );
    let img = b64("gradient_64x48.png");
    let not_image = base64::engine::general_purpose::STANDARD.encode(b"not an image at all");
    let bad = [
        (
            serde_json::json!({"prompt": "<image> and <image>", "images": [img]}),
            "2 image token(s)",
        ),
        (
            serde_json::json!({"prompt": "no marker", "image": img}),
            "0 image token(s)",
        ),
        (
            serde_json::json!({"prompt": "<image> hi", "images": [not_image]}),
            "`images[0]`",
        ),
        (
            serde_json::json!({"prompt": "<image> hi", "images": ["%%%"]}),
            "`images[0]`",
        ),
        (
            serde_json::json!({"prompt": "<image> hi", "images": [1]}),
            "base64 string",
        ),
        (
            serde_json::json!({"prompt": "<image> hi", "image": img, "images": [img]}),
            "not both",
        ),
        (
            serde_json::json!({"prompt": "<video> hi", "videos": [[img]]}),
            "takes no videos",
        ),
    ];
    refuses(&mut r, &bad);
    // A text-only prompt is served; a text model refuses images.
    let ok = &ask(
        &mut r,
        &[serde_json::json!({"prompt": "Hello", "max_new_tokens": 2}).to_string()],
    )[0];
    assert_eq!(tokens(ok).len(), 2);
    let mut text = runner(
        "text-generation",
        &fixture("tiny-qwen2"),
        "cpu",
        Precision::F32,
    );
    let req = serde_json::json!({"prompt": "<image> hi", "image": img}).to_string();
    let e = text.handle(&[req]).remove(0).unwrap_err();
    assert!(e.message.contains("takes no images"), "{e}");
}

/// Requests with images join a running batch (their prompts and images go
/// through an extend step next to the other rows' next token), on the
/// growing cache and on fixed slots; every sequence matches transformers,
/// and a bad joiner is answered with its error.
#[test]
fn image_requests_join_a_running_batch() {
    if !available("cpu") {
        return;
    }
    for fixed in [None, Some(true)] {
        join_matches("tiny-llava", "cpu", fixed, &LLAVA_JOIN);
    }
    if available("openvino") {
        join_matches("tiny-llava", "openvino", None, &LLAVA_JOIN);
    }
}

/// `name`'s first four cases (lengths 16, 3, 6, 2 tokens): 0, 1 and 3 in
/// a batch, 2 (two images) and a bad request queued to join it.
/// A join test of a fixture's four cases: three run, one joins (with a
/// bad request) once rows stop.
struct Join {
    /// New tokens per case.
    lengths: [usize; 4],
    /// The cases of the running batch, and the one that joins it.
    running: [usize; 3],
    joiner: usize,
    /// A prompt with two image tokens (the bad request has one image).
    two_images: &'static str,
}

const LLAVA_JOIN: Join = Join {
    lengths: [16, 3, 6, 2],
    running: [0, 1, 3],
    joiner: 2,
    two_images: "<image><image>",
};

fn join_matches(name: &str, device: &str, fixed_shapes: Option<bool>, plan: &Join) {
    let cs = cases(name);
    let mut r = runner_with(
        "text-generation",
        &fixture(name),
        device,
        Precision::F32,
        fixed_shapes,
    );
    let lengths = plan.lengths;
    let ask_for = |i: usize| request(&cs[i], serde_json::json!({ "max_new_tokens": lengths[i] }));
    let bad = serde_json::json!({"prompt": plan.two_images, "images": [cs[0].images[0]]});
    let (answer, queue, early, queued) =
        joining(vec![(10usize, ask_for(plan.joiner)), (11, bad.to_string())]);
    let running: Vec<String> = plan.running.iter().map(|&i| ask_for(i)).collect();
    r.try_handle_streaming(&running, &[], Some(answer), Some(queue))
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
    let label = format!("{name} on {device} (fixed slots {fixed_shapes:?})");
    let [a, b, c] = plan.running;
    for (i, at) in [(a, 0usize), (b, 1), (c, 2), (plan.joiner, 10)] {
        let v = got(at).unwrap_or_else(|e| panic!("{label}, request {i}: {e}"));
        assert_eq!(
            tokens(&v),
            cs[i].new_ids[..lengths[i]],
            "{label}, request {i}"
        );
    }
    assert_eq!(got(11), Err("invalid-request".to_string()));
}

// ---------------------------------------------------------------------------
// Qwen2-VL (tests/fixtures/gen_tiny_qwen2_vl.py: a Qwen2 decoder with
// M-RoPE, the vision tower with 2-D rotary positions and the patch merger,
// images of dynamic sizes): token-identical greedy continuations and
// first-step logits with one image, two images of different sizes and no
// image, alone and in one batch, on the growing and the fixed-slot cache;
// image requests joining a running batch; bad requests.
// ---------------------------------------------------------------------------

const QWEN2_VL: &str = "tiny-qwen2-vl";

#[test]
fn qwen2_vl_greedy_matches_transformers_on_cpu() {
    greedy_matches(&[QWEN2_VL], "cpu", None);
}

#[test]
fn qwen2_vl_greedy_matches_transformers_with_fixed_slots() {
    greedy_matches(&[QWEN2_VL], "cpu", Some(true));
}

#[test]
fn qwen2_vl_greedy_matches_transformers_on_openvino() {
    greedy_matches(&[QWEN2_VL], "openvino", None);
}

#[test]
fn qwen2_vl_greedy_matches_transformers_on_cuda() {
    greedy_matches(&[QWEN2_VL], "cuda", None);
}

/// Qwen2-VL requests (with images, and text only) join a running batch in
/// an extend step, each row keeping its own rope delta; growing and fixed
/// slots; a bad joiner is answered with its error.
#[test]
fn qwen2_vl_requests_join_a_running_batch() {
    if !available("cpu") {
        return;
    }
    for fixed in [None, Some(true)] {
        join_matches(QWEN2_VL, "cpu", fixed, &QWEN2_VL_JOIN);
    }
    if available("openvino") {
        join_matches(QWEN2_VL, "openvino", None, &QWEN2_VL_JOIN);
    }
}

// The two-image request joins the rows of the text-only and the chat
// prompt (other rope deltas) once they stop.
const QWEN2_VL_JOIN: Join = Join {
    lengths: [12, 3, 5, 2],
    running: [0, 2, 3],
    joiner: 1,
    two_images: "<|image_pad|><|image_pad|>",
};

#[test]
fn qwen2_vl_bad_image_requests_are_clear_errors() {
    if !available("cpu") {
        return;
    }
    let mut r = runner("text-generation", &fixture(QWEN2_VL), "cpu", Precision::F32);
    let img = b64("gradient_64x48.png");
    let bad = [
        (
            serde_json::json!({"prompt": "<|image_pad|> and <|image_pad|>", "images": [img]}),
            "2 image token(s)",
        ),
        (
            serde_json::json!({"prompt": "no marker", "image": img}),
            "0 image token(s)",
        ),
        (
            serde_json::json!({"prompt": "<|image_pad|><|image_pad|>", "images": [img, img]}),
            "a run of 12 image tokens",
        ),
        (
            serde_json::json!({"prompt": "<|image_pad|> hi", "images": ["%%%"]}),
            "`images[0]`",
        ),
    ];
    refuses(&mut r, &bad);
}

// Qwen2-VL videos (the fixture's `video_cases`: four frames, and an image
// then three frames padded to two temporal patches): token-identical greedy
// continuations and first-step logits, alone and batched; bad videos.

#[test]
fn qwen2_vl_video_greedy_matches_transformers_on_cpu() {
    greedy_matches_of(&[QWEN2_VL], "video_cases", "cpu", None);
    greedy_matches_of(&[QWEN2_VL], "video_cases", "cpu", Some(true));
}

#[test]
fn qwen2_vl_video_greedy_matches_transformers_on_openvino() {
    greedy_matches_of(&[QWEN2_VL], "video_cases", "openvino", None);
}

#[test]
fn qwen2_vl_video_greedy_matches_transformers_on_cuda() {
    greedy_matches_of(&[QWEN2_VL], "video_cases", "cuda", None);
}

#[test]
fn qwen2_vl_bad_video_requests_are_clear_errors() {
    if !available("cpu") {
        return;
    }
    let mut r = runner("text-generation", &fixture(QWEN2_VL), "cpu", Precision::F32);
    let frames = &cases_of(QWEN2_VL, "video_cases")[0].videos[0];
    let other = b64("gradient_64x48.png");
    let v = "<|vision_start|><|video_pad|><|vision_end|> hi";
    let bad = [
        (
            serde_json::json!({"prompt": v, "videos": [[]]}),
            "`videos[0]` has no frames",
        ),
        (
            serde_json::json!({"prompt": v, "video": [frames[0], "%%%"]}),
            "`video[1]`",
        ),
        (
            serde_json::json!({"prompt": v, "video": [frames[0], other]}),
            "share one size",
        ),
        (
            serde_json::json!({"prompt": v, "video": 5}),
            "must be a list",
        ),
        (
            serde_json::json!({"prompt": v, "videos": "x"}),
            "must be a list",
        ),
        (serde_json::json!({"prompt": v}), "1 video token(s)"),
        (
            serde_json::json!({"prompt": "hi", "video": frames}),
            "0 video token(s)",
        ),
        (
            serde_json::json!({"prompt": "<|video_pad|><|video_pad|>", "videos": [frames, frames]}),
            "a run of 24 video tokens",
        ),
    ];
    refuses(&mut r, &bad);
    // An animated GIF is a video of its frames: two 50x30 frames, grid (1, 4, 6).
    let ask_one = |r: &mut Runner, extra: serde_json::Value| {
        let mut req =
            serde_json::json!({"prompt": "<|vision_start|><|vision_end|> hi", "max_new_tokens": 2});
        req.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        ask(r, &[req.to_string()]).remove(0)["prompt_tokens"]
            .as_u64()
            .unwrap()
    };
    let text = ask_one(&mut r, serde_json::json!({}));
    let gif = serde_json::json!({"prompt": v, "video": b64("anim_50x30.gif")});
    assert_eq!(ask_one(&mut r, gif), text + 6);
}

// ---------------------------------------------------------------------------
// LLaVA-NeXT and LLaVA 1.5 (tests/fixtures/gen_tiny_llava_next.py:
// `tiny-llava-next`, a CLIP tower on anyres tiles packed with newline rows
// and a Mistral decoder; `tiny-llava-clip`, LLaVA 1.5's CLIP tower with the
// class token dropped and a LLaMA decoder): token-identical greedy
// continuations and first-step logits with one image and with two images of
// different aspect ratios, alone and in one batch, on the growing and the
// fixed-slot cache; image requests joining a running batch.
// ---------------------------------------------------------------------------

const LLAVA_NEXT: &[&str] = &["tiny-llava-next", "tiny-llava-clip"];

#[test]
fn llava_next_greedy_matches_transformers_on_cpu() {
    greedy_matches(LLAVA_NEXT, "cpu", None);
}

#[test]
fn llava_next_greedy_matches_transformers_with_fixed_slots() {
    greedy_matches(LLAVA_NEXT, "cpu", Some(true));
}

#[test]
fn llava_next_greedy_matches_transformers_on_openvino() {
    greedy_matches(LLAVA_NEXT, "openvino", None);
}

#[test]
fn llava_next_greedy_matches_transformers_on_cuda() {
    greedy_matches(LLAVA_NEXT, "cuda", None);
}

#[test]
fn llava_next_requests_join_a_running_batch() {
    if !available("cpu") {
        return;
    }
    for fixed in [None, Some(true)] {
        join_matches("tiny-llava-next", "cpu", fixed, &LLAVA_JOIN);
    }
    if available("openvino") {
        join_matches("tiny-llava-next", "openvino", None, &LLAVA_JOIN);
    }
}

#[test]
fn llava_next_bad_image_requests_are_clear_errors() {
    if !available("cpu") {
        return;
    }
    let mut r = runner(
        "text-generation",
        &fixture("tiny-llava-next"),
        "cpu",
        Precision::F32,
    );
    let img = b64("gradient_64x48.png");
    let bad = [
        (
            serde_json::json!({"prompt": "<image> and <image>", "images": [img]}),
            "2 image token(s)",
        ),
        (
            serde_json::json!({"prompt": "<image> hi", "images": ["bm90IGFuIGltYWdl"]}),
            "`images[0]`",
        ),
    ];
    refuses(&mut r, &bad);
    // A text-only prompt is served.
    let ok = &ask(
        &mut r,
        &[serde_json::json!({"prompt": "Hello", "max_new_tokens": 2}).to_string()],
    )[0];
    assert_eq!(tokens(ok).len(), 2);
}
