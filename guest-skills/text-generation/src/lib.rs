//! Skill `text-generation`: decoder LMs (gpt2, opt, llama, mistral, qwen2,
//! bloom, gptj, gpt_neo, codegen: one spec each in `arch/families.rs`) with
//! the KV cache owned by the host (a `runtime.session`).
//!
//! Request: `{"prompt": "...", "max_new_tokens": N, "do_sample": false,
//! "temperature": 1.0, "top_k": 50, "top_p": 1.0, "seed": 0, "stop": ["..."]}`.
//! Response: `{"text", "token_ids", "finish_reason": "eos"|"length"|"stop",
//! "timings": {"prefill_ms", "decode_ms", "tokens_per_second"}}` (the host
//! adds `device` and `precision`). Defaults come from generation_config.json.
//!
//! The prompts of a batch are generated together, left-padded; each step
//! sends one token id per sequence to the host and gets the next one back.
//! Sampling draws from the graph's top-100 candidates, so `top_k` is capped
//! at 100. `repetition_penalty` follows transformers (seen tokens' logits
//! scaled before sampling; the seen-set crosses once per step). `"return_logits":
//! true` adds `prefill_logits` (the last prompt position's logits) to the
//! response, for fidelity checks.
//!
//! LLaVA checkpoints (`model_type` "llava": a SigLIP or CLIP tower, a
//! projector, a llama/mistral/qwen2 decoder) are served here too, for the
//! `image-text-to-text` task: the request adds `"images": [base64, ...]` (or `"image"`), one per
//! `<image>` in the prompt (see `llava.rs`); the response is the same.
//! Qwen2-VL checkpoints (`model_type` "qwen2_vl": a vision tower with a
//! patch merger, a Qwen2 decoder with M-RoPE) likewise, one image per
//! `<|image_pad|>`, and videos: `"videos": [[frame base64, ...], ...]` (or
//! `"video"`), one per `<|video_pad|>` (see `qwen2_vl.rs`, `mrope.rs`);
//! other models refuse videos.
//! LLaVA-NeXT (`model_type` "llava_next": a CLIP tower, anyres tiles packed
//! with newline rows, a mistral decoder) the same way (`llava_next.rs`).

mod arch;
mod decoder;
mod dims;
mod generate;
mod layer;
mod llava;
mod llava_next;
mod mrope;
mod positions;
mod qwen2_vl;
mod resize;
mod respond;
mod text_config;
mod variant;

use std::cell::RefCell;

use skill_sdk::config::Json;
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::tokenizer::{Tokenizer, TokenizerOptions};
use skill_sdk::{invalid, Error, Guest, Response, SkillInfo, Tensor};

use arch::DecoderSpec;
use decoder::{Cache, ModelInfo, Variant};
use skill_sdk::generation::sample::Sampling;

/// Largest `max_new_tokens` a request may ask for.
const MAX_NEW_TOKENS: u64 = 4096;
/// Fewest KV-cache slots; caches grow in powers of two from here so that
/// generations of similar length share graphs (and replayable shapes).
const MIN_CACHE: u64 = 64;

/// KV-cache slots for `tokens` tokens: the next power of two, at least
/// [`MIN_CACHE`], at most the model's context (never less than `tokens`).
fn cache_slots(tokens: u64, context: u64) -> u64 {
    tokens
        .max(MIN_CACHE)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX)
        .min(context.max(tokens))
}

struct Defaults {
    max_new_tokens: u64,
    do_sample: bool,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    repetition_penalty: f32,
    eos: Vec<i64>,
    pad: i64,
}

struct Loaded {
    tokenizer: Tokenizer,
    /// The same without special tokens (`"add_special_tokens": false`: a
    /// prompt rendered by a chat template that has them already).
    plain: Tokenizer,
    /// Decoder graphs per variant (logits output, repetition penalty) and
    /// KV-cache size, built on first use.
    graphs: RefCell<std::collections::HashMap<(Variant, Cache), CompiledGraph>>,
    /// Where the backend replays repeated shapes (`fixed-shapes`, cuda):
    /// fixed-slot caches (replayable decode steps) and fused projections;
    /// elsewhere growing caches and separate projections.
    slots: bool,
    arch: &'static DecoderSpec,
    /// The decoder's config (a LLaVA's `text_config`).
    config: Json,
    /// A LLaVA model's image side.
    llava: Option<llava::Llava>,
    /// A Qwen2-VL model's image side and M-RoPE.
    qwen2_vl: Option<qwen2_vl::Qwen2Vl>,
    info: ModelInfo,
    defaults: Defaults,
}

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

#[derive(Clone)]
struct Request {
    ids: Vec<i64>,
    /// Return the prefill step's last-position logits (large; for checks).
    return_logits: bool,
    /// transformers' repetition penalty (1 = off).
    repetition_penalty: f32,
    max_new: u64,
    sampling: Sampling,
    stop: Vec<String>,
    warnings: Vec<String>,
    /// Its images (LLaVA), preprocessed.
    images: llava::Images,
    /// Its images and M-RoPE positions (Qwen2-VL).
    vl: qwen2_vl::Prompt,
}

struct TextGeneration;

fn ids_of(v: Option<&serde_json::Value>) -> Vec<i64> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_i64().into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_i64()).collect(),
        _ => Vec::new(),
    }
}

impl Guest for TextGeneration {
    fn describe() -> SkillInfo {
        SkillInfo {
            name: "text-generation".into(),
            task: "text-generation".into(),
            architectures: (arch::served(false).into_iter())
                .chain(["llava", "llava_next", "qwen2_vl"])
                .map(|s| s.to_string())
                .collect(),
            request_schema: r#"{"type":"object","required":["prompt"],"properties":{"prompt":{"type":"string"},"images":{"type":"array","items":{"type":"string"},"description":"llava, qwen2_vl (image-text-to-text): base64 images, one per image token (<image>, <|image_pad|>) in the prompt"},"image":{"type":"string"},"videos":{"type":"array","items":{"type":["array","string"],"items":{"type":"string"}},"description":"qwen2_vl (image-text-to-text): videos, one per <|video_pad|> in the prompt, each a list of base64 frames of one size (or an animated GIF/WebP)"},"video":{"type":["array","string"],"items":{"type":"string"}},"max_new_tokens":{"type":"integer"},"do_sample":{"type":"boolean"},"temperature":{"type":"number"},"top_k":{"type":"integer"},"top_p":{"type":"number"},"seed":{"type":"integer"},"stop":{"type":"array","items":{"type":"string"}}}}"#.into(),
            response_schema: r#"{"type":"object","properties":{"text":{"type":"string"},"token_ids":{"type":"array"},"finish_reason":{"type":"string"},"timings":{"type":"object"}}}"#.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The defaults (512 MiB, 5e10 fuel per call): decoding inputs
            // (images, audio) may need them (docs/skills.md).
            limits: None,
        }
    }

    fn load() -> Result<(), Error> {
        let top = Json::config()?;
        let (llava, config) = match top.str_or("model_type", "")? {
            "llava" | "llava_next" => {
                let (l, text) = llava::Llava::load(&top)?;
                (Some(l), text)
            }
            _ => (None, Json::config()?),
        };
        // Qwen2-VL: a Qwen2 decoder with M-RoPE, its own image side.
        let (qwen2_vl, config) = match top.str_or("model_type", "")? {
            "qwen2_vl" => {
                let (q, text) = qwen2_vl::Qwen2Vl::load(&top)?;
                (Some(q), text)
            }
            _ => (None, config),
        };
        let model_type = config.str_or("model_type", "")?.to_string();
        let arch = arch::from_config(&model_type, &config).ok_or_else(|| {
            Error::Unsupported(format!(
                "model_type `{model_type}` is not served by text-generation (supported: {}, and llava with a {} decoder)",
                arch::served(false).join(", "),
                arch::served(true).join(", ")
            ))
        })?;
        let gen = Json::asset("generation_config.json")?;
        let get = |k: &str| {
            gen.as_ref()
                .and_then(|g| g.value.get(k).cloned())
                .or_else(|| top.value.get(k).cloned())
                .or_else(|| config.value.get(k).cloned())
        };
        let mut eos = ids_of(get("eos_token_id").as_ref());
        eos.sort_unstable();
        eos.dedup();
        let pad = ids_of(get("pad_token_id").as_ref())
            .first()
            .copied()
            .or(eos.first().copied())
            .unwrap_or(0);
        let defaults = Defaults {
            max_new_tokens: get("max_new_tokens").and_then(|v| v.as_u64()).unwrap_or(20),
            do_sample: get("do_sample").and_then(|v| v.as_bool()).unwrap_or(false),
            temperature: get("temperature").and_then(|v| v.as_f64()).unwrap_or(1.0) as f32,
            top_k: get("top_k").and_then(|v| v.as_u64()).unwrap_or(50) as u32,
            top_p: get("top_p").and_then(|v| v.as_f64()).unwrap_or(1.0) as f32,
            repetition_penalty: get("repetition_penalty")
                .and_then(|v| v.as_f64())
                .unwrap_or(1.0) as f32,
            eos,
            pad,
        };
        let open = |add_special_tokens| {
            Tokenizer::open(TokenizerOptions {
                max_length: None,
                add_special_tokens,
                pad_to_multiple_of: None,
                with_offsets: false,
            })
        };
        let (tokenizer, plain) = (open(true)?, open(false)?);
        // Build the common graph now: a bad config fails at load.
        // Fixed slots where the backend replays repeated shapes (CUDA
        // graphs); a growing cache elsewhere.
        let slots = skill_sdk::runtime::device().fixed_shapes;
        let cache = if slots {
            Cache::Slots(MIN_CACHE)
        } else {
            Cache::Growing
        };
        let (graph, info) = decoder::build(
            arch,
            &config,
            Variant::default(),
            cache,
            slots,
            llava.as_ref(),
            qwen2_vl.as_ref(),
        )?;
        let graphs = std::collections::HashMap::from([((Variant::default(), cache), graph)]);
        STATE.with(|s| {
            *s.borrow_mut() = Some(Loaded {
                tokenizer,
                plain,
                graphs: RefCell::new(graphs),
                slots,
                arch,
                config,
                llava,
                qwen2_vl,
                info,
                defaults,
            })
        });
        Ok(())
    }

    fn handle(batch: Vec<String>) -> Vec<Result<Response, Error>> {
        STATE.with(|s| {
            let state = s.borrow();
            let Some(m) = state.as_ref() else {
                return batch
                    .iter()
                    .map(|_| Err(skill_sdk::internal("handle called before load")))
                    .collect();
            };
            let parsed: Vec<Result<Request, Error>> = batch.iter().map(|r| parse(m, r)).collect();
            // Bad requests are answered at once, not after the batch.
            for (i, p) in parsed.iter().enumerate() {
                if let Err(e) = p {
                    skill_sdk::partial::complete(i as u32, Err(e));
                }
            }
            let ok: Vec<usize> = (0..parsed.len()).filter(|&i| parsed[i].is_ok()).collect();
            let reqs: Vec<&Request> = ok.iter().filter_map(|&i| parsed[i].as_ref().ok()).collect();
            let mut out: Vec<Result<Response, Error>> = parsed
                .iter()
                .map(|p| match p {
                    Err(e) => Err(e.clone()),
                    Ok(_) => Err(skill_sdk::internal("not generated")),
                })
                .collect();
            if !reqs.is_empty() {
                let index: Vec<u32> = ok.iter().map(|&i| i as u32).collect();
                match generate::generate(m, &reqs, &index, batch.len() as u32) {
                    Ok(responses) => ok.iter().zip(responses).for_each(|(&i, r)| out[i] = Ok(r)),
                    Err(e) => ok.iter().for_each(|&i| out[i] = Err(e.clone())),
                }
            }
            out
        })
    }
}

fn parse(m: &Loaded, req: &str) -> Result<Request, Error> {
    let v: serde_json::Value =
        serde_json::from_str(req).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let prompt = match v.get("prompt") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::String(_)) => return Err(invalid("`prompt` is empty")),
        Some(_) => return Err(invalid("`prompt` must be a string")),
        None => return Err(invalid("missing `prompt`")),
    };
    if m.qwen2_vl.is_none() && (v.get("videos").is_some() || v.get("video").is_some()) {
        return Err(invalid(
            "this model takes no videos (`videos` needs a qwen2_vl checkpoint)",
        ));
    }
    let (prompt, images) = match &m.llava {
        Some(l) => l.prepare(&v, &prompt)?,
        None if m.qwen2_vl.is_none() && (v.get("images").is_some() || v.get("image").is_some()) => {
            return Err(invalid(
                "this model takes no images (`images` needs a llava checkpoint)",
            ))
        }
        None => (prompt, llava::Images::default()),
    };
    let (prompt, mut vl) = match &m.qwen2_vl {
        Some(q) => q.prepare(&v, &prompt)?,
        None => (prompt, qwen2_vl::Prompt::default()),
    };
    let num = |k: &str| v.get(k).filter(|x| !x.is_null());
    let repetition_penalty = match num("repetition_penalty") {
        None => m.defaults.repetition_penalty,
        Some(p) => match p.as_f64() {
            Some(p) if p.is_finite() && p > 0.0 => p as f32,
            _ => return Err(invalid("`repetition_penalty` must be a positive number")),
        },
    };
    let d = &m.defaults;
    let max_new = match num("max_new_tokens") {
        None => d.max_new_tokens,
        Some(x) => x
            .as_u64()
            .ok_or_else(|| invalid("`max_new_tokens` must be a non-negative integer"))?,
    };
    if max_new == 0 {
        return Err(invalid("`max_new_tokens` must be at least 1"));
    }
    let tokenizer = match v.get("add_special_tokens") {
        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(true)) => &m.tokenizer,
        Some(serde_json::Value::Bool(false)) => &m.plain,
        Some(_) => return Err(invalid("`add_special_tokens` must be a boolean")),
    };
    let ids: Vec<i64> = tokenizer
        .encode_batch(std::slice::from_ref(&prompt))?
        .input_ids
        .data
        .chunks_exact(8)
        .map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            i64::from_le_bytes(a)
        })
        .collect();
    if ids.is_empty() {
        return Err(invalid("the prompt tokenizes to nothing"));
    }
    if let Some(l) = &m.llava {
        l.check_ids(&ids, &images)?;
    }
    if let Some(q) = &m.qwen2_vl {
        q.position(&ids, &mut vl)?;
    }
    let ctx = m.info.max_positions;
    if ids.len() as u64 >= ctx {
        return Err(invalid(format!(
            "the prompt has {} tokens; the model's context is {ctx}",
            ids.len()
        )));
    }
    let mut warnings = Vec::new();
    let cap = (ctx - ids.len() as u64).min(MAX_NEW_TOKENS);
    let max_new = if max_new > cap {
        warnings.push(format!(
            "max_new_tokens {max_new} capped at {cap} (context {ctx}, limit {MAX_NEW_TOKENS})"
        ));
        cap
    } else {
        max_new
    };
    let f = |k: &str, default: f32| {
        num(k)
            .and_then(|x| x.as_f64())
            .map(|x| x as f32)
            .unwrap_or(default)
    };
    let sampling = Sampling {
        do_sample: num("do_sample")
            .and_then(|x| x.as_bool())
            .unwrap_or(d.do_sample),
        temperature: f("temperature", d.temperature),
        top_k: num("top_k")
            .and_then(|x| x.as_u64())
            .map(|k| k as u32)
            .unwrap_or(d.top_k),
        top_p: f("top_p", d.top_p),
        seed: num("seed").and_then(|x| x.as_u64()).unwrap_or(0),
    };
    let valid = sampling.temperature.is_finite()
        && sampling.temperature > 0.0
        && sampling.top_p > 0.0
        && sampling.top_p <= 1.0;
    if !valid {
        return Err(invalid("`temperature` must be > 0 and `top_p` in (0, 1]"));
    }
    if sampling.do_sample && (sampling.top_k == 0 || sampling.top_k > m.info.top_k) {
        warnings.push(format!(
            "top_k capped at {} (the candidates the graph returns)",
            m.info.top_k
        ));
    }
    let stop = match v.get("stop") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
            .filter(|s| !s.is_empty())
            .collect(),
        Some(_) => return Err(invalid("`stop` must be a string or a list of strings")),
    };
    let return_logits = num("return_logits")
        .and_then(|x| x.as_bool())
        .unwrap_or(false);
    Ok(Request {
        ids,
        return_logits,
        repetition_penalty,
        max_new,
        sampling,
        stop,
        warnings,
        images,
        vl,
    })
}

fn i64s(t: &Tensor) -> Vec<i64> {
    t.data
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn stop_hit(m: &Loaded, out: &[i64], stop: &[String]) -> bool {
    let toks: Vec<u32> = out.iter().map(|&t| t as u32).collect();
    m.tokenizer
        .decode(&toks, true)
        .is_ok_and(|t| stop.iter().any(|s| t.contains(s.as_str())))
}

skill_sdk::export_skill!(TextGeneration);
