//! Decoding: ring buffer records -> `Failure`, the facts of one failing call in Rust types.
//!
//! Records come from the kernel, but a decoder that trusts them is one bug away from a panic
//! on a production box: every length and value is checked, nothing here can panic.

use crate::model::{errno, Syscall, TcpState};
use socktrace_common::{
    event_flags,
    net::{self, AF_INET, AF_INET6},
    FailureEvent, SockAddrs, SocketHistory, StampedState, HISTORY_TRANSITIONS,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One state change of a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub ts_ns: u64,
    pub old: Option<TcpState>,
    pub new: Option<TcpState>,
    /// It ran in the traced process's own context (connect, shutdown, close).
    pub in_traced_task: bool,
}

/// An event on a socket: when it happened and the state it hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub ts_ns: u64,
    pub state: Option<TcpState>,
    /// The process on the CPU when the event ran (softirq: often not the socket's owner).
    pub current_tgid: u32,
}

/// What the kernel recorded about the socket before the call failed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Oldest first.
    pub transitions: Vec<StateChange>,
    pub retransmits: u32,
    pub last_retransmit_ns: Option<u64>,
    /// When the first retransmission was sent.
    pub first_retransmit_ns: Option<u64>,
    pub rst_received: Option<Stamp>,
    /// An RST this socket sent, with the kernel's reason code when the kernel has one.
    pub rst_sent: Option<(Stamp, Option<i32>)>,
    /// `sk_err` was set to this (positive) errno.
    pub error_report: Option<(Stamp, i32)>,
    /// The socket was open before the trace and adopted at attach: its state then, and the
    /// (positive) errno pending on it (0: none).
    pub at_attach: Option<(Stamp, i32)>,
    /// For an adopted socket: jiffies before the attach it last sent and last received data.
    pub at_attach_idle_jiffies: (Option<u32>, Option<u32>),
    /// The RST segment behind `rst_received`, where the kernel showed it.
    pub rst_segment: Option<socktrace_common::RstSegment>,
}

/// The kernel stack at one event behind a failure, innermost frame first (`func+0xoff`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelStack {
    /// `rst_received`, `rst_sent`, `error_report`, `drop_sent`, `drop_received`.
    pub event: &'static str,
    pub frames: Vec<String>,
}

/// Which kernel stacks the kernel recorded for a failure's events (`STACKS` id plus one; 0:
/// none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackRefs {
    pub rst_received: u32,
    pub rst_sent: u32,
    pub error_report: u32,
}

/// Why the trace may lack what would explain a failure: filled by the session, only for the
/// failures that need it (a socket with no history before the call, a UDP error).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceGaps {
    /// Socket histories the full map has evicted since the attach (None: not counted).
    pub histories_evicted: Option<u64>,
    /// The failing process's sockets open at attach could not be adopted.
    pub not_adopted: bool,
    /// Why errors reported on UDP sockets are not recorded on this kernel, if they are not.
    pub udp_errors_unseen: Option<String>,
    /// Runs of socktrace's event programs the kernel skipped since the attach, by event
    /// (filled for failures nothing explains; see `kernel::prog_stats`).
    pub missed_runs: Vec<(&'static str, u64)>,
}

/// Packets of the connection that this host dropped, in one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketDrops {
    /// The socket sent them (else its peer sent them to it).
    pub sent: bool,
    pub count: u32,
    pub first_ns: u64,
    pub last_ns: u64,
    /// The kernel's drop reason (5.17+) and its name (`enum skb_drop_reason`, from BTF).
    pub reason: Option<u32>,
    pub reason_name: Option<String>,
    /// Where the last one was dropped: a kernel code address, and the function it is in.
    pub location: u64,
    pub function: Option<String>,
    /// The network namespace (inode number) and device, where known.
    pub netns: Option<u32>,
    pub ifindex: Option<u32>,
    /// Raw bytes of the device name (escape before printing).
    pub dev: Vec<u8>,
    /// TCP flags of the last one dropped, and of all of them together.
    pub last_flags: u8,
    pub all_flags: u8,
    /// How many of `count` carried RST.
    pub rsts: u32,
    /// With `--kstack`: the stack at the last drop (`STACKS` id plus one).
    pub stack: u32,
}

/// An RST a socket of this host sent on this connection (the peer is local): who was on the
/// CPU, the kernel's reason, the sender's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerReset {
    pub ts_ns: u64,
    pub tgid: u32,
    /// Raw bytes of the task name (escape before printing).
    pub comm: Vec<u8>,
    /// The kernel's reason code (6.10+) and its name (`enum sk_rst_reason`, from BTF).
    pub reason: Option<i32>,
    pub reason_name: Option<String>,
    /// The sender's state; None with `no_socket`.
    pub state: Option<TcpState>,
    /// No socket of this host owned the connection: the kernel answered our segment itself.
    pub no_socket: bool,
    /// A listener's accept queue when it sent the RST: (waiting, backlog).
    pub accept_queue: Option<(u32, u32)>,
}

/// An ICMP error this host received about a packet of the connection: who sent it, which.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpMessage {
    pub ts_ns: u64,
    pub from: std::net::IpAddr,
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
}

/// One failing call, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// Raw bytes of the task name (the traced process controls them: escape before printing).
    pub comm: Vec<u8>,
    pub syscall_nr: u32,
    pub syscall: Option<Syscall>,
    /// The error was read with `getsockopt(SO_ERROR)`.
    pub from_so_error: bool,
    /// ...and it is the result of a connect: the socket had one in flight, or it just failed
    /// (an accepted or established socket's SO_ERROR is reported as the getsockopt it is).
    pub reported_as_connect: bool,
    /// The socket fd; -1 when not known (an io_uring request whose lookup was not seen).
    pub fd: i32,
    /// An io_uring request on a registered (fixed) file: there is no fd.
    pub fixed_file: bool,
    /// The socket was the source of the data (`splice` from a socket).
    pub socket_is_source: bool,
    pub ret: i64,
    /// Positive errno of the failure; None for an end of file (ret 0).
    pub errno: Option<i32>,
    pub sk: u64,
    pub family: u16,
    pub sock_type: u16,
    pub protocol: u16,
    pub is_tcp: bool,
    /// The socket's state when the call returned.
    pub state_now: Option<TcpState>,
    pub shutdown: u8,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    pub history: History,
    /// The raw return value when it was a kernel-internal restart code (ERESTARTSYS, ...),
    /// which the program sees as EINTR.
    pub kernel_ret: Option<i64>,
    /// Nothing was recorded on the socket before this call (its history started here).
    pub history_started_here: bool,
    /// The kernel's numbers behind a resource failure (descriptors, ports, memory).
    pub resource: Option<socktrace_common::ResourceFacts>,
    /// The socket's timer settings and limits, for a timeout.
    pub timers: Option<socktrace_common::TimerFacts>,
    /// The RST this socket received, as its sender on this host sent it.
    pub peer_reset: Option<PeerReset>,
    /// The ICMP error received about this connection's packets, if one came.
    pub icmp: Option<IcmpMessage>,
    /// Packets of this connection dropped on this host (looked up for timeouts and resets).
    pub drops: Vec<PacketDrops>,
    /// Why the RST segment this socket received was not seen (the kernel's probes lack it).
    pub rst_segment_unseen: Option<String>,
    /// What the session knew when a failure had no history to explain it (`unknown` says why).
    pub trace_gaps: TraceGaps,
    /// With `--kstack`: the kernel stacks at the events behind the failure (symbolized).
    pub kstacks: Vec<KernelStack>,
    /// The `STACKS` ids (plus one) the kernel recorded for those events.
    pub stack_refs: StackRefs,
    /// The name of the kernel's reason for an RST this socket sent (`history.rst_sent`).
    pub rst_sent_reason_name: Option<String>,
    /// The calling task's cgroup v2 id, as the kernel recorded it at the failure.
    pub cgroup_id: u64,
    /// That cgroup's path and the container, pod or service it holds (resolved in userspace;
    /// None when its cgroup is gone or the id is unknown).
    pub cgroup: Option<crate::host::cgroups::CgroupName>,
    /// The host's numbers read by userspace for such failures (see `host`).
    pub host: crate::host::HostFacts,
    /// The kernel's HZ, read when a failure needs jiffies turned into time (`at_attach_idle`).
    pub kernel_hz: Option<u32>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Truncated { len: usize, want: usize },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated { len, want } => {
                write!(f, "ring buffer record of {len} bytes, expected {want}")
            }
        }
    }
}

/// `hash_seed` is the load's `TracedConfig::hash_seed`, which checks the sent RST the event
/// may carry (`peer_reset_of`).
pub fn decode(bytes: &[u8], hash_seed: u64) -> Result<Failure, DecodeError> {
    let want = std::mem::size_of::<FailureEvent>();
    if bytes.len() < want {
        return Err(DecodeError::Truncated { len: bytes.len(), want });
    }
    // SAFETY: the length was checked; FailureEvent is plain data valid for any bit pattern,
    // and read_unaligned makes no alignment assumption about the ring buffer memory.
    let ev: FailureEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Ok(from_event(&ev, hash_seed))
}

pub fn from_event(ev: &FailureEvent, hash_seed: u64) -> Failure {
    let from_so_error = ev.flags & event_flags::FROM_SO_ERROR != 0;
    let mut errno = if from_so_error {
        Some(ev.so_error.saturating_abs())
    } else if ev.ret < 0 {
        i32::try_from(ev.ret.saturating_neg()).ok()
    } else {
        None
    };
    let mut ret = if from_so_error { -(ev.so_error.saturating_abs() as i64) } else { ev.ret };
    let mut kernel_ret = None;
    if errno.is_some_and(errno::is_restart) {
        // What the program sees: EINTR (or, with SA_RESTART, a transparently restarted call).
        kernel_ret = Some(ret);
        errno = Some(errno::EINTR);
        ret = -(errno::EINTR as i64);
    }
    let comm_len = ev.comm.iter().position(|&b| b == 0).unwrap_or(ev.comm.len());
    let syscall = Syscall::from_number(ev.syscall_nr);
    let sock = &ev.sock;
    let is_tcp = net::is_tcp(sock.addrs.family, sock.sock_type, sock.protocol);
    let history =
        if ev.flags & event_flags::HAS_HISTORY != 0 { decode_history(&ev.history) } else { History::default() };
    let state_now = if is_tcp { TcpState::from_kernel(sock.state) } else { None };
    let hist_addrs = (ev.flags & event_flags::HAS_HISTORY != 0).then_some(&ev.history.addrs);

    // The kernel zeroes a socket's ports as it closes: prefer what the socket shows at exit,
    // then the history's last complete view. A failing connect() names its peer itself: its
    // argument comes first (the history may hold an earlier connect's peer).
    let local = endpoint(&sock.addrs, true).or_else(|| hist_addrs.and_then(|a| endpoint(a, true)));
    let connect_arg =
        (ev.flags & event_flags::HAS_CONNECT_ADDR != 0).then(|| endpoint(&ev.connect_addr, false)).flatten();
    let remote =
        connect_arg.or_else(|| endpoint(&sock.addrs, false)).or_else(|| hist_addrs.and_then(|a| endpoint(a, false)));

    Failure {
        ts_ns: ev.ts_ns,
        pid: ev.pid,
        tid: ev.tid,
        comm: ev.comm[..comm_len].to_vec(),
        syscall_nr: ev.syscall_nr,
        syscall,
        from_so_error,
        reported_as_connect: from_so_error && connecting(&history, state_now),
        fd: ev.fd,
        fixed_file: ev.flags & event_flags::FIXED_FILE != 0,
        socket_is_source: ev.flags & event_flags::SOCKET_IS_SOURCE != 0,
        ret,
        errno,
        sk: ev.sk,
        family: sock.addrs.family,
        sock_type: sock.sock_type,
        protocol: sock.protocol,
        is_tcp,
        state_now,
        shutdown: sock.shutdown,
        local,
        remote,
        history,
        kernel_ret,
        history_started_here: ev.flags & event_flags::HISTORY_STARTED_HERE != 0,
        resource: (ev.flags & event_flags::HAS_RESOURCE != 0).then_some(ev.resource),
        timers: (ev.flags & event_flags::HAS_TIMERS != 0).then_some(ev.timers),
        icmp: (ev.flags & event_flags::HAS_ICMP_SOURCE != 0).then(|| {
            let m = &ev.icmp;
            let v6 = m.family == socktrace_common::net::AF_INET6;
            let from = if v6 {
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(m.from))
            } else {
                std::net::IpAddr::V4(std::net::Ipv4Addr::new(m.from[0], m.from[1], m.from[2], m.from[3]))
            };
            IcmpMessage { ts_ns: m.ts_ns, from, v6, icmp_type: m.icmp_type, code: m.code }
        }),
        peer_reset: peer_reset_of(ev, hash_seed).map(|p| {
            let len = p.comm.iter().position(|&b| b == 0).unwrap_or(p.comm.len());
            PeerReset {
                ts_ns: p.ts_ns,
                tgid: p.tgid,
                comm: p.comm[..len].to_vec(),
                reason: (p.reason >= 0).then_some(p.reason),
                reason_name: None,
                state: TcpState::from_kernel(p.state),
                no_socket: p.state == 0,
                accept_queue: (TcpState::from_kernel(p.state) == Some(TcpState::Listen))
                    .then_some((p.ack_backlog, p.max_ack_backlog)),
            }
        }),
        drops: Vec::new(),
        rst_segment_unseen: None,
        trace_gaps: TraceGaps::default(),
        kstacks: Vec::new(),
        stack_refs: StackRefs {
            rst_received: ev.history.rst_received.stack,
            rst_sent: ev.history.rst_sent.stack,
            error_report: ev.history.error_report.stack,
        },
        rst_sent_reason_name: None,
        cgroup_id: ev.cgroup_id,
        cgroup: None,
        host: crate::host::HostFacts::default(),
        kernel_hz: None,
    }
}

/// A record of the kernel's `DROPS` map, read for a failing connection (`sent`: the packets
/// its socket sent; else those sent to it).
pub fn decode_drops(d: &socktrace_common::DropRecord, sent: bool) -> Option<PacketDrops> {
    if d.count == 0 {
        return None;
    }
    let dev_len = d.dev.iter().position(|&b| b == 0).unwrap_or(d.dev.len());
    Some(PacketDrops {
        sent,
        count: d.count,
        first_ns: d.first_ns,
        last_ns: d.last_ns,
        reason: (d.reason != u32::MAX).then_some(d.reason),
        reason_name: None,
        location: d.location,
        function: None,
        netns: (d.netns != 0).then_some(d.netns),
        ifindex: (d.ifindex != 0).then_some(d.ifindex),
        dev: d.dev[..dev_len].to_vec(),
        last_flags: d.last_flags,
        all_flags: d.all_flags,
        rsts: d.rsts as u32,
        stack: d.stack,
    })
}

/// Whether an error read through SO_ERROR is a connect's result: the socket is still
/// connecting, or its last connect attempt (CLOSE -> SYN_SENT) ended without being
/// established, or an RST or error report hit it in SYN_SENT.
fn connecting(h: &History, state_now: Option<TcpState>) -> bool {
    use TcpState::*;
    if state_now == Some(SynSent) {
        return true;
    }
    if h.rst_received.is_some_and(|s| s.state == Some(SynSent)) {
        return true;
    }
    let mut attempt = false;
    for t in &h.transitions {
        match (t.old, t.new) {
            (_, Some(SynSent)) => attempt = true,
            (Some(SynSent), Some(Established)) | (_, Some(Listen | SynRecv)) => attempt = false,
            _ => {}
        }
    }
    attempt
}

fn stamp(s: &StampedState) -> Option<Stamp> {
    (s.ts_ns != 0).then(|| Stamp {
        ts_ns: s.ts_ns,
        state: TcpState::from_kernel(s.state),
        current_tgid: s.current_tgid,
    })
}

/// The RST a socket of this host sent to this one, if the event carries its slot of the
/// kernel's table and the slot's check says the record is that connection's and whole (the
/// slot may hold another connection's RST, or have been copied while a writer wrote it: see
/// `socktrace_common::SentResetSlot`). The kernel looked it up by the history's 4-tuple.
fn peer_reset_of(ev: &FailureEvent, hash_seed: u64) -> Option<&socktrace_common::SentReset> {
    if ev.flags & event_flags::HAS_PEER_RESET == 0 {
        return None;
    }
    let key = socktrace_common::reversed(&ev.history.addrs);
    let slot = &ev.peer_reset;
    (slot.check == socktrace_common::sent_reset_check(hash_seed, &key, &slot.reset)).then_some(&slot.reset)
}

fn decode_history(h: &SocketHistory) -> History {
    let n = h.n_transitions as usize;
    let kept = n.min(HISTORY_TRANSITIONS);
    let transitions = (n - kept..n)
        .map(|i| &h.transitions[i % HISTORY_TRANSITIONS])
        .map(|t| StateChange {
            ts_ns: t.ts_ns,
            old: TcpState::from_kernel(t.old_state),
            new: TcpState::from_kernel(t.new_state),
            in_traced_task: t.in_traced_task != 0,
        })
        .collect();
    History {
        transitions,
        retransmits: h.retransmits,
        last_retransmit_ns: (h.last_retransmit_ns != 0).then_some(h.last_retransmit_ns),
        first_retransmit_ns: (h.first_retransmit_ns != 0).then_some(h.first_retransmit_ns),
        rst_received: stamp(&h.rst_received),
        rst_sent: stamp(&h.rst_sent).map(|s| (s, (h.rst_sent.value >= 0).then_some(h.rst_sent.value))),
        error_report: stamp(&h.error_report).map(|s| (s, h.error_report.value.saturating_abs())),
        at_attach: stamp(&h.at_attach).map(|s| (s, h.at_attach.value.saturating_abs())),
        at_attach_idle_jiffies: if h.at_attach.ts_ns != 0 {
            let known = |j: u32| (j != u32::MAX).then_some(j);
            (known(h.at_attach_sent_ago), known(h.at_attach_received_ago))
        } else {
            (None, None)
        },
        rst_segment: (h.rst_segment.seen != 0).then_some(h.rst_segment),
    }
}

/// The local (`local = true`) or remote end, if the kernel had filled it in.
fn endpoint(a: &SockAddrs, local: bool) -> Option<SocketAddr> {
    let (addr, port) = if local { (&a.saddr, a.sport) } else { (&a.daddr, a.dport) };
    if port == 0 {
        return None;
    }
    let ip = match a.family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            // Dual-stack sockets show IPv4 peers as ::ffff:a.b.c.d; print them as IPv4.
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
impl Failure {
    /// A failing TCP call for tests, 127.0.0.1:40000 -> 127.0.0.1:9 at t=10 µs: the fields a
    /// test does not set itself.
    pub fn for_test(syscall: Syscall, errno: Option<i32>, state_now: TcpState, history: History) -> Failure {
        Failure {
            ts_ns: 10_000,
            pid: 1,
            tid: 1,
            comm: b"t".to_vec(),
            syscall_nr: syscall.number() as u32,
            syscall: Some(syscall),
            from_so_error: false,
            reported_as_connect: false,
            fd: 3,
            fixed_file: false,
            socket_is_source: false,
            ret: errno.map(|e| -(e as i64)).unwrap_or(0),
            errno,
            sk: 1,
            family: AF_INET,
            sock_type: 1,
            protocol: 6,
            is_tcp: true,
            state_now: Some(state_now),
            shutdown: 0,
            local: Some("127.0.0.1:40000".parse().unwrap()),
            remote: Some("127.0.0.1:9".parse().unwrap()),
            history,
            kernel_ret: None,
            history_started_here: false,
            resource: None,
            timers: None,
            peer_reset: None,
            icmp: None,
            drops: Vec::new(),
            rst_segment_unseen: None,
            trace_gaps: TraceGaps::default(),
            kstacks: Vec::new(),
            stack_refs: StackRefs::default(),
            rst_sent_reason_name: None,
            cgroup_id: 0,
            cgroup: None,
            host: crate::host::HostFacts::default(),
            kernel_hz: None,
        }
    }
}

impl Failure {
    /// Names the kernel's RST reason codes (`enum sk_rst_reason` of this kernel, value ->
    /// name): they are not stable across kernel versions, so they are read from its BTF.
    pub fn name_rst_reasons(&mut self, names: &[(u32, String)]) {
        let name = |r: Option<i32>| {
            r.and_then(|r| u32::try_from(r).ok())
                .and_then(|r| names.iter().find(|(v, _)| *v == r))
                .map(|(_, n)| n.clone())
        };
        if let Some(p) = self.peer_reset.as_mut() {
            p.reason_name = name(p.reason);
        }
        self.rst_sent_reason_name = name(self.history.rst_sent.and_then(|(_, r)| r));
    }

    /// Names the drop reasons (`enum skb_drop_reason` of this kernel, from its BTF: the
    /// numbering changes between versions) and the functions the drops happened in.
    pub fn name_drops(&mut self, reasons: &[(u32, String)], symbols: &mut crate::kernel::kallsyms::Symbols) {
        for d in &mut self.drops {
            d.reason_name = d.reason.and_then(|r| reasons.iter().find(|(v, _)| *v == r)).map(|(_, n)| n.clone());
            d.function = symbols.function_at(d.location);
        }
    }

    /// The stacks recorded for this failure's events (only those the history holds).
    pub fn stack_ids(&self) -> Vec<(&'static str, u32)> {
        let h = &self.history;
        let r = &self.stack_refs;
        [
            ("rst_received", h.rst_received.map(|_| r.rst_received)),
            ("rst_sent", h.rst_sent.map(|_| r.rst_sent)),
            ("error_report", h.error_report.map(|_| r.error_report)),
            ("drop_sent", self.drops.iter().find(|d| d.sent).map(|d| d.stack)),
            ("drop_received", self.drops.iter().find(|d| !d.sent).map(|d| d.stack)),
        ]
        .into_iter()
        .filter_map(|(event, id)| id.filter(|&id| id != 0).map(|id| (event, id)))
        .collect()
    }

    /// Whether the packets this host dropped can explain the failure: a timeout (why nothing
    /// came back), or an RST (were others dropped before it?).
    pub fn needs_drops(&self) -> bool {
        self.is_tcp
            && (self.timers.is_some() || self.history.rst_received.is_some())
            && self.local.is_some()
            && self.remote.is_some()
    }

    /// A connect, or its asynchronous result read through `getsockopt(SO_ERROR)`.
    /// How long before the attach an adopted socket last sent and last received data, in ms,
    /// where known.
    pub fn at_attach_idle_ms(&self) -> (Option<u64>, Option<u64>) {
        let Some(hz) = self.kernel_hz.filter(|&hz| hz > 0) else { return (None, None) };
        let ms = |j: Option<u32>| j.map(|j| u64::from(j) * 1000 / u64::from(hz));
        let (sent, received) = self.history.at_attach_idle_jiffies;
        (ms(sent), ms(received))
    }

    pub fn is_connect(&self) -> bool {
        self.reported_as_connect || self.syscall.is_some_and(Syscall::is_connect)
    }

    pub fn syscall_name(&self) -> String {
        if self.reported_as_connect {
            return "connect".into();
        }
        match self.syscall {
            Some(s) => s.name().into(),
            None => format!("syscall_{}", self.syscall_nr),
        }
    }

    /// The call as the text line shows it: `connect(fd=3)`, `getsockopt(fd=5, SO_ERROR)`,
    /// `splice(fd_in=4)`, `io_uring:recv(fixed file)`.
    pub fn call_display(&self) -> String {
        let fd = if self.fd >= 0 { self.fd.to_string() } else { "?".into() };
        let name = self.syscall_name();
        if self.fixed_file {
            if self.fd >= 0 {
                format!("{name}(fixed file {fd})")
            } else {
                format!("{name}(fixed file)")
            }
        } else if self.syscall == Some(Syscall::Socket) {
            format!("{name}()")
        } else if self.from_so_error && !self.reported_as_connect {
            format!("{name}(fd={fd}, SO_ERROR)")
        } else if self.syscall == Some(Syscall::Splice) {
            format!("{name}({}={fd})", if self.socket_is_source { "fd_in" } else { "fd_out" })
        } else {
            format!("{name}(fd={fd})")
        }
    }

    /// Whether the call moves data out through the socket (write, send, sendfile, splice to it).
    pub fn is_send(&self) -> bool {
        self.syscall.is_some_and(|s| s.is_send()) && !self.socket_is_source
    }

    /// The process that was on the CPU when the recorded event at `ts_ns` ran.
    pub fn task_at(&self, ts_ns: u64) -> Option<u32> {
        let h = &self.history;
        [h.rst_received, h.rst_sent.map(|r| r.0), h.error_report.map(|r| r.0)]
            .into_iter()
            .flatten()
            .find(|s| s.ts_ns == ts_ns)
            .map(|s| s.current_tgid)
    }

    pub fn errno_name(&self) -> Option<String> {
        self.errno.map(errno::name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socktrace_common::{SockSnapshot, Transition};

    /// The load's hash seed, for the events these tests decode.
    const SEED: u64 = 0x5eed;

    fn sample() -> FailureEvent {
        let mut ev = FailureEvent {
            ts_ns: 5_000,
            sk: 0xffff_8880_1234_0000,
            ret: -111,
            pid: 42,
            tid: 43,
            syscall_nr: libc::SYS_connect as u32,
            fd: 3,
            flags: event_flags::IS_SOCKET | event_flags::HAS_HISTORY | event_flags::HAS_CONNECT_ADDR,
            ..Default::default()
        };
        ev.comm[..4].copy_from_slice(b"demo");
        ev.sock = SockSnapshot { sock_type: 1, protocol: 6, state: 7, ..Default::default() };
        ev.sock.addrs.family = AF_INET;
        ev.history.addrs = SockAddrs {
            family: AF_INET,
            sport: 40122,
            dport: 9,
            saddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            daddr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        ev.history.n_transitions = 2;
        ev.history.transitions[0] =
            Transition { ts_ns: 1_000, old_state: 7, new_state: 2, in_traced_task: 1, _pad: [0; 5] };
        ev.history.transitions[1] =
            Transition { ts_ns: 2_000, old_state: 2, new_state: 7, in_traced_task: 1, _pad: [0; 5] };
        ev.history.rst_received = StampedState { ts_ns: 1_900, state: 2, current_tgid: 77, ..Default::default() };
        ev
    }

    fn bytes(ev: &FailureEvent) -> Vec<u8> {
        let p = ev as *const FailureEvent as *const u8;
        unsafe { std::slice::from_raw_parts(p, std::mem::size_of::<FailureEvent>()) }.to_vec()
    }

    #[test]
    fn decodes_a_refused_connect() {
        let f = decode(&bytes(&sample()), SEED).unwrap();
        assert_eq!(f.errno, Some(111));
        assert_eq!(f.syscall, Some(Syscall::Connect));
        assert_eq!(f.comm, b"demo");
        assert!(f.is_tcp);
        assert_eq!(f.state_now, Some(TcpState::Close));
        assert_eq!(f.local, Some("127.0.0.1:40122".parse().unwrap()));
        assert_eq!(f.remote, Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(f.history.transitions.len(), 2);
        assert_eq!(f.history.transitions[0].new, Some(TcpState::SynSent));
        assert_eq!(f.history.rst_received.unwrap().state, Some(TcpState::SynSent));
        assert_eq!(f.history.rst_received.unwrap().current_tgid, 77);
        assert_eq!(f.history.error_report, None);
        assert_eq!(f.kernel_ret, None);
    }

    /// A connect() that failed names the peer it was given, even where the socket's history
    /// holds an earlier connect's (a second connect on the socket, failing before the kernel
    /// stored its destination).
    #[test]
    fn a_failing_connect_names_its_own_argument() {
        let mut ev = sample();
        ev.connect_addr = SockAddrs { family: AF_INET, dport: 8080, ..Default::default() };
        ev.connect_addr.daddr[..4].copy_from_slice(&[10, 0, 0, 5]);
        assert_eq!(decode(&bytes(&ev), SEED).unwrap().remote, Some("10.0.0.5:8080".parse().unwrap()));
        // Without the argument (a failure reported through SO_ERROR), the history's peer.
        ev.flags &= !event_flags::HAS_CONNECT_ADDR;
        assert_eq!(decode(&bytes(&ev), SEED).unwrap().remote, Some("127.0.0.1:9".parse().unwrap()));
    }

    /// The sender's record is taken only when the slot's check matches the connection the
    /// kernel looked it up for: another connection's RST in the slot, or a record torn by a
    /// writer, gives no sender (never the wrong one).
    #[test]
    fn a_sent_reset_is_taken_only_with_its_check() {
        use socktrace_common::{reversed, sent_reset_check, SentReset, SentResetSlot};
        let mut ev = sample();
        ev.flags |= event_flags::HAS_PEER_RESET;
        let mut reset = SentReset { ts_ns: 1_850, tgid: 4242, state: 1, ..Default::default() };
        reset.comm[..5].copy_from_slice(b"nginx");
        let key = reversed(&ev.history.addrs);
        assert_eq!((key.sport, key.dport), (9, 40122));
        ev.peer_reset = SentResetSlot { reset, check: sent_reset_check(SEED, &key, &reset) };
        let f = decode(&bytes(&ev), SEED).unwrap();
        let p = f.peer_reset.expect("the slot is this connection's");
        assert_eq!((p.tgid, p.comm.as_slice(), p.state), (4242, &b"nginx"[..], Some(TcpState::Established)));

        // Another connection's RST in the same slot.
        let mut other = ev;
        let mut their_key = key;
        their_key.sport = 10;
        other.peer_reset.check = sent_reset_check(SEED, &their_key, &reset);
        assert!(decode(&bytes(&other), SEED).unwrap().peer_reset.is_none());
        // A copy torn between two writers: one record's fields, another's check.
        let mut torn = ev;
        torn.peer_reset.reset.tgid = 1;
        assert!(decode(&bytes(&torn), SEED).unwrap().peer_reset.is_none());
        // Another load's record (another seed).
        assert!(decode(&bytes(&ev), SEED ^ 1).unwrap().peer_reset.is_none());
        // The flag alone, on a slot never written.
        let mut empty = ev;
        empty.peer_reset = SentResetSlot::default();
        assert!(decode(&bytes(&empty), SEED).unwrap().peer_reset.is_none());
    }

    #[test]
    fn restart_codes_fold_into_eintr() {
        let mut ev = sample();
        ev.syscall_nr = libc::SYS_read as u32;
        ev.ret = -512;
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert_eq!((f.errno, f.ret, f.kernel_ret), (Some(4), -4, Some(-512)));
    }

    #[test]
    fn ring_of_transitions_is_read_oldest_first() {
        let mut ev = sample();
        ev.history.n_transitions = (HISTORY_TRANSITIONS + 3) as u32;
        for i in 0..HISTORY_TRANSITIONS + 3 {
            ev.history.transitions[i % HISTORY_TRANSITIONS].ts_ns = i as u64 + 1;
        }
        let f = decode(&bytes(&ev), SEED).unwrap();
        let ts: Vec<u64> = f.history.transitions.iter().map(|t| t.ts_ns).collect();
        assert_eq!(ts, (4..=(HISTORY_TRANSITIONS as u64 + 3)).collect::<Vec<_>>());
    }

    #[test]
    fn so_error_is_a_connect_failure() {
        let mut ev = sample();
        ev.syscall_nr = libc::SYS_getsockopt as u32;
        ev.ret = 0;
        ev.so_error = 111;
        ev.flags |= event_flags::FROM_SO_ERROR;
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert_eq!(f.errno, Some(111));
        assert_eq!(f.ret, -111);
        assert_eq!(f.syscall_name(), "connect");
        assert_eq!(f.call_display(), "connect(fd=3)");
    }

    /// An event loop reading SO_ERROR after EPOLLERR on an accepted (or long established)
    /// socket never called connect: the call is named as the getsockopt it was.
    #[test]
    fn so_error_on_a_socket_that_is_not_connecting_is_a_getsockopt() {
        let mut ev = sample();
        ev.syscall_nr = libc::SYS_getsockopt as u32;
        ev.ret = 0;
        ev.so_error = 104;
        ev.flags |= event_flags::FROM_SO_ERROR;
        // Accepted: SYN_RECV -> ESTABLISHED, then reset.
        ev.history.n_transitions = 2;
        ev.history.transitions[0] = Transition { ts_ns: 1_000, old_state: 3, new_state: 1, ..Default::default() };
        ev.history.transitions[1] = Transition { ts_ns: 2_000, old_state: 1, new_state: 7, ..Default::default() };
        ev.history.rst_received = StampedState { ts_ns: 1_900, state: 1, ..Default::default() };
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert!(f.from_so_error && !f.reported_as_connect && !f.is_connect());
        assert_eq!(f.syscall_name(), "getsockopt");
        assert_eq!(f.call_display(), "getsockopt(fd=3, SO_ERROR)");
        // A connect that was established and later reset: not a connect result either.
        ev.history.n_transitions = 3;
        ev.history.transitions[0] = Transition { ts_ns: 500, old_state: 7, new_state: 2, ..Default::default() };
        ev.history.transitions[1] = Transition { ts_ns: 1_000, old_state: 2, new_state: 1, ..Default::default() };
        ev.history.transitions[2] = Transition { ts_ns: 2_000, old_state: 1, new_state: 7, ..Default::default() };
        assert!(!decode(&bytes(&ev), SEED).unwrap().reported_as_connect);
        // Nothing known and the socket closed: no evidence of a connect, so none is claimed.
        ev.history.n_transitions = 0;
        ev.history.rst_received = StampedState::default();
        ev.flags &= !event_flags::HAS_HISTORY;
        assert!(!decode(&bytes(&ev), SEED).unwrap().reported_as_connect);
        // Still in SYN_SENT: the connect's own (soft) error.
        ev.sock.state = 2;
        assert!(decode(&bytes(&ev), SEED).unwrap().reported_as_connect);
    }

    #[test]
    fn io_uring_requests_are_named_and_their_fd_kind_kept() {
        use crate::model::IoUringOp;
        let mut ev = sample();
        ev.syscall_nr = socktrace_common::IO_URING_CALL_BASE + 27;
        ev.ret = -104;
        ev.fd = 5;
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert_eq!(f.syscall, Some(Syscall::IoUring(IoUringOp::Recv)));
        assert_eq!(f.call_display(), "io_uring:recv(fd=5)");
        assert!(!f.is_send());
        ev.flags |= event_flags::FIXED_FILE;
        ev.fd = -1;
        assert_eq!(decode(&bytes(&ev), SEED).unwrap().call_display(), "io_uring:recv(fixed file)");
        ev.fd = 2;
        assert_eq!(decode(&bytes(&ev), SEED).unwrap().call_display(), "io_uring:recv(fixed file 2)");
        ev.fd = -1;
        ev.flags &= !event_flags::FIXED_FILE;
        assert_eq!(decode(&bytes(&ev), SEED).unwrap().call_display(), "io_uring:recv(fd=?)");
        ev.syscall_nr = socktrace_common::IO_URING_CALL_BASE + 16;
        assert!(decode(&bytes(&ev), SEED).unwrap().is_connect());
    }

    #[test]
    fn splice_says_which_end_the_socket_is() {
        let mut ev = sample();
        ev.syscall_nr = libc::SYS_splice as u32;
        ev.ret = -104;
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert_eq!(f.call_display(), "splice(fd_out=3)");
        assert!(f.is_send());
        ev.flags |= event_flags::SOCKET_IS_SOURCE;
        let f = decode(&bytes(&ev), SEED).unwrap();
        assert_eq!(f.call_display(), "splice(fd_in=3)");
        assert!(!f.is_send());
    }

    #[test]
    fn ipv4_mapped_ipv6_prints_as_ipv4() {
        let mut a = SockAddrs { family: AF_INET6, dport: 80, ..Default::default() };
        a.daddr[10] = 0xff;
        a.daddr[11] = 0xff;
        a.daddr[12..].copy_from_slice(&[10, 0, 0, 5]);
        assert_eq!(endpoint(&a, false), Some("10.0.0.5:80".parse().unwrap()));
    }

    #[test]
    fn truncated_and_arbitrary_records_never_panic() {
        let full = bytes(&sample());
        for len in 0..full.len() {
            assert!(matches!(decode(&full[..len], SEED), Err(DecodeError::Truncated { .. })));
        }
        // Arbitrary bytes of the right length decode to something, without panicking.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..full.len())
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let f = decode(&junk, SEED).unwrap();
            let _ = crate::diagnose::diagnose(&f);
        }
    }
}
