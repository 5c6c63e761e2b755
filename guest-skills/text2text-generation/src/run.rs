//! text2text's side of the shared generation loop
//! (`skill_sdk::seq2seq::run`): the encoder inputs of a batch (token ids,
//! LED's windows, T5's buckets) and the responses.

use skill_sdk::runtime::Session;
use skill_sdk::seq2seq::run::{self, Finish, Finished, Job, PromptToken, Task};
use skill_sdk::tensors::i64_tensor;
use skill_sdk::{Error, NamedTensor, Response, Tensor};

use crate::{Loaded, Request};

/// The batch the loop runs.
struct Text2TextTask<'a> {
    m: &'a Loaded,
    reqs: &'a [&'a Request],
}

/// Generates for `reqs` (host batch indices `index`); one result each.
pub fn generate(
    m: &Loaded,
    reqs: &[&Request],
    index: &[u32],
) -> Result<Vec<Result<Response, Error>>, Error> {
    let jobs: Vec<Job> = reqs
        .iter()
        .zip(index)
        .map(|(r, &i)| Job {
            settings: &r.settings,
            prompt: vec![PromptToken::Fixed(r.settings.decoder_start)],
            source: &r.ids,
            timestamps: None,
            return_logits: r.return_logits,
            scores: false,
            logits_at: None,
            index: Some(i),
        })
        .collect();
    run::generate(&m.decoder, &Text2TextTask { m, reqs }, &jobs)
}

impl Task for Text2TextTask<'_> {
    type Answer = Response;

    fn early(&self, index: u32, answer: &Result<Response, Error>) {
        skill_sdk::partial::complete(index, answer.as_ref());
    }

    /// Every request's ids right-padded into one batch, one decoder row per
    /// beam.
    fn encode(&self, session: &Session, jobs: &[usize], rows: &[usize]) -> Result<(), Error> {
        let m = self.m;
        let model = &m.decoder.model;
        let reqs: Vec<&Request> = jobs.iter().map(|&j| self.reqs[j]).collect();
        let b = reqs.len();
        let s = reqs.iter().map(|r| r.ids.len()).max().unwrap_or(1);
        // A windowed encoder takes whole windows (transformers pads the same).
        let s = match model.sliding {
            Some(sl) => s.div_ceil(2 * sl.w as usize) * 2 * sl.w as usize,
            None => s,
        };
        let pad = reqs.first().map(|r| r.settings.pad).unwrap_or(0);
        let mut ids = vec![pad; b * s];
        let mut mask = vec![0i64; b * s];
        let mut row_of = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            ids[i * s..i * s + r.ids.len()].copy_from_slice(&r.ids);
            mask[i * s..i * s + r.ids.len()]
                .iter_mut()
                .for_each(|x| *x = 1);
            row_of.extend(std::iter::repeat_n(i as i64, rows[i]));
        }
        let shape = match model.sliding {
            Some(sl) => vec![b as u64, s as u64 / sl.w, sl.w],
            None => vec![b as u64, s as u64],
        };
        let mut inputs = vec![
            named("input_ids", i64_tensor(shape.clone(), &ids)),
            named("attention_mask", i64_tensor(shape, &mask)),
            named("rows", i64_tensor(vec![row_of.len() as u64], &row_of)),
        ];
        if let Some(sl) = model.sliding {
            let blocks = s / sl.w as usize;
            // Positions past the table (padding of the last window) take its
            // last row; padding is never attended to.
            let last = model
                .dims
                .max_positions
                .unwrap_or(u64::MAX)
                .saturating_sub(1) as i64;
            let pos: Vec<i64> = (0..s as i64).map(|p| p.min(last)).collect();
            let (prev, next) = sl.neighbours(blocks);
            let nb = blocks as u64;
            inputs.push(named("positions", i64_tensor(vec![1, nb, sl.w], &pos)));
            inputs.push(named(
                "window_band",
                i64_tensor(vec![nb, sl.w, 3 * sl.w], &sl.band(blocks)),
            ));
            inputs.push(named("window_prev", i64_tensor(vec![nb], &prev)));
            inputs.push(named("window_next", i64_tensor(vec![nb], &next)));
        } else {
            match model.buckets() {
                Some(bk) => inputs.push(named(
                    "buckets",
                    i64_tensor(vec![s as u64, s as u64], &bk.table(s)),
                )),
                None => {
                    let off = model.position_offset();
                    let pos: Vec<i64> = (0..s as i64).map(|p| p + off).collect();
                    inputs.push(named("positions", i64_tensor(vec![s as u64], &pos)));
                }
            }
        }
        session.run(&m.encode, &inputs)?;
        Ok(())
    }

    fn text(&self, tokens: &[i64]) -> Result<String, Error> {
        self.m.source.decode(tokens)
    }

    fn respond(&self, job: usize, done: &Finished) -> Result<Response, Error> {
        let req = self.reqs[job];
        let mut text = self.m.source.decode(&done.tokens)?;
        if done.finish == Finish::Stop {
            if let Some(cut) = req
                .settings
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(cut);
            }
        }
        let decode_ms = done.decode_ms;
        let json = serde_json::json!({
            "text": text,
            "token_ids": done.tokens,
            "finish_reason": done.finish.as_str(),
            "input_tokens": req.ids.len(),
            "prompt_tokens": req.ids.len(),
            "truncated": req.truncated,
            "timings": {
                "encode_ms": done.encode_ms,
                "decode_ms": decode_ms,
                "tokens_per_second": if decode_ms > 0.0 { done.tokens.len() as f64 / (decode_ms / 1e3) } else { 0.0 },
                "batch_rows": done.rows,
            },
        });
        let tensors = match (&done.first_logits, req.return_logits) {
            (Some(l), true) => vec![named("first_step_logits", l.clone())],
            _ => Vec::new(),
        };
        Ok(Response {
            json: json.to_string(),
            tensors,
        })
    }
}

fn named(name: &str, value: Tensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        value,
    }
}
