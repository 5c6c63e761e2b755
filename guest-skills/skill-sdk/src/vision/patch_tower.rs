//! The configuration every ViT-style vision tower of a composite model
//! reads the same way (CLIP's and SigLIP's `vision_config`): width, heads,
//! layers, norm epsilon, activation, patch and image size, channels, with
//! the config class's defaults for what hub configs leave out; and where
//! the tower's weights are in the checkpoint.

use super::clip::{Act, Tower};
use crate::config::Json;
use crate::{Error, Graph};

/// A config class's defaults for the keys hub configs may omit.
pub(crate) struct Defaults {
    pub patch: u64,
    pub eps: f64,
    pub act: &'static str,
}

/// A patch-embedding tower's shape.
pub(crate) struct PatchTower {
    pub tower: Tower,
    pub patch: u64,
    pub image_size: u64,
    pub channels: u64,
}

impl PatchTower {
    /// Reads `c` (`file` names it in errors).
    pub fn read(c: &serde_json::Value, file: &str, d: Defaults) -> Result<PatchTower, Error> {
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
        let patch = j.u64_or("patch_size", d.patch)?;
        let image_size = j.u64_or("image_size", 224)?;
        // A convolution with stride = kernel: trailing rows and columns
        // that do not fill a patch are dropped (SigLIP so400m: 384 / 14).
        if patch == 0 || image_size < patch {
            return Err(Error::Model(format!(
                "{file}: image_size {image_size} is smaller than patch_size {patch}"
            )));
        }
        Ok(PatchTower {
            tower: Tower {
                hidden,
                heads,
                layers: j.u64_or("num_hidden_layers", 12)?,
                eps: j.f64_or("layer_norm_eps", d.eps)? as f32,
                act: Act::named(j.str_or("hidden_act", d.act)?)?,
            },
            patch,
            image_size,
            channels: j.u64_or("num_channels", 3)?,
        })
    }
}

/// The first of `bases` under which the checkpoint has `probe`.
pub(crate) fn find_base(
    g: &Graph,
    bases: &[&str],
    probe: &str,
    what: &str,
) -> Result<String, Error> {
    bases
        .iter()
        .find(|b| g.has(&format!("{b}{probe}")))
        .map(|b| b.to_string())
        .ok_or_else(|| {
            Error::Model(format!(
                "no {what} in the checkpoint (looked for `{probe}` under {})",
                bases.join(", ")
            ))
        })
}
