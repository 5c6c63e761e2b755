//! FlauBERT's tokenizer for checkpoints without a tokenizer.json: a port of
//! transformers' slow `FlaubertTokenizer` (vocab.json, merges.txt and
//! tokenizer_config.json), producing `tokenizers` encodings with character
//! offsets so that the host's truncation, pair template and padding apply.
//!
//! Per text, as transformers does: split on the added tokens
//! (tokenizer_config.json's `added_tokens_decoder`, specials kept whole,
//! `lstrip`/`rstrip` honoured); each other piece: `` ` ` ``/`''` -> `"`,
//! NFC, lower case when `do_lowercase`, Moses for "fr" (see [`super::moses`]),
//! then XLM's BPE over each Moses word (`</w>` marks a word's last piece,
//! merges by rank, pieces outside the vocabulary become `unk_token`). The
//! BPE is ported rather than taken from the `tokenizers` crate: XLM merges
//! may produce pieces outside the vocabulary (they become `<unk>`), which
//! the crate's BPE model refuses to load. Every piece maps back to the span
//! of the caller's characters it came from.
//!
//! `XLMTokenizer` (language-specific Moses, accent stripping) and added
//! tokens with `single_word` are refused with [`XlmError`].

use std::collections::{HashMap, HashSet};
use std::path::Path;

use tokenizers::{Encoding, NormalizedString};

use super::moses::{self, py_space, Aligned};

/// Failures to load or run the tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum XlmError {
    #[error("{file}: {message}")]
    Load { file: String, message: String },
    #[error("{0}")]
    Moses(#[from] moses::MosesError),
    #[error("the text could not be mapped back to its characters: {0}")]
    Offsets(String),
}

/// One added token of tokenizer_config.json.
#[derive(Clone, Debug)]
struct Added {
    content: String,
    id: u32,
    lstrip: bool,
    rstrip: bool,
}

/// A FlaubertTokenizer.
#[derive(Debug)]
pub struct XlmTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    added: Vec<Added>,
    special_ids: HashSet<u32>,
    unk_id: u32,
    lowercase: bool,
    /// tokenizer_config.json's tokens by role (`bos_token`, ...).
    pub roles: HashMap<String, String>,
}

impl XlmTokenizer {
    /// Opens the tokenizer of model directory `dir`: `None` when its
    /// tokenizer_config.json names no XLM-style class.
    pub fn open(dir: &Path) -> Result<Option<XlmTokenizer>, XlmError> {
        let read = |name: &str| -> Result<String, XlmError> {
            std::fs::read_to_string(dir.join(name)).map_err(|e| XlmError::Load {
                file: dir.join(name).display().to_string(),
                message: e.to_string(),
            })
        };
        let bad = |file: &str, message: String| XlmError::Load {
            file: dir.join(file).display().to_string(),
            message,
        };
        let json = |name: &str| -> Result<Option<serde_json::Value>, XlmError> {
            match read(name) {
                Ok(t) => serde_json::from_str(&t)
                    .map(Some)
                    .map_err(|e| bad(name, e.to_string())),
                Err(_) => Ok(None),
            }
        };
        let cfg = json("tokenizer_config.json")?.unwrap_or_default();
        // Without a tokenizer class (hub checkpoints that ship only
        // vocab.json and merges.txt), transformers goes by the model type.
        let model_type = json("config.json")?.and_then(|c| {
            c.get("model_type")
                .and_then(|t| t.as_str())
                .map(String::from)
        });
        let class =
            cfg.get("tokenizer_class")
                .and_then(|c| c.as_str())
                .or(match model_type.as_deref() {
                    Some("flaubert") => Some("FlaubertTokenizer"),
                    Some("xlm") => Some("XLMTokenizer"),
                    _ => None,
                });
        match class {
            Some("FlaubertTokenizer") => {}
            Some("XLMTokenizer") => {
                return Err(bad(
                    "tokenizer_config.json",
                    "XLMTokenizer (per-language Moses, lowercasing with accent removal) is not \
                     supported; FlaubertTokenizer is"
                        .into(),
                ))
            }
            _ => return Ok(None),
        }
        let vocab: HashMap<String, u32> = serde_json::from_str(&read("vocab.json")?)
            .map_err(|e| bad("vocab.json", e.to_string()))?;
        // transformers reads `read().split("\n")[:-1]`, the first two fields.
        let merges = read("merges.txt")?;
        let mut lines: Vec<&str> = merges.split('\n').collect();
        lines.pop();
        let mut ranks = HashMap::new();
        for (i, line) in lines.iter().enumerate() {
            let mut f = line.split_whitespace();
            match (f.next(), f.next()) {
                (Some(a), Some(b)) => {
                    ranks.entry((a.to_string(), b.to_string())).or_insert(i);
                }
                _ => {
                    return Err(bad(
                        "merges.txt",
                        format!("line {}: `{line}` is not a pair", i + 1),
                    ))
                }
            }
        }
        let role = |k: &str, default: &str| -> String {
            match cfg.get(k) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or(default)
                    .to_string(),
                None => default.to_string(),
            }
        };
        let mut roles = HashMap::new();
        for (k, d) in [
            ("bos_token", "<s>"),
            ("sep_token", "</s>"),
            ("cls_token", "</s>"),
            ("pad_token", "<pad>"),
            ("unk_token", "<unk>"),
            ("mask_token", "<special1>"),
        ] {
            roles.insert(k.to_string(), role(k, d));
        }
        let id = |t: &str, file: &str| -> Result<u32, XlmError> {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| bad(file, format!("`{t}` is not in vocab.json")))
        };
        let unk_id = id(&roles["unk_token"], "tokenizer_config.json")?;
        let mut added = Vec::new();
        let mut special_ids: HashSet<u32> = HashSet::new();
        if let Some(map) = cfg.get("added_tokens_decoder").and_then(|m| m.as_object()) {
            for (k, v) in map {
                let flag = |f: &str| v.get(f).and_then(|b| b.as_bool()).unwrap_or(false);
                let content = v.get("content").and_then(|c| c.as_str()).unwrap_or("");
                let tid: u32 = k
                    .parse()
                    .map_err(|_| bad("tokenizer_config.json", format!("added token id `{k}`")))?;
                if flag("single_word") {
                    return Err(bad(
                        "tokenizer_config.json",
                        format!("added token `{content}`: `single_word` is not supported"),
                    ));
                }
                if content.is_empty() {
                    continue;
                }
                if flag("special") {
                    special_ids.insert(tid);
                }
                added.push(Added {
                    content: content.to_string(),
                    id: tid,
                    lstrip: flag("lstrip"),
                    rstrip: flag("rstrip"),
                });
            }
        }
        for t in roles.values() {
            if let Some(&i) = vocab.get(t) {
                special_ids.insert(i);
                if !added.iter().any(|a| &a.content == t) {
                    added.push(Added {
                        content: t.clone(),
                        id: i,
                        lstrip: false,
                        rstrip: false,
                    });
                }
            }
        }
        Ok(Some(XlmTokenizer {
            vocab,
            ranks,
            added,
            special_ids,
            unk_id,
            lowercase: cfg
                .get("do_lowercase")
                .and_then(|b| b.as_bool())
                .unwrap_or(false),
            roles,
        }))
    }

    pub fn vocab(&self) -> &HashMap<String, u32> {
        &self.vocab
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// One text as an encoding (no special tokens added; offsets in
    /// characters of `text`; one word per Moses token).
    pub fn encode(&self, text: &str) -> Result<Encoding, XlmError> {
        let mut ids = Vec::new();
        let mut tokens = Vec::new();
        let mut offsets = Vec::new();
        let mut words = Vec::new();
        let mut word = 0u32;
        for (piece, base, added) in self.split_added(text) {
            if let Some(id) = added {
                ids.push(id);
                tokens.push(piece.to_string());
                offsets.push((base as usize, (base as usize) + piece.chars().count()));
                words.push(Some(word));
                word += 1;
                continue;
            }
            for w in self.words(piece, base)? {
                let chars: Vec<char> = w.chars.clone();
                let mut at = 0;
                for p in self.bpe(&w.text()) {
                    let n = p.trim_end_matches("</w>").chars().count();
                    let (s, e) = w.span(at, (at + n).min(chars.len()));
                    at += n;
                    ids.push(self.vocab.get(&p).copied().unwrap_or(self.unk_id));
                    tokens.push(p);
                    offsets.push((s as usize, e as usize));
                    words.push(Some(word));
                }
                word += 1;
            }
        }
        let n = ids.len();
        Ok(Encoding::new(
            ids,
            vec![0; n],
            tokens,
            words,
            offsets,
            vec![0; n],
            vec![1; n],
            Vec::new(),
            Default::default(),
        ))
    }

    /// transformers' split on added tokens: leftmost, then longest match;
    /// (piece, its first character's index, the added token's id).
    fn split_added<'a>(&self, text: &'a str) -> Vec<(&'a str, u32, Option<u32>)> {
        let mut parts: Vec<(&str, Option<&Added>)> = Vec::new();
        let mut rest = 0;
        while rest < text.len() {
            let best = self
                .added
                .iter()
                .filter_map(|a| text[rest..].find(&a.content).map(|p| (rest + p, a)))
                .min_by(|x, y| {
                    x.0.cmp(&y.0)
                        .then(y.1.content.len().cmp(&x.1.content.len()))
                });
            match best {
                Some((at, a)) => {
                    if at > rest {
                        parts.push((&text[rest..at], None));
                    }
                    parts.push((&text[at..at + a.content.len()], Some(a)));
                    rest = at + a.content.len();
                }
                None => {
                    parts.push((&text[rest..], None));
                    rest = text.len();
                }
            }
        }
        // lstrip / rstrip eat the whitespace of their neighbours.
        for i in 0..parts.len() {
            if let Some(a) = parts[i].1 {
                if a.rstrip && i + 1 < parts.len() && parts[i + 1].1.is_none() {
                    parts[i + 1].0 = parts[i + 1].0.trim_start_matches(py_space);
                }
                if a.lstrip && i > 0 && parts[i - 1].1.is_none() {
                    parts[i - 1].0 = parts[i - 1].0.trim_end_matches(py_space);
                }
            }
        }
        let char_at = |s: &str| (s.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        parts
            .into_iter()
            .filter(|(s, _)| !s.is_empty())
            .map(|(s, a)| {
                (
                    s,
                    text[..char_at(s)].chars().count() as u32,
                    a.map(|a| a.id),
                )
            })
            .collect()
    }

    /// preprocess_text + moses_pipeline + moses_tokenize of one piece.
    fn words(&self, piece: &str, base: u32) -> Result<Vec<Aligned>, XlmError> {
        let a = Aligned::new(piece, base);
        let a = nfc(&moses::double_quotes(&a))?;
        let a = match self.lowercase {
            true => a.lower(),
            false => a,
        };
        let a = moses::pipeline(&a, "fr")?;
        Ok(moses::tokenize(&a, "fr")?)
    }

    /// XLM's BPE of one word: its pieces, the last one ending in `</w>`.
    fn bpe(&self, token: &str) -> Vec<String> {
        let chars: Vec<char> = token.chars().collect();
        let Some((last, init)) = chars.split_last() else {
            return Vec::new();
        };
        let mut word: Vec<String> = init.iter().map(|c| c.to_string()).collect();
        word.push(format!("{last}</w>"));
        if word.len() == 1 {
            return word;
        }
        loop {
            let best = word
                .windows(2)
                .filter_map(|p| {
                    self.ranks
                        .get(&(p[0].clone(), p[1].clone()))
                        .map(|r| (*r, p))
                })
                .min_by_key(|(r, _)| *r)
                .map(|(_, p)| (p[0].clone(), p[1].clone()));
            let Some((first, second)) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(word[i].clone());
                    i += 1;
                }
            }
            word = merged;
            if word.len() == 1 {
                break;
            }
        }
        word
    }

    /// `convert_tokens_to_string`: joined, `</w>` -> space, stripped.
    pub fn tokens_to_string(tokens: &[String]) -> String {
        tokens
            .concat()
            .replace("</w>", " ")
            .trim_matches(py_space)
            .to_string()
    }
}

/// NFC of an aligned string, each composed character spanning the
/// characters it came from.
fn nfc(a: &Aligned) -> Result<Aligned, XlmError> {
    let text = a.text();
    let mut n = NormalizedString::from(text.as_str());
    n.nfc();
    let norm = n.get().to_string();
    // Byte offset -> character index of the input.
    let mut at = vec![0usize; text.len() + 1];
    for (i, (b, _)) in text.char_indices().enumerate() {
        at[b] = i;
    }
    at[text.len()] = a.chars.len();
    let mut out = Aligned::default();
    for (b, c) in norm.char_indices() {
        let r = n
            .convert_offsets(tokenizers::tokenizer::normalizer::Range::Normalized(
                b..b + c.len_utf8(),
            ))
            .ok_or_else(|| XlmError::Offsets(format!("NFC of {text:?} at byte {b}")))?;
        let (s, e) = (at[r.start.min(text.len())], at[r.end.min(text.len())]);
        out.chars.push(c);
        out.spans.push(a.span(s, e.max(s)));
    }
    Ok(out)
}
