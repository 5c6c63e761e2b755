//! Mel spectrograms computed in the skill in f64, shared by the audio
//! feature extractors: a centred STFT ([`Stft`]: reflect padding, periodic
//! Hann window of `n_fft`, hop `hop_length`) whose power spectrum goes
//! through triangular mel filters ([`mel_filters`]: HTK or Slaney mel
//! scale, optionally Slaney-normalised), as transformers' `audio_utils`
//! (`spectrogram`, `mel_filter_bank`) computes them.
//!
//! [`LogMel`] is Whisper's extractor (transformers'
//! `WhisperFeatureExtractor`): the clip zero-padded (or cut) to
//! `chunk_length` seconds, Slaney filters from 0 to 8 kHz, then
//! `log10(max(x, 1e-10))`, the last frame dropped, values floored at the
//! clip's maximum minus 8 and mapped by `(x + 4) / 4`. CLAP's extractor
//! (power in dB, HTK or Slaney filters) is `super::clap_features`.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::config::Json;
use crate::Error;

/// Highest filter frequency of Whisper's extractor.
const MAX_FREQUENCY: f64 = 8000.0;

/// One mel filter: its weights over frequency bins `start..start + w.len()`.
pub struct Filter {
    start: usize,
    weights: Vec<f64>,
}

/// The mel scale of a filter bank.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MelScale {
    /// `2595 log10(1 + f / 700)` (torchaudio's default).
    Htk,
    /// Slaney's: linear below 1 kHz, logarithmic above (librosa's default).
    Slaney,
}

/// Hz to mel.
fn hz_to_mel(f: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + f / 700.0).log10(),
        MelScale::Slaney => {
            let step = 27.0 / 6.4f64.ln();
            match f >= 1000.0 {
                true => 15.0 + (f / 1000.0).ln() * step,
                false => 3.0 * f / 200.0,
            }
        }
    }
}

fn mel_to_hz(m: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(m / 2595.0) - 1.0),
        MelScale::Slaney => {
            let step = 6.4f64.ln() / 27.0;
            match m >= 15.0 {
                true => 1000.0 * (step * (m - 15.0)).exp(),
                false => 200.0 * m / 3.0,
            }
        }
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

/// Triangular filters between `f_min` and `f_max` Hz, evenly spaced on the
/// mel scale, over `n_freq` bins from 0 to `rate / 2` (transformers'
/// `mel_filter_bank`); `slaney_norm` scales each to unit area per mel.
pub fn mel_filters(
    n_freq: usize,
    n_mels: usize,
    rate: u32,
    (f_min, f_max): (f64, f64),
    scale: MelScale,
    slaney_norm: bool,
) -> Vec<Filter> {
    let fft_freqs = linspace(0.0, (rate / 2) as f64, n_freq);
    let mels = linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2);
    let f: Vec<f64> = mels.into_iter().map(|m| mel_to_hz(m, scale)).collect();
    (0..n_mels)
        .map(|m| {
            let enorm = match slaney_norm {
                true => 2.0 / (f[m + 2] - f[m]),
                false => 1.0,
            };
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

/// A centred short-time Fourier transform and its mel energies.
pub struct Stft {
    pub n_fft: usize,
    pub hop: usize,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl Stft {
    /// A periodic Hann window of `n_fft` and a hop of `hop` samples.
    pub fn new(n_fft: usize, hop: usize) -> Result<Stft, Error> {
        if !(2..=1 << 16).contains(&n_fft) || hop == 0 {
            return Err(Error::Model(format!(
                "preprocessor_config.json: n_fft {n_fft}, hop_length {hop} out of range"
            )));
        }
        let window = (0..n_fft)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / n_fft as f64).cos())
            .collect();
        Ok(Stft {
            n_fft,
            hop,
            window,
            fft: RealFftPlanner::new().plan_fft_forward(n_fft),
        })
    }

    /// Frequency bins of the one-sided spectrum.
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Frames of a centred STFT over `len` samples (transformers'
    /// `spectrogram` with `center=True`).
    pub fn frames(&self, len: usize) -> usize {
        1 + (len + 2 * (self.n_fft / 2)).saturating_sub(self.n_fft) / self.hop
    }

    /// Mel energies [filters, frames] (row-major) of the first `frames`
    /// frames of `clip`, reflect-padded by `n_fft / 2` at both ends
    /// (numpy's mode="reflect", which mirrors without repeating the edge).
    pub fn mel_power(&self, clip: &[f64], frames: usize, filters: &[Filter]) -> Vec<f64> {
        let padded = self.reflect_padded(clip, frames);
        let mut out = vec![0f64; filters.len() * frames];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f64; self.bins()];
        for f in 0..frames {
            let frame = padded
                .get(f * self.hop..f * self.hop + self.n_fft)
                .unwrap_or(&[]);
            for ((x, s), w) in input.iter_mut().zip(frame).zip(&self.window) {
                *x = s * w;
            }
            // Sizes come from `make_*_vec`: processing cannot fail.
            let _ = self
                .fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch);
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, filt) in filters.iter().enumerate() {
                out[m * frames + f] = filt
                    .weights
                    .iter()
                    .zip(power.get(filt.start..).unwrap_or(&[]))
                    .map(|(w, p)| w * p)
                    .sum();
            }
        }
        out
    }

    /// `clip` reflect-padded by `n_fft / 2` at the start and as far as
    /// `frames` frames reach at the end (numpy's mode="reflect", which
    /// mirrors without repeating the edge sample); zeros past the padding
    /// of a clip shorter than a frame.
    fn reflect_padded(&self, clip: &[f64], frames: usize) -> Vec<f64> {
        let n = clip.len();
        let half = self.n_fft / 2;
        let len = frames.saturating_sub(1) * self.hop + self.n_fft;
        let at = |i: isize| -> f64 {
            if n < 2 {
                return clip.first().copied().unwrap_or(0.0);
            }
            let period = 2 * (n as isize - 1);
            let j = i.rem_euclid(period);
            let j = if j >= n as isize { period - j } else { j };
            clip.get(j as usize).copied().unwrap_or(0.0)
        };
        let mut padded = Vec::with_capacity(len);
        padded.extend((0..half.min(len)).map(|k| at(k as isize - half as isize)));
        padded.extend_from_slice(&clip[..n.min(len - padded.len())]);
        let tail = padded.len();
        padded.extend((tail..len).map(|k| at(k as isize - half as isize)));
        padded
    }
}

/// The feature extractor of a Whisper checkpoint.
pub struct LogMel {
    pub n_mels: usize,
    pub rate: u32,
    pub hop: usize,
    pub n_fft: usize,
    /// Samples per input window (`chunk_length` seconds).
    pub samples: usize,
    stft: Stft,
    filters: Vec<Filter>,
}

impl LogMel {
    /// Reads `preprocessor_config.json` (WhisperFeatureExtractor keys).
    pub fn read() -> Result<LogMel, Error> {
        let fe = Json::processor(crate::config::Processor::FeatureExtractor)?;
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
        if n_mels == 0 || n_mels > 1024 {
            return Err(Error::Model(format!(
                "preprocessor_config.json: feature_size {n_mels} out of range"
            )));
        }
        let stft = Stft::new(n_fft, hop)?;
        let samples = (chunk * rate as u64) as usize;
        if samples == 0 || samples > 3600 * 48_000 {
            return Err(Error::Model(format!(
                "preprocessor_config.json: chunk_length {chunk} s at {rate} Hz out of range"
            )));
        }
        let filters = mel_filters(
            stft.bins(),
            n_mels,
            rate,
            (0.0, MAX_FREQUENCY),
            MelScale::Slaney,
            true,
        );
        Ok(LogMel {
            n_mels,
            rate,
            hop,
            n_fft,
            samples,
            stft,
            filters,
        })
    }

    /// Frames of one window of features.
    pub fn frames(&self) -> usize {
        self.samples / self.hop
    }

    /// Feature frames of `len` samples: one window when they fit in it
    /// (the extractor zero-pads to it), else one per hop of the whole clip
    /// (transformers' long-form extraction: no truncation, no padding).
    pub fn frames_of(&self, len: usize) -> usize {
        match len <= self.samples {
            true => self.frames(),
            false => len / self.hop,
        }
    }

    /// The features [n_mels, frames_of(x.len())] (row-major) of `x`,
    /// zero-padded to a window when shorter; the floor at the maximum
    /// minus 8 is over the whole clip.
    pub fn features(&self, x: &[f32]) -> Vec<f32> {
        let n = x.len().max(self.samples);
        let mut clip: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        clip.resize(n, 0.0);
        let out: Vec<f64> = self
            .stft
            .mel_power(&clip, self.frames_of(x.len()), &self.filters)
            .into_iter()
            .map(|e| e.max(1e-10).log10())
            .collect();
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
        for scale in [MelScale::Slaney, MelScale::Htk] {
            for f in [0.0, 440.0, 999.0, 1000.0, 4000.0, 8000.0] {
                assert!((mel_to_hz(hz_to_mel(f, scale), scale) - f).abs() < 1e-9);
            }
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
            let frames = mel.frames_of(audio.samples.len());
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
        let fb = mel_filters(201, 80, 16000, (0.0, 8000.0), MelScale::Slaney, true);
        assert_eq!(fb.len(), 80);
        // Every filter covers some bin; starts increase.
        assert!(fb.iter().all(|f| !f.weights.is_empty()));
        assert!(fb.windows(2).all(|w| w[0].start <= w[1].start));
    }
}
