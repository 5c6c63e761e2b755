//! The tensors a tokenized batch runs with: the tokenizer's ids, mask and
//! segments, and what depends only on the sequence length (positions,
//! relative buckets, gather indices, trigram neighbours, window masks).

use crate::tensors::i64_tensor;
use crate::tokenizer::EncodedBatch;
use crate::{NamedTensor, Tensor};

use super::spec::Positions;
use super::{mobilebert, Encoder};

fn named(name: &str, value: Tensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        value,
    }
}

impl Encoder {
    /// The graph inputs of a tokenized batch.
    pub fn inputs(&self, enc: &EncodedBatch) -> Vec<NamedTensor> {
        let seq = enc.input_ids.shape.get(1).copied().unwrap_or(0);
        let first = match self.spec.embeddings.positions {
            Positions::FromZero => 0,
            Positions::AfterPadding => self.pad_id + 1,
        };
        // Padding past the table (a window's multiple) takes the last row:
        // padded positions are never attended to.
        let last = self.max_positions.saturating_sub(1) as i64;
        let positions: Vec<i64> = (first..first + seq as i64).map(|p| p.min(last)).collect();
        // Per-token tensors: [lead, seq], or [lead, blocks, w] under a window.
        let shaped = |t: &Tensor| -> Tensor {
            let mut t = t.clone();
            if let (Some(s), [lead, len]) = (self.sliding, t.shape.as_slice()) {
                t.shape = vec![*lead, len / s.w, s.w];
            }
            t
        };
        let mut out = vec![
            named("input_ids", shaped(&enc.input_ids)),
            named("attention_mask", shaped(&enc.attention_mask)),
        ];
        if self.has_segments() {
            out.push(named("token_type_ids", shaped(&enc.token_type_ids)));
        }
        if self.absolute {
            out.push(named(
                "position_ids",
                shaped(&i64_tensor(vec![1, seq], &positions)),
            ));
        }
        let n = seq as usize;
        if let Some(b) = self.buckets {
            out.push(named(
                "relative_buckets",
                i64_tensor(vec![seq, seq], &b.table(n)),
            ));
        }
        if let Some(d) = self.disentangled {
            out.extend(d.inputs(n));
        }
        if self.mobilebert.is_some_and(|m| m.trigram) {
            let (next, prev) = mobilebert::trigram_indices(n);
            out.push(named("trigram_next", i64_tensor(vec![seq], &next)));
            out.push(named("trigram_prev", i64_tensor(vec![seq], &prev)));
        }
        if let Some(s) = self.sliding {
            let blocks = n / s.w as usize;
            let (prev, next) = s.neighbours(blocks);
            let b = blocks as u64;
            out.push(named(
                "window_band",
                i64_tensor(vec![b, s.w, 3 * s.w], &s.band(blocks)),
            ));
            out.push(named("window_prev", i64_tensor(vec![b], &prev)));
            out.push(named("window_next", i64_tensor(vec![b], &next)));
        }
        out
    }
}
