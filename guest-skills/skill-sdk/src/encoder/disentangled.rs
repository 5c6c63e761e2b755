//! DeBERTa-v2/v3 disentangled attention: scores are content-to-content plus
//! content-to-position (`c2p`) plus position-to-content (`p2c`) terms, the
//! positions being log-bucketed relative distances looked up in a shared
//! relative embedding table, all divided by sqrt(head_dim * (1 + terms)).
//!
//! The position terms are a matrix product against the (projected)
//! relative embeddings, [batch, heads, seq, 2 * span], from which each
//! (query, key) pair takes one column. Which column depends only on the
//! sequence length, so the skill computes flat gather indices (in f32 where
//! transformers does) and the graph gathers with the generic `gather` op:
//! no dense one-hot and no custom kernel.

use crate::config::Json;
use crate::graph::{AttentionOptions, Node};
use crate::{Dtype, Error, Graph};

/// Which position terms a model adds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms {
    pub c2p: bool,
    pub p2c: bool,
}

/// The relative-position settings of a DeBERTa-v2 config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Disentangled {
    pub terms: Terms,
    /// Half the rows of the relative embedding table used.
    pub span: i64,
    /// Log buckets (`position_buckets`) and the largest position they map.
    pub buckets: Option<(i64, i64)>,
    /// Position projections are the content ones (`share_att_key`).
    pub share_key: bool,
    /// The table is layer-normalised (`norm_rel_ebd`).
    pub norm_table: bool,
}

impl Disentangled {
    /// Reads the config; `Unsupported` for variants not built here.
    pub fn from_config(c: &Json) -> Result<Disentangled, Error> {
        if !c.bool_or("relative_attention", false)? {
            return Err(Error::Unsupported(
                "DeBERTa-v2 without relative_attention is not supported".into(),
            ));
        }
        if c.u64_or("conv_kernel_size", 0)? > 0 {
            return Err(Error::Unsupported(
                "DeBERTa-v2 with a convolution layer (conv_kernel_size) is not supported".into(),
            ));
        }
        let types: Vec<String> = match c.value.get("pos_att_type") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str())
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            Some(serde_json::Value::String(s)) => s
                .split('|')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
            _ => Vec::new(),
        };
        if let Some(t) = types.iter().find(|t| *t != "c2p" && *t != "p2c") {
            return Err(Error::Unsupported(format!(
                "pos_att_type `{t}` is not supported"
            )));
        }
        let max_rel = match c
            .value
            .get("max_relative_positions")
            .and_then(|v| v.as_i64())
        {
            Some(m) if m >= 1 => m,
            _ => c.u64("max_position_embeddings")? as i64,
        };
        let buckets = match c.value.get("position_buckets").and_then(|v| v.as_i64()) {
            Some(b) if b > 0 => Some((b, max_rel)),
            _ => None,
        };
        let norm = c.str_or("norm_rel_ebd", "none")?;
        Ok(Disentangled {
            terms: Terms {
                c2p: types.iter().any(|t| t == "c2p"),
                p2c: types.iter().any(|t| t == "p2c"),
            },
            span: buckets.map_or(max_rel, |(b, _)| b),
            buckets,
            share_key: c.bool_or("share_att_key", false)?,
            norm_table: norm.split('|').any(|n| n.trim() == "layer_norm"),
        })
    }

    /// 1 + the number of position terms (the score divisor's factor).
    pub fn scale_factor(&self) -> u64 {
        1 + self.terms.c2p as u64 + self.terms.p2c as u64
    }

    /// The relative position of query `q` to key `k`, bucketed.
    pub fn relative(&self, q: i64, k: i64) -> i64 {
        let rel = q - k;
        let Some((size, max)) = self.buckets else {
            return rel;
        };
        let mid = size / 2;
        let abs = if rel < mid && rel > -mid {
            mid - 1
        } else {
            rel.abs()
        };
        if abs <= mid {
            return rel;
        }
        // f32 as in the reference: ceil(log(abs/mid) / log((max-1)/mid) * (mid-1)) + mid.
        let den = (((max - 1) as f64 / mid as f64) as f32).ln();
        let log = ((abs as f32 / mid as f32).ln() / den * (mid - 1) as f32).ceil() + mid as f32;
        log as i64 * rel.signum()
    }

    fn clamp(&self, v: i64) -> i64 {
        v.clamp(0, 2 * self.span - 1)
    }

    /// Flat gather indices [seq, seq] into [seq * 2 span] rows: for c2p,
    /// query i's row at its distance to key j; for p2c, key j's row at the
    /// distance of query i to it (the transpose).
    pub fn indices(&self, seq: usize) -> (Vec<i64>, Vec<i64>) {
        let s = seq as i64;
        let width = 2 * self.span;
        let mut c2p = Vec::with_capacity(seq * seq);
        let mut p2c = Vec::with_capacity(seq * seq);
        for i in 0..s {
            for j in 0..s {
                c2p.push(i * width + self.clamp(self.relative(i, j) + self.span));
                p2c.push(j * width + self.clamp(-self.relative(j, i) + self.span));
            }
        }
        (c2p, p2c)
    }

    /// The index inputs of a batch of `seq` tokens.
    pub fn inputs(&self, seq: usize) -> Vec<crate::NamedTensor> {
        let (c2p, p2c) = self.indices(seq);
        let shape = vec![seq as u64, seq as u64];
        let mut out = Vec::new();
        if self.terms.c2p {
            out.push(crate::NamedTensor {
                name: "c2p_index".into(),
                value: crate::tensors::i64_tensor(shape.clone(), &c2p),
            });
        }
        if self.terms.p2c {
            out.push(crate::NamedTensor {
                name: "p2c_index".into(),
                value: crate::tensors::i64_tensor(shape, &p2c),
            });
        }
        out
    }
}

/// The block's projections of the relative table, relative to its prefix.
#[derive(Clone, Copy, Debug)]
pub struct Projections {
    /// Projects the table for the content-to-position term (keys).
    pub c2p: &'static str,
    /// Projects the table for the position-to-content term (queries).
    pub p2c: &'static str,
}

/// What every layer shares: the relative table and the index inputs.
pub struct Context {
    pub d: Disentangled,
    proj: Projections,
    /// Relative embeddings [2 span, hidden], normalised when the model says.
    table: Node,
    c2p: Option<Node>,
    p2c: Option<Node>,
}

impl Context {
    /// Declares the index inputs and prepares the table.
    pub fn new(
        g: &Graph,
        d: Disentangled,
        proj: Projections,
        (table, norm): (&str, &str),
        eps: f32,
    ) -> Result<Context, Error> {
        let seq = || crate::Dim::Symbolic("sequence".into());
        let mut t =
            g.b.slice(g.weight(&format!("{table}.weight"))?, 0, 0, 2 * d.span)?;
        if d.norm_table {
            t = g.layer_norm(t, norm, eps)?;
        }
        let input = |name: &str, on: bool| -> Result<Option<Node>, Error> {
            match on {
                true => Ok(Some(g.input(name, Dtype::I64, &[seq(), seq()])?)),
                false => Ok(None),
            }
        };
        Ok(Context {
            d,
            proj,
            table: t,
            c2p: input("c2p_index", d.terms.c2p)?,
            p2c: input("p2c_index", d.terms.p2c)?,
        })
    }

    /// Attention of one layer: `q`, `k`, `v` [batch, heads, seq, dim], the
    /// block's weights at `prefix`, `keys` [batch, 1, 1, seq] boolean.
    pub fn attention(
        &self,
        g: &Graph,
        prefix: &str,
        (q, k, v): (Node, Node, Node),
        keys: Node,
        heads: u64,
        head_dim: u64,
    ) -> Result<Node, Error> {
        let scale = ((head_dim * self.d.scale_factor()) as f32).sqrt();
        // Projected table [1, heads, 2 span, dim].
        let project = |name: &str| -> Result<Node, Error> {
            let p = g.linear(self.table, &format!("{prefix}{name}"))?;
            let p = g.b.reshape(p, &[1, -1, heads as i64, head_dim as i64])?;
            g.b.permute(p, &[0, 2, 1, 3])
        };
        let mut bias: Option<Node> = None;
        let mut add = |term: Node| -> Result<(), Error> {
            bias = Some(match bias {
                Some(b) => g.add(b, term)?,
                None => term,
            });
            Ok(())
        };
        let pick = |x: Node, table: Node, index: Node| -> Result<Node, Error> {
            // [b, h, seq, 2 span] -> [b, h, seq * 2 span] -> [b, h, seq, seq]
            let scores = g.b.matmul(x, g.b.permute(table, &[0, 1, 3, 2])?)?;
            let flat = g.b.reshape(scores, &[0, 0, -1])?;
            g.b.gather(flat, index, 2)
        };
        if let Some(index) = self.c2p {
            add(pick(q, project(self.proj.c2p)?, index)?)?;
        }
        if let Some(index) = self.p2c {
            add(pick(k, project(self.proj.p2c)?, index)?)?;
        }
        let mask = match bias {
            Some(b) => {
                let b = g.div(b, g.scalar(scale as f64, Dtype::F32)?)?;
                g.b.select(keys, b, g.scalar(super::MASKED, Dtype::F32)?)?
            }
            None => keys,
        };
        g.b.attention(
            q,
            k,
            v,
            Some(mask),
            AttentionOptions {
                causal: false,
                scale: Some(1.0 / scale),
            },
        )
    }
}
