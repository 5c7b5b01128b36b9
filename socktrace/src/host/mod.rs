//! The host's side of a failure for want of a resource: numbers read from /proc when such a
//! failure arrives (never on the hot path, never for other failures), for the diagnosis.
//! What the kernel could record at the moment of the failure comes in the event itself
//! (`ResourceFacts`); this adds what only a walk of /proc can tell: who else uses the ports
//! towards a destination, which listener a connect waited for and how full its queue is, the
//! system's file table, TCP's memory.

use crate::facts::{Failure, Listener};
use crate::model::{errno, TcpState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

pub mod cgroups;
pub mod netns;
mod sock_diag;

use sock_diag::DiagSocket;

/// One /proc directory per network namespace of `pids` (the first process seen in each), or
/// socktrace's own with no PID: where the per-namespace files and sockets are opened.
fn distinct_namespaces(pids: &[u32]) -> Vec<String> {
    let procs: Vec<String> =
        if pids.is_empty() { vec!["/proc/self".into()] } else { pids.iter().map(|p| format!("/proc/{p}")).collect() };
    let mut seen = Vec::new();
    procs
        .into_iter()
        .filter(|proc| match std::fs::read_link(format!("{proc}/ns/net")) {
            Ok(ns) if !seen.contains(&ns) => {
                seen.push(ns);
                true
            }
            _ => false,
        })
        .collect()
}

/// What socktrace can read of the traced processes' network namespaces once it has given up
/// its privileges, prepared at attach: a socket-diagnostics socket in each (see `DiagSocket`),
/// and who holds each listener open then (reading other processes' descriptor tables needs
/// ptrace access; listeners opened later are named by the kernel when they listen).
#[derive(Default)]
pub struct Namespaces {
    diag: Vec<DiagSocket>,
    /// Listener inode -> the processes holding it, lowest PID first.
    owners: std::collections::HashMap<u64, Vec<(u32, String)>>,
}

impl Namespaces {
    /// For the namespaces of `pids` (each once), or socktrace's own with no PID.
    pub fn open(pids: &[u32]) -> Namespaces {
        let mut diag = Vec::new();
        for proc in distinct_namespaces(pids) {
            let ns = Path::new(&proc).join("ns/net");
            match DiagSocket::open_in(&ns) {
                Ok(d) => diag.push(d),
                Err(e) => log::debug!("no socket diagnostics in {}: {e}", ns.display()),
            }
        }
        let listeners: Vec<u64> =
            diag.iter().flat_map(|d| d.listeners_on(None).unwrap_or_default()).map(|l| l.inode).collect();
        let owners = socket_owners(Path::new("/proc"), &listeners);
        Namespaces { diag, owners }
    }

    /// The listener with socket inode `inode` on `port`, as socket diagnostics see it, and its
    /// namespace's somaxconn.
    fn listener(&self, port: u16, inode: u64) -> Option<(sock_diag::DiagListener, Option<u64>)> {
        self.diag.iter().find_map(|d| {
            let l = d.listeners_on(Some(port)).ok()?.into_iter().find(|l| l.inode == inode)?;
            Some((l, d.somaxconn))
        })
    }
}

/// Reads what the diagnosis of this failure needs from the host, if anything.
pub fn enrich(f: &mut Failure, namespaces: &Namespaces) {
    // A connect the program gave up on may have waited for a listener of this host whose
    // accept queue is full, as a timed-out one may.
    let abandoned_connect =
        f.ended.as_ref().is_some_and(|e| matches!(e.from, Some(TcpState::SynSent | TcpState::SynRecv)));
    if abandoned_connect {
        if let Some(dest) = f.remote {
            let proc = format!("/proc/{}/task/{}", f.pid, f.tid);
            f.host.listener = listener_at(Path::new(&proc), namespaces, dest);
        }
        return;
    }
    let Some(e) = f.errno else { return };
    // The failing thread's own view: a thread can have a network namespace of its own.
    let proc = format!("/proc/{}/task/{}", f.pid, f.tid);
    match e {
        errno::ENFILE => f.host.file_nr = file_nr(),
        errno::EADDRNOTAVAIL | errno::EADDRINUSE if f.is_connect() => {
            if let Some(dest) = f.remote {
                f.host.to_destination = Some(count_by_state(&tcp_sockets(Path::new(&proc)), |s| s.remote == dest));
            }
        }
        // Only where the kernel could not read TCP's memory itself (it does at the failure).
        errno::ENOBUFS | errno::ENOMEM if f.resource.is_none_or(|r| r.has_mem == 0) => {
            f.host.tcp_mem = tcp_mem(Path::new(&proc))
        }
        // A connect that timed out may have waited for a listener of this host whose accept
        // queue is full: the kernel drops SYNs then, and says so to nobody.
        errno::ETIMEDOUT if f.is_connect() => {
            if let Some(dest) = f.remote {
                f.host.listener = listener_at(Path::new(&proc), namespaces, dest);
            }
        }
        _ => {}
    }
}

fn file_nr() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/sys/fs/file-nr").ok()?;
    let v: Vec<u64> = text.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    Some((v.first()?.saturating_sub(*v.get(1)?), *v.get(2)?))
}

fn tcp_mem(proc: &Path) -> Option<(u64, [u64; 3])> {
    let sockstat = std::fs::read_to_string(proc.join("net/sockstat")).ok()?;
    let used = parse_sockstat_mem(&sockstat)?;
    let limits = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").ok()?;
    let l: Vec<u64> = limits.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    Some((used, [*l.first()?, *l.get(1)?, *l.get(2)?]))
}

/// `TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 1` -> 1 (pages).
fn parse_sockstat_mem(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// One line of /proc/PID/net/tcp or tcp6.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: Option<TcpState>,
    /// For a listener: its accept queue's limit; otherwise the send queue.
    pub tx_queue: u64,
    /// For a listener: connections waiting in its accept queue; otherwise the receive queue.
    pub rx_queue: u64,
    pub inode: u64,
}

/// Every TCP socket of the process's network namespace (IPv4 and IPv6).
fn tcp_sockets(proc: &Path) -> Vec<ProcSocket> {
    let mut out = Vec::new();
    for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(proc.join(file)) {
            out.extend(text.lines().skip(1).filter_map(|l| parse_proc_tcp_line(l, v6)));
        }
    }
    out
}

/// `  0: 0100007F:1F90 00000000:0000 0A 00000000:00000001 ...  0  0 12345 ...`
pub fn parse_proc_tcp_line(line: &str, v6: bool) -> Option<ProcSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let addr = |s: &str| -> Option<SocketAddr> {
        let (ip, port) = s.split_once(':')?;
        let port = u16::from_str_radix(port, 16).ok()?;
        let ip = if v6 {
            // Four 32-bit words, each printed in host (little-endian) order.
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        } else {
            IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_le_bytes()))
        };
        Some(SocketAddr::new(ip, port))
    };
    let (tx, rx) = f.get(4)?.split_once(':')?;
    Some(ProcSocket {
        local: addr(f.get(1)?)?,
        remote: addr(f.get(2)?)?,
        state: TcpState::from_kernel(u8::from_str_radix(f.get(3)?, 16).ok()?),
        tx_queue: u64::from_str_radix(tx, 16).ok()?,
        rx_queue: u64::from_str_radix(rx, 16).ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

fn count_by_state(sockets: &[ProcSocket], keep: impl Fn(&ProcSocket) -> bool) -> Vec<(TcpState, u64)> {
    let mut counts: Vec<(TcpState, u64)> = Vec::new();
    for s in sockets.iter().filter(|s| keep(s)) {
        let Some(state) = s.state else { continue };
        match counts.iter_mut().find(|(st, _)| *st == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    counts.sort();
    counts
}

/// The listener the connect to `dest` would reach in the process's namespace: one on that
/// port bound to that address or to any.
/// Found in the task's own /proc/net/tcp (readable without privilege); socket diagnostics, by
/// its inode, add its backlog; the owners come from the kernel or from attach.
fn listener_at(proc: &Path, namespaces: &Namespaces, dest: SocketAddr) -> Option<Listener> {
    let reaches = |local: SocketAddr| {
        local.port() == dest.port()
            && (local.ip() == dest.ip() || (local.ip().is_unspecified() && dest.ip().is_loopback()))
    };
    let sockets = tcp_sockets(proc);
    let s = sockets.iter().find(|s| s.state == Some(TcpState::Listen) && reaches(s.local))?;
    let mut l = Listener { addr: s.local, queued: s.rx_queue, backlog: None, somaxconn: None, owners: Vec::new() };
    if let Some((d, somaxconn)) = namespaces.listener(dest.port(), s.inode) {
        (l.queued, l.backlog, l.somaxconn) = (d.queued, Some(d.backlog), somaxconn);
    }
    l.owners = namespaces.owners.get(&s.inode).cloned().unwrap_or_default();
    Some(l)
}

/// The processes with a descriptor on each socket of `inodes`, lowest PID first, with their
/// names: one pass over /proc/*/fd.
fn socket_owners(proc: &Path, inodes: &[u64]) -> std::collections::HashMap<u64, Vec<(u32, String)>> {
    let mut out: std::collections::HashMap<u64, Vec<(u32, String)>> = std::collections::HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(dir) = std::fs::read_dir(proc) else { return out };
    let mut pids: Vec<u32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(proc.join(pid.to_string()).join("fd")) else { continue };
        let mut comm: Option<String> = None;
        for fd in fds.filter_map(Result::ok) {
            let Ok(link) = std::fs::read_link(fd.path()) else { continue };
            let Some(inode) = link.to_str().and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
            else {
                continue;
            };
            if !inodes.contains(&inode) {
                continue;
            }
            let comm = comm
                .get_or_insert_with(|| {
                    let c = std::fs::read(proc.join(pid.to_string()).join("comm")).unwrap_or_default();
                    crate::text::escape_bytes(c.strip_suffix(b"\n").unwrap_or(&c))
                })
                .clone();
            let owners = out.entry(inode).or_default();
            if !owners.iter().any(|(p, _)| *p == pid) {
                owners.push((pid, comm));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_parse() {
        let v4 = "   0: 0100007F:2328 00000000:0000 0A 00000001:00000002 00:00000000 00000000     0        0 424242 1 0000000000000000 100 0 0 10 0";
        let s = parse_proc_tcp_line(v4, false).unwrap();
        assert_eq!(s.local, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(s.state, Some(TcpState::Listen));
        assert_eq!((s.tx_queue, s.rx_queue, s.inode), (1, 2, 424242));
        let tw = "   1: 0100007F:9C40 0100007F:2328 06 00000000:00000000 03:000005DC 00000000     0        0 0 3 0000000000000000";
        let s = parse_proc_tcp_line(tw, false).unwrap();
        assert_eq!(
            (s.local.port(), s.remote, s.state),
            (40000, "127.0.0.1:9000".parse().unwrap(), Some(TcpState::TimeWait))
        );
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000080:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0";
        let s = parse_proc_tcp_line(v6, true).unwrap();
        assert_eq!(s.local, "[::1]:8080".parse().unwrap());
        assert_eq!(s.tx_queue, 0x80);
        let mapped = "   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 9 1";
        assert_eq!(parse_proc_tcp_line(mapped, true).unwrap().remote, "127.0.0.1:50000".parse().unwrap());
        assert!(parse_proc_tcp_line("  sl  local_address rem_address   st", false).is_none());
    }

    #[test]
    fn counts_by_state_and_sockstat_memory() {
        let dest: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let mk = |state, remote: SocketAddr| ProcSocket {
            local: "127.0.0.1:40000".parse().unwrap(),
            remote,
            state: Some(state),
            tx_queue: 0,
            rx_queue: 0,
            inode: 1,
        };
        let socks = [
            mk(TcpState::Established, dest),
            mk(TcpState::TimeWait, dest),
            mk(TcpState::Established, dest),
            mk(TcpState::Established, "127.0.0.1:1".parse().unwrap()),
        ];
        assert_eq!(
            count_by_state(&socks, |s| s.remote == dest),
            vec![(TcpState::Established, 2), (TcpState::TimeWait, 1)]
        );
        assert_eq!(
            parse_sockstat_mem("sockets: used 9\nTCP: inuse 5 orphan 0 tw 0 alloc 7 mem 13\nUDP: inuse 0 mem 0\n"),
            Some(13)
        );
    }
}

/// `TcpExt: ListenOverflows` of the network namespaces socktrace watches, from the start of
/// the session: SYNs dropped because an accept queue was full, whoever the client was. The
/// files are opened at attach and kept: they stay bound to their namespace even when the
/// process that named it has exited.
pub struct ListenOverflows {
    files: Vec<(std::fs::File, u64)>,
}

impl ListenOverflows {
    /// For the namespaces of `pids` (each once), or socktrace's own with no PID.
    pub fn start(pids: &[u32]) -> ListenOverflows {
        let mut files = Vec::new();
        for proc in distinct_namespaces(pids) {
            if let Ok(mut f) = std::fs::File::open(format!("{proc}/net/netstat")) {
                if let Some(n) = read_listen_overflows(&mut f) {
                    files.push((f, n));
                }
            }
        }
        ListenOverflows { files }
    }

    /// Overflows since `start`, summed over the namespaces; None if none could be read.
    pub fn since_start(&mut self) -> Option<u64> {
        if self.files.is_empty() {
            return None;
        }
        let mut total = 0;
        for (f, at_start) in &mut self.files {
            total += read_listen_overflows(f)?.saturating_sub(*at_start);
        }
        Some(total)
    }
}

fn read_listen_overflows(f: &mut std::fs::File) -> Option<u64> {
    use std::io::{Read as _, Seek as _};
    f.seek(std::io::SeekFrom::Start(0)).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    parse_netstat_field(&text, "TcpExt:", "ListenOverflows")
}

/// A counter of /proc/net/netstat: a header line and a value line share the prefix.
fn parse_netstat_field(text: &str, prefix: &str, field: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let header = lines.next()?;
    let values = lines.next()?;
    let i = header.split_whitespace().position(|w| w == field)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

#[cfg(test)]
mod netstat_tests {
    #[test]
    fn listen_overflows_are_read_from_netstat() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 17 19\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(super::parse_netstat_field(text, "TcpExt:", "ListenOverflows"), Some(17));
        assert_eq!(super::parse_netstat_field(text, "TcpExt:", "Nothing"), None);
    }
}
