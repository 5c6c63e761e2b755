//! Skill `zero-shot-audio-classification`: how well each candidate label
//! describes a sound, with the semantics of transformers'
//! `zero-shot-audio-classification` pipeline, for CLAP.
//!
//! Request: `{"audio": "<base64 WAV, FLAC, MP3 or OGG>", "candidate_labels": ["a dog", "rain"],
//! "hypothesis_template": "This is a sound of {}."}` (or `{"array": [...],
//! "sampling_rate": n}` in place of `audio`, at the extractor's rate).
//! Response: `{"labels": [{"label", "score"}]}`, best first (ties keep the
//! given order): the softmax over the labels of `logits_per_audio`.
//!
//! Each clip's features are extracted on its own (as the pipeline does;
//! see `skill_sdk::audio::clap_features` for the deterministic choices
//! where transformers draws random numbers), clips of a batch run through
//! the audio tower together, and every distinct hypothesis of the batch
//! through the text tower once. The towers' outputs are unit vectors (the
//! text ones times exp(`logit_scale_a`)), so the logits are their dot
//! products.

use std::cell::RefCell;
use std::collections::HashMap;

use skill_sdk::audio::clap::{Loaded, Output};
use skill_sdk::requests::Request;
use skill_sdk::scores::{ranked, Function};
use skill_sdk::tensors::{f32_values, take};
use skill_sdk::{invalid, Error, Guest, Response, SkillInfo};

const DEFAULT_TEMPLATE: &str = "This is a sound of {}.";

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

struct ZeroShotRequest {
    samples: Vec<f32>,
    labels: Vec<String>,
    /// One hypothesis per label.
    hypotheses: Vec<String>,
}

struct ZeroShotAudio;

impl Guest for ZeroShotAudio {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "zero-shot-audio-classification".into(),
            task: "zero-shot-audio-classification".into(),
            architectures: vec!["clap".into()],
            request_schema: r#"{"type":"object","required":["candidate_labels"],"oneOf":[{"required":["audio"]},{"required":["array","sampling_rate"]}],"properties":{"audio":{"type":"string"},"array":{"type":"array","items":{"type":"number"}},"sampling_rate":{"type":"integer"},"candidate_labels":{"type":"array","items":{"type":"string"},"minItems":1},"hypothesis_template":{"type":"string"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"labels":{"type":"array","items":{"type":"object","properties":{"label":{"type":"string"},"score":{"type":"number"}}}}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn load() -> Result<(), Error> {
        skill_sdk::state::set(&STATE, Loaded::open(Output::Logits, "embeds")?);
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, classify)
    }
}

fn parse_request(req: Request) -> Result<ZeroShotRequest, Error> {
    req.only(&[
        "audio",
        "array",
        "sampling_rate",
        "candidate_labels",
        "hypothesis_template",
    ])?;
    let labels = req
        .opt_strings("candidate_labels")?
        .filter(|l| !l.is_empty())
        .ok_or_else(|| invalid("`candidate_labels` must be a non-empty list of strings"))?;
    let template = req
        .opt_str("hypothesis_template")?
        .unwrap_or(DEFAULT_TEMPLATE);
    let rate = skill_sdk::state::with(&STATE, |l| Ok(l.features.rate))?;
    let audio = skill_sdk::audio::from_request(&req, rate)?;
    Ok(ZeroShotRequest {
        samples: audio.samples,
        hypotheses: labels.iter().map(|l| template.replace("{}", l)).collect(),
        labels,
    })
}

fn classify(reqs: Vec<ZeroShotRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        // Audio embeddings [n, d].
        let clips: Vec<&[f32]> = reqs.iter().map(|r| r.samples.as_slice()).collect();
        let audio = f32_values(&take(l.audio.run(&l.audio_inputs(&clips)?)?, "embeds")?)?;
        // Every distinct hypothesis once.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut texts: Vec<String> = Vec::new();
        for h in reqs.iter().flat_map(|r| &r.hypotheses) {
            if !index.contains_key(h.as_str()) {
                index.insert(h, texts.len());
                texts.push(h.clone());
            }
        }
        let enc = l.tokenizer.encode_batch(&texts)?;
        let text = f32_values(&take(l.text.run(&l.clap.text.inputs(&enc))?, "embeds")?)?;
        let d = audio.len() / reqs.len().max(1);
        if d == 0 || text.len() != texts.len() * d {
            return Err(skill_sdk::internal("embedding sizes do not match"));
        }
        Ok(reqs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let a = &audio[i * d..(i + 1) * d];
                let logits: Vec<f32> = r
                    .hypotheses
                    .iter()
                    .map(|h| {
                        let k = index[h.as_str()];
                        let t = &text[k * d..(k + 1) * d];
                        a.iter().zip(t).map(|(x, y)| x * y).sum()
                    })
                    .collect();
                let scores = Function::Softmax.apply(&logits);
                let labels: Vec<serde_json::Value> = ranked(&scores, scores.len())
                    .into_iter()
                    .map(|k| serde_json::json!({"label": r.labels[k], "score": scores[k]}))
                    .collect();
                Ok(Response {
                    json: serde_json::json!({ "labels": labels }).to_string(),
                    tensors: Vec::new(),
                })
            })
            .collect())
    })
}

skill_sdk::export_skill!(ZeroShotAudio);
