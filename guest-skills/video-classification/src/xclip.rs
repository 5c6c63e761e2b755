//! X-CLIP, zero-shot: how well each of a request's `candidate_labels`
//! describes the clip, as `XCLIPModel(input_ids, pixel_values)
//! .logits_per_video.softmax(-1)` ranks them.
//!
//! Every label becomes a hypothesis through `hypothesis_template`
//! (default `"{}"`: the label itself, as X-CLIP's own usage passes the
//! label texts). The clips of a batch run together with every distinct
//! hypothesis of the batch in one graph (the text embeddings depend on the
//! video through the prompt generator, so the graph scores every clip
//! against every hypothesis); each request then takes the softmax over its
//! own labels. `"return_logits": true` adds the tensor `logits` [labels]
//! (`logits_per_video`, in the order of `candidate_labels`);
//! `"return_embeddings": true` adds `video_embeds` [projection] and
//! `text_embeds` [labels, projection] (normalised, after the prompts).

use std::collections::HashMap;

use skill_sdk::config::Json;
use skill_sdk::image::{self as img, Preprocess};
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::scores::{labels_answer, Function};
use skill_sdk::tensors::{f32_tensor, f32_values};
use skill_sdk::tokenizer::{Tokenizer, TokenizerOptions};
use skill_sdk::vision::xclip::XClip;
use skill_sdk::{invalid, Error, NamedTensor, Response};

use crate::{clip_frames, stack_clips, with_xclip};

const DEFAULT_TEMPLATE: &str = "{}";
/// Most candidate labels one request may carry.
const MAX_LABELS: usize = 1024;

/// A loaded X-CLIP model.
pub struct Loaded {
    model: XClip,
    pre: Preprocess,
    tokenizer: Tokenizer,
    graph: CompiledGraph,
    pub frames: usize,
}

/// One parsed request.
pub struct ZeroShotRequest {
    frames: Vec<img::Rgb>,
    labels: Vec<String>,
    /// One hypothesis per label.
    hypotheses: Vec<String>,
    top_k: usize,
    logits: bool,
    embeddings: bool,
}

impl Loaded {
    pub fn open(config: &Json) -> Result<Loaded, Error> {
        let model = XClip::load(config)?;
        let pre = Preprocess::read()?;
        let size = pre.output_size().ok_or_else(|| {
            Error::Unsupported("X-CLIP needs a fixed frame size (a center crop)".into())
        })?;
        let max_length = XClip::max_text_tokens(config)?;
        let tokenizer = Tokenizer::open(TokenizerOptions {
            max_length: Some(u32::try_from(max_length).map_err(|_| {
                Error::Model(format!("max_position_embeddings {max_length} is too large"))
            })?),
            add_special_tokens: true,
            pad_to_multiple_of: None,
            with_offsets: false,
        })?;
        let graph = skill_sdk::runtime::compile(model.graph(size)?.b)?;
        Ok(Loaded {
            frames: model.frames as usize,
            model,
            pre,
            tokenizer,
            graph,
        })
    }
}

fn flag(req: &Request, key: &str) -> Result<bool, Error> {
    match req.0.get(key) {
        None | Some(serde_json::Value::Null) => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(format!("`{key}` must be true or false"))),
    }
}

pub fn parse(req: Request) -> Result<ZeroShotRequest, Error> {
    req.only(&[
        "frames",
        "video",
        "candidate_labels",
        "hypothesis_template",
        "top_k",
        "return_logits",
        "return_embeddings",
    ])?;
    let labels = req
        .opt_strings("candidate_labels")?
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            invalid("an X-CLIP model needs `candidate_labels`, a non-empty list of strings")
        })?;
    if labels.len() > MAX_LABELS {
        return Err(invalid(format!(
            "at most {MAX_LABELS} candidate labels, got {}",
            labels.len()
        )));
    }
    let template = req
        .opt_str("hypothesis_template")?
        .unwrap_or(DEFAULT_TEMPLATE);
    let top_k = match req.opt_u64("top_k")? {
        Some(0) => return Err(invalid("`top_k` must be at least 1")),
        Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
        None => labels.len(),
    };
    let wanted = with_xclip(|l| Ok(l.frames))?;
    Ok(ZeroShotRequest {
        frames: clip_frames(&req, wanted)?,
        hypotheses: labels.iter().map(|l| template.replace("{}", l)).collect(),
        labels,
        top_k,
        logits: flag(&req, "return_logits")?,
        embeddings: flag(&req, "return_embeddings")?,
    })
}

pub fn classify(reqs: Vec<ZeroShotRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    with_xclip(|l| {
        // Every distinct hypothesis of the batch once.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut texts: Vec<String> = Vec::new();
        for h in reqs.iter().flat_map(|r| &r.hypotheses) {
            if !index.contains_key(h.as_str()) {
                index.insert(h, texts.len());
                texts.push(h.clone());
            }
        }
        let clips: Vec<&[img::Rgb]> = reqs.iter().map(|r| r.frames.as_slice()).collect();
        let enc = l.tokenizer.encode_batch(&texts)?;
        let mut inputs = l.model.clip.text_inputs(&enc)?;
        inputs.push(NamedTensor {
            name: "pixel_values".into(),
            value: stack_clips(&l.pre, &clips)?,
        });
        let out = l.graph.run(&inputs)?;
        let named = |name: &str| -> Result<Vec<f32>, Error> {
            let t = out
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| skill_sdk::internal(format!("no `{name}` output")))?;
            f32_values(&t.value)
        };
        let (logits, video, text) = (
            named("logits")?,
            named("video_embeds")?,
            named("text_embeds")?,
        );
        let (b, t) = (reqs.len(), texts.len());
        let p = l.model.projection as usize;
        if logits.len() != b * t || video.len() != b * p || text.len() != b * t * p {
            return Err(skill_sdk::internal(
                "X-CLIP output sizes do not match the batch",
            ));
        }
        Ok(reqs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let cols: Vec<usize> = r.hypotheses.iter().map(|h| index[h.as_str()]).collect();
                let row: Vec<f32> = cols.iter().map(|&j| logits[i * t + j]).collect();
                let mut answer = labels_answer(&row, &r.labels, Function::Softmax, r.top_k);
                let k = cols.len() as u64;
                if r.logits {
                    answer.tensors.push(NamedTensor {
                        name: "logits".into(),
                        value: f32_tensor(vec![k], &row),
                    });
                }
                if r.embeddings {
                    let texts: Vec<f32> = (cols.iter())
                        .flat_map(|&j| &text[(i * t + j) * p..(i * t + j + 1) * p])
                        .copied()
                        .collect();
                    answer.tensors.push(NamedTensor {
                        name: "video_embeds".into(),
                        value: f32_tensor(vec![p as u64], &video[i * p..(i + 1) * p]),
                    });
                    answer.tensors.push(NamedTensor {
                        name: "text_embeds".into(),
                        value: f32_tensor(vec![k, p as u64], &texts),
                    });
                }
                Ok(answer)
            })
            .collect())
    })
}
