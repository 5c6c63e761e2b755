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
//! through the text tower once, unless an earlier call embedded it
//! (`TextCache`). The towers' outputs are unit vectors (the
//! text ones times exp(`logit_scale_a`)), so the logits are their dot
//! products.

use std::cell::RefCell;

use skill_sdk::audio::clap::{Loaded, Output};
use skill_sdk::requests::Request;
use skill_sdk::scores::{distinct_hypotheses, zero_shot_answers, Candidates, TextCache};
use skill_sdk::tensors::{f32_values, take};
use skill_sdk::{Error, Guest, Response, SkillInfo};

const DEFAULT_TEMPLATE: &str = "This is a sound of {}.";

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
    static TEXTS: RefCell<TextCache> = RefCell::new(TextCache::default());
}

struct ZeroShotRequest {
    samples: Vec<f32>,
    candidates: Candidates,
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
            // The defaults (512 MiB, 5e10 fuel per call): decoding inputs
            // (images, audio) may need them (docs/skills.md).
            limits: None,
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
    let candidates = Candidates::read(&req, DEFAULT_TEMPLATE)?;
    let rate = skill_sdk::state::with(&STATE, |l| Ok(l.features.rate))?;
    let audio = skill_sdk::audio::from_request(&req, rate)?;
    Ok(ZeroShotRequest {
        samples: audio.samples,
        candidates,
    })
}

fn classify(reqs: Vec<ZeroShotRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        // Audio embeddings [n, d].
        let clips: Vec<&[f32]> = reqs.iter().map(|r| r.samples.as_slice()).collect();
        let audio = f32_values(&take(l.audio.run(&l.audio_inputs(&clips)?)?, "embeds")?)?;
        let batch: Vec<&Candidates> = reqs.iter().map(|r| &r.candidates).collect();
        let (texts, index) = distinct_hypotheses(batch.iter().copied());
        let text = TEXTS.with(|cache| {
            cache.borrow_mut().embed(&texts, |missing| {
                let enc = l.tokenizer.encode_batch(missing)?;
                f32_values(&take(l.text.run(&l.clap.text.inputs(&enc))?, "embeds")?)
            })
        })?;
        zero_shot_answers(&audio, &text, &index, &batch)
    })
}

skill_sdk::export_skill!(ZeroShotAudio);
