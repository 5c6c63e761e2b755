//! Task heads on an encoder's last hidden state, as each family's spec
//! names them: the pooler, the masked-LM head, the sequence and token
//! classifiers, and pooling of token vectors into one.

use crate::graph::{BinaryOp, Node, ReduceOp, UnaryOp};
use crate::graph_ext::activation;
use crate::{Dim, Dtype, Error, Graph};

use super::spec::{ClassifierInput, HeadAct, PoolerSpec};
use super::Encoder;

/// How token vectors become one vector per text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pooling {
    Mean,
    /// The first token's vector.
    Cls,
    Max,
    MeanSqrtLen,
    /// The family's pooler output (BERT's tanh pooler, DPR's projection).
    Pooler,
}

impl Encoder {
    fn act(&self, a: HeadAct) -> Result<UnaryOp, Error> {
        match a {
            HeadAct::Config => Ok(self.act),
            HeadAct::Pooler => Ok(self.pooler_act),
            HeadAct::Named(n) => activation(n),
        }
    }

    fn has_weight(&self, g: &Graph, prefix: &str) -> bool {
        g.has(&format!("{prefix}.weight"))
    }

    /// The family's pooled output of `h` [batch, seq, hidden]: [batch, width].
    pub fn pooler(&self, g: &Graph, h: Node) -> Result<Node, Error> {
        let first = first_token(g, h)?;
        match self.spec.pooler {
            PoolerSpec::DenseTanh(_) if !self.classifier_activation => Ok(first),
            PoolerSpec::DenseTanh(rel) => {
                let name = format!("{}{rel}", self.base);
                if !self.has_weight(g, &name) {
                    return Err(Error::Model(format!(
                        "the checkpoint has no pooler (`{name}.weight`)"
                    )));
                }
                g.unary(UnaryOp::Tanh, g.linear(first, &name)?)
            }
            PoolerSpec::ClsProjection(rel) => {
                let name = format!("{}{rel}", self.base);
                match self.has_weight(g, &name) {
                    true => g.linear(first, &name),
                    false => Ok(first),
                }
            }
            PoolerSpec::None => Err(Error::Unsupported(format!(
                "{} models have no pooler output",
                self.model_type
            ))),
        }
    }

    /// Pools `h` [batch, seq, hidden] over the real tokens (`mask` i64,
    /// `keep` boolean [batch, seq]).
    pub fn pool(
        &self,
        g: &Graph,
        h: Node,
        mask: Node,
        keep: Node,
        pooling: Pooling,
    ) -> Result<Node, Error> {
        match pooling {
            Pooling::Pooler => self.pooler(g, h),
            Pooling::Cls => first_token(g, h),
            Pooling::Max => {
                let keep3 = g.b.unsqueeze(keep, -1)?;
                let floor = g.scalar(-1e9, Dtype::F32)?;
                let masked = g.b.select(keep3, h, floor)?;
                g.reduce(ReduceOp::Max, masked, &[1], false)
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let m = g.b.unsqueeze(g.b.cast(mask, Dtype::F32)?, -1)?;
                let sum = g.reduce(ReduceOp::Sum, g.mul(h, m)?, &[1], false)?;
                let count = g.reduce(ReduceOp::Sum, m, &[1], false)?;
                let floor = g.scalar(1e-9, Dtype::F32)?;
                let count = g.b.binary(BinaryOp::Maximum, count, floor)?;
                let den = match pooling {
                    Pooling::MeanSqrtLen => g.unary(UnaryOp::Sqrt, count)?,
                    _ => count,
                };
                g.div(sum, den)
            }
        }
    }

    /// Whether the checkpoint has a masked-LM head.
    pub fn has_mlm(&self, g: &Graph) -> bool {
        self.spec.mlm.as_ref().is_some_and(|m| match m.dense {
            Some(dense) => self.has_weight(g, dense),
            // A bare projection: its bias, or its own (untied) weight.
            None => self.has_weight(g, m.decoder) || m.bias.iter().any(|b| g.has(b)),
        })
    }

    /// Vocabulary logits [n, vocab] of token vectors `x` [n, hidden].
    pub fn mlm_logits(&self, g: &Graph, x: Node) -> Result<Node, Error> {
        let m = self
            .spec
            .mlm
            .as_ref()
            .filter(|_| self.has_mlm(g))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "the checkpoint has no masked-LM head (a {} *ForMaskedLM model is needed)",
                    self.model_type
                ))
            })?;
        let mut x = x;
        if let Some(dense) = m.dense {
            x = g.unary(self.act(m.act)?, g.linear(x, dense)?)?;
        }
        if let Some(norm) = m.norm {
            let eps = m.norm_eps.map(|e| e as f32).unwrap_or(self.eps);
            x = g.layer_norm(x, norm, eps)?;
        }
        // Tied decoders are not stored: the word embeddings are the weight.
        let weight = match self.has_weight(g, m.decoder) {
            true => format!("{}.weight", m.decoder),
            false => format!("{}.weight", self.name(self.spec.embeddings.word)),
        };
        let mut w = g.weight(&weight)?;
        if let Some(extra) = m.extra {
            // [vocab, embedding] ++ [hidden - embedding, vocab]^T
            let e =
                g.b.permute(g.weight(&format!("{extra}.weight"))?, &[1, 0])?;
            w = g.b.concat(&[w, e], 1)?;
        }
        let bias = match m.bias.iter().find(|b| g.has(b)) {
            Some(b) => Some(g.weight(b)?),
            None => None,
        };
        g.b.linear(x, w, bias)
    }

    /// Whether the checkpoint has a sequence-classification head.
    pub fn has_classifier(&self, g: &Graph) -> bool {
        self.spec
            .classifier
            .as_ref()
            .is_some_and(|c| self.has_weight(g, c.out))
    }

    /// Class logits [batch, labels] of `h` [batch, seq, hidden].
    pub fn class_logits(&self, g: &Graph, h: Node) -> Result<Node, Error> {
        let c = self
            .spec
            .classifier
            .as_ref()
            .filter(|_| self.has_classifier(g))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "the checkpoint has no sequence-classification head (a {} *ForSequenceClassification model is needed)",
                    self.model_type
                ))
            })?;
        let mut x = match c.input {
            ClassifierInput::Pooler => self.pooler(g, h)?,
            ClassifierInput::FirstToken => first_token(g, h)?,
        };
        if let Some((dense, act)) = c.dense {
            x = g.unary(self.act(act)?, g.linear(x, dense)?)?;
        }
        let logits = g.linear(x, c.out)?;
        // XLM's sequence summary: its activation follows the projection.
        match self
            .xlm
            .as_ref()
            .map(|x| x.summary())
            .transpose()?
            .flatten()
        {
            Some(act) => g.unary(act, logits),
            None => Ok(logits),
        }
    }

    /// Whether the checkpoint has a token-classification head.
    pub fn has_token_classifier(&self, g: &Graph) -> bool {
        self.spec
            .token_classifier
            .is_some_and(|c| self.has_weight(g, c))
    }

    /// Per-token label logits [batch, seq, labels].
    pub fn token_logits(&self, g: &Graph, h: Node) -> Result<Node, Error> {
        match self.spec.token_classifier {
            Some(c) if self.has_weight(g, c) => g.linear(h, c),
            _ => Err(Error::Unsupported(format!(
                "the checkpoint has no token-classification head (a {} *ForTokenClassification model is needed)",
                self.model_type
            ))),
        }
    }

    /// Width of a head's output layer (number of labels), from its weight.
    pub fn out_width(&self, g: &Graph, layer: &str) -> Result<u64, Error> {
        let w = g.weight(&format!("{layer}.weight"))?;
        match g.b.info(w)?.shape.first() {
            Some(Dim::Fixed(n)) => Ok(*n),
            _ => Err(Error::Model(format!("`{layer}.weight` has no fixed shape"))),
        }
    }
}

/// `h[:, 0]`: [batch, seq, width] -> [batch, width].
pub fn first_token(g: &Graph, h: Node) -> Result<Node, Error> {
    g.b.squeeze(g.b.slice(h, 1, 0, 1)?, 1)
}
