//! LLaVA's image side (`LlavaModel.get_image_features`): the vision tower's
//! hidden states at `vision_feature_layer` (one index, or a list whose
//! states are concatenated on the feature axis), the class token dropped
//! when `vision_feature_select_strategy` is "default" (towers with one),
//! then the multi-modal projector (`linear_1`, `projector_hidden_act`,
//! `linear_2`) into the decoder's embedding width.
//!
//! Towers: SigLIP ([`super::siglip`]; `llava-interleave`) and CLIP
//! ([`super::clip_vision`]; LLaVA 1.5, LLaVA-NeXT).

use super::clip_vision::ClipVision;
use super::siglip::Siglip;
use crate::config::Json;
use crate::graph::{Node, UnaryOp};
use crate::graph_ext::activation;
use crate::{Dim, Dtype, Error, Graph};

/// Where a LLaVA checkpoint keeps its tower and projector: transformers 5
/// (`model.vision_tower`, `model.multi_modal_projector`) or the hub's
/// older layout (`vision_tower`, `multi_modal_projector`); SigLIP's own
/// `vision_model.` level may be there or not.
const TOWER_BASES: &[&str] = &[
    "model.vision_tower.vision_model.",
    "model.vision_tower.",
    "vision_tower.vision_model.",
    "vision_tower.",
];
const PROJECTOR_BASES: &[&str] = &["model.multi_modal_projector.", "multi_modal_projector."];

/// A LLaVA model's vision tower.
#[derive(Clone, Debug)]
pub enum VisionTower {
    Siglip(Siglip),
    Clip(ClipVision),
}

impl VisionTower {
    /// Encoder layers.
    pub fn layers(&self) -> u64 {
        match self {
            VisionTower::Siglip(t) => t.tower.layers,
            VisionTower::Clip(t) => t.tower.layers,
        }
    }

    /// Tokens per image (CLIP's class token included).
    pub fn tokens(&self) -> u64 {
        match self {
            VisionTower::Siglip(t) => t.tokens(),
            VisionTower::Clip(t) => t.tokens(),
        }
    }

    /// The side of the (square) images it takes.
    pub fn image_size(&self) -> u64 {
        match self {
            VisionTower::Siglip(t) => t.image_size,
            VisionTower::Clip(t) => t.image_size,
        }
    }

    /// Its patches' side.
    pub fn patch(&self) -> u64 {
        match self {
            VisionTower::Siglip(t) => t.patch,
            VisionTower::Clip(t) => t.patch,
        }
    }

    pub fn channels(&self) -> u64 {
        match self {
            VisionTower::Siglip(t) => t.channels,
            VisionTower::Clip(t) => t.channels,
        }
    }

    /// transformers' `hidden_states` 0 to `upto` of `pixels`.
    pub fn hidden_states(&self, g: &Graph, pixels: Node, upto: u64) -> Result<Vec<Node>, Error> {
        match self {
            VisionTower::Siglip(t) => t.hidden_states(g, pixels, upto),
            VisionTower::Clip(t) => t.hidden_states(g, pixels, upto),
        }
    }
}

/// A LLaVA model's image path, resolved against its config and weights.
#[derive(Clone, Debug)]
pub struct LlavaVision {
    pub tower: VisionTower,
    /// Indices into the tower's hidden states (0: the embeddings).
    pub layers: Vec<u64>,
    /// Drop the first (class) token of each selected state.
    pub drop_cls: bool,
    pub projector: String,
    pub act: UnaryOp,
    /// The decoder's embedding width (the projector's output).
    pub width: u64,
}

impl LlavaVision {
    /// Reads `config.json` of a `llava` model (its `vision_config` and
    /// feature selection) and finds the weights in `g`'s checkpoint.
    pub fn load(config: &Json, g: &Graph) -> Result<LlavaVision, Error> {
        let vision = config
            .value
            .get("vision_config")
            .ok_or_else(|| Error::Model("config.json: `vision_config` is missing".into()))?;
        let vt = vision
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("clip_vision_model");
        let file = "config.json vision_config";
        let tower = match vt {
            "siglip_vision_model" => {
                VisionTower::Siglip(Siglip::load(vision, file, g, TOWER_BASES)?)
            }
            "clip_vision_model" => {
                VisionTower::Clip(ClipVision::load(vision, file, g, TOWER_BASES)?)
            }
            _ => {
                return Err(Error::Unsupported(format!(
                    "config.json: a `{vt}` vision tower is not served (served: \
                     siglip_vision_model, clip_vision_model)"
                )))
            }
        };
        let n = tower.layers() as i64;
        let index = |v: &serde_json::Value| -> Result<u64, Error> {
            let i = v.as_i64().ok_or_else(|| {
                Error::Model("config.json: `vision_feature_layer` must be integers".into())
            })?;
            let at = if i < 0 { n + 1 + i } else { i };
            if !(0..=n).contains(&at) {
                return Err(Error::Model(format!(
                    "config.json: `vision_feature_layer` {i} is outside the tower's {} hidden states",
                    n + 1
                )));
            }
            Ok(at as u64)
        };
        let layers = match config.value.get("vision_feature_layer") {
            None | Some(serde_json::Value::Null) => vec![index(&(-2).into())?],
            Some(serde_json::Value::Array(a)) if !a.is_empty() => {
                a.iter().map(index).collect::<Result<_, _>>()?
            }
            Some(v) => vec![index(v)?],
        };
        let strategy = config.str_or("vision_feature_select_strategy", "default")?;
        // SigLIP has no class token: "default" would drop a patch, which
        // transformers does too; the token count follows the same rule.
        let drop_cls = match strategy {
            "default" => true,
            "full" => false,
            s => {
                return Err(Error::Model(format!(
                    "config.json: unknown `vision_feature_select_strategy` `{s}`"
                )))
            }
        };
        let projector = PROJECTOR_BASES
            .iter()
            .find(|b| g.has(&format!("{b}linear_1.weight")))
            .ok_or_else(|| {
                Error::Model("no `multi_modal_projector.linear_1.weight` in the checkpoint".into())
            })?
            .to_string();
        let w2 = g.weight(&format!("{projector}linear_2.weight"))?;
        let width = match g.b.info(w2)?.shape.first() {
            Some(Dim::Fixed(w)) => *w,
            _ => return Err(Error::Model("`linear_2.weight` has no fixed shape".into())),
        };
        Ok(LlavaVision {
            tower,
            layers,
            drop_cls,
            projector,
            act: activation(config.str_or("projector_hidden_act", "gelu")?)?,
            width,
        })
    }

    /// Image tokens (features) per image: the tower's tokens, less the
    /// class token when it is dropped. LlavaProcessor expands each image
    /// token of a prompt to this many.
    pub fn tokens(&self) -> u64 {
        self.tower.tokens() - self.drop_cls as u64
    }

    /// The (height, width) of `pixel_values`.
    pub fn image_size(&self) -> (usize, usize) {
        let s = self.tower.image_size() as usize;
        (s, s)
    }

    /// A graph input `pixel_values` [`images`, 3, h, w] and the projected
    /// image features of it, [images, tokens, width].
    pub fn features(&self, g: &Graph, images: &str) -> Result<Node, Error> {
        let (h, w) = self.image_size();
        let pixels = g.input(
            "pixel_values",
            Dtype::F32,
            &[
                Dim::Symbolic(images.into()),
                Dim::Fixed(self.tower.channels()),
                Dim::Fixed(h as u64),
                Dim::Fixed(w as u64),
            ],
        )?;
        let upto = self.layers.iter().copied().max().unwrap_or(0);
        let states = self.tower.hidden_states(g, pixels, upto)?;
        let mut picked = Vec::with_capacity(self.layers.len());
        for &l in &self.layers {
            let s = *states
                .get(l as usize)
                .ok_or_else(|| crate::internal("a selected hidden state was not built"))?;
            let s = match self.drop_cls {
                true => g.b.slice(s, 1, 1, self.tower.tokens() as i64)?,
                false => s,
            };
            picked.push(s);
        }
        let x = match picked.len() {
            1 => picked[0],
            _ => g.b.concat(&picked, -1)?,
        };
        let p = &self.projector;
        let x = g.unary(self.act, g.linear(x, &format!("{p}linear_1"))?)?;
        g.linear(x, &format!("{p}linear_2"))
    }
}
