//! Skill `multimodal-embedding`: an embedding of a text, an image or a
//! sound in a two-tower model's shared projection space, as transformers'
//! `get_text_features` / `get_image_features` / `get_audio_features`
//! return them:
//!
//! - CLIP: texts and images, not normalised (compare with cosine);
//! - CLAP: texts and audio, L2-normalised (CLAP's `get_*_features`
//!   normalise). Audio features follow `skill_sdk::audio::clap_features`
//!   (each clip extracted on its own, deterministic where transformers
//!   draws random numbers).
//!
//! Request: `{"text": "..."}`, `{"image": "<base64 or data URL>"}` or
//! `{"audio": "<base64 WAV, FLAC, MP3 or OGG>"}` (or `{"array": [...], "sampling_rate": n}`).
//! Response: `{"embedding": [...]}` (plus `"tokens"` and `"truncated"`
//! for texts, longer ones cut at the text tower's positions). Inputs of one
//! kind in a batch run through their tower together. So an endpoint
//! answers OpenAI's `/v1/embeddings` for texts as well.

use std::cell::RefCell;

use skill_sdk::audio::clap;
use skill_sdk::config::Json;
use skill_sdk::image as img;
use skill_sdk::requests::Request;
use skill_sdk::tensors::{split_rows, take};
use skill_sdk::vision::clip::{self, Output};
use skill_sdk::{invalid, Error, Guest, NamedTensor, Response, SkillInfo, Tensor};

/// The loaded model: CLIP (text and images) or CLAP (text and audio).
enum Model {
    Clip(clip::Loaded),
    Clap(Box<clap::Loaded>),
}

thread_local! {
    static STATE: RefCell<Option<Model>> = const { RefCell::new(None) };
}

enum Input {
    Text(String),
    Image(img::Rgb),
    Audio(Vec<f32>),
}

struct MultimodalEmbedding;

impl Guest for MultimodalEmbedding {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "multimodal-embedding".into(),
            task: "multimodal-embedding".into(),
            architectures: vec!["clip".into(), "clap".into()],
            request_schema: r#"{"type":"object","oneOf":[{"required":["text"]},{"required":["image"]},{"required":["audio"]},{"required":["array","sampling_rate"]}],"properties":{"text":{"type":"string"},"image":{"type":"string"},"audio":{"type":"string"},"array":{"type":"array","items":{"type":"number"}},"sampling_rate":{"type":"integer"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"embedding":{"type":"array","items":{"type":"number"}}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The defaults (512 MiB, 5e10 fuel per call): decoding inputs
            // (images, audio) may need them (docs/skills.md).
            limits: None,
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let model = match config.str_or("model_type", "")? {
            "clap" => Model::Clap(Box::new(clap::Loaded::with(
                clap::Clap::load(&config)?,
                Output::Features,
                "embedding",
            )?)),
            _ => Model::Clip(clip::Loaded::open(Output::Features, "embedding")?),
        };
        skill_sdk::state::set(&STATE, model);
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, embed)
    }
}

fn parse_request(req: Request) -> Result<Input, Error> {
    req.only(&["text", "image", "audio", "array", "sampling_rate"])?;
    let sound = req.0.contains_key("audio") || req.0.contains_key("array");
    let given = [
        req.0.contains_key("text"),
        req.0.contains_key("image"),
        sound,
    ];
    if given.iter().filter(|&&g| g).count() != 1 {
        return Err(invalid(
            "send one of `text`, `image` or `audio` (or `array` with `sampling_rate`)",
        ));
    }
    let audio_rate = skill_sdk::state::with(&STATE, |m| {
        Ok(match m {
            Model::Clap(l) => Some(l.features.rate),
            Model::Clip(_) => None,
        })
    })?;
    match (req.opt_str("text")?, sound, audio_rate) {
        (Some(t), _, _) => Ok(Input::Text(t.to_string())),
        (None, true, Some(rate)) => Ok(Input::Audio(
            skill_sdk::audio::from_request(&req, rate)?.samples,
        )),
        (None, true, None) => Err(invalid(
            "this model (CLIP) embeds texts and images, not audio",
        )),
        (None, false, Some(_)) => Err(invalid(
            "this model (CLAP) embeds texts and audio, not images",
        )),
        (None, false, None) => Ok(Input::Image(img::from_base64("image", req.str("image")?)?)),
    }
}

fn response(row: Tensor, json: String) -> Result<Response, Error> {
    Ok(Response {
        json,
        tensors: vec![NamedTensor {
            name: "embedding".into(),
            value: row,
        }],
    })
}

/// The requests' positions and inputs of each kind.
#[derive(Default)]
struct Split {
    texts: (Vec<usize>, Vec<String>),
    images: (Vec<usize>, Vec<img::Rgb>),
    clips: (Vec<usize>, Vec<Vec<f32>>),
}

fn embed(reqs: Vec<Input>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |m| {
        let mut out: Vec<Option<Result<Response, Error>>> = (0..reqs.len()).map(|_| None).collect();
        let mut s = Split::default();
        for (i, r) in reqs.into_iter().enumerate() {
            match r {
                Input::Text(t) => (s.texts.0.push(i), s.texts.1.push(t)),
                Input::Image(im) => (s.images.0.push(i), s.images.1.push(im)),
                Input::Audio(a) => (s.clips.0.push(i), s.clips.1.push(a)),
            };
        }
        if !s.texts.1.is_empty() {
            let (enc, outputs) = match m {
                Model::Clip(l) => {
                    let enc = l.tokenizer.encode_batch(&s.texts.1)?;
                    let inputs = l.clip.text_inputs(&enc)?;
                    (enc, l.text.run(&inputs)?)
                }
                Model::Clap(l) => {
                    let enc = l.tokenizer.encode_batch(&s.texts.1)?;
                    let inputs = l.clap.text.inputs(&enc);
                    (enc, l.text.run(&inputs)?)
                }
            };
            let rows = split_rows(&take(outputs, "embedding")?)?;
            for (k, row) in rows.into_iter().enumerate() {
                let json = format!(
                    r#"{{"tokens":{},"truncated":{}}}"#,
                    enc.lengths[k], enc.truncated[k]
                );
                out[s.texts.0[k]] = Some(response(row, json));
            }
        }
        if let (Model::Clip(l), false) = (m, s.images.1.is_empty()) {
            let pixels = NamedTensor {
                name: "pixel_values".into(),
                value: l.pre.batch(&s.images.1)?,
            };
            let rows = split_rows(&take(l.image.run(&[pixels])?, "embedding")?)?;
            for (k, row) in rows.into_iter().enumerate() {
                out[s.images.0[k]] = Some(response(row, "{}".into()));
            }
        }
        if let (Model::Clap(l), false) = (m, s.clips.1.is_empty()) {
            let clips: Vec<&[f32]> = s.clips.1.iter().map(Vec::as_slice).collect();
            let rows = split_rows(&take(l.audio.run(&l.audio_inputs(&clips)?)?, "embedding")?)?;
            for (k, row) in rows.into_iter().enumerate() {
                out[s.clips.0[k]] = Some(response(row, "{}".into()));
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(skill_sdk::internal("request lost"))))
            .collect())
    })
}

skill_sdk::export_skill!(MultimodalEmbedding);
