//! MobileBERT: trigram word embeddings, bottlenecked blocks (attention in
//! a narrow `true_hidden_size` space, queries and keys from a shared
//! bottleneck of the block input, values from the input itself), a stack
//! of feed-forward networks, and `no_norm` (x * weight + bias) or layer
//! norms, as transformers' `modeling_mobilebert` builds them.

use crate::config::Json;
use crate::graph::Node;
use crate::{Dtype, Error, Graph};

use super::Encoder;

/// The config switches of a MobileBERT model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MobileBert {
    pub trigram: bool,
    pub no_norm: bool,
    pub bottleneck: bool,
    pub bottleneck_attention: bool,
    pub shared_bottleneck: bool,
    pub ffns: u64,
    /// Width of the attention and feed-forward space.
    pub true_hidden: u64,
}

impl MobileBert {
    pub fn from_config(c: &Json) -> Result<MobileBert, Error> {
        let bottleneck = c.bool_or("use_bottleneck", true)?;
        let no_norm = match c.str_or("normalization_type", "no_norm")? {
            "no_norm" => true,
            "layer_norm" => false,
            other => {
                return Err(Error::Unsupported(format!(
                    "MobileBERT normalization_type `{other}` is not supported"
                )))
            }
        };
        Ok(MobileBert {
            trigram: c.bool_or("trigram_input", true)?,
            no_norm,
            bottleneck,
            bottleneck_attention: c.bool_or("use_bottleneck_attention", false)?,
            shared_bottleneck: c.bool_or("key_query_shared_bottleneck", true)?,
            ffns: c.u64_or("num_feedforward_networks", 4)?,
            true_hidden: match bottleneck {
                true => c.u64_or("intra_bottleneck_size", 128)?,
                false => c.u64("hidden_size")?,
            },
        })
    }
}

/// transformers' default layer-norm epsilon, for the norms MobileBERT
/// builds without the config's.
const TORCH_EPS: f32 = 1e-5;

impl Encoder {
    fn mb(&self) -> Result<MobileBert, Error> {
        self.mobilebert
            .ok_or_else(|| Error::Internal("not a MobileBERT encoder".into()))
    }

    /// `no_norm` or a layer norm at `prefix`.
    fn mb_norm(&self, g: &Graph, x: Node, prefix: &str, eps: f32) -> Result<Node, Error> {
        match self.mb()?.no_norm {
            true => {
                let w = g.weight(&format!("{prefix}.weight"))?;
                let b = g.weight(&format!("{prefix}.bias"))?;
                g.add(g.mul(x, w)?, b)
            }
            false => g.layer_norm(x, prefix, eps),
        }
    }

    /// Word embeddings with their neighbours (trigram), transformed to the
    /// hidden width, plus positions and segments, normalised.
    pub(super) fn mb_embed(
        &self,
        g: &Graph,
        ids: Node,
        pos: Node,
        types: Option<Node>,
        trigram: Option<(Node, Node)>,
    ) -> Result<Node, Error> {
        let m = self.mb()?;
        let table = |rel: &str| g.weight(&format!("{}.weight", self.name(rel)));
        let mut x = g.b.embedding(table("embeddings.word_embeddings")?, ids)?;
        if let Some((next, prev)) = trigram {
            // Zero rows around the sequence, then each token's neighbours.
            let zero = g.mul(g.b.slice(x, 1, 0, 1)?, g.scalar(0.0, Dtype::F32)?)?;
            let padded = g.b.concat(&[zero, x, zero], 1)?;
            let after = g.b.gather(padded, next, 1)?;
            let before = g.b.gather(padded, prev, 1)?;
            x = g.b.concat(&[after, x, before], 2)?;
        }
        let transform = self.name("embeddings.embedding_transformation");
        if m.trigram || g.has(&format!("{transform}.weight")) {
            x = g.linear(x, &transform)?;
        }
        x = g.add(
            x,
            g.b.embedding(table("embeddings.position_embeddings")?, pos)?,
        )?;
        let t = table("embeddings.token_type_embeddings")?;
        x = match types {
            Some(types) => g.add(x, g.b.embedding(t, types)?)?,
            None => g.add(x, g.b.slice(t, 0, 0, 1)?)?,
        };
        self.mb_norm(g, x, &self.name("embeddings.LayerNorm"), TORCH_EPS)
    }

    /// One MobileBERT block.
    pub(super) fn mb_block(
        &self,
        g: &Graph,
        h: Node,
        mask: Node,
        prefix: &str,
    ) -> Result<Node, Error> {
        let m = self.mb()?;
        let eps = self.eps;
        let at = |rel: &str| format!("{prefix}{rel}");
        let dense_norm = |x: Node, rel: &str, e: f32| -> Result<Node, Error> {
            self.mb_norm(
                g,
                g.linear(x, &at(&format!("{rel}.dense")))?,
                &at(&format!("{rel}.LayerNorm")),
                e,
            )
        };
        let (qk, v, layer_input) = match m.bottleneck {
            false => (h, h, h),
            true => {
                let input = dense_norm(h, "bottleneck.input", eps)?;
                match (m.bottleneck_attention, m.shared_bottleneck) {
                    (true, _) => (input, input, input),
                    (false, true) => (dense_norm(h, "bottleneck.attention", eps)?, h, input),
                    (false, false) => (h, h, input),
                }
            }
        };
        let head_dim = m.true_hidden / self.heads;
        let proj = |x: Node, rel: &str| -> Result<Node, Error> {
            g.split_heads(g.linear(x, &at(rel))?, self.heads, head_dim)
        };
        let (q, k) = (
            proj(qk, "attention.self.query")?,
            proj(qk, "attention.self.key")?,
        );
        let vv = proj(v, "attention.self.value")?;
        let a = g.merge_heads(g.attention(q, k, vv, Some(mask), false)?)?;
        let a = g.linear(a, &at("attention.output.dense"))?;
        let mut x = self.mb_norm(
            g,
            g.add(a, layer_input)?,
            &at("attention.output.LayerNorm"),
            eps,
        )?;
        for i in 0..m.ffns.saturating_sub(1) {
            let f = format!("ffn.{i}");
            let inner = g.unary(
                self.act,
                g.linear(x, &at(&format!("{f}.intermediate.dense")))?,
            )?;
            let o = g.linear(inner, &at(&format!("{f}.output.dense")))?;
            x = self.mb_norm(g, g.add(o, x)?, &at(&format!("{f}.output.LayerNorm")), eps)?;
        }
        let inner = g.unary(self.act, g.linear(x, &at("intermediate.dense"))?)?;
        let o = g.linear(inner, &at("output.dense"))?;
        let out = self.mb_norm(g, g.add(o, x)?, &at("output.LayerNorm"), TORCH_EPS)?;
        match m.bottleneck {
            false => Ok(out),
            true => {
                let o = g.linear(out, &at("output.bottleneck.dense"))?;
                self.mb_norm(g, g.add(o, h)?, &at("output.bottleneck.LayerNorm"), eps)
            }
        }
    }
}

/// Gather indices of each token's next and previous neighbour in the
/// zero-padded sequence (index 0 and `seq + 1` are the zero rows).
pub fn trigram_indices(seq: usize) -> (Vec<i64>, Vec<i64>) {
    let next = (0..seq as i64).map(|i| i + 2).collect();
    let prev = (0..seq as i64).collect();
    (next, prev)
}
