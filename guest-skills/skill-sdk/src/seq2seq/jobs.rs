//! The requests the generation loop ([`super::run`]) takes and the
//! answers it gives: a job's settings, decoder prompt and what it asks to
//! keep; a finished request's tokens and measures.

use crate::generation::settings::Settings;
use crate::generation::timestamps::TimestampRules;
use crate::Tensor;

/// One token of a decoder prompt.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptToken {
    Fixed(i64),
    /// The likeliest of these ids after the tokens before it.
    Best(Vec<i64>),
}

/// One request to decode.
pub struct Job {
    pub settings: Settings,
    /// The decoder prompt; the first token is fixed.
    pub prompt: Vec<PromptToken>,
    /// Encoder input ids (encoder n-gram bans, a joiner's source length);
    /// empty for other inputs.
    pub source: Vec<i64>,
    /// Whisper's timestamp rules, when timestamps are asked.
    pub timestamps: Option<TimestampRules>,
    /// Keep the logits of the first generated position.
    pub return_logits: bool,
    /// Sum the log-probabilities of the generated tokens
    /// ([`Finished::logprob_sum`]); such rows get the whole logits.
    pub scores: bool,
    /// Keep the raw logits of the position after prompt token `i`
    /// ([`Finished::logits_at`]).
    pub logits_at: Option<usize>,
    /// Its index in the host's batch, for streaming and early answers
    /// ([`Task::early`]); none: neither.
    pub index: Option<u32>,
}

/// Why a request stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Eos,
    Length,
    Stop,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Eos => "eos",
            Finish::Length => "length",
            Finish::Stop => "stop",
        }
    }
}

/// A request that stopped.
pub struct Finished {
    /// The decoder prompt as run (chosen tokens filled in).
    pub prompt: Vec<i64>,
    /// The generated tokens (the best beam's, for beam search).
    pub tokens: Vec<i64>,
    pub finish: Finish,
    /// Raw logits of the first generated position (when asked).
    pub first_logits: Option<Tensor>,
    /// With [`Job::scores`]: the sum over the generated tokens (end of text
    /// included) of each token's log-probability, renormalised over the
    /// tokens the processors leave (sampled: over the sampler's candidates).
    pub logprob_sum: Option<f64>,
    /// With [`Job::logits_at`]: those raw logits.
    pub logits_at: Option<Vec<f32>>,
    /// Milliseconds spent encoding the batch, and decoding until this stop.
    pub encode_ms: f64,
    pub decode_ms: f64,
    /// Decoder rows of the loop it ran in.
    pub rows: usize,
}
