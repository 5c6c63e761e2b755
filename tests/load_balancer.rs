//! The reference deployment on one machine: three `host serve` replicas
//! behind HAProxy (a real load balancer from the Debian packages) that
//! health-checks `/health`. Concurrent clients get correct answers from
//! every replica; one replica is killed mid-run (SIGKILL) and requests keep
//! succeeding (HAProxy retries a request whose connection died, clients
//! retry a clean 502/503); the replica is started again on its port and
//! serves again; another leaves by SIGTERM (drain, as in a rolling update).
//! No request is lost. Each host runs its endpoint as two
//! cpu replicas (`--replicas cpu,cpu`).
//!
//! HAProxy is not installed by the test: scripts/test.sh installs it when it
//! can; without it the test is skipped with the reason, unless
//! REQUIRE_HAPROXY=1.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::agent;
use common::*;
use host::backend::Precision;

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy() -> Option<String> {
    let found = Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("haproxy".into());
    }
    if std::env::var("REQUIRE_HAPROXY").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_HAPROXY=1 but haproxy is not on PATH");
    }
    eprintln!("SKIP: haproxy is not installed (apt-get install haproxy; scripts/test.sh does it when it can)");
    None
}

/// Starts `host serve` on `addr` (port 0: any) and returns it with the
/// address it listens on; its stderr is drained by a thread.
fn replica(addr: &str) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["serve", "--addr", addr, "--name", "emb", "--skill"])
        .arg(skill("text-embedding"))
        .arg("--model")
        .arg(fixture("tiny-bert"))
        .args(["--replicas", "cpu,cpu", "--max-batch-size", "8"])
        .args(["--shutdown-timeout-s", "5"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn host serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("host serve exited early")
            .expect("stderr line");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (Proc(child), base)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Requests this replica answered (its own /metrics); 0 when it is down.
fn served(base: &str) -> f64 {
    let Ok(r) = agent().get(&format!("{base}/metrics")).call() else {
        return 0.0;
    };
    r.into_string()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("host_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const CONFIG: &str = "global
    maxconn 2048
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-buffer-request
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 502 503
frontend api
    bind 127.0.0.1:FRONT
    default_backend replicas
backend replicas
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
    default-server inter 200ms fall 2 rise 1
";

#[test]
fn three_replicas_behind_haproxy_survive_losing_one() {
    if !available("cpu") {
        return;
    }
    let Some(lb) = haproxy() else { return };
    let mut replicas: Vec<(Option<Proc>, String)> = (0..3)
        .map(|_| {
            let (p, base) = replica("127.0.0.1:0");
            (Some(p), base)
        })
        .collect();
    let front = free_port();
    let mut cfg = CONFIG.replace("FRONT", &front.to_string());
    for (i, (_, base)) in replicas.iter().enumerate() {
        let addr = base.trim_start_matches("http://");
        cfg.push_str(&format!("    server r{i} {addr} check\n"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, &cfg).expect("write haproxy.cfg");
    let check = Command::new(&lb)
        .arg("-c")
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .expect("haproxy -c");
    assert!(
        check.status.success(),
        "haproxy rejects the config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _lb = Proc(
        Command::new(&lb)
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    let url = format!("http://127.0.0.1:{front}/v1/endpoints/emb");
    let start = Instant::now();
    while agent()
        .get(&format!("http://127.0.0.1:{front}/health"))
        .call()
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "haproxy did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let texts: Vec<String> = (0..64)
        .map(|i| format!("balanced request {i} on word{}", i % 11))
        .collect();
    let mut r = runner(
        "text-embedding",
        &fixture("tiny-bert"),
        "cpu",
        Precision::F32,
    );
    let want: Arc<Vec<Vec<f32>>> = Arc::new(
        embed(&mut r, &texts, 8)
            .into_iter()
            .map(|(v, _)| v)
            .collect(),
    );
    let texts = Arc::new(texts);
    let stop = Arc::new(AtomicBool::new(false));
    let (done, retried) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..12)
        .map(|c| {
            let (url, texts, want) = (url.clone(), texts.clone(), want.clone());
            let (stop, done, retried) = (stop.clone(), done.clone(), retried.clone());
            std::thread::spawn(move || {
                let a = agent();
                let mut k = c;
                while !stop.load(Ordering::SeqCst) {
                    let i = k % texts.len();
                    k += 12;
                    let body = serde_json::json!({ "text": texts[i] }).to_string();
                    let mut tries = 0;
                    let v: serde_json::Value = loop {
                        tries += 1;
                        match a
                            .post(&url)
                            .set("content-type", "application/json")
                            .send_string(&body)
                        {
                            Ok(resp) => break resp.into_json().expect("json answer"),
                            // A clean "try again": the client retries.
                            Err(ureq::Error::Status(502 | 503, _)) if tries < 20 => {
                                retried.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            Err(e) => panic!("request {i} lost after {tries} tries: {e}"),
                        }
                    };
                    let got: Vec<f32> = v["embedding"]
                        .as_array()
                        .unwrap_or_else(|| panic!("no embedding: {v}"))
                        .iter()
                        .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                        .collect();
                    let (cos, max) = compare(&got, &want[i]);
                    assert!(
                        cos > 0.99999 && max < 1e-4,
                        "request {i}: cosine {cos}, max-abs {max}"
                    );
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let wait_for = |n: usize| {
        let t = Instant::now();
        while done.load(Ordering::SeqCst) < n {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "load stalled at {}",
                done.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(300);
    let before: Vec<f64> = replicas.iter().map(|(_, b)| served(b)).collect();
    assert!(
        before.iter().all(|&n| n > 0.0),
        "every replica served: {before:?}"
    );

    // Kill replica 0 mid-run (no drain: its in-flight requests die with it).
    let victim = replicas[0].1.clone();
    drop(replicas[0].0.take());
    let at_kill = done.load(Ordering::SeqCst);
    wait_for(at_kill + 300);
    let survivors: Vec<f64> = replicas[1..].iter().map(|(_, b)| served(b)).collect();
    assert!(
        survivors
            .iter()
            .zip(&before[1..])
            .all(|(now, then)| now > then),
        "the survivors absorb the load: {before:?} -> {survivors:?}"
    );

    // Add it back on its port: HAProxy's health check puts it in again.
    let (p, base) = replica(victim.trim_start_matches("http://"));
    replicas[0] = (Some(p), base.clone());
    let t = Instant::now();
    while served(&base) < 1.0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the restarted replica got no traffic"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each host runs two cpu replicas of the endpoint (--replicas).
    let health: serde_json::Value = agent()
        .get(&format!("{base}/health"))
        .call()
        .expect("health")
        .into_json()
        .expect("json");
    assert_eq!(
        health["endpoints"][0]["replicas"].as_array().map(Vec::len),
        Some(2),
        "{health}"
    );
    let at_back = done.load(Ordering::SeqCst);
    wait_for(at_back + 100);
    // A rolling update's way out: SIGTERM (host serve stops accepting,
    // finishes what it has, exits); requests keep succeeding.
    let mut leaving = replicas[1].0.take().expect("replica 1 runs");
    let term = Command::new("kill")
        .args(["-TERM", &leaving.0.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let at_term = done.load(Ordering::SeqCst);
    wait_for(at_term + 200);
    let exit = leaving.0.wait().expect("wait for the drained replica");
    assert!(exit.success(), "a drained replica exits cleanly: {exit:?}");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("a client failed (see its panic)");
    }
    eprintln!(
        "{} requests answered correctly through haproxy, {} client retries on 502/503",
        done.load(Ordering::SeqCst),
        retried.load(Ordering::SeqCst)
    );
}
