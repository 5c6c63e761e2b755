//! Hub ids resolved through `hf-hub`: its cache (`HF_HOME`), `HF_ENDPOINT`,
//! and `HF_HUB_OFFLINE=1` (cache only).

use std::path::PathBuf;

use super::ModelError;

/// Files fetched besides the weights; all but config.json are optional.
const FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// Returns the snapshot directory of `id`, downloading what is missing
/// unless `offline` (`HF_HUB_OFFLINE` or `--offline`: the hub's cache only,
/// [`crate::config::HostConfig::hub_offline`]).
pub(super) fn fetch(id: &str, offline: bool) -> Result<PathBuf, ModelError> {
    let err = |message: String| ModelError::Hub {
        model: id.to_string(),
        message,
    };
    if offline {
        let repo = hf_hub::Cache::from_env().model(id.to_string());
        let config = repo.get("config.json").ok_or_else(|| {
            err(format!(
                "not in the local cache ({}) and HF_HUB_OFFLINE is set; download it first or pass a local directory",
                hf_hub::Cache::from_env().path().display()
            ))
        })?;
        return config
            .parent()
            .map(|p| p.to_path_buf())
            .ok_or_else(|| err("bad cache layout".into()));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| err(format!("cannot start the hub client: {e}")))?;
    let repo = api.model(id.to_string());
    let config = repo
        .get("config.json")
        .map_err(|e| err(format!("cannot fetch config.json: {e} (no network? set HF_HUB_OFFLINE=1 to use the cache, or pass a local directory)")))?;
    for f in &FILES[1..] {
        let _ = repo.get(f);
    }
    // Tokenizers without a tokenizer.json (FlauBERT's) read these.
    if repo.get("tokenizer.json").is_err() {
        for f in ["vocab.json", "merges.txt"] {
            let _ = repo.get(f);
        }
    }
    if repo.get("model.safetensors.index.json").is_ok() {
        let index = config.with_file_name("model.safetensors.index.json");
        let text = std::fs::read_to_string(&index).map_err(|e| err(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let mut shards: Vec<String> = v["weight_map"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for s in shards {
            repo.get(&s)
                .map_err(|e| err(format!("cannot fetch {s}: {e}")))?;
        }
    } else {
        repo.get("model.safetensors")
            .map_err(|e| err(format!("cannot fetch model.safetensors: {e}")))?;
    }
    config
        .parent()
        .map(|p| p.to_path_buf())
        .ok_or_else(|| err("bad cache layout".into()))
}
