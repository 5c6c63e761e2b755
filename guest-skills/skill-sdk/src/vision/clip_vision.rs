//! CLIP's vision tower on its own (`CLIPVisionModel`, as LLaVA 1.5 and
//! LLaVA-NeXT embed it): the patch embedding (no bias), the class
//! embedding first, learned positions, `pre_layrnorm`, then CLIP's pre-norm
//! layers ([`super::clip::layer`]). [`ClipVision::hidden_states`] returns
//! transformers' `hidden_states` tuple (the pre-normed embeddings, then
//! every layer's output; `post_layernorm` is not in it), which is what
//! LLaVA-style models select their image features from.

use super::clip::{embeddings, layer, Act, Tower};
use crate::config::Json;
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
        let patch = j.u64_or("patch_size", 32)?;
        let image_size = j.u64_or("image_size", 224)?;
        // A convolution with stride = kernel: trailing rows and columns
        // that do not fill a patch are dropped (SigLIP so400m: 384 / 14).
        if patch == 0 || image_size < patch {
            return Err(Error::Model(format!(
                "{file}: image_size {image_size} is smaller than patch_size {patch}"
            )));
        }
        let probe = "embeddings.class_embedding";
        let base = bases
            .iter()
            .find(|b| g.has(&format!("{b}{probe}")))
            .ok_or_else(|| {
                Error::Model(format!(
                    "no CLIP vision tower in the checkpoint (looked for `{probe}` under {})",
                    bases.join(", ")
                ))
            })?
            .to_string();
        Ok(ClipVision {
            tower: Tower {
                hidden,
                heads,
                layers: j.u64_or("num_hidden_layers", 12)?,
                eps: j.f64_or("layer_norm_eps", 1e-5)? as f32,
                act: Act::named(j.str_or("hidden_act", "quick_gelu")?)?,
            },
            patch,
            image_size,
            channels: j.u64_or("num_channels", 3)?,
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
