//! CLIP: an image tower (a ViT with a class embedding, a norm before the
//! layers and one after pooling) and a causal text tower pooled at the
//! end-of-text token, each projected into a shared space.
//!
//! Image graph: `pixel_values` [batch, 3, h, w] -> image embeddings [batch,
//! projection]. Text graph: `input_ids`, `attention_mask`, `position_ids`,
//! `pool_rows` [batch] (flat index of each row's end-of-text token into
//! batch x sequence; [`Clip::pool_rows`]) -> text embeddings [batch,
//! projection]. Either as transformers' `get_*_features` return them, or
//! ([`Output::Logits`]) L2-normalised with the text side times
//! exp(`logit_scale`), so that a dot product is `logits_per_image`.

use crate::config::Json;
use crate::graph::{Node, UnaryOp};
use crate::graph_ext::activation;
use crate::{Dim, Dtype, Error, Graph};

/// One tower's sizes.
#[derive(Clone, Debug)]
pub struct Tower {
    pub hidden: u64,
    pub heads: u64,
    pub layers: u64,
    pub eps: f32,
    pub act: Act,
}

/// CLIP's activations: `quick_gelu` (x * sigmoid(1.702 x)) or a graph op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Act {
    QuickGelu,
    Op(UnaryOp),
}

impl Act {
    /// The activation a config names (`hidden_act`).
    pub fn named(name: &str) -> Result<Act, Error> {
        Ok(match name {
            "quick_gelu" => Act::QuickGelu,
            other => Act::Op(activation(other)?),
        })
    }
}

impl Tower {
    fn read(c: &serde_json::Value, file: &str) -> Result<Tower, Error> {
        let j = Json {
            file: file.to_string(),
            value: c.clone(),
        };
        let act = Act::named(j.str_or("hidden_act", "quick_gelu")?)?;
        let hidden = j.u64("hidden_size")?;
        let heads = j.u64("num_attention_heads")?;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(Error::Model(format!(
                "{file}: hidden_size {hidden} is not a multiple of {heads} heads"
            )));
        }
        Ok(Tower {
            hidden,
            heads,
            layers: j.u64("num_hidden_layers")?,
            eps: j.f64_or("layer_norm_eps", 1e-5)? as f32,
            act,
        })
    }
}

/// What a tower's graph returns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output {
    /// The projection as transformers' `get_image_features` /
    /// `get_text_features` return it.
    Features,
    /// L2-normalised (the text side times exp(`logit_scale`)), so that a
    /// dot product is a logit.
    Logits,
}

/// A CLIP model's two towers.
pub struct Clip {
    pub text: Tower,
    pub vision: Tower,
    pub patch: u64,
    /// The end-of-text id pooling looks for; `None`: the largest id
    /// (transformers' legacy rule when `eos_token_id` is 2).
    pub eos: Option<i64>,
}

impl Clip {
    pub fn load(config: &Json) -> Result<Clip, Error> {
        let mt = config.str_or("model_type", "")?;
        if mt != "clip" {
            return Err(Error::Unsupported(format!("model_type `{mt}` is not CLIP")));
        }
        let section = |k: &str| {
            config
                .value
                .get(k)
                .cloned()
                .ok_or_else(|| Error::Model(format!("config.json: `{k}` is missing")))
        };
        let (t, v) = (section("text_config")?, section("vision_config")?);
        let eos = t.get("eos_token_id").and_then(|e| e.as_i64());
        Ok(Clip {
            text: Tower::read(&t, "config.json text_config")?,
            vision: Tower::read(&v, "config.json vision_config")?,
            patch: v.get("patch_size").and_then(|p| p.as_u64()).unwrap_or(32),
            eos: eos.filter(|&e| e != 2),
        })
    }

    pub(crate) fn act(&self, g: &Graph, a: Act, x: Node) -> Result<Node, Error> {
        act(g, a, x)
    }

    /// A pre-norm encoder layer of either tower (`at`: its weight prefix).
    pub(crate) fn layer(
        &self,
        g: &Graph,
        t: &Tower,
        x: Node,
        at: &str,
        mask: Option<Node>,
        causal: bool,
    ) -> Result<Node, Error> {
        layer(g, t, x, at, mask, causal)
    }

    /// [`self_attn`].
    pub(crate) fn self_attn(
        &self,
        g: &Graph,
        t: &Tower,
        n: Node,
        at: &str,
        mask: Option<Node>,
        causal: bool,
    ) -> Result<Node, Error> {
        self_attn(g, t, n, at, mask, causal)
    }

    /// [`mlp_block`].
    pub(crate) fn mlp_block(&self, g: &Graph, t: &Tower, x: Node, at: &str) -> Result<Node, Error> {
        mlp_block(g, t, x, at)
    }

    /// The image graph for images of (height, width).
    pub fn image_graph(
        &self,
        (height, width): (usize, usize),
        output: Output,
    ) -> Result<(Graph, Node), Error> {
        let t = &self.vision;
        let g = Graph::new("clip-image");
        let pixels = g.input(
            "pixel_values",
            Dtype::F32,
            &[
                Dim::Symbolic("batch".into()),
                Dim::Fixed(3),
                Dim::Fixed(height as u64),
                Dim::Fixed(width as u64),
            ],
        )?;
        let batch = [Dim::Symbolic("batch".into())];
        let pre_norm = "vision_model.pre_layrnorm";
        let mut x = self.image_embeddings(&g, pixels, (height, width), &batch, pre_norm)?;
        for l in 0..t.layers {
            x = self.layer(
                &g,
                t,
                x,
                &format!("vision_model.encoder.layers.{l}."),
                None,
                false,
            )?;
        }
        let first = g.b.squeeze(g.b.slice(x, 1, 0, 1)?, 1)?;
        let pooled = g.layer_norm(first, "vision_model.post_layernorm", t.eps)?;
        let embeds = g.linear(pooled, "visual_projection")?;
        let out = match output {
            Output::Features => embeds,
            Output::Logits => g.b.l2_normalize(embeds, -1, 1e-12)?,
        };
        Ok((g, out))
    }

    /// `pixels` [n, 3, h, w] as the vision tower's input tokens [n, 1 +
    /// patches, hidden]: patches (the stride = kernel convolution as a
    /// reshape and a linear layer), the class embedding first, positions
    /// added, then the pre-norm `pre_norm` (CLIP's `pre_layrnorm`). `lead`
    /// are the axes whose product is n (`[batch]`, or `[batch, frames]`
    /// for clips of frames), so that the class tokens' axis is the same
    /// symbolic length as the patches'.
    pub(crate) fn image_embeddings(
        &self,
        g: &Graph,
        pixels: Node,
        (height, width): (usize, usize),
        lead: &[Dim],
        pre_norm: &str,
    ) -> Result<Node, Error> {
        let tower = (&self.vision, self.patch, 3);
        embeddings(
            g,
            tower,
            "vision_model.",
            pixels,
            (height, width),
            lead,
            pre_norm,
        )
    }

    /// The text graph (see the module docs).
    pub fn text_graph(&self, output: Output) -> Result<(Graph, Node), Error> {
        let g = Graph::new("clip-text");
        let embeds = self.text_embeds(&g, "batch")?;
        let out = match output {
            Output::Features => embeds,
            Output::Logits => {
                let unit = g.b.l2_normalize(embeds, -1, 1e-12)?;
                let scale = g.unary(UnaryOp::Exp, g.weight("logit_scale")?)?;
                g.mul(unit, scale)?
            }
        };
        Ok((g, out))
    }

    /// The text tower with its inputs (see the module docs; their batch
    /// axis named `batch`) and projection: text embeddings [batch,
    /// projection] as `get_text_features` returns them.
    pub(crate) fn text_embeds(&self, g: &Graph, batch: &str) -> Result<Node, Error> {
        let t = &self.text;
        let bs = [
            Dim::Symbolic(batch.into()),
            Dim::Symbolic("sequence".into()),
        ];
        let ids = g.input("input_ids", Dtype::I64, &bs)?;
        let mask = g.input("attention_mask", Dtype::I64, &bs)?;
        let rows = g.input("pool_rows", Dtype::I64, &[Dim::Symbolic(batch.into())])?;
        let pos = g.input(
            "position_ids",
            Dtype::I64,
            &[Dim::Fixed(1), Dim::Symbolic("sequence".into())],
        )?;
        let mut x = g.b.embedding(
            g.weight("text_model.embeddings.token_embedding.weight")?,
            ids,
        )?;
        x = g.add(
            x,
            g.b.embedding(
                g.weight("text_model.embeddings.position_embedding.weight")?,
                pos,
            )?,
        )?;
        let keep = g.b.compare(
            crate::graph::CompareOp::Greater,
            mask,
            g.scalar(0.0, Dtype::I64)?,
        )?;
        let keys = g.b.unsqueeze(g.b.unsqueeze(keep, 1)?, 1)?;
        for l in 0..t.layers {
            x = self.layer(
                g,
                t,
                x,
                &format!("text_model.encoder.layers.{l}."),
                Some(keys),
                true,
            )?;
        }
        x = g.layer_norm(x, "text_model.final_layer_norm", t.eps)?;
        let flat = g.b.reshape(x, &[-1, t.hidden as i64])?;
        let pooled = g.b.gather(flat, rows, 0)?;
        g.linear(pooled, "text_projection")
    }
}

/// `a` applied to `x`.
pub(crate) fn act(g: &Graph, a: Act, x: Node) -> Result<Node, Error> {
    match a {
        Act::Op(op) => g.unary(op, x),
        Act::QuickGelu => {
            let s = g.unary(UnaryOp::Sigmoid, g.mul(x, g.scalar(1.702, Dtype::F32)?)?)?;
            g.mul(x, s)
        }
    }
}

/// CLIP's vision embeddings (see [`Clip::image_embeddings`]) of the tower
/// `(t, patch, channels)` whose weights are `embeddings.*` under `base`.
pub(crate) fn embeddings(
    g: &Graph,
    (t, patch, channels): (&Tower, u64, u64),
    base: &str,
    pixels: Node,
    (height, width): (usize, usize),
    lead: &[Dim],
    pre_norm: &str,
) -> Result<Node, Error> {
    let (p, c) = (patch as i64, channels as i64);
    let (h, w) = (height as i64, width as i64);
    if p == 0 || h < p || w < p {
        return Err(Error::Model(format!(
            "images of {height}x{width} are smaller than one {p}x{p} patch"
        )));
    }
    // The convolution (stride = kernel) drops pixels past the last whole patch.
    let (gh, gw) = (h / p, w / p);
    let pixels = match (gh * p == h, gw * p == w) {
        (true, true) => pixels,
        _ => g.b.slice(g.b.slice(pixels, 2, 0, gh * p)?, 3, 0, gw * p)?,
    };
    let x = g.b.reshape(pixels, &[0, c, gh, p, gw, p])?;
    let x = g.b.permute(x, &[0, 2, 4, 1, 3, 5])?;
    let x = g.b.reshape(x, &[0, gh * gw, c * p * p])?;
    let weight = g.weight(&format!("{base}embeddings.patch_embedding.weight"))?;
    let weight = g.b.reshape(weight, &[t.hidden as i64, -1])?;
    let patches = g.b.linear(x, weight, None)?;
    let mut ones = vec![1i64; lead.len() + 1];
    ones.push(t.hidden as i64);
    let cls = g.weight(&format!("{base}embeddings.class_embedding"))?;
    let cls = g.b.reshape(cls, &ones)?;
    let mut shape = lead.to_vec();
    shape.extend([Dim::Fixed(1), Dim::Fixed(t.hidden)]);
    let mut cls = g.b.expand(cls, &shape)?;
    if lead.len() != 1 {
        cls = g.b.reshape(cls, &[-1, 1, t.hidden as i64])?;
    }
    let x = g.b.concat(&[cls, patches], 1)?;
    let x = g.add(
        x,
        g.weight(&format!("{base}embeddings.position_embedding.weight"))?,
    )?;
    g.layer_norm(x, pre_norm, t.eps)
}

/// A pre-norm encoder layer (CLIP's, also SigLIP's): `layer_norm1`,
/// `self_attn`, `layer_norm2`, `mlp.fc1`/`fc2` under `at`.
pub(crate) fn layer(
    g: &Graph,
    t: &Tower,
    x: Node,
    at: &str,
    mask: Option<Node>,
    causal: bool,
) -> Result<Node, Error> {
    let n = g.layer_norm(x, &format!("{at}layer_norm1"), t.eps)?;
    let x = g.add(
        self_attn(g, t, n, &format!("{at}self_attn"), mask, causal)?,
        x,
    )?;
    mlp_block(g, t, x, at)
}

/// Multi-head self-attention of `n` with the `q_proj`, `k_proj`, `v_proj`
/// and `out_proj` layers under `at`.
pub(crate) fn self_attn(
    g: &Graph,
    t: &Tower,
    n: Node,
    at: &str,
    mask: Option<Node>,
    causal: bool,
) -> Result<Node, Error> {
    let d = t.hidden / t.heads;
    let proj = |rel: &str| -> Result<Node, Error> {
        g.split_heads(g.linear(n, &format!("{at}.{rel}"))?, t.heads, d)
    };
    let a = g.attention(
        proj("q_proj")?,
        proj("k_proj")?,
        proj("v_proj")?,
        mask,
        causal,
    )?;
    g.linear(g.merge_heads(a)?, &format!("{at}.out_proj"))
}

/// A layer's second half: `x + mlp(layer_norm2(x))`.
pub(crate) fn mlp_block(g: &Graph, t: &Tower, x: Node, at: &str) -> Result<Node, Error> {
    let n = g.layer_norm(x, &format!("{at}layer_norm2"), t.eps)?;
    let h = act(g, t.act, g.linear(n, &format!("{at}mlp.fc1"))?)?;
    g.add(g.linear(h, &format!("{at}mlp.fc2"))?, x)
}

impl Clip {
    /// Flat indices (into batch x sequence) of each row's end-of-text
    /// token: the first `eos`, or the largest id (transformers' legacy rule).
    pub fn pool_rows(&self, ids: &[i64], seq: usize) -> Vec<i64> {
        ids.chunks(seq.max(1))
            .enumerate()
            .map(|(r, row)| {
                let at = match self.eos {
                    Some(e) => row.iter().position(|&t| t == e).unwrap_or(0),
                    None => {
                        let max = row.iter().copied().max().unwrap_or(0);
                        row.iter().position(|&t| t == max).unwrap_or(0)
                    }
                };
                (r * seq + at) as i64
            })
            .collect()
    }

    /// The text graph's inputs for a tokenized batch.
    pub fn text_inputs(
        &self,
        enc: &crate::tokenizer::EncodedBatch,
    ) -> Result<Vec<crate::NamedTensor>, Error> {
        use crate::tensors::{i64_tensor, i64_values};
        let seq = enc.input_ids.shape.get(1).copied().unwrap_or(0);
        let rows = self.pool_rows(&i64_values(&enc.input_ids)?, seq as usize);
        let positions: Vec<i64> = (0..seq as i64).collect();
        let named = |name: &str, value| crate::NamedTensor {
            name: name.into(),
            value,
        };
        Ok(vec![
            named("input_ids", enc.input_ids.clone()),
            named("attention_mask", enc.attention_mask.clone()),
            named("pool_rows", i64_tensor(vec![rows.len() as u64], &rows)),
            named("position_ids", i64_tensor(vec![1, seq], &positions)),
        ])
    }

    /// The text length limit (`max_position_embeddings` of the text tower).
    pub fn max_text_tokens(config: &Json) -> u64 {
        config
            .value
            .get("text_config")
            .and_then(|t| t.get("max_position_embeddings"))
            .and_then(|m| m.as_u64())
            .unwrap_or(77)
    }
}

/// Everything a CLIP skill loads: the towers' graphs compiled for `output`,
/// the image preprocessing and the tokenizer (truncating at the text
/// tower's positions).
#[cfg(feature = "image")]
pub struct Loaded {
    pub clip: Clip,
    pub pre: crate::image::Preprocess,
    pub tokenizer: crate::tokenizer::Tokenizer,
    pub image: crate::runtime::CompiledGraph,
    pub text: crate::runtime::CompiledGraph,
}

#[cfg(feature = "image")]
impl Loaded {
    /// Reads the model's config and preprocessor, opens its tokenizer and
    /// compiles both towers; their outputs are named `name`.
    pub fn open(output: Output, name: &str) -> Result<Loaded, Error> {
        let config = Json::config()?;
        let clip = Clip::load(&config)?;
        let pre = crate::image::Preprocess::read()?;
        let size = pre.output_size().ok_or_else(|| {
            Error::Unsupported("CLIP needs a fixed image size (a center crop)".into())
        })?;
        let tokenizer = crate::tokenizer::Tokenizer::open(crate::tokenizer::TokenizerOptions {
            max_length: Some(Clip::max_text_tokens(&config) as u32),
            add_special_tokens: true,
            pad_to_multiple_of: None,
            with_offsets: false,
        })?;
        let (g, out) = clip.image_graph(size, output)?;
        let image = g.compile(&[(name, out)])?;
        let (g, out) = clip.text_graph(output)?;
        let text = g.compile(&[(name, out)])?;
        Ok(Loaded {
            clip,
            pre,
            tokenizer,
            image,
            text,
        })
    }
}
