//! Whisper's log-mel features (transformers' `WhisperFeatureExtractor`),
//! computed in the skill in f64: the clip zero-padded (or cut) to
//! `chunk_length` seconds, a centred STFT (reflect padding, periodic Hann
//! window of `n_fft`, hop `hop_length`) whose power spectrum goes through
//! Slaney-normalised mel filters (0 to 8 kHz, Slaney mel scale), then
//! `log10(max(x, 1e-10))`, the last frame dropped, values floored at the
//! clip's maximum minus 8 and mapped by `(x + 4) / 4`.

use std::sync::Arc;

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::config::Json;
use crate::Error;

/// Highest filter frequency (the extractor's constant).
const MAX_FREQUENCY: f64 = 8000.0;

/// One mel filter: its weights over frequency bins `start..start + w.len()`.
struct Filter {
    start: usize,
    weights: Vec<f64>,
}

/// The feature extractor of a Whisper checkpoint.
pub struct LogMel {
    pub n_mels: usize,
    pub rate: u32,
    pub hop: usize,
    pub n_fft: usize,
    /// Samples per input window (`chunk_length` seconds).
    pub samples: usize,
    window: Vec<f64>,
    filters: Vec<Filter>,
    fft: Arc<dyn Fft<f64>>,
}

/// Hz to mel, Slaney's scale (linear below 1 kHz, logarithmic above).
fn hz_to_mel(f: f64) -> f64 {
    let step = 27.0 / 6.4f64.ln();
    match f >= 1000.0 {
        true => 15.0 + (f / 1000.0).ln() * step,
        false => 3.0 * f / 200.0,
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let step = 6.4f64.ln() / 27.0;
    match m >= 15.0 {
        true => 1000.0 * (step * (m - 15.0)).exp(),
        false => 200.0 * m / 3.0,
    }
}

/// numpy's `linspace(start, stop, n)`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    let step = (stop - start) / (n.max(2) - 1) as f64;
    (0..n)
        .map(|i| match i + 1 == n {
            true => stop,
            false => start + i as f64 * step,
        })
        .collect()
}

/// Triangular Slaney-normalised filters from 0 Hz to `MAX_FREQUENCY`.
fn mel_filters(n_freq: usize, n_mels: usize, rate: u32) -> Vec<Filter> {
    let fft_freqs = linspace(0.0, (rate / 2) as f64, n_freq);
    let mels = linspace(hz_to_mel(0.0), hz_to_mel(MAX_FREQUENCY), n_mels + 2);
    let f: Vec<f64> = mels.into_iter().map(mel_to_hz).collect();
    (0..n_mels)
        .map(|m| {
            let enorm = 2.0 / (f[m + 2] - f[m]);
            let w: Vec<f64> = fft_freqs
                .iter()
                .map(|&x| {
                    let down = (x - f[m]) / (f[m + 1] - f[m]);
                    let up = (f[m + 2] - x) / (f[m + 2] - f[m + 1]);
                    down.min(up).max(0.0) * enorm
                })
                .collect();
            let start = w.iter().position(|&v| v != 0.0).unwrap_or(0);
            let end = w.iter().rposition(|&v| v != 0.0).map_or(start, |e| e + 1);
            Filter {
                start,
                weights: w[start..end].to_vec(),
            }
        })
        .collect()
}

impl LogMel {
    /// Reads `preprocessor_config.json` (WhisperFeatureExtractor keys).
    pub fn read() -> Result<LogMel, Error> {
        let fe = Json::asset("preprocessor_config.json")?
            .ok_or_else(|| Error::Model("the model has no preprocessor_config.json".into()))?;
        LogMel::from_config(&fe)
    }

    /// The extractor of a parsed `preprocessor_config.json`.
    pub fn from_config(fe: &Json) -> Result<LogMel, Error> {
        let n_mels = fe.u64_or("feature_size", 80)? as usize;
        let rate = fe.u64_or("sampling_rate", 16000)?.min(u32::MAX as u64) as u32;
        let hop = fe.u64_or("hop_length", 160)? as usize;
        let n_fft = fe.u64_or("n_fft", 400)? as usize;
        let chunk = fe.u64_or("chunk_length", 30)?;
        if fe.f64_or("dither", 0.0)? != 0.0 {
            return Err(Error::Unsupported(
                "feature extraction with `dither` (random noise) is not supported".into(),
            ));
        }
        if !(2..=1 << 16).contains(&n_fft) || hop == 0 || n_mels == 0 || n_mels > 1024 {
            return Err(Error::Model(format!(
                "preprocessor_config.json: n_fft {n_fft}, hop_length {hop}, feature_size {n_mels} out of range"
            )));
        }
        let samples = (chunk * rate as u64) as usize;
        if samples == 0 || samples > 3600 * 48_000 {
            return Err(Error::Model(format!(
                "preprocessor_config.json: chunk_length {chunk} s at {rate} Hz out of range"
            )));
        }
        // Periodic Hann window.
        let window = (0..n_fft)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / n_fft as f64).cos())
            .collect();
        Ok(LogMel {
            n_mels,
            rate,
            hop,
            n_fft,
            samples,
            window,
            filters: mel_filters(n_fft / 2 + 1, n_mels, rate),
            fft: FftPlanner::new().plan_fft_forward(n_fft),
        })
    }

    /// Frames of one window of features.
    pub fn frames(&self) -> usize {
        self.samples / self.hop
    }

    /// The features [n_mels, frames] (row-major) of the first `samples`
    /// samples of `x` (zero-padded to that length).
    pub fn features(&self, x: &[f32]) -> Vec<f32> {
        let n = self.samples;
        let half = self.n_fft / 2;
        let mut clip: Vec<f64> = x.iter().take(n).map(|&v| v as f64).collect();
        clip.resize(n, 0.0);
        // Reflect padding (no edge repeat), as numpy's mode="reflect".
        let at = |i: isize| -> f64 {
            let last = n as isize - 1;
            let mut j = i;
            if j < 0 {
                j = -j;
            }
            if j > last {
                j = 2 * last - j;
            }
            clip.get(j.clamp(0, last.max(0)) as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let frames = self.frames();
        let bins = self.n_fft / 2 + 1;
        let mut out = vec![0f64; self.n_mels * frames];
        let mut buf = vec![Complex::new(0.0, 0.0); self.n_fft];
        let mut power = vec![0f64; bins];
        for f in 0..frames {
            let start = (f * self.hop) as isize - half as isize;
            for (k, b) in buf.iter_mut().enumerate() {
                *b = Complex::new(at(start + k as isize) * self.window[k], 0.0);
            }
            self.fft.process(&mut buf);
            for (p, c) in power.iter_mut().zip(&buf) {
                *p = c.norm_sqr();
            }
            for (m, filt) in self.filters.iter().enumerate() {
                let e: f64 = filt
                    .weights
                    .iter()
                    .zip(&power[filt.start..])
                    .map(|(w, p)| w * p)
                    .sum();
                out[m * frames + f] = e.max(1e-10).log10();
            }
        }
        let max = out.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out.iter()
            .map(|&v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips() {
        for f in [0.0, 440.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(f)) - f).abs() < 1e-9);
        }
    }

    /// The features of a committed clip against transformers'
    /// (tests/fixtures/gen_tiny_whisper.py: the first frames in full and
    /// the sums of the whole window).
    #[test]
    fn features_match_the_transformers_extractor() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let read = |p: &str| std::fs::read(root.join(p)).expect("fixture file");
        let reference: serde_json::Value =
            serde_json::from_slice(&read("tiny-whisper/reference.json")).expect("reference");
        let config: serde_json::Value =
            serde_json::from_slice(&read("tiny-whisper/preprocessor_config.json")).expect("config");
        let mel = LogMel::from_config(&Json {
            file: "preprocessor_config.json".into(),
            value: config,
        })
        .expect("extractor");
        for (clip, entry) in reference["clips"].as_object().expect("clips") {
            let audio =
                crate::audio::decode_wav("audio", &read(&format!("audio/{clip}"))).expect("wav");
            let got = mel.features(&audio.samples);
            let want = &entry["features"];
            let frames = mel.frames();
            let mut max = 0f64;
            for (f, row) in want["frames"]
                .as_array()
                .expect("frames")
                .iter()
                .enumerate()
            {
                for (m, v) in row.as_array().expect("row").iter().enumerate() {
                    let d = (got[m * frames + f] as f64 - v.as_f64().expect("value")).abs();
                    max = max.max(d);
                }
            }
            assert!(max <= 1e-4, "{clip}: max-abs {max}");
            let sum: f64 = got.iter().map(|&v| v as f64).sum();
            let n = got.len() as f64;
            let mean_diff = (sum - want["sum"].as_f64().expect("sum")).abs() / n;
            assert!(mean_diff <= 1e-5, "{clip}: mean differs by {mean_diff}");
        }
    }

    #[test]
    fn filters_are_triangles_of_unit_area_per_mel() {
        let fb = mel_filters(201, 80, 16000);
        assert_eq!(fb.len(), 80);
        // Every filter covers some bin; starts increase.
        assert!(fb.iter().all(|f| !f.weights.is_empty()));
        assert!(fb.windows(2).all(|w| w[0].start <= w[1].start));
    }
}
