//! Skill `audio-embedding`: one vector per audio clip, the mean over
//! frames of a speech encoder's last hidden state (Wav2Vec2, HuBERT; base
//! or CTC checkpoints).
//!
//! Request: `{"audio": "<base64 WAV, FLAC, MP3 or OGG>"}` or `{"array": [f32],
//! "sampling_rate": 16000}`. Response: `{"embedding": [f32]}`.
//! Audio is decoded inside the sandbox and normalised as the model's
//! feature extractor does (`do_normalize`). Each clip runs on its own (the
//! group-norm encoders are not invariant to padding).

use std::cell::RefCell;

use skill_sdk::audio::{self, wav2vec2::Wav2Vec2};
use skill_sdk::config::Json;
use skill_sdk::graph::ReduceOp;
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::tensors::{f32_values, take};
use skill_sdk::{Error, Graph, Guest, Response, SkillInfo};

struct Loaded {
    graph: CompiledGraph,
    extractor: audio::Extractor,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

struct AudioEmbedding;

impl Guest for AudioEmbedding {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "audio-embedding".into(),
            task: "audio-embedding".into(),
            architectures: Wav2Vec2::MODEL_TYPES.iter().map(|s| s.to_string()).collect(),
            request_schema: r#"{"type":"object","properties":{"audio":{"type":"string","description":"base64 WAV, FLAC, MP3 or OGG/Vorbis (resampled to the model rate)"},"array":{"type":"array","items":{"type":"number"}},"sampling_rate":{"type":"integer"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"embedding":{"type":"array","items":{"type":"number"}}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The defaults (512 MiB, 5e10 fuel per call): decoding inputs
            // (images, audio) may need them (docs/skills.md).
            limits: None,
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let extractor = audio::Extractor::read()?;
        let g = Graph::new("speech-embedding");
        let model = Wav2Vec2::load(&config, &g)?;
        let hidden = model.hidden(&g)?;
        let mean = g.reduce(ReduceOp::Mean, hidden, &[1], false)?;
        let graph = g.compile(&[("embedding", mean)])?;
        skill_sdk::state::set(&STATE, Loaded { graph, extractor });
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse, embed)
    }
}

fn parse(req: Request) -> Result<audio::Audio, Error> {
    req.only(&["audio", "array", "sampling_rate"])?;
    let rate = skill_sdk::state::with(&STATE, |l| Ok(l.extractor.rate))?;
    audio::from_request(&req, rate)
}

fn embed(reqs: Vec<audio::Audio>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        Ok(reqs
            .iter()
            .map(|a| {
                let inputs = l.extractor.inputs(a);
                let e = f32_values(&take(l.graph.run(&inputs)?, "embedding")?)?;
                Ok(Response {
                    json: serde_json::json!({ "embedding": e }).to_string(),
                    tensors: Vec::new(),
                })
            })
            .collect())
    })
}

skill_sdk::export_skill!(AudioEmbedding);
