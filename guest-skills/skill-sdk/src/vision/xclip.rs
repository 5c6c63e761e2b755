//! X-CLIP (zero-shot video classification): CLIP's towers extended to
//! clips of frames, as transformers' `XCLIPModel`.
//!
//! - Vision: each frame through CLIP's vision embeddings, then
//!   cross-frame layers: a message token per frame (`message_fc` of its
//!   class token) attends over the clip's frames (`message_ln`,
//!   `message_attn`), joins the frame's tokens for the layer's
//!   self-attention and is dropped before its MLP. The frames' pooled
//!   (`post_layernorm`) class tokens, projected, go through the multi-frame
//!   integration transformer (`mit`: positions, pre-norm layers, the input
//!   added back), whose mean over frames is the video embedding.
//! - Prompts: the patch tokens (`prompts_visual_layernorm`, then
//!   `@ prompts_visual_projection`) averaged over frames are the keys of
//!   the video-specific prompt generator: its layers let every text
//!   embedding cross-attend to them (`norm1`, `cross_attn`, `norm3`,
//!   `mlp`); `alpha` times the result is added to the text embedding.
//! - Text: CLIP's causal text tower pooled at the largest input id (X-CLIP
//!   keeps CLIP's legacy rule whatever `eos_token_id` says), projected.
//!
//! One graph: `pixel_values` [batch, frames, 3, h, w] and the text inputs
//! of [`Clip::text_inputs`] over `texts` (every hypothesis of the batch) ->
//! `logits` [batch, texts] (exp(`logit_scale`) x cosine: `logits_per_video`),
//! `video_embeds` [batch, projection] and `text_embeds` [batch, texts,
//! projection] (both L2-normalised, as `XCLIPModel.forward` returns them).
//! Missing config keys take `XCLIPConfig`'s defaults; the legacy
//! `text_config_dict` / `vision_config_dict` override their sections as
//! transformers does.

use super::clip::{Act, Clip, Tower};
use crate::config::Json;
use crate::graph::{Node, ReduceOp, UnaryOp};
use crate::{Dim, Dtype, Error, Graph};

/// An X-CLIP model resolved against its config.
pub struct XClip {
    /// The text and vision towers (CLIP's layers and embeddings).
    pub clip: Clip,
    /// The multi-frame integration transformer's layers.
    pub mit: Tower,
    /// Frames a clip has (`vision_config.num_frames`).
    pub frames: u64,
    /// The frame size (height, width) the position embeddings are for.
    pub image_size: (u64, u64),
    /// Width of the shared embedding space.
    pub projection: u64,
    prompt_layers: u64,
    prompt_heads: u64,
    prompt_act: Act,
}

/// A config section merged with its legacy `<key>_dict` (whose values win).
fn section(config: &Json, key: &str) -> Json {
    let mut value = match config.value.get(key) {
        Some(v @ serde_json::Value::Object(_)) => v.clone(),
        _ => serde_json::json!({}),
    };
    if let (Some(serde_json::Value::Object(over)), Some(base)) = (
        config.value.get(format!("{key}_dict")),
        value.as_object_mut(),
    ) {
        for (k, v) in over {
            base.insert(k.clone(), v.clone());
        }
    }
    Json {
        file: format!("{} {key}", config.file),
        value,
    }
}

/// Tower sizes with transformers' defaults for the keys a config leaves
/// out: (hidden, heads, layers) and the key names of the three.
fn tower(j: &Json, keys: [&str; 3], defaults: [u64; 3], act: Act) -> Result<Tower, Error> {
    let hidden = j.u64_or(keys[0], defaults[0])?;
    let heads = j.u64_or(keys[1], defaults[1])?;
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(Error::Model(format!(
            "{}: {} {hidden} is not a multiple of {heads} heads",
            j.file, keys[0]
        )));
    }
    Ok(Tower {
        hidden,
        heads,
        layers: j.u64_or(keys[2], defaults[2])?,
        eps: j.f64_or("layer_norm_eps", 1e-5)? as f32,
        act,
    })
}

/// `image_size` / `patch_size`: a number or [height, width].
fn size_pair(j: &Json, key: &str, default: u64) -> Result<(u64, u64), Error> {
    match j.value.get(key) {
        Some(serde_json::Value::Array(a)) => match a.as_slice() {
            [h, w] => h
                .as_u64()
                .zip(w.as_u64())
                .ok_or_else(|| Error::Model(format!("{}: `{key}` must hold integers", j.file))),
            _ => Err(Error::Model(format!(
                "{}: `{key}` must be a number or [height, width]",
                j.file
            ))),
        },
        _ => j.u64_or(key, default).map(|n| (n, n)),
    }
}

const TOWER_KEYS: [&str; 3] = ["hidden_size", "num_attention_heads", "num_hidden_layers"];

impl XClip {
    pub fn load(config: &Json) -> Result<XClip, Error> {
        let mt = config.str_or("model_type", "")?;
        if mt != "xclip" {
            return Err(Error::Unsupported(format!(
                "model_type `{mt}` is not X-CLIP"
            )));
        }
        let (t, v) = (
            section(config, "text_config"),
            section(config, "vision_config"),
        );
        let text_act = Act::named(t.str_or("hidden_act", "quick_gelu")?)?;
        let vision_act = Act::named(v.str_or("hidden_act", "quick_gelu")?)?;
        let text = tower(&t, TOWER_KEYS, [512, 8, 12], text_act)?;
        let vision = tower(&v, TOWER_KEYS, [768, 12, 12], vision_act)?;
        let mit_keys = [
            "mit_hidden_size",
            "mit_num_attention_heads",
            "mit_num_hidden_layers",
        ];
        let mit = tower(&v, mit_keys, [512, 8, 1], vision_act)?;
        let projection = config.u64_or("projection_dim", 512)?;
        if mit.hidden != projection {
            return Err(Error::Model(format!(
                "{}: mit_hidden_size {} must equal projection_dim {projection} (the MIT runs on projected frames)",
                v.file, mit.hidden
            )));
        }
        let prompt_heads = config.u64_or("prompt_num_attention_heads", 8)?;
        if prompt_heads == 0 || !projection.is_multiple_of(prompt_heads) {
            return Err(Error::Model(format!(
                "config.json: projection_dim {projection} is not a multiple of {prompt_heads} prompt heads"
            )));
        }
        let channels = v.u64_or("num_channels", 3)?;
        if channels != 3 {
            return Err(Error::Unsupported(format!(
                "X-CLIP with {channels} channels (frames are RGB)"
            )));
        }
        let frames = v.u64_or("num_frames", 8)?;
        if frames == 0 {
            return Err(Error::Model(format!("{}: num_frames is 0", v.file)));
        }
        let patch = match size_pair(&v, "patch_size", 32)? {
            (h, w) if h == w => h,
            (h, w) => {
                return Err(Error::Unsupported(format!(
                    "X-CLIP with {h}x{w} patches (square ones only)"
                )))
            }
        };
        Ok(XClip {
            clip: Clip {
                text,
                vision,
                patch,
                eos: None,
            },
            mit,
            frames,
            image_size: size_pair(&v, "image_size", 224)?,
            projection,
            prompt_layers: config.u64_or("prompt_layers", 2)?,
            prompt_heads,
            prompt_act: Act::named(config.str_or("prompt_hidden_act", "quick_gelu")?)?,
        })
    }

    /// The text length limit (`max_position_embeddings` of the text tower).
    pub fn max_text_tokens(config: &Json) -> Result<u64, Error> {
        section(config, "text_config").u64_or("max_position_embeddings", 77)
    }

    /// The graph (see the module docs) for frames of (height, width); its
    /// outputs are `logits`, `video_embeds` and `text_embeds`.
    pub fn graph(&self, (height, width): (usize, usize)) -> Result<Graph, Error> {
        let (h, w) = self.image_size;
        if (height as u64, width as u64) != (h, w) {
            return Err(Error::Model(format!(
                "the preprocessor gives {height}x{width} frames; the model's positions are for {h}x{w}"
            )));
        }
        let g = Graph::new("xclip");
        let (f, p) = (self.frames as i64, self.projection as i64);
        let batch = Dim::Symbolic("batch".into());
        let pixels = g.input(
            "pixel_values",
            Dtype::F32,
            &[
                batch.clone(),
                Dim::Fixed(self.frames),
                Dim::Fixed(3),
                Dim::Fixed(height as u64),
                Dim::Fixed(width as u64),
            ],
        )?;
        let frames = g.b.reshape(pixels, &[-1, 3, height as i64, width as i64])?;
        let lead = [batch.clone(), Dim::Fixed(self.frames)];
        let pre_norm = "vision_model.pre_layernorm";
        let mut x = (self.clip).image_embeddings(&g, frames, (height, width), &lead, pre_norm)?;
        for l in 0..self.clip.vision.layers {
            x = self.cross_frame_layer(&g, x, &format!("vision_model.encoder.layers.{l}."))?;
        }
        let eps = self.clip.vision.eps;
        // Video: pooled class tokens, projected, through the MIT.
        let cls = g.b.squeeze(g.b.slice(x, 1, 0, 1)?, 1)?;
        let cls = g.layer_norm(cls, "vision_model.post_layernorm", eps)?;
        let cls =
            g.b.reshape(g.linear(cls, "visual_projection")?, &[-1, f, p])?;
        let video = self.mit(&g, cls)?;
        // The prompt generator's keys: patch tokens averaged over frames.
        let tokens = match g.b.info(x)?.shape.get(1) {
            Some(Dim::Fixed(n)) => *n as i64,
            _ => return Err(Error::Graph("vision tokens without a fixed count".into())),
        };
        let patches = g.b.slice(x, 1, 1, tokens)?;
        let patches = g.layer_norm(patches, "prompts_visual_layernorm", eps)?;
        let patches =
            g.b.matmul(patches, g.weight("prompts_visual_projection")?)?;
        let patches = g.b.reshape(patches, &[-1, f, tokens - 1, p])?;
        let visual = g.reduce(ReduceOp::Mean, patches, &[1], false)?;
        // Text embeddings per video, with their prompts.
        let text = self.clip.text_embeds(&g, "texts")?;
        let text = g.b.expand(
            g.b.unsqueeze(text, 0)?,
            &[
                batch,
                Dim::Symbolic("texts".into()),
                Dim::Fixed(self.projection),
            ],
        )?;
        let text = g.add(text, self.prompts(&g, text, visual)?)?;
        let video = g.b.l2_normalize(video, -1, 1e-12)?;
        let text = g.b.l2_normalize(text, -1, 1e-12)?;
        let scale = g.unary(UnaryOp::Exp, g.weight("logit_scale")?)?;
        // [b, 1, p] @ [b, p, texts] -> [b, texts]
        let cos =
            g.b.matmul(g.b.unsqueeze(video, 1)?, g.b.permute(text, &[0, 2, 1])?)?;
        let logits = g.mul(g.b.squeeze(cos, 1)?, scale)?;
        for (name, node) in [
            ("logits", logits),
            ("video_embeds", video),
            ("text_embeds", text),
        ] {
            g.b.output(name, node)?;
        }
        Ok(g)
    }

    /// A cross-frame vision layer: `x` [batch x frames, tokens, hidden].
    fn cross_frame_layer(&self, g: &Graph, x: Node, at: &str) -> Result<Node, Error> {
        let (t, c) = (&self.clip.vision, &self.clip);
        let (f, d) = (self.frames as i64, t.hidden as i64);
        let first = g.b.squeeze(g.b.slice(x, 1, 0, 1)?, 1)?;
        let msg =
            g.b.reshape(g.linear(first, &format!("{at}message_fc"))?, &[-1, f, d])?;
        let n = g.layer_norm(msg, &format!("{at}message_ln"), t.eps)?;
        let msg = g.add(
            msg,
            c.self_attn(g, t, n, &format!("{at}message_attn"), None, false)?,
        )?;
        let msg = g.b.reshape(msg, &[-1, 1, d])?;
        let tokens = match g.b.info(x)?.shape.get(1) {
            Some(Dim::Fixed(n)) => *n as i64,
            _ => return Err(Error::Graph("vision tokens without a fixed count".into())),
        };
        let y = g.b.concat(&[x, msg], 1)?;
        let n = g.layer_norm(y, &format!("{at}layer_norm1"), t.eps)?;
        let y = g.add(
            y,
            c.self_attn(g, t, n, &format!("{at}self_attn"), None, false)?,
        )?;
        let y = g.b.slice(y, 1, 0, tokens)?;
        c.mlp_block(g, t, y, at)
    }

    /// The multi-frame integration transformer: `cls` [batch, frames,
    /// projection] -> the mean over frames of its output plus `cls`.
    fn mit(&self, g: &Graph, cls: Node) -> Result<Node, Error> {
        let mut x = g.add(cls, g.weight("mit.position_embedding")?)?;
        for l in 0..self.mit.layers {
            let at = format!("mit.encoder.layers.{l}.");
            x = self.clip.layer(g, &self.mit, x, &at, None, false)?;
        }
        g.reduce(ReduceOp::Mean, g.add(x, cls)?, &[1], false)
    }

    /// The video-specific prompts: `alpha` x the generator's layers over
    /// `text` [batch, texts, projection] attending to `visual` [batch,
    /// patches, projection].
    fn prompts(&self, g: &Graph, text: Node, visual: Node) -> Result<Node, Error> {
        let eps = self.clip.text.eps;
        let heads = self.prompt_heads;
        let d = self.projection / heads;
        let visual = g.layer_norm(visual, "prompts_generator.layernorm", self.clip.vision.eps)?;
        let mut x = text;
        for l in 0..self.prompt_layers {
            let at = format!("prompts_generator.decoder.{l}.");
            let n = g.layer_norm(x, &format!("{at}norm1"), eps)?;
            let proj = |rel: &str, from: Node| -> Result<Node, Error> {
                g.split_heads(g.linear(from, &format!("{at}cross_attn.{rel}"))?, heads, d)
            };
            let a = g.attention(
                proj("q_proj", n)?,
                proj("k_proj", visual)?,
                proj("v_proj", visual)?,
                None,
                false,
            )?;
            let a = g.linear(g.merge_heads(a)?, &format!("{at}cross_attn.proj"))?;
            x = g.add(x, a)?;
            let n = g.layer_norm(x, &format!("{at}norm3"), eps)?;
            let h = (self.clip).act(g, self.prompt_act, g.linear(n, &format!("{at}mlp.0"))?)?;
            x = g.add(x, g.linear(h, &format!("{at}mlp.3"))?)?;
        }
        g.mul(x, g.weight("prompts_generator.alpha")?)
    }
}
