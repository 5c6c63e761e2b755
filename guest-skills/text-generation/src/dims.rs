//! Decoder sizes from config.json: hidden width, heads, layers, norm
//! epsilon, activation, GPT-Neo's local-attention layers and Mistral's
//! sliding window, per architecture's config keys; LLaMA-style configs
//! may set `head_dim` (heads x head_dim need not be the hidden width).

use skill_sdk::config::Json;
use skill_sdk::graph::UnaryOp;
use skill_sdk::graph_ext::activation;
use skill_sdk::Error;

use crate::decoder::Arch;

pub(crate) struct Dims {
    /// One projection for q/k/v and for gate/up (weights concatenated).
    pub(crate) fuse: bool,
    pub(crate) act: UnaryOp,
    pub(crate) hidden: u64,
    pub(crate) heads: u64,
    pub(crate) kv_heads: u64,
    pub(crate) head_dim: u64,
    pub(crate) layers: u64,
    pub(crate) eps: f32,
    /// Per layer: attends within a sliding window of `window` positions.
    pub(crate) local: Vec<bool>,
    pub(crate) window: u64,
    /// Factor on q·k (`None`: 1/sqrt(head_dim)).
    pub(crate) scale: Option<f32>,
}

pub(crate) fn dims(arch: Arch, c: &Json) -> Result<Dims, Error> {
    let (hidden, heads, layers) = match arch {
        Arch::Gpt2 | Arch::GptJ | Arch::CodeGen => {
            (c.u64("n_embd")?, c.u64("n_head")?, c.u64("n_layer")?)
        }
        Arch::Bloom => (c.u64("hidden_size")?, c.u64("n_head")?, c.u64("n_layer")?),
        Arch::GptNeo => (
            c.u64("hidden_size")?,
            c.u64("num_heads")?,
            c.u64("num_layers")?,
        ),
        _ => (
            c.u64("hidden_size")?,
            c.u64("num_attention_heads")?,
            c.u64("num_hidden_layers")?,
        ),
    };
    if heads == 0 || hidden % heads != 0 {
        return Err(Error::Model(format!(
            "config.json: hidden size {hidden} is not a multiple of {heads} heads"
        )));
    }
    if arch == Arch::CodeGen && !heads.is_multiple_of(4) {
        return Err(Error::Model(format!(
            "config.json: CodeGen's q/k/v projection is split in 4 shards; {heads} heads do not divide"
        )));
    }
    let kv_heads = c.u64_or("num_key_value_heads", heads)?;
    let eps = match arch {
        Arch::Gpt2 | Arch::Bloom | Arch::GptJ | Arch::GptNeo | Arch::CodeGen => {
            c.f64_or("layer_norm_epsilon", 1e-5)?
        }
        Arch::Opt => 1e-5,
        _ => c.f64_or("rms_norm_eps", 1e-6)?,
    } as f32;
    let act = match arch {
        Arch::Gpt2 | Arch::GptJ | Arch::GptNeo | Arch::CodeGen => {
            activation(c.str_or("activation_function", "gelu_new")?)?
        }
        Arch::Opt => activation(c.str_or("activation_function", "relu")?)?,
        // BLOOM's gelu is the tanh approximation.
        Arch::Bloom => UnaryOp::GeluTanh,
        _ => activation(c.str_or("hidden_act", "silu")?)?,
    };
    let (local, window, scale) = match arch {
        Arch::GptNeo => (
            attention_layers(c, layers)?,
            c.u64("window_size")?,
            Some(1.0),
        ),
        // Every layer attends within `sliding_window` positions.
        // (`MistralConfig`'s 4096 when the key is absent).
        Arch::Mistral => (
            vec![true; layers as usize],
            c.u64_or("sliding_window", 4096)?,
            None,
        ),
        _ => (vec![false; layers as usize], 0, None),
    };
    if window == 0 && local.contains(&true) {
        return Err(Error::Model(
            "config.json: an attention window of 0 positions".into(),
        ));
    }
    let head_dim = match arch {
        Arch::Llama | Arch::Qwen2 | Arch::Mistral => c.u64_or("head_dim", hidden / heads)?,
        _ => hidden / heads,
    };
    if head_dim == 0 {
        return Err(Error::Model("config.json: `head_dim` is 0".into()));
    }
    Ok(Dims {
        fuse: false,
        act,
        hidden,
        heads,
        kv_heads,
        head_dim,
        layers,
        eps,
        local,
        window,
        scale,
    })
}

/// GPT-Neo's per-layer attention kinds from `attention_types`
/// (`[[["global", "local"], n], ...]`: the pattern repeated n times): true
/// where a layer is local.
fn attention_layers(c: &Json, layers: u64) -> Result<Vec<bool>, Error> {
    let bad = || Error::Model("config.json: malformed `attention_types`".into());
    let mut out = Vec::new();
    let groups = c
        .value
        .get("attention_types")
        .and_then(|v| v.as_array())
        .ok_or_else(bad)?;
    for group in groups {
        let (kinds, times) = match group.as_array().map(|g| g.as_slice()) {
            Some([kinds, times]) => (
                kinds.as_array().ok_or_else(bad)?,
                times.as_u64().ok_or_else(bad)?,
            ),
            _ => return Err(bad()),
        };
        for _ in 0..times.min(layers) {
            for k in kinds {
                match k.as_str() {
                    Some("global") => out.push(false),
                    Some("local") => out.push(true),
                    _ => return Err(bad()),
                }
            }
        }
    }
    if out.len() as u64 != layers {
        return Err(Error::Model(format!(
            "config.json: `attention_types` describes {} layers, the model has {layers}",
            out.len()
        )));
    }
    Ok(out)
}
