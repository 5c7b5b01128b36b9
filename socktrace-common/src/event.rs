//! One failing call as the kernel sends it (`FailureEvent`), with the facts read for it: the
//! host's resources, the socket's timers, an ICMP error, packets dropped.

use crate::{SentResetSlot, SockAddrs, SockSnapshot, SocketHistory, StampedState, HISTORY_TRANSITIONS, TASK_COMM_LEN};

/// `FailureEvent::flags` bits.
pub mod event_flags {
    /// The failure was read from `getsockopt(SO_ERROR)`: the result of a non-blocking connect.
    pub const FROM_SO_ERROR: u32 = 1 << 0;
    /// The fd was a socket and `sock` holds what was read from its `struct sock`.
    pub const IS_SOCKET: u32 = 1 << 1;
    /// The kernel had recorded a history for this socket (`history` is meaningful).
    pub const HAS_HISTORY: u32 = 1 << 2;
    /// `connect_addr` holds the address the program passed to `connect()`.
    pub const HAS_CONNECT_ADDR: u32 = 1 << 3;
    /// The history was started by this failing call: nothing was recorded on the socket before
    /// (it predates the trace and was not adopted, or it was evicted).
    pub const HISTORY_STARTED_HERE: u32 = 1 << 4;
    /// `resource` holds the host's numbers behind the failure.
    pub const HAS_RESOURCE: u32 = 1 << 5;
    /// The socket was the call's source of data (`splice` from a socket), not its sink.
    pub const SOCKET_IS_SOURCE: u32 = 1 << 6;
    /// An io_uring request on a registered (fixed) file: `fd` is not a descriptor.
    pub const FIXED_FILE: u32 = 1 << 7;
    /// `timers` holds the socket's timer settings (a timeout: which timer gave up).
    pub const HAS_TIMERS: u32 = 1 << 8;
    /// `peer_reset` holds the set of `SENT_RESETS` the connection's reversed 4-tuple hashes
    /// to: the RST's sender on this host is the slot whose check matches (`SentResetSlot`).
    pub const HAS_PEER_RESET: u32 = 1 << 9;
    /// `icmp` holds the ICMP error received about this connection.
    pub const HAS_ICMP_SOURCE: u32 = 1 << 10;
    /// No call failed: the traced process ended a socket that was still connecting, or that
    /// was waiting on its peer (`ended` holds the facts); `syscall_nr` is the call that ended
    /// it, read from the task's saved registers (`ENDED_CALL_UNKNOWN` where they could not be).
    pub const ENDED: u32 = 1 << 11;
}

/// `FailureEvent::syscall_nr` of an ended socket whose ending call is not known (a kernel
/// without `bpf_task_pt_regs`, before 5.15).
pub const ENDED_CALL_UNKNOWN: u32 = u32::MAX;

/// What a socket was doing when its traced process ended it (`event_flags::ENDED`): the
/// connect in flight, or the data in flight and how long since each side last spoke. Read
/// from `tcp_sock` at the state change the process's own call made (close, shutdown, a
/// disconnect, its exit). The kernel sends only the ends worth a look (a connect not
/// answered; data unacknowledged and being retransmitted; a closed window; nothing received
/// for `TracedConfig::silence_jiffies` since the last send); userspace names them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndFacts {
    /// The state the socket left, and the one it went to.
    pub from_state: u8,
    pub to_state: u8,
    /// The task was exiting (`PF_EXITING`): its exit closed the socket.
    pub exiting: u8,
    pub _pad: u8,
    /// The task's `exit_code` when exiting: a signal number, or the status shifted by 8.
    pub exit_code: u32,
    /// The ending call's first two arguments (the fd of close/shutdown/connect; dup2's target).
    pub args: [u64; 2],
    /// Bytes sent and not acknowledged (`snd_nxt - snd_una`), queued and not yet sent
    /// (`write_seq - snd_nxt`), received and not read (`rcv_nxt - copied_seq`).
    pub unacked: u32,
    pub unsent: u32,
    pub unread: u32,
    /// The peer's last advertised window (`snd_wnd`).
    pub snd_wnd: u32,
    /// Jiffies since data was last sent (`lsndtime`) and received (`icsk_ack.lrcvtime`);
    /// `u32::MAX` where the socket never did.
    pub since_sent_j: u32,
    pub since_received_j: u32,
    /// Unrecovered retransmission timeouts (`icsk_retransmits`): the data is being
    /// retransmitted now.
    pub rto_retransmits: u32,
    pub _pad2: u32,
    /// Payload bytes sent, each counted once (`tcp_sock.bytes_sent - bytes_retrans`: a SYN
    /// or FIN carries none, unlike `bytes_acked`), and received (`bytes_received`).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Another connect of the same process to the same port that was established: when, and
    /// to where (`CONNECTED`); 0: none (Happy Eyeballs' winner, for a connect that lost).
    pub sibling_ts: u64,
    pub sibling: SockAddrs,
}
assert_size!(EndFacts, 120);

/// `FailureEvent::syscall_nr` at or above this is an io_uring request, not a syscall: its
/// opcode (`IORING_OP_*`, the UAPI numbering) is `syscall_nr - IO_URING_CALL_BASE`.
pub const IO_URING_CALL_BASE: u32 = 0x1_0000;

/// A traced socket's peer: the drop probe keeps a dropped packet only if one of its ends is
/// one of these (or everything is traced).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerKey {
    pub family: u16,
    /// Host order.
    pub port: u16,
    /// Network order, IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}
assert_size!(PeerKey, 20);

/// TCP packets of one 4-tuple (as the packet has it) that this host dropped (`kfree_skb`),
/// kept in `DROPS`, where userspace looks up a failing connection's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropRecord {
    pub first_ns: u64,
    pub last_ns: u64,
    /// Where the kernel dropped the last one (a code address: `/proc/kallsyms` names it).
    pub location: u64,
    pub count: u32,
    /// The kernel's `enum skb_drop_reason` (5.17+); `u32::MAX` where it has none.
    pub reason: u32,
    /// The network namespace (its inode number) and device it was dropped in; 0 when not known.
    pub netns: u32,
    pub ifindex: u32,
    /// The TCP flags of the last one dropped, and of every one (OR).
    pub last_flags: u8,
    pub all_flags: u8,
    /// How many of them carried RST: a timeout's keepalive probes and its final RST are
    /// dropped on one flow, and are not all RSTs.
    pub rsts: u16,
    /// With `--kstack`: the kernel stack at the last drop (`STACKS` id plus one; 0: none).
    pub stack: u32,
    pub dev: [u8; 16],
    /// The innermost code addresses of the kernel stack at the last drop (0 past its end):
    /// the caller of the netfilter hook among them (`ip_forward`, `ip_local_deliver`,
    /// `br_handle_frame`...) says which hook dropped it.
    pub frames: [u64; DROP_FRAMES],
}
assert_size!(DropRecord, 64 + 8 * DROP_FRAMES);

/// Kernel stack frames a `DropRecord` keeps: measured on 6.18, a forward-chain drop's
/// `ip_forward` is the 7th (after the program, the tracepoint's runner, the drop function,
/// nftables' two and `nf_hook_slow`); a bridge's hook callers are as deep.
pub const DROP_FRAMES: usize = 12;
pod!(DropRecord);

/// The last error the kernel reported on a UDP socket (an ICMP error on a connected socket):
/// what the failing call that surfaces it is joined to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpError {
    /// `value` is the (positive) errno the ICMP error set.
    pub report: StampedState,
    pub addrs: SockAddrs,
}
assert_size!(UdpError, 64);

/// One failing (or, with `REPORT_EOF`, end-of-file) syscall on a traced process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailureEvent {
    /// `bpf_ktime_get_ns()` at syscall exit (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// The `struct sock` address (0 if the fd was not a socket).
    pub sk: u64,
    /// The syscall's return value (negative errno).
    pub ret: i64,
    /// The calling task's cgroup v2 id (`bpf_get_current_cgroup_id`: the inode of its cgroup
    /// directory), which userspace turns into a container or service. Read at the failure:
    /// the process may have exited, or moved, by the time userspace sees the event.
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub syscall_nr: u32,
    pub fd: i32,
    /// The error read from `getsockopt(SO_ERROR)` when `FROM_SO_ERROR` is set (positive).
    pub so_error: i32,
    pub flags: u32,
    pub comm: [u8; TASK_COMM_LEN],
    /// The address passed to connect(), when `HAS_CONNECT_ADDR`.
    pub connect_addr: SockAddrs,
    /// The socket as it is at syscall exit.
    pub sock: SockSnapshot,
    pub history: SocketHistory,
    /// The host's numbers behind a resource failure, when `HAS_RESOURCE`.
    pub resource: ResourceFacts,
    /// The socket's timers and their limits, for a timeout, when `HAS_TIMERS`.
    pub timers: TimerFacts,
    /// The RST this socket received, as its sender on this host sent it, when `HAS_PEER_RESET`:
    /// the set of `SENT_RESETS` its reversed 4-tuple hashes to, copied whole with one read (no
    /// branch per slot for the verifier to follow: 5.10's ran out of instructions on them).
    /// Userspace takes the slot whose check matches (`SentResetSlot`): the others hold other
    /// connections' RSTs, and a copy torn by a writer matches none.
    pub peer_reset: [SentResetSlot; crate::SENT_RESET_WAYS as usize],
    /// The ICMP error received about this connection's packets, if one was (`HAS_ICMP_SOURCE`).
    pub icmp: IcmpSource,
    /// What the socket was doing when its process ended it (`ENDED`).
    pub ended: EndFacts,
}
assert_size!(
    FailureEvent,
    8 * 4
        + 4 * 6
        + 16
        + 40
        + 48
        + 16 * HISTORY_TRANSITIONS
        + 24
        + 4 * 24
        + 8
        + 40
        + 24
        + 8
        + 112
        + 32
        + 64 * 4
        + 32
        + 120
);
pod!(FailureEvent);

/// An ICMP error this host received about a packet it sent (`icmp_rcv`/`icmpv6_rcv`), kept by
/// that packet's 4-tuple: who sent the message, and which message it was.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpSource {
    pub ts_ns: u64,
    /// The address that sent the ICMP message (4 bytes for IPv4).
    pub from: [u8; 16],
    pub family: u16,
    pub icmp_type: u8,
    pub code: u8,
    /// The offending packet's protocol (TCP 6, UDP 17).
    pub protocol: u8,
    pub _pad: [u8; 3],
}
assert_size!(IcmpSource, 32);

/// What decides which TCP timer gave up on a connection, read from the socket and its
/// namespace when a call fails with ETIMEDOUT (or the soft ICMP error a timeout reports).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerFacts {
    /// `TCP_USER_TIMEOUT` in ms (`icsk_user_timeout`); 0: not set.
    pub user_timeout_ms: u32,
    /// The peer's last advertised window (`snd_wnd`): 0 while zero-window probing.
    pub snd_wnd: u32,
    /// Unanswered keepalive or zero-window probes (`icsk_probes_out`).
    pub probes_out: u8,
    /// `TCP_SYNCNT` (`icsk_syn_retries`); 0: the namespace's `tcp_syn_retries`.
    pub syn_retries: u8,
    /// `SO_KEEPALIVE` is on (`SOCK_KEEPOPEN`).
    pub keepalive: u8,
    /// `TCP_KEEPCNT` (`keepalive_probes`); 0: the namespace's `tcp_keepalive_probes`.
    pub keepalive_probes: u8,
    /// The namespace's `net.ipv4.tcp_syn_retries`, `tcp_retries2`, `tcp_keepalive_probes`.
    pub net_syn_retries: u8,
    pub net_retries2: u8,
    pub net_keepalive_probes: u8,
    pub _pad: u8,
    /// `TCP_KEEPIDLE` and `TCP_KEEPINTVL` (`keepalive_time`, `keepalive_intvl`), jiffies; 0:
    /// the namespace's `tcp_keepalive_time` / `tcp_keepalive_intvl` (jiffies) below.
    pub keepalive_time: u32,
    pub keepalive_intvl: u32,
    pub net_keepalive_time: u32,
    pub net_keepalive_intvl: u32,
}
assert_size!(TimerFacts, 32);

/// What the kernel knows about a host resource at the moment a call failed for want of it,
/// read only for those errnos (EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS, ENOMEM, EAGAIN on send).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceFacts {
    /// The process's RLIMIT_NOFILE (soft, hard).
    pub nofile_cur: u64,
    pub nofile_max: u64,
    /// The socket's accept queue: connections waiting, and its limit (a listener's).
    pub ack_backlog: u32,
    pub max_ack_backlog: u32,
    /// `ip_local_port_range` of the socket's network namespace.
    pub port_low: u32,
    pub port_high: u32,
    /// Send memory: the socket's buffer and what is queued in it, bytes.
    pub sndbuf: u32,
    pub wmem_queued: u32,
    /// For a connect that timed out: the listener of this host's namespace on the destination
    /// port, when socktrace saw it listen (`ack_backlog`/`max_ack_backlog` are then its queue).
    pub listener_tgid: u32,
    /// 1 when a listener was found.
    pub has_listener: u32,
    pub listener_comm: [u8; TASK_COMM_LEN],
    /// For a send that failed for memory: the protocol's memory in use (pages, the global
    /// counter the kernel compares) and its limits (`tcp_mem`: min, pressure, max).
    pub mem_pages: u64,
    pub mem_limits: [u64; 3],
    /// Non-zero: the protocol is in memory-pressure mode (`tcp_memory_pressure`).
    pub mem_pressure: u32,
    /// Non-zero when the protocol's memory was read.
    pub has_mem: u32,
    /// The namespace's `tcp_wmem[1]`: the send buffer a socket starts with; the kernel shrinks
    /// a socket's below it only when it refuses memory (`sk_stream_moderate_sndbuf`).
    pub wmem_initial: u32,
    pub _pad: u32,
}
assert_size!(ResourceFacts, 64 + 48);
