//! `host serve` over real HTTP on loopback: concurrency without crossed or
//! lost responses, batching, overload, fallback, bad requests, removal
//! under load, graceful shutdown.

mod common;

use std::time::Duration;

use std::sync::Arc;

use common::http::*;
use common::*;
use host::backend::Precision;
use host::endpoint::BatchPolicy;

fn embedding(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn metric(base: &str, line_prefix: &str) -> f64 {
    let text = agent()
        .get(&format!("{base}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn concurrent_clients_get_their_own_answers_in_batches() {
    if !available("cpu") {
        return;
    }
    let model = fixture("tiny-bert");
    let policy = BatchPolicy {
        max_batch_size: 32,
        max_wait_ms: 5,
        max_batch_tokens: 16384,
        queue_capacity: 4096,
        dispatch_when_idle: true,
    };
    let s = server(
        vec![config("emb", "text-embedding", &model, "cpu", policy, 2)],
        1024,
    );
    // Reference answers, one request at a time, straight through a runner.
    let texts: Vec<String> = (0..64 * 50)
        .map(|i| {
            format!(
                "client {} request {} says word{} twice word{}",
                i / 50,
                i % 50,
                i % 97,
                i % 31
            )
        })
        .collect();
    let mut r = runner("text-embedding", &model, "cpu", Precision::F32);
    let want: Arc<Vec<Vec<f32>>> = Arc::new(
        embed(&mut r, &texts, 1)
            .into_iter()
            .map(|(v, _)| v)
            .collect(),
    );
    let texts = Arc::new(texts);
    let threads: Vec<_> = (0..64)
        .map(|c| {
            let (base, texts, want) = (s.base.clone(), texts.clone(), want.clone());
            std::thread::spawn(move || {
                let a = agent();
                for k in 0..50 {
                    let i = c * 50 + k;
                    let body = serde_json::json!({ "input": texts[i], "model": "emb" }).to_string();
                    let (code, v) = post(&a, &format!("{base}/v1/embeddings"), &body);
                    assert_eq!(code, 200, "{v}");
                    let got = embedding(&v["data"][0]["embedding"]);
                    let (cos, max) = compare(&got, &want[i]);
                    assert!(
                        cos > 0.99999 && max < 1e-4,
                        "request {i} got another input's answer (cos {cos})"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    let answered = metric(&s.base, "host_requests_total{");
    assert_eq!(
        answered as usize,
        64 * 50,
        "every request answered exactly once"
    );
    let mean = s.endpoints.metrics.mean_batch_size("emb");
    eprintln!("mean batch size under 64 concurrent clients: {mean:.2}");
    assert!(mean > 1.0, "batches formed (mean batch size {mean})");
}

#[test]
fn a_burst_beyond_the_queue_gets_429_and_the_rest_is_answered() {
    if !available("cpu") {
        return;
    }
    let policy = BatchPolicy {
        max_batch_size: 1,
        max_wait_ms: 0,
        max_batch_tokens: 16384,
        queue_capacity: 4,
        dispatch_when_idle: true,
    };
    let s = server(
        vec![config(
            "slow",
            "hostile",
            &fixture("tiny-bert"),
            "cpu",
            policy,
            1,
        )],
        1024,
    );
    let threads: Vec<_> = (0..48)
        .map(|i| {
            let base = s.base.clone();
            std::thread::spawn(move || {
                let body = serde_json::json!({ "do": "spin", "ms": 30, "id": i }).to_string();
                post(&agent(), &format!("{base}/v1/endpoints/slow"), &body)
            })
        })
        .collect();
    let results: Vec<(u16, serde_json::Value)> =
        threads.into_iter().map(|t| t.join().unwrap()).collect();
    let rejected = results.iter().filter(|(c, _)| *c == 429).count();
    let ok = results
        .iter()
        .filter(|(c, v)| *c == 200 && v["ok"] == true)
        .count();
    assert!(
        rejected > 0,
        "a burst of 48 over a queue of 4 must be refused in part"
    );
    assert_eq!(
        ok + rejected,
        48,
        "every request is answered or refused: {results:?}"
    );
    for (c, v) in &results {
        if *c == 429 {
            assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
            assert_eq!(v["error"]["code"], "overloaded", "{v}");
        }
    }
}

#[test]
fn a_failing_first_device_falls_back_and_is_counted() {
    std::env::set_var("HOST_FAULT_INJECTION", "1");
    if !available("cpu") {
        return;
    }
    let s = server(
        vec![config(
            "fb",
            "text-embedding",
            &fixture("tiny-bert"),
            "faulty,cpu",
            BatchPolicy::default(),
            1,
        )],
        64,
    );
    let (code, v) = post(
        &agent(),
        &format!("{}/v1/endpoints/fb", s.base),
        r#"{"text": "hello fallback"}"#,
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["device"], "cpu",
        "the response names the device that served it"
    );
    let n = metric(
        &s.base,
        "host_fallbacks_total{endpoint=\"fb\",from=\"faulty\",to=\"cpu\"}",
    );
    assert_eq!(n, 1.0);
    let status: serde_json::Value = agent()
        .get(&format!("{}/health", s.base))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(
        status["endpoints"][0]["device"], "faulty",
        "the endpoint loaded on its first device"
    );
    // The failed device is out of rotation, and /health says so: the next
    // request goes straight to cpu (no second fallback counted).
    let q = &status["endpoints"][0]["quarantined"][0];
    assert_eq!(q["device"], "faulty", "{status}");
    assert_eq!(q["failures"], 1, "{status}");
    let (code, v) = post(
        &agent(),
        &format!("{}/v1/endpoints/fb", s.base),
        r#"{"text": "again"}"#,
    );
    assert_eq!(
        (code, &v["device"]),
        (200, &serde_json::json!("cpu")),
        "{v}"
    );
    let n = metric(
        &s.base,
        "host_fallbacks_total{endpoint=\"fb\",from=\"faulty\",to=\"cpu\"}",
    );
    assert_eq!(n, 1.0, "a quarantined device is not tried first");
}

#[test]
fn bad_requests_get_clear_4xx_and_the_server_keeps_serving() {
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
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".into(), 400, "not valid JSON"),
        (
            r#"{"input": 5}"#.into(),
            400,
            "must be a string or a list of strings",
        ),
        (r#"{"input": []}"#.into(), 400, "is empty"),
        (r#"{"nothing": 1}"#.into(), 400, "missing `input`"),
        (
            r#"{"input": "x", "model": "nope"}"#.into(),
            404,
            "unknown endpoint `nope`",
        ),
    ];
    for (body, want, text) in cases {
        let (code, v) = post(&a, &url, &body);
        assert_eq!(code, want, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(text),
            "{v}"
        );
    }
    // 10 MB: the server answers 413 from the Content-Length and may close
    // before the body is sent, so this request goes over a raw socket.
    let big = format!(r#"{{"input": "{}"}}"#, "a".repeat(10 << 20));
    let (code, text) = raw_post(&s.base, "/v1/embeddings", &big);
    assert_eq!(code, 413, "{text}");
    assert!(text.contains("size limit"), "{text}");
    let (code, v) = post(
        &a,
        &format!("{}/embed", s.base),
        r#"{"inputs": ["one", "two"]}"#,
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (code, _) = post(&a, &format!("{}/no/such/route", s.base), "{}");
    assert_eq!(code, 404);
}

#[test]
fn removing_an_endpoint_under_load_finishes_or_fails_cleanly() {
    let policy = BatchPolicy {
        max_batch_size: 4,
        max_wait_ms: 1,
        max_batch_tokens: 16384,
        queue_capacity: 256,
        dispatch_when_idle: true,
    };
    if !available("cpu") {
        return;
    }
    let s = server(
        vec![config(
            "busy",
            "hostile",
            &fixture("tiny-bert"),
            "cpu",
            policy,
            1,
        )],
        1024,
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (base, stop) = (s.base.clone(), stop.clone());
            std::thread::spawn(move || {
                let a = agent();
                let mut codes = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (code, _) = post(
                        &a,
                        &format!("{base}/v1/endpoints/busy"),
                        r#"{"do": "spin", "ms": 2}"#,
                    );
                    codes.push(code);
                }
                codes
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = std::time::Instant::now();
    let del = agent()
        .delete(&format!("{}/admin/endpoints/busy", s.base))
        .set("authorization", &format!("Bearer {TEST_ADMIN_KEY}"))
        .call()
        .unwrap();
    assert_eq!(del.status(), 204);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "removal drained in time"
    );
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.join().expect("client"));
    }
    assert!(
        all.iter().all(|c| [200, 404, 503].contains(c)),
        "only clean outcomes: {all:?}"
    );
    assert!(all.contains(&200) && all.contains(&404));
    assert!(s.endpoints.names().is_empty());
    let _ = s.rt;
}

#[test]
fn admin_adds_lists_and_refuses_duplicates() {
    if !available("cpu") {
        return;
    }
    let s = server(vec![], 64);
    let cfg = serde_json::json!({
        "name": "added", "skill": "hostile", "model": "tiny-bert", "devices": ["cpu"],
    })
    .to_string();
    let (code, v) = post(&agent(), &format!("{}/admin/endpoints", s.base), &cfg);
    assert_eq!(code, 201, "{v}");
    let (code, v) = post(&agent(), &format!("{}/admin/endpoints", s.base), &cfg);
    assert_eq!(code, 409, "{v}");
    let (code, v) = post(
        &agent(),
        &format!("{}/admin/endpoints", s.base),
        r#"{"name": "x", "skill": "s"}"#,
    );
    assert_eq!(code, 400, "{v}");
    let list: serde_json::Value = agent()
        .get(&format!("{}/admin/endpoints", s.base))
        .set("authorization", &format!("Bearer {TEST_ADMIN_KEY}"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(list[0]["name"], "added");
    // The grant: hostile declares 32 MiB, under the default ceiling.
    let memory = &list[0]["limits"]["memory_bytes"];
    assert_eq!(memory["granted"], 32 << 20, "{list}");
    assert_eq!(memory["declared"], 32 << 20, "{list}");
    assert_eq!(memory["capped"], false, "{list}");
    let (code, v) = post(
        &agent(),
        &format!("{}/v1/endpoints/added", s.base),
        r#"[{"do": "ok", "id": 1}, {"do": "ok", "id": 2}]"#,
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v[1]["id"], 2);
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    if !available("cpu") {
        return;
    }
    let model = fixture("tiny-bert");
    let (mut child, base) = spawn_serve(&[
        "--name",
        "slow",
        "--skill",
        "hostile",
        "--model",
        model.to_str().unwrap(),
        "--instances",
        "4",
        "--max-batch-size",
        "1",
    ]);
    let inflight: Vec<_> = (0..4)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                post(
                    &agent(),
                    &format!("{base}/v1/endpoints/slow"),
                    &format!(r#"{{"do": "spin", "ms": 400, "id": {i}}}"#),
                )
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    for t in inflight {
        let (code, v) = t.join().unwrap();
        assert_eq!(code, 200, "an in-flight request was cut off: {v}");
    }
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "serve exits cleanly after draining: {status:?}"
    );
}

#[test]
fn completions_stream_token_by_token_and_match_the_full_answer() {
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
    let (code, full) = post(
        &agent(),
        &url,
        r#"{"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0}"#,
    );
    assert_eq!(code, 200, "{full}");
    assert_eq!(full["usage"]["completion_tokens"], 12);
    assert_eq!(full["choices"][0]["finish_reason"], "length");
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    let body = agent()
        .post(&url)
        .send_string(r#"{"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0, "stream": true}"#)
        .unwrap()
        .into_string()
        .unwrap();
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    assert_eq!(
        events.len(),
        12 + 2,
        "one event per token, a final one, then [DONE]: {body}"
    );
    let mut joined = String::new();
    for e in &events[..events.len() - 1] {
        let v: serde_json::Value = serde_json::from_str(e).unwrap();
        joined.push_str(v["choices"][0]["text"].as_str().unwrap());
    }
    assert_eq!(
        joined, text,
        "streamed pieces add up to the full completion"
    );
    let (code, v) = post(&agent(), &url, r#"{"prompt": "x", "n": 2}"#);
    assert_eq!(code, 400, "{v}");
}

#[test]
fn completions_refuse_options_they_would_ignore() {
    if !available("cpu") {
        return;
    }
    let s = server(
        vec![config(
            "gpt2",
            "text-generation",
            &fixture("tiny-gpt2"),
            "cpu",
            BatchPolicy::default(),
            1,
        )],
        64,
    );
    let url = format!("{}/v1/completions", s.base);
    for body in [
        r#"{"prompt": "x", "presence_penalty": 0.5}"#,
        r#"{"prompt": "x", "logprobs": 3}"#,
        r#"{"prompt": "x", "echo": true}"#,
    ] {
        let (code, v) = post(&agent(), &url, body);
        assert_eq!(code, 400, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "unsupported");
    }
    let (code, v) = post(
        &agent(),
        &url,
        r#"{"prompt": "x", "max_tokens": 3, "repetition_penalty": 1.3, "echo": false}"#,
    );
    assert_eq!(code, 200, "{v}");
}

/// TEI's classification routes on a text-classification endpoint: `/predict`
/// for texts and pairs, `/rerank` best first (a single-score model), and
/// clear errors for what they cannot answer.
#[test]
fn tei_predict_and_rerank_answer_like_the_skill() {
    if !available("cpu") {
        return;
    }
    let s = server(
        vec![
            config(
                "nli",
                "text-classification",
                &fixture("tiny-enc-bert-cls"),
                "cpu",
                BatchPolicy::default(),
                1,
            ),
            config(
                "rr",
                "text-classification",
                &fixture("tiny-enc-roberta-cls-single"),
                "cpu",
                BatchPolicy::default(),
                1,
            ),
        ],
        64,
    );
    let a = agent();
    let mut direct = runner(
        "text-classification",
        &fixture("tiny-enc-roberta-cls-single"),
        "cpu",
        Precision::F32,
    );
    let url = |p: &str| format!("{}{p}", s.base);
    // One text: every label, best first.
    let (code, v) = post(&a, &url("/predict"), r#"{"model":"nli","inputs":"a cat"}"#);
    assert_eq!(code, 200, "{v}");
    let labels = v.as_array().expect("a list of labels");
    assert_eq!(labels.len(), 3);
    let scores: Vec<f64> = labels
        .iter()
        .map(|l| l["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{v}");
    // A pair, and a batch of a text and a pair.
    let (code, v) = post(
        &a,
        &url("/predict"),
        r#"{"model":"nli","inputs":["a cat","a dog"]}"#,
    );
    assert_eq!((code, v.as_array().map(|l| l.len())), (200, Some(3)), "{v}");
    let (code, v) = post(
        &a,
        &url("/predict"),
        r#"{"model":"nli","inputs":["one", ["a cat","a dog"], "three"]}"#,
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v.as_array().map(|l| l.len()), Some(3), "{v}");
    // Rerank: best first, each score the skill's for that pair.
    let texts = [
        "the cat sat",
        "dogs run fast",
        "hello world",
        "a small bird",
    ];
    let body =
        serde_json::json!({"model": "rr", "query": "cats", "texts": texts, "return_text": true});
    let (code, v) = post(&a, &url("/rerank"), &body.to_string());
    assert_eq!(code, 200, "{v}");
    let ranked = v.as_array().expect("ranked list");
    assert_eq!(ranked.len(), texts.len());
    for w in ranked.windows(2) {
        assert!(w[0]["score"].as_f64() >= w[1]["score"].as_f64(), "{v}");
    }
    for r in ranked {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["text"], texts[i]);
        let req = serde_json::json!({"text": "cats", "text_pair": texts[i]}).to_string();
        let want = direct.handle(&[req]).remove(0).unwrap().json["labels"][0]["score"]
            .as_f64()
            .unwrap();
        assert!(
            (r["score"].as_f64().unwrap() - want).abs() < 1e-6,
            "{r} vs {want}"
        );
    }
    // raw_scores: the logit, whose sigmoid is the score.
    let body = serde_json::json!({"model": "rr", "query": "cats", "texts": [texts[0]], "raw_scores": true});
    let (_, raw) = post(&a, &url("/rerank"), &body.to_string());
    let logit = raw[0]["score"].as_f64().unwrap();
    let score = ranked.iter().find(|r| r["index"] == 0).unwrap()["score"]
        .as_f64()
        .unwrap();
    assert!((1.0 / (1.0 + (-logit).exp()) - score).abs() < 1e-6);
    // What these routes cannot answer.
    let cases = [
        (
            "/rerank",
            r#"{"model":"nli","query":"q","texts":["a"]}"#,
            "needs a reranker",
        ),
        (
            "/rerank",
            r#"{"model":"rr","texts":["a"]}"#,
            "missing `query`",
        ),
        (
            "/rerank",
            r#"{"model":"rr","query":"q","texts":[]}"#,
            "non-empty list",
        ),
        (
            "/predict",
            r#"{"model":"nli","inputs":[1,2,3]}"#,
            "string or a pair",
        ),
        ("/predict", r#"{"model":"nli"}"#, "missing `inputs`"),
    ];
    // TEI's error shape and status on TEI routes.
    for (route, body, text) in cases {
        let (code, v) = post(&a, &url(route), body);
        assert_eq!(code, 422, "{route} {body}: {v}");
        assert_eq!(v["error_type"], "Validation", "{v}");
        assert!(v["error"].as_str().unwrap_or("").contains(text), "{v}");
    }
}

/// A multipart/form-data body of (name, file name, bytes) parts.
fn form(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "----host-test-boundary-7d3f";
    let mut body = Vec::new();
    for (name, file, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn post_form(a: &ureq::Agent, url: &str, parts: &[(&str, Option<&str>, &[u8])]) -> (u16, String) {
    let (ct, body) = form(parts);
    let (code, resp) = match a.post(url).set("content-type", &ct).send_bytes(&body) {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(c, r)) => (c, r),
        Err(e) => panic!("transport error: {e}"),
    };
    (code, resp.into_string().unwrap_or_default())
}

/// File uploads: a multipart form on `/v1/endpoints/{name}` (an image and
/// a number field) answers like the JSON request, and OpenAI's
/// `/v1/audio/transcriptions` answers json, text and verbose_json with the
/// CTC transcript transformers gives.
#[test]
fn multipart_uploads_and_openai_transcriptions() {
    if !available("cpu") {
        return;
    }
    let s = server(
        vec![
            config(
                "vit",
                "image-classification",
                &fixture("tiny-vit"),
                "cpu",
                BatchPolicy::default(),
                1,
            ),
            config(
                "asr",
                "automatic-speech-recognition",
                &fixture("tiny-wav2vec2-ctc"),
                "cpu",
                BatchPolicy::default(),
                1,
            ),
        ],
        64,
    );
    let a = agent();
    let url = |p: &str| format!("{}{p}", s.base);
    let png = std::fs::read(fixture("images/gradient_64x48.png")).expect("image");
    let (code, text) = post_form(
        &a,
        &url("/v1/endpoints/vit"),
        &[("image", Some("g.png"), &png), ("top_k", None, b"2")],
    );
    assert_eq!(code, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["labels"].as_array().map(|l| l.len()), Some(2), "{v}");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let (code, json) = post(
        &a,
        &url("/v1/endpoints/vit"),
        &serde_json::json!({"image": b64, "top_k": 2}).to_string(),
    );
    assert_eq!(code, 200);
    assert_eq!(json["labels"], v["labels"]);
    // Every endpoint is a model.
    let models: serde_json::Value = a
        .get(&url("/v1/models"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"vit") && ids.contains(&"asr"), "{models}");
    // Transcriptions.
    let wav = std::fs::read(fixture("audio/tone_16k.wav")).expect("audio");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-wav2vec2-ctc/reference.json")).unwrap(),
    )
    .unwrap();
    let want = reference["cases"][0]["text"].as_str().unwrap();
    let t = url("/v1/audio/transcriptions");
    let (code, body) = post_form(
        &a,
        &t,
        &[("file", Some("a.wav"), &wav), ("model", None, b"asr")],
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["text"], want);
    let (code, body) = post_form(
        &a,
        &t,
        &[
            ("file", Some("a.wav"), &wav),
            ("model", None, b"asr"),
            ("response_format", None, b"text"),
        ],
    );
    assert_eq!((code, body.as_str()), (200, want));
    let (code, body) = post_form(
        &a,
        &t,
        &[
            ("file", Some("a.wav"), &wav),
            ("model", None, b"asr"),
            ("response_format", None, b"verbose_json"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["task"].as_str(), v["text"].as_str()),
        (Some("transcribe"), Some(want))
    );
    // No timestamps from a CTC model; no file; a bad form.
    let (code, _) = post_form(
        &a,
        &t,
        &[
            ("file", Some("a.wav"), &wav),
            ("model", None, b"asr"),
            ("response_format", None, b"srt"),
        ],
    );
    assert_eq!(code, 400);
    let (code, body) = post_form(&a, &t, &[("model", None, b"asr")]);
    assert_eq!(code, 400, "{body}");
    let (code, _) = match a
        .post(&t)
        .set("content-type", "multipart/form-data; boundary=x")
        .send_string("garbage")
    {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(c, r)) => (c, r),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(code, 400);
}

/// OpenAI transcriptions from a Whisper endpoint: subtitles and
/// verbose_json carry the timed chunks of the skill's transcript.
#[test]
fn whisper_transcriptions_in_every_openai_format() {
    if !available("cpu") {
        return;
    }
    let s = server(
        vec![config(
            "whisper",
            "automatic-speech-recognition",
            &fixture("tiny-whisper"),
            "cpu",
            BatchPolicy::default(),
            1,
        )],
        64,
    );
    let a = agent();
    let t = format!("{}/v1/audio/transcriptions", s.base);
    let wav = std::fs::read(fixture("audio/tone_16k.wav")).expect("audio");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-whisper/reference.json")).unwrap(),
    )
    .unwrap();
    let case = &reference["clips"]["tone_16k.wav"]["cases"]["timestamps"]["pipeline"];
    let form = |format: &'static [u8]| {
        post_form(
            &a,
            &t,
            &[
                ("file", Some("a.wav"), &wav),
                ("model", None, b"whisper"),
                ("response_format", None, format),
            ],
        )
    };
    let (code, body) = form(b"verbose_json");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["text"], case["text"]);
    let chunks = case["chunks"].as_array().unwrap();
    assert_eq!(v["segments"].as_array().map(Vec::len), Some(chunks.len()));
    assert_eq!(v["segments"][0]["start"], chunks[0]["timestamp"][0]);
    assert!(v["duration"].as_f64().is_some_and(|d| d > 1.0), "{v}");
    let (code, srt) = form(b"srt");
    assert_eq!(code, 200, "{srt}");
    assert!(
        srt.starts_with("1\n00:00:") && srt.contains(" --> "),
        "{srt}"
    );
    assert_eq!(srt.matches(" --> ").count(), chunks.len());
    let (code, vtt) = form(b"vtt");
    assert_eq!(code, 200);
    assert!(vtt.starts_with("WEBVTT\n\n"), "{vtt}");
    let (code, body) = form(b"xml");
    assert_eq!(code, 400, "{body}");
    // Word timestamps: `words` (alone, or beside the segments).
    let words = |granularities: &[&'static [u8]]| {
        let mut parts: Vec<(&str, Option<&str>, &[u8])> = vec![
            ("file", Some("a.wav"), &wav),
            ("model", None, b"whisper"),
            ("response_format", None, b"verbose_json"),
        ];
        parts.extend(
            granularities
                .iter()
                .map(|g| ("timestamp_granularities[]", None, *g)),
        );
        let (code, body) = post_form(&a, &t, &parts);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    for (asked, segments) in [
        (&[&b"word"[..]][..], 0),
        (&[&b"word"[..], &b"segment"[..]][..], chunks.len()),
    ] {
        let v = words(asked);
        let list = v["words"].as_array().expect("words");
        let joined: String = list.iter().filter_map(|w| w["word"].as_str()).collect();
        assert_eq!(joined, v["text"].as_str().unwrap_or_default(), "{v}");
        assert!(
            list.iter()
                .all(|w| w["start"].as_f64() <= w["end"].as_f64()),
            "{v}"
        );
        assert_eq!(
            v["segments"].as_array().map(Vec::len),
            Some(segments),
            "{v}"
        );
    }
}
