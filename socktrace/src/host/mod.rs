//! The host's side of a failure for want of a resource: numbers read from /proc when such a
//! failure arrives (never on the hot path, never for other failures), for the diagnosis.
//! What the kernel could record at the moment of the failure comes in the event itself
//! (`ResourceFacts`); this adds what only a walk of /proc can tell: who else uses the ports
//! towards a destination, which listener a connect waited for and how full its queue is, the
//! system's file table, TCP's memory.

use crate::facts::{Failure, Listener, Nat, NatSeen, RefusedSyn};
use crate::model::{errno, TcpState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

pub mod cgroups;
mod conntrack;
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
    /// The host's other network namespaces (a container's, a router's, a pod's): where the
    /// listener a connect waited for may live.
    others: Vec<OtherNamespace>,
    /// Listener inode -> the processes holding it, lowest PID first.
    owners: std::collections::HashMap<u64, Vec<(u32, String)>>,
    /// The host's namespace (PID 1's), when it is not a traced one.
    host: Option<u32>,
    conntrack: conntrack::Conntrack,
    /// Destinations whose last NAT lookup for a process found no rewrite, and when
    /// (CLOCK_MONOTONIC ns), by process and destination.
    not_rewritten: std::collections::HashMap<(u32, SocketAddr), u64>,
    /// The namespace each address was last found in (`address_lives_in`), and when.
    address_owners: std::collections::HashMap<IpAddr, (u64, Option<u32>)>,
}

/// A network namespace of this host other than the traced processes', as attach found it.
struct OtherNamespace {
    inode: u32,
    /// A process living in it (the lowest PID at attach): its /proc/PID/net files show the
    /// namespace's addresses (readable without privilege while it lives).
    pid: u32,
    diag: DiagSocket,
    /// Its `TcpExt: ListenDrops` at attach, and the file it was read from (kept: it stays
    /// bound to the namespace).
    listen_drops: Option<(std::fs::File, u64)>,
}

/// At most this many other namespaces are watched (two descriptors each).
const MAX_OTHER_NAMESPACES: usize = 128;
/// At most this many namespaces' connection tracking tables are read for one failure.
const MAX_NAT_NAMESPACES: usize = 32;
/// A destination no table showed rewritten is not looked up again for this long: a table read
/// walks the whole table (most of socktrace's CPU in a stream of resets: 0.5 s per 12,000
/// before this), and NAT rules change far less often than connections fail.
const NOT_REWRITTEN_FOR_NS: u64 = 10_000_000_000;
/// At most this many such destinations are remembered.
const MAX_NOT_REWRITTEN: usize = 4096;

impl Namespaces {
    /// For the namespaces of `pids` (each once), or socktrace's own with no PID; and the
    /// host's other namespaces (`by_namespace`: each with a process living in it).
    /// `adopted`: the traced processes' sockets as adoption found them (their fds are not
    /// read again).
    pub fn open(
        pids: &[u32],
        by_namespace: &std::collections::HashMap<u32, u32>,
        adopted: &crate::kernel::adopt::Adopted,
    ) -> Namespaces {
        let mut diag = Vec::new();
        let mut own = Vec::new();
        for proc in distinct_namespaces(pids) {
            let ns = Path::new(&proc).join("ns/net");
            own.extend(netns::inode_of(&ns));
            match DiagSocket::open_in(&ns) {
                Ok(d) => diag.push(d),
                Err(e) => log::debug!("no socket diagnostics in {}: {e}", ns.display()),
            }
        }
        let mut candidates: Vec<(u32, u32)> =
            by_namespace.iter().filter(|(ns, _)| !own.contains(ns)).map(|(&ns, &pid)| (ns, pid)).collect();
        candidates.sort_unstable_by_key(|&(_, pid)| pid);
        let others: Vec<OtherNamespace> = candidates
            .into_iter()
            .take(MAX_OTHER_NAMESPACES)
            .filter_map(|(inode, pid)| {
                let proc = Path::new("/proc").join(pid.to_string());
                let diag = DiagSocket::open_in(&proc.join("ns/net")).ok()?;
                let listen_drops = std::fs::File::open(proc.join("net/netstat"))
                    .ok()
                    .and_then(|mut f| read_netstat(&mut f, "ListenDrops").map(|n| (f, n)));
                Some(OtherNamespace { inode, pid, diag, listen_drops })
            })
            .collect();
        let listeners: Vec<u64> = diag
            .iter()
            .chain(others.iter().map(|o| &o.diag))
            .flat_map(|d| d.listeners_on(None).unwrap_or_default())
            .map(|l| l.inode)
            .collect();
        let owners = socket_owners(Path::new("/proc"), &listeners, adopted);
        let host = netns::host_namespace(Path::new("/proc")).filter(|h| !own.contains(h));
        Namespaces {
            diag,
            others,
            owners,
            host,
            conntrack: conntrack::Conntrack::default(),
            not_rewritten: Default::default(),
            address_owners: Default::default(),
        }
    }

    /// The connection `local` -> `remote` of the task `proc` (a /proc/PID/task/TID directory)
    /// as this host's NAT rewrote it: looked up in its own namespace's connection tracking,
    /// then the host's, then the others'; the first that rewrote its destination.
    fn nat(
        &mut self,
        (pid, proc): (u32, &Path),
        conn: (SocketAddr, SocketAddr),
        failure_ns: u64,
        now_ns: &dyn Fn() -> u64,
    ) -> Option<Nat> {
        // By process: its namespace decides which tables are read.
        let remote = (pid, conn.1);
        if self.not_rewritten.get(&remote).is_some_and(|&at| failure_ns.saturating_sub(at) < NOT_REWRITTEN_FOR_NS) {
            return None;
        }
        let nat = self.nat_in_tables(proc, conn, failure_ns, now_ns);
        if nat.is_none() {
            if self.not_rewritten.len() >= MAX_NOT_REWRITTEN {
                self.not_rewritten.clear();
            }
            self.not_rewritten.insert(remote, failure_ns);
        } else {
            self.not_rewritten.remove(&remote);
        }
        nat
    }

    /// `nat`'s walk of the tables.
    fn nat_in_tables(
        &mut self,
        proc: &Path,
        conn: (SocketAddr, SocketAddr),
        failure_ns: u64,
        now_ns: &dyn Fn() -> u64,
    ) -> Option<Nat> {
        let found = |t: conntrack::Tracked| t.dnat().then_some((t.orig_dst, t.reply_src));
        if let Some((dialled, translated)) = self.conntrack.lookup(proc, conn, failure_ns, now_ns).and_then(found) {
            return Some(Nat { dialled, translated, seen: NatSeen::Conntrack, netns: None, netns_owner: None });
        }
        let host = self.host.and_then(|ns| self.others.iter().find(|o| o.inode == ns));
        let order =
            host.into_iter().chain(self.others.iter().filter(|o| Some(o.inode) != self.host)).take(MAX_NAT_NAMESPACES);
        let candidates: Vec<(u32, u32)> = order.map(|o| (o.inode, o.pid)).collect();
        candidates.into_iter().find_map(|(inode, pid)| {
            let dir = Path::new("/proc").join(pid.to_string());
            let (dialled, translated) = self.conntrack.lookup(&dir, conn, failure_ns, now_ns).and_then(found)?;
            Some(Nat { dialled, translated, seen: NatSeen::Conntrack, netns: Some(inode), netns_owner: None })
        })
    }

    /// The network namespace `ip` is an address of: the task `proc`'s own (also for a loopback
    /// address), or the one other namespace that has it; None when none has it or several do
    /// (namespaces may reuse addresses: a guess could name the wrong one). Remembered for
    /// `NOT_REWRITTEN_FOR_NS` (each answer reads up to `MAX_OTHER_NAMESPACES` route tables).
    fn address_lives_in(&mut self, proc: &Path, ip: IpAddr, now_ns: u64) -> Option<u32> {
        let ip = unmapped(ip);
        if ip.is_loopback() || has_address(proc, ip) {
            return netns::inode_of(&proc.join("ns/net"));
        }
        if let Some(&(at, found)) = self.address_owners.get(&ip) {
            if now_ns.saturating_sub(at) < NOT_REWRITTEN_FOR_NS {
                return found;
            }
        }
        let mut holders = self
            .others
            .iter()
            .filter(|o| has_address(&Path::new("/proc").join(o.pid.to_string()), ip))
            .map(|o| o.inode);
        let found = match (holders.next(), holders.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        };
        if self.address_owners.len() >= MAX_NOT_REWRITTEN {
            self.address_owners.clear();
        }
        self.address_owners.insert(ip, (now_ns, found));
        found
    }

    /// A listener of another namespace of this host that a connect to `dest` reaches: one
    /// bound to `dest`, or to any address of a namespace that has `dest` as its own. Not for
    /// loopback destinations (every namespace has its own).
    fn listener_elsewhere(&mut self, dest: SocketAddr) -> Option<Listener> {
        if dest.ip().is_loopback() || dest.ip().is_unspecified() {
            return None;
        }
        let dest_ip = unmapped(dest.ip());
        for o in &mut self.others {
            let Ok(listeners) = o.diag.listeners_on(Some(dest.port())) else { continue };
            let proc = Path::new("/proc").join(o.pid.to_string());
            let found = listeners.into_iter().find(|l| {
                let ip = unmapped(l.addr.ip());
                ip == dest_ip || (ip.is_unspecified() && has_address(&proc, dest_ip))
            });
            let Some(l) = found else { continue };
            let dropped = o
                .listen_drops
                .as_mut()
                .and_then(|(f, at_attach)| read_netstat(f, "ListenDrops").map(|now| now.saturating_sub(*at_attach)));
            return Some(Listener {
                addr: l.addr,
                queued: l.queued,
                backlog: Some(l.backlog),
                somaxconn: o.diag.somaxconn,
                owners: self.owners.get(&l.inode).cloned().unwrap_or_default(),
                netns: Some(o.inode),
                netns_owner: None,
                syns_dropped_since_attach: dropped,
            });
        }
        None
    }

    /// The listener on `port` that `reaches` accepts, from socket diagnostics of the traced
    /// processes' namespace, when they all live in one: Some(None) when it has none there. None
    /// when they live in several (which one a task lives in is not known here, and a listener
    /// of another would be a wrong answer) or the diagnostics failed.
    fn listener_in_the_only_namespace(
        &self,
        port: u16,
        reaches: impl Fn(SocketAddr) -> bool,
    ) -> Option<Option<Listener>> {
        let [d] = self.diag.as_slice() else { return None };
        let Some(l) = d.listeners_on(Some(port)).ok()?.into_iter().find(|l| reaches(l.addr)) else {
            return Some(None);
        };
        Some(Some(Listener {
            addr: l.addr,
            queued: l.queued,
            backlog: Some(l.backlog),
            somaxconn: d.somaxconn,
            owners: self.owners.get(&l.inode).cloned().unwrap_or_default(),
            netns: None,
            netns_owner: None,
            syns_dropped_since_attach: None,
        }))
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

/// A refusal's NAT: a connect an RST refused in SYN_SENT whose SYN reached another address than
/// the one dialled, so this host rewrote its destination. `refused_from`: the last bare SYN
/// sent from a local end that this host refused (looked up only for such a refusal). The
/// kernel's TCP tracker deleted the connection's entry with the RST, so this is all that
/// shows the rewrite. The namespace that refused is the one the translated address lives in,
/// when exactly one has it.
pub fn nat_of_refusal(
    f: &Failure,
    refused_from: impl FnOnce(SocketAddr) -> Option<RefusedSyn>,
    namespaces: &mut Namespaces,
) -> Option<Nat> {
    // The local end as the SYN carried it: a dual-stack socket's IPv4 end is IPv4.
    let local = f.local.map(|l| SocketAddr::new(unmapped(l.ip()), l.port()));
    let (dialled, translated) = refusal_rewrote(f, || refused_from(local?))?;
    let proc = format!("/proc/{}/task/{}", f.pid, f.tid);
    let netns = namespaces.address_lives_in(Path::new(&proc), translated.ip(), f.ts_ns);
    Some(Nat { dialled, translated, seen: NatSeen::Refusal, netns, netns_owner: None })
}

/// The refused SYN (`syn`, looked up only for a connect an RST refused in SYN_SENT) is this
/// failure's own and reached another address than the one dialled: the dialled and the
/// reached address. Its own: the RST the socket received acknowledges the SYN's sequence
/// number (another socket can share the local end: connect() reuses a port for other
/// destinations), and it was refused while the connect waited.
fn refusal_rewrote(f: &Failure, syn: impl FnOnce() -> Option<RefusedSyn>) -> Option<(SocketAddr, SocketAddr)> {
    let rst = f.history.rst_received.filter(|r| r.state == Some(TcpState::SynSent))?;
    if f.errno != Some(errno::ECONNREFUSED) {
        return None;
    }
    // The SYN's sequence number, as the socket had it when the RST came, or as the RST
    // acknowledged it; without either, nothing ties the record to this connection, and no
    // rewrite is named.
    let ours = f.history.refused_syn_seq.or(f.history.rst_segment.map(|s| s.ack_seq.wrapping_sub(1)))?;
    let dialled = f.remote?;
    let RefusedSyn { ts_ns: ts, reached, seq } = syn()?;
    if ours != seq {
        return None;
    }
    let connecting_since =
        f.history.transitions.iter().rev().find(|t| t.new == Some(TcpState::SynSent)).map(|t| t.ts_ns);
    // Without its SYN_SENT transition, an RST answers a SYN within seconds.
    let earliest = connecting_since.unwrap_or(rst.ts_ns.saturating_sub(10_000_000_000));
    if ts < earliest || ts > rst.ts_ns {
        return None;
    }
    let reached = SocketAddr::new(unmapped(reached.ip()), reached.port());
    (reached != SocketAddr::new(unmapped(dialled.ip()), dialled.port())).then_some((dialled, reached))
}

/// Reads what the diagnosis of this failure needs from the host, if anything. `now_ns`:
/// CLOCK_MONOTONIC now (tables read after a failure are not read again for it).
pub fn enrich(f: &mut Failure, namespaces: &mut Namespaces, now_ns: &dyn Fn() -> u64) {
    // A connection that failed while connecting, or was reset: its destination may be one
    // this host rewrites (a Service address, a published port).
    // Not a connect an RST refused: the kernel's TCP tracker deletes an entry whose only answer
    // is an RST at once, so no table could show it, and each read walks a whole table (most
    // of socktrace's CPU in a stream of refused connects).
    let refused_by_rst = f.errno == Some(errno::ECONNREFUSED) && f.history.rst_received.is_some();
    let connect_failed = f.is_connect()
        && !refused_by_rst
        && matches!(f.errno, Some(errno::ECONNREFUSED | errno::ETIMEDOUT | errno::EHOSTUNREACH | errno::ENETUNREACH));
    let abandoned = f.ended.as_ref().is_some_and(|e| matches!(e.from, Some(TcpState::SynSent | TcpState::SynRecv)));
    let reset = matches!(f.errno, Some(errno::ECONNRESET | errno::EPIPE));
    if f.is_tcp && (connect_failed || abandoned || reset) {
        if let (Some(local), Some(remote)) = (f.local, f.remote) {
            let proc = format!("/proc/{}/task/{}", f.pid, f.tid);
            f.host.nat = namespaces.nat((f.pid, Path::new(&proc)), (local, remote), f.ts_ns, now_ns);
        }
    }
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
                // Not read from a task that is gone (no table): "no connections" would be wrong.
                f.host.to_destination = tcp_sockets_of_namespace(Path::new(&proc))
                    .map(|sockets| count_by_state(&sockets, |s| s.remote == dest));
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
/// The listening TCP sockets of the task's namespace; None when neither table can be read.
/// The kernel lists the listeners first: the read stops at the first other socket, so a
/// host's hundreds of thousands of connections (TIME_WAIT included) are not read for it.
fn listeners_of_namespace(proc: &Path) -> Option<Vec<ProcSocket>> {
    use std::io::BufRead as _;
    let mut out = None;
    for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
        let Ok(f) = std::fs::File::open(proc.join(file)) else { continue };
        let found = out.get_or_insert_with(Vec::new);
        for line in std::io::BufReader::new(f).lines().skip(1) {
            let Ok(line) = line else { break };
            match parse_proc_tcp_line(&line, v6) {
                Some(s) if s.state == Some(TcpState::Listen) => found.push(s),
                Some(_) => break,
                None => {}
            }
        }
    }
    out
}

/// The TCP sockets of the task's namespace; None when neither table can be read: the task is
/// gone, or exiting (a zombie's /proc directory outlives its namespaces).
fn tcp_sockets_of_namespace(proc: &Path) -> Option<Vec<ProcSocket>> {
    let mut out = None;
    for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(proc.join(file)) {
            out.get_or_insert_with(Vec::new).extend(text.lines().skip(1).filter_map(|l| parse_proc_tcp_line(l, v6)));
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
/// port bound to that address or to any; else one of another namespace of this host.
/// Found in the task's own /proc/net/tcp (readable without privilege; its listeners only);
/// socket diagnostics, by its inode, add its backlog; the owners come from the kernel or from
/// attach.
fn listener_at(proc: &Path, namespaces: &mut Namespaces, dest: SocketAddr) -> Option<Listener> {
    let reaches = |local: SocketAddr| {
        local.port() == dest.port()
            && (local.ip() == dest.ip() || (local.ip().is_unspecified() && dest.ip().is_loopback()))
    };
    let Some(sockets) = listeners_of_namespace(proc) else {
        // The task exited (or is exiting) before its failure was read: its namespace's table
        // is gone with it. Its namespace's listener when the traced processes share one, else
        // one of another namespace that has the destination's address.
        return match namespaces.listener_in_the_only_namespace(dest.port(), reaches) {
            Some(Some(found)) => Some(found),
            _ => namespaces.listener_elsewhere(dest),
        };
    };
    let Some(s) = sockets.iter().find(|s| s.state == Some(TcpState::Listen) && reaches(s.local)) else {
        // Not in the process's own namespace: in another of this host's, if any.
        return namespaces.listener_elsewhere(dest);
    };
    let mut l = Listener {
        addr: s.local,
        queued: s.rx_queue,
        backlog: None,
        somaxconn: None,
        owners: Vec::new(),
        netns: None,
        netns_owner: None,
        syns_dropped_since_attach: None,
    };
    if let Some((d, somaxconn)) = namespaces.listener(dest.port(), s.inode) {
        (l.queued, l.backlog, l.somaxconn) = (d.queued, Some(d.backlog), somaxconn);
    }
    l.owners = namespaces.owners.get(&s.inode).cloned().unwrap_or_default();
    Some(l)
}

/// The processes with a descriptor on each socket of `inodes`, lowest PID first, with their
/// names: one pass over /proc/*/fd, the processes shared among a few threads (a busy host has
/// hundreds of thousands of descriptors, and this runs while socktrace attaches).
fn socket_owners(
    proc: &Path,
    inodes: &[u64],
    adopted: &crate::kernel::adopt::Adopted,
) -> std::collections::HashMap<u64, Vec<(u32, String)>> {
    let mut out: std::collections::HashMap<u64, Vec<(u32, String)>> = std::collections::HashMap::new();
    if inodes.is_empty() {
        return out;
    }
    let Ok(dir) = std::fs::read_dir(proc) else { return out };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| !adopted.scanned.contains(pid))
        .collect();
    pids.sort_unstable();
    let wanted: std::collections::HashSet<u64> = inodes.iter().copied().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    // Round-robin: neighbouring PIDs (a service's workers) land on different threads.
    let found: Vec<(u32, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (pids, wanted) = (&pids, &wanted);
                scope.spawn(move || {
                    let mut found = Vec::new();
                    for &pid in pids.iter().skip(t).step_by(threads) {
                        sockets_held(proc, pid, wanted, &mut found);
                    }
                    found
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    });
    let mut found = found;
    found.extend(adopted.held.iter().filter(|(_, inode)| wanted.contains(inode)));
    found.sort_unstable();
    let mut comms: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
    for (pid, inode) in found {
        let comm = comms
            .entry(pid)
            .or_insert_with(|| {
                let c = std::fs::read(proc.join(pid.to_string()).join("comm")).unwrap_or_default();
                crate::text::escape_bytes(c.strip_suffix(b"\n").unwrap_or(&c))
            })
            .clone();
        let owners = out.entry(inode).or_default();
        if !owners.iter().any(|(p, _)| *p == pid) {
            owners.push((pid, comm));
        }
    }
    out
}

/// The sockets of `wanted` that `pid` holds a descriptor on, added to `found` as (pid, inode):
/// each descriptor's link read relative to the process's fd directory, into one buffer.
fn sockets_held(proc: &Path, pid: u32, wanted: &std::collections::HashSet<u64>, found: &mut Vec<(u32, u64)>) {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::ffi::OsStrExt as _;
    let fd_dir = proc.join(pid.to_string()).join("fd");
    let Ok(entries) = std::fs::read_dir(&fd_dir) else { return };
    let Ok(dir) = std::fs::File::open(&fd_dir) else { return };
    let mut name = [0u8; 16];
    let mut link = [0u8; 64];
    for entry in entries.filter_map(Result::ok) {
        let n = entry.file_name();
        let bytes = n.as_bytes();
        if bytes.len() >= name.len() {
            continue;
        }
        name[..bytes.len()].copy_from_slice(bytes);
        name[bytes.len()] = 0;
        // SAFETY: `name` is NUL-terminated, `link` is writable for its length.
        let len =
            unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr().cast(), link.as_mut_ptr().cast(), link.len()) };
        let Ok(len) = usize::try_from(len) else { continue };
        let inode = std::str::from_utf8(&link[..len])
            .ok()
            .and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok());
        if let Some(inode) = inode.filter(|i| wanted.contains(i)) {
            found.push((pid, inode));
        }
    }
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

    /// A zombie's /proc directory outlives its namespaces: its tables cannot be read, which
    /// says "gone", not "no sockets" (the listener is then looked up where the task lived).
    #[test]
    fn an_exited_task_has_no_socket_table() {
        let own = Path::new("/proc/self");
        assert!(tcp_sockets_of_namespace(own).is_some(), "this process's own table is readable");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let proc = Path::new("/proc").join(child.id().to_string());
        let is_zombie = || {
            std::fs::read_to_string(proc.join("stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_zombie() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(is_zombie() && proc.exists(), "the child is a zombie, its /proc directory still there");
        assert!(tcp_sockets_of_namespace(&proc).is_none());
        assert!(listeners_of_namespace(&proc).is_none());
        child.wait().unwrap();
    }

    /// The listeners of a namespace, read up to its first other socket: this process's own
    /// listener is among them, its connection not.
    #[test]
    fn listeners_are_read_alone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let found = listeners_of_namespace(Path::new("/proc/self")).unwrap();
        assert!(found.iter().any(|s| s.local == addr), "{addr} among {} listeners", found.len());
        assert!(found.iter().all(|s| s.state == Some(TcpState::Listen)));
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
    read_netstat(f, "ListenOverflows")
}

/// A `TcpExt:` counter of an open /proc/net/netstat, read again from its start.
fn read_netstat(f: &mut std::fs::File, field: &str) -> Option<u64> {
    use std::io::{Read as _, Seek as _};
    f.seek(std::io::SeekFrom::Start(0)).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    parse_netstat_field(&text, "TcpExt:", field)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `ip` is an address of the namespace `proc` (a /proc/PID directory) lives in: a
/// local route of its `net/fib_trie` (IPv4), an entry of its `net/if_inet6` (IPv6).
fn has_address(proc: &Path, ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => std::fs::read_to_string(proc.join("net/fib_trie")).is_ok_and(|t| fib_trie_has_local(&t, v4)),
        IpAddr::V6(v6) => std::fs::read_to_string(proc.join("net/if_inet6")).is_ok_and(|t| {
            let hex: String = v6.octets().iter().map(|b| format!("{b:02x}")).collect();
            t.lines().any(|l| l.split_whitespace().next() == Some(hex.as_str()))
        }),
    }
}

/// Whether /proc/net/fib_trie lists `ip` as a local address (`|-- a.b.c.d` followed by a
/// `/32 host LOCAL` line).
fn fib_trie_has_local(text: &str, ip: Ipv4Addr) -> bool {
    let want = ip.to_string();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().strip_prefix("|-- ") == Some(want.as_str()) {
            while let Some(next) = lines.peek() {
                let t = next.trim();
                if !t.starts_with('/') {
                    break;
                }
                if t.ends_with("host LOCAL") {
                    return true;
                }
                lines.next();
            }
        }
    }
    false
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
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 10.199.8.0\n        /24 link UNICAST\n     |-- 10.199.8.2\n        /32 host LOCAL\n     |-- 10.199.8.255\n        /32 link BROADCAST\n";
        assert!(super::fib_trie_has_local(trie, "10.199.8.2".parse().unwrap()));
        assert!(!super::fib_trie_has_local(trie, "10.199.8.0".parse().unwrap()));
        assert!(!super::fib_trie_has_local(trie, "10.199.8.255".parse().unwrap()));
        assert!(!super::fib_trie_has_local(trie, "10.199.8.3".parse().unwrap()));
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 17 19\nIpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(super::parse_netstat_field(text, "TcpExt:", "ListenOverflows"), Some(17));
        assert_eq!(super::parse_netstat_field(text, "TcpExt:", "Nothing"), None);
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::refusal_rewrote;
    use crate::facts::{Failure, History, RefusedSyn, Stamp, StateChange};
    use crate::model::{errno::*, Syscall, TcpState::*};
    use std::net::SocketAddr;

    /// A connect to 10.96.7.10:81 refused at `rst_ns`; its SYN's sequence number is 1000.
    fn refused(rst_ns: u64, connecting_ns: Option<u64>) -> Failure {
        let rst = Stamp { ts_ns: rst_ns, state: Some(SynSent), current_tgid: 0 };
        let transitions = connecting_ns
            .map(|ts| StateChange { ts_ns: ts, old: Some(Close), new: Some(SynSent), in_traced_task: true })
            .into_iter()
            .collect();
        let segment = socktrace_common::RstSegment { ack_seq: 1001, flags: 0x14, seen: 1, ..Default::default() };
        let h = History { rst_received: Some(rst), transitions, rst_segment: Some(segment), ..Default::default() };
        let mut f = Failure::for_test(Syscall::Connect, Some(ECONNREFUSED), Close, h);
        f.remote = Some("10.96.7.10:81".parse().unwrap());
        f
    }

    fn syn(ts_ns: u64, reached: &str) -> RefusedSyn {
        RefusedSyn { ts_ns, reached: reached.parse().unwrap(), seq: 1000 }
    }

    /// The SYN of this connect reached another address: both are named. One that reached
    /// the dialled address, another socket's on the same end (another sequence number), one
    /// from before the connect or after its RST, or another errno: nothing (a wrong rewrite is
    /// worse than none).
    #[test]
    fn a_refusal_names_a_rewrite_only_for_its_own_syn() {
        let f = refused(5_000, Some(1_000));
        let closed: SocketAddr = "10.199.8.2:9105".parse().unwrap();
        let dialled: SocketAddr = "10.96.7.10:81".parse().unwrap();
        assert_eq!(refusal_rewrote(&f, || Some(syn(4_000, "10.199.8.2:9105"))), Some((dialled, closed)));
        assert_eq!(refusal_rewrote(&f, || Some(syn(4_000, "10.96.7.10:81"))), None);
        // The dialled address as a dual-stack socket sees it.
        assert_eq!(refusal_rewrote(&f, || Some(syn(4_000, "[::ffff:10.96.7.10]:81"))), None);
        assert_eq!(
            refusal_rewrote(&f, || Some(RefusedSyn { seq: 7, ..syn(4_000, "10.199.8.2:9105") })),
            None,
            "another's"
        );
        assert_eq!(refusal_rewrote(&f, || Some(syn(999, "10.199.8.2:9105"))), None, "an earlier connect's");
        assert_eq!(refusal_rewrote(&f, || Some(syn(5_001, "10.199.8.2:9105"))), None, "a later connect's");
        let mut unseen = f.clone();
        unseen.history.rst_segment = None;
        assert_eq!(refusal_rewrote(&unseen, || Some(syn(4_000, "10.199.8.2:9105"))), None, "no RST segment");
        // The socket's own sequence number, read when the RST came, serves as well.
        unseen.history.refused_syn_seq = Some(1000);
        assert!(refusal_rewrote(&unseen, || Some(syn(4_000, "10.199.8.2:9105"))).is_some());
        unseen.history.refused_syn_seq = Some(999);
        assert_eq!(refusal_rewrote(&unseen, || Some(syn(4_000, "10.199.8.2:9105"))), None, "another's");
        let mut timed_out = f.clone();
        timed_out.errno = Some(ETIMEDOUT);
        assert_eq!(refusal_rewrote(&timed_out, || Some(syn(4_000, "10.199.8.2:9105"))), None);
        let mut in_established = f.clone();
        in_established.history.rst_received.as_mut().unwrap().state = Some(Established);
        assert_eq!(refusal_rewrote(&in_established, || Some(syn(4_000, "10.199.8.2:9105"))), None);
        // Without the SYN_SENT transition: within seconds of the RST.
        let f = refused(20_000_000_000, None);
        assert!(refusal_rewrote(&f, || Some(syn(19_000_000_000, "10.199.8.2:9105"))).is_some());
        assert_eq!(refusal_rewrote(&f, || Some(syn(9_000_000_000, "10.199.8.2:9105"))), None);
    }
}

#[cfg(test)]
mod not_rewritten_tests {
    /// A destination no table showed rewritten is not looked up again for ten seconds (each
    /// read walks a whole table); after that, or for another destination, it is.
    #[test]
    fn a_destination_found_unrewritten_is_not_read_again_for_a_while() {
        let proc = std::env::temp_dir().join(format!("socktrace-nat-{}", std::process::id()));
        std::fs::create_dir_all(proc.join("net")).unwrap();
        let table = proc.join("net/nf_conntrack");
        let line = |dport: u16, to: &str| {
            format!(
                "ipv4     2 tcp      6 117 ESTABLISHED src=10.0.0.1 dst=10.96.0.10 sport=40000 dport={dport} src={to} \
                 dst=10.0.0.1 sport={dport} dport=40000 mark=0 zone=0 use=2\n"
            )
        };
        std::fs::write(&table, line(80, "10.96.0.10")).unwrap();
        let mut ns = super::Namespaces::default();
        let conn = |p: u16| ("10.0.0.1:40000".parse().unwrap(), format!("10.96.0.10:{p}").parse().unwrap());
        let clock = std::cell::Cell::new(1_000u64);
        let now = || clock.get();
        assert_eq!(ns.nat((1, &proc), conn(80), 500, &now), None);
        // The rule appears: within ten seconds the destination is not read again.
        std::fs::write(&table, line(80, "10.244.1.5")).unwrap();
        clock.set(2_000);
        assert_eq!(ns.nat((1, &proc), conn(80), 1_500, &now), None);
        // Later, it is.
        clock.set(20_000_000_000);
        let nat = ns.nat((1, &proc), conn(80), 11_000_000_000, &now).expect("the rewrite, read again");
        assert_eq!(nat.translated, "10.244.1.5:80".parse().unwrap());
        std::fs::remove_dir_all(&proc).unwrap();
    }
}
