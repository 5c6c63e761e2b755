//! SigLIP's vision tower (`SiglipVisionModel`): a patch embedding (a
//! convolution with stride = kernel, as a reshape and a linear layer, with
//! bias; an image size that is not a multiple of the patch drops the
//! trailing pixels, as the convolution does), learned positions added (no class token), pre-norm layers (CLIP's,
//! [`super::clip::layer`]) and `post_layernorm`. [`Siglip::hidden_states`]
//! returns transformers' `hidden_states` tuple (the embeddings, then every
//! layer's output; the post-norm is not in it), which is what LLaVA-style
//! models select their image features from.

use super::clip::{layer, Tower};
use super::patch_tower::{find_base, Defaults, PatchTower};
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
        let d = Defaults {
            patch: 16,
            eps: 1e-6,
            act: "gelu_pytorch_tanh",
        };
        let t = PatchTower::read(c, file, d)?;
        let what = "SigLIP vision tower";
        let base = find_base(g, bases, "embeddings.patch_embedding.weight", what)?;
        Ok(Siglip {
            tower: t.tower,
            patch: t.patch,
            image_size: t.image_size,
            channels: t.channels,
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
