//! Whisper's temperature fallback (transformers' `generate_with_fallback`
//! and `_need_fallback`): a decoding attempt of a window is redone at the
//! next temperature when its tokens compress too well (a repetition loop)
//! or its average log-probability is too low, unless the window looks
//! silent (a high no-speech probability together with the low
//! log-probability), in which case it is skipped.
//!
//! The compression ratio is transformers': the tokens (end of text
//! included) as little-endian integers of `floor(log2(vocab) / 8) + 1`
//! bytes, their length over the length of their zlib stream at level 6.
//! The stream here is `miniz_oxide`'s (the shorter of its fixed-code and
//! own-code blocks, as zlib chooses), whose matches are not always
//! CPython's zlib 1.2.13's: on 320 random token runs of 8 to 400 tokens
//! with repeats, 318 lengths were identical and the rest within 2 bytes, so
//! only a ratio within a percent or so of the threshold may decide
//! differently from transformers.

/// The thresholds of a request (none: that test is off).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Thresholds {
    pub compression_ratio: Option<f64>,
    pub logprob: Option<f64>,
    pub no_speech: Option<f64>,
}

/// What one attempt measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measures {
    pub compression_ratio: f64,
    /// Average log-probability of the tokens (none: not measured).
    pub avg_logprob: Option<f64>,
    /// Probability of `<|nospeech|>` after `<|startoftranscript|>`.
    pub no_speech: Option<f64>,
}

/// The verdict on one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Decode the window again at the next temperature (the last
    /// temperature's attempt is kept whatever it says).
    Retry,
    /// Silence: the window is dropped.
    Skip,
}

/// zlib compression ratio of `tokens` (transformers'
/// `_retrieve_compression_ratio`).
pub fn compression_ratio(tokens: &[i64], vocab: u64) -> f64 {
    let width = ((vocab.max(2) as f64).log2() / 8.0) as usize + 1;
    let bytes: Vec<u8> = tokens
        .iter()
        .flat_map(|&t| t.to_le_bytes().into_iter().take(width))
        .collect();
    if bytes.is_empty() {
        return 0.0;
    }
    bytes.len() as f64 / zlib_length(&bytes) as f64
}

/// Bytes of a level-6 zlib stream of `data`: zlib sends a block stored,
/// with the fixed codes or with its own, whichever is shortest; miniz_oxide
/// picks fixed codes only under 48 bytes, so both are made and the
/// shorter kept (stored: 2 header, 5 block header and 4 checksum bytes).
fn zlib_length(data: &[u8]) -> usize {
    use miniz_oxide::deflate::core::{create_comp_flags_from_zip_params, CompressionStrategy};
    let dynamic = deflate_length(data, create_comp_flags_from_zip_params(6, 1, 0));
    let fixed = deflate_length(
        data,
        create_comp_flags_from_zip_params(6, 1, CompressionStrategy::Fixed as i32),
    );
    let stored = 2 + data.len() + 5 * data.len().div_ceil(65535).max(1) + 4;
    dynamic.min(fixed).min(stored)
}

/// Bytes of `data` compressed with miniz_oxide's `flags`.
fn deflate_length(mut data: &[u8], flags: u32) -> usize {
    use miniz_oxide::deflate::core::{compress, CompressorOxide, TDEFLFlush, TDEFLStatus};
    let mut c = CompressorOxide::new(flags);
    let mut out = vec![0u8; data.len() + 64];
    let mut total = 0;
    loop {
        let (status, read, wrote) = compress(&mut c, data, &mut out, TDEFLFlush::Finish);
        total += wrote;
        match status {
            TDEFLStatus::Okay if read <= data.len() => data = &data[read..],
            _ => return total,
        }
    }
}

/// `softmax(logits)[token]` in f64.
pub fn probability(logits: &[f32], token: i64) -> Option<f64> {
    let x = *logits.get(usize::try_from(token).ok()?)?;
    let norm = super::timestamps::log_sum_exp(logits);
    Some((x as f64 - norm).exp())
}

impl Thresholds {
    /// transformers' `_need_fallback` on one attempt's measures.
    pub fn judge(&self, m: &Measures) -> Verdict {
        let mut retry = self
            .compression_ratio
            .is_some_and(|t| m.compression_ratio > t);
        let low = match (self.logprob, m.avg_logprob) {
            (Some(t), Some(lp)) => lp < t,
            _ => false,
        };
        retry |= low;
        if let (Some(t), Some(p)) = (self.no_speech, m.no_speech) {
            if low && p > t {
                return Verdict::Skip;
            }
        }
        match retry {
            true => Verdict::Retry,
            false => Verdict::Accept,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_ratio_is_close_to_cpython_zlib() {
        // CPython's zlib 1.2.13 (level 6) gives 242 / 19 and 122 / 90.
        let rep: Vec<i64> = [5, 6, 7]
            .iter()
            .cycle()
            .take(120)
            .copied()
            .chain([50257])
            .collect();
        let r = compression_ratio(&rep, 51865);
        assert!((242.0 / r - 19.0).abs() <= 2.0, "{r}");
        let ramp: Vec<i64> = (100..160).chain([50257]).collect();
        let r = compression_ratio(&ramp, 51865);
        assert!((122.0 / r - 90.0).abs() <= 2.0, "{r}");
    }

    #[test]
    fn judges_as_transformers() {
        let t = Thresholds {
            compression_ratio: Some(2.4),
            logprob: Some(-1.0),
            no_speech: Some(0.6),
        };
        let m = |cr: f64, lp: f64, ns: f64| Measures {
            compression_ratio: cr,
            avg_logprob: Some(lp),
            no_speech: Some(ns),
        };
        assert_eq!(t.judge(&m(1.2, -0.5, 0.9)), Verdict::Accept);
        assert_eq!(t.judge(&m(3.0, -0.5, 0.9)), Verdict::Retry);
        assert_eq!(t.judge(&m(1.2, -1.5, 0.1)), Verdict::Retry);
        // Low log-probability and likely silence: skipped, even when the
        // ratio asks for another attempt.
        assert_eq!(t.judge(&m(3.0, -1.5, 0.9)), Verdict::Skip);
        assert!((probability(&[0.0, 0.0], 1).unwrap() - 0.5).abs() < 1e-12);
    }
}
