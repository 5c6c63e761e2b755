//! Staging of emitted graphs for OpenVINO, and the bound on what the
//! staging cache holds.
//!
//! OpenVINO reads ONNX external data only from files inside the model's
//! directory (symbolic links that leave it are refused), so each compiled
//! graph gets a directory `<cache>/openvino/graphs/<key>` holding
//! `model.onnx`, hard links `weights<i>.safetensors` to the model's own
//! files (no copy; across filesystems, a one-time copy) and OpenVINO's
//! compiled blobs (`blobs-<precision>`). The key hashes the graph and the
//! weight files' paths, sizes and modification times.
//!
//! The cache is bounded ([`crate::disk_cache`]): after each staging,
//! directories are removed, least recently staged first, until the bytes
//! only the cache holds (`model.onnx`, blobs, and weight links whose model is
//! gone) fit the budget (`HOST_OPENVINO_CACHE_MB`). The directory just staged
//! stays. A write that fails (a full disk) empties the cache of everything
//! else and is tried once more.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::Precision;
use crate::disk_cache;
use crate::ir::Graph;
use crate::model::Model;
use crate::onnx::{used_weight_files, weight_file_name};

/// The staging cache of one backend: where, and how much it may hold.
#[derive(Clone, Debug)]
pub(super) struct StageCache {
    /// `<cache>/openvino/graphs`.
    root: PathBuf,
    /// Most bytes held only by the cache.
    budget: u64,
}

impl StageCache {
    /// The cache under `cache_dir` (else the temporary directory) holding at
    /// most `budget` bytes of its own.
    pub(super) fn new(cache_dir: Option<&Path>, budget: u64) -> Self {
        let root = cache_dir
            .map_or_else(std::env::temp_dir, Path::to_path_buf)
            .join("openvino")
            .join("graphs");
        StageCache { root, budget }
    }

    /// Writes `model.onnx` and weight links for this graph and model;
    /// returns the model path. Prunes the cache to its budget afterwards.
    pub(super) fn stage(
        &self,
        graph: &Graph,
        model: &Model,
        onnx: &[u8],
        precision: Precision,
    ) -> Result<PathBuf, String> {
        let dir = self.root.join(key(graph, model, precision));
        let path = match write_stage(&dir, graph, model, onnx) {
            Ok(p) => p,
            Err(first) => {
                // Most likely a full disk: make room and try once more.
                let freed = disk_cache::prune(&self.root, 0, Some(&dir), Duration::ZERO);
                tracing::warn!(
                    target: "host::openvino",
                    "staging {} failed ({first}); removed {freed} cached graphs, retrying",
                    dir.display()
                );
                write_stage(&dir, graph, model, onnx)?
            }
        };
        disk_cache::prune(&self.root, self.budget, Some(&dir), disk_cache::GRACE);
        Ok(path)
    }
}

/// The directory name of a graph staged for a model at a precision.
fn key(graph: &Graph, model: &Model, precision: Precision) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(graph.fingerprint());
    // int8 graphs carry their quantized weights: another ONNX file.
    if precision == Precision::Int8 {
        h.update(precision.name());
    }
    for f in &model.weights.files {
        h.update(f.path.display().to_string());
        if let Ok(m) = std::fs::metadata(&f.path) {
            h.update(m.len().to_le_bytes());
            h.update(format!("{:?}", m.modified().ok()));
        }
    }
    h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates `dir` with the weight links and `model.onnx` (written through a
/// temporary name, so a reader never sees half a file); returns its path.
fn write_stage(dir: &Path, graph: &Graph, model: &Model, onnx: &[u8]) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for i in used_weight_files(graph, model) {
        link_weights(&model.weights.files[i].path, &dir.join(weight_file_name(i)))?;
    }
    let path = dir.join("model.onnx");
    let tmp = dir.join(format!("model.onnx.tmp{}", std::process::id()));
    std::fs::write(&tmp, onnx)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })?;
    Ok(path)
}

/// Makes `link` the same file as `target`: a hard link (same inode, no
/// copy) where the filesystem allows, else a one-time copy. OpenVINO refuses
/// symbolic links that leave the model's directory.
fn link_weights(target: &Path, link: &Path) -> Result<(), String> {
    let t = std::fs::metadata(target).map_err(|e| format!("{}: {e}", target.display()))?;
    if std::fs::symlink_metadata(link).is_ok_and(|m| m.file_type().is_symlink()) {
        let _ = std::fs::remove_file(link);
    }
    if let Ok(l) = std::fs::symlink_metadata(link) {
        if (l.dev(), l.ino()) == (t.dev(), t.ino())
            || (l.len() == t.len() && l.modified().ok() >= t.modified().ok())
        {
            return Ok(());
        }
        let _ = std::fs::remove_file(link);
    }
    if std::fs::hard_link(target, link).is_ok() {
        return Ok(());
    }
    let tmp = link.with_extension(format!("tmp{}", std::process::id()));
    std::fs::copy(target, &tmp)
        .and_then(|_| std::fs::rename(&tmp, link))
        .map(|_| ())
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!(
                "cannot link or copy {} to {}: {e}",
                target.display(),
                link.display()
            )
        })
}
