//! Bounds on the host's on-disk caches (compiled skill components, staged
//! OpenVINO graphs): entries removed least recently used first until the
//! bytes the cache holds of its own fit a budget.
//!
//! An entry is a file or a directory directly under the cache's root; its
//! time of last use is its modification time (writers refresh it on use).
//! Files with more than one link (hard links to a model's weights) cost the
//! cache no disk of its own and are not counted. Entries used within a grace
//! period stay, because another process may be reading them.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Entries used this recently are kept by [`prune`].
pub const GRACE: Duration = Duration::from_secs(60);

/// Removes entries of `root`, least recently used first, until the bytes
/// held only by the cache are at most `budget`; `keep` and entries used
/// within `grace` stay. Returns how many were removed. A cache that cannot
/// be read prunes nothing.
pub fn prune(root: &Path, budget: u64, keep: Option<&Path>, grace: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut found: Vec<(SystemTime, u64, PathBuf, bool)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let used = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let p = e.path();
            Some((used, own_bytes(&p, &m), p, m.is_dir()))
        })
        .collect();
    let mut total: u64 = found.iter().map(|f| f.1).sum();
    found.sort_by_key(|f| f.0);
    let mut removed = 0;
    for (used, bytes, path, is_dir) in found {
        if total <= budget {
            break;
        }
        let recent = now.duration_since(used).map_or(true, |age| age < grace);
        if recent || keep == Some(path.as_path()) {
            continue;
        }
        let gone = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if gone.is_ok() {
            total = total.saturating_sub(bytes);
            removed += 1;
        }
    }
    removed
}

/// Marks `path` used now (its modification time); errors are ignored, an
/// entry that stays old is only removed sooner.
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Bytes of `path` (with metadata `m`) in files with a single link.
fn own_bytes(path: &Path, m: &std::fs::Metadata) -> u64 {
    if !m.is_dir() {
        return if m.nlink() <= 1 { m.blocks() * 512 } else { 0 };
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| Some(own_bytes(&e.path(), &e.metadata().ok()?)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory entry of about `2 * bytes` bytes of its own, used `age` ago.
    fn entry(root: &Path, name: &str, bytes: usize, age: Duration) -> PathBuf {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("blobs")).unwrap();
        std::fs::write(d.join("model.onnx"), vec![1u8; bytes]).unwrap();
        std::fs::write(d.join("blobs").join("x.blob"), vec![2u8; bytes]).unwrap();
        let t = SystemTime::now() - age;
        std::fs::File::open(&d).unwrap().set_modified(t).unwrap();
        d
    }

    #[test]
    fn removes_the_least_recent_until_within_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let old = entry(root, "old", 1 << 20, Duration::from_secs(3600));
        let mid = entry(root, "mid", 1 << 20, Duration::from_secs(600));
        let new = entry(root, "new", 1 << 20, Duration::from_secs(120));
        let fresh = entry(root, "fresh", 1 << 20, Duration::ZERO);
        let file = root.join("c.cwasm");
        std::fs::write(&file, vec![3u8; 1 << 20]).unwrap();
        std::fs::File::open(&file)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        // 9 MiB in all; a 5 MiB budget keeps the two most recent.
        assert_eq!(prune(root, 5 << 20, None, GRACE), 3);
        assert!(!old.exists() && !mid.exists() && !file.exists());
        assert!(new.exists() && fresh.exists());
        // Budget 0: the kept one and the fresh one (grace) stay.
        assert_eq!(prune(root, 0, Some(&new), GRACE), 0);
        assert_eq!(prune(root, 0, None, GRACE), 1);
        assert!(!new.exists() && fresh.exists());
        touch(&fresh);
        assert_eq!(prune(root, 0, None, Duration::ZERO), 1);
    }

    #[test]
    fn hard_links_to_live_files_cost_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let weights = tmp.path().join("w.safetensors");
        std::fs::write(&weights, vec![0u8; 1 << 20]).unwrap();
        let dir = tmp.path().join("g");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::hard_link(&weights, dir.join("weights0.safetensors")).unwrap();
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!(own_bytes(&dir, &m), 0);
        // Once the model's own file is gone the cache holds the only copy.
        std::fs::remove_file(&weights).unwrap();
        assert!(own_bytes(&dir, &m) >= 1 << 20);
    }

    #[test]
    fn a_missing_cache_prunes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            prune(&tmp.path().join("absent"), 0, None, Duration::ZERO),
            0
        );
    }
}
