//! Words of a timed chunk's text tokens, as transformers' Whisper tokenizer
//! groups them (`_combine_tokens_into_words`): split where the tokens decode
//! to whole characters (`_split_tokens_on_unicode`; the only split for
//! Chinese, Japanese, Thai, Lao, Burmese and Cantonese), otherwise those
//! pieces joined into words that start at a space or a punctuation piece
//! (`_split_tokens_on_spaces`); then punctuation merged into its neighbour
//! (`_merge_punctuations`: opening marks onto the next word, closing marks
//! onto the previous). A word's time runs from its first token's start to
//! its last token's end.

use skill_sdk::Error;

/// transformers' default `prepend_punctuations`.
const PREPENDED: &str = "\"'“¡¿([{-";
/// transformers' default `append_punctuations`.
const APPENDED: &str = "\"'.。,，!！?？:：”)]}、";
/// What `_split_tokens_on_spaces` counts as punctuation (Python's
/// `string.punctuation`; a piece counts when its stripped text is a
/// substring of it, the empty string included).
const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const REPLACEMENT: char = '\u{fffd}';

/// Languages whose words are split per character (no spaces).
pub fn unspaced(code: &str) -> bool {
    matches!(code, "zh" | "ja" | "th" | "lo" | "my" | "yue")
}

/// One timed word.
#[derive(Clone, Debug, PartialEq)]
pub struct Word {
    pub text: String,
    pub start: f64,
    pub end: f64,
}

/// Python's `str.strip()` (its whitespace: Unicode's plus \x1c..\x1f).
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Pieces of `tokens` that decode to whole characters: (text, indices).
fn split_on_unicode(
    tokens: &[i64],
    decode: &dyn Fn(&[i64]) -> Result<String, Error>,
) -> Result<Vec<(String, Vec<usize>)>, Error> {
    let full: Vec<char> = decode(tokens)?.chars().collect();
    let mut out = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut offset = 0usize;
    for i in 0..tokens.len() {
        current.push(i);
        let ids: Vec<i64> = current.iter().map(|&k| tokens[k]).collect();
        let decoded = decode(&ids)?;
        let chars: Vec<char> = decoded.chars().collect();
        let whole = match chars.iter().position(|&c| c == REPLACEMENT) {
            None => true,
            Some(at) => full.get(offset + at).is_none_or(|&c| c == REPLACEMENT),
        };
        if whole {
            offset += chars.len();
            out.push((decoded, std::mem::take(&mut current)));
        }
    }
    Ok(out)
}

/// Pieces joined into words at spaces and punctuation.
fn split_on_spaces(
    tokens: &[i64],
    text_end: i64,
    decode: &dyn Fn(&[i64]) -> Result<String, Error>,
) -> Result<Vec<(String, Vec<usize>)>, Error> {
    let mut words: Vec<(String, Vec<usize>)> = Vec::new();
    for (piece, indices) in split_on_unicode(tokens, decode)? {
        let special = indices.first().is_some_and(|&i| tokens[i] >= text_end);
        let spaced = piece.starts_with(' ');
        let punctuation = PUNCTUATION.contains(py_strip(&piece));
        match words.last_mut() {
            Some(last) if !(special || spaced || punctuation) => {
                last.0.push_str(&piece);
                last.1.extend(indices);
            }
            _ => words.push((piece, indices)),
        }
    }
    Ok(words)
}

/// `_merge_punctuations`, step for step: merged entries are emptied, then
/// the empty texts and the empty index lists are dropped (each list on its
/// own, as transformers filters them).
fn merge_punctuations(words: &mut [String], indices: &mut [Vec<usize>]) {
    let n = words.len();
    if n >= 2 {
        let mut j = n - 1;
        for i in (0..n - 1).rev() {
            if words[i].starts_with(' ') && PREPENDED.contains(py_strip(&words[i])) {
                words[j] = format!("{}{}", words[i], words[j]);
                let mut joined = std::mem::take(&mut indices[i]);
                joined.append(&mut indices[j]);
                indices[j] = joined;
                words[i].clear();
            } else {
                j = i;
            }
        }
    }
    let mut i = 0;
    for j in 1..n {
        if !words[i].ends_with(' ') && APPENDED.contains(words[j].as_str()) {
            let w = std::mem::take(&mut words[j]);
            words[i].push_str(&w);
            let mut moved = std::mem::take(&mut indices[j]);
            indices[i].append(&mut moved);
        } else {
            i = j;
        }
    }
}

/// The words of a chunk's text `tokens`, each token timed by `spans`
/// (start, end); `unicode` for the languages without spaces; ids from
/// `text_end` on count as special.
pub fn words(
    tokens: &[i64],
    spans: &[(f64, f64)],
    unicode: bool,
    text_end: i64,
    decode: &dyn Fn(&[i64]) -> Result<String, Error>,
) -> Result<Vec<Word>, Error> {
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let pieces = match unicode {
        true => split_on_unicode(tokens, decode)?,
        false => split_on_spaces(tokens, text_end, decode)?,
    };
    let (mut texts, mut indices): (Vec<String>, Vec<Vec<usize>>) = pieces.into_iter().unzip();
    merge_punctuations(&mut texts, &mut indices);
    let texts = texts.into_iter().filter(|w| !w.is_empty());
    let indices = indices.into_iter().filter(|i| !i.is_empty());
    texts
        .zip(indices)
        .map(|(text, at)| {
            let span = |i: Option<&usize>| {
                i.and_then(|&i| spans.get(i))
                    .copied()
                    .ok_or_else(|| skill_sdk::internal("a word's token has no time"))
            };
            Ok(Word {
                text,
                start: span(at.first())?.0,
                end: span(at.last())?.1,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens 0.. decode to these pieces; 9 and 10 are the two halves of
    /// "é" (each alone decodes to U+FFFD).
    fn decode(ids: &[i64]) -> Result<String, Error> {
        const PIECES: [&str; 9] = [" Hello", ",", " wor", "ld", " (", "hi", ")", "!", " "];
        let mut out = String::new();
        let mut k = 0;
        while k < ids.len() {
            match (ids[k], ids.get(k + 1)) {
                (9, Some(10)) => {
                    out.push('é');
                    k += 2;
                    continue;
                }
                (9 | 10, _) => out.push(REPLACEMENT),
                (t, _) => out.push_str(PIECES[t as usize]),
            }
            k += 1;
        }
        Ok(out)
    }

    fn texts(tokens: &[i64], unicode: bool) -> Vec<String> {
        let spans: Vec<(f64, f64)> = (0..tokens.len())
            .map(|i| (i as f64, i as f64 + 1.0))
            .collect();
        words(tokens, &spans, unicode, 100, &decode)
            .unwrap()
            .into_iter()
            .map(|w| w.text)
            .collect()
    }

    #[test]
    fn groups_as_transformers() {
        // transformers 5.25's _combine_tokens_into_words on these pieces.
        assert_eq!(
            texts(&[0, 1, 2, 3, 4, 5, 6, 7], false),
            vec![" Hello,", " world", " (hi)!"]
        );
        // Two halves of one character stay together; unicode split keeps
        // each whole piece.
        assert_eq!(texts(&[2, 9, 10, 3], false), vec![" woréld"]);
        assert_eq!(texts(&[2, 9, 10, 3], true), vec![" wor", "é", "ld"]);
        // A lone space piece is "punctuation" and prepends to the next word.
        assert_eq!(texts(&[0, 8, 3], false), vec![" Hello", " ld"]);
    }

    #[test]
    fn words_take_their_tokens_times() {
        let spans = [(0.0, 0.5), (0.5, 0.6), (0.6, 1.0), (1.0, 1.5)];
        let w = words(&[0, 1, 2, 3], &spans, false, 100, &decode).unwrap();
        assert_eq!((w[0].start, w[0].end), (0.0, 0.6));
        assert_eq!((w[1].start, w[1].end), (0.6, 1.5));
    }
}
