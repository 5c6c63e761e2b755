//! Wav2Vec2 and HuBERT speech encoders: a convolutional feature encoder
//! over the raw waveform (group norm on its first layer, or a layer norm
//! after every layer), a projection, a grouped positional convolution
//! (weight norm folded in the graph), and a post-norm (base) or pre-norm
//! ("stable", large) transformer; optionally the CTC head.
//!
//! Graph input: `input_values` [batch, samples] f32 (the feature
//! extractor's normalised waveform), any length: the convolutions give
//! symbolic frame counts. Outputs: `hidden` [batch, frames, hidden] and,
//! with the head, `logits` [batch, frames, vocab].

use crate::config::Json;
use crate::graph::{ConvOptions, Node, ReduceOp, UnaryOp};
use crate::graph_ext::activation;
use crate::{Dim, Dtype, Error, Graph};

/// A Wav2Vec2-like model resolved against its config and weights.
pub struct Wav2Vec2 {
    pub model_type: String,
    base: String,
    kernels: Vec<u64>,
    strides: Vec<u64>,
    /// Layer norm after every feature-encoder conv (else group norm on the first).
    layer_norm_features: bool,
    feat_act: UnaryOp,
    act: UnaryOp,
    hidden: u64,
    heads: u64,
    layers: u64,
    eps: f32,
    /// Pre-norm layers and a final norm (`do_stable_layer_norm`).
    stable: bool,
    pos_kernel: u64,
    pos_groups: u64,
}

impl Wav2Vec2 {
    /// Model types served.
    pub const MODEL_TYPES: [&'static str; 2] = ["wav2vec2", "hubert"];

    pub fn load(config: &Json, g: &Graph) -> Result<Wav2Vec2, Error> {
        let model_type = config.str_or("model_type", "")?.to_string();
        if !Self::MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(Error::Unsupported(format!(
                "model_type `{model_type}` is not a served speech encoder (served: wav2vec2, hubert)"
            )));
        }
        let base = g.base_prefix(&model_type, "feature_extractor.conv_layers.0.conv.weight")?;
        let (kernels, strides) = (
            config.u64_list("conv_kernel")?,
            config.u64_list("conv_stride")?,
        );
        if kernels.is_empty() || kernels.len() != strides.len() {
            return Err(Error::Model(
                "config.json: `conv_kernel` and `conv_stride` differ".into(),
            ));
        }
        let hidden = config.u64("hidden_size")?;
        let heads = config.u64("num_attention_heads")?;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::Model(format!(
                "hidden size {hidden} is not a multiple of {heads} heads"
            )));
        }
        let norm = config.str_or("feat_extract_norm", "group")?;
        Ok(Wav2Vec2 {
            model_type,
            base,
            kernels,
            strides,
            layer_norm_features: norm == "layer",
            feat_act: activation(config.str_or("feat_extract_activation", "gelu")?)?,
            act: activation(config.str_or("hidden_act", "gelu")?)?,
            hidden,
            heads,
            layers: config.u64("num_hidden_layers")?,
            eps: config.f64_or("layer_norm_eps", 1e-5)? as f32,
            stable: config.bool_or("do_stable_layer_norm", false)?,
            pos_kernel: config.u64_or("num_conv_pos_embeddings", 128)?,
            pos_groups: config.u64_or("num_conv_pos_embedding_groups", 16)?,
        })
    }

    fn name(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    fn conv_opts(stride: u64, pad: (u32, u32), groups: u64) -> ConvOptions {
        ConvOptions {
            stride: vec![stride as u32],
            padding: vec![pad],
            dilation: vec![1],
            groups: groups as u32,
        }
    }

    /// The encoder's last hidden state [batch, frames, hidden].
    pub fn hidden(&self, g: &Graph) -> Result<Node, Error> {
        let x = g.input(
            "input_values",
            Dtype::F32,
            &[
                Dim::Symbolic("batch".into()),
                Dim::Symbolic("samples".into()),
            ],
        )?;
        // [batch, 1, samples] through the feature encoder.
        let mut x = g.b.unsqueeze(x, 1)?;
        for (i, (&_k, &s)) in self.kernels.iter().zip(&self.strides).enumerate() {
            let at = self.name(&format!("feature_extractor.conv_layers.{i}"));
            let bias = match g.has(&format!("{at}.conv.bias")) {
                true => Some(g.weight(&format!("{at}.conv.bias"))?),
                false => None,
            };
            x = g.b.conv(
                x,
                g.weight(&format!("{at}.conv.weight"))?,
                bias,
                &Self::conv_opts(s, (0, 0), 1),
            )?;
            if self.layer_norm_features {
                let t = g.b.permute(x, &[0, 2, 1])?;
                x = g.b.permute(
                    g.layer_norm(t, &format!("{at}.layer_norm"), 1e-5)?,
                    &[0, 2, 1],
                )?;
            } else if i == 0 {
                x = self.group_norm(g, x, &format!("{at}.layer_norm"))?;
            }
            x = g.unary(self.feat_act, x)?;
        }
        // [batch, frames, channels] -> projection.
        let mut h = g.b.permute(x, &[0, 2, 1])?;
        let proj = self.name("feature_projection");
        if g.has(&format!("{proj}.layer_norm.weight")) {
            h = g.layer_norm(h, &format!("{proj}.layer_norm"), self.eps)?;
        }
        let h = g.linear(h, &format!("{proj}.projection"))?;
        let h = g.add(h, self.positions(g, h)?)?;
        let mut h = match self.stable {
            true => h,
            false => g.layer_norm(h, &self.name("encoder.layer_norm"), self.eps)?,
        };
        for l in 0..self.layers {
            h = self.layer(g, h, &self.name(&format!("encoder.layers.{l}")))?;
        }
        match self.stable {
            true => g.layer_norm(h, &self.name("encoder.layer_norm"), self.eps),
            false => Ok(h),
        }
    }

    /// GroupNorm with one group per channel: each channel normalised over
    /// time. `x` [batch, channels, frames].
    fn group_norm(&self, g: &Graph, x: Node, prefix: &str) -> Result<Node, Error> {
        let mean = g.reduce(ReduceOp::Mean, x, &[2], true)?;
        let d = g.b.binary(crate::graph::BinaryOp::Sub, x, mean)?;
        let var = g.reduce(ReduceOp::Mean, g.mul(d, d)?, &[2], true)?;
        let den = g.unary(UnaryOp::Rsqrt, g.add(var, g.scalar(1e-5, Dtype::F32)?)?)?;
        let y = g.mul(d, den)?;
        let w = g.b.unsqueeze(g.weight(&format!("{prefix}.weight"))?, 1)?;
        let b = g.b.unsqueeze(g.weight(&format!("{prefix}.bias"))?, 1)?;
        g.add(g.mul(y, w)?, b)
    }

    /// The positional convolution of `h` [batch, frames, hidden]: weight
    /// norm over the kernel axis, "same" padding (one frame less on the
    /// right for an even kernel, as transformers drops it), GELU.
    fn positions(&self, g: &Graph, h: Node) -> Result<Node, Error> {
        let at = self.name("encoder.pos_conv_embed.conv");
        let (gn, vn) = match g.has(&format!("{at}.parametrizations.weight.original0")) {
            true => (
                format!("{at}.parametrizations.weight.original0"),
                format!("{at}.parametrizations.weight.original1"),
            ),
            false => (format!("{at}.weight_g"), format!("{at}.weight_v")),
        };
        let (gw, v) = (g.weight(&gn)?, g.weight(&vn)?);
        // weight = v * g / ||v|| over every axis but the kernel's.
        let norm = g.unary(
            UnaryOp::Sqrt,
            g.reduce(ReduceOp::Sum, g.mul(v, v)?, &[0, 1], true)?,
        )?;
        let weight = g.mul(v, g.div(gw, norm)?)?;
        let k = self.pos_kernel as u32;
        let pad = (k / 2, k / 2 - (1 - k % 2));
        let x = g.b.permute(h, &[0, 2, 1])?;
        let y = g.b.conv(
            x,
            weight,
            Some(g.weight(&format!("{at}.bias"))?),
            &Self::conv_opts(1, pad, self.pos_groups),
        )?;
        // Its activation is `feat_extract_activation`, as in transformers.
        g.b.permute(g.unary(self.feat_act, y)?, &[0, 2, 1])
    }

    fn layer(&self, g: &Graph, h: Node, at: &str) -> Result<Node, Error> {
        let d = self.hidden / self.heads;
        let attend = |x: Node| -> Result<Node, Error> {
            let proj = |n: &str| {
                g.split_heads(g.linear(x, &format!("{at}.attention.{n}"))?, self.heads, d)
            };
            let o = g.attention(
                proj("q_proj")?,
                proj("k_proj")?,
                proj("v_proj")?,
                None,
                false,
            )?;
            g.linear(g.merge_heads(o)?, &format!("{at}.attention.out_proj"))
        };
        let ff = |x: Node| -> Result<Node, Error> {
            let i = g.unary(
                self.act,
                g.linear(x, &format!("{at}.feed_forward.intermediate_dense"))?,
            )?;
            g.linear(i, &format!("{at}.feed_forward.output_dense"))
        };
        let (norm1, norm2) = (format!("{at}.layer_norm"), format!("{at}.final_layer_norm"));
        match self.stable {
            true => {
                let h = g.add(h, attend(g.layer_norm(h, &norm1, self.eps)?)?)?;
                g.add(h, ff(g.layer_norm(h, &norm2, self.eps)?)?)
            }
            false => {
                let h = g.layer_norm(g.add(h, attend(h)?)?, &norm1, self.eps)?;
                g.layer_norm(g.add(h, ff(h)?)?, &norm2, self.eps)
            }
        }
    }
}
