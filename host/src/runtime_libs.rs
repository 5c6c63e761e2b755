//! Finding the native runtime libraries that ship in PyPI wheels.
//!
//! `scripts/setup.sh` installs the wheels into `.runtime/py` of the checkout
//! (git-ignored). The host looks, in order, at an explicit path
//! ([`LibraryPaths`]: `ORT_DYLIB_PATH`, `OPENVINO_LIB_PATH`), then at
//! `HOST_RUNTIME_DIR`, then at `.runtime/py` in the ancestors of its
//! executable and of the working directory. Paths are checked before loading, because loaders
//! handed a bad path panic.

use std::path::{Path, PathBuf};

use crate::config::LibraryPaths;

/// Directories that may hold the wheels.
fn roots(paths: &LibraryPaths) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = &paths.runtime_dir {
        out.push(dir.clone());
    }
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for s in starts {
        for a in s.ancestors() {
            out.push(a.join(".runtime").join("py"));
        }
    }
    out
}

/// The first file in `dir` whose name starts with `prefix`, preferring the
/// longest (most versioned) name.
fn find_prefixed(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut hits: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    hits.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    hits.into_iter().next()
}

/// Locates `libonnxruntime.so*` (`ORT_DYLIB_PATH`, else the onnxruntime
/// wheel under the runtime directories).
pub fn onnxruntime(paths: &LibraryPaths) -> Result<PathBuf, String> {
    if let Some(p) = &paths.onnxruntime {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(format!("ORT_DYLIB_PATH={} is not a file", p.display()))
        };
    }
    let searched = roots(paths);
    for r in &searched {
        if let Some(p) = find_prefixed(&r.join("onnxruntime").join("capi"), "libonnxruntime.so") {
            return Ok(p);
        }
    }
    Err("ONNX Runtime library not found: run `scripts/setup.sh` (installs the onnxruntime wheel into .runtime/py), \
         or set ORT_DYLIB_PATH to libonnxruntime.so"
        .into())
}

/// Locates `libopenvino_c.so*` (`OPENVINO_LIB_PATH`, else the openvino
/// wheel under the runtime directories).
pub fn openvino_c(paths: &LibraryPaths) -> Result<PathBuf, String> {
    if let Some(p) = &paths.openvino_c {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(format!("OPENVINO_LIB_PATH={} is not a file", p.display()))
        };
    }
    for r in roots(paths) {
        if let Some(p) = find_prefixed(&r.join("openvino").join("libs"), "libopenvino_c.so") {
            return Ok(p);
        }
    }
    Err("OpenVINO C library not found: run `scripts/setup.sh` (installs the openvino wheel into .runtime/py), \
         or set OPENVINO_LIB_PATH to libopenvino_c.so"
        .into())
}
