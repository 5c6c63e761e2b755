//! The encoder-decoder families served: one [`FamilySpec`] each.

use super::spec::*;

const BART_KEYS: ConfigKeys = ConfigKeys {
    d_model: "d_model",
    enc_layers: "encoder_layers",
    dec_layers: "decoder_layers",
    heads: "encoder_attention_heads",
    head_dim: None,
    ffn: "encoder_ffn_dim",
    max_positions: Some("max_position_embeddings"),
};

const BART_BLOCK: BlockNames = BlockNames {
    attn: "self_attn",
    attn_norm: "self_attn_layer_norm",
    cross: "encoder_attn",
    cross_norm: "encoder_attn_layer_norm",
    ffn_in: "fc1",
    ffn_out: "fc2",
    ffn_norm: "final_layer_norm",
};

const BART: FamilySpec = FamilySpec {
    model_types: &["bart"],
    keys: BART_KEYS,
    encoder: "model.encoder",
    decoder: "model.decoder",
    block: "layers.{i}",
    enc_block: BART_BLOCK,
    dec_block: BART_BLOCK,
    proj: ["q_proj", "k_proj", "v_proj", "out_proj"],
    embed: &[
        "model.shared.weight",
        "model.encoder.embed_tokens.weight",
        "model.decoder.embed_tokens.weight",
    ],
    lm_head: "lm_head.weight",
    logits_bias: Some("final_logits_bias"),
    embed_norm: Some("layernorm_embedding"),
    dec_embed_norm_first: false,
    final_norm: "layer_norm",
    norm: NormPlace::Post,
    norm_kind: NormKind::Layer,
    positions: Positions::Table { offset: 2 },
    scale_embedding: Some(false),
    input: EncoderInput::Tokens,
    scaled_output: false,
    unscaled_attention: false,
    act: "activation_function",
    act_default: "gelu",
    eps: None,
    eps_default: 1e-5,
    languages: false,
    window: None,
};

const T5_ENC_BLOCK: BlockNames = BlockNames {
    attn: "layer.0.SelfAttention",
    attn_norm: "layer.0.layer_norm",
    cross: "",
    cross_norm: "",
    ffn_in: "layer.1.DenseReluDense.wi",
    ffn_out: "layer.1.DenseReluDense.wo",
    ffn_norm: "layer.1.layer_norm",
};

const T5_DEC_BLOCK: BlockNames = BlockNames {
    attn: "layer.0.SelfAttention",
    attn_norm: "layer.0.layer_norm",
    cross: "layer.1.EncDecAttention",
    cross_norm: "layer.1.layer_norm",
    ffn_in: "layer.2.DenseReluDense.wi",
    ffn_out: "layer.2.DenseReluDense.wo",
    ffn_norm: "layer.2.layer_norm",
};

const T5: FamilySpec = FamilySpec {
    model_types: &["t5"],
    keys: ConfigKeys {
        d_model: "d_model",
        enc_layers: "num_layers",
        dec_layers: "num_decoder_layers",
        heads: "num_heads",
        head_dim: Some("d_kv"),
        ffn: "d_ff",
        max_positions: None,
    },
    encoder: "encoder",
    decoder: "decoder",
    block: "block.{i}",
    enc_block: T5_ENC_BLOCK,
    dec_block: T5_DEC_BLOCK,
    proj: ["q", "k", "v", "o"],
    embed: &[
        "shared.weight",
        "encoder.embed_tokens.weight",
        "decoder.embed_tokens.weight",
    ],
    lm_head: "lm_head.weight",
    logits_bias: None,
    embed_norm: None,
    dec_embed_norm_first: false,
    final_norm: "final_layer_norm",
    norm: NormPlace::Pre,
    norm_kind: NormKind::Rms,
    positions: Positions::RelativeBuckets,
    scale_embedding: Some(false),
    input: EncoderInput::Tokens,
    scaled_output: true,
    unscaled_attention: true,
    act: "feed_forward_proj",
    act_default: "relu",
    eps: Some("layer_norm_epsilon"),
    eps_default: 1e-6,
    languages: false,
    window: None,
};

/// Every family served.
pub const FAMILIES: &[FamilySpec] = &[
    BART,
    FamilySpec {
        model_types: &["mbart"],
        norm: NormPlace::Pre,
        languages: true,
        ..BART
    },
    FamilySpec {
        model_types: &["pegasus"],
        norm: NormPlace::Pre,
        positions: Positions::Table { offset: 0 },
        act_default: "relu",
        ..BART
    },
    FamilySpec {
        model_types: &["blenderbot"],
        norm: NormPlace::Pre,
        positions: Positions::Table { offset: 0 },
        ..BART
    },
    FamilySpec {
        model_types: &["blenderbot-small"],
        positions: Positions::Table { offset: 0 },
        dec_embed_norm_first: true,
        ..BART
    },
    FamilySpec {
        model_types: &["led"],
        keys: ConfigKeys {
            max_positions: Some("max_encoder_position_embeddings"),
            ..BART_KEYS
        },
        encoder: "led.encoder",
        decoder: "led.decoder",
        embed: &[
            "led.shared.weight",
            "led.encoder.embed_tokens.weight",
            "led.decoder.embed_tokens.weight",
        ],
        positions: Positions::Table { offset: 0 },
        window: Some(WindowNames {
            local: [
                "longformer_self_attn.query",
                "longformer_self_attn.key",
                "longformer_self_attn.value",
            ],
            global: [
                "longformer_self_attn.query_global",
                "longformer_self_attn.key_global",
                "longformer_self_attn.value_global",
            ],
            out: "output",
        }),
        ..BART
    },
    FamilySpec {
        model_types: &["whisper"],
        keys: ConfigKeys {
            heads: "decoder_attention_heads",
            ffn: "decoder_ffn_dim",
            max_positions: Some("max_target_positions"),
            ..BART_KEYS
        },
        embed: &["model.decoder.embed_tokens.weight"],
        lm_head: "proj_out.weight",
        logits_bias: None,
        embed_norm: None,
        norm: NormPlace::Pre,
        positions: Positions::Table { offset: 0 },
        scale_embedding: None,
        input: EncoderInput::Mel,
        ..BART
    },
    T5,
    FamilySpec {
        model_types: &["mt5"],
        scaled_output: false,
        ..T5
    },
];

/// The family of a config's `model_type`.
pub fn family(model_type: &str) -> Option<&'static FamilySpec> {
    FAMILIES
        .iter()
        .find(|f| f.model_types.contains(&model_type))
}

/// Every `model_type` served.
pub fn model_types() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().copied())
        .collect()
}
