//! SigLIP's vision tower (`SiglipVisionModel`): a patch embedding (a
//! convolution with stride = kernel, as a reshape and a linear layer, with
//! bias; an image size that is not a multiple of the patch drops the
//! trailing pixels, as the convolution does), learned positions added (no class token), pre-norm layers (CLIP's,
//! [`super::clip::layer`]) and `post_layernorm`. [`Siglip::hidden_states`]
//! returns transformers' `hidden_states` tuple (the embeddings, then every
//! layer's output; the post-norm is not in it), which is what LLaVA-style
//! models select their image features from.

use super::clip::{layer, Act, Tower};
use crate::config::Json;
use crate::graph::Node;
use crate::{Error, Graph};

/// A SigLIP vision tower resolved against its config and weights.
#[derive(Clone, Debug)]
pub struct Siglip {
    pub tower: Tower,
    pub patch: u64,
    pub image_size: u64,
    pub channels: u64,
    /// Weight-name prefix of the tower (`...vision_model.` or `...`): the
    /// names below it are `embeddings.*`, `encoder.layers.*`, `post_layernorm`.
    pub base: String,
}

impl Siglip {
    /// Reads a `siglip_vision_model` config (`vision_config` of a composite
    /// model; `file` names it in errors) with SigLIP's defaults, and finds
    /// the tower under one of `bases` in the checkpoint.
    pub fn load(
        c: &serde_json::Value,
        file: &str,
        g: &Graph,
        bases: &[&str],
    ) -> Result<Siglip, Error> {
        let j = Json {
            file: file.to_string(),
            value: c.clone(),
        };
        let hidden = j.u64_or("hidden_size", 768)?;
        let heads = j.u64_or("num_attention_heads", 12)?;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::Model(format!(
                "{file}: hidden_size {hidden} is not a multiple of {heads} heads"
            )));
        }
        let patch = j.u64_or("patch_size", 16)?;
        let image_size = j.u64_or("image_size", 224)?;
        // A convolution with stride = kernel: trailing rows and columns
        // that do not fill a patch are dropped (SigLIP so400m: 384 / 14).
        if patch == 0 || image_size < patch {
            return Err(Error::Model(format!(
                "{file}: image_size {image_size} is smaller than patch_size {patch}"
            )));
        }
        let probe = "embeddings.patch_embedding.weight";
        let base = bases
            .iter()
            .find(|b| g.has(&format!("{b}{probe}")))
            .ok_or_else(|| {
                Error::Model(format!(
                    "no SigLIP vision tower in the checkpoint (looked for `{probe}` under {})",
                    bases.join(", ")
                ))
            })?
            .to_string();
        Ok(Siglip {
            tower: Tower {
                hidden,
                heads,
                layers: j.u64_or("num_hidden_layers", 12)?,
                eps: j.f64_or("layer_norm_eps", 1e-6)? as f32,
                act: Act::named(j.str_or("hidden_act", "gelu_pytorch_tanh")?)?,
            },
            patch,
            image_size,
            channels: j.u64_or("num_channels", 3)?,
            base,
        })
    }

    /// Tokens per image: one per patch.
    pub fn tokens(&self) -> u64 {
        (self.image_size / self.patch).pow(2)
    }

    /// `pixels` [n, channels, image_size, image_size] -> hidden states 0
    /// (the embeddings) to `upto` (the output of layer `upto`), each [n,
    /// patches, hidden]; only the layers needed are built.
    pub fn hidden_states(&self, g: &Graph, pixels: Node, upto: u64) -> Result<Vec<Node>, Error> {
        if upto > self.tower.layers {
            return Err(Error::Model(format!(
                "hidden state {upto} of a tower of {} layers",
                self.tower.layers
            )));
        }
        let (p, c, s) = (
            self.patch as i64,
            self.channels as i64,
            self.image_size as i64,
        );
        let t = &self.tower;
        let b = &self.base;
        // [n, c, s, s] -> [n, patches, c * p * p] -> linear (the conv weight
        // flattened); pixels past the last whole patch are not seen.
        let n = s / p;
        let pixels = match n * p == s {
            true => pixels,
            false => g.b.slice(g.b.slice(pixels, 2, 0, n * p)?, 3, 0, n * p)?,
        };
        let x = g.b.reshape(pixels, &[-1, c, n, p, n, p])?;
        let x = g.b.permute(x, &[0, 2, 4, 1, 3, 5])?;
        let x = g.b.reshape(x, &[-1, n * n, c * p * p])?;
        let w = g.weight(&format!("{b}embeddings.patch_embedding.weight"))?;
        let w = g.b.reshape(w, &[t.hidden as i64, -1])?;
        let bias = g.weight(&format!("{b}embeddings.patch_embedding.bias"))?;
        let x = g.b.linear(x, w, Some(bias))?;
        let mut x = g.add(
            x,
            g.weight(&format!("{b}embeddings.position_embedding.weight"))?,
        )?;
        let mut states = vec![x];
        for l in 0..upto {
            x = layer(g, t, x, &format!("{b}encoder.layers.{l}."), None, false)?;
            states.push(x);
        }
        Ok(states)
    }
}
