//! Greedy CTC decoding with a `vocab.json` as `Wav2Vec2CTCTokenizer`
//! decodes for the pipeline (special tokens kept, repeats grouped, the
//! pad token dropped, the word delimiter replaced by a space, stripped,
//! transformers' clean-up of spaces where the tokenizer config asks).

use std::collections::HashMap;

use skill_sdk::config::Json;
use skill_sdk::Error;

pub struct Vocab {
    tokens: HashMap<i64, String>,
    pad: String,
    delimiter: String,
    clean_up: bool,
}

impl Vocab {
    pub fn load(config: &Json) -> Result<Vocab, Error> {
        let vocab = Json::asset("vocab.json")?.ok_or_else(|| {
            Error::Model("the model has no vocab.json (the CTC vocabulary)".into())
        })?;
        let map = vocab
            .value
            .as_object()
            .ok_or_else(|| Error::Model("vocab.json is not an object".into()))?;
        let tokens: HashMap<i64, String> = map
            .iter()
            .filter_map(|(t, id)| id.as_i64().map(|i| (i, t.clone())))
            .collect();
        let tc = Json::asset("tokenizer_config.json")?;
        let get = |k: &str, default: &str| -> String {
            tc.as_ref()
                .and_then(|t| t.value.get(k))
                .and_then(|v| {
                    v.as_str().map(str::to_string).or_else(|| {
                        v.get("content")
                            .and_then(|c| c.as_str())
                            .map(str::to_string)
                    })
                })
                .unwrap_or_else(|| default.to_string())
        };
        let pad = match config.value.get("pad_token_id").and_then(|v| v.as_i64()) {
            Some(id) => tokens
                .get(&id)
                .cloned()
                .unwrap_or_else(|| get("pad_token", "<pad>")),
            None => get("pad_token", "<pad>"),
        };
        let clean_up = tc
            .as_ref()
            .and_then(|t| t.value.get("clean_up_tokenization_spaces"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Ok(Vocab {
            tokens,
            pad,
            delimiter: get("word_delimiter_token", "|"),
            clean_up,
        })
    }

    /// The transcript of per-frame ids.
    pub fn decode(&self, ids: &[i64]) -> String {
        let mut out = String::new();
        let mut last: Option<i64> = None;
        for &id in ids {
            if last == Some(id) {
                continue;
            }
            last = Some(id);
            let Some(t) = self.tokens.get(&id) else {
                continue;
            };
            if *t == self.pad {
                continue;
            }
            match *t == self.delimiter {
                true => out.push(' '),
                false => out.push_str(t),
            }
        }
        let text = out.trim().to_string();
        match self.clean_up {
            true => clean_up(&text),
            false => text,
        }
    }
}

/// transformers' `clean_up_tokenization`.
fn clean_up(s: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(s.to_string(), |acc, (a, b)| acc.replace(a, b))
}
