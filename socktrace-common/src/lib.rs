//! The event ABI shared by socktrace's kernel programs and its userspace.
//!
//! Every struct here is `#[repr(C)]` with explicit padding and a size checked at compile time,
//! so the kernel side (bpfel) and userspace (x86_64 or any 64-bit host) agree byte for byte.
//! The kernel only records facts into these structs; the meaning is decided in userspace.
#![cfg_attr(not(test), no_std)]

/// The kernel's task-name buffer (`TASK_COMM_LEN`), NUL included.
pub const TASK_COMM_LEN: usize = 16;
/// The longest task name the kernel keeps (`-c` matches at most this many bytes).
pub const TASK_COMM_MAX: usize = TASK_COMM_LEN - 1;

/// How many socket histories the kernel keeps at most (an LRU map).
pub const MAX_SOCKETS: u32 = 65536;

/// How many state transitions each socket remembers (a ring: the newest overwrite the oldest).
/// A power of two so the ring index is a mask the verifier can bound.
pub const HISTORY_TRANSITIONS: usize = 8;

/// Socket families, types and protocols, and the file-mode bits that tell a socket inode.
pub mod net {
    pub const AF_UNIX: u16 = 1;
    pub const AF_INET: u16 = 2;
    pub const AF_INET6: u16 = 10;
    pub const SOCK_STREAM: u16 = 1;
    pub const SOCK_DGRAM: u16 = 2;
    pub const IPPROTO_TCP: u16 = 6;
    pub const IPPROTO_UDP: u16 = 17;
    pub const SOL_SOCKET: u64 = 1;
    pub const SO_ERROR: u64 = 4;
    pub const S_IFMT: u16 = 0o170000;
    pub const S_IFSOCK: u16 = 0o140000;
    /// `sk_shutdown` bits.
    pub const RCV_SHUTDOWN: u8 = 1;
    pub const SEND_SHUTDOWN: u8 = 2;

    /// A TCP socket of the internet families: the sockets whose causes socktrace explains.
    #[inline(always)]
    pub const fn is_tcp(family: u16, sock_type: u16, protocol: u16) -> bool {
        protocol == IPPROTO_TCP && sock_type == SOCK_STREAM && (family == AF_INET || family == AF_INET6)
    }
}

/// Linux errno values socktrace reasons about (the generic numbering x86_64 and arm64 share).
pub mod errno {
    pub const EINTR: i32 = 4;
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const EPIPE: i32 = 32;
    pub const ETIME: i32 = 62;
    pub const ENONET: i32 = 64;
    pub const EPROTO: i32 = 71;
    pub const EADDRINUSE: i32 = 98;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const ENETUNREACH: i32 = 101;
    pub const ECONNABORTED: i32 = 103;
    pub const ECONNRESET: i32 = 104;
    pub const ENOBUFS: i32 = 105;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
    pub const EHOSTDOWN: i32 = 112;
    pub const EHOSTUNREACH: i32 = 113;
    pub const EALREADY: i32 = 114;
    pub const EINPROGRESS: i32 = 115;
    pub const ECANCELED: i32 = 125;
    /// Kernel-internal restart codes (ERESTARTSYS ..= ERESTART_RESTARTBLOCK); the program
    /// sees EINTR, or a transparently restarted call.
    pub const ERESTARTSYS: i32 = 512;
    pub const ERESTART_RESTARTBLOCK: i32 = 516;

    #[inline(always)]
    pub const fn is_restart(e: i32) -> bool {
        e >= ERESTARTSYS && e <= ERESTART_RESTARTBLOCK
    }
}

/// Routine failures: the everyday outcomes of non-blocking and signal-driven code, which the
/// kernel counts instead of sending (unless `--all-errors`). The one place they are defined:
/// the kernel counts by `kind_of`, the summary and the diagnosis name them from it.
pub mod routine {
    use super::errno;

    pub const EAGAIN: u32 = 0;
    /// EINTR and the kernel's restart codes (ERESTARTSYS..ERESTART_RESTARTBLOCK).
    pub const EINTR: u32 = 1;
    pub const EINPROGRESS: u32 = 2;
    pub const EALREADY: u32 = 3;
    /// An io_uring request cancelled (IORING_OP_ASYNC_CANCEL, a ring torn down, or a linked
    /// timeout that fired first).
    pub const ECANCELED: u32 = 4;
    /// An io_uring timeout that expired.
    pub const ETIME: u32 = 5;
    /// EAGAIN from a send on a TCP socket while TCP's memory was over its hard limit
    /// (`tcp_mem[2]`): counted apart from the routine full buffer (cause socket_memory).
    pub const SEND_MEMORY: u32 = 6;
    pub const KINDS: u32 = 7;
    /// The index into `ROUTINE_COUNTS` is `kind * STATES + tcp_state`; TCP states are 1..=12
    /// and 0 is "not TCP" (other sockets, with --all-sockets).
    pub const STATES: u32 = 16;

    /// The routine kind of a (positive) errno, if it is one.
    #[inline(always)]
    pub const fn kind_of(e: i32) -> Option<u32> {
        match e {
            errno::EAGAIN => Some(EAGAIN),
            errno::EINTR => Some(EINTR),
            _ if errno::is_restart(e) => Some(EINTR),
            errno::EINPROGRESS => Some(EINPROGRESS),
            errno::EALREADY => Some(EALREADY),
            errno::ECANCELED => Some(ECANCELED),
            errno::ETIME => Some(ETIME),
            _ => None,
        }
    }

    /// The errno a kind is counted under.
    pub const fn errno_of(kind: u32) -> i32 {
        match kind {
            EAGAIN => errno::EAGAIN,
            EINTR => errno::EINTR,
            EINPROGRESS => errno::EINPROGRESS,
            ECANCELED => errno::ECANCELED,
            ETIME => errno::ETIME,
            SEND_MEMORY => errno::EAGAIN,
            _ => errno::EALREADY,
        }
    }
}

/// A listening socket: its network namespace and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerKey {
    /// `struct net` address of the socket's namespace.
    pub net: u64,
    pub port: u16,
    pub _pad: [u16; 3],
}

/// What the kernel keeps of a listening socket (`LISTENERS`, keyed by `ListenerKey`): the
/// socket, who called listen(), and whether it is a traced process's (then the connections it
/// accepts belong to that process from their first state, SYN_RECV).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerInfo {
    pub sk: u64,
    /// The process that called listen(); 0 when not known (a listener older than the trace).
    pub tgid: u32,
    pub traced: u8,
    pub _pad: [u8; 3],
    pub comm: [u8; TASK_COMM_LEN],
}

/// Slots of the `RUNTIME` map: switches userspace sets after load, once it knows which probes
/// it attached (the read-only config is fixed before).
pub mod runtime {
    /// 1: no probe reports errors on this kernel (before 5.14): the state-change handler
    /// records `sk_err` as the error report when a socket closes.
    pub const ERROR_AT_CLOSE: u32 = 0;
    pub const SLOTS: u32 = 1;
}

/// Slots of the per-CPU `HISTORY_STATS` map: socket histories created and destroyed since
/// load (the difference, less the histories still in the map, is how many the LRU evicted),
/// and packet drops recorded.
pub mod history_stats {
    pub const CREATED: u32 = 0;
    pub const DESTROYED: u32 = 1;
    /// Drops of traced connections' packets, counted before each one's time is taken: while it
    /// reads 0, no failure before that read has a dropped packet to look up, and userspace
    /// skips the two map lookups per timeout or reset it would make.
    pub const DROPS_RECORDED: u32 = 2;
    pub const SLOTS: u32 = 3;
}

/// The names userspace finds the kernel side by. Map and program names are the eBPF crate's
/// item names (the eBPF object keeps them); a unit test checks every one is in the object.
pub mod names {
    /// Maps.
    pub const EVENTS: &str = "EVENTS";
    pub const LISTENERS: &str = "LISTENERS";
    pub const SOCKETS: &str = "SOCKETS";
    pub const TRACED_TGIDS: &str = "TRACED_TGIDS";
    pub const ROUTINE_COUNTS: &str = "ROUTINE_COUNTS";
    pub const LOST_EVENTS: &str = "LOST_EVENTS";
    pub const HISTORY_STATS: &str = "HISTORY_STATS";
    /// aya-log's ring buffer of kernel-side log records.
    pub const LOGS: &str = "AYA_LOGS";
    pub const RUNTIME: &str = "RUNTIME";
    /// The fds traced processes' io_uring requests looked their files up by, direct-mapped
    /// by request (`RequestFd`).
    pub const IO_URING_FDS: &str = "IO_URING_FDS";
    /// UDP sockets -> the last error the kernel reported on them (`UdpError`).
    pub const UDP_ERRORS: &str = "UDP_ERRORS";
    /// RSTs sent on this host, by a hash of the sender's 4-tuple (`SentResetSlot`).
    pub const SENT_RESETS: &str = "SENT_RESETS";
    /// ICMP errors received, by the 4-tuple of the packet they are about (`IcmpSource`).
    pub const ICMP_SOURCES: &str = "ICMP_SOURCES";
    /// Packets dropped on this host, by their 4-tuple (`DropRecord`).
    pub const DROPS: &str = "DROPS";
    /// The peers of traced sockets (`PeerKey`): the drop probe keeps only their packets.
    pub const TRACED_PEERS: &str = "TRACED_PEERS";
    /// Kernel stacks at the events behind failures (`--kstack`; one entry otherwise).
    pub const STACKS: &str = "STACKS";
    pub const MAPS: [&str; 16] = [
        EVENTS,
        SOCKETS,
        TRACED_TGIDS,
        LISTENERS,
        ROUTINE_COUNTS,
        LOST_EVENTS,
        HISTORY_STATS,
        RUNTIME,
        LOGS,
        IO_URING_FDS,
        UDP_ERRORS,
        SENT_RESETS,
        ICMP_SOURCES,
        DROPS,
        TRACED_PEERS,
        STACKS,
    ];
    /// The one program that sees every failing call.
    pub const SYS_EXIT: &str = "sys_exit";
    /// The same as a BTF tracepoint (5.11+), where the probe mode allows it.
    pub const SYS_EXIT_BTF: &str = "sys_exit_btf";
    /// The io_uring door: failing completions, and the fd each request's file came from.
    pub const IO_URING_COMPLETE: &str = "tp_io_uring_complete";
    pub const IO_URING_FILE_GET: &str = "tp_io_uring_file_get";
    /// The same without a trace record, where the probe mode allows and the layout is known:
    /// one program per layout of the arguments, each taking them at constant indexes (the
    /// verifier allows no other context access). BTF tracepoints `io_uring_complete(ctx, req,
    /// cqe)` (6.13+) or `(ctx, req, user_data, res, ...)` (before); the raw tracepoint
    /// `io_uring_file_get(req, fd)` (5.19+).
    pub const IO_URING_COMPLETE_CQE: &str = "btf_io_uring_complete_cqe";
    pub const IO_URING_COMPLETE_RES: &str = "btf_io_uring_complete_res";
    pub const IO_URING_FILE_GET_RAW: &str = "raw_io_uring_file_get";
    /// Every packet the kernel drops (`skb:kfree_skb`, as a raw tracepoint).
    pub const KFREE_SKB: &str = "raw_kfree_skb";
    /// The RST segment a socket receives (`tcp_reset(sk, skb)`, 5.14+): fentry, else kprobe.
    pub const RST_SEGMENT: &str = "rst_segment";
    pub const KP_RST_SEGMENT: &str = "kp_rst_segment";
    /// Read-only globals userspace writes before load.
    pub const OFFSETS: &str = "OFFSETS";
    pub const CONFIG: &str = "CONFIG";
    /// aya-log's level: 0 turns every kernel-side log statement into dead code.
    pub const LOG_LEVEL: &str = "AYA_LOG_LEVEL";
}

/// `TracedConfig::flags` bits.
pub mod config_flags {
    /// Report `read`/`recv*` returning 0 on a TCP socket (end of file after the peer's FIN).
    pub const REPORT_EOF: u32 = 1 << 0;
    /// Report failures on sockets that are not TCP (UDP, unix, ...).
    pub const ALL_SOCKETS: u32 = 1 << 1;
    /// The kernel's `tcp_send_reset` BTF tracepoint carries a `reason` argument (about 6.10+).
    pub const SEND_RESET_HAS_REASON: u32 = 1 << 2;
    /// Only processes in the TRACED_TGIDS map are traced (-p, a started command).
    pub const SELECT_PIDS: u32 = 1 << 3;
    /// Only tasks whose name equals `TracedConfig::comm` (-c).
    pub const SELECT_COMM: u32 = 1 << 4;
    /// Only tasks in the cgroup v2 `cgroup_id` or below it (at `cgroup_level`) (--cgroup).
    pub const SELECT_CGROUP: u32 = 1 << 5;
    /// Children forked by a traced process join TRACED_TGIDS (-f).
    pub const FOLLOW_FORKS: u32 = 1 << 6;
    /// Send routine failures (EAGAIN, EINTR, EINPROGRESS) as events instead of counting them.
    pub const SEND_ROUTINE: u32 = 1 << 7;
    /// Only the process `TracedConfig::tgid` (one -p, no -f): no map lookup needed.
    pub const SELECT_ONE_PID: u32 = 1 << 8;
    /// No selector: every process, so every TCP socket's history is kept.
    pub const TRACE_ALL: u32 = 1 << 9;
    /// `struct sock_common` starts as every kernel since 4.x lays it out (`SockHead`): the
    /// addresses, ports, family and state are one read instead of six.
    pub const SOCK_HEAD: u32 = 1 << 10;
    /// `sk_type` and `sk_protocol` are adjacent u16s: one read for both, at the lower of the
    /// two offsets (`PROTOCOL_FIRST`: `sk_protocol` is the first of them, as on 6.x).
    pub const TYPE_PROTOCOL_PAIR: u32 = 1 << 11;
    pub const PROTOCOL_FIRST: u32 = 1 << 12;
    /// `--cgroup` by walking task -> css_set -> cgroup (tracing programs may not call
    /// bpf_get_current_ancestor_cgroup_id before 5.14); with `CGROUP_ANCESTOR_IDS` the
    /// cgroup keeps its ancestors' ids (before 6.0), else pointers to them.
    pub const CGROUP_WALK: u32 = 1 << 13;
    pub const CGROUP_ANCESTOR_IDS: u32 = 1 << 14;
    /// `ip_local_ports.range` is `int[2]` (before it was packed into one u32).
    pub const PORT_RANGE_INTS: u32 = 1 << 15;
    /// The `kfree_skb` tracepoint carries the kernel's drop reason (5.17+).
    pub const DROP_HAS_REASON: u32 = 1 << 16;
    /// `--kstack`: record the kernel stack at each event that causes a failure.
    pub const KSTACK: u32 = 1 << 17;
    /// `sk_buff.protocol`, `.transport_header`, `.network_header` are adjacent (be16, u16,
    /// u16): the drop, RST and ICMP probes read them at once.
    pub const SKB_HEADERS_PACKED: u32 = 1 << 18;
    /// The syscall number sits in `struct pt_regs` right after the first argument (x86_64:
    /// di, orig_ax; arm64: orig_x0, syscallno): the exit reads both at once.
    pub const NR_AFTER_ARG0: u32 = 1 << 19;
    /// `fdtable.fd` follows `fdtable.max_fds` (a u32 and its padding): one read for both.
    pub const FDTABLE_PAIR: u32 = 1 << 20;
    /// `file.private_data` is two words after `file.f_op` (6.12+'s layout): one read for
    /// both.
    pub const FILE_OP_DATA_SPAN: u32 = 1 << 21;
    /// `socket.ops` follows `socket.sk` (every kernel since 2.6): one read for both.
    pub const SOCKET_SK_OPS_PAIR: u32 = 1 << 22;
    /// `files_struct.fdtab` follows `files_struct.fdt`, and starts with `max_fds`, then `fd`:
    /// while `fdt` points at it (up to 64 fds), one read gives the pointer and the table.
    pub const FDTAB_AFTER_FDT: u32 = 1 << 23;
}

/// Ring buffer wakeups are batched: userspace is woken when this much is waiting, and
/// otherwise drains on its own timer, so a storm of failures does not cost a wakeup each.
pub const WAKEUP_BYTES: u64 = 256 * 1024;

/// A `KernelOffsets` tracepoint field this kernel's record does not have.
pub const NO_FIELD: u32 = u32::MAX;

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
    /// `peer_reset` holds a written slot of `SENT_RESETS`, the one the connection's reversed
    /// 4-tuple hashes to: the RST's sender on this host if userspace finds its check matches
    /// (`SentResetSlot`).
    pub const HAS_PEER_RESET: u32 = 1 << 9;
    /// `icmp` holds the ICMP error received about this connection.
    pub const HAS_ICMP_SOURCE: u32 = 1 << 10;
}

/// `FailureEvent::syscall_nr` at or above this is an io_uring request, not a syscall: its
/// opcode (`IORING_OP_*`, the UAPI numbering) is `syscall_nr - IO_URING_CALL_BASE`.
pub const IO_URING_CALL_BASE: u32 = 0x1_0000;

/// io_uring opcodes below this have an entry in `TracedConfig::io_uring_kinds`.
pub const IO_URING_OPS: usize = 64;

/// Byte offsets of kernel struct fields and tracepoint fields, computed by userspace from the
/// running kernel (BTF and tracefs format files) and handed to the programs as a read-only
/// global, so no layout is compiled into the eBPF object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    // task -> files -> fdtable -> file -> socket -> sock
    pub task_files: u32,
    pub files_fdt: u32,
    /// `files_struct.fdtab`: the table `fdt` points at until the process outgrows it.
    pub files_fdtab: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_f_inode: u32,
    pub file_private_data: u32,
    pub file_f_op: u32,
    pub inode_i_mode: u32,
    pub socket_file: u32,
    pub socket_sk: u32,
    pub socket_ops: u32,
    // struct sock (through sock_common)
    pub sk_family: u32,
    pub sk_state: u32,
    pub sk_type: u32,
    pub sk_protocol: u32,
    pub sk_shutdown: u32,
    pub sk_err: u32,
    pub sk_daddr: u32,
    pub sk_rcv_saddr: u32,
    pub sk_dport: u32,
    pub sk_num: u32,
    pub sk_v6_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    /// `struct sock`'s network namespace (`__sk_common.skc_net`): listeners are keyed by it.
    pub sk_net: u32,
    pub task_tgid: u32,
    /// `task_struct.thread_info.status` on x86_64, whose `TS_COMPAT` bit marks a 32-bit
    /// syscall (other numbering); `NO_FIELD` where syscall numbers need no such check.
    pub task_thread_status: u32,
    /// Where the syscall number sits in `struct pt_regs` at syscall exit (x86_64 orig_ax,
    /// arm64 syscallno).
    pub regs_syscall_nr: u32,
    /// Where the first five syscall arguments sit in `struct pt_regs` at syscall exit
    /// (x86_64: di, si, dx, r10, r8; arm64: orig_x0, regs[1..5]).
    pub regs_args: [u32; 5],
    // task -> css_set -> default-hierarchy cgroup -> its ancestors, for `--cgroup` on kernels
    // whose tracing programs may not call bpf_get_current_ancestor_cgroup_id (before 5.14).
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level: u32,
    /// `cgroup.ancestor_ids` (u64 ids, before 6.0) or `cgroup.ancestors` (pointers).
    pub cgroup_ancestors: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    // The host's numbers behind resource failures.
    pub task_signal: u32,
    /// `signal_struct.rlim[RLIMIT_NOFILE]` (a `struct rlimit`: cur, max).
    pub signal_rlim_nofile: u32,
    pub sk_ack_backlog: u32,
    pub sk_max_ack_backlog: u32,
    pub sk_sndbuf: u32,
    pub sk_wmem_queued: u32,
    /// `struct net`'s `ipv4.ip_local_ports.range`: two u16 in one u32 (6.x), or two ints
    /// (`PORT_RANGE_INTS`, before).
    pub net_local_ports: u32,
    // Classic tracepoint records (tracepoint probe mode), from their format files.
    pub tp_set_state_skaddr: u32,
    pub tp_set_state_oldstate: u32,
    pub tp_set_state_newstate: u32,
    pub tp_receive_reset_skaddr: u32,
    pub tp_send_reset_skaddr: u32,
    /// `NO_FIELD` before the RST reasons (about 6.10).
    pub tp_send_reset_reason: u32,
    pub tp_retransmit_skaddr: u32,
    pub tp_destroy_skaddr: u32,
    // The io_uring door: a request (`struct io_kiocb`) and the classic io_uring records that
    // carry it; `NO_FIELD` where this kernel's records lack the request (before about 5.19).
    pub io_kiocb_opcode: u32,
    pub io_kiocb_file: u32,
    pub io_kiocb_flags: u32,
    pub tp_io_complete_req: u32,
    pub tp_io_complete_res: u32,
    pub tp_io_file_get_req: u32,
    pub tp_io_file_get_fd: u32,
    /// `io_uring_cqe.res`: the result, where the BTF tracepoint `io_uring_complete` passes the
    /// completion entry instead (`NO_FIELD` elsewhere).
    pub io_uring_cqe_res: u32,
    /// io_uring completions run in the owner's io-wq workers too: `-c` matches the process
    /// (its group leader's name), not the worker's `iou-wrk-*`.
    pub task_group_leader: u32,
    pub task_comm: u32,
    // Which timer gave up (`TimerFacts`); `NO_FIELD` where this kernel lacks one.
    pub icsk_user_timeout: u32,
    pub icsk_probes_out: u32,
    pub icsk_syn_retries: u32,
    pub tp_snd_wnd: u32,
    pub tp_keepalive_probes: u32,
    pub sk_flags: u32,
    pub net_syn_retries: u32,
    pub net_retries2: u32,
    pub net_keepalive_probes: u32,
    /// `inet_sock.inet_sport` (network order): a closed socket's local port, which
    /// `skc_num` no longer holds once the port is released (the RST of a close is sent then).
    pub inet_sport: u32,
    /// `sk_buff.head`, `.network_header`, `.transport_header`: the segment an RST answers.
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    /// The classic `tcp_send_reset` record's `skbaddr`.
    pub tp_send_reset_skbaddr: u32,
    /// `sock.__sk_common.skc_prot`, and the protocol's memory accounting in `struct proto`:
    /// `memory_allocated` (atomic_long_t *), `memory_pressure` (unsigned long *), `sysctl_mem`
    /// (long *).
    pub sk_prot: u32,
    pub proto_memory_allocated: u32,
    pub proto_memory_pressure: u32,
    pub proto_sysctl_mem: u32,
    /// `net.ipv4.sysctl_tcp_wmem`.
    pub net_tcp_wmem: u32,
    /// A registered (fixed) file's index, found by searching the ring's table for the
    /// request's file: `io_kiocb.ctx`; from 6.13 the table holds node pointers
    /// (`io_ring_ctx.file_table.data.{nr,nodes}`, matched against `io_kiocb.file_node`),
    /// before it holds `struct io_fixed_file { file_ptr }` (`file_table.files`,
    /// `io_ring_ctx.nr_user_files`), matched against the file. `io_fixed_files_nodes` is 1
    /// for the node layout. All `NO_FIELD` where neither layout is found.
    pub io_kiocb_ctx: u32,
    pub io_kiocb_file_node: u32,
    pub io_ctx_files_nr: u32,
    pub io_ctx_files: u32,
    pub io_fixed_files_nodes: u32,
    /// `tcp_sock.lsndtime` and `tcp_sock.inet_conn.icsk_ack.lrcvtime` (u32 jiffies): when a
    /// socket last sent and received data, for the snapshot of a socket older than the trace.
    pub tp_lsndtime: u32,
    pub icsk_ack_lrcvtime: u32,
    /// A dropped packet: `sk_buff.protocol` (network order), `.dev`, and its device's
    /// `ifindex`, `name` and namespace (`nd_net`), whose `ns.inum` names it; `sk_buff.sk` for a
    /// packet dropped before it had a device.
    pub skb_protocol: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub dev_ifindex: u32,
    pub dev_name: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    /// `tcp_sock.rcv_nxt`, `.snd_nxt`, `.snd_una`: the sequence space an RST is judged by.
    pub tp_rcv_nxt: u32,
    pub tp_snd_nxt: u32,
    pub tp_snd_una: u32,
    /// `tcp_sock.keepalive_time`/`keepalive_intvl` and the namespace's sysctls (jiffies).
    pub tp_keepalive_time: u32,
    pub tp_keepalive_intvl: u32,
    pub net_keepalive_time: u32,
    pub net_keepalive_intvl: u32,
}

impl KernelOffsets {
    /// The placeholder compiled into the eBPF object; userspace overrides it before load.
    // SAFETY: all fields are integers, for which zero is valid.
    pub const ZERO: Self = unsafe { core::mem::zeroed() };
}

/// Global configuration the userspace writes before loading.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracedConfig {
    pub flags: u32,
    /// Depth of the selected cgroup below the root (for bpf_get_current_ancestor_cgroup_id).
    pub cgroup_level: u32,
    pub cgroup_id: u64,
    /// Task name to select, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
    /// The one process selected with SELECT_ONE_PID.
    pub tgid: u32,
    /// Socket histories each CPU's LRU list holds (`MAX_SOCKETS` / possible CPUs).
    pub history_cpu_share: u32,
    /// socktrace's own process: never selected (its calls and sockets are not traced), and
    /// its marked `getsockopt` calls adopt sockets (see `adopt`).
    pub self_tgid: u32,
    /// This kernel's `SKB_DROP_REASON_NO_SOCKET` (0: none): a bare SYN freed for want of a
    /// socket is a refused connect, which explains itself; the drop probe skips it.
    pub drop_reason_no_socket: u32,
    /// A random number of this load, the key of the hashes that place and check the records of
    /// `SENT_RESETS` (`sent_reset_slot`, `sent_reset_check`): without it, a 4-tuple cannot be
    /// crafted to hash like another connection's.
    pub hash_seed: u64,
    /// What each syscall number is to socktrace (`syscall_kind`): the one table the single
    /// `sys_exit` program consults, filled by userspace with this architecture's numbers.
    pub syscall_kinds: [u8; SYSCALL_TABLE_SIZE],
    /// The same for io_uring opcodes (`IORING_OP_*`): which requests are watched, and how.
    pub io_uring_kinds: [u8; IO_URING_OPS],
}

impl TracedConfig {
    /// The placeholder compiled into the eBPF object; userspace overrides it before load.
    // SAFETY: all fields are integers, for which zero is valid.
    pub const ZERO: Self = unsafe { core::mem::zeroed() };
}

/// Syscall numbers below this have an entry in `TracedConfig::syscall_kinds`; the others are
/// never watched.
pub const SYSCALL_TABLE_SIZE: usize = 512;

/// `TracedConfig::syscall_kinds` values: how the `sys_exit` program treats a call.
pub mod syscall_kind {
    /// Not watched.
    pub const NONE: u8 = 0;
    /// read-like: a return of 0 is end of file (reported with `REPORT_EOF`).
    pub const RECEIVE: u8 = 1;
    /// Any other watched call whose first argument is a socket fd (send*, write*, accept*).
    pub const OTHER: u8 = 2;
    /// connect: the address the program passed is recorded too.
    pub const CONNECT: u8 = 3;
    /// getsockopt: a successful SO_ERROR read carrying an error is a failed async connect;
    /// socktrace's own marked call adopts a socket.
    pub const GETSOCKOPT: u8 = 4;
    /// splice: the socket is `fd_out` (the third argument) or else `fd_in` (the first).
    pub const SPLICE: u8 = 5;
    /// socket: a failure for want of descriptors (EMFILE, ENFILE) is reported with the family,
    /// type and protocol asked for (there is no socket yet).
    pub const SOCKET: u8 = 6;
}

/// socktrace adopts a traced process's sockets that predate the trace by duplicating each
/// (pidfd_getfd) and calling `getsockopt(fd, ADOPT_LEVEL, ADOPT_OPTNAME)` on the copy: the
/// `sys_exit` program, seeing socktrace's own call with this level, starts the socket's
/// history. No protocol has this level, so the call itself fails harmlessly (ENOPROTOOPT).
pub mod adopt {
    pub const ADOPT_LEVEL: u64 = 0x5354_4144;
    pub const ADOPT_OPTNAME: u64 = 0x5354;
    /// The same mark on a TCP socket socktrace opened itself: the kernel learns from it what
    /// every socket's file and every TCP socket of its family look like (the fd walk's fast
    /// path: `socktrace-ebpf` `LEARNED`).
    pub const LEARN_OPTNAME: u64 = 0x5355;
}

/// The first 20 bytes of `struct sock_common` on every kernel since 4.x: `skc_addrpair`,
/// `skc_hash`, `skc_portpair`, `skc_family`, `skc_state` (userspace checks the offsets against
/// BTF and sets `SOCK_HEAD` only when they match).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockHead {
    pub daddr: [u8; 4],
    pub rcv_saddr: [u8; 4],
    pub hash: u32,
    /// Network order.
    pub dport: u16,
    /// Host order.
    pub num: u16,
    pub family: u16,
    pub state: u8,
    pub _pad: u8,
}

impl SockHead {
    /// Where each field sits: (daddr, rcv_saddr, dport, num, family, state).
    pub const OFFSETS: (u32, u32, u32, u32, u32, u32) = (0, 4, 12, 14, 16, 18);
}

/// Addresses and ports of a socket. Ports in host byte order; addresses in network order,
/// IPv4 in the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddrs {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// What was read from a `struct sock` at one moment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockSnapshot {
    pub addrs: SockAddrs,
    pub sock_type: u16,
    pub protocol: u16,
    /// `sk_state` (TCP_* numbering).
    pub state: u8,
    /// `sk_shutdown` (RCV_SHUTDOWN = 1, SEND_SHUTDOWN = 2).
    pub shutdown: u8,
    pub _pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transition {
    pub ts_ns: u64,
    pub old_state: u8,
    pub new_state: u8,
    /// 1 when the transition ran in the context of a traced process (e.g. connect, close).
    pub in_traced_task: u8,
    pub _pad: [u8; 5],
}

/// An event at one moment on one socket: when, and the TCP state the socket had then.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StampedState {
    /// 0 when the event never happened.
    pub ts_ns: u64,
    pub state: u8,
    pub _pad: [u8; 3],
    /// Event-specific value: errno for an error report, reason for a sent reset.
    pub value: i32,
    /// The task on the CPU when the event ran (often not the socket's owner: softirq).
    pub current_tgid: u32,
    /// With `--kstack`: the kernel stack at the event, as its id in `STACKS` plus one (0: none).
    pub stack: u32,
}

/// `SocketHistory::origin`: how socktrace came to keep a socket's history.
pub mod history_origin {
    /// A traced process changed its state (connect, listen, shutdown, close).
    pub const TRACED_TASK: u32 = 0;
    /// Accepted through a traced process's listener.
    pub const TRACED_LISTENER: u32 = 1;
    /// Open in a traced process when socktrace attached (adopted).
    pub const ADOPTED: u32 = 2;
    /// A traced process's call failed on it and nothing was known before.
    pub const FAILED_CALL: u32 = 3;
    /// Everything is traced (no selector): any event on any TCP socket.
    pub const ANY: u32 = 4;
}

/// What the kernel remembers about one socket, keyed by its `struct sock` address. Filled from
/// any context (softirq included): attribution goes through the socket, not the current task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketHistory {
    pub transitions: [Transition; HISTORY_TRANSITIONS],
    /// Transitions ever recorded; the newest is at `(n_transitions - 1) % HISTORY_TRANSITIONS`.
    pub n_transitions: u32,
    /// How the history began (`history_origin`).
    pub origin: u32,
    pub _pad: u32,
    pub retransmits: u32,
    pub last_retransmit_ns: u64,
    /// `tcp:tcp_receive_reset`: an RST arrived; `state` is the state before it was handled.
    pub rst_received: StampedState,
    /// `tcp:tcp_send_reset`: this socket sent an RST; `value` is the reason when known.
    pub rst_sent: StampedState,
    /// `sock:inet_sk_error_report`: `sk_err` was set; `value` is the (positive) errno.
    pub error_report: StampedState,
    /// The snapshot of a socket adopted at attach (open before the trace): its state then, and
    /// `value` the error pending on it (`sk_err`, 0 for none), read without consuming it.
    pub at_attach: StampedState,
    /// For an adopted socket: how long before the attach it last sent data (`lsndtime`) and
    /// last received data (`icsk_ack.lrcvtime`), in jiffies; `u32::MAX`: not known.
    pub at_attach_sent_ago: u32,
    pub at_attach_received_ago: u32,
    /// The most complete addresses seen on this socket (ports are cleared by the kernel when
    /// a socket closes, so the last non-empty ones are kept).
    pub addrs: SockAddrs,
    /// The RST segment behind `rst_received`, where the kernel shows it (`tcp_reset`'s skb).
    pub rst_segment: RstSegment,
    /// When the first retransmission was sent (0: none): how long a timeout retransmitted.
    pub first_retransmit_ns: u64,
}

/// An RST segment as `tcp_reset` received it, with the receiving socket's sequence space at
/// that moment: what tells an aborting peer from one that no longer knows the connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RstSegment {
    /// The segment's sequence and acknowledgement numbers (host order).
    pub seq: u32,
    pub ack_seq: u32,
    /// The socket's `rcv_nxt`, `snd_nxt` and `snd_una` when the RST arrived.
    pub rcv_nxt: u32,
    pub snd_nxt: u32,
    pub snd_una: u32,
    /// The TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub flags: u8,
    /// 1 when the segment was read.
    pub seen: u8,
    pub _pad: [u8; 2],
}

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
}

/// The last error the kernel reported on a UDP socket (an ICMP error on a connected socket):
/// what the failing call that surfaces it is joined to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpError {
    /// `value` is the (positive) errno the ICMP error set.
    pub report: StampedState,
    pub addrs: SockAddrs,
}

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
    /// the slot of `SENT_RESETS` its reversed 4-tuple hashes to, copied whole. Userspace takes
    /// the record only if the check matches (`SentResetSlot`): the slot may hold another
    /// connection's RST, or a copy torn by a writer.
    pub peer_reset: SentResetSlot,
    /// The ICMP error received about this connection's packets, if one was (`HAS_ICMP_SOURCE`).
    pub icmp: IcmpSource,
}

/// An RST a socket of this host sent (any socket, any process: `tcp_send_reset`), kept by the
/// connection's 4-tuple as the sender sees it, so that the socket that received it can name
/// who reset it and why.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SentReset {
    pub ts_ns: u64,
    /// The task on the CPU when the RST was sent: the closing or aborting process for an RST
    /// sent from a call (close with unread data, SO_LINGER 0, `ss -K`); softirq otherwise.
    pub tgid: u32,
    /// The kernel's RST reason (`enum sk_rst_reason`, 6.10+); -1 when the kernel has none.
    pub reason: i32,
    /// A listener's accept queue when it sent the RST (it resets a connection it cannot
    /// queue when `tcp_abort_on_overflow` is set): connections waiting, and its backlog.
    pub ack_backlog: u32,
    pub max_ack_backlog: u32,
    /// The sender's state when it sent the RST; 0: no socket of this host owned the segment.
    pub state: u8,
    pub _pad: [u8; 7],
    pub comm: [u8; TASK_COMM_LEN],
}

/// The table of RSTs sent on this host (`SENT_RESETS`): a plain array indexed by a hash of the
/// sender's 4-tuple, not an LRU hash map, whose insert cost about 0.9 us per RST (its free list
/// and eviction), paid by every RST any socket of the host sends. A newer RST whose 4-tuple
/// lands on the same slot replaces the older: the receiver then finds no sender ("cannot
/// tell"), never another one's, because of `SentResetSlot::check`.
pub const SENT_RESET_SLOTS: u32 = 8192;

/// One slot of `SENT_RESETS`. Writers on two CPUs, or a reader while a writer writes, can
/// leave or see a mix of two records: the writer stores `check` (`sent_reset_check` of the
/// 4-tuple and the record) after the record, and the failure event carries the slot as it was
/// copied; userspace takes the record only if it and the 4-tuple looked for give the same
/// check. No locks, no atomics (5.10 has no fetching ones), nothing to verify per path in the
/// failing call's program, and a slot holding another connection's RST is told apart the
/// same way.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SentResetSlot {
    pub reset: SentReset,
    /// 0: never written.
    pub check: u64,
}

/// One round of a 64-bit mixer (splitmix64's finalizer) over `h` and the next word `v`: every
/// bit of the result depends on every bit of both. Each round can be undone, so a chain that
/// starts from a known value could be steered by whoever picks the last words (a peer's IPv6
/// interface id); the chains here start from the load's secret `TracedConfig::hash_seed`.
/// Shifts, xors and multiplies only: cheap and verifier-friendly.
#[inline(always)]
const fn mix(h: u64, v: u64) -> u64 {
    let mut x = (h ^ v).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Eight bytes of `b` from `at`, little-endian (byte by byte: the arrays have no alignment a
/// wider load could rely on).
#[inline(always)]
const fn word_at(b: &[u8; 16], at: usize) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < 8 {
        w |= (b[at + i] as u64) << (8 * i);
        i += 1;
    }
    w
}

/// The hash of a 4-tuple under `seed`: where its RST is kept (`sent_reset_slot`), and the
/// start of its check.
#[inline(always)]
pub const fn sock_addrs_hash(seed: u64, a: &SockAddrs) -> u64 {
    let mut h = mix(seed, a.family as u64 | (a.sport as u64) << 16 | (a.dport as u64) << 32);
    h = mix(h, word_at(&a.saddr, 0));
    h = mix(h, word_at(&a.saddr, 8));
    h = mix(h, word_at(&a.daddr, 0));
    mix(h, word_at(&a.daddr, 8))
}

/// The 4-tuple of the connection whose other end is `ours`, as that end sees it: the key a
/// socket that received an RST looks its sender up by.
#[inline(always)]
pub const fn reversed(ours: &SockAddrs) -> SockAddrs {
    SockAddrs {
        family: ours.family,
        sport: ours.dport,
        dport: ours.sport,
        _pad: 0,
        saddr: ours.daddr,
        daddr: ours.saddr,
    }
}

/// The slot of `SENT_RESETS` where the RST of the connection `sender` (as its sender sees it)
/// is kept.
#[inline(always)]
pub const fn sent_reset_slot(seed: u64, sender: &SockAddrs) -> u32 {
    (sock_addrs_hash(seed, sender) >> 32) as u32 & (SENT_RESET_SLOTS - 1)
}

/// The check of a `SentResetSlot`: the 4-tuple and every field of the record. Never 0 for a
/// written slot (0 is mapped to 1), so an empty slot matches nothing.
#[inline(always)]
pub const fn sent_reset_check(seed: u64, sender: &SockAddrs, r: &SentReset) -> u64 {
    let mut h = mix(sock_addrs_hash(seed, sender), r.ts_ns);
    h = mix(h, r.tgid as u64 | (r.reason as u32 as u64) << 32);
    h = mix(h, r.ack_backlog as u64 | (r.max_ack_backlog as u64) << 32);
    h = mix(h, r.state as u64);
    h = mix(h, word_at(&r.comm, 0));
    h = mix(h, word_at(&r.comm, 8));
    if h == 0 {
        1
    } else {
        h
    }
}

/// Slots of the io_uring door's table of request fds (a power of two; 1 MiB of kernel memory):
/// with N requests in flight, about N/65536 of them find their slot taken by another.
pub const IO_URING_FD_SLOTS: u32 = 65536;

/// A traced process's io_uring request (its `struct io_kiocb` address) and the fd its file was
/// looked up by, in a direct-mapped table: each request has one slot (`request_fd_slot`), and
/// a lookup by fd costs a traced request a hash and two stores, where an LRU insert cost about
/// 200 ns. The fd shares a word with a check of the request, stored at once: a reader that
/// meets another request's entry, or the halves of two writers' (no locks: 5.10 has no
/// fetching atomics), finds no fd (`request_fd`), never a wrong one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestFd {
    pub req: u64,
    /// The fd in the low half, the request's check in the high half (`request_fd_word`).
    pub fd_check: u64,
}

/// The slot of request `req`.
#[inline(always)]
pub const fn request_fd_slot(req: u64) -> u32 {
    mix(0, req) as u32 & (IO_URING_FD_SLOTS - 1)
}

/// The check of request `req`: the high half of its `RequestFd::fd_check`.
#[inline(always)]
const fn request_check(req: u64) -> u64 {
    mix(1, req) >> 32
}

/// `RequestFd::fd_check` for request `req` and its `fd`.
#[inline(always)]
pub const fn request_fd_word(req: u64, fd: i32) -> u64 {
    fd as u32 as u64 | request_check(req) << 32
}

/// The fd request `req` looked its file up by, if `slot` holds it whole.
#[inline(always)]
pub const fn request_fd(slot: &RequestFd, req: u64) -> Option<i32> {
    if slot.req == req && slot.fd_check >> 32 == request_check(req) {
        Some(slot.fd_check as u32 as i32)
    } else {
        None
    }
}

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

macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
        const _: () = assert!(core::mem::size_of::<$t>() % core::mem::align_of::<$t>() == 0);
    };
}
assert_size!(KernelOffsets, 104 * 4);
assert_size!(TracedConfig, 56 + SYSCALL_TABLE_SIZE + IO_URING_OPS);
assert_size!(SockAddrs, 40);
assert_size!(SockHead, 20);
assert_size!(ListenerKey, 16);
assert_size!(ListenerInfo, 32);
assert_size!(SockSnapshot, 48);
assert_size!(Transition, 16);
assert_size!(StampedState, 24);
assert_size!(SocketHistory, 16 * HISTORY_TRANSITIONS + 24 + 4 * 24 + 8 + 40 + 24 + 8);
assert_size!(ResourceFacts, 64 + 48);
assert_size!(UdpError, 64);
assert_size!(
    FailureEvent,
    8 * 4 + 4 * 6 + 16 + 40 + 48 + 16 * HISTORY_TRANSITIONS + 24 + 4 * 24 + 8 + 40 + 24 + 8 + 112 + 32 + 56 + 32
);
assert_size!(TimerFacts, 32);
assert_size!(SentReset, 48);
assert_size!(SentResetSlot, 56);
assert_size!(RequestFd, 16);
const _: () = assert!(IO_URING_FD_SLOTS.is_power_of_two());
const _: () = assert!(SENT_RESET_SLOTS.is_power_of_two());
assert_size!(IcmpSource, 32);
assert_size!(RstSegment, 24);
assert_size!(PeerKey, 20);
assert_size!(DropRecord, 64);

const _: () = assert!(HISTORY_TRANSITIONS.is_power_of_two());

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: plain-old-data, repr(C), no pointers, every bit pattern valid.
    unsafe impl aya::Pod for KernelOffsets {}
    unsafe impl aya::Pod for TracedConfig {}
    unsafe impl aya::Pod for SocketHistory {}
    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for ListenerInfo {}
    unsafe impl aya::Pod for FailureEvent {}
    unsafe impl aya::Pod for SockAddrs {}
    unsafe impl aya::Pod for DropRecord {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u64 = 0x5eed_1234_abcd_0042;

    fn tuple(sport: u16, dport: u16) -> SockAddrs {
        let mut a = SockAddrs { family: 2, sport, dport, ..Default::default() };
        a.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        a.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        a
    }

    fn reset() -> SentReset {
        let mut r = SentReset { ts_ns: 123_456_789, tgid: 42, reason: 3, state: 1, ..Default::default() };
        r.comm[..5].copy_from_slice(b"nginx");
        r
    }

    /// Every field of the 4-tuple and of the record is in the check: a reader looking for
    /// another connection, or holding a copy mixed from two records, never matches.
    #[test]
    fn the_check_covers_every_field() {
        let (a, r) = (tuple(40000, 8080), reset());
        let base = sent_reset_check(SEED, &a, &r);
        let mut keys = vec![];
        for i in 0..16 {
            let mut k = a;
            k.saddr[i] ^= 1;
            keys.push(k);
            let mut k = a;
            k.daddr[i] ^= 0x80;
            keys.push(k);
        }
        keys.push(SockAddrs { family: 10, ..a });
        keys.push(SockAddrs { sport: 40001, ..a });
        keys.push(SockAddrs { dport: 8081, ..a });
        // The reversed tuple is another connection's view.
        keys.push(reversed(&a));
        for k in &keys {
            assert_ne!(sent_reset_check(SEED, k, &r), base, "{k:?}");
        }
        let mut records = vec![
            SentReset { ts_ns: r.ts_ns + 1, ..r },
            SentReset { tgid: 43, ..r },
            SentReset { reason: -1, ..r },
            SentReset { ack_backlog: 1, ..r },
            SentReset { max_ack_backlog: 128, ..r },
            SentReset { state: 0, ..r },
        ];
        for i in 0..TASK_COMM_LEN {
            let mut c = r;
            c.comm[i] ^= 0x20;
            records.push(c);
        }
        for c in &records {
            assert_ne!(sent_reset_check(SEED, &a, c), base, "{c:?}");
        }
        // A record mixed from two writes: the first half of one, the second of another.
        let other = SentReset { ts_ns: 987, tgid: 7, reason: 1, state: 4, ..Default::default() };
        let torn = SentReset { ts_ns: r.ts_ns, tgid: r.tgid, reason: r.reason, ..other };
        assert_ne!(sent_reset_check(SEED, &a, &torn), base);
        assert_ne!(sent_reset_check(SEED, &a, &torn), sent_reset_check(SEED, &a, &other));
    }

    /// The seed keys both hashes: another load's records neither land nor check alike.
    #[test]
    fn the_seed_keys_the_slot_and_the_check() {
        let (a, r) = (tuple(40000, 8080), reset());
        assert_ne!(sent_reset_check(SEED, &a, &r), sent_reset_check(SEED ^ 1, &a, &r));
        let moved = (0..64u16).filter(|&p| {
            let k = tuple(40000 + p, 8080);
            sent_reset_slot(SEED, &k) != sent_reset_slot(SEED ^ 1, &k)
        });
        assert!(moved.count() >= 60);
    }

    /// An empty slot (check 0) matches no lookup; the check is a function of its inputs.
    #[test]
    fn an_empty_slot_matches_nothing() {
        let empty = SentResetSlot::default();
        for p in 0..2000 {
            let a = tuple(p, 80);
            assert_ne!(sent_reset_check(SEED, &a, &empty.reset), empty.check);
            assert_eq!(sent_reset_check(SEED, &a, &reset()), sent_reset_check(SEED, &a, &reset()));
        }
    }

    /// Connections of one client differ only in the source port: they spread over the table
    /// (a burst of RSTs keeps nearly all of them) and every slot is in range.
    #[test]
    fn consecutive_ports_spread_over_the_slots() {
        let mut seen = std::collections::HashSet::new();
        for p in 0..256u16 {
            let slot = sent_reset_slot(SEED, &tuple(40000 + p, 8080));
            assert!(slot < SENT_RESET_SLOTS);
            seen.insert(slot);
        }
        // 256 balls in 8192 bins: about 4 collide on average.
        assert!(seen.len() >= 245, "{} distinct slots of 256", seen.len());
        let mut load = vec![0u32; SENT_RESET_SLOTS as usize];
        for p in 0..u16::MAX {
            load[sent_reset_slot(SEED, &tuple(p, 443)) as usize] += 1;
        }
        // 65535 over 8192 slots: 8 on average; a poor hash would pile them up.
        assert!(*load.iter().max().unwrap() <= 24, "max load {}", load.iter().max().unwrap());
    }

    /// A request's fd is found whole; another request's entry, two writers' halves and an
    /// empty slot give none.
    #[test]
    fn a_request_fd_is_taken_only_whole() {
        // Requests are slab objects: addresses 256 bytes apart.
        let (x, y) = (0xffff_8881_0a2b_3c00u64, 0xffff_8881_0a2b_3d00u64);
        let written = |req: u64, fd: i32| RequestFd { req, fd_check: request_fd_word(req, fd) };
        assert_eq!(request_fd(&written(x, 7), x), Some(7));
        assert_eq!(request_fd(&written(x, -1), x), Some(-1));
        assert_eq!(request_fd(&written(y, 7), x), None);
        let torn = RequestFd { req: x, fd_check: written(y, 9).fd_check };
        assert_eq!(request_fd(&torn, x), None);
        assert_eq!(request_fd(&RequestFd::default(), x), None);
        // Requests in flight at once keep their own slots: 1024 in 65536 slots, about 8 collide
        // on average (the fd of a request whose slot another took is unknown, never wrong).
        let slots: std::collections::HashSet<u32> = (0..1024u64).map(|i| request_fd_slot(x + 256 * i)).collect();
        assert!(slots.len() >= 1000, "{} distinct slots of 1024", slots.len());
    }
}
