//! The decode graph of an encoder-decoder model ([`Step`]): one token per
//! row through the decoder, with the self-attention cache as session state
//! and the cross-attention keys and values the encode graph left there.
//!
//! With [`Step::joins`] every row has its own position (`position`
//! [rows, 1], table families) and `cache_mask` [rows, keys] marks each
//! row's own cache entries: a request that joined a running batch starts
//! at position 0 in rows whose older entries belong to the request before
//! it. T5's `buckets` [1, keys] stay shared: a key's bucket depends only on
//! its distance to the query, the same in every row. Without joins one
//! position and mask serve every row (`[1]`, `[1, keys]`; a growing cache
//! has no mask).

use super::{log_softmax, sym, Cache, Seq2Seq, Step};
use crate::encoder::MASKED;
use crate::runtime::CompiledGraph;
use crate::{Dim, Dtype, Error, Graph};

impl Seq2Seq {
    /// Builds and compiles a decode graph.
    pub fn decode_graph(&self, step: Step) -> Result<CompiledGraph, Error> {
        let cache_name = match step.cache {
            Cache::Growing => "grow".to_string(),
            Cache::Slots(n) => format!("c{n}"),
        };
        let g = Graph::new(&format!(
            "{}-decode-{cache_name}-k{}{}{}{}{}{}",
            self.spec.model_types[0],
            step.top_k,
            if step.joins { "-rows" } else { "" },
            if step.reorder { "-reorder" } else { "" },
            if step.logits { "-logits" } else { "" },
            if step.logprobs { "-logp" } else { "" },
            if self.fuse { "-fused" } else { "" },
        ));
        let (h, hd) = (self.dims.heads, self.dims.head_dim);
        let ids = g.input("input_ids", Dtype::I64, &[sym("rows"), Dim::Fixed(1)])?;
        let beam_idx = match step.reorder {
            true => Some(g.input("beam_idx", Dtype::I64, &[sym("rows")])?),
            false => None,
        };
        let keys_dim = match step.cache {
            Cache::Growing => sym("1+past"),
            Cache::Slots(n) => Dim::Fixed(n),
        };
        // Per-row inputs with joins (rows at different positions), else one
        // row broadcast to all.
        let lead = match step.joins {
            true => sym("rows"),
            false => Dim::Fixed(1),
        };
        let slot = match step.cache {
            Cache::Growing => None,
            Cache::Slots(_) => Some(g.input("cache_slot", Dtype::I64, &[Dim::Fixed(1)])?),
        };
        // [1 | rows, 1, 1, keys]
        let slot_mask = match (step.cache, step.joins) {
            (Cache::Growing, false) => None,
            _ => {
                let m = g.input(
                    "cache_mask",
                    Dtype::Boolean,
                    &[lead.clone(), keys_dim.clone()],
                )?;
                Some(g.b.unsqueeze(g.b.unsqueeze(m, 1)?, 1)?)
            }
        };
        // The self-attention mask or bias [1 | rows, heads | 1, seq, keys].
        let (positions, self_mask) = match self.buckets {
            Some(_) => {
                // A key's bucket depends only on its distance to the query
                // (the same in every row, joined or not).
                let buckets = g.input("buckets", Dtype::I64, &[Dim::Fixed(1), keys_dim])?;
                let table = g.weight(&format!(
                    "{}.{}.relative_attention_bias.weight",
                    self.block(true, 0),
                    self.spec.dec_block.attn
                ))?;
                // [seq, keys, heads] -> [1, heads, seq, keys]
                let bias = g.b.embedding(table, buckets)?;
                let bias = g.b.unsqueeze(g.b.permute(bias, &[2, 0, 1])?, 0)?;
                let bias = match slot_mask {
                    Some(m) => g.b.select(m, bias, g.scalar(MASKED, Dtype::F32)?)?,
                    None => bias,
                };
                (None, Some(bias))
            }
            None => {
                let shape = match step.joins {
                    true => vec![sym("rows"), Dim::Fixed(1)],
                    false => vec![Dim::Fixed(1)],
                };
                (Some(g.input("position", Dtype::I64, &shape)?), slot_mask)
            }
        };
        let mut x = self.embed(&g, ids, positions, true)?;
        let names = self.spec.dec_block;
        let cross_shape = [sym("rows"), Dim::Fixed(h), sym("cross"), Dim::Fixed(hd)];
        let cross_mask = g.b.state(
            "cross_mask",
            Dtype::Boolean,
            &[sym("rows"), Dim::Fixed(1), Dim::Fixed(1), sym("cross")],
        )?;
        let self_shape = match step.cache {
            Cache::Growing => [sym("rows"), Dim::Fixed(h), sym("past"), Dim::Fixed(hd)],
            Cache::Slots(n) => [Dim::Fixed(n), sym("rows"), Dim::Fixed(h), Dim::Fixed(hd)],
        };
        for i in 0..self.dims.dec_layers {
            let p = self.block(true, i);
            let attn = format!("{p}.{}", names.attn);
            x = self.sublayer(&g, x, &format!("{p}.{}", names.attn_norm), |hs| {
                let qkv = self.projs(&g, hs, &attn, &[0, 1, 2])?;
                let q = self.heads(&g, qkv[0])?;
                let mut kv = Vec::with_capacity(2);
                for (new, name) in [(qkv[1], format!("sk{i}")), (qkv[2], format!("sv{i}"))] {
                    let new = self.heads(&g, new)?;
                    let old = g.b.state(&name, Dtype::F32, &self_shape)?;
                    let axis = match step.cache {
                        Cache::Growing => 0,
                        Cache::Slots(_) => 1,
                    };
                    let old = match beam_idx {
                        Some(b) => g.b.gather(old, b, axis)?,
                        None => old,
                    };
                    let all = match (step.cache, slot) {
                        (Cache::Slots(_), Some(s)) => {
                            let written =
                                g.b.write_rows(old, g.b.permute(new, &[2, 0, 1, 3])?, s)?;
                            g.b.update_state(&name, written)?;
                            g.b.permute(written, &[1, 2, 0, 3])?
                        }
                        _ => {
                            let all = g.b.concat(&[old, new], 2)?;
                            g.b.update_state(&name, all)?;
                            all
                        }
                    };
                    kv.push(all);
                }
                let o = g.b.attention(q, kv[0], kv[1], self_mask, self.options())?;
                self.proj(&g, g.merge_heads(o)?, &attn, 3)
            })?;
            let cross = format!("{p}.{}", names.cross);
            x = self.sublayer(&g, x, &format!("{p}.{}", names.cross_norm), |hs| {
                let q = self.heads(&g, self.proj(&g, hs, &cross, 0)?)?;
                let k = g.b.state(&format!("ck{i}"), Dtype::F32, &cross_shape)?;
                let v = g.b.state(&format!("cv{i}"), Dtype::F32, &cross_shape)?;
                let o = g.b.attention(q, k, v, Some(cross_mask), self.options())?;
                self.proj(&g, g.merge_heads(o)?, &cross, 3)
            })?;
            x = self.sublayer(&g, x, &format!("{p}.{}", names.ffn_norm), |hs| {
                self.ffn(&g, hs, &p, &names)
            })?;
        }
        let mut x = self.final_norm(&g, x, true)?;
        if let Some(s) = self.output_scale {
            x = g.mul(x, g.scalar(s, Dtype::F32)?)?;
        }
        // One position per row: [rows, d_model].
        let x = g.b.squeeze(x, 1)?;
        let head = match self.has.contains(self.spec.lm_head) {
            true => g.weight(self.spec.lm_head)?,
            false => g.weight(&self.embed)?,
        };
        let mut logits = g.b.linear(x, head, None)?;
        if let Some(b) = self.spec.logits_bias.filter(|b| self.has.contains(*b)) {
            logits = g.add(logits, g.weight(b)?)?;
        }
        let logits = g.b.cast(logits, Dtype::F32)?;
        let ranked = match step.logprobs {
            true => log_softmax(&g, logits)?,
            false => logits,
        };
        let (values, indices) = g.b.top_k(ranked, step.top_k)?;
        let mut outputs = vec![("top_values", values), ("top_indices", indices)];
        if step.logits {
            outputs.push(("logits", logits));
        }
        g.compile(&outputs)
    }
}
