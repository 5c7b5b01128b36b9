//! The facts of one failing call, in Rust types: what the kernel recorded (decoded by
//! `event`), what the session added from the host (`host`), and nothing else. A leaf: the
//! decoder, the host readers, the diagnosis and the renderers all take these types, and it
//! takes none of theirs.

use crate::container::Workload;
use crate::model::{errno, Syscall, TcpState};
use std::net::SocketAddr;

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
    /// The sequence number of the SYN an RST refused (the socket's `snd_una` when it arrived
    /// in SYN_SENT), where the kernel read it.
    pub refused_syn_seq: Option<u32>,
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
    /// Sockets that got no history since the attach because the map was full (None: not
    /// counted), and the map's size.
    pub histories_refused: Option<u64>,
    pub max_histories: u32,
    /// The failing process's sockets open at attach could not be adopted.
    pub not_adopted: bool,
    /// Why errors reported on UDP sockets are not recorded on this kernel, if they are not.
    pub udp_errors_unseen: Option<String>,
    /// Runs of socktrace's event programs the kernel skipped since the attach, by event
    /// (filled for failures nothing explains; see `kernel::prog_stats`).
    pub missed_runs: Vec<(&'static str, u64)>,
}

/// How many runs the kernel skipped, all events together.
pub fn missed_total(missed: &[(&'static str, u64)]) -> u64 {
    missed.iter().map(|(_, n)| n).sum()
}

/// Runs the kernel skipped, by kernel event, as a failure's explanation or the summary says
/// it: `state change 2, RST sent 1`.
pub fn describe_missed(missed: &[(&'static str, u64)]) -> String {
    missed.iter().map(|(event, n)| format!("{event} {n}")).collect::<Vec<_>>().join(", ")
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
    /// The innermost kernel code addresses at the last drop, and the functions they are in
    /// (named at enrichment): the caller of the netfilter hook among them says which hook.
    pub frames: Vec<u64>,
    pub path: Vec<String>,
    /// Whose network namespace `netns` is, where the host can tell (found at enrichment).
    pub netns_owner: Option<NetnsOwner>,
}

/// Whose network namespace a packet was dropped in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetnsOwner {
    /// The traced process's own.
    Traced,
    /// The host's: PID 1's.
    Host,
    /// One `ip netns` named (a file in /run/netns).
    Named(String),
    /// A process living in it (the lowest PID found), and the container or pod it runs in.
    Process { pid: u32, comm: Vec<u8>, workload: crate::container::Workload },
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
    /// The sender was exiting (its death closed the socket), with its exit code; `comm` is
    /// then its process's name.
    pub exit_code: Option<u32>,
}

/// The call that ended a socket (`Ended`), as the task's saved registers showed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndingCall {
    Close(i32),
    Shutdown(i32),
    /// connect() with AF_UNSPEC (or a new connect) on the socket.
    Connect(i32),
    /// dup2/dup3 onto the socket's fd.
    Dup(i32),
    /// The process exited (or was killed) with the socket open.
    Exit,
    /// Another syscall, by number.
    Other(u32),
    /// This kernel cannot tell (no `bpf_task_pt_regs` before 5.15).
    Unknown,
}

impl EndingCall {
    pub fn name(self) -> String {
        match self {
            EndingCall::Close(_) => "close".into(),
            EndingCall::Shutdown(_) => "shutdown".into(),
            EndingCall::Connect(_) => "connect".into(),
            EndingCall::Dup(_) => "dup2".into(),
            EndingCall::Exit => "exit".into(),
            EndingCall::Other(nr) => format!("syscall_{nr}"),
            EndingCall::Unknown => "close?".into(),
        }
    }

    pub fn fd(self) -> Option<i32> {
        match self {
            EndingCall::Close(fd) | EndingCall::Shutdown(fd) | EndingCall::Connect(fd) | EndingCall::Dup(fd) => {
                Some(fd)
            }
            _ => None,
        }
    }
}

/// A socket the traced process ended while it was connecting or waiting on its peer: no call
/// failed (the application's own timeout, most often). See `socktrace_common::EndFacts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub call: EndingCall,
    /// The state it left.
    pub from: Option<TcpState>,
    /// The process was exiting: its exit code (a signal number, or the status shifted by 8).
    pub exit_code: Option<u32>,
    pub unacked: u32,
    pub unsent: u32,
    pub unread: u32,
    pub snd_wnd: u32,
    /// Jiffies since data was last sent and received (None: never).
    pub since_sent_j: Option<u32>,
    pub since_received_j: Option<u32>,
    /// The data was being retransmitted (unrecovered retransmission timeouts).
    pub rto_retransmits: u32,
    /// Payload bytes sent (each once) and received over the connection.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Another connect of the same process to the same port that was established, when.
    pub sibling: Option<(u64, SocketAddr)>,
}

/// How a process's exit code reads: "killed by SIGKILL", "status 1".
pub fn describe_exit(code: u32) -> String {
    let signal = code & 0x7f;
    if signal != 0 {
        const NAMES: [&str; 16] = [
            "SIGHUP",
            "SIGINT",
            "SIGQUIT",
            "SIGILL",
            "SIGTRAP",
            "SIGABRT",
            "SIGBUS",
            "SIGFPE",
            "SIGKILL",
            "SIGUSR1",
            "SIGSEGV",
            "SIGUSR2",
            "SIGPIPE",
            "SIGALRM",
            "SIGTERM",
            "SIGSTKFLT",
        ];
        match NAMES.get(signal as usize - 1) {
            Some(name) => format!("killed by {name}"),
            None => format!("killed by signal {signal}"),
        }
    } else {
        format!("status {}", (code >> 8) & 0xff)
    }
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
    pub cgroup: Option<CgroupName>,
    /// The host's numbers read by userspace for such failures (see `host`).
    pub host: HostFacts,
    /// The kernel's HZ, read when a failure needs jiffies turned into time (`at_attach_idle`).
    pub kernel_hz: Option<u32>,
    /// No call failed: the process ended the socket while it waited (`Ended`).
    pub ended: Option<Ended>,
    /// For a failed connect: a later connect of the same process to the same port, on another
    /// address, that was established (when, and where): the program's fallback worked.
    pub fallback: Option<(u64, SocketAddr)>,
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
    pub fn name_drops(&mut self, reasons: &[(u32, String)], mut function_at: impl FnMut(u64) -> Option<String>) {
        for d in &mut self.drops {
            d.reason_name = d.reason.and_then(|r| reasons.iter().find(|(v, _)| *v == r)).map(|(_, n)| n.clone());
            d.function = function_at(d.location);
            d.path = d.frames.iter().map_while(|&ip| function_at(ip)).collect();
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
            && (self.timers.is_some() || self.history.rst_received.is_some() || self.ended.is_some())
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
        if let Some(e) = &self.ended {
            return e.call.name();
        }
        if self.reported_as_connect {
            return "connect".into();
        }
        match self.syscall {
            Some(s) => s.name().into(),
            None => format!("syscall_{}", self.syscall_nr),
        }
    }

    /// The call as the text line shows it: `connect(fd=3)`, `connect(fd=3, SO_ERROR)` (its
    /// result read through getsockopt), `getsockopt(fd=5, SO_ERROR)`,
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
        } else if self.syscall == Some(Syscall::Socket) || self.ended.as_ref().is_some_and(|e| e.call.fd().is_none()) {
            format!("{name}()")
        } else if self.from_so_error {
            // Read through getsockopt(SO_ERROR): a connect's result, or an error SO_ERROR took.
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

    /// Jiffies as nanoseconds, where the kernel's HZ is known.
    pub fn jiffies_ns(&self, j: u32) -> Option<u64> {
        self.kernel_hz.filter(|&hz| hz > 0).map(|hz| u64::from(j) * 1_000_000_000 / u64::from(hz))
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

    /// The errno as a label: its name, `EOF` for an end of file, `-` for a socket the process
    /// ended (no call failed).
    pub fn errno_label(&self) -> String {
        match (&self.errno, &self.ended) {
            (Some(e), _) => errno::name(*e),
            (None, Some(_)) => "-".into(),
            (None, None) => "EOF".into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// The system's file table: (allocated, maximum), from /proc/sys/fs/file-nr.
    pub file_nr: Option<(u64, u64)>,
    /// TCP sockets of the process's network namespace whose remote end is the failed connect's
    /// destination, counted by state.
    pub to_destination: Option<Vec<(TcpState, u64)>>,
    /// A listener in the process's network namespace at the failed connect's destination.
    pub listener: Option<Listener>,
    /// TCP memory: pages in use (the namespace's sockstat) and `tcp_mem` (min, pressure, max).
    pub tcp_mem: Option<(u64, [u64; 3])>,
    /// The connection's destination as this host's NAT rewrote it (from conntrack, or from
    /// the RST of the address it was sent to).
    pub nat: Option<Nat>,
}

/// A destination this host rewrote (DNAT): what the program dialled, where the connection
/// went, and where that was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nat {
    pub dialled: SocketAddr,
    pub translated: SocketAddr,
    pub seen: NatSeen,
    /// `NatSeen::Conntrack`: the namespace whose table holds the rewrite (None: the
    /// process's own). `NatSeen::Refusal`: the namespace the translated address lives in,
    /// which refused (None: not found).
    pub netns: Option<u32>,
    pub netns_owner: Option<NetnsOwner>,
}

/// A bare SYN this host refused for want of a listener, as the kernel kept it by its source
/// (`REFUSED_SYNS`): what shows a refused connect's rewritten destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefusedSyn {
    pub ts_ns: u64,
    /// The address it reached, after any NAT on its way.
    pub reached: SocketAddr,
    pub seq: u32,
}

/// Where socktrace saw that this host rewrote a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatSeen {
    /// In a connection tracking table, read at the failure.
    Conntrack,
    /// Only in the refusal: the SYN from the connecting end reached another address, which
    /// answered it with RST (the kernel's TCP tracker deletes a refused connection's entry
    /// at once, so no table shows the rewrite).
    Refusal,
}

/// A listening socket of the namespace that a connect's destination reaches, as
/// /proc/PID/net/tcp shows it: bound to exactly that address, or to any address when the
/// destination is a loopback one (so a listener is never joined to a connect that went to
/// another host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// Connections waiting in its accept queue.
    pub queued: u64,
    /// Its backlog (`listen()` capped by `somaxconn`), when socket diagnostics could be read.
    pub backlog: Option<u64>,
    /// The namespace's `net.core.somaxconn`.
    pub somaxconn: Option<u64>,
    /// The processes holding it open, lowest PID first (a pre-forked server has many), with
    /// their names; found by its inode in /proc/*/fd.
    pub owners: Vec<(u32, String)>,
    /// The network namespace it lives in, when not the connecting process's, and whose it is.
    pub netns: Option<u32>,
    pub netns_owner: Option<NetnsOwner>,
    /// SYNs that namespace's listeners dropped since socktrace attached (`ListenDrops`).
    pub syns_dropped_since_attach: Option<u64>,
}

/// A cgroup, named: its path relative to the cgroup2 mount and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupName {
    pub path: String,
    pub workload: Workload,
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
            family: socktrace_common::net::AF_INET,
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
            host: HostFacts::default(),
            kernel_hz: None,
            ended: None,
            fallback: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_runs_add_up_and_read_by_event() {
        assert_eq!(describe_missed(&[("state change", 2), ("RST sent", 1)]), "state change 2, RST sent 1");
        assert_eq!(describe_missed(&[]), "");
        assert_eq!((missed_total(&[("state change", 2), ("RST sent", 1)]), missed_total(&[])), (3, 0));
    }
}
