//! `host serve`'s OpenAI and TEI compatibility over real HTTP on loopback:
//! chat completions (the chat template rendered as transformers renders it,
//! generation token-identical to transformers on the rendered prompt,
//! streaming with usage), and the client-facing details of the other routes.

mod common;

use std::path::{Path, PathBuf};

use common::http::*;
use common::*;
use host::endpoint::BatchPolicy;
use serde_json::{json, Value};

/// A model directory of tiny-llama's weights with the given tokenizer files.
fn chat_model(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-llama").join(f), dir.join(f)).unwrap();
    }
    for (from, to) in files {
        std::fs::copy(fixture(from), dir.join(to)).unwrap();
    }
    dir.to_path_buf()
}

struct Models {
    _tmp: tempfile::TempDir,
    /// Llama-2's template (renders BOS) on a tokenizer that adds BOS.
    bos: PathBuf,
    /// TinyLlama's template (no BOS) on a tokenizer that adds nothing.
    plain: PathBuf,
    /// TinyLlama's template on a tokenizer that adds BOS.
    extra_bos: PathBuf,
}

fn models() -> Models {
    let tmp = tempfile::tempdir().unwrap();
    let bos = chat_model(
        &tmp.path().join("bos"),
        &[
            ("tiny-llama-chat/tokenizer.json", "tokenizer.json"),
            (
                "tiny-llama-chat/tokenizer_config.json",
                "tokenizer_config.json",
            ),
        ],
    );
    let plain = chat_model(
        &tmp.path().join("plain"),
        &[
            ("tiny-llama/tokenizer.json", "tokenizer.json"),
            (
                "tiny-llama-chat/plain/tokenizer_config.json",
                "tokenizer_config.json",
            ),
            (
                "tiny-llama-chat/plain/chat_template.jinja",
                "chat_template.jinja",
            ),
        ],
    );
    let extra_bos = chat_model(
        &tmp.path().join("extra_bos"),
        &[
            ("tiny-llama-chat/tokenizer.json", "tokenizer.json"),
            (
                "tiny-llama-chat/plain/tokenizer_config.json",
                "tokenizer_config.json",
            ),
            (
                "tiny-llama-chat/plain/chat_template.jinja",
                "chat_template.jinja",
            ),
        ],
    );
    Models {
        _tmp: tmp,
        bos,
        plain,
        extra_bos,
    }
}

fn chat_server(m: &Models) -> Server {
    let ep = |name: &str, model: &Path| {
        config(
            name,
            "text-generation",
            model,
            "cpu",
            BatchPolicy::default(),
            1,
        )
    };
    server(
        vec![
            ep("bos", &m.bos),
            ep("plain", &m.plain),
            ep("extra_bos", &m.extra_bos),
            ep("gpt2", &fixture("tiny-gpt2")),
        ],
        64,
    )
}

/// The `data:` payloads of a server-sent event stream.
fn events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn post_text(url: &str, body: &str) -> String {
    agent()
        .post(url)
        .set("content-type", "application/json")
        .send_string(body)
        .unwrap()
        .into_string()
        .unwrap()
}

/// Chat answers are transformers' greedy continuation of the prompt its
/// `apply_chat_template` renders, tokenized as its chat pipeline does (no
/// added special tokens): with a template that renders BOS on a tokenizer
/// that adds one (no second BOS), and with one that renders none on a
/// tokenizer that adds none. The same tokens as the text-generation skill
/// on the rendered prompt; streamed pieces add up to the answer.
#[test]
fn chat_completions_match_transformers() {
    if !available("cpu") {
        return;
    }
    let m = models();
    let s = chat_server(&m);
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-llama-chat/reference.json")).unwrap(),
    )
    .unwrap();
    let url = format!("{}/v1/chat/completions", s.base);
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for c in cases {
        let variant = c["variant"].as_str().unwrap();
        let want_ids = c["new_ids"].as_array().unwrap();
        let prompt_ids = c["prompt_ids"].as_array().unwrap();
        let body = json!({ "model": variant, "messages": c["messages"], "max_tokens": 16, "temperature": 0 });
        let (code, v) = post(&agent(), &url, &body.to_string());
        assert_eq!(code, 200, "{variant}: {v}");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(
            v["usage"]["prompt_tokens"],
            prompt_ids.len(),
            "{variant}: {v}"
        );
        assert_eq!(v["usage"]["completion_tokens"], want_ids.len());
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        let content = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(content, c["text"], "{variant}: transformers' text");

        // The skill on the rendered prompt (less the BOS it adds itself).
        let rendered = c["rendered"].as_str().unwrap();
        let prompt = match variant {
            "bos" => rendered.strip_prefix("<|endoftext|>").unwrap(),
            _ => rendered,
        };
        let direct = json!({ "prompt": prompt, "max_new_tokens": 16, "do_sample": false });
        let (code, d) = post(
            &agent(),
            &format!("{}/v1/endpoints/{variant}", s.base),
            &direct.to_string(),
        );
        assert_eq!(code, 200, "{d}");
        assert_eq!(
            &d["token_ids"], &c["new_ids"],
            "{variant}: transformers' tokens"
        );
        assert_eq!(d["prompt_tokens"], prompt_ids.len());
        assert_eq!(d["text"], content);

        // Streamed: chunks with the role first, then the usage, then [DONE].
        let body = json!({ "model": variant, "messages": c["messages"], "max_completion_tokens": 16,
                           "temperature": 0, "stream": true, "stream_options": { "include_usage": true } });
        let ev = events(&post_text(&url, &body.to_string()));
        assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
        let parsed: Vec<Value> = ev[..ev.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let (usage, chunks) = parsed.split_last().unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 16);
        assert_eq!(usage["usage"]["prompt_tokens"], prompt_ids.len());
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let mut joined = String::new();
        for ch in chunks {
            assert_eq!(ch["object"], "chat.completion.chunk");
            assert!(ch["usage"].is_null());
            joined.push_str(ch["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
        assert_eq!(joined, content, "{variant}: streamed pieces");
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "length"
        );
    }
}

/// What chat cannot answer is a clear 4xx (or, for a skill that would
/// tokenize the prompt otherwise than transformers, a clear error rather
/// than another model's answer).
#[test]
fn chat_completions_refuse_clearly() {
    if !available("cpu") {
        return;
    }
    let m = models();
    let s = chat_server(&m);
    let url = format!("{}/v1/chat/completions", s.base);
    let hello = json!([{ "role": "user", "content": "Hello world" }]);
    let cases = [
        (
            json!({ "model": "bos", "messages": hello, "n": 2 }),
            400,
            "n: 1",
        ),
        (
            json!({ "model": "gpt2", "messages": hello }),
            400,
            "no chat template",
        ),
        (json!({ "model": "bos", "messages": [] }), 400, "messages"),
        (
            json!({ "model": "bos", "messages": [{ "role": "assistant", "content": "x" }] }),
            400,
            "roles must alternate",
        ),
        (
            // A text-only template cannot take image parts (Llama-2's strips a
            // string): the template's own error.
            json!({ "model": "bos", "messages": [{ "role": "user", "content": [{ "type": "image_url", "image_url": { "url": "data:," } }] }] }),
            400,
            "template",
        ),
        (
            json!({ "model": "bos", "messages": hello, "logprobs": true }),
            400,
            "logprobs",
        ),
        (
            json!({ "model": "bos", "messages": hello, "stream_options": { "include_usage": true } }),
            400,
            "stream",
        ),
    ];
    for (body, want, needle) in cases {
        let (code, v) = post(&agent(), &url, &body.to_string());
        assert_eq!(code, want, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    // A template that renders no BOS on a tokenizer that adds one: the
    // prompt is tokenized without special tokens, as transformers does
    // (the host checks the skill's prompt token count).
    let body = json!({ "model": "extra_bos", "messages": hello, "max_tokens": 2 });
    let (code, v) = post(&agent(), &url, &body.to_string());
    assert_eq!(code, 200, "{v}");
    // Text parts are joined; `developer` is the system role.
    let body = json!({ "model": "bos", "max_tokens": 2, "messages": [
        { "role": "developer", "content": "Be brief." },
        { "role": "user", "content": [{ "type": "text", "text": "The quick" }, { "type": "text", "text": "brown fox" }] }] });
    let (code, v) = post(&agent(), &url, &body.to_string());
    assert_eq!(code, 200, "{v}");
}

/// `/v1/completions` streams `text_completion` events and, asked, a last
/// one with the usage.
#[test]
fn completions_stream_usage() {
    if !available("cpu") {
        return;
    }
    let s = server(
        vec![config(
            "llama",
            "text-generation",
            &fixture("tiny-llama"),
            "cpu",
            BatchPolicy::default(),
            1,
        )],
        64,
    );
    let url = format!("{}/v1/completions", s.base);
    let body = r#"{"prompt": "The quick brown fox", "max_tokens": 5, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}"#;
    let ev = events(&post_text(&url, body));
    assert_eq!(ev.len(), 5 + 3, "tokens, the final event, usage, [DONE]");
    let usage: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    assert_eq!(usage["usage"]["prompt_tokens"], 11);
    let last: Value = serde_json::from_str(&ev[ev.len() - 3]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["object"], "text_completion");
}

/// OpenAI embeddings as the official client asks for them (`base64`: the
/// f32 values little endian), token-id inputs refused clearly; TEI's text
/// routes.
#[test]
fn embeddings_base64_and_tei_text_routes() {
    if !available("cpu") {
        return;
    }
    let s = server(
        vec![config(
            "emb",
            "text-embedding",
            &fixture("tiny-bert"),
            "cpu",
            BatchPolicy::default(),
            1,
        )],
        64,
    );
    let a = agent();
    let url = format!("{}/v1/embeddings", s.base);
    let (code, plain) = post(&a, &url, r#"{"input": ["Hello world", "two"]}"#);
    assert_eq!(code, 200, "{plain}");
    let (code, b64) = post(
        &a,
        &url,
        r#"{"input": ["Hello world", "two"], "encoding_format": "base64"}"#,
    );
    assert_eq!(code, 200, "{b64}");
    for i in 0..2 {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64["data"][i]["embedding"].as_str().unwrap())
            .unwrap();
        let got: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let want: Vec<f32> = plain["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got, want);
    }
    for body in [r#"{"input": [1, 2, 3]}"#, r#"{"input": [[1, 2], [3]]}"#] {
        let (code, v) = post(&a, &url, body);
        assert_eq!(code, 400, "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("token ids"));
    }
    let (code, v) = post(&a, &url, r#"{"input": "x", "encoding_format": "int8"}"#);
    assert_eq!(code, 400, "{v}");

    // TEI: `POST /` is `/embed` on an embedding endpoint.
    let (_, embed) = post(
        &a,
        &format!("{}/embed", s.base),
        r#"{"inputs": "Hello world"}"#,
    );
    let (code, root) = post(&a, &format!("{}/", s.base), r#"{"inputs": "Hello world"}"#);
    assert_eq!(code, 200, "{root}");
    assert_eq!(root, embed);
    assert_eq!(embed[0], plain["data"][0]["embedding"]);
    // The model normalises in its modules: raw vectors are not available.
    let (code, v) = post(
        &a,
        &format!("{}/embed", s.base),
        r#"{"inputs": "x", "normalize": false}"#,
    );
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["error_type"], "Validation", "{v}");
    let (code, v) = post(
        &a,
        &format!("{}/embed", s.base),
        r#"{"inputs": "x", "truncation_direction": "Left"}"#,
    );
    assert_eq!(code, 422, "{v}");
    let (code, v) = post(
        &a,
        &format!("{}/embed", s.base),
        r#"{"inputs": "x", "truncation_direction": "Right"}"#,
    );
    assert_eq!(code, 200, "{v}");

    // Similarity: cosine of embeddings, on its route and on `POST /`.
    let sim =
        r#"{"inputs": {"source_sentence": "Hello world", "sentences": ["Hello world", "two"]}}"#;
    let (code, v) = post(&a, &format!("{}/similarity", s.base), sim);
    assert_eq!(code, 200, "{v}");
    let scores = v.as_array().unwrap();
    assert!((scores[0].as_f64().unwrap() - 1.0).abs() < 1e-5, "{v}");
    let e0 = plain["data"][0]["embedding"].as_array().unwrap();
    let e1 = plain["data"][1]["embedding"].as_array().unwrap();
    let dot: f64 = e0
        .iter()
        .zip(e1)
        .map(|(x, y)| x.as_f64().unwrap() * y.as_f64().unwrap())
        .sum();
    assert!(
        (scores[1].as_f64().unwrap() - dot).abs() < 1e-5,
        "{v} vs {dot}"
    );
    let (code, v2) = post(&a, &format!("{}/", s.base), sim);
    assert_eq!(code, 200);
    assert_eq!(v, v2);

    // Tokenize and decode with the model's tokenizer.
    let (code, v) = post(
        &a,
        &format!("{}/tokenize", s.base),
        r#"{"inputs": "Hello world"}"#,
    );
    assert_eq!(code, 200, "{v}");
    let toks = v[0].as_array().unwrap();
    assert_eq!(toks.first().unwrap()["special"], true);
    assert_eq!(toks.last().unwrap()["special"], true);
    let words: Vec<&str> = toks[1..toks.len() - 1]
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(words.concat(), "Helloworld", "{v}");
    assert_eq!(toks[1]["start"], 0);
    let ids: Vec<Value> = toks.iter().map(|t| t["id"].clone()).collect();
    let (code, d) = post(
        &a,
        &format!("{}/decode", s.base),
        &json!({ "ids": ids }).to_string(),
    );
    assert_eq!(code, 200, "{d}");
    assert_eq!(d, json!(["hello world"]), "uncased model");
    let (code, d) = post(&a, &format!("{}/decode", s.base), r#"{"ids": [999999]}"#);
    assert_eq!(code, 422, "{d}");
    let info: Value = a
        .get(&format!("{}/info", s.base))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(info["model_id"], "emb");
    assert!(info["model_type"]["embedding"].is_object(), "{info}");
    let (code, _) = post(&a, &format!("{}/embed_all", s.base), r#"{"inputs": "x"}"#);
    assert_eq!(code, 422);
}

/// A vision-language chat (tiny LLaVA): an `image_url` data URL part
/// reaches the template as an image part (its `<image>` token) and the
/// skill as an image; the answer equals transformers' greedy tokens for
/// that rendered prompt and image (the fixture's chat case).
#[test]
fn chat_completions_with_images() {
    image_chat(
        "tiny-llava",
        "<|im_start|>user\n<image>",
        ("png", "alpha_45x60.png"),
        "Rust and WebAssembly run",
    );
}

/// The same with Qwen2-VL (tiny): the template writes
/// `<|vision_start|><|image_pad|><|vision_end|>` for the image part, the
/// skill expands it to the image's grid.
#[test]
fn chat_completions_with_images_qwen2_vl() {
    image_chat(
        "tiny-qwen2-vl",
        "<|im_start|>user\n<|vision_start|>",
        ("bmp", "checker_17x17.bmp"),
        "What is it?",
    );
}

/// Chats with one image and one text part against the fixture's case
/// whose prompt starts with `prefix`.
fn image_chat(name: &str, prefix: &str, (kind, file): (&str, &str), text: &str) {
    if !available("cpu") {
        return;
    }
    let s = server(
        vec![config(
            "vlm",
            "text-generation",
            &fixture(name),
            "cpu",
            BatchPolicy::default(),
            1,
        )],
        64,
    );
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{name}/reference.json"))).unwrap(),
    )
    .unwrap();
    let case = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["prompt"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .expect("the fixture's chat case");
    use base64::Engine;
    let image = std::fs::read(fixture(&format!("images/{file}"))).unwrap();
    let url = format!(
        "data:image/{kind};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(image)
    );
    let new = case["new_ids"].as_array().unwrap().len();
    let body = json!({"model": "vlm", "max_tokens": new, "temperature": 0, "messages": [
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": text}]}]});
    let (code, v) = post(
        &agent(),
        &format!("{}/v1/chat/completions", s.base),
        &body.to_string(),
    );
    assert_eq!(code, 200, "{name}: {v}");
    assert_eq!(
        v["choices"][0]["message"]["content"], case["text"],
        "{name}: {v}"
    );
    assert_eq!(v["usage"]["completion_tokens"], new);
    // Images are given, not fetched.
    let body = json!({"model": "vlm", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]});
    let (code, v) = post(
        &agent(),
        &format!("{}/v1/chat/completions", s.base),
        &body.to_string(),
    );
    assert_eq!(code, 400, "{v}");
}

/// A Qwen2-VL chat with a video part (four frames as data URLs, as
/// transformers' chat messages write videos): the template writes
/// `<|vision_start|><|video_pad|><|vision_end|>` for it and the skill gets
/// the frames as `videos`. The answer equals the endpoint's own for that
/// rendered prompt and video (whose tokens tests/image_text.rs checks
/// against transformers); videos are given, not fetched.
#[test]
fn chat_completions_with_a_video_qwen2_vl() {
    if !available("cpu") {
        return;
    }
    let s = server(
        vec![config(
            "vlm",
            "text-generation",
            &fixture("tiny-qwen2-vl"),
            "cpu",
            BatchPolicy::default(),
            1,
        )],
        64,
    );
    use base64::Engine;
    let frames: Vec<String> = (0..4)
        .map(|k| {
            let png = std::fs::read(fixture(&format!("tiny-qwen2-vl/frames/v0_{k}.png"))).unwrap();
            format!(
                "data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(png)
            )
        })
        .collect();
    let new = 6;
    let url = |path: &str| format!("{}{path}", s.base);
    let direct = json!({
        "prompt": "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe the video<|im_end|>\n<|im_start|>assistant\n",
        "videos": [frames.clone()], "max_new_tokens": new, "add_special_tokens": false,
    });
    let (code, want) = post(&agent(), &url("/v1/endpoints/vlm"), &direct.to_string());
    assert_eq!(code, 200, "{want}");
    let body = json!({"model": "vlm", "max_tokens": new, "temperature": 0, "messages": [
        {"role": "user", "content": [
            {"type": "video", "video": frames},
            {"type": "text", "text": "Describe the video"}]}]});
    let (code, v) = post(&agent(), &url("/v1/chat/completions"), &body.to_string());
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["content"], want["text"],
        "{v} vs {want}"
    );
    assert_eq!(v["usage"]["completion_tokens"], new);
    for part in [
        json!({"type": "video", "video": ["https://example.com/f.png"]}),
        json!({"type": "video", "video": []}),
        json!({"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}),
    ] {
        let body = json!({"model": "vlm", "messages": [{"role": "user", "content": [part]}]});
        let (code, v) = post(&agent(), &url("/v1/chat/completions"), &body.to_string());
        assert_eq!(code, 400, "{part}: {v}");
    }
}
