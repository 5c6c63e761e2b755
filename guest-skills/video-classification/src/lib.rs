//! Skill `video-classification`: labels of a short video, with the
//! semantics of transformers' `video-classification` pipeline for VideoMAE
//! (a classification head, [`videomae`]) and zero-shot over
//! `candidate_labels` for X-CLIP ([`xclip`]).
//!
//! Request: `{"frames": ["<base64 image>", ...]}` or `{"video": "<base64
//! animated GIF or WebP>"}`; VideoMAE takes `"top_k": 5` and
//! `"function_to_apply"` (`softmax` default), X-CLIP `"candidate_labels"`
//! (required), `"hypothesis_template"` (`"{}"`) and `"top_k"` (default:
//! every label). Response: `{"labels": [{"label", "score"}]}`, best first.
//!
//! Frames: a model takes clips of exactly `num_frames` frames (its config).
//! The clip is the first `num_frames` frames of the list or the animation
//! (the pipeline's `np.linspace(0, num_frames - 1, num_frames)` at a
//! sampling rate of 1; later frames are not decoded); fewer frames is an
//! `invalid-request` error, as is a list of more than 256. Each frame is
//! decoded inside the sandbox and preprocessed as the model's
//! (Pillow-based) image processor does.

mod videomae;
mod xclip;

use std::cell::RefCell;

use skill_sdk::config::Json;
use skill_sdk::image::{self as img, Preprocess};
use skill_sdk::requests::Request;
use skill_sdk::{invalid, Error, Guest, Response, SkillInfo, Tensor};

/// Most frames a `frames` list may carry.
const MAX_FRAMES: usize = 256;

enum Loaded {
    VideoMae(videomae::Loaded),
    XClip(xclip::Loaded),
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

/// Runs `f` on a loaded VideoMAE model.
fn with_videomae<R>(f: impl FnOnce(&videomae::Loaded) -> Result<R, Error>) -> Result<R, Error> {
    skill_sdk::state::with(&STATE, |l| match l {
        Loaded::VideoMae(m) => f(m),
        Loaded::XClip(_) => Err(skill_sdk::internal("the loaded model is X-CLIP")),
    })
}

/// Runs `f` on a loaded X-CLIP model.
fn with_xclip<R>(f: impl FnOnce(&xclip::Loaded) -> Result<R, Error>) -> Result<R, Error> {
    skill_sdk::state::with(&STATE, |l| match l {
        Loaded::XClip(m) => f(m),
        Loaded::VideoMae(_) => Err(skill_sdk::internal("the loaded model is VideoMAE")),
    })
}

/// The clip of a request: the first `wanted` frames of `frames` (a list of
/// images) or `video` (an animated GIF or WebP).
fn clip_frames(req: &Request, wanted: usize) -> Result<Vec<img::Rgb>, Error> {
    let frames = match (req.opt_strings("frames")?, req.opt_str("video")?) {
        (Some(list), None) => {
            if list.len() > MAX_FRAMES {
                return Err(invalid(format!(
                    "at most {MAX_FRAMES} frames, got {}",
                    list.len()
                )));
            }
            list.iter()
                .take(wanted)
                .enumerate()
                .map(|(i, f)| img::from_base64(&format!("frames[{i}]"), f))
                .collect::<Result<Vec<_>, _>>()?
        }
        (None, Some(v)) => {
            img::frames::animation_frames("video", &img::base64_bytes("video", v)?, wanted)?
        }
        _ => {
            return Err(invalid(
                "give either `frames` (a list of images) or `video` (an animated GIF or WebP)",
            ))
        }
    };
    if frames.len() < wanted {
        return Err(invalid(format!(
            "the model takes clips of {wanted} frames; got {}",
            frames.len()
        )));
    }
    Ok(frames)
}

/// `pixel_values` [clips, frames, channels, height, width] of a batch of
/// clips of equally many frames.
fn stack_clips(pre: &Preprocess, clips: &[&[img::Rgb]]) -> Result<Tensor, Error> {
    let mut pixels: Option<Tensor> = None;
    for frames in clips {
        let clip = pre.batch(frames)?;
        match pixels.as_mut() {
            None => {
                let mut t = clip;
                t.shape.insert(0, 1);
                pixels = Some(t);
            }
            Some(p) => {
                if p.shape[1..] != clip.shape[..] {
                    return Err(skill_sdk::internal("clips of different shapes"));
                }
                p.shape[0] += 1;
                p.data.extend_from_slice(&clip.data);
            }
        }
    }
    pixels.ok_or_else(|| skill_sdk::internal("empty batch"))
}

struct VideoClassification;

impl Guest for VideoClassification {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "video-classification".into(),
            task: "video-classification".into(),
            architectures: vec!["videomae".into(), "xclip".into()],
            request_schema: r#"{"type":"object","properties":{"frames":{"type":"array","items":{"type":"string"}},"video":{"type":"string","description":"base64 animated GIF or WebP"},"top_k":{"type":"integer","minimum":1},"function_to_apply":{"enum":["softmax","sigmoid","none"],"description":"models with a classification head"},"candidate_labels":{"type":"array","items":{"type":"string"},"minItems":1,"description":"zero-shot models (X-CLIP): required"},"hypothesis_template":{"type":"string","description":"zero-shot models; default \"{}\""},"return_logits":{"type":"boolean"},"return_embeddings":{"type":"boolean"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"labels":{"type":"array","items":{"type":"object","properties":{"label":{"type":"string"},"score":{"type":"number"}}}}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The defaults (512 MiB, 5e10 fuel per call): decoding inputs
            // (images, audio) may need them (docs/skills.md).
            limits: None,
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let loaded = match config.str_or("model_type", "")? {
            "videomae" => Loaded::VideoMae(videomae::Loaded::open(&config)?),
            "xclip" => Loaded::XClip(xclip::Loaded::open(&config)?),
            other => {
                return Err(Error::Unsupported(format!(
                    "model_type `{other}` is not served by video-classification (supported: videomae, xclip)"
                )))
            }
        };
        skill_sdk::state::set(&STATE, loaded);
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        let zero_shot = skill_sdk::state::with(&STATE, |l| Ok(matches!(l, Loaded::XClip(_))));
        match zero_shot {
            Ok(true) => skill_sdk::requests::serve(batch, xclip::parse, xclip::classify),
            Ok(false) => skill_sdk::requests::serve(batch, videomae::parse, videomae::classify),
            Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
        }
    }
}

skill_sdk::export_skill!(VideoClassification);
