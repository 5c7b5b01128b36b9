//! Whose network namespace a namespace inode number is: the traced processes' own, the host's
//! (PID 1's), one `ip netns` named, or a process's (a container's, a pod's). A packet of a
//! traced connection can be dropped in any namespace of this host (a router's, a bridge's, the
//! destination container's); the drop record carries the inode, this names it.
//!
//! Read when a failure with drops arrives, never on the hot path. A process's namespace link
//! can be read only with ptrace access, which socktrace gives up with its capabilities after
//! attach: which namespace each process lives in is read at attach (one link per process),
//! and at a failure only what an unprivileged root process can still see is read again:
//! /run/netns, and the links of processes that hold no capability.

use crate::facts::NetnsOwner;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// An answer is kept this long: namespaces come and go with containers.
const REMEMBER_FOR: Duration = Duration::from_secs(10);
/// At most this many /proc entries are read for one namespace (a bound on a busy host).
const MAX_PROCESSES: usize = 100_000;

#[derive(Default)]
pub struct NetnsNames {
    traced: Vec<u32>,
    host: Option<u32>,
    /// Namespace -> the lowest PID living in it at attach.
    at_attach: HashMap<u32, u32>,
    known: HashMap<u32, (Instant, Option<NetnsOwner>)>,
}

impl NetnsNames {
    /// Reads the namespaces of `pids` (the traced processes at attach) and of PID 1, while
    /// socktrace may still read other processes' namespace links.
    /// `by_namespace`: every namespace a process lived in at attach, with the lowest PID.
    pub fn open(pids: &[u32], by_namespace: HashMap<u32, u32>) -> NetnsNames {
        let own = if pids.is_empty() { vec![inode_of(Path::new("/proc/self/ns/net"))] } else { Vec::new() };
        let traced = pids
            .iter()
            .map(|p| inode_of(&Path::new("/proc").join(p.to_string()).join("ns/net")))
            .chain(own)
            .flatten()
            .collect();
        NetnsNames { traced, host: host_namespace(Path::new("/proc")), at_attach: by_namespace, known: HashMap::new() }
    }

    /// Whose namespace `inode` is, where the host can tell.
    pub fn owner(&mut self, inode: u32, failing_pid: u32) -> Option<NetnsOwner> {
        let pid_ns = inode_of(&Path::new("/proc").join(failing_pid.to_string()).join("ns/net"));
        if self.traced.contains(&inode) || pid_ns == Some(inode) {
            return Some(NetnsOwner::Traced);
        }
        if self.host == Some(inode) {
            return Some(NetnsOwner::Host);
        }
        if let Some((at, owner)) = self.known.get(&inode) {
            if at.elapsed() < REMEMBER_FOR {
                return owner.clone();
            }
        }
        let proc = Path::new("/proc");
        let owner = named(Path::new("/run/netns"), inode)
            .or_else(|| self.at_attach.get(&inode).and_then(|&pid| process(proc, pid)))
            .or_else(|| process_in(proc, inode));
        if self.known.len() >= 1024 {
            self.known.clear();
        }
        self.known.insert(inode, (Instant::now(), owner.clone()));
        owner
    }
}

/// The host's network namespace: PID 1's; or, where PID 1's link cannot be read (an init
/// holding a capability socktrace lacks, in a sandbox), kthreadd's (PID 2), a kernel thread,
/// which lives in the initial namespaces on every kernel.
pub fn host_namespace(proc: &Path) -> Option<u32> {
    inode_of(&proc.join("1/ns/net")).or_else(|| {
        let comm = std::fs::read(proc.join("2/comm")).ok()?;
        (comm == b"kthreadd\n").then(|| inode_of(&proc.join("2/ns/net")))?
    })
}

/// The inode of the namespace a `ns/net` link (or an `ip netns` file) refers to.
pub fn inode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).ok().and_then(|m| u32::try_from(m.ino()).ok())
}

/// The `ip netns` name of namespace `inode`: a file in `dir` bound to it.
fn named(dir: &Path, inode: u32) -> Option<NetnsOwner> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| inode_of(&e.path()) == Some(inode))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().next().map(NetnsOwner::Named)
}

/// The processes of `proc`, lowest PID first (at most MAX_PROCESSES).
fn pids(proc: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(proc) else { return Vec::new() };
    let mut pids: Vec<u32> =
        dir.flatten().take(MAX_PROCESSES).filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    pids
}

/// The namespace a process's `ns/net` link names (`net:[4026531840]`).
fn namespace_of(proc: &Path, pid: u32) -> Option<u32> {
    let link = std::fs::read_link(proc.join(pid.to_string()).join("ns/net")).ok()?;
    link.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Every namespace a process of `proc` lives in, with the lowest PID living there.
pub fn processes_by_namespace(proc: &Path) -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    for pid in pids(proc) {
        if let Some(ns) = namespace_of(proc, pid) {
            out.entry(ns).or_insert(pid);
        }
    }
    out
}

/// The lowest-numbered process living in namespace `inode` (among those whose link can be
/// read now), its name and workload.
fn process_in(proc: &Path, inode: u32) -> Option<NetnsOwner> {
    let pid = pids(proc).into_iter().find(|&p| namespace_of(proc, p) == Some(inode))?;
    process(proc, pid)
}

/// Process `pid` as the owner of its namespace: its name and workload (world-readable).
fn process(proc: &Path, pid: u32) -> Option<NetnsOwner> {
    let dir = proc.join(pid.to_string());
    if !dir.exists() {
        return None;
    }
    let comm = std::fs::read(dir.join("comm")).unwrap_or_default();
    let comm = comm.strip_suffix(b"\n").unwrap_or(&comm).to_vec();
    let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("");
    Some(NetnsOwner::Process { pid, comm, workload: crate::container::attribute(path) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PID 1's link, else kthreadd's; never another PID 2's (in a PID namespace of its own,
    /// PID 2 is anybody).
    #[test]
    fn the_host_namespace_is_pid_1s_else_kthreadds() {
        let proc = std::env::temp_dir().join(format!("socktrace-hostns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&proc);
        for pid in ["1", "2"] {
            std::fs::create_dir_all(proc.join(pid).join("ns")).unwrap();
        }
        std::fs::write(proc.join("2/ns/net"), "").unwrap();
        std::fs::write(proc.join("2/comm"), "kthreadd\n").unwrap();
        let kthreadd = inode_of(&proc.join("2/ns/net")).unwrap();
        assert_eq!(host_namespace(&proc), Some(kthreadd));
        std::fs::write(proc.join("2/comm"), "bash\n").unwrap();
        assert_eq!(host_namespace(&proc), None);
        std::fs::write(proc.join("1/ns/net"), "").unwrap();
        assert_eq!(host_namespace(&proc), inode_of(&proc.join("1/ns/net")));
        std::fs::remove_dir_all(&proc).unwrap();
    }

    #[test]
    fn an_ip_netns_file_and_a_process_name_their_namespace() {
        // This process's own namespace stands in for any: the /run/netns-like directory holds
        // a link to it (what matters is the inode), and /proc holds this process.
        let ino = inode_of(Path::new("/proc/self/ns/net")).expect("a namespace link");
        let dir = std::env::temp_dir().join(format!("socktrace-netns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/proc/self/ns/net", dir.join("blue")).unwrap();
        std::fs::write(dir.join("not-a-namespace"), "").unwrap();
        assert_eq!(named(&dir, ino), Some(NetnsOwner::Named("blue".into())));
        assert_eq!(named(&dir, ino.wrapping_add(1)), None);
        std::fs::remove_dir_all(&dir).unwrap();
        match process_in(Path::new("/proc"), ino) {
            Some(NetnsOwner::Process { pid, .. }) => assert!(pid <= std::process::id()),
            other => panic!("{other:?}"),
        }
        assert_eq!(process_in(Path::new("/proc"), 1), None);
        let index = processes_by_namespace(Path::new("/proc"));
        assert!(index.get(&ino).is_some_and(|&pid| pid <= std::process::id()), "{index:?}");
    }
}
