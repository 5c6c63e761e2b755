//! Entity aggregation with the semantics of transformers'
//! `token-classification` pipeline: per-token predictions (`none`), grouped
//! adjacent tokens of one entity (`simple`), and word-level agreement first
//! (`first`, `average`, `max`) before grouping.

use serde_json::{json, Value};

/// How tokens become entities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Strategy {
    None,
    Simple,
    First,
    Average,
    Max,
}

impl Strategy {
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s.to_ascii_lowercase().as_str() {
            "none" => Strategy::None,
            "simple" => Strategy::Simple,
            "first" => Strategy::First,
            "average" => Strategy::Average,
            "max" => Strategy::Max,
            _ => return None,
        })
    }
}

/// One non-special token with its label scores.
pub struct PreEntity {
    /// The vocabulary entry (the text itself for unknown tokens).
    pub word: String,
    pub scores: Vec<f32>,
    pub start: u32,
    pub end: u32,
    /// Position in the encoded sequence.
    pub index: usize,
    pub is_subword: bool,
}

/// A token or word with its label.
struct Labelled {
    label: usize,
    score: f32,
    /// The token strings it is made of.
    tokens: Vec<String>,
    start: u32,
    end: u32,
    index: usize,
}

/// Joins token strings into text (the tokenizer's decoder).
pub type Join<'a> = dyn Fn(Vec<String>) -> Result<String, skill_sdk::Error> + 'a;

/// Entities of one text (every label; the caller drops ignored ones).
pub fn entities(
    pre: Vec<PreEntity>,
    strategy: Strategy,
    labels: &[String],
    join: &Join,
) -> Result<Vec<Value>, skill_sdk::Error> {
    let tokens: Vec<Labelled> = match strategy {
        Strategy::None | Strategy::Simple => pre.into_iter().map(label_token).collect(),
        // A word is its tokens joined, then grouped like a token.
        _ => words(pre)
            .into_iter()
            .map(|w| {
                let mut l = label_word(w, strategy);
                l.tokens = vec![join(std::mem::take(&mut l.tokens))?];
                Ok(l)
            })
            .collect::<Result<_, skill_sdk::Error>>()?,
    };
    let mut out = Vec::new();
    if strategy == Strategy::None {
        for t in tokens {
            out.push(json!({
                "entity": labels[t.label], "score": t.score, "index": t.index,
                "word": t.tokens.concat(), "start": t.start, "end": t.end,
            }));
        }
        return Ok(out);
    }
    for group in groups(&tokens, labels) {
        let first = &group[0];
        let last = &group[group.len() - 1];
        let tag = labels[first.label]
            .split_once('-')
            .map_or(labels[first.label].as_str(), |(_, t)| t);
        let score = mean(group.iter().map(|t| t.score));
        let words: Vec<String> = group.iter().flat_map(|t| t.tokens.clone()).collect();
        out.push(json!({
            "entity_group": tag, "score": score, "word": join(words)?,
            "start": first.start, "end": last.end,
        }));
    }
    Ok(out)
}

fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

fn mean(xs: impl Iterator<Item = f32>) -> f32 {
    let v: Vec<f32> = xs.filter(|x| !x.is_nan()).collect();
    v.iter().sum::<f32>() / v.len().max(1) as f32
}

fn label_token(p: PreEntity) -> Labelled {
    let label = argmax(&p.scores);
    Labelled {
        label,
        score: p.scores[label],
        tokens: vec![p.word],
        start: p.start,
        end: p.end,
        index: p.index,
    }
}

/// Tokens grouped into words: a subword joins the word before it.
fn words(pre: Vec<PreEntity>) -> Vec<Vec<PreEntity>> {
    let mut out: Vec<Vec<PreEntity>> = Vec::new();
    for p in pre {
        match out.last_mut() {
            Some(w) if p.is_subword => w.push(p),
            _ => out.push(vec![p]),
        }
    }
    out
}

/// One word's label by `strategy` (first token, highest-scoring token, or
/// the mean of its tokens' scores).
fn label_word(word: Vec<PreEntity>, strategy: Strategy) -> Labelled {
    let (label, score) = match strategy {
        Strategy::Max => {
            let mut best = &word[0];
            for t in &word[1..] {
                let top =
                    |p: &PreEntity| p.scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                if top(t) > top(best) {
                    best = t;
                }
            }
            let l = argmax(&best.scores);
            (l, best.scores[l])
        }
        Strategy::Average => {
            let n = word[0].scores.len();
            let avg: Vec<f32> = (0..n)
                .map(|k| mean(word.iter().map(|t| t.scores[k])))
                .collect();
            let l = argmax(&avg);
            (l, avg[l])
        }
        _ => {
            let l = argmax(&word[0].scores);
            (l, word[0].scores[l])
        }
    };
    Labelled {
        label,
        score,
        start: word[0].start,
        end: word[word.len() - 1].end,
        index: word[0].index,
        tokens: word.into_iter().map(|t| t.word).collect(),
    }
}

/// `B-`/`I-` prefix and tag of a label (no prefix reads as `I-`).
fn tag(label: &str) -> (bool, &str) {
    match label.split_at_checked(2) {
        Some(("B-", t)) => (true, t),
        Some(("I-", t)) => (false, t),
        _ => (false, label),
    }
}

/// Adjacent tokens of one tag, a `B-` starting a new group.
fn groups<'a>(tokens: &'a [Labelled], labels: &[String]) -> Vec<Vec<&'a Labelled>> {
    let mut out: Vec<Vec<&Labelled>> = Vec::new();
    for t in tokens {
        let (begin, tg) = tag(&labels[t.label]);
        let joins = out.last().and_then(|g| g.last()).is_some_and(|last| {
            let (_, last_tag) = tag(&labels[last.label]);
            tg == last_tag && !begin
        });
        match out.last_mut() {
            Some(g) if joins => g.push(t),
            _ => out.push(vec![t]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pre(word: &str, scores: &[f32], start: u32, sub: bool) -> PreEntity {
        PreEntity {
            word: word.into(),
            scores: scores.to_vec(),
            start,
            end: start + word.trim_start_matches("##").len() as u32,
            index: 0,
            is_subword: sub,
        }
    }

    #[test]
    fn b_starts_a_new_group() {
        let labels: Vec<String> = ["O", "B-PER", "I-PER"].map(String::from).to_vec();
        let join = |t: Vec<String>| Ok(t.join(" "));
        let p = vec![
            pre("ann", &[0.1, 0.8, 0.1], 0, false),
            pre("lee", &[0.1, 0.2, 0.7], 4, false),
            pre("bob", &[0.1, 0.8, 0.1], 8, false),
            pre("the", &[0.9, 0.05, 0.05], 12, false),
        ];
        let e = entities(p, Strategy::Simple, &labels, &join).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[2]["entity_group"], "O");
        assert_eq!(e[0]["word"], "ann lee");
        assert_eq!(e[0]["entity_group"], "PER");
        assert_eq!(e[1]["start"], 8);
    }

    #[test]
    fn word_strategies_agree_on_word_boundaries() {
        let labels: Vec<String> = ["O", "B-LOC", "I-LOC"].map(String::from).to_vec();
        let join = |t: Vec<String>| Ok(t.concat().replace("##", ""));
        let word = || {
            vec![
                pre("par", &[0.6, 0.3, 0.1], 0, false),
                pre("##is", &[0.0, 0.9, 0.1], 3, true),
            ]
        };
        let f = entities(word(), Strategy::First, &labels, &join).unwrap();
        assert_eq!(f[0]["entity_group"], "O");
        let m = entities(word(), Strategy::Max, &labels, &join).unwrap();
        assert_eq!(m[0]["word"], "paris");
        assert_eq!(
            (m[0]["start"].as_u64(), m[0]["end"].as_u64()),
            (Some(0), Some(5))
        );
        let a = entities(word(), Strategy::Average, &labels, &join).unwrap();
        assert_eq!(a[0]["entity_group"], "LOC");
    }
}
