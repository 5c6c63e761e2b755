//! Decoder graphs (gpt2, gpt_neo, opt, llama, mistral, qwen2, bloom, gptj, codegen) with the KV cache as
//! session state: a prefill graph (any number of new tokens) and a decode
//! graph (one new token per sequence).
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
//! `last_index` [1] (seq - 1); BLOOM and
//! GPT-Neo also `cache_positions` [batch, cache] (each slot's token
//! position); Qwen2-VL also `mrope_positions` [3, batch, seq] (M-RoPE,
//! `mrope.rs`). A prefill starts its session, so it takes neither cache input. State:
//! `k<i>`, `v<i>` [cache, batch, kv_heads, head_dim] with slots, [batch,
//! kv_heads, past, head_dim] when growing; `token` [batch, 1], the last
//! run's `next_token`, which a *fed* decode step takes instead of
//! `input_ids`. Outputs: `next_token`
//! [batch] (argmax) and, when sampling, `top_values`/`top_indices`
//! [batch, K].

use skill_sdk::config::Json;
use skill_sdk::graph::AttentionOptions;
use skill_sdk::graph::{BinaryOp, CompareOp, Node};
use skill_sdk::runtime::CompiledGraph;
use skill_sdk::{Dim, Dtype, Error, Graph};

pub use crate::arch::Arch;
pub(crate) use crate::dims::{dims, Dims};
use crate::llava::Llava;
use crate::positions::{alibi_mask, rope_tables, window_mask};
use crate::qwen2_vl::Qwen2Vl;

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

    fn dim(self) -> Dim {
        match self {
            Cache::Growing => sym("past"),
            Cache::Slots(n) => Dim::Fixed(n),
        }
    }
}

/// Builds and compiles the decoder graph with its KV `cache`; a `variant`
/// may add outputs or inputs. `fuse` concatenates the q/k/v and gate/up
/// weights into one projection each (fewer, larger products: a win for
/// small-batch GPU decode; CPU runtimes prefer separate ones).
pub fn build(
    arch: Arch,
    c: &Json,
    variant: Variant,
    cache: Cache,
    fuse: bool,
    llava: Option<&Llava>,
    vl: Option<&Qwen2Vl>,
) -> Result<(CompiledGraph, ModelInfo), Error> {
    let d = Dims {
        fuse,
        ..dims(arch, c)?
    };
    let kept = match cache {
        Cache::Growing => "grow".to_string(),
        Cache::Slots(n) => format!("c{n}"),
    };
    let name = format!(
        "{arch:?}-{}-{kept}{}{}{}{}{}",
        match (variant.decode, variant.extend) {
            (true, true) => "extend",
            (true, false) => "decode",
            _ => "prefill",
        },
        if variant.sample { "-sample" } else { "" },
        if variant.logits { "-logits" } else { "" },
        if variant.penalty { "-penalty" } else { "" },
        if variant.fed { "-fed" } else { "" },
        if variant.images { "-images" } else { "" }
    );
    let g = Graph::new(&name.to_lowercase());
    if variant.extend && !variant.decode {
        return Err(skill_sdk::internal(
            "an extend step is a decode graph of several tokens per row",
        ));
    }
    let vision = llava.is_some() || vl.is_some();
    if variant.images && (!vision || (variant.decode && !variant.extend)) {
        return Err(skill_sdk::internal(
            "images go into a prefill or extend step of a llava model",
        ));
    }
    if variant.fed && (!variant.decode || variant.extend) {
        return Err(skill_sdk::internal(
            "a fed step is a decode step of one token per row",
        ));
    }
    let seq = if variant.decode && !variant.extend {
        Dim::Fixed(1)
    } else {
        sym("seq")
    };
    let bs = [sym("batch"), seq];
    let slots = [sym("batch"), cache.dim()];
    // A prefill always starts a session: its cache is empty, so it attends
    // to its own tokens only (and takes no cache_mask/cache_positions).
    let order = match (variant.decode, cache) {
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
    let ids = match variant.fed {
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
    let slot_extend = variant.extend && matches!(order, Keys::Written(_));
    let key_pos = match arch.key_positions() || slot_extend {
        true => Some(with_cache("cache_positions", pos)?),
        false => None,
    };
    if let (true, Some(kp)) = (slot_extend, key_pos) {
        let q = g.b.unsqueeze(g.b.unsqueeze(pos, 1)?, -1)?;
        let k = g.b.unsqueeze(g.b.unsqueeze(kp, 1)?, 1)?;
        let earlier = g.b.compare(CompareOp::LessOrEqual, k, q)?;
        keys = g.b.logical_and(keys, earlier)?;
    }

    // The decoder's weights: `model.` in a causal LM, deeper in a LLaVA.
    let base = llava.map_or("model.", |l| l.lm_base.as_str());
    let base = vl.map_or(base, |q| q.lm_base.as_str());
    if llava.is_some() && !matches!(arch, Arch::Llama | Arch::Qwen2 | Arch::Mistral) {
        return Err(Error::Unsupported(format!(
            "a LLaVA decoder of type {arch:?} (served: llama, mistral, qwen2)"
        )));
    }
    let (embed_name, mut h) = match arch {
        Arch::Gpt2 | Arch::GptNeo => {
            let e = g.b.embedding(g.weight("transformer.wte.weight")?, ids)?;
            let p = g.b.embedding(g.weight("transformer.wpe.weight")?, pos)?;
            ("transformer.wte.weight", g.add(e, p)?)
        }
        Arch::Opt => {
            let e =
                g.b.embedding(g.weight("model.decoder.embed_tokens.weight")?, ids)?;
            let two = g.scalar(2.0, Dtype::I64)?;
            let shifted = g.b.binary(BinaryOp::Add, pos, two)?;
            let p =
                g.b.embedding(g.weight("model.decoder.embed_positions.weight")?, shifted)?;
            ("model.decoder.embed_tokens.weight", g.add(e, p)?)
        }
        Arch::Llama | Arch::Qwen2 | Arch::Mistral => {
            let e =
                g.b.embedding(g.weight(&format!("{base}embed_tokens.weight"))?, ids)?;
            // LLaVA: the image tokens' embeddings replaced by image features.
            let e = match (variant.images, llava) {
                (true, Some(l)) => l.splice(&g, e, &bs)?,
                _ => e,
            };
            let e = match (variant.images, vl) {
                (true, Some(q)) => q.splice(&g, e, &bs)?,
                _ => e,
            };
            ("embed_tokens.weight", e)
        }
        Arch::GptJ | Arch::CodeGen => (
            "transformer.wte.weight",
            g.b.embedding(g.weight("transformer.wte.weight")?, ids)?,
        ),
        Arch::Bloom => {
            let e =
                g.b.embedding(g.weight("transformer.word_embeddings.weight")?, ids)?;
            let e = g.layer_norm(e, "transformer.word_embeddings_layernorm", d.eps)?;
            ("transformer.word_embeddings.weight", e)
        }
    };
    // BLOOM: ALiBi bias plus padding mask as one additive attention mask.
    let (keys, local) = match (arch, key_pos) {
        (Arch::Bloom, Some(kp)) => (alibi_mask(&g, d.heads, keys, keep, kp)?, None),
        (Arch::GptNeo | Arch::Mistral, Some(kp)) if d.local.contains(&true) => {
            (keys, Some(window_mask(&g, pos, kp, keys, d.window)?))
        }
        _ => (keys, None),
    };
    let rope = match arch {
        // Qwen2-VL: M-RoPE from `mrope_positions`.
        Arch::Qwen2 if vl.is_some() => vl.map(|q| q.mrope.tables(&g, &bs)).transpose()?,
        Arch::Llama | Arch::Qwen2 | Arch::Mistral => {
            Some(rope_tables(&g, c, pos, d.head_dim, false)?)
        }
        Arch::GptJ | Arch::CodeGen => {
            let dim = c.u64_or("rotary_dim", d.head_dim)?;
            Some(rope_tables(&g, c, pos, dim, true)?)
        }
        _ => None,
    };
    for i in 0..d.layers {
        let mask = match (d.local.get(i as usize), local) {
            (Some(true), Some(l)) => l,
            _ => keys,
        };
        h = layer(&g, arch, &d, (base, i), h, mask, rope, cache, order)?;
    }
    let h = g.b.squeeze(g.b.gather(h, last, 1)?, 1)?;
    let h = match arch {
        Arch::Gpt2 | Arch::Bloom | Arch::GptJ | Arch::GptNeo | Arch::CodeGen => {
            g.layer_norm(h, "transformer.ln_f", d.eps)?
        }
        Arch::Opt => g.layer_norm(h, "model.decoder.final_layer_norm", d.eps)?,
        _ => {
            g.b.rms_norm(h, g.weight(&format!("{base}norm.weight"))?, d.eps)?
        }
    };
    let embed_name = match embed_name {
        "embed_tokens.weight" => format!("{base}{embed_name}"),
        other => other.to_string(),
    };
    let head_name = llava.map_or("lm_head.weight", |l| l.head.as_str());
    let head = if g.has(head_name) {
        head_name
    } else {
        embed_name.as_str()
    };
    let head_bias = match g.has("lm_head.bias") && head == "lm_head.weight" {
        true => Some(g.weight("lm_head.bias")?),
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
    let max_positions = match arch {
        Arch::Gpt2 | Arch::GptJ | Arch::CodeGen => c.u64("n_positions")?,
        // ALiBi has no learned positions; cap at a conventional context.
        Arch::Bloom => c.u64_or("seq_length", 2048)?,
        _ => c.u64_or("max_position_embeddings", 2048)?,
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
enum Keys {
    /// A prefill: its own tokens only (the session's cache is empty).
    New,
    /// The cache, then the new tokens (growing caches).
    OldThenNew,
    /// The cache's slots after this step's tokens were written from slot
    /// `cache_slot` (the node) on, in place (slot caches).
    Written(Node),
}

/// Which optional parts a decoder graph has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Variant {
    /// With the session's cache: one new token per sequence (else a prompt
    /// of any length that starts the session).
    pub decode: bool,
    /// With `decode`: any number of new tokens per sequence, causal among
    /// themselves after the cache (a queued prompt joining a running batch;
    /// growing caches only).
    pub extend: bool,
    /// Outputs `top_values`/`top_indices` [batch, K] for sampling (greedy
    /// generation needs only `next_token`).
    pub sample: bool,
    /// Output the raw last-position `logits` [batch, vocab].
    pub logits: bool,
    /// Inputs `seen` (bool [batch, vocab]: tokens already in the sequence)
    /// and `penalty` (f32 [batch, 1]) apply transformers' repetition penalty
    /// before argmax and top-k: seen logits below 0 are multiplied by the
    /// penalty, others divided by it.
    pub penalty: bool,
    /// With `decode` (not `extend`): no `input_ids`; each row's token is the
    /// previous run's `next_token`, kept as state `token`, so the step can
    /// be submitted before that run's outputs are read.
    pub fed: bool,
    /// With a prefill or extend step of a LLaVA model: inputs
    /// `pixel_values` [images, 3, h, w], `image_mask` (bool) and
    /// `image_rows` [batch, seq]; where the mask is set, the token
    /// embedding is replaced by the image feature row `image_rows` picks
    /// among the step's images' projected features (see `llava.rs`).
    pub images: bool,
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

/// x @ W + b with GPT-2's Conv1D layout (W is [in, out]).
fn conv1d(g: &Graph, x: Node, prefix: &str) -> Result<Node, Error> {
    let y = g.b.matmul(x, g.weight(&format!("{prefix}.weight"))?)?;
    g.add(y, g.weight(&format!("{prefix}.bias"))?)
}

#[allow(clippy::too_many_arguments)]
fn layer(
    g: &Graph,
    arch: Arch,
    d: &Dims,
    (base, i): (&str, u64),
    h: Node,
    keys: Node,
    rope: Option<(Node, Node)>,
    cache: Cache,
    order: Keys,
) -> Result<Node, Error> {
    let p = match arch {
        Arch::Gpt2 | Arch::Bloom | Arch::GptJ | Arch::GptNeo | Arch::CodeGen => {
            format!("transformer.h.{i}")
        }
        Arch::Opt => format!("model.decoder.layers.{i}"),
        _ => format!("{base}layers.{i}"),
    };
    let x = match arch {
        Arch::Gpt2 | Arch::GptJ | Arch::GptNeo | Arch::CodeGen => {
            g.layer_norm(h, &format!("{p}.ln_1"), d.eps)?
        }
        Arch::Opt => g.layer_norm(h, &format!("{p}.self_attn_layer_norm"), d.eps)?,
        Arch::Bloom => g.layer_norm(h, &format!("{p}.input_layernorm"), d.eps)?,
        _ => {
            g.b.rms_norm(h, g.weight(&format!("{p}.input_layernorm.weight"))?, d.eps)?
        }
    };
    let (q, k, v) = match arch {
        Arch::Gpt2 => {
            let qkv = conv1d(g, x, &format!("{p}.attn.c_attn"))?;
            let w = d.hidden as i64;
            (
                g.b.slice(qkv, -1, 0, w)?,
                g.b.slice(qkv, -1, w, 2 * w)?,
                g.b.slice(qkv, -1, 2 * w, 3 * w)?,
            )
        }
        Arch::CodeGen => {
            // Four shards, each [q | v | k] of width hidden / 4.
            let qkv = g.linear(x, &format!("{p}.attn.qkv_proj"))?;
            let w = (d.hidden / 4) as i64;
            let r = g.b.reshape(qkv, &[0, 0, 4, 3 * w])?;
            let part = |j: i64| {
                g.b.reshape(g.b.slice(r, 3, j * w, (j + 1) * w)?, &[0, 0, -1])
            };
            (part(0)?, part(2)?, part(1)?)
        }
        Arch::Bloom => {
            // Fused per head: [batch, seq, heads, 3, head_dim].
            let qkv = g.linear(x, &format!("{p}.self_attention.query_key_value"))?;
            let r =
                g.b.reshape(qkv, &[0, 0, d.heads as i64, 3, d.head_dim as i64])?;
            let part = |j: i64| -> Result<Node, Error> {
                let one = g.b.squeeze(g.b.slice(r, 3, j, j + 1)?, 3)?;
                g.b.reshape(one, &[0, 0, -1])
            };
            (part(0)?, part(1)?, part(2)?)
        }
        _ => {
            let a = match arch {
                Arch::GptJ => format!("{p}.attn"),
                Arch::GptNeo => format!("{p}.attn.attention"),
                _ => format!("{p}.self_attn"),
            };
            let (q, k, v) = (
                format!("{a}.q_proj"),
                format!("{a}.k_proj"),
                format!("{a}.v_proj"),
            );
            let parts = match d.fuse {
                true => g.fused_linear(x, &[&q, &k, &v])?,
                false => vec![g.linear(x, &q)?, g.linear(x, &k)?, g.linear(x, &v)?],
            };
            match parts[..] {
                [q, k, v] => (q, k, v),
                _ => return Err(skill_sdk::internal("fused q/k/v projection")),
            }
        }
    };
    let mut q = g.split_heads(q, d.heads, d.head_dim)?;
    let mut k = g.split_heads(k, d.kv_heads, d.head_dim)?;
    let v = g.split_heads(v, d.kv_heads, d.head_dim)?;
    if let Some(r) = rope {
        let interleaved = matches!(arch, Arch::GptJ | Arch::CodeGen);
        q = g.b.rotary(q, r.0, r.1, interleaved)?;
        k = g.b.rotary(k, r.0, r.1, interleaved)?;
    }
    // Growing caches are batch-major [batch, kv_heads, past, head_dim] (the
    // attention layout: no transposes); slot caches slot-major.
    let (shape, axis) = match cache {
        Cache::Growing => (
            [
                sym("batch"),
                Dim::Fixed(d.kv_heads),
                cache.dim(),
                Dim::Fixed(d.head_dim),
            ],
            2,
        ),
        Cache::Slots(_) => (
            [
                cache.dim(),
                sym("batch"),
                Dim::Fixed(d.kv_heads),
                Dim::Fixed(d.head_dim),
            ],
            0,
        ),
    };
    let mut kv = Vec::with_capacity(2);
    for (name, new) in [(format!("k{i}"), k), (format!("v{i}"), v)] {
        let old = g.b.state(&name, Dtype::F32, &shape)?;
        let keys = match cache {
            Cache::Growing => {
                let appended = g.b.concat(&[old, new], axis)?;
                g.b.update_state(&name, appended)?;
                match order {
                    Keys::New => new,
                    _ => appended,
                }
            }
            Cache::Slots(n) => {
                // [batch, kv_heads, seq, head_dim] -> [seq, batch, ...].
                let slot_major = g.b.permute(new, &[2, 0, 1, 3])?;
                match order {
                    // A decode step writes its slot where the cache lies.
                    Keys::Written(slot) => {
                        let written = g.b.write_rows(old, slot_major, slot)?;
                        g.b.update_state(&name, written)?;
                        g.b.permute(written, &[1, 2, 0, 3])?
                    }
                    // A prefill fills the first slots (the cache is empty).
                    _ => {
                        let filled = g.b.concat(&[slot_major, old], axis)?;
                        g.b.update_state(&name, g.b.slice(filled, axis, 0, n as i64)?)?;
                        new
                    }
                }
            }
        };
        kv.push(keys);
    }
    let (k_all, v_all) = (kv[0], kv[1]);
    let options = AttentionOptions {
        // Slot caches mask by slot (and by position in extend steps).
        causal: !matches!(order, Keys::Written(_)),
        scale: d.scale,
    };
    let a = g.merge_heads(g.b.attention(q, k_all, v_all, Some(keys), options)?)?;
    let a = match arch {
        Arch::Gpt2 => conv1d(g, a, &format!("{p}.attn.c_proj"))?,
        Arch::Opt => g.linear(a, &format!("{p}.self_attn.out_proj"))?,
        Arch::Bloom => g.linear(a, &format!("{p}.self_attention.dense"))?,
        Arch::GptJ | Arch::CodeGen => g.linear(a, &format!("{p}.attn.out_proj"))?,
        Arch::GptNeo => g.linear(a, &format!("{p}.attn.attention.out_proj"))?,
        _ => g.linear(a, &format!("{p}.self_attn.o_proj"))?,
    };
    if matches!(arch, Arch::GptJ | Arch::CodeGen) {
        // Attention and MLP both read ln_1(h) and add to the residual.
        let up = g.unary(d.act, g.linear(x, &format!("{p}.mlp.fc_in"))?)?;
        let m = g.linear(up, &format!("{p}.mlp.fc_out"))?;
        return g.add(g.add(h, a)?, m);
    }
    let h = g.add(h, a)?;
    let m = match arch {
        Arch::Bloom => {
            let x = g.layer_norm(h, &format!("{p}.post_attention_layernorm"), d.eps)?;
            let up = g.unary(d.act, g.linear(x, &format!("{p}.mlp.dense_h_to_4h"))?)?;
            g.linear(up, &format!("{p}.mlp.dense_4h_to_h"))?
        }
        Arch::Gpt2 => {
            let x = g.layer_norm(h, &format!("{p}.ln_2"), d.eps)?;
            conv1d(
                g,
                g.unary(d.act, conv1d(g, x, &format!("{p}.mlp.c_fc"))?)?,
                &format!("{p}.mlp.c_proj"),
            )?
        }
        Arch::GptNeo => {
            let x = g.layer_norm(h, &format!("{p}.ln_2"), d.eps)?;
            let up = g.unary(d.act, g.linear(x, &format!("{p}.mlp.c_fc"))?)?;
            g.linear(up, &format!("{p}.mlp.c_proj"))?
        }
        Arch::Opt => {
            let x = g.layer_norm(h, &format!("{p}.final_layer_norm"), d.eps)?;
            g.linear(
                g.unary(d.act, g.linear(x, &format!("{p}.fc1"))?)?,
                &format!("{p}.fc2"),
            )?
        }
        _ => {
            let x = g.b.rms_norm(
                h,
                g.weight(&format!("{p}.post_attention_layernorm.weight"))?,
                d.eps,
            )?;
            let (gate, up) = (format!("{p}.mlp.gate_proj"), format!("{p}.mlp.up_proj"));
            let parts = match d.fuse {
                true => g.fused_linear(x, &[&gate, &up])?,
                false => vec![g.linear(x, &gate)?, g.linear(x, &up)?],
            };
            let (gate, up) = match parts[..] {
                [gate, up] => (gate, up),
                _ => return Err(skill_sdk::internal("fused gate/up projection")),
            };
            let gate = g.unary(d.act, gate)?;
            g.linear(g.mul(gate, up)?, &format!("{p}.mlp.down_proj"))?
        }
    };
    g.add(h, m)
}
