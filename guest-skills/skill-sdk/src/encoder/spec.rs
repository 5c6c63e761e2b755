//! Encoder families as data: where each family keeps its weights, which
//! config keys size it, how it embeds positions and which heads it has.
//! The families themselves are in `families.rs`.
//!
//! Adding a BERT-like family is adding one [`FamilySpec`] to
//! [`FAMILIES`](super::families::FAMILIES) (and a fixture). Names are relative: encoder weights are
//! `{base}{body}{name}`, where `base` is the first of `bases` under which the
//! checkpoint has the word embeddings (`bert.` in a `BertForMaskedLM`, empty
//! in a `BertModel`); pooler weights are `{base}{name}`; head weights are
//! at the checkpoint's root.

/// Config keys that size the encoder (they differ per family).
#[derive(Debug)]
pub struct ConfigKeys {
    pub hidden: &'static str,
    pub heads: &'static str,
    pub layers: &'static str,
    /// Layer-norm epsilon key and its default.
    pub eps: Option<&'static str>,
    pub eps_default: f64,
    /// Activation key and its default.
    pub act: &'static str,
    pub act_default: &'static str,
}

/// How token positions are numbered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Positions {
    /// 0, 1, 2, ...
    FromZero,
    /// `pad_token_id + 1`, ... (RoBERTa and its descendants).
    AfterPadding,
}

/// The embedding layer.
#[derive(Debug)]
pub struct EmbeddingSpec {
    pub word: &'static str,
    /// Absolute position table; a model may leave it out when its
    /// attention is relative (DeBERTa-v2 with `position_biased_input` off).
    pub position: &'static str,
    /// Token-type (segment) table, when the family has one.
    pub token_type: Option<&'static str>,
    pub norm: &'static str,
    /// Linear map from the embedding width to the hidden width, when the
    /// family factorises its embeddings (ELECTRA, ALBERT) and the weight exists.
    pub project: Option<&'static str>,
    /// The projection comes before the norm (DeBERTa-v2), not after it.
    pub project_before_norm: bool,
    pub positions: Positions,
    /// LayoutLM's 2-D box tables (x, y, h, w); text-only requests use the
    /// all-zero box, as transformers does without `bbox`.
    pub boxes: Option<[&'static str; 4]>,
}

/// How a block projects queries, keys and values.
#[derive(Clone, Copy, Debug)]
pub enum Qkv {
    /// Three linear layers.
    Separate {
        query: &'static str,
        key: &'static str,
        value: &'static str,
    },
    /// DeBERTa (v1): one projection without bias whose rows are, per head,
    /// that head's query, key and value rows; then query and value biases.
    PerHeadFused {
        weight: &'static str,
        q_bias: &'static str,
        v_bias: &'static str,
    },
}

/// Which weights make one transformer block, relative to its prefix.
#[derive(Debug)]
pub struct BlockSpec {
    pub qkv: Qkv,
    pub out: &'static str,
    pub attn_norm: &'static str,
    pub ffn_in: &'static str,
    pub ffn_out: &'static str,
    pub ffn_norm: &'static str,
}

/// The kind of transformer block.
#[derive(Debug)]
pub enum Block {
    /// BERT's: attention, add & norm, feed-forward, add & norm.
    PostNorm(BlockSpec),
    /// MobileBERT's bottlenecked block with stacked feed-forward networks
    /// and `no_norm` (an element-wise affine) or layer norms; its weight
    /// names are fixed (see `encoder::mobilebert`).
    MobileBert,
    /// XLM / FlauBERT: per-layer module lists (`attentions.{l}.q_lin`,
    /// `layer_norm1.{l}`, `ffns.{l}.lin1`, `layer_norm2.{l}`), post-norm or
    /// `pre_norm` as the config says, hidden states zeroed at padding after
    /// the embeddings and every layer (see `encoder::xlm`).
    Xlm,
}

/// How the block prefixes are laid out.
#[derive(Clone, Copy, Debug)]
pub enum Layers {
    /// `{prefix}{l}.` for each layer l.
    PerLayer(&'static str),
    /// ALBERT: `num_hidden_groups` groups of `inner_group_num` blocks shared
    /// across the layers.
    AlbertGroups,
    /// XLM: one module list per kind of weight under the body's root; the
    /// block takes its layer index (see [`Block::Xlm`]).
    Xlm,
}

/// How a block attends: densely, with a relative-position bias, or in a
/// sliding window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttentionKind {
    /// Every token sees every real token.
    Dense,
    /// MPNet: a table [buckets, heads] indexed by T5-style bidirectional
    /// log buckets of key - query, shared by every layer.
    Buckets { table: &'static str },
    /// DeBERTa: content-to-position and position-to-content scores from
    /// a relative embedding table (normalised by `norm` when the config
    /// says), projected in every layer by the block's `c2p` (keys) and
    /// `p2c` (queries) layers, or by its content key and query layers
    /// (`shared`, when the config says `share_att_key`).
    Disentangled {
        table: &'static str,
        norm: &'static str,
        c2p: &'static str,
        p2c: &'static str,
        shared: (&'static str, &'static str),
    },
    /// Longformer: a window of `attention_window / 2` tokens each side
    /// (see `encoder::longformer`); the first token attends globally through
    /// these projections when a skill asks (classification).
    SlidingWindow { global: [&'static str; 3] },
}

/// What a family's base model calls its pooled output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PoolerSpec {
    /// None (ELECTRA, DistilBERT, RoBERTa heads without a pooler).
    None,
    /// `tanh(dense(h[:, 0]))` (BERT's pooler), when the weight exists.
    DenseTanh(&'static str),
    /// `h[:, 0]`, then a linear projection when the weight exists (DPR).
    ClsProjection(&'static str),
}

/// An activation a head uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HeadAct {
    /// The config's activation (`act` key).
    Config,
    /// The config's `pooler_hidden_act` (default gelu).
    Pooler,
    Named(&'static str),
}

/// The masked-LM head: dense, activation, norm (none of them for a bare
/// projection such as XLM's `pred_layer.proj`), then a decoder tied to the
/// word embeddings when its weight is not stored.
#[derive(Debug)]
pub struct MlmSpec {
    pub dense: Option<&'static str>,
    pub act: HeadAct,
    pub norm: Option<&'static str>,
    /// The head norm's epsilon when not the config's.
    pub norm_eps: Option<f64>,
    pub decoder: &'static str,
    /// Where the output bias may be stored (first found wins).
    pub bias: &'static [&'static str],
    /// MobileBERT: a weight [hidden - embedding, vocab] whose transpose
    /// continues the decoder past the embedding width.
    pub extra: Option<&'static str>,
}

/// The sequence-classification head.
#[derive(Debug)]
pub struct ClassifierSpec {
    /// What the head reads: the pooler output or the first token.
    pub input: ClassifierInput,
    /// An optional dense layer and its activation before the output layer.
    pub dense: Option<(&'static str, HeadAct)>,
    pub out: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClassifierInput {
    Pooler,
    FirstToken,
}

/// One encoder family.
#[derive(Debug)]
pub struct FamilySpec {
    /// `model_type` values served by this spec.
    pub model_types: &'static [&'static str],
    pub bases: &'static [&'static str],
    pub body: &'static str,
    pub keys: ConfigKeys,
    pub embeddings: EmbeddingSpec,
    pub layers: Layers,
    pub block: Block,
    pub attention: AttentionKind,
    pub pooler: PoolerSpec,
    /// How `text-embedding` pools a model without sentence-transformers
    /// files: true for the pooler output, false for the mean of the tokens.
    pub embed_with_pooler: bool,
    pub mlm: Option<MlmSpec>,
    pub classifier: Option<ClassifierSpec>,
    /// The token-classification output layer.
    pub token_classifier: Option<&'static str>,
}

pub use super::families::{family, model_types, FAMILIES};
