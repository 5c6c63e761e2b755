//! Skill `video-classification`: labels of a short video, with the
//! semantics of transformers' `video-classification` pipeline, for
//! VideoMAE.
//!
//! Request: `{"frames": ["<base64 image>", ...]}` or `{"video": "<base64
//! animated GIF or WebP>"}`, `"top_k": 5`, `"function_to_apply"`
//! (`softmax` default). Response: `{"labels": [{"label", "score"}]}`, best
//! first. The clip is the first `num_frames` frames (the pipeline's
//! `np.linspace(0, num_frames - 1, num_frames)` at a sampling rate of 1);
//! fewer frames is an error. Each frame is decoded inside the sandbox and
//! preprocessed as the model's (Pillow-based) image processor does.

use std::cell::RefCell;

use skill_sdk::config::Json;
use skill_sdk::image::{self as img, Preprocess};
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::scores::{labels_answers, Function};
use skill_sdk::tensors::{f32_values, take};
use skill_sdk::vision::videomae::VideoMae;
use skill_sdk::{invalid, Error, Graph, Guest, NamedTensor, Response, SkillInfo, Tensor};

const DEFAULT_TOP_K: usize = 5;
/// Most frames a `frames` list may carry.
const MAX_FRAMES: usize = 256;

struct Loaded {
    pre: Preprocess,
    graph: CompiledGraph,
    labels: Vec<String>,
    frames: usize,
    positions: Tensor,
    default_function: Function,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

struct VideoRequest {
    frames: Vec<img::Rgb>,
    top_k: usize,
    function: Option<Function>,
}

struct VideoClassification;

impl Guest for VideoClassification {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "video-classification".into(),
            task: "video-classification".into(),
            architectures: vec!["videomae".into()],
            request_schema: r#"{"type":"object","properties":{"frames":{"type":"array","items":{"type":"string"}},"video":{"type":"string","description":"base64 animated GIF or WebP"},"top_k":{"type":"integer","minimum":1},"function_to_apply":{"enum":["softmax","sigmoid","none"]}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"labels":{"type":"array","items":{"type":"object","properties":{"label":{"type":"string"},"score":{"type":"number"}}}}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let model_type = config.str_or("model_type", "")?;
        if model_type != "videomae" {
            return Err(Error::Unsupported(format!(
                "model_type `{model_type}` is not served by video-classification (supported: videomae)"
            )));
        }
        let pre = Preprocess::read()?;
        let size = pre.output_size().ok_or_else(|| {
            Error::Unsupported(
                "video-classification needs a fixed frame size (a center crop)".into(),
            )
        })?;
        let g = Graph::new("videomae-video-classification");
        let model = VideoMae::load(&config, &g)?;
        let logits = model.logits(&g, size)?;
        let n = match g.b.info(logits)?.shape.last() {
            Some(skill_sdk::Dim::Fixed(n)) => *n,
            _ => return Err(skill_sdk::internal("classifier width")),
        };
        let labels = config.labels(n)?;
        let default_function = Function::default_for(&config, labels.len())?;
        let positions = model.positions(model.tubelets(size));
        let graph = g.compile(&[("logits", logits)])?;
        skill_sdk::state::set(
            &STATE,
            Loaded {
                pre,
                graph,
                labels,
                frames: model.frames as usize,
                positions,
                default_function,
            },
        );
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, classify)
    }
}

fn parse_request(req: Request) -> Result<VideoRequest, Error> {
    req.only(&["frames", "video", "top_k", "function_to_apply"])?;
    let top_k = match req.opt_u64("top_k")? {
        Some(0) => return Err(invalid("`top_k` must be at least 1")),
        k => k.map_or(DEFAULT_TOP_K, |k| k as usize),
    };
    let wanted = skill_sdk::state::with(&STATE, |l| Ok(l.frames))?;
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
    Ok(VideoRequest {
        frames,
        top_k,
        function: req
            .opt_str("function_to_apply")?
            .map(Function::parse)
            .transpose()?,
    })
}

fn classify(reqs: Vec<VideoRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        let mut pixels: Option<Tensor> = None;
        for r in &reqs {
            let clip = l.pre.batch(&r.frames)?;
            match pixels.as_mut() {
                None => {
                    let mut t = clip;
                    t.shape.insert(0, 1);
                    pixels = Some(t);
                }
                Some(p) => {
                    p.shape[0] += 1;
                    p.data.extend_from_slice(&clip.data);
                }
            }
        }
        let pixels = pixels.ok_or_else(|| skill_sdk::internal("empty batch"))?;
        let inputs = vec![
            NamedTensor {
                name: "pixel_values".into(),
                value: pixels,
            },
            NamedTensor {
                name: "position_embeddings".into(),
                value: l.positions.clone(),
            },
        ];
        let logits = f32_values(&take(l.graph.run(&inputs)?, "logits")?)?;
        let choices: Vec<(Function, usize)> = reqs
            .iter()
            .map(|r| (r.function.unwrap_or(l.default_function), r.top_k))
            .collect();
        labels_answers(&logits, &l.labels, &choices)
    })
}

skill_sdk::export_skill!(VideoClassification);
