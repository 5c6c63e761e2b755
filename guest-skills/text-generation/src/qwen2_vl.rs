//! Qwen2-VL (`model_type` "qwen2_vl", the `image-text-to-text` task) on
//! this skill's decoder and generation loop: the decoder is a Qwen2 whose
//! config is `text_config` (transformers 5) or the top level (the hub's
//! flat configs), with its weights under `model.` (the hub's layout, which
//! transformers 5 also saves) or `model.language_model.`, the head
//! `lm_head` (else tied), and M-RoPE (`mrope.rs`) instead of 1-D rotary
//! positions.
//!
//! Request: `{"prompt": "...<|image_pad|>...", "images": [base64, ...]}`
//! (or `"image"`), plus the generation keys; the processor's image token
//! stands for one image, in order (a chat template writes
//! `<|vision_start|><|image_pad|><|vision_end|>` per image part). As
//! `Qwen2VLProcessor` does, each is expanded to the image's merged tokens
//! (grid t * h * w / merge^2, the grid from `smart_resize`), then the
//! prompt is tokenized and its three position lists and rope delta computed
//! (`get_rope_index`). Images are decoded, resized, normalized and cut
//! into patches in the sandbox (`skill_sdk::image::patches`).
//!
//! The images of a prefill (or of an extend step, for requests joining a
//! running batch) go through the vision tower and merger inside that
//! step's graph (`skill_sdk::vision::qwen2_vl`, every image's patches in
//! one attention with a per-image mask); the features replace the image
//! tokens' embeddings as LLaVA's do (`image_mask`, `image_rows`). Every
//! step sends `mrope_positions` [3, batch, seq]: a fresh prompt's own, and
//! for a running row its sequential position + its rope delta.

use skill_sdk::config::Json;
use skill_sdk::graph::Node;
use skill_sdk::image::patches::{PatchPreprocess, Patches};
use skill_sdk::tensors::{f32_tensor, i64_tensor};
use skill_sdk::vision::qwen2_vl::Qwen2VlVision;
use skill_sdk::{invalid, Dim, Dtype, Error, Graph, NamedTensor, Tensor};

use crate::mrope::{rope_index, Mrope, Positions};

/// Where the decoder's weights are, by the probe `embed_tokens.weight`.
const LM_BASES: &[&str] = &["model.", "model.language_model."];

/// A Qwen2-VL model's image side, positions and naming.
pub struct Qwen2Vl {
    pub vision: Qwen2VlVision,
    pub mrope: Mrope,
    /// The decoder's weight prefix (`...layers.0...`, `...norm.weight`).
    pub lm_base: String,
    pub image_token: i64,
    /// `<|video_pad|>`'s id: videos are refused.
    pub video_token: i64,
    pub image_text: String,
    pub pre: PatchPreprocess,
}

/// A request's images (patches and grids) and its prompt's positions.
#[derive(Clone, Debug, Default)]
pub struct Prompt {
    pub images: Vec<Patches>,
    pub positions: Positions,
}

impl Qwen2Vl {
    /// Reads a `qwen2_vl` config; returns the model and its decoder's
    /// config.
    pub fn load(config: &Json) -> Result<(Qwen2Vl, Json), Error> {
        let text = match config.value.get("text_config").filter(|v| !v.is_null()) {
            Some(t) => Json {
                file: "config.json text_config".into(),
                value: t.clone(),
            },
            None => Json {
                file: config.file.clone(),
                value: config.value.clone(),
            },
        };
        let g = Graph::new("qwen2-vl-probe");
        let vision = Qwen2VlVision::load(config, &g)?;
        let lm_base = LM_BASES
            .iter()
            .find(|b| g.has(&format!("{b}embed_tokens.weight")))
            .ok_or_else(|| {
                Error::Model(format!(
                    "no Qwen2-VL decoder in the checkpoint (looked for `embed_tokens.weight` under {})",
                    LM_BASES.join(", ")
                ))
            })?;
        let heads = text.u64("num_attention_heads")?;
        let hidden = text.u64("hidden_size")?;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::Model(format!(
                "{}: hidden_size {hidden} is not a multiple of {heads} heads",
                text.file
            )));
        }
        let mrope = Mrope::read(&text, hidden / heads)?;
        if vision.width != hidden {
            return Err(Error::Model(format!(
                "the vision merger gives features of {}, the decoder's width is {hidden}",
                vision.width
            )));
        }
        let pre = PatchPreprocess::read()?;
        if (pre.patch as u64, pre.temporal as u64, pre.merge as u64)
            != (vision.patch, vision.temporal, vision.merge)
        {
            return Err(Error::Model(format!(
                "preprocessor_config.json: patches {}x{} over {} frames merged {}x{}; the vision tower takes {}x{} over {} merged {}x{}",
                pre.patch, pre.patch, pre.temporal, pre.merge, pre.merge,
                vision.patch, vision.patch, vision.temporal, vision.merge, vision.merge
            )));
        }
        let processor = Json::asset("processor_config.json")?;
        let image_text = processor
            .as_ref()
            .and_then(|p| p.value.get("image_token"))
            .and_then(|v| v.as_str())
            .unwrap_or("<|image_pad|>")
            .to_string();
        let image_token = config.u64_or("image_token_id", 151655)? as i64;
        let video_token = config.u64_or("video_token_id", 151656)? as i64;
        Ok((
            Qwen2Vl {
                vision,
                mrope,
                lm_base: lm_base.to_string(),
                image_token,
                video_token,
                image_text,
                pre,
            },
            text,
        ))
    }

    /// Merged tokens (image-token ids) of an image.
    fn tokens(&self, p: &Patches) -> u64 {
        p.count() / (self.vision.merge * self.vision.merge)
    }

    /// The request's images (`images`, or one `image`) as patches, and its
    /// prompt with each image token expanded to its image's tokens.
    pub fn prepare(&self, v: &serde_json::Value, prompt: &str) -> Result<(String, Prompt), Error> {
        let fields = skill_sdk::image::request_images(v)?;
        let marks = prompt.matches(self.image_text.as_str()).count();
        if marks != fields.len() {
            return Err(invalid(format!(
                "the prompt has {marks} image token(s) `{}` and the request {} image(s)",
                self.image_text,
                fields.len()
            )));
        }
        let mut images = Vec::with_capacity(fields.len());
        for (name, b64) in &fields {
            let img = skill_sdk::image::from_base64(name, b64)?;
            images.push(self.pre.apply(name, &img)?);
        }
        let mut expanded = String::with_capacity(prompt.len());
        let mut rest = prompt;
        for p in &images {
            let Some(at) = rest.find(self.image_text.as_str()) else {
                return Err(skill_sdk::internal("an image token went missing"));
            };
            expanded.push_str(&rest[..at]);
            expanded.push_str(&self.image_text.repeat(self.tokens(p) as usize));
            rest = &rest[at + self.image_text.len()..];
        }
        expanded.push_str(rest);
        let prompt = Prompt {
            images,
            positions: Positions::default(),
        };
        Ok((expanded, prompt))
    }

    /// The tokenized prompt's M-RoPE positions (every image's tokens must
    /// be there, one run per image).
    pub fn position(&self, ids: &[i64], p: &mut Prompt) -> Result<(), Error> {
        let m = self.vision.merge;
        let grids: Vec<[u64; 3]> = (p.images.iter())
            .map(|i| [i.grid[0], i.grid[1] / m, i.grid[2] / m])
            .collect();
        if ids.contains(&self.video_token) {
            return Err(invalid(
                "the prompt has a video token; videos are not served (images only)",
            ));
        }
        p.positions = rope_index(ids, self.image_token, &grids).map_err(|e| match e {
            Error::InvalidRequest(msg) => invalid(format!(
                "{msg} (is `{}` in the prompt's text besides the image markers?)",
                self.image_text
            )),
            e => e,
        })?;
        Ok(())
    }

    /// `e` [batch, seq, width] with the image tokens' rows replaced by the
    /// step's image features (`bs` its leading dims).
    pub fn splice(&self, g: &Graph, e: Node, bs: &[Dim]) -> Result<Node, Error> {
        let rows = g.input("image_rows", Dtype::I64, bs)?;
        let at = g.input("image_mask", Dtype::Boolean, bs)?;
        let feats = self.vision.features(g)?;
        let picked = g.b.gather(feats, rows, 0)?;
        g.b.select(g.b.unsqueeze(at, -1)?, picked, e)
    }

    /// A step's inputs: `mrope_positions` [3, rows, len] (fresh rows their
    /// prompt's, left padded; the others `pos` + their delta) and, when
    /// `images`, the fresh rows' image patches with `image_mask` and
    /// `image_rows` over `ids` [rows, len].
    pub fn step_inputs(
        &self,
        rows: &[(bool, &Prompt)],
        ids: &[i64],
        pos: &[i64],
        len: usize,
        images: bool,
    ) -> Result<Vec<NamedTensor>, Error> {
        let short = || skill_sdk::internal("M-RoPE rows outside the step");
        let n = rows.len() * len;
        let mut axes = vec![vec![0i64; n]; 3];
        for (r, (fresh, p)) in rows.iter().enumerate() {
            let at = r * len..(r + 1) * len;
            let row_pos = pos.get(at.clone()).ok_or_else(short)?;
            for (a, axis) in axes.iter_mut().enumerate() {
                let out = axis.get_mut(at.clone()).ok_or_else(short)?;
                match fresh {
                    true => {
                        let own = &p.positions.axes[a];
                        let pads = len.checked_sub(own.len()).ok_or_else(short)?;
                        out[pads..].copy_from_slice(own);
                    }
                    false => out
                        .iter_mut()
                        .zip(row_pos)
                        .for_each(|(o, &x)| *o = x + p.positions.delta),
                }
            }
        }
        let mut inputs = vec![NamedTensor {
            name: "mrope_positions".into(),
            value: i64_tensor(vec![3, rows.len() as u64, len as u64], &axes.concat()),
        }];
        if images {
            inputs.extend(self.image_inputs(rows, ids, len)?);
        }
        Ok(inputs)
    }

    fn image_inputs(
        &self,
        rows: &[(bool, &Prompt)],
        ids: &[i64],
        len: usize,
    ) -> Result<Vec<NamedTensor>, Error> {
        let (mut mask, mut index) = (Vec::with_capacity(ids.len()), Vec::with_capacity(ids.len()));
        let (mut patches, mut positions, mut owner) = (Vec::new(), Vec::new(), Vec::new());
        let mut feature = 0i64;
        let mut image = 0i64;
        let m2 = self.vision.merge * self.vision.merge;
        for (r, (fresh, p)) in rows.iter().enumerate() {
            let row = ids
                .get(r * len..(r + 1) * len)
                .ok_or_else(|| skill_sdk::internal("image rows outside the step"))?;
            let mut own = 0u64;
            for &t in row {
                let is_image = *fresh && t == self.image_token;
                mask.push(is_image as u8);
                index.push(if is_image { feature } else { 0 });
                if is_image {
                    feature += 1;
                    own += 1;
                }
            }
            if !*fresh {
                continue;
            }
            if own != p.images.iter().map(|i| self.tokens(i)).sum::<u64>() {
                return Err(skill_sdk::internal("image tokens and images disagree"));
            }
            for img in &p.images {
                patches.extend_from_slice(&img.values);
                positions.extend(self.vision.positions(img.grid));
                owner.extend(std::iter::repeat_n(image, (img.count() / m2) as usize));
                image += 1;
            }
        }
        let windows = owner.len() as u64;
        let pw = self.vision.patch_width();
        if patches.len() as u64 != windows * m2 * pw {
            return Err(skill_sdk::internal("image patches of the wrong width"));
        }
        let shape = vec![rows.len() as u64, len as u64];
        let named = |name: &str, value| NamedTensor {
            name: name.into(),
            value,
        };
        Ok(vec![
            named("pixel_patches", f32_tensor(vec![windows, m2, pw], &patches)),
            named(
                "patch_positions",
                i64_tensor(vec![windows, m2, 2], &positions),
            ),
            named("window_image", i64_tensor(vec![windows], &owner)),
            named("image_rows", i64_tensor(shape.clone(), &index)),
            named(
                "image_mask",
                Tensor {
                    dtype: Dtype::Boolean,
                    shape,
                    data: mask,
                },
            ),
        ])
    }
}
