//! XLM-style encoders (FlauBERT): transformers' `FlaubertModel` /
//! `XLMModel` forward pass on the shared builder.
//!
//! What differs from BERT's block:
//! - weights live in per-kind module lists under the base model
//!   (`attentions.{l}.q_lin`/`k_lin`/`v_lin`/`out_lin`, `layer_norm1.{l}`,
//!   `ffns.{l}.lin1`/`lin2`, `layer_norm2.{l}`), so a block is named by its
//!   layer index rather than by a prefix;
//! - `pre_norm` (config) puts each norm before its sub-layer and leaves the
//!   residual stream unnormalised (no final norm), as transformers does;
//!   otherwise the block is post-norm like BERT's;
//! - the hidden states are multiplied by the padding mask after the
//!   embeddings and after every layer;
//! - the feed-forward activation is `gelu_activation` (GELU, else ReLU).
//!
//! Language embeddings (`use_lang_emb`, `n_langs` > 1) are added by
//! transformers only when a caller passes `langs`; pipelines never do, so
//! none are added here either. The sequence-classification head is XLM's
//! `SequenceSummary` (`summary_type` "first", the projection
//! `sequence_summary.summary`, then `summary_activation`); other summary
//! types are refused by name.

use crate::config::Json;
use crate::graph::{Node, UnaryOp};
use crate::graph_ext::activation;
use crate::{Dtype, Error, Graph};

use super::Encoder;

/// The config switches of an XLM-style model.
#[derive(Clone, Debug)]
pub struct Xlm {
    pub pre_norm: bool,
    summary_type: String,
    summary_act: Option<String>,
}

impl Xlm {
    pub fn from_config(config: &Json) -> Result<Xlm, Error> {
        if config.bool_or("causal", false)? {
            return Err(Error::Unsupported(
                "config.json: `causal` is true: a causal XLM language model is not an encoder"
                    .into(),
            ));
        }
        if config.bool_or("asm", false)? {
            return Err(Error::Unsupported(
                "config.json: `asm` is true: the adaptive-softmax output layer is not supported"
                    .into(),
            ));
        }
        Ok(Xlm {
            pre_norm: config.bool_or("pre_norm", false)?,
            summary_type: config.str_or("summary_type", "first")?.to_string(),
            summary_act: match config.str_or("summary_activation", "")? {
                "" | "linear" => None,
                a => Some(a.to_string()),
            },
        })
    }

    /// The activation after the sequence summary's projection (none for
    /// the identity); an error for summaries other than the first token.
    pub fn summary(&self) -> Result<Option<UnaryOp>, Error> {
        if self.summary_type != "first" {
            return Err(Error::Unsupported(format!(
                "config.json: summary_type `{}` is not supported (only `first`)",
                self.summary_type
            )));
        }
        self.summary_act.as_deref().map(activation).transpose()
    }

    /// The feed-forward activation of the config (`gelu_activation`).
    pub fn ffn_act(config: &Json) -> Result<UnaryOp, Error> {
        Ok(match config.bool_or("gelu_activation", true)? {
            true => UnaryOp::Gelu,
            false => UnaryOp::Relu,
        })
    }
}

/// `mask` (i64 [batch, seq]) as a float multiplier [batch, seq, 1].
pub fn padding_multiplier(g: &Graph, mask: Node) -> Result<Node, Error> {
    g.b.unsqueeze(g.b.cast(mask, Dtype::F32)?, -1)
}

impl Encoder {
    /// Layer `l` of an XLM-style encoder whose module lists are under
    /// `root`; `keys` masks the attention, `pad` zeroes padded rows.
    pub(super) fn xlm_block(
        &self,
        g: &Graph,
        h: Node,
        keys: Node,
        pad: Node,
        root: &str,
        l: usize,
    ) -> Result<Node, Error> {
        let x = self
            .xlm
            .as_ref()
            .ok_or_else(|| Error::Internal("an XLM block without XLM settings".into()))?;
        let (heads, d) = (self.heads, self.hidden / self.heads);
        let at = |kind: &str, rel: &str| format!("{root}{kind}.{l}{rel}");
        let attend = |x: Node| -> Result<Node, Error> {
            let proj = |rel: &str| -> Result<Node, Error> {
                g.split_heads(g.linear(x, &at("attentions", rel))?, heads, d)
            };
            let a = g.attention(
                proj(".q_lin")?,
                proj(".k_lin")?,
                proj(".v_lin")?,
                Some(keys),
                false,
            )?;
            g.linear(g.merge_heads(a)?, &at("attentions", ".out_lin"))
        };
        let ffn = |x: Node| -> Result<Node, Error> {
            let i = g.unary(self.act, g.linear(x, &at("ffns", ".lin1"))?)?;
            g.linear(i, &at("ffns", ".lin2"))
        };
        let norm = |x: Node, kind: &str| g.layer_norm(x, &at(kind, ""), self.eps);
        let h = match x.pre_norm {
            false => {
                let h = norm(g.add(h, attend(h)?)?, "layer_norm1")?;
                norm(g.add(h, ffn(h)?)?, "layer_norm2")?
            }
            true => {
                let h = g.add(h, attend(norm(h, "layer_norm1")?)?)?;
                g.add(h, ffn(norm(h, "layer_norm2")?)?)?
            }
        };
        g.mul(h, pad)
    }
}
