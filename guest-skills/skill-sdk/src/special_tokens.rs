//! The tokenizer's named special tokens (`mask_token`, `pad_token`, ...)
//! as transformers reads them: tokenizer_config.json, then
//! special_tokens_map.json; a value is a string or an object with
//! `content`.

use crate::config::Json;
use crate::tokenizer::Tokenizer;
use crate::Error;

/// The text of special token `name` (e.g. `mask_token`), if the model
/// names one.
pub fn named(name: &str) -> Result<Option<String>, Error> {
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        if let Some(j) = Json::asset(file)? {
            let v = match j.value.get(name) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Object(o)) => o
                    .get("content")
                    .and_then(|c| c.as_str())
                    .map(str::to_string),
                _ => None,
            };
            if v.is_some() {
                return Ok(v);
            }
        }
    }
    Ok(None)
}

/// Token and id of special token `name`: the one the model names, else the
/// first of `fallbacks` in the vocabulary.
pub fn find(
    tok: &Tokenizer,
    name: &str,
    fallbacks: &[&str],
) -> Result<Option<(String, u32)>, Error> {
    if let Some(t) = named(name)? {
        return Ok(tok.token_to_id(&t).map(|id| (t, id)));
    }
    Ok(fallbacks
        .iter()
        .find_map(|t| tok.token_to_id(t).map(|id| (t.to_string(), id))))
}
