//! Relative attention bias from bucketed relative positions (MPNet; the
//! bidirectional log buckets T5 introduced).
//!
//! The buckets depend only on the sequence length, so the skill computes
//! them (in f32, as transformers does) and the graph turns them into a
//! bias through the model's table.

use crate::graph::Node;
use crate::{Dtype, Error, Graph};

/// Bucketing of relative positions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Buckets {
    /// Buckets in all, half for keys before the query and half after.
    pub count: i64,
    /// Distances from here on share the last bucket.
    pub max_distance: i64,
}

impl Buckets {
    /// The bucket of key position minus query position.
    pub fn bucket(&self, relative: i64) -> i64 {
        let half = self.count / 2;
        let n = -relative;
        let mut ret = if n < 0 { half } else { 0 };
        let n = n.abs();
        let exact = half / 2;
        if n < exact {
            return ret + n;
        }
        // f32 throughout, like the reference: log(n / exact) / log(max /
        // exact) * (half - exact), truncated.
        let scale = ((self.max_distance as f64) / (exact as f64)).ln() as f32;
        let log = (n as f32 / exact as f32).ln() / scale * (half - exact) as f32;
        let large = (exact + log as i64).min(half - 1);
        ret += large;
        ret
    }

    /// The bucket of key position minus query position in a causal
    /// (decoder) attention: keys after the query share bucket 0, and all
    /// `count` buckets cover distances into the past (T5's unidirectional
    /// buckets).
    pub fn causal_bucket(&self, relative: i64) -> i64 {
        let n = (-relative).max(0);
        let exact = self.count / 2;
        if n < exact {
            return n;
        }
        let scale = ((self.max_distance as f64) / (exact as f64)).ln() as f32;
        let log = (n as f32 / exact as f32).ln() / scale * (self.count - exact) as f32;
        (exact + log as i64).min(self.count - 1)
    }

    /// Buckets [seq, seq] of every (query, key) pair, row-major.
    pub fn table(&self, seq: usize) -> Vec<i64> {
        let mut v = Vec::with_capacity(seq * seq);
        for q in 0..seq as i64 {
            for k in 0..seq as i64 {
                v.push(self.bucket(k - q));
            }
        }
        v
    }
}

/// The additive attention mask [batch, heads, seq, seq]: the bias of each
/// (query, key) from `table` [buckets, heads] where `keys` [batch, 1, 1,
/// seq] allows the key, a large negative score where it does not.
pub fn bias_mask(g: &Graph, table: &str, buckets: Node, keys: Node) -> Result<Node, Error> {
    let t = g.weight(&format!("{table}.weight"))?;
    // [seq, seq, heads] -> [1, heads, seq, seq]
    let bias = g.b.embedding(t, buckets)?;
    let bias = g.b.unsqueeze(g.b.permute(bias, &[2, 0, 1])?, 0)?;
    let masked = g.scalar(super::MASKED, Dtype::F32)?;
    g.b.select(keys, bias, masked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpnet_buckets_split_before_and_after() {
        let b = Buckets {
            count: 32,
            max_distance: 128,
        };
        assert_eq!(b.bucket(0), 0);
        // A key before the query (negative relative) is in the low half.
        assert_eq!(b.bucket(-3), 3);
        assert_eq!(b.bucket(3), 19);
        assert_eq!(b.bucket(-7), 7);
        assert_eq!(b.bucket(-8), 8);
        assert_eq!(b.bucket(-1000), 15);
        assert_eq!(b.bucket(1000), 31);
    }
}
