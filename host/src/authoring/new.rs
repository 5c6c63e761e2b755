//! `host new NAME --task TASK`: a standalone skill crate on disk.
//!
//! The crate has its own `[workspace]` table (it builds wherever it is
//! written), a `cdylib` target for `wasm32-wasip2`, `src/lib.rs` with the
//! task's contract (`../shared/TASKS.md`) in `describe` (a working
//! implementation for `text-classification`, a skeleton for the other
//! tasks), `tests/cases.jsonl` for `host test`, a README, a .gitignore and
//! `.cargo/config.toml` (wasm SIMD on, as the project's own skills build).
//! The SDK comes as a path dependency (default: this checkout's
//! `guest-skills/skill-sdk`, which vendors the WIT), a git dependency, or a
//! registry version once it is published. Templates are files under
//! `templates/`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::AuthoringError;

/// Where the generated crate takes `skill-sdk` from.
#[derive(Clone, Debug, PartialEq)]
pub enum SdkSource {
    /// A directory holding the SDK crate.
    Path(PathBuf),
    /// A git repository (the workspace holding `guest-skills/skill-sdk`).
    Git { url: String, rev: Option<String> },
    /// A registry version (crates.io, once published).
    Version(String),
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct NewOptions {
    /// Crate and skill name (`my-skill`).
    pub name: String,
    pub task: String,
    /// The crate's directory (created; must not exist or be empty).
    pub dir: PathBuf,
    pub sdk: SdkSource,
}

/// One task's contract and template.
struct Task {
    task: &'static str,
    request: &'static str,
    response: &'static str,
    /// A request for the generated cases file.
    sample: fn() -> Value,
    /// SDK features the task needs.
    features: &'static [&'static str],
    /// Which SDK modules to start from (the skeleton's doc comment).
    hint: &'static str,
}

const TEXT_REQ: &str =
    r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"}}}"#;
const LABELS_RESP: &str = r#"{"type":"object","required":["labels"],"properties":{"labels":{"type":"array","items":{"type":"object","required":["label","score"],"properties":{"label":{"type":"string"},"score":{"type":"number"}}}}}}"#;
const EMBED_RESP: &str = r#"{"type":"object","required":["embedding"],"properties":{"embedding":{"type":"array","items":{"type":"number"}}}}"#;
const GEN_RESP: &str = r#"{"type":"object","required":["text","token_ids","finish_reason"],"properties":{"text":{"type":"string"},"token_ids":{"type":"array","items":{"type":"integer"}},"prompt_tokens":{"type":"integer"},"finish_reason":{"type":"string"}}}"#;

fn text() -> Value {
    json!({"text": "The movie was a delight from start to finish."})
}

/// A 1x1 PNG (base64): the smallest image request.
const PIXEL_PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC";

fn image() -> Value {
    json!({ "image": PIXEL_PNG })
}

fn audio() -> Value {
    let tone: Vec<f32> = (0..1600)
        .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 16000.0).sin() * 0.1)
        .collect();
    json!({"array": tone, "sampling_rate": 16000})
}

const TASKS: &[Task] = &[
    Task {
        task: "text-classification",
        request: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"},"top_k":{"type":"integer","minimum":1},"function_to_apply":{"enum":["softmax","sigmoid","none"]}}}"#,
        response: LABELS_RESP,
        sample: text,
        features: &[],
        hint: "",
    },
    Task {
        task: "text-embedding",
        request: TEXT_REQ,
        response: EMBED_RESP,
        sample: text,
        features: &[],
        hint: "`skill_sdk::encoder::Encoder` builds any encoder family; pool and normalise in the graph (see the host's guest-skills/text-embedding).",
    },
    Task {
        task: "fill-mask",
        request: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"},"top_k":{"type":"integer","minimum":1},"targets":{"type":["string","array"],"items":{"type":"string"}}}}"#,
        response: r#"{"type":"object","required":["predictions"],"properties":{"predictions":{"type":"array","items":{"type":"array","items":{"type":"object","properties":{"score":{"type":"number"},"token":{"type":"integer"},"token_str":{"type":"string"},"sequence":{"type":"string"}}}}}}}"#,
        sample: || json!({"text": "Paris is the [MASK] of France."}),
        features: &[],
        hint: "`Encoder::mlm_logits` and `skill_sdk::special_tokens` (the mask token).",
    },
    Task {
        task: "token-classification",
        request: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"},"aggregation_strategy":{"enum":["none","simple","first","average","max"]}}}"#,
        response: r#"{"type":"object","required":["entities"],"properties":{"entities":{"type":"array","items":{"type":"object","properties":{"entity":{"type":"string"},"entity_group":{"type":"string"},"score":{"type":"number"},"word":{"type":"string"},"start":{"type":"integer"},"end":{"type":"integer"}}}}}}"#,
        sample: || json!({"text": "Ada Lovelace lived in London."}),
        features: &[],
        hint: "`Encoder::token_logits`, tokenizer offsets (`with_offsets`).",
    },
    Task {
        task: "text-generation",
        request: r#"{"type":"object","required":["prompt"],"properties":{"prompt":{"type":"string"},"max_new_tokens":{"type":"integer"},"do_sample":{"type":"boolean"},"temperature":{"type":"number"},"top_k":{"type":"integer"},"top_p":{"type":"number"},"repetition_penalty":{"type":"number"},"seed":{"type":"integer"},"stop":{"type":"array","items":{"type":"string"}}}}"#,
        response: GEN_RESP,
        sample: || json!({"prompt": "Once upon a time", "max_new_tokens": 8}),
        features: &["generation"],
        hint: "`runtime.session` for the KV cache, `skill_sdk::generation` for sampling (see guest-skills/text-generation).",
    },
    Task {
        task: "text2text-generation",
        request: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"},"max_new_tokens":{"type":"integer"},"num_beams":{"type":"integer"},"do_sample":{"type":"boolean"}}}"#,
        response: GEN_RESP,
        sample: || json!({"text": "translate English to German: Hello", "max_new_tokens": 8}),
        features: &["generation"],
        hint: "`skill_sdk::seq2seq` (encoder-decoder families and the generation loop).",
    },
    Task {
        task: "image-classification",
        request: r#"{"type":"object","required":["image"],"properties":{"image":{"type":"string"},"top_k":{"type":"integer","minimum":1}}}"#,
        response: LABELS_RESP,
        sample: image,
        features: &["image"],
        hint: "`skill_sdk::image` (decoding, preprocessing) and `skill_sdk::vision` (ViT, Swin, ConvNeXt).",
    },
    Task {
        task: "object-detection",
        request: r#"{"type":"object","required":["image"],"properties":{"image":{"type":"string"},"threshold":{"type":"number"}}}"#,
        response: r#"{"type":"object","required":["objects"],"properties":{"objects":{"type":"array","items":{"type":"object","properties":{"label":{"type":"string"},"score":{"type":"number"},"box":{"type":"object"}}}}}}"#,
        sample: image,
        features: &["image"],
        hint: "`skill_sdk::image`; see guest-skills/object-detection (DETR).",
    },
    Task {
        task: "zero-shot-image-classification",
        request: r#"{"type":"object","required":["image","candidate_labels"],"properties":{"image":{"type":"string"},"candidate_labels":{"type":"array","items":{"type":"string"},"minItems":1},"hypothesis_template":{"type":"string"}}}"#,
        response: LABELS_RESP,
        sample: || json!({"image": PIXEL_PNG, "candidate_labels": ["cat", "dog"]}),
        features: &["image"],
        hint: "`skill_sdk::vision::clip` and `skill_sdk::scores::Candidates`.",
    },
    Task {
        task: "multimodal-embedding",
        request: r#"{"type":"object","properties":{"text":{"type":"string"},"image":{"type":"string"}}}"#,
        response: EMBED_RESP,
        sample: text,
        features: &["image"],
        hint: "`skill_sdk::vision::clip` (text and image towers).",
    },
    Task {
        task: "automatic-speech-recognition",
        request: r#"{"type":"object","properties":{"audio":{"type":"string"},"array":{"type":"array","items":{"type":"number"}},"sampling_rate":{"type":"integer"},"return_timestamps":{"type":"boolean"}}}"#,
        response: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"},"chunks":{"type":"array"}}}"#,
        sample: audio,
        features: &["audio", "generation"],
        hint: "`skill_sdk::audio` (decoding, resampling, log-mel, Wav2Vec2) and `skill_sdk::seq2seq`.",
    },
    Task {
        task: "zero-shot-audio-classification",
        request: r#"{"type":"object","required":["candidate_labels"],"properties":{"audio":{"type":"string"},"array":{"type":"array","items":{"type":"number"}},"sampling_rate":{"type":"integer"},"candidate_labels":{"type":"array","items":{"type":"string"},"minItems":1}}}"#,
        response: LABELS_RESP,
        sample: || {
            let mut a = audio();
            a["candidate_labels"] = json!(["a tone", "speech"]);
            a
        },
        features: &["audio"],
        hint: "`skill_sdk::audio::clap`.",
    },
    Task {
        task: "audio-embedding",
        request: r#"{"type":"object","properties":{"audio":{"type":"string"},"array":{"type":"array","items":{"type":"number"}},"sampling_rate":{"type":"integer"}}}"#,
        response: EMBED_RESP,
        sample: audio,
        features: &["audio"],
        hint: "`skill_sdk::audio::wav2vec2`.",
    },
    Task {
        task: "video-classification",
        request: r#"{"type":"object","properties":{"frames":{"type":"array","items":{"type":"string"}},"video":{"type":"string"},"top_k":{"type":"integer","minimum":1}}}"#,
        response: LABELS_RESP,
        sample: || json!({"frames": [PIXEL_PNG, PIXEL_PNG]}),
        features: &["image"],
        hint: "`skill_sdk::vision::videomae`, `skill_sdk::image::frames`.",
    },
    Task {
        task: "image-text-to-text",
        request: r#"{"type":"object","properties":{"messages":{"type":"array"},"image":{"type":"string"},"prompt":{"type":"string"},"max_new_tokens":{"type":"integer"}}}"#,
        response: GEN_RESP,
        sample: || json!({"image": PIXEL_PNG, "prompt": "<image>What is this?", "max_new_tokens": 8}),
        features: &["image", "generation"],
        hint: "see guest-skills/text-generation (LLaVA, Qwen2-VL).",
    },
];

/// The tasks `host new` knows.
pub fn tasks() -> Vec<&'static str> {
    TASKS.iter().map(|t| t.task).collect()
}

/// This checkout's SDK, when the host runs from the checkout it was built in.
pub fn default_sdk_path() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("guest-skills")
        .join("skill-sdk");
    p.join("Cargo.toml")
        .is_file()
        .then(|| p.canonicalize().unwrap_or(p))
}

/// TOML string literal (basic string with escapes).
fn toml_str(s: &str) -> String {
    Value::from(s).to_string()
}

fn sdk_dependency(sdk: &SdkSource, features: &[&str]) -> (String, String) {
    let features = match features {
        [] => String::new(),
        f => format!(
            ", features = [{}]",
            f.iter().map(|x| toml_str(x)).collect::<Vec<_>>().join(", ")
        ),
    };
    match sdk {
        SdkSource::Path(p) => (
            format!(
                "skill-sdk = {{ path = {}{features} }}",
                toml_str(&p.display().to_string())
            ),
            "Taken as a path dependency on a checkout of the host's repository \
             (crates.io is the goal; `host new --sdk-git URL` or `--sdk-version` choose otherwise)."
                .into(),
        ),
        SdkSource::Git { url, rev } => (
            format!(
                "skill-sdk = {{ git = {}{}{features} }}",
                toml_str(url),
                rev.as_ref()
                    .map(|r| format!(", rev = {}", toml_str(r)))
                    .unwrap_or_default()
            ),
            "Taken from the host's git repository (crates.io is the goal).".into(),
        ),
        SdkSource::Version(v) => (
            format!("skill-sdk = {{ version = {}{features} }}", toml_str(v)),
            "Taken from the registry.".into(),
        ),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64
}

/// Writes the crate; returns the files written.
pub fn create(opts: &NewOptions) -> Result<Vec<PathBuf>, AuthoringError> {
    if !valid_name(&opts.name) {
        return Err(AuthoringError::Usage(format!(
            "skill name {:?}: use lower-case letters, digits and '-', starting with a letter",
            opts.name
        )));
    }
    let task = TASKS.iter().find(|t| t.task == opts.task).ok_or_else(|| {
        AuthoringError::Usage(format!(
            "unknown task `{}`; one of: {}",
            opts.task,
            tasks().join(", ")
        ))
    })?;
    if opts.dir.exists()
        && std::fs::read_dir(&opts.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(AuthoringError::Usage(format!(
            "{} exists and is not empty",
            opts.dir.display()
        )));
    }
    let (dependency, note) = sdk_dependency(&opts.sdk, task.features);
    let sample = (task.sample)();
    let fill = |template: &str| {
        template
            .replace("{{name}}", &opts.name)
            .replace("{{task}}", task.task)
            .replace("{{file}}", &opts.name.replace('-', "_"))
            .replace("{{sdk_dependency}}", &dependency)
            .replace("{{sdk_note}}", &note)
            .replace("{{request_schema}}", task.request)
            .replace("{{response_schema}}", task.response)
            .replace("{{sample_request}}", &sample.to_string())
            .replace("{{hint}}", task.hint)
    };
    let lib = match task.task {
        "text-classification" => include_str!("templates/text_classification.rs.in"),
        _ => include_str!("templates/skeleton.rs.in"),
    };
    let mut cases = format!("{}\n", json!({"name": "example", "request": sample}));
    if task.task == "text-classification" {
        cases.push_str(&format!(
            "{}\n",
            json!({"name": "best label only", "request": {"text": "Not good at all.", "top_k": 1}})
        ));
    }
    if task.request.contains("\"required\"") {
        cases.push_str(&format!(
            "{}\n",
            json!({"name": "empty request", "request": {}, "error": "invalid-request"})
        ));
    }
    let files: Vec<(&str, String)> = vec![
        ("Cargo.toml", fill(include_str!("templates/Cargo.toml.in"))),
        ("src/lib.rs", fill(lib)),
        ("tests/cases.jsonl", cases),
        ("README.md", fill(include_str!("templates/README.md.in"))),
        (".gitignore", include_str!("templates/gitignore.in").into()),
        (
            ".cargo/config.toml",
            include_str!("templates/cargo_config.toml.in").into(),
        ),
    ];
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = opts.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| AuthoringError::io("cannot create", parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| AuthoringError::io("cannot write", &path, e))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_has_valid_schemas_and_a_conforming_sample() {
        for t in TASKS {
            for s in [t.request, t.response] {
                let v: Value = serde_json::from_str(s).unwrap();
                assert!(jsonschema::meta::validate(&v).is_ok(), "{}", t.task);
            }
            let req: Value = serde_json::from_str(t.request).unwrap();
            let v = jsonschema::validator_for(&req).unwrap();
            assert!(v.is_valid(&(t.sample)()), "{}", t.task);
        }
    }

    #[test]
    fn writes_a_crate_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let opts = NewOptions {
            name: "my-skill".into(),
            task: "text-classification".into(),
            dir: dir.path().join("my-skill"),
            sdk: SdkSource::Git {
                url: "https://example.org/host.git".into(),
                rev: Some("abc".into()),
            },
        };
        let files = create(&opts).unwrap();
        assert_eq!(files.len(), 6);
        let config = std::fs::read_to_string(opts.dir.join(".cargo/config.toml")).unwrap();
        assert!(config.contains("[target.wasm32-wasip2]") && config.contains("+simd128"));
        let toml = std::fs::read_to_string(opts.dir.join("Cargo.toml")).unwrap();
        assert!(
            toml.contains("skill-sdk = { git = \"https://example.org/host.git\", rev = \"abc\" }")
        );
        assert!(toml.contains("name = \"my-skill\"") && toml.contains("[workspace]"));
        let lib = std::fs::read_to_string(opts.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("name: \"my-skill\".into()") && !lib.contains("{{"));
        let cases = std::fs::read_to_string(opts.dir.join("tests/cases.jsonl")).unwrap();
        let parsed = super::super::cases::parse(Path::new("c"), &cases).unwrap();
        assert_eq!(parsed.len(), 3);
        assert!(create(&opts).unwrap_err().to_string().contains("not empty"));
        let bad = NewOptions {
            name: "My Skill".into(),
            ..opts.clone()
        };
        assert!(create(&bad).is_err());
        let bad = NewOptions {
            task: "dancing".into(),
            dir: dir.path().join("x"),
            ..opts
        };
        assert!(create(&bad)
            .unwrap_err()
            .to_string()
            .contains("unknown task"));
    }
}
