//! What distinguishes one decoder architecture from another, as data:
//! weight names, config keys, the norm and where it sits, the q/k/v layout,
//! the MLP, how positions enter and which layers attend in a window. The
//! architectures themselves are in `families.rs`; the builder that reads
//! them is `decoder.rs` (and `layer.rs` for one block).
//!
//! Names are relative: the decoder's weights are `{root}{name}`, where
//! `root` is [`Root::Fixed`] or the model base ([`Root::Base`], `model.` in a
//! causal LM, deeper in a LLaVA); a block's weights are
//! `{root}{layers}{i}.{name}`.

/// Where the decoder's weights are rooted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Root {
    /// Always this prefix (`transformer.`): the architecture is served as a
    /// causal LM only.
    Fixed(&'static str),
    /// The model base: `model.` in a causal LM, the language model's base
    /// in a LLaVA or Qwen2-VL checkpoint, which may embed this decoder.
    Base,
}

/// Config keys that size the decoder (they differ per architecture).
#[derive(Clone, Copy, Debug)]
pub struct ConfigKeys {
    pub hidden: &'static str,
    pub heads: &'static str,
    pub layers: &'static str,
    /// Grouped-query attention: key/value heads (default: `heads`).
    pub kv_heads: &'static str,
    /// Per-head width when the config may set it (LLaMA-style configs:
    /// heads x head_dim need not be the hidden width); `None`: hidden / heads.
    pub head_dim: Option<&'static str>,
    /// Norm epsilon key and its default; `None`: always the default (OPT).
    pub eps: Option<&'static str>,
    pub eps_default: f64,
    /// Activation key and its default; `None`: always the default (BLOOM's
    /// tanh-approximated gelu).
    pub act: Option<&'static str>,
    pub act_default: &'static str,
    /// The context length key and its default; `None`: the key is required.
    pub max_positions: &'static str,
    pub max_positions_default: Option<u64>,
}

/// The normalisation of the architecture (every norm of the decoder).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormKind {
    /// Layer norm, `{name}.weight` and `{name}.bias`.
    Layer,
    /// Root-mean-square norm, `{name}.weight` only.
    Rms,
}

/// How a block projects queries, keys and values (names under the block).
#[derive(Clone, Copy, Debug)]
pub enum Qkv {
    /// Three projections (concatenated into one when the graph fuses them).
    Separate {
        q: &'static str,
        k: &'static str,
        v: &'static str,
    },
    /// One projection whose output is `[q | k | v]` (GPT-2's `c_attn`).
    Concatenated(&'static str),
    /// One projection whose output is, per head, that head's q, k and v
    /// (BLOOM's `query_key_value`: [heads, 3, head_dim]).
    PerHead(&'static str),
    /// One projection split in `shards` equal shards, each `[q | v | k]`
    /// (CodeGen's `qkv_proj`, 4 shards); the heads must divide into them.
    QvkShards { proj: &'static str, shards: u64 },
}

/// How weights are stored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Linear {
    /// `[out, in]` (`nn.Linear`).
    Standard,
    /// `[in, out]`, with a bias (GPT-2's `Conv1D`).
    Conv1d,
}

/// The feed-forward network (names under the block).
#[derive(Clone, Copy, Debug)]
pub enum Mlp {
    /// `down(act(up(x)))`.
    Plain {
        up: &'static str,
        down: &'static str,
    },
    /// `down(act(gate(x)) * up(x))` (SwiGLU; gate and up concatenated into
    /// one projection when the graph fuses them).
    Gated {
        gate: &'static str,
        up: &'static str,
        down: &'static str,
    },
}

/// Where the block's norms sit (pre-norm in every case).
#[derive(Clone, Copy, Debug)]
pub enum Residual {
    /// `h + attn(norm1(h))`, then `+ mlp(norm2(.))` with `norm2` named here.
    Sequential { mlp_norm: &'static str },
    /// GPT-J, CodeGen: `h + attn(norm1(h)) + mlp(norm1(h))`, one norm.
    Parallel,
}

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Positions {
    /// A learned table (under the root) read at position + `offset` (OPT 2,
    /// GPT-2 and GPT-Neo 0), added to the token embeddings.
    Learned { table: &'static str, offset: i64 },
    /// Rotary embeddings of queries and keys over the first `dim` dims of
    /// a head: the config key of a partial width (`None`: the whole head),
    /// the frequencies as two halves (LLaMA's rotate-half) or pairwise
    /// `interleaved` (GPT-J, CodeGen). With Qwen2-VL: M-RoPE.
    Rotary {
        dim: Option<&'static str>,
        interleaved: bool,
    },
    /// ALiBi: a per-head bias linear in the key position (BLOOM).
    Alibi,
}

/// Which layers attend within a sliding window of positions.
#[derive(Clone, Copy, Debug)]
pub enum Window {
    /// Every layer attends to every earlier position.
    None,
    /// GPT-Neo: `types` lists `[["global", "local"], n]` groups (the pattern
    /// repeated n times); local layers attend within `size` positions.
    PerLayer {
        types: &'static str,
        size: &'static str,
    },
    /// Every layer attends within `key` positions (`default` when absent).
    /// A config whose key is null is `unwindowed`'s (Mistral: LLaMA's
    /// layers, no window).
    All {
        key: &'static str,
        default: u64,
        unwindowed: &'static DecoderSpec,
    },
}

/// Names of one block's weights, relative to the block.
#[derive(Clone, Copy, Debug)]
pub struct BlockSpec {
    pub attn_norm: &'static str,
    pub qkv: Qkv,
    pub out: &'static str,
    pub residual: Residual,
    pub mlp: Mlp,
}

/// One decoder architecture.
#[derive(Clone, Copy, Debug)]
pub struct DecoderSpec {
    /// Names its graphs (`gptj-decode-grow`).
    pub name: &'static str,
    /// `model_type` values of config.json served by this spec.
    pub model_types: &'static [&'static str],
    pub keys: ConfigKeys,
    pub root: Root,
    /// Token embeddings, under the root (the LM head when none is stored).
    pub embed: &'static str,
    /// Norm of the token embeddings, under the root (BLOOM).
    pub embed_norm: Option<&'static str>,
    /// Block prefix under the root; block `i` is `{layers}{i}`.
    pub layers: &'static str,
    pub block: BlockSpec,
    /// Norm after the last block, under the root.
    pub final_norm: &'static str,
    /// LM head at the checkpoint's root: `{lm_head}.weight` (a LLaVA names
    /// its own; absent: tied to the embeddings) and an optional
    /// `{lm_head}.bias`.
    pub lm_head: &'static str,
    pub norm: NormKind,
    pub linear: Linear,
    pub positions: Positions,
    pub window: Window,
    /// Attention scores are not scaled by 1/sqrt(head_dim) (GPT-Neo).
    pub unscaled_attention: bool,
}

impl DecoderSpec {
    /// Whether the graphs read each cached key's position
    /// (`cache_positions`): ALiBi and sliding windows.
    pub fn key_positions(&self) -> bool {
        self.positions == Positions::Alibi || !matches!(self.window, Window::None)
    }
}
