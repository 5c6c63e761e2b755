//! sentence-transformers configuration: pooling mode, normalisation and
//! maximum sequence length, read from the model's files.

use skill_sdk::config::Json;
use skill_sdk::encoder::heads::Pooling;
use skill_sdk::Error;

/// What the sentence-transformers files say.
pub struct SentenceTransformersConfig {
    /// None without sentence-transformers files: the family's default.
    pub pooling: Option<Pooling>,
    pub normalize: bool,
    pub max_seq_length: Option<u64>,
    /// Whether the model is a sentence-transformers model (modules.json),
    /// whose texts are stripped of surrounding white space.
    pub present: bool,
}

impl SentenceTransformersConfig {
    /// Reads modules.json, the pooling config and sentence_bert_config.json;
    /// defaults (mean, no normalisation) without them.
    pub fn read() -> Result<Self, Error> {
        let mut pooling_dir = "1_Pooling".to_string();
        let mut normalize = false;
        let modules = Json::asset("modules.json")?;
        let present = modules.is_some();
        if let Some(modules) = modules {
            let list = modules
                .value
                .as_array()
                .ok_or_else(|| Error::Model("modules.json: expected a list of modules".into()))?;
            for m in list {
                let ty = m.get("type").and_then(|t| t.as_str()).unwrap_or("");
                let path = m.get("path").and_then(|t| t.as_str()).unwrap_or("");
                match ty.rsplit('.').next().unwrap_or("") {
                    "Pooling" => pooling_dir = path.to_string(),
                    "Normalize" => normalize = true,
                    "Transformer" | "" => {}
                    other => {
                        return Err(Error::Unsupported(format!(
                            "modules.json lists a `{other}` module; text-embedding supports Transformer, Pooling, Normalize"
                        )))
                    }
                }
            }
        }
        let pooling = match Json::asset(&format!("{pooling_dir}/config.json"))? {
            None => None,
            Some(p) => Some({
                let modes = [
                    ("pooling_mode_cls_token", Pooling::Cls),
                    ("pooling_mode_mean_tokens", Pooling::Mean),
                    ("pooling_mode_max_tokens", Pooling::Max),
                    ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
                ];
                let on: Vec<Pooling> = modes
                    .iter()
                    .filter(|(k, _)| p.bool_or(k, false).unwrap_or(false))
                    .map(|(_, m)| *m)
                    .collect();
                for k in ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
                    if p.bool_or(k, false)? {
                        return Err(Error::Unsupported(format!(
                            "{}: `{k}` is not supported",
                            p.file
                        )));
                    }
                }
                match on.as_slice() {
                    [one] => *one,
                    [] => Pooling::Mean,
                    _ => {
                        return Err(Error::Unsupported(format!(
                            "{}: several pooling modes at once (concatenated) are not supported",
                            p.file
                        )))
                    }
                }
            }),
        };
        let max_seq_length = match Json::asset("sentence_bert_config.json")? {
            Some(c) => c.value.get("max_seq_length").and_then(|v| v.as_u64()),
            None => None,
        };
        Ok(SentenceTransformersConfig {
            present,
            pooling,
            normalize,
            max_seq_length,
        })
    }
}
