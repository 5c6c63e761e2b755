//! Skill `automatic-speech-recognition`: transcripts of speech with CTC
//! models (Wav2Vec2ForCTC, HubertForCTC), as transformers' pipeline gives
//! them: greedy (argmax) ids per frame, repeats grouped, the blank (pad)
//! token dropped, the word delimiter (`|`) as a space, from the
//! checkpoint's `vocab.json`.
//!
//! Request: `{"audio": "<base64 WAV>"}` or `{"array": [f32],
//! "sampling_rate": 16000}`. Response: `{"text"}`. Timestamps are not
//! supported for CTC yet (`return_timestamps` is refused). Each clip runs
//! on its own (the group-norm encoders are not invariant to padding).

mod ctc;

use std::cell::RefCell;

use skill_sdk::audio::{self, wav2vec2::Wav2Vec2};
use skill_sdk::config::Json;
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::tensors::{i64_values, take};
use skill_sdk::{invalid, Error, Graph, Guest, Response, SkillInfo};

struct Loaded {
    graph: CompiledGraph,
    extractor: audio::Extractor,
    vocab: ctc::Vocab,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

struct Asr;

impl Guest for Asr {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "automatic-speech-recognition".into(),
            task: "automatic-speech-recognition".into(),
            architectures: Wav2Vec2::MODEL_TYPES.iter().map(|s| s.to_string()).collect(),
            request_schema: r#"{"type":"object","properties":{"audio":{"type":"string","description":"base64 WAV"},"array":{"type":"array","items":{"type":"number"}},"sampling_rate":{"type":"integer"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"text":{"type":"string"}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let extractor = audio::Extractor::read()?;
        let g = Graph::new("speech-ctc");
        let model = Wav2Vec2::load(&config, &g)?;
        if !g.has("lm_head.weight") {
            return Err(Error::Unsupported(format!(
                "the checkpoint has no CTC head (a {}ForCTC model is needed)",
                model.model_type
            )));
        }
        let hidden = model.hidden(&g)?;
        let logits = g.linear(hidden, "lm_head")?;
        let ids = g.b.argmax(logits, -1, false)?;
        let graph = g.compile(&[("ids", ids)])?;
        let vocab = ctc::Vocab::load(&config)?;
        skill_sdk::state::set(
            &STATE,
            Loaded {
                graph,
                extractor,
                vocab,
            },
        );
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse, transcribe)
    }
}

fn parse(req: Request) -> Result<audio::Audio, Error> {
    req.only(&[
        "audio",
        "array",
        "sampling_rate",
        "return_timestamps",
        "language",
        "task",
    ])?;
    if req
        .0
        .get("return_timestamps")
        .is_some_and(|v| v != &serde_json::Value::Bool(false))
    {
        return Err(Error::Unsupported(
            "timestamps are not supported for CTC models yet".into(),
        ));
    }
    if req.0.get("language").is_some_and(|v| !v.is_null())
        || req.0.get("task").is_some_and(|v| !v.is_null())
    {
        return Err(invalid("`language` and `task` apply to Whisper; a CTC model transcribes what it was trained on"));
    }
    let rate = skill_sdk::state::with(&STATE, |l| Ok(l.extractor.rate))?;
    audio::from_request(&req, rate)
}

fn transcribe(reqs: Vec<audio::Audio>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        Ok(reqs
            .iter()
            .map(|a| {
                let inputs = l.extractor.inputs(a);
                let ids = i64_values(&take(l.graph.run(&inputs)?, "ids")?)?;
                Ok(Response {
                    json: serde_json::json!({ "text": l.vocab.decode(&ids) }).to_string(),
                    tensors: Vec::new(),
                })
            })
            .collect())
    })
}

skill_sdk::export_skill!(Asr);
