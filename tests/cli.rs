//! The `host` command line: output contract and clear errors on bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host"))
        .args(args)
        .output()
        .expect("spawn host")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `host run text-embedding --model MODEL EXTRA...`
fn run_embedding(model: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", "text-embedding", "--model", model];
    args.extend_from_slice(extra);
    host(&args)
}

/// Asserts an exit code and a piece of the stderr message.
fn assert_fails(o: &Output, code: i32, text: &str) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    assert!(
        stderr(o).contains(text),
        "expected {text:?} in: {}",
        stderr(o)
    );
}

fn lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// A model directory with `config` and a one-tensor safetensors file.
fn fake_model(dir: &Path, config: &str, weights: Option<&[u8]>) {
    std::fs::write(dir.join("config.json"), config).unwrap();
    let default = {
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header);
        b.extend_from_slice(&1f32.to_le_bytes());
        b
    };
    std::fs::write(dir.join("model.safetensors"), weights.unwrap_or(&default)).unwrap();
}

#[test]
fn run_prints_one_line_per_input_in_order() {
    if !available("cpu") {
        return;
    }
    let model = fixture("tiny-bert");
    let texts = [
        "a much longer sentence with quite a few words in it",
        "short",
        "",
        "medium length text here",
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    let body: String = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string() + "\n")
        .collect();
    std::fs::write(&file, body).unwrap();
    let batched = run_embedding(
        model.to_str().unwrap(),
        &["--inputs", file.to_str().unwrap(), "--batch-size", "3"],
    );
    assert!(batched.status.success(), "{}", stderr(&batched));
    let got = lines(&batched);
    assert_eq!(got.len(), texts.len());
    for (t, line) in texts.iter().zip(&got) {
        assert_eq!(line["device"], "cpu");
        assert_eq!(line["precision"], "f32");
        let single = run_embedding(model.to_str().unwrap(), &["--input", t]);
        let want = &lines(&single)[0];
        let a: Vec<f32> = line["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let b: Vec<f32> = want["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let (cos, max) = compare(&a, &b);
        assert!(
            cos > 0.999999 && max < 1e-5,
            "input {t:?} answered out of order or wrongly: cos {cos} max {max}"
        );
        assert_eq!(line["tokens"], want["tokens"]);
    }
}

#[test]
fn empty_input_list_is_an_error() {
    let o = run_embedding(fixture("tiny-bert").to_str().unwrap(), &[]);
    assert_fails(&o, 2, "no inputs");
}

#[test]
fn invalid_json_line_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, "{\"text\": \"ok\"}\n{not json\n").unwrap();
    let o = run_embedding(
        fixture("tiny-bert").to_str().unwrap(),
        &["--inputs", file.to_str().unwrap()],
    );
    assert_fails(&o, 2, "line 2: not valid JSON");
}

#[test]
fn request_without_text_fails_alone() {
    if !available("cpu") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, "{\"text\": \"fine\"}\n{\"txt\": \"typo\"}\n").unwrap();
    let o = run_embedding(
        fixture("tiny-bert").to_str().unwrap(),
        &["--inputs", file.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    let got = lines(&o);
    assert!(got[0]["embedding"].is_array());
    assert_eq!(got[1]["error"]["kind"], "invalid-request");
    assert!(
        stderr(&o).contains("input 2: invalid-request: missing `text`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn missing_model_directory_is_explained() {
    let o = run_embedding("/no/such/model/dir", &["--input", "x"]);
    assert_fails(&o, 2, "neither a local directory nor a hub id");
}

#[test]
fn offline_hub_id_not_in_cache_is_explained() {
    let home = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_host"))
        .args([
            "run",
            "text-embedding",
            "--model",
            "someone/some-model",
            "--input",
            "x",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("someone/some-model") && e.contains("not in the local cache"),
        "{e}"
    );
}

#[test]
fn unknown_skill_lists_where_it_looked() {
    let o = host(&[
        "run",
        "no-such-skill",
        "--model",
        fixture("tiny-bert").to_str().unwrap(),
        "--input",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("skill `no-such-skill` not found") && e.contains("no_such_skill.wasm"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_is_a_typed_error() {
    if !available("cpu") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fake_model(dir.path(), r#"{"model_type": "gpt2"}"#, None);
    let o = run_embedding(dir.path().to_str().unwrap(), &["--input", "x"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("unsupported")
            && e.contains("skill `text-embedding` failed to load")
            && e.contains("model_type `gpt2` is not a served encoder"),
        "{e}"
    );
}

#[test]
fn corrupt_weights_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    fake_model(
        dir.path(),
        r#"{"model_type": "bert"}"#,
        Some(b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage"),
    );
    let o = run_embedding(dir.path().to_str().unwrap(), &["--input", "x"]);
    assert_fails(&o, 2, "invalid safetensors header");
}

#[test]
fn unknown_device_lists_known_ones() {
    let o = run_embedding(
        fixture("tiny-bert").to_str().unwrap(),
        &["--device", "tpu", "--input", "x"],
    );
    assert_fails(&o, 2, "unknown device `tpu`; known devices: cpu");
}

#[test]
fn devices_and_skills_are_listed() {
    let d = host(&["devices", "--json"]);
    assert!(d.status.success());
    let list: serde_json::Value = serde_json::from_slice(&d.stdout).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["device"] == "cpu"));
    let s = host(&["skills", "--json"]);
    assert!(s.status.success());
    let skills: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    let te = skills
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "text-embedding")
        .expect("text-embedding listed");
    assert_eq!(te["task"], "feature-extraction");
    // Its declared needs and what it was granted under the default ceiling.
    assert_eq!(te["needs"]["memory_bytes"], 256 << 20, "{te}");
    assert_eq!(te["limits"]["memory_bytes"]["granted"], 256 << 20, "{te}");
    assert_eq!(
        te["limits"]["fuel_per_call"]["declared"],
        serde_json::Value::Null
    );
    let listed =
        |v: &serde_json::Value, name: &str| v.as_array().unwrap().iter().any(|x| x["name"] == name);
    assert!(!listed(&skills, "hostile"), "test-only skills are hidden");
    let all: serde_json::Value =
        serde_json::from_slice(&host(&["skills", "--json", "--all"]).stdout).unwrap();
    assert!(listed(&all, "hostile"));
}

/// `--input` fills the skill's own text field: text-generation's `prompt`.
#[test]
fn input_maps_to_the_skills_text_field() {
    if !available("cpu") {
        return;
    }
    let model = fixture("tiny-gpt2");
    let out = host(&[
        "run",
        "text-generation",
        "--model",
        model.to_str().unwrap(),
        "--input",
        "Hello world",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(v["prompt_tokens"].as_u64().unwrap() > 0, "{v}");
}
