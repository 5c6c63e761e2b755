//! Skill authoring and sandboxed testing: `host test` over every project
//! skill's cases (tests/cases/<skill>.jsonl, recorded on cpu f32), its
//! reports and failures, digests and pins, the vendored WIT of the SDK,
//! and the docs/skills.md walk-through (`host new` -> cargo build ->
//! `host test` -> `host serve` with a pinned digest).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .output()
        .expect("spawn host")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn cases(skill: &str) -> PathBuf {
    root()
        .join("tests")
        .join("cases")
        .join(format!("{skill}.jsonl"))
}

/// Every skill of the project and the fixture its cases were recorded on.
const SKILL_FIXTURES: &[(&str, &str)] = &[
    ("text-embedding", "tiny-enc-bert"),
    ("fill-mask", "tiny-enc-bert"),
    ("text-classification", "tiny-enc-bert-cls"),
    ("token-classification", "tiny-enc-bert-ner"),
    ("image-classification", "tiny-vit"),
    ("zero-shot-image-classification", "tiny-clip"),
    ("object-detection", "tiny-detr"),
    ("multimodal-embedding", "tiny-clip"),
    ("text-generation", "tiny-gpt2"),
    ("text2text-generation", "tiny-s2s-t5"),
    ("video-classification", "tiny-videomae-cls"),
    ("audio-embedding", "tiny-wav2vec2-stable"),
    ("automatic-speech-recognition", "tiny-wav2vec2-ctc"),
    ("zero-shot-audio-classification", "tiny-clap"),
    ("hostile", "tiny-enc-bert"),
];

/// `host test SKILL` on its fixture and cases; the JSON report.
fn host_test(skill: &str, fixture_name: &str, device: &str, junit: &Path) -> serde_json::Value {
    let model = fixture(fixture_name);
    let c = cases(skill);
    let o = host(&[
        "test",
        skill_path(skill).to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--cases",
        c.to_str().unwrap(),
        "--device",
        device,
        "--junit",
        junit.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "host test {skill} on {device} failed (re-record with `host test {skill} --model {} --cases {} --record` if the change is intended):\n{}",
        model.display(),
        c.display(),
        text(&o)
    );
    serde_json::from_slice(&o.stdout).expect("JSON report")
}

fn skill_path(name: &str) -> PathBuf {
    skill(name)
}

#[test]
fn every_project_skill_passes_host_test_on_cpu() {
    if !available("cpu") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (skill, fixture_name) in SKILL_FIXTURES {
        let junit = dir.path().join(format!("{skill}.xml"));
        let report = host_test(skill, fixture_name, "cpu", &junit);
        let results = report["results"].as_array().unwrap();
        let cases = results.iter().filter(|r| r["kind"] == "case").count();
        assert!(cases >= 1, "{skill}: no cases ran");
        assert_eq!(report["failed"], 0, "{skill}: {report}");
        // The conformance checks ran (skips only where a skill has no
        // case to probe with).
        for check in ["describe", "load", "response schema", "resource limits"] {
            let r = results.iter().find(|r| r["name"] == check);
            assert_eq!(
                r.map(|r| r["status"].clone()),
                Some("pass".into()),
                "{skill}: {check}: {report}"
            );
        }
        assert!(report["skill"]["cid"]
            .as_str()
            .unwrap()
            .starts_with("bafkrei"));
        // Usage is measured against what the skill was granted.
        assert_eq!(
            report["limits"]["memory_bytes"]["granted"], report["usage"]["memory_limit_bytes"],
            "{skill}: {report}"
        );
        let xml = std::fs::read_to_string(&junit).unwrap();
        assert!(
            xml.contains("<testsuite name=") && !xml.contains("<failure"),
            "{xml}"
        );
    }
}

#[test]
fn host_test_reports_usage_against_the_granted_limits() {
    if !available("cpu") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases_file = dir.path().join("cases.jsonl");
    std::fs::write(
        &cases_file,
        concat!(
            r#"{"name": "ok", "request": {"do": "ok"}, "expect": {"ok": true}}"#,
            "\n",
            r#"{"name": "bomb", "request": {"do": "memory"}, "error": "resource-exhausted"}"#,
            "\n"
        ),
    )
    .unwrap();
    // hostile declares 32 MiB: granted under the default ceiling (512 MiB),
    // capped (and warned about) under a 16 MiB one.
    for (ceiling_mib, granted_mib) in [(None, 32u64), (Some(16u64), 16)] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_host"));
        cmd.args(["test", skill_path("hostile").to_str().unwrap(), "--model"])
            .arg(fixture("tiny-enc-bert"))
            .arg("--cases")
            .arg(&cases_file)
            .args(["--device", "cpu", "--json"])
            .env_remove("HOST_SKILL_MEMORY_MB");
        if let Some(m) = ceiling_mib {
            cmd.env("HOST_SKILL_MEMORY_MB", m.to_string());
        }
        let o = cmd.output().expect("spawn host");
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
        let memory = &report["limits"]["memory_bytes"];
        assert_eq!(memory["declared"], 32 << 20, "{report}");
        assert_eq!(memory["granted"], granted_mib << 20, "{report}");
        assert_eq!(memory["capped"], ceiling_mib.is_some(), "{report}");
        let usage = &report["usage"];
        assert_eq!(usage["memory_limit_bytes"], granted_mib << 20, "{report}");
        let peak = usage["peak_memory_bytes"].as_u64().unwrap();
        assert!(peak <= granted_mib << 20, "{report}");
        let limits = report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "resource limits")
            .expect("resource limits check");
        assert_eq!(limits["status"], "pass", "{limits}");
        let summary = limits["summary"].as_str().unwrap();
        let ceiling = ceiling_mib.unwrap_or(512);
        let basis = if ceiling_mib.is_some() {
            "declared above the ceiling, capped"
        } else {
            "declared"
        };
        assert!(
            summary.contains(&format!(
                "of {granted_mib} MiB granted ({basis}; ceiling {ceiling} MiB)"
            )),
            "{summary}"
        );
        // Details are left out of the JSON when there are none.
        let details = limits["details"].as_array().cloned().unwrap_or_default();
        let warned = details.iter().any(|d| {
            d.as_str()
                .is_some_and(|d| d.contains("warning: skill `hostile` declared 32 MiB of memory"))
        });
        assert_eq!(warned, ceiling_mib.is_some(), "{limits}");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            stderr.contains("above the ceiling of 16 MiB"),
            ceiling_mib.is_some(),
            "{stderr}"
        );
    }
}

#[test]
fn recorded_cases_hold_on_openvino() {
    if !available("openvino") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (skill, fixture_name) in [
        ("text-classification", "tiny-enc-bert-cls"),
        ("text-embedding", "tiny-enc-bert"),
    ] {
        let report = host_test(skill, fixture_name, "openvino", &dir.path().join("r.xml"));
        assert_eq!(report["device"], "openvino");
    }
}

#[test]
fn a_broken_expectation_fails_with_a_readable_diff() {
    if !available("cpu") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(cases("text-classification")).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // A score off by 0.25, and an error that the skill does not give.
    let score = lines[0]["expect"]["labels"][0]["score"].as_f64().unwrap();
    lines[0]["expect"]["labels"][0]["score"] = (score - 0.25).into();
    lines[1]["expect"] = serde_json::Value::Null;
    lines[1]["error"] = "invalid-request".into();
    let mut broken = String::new();
    for l in &lines {
        let mut l = l.clone();
        if l["expect"].is_null() {
            l.as_object_mut().unwrap().remove("expect");
        }
        broken.push_str(&format!("{l}\n"));
    }
    let file = dir.path().join("broken.jsonl");
    std::fs::write(&file, broken).unwrap();
    let junit = dir.path().join("r.xml");
    let o = host(&[
        "test",
        "text-classification",
        "--model",
        fixture("tiny-enc-bert-cls").to_str().unwrap(),
        "--cases",
        file.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let out = text_of(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  case all labels"), "{out}");
    assert!(
        out.contains("$.labels[0].score: expected") && out.contains("|diff| 2.500e-1"),
        "{out}"
    );
    assert!(
        out.contains("expected a `invalid-request` error, got a response"),
        "{out}"
    );
    assert!(out.contains("2 failed"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<failure ").count(), 2, "{xml}");
    assert!(xml.contains("failures=\"2\""), "{xml}");
}

fn text_of(o: &Output) -> String {
    text(o)
}

#[test]
fn pinned_digests_are_enforced() {
    if !available("cpu") {
        return;
    }
    let path = skill("text-classification");
    let digest = host::digest::Digest::of_file(&path).unwrap();
    let model = fixture("tiny-enc-bert-cls");
    let model = model.to_str().unwrap();
    let wrong = host::digest::Digest::of(b"another build");
    for (pin, ok) in [
        (digest.to_string(), true),
        (digest.cid(), true),
        (wrong.to_string(), false),
    ] {
        let spec = format!("{}@{pin}", path.display());
        let o = host(&["run", &spec, "--model", model, "--input", "fine"]);
        if ok {
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        } else {
            assert_eq!(o.status.code(), Some(2), "{}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains(&format!("is pinned to {wrong}"))
                    && err.contains(&digest.to_string())
                    && err.contains("refusing to load"),
                "{err}"
            );
            // host test reports it as a failed check, with the file's digest.
            let o = host(&["test", &spec, "--model", model, "--json"]);
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(r["results"][0]["name"], "component");
            assert_eq!(r["skill"]["sha256"], digest.to_string());
        }
    }
    // An endpoints file's `skill_digest` pins the same way.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("endpoints.toml");
    std::fs::write(
        &file,
        format!(
            "[[endpoints]]\nname = \"pinned\"\nskill = {:?}\nmodel = {model:?}\nskill_digest = \"{wrong}\"\n",
            path.display().to_string()
        ),
    )
    .unwrap();
    let o = host(&[
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--addr",
        "127.0.0.1:9",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("is pinned to {wrong}")), "{err}");
    // `host skills --json` shows every component's digest and CID.
    let o = host(&["skills", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "text-classification")
        .unwrap();
    assert_eq!(row["cid"], digest.cid());
}

#[test]
fn the_sdk_vendors_the_workspace_wit() {
    let ours = root().join("wit");
    let vendored = root().join("guest-skills/skill-sdk/wit");
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&ours), names(&vendored));
    for n in names(&ours) {
        assert!(
            std::fs::read(ours.join(&n)).unwrap() == std::fs::read(vendored.join(&n)).unwrap(),
            "guest-skills/skill-sdk/wit/{n} differs from wit/{n}: copy it (cp wit/*.wit guest-skills/skill-sdk/wit/)"
        );
    }
}

/// Runs cargo as the test's own cargo does.
fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Builds the crate in `dir` for wasm32-wasip2 into the shared target
/// directory; the path of the component `file`.wasm.
fn build(dir: &Path, target: &Path, file: &str) -> PathBuf {
    let o = cargo()
        .args(["build", "--release", "--target", "wasm32-wasip2", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("spawn cargo");
    assert!(
        o.status.success(),
        "cargo build in {}: {}",
        dir.display(),
        text(&o)
    );
    target.join(format!("wasm32-wasip2/release/{file}.wasm"))
}

fn build_component(dir: &Path, target: &Path) -> PathBuf {
    build(dir, target, "my_skill")
}

/// docs/skills.md, "From `host new` to `host serve`", run as written: a
/// crate generated outside the repository, built with cargo, recorded,
/// tested, broken on purpose (a readable diff), and served pinned by
/// digest (a different build refused).
#[test]
fn walkthrough_new_build_test_serve() {
    if !available("cpu") {
        return;
    }
    let doc = std::fs::read_to_string(root().join("docs/skills.md")).unwrap();
    let wasm_rel = "target/wasm32-wasip2/release/my_skill.wasm";
    let model_rel = "tests/fixtures/tiny-enc-bert-cls";
    for command in [
        "host new my-skill --task text-classification --dir /tmp/my-skill".to_string(),
        "cargo build --release --target wasm32-wasip2".to_string(),
        format!("host test {wasm_rel} --model $REPO/{model_rel} --cases tests/cases.jsonl --record"),
        format!("host test {wasm_rel} --model $REPO/{model_rel} --cases tests/cases.jsonl --junit report.xml"),
        format!("host serve --skill {wasm_rel}@sha256:<hex> --model $REPO/{model_rel}"),
    ] {
        assert!(doc.contains(&command), "docs/skills.md no longer shows `{command}`");
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my-skill");
    let o = host(&[
        "new",
        "my-skill",
        "--task",
        "text-classification",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("skill-sdk = { path = "), "{manifest}");
    // The workspace's versions of the dependencies: no registry look-up,
    // and the shared target directory stays warm across runs.
    std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let target = root().join("target").join("authoring-walkthrough");
    let wasm = build_component(&dir, &target);
    let good = tmp.path().join("good.wasm");
    std::fs::copy(&wasm, &good).unwrap();
    let model = fixture("tiny-enc-bert-cls");
    let model = model.to_str().unwrap();
    let cases_file = dir.join("tests/cases.jsonl");
    let test = |wasm: &Path, record: bool| {
        let mut args = vec![
            "test",
            wasm.to_str().unwrap(),
            "--model",
            model,
            "--cases",
            cases_file.to_str().unwrap(),
        ];
        if record {
            args.push("--record");
        }
        host(&args)
    };
    let o = test(&good, true);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = test(&good, false);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 failed"));

    // Broken on purpose: raw logits instead of the model's function.
    let lib = dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let line = "let function = r.function.unwrap_or(l.default_function);";
    assert!(
        source.contains(line),
        "the template changed: update this test"
    );
    std::fs::write(&lib, source.replace(line, "let function = Function::None;")).unwrap();
    let broken = build_component(&dir, &target);
    let o = test(&broken, false);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL  case example"), "{out}");
    assert!(out.contains("$.labels[0].score: expected"), "{out}");

    // A skeleton (another task) builds too, and says what is missing.
    let skeleton = tmp.path().join("embed");
    let o = host(&["new", "my-embedding", "--task", "text-embedding", "--dir"])
        .status
        .code();
    assert_eq!(o, Some(2), "a missing --dir value is a usage error");
    let o = host(&[
        "new",
        "my-embedding",
        "--task",
        "text-embedding",
        "--dir",
        skeleton.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    std::fs::copy(root().join("Cargo.lock"), skeleton.join("Cargo.lock")).unwrap();
    let wasm = build(&skeleton, &target, "my_embedding");
    let o = host(&["test", wasm.to_str().unwrap(), "--model", model]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("PASS  check describe") && out.contains("unsupported"),
        "{out}"
    );

    // Served pinned to the good build's digest; the broken file is refused.
    let digest = host::digest::Digest::of_file(&good).unwrap();
    let refused = host(&[
        "serve",
        "--skill",
        &format!("{}@{digest}", broken.display()),
        "--model",
        model,
        "--addr",
        "127.0.0.1:9",
    ]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refusing to load"),
        "{}",
        text(&refused)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_host"))
        .args(["serve", "--skill", &format!("{}@{digest}", good.display())])
        .args(["--model", model, "--addr", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn host serve");
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(10))
        .build();
    let url = format!("http://{addr}/v1/endpoints/default");
    let started = std::time::Instant::now();
    let answer = loop {
        match agent
            .post(&url)
            .send_string(r#"{"text": "I love this movie."}"#)
        {
            Ok(r) => break r.into_json::<serde_json::Value>().unwrap(),
            Err(e) if started.elapsed().as_secs() < 60 => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => {
                let _ = server.kill();
                panic!("host serve did not answer: {e}");
            }
        }
    };
    let _ = server.kill();
    let _ = server.wait();
    let labels = answer["labels"].as_array().expect("labels");
    assert_eq!(labels.len(), 3, "{answer}");
    assert_eq!(answer["device"], "cpu");
}
