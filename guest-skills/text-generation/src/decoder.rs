//! Decoder graphs, one generic builder over the architecture's
//! [`DecoderSpec`] (`arch/`; one block in `layer.rs`), with the KV cache as
//! session state: a prefill graph (any number of new tokens) and a decode
//! graph (one new token per sequence); [`Variant`] picks the step.
//!
//! The KV cache either grows by the new tokens each run (oldest first: no
//! padded slots to copy or attend over, best where every run pays for its
//! shapes anyway, cpu and openvino) or has a fixed number of slots per graph
//! ([`Cache::Slots`], chosen by the generation loop), so every decode step of
//! a generation has the same shapes and a backend can replay it (CUDA
//! graphs). With slots: the prefill fills the first slots with the prompt;
//! each decode step writes its token's keys and values into the next free
//! slot (`cache_slot`) with `write-rows`, which a device backend does where
//! the cache lies, so a step copies one slot, not the cache. Attention is
//! indifferent to the order of its keys once positions are applied (rotary
//! before caching, ALiBi from explicit key positions), and a decode step
//! (one token, no causality among new tokens) attends to all slots. A mask
//! says which slots hold tokens. The cache is laid out slot-major,
//! [cache, batch, kv_heads, head_dim], so that a slot is one contiguous row.
//!
//! Inputs: `input_ids`, `position_ids` and `attention_mask` (1 real, 0
//! padding) [batch, seq] (seq is 1 in decode), `cache_mask` [batch, cache]
//! (`cache` is the symbolic `past` when growing)
//! (1 where a slot holds a token, this step's slot included with slots),
//! `cache_slot` [1] (the first slot a slot-cache decode or extend step writes),
//! `last_index` [1] (seq - 1); with ALiBi or
//! attention windows (BLOOM, GPT-Neo, Mistral: [`DecoderSpec::key_positions`])
//! and in slot-cache extend steps also `cache_positions` [batch, cache]
//! (each slot's token position); Qwen2-VL also `mrope_positions` [3, batch, seq] (M-RoPE,
//! `mrope.rs`). A prefill starts its session, so it takes neither cache input. State:
//! `k<i>`, `v<i>` [cache, batch, kv_heads, head_dim] with slots, [batch,
//! kv_heads, past, head_dim] when growing; `token` [batch, 1], the last
//! run's `next_token`, which a *fed* decode step takes instead of
//! `input_ids`. Outputs: `next_token`
//! [batch] (argmax) and, when sampling, `top_values`/`top_indices`
//! [batch, K].

use skill_sdk::config::Json;
use skill_sdk::graph::{BinaryOp, CompareOp, Node};
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::{Dim, Dtype, Error, Graph};

use crate::arch::{DecoderSpec, Positions, Root, Window};
pub(crate) use crate::dims::{dims, Dims};
use crate::layer::{layer, norm};
use crate::llava::Llava;
use crate::positions::{alibi_mask, rope_tables, window_mask};
use crate::qwen2_vl::Qwen2Vl;
pub use crate::variant::{Step, Variant};

/// Candidates returned per step for sampling.
pub const TOP_K_MAX: u32 = 100;

/// What the generation loop needs to know about the model.
pub struct ModelInfo {
    pub vocab: u64,
    pub max_positions: u64,
    pub top_k: u32,
    /// Bytes of keys and values one token takes in the cache (as declared,
    /// f32), over all layers.
    pub kv_bytes: u64,
}

pub(crate) fn sym(s: &str) -> Dim {
    Dim::Symbolic(s.into())
}

/// How the KV cache is kept between runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cache {
    /// Appended to each run, oldest first.
    Growing,
    /// This many slots, newest first, the oldest (free) ones dropped.
    Slots(u64),
}

impl Cache {
    /// Slots per row (0 for a growing cache).
    pub fn slots(self) -> usize {
        match self {
            Cache::Growing => 0,
            Cache::Slots(n) => n as usize,
        }
    }

    pub(crate) fn dim(self) -> Dim {
        match self {
            Cache::Growing => sym("past"),
            Cache::Slots(n) => Dim::Fixed(n),
        }
    }
}

/// Builds and compiles the decoder graph of architecture `spec` with its KV
/// `cache`; the `variant` picks the step and may add outputs or inputs.
/// `fuse` concatenates the q/k/v and gate/up weights into one projection
/// each (fewer, larger products: a win for small-batch GPU decode; CPU
/// runtimes prefer separate ones).
pub fn build(
    spec: &DecoderSpec,
    c: &Json,
    variant: Variant,
    cache: Cache,
    fuse: bool,
    llava: Option<&Llava>,
    vl: Option<&Qwen2Vl>,
) -> Result<(CompiledGraph, ModelInfo), Error> {
    let d = Dims {
        fuse,
        ..dims(spec, c)?
    };
    let kept = match cache {
        Cache::Growing => "grow".to_string(),
        Cache::Slots(n) => format!("c{n}"),
    };
    let (kind, suffix) = variant.name_parts();
    let name = format!("{}-{kind}-{kept}{suffix}", spec.name);
    let g = Graph::new(&name.to_lowercase());
    let step = variant.step;
    let vision = llava.is_some() || vl.is_some();
    if step.images() && !vision {
        return Err(skill_sdk::internal(
            "images go into a prefill or extend step of a llava model",
        ));
    }
    let seq = match step {
        Step::Decode { .. } => Dim::Fixed(1),
        _ => sym("seq"),
    };
    let bs = [sym("batch"), seq];
    let slots = [sym("batch"), cache.dim()];
    // A prefill always starts a session: its cache is empty, so it attends
    // to its own tokens only (and takes no cache_mask/cache_positions).
    let order = match (step.decodes(), cache) {
        (false, _) => Keys::New,
        (true, Cache::Growing) => Keys::OldThenNew,
        (true, Cache::Slots(_)) => {
            Keys::Written(g.input("cache_slot", Dtype::I64, &[Dim::Fixed(1)])?)
        }
    };
    // Every run keeps its chosen tokens as state `token` [batch, 1]; a fed
    // decode step reads its ids from there.
    let token =
        g.b.state("token", Dtype::I64, &[sym("batch"), Dim::Fixed(1)])?;
    let ids = match step.fed() {
        true => token,
        false => g.input("input_ids", Dtype::I64, &bs)?,
    };
    let pos = g.input("position_ids", Dtype::I64, &bs)?;
    let mask = g.input("attention_mask", Dtype::I64, &bs)?;
    let last = g.input("last_index", Dtype::I64, &[Dim::Fixed(1)])?;
    let zero = g.scalar(0.0, Dtype::I64)?;
    // Per-key values (mask, positions) of the cache, then ordered like the
    // keys with the new tokens' values.
    let with_cache = |input: &str, new: Node| -> Result<Node, Error> {
        match order {
            Keys::New => Ok(new),
            Keys::OldThenNew => g.b.concat(&[g.input(input, Dtype::I64, &slots)?, new], 1),
            // The skill marks the written slot itself.
            Keys::Written(_) => g.input(input, Dtype::I64, &slots),
        }
    };
    let all = with_cache("cache_mask", mask)?;
    let keep = g.b.compare(CompareOp::Greater, all, zero)?;
    let mut keys = g.b.unsqueeze(g.b.unsqueeze(keep, 1)?, 1)?;
    // Written into slots, an extend step's tokens are not the last keys:
    // causality comes from positions (a key no later than its query; a
    // row's positions grow slot by slot).
    let slot_extend = matches!(step, Step::Extend { .. }) && matches!(order, Keys::Written(_));
    let key_pos = match spec.key_positions() || slot_extend {
        true => Some(with_cache("cache_positions", pos)?),
        false => None,
    };
    if let (true, Some(kp)) = (slot_extend, key_pos) {
        let q = g.b.unsqueeze(g.b.unsqueeze(pos, 1)?, -1)?;
        let k = g.b.unsqueeze(g.b.unsqueeze(kp, 1)?, 1)?;
        let earlier = g.b.compare(CompareOp::LessOrEqual, k, q)?;
        keys = g.b.logical_and(keys, earlier)?;
    }

    // The decoder's weights: under its fixed root, or under the model base
    // (`model.` in a causal LM, deeper in a LLaVA).
    let base = llava.map_or("model.", |l| l.lm_base.as_str());
    let base = vl.map_or(base, |q| q.lm_base.as_str());
    let root = match spec.root {
        Root::Base => base,
        Root::Fixed(_) if vision => {
            return Err(Error::Unsupported(format!(
                "a LLaVA decoder of type {} (served: {})",
                spec.name,
                crate::arch::served(true).join(", ")
            )));
        }
        Root::Fixed(root) => root,
    };
    let embed_name = format!("{root}{}", spec.embed);
    let mut h = g.b.embedding(g.weight(&embed_name)?, ids)?;
    // LLaVA: the image tokens' embeddings replaced by image features.
    if let (true, Some(l)) = (step.images(), llava) {
        h = l.splice(&g, h, &bs)?;
    }
    if let (true, Some(q)) = (step.images(), vl) {
        h = q.splice(&g, h, &bs)?;
    }
    if let Positions::Learned { table, offset } = spec.positions {
        let at = match offset {
            0 => pos,
            _ => {
                g.b.binary(BinaryOp::Add, pos, g.scalar(offset as f64, Dtype::I64)?)?
            }
        };
        let p = g.b.embedding(g.weight(&format!("{root}{table}"))?, at)?;
        h = g.add(h, p)?;
    }
    if let Some(n) = spec.embed_norm {
        h = norm(&g, spec.norm, h, &format!("{root}{n}"), d.eps)?;
    }
    // ALiBi: its bias plus the padding mask as one additive attention mask.
    let windowed = !matches!(spec.window, Window::None) && d.local.contains(&true);
    let (keys, local) = match key_pos {
        Some(kp) if spec.positions == Positions::Alibi => {
            (alibi_mask(&g, d.heads, keys, keep, kp)?, None)
        }
        Some(kp) if windowed => (keys, Some(window_mask(&g, pos, kp, keys, d.window)?)),
        _ => (keys, None),
    };
    let rope = match spec.positions {
        // Qwen2-VL: M-RoPE from `mrope_positions`.
        Positions::Rotary { .. } if vl.is_some() => {
            vl.map(|q| q.mrope.tables(&g, &bs)).transpose()?
        }
        Positions::Rotary { dim, interleaved } => {
            let dim = match dim {
                Some(key) => c.u64_or(key, d.head_dim)?,
                None => d.head_dim,
            };
            Some(rope_tables(&g, c, pos, dim, interleaved)?)
        }
        _ => None,
    };
    for i in 0..d.layers {
        let mask = match (d.local.get(i as usize), local) {
            (Some(true), Some(l)) => l,
            _ => keys,
        };
        h = layer(&g, spec, &d, (root, i), h, mask, rope, cache, order)?;
    }
    let h = g.b.squeeze(g.b.gather(h, last, 1)?, 1)?;
    let h = norm(
        &g,
        spec.norm,
        h,
        &format!("{root}{}", spec.final_norm),
        d.eps,
    )?;
    let head_weight = format!("{}.weight", spec.lm_head);
    let head_name = llava.map_or(head_weight.as_str(), |l| l.head.as_str());
    let head = if g.has(head_name) {
        head_name
    } else {
        embed_name.as_str()
    };
    let head_bias = format!("{}.bias", spec.lm_head);
    let head_bias = match g.has(&head_bias) && head == head_weight {
        true => Some(g.weight(&head_bias)?),
        false => None,
    };
    let logits = g.b.linear(h, g.weight(head)?, head_bias)?;
    let vocab = match g.b.info(logits)?.shape.last() {
        Some(Dim::Fixed(v)) => *v,
        _ => return Err(Error::Model("the vocabulary size is not fixed".into())),
    };
    let scores = if variant.penalty {
        penalize(&g, logits, vocab)?
    } else {
        logits
    };
    let next = g.b.argmax(scores, -1, false)?;
    let top_k = TOP_K_MAX.min(vocab as u32);
    let k = &spec.keys;
    let max_positions = match k.max_positions_default {
        Some(default) => c.u64_or(k.max_positions, default)?,
        None => c.u64(k.max_positions)?,
    };
    g.b.update_state("token", g.b.unsqueeze(next, 1)?)?;
    let mut outputs = vec![("next_token", next)];
    if variant.sample {
        let (values, indices) = g.b.top_k(scores, top_k)?;
        outputs.push(("top_values", values));
        outputs.push(("top_indices", indices));
    }
    if variant.logits {
        outputs.push(("logits", logits));
    }
    let graph = g.compile(&outputs)?;
    Ok((
        graph,
        ModelInfo {
            vocab,
            max_positions,
            top_k,
            kv_bytes: d.layers * 2 * d.kv_heads * d.head_dim * 4,
        },
    ))
}

/// Which keys a layer attends to, in which order (the key mask and, for
/// ALiBi, the key positions follow the same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keys {
    /// A prefill: its own tokens only (the session's cache is empty).
    New,
    /// The cache, then the new tokens (growing caches).
    OldThenNew,
    /// The cache's slots after this step's tokens were written from slot
    /// `cache_slot` (the node) on, in place (slot caches).
    Written(Node),
}

fn penalize(g: &Graph, logits: Node, vocab: u64) -> Result<Node, Error> {
    let seen = g.input("seen", Dtype::Boolean, &[sym("batch"), Dim::Fixed(vocab)])?;
    let penalty = g.input("penalty", Dtype::F32, &[sym("batch"), Dim::Fixed(1)])?;
    let zero = g.scalar(0.0, Dtype::F32)?;
    let negative = g.b.compare(CompareOp::Less, logits, zero)?;
    let scaled =
        g.b.select(negative, g.mul(logits, penalty)?, g.div(logits, penalty)?)?;
    g.b.select(seen, scaled, logits)
}
