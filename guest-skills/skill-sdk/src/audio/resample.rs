//! Band-limited resampling, the same computation as torchaudio's default
//! `torchaudio.functional.resample(x, orig_freq, new_freq)` (the
//! transformers ASR and audio-classification pipelines call it for
//! `{"array", "sampling_rate"}` inputs at another rate than the feature
//! extractor's): windowed-sinc interpolation with a Hann window
//! (`sinc_interp_hann`), `lowpass_filter_width` 6, `rolloff` 0.99, on the
//! gcd-reduced rates.
//!
//! With `o = orig / gcd`, `n = new / gcd`, `base = min(o, n) * 0.99` and
//! `width = ceil(6 * o / base)`, output phase `i` (of `n`) has the kernel
//! `k_i[j] = sinc(pi t) * cos(pi t / 12)^2 * base / o` over the taps
//! `j = 0 .. 2 width + o`, with `t = clamp(((j - width) / o - i / n) * base,
//! -6, 6)`; the input is zero-padded by `width` on the left and
//! `width + o` on the right, convolved with stride `o`, the phases
//! interleaved, and the result cut to `ceil(n * len / o)` samples.
//!
//! Taps where `|t| >= 6` (the clamp) are dropped: torchaudio keeps them,
//! but their value is `sin(6 pi) * cos(pi / 2)^2`, zero up to rounding
//! (below 1e-20), so only about `2 * 6 * o / base` taps per phase are
//! stored and multiplied. The kernel is computed in f32 with torchaudio's
//! sequence of operations (it computes it in the waveform's dtype, f32 in
//! the pipelines); sums are accumulated in f64. Outputs agree with
//! torchaudio to about 2e-7 (tests/fixtures/gen_resample_reference.py).

use crate::{invalid, Error};

/// `lowpass_filter_width`: zero crossings of the sinc on each side.
const LOWPASS_FILTER_WIDTH: f64 = 6.0;
/// `rolloff`: the cut-off as a fraction of the lower Nyquist rate.
const ROLLOFF: f64 = 0.99;
/// Most filter taps (all phases together) a resampler may hold: 8 Mi f32,
/// 32 MiB. Ordinary rates need a few thousand; coprime rates near 384 kHz
/// would need more and are refused.
const MAX_TAPS: usize = 8 << 20;

/// Tap `j` of phase `i`, in f32 step by step as torchaudio computes it for
/// an f32 waveform (`idx = arange(-width, width + orig) / orig`,
/// `t = arange(0, -new, -1) / new + idx`, `t *= base`, the clamp, the
/// window, `t *= pi`, `sin(t) / t`, `*= window * scale`): the f32 rounding
/// of `t` alone moves taps by up to ~1e-5 for rates like 32 kHz -> 44.1 kHz,
/// so it is reproduced rather than computed more exactly.
fn tap(j: usize, i: usize, width: usize, orig: usize, new: usize, base: f64) -> f32 {
    let lpw = LOWPASS_FILTER_WIDTH as f32;
    let idx = (j as f32 - width as f32) / orig as f32;
    let t = (-(i as f32) / new as f32 + idx) * base as f32;
    let t = t.clamp(-lpw, lpw);
    let window = (t * std::f32::consts::PI / lpw / 2.0).cos().powi(2);
    let t = t * std::f32::consts::PI;
    let sinc = if t == 0.0 { 1.0 } else { t.sin() / t };
    sinc * (window * (base / orig as f64) as f32)
}

/// A resampler between two rates (torchaudio's kernel, precomputed).
#[derive(Clone, Debug)]
pub struct Resampler {
    /// Input samples per period, `orig / gcd`.
    orig: usize,
    /// Output samples per period, `new / gcd`.
    new: usize,
    /// The left padding, `width`.
    width: usize,
    /// Per output phase: the first kept tap's index and the kept taps.
    phases: Vec<(usize, Vec<f32>)>,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Resampler {
    /// The resampler from `from` Hz to `to` Hz; an error when a rate is 0
    /// or the filter would be larger than [`MAX_TAPS`].
    pub fn new(from: u32, to: u32) -> Result<Resampler, Error> {
        if from == 0 || to == 0 {
            return Err(invalid(format!(
                "cannot resample from {from} Hz to {to} Hz: rates must be positive"
            )));
        }
        let g = gcd(from as u64, to as u64);
        let (orig, new) = ((from as u64 / g) as usize, (to as u64 / g) as usize);
        let base = orig.min(new) as f64 * ROLLOFF;
        let width = (LOWPASS_FILTER_WIDTH * orig as f64 / base).ceil() as usize;
        let taps = 2 * width + orig;
        // Kept taps per phase: |t| < 6 spans 2 * 6 * orig / base taps.
        let span = (2.0 * LOWPASS_FILTER_WIDTH * orig as f64 / base).ceil() as usize + 3;
        if span.min(taps).saturating_mul(new) > MAX_TAPS {
            return Err(invalid(format!(
                "cannot resample from {from} Hz to {to} Hz: the filter would have over {MAX_TAPS} \
                 taps (resample to a rate with a larger common divisor first)"
            )));
        }
        let phases = (0..new)
            .map(|i| {
                // Taps with |t| < 6: (j - width) / orig - i / new in
                // (-6 / base, 6 / base), widened by one on each side.
                let centre = width as f64 + orig as f64 * i as f64 / new as f64;
                let half = orig as f64 * LOWPASS_FILTER_WIDTH / base;
                let lo = ((centre - half).floor() - 1.0).max(0.0) as usize;
                let hi = (((centre + half).ceil() + 2.0).max(0.0) as usize).min(taps);
                let lo = lo.min(hi);
                let kernel = (lo..hi)
                    .map(|j| tap(j, i, width, orig, new, base))
                    .collect();
                (lo, kernel)
            })
            .collect();
        Ok(Resampler {
            orig,
            new,
            width,
            phases,
        })
    }

    /// The number of output samples for `len` input samples,
    /// `ceil(new * len / orig)`.
    pub fn output_len(&self, len: usize) -> usize {
        let num = (self.new as u128) * (len as u128);
        num.div_ceil(self.orig as u128).min(usize::MAX as u128) as usize
    }

    /// Resamples `x`.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let len = self.output_len(x.len());
        let mut out = Vec::with_capacity(len);
        // Output `m` is phase `m % new` of frame `m / new`; frame `f` reads
        // the padded input from `f * orig`, i.e. x from `f * orig - width`.
        'frames: for frame in 0.. {
            let start = (frame * self.orig) as isize - self.width as isize;
            for (lo, kernel) in &self.phases {
                if out.len() == len {
                    break 'frames;
                }
                let first = start + *lo as isize;
                // Clip the taps to the input's span (zero padding outside).
                let skip = (-first).max(0) as usize;
                let from = first.max(0) as usize;
                let mut acc = 0f64;
                if skip < kernel.len() && from < x.len() {
                    let n = (kernel.len() - skip).min(x.len() - from);
                    for (k, v) in kernel[skip..skip + n].iter().zip(&x[from..from + n]) {
                        acc += *k as f64 * *v as f64;
                    }
                }
                out.push(acc as f32);
            }
        }
        out
    }
}

/// Resamples `x` from `from` Hz to `to` Hz (a copy when they are equal).
pub fn resample(x: &[f32], from: u32, to: u32) -> Result<Vec<f32>, Error> {
    if from == to {
        return Ok(x.to_vec());
    }
    Ok(Resampler::new(from, to)?.apply(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torchaudio's outputs on a short deterministic signal, written by
    /// tests/fixtures/gen_resample_reference.py.
    #[test]
    fn matches_torchaudio() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let text = std::fs::read(root.join("audio/resample_reference.json")).expect("reference");
        let r: serde_json::Value = serde_json::from_slice(&text).expect("reference JSON");
        let floats = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array()
                .expect("list")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        };
        let cases = r["cases"].as_array().expect("cases");
        assert!(cases.len() >= 4);
        for c in cases {
            let from = c["orig_freq"].as_u64().expect("orig") as u32;
            let to = c["new_freq"].as_u64().expect("new") as u32;
            let x = floats(&c["input"]);
            let want = floats(&c["output"]);
            let got = resample(&x, from, to).expect("resample");
            assert_eq!(got.len(), want.len(), "{from} -> {to}: length");
            let max = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max <= 1e-5, "{from} -> {to}: max-abs {max}");
        }
    }

    #[test]
    fn lengths_follow_torchaudio() {
        let r = Resampler::new(44100, 16000).expect("resampler");
        assert_eq!((r.orig, r.new, r.width), (441, 160, 17));
        assert_eq!(r.output_len(44100), 16000);
        assert_eq!(r.output_len(1), 1);
        assert_eq!(r.apply(&[0.5; 3]).len(), 2);
        assert!(r.apply(&[]).is_empty());
        assert_eq!(resample(&[0.1, 0.2], 8000, 16000).expect("up").len(), 4);
    }

    #[test]
    fn refuses_zero_and_huge_filters() {
        assert!(Resampler::new(0, 16000).is_err());
        assert!(Resampler::new(16000, 0).is_err());
        match Resampler::new(767_999, 16_001) {
            Err(e) => assert!(e.to_string().contains("767999 Hz"), "{e}"),
            Ok(_) => panic!("767999 -> 16001 Hz needs too many taps"),
        }
        assert!(Resampler::new(1, 16000).is_ok());
    }

    #[test]
    fn a_constant_stays_constant_inside() {
        let x = vec![0.25f32; 4800];
        let y = resample(&x, 48000, 16000).expect("down");
        assert_eq!(y.len(), 1600);
        for v in &y[100..1500] {
            assert!((v - 0.25).abs() < 1e-3, "{v}");
        }
    }
}
