//! cgroup ids (what the kernel records at a failure) back to cgroup paths, and container ids
//! to the cgroups that hold them (`--container`).
//!
//! A cgroup v2 id is the inode number of its directory under the cgroup2 mount, so the tree
//! is walked once and remembered; an id not seen yet (a container started since) walks it
//! again, at most once a second, so a burst of failures from a cgroup already removed costs
//! one walk, not one per failure. The directories are world-readable: this works after
//! socktrace has dropped its capabilities.

use crate::container::attribute;
pub use crate::facts::CgroupName;
use anyhow::{bail, Context as _, Result};
use std::collections::HashMap;
use std::os::unix::fs::DirEntryExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A cgroup tree deeper than this is not walked further (systemd nests a few levels; Kubernetes
/// about five).
const MAX_DEPTH: usize = 16;
/// How many cgroups a walk records at most: a bound on memory and on the time of one walk.
const MAX_CGROUPS: usize = 100_000;
/// Walks are at least this far apart.
const REWALK_INTERVAL: Duration = Duration::from_secs(1);

/// cgroup id -> path, for the session.
pub struct CgroupNames {
    root: Option<PathBuf>,
    by_id: HashMap<u64, CgroupName>,
    last_walk: Option<Instant>,
}

impl CgroupNames {
    pub fn new() -> Self {
        CgroupNames { root: crate::kernel::cgroup::cgroup2_mount(), by_id: HashMap::new(), last_walk: None }
    }

    /// The cgroup with this id; None for 0 (the kernel had no cgroup v2 for the task), an
    /// id whose cgroup is gone, or no cgroup2 mount.
    pub fn lookup(&mut self, id: u64) -> Option<&CgroupName> {
        if id == 0 {
            return None;
        }
        if !self.by_id.contains_key(&id) && self.last_walk.is_none_or(|t| t.elapsed() >= REWALK_INTERVAL) {
            self.last_walk = Some(Instant::now());
            if let Some(root) = &self.root {
                self.by_id = walk(root)
                    .into_iter()
                    .map(|(id, path)| {
                        let workload = attribute(&path);
                        (id, CgroupName { path, workload })
                    })
                    .collect();
            }
        }
        self.by_id.get(&id)
    }
}

impl Default for CgroupNames {
    fn default() -> Self {
        Self::new()
    }
}

/// Every cgroup below `root`: (id, path relative to root with a leading `/`).
fn walk(root: &Path) -> Vec<(u64, String)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    if let Ok(meta) = std::fs::metadata(root) {
        out.push((meta.ino(), "/".to_string()));
    }
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if out.len() >= MAX_CGROUPS {
                return out;
            }
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}/{name}");
            out.push((entry.ino(), path.clone()));
            if depth + 1 < MAX_DEPTH {
                stack.push((entry.path(), path, depth + 1));
            }
        }
    }
    out
}

/// The cgroup of the container whose id starts with `prefix` (`--container`): its path under
/// the cgroup2 mount. The outermost cgroup of that container when it has sub-cgroups; an
/// error naming the candidates when the prefix is ambiguous.
pub fn container_cgroup(prefix: &str) -> Result<PathBuf> {
    let prefix = prefix.trim();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) {
        bail!("--container {prefix:?}: expected a container id (or its first characters), e.g. 3f4e9c1a2b7d");
    }
    let root =
        crate::kernel::cgroup::cgroup2_mount().context("no cgroup v2 hierarchy is mounted: --container needs one")?;
    let mut found: Vec<(String, String)> = walk(&root)
        .into_iter()
        .filter_map(|(_, path)| {
            let c = attribute(&path).container?;
            c.id.starts_with(prefix).then_some((c.id, path))
        })
        .collect();
    // Shallowest first: a container's own cgroup before the ones its runtime makes inside it.
    found.sort_by_key(|(id, path)| (id.clone(), path.matches('/').count()));
    found.dedup_by(|b, a| a.0 == b.0);
    match found.as_slice() {
        [] => bail!(
            "no container with an id starting with {prefix:?} on this host (looked for docker, containerd, CRI-O, \
             podman and systemd cgroups under {}; is it running?)",
            root.display()
        ),
        [(_, path)] => Ok(PathBuf::from(path)),
        many => bail!(
            "--container {prefix:?} matches {} containers ({}): give more of the id",
            many.len(),
            many.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "host-kernel-tests")]
    #[test]
    fn this_process_cgroup_id_resolves_to_its_path() {
        use std::os::unix::fs::MetadataExt as _;
        let root = crate::kernel::cgroup::cgroup2_mount().expect("cgroup2 is mounted here");
        // Our own cgroup v2 path ("0::/path").
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = own.lines().find_map(|l| l.strip_prefix("0::")).expect("a cgroup v2 line").to_string();
        let id = std::fs::metadata(root.join(rel.trim_start_matches('/'))).unwrap().ino();
        let mut names = CgroupNames::new();
        assert_eq!(names.lookup(id).map(|n| n.path.clone()), Some(rel));
        assert!(names.lookup(0).is_none());
        // An id that is no cgroup: not found, and not walked again within the interval.
        let walked = names.last_walk;
        assert!(names.lookup(u64::MAX).is_none());
        assert_eq!(names.last_walk, walked);
    }

    #[test]
    fn container_prefixes_are_checked() {
        assert!(container_cgroup("").is_err());
        assert!(container_cgroup("../etc").unwrap_err().to_string().contains("expected a container id"));
        let err = container_cgroup("ffffffffffff0000").unwrap_err().to_string();
        assert!(err.contains("no container with an id starting with"), "{err}");
    }
}
