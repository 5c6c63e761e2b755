//! Audio for speech skills, decoded inside the sandbox: a request's
//! `{"audio": base64 file}` or `{"array": [f32], "sampling_rate": n}` ->
//! mono f32 samples (channels averaged), under a length limit, resampled
//! to the rate the feature extractor wants; then the speech encoders
//! ([`wav2vec2`]), Whisper's log-mel features ([`mel`]), CLAP's features
//! ([`clap_features`]) and its two towers ([`clap`]).
//!
//! Enabled by the SDK's `audio` feature. Files ([`decode`]): WAV (PCM
//! 8/16/24/32-bit scaled by 1 / 2^(bits - 1), IEEE float 32-bit), FLAC,
//! MP3 and OGG/Vorbis, recognised by their first bytes. Audio at another
//! rate than the model's, an `array` or a decoded file alike, goes through
//! [`resample`], torchaudio's default resampler, which is what the
//! transformers pipelines apply to `{"array", "sampling_rate"}` inputs.
//! (The pipelines decode *file bytes* with ffmpeg, which resamples with its
//! own filter while decoding: a file at another rate matches the pipeline
//! given the decoded `array`, not bit for bit the pipeline given the file.)

pub mod alignment;
pub mod clap;
pub mod clap_features;
pub mod decode;
pub mod mel;
pub mod resample;
pub mod wav2vec2;

use serde_json::Value;

use crate::requests::Request;
use crate::{invalid, Error};

/// Longest audio accepted, in seconds at the model's rate.
pub const MAX_SECONDS: u64 = 600;

/// Mono samples at a rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Audio {
    pub rate: u32,
    pub samples: Vec<f32>,
}

pub use decode::decode;

/// Decodes WAV bytes to mono f32 (see [`decode`] for any format).
pub fn decode_wav(field: &str, bytes: &[u8]) -> Result<Audio, Error> {
    let bad = |e: String| invalid(format!("`{field}`: {e}"));
    let mut r = hound::WavReader::new(std::io::Cursor::new(bytes)).map_err(|e| {
        bad(format!(
            "a WAV file this skill cannot read ({e}); send PCM or float WAV, FLAC, MP3, \
             OGG/Vorbis or an `array`"
        ))
    })?;
    let spec = r.spec();
    let channels = spec.channels.max(1) as usize;
    let frames = r.duration() as u64;
    if spec.sample_rate == 0 || frames > MAX_SECONDS * spec.sample_rate as u64 {
        return Err(bad(format!(
            "{frames} frames at {} Hz is over the limit of {MAX_SECONDS} s",
            spec.sample_rate
        )));
    }
    let interleaved: Vec<f32> = match packed_samples(bytes) {
        Some(samples) => samples,
        None => match spec.sample_format {
            hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>(),
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
                r.samples::<i32>()
                    .map(|s| s.map(|v| v as f32 * scale))
                    .collect::<Result<_, _>>()
            }
        }
        .map_err(|e| bad(format!("cannot decode the samples: {e}")))?,
    };
    let samples = interleaved
        .chunks_exact(channels)
        .map(|c| c.iter().sum::<f32>() / channels as f32)
        .collect();
    Ok(Audio {
        rate: spec.sample_rate,
        samples,
    })
}

/// The samples of the two common layouts, 16-bit integers in 2 bytes and
/// 32-bit floats in 4, read straight from the data chunk that hound has
/// validated and found (hound reads one call per sample: about 20 ms for
/// 30 s); `None` for any other layout, which hound then reads.
fn packed_samples(bytes: &[u8]) -> Option<Vec<f32>> {
    let r = hound::WavReader::new(std::io::Cursor::new(bytes)).ok()?;
    let spec = r.spec();
    let count = r.len() as usize;
    let width = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => 2,
        (hound::SampleFormat::Float, 32) => 4,
        _ => return None,
    };
    let start = r.into_inner().position() as usize;
    // The data chunk's length field precedes its first byte: its size per
    // sample tells the packed layout from a wider container.
    let declared = u32::from_le_bytes(bytes.get(start.checked_sub(4)?..start)?.try_into().ok()?);
    if declared as usize != count.checked_mul(width)? {
        return None;
    }
    let data = bytes.get(start..start + count * width)?;
    Some(match width {
        2 => data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
            .collect(),
        _ => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    })
}

/// Highest input rate accepted, in Hz (`sampling_rate` or a file's).
pub const MAX_RATE: u32 = 768_000;

/// The audio of a request: `audio` (a base64 or data-URL WAV, FLAC, MP3 or
/// OGG/Vorbis file) or `array` with `sampling_rate`, resampled to `rate`
/// Hz when it is at another rate ([`resample`]).
pub fn from_request(req: &Request, rate: u32) -> Result<Audio, Error> {
    let audio = match (
        req.0.get("audio").filter(|v| !v.is_null()),
        req.0.get("array").filter(|v| !v.is_null()),
    ) {
        (Some(Value::String(s)), None) => {
            let bytes = crate::binary::base64_bytes("audio", s)?;
            decode("audio", &bytes)?
        }
        (None, Some(Value::Array(a))) => {
            let samples = a
                .iter()
                .map(|v| v.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid("`array` must be a list of numbers"))?;
            let rate = req
                .opt_u64("sampling_rate")?
                .ok_or_else(|| invalid("`array` needs `sampling_rate`"))?;
            if rate == 0 || rate > MAX_RATE as u64 {
                return Err(invalid(format!(
                    "`sampling_rate` {rate} is out of range (1 to {MAX_RATE} Hz)"
                )));
            }
            Audio {
                rate: rate as u32,
                samples,
            }
        }
        (Some(_), None) => return Err(invalid("`audio` must be a base64 string")),
        _ => {
            return Err(invalid(
                "give either `audio` (a base64 WAV, FLAC, MP3 or OGG/Vorbis file) or `array` \
                 with `sampling_rate`",
            ))
        }
    };
    if audio.samples.is_empty() {
        return Err(invalid("the audio has no samples"));
    }
    if audio.rate == 0 || audio.rate > MAX_RATE {
        return Err(invalid(format!(
            "the audio is at {} Hz; rates from 1 to {MAX_RATE} Hz are accepted",
            audio.rate
        )));
    }
    if audio.samples.len() as u64 > MAX_SECONDS * audio.rate as u64 {
        return Err(invalid(format!("the audio is longer than {MAX_SECONDS} s")));
    }
    if audio.samples.iter().any(|x| !x.is_finite()) {
        return Err(invalid("the audio has non-finite samples"));
    }
    if audio.rate == rate {
        return Ok(audio);
    }
    let samples = resample::Resampler::new(audio.rate, rate)?.apply(&audio.samples);
    if samples.is_empty() {
        return Err(invalid("the audio has no samples"));
    }
    Ok(Audio { rate, samples })
}

/// Wav2Vec2's feature extractor normalisation: zero mean, unit variance
/// (`(x - mean) / sqrt(var + 1e-7)`).
pub fn zero_mean_unit_var(x: &[f32]) -> Vec<f32> {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let (mean, den) = (mean as f32, ((var as f32) + 1e-7).sqrt());
    x.iter().map(|&v| (v - mean) / den).collect()
}

/// The model's feature extractor (`preprocessor_config.json`): its rate and
/// whether it normalises the waveform.
#[derive(Clone, Copy, Debug)]
pub struct Extractor {
    pub rate: u32,
    pub normalize: bool,
}

impl Extractor {
    pub fn read() -> Result<Extractor, Error> {
        let fe = crate::config::Json::processor(crate::config::Processor::FeatureExtractor)?;
        Ok(Extractor {
            rate: fe.u64_or("sampling_rate", 16000)?.min(u32::MAX as u64) as u32,
            normalize: fe.bool_or("do_normalize", true)?,
        })
    }

    /// The graph input `input_values` [1, samples] of one clip.
    pub fn inputs(&self, a: &Audio) -> Vec<crate::NamedTensor> {
        let x = match self.normalize {
            true => zero_mean_unit_var(&a.samples),
            false => a.samples.clone(),
        };
        vec![crate::NamedTensor {
            name: "input_values".into(),
            value: crate::tensors::f32_tensor(vec![1, x.len() as u64], &x),
        }]
    }
}
