//! VideoMAE (video classification): frames cut into tubelets (a 3-D
//! convolution whose stride is its kernel: a reshape and a linear layer),
//! fixed sinusoidal positions, a pre-norm ViT encoder whose query and value
//! projections carry separate biases (`q_bias`, `v_bias`; keys none), then
//! mean pooling with `fc_norm` or the final norm and the first token.
//!
//! Graph inputs: `pixel_values` [batch, frames, channels, height, width]
//! (transformers' layout) and `position_embeddings` [1, tubelets, hidden]
//! ([`VideoMae::positions`]: computed in f64 and rounded to f32 as
//! transformers does; too large for a graph constant).

use crate::config::Json;
use crate::graph::{Node, ReduceOp, UnaryOp};
use crate::graph_ext::activation;
use crate::tensors::f32_tensor;
use crate::{Dim, Dtype, Error, Graph, Tensor};

/// A VideoMAE model resolved against its config.
pub struct VideoMae {
    base: String,
    hidden: u64,
    heads: u64,
    layers: u64,
    eps: f32,
    act: UnaryOp,
    patch: u64,
    tubelet: u64,
    /// Frames a clip has.
    pub frames: u64,
    channels: u64,
    mean_pooling: bool,
}

impl VideoMae {
    pub fn load(config: &Json, g: &Graph) -> Result<VideoMae, Error> {
        let base = g.base_prefix("videomae", "embeddings.patch_embeddings.projection.weight")?;
        let hidden = config.u64("hidden_size")?;
        let heads = config.u64("num_attention_heads")?;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::Model(format!(
                "config.json: hidden_size {hidden} is not a multiple of {heads} heads"
            )));
        }
        let (frames, tubelet) = (
            config.u64_or("num_frames", 16)?,
            config.u64_or("tubelet_size", 2)?,
        );
        if tubelet == 0 || !frames.is_multiple_of(tubelet) {
            return Err(Error::Model(format!(
                "config.json: {frames} frames do not split into tubelets of {tubelet}"
            )));
        }
        Ok(VideoMae {
            base,
            hidden,
            heads,
            layers: config.u64("num_hidden_layers")?,
            eps: config.f64_or("layer_norm_eps", 1e-12)? as f32,
            act: activation(config.str_or("hidden_act", "gelu")?)?,
            patch: config.u64_or("patch_size", 16)?,
            tubelet,
            frames,
            channels: config.u64_or("num_channels", 3)?,
            mean_pooling: config.bool_or("use_mean_pooling", true)?,
        })
    }

    fn name(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    /// Tubelets of a clip of frames of (height, width).
    pub fn tubelets(&self, (h, w): (usize, usize)) -> u64 {
        (self.frames / self.tubelet) * (h as u64 / self.patch) * (w as u64 / self.patch)
    }

    /// The sinusoid table [1, n, hidden]: position / 10000^(2 (j / 2) /
    /// hidden), sine at even j, cosine at odd j.
    pub fn positions(&self, n: u64) -> Tensor {
        let d = self.hidden as usize;
        let mut v = Vec::with_capacity(n as usize * d);
        for pos in 0..n {
            for j in 0..d {
                let angle = pos as f64 / 10000f64.powf(2.0 * (j / 2) as f64 / d as f64);
                v.push(if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
            }
        }
        f32_tensor(vec![1, n, self.hidden], &v)
    }

    /// Classification logits [batch, labels] of clips of (height, width).
    pub fn logits(&self, g: &Graph, (height, width): (usize, usize)) -> Result<Node, Error> {
        let (p, t, c) = (self.patch as i64, self.tubelet as i64, self.channels as i64);
        let (h, w) = (height as i64, width as i64);
        if h % p != 0 || w % p != 0 {
            return Err(Error::Model(format!(
                "frames of {height}x{width} do not split into {p}x{p} patches"
            )));
        }
        let n = self.tubelets((height, width));
        let pixels = g.input(
            "pixel_values",
            Dtype::F32,
            &[
                Dim::Symbolic("batch".into()),
                Dim::Fixed(self.frames),
                Dim::Fixed(self.channels),
                Dim::Fixed(height as u64),
                Dim::Fixed(width as u64),
            ],
        )?;
        let pos = g.input(
            "position_embeddings",
            Dtype::F32,
            &[Dim::Fixed(1), Dim::Fixed(n), Dim::Fixed(self.hidden)],
        )?;
        // [b, frames, c, h, w] -> [b * frames/t, t, c, h/p, p, w/p, p]
        // -> [b * frames/t, h/p, w/p, c, t, p, p] -> [b, tubelets, c*t*p*p].
        let x = g.b.reshape(pixels, &[-1, t, c, h / p, p, w / p, p])?;
        let x = g.b.permute(x, &[0, 3, 5, 2, 1, 4, 6])?;
        let x = g.b.reshape(x, &[-1, n as i64, c * t * p * p])?;
        let proj = self.name("embeddings.patch_embeddings.projection");
        let weight = g.b.reshape(
            g.weight(&format!("{proj}.weight"))?,
            &[self.hidden as i64, -1],
        )?;
        let x =
            g.b.linear(x, weight, Some(g.weight(&format!("{proj}.bias"))?))?;
        let mut x = g.add(x, pos)?;
        for l in 0..self.layers {
            x = self.block(g, x, &self.name(&format!("encoder.layer.{l}.")))?;
        }
        let features = match self.mean_pooling {
            true => g.layer_norm(
                g.reduce(ReduceOp::Mean, x, &[1], false)?,
                "fc_norm",
                self.eps,
            )?,
            false => {
                let x = g.layer_norm(x, &self.name("layernorm"), self.eps)?;
                g.b.squeeze(g.b.slice(x, 1, 0, 1)?, 1)?
            }
        };
        if !g.has("classifier.weight") {
            return Err(Error::Unsupported(
                "the checkpoint has no video-classification head (VideoMAEForVideoClassification)"
                    .into(),
            ));
        }
        g.linear(features, "classifier")
    }

    /// One pre-norm block.
    fn block(&self, g: &Graph, x: Node, at: &str) -> Result<Node, Error> {
        let d = self.hidden / self.heads;
        let n = g.layer_norm(x, &format!("{at}layernorm_before"), self.eps)?;
        let attn = format!("{at}attention.attention");
        let proj = |rel: &str, bias: Option<&str>| -> Result<Node, Error> {
            let w = g.weight(&format!("{attn}.{rel}.weight"))?;
            let b = match bias.map(|b| format!("{attn}.{b}")).filter(|b| g.has(b)) {
                Some(b) => Some(g.weight(&b)?),
                None => None,
            };
            g.split_heads(g.b.linear(n, w, b)?, self.heads, d)
        };
        let a = g.attention(
            proj("query", Some("q_bias"))?,
            proj("key", None)?,
            proj("value", Some("v_bias"))?,
            None,
            false,
        )?;
        let x = g.add(
            g.linear(g.merge_heads(a)?, &format!("{at}attention.output.dense"))?,
            x,
        )?;
        let n = g.layer_norm(x, &format!("{at}layernorm_after"), self.eps)?;
        let i = g.unary(self.act, g.linear(n, &format!("{at}intermediate.dense"))?)?;
        g.add(g.linear(i, &format!("{at}output.dense"))?, x)
    }
}
