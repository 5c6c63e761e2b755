//! Vision transformers as data: ViT and DeiT (a spec per family) on one
//! pre-norm builder; Swin in [`swin`], ConvNeXt in [`convnext`],
//! VideoMAE in [`videomae`], X-CLIP in [`xclip`] (on [`clip`]), SigLIP's
//! tower in [`siglip`] (CLIP's alone in [`clip_vision`]) with LLaVA's
//! feature selection and projector in [`llava`] (LLaVA-NeXT's packing in
//! [`llava_next`]), Qwen2-VL's tower and patch merger in [`qwen2_vl`], DETR in
//! [`detr`] on the ResNet backbones of
//! [`resnet`]. The patch embedding (a convolution whose stride is
//! its kernel) is a reshape of the image into patches and a linear layer,
//! so it runs on every backend without a convolution op.
//!
//! Graph input: `pixel_values` [batch, 3, height, width] f32 at the
//! preprocessor's fixed output size.

pub mod clip;
pub mod clip_vision;
pub mod convnext;
pub mod detr;
pub mod llava;
pub mod llava_next;
mod patch_tower;
pub mod qwen2_vl;
pub mod resnet;
pub mod siglip;
pub mod swin;
pub mod videomae;
pub mod xclip;

use crate::config::Json;
use crate::graph::{Node, UnaryOp};
use crate::graph_ext::activation;
use crate::{Dim, Dtype, Error, Graph};

/// One vision-transformer family.
#[derive(Debug)]
pub struct VitSpec {
    pub model_types: &'static [&'static str],
    pub bases: &'static [&'static str],
    /// Tokens put before the patches, in order (class, distillation).
    pub tokens: &'static [&'static str],
    /// Classification heads reading token i; their logits are averaged
    /// (DeiT with teacher). The first list whose first weight exists wins.
    pub heads: &'static [&'static [(&'static str, usize)]],
}

/// Every vision transformer family served.
pub static VITS: &[VitSpec] = &[
    VitSpec {
        model_types: &["vit"],
        bases: &["vit.", ""],
        tokens: &["embeddings.cls_token"],
        heads: &[&[("classifier", 0)]],
    },
    VitSpec {
        model_types: &["deit"],
        bases: &["deit.", ""],
        tokens: &["embeddings.cls_token", "embeddings.distillation_token"],
        heads: &[
            &[("cls_classifier", 0), ("distillation_classifier", 1)],
            &[("classifier", 0)],
        ],
    },
];

/// Every `model_type` served by image classification (the ViT families
/// and Swin).
pub fn model_types() -> Vec<&'static str> {
    VITS.iter()
        .flat_map(|f| f.model_types.iter().copied())
        .chain(["swin", "convnext"])
        .collect()
}

/// A ViT-like model resolved against its config and weights.
pub struct Vit {
    pub spec: &'static VitSpec,
    pub model_type: String,
    pub base: String,
    pub hidden: u64,
    pub heads: u64,
    pub layers: u64,
    pub eps: f32,
    pub act: UnaryOp,
    pub patch: u64,
    pub channels: u64,
}

/// A graph with the encoder built into it.
pub struct VitGraph {
    pub g: Graph,
    /// The last hidden state after the final norm [batch, tokens, hidden].
    pub hidden: Node,
}

impl Vit {
    pub fn load(config: &Json, g: &Graph) -> Result<Vit, Error> {
        let model_type = config.str_or("model_type", "")?.to_string();
        let spec = VITS
            .iter()
            .find(|f| f.model_types.contains(&model_type.as_str()))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "model_type `{model_type}` is not a served vision transformer (served: {})",
                    model_types().join(", ")
                ))
            })?;
        let probe = "embeddings.patch_embeddings.projection.weight";
        let base = spec
            .bases
            .iter()
            .find(|b| g.has(&format!("{b}{probe}")))
            .ok_or_else(|| Error::Model(format!("no `{probe}`: not a {model_type} checkpoint")))?
            .to_string();
        let hidden = config.u64("hidden_size")?;
        let heads = config.u64("num_attention_heads")?;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::Model(format!(
                "config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
            )));
        }
        Ok(Vit {
            spec,
            model_type,
            base,
            hidden,
            heads,
            layers: config.u64("num_hidden_layers")?,
            eps: config.f64_or("layer_norm_eps", 1e-12)? as f32,
            act: activation(config.str_or("hidden_act", "gelu")?)?,
            patch: config.u64_or("patch_size", 16)?,
            channels: config.u64_or("num_channels", 3)?,
        })
    }

    fn name(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    /// The encoder for images of (height, width).
    pub fn build(
        &self,
        graph_name: &str,
        (height, width): (usize, usize),
    ) -> Result<VitGraph, Error> {
        let (p, c) = (self.patch as i64, self.channels as i64);
        let (h, w) = (height as i64, width as i64);
        if h % p != 0 || w % p != 0 {
            return Err(Error::Model(format!(
                "images of {height}x{width} do not split into {p}x{p} patches"
            )));
        }
        let g = Graph::new(graph_name);
        let batch = Dim::Symbolic("batch".into());
        let pixels = g.input(
            "pixel_values",
            Dtype::F32,
            &[
                batch.clone(),
                Dim::Fixed(c as u64),
                Dim::Fixed(height as u64),
                Dim::Fixed(width as u64),
            ],
        )?;
        // [b, c, h, w] -> [b, patches, c * p * p] -> linear (the conv weight flattened).
        let x = g.b.reshape(pixels, &[0, c, h / p, p, w / p, p])?;
        let x = g.b.permute(x, &[0, 2, 4, 1, 3, 5])?;
        let x = g.b.reshape(x, &[0, (h / p) * (w / p), c * p * p])?;
        let proj = self.name("embeddings.patch_embeddings.projection");
        let weight = g.b.reshape(
            g.weight(&format!("{proj}.weight"))?,
            &[self.hidden as i64, -1],
        )?;
        let bias = g.weight(&format!("{proj}.bias"))?;
        let patches = g.b.linear(x, weight, Some(bias))?;
        let mut parts = Vec::new();
        for t in self.spec.tokens {
            let tok = g.weight(&self.name(t))?;
            parts.push(g.b.expand(
                tok,
                &[batch.clone(), Dim::Fixed(1), Dim::Fixed(self.hidden)],
            )?);
        }
        parts.push(patches);
        let mut x = g.b.concat(&parts, 1)?;
        x = g.add(x, g.weight(&self.name("embeddings.position_embeddings"))?)?;
        for l in 0..self.layers {
            x = self.block(&g, x, &self.name(&format!("encoder.layer.{l}.")))?;
        }
        let hidden = g.layer_norm(x, &self.name("layernorm"), self.eps)?;
        Ok(VitGraph { g, hidden })
    }

    /// One pre-norm block.
    fn block(&self, g: &Graph, x: Node, at: &str) -> Result<Node, Error> {
        let d = self.hidden / self.heads;
        let n = g.layer_norm(x, &format!("{at}layernorm_before"), self.eps)?;
        let proj = |rel: &str| -> Result<Node, Error> {
            g.split_heads(
                g.linear(n, &format!("{at}attention.attention.{rel}"))?,
                self.heads,
                d,
            )
        };
        let a = g.merge_heads(g.attention(
            proj("query")?,
            proj("key")?,
            proj("value")?,
            None,
            false,
        )?)?;
        let x = g.add(g.linear(a, &format!("{at}attention.output.dense"))?, x)?;
        let n = g.layer_norm(x, &format!("{at}layernorm_after"), self.eps)?;
        let i = g.unary(self.act, g.linear(n, &format!("{at}intermediate.dense"))?)?;
        g.add(g.linear(i, &format!("{at}output.dense"))?, x)
    }

    /// Classification logits [batch, labels] and the label count.
    pub fn class_logits(&self, g: &Graph, hidden: Node) -> Result<(Node, u64), Error> {
        let heads = self
            .spec
            .heads
            .iter()
            .find(|h| h.first().is_some_and(|(n, _)| g.has(&format!("{n}.weight"))))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "the checkpoint has no image-classification head (a {} *ForImageClassification model is needed)",
                    self.model_type
                ))
            })?;
        let mut sum: Option<Node> = None;
        let mut labels = 0;
        for (name, token) in heads.iter() {
            let t =
                g.b.squeeze(g.b.slice(hidden, 1, *token as i64, *token as i64 + 1)?, 1)?;
            let logits = g.linear(t, name)?;
            if let Some(Dim::Fixed(n)) = g.b.info(logits)?.shape.last() {
                labels = *n;
            }
            sum = Some(match sum {
                Some(s) => g.add(s, logits)?,
                None => logits,
            });
        }
        let sum = sum.ok_or_else(|| Error::Internal("a head list is empty".into()))?;
        let out = match heads.len() {
            1 => sum,
            k => g.div(sum, g.scalar(k as f64, Dtype::F32)?)?,
        };
        Ok((out, labels))
    }
}
