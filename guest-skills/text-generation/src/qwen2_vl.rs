//! Qwen2-VL (`model_type` "qwen2_vl", the `image-text-to-text` task) on
//! this skill's decoder and generation loop: the decoder is a Qwen2 whose
//! config is `text_config` (transformers 5) or the top level (the hub's
//! flat configs), with its weights under `model.` (the hub's layout, which
//! transformers 5 also saves) or `model.language_model.`, the head
//! `lm_head` (else tied), and M-RoPE (`mrope.rs`) instead of 1-D rotary
//! positions.
//!
//! Request: `{"prompt": "...<|image_pad|>...<|video_pad|>...", "images":
//! [base64, ...], "videos": [[frame base64, ...], ...]}` (or `"image"`,
//! `"video"`), plus the generation keys; the processor's image token stands
//! for one image and its video token for one video, in order (a chat
//! template writes `<|vision_start|><|image_pad|><|vision_end|>` per image
//! part, `<|vision_start|><|video_pad|><|vision_end|>` per video part). A
//! video is a list of frames (or an animated GIF/WebP, `qwen2_vl/video.rs`). As
//! `Qwen2VLProcessor` does, each token is expanded to its image's or
//! video's merged tokens (grid t * h * w / merge^2, the grid from
//! `smart_resize`; a video's t its frames / `temporal_patch_size`), then
//! the prompt is tokenized and its three position lists and rope delta
//! computed (`get_rope_index`). Images and frames are decoded, resized,
//! normalized and cut into patches in the sandbox
//! (`skill_sdk::image::patches`, `qwen2_vl/video.rs`).
//!
//! The images and videos of a prefill (or of an extend step, for requests
//! joining a running batch) go through the vision tower and merger inside
//! that step's graph (`skill_sdk::vision::qwen2_vl`, every patch in one
//! attention with a block mask: an image's patches see their image, a
//! video's those of their frame group, transformers' `cu_seqlens`); the
//! features, in prompt order, replace the image and video tokens'
//! embeddings as LLaVA's do (`image_mask`, `image_rows`). Every step sends
//! `mrope_positions` [3, batch, seq]: a fresh prompt's own, and for a
//! running row its sequential position + its rope delta.

use skill_sdk::config::Json;
use skill_sdk::graph::Node;
use skill_sdk::image::patches::{PatchPreprocess, Patches};
use skill_sdk::tensors::{f32_tensor, i64_tensor};
use skill_sdk::vision::qwen2_vl::Qwen2VlVision;
use skill_sdk::{invalid, Dim, Dtype, Error, Graph, NamedTensor, Tensor};

use crate::mrope::{rope_index, Mrope, Positions};

mod video;
use video::{request_videos, VideoPreprocess};

/// Where the decoder's weights are, by the probe `embed_tokens.weight`.
const LM_BASES: &[&str] = &["model.", "model.language_model."];

/// A Qwen2-VL model's image side, positions and naming.
pub struct Qwen2Vl {
    pub vision: Qwen2VlVision,
    pub mrope: Mrope,
    /// The decoder's weight prefix (`...layers.0...`, `...norm.weight`).
    pub lm_base: String,
    pub image_token: i64,
    pub video_token: i64,
    pub image_text: String,
    pub video_text: String,
    pub pre: PatchPreprocess,
    /// The video processor's settings (its error, given to requests with
    /// videos only).
    pub video: Result<VideoPreprocess, Error>,
}

/// A request's images and videos (patches and grids, in prompt order) and
/// its prompt's positions.
#[derive(Clone, Debug, Default)]
pub struct Prompt {
    pub images: Vec<Patches>,
    /// Which of `images` are videos.
    pub is_video: Vec<bool>,
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
        let token_text = |key: &str, default: &str| {
            (processor.as_ref())
                .and_then(|p| p.value.get(key))
                .and_then(|v| v.as_str())
                .unwrap_or(default)
                .to_string()
        };
        let image_text = token_text("image_token", "<|image_pad|>");
        let video_text = token_text("video_token", "<|video_pad|>");
        let video = VideoPreprocess::read().and_then(|v| {
            let p = &v.pre;
            match (p.patch as u64, p.temporal as u64, p.merge as u64)
                == (vision.patch, vision.temporal, vision.merge)
            {
                true => Ok(v),
                false => Err(Error::Model(format!(
                    "the video processor's patches {}x{} over {} frames merged {}x{} are not the vision tower's",
                    p.patch, p.patch, p.temporal, p.merge, p.merge
                ))),
            }
        });
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
                video_text,
                pre,
                video,
            },
            text,
        ))
    }

    /// Merged tokens (image- or video-token ids) of an image or video.
    fn tokens(&self, p: &Patches) -> u64 {
        p.count() / (self.vision.merge * self.vision.merge)
    }

    /// The request's images (`images`, or one `image`) and videos
    /// (`videos`, or one `video`) as patches, and its prompt with each
    /// image or video token expanded to its tokens.
    pub fn prepare(&self, v: &serde_json::Value, prompt: &str) -> Result<(String, Prompt), Error> {
        let fields = skill_sdk::image::request_images(v)?;
        let videos = request_videos(v)?;
        for (text, given, what) in [
            (&self.image_text, fields.len(), "image"),
            (&self.video_text, videos.len(), "video"),
        ] {
            let marks = prompt.matches(text.as_str()).count();
            if marks != given {
                return Err(invalid(format!(
                    "the prompt has {marks} {what} token(s) `{text}` and the request {given} {what}(s)"
                )));
            }
        }
        let mut images = Vec::with_capacity(fields.len());
        for (name, b64) in &fields {
            let img = skill_sdk::image::from_base64(name, b64)?;
            images.push(self.pre.apply(name, &img)?);
        }
        let mut clips = Vec::with_capacity(videos.len());
        if !videos.is_empty() {
            let pre = self.video.as_ref().map_err(Clone::clone)?;
            for (name, video) in &videos {
                clips.push(pre.apply(name, video)?);
            }
        }
        // Expand the markers in prompt order, images and videos in theirs.
        let (mut images, mut clips) = (images.into_iter(), clips.into_iter());
        let mut out = Prompt::default();
        let mut expanded = String::with_capacity(prompt.len());
        let mut rest = prompt;
        loop {
            let image_at = rest.find(self.image_text.as_str());
            let video_at = rest.find(self.video_text.as_str());
            let (at, text, p, is_video) = match (image_at, video_at) {
                (Some(i), v) if v.is_none_or(|v| i < v) => {
                    (i, &self.image_text, images.next(), false)
                }
                (_, Some(v)) => (v, &self.video_text, clips.next(), true),
                _ => break,
            };
            let p = p.ok_or_else(|| skill_sdk::internal("an image or video went missing"))?;
            expanded.push_str(&rest[..at]);
            expanded.push_str(&text.repeat(self.tokens(&p) as usize));
            rest = &rest[at + text.len()..];
            out.images.push(p);
            out.is_video.push(is_video);
        }
        expanded.push_str(rest);
        Ok((expanded, out))
    }

    /// The tokenized prompt's M-RoPE positions (every image's and video's
    /// tokens must be there, one run each).
    pub fn position(&self, ids: &[i64], p: &mut Prompt) -> Result<(), Error> {
        let m = self.vision.merge;
        let grids: Vec<(i64, [u64; 3])> = (p.images.iter().zip(&p.is_video))
            .map(|(i, &video)| {
                let token = if video {
                    self.video_token
                } else {
                    self.image_token
                };
                (token, [i.grid[0], i.grid[1] / m, i.grid[2] / m])
            })
            .collect();
        let media = [self.image_token, self.video_token];
        p.positions = rope_index(ids, &media, &grids).map_err(|e| match e {
            Error::InvalidRequest(msg) => invalid(format!(
                "{msg} (is `{}` or `{}` in the prompt's text besides the markers?)",
                self.image_text, self.video_text
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
    /// `images`, the fresh rows' image and video patches with `image_mask`
    /// and `image_rows` over `ids` [rows, len].
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
                let is_image = *fresh && (t == self.image_token || t == self.video_token);
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
            // Attention groups: an image, or a video's frame group.
            for img in &p.images {
                patches.extend_from_slice(&img.values);
                positions.extend(self.vision.positions(img.grid));
                let [t, h, w] = img.grid;
                for _ in 0..t {
                    owner.extend(std::iter::repeat_n(image, (h * w / m2) as usize));
                    image += 1;
                }
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
