//! A batch's transcription, window after window, as transformers' Whisper
//! `generate` runs it (short- and long-form alike). A pass decodes each
//! unfinished request's window from frame `seek` after its decoder prompt
//! (previous text, [`super::context`], then `<|startoftranscript|>`, the
//! language, task and timestamp tokens). An attempt the fallback thresholds
//! reject is decoded again at the next temperature, on the same window and
//! prompt ([`skill_sdk::generation::fallback`]); a silent one is skipped.
//! Otherwise its tokens split into segments: when they end on a pair of
//! timestamps (a segment closed, more audio after it) the segments up to
//! that pair are kept and the next window starts at the last timestamp;
//! otherwise (a single closing timestamp, or no pair) all are kept and the
//! next window starts after this one.
//!
//! When a `prompt` precedes the start token and the language is to be
//! detected, it is detected first from `<|startoftranscript|>` alone on the
//! first window, as transformers' `detect_language` does.
//!
//! Word timestamps: each window kept is recorded (its prompt and tokens)
//! and aligned once the transcript is done ([`super::align`]); the chunks
//! are then cut into timed words ([`super::words`]).

use serde_json::{json, Value};
use skill_sdk::generation::fallback::{self, Measures, Verdict};
use skill_sdk::generation::settings::Settings;
use skill_sdk::seq2seq::run::{self, Finish, PromptToken};
use skill_sdk::{Error, Response};

use super::align::{self, Window};
use super::context::{split, Context};
use super::window::{run_pass, window, PassOut, STRIDE};
use super::{chunks, Job, Whisper};

/// Where one request stands.
struct State {
    seek: usize,
    /// Segments kept so far (the transcript is their concatenation).
    segments: Vec<Vec<i64>>,
    finish: Finish,
    /// The decoder prompt from the start token on, once resolved.
    init: Option<Vec<i64>>,
    error: Option<Error>,
    done: bool,
    /// The current window's attempt.
    attempt: usize,
    /// The current window's decoder prompt and where its start token is.
    prompt: Option<(Vec<PromptToken>, usize)>,
    /// An attempt sampled: later ones use one beam (transformers' generation
    /// config keeps `num_beams` 1).
    sampled: bool,
    /// Condition the next window on the previous text.
    condition: bool,
    /// Generation calls so far (each samples from its own seed).
    calls: u64,
    /// Each attempt's measures and verdict, for the answer.
    attempts: Vec<Value>,
    /// Word timestamps: the windows kept and how many of their tokens.
    windows: Vec<(Window, usize)>,
}

fn fixed(tokens: &[i64]) -> Vec<PromptToken> {
    tokens.iter().map(|&t| PromptToken::Fixed(t)).collect()
}

/// Transcribes `jobs` (host batch order); one response each.
pub fn transcribe(w: &Whisper, jobs: &[Job]) -> Result<Vec<Result<Response, Error>>, Error> {
    let mut states: Vec<State> = jobs
        .iter()
        .map(|j| State {
            seek: 0,
            segments: Vec::new(),
            finish: Finish::Length,
            init: None,
            error: None,
            done: false,
            attempt: 0,
            prompt: None,
            sampled: false,
            condition: j.condition,
            calls: 0,
            attempts: Vec::new(),
            windows: Vec::new(),
        })
        .collect();
    detect_languages(w, jobs, &mut states)?;
    loop {
        let pending: Vec<usize> = (0..jobs.len()).filter(|&i| !states[i].done).collect();
        if pending.is_empty() {
            break;
        }
        let mut runs: Vec<(usize, Settings, Vec<PromptToken>, usize)> = Vec::new();
        for &i in &pending {
            match attempt_settings(w, &jobs[i], &mut states[i]) {
                Ok((settings, prompt, sot)) => runs.push((i, settings, prompt, sot)),
                Err(e) => {
                    states[i].error = Some(e);
                    states[i].done = true;
                }
            }
        }
        let frames = w.mel.frames();
        let run_jobs: Vec<run::Job> = runs
            .iter()
            .map(|(i, settings, prompt, sot)| {
                let j = &jobs[*i];
                run::Job {
                    settings: settings.clone(),
                    prompt: prompt.clone(),
                    source: Vec::new(),
                    timestamps: j.timestamps,
                    return_logits: false,
                    scores: j.thresholds.logprob.is_some(),
                    logits_at: j.thresholds.no_speech.map(|_| *sot),
                    index: None,
                }
            })
            .collect();
        let windows: Vec<Vec<f32>> = runs
            .iter()
            .map(|(i, ..)| {
                let j = &jobs[*i];
                window(&j.features, w.mel.n_mels, j.frames, frames, states[*i].seek)
            })
            .collect();
        let answers = run_pass(w, run_jobs, &windows)?;
        for ((i, settings, _, sot), answer) in runs.iter().zip(answers) {
            let s = &mut states[*i];
            match answer {
                Ok(out) => take(w, &jobs[*i], s, settings, *sot, out),
                Err(e) => {
                    s.error = Some(e);
                    s.done = true;
                }
            }
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

/// Detects the language first where a prompt precedes the start token.
fn detect_languages(w: &Whisper, jobs: &[Job], states: &mut [State]) -> Result<(), Error> {
    let at = |j: &Job| {
        j.prompt
            .iter()
            .position(|t| matches!(t, PromptToken::Best(_)))
    };
    let want: Vec<usize> = (0..jobs.len())
        .filter(|&i| !jobs[i].prompt_ids.is_empty() && at(&jobs[i]).is_some())
        .collect();
    if want.is_empty() {
        return Ok(());
    }
    let settings: Vec<Settings> = want
        .iter()
        .map(|&i| {
            let mut s = jobs[i].settings.clone();
            s.num_beams = 1;
            s.max_new_tokens = 1;
            s.sampling.do_sample = false;
            s
        })
        .collect();
    let run_jobs: Vec<run::Job> = want
        .iter()
        .zip(&settings)
        .map(|(&i, settings)| run::Job {
            settings: settings.clone(),
            prompt: jobs[i].prompt[..=at(&jobs[i]).unwrap_or(0)].to_vec(),
            source: Vec::new(),
            timestamps: None,
            return_logits: false,
            scores: false,
            logits_at: None,
            index: None,
        })
        .collect();
    let frames = w.mel.frames();
    let windows: Vec<Vec<f32>> = want
        .iter()
        .map(|&i| window(&jobs[i].features, w.mel.n_mels, jobs[i].frames, frames, 0))
        .collect();
    for (&i, answer) in want.iter().zip(run_pass(w, run_jobs, &windows)?) {
        let j = &jobs[i];
        match answer {
            Ok(out) => {
                let rest = &j.prompt[out.prompt.len().min(j.prompt.len())..];
                let mut init = out.prompt;
                for t in rest {
                    match t {
                        PromptToken::Fixed(t) => init.push(*t),
                        PromptToken::Best(_) => {
                            return Err(skill_sdk::internal("two chosen tokens in a prompt"))
                        }
                    }
                }
                states[i].init = Some(init);
            }
            Err(e) => {
                states[i].error = Some(e);
                states[i].done = true;
            }
        }
    }
    Ok(())
}

/// The settings and decoder prompt of a request's next attempt (the
/// window's prompt is built on its first attempt and kept for the others),
/// and where the start token is in it.
fn attempt_settings(
    w: &Whisper,
    j: &Job,
    s: &mut State,
) -> Result<(Settings, Vec<PromptToken>, usize), Error> {
    if s.prompt.is_none() {
        let ctx = Context {
            prompt_ids: &j.prompt_ids,
            all_segments: j.all_segments,
            prev_sot: w.ids.prev_sot,
            begin: w.begin(),
            cut_off: (w.ids.max_target / 2).saturating_sub(1) as usize,
        };
        let prev = ctx.previous(&s.segments, s.condition);
        let mut prompt = fixed(&prev);
        match &s.init {
            Some(init) => prompt.extend(fixed(init)),
            None => prompt.extend(j.prompt.iter().cloned()),
        }
        s.prompt = Some((prompt, prev.len()));
    }
    let (prompt, sot) = s.prompt.clone().unwrap_or_default();
    let t = j.temperatures.get(s.attempt).copied().unwrap_or(0.0);
    let sample = t > 0.0;
    s.sampled |= sample;
    let mut settings = j.settings.clone();
    settings.max_new_tokens = j.limit.new_tokens(prompt.len(), w.ids.max_target)?;
    settings.sampling.do_sample = sample;
    settings.sampling.temperature = if sample { t as f32 } else { 1.0 };
    settings.num_beams = if s.sampled { 1 } else { j.beams };
    settings.sampling.seed = j.settings.sampling.seed ^ s.calls.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    s.calls += 1;
    Ok((settings, prompt, sot))
}

/// Takes one attempt's result: another attempt, a skipped window, or the
/// window's segments.
fn take(w: &Whisper, j: &Job, s: &mut State, settings: &Settings, sot: usize, out: PassOut) {
    if s.init.is_none() {
        s.init = Some(out.prompt.get(sot..).unwrap_or(&[]).to_vec());
    }
    let t = j.temperatures.get(s.attempt).copied().unwrap_or(0.0);
    s.condition = j.condition && t < 0.5;
    let measures = Measures {
        compression_ratio: fallback::compression_ratio(&out.tokens, w.decoder.model.dims.vocab),
        avg_logprob: out
            .logprob_sum
            .map(|sum| sum / out.tokens.len().max(1) as f64),
        no_speech: match (&out.logits_at, w.ids.no_speech) {
            (Some(l), Some(token)) => fallback::probability(l, token),
            _ => None,
        },
    };
    let verdict = j.thresholds.judge(&measures);
    let total = j.frames;
    let frames = w.mel.frames();
    let left = total.saturating_sub(s.seek).min(frames);
    let retry = verdict == Verdict::Retry && s.attempt + 1 < j.temperatures.len();
    s.attempts.push(json!({
        "start": s.seek as f64 * w.mel.samples as f64 / w.mel.rate as f64 / frames as f64,
        "temperature": t,
        "beams": settings.num_beams,
        "compression_ratio": measures.compression_ratio,
        "avg_logprob": measures.avg_logprob,
        "no_speech_prob": measures.no_speech,
        // transformers' `_need_fallback` (the last temperature's attempt
        // is kept even when it asks for another).
        "verdict": match verdict {
            Verdict::Skip => "skip",
            Verdict::Retry => "fallback",
            Verdict::Accept => "ok",
        },
    }));
    if retry {
        s.attempt += 1;
        return;
    }
    s.attempt = 0;
    s.prompt = None;
    s.finish = out.finish;
    if verdict == Verdict::Skip {
        s.seek += left;
        s.done = s.seek >= total || left == 0;
        return;
    }
    let generated = match j.words {
        true => out.tokens.clone(),
        false => Vec::new(),
    };
    let mut toks = out.tokens;
    if toks.last().is_some_and(|t| j.settings.eos.contains(t)) {
        toks.pop();
    }
    let begin = w.begin();
    let (kept, advance) = continuation(&toks, begin, left);
    if j.words {
        let window = Window {
            seek: s.seek,
            prompt: out.prompt,
            generated,
        };
        s.windows.push((window, kept));
    }
    let mut from = 0;
    for cut in split(&toks[..kept], begin) {
        s.segments.push(toks[from..cut].to_vec());
        from = cut;
    }
    s.seek += advance;
    // No progress (a pair at 0.00) would decode the same again.
    s.done = s.seek >= total || advance == 0;
}

/// How a window's tokens continue the transcript (`_retrieve_segment`):
/// the tokens kept and how many frames the window advances.
fn continuation(tokens: &[i64], begin: i64, left: usize) -> (usize, usize) {
    let ts = |i: usize| tokens[i] >= begin;
    let n = tokens.len();
    let pair = (1..n).any(|i| ts(i - 1) && ts(i));
    let single_ending = n >= 2 && !ts(n - 2) && ts(n - 1);
    if !pair || single_ending {
        return (n, left);
    }
    let kept = split(tokens, begin).last().copied().unwrap_or(n);
    let at = (tokens[kept - 2] - begin).max(0) as usize * STRIDE;
    (kept, at)
}

fn respond(w: &Whisper, job: &Job, s: State) -> Result<Response, Error> {
    let precision = w.mel.samples as f64 / w.mel.rate as f64 / (w.mel.frames() / STRIDE) as f64;
    let begin = w.begin();
    let text_end = job.settings.eos.first().copied().unwrap_or(begin);
    let steps = (w.mel.frames() / STRIDE) as f64;
    let tokens: Vec<i64> = s.segments.concat();
    let (text, parts) =
        chunks::assemble(&tokens, text_end, begin, precision, steps, |t| w.text(t))?;
    let language = s
        .init
        .iter()
        .flatten()
        .find_map(|t| w.ids.languages.iter().find(|(_, id)| id == t))
        .map(|(code, _)| code.clone());
    let timed_words = match job.words {
        true => Some(timed_words(
            w,
            job,
            &s,
            &tokens,
            &parts,
            language.as_deref(),
        )?),
        false => None,
    };
    let mut json = json!({
        "text": text,
        "token_ids": tokens,
        "finish_reason": s.finish.as_str(),
        "language": language,
        "duration": job.duration,
    });
    if let Some(words) = timed_words {
        json["chunks"] = Value::Array(words);
    } else if job.chunks {
        json["chunks"] = Value::Array(
            parts
                .iter()
                .map(|c| json!({"text": c.text, "timestamp": [c.start, c.end]}))
                .collect(),
        );
    }
    if job.temperatures.len() > 1 || job.thresholds != Default::default() {
        json["attempts"] = Value::Array(s.attempts);
    }
    Ok(Response {
        json: json.to_string(),
        tensors: Vec::new(),
    })
}

/// The word chunks of a transcript (`tokens`, cut into `parts`), as the
/// pipeline's `_decode_asr` times them: a text token at `i` runs from the
/// time of token `i - 1` (0 for the first) to its own, rounded to 0.01 s.
fn timed_words(
    w: &Whisper,
    job: &Job,
    s: &State,
    tokens: &[i64],
    parts: &[chunks::Chunk],
    language: Option<&str>,
) -> Result<Vec<Value>, Error> {
    let windows: Vec<&Window> = s.windows.iter().map(|(win, _)| win).collect();
    let per_window = align::token_times(w, job, &windows)?;
    let mut times: Vec<f64> = Vec::with_capacity(tokens.len());
    for ((_, kept), t) in s.windows.iter().zip(&per_window) {
        times.extend(t.iter().take(*kept));
    }
    if times.len() != tokens.len() {
        return Err(skill_sdk::internal(format!(
            "{} token times for {} tokens",
            times.len(),
            tokens.len()
        )));
    }
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let unicode = language.is_some_and(super::words::unspaced);
    let text_end = job.settings.eos.first().copied().unwrap_or(w.begin());
    let decode = |t: &[i64]| w.text(t);
    let mut out = Vec::new();
    for c in parts {
        let ids: Vec<i64> = c.at.iter().map(|&i| tokens[i]).collect();
        let spans: Vec<(f64, f64)> =
            c.at.iter()
                .map(|&i| {
                    let start = match i {
                        0 => 0.0,
                        _ => times[i - 1],
                    };
                    (round2(start), round2(times[i]))
                })
                .collect();
        for word in super::words::words(&ids, &spans, unicode, text_end, &decode)? {
            out.push(json!({"text": word.text, "timestamp": [word.start, word.end]}));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::continuation;

    #[test]
    fn continues_as_transformers() {
        // begin 100: a single closing timestamp keeps all, window done.
        assert_eq!(continuation(&[100, 5, 6, 120], 100, 3000), (4, 3000));
        // Ends on a pair: keep through the pair, seek to its first timestamp.
        assert_eq!(continuation(&[100, 5, 120, 121, 7], 100, 3000), (4, 40));
        assert_eq!(continuation(&[100, 5, 120, 121], 100, 3000), (4, 40));
        // No pair: everything, window done.
        assert_eq!(continuation(&[5, 6, 7], 100, 3000), (3, 3000));
    }
}
