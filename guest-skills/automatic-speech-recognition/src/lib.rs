//! Skill `automatic-speech-recognition`: transcripts of speech.
//!
//! - CTC models (Wav2Vec2ForCTC, HubertForCTC), as transformers' pipeline
//!   gives them: greedy (argmax) ids per frame, repeats grouped, the blank
//!   (pad) token dropped, the word delimiter (`|`) as a space, from the
//!   checkpoint's `vocab.json` ([`ctc`]). Each clip runs on its own (the
//!   group-norm encoders are not invariant to padding).
//! - Whisper (WhisperForConditionalGeneration): log-mel features, the
//!   encoder-decoder generation loop with Whisper's prompt, language
//!   detection, suppressed tokens and timestamp rules ([`whisper`]).
//!
//! Request: `{"audio": "<base64 WAV, FLAC, MP3 or OGG>"}` or `{"array": [f32],
//! "sampling_rate": 16000}`; Whisper also takes `language`, `task`,
//! `return_timestamps`, `prompt`, the fallback keys and generation keys.
//! Response: `{"text"}`, and for Whisper `"chunks": [{"text", "timestamp":
//! [start, end]}]` when timestamps are asked (segments, or words with
//! `"return_timestamps": "word"`), `"language"`, `"token_ids"`,
//! `"finish_reason"`, and `"attempts"` (each decoding attempt's
//! temperature, measures and verdict) when a fallback is set.

mod ctc;
mod whisper;

use std::cell::RefCell;

use skill_sdk::audio::{self, wav2vec2::Wav2Vec2};
use skill_sdk::config::Json;
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::tensors::{i64_values, take};
use skill_sdk::{invalid, Error, Graph, Guest, Response, SkillInfo};

/// A CTC model.
struct Ctc {
    graph: CompiledGraph,
    extractor: audio::Extractor,
    vocab: ctc::Vocab,
}

enum Loaded {
    Ctc(Ctc),
    Whisper(Box<whisper::Whisper>),
}

/// A parsed request.
enum Parsed {
    Ctc(audio::Audio),
    Whisper(Box<whisper::Job>),
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

struct Asr;

impl Guest for Asr {
    fn describe() -> SkillInfo {
        let mut architectures: Vec<String> = Wav2Vec2::MODEL_TYPES
            .iter()
            .map(|s| s.to_string())
            .collect();
        architectures.push("whisper".into());
        SkillInfo {
            name: "automatic-speech-recognition".into(),
            task: "automatic-speech-recognition".into(),
            architectures,
            request_schema: r#"{"type":"object","properties":{"audio":{"type":"string","description":"base64 WAV, FLAC, MP3 or OGG/Vorbis (resampled to the model rate)"},"array":{"type":"array","items":{"type":"number"}},"sampling_rate":{"type":"integer"},"language":{"type":"string"},"task":{"enum":["transcribe","translate"]},"return_timestamps":{"oneOf":[{"type":"boolean"},{"enum":["word"]}],"description":"Whisper: \"word\" gives timed words"},"prompt":{"type":"string","description":"Whisper: previous text (prompt_ids)"},"condition_on_prev_tokens":{"type":"boolean"},"prompt_condition_type":{"enum":["first-segment","all-segments"]},"temperature":{"oneOf":[{"type":"number"},{"type":"array","items":{"type":"number"}}],"description":"Whisper: a list falls back from one to the next"},"compression_ratio_threshold":{"type":"number"},"logprob_threshold":{"type":"number"},"no_speech_threshold":{"type":"number"},"seed":{"type":"integer"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"text":{"type":"string"},"chunks":{"type":"array"}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The defaults (512 MiB, 5e10 fuel per call): decoding inputs
            // (images, audio) may need them (docs/skills.md).
            limits: None,
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let loaded = match config.str_or("model_type", "")? {
            "whisper" => Loaded::Whisper(Box::new(whisper::Whisper::load(&config)?)),
            _ => Loaded::Ctc(load_ctc(&config)?),
        };
        skill_sdk::state::set(&STATE, loaded);
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse, run)
    }
}

fn load_ctc(config: &Json) -> Result<Ctc, Error> {
    let extractor = audio::Extractor::read()?;
    let g = Graph::new("speech-ctc");
    let model = Wav2Vec2::load(config, &g)?;
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
    let vocab = ctc::Vocab::load(config)?;
    Ok(Ctc {
        graph,
        extractor,
        vocab,
    })
}

fn parse(req: Request) -> Result<Parsed, Error> {
    skill_sdk::state::with(&STATE, |l: &Loaded| match l {
        Loaded::Whisper(w) => {
            let a = audio::from_request(&req, w.mel.rate)?;
            Ok(Parsed::Whisper(Box::new(w.parse(&req, &a.samples)?)))
        }
        Loaded::Ctc(c) => parse_ctc(&req, c.extractor.rate).map(Parsed::Ctc),
    })
}

fn parse_ctc(req: &Request, rate: u32) -> Result<audio::Audio, Error> {
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
    audio::from_request(req, rate)
}

fn run(reqs: Vec<Parsed>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l: &Loaded| match l {
        Loaded::Whisper(w) => {
            let jobs: Vec<whisper::Job> = reqs
                .into_iter()
                .filter_map(|p| match p {
                    Parsed::Whisper(j) => Some(*j),
                    Parsed::Ctc(_) => None,
                })
                .collect();
            whisper::transcribe(w, &jobs)
        }
        Loaded::Ctc(c) => Ok(reqs
            .iter()
            .map(|p| match p {
                Parsed::Ctc(a) => transcribe_ctc(c, a),
                Parsed::Whisper(_) => Err(skill_sdk::internal("a Whisper request for a CTC model")),
            })
            .collect()),
    })
}

fn transcribe_ctc(c: &Ctc, a: &audio::Audio) -> Result<Response, Error> {
    let inputs = c.extractor.inputs(a);
    let ids = i64_values(&take(c.graph.run(&inputs)?, "ids")?)?;
    Ok(Response {
        json: serde_json::json!({ "text": c.vocab.decode(&ids) }).to_string(),
        tensors: Vec::new(),
    })
}

skill_sdk::export_skill!(Asr);
