//! text2text's side of the shared generation loop
//! (`skill_sdk::seq2seq::run`): the encoder inputs of a batch (token ids,
//! LED's windows, T5's buckets), requests that join a running batch, and
//! the responses.

use std::cell::{Cell, RefCell};

use skill_sdk::runtime::Session;
use skill_sdk::seq2seq::run::{self, Finish, Finished, Job, PromptToken, Task};
use skill_sdk::tensors::{bool_tensor, i64_tensor};
use skill_sdk::{Error, NamedTensor, Response, Tensor};

use crate::{parse, Loaded, Request};

/// The batch the loop runs, and the requests that joined it.
struct Text2TextTask<'a> {
    m: &'a Loaded,
    reqs: &'a [&'a Request],
    /// Joined requests: job id `reqs.len() + i` is `joined[i]`.
    joined: RefCell<Vec<Request>>,
    /// The host index of the next joiner (joiners are numbered after the
    /// batch's requests).
    next_index: Cell<u32>,
}

/// Generates for `reqs` (host batch indices `index`, of a batch of
/// `batch_len` requests); one result each. Requests queued meanwhile may
/// join (answered through `partial.complete` only).
pub fn generate(
    m: &Loaded,
    reqs: &[&Request],
    index: &[u32],
    batch_len: u32,
) -> Result<Vec<Result<Response, Error>>, Error> {
    let jobs: Vec<Job> = reqs.iter().zip(index).map(|(r, &i)| job(r, i)).collect();
    let task = Text2TextTask {
        m,
        reqs,
        joined: RefCell::new(Vec::new()),
        next_index: Cell::new(batch_len),
    };
    run::generate(&m.decoder, &task, jobs)
}

/// The loop's job of request `r` (host index `index`).
fn job(r: &Request, index: u32) -> Job {
    Job {
        settings: r.settings.clone(),
        prompt: vec![PromptToken::Fixed(r.settings.decoder_start)],
        source: r.ids.clone(),
        timestamps: None,
        return_logits: r.return_logits,
        scores: false,
        logits_at: None,
        index: Some(index),
    }
}

impl Text2TextTask<'_> {
    /// The request of job `id` (the batch's, then the joiners').
    fn with_req<R>(&self, id: usize, f: impl FnOnce(&Request) -> R) -> Result<R, Error> {
        match self.reqs.get(id) {
            Some(r) => Ok(f(r)),
            None => {
                let joined = self.joined.borrow();
                let r = joined
                    .get(id - self.reqs.len())
                    .ok_or_else(|| skill_sdk::internal("unknown job"))?;
                Ok(f(r))
            }
        }
    }

    /// Runs `graph` on the ids of `jobs` right-padded to `source` tokens
    /// (`None`: the longest, whole windows under a window), plus `extra`
    /// inputs; returns the source length.
    fn run_encoder(
        &self,
        session: &Session,
        graph: &skill_sdk::runtime::CompiledGraph,
        jobs: &[usize],
        source: Option<usize>,
        extra: Vec<NamedTensor>,
    ) -> Result<usize, Error> {
        let model = &self.m.decoder.model;
        let ids: Vec<Vec<i64>> = jobs
            .iter()
            .map(|&j| self.with_req(j, |r| r.ids.clone()))
            .collect::<Result<_, _>>()?;
        let b = ids.len();
        let s = match source {
            Some(s) => s,
            None => {
                let s = ids.iter().map(Vec::len).max().unwrap_or(1);
                // A windowed encoder takes whole windows (transformers pads the same).
                match model.sliding {
                    Some(sl) => s.div_ceil(2 * sl.w as usize) * 2 * sl.w as usize,
                    None => s,
                }
            }
        };
        let pad = self.reqs.first().map(|r| r.settings.pad).unwrap_or(0);
        let mut flat = vec![pad; b * s];
        let mut mask = vec![0i64; b * s];
        for (i, r) in ids.iter().enumerate() {
            let n = r.len().min(s);
            flat[i * s..i * s + n].copy_from_slice(&r[..n]);
            mask[i * s..i * s + n].iter_mut().for_each(|x| *x = 1);
        }
        let shape = match model.sliding {
            Some(sl) => vec![b as u64, s as u64 / sl.w, sl.w],
            None => vec![b as u64, s as u64],
        };
        let mut inputs = vec![
            named("input_ids", i64_tensor(shape.clone(), &flat)),
            named("attention_mask", i64_tensor(shape, &mask)),
        ];
        inputs.extend(extra);
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
        session.run(graph, &inputs)?;
        Ok(s)
    }
}

impl Task for Text2TextTask<'_> {
    type Answer = Response;

    fn early(&self, index: u32, answer: &Result<Response, Error>) {
        skill_sdk::partial::complete(index, answer.as_ref());
    }

    /// Every request's ids right-padded into one batch, one decoder row per
    /// beam.
    fn encode(&self, session: &Session, jobs: &[usize], rows: &[usize]) -> Result<usize, Error> {
        let row_of: Vec<i64> = (0..jobs.len())
            .flat_map(|i| std::iter::repeat_n(i as i64, rows[i]))
            .collect();
        let extra = vec![named(
            "rows",
            i64_tensor(vec![row_of.len() as u64], &row_of),
        )];
        self.run_encoder(session, &self.m.encode, jobs, None, extra)
    }

    /// Queued requests, parsed; one that does not parse is answered with
    /// its error at once.
    fn poll(&self, max: u32) -> Vec<(usize, Job)> {
        if !self.m.decoder.model.joinable() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for text in skill_sdk::partial::take_queued(max) {
            let index = self.next_index.get();
            self.next_index.set(index + 1);
            match parse(self.m, &text) {
                Err(e) => skill_sdk::partial::complete(index, Err(&e)),
                Ok(req) => {
                    let mut joined = self.joined.borrow_mut();
                    let id = self.reqs.len() + joined.len();
                    out.push((id, job(&req, index)));
                    joined.push(req);
                }
            }
        }
        out
    }

    fn encode_join(
        &self,
        session: &Session,
        jobs: &[usize],
        from: &[i64],
        take: &[bool],
        source: usize,
    ) -> Result<(), Error> {
        let join = self.m.join_graph()?;
        let rows = from.len() as u64;
        let extra = vec![
            named("rows", i64_tensor(vec![rows], from)),
            named("take", bool_tensor(vec![rows], take)),
        ];
        self.run_encoder(session, join, jobs, Some(source), extra)?;
        Ok(())
    }

    fn text(&self, tokens: &[i64]) -> Result<String, Error> {
        self.m.source.decode(tokens)
    }

    fn respond(&self, job: usize, done: &Finished) -> Result<Response, Error> {
        self.with_req(job, |req| respond(self.m, req, done))?
    }
}

/// The response to `req`.
fn respond(m: &Loaded, req: &Request, done: &Finished) -> Result<Response, Error> {
    let mut text = m.source.decode(&done.tokens)?;
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

fn named(name: &str, value: Tensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        value,
    }
}
