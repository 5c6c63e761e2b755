//! Skill `object-detection`: objects in an image with the semantics of
//! transformers' `object-detection` pipeline, for DETR
//! (`DetrForObjectDetection` on a timm or transformers ResNet backbone).
//!
//! Request: `{"image": "<base64 or data URL>", "threshold": 0.5}`.
//! Response: `{"objects": [{"label", "score", "box": {"xmin", "ymin",
//! "xmax", "ymax"}}]}` in query order, as the pipeline answers: softmax over
//! the classes, the best class other than "no object", kept when its score
//! is above `threshold`; boxes from centre/size to corners, scaled to the
//! original image (after its EXIF orientation) and truncated to integers.
//! `"raw_outputs": true` adds the model's `logits` [queries, labels + 1] and
//! `pred_boxes` [queries, 4] (for fidelity checks).
//!
//! The image is decoded inside the sandbox and preprocessed as the slow
//! (Pillow-based) `DetrImageProcessor`: resize to the shortest/longest
//! edge with the named filter, rescale, normalize. Requests of one batch
//! run grouped by their preprocessed size, so every answer is the
//! pipeline's for that image alone (padding changes DETR's backbone
//! features near the padded border, in transformers too). Requests with
//! `"pad_with_batch": true` run together padded to the largest with the
//! pixel mask, as `DetrImageProcessor` batches images of different sizes
//! (and transformers' model on that batch answers).

use std::cell::RefCell;

use skill_sdk::config::Json;
use skill_sdk::image::preprocess::pad_batch;
use skill_sdk::image::{self as img, Preprocess};
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::tensors::{f32_tensor, f32_values, i64_values};
use skill_sdk::vision::detr::{feature_len, sampling_mask, Detr, MAX_FEATURE_SIDE};
use skill_sdk::{invalid, Error, Graph, Guest, NamedTensor, Response, SkillInfo};

const DEFAULT_THRESHOLD: f64 = 0.5;

struct Loaded {
    pre: Preprocess,
    graph: CompiledGraph,
    labels: Vec<String>,
    halvings: u32,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

struct DetectRequest {
    image: img::Rgb,
    threshold: f32,
    raw: bool,
    /// Run padded with the batch's other such requests.
    pad: bool,
}

/// Rows that run together: their shared preprocessed size (none: the
/// padded group) and their request indices.
type Group = (Option<(usize, usize)>, Vec<usize>);

struct ObjectDetection;

impl Guest for ObjectDetection {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "object-detection".into(),
            task: "object-detection".into(),
            architectures: vec!["detr".into()],
            request_schema: r#"{"type":"object","required":["image"],"properties":{"image":{"type":"string","description":"base64 or a data: URL"},"threshold":{"type":"number"},"raw_outputs":{"type":"boolean"}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"objects":{"type":"array","items":{"type":"object","properties":{"label":{"type":"string"},"score":{"type":"number"},"box":{"type":"object","properties":{"xmin":{"type":"integer"},"ymin":{"type":"integer"},"xmax":{"type":"integer"},"ymax":{"type":"integer"}}}}}}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The defaults (512 MiB, 5e10 fuel per call): decoding inputs
            // (images, audio) may need them (docs/skills.md).
            limits: None,
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        if config.str_or("model_type", "")? != "detr" {
            return Err(Error::Unsupported(format!(
                "model_type `{}` (object-detection serves detr)",
                config.str_or("model_type", "")?
            )));
        }
        let pre = Preprocess::read()?;
        let detr = Detr::load(&config, &Graph::new("probe"))?;
        let built = detr.build("detr-object-detection")?;
        let g = built.g;
        // Post-processing on the device: softmax, best real class.
        let probs = g.b.softmax(built.logits, -1)?;
        let real = g.b.slice(probs, 2, 0, built.labels as i64)?;
        let scores = g.reduce(skill_sdk::graph::ReduceOp::Max, real, &[-1], false)?;
        let best = g.b.argmax(real, -1, false)?;
        let graph = g.compile(&[
            ("logits", built.logits),
            ("pred_boxes", built.boxes),
            ("scores", scores),
            ("labels", best),
        ])?;
        let labels = config.labels(built.labels)?;
        skill_sdk::state::set(
            &STATE,
            Loaded {
                pre,
                graph,
                labels,
                halvings: detr.halvings(),
            },
        );
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, detect)
    }
}

fn parse_request(req: Request) -> Result<DetectRequest, Error> {
    req.only(&["image", "threshold", "raw_outputs", "pad_with_batch"])?;
    let threshold = match req.0.get("threshold") {
        None | Some(serde_json::Value::Null) => DEFAULT_THRESHOLD,
        Some(v) => v
            .as_f64()
            .filter(|t| t.is_finite())
            .ok_or_else(|| invalid("`threshold` must be a finite number"))?,
    };
    let flag = |key: &str| -> Result<bool, Error> {
        match req.0.get(key) {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| invalid(format!("`{key}` must be a boolean"))),
        }
    };
    Ok(DetectRequest {
        image: img::from_base64("image", req.str("image")?)?,
        threshold: threshold as f32,
        raw: flag("raw_outputs")?,
        pad: flag("pad_with_batch")?,
    })
}

fn detect(reqs: Vec<DetectRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        let mut answers: Vec<Option<Result<Response, Error>>> = reqs.iter().map(|_| None).collect();
        // Groups of rows run together: one per preprocessed size, and one
        // padded group of the `pad_with_batch` requests.
        let mut groups: Vec<Group> = Vec::new();
        let mut prepared = Vec::new();
        let max = MAX_FEATURE_SIDE as usize;
        for (i, r) in reqs.iter().enumerate() {
            let (h, w, v) = l.pre.apply(&r.image);
            prepared.push((h, w, v));
            if feature_len(h, l.halvings) > max || feature_len(w, l.halvings) > max {
                answers[i] = Some(Err(invalid(format!(
                    "`image`: a {w}x{h} model input is larger than DETR's position embedding supports ({} pixels a side)",
                    max << l.halvings
                ))));
                continue;
            }
            let key = (!r.pad).then_some((h, w));
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, rows)) => rows.push(i),
                None => groups.push((key, vec![i])),
            }
        }
        for (_, rows) in groups {
            let images: Vec<(usize, usize, Vec<f32>)> = rows
                .iter()
                .map(|&i| std::mem::take(&mut prepared[i]))
                .collect();
            let (pixels, sizes) = pad_batch(&images);
            let (ph, pw) = (pixels.shape[2] as usize, pixels.shape[3] as usize);
            let mut mask = Vec::with_capacity(sizes.len() * ph * pw);
            for s in &sizes {
                mask.extend(sampling_mask(*s, (ph, pw), l.halvings));
            }
            let inputs = vec![
                NamedTensor {
                    name: "pixel_values".into(),
                    value: pixels,
                },
                NamedTensor {
                    name: "pixel_mask".into(),
                    value: f32_tensor(vec![sizes.len() as u64, ph as u64, pw as u64], &mask),
                },
            ];
            let out = l.graph.run(&inputs)?;
            let get = |name: &str| -> Result<&skill_sdk::Tensor, Error> {
                out.iter()
                    .find(|t| t.name == name)
                    .map(|t| &t.value)
                    .ok_or_else(|| skill_sdk::internal(format!("no `{name}` output")))
            };
            let logits = f32_values(get("logits")?)?;
            let boxes = f32_values(get("pred_boxes")?)?;
            let scores = f32_values(get("scores")?)?;
            let best = i64_values(get("labels")?)?;
            let n = rows.len();
            let queries = scores.len() / n.max(1);
            let width = logits.len() / scores.len().max(1);
            if queries == 0
                || scores.len() != n * queries
                || boxes.len() != 4 * scores.len()
                || best.len() != scores.len()
            {
                return Err(skill_sdk::internal("DETR outputs do not match the batch"));
            }
            for (k, &i) in rows.iter().enumerate() {
                let r = &reqs[i];
                let (w0, h0) = (r.image.width as f32, r.image.height as f32);
                let mut objects = Vec::new();
                for q in k * queries..(k + 1) * queries {
                    if scores[q] <= r.threshold {
                        continue;
                    }
                    let b = &boxes[4 * q..4 * q + 4];
                    let (cx, cy, bw, bh) = (b[0], b[1], b[2], b[3]);
                    // center_to_corners_format, then scaled, then `.int()`.
                    let corner = |c: f32, half: f32, scale: f32| ((c + half) * scale) as i32;
                    let label = usize::try_from(best[q])
                        .ok()
                        .and_then(|c| l.labels.get(c))
                        .ok_or_else(|| skill_sdk::internal("label index out of range"))?;
                    objects.push(serde_json::json!({
                        "score": scores[q],
                        "label": label,
                        "box": {
                            "xmin": corner(cx, -0.5 * bw, w0),
                            "ymin": corner(cy, -0.5 * bh, h0),
                            "xmax": corner(cx, 0.5 * bw, w0),
                            "ymax": corner(cy, 0.5 * bh, h0),
                        },
                    }));
                }
                let tensors = match r.raw {
                    true => vec![
                        NamedTensor {
                            name: "logits".into(),
                            value: f32_tensor(
                                vec![queries as u64, width as u64],
                                &logits[k * queries * width..(k + 1) * queries * width],
                            ),
                        },
                        NamedTensor {
                            name: "pred_boxes".into(),
                            value: f32_tensor(
                                vec![queries as u64, 4],
                                &boxes[k * queries * 4..(k + 1) * queries * 4],
                            ),
                        },
                    ],
                    false => Vec::new(),
                };
                answers[i] = Some(Ok(Response {
                    json: serde_json::json!({ "objects": objects }).to_string(),
                    tensors,
                }));
            }
        }
        Ok(answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(skill_sdk::internal("request not answered"))))
            .collect())
    })
}

skill_sdk::export_skill!(ObjectDetection);
