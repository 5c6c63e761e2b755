//! One decoding pass: each request's 30 s window of features (from frame
//! `seek`, zero-padded past the end) through the encoder, then its decoder
//! prompt on the shared generation loop; the requests of a batch run
//! together ([`run_pass`]).

use skill_sdk::runtime::Session;
use skill_sdk::seq2seq::run::{self, Finish, Finished, Task};
use skill_sdk::tensors::{f32_tensor, i64_tensor};
use skill_sdk::{Error, NamedTensor};

use super::Whisper;

/// Feature frames per encoder position (the second convolution's stride).
pub const STRIDE: usize = 2;

/// One pass's result for a request.
pub struct PassOut {
    pub tokens: Vec<i64>,
    pub finish: Finish,
    /// The decoder prompt as run (a detected language filled in).
    pub prompt: Vec<i64>,
    pub logprob_sum: Option<f64>,
    pub logits_at: Option<Vec<f32>>,
}

/// The encoder inputs of one pass: each job's window of features.
struct PassTask<'a> {
    w: &'a Whisper,
    windows: &'a [Vec<f32>],
}

impl Task for PassTask<'_> {
    type Answer = PassOut;

    fn encode(&self, session: &Session, jobs: &[usize], rows: &[usize]) -> Result<usize, Error> {
        let mel = &self.w.mel;
        let frames = mel.frames();
        let b = jobs.len() as u64;
        let mut feats = Vec::with_capacity(jobs.len() * mel.n_mels * frames);
        let mut row_of = Vec::new();
        for (i, &j) in jobs.iter().enumerate() {
            feats.extend_from_slice(&self.windows[j]);
            row_of.extend(std::iter::repeat_n(i as i64, rows[i]));
        }
        let positions = (frames / STRIDE) as u64;
        let inputs = vec![
            named(
                "input_features",
                f32_tensor(vec![b, mel.n_mels as u64, frames as u64], &feats),
            ),
            named(
                "attention_mask",
                i64_tensor(vec![b, positions], &vec![1; (b * positions) as usize]),
            ),
            named("rows", i64_tensor(vec![row_of.len() as u64], &row_of)),
        ];
        session.run(&self.w.encode, &inputs)?;
        Ok(positions as usize)
    }

    fn text(&self, tokens: &[i64]) -> Result<String, Error> {
        self.w.text(tokens)
    }

    fn respond(&self, _job: usize, done: &Finished) -> Result<PassOut, Error> {
        Ok(PassOut {
            tokens: done.tokens.clone(),
            finish: done.finish,
            prompt: done.prompt.clone(),
            logprob_sum: done.logprob_sum,
            logits_at: done.logits_at.clone(),
        })
    }
}

fn named(name: &str, value: skill_sdk::Tensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        value,
    }
}

/// Runs `jobs`, each on its window of features (`windows[i]`, from
/// [`window`]).
pub fn run_pass(
    w: &Whisper,
    jobs: Vec<run::Job>,
    windows: &[Vec<f32>],
) -> Result<Vec<Result<PassOut, Error>>, Error> {
    run::generate(&w.decoder, &PassTask { w, windows }, jobs)
}

/// The window of `width` frames from frame `seek` of `features` [mels,
/// total], zero-padded past the end.
pub fn window(features: &[f32], mels: usize, total: usize, width: usize, seek: usize) -> Vec<f32> {
    let mut out = vec![0f32; mels * width];
    for m in 0..mels {
        let row = features.get(m * total..(m + 1) * total).unwrap_or(&[]);
        let src = row.get(seek..).unwrap_or(&[]);
        let n = src.len().min(width);
        out[m * width..m * width + n].copy_from_slice(&src[..n]);
    }
    out
}
