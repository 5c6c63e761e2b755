//! The decoder architectures served: one [`DecoderSpec`] each, and the
//! parts several share (GPT-2's config keys, LLaMA's layers, GPT-J's block).

use super::spec::*;

/// GPT-2-style config keys (GPT-2, GPT-J, CodeGen).
const GPT2_KEYS: ConfigKeys = ConfigKeys {
    hidden: "n_embd",
    heads: "n_head",
    layers: "n_layer",
    kv_heads: "num_key_value_heads",
    head_dim: None,
    eps: Some("layer_norm_epsilon"),
    eps_default: 1e-5,
    act: Some("activation_function"),
    act_default: "gelu_new",
    max_positions: "n_positions",
    max_positions_default: None,
};

const GPT2: DecoderSpec = DecoderSpec {
    name: "gpt2",
    model_types: &["gpt2"],
    keys: GPT2_KEYS,
    root: Root::Fixed("transformer."),
    embed: "wte.weight",
    embed_norm: None,
    layers: "h.",
    block: BlockSpec {
        attn_norm: "ln_1",
        qkv: Qkv::Concatenated("attn.c_attn"),
        out: "attn.c_proj",
        residual: Residual::Sequential { mlp_norm: "ln_2" },
        mlp: Mlp::Plain {
            up: "mlp.c_fc",
            down: "mlp.c_proj",
        },
    },
    final_norm: "ln_f",
    lm_head: "lm_head",
    norm: NormKind::Layer,
    linear: Linear::Conv1d,
    positions: Positions::Learned {
        table: "wpe.weight",
        offset: 0,
    },
    window: Window::None,
    unscaled_attention: false,
};

const OPT: DecoderSpec = DecoderSpec {
    name: "opt",
    model_types: &["opt"],
    keys: ConfigKeys {
        hidden: "hidden_size",
        heads: "num_attention_heads",
        layers: "num_hidden_layers",
        kv_heads: "num_key_value_heads",
        head_dim: None,
        eps: None,
        eps_default: 1e-5,
        act: Some("activation_function"),
        act_default: "relu",
        max_positions: "max_position_embeddings",
        max_positions_default: Some(2048),
    },
    root: Root::Fixed("model.decoder."),
    embed: "embed_tokens.weight",
    embed_norm: None,
    layers: "layers.",
    block: BlockSpec {
        attn_norm: "self_attn_layer_norm",
        qkv: Qkv::Separate {
            q: "self_attn.q_proj",
            k: "self_attn.k_proj",
            v: "self_attn.v_proj",
        },
        out: "self_attn.out_proj",
        residual: Residual::Sequential {
            mlp_norm: "final_layer_norm",
        },
        mlp: Mlp::Plain {
            up: "fc1",
            down: "fc2",
        },
    },
    final_norm: "final_layer_norm",
    lm_head: "lm_head",
    norm: NormKind::Layer,
    linear: Linear::Standard,
    // OPT's learned positions start at 2.
    positions: Positions::Learned {
        table: "embed_positions.weight",
        offset: 2,
    },
    window: Window::None,
    unscaled_attention: false,
};

const LLAMA: DecoderSpec = DecoderSpec {
    name: "llama",
    model_types: &["llama"],
    keys: ConfigKeys {
        hidden: "hidden_size",
        heads: "num_attention_heads",
        layers: "num_hidden_layers",
        kv_heads: "num_key_value_heads",
        head_dim: Some("head_dim"),
        eps: Some("rms_norm_eps"),
        eps_default: 1e-6,
        act: Some("hidden_act"),
        act_default: "silu",
        max_positions: "max_position_embeddings",
        max_positions_default: Some(2048),
    },
    root: Root::Base,
    embed: "embed_tokens.weight",
    embed_norm: None,
    layers: "layers.",
    block: BlockSpec {
        attn_norm: "input_layernorm",
        qkv: Qkv::Separate {
            q: "self_attn.q_proj",
            k: "self_attn.k_proj",
            v: "self_attn.v_proj",
        },
        out: "self_attn.o_proj",
        residual: Residual::Sequential {
            mlp_norm: "post_attention_layernorm",
        },
        mlp: Mlp::Gated {
            gate: "mlp.gate_proj",
            up: "mlp.up_proj",
            down: "mlp.down_proj",
        },
    },
    final_norm: "norm",
    lm_head: "lm_head",
    norm: NormKind::Rms,
    linear: Linear::Standard,
    positions: Positions::Rotary {
        dim: None,
        interleaved: false,
    },
    window: Window::None,
    unscaled_attention: false,
};

/// LLaMA's layers with biased q/k/v (read where stored); also Qwen2-VL's
/// decoder (M-RoPE: `qwen2_vl.rs`).
const QWEN2: DecoderSpec = DecoderSpec {
    name: "qwen2",
    model_types: &["qwen2", "qwen2_vl", "qwen2_vl_text"],
    ..LLAMA
};

/// LLaMA's layers, every one attending within `sliding_window` positions
/// (`MistralConfig`'s 4096 when the key is absent; null: LLaMA's graph).
const MISTRAL: DecoderSpec = DecoderSpec {
    name: "mistral",
    model_types: &["mistral"],
    window: Window::All {
        key: "sliding_window",
        default: 4096,
        unwindowed: &LLAMA,
    },
    ..LLAMA
};

const BLOOM: DecoderSpec = DecoderSpec {
    name: "bloom",
    model_types: &["bloom"],
    keys: ConfigKeys {
        hidden: "hidden_size",
        heads: "n_head",
        layers: "n_layer",
        // BLOOM's gelu is the tanh approximation, whatever the config says.
        act: None,
        act_default: "gelu_new",
        // ALiBi has no learned positions; a conventional context.
        max_positions: "seq_length",
        max_positions_default: Some(2048),
        ..GPT2_KEYS
    },
    root: Root::Fixed("transformer."),
    embed: "word_embeddings.weight",
    embed_norm: Some("word_embeddings_layernorm"),
    layers: "h.",
    block: BlockSpec {
        attn_norm: "input_layernorm",
        qkv: Qkv::PerHead("self_attention.query_key_value"),
        out: "self_attention.dense",
        residual: Residual::Sequential {
            mlp_norm: "post_attention_layernorm",
        },
        mlp: Mlp::Plain {
            up: "mlp.dense_h_to_4h",
            down: "mlp.dense_4h_to_h",
        },
    },
    final_norm: "ln_f",
    lm_head: "lm_head",
    norm: NormKind::Layer,
    linear: Linear::Standard,
    positions: Positions::Alibi,
    window: Window::None,
    unscaled_attention: false,
};

/// GPT-J: partial interleaved rotary (`rotary_dim`), attention and MLP in
/// parallel from one norm.
const GPTJ: DecoderSpec = DecoderSpec {
    name: "gptj",
    model_types: &["gptj"],
    keys: GPT2_KEYS,
    root: Root::Fixed("transformer."),
    embed: "wte.weight",
    embed_norm: None,
    layers: "h.",
    block: BlockSpec {
        attn_norm: "ln_1",
        qkv: Qkv::Separate {
            q: "attn.q_proj",
            k: "attn.k_proj",
            v: "attn.v_proj",
        },
        out: "attn.out_proj",
        residual: Residual::Parallel,
        mlp: Mlp::Plain {
            up: "mlp.fc_in",
            down: "mlp.fc_out",
        },
    },
    final_norm: "ln_f",
    lm_head: "lm_head",
    norm: NormKind::Layer,
    linear: Linear::Standard,
    positions: Positions::Rotary {
        dim: Some("rotary_dim"),
        interleaved: true,
    },
    window: Window::None,
    unscaled_attention: false,
};

/// CodeGen: GPT-J's block with a q/v/k projection fused across four shards.
const CODEGEN: DecoderSpec = DecoderSpec {
    name: "codegen",
    model_types: &["codegen"],
    block: BlockSpec {
        qkv: Qkv::QvkShards {
            proj: "attn.qkv_proj",
            shards: 4,
        },
        ..GPTJ.block
    },
    ..GPTJ
};

/// GPT-Neo: GPT-2's block with separate projections, unscaled attention
/// and local (sliding-window) layers.
const GPT_NEO: DecoderSpec = DecoderSpec {
    name: "gptneo",
    model_types: &["gpt_neo"],
    keys: ConfigKeys {
        hidden: "hidden_size",
        heads: "num_heads",
        layers: "num_layers",
        max_positions: "max_position_embeddings",
        max_positions_default: Some(2048),
        ..GPT2_KEYS
    },
    block: BlockSpec {
        qkv: Qkv::Separate {
            q: "attn.attention.q_proj",
            k: "attn.attention.k_proj",
            v: "attn.attention.v_proj",
        },
        out: "attn.attention.out_proj",
        ..GPT2.block
    },
    linear: Linear::Standard,
    window: Window::PerLayer {
        types: "attention_types",
        size: "window_size",
    },
    unscaled_attention: true,
    ..GPT2
};

/// Every decoder architecture served.
pub static DECODERS: &[DecoderSpec] = &[
    GPT2, OPT, LLAMA, QWEN2, BLOOM, GPTJ, GPT_NEO, CODEGEN, MISTRAL,
];
