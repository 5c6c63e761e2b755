//! The generation loop. A batch is prefilled together (left-padded), then
//! each decode step feeds one token per row; the KV cache lives in a
//! session. A row stops on its own (eos, a stop string, its
//! `max_new_tokens`) and is answered then (`partial.complete`). Requests
//! queued for the endpoint take the rows of stopped ones
//! (`partial.take-queued`): their prompts go through the model in an
//! *extend* step, together with the other rows' next token (left padded to
//! the longest new prompt; the cache keeps the padding masked), so
//! sequences join and leave a running batch. A growing cache (cpu,
//! openvino) appends the step; a fixed-slot cache (cuda) writes it into the
//! next slots of every row, with causality from positions, after growing to
//! the slots the joiners need (`resize.rs`).

use std::collections::VecDeque;
use std::time::Instant;

use skill_sdk::runtime::Session;
use skill_sdk::tensors::{f32_tensor, i64_tensor};
use skill_sdk::{Error, NamedTensor, Response, Tensor};

use crate::decoder::{self, Cache, Step, Variant};
use crate::respond::{self, Timings};
use crate::{cache_slots, f32s, i64s, parse, stop_hit, Loaded, Request};
use skill_sdk::generation::sample::Sampler;

/// Steps after which a batch takes no more queued requests (a `handle`
/// call's CPU time is bounded; the queue's requests then start a batch).
const JOIN_STEPS_MAX: u64 = 2048;

/// Steps between looks at the queue while rows are free: each look needs
/// the step before it read with nothing queued behind it (no run-ahead),
/// and a queued request waits at most this many steps to join.
const JOIN_POLL_STEPS: u64 = 8;

/// Most bytes (as declared, f32) a slot cache may grow to for joiners: the
/// host's session state limit.
const SLOT_BYTES_MAX: u64 = 4 << 30;

/// One sequence of the running batch.
struct Row {
    req: Request,
    /// The request's index in the host's numbering of this batch.
    index: u32,
    /// Its position in `handle`'s result (`None`: joined while running).
    result: Option<usize>,
    wanted: bool,
    /// Bytes of text already streamed.
    streamed: usize,
    sampler: Sampler,
    out: Vec<i64>,
    finish: Option<&'static str>,
    /// Answered (its row may take a queued request).
    answered: bool,
    /// Its prompt goes through the model in the next step.
    fresh: bool,
    next_pos: i64,
    /// Tokens seen (prompt, padding, generated) for the repetition penalty,
    /// as transformers counts them; empty until a row penalises.
    seen: Vec<bool>,
    /// Milliseconds since the loop began: its prompt's step started, and its
    /// first token came.
    started_ms: f64,
    first_ms: f64,
    logits: Option<Tensor>,
}

impl Row {
    fn new(req: Request, index: u32, result: Option<usize>, now_ms: f64) -> Row {
        Row {
            wanted: skill_sdk::partial::wanted(index),
            sampler: Sampler::new(req.sampling.clone()),
            next_pos: req.ids.len() as i64,
            req,
            index,
            result,
            streamed: 0,
            out: Vec::new(),
            finish: None,
            answered: false,
            fresh: true,
            seen: Vec::new(),
            started_ms: now_ms,
            first_ms: now_ms,
            logits: None,
        }
    }

    /// This step's tokens, mask and positions, `len` long (left padded).
    fn feed(&self, len: usize, pad: i64) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        let real: Vec<i64> = if self.fresh {
            self.req.ids.clone()
        } else {
            vec![self.out.last().copied().unwrap_or(pad)]
        };
        let pads = len - real.len();
        let first = if self.fresh { 0 } else { self.next_pos };
        let ids = [vec![pad; pads], real.clone()].concat();
        let mask = [vec![0; pads], vec![1; real.len()]].concat();
        let pos = [vec![1; pads], (first..first + real.len() as i64).collect()].concat();
        (ids, mask, pos)
    }
}

/// A step submitted to the session and not yet read back.
struct InFlight {
    variant: Variant,
    /// Rows whose prompt this step fed.
    fresh: Vec<bool>,
    /// Milliseconds since the loop began when it was submitted.
    at_ms: f64,
}

/// The running batch and its cache bookkeeping.
struct Batch<'a> {
    m: &'a Loaded,
    rows: Vec<Row>,
    kind: Cache,
    /// Per row: which cache entries hold a token, and its position (ALiBi,
    /// windows).
    cache_mask: Vec<Vec<i64>>,
    cache_pos: Vec<Vec<i64>>,
    /// Once a row samples or penalises, the batch's graph variant keeps
    /// that part (a change of variant is a new graph, on cuda a capture).
    sampling: bool,
    penalize: bool,
    session: Session,
    submitted: u64,
    /// Slots in use (slot caches): the next decode step writes slot `filled`.
    filled: usize,
    t0: Instant,
}

impl Batch<'_> {
    fn ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1e3
    }

    /// Whether the next step can be submitted before the one in flight is
    /// read: its tokens are exactly the greedy tokens of the step before
    /// (kept by the graph as state `token`), some row still needs it, and,
    /// when the loop will `poll` the queue after this step, no row is free
    /// to take a queued request (joins happen with nothing in flight).
    fn can_run_ahead(&self, in_flight: usize, poll: bool) -> bool {
        in_flight == 1
            && !self.sampling
            && !self.penalize
            && self.rows.iter().all(|r| !r.fresh)
            && !(poll && self.may_join() && self.rows.iter().any(|r| r.answered))
            && self
                .rows
                .iter()
                .any(|r| r.finish.is_none() && (r.out.len() + in_flight) < r.req.max_new as usize)
    }

    /// Whether rows that stopped may take queued requests. A growing cache
    /// takes them while it is shorter than the context. A slot cache takes
    /// them while its rows have written at most a context of slots, and
    /// while the most slots a joiner could then need (each request fits the
    /// context: its prompt and tokens, and the longest running row's, on top
    /// of the slots written) stay within the session's state limit; the
    /// cache grows to the slots actually needed when they join (`fit`).
    fn may_join(&self) -> bool {
        let context = self.m.info.max_positions;
        match self.kind {
            Cache::Growing => (self.cache_mask[0].len() as u64) < context,
            Cache::Slots(_) => {
                let worst = (self.filled as u64 + 2 * context).next_power_of_two();
                let bytes = worst
                    .saturating_mul(self.rows.len() as u64)
                    .saturating_mul(self.m.info.kv_bytes);
                self.filled as u64 <= context && bytes <= SLOT_BYTES_MAX
            }
        }
    }

    /// Grows a slot cache to hold the next step (`len` tokens a row) and
    /// every row's remaining tokens: runs the resize graph and widens the
    /// masks. Nothing may be in flight.
    fn fit(&mut self, len: usize) -> Result<(), Error> {
        let Cache::Slots(have) = self.kind else {
            return Ok(());
        };
        let rest = (self.rows.iter())
            .filter(|r| r.finish.is_none())
            .map(|r| r.req.max_new.saturating_sub(r.out.len() as u64 + 1))
            .max()
            .unwrap_or(0);
        let need = self.filled as u64 + len as u64 + rest;
        if need <= have {
            return Ok(());
        }
        let to = need.next_power_of_two();
        let m = self.m;
        let graph = crate::resize::build(m.arch, &m.config, have, to)?;
        self.session.run(&graph, &[])?;
        for row in self.cache_mask.iter_mut().chain(self.cache_pos.iter_mut()) {
            row.resize(to as usize, 0);
        }
        self.kind = Cache::Slots(to);
        Ok(())
    }

    /// Builds and submits the next step; `fed` takes each row's token from
    /// the previous step's state instead of an input.
    fn submit(&mut self, fed: bool) -> Result<InFlight, Error> {
        let m = self.m;
        let b = self.rows.len();
        let prefill = self.submitted == 0;
        let len = self
            .rows
            .iter()
            .filter(|r| r.fresh)
            .map(|r| r.req.ids.len())
            .max()
            .unwrap_or(1);
        let (mut ids, mut mask, mut pos) = (Vec::new(), Vec::new(), Vec::new());
        for r in &self.rows {
            let (i, k, p) = r.feed(len, m.defaults.pad);
            ids.extend(i);
            mask.push(k);
            pos.extend(p);
        }
        self.sampling |= self
            .rows
            .iter()
            .any(|r| r.fresh && r.req.sampling.do_sample);
        self.penalize |= self
            .rows
            .iter()
            .any(|r| r.fresh && r.req.repetition_penalty != 1.0);
        // Rows that penalise track what they have seen from their prompt on.
        let vocab = m.info.vocab as usize;
        for (r, row_ids) in self.rows.iter_mut().zip(ids.chunks(len)) {
            if self.penalize && (r.fresh || r.seen.is_empty()) {
                r.seen = vec![false; vocab];
                if r.fresh {
                    for &t in row_ids {
                        if let Some(x) = r.seen.get_mut(t as usize) {
                            *x = true;
                        }
                    }
                }
            }
        }
        // On a slot cache every step's tokens take the next `len` slots (a
        // prefill the first ones), marked before the run: a decode step's
        // cache mask counts its own tokens.
        let slots = self.kind.slots();
        let written = !prefill && self.kind != Cache::Growing;
        let first_slot = self.filled;
        if self.kind != Cache::Growing {
            if first_slot + len > slots {
                return Err(skill_sdk::internal("the KV cache overflowed its slots"));
            }
            for (i, row_mask) in mask.iter().enumerate() {
                let at = first_slot..first_slot + len;
                self.cache_mask[i][at.clone()].copy_from_slice(row_mask);
                self.cache_pos[i][at].copy_from_slice(&pos[i * len..(i + 1) * len]);
            }
            self.filled += len;
        }
        let (bu, lu) = (b as u64, len as u64);
        // LLaVA: the fresh rows' images go through the tower in this step.
        let images = self
            .rows
            .iter()
            .any(|r| r.fresh && !(r.req.images.pixels.is_empty() && r.req.vl.images.is_empty()));
        let image_inputs = match (&m.llava, images) {
            (Some(l), true) => {
                let rows: Vec<(bool, &crate::llava::Images)> =
                    self.rows.iter().map(|r| (r.fresh, &r.req.images)).collect();
                l.step_inputs(&rows, &mut ids, len, m.defaults.pad)?
            }
            _ => Vec::new(),
        };
        let mut inputs = vec![
            named("position_ids", i64_tensor(vec![bu, lu], &pos)),
            named("attention_mask", i64_tensor(vec![bu, lu], &mask.concat())),
            named("last_index", i64_tensor(vec![1], &[len as i64 - 1])),
        ];
        if !fed {
            inputs.push(named("input_ids", i64_tensor(vec![bu, lu], &ids)));
        }
        inputs.extend(image_inputs);
        // Qwen2-VL: M-RoPE positions every step, images with their prompts.
        if let Some(q) = &m.qwen2_vl {
            let rows: Vec<_> = self.rows.iter().map(|r| (r.fresh, &r.req.vl)).collect();
            inputs.extend(q.step_inputs(&rows, &ids, &pos, len, images)?);
        }
        if written {
            inputs.push(named(
                "cache_slot",
                i64_tensor(vec![1], &[first_slot as i64]),
            ));
        }
        // The prefill starts the session: its cache is empty and unread.
        if !prefill {
            let width = self.cache_mask[0].len() as u64;
            inputs.push(named(
                "cache_mask",
                i64_tensor(vec![bu, width], &self.cache_mask.concat()),
            ));
            if m.arch.key_positions() || (written && len > 1) {
                inputs.push(named(
                    "cache_positions",
                    i64_tensor(vec![bu, width], &self.cache_pos.concat()),
                ));
            }
        }
        let variant = Variant {
            step: Step::of(prefill, len > 1, fed, images)?,
            sample: self.sampling,
            logits: self.rows.iter().any(|r| r.fresh && r.req.return_logits),
            penalty: self.penalize,
        };
        if self.penalize {
            let flat: Vec<u8> = self
                .rows
                .iter()
                .flat_map(|r| r.seen.iter().map(|&x| x as u8))
                .collect();
            inputs.push(named(
                "seen",
                Tensor {
                    dtype: skill_sdk::Dtype::Boolean,
                    shape: vec![bu, vocab as u64],
                    data: flat,
                },
            ));
            let p: Vec<f32> = self.rows.iter().map(|r| r.req.repetition_penalty).collect();
            inputs.push(named("penalty", f32_tensor(vec![bu, 1], &p)));
        }
        let at_ms = self.ms();
        {
            let mut graphs = m.graphs.borrow_mut();
            let graph = match graphs.entry((variant, self.kind)) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let (llava, vl) = (m.llava.as_ref(), m.qwen2_vl.as_ref());
                    let (kind, slots) = (self.kind, m.slots);
                    e.insert(decoder::build(m.arch, &m.config, variant, kind, slots, llava, vl)?.0)
                }
            };
            self.session.submit(graph, &inputs)?;
        }
        self.submitted += 1;
        // A growing cache appends this step's tokens.
        if self.kind == Cache::Growing {
            for (i, row_mask) in mask.iter().enumerate() {
                self.cache_mask[i].extend(row_mask.iter().copied());
                self.cache_pos[i].extend(pos[i * len..(i + 1) * len].iter().copied());
            }
        }
        // A fed prompt's next token goes at its length (set when the row
        // was made); a row that runs on moves one position on, but never
        // past its last token's (P + max_new - 1 < the context): a step
        // submitted ahead may still feed a row that has just stopped.
        let fresh: Vec<bool> = self.rows.iter().map(|r| r.fresh).collect();
        for r in &mut self.rows {
            let last = (r.req.ids.len() as u64 + r.req.max_new).saturating_sub(1) as i64;
            if r.fresh {
                r.fresh = false;
            } else if r.finish.is_none() && r.next_pos < last {
                r.next_pos += 1;
            }
        }
        Ok(InFlight {
            variant,
            fresh,
            at_ms,
        })
    }

    /// Reads back the oldest step in flight: each running row takes its
    /// token, streams it, and is answered when it stops.
    fn absorb(&mut self, s: InFlight, results: &mut [Option<Response>]) -> Result<(), Error> {
        let m = self.m;
        let outputs = self.session.collect()?;
        let (mut greedy, mut values, mut indices, mut logits) = (None, None, None, Vec::new());
        for o in outputs {
            match o.name.as_str() {
                "logits" => logits = skill_sdk::tensors::split_rows(&o.value)?,
                "next_token" => greedy = Some(i64s(&o.value)),
                "top_values" => values = Some(f32s(&o.value)),
                "top_indices" => indices = Some(i64s(&o.value)),
                _ => {}
            }
        }
        let (greedy, values, indices) = match (greedy, values, indices) {
            (Some(g), Some(v), Some(i)) => (g, v, i),
            (Some(g), None, None) if !s.variant.sample => (g, Vec::new(), Vec::new()),
            _ => {
                return Err(skill_sdk::internal(
                    "the decoder graph returned incomplete outputs",
                ))
            }
        };
        let now = self.ms();
        let k = m.info.top_k as usize;
        let b = self.rows.len();
        for (i, r) in self.rows.iter_mut().enumerate() {
            if r.finish.is_some() {
                continue;
            }
            if s.fresh.get(i).copied().unwrap_or(false) {
                r.started_ms = s.at_ms;
                r.first_ms = now;
                r.logits = logits.get(i).cloned();
            }
            let g = greedy
                .get(i)
                .copied()
                .ok_or_else(|| skill_sdk::internal("the decoder graph returned too few tokens"))?;
            let t = r.sampler.pick(
                g,
                values.get(i * k..(i + 1) * k).unwrap_or(&[]),
                indices.get(i * k..(i + 1) * k).unwrap_or(&[]),
            );
            r.out.push(t);
            if let Some(x) = r.seen.get_mut(t as usize) {
                *x = true;
            }
            if r.wanted {
                stream(m, r, t);
            }
            if m.defaults.eos.contains(&t) {
                r.finish = Some("eos");
            } else if !r.req.stop.is_empty() && stop_hit(m, &r.out, &r.req.stop) {
                r.finish = Some("stop");
            } else if r.out.len() as u64 >= r.req.max_new {
                r.finish = Some("length");
            }
            if r.finish.is_some() {
                answer(m, r, now, b, results)?;
            }
        }
        Ok(())
    }
}

/// Generates `reqs` (batch indices `index`; the batch has `batch_len`
/// requests, so joiners are numbered from there) and any requests that
/// join; returns the responses of `reqs`, in order.
///
/// Greedy steps run one ahead: the next step is submitted (its tokens taken
/// on the device from the last step's argmax) before the last step is read,
/// so the device never waits for the sandbox. A row that stops makes at
/// most one step's work wasted.
pub fn generate(
    m: &Loaded,
    reqs: &[&Request],
    index: &[u32],
    batch_len: u32,
) -> Result<Vec<Response>, Error> {
    let rows: Vec<Row> = reqs
        .iter()
        .zip(index)
        .enumerate()
        .map(|(i, (r, &ix))| Row::new((*r).clone(), ix, Some(i), 0.0))
        .collect();
    let b = rows.len();
    let mut results: Vec<Option<Response>> = vec![None; b];
    let longest = rows.iter().map(|r| r.req.ids.len()).max().unwrap_or(0);
    let max_steps = rows.iter().map(|r| r.req.max_new).max().unwrap_or(0);
    // Every token fed to the model takes a slot: the prompt (padded) and all
    // generated tokens but the last.
    let kind = match m.slots {
        true => Cache::Slots(cache_slots(
            longest as u64 + max_steps - 1,
            m.info.max_positions,
        )),
        false => Cache::Growing,
    };
    let slots = kind.slots();
    let mut batch = Batch {
        m,
        rows,
        kind,
        cache_mask: vec![vec![0; slots]; b],
        cache_pos: vec![vec![0; slots]; b],
        sampling: false,
        penalize: false,
        session: Session::new(),
        submitted: 0,
        filled: 0,
        t0: Instant::now(),
    };
    let mut next_id = batch_len;
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut step: u64 = 0;
    loop {
        if in_flight.is_empty() {
            let s = batch.submit(false)?;
            in_flight.push_back(s);
        }
        // Free rows look for queued requests every JOIN_POLL_STEPS steps;
        // between those, steps keep running ahead of the sandbox.
        let poll = (step + 1).is_multiple_of(JOIN_POLL_STEPS);
        if batch.can_run_ahead(in_flight.len(), poll) {
            let s = batch.submit(true)?;
            in_flight.push_back(s);
        }
        let Some(s) = in_flight.pop_front() else {
            return Err(skill_sdk::internal("no step in flight"));
        };
        batch.absorb(s, &mut results)?;
        step += 1;
        if batch.rows.iter().all(|r| r.finish.is_some()) {
            // A step still in flight is dropped with the session.
            break;
        }
        // Stopped rows take queued requests while others still run (a
        // drained batch ends: the queue starts a new one with a fresh
        // cache) and the cache may grow.
        let free: Vec<usize> = (0..b).filter(|&i| batch.rows[i].answered).collect();
        let joinable = in_flight.is_empty() && step < JOIN_STEPS_MAX && batch.may_join();
        if joinable && !free.is_empty() {
            let now = batch.ms();
            let taken = skill_sdk::partial::take_queued(free.len() as u32);
            let mut slot = free.into_iter();
            for text in taken {
                let ix = next_id;
                next_id += 1;
                match parse(m, &text) {
                    Err(e) => skill_sdk::partial::complete(ix, Err(&e)),
                    Ok(req) => {
                        let Some(i) = slot.next() else {
                            let e = skill_sdk::internal("no free row for a queued request");
                            skill_sdk::partial::complete(ix, Err(&e));
                            continue;
                        };
                        batch.rows[i] = Row::new(req, ix, None, now);
                        // The row's old cache entries are not its tokens.
                        batch.cache_mask[i].iter_mut().for_each(|x| *x = 0);
                    }
                }
            }
            // Slots for the joiners' prompts and everyone's remaining tokens.
            let len = (batch.rows.iter())
                .filter(|r| r.fresh)
                .map(|r| r.req.ids.len())
                .max()
                .unwrap_or(1);
            batch.fit(len)?;
        }
    }
    // Rows are answered when they stop; every row stops by its max_new.
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| skill_sdk::internal("a sequence has no response")))
        .collect()
}

fn named(name: &str, value: Tensor) -> NamedTensor {
    NamedTensor {
        name: name.into(),
        value,
    }
}

/// Streams the text `t` completes (whole characters only: a token may end
/// inside one).
fn stream(m: &Loaded, r: &mut Row, t: i64) {
    let toks: Vec<u32> = r.out.iter().map(|&x| x as u32).collect();
    let text = m.tokenizer.decode(&toks, true).unwrap_or_default();
    let upto = if text.ends_with('\u{fffd}') {
        r.streamed
    } else {
        text.len()
    };
    let delta = text.get(r.streamed..upto).unwrap_or("");
    let chunk = serde_json::json!({ "token_id": t, "text": delta });
    skill_sdk::partial::emit(r.index, &chunk.to_string());
    r.streamed = upto.max(r.streamed);
}

/// Answers a row that stopped now; a row of the original batch also keeps
/// its response for `handle`'s result.
fn answer(
    m: &Loaded,
    r: &mut Row,
    now: f64,
    batch_size: usize,
    results: &mut [Option<Response>],
) -> Result<(), Error> {
    let t = Timings {
        prefill_ms: r.first_ms - r.started_ms,
        decode_ms: now - r.first_ms,
        batch_size,
    };
    let f = r.finish.unwrap_or("length");
    let resp = respond::response(m, &r.req, &r.out, f, &t, r.logits.as_ref())?;
    skill_sdk::partial::complete(r.index, Ok(&resp));
    if let Some(slot) = r.result.and_then(|i| results.get_mut(i)) {
        *slot = Some(resp);
    }
    r.answered = true;
    Ok(())
}
