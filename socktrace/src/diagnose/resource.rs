//! Failures for want of a host resource: descriptors (EMFILE, ENFILE), local ports
//! (EADDRNOTAVAIL), socket memory (ENOBUFS, ENOMEM, a send's EAGAIN over TCP's memory limit),
//! and a listener of this host whose full accept queue dropped a connect's SYNs. The numbers
//! come from the kernel at the failure (`resource`) and from /proc (`host`).

use super::history::peer;
use super::Diagnosis;
use crate::facts::Failure;
use crate::model::{errno::*, Cause, Syscall, TcpState};
use crate::text::escape_bytes;
use socktrace_common::ResourceFacts;

/// Failures for want of a host resource: descriptors, local ports, a listener's queue, socket
/// memory. The numbers come from the kernel at the failure (`resource`) and from /proc
/// (`host`).
pub fn resource(f: &Failure, e: i32) -> Option<Diagnosis> {
    let r = f.resource;
    let remote = peer(f.remote);
    match e {
        EMFILE => {
            let r = r?;
            let mut explain = format!(
                "the process has all {} descriptors its limit allows open (RLIMIT_NOFILE soft {}, hard {}): it must close \
                 some or raise the limit",
                r.nofile_cur, r.nofile_cur, r.nofile_max
            );
            if f.state_now == Some(TcpState::Listen) {
                if let Some(local) = f.local {
                    explain.push_str(&format!(
                        "; connections wait in the accept queue of {local} ({} queued, backlog {})",
                        r.ack_backlog, r.max_ack_backlog
                    ));
                }
            }
            Some(Diagnosis::new(Cause::FdLimit, f.state_now, None, explain))
        }
        ENFILE => {
            let table = match f.host.file_nr {
                Some((used, max)) => format!(" ({used} of fs.file-max {max} open)"),
                None => String::new(),
            };
            let explain = format!("the system's file table is full{table}: no process can open a descriptor");
            Some(Diagnosis::new(Cause::FdLimit, f.state_now, None, explain))
        }
        EADDRNOTAVAIL if f.is_connect() => {
            let r = r?;
            let range = r.port_high.saturating_sub(r.port_low) + 1;
            let mut explain = format!(
                "no local port is free for a connection to {remote}: the ephemeral range {}-{} ({range} ports, \
                 net.ipv4.ip_local_port_range) is used up",
                r.port_low, r.port_high
            );
            if let Some(by_state) = f.host.to_destination.as_ref().filter(|b| !b.is_empty()) {
                let n: u64 = by_state.iter().map(|(_, n)| n).sum();
                let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {}", s.name())).collect();
                explain = format!(
                    "all {range} ports of {}-{} are in use: {n} connections to {remote} ({}) hold ports of the \
                     range (net.ipv4.ip_local_port_range)",
                    r.port_low,
                    r.port_high,
                    states.join(", ")
                );
            }
            Some(Diagnosis::new(Cause::NoLocalPort, None, None, explain))
        }
        ENOBUFS | ENOMEM => {
            let r = r?;
            let mut explain = format!(
                "the kernel could not allocate socket memory for the send (this socket: {} of {} bytes of send buffer \
                 queued)",
                r.wmem_queued, r.sndbuf
            );
            if r.has_mem != 0 {
                explain.push_str(&tcp_memory(&r));
            } else if let Some((used, [_, pressure, max])) = f.host.tcp_mem {
                explain.push_str(&format!(
                    "; TCP uses {used} pages of memory (net.ipv4.tcp_mem: pressure at {pressure}, limit {max})"
                ));
            }
            Some(Diagnosis::new(Cause::SocketMemory, f.state_now, None, explain))
        }
        ETIMEDOUT if f.is_connect() => {
            let l = full_listener(f)?;
            let (owner, place, dropped) = (l.owner_phrase(), l.place_phrase(), l.dropped_phrase());
            let cap = match l.somaxconn {
                Some(max) => format!("capped by net.core.somaxconn {max}"),
                None => "capped by net.core.somaxconn".into(),
            };
            let n = f.history.retransmits;
            let explain = format!(
                "the listener on {}{owner} of this host{place} does not accept fast enough: {} connections wait in an \
                 accept queue of {} (its listen() backlog, {cap}), so the kernel dropped our SYN and its {n} \
                 retransmission{}{dropped}",
                l.addr,
                l.queued,
                l.backlog,
                if n == 1 { "" } else { "s" }
            );
            let at = f.history.error_report.map(|(s, _)| s.ts_ns);
            let dg = Diagnosis::new(Cause::ListenOverflow, Some(TcpState::SynSent), at, explain).with_retransmits(n);
            Some(Diagnosis { listener: Some(l), ..dg })
        }
        _ => None,
    }
}

/// TCP's memory at the failure, from the kernel's own counters.
fn tcp_memory(r: &ResourceFacts) -> String {
    let [_, pressure, max] = r.mem_limits;
    format!(
        "; TCP uses {} pages of memory (net.ipv4.tcp_mem: pressure at {pressure}, limit {max}){}",
        r.mem_pages,
        if r.mem_pressure != 0 { ", in memory-pressure mode" } else { "" }
    )
}

/// EAGAIN from a send while TCP's memory was over `tcp_mem`'s hard limit, on a socket whose
/// send buffer the kernel had shrunk below the size every socket starts with (`tcp_wmem[1]`):
/// it does that only when it refuses memory (`sk_stream_moderate_sndbuf`), so the full
/// buffer is memory's doing, not a slow reader's. Both are the kernel's numbers at the
/// failure. Anything else is the routine full buffer, and memory is not named.
pub fn send_refused_memory(f: &Failure, e: i32) -> Option<Diagnosis> {
    let r = f.resource.filter(|r| {
        r.has_mem != 0 && r.mem_pages > r.mem_limits[2] && r.wmem_initial != 0 && r.sndbuf < r.wmem_initial
    })?;
    if e != EAGAIN || !f.syscall.is_some_and(Syscall::is_send) || !f.is_tcp {
        return None;
    }
    let explain = format!(
        "TCP is out of memory: the kernel shrank this socket's send buffer to {} bytes (sockets start with {}, \
         net.ipv4.tcp_wmem) and refuses it more, so the non-blocking send could not queue anything ({} bytes \
         queued){}: find what holds TCP memory (ss -tm) or raise net.ipv4.tcp_mem",
        r.sndbuf,
        r.wmem_initial,
        r.wmem_queued,
        tcp_memory(&r)
    );
    Some(Diagnosis::new(Cause::SocketMemory, f.state_now, None, explain))
}

/// A listener of this host whose accept queue is full, as a timed-out connect to it found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullListener {
    pub addr: std::net::SocketAddr,
    pub queued: u64,
    pub backlog: u64,
    pub somaxconn: Option<u64>,
    /// The process that owns it (named in the kernel when socktrace saw it listen, else the
    /// lowest PID holding it open), and how many other processes hold it too.
    pub owner: Option<(u32, String)>,
    pub others: usize,
    /// Its namespace when not the connecting process's, whose it is, and the SYNs that
    /// namespace's listeners dropped since attach.
    pub netns: Option<u32>,
    pub netns_owner: Option<crate::facts::NetnsOwner>,
    pub syns_dropped_since_attach: Option<u64>,
}

impl FullListener {
    /// ` (pid 700 "nginx" and 1 other processes)`.
    pub fn owner_phrase(&self) -> String {
        match &self.owner {
            Some((pid, comm)) if self.others > 0 => {
                format!(" (pid {pid} \"{comm}\" and {} other processes)", self.others)
            }
            Some((pid, comm)) => format!(" (pid {pid} \"{comm}\")"),
            None => String::new(),
        }
    }

    /// `, in namespace db (ip netns; netns 4026532500),` when not the connecting process's.
    pub fn place_phrase(&self) -> String {
        match self.netns {
            Some(ns) => format!(", {},", super::drops::namespace(ns, self.netns_owner.as_ref()).trim_start()),
            None => String::new(),
        }
    }

    /// `; that namespace's listeners have dropped 6 SYNs since socktrace attached (ListenDrops)`.
    pub fn dropped_phrase(&self) -> String {
        match self.syns_dropped_since_attach.filter(|&d| d > 0) {
            Some(d) => format!(
                "; that namespace's listeners have dropped {d} SYN{} since socktrace attached (ListenDrops)",
                if d == 1 { "" } else { "s" }
            ),
            None => String::new(),
        }
    }
}

/// The listener a timed-out connect waited for, if its queue is full (the kernel's own test,
/// `sk_acceptq_is_full`: more connections waiting than the backlog allows). The queue is the
/// kernel's at the failure when socktrace saw the listener listen; otherwise (it listened
/// before the trace, or in a process not traced) socket diagnostics' just after.
pub fn full_listener(f: &Failure) -> Option<FullListener> {
    let l = f.host.listener.as_ref()?;
    let seen = f.resource.filter(|r| r.has_listener != 0);
    let (queued, backlog) = match seen {
        Some(r) => (u64::from(r.ack_backlog), u64::from(r.max_ack_backlog)),
        None => (l.queued, l.backlog?),
    };
    if queued <= backlog {
        return None;
    }
    let (owner, others) = match seen.filter(|r| r.listener_tgid != 0) {
        Some(r) => {
            let len = r.listener_comm.iter().position(|&b| b == 0).unwrap_or(r.listener_comm.len());
            let comm = escape_bytes(&r.listener_comm[..len]);
            (Some((r.listener_tgid, comm)), l.owners.iter().filter(|(pid, _)| *pid != r.listener_tgid).count())
        }
        None => (l.owners.first().cloned(), l.owners.len().saturating_sub(1)),
    };
    Some(FullListener {
        addr: l.addr,
        queued,
        backlog,
        somaxconn: l.somaxconn,
        owner,
        others,
        netns: l.netns,
        netns_owner: l.netns_owner.clone(),
        syns_dropped_since_attach: l.syns_dropped_since_attach,
    })
}

#[cfg(test)]
mod tests {
    use super::super::diagnose;
    use crate::facts::{Failure, History, HostFacts, Listener};
    use crate::model::{errno::*, Cause, Syscall, TcpState, TcpState::*};
    use socktrace_common::ResourceFacts;

    fn failure(syscall: Syscall, e: i32, state_now: TcpState, resource: Option<ResourceFacts>) -> Failure {
        Failure {
            local: Some("127.0.0.1:8080".parse().unwrap()),
            remote: Some("127.0.0.1:9000".parse().unwrap()),
            resource,
            ..Failure::for_test(syscall, Some(e), state_now, History::default())
        }
    }

    #[test]
    fn emfile_names_the_limit_and_the_accept_queue() {
        let r = ResourceFacts {
            nofile_cur: 32,
            nofile_max: 64,
            ack_backlog: 17,
            max_ack_backlog: 128,
            ..Default::default()
        };
        let dg = diagnose(&failure(Syscall::Accept4, EMFILE, Listen, Some(r)));
        assert_eq!((dg.cause, dg.state), (Cause::FdLimit, Some(Listen)));
        assert!(
            dg.explain.contains("all 32 descriptors its limit allows open (RLIMIT_NOFILE soft 32, hard 64)"),
            "{}",
            dg.explain
        );
        assert!(dg.explain.contains("accept queue of 127.0.0.1:8080 (17 queued, backlog 128)"), "{}", dg.explain);
        // Without the kernel's numbers there is nothing to prove it: unknown, saying why.
        let dg = diagnose(&failure(Syscall::Accept4, EMFILE, Listen, None));
        assert_eq!(dg.cause, Cause::Unknown);
        assert!(dg.explain.contains("EMFILE in LISTEN"), "{}", dg.explain);
    }

    #[test]
    fn enfile_names_the_system_file_table() {
        let mut f = failure(Syscall::Accept, ENFILE, Listen, None);
        f.host = HostFacts { file_nr: Some((99_990, 100_000)), ..HostFacts::default() };
        let dg = diagnose(&f);
        assert_eq!(dg.cause, Cause::FdLimit);
        assert!(dg.explain.contains("(99990 of fs.file-max 100000 open)"), "{}", dg.explain);
    }

    #[test]
    fn eaddrnotavail_on_connect_names_the_range_and_who_holds_it() {
        let r = ResourceFacts { port_low: 40000, port_high: 40003, ..Default::default() };
        let mut f = failure(Syscall::Connect, EADDRNOTAVAIL, Close, Some(r));
        let dg = diagnose(&f);
        assert_eq!((dg.cause, dg.state), (Cause::NoLocalPort, None));
        assert!(dg.explain.contains("the ephemeral range 40000-40003 (4 ports"), "{}", dg.explain);
        f.host = HostFacts { to_destination: Some(vec![(Established, 3), (TimeWait, 1)]), ..HostFacts::default() };
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains(
                "all 4 ports of 40000-40003 are in use: 4 connections to 127.0.0.1:9000 (3 ESTABLISHED, 1 TIME_WAIT)"
            ),
            "{}",
            dg.explain
        );
        // Not a connect: not this rule.
        assert_ne!(diagnose(&failure(Syscall::Sendto, EADDRNOTAVAIL, Close, Some(r))).cause, Cause::NoLocalPort);
    }

    #[test]
    fn a_timed_out_connect_to_a_full_queue_of_this_host_is_listen_overflow() {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"server");
        let full = ResourceFacts {
            has_listener: 1,
            listener_tgid: 4884,
            listener_comm: comm,
            ack_backlog: 2,
            max_ack_backlog: 1,
            ..Default::default()
        };
        let mut f = failure(Syscall::Connect, ETIMEDOUT, Close, Some(full));
        f.history.retransmits = 2;
        f.host = HostFacts {
            listener: Some(Listener {
                addr: "127.0.0.1:9000".parse().unwrap(),
                queued: 2,
                backlog: None,
                somaxconn: None,
                owners: Vec::new(),
                netns: None,
                netns_owner: None,
                syns_dropped_since_attach: None,
            }),
            ..HostFacts::default()
        };
        let dg = diagnose(&f);
        assert_eq!((dg.cause, dg.state, dg.retransmits), (Cause::ListenOverflow, Some(SynSent), Some(2)));
        assert!(dg.explain.contains("the listener on 127.0.0.1:9000 (pid 4884 \"server\")"), "{}", dg.explain);
        assert!(dg.explain.contains("2 connections wait in an accept queue of 1"), "{}", dg.explain);
        // A queue with room: the kernel did not drop for it, so not this rule.
        let mut room = f.clone();
        room.resource = Some(ResourceFacts { ack_backlog: 1, ..full });
        assert_ne!(diagnose(&room).cause, Cause::ListenOverflow);
        // No listener of this host at that address (the destination is another host): not this rule.
        let mut remote = f.clone();
        remote.host = HostFacts::default();
        assert_ne!(diagnose(&remote).cause, Cause::ListenOverflow);
    }

    /// A listener socktrace never saw listen (it predates the trace, or its process is not
    /// traced): the queue from socket diagnostics, the owner from /proc.
    #[test]
    fn a_full_listener_older_than_the_trace_is_named_from_the_host() {
        let mut f = failure(Syscall::Connect, ETIMEDOUT, Close, Some(ResourceFacts::default()));
        f.history.retransmits = 1;
        let listener = Listener {
            addr: "127.0.0.1:9000".parse().unwrap(),
            queued: 3,
            backlog: Some(1),
            somaxconn: Some(4096),
            owners: vec![(700, "nginx".into()), (701, "nginx".into())],
            netns: None,
            netns_owner: None,
            syns_dropped_since_attach: None,
        };
        f.host = HostFacts { listener: Some(listener.clone()), ..HostFacts::default() };
        let dg = diagnose(&f);
        assert_eq!((dg.cause, dg.state), (Cause::ListenOverflow, Some(SynSent)));
        assert!(
            dg.explain
                .contains("the listener on 127.0.0.1:9000 (pid 700 \"nginx\" and 1 other processes) of this host"),
            "{}",
            dg.explain
        );
        assert!(
            dg.explain.contains(
                "3 connections wait in an accept queue of 1 (its listen() backlog, capped by net.core.somaxconn 4096)"
            ),
            "{}",
            dg.explain
        );
        assert!(dg.explain.contains("its 1 retransmission"), "{}", dg.explain);
        // In another namespace of this host, with the SYNs its listeners dropped since attach.
        f.host.listener = Some(Listener {
            netns: Some(4026532500),
            netns_owner: Some(crate::facts::NetnsOwner::Named("db".into())),
            syns_dropped_since_attach: Some(6),
            ..listener.clone()
        });
        let dg = diagnose(&f);
        assert!(
            dg.explain.contains(
                "of this host, in namespace db (ip netns; netns 4026532500), does not accept fast enough: 3 connections"
            ),
            "{}",
            dg.explain
        );
        assert!(
            dg.explain
                .ends_with("; that namespace's listeners have dropped 6 SYNs since socktrace attached (ListenDrops)"),
            "{}",
            dg.explain
        );
        // Without the backlog (no socket diagnostics) nothing proves the queue full.
        f.host.listener = Some(Listener { backlog: None, ..listener.clone() });
        assert_ne!(diagnose(&f).cause, Cause::ListenOverflow);
        // Room in the queue: not this rule.
        f.host.listener = Some(Listener { queued: 1, ..listener });
        assert_ne!(diagnose(&f).cause, Cause::ListenOverflow);
    }

    /// EAGAIN on a send: routine, unless the kernel saw TCP over its hard memory limit.
    #[test]
    fn eagain_on_send_over_the_tcp_memory_limit_is_socket_memory() {
        let over = ResourceFacts {
            sndbuf: 4608,
            wmem_queued: 4352,
            mem_pages: 300,
            mem_limits: [1, 1, 1],
            mem_pressure: 1,
            has_mem: 1,
            wmem_initial: 16384,
            ..Default::default()
        };
        let dg = diagnose(&failure(Syscall::Sendto, EAGAIN, Established, Some(over)));
        assert_eq!(dg.cause, Cause::SocketMemory);
        assert!(dg.explain.contains("TCP is out of memory"), "{}", dg.explain);
        assert!(
            dg.explain.contains("shrank this socket's send buffer to 4608 bytes (sockets start with 16384")
                && dg.explain.contains("(4352 bytes queued)")
                && dg.explain.contains(
                    "TCP uses 300 pages of memory (net.ipv4.tcp_mem: pressure at 1, limit 1), in memory-pressure mode"
                ),
            "{}",
            dg.explain
        );
        // Under the limit: the routine full buffer.
        let under = ResourceFacts { mem_pages: 1, mem_limits: [10, 20, 30], mem_pressure: 0, ..over };
        assert_eq!(diagnose(&failure(Syscall::Sendto, EAGAIN, Established, Some(under))).cause, Cause::WouldBlock);
        // Over the limit, but the buffer was never shrunk: a slow reader filled it.
        let full = ResourceFacts { sndbuf: 65536, wmem_queued: 65536, ..over };
        assert_eq!(diagnose(&failure(Syscall::Sendto, EAGAIN, Established, Some(full))).cause, Cause::WouldBlock);
        // A read's EAGAIN is never about send memory.
        assert_eq!(diagnose(&failure(Syscall::Read, EAGAIN, Established, Some(over))).cause, Cause::WouldBlock);
        // Nothing read: routine.
        assert_eq!(diagnose(&failure(Syscall::Sendto, EAGAIN, Established, None)).cause, Cause::WouldBlock);
    }

    #[test]
    fn enobufs_names_the_send_buffer_and_tcp_memory() {
        let r = ResourceFacts { sndbuf: 16384, wmem_queued: 16000, ..Default::default() };
        let mut f = failure(Syscall::Sendmsg, ENOBUFS, Established, Some(r));
        f.host = HostFacts { tcp_mem: Some((9000, [4000, 8000, 12000])), ..HostFacts::default() };
        let dg = diagnose(&f);
        assert_eq!(dg.cause, Cause::SocketMemory);
        assert!(dg.explain.contains("16000 of 16384 bytes"), "{}", dg.explain);
        assert!(
            dg.explain.contains("TCP uses 9000 pages of memory (net.ipv4.tcp_mem: pressure at 8000, limit 12000)"),
            "{}",
            dg.explain
        );
    }
}
