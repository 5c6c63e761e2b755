//! ConvNeXt (image classification) in channels-last layout [batch, h, w,
//! channels], from generic ops: the stem and the downsampling
//! convolutions have stride = kernel (patches and a linear layer), and the
//! depthwise 7x7 convolution of every block is the graph's `conv` (groups =
//! channels, on the channels-first view). Then the
//! block's norm, MLP and layer scale; global average pooling, a norm and
//! the classifier.

use crate::config::Json;
use crate::graph::{ConvOptions, Node, ReduceOp, UnaryOp};
use crate::graph_ext::activation;
use crate::{Dim, Dtype, Error, Graph};

/// ConvNeXt's fixed norm epsilon inside the network (the final norm's
/// comes from the config).
const INNER_EPS: f32 = 1e-6;

/// A ConvNeXt model resolved against its config.
pub struct ConvNext {
    base: String,
    hidden: Vec<u64>,
    depths: Vec<u64>,
    patch: u64,
    channels: u64,
    eps: f32,
    act: UnaryOp,
}

impl ConvNext {
    pub fn load(config: &Json, g: &Graph) -> Result<ConvNext, Error> {
        let (hidden, depths) = (config.u64_list("hidden_sizes")?, config.u64_list("depths")?);
        if hidden.is_empty() || hidden.len() != depths.len() {
            return Err(Error::Model(
                "config.json: `hidden_sizes` and `depths` differ in length".into(),
            ));
        }
        let base = g.base_prefix("convnext", "embeddings.patch_embeddings.weight")?;
        Ok(ConvNext {
            base,
            hidden,
            depths,
            patch: config.u64_or("patch_size", 4)?,
            channels: config.u64_or("num_channels", 3)?,
            eps: config.f64_or("layer_norm_eps", 1e-12)? as f32,
            act: activation(config.str_or("hidden_act", "gelu")?)?,
        })
    }

    fn name(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    /// The pooled, normalised features [batch, channels] of images of
    /// (height, width).
    pub fn pooled(&self, g: &Graph, (height, width): (usize, usize)) -> Result<Node, Error> {
        let (p, c) = (self.patch, self.channels);
        let (h, w) = (height as u64 / p, width as u64 / p);
        let pixels = g.input(
            "pixel_values",
            Dtype::F32,
            &[
                Dim::Symbolic("batch".into()),
                Dim::Fixed(c),
                Dim::Fixed(height as u64),
                Dim::Fixed(width as u64),
            ],
        )?;
        // A strided conv drops what does not fill a kernel.
        let pixels = g.b.slice(
            g.b.slice(pixels, 2, 0, (h * p) as i64)?,
            3,
            0,
            (w * p) as i64,
        )?;
        let x = g.b.reshape(
            pixels,
            &[0, c as i64, h as i64, p as i64, w as i64, p as i64],
        )?;
        let x = g.b.permute(x, &[0, 2, 4, 1, 3, 5])?;
        let x =
            g.b.reshape(x, &[0, h as i64, w as i64, (c * p * p) as i64])?;
        let x = self.conv_linear(
            g,
            x,
            &self.name("embeddings.patch_embeddings"),
            self.hidden[0],
        )?;
        let mut x = g.layer_norm(x, &self.name("embeddings.layernorm"), INNER_EPS)?;
        let (mut h, mut w) = (h, w);
        let mut dim = self.hidden[0];
        for (s, (&out, &depth)) in self.hidden.iter().zip(&self.depths).enumerate() {
            let stage = self.name(&format!("encoder.stages.{s}"));
            if g.has(&format!("{stage}.downsampling_layer.1.weight")) {
                x = g.layer_norm(x, &format!("{stage}.downsampling_layer.0"), INNER_EPS)?;
                let (h2, w2) = (h / 2, w / 2);
                let y =
                    g.b.slice(g.b.slice(x, 1, 0, (2 * h2) as i64)?, 2, 0, (2 * w2) as i64)?;
                let y =
                    g.b.reshape(y, &[0, h2 as i64, 2, w2 as i64, 2, dim as i64])?;
                let y = g.b.permute(y, &[0, 1, 3, 5, 2, 4])?;
                let y =
                    g.b.reshape(y, &[0, h2 as i64, w2 as i64, (dim * 4) as i64])?;
                x = self.conv_linear(g, y, &format!("{stage}.downsampling_layer.1"), out)?;
                (h, w) = (h2, w2);
            }
            dim = out;
            for l in 0..depth {
                x = self.block(g, x, &format!("{stage}.layers.{l}"), (h, w, dim))?;
            }
        }
        let pooled = g.reduce(ReduceOp::Mean, x, &[1, 2], false)?;
        g.layer_norm(pooled, &self.name("layernorm"), self.eps)
    }

    /// A convolution whose stride is its kernel, over patches already
    /// flattened in the weight's (in, kh, kw) order.
    fn conv_linear(&self, g: &Graph, x: Node, prefix: &str, out: u64) -> Result<Node, Error> {
        let weight =
            g.b.reshape(g.weight(&format!("{prefix}.weight"))?, &[out as i64, -1])?;
        g.b.linear(x, weight, Some(g.weight(&format!("{prefix}.bias"))?))
    }

    /// One block over `x` [batch, h, w, dim].
    fn block(
        &self,
        g: &Graph,
        x: Node,
        at: &str,
        (h, w, dim): (u64, u64, u64),
    ) -> Result<Node, Error> {
        let y = self.depthwise(g, x, &format!("{at}.dwconv"), (h, w, dim))?;
        let y = g.layer_norm(y, &format!("{at}.layernorm"), INNER_EPS)?;
        let y = g.unary(self.act, g.linear(y, &format!("{at}.pwconv1"))?)?;
        let mut y = g.linear(y, &format!("{at}.pwconv2"))?;
        let scale = format!("{at}.layer_scale_parameter");
        if g.has(&scale) {
            y = g.mul(y, g.weight(&scale)?)?;
        }
        g.add(x, y)
    }

    /// Depthwise k x k convolution (padding k / 2) of `x` [batch, h, w, dim]
    /// with `prefix.weight` [dim, 1, k, k] and `prefix.bias`.
    fn depthwise(
        &self,
        g: &Graph,
        x: Node,
        prefix: &str,
        (_, _, dim): (u64, u64, u64),
    ) -> Result<Node, Error> {
        let weight = g.weight(&format!("{prefix}.weight"))?;
        let k = match g.b.info(weight)?.shape.as_slice() {
            [Dim::Fixed(d), Dim::Fixed(1), Dim::Fixed(k), Dim::Fixed(k2)] if *d == dim && k == k2 && k % 2 == 1 => *k,
            other => {
                return Err(Error::Model(format!(
                    "`{prefix}.weight`: expected a depthwise [{dim}, 1, k, k] kernel of odd k, got {other:?}"
                )))
            }
        };
        let pad = (k / 2) as u32;
        let bias = g.weight(&format!("{prefix}.bias"))?;
        let y = g.b.conv(
            g.b.permute(x, &[0, 3, 1, 2])?,
            weight,
            Some(bias),
            &ConvOptions {
                stride: vec![1, 1],
                padding: vec![(pad, pad), (pad, pad)],
                dilation: vec![1, 1],
                groups: dim as u32,
            },
        )?;
        g.b.permute(y, &[0, 2, 3, 1])
    }
}
