//! The deployment files (deploy/): the Kubernetes manifests validate
//! offline against the Kubernetes JSON schemas (`kubernetes-validate`,
//! installed by scripts/test.sh into .runtime/k8s-validate; skipped with a
//! reason when absent unless REQUIRE_K8S_VALIDATE=1), a broken manifest is
//! caught, and the files agree with the host: probes on /health, the drain
//! deadline inside the grace period, the API key from a Secret, the HPA on
//! a metric the host exports, endpoints that parse, and an image that
//! builds every skill with the runtime versions scripts/setup.sh installs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::root;

fn deploy(rel: &str) -> PathBuf {
    root().join("deploy").join(rel)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(deploy("k8s"))
        .expect("deploy/k8s")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "deploy/k8s has the manifests: {v:?}");
    v
}

/// `python3 -m kubernetes_validate` from .runtime/k8s-validate, or None
/// (with a printed reason) when it is not installed.
fn validator() -> Option<Command> {
    let dir = root().join(".runtime/k8s-validate");
    if !dir.join("kubernetes_validate").is_dir() {
        let why = format!(
            "{} has no kubernetes-validate (scripts/test.sh installs it)",
            dir.display()
        );
        if std::env::var("REQUIRE_K8S_VALIDATE").is_ok_and(|v| v == "1") {
            panic!("REQUIRE_K8S_VALIDATE=1 but {why}");
        }
        eprintln!("SKIP: {why}");
        return None;
    }
    let mut c = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()));
    c.env("PYTHONPATH", &dir).args([
        "-m",
        "kubernetes_validate",
        "--strict",
        "--kubernetes-version",
        "1.37.0",
    ]);
    Some(c)
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let Some(mut c) = validator() else { return };
    let out = c
        .args(manifests())
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "manifests do not validate:\n{text}");
    for m in manifests() {
        let name = m
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            text.contains(&format!("{name} passed")),
            "{name} was not validated:\n{text}"
        );
    }
}

#[test]
fn the_validator_catches_a_broken_manifest() {
    let Some(mut c) = validator() else { return };
    let good = read(&deploy("k8s/deployment.yaml"));
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, good.replace("containerPort:", "containerPrt:")).expect("write");
    let out = c.arg(&bad).output().expect("run kubernetes-validate");
    assert!(
        !out.status.success(),
        "a misspelt field must fail strict validation"
    );
}

/// The number after `key:` on the first line holding it.
fn number_after(text: &str, key: &str) -> f64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|rest| rest.trim().trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no numeric `{key}`"))
}

#[test]
fn the_deployment_agrees_with_host_serve() {
    let d = read(&deploy("k8s/deployment.yaml"));
    for probe in ["readinessProbe:", "livenessProbe:"] {
        let at = d.find(probe).unwrap_or_else(|| panic!("no {probe}"));
        assert!(d[at..].contains("path: /health"), "{probe} on /health");
    }
    // host serve drains within --shutdown-timeout-s after SIGTERM, which
    // comes after the preStop pause: both fit the grace period.
    let grace = number_after(&d, "terminationGracePeriodSeconds:");
    let args: Vec<&str> = d
        .lines()
        .map(|l| l.trim().trim_start_matches("- "))
        .collect();
    let drain: f64 = args
        .iter()
        .position(|a| *a == "--shutdown-timeout-s")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.trim_matches('"').parse().ok())
        .expect("--shutdown-timeout-s in the args");
    let pause = number_after(&d[d.find("preStop:").expect("preStop")..], "seconds:");
    assert!(
        pause + drain + 5.0 <= grace,
        "{pause} + {drain} s within {grace} s"
    );
    assert!(d.contains("name: HOST_API_KEY") && d.contains("secretKeyRef:"));
    assert!(d.contains("nvidia.com/gpu:"), "GPU requests");
    assert!(read(&deploy("k8s/secret.yaml")).contains("name: host-serve-keys"));
}

#[test]
fn the_autoscaler_metric_is_one_the_host_exports() {
    let hpa = read(&deploy("k8s/hpa.yaml"));
    assert!(
        hpa.contains("name: host_queue_depth"),
        "HPA on the queue depth"
    );
    let rules = read(&deploy("k8s/prometheus-adapter.yaml"));
    assert!(rules.contains("seriesQuery: 'host_queue_depth{"));
    let m = host::endpoint::Metrics::new();
    m.queue_depth.with_label_values(&["e"]).set(3);
    assert!(m.render().contains("host_queue_depth{endpoint=\"e\"} 3"));
}

#[test]
fn the_configmap_endpoints_parse() {
    let cm = read(&deploy("k8s/configmap.yaml"));
    let body = cm
        .split("endpoints.toml: |")
        .nth(1)
        .expect("endpoints.toml key");
    let toml: String = body
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    // `cuda:*` needs a GPU here; the rest must parse as is.
    let toml = toml.replace("\"cuda:*\"", "\"cpu\"");
    let f = host::endpoint::EndpointsFile::parse(Path::new("endpoints.toml"), &toml)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert!(!f.endpoints.is_empty() && !f.endpoints[0].replicas.is_empty());
}

#[test]
fn the_image_builds_every_skill_with_setup_versions() {
    let docker = read(&deploy("Dockerfile"));
    let setup = read(&root().join("scripts/setup.sh"));
    for var in ["ORT_VERSION", "OPENVINO_VERSION"] {
        let want = setup
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=")))
            .unwrap_or_else(|| panic!("{var} in setup.sh"));
        assert!(
            docker.contains(&format!("ARG {var}={want}")),
            "Dockerfile pins {var}={want} like scripts/setup.sh"
        );
    }
    let skills: Vec<String> = std::fs::read_dir(root().join("guest-skills"))
        .expect("guest-skills")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n != "skill-sdk" && n != "hostile")
        .filter(|n| {
            root()
                .join("guest-skills")
                .join(n)
                .join("Cargo.toml")
                .is_file()
        })
        .collect();
    for s in &skills {
        assert!(
            docker.contains(&format!("-p {s} "))
                || docker.contains(&format!("-p {s}\n"))
                || docker.contains(&format!("-p {s} \\")),
            "the image builds skill {s}"
        );
    }
    for env in ["HOST_SKILLS_DIR=", "HOST_RUNTIME_DIR="] {
        assert!(docker.contains(env), "{env}");
    }
    assert!(
        docker.contains("FROM rust:") && docker.matches("FROM ").count() >= 3,
        "multi-stage"
    );
}
