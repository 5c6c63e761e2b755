//! LLaVA (`model_type` "llava", the `image-text-to-text` task) on this
//! skill's decoder and generation loop: the decoder is the model's
//! `text_config` (llama or qwen2) with its weights under
//! `model.language_model.` (transformers 5) or `language_model.model.`
//! (the hub's older layout), the head `lm_head` or `language_model.lm_head`
//! (else tied to the embeddings).
//!
//! Request: `{"prompt": "...<image>...", "images": [base64, ...]}` (or
//! `"image": base64` for one), plus the generation keys. Each image token
//! of the prompt (`<image>`, or the processor's `image_token`) stands for
//! one image, in order; as `LlavaProcessor` does, it is expanded to the
//! number of features an image yields, then the prompt is tokenized. Images
//! are decoded and preprocessed in the sandbox (`preprocessor_config.json`:
//! SigLIP's resize without crop, rescale, normalize).
//!
//! The images of a prefill (or of an extend step, for requests joining a
//! running batch) go through the vision tower and projector inside that
//! step's graph, once per image; at the positions `image_mask` [batch, seq]
//! marks, the token embeddings [batch, seq, width] are replaced by the
//! image features [images * tokens, width] that `image_rows` picks (a
//! gather and a select, so nothing but pixels and indices crosses into the
//! graph). Decode steps are the text decoder's, unchanged.
//!
//! LLaVA-NeXT (`model_type` "llava_next", a CLIP tower and a mistral,
//! llama or qwen2 decoder) takes several tower inputs an image (its anyres
//! tiles) and packs their features with newline rows (`llava_next.rs`);
//! `image_rows` then indexes the packed order, the newline being one more
//! row after the step's features.

use skill_sdk::config::Json;
use skill_sdk::graph::Node;
use skill_sdk::image::Preprocess;
use skill_sdk::tensors::{f32_tensor, i64_tensor};
use skill_sdk::vision::llava::LlavaVision;
use skill_sdk::vision::llava_next::Feature;

use crate::llava_next::LlavaNext;
use skill_sdk::{invalid, Dim, Error, Graph, NamedTensor};

/// Where the decoder's weights are, by the probe `embed_tokens.weight`.
const LM_BASES: &[(&str, &str)] = &[
    ("model.language_model.", "lm_head.weight"),
    ("language_model.model.", "language_model.lm_head.weight"),
];

/// A LLaVA model's image side and naming.
pub struct Llava {
    pub vision: LlavaVision,
    /// The decoder's weight prefix (`...layers.0...`, `...norm.weight`).
    pub lm_base: String,
    /// The head's weight name (absent: tied to the embeddings).
    pub head: String,
    /// The image token's id and text.
    pub image_token: i64,
    pub image_text: String,
    pub pre: Preprocess,
    /// LLaVA-NeXT's tiling and packing.
    pub next: Option<LlavaNext>,
}

/// A request's images, preprocessed.
#[derive(Clone, Debug, Default)]
pub struct Images {
    /// The tower's inputs, [3, h, w] values each, image after image (one
    /// an image; LLaVA-NeXT: the whole image, then its tiles).
    pub pixels: Vec<Vec<f32>>,
    /// Per image: its tower inputs, and the features its image tokens
    /// take, in order (indices into those inputs' features, input-major).
    pub images: Vec<(usize, Vec<Feature>)>,
}

impl Images {
    /// Image tokens the prompt must hold.
    pub fn tokens(&self) -> usize {
        self.images.iter().map(|(_, f)| f.len()).sum()
    }
}

impl Llava {
    /// Reads a `llava` config; returns the model and its decoder's config
    /// (`text_config`).
    pub fn load(config: &Json) -> Result<(Llava, Json), Error> {
        let text = config
            .value
            .get("text_config")
            .cloned()
            .ok_or_else(|| Error::Model("config.json: `text_config` is missing".into()))?;
        let text = Json {
            file: "config.json text_config".into(),
            value: crate::text_config::with_defaults(text),
        };
        let g = Graph::new("llava-probe");
        let vision = LlavaVision::load(config, &g)?;
        let (lm_base, head) = LM_BASES
            .iter()
            .find(|(b, _)| g.has(&format!("{b}embed_tokens.weight")))
            .ok_or_else(|| {
                Error::Model(
                    "no LLaVA decoder in the checkpoint (looked for `embed_tokens.weight` under \
                     model.language_model. and language_model.model.)"
                        .into(),
                )
            })?;
        let image_token = config
            .value
            .get("image_token_index")
            .or_else(|| config.value.get("image_token_id"))
            .and_then(|v| v.as_i64())
            .ok_or_else(|| Error::Model("config.json: `image_token_index` is missing".into()))?;
        let processor = Json::asset("processor_config.json")?;
        let image_text = processor
            .as_ref()
            .and_then(|p| p.value.get("image_token"))
            .and_then(|v| v.as_str())
            .unwrap_or("<image>")
            .to_string();
        let pre = Preprocess::read()?;
        if pre.output_size() != Some(vision.image_size()) {
            return Err(Error::Model(format!(
                "preprocessor_config.json: images of {:?}, the vision tower takes {:?}",
                pre.output_size(),
                vision.image_size()
            )));
        }
        let next = match config.str_or("model_type", "")? {
            "llava_next" => Some(LlavaNext::load(config, &vision, &pre, &g)?),
            _ => None,
        };
        Ok((
            Llava {
                vision,
                lm_base: lm_base.to_string(),
                head: head.to_string(),
                image_token,
                image_text,
                pre,
                next,
            },
            text,
        ))
    }

    /// The request's images (`images`, or one `image`), decoded and
    /// preprocessed, and its prompt with each image token expanded; the
    /// counts must agree.
    pub fn prepare(&self, v: &serde_json::Value, prompt: &str) -> Result<(String, Images), Error> {
        let fields = skill_sdk::image::request_images(v)?;
        let marks = prompt.matches(self.image_text.as_str()).count();
        if marks != fields.len() {
            return Err(invalid(format!(
                "the prompt has {marks} image token(s) `{}` and the request {} image(s)",
                self.image_text,
                fields.len()
            )));
        }
        let mut out = Images::default();
        for (name, b64) in fields {
            let img = skill_sdk::image::from_base64(&name, b64)?;
            let (inputs, features) = match &self.next {
                Some(next) => next.image(&img, &self.pre)?,
                None => {
                    let n = self.vision.tokens() as u32;
                    (
                        vec![self.pre.apply(&img).2],
                        (0..n).map(Feature::At).collect(),
                    )
                }
            };
            out.images.push((inputs.len(), features));
            out.pixels.extend(inputs);
        }
        // Each image token becomes as many as its image has features.
        let mut expanded = String::with_capacity(prompt.len());
        for (i, part) in prompt.split(self.image_text.as_str()).enumerate() {
            if i > 0 {
                let n = out.images.get(i - 1).map_or(0, |(_, f)| f.len());
                expanded.push_str(&self.image_text.repeat(n));
            }
            expanded.push_str(part);
        }
        Ok((expanded, out))
    }

    /// Checks that the tokenized prompt holds every image's tokens.
    pub fn check_ids(&self, ids: &[i64], images: &Images) -> Result<(), Error> {
        let got = ids.iter().filter(|&&t| t == self.image_token).count();
        let want = images.tokens();
        if got != want {
            return Err(invalid(format!(
                "the prompt tokenizes to {got} image tokens, {want} are needed for {} image(s) \
                 (is `{}` in the prompt's text besides the image markers?)",
                images.images.len(),
                self.image_text
            )));
        }
        Ok(())
    }

    /// `e` [batch, seq, width] (token embeddings; `bs` its leading dims)
    /// with the image tokens' rows replaced by the image features.
    pub fn splice(&self, g: &Graph, e: Node, bs: &[Dim]) -> Result<Node, Error> {
        let rows = g.input("image_rows", skill_sdk::Dtype::I64, bs)?;
        let at = g.input("image_mask", skill_sdk::Dtype::Boolean, bs)?;
        let mut feats = self.vision.features(g, "images")?;
        let w = self.vision.width as i64;
        // LLaVA-NeXT: the newline embedding after each input's features.
        if let Some(next) = &self.next {
            let newline = g.b.reshape(g.weight(&next.newline)?, &[1, 1, w])?;
            let shape = [
                Dim::Symbolic("images".into()),
                Dim::Fixed(1),
                Dim::Fixed(w as u64),
            ];
            feats = g.b.concat(&[feats, g.b.expand(newline, &shape)?], 1)?;
        }
        let picked = g.b.gather(g.b.reshape(feats, &[-1, w])?, rows, 0)?;
        g.b.select(g.b.unsqueeze(at, -1)?, picked, e)
    }

    /// A step's image inputs: `pixel_values` of the images of `fresh` rows
    /// (in row order), and for `ids` [rows, len] (left padded)
    /// `image_mask` (true at image tokens) and `image_rows` (there, the
    /// image feature's row among all the step's images' features, each
    /// tower input's followed by the newline with LLaVA-NeXT; 0 elsewhere). Image-token ids become `pad`
    /// (their embeddings are replaced; an image id may lie outside the
    /// vocabulary).
    pub fn step_inputs(
        &self,
        rows: &[(bool, &Images)],
        ids: &mut [i64],
        len: usize,
        pad: i64,
    ) -> Result<Vec<NamedTensor>, Error> {
        let per = self.vision.tokens() as usize;
        // The step's features: every fresh row's tower inputs in row order,
        // `per` rows each, followed (LLaVA-NeXT) by a newline row; any
        // input's newline will do, the first's is row `per`.
        let inputs: usize = rows
            .iter()
            .filter(|(fresh, _)| *fresh)
            .map(|(_, im)| im.pixels.len())
            .sum();
        let stride = per + self.next.is_some() as usize;
        let newline = per as i64;
        let mut mask = Vec::with_capacity(ids.len());
        let mut index = Vec::with_capacity(ids.len());
        let mut pixels = Vec::new();
        let mut first = 0usize; // the next image's first tower input
        for (r, (fresh, images)) in rows.iter().enumerate() {
            let row = ids
                .get_mut(r * len..(r + 1) * len)
                .ok_or_else(|| skill_sdk::internal("image rows outside the step"))?;
            let mut features = Vec::new();
            if *fresh {
                for (n, packed) in &images.images {
                    features.extend(packed.iter().map(|f| match f {
                        Feature::At(k) => {
                            let k = *k as usize;
                            ((first + k / per) * stride + k % per) as i64
                        }
                        Feature::Newline => newline,
                    }));
                    first += n;
                }
                pixels.extend(images.pixels.iter().flatten());
            }
            let mut next = features.iter();
            for t in row.iter_mut() {
                let image = *fresh && *t == self.image_token;
                mask.push(image as u8);
                index.push(match image {
                    true => *next
                        .next()
                        .ok_or_else(|| skill_sdk::internal("more image tokens than features"))?,
                    false => 0,
                });
                if image {
                    *t = pad;
                }
            }
            if next.next().is_some() {
                return Err(skill_sdk::internal("image tokens and images disagree"));
            }
        }
        let count = inputs as u64;
        let (h, w) = self.vision.image_size();
        let c = self.vision.tower.channels();
        Ok(vec![
            NamedTensor {
                name: "pixel_values".into(),
                value: f32_tensor(vec![count, c, h as u64, w as u64], &pixels),
            },
            NamedTensor {
                name: "image_rows".into(),
                value: i64_tensor(vec![rows.len() as u64, len as u64], &index),
            },
            NamedTensor {
                name: "image_mask".into(),
                value: skill_sdk::Tensor {
                    dtype: skill_sdk::Dtype::Boolean,
                    shape: vec![rows.len() as u64, len as u64],
                    data: mask,
                },
            },
        ])
    }
}
