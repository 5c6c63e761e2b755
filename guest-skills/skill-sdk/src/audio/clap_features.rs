//! CLAP's input features (transformers' `ClapFeatureExtractor`), computed
//! in the skill in f64 and rounded to f32 as the extractor returns them:
//! mel power spectra in dB (`10 log10(max(x, 1e-10))`, no `top_db`) over a
//! centred STFT ([`super::mel::Stft`]), laid out [channels, frames, mels].
//!
//! - `truncation` "rand_trunc": one channel, Slaney-scale Slaney-normalised
//!   filters. "fusion": four channels, HTK-scale unnormalised filters.
//! - Audio no longer than `max_length_s` is padded to it (`padding`
//!   "repeatpad": whole repeats then zeros; "repeat": repeats cut to the
//!   length; "pad": zeros); with "fusion" its spectrogram is stacked four
//!   times.
//! - Longer audio is where transformers draws random numbers. We take a
//!   documented deterministic choice among its possible outcomes:
//!   "rand_trunc" crops the first `max_length_s` seconds (offset 0);
//!   "fusion" computes the whole clip's spectrogram, shrinks it to one
//!   chunk (bilinear, as `torch.nn.functional.interpolate`) and takes the
//!   three chunks that start first in each third of the possible starts
//!   (transformers picks one start at random in each third).
//! - `is_longer`: each clip is extracted on its own, as the pipelines do;
//!   for a batch of one, transformers marks the clip longer whenever
//!   truncation is "fusion" (its one random pick when no clip is longer),
//!   so a fused model always fuses.
//!
//! [`resize_frames`] is the model's first step, done here on the features
//! (it commutes with the model's per-mel batch norm): bicubic
//! interpolation (`align_corners=True`, PyTorch's A = -0.75) of the frame
//! axis to the spectrogram width the audio tower takes.

use crate::config::Json;
use crate::Error;

use super::mel::{mel_filters, Filter, MelScale, Stft};

/// How audio longer than `max_length_s` is cut.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Truncation {
    Fusion,
    RandTrunc,
}

/// How shorter audio is padded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Padding {
    RepeatPad,
    Repeat,
    Pad,
}

/// Mel bins the "fusion" shrink resizes to (a constant in transformers).
const FUSION_BINS: usize = 64;

/// The features of one clip: [channels, frames, bins] (row-major).
#[derive(Clone, Debug)]
pub struct Features {
    pub channels: usize,
    pub frames: usize,
    pub bins: usize,
    pub values: Vec<f32>,
    /// transformers' `is_longer` for this clip extracted alone.
    pub longer: bool,
}

/// A CLAP checkpoint's feature extractor.
pub struct ClapFeatures {
    pub rate: u32,
    pub n_mels: usize,
    /// `max_length_s` in samples.
    pub max_samples: usize,
    pub truncation: Truncation,
    pub padding: Padding,
    stft: Stft,
    filters: Vec<Filter>,
}

impl ClapFeatures {
    /// Reads `preprocessor_config.json` (ClapFeatureExtractor keys).
    pub fn read() -> Result<ClapFeatures, Error> {
        let fe = Json::processor(crate::config::Processor::FeatureExtractor)?;
        ClapFeatures::from_config(&fe)
    }

    /// The extractor of a parsed `preprocessor_config.json`.
    pub fn from_config(fe: &Json) -> Result<ClapFeatures, Error> {
        let bad = |what: String| Error::Model(format!("{}: {what}", fe.file));
        let n_mels = fe.u64_or("feature_size", 64)? as usize;
        let rate = fe.u64_or("sampling_rate", 48_000)?.min(u32::MAX as u64) as u32;
        let hop = fe.u64_or("hop_length", 480)? as usize;
        let n_fft = fe.u64_or("fft_window_size", 1024)? as usize;
        let seconds = fe.u64_or("max_length_s", 10)?;
        let range = (
            fe.f64_or("frequency_min", 0.0)?,
            fe.f64_or("frequency_max", 14_000.0)?,
        );
        let truncation = match fe.str_or("truncation", "fusion")? {
            "fusion" => Truncation::Fusion,
            "rand_trunc" => Truncation::RandTrunc,
            other => return Err(bad(format!("truncation `{other}` is not implemented"))),
        };
        let padding = match fe.str_or("padding", "repeatpad")? {
            "repeatpad" => Padding::RepeatPad,
            "repeat" => Padding::Repeat,
            "pad" => Padding::Pad,
            other => return Err(bad(format!("padding `{other}` is not implemented"))),
        };
        if n_mels == 0 || n_mels > 1024 || !(range.0 >= 0.0 && range.0 <= range.1) {
            return Err(bad(format!(
                "feature_size {n_mels}, frequencies {}..{} out of range",
                range.0, range.1
            )));
        }
        let max_samples = seconds.saturating_mul(rate as u64);
        if max_samples == 0 || max_samples > 3600 * 48_000 {
            return Err(bad(format!(
                "max_length_s {seconds} at {rate} Hz out of range"
            )));
        }
        let stft = Stft::new(n_fft, hop)?;
        let filters = match truncation {
            Truncation::Fusion => {
                mel_filters(stft.bins(), n_mels, rate, range, MelScale::Htk, false)
            }
            Truncation::RandTrunc => {
                mel_filters(stft.bins(), n_mels, rate, range, MelScale::Slaney, true)
            }
        };
        Ok(ClapFeatures {
            rate,
            n_mels,
            max_samples: max_samples as usize,
            truncation,
            padding,
            stft,
            filters,
        })
    }

    /// Channels of every clip's features.
    pub fn channels(&self) -> usize {
        match self.truncation {
            Truncation::Fusion => 4,
            Truncation::RandTrunc => 1,
        }
    }

    /// Frames of every clip's features.
    pub fn frames(&self) -> usize {
        self.stft.frames(self.max_samples)
    }

    /// The dB spectrogram [frames, mels] of a whole waveform.
    fn spectrogram(&self, clip: &[f64]) -> Vec<f32> {
        let frames = self.stft.frames(clip.len());
        let mel = self.stft.mel_power(clip, frames, &self.filters);
        let mut out = vec![0f32; frames * self.n_mels];
        for (m, row) in mel.chunks_exact(frames.max(1)).enumerate() {
            for (f, &e) in row.iter().enumerate() {
                out[f * self.n_mels + m] = (10.0 * e.max(1e-10).log10()) as f32;
            }
        }
        out
    }

    /// The features of one clip (mono samples at `rate`).
    pub fn features(&self, x: &[f32]) -> Result<Features, Error> {
        let max = self.max_samples;
        let wave: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        if wave.is_empty() {
            return Err(crate::invalid("the audio has no samples"));
        }
        let fused = self.truncation == Truncation::Fusion;
        let (values, channels, longer) = match (wave.len() > max, self.truncation) {
            (true, Truncation::RandTrunc) => (self.spectrogram(&wave[..max]), 1, true),
            (true, Truncation::Fusion) => self.fusion(&wave)?,
            (false, _) => {
                let mel = self.spectrogram(&self.pad(&wave));
                match fused {
                    true => (mel.repeat(4), 4, true),
                    false => (mel, 1, false),
                }
            }
        };
        let frames = values.len() / (channels * self.n_mels);
        Ok(Features {
            channels,
            frames,
            bins: self.n_mels,
            values,
            longer: longer || fused,
        })
    }

    /// A short waveform padded to `max_samples` as `padding` says.
    fn pad(&self, wave: &[f64]) -> Vec<f64> {
        let max = self.max_samples;
        let repeats = max / wave.len();
        let mut out: Vec<f64> = match self.padding {
            Padding::RepeatPad => wave.repeat(repeats),
            Padding::Repeat => wave.repeat(repeats + 1),
            Padding::Pad => wave.to_vec(),
        };
        out.resize(max, 0.0);
        out
    }

    /// "fusion" of a clip longer than `max_samples`: [4, chunk, mels] (the
    /// shrunk whole, then the first, middle and last chunk) and whether
    /// transformers calls it longer.
    fn fusion(&self, wave: &[f64]) -> Result<(Vec<f32>, usize, bool), Error> {
        let mel = self.spectrogram(wave);
        let bins = self.n_mels;
        let total = mel.len() / bins;
        let chunk = self.max_samples / self.stft.hop + 1;
        if chunk >= total {
            // Longer than the maximum by less than a hop: the whole clip.
            let one = mel[..chunk.min(total) * bins].to_vec();
            return Ok((one.repeat(4), 4, false));
        }
        if bins != FUSION_BINS {
            return Err(Error::Unsupported(format!(
                "\"fusion\" of audio longer than the model's maximum resizes it to {FUSION_BINS} mel \
                 bins (transformers' constant); this extractor has {bins}"
            )));
        }
        let starts = thirds(total - chunk + 1);
        let mut out = bilinear_frames(&mel, total, chunk, bins);
        for s in starts {
            out.extend_from_slice(&mel[s * bins..(s + chunk) * bins]);
        }
        Ok((out, 4, true))
    }
}

/// The first start of each of numpy's `array_split(range(n), 3)` parts (an
/// empty part takes start 0, as transformers does).
fn thirds(n: usize) -> [usize; 3] {
    let (base, extra) = (n / 3, n % 3);
    let sizes = [0, 1, 2].map(|i| base + usize::from(i < extra));
    let first = |i: usize| match sizes[i] {
        0 => 0,
        _ => sizes[..i].iter().sum(),
    };
    [first(0), first(1), first(2)]
}

/// Resizes the frame axis of [frames, bins] from `from` to `to` frames,
/// bilinearly with `align_corners=False`, with PyTorch's f32 arithmetic
/// for source positions and weights (`interpolate` on an f32 tensor: in
/// f64 the positions near the end move by 1e-5 frames, 5e-4 dB).
fn bilinear_frames(x: &[f32], from: usize, to: usize, bins: usize) -> Vec<f32> {
    let scale = from as f32 / to as f32;
    let mut out = Vec::with_capacity(to * bins);
    for t in 0..to {
        let src = (scale * (t as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(from - 1);
        let i1 = (i0 + 1).min(from - 1);
        let l1 = (src - i0 as f32).clamp(0.0, 1.0);
        let l0 = 1.0 - l1;
        for b in 0..bins {
            out.push(l0 * x[i0 * bins + b] + l1 * x[i1 * bins + b]);
        }
    }
    out
}

/// PyTorch's cubic convolution weights of a fractional offset `t` (A = -0.75),
/// in f32 as it computes them for f32 tensors.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Features [channels, frames, bins] with the frame axis resized to `to`
/// (bicubic, `align_corners=True`, edges clamped), as `ClapAudioEncoder`
/// resizes a spectrogram narrower than the tower's input. Unchanged when
/// the frames already number `to`.
pub fn resize_frames(f: &Features, to: usize) -> Vec<f32> {
    let (from, bins) = (f.frames, f.bins);
    if from == to || from == 0 {
        return f.values.clone();
    }
    // Positions and weights in f32, as PyTorch computes them for f32.
    let scale = match to > 1 {
        true => (from - 1) as f32 / (to - 1) as f32,
        false => 0.0,
    };
    let mut out = Vec::with_capacity(f.channels * to * bins);
    for ch in f.values.chunks_exact(from * bins) {
        for t in 0..to {
            let real = scale * t as f32;
            let i = real.floor();
            let w = cubic_weights(real - i);
            let rows = [-1i64, 0, 1, 2].map(|k| (i as i64 + k).clamp(0, from as i64 - 1) as usize);
            for b in 0..bins {
                let v: f32 = rows
                    .iter()
                    .zip(&w)
                    .map(|(&r, &w)| w * ch[r * bins + b])
                    .sum();
                out.push(v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirds_match_numpy_array_split() {
        // array_split(range(101), 3): sizes 34, 34, 33.
        assert_eq!(thirds(101), [0, 34, 68]);
        // range(2): sizes 1, 1, 0 -> the empty third takes 0.
        assert_eq!(thirds(2), [0, 1, 0]);
        assert_eq!(thirds(4), [0, 2, 3]);
    }

    #[test]
    fn cubic_weights_sum_to_one_and_interpolate_knots() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let s: f32 = cubic_weights(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        assert_eq!(cubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    /// The features of the committed clips against transformers'
    /// (tests/fixtures/gen_tiny_clap.py: sampled frames and channel sums),
    /// for both truncations and every padding.
    #[test]
    fn features_match_the_transformers_extractor() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let read = |p: &str| std::fs::read(root.join(p)).expect("fixture file");
        for fixture in ["tiny-clap", "tiny-clap-fused"] {
            let reference: serde_json::Value =
                serde_json::from_slice(&read(&format!("{fixture}/reference.json"))).expect("ref");
            let config: serde_json::Value =
                serde_json::from_slice(&read(&format!("{fixture}/preprocessor_config.json")))
                    .expect("config");
            let mut cases = Vec::new();
            for clip in reference["clips"].as_array().expect("clips") {
                let longer = clip["is_longer"].as_bool();
                cases.push((
                    clip["file"].clone(),
                    config.clone(),
                    clip["features"].clone(),
                    longer,
                ));
            }
            if let Some(v) = reference["padding_variants"].as_object() {
                for (padding, want) in v {
                    let mut c = config.clone();
                    c["padding"] = serde_json::json!(padding);
                    cases.push((reference["clips"][0]["file"].clone(), c, want.clone(), None));
                }
            }
            for (file, config, want, longer) in cases {
                let fe = ClapFeatures::from_config(&Json {
                    file: "preprocessor_config.json".into(),
                    value: config,
                })
                .expect("extractor");
                let file = file.as_str().expect("file");
                let audio = crate::audio::decode_wav("audio", &read(&format!("audio/{file}")))
                    .expect("wav");
                let got = fe.features(&audio.samples).expect("features");
                if let Some(longer) = longer {
                    assert_eq!(got.longer, longer, "{fixture} {file}: is_longer");
                }
                let shape = [got.channels, got.frames, got.bins].map(|n| serde_json::json!(n));
                assert_eq!(want["shape"].as_array().expect("shape"), &shape.to_vec());
                let at: Vec<usize> = want["frame_index"]
                    .as_array()
                    .expect("index")
                    .iter()
                    .map(|v| v.as_u64().expect("index") as usize)
                    .collect();
                let mut max = 0f64;
                for (c, frames) in want["frames"]
                    .as_array()
                    .expect("frames")
                    .iter()
                    .enumerate()
                {
                    for (k, row) in frames.as_array().expect("rows").iter().enumerate() {
                        for (m, v) in row.as_array().expect("row").iter().enumerate() {
                            let i = (c * got.frames + at[k]) * got.bins + m;
                            let d = (got.values[i] as f64 - v.as_f64().expect("v")).abs();
                            max = max.max(d);
                        }
                    }
                }
                assert!(max <= 1e-4, "{fixture} {file}: max-abs {max}");
                let plane = got.frames * got.bins;
                for (c, sum) in want["channel_sums"]
                    .as_array()
                    .expect("sums")
                    .iter()
                    .enumerate()
                {
                    let s: f64 = got.values[c * plane..(c + 1) * plane]
                        .iter()
                        .map(|&v| v as f64)
                        .sum();
                    let d = (s - sum.as_f64().expect("sum")).abs() / plane as f64;
                    assert!(
                        d <= 1e-5,
                        "{fixture} {file} channel {c}: mean differs by {d}"
                    );
                }
            }
        }
    }
}
