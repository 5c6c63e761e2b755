//! Skill `image-classification`: labels of an image, with the semantics of
//! transformers' `image-classification` pipeline, for ViT, DeiT (a
//! distilled DeiT averages its class and distillation heads), Swin and
//! ConvNeXt.
//!
//! Request: `{"image": "<base64 or data URL>", "top_k": 5,
//! "function_to_apply": "softmax" | "sigmoid" | "none"}`. Response:
//! `{"labels": [{"label", "score"}]}`, best first, at most `top_k` (default
//! 5, capped at the label count).
//!
//! The image is decoded inside the sandbox (PNG, JPEG with its EXIF
//! orientation, WebP, GIF's first frame, BMP; at most
//! `skill_sdk::image::MAX_PIXELS` pixels) and preprocessed as the model's
//! slow (Pillow-based) transformers image processor does, from its
//! `preprocessor_config.json`: Pillow's resize reproduced exactly, center
//! crop, rescale, normalize. A bad image fails its own request only.

use std::cell::RefCell;

use skill_sdk::config::Json;
use skill_sdk::image::{self as img, Preprocess};
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::scores::{labels_answers, Function};
use skill_sdk::tensors::{f32_values, take};
use skill_sdk::vision::convnext::ConvNext;
use skill_sdk::vision::swin::Swin;
use skill_sdk::vision::{self, Vit};
use skill_sdk::{invalid, Error, Graph, Guest, NamedTensor, Response, SkillInfo};

const DEFAULT_TOP_K: usize = 5;

struct Loaded {
    pre: Preprocess,
    graph: CompiledGraph,
    labels: Vec<String>,
    default_function: Function,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

struct ImageRequest {
    image: img::Rgb,
    top_k: usize,
    function: Option<Function>,
}

struct ImageClassification;

impl Guest for ImageClassification {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "image-classification".into(),
            task: "image-classification".into(),
            architectures: vision::model_types().iter().map(|s| s.to_string()).collect(),
            request_schema: r#"{"type":"object","required":["image"],"properties":{"image":{"type":"string","description":"base64 or a data: URL"},"top_k":{"type":"integer","minimum":1},"function_to_apply":{"enum":["softmax","sigmoid","none"]}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"labels":{"type":"array","items":{"type":"object","properties":{"label":{"type":"string"},"score":{"type":"number"}}}}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The defaults (512 MiB, 5e10 fuel per call): decoding inputs
            // (images, audio) may need them (docs/skills.md).
            limits: None,
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let pre = Preprocess::read()?;
        let size = pre.output_size().ok_or_else(|| {
            Error::Unsupported(
                "image-classification needs a fixed image size (size {height, width} or a center crop)"
                    .into(),
            )
        })?;
        let (g, logits, n) = match config.str_or("model_type", "")? {
            "swin" => swin_logits(&config, size)?,
            "convnext" => convnext_logits(&config, size)?,
            _ => {
                let vit = Vit::load(&config, &Graph::new("probe"))?;
                let e = vit.build(&format!("{}-image-classification", vit.model_type), size)?;
                let (logits, n) = vit.class_logits(&e.g, e.hidden)?;
                (e.g, logits, n)
            }
        };
        let labels = config.labels(n)?;
        let default_function = Function::default_for(&config, labels.len())?;
        let graph = g.compile(&[("logits", logits)])?;
        skill_sdk::state::set(
            &STATE,
            Loaded {
                pre,
                graph,
                labels,
                default_function,
            },
        );
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, classify)
    }
}

/// ConvNeXt's graph: pooled features through the classifier.
fn convnext_logits(
    config: &Json,
    size: (usize, usize),
) -> Result<(Graph, skill_sdk::graph::Node, u64), Error> {
    let g = Graph::new("convnext-image-classification");
    let model = ConvNext::load(config, &g)?;
    let pooled = model.pooled(&g, size)?;
    head(g, pooled, "ConvNextForImageClassification")
}

/// `pooled` through the checkpoint's `classifier`.
fn head(
    g: Graph,
    pooled: skill_sdk::graph::Node,
    class: &str,
) -> Result<(Graph, skill_sdk::graph::Node, u64), Error> {
    if !g.has("classifier.weight") {
        return Err(Error::Unsupported(format!(
            "the checkpoint has no image-classification head (a {class} model is needed)"
        )));
    }
    let logits = g.linear(pooled, "classifier")?;
    let n = match g.b.info(logits)?.shape.last() {
        Some(skill_sdk::Dim::Fixed(n)) => *n,
        _ => return Err(skill_sdk::internal("classifier width")),
    };
    Ok((g, logits, n))
}

/// Swin's graph: pooled features through the classifier.
fn swin_logits(
    config: &Json,
    size: (usize, usize),
) -> Result<(Graph, skill_sdk::graph::Node, u64), Error> {
    let g = Graph::new("swin-image-classification");
    let swin = Swin::load(config, &g)?;
    let pooled = swin.pooled(&g, size)?;
    head(g, pooled, "SwinForImageClassification")
}

fn parse_request(req: Request) -> Result<ImageRequest, Error> {
    req.only(&["image", "top_k", "function_to_apply"])?;
    let top_k = match req.opt_u64("top_k")? {
        Some(0) => return Err(invalid("`top_k` must be at least 1")),
        k => k.map_or(DEFAULT_TOP_K, |k| k as usize),
    };
    Ok(ImageRequest {
        image: img::from_base64("image", req.str("image")?)?,
        top_k,
        function: req
            .opt_str("function_to_apply")?
            .map(Function::parse)
            .transpose()?,
    })
}

fn classify(reqs: Vec<ImageRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        let images: Vec<img::Rgb> = reqs.iter().map(|r| r.image.clone()).collect();
        let pixels = l.pre.batch(&images)?;
        let inputs = vec![NamedTensor {
            name: "pixel_values".into(),
            value: pixels,
        }];
        let logits = f32_values(&take(l.graph.run(&inputs)?, "logits")?)?;
        let choices: Vec<(Function, usize)> = reqs
            .iter()
            .map(|r| (r.function.unwrap_or(l.default_function), r.top_k))
            .collect();
        labels_answers(&logits, &l.labels, &choices)
    })
}

skill_sdk::export_skill!(ImageClassification);
