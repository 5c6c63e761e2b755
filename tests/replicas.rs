//! Replicas of one endpoint on several devices of one host (`replicas`):
//! the batcher spreads batches over them, every answer is right whichever
//! replica served it, `/health` and `/metrics` report each replica, and a
//! replica whose device fails is taken out of rotation, its batches served
//! by another, and probed back in after its backoff.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::http::*;
use common::*;
use host::backend::Precision;
use host::endpoint::{BatchPolicy, EndpointConfig, EndpointsFile};

fn replicated(name: &str, replicas: &str, instances: usize) -> EndpointConfig {
    let mut c = config(
        name,
        "text-embedding",
        &fixture("tiny-bert"),
        "cpu",
        BatchPolicy {
            max_batch_size: 4,
            ..BatchPolicy::default()
        },
        instances,
    );
    c.replicas = host::endpoint::parse_replicas(replicas).expect("replica list");
    c
}

fn health(base: &str) -> serde_json::Value {
    agent()
        .get(&format!("{base}/health"))
        .call()
        .expect("health")
        .into_json()
        .expect("json")
}

/// The sum of the `/metrics` samples whose line starts with `prefix`.
fn metric(base: &str, prefix: &str) -> f64 {
    let text = agent()
        .get(&format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn replicas_share_the_load_and_answer_right() {
    if !available("cpu") {
        return;
    }
    // cpu + openvino as replicas where OpenVINO is here, else two cpu ones.
    let with_ov = available("openvino");
    let list = if with_ov {
        "cpu,openvino,cpu"
    } else {
        "cpu,cpu,cpu"
    };
    let s = server(vec![replicated("rep", list, 1)], 256);
    let model = fixture("tiny-bert");
    let texts: Vec<String> = (0..240)
        .map(|i| format!("replica request {i} about word{} and word{}", i % 13, i % 7))
        .collect();
    let mut r = runner("text-embedding", &model, "cpu", Precision::F32);
    let want: Arc<Vec<Vec<f32>>> = Arc::new(
        embed(&mut r, &texts, 8)
            .into_iter()
            .map(|(v, _)| v)
            .collect(),
    );
    let texts = Arc::new(texts);
    let clients: Vec<_> = (0..24)
        .map(|c| {
            let (base, texts, want) = (s.base.clone(), texts.clone(), want.clone());
            std::thread::spawn(move || {
                let a = agent();
                let mut devices = Vec::new();
                for i in (c..texts.len()).step_by(24) {
                    let body = serde_json::json!({ "text": texts[i] }).to_string();
                    let (code, v) = post(&a, &format!("{base}/v1/endpoints/rep"), &body);
                    assert_eq!(code, 200, "{v}");
                    let got: Vec<f32> = v["embedding"]
                        .as_array()
                        .expect("embedding")
                        .iter()
                        .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                        .collect();
                    let (cos, max) = compare(&got, &want[i]);
                    assert!(
                        cos > 0.99999 && max < 1e-4,
                        "request {i} on {}: cosine {cos}, max-abs {max}",
                        v["device"]
                    );
                    devices.push(v["device"].as_str().unwrap_or_default().to_string());
                }
                devices
            })
        })
        .collect();
    let mut devices: Vec<String> = clients
        .into_iter()
        .flat_map(|t| t.join().expect("client"))
        .collect();
    devices.sort();
    devices.dedup();
    let status = health(&s.base);
    let reps = status["endpoints"][0]["replicas"]
        .as_array()
        .expect("replicas in /health")
        .clone();
    assert_eq!(reps.len(), 3, "{status}");
    for (i, r) in reps.iter().enumerate() {
        assert_eq!(r["replica"], i, "{status}");
        assert_eq!(r["in_rotation"], true, "{status}");
        assert!(
            r["batches"].as_u64().unwrap_or(0) > 0,
            "replica {i} ({}) served no batch: {status}",
            r["device"]
        );
        let label = format!(
            "host_replica_batches_total{{device=\"{}\",endpoint=\"rep\",replica=\"{i}\"}}",
            r["device"].as_str().unwrap_or_default()
        );
        assert_eq!(
            metric(&s.base, &label) as u64,
            r["batches"].as_u64().unwrap_or(0),
            "{label}"
        );
    }
    if with_ov {
        assert_eq!(
            devices,
            ["cpu", "openvino"],
            "answers name their replica's device"
        );
    }
    assert_eq!(metric(&s.base, "host_requests_total{") as usize, 240);
    assert_eq!(metric(&s.base, "host_replica_in_rotation{") as usize, 3);
}

#[test]
fn a_failing_replica_leaves_rotation_and_is_probed_back() {
    std::env::set_var("HOST_FAULT_INJECTION", "1");
    if !available("cpu") {
        return;
    }
    let s = server(vec![replicated("rf", "faulty,cpu", 2)], 64);
    let url = format!("{}/v1/endpoints/rf", s.base);
    // Concurrent requests: some batches land on the faulty replica first.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let body = format!(r#"{{"text": "request {i}"}}"#);
                post(&agent(), &url, &body)
            })
        })
        .collect();
    for t in threads {
        let (code, v) = t.join().expect("client");
        assert_eq!(
            (code, &v["device"]),
            (200, &serde_json::json!("cpu")),
            "{v}"
        );
    }
    // Make sure the faulty replica got a batch: with cpu busy, the next
    // batch goes to the least-loaded replica in rotation.
    let mut n = 0;
    while metric(
        &s.base,
        "host_fallbacks_total{endpoint=\"rf\",from=\"faulty\",to=\"cpu\"}",
    ) < 1.0
    {
        let (code, v) = post(&agent(), &url, r#"{"text": "again"}"#);
        assert_eq!(
            (code, &v["device"]),
            (200, &serde_json::json!("cpu")),
            "{v}"
        );
        n += 1;
        assert!(n < 20, "no batch was sent to the faulty replica");
    }
    let status = health(&s.base);
    let ep = &status["endpoints"][0];
    assert_eq!(ep["replicas"][0]["device"], "faulty", "{status}");
    assert_eq!(ep["replicas"][0]["in_rotation"], false, "{status}");
    assert_eq!(ep["replicas"][1]["in_rotation"], true, "{status}");
    assert_eq!(ep["quarantined"][0]["device"], "faulty", "{status}");
    // Batches already on it when it went out fail too (counted, the
    // backoff stays 5 s).
    let failures = ep["quarantined"][0]["failures"].as_u64().unwrap_or(0);
    assert!(failures >= 1, "{status}");
    assert_eq!(
        metric(&s.base, "host_replica_in_rotation{device=\"faulty\""),
        0.0
    );
    // Out of rotation: requests go to cpu, no new fallback.
    let before = metric(&s.base, "host_fallbacks_total{");
    for _ in 0..6 {
        let (code, _) = post(&agent(), &url, r#"{"text": "while out"}"#);
        assert_eq!(code, 200);
    }
    assert_eq!(metric(&s.base, "host_fallbacks_total{"), before);
    // After the backoff (5 s) the next batch probes it; it fails again, is
    // served by cpu, and the backoff doubles.
    let left = ep["quarantined"][0]["seconds_left"].as_f64().unwrap_or(5.0);
    eprintln!("faulty out for {left:.1} s after {failures} failures");
    std::thread::sleep(Duration::from_secs_f64(left + 0.2));
    let status = health(&s.base);
    assert_eq!(
        status["endpoints"][0]["replicas"][0]["in_rotation"], true,
        "{status}"
    );
    // Equal loads rotate, so one of the next requests probes it.
    let mut status = health(&s.base);
    for _ in 0..6 {
        let (code, v) = post(&agent(), &url, r#"{"text": "probe"}"#);
        assert_eq!(
            (code, &v["device"]),
            (200, &serde_json::json!("cpu")),
            "{v}"
        );
        status = health(&s.base);
        if status["endpoints"][0]["replicas"][0]["in_rotation"] == false {
            break;
        }
    }
    let q = &status["endpoints"][0]["quarantined"][0];
    assert_eq!(
        q["failures"],
        failures + 1,
        "probed and failed again: {status}"
    );
    assert!(
        q["seconds_left"].as_f64().unwrap_or(0.0) > left + 1.0,
        "backoff doubles: {status}"
    );
}

#[test]
fn replica_settings_parse_and_exclude_a_fallback_list() {
    let t = "[[endpoints]]\nname = \"e\"\nskill = \"s\"\nmodel = \"m\"\nreplicas = [\"cpu\", \"cpu\"]\ninstances = 2\n";
    let f = EndpointsFile::parse(std::path::Path::new("x.toml"), t).expect("toml");
    assert_eq!(f.endpoints[0].replicas.len(), 2);
    let j = r#"{"endpoints":[{"name":"e","skill":"s","model":"m","replicas":"cpu,openvino"}]}"#;
    let f = EndpointsFile::parse(std::path::Path::new("x.json"), j).expect("json");
    assert_eq!(f.endpoints[0].replicas[1].to_string(), "openvino");
    let bad = r#"{"endpoints":[{"name":"e","skill":"s","model":"m","replicas":["tpu"]}]}"#;
    assert!(EndpointsFile::parse(std::path::Path::new("x.json"), bad).is_err());
    // Both a fallback list and replicas: refused before anything loads.
    let both = r#"{"endpoints":[{"name":"e","skill":"s","model":"m","devices":"openvino,cpu","replicas":["cpu"]}]}"#;
    let mut f = EndpointsFile::parse(std::path::Path::new("x.json"), both).expect("json");
    let eps = host::endpoint::Endpoints::new(sandbox());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let err = rt
        .block_on(eps.add(f.endpoints.remove(0)))
        .expect_err("both settings");
    assert!(err.to_string().contains("not both"), "{err}");
}
