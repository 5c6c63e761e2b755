//! Finding skill components by name.
//!
//! `host run text-embedding` looks for `text_embedding.wasm` in, in order:
//! the configured directories (`HOST_SKILLS_DIR`, colon-separated;
//! `--skills-dir`: [`crate::config::HostConfig::skills_dirs`], which every
//! function here is handed), `skills/` next to the executable, and the
//! cargo output `target/wasm32-wasip2/release/` of the checkout the
//! executable was built in. A SKILL argument that ends in
//! `.wasm` or contains a `/` is a path. Either may end in `@sha256:<hex>`
//! (or `@<CID>`): the component is then pinned to that digest, and loading
//! refuses a file with other bytes ([`crate::digest`]).

use std::path::{Path, PathBuf};

use crate::HostError;

/// Directories searched for skills: the `configured` ones
/// ([`crate::config::HostConfig::skills_dirs`]), then the defaults.
pub fn search_dirs(configured: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = configured.to_vec();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("skills"));
        // target/<profile>/host (or target/<profile>/deps/...) ->
        // target/wasm32-wasip2/release
        for a in exe_dir.ancestors().skip(1).take(2) {
            let d = a.join("wasm32-wasip2").join("release");
            if d.is_dir() {
                dirs.push(d);
            }
        }
    }
    dirs
}

/// Resolves a skill name or path, with an optional `@digest` pin, to
/// (name, component path, pin); names are looked up in
/// [`search_dirs`]`(configured)`.
pub fn resolve_pinned(
    spec: &str,
    configured: &[PathBuf],
) -> Result<(String, PathBuf, Option<crate::digest::Digest>), HostError> {
    let (skill, pin) = crate::digest::split_pin(spec);
    let (name, path) = resolve_unpinned(skill, configured)?;
    Ok((name, path, pin))
}

/// Resolves a skill name or path to (name, component path); a pin suffix
/// is dropped (see [`resolve_pinned`]).
pub fn resolve(spec: &str, configured: &[PathBuf]) -> Result<(String, PathBuf), HostError> {
    resolve_unpinned(crate::digest::split_pin(spec).0, configured)
}

fn resolve_unpinned(spec: &str, configured: &[PathBuf]) -> Result<(String, PathBuf), HostError> {
    if spec.ends_with(".wasm") || spec.contains('/') {
        let p = PathBuf::from(spec);
        let name = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(spec)
            .replace('_', "-");
        if !p.is_file() {
            return Err(HostError::SkillNotFound {
                name: spec.into(),
                file: spec.into(),
                searched: "(a path)".into(),
            });
        }
        return Ok((name, p));
    }
    let file = format!("{}.wasm", spec.replace('-', "_"));
    let dirs = search_dirs(configured);
    for d in &dirs {
        let p = d.join(&file);
        if p.is_file() {
            return Ok((spec.to_string(), p));
        }
    }
    Err(HostError::SkillNotFound {
        name: spec.into(),
        file,
        searched: dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Every `.wasm` file in the search directories ([`search_dirs`]): (name,
/// path).
pub fn discover(configured: &[PathBuf]) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for d in search_dirs(configured) {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut found: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        found.sort();
        for p in found {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .replace('_', "-");
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, p));
            }
        }
    }
    out
}
