//! An HTTP server of endpoints on loopback for the serve tests, and a
//! small client.

use std::sync::Arc;
use std::time::Duration;

use host::backend::{registry, Precision};
use host::endpoint::{BatchPolicy, EndpointConfig, Endpoints};
use host::serve::listen::serve_connections;
use host::serve::{router, ServeOptions};

use super::{sandbox, skill};

/// A server on an ephemeral port; lives as long as the test process.
pub struct Server {
    pub base: String,
    pub endpoints: Arc<Endpoints>,
    pub rt: &'static tokio::runtime::Runtime,
}

/// The admin key of [`server`]'s servers (their inference routes are open,
/// their model root is tests/fixtures).
pub const TEST_ADMIN_KEY: &str = "serve-tests-admin-key-0001";

pub fn server(configs: Vec<EndpointConfig>, max_concurrent: usize) -> Server {
    server_with(
        configs,
        ServeOptions {
            max_concurrent_requests: max_concurrent,
            max_body_bytes: 1 << 20,
            keys: host::serve::auth::Keys::new(&[], &[TEST_ADMIN_KEY.into()]).unwrap(),
            model_roots: host::serve::confine::ModelRoots::new(&[super::fixture("")], false)
                .unwrap(),
            ..ServeOptions::default()
        },
    )
}

/// A server with `opts` (its address is replaced by an ephemeral port).
pub fn server_with(configs: Vec<EndpointConfig>, opts: ServeOptions) -> Server {
    let rt: &'static tokio::runtime::Runtime = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap(),
    ));
    let endpoints = Arc::new(Endpoints::new(sandbox()));
    let eps = endpoints.clone();
    let base = rt.block_on(async move {
        for c in configs {
            eps.add(c).await.expect("endpoint loads");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(eps, &opts);
        let pending = std::future::pending::<()>();
        tokio::spawn(serve_connections(listener, app, opts.timeouts, pending));
        format!("http://{addr}")
    });
    Server {
        base,
        endpoints,
        rt,
    }
}

pub fn config(
    name: &str,
    skill_name: &str,
    model: &std::path::Path,
    devices: &str,
    batching: BatchPolicy,
    instances: usize,
) -> EndpointConfig {
    let mut c = EndpointConfig::new(
        name,
        skill(skill_name).to_str().unwrap(),
        model.to_str().unwrap(),
        registry::parse_list(devices).unwrap(),
        Precision::F32,
    );
    c.batching = batching;
    c.instances = instances;
    c
}

/// A text-embedding endpoint `emb` on the tiny BERT fixture, on cpu.
pub fn embedding_endpoint() -> EndpointConfig {
    config(
        "emb",
        "text-embedding",
        &super::fixture("tiny-bert"),
        "cpu",
        BatchPolicy::default(),
        1,
    )
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

/// (status, body) of a POST.
pub fn post(agent: &ureq::Agent, url: &str, body: &str) -> (u16, serde_json::Value) {
    let r = agent
        .post(url)
        .set("content-type", "application/json")
        .set("authorization", &format!("Bearer {TEST_ADMIN_KEY}"))
        .send_string(body);
    let (code, resp) = match r {
        Ok(resp) => (resp.status(), resp),
        Err(ureq::Error::Status(code, resp)) => (code, resp),
        Err(e) => panic!("transport error: {e}"),
    };
    let text = resp.into_string().unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// `host serve ARGS --addr 127.0.0.1:0` as a child process: the child and
/// its base URL, read from its "listening on" line; the rest of its stderr
/// is drained (and echoed) by a thread so the server never blocks on it.
pub fn spawn_serve(args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn host serve");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("serve exited early")
            .expect("stderr line");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(|l| eprintln!("serve: {}", l.unwrap_or_default())));
    (child, base)
}

/// POST over a raw socket that tolerates the server closing early.
pub fn raw_post(base: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = sock
        .write_all(head.as_bytes())
        .and_then(|_| sock.write_all(body.as_bytes()));
    let mut resp = Vec::new();
    let _ = sock.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}
