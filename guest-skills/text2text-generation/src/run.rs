//! The generation loop of one batch: encode every request once, then decode
//! one token per row per step until every request has stopped, answering
//! each request as soon as it stops.
//!
//! Rows: a greedy or sampled request has one decoder row, a beam search
//! request one per beam (its rows are contiguous). A step's graph returns
//! each row's best candidates; enough of them that the tokens the
//! processors ban cannot hide the choice (the graph is chosen per step by
//! that count, in powers of two).

use skill_sdk::generation::beam::BeamSearch;
use skill_sdk::generation::constraints::{self, Step as Verdict};
use skill_sdk::generation::sample::Sampler;
use skill_sdk::generation::{candidates, Candidate};
use skill_sdk::runtime::Session;
use skill_sdk::seq2seq::{Cache, Step};
use skill_sdk::tensors::{bool_tensor, f32_values, i64_tensor, i64_values};
use skill_sdk::{Error, NamedTensor, Response, Tensor};

use crate::{Loaded, Request};

/// Candidates a sampled row asks for (the sampler's `top_k` is capped here).
const SAMPLE_CANDIDATES: usize = 100;
/// Fewest cache slots (caches grow in powers of two from here).
const MIN_SLOTS: u64 = 64;

/// How one request decodes.
enum Decoder {
    /// Greedy or sampled: one row.
    Single {
        tokens: Vec<i64>,
        sampler: Sampler,
        finish: Option<&'static str>,
        /// Text streamed so far (when the caller streams).
        streamed: Option<String>,
    },
    Beam(BeamSearch),
}

/// One request in the loop.
struct Active<'a> {
    req: &'a Request,
    /// Its index in the host's batch.
    index: u32,
    /// First decoder row.
    base: usize,
    rows: usize,
    decoder: Decoder,
    answered: bool,
    first_logits: Option<Tensor>,
}

impl Active<'_> {
    fn done(&self) -> bool {
        match &self.decoder {
            Decoder::Single { finish, .. } => finish.is_some(),
            Decoder::Beam(b) => b.done(),
        }
    }

    /// The decoder sequence (start token included) of row `r` of this request.
    fn sequence(&self, r: usize) -> Vec<i64> {
        let start = self.req.settings.decoder_start;
        let tokens: &[i64] = match &self.decoder {
            Decoder::Single { tokens, .. } => tokens,
            Decoder::Beam(b) => b.sequences().nth(r).unwrap_or(&[]),
        };
        std::iter::once(start)
            .chain(tokens.iter().copied())
            .collect()
    }

    /// How many candidates a row needs before bans.
    fn wanted(&self) -> usize {
        match &self.decoder {
            Decoder::Beam(b) => b.wanted(),
            Decoder::Single { .. } if self.req.settings.sampling.do_sample => {
                (self.req.settings.sampling.top_k as usize).clamp(1, SAMPLE_CANDIDATES)
            }
            Decoder::Single { .. } => 1,
        }
    }
}

/// Timings of a batch, milliseconds.
struct Clock {
    started: f64,
    encoded: f64,
}

/// Milliseconds since the first call (wasip2 clocks).
fn now_ms() -> f64 {
    thread_local! {
        static ORIGIN: std::time::Instant = std::time::Instant::now();
    }
    ORIGIN.with(|o| o.elapsed().as_secs_f64() * 1e3)
}

/// Generates for `reqs` (host batch indices `index`); one result each.
pub fn generate(
    m: &Loaded,
    reqs: &[&Request],
    index: &[u32],
) -> Result<Vec<Result<Response, Error>>, Error> {
    let started = now_ms();
    let mut active = Vec::with_capacity(reqs.len());
    let mut rows = 0;
    for (i, req) in reqs.iter().enumerate() {
        let n = req.settings.num_beams.max(1) as usize;
        let decoder = match n {
            1 => Decoder::Single {
                tokens: Vec::new(),
                sampler: Sampler::new(req.settings.sampling.clone()),
                finish: None,
                streamed: skill_sdk::partial::wanted(index[i]).then(String::new),
            },
            _ => Decoder::Beam(BeamSearch::new(&req.settings)),
        };
        active.push(Active {
            req,
            index: index[i],
            base: rows,
            rows: n,
            decoder,
            answered: false,
            first_logits: None,
        });
        rows += n;
    }
    let session = Session::new();
    encode(m, &session, &active, rows)?;
    let clock = Clock {
        started,
        encoded: now_ms(),
    };
    let longest = reqs
        .iter()
        .map(|r| r.settings.max_new_tokens)
        .max()
        .unwrap_or(1);
    let cache = match m.slots {
        true => Cache::Slots(
            (longest + 1)
                .max(MIN_SLOTS)
                .checked_next_power_of_two()
                .unwrap_or(u64::MAX),
        ),
        false => Cache::Growing,
    };
    let start_tokens: Vec<i64> = active
        .iter()
        .flat_map(|a| std::iter::repeat_n(a.req.settings.decoder_start, a.rows))
        .collect();
    let mut tokens = start_tokens;
    let mut beam_idx: Vec<i64> = (0..rows as i64).collect();
    let beams = active.iter().any(|a| matches!(a.decoder, Decoder::Beam(_)));
    let mut results: Vec<Option<Result<Response, Error>>> = (0..reqs.len()).map(|_| None).collect();
    for t in 0..longest {
        // What the processors allow each row, before the step runs.
        let mut verdicts: Vec<Verdict> = Vec::with_capacity(rows);
        let mut needed = 1;
        for a in &active {
            for r in 0..a.rows {
                let v = match a.done() {
                    true => Verdict::Forced(vec![]),
                    false => constraints::step(&a.req.settings, &a.sequence(r), &a.req.ids),
                };
                needed = needed.max(v.candidates_needed(a.wanted()));
                verdicts.push(v);
            }
        }
        let top_k = (needed.max(8) as u64)
            .checked_next_power_of_two()
            .unwrap_or(u64::MAX)
            .min(m.model.dims.vocab) as u32;
        let step = Step {
            cache,
            top_k,
            reorder: beams && t > 0,
            logits: t == 0 && active.iter().any(|a| a.req.return_logits),
            logprobs: beams,
        };
        let mut outputs = run_step(m, &session, step, t, &tokens, &beam_idx)?;
        let values = f32_values(&take_one(&mut outputs, "top_values")?)?;
        let indices = i64_values(&take_one(&mut outputs, "top_indices")?)?;
        let logits = match step.logits {
            true => Some(take_one(&mut outputs, "logits")?),
            false => None,
        };
        let k = top_k as usize;
        // `active[i]` is request `reqs[i]`.
        for (i, a) in active.iter_mut().enumerate() {
            if a.done() {
                continue;
            }
            if let Some(l) = &logits {
                a.first_logits = Some(row_tensor(l, a.base)?);
            }
            let row_cands = |r: usize| -> Vec<Candidate> {
                let row = a.base + r;
                verdicts[row].apply(&candidates(
                    &values[row * k..(row + 1) * k],
                    &indices[row * k..(row + 1) * k],
                ))
            };
            match &mut a.decoder {
                Decoder::Single {
                    tokens: out,
                    sampler,
                    finish,
                    streamed,
                } => {
                    let cands = row_cands(0);
                    let next = match cands.first() {
                        None => 0,
                        Some(best) => {
                            let vals: Vec<f32> = cands.iter().map(|c| c.logprob).collect();
                            let ids: Vec<i64> = cands.iter().map(|c| c.token).collect();
                            sampler.pick(best.token, &vals, &ids)
                        }
                    };
                    out.push(next);
                    tokens[a.base] = next;
                    let s = &a.req.settings;
                    if s.eos.contains(&next) {
                        *finish = Some("eos");
                    } else if !s.stop.is_empty() && stop_hit(m, out, &s.stop) {
                        *finish = Some("stop");
                    } else if out.len() as u64 >= s.max_new_tokens {
                        *finish = Some("length");
                    }
                    if let (Some(sent), None) = (streamed.as_mut(), *finish) {
                        stream(m, a.index, out, sent);
                    }
                }
                Decoder::Beam(b) => {
                    let cands: Vec<Vec<Candidate>> = (0..a.rows).map(row_cands).collect();
                    let moves = b.advance(&cands);
                    for (j, (&p, &tok)) in moves.parent.iter().zip(&moves.tokens).enumerate() {
                        beam_idx[a.base + j] = (a.base + p) as i64;
                        tokens[a.base + j] = tok;
                    }
                }
            }
            if a.done() && !a.answered {
                let answer = respond(m, a, &clock, rows);
                skill_sdk::partial::complete(a.index, answer.as_ref());
                results[i] = Some(answer);
                a.answered = true;
            }
        }
        // Rows of stopped requests keep their cache rows and feed padding.
        for a in &active {
            if a.done() {
                for r in a.base..a.base + a.rows {
                    beam_idx[r] = r as i64;
                    tokens[r] = a.req.settings.pad;
                }
            }
        }
        if active.iter().all(|a| a.done()) {
            break;
        }
        if !beams {
            beam_idx
                .iter_mut()
                .enumerate()
                .for_each(|(r, b)| *b = r as i64);
        }
    }
    Ok(results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(skill_sdk::internal("generation ended without an answer")))
        })
        .collect())
}

/// Removes output `name` (no copy of the others).
fn take_one(outputs: &mut Vec<NamedTensor>, name: &str) -> Result<Tensor, Error> {
    let at = outputs
        .iter()
        .position(|n| n.name == name)
        .ok_or_else(|| skill_sdk::internal(format!("graph output `{name}` missing")))?;
    Ok(outputs.swap_remove(at).value)
}

/// Runs the encode graph: every request's ids right-padded into one batch,
/// one decoder row per beam.
fn encode(m: &Loaded, session: &Session, active: &[Active], rows: usize) -> Result<(), Error> {
    let b = active.len();
    let s = active.iter().map(|a| a.req.ids.len()).max().unwrap_or(1);
    // A windowed encoder takes whole windows (transformers pads the same).
    let s = match m.model.sliding {
        Some(sl) => s.div_ceil(2 * sl.w as usize) * 2 * sl.w as usize,
        None => s,
    };
    let pad = active.first().map(|a| a.req.settings.pad).unwrap_or(0);
    let mut ids = vec![pad; b * s];
    let mut mask = vec![0i64; b * s];
    let mut row_of = Vec::with_capacity(rows);
    for (i, a) in active.iter().enumerate() {
        ids[i * s..i * s + a.req.ids.len()].copy_from_slice(&a.req.ids);
        mask[i * s..i * s + a.req.ids.len()]
            .iter_mut()
            .for_each(|x| *x = 1);
        row_of.extend(std::iter::repeat_n(i as i64, a.rows));
    }
    let shape = match m.model.sliding {
        Some(sl) => vec![b as u64, s as u64 / sl.w, sl.w],
        None => vec![b as u64, s as u64],
    };
    let mut inputs = vec![
        named("input_ids", i64_tensor(shape.clone(), &ids)),
        named("attention_mask", i64_tensor(shape, &mask)),
        named("rows", i64_tensor(vec![rows as u64], &row_of)),
    ];
    if let Some(sl) = m.model.sliding {
        let blocks = s / sl.w as usize;
        // Positions past the table (padding of the last window) take its
        // last row; padding is never attended to.
        let last = m
            .model
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
        session.run(&m.encode, &inputs)?;
        return Ok(());
    }
    match m.model.buckets() {
        Some(bk) => inputs.push(named(
            "buckets",
            i64_tensor(vec![s as u64, s as u64], &bk.table(s)),
        )),
        None => {
            let off = m.model.position_offset();
            let pos: Vec<i64> = (0..s as i64).map(|p| p + off).collect();
            inputs.push(named("positions", i64_tensor(vec![s as u64], &pos)));
        }
    }
    session.run(&m.encode, &inputs)?;
    Ok(())
}

fn named(name: &str, value: Tensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        value,
    }
}

/// Runs decode step `t` (the token at decoder position `t` per row).
fn run_step(
    m: &Loaded,
    session: &Session,
    step: Step,
    t: u64,
    tokens: &[i64],
    beam_idx: &[i64],
) -> Result<Vec<NamedTensor>, Error> {
    let rows = tokens.len() as u64;
    let mut inputs = vec![named("input_ids", i64_tensor(vec![rows, 1], tokens))];
    if step.reorder {
        inputs.push(named("beam_idx", i64_tensor(vec![rows], beam_idx)));
    }
    let keys = match step.cache {
        Cache::Growing => t + 1,
        Cache::Slots(n) => {
            let mask: Vec<bool> = (0..n).map(|j| j <= t).collect();
            inputs.push(named("cache_slot", i64_tensor(vec![1], &[t as i64])));
            inputs.push(named("cache_mask", bool_tensor(vec![1, n], &mask)));
            n
        }
    };
    match m.model.buckets() {
        Some(bk) => {
            let b: Vec<i64> = (0..keys as i64)
                .map(|j| bk.causal_bucket(j - t as i64))
                .collect();
            inputs.push(named("buckets", i64_tensor(vec![1, keys], &b)));
        }
        None => {
            let p = t as i64 + m.model.position_offset();
            inputs.push(named("position", i64_tensor(vec![1], &[p])));
        }
    }
    let graph = m.step(step)?;
    session.run(&graph, &inputs)
}

/// Row `r` of a [rows, vocab] f32 tensor.
fn row_tensor(t: &Tensor, r: usize) -> Result<Tensor, Error> {
    let width = *t
        .shape
        .get(1)
        .ok_or_else(|| skill_sdk::internal("logits of rank < 2"))? as usize;
    let bytes = width * 4;
    let data = t
        .data
        .get(r * bytes..(r + 1) * bytes)
        .ok_or_else(|| skill_sdk::internal("logits row out of range"))?
        .to_vec();
    Ok(Tensor {
        dtype: t.dtype,
        shape: vec![width as u64],
        data,
    })
}

/// Streams the text `out` added since `sent` (a whole decoded suffix only:
/// a token that ends inside a character waits for the next one).
fn stream(m: &Loaded, index: u32, out: &[i64], sent: &mut String) {
    let Ok(text) = m.source.decode(out) else {
        return;
    };
    if let Some(new) = text
        .strip_prefix(sent.as_str())
        .filter(|n| !n.is_empty() && !n.ends_with('\u{fffd}'))
    {
        let token = out.last().copied().unwrap_or(0);
        let chunk = serde_json::json!({ "token_id": token, "text": new });
        skill_sdk::partial::emit(index, &chunk.to_string());
        *sent = text;
    }
}

fn stop_hit(m: &Loaded, out: &[i64], stop: &[String]) -> bool {
    m.source
        .decode(out)
        .is_ok_and(|t| stop.iter().any(|s| t.contains(s.as_str())))
}

/// The response of a request that stopped.
fn respond(m: &Loaded, a: &Active, clock: &Clock, rows: usize) -> Result<Response, Error> {
    let (out, finish): (Vec<i64>, &str) = match &a.decoder {
        Decoder::Single { tokens, finish, .. } => (tokens.clone(), finish.unwrap_or("length")),
        Decoder::Beam(b) => {
            let best = b.best().to_vec();
            let eos = best.last().is_some_and(|t| a.req.settings.eos.contains(t));
            (best, if eos { "eos" } else { "length" })
        }
    };
    let mut text = m.source.decode(&out)?;
    if finish == "stop" {
        if let Some(cut) = a
            .req
            .settings
            .stop
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(cut);
        }
    }
    let end = now_ms();
    let decode_ms = end - clock.encoded;
    let json = serde_json::json!({
        "text": text,
        "token_ids": out,
        "finish_reason": finish,
        "input_tokens": a.req.ids.len(),
        "prompt_tokens": a.req.ids.len(),
        "truncated": a.req.truncated,
        "timings": {
            "encode_ms": clock.encoded - clock.started,
            "decode_ms": decode_ms,
            "tokens_per_second": if decode_ms > 0.0 { out.len() as f64 / (decode_ms / 1e3) } else { 0.0 },
            "batch_rows": rows,
        },
    });
    let tensors = match (&a.first_logits, a.req.return_logits) {
        (Some(l), true) => vec![named("first_step_logits", l.clone())],
        _ => Vec::new(),
    };
    Ok(Response {
        json: json.to_string(),
        tensors,
    })
}
