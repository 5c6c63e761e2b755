//! Token times of decoded windows, as transformers' Whisper `generate` gives
//! them with `return_token_timestamps` (`_extract_token_timestamps`): the
//! window encoded again, then one forced-alignment pass of the decoder over
//! its prompt and generated tokens
//! ([`skill_sdk::seq2seq::Seq2Seq::align_graph`]) for the cross-attention
//! of the checkpoint's `alignment_heads`; the rows of the generated tokens
//! fed back (all but the last), cropped to the window's audio positions
//! (`(num_frames - seek) // 2`, twice: a negative count, for a window past
//! the audio's end, crops from the end as Python's slice does, and again
//! from what is left), normalised, median-filtered and aligned by DTW
//! ([`skill_sdk::audio::alignment::jump_times`]). Generated token `k` takes
//! the time of row `k` (the last one repeats the one before; with nothing
//! fed back every time is 0), plus the window's offset (`seek * 0.01` s).

use skill_sdk::audio::alignment::jump_times;
use skill_sdk::runtime::{CompiledGraph, Session};
use skill_sdk::tensors::{f32_tensor, f32_values, i64_tensor, take};
use skill_sdk::{Error, NamedTensor};

use super::window::{window, STRIDE};
use super::{Job, Whisper};

/// transformers' `time_precision` of token timestamps (s per position).
const PRECISION: f64 = 0.02;
/// Bytes of attention weights one alignment run may return ([rows, heads,
/// seq, positions] f32): windows are aligned together up to this (one at
/// least).
const WEIGHTS_BUDGET: usize = 64 << 20;

/// A decoded window whose tokens are timed.
pub struct Window {
    /// Its first feature frame.
    pub seek: usize,
    /// The decoder prompt as run (previous text included).
    pub prompt: Vec<i64>,
    /// The generated tokens (end of text included).
    pub generated: Vec<i64>,
}

/// The alignment heads and filter of a checkpoint.
pub struct Alignment {
    pub heads: Vec<(u64, u64)>,
    /// `median_filter_width` (config.json; 7).
    pub width: usize,
    graph: std::cell::OnceCell<CompiledGraph>,
}

impl Alignment {
    pub fn new(heads: Vec<(u64, u64)>, width: usize) -> Alignment {
        Alignment {
            heads,
            width,
            graph: std::cell::OnceCell::new(),
        }
    }
}

fn named(name: &str, value: skill_sdk::Tensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        value,
    }
}

/// Python's `x[..., :k]` length along an axis of `len`.
fn crop(k: i64, len: usize) -> usize {
    match k >= 0 {
        true => (k as usize).min(len),
        false => (len as i64 + k).max(0) as usize,
    }
}

/// Times (s, window offset included) of each generated token of each
/// window of `job` (`windows`, in order).
pub fn token_times(w: &Whisper, job: &Job, windows: &[&Window]) -> Result<Vec<Vec<f64>>, Error> {
    let a = w.alignment.as_ref().ok_or_else(|| {
        Error::Unsupported("this checkpoint has no `alignment_heads`: no word timestamps".into())
    })?;
    if a.graph.get().is_none() {
        let g = w.decoder.model.align_graph(&a.heads)?;
        let _ = a.graph.set(g);
    }
    let graph = a
        .graph
        .get()
        .ok_or_else(|| skill_sdk::internal("alignment graph missing"))?;
    let row_bytes = |win: &Window| {
        let seq = win.prompt.len() + win.generated.len();
        a.heads.len() * seq * (w.mel.frames() / STRIDE) * 4
    };
    let mut out = Vec::with_capacity(windows.len());
    let mut from = 0;
    while from < windows.len() {
        let mut to = from + 1;
        let mut widest = row_bytes(windows[from]);
        while to < windows.len() {
            widest = widest.max(row_bytes(windows[to]));
            if widest * (to + 1 - from) > WEIGHTS_BUDGET {
                break;
            }
            to += 1;
        }
        out.extend(align_group(w, a, graph, job, &windows[from..to])?);
        from = to;
    }
    Ok(out)
}

fn align_group(
    w: &Whisper,
    a: &Alignment,
    graph: &CompiledGraph,
    job: &Job,
    group: &[&Window],
) -> Result<Vec<Vec<f64>>, Error> {
    let mel = &w.mel;
    let frames = mel.frames();
    let positions = frames / STRIDE;
    let b = group.len();
    let mut feats = Vec::with_capacity(b * mel.n_mels * frames);
    for win in group {
        feats.extend(window(
            &job.features,
            mel.n_mels,
            job.frames,
            frames,
            win.seek,
        ));
    }
    // Each row: the prompt and every generated token but the last.
    let fed = |win: &Window| win.prompt.len() + win.generated.len().saturating_sub(1);
    let seq = group.iter().map(|w| fed(w)).max().unwrap_or(0).max(1);
    let pad = job.settings.pad;
    let mut ids = Vec::with_capacity(b * seq);
    for win in group {
        let n = win.generated.len().saturating_sub(1);
        ids.extend(win.prompt.iter().chain(&win.generated[..n]).copied());
        ids.extend(std::iter::repeat_n(pad, seq - fed(win)));
    }
    let (bu, pu) = (b as u64, positions as u64);
    let session = Session::new();
    let rows: Vec<i64> = (0..b as i64).collect();
    session.run(
        &w.encode,
        &[
            named(
                "input_features",
                f32_tensor(vec![bu, mel.n_mels as u64, frames as u64], &feats),
            ),
            named(
                "attention_mask",
                i64_tensor(vec![bu, pu], &vec![1; b * positions]),
            ),
            named("rows", i64_tensor(vec![bu], &rows)),
        ],
    )?;
    let offset = w.decoder.model.position_offset();
    let pos: Vec<i64> = (0..seq as i64).map(|p| p + offset).collect();
    let outputs = session.run(
        graph,
        &[
            named("input_ids", i64_tensor(vec![bu, seq as u64], &ids)),
            named("positions", i64_tensor(vec![seq as u64], &pos)),
        ],
    )?;
    let weights = f32_values(&take(outputs, "alignment")?)?;
    let heads = a.heads.len();
    let source = weights.len() / (b * heads * seq).max(1);
    if source * b * heads * seq != weights.len() || source == 0 {
        return Err(skill_sdk::internal(format!(
            "alignment weights of {} values for {b} rows x {heads} heads x {seq} tokens",
            weights.len()
        )));
    }
    let mut out = Vec::with_capacity(b);
    for (r, win) in group.iter().enumerate() {
        let rows = win.generated.len().saturating_sub(1);
        let first = win.prompt.len();
        let mut m = Vec::with_capacity(heads * rows * source);
        for h in 0..heads {
            let at = ((r * heads + h) * seq + first) * source;
            let block = weights
                .get(at..at + rows * source)
                .ok_or_else(|| skill_sdk::internal("alignment rows out of range"))?;
            m.extend_from_slice(block);
        }
        let k = (job.audio_frames as i64 - win.seek as i64).div_euclid(STRIDE as i64);
        // Cropped twice (once for the batch, once per row), which only
        // matters for a negative count: a window past the audio's end.
        let keep = crop(k, crop(k, source));
        let jumps = match (rows, keep) {
            (0, _) => Vec::new(),
            // No position left: the path runs along the border (-1).
            (_, 0) => vec![-PRECISION; rows],
            _ => jump_times(&m, heads, rows, source, keep, a.width, PRECISION),
        };
        if rows > 0 && jumps.len() != rows {
            return Err(skill_sdk::internal(format!(
                "{} token times for {rows} aligned tokens",
                jumps.len()
            )));
        }
        let shift = win.seek as f64 * PRECISION / STRIDE as f64;
        let times = (0..win.generated.len())
            .map(|i| {
                let t = match jumps.len() {
                    0 => 0.0,
                    n => jumps[i.min(n - 1)],
                };
                // float32 token times plus the (0-d float64) offset: float32.
                (t as f32 + shift as f32) as f64
            })
            .collect();
        out.push(times);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::crop;

    #[test]
    fn crops_as_python_slices() {
        assert_eq!(crop(65, 1500), 65);
        assert_eq!(crop(1800, 1500), 1500);
        assert_eq!(crop(-988, 1500), 512);
        assert_eq!(crop(-2000, 1500), 0);
    }
}
