//! Decoding passes over a request's features, as transformers' Whisper
//! `generate` runs them (short- and long-form alike): a pass decodes the
//! window of 30 s from frame `seek` (zero-padded past the end); when its
//! tokens end on a pair of timestamps (a segment closed, more audio after
//! it), the transcript keeps the tokens up to that pair and the next pass
//! starts at the last timestamp; otherwise (a single closing timestamp, or
//! no timestamp pair) the next pass starts after the window. Requests of a
//! batch run each pass together.

use skill_sdk::runtime::Session;
use skill_sdk::seq2seq::run::{self, Finish, Finished, PromptToken, Task};
use skill_sdk::tensors::{f32_tensor, i64_tensor};
use skill_sdk::{Error, NamedTensor, Response};

use super::{chunks, Job, Whisper};

/// Feature frames per encoder position (the second convolution's stride).
const STRIDE: usize = 2;

/// One pass's result for a request.
struct PassOut {
    tokens: Vec<i64>,
    finish: Finish,
    prompt: Vec<i64>,
}

/// The encoder inputs of one pass: each job's window of features.
struct PassTask<'a> {
    w: &'a Whisper,
    windows: Vec<Vec<f32>>,
}

impl Task for PassTask<'_> {
    type Answer = PassOut;

    fn encode(&self, session: &Session, jobs: &[usize], rows: &[usize]) -> Result<(), Error> {
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
        Ok(())
    }

    fn text(&self, tokens: &[i64]) -> Result<String, Error> {
        self.w.text(tokens)
    }

    fn respond(&self, _job: usize, done: &Finished) -> Result<PassOut, Error> {
        Ok(PassOut {
            tokens: done.tokens.clone(),
            finish: done.finish,
            prompt: done.prompt.clone(),
        })
    }
}

fn named(name: &str, value: skill_sdk::Tensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        value,
    }
}

/// The window of `width` frames from frame `seek` of `features` [mels,
/// total], zero-padded past the end.
fn window(features: &[f32], mels: usize, total: usize, width: usize, seek: usize) -> Vec<f32> {
    let mut out = vec![0f32; mels * width];
    for m in 0..mels {
        let row = features.get(m * total..(m + 1) * total).unwrap_or(&[]);
        let src = row.get(seek..).unwrap_or(&[]);
        let n = src.len().min(width);
        out[m * width..m * width + n].copy_from_slice(&src[..n]);
    }
    out
}

/// How a pass's tokens continue the transcript (transformers'
/// `_retrieve_segment`): the tokens kept and how many frames the window
/// advances.
fn segment(tokens: &[i64], begin: i64, left: usize) -> (usize, usize) {
    let ts: Vec<bool> = tokens.iter().map(|&t| t >= begin).collect();
    let single_ending = ts.len() >= 2 && !ts[ts.len() - 2] && ts[ts.len() - 1];
    let mut cuts: Vec<usize> = (0..ts.len().saturating_sub(1))
        .filter(|&i| ts[i] && ts[i + 1])
        .map(|i| i + 1)
        .collect();
    let Some(last) = cuts.last_mut() else {
        return (tokens.len(), left);
    };
    if single_ending {
        return (tokens.len(), left);
    }
    *last += 1;
    let kept = *last;
    let at = (tokens[kept - 2] - begin).max(0) as usize * STRIDE;
    (kept, at)
}

/// Where one request stands.
struct State {
    seek: usize,
    tokens: Vec<i64>,
    finish: Finish,
    prompt: Vec<i64>,
    error: Option<Error>,
    done: bool,
}

/// Transcribes `jobs` (host batch order); one response each.
pub fn transcribe(w: &Whisper, jobs: &[Job]) -> Result<Vec<Result<Response, Error>>, Error> {
    let mel = &w.mel;
    let frames = mel.frames();
    let begin = w.ids.rules.map_or(i64::MAX, |r| r.begin);
    let eos = jobs
        .first()
        .map(|j| j.settings.eos.clone())
        .unwrap_or_default();
    let mut states: Vec<State> = jobs
        .iter()
        .map(|_| State {
            seek: 0,
            tokens: Vec::new(),
            finish: Finish::Length,
            prompt: Vec::new(),
            error: None,
            done: false,
        })
        .collect();
    loop {
        let pending: Vec<usize> = (0..jobs.len()).filter(|&i| !states[i].done).collect();
        if pending.is_empty() {
            break;
        }
        let run_jobs: Vec<run::Job> = pending
            .iter()
            .map(|&i| run::Job {
                settings: &jobs[i].settings,
                prompt: match states[i].prompt.is_empty() {
                    true => jobs[i].prompt.clone(),
                    // Later passes keep the first pass's language.
                    false => states[i]
                        .prompt
                        .iter()
                        .map(|&t| PromptToken::Fixed(t))
                        .collect(),
                },
                source: &[],
                timestamps: jobs[i].timestamps,
                return_logits: false,
                index: None,
            })
            .collect();
        let task = PassTask {
            w,
            windows: pending
                .iter()
                .map(|&i| {
                    let j = &jobs[i];
                    window(&j.features, mel.n_mels, j.frames, frames, states[i].seek)
                })
                .collect(),
        };
        let answers = run::generate(&w.decoder, &task, &run_jobs)?;
        for (&i, answer) in pending.iter().zip(answers) {
            let s = &mut states[i];
            let out = match answer {
                Ok(o) => o,
                Err(e) => {
                    s.error = Some(e);
                    s.done = true;
                    continue;
                }
            };
            let mut toks = out.tokens;
            if toks.last().is_some_and(|t| eos.contains(t)) {
                toks.pop();
            }
            let total = jobs[i].frames;
            let left = total.saturating_sub(s.seek).min(frames);
            let (kept, advance) = segment(&toks, begin, left);
            s.tokens.extend_from_slice(&toks[..kept]);
            if s.prompt.is_empty() {
                s.prompt = out.prompt;
            }
            s.finish = out.finish;
            s.seek += advance;
            // No progress (a pair at 0.00) would decode the same again.
            s.done = s.seek >= total || advance == 0;
        }
    }
    Ok(states
        .into_iter()
        .zip(jobs)
        .map(|(s, job)| match s.error {
            Some(e) => Err(e),
            None => respond(w, job, s),
        })
        .collect())
}

fn respond(w: &Whisper, job: &Job, s: State) -> Result<Response, Error> {
    let precision = w.mel.samples as f64 / w.mel.rate as f64 / (w.mel.frames() / STRIDE) as f64;
    let begin = w.ids.rules.map_or(i64::MAX, |r| r.begin);
    let text_end = job.settings.eos.first().copied().unwrap_or(begin);
    let steps = (w.mel.frames() / STRIDE) as f64;
    let (text, parts) =
        chunks::assemble(&s.tokens, text_end, begin, precision, steps, |t| w.text(t))?;
    let language = s
        .prompt
        .iter()
        .find_map(|t| w.ids.languages.iter().find(|(_, id)| id == t))
        .map(|(code, _)| code.clone());
    let mut json = serde_json::json!({
        "text": text,
        "token_ids": s.tokens,
        "finish_reason": s.finish.as_str(),
        "language": language,
        "duration": job.duration,
    });
    if job.chunks {
        json["chunks"] = serde_json::Value::Array(
            parts
                .iter()
                .map(|c| serde_json::json!({"text": c.text, "timestamp": [c.start, c.end]}))
                .collect(),
        );
    }
    Ok(Response {
        json: json.to_string(),
        tensors: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn segments_as_transformers_cuts_them() {
        // begin 100: a single closing timestamp keeps all, window done.
        assert_eq!(segment(&[100, 5, 6, 120], 100, 3000), (4, 3000));
        // Ends on a pair: keep through the pair, seek to its first timestamp.
        assert_eq!(segment(&[100, 5, 120, 121, 7], 100, 3000), (4, 40));
        assert_eq!(segment(&[100, 5, 120, 121], 100, 3000), (4, 40));
        // No pair: everything, window done.
        assert_eq!(segment(&[5, 6, 7], 100, 3000), (3, 3000));
    }
}
