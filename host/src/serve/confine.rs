//! What the admin routes may load: models only from the operator's
//! `--model-root` directories, skills only by name from the skill search
//! path.
//!
//! A model of an admin-added endpoint is a path relative to a model root
//! (`minilm`, `team/bert-base`) or an absolute path inside one; it is
//! canonicalised (symlinks resolved) and must stay inside the root it was
//! found under. Hub ids are refused unless `--admin-hub` allows downloads.
//! Whether a path is missing or outside every root gets the same answer,
//! so the route is no oracle for which files exist. Skills are names
//! (`text-embedding`), never paths: a component file the operator did not
//! install cannot be loaded through HTTP.

use std::path::{Component, Path, PathBuf};

use crate::endpoint::EndpointConfig;

/// Where admin-added models may come from.
#[derive(Clone, Debug, Default)]
pub struct ModelRoots {
    /// Canonical directories.
    roots: Vec<PathBuf>,
    /// Hub ids may be fetched.
    pub hub: bool,
}

/// Why an admin-added endpoint was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("model root {0}: {1}")]
    Root(String, std::io::Error),
    #[error("model root {0} is not a directory")]
    NotDir(String),
    #[error("model `{0}` is not a model directory under a model root (start `host serve` with --model-root DIR; names are relative to it)")]
    Model(String),
    #[error("model `{0}` is a hub id; hub downloads through the admin routes are off (start `host serve` with --admin-hub to allow them)")]
    Hub(String),
    #[error(
        "skill `{0}` must be the name of an installed skill (such as `text-embedding`), not a path"
    )]
    SkillPath(String),
}

impl ModelRoots {
    /// Canonicalises `dirs`; each must be a directory.
    pub fn new(dirs: &[PathBuf], hub: bool) -> Result<ModelRoots, ConfineError> {
        let mut roots = Vec::new();
        for d in dirs {
            let c = d
                .canonicalize()
                .map_err(|e| ConfineError::Root(d.display().to_string(), e))?;
            if !c.is_dir() {
                return Err(ConfineError::NotDir(d.display().to_string()));
            }
            roots.push(c);
        }
        Ok(ModelRoots { roots, hub })
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The canonical directory `spec` names, if it is inside a root.
    fn resolve(&self, spec: &str) -> Option<PathBuf> {
        let p = Path::new(spec);
        // `..` never: a name must not climb out of its root even through a
        // directory that exists.
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return None;
        }
        self.roots.iter().find_map(|root| {
            let candidate = if p.is_absolute() {
                p.to_path_buf()
            } else {
                root.join(p)
            };
            let c = candidate.canonicalize().ok()?;
            (c.starts_with(root) && c != *root && c.is_dir()).then_some(c)
        })
    }

    /// Checks an admin-added endpoint and rewrites its model to the
    /// canonical directory it names.
    pub fn admit(&self, mut config: EndpointConfig) -> Result<EndpointConfig, ConfineError> {
        let s = &config.skill;
        if s.contains('/') || s.contains('\\') || s.ends_with(".wasm") || s.starts_with('.') {
            return Err(ConfineError::SkillPath(s.clone()));
        }
        match self.resolve(&config.model) {
            Some(dir) => config.model = dir.to_string_lossy().into_owned(),
            None if crate::model::looks_like_hub_id(&config.model)
                && !Path::new(&config.model).is_absolute() =>
            {
                if !self.hub {
                    return Err(ConfineError::Hub(config.model.clone()));
                }
                // The loader prefers a local directory of that name (relative
                // to the server's working directory): never through HTTP.
                if Path::new(&config.model).exists() {
                    return Err(ConfineError::Model(config.model.clone()));
                }
            }
            None => return Err(ConfineError::Model(config.model.clone())),
        }
        Ok(config)
    }

    /// `message` with every root replaced by `<model-root>`: load errors
    /// of admitted models name files inside a root, not where it is.
    pub fn redact(&self, message: &str) -> String {
        self.roots.iter().fold(message.to_string(), |m, r| {
            m.replace(&*r.to_string_lossy(), "<model-root>")
        })
    }
}

/// What `/health` and `/admin/endpoints` show of a model or skill: a local
/// path becomes its last component; hub ids and names stay as they are.
pub fn display_name(spec: &str) -> String {
    let p = Path::new(spec);
    if p.is_absolute() || spec.starts_with('.') || spec.ends_with(".wasm") || p.is_dir() {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return name
            .strip_suffix(".wasm")
            .unwrap_or(&name)
            .replace('_', "-");
    }
    spec.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Precision;

    fn cfg(skill: &str, model: &str) -> EndpointConfig {
        EndpointConfig::new("e", skill, model, vec![], Precision::F32)
    }

    #[test]
    fn models_stay_inside_their_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("m")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("escape")).unwrap();
        let roots = ModelRoots::new(std::slice::from_ref(&root), false).unwrap();
        let ok = roots.admit(cfg("text-embedding", "m")).unwrap();
        assert_eq!(Path::new(&ok.model), root.canonicalize().unwrap().join("m"));
        let abs = root.join("m");
        assert!(roots
            .admit(cfg("text-embedding", abs.to_str().unwrap()))
            .is_ok());
        // Outside, missing or escaping: refused alike (bare names read as
        // hub ids, refused as such while hub downloads are off).
        for bad in [
            "../outside",
            "m/../../outside",
            "escape",
            "missing",
            "/etc",
            "",
        ] {
            let e = roots.admit(cfg("text-embedding", bad)).unwrap_err();
            assert!(
                matches!(e, ConfineError::Model(_) | ConfineError::Hub(_)),
                "{bad}: {e}"
            );
        }
        let outside = dir.path().join("outside");
        assert!(roots
            .admit(cfg("text-embedding", outside.to_str().unwrap()))
            .is_err());
    }

    #[test]
    fn skills_are_names_and_hub_ids_need_permission() {
        let roots = ModelRoots::default();
        for s in ["/tmp/x.wasm", "x.wasm", "../x", "./x"] {
            assert!(matches!(
                roots.admit(cfg(s, "owner/name")),
                Err(ConfineError::SkillPath(_))
            ));
        }
        assert!(matches!(
            roots.admit(cfg("text-embedding", "owner/name")),
            Err(ConfineError::Hub(_))
        ));
        let hub = ModelRoots {
            hub: true,
            ..ModelRoots::default()
        };
        assert!(hub.admit(cfg("text-embedding", "owner/name")).is_ok());
    }

    #[test]
    fn display_names_hide_paths() {
        assert_eq!(display_name("/srv/models/minilm"), "minilm");
        assert_eq!(
            display_name("/x/skills/text_embedding.wasm"),
            "text-embedding"
        );
        assert_eq!(
            display_name("sentence-transformers/all-MiniLM-L6-v2"),
            "sentence-transformers/all-MiniLM-L6-v2"
        );
        assert_eq!(display_name("text-embedding"), "text-embedding");
    }
}
