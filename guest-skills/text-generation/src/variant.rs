//! Which decoder graph a generation step runs: its kind ([`Step`]: a
//! prefill, a decode step, a fed decode step or an extend step, with or
//! without images) and its optional outputs and inputs (sampling
//! candidates, logits, repetition penalty). Each variant is its own graph.

use skill_sdk::Error;

/// What a step feeds the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// A prompt of any length that starts the session (its cache is
    /// empty); with `images`, a LLaVA or Qwen2-VL prompt's images go
    /// through the vision tower in this step.
    Prefill { images: bool },
    /// One new token per sequence after the session's cache. `fed`: no
    /// `input_ids`; each row's token is the previous run's `next_token`,
    /// kept as state `token`, so the step can be submitted before that
    /// run's outputs are read.
    Decode { fed: bool },
    /// Any number of new tokens per sequence after the cache, causal among
    /// themselves (a queued prompt joining a running batch), with its
    /// images as in a prefill.
    Extend { images: bool },
}

impl Default for Step {
    fn default() -> Step {
        Step::Prefill { images: false }
    }
}

impl Step {
    /// The step of a generation loop's run: the session's first (`prefill`)
    /// or not, of one or `several` tokens per row, `fed` from the last run,
    /// with `images`.
    pub fn of(prefill: bool, several: bool, fed: bool, images: bool) -> Result<Step, Error> {
        let step = match (prefill, several) {
            (true, _) => Step::Prefill { images },
            (false, true) => Step::Extend { images },
            (false, false) => Step::Decode { fed },
        };
        if fed && !matches!(step, Step::Decode { .. }) {
            return Err(skill_sdk::internal(
                "a fed step is a decode step of one token per row",
            ));
        }
        if images && !step.images() {
            return Err(skill_sdk::internal(
                "images go into a prefill or extend step of a llava model",
            ));
        }
        Ok(step)
    }

    /// Whether the step continues the session's cache.
    pub fn decodes(self) -> bool {
        !matches!(self, Step::Prefill { .. })
    }

    /// Whether the step takes images.
    pub fn images(self) -> bool {
        matches!(
            self,
            Step::Prefill { images: true } | Step::Extend { images: true }
        )
    }

    /// Whether each row takes one token from the last run's state.
    pub fn fed(self) -> bool {
        self == Step::Decode { fed: true }
    }
}

/// Which decoder graph: the step and its optional parts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Variant {
    pub step: Step,
    /// Outputs `top_values`/`top_indices` [batch, K] for sampling (greedy
    /// generation needs only `next_token`).
    pub sample: bool,
    /// Output the raw last-position `logits` [batch, vocab].
    pub logits: bool,
    /// Inputs `seen` (bool [batch, vocab]: tokens already in the sequence)
    /// and `penalty` (f32 [batch, 1]) apply transformers' repetition penalty
    /// before argmax and top-k: seen logits below 0 are multiplied by the
    /// penalty, others divided by it.
    pub penalty: bool,
}

impl Variant {
    /// The graph name's part after the architecture and before the cache
    /// (`decode`), and after the cache (`-sample-fed`).
    pub fn name_parts(&self) -> (&'static str, String) {
        let kind = match self.step {
            Step::Prefill { .. } => "prefill",
            Step::Decode { .. } => "decode",
            Step::Extend { .. } => "extend",
        };
        let parts = [
            (self.sample, "-sample"),
            (self.logits, "-logits"),
            (self.penalty, "-penalty"),
            (self.step.fed(), "-fed"),
            (self.step.images(), "-images"),
        ];
        let suffix = parts.iter().filter(|(on, _)| *on).map(|(_, s)| *s);
        (kind, suffix.collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_names() {
        let step = |p, s, f, i| Step::of(p, s, f, i).ok();
        assert_eq!(
            step(true, true, false, true),
            Some(Step::Prefill { images: true })
        );
        assert_eq!(
            step(false, false, true, false),
            Some(Step::Decode { fed: true })
        );
        assert_eq!(
            step(false, true, false, true),
            Some(Step::Extend { images: true })
        );
        // Fed steps are one-token decode steps; images need a prompt.
        assert_eq!(step(false, true, true, false), None);
        assert_eq!(step(true, true, true, false), None);
        assert_eq!(step(false, false, false, true), None);
        let v = Variant {
            step: Step::Decode { fed: true },
            sample: true,
            logits: false,
            penalty: true,
        };
        assert_eq!(
            v.name_parts(),
            ("decode", "-sample-penalty-fed".to_string())
        );
    }
}
