//! Choosing the next token: greedy, or sampling with temperature, top-k and
//! top-p over the graph's top candidates, from a seeded generator.

use rand_core::{RngCore, SeedableRng};
use rand_pcg::Pcg64;

/// Sampling settings of one request.
#[derive(Clone, Debug)]
pub struct Sampling {
    pub do_sample: bool,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed: u64,
}

/// A seeded per-request sampler.
pub struct Sampler {
    cfg: Sampling,
    rng: Pcg64,
}

impl Sampler {
    pub fn new(cfg: Sampling) -> Self {
        let rng = Pcg64::seed_from_u64(cfg.seed);
        Sampler { cfg, rng }
    }

    /// Picks from candidates sorted by descending logit; `greedy` is the
    /// graph's argmax.
    pub fn pick(&mut self, greedy: i64, values: &[f32], indices: &[i64]) -> i64 {
        if !self.cfg.do_sample || values.is_empty() {
            return greedy;
        }
        let k = (self.cfg.top_k as usize).clamp(1, values.len());
        let t = self.cfg.temperature.max(1e-6);
        let max = values[0] / t;
        let mut probs: Vec<f64> = values[..k]
            .iter()
            .map(|&v| ((v / t - max) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.cfg.top_p < 1.0 {
            // Keep the smallest prefix whose mass reaches top_p (at least one).
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= self.cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if u < acc {
                return indices[i];
            }
        }
        indices[probs.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_one_is_greedy_and_seeds_repeat() {
        let vals = [3.0, 2.5, 1.0];
        let idx = [7, 3, 9];
        let mut s = Sampler::new(Sampling {
            do_sample: true,
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: 1,
        });
        assert_eq!(s.pick(7, &vals, &idx), 7);
        let cfg = Sampling {
            do_sample: true,
            temperature: 1.0,
            top_k: 3,
            top_p: 1.0,
            seed: 42,
        };
        let (mut a, mut b) = (Sampler::new(cfg.clone()), Sampler::new(cfg));
        let xa: Vec<i64> = (0..20).map(|_| a.pick(7, &vals, &idx)).collect();
        let xb: Vec<i64> = (0..20).map(|_| b.pick(7, &vals, &idx)).collect();
        assert_eq!(xa, xb);
    }
}
