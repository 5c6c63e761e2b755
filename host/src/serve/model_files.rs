//! What HTTP routes read from an endpoint's model directory, loaded once
//! per endpoint and cached: its chat template, its tokenizer (`tokenizer.json`,
//! for chat prompts and TEI's `/tokenize` and `/decode`), and what TEI's
//! `/embed` and `/info` need to know.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::chat_template::ChatTemplate;
use super::ApiError;
use crate::endpoint::EndpointStatus;
use crate::ErrorKind;

/// The files of one endpoint's model.
pub struct ModelFiles {
    /// The model as the endpoint names it (a hub id or a directory).
    pub model: String,
    /// The skill's name (for a `.wasm` path its file stem, `_` read as `-`).
    pub skill: String,
    /// `None`: the model has no chat template; `Err`: it has a broken one.
    pub chat_template: Result<Option<ChatTemplate>, String>,
    /// `tokenizer.json`, when the model has one.
    pub tokenizer: Option<tokenizers::Tokenizer>,
    /// sentence-transformers' modules.json lists a `Normalize` module.
    pub normalizes: bool,
    /// `max_position_embeddings` (or `n_positions`) of config.json.
    pub max_positions: Option<u64>,
}

/// Per-endpoint cache, keyed by endpoint name (and checked against its model,
/// since an endpoint may be removed and added again with another).
pub struct Cache {
    map: Mutex<HashMap<String, Arc<ModelFiles>>>,
    /// Hub ids from the hub's cache only
    /// ([`crate::config::HostConfig::hub_offline`]).
    hub_offline: bool,
}

fn internal(m: String) -> ApiError {
    ApiError::new(ErrorKind::Internal, m)
}

impl Cache {
    /// An empty cache resolving hub ids as `hub_offline` says.
    pub fn new(hub_offline: bool) -> Self {
        Cache {
            map: Mutex::default(),
            hub_offline,
        }
    }

    /// The files of endpoint `status`, loaded on first use.
    pub async fn get(&self, status: &EndpointStatus) -> Result<Arc<ModelFiles>, ApiError> {
        let key = status.name.clone();
        if let Ok(map) = self.map.lock() {
            if let Some(f) = map.get(&key).filter(|f| f.model == status.model) {
                return Ok(f.clone());
            }
        }
        let (model, skill) = (status.model.clone(), status.skill.clone());
        let offline = self.hub_offline;
        let files = tokio::task::spawn_blocking(move || load(&model, &skill, offline))
            .await
            .map_err(|e| internal(format!("loading model files failed: {e}")))??;
        let files = Arc::new(files);
        if let Ok(mut map) = self.map.lock() {
            map.insert(key, files.clone());
        }
        Ok(files)
    }
}

/// The directory of a model spec (a directory, or a hub id already fetched
/// when the endpoint loaded).
fn root(spec: &str, hub_offline: bool) -> Result<PathBuf, ApiError> {
    if Path::new(spec).is_dir() {
        return Ok(PathBuf::from(spec));
    }
    crate::model::Model::open_with(spec, hub_offline)
        .map(|m| m.root)
        .map_err(|e| internal(format!("cannot open the endpoint's model: {e}")))
}

fn read(dir: &Path, name: &str) -> Option<String> {
    let p = dir.join(name);
    let meta = std::fs::metadata(&p).ok()?;
    if !meta.is_file() || meta.len() > crate::model::MAX_ASSET_BYTES {
        return None;
    }
    std::fs::read_to_string(p).ok()
}

fn load(spec: &str, skill: &str, hub_offline: bool) -> Result<ModelFiles, ApiError> {
    let dir = root(spec, hub_offline)?;
    let chat_template = ChatTemplate::from_files(
        read(&dir, "chat_template.jinja"),
        read(&dir, "chat_template.json"),
        read(&dir, "tokenizer_config.json"),
    )
    .map_err(|e| e.to_string());
    let tokenizer = match dir.join("tokenizer.json") {
        p if p.is_file() => Some(
            tokenizers::Tokenizer::from_file(&p)
                .map_err(|e| internal(format!("the model's tokenizer.json does not load: {e}")))?,
        ),
        _ => None,
    };
    let skill = Path::new(skill)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(skill)
        .replace('_', "-");
    let normalizes = read(&dir, "modules.json")
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|m| m.as_array().cloned())
        .is_some_and(|mods| {
            mods.iter().any(|m| {
                m.get("type")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|t| t.ends_with(".Normalize"))
            })
        });
    let config: serde_json::Value = read(&dir, "config.json")
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let max_positions = ["max_position_embeddings", "n_positions", "n_ctx"]
        .iter()
        .find_map(|k| config.get(*k).and_then(serde_json::Value::as_u64));
    Ok(ModelFiles {
        model: spec.to_string(),
        skill,
        chat_template,
        tokenizer,
        normalizes,
        max_positions,
    })
}
