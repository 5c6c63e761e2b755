//! What distinguishes one encoder-decoder family from another, as data:
//! weight names, config keys, where the norms sit, how positions enter.

/// Where each sub-layer's normalisation sits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormPlace {
    /// `x + f(norm(x))` (mBART, Pegasus, Blenderbot, T5).
    Pre,
    /// `norm(x + f(x))` (BART, Blenderbot-small, LED).
    Post,
}

/// The normalisation of the family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormKind {
    /// Layer norm with a bias.
    Layer,
    /// T5's root-mean-square norm (no mean, no bias).
    Rms,
}

/// How token positions enter the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Positions {
    /// A learned table `embed_positions` read at position + `offset` (BART
    /// and mBART 2, others 0). Pegasus' sinusoidal table is stored the same
    /// way in its checkpoints.
    Table { offset: i64 },
    /// T5's bucketed relative attention bias (`relative_attention_bias` of
    /// the first block's self-attention, shared by every block).
    RelativeBuckets,
}

/// What the encoder reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EncoderInput {
    /// Token ids through the shared embeddings.
    Tokens,
    /// Whisper: log-mel features [batch, mels, frames] through `conv1`
    /// (kernel 3) and `conv2` (kernel 3, stride 2), each followed by GELU,
    /// plus the encoder's whole position table (`max_source_positions`
    /// rows: the frames are fixed).
    Mel,
}

/// Names of one encoder or decoder block's weights, relative to the block.
#[derive(Clone, Copy, Debug)]
pub struct BlockNames {
    pub attn: &'static str,
    pub attn_norm: &'static str,
    /// Cross-attention (decoder blocks only).
    pub cross: &'static str,
    pub cross_norm: &'static str,
    /// The feed-forward input projection; gated families add `_0` (the
    /// activated half) and `_1`.
    pub ffn_in: &'static str,
    pub ffn_out: &'static str,
    pub ffn_norm: &'static str,
}

/// LED's encoder attention: Longformer's sliding window with global
/// attention on the first token; names under the block's attention prefix.
#[derive(Clone, Copy, Debug)]
pub struct WindowNames {
    /// Local q, k, v projections.
    pub local: [&'static str; 3],
    /// Global q, k, v projections.
    pub global: [&'static str; 3],
    pub out: &'static str,
}

/// Config keys of the dimensions.
#[derive(Clone, Copy, Debug)]
pub struct ConfigKeys {
    pub d_model: &'static str,
    pub enc_layers: &'static str,
    pub dec_layers: &'static str,
    pub heads: &'static str,
    /// Per-head width; `None`: d_model / heads.
    pub head_dim: Option<&'static str>,
    pub ffn: &'static str,
    pub max_positions: Option<&'static str>,
}

/// One encoder-decoder family.
#[derive(Clone, Copy, Debug)]
pub struct FamilySpec {
    /// `model_type` values of config.json.
    pub model_types: &'static [&'static str],
    pub keys: ConfigKeys,
    /// Prefix of the encoder and decoder stacks (`model.encoder`, `encoder`).
    pub encoder: &'static str,
    pub decoder: &'static str,
    /// Block path under a stack, `{i}` for the index (`layers.{i}`).
    pub block: &'static str,
    pub enc_block: BlockNames,
    pub dec_block: BlockNames,
    /// q, k, v and output projections under an attention prefix.
    pub proj: [&'static str; 4],
    /// Token embeddings, first present wins.
    pub embed: &'static [&'static str],
    /// LM head weight; absent: tied to the embeddings.
    pub lm_head: &'static str,
    /// Name of the final bias of the logits, if the family has one.
    pub logits_bias: Option<&'static str>,
    /// Norm after the embeddings, under a stack (used where present).
    pub embed_norm: Option<&'static str>,
    /// The decoder normalises the token embeddings before the positions are
    /// added (Blenderbot-small), not their sum.
    pub dec_embed_norm_first: bool,
    /// Norm after the last block, under a stack (used where present).
    pub final_norm: &'static str,
    pub norm: NormPlace,
    pub norm_kind: NormKind,
    pub positions: Positions,
    /// Default of config `scale_embedding` (embeddings times sqrt(d_model));
    /// `None`: never scaled, whatever the config says (Whisper).
    pub scale_embedding: Option<bool>,
    pub input: EncoderInput,
    /// The decoder output is scaled by d_model^-0.5 before the LM head
    /// when config `scale_decoder_outputs` says so (else when
    /// `tie_word_embeddings` is not false): T5, not mT5.
    pub scaled_output: bool,
    /// Attention scores are not scaled by 1/sqrt(head_dim) (T5).
    pub unscaled_attention: bool,
    /// Config key of the activation and its default.
    pub act: &'static str,
    pub act_default: &'static str,
    /// Config key of the norm epsilon and its default.
    pub eps: Option<&'static str>,
    pub eps_default: f64,
    /// The tokenizer has language codes (`src_lang`, `tgt_lang`).
    pub languages: bool,
    /// The encoder attends in sliding windows (LED); `None`: dense.
    pub window: Option<WindowNames>,
}
