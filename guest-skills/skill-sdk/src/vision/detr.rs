//! DETR (`DetrForObjectDetection`): a ResNet backbone ([`super::resnet`],
//! timm or transformers layout), a 1x1 input projection, sine position
//! embeddings from the pixel mask, a post-norm transformer encoder and
//! decoder whose queries and keys get the position embeddings in every
//! layer, learned object queries, and the class and box heads.
//!
//! Graph inputs:
//! - `pixel_values` [batch, 3, height, width] f32, padded to the batch's
//!   largest image (zeros);
//! - `pixel_mask` [batch, height, width] f32: 1 where the feature map is
//!   valid. The graph samples it at every 2^k-th pixel (k = the backbone's
//!   stride-2 steps) so that it has the feature map's symbolic size; the
//!   skill writes it so that these samples equal transformers'
//!   nearest-neighbour interpolation of its pixel mask (see
//!   [`feature_extent`] and [`sampling_mask`]).
//!
//! The position embedding (`DetrSinePositionEmbedding`, normalize, 2 pi):
//! the mask's cumulative sums along rows and columns are convolutions
//! with an all-ones kernel of [`MAX_FEATURE_SIDE`] taps (exact in f32),
//! divided by the totals (+ 1e-6), over temperature^(2 floor(i/2) / n),
//! sine on even and cosine on odd features, y then x.
//!
//! Outputs: `logits` [batch, queries, labels + 1] and `pred_boxes` [batch,
//! queries, 4] (sigmoid of the 3-layer MLP: centre x, centre y, width,
//! height, relative to the unpadded image).

use crate::config::Json;
use crate::graph::{CompareOp, ConvOptions, Node, ReduceOp, UnaryOp};
use crate::graph_ext::activation;
use crate::tensors::{bool_tensor, f32_tensor};
use crate::{Dim, Dtype, Error, Graph};

use super::resnet::{sample_mask, ResNet};

/// The longest side of a feature map the position embedding supports (the
/// cumulative-sum kernel's length): 256 x 32 = 8192 pixels.
pub const MAX_FEATURE_SIDE: u64 = 256;

/// transformers' `nn.LayerNorm` default epsilon in DETR.
const LN_EPS: f32 = 1e-5;

/// A DETR model resolved against its config and weights.
pub struct Detr {
    base: String,
    backbone: ResNet,
    d_model: u64,
    enc_heads: u64,
    dec_heads: u64,
    enc_layers: u64,
    dec_layers: u64,
    act: UnaryOp,
    /// `o_proj` (transformers 5) or `out_proj` (the hub's checkpoints).
    out_proj: &'static str,
    /// `mlp.fc` or `fc`.
    fc: &'static str,
}

/// The graph and its outputs.
pub struct DetrGraph {
    pub g: Graph,
    pub logits: Node,
    pub boxes: Node,
    /// Labels without the no-object class.
    pub labels: u64,
}

impl Detr {
    pub fn load(config: &Json, g: &Graph) -> Result<Detr, Error> {
        if config.str_or("position_embedding_type", "sine")? != "sine" {
            return Err(Error::Unsupported(
                "DETR with learned position embeddings (only `sine` is served)".into(),
            ));
        }
        if config.bool_or("dilation", false)? {
            return Err(Error::Unsupported(
                "DETR with a dilated last stage (DC5)".into(),
            ));
        }
        let base = ["model.", ""]
            .into_iter()
            .find(|b| g.has(&format!("{b}query_position_embeddings.weight")))
            .ok_or_else(|| {
                Error::Model("no `query_position_embeddings.weight`: not a DETR checkpoint".into())
            })?
            .to_string();
        let backbone_config = config.value.get("backbone_config").filter(|v| !v.is_null());
        let native_type = backbone_config
            .and_then(|b| b.get("model_type"))
            .and_then(|t| t.as_str());
        let timm = config.bool_or("use_timm_backbone", native_type.is_none())?
            || native_type == Some("timm_backbone");
        let native = match (timm, backbone_config) {
            (false, Some(b)) => {
                if native_type != Some("resnet") {
                    return Err(Error::Unsupported(format!(
                        "DETR backbone `{}` (served: timm ResNets and transformers' resnet)",
                        native_type.unwrap_or("?")
                    )));
                }
                Some(Json {
                    file: "config.json (backbone_config)".into(),
                    value: b.clone(),
                })
            }
            _ => None,
        };
        let last_stage = match &native {
            Some(b) => b
                .value
                .get("out_features")
                .and_then(|v| v.as_array())
                .and_then(|a| a.last())
                .and_then(|s| s.as_str())
                .and_then(|s| s.strip_prefix("stage"))
                .and_then(|n| n.parse::<usize>().ok()),
            None => backbone_config
                .and_then(|b| b.get("out_indices"))
                .or_else(|| {
                    config
                        .value
                        .get("backbone_kwargs")
                        .and_then(|k| k.get("out_indices"))
                })
                .and_then(|v| v.as_array())
                .and_then(|a| a.last())
                .and_then(|n| n.as_u64())
                .map(|n| n as usize),
        };
        let bases: Vec<String> = ["backbone.conv_encoder.model.", "backbone.model."]
            .iter()
            .map(|b| format!("{base}{b}"))
            .collect();
        let (backbone, _) = ResNet::load(g, &bases, native.as_ref(), last_stage)?;
        let enc = |rel: &str| format!("{base}encoder.layers.0.{rel}");
        let out_proj = match g.has(&format!("{}.weight", enc("self_attn.o_proj"))) {
            true => "o_proj",
            false => "out_proj",
        };
        let fc = match g.has(&format!("{}.weight", enc("mlp.fc1"))) {
            true => "mlp.fc",
            false => "fc",
        };
        let d_model = config.u64_or("d_model", 256)?;
        let heads = |key: &str| -> Result<u64, Error> {
            let h = config.u64_or(key, 8)?;
            if h == 0 || !d_model.is_multiple_of(h) {
                return Err(Error::Model(format!(
                    "config.json: d_model {d_model} is not a multiple of {key} {h}"
                )));
            }
            Ok(h)
        };
        if d_model % 2 != 0 {
            return Err(Error::Model(format!(
                "config.json: d_model {d_model} is odd"
            )));
        }
        Ok(Detr {
            base,
            d_model,
            enc_heads: heads("encoder_attention_heads")?,
            dec_heads: heads("decoder_attention_heads")?,
            enc_layers: config.u64_or("encoder_layers", 6)?,
            dec_layers: config.u64_or("decoder_layers", 6)?,
            act: activation(config.str_or("activation_function", "relu")?)?,
            out_proj,
            fc,
            backbone,
        })
    }

    /// Stride-2 steps of the backbone (the feature map is 2^k times
    /// smaller, rounded up).
    pub fn halvings(&self) -> u32 {
        self.backbone.halvings
    }

    fn name(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    /// The whole detector.
    pub fn build(&self, graph_name: &str) -> Result<DetrGraph, Error> {
        let g = Graph::new(graph_name);
        let batch = Dim::Symbolic("batch".into());
        let (h, w) = (
            Dim::Symbolic("height".into()),
            Dim::Symbolic("width".into()),
        );
        let pixels = g.input(
            "pixel_values",
            Dtype::F32,
            &[batch.clone(), Dim::Fixed(3), h.clone(), w.clone()],
        )?;
        let mask = g.input("pixel_mask", Dtype::F32, &[batch.clone(), h, w])?;
        let features = self.backbone.features(&g, pixels)?;
        let proj = self.name("input_projection");
        let x = g.b.conv(
            features,
            g.weight(&format!("{proj}.weight"))?,
            Some(g.weight(&format!("{proj}.bias"))?),
            &ConvOptions {
                stride: vec![1, 1],
                padding: vec![(0, 0), (0, 0)],
                dilation: vec![1, 1],
                groups: 1,
            },
        )?;
        // [b, d, h', w'] -> [b, h' * w', d]
        let x = g.b.permute(g.b.reshape(x, &[0, 0, -1])?, &[0, 2, 1])?;
        let m = sample_mask(&g, g.b.unsqueeze(mask, 1)?, self.backbone.halvings)?;
        let pos = self.position_embedding(&g, m)?;
        let keep = g.b.compare(
            CompareOp::Greater,
            g.b.unsqueeze(g.b.reshape(m, &[0, 0, -1])?, 1)?,
            g.scalar(0.5, Dtype::F32)?,
        )?;
        let mut x = x;
        for l in 0..self.enc_layers {
            x = self.encoder_layer(
                &g,
                x,
                pos,
                keep,
                &self.name(&format!("encoder.layers.{l}.")),
            )?;
        }
        let d = Dim::Fixed(self.d_model);
        let qpos = g.weight(&self.name("query_position_embeddings.weight"))?;
        let queries = match g.b.info(qpos)?.shape.first() {
            Some(Dim::Fixed(q)) => *q,
            _ => return Err(crate::internal("query embedding shape")),
        };
        let shape = [batch, Dim::Fixed(queries), d];
        let qpos = g.b.expand(qpos, &shape)?;
        let mut y = g.b.expand(g.scalar(0.0, Dtype::F32)?, &shape)?;
        for l in 0..self.dec_layers {
            let at = self.name(&format!("decoder.layers.{l}."));
            y = self.decoder_layer(&g, y, qpos, x, pos, keep, &at)?;
        }
        let y = g.layer_norm(y, &self.name("decoder.layernorm"), LN_EPS)?;
        if !g.has("class_labels_classifier.weight") {
            return Err(Error::Unsupported(
                "the checkpoint has no detection heads (a DetrForObjectDetection model is needed)"
                    .into(),
            ));
        }
        let logits = g.linear(y, "class_labels_classifier")?;
        let labels = match g.b.info(logits)?.shape.last() {
            Some(Dim::Fixed(n)) if *n >= 2 => *n - 1,
            _ => {
                return Err(Error::Model(
                    "the class head has fewer than 2 outputs".into(),
                ))
            }
        };
        let mut b = y;
        let mut k = 0;
        while g.has(&format!("bbox_predictor.layers.{k}.weight")) {
            if k > 0 {
                b = g.unary(UnaryOp::Relu, b)?;
            }
            b = g.linear(b, &format!("bbox_predictor.layers.{k}"))?;
            k += 1;
        }
        if k == 0 {
            return Err(Error::Model("no `bbox_predictor.layers.0.weight`".into()));
        }
        let boxes = g.unary(UnaryOp::Sigmoid, b)?;
        Ok(DetrGraph {
            g,
            logits,
            boxes,
            labels,
        })
    }

    /// Sine position embeddings [batch, h' * w', d_model] of the feature
    /// mask `m` [batch, 1, h', w'].
    fn position_embedding(&self, g: &Graph, m: Node) -> Result<Node, Error> {
        let n = self.d_model / 2;
        let ones = vec![1f32; MAX_FEATURE_SIDE as usize];
        let pad = (MAX_FEATURE_SIDE - 1) as u32;
        let cumsum = |shape: Vec<u64>, padding: Vec<(u32, u32)>| -> Result<Node, Error> {
            g.b.conv(
                m,
                g.b.constant(&f32_tensor(shape, &ones))?,
                None,
                &ConvOptions {
                    stride: vec![1, 1],
                    padding,
                    dilation: vec![1, 1],
                    groups: 1,
                },
            )
        };
        let y = cumsum(vec![1, 1, MAX_FEATURE_SIDE, 1], vec![(pad, 0), (0, 0)])?;
        let x = cumsum(vec![1, 1, 1, MAX_FEATURE_SIDE], vec![(0, 0), (pad, 0)])?;
        let eps = g.scalar(1e-6, Dtype::F32)?;
        let two_pi = g.scalar(2.0 * std::f64::consts::PI, Dtype::F32)?;
        let norm = |v: Node, axis: i32| -> Result<Node, Error> {
            let total = g.reduce(ReduceOp::Sum, m, &[axis], true)?;
            g.mul(g.div(v, g.add(total, eps)?)?, two_pi)
        };
        let (y, x) = (norm(y, 2)?, norm(x, 3)?);
        // temperature^(2 floor(i / 2) / n), rounded to f32 as torch does.
        let dim_t: Vec<f32> = (0..n)
            .map(|i| 10000f64.powf((2 * (i / 2)) as f64 / n as f64) as f32)
            .collect();
        let dim_t = g.b.constant(&f32_tensor(vec![n], &dim_t))?;
        let even: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
        let even = g.b.constant(&bool_tensor(vec![n], &even))?;
        let embed = |v: Node| -> Result<Node, Error> {
            // [b, 1, h', w'] -> [b, h', w', 1] / dim_t -> [b, h', w', n]
            let a = g.div(g.b.permute(v, &[0, 2, 3, 1])?, dim_t)?;
            g.b.select(even, g.unary(UnaryOp::Sin, a)?, g.unary(UnaryOp::Cos, a)?)
        };
        let pos = g.b.concat(&[embed(y)?, embed(x)?], 3)?;
        g.b.reshape(pos, &[0, -1, self.d_model as i64])
    }

    /// Multi-head attention with DETR's projections under `at`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        g: &Graph,
        q_in: Node,
        k_in: Node,
        v_in: Node,
        mask: Option<Node>,
        heads: u64,
        at: &str,
    ) -> Result<Node, Error> {
        let d = self.d_model / heads;
        let proj =
            |x: Node, rel: &str| g.split_heads(g.linear(x, &format!("{at}{rel}"))?, heads, d);
        let a = g.attention(
            proj(q_in, "q_proj")?,
            proj(k_in, "k_proj")?,
            proj(v_in, "v_proj")?,
            mask,
            false,
        )?;
        g.linear(g.merge_heads(a)?, &format!("{at}{}", self.out_proj))
    }

    fn mlp(&self, g: &Graph, x: Node, at: &str) -> Result<Node, Error> {
        let h = g.unary(self.act, g.linear(x, &format!("{at}{}1", self.fc))?)?;
        let y = g.linear(h, &format!("{at}{}2", self.fc))?;
        g.layer_norm(g.add(x, y)?, &format!("{at}final_layer_norm"), LN_EPS)
    }

    fn encoder_layer(
        &self,
        g: &Graph,
        x: Node,
        pos: Node,
        keep: Node,
        at: &str,
    ) -> Result<Node, Error> {
        let qk = g.add(x, pos)?;
        let a = self.attention(
            g,
            qk,
            qk,
            x,
            Some(keep),
            self.enc_heads,
            &format!("{at}self_attn."),
        )?;
        let x = g.layer_norm(g.add(x, a)?, &format!("{at}self_attn_layer_norm"), LN_EPS)?;
        self.mlp(g, x, at)
    }

    #[allow(clippy::too_many_arguments)]
    fn decoder_layer(
        &self,
        g: &Graph,
        y: Node,
        qpos: Node,
        memory: Node,
        pos: Node,
        keep: Node,
        at: &str,
    ) -> Result<Node, Error> {
        let qk = g.add(y, qpos)?;
        let a = self.attention(
            g,
            qk,
            qk,
            y,
            None,
            self.dec_heads,
            &format!("{at}self_attn."),
        )?;
        let y = g.layer_norm(g.add(y, a)?, &format!("{at}self_attn_layer_norm"), LN_EPS)?;
        let a = self.attention(
            g,
            g.add(y, qpos)?,
            g.add(memory, pos)?,
            memory,
            Some(keep),
            self.dec_heads,
            &format!("{at}encoder_attn."),
        )?;
        let y = g.layer_norm(
            g.add(y, a)?,
            &format!("{at}encoder_attn_layer_norm"),
            LN_EPS,
        )?;
        self.mlp(g, y, at)
    }
}

/// The feature map's length for an axis of `len` pixels after `halvings`
/// stride-2 steps (each `(n - 1) / 2 + 1`).
pub fn feature_len(len: usize, halvings: u32) -> usize {
    (0..halvings).fold(len, |n, _| n.saturating_sub(1) / 2 + 1)
}

/// How many of `out` feature rows are valid for an image of `valid` rows
/// padded to `len`: rows whose nearest source row (PyTorch's
/// `F.interpolate(mode="nearest")`, scale computed in f32) is inside the
/// image.
pub fn feature_extent(valid: usize, len: usize, out: usize) -> usize {
    let src = |y: usize| -> usize {
        if out == len {
            y
        } else if out == 2 * len {
            y >> 1
        } else {
            let scale = len as f32 / out as f32;
            ((y as f32 * scale).floor() as usize).min(len.saturating_sub(1))
        }
    };
    (0..out).take_while(|&y| src(y) < valid).count()
}

/// The `pixel_mask` input for one image of (h, w) valid pixels in a padded
/// (ph, pw) batch: ones on the top-left rectangle whose every 2^k-th
/// samples are the valid feature cells.
pub fn sampling_mask((h, w): (usize, usize), (ph, pw): (usize, usize), halvings: u32) -> Vec<f32> {
    let step = 1usize << halvings;
    let (fh, fw) = (feature_len(ph, halvings), feature_len(pw, halvings));
    let rows = (feature_extent(h, ph, fh) * step).min(ph);
    let cols = (feature_extent(w, pw, fw) * step).min(pw);
    let mut m = vec![0f32; ph * pw];
    for y in 0..rows {
        m[y * pw..y * pw + cols].fill(1.0);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_lengths_round_up() {
        assert_eq!(feature_len(800, 5), 25);
        assert_eq!(feature_len(801, 5), 26);
        assert_eq!(feature_len(1, 5), 1);
    }

    #[test]
    fn nearest_extent_follows_the_scale() {
        // 801 rows -> 26: scale 30.807..., row 25 reads 770.
        assert_eq!(feature_extent(801, 801, 26), 26);
        assert_eq!(feature_extent(770, 801, 26), 25);
        assert_eq!(feature_extent(771, 801, 26), 26);
        assert_eq!(feature_extent(64, 128, 4), 2);
    }
}
