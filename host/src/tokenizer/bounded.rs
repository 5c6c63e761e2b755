//! Bounded tokenization: a text that truncation will cut is tokenized only
//! as far as the kept tokens need, not in full.
//!
//! With right truncation to `max_length` tokens, the host tokenizes a
//! prefix of the text that grows geometrically (from a few bytes per kept
//! token) until the prefix has more than `max_length` *stable* tokens:
//! tokens that the rest of the text cannot change. Encoding that prefix
//! then truncating it gives exactly the ids, offsets, word ids, masks and
//! `truncated` flag of encoding the whole text then truncating it. Left
//! truncation takes a suffix the same way (without offsets: word ids count
//! the words of the whole text).
//!
//! Which tokens are stable: the pre-tokenizer must split at whitespace
//! (`BertPreTokenizer`, `Whitespace`, `WhitespaceSplit`, `ByteLevel` with
//! its regex, `Metaspace` with `split`, or a `Sequence` of such splitters
//! and other splitters that look at single characters), the normalizers
//! must work character by character (or on whitespace runs only), and the
//! model must encode each pre-tokenized word on its own (no BPE dropout).
//! Then, for a whitespace run starting at byte `w` inside the prefix, the
//! words before `w` and their tokens are the same whatever follows the
//! run: a token ending at or before `w` is stable. Under a suffix, a token
//! starting at or after the end `r` of a whitespace run (preceded by text
//! of the suffix) is stable. BERT's normalizer isolates CJK ideographs with
//! spaces, so the start of such a character is a boundary too: CJK text
//! without spaces is bounded as well.
//!
//! Other tokenizers (custom `Split` regexes, FlauBERT's port, added tokens
//! containing whitespace, pairs with `only_first`/`only_second`
//! truncation) and texts without a usable boundary are tokenized in full.

use std::sync::OnceLock;

use serde_json::Value;
use tokenizers::{
    PostProcessor, PostProcessorWrapper, Tokenizer, TruncationDirection, TruncationStrategy,
};
use unicode_segmentation::UnicodeSegmentation;

use super::TokenizerError;

/// Bytes of text per kept token that the first prefix takes.
const FIRST_BYTES_PER_TOKEN: usize = 8;
/// The first prefix is at least this long.
const FIRST_SPAN: usize = 1024;

/// Which characters of the original text the pre-tokenizer surely splits
/// at (after normalization).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Splits {
    /// Space, tab, newline, carriage return.
    AsciiWhitespace,
    /// Only U+0020 (`Metaspace` splits at nothing else; SentencePiece's
    /// normalizers may drop or map other characters).
    Space,
}

/// How a tokenizer's truncation can be bounded.
pub(crate) struct Bounds {
    /// The tokenizer without truncation, padding or post-processor; made
    /// on the first long text.
    probe: OnceLock<Result<Tokenizer, String>>,
    /// The tokenizer it is made from (a copy: open is rare, texts are many).
    source: Tokenizer,
    splits: Splits,
    /// CJK ideographs are isolated by the normalizer (BERT).
    cjk: bool,
    /// A normalizer works on grapheme clusters (SentencePiece's).
    graphemes: bool,
    /// Stable tokens a part must have: more than truncation keeps.
    need: usize,
    direction: TruncationDirection,
    /// Pairs can be bounded (longest-first truncation).
    pairs: bool,
    /// Tokens kept of a pair are odd: which side gets the extra one
    /// depends on the two full lengths.
    pair_odd: bool,
}

/// What of a text the host tokenizes.
#[derive(Debug, PartialEq)]
pub(crate) enum Part<'a> {
    Whole(&'a str),
    /// A prefix or suffix whose truncated encoding equals the whole text's.
    Cut(&'a str),
}

impl<'a> Part<'a> {
    pub(crate) fn text(&self) -> &'a str {
        match self {
            Part::Whole(t) | Part::Cut(t) => t,
        }
    }

    pub(crate) fn is_cut(&self) -> bool {
        matches!(self, Part::Cut(_))
    }
}

impl Bounds {
    /// The bounds of a tokenizer with truncation, or `None` when its
    /// encodings cannot be bounded.
    pub(crate) fn new(inner: &Tokenizer, add_special: bool, with_offsets: bool) -> Option<Bounds> {
        let trunc = inner.get_truncation()?;
        if trunc.direction == TruncationDirection::Left && with_offsets {
            return None;
        }
        if let tokenizers::models::ModelWrapper::BPE(b) = inner.get_model() {
            if b.dropout.is_some_and(|p| p > 0.0) {
                return None;
            }
        }
        let added = inner.get_added_tokens_decoder();
        if added
            .values()
            .any(|t| t.content.chars().any(char::is_whitespace))
        {
            return None;
        }
        let norm = match inner.get_normalizer() {
            Some(n) => serde_json::to_value(n).ok()?,
            None => Value::Null,
        };
        let pre = serde_json::to_value(inner.get_pre_tokenizer()?).ok()?;
        let n = normalizer_traits(&norm)?;
        let p = pre_tokenizer_traits(&pre)?;
        if !p.splits_whitespace {
            return None;
        }
        let splits = match p.only_metaspace || n.sentencepiece {
            true => Splits::Space,
            false => Splits::AsciiWhitespace,
        };
        let pair_added = match add_special {
            true => inner
                .get_post_processor()
                .map_or(0, |pp| pp.added_tokens(true)),
            false => 0,
        };
        Some(Bounds {
            probe: OnceLock::new(),
            source: inner.clone(),
            splits,
            cjk: n.cjk,
            graphemes: n.sentencepiece,
            need: trunc.max_length.saturating_add(1),
            direction: trunc.direction,
            pairs: trunc.strategy == TruncationStrategy::LongestFirst,
            pair_odd: trunc.max_length.saturating_sub(pair_added) % 2 == 1,
        })
    }

    /// The parts of a pair: each side cut as [`part`](Self::part) cuts it
    /// when truncation is longest-first. With both sides cut and an odd
    /// number of tokens kept, the longer side keeps one more: the parts
    /// then keep the order of the full texts' token counts (the texts are
    /// counted in full, within `max_bytes`).
    pub(crate) fn pair<'t>(
        &self,
        a: &'t str,
        b: &'t str,
        max_bytes: usize,
    ) -> Result<(Part<'t>, Part<'t>), TokenizerError> {
        if !self.pairs {
            return Ok((whole(a, max_bytes)?, whole(b, max_bytes)?));
        }
        let (pa, pb) = (self.part(a, max_bytes)?, self.part(b, max_bytes)?);
        if !self.pair_odd {
            return Ok((pa, pb));
        }
        // Truncation swaps the sides when the first is longer; a cut side
        // must compare with the other as its full text does.
        match (pa.is_cut(), pb.is_cut()) {
            (false, false) => Ok((pa, pb)),
            // Longer than all of `b`, as `a` is.
            (true, false) => Ok((self.part_with(a, max_bytes, self.count(b)? + 1)?, pb)),
            // At least as long as all of `a`, as `b` is.
            (false, true) => Ok((pa, self.part_with(b, max_bytes, self.count(a)?)?)),
            (true, true) => {
                let la = self.count(whole(a, max_bytes)?.text())?;
                let lb = self.count(whole(b, max_bytes)?.text())?;
                let (ta, tb) = (self.count(pa.text())?, self.count(pb.text())?);
                let (pa, pb) = match la > lb {
                    true => (self.part_with(a, max_bytes, tb + 1)?, pb),
                    false => (pa, self.part_with(b, max_bytes, ta)?),
                };
                let (ta, tb) = (self.count(pa.text())?, self.count(pb.text())?);
                match (ta > tb) == (la > lb) {
                    true => Ok((pa, pb)),
                    false => Ok((Part::Whole(a), Part::Whole(b))),
                }
            }
        }
    }

    /// The part of `text` to tokenize: a prefix (suffix) with more stable
    /// tokens than truncation keeps, or the whole text. Nothing over
    /// `max_bytes` is tokenized.
    pub(crate) fn part<'t>(
        &self,
        text: &'t str,
        max_bytes: usize,
    ) -> Result<Part<'t>, TokenizerError> {
        self.part_with(text, max_bytes, self.need)
    }

    /// A part with at least `need` stable tokens (at least [`Bounds::need`]).
    fn part_with<'t>(
        &self,
        text: &'t str,
        max_bytes: usize,
        need: usize,
    ) -> Result<Part<'t>, TokenizerError> {
        let need = need.max(self.need);
        let mut span = need.saturating_mul(FIRST_BYTES_PER_TOKEN).max(FIRST_SPAN);
        loop {
            let now = span.min(max_bytes);
            if text.len() <= now {
                return Ok(Part::Whole(text));
            }
            let found = match self.direction {
                TruncationDirection::Right => self.stable_prefix(text, now, need)?,
                TruncationDirection::Left => self.stable_suffix(text, now, need)?,
            };
            if let Some(p) = found {
                return Ok(Part::Cut(p));
            }
            if now == max_bytes {
                return Err(TokenizerError::TooLong {
                    bytes: text.len(),
                    max: max_bytes,
                });
            }
            span = span.saturating_mul(2);
        }
    }

    /// Tokens of `text` (no special tokens, no truncation).
    fn count(&self, text: &str) -> Result<usize, TokenizerError> {
        Ok(self.offsets(text)?.len())
    }

    fn probe(&self) -> Result<&Tokenizer, TokenizerError> {
        self.probe
            .get_or_init(|| {
                let mut t = self.source.clone();
                t.with_truncation(None).map_err(|e| e.to_string())?;
                t.with_padding(None);
                t.with_post_processor(None::<PostProcessorWrapper>);
                Ok(t)
            })
            .as_ref()
            .map_err(|e| TokenizerError::Encode(e.clone()))
    }

    /// Byte offsets of the tokens of `part` (no special tokens).
    fn offsets(&self, part: &str) -> Result<Vec<(usize, usize)>, TokenizerError> {
        let e = self
            .probe()?
            .encode(part, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(e.get_offsets().to_vec())
    }

    /// `text[..span]` (to a character boundary) when it has enough stable
    /// tokens.
    fn stable_prefix<'t>(
        &self,
        text: &'t str,
        span: usize,
        need: usize,
    ) -> Result<Option<&'t str>, TokenizerError> {
        let cut = floor_boundary(text, span);
        let part = &text[..cut];
        let Some(w) = self.last_boundary(part) else {
            return Ok(None);
        };
        let stable = self.offsets(part)?.iter().take_while(|o| o.1 <= w).count();
        Ok((stable >= need).then_some(part))
    }

    /// `text[len - span..]` (to a character boundary) when it has enough
    /// stable tokens.
    fn stable_suffix<'t>(
        &self,
        text: &'t str,
        span: usize,
        need: usize,
    ) -> Result<Option<&'t str>, TokenizerError> {
        let cut = ceil_boundary(text, text.len().saturating_sub(span));
        let part = &text[cut..];
        let Some(r) = self.first_boundary(part) else {
            return Ok(None);
        };
        let stable = self
            .offsets(part)?
            .iter()
            .rev()
            .take_while(|o| o.0 >= r)
            .count();
        Ok((stable >= need).then_some(part))
    }

    fn splits_at(&self, c: char) -> bool {
        match self.splits {
            Splits::AsciiWhitespace => matches!(c, ' ' | '\t' | '\n' | '\r'),
            Splits::Space => c == ' ',
        }
    }

    /// Whether `prev` and `next` are in different grapheme clusters (a
    /// prepended concatenation mark joins the following space).
    fn separate(&self, prev: char, next: char) -> bool {
        if !self.graphemes {
            return true;
        }
        let mut pair = String::with_capacity(8);
        pair.push(prev);
        pair.push(next);
        pair.graphemes(true).count() == 2
    }

    /// The last byte `w > 0` of `part` that starts a whitespace run (with a
    /// split character) or a CJK ideograph: tokens ending at or before it
    /// are stable.
    fn last_boundary(&self, part: &str) -> Option<usize> {
        let mut it = part.char_indices().rev().peekable();
        while let Some((at, c)) = it.next() {
            let &(_, prev) = it.peek()?;
            if self.cjk && is_cjk(c) && !prev.is_whitespace() && self.separate(prev, c) {
                return Some(at);
            }
            if !c.is_whitespace() {
                continue;
            }
            // The run's start, and whether it holds a split character.
            let (mut start, mut first, mut splits) = (at, c, self.splits_at(c));
            while let Some(&(a, p)) = it.peek() {
                if !p.is_whitespace() {
                    break;
                }
                (start, first) = (a, p);
                splits |= self.splits_at(p);
                it.next();
            }
            let &(_, before) = it.peek()?;
            if splits && self.separate(before, first) {
                return Some(start);
            }
        }
        None
    }

    /// The first byte `r` of `part` that ends a whitespace run (with a
    /// split character) preceded by other text of `part`, or starts a CJK
    /// ideograph so preceded: tokens starting at or after it are stable.
    fn first_boundary(&self, part: &str) -> Option<usize> {
        let mut it = part.char_indices().peekable();
        let mut prev = it.next()?.1;
        while let Some((at, c)) = it.next() {
            let before = std::mem::replace(&mut prev, c);
            if before.is_whitespace() {
                continue;
            }
            if self.cjk && is_cjk(c) && self.separate(before, c) {
                return Some(at);
            }
            if !c.is_whitespace() {
                continue;
            }
            let mut splits = self.splits_at(c);
            while let Some(&(_, n)) = it.peek() {
                if !n.is_whitespace() {
                    break;
                }
                splits |= self.splits_at(n);
                prev = n;
                it.next();
            }
            let &(r, _) = it.peek()?;
            if splits && self.separate(before, c) {
                return Some(r);
            }
        }
        None
    }
}

/// What the normalizers allow.
struct NormTraits {
    cjk: bool,
    sentencepiece: bool,
}

/// Normalizers that work per character (or per grapheme cluster, or on
/// whitespace runs only); `None` for any other.
fn normalizer_traits(n: &Value) -> Option<NormTraits> {
    let mut t = NormTraits {
        cjk: false,
        sentencepiece: false,
    };
    let list: Vec<&Value> = match n {
        Value::Null => return Some(t),
        v if v["type"] == "Sequence" => v["normalizers"].as_array()?.iter().collect(),
        v => vec![v],
    };
    for v in list {
        match v["type"].as_str()? {
            "NFC" | "NFD" | "NFKC" | "NFKD" | "Lowercase" | "StripAccents" | "Strip"
            | "Prepend" => {}
            "BertNormalizer" => t.cjk |= v["handle_chinese_chars"] == true,
            "Precompiled" | "Nmt" => t.sentencepiece = true,
            "Replace" if replace_is_local(v) => {}
            _ => return None,
        }
    }
    Some(t)
}

/// A `Replace` of a literal without whitespace, or of whitespace runs by
/// a space.
fn replace_is_local(v: &Value) -> bool {
    const WHITESPACE_RUNS: [&str; 6] = [
        r"\s+",
        r"\s{2,}",
        r"\s{2,}|[\n\r\t]",
        r" {2,}",
        r"\n",
        r" +",
    ];
    let content = v["content"].as_str().unwrap_or("\u{0}");
    match (&v["pattern"]["String"], &v["pattern"]["Regex"]) {
        (Value::String(s), _) => !s.is_empty() && !s.chars().any(char::is_whitespace),
        (_, Value::String(r)) => WHITESPACE_RUNS.contains(&r.as_str()) && content == " ",
        _ => false,
    }
}

/// What the pre-tokenizers allow.
struct PreTraits {
    splits_whitespace: bool,
    only_metaspace: bool,
}

/// Pre-tokenizers that split at whitespace, or look at single characters;
/// `None` for any other.
fn pre_tokenizer_traits(p: &Value) -> Option<PreTraits> {
    let list: Vec<&Value> = match p["type"].as_str()? {
        "Sequence" => p["pretokenizers"].as_array()?.iter().collect(),
        _ => vec![p],
    };
    let (mut metaspace, mut other) = (false, false);
    for v in list {
        match v["type"].as_str()? {
            "BertPreTokenizer" | "Whitespace" | "WhitespaceSplit" => other = true,
            "ByteLevel" => other |= v["use_regex"] != false,
            "Metaspace" if v["split"] != false => metaspace = true,
            "Metaspace" | "Punctuation" | "Digits" | "CharDelimiterSplit" => {}
            _ => return None,
        }
    }
    Some(PreTraits {
        splits_whitespace: metaspace || other,
        only_metaspace: !other,
    })
}

/// CJK ideographs (a subset of those BERT's normalizer isolates).
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF | 0x20000..=0x2A6DF)
}

/// The largest character boundary of `s` at or before `i`.
fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The smallest character boundary of `s` at or after `i`.
fn ceil_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

impl super::HostTokenizer {
    /// [`encode_batch`](super::HostTokenizer::encode_batch) tokenizing no
    /// more than `max_bytes` of any text: a text that truncation cuts is
    /// tokenized as far as its kept tokens need; a longer text that cannot
    /// be so bounded is refused before any tokenization.
    pub fn encode_batch_within(
        &self,
        texts: Vec<String>,
        max_bytes: usize,
    ) -> Result<super::EncodedBatch, TokenizerError> {
        let parts = texts
            .iter()
            .map(|t| self.part(t, max_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        if !parts.iter().any(Part::is_cut) {
            return self.encode_batch(texts);
        }
        self.encode_batch(parts.iter().map(|p| p.text().to_string()).collect())
    }

    /// [`encode_pairs`](super::HostTokenizer::encode_pairs) under the same
    /// bound, for each text of a pair.
    pub fn encode_pairs_within(
        &self,
        pairs: Vec<(String, String)>,
        max_bytes: usize,
    ) -> Result<super::EncodedBatch, TokenizerError> {
        let mut cut = false;
        let mut parts = Vec::with_capacity(pairs.len());
        for (a, b) in &pairs {
            let (pa, pb) = match &self.bounds {
                Some(bd) => bd.pair(a, b, max_bytes)?,
                None => (whole(a, max_bytes)?, whole(b, max_bytes)?),
            };
            cut |= pa.is_cut() || pb.is_cut();
            parts.push((pa, pb));
        }
        if !cut {
            return self.encode_pairs(pairs);
        }
        self.encode_pairs(
            parts
                .iter()
                .map(|(a, b)| (a.text().to_string(), b.text().to_string()))
                .collect(),
        )
    }

    /// What of `text` to tokenize.
    fn part<'t>(&self, text: &'t str, max_bytes: usize) -> Result<Part<'t>, TokenizerError> {
        match &self.bounds {
            Some(b) => b.part(text, max_bytes),
            None => whole(text, max_bytes),
        }
    }
}

/// All of `text`, when it is within `max_bytes`.
fn whole(text: &str, max_bytes: usize) -> Result<Part<'_>, TokenizerError> {
    match text.len() <= max_bytes {
        true => Ok(Part::Whole(text)),
        false => Err(TokenizerError::TooLong {
            bytes: text.len(),
            max: max_bytes,
        }),
    }
}

#[cfg(test)]
#[path = "bounded_tests.rs"]
mod tests;
