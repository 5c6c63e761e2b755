//! Models: a local directory or a Hugging Face hub id, resolved to a
//! directory with `config.json`, safetensors weights (memory-mapped) and
//! optional tokenizer and sentence-transformers files.

mod hub;
pub mod weights;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub use weights::{WeightEntry, WeightStore};

/// Largest text asset a skill may read.
pub const MAX_ASSET_BYTES: u64 = 16 << 20;

/// Model loading failures. Each names the model and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model `{0}` is neither a local directory nor a hub id (expected `owner/name`)")]
    NotFound(String),
    #[error("model `{model}`: {message}")]
    Hub { model: String, message: String },
    #[error("model directory {dir}: missing {file}")]
    MissingFile { dir: PathBuf, file: String },
    #[error("model file {path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("model asset `{path}`: {message}")]
    Asset { path: String, message: String },
}

/// A resolved model.
pub struct Model {
    /// As the user named it.
    pub id: String,
    pub root: PathBuf,
    pub config: String,
    pub weights: Arc<WeightStore>,
    /// Owned copies of the weight files, made on first use by backends that
    /// take external data as in-memory files.
    file_copies: Vec<std::sync::OnceLock<Arc<[u8]>>>,
    /// Weights quantized to int8 (`--precision int8`), made on first use
    /// and shared by the model's graphs.
    pub int8: crate::onnx::quantize::Cache,
}

impl Model {
    /// [`Model::open_with`] in the environment's hub mode
    /// (`HF_HUB_OFFLINE`, read by [`HostConfig::from_env_lenient`]), for
    /// callers without a configuration.
    ///
    /// [`HostConfig::from_env_lenient`]: crate::config::HostConfig::from_env_lenient
    pub fn open(spec: &str) -> Result<Model, ModelError> {
        Self::open_with(
            spec,
            crate::config::HostConfig::from_env_lenient().hub_offline,
        )
    }

    /// Resolves a directory or a hub id (from the hub's cache only when
    /// `hub_offline`: [`crate::config::HostConfig::hub_offline`]) and maps
    /// its weights.
    pub fn open_with(spec: &str, hub_offline: bool) -> Result<Model, ModelError> {
        let path = Path::new(spec);
        let root = if path.is_dir() {
            path.to_path_buf()
        } else if looks_like_hub_id(spec) {
            hub::fetch(spec, hub_offline)?
        } else {
            return Err(ModelError::NotFound(spec.to_string()));
        };
        let config_path = root.join("config.json");
        let config =
            std::fs::read_to_string(&config_path).map_err(|_| ModelError::MissingFile {
                dir: root.clone(),
                file: "config.json".into(),
            })?;
        serde_json::from_str::<serde_json::Value>(&config).map_err(|e| ModelError::Weights {
            path: config_path.clone(),
            message: format!("not valid JSON: {e}"),
        })?;
        let files = weight_files(&root)?;
        let weights = Arc::new(WeightStore::open(&files)?);
        let file_copies = (0..weights.files.len())
            .map(|_| std::sync::OnceLock::new())
            .collect();
        Ok(Model {
            id: spec.to_string(),
            root,
            config,
            weights,
            file_copies,
            int8: Default::default(),
        })
    }

    /// Reads a JSON text asset by relative path; `None` when absent.
    /// Paths that leave the model directory are refused.
    pub fn asset(&self, rel: &str) -> Result<Option<String>, ModelError> {
        let bad = |message: &str| ModelError::Asset {
            path: rel.to_string(),
            message: message.to_string(),
        };
        let p = Path::new(rel);
        if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(bad("must be a relative path inside the model directory"));
        }
        let full = self.root.join(p);
        let Ok(meta) = std::fs::metadata(&full) else {
            return Ok(None);
        };
        if !meta.is_file() {
            return Ok(None);
        }
        if meta.len() > MAX_ASSET_BYTES {
            return Err(bad(&format!(
                "{} bytes exceed the limit of {MAX_ASSET_BYTES}",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(&full)
            .map_err(|e| bad(&format!("cannot read as UTF-8 text: {e}")))?;
        Ok(Some(text))
    }

    /// The bytes of weight file `i`, copied once and shared.
    pub fn file_bytes(&self, i: usize) -> Arc<[u8]> {
        match (self.file_copies.get(i), self.weights.files.get(i)) {
            (Some(cell), Some(f)) => cell.get_or_init(|| Arc::from(&f.map[..])).clone(),
            _ => Arc::from(Vec::new()),
        }
    }

    /// Path of `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.root.join("tokenizer.json")
    }

    /// `model_type` from config.json.
    pub fn model_type(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.config)
            .ok()?
            .get("model_type")?
            .as_str()
            .map(str::to_string)
    }
}

/// Whether `s` reads as a hub id (`name` or `owner/name`).
pub(crate) fn looks_like_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    (parts.len() == 1 || parts.len() == 2)
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
        && !s.starts_with('.')
}

/// The safetensors files of a model directory: a sharded index when present,
/// else `model.safetensors`.
fn weight_files(root: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = root.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::Weights {
            path: index.clone(),
            message: e.to_string(),
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Weights {
                path: index.clone(),
                message: format!("not valid JSON: {e}"),
            })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Weights {
                path: index.clone(),
                message: "no `weight_map` object".into(),
            })?;
        let mut shards: Vec<String> = map
            .values()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        let mut out = Vec::new();
        for s in shards {
            if Path::new(&s)
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
            {
                return Err(ModelError::Weights {
                    path: index.clone(),
                    message: format!("shard `{s}` leaves the directory"),
                });
            }
            out.push(root.join(s));
        }
        return Ok(out);
    }
    let single = root.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(ModelError::MissingFile {
        dir: root.to_path_buf(),
        file: "model.safetensors (or model.safetensors.index.json); convert .bin weights with transformers' save_pretrained(safe_serialization=True)".into(),
    })
}
