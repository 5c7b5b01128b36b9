//! cgroup v2: where the hierarchy is mounted, and a cgroup's id (what the kernel filters on).

use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};

/// The cgroup v2 id (the directory's inode) and depth of PATH, given absolute
/// (`/sys/fs/cgroup/...`) or relative to the cgroup2 mount (`/system.slice/x.service`).
pub fn id_and_level(path: &Path) -> Result<(u64, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    let root = cgroup2_mount().context("no cgroup v2 hierarchy is mounted: --cgroup needs one")?;
    let full =
        if path.starts_with(&root) { path.to_path_buf() } else { root.join(path.strip_prefix("/").unwrap_or(path)) };
    let meta = std::fs::metadata(&full).with_context(|| format!("no such cgroup: {}", full.display()))?;
    if !meta.is_dir() || !full.join("cgroup.procs").exists() {
        bail!("{} is not a cgroup v2 directory", full.display());
    }
    let level = full.strip_prefix(&root).map(|p| p.components().count()).unwrap_or(0) as u32;
    Ok((meta.ino(), level))
}

pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// This machine's cgroup2 mount (a property of the host, not of the code).
#[cfg(all(test, feature = "host-kernel-tests"))]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_resolve_to_ids() {
        let root = cgroup2_mount().expect("cgroup2 is mounted here");
        let (id, level) = id_and_level(&root).unwrap();
        assert_eq!(level, 0);
        assert!(id > 0);
        assert!(id_and_level(Path::new("/no/such/cgroup")).unwrap_err().to_string().contains("no such cgroup"));
    }
}
