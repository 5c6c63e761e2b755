//! Longformer's sliding-window attention in blocks, with time and memory
//! linear in the sequence: no [seq, seq] score tensor is ever built.
//!
//! With a one-sided window w, the sequence (padded to a multiple of the
//! full window 2w, as transformers pads it) is cut into blocks of w tokens;
//! the queries of block i see the keys of blocks i-1, i and i+1 (3w keys),
//! and a band mask keeps exactly |query - key| <= w. The previous and next
//! blocks are gathered along the block axis, so every op is a generic one.
//! The graph's inputs are shaped [batch, blocks, w] for this (the sequence
//! is blocks x w); `Encoder::inputs` reshapes the tokenizer's tensors.
//!
//! Global attention on the first token (what transformers'
//! `LongformerForSequenceClassification` sets by default): every token also
//! attends to it (and not again inside its window), and its own output is
//! full attention over the sequence through the `*_global` projections.

use crate::graph::{AttentionOptions, Node};
use crate::{Dim, Dtype, Error, Graph};

/// A model's window and global attention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sliding {
    /// One-sided window: the block length.
    pub w: u64,
    /// The first token attends globally.
    pub global_first: bool,
}

impl Sliding {
    /// Reads `attention_window` (one value, or one per layer, all equal).
    pub fn from_config(c: &crate::config::Json, layers: u64) -> Result<Sliding, Error> {
        let windows: Vec<u64> = match c.value.get("attention_window") {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).collect(),
            Some(v) => v.as_u64().into_iter().collect(),
            None => Vec::new(),
        };
        let Some(&first) = windows.first() else {
            return Err(Error::Model(
                "config.json: `attention_window` is missing".into(),
            ));
        };
        if windows.iter().any(|&w| w != first)
            || (windows.len() > 1 && windows.len() as u64 != layers)
        {
            return Err(Error::Unsupported(format!(
                "attention windows that differ per layer ({windows:?}) are not supported"
            )));
        }
        if first == 0 || first % 2 != 0 {
            return Err(Error::Model(format!(
                "config.json: attention_window {first} must be even and positive"
            )));
        }
        Ok(Sliding {
            w: first / 2,
            global_first: false,
        })
    }

    /// The band mask [blocks, w, 3w] (1 where query t of block i may see
    /// key u of blocks i-1..=i+1) of a sequence of `blocks` blocks.
    pub fn band(&self, blocks: usize) -> Vec<i64> {
        let (w, len) = (self.w as i64, blocks as i64 * self.w as i64);
        let mut v = Vec::with_capacity(blocks * (self.w * self.w * 3) as usize);
        for i in 0..blocks as i64 {
            for t in 0..w {
                let q = i * w + t;
                for u in 0..3 * w {
                    let k = (i - 1) * w + u;
                    let inside = (0..len).contains(&k) && (q - k).abs() <= w;
                    v.push((inside && !(self.global_first && k == 0)) as i64);
                }
            }
        }
        v
    }

    /// Gather indices of each block's previous and next block (clamped; the
    /// band mask hides what lies outside the sequence).
    pub fn neighbours(&self, blocks: usize) -> (Vec<i64>, Vec<i64>) {
        let n = blocks as i64;
        let prev = (0..n).map(|i| (i - 1).max(0)).collect();
        let next = (0..n).map(|i| (i + 1).min(n - 1)).collect();
        (prev, next)
    }
}

/// The per-graph inputs of the sliding window.
pub struct Window {
    pub s: Sliding,
    /// [blocks, w, 3w] i64, see [`Sliding::band`].
    band: Node,
    prev: Node,
    next: Node,
    /// Key padding mask by block with its neighbours: [batch, 1, blocks, 1, 3w].
    keys: Node,
    /// [1, 1, seq, 1] boolean: the first position (global attention).
    first: Option<Node>,
}

fn blocks() -> Dim {
    Dim::Symbolic("blocks".into())
}

impl Window {
    /// Declares the window's inputs; `keep` [batch, seq] says which tokens
    /// are real, `positions` [1, seq] their position ids (`first_position`
    /// is the first token's).
    pub fn new(
        g: &Graph,
        s: Sliding,
        keep: Node,
        positions: Node,
        first_position: i64,
    ) -> Result<Window, Error> {
        let w = s.w as i64;
        let band = g.input(
            "window_band",
            Dtype::I64,
            &[blocks(), Dim::Fixed(s.w), Dim::Fixed(3 * s.w)],
        )?;
        let prev = g.input("window_prev", Dtype::I64, &[blocks()])?;
        let next = g.input("window_next", Dtype::I64, &[blocks()])?;
        let keep_blocks = g.b.reshape(g.b.cast(keep, Dtype::I64)?, &[0, -1, w])?;
        let keys = Self::with_neighbours(g, keep_blocks, prev, next, 1, 2)?;
        let zero = g.scalar(0.0, Dtype::I64)?;
        let keys = g.b.compare(crate::graph::CompareOp::Greater, keys, zero)?;
        // [batch, blocks, 3w] -> [batch, 1, blocks, 1, 3w]
        let keys = g.b.unsqueeze(g.b.unsqueeze(keys, 1)?, 3)?;
        let first = match s.global_first {
            true => {
                let at = g.scalar(first_position as f64, Dtype::I64)?;
                let is = g.b.compare(crate::graph::CompareOp::Equal, positions, at)?;
                Some(g.b.unsqueeze(g.b.unsqueeze(is, 0)?, -1)?)
            }
            false => None,
        };
        Ok(Window {
            s,
            band,
            prev,
            next,
            keys,
            first,
        })
    }

    /// `x` with its previous and next blocks along `axis` (block axis),
    /// joined along `join`: [.., blocks, w, ..] -> [.., blocks, 3w, ..].
    fn with_neighbours(
        g: &Graph,
        x: Node,
        prev: Node,
        next: Node,
        axis: i32,
        join: i32,
    ) -> Result<Node, Error> {
        let p = g.b.gather(x, prev, axis)?;
        let n = g.b.gather(x, next, axis)?;
        g.b.concat(&[p, x, n], join)
    }

    /// Windowed attention of `q`, `k`, `v` [batch, heads, seq, d]; with
    /// global attention the first token's row comes from `global` (its
    /// query and all keys and values through the `*_global` projections),
    /// and `keep` [batch, 1, 1, seq] masks padding there.
    pub fn attention(
        &self,
        g: &Graph,
        (q, k, v): (Node, Node, Node),
        global: Option<(Node, Node, Node, Node)>,
        head_dim: u64,
    ) -> Result<Node, Error> {
        let (w, d) = (self.s.w as i64, head_dim as i64);
        let scale = g.scalar(1.0 / (head_dim as f64).sqrt(), Dtype::F32)?;
        let q = g.mul(q, scale)?;
        let split = |x: Node| g.b.reshape(x, &[0, 0, -1, w, d]);
        let (qb, kb, vb) = (split(q)?, split(k)?, split(v)?);
        let kw = Self::with_neighbours(g, kb, self.prev, self.next, 2, 3)?;
        let vw = Self::with_neighbours(g, vb, self.prev, self.next, 2, 3)?;
        // [b, h, blocks, w, 3w]
        let scores = g.b.matmul(qb, g.b.permute(kw, &[0, 1, 2, 4, 3])?)?;
        let zero = g.scalar(0.0, Dtype::I64)?;
        let band =
            g.b.compare(crate::graph::CompareOp::Greater, self.band, zero)?;
        let allowed = g.b.logical_and(band, self.keys)?;
        let low = g.scalar(super::MASKED, Dtype::F32)?;
        let scores = g.b.select(allowed, scores, low)?;
        let out = match (global, self.first) {
            (Some((gq, gk, gv, keep)), Some(first)) => {
                // Every token also sees the first token's key.
                let k0 = g.b.slice(k, 2, 0, 1)?;
                let v0 = g.b.slice(v, 2, 0, 1)?;
                let s0 = g.b.matmul(q, g.b.permute(k0, &[0, 1, 3, 2])?)?;
                let s0 = g.b.reshape(s0, &[0, 0, -1, w, 1])?;
                let all = g.b.softmax(g.b.concat(&[s0, scores], -1)?, -1)?;
                let p0 = g.b.slice(all, -1, 0, 1)?;
                let pw = g.b.slice(all, -1, 1, 1 + 3 * w)?;
                let local = g.add(g.b.matmul(pw, vw)?, g.mul(p0, g.b.unsqueeze(v0, 2)?)?)?;
                let local = g.b.reshape(local, &[0, 0, -1, d])?;
                // The first token: full attention through the global projections.
                let q0 = g.b.slice(gq, 2, 0, 1)?;
                let row = g.b.attention(
                    q0,
                    gk,
                    gv,
                    Some(keep),
                    AttentionOptions {
                        causal: false,
                        scale: None,
                    },
                )?;
                g.b.select(first, row, local)?
            }
            _ => {
                let probs = g.b.softmax(scores, -1)?;
                g.b.reshape(g.b.matmul(probs, vw)?, &[0, 0, -1, d])?
            }
        };
        Ok(out)
    }
}
