//! LLaVA-NeXT (`model_type` "llava_next", e.g.
//! `llava-hf/llava-v1.6-mistral-7b-hf`) on [`crate::llava`]'s image path:
//! the same CLIP tower and projector, applied to every tile of an "anyres"
//! image (`LlavaNextImageProcessor`'s PIL backend: the whole image resized
//! to one tile, then the image fitted into the best `image_grid_pinpoints`
//! resolution and cut into tiles; `skill_sdk::image::anyres`), and the
//! tiles' features packed as `LlavaNextModel.pack_image_features` does
//! (`skill_sdk::vision::llava_next`: unpadded to the image's aspect ratio,
//! `image_newline` after each row, the whole image's features first). The
//! packing is an index map into the step's projected features with the
//! newline row appended, so the graph packs with the gather that splices
//! LLaVA's features in. Each `<image>` of a prompt becomes as many image
//! tokens as its image packs to, which `processor_config.json`'s
//! `LlavaNextProcessor` count must equal.

use skill_sdk::config::Json;
use skill_sdk::image::anyres::{pinpoints, AnyRes, DEFAULT_PINPOINTS};
use skill_sdk::image::{Preprocess, Rgb};
use skill_sdk::vision::llava::LlavaVision;
use skill_sdk::vision::llava_next::{pack, processor_features, Feature};
use skill_sdk::{Error, Graph};

/// Where the newline embedding is: transformers 5, the hub's older layout.
const NEWLINE: &[&str] = &["model.image_newline", "image_newline"];

/// A LLaVA-NeXT model's tiling and packing.
pub struct LlavaNext {
    pub tiling: AnyRes,
    /// The `image_newline` weight [width].
    pub newline: String,
    /// Features per tile side (image_size / patch).
    side: usize,
    /// `LlavaNextProcessor`'s count: patch size, additional tokens, the
    /// "default" strategy (absent without a `processor_config.json` patch size).
    processor: Option<(usize, usize, bool)>,
}

impl LlavaNext {
    /// Reads the tiling (`preprocessor_config.json`, whose pinpoints must
    /// be `config.json`'s) and finds `image_newline` in `g`'s checkpoint.
    pub fn load(
        config: &Json,
        vision: &LlavaVision,
        pre: &Preprocess,
        g: &Graph,
    ) -> Result<LlavaNext, Error> {
        let j = Json::processor(skill_sdk::config::Processor::Image)?;
        let tiling = AnyRes::from_json(&j, pre)?;
        let model = pinpoints(config)?.unwrap_or_else(|| DEFAULT_PINPOINTS.to_vec());
        if model != tiling.pinpoints {
            return Err(Error::Model(format!(
                "config.json's image_grid_pinpoints {model:?} differ from preprocessor_config.json's {:?}",
                tiling.pinpoints
            )));
        }
        let size = vision.image_size();
        if tiling.tile != size.0 {
            return Err(Error::Model(format!(
                "preprocessor_config.json: tiles of {} pixels, the vision tower takes {}",
                tiling.tile, size.0
            )));
        }
        let side = (vision.tower.image_size() / vision.tower.patch()) as usize;
        if vision.tokens() as usize != side * side {
            return Err(Error::Unsupported(format!(
                "LLaVA-NeXT packs {side}x{side} features a tile; the tower yields {} \
                 (vision_feature_select_strategy \"default\" drops CLIP's class token)",
                vision.tokens()
            )));
        }
        let newline = NEWLINE
            .iter()
            .find(|n| g.has(n))
            .ok_or_else(|| Error::Model("no `image_newline` in the checkpoint".into()))?
            .to_string();
        let processor = match Json::asset("processor_config.json")? {
            Some(p) => match p.value.get("patch_size").and_then(|v| v.as_u64()) {
                Some(patch) if patch > 0 => Some((
                    patch as usize,
                    p.u64_or("num_additional_image_tokens", 0)? as usize,
                    p.str_or(
                        "vision_feature_select_strategy",
                        config.str_or("vision_feature_select_strategy", "default")?,
                    )? == "default",
                )),
                _ => None,
            },
            None => None,
        };
        Ok(LlavaNext {
            tiling,
            newline,
            side,
            processor,
        })
    }

    /// One image's tower inputs (the whole image, then its tiles) and its
    /// packed features (indices into those inputs' features).
    pub fn image(
        &self,
        img: &Rgb,
        pre: &Preprocess,
    ) -> Result<(Vec<Vec<f32>>, Vec<Feature>), Error> {
        let orig = (img.height, img.width);
        let best = self.tiling.best(orig);
        let tile = self.tiling.tile;
        let grid = (best.0 / tile, best.1 / tile);
        let inputs = self.tiling.apply(img, pre);
        if inputs.len() != 1 + grid.0 * grid.1 {
            return Err(skill_sdk::internal("anyres tiles and grid disagree"));
        }
        let features = pack(orig, grid, self.side);
        if let Some((patch, extra, default)) = self.processor {
            let n = processor_features(orig, best, tile, patch, extra, default);
            if n != features.len() {
                return Err(Error::Model(format!(
                    "processor_config.json expands a {}x{} image to {n} image tokens; the model \
                     packs {} features (patch_size, num_additional_image_tokens)",
                    img.width,
                    img.height,
                    features.len()
                )));
            }
        }
        Ok((inputs, features))
    }
}
