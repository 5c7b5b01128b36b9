//! Sockets older than the trace. A traced process's connections opened before socktrace
//! attached have no history: the kernel keeps histories only for sockets a traced process
//! touched. So, once attached, socktrace adopts them: it duplicates each socket fd of each
//! traced process (`pidfd_getfd`, 5.6+) and makes a marked `getsockopt` on the copy, which the
//! `sys_exit` program recognises as socktrace's own and turns into a history for that socket
//! (`socktrace_common::adopt`). The copy is closed at once.
//!
//! Needs ptrace access to the processes (root, or CAP_SYS_PTRACE); without it the sockets are
//! only not adopted, and socktrace says so.

use super::config::Selection;
use socktrace_common::adopt::{ADOPT_LEVEL, ADOPT_OPTNAME, LEARN_OPTNAME};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::Path;

/// What adoption did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    pub processes: usize,
    pub sockets: usize,
    /// Processes whose sockets could not be adopted, with why.
    pub refused: Vec<(u32, String)>,
    /// Sockets adopted that got no history: the history map was full (`--max-histories`).
    pub without_history: u64,
    /// (pid, socket inode) of every socket adopted: who holds which, known without reading
    /// /proc/PID/fd again (`host::Namespaces` names listeners' owners from it).
    pub held: Vec<(u32, u64)>,
    /// The processes whose every socket is in `held`.
    pub scanned: Vec<u32>,
}

/// Adopts every socket of every process the selection names now (by PID, name or cgroup);
/// with no selector there is nothing to do (every socket's history starts at its next event).
pub fn existing_sockets(sel: &Selection) -> Adopted {
    let mut out = Adopted::default();
    if sel.is_everything() {
        return out;
    }
    for pid in processes(sel) {
        match adopt_process(pid, &mut out.held) {
            Ok(n) => {
                out.processes += 1;
                out.sockets += n;
                out.scanned.push(pid);
            }
            Err(e) => out.refused.push((pid, e.to_string())),
        }
    }
    out
}

/// The processes the selection names, as they are now: the PIDs given, or every process
/// whose name and cgroup match.
fn processes(sel: &Selection) -> Vec<u32> {
    if !sel.tgids.is_empty() {
        return sel.tgids.clone();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id() && matches(sel, pid))
        .collect()
}

fn matches(sel: &Selection, pid: u32) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    if let Some(want) = &sel.comm {
        match std::fs::read(proc.join("comm")) {
            Ok(mut comm) => {
                if comm.last() == Some(&b'\n') {
                    comm.pop();
                }
                if &comm != want {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    if let Some((id, _)) = sel.cgroup {
        if !in_cgroup(&proc, id) {
            return false;
        }
    }
    true
}

/// Whether the process's cgroup v2 is `id` or below it.
fn in_cgroup(proc: &Path, id: u64) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(text) = std::fs::read_to_string(proc.join("cgroup")) else { return false };
    let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) else { return false };
    let Some(root) = super::cgroup::cgroup2_mount() else { return false };
    let mut dir = root.join(path.trim_start_matches('/'));
    loop {
        if std::fs::metadata(&dir).is_ok_and(|m| m.ino() == id) {
            return true;
        }
        if dir == root || !dir.pop() {
            return false;
        }
    }
}

/// Shows the kernel programs what a socket's file and a TCP socket look like: a marked
/// `getsockopt` on a TCP socket of each family, opened here and closed at once (see
/// `socktrace_common::adopt::LEARN_OPTNAME`). Until then (or where a family is missing) the fd
/// walk takes its slow path, which is as exact.
pub fn teach_socket_ops() {
    for family in [libc::AF_INET, libc::AF_INET6] {
        // SAFETY: plain syscall; the returned fd is owned below.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, libc::IPPROTO_TCP) };
        if fd < 0 {
            continue; // no IPv6 here: IPv6 sockets take the slow path
        }
        // SAFETY: a fresh descriptor we own; closed when dropped, right after the mark.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        mark(&sock, LEARN_OPTNAME);
    }
}

/// The marked call: it fails (no protocol has this level); the kernel program has seen it by
/// then. Its errno: ENOTSOCK when the descriptor is not a socket.
fn mark(sock: &OwnedFd, optname: u64) -> Option<i32> {
    let mut value = [0u8; 4];
    let mut len = value.len() as libc::socklen_t;
    // SAFETY: a valid descriptor and a 4-byte buffer with its length.
    unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            ADOPT_LEVEL as libc::c_int,
            optname as libc::c_int,
            value.as_mut_ptr().cast(),
            &mut len,
        )
    };
    std::io::Error::last_os_error().raw_os_error()
}

/// Adopts every socket of `pid`, adding (pid, inode) of each to `held`: its descriptors are
/// split among a few threads (one per CPU, at most eight), each duplicating its share and
/// marking the copies that are sockets (`fstat` on the copy says, cheaper than asking /proc).
fn adopt_process(pid: u32, held: &mut Vec<(u32, u64)>) -> std::io::Result<usize> {
    // SAFETY: plain syscall; the returned fd is owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // Every slot of its descriptor table, tried in turn: an empty one answers EBADF at once,
    // cheaper than listing /proc/PID/fd (a dentry per descriptor).
    let fds: Vec<i32> = (0..fd_table_size(pid)?).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    // Strided, not chunked: the open descriptors crowd the low slots.
    let shares: Vec<Vec<i32>> = (0..threads).map(|t| fds.iter().copied().skip(t).step_by(threads).collect()).collect();
    let results: Vec<std::io::Result<Vec<u64>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = shares.iter().map(|share| scope.spawn(|| adopt_fds(&pidfd, share))).collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(std::io::Error::other("adoption thread panicked"))))
            .collect()
    });
    let mut adopted = 0;
    for r in results {
        let inodes = r?;
        adopted += inodes.len();
        held.extend(inodes.into_iter().map(|i| (pid, i)));
    }
    Ok(adopted)
}

/// The size of `pid`'s descriptor table (`FDSize` in /proc/PID/status): every open
/// descriptor is below it.
fn fd_table_size(pid: u32) -> std::io::Result<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:")?.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no FDSize in /proc/{pid}/status")))
}

/// Duplicates each of `fds` (the process's descriptors) and marks the copies that are sockets;
/// their inodes.
fn adopt_fds(pidfd: &OwnedFd, fds: &[i32]) -> std::io::Result<Vec<u64>> {
    let mut adopted = Vec::new();
    for &fd in fds {
        // SAFETY: plain syscall; the returned fd is owned below.
        let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if copy < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EBADF) {
                continue; // closed meanwhile
            }
            return Err(err);
        }
        // SAFETY: a fresh descriptor we own; closed when dropped, right after the mark.
        let copy = unsafe { OwnedFd::from_raw_fd(copy as i32) };
        // SAFETY: a valid descriptor and a zeroed stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(copy.as_raw_fd(), &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            continue;
        }
        mark(&copy, ADOPT_OPTNAME);
        adopted.push(st.st_ino);
    }
    Ok(adopted)
}
