//! Decoder sizes from config.json, by the spec's config keys: hidden
//! width, heads, layers, norm epsilon, activation, the layers that attend
//! within a window (GPT-Neo's local layers, Mistral's sliding window) and
//! the attention scale; LLaMA-style configs may set `head_dim` (heads x
//! head_dim need not be the hidden width).

use skill_sdk::config::Json;
use skill_sdk::graph::UnaryOp;
use skill_sdk::graph_ext::activation;
use skill_sdk::Error;

use crate::arch::{DecoderSpec, Qkv, Window};

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

pub(crate) fn dims(spec: &DecoderSpec, c: &Json) -> Result<Dims, Error> {
    let k = &spec.keys;
    let (hidden, heads, layers) = (c.u64(k.hidden)?, c.u64(k.heads)?, c.u64(k.layers)?);
    if heads == 0 || hidden % heads != 0 {
        return Err(Error::Model(format!(
            "config.json: hidden size {hidden} is not a multiple of {heads} heads"
        )));
    }
    if let Qkv::QvkShards { shards, .. } = spec.block.qkv {
        if !heads.is_multiple_of(shards) {
            return Err(Error::Model(format!(
                "config.json: the q/k/v projection is split in {shards} shards; {heads} heads do not divide"
            )));
        }
    }
    let kv_heads = c.u64_or(k.kv_heads, heads)?;
    let eps = match k.eps {
        Some(key) => c.f64_or(key, k.eps_default)?,
        None => k.eps_default,
    } as f32;
    let act = activation(match k.act {
        Some(key) => c.str_or(key, k.act_default)?,
        None => k.act_default,
    })?;
    let (local, window) = match spec.window {
        Window::None => (vec![false; layers as usize], 0),
        Window::PerLayer { types, size } => (attention_layers(c, types, layers)?, c.u64(size)?),
        Window::All { key, default, .. } => (vec![true; layers as usize], c.u64_or(key, default)?),
    };
    if window == 0 && local.contains(&true) {
        return Err(Error::Model(
            "config.json: an attention window of 0 positions".into(),
        ));
    }
    let head_dim = match k.head_dim {
        Some(key) => c.u64_or(key, hidden / heads)?,
        None => hidden / heads,
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
        scale: spec.unscaled_attention.then_some(1.0),
    })
}

/// GPT-Neo's per-layer attention kinds from `attention_types` (`key`:
/// `[[["global", "local"], n], ...]`, the pattern repeated n times): true
/// where a layer is local.
fn attention_layers(c: &Json, key: &str, layers: u64) -> Result<Vec<bool>, Error> {
    let bad = || Error::Model(format!("config.json: malformed `{key}`"));
    let mut out = Vec::new();
    let groups = c
        .value
        .get(key)
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
            "config.json: `{key}` describes {} layers, the model has {layers}",
            out.len()
        )));
    }
    Ok(out)
}
