//! Skill `fill-mask`: the most likely tokens for each mask token of a text,
//! with the semantics of transformers' `fill-mask` pipeline.
//!
//! Request: `{"text": "Paris is the [MASK] of France.", "top_k": 5,
//! "targets": ["capital", "city"]}` with the tokenizer's own mask token
//! (one or more). Response: `{"predictions": [[{"score", "token",
//! "token_str", "sequence"}]]}`: one list per mask token in text order, best
//! first. `targets` restricts the candidates (a target that is not one
//! token is replaced by its first token, as transformers does); `top_k` is
//! then at most the number of targets. With several masks each
//! `sequence` keeps the other mask tokens.
//!
//! The graph gathers the hidden states of the mask positions only, runs the
//! masked-LM head on them and returns their probabilities over the
//! vocabulary, so nothing of the unmasked tokens crosses the boundary.

use std::cell::RefCell;

use skill_sdk::config::Json;
use skill_sdk::encoder::{spec, Encoder};
use skill_sdk::graph::Node;
use skill_sdk::requests::Request;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::tensors::{i64_tensor, take};
use skill_sdk::tokenizer::{Tokenizer, TokenizerOptions};
use skill_sdk::{invalid, Dim, Dtype, Error, Graph, Guest, NamedTensor, Response, SkillInfo};

mod tokens;

/// Candidates per mask when the request does not say.
const DEFAULT_TOP_K: u64 = 5;

struct Loaded {
    tokenizer: Tokenizer,
    /// The same tokenizer without special tokens (to tokenize targets).
    plain: Tokenizer,
    encoder: Encoder,
    graph: CompiledGraph,
    mask_id: i64,
    mask_token: String,
    pad_id: i64,
    vocab: usize,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

/// One parsed request.
struct FillRequest {
    text: String,
    top_k: u64,
    targets: Option<Vec<String>>,
}

struct FillMask;

impl Guest for FillMask {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "fill-mask".into(),
            task: "fill-mask".into(),
            architectures: spec::model_types().iter().map(|s| s.to_string()).collect(),
            request_schema: r#"{"type":"object","required":["text"],"properties":{"text":{"type":"string"},"top_k":{"type":"integer","minimum":1},"targets":{"type":["string","array"],"items":{"type":"string"}}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"predictions":{"type":"array","items":{"type":"array","items":{"type":"object","properties":{"score":{"type":"number"},"token":{"type":"integer"},"token_str":{"type":"string"},"sequence":{"type":"string"}}}}}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // Peak 1.1 MiB on its cases, about 9 MiB for 64 requests of
            // 2.3 MB of text (docs/skills.md): 256 MiB; default fuel.
            limits: Some(skill_sdk::ResourceNeeds {
                memory_mib: Some(256),
                fuel_per_call: None,
            }),
        }
    }

    fn load() -> Result<(), Error> {
        let config = Json::config()?;
        let e = Encoder::load(&config, &Graph::new("probe"))?;
        let options = |special| TokenizerOptions {
            max_length: Some(e.max_tokens() as u32),
            add_special_tokens: special,
            pad_to_multiple_of: e.pad_multiple(),
            with_offsets: false,
        };
        let tokenizer = Tokenizer::open(options(true))?;
        let plain = Tokenizer::open(options(false))?;
        let (mask_token, mask_id) = tokens::mask_token(&tokenizer)?;
        let pad_id = tokens::pad_id(&tokenizer, &config)?;
        let eg = e.build(&format!("{}-fill-mask", e.model_type))?;
        let probs = mask_probabilities(&e, &eg.g, eg.hidden)?;
        let vocab = match eg.g.b.info(probs)?.shape.get(1) {
            Some(Dim::Fixed(n)) => *n as usize,
            _ => {
                return Err(Error::Model(
                    "the masked-LM head has no fixed vocabulary".into(),
                ))
            }
        };
        let graph = eg.g.compile(&[("probs", probs)])?;
        skill_sdk::state::set(
            &STATE,
            Loaded {
                tokenizer,
                plain,
                encoder: e,
                graph,
                mask_id,
                mask_token,
                pad_id,
                vocab,
            },
        );
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        skill_sdk::requests::serve(batch, parse_request, fill)
    }
}

/// Probabilities [masks, vocab] of the rows `mask_rows` [masks] (flat
/// indices into batch x sequence) of the hidden state.
fn mask_probabilities(e: &Encoder, g: &Graph, hidden: Node) -> Result<Node, Error> {
    let rows = g.input("mask_rows", Dtype::I64, &[Dim::Symbolic("masks".into())])?;
    let flat = g.b.reshape(hidden, &[-1, e.hidden as i64])?;
    let picked = g.b.gather(flat, rows, 0)?;
    let logits = e.mlm_logits(g, picked)?;
    g.b.softmax(logits, -1)
}

fn parse_request(req: Request) -> Result<FillRequest, Error> {
    req.only(&["text", "top_k", "targets"])?;
    let top_k = req.opt_u64("top_k")?.unwrap_or(DEFAULT_TOP_K);
    if top_k == 0 {
        return Err(invalid("`top_k` must be at least 1"));
    }
    Ok(FillRequest {
        text: req.str("text")?.to_string(),
        top_k,
        targets: req.opt_strings("targets")?,
    })
}

fn fill(reqs: Vec<FillRequest>) -> Result<Vec<Result<Response, Error>>, Error> {
    skill_sdk::state::with(&STATE, |l| {
        let texts: Vec<String> = reqs.iter().map(|r| r.text.clone()).collect();
        let enc = l.tokenizer.encode_batch(&texts)?;
        let ids = tokens::i64s(&enc.input_ids)?;
        let seq = enc.input_ids.shape.get(1).copied().unwrap_or(0) as usize;
        // Each request's mask positions, and all of them as flat rows.
        let mut masks: Vec<Vec<usize>> = Vec::with_capacity(reqs.len());
        let mut rows = Vec::new();
        for (r, len) in enc.lengths.iter().enumerate() {
            let row = &ids[r * seq..r * seq + *len as usize];
            let at: Vec<usize> = (0..row.len()).filter(|&i| row[i] == l.mask_id).collect();
            rows.extend(at.iter().map(|&i| (r * seq + i) as i64));
            masks.push(at);
        }
        let probs = match rows.is_empty() {
            true => Vec::new(),
            false => {
                let mut inputs = l.encoder.inputs(&enc);
                inputs.push(NamedTensor {
                    name: "mask_rows".into(),
                    value: i64_tensor(vec![rows.len() as u64], &rows),
                });
                tokens::f32s(&take(l.graph.run(&inputs)?, "probs")?)?
            }
        };
        let mut next = 0;
        let mut out = Vec::with_capacity(reqs.len());
        for (r, req) in reqs.iter().enumerate() {
            let at = &masks[r];
            let row_probs = probs.get(next * l.vocab..(next + at.len()) * l.vocab);
            next += at.len();
            out.push(match (at.is_empty(), row_probs) {
                (true, _) => Err(invalid(match enc.truncated[r] {
                    true => format!(
                        "no mask token `{}` in the first {} tokens of `text` (the model's limit)",
                        l.mask_token, enc.lengths[r]
                    ),
                    false => format!("no mask token `{}` in `text`", l.mask_token),
                })),
                (false, None) => Err(skill_sdk::internal("fewer probabilities than masks")),
                (false, Some(p)) => {
                    let row = &ids[r * seq..r * seq + enc.lengths[r] as usize];
                    answer(l, req, row, at, p)
                }
            });
        }
        Ok(out)
    })
}

/// The response of one request: `probs` holds one vocabulary row per mask.
fn answer(
    l: &Loaded,
    req: &FillRequest,
    ids: &[i64],
    masks: &[usize],
    probs: &[f32],
) -> Result<Response, Error> {
    let candidates = match &req.targets {
        Some(t) => Some(tokens::target_ids(&l.tokenizer, &l.plain, t, l.vocab)?),
        None => None,
    };
    let single = masks.len() == 1;
    let mut lists = Vec::with_capacity(masks.len());
    for (m, &pos) in masks.iter().enumerate() {
        let p = &probs[m * l.vocab..(m + 1) * l.vocab];
        let mut best: Vec<(u32, f32)> = match &candidates {
            Some(c) => c.iter().map(|&id| (id, p[id as usize])).collect(),
            None => p.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect(),
        };
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        best.truncate(req.top_k as usize);
        let mut list = Vec::with_capacity(best.len());
        for (id, score) in best {
            let mut filled: Vec<u32> = ids
                .iter()
                .filter(|&&t| t != l.pad_id)
                .map(|&t| t as u32)
                .collect();
            let at = pos - ids[..pos].iter().filter(|&&t| t == l.pad_id).count();
            filled[at] = id;
            list.push(serde_json::json!({
                "score": score,
                "token": id,
                "token_str": l.tokenizer.decode(&[id], false)?,
                "sequence": l.tokenizer.decode(&filled, single)?,
            }));
        }
        lists.push(serde_json::Value::Array(list));
    }
    Ok(Response {
        json: serde_json::json!({ "predictions": lists }).to_string(),
        tensors: Vec::new(),
    })
}

skill_sdk::export_skill!(FillMask);
