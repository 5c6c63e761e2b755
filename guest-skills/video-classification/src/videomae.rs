//! VideoMAE with a classification head: the clip's logits through
//! `function_to_apply` (softmax by default, as the config says), `top_k`
//! labels of the config's `id2label`.

use skill_sdk::config::Json;
use skill_sdk::image::{self as img, Preprocess};
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::scores::{labels_answers, Function};
use skill_sdk::tensors::{f32_values, take};
use skill_sdk::vision::videomae::VideoMae;
use skill_sdk::{invalid, Error, Graph, NamedTensor, Response, Tensor};

use crate::{clip_frames, stack_clips, with_videomae};

const DEFAULT_TOP_K: usize = 5;

/// A loaded VideoMAE classifier.
pub struct Loaded {
    pre: Preprocess,
    graph: CompiledGraph,
    labels: Vec<String>,
    pub frames: usize,
    positions: Tensor,
    default_function: Function,
}

/// One parsed request.
pub struct VideoRequest {
    frames: Vec<img::Rgb>,
    top_k: usize,
    function: Option<Function>,
}

impl Loaded {
    pub fn open(config: &Json) -> Result<Loaded, Error> {
        let pre = Preprocess::read()?;
        let size = pre.output_size().ok_or_else(|| {
            Error::Unsupported(
                "video-classification needs a fixed frame size (a center crop)".into(),
            )
        })?;
        let g = Graph::new("videomae-video-classification");
        let model = VideoMae::load(config, &g)?;
        let logits = model.logits(&g, size)?;
        let n = match g.b.info(logits)?.shape.last() {
            Some(skill_sdk::Dim::Fixed(n)) => *n,
            _ => return Err(skill_sdk::internal("classifier width")),
        };
        let labels = config.labels(n)?;
        let default_function = Function::default_for(config, labels.len())?;
        let positions = model.positions(model.tubelets(size));
        let graph = g.compile(&[("logits", logits)])?;
        Ok(Loaded {
            pre,
            graph,
            labels,
            frames: model.frames as usize,
            positions,
            default_function,
        })
    }
}

pub fn parse(req: Request) -> Result<VideoRequest, Error> {
    if req.0.contains_key("candidate_labels") {
        return Err(invalid(
            "`candidate_labels` is for zero-shot models (X-CLIP); this VideoMAE model has its own labels",
        ));
    }
    req.only(&["frames", "video", "top_k", "function_to_apply"])?;
    let top_k = match req.opt_u64("top_k")? {
        Some(0) => return Err(invalid("`top_k` must be at least 1")),
        k => k.map_or(DEFAULT_TOP_K, |k| k as usize),
    };
    let wanted = with_videomae(|l| Ok(l.frames))?;
    Ok(VideoRequest {
        frames: clip_frames(&req, wanted)?,
        top_k,
        function: req
            .opt_str("function_to_apply")?
            .map(Function::parse)
            .transpose()?,
    })
}

pub fn classify(reqs: Vec<VideoRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    with_videomae(|l| {
        let clips: Vec<&[img::Rgb]> = reqs.iter().map(|r| r.frames.as_slice()).collect();
        let inputs = vec![
            NamedTensor {
                name: "pixel_values".into(),
                value: stack_clips(&l.pre, &clips)?,
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
