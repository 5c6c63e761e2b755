//! CLIP's vision tower on its own (`CLIPVisionModel`, as LLaVA 1.5 and
//! LLaVA-NeXT embed it): the patch embedding (no bias), the class
//! embedding first, learned positions, `pre_layrnorm`, then CLIP's pre-norm
//! layers ([`super::clip::layer`]). [`ClipVision::hidden_states`] returns
//! transformers' `hidden_states` tuple (the pre-normed embeddings, then
//! every layer's output; `post_layernorm` is not in it), which is what
//! LLaVA-style models select their image features from.

use super::clip::{embeddings, layer, Tower};
use super::patch_tower::{find_base, Defaults, PatchTower};
use crate::graph::Node;
use crate::{Dim, Error, Graph};

/// A CLIP vision tower resolved against its config and weights.
#[derive(Clone, Debug)]
pub struct ClipVision {
    pub tower: Tower,
    pub patch: u64,
    pub image_size: u64,
    pub channels: u64,
    /// Weight-name prefix of the tower (`...vision_model.`): the names
    /// below it are `embeddings.*`, `pre_layrnorm`, `encoder.layers.*`.
    pub base: String,
}

impl ClipVision {
    /// Reads a `clip_vision_model` config (`vision_config` of a composite
    /// model; `file` names it in errors) with `CLIPVisionConfig`'s defaults
    /// (hub configs list only what differs), and finds the tower under one
    /// of `bases` in the checkpoint.
    pub fn load(
        c: &serde_json::Value,
        file: &str,
        g: &Graph,
        bases: &[&str],
    ) -> Result<ClipVision, Error> {
        let d = Defaults {
            patch: 32,
            eps: 1e-5,
            act: "quick_gelu",
        };
        let t = PatchTower::read(c, file, d)?;
        let what = "CLIP vision tower";
        let base = find_base(g, bases, "embeddings.class_embedding", what)?;
        Ok(ClipVision {
            tower: t.tower,
            patch: t.patch,
            image_size: t.image_size,
            channels: t.channels,
            base,
        })
    }

    /// Tokens per image: the class token and one per patch.
    pub fn tokens(&self) -> u64 {
        (self.image_size / self.patch).pow(2) + 1
    }

    /// `pixels` [n, channels, image_size, image_size] -> hidden states 0
    /// (the pre-normed embeddings) to `upto` (the output of layer `upto`),
    /// each [n, tokens, hidden]; only the layers needed are built.
    pub fn hidden_states(&self, g: &Graph, pixels: Node, upto: u64) -> Result<Vec<Node>, Error> {
        if upto > self.tower.layers {
            return Err(Error::Model(format!(
                "hidden state {upto} of a tower of {} layers",
                self.tower.layers
            )));
        }
        let b = &self.base;
        let s = self.image_size as usize;
        // The class tokens' batch axis is the pixels' (the same symbol).
        let n: Dim =
            g.b.info(pixels)?
                .shape
                .first()
                .cloned()
                .ok_or_else(|| crate::internal("the vision tower's pixels have no batch axis"))?;
        let lead = [n];
        let tower = (&self.tower, self.patch, self.channels);
        let pre_norm = format!("{b}pre_layrnorm");
        let mut x = embeddings(g, tower, b, pixels, (s, s), &lead, &pre_norm)?;
        let mut states = vec![x];
        for l in 0..upto {
            x = layer(
                g,
                &self.tower,
                x,
                &format!("{b}encoder.layers.{l}."),
                None,
                false,
            )?;
            states.push(x);
        }
        Ok(states)
    }
}
