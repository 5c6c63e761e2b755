//! `host serve` against clients that are not well-behaved: API and admin
//! keys, admin-added models outside the model roots, slow and half-open
//! connections, shutdown with such a connection open, oversized requests.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::http::*;
use common::*;
use host::endpoint::BatchPolicy;
use host::serve::auth::Keys;
use host::serve::confine::ModelRoots;
use host::serve::listen::Timeouts;
use host::serve::ServeOptions;

const API_KEY: &str = "test-inference-key-0001";
const ADMIN_KEY: &str = "test-admin-key-000000001";

/// (status, body, headers as lowercase text) of a request with an optional
/// bearer token.
fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value, String) {
    let mut req = agent()
        .request(method, url)
        .set("content-type", "application/json");
    if let Some(t) = token {
        req = req.set("authorization", &format!("Bearer {t}"));
    }
    let r = if body.is_empty() {
        req.call()
    } else {
        req.send_string(body)
    };
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let code = resp.status();
    let headers = resp
        .headers_names()
        .iter()
        .map(|h| format!("{h}: {}", resp.header(h).unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase();
    let text = resp.into_string().unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (code, v, headers)
}

#[test]
fn keys_guard_inference_and_admin_routes() {
    if !available("cpu") {
        return;
    }
    let models = tempfile::tempdir().unwrap();
    let copy = models.path().join("bert");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(fixture("tiny-bert")).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
        }
    }
    let s = server_with(
        vec![embedding_endpoint()],
        ServeOptions {
            keys: Keys::new(&[API_KEY.into()], &[ADMIN_KEY.into()]).unwrap(),
            model_roots: ModelRoots::new(&[models.path().to_path_buf()], false).unwrap(),
            ..ServeOptions::default()
        },
    );
    let emb = format!("{}/v1/embeddings", s.base);
    let body = r#"{"input": "hello"}"#;
    let (code, v, headers) = call("POST", &emb, None, body);
    assert_eq!(code, 401, "{v}");
    assert!(headers.contains("www-authenticate: bearer"), "{headers}");
    assert_eq!(
        call("POST", &emb, Some("wrong-key-00000000000"), body).0,
        401
    );
    let (code, v, _) = call("POST", &emb, Some(API_KEY), body);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        call("POST", &emb, Some(ADMIN_KEY), body).0,
        200,
        "admin keys serve too"
    );
    // Probes stay open and show no paths.
    let (code, v, _) = call("GET", &format!("{}/health", s.base), None, "");
    assert_eq!(code, 200);
    let text = v.to_string();
    assert!(
        !text.contains('/') && v["endpoints"][0]["model"] == "tiny-bert",
        "{text}"
    );

    let admin = format!("{}/admin/endpoints", s.base);
    assert_eq!(call("GET", &admin, None, "").0, 401);
    assert_eq!(
        call("GET", &admin, Some(API_KEY), "").0,
        401,
        "an API key is not an admin key"
    );
    assert_eq!(call("GET", &admin, Some(ADMIN_KEY), "").0, 200);

    let add = |model: &str, skill: &str| {
        let cfg = serde_json::json!({ "name": format!("n{}", model.len()), "skill": skill, "model": model, "devices": ["cpu"] });
        call("POST", &admin, Some(ADMIN_KEY), &cfg.to_string())
    };
    let outside = fixture("tiny-bert");
    let escape = format!("{}/../../{}", copy.display(), outside.display());
    // Outside the root, escaping it, missing, or a skill path: 400 with
    // one message for missing and outside alike.
    for (model, skill) in [
        (outside.to_str().unwrap(), "text-embedding"),
        ("../bert", "text-embedding"),
        (escape.as_str(), "text-embedding"),
        ("/etc", "text-embedding"),
        ("/no/such/dir", "text-embedding"),
        ("bert", skill("text-embedding").to_str().unwrap()),
    ] {
        let (code, v, _) = add(model, skill);
        assert_eq!(code, 400, "{model} {skill}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(!msg.contains("exist") && !msg.contains("No such"), "{msg}");
    }
    let (code, v, _) = add("bert", "text-embedding");
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["model"], "bert", "{v}");
    let (code, v, _) = call(
        "POST",
        &emb,
        Some(API_KEY),
        r#"{"input": "hello", "model": "n4"}"#,
    );
    assert_eq!(code, 200, "{v}");
}

#[test]
fn admin_routes_are_off_without_an_admin_key() {
    if !available("cpu") {
        return;
    }
    let s = server_with(vec![embedding_endpoint()], ServeOptions::default());
    let (code, v, _) = call("GET", &format!("{}/admin/endpoints", s.base), None, "");
    assert_eq!(code, 403, "{v}");
    let cfg = serde_json::json!({"name": "x", "skill": "text-embedding", "model": "/etc", "devices": ["cpu"]});
    let (code, _, _) = call(
        "POST",
        &format!("{}/admin/endpoints", s.base),
        Some("anything-at-all-0000"),
        &cfg.to_string(),
    );
    assert_eq!(code, 403);
    // Inference stays open without keys.
    assert_eq!(
        call(
            "POST",
            &format!("{}/v1/embeddings", s.base),
            None,
            r#"{"input": "a"}"#
        )
        .0,
        200
    );
}

/// A raw connection that sends `bytes` and then waits; returns what the
/// server answered and how long it took to close.
fn stall(base: &str, bytes: &[u8], wait: Duration) -> (String, Duration) {
    let addr = base.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.write_all(bytes).unwrap();
    let t = Instant::now();
    let mut resp = Vec::new();
    let _ = sock.read_to_end(&mut resp);
    (String::from_utf8_lossy(&resp).into_owned(), t.elapsed())
}

#[test]
fn slow_clients_are_cut_off_and_others_are_served() {
    if !available("cpu") {
        return;
    }
    let s = server_with(
        vec![embedding_endpoint()],
        ServeOptions {
            timeouts: Timeouts {
                header: Duration::from_millis(800),
                body: Duration::from_millis(800),
                shutdown: Duration::from_secs(5),
            },
            ..ServeOptions::default()
        },
    );
    let base = s.base.clone();
    // Headers that never finish (slowloris) and an idle connection.
    let partial = std::thread::spawn(move || {
        stall(
            &base,
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n",
            Duration::from_secs(10),
        )
    });
    let base = s.base.clone();
    let idle = std::thread::spawn(move || stall(&base, b"", Duration::from_secs(10)));
    // A body shorter than its Content-Length.
    let base = s.base.clone();
    let body = std::thread::spawn(move || {
        stall(
            &base,
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"input\":",
            Duration::from_secs(10),
        )
    });
    // Meanwhile a well-behaved client is served.
    let (code, v, _) = call(
        "POST",
        &format!("{}/v1/embeddings", s.base),
        None,
        r#"{"input": "a"}"#,
    );
    assert_eq!(code, 200, "{v}");
    for (what, t) in [("partial headers", partial), ("idle", idle)] {
        let (_, took) = t.join().unwrap();
        assert!(
            took < Duration::from_secs(5),
            "{what} connection kept open {took:?}"
        );
    }
    let (resp, took) = body.join().unwrap();
    assert!(
        took < Duration::from_secs(5),
        "slow body kept open {took:?}"
    );
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
}

#[test]
fn shutdown_ends_within_its_deadline_with_a_half_open_connection() {
    if !available("cpu") {
        return;
    }
    let model = fixture("tiny-bert");
    let (mut child, base) = spawn_serve(&[
        "--skill",
        "text-embedding",
        "--model",
        model.to_str().unwrap(),
        "--header-timeout-s",
        "600",
        "--body-timeout-s",
        "600",
        "--shutdown-timeout-s",
        "2",
    ]);
    let addr = base.trim_start_matches("http://").to_string();
    // A request whose body never comes.
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.write_all(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "serve still running {:?} after SIGTERM",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sock);
}

#[test]
fn large_requests_are_served_or_refused_before_any_work() {
    if !available("cpu") {
        return;
    }
    let policy = BatchPolicy {
        queue_capacity: 64,
        ..BatchPolicy::default()
    };
    let s = server_with(
        vec![config(
            "emb",
            "text-embedding",
            &fixture("tiny-bert"),
            "cpu",
            policy,
            1,
        )],
        ServeOptions {
            max_body_bytes: 4 << 20,
            ..ServeOptions::default()
        },
    );
    let emb = format!("{}/v1/embeddings", s.base);
    // More inputs than the queue holds: served, in order.
    let inputs: Vec<String> = (0..300).map(|i| format!("text number {i}")).collect();
    let (code, v, _) = call(
        "POST",
        &emb,
        None,
        &serde_json::json!({ "input": inputs }).to_string(),
    );
    assert_eq!(code, 200, "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 300);
    assert!(data.iter().enumerate().all(|(i, d)| d["index"] == i));
    // More than OpenAI's 2048: refused at once.
    let inputs: Vec<&str> = vec!["a"; 2049];
    let (code, v, _) = call(
        "POST",
        &emb,
        None,
        &serde_json::json!({ "input": inputs }).to_string(),
    );
    assert_eq!(code, 400, "{v}");
    // A text the skill truncates: tokenized only as far as its kept tokens,
    // served quickly whatever its length.
    let long = "word ".repeat((3 << 20) / 5);
    let t = Instant::now();
    let (code, v, _) = call(
        "POST",
        &emb,
        None,
        &serde_json::json!({ "input": long }).to_string(),
    );
    assert_eq!(code, 200, "{v}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A text beyond the host's tokenization limit (1 MiB) without a
    // whitespace to cut at: a clear 400, quickly, and the endpoint keeps
    // serving.
    let big = "w".repeat((1 << 20) + 10);
    let t = Instant::now();
    let (code, v, _) = call(
        "POST",
        &emb,
        None,
        &serde_json::json!({ "input": big }).to_string(),
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HOST_MAX_TEXT_BYTES"),
        "{v}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Bodies over the limit: 413.
    // (over a raw socket: the server may answer and close before the
    // whole body is sent)
    let huge = "x".repeat(5 << 20);
    let body = serde_json::json!({ "input": huge }).to_string();
    let (code, text) = raw_post(&s.base, "/v1/embeddings", &body);
    assert_eq!(code, 413, "{text}");
    assert_eq!(
        call("POST", &emb, None, r#"{"input": "still here"}"#).0,
        200
    );
}

/// The official `openai` and `huggingface_hub` clients, unmodified, against
/// a server with an API key (scripts/openai_client_check.py; scripts/test.sh
/// installs the clients into .runtime/clients).
#[test]
fn official_clients_work_with_an_api_key() {
    if !available("cpu") {
        return;
    }
    let clients = root().join(".runtime").join("clients");
    if !clients.join("openai").is_dir() {
        assert!(
            std::env::var_os("REQUIRE_CLIENTS").is_none(),
            "REQUIRE_CLIENTS is set but {} has no openai client",
            clients.display()
        );
        eprintln!("SKIP: the openai and huggingface_hub clients are not in {} (scripts/test.sh installs them)", clients.display());
        return;
    }
    let chat = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        std::fs::copy(fixture("tiny-llama").join(f), chat.path().join(f)).unwrap();
    }
    for f in ["tokenizer_config.json", "chat_template.jinja"] {
        std::fs::copy(
            fixture("tiny-llama-chat/plain").join(f),
            chat.path().join(f),
        )
        .unwrap();
    }
    let s = server_with(
        vec![
            embedding_endpoint(),
            config(
                "chat",
                "text-generation",
                chat.path(),
                "cpu",
                BatchPolicy::default(),
                1,
            ),
        ],
        ServeOptions {
            keys: Keys::new(&[API_KEY.into()], &[]).unwrap(),
            default_endpoint: Some("emb".into()),
            ..ServeOptions::default()
        },
    );
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(python)
        .env("PYTHONPATH", &clients)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .arg(root().join("scripts/openai_client_check.py"))
        .args([
            "--base",
            &s.base,
            "--embedding-model",
            "emb",
            "--chat-model",
            "chat",
        ])
        .args(["--api-key", API_KEY])
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok   InferenceClient.sentence_similarity"),
        "{text}"
    );
    assert!(text.contains("ok   a wrong key is refused"), "{text}");
}
