//! The forced-alignment pass of a log-mel encoder-decoder (Whisper's word
//! timestamps): the decoder run once over whole token sequences
//! (teacher-forced, causal self-attention, no cache), giving the
//! cross-attention probabilities of chosen (layer, head) pairs.
//!
//! Because the decoder is causal, the attention of the token at position
//! `t` depends only on the tokens up to `t`: one pass over the final
//! sequence gives what transformers gathers step by step during generation
//! (`output_attentions` along the chosen beam), so the generation loop and
//! its graphs stay as they are.
//!
//! The graph reads the session state the encode graph writes (`ck<i>`,
//! `cv<i>` [rows, heads, source, head_dim]): run [`Seq2Seq::encode_graph`]
//! first in the same session, one decoder row per sequence. Inputs:
//! `input_ids` [rows, seq] (i64; rows may be right-padded: a position's
//! attention ignores later ones) and `positions` [seq] (table positions,
//! offset included). Output: `alignment` [rows, pairs, seq, source] (f32),
//! the pairs in the order given. Only the layers up to the last one named
//! are built. Cross-attention is unmasked: every source position counts,
//! as Whisper's encoder output (the only family this pass is made for).

use super::{sym, Seq2Seq};
use crate::graph::{AttentionOptions, Node};
use crate::runtime::CompiledGraph;
use crate::{Dim, Dtype, Error, Graph};

impl Seq2Seq {
    /// Builds and compiles the alignment graph of cross-attention `pairs`
    /// (decoder layer, head), each within the model's layers and heads.
    pub fn align_graph(&self, pairs: &[(u64, u64)]) -> Result<CompiledGraph, Error> {
        if self.dims.mel.is_none() || self.buckets.is_some() {
            return Err(Error::Unsupported(format!(
                "the alignment pass is built for log-mel encoder-decoders (Whisper), not `{}`",
                self.spec.model_types[0]
            )));
        }
        let (h, hd) = (self.dims.heads, self.dims.head_dim);
        if let Some(&(l, head)) = pairs
            .iter()
            .find(|(l, head)| *l >= self.dims.dec_layers || *head >= h)
        {
            return Err(Error::Model(format!(
                "alignment head ({l}, {head}) is outside the decoder's {} layers x {h} heads",
                self.dims.dec_layers
            )));
        }
        let last = pairs
            .iter()
            .map(|p| p.0)
            .max()
            .ok_or_else(|| Error::Model("no alignment heads".into()))?;
        let g = Graph::new(&format!(
            "{}-align-{}{}",
            self.spec.model_types[0],
            pairs.len(),
            if self.fuse { "-fused" } else { "" }
        ));
        let ids = g.input("input_ids", Dtype::I64, &[sym("rows"), sym("seq")])?;
        let positions = g.input("positions", Dtype::I64, &[sym("seq")])?;
        let mut x = self.embed(&g, ids, Some(positions), true)?;
        let names = self.spec.dec_block;
        let cross_shape = [sym("rows"), Dim::Fixed(h), sym("cross"), Dim::Fixed(hd)];
        let scale = match self.spec.unscaled_attention {
            true => 1.0,
            false => 1.0 / (hd as f64).sqrt(),
        };
        // Each named layer's probabilities [rows, heads, seq, source].
        let mut probs: Vec<Option<Node>> = vec![None; last as usize + 1];
        for i in 0..=last {
            let p = self.block(true, i);
            let attn = format!("{p}.{}", names.attn);
            x = self.sublayer(&g, x, &format!("{p}.{}", names.attn_norm), |hs| {
                let qkv = self.projs(&g, hs, &attn, &[0, 1, 2])?;
                let q = self.heads(&g, qkv[0])?;
                let k = self.heads(&g, qkv[1])?;
                let v = self.heads(&g, qkv[2])?;
                let opts = AttentionOptions {
                    causal: true,
                    ..self.options()
                };
                let o = g.b.attention(q, k, v, None, opts)?;
                self.proj(&g, g.merge_heads(o)?, &attn, 3)
            })?;
            let cross = format!("{p}.{}", names.cross);
            let named = pairs.iter().any(|pair| pair.0 == i);
            x = self.sublayer(&g, x, &format!("{p}.{}", names.cross_norm), |hs| {
                let q = self.heads(&g, self.proj(&g, hs, &cross, 0)?)?;
                let k = g.b.state(&format!("ck{i}"), Dtype::F32, &cross_shape)?;
                let v = g.b.state(&format!("cv{i}"), Dtype::F32, &cross_shape)?;
                let o = match named {
                    false => g.b.attention(q, k, v, None, self.options())?,
                    true => {
                        let kt = g.b.permute(k, &[0, 1, 3, 2])?;
                        let s = g.mul(g.b.matmul(q, kt)?, g.scalar(scale, Dtype::F32)?)?;
                        let pr = g.b.softmax(s, -1)?;
                        probs[i as usize] = Some(pr);
                        g.b.matmul(pr, v)?
                    }
                };
                self.proj(&g, g.merge_heads(o)?, &cross, 3)
            })?;
            if i < last {
                x = self.sublayer(&g, x, &format!("{p}.{}", names.ffn_norm), |hs| {
                    self.ffn(&g, hs, &p, &names)
                })?;
            }
        }
        let picked = pairs
            .iter()
            .map(|&(l, head)| {
                let pr = probs[l as usize]
                    .ok_or_else(|| crate::internal("alignment layer without probabilities"))?;
                g.b.slice(pr, 1, head as i64, head as i64 + 1)
            })
            .collect::<Result<Vec<Node>, Error>>()?;
        let out = match picked.as_slice() {
            [one] => *one,
            _ => g.b.concat(&picked, 1)?,
        };
        g.compile(&[("alignment", out)])
    }
}
